/*
 * ngx_http_voice_call.c: a worker's calls, their life cycle, and which
 * bridged carries each.
 *
 * nginx holds the call; bridged is disposable.  A call lives in the
 * worker's tree (by call SID) from its media stream's start until its
 * record is written (ngx_http_voice_transcript.c), through the states of
 * ngx_http_voice_call_state().  Its bridged is the one its SID hashes to
 * when that one is alive -- so every worker sends a call to the same
 * daemon -- and otherwise the next live one in the same ring order.
 * When a bridged stops answering (ngx_http_voice_bridge.c's heartbeat),
 * each of its calls that still has a stream is handed to
 * another live one with its settings and its conversation so far (the
 * finished entries of its record, as the HISTORY of a new stream.start);
 * with none alive the call waits, bounded, for the first that answers
 * again -- the same wait covers a worker that has not yet heard from any
 * bridged just after start.  A worker that is going (a reload's old one,
 * a graceful stop) keeps its calls up to voice_shutdown_timeout, then has
 * their bridged end them politely, through Twilio.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"


static void ngx_http_voice_call_state(ngx_http_voice_call_t *call,
    ngx_http_voice_call_state_e state);
static void ngx_http_voice_call_wait_expired(ngx_event_t *ev);
static void ngx_http_voice_call_free(ngx_http_voice_call_t *call);
static ngx_http_voice_call_t *ngx_http_voice_call_new(
    ngx_http_voice_loc_conf_t *vlcf, const u_char *sid, ngx_str_t *phone,
    uint64_t resume);
static void ngx_http_voice_call_over(ngx_http_voice_call_t *call);
static void ngx_http_voice_call_usage(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg);
static void ngx_http_voice_call_on_record(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg);
static void ngx_http_voice_call_add(ngx_http_voice_call_t *call);
static void ngx_http_voice_call_remove(ngx_http_voice_call_t *call);
static ngx_http_voice_peer_t *ngx_http_voice_call_pick_peer(
    const u_char *sid, size_t len, ngx_uint_t room);
static void ngx_http_voice_call_shutdown_expired(ngx_event_t *ev);
static void ngx_http_voice_call_note(ngx_http_voice_call_t *call,
    ngx_uint_t stage);


/* what a new session is given back, at most: the newest entries */
#define NGX_HTTP_VOICE_CALL_HISTORY_ITEMS  64
#define NGX_HTTP_VOICE_CALL_HISTORY_BYTES  (48 * 1024)

/* a record waits this long for Twilio's final status (ms), looking every
 * NGX_HTTP_VOICE_CALL_REPORT_POLL: the callback may land on any worker */
#define NGX_HTTP_VOICE_CALL_REPORT_WAIT    10000
#define NGX_HTTP_VOICE_CALL_REPORT_POLL    200


static const char *ngx_http_voice_call_state_name[] = {
    "live", "ending", "report", "writing", "done"
};


/*
 * The worker's calls (a process is one worker), by call SID: the tree is
 * set up here as ngx_rbtree_init() would (a sentinel is black: zero), so
 * it is there before any call, bridged or not.
 */

static ngx_rbtree_node_t  ngx_http_voice_call_sentinel;
static ngx_rbtree_t       ngx_http_voice_call_tree = {
    &ngx_http_voice_call_sentinel, &ngx_http_voice_call_sentinel,
    ngx_str_rbtree_insert_value
};
static ngx_uint_t         ngx_http_voice_call_n;

/* voice_shutdown_timeout, once the worker is going */
static ngx_event_t        ngx_http_voice_call_stop;


/*
 * A call begins with its media stream's start.  resume, when not 0, is
 * the start (ms since the epoch) of the record this stream continues: a
 * call back from a transfer nobody answered keeps its record.
 */

ngx_http_voice_call_t *
ngx_http_voice_call_create(ngx_http_voice_loc_conf_t *vlcf, ngx_log_t *log,
    ngx_http_voice_twilio_event_t *start, ngx_str_t *phone, uint64_t resume)
{
    ngx_http_voice_call_t  *call;

    if (ngx_http_voice_call_find(start->call_sid.data, start->call_sid.len))
    {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "voice: call %*s already has a media stream",
                      start->call_sid.len, start->call_sid.data);
        return NULL;
    }

    call = ngx_http_voice_call_new(vlcf, start->call_sid.data, phone, resume);
    if (call == NULL) {
        return NULL;
    }

    ngx_memcpy(call->stream_sid, start->stream_sid.data,
               NGX_HTTP_VOICE_SID_LEN);

    /* the worker of the stream writes the record, whatever Twilio reports
     * to which worker */
    ngx_http_voice_outcome_streamed(call->call_sid);

    return call;
}


