/*
 * ngx_http_voice_media.c: the Twilio Media Streams session of one call,
 * on top of the media WebSocket (ngx_http_voice_ws.c).
 *
 * Each text message from Twilio is parsed (ngx_http_voice_twilio.c) and
 * checked against the session's state: `start` opens the call -- the
 * call and its record (ngx_http_voice_call.c) and its stream on the
 * bridged instance that owns the call SID -- then `media`, `mark` and
 * `dtmf` are forwarded to bridged as proto frames, and `stop` (or the
 * socket going away) ends the stream.  Audio is decoded from base64 here,
 * so bridged gets raw mu-law; a frame bridged cannot take (ZeroMQ high
 * water mark) is dropped and counted, never queued.  While the call
 * waits for a live bridged (its own went down), the caller's audio is
 * held, bounded, and given to the bridged that takes the call, so that
 * words said in the gap still reach the assistant.
 *
 * The other way, bridged's audio, marks and clears become Twilio
 * messages with exactly the documented fields, and a hang-up closes the
 * WebSocket, which ends the call on Twilio's side.
 *
 * A stream takes its call's slot under voice_max_calls
 * (ngx_http_voice_zone.c); past the limit it is closed with 1013 (try
 * again later), and Twilio speaks the fallback message that follows
 * </Connect>.  A bridged that refuses it as full (its --max-calls) passes
 * it to another with room; the stream is closed the same way only when
 * every one is full.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_seal.h"


#define NGX_HTTP_VOICE_MEDIA_CHUNKS  8     /* ctx0..ctx7 */

/* how long a call waits for a live bridged (none at all just after
 * start, or every one down) before it ends with the fallback message */
#define NGX_HTTP_VOICE_MEDIA_WAIT    10000

/* how long a stream's start waits for the call's previous stream to let
 * go (its record being written), polling */
#define NGX_HTTP_VOICE_MEDIA_DEFER       5000
#define NGX_HTTP_VOICE_MEDIA_DEFER_POLL  20

/* the caller's audio held while a call waits for a live bridged: 8 s of
 * 20 ms frames (8,000 bytes a second), each with its sequence number and
 * timestamp, 70 KB; allocated the first time the call waits */
#define NGX_HTTP_VOICE_MEDIA_HOLD_HDR    (4 + 8 + 2)
#define NGX_HTTP_VOICE_MEDIA_HOLD                                             \
    (8 * 8000 + 8 * 50 * NGX_HTTP_VOICE_MEDIA_HOLD_HDR)

/* unescaped strings of a message: a media payload with every "/"
 * escaped fits */
#define NGX_HTTP_VOICE_MEDIA_SCRATCH     16384

/* a message to Twilio, with room for its WebSocket frame header */
#define NGX_HTTP_VOICE_MEDIA_OUT                                              \
    (VOICE_WS_OUT_HEADER                                                     \
     + NGX_HTTP_VOICE_TWILIO_MEDIA_SIZE(VOICE_PROTO_MAX_SID,                 \
                                        VOICE_PROTO_MAX_AUDIO))


typedef enum {
    NGX_HTTP_VOICE_MEDIA_ST_OPEN = 0,     /* before start */
    NGX_HTTP_VOICE_MEDIA_ST_STREAMING,
    NGX_HTTP_VOICE_MEDIA_ST_STOPPED,      /* stop received or sent */
    NGX_HTTP_VOICE_MEDIA_ST_CLOSED        /* the WebSocket is gone */
} ngx_http_voice_media_state_e;


struct ngx_http_voice_media_s {
    ngx_http_voice_ws_t            *ws;
    ngx_http_request_t             *request;
    ngx_http_voice_loc_conf_t      *vlcf;
    ngx_http_voice_call_t          *call;
    ngx_http_voice_peer_t          *peer;
    ngx_http_voice_media_state_e    state;

    u_char                          stream_sid[NGX_HTTP_VOICE_SID_LEN];
    u_char                          call_sid[NGX_HTTP_VOICE_SID_LEN];

    /* the start event's, for the stream.start of every bridged that
     * carries the call */
    u_char                          account_sid[NGX_HTTP_VOICE_SID_LEN];
    size_t                          account_sid_len;
    u_char                          ours[NGX_HTTP_VOICE_PHONE_MAX];
    size_t                          ours_len;
    unsigned                        outbound:1;
    unsigned                        carried:1;      /* a bridged had it */

    ngx_event_t                     wait;           /* for a live bridged */
    ngx_msec_t                      waiting_since;
    u_char                         *hold;           /* audio of the wait */
    size_t                          hold_len;
    const char                     *lost_why;       /* how its bridged went:
                                                       a static string */

    /* a start that waits for the call's previous stream to let go */
    ngx_event_t                     defer;
    u_char                         *deferred;
    size_t                          deferred_len;
    ngx_msec_t                      deferred_since;

    ngx_uint_t                      frames_in;
    ngx_uint_t                      dropped_in;
    ngx_uint_t                      frames_out;
    ngx_uint_t                      ignored;
    ngx_uint_t                      invalid;
};


static const char *ngx_http_voice_media_state_name[] = {
    "open", "streaming", "stopped", "closed"
};


static void ngx_http_voice_media_state(ngx_http_voice_media_t *m,
    ngx_http_voice_media_state_e state);
static void ngx_http_voice_media_start(ngx_http_voice_media_t *m,
    ngx_http_voice_twilio_event_t *ev);
static void ngx_http_voice_media_hold(ngx_http_voice_media_t *m,
    ngx_http_voice_twilio_event_t *ev);
static void ngx_http_voice_media_release(ngx_http_voice_media_t *m);
static void ngx_http_voice_media_forward(ngx_http_voice_media_t *m,
    voice_proto_msg_type_e type, ngx_http_voice_twilio_event_t *ev);
static void ngx_http_voice_media_stop(ngx_http_voice_media_t *m,
    const char *reason);
static void ngx_http_voice_media_audio(ngx_http_voice_media_t *m,
    voice_proto_msg_t *msg);
