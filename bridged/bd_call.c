/*
 * bd_call.c: the calls, keyed by call SID, and their state machine.
 *
 *     CONNECTING --open--> CONFIGURING --session.updated--> LIVE
 *         ^                     |                            |
 *         +---- RETRYING <------+-------- socket lost -------+
 *                                                            |
 *                        STREAM_STOP, or HANGUP after a fatal error
 *                                                            v
 *     CLOSED <--CALL_DONE-- DRAINING (last transcripts, --final-wait-ms)
 *
 * A call that stops before it is LIVE has nothing to wait for: CALL_DONE
 * goes out at once.  The state changes only in bd_call_set_state().
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
#include "bd_log.h"
#include "bd_oai.h"
#include "bd_oai_event.h"
#include "bd_ring.h"
#include "voice_proto.h"


#define BD_CALL_BUCKET_BITS    10
#define BD_CALL_BUCKETS        (1 << BD_CALL_BUCKET_BITS)
#define BD_CALL_MAX            4096
#define BD_CALL_TOMB_BITS      11
#define BD_CALL_TOMBS          (1 << BD_CALL_TOMB_BITS)
#define BD_CALL_TOMB_MS        60000    /* an ended call is remembered */
#define BD_CALL_UNKNOWN_MS     60000    /* one "unknown call" per minute */
#define BD_CALL_CONFIGURE_MS   10000    /* for session.updated */

#define BD_CALL_VOICE          "marin"
#define BD_CALL_TRANSCRIBE     "gpt-4o-mini-transcribe"
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
    uint64_t    until;
    uint64_t    error_at;
    uint32_t    count;
    unsigned    done:1;
    unsigned    errored:1;
} bd_call_tomb_t;


static int bd_call_ev_audio_out(void *data, const uint8_t *audio,
    size_t len, const char *mark);
static void bd_call_ev_clear(void *data);
static int bd_call_ev_transcript(void *data, uint32_t order, uint32_t role,
    const char *text, size_t len);
static void bd_call_ev_send(void *data, const char *json, size_t len);
static void bd_call_ev_ready(void *data);
static void bd_call_ev_fatal(void *data, const char *why);

static void bd_call_stop(bd_call_t *call);
static void bd_call_destroy(bd_call_t *call);


static const bd_oai_event_ops_t  bd_call_event_ops = {
    bd_call_ev_audio_out,
    bd_call_ev_clear,
    bd_call_ev_transcript,
    bd_call_ev_send,
    bd_call_ev_ready,
    bd_call_ev_fatal
};


static const char  *bd_call_state_names[] = {
    "connecting", "configuring", "live", "retrying", "draining", "closed"
};


static uv_loop_t          *bd_call_loop;
static const bd_conf_t    *bd_call_conf;
static bd_call_t          *bd_call_table[BD_CALL_BUCKETS];
static unsigned            bd_call_count;        /* calls in the table */
static unsigned            bd_call_objects;      /* calls not yet freed */
static bd_call_t          *bd_call_reaped;
static uv_idle_t           bd_call_reaper;
static int                 bd_call_closing;
static bd_call_tomb_t      bd_call_tombs[BD_CALL_TOMBS];


static void
bd_call_set_state(bd_call_t *call, bd_call_state_e state)
{
    bd_log(BD_LOG_DEBUG, call->sid, "call %s -> %s",
           bd_call_state_names[call->state], bd_call_state_names[state]);

    call->state = state;
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
    uint32_t count)
{
    voice_proto_writer_t  *w;

    w = bd_chan_begin(VOICE_PROTO_MSG_CALL_DONE);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, sid, len);
    voice_proto_put_u32(w, VOICE_PROTO_F_COUNT, count);

    return bd_chan_send(peer, w);
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
bd_call_ev_transcript(void *data, uint32_t order, uint32_t role,
    const char *text, size_t len)
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
    voice_proto_put_u32(w, VOICE_PROTO_F_ORDER, order);
    voice_proto_put_u32(w, VOICE_PROTO_F_ROLE, role);
    voice_proto_put_bytes(w, VOICE_PROTO_F_TEXT, text, len);
    voice_proto_put_u64(w, VOICE_PROTO_F_TIMESTAMP, bd_call_epoch_ms());

    rc = bd_chan_send(call->peer, w);

    bd_log(rc == 1 ? BD_LOG_DEBUG : BD_LOG_WARN, call->sid,
           "%s transcript #%u (%zu bytes)%s",
           role == VOICE_PROTO_ROLE_USER ? "caller" : "assistant",
           (unsigned) order, len, rc == 1 ? "" : " could not be sent");

    return rc == 1;
}


