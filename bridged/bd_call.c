/*
 * bd_call.c: the calls, keyed by call SID, and their state machine.
 *
 *     CONNECTING --open--> CONFIGURING --session.updated--> LIVE
 *         ^                     |                            |  |
 *         +---- RETRYING <------+-------- socket lost -------+  |
 *                                                            |  | end_call,
 *                        STREAM_STOP, or HANGUP after a fatal error  transfer
 *                                                            v  v
 *     CLOSED <--CALL_DONE-- DRAINING <--STREAM_STOP-- ENDING
 *                 (last transcripts, --final-wait-ms)
 *
 * A call that stops before it is LIVE has nothing to wait for: CALL_DONE
 * goes out at once.  The state changes only in bd_call_set_state().
 *
 * Ending on purpose.  The assistant ends a call (end_call) or hands it to
 * a person (transfer_call) through Twilio's REST API, never by closing
 * the media stream: Twilio logs a stream the server closes as an error
 * (31921) and runs whatever TwiML follows.  In ENDING the caller's audio
 * is no longer forwarded; once the last reply is done and Twilio has
 * echoed its last mark (the goodbye has been heard), or after
 * BD_CALL_GOODBYE_MS at most, the update goes out (Status=completed, or
 * the <Dial> TwiML), and the stream's stop that follows ends the call
 * here as usual.  These steps of ENDING (speaking, playing, asked)
 * change only in bd_call_set_end().  A server-side close (HANGUP) now
 * means only that the assistant cannot go on.
 *
 * Lifetime.  A call is referenced by the table and by each of its lws
 * connections that lws has not destroyed yet.  bd_call_destroy() takes it
 * out of the table, cancels its timers and closes its connection; the
 * memory goes when the last reference does, and then only from a uv_idle
 * callback, so a handler that ends its own call never frees the object it
 * is still running on (redis's freeClientAsync idea).
 *
 * Calls talk to nginx through bd_chan.c and to OpenAI through bd_oai.c;
 * what OpenAI's events mean is decided in bd_oai_event.c.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <uv.h>
#include <libwebsockets.h>

#include "bd_call.h"
#include "bd_chan.h"
#include "bd_form.h"
#include "bd_log.h"
#include "bd_stats.h"
#include "bd_oai.h"
#include "bd_oai_event.h"
#include "bd_ring.h"
#include "bd_session.h"
#include "bd_tool.h"
#include "bd_twapi.h"
#include "voice_proto.h"


#define BD_CALL_BUCKET_BITS    10
#define BD_CALL_BUCKETS        (1 << BD_CALL_BUCKET_BITS)
#define BD_CALL_TOMB_BITS      11
#define BD_CALL_TOMBS          (1 << BD_CALL_TOMB_BITS)
#define BD_CALL_TOMB_MS        60000    /* an ended call is remembered */
#define BD_CALL_UNKNOWN_MS     60000    /* one "unknown call" per minute */
#define BD_CALL_CONFIGURE_MS   10000    /* for session.updated */
#define BD_CALL_GOODBYE_MS     15000    /* for the last words to play */
#define BD_CALL_GOODBYE_MARGIN_MS  2000 /* after they should have played */
#define BD_CALL_SHUTDOWN_MS    3000     /* a graceful stop's calls end */
#define BD_CALL_SHUTDOWN_FLUSH_MS  200  /* then their last words leave */
#define BD_CALL_DIAL_TIMEOUT   25       /* s a transfer rings */
#define BD_CALL_RENEW_MARGIN_MS  120000  /* before expires_at: renew in a
                                           quiet moment of this (at most) */
#define BD_CALL_RENEW_FORCE_MS   5000   /* ...and at the latest this close */
#define BD_CALL_RENEW_POLL_MS    250    /* how often quiet is looked for */
#define BD_CALL_WRAP_UP_MS     60000    /* told to wrap up this long before
                                           voice_max_call_duration */

#define BD_CALL_IDLE_PROMPT                                                   \
    "The caller has said nothing for a while. Check in with one short "      \
    "question, such as whether they are still there."
#define BD_CALL_IDLE_GOODBYE                                                  \
    "The caller has not answered for a long time. Say a short, polite "      \
    "goodbye now; the call ends after it."
#define BD_CALL_WRAP_UP                                                       \
    "This call must end in about %u seconds. Wrap up now: bring the "       \
    "conversation to a close, say goodbye and end the call."
#define BD_CALL_STOP_GOODBYE                                                  \
    "The service is going down for maintenance. Apologise briefly, say a "   \
    "very short goodbye now; the call ends after it."
#define BD_CALL_LIMIT_GOODBYE                                                 \
    "The call has reached its time limit. Say a very short goodbye now; "    \
    "the call ends after it."

#define BD_CALL_VOICE          "marin"
#define BD_CALL_TRANSCRIBE     "gpt-transcribe"
#define BD_CALL_INSTRUCTIONS                                                  \
    "You are a helpful, friendly assistant on a phone call. Keep your "       \
    "answers short and conversational, and speak clearly."


/*
 * A call SID seen recently without a call: either an ended call (done, so
 * its late audio is ignored and a STREAM_STOP gets its real count) or an
 * unknown one (error_at rate-limits the ERROR replies).
 */
typedef struct {
    char        sid[VOICE_PROTO_MAX_SID + 1];
    char        answered_by[24];  /* a verdict before the stream came */
    uint64_t    until;
    uint64_t    error_at;
    uint32_t    count;
    unsigned    done:1;
    unsigned    errored:1;
} bd_call_tomb_t;


static int bd_call_ev_audio_out(void *data, const uint8_t *audio,
    size_t len, const char *mark);
static void bd_call_ev_clear(void *data);
static int bd_call_ev_transcript(void *data,
    const bd_oai_event_said_t *said);
static void bd_call_ev_send(void *data, const char *json, size_t len);
static void bd_call_ev_ready(void *data);
static void bd_call_ev_fatal(void *data, const char *why);
static void bd_call_ev_tool_call(void *data, uint32_t order,
    const char *call_id, const char *name, const char *arguments);
static void bd_call_ev_mcp_call(void *data, uint32_t order, const char *name,
    const char *arguments, const char *output);
static void bd_call_ev_response_done(void *data);
static void bd_call_ev_speech(void *data, int started);
static void bd_call_ev_idle(void *data);
static void bd_call_ev_usage(void *data, const bd_oai_event_usage_t *usage);
static uint64_t bd_call_ev_clock(void *data, uint64_t *input_ms);
static void bd_call_ev_renew(void *data, const char *why);
static void bd_call_oai_open(void *owner);
static void bd_call_oai_message(void *owner, const char *json, size_t len);
static void bd_call_oai_lost(void *owner, const char *why, int fatal);
static void bd_call_session_lost(bd_call_t *call, const char *why,
    int fatal);
static void bd_call_renew_arm(bd_call_t *call);
static void bd_call_session_open(bd_call_t *call);
static void bd_call_take_over(bd_call_t *call, const voice_proto_msg_t *msg);
static void bd_call_end_politely(bd_call_t *call,
    const voice_proto_msg_t *msg);
static void bd_call_idle_arm(bd_call_t *call);
static void bd_call_check_goodbye(bd_call_t *call);
static void bd_call_end_now(bd_call_t *call, const char *why);
static void bd_call_ending(bd_call_t *call, const char *by,
    const char *reason, const char *form);
static void bd_call_wait_expired(lws_sorted_usec_list_t *sul);
static void bd_call_amd(bd_call_t *call);
static char *bd_call_session_update(bd_call_t *call);
static void bd_call_session_again(bd_call_t *call);
static void bd_call_limit_arm(bd_call_t *call);
static void bd_call_shutdown_timer_cb(uv_timer_t *timer);

static void bd_call_stop(bd_call_t *call);
static void bd_call_destroy(bd_call_t *call);


static const bd_oai_event_ops_t  bd_call_event_ops = {
    bd_call_ev_audio_out,
    bd_call_ev_clear,
    bd_call_ev_transcript,
    bd_call_ev_send,
    bd_call_ev_ready,
    bd_call_ev_fatal,
    bd_call_ev_renew,
    bd_call_ev_tool_call,
    bd_call_ev_mcp_call,
    bd_call_ev_response_done,
    bd_call_ev_speech,
    bd_call_ev_idle,
    bd_call_ev_usage,
    bd_call_ev_clock
};


static const bd_oai_ops_t  bd_call_oai_ops = {
    bd_call_oai_open,
    bd_call_oai_message,
    bd_call_oai_lost
};


static const char  *bd_call_end_names[] = {
    "none", "speaking", "playing", "asked"
};


static const char  *bd_call_state_names[] = {
    "connecting", "configuring", "live", "retrying", "ending", "draining",
    "closed"
};


static uv_loop_t              *bd_call_loop;
static const bd_conf_t        *bd_call_conf;
static bd_session_defaults_t   bd_call_defaults;
static bd_call_t          *bd_call_table[BD_CALL_BUCKETS];
static unsigned            bd_call_count;        /* calls in the table */
static unsigned            bd_call_objects;      /* calls not yet freed */
static bd_call_t          *bd_call_reaped;
static uv_idle_t           bd_call_reaper;
static int                 bd_call_closing;
static bd_call_tomb_t      bd_call_tombs[BD_CALL_TOMBS];
static uv_timer_t          bd_call_shutdown_timer;
static void              (*bd_call_shutdown_done)(void);


static void
bd_call_set_state(bd_call_t *call, bd_call_state_e state)
{
    bd_log(BD_LOG_DEBUG, call->sid, "call %s -> %s",
           bd_call_state_names[call->state], bd_call_state_names[state]);

    call->state = state;

    /* caller audio goes to OpenAI only in a live session: before, it
     * waits in the hold ring behind the settings and the history */

    if (call->oai != NULL) {
        call->oai->audio = (state == BD_CALL_ST_LIVE) ? &call->hold : NULL;
    }
}


/*
 * The one transition of ENDING's steps: forward only (NONE, SPEAKING,
 * PLAYING may be skipped to ASKED), and back from ASKED to NONE when
 * Twilio refuses a transfer; anything else is a bug, refused and logged.
 */