/*
 * A call that never connected (busy, no answer, failed, canceled) still
 * gets a record, empty, with what Twilio reported: the worker its final
 * status callback reached writes it (ngx_http_voice_outcome.c says which).
 */

ngx_int_t
ngx_http_voice_call_unconnected(ngx_http_voice_loc_conf_t *vlcf,
    const u_char *sid, ngx_str_t *phone, ngx_str_t *ours,
    ngx_uint_t outbound)
{
    ngx_str_t              *status;
    ngx_http_voice_call_t  *call;

    if (ngx_http_voice_call_find(sid, NGX_HTTP_VOICE_SID_LEN)) {
        return NGX_DECLINED;
    }

    call = ngx_http_voice_call_new(vlcf, sid, phone, 0);
    if (call == NULL) {
        return NGX_ERROR;
    }

    call->outbound = outbound;
    call->ours.data = ngx_pstrdup(call->pool, ours);
    call->ours.len = call->ours.data ? ours->len : 0;

    if (ngx_http_voice_outcome_get(sid, &call->outcome) == NGX_OK) {
        call->reported = 1;
        status = ngx_http_voice_call_status_name(call->outcome.status);
        ngx_http_voice_call_ended_by(call, (u_char *) "twilio", 6,
                                     status->data, status->len);
    }

    ngx_http_voice_call_state(call, NGX_HTTP_VOICE_CALL_ST_WRITING);

    return NGX_OK;
}


static ngx_http_voice_call_t *
ngx_http_voice_call_new(ngx_http_voice_loc_conf_t *vlcf, const u_char *sid,
    ngx_str_t *phone, uint64_t resume)
{
    size_t                  i, n;
    ngx_log_t              *clog;
    ngx_pool_t             *pool;
    ngx_http_voice_call_t  *call;

    pool = ngx_create_pool(2048, ngx_cycle->log);
    if (pool == NULL) {
        return NULL;
    }

    call = ngx_pcalloc(pool, sizeof(ngx_http_voice_call_t));
    clog = ngx_palloc(pool, sizeof(ngx_log_t));

    if (call == NULL || clog == NULL) {
        goto failed;
    }

    /* the call outlives the WebSocket, so it logs through its own copy of
     * the cycle's log */
    *clog = *ngx_cycle->log;
    pool->log = clog;

    call->pool = pool;
    call->log = clog;
    call->vlcf = vlcf;
    call->state = NGX_HTTP_VOICE_CALL_ST_LIVE;
    call->start = ngx_http_voice_now_ms();

    /* a record of the last day, not of the future */

    if (resume && resume <= call->start
        && call->start - resume < 24 * 3600 * 1000)
    {
        call->start = resume;
        call->continued = 1;
    }

    ngx_memcpy(call->call_sid, sid, NGX_HTTP_VOICE_SID_LEN);

    /* the phone number goes into a file name: keep it to [A-Za-z0-9+] */
    n = 0;
    for (i = 0; i < phone->len && n < NGX_HTTP_VOICE_PHONE_MAX; i++) {
        u_char  ch = phone->data[i];

        call->phone[n++] = ((ch >= '0' && ch <= '9') || ch == '+'
                            || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z'))
                           ? ch : '-';
    }

    if (n == 0) {
        n = ngx_cpystrn(call->phone, (u_char *) "unknown", 8) - call->phone;
    }

    call->phone[n] = '\0';

    call->wait.handler = ngx_http_voice_call_wait_expired;
    call->wait.data = call;
    call->wait.log = clog;

    if (ngx_http_voice_transcript_open(call) != NGX_OK) {
        goto failed;
    }

    ngx_http_voice_call_add(call);

    return call;

failed:

    ngx_destroy_pool(pool);
    return NULL;
}


/*
 * The one transition function of a call's life:
 *
 *     LIVE     its stream runs
 *     ENDING   the stream is over; the last entries arrive after Twilio's
 *              stop, so bridged's call.done is awaited, but not forever
 *              (voice_transcript_wait)
 *     REPORT   a call Twilio reports on waits for its final status (and
 *              duration), at most NGX_HTTP_VOICE_CALL_REPORT_WAIT
 *     WRITING  its record is written (ngx_http_voice_transcript.c)
 *     DONE     the record is on disk, or given up; the call is freed
 *              once its stream is gone too, whichever comes last
 */

static void
ngx_http_voice_call_state(ngx_http_voice_call_t *call,
    ngx_http_voice_call_state_e state)
{
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, call->log, 0,
                   "voice call %s: %s -> %s", call->call_sid,
                   ngx_http_voice_call_state_name[call->state],
                   ngx_http_voice_call_state_name[state]);

    /* what GET /api/calls shows, in every worker: it is ending */
    if (call->state == NGX_HTTP_VOICE_CALL_ST_LIVE && call->admitted) {
        ngx_http_voice_call_note(call, NGX_HTTP_VOICE_STAGE_ENDING);
    }

    call->state = state;

    if (state != NGX_HTTP_VOICE_CALL_ST_LIVE) {
        ngx_http_voice_metrics_call_active(call, 0);
    }

    switch (state) {

    case NGX_HTTP_VOICE_CALL_ST_ENDING:
        ngx_add_timer(&call->wait, call->vlcf->transcript_wait);
        return;

    case NGX_HTTP_VOICE_CALL_ST_REPORT:
        call->report_since = ngx_current_msec;
        ngx_add_timer(&call->wait, NGX_HTTP_VOICE_CALL_REPORT_POLL);
        return;

    case NGX_HTTP_VOICE_CALL_ST_WRITING:
        if (call->wait.timer_set) {
            ngx_del_timer(&call->wait);
        }

        /* once per call: a record another stream goes on with is not
         * final yet */
        if (!call->hurried) {
            call->hurried = 1;
            ngx_http_voice_metrics_call_over(call);
        }

        ngx_http_voice_transcript_write(call);
        return;

    case NGX_HTTP_VOICE_CALL_ST_DONE:
        if (call->wait.timer_set) {
            ngx_del_timer(&call->wait);
        }

        ngx_http_voice_transcript_close(call);

        if (call->media == NULL) {
            ngx_http_voice_call_free(call);
        }

        return;

    default: /* NGX_HTTP_VOICE_CALL_ST_LIVE */
        return;
    }
}


