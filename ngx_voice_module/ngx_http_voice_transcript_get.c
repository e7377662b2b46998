/*
 * ngx_http_voice_transcript_get.c: GET /api/transcript/{callSid}, a
 * call's record as JSON or, with ?format=text, as plain "User:" /
 * "Assistant:" lines (ngx_http_voice_transcript_fmt.c).
 *
 * The record is found by scanning the transcript directory for the file
 * whose name starts with the call SID ({callSid}_{phone}_{start}.json,
 * written by ngx_http_voice_transcript.c); the scan and the read run on
 * nginx's thread pool, never in the event loop.  A call SID is checked
 * strictly (CA and 32 hex digits), which alone keeps the lookup inside
 * the directory.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <dirent.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_json.h"
#include "ngx_http_voice_transcript_fmt.h"


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


static void ngx_http_voice_transcript_lookup_thread(void *data,
    ngx_log_t *log);
static void ngx_http_voice_transcript_lookup_done(ngx_event_t *ev);
static void ngx_http_voice_transcript_lookup_cleanup(void *data);


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

    if (fstat(fd, &st) == -1 || st.st_size > NGX_HTTP_VOICE_STORE_MAX_RECORD)
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