static void ngx_http_voice_media_unseal(ngx_http_voice_media_t *m,
    ngx_str_t *sealed, ngx_http_voice_session_extra_t *extra);
static ngx_int_t ngx_http_voice_media_send_start(ngx_http_voice_media_t *m,
    const char *why);
static void ngx_http_voice_media_wait_expired(ngx_event_t *ev);
static ngx_uint_t ngx_http_voice_media_place_elsewhere(
    ngx_http_voice_media_t *m);
static ngx_uint_t ngx_http_voice_media_start_later(ngx_http_voice_media_t *m,
    ngx_http_voice_twilio_event_t *ev, u_char *data, size_t len);
static void ngx_http_voice_media_start_again(ngx_event_t *ev);
static ngx_int_t ngx_http_voice_media_tell_stop(ngx_http_voice_media_t *m,
    ngx_http_voice_peer_t *peer, const char *reason);


/*
 * The worker's buffers, one set for every session (a process is one
 * worker), so a call holds nothing while it waits for its next message:
 * a message's decoded audio and unescaped strings, and a message to
 * Twilio.  Allocated with the first session, they last as long as the
 * process.
 */

static u_char  *ngx_http_voice_media_audio_buf;
static u_char  *ngx_http_voice_media_scratch;
static u_char  *ngx_http_voice_media_out;


ngx_http_voice_media_t *
ngx_http_voice_media_create(ngx_http_request_t *r)
{
    ngx_log_t               *log;
    ngx_http_voice_media_t  *m;

    log = r->connection->log;

    if (ngx_http_voice_media_out == NULL) {
        ngx_http_voice_media_audio_buf =
                                ngx_alloc(NGX_HTTP_VOICE_TWILIO_MAX_AUDIO, log);
        ngx_http_voice_media_scratch =
                                ngx_alloc(NGX_HTTP_VOICE_MEDIA_SCRATCH, log);
        ngx_http_voice_media_out = ngx_alloc(NGX_HTTP_VOICE_MEDIA_OUT, log);

        if (ngx_http_voice_media_audio_buf == NULL
            || ngx_http_voice_media_scratch == NULL
            || ngx_http_voice_media_out == NULL)
        {
            ngx_free(ngx_http_voice_media_audio_buf);
            ngx_free(ngx_http_voice_media_scratch);
            ngx_free(ngx_http_voice_media_out);
            ngx_http_voice_media_out = NULL;
            return NULL;
        }
    }

    m = ngx_pcalloc(r->pool, sizeof(ngx_http_voice_media_t));
    if (m == NULL) {
        return NULL;
    }

    m->request = r;
    m->ws = ngx_http_get_module_ctx(r, ngx_http_voice_module);
    m->vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);
    m->state = NGX_HTTP_VOICE_MEDIA_ST_OPEN;

    m->wait.handler = ngx_http_voice_media_wait_expired;
    m->wait.data = m;
    m->wait.log = r->connection->log;

    m->defer.handler = ngx_http_voice_media_start_again;
    m->defer.data = m;
    m->defer.log = r->connection->log;

    return m;
}


static void
ngx_http_voice_media_state(ngx_http_voice_media_t *m,
    ngx_http_voice_media_state_e state)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, m->request->connection->log, 0,
                   "voice media: %s -> %s",
                   ngx_http_voice_media_state_name[m->state],
                   ngx_http_voice_media_state_name[state]);

    m->state = state;
}


void
ngx_http_voice_media_on_message(ngx_http_voice_media_t *m, u_char *data,
    size_t len)
{
    const char                     *err, *why;
    ngx_log_t                      *log;
    ngx_http_voice_twilio_event_t   ev;

    log = m->request->connection->log;

    if (ngx_http_voice_twilio_parse(data, len, &ev,
                                    ngx_http_voice_media_audio_buf,
                                    ngx_http_voice_media_scratch,
                                    NGX_HTTP_VOICE_MEDIA_SCRATCH, &err)
        != 0)
    {
        /* the first one of a stream is logged; the rest only counted, so
         * a peer cannot flood the log */
        if (m->invalid++ == 0) {
            ngx_log_error(NGX_LOG_INFO, log, 0,
                          "voice: invalid Twilio message ignored: %s", err);
        }

        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_EVENTS_INVALID);
        return;
    }

    if (ev.event != NGX_HTTP_VOICE_TWILIO_CONNECTED
        && ev.event != NGX_HTTP_VOICE_TWILIO_START
        && ev.event != NGX_HTTP_VOICE_TWILIO_UNKNOWN
        && m->state != NGX_HTTP_VOICE_MEDIA_ST_OPEN
        && (ev.stream_sid.len != NGX_HTTP_VOICE_SID_LEN
            || ngx_memcmp(ev.stream_sid.data, m->stream_sid,
                          NGX_HTTP_VOICE_SID_LEN) != 0))
    {
        why = "for another stream";
        goto ignored;
    }

    switch (ev.event) {

    case NGX_HTTP_VOICE_TWILIO_CONNECTED:
        return;

    case NGX_HTTP_VOICE_TWILIO_START:
        if (m->state != NGX_HTTP_VOICE_MEDIA_ST_OPEN) {
            why = "a second start";
            goto ignored;
        }

        if (ngx_http_voice_media_start_later(m, &ev, data, len)) {
            return;
        }

        ngx_http_voice_media_start(m, &ev);
        return;

    case NGX_HTTP_VOICE_TWILIO_MEDIA:
        if (m->state != NGX_HTTP_VOICE_MEDIA_ST_STREAMING) {
            why = "media outside the stream";
            goto ignored;
        }

        ngx_http_voice_media_forward(m, VOICE_PROTO_MSG_AUDIO_IN, &ev);
        return;

    case NGX_HTTP_VOICE_TWILIO_MARK:
        if (m->state == NGX_HTTP_VOICE_MEDIA_ST_STREAMING) {
            ngx_http_voice_media_forward(m, VOICE_PROTO_MSG_MARK_ACK, &ev);
        }
        return;

    case NGX_HTTP_VOICE_TWILIO_DTMF:
        if (m->state == NGX_HTTP_VOICE_MEDIA_ST_STREAMING) {
            ngx_http_voice_media_forward(m, VOICE_PROTO_MSG_DTMF, &ev);
        }
        return;

    case NGX_HTTP_VOICE_TWILIO_STOP:
        if (m->state != NGX_HTTP_VOICE_MEDIA_ST_STREAMING) {
            why = "a stop outside the stream";
            goto ignored;
        }

        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "voice: stream stopped by Twilio after %ui frames",
                      m->frames_in);

        ngx_http_voice_media_stop(m, "stop");

        /* Twilio closes the socket after stop; closing it first is
         * harmless and frees it sooner */
        ngx_http_voice_ws_close(m->ws, VOICE_WS_CLOSE_NORMAL, NULL);
        return;

    default: /* NGX_HTTP_VOICE_TWILIO_UNKNOWN: new events Twilio may add */
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                       "voice: unknown Twilio event \"%*s\" ignored",
                       ev.event_name.len, ev.event_name.data);
        why = "an unknown event";
        goto ignored;
    }