/*
 * The call's stream has started and the call holds its slot of the
 * shared zone: every worker may now see it (GET /api/calls) and find its
 * journal (the live stream, ngx_http_voice_live.c).
 */

void
ngx_http_voice_call_announce(ngx_http_voice_call_t *call)
{
    if (call->admitted) {
        ngx_http_voice_call_note(call, NGX_HTTP_VOICE_STAGE_LIVE);
    }
}


static void
ngx_http_voice_call_note(ngx_http_voice_call_t *call, ngx_uint_t stage)
{
    ngx_http_voice_zone_info_t  info;

    ngx_memcpy(info.sid, call->call_sid, NGX_HTTP_VOICE_SID_LEN);
    info.stage = stage;
    info.outbound = call->outbound;
    info.start = call->start;
    info.number_len = ngx_strlen(call->phone);
    ngx_memcpy(info.number, call->phone, info.number_len);

    /* the zone makes its record's name of these: {sid}_{phone}_{start} */
    info.name_len = 0;

    ngx_http_voice_zone_call_note(&info);
}


/* the call's stream is over */

void
ngx_http_voice_call_end(ngx_http_voice_call_t *call)
{
    if (call->state != NGX_HTTP_VOICE_CALL_ST_LIVE) {
        return;
    }

    if (call->bridge_done || call->peer == NULL) {
        ngx_http_voice_call_over(call);
        return;
    }

    ngx_http_voice_call_state(call, NGX_HTTP_VOICE_CALL_ST_ENDING);
}


/* another stream of the call came (back from a transfer nobody took):
 * the record is written now, to go on in the same file */

void
ngx_http_voice_call_hurry(ngx_http_voice_call_t *call)
{
    if (call->state == NGX_HTTP_VOICE_CALL_ST_REPORT) {
        call->hurried = 1;
        ngx_http_voice_call_state(call, NGX_HTTP_VOICE_CALL_ST_WRITING);
    }
}


/*
 * Every entry is in: the record is written, once Twilio's final status
 * is in too, for a call Twilio reports on (one whose number has no status
 * callback never gets one: it does not wait).  A worker that exits does
 * not wait either.
 */

