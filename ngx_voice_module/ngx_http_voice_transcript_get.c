/*
 * ngx_http_voice_transcript_get.c: the records, read back: GET
 * /api/transcript/{callSid}, a call's record as JSON or, with
 * ?format=text, as plain "User:" / "Assistant:" lines
 * (ngx_http_voice_transcript_fmt.c); DELETE removes it; GET
 * /api/transcripts lists them.  GET /api/transcript/{callSid}/live is
 * ngx_http_voice_live.c's.
 *
 * The record is found by scanning the transcript directory for the file
 * whose name is a record's of the call SID ({callSid}_{phone}_{start}.json,
 * written by ngx_http_voice_transcript.c; the walk over the names is
 * ngx_http_voice_transcript_fmt.c's).  The scan and the read run on
 * nginx's thread pool, never in the event loop: a lookup and a listing
 * are each one task, set up, posted and answered by the same functions
 * (ngx_http_voice_transcript_get_*()).  A call SID is checked strictly
 * (CA and 32 hex digits), which alone keeps the lookup inside the
 * directory.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"
#include "voice_json.h"
#include "ngx_http_voice_transcript_fmt.h"


/* the record files one DELETE removes, at most */
#define NGX_HTTP_VOICE_TRANSCRIPT_REMOVE_MAX  8

/* a record's file name, and its NUL */
#define NGX_HTTP_VOICE_RECORD_NAME    (NGX_HTTP_VOICE_TRANSCRIPT_FILE_MAX + 1)

/* GET /api/transcripts: records a page, by default and at most; the
 * longest argument */
#define NGX_HTTP_VOICE_LIST_DEFAULT   50
#define NGX_HTTP_VOICE_LIST_MAX       500
#define NGX_HTTP_VOICE_LIST_ARG_MAX   64

/* the key a record sorts by: its time, then its call SID */
#define NGX_HTTP_VOICE_LIST_KEY_LEN                                           \
    (NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN + NGX_HTTP_VOICE_SID_LEN)


typedef struct ngx_http_voice_transcript_get_s
    ngx_http_voice_transcript_get_t;

/* the response, once the thread is done (the request is still there) */
typedef ngx_int_t (*ngx_http_voice_transcript_get_answer_pt)(
    ngx_http_request_t *r, ngx_http_voice_transcript_get_t *get);


/*
 * What a lookup and a listing share: a task of the thread pool, allocated
 * apart from the request, which may go away while the thread reads.  The
 * task holds its context, which begins with this, and the directory.
 */
struct ngx_http_voice_transcript_get_s {
    ngx_http_request_t         *request;      /* NULL once it is gone */
    ngx_thread_task_t          *task;
    u_char                     *dir;          /* NUL-terminated */
    void                       *data;         /* malloc()ed by the thread,
                                                 freed with the task */
    ngx_http_voice_transcript_get_answer_pt  answer;
    ngx_uint_t                  status;       /* the thread's finding */
    ngx_err_t                   err;
};


/* one record of a listing, from its file name */
typedef struct {
    u_char                      key[NGX_HTTP_VOICE_LIST_KEY_LEN];
    u_char                      phone[NGX_HTTP_VOICE_PHONE_MAX];
    size_t                      phone_len;
} ngx_http_voice_list_entry_t;


/* a listing */
typedef struct {
    ngx_http_voice_transcript_get_t  get;
    ngx_uint_t                  limit;
    u_char                      number[NGX_HTTP_VOICE_LIST_ARG_MAX];
    size_t                      number_len;
    u_char                      since[NGX_HTTP_VOICE_LIST_ARG_MAX];
    size_t                      since_len;
    u_char                      until[NGX_HTTP_VOICE_LIST_ARG_MAX];
    size_t                      until_len;
    u_char                      before[NGX_HTTP_VOICE_LIST_KEY_LEN];
    unsigned                    has_before:1;

    ngx_http_voice_list_entry_t  *found;      /* get.data: limit + 1,
                                                 newest first */
    ngx_uint_t                  nfound;
} ngx_http_voice_list_t;


/* a transcript lookup, or a deletion */
typedef struct {
    ngx_http_voice_transcript_get_t  get;     /* get.data: the answer */
    u_char                      sid[NGX_HTTP_VOICE_SID_LEN + 1];
    unsigned                    text:1;
    unsigned                    remove:1;     /* DELETE */
    size_t                      len;
} ngx_http_voice_transcript_lookup_t;


