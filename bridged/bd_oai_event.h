/*
 * bd_oai_event.h: what a call knows about its OpenAI Realtime conversation.
 *
 * bd_oai_event_dispatch() reads one server event (GA names) and keeps the
 * bookkeeping the bridge needs: the conversation order of every item, the
 * user items whose transcription is still due, the assistant audio sent to
 * the caller and how much of it Twilio has played (marks), barge-in, and
 * two states: a response's cycle and the caller's turn, each with its one
 * transition (bd_oai_event_response(), bd_oai_event_turn()).
 * Its effects go out through a table of callbacks, so this file knows
 * neither lws nor ZeroMQ: bd_call.c supplies the table, the unit tests
 * supply a fake one.  It also builds the client events bridged sends.
 */

#ifndef BD_OAI_EVENT_H
#define BD_OAI_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "voice_b64.h"
#include "bd_history.h"


#define BD_OAI_EVENT_ID_MAX      64
#define BD_OAI_EVENT_ITEMS       64      /* items remembered per call */
#define BD_OAI_EVENT_MARKS       128     /* marks awaiting their echo */
#define BD_OAI_EVENT_MARK_GAP    800     /* audio bytes (100 ms) per mark */

/*
 * Assistant audio goes to nginx in pieces of at most this many bytes: a
 * multiple of 3 below VOICE_PROTO_MAX_AUDIO, so each piece of a base64
 * delta decodes on its own.
 */
#define BD_OAI_EVENT_PIECE       16383

/* caller audio bytes coalesced into one input_audio_buffer.append (2 s) */
#define BD_OAI_EVENT_APPEND_MAX  16000

#define BD_OAI_EVENT_APPEND_HEAD                                              \
    "{\"type\":\"input_audio_buffer.append\",\"audio\":\""
#define BD_OAI_EVENT_APPEND_TAIL  "\"}"

/* size of the append event that carries n bytes of audio */
#define BD_OAI_EVENT_APPEND_SIZE(n)                                           \
    (sizeof(BD_OAI_EVENT_APPEND_HEAD) - 1 + VOICE_B64_ENCODED_LEN(n)          \
     + sizeof(BD_OAI_EVENT_APPEND_TAIL) - 1)


/* item flags */
#define BD_OAI_EVENT_PENDING     0x01    /* committed user audio, ASR due */
#define BD_OAI_EVENT_SETTLED     0x02    /* its transcript came or failed */
#define BD_OAI_EVENT_TRUNCATED   0x04    /* barge-in: its audio is dropped */
#define BD_OAI_EVENT_AUDIO_DONE  0x08    /* all its audio has come */


/* one finished entry of the conversation, for the record */
typedef struct {
    uint32_t     order;
    uint32_t     role;            /* VOICE_PROTO_ROLE_* */
    const char  *text;            /* what was said (heard, of a reply) */
    size_t       len;
    const char  *generated;       /* a reply the caller cut off: all it
                                     said (len may be 0); else NULL */
    size_t       generated_len;
    uint32_t     latency_ms;      /* a reply's: from the end of the
                                     caller's speech to its first audio
                                     sent; 0 when it answered none */
} bd_oai_event_said_t;


/* the tokens one response used (response.done's usage) */
typedef struct {
    uint32_t     input_text;
    uint32_t     input_audio;
    uint32_t     input_cached;    /* of the input, cached (text + audio) */
    uint32_t     output_text;
    uint32_t     output_audio;
} bd_oai_event_usage_t;


/*
 * The effects of the events.  Each gets the data pointer given to
 * bd_oai_event_init().  Those returning int return 1 when the message went
 * out and 0 when it was dropped (nginx did not take it).
 */
typedef struct {
    /* mark, when not NULL, names the point after this audio (Twilio
     * echoes it once the audio has played); len 0 sends the mark alone */
    int   (*audio_out)(void *data, const uint8_t *audio, size_t len,
                       const char *mark);
    void  (*clear)(void *data);
    int   (*transcript)(void *data, const bd_oai_event_said_t *said);

    /* queue a client event (JSON text) for OpenAI */
    void  (*send)(void *data, const char *json, size_t len);

    /* session.updated: the session has our settings */
    void  (*ready)(void *data);

    /* no session can go on (a refused key, an unknown model) */
    void  (*fatal)(void *data, const char *why);

    /* this session is over (session_expired): a new one takes over */
    void  (*renew)(void *data, const char *why);

    /* the model called a function and its item is complete: order is
     * the item's, arguments its JSON text (run it, answer it) */
    void  (*tool_call)(void *data, uint32_t order, const char *call_id,
                       const char *name, const char *arguments);

    /* OpenAI ran a remote MCP tool itself: for the record only */
    void  (*mcp_call)(void *data, uint32_t order, const char *name,
                      const char *arguments, const char *output);

    /* a response is over (response.done, whatever its status) */
    void  (*response_done)(void *data);

    /* the caller started (1) or stopped (0) speaking, by the VAD */
    void  (*speech)(void *data, int started);

    /* OpenAI's idle timeout fired: it prompts the caller itself */
    void  (*idle)(void *data);

    /* a response's tokens */
    void  (*usage)(void *data, const bd_oai_event_usage_t *usage);

    /* the time now (ms, any steady clock), and in *input_ms how much of
     * the caller's audio this session has been given (ms): together they
     * tell when the caller's speech really ended */
    uint64_t  (*clock)(void *data, uint64_t *input_ms);
} bd_oai_event_ops_t;