static void
ngx_http_voice_call_over(ngx_http_voice_call_t *call)
{
    if (ngx_http_voice_outcome_get(call->call_sid, &call->outcome) == NGX_OK)
    {
        call->reported = 1;

        if (!call->outcome.final && !ngx_exiting) {
            ngx_http_voice_call_state(call, NGX_HTTP_VOICE_CALL_ST_REPORT);
            return;
        }
    }

    ngx_http_voice_call_state(call, NGX_HTTP_VOICE_CALL_ST_WRITING);
}


static void
ngx_http_voice_call_wait_expired(ngx_event_t *ev)
{
    ngx_http_voice_call_t  *call;

    call = ev->data;

    if (call->state == NGX_HTTP_VOICE_CALL_ST_REPORT) {

        if (ngx_http_voice_outcome_get(call->call_sid, &call->outcome)
            == NGX_OK
            && !call->outcome.final
            && ngx_current_msec - call->report_since
               < NGX_HTTP_VOICE_CALL_REPORT_WAIT
            && !ngx_exiting)
        {
            ngx_add_timer(&call->wait, NGX_HTTP_VOICE_CALL_REPORT_POLL);
            return;
        }

        if (!call->outcome.final) {
            ngx_log_error(NGX_LOG_INFO, call->log, 0,
                          "voice: call %s: no final status from Twilio "
                          "within %d ms, writing the record without it",
                          call->call_sid, NGX_HTTP_VOICE_CALL_REPORT_WAIT);
        }

        ngx_http_voice_call_state(call, NGX_HTTP_VOICE_CALL_ST_WRITING);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, call->log, 0,
                  "voice: call %s: bridged did not finish the transcript "
                  "within %M ms, writing what arrived", call->call_sid,
                  call->vlcf->transcript_wait);

    ngx_http_voice_call_over(call);
}


/* the record is on disk, or given up (ngx_http_voice_transcript.c) */

void
ngx_http_voice_call_written(ngx_http_voice_call_t *call)
{
    if (call->state != NGX_HTTP_VOICE_CALL_ST_DONE) {
        ngx_http_voice_call_state(call, NGX_HTTP_VOICE_CALL_ST_DONE);
    }
}


/* the call's stream is gone: the call goes too once its record is done */

void
ngx_http_voice_call_detach(ngx_http_voice_call_t *call)
{
    call->media = NULL;

    if (call->state == NGX_HTTP_VOICE_CALL_ST_DONE
        && call->io != NGX_HTTP_VOICE_CALL_IO_TASK)
    {
        ngx_http_voice_call_free(call);
    }
}


static void
ngx_http_voice_call_free(ngx_http_voice_call_t *call)
{
    /* the call no longer counts (voice_max_calls) */
    if (call->admitted) {
        ngx_http_voice_zone_call_end(call->call_sid);
    }

    ngx_http_voice_metrics_call_active(call, 0);
    ngx_http_voice_call_remove(call);
    ngx_destroy_pool(call->pool);
}


/*
 * A response's tokens, summed for the record (a call outlives its
 * sessions and its bridged, so nginx keeps the sum), and the models its
 * session uses: the first named stay.  A model's name goes into the file
 * escaped.
 */

static void
ngx_http_voice_call_usage(ngx_http_voice_call_t *call, voice_proto_msg_t *msg)
{
    ngx_str_t  name;

    call->tokens[0] += msg->in_text;
    call->tokens[1] += msg->in_audio;
    call->tokens[2] += msg->in_cached;
    call->tokens[3] += msg->out_text;
    call->tokens[4] += msg->out_audio;

    if (call->model.len == 0 && msg->model.len) {
        name.data = (u_char *) msg->model.data;
        name.len = msg->model.len;
        call->model.data = ngx_pstrdup(call->pool, &name);
        call->model.len = call->model.data ? name.len : 0;
    }

    if (call->transcribe_model.len == 0 && msg->transcribe_model.len) {
        name.data = (u_char *) msg->transcribe_model.data;
        name.len = msg->transcribe_model.len;
        call->transcribe_model.data = ngx_pstrdup(call->pool, &name);
        call->transcribe_model.len = call->transcribe_model.data ? name.len
                                                                 : 0;
    }
}


