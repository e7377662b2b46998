/*
 * ngx_http_voice_live.c: the live calls.  GET /api/calls lists them from
 * the shared zone (ngx_http_voice_zone.c), whichever worker holds each;
 * GET /api/transcript/{callSid}/live streams one call's entries as
 * Server-Sent Events while it runs, then its final record, and ends.
 *
 * The stream tails the call's journal on disk rather than listening to
 * the worker that holds the call.  That worker already appends each
 * entry to the journal at once and writes the final record before it
 * removes the journal (ngx_http_voice_transcript.c), so the files hold
 * all a watcher needs, on any worker, across a reload, and on any nginx
 * host that shares the transcript directory.  A ring per call in shared
 * memory was the other way: it would have to be sized per call, would
 * hold a second copy of every entry, would lose what overflowed it, and
 * would end at the host's edge; the files cost a watcher one pread() on
 * the thread pool per tick (NGX_HTTP_VOICE_LIVE_TICK) and an entry
 * reaches it within a tick.
 *
 * Each tick runs on the thread pool, never in the event loop: it opens
 * the journal (found by the name the zone has for the call, or, when the
 * zone does not know it, by a scan of the directory), reads what was
 * appended since (NGX_HTTP_VOICE_LIVE_READ bytes at most, whole lines
 * only) and renders each entry as an event.  The journal stays open, so
 * the entries appended just before it is removed are still read; once it
 * is gone the final record is read and sent as the last event.  An
 * event's id is the entry's place in the journal (1, 2, ...), not its
 * "order": entries arrive out of conversation order (a caller's words
 * come after the reply to them), and a client that comes back with
 * Last-Event-ID must get every entry after the last it saw.  Only one
 * tick's output is in flight at a time: a slow client slows its own
 * stream, and memory stays bounded.  The stream ends too when the worker
 * exits (a reload: the client comes back to a new one with Last-Event-ID)
 * and when the call cannot be found for NGX_HTTP_VOICE_LIVE_LOST.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <dirent.h>

#include "ngx_http_voice_module.h"
#include "voice_json.h"
#include "ngx_http_voice_transcript_fmt.h"


#define NGX_HTTP_VOICE_LIVE_TICK        250     /* ms between two looks */
#define NGX_HTTP_VOICE_LIVE_KEEPALIVE   15000   /* ms of silence, then a
                                                   comment line */
#define NGX_HTTP_VOICE_LIVE_LOST        10000   /* ms a call nobody knows
                                                   may take to show up */
#define NGX_HTTP_VOICE_LIVE_READ        65536   /* journal bytes a tick
                                                   reads, unless one line
                                                   is longer */
#define NGX_HTTP_VOICE_LIVE_ID_MAX      18      /* digits of Last-Event-ID */

/* what a tick found */
#define NGX_HTTP_VOICE_LIVE_NOTHING     0       /* neither journal nor
                                                   record */
#define NGX_HTTP_VOICE_LIVE_JOURNAL     1       /* the journal: events, if
                                                   any */
#define NGX_HTTP_VOICE_LIVE_RECORD      2       /* the final record: the
                                                   end */
#define NGX_HTTP_VOICE_LIVE_FAILED      3


typedef enum {
    NGX_HTTP_VOICE_LIVE_ST_FIRST = 0,   /* the first look: 404, or the
                                           stream begins */
    NGX_HTTP_VOICE_LIVE_ST_STREAMING,
    NGX_HTTP_VOICE_LIVE_ST_DONE         /* finalized */
} ngx_http_voice_live_state_e;


/* one stream, allocated apart from the request (after its thread task):
 * the request may go while a tick is on the thread pool */
typedef struct {
    ngx_http_request_t         *request;      /* NULL once it is gone */
    ngx_thread_task_t          *task;         /* the allocation's start */
    ngx_thread_pool_t          *pool;
    ngx_http_voice_live_state_e state;
    ngx_event_t                 tick;
    ngx_buf_t                   buf;          /* what is being sent */
    ngx_chain_t                 out;
    u_char                     *sending;      /* ngx_alloc()ed, or NULL */
    ngx_msec_t                  last_sent;
    ngx_msec_t                  lost_since;   /* 0: the zone knows it */
    unsigned                    busy:1;       /* a tick is on the pool */

    /* the thread's, from one tick to the next */
    u_char                      sid[NGX_HTTP_VOICE_SID_LEN + 1];
    u_char                     *dir;          /* NUL-terminated */
    u_char                      name[NGX_HTTP_VOICE_CALL_NAME_MAX + 1];
    size_t                      name_len;     /* 0: not known yet */
    ngx_fd_t                    fd;           /* the journal, once open */
    off_t                       offset;       /* read up to */
    dev_t                       dev;
    ino_t                       ino;
    uint64_t                    seen;         /* entries of this journal
                                                 read */
    uint64_t                    sent;         /* the id of the last sent */
    unsigned                    scan:1;       /* look in the directory */

    /* one tick's result */
    ngx_uint_t                  result;
    u_char                     *data;         /* malloc()ed events */
    size_t                      len;
    ngx_http_voice_store_err_t  e;
} ngx_http_voice_live_t;


