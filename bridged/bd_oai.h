/*
 * bd_oai.h: one OpenAI Realtime WebSocket, an object of its own, with lws
 * running as a guest on the libuv loop.
 *
 * A connection is one OpenAI session: it opens, carries client events and
 * caller audio out and server events in, and ends.  It never reconnects
 * by itself.  Its owner (a call, bd_call.c) decides what a lost
 * connection means and opens a new one with the same settings and the
 * conversation so far (bd_history.c), so one call outlives as many
 * connections as it needs.  The owner lets go of a connection with
 * bd_oai_release(); from then on the connection reports nothing and frees
 * itself once lws and the name lookup are done with it.  Nothing here
 * blocks.
 */

#ifndef BD_OAI_H
#define BD_OAI_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>
#include <libwebsockets.h>

#include "bd_conf.h"
#include "bd_ring.h"
#include "voice_proto.h"


typedef enum {
    BD_OAI_ST_RESOLVING = 0,       /* the host's name is being looked up */
    BD_OAI_ST_CONNECTING,          /* TCP, TLS and the upgrade */
    BD_OAI_ST_OPEN,                /* events flow both ways */
    BD_OAI_ST_CLOSE_DUE,           /* our Close goes at the next write */
    BD_OAI_ST_CLOSING,             /* our Close is sent: the peer's is
                                      awaited, time-bounded */
    BD_OAI_ST_CLOSED               /* over: reports nothing more */
} bd_oai_state_e;


typedef struct bd_oai_conn_s  bd_oai_conn_t;
typedef struct bd_oai_msg_s   bd_oai_msg_t;


/*
 * What a connection tells its owner.  lost comes once, for a connection
 * that fails or ends without the owner asking; fatal is 1 when another
 * attempt would fail the same way (a refused key, an unknown model: a
 * close with a 3xxx or 4xxx code, or an upgrade refused with a status
 * that is not 408, 429 or 5xx).
 */
typedef struct {
    void  (*open)(void *owner);
    void  (*message)(void *owner, const char *json, size_t len);
    void  (*lost)(void *owner, const char *why, int fatal);
} bd_oai_ops_t;


struct bd_oai_conn_s {
    bd_oai_state_e         state;
    const bd_oai_ops_t    *ops;
    void                  *owner;         /* NULL once released */
    unsigned               refs;          /* the owner, the wsi, the lookup */
    char                   sid[VOICE_PROTO_MAX_SID + 1];   /* for logs */
    char                   path[2048];    /* the URL path and query */

    struct lws            *wsi;
    uv_getaddrinfo_t       dns;
    unsigned               resolving:1;   /* a lookup is in flight (it
                                             outlives a state change) */

    bd_oai_msg_t          *out_head;      /* client events to send */
    bd_oai_msg_t          *out_tail;
    unsigned               out_count;

    uint8_t               *rx;            /* message being reassembled */
    size_t                 rx_len;
    size_t                 rx_size;
    unsigned               rx_skip:1;

    /* caller audio to send: the owner's ring, set while the session may
     * take audio; NULL holds it back (configuring, loading history) */
    bd_ring_t             *audio;
    uint64_t               appended;      /* bytes sent */

    unsigned               close_code;    /* the peer's, 0 if none */
    char                   close_reason[124];
};


/* creates the lws context on the loop; 0, or -1 (logged) */
int bd_oai_init(uv_loop_t *loop, const bd_conf_t *conf);

/* starts destroying the context: lws closes its connections and handles */
void bd_oai_shutdown(void);

/* after uv_run() returned: frees what is left of the context */
void bd_oai_term(void);

/* 1 when an OpenAI API key is configured */
int bd_oai_has_key(void);

/*
 * Opens a connection to a session of model for owner.  Returns it, or
 * NULL (logged) when it cannot even start; ops->open or ops->lost follow.
 */
bd_oai_conn_t *bd_oai_open(const bd_oai_ops_t *ops, void *owner,
    const char *sid, const char *model);

/*
 * The owner is done with it: an open connection is closed with 1000 (time
 * bounded), any other is dropped.  Nothing is reported after this.  With
 * abort, an open connection is dropped at once too (it is stuck).
 */
void bd_oai_release(bd_oai_conn_t *c, int abort);

/* queues a client event (JSON text); dropped unless open */
void bd_oai_send(bd_oai_conn_t *c, const char *json, size_t len);

/* audio is waiting in c->audio: sent when lws says WRITEABLE */
void bd_oai_want_write(bd_oai_conn_t *c);

/* audio is waiting in c->audio: sent now if nothing is ahead of it */
void bd_oai_flush(bd_oai_conn_t *c);

/*
 * The delay before attempt *tries + 1 of a lost session (backoff with
 * jitter), counting it; 0 when the attempts are used up.
 */
uint32_t bd_oai_backoff_ms(uint16_t *tries);

/* runs cb after ms on the loop, through an lws sul */
void bd_oai_timer(lws_sorted_usec_list_t *sul, sul_cb_t cb, uint64_t ms);


#endif /* BD_OAI_H */