/*
 * A message of bridged's about one call (the channel, ngx_http_voice_
 * bridge.c, has decoded it): to the call's media session when it is for
 * Twilio, to its record otherwise.  This is the path of every frame of
 * the assistant's audio: one lookup, then the session.
 */

void
ngx_http_voice_call_on_bridge(ngx_http_voice_peer_t *peer,
    voice_proto_msg_t *msg)
{
    ngx_http_voice_call_t  *call;

    call = ngx_http_voice_call_find(msg->call_sid.data, msg->call_sid.len);
    if (call == NULL) {
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_EVENTS_IGNORED);
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "voice bridge: %s for unknown call \"%*s\"",
                       voice_proto_type_name(msg->type),
                       msg->call_sid.len, msg->call_sid.data);
        return;
    }

    /* a call handed to another bridged: the one it left may still talk
     * (it was only slow), but no longer for it */

    if (call->peer != peer) {
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_EVENTS_IGNORED);
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "voice bridge: %s for call \"%*s\" from a bridged "
                       "that no longer has it",
                       voice_proto_type_name(msg->type),
                       msg->call_sid.len, msg->call_sid.data);
        return;
    }

    switch (msg->type) {

    case VOICE_PROTO_MSG_AUDIO_OUT:
    case VOICE_PROTO_MSG_MARK:
    case VOICE_PROTO_MSG_CLEAR:
    case VOICE_PROTO_MSG_HANGUP:
        if (call->media) {
            ngx_http_voice_media_on_bridge(call->media, msg);
        }
        return;

    case VOICE_PROTO_MSG_TRANSCRIPT:
    case VOICE_PROTO_MSG_CALL_DONE:
    case VOICE_PROTO_MSG_USAGE:
        ngx_http_voice_call_on_record(call, msg);
        return;

    default:
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "voice bridge: unexpected %s from \"%V\"",
                      voice_proto_type_name(msg->type), &peer->endpoint);
        return;
    }
}


/*
 * What bridged says of the call's record: an entry, its tokens, or
 * call.done (no more entries will come, with the answering machine
 * verdict and who ended the call).
 */

static void
ngx_http_voice_call_on_record(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg)
{
    if (msg->type == VOICE_PROTO_MSG_TRANSCRIPT) {

        if (call->state >= NGX_HTTP_VOICE_CALL_ST_WRITING) {
            ngx_log_error(NGX_LOG_WARN, call->log, 0,
                          "voice: call %s: utterance after the transcript "
                          "was closed, not stored", call->call_sid);
            return;
        }

        ngx_http_voice_transcript_add(call, msg);
        return;
    }

    if (msg->type == VOICE_PROTO_MSG_USAGE) {
        ngx_http_voice_call_usage(call, msg);
        return;
    }

    /* VOICE_PROTO_MSG_CALL_DONE */

    call->bridge_done = 1;

    /* a plain word, checked: it goes into the file unescaped */
    if (msg->answered_by.len
        && msg->answered_by.len < sizeof(call->answered_by)
        && ngx_strlchr((u_char *) msg->answered_by.data,
                       (u_char *) msg->answered_by.data
                       + msg->answered_by.len, '"') == NULL
        && ngx_strlchr((u_char *) msg->answered_by.data,
                       (u_char *) msg->answered_by.data
                       + msg->answered_by.len, '\\') == NULL)
    {
        ngx_memcpy(call->answered_by, msg->answered_by.data,
                   msg->answered_by.len);
        call->answered_by[msg->answered_by.len] = '\0';
    }

    if (msg->ended_by.len) {
        ngx_http_voice_call_ended_by(call, msg->ended_by.data,
                                     msg->ended_by.len, msg->reason.data,
                                     msg->reason.len);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, call->log, 0,
                   "voice call %s: bridged is done, %uD utterances",
                   call->call_sid, msg->count);

    if (call->state == NGX_HTTP_VOICE_CALL_ST_ENDING) {
        if (call->wait.timer_set) {
            ngx_del_timer(&call->wait);
        }

        ngx_http_voice_call_over(call);
    }
}


/* who ended the call and why, for the record; the first word stays */