static ngx_http_voice_transcript_get_t *ngx_http_voice_transcript_get_alloc(
    ngx_http_request_t *r, size_t size);
static ngx_int_t ngx_http_voice_transcript_get_post(ngx_http_request_t *r,
    ngx_http_voice_transcript_get_t *get,
    void (*thread)(void *data, ngx_log_t *log),
    ngx_http_voice_transcript_get_answer_pt answer);
static void ngx_http_voice_transcript_get_cleanup(void *data);
static void ngx_http_voice_transcript_get_done(ngx_event_t *ev);
static void ngx_http_voice_transcript_lookup_thread(void *data,
    ngx_log_t *log);
static ngx_int_t ngx_http_voice_transcript_lookup_answer(
    ngx_http_request_t *r, ngx_http_voice_transcript_get_t *get);
static void ngx_http_voice_transcript_remove(
    ngx_http_voice_transcript_lookup_t *lk,
    ngx_http_voice_transcript_fmt_dir_t *d);
static void ngx_http_voice_list_thread(void *data, ngx_log_t *log);
static ngx_int_t ngx_http_voice_list_answer(ngx_http_request_t *r,
    ngx_http_voice_transcript_get_t *get);


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
    ngx_http_voice_transcript_lookup_t  *lk;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_voice_auth_check(r);
    if (rc != NGX_OK) {
        return ngx_http_voice_auth_refuse(r, rc);
    }

    /* {callSid}/live: the record as it grows, in the same location, so
     * that a configuration needs nothing new for it */

    if (r->uri.len > sizeof("/live") - 1
        && ngx_strncmp(r->uri.data + r->uri.len - (sizeof("/live") - 1),
                       "/live", sizeof("/live") - 1) == 0)
    {
        return ngx_http_voice_live_handler(r);
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_DELETE))) {
        return ngx_http_voice_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method not allowed: use GET or "
                                         "DELETE");
    }

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

    ngx_http_voice_log_call(r, sid, len);

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

    lk = (ngx_http_voice_transcript_lookup_t *)
         ngx_http_voice_transcript_get_alloc(
             r, sizeof(ngx_http_voice_transcript_lookup_t));
    if (lk == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(lk->sid, sid, NGX_HTTP_VOICE_SID_LEN);
    lk->text = text;
    lk->remove = (r->method == NGX_HTTP_DELETE);

    return ngx_http_voice_transcript_get_post(r, &lk->get,
                                   ngx_http_voice_transcript_lookup_thread,
                                   ngx_http_voice_transcript_lookup_answer);
}


/*
 * The task of a lookup or a listing: size bytes of its context (which
 * begins with ngx_http_voice_transcript_get_t), zeroed, then the
 * location's transcript directory.  NULL when memory is short.
 */

static ngx_http_voice_transcript_get_t *
ngx_http_voice_transcript_get_alloc(ngx_http_request_t *r, size_t size)
{
    ngx_thread_task_t                *task;
    ngx_http_voice_loc_conf_t        *vlcf;
    ngx_http_voice_transcript_get_t  *get;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    task = ngx_calloc(sizeof(ngx_thread_task_t) + size
                      + vlcf->transcript_dir.len + 1, r->connection->log);
    if (task == NULL) {
        return NULL;
    }

    get = (ngx_http_voice_transcript_get_t *) (task + 1);
    task->ctx = get;

    get->task = task;
    get->dir = (u_char *) get + size;
    ngx_memcpy(get->dir, vlcf->transcript_dir.data, vlcf->transcript_dir.len);

    return get;
}


/*
 * Posts get's task to the location's thread pool: thread runs there, then
 * answer responds (ngx_http_voice_transcript_get_done()).  Returns
 * NGX_DONE, the request held until then, or a response once the task is
 * freed.
 */

