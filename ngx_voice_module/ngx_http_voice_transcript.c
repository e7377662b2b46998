/*
 * ngx_http_voice_transcript.c: transcript storage, and the
 * /api/transcript/{callSid} lookup.
 *
 * A call's record starts with its media stream (ngx_http_voice_media.c)
 * and lives in the per-worker call tree (ngx_http_voice_bridge.c) until its
 * file is on disk.  Its journal (TRANSCRIPT_DIR/.{name}.journal) is
 * created as the stream starts, with a header line (the call, its
 * context), and held locked while the call lives; each utterance bridged
 * publishes is kept in memory and appended to it at once.  When the
 * stream is over and bridged says no more utterances will come
 * (call.done) -- or after a bounded wait, voice_transcript_wait, if it
 * never does -- the utterances are sorted into conversation order and
 * written to TRANSCRIPT_DIR/{callSid}_{phone}_{start}.json atomically.
 * Then the journal goes.  A journal whose process died is made into an
 * incomplete record by ngx_http_voice_recover.c.
 *
 * Every file operation runs on nginx's thread pool, never in the event
 * loop (ngx_http_voice_store.c).  A call has one reusable task and at most
 * one operation in flight, so its appends and its final write reach the
 * disk in order; the thread only touches a buffer the event loop rendered
 * for it and handed over.
 *
 * When storage fails (full, read-only, removed), the call goes on: the
 * failure is logged once per call and counted, the entries wait in memory
 * (bounded, as ever), and the operation is tried again, backing off from
 * 500 ms to 8 s; a journal that was removed is made again with every
 * entry.  A finished record waits at most voice_transcript_retry for its
 * file; past that it is given up (logged, counted) and its journal, which
 * keeps what was journaled, is recovered at the next start.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <dirent.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_json.h"
#include "ngx_http_voice_transcript_fmt.h"


#define NGX_HTTP_VOICE_TRANSCRIPT_MAX_UTTERANCES   10000
#define NGX_HTTP_VOICE_TRANSCRIPT_MAX_TEXT         (4 * 1024 * 1024)
#define NGX_HTTP_VOICE_TRANSCRIPT_MAX_FILE  NGX_HTTP_VOICE_STORE_MAX_RECORD

/* storage failed: the next try after 500 ms, then twice as long, to 8 s */
#define NGX_HTTP_VOICE_TRANSCRIPT_BACKOFF_MIN       500
#define NGX_HTTP_VOICE_TRANSCRIPT_BACKOFF_MAX       8000


/* a call's file operations, one at a time */
typedef enum {
    NGX_HTTP_VOICE_TRANSCRIPT_CREATE = 0,     /* the journal: header and
                                                 every entry so far */
    NGX_HTTP_VOICE_TRANSCRIPT_APPEND,         /* the entries since */
    NGX_HTTP_VOICE_TRANSCRIPT_FINAL           /* the record */
} ngx_http_voice_transcript_op_e;


/* what one thread-pool operation of a call writes */
typedef struct {
    ngx_http_voice_call_t      *call;
    u_char                     *data;         /* ngx_alloc()ed */
    size_t                      len;
    ngx_uint_t                  upto;         /* utterances covered */
    ngx_http_voice_transcript_op_e  op;

    /* results, set by the thread */
    ngx_int_t                   rc;
    ngx_http_voice_store_err_t  e;
    unsigned                    in_the_way:1; /* an earlier journal of the
                                                 record was recovered */
    ngx_http_voice_recover_result_t  recovered;
} ngx_http_voice_transcript_io_t;


/* the state a call keeps for its file operations */
struct ngx_http_voice_transcript_files_s {
    ngx_thread_task_t          *task;
    ngx_thread_pool_t          *pool;
    u_char                     *final;        /* NUL-terminated paths */
    u_char                     *tmp;
    u_char                     *journal;
    u_char                     *dir;

    ngx_fd_t                    lock;         /* holds the journal, or -1:
                                                 the thread's while busy */
    ngx_uint_t                  dirty;        /* a torn line is not cut */
    ngx_event_t                 open;         /* posted at the start */
    ngx_event_t                 retry;        /* storage failed: again */
    ngx_event_t                 hold;         /* while a task is in flight:
                                                 an exiting worker waits */
    ngx_msec_t                  backoff;
    ngx_msec_t                  final_since;  /* the first failed write */

    unsigned                    bridge_done:1;
    unsigned                    create:1;     /* no journal of ours yet */
    unsigned                    final_failed:1;
    unsigned                    failed_logged:1;
    unsigned                    works_logged:1;
};


/* a transcript lookup, allocated apart from the request: the request may
 * go away while the thread reads */
typedef struct {
    ngx_http_request_t         *request;      /* NULL once it is gone */
    u_char                      sid[NGX_HTTP_VOICE_SID_LEN + 1];
    u_char                     *dir;          /* NUL-terminated */
    unsigned                    text:1;

    u_char                     *data;         /* malloc()ed by the thread */
    size_t                      len;
    ngx_uint_t                  status;
    ngx_err_t                   err;
} ngx_http_voice_transcript_lookup_t;


static const char *ngx_http_voice_transcript_state_name[] = {
    "live", "ending", "writing", "done"
};


static void ngx_http_voice_transcript_state(ngx_http_voice_call_t *call,
    ngx_http_voice_call_state_e state);
static ngx_http_voice_transcript_files_t *ngx_http_voice_transcript_files(
    ngx_http_voice_call_t *call);