static void
bd_call_set_end(bd_call_t *call, bd_call_end_e step)
{
    if (step <= call->end_step
        && !(step == BD_CALL_END_NONE && call->end_step == BD_CALL_END_ASKED))
    {
        bd_log(BD_LOG_ERROR, call->sid, "call end: %s -> %s refused",
               bd_call_end_names[call->end_step], bd_call_end_names[step]);
        return;
    }

    bd_log(BD_LOG_DEBUG, call->sid, "call end: %s -> %s",
           bd_call_end_names[call->end_step], bd_call_end_names[step]);

    call->end_step = step;
}


/*
 * nginx picks this instance with voice_proto_hash(sid) % instances, so the
 * low bits of that hash are nearly the same for all our calls: a
 * multiplicative (Fibonacci) step spreads them, and the top bits index.
 */

static unsigned
bd_call_hash(const uint8_t *sid, size_t len, unsigned bits)
{
    return (unsigned) ((voice_proto_hash(sid, len) * 2654435761u)
                       >> (32 - bits));
}


static unsigned
bd_call_bucket(const uint8_t *sid, size_t len)
{
    return bd_call_hash(sid, len, BD_CALL_BUCKET_BITS);
}


static bd_call_t *
bd_call_find(const uint8_t *sid, size_t len)
{
    bd_call_t  *call;

    for (call = bd_call_table[bd_call_bucket(sid, len)]; call;
         call = call->next)
    {
        if (call->sid_len == len && memcmp(call->sid, sid, len) == 0) {
            return call;
        }
    }

    return NULL;
}


static void
bd_call_unlink(bd_call_t *call)
{
    bd_call_t  **pp;

    pp = &bd_call_table[bd_call_bucket((uint8_t *) call->sid, call->sid_len)];

    for ( ;; ) {
        if (*pp == NULL) {
            return;
        }

        if (*pp == call) {
            *pp = call->next;
            call->next = NULL;
            bd_call_count--;
            return;
        }

        pp = &(*pp)->next;
    }
}


/* call SIDs go into log lines and tombstones: plain tokens only */

static int
bd_call_sid_ok(const voice_proto_str_t *sid)
{
    size_t   i;
    uint8_t  c;

    if (sid->len == 0 || sid->len > VOICE_PROTO_MAX_SID) {
        return 0;
    }

    for (i = 0; i < sid->len; i++) {
        c = sid->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
        {
            return 0;
        }
    }

    return 1;
}


static bd_call_tomb_t *
bd_call_tomb(const uint8_t *sid, size_t len, int create)
{
    bd_call_tomb_t  *t;

    t = &bd_call_tombs[bd_call_hash(sid, len, BD_CALL_TOMB_BITS)];

    if (strlen(t->sid) == len && memcmp(t->sid, sid, len) == 0) {
        return t;
    }

    if (!create) {
        return NULL;
    }

    /*
     * Direct-mapped: a collision forgets the other SID, which only costs
     * an extra ERROR or a CALL_DONE with count 0 for it.
     */

    memset(t, 0, sizeof(bd_call_tomb_t));
    memcpy(t->sid, sid, len);

    return t;
}


static uint64_t
bd_call_epoch_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}


static int
bd_call_send_call_done(bd_chan_peer_t *peer, const uint8_t *sid, size_t len,
    uint32_t count, const char *by, const char *reason,
    const char *answered_by)
{
    voice_proto_writer_t  *w;

    w = bd_chan_begin(VOICE_PROTO_MSG_CALL_DONE);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, sid, len);
    voice_proto_put_u32(w, VOICE_PROTO_F_COUNT, count);

    if (by != NULL && by[0] != '\0') {
        voice_proto_put_str(w, VOICE_PROTO_F_ENDED_BY, by);
        voice_proto_put_str(w, VOICE_PROTO_F_REASON, reason);
    }

    if (answered_by != NULL && answered_by[0] != '\0') {
        voice_proto_put_str(w, VOICE_PROTO_F_ANSWERED_BY, answered_by);
    }

    return bd_chan_send(peer, w);
}


uint64_t
bd_call_now(void)
{
    return uv_now(bd_call_loop);
}


/* who ended the call and why, for the record: the first word stays */

static void
bd_call_ended_by(bd_call_t *call, const char *by, const char *reason)
{
    if (call->ended_by[0] != '\0') {
        return;
    }

    snprintf(call->ended_by, sizeof(call->ended_by), "%s", by);
    snprintf(call->end_reason, sizeof(call->end_reason), "%s",
             reason ? reason : "");
}


static int
bd_call_ev_audio_out(void *data, const uint8_t *audio, size_t len,
    const char *mark)
{
    bd_call_t             *call;
    voice_proto_writer_t  *w;

    call = data;

    if (call->state == BD_CALL_ST_CLOSED) {
        return 0;
    }

    if (len == 0) {

        /* a mark alone (the end of an item's audio) */

        if (mark == NULL) {
            return 1;
        }

        w = bd_chan_begin(VOICE_PROTO_MSG_MARK);
        voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid,
                              call->sid_len);
        voice_proto_put_str(w, VOICE_PROTO_F_NAME, mark);

        return bd_chan_send(call->peer, w) == 1;
    }

    w = bd_chan_begin(VOICE_PROTO_MSG_AUDIO_OUT);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid, call->sid_len);
    voice_proto_put_bytes(w, VOICE_PROTO_F_AUDIO, audio, len);

    if (mark) {
        voice_proto_put_str(w, VOICE_PROTO_F_NAME, mark);
    }

    return bd_chan_send(call->peer, w) == 1;
}


static void
bd_call_ev_clear(void *data)
{
    bd_call_t             *call;
    voice_proto_writer_t  *w;

    call = data;

    if (call->state == BD_CALL_ST_CLOSED) {
        return;
    }

    w = bd_chan_begin(VOICE_PROTO_MSG_CLEAR);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid, call->sid_len);

    if (bd_chan_send(call->peer, w) != 1) {
        bd_log(BD_LOG_WARN, call->sid, "the clear for a barge-in could not "
               "be sent: the caller keeps hearing the assistant");
    }
}


static int
bd_call_ev_transcript(void *data, const bd_oai_event_said_t *said)
{
    int                    rc;
    bd_call_t             *call;
    voice_proto_writer_t  *w;

    call = data;

    if (call->state == BD_CALL_ST_CLOSED) {
        return 0;
    }

    w = bd_chan_begin(VOICE_PROTO_MSG_TRANSCRIPT);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid, call->sid_len);
    voice_proto_put_u32(w, VOICE_PROTO_F_ORDER, said->order);
    voice_proto_put_u32(w, VOICE_PROTO_F_ROLE, said->role);
    voice_proto_put_bytes(w, VOICE_PROTO_F_TEXT, said->text, said->len);
    voice_proto_put_u64(w, VOICE_PROTO_F_TIMESTAMP, bd_call_epoch_ms());

    if (said->generated != NULL) {
        voice_proto_put_u32(w, VOICE_PROTO_F_FLAGS,
                            VOICE_PROTO_FLAG_INTERRUPTED);
        voice_proto_put_bytes(w, VOICE_PROTO_F_GENERATED, said->generated,
                              said->generated_len);
    }

    if (said->latency_ms) {
        voice_proto_put_u32(w, VOICE_PROTO_F_LATENCY, said->latency_ms);
    }

    rc = bd_chan_send(call->peer, w);

    /* the next session hears it too, if there is one: what was heard, as
     * OpenAI keeps of a truncated reply */

    if (said->len > 0
        && bd_history_add(&call->history, said->order, said->role,
                          said->text, said->len)
           != 0)
    {
        bd_log(BD_LOG_WARN, call->sid, "no memory to keep an utterance for "
               "a later session");
    }

    bd_log(rc == 1 ? BD_LOG_DEBUG : BD_LOG_WARN, call->sid,
           "%s transcript #%u (%zu bytes)%s",
           said->role == VOICE_PROTO_ROLE_USER ? "caller" : "assistant",
           (unsigned) said->order, said->len,
           rc == 1 ? "" : " could not be sent");

    return rc == 1;
}


static void
bd_call_ev_send(void *data, const char *json, size_t len)
{
    bd_call_t  *call;

    call = data;

    bd_oai_send(call->oai, json, len);
}


/*
 * A session took over from a lost one: the conversation so far goes in
 * first, then a note in the record, then -- when the caller was waiting
 * for an answer (a reply was cut, or the last word was theirs) -- a
 * response.  The held caller audio follows once the call is live again.
 */

static void
bd_call_resume(bd_call_t *call)
{
    int                    n;
    char                   note[320];
    const char            *greeting;
    bd_history_t          *h;
    voice_proto_writer_t  *w;

    h = &call->history;

    if (bd_oai_event_restore(&call->conv, h, call->lost_why) != 0) {
        bd_log(BD_LOG_WARN, call->sid, "no memory to give the conversation "
               "back: the new session starts without it");
    }

    n = snprintf(note, sizeof(note), "OpenAI session %u took over (%s): "
                 "%u earlier items given back", call->sessions,
                 call->lost_why, h->len);

    if (h->dropped) {
        snprintf(note + n, sizeof(note) - n, ", %u oldest left out",
                 h->dropped);
    }

    bd_log(BD_LOG_INFO, call->sid, "%s", note);

    w = bd_chan_begin(VOICE_PROTO_MSG_TRANSCRIPT);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid, call->sid_len);
    voice_proto_put_u32(w, VOICE_PROTO_F_ORDER, call->conv.next_order++);
    voice_proto_put_u32(w, VOICE_PROTO_F_ROLE, VOICE_PROTO_ROLE_NOTE);
    voice_proto_put_str(w, VOICE_PROTO_F_TEXT, note);
    voice_proto_put_u64(w, VOICE_PROTO_F_TIMESTAMP, bd_call_epoch_ms());

    if (bd_chan_send(call->peer, w) == 1) {
        call->conv.transcripts++;
    }

    /* a greeting still to say (a transfer's way back) is the answer */

    greeting = bd_session_str(call->settings, "greeting");

    if (!call->amd_hold
        && (call->greeted || greeting == NULL || greeting[0] == '\0')
        && (call->respond_due
            || (h->len > 0
                && h->items[h->len - 1].role == VOICE_PROTO_ROLE_USER)))
    {
        bd_oai_event_respond(&call->conv, NULL);
    }

    call->respond_due = 0;
    call->lost_why[0] = '\0';
}