ignored:

    /* counted always, the first of a stream logged: a peer cannot flood
     * the log, and the stream's end tells the totals */
    if (m->ignored++ == 0) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "voice: Twilio message ignored: %s", why);
    }

    ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_EVENTS_IGNORED);
}


/*
 * A stream that continues a call (back from a transfer nobody answered)
 * can come while the call's previous stream is over but its record is
 * still being written -- a moment, or longer when the disk is slow.  Its
 * start waits for the previous one to let go, polling, at most
 * NGX_HTTP_VOICE_MEDIA_DEFER ms, so that the call goes on in the same
 * record rather than being refused; the caller's audio meanwhile is not
 * forwarded.  Returns 1 when the start waits.
 */

static ngx_uint_t
ngx_http_voice_media_start_later(ngx_http_voice_media_t *m,
    ngx_http_voice_twilio_event_t *ev, u_char *data, size_t len)
{
    ngx_http_voice_call_t  *call;

    if (ev->call_sid.len != NGX_HTTP_VOICE_SID_LEN) {
        return 0;
    }

    call = ngx_http_voice_call_find(ev->call_sid.data, ev->call_sid.len);

    if (call == NULL || call->media != NULL) {
        return 0;
    }

    /* the call goes on: its record need not wait for a final status */
    ngx_http_voice_call_hurry(call);

    if (m->deferred == NULL) {
        m->deferred = ngx_pnalloc(m->request->pool, len);
        if (m->deferred == NULL) {
            return 0;
        }

        ngx_memcpy(m->deferred, data, len);
        m->deferred_len = len;
        m->deferred_since = ngx_current_msec;

        ngx_log_error(NGX_LOG_INFO, m->request->connection->log, 0,
                      "voice: call %*s: its previous stream's record is "
                      "still being written: the stream waits for it",
                      ev->call_sid.len, ev->call_sid.data);
    }

    if (ngx_current_msec - m->deferred_since >= NGX_HTTP_VOICE_MEDIA_DEFER) {
        return 0;
    }

    ngx_add_timer(&m->defer, NGX_HTTP_VOICE_MEDIA_DEFER_POLL);

    return 1;
}


static void
ngx_http_voice_media_start_again(ngx_event_t *ev)
{
    ngx_http_voice_media_t  *m;

    m = ev->data;

    if (m->state == NGX_HTTP_VOICE_MEDIA_ST_OPEN && m->deferred) {
        ngx_http_voice_media_on_message(m, m->deferred, m->deferred_len);
    }
}