static void ngx_http_voice_live_look(ngx_http_voice_live_t *live);
static void ngx_http_voice_live_tick(ngx_event_t *ev);
static void ngx_http_voice_live_thread(void *data, ngx_log_t *log);
static void ngx_http_voice_live_scan(ngx_http_voice_live_t *live);
static void ngx_http_voice_live_open(ngx_http_voice_live_t *live);
static void ngx_http_voice_live_tail(ngx_http_voice_live_t *live);
static u_char *ngx_http_voice_live_record(ngx_http_voice_live_t *live,
    size_t *len);
static void ngx_http_voice_live_done(ngx_event_t *ev);
static ngx_int_t ngx_http_voice_live_begin(ngx_http_voice_live_t *live);
static ngx_int_t ngx_http_voice_live_send(ngx_http_voice_live_t *live,
    u_char *data, size_t len, ngx_uint_t last);
static void ngx_http_voice_live_write(ngx_http_request_t *r);
static ngx_int_t ngx_http_voice_live_wait_write(ngx_http_request_t *r);
static void ngx_http_voice_live_finish(ngx_http_voice_live_t *live,
    ngx_int_t rc);
static void ngx_http_voice_live_cleanup(void *data);
static void ngx_http_voice_live_free(ngx_http_voice_live_t *live);


static u_char  ngx_http_voice_live_keepalive[] = ": keepalive\n\n";


/*
 * GET /api/calls: the calls of every worker, as the zone has them, the
 * oldest first:
 *
 *     {"calls": [{"callSid": "CA...", "direction": "inbound",
 *       "phoneNumber": "+1...", "timestamp": "...", "state": "live"}]}
 *
 * state is ringing (placed, or answered, with no stream yet), live or
 * ending (its record is being finished); a direction not known yet is
 * null.
 */

static ngx_int_t
ngx_http_voice_live_cmp(const void *a, const void *b)
{
    const ngx_http_voice_zone_info_t  *x = a, *y = b;

    return (x->start > y->start) - (x->start < y->start);
}


ngx_int_t
ngx_http_voice_live_calls_handler(ngx_http_request_t *r)
{
    u_char                      *body, *p, stamp[32];
    size_t                       size;
    ngx_int_t                    rc;
    ngx_uint_t                   i, n;
    ngx_http_voice_zone_info_t  *list, *c;

    static const char  *stages[] = { "ringing", "live", "ending" };

    rc = ngx_http_voice_auth_reader(r);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    list = NULL;

    if (ngx_http_voice_zone_call_list(r->pool, &list, &n) == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (n > 1) {
        ngx_sort(list, n, sizeof(ngx_http_voice_zone_info_t),
                 ngx_http_voice_live_cmp);
    }

    size = sizeof("{\"calls\": []}\n")
           + n * (sizeof("{\"callSid\": \"\", \"direction\": \"outbound\", "
                         "\"phoneNumber\": \"\", \"timestamp\": \"\", "
                         "\"state\": \"ringing\"}, ")
                  + NGX_HTTP_VOICE_SID_LEN + 6 * NGX_HTTP_VOICE_PHONE_MAX
                  + NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN);

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"calls\": [", sizeof("{\"calls\": [") - 1);

    for (i = 0; i < n; i++) {
        c = &list[i];

        ngx_http_voice_transcript_fmt_time(c->start, stamp, 0);

        p = ngx_sprintf(p, "%s{\"callSid\": \"%*s\", \"direction\": %s, "
                        "\"phoneNumber\": \"", i ? ", " : "",
                        (size_t) NGX_HTTP_VOICE_SID_LEN, c->sid,
                        c->outbound < 0 ? "null"
                        : c->outbound ? "\"outbound\"" : "\"inbound\"");
        p = (u_char *) ngx_escape_json(p, c->number, c->number_len);
        p = ngx_sprintf(p, "\", \"timestamp\": \"%*s\", \"state\": \"%s\"}",
                        (size_t) NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN, stamp,
                        stages[ngx_min(c->stage,
                                       NGX_HTTP_VOICE_STAGE_ENDING)]);
    }

    p = ngx_cpymem(p, "]}\n", 3);

    return ngx_http_voice_send_json(r, NGX_HTTP_OK, body, p - body);
}


