/*
 * bd_call.h: one phone call, from nginx's STREAM_START to CALL_DONE.
 *
 * bd_call.c owns the call table, the call state machine and the messages
 * about calls.  A call opens one OpenAI connection after another
 * (bd_oai.c, an object of its own): when one is lost, the next gets the
 * same settings and the conversation so far (bd_history.c), while the
 * caller's audio waits in the hold ring.  Its one reference (refs) is
 * the table's: a connection, a tool run or a Twilio request that outlives
 * the call is cut loose from it, not counted.
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
#include "bd_history.h"
#include "bd_oai.h"
#include "bd_oai_event.h"
#include "bd_ring.h"
#include "bd_tool.h"
#include "bd_twapi.h"
#include "voice_proto.h"


typedef enum {
    BD_CALL_ST_CONNECTING = 0,     /* OpenAI socket opening, audio held */
    BD_CALL_ST_CONFIGURING,        /* session.update sent, audio held */
    BD_CALL_ST_LIVE,               /* audio flows both ways */
    BD_CALL_ST_RETRYING,           /* session lost, the next one is
                                      scheduled or opening; audio held */
    BD_CALL_ST_ENDING,             /* ended on purpose (end_call, a
                                      transfer): the last words play out,
                                      then Twilio is asked through REST */
    BD_CALL_ST_DRAINING,           /* caller gone, last transcripts due */
    BD_CALL_ST_CLOSED              /* destroyed, waiting to be freed */
} bd_call_state_e;


/*
 * ENDING's own steps, in this order (bd_call_set_end() is their one
 * transition): the last words are generated, then played, then Twilio is
 * asked.  The step stays ASKED while the call drains and closes; a
 * transfer Twilio refuses takes the call back to LIVE and NONE.
 */

typedef enum {
    BD_CALL_END_NONE = 0,          /* not ending */
    BD_CALL_END_SPEAKING,          /* the last words generate; the wait
                                      is BD_CALL_GOODBYE_MS */
    BD_CALL_END_PLAYING,           /* all generated, not all played: the
                                      wait is what is left to play */
    BD_CALL_END_ASKED              /* the Twilio update is sent, once */
} bd_call_end_e;


typedef struct bd_oai_msg_s  bd_oai_msg_t;

typedef struct bd_call_s  bd_call_t;

struct bd_call_s {
    bd_call_t                *next;           /* hash chain */
    bd_call_t                *reap_next;
    bd_call_state_e           state;
    unsigned                  refs;           /* the table's */
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

    /* the current OpenAI connection (bd_oai.c), one session of the call;
     * a lost one is replaced, with the conversation so far given back */
    bd_oai_conn_t            *oai;
    lws_sorted_usec_list_t    sul_connect;    /* the next session */
    lws_sorted_usec_list_t    sul_wait;       /* configure / final wait */
    lws_sorted_usec_list_t    sul_renew;      /* the session's lifetime */
    uint64_t                  renew_by;       /* loop ms: moved by then */
    uint16_t                  retries;        /* since the last live one */
    unsigned                  sessions;       /* opened so far */
    unsigned                  respond_due:1;  /* a reply was cut: the
                                                 next session answers */
    unsigned                  was_live:1;     /* a session was, once */
    char                      lost_why[160];  /* why the last one went */
    bd_history_t              history;

    /* caller audio waiting for OpenAI: bounded, oldest dropped first */
    bd_ring_t                 hold;

    bd_oai_event_conv_t       conv;
    bd_tool_set_t             tools;

    /* a deliberate end (ENDING): who, why, and the Twilio update that
     * does it (Status=completed, or a redirect to a transfer) */
    char                      ended_by[16];
    char                      end_reason[128];
    char                      answered_by[24];  /* Twilio's AMD verdict */

    /*
     * Two facts, not one state: all four pairs occur (a verdict may come
     * before the stream, before the session is live, or after), and each
     * is read on its own: amd_hold by the session's settings and the idle
     * timer, amd_due by bd_call_amd() once the session is live.
     */
    unsigned                  amd_hold:1;     /* the assistant is silent
                                                 until the verdict */
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

    /* told to wrap up: a fact, once per call (a transfer refused after
     * it does not tell it again), not a step of the end, which is
     * end_step's */
    unsigned                  wrapped_up:1;
    char                     *end_form;
    bd_tool_run_t            *transfer;       /* its tool call, answered
                                                 when Twilio answers */
    bd_twapi_req_t           *end_req;        /* in flight */
    uint64_t                  end_asked;      /* loop ms: end_call */
    uint64_t                  end_sent;       /* loop ms: the request */
    bd_call_end_e             end_step;

    uint64_t                  audio_in;       /* caller bytes received */
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

/* the calls in the table, and whether they reach --max-calls */
unsigned bd_call_calls(void);
int bd_call_full(void);

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


#endif /* BD_CALL_H */