static void
ngx_http_voice_media_start(ngx_http_voice_media_t *m,
    ngx_http_voice_twilio_event_t *ev)
{
    ngx_str_t                       phone, direction, profile, ours;
    ngx_str_t                       transfer, value, record;
    ngx_str_t                       sealed[NGX_HTTP_VOICE_MEDIA_CHUNKS];
    uint64_t                        resume;
    ngx_int_t                       admit;
    ngx_http_voice_twilio_str_t    *name;
    ngx_uint_t                      i;
    ngx_log_t                      *log;
    ngx_http_voice_ws_t            *ws;
    ngx_http_voice_session_conf_t  *scf;
    ngx_http_voice_session_extra_t  extra;

    log = m->request->connection->log;
    ws = m->ws;

    if (!ngx_http_voice_body_valid_sid(ev->stream_sid.data,
                                       ev->stream_sid.len, "MZ")
        || !ngx_http_voice_body_valid_call_sid(ev->call_sid.data,
                                               ev->call_sid.len))
    {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "voice: start event with an invalid stream or call "
                      "SID");
        ngx_http_voice_ws_close(ws, VOICE_WS_CLOSE_POLICY,
                                "invalid start event");
        return;
    }

    ngx_memcpy(m->stream_sid, ev->stream_sid.data, NGX_HTTP_VOICE_SID_LEN);
    ngx_memcpy(m->call_sid, ev->call_sid.data, NGX_HTTP_VOICE_SID_LEN);

    /* every line of the stream from now on names its call */
    ngx_http_voice_log_call(m->request, m->call_sid, NGX_HTTP_VOICE_SID_LEN);
    ngx_http_voice_log_status(m->request, (u_char *) "in-progress", 11);

    ngx_str_null(&phone);
    ngx_str_null(&profile);
    ngx_str_null(&ours);
    ngx_str_null(&transfer);
    ngx_str_null(&record);
    ngx_memzero(sealed, sizeof(sealed));
    ngx_str_set(&direction, "inbound");

    /* the <Parameter>s of our TwiML (ngx_http_voice_twiml.c) */

    for (i = 0; i < ev->nparams; i++) {
        name = &ev->params[i].name;
        value.data = (u_char *) ev->params[i].value.data;
        value.len = ev->params[i].value.len;

#define NGX_HTTP_VOICE_PARAM_IS(s)                                            \
        (name->len == sizeof(s) - 1                                           \
         && ngx_memcmp(name->data, s, sizeof(s) - 1) == 0)

        if (NGX_HTTP_VOICE_PARAM_IS("phoneNumber")) {
            phone = value;

        } else if (NGX_HTTP_VOICE_PARAM_IS("direction")
                   && value.len == sizeof("outbound") - 1
                   && ngx_memcmp(value.data, "outbound",
                                 sizeof("outbound") - 1) == 0)
        {
            ngx_str_set(&direction, "outbound");

        } else if (NGX_HTTP_VOICE_PARAM_IS("profile")) {
            profile = value;

        } else if (NGX_HTTP_VOICE_PARAM_IS("twilioNumber")) {
            ours = value;

        } else if (NGX_HTTP_VOICE_PARAM_IS("transfer")) {
            transfer = value;

        } else if (NGX_HTTP_VOICE_PARAM_IS("record")) {
            record = value;

        } else if (name->len == 4 && ngx_memcmp(name->data, "ctx", 3) == 0
                   && name->data[3] >= '0'
                   && name->data[3] < '0' + NGX_HTTP_VOICE_MEDIA_CHUNKS)
        {
            sealed[name->data[3] - '0'] = value;
        }

#undef NGX_HTTP_VOICE_PARAM_IS
    }

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "voice: stream %*s of %V call %*s started",
                  (size_t) NGX_HTTP_VOICE_SID_LEN, m->stream_sid, &direction,
                  (size_t) NGX_HTTP_VOICE_SID_LEN, m->call_sid);

    /*
     * voice_max_calls: the call took its slot at /twiml or /api/call; a
     * stream that arrives anyway past the limit is refused before it
     * costs anything, and Twilio speaks the TwiML after </Connect>
     */

    admit = ngx_http_voice_zone_call_live(m->vlcf->max_calls, m->call_sid);

    if (admit == NGX_HTTP_VOICE_ADMIT_FULL) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "voice: call %*s refused: voice_max_calls %i reached",
                      (size_t) NGX_HTTP_VOICE_SID_LEN, m->call_sid,
                      m->vlcf->max_calls);
        ngx_http_voice_ws_close(ws, VOICE_WS_CLOSE_TRY_AGAIN,
                                "over capacity");
        return;
    }

    /* back from a transfer: the call's record goes on (its start time) */

    resume = 0;

    for (i = 0; transfer.len && i < record.len && i < 16; i++) {
        if (record.data[i] < '0' || record.data[i] > '9') {
            resume = 0;
            break;
        }

        resume = resume * 10 + (record.data[i] - '0');
    }

    m->call = ngx_http_voice_call_create(m->vlcf, log, ev, &phone, resume);
    if (m->call == NULL) {
        if (admit == NGX_HTTP_VOICE_ADMIT_OK) {
            ngx_http_voice_zone_call_end(m->call_sid);
        }

        ngx_http_voice_ws_close(ws, VOICE_WS_CLOSE_ERROR,
                                "cannot start the call");
        return;
    }

    m->call->admitted = (admit == NGX_HTTP_VOICE_ADMIT_OK);
    m->call->media = m;
    m->call->outbound = (direction.len == sizeof("outbound") - 1);
    ngx_http_voice_call_announce(m->call);
    ngx_http_voice_media_state(m, NGX_HTTP_VOICE_MEDIA_ST_STREAMING);

    /* the settings of the /twiml location that sent the call here, kept
     * with the call so that they can be sent again */

    scf = ngx_http_voice_session_find(m->request, &profile);

    ngx_memzero(&extra, sizeof(ngx_http_voice_session_extra_t));
    extra.machine_detection = NGX_HTTP_VOICE_BODY_AMD_UNSET;

    if (sealed[0].len) {
        ngx_http_voice_media_unseal(m, sealed, &extra);
    }

    if (transfer.len) {

        /* back from a transfer nobody took: the assistant says so first */

        ngx_str_set(&extra.greeting, "\"The transfer you started did not go "
                    "through: nobody answered. Tell the caller in one short "
                    "sentence, then go on helping them.\"");
    }

    if (ngx_http_voice_session_render(m->call->pool, scf, &extra,
                                      &m->call->settings)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "voice: the call's session settings cannot be "
                      "rendered, hanging up");
        ngx_http_voice_call_ended_by(m->call, (u_char *) "bridge", 6,
                                     (u_char *) "no settings", 11);
        ngx_http_voice_media_stop(m, "no settings");
        ngx_http_voice_ws_close(ws, VOICE_WS_CLOSE_ERROR,
                                "assistant unavailable");
        return;
    }

    /* what every stream.start of the call says, whichever bridged */

    m->account_sid_len = ngx_min(ev->account_sid.len,
                                 NGX_HTTP_VOICE_SID_LEN);
    ngx_memcpy(m->account_sid, ev->account_sid.data, m->account_sid_len);
    m->outbound = m->call->outbound;
    ngx_http_voice_metrics_call_active(m->call, 1);

    if (ours.len <= NGX_HTTP_VOICE_PHONE_MAX) {
        m->ours_len = ours.len;
        ngx_memcpy(m->ours, ours.data, ours.len);

        /* for the record's from and to */
        m->call->ours.data = ngx_pstrdup(m->call->pool, &ours);
        m->call->ours.len = m->call->ours.data ? ours.len : 0;
    }

    ngx_http_voice_media_hand_over(m, NULL);
}


/*
 * The call's own context (its /api/call request's), sealed into its TwiML
 * URL and handed back in pieces: unsealed with the auth token and read
 * into extra.  One that cannot be opened (another auth token, a broken
 * piece) is logged and the call goes on with its location's settings.
 * The plaintext stays in the call's pool and is never logged.
 */