typedef struct {
    char        id[BD_OAI_EVENT_ID_MAX];
    uint32_t    order;       /* OpenAI's conversation order */
    uint8_t     role;        /* VOICE_PROTO_ROLE_*, 0 while unknown */
    uint8_t     flags;
    uint64_t    received;    /* assistant audio bytes OpenAI produced */
    uint64_t    sent;        /* of those, bytes nginx took */
    uint64_t    played;      /* bytes Twilio confirmed with a mark echo */
    uint64_t    marked;      /* sent bytes when its last mark left */
    char       *text;        /* an assistant's transcript, malloc()ed and
                                held until what of it played is known */
    size_t      text_len;
    uint32_t    latency;     /* ms: the turn's, to its first audio */
} bd_oai_event_item_t;


/*
 * A response's cycle as bridged sees it; bd_oai_event_response() is its
 * one transition, driven by the steps below:
 *
 *     IDLE --ask--> ASKED --created--> GENERATING --text done--> FINISHING
 *      ^              |  refused                                    |
 *      +--------------+-------------------- done -------------------+
 *
 * OpenAI's own responses (to the VAD) are created unasked, from IDLE;
 * done ends any; a response asked while one finishes makes it GENERATING
 * again (two are due: a second create is refused, see respond_due).
 */
typedef enum {
    BD_OAI_EVENT_RESP_IDLE = 0,        /* none */
    BD_OAI_EVENT_RESP_ASKED,           /* our response.create unanswered */
    BD_OAI_EVENT_RESP_GENERATING,      /* created: its output is coming */
    BD_OAI_EVENT_RESP_FINISHING        /* its transcript is done, its
                                          response.done is due */
} bd_oai_event_resp_e;


typedef enum {
    BD_OAI_EVENT_STEP_ASK = 0,         /* a response.create goes out */
    BD_OAI_EVENT_STEP_DROP,            /* refused, its transcript done, or
                                          cancelled: no more is asked */
    BD_OAI_EVENT_STEP_CREATED,         /* response.created */
    BD_OAI_EVENT_STEP_DONE,            /* response.done, or a new session */
    BD_OAI_EVENT_STEPS
} bd_oai_event_step_e;


/*
 * The caller's turn, by the server VAD; bd_oai_event_turn() is its one
 * transition:
 *
 *     SILENT --speech_started--> SPEAKING --speech_stopped--> ANSWERING
 *        ^                          |                             |
 *        +-- committed, our commit -+                             |
 *        +----------- the reply's first audio sent ---------------+
 *
 * ANSWERING is the turn's latency being measured (from turn_end).  A new
 * session ends SPEAKING, not ANSWERING: the next session's reply still
 * answers the turn.  speech_started and speech_stopped are taken from any
 * state (a session's events may come after a new one's).
 */
typedef enum {
    BD_OAI_EVENT_TURN_SILENT = 0,      /* nobody speaks, or the reply
                                          is playing */
    BD_OAI_EVENT_TURN_SPEAKING,        /* the caller mid-utterance */
    BD_OAI_EVENT_TURN_ANSWERING        /* the caller's speech ended, no
                                          reply audio sent yet */
} bd_oai_event_turn_e;


typedef struct {
    uint32_t    seq;
    uint32_t    order;       /* the item the mark follows */
    uint64_t    sent;        /* the item's sent bytes when the mark left */
} bd_oai_event_mark_t;


typedef struct {
    const bd_oai_event_ops_t  *ops;
    void                      *data;
    const char                *sid;          /* for log lines */

    bd_oai_event_item_t        items[BD_OAI_EVENT_ITEMS];
    unsigned                   items_head;   /* the oldest item */
    unsigned                   items_len;

    bd_oai_event_mark_t        marks[BD_OAI_EVENT_MARKS];
    unsigned                   marks_head;   /* the oldest unechoed mark */
    unsigned                   marks_len;
    uint32_t                   unmarked_order; /* item whose audio went out
                                                  after its last mark, 0 */

    uint32_t                   next_order;
    uint32_t                   mark_seq;
    uint32_t                   transcripts;  /* TRANSCRIPT messages sent */
    uint32_t                   dtmf_seq;     /* our keypad items */
    uint32_t                   pending;      /* PENDING items */

    bd_oai_event_resp_e        response;
    bd_oai_event_turn_e        turn;
    uint64_t                   turn_end;     /* clock ms: when the
                                                caller's speech ended */

    /*
     * Facts and requests, not states.  ready and stopped are set once
     * and never go back (ready per session, stopped per call);
     * respond_due and committing are a request of ours that is pending
     * (a second response.create, an input_audio_buffer.commit) beside
     * whatever state the response or the turn is in.
     */
    unsigned                   ready:1;      /* session.updated seen */
    unsigned                   respond_due:1; /* our response.create was
                                                 refused: one was active */
    unsigned                   committing:1; /* our commit is unanswered */
    unsigned                   stopped:1;    /* the caller is gone */

    char                       response_id[BD_OAI_EVENT_ID_MAX];
    char                       dropped_id[BD_OAI_EVENT_ID_MAX];

    uint64_t                   expires_at;     /* the session's end,
                                                  Unix s; 0 if unknown */
    uint64_t                   deltas_flat;    /* read without cJSON */
    uint64_t                   audio_sent;
    uint64_t                   audio_lost;     /* nginx did not take it */
    uint64_t                   audio_dropped;  /* arrived after a barge-in */
    unsigned                   barge_ins;
} bd_oai_event_conv_t;


