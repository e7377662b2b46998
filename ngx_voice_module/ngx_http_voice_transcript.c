/*
 * ngx_http_voice_transcript.c: a call's record on disk.
 *
 * A call (ngx_http_voice_call.c, which owns its life cycle) opens its
 * record as its media stream starts: a journal
 * (TRANSCRIPT_DIR/.{name}.journal) with a header line (the call, its
 * context), held locked while the call lives; each entry bridged
 * publishes is kept in memory and appended to it at once.  When the call
 * is over, the entries are sorted into conversation order and written to
 * TRANSCRIPT_DIR/{callSid}_{phone}_{start}.json atomically; then the
 * journal goes and the call is told (ngx_http_voice_call_written()).  A
 * journal whose process died is made into an incomplete record by
 * ngx_http_voice_recover.c.
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

#include "ngx_http_voice_module.h"
#include "voice_json.h"
#include "ngx_http_voice_transcript_fmt.h"


#define NGX_HTTP_VOICE_TRANSCRIPT_MAX_UTTERANCES   10000
#define NGX_HTTP_VOICE_TRANSCRIPT_MAX_TEXT         (4 * 1024 * 1024)

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
    ngx_http_voice_outbox_entry_t    hook;  /* the final record's, when
                                               its location has a webhook */
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

    unsigned                    create:1;     /* no journal of ours yet */
    unsigned                    final_failed:1;
    unsigned                    failed_logged:1;
    unsigned                    works_logged:1;
};




static ngx_http_voice_transcript_files_t *ngx_http_voice_transcript_files(
    ngx_http_voice_call_t *call);
static void ngx_http_voice_transcript_entry(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg);
static void ngx_http_voice_transcript_again(ngx_event_t *ev);
static void ngx_http_voice_transcript_hold(ngx_event_t *ev);
static void ngx_http_voice_transcript_schedule(ngx_http_voice_call_t *call);
static void ngx_http_voice_transcript_io_state(ngx_http_voice_call_t *call,
    ngx_http_voice_call_io_e io);
static u_char *ngx_http_voice_transcript_render(ngx_http_voice_call_t *call,
    ngx_uint_t from, ngx_uint_t to, ngx_http_voice_transcript_op_e op,
    size_t *len);
static ngx_int_t ngx_http_voice_transcript_cmp(const void *a, const void *b);
static u_char *ngx_http_voice_transcript_summary(u_char *p,
    ngx_http_voice_call_t *call, ngx_http_voice_utterance_t *u,
    ngx_uint_t n);
static void ngx_http_voice_transcript_io_thread(void *data, ngx_log_t *log);
static void ngx_http_voice_transcript_io_done(ngx_event_t *ev);
static void ngx_http_voice_transcript_io_failed(ngx_http_voice_call_t *call,
    ngx_http_voice_transcript_io_t *io);


/*
 * A new call's record: its name, {callSid}_{phone}_{start}, its paths,
 * and its one thread-pool task.  The journal's header has the call's
 * context, which the stream's start sets once the call is made: the
 * journal is created from a posted event.
 */