/*
 * GET /api/transcript/{callSid}/live, from the transcript location
 * (ngx_http_voice_transcript_get.c has checked the bearer token).  A
 * call with neither a journal nor a record, and unknown to the zone, is
 * 404; anything else is a stream, which the first look starts.
 */

ngx_int_t
ngx_http_voice_live_handler(ngx_http_request_t *r)
{
    u_char                     *sid, *end;
    size_t                      len;
    uint64_t                    last;
    ngx_uint_t                  i;
    ngx_table_elt_t            *h;
    ngx_thread_task_t          *task;
    ngx_pool_cleanup_t         *cln;
    ngx_http_voice_live_t      *live;
    ngx_http_voice_loc_conf_t  *vlcf;

    if (!(r->method & NGX_HTTP_GET)) {
        return ngx_http_voice_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method not allowed: use GET");
    }

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    /* .../{callSid}/live */
    end = r->uri.data + r->uri.len - (sizeof("/live") - 1);
    sid = end;
    while (sid > r->uri.data && sid[-1] != '/') {
        sid--;
    }

    len = end - sid;

    if (!ngx_http_voice_body_valid_call_sid(sid, len)) {
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid call SID: it must be CA "
                                         "followed by 32 hex digits");
    }

    /* the id of the last event a client saw: it goes on after it */

    last = 0;
    h = ngx_http_voice_header(r, "Last-Event-ID", sizeof("Last-Event-ID") - 1);

    if (h != NULL && h->value.len) {
        if (h->value.len > NGX_HTTP_VOICE_LIVE_ID_MAX) {
            return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid Last-Event-ID");
        }

        for (i = 0; i < h->value.len; i++) {
            if (h->value.data[i] < '0' || h->value.data[i] > '9') {
                return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                                 "invalid Last-Event-ID");
            }

            last = last * 10 + (h->value.data[i] - '0');
        }
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_voice_live_t)
                      + vlcf->transcript_dir.len + 1, r->connection->log);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    live = (ngx_http_voice_live_t *) (task + 1);
    task->ctx = live;
    task->handler = ngx_http_voice_live_thread;
    task->event.handler = ngx_http_voice_live_done;
    task->event.data = task;
    task->event.log = r->connection->log;

    live->request = r;
    live->task = task;
    live->pool = vlcf->thread_pool;
    live->state = NGX_HTTP_VOICE_LIVE_ST_FIRST;
    live->fd = NGX_INVALID_FILE;
    live->sent = last;
    live->dir = (u_char *) (live + 1);
    ngx_memcpy(live->dir, vlcf->transcript_dir.data,
               vlcf->transcript_dir.len);
    ngx_memcpy(live->sid, sid, NGX_HTTP_VOICE_SID_LEN);

    live->tick.handler = ngx_http_voice_live_tick;
    live->tick.data = live;
    live->tick.log = r->connection->log;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(task);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_voice_live_cleanup;
    cln->data = live;

    ngx_http_set_ctx(r, live, ngx_http_voice_module);

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    r->connection->log->action = "streaming a live call";

    ngx_http_voice_live_look(live);

    return NGX_DONE;
}


/*
 * One look: what the zone says of the call, then a tick on the thread
 * pool -- unless the call only rings (nothing is on disk yet) or the
 * last output is still going out.  The caller runs posted requests.
 */