static void ngx_http_voice_transcript_add(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg);
static void ngx_http_voice_transcript_wait_handler(ngx_event_t *ev);
static void ngx_http_voice_transcript_again(ngx_event_t *ev);
static void ngx_http_voice_transcript_hold(ngx_event_t *ev);
static void ngx_http_voice_transcript_finish(ngx_http_voice_call_t *call);
static void ngx_http_voice_transcript_schedule(ngx_http_voice_call_t *call);
static u_char *ngx_http_voice_transcript_render(ngx_http_voice_call_t *call,
    ngx_uint_t from, ngx_uint_t to, ngx_http_voice_transcript_op_e op,
    size_t *len);
static ngx_int_t ngx_http_voice_transcript_cmp(const void *a, const void *b);
static void ngx_http_voice_transcript_io_thread(void *data, ngx_log_t *log);
static void ngx_http_voice_transcript_io_done(ngx_event_t *ev);
static void ngx_http_voice_transcript_io_failed(ngx_http_voice_call_t *call,
    ngx_http_voice_transcript_io_t *io);
static void ngx_http_voice_transcript_destroy(ngx_http_voice_call_t *call);
static void ngx_http_voice_transcript_lookup_thread(void *data,
    ngx_log_t *log);
static void ngx_http_voice_transcript_lookup_done(ngx_event_t *ev);
static void ngx_http_voice_transcript_lookup_cleanup(void *data);


/*
 * resume, when not 0, is the start (ms since the epoch) of the record this
 * stream continues: a call back from a transfer nobody answered keeps its
 * record, so the file has the same name and the earlier entries are kept
 * in it when it is written again.
 */

ngx_http_voice_call_t *
ngx_http_voice_transcript_start(ngx_http_voice_loc_conf_t *vlcf,
    ngx_log_t *log, ngx_http_voice_twilio_event_t *start, ngx_str_t *phone,
    uint64_t resume)
{
    u_char                             *p, stamp[32];
    size_t                              i, n, dlen;
    ngx_log_t                          *clog;
    ngx_pool_t                         *pool;
    ngx_http_voice_call_t              *call;
    ngx_http_voice_transcript_io_t     *io;
    ngx_http_voice_transcript_files_t  *files;

    if (ngx_http_voice_call_find(start->call_sid.data,
                                        start->call_sid.len))
    {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "voice: call %*s already has a media stream",
                      start->call_sid.len, start->call_sid.data);
        return NULL;
    }

    pool = ngx_create_pool(2048, ngx_cycle->log);
    if (pool == NULL) {
        return NULL;
    }

    call = ngx_pcalloc(pool, sizeof(ngx_http_voice_call_t));
    files = ngx_pcalloc(pool, sizeof(ngx_http_voice_transcript_files_t));
    clog = ngx_palloc(pool, sizeof(ngx_log_t));

    if (call == NULL || files == NULL || clog == NULL) {
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

    ngx_memcpy(call->call_sid, start->call_sid.data, NGX_HTTP_VOICE_SID_LEN);
    ngx_memcpy(call->stream_sid, start->stream_sid.data,
               NGX_HTTP_VOICE_SID_LEN);

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

    ngx_http_voice_transcript_fmt_time(call->start, stamp, 1);

    call->name.len = NGX_HTTP_VOICE_SID_LEN + 1 + n + 1
                     + NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN;
    call->name.data = ngx_pnalloc(pool, call->name.len);
    if (call->name.data == NULL) {
        goto failed;
    }

    ngx_sprintf(call->name.data, "%s_%s_%*s", call->call_sid, call->phone,
                (size_t) NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN, stamp);

    dlen = vlcf->transcript_dir.len;

    files->dir = ngx_pnalloc(pool, dlen + 1);
    files->final = ngx_pnalloc(pool, dlen + call->name.len + 6);
    files->tmp = ngx_pnalloc(pool, dlen + call->name.len + 11);
    files->journal = ngx_pnalloc(pool, dlen + call->name.len + 10);

    if (files->dir == NULL || files->final == NULL || files->tmp == NULL
        || files->journal == NULL)
    {
        goto failed;
    }

    ngx_sprintf(files->dir, "%V%Z", &vlcf->transcript_dir);
    ngx_sprintf(files->final, "%V%V.json%Z", &vlcf->transcript_dir,
                &call->name);
    ngx_sprintf(files->tmp, "%V.%V.json.tmp%Z", &vlcf->transcript_dir,
                &call->name);
    ngx_sprintf(files->journal, "%V.%V.journal%Z", &vlcf->transcript_dir,
                &call->name);

    files->pool = vlcf->thread_pool;
    files->task = ngx_thread_task_alloc(pool,
                                    sizeof(ngx_http_voice_transcript_io_t));
    if (files->task == NULL) {
        goto failed;
    }

    io = files->task->ctx;
    io->call = call;
    files->task->handler = ngx_http_voice_transcript_io_thread;
    files->task->event.handler = ngx_http_voice_transcript_io_done;
    files->task->event.data = io;
    files->task->event.log = clog;

    if (ngx_array_init(&call->utterances, pool, 16,
                       sizeof(ngx_http_voice_utterance_t))
        != NGX_OK)
    {
        goto failed;
    }

    call->wait.handler = ngx_http_voice_transcript_wait_handler;
    call->wait.data = call;
    call->wait.log = clog;

    files->lock = NGX_INVALID_FILE;
    files->create = 1;
    files->retry.handler = ngx_http_voice_transcript_again;
    files->retry.data = call;
    files->retry.log = clog;
    files->hold.handler = ngx_http_voice_transcript_hold;
    files->hold.data = call;
    files->hold.log = clog;

    /* the journal's header has the call's context, which the stream's
     * start sets once this returns: it is made from a posted event */
    files->open.handler = ngx_http_voice_transcript_again;
    files->open.data = call;
    files->open.log = clog;

    call->files = files;

    ngx_http_voice_call_add(call);
    ngx_post_event(&files->open, &ngx_posted_events);

    p = call->name.data;
    ngx_log_error(NGX_LOG_INFO, clog, 0,
                  "voice: call %s: transcript \"%*s\"%s",
                  call->call_sid, call->name.len, p,
                  call->continued ? ", continued" : "");

    return call;

failed:

    ngx_destroy_pool(pool);
    return NULL;
}