static void
bd_call_ev_ready(void *data)
{
    bd_call_t   *call;
    const char  *greeting;

    call = data;

    if (call->state != BD_CALL_ST_CONFIGURING) {
        bd_log(BD_LOG_INFO, call->sid, "session.updated while %s: ignored",
               bd_call_state_names[call->state]);
        return;
    }

    lws_sul_cancel(&call->sul_wait);
    call->retries = 0;

    if (call->lost_why[0] != '\0') {
        bd_call_resume(call);
    }

    call->was_live = 1;

    bd_call_set_state(call, BD_CALL_ST_LIVE);

    /* the record names the models */
    bd_call_ev_usage(call, NULL);

    bd_log(BD_LOG_INFO, call->sid, "OpenAI session %u ready after %llu ms, "
           "%zu ms of caller audio held", call->sessions,
           (unsigned long long) (uv_now(bd_call_loop) - call->started),
           bd_ring_len(&call->hold) / 8);

    bd_call_renew_arm(call);

    greeting = bd_session_str(call->settings, "greeting");

    bd_call_limit_arm(call);

    /* a verdict that came before the session was ready (a machine's
     * ends the call: the state is no longer LIVE) */
    bd_call_amd(call);

    if (call->state == BD_CALL_ST_LIVE && call->amd_hold) {
        bd_log(BD_LOG_INFO, call->sid, "the assistant waits for the "
               "answering-machine verdict before it talks");

    } else if (call->state == BD_CALL_ST_LIVE && greeting != NULL
               && greeting[0] != '\0' && !call->greeted)
    {
        call->greeted = 1;

        if (bd_oai_event_greet(&call->conv, greeting) != 0) {
            bd_log(BD_LOG_WARN, call->sid, "no memory for the greeting");
        }
    }

    bd_oai_want_write(call->oai);
}


/* HANGUP: nginx closes the media stream, when the assistant cannot go on */

static void
bd_call_send_hangup(bd_call_t *call, const char *reason)
{
    voice_proto_writer_t  *w;

    bd_call_ended_by(call, "bridge", reason);

    w = bd_chan_begin(VOICE_PROTO_MSG_HANGUP);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid, call->sid_len);
    voice_proto_put_str(w, VOICE_PROTO_F_REASON, reason);
    (void) bd_chan_send(call->peer, w);
}


static void
bd_call_hangup(bd_call_t *call, const char *reason)
{
    bd_log(BD_LOG_WARN, call->sid, "hanging up: %s", reason);

    bd_call_send_hangup(call, reason);
    bd_call_stop(call);
}


static void
bd_call_ev_fatal(void *data, const char *why)
{
    bd_call_t  *call;

    call = data;

    if (call->state == BD_CALL_ST_CLOSED
        || call->state == BD_CALL_ST_DRAINING)
    {
        return;
    }

    bd_call_hangup(call, why);
}


/* CALL_DONE with the count of transcripts sent, then the end */

static void
bd_call_finish(bd_call_t *call, const char *how)
{
    bd_call_tomb_t       *t;
    bd_oai_event_conv_t  *cv;

    cv = &call->conv;

    /* no word from us or from Twilio's REST API: the caller hung up */

    bd_call_ended_by(call, "caller", "hangup");

    /* replies whose playing was not confirmed go in as far as it was */
    bd_oai_event_flush(cv, 1);

    if (bd_call_send_call_done(call->peer, (uint8_t *) call->sid,
                               call->sid_len, cv->transcripts,
                               call->ended_by, call->end_reason,
                               call->answered_by)
        != 1)
    {
        bd_log(BD_LOG_WARN, call->sid, "call.done could not be sent: nginx "
               "writes the record after its own wait");
    }

    t = bd_call_tomb((uint8_t *) call->sid, call->sid_len, 1);
    t->done = 1;
    t->count = cv->transcripts;
    t->until = uv_now(bd_call_loop) + BD_CALL_TOMB_MS;

    bd_log(BD_LOG_INFO, call->sid,
           "call done (%s) after %llu s: %u transcripts; caller audio %llu "
           "bytes, %llu dropped; assistant audio %llu bytes, %llu lost, "
           "%llu dropped after %u barge-ins",
           how,
           (unsigned long long) (uv_now(bd_call_loop) - call->started) / 1000,
           (unsigned) cv->transcripts,
           (unsigned long long) call->audio_in,
           (unsigned long long) call->hold.dropped,
           (unsigned long long) cv->audio_sent,
           (unsigned long long) cv->audio_lost,
           (unsigned long long) cv->audio_dropped, cv->barge_ins);

    bd_call_destroy(call);
}


static void
bd_call_check_drained(bd_call_t *call)
{
    /* a transfer's answer from Twilio is due too: it goes in the record */

    if (call->state == BD_CALL_ST_DRAINING
        && bd_oai_event_settled(&call->conv) && call->end_req == NULL)
    {
        bd_call_finish(call, "all transcripts in");
    }
}


static void
bd_call_wait_expired(lws_sorted_usec_list_t *sul)
{
    bd_call_t  *call;

    call = lws_container_of(sul, bd_call_t, sul_wait);

    switch (call->state) {

    case BD_CALL_ST_CONFIGURING:
        bd_log(BD_LOG_WARN, call->sid, "OpenAI did not confirm the session "
               "within %d ms", BD_CALL_CONFIGURE_MS);
        bd_oai_release(call->oai, 1);
        call->oai = NULL;
        bd_call_session_lost(call, "no session.updated", 0);
        break;

    case BD_CALL_ST_ENDING:
        bd_log(BD_LOG_INFO, call->sid, "the last words did not finish "
               "playing in time%s",
               bd_oai_event_active(&call->conv)
               ? " (a reply still generating)"
               : " (no echo of the last mark)");
        bd_call_end_now(call, "bounded wait");
        break;

    case BD_CALL_ST_DRAINING:
        bd_log(BD_LOG_INFO, call->sid, "final wait of %u ms is over with "
               "%u transcriptions due%s", bd_call_conf->final_wait_ms,
               (unsigned) call->conv.pending,
               bd_oai_event_responding(&call->conv)
               ? " and a response generating" : "");
        bd_call_finish(call, "final wait over");
        break;

    default:
        break;
    }
}


/* the caller is gone (STREAM_STOP), or the call has to end (HANGUP) */

static void
bd_call_stop(bd_call_t *call)
{
    switch (call->state) {

    case BD_CALL_ST_LIVE:
    case BD_CALL_ST_ENDING:
        lws_sul_cancel(&call->sul_wait);
        bd_call_set_state(call, BD_CALL_ST_DRAINING);

        /* nothing more is forwarded: the caller has left */

        bd_ring_reset(&call->hold);

        bd_oai_event_stop(&call->conv);
        bd_oai_timer(&call->sul_wait, bd_call_wait_expired,
                     bd_call_conf->final_wait_ms);

        bd_call_check_drained(call);
        break;

    case BD_CALL_ST_CONNECTING:
    case BD_CALL_ST_CONFIGURING:
    case BD_CALL_ST_RETRYING:
        bd_call_finish(call, "no OpenAI session was live");
        break;

    default:
        break;
    }
}


/* idempotent: the one way out for a call */

static void
bd_call_destroy(bd_call_t *call)
{
    if (call->state == BD_CALL_ST_CLOSED) {
        return;
    }

    bd_call_set_state(call, BD_CALL_ST_CLOSED);

    lws_sul_cancel(&call->sul_connect);
    lws_sul_cancel(&call->sul_wait);
    lws_sul_cancel(&call->sul_renew);
    lws_sul_cancel(&call->sul_idle);
    lws_sul_cancel(&call->sul_limit);

    bd_tool_cancel(&call->tools);
    call->transfer = NULL;

    if (call->end_req != NULL) {
        bd_twapi_cancel(call->end_req);
        call->end_req = NULL;
    }

    bd_call_unlink(call);

    bd_oai_release(call->oai, 0);
    call->oai = NULL;

    /*
     * The last call of a graceful stop: the rest of it, from the loop, a
     * moment later, so that nginx reads the last CALL_DONE before it sees
     * the channel go
     */
    if (bd_call_closing && bd_call_count == 0 && bd_call_shutdown_done) {
        uv_timer_start(&bd_call_shutdown_timer, bd_call_shutdown_timer_cb,
                       BD_CALL_SHUTDOWN_FLUSH_MS, 0);
    }

    bd_chan_peer_unref(call->peer);
    call->peer = NULL;

    bd_call_unref(call);
}


static void
bd_call_free(bd_call_t *call)
{
    bd_oai_event_flush(&call->conv, 0);
    bd_history_free(&call->history);
    bd_ring_free(&call->hold);

    cJSON_Delete(call->settings);
    free(call->end_form);
    free(call);

    bd_call_objects--;
}


static void
bd_call_reap(uv_idle_t *idle)
{
    bd_call_t  *call;

    while (bd_call_reaped) {
        call = bd_call_reaped;
        bd_call_reaped = call->reap_next;
        bd_call_free(call);
    }

    uv_idle_stop(idle);

    if (bd_call_closing && bd_call_objects == 0
        && !uv_is_closing((uv_handle_t *) idle))
    {
        uv_close((uv_handle_t *) idle, NULL);
    }
}


void
bd_call_unref(bd_call_t *call)
{
    if (--call->refs > 0) {
        return;
    }

    call->reap_next = bd_call_reaped;
    bd_call_reaped = call;

    uv_idle_start(&bd_call_reaper, bd_call_reap);
}


/* flags: VOICE_PROTO_FLAG_FULL when the refusal is for want of room */

static void
bd_call_refuse(bd_chan_peer_t *peer, const voice_proto_msg_t *msg,
    const char *reason, uint32_t flags)
{
    bd_call_tomb_t        *t;
    voice_proto_writer_t  *w;

    w = bd_chan_begin(VOICE_PROTO_MSG_HANGUP);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, msg->call_sid.data,
                          msg->call_sid.len);
    voice_proto_put_str(w, VOICE_PROTO_F_REASON, reason);

    if (flags) {
        voice_proto_put_u32(w, VOICE_PROTO_F_FLAGS, flags);
    }

    (void) bd_chan_send(peer, w);

    /* the STREAM_STOP that follows gets its CALL_DONE from the tombstone */

    t = bd_call_tomb(msg->call_sid.data, msg->call_sid.len, 1);
    t->done = 1;
    t->count = 0;
    t->until = uv_now(bd_call_loop) + BD_CALL_TOMB_MS;
}