static void
ngx_http_voice_live_look(ngx_http_voice_live_t *live)
{
    ngx_int_t                    rc;
    ngx_http_request_t          *r;
    ngx_http_voice_zone_info_t   info;

    r = live->request;

    rc = ngx_http_voice_zone_call_get(live->sid, &info);

    if (rc == NGX_OK) {
        live->lost_since = 0;
        live->scan = 0;

        if (live->name_len == 0 && info.name_len) {
            ngx_memcpy(live->name, info.name, info.name_len);
            live->name[info.name_len] = '\0';
            live->name_len = info.name_len;
        }

    } else {
        /* without a zone, or a call it no longer has: the files say */
        live->scan = (live->name_len == 0);

        if (rc == NGX_DECLINED && live->lost_since == 0) {
            live->lost_since = ngx_current_msec;
        }
    }

    if (live->state == NGX_HTTP_VOICE_LIVE_ST_FIRST && rc == NGX_OK
        && ngx_http_voice_live_begin(live) != NGX_OK)
    {
        ngx_http_voice_live_finish(live, NGX_ERROR);
        return;
    }

    if ((rc == NGX_OK && live->name_len == 0 && live->fd == NGX_INVALID_FILE)
        || live->buf.pos != live->buf.last)
    {
        if (ngx_current_msec - live->last_sent
            >= NGX_HTTP_VOICE_LIVE_KEEPALIVE
            && live->buf.pos == live->buf.last)
        {
            if (ngx_http_voice_live_send(live, ngx_http_voice_live_keepalive,
                                         sizeof(ngx_http_voice_live_keepalive)
                                         - 1, 0)
                == NGX_ERROR)
            {
                ngx_http_voice_live_finish(live, NGX_ERROR);
                return;
            }
        }

        ngx_add_timer(&live->tick, NGX_HTTP_VOICE_LIVE_TICK);
        return;
    }

    if (ngx_thread_task_post(live->pool, live->task) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "voice: the thread pool refused the live stream of "
                      "call %s", live->sid);

        if (live->state == NGX_HTTP_VOICE_LIVE_ST_FIRST) {
            ngx_http_voice_live_finish(live,
                ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "too busy, try again"));
            return;
        }

        ngx_add_timer(&live->tick, NGX_HTTP_VOICE_LIVE_TICK);
        return;
    }

    live->busy = 1;
}


static void
ngx_http_voice_live_tick(ngx_event_t *ev)
{
    ngx_connection_t       *c;
    ngx_http_voice_live_t  *live;

    live = ev->data;
    c = live->request->connection;

    /* the client left: the request is being terminated, the cleanup
     * comes */
    if (c->error) {
        return;
    }

    ngx_http_set_log_request(c->log, live->request);

    /* a reload, a graceful stop: the client comes back to another worker
     * with Last-Event-ID */

    if (ngx_exiting) {
        ngx_http_voice_live_finish(live,
            ngx_http_voice_live_send(live, NULL, 0, 1));

    } else {
        ngx_http_voice_live_look(live);
    }

    ngx_http_run_posted_requests(c);
}


/* runs in a thread of the pool: one tick */

static void
ngx_http_voice_live_thread(void *data, ngx_log_t *log)
{
    ngx_http_voice_live_t  *live = data;

    live->result = NGX_HTTP_VOICE_LIVE_NOTHING;
    live->data = NULL;
    live->len = 0;
    live->e.err = 0;
    live->e.failed = NULL;

    if (live->fd == NGX_INVALID_FILE) {

        if (live->scan) {
            ngx_http_voice_live_scan(live);
        }

        if (live->name_len == 0 || live->result != 0) {
            return;
        }

        ngx_http_voice_live_open(live);

        if (live->result != 0) {
            return;
        }

        if (live->fd == NGX_INVALID_FILE) {
            live->data = ngx_http_voice_live_record(live, &live->len);
            return;
        }
    }

    ngx_http_voice_live_tail(live);
}


static void
ngx_http_voice_live_fail(ngx_http_voice_live_t *live, const char *what)
{
    live->e.err = ngx_errno;
    live->e.failed = what;
    live->result = NGX_HTTP_VOICE_LIVE_FAILED;
}


/* the call's name, from its journal (.{name}.journal) or, with none, its
 * record ({name}.json, the latest) */