static ngx_http_voice_transcript_files_t *
ngx_http_voice_transcript_files(ngx_http_voice_call_t *call)
{
    return call->files;
}


static void
ngx_http_voice_transcript_state(ngx_http_voice_call_t *call,
    ngx_http_voice_call_state_e state)
{
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, call->log, 0,
                   "voice call %s: %s -> %s", call->call_sid,
                   ngx_http_voice_transcript_state_name[call->state],
                   ngx_http_voice_transcript_state_name[state]);

    call->state = state;
}


void
ngx_http_voice_transcript_on_bridge(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg)
{
    ngx_http_voice_transcript_files_t  *files;

    files = ngx_http_voice_transcript_files(call);

    switch (msg->type) {

    case VOICE_PROTO_MSG_TRANSCRIPT:
        if (call->state >= NGX_HTTP_VOICE_CALL_ST_WRITING) {
            ngx_log_error(NGX_LOG_WARN, call->log, 0,
                          "voice: call %s: utterance after the transcript "
                          "was closed, not stored", call->call_sid);
            return;
        }

        ngx_http_voice_transcript_add(call, msg);
        ngx_http_voice_transcript_schedule(call);
        return;

    default: /* VOICE_PROTO_MSG_CALL_DONE */
        files->bridge_done = 1;
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
            ngx_http_voice_transcript_ended_by(call, msg->ended_by.data,
                                               msg->ended_by.len,
                                               msg->reason.data,
                                               msg->reason.len);
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, call->log, 0,
                       "voice call %s: bridged is done, %uD utterances",
                       call->call_sid, msg->count);

        if (call->state == NGX_HTTP_VOICE_CALL_ST_ENDING) {
            ngx_http_voice_transcript_finish(call);
        }

        return;
    }
}


static ngx_int_t
ngx_http_voice_transcript_copy(ngx_http_voice_call_t *call, ngx_str_t *dst,
    voice_proto_str_t *src)
{
    dst->len = src->len;

    if (src->len == 0) {
        dst->data = NULL;
        return NGX_OK;
    }

    dst->data = ngx_pnalloc(call->pool, src->len);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src->data, src->len);

    return NGX_OK;
}


/*
 * An entry from bridged: an utterance (user, assistant: text), a tool
 * call (name, arguments -- a JSON object, checked here since it goes into
 * the file as JSON -- and its output as text), or a key (the digit).
 */

static void
ngx_http_voice_transcript_add(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg)
{
    int                          n;
    size_t                       bytes;
    const char                  *bad;
    ngx_http_voice_utterance_t  *u;

    static ngx_http_voice_json_tok_t  toks[1024];

    bad = NULL;

    switch (msg->role) {

    case VOICE_PROTO_ROLE_USER:
    case VOICE_PROTO_ROLE_ASSISTANT:
    case VOICE_PROTO_ROLE_NOTE:
        if (msg->text.len == 0) {
            bad = "an empty utterance";
        }
        break;

    case VOICE_PROTO_ROLE_TOOL:
        if (msg->name.len == 0) {
            bad = "a tool call without a name";
            break;
        }

        n = ngx_http_voice_json_parse(msg->arguments.data,
                                      msg->arguments.len, toks, 1024, NULL);
        if (n < 1 || toks[0].type != NGX_HTTP_VOICE_JSON_OBJECT) {
            bad = "a tool call whose arguments are not a JSON object";
        }
        break;

    case VOICE_PROTO_ROLE_DTMF:
        if (msg->text.len != 1) {
            bad = "a key that is not one character";
        }
        break;

    default:
        bad = "an unknown role";
    }

    if (bad) {
        ngx_log_error(NGX_LOG_ERR, call->log, 0,
                      "voice: call %s: invalid entry from bridged: %s",
                      call->call_sid, bad);
        return;
    }

    bytes = msg->text.len + msg->name.len + msg->arguments.len;

    if (call->utterances.nelts >= NGX_HTTP_VOICE_TRANSCRIPT_MAX_UTTERANCES
        || call->text_bytes + bytes > NGX_HTTP_VOICE_TRANSCRIPT_MAX_TEXT)
    {
        if (call->dropped++ == 0) {
            ngx_log_error(NGX_LOG_WARN, call->log, 0,
                          "voice: call %s: transcript limit reached, "
                          "further utterances are not stored",
                          call->call_sid);
        }
        return;
    }

    u = ngx_array_push(&call->utterances);
    if (u == NULL) {
        return;
    }

    if (ngx_http_voice_transcript_copy(call, &u->text, &msg->text) != NGX_OK
        || ngx_http_voice_transcript_copy(call, &u->name, &msg->name)
           != NGX_OK
        || ngx_http_voice_transcript_copy(call, &u->arguments,
                                          &msg->arguments)
           != NGX_OK)
    {
        call->utterances.nelts--;
        return;
    }

    u->order = msg->order;
    u->role = msg->role;
    u->time = msg->timestamp ? msg->timestamp : ngx_http_voice_now_ms();

    call->text_bytes += bytes;
}


/* who ended the call and why, for the record; the first word stays */

void
ngx_http_voice_transcript_ended_by(ngx_http_voice_call_t *call,
    const u_char *by, size_t by_len, const u_char *reason, size_t len)
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