/*
 * nginx hands over a call another bridged had (or this one, before it
 * restarted): its first session takes over the conversation so far, its
 * entries go on from nginx's order, and nobody is greeted again.
 */

static void
bd_call_take_over(bd_call_t *call, const voice_proto_msg_t *msg)
{
    call->greeted = 1;

    if (msg->order > call->conv.next_order) {
        call->conv.next_order = msg->order;
    }

    /* a stream this bridged still had keeps its own history */

    if (msg->history.len > 0 && call->history.len == 0
        && bd_history_load(&call->history, (const char *) msg->history.data,
                           msg->history.len)
           != 0)
    {
        bd_log(BD_LOG_WARN, call->sid, "the history nginx handed over is "
               "not valid: the call goes on without it");
    }

    snprintf(call->lost_why, sizeof(call->lost_why), "%.*s",
             (int) (msg->reason.len ? msg->reason.len : 22),
             msg->reason.len ? (const char *) msg->reason.data
                             : "another bridged had it");

    bd_log(BD_LOG_INFO, call->sid, "taking the call over (%s), with %u "
           "earlier items", call->lost_why, call->history.len);
}


unsigned
bd_call_calls(void)
{
    return bd_call_count;
}


int
bd_call_full(void)
{
    return bd_call_count >= bd_call_conf->max_calls;
}


static void
bd_call_start(bd_chan_peer_t *peer, const voice_proto_msg_t *msg)
{
    char             err[128];
    char             sid[VOICE_PROTO_MAX_SID + 1];
    size_t           hold;
    bd_call_t       *call, *old;
    bd_call_tomb_t  *t;

    memcpy(sid, msg->call_sid.data, msg->call_sid.len);
    sid[msg->call_sid.len] = '\0';

    old = bd_call_find(msg->call_sid.data, msg->call_sid.len);

    if (!bd_oai_has_key()) {
        bd_log(BD_LOG_WARN, sid, "stream refused: bridged has no OpenAI "
               "API key");

        if (old != NULL) {
            bd_call_destroy(old);
        }

        bd_call_refuse(peer, msg, "bridged has no OpenAI API key", 0);
        return;
    }

    /* --max-calls: the calls up are not slowed down by one more; nginx
     * takes this bridged for full until its pongs say otherwise */

    if (old == NULL && bd_call_full()) {
        bd_log(BD_LOG_WARN, sid, "stream refused: %u calls already "
               "(--max-calls)", bd_call_count);
        bd_stats_refused();
        bd_call_refuse(peer, msg, "bridged has too many calls",
                       VOICE_PROTO_FLAG_FULL);
        return;
    }

    call = calloc(1, sizeof(bd_call_t));
    if (call == NULL) {
        bd_call_refuse(peer, msg, "bridged is out of memory", 0);
        return;
    }

    bd_call_objects++;

    memcpy(call->sid, sid, msg->call_sid.len + 1);
    call->sid_len = msg->call_sid.len;
    memcpy(call->stream_sid, msg->stream_sid.data, msg->stream_sid.len);
    call->started = uv_now(bd_call_loop);

    call->record = msg->timestamp;

    /* the call's Twilio number: the caller ID of a transfer */

    snprintf(call->direction, sizeof(call->direction), "%.*s",
             (int) msg->direction.len, (const char *) msg->direction.data);

    if (strcmp(call->direction, "outbound") == 0) {
        snprintf(call->twilio_number, sizeof(call->twilio_number), "%.*s",
                 (int) msg->from.len, (const char *) msg->from.data);

    } else {
        snprintf(call->twilio_number, sizeof(call->twilio_number), "%.*s",
                 (int) msg->to.len, (const char *) msg->to.data);
    }

    call->settings = bd_session_parse((const char *) msg->settings.data,
                                      msg->settings.len, err, sizeof(err));

    if (call->settings == NULL) {
        bd_log(BD_LOG_WARN, sid, "stream refused: %s", err);
        call->refs = 1;
        call->state = BD_CALL_ST_CLOSED;
        bd_call_unref(call);
        bd_call_refuse(peer, msg, "invalid session settings", 0);
        return;
    }

    call->model = bd_session_model(call->settings, &bd_call_defaults);

    call->idle_ms = (unsigned) bd_session_num(call->settings, "idleTimeoutMs",
                                              0);
    call->idle_server = bd_session_server_idle(call->settings);

    /* voice_machine_detection wait: silent until Twilio's verdict */

    call->amd_hold = strcmp(bd_session_machine_detection(call->settings),
                            "wait") == 0;

    /* mu-law at 8 kHz: 8 bytes per ms */

    hold = (size_t) bd_call_conf->audio_buffer_ms * 8;

    if (bd_ring_init(&call->hold, hold) != 0) {
        call->refs = 1;
        call->state = BD_CALL_ST_CLOSED;
        bd_call_unref(call);
        bd_call_refuse(peer, msg, "bridged is out of memory", 0);
        return;
    }

    bd_oai_event_init(&call->conv, &bd_call_event_ops, call, call->sid);
    bd_history_init(&call->history);

    if (old != NULL) {

        /*
         * nginx started the stream again (Twilio reconnected it): the new
         * session continues the old one's numbering, so nginx still sorts
         * and counts every utterance of the call.
         */

        bd_log(BD_LOG_INFO, sid, "stream started again: the previous "
               "OpenAI session is closed");

        call->conv.next_order = old->conv.next_order;
        call->conv.mark_seq = old->conv.mark_seq;
        call->conv.transcripts = old->conv.transcripts;

        /* and the conversation goes on where it was */

        call->history = old->history;
        bd_history_init(&old->history);

        if (call->history.len > 0) {
            snprintf(call->lost_why, sizeof(call->lost_why),
                     "the media stream started again");
        }

        bd_call_destroy(old);
    }

    if (voice_proto_has(msg, VOICE_PROTO_F_FLAGS)
        && (msg->flags & VOICE_PROTO_FLAG_RESUMED))
    {
        bd_call_take_over(call, msg);
    }

    call->peer = peer;
    bd_chan_peer_ref(peer);

    call->refs = 1;
    call->state = BD_CALL_ST_CONNECTING;

    call->next = bd_call_table[bd_call_bucket(msg->call_sid.data,
                                              msg->call_sid.len)];
    bd_call_table[bd_call_bucket(msg->call_sid.data, msg->call_sid.len)] =
        call;
    bd_call_count++;

    /* a verdict that came before the stream */

    t = bd_call_tomb(msg->call_sid.data, msg->call_sid.len, 0);

    if (t != NULL && t->answered_by[0] != '\0'
        && uv_now(bd_call_loop) < t->until)
    {
        snprintf(call->answered_by, sizeof(call->answered_by), "%s",
                 t->answered_by);
        t->answered_by[0] = '\0';
        call->amd_due = 1;
        call->amd_hold = (strcmp(call->answered_by, "human") != 0
                          && strcmp(call->answered_by, "unknown") != 0);
    }

    bd_log(BD_LOG_INFO, sid, "stream %s started: %.*s call, model %s%s",
           call->stream_sid, (int) msg->direction.len,
           (const char *) msg->direction.data, call->model,
           bd_session_str(call->settings, "greeting") ? ", with a greeting"
                                                      : "");

    bd_call_session_open(call);
}


static void
bd_call_audio_in(bd_call_t *call, const voice_proto_str_t *audio)
{
    size_t  dropped;

    switch (call->state) {

    case BD_CALL_ST_CONNECTING:
    case BD_CALL_ST_CONFIGURING:
    case BD_CALL_ST_RETRYING:
    case BD_CALL_ST_LIVE:
        call->audio_in += audio->len;

        dropped = bd_ring_push(&call->hold, audio->data, audio->len);

        if (dropped && !call->hold_logged) {
            call->hold_logged = 1;
            bd_log(BD_LOG_WARN, call->sid, "caller audio buffer full "
                   "(%u ms) while OpenAI is %s: dropping the oldest audio",
                   bd_call_conf->audio_buffer_ms,
                   call->state == BD_CALL_ST_LIVE ? "slow" : "not ready");
        }

        if (call->state == BD_CALL_ST_LIVE) {
            bd_oai_flush(call->oai);
        }

        break;

    case BD_CALL_ST_ENDING:

        /* the assistant is done: what the caller says now goes nowhere */

        call->audio_in += audio->len;
        break;

    default:
        break;
    }
}


/* a message for a call bridged does not have (any more) */

static void
bd_call_unknown(bd_chan_peer_t *peer, const voice_proto_msg_t *msg)
{
    uint64_t         now;
    bd_call_tomb_t  *t;

    now = uv_now(bd_call_loop);

    t = bd_call_tomb(msg->call_sid.data, msg->call_sid.len, 0);

    if (t != NULL && t->done && now < t->until) {

        /* audio still in flight after the call ended is no error */

        if (msg->type == VOICE_PROTO_MSG_STREAM_STOP) {
            (void) bd_call_send_call_done(peer, msg->call_sid.data,
                                          msg->call_sid.len, t->count, NULL,
                                          NULL, NULL);
        }

        return;
    }

    if (t == NULL || t->done || !t->errored
        || now - t->error_at >= BD_CALL_UNKNOWN_MS)
    {
        t = bd_call_tomb(msg->call_sid.data, msg->call_sid.len, 1);
        t->done = 0;
        t->errored = 1;
        t->error_at = now;

        bd_log(BD_LOG_INFO, t->sid, "%s for an unknown call",
               voice_proto_type_name(msg->type));

        bd_chan_error(peer, "unknown call", msg->call_sid.data,
                      msg->call_sid.len);
    }

    if (msg->type == VOICE_PROTO_MSG_STREAM_STOP) {
        (void) bd_call_send_call_done(peer, msg->call_sid.data,
                                      msg->call_sid.len, 0, NULL, NULL,
                                      NULL);
    }
}