static void
ngx_http_voice_media_unseal(ngx_http_voice_media_t *m, ngx_str_t *sealed,
    ngx_http_voice_session_extra_t *extra)
{
    int                           amd;
    u_char                       *token, *plain, *p;
    u_char                        key[NGX_HTTP_VOICE_SEAL_KEY];
    size_t                        len, n;
    ngx_uint_t                    i;
    ngx_log_t                    *log;
    ngx_http_voice_body_slice_t   ins, greet, ctx;

    log = m->request->connection->log;

    len = 0;
    for (i = 0; i < NGX_HTTP_VOICE_MEDIA_CHUNKS && sealed[i].len; i++) {
        len += sealed[i].len;
    }

    token = ngx_pnalloc(m->call->pool, len);
    plain = ngx_pnalloc(m->call->pool, len);

    if (token == NULL || plain == NULL) {
        return;
    }

    p = token;
    for (i = 0; i < NGX_HTTP_VOICE_MEDIA_CHUNKS && sealed[i].len; i++) {
        p = ngx_cpymem(p, sealed[i].data, sealed[i].len);
    }

    if (m->vlcf->auth_token.len == 0
        || ngx_http_voice_seal_key(m->vlcf->auth_token.data,
                                   m->vlcf->auth_token.len, key)
           != 0)
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "voice: the call's own context cannot be opened "
                      "without the Twilio auth token: ignored");
        return;
    }

    n = ngx_http_voice_unseal(key, token, len, plain, len);
    ngx_explicit_memzero(key, sizeof(key));

    if (n == (size_t) -1
        || ngx_http_voice_body_call_extra(plain, n, &ins, &greet, &ctx, &amd)
           != 0)
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "voice: the call's own context does not open (another "
                      "auth token, or altered): ignored");
        return;
    }

    extra->instructions.data = (u_char *) ins.data;
    extra->instructions.len = ins.data ? ins.len : 0;
    extra->greeting.data = (u_char *) greet.data;
    extra->greeting.len = greet.data ? greet.len : 0;
    extra->context.data = (u_char *) ctx.data;
    extra->context.len = ctx.data ? ctx.len : 0;
    extra->machine_detection = amd;
    extra->sealed.data = token;
    extra->sealed.len = len;

    /* the record keeps the context (plain is in the call's pool) */
    m->call->context = extra->context;

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "voice: the call has its own%s%s%s%s",
                  ins.data ? " instructions" : "",
                  greet.data ? " greeting" : "",
                  ctx.data ? " context" : "",
                  amd != NGX_HTTP_VOICE_BODY_AMD_UNSET
                  ? " machine detection" : "");
}


/*
 * The call's stream.start for its bridged: the same each time, and, when
 * another bridged had the call before (why says what happened to it),
 * with the conversation so far, the order to go on from, and no greeting.
 */

static ngx_int_t
ngx_http_voice_media_send_start(ngx_http_voice_media_t *m, const char *why)
{
    size_t                    n;
    uint32_t                  next;
    ngx_str_t                 history;
    ngx_int_t                 rc;
    ngx_pool_t               *pool;
    voice_proto_writer_t      wr;
    ngx_http_voice_worker_t  *w;

    w = ngx_http_voice_worker();
    pool = NULL;

    voice_proto_begin(&wr, w->frame, w->frame_size,
                      VOICE_PROTO_MSG_STREAM_START);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_CALL_SID, m->call_sid,
                          NGX_HTTP_VOICE_SID_LEN);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_STREAM_SID, m->stream_sid,
                          NGX_HTTP_VOICE_SID_LEN);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_ACCOUNT_SID, m->account_sid,
                          m->account_sid_len);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_PHONE, m->call->phone,
                          ngx_strlen(m->call->phone));

    if (m->outbound) {
        voice_proto_put_str(&wr, VOICE_PROTO_F_DIRECTION, "outbound");

    } else {
        voice_proto_put_str(&wr, VOICE_PROTO_F_DIRECTION, "inbound");
    }

    /* Twilio's From and To: the call's Twilio number is one of them */

    if (m->ours_len) {
        voice_proto_put_bytes(&wr, m->outbound ? VOICE_PROTO_F_FROM
                                               : VOICE_PROTO_F_TO,
                              m->ours, m->ours_len);
        voice_proto_put_bytes(&wr, m->outbound ? VOICE_PROTO_F_TO
                                               : VOICE_PROTO_F_FROM,
                              m->call->phone, ngx_strlen(m->call->phone));
    }

    voice_proto_put_bytes(&wr, VOICE_PROTO_F_SETTINGS,
                          m->call->settings.data, m->call->settings.len);

    /* the record's start: how a transfer's way back names the record */
    voice_proto_put_u64(&wr, VOICE_PROTO_F_TIMESTAMP, m->call->start);

    if (why != NULL) {
        pool = ngx_create_pool(4096, m->request->connection->log);

        if (pool == NULL
            || ngx_http_voice_call_history(m->call, pool, &history, &next)
               != NGX_OK)
        {
            if (pool) {
                ngx_destroy_pool(pool);
            }

            return NGX_ERROR;
        }

        voice_proto_put_u32(&wr, VOICE_PROTO_F_FLAGS,
                            VOICE_PROTO_FLAG_RESUMED);
        voice_proto_put_u32(&wr, VOICE_PROTO_F_ORDER, next);
        voice_proto_put_str(&wr, VOICE_PROTO_F_REASON, why);
        voice_proto_put_bytes(&wr, VOICE_PROTO_F_HISTORY, history.data,
                              history.len);
    }

    n = voice_proto_finish(&wr);

    if (pool) {
        ngx_destroy_pool(pool);
    }

    if (n == 0) {
        ngx_log_error(NGX_LOG_ALERT, m->request->connection->log, 0,
                      "voice: stream start frame does not fit");
        return NGX_ERROR;
    }

    rc = ngx_http_voice_bridge_send(m->peer, w->frame, n);

    return rc;
}


/*
 * The call goes to a live bridged: at its start, after its bridged went
 * down (why), or once one answers while it waits.  With none alive it
 * waits, bounded; the caller's audio meanwhile is dropped and counted.
 */