static void
ngx_http_voice_live_scan(ngx_http_voice_live_t *live)
{
    DIR            *dir;
    size_t          nlen, len;
    u_char         *name;
    ngx_uint_t      journal;
    struct dirent  *de;

    dir = opendir((char *) live->dir);
    if (dir == NULL) {
        if (ngx_errno != NGX_ENOENT) {
            ngx_http_voice_live_fail(live, "opendir()");
        }
        return;
    }

    journal = 0;

    while ((de = readdir(dir)) != NULL) {
        name = (u_char *) de->d_name;
        nlen = ngx_strlen(name);

        if (nlen > sizeof(".journal") && name[0] == '.'
            && ngx_strcmp(name + nlen - 8, ".journal") == 0)
        {
            name++;
            len = nlen - 9;
            journal = 1;

        } else if (!journal && nlen > sizeof(".json")
                   && ngx_strcmp(name + nlen - 5, ".json") == 0)
        {
            len = nlen - 5;

        } else {
            continue;
        }

        if (len <= NGX_HTTP_VOICE_SID_LEN || len > NGX_HTTP_VOICE_CALL_NAME_MAX
            || ngx_strncmp(name, live->sid, NGX_HTTP_VOICE_SID_LEN) != 0
            || name[NGX_HTTP_VOICE_SID_LEN] != '_')
        {
            continue;
        }

        /* a journal wins; of records, the latest name (a clock step) */
        if (journal || live->name_len == 0
            || ngx_memn2cmp(name, live->name, len, live->name_len) > 0)
        {
            ngx_memcpy(live->name, name, len);
            live->name[len] = '\0';
            live->name_len = len;
        }

        if (journal) {
            break;
        }
    }

    (void) closedir(dir);
}


static void
ngx_http_voice_live_open(ngx_http_voice_live_t *live)
{
    u_char           path[NGX_MAX_PATH];
    ngx_file_info_t  fi;

    if (ngx_strlen(live->dir) + live->name_len + 10 > sizeof(path)) {
        return;
    }

    ngx_sprintf(path, "%s.%s.journal%Z", live->dir, live->name);

    live->fd = open((char *) path, O_RDONLY | O_CLOEXEC);

    if (live->fd == NGX_INVALID_FILE) {
        if (ngx_errno != NGX_ENOENT) {
            ngx_http_voice_live_fail(live, "open() journal");
        }
        return;
    }

    if (ngx_fd_info(live->fd, &fi) == -1) {
        ngx_http_voice_live_fail(live, "fstat() journal");
        (void) ngx_close_file(live->fd);
        live->fd = NGX_INVALID_FILE;
        return;
    }

    /* a journal made again: its entries again, those sent skipped */
    live->dev = fi.st_dev;
    live->ino = fi.st_ino;
    live->offset = 0;
    live->seen = 0;
}


/* an entry's line, as ngx_http_voice_transcript.c journals it */

static ngx_uint_t
ngx_http_voice_live_is_entry(u_char *line, size_t len,
    voice_json_tok_t *toks)
{
    if (len < sizeof("{\"order\":") - 1
        || ngx_strncmp(line, "{\"order\":", sizeof("{\"order\":") - 1) != 0)
    {
        return 0;
    }

    /* a line torn by a crash, or by a failed write, is left out */

    return voice_json_parse(line, len, toks,
                            NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS,
                            NULL) > 0
           && toks[0].type == VOICE_JSON_OBJECT;
}


/*
 * What was appended since the last tick, as events: whole lines only (one
 * being written is read at the next tick).  At its end, whether the
 * journal is still there: gone, the final record follows (it is written
 * before the journal goes); replaced, it is opened again next time.
 */