void
ngx_http_voice_call_ended_by(ngx_http_voice_call_t *call, const u_char *by,
    size_t by_len, const u_char *reason, size_t len)
{
    size_t  i;

    if (call->ended_by[0] != '\0') {
        return;
    }

    /* a plain word (caller, assistant, transfer, api, bridge): it goes
     * into the file unescaped */

    if (by_len == 0 || by_len >= sizeof(call->ended_by)) {
        return;
    }

    for (i = 0; i < by_len; i++) {
        if (by[i] < 'a' || by[i] > 'z') {
            return;
        }
    }

    ngx_memcpy(call->ended_by, by, by_len);
    call->ended_by[by_len] = '\0';

    len = ngx_min(len, 256);

    call->end_reason.data = ngx_pnalloc(call->pool, len);
    if (call->end_reason.data == NULL) {
        return;
    }

    ngx_memcpy(call->end_reason.data, reason, len);
    call->end_reason.len = len;
}


ngx_http_voice_call_t *
ngx_http_voice_call_find(const u_char *sid, size_t len)
{
    ngx_str_t        name;
    ngx_str_node_t  *node;

    if (len == 0) {
        return NULL;
    }

    name.data = (u_char *) sid;
    name.len = len;

    node = ngx_str_rbtree_lookup(&ngx_http_voice_call_tree, &name,
                                 ngx_crc32_short(name.data, name.len));

    return (ngx_http_voice_call_t *) node;
}


/* how many calls this worker holds (voice_status) */

ngx_uint_t
ngx_http_voice_call_count(void)
{
    return ngx_http_voice_call_n;
}


static void
ngx_http_voice_call_add(ngx_http_voice_call_t *call)
{
    call->node.str.data = call->call_sid;
    call->node.str.len = ngx_strlen(call->call_sid);
    call->node.node.key = ngx_crc32_short(call->node.str.data,
                                          call->node.str.len);

    ngx_rbtree_insert(&ngx_http_voice_call_tree, &call->node.node);
    ngx_http_voice_call_n++;
}


static void
ngx_http_voice_call_remove(ngx_http_voice_call_t *call)
{
    ngx_rbtree_delete(&ngx_http_voice_call_tree, &call->node.node);
    ngx_http_voice_call_n--;
}


/*
 * The live bridged for a call SID: its owner by the stable hash, or the
 * next live one after it, so that the calls of a dead daemon spread the
 * same way in every worker.  NULL when none is alive.
 */

ngx_http_voice_peer_t *
ngx_http_voice_call_pick(const u_char *sid, size_t len)
{
    return ngx_http_voice_call_pick_peer(sid, len, 0);
}


/*
 * The bridged a call's stream goes to: as ngx_http_voice_call_pick(), but
 * past the live ones that are full (at their --max-calls), so that a call
 * whose owner is full goes to one with room rather than being refused.
 * When every live one is full, the owner: it refuses the call, and the
 * caller hears the fallback message.  NULL when none is alive.
 */

ngx_http_voice_peer_t *
ngx_http_voice_call_place(const u_char *sid, size_t len)
{
    ngx_http_voice_peer_t  *peer;

    peer = ngx_http_voice_call_pick_peer(sid, len, 1);

    return peer ? peer : ngx_http_voice_call_pick_peer(sid, len, 0);
}


static ngx_http_voice_peer_t *
ngx_http_voice_call_pick_peer(const u_char *sid, size_t len,
    ngx_uint_t room)
{
    ngx_uint_t                i, first;
    ngx_http_voice_peer_t    *peer;
    ngx_http_voice_worker_t  *w;

    w = ngx_http_voice_worker();
    if (w == NULL || w->npeers == 0) {
        return NULL;
    }

    first = voice_proto_hash(sid, len) % w->npeers;

    for (i = 0; i < w->npeers; i++) {
        peer = &w->peers[(first + i) % w->npeers];

        if (peer->state == NGX_HTTP_VOICE_PEER_ST_UP
            && !(room && peer->full))
        {
            return peer;
        }
    }

    return NULL;
}


/*
 * The bridged that carries a call as far as this worker can tell: the
 * one its stream went to when the stream is here, else the pick above
 * (a REST request or a status callback may land on any worker).
 */

ngx_http_voice_peer_t *
ngx_http_voice_call_peer_of(const u_char *sid, size_t len)
{
    ngx_http_voice_call_t  *call;

    call = ngx_http_voice_call_find(sid, len);

    if (call != NULL && call->peer != NULL
        && call->peer->state == NGX_HTTP_VOICE_PEER_ST_UP)
    {
        return call->peer;
    }

    return ngx_http_voice_call_pick(sid, len);
}