void
ngx_http_voice_media_hand_over(ngx_http_voice_media_t *m, const char *why)
{
    ngx_log_t              *log;
    ngx_http_voice_peer_t  *peer;

    if (m->state != NGX_HTTP_VOICE_MEDIA_ST_STREAMING) {
        return;
    }

    log = m->request->connection->log;

    if (why != NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "voice: call %*s: %s",
                      (size_t) NGX_HTTP_VOICE_SID_LEN, m->call_sid, why);

        /* kept for the note of the bridged that takes the call, however
         * long it waits for one */
        m->lost_why = why;
    }

    peer = ngx_http_voice_call_place(m->call_sid, NGX_HTTP_VOICE_SID_LEN);

    /*
     * The bridged the call leaves may only be hung, not dead: told now,
     * it ends its part of the call when it wakes (the message waits in
     * its queue), and whatever it still says is not listened to.
     */

    if (m->peer != NULL && m->peer != peer) {
        ngx_http_voice_media_tell_stop(m, m->peer, "handed over");
    }

    m->peer = peer;
    m->call->peer = peer;

    if (peer != NULL
        && ngx_http_voice_media_send_start(m, !m->carried ? NULL
                                              : m->lost_why ? m->lost_why
                                              : "its bridged went away")
           == NGX_OK)
    {
        if (m->wait.timer_set) {
            ngx_del_timer(&m->wait);
        }

        ngx_http_voice_media_release(m);

        if (m->carried || m->waiting_since) {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "voice: call %*s goes on with bridged at \"%V\" "
                          "after %M ms",
                          (size_t) NGX_HTTP_VOICE_SID_LEN, m->call_sid,
                          &peer->endpoint,
                          m->waiting_since
                          ? ngx_current_msec - m->waiting_since : 0);
        }

        m->carried = 1;
        m->waiting_since = 0;
        return;
    }

    m->peer = NULL;
    m->call->peer = NULL;

    if (!m->wait.timer_set) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "voice: call %*s waits up to %d ms for a bridged",
                      (size_t) NGX_HTTP_VOICE_SID_LEN, m->call_sid,
                      NGX_HTTP_VOICE_MEDIA_WAIT);
        m->waiting_since = ngx_current_msec;
        ngx_add_timer(&m->wait, NGX_HTTP_VOICE_MEDIA_WAIT);
    }
}


/*
 * The bridged the stream went to refused it as full (it is marked so):
 * another one with room takes it, as the new call it still is -- nothing
 * of it happened on the one that refused, which is not told anything.
 * 1 when one did; 0 when every live one is full, and the call is refused.
 */

static ngx_uint_t
ngx_http_voice_media_place_elsewhere(ngx_http_voice_media_t *m)
{
    ngx_http_voice_peer_t  *peer;

    peer = ngx_http_voice_call_place(m->call_sid, NGX_HTTP_VOICE_SID_LEN);

    if (peer == NULL || peer->full
        || m->state != NGX_HTTP_VOICE_MEDIA_ST_STREAMING)
    {
        return 0;
    }

    ngx_log_error(NGX_LOG_NOTICE, m->request->connection->log, 0,
                  "voice: call %*s goes to bridged at \"%V\", which has "
                  "room", (size_t) NGX_HTTP_VOICE_SID_LEN, m->call_sid,
                  &peer->endpoint);

    m->peer = NULL;
    m->call->peer = NULL;
    m->carried = 0;
    m->lost_why = NULL;

    ngx_http_voice_media_hand_over(m, NULL);

    return 1;
}


static void
ngx_http_voice_media_wait_expired(ngx_event_t *ev)
{
    ngx_http_voice_media_t  *m;

    m = ev->data;

    if (m->state != NGX_HTTP_VOICE_MEDIA_ST_STREAMING || m->peer != NULL) {
        return;
    }

    /* with no assistant there is no call: the stream closes from our
     * side, Twilio speaks the fallback message, the record is written */

    ngx_log_error(NGX_LOG_ERR, m->request->connection->log, 0,
                  "voice: no bridged answered within %d ms, hanging up",
                  NGX_HTTP_VOICE_MEDIA_WAIT);
    ngx_http_voice_call_ended_by(m->call, (u_char *) "bridge", 6,
                                 (u_char *) "bridged is not reachable", 24);
    ngx_http_voice_media_stop(m, "bridge unavailable");
    ngx_http_voice_ws_close(m->ws, VOICE_WS_CLOSE_ERROR,
                            "assistant unavailable");
}


static void
ngx_http_voice_media_forward(ngx_http_voice_media_t *m,
    voice_proto_msg_type_e type, ngx_http_voice_twilio_event_t *ev)
{
    size_t                    n;
    ngx_int_t                 rc;
    voice_proto_writer_t      wr;
    ngx_http_voice_worker_t  *w;

    w = ngx_http_voice_worker();

    if (m->peer == NULL) {
        if (type == VOICE_PROTO_MSG_AUDIO_IN) {
            ngx_http_voice_media_hold(m, ev);
        }

        return;
    }

    voice_proto_begin(&wr, w->frame, w->frame_size, type);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_CALL_SID, m->call_sid,
                          NGX_HTTP_VOICE_SID_LEN);

    switch (type) {

    case VOICE_PROTO_MSG_AUDIO_IN:
        voice_proto_put_u32(&wr, VOICE_PROTO_F_SEQ, (uint32_t) ev->chunk);
        voice_proto_put_u64(&wr, VOICE_PROTO_F_TIMESTAMP, ev->timestamp);
        voice_proto_put_bytes(&wr, VOICE_PROTO_F_AUDIO, ev->audio,
                              ev->audio_len);
        break;

    case VOICE_PROTO_MSG_MARK_ACK:
        voice_proto_put_bytes(&wr, VOICE_PROTO_F_NAME, ev->mark_name.data,
                              ev->mark_name.len);
        break;

    default: /* VOICE_PROTO_MSG_DTMF */
        voice_proto_put_bytes(&wr, VOICE_PROTO_F_TEXT, ev->digit.data,
                              ev->digit.len);
        break;
    }

    n = voice_proto_finish(&wr);
    if (n == 0) {
        m->invalid++;
        return;
    }

    rc = ngx_http_voice_bridge_send(m->peer, w->frame, n);

    if (type != VOICE_PROTO_MSG_AUDIO_IN) {
        return;
    }

    if (rc == NGX_OK) {
        m->frames_in++;
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_FRAMES_IN);
        return;
    }

    /* bridged is full or gone: this frame is lost, the call goes on */
    if (m->dropped_in++ == 0) {
        ngx_log_error(NGX_LOG_WARN, m->request->connection->log, 0,
                      "voice: bridged does not take caller audio, "
                      "dropping frames");
    }

    ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_DROPPED_IN);
}