static void
ngx_http_voice_live_tail(ngx_http_voice_live_t *live)
{
    u_char                     *buf, *p, *q, *end, *out, *o, *rec, *all;
    u_char                      path[NGX_MAX_PATH];
    size_t                      size, complete, lines, rec_len;
    ssize_t                     n;
    ngx_file_info_t             fi;
    voice_json_tok_t           *toks;

    live->result = NGX_HTTP_VOICE_LIVE_JOURNAL;

    size = NGX_HTTP_VOICE_LIVE_READ;

    for ( ;; ) {
        buf = malloc(size);
        if (buf == NULL) {
            ngx_http_voice_live_fail(live, "malloc()");
            return;
        }

        n = pread(live->fd, buf, size, live->offset);
        if (n == -1) {
            ngx_http_voice_live_fail(live, "pread() journal");
            free(buf);
            return;
        }

        p = ngx_strlchr(buf, buf + n, '\n');

        /* a line longer than what was read: read more, within a record's
         * bound */
        if (p == NULL && (size_t) n == size
            && size < NGX_HTTP_VOICE_STORE_MAX_RECORD)
        {
            free(buf);
            size *= 4;
            continue;
        }

        break;
    }

    complete = 0;
    lines = 0;

    for (p = buf; p < buf + n; p++) {
        if (*p == '\n') {
            complete = p + 1 - buf;
            lines++;
        }
    }

    out = malloc(complete
                 + lines * (sizeof("id: \nevent: utterance\ndata: \n\n")
                            + NGX_INT64_LEN) + 1);
    toks = malloc(NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS
                  * sizeof(voice_json_tok_t));

    if (out == NULL || toks == NULL) {
        ngx_http_voice_live_fail(live, "malloc()");
        free(out);
        free(toks);
        free(buf);
        return;
    }

    o = out;
    end = buf + complete;

    for (p = buf; p < end; p = q + 1) {
        q = ngx_strlchr(p, end, '\n');

        if (!ngx_http_voice_live_is_entry(p, q - p, toks)) {
            continue;
        }

        if (++live->seen <= live->sent) {
            continue;
        }

        live->sent = live->seen;
        o = ngx_sprintf(o, "id: %uL\nevent: utterance\ndata: ", live->sent);
        o = ngx_cpymem(o, p, q - p);
        o = ngx_cpymem(o, "\n\n", 2);
    }

    free(toks);
    free(buf);

    live->offset += complete;
    live->data = out;
    live->len = o - out;

    if ((size_t) n == size) {
        return;     /* more to read next tick */
    }

    ngx_sprintf(path, "%s.%s.journal%Z", live->dir, live->name);

    if (ngx_file_info(path, &fi) == -1) {

        if (ngx_errno != NGX_ENOENT) {
            ngx_http_voice_live_fail(live, "stat() journal");
            return;
        }

        /* the call is over: its record */

        (void) ngx_close_file(live->fd);
        live->fd = NGX_INVALID_FILE;

        rec = ngx_http_voice_live_record(live, &rec_len);

        if (rec == NULL) {
            return;
        }

        all = malloc(live->len + rec_len);
        if (all == NULL) {
            ngx_http_voice_live_fail(live, "malloc()");
            free(rec);
            return;
        }

        ngx_memcpy(all, out, live->len);
        ngx_memcpy(all + live->len, rec, rec_len);
        free(rec);
        free(out);

        live->data = all;
        live->len += rec_len;
        return;
    }

    if (fi.st_dev != live->dev || fi.st_ino != live->ino) {
        (void) ngx_close_file(live->fd);
        live->fd = NGX_INVALID_FILE;
        return;
    }

    /* cut back after a failed write, then written again: read again */
    if (ngx_fd_info(live->fd, &fi) == 0 && ngx_file_size(&fi) < live->offset)
    {
        live->offset = 0;
        live->seen = 0;
    }
}


/*
 * The final record, {name}.json, as the last event, one data line per
 * line of it; NULL when it is not there (yet), or on an error (then
 * live->result says so).
 */

static u_char *
ngx_http_voice_live_record(ngx_http_voice_live_t *live, size_t *len)
{
    u_char    *buf, *out, *o, *p, *q, *end;
    u_char     path[NGX_MAX_PATH];
    size_t     lines, n;
    ngx_fd_t   fd;

    *len = 0;

    if (ngx_strlen(live->dir) + live->name_len + 6 > sizeof(path)) {
        return NULL;
    }

    ngx_sprintf(path, "%s%s.json%Z", live->dir, live->name);

    fd = open((char *) path, O_RDONLY | O_CLOEXEC);
    if (fd == NGX_INVALID_FILE) {
        if (ngx_errno != NGX_ENOENT) {
            ngx_http_voice_live_fail(live, "open() record");
        }
        return NULL;
    }

    if (ngx_http_voice_store_read_fd(fd, NGX_HTTP_VOICE_STORE_MAX_RECORD,
                                     &buf, &n, &live->e)
        != NGX_OK)
    {
        live->result = NGX_HTTP_VOICE_LIVE_FAILED;
        (void) ngx_close_file(fd);
        return NULL;
    }

    (void) ngx_close_file(fd);

    /* the record ends with a newline: the last data line ends there */
    end = buf + n;
    if (n && end[-1] == '\n') {
        end--;
    }

    lines = 1;
    for (p = buf; p < end; p++) {
        lines += (*p == '\n');
    }

    out = malloc(sizeof("event: record\n\n") + (end - buf)
                 + lines * sizeof("data: \n"));
    if (out == NULL) {
        ngx_http_voice_live_fail(live, "malloc()");
        free(buf);
        return NULL;
    }

    o = ngx_cpymem(out, "event: record\n", sizeof("event: record\n") - 1);

    for (p = buf; p <= end; p = q + 1) {
        q = ngx_strlchr(p, end, '\n');
        if (q == NULL) {
            q = end;
        }

        o = ngx_cpymem(o, "data: ", sizeof("data: ") - 1);
        o = ngx_cpymem(o, p, q - p);
        *o++ = '\n';
    }

    *o++ = '\n';

    free(buf);

    live->result = NGX_HTTP_VOICE_LIVE_RECORD;
    *len = o - out;

    return out;
}


