/*
 * bd_call.h: one phone call, from nginx's STREAM_START to CALL_DONE.
 *
 * bd_call.c owns the call table, the call state machine and the messages
 * about calls; bd_oai.c runs the call's OpenAI WebSocket and reports back
 * through the bd_call_oai_*() functions.  Both files work on bd_call_t.
 * Its references (refs) are the table's, each live wsi's, and a pending
 * name lookup's.
 */

#ifndef BD_CALL_H
#define BD_CALL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>
#include <libwebsockets.h>
#include <cJSON.h>

#include "bd_chan.h"
#include "bd_conf.h"
#include "bd_oai_event.h"
#include "bd_ring.h"
#include "bd_tool.h"
#include "bd_twapi.h"
#include "voice_proto.h"


#define BD_CALL_WSI_MAX   2        /* a closing and a new connection */
#define BD_CALL_PATH_MAX  2048     /* the OpenAI URL path and query */


typedef enum {
    BD_CALL_ST_CONNECTING = 0,     /* OpenAI socket opening, audio held */
    BD_CALL_ST_CONFIGURING,        /* session.update sent, audio held */
    BD_CALL_ST_LIVE,               /* audio flows both ways */
    BD_CALL_ST_RETRYING,           /* socket lost, reconnect scheduled */
    BD_CALL_ST_ENDING,             /* ended on purpose (end_call, a
                                      transfer): the last words play out,
                                      then Twilio is asked through REST */
    BD_CALL_ST_DRAINING,           /* caller gone, last transcripts due */
    BD_CALL_ST_CLOSED              /* destroyed, waiting to be freed */
} bd_call_state_e;


typedef struct bd_oai_msg_s  bd_oai_msg_t;

typedef struct bd_call_s  bd_call_t;

struct bd_call_s {
    bd_call_t                *next;           /* hash chain */
    bd_call_t                *reap_next;
    bd_call_state_e           state;
    unsigned                  refs;           /* the table + live wsis */
    bd_chan_peer_t           *peer;           /* the worker owning it */
    uint64_t                  started;        /* loop time, ms */
    size_t                    sid_len;
    char                      sid[VOICE_PROTO_MAX_SID + 1];
    char                      stream_sid[VOICE_PROTO_MAX_SID + 1];

    /* the session settings, STREAM_START's blob (bd_session.c) */
    cJSON                    *settings;
    const char               *model;          /* in settings or conf */
    char                      direction[16];  /* inbound | outbound */
    uint64_t                  record;         /* nginx's record's start:
                                                 a transfer's way back */
    char                      twilio_number[VOICE_PROTO_MAX_SID + 1];
    unsigned                  greeted:1;
    unsigned                  hold_logged:1;

    /* the OpenAI WebSocket, run by bd_oai.c */
    struct lws               *wsi;            /* current connection */
    struct lws               *wsis[BD_CALL_WSI_MAX];  /* not destroyed */
    lws_sorted_usec_list_t    sul_connect;
    lws_sorted_usec_list_t    sul_wait;       /* configure / final wait */
    uv_getaddrinfo_t          dns;
    uint16_t                  retries;
    unsigned                  resolving:1;    /* dns in flight */
    unsigned                  open:1;         /* established */
    unsigned                  close_pending:1;
    unsigned                  close_sent:1;
    bd_oai_msg_t             *out_head;       /* client events to send */
    bd_oai_msg_t             *out_tail;
    unsigned                  out_count;
    uint8_t                  *rx;             /* message being reassembled */
    size_t                    rx_len;
    size_t                    rx_size;
    unsigned                  rx_skip:1;

    /* caller audio waiting for OpenAI: bounded, oldest dropped first */
    bd_ring_t                 hold;

    bd_oai_event_conv_t       conv;
    bd_tool_set_t             tools;

    /* a deliberate end (ENDING): who, why, and the Twilio update that
     * does it (Status=completed, or a redirect to a transfer) */
    char                      ended_by[16];
    char                      end_reason[128];
    char                      answered_by[24];  /* Twilio's AMD verdict */
    unsigned                  amd_hold:1;     /* wait for the verdict */
    unsigned                  amd_due:1;      /* a verdict to act on once
                                                 the session is live */

    /* silence (voice_idle_timeout) and length (voice_max_call_duration) */
    lws_sorted_usec_list_t    sul_idle;
    lws_sorted_usec_list_t    sul_limit;
    unsigned                  idle_ms;        /* 0: no idle timeout */
    unsigned                  idle_server;    /* OpenAI's, in the session
                                                 now (ms), or 0 */
    unsigned                  idle_prompts;   /* unanswered, in a row */
    unsigned                  idle_armed:1;
    unsigned                  wrapped_up:1;   /* told to wrap up */
    char                     *end_form;
    bd_tool_run_t            *transfer;       /* its tool call, answered
                                                 when Twilio answers */
    bd_twapi_req_t           *end_req;        /* in flight */
    uint64_t                  end_asked;      /* loop ms: end_call */
    uint64_t                  end_sent;       /* loop ms: the request */
    unsigned                  end_requested:1;
    unsigned                  end_timed:1;    /* the wait is the audio's */

    uint64_t                  audio_in;       /* caller bytes received */
    uint64_t                  audio_appended; /* caller bytes to OpenAI */
};


int bd_call_init(uv_loop_t *loop, const bd_conf_t *conf);

/*
 * Ends every call -- through Twilio, or HANGUP and CALL_DONE when it
 * cannot -- and lets them be freed; done runs from the loop once they are
 * gone (at most a few seconds).
 */
void bd_call_shutdown(void (*done)(void));

/* STREAM_START, AUDIO_IN, MARK_ACK, DTMF, STREAM_STOP from a worker */
void bd_call_on_message(bd_chan_peer_t *peer, const voice_proto_msg_t *msg);

/* /api/end-call asked Twilio to end this call: the record says so */
void bd_call_end_requested(const voice_proto_str_t *sid);

/* the worker is gone: its calls end without a word to it */
void bd_call_peer_gone(bd_chan_peer_t *peer);

/* drops a reference; the call is freed later, from the loop */
void bd_call_unref(bd_call_t *call);


/* the loop's time, ms */
uint64_t bd_call_now(void);

/* bd_tool.c: a tool call and its outcome, for the record */
void bd_call_tool_record(bd_call_t *call, uint32_t order, const char *name,
    const char *arguments, const char *output);

/* bd_tool.c: the assistant ends the call (end_call) */
void bd_call_end(bd_call_t *call, const char *by, const char *reason);

/* bd_tool.c: the assistant hands the caller to a person; the run is
 * answered through bd_tool_transfer_done() */
void bd_call_transfer(bd_call_t *call, bd_tool_run_t *run, const char *name,
    const char *to);

/* reports from bd_oai.c about the current connection */
void bd_call_oai_open(bd_call_t *call);
void bd_call_oai_message(bd_call_t *call, const char *json, size_t len);
void bd_call_oai_lost(bd_call_t *call, const char *why);


#endif /* BD_CALL_H */