static ngx_int_t
ngx_http_voice_transcript_get_post(ngx_http_request_t *r,
    ngx_http_voice_transcript_get_t *get,
    void (*thread)(void *data, ngx_log_t *log),
    ngx_http_voice_transcript_get_answer_pt answer)
{
    ngx_thread_task_t          *task;
    ngx_pool_cleanup_t         *cln;
    ngx_http_voice_loc_conf_t  *vlcf;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);
    task = get->task;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(task);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    get->request = r;
    get->answer = answer;

    task->handler = thread;
    task->event.handler = ngx_http_voice_transcript_get_done;
    task->event.data = task;
    task->event.log = r->connection->log;

    if (ngx_thread_task_post(vlcf->thread_pool, task) != NGX_OK) {
        ngx_free(task);
        return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "too busy, try again");
    }

    cln->handler = ngx_http_voice_transcript_get_cleanup;
    cln->data = get;

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


static void
ngx_http_voice_transcript_get_cleanup(void *data)
{
    ngx_http_voice_transcript_get_t  *get = data;

    /* the task is still in the pool's hands: it finds no request and only
     * frees itself */
    get->request = NULL;
}


static void
ngx_http_voice_transcript_get_done(ngx_event_t *ev)
{
    ngx_int_t                         rc;
    ngx_connection_t                 *c;
    ngx_thread_task_t                *task;
    ngx_http_request_t               *r;
    ngx_http_voice_transcript_get_t  *get;

    task = ev->data;
    get = task->ctx;
    r = get->request;

    if (r != NULL) {
        c = r->connection;
        ngx_http_set_log_request(c->log, r);

        rc = get->answer(r, get);

        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }

    free(get->data);
    ngx_free(task);
}


/* runs in a thread of the pool */