static void
bd_call_ev_send(void *data, const char *json, size_t len)
{
    bd_oai_send(data, json, len);
}


static void
bd_call_ev_ready(void *data)
{
    bd_call_t  *call;

    call = data;

    if (call->state != BD_CALL_ST_CONFIGURING) {
        bd_log(BD_LOG_INFO, call->sid, "session.updated while %s: ignored",
               bd_call_state_names[call->state]);
        return;
    }

    lws_sul_cancel(&call->sul_wait);
    call->retries = 0;

    bd_call_set_state(call, BD_CALL_ST_LIVE);

    bd_log(BD_LOG_INFO, call->sid, "OpenAI session ready after %llu ms, "
           "%zu ms of caller audio held",
           (unsigned long long) (uv_now(bd_call_loop) - call->started),
           bd_ring_len(&call->hold) / 8);

    if (call->greeting != NULL && !call->greeted) {
        call->greeted = 1;

        if (bd_oai_event_greet(&call->conv, call->greeting) != 0) {
            bd_log(BD_LOG_WARN, call->sid, "no memory for the greeting");
        }
    }

    bd_oai_want_write(call);
}


static void
bd_call_hangup(bd_call_t *call, const char *reason)
{
    voice_proto_writer_t  *w;

    bd_log(BD_LOG_WARN, call->sid, "hanging up: %s", reason);

    w = bd_chan_begin(VOICE_PROTO_MSG_HANGUP);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid, call->sid_len);
    voice_proto_put_str(w, VOICE_PROTO_F_REASON, reason);
    (void) bd_chan_send(call->peer, w);

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

    (void) bd_call_send_call_done(call->peer, (uint8_t *) call->sid,
                                  call->sid_len, cv->transcripts);

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
    if (call->state == BD_CALL_ST_DRAINING
        && bd_oai_event_settled(&call->conv))
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
        bd_oai_abort(call);
        bd_call_oai_lost(call, "no session.updated");
        break;

    case BD_CALL_ST_DRAINING:
        bd_log(BD_LOG_INFO, call->sid, "final wait of %u ms is over with "
               "%u transcriptions due%s", bd_call_conf->final_wait_ms,
               (unsigned) call->conv.pending,
               call->conv.responding ? " and a response generating" : "");
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

    bd_call_unlink(call);
    bd_oai_close(call);

    bd_chan_peer_unref(call->peer);
    call->peer = NULL;

    bd_call_unref(call);
}