/*
 * The caller's audio while the call waits for a bridged: frames as
 * [seq u32][timestamp u64][length u16][audio], in order.  Past the bound
 * the newest are dropped and counted: the beginning of what was said is
 * kept whole.
 */

static void
ngx_http_voice_media_hold(ngx_http_voice_media_t *m,
    ngx_http_voice_twilio_event_t *ev)
{
    u_char    *p;
    uint32_t   seq;
    uint16_t   len;

    if (m->hold == NULL) {
        m->hold = ngx_palloc(m->request->pool, NGX_HTTP_VOICE_MEDIA_HOLD);
    }

    if (m->hold == NULL || ev->audio_len > 0xffff
        || m->hold_len + NGX_HTTP_VOICE_MEDIA_HOLD_HDR + ev->audio_len
           > NGX_HTTP_VOICE_MEDIA_HOLD)
    {
        m->dropped_in++;
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_DROPPED_IN);
        return;
    }

    seq = (uint32_t) ev->chunk;
    len = (uint16_t) ev->audio_len;

    p = m->hold + m->hold_len;
    p = ngx_cpymem(p, &seq, sizeof(uint32_t));
    p = ngx_cpymem(p, &ev->timestamp, sizeof(uint64_t));
    p = ngx_cpymem(p, &len, sizeof(uint16_t));
    p = ngx_cpymem(p, ev->audio, ev->audio_len);

    m->hold_len = p - m->hold;
}


/* the held audio goes to the bridged that took the call, after its
 * stream.start */

static void
ngx_http_voice_media_release(ngx_http_voice_media_t *m)
{
    u_char                         *p, *last;
    uint16_t                        len;
    uint32_t                        seq;
    ngx_uint_t                      n;
    ngx_http_voice_twilio_event_t   ev;

    if (m->hold_len == 0) {
        return;
    }

    n = 0;
    p = m->hold;
    last = m->hold + m->hold_len;

    /* the frames go out as they came: forwarding never holds again, with
     * a live peer */

    m->hold_len = 0;

    ngx_memzero(&ev, sizeof(ngx_http_voice_twilio_event_t));

    while (p + NGX_HTTP_VOICE_MEDIA_HOLD_HDR <= last) {
        ngx_memcpy(&seq, p, sizeof(uint32_t));
        ngx_memcpy(&ev.timestamp, p + 4, sizeof(uint64_t));
        ngx_memcpy(&len, p + 12, sizeof(uint16_t));
        p += NGX_HTTP_VOICE_MEDIA_HOLD_HDR;

        ev.chunk = seq;
        ev.audio = p;
        ev.audio_len = len;
        p += len;

        ngx_http_voice_media_forward(m, VOICE_PROTO_MSG_AUDIO_IN, &ev);
        n++;
    }

    ngx_log_error(NGX_LOG_INFO, m->request->connection->log, 0,
                  "voice: call %*s: %ui frames of the caller's audio held "
                  "during the wait were sent on",
                  (size_t) NGX_HTTP_VOICE_SID_LEN, m->call_sid, n);
}


static void
ngx_http_voice_media_stop(ngx_http_voice_media_t *m, const char *reason)
{
    ngx_str_t                *name;
    ngx_http_voice_worker_t  *w;
    ngx_http_voice_outcome_t  out;

    if (m->state != NGX_HTTP_VOICE_MEDIA_ST_STREAMING) {
        return;
    }

    ngx_http_voice_media_state(m, NGX_HTTP_VOICE_MEDIA_ST_STOPPED);

    /* the access log's $voice_call_status: Twilio's last word on the call
     * if it came before the stream's end (the final one mostly comes
     * after) */

    if (ngx_http_voice_outcome_get(m->call_sid, &out) == NGX_OK) {
        name = ngx_http_voice_call_status_name(out.status);
        ngx_http_voice_log_status(m->request, name->data, name->len);
    }

    w = ngx_http_voice_worker();

    if (m->peer && w
        && ngx_http_voice_media_tell_stop(m, m->peer, reason) != NGX_OK)
    {
        /* the transcript's bounded wait covers a lost stop */
        ngx_log_error(NGX_LOG_ERR, m->request->connection->log, 0,
                      "voice: cannot tell bridged that the stream stopped");
    }

    if (m->dropped_in) {
        ngx_log_error(NGX_LOG_WARN, m->request->connection->log, 0,
                      "voice: %ui caller audio frames were dropped",
                      m->dropped_in);
    }

    if (m->call) {
        ngx_http_voice_call_end(m->call);
    }
}


static ngx_int_t
ngx_http_voice_media_tell_stop(ngx_http_voice_media_t *m,
    ngx_http_voice_peer_t *peer, const char *reason)
{
    size_t                    n;
    voice_proto_writer_t      wr;
    ngx_http_voice_worker_t  *w;

    w = ngx_http_voice_worker();

    voice_proto_begin(&wr, w->frame, w->frame_size,
                      VOICE_PROTO_MSG_STREAM_STOP);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_CALL_SID, m->call_sid,
                          NGX_HTTP_VOICE_SID_LEN);
    voice_proto_put_str(&wr, VOICE_PROTO_F_REASON, reason);
    n = voice_proto_finish(&wr);

    return ngx_http_voice_bridge_send(peer, w->frame, n);
}