/*
 * Twilio's answering-machine verdict (call.event "amd").  A person: the
 * assistant talks (at once, if it was waiting).  A machine whose greeting
 * is over: what the assistant was saying is stopped, it leaves the
 * location's voicemail message, and the call ends once that has played;
 * with no message, or a fax, the call ends at once.  Either way through
 * Twilio's REST API (bd_call_ending()).  A verdict for a stream not yet
 * started waits in the tombstone table.
 */

/*
 * nginx is stopping and the call has outlived its wait
 * (voice_shutdown_timeout): a short goodbye -- or the reply being said --
 * then Twilio completes the call, as at a time limit.
 */

static void
bd_call_end_politely(bd_call_t *call, const voice_proto_msg_t *msg)
{
    char  reason[128];

    if (call == NULL || call->state != BD_CALL_ST_LIVE) {
        return;
    }

    snprintf(reason, sizeof(reason), "%.*s",
             (int) (msg->text.len ? msg->text.len : 18),
             msg->text.len ? (const char *) msg->text.data
                           : "the server stops");

    bd_log(BD_LOG_INFO, call->sid, "nginx ends the call (%s): a goodbye, "
           "then Twilio is asked to complete it", reason);

    if (call->conv.response == BD_OAI_EVENT_RESP_IDLE) {
        bd_oai_event_respond(&call->conv, BD_CALL_STOP_GOODBYE);
        bd_oai_want_write(call->oai);
    }

    bd_call_ending(call, "server", reason, "Status=completed");
}


static void
bd_call_event(bd_call_t *call, const voice_proto_msg_t *msg)
{
    char             by[24];
    bd_call_tomb_t  *t;

    if (msg->name.len == 3 && memcmp(msg->name.data, "end", 3) == 0) {
        bd_call_end_politely(call, msg);
        return;
    }

    if (msg->name.len != 3 || memcmp(msg->name.data, "amd", 3) != 0
        || msg->text.len == 0 || msg->text.len >= sizeof(by))
    {
        bd_log(BD_LOG_INFO, NULL, "call.event not understood: ignored");
        return;
    }

    memcpy(by, msg->text.data, msg->text.len);
    by[msg->text.len] = '\0';

    if (call == NULL) {
        t = bd_call_tomb(msg->call_sid.data, msg->call_sid.len, 1);
        snprintf(t->answered_by, sizeof(t->answered_by), "%s", by);
        t->until = uv_now(bd_call_loop) + BD_CALL_TOMB_MS;

        bd_log(BD_LOG_INFO, t->sid, "answered by %s before its stream "
               "started", by);
        return;
    }

    snprintf(call->answered_by, sizeof(call->answered_by), "%s", by);

    bd_log(BD_LOG_INFO, call->sid, "answered by %s (%s)", by,
           bd_call_state_names[call->state]);

    call->amd_due = 1;
    bd_call_amd(call);
}


/* acts on the verdict once the session is live */

static void
bd_call_amd(bd_call_t *call)
{
    char         text[BD_SESSION_VOICEMAIL_MAX + 128];
    const char  *message, *by;

    static const char  cancel[] =
        "{\"type\":\"response.cancel\",\"event_id\":\"bd-amd-cancel\"}";

    if (!call->amd_due || call->state != BD_CALL_ST_LIVE) {
        return;
    }

    call->amd_due = 0;
    by = call->answered_by;

    if (strcmp(by, "human") == 0 || strcmp(by, "unknown") == 0) {

        if (call->amd_hold) {
            call->amd_hold = 0;

            /* the model may answer turns now, and speaks first */

            bd_call_session_again(call);

            message = bd_session_str(call->settings, "greeting");

            if (message != NULL && message[0] != '\0') {
                call->greeted = 1;
                (void) bd_oai_event_greet(&call->conv, message);

            } else if (call->conv.response == BD_OAI_EVENT_RESP_IDLE) {
                bd_oai_event_respond(&call->conv, NULL);
            }

            bd_oai_want_write(call->oai);
        }

        return;
    }

    call->amd_hold = 0;

    /* a machine: nothing more is said to its greeting */

    if (call->conv.response != BD_OAI_EVENT_RESP_IDLE) {
        bd_oai_send(call->oai, cancel, sizeof(cancel) - 1);
        bd_call_ev_clear(call);
        bd_oai_event_response(&call->conv, BD_OAI_EVENT_STEP_DROP);
    }

    message = bd_session_str(call->settings, "voicemailMessage");

    if (strncmp(by, "machine", 7) == 0 && message != NULL
        && message[0] != '\0')
    {
        snprintf(text, sizeof(text), "You reached an answering machine and "
                 "its beep has passed. Leave this voicemail message, word "
                 "for word, and nothing else: %s", message);

        bd_oai_event_respond(&call->conv, text);
        bd_oai_want_write(call->oai);

        bd_log(BD_LOG_INFO, call->sid, "leaving a voicemail, then ending "
               "the call");

        bd_call_ending(call, "assistant", "voicemail", "Status=completed");
        return;
    }

    bd_log(BD_LOG_INFO, call->sid, "no voicemail to leave: ending the call");

    bd_call_ending(call, "assistant", strcmp(by, "fax") == 0
                                      ? "fax" : "answering machine",
                   "Status=completed");
}


/*
 * A key the caller pressed: a user item for the model ("The caller
 * pressed 5."), a response if none is generating, and the keypad entry
 * in the record.  Keys pressed while the call is not live are logged.
 */

static void
bd_call_dtmf(bd_call_t *call, const voice_proto_str_t *text)
{
    char  digit;

    digit = text->len == 1 ? (char) text->data[0] : '\0';

    if (!((digit >= '0' && digit <= '9') || digit == '*' || digit == '#'
          || (digit >= 'A' && digit <= 'D')))
    {
        bd_log(BD_LOG_INFO, call->sid, "a DTMF message that is not one key: "
               "ignored");
        return;
    }

    if (call->state != BD_CALL_ST_LIVE) {
        bd_log(BD_LOG_INFO, call->sid, "caller pressed %c while %s: "
               "ignored", digit, bd_call_state_names[call->state]);
        return;
    }

    bd_log(BD_LOG_INFO, call->sid, "caller pressed %c", digit);

    if (bd_oai_event_dtmf(&call->conv, digit) != 0) {
        bd_log(BD_LOG_WARN, call->sid, "no memory for a key press");
    }

    bd_oai_want_write(call->oai);
}


void
bd_call_on_message(bd_chan_peer_t *peer, const voice_proto_msg_t *msg)
{
    bd_call_t  *call;

    if (!bd_call_sid_ok(&msg->call_sid)) {
        bd_log(BD_LOG_INFO, NULL, "%s with a malformed call SID",
               voice_proto_type_name(msg->type));
        bd_chan_error(peer, "malformed call sid", NULL, 0);
        return;
    }

    if (msg->type == VOICE_PROTO_MSG_STREAM_START) {
        if (bd_call_closing) {
            bd_call_refuse(peer, msg, "bridged is shutting down", 0);
            return;
        }

        bd_call_start(peer, msg);
        return;
    }

    call = bd_call_find(msg->call_sid.data, msg->call_sid.len);

    /* Twilio's word on a call reaches any worker: whichever sends it */

    if (msg->type == VOICE_PROTO_MSG_CALL_EVENT) {
        bd_call_event(call, msg);
        return;
    }

    /* another worker's call is not this worker's to drive */

    if (call == NULL || call->peer != peer) {
        bd_call_unknown(peer, msg);
        return;
    }

    switch (msg->type) {

    case VOICE_PROTO_MSG_AUDIO_IN:
        bd_call_audio_in(call, &msg->audio);
        break;

    case VOICE_PROTO_MSG_MARK_ACK:
        bd_oai_event_mark_ack(&call->conv, (const char *) msg->name.data,
                              msg->name.len);
        bd_call_check_goodbye(call);
        bd_call_idle_arm(call);
        break;

    case VOICE_PROTO_MSG_DTMF:
        bd_call_dtmf(call, &msg->text);
        break;

    case VOICE_PROTO_MSG_STREAM_STOP:
        bd_log(BD_LOG_INFO, call->sid, "stream stopped while %s",
               bd_call_state_names[call->state]);
        bd_call_stop(call);
        break;

    default:
        break;
    }
}


void
bd_call_peer_gone(bd_chan_peer_t *peer)
{
    unsigned    i;
    bd_call_t  *call, *next;

    for (i = 0; i < BD_CALL_BUCKETS; i++) {
        for (call = bd_call_table[i]; call; call = next) {
            next = call->next;

            if (call->peer == peer) {
                bd_log(BD_LOG_WARN, call->sid, "its nginx worker is gone: "
                       "ending the call");
                bd_call_destroy(call);
            }
        }
    }
}


/* a new OpenAI connection for the call: its first, or the next one */

static void
bd_call_session_open(bd_call_t *call)
{
    call->sessions++;
    bd_stats_openai_session(call->sessions > 1);

    call->oai = bd_oai_open(&bd_call_oai_ops, call, call->sid, call->model);

    if (call->oai == NULL) {
        bd_call_session_lost(call, "cannot open a connection", 0);
    }
}


static void
bd_call_reconnect(lws_sorted_usec_list_t *sul)
{
    bd_call_t  *call;

    call = lws_container_of(sul, bd_call_t, sul_connect);

    if (call->state == BD_CALL_ST_RETRYING && call->oai == NULL) {
        bd_call_session_open(call);
    }
}


static void
bd_call_oai_open(void *owner)
{
    char       *json;
    bd_call_t  *call;

    call = owner;

    if (call->state != BD_CALL_ST_CONNECTING
        && call->state != BD_CALL_ST_RETRYING)
    {
        bd_log(BD_LOG_INFO, call->sid, "OpenAI connected while %s: closing",
               bd_call_state_names[call->state]);
        bd_oai_release(call->oai, 1);
        call->oai = NULL;
        return;
    }

    bd_call_set_state(call, BD_CALL_ST_CONFIGURING);

    bd_oai_event_new_session(&call->conv);

    json = bd_call_session_update(call);
    if (json == NULL) {
        bd_call_hangup(call, "bridged is out of memory");
        return;
    }

    bd_oai_send(call->oai, json, strlen(json));
    cJSON_free(json);

    bd_oai_timer(&call->sul_wait, bd_call_wait_expired,
                 BD_CALL_CONFIGURE_MS);
}