static void
ngx_http_voice_transcript_lookup_thread(void *data, ngx_log_t *log)
{
    int                                  fd;
    u_char                              *buf, *text, path[NGX_MAX_PATH];
    size_t                               best_len, ntoks;
    ssize_t                              n;
    ngx_uint_t                           fits;
    struct stat                          st;
    voice_json_tok_t                    *toks;
    ngx_http_voice_transcript_get_t     *get;
    ngx_http_voice_transcript_lookup_t  *lk;
    ngx_http_voice_transcript_fmt_dir_t  d;
    char                                 best[NGX_HTTP_VOICE_RECORD_NAME];

    get = data;
    lk = data;
    get->status = NGX_HTTP_NOT_FOUND;
    best_len = 0;
    fits = 0;

    if (ngx_http_voice_transcript_fmt_dir_open(&d, (char *) get->dir,
                                               lk->sid)
        != 0)
    {
        get->err = ngx_errno;
        get->status = (get->err == NGX_ENOENT)
                      ? NGX_HTTP_NOT_FOUND : NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    if (lk->remove) {
        ngx_http_voice_transcript_remove(lk, &d);
        return;
    }

    /* a call has one record, but if several match (a clock step), the
     * latest name wins */
    while (ngx_http_voice_transcript_fmt_dir_next(&d)) {

        if (best_len == 0 || ngx_strcmp(d.name, best) > 0) {
            ngx_memcpy(best, d.name, d.len + 1);
            best_len = d.len;

            fits = (d.path != NULL);
            if (fits) {
                (void) ngx_cpystrn(path, (u_char *) d.path, sizeof(path));
            }
        }
    }

    ngx_http_voice_transcript_fmt_dir_close(&d);

    if (best_len == 0) {
        return;
    }

    if (!fits) {
        get->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    fd = open((char *) path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        get->err = ngx_errno;
        get->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    if (fstat(fd, &st) == -1 || st.st_size > NGX_HTTP_VOICE_STORE_MAX_RECORD)
    {
        get->err = ngx_errno;
        get->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        (void) close(fd);
        return;
    }

    buf = malloc(st.st_size + 1);
    if (buf == NULL) {
        get->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        (void) close(fd);
        return;
    }

    n = read(fd, buf, st.st_size);
    (void) close(fd);

    if (n != st.st_size) {
        get->err = ngx_errno;
        get->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        free(buf);
        return;
    }

    get->data = buf;
    lk->len = n;
    get->status = NGX_HTTP_OK;

    if (!lk->text) {
        return;
    }

    ntoks = n / 2 + 2;
    toks = malloc(ntoks * sizeof(voice_json_tok_t));
    text = malloc(n + 1);

    if (toks == NULL || text == NULL) {
        free(toks);
        free(text);
        get->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    lk->len = ngx_http_voice_transcript_fmt_text(buf, n, toks, ntoks, text,
                                                 n + 1);
    free(toks);
    free(buf);
    get->data = text;

    if (lk->len == (size_t) -1) {
        lk->len = 0;
        get->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


/*
 * DELETE: the call's record files go ({sid}_*.json: one, or more after a
 * clock step).  Not while the call is live or its record is being
 * written (its journal, or a temporary file, is there): 409, and the
 * client asks again once the call is over.  Runs in a thread of the pool,
 * on the walk the lookup opened (it closes it).
 */

static void
ngx_http_voice_transcript_remove(ngx_http_voice_transcript_lookup_t *lk,
    ngx_http_voice_transcript_fmt_dir_t *d)
{
    const char                       *path;
    ngx_uint_t                        i, n, live;
    ngx_http_voice_transcript_get_t  *get;
    char                              names
                                      [NGX_HTTP_VOICE_TRANSCRIPT_REMOVE_MAX]
                                      [NGX_HTTP_VOICE_RECORD_NAME];

    get = &lk->get;

    /* the whole directory is read before anything goes: a journal may
     * come last */
    n = 0;

    while (ngx_http_voice_transcript_fmt_dir_next(d)) {
        if (n < NGX_HTTP_VOICE_TRANSCRIPT_REMOVE_MAX) {
            ngx_memcpy(names[n++], d->name, d->len + 1);
        }
    }

    live = d->live;
    ngx_http_voice_transcript_fmt_dir_close(d);

    if (live) {
        get->status = NGX_HTTP_CONFLICT;
        return;
    }

    for (i = 0; i < n; i++) {
        path = ngx_http_voice_transcript_fmt_dir_path(d, names[i],
                                                      ngx_strlen(names[i]));
        if (path == NULL) {
            continue;
        }

        if (unlink(path) == -1 && ngx_errno != NGX_ENOENT) {
            get->err = ngx_errno;
            get->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return;
        }
    }

    get->status = n ? NGX_HTTP_NO_CONTENT : NGX_HTTP_NOT_FOUND;
}


static ngx_int_t
ngx_http_voice_transcript_lookup_answer(ngx_http_request_t *r,
    ngx_http_voice_transcript_get_t *get)
{
    u_char                              *body;
    ngx_int_t                            rc;
    ngx_buf_t                           *b;
    ngx_chain_t                          out;
    ngx_http_voice_transcript_lookup_t  *lk;

    lk = (ngx_http_voice_transcript_lookup_t *) get;

    if (get->status == NGX_HTTP_NOT_FOUND) {
        return ngx_http_voice_send_error(r, NGX_HTTP_NOT_FOUND,
                                         "no transcript for call %s",
                                         lk->sid);
    }

    if (get->status == NGX_HTTP_CONFLICT) {
        return ngx_http_voice_send_error(r, NGX_HTTP_CONFLICT,
                                         "call %s is live: its record is "
                                         "not written yet", lk->sid);
    }

    if (get->status == NGX_HTTP_NO_CONTENT) {
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "voice: the record of call %s was deleted", lk->sid);

        r->headers_out.status = NGX_HTTP_NO_CONTENT;
        r->headers_out.content_length_n = 0;
        r->header_only = 1;
        return ngx_http_send_header(r);
    }

    if (get->status != NGX_HTTP_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, get->err,
                      "voice: cannot %s the transcript of %s in \"%s\"",
                      lk->remove ? "delete" : "read", lk->sid, get->dir);
        return ngx_http_voice_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         lk->remove
                                         ? "cannot delete the transcript"
                                         : "cannot read the transcript");
    }

    body = ngx_pnalloc(r->pool, lk->len ? lk->len : 1);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(body, get->data, lk->len);

    if (!lk->text) {
        return ngx_http_voice_send_json(r, NGX_HTTP_OK, body, lk->len);
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = lk->len;
    ngx_str_set(&r->headers_out.content_type, "text/plain; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    if (lk->len == 0) {
        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = body + lk->len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;
    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * GET /api/transcripts: the stored records, newest first, by the start
 * time and call SID their file names hold -- no file is opened, so a
 * listing costs one directory scan on the thread pool --, filtered by
 * ?number= (the other party, as the file name has it), ?since= and
 * ?until= (ISO 8601 times, or their start, "2026-12-06": since is
 * inclusive, until exclusive), ?limit= (1..500, 50) at a time; ?before=
 * takes the "next" of the page before.  The answer:
 *
 *     {"transcripts": [{"callSid": "CA...", "phoneNumber": "+1...",
 *       "timestamp": "..."}, ...], "next": "..." or null}
 */

/* an argument of [0-9A-Za-z+:.-] only, at most max bytes: 1, else 0 */

static ngx_uint_t
ngx_http_voice_list_arg(ngx_http_request_t *r, const char *name,
    u_char *dst, size_t max, size_t *len, ngx_int_t *bad)
{
    size_t     i;
    ngx_str_t  v;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &v) != NGX_OK) {
        return 0;
    }

    if (v.len == 0 || v.len > max) {
        *bad = 1;
        return 0;
    }

    /* %2B is how a client sends the + of a number */
    if (v.len >= 3 && ngx_strncasecmp(v.data, (u_char *) "%2B", 3) == 0) {
        dst[0] = '+';
        ngx_memcpy(dst + 1, v.data + 3, v.len - 3);
        *len = v.len - 2;

    } else {
        ngx_memcpy(dst, v.data, v.len);
        *len = v.len;
    }

    for (i = 0; i < *len; i++) {
        if (!((dst[i] >= '0' && dst[i] <= '9')
              || ((dst[i] | 0x20) >= 'a' && (dst[i] | 0x20) <= 'z')
              || dst[i] == '+' || dst[i] == ':' || dst[i] == '.'
              || dst[i] == '-' || dst[i] == '_'))
        {
            *bad = 1;
            return 0;
        }
    }

    return 1;
}


ngx_int_t
ngx_http_voice_transcripts_handler(ngx_http_request_t *r)
{
    size_t                  len;
    ngx_int_t               rc, bad, n;
    ngx_str_t               v;
    ngx_http_voice_list_t  *ls;
    u_char                  before[NGX_HTTP_VOICE_LIST_ARG_MAX + 8];

    rc = ngx_http_voice_auth_reader(r);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ls = (ngx_http_voice_list_t *)
         ngx_http_voice_transcript_get_alloc(r, sizeof(ngx_http_voice_list_t));
    if (ls == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ls->limit = NGX_HTTP_VOICE_LIST_DEFAULT;

    bad = 0;

    (void) ngx_http_voice_list_arg(r, "number", ls->number,
                                   NGX_HTTP_VOICE_PHONE_MAX, &ls->number_len,
                                   &bad);
    (void) ngx_http_voice_list_arg(r, "since", ls->since,
                                   NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN,
                                   &ls->since_len, &bad);
    (void) ngx_http_voice_list_arg(r, "until", ls->until,
                                   NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN,
                                   &ls->until_len, &bad);

    /* the key of the last record of the page before */
    if (ngx_http_voice_list_arg(r, "before", before,
                                NGX_HTTP_VOICE_LIST_KEY_LEN, &len, &bad))
    {
        if (len != NGX_HTTP_VOICE_LIST_KEY_LEN) {
            bad = 1;

        } else {
            ngx_memcpy(ls->before, before, len);
            ls->has_before = 1;
        }
    }

    if (ngx_http_arg(r, (u_char *) "limit", 5, &v) == NGX_OK) {
        n = ngx_atoi(v.data, v.len);

        if (n < 1 || n > NGX_HTTP_VOICE_LIST_MAX) {
            bad = 1;

        } else {
            ls->limit = (ngx_uint_t) n;
        }
    }

    if (bad) {
        ngx_free(ls->get.task);
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid query: number, since, "
                                         "until and before take "
                                         "[0-9A-Za-z+:._-], limit 1 to %d",
                                         NGX_HTTP_VOICE_LIST_MAX);
    }

    return ngx_http_voice_transcript_get_post(r, &ls->get,
                                              ngx_http_voice_list_thread,
                                              ngx_http_voice_list_answer);
}


/* runs in a thread of the pool: the newest limit + 1 that match, kept
 * sorted in found (one more tells whether there is a next page) */

static void
ngx_http_voice_list_thread(void *data, ngx_log_t *log)
{
    ngx_uint_t                            j, keep;
    ngx_http_voice_list_t                *ls;
    ngx_http_voice_list_entry_t           e;
    ngx_http_voice_transcript_fmt_dir_t   d;

    ls = data;
    keep = ls->limit + 1;

    ls->found = malloc(keep * sizeof(ngx_http_voice_list_entry_t));
    ls->get.data = ls->found;

    if (ls->found == NULL) {
        ls->get.status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    if (ngx_http_voice_transcript_fmt_dir_open(&d, (char *) ls->get.dir,
                                               NULL)
        != 0)
    {
        ls->get.err = ngx_errno;
        ls->get.status = (ls->get.err == NGX_ENOENT)
                         ? NGX_HTTP_OK : NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    while (ngx_http_voice_transcript_fmt_dir_next(&d)) {

        ngx_memcpy(e.key, d.iso, NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN);
        ngx_memcpy(e.key + NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN, d.name,
                   NGX_HTTP_VOICE_SID_LEN);

        if ((ls->number_len
             && (d.phone_len != ls->number_len
                 || ngx_strncmp(d.name + d.phone, ls->number, d.phone_len)
                    != 0))
            || (ls->since_len
                && ngx_strncmp(e.key, ls->since, ls->since_len) < 0)
            || (ls->until_len
                && ngx_strncmp(e.key, ls->until, ls->until_len) >= 0)
            || (ls->has_before
                && ngx_memcmp(e.key, ls->before, NGX_HTTP_VOICE_LIST_KEY_LEN)
                   >= 0))
        {
            continue;
        }

        /* newest first: its place among those kept */
        for (j = ls->nfound;
             j > 0 && ngx_memcmp(ls->found[j - 1].key, e.key,
                                 NGX_HTTP_VOICE_LIST_KEY_LEN) < 0;
             j--)
        {
            /* void */
        }

        if (j == keep) {
            continue;
        }

        if (ls->nfound == keep) {
            ls->nfound--;
        }

        ngx_memmove(&ls->found[j + 1], &ls->found[j],
                    (ls->nfound - j) * sizeof(ngx_http_voice_list_entry_t));

        e.phone_len = ngx_min(d.phone_len, NGX_HTTP_VOICE_PHONE_MAX);
        ngx_memcpy(e.phone, d.name + d.phone, e.phone_len);
        ls->found[j] = e;
        ls->nfound++;
    }

    ngx_http_voice_transcript_fmt_dir_close(&d);

    ls->get.status = NGX_HTTP_OK;
}


static ngx_int_t
ngx_http_voice_list_answer(ngx_http_request_t *r,
    ngx_http_voice_transcript_get_t *get)
{
    u_char                       *body, *p;
    size_t                        size;
    ngx_uint_t                    i, n;
    ngx_http_voice_list_t        *ls;
    ngx_http_voice_list_entry_t  *e;

    ls = (ngx_http_voice_list_t *) get;

    if (get->status != NGX_HTTP_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, get->err,
                      "voice: cannot list the transcripts in \"%s\"",
                      get->dir);
        return ngx_http_voice_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "cannot list the transcripts");
    }

    n = ngx_min(ls->nfound, ls->limit);
    size = sizeof("{\"transcripts\": [], \"next\": \"\"}")
           + NGX_HTTP_VOICE_LIST_KEY_LEN
           + n * (sizeof("{\"callSid\": \"\", \"phoneNumber\": \"\", "
                         "\"timestamp\": \"\"}, ")
                  + NGX_HTTP_VOICE_LIST_KEY_LEN + NGX_HTTP_VOICE_PHONE_MAX);

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* every byte of the names is of [A-Za-z0-9+:.-]: nothing to escape */

    p = ngx_sprintf(body, "{\"transcripts\": [");

    for (i = 0; i < n; i++) {
        e = &ls->found[i];
        p = ngx_sprintf(p, "%s{\"callSid\": \"%*s\", \"phoneNumber\": "
                        "\"%*s\", \"timestamp\": \"%*s\"}",
                        i ? ", " : "",
                        (size_t) NGX_HTTP_VOICE_SID_LEN,
                        e->key + NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN,
                        e->phone_len, e->phone,
                        (size_t) NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN, e->key);
    }

    if (ls->nfound > ls->limit) {
        p = ngx_sprintf(p, "], \"next\": \"%*s\"}",
                        (size_t) NGX_HTTP_VOICE_LIST_KEY_LEN,
                        ls->found[n - 1].key);

    } else {
        p = ngx_sprintf(p, "], \"next\": null}");
    }

    return ngx_http_voice_send_json(r, NGX_HTTP_OK, body, p - body);
}