void
ngx_http_voice_transcript_end(ngx_http_voice_call_t *call)
{
    ngx_http_voice_transcript_files_t  *files;

    if (call->state != NGX_HTTP_VOICE_CALL_ST_LIVE) {
        return;
    }

    ngx_http_voice_transcript_state(call, NGX_HTTP_VOICE_CALL_ST_ENDING);

    files = ngx_http_voice_transcript_files(call);

    if (files->bridge_done || call->peer == NULL) {
        ngx_http_voice_transcript_finish(call);
        return;
    }

    /* the last utterances arrive after the stream's stop; wait for
     * bridged's call.done, but not forever */
    ngx_add_timer(&call->wait, call->vlcf->transcript_wait);
}


/* the journal's creation, and each try again after storage failed */

static void
ngx_http_voice_transcript_again(ngx_event_t *ev)
{
    ngx_http_voice_transcript_schedule(ev->data);
}


/*
 * A worker that exits gracefully (a reload, a stop) leaves once no timer
 * that is not cancelable is left: this one, armed while the call's file
 * operation is in flight, has it wait for the operation's end, as the
 * retry timer has it wait for storage to come back.
 */

static void
ngx_http_voice_transcript_hold(ngx_event_t *ev)
{
    ngx_http_voice_call_t  *call;

    call = ev->data;

    ngx_log_error(NGX_LOG_WARN, call->log, 0,
                  "voice: call %s: a transcript file operation takes more "
                  "than a minute", call->call_sid);

    ngx_add_timer(ev, 60000);
}


static void
ngx_http_voice_transcript_wait_handler(ngx_event_t *ev)
{
    ngx_http_voice_call_t  *call;

    call = ev->data;

    ngx_log_error(NGX_LOG_WARN, call->log, 0,
                  "voice: call %s: bridged did not finish the transcript "
                  "within %M ms, writing what arrived", call->call_sid,
                  call->vlcf->transcript_wait);

    ngx_http_voice_transcript_finish(call);
}


static void
ngx_http_voice_transcript_finish(ngx_http_voice_call_t *call)
{
    if (call->state >= NGX_HTTP_VOICE_CALL_ST_WRITING) {
        return;
    }

    if (call->wait.timer_set) {
        ngx_del_timer(&call->wait);
    }

    ngx_http_voice_transcript_state(call, NGX_HTTP_VOICE_CALL_ST_WRITING);
    call->final_wanted = 1;

    ngx_http_voice_transcript_schedule(call);
}


/* starts the call's next file operation, unless one is in flight */

static void
ngx_http_voice_transcript_schedule(ngx_http_voice_call_t *call)
{
    size_t                              len;
    u_char                             *data;
    ngx_uint_t                          n, from;
    ngx_http_voice_transcript_io_t     *io;
    ngx_http_voice_transcript_files_t  *files;

    files = ngx_http_voice_transcript_files(call);

    /* after a failure, nothing before the retry timer says so */
    if (call->task_busy || files->retry.timer_set) {
        return;
    }

    io = files->task->ctx;
    n = call->utterances.nelts;

    if (call->final_wanted) {
        io->op = NGX_HTTP_VOICE_TRANSCRIPT_FINAL;
        from = 0;

    } else if (files->create) {
        io->op = NGX_HTTP_VOICE_TRANSCRIPT_CREATE;
        from = 0;

    } else if (call->journaled < n) {
        io->op = NGX_HTTP_VOICE_TRANSCRIPT_APPEND;
        from = call->journaled;

    } else {
        return;
    }

    data = ngx_http_voice_transcript_render(call, from, n, io->op, &len);

    if (data == NULL) {
        ngx_log_error(NGX_LOG_ALERT, call->log, 0,
                      "voice: call %s: cannot render the transcript",
                      call->call_sid);
        if (call->final_wanted) {
            ngx_http_voice_transcript_destroy(call);
        }
        return;
    }

    io->data = data;
    io->len = len;
    io->upto = n;
    io->rc = NGX_ERROR;
    io->e.err = 0;
    io->e.failed = NULL;
    io->in_the_way = 0;

    if (ngx_thread_task_post(files->pool, files->task) != NGX_OK) {
        ngx_free(data);
        io->data = NULL;
        ngx_log_error(NGX_LOG_ALERT, call->log, 0,
                      "voice: call %s: the thread pool refused the "
                      "transcript task", call->call_sid);
        if (call->final_wanted) {
            ngx_http_voice_transcript_destroy(call);
        }
        return;
    }

    call->task_busy = 1;
    ngx_add_timer(&files->hold, 60000);
}


/*
 * Renders utterances [from, to) as journal lines (after the journal's
 * header, to create it), or the whole call as its final JSON document
 * (sorted into conversation order), into a buffer the thread will own
 * until its operation is done.
 */

static const char *
ngx_http_voice_transcript_role(uint32_t role)
{
    switch (role) {
    case VOICE_PROTO_ROLE_USER:
        return "user";
    case VOICE_PROTO_ROLE_ASSISTANT:
        return "assistant";
    case VOICE_PROTO_ROLE_TOOL:
        return "tool";
    case VOICE_PROTO_ROLE_NOTE:
        return "note";
    default:
        return "dtmf";
    }
}


/*
 * One entry's members after "role", without the braces:
 *     "text": "..."                            user, assistant, note
 *     "name": "...", "arguments": {...}, "output": "..."     tool
 *     "digit": "5"                                            dtmf
 */