static void
bd_call_oai_message(void *owner, const char *json, size_t len)
{
    bd_call_t  *call;

    call = owner;

    if (call->state != BD_CALL_ST_CONFIGURING
        && call->state != BD_CALL_ST_LIVE
        && call->state != BD_CALL_ST_ENDING
        && call->state != BD_CALL_ST_DRAINING)
    {
        return;
    }

    if (bd_oai_event_dispatch(&call->conv, json, len) != 0) {
        bd_log(BD_LOG_INFO, call->sid, "OpenAI sent a message that is not "
               "an event (%zu bytes): ignored", len);
        return;
    }

    bd_call_check_drained(call);
}


static void
bd_call_oai_lost(void *owner, const char *why, int fatal)
{
    bd_call_t  *call;

    call = owner;

    bd_oai_release(call->oai, 1);
    call->oai = NULL;

    bd_call_session_lost(call, why, fatal);
}


/*
 * The call's OpenAI session is gone.  A live call gets a new one after a
 * backoff, with the conversation so far, a bounded number of times;
 * an error that will not go away (a refused key, an unknown model) ends
 * the call at once instead, and so do the attempts running out: then
 * nginx closes the media stream and Twilio speaks the fallback message.
 */

static void
bd_call_session_lost(bd_call_t *call, const char *why, int fatal)
{
    char      reason[256];
    uint32_t  delay;

    switch (call->state) {

    case BD_CALL_ST_CONNECTING:
    case BD_CALL_ST_CONFIGURING:
    case BD_CALL_ST_LIVE:
    case BD_CALL_ST_RETRYING:
        lws_sul_cancel(&call->sul_wait);
        lws_sul_cancel(&call->sul_renew);

        if (fatal) {
            bd_call_set_state(call, BD_CALL_ST_RETRYING);
            snprintf(reason, sizeof(reason), "OpenAI refused the session: "
                     "%s", why);
            bd_call_hangup(call, reason);
            return;
        }

        /* a reply cut short is answered again by the next session */

        if (call->state == BD_CALL_ST_LIVE
            && (call->conv.response != BD_OAI_EVENT_RESP_IDLE))
        {
            call->respond_due = 1;
        }

        /* the first loss after a live session is what the next one is
         * told; before any, there is nothing to take over */

        if (call->was_live && call->lost_why[0] == '\0') {
            snprintf(call->lost_why, sizeof(call->lost_why), "%s", why);
        }

        delay = bd_oai_backoff_ms(&call->retries);

        bd_call_set_state(call, BD_CALL_ST_RETRYING);

        if (delay == 0) {
            snprintf(reason, sizeof(reason), "OpenAI unreachable: %s", why);
            bd_call_hangup(call, reason);
            return;
        }

        bd_log(BD_LOG_WARN, call->sid, "OpenAI session lost (%s): attempt "
               "%u in %u ms", why, (unsigned) call->retries,
               (unsigned) delay);

        bd_oai_timer(&call->sul_connect, bd_call_reconnect, delay);
        break;

    case BD_CALL_ST_ENDING:

        /* nothing more to play: end it now */

        bd_log(BD_LOG_INFO, call->sid, "OpenAI connection closed (%s) while "
               "the call ends", why);
        bd_call_end_now(call, "OpenAI connection closed");
        break;

    case BD_CALL_ST_DRAINING:
        bd_log(BD_LOG_INFO, call->sid, "OpenAI connection closed (%s) while "
               "waiting for the last transcripts", why);
        bd_call_finish(call, "OpenAI connection closed");
        break;

    default:
        break;
    }
}


/*
 * This session is over but the call is not (session_expired, or its
 * lifetime is up): the next session takes over at once, with the
 * conversation so far.  The old connection is closed politely.
 */

static void
bd_call_renew(bd_call_t *call, const char *why)
{
    if (call->state != BD_CALL_ST_LIVE) {
        return;
    }

    bd_log(BD_LOG_INFO, call->sid, "moving to a new OpenAI session: %s",
           why);

    lws_sul_cancel(&call->sul_renew);

    call->respond_due = call->conv.response != BD_OAI_EVENT_RESP_IDLE;
    snprintf(call->lost_why, sizeof(call->lost_why), "%s", why);

    bd_oai_release(call->oai, 0);
    call->oai = NULL;
    call->retries = 0;

    bd_call_set_state(call, BD_CALL_ST_RETRYING);
    bd_oai_timer(&call->sul_connect, bd_call_reconnect, 0);
}


static void
bd_call_ev_renew(void *data, const char *why)
{
    bd_call_renew(data, why);
}


/*
 * A session's lifetime: renewed after --session-max-s, and always a
 * margin before the expires_at OpenAI gave (60 minutes today), at a quiet
 * moment -- nobody speaking, no reply generating or playing, no caller
 * transcript due, no tool running -- so that nothing in flight is lost.
 * Past the margin's last seconds it moves anyway.
 */

static void
bd_call_renew_due(lws_sorted_usec_list_t *sul)
{
    bd_call_t  *call;

    call = lws_container_of(sul, bd_call_t, sul_renew);

    if (call->state != BD_CALL_ST_LIVE) {
        return;
    }

    if ((bd_oai_event_quiet(&call->conv)
         && call->conv.turn != BD_OAI_EVENT_TURN_SPEAKING
         && call->conv.pending == 0 && !call->conv.committing
         && call->tools.running == 0 && !call->tools.want_response)
        || uv_now(bd_call_loop) >= call->renew_by)
    {
        bd_call_renew(call, "the session reached its lifetime");
        return;
    }

    bd_oai_timer(&call->sul_renew, bd_call_renew_due, BD_CALL_RENEW_POLL_MS);
}


static void
bd_call_renew_arm(bd_call_t *call)
{
    uint64_t  now, at, left, margin, epoch;

    now = uv_now(bd_call_loop);
    at = bd_call_conf->session_max_s ? bd_call_conf->session_max_s * 1000ULL
                                     : UINT64_MAX;
    call->renew_by = UINT64_MAX;

    if (call->conv.expires_at != 0) {
        epoch = bd_call_epoch_ms();
        left = call->conv.expires_at * 1000 > epoch
               ? call->conv.expires_at * 1000 - epoch : 0;

        /* a tenth of the lifetime, at most two minutes, for a quiet
         * moment; then a few seconds to move whatever is going on */

        margin = left / 10 < BD_CALL_RENEW_MARGIN_MS
                 ? left / 10 : BD_CALL_RENEW_MARGIN_MS;

        if (left - margin < at) {
            at = left - margin;
        }

        call->renew_by = now + (left > BD_CALL_RENEW_FORCE_MS
                                ? left - BD_CALL_RENEW_FORCE_MS : 0);
    }

    if (at == UINT64_MAX) {
        return;
    }

    if (call->renew_by == UINT64_MAX) {
        call->renew_by = now + at + BD_CALL_RENEW_MARGIN_MS;
    }

    bd_oai_timer(&call->sul_renew, bd_call_renew_due, at);
}


static void
bd_call_ev_tool_call(void *data, uint32_t order, const char *call_id,
    const char *name, const char *arguments)
{
    bd_call_t  *call;

    call = data;

    if (call->state != BD_CALL_ST_LIVE) {
        bd_log(BD_LOG_INFO, call->sid, "the model called %s while the call "
               "is %s: not run", name, bd_call_state_names[call->state]);
        return;
    }

    bd_tool_call(call, order, call_id, name, arguments);
    bd_oai_want_write(call->oai);
}


static void
bd_call_ev_mcp_call(void *data, uint32_t order, const char *name,
    const char *arguments, const char *output)
{
    bd_call_t  *call;

    call = data;

    bd_log(BD_LOG_INFO, call->sid, "OpenAI called the MCP tool %s", name);
    bd_call_tool_record(call, order, name, arguments, output);

    /* OpenAI does not speak an MCP result by itself: once its response
     * is done, one more lets the model tell the caller */

    if (call->state == BD_CALL_ST_LIVE) {
        call->tools.want_response = 1;
    }
}


static void
bd_call_ev_response_done(void *data)
{
    bd_call_t  *call;

    call = data;

    bd_tool_response_done(call);
    bd_call_check_goodbye(call);
    bd_call_idle_arm(call);
    bd_oai_want_write(call->oai);
}


void
bd_call_tool_record(bd_call_t *call, uint32_t order, const char *name,
    const char *arguments, const char *output)
{
    int                    rc, n;
    char                  *text;
    size_t                 len;
    voice_proto_writer_t  *w;

    if (call->state == BD_CALL_ST_CLOSED) {
        return;
    }

    /* the record keeps a bounded output, cut at a UTF-8 boundary */

    len = strlen(output);

    if (len > BD_TOOL_RECORD_MAX) {
        len = BD_TOOL_RECORD_MAX;

        while (len > 0 && ((unsigned char) output[len] & 0xc0) == 0x80) {
            len--;
        }
    }

    w = bd_chan_begin(VOICE_PROTO_MSG_TRANSCRIPT);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid, call->sid_len);
    voice_proto_put_u32(w, VOICE_PROTO_F_ORDER, order);
    voice_proto_put_u32(w, VOICE_PROTO_F_ROLE, VOICE_PROTO_ROLE_TOOL);
    voice_proto_put_str(w, VOICE_PROTO_F_NAME, name);
    voice_proto_put_str(w, VOICE_PROTO_F_ARGUMENTS, arguments);
    voice_proto_put_bytes(w, VOICE_PROTO_F_TEXT, output, len);
    voice_proto_put_u64(w, VOICE_PROTO_F_TIMESTAMP, bd_call_epoch_ms());

    rc = bd_chan_send(call->peer, w);

    if (rc == 1) {
        call->conv.transcripts++;

    } else {
        bd_log(BD_LOG_WARN, call->sid, "the record of tool %s could not be "
               "sent", name);
    }

    /* a later session reads it as text: "NAME(ARGS) returned: OUTPUT" */

    text = malloc(BD_HISTORY_ITEM_MAX + 1);
    if (text != NULL) {
        n = snprintf(text, BD_HISTORY_ITEM_MAX + 1, "%s(%.512s) returned: "
                     "%.*s", name, arguments, (int) len, output);
        (void) bd_history_add(&call->history, order, VOICE_PROTO_ROLE_TOOL,
                              text, n < 0 ? 0 : strlen(text));
        free(text);
    }
}