void
ngx_http_voice_media_on_close(ngx_http_voice_media_t *m)
{
    if (m->state == NGX_HTTP_VOICE_MEDIA_ST_CLOSED) {
        return;
    }

    /* a socket that drops without stop ends the stream all the same */
    ngx_http_voice_media_stop(m, "closed");

    if (m->ignored || m->invalid) {
        ngx_log_error(NGX_LOG_INFO, m->request->connection->log, 0,
                      "voice: media stream over: %ui Twilio messages "
                      "ignored, %ui invalid", m->ignored, m->invalid);
    }

    ngx_http_voice_media_state(m, NGX_HTTP_VOICE_MEDIA_ST_CLOSED);

    if (m->wait.timer_set) {
        ngx_del_timer(&m->wait);
    }

    if (m->defer.timer_set) {
        ngx_del_timer(&m->defer);
    }

    if (m->call) {
        ngx_http_voice_call_detach(m->call);
        m->call = NULL;
    }
}


/*
 * The assistant's audio, and the mark bridged wants after it when it
 * names one: two frames written back to back, sent with one write.
 */

static void
ngx_http_voice_media_audio(ngx_http_voice_media_t *m, voice_proto_msg_t *msg)
{
    u_char     *start, *p, hdr[VOICE_WS_OUT_HEADER];
    size_t      n, hlen, room, mark;
    ngx_int_t   rc;

    p = ngx_http_voice_media_out + VOICE_WS_OUT_HEADER;
    room = NGX_HTTP_VOICE_MEDIA_OUT - VOICE_WS_OUT_HEADER;

    n = ngx_http_voice_twilio_write_media(p, room, m->stream_sid,
                                          NGX_HTTP_VOICE_SID_LEN,
                                          msg->audio.data, msg->audio.len);
    if (n == 0) {
        ngx_log_error(NGX_LOG_ERR, m->request->connection->log, 0,
                      "voice: audio from bridged does not fit a frame");
        return;
    }

    hlen = voice_ws_frame_header(hdr, VOICE_WS_OP_TEXT, n);
    start = p - hlen;
    ngx_memcpy(start, hdr, hlen);
    p += n;
    room -= n;

    if (msg->name.len) {
        mark = ngx_http_voice_twilio_write_mark(ngx_http_voice_media_scratch,
                                                NGX_HTTP_VOICE_MEDIA_SCRATCH,
                                                m->stream_sid,
                                                NGX_HTTP_VOICE_SID_LEN,
                                                msg->name.data,
                                                msg->name.len);
        hlen = voice_ws_frame_header(hdr, VOICE_WS_OP_TEXT, mark);

        if (mark && hlen + mark <= room) {
            p = ngx_cpymem(p, hdr, hlen);
            p = ngx_cpymem(p, ngx_http_voice_media_scratch, mark);
        }
    }

    rc = ngx_http_voice_ws_send_frames(m->ws, start, p - start, 1);

    if (rc == NGX_OK) {
        m->frames_out++;
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_FRAMES_OUT);

    } else if (rc == NGX_DECLINED) {
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_DROPPED_OUT);
    }
}


void
ngx_http_voice_media_on_bridge(ngx_http_voice_media_t *m,
    voice_proto_msg_t *msg)
{
    u_char      *payload;
    size_t       n;
    ngx_uint_t   droppable;

    if (m->state != NGX_HTTP_VOICE_MEDIA_ST_STREAMING) {
        return;
    }

    /* the frame header goes in front of the payload, without a copy */
    payload = ngx_http_voice_media_out + VOICE_WS_OUT_HEADER;
    droppable = 1;

    switch (msg->type) {

    case VOICE_PROTO_MSG_AUDIO_OUT:
        ngx_http_voice_media_audio(m, msg);
        return;

    case VOICE_PROTO_MSG_MARK:
        n = ngx_http_voice_twilio_write_mark(payload,
                                NGX_HTTP_VOICE_MEDIA_OUT
                                - VOICE_WS_OUT_HEADER,
                                m->stream_sid, NGX_HTTP_VOICE_SID_LEN,
                                msg->name.data, msg->name.len);
        break;

    case VOICE_PROTO_MSG_CLEAR:
        n = ngx_http_voice_twilio_write_clear(payload,
                                NGX_HTTP_VOICE_MEDIA_OUT
                                - VOICE_WS_OUT_HEADER,
                                m->stream_sid, NGX_HTTP_VOICE_SID_LEN);
        droppable = 0;
        break;

    default: /* VOICE_PROTO_MSG_HANGUP */

        if (msg->flags & VOICE_PROTO_FLAG_FULL) {

            /* bridged is at its own limit: it is full for new calls
             * until its next pong says otherwise */

            ngx_log_error(NGX_LOG_NOTICE, m->request->connection->log, 0,
                          "voice: bridged refuses the call: %*s",
                          msg->reason.len, msg->reason.data);

            if (m->peer) {
                m->peer->full = 1;
            }

            if (ngx_http_voice_media_place_elsewhere(m)) {
                return;
            }

            if (m->call) {
                ngx_http_voice_call_ended_by(m->call, (u_char *) "bridge",
                                             6, msg->reason.data,
                                             msg->reason.len);
            }

            ngx_http_voice_media_stop(m, "refused");
            ngx_http_voice_ws_close(m->ws, VOICE_WS_CLOSE_TRY_AGAIN,
                                    "over capacity");
            return;
        }

        ngx_log_error(NGX_LOG_INFO, m->request->connection->log, 0,
                      "voice: bridged hangs up the call: %*s",
                      msg->reason.len, msg->reason.data);
        ngx_http_voice_media_stop(m, "hangup");
        ngx_http_voice_ws_close(m->ws, VOICE_WS_CLOSE_NORMAL,
                                "call ended");
        return;
    }

    if (n == 0) {
        ngx_log_error(NGX_LOG_ERR, m->request->connection->log, 0,
                      "voice: %s from bridged does not fit a frame",
                      voice_proto_type_name(msg->type));
        return;
    }

    (void) ngx_http_voice_ws_send(m->ws, VOICE_WS_OP_TEXT, payload, n,
                                  droppable);
}