static u_char *
ngx_http_voice_transcript_members(u_char *p, ngx_http_voice_utterance_t *u,
    const char *sep)
{
    switch (u->role) {

    case VOICE_PROTO_ROLE_TOOL:
        p = ngx_sprintf(p, "\"name\": \"");
        p = (u_char *) ngx_escape_json(p, u->name.data, u->name.len);
        p = ngx_sprintf(p, "\",%s\"arguments\": %V,%s\"output\": \"", sep,
                        &u->arguments, sep);
        break;

    case VOICE_PROTO_ROLE_DTMF:
        p = ngx_sprintf(p, "\"digit\": \"");
        break;

    default:
        p = ngx_sprintf(p, "\"text\": \"");
    }

    return (u_char *) ngx_escape_json(p, u->text.data, u->text.len);
}


static u_char *
ngx_http_voice_transcript_render(ngx_http_voice_call_t *call,
    ngx_uint_t from, ngx_uint_t to, ngx_http_voice_transcript_op_e op,
    size_t *len)
{
    u_char                      *buf, *p, stamp[32];
    size_t                       size;
    ngx_uint_t                   i, final;
    ngx_http_voice_utterance_t  *u;

    u = call->utterances.elts;
    final = (op == NGX_HTTP_VOICE_TRANSCRIPT_FINAL);

    if (final && to > 1) {
        ngx_sort(u, to, sizeof(ngx_http_voice_utterance_t),
                 ngx_http_voice_transcript_cmp);
    }

    size = 512 + 2 * NGX_HTTP_VOICE_PHONE_MAX + 6 * call->end_reason.len
           + call->context.len;
    for (i = from; i < to; i++) {
        size += 192 + u[i].text.len + u[i].name.len + u[i].arguments.len
                + ngx_escape_json(NULL, u[i].text.data, u[i].text.len)
                + ngx_escape_json(NULL, u[i].name.data, u[i].name.len);
    }

    buf = ngx_alloc(size, call->log);
    if (buf == NULL) {
        return NULL;
    }

    p = buf;

    if (final) {
        ngx_http_voice_transcript_fmt_time(call->start, stamp, 0);
        p = ngx_sprintf(p, "{\n  \"callSid\": \"%s\",\n"
                        "  \"phoneNumber\": \"%s\",\n"
                        "  \"timestamp\": \"%*s\",\n"
                        "  \"endedBy\": \"%s\",\n"
                        "  \"endReason\": \"",
                        call->call_sid, call->phone,
                        (size_t) NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN, stamp,
                        call->ended_by[0] ? (char *) call->ended_by
                                          : "caller");
        p = (u_char *) ngx_escape_json(p, call->end_reason.data,
                                       call->end_reason.len);
        p = ngx_sprintf(p, "\",\n");

        if (call->answered_by[0]) {
            p = ngx_sprintf(p, "  \"answeredBy\": \"%s\",\n",
                            call->answered_by);
        }

        /* checked JSON (ngx_http_voice_body.c), as the client sent it */
        if (call->context.len) {
            p = ngx_sprintf(p, "  \"context\": %V,\n", &call->context);
        }

        p = ngx_sprintf(p, "  \"transcript\": [");

    } else if (op == NGX_HTTP_VOICE_TRANSCRIPT_CREATE) {

        /* the header ngx_http_voice_transcript_fmt.h describes */
        ngx_http_voice_transcript_fmt_time(call->start, stamp, 0);
        p = ngx_sprintf(p, "{\"callSid\":\"%s\",\"phoneNumber\":\"%s\","
                        "\"timestamp\":\"%*s\",\"continued\":%s",
                        call->call_sid, call->phone,
                        (size_t) NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN, stamp,
                        call->continued ? "true" : "false");

        if (call->context.len) {
            p = ngx_sprintf(p, ",\"context\":%V", &call->context);
        }

        p = ngx_sprintf(p, "}\n");
    }

    for (i = from; i < to; i++) {
        ngx_http_voice_transcript_fmt_time(u[i].time, stamp, 0);

        if (final) {
            p = ngx_sprintf(p, "%s\n    {\n      \"role\": \"%s\",\n      ",
                            i ? "," : "",
                            ngx_http_voice_transcript_role(u[i].role));
            p = ngx_http_voice_transcript_members(p, &u[i], "\n      ");
            p = ngx_sprintf(p, "\",\n      \"timestamp\": \"%*s\"\n    }",
                            (size_t) NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN,
                            stamp);

        } else {
            p = ngx_sprintf(p, "{\"order\":%uD,\"role\":\"%s\",",
                            u[i].order,
                            ngx_http_voice_transcript_role(u[i].role));
            p = ngx_http_voice_transcript_members(p, &u[i], "");
            p = ngx_sprintf(p, "\",\"timestamp\":\"%*s\"}\n",
                            (size_t) NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN,
                            stamp);
        }
    }

    if (final) {
        p = ngx_sprintf(p, "%s]\n}\n", to ? "\n  " : "");
    }

    *len = p - buf;

    return buf;
}


/* conversation order is OpenAI's item order; ties keep arrival order
 * (ngx_sort is an insertion sort, so it is stable) */

static ngx_int_t
ngx_http_voice_transcript_cmp(const void *a, const void *b)
{
    const ngx_http_voice_utterance_t  *ua = a, *ub = b;

    if (ua->order == ub->order) {
        return 0;
    }

    return ua->order < ub->order ? -1 : 1;
}


/* runs in a thread of the pool: plain system calls on the task's data */