/*
 * A bridged went down (down says how, for the call's record) or answers
 * again (down is NULL): the calls it carried, or every call waiting for
 * one, go to a live bridged.  The
 * tree is walked to a list first, since a hand-over may end a call.
 */

void
ngx_http_voice_call_peer_changed(ngx_http_voice_peer_t *peer,
    const char *down)
{
    ngx_uint_t              i, n;
    ngx_rbtree_node_t      *node, *root, *sentinel;
    ngx_http_voice_call_t  *call, **list;

    if (ngx_http_voice_call_n == 0) {
        return;
    }

    list = ngx_alloc(ngx_http_voice_call_n * sizeof(ngx_http_voice_call_t *),
                     ngx_cycle->log);
    if (list == NULL) {
        return;
    }

    n = 0;
    root = ngx_http_voice_call_tree.root;
    sentinel = ngx_http_voice_call_tree.sentinel;

    if (root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node != NULL && n < ngx_http_voice_call_n;
             node = ngx_rbtree_next(&ngx_http_voice_call_tree, node))
        {
            call = (ngx_http_voice_call_t *) node;

            /* a call its bridged is done with (it ended it, and stops)
             * is not given to another */

            if (call->media == NULL || call->bridge_done) {
                continue;
            }

            if ((down && call->peer == peer) || (!down && call->peer == NULL))
            {
                list[n++] = call;
            }
        }
    }

    for (i = 0; i < n; i++) {
        call = list[i];

        if (call->media != NULL) {
            ngx_http_voice_media_hand_over(call->media, down);
        }
    }

    ngx_free(list);
}


static uint32_t
ngx_http_voice_call_max_order(ngx_http_voice_call_t *call)
{
    uint32_t                     max;
    ngx_uint_t                   i;
    ngx_http_voice_utterance_t  *u;

    u = call->utterances.elts;
    max = 0;

    for (i = 0; i < call->utterances.nelts; i++) {
        max = ngx_max(max, u[i].order);
    }

    return max;
}


/*
 * The conversation so far, for the bridged that takes a call over:
 *
 *     {"dropped":N,"items":[{"order":7,"role":"user","text":"..."}, ...]}
 *
 * the newest entries, in conversation order, within the bounds above (a
 * tool's entry folded into one text, "name(arguments) returned: output";
 * of a reply the caller cut off, what was heard; notes left out: they are
 * about the call, not what was said).  *next is
 * the order after the last entry bridged sent, so that the new bridged's
 * entries sort after the old one's.
 */