/* the assistant is done: the last words play out, then Twilio ends it */

static void
bd_call_ending(bd_call_t *call, const char *by, const char *reason,
    const char *form)
{
    free(call->end_form);
    call->end_form = strdup(form);

    bd_call_ended_by(call, by, reason);

    call->end_asked = uv_now(bd_call_loop);

    bd_call_set_state(call, BD_CALL_ST_ENDING);
    bd_call_set_end(call, BD_CALL_END_SPEAKING);

    lws_sul_cancel(&call->sul_idle);
    lws_sul_cancel(&call->sul_limit);
    call->idle_armed = 0;

    bd_ring_reset(&call->hold);

    bd_oai_timer(&call->sul_wait, bd_call_wait_expired, BD_CALL_GOODBYE_MS);

    if (call->end_form == NULL) {
        bd_call_end_now(call, "no memory");
        return;
    }

    bd_call_check_goodbye(call);
}


void
bd_call_end(bd_call_t *call, const char *by, const char *reason)
{
    if (call->state != BD_CALL_ST_LIVE) {
        return;
    }

    bd_log(BD_LOG_INFO, call->sid, "the %s ends the call (%s): its last "
           "words play, then Twilio is asked to complete it", by, reason);

    bd_call_ending(call, by, reason, "Status=completed");
}


/*
 * The TwiML of a transfer: <Dial> the destination with the call's Twilio
 * number as caller ID; when nobody answers, Twilio requests the action
 * URL (the /twiml that answered the call, told so by "transfer"), which
 * connects a new stream for the same call.
 */

void
bd_call_transfer(bd_call_t *call, bd_tool_run_t *run, const char *name,
    const char *to)
{
    int          sip;
    char        *twiml;
    size_t       size;
    bd_form_t    f;
    const char  *action, *sealed;
    char         form[16384], xml[8192], attr[6144];

    sip = strncmp(to, "sip:", 4) == 0;
    action = bd_session_str(call->settings, "twimlUrl");

    /* nginx checked both; what goes into XML unescaped must stay plain */

    if (strpbrk(to, "<>&\"'") != NULL
        || (action != NULL && strpbrk(action, "<>&\"'") != NULL)
        || strpbrk(call->twilio_number, "<>&\"'") != NULL)
    {
        bd_tool_transfer_done(run, "{\"error\":\"the transfer cannot be "
                              "made\"}", 1);
        return;
    }

    attr[0] = '\0';

    /* the call's own context, sealed by nginx, comes back with it */
    sealed = bd_session_str(call->settings, "sealedContext");

    if (sealed != NULL && strspn(sealed, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "abcdefghijklmnopqrstuvwxyz0123456789-_.")
                          != strlen(sealed))
    {
        sealed = NULL;
    }

    if (action != NULL) {
        snprintf(attr, sizeof(attr), " action=\"%s%stransfer=1&amp;"
                 "record=%llu%s%s\" method=\"POST\"", action,
                 strchr(action, '?') ? "&amp;" : "?",
                 (unsigned long long) call->record,
                 sealed ? "&amp;ctx=" : "", sealed ? sealed : "");
    }

    size = (size_t) snprintf(xml, sizeof(xml),
               "<Response><Dial callerId=\"%s\" timeout=\"%d\"%s>"
               "<%s>%s</%s></Dial></Response>",
               call->twilio_number, BD_CALL_DIAL_TIMEOUT, attr,
               sip ? "Sip" : "Number", to, sip ? "Sip" : "Number");

    twiml = xml;

    if (size >= sizeof(xml) || call->twilio_number[0] == '\0') {
        bd_tool_transfer_done(run, "{\"error\":\"the transfer cannot be "
                              "made: the call's number is unknown\"}", 1);
        return;
    }

    bd_form_init(&f, form, sizeof(form));
    bd_form_param(&f, "Twiml", twiml, size);

    if (!bd_form_done(&f)) {
        bd_tool_transfer_done(run, "{\"error\":\"the transfer cannot be "
                              "made\"}", 1);
        return;
    }

    bd_log(BD_LOG_INFO, call->sid, "the assistant transfers the call to %s: "
           "its last words play, then Twilio is asked to dial", name);

    call->transfer = run;
    bd_call_ending(call, "transfer", name, form);
}


/* the last reply is done and Twilio has played it to its end */

static void
bd_call_check_goodbye(bd_call_t *call)
{
    bd_oai_event_conv_t  *cv;

    cv = &call->conv;

    if (call->state != BD_CALL_ST_ENDING
        || call->end_step == BD_CALL_END_ASKED
        || cv->response != BD_OAI_EVENT_RESP_IDLE)
    {
        return;
    }

    if (cv->marks_len > 0 || cv->unmarked_order != 0) {

        /*
         * All is generated, not all is played: the wait is now what is
         * left to play and a margin, so a lost echo costs seconds, not
         * the whole BD_CALL_GOODBYE_MS
         */

        if (call->end_step == BD_CALL_END_SPEAKING) {
            bd_call_set_end(call, BD_CALL_END_PLAYING);
            bd_oai_timer(&call->sul_wait, bd_call_wait_expired,
                         bd_oai_event_unplayed_ms(cv)
                         + BD_CALL_GOODBYE_MARGIN_MS);
        }

        return;
    }

    bd_call_end_now(call, "the last words were heard");
}


static void
bd_call_ended(void *data, unsigned status, long code)
{
    bd_call_t      *call;
    bd_tool_run_t  *run;

    call = data;
    call->end_req = NULL;

    run = call->transfer;
    call->transfer = NULL;

    if (status / 100 == 2 || code == 21220) {

        /* 21220: the call was over already; either way the stream's stop
         * comes (or came), which ends the call here */

        bd_log(BD_LOG_INFO, call->sid, "Twilio took the %s %llu ms after "
               "the assistant asked for it%s",
               run ? "transfer" : "end of the call",
               (unsigned long long) (uv_now(bd_call_loop) - call->end_asked),
               code == 21220 ? " (the call had already ended)" : "");

        if (run != NULL) {
            bd_tool_transfer_done(run, "{\"ok\":true}", 0);
        }

        bd_call_check_drained(call);
        return;
    }

    if (run != NULL && call->state == BD_CALL_ST_ENDING) {

        /* the call goes on with the assistant: tell the model */

        bd_log(BD_LOG_WARN, call->sid, "Twilio refused the transfer (%u, "
               "code %ld): the assistant goes on", status, code);

        bd_call_set_end(call, BD_CALL_END_NONE);
        call->ended_by[0] = '\0';
        lws_sul_cancel(&call->sul_wait);
        bd_call_set_state(call, BD_CALL_ST_LIVE);

        bd_tool_transfer_done(run, "{\"error\":\"the transfer failed: "
                              "Twilio refused it; tell the caller and "
                              "go on helping\"}", 1);
        bd_oai_want_write(call->oai);
        return;
    }

    if (run != NULL) {
        bd_tool_transfer_done(run, "{\"error\":\"the transfer failed\"}",
                              1);
    }

    if (call->state == BD_CALL_ST_DRAINING) {
        bd_call_check_drained(call);
        return;
    }

    /* the assistant cannot end the call the right way: close the stream */

    bd_call_hangup(call, "Twilio did not end the call");
}


/* sends the update now, once */

static void
bd_call_end_now(bd_call_t *call, const char *why)
{
    if (call->state != BD_CALL_ST_ENDING
        || call->end_step == BD_CALL_END_ASKED)
    {
        return;
    }

    bd_call_set_end(call, BD_CALL_END_ASKED);
    call->end_sent = uv_now(bd_call_loop);
    lws_sul_cancel(&call->sul_wait);

    bd_log(BD_LOG_INFO, call->sid, "%s: asking Twilio %s (%llu ms after "
           "the assistant asked)", why,
           call->transfer ? "to transfer the call" : "to end the call",
           (unsigned long long) (call->end_sent - call->end_asked));

    call->end_req = bd_twapi_update(call->sid, call->end_form ? call->end_form
                                               : "Status=completed",
                                    bd_call_ended, call);

    if (call->end_req == NULL) {
        bd_call_ended(call, 503, 0);
        return;
    }

    /* the stream's stop should follow; if it does not, the final wait
     * ends the call here anyway */

    bd_oai_timer(&call->sul_wait, bd_call_wait_expired,
                 BD_CALL_GOODBYE_MS);
}


void
bd_call_end_requested(const voice_proto_str_t *sid)
{
    bd_call_t  *call;

    call = bd_call_find(sid->data, sid->len);

    if (call != NULL) {
        bd_call_ended_by(call, "api", "/api/end-call");
    }
}


/* the session.update for the call as it is now */

static char *
bd_call_session_update(bd_call_t *call)
{
    bd_session_live_t  live;

    live.hold = call->amd_hold;
    live.idle_ms = call->idle_server;

    return bd_session_update(call->settings, &bd_call_defaults, &live);
}


static void
bd_call_session_again(bd_call_t *call)
{
    char  *json;

    json = bd_call_session_update(call);
    if (json == NULL) {
        return;
    }

    bd_oai_send(call->oai, json, strlen(json));
    cJSON_free(json);
    bd_oai_want_write(call->oai);
}


/*
 * Silence.  Where OpenAI keeps the idle timeout (server_vad), it prompts
 * the caller itself and says so (timeout_triggered); elsewhere bridged's
 * own timer runs from the moment all is quiet: nothing generating, the
 * last words played, the caller not speaking.  Either way, after
 * voice_idle_prompts prompts in a row the last word is bridged's: a
 * goodbye, then the end of the call through Twilio (so OpenAI's idle
 * timeout is switched off for it).  Caller speech starts the count again.
 */