static void
ngx_http_voice_transcript_io_thread(void *data, ngx_log_t *log)
{
    ngx_fd_t                            lock;
    ngx_http_voice_call_t              *call;
    ngx_http_voice_transcript_io_t     *io;
    ngx_http_voice_transcript_files_t  *files;

    io = data;
    call = io->call;
    files = call->files;

    switch (io->op) {

    case NGX_HTTP_VOICE_TRANSCRIPT_CREATE:
        io->rc = ngx_http_voice_store_journal_create((char *) files->journal,
                                                     io->data, io->len,
                                                     &lock, &io->e);

        if (io->rc == NGX_BUSY) {

            /* a journal of this record already: an earlier stream's, whose
             * process died (a live one would hold the call in its worker,
             * and Twilio would not have started this stream) */

            io->in_the_way = 1;
            ngx_http_voice_recover_journal(files->dir, call->name.data,
                                           call->name.len, &io->recovered);

            io->rc = ngx_http_voice_store_journal_create(
                                                  (char *) files->journal,
                                                  io->data, io->len, &lock,
                                                  &io->e);
            if (io->rc == NGX_BUSY) {
                io->e.err = 0;
                io->e.failed = "open() journal, which another process holds,";
                io->rc = NGX_ERROR;
            }
        }

        if (io->rc == NGX_OK) {

            /* a journal that was removed is held until its successor is */
            if (files->lock != NGX_INVALID_FILE) {
                (void) ngx_close_file(files->lock);
            }

            files->lock = lock;
            files->dirty = 0;
        }

        return;

    case NGX_HTTP_VOICE_TRANSCRIPT_APPEND:
        io->rc = ngx_http_voice_store_journal_append((char *) files->journal,
                                                     files->lock, io->data,
                                                     io->len, &files->dirty,
                                                     &io->e);
        return;

    default: /* NGX_HTTP_VOICE_TRANSCRIPT_FINAL */

        if (call->continued) {
            io->rc = ngx_http_voice_store_merge((char *) files->final,
                                                &io->data, &io->len, &io->e);
            if (io->rc != NGX_OK) {
                return;
            }
        }

        io->rc = ngx_http_voice_store_write((char *) files->dir,
                                            (char *) files->tmp,
                                            (char *) files->final, io->data,
                                            io->len, &io->e);

        if (io->rc == NGX_OK && files->lock != NGX_INVALID_FILE) {
            ngx_http_voice_store_journal_drop((char *) files->journal,
                                              files->lock);
            files->lock = NGX_INVALID_FILE;
        }

        return;
    }
}


static void
ngx_http_voice_transcript_io_done(ngx_event_t *ev)
{
    ngx_http_voice_call_t              *call;
    ngx_http_voice_transcript_io_t     *io;
    ngx_http_voice_transcript_files_t  *files;

    io = ev->data;
    call = io->call;
    files = call->files;

    call->task_busy = 0;

    if (files->hold.timer_set) {
        ngx_del_timer(&files->hold);
    }

    if (io->data) {
        ngx_free(io->data);
        io->data = NULL;
    }

    if (io->in_the_way) {
        ngx_http_voice_recover_log(call->log, NGX_LOG_WARN, files->dir,
                                   call->name.data, call->name.len,
                                   &io->recovered);
    }

    if (io->rc != NGX_OK) {
        ngx_http_voice_transcript_io_failed(call, io);
        return;
    }

    files->backoff = 0;

    if (files->failed_logged && !files->works_logged) {
        files->works_logged = 1;
        ngx_log_error(NGX_LOG_NOTICE, call->log, 0,
                      "voice: call %s: transcript storage works again",
                      call->call_sid);
    }

    switch (io->op) {

    case NGX_HTTP_VOICE_TRANSCRIPT_CREATE:
        files->create = 0;
        call->journaled = io->upto;
        break;

    case NGX_HTTP_VOICE_TRANSCRIPT_APPEND:
        call->journaled = io->upto;
        break;

    default: /* NGX_HTTP_VOICE_TRANSCRIPT_FINAL */
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "voice: call %s: transcript written to \"%s\" "
                      "(%ui utterances)", call->call_sid, files->final,
                      call->utterances.nelts);

        ngx_http_voice_transcript_state(call, NGX_HTTP_VOICE_CALL_ST_DONE);
        ngx_http_voice_transcript_destroy(call);
        return;
    }

    ngx_http_voice_transcript_schedule(call);
}


/*
 * Storage failed (full, read-only, removed...): logged once per call and
 * counted; the entries stay in memory and the operation is tried again
 * later.  A finished record waits at most voice_transcript_retry.
 */

static void
ngx_http_voice_transcript_io_failed(ngx_http_voice_call_t *call,
    ngx_http_voice_transcript_io_t *io)
{
    u_char                             *path;
    ngx_http_voice_worker_t            *w;
    ngx_http_voice_transcript_files_t  *files;

    files = call->files;
    w = ngx_http_voice_worker();

    path = (io->op == NGX_HTTP_VOICE_TRANSCRIPT_FINAL) ? files->final
                                                        : files->journal;

    if (!files->failed_logged) {
        files->failed_logged = 1;

        if (w) {
            (void) ngx_atomic_fetch_add(&w->transcript_errors, 1);
        }

        ngx_log_error(NGX_LOG_ERR, call->log, io->e.err,
                      "voice: call %s: transcript storage failed: %s \"%s\" "
                      "failed; the call goes on, and its record waits in "
                      "memory until storage works again", call->call_sid,
                      io->e.failed, path);

    } else {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, call->log, io->e.err,
                       "voice call %s: %s \"%s\" failed again",
                       call->call_sid, io->e.failed, path);
    }

    /* removed or replaced: the whole record goes into a new journal */
    if (io->rc == NGX_DECLINED) {
        files->create = 1;
    }

    if (io->op == NGX_HTTP_VOICE_TRANSCRIPT_FINAL) {

        if (!files->final_failed) {
            files->final_failed = 1;
            files->final_since = ngx_current_msec;
        }

        if (ngx_current_msec - files->final_since
            >= call->vlcf->transcript_retry)
        {
            if (w) {
                (void) ngx_atomic_fetch_add(&w->transcripts_lost, 1);
            }

            ngx_log_error(NGX_LOG_CRIT, call->log, io->e.err,
                          "voice: call %s: the record could not be written "
                          "to \"%s\" within %M ms (%s failed): given up, "
                          "%ui utterances lost; the journal keeps those "
                          "journaled (%ui) for the next start",
                          call->call_sid, files->final,
                          call->vlcf->transcript_retry, io->e.failed,
                          call->utterances.nelts,
                          files->create ? (ngx_uint_t) 0 : call->journaled);

            ngx_http_voice_transcript_state(call,
                                            NGX_HTTP_VOICE_CALL_ST_DONE);
            ngx_http_voice_transcript_destroy(call);
            return;
        }
    }

    files->backoff = files->backoff
                     ? ngx_min(files->backoff * 2,
                               NGX_HTTP_VOICE_TRANSCRIPT_BACKOFF_MAX)
                     : NGX_HTTP_VOICE_TRANSCRIPT_BACKOFF_MIN;

    ngx_add_timer(&files->retry, files->backoff);
}


