/*
 * bd_chan.h: the ZeroMQ ROUTER socket that nginx workers talk to.
 *
 * bd_chan.c receives frames and hands them to bd_call.c (media) and
 * bd_twapi.c (REST); those answer through bd_chan_send().  A peer is one
 * nginx worker's DEALER socket, known by its routing id.
 */

#ifndef BD_CHAN_H
#define BD_CHAN_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "voice_proto.h"


#define BD_CHAN_ID_MAX  255


typedef struct bd_chan_peer_s  bd_chan_peer_t;

/* an nginx worker's life as bridged sees it (bd_chan_peer_state()) */
typedef enum {
    BD_CHAN_PEER_ST_LIVE = 0,
    BD_CHAN_PEER_ST_GONE,           /* it went away: its calls are due to
                                       be ended, from the loop */
    BD_CHAN_PEER_ST_TORN_DOWN       /* gone, and its calls were ended */
} bd_chan_peer_state_e;

struct bd_chan_peer_s {
    bd_chan_peer_t  *next;
    bd_chan_peer_t  *prev;
    uint64_t         last_seen;     /* loop time (ms) of its last message */
    uint64_t         dropped;       /* frames refused by its full queue */
    unsigned         refs;          /* calls and REST requests it owns */
    unsigned         liveness;      /* unanswered heartbeats left */
    bd_chan_peer_state_e  state;
    size_t           id_len;
    uint8_t          id[BD_CHAN_ID_MAX];
    char             name[2 * BD_CHAN_ID_MAX + 1];  /* the routing id,
                                       as text or in hex, for logs */
};


/* binds the endpoint and starts watching it; 0, or -1 (logged) */
int bd_chan_init(uv_loop_t *loop, const char *endpoint);

/* stops watching (the uv handles close); the socket stays for the end */
void bd_chan_close(void);

/* after uv_run() returned: closes the socket and the ZeroMQ context */
void bd_chan_term(void);

/*
 * Starts a frame in the channel's one send buffer, which holds any frame
 * but a REST reply.  The frame must be sent before the next
 * bd_chan_begin(): nothing in between may start another.
 */
voice_proto_writer_t *bd_chan_begin(voice_proto_msg_type_e type);

/*
 * Sends the frame to the peer without blocking.  Returns 1 when sent,
 * 0 when the peer's queue is full (the frame is dropped and counted), -1
 * when the peer is gone or the frame is bad.  A peer found gone is torn
 * down later, from the loop, never inside the caller's stack.
 */
int bd_chan_send(bd_chan_peer_t *peer, voice_proto_writer_t *w);

/* a REST reply, with a body of any size up to the frame limit; flags:
 * VOICE_PROTO_FLAG_NOT_DONE or 0; call_sid: the call placed, or NULL */
int bd_chan_reply(bd_chan_peer_t *peer, uint64_t request_id,
    unsigned status, uint32_t flags, const char *call_sid, const char *body,
    size_t len);

/* a VOICE_PROTO_MSG_ERROR; call_sid may be NULL */
void bd_chan_error(bd_chan_peer_t *peer, const char *reason,
    const uint8_t *call_sid, size_t sid_len);

void bd_chan_peer_ref(bd_chan_peer_t *peer);
void bd_chan_peer_unref(bd_chan_peer_t *peer);


#endif /* BD_CHAN_H */