static void
ngx_http_voice_live_done(ngx_event_t *ev)
{
    u_char                 *data;
    ngx_int_t               rc;
    ngx_connection_t       *c;
    ngx_thread_task_t      *task;
    ngx_http_request_t     *r;
    ngx_http_voice_live_t  *live;

    task = ev->data;
    live = task->ctx;
    live->busy = 0;
    r = live->request;

    data = live->data;
    live->data = NULL;

    if (r == NULL) {
        free(data);
        ngx_http_voice_live_free(live);
        return;
    }

    c = r->connection;

    if (c->error) {
        free(data);
        return;
    }

    ngx_http_set_log_request(c->log, r);

    if (live->result == NGX_HTTP_VOICE_LIVE_FAILED) {
        free(data);

        ngx_log_error(NGX_LOG_ERR, c->log, live->e.err,
                      "voice: live stream of call %s: %s failed in \"%s\"",
                      live->sid, live->e.failed, live->dir);

        if (live->state == NGX_HTTP_VOICE_LIVE_ST_FIRST) {
            rc = ngx_http_voice_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "cannot read the transcript");
        } else {
            rc = ngx_http_voice_live_send(live, NULL, 0, 1);
        }

        ngx_http_voice_live_finish(live, rc);
        goto done;
    }

    if (live->state == NGX_HTTP_VOICE_LIVE_ST_FIRST) {

        if (live->result == NGX_HTTP_VOICE_LIVE_NOTHING) {
            free(data);
            ngx_http_voice_live_finish(live,
                ngx_http_voice_send_error(r, NGX_HTTP_NOT_FOUND,
                                          "no live call and no transcript "
                                          "for call %s", live->sid));
            goto done;
        }

        if (ngx_http_voice_live_begin(live) != NGX_OK) {
            free(data);
            ngx_http_voice_live_finish(live, NGX_ERROR);
            goto done;
        }
    }

    if (live->result == NGX_HTTP_VOICE_LIVE_RECORD) {
        ngx_http_voice_live_finish(live,
            ngx_http_voice_live_send(live, data, live->len, 1));
        goto done;
    }

    /* the call cannot be found: not in the zone, not on disk */

    if (live->result == NGX_HTTP_VOICE_LIVE_NOTHING && live->lost_since
        && ngx_current_msec - live->lost_since >= NGX_HTTP_VOICE_LIVE_LOST)
    {
        free(data);
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "voice: live stream of call %s: the call is gone "
                      "without a record, ending the stream", live->sid);
        ngx_http_voice_live_finish(live,
                                   ngx_http_voice_live_send(live, NULL, 0, 1));
        goto done;
    }

    if (live->len) {
        rc = ngx_http_voice_live_send(live, data, live->len, 0);

    } else {
        free(data);
        rc = NGX_OK;

        if (ngx_current_msec - live->last_sent
            >= NGX_HTTP_VOICE_LIVE_KEEPALIVE)
        {
            rc = ngx_http_voice_live_send(live, ngx_http_voice_live_keepalive,
                                       sizeof(ngx_http_voice_live_keepalive)
                                       - 1, 0);
        }
    }

    if (rc == NGX_ERROR) {
        ngx_http_voice_live_finish(live, NGX_ERROR);
        goto done;
    }

    ngx_add_timer(&live->tick, NGX_HTTP_VOICE_LIVE_TICK);

done:

    ngx_http_run_posted_requests(c);
}


/* the stream's headers: 200, text/event-stream, nothing cached */

static ngx_int_t
ngx_http_voice_live_begin(ngx_http_voice_live_t *live)
{
    ngx_int_t            rc;
    ngx_uint_t           i;
    ngx_table_elt_t     *h;
    ngx_http_request_t  *r;

    /* nothing cached; a proxy in front (nginx's own) passes each event
     * on at once */
    static ngx_str_t  headers[][2] = {
        { ngx_string("Cache-Control"), ngx_string("no-cache") },
        { ngx_string("X-Accel-Buffering"), ngx_string("no") }
    };

    r = live->request;

    r->headers_out.status = NGX_HTTP_OK;
    ngx_str_set(&r->headers_out.content_type, "text/event-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    for (i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        h->key = headers[i][0];
        h->value = headers[i][1];
    }

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK) {
        return NGX_ERROR;
    }

    live->state = NGX_HTTP_VOICE_LIVE_ST_STREAMING;
    live->last_sent = ngx_current_msec;

    r->write_event_handler = ngx_http_voice_live_write;

    return NGX_OK;
}