ngx_int_t
ngx_http_voice_transcript_open(ngx_http_voice_call_t *call)
{
    u_char                             *stamp;
    size_t                              dlen, n;
    ngx_pool_t                         *pool;
    ngx_http_voice_loc_conf_t          *vlcf;
    ngx_http_voice_transcript_io_t     *io;
    ngx_http_voice_transcript_files_t  *files;

    pool = call->pool;
    vlcf = call->vlcf;

    files = ngx_pcalloc(pool, sizeof(ngx_http_voice_transcript_files_t));
    stamp = ngx_pnalloc(pool, 32);
    if (files == NULL || stamp == NULL) {
        return NGX_ERROR;
    }

    ngx_http_voice_transcript_fmt_time(call->start, stamp, 1);

    n = ngx_strlen(call->phone);

    call->name.len = NGX_HTTP_VOICE_SID_LEN + 1 + n + 1
                     + NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN;
    call->name.data = ngx_pnalloc(pool, call->name.len);
    if (call->name.data == NULL) {
        return NGX_ERROR;
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
        return NGX_ERROR;
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
        return NGX_ERROR;
    }

    io = files->task->ctx;
    io->call = call;
    files->task->handler = ngx_http_voice_transcript_io_thread;
    files->task->event.handler = ngx_http_voice_transcript_io_done;
    files->task->event.data = io;
    files->task->event.log = call->log;

    if (ngx_array_init(&call->utterances, pool, 16,
                       sizeof(ngx_http_voice_utterance_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    files->lock = NGX_INVALID_FILE;
    files->create = 1;
    files->retry.handler = ngx_http_voice_transcript_again;
    files->retry.data = call;
    files->retry.log = call->log;
    files->hold.handler = ngx_http_voice_transcript_hold;
    files->hold.data = call;
    files->hold.log = call->log;
    files->open.handler = ngx_http_voice_transcript_again;
    files->open.data = call;
    files->open.log = call->log;

    call->files = files;

    ngx_post_event(&files->open, &ngx_posted_events);

    ngx_log_error(NGX_LOG_INFO, call->log, 0,
                  "voice: call %s: transcript \"%V\"%s",
                  call->call_sid, &call->name,
                  call->continued ? ", continued" : "");

    return NGX_OK;
}


/* an entry from bridged, kept and journaled */

void
ngx_http_voice_transcript_add(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg)
{
    ngx_http_voice_transcript_entry(call, msg);
    ngx_http_voice_transcript_schedule(call);
}


/* the call is over: its record is written once what is journaling is */

void
ngx_http_voice_transcript_write(ngx_http_voice_call_t *call)
{
    ngx_http_voice_transcript_schedule(call);
}


static ngx_http_voice_transcript_files_t *
ngx_http_voice_transcript_files(ngx_http_voice_call_t *call)
{
    return call->files;
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
ngx_http_voice_transcript_entry(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg)
{
    int                          n;
    size_t                       bytes;
    const char                  *bad;
    ngx_http_voice_utterance_t  *u;

    static voice_proto_str_t          none;
    static voice_json_tok_t           toks[1024];

    bad = NULL;

    switch (msg->role) {

    case VOICE_PROTO_ROLE_ASSISTANT:

        /* cut off by the caller: what played may be nothing at all */
        if (msg->flags & VOICE_PROTO_FLAG_INTERRUPTED) {
            if (msg->generated.len <= msg->text.len) {
                bad = "an interrupted utterance not longer than what "
                      "was heard";
            }
            break;
        }

        /* fall through */

    case VOICE_PROTO_ROLE_USER:
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

        n = voice_json_parse(msg->arguments.data,
                             msg->arguments.len, toks, 1024, NULL);
        if (n < 1 || toks[0].type != VOICE_JSON_OBJECT) {
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

    bytes = msg->text.len + msg->name.len + msg->arguments.len
            + msg->generated.len;

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
           != NGX_OK
        || ngx_http_voice_transcript_copy(call, &u->generated,
                                          (msg->flags
                                           & VOICE_PROTO_FLAG_INTERRUPTED)
                                          ? &msg->generated : &none)
           != NGX_OK)
    {
        call->utterances.nelts--;
        return;
    }

    u->order = msg->order;
    u->role = msg->role;
    u->latency = (msg->role == VOICE_PROTO_ROLE_ASSISTANT) ? msg->latency
                                                           : 0;

    if (u->latency) {
        ngx_http_voice_metrics_turn(u->latency);
    }
    u->time = msg->timestamp ? msg->timestamp : ngx_http_voice_now_ms();

    call->text_bytes += bytes;
}


/* the journal's creation, and each try again after storage failed */

static void
ngx_http_voice_transcript_again(ngx_event_t *ev)
{
    ngx_http_voice_call_t  *call;

    call = ev->data;

    if (ev == &call->files->retry) {
        ngx_http_voice_transcript_io_state(call, NGX_HTTP_VOICE_CALL_IO_IDLE);
    }

    ngx_http_voice_transcript_schedule(call);
}


/*
 * The one transition of the call's file operations (module.h's
 * ngx_http_voice_call_io_e): IDLE to TASK or RETRY and back; any other is
 * a bug, refused and logged.
 */

static void
ngx_http_voice_transcript_io_state(ngx_http_voice_call_t *call,
    ngx_http_voice_call_io_e io)
{
    static const char  *name[] = { "idle", "task", "retry" };

    if ((call->io == NGX_HTTP_VOICE_CALL_IO_IDLE)
        == (io == NGX_HTTP_VOICE_CALL_IO_IDLE))
    {
        ngx_log_error(NGX_LOG_ALERT, call->log, 0,
                      "voice: call %s: transcript i/o %s -> %s refused",
                      call->call_sid, name[call->io], name[io]);
        return;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, call->log, 0,
                   "voice call %s: transcript i/o %s -> %s", call->call_sid,
                   name[call->io], name[io]);

    call->io = io;
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
    if (call->io != NGX_HTTP_VOICE_CALL_IO_IDLE) {
        return;
    }

    io = files->task->ctx;
    n = call->utterances.nelts;

    if (call->state >= NGX_HTTP_VOICE_CALL_ST_WRITING) {
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
        if (call->state >= NGX_HTTP_VOICE_CALL_ST_WRITING) {
            ngx_http_voice_call_written(call);
        }
        return;
    }

    if (io->op == NGX_HTTP_VOICE_TRANSCRIPT_FINAL && call->vlcf->outbox) {
        io->hook.url = call->vlcf->webhook_url;
        io->hook.made = ngx_http_voice_now_ms();
        (void) ngx_http_voice_outbox_fmt_name(io->hook.name, call->call_sid,
                                              NGX_HTTP_VOICE_SID_LEN,
                                              io->hook.made);
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
        if (call->state >= NGX_HTTP_VOICE_CALL_ST_WRITING) {
            ngx_http_voice_call_written(call);
        }
        return;
    }

    ngx_http_voice_transcript_io_state(call, NGX_HTTP_VOICE_CALL_IO_TASK);
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
 *     "text": "...", "interrupted": true, "generated": "..."
 *                                              assistant, cut off
 *     ..., "latencyMs": 640                    assistant, a turn's reply
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

    p = (u_char *) ngx_escape_json(p, u->text.data, u->text.len);

    if (u->generated.len) {
        p = ngx_sprintf(p, "\",%s\"interrupted\": true,%s"
                        "\"generated\": \"", sep, sep);
        p = (u_char *) ngx_escape_json(p, u->generated.data,
                                       u->generated.len);
    }

    *p++ = '"';

    if (u->latency) {
        p = ngx_sprintf(p, ",%s\"latencyMs\": %uD", sep, u->latency);
    }

    return p;
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

    size = 1024 + 2 * NGX_HTTP_VOICE_PHONE_MAX + 6 * call->end_reason.len
           + call->context.len
           + 6 * (call->ours.len + call->model.len
                  + call->transcribe_model.len);
    for (i = from; i < to; i++) {
        size += 256 + u[i].text.len + u[i].name.len + u[i].arguments.len
                + u[i].generated.len
                + ngx_escape_json(NULL, u[i].text.data, u[i].text.len)
                + ngx_escape_json(NULL, u[i].name.data, u[i].name.len)
                + ngx_escape_json(NULL, u[i].generated.data,
                                  u[i].generated.len);
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
        p = ngx_sprintf(p, "\",\n  \"direction\": \"%s\",\n",
                        call->outbound ? "outbound" : "inbound");

        /* the other party is phoneNumber; ours, as /twiml said */
        p = ngx_sprintf(p, "  \"from\": \"");
        p = call->outbound
            ? (u_char *) ngx_escape_json(p, call->ours.data, call->ours.len)
            : ngx_sprintf(p, "%s", call->phone);
        p = ngx_sprintf(p, "\",\n  \"to\": \"");
        p = call->outbound
            ? ngx_sprintf(p, "%s", call->phone)
            : (u_char *) ngx_escape_json(p, call->ours.data, call->ours.len);
        p = ngx_sprintf(p, "\",\n");

        /* as Twilio's status callbacks said, when they came */
        if (call->reported) {
            p = ngx_sprintf(p, "  \"status\": \"%V\",\n",
                            ngx_http_voice_call_status_name(
                                call->outcome.status));

            if (call->outcome.duration >= 0) {
                p = ngx_sprintf(p, "  \"duration\": %i,\n",
                                call->outcome.duration);
            }
        }

        if (call->answered_by[0]) {
            p = ngx_sprintf(p, "  \"answeredBy\": \"%s\",\n",
                            call->answered_by);
        }

        /* checked JSON (ngx_http_voice_body.c), as the client sent it */
        if (call->context.len) {
            p = ngx_sprintf(p, "  \"context\": %V,\n", &call->context);
        }

        p = ngx_http_voice_transcript_summary(p, call, u, to);
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
            p = ngx_sprintf(p, ",\n      \"timestamp\": \"%*s\"\n    }",
                            (size_t) NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN,
                            stamp);

        } else {
            p = ngx_sprintf(p, "{\"order\":%uD,\"role\":\"%s\",",
                            u[i].order,
                            ngx_http_voice_transcript_role(u[i].role));
            p = ngx_http_voice_transcript_members(p, &u[i], "");
            p = ngx_sprintf(p, ",\"timestamp\":\"%*s\"}\n",
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


static ngx_int_t
ngx_http_voice_transcript_ms_cmp(const void *a, const void *b)
{
    uint32_t  x = *(const uint32_t *) a, y = *(const uint32_t *) b;

    return (x > y) - (x < y);
}


/*
 * The record's summary of the call: the models its sessions used, the
 * tokens they took (summed over every session and bridged), and the turn
 * latency of the replies, from the end of the caller's speech to the
 * reply's first audio sent to Twilio: median and maximum over the turns.
 */

static u_char *
ngx_http_voice_transcript_summary(u_char *p, ngx_http_voice_call_t *call,
    ngx_http_voice_utterance_t *u, ngx_uint_t n)
{
    uint32_t    *ms, median;
    uint64_t    *t;
    ngx_uint_t   i, turns;

    if (call->model.len) {
        p = ngx_sprintf(p, "  \"models\": {\"realtime\": \"");
        p = (u_char *) ngx_escape_json(p, call->model.data, call->model.len);
        p = ngx_sprintf(p, "\", \"transcription\": \"");
        p = (u_char *) ngx_escape_json(p, call->transcribe_model.data,
                                       call->transcribe_model.len);
        p = ngx_sprintf(p, "\"},\n");
    }

    t = call->tokens;
    p = ngx_sprintf(p, "  \"usage\": {\"inputTextTokens\": %uL, "
                    "\"inputAudioTokens\": %uL, \"cachedInputTokens\": %uL, "
                    "\"outputTextTokens\": %uL, \"outputAudioTokens\": %uL, "
                    "\"totalTokens\": %uL},\n",
                    t[0], t[1], t[2], t[3], t[4],
                    t[0] + t[1] + t[3] + t[4]);

    ms = ngx_alloc((n + 1) * sizeof(uint32_t), call->log);
    if (ms == NULL) {
        return p;
    }

    turns = 0;

    for (i = 0; i < n; i++) {
        if (u[i].latency) {
            ms[turns++] = u[i].latency;
        }
    }

    if (turns) {
        ngx_sort(ms, turns, sizeof(uint32_t),
                 ngx_http_voice_transcript_ms_cmp);

        median = (turns % 2) ? ms[turns / 2]
                             : (ms[turns / 2 - 1] + ms[turns / 2]) / 2;

        p = ngx_sprintf(p, "  \"turnLatency\": {\"turns\": %ui, "
                        "\"medianMs\": %uD, \"maxMs\": %uD},\n",
                        turns, median, ms[turns - 1]);
    }

    ngx_free(ms);

    return p;
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
            /* not to the webhook: this call's record, which goes on
             * from it, will be */
            ngx_http_voice_recover_journal(files->dir, call->name.data,
                                           call->name.len, NULL,
                                           &io->recovered);

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

        /* the record is final: it goes to the webhook's outbox too */
        if (io->rc == NGX_OK && call->vlcf->outbox) {
            ngx_http_voice_outbox_store(call->vlcf->outbox, &io->hook,
                                        io->data, io->len, 1);
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

    ngx_http_voice_transcript_io_state(call, NGX_HTTP_VOICE_CALL_IO_IDLE);

    if (files->hold.timer_set) {
        ngx_del_timer(&files->hold);
    }

    /* the record, in memory, is the webhook's first attempt */
    if (io->op == NGX_HTTP_VOICE_TRANSCRIPT_FINAL && io->rc == NGX_OK
        && call->vlcf->outbox && io->data)
    {
        ngx_http_voice_outbox_post(call->vlcf->outbox, &io->hook, call->log,
                                   io->data, io->len);
        io->data = NULL;
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

        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_WRITTEN);
        ngx_http_voice_call_written(call);
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
    ngx_http_voice_transcript_files_t  *files;

    files = call->files;

    path = (io->op == NGX_HTTP_VOICE_TRANSCRIPT_FINAL) ? files->final
                                                        : files->journal;

    if (!files->failed_logged) {
        files->failed_logged = 1;

        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_FAILED);

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
            ngx_http_voice_metrics_inc(
                NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_LOST);

            ngx_log_error(NGX_LOG_CRIT, call->log, io->e.err,
                          "voice: call %s: the record could not be written "
                          "to \"%s\" within %M ms (%s failed): given up, "
                          "%ui utterances lost; the journal keeps those "
                          "journaled (%ui) for the next start",
                          call->call_sid, files->final,
                          call->vlcf->transcript_retry, io->e.failed,
                          call->utterances.nelts,
                          files->create ? (ngx_uint_t) 0 : call->journaled);

            ngx_http_voice_call_written(call);
            return;
        }
    }

    files->backoff = files->backoff
                     ? ngx_min(files->backoff * 2,
                               NGX_HTTP_VOICE_TRANSCRIPT_BACKOFF_MAX)
                     : NGX_HTTP_VOICE_TRANSCRIPT_BACKOFF_MIN;

    ngx_http_voice_transcript_io_state(call, NGX_HTTP_VOICE_CALL_IO_RETRY);
    ngx_add_timer(&files->retry, files->backoff);
}


/*
 * The call is done with its record (written, or given up): its timers
 * go, and a journal still held is let go (a record given up): recovery
 * takes it at the next start.  Closing a read-only descriptor writes
 * nothing back, so it does not block, as nginx's open file cache closes
 * its own in the event loop.
 */

void
ngx_http_voice_transcript_close(ngx_http_voice_call_t *call)
{
    ngx_http_voice_transcript_files_t  *files;

    files = call->files;

    if (files->retry.timer_set) {
        ngx_del_timer(&files->retry);
        ngx_http_voice_transcript_io_state(call, NGX_HTTP_VOICE_CALL_IO_IDLE);
    }

    if (files->hold.timer_set) {
        ngx_del_timer(&files->hold);
    }

    if (files->open.posted) {
        ngx_delete_posted_event(&files->open);
    }

    if (files->lock != NGX_INVALID_FILE) {
        (void) ngx_close_file(files->lock);
        files->lock = NGX_INVALID_FILE;
    }
}