/*
 * A call is freed once its file is written and its stream is gone,
 * whichever comes last: ngx_http_voice_transcript_detach() finishes what
 * this had to leave while the stream still pointed at the call.
 */

static void
ngx_http_voice_transcript_destroy(ngx_http_voice_call_t *call)
{
    ngx_http_voice_transcript_files_t  *files;

    files = call->files;

    if (call->wait.timer_set) {
        ngx_del_timer(&call->wait);
    }

    if (files->retry.timer_set) {
        ngx_del_timer(&files->retry);
    }

    if (files->hold.timer_set) {
        ngx_del_timer(&files->hold);
    }

    if (files->open.posted) {
        ngx_delete_posted_event(&files->open);
    }

    /*
     * A journal still held is let go (a record given up): recovery takes
     * it at the next start.  Closing a read-only descriptor writes
     * nothing back, so it does not block, as nginx's open file cache
     * closes its own in the event loop.
     */

    if (files->lock != NGX_INVALID_FILE) {
        (void) ngx_close_file(files->lock);
        files->lock = NGX_INVALID_FILE;
    }

    call->state = NGX_HTTP_VOICE_CALL_ST_DONE;

    if (call->media) {
        return;
    }

    /* the record is written: the call no longer counts (voice_max_calls) */
    if (call->admitted) {
        ngx_http_voice_zone_call_end(call->call_sid);
    }

    ngx_http_voice_call_remove(call);
    ngx_destroy_pool(call->pool);
}


void
ngx_http_voice_transcript_detach(ngx_http_voice_call_t *call)
{
    call->media = NULL;

    if (call->state == NGX_HTTP_VOICE_CALL_ST_DONE && !call->task_busy) {
        ngx_http_voice_transcript_destroy(call);
    }
}


/*
 * GET /api/transcript/{callSid}[?format=text]: the call SID is checked
 * strictly (CA and 32 hex digits), which alone keeps the lookup inside
 * the transcript directory; the directory scan and the read run on the
 * thread pool.
 */

ngx_int_t
ngx_http_voice_transcript_handler(ngx_http_request_t *r)
{
    u_char                              *sid;
    size_t                               len;
    ngx_int_t                            rc;
    ngx_str_t                            format;
    ngx_uint_t                           text;
    ngx_thread_task_t                   *task;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_voice_loc_conf_t           *vlcf;
    ngx_http_voice_transcript_lookup_t  *lk;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_voice_auth_check(r);
    if (rc != NGX_OK) {
        return ngx_http_voice_auth_refuse(r, rc);
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_voice_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method not allowed: use GET");
    }

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    /* the SID is the URI's last segment */
    sid = r->uri.data + r->uri.len;
    while (sid > r->uri.data && sid[-1] != '/') {
        sid--;
    }

    len = r->uri.data + r->uri.len - sid;

    if (!ngx_http_voice_body_valid_call_sid(sid, len)) {
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid call SID: it must be CA "
                                         "followed by 32 hex digits");
    }

    text = 0;

    if (ngx_http_arg(r, (u_char *) "format", 6, &format) == NGX_OK) {

        if (format.len == 4 && ngx_strncmp(format.data, "text", 4) == 0) {
            text = 1;

        } else if (!(format.len == 4
                     && ngx_strncmp(format.data, "json", 4) == 0))
        {
            return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "format must be json or text");
        }
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_voice_transcript_lookup_t)
                      + vlcf->transcript_dir.len + 1, r->connection->log);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lk = (ngx_http_voice_transcript_lookup_t *) (task + 1);
    task->ctx = lk;

    lk->request = r;
    lk->dir = (u_char *) (lk + 1);
    ngx_memcpy(lk->dir, vlcf->transcript_dir.data, vlcf->transcript_dir.len);
    ngx_memcpy(lk->sid, sid, NGX_HTTP_VOICE_SID_LEN);
    lk->text = text;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(task);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    task->handler = ngx_http_voice_transcript_lookup_thread;
    task->event.handler = ngx_http_voice_transcript_lookup_done;
    task->event.data = task;
    task->event.log = r->connection->log;

    if (ngx_thread_task_post(vlcf->thread_pool, task) != NGX_OK) {
        ngx_free(task);
        return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "too busy, try again");
    }

    cln->handler = ngx_http_voice_transcript_lookup_cleanup;
    cln->data = lk;

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