static void
bd_call_free(bd_call_t *call)
{
    bd_oai_release(call);
    bd_ring_free(&call->hold);

    free(call->model);
    free(call->voice);
    free(call->instructions);
    free(call->transcribe_model);
    free(call->greeting);
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

    if (bd_call_closing && bd_call_objects == 0) {
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


static char *
bd_call_dup(const voice_proto_msg_t *msg, int tag,
    const voice_proto_str_t *s, const char *def)
{
    char  *p;

    if (!voice_proto_has(msg, tag) || s->len == 0) {
        return (def != NULL) ? strdup(def) : NULL;
    }

    p = malloc(s->len + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, s->data, s->len);
    p[s->len] = '\0';

    return p;
}


static void
bd_call_refuse(bd_chan_peer_t *peer, const voice_proto_msg_t *msg,
    const char *reason)
{
    bd_call_tomb_t        *t;
    voice_proto_writer_t  *w;

    w = bd_chan_begin(VOICE_PROTO_MSG_HANGUP);
    voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, msg->call_sid.data,
                          msg->call_sid.len);
    voice_proto_put_str(w, VOICE_PROTO_F_REASON, reason);
    (void) bd_chan_send(peer, w);

    /* the STREAM_STOP that follows gets its CALL_DONE from the tombstone */

    t = bd_call_tomb(msg->call_sid.data, msg->call_sid.len, 1);
    t->done = 1;
    t->count = 0;
    t->until = uv_now(bd_call_loop) + BD_CALL_TOMB_MS;
}


static void
bd_call_start(bd_chan_peer_t *peer, const voice_proto_msg_t *msg)
{
    char        sid[VOICE_PROTO_MAX_SID + 1];
    size_t      hold;
    bd_call_t  *call, *old;

    memcpy(sid, msg->call_sid.data, msg->call_sid.len);
    sid[msg->call_sid.len] = '\0';

    old = bd_call_find(msg->call_sid.data, msg->call_sid.len);

    if (!bd_oai_has_key()) {
        bd_log(BD_LOG_WARN, sid, "stream refused: bridged has no OpenAI "
               "API key");

        if (old != NULL) {
            bd_call_destroy(old);
        }

        bd_call_refuse(peer, msg, "bridged has no OpenAI API key");
        return;
    }

    if (old == NULL && bd_call_count >= BD_CALL_MAX) {
        bd_log(BD_LOG_WARN, sid, "stream refused: %d calls already",
               BD_CALL_MAX);
        bd_call_refuse(peer, msg, "bridged has too many calls");
        return;
    }

    call = calloc(1, sizeof(bd_call_t));
    if (call == NULL) {
        bd_call_refuse(peer, msg, "bridged is out of memory");
        return;
    }

    bd_call_objects++;

    memcpy(call->sid, sid, msg->call_sid.len + 1);
    call->sid_len = msg->call_sid.len;
    memcpy(call->stream_sid, msg->stream_sid.data, msg->stream_sid.len);
    call->started = uv_now(bd_call_loop);

    call->model = bd_call_dup(msg, VOICE_PROTO_F_MODEL, &msg->model,
                              bd_call_conf->openai_model);
    call->voice = bd_call_dup(msg, VOICE_PROTO_F_VOICE, &msg->voice,
                              BD_CALL_VOICE);
    call->instructions = bd_call_dup(msg, VOICE_PROTO_F_INSTRUCTIONS,
                                     &msg->instructions,
                                     BD_CALL_INSTRUCTIONS);
    call->transcribe_model = bd_call_dup(msg, VOICE_PROTO_F_TRANSCRIBE_MODEL,
                                         &msg->transcribe_model,
                                         BD_CALL_TRANSCRIBE);
    call->greeting = bd_call_dup(msg, VOICE_PROTO_F_GREETING,
                                 &msg->greeting, NULL);

    call->vad_threshold = voice_proto_has(msg, VOICE_PROTO_F_VAD_THRESHOLD)
                          ? msg->vad_threshold : 500;
    if (call->vad_threshold > 1000) {
        call->vad_threshold = 1000;
    }

    call->vad_prefix_ms = voice_proto_has(msg, VOICE_PROTO_F_VAD_PREFIX_MS)
                          ? msg->vad_prefix_ms : 300;
    call->vad_silence_ms = voice_proto_has(msg, VOICE_PROTO_F_VAD_SILENCE_MS)
                           ? msg->vad_silence_ms : 500;

    /* mu-law at 8 kHz: 8 bytes per ms */

    hold = (size_t) bd_call_conf->audio_buffer_ms * 8;

    if (call->model == NULL || call->voice == NULL
        || call->instructions == NULL || call->transcribe_model == NULL
        || (voice_proto_has(msg, VOICE_PROTO_F_GREETING)
            && msg->greeting.len && call->greeting == NULL)
        || bd_ring_init(&call->hold, hold) != 0)
    {
        call->refs = 1;
        call->state = BD_CALL_ST_CLOSED;
        bd_call_unref(call);
        bd_call_refuse(peer, msg, "bridged is out of memory");
        return;
    }

    bd_oai_event_init(&call->conv, &bd_call_event_ops, call, call->sid);

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

        bd_call_destroy(old);
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

    bd_log(BD_LOG_INFO, sid, "stream %s started: %.*s call, model %s, "
           "voice %s%s", call->stream_sid, (int) msg->direction.len,
           (const char *) msg->direction.data, call->model, call->voice,
           call->greeting ? ", with a greeting" : "");

    if (bd_oai_connect(call) != 0) {
        bd_call_hangup(call, "bridged cannot reach OpenAI");
    }
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
            bd_oai_flush(call);
        }

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
                                          msg->call_sid.len, t->count);
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
                                      msg->call_sid.len, 0);
    }
}