ngx_int_t
ngx_http_voice_call_history(ngx_http_voice_call_t *call, ngx_pool_t *pool,
    ngx_str_t *out, uint32_t *next)
{
    u_char                      *p;
    size_t                       size, bytes, one;
    ngx_uint_t                   i, j, n, kept, *idx, t;
    ngx_http_voice_utterance_t  *u;

    u = call->utterances.elts;
    n = call->utterances.nelts;

    *next = (n ? ngx_http_voice_call_max_order(call) : 0) + 1;

    idx = ngx_palloc(pool, (n + 1) * sizeof(ngx_uint_t));
    if (idx == NULL) {
        return NGX_ERROR;
    }

    /* by order: a caller's transcript arrives after the reply to it */

    kept = 0;

    for (i = 0; i < n; i++) {

        /* a reply cut off before a word played said nothing */
        if (u[i].role == VOICE_PROTO_ROLE_NOTE || u[i].text.len == 0) {
            continue;
        }

        for (j = kept; j > 0 && u[idx[j - 1]].order > u[i].order; j--) {
            idx[j] = idx[j - 1];
        }

        idx[j] = i;
        kept++;
    }

    /* the newest that fit */

    bytes = 0;

    for (j = kept; j > 0 && kept - j < NGX_HTTP_VOICE_CALL_HISTORY_ITEMS;
         j--)
    {
        t = idx[j - 1];
        one = u[t].text.len + u[t].name.len + u[t].arguments.len;

        if (bytes + one > NGX_HTTP_VOICE_CALL_HISTORY_BYTES) {
            break;
        }

        bytes += one;
    }

    size = sizeof("{\"dropped\":,\"items\":[]}") + NGX_INT_T_LEN;

    for (i = j; i < kept; i++) {
        t = idx[i];
        size += sizeof("{\"order\":,\"role\":\"assistant\",\"text\":\"\"},")
                + NGX_INT_T_LEN + sizeof("() returned: ")
                + 2 * (u[t].text.len + u[t].name.len + u[t].arguments.len)
                + ngx_escape_json(NULL, u[t].text.data, u[t].text.len)
                + ngx_escape_json(NULL, u[t].name.data, u[t].name.len)
                + ngx_escape_json(NULL, u[t].arguments.data,
                                  u[t].arguments.len);
    }

    out->data = ngx_pnalloc(pool, size);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(out->data, "{\"dropped\":%ui,\"items\":[", j);

    for (i = j; i < kept; i++) {
        t = idx[i];

        p = ngx_sprintf(p, "%s{\"order\":%uD,\"role\":\"%s\",\"text\":\"",
                        i > j ? "," : "", u[t].order,
                        u[t].role == VOICE_PROTO_ROLE_USER ? "user"
                        : u[t].role == VOICE_PROTO_ROLE_ASSISTANT ? "assistant"
                        : u[t].role == VOICE_PROTO_ROLE_TOOL ? "tool"
                        : "dtmf");

        if (u[t].role == VOICE_PROTO_ROLE_TOOL) {
            p = (u_char *) ngx_escape_json(p, u[t].name.data, u[t].name.len);
            *p++ = '(';
            p = (u_char *) ngx_escape_json(p, u[t].arguments.data,
                                           u[t].arguments.len);
            p = ngx_cpymem(p, ") returned: ", sizeof(") returned: ") - 1);
        }

        p = (u_char *) ngx_escape_json(p, u[t].text.data, u[t].text.len);
        p = ngx_cpymem(p, "\"}", 2);
    }

    p = ngx_cpymem(p, "]}", 2);

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * Called by the heartbeat while the worker exits: once, it starts the
 * wait for its live calls; they end by themselves, or are ended when it
 * is over.  The timer is cancelable: it never holds the worker back.
 */

void
ngx_http_voice_call_shutdown(ngx_http_voice_main_conf_t *vmcf)
{
    ngx_event_t  *ev;

    ev = &ngx_http_voice_call_stop;

    if (ev->handler != NULL) {
        return;
    }

    ev->handler = ngx_http_voice_call_shutdown_expired;
    ev->data = vmcf;
    ev->log = ngx_cycle->log;
    ev->cancelable = 1;

    if (ngx_http_voice_call_n) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "voice: %ui live calls go on, for %M ms at most",
                      ngx_http_voice_call_n, vmcf->shutdown_timeout);
    }

    ngx_add_timer(ev, vmcf->shutdown_timeout);
}


static void
ngx_http_voice_call_shutdown_expired(ngx_event_t *ev)
{
    size_t                    n;
    ngx_uint_t                ended;
    ngx_rbtree_node_t        *node, *root, *sentinel;
    voice_proto_writer_t      wr;
    ngx_http_voice_call_t    *call;
    ngx_http_voice_worker_t  *w;

    w = ngx_http_voice_worker();
    if (w == NULL || ngx_http_voice_call_n == 0) {
        return;
    }

    ended = 0;
    root = ngx_http_voice_call_tree.root;
    sentinel = ngx_http_voice_call_tree.sentinel;

    if (root == sentinel) {
        return;
    }

    /* only messages are sent here: the tree does not change under us */

    for (node = ngx_rbtree_min(root, sentinel);
         node != NULL;
         node = ngx_rbtree_next(&ngx_http_voice_call_tree, node))
    {
        call = (ngx_http_voice_call_t *) node;

        if (call->media == NULL || call->peer == NULL) {
            continue;
        }

        voice_proto_begin(&wr, w->frame, w->frame_size,
                          VOICE_PROTO_MSG_CALL_EVENT);
        voice_proto_put_bytes(&wr, VOICE_PROTO_F_CALL_SID, call->call_sid,
                              NGX_HTTP_VOICE_SID_LEN);
        voice_proto_put_str(&wr, VOICE_PROTO_F_NAME, "end");
        voice_proto_put_str(&wr, VOICE_PROTO_F_TEXT, "the server stops");
        n = voice_proto_finish(&wr);

        if (n && ngx_http_voice_bridge_send(call->peer, w->frame, n)
                 == NGX_OK)
        {
            ended++;
        }
    }

    ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                  "voice: the server stops: %ui live calls are ended",
                  ended);
}