static void
ngx_http_voice_transcript_lookup_cleanup(void *data)
{
    ngx_http_voice_transcript_lookup_t  *lk = data;

    /* the task is still in the pool's hands: it finds no request and only
     * frees itself */
    lk->request = NULL;
}


/* runs in a thread of the pool */

static void
ngx_http_voice_transcript_lookup_thread(void *data, ngx_log_t *log)
{
    int                                  fd;
    DIR                                 *dir;
    u_char                              *buf, *text, path[NGX_MAX_PATH];
    size_t                               nlen, best_len, ntoks;
    ssize_t                              n;
    struct stat                          st;
    struct dirent                       *de;
    ngx_http_voice_json_tok_t           *toks;
    ngx_http_voice_transcript_lookup_t  *lk;
    char                                 best[256];

    lk = data;
    lk->status = NGX_HTTP_NOT_FOUND;
    best_len = 0;

    dir = opendir((char *) lk->dir);
    if (dir == NULL) {
        lk->err = ngx_errno;
        lk->status = (lk->err == NGX_ENOENT) ? NGX_HTTP_NOT_FOUND
                                             : NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    /* {sid}_*.json; a call has one file, but if several match (a clock
     * step), the latest name wins */
    while ((de = readdir(dir)) != NULL) {
        nlen = ngx_strlen(de->d_name);

        if (nlen < NGX_HTTP_VOICE_SID_LEN + 6 || nlen >= sizeof(best)
            || ngx_strncmp(de->d_name, lk->sid, NGX_HTTP_VOICE_SID_LEN) != 0
            || de->d_name[NGX_HTTP_VOICE_SID_LEN] != '_'
            || ngx_strcmp(de->d_name + nlen - 5, ".json") != 0)
        {
            continue;
        }

        if (best_len == 0 || ngx_strcmp(de->d_name, best) > 0) {
            ngx_memcpy(best, de->d_name, nlen + 1);
            best_len = nlen;
        }
    }

    (void) closedir(dir);

    if (best_len == 0) {
        return;
    }

    if (ngx_strlen(lk->dir) + best_len + 1 > sizeof(path)) {
        lk->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    ngx_sprintf(path, "%s%s%Z", lk->dir, best);

    fd = open((char *) path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        lk->err = ngx_errno;
        lk->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    if (fstat(fd, &st) == -1 || st.st_size > NGX_HTTP_VOICE_TRANSCRIPT_MAX_FILE)
    {
        lk->err = ngx_errno;
        lk->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        (void) close(fd);
        return;
    }

    buf = malloc(st.st_size + 1);
    if (buf == NULL) {
        lk->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        (void) close(fd);
        return;
    }

    n = read(fd, buf, st.st_size);
    (void) close(fd);

    if (n != st.st_size) {
        lk->err = ngx_errno;
        lk->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        free(buf);
        return;
    }

    lk->data = buf;
    lk->len = n;
    lk->status = NGX_HTTP_OK;

    if (!lk->text) {
        return;
    }

    ntoks = n / 2 + 2;
    toks = malloc(ntoks * sizeof(ngx_http_voice_json_tok_t));
    text = malloc(n + 1);

    if (toks == NULL || text == NULL) {
        free(toks);
        free(text);
        lk->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    lk->len = ngx_http_voice_transcript_fmt_text(buf, n, toks, ntoks, text,
                                                 n + 1);
    free(toks);
    free(buf);
    lk->data = text;

    if (lk->len == (size_t) -1) {
        lk->len = 0;
        lk->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


static void
ngx_http_voice_transcript_lookup_done(ngx_event_t *ev)
{
    u_char                              *body;
    ngx_int_t                            rc;
    ngx_buf_t                           *b;
    ngx_chain_t                          out;
    ngx_connection_t                    *c;
    ngx_thread_task_t                   *task;
    ngx_http_request_t                  *r;
    ngx_http_voice_transcript_lookup_t  *lk;

    task = ev->data;
    lk = task->ctx;
    r = lk->request;

    if (r == NULL) {
        goto free;
    }

    c = r->connection;
    ngx_http_set_log_request(c->log, r);

    if (lk->status == NGX_HTTP_NOT_FOUND) {
        rc = ngx_http_voice_send_error(r, NGX_HTTP_NOT_FOUND,
                                       "no transcript for call %s", lk->sid);
        goto finalize;
    }

    if (lk->status != NGX_HTTP_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, lk->err,
                      "voice: cannot read the transcript of %s from \"%s\"",
                      lk->sid, lk->dir);
        rc = ngx_http_voice_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "cannot read the transcript");
        goto finalize;
    }

    body = ngx_pnalloc(r->pool, lk->len ? lk->len : 1);
    if (body == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto finalize;
    }

    ngx_memcpy(body, lk->data, lk->len);

    if (!lk->text) {
        rc = ngx_http_voice_send_json(r, NGX_HTTP_OK, body, lk->len);
        goto finalize;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = lk->len;
    ngx_str_set(&r->headers_out.content_type, "text/plain; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);

    if (rc != NGX_ERROR && rc <= NGX_OK && !r->header_only && lk->len) {
        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto finalize;
        }

        b->pos = body;
        b->last = body + lk->len;
        b->memory = 1;
        b->last_buf = 1;
        b->last_in_chain = 1;
        out.buf = b;
        out.next = NULL;

        rc = ngx_http_output_filter(r, &out);

    } else if (rc != NGX_ERROR && rc <= NGX_OK && !r->header_only) {
        rc = ngx_http_send_special(r, NGX_HTTP_LAST);
    }

finalize:

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);

free:

    if (lk->data) {
        free(lk->data);
    }

    ngx_free(task);
}