/* the one transition of cv->response */
void bd_oai_event_response(bd_oai_event_conv_t *cv, bd_oai_event_step_e step);

/* the one transition of cv->turn */
void bd_oai_event_turn(bd_oai_event_conv_t *cv, bd_oai_event_turn_e turn);


/* a response is asked for or generating: more of it is to come */

static inline int
bd_oai_event_responding(const bd_oai_event_conv_t *cv)
{
    return cv->response == BD_OAI_EVENT_RESP_ASKED
           || cv->response == BD_OAI_EVENT_RESP_GENERATING;
}


/* a response is created and not done */

static inline int
bd_oai_event_active(const bd_oai_event_conv_t *cv)
{
    return cv->response == BD_OAI_EVENT_RESP_GENERATING
           || cv->response == BD_OAI_EVENT_RESP_FINISHING;
}


void bd_oai_event_init(bd_oai_event_conv_t *cv, const bd_oai_event_ops_t *ops,
    void *data, const char *sid);

/*
 * A new OpenAI session replaces a lost one: its items, marks and pending
 * work are gone with the old session.  The order and transcript counters
 * go on, so nginx still sorts the call's utterances correctly.
 */
void bd_oai_event_new_session(bd_oai_event_conv_t *cv);

/*
 * Handles one server event.  Returns 0, or -1 when the text is not a JSON
 * object with a "type" (the caller logs it).  Unknown types are ignored.
 */
int bd_oai_event_dispatch(bd_oai_event_conv_t *cv, const char *json,
    size_t len);

/* Twilio echoed a mark: the audio before it has been played */
void bd_oai_event_mark_ack(bd_oai_event_conv_t *cv, const char *name,
    size_t len);

/* the caller is gone: commit an utterance the VAD has not closed yet */
void bd_oai_event_stop(bd_oai_event_conv_t *cv);

/*
 * The assistant's transcripts still held (their audio playing) go out as
 * they stand, with what played of them (tell), or are only freed.
 */
void bd_oai_event_flush(bd_oai_event_conv_t *cv, int tell);

/* 1 when no transcription and no response is outstanding */
int bd_oai_event_settled(bd_oai_event_conv_t *cv);

/*
 * A new session takes over a conversation: a system item that says so
 * (why, and how many of the oldest turns are missing), then the kept
 * items oldest first, as text (a tool's result folded into a system
 * item).  Sent before any caller audio, so the model reads the past
 * before it hears the present.  Returns 0, or -1 when out of memory.
 */
int bd_oai_event_restore(bd_oai_event_conv_t *cv, const bd_history_t *h,
    const char *why);

/* the assistant speaks first: a user text item, then response.create */
int bd_oai_event_greet(bd_oai_event_conv_t *cv, const char *instruction);

/*
 * The caller pressed a key: a user text item that says so (its order is
 * taken now, and the keypad entry goes to the record with it), then
 * response.create, or once the response generating now is done.
 */
int bd_oai_event_dtmf(bd_oai_event_conv_t *cv, char digit);

/*
 * A function call's result, as a function_call_output item; with
 * respond, response.create after it (the caller makes sure no response
 * is generating).
 */
int bd_oai_event_tool_output(bd_oai_event_conv_t *cv, const char *call_id,
    const char *output, int respond);

/* response.create, so the model speaks: after tool outputs, a prompt */
void bd_oai_event_respond(bd_oai_event_conv_t *cv, const char *instructions);

/* a system item the model reads before its next turn (no response) */
int bd_oai_event_system(bd_oai_event_conv_t *cv, const char *text);

/* 1 when nothing of the assistant's is generating or still playing */
int bd_oai_event_quiet(bd_oai_event_conv_t *cv);

/* ms of the assistant's audio sent to the caller and not known played */
uint64_t bd_oai_event_unplayed_ms(bd_oai_event_conv_t *cv);

/*
 * Writes the input_audio_buffer.append event for len bytes of caller audio
 * into dst, without allocating.  Returns its length, or 0 if dst is
 * smaller than BD_OAI_EVENT_APPEND_SIZE(len).
 */
size_t bd_oai_event_append(char *dst, size_t size, const uint8_t *audio,
    size_t len);


#endif /* BD_OAI_EVENT_H */