static void
bd_call_idle_expired(lws_sorted_usec_list_t *sul)
{
    unsigned    max;
    bd_call_t  *call;

    call = lws_container_of(sul, bd_call_t, sul_idle);
    call->idle_armed = 0;

    if (call->state != BD_CALL_ST_LIVE || !bd_oai_event_quiet(&call->conv)
        || call->conv.turn == BD_OAI_EVENT_TURN_SPEAKING)
    {
        return;
    }

    max = (unsigned) bd_session_num(call->settings, "idlePrompts", 2);

    if (call->idle_prompts < max) {
        call->idle_prompts++;

        bd_log(BD_LOG_INFO, call->sid, "the caller said nothing for %u ms: "
               "prompt %u of %u", call->idle_ms, call->idle_prompts, max);

        bd_oai_event_respond(&call->conv, BD_CALL_IDLE_PROMPT);
        bd_oai_want_write(call->oai);
        return;
    }

    bd_log(BD_LOG_INFO, call->sid, "the caller said nothing after %u "
           "prompts: goodbye", max);

    bd_oai_event_respond(&call->conv, BD_CALL_IDLE_GOODBYE);
    bd_oai_want_write(call->oai);
    bd_call_ending(call, "assistant", "idle", "Status=completed");
}


static void
bd_call_idle_arm(bd_call_t *call)
{
    if (call->idle_ms == 0 || call->idle_server || call->idle_armed
        || call->state != BD_CALL_ST_LIVE || call->amd_hold
        || call->conv.turn == BD_OAI_EVENT_TURN_SPEAKING
        || !bd_oai_event_quiet(&call->conv))
    {
        return;
    }

    call->idle_armed = 1;
    bd_oai_timer(&call->sul_idle, bd_call_idle_expired, call->idle_ms);
}


static void
bd_call_ev_speech(void *data, int started)
{
    bd_call_t  *call;

    call = data;

    if (!started) {
        return;
    }

    /* the caller speaks: the silence and its prompts are over */

    call->idle_prompts = 0;

    if (call->idle_armed) {
        lws_sul_cancel(&call->sul_idle);
        call->idle_armed = 0;
    }

    /* OpenAI keeps the idle timeout again, if it did before */

    if (call->idle_server == 0 && call->state == BD_CALL_ST_LIVE
        && bd_session_server_idle(call->settings) != 0)
    {
        call->idle_server = bd_session_server_idle(call->settings);
        bd_call_session_again(call);
    }
}


/* a response's tokens go to nginx, which keeps the call's sum: a call
 * outlives its sessions and its bridged; with the models, which a
 * session that is ready sends alone (usage NULL) */

static void
bd_call_ev_usage(void *data, const bd_oai_event_usage_t *usage)
{
    bd_call_t             *call;
    const char            *asr;
    voice_proto_writer_t  *w;

    call = data;

    if (call->state == BD_CALL_ST_CLOSED) {
        return;
    }

    asr = bd_session_str(call->settings, "transcribeModel");

    w = bd_chan_begin(VOICE_PROTO_MSG_USAGE);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid, call->sid_len);
    voice_proto_put_str(w, VOICE_PROTO_F_MODEL, call->model);
    voice_proto_put_str(w, VOICE_PROTO_F_TRANSCRIBE_MODEL,
                        (asr && asr[0]) ? asr
                                        : bd_call_defaults.transcribe_model);

    if (usage != NULL) {
        voice_proto_put_u32(w, VOICE_PROTO_F_IN_TEXT, usage->input_text);
        voice_proto_put_u32(w, VOICE_PROTO_F_IN_AUDIO, usage->input_audio);
        voice_proto_put_u32(w, VOICE_PROTO_F_IN_CACHED, usage->input_cached);
        voice_proto_put_u32(w, VOICE_PROTO_F_OUT_TEXT, usage->output_text);
        voice_proto_put_u32(w, VOICE_PROTO_F_OUT_AUDIO,
                            usage->output_audio);
    }

    if (bd_chan_send(call->peer, w) != 1) {
        bd_log(BD_LOG_WARN, call->sid, "a response's usage could not be "
               "sent: the record's count is short");
    }
}


static uint64_t
bd_call_ev_clock(void *data, uint64_t *input_ms)
{
    bd_call_t  *call;

    call = data;

    if (input_ms != NULL) {
        /* mu-law at 8 kHz: 8 bytes per ms */
        *input_ms = call->oai ? call->oai->appended / 8 : 0;
    }

    return (uint64_t) uv_now(bd_call_loop);
}


static void
bd_call_ev_idle(void *data)
{
    unsigned    max;
    bd_call_t  *call;

    call = data;

    if (call->state != BD_CALL_ST_LIVE) {
        return;
    }

    max = (unsigned) bd_session_num(call->settings, "idlePrompts", 2);

    call->idle_prompts++;

    bd_log(BD_LOG_INFO, call->sid, "OpenAI prompts the silent caller: "
           "prompt %u of %u", call->idle_prompts, max);

    if (call->idle_prompts >= max) {

        /* the next silence gets bridged's goodbye, not another prompt */

        call->idle_server = 0;
        bd_call_session_again(call);
    }
}


/*
 * Length.  BD_CALL_WRAP_UP_MS before voice_max_call_duration (or at four
 * fifths of a shorter one) the model is told to wrap up; at the limit it
 * says goodbye and the call ends through Twilio.  For calls placed
 * through the API, Twilio's TimeLimit is the backstop.
 */

static void
bd_call_limit_expired(lws_sorted_usec_list_t *sul)
{
    char        text[256];
    uint64_t    max, now, left;
    bd_call_t  *call;

    call = lws_container_of(sul, bd_call_t, sul_limit);

    if (call->state != BD_CALL_ST_LIVE) {
        return;
    }

    max = (uint64_t) bd_session_num(call->settings, "maxDurationMs", 0);
    now = uv_now(bd_call_loop) - call->started;

    if (!call->wrapped_up && now + 1000 < max) {
        call->wrapped_up = 1;
        left = max - now;

        snprintf(text, sizeof(text), BD_CALL_WRAP_UP,
                 (unsigned) (left / 1000));

        bd_log(BD_LOG_INFO, call->sid, "%llu s left: the assistant is told "
               "to wrap up", (unsigned long long) (left / 1000));

        (void) bd_oai_event_system(&call->conv, text);
        bd_oai_want_write(call->oai);
        bd_oai_timer(&call->sul_limit, bd_call_limit_expired, left);
        return;
    }

    bd_log(BD_LOG_INFO, call->sid, "the call reached its time limit of "
           "%llu s", (unsigned long long) (max / 1000));

    if (call->conv.response != BD_OAI_EVENT_RESP_IDLE) {

        /* what it was saying is its goodbye: the call ends after it */

        bd_call_ending(call, "assistant", "time limit", "Status=completed");
        return;
    }

    bd_oai_event_respond(&call->conv, BD_CALL_LIMIT_GOODBYE);
    bd_oai_want_write(call->oai);
    bd_call_ending(call, "assistant", "time limit", "Status=completed");
}


static void
bd_call_limit_arm(bd_call_t *call)
{
    uint64_t  max, lead, now;

    max = (uint64_t) bd_session_num(call->settings, "maxDurationMs", 0);

    if (max == 0 || call->wrapped_up) {
        return;
    }

    lead = max / 5 < BD_CALL_WRAP_UP_MS ? max / 5 : BD_CALL_WRAP_UP_MS;
    now = uv_now(bd_call_loop) - call->started;

    bd_oai_timer(&call->sul_limit, bd_call_limit_expired,
                 now + lead < max ? max - lead - now : 1);
}


int
bd_call_init(uv_loop_t *loop, const bd_conf_t *conf)
{
    bd_call_loop = loop;
    bd_call_conf = conf;

    bd_call_defaults.model = conf->openai_model;
    bd_call_defaults.voice = BD_CALL_VOICE;
    bd_call_defaults.instructions = BD_CALL_INSTRUCTIONS;
    bd_call_defaults.transcribe_model = BD_CALL_TRANSCRIBE;

    uv_idle_init(loop, &bd_call_reaper);

    return 0;
}


/* the old way out: HANGUP (nginx closes the stream), CALL_DONE */

static void
bd_call_abandon(bd_call_t *call)
{
    bd_call_send_hangup(call, "bridged is shutting down");
    bd_call_finish(call, "bridged is shutting down");
}


static void
bd_call_shutdown_timer_cb(uv_timer_t *timer)
{
    unsigned    i;
    bd_call_t  *call, *next;
    void      (*done)(void);

    done = bd_call_shutdown_done;
    bd_call_shutdown_done = NULL;

    /* what has not ended by now is hung up the old way */

    for (i = 0; i < BD_CALL_BUCKETS; i++) {
        for (call = bd_call_table[i]; call; call = next) {
            next = call->next;
            bd_call_abandon(call);
        }
    }

    uv_close((uv_handle_t *) timer, NULL);

    /* the reaper closes itself when it frees the last call */
    if (bd_call_objects == 0
        && !uv_is_closing((uv_handle_t *) &bd_call_reaper))
    {
        uv_close((uv_handle_t *) &bd_call_reaper, NULL);
    }

    if (done != NULL) {
        done();
    }
}


/*
 * A graceful stop ends every live call the way a deliberate end does:
 * Twilio is asked to complete it (REST), and the stream's stop ends it
 * here, its last transcripts included.  What cannot be ended that way, or
 * has not ended within BD_CALL_SHUTDOWN_MS, is hung up the old way.  done
 * runs from the loop once the calls are gone, never from this call.
 */

void
bd_call_shutdown(void (*done)(void))
{
    unsigned    i;
    bd_call_t  *call, *next;

    bd_call_closing = 1;
    bd_call_shutdown_done = done;

    uv_timer_init(bd_call_loop, &bd_call_shutdown_timer);

    for (i = 0; i < BD_CALL_BUCKETS; i++) {
        for (call = bd_call_table[i]; call; call = next) {
            next = call->next;

            if (call->state == BD_CALL_ST_LIVE) {
                bd_log(BD_LOG_INFO, call->sid, "bridged is shutting down: "
                       "asking Twilio to end the call");
                bd_call_ending(call, "bridge", "bridged is shutting down",
                               "Status=completed");
                bd_call_end_now(call, "bridged is shutting down");

            } else if (call->state == BD_CALL_ST_ENDING) {
                bd_call_end_now(call, "bridged is shutting down");

            } else if (call->state != BD_CALL_ST_DRAINING) {
                bd_call_abandon(call);
            }
        }
    }

    uv_timer_start(&bd_call_shutdown_timer, bd_call_shutdown_timer_cb,
                   bd_call_count ? BD_CALL_SHUTDOWN_MS
                                 : BD_CALL_SHUTDOWN_FLUSH_MS, 0);
}