/*
 * Sends data (len bytes, malloc()ed and now the stream's, or the
 * keepalive comment), flushed; last ends the response.  Data is only
 * sent once what was sent before is out: the buffer is reused.
 */

static ngx_int_t
ngx_http_voice_live_send(ngx_http_voice_live_t *live, u_char *data,
    size_t len, ngx_uint_t last)
{
    ngx_int_t            rc;
    ngx_buf_t           *b;
    ngx_http_request_t  *r;

    r = live->request;

    if (live->state != NGX_HTTP_VOICE_LIVE_ST_STREAMING) {
        free(data == ngx_http_voice_live_keepalive ? NULL : data);
        return NGX_ERROR;
    }

    /* the end alone: what is still going out (a reload does not wait for
     * a slow client) is left as it is */
    if (len == 0) {
        return ngx_http_send_special(r, NGX_HTTP_LAST|NGX_HTTP_FLUSH);
    }

    free(live->sending);
    live->sending = (data == ngx_http_voice_live_keepalive) ? NULL : data;

    b = &live->buf;
    ngx_memzero(b, sizeof(ngx_buf_t));

    b->start = data;
    b->pos = data;
    b->last = data + len;
    b->end = data + len;
    b->memory = 1;
    b->flush = 1;
    b->last_buf = last;
    b->last_in_chain = 1;

    live->out.buf = b;
    live->out.next = NULL;
    live->last_sent = ngx_current_msec;

    rc = ngx_http_output_filter(r, &live->out);

    if (rc != NGX_ERROR && !last && ngx_http_voice_live_wait_write(r) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return rc;
}


/* the client reads slowly: what is left goes when it can take it */

static void
ngx_http_voice_live_write(ngx_http_request_t *r)
{
    ngx_event_t            *wev;
    ngx_http_voice_live_t  *live;

    wev = r->connection->write;
    live = ngx_http_get_module_ctx(r, ngx_http_voice_module);

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, NGX_ETIMEDOUT,
                      "voice: live stream client timed out");
        r->connection->timedout = 1;
        ngx_http_voice_live_finish(live, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    if (ngx_http_output_filter(r, NULL) == NGX_ERROR
        || ngx_http_voice_live_wait_write(r) != NGX_OK)
    {
        ngx_http_voice_live_finish(live, NGX_ERROR);
    }
}


static ngx_int_t
ngx_http_voice_live_wait_write(ngx_http_request_t *r)
{
    ngx_event_t               *wev;
    ngx_http_core_loc_conf_t  *clcf;

    wev = r->connection->write;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (!r->buffered && !r->connection->buffered) {
        if (wev->timer_set) {
            ngx_del_timer(wev);
        }
        return NGX_OK;
    }

    if (!wev->delayed) {
        ngx_add_timer(wev, clcf->send_timeout);
    }

    return ngx_handle_write_event(wev, clcf->send_lowat);
}


/* the stream's one end: no more ticks, the request finalized once */

static void
ngx_http_voice_live_finish(ngx_http_voice_live_t *live, ngx_int_t rc)
{
    ngx_http_request_t  *r;

    if (live->state == NGX_HTTP_VOICE_LIVE_ST_DONE) {
        return;
    }

    live->state = NGX_HTTP_VOICE_LIVE_ST_DONE;

    if (live->tick.timer_set) {
        ngx_del_timer(&live->tick);
    }

    r = live->request;
    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_http_finalize_request(r, rc);
}


/* the request goes: a tick on the pool frees the stream when it is back */

static void
ngx_http_voice_live_cleanup(void *data)
{
    ngx_http_voice_live_t  *live = data;

    live->request = NULL;

    if (live->tick.timer_set) {
        ngx_del_timer(&live->tick);
    }

    if (!live->busy) {
        ngx_http_voice_live_free(live);
    }
}


static void
ngx_http_voice_live_free(ngx_http_voice_live_t *live)
{
    if (live->fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(live->fd);
    }

    free(live->sending);
    ngx_free(live->task);
}