void
bd_call_on_message(bd_chan_peer_t *peer, const voice_proto_msg_t *msg)
{
    int         len;
    bd_call_t  *call;

    if (!bd_call_sid_ok(&msg->call_sid)) {
        bd_log(BD_LOG_INFO, NULL, "%s with a malformed call SID",
               voice_proto_type_name(msg->type));
        bd_chan_error(peer, "malformed call sid", NULL, 0);
        return;
    }

    if (msg->type == VOICE_PROTO_MSG_STREAM_START) {
        if (bd_call_closing) {
            bd_call_refuse(peer, msg, "bridged is shutting down");
            return;
        }

        bd_call_start(peer, msg);
        return;
    }

    call = bd_call_find(msg->call_sid.data, msg->call_sid.len);

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
        break;

    case VOICE_PROTO_MSG_DTMF:
        len = msg->text.len > 32 ? 32 : (int) msg->text.len;
        bd_log(BD_LOG_INFO, call->sid, "caller pressed %.*s", len,
               (const char *) msg->text.data);
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


void
bd_call_oai_open(bd_call_t *call)
{
    char                    *json;
    bd_oai_event_session_t   s;

    if (call->state != BD_CALL_ST_CONNECTING
        && call->state != BD_CALL_ST_RETRYING)
    {
        bd_log(BD_LOG_INFO, call->sid, "OpenAI connected while %s: closing",
               bd_call_state_names[call->state]);
        bd_oai_abort(call);
        return;
    }

    bd_call_set_state(call, BD_CALL_ST_CONFIGURING);

    bd_oai_event_new_session(&call->conv);

    s.model = call->model;
    s.voice = call->voice;
    s.instructions = call->instructions;
    s.transcribe_model = call->transcribe_model;
    s.vad_threshold = call->vad_threshold;
    s.vad_prefix_ms = call->vad_prefix_ms;
    s.vad_silence_ms = call->vad_silence_ms;

    json = bd_oai_event_session_update(&s);
    if (json == NULL) {
        bd_call_hangup(call, "bridged is out of memory");
        return;
    }

    bd_oai_send(call, json, strlen(json));
    cJSON_free(json);

    bd_oai_timer(&call->sul_wait, bd_call_wait_expired,
                 BD_CALL_CONFIGURE_MS);
}


void
bd_call_oai_message(bd_call_t *call, const char *json, size_t len)
{
    if (call->state != BD_CALL_ST_CONFIGURING
        && call->state != BD_CALL_ST_LIVE
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


void
bd_call_oai_lost(bd_call_t *call, const char *why)
{
    char  reason[256];

    switch (call->state) {

    case BD_CALL_ST_CONNECTING:
    case BD_CALL_ST_CONFIGURING:
    case BD_CALL_ST_LIVE:
    case BD_CALL_ST_RETRYING:
        lws_sul_cancel(&call->sul_wait);

        if (bd_oai_retry(call)) {
            bd_log(BD_LOG_WARN, call->sid, "OpenAI connection lost (%s): "
                   "retry %u", why, (unsigned) call->retries);
            bd_call_set_state(call, BD_CALL_ST_RETRYING);
            return;
        }

        /* RETRYING, so that the stop below ends the call at once */

        bd_call_set_state(call, BD_CALL_ST_RETRYING);

        snprintf(reason, sizeof(reason), "OpenAI unreachable: %s", why);
        bd_call_hangup(call, reason);
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


int
bd_call_init(uv_loop_t *loop, const bd_conf_t *conf)
{
    bd_call_loop = loop;
    bd_call_conf = conf;

    uv_idle_init(loop, &bd_call_reaper);

    return 0;
}


void
bd_call_shutdown(void)
{
    unsigned               i;
    bd_call_t             *call, *next;
    voice_proto_writer_t  *w;

    bd_call_closing = 1;

    for (i = 0; i < BD_CALL_BUCKETS; i++) {
        for (call = bd_call_table[i]; call; call = next) {
            next = call->next;

            w = bd_chan_begin(VOICE_PROTO_MSG_HANGUP);
            voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call->sid,
                                  call->sid_len);
            voice_proto_put_str(w, VOICE_PROTO_F_REASON,
                                "bridged is shutting down");
            (void) bd_chan_send(call->peer, w);

            bd_call_finish(call, "bridged is shutting down");
        }
    }

    if (bd_call_objects == 0) {
        uv_close((uv_handle_t *) &bd_call_reaper, NULL);
    }
}
