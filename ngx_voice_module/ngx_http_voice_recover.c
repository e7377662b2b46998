/*
 * ngx_http_voice_recover.c: the records of calls whose process died.
 *
 * A journal that no live process holds (ngx_http_voice_store.c says how
 * one is held) is a call's whose worker died -- killed, crashed, the host
 * went down -- or whose record was given up when storage would not take
 * it.  Each becomes the call's record, TRANSCRIPT_DIR/{name}.json, with
 * what the journal holds, "incomplete": true and "endedBy": "server"
 * (ngx_http_voice_transcript_fmt.c); then the journal goes.  A torn last
 * line is left out: at most the entry being written is lost.
 *
 * Where and when: every worker process, as it starts, looks through each
 * transcript directory a media stream of its configuration writes to, on
 * the thread pool, one journal at a time.  Not in the master at start:
 * a worker killed alone is replaced without any new start, so its
 * successor must find its journals; and a master running as root would
 * leave records the workers' user cannot read.  Not in one chosen worker
 * either: a worker cannot tell its first start from a respawn.  So every
 * worker looks, and the locks make that safe: a journal is recovered by
 * whichever process takes its lock, several workers or nginx instances at
 * once included, and the journal of a live call -- an old worker keeps its
 * calls through a reload -- is never taken.  A pass costs one directory
 * scan, as one transcript lookup does, and is bounded: at most 4096
 * journals per start, each at most 64 MiB.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <dirent.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_transcript_fmt.h"


#define NGX_HTTP_VOICE_RECOVER_MAX_JOURNALS  4096
#define NGX_HTTP_VOICE_RECOVER_MAX_SIZE      (64 * 1024 * 1024)

/* a journal holds at most the 10000 entries of a live call, a header,
 * and lines left out */
#define NGX_HTTP_VOICE_RECOVER_MAX_ENTRIES   16384

/* {callSid}_{phone}_{time}: 34 + 1 + 32 + 1 + 24 */
#define NGX_HTTP_VOICE_RECOVER_NAME_MAX      92

/* an empty journal is one being created, until it is this old (s) */
#define NGX_HTTP_VOICE_RECOVER_EMPTY_AGE     60

#define NGX_HTTP_VOICE_RECOVER_REASON                                         \
    "the server stopped before the call's record was written: recovered "    \
    "from its journal"


/* one worker's pass over one directory */
typedef struct {
    ngx_thread_task_t                task;
    ngx_thread_pool_t               *pool;
    u_char                          *dir;        /* NUL-terminated */
    ngx_http_voice_outbox_t         *outbox;     /* or NULL */

    /* the scan's: names of NAME_MAX + 1 bytes each, malloc()ed */
    u_char                          *names;
    ngx_uint_t                       n;
    ngx_uint_t                       more;       /* past the bound */
    ngx_http_voice_store_err_t       e;

    ngx_uint_t                       cur;        /* being recovered */
    ngx_http_voice_recover_result_t  res;
    unsigned                         scanned:1;

    ngx_uint_t                       count[NGX_HTTP_VOICE_RECOVER_FAILED
                                           + 1];
} ngx_http_voice_recover_pass_t;


static void ngx_http_voice_recover_scan(void *data, ngx_log_t *log);
static void ngx_http_voice_recover_one(void *data, ngx_log_t *log);
static void ngx_http_voice_recover_done(ngx_event_t *ev);
static void ngx_http_voice_recover_finish(ngx_http_voice_recover_pass_t *p,
    ngx_log_t *log);


/* at configuration: each distinct transcript directory once (retention,
 * ngx_http_voice_keep.c, goes through the same list) */

ngx_int_t
ngx_http_voice_recover_add_dir(ngx_conf_t *cf,
    ngx_http_voice_loc_conf_t *vlcf)
{
    ngx_uint_t                     i;
    ngx_http_voice_main_conf_t    *vmcf;
    ngx_http_voice_recover_dir_t  *d;

    vmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_voice_module);

    d = vmcf->recover_dirs.elts;

    for (i = 0; i < vmcf->recover_dirs.nelts; i++) {
        if (d[i].dir.len == vlcf->transcript_dir.len
            && ngx_strncmp(d[i].dir.data, vlcf->transcript_dir.data,
                           d[i].dir.len)
               == 0)
        {
            /* records kept for the shortest time any location asks */
            if (vlcf->transcript_keep
                && (d[i].keep == 0 || vlcf->transcript_keep < d[i].keep))
            {
                d[i].keep = vlcf->transcript_keep;
            }

            return NGX_OK;
        }
    }

    d = ngx_array_push(&vmcf->recover_dirs);
    if (d == NULL) {
        return NGX_ERROR;
    }

    d->dir.len = vlcf->transcript_dir.len;
    d->dir.data = ngx_pnalloc(cf->pool, d->dir.len + 1);
    if (d->dir.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(d->dir.data, vlcf->transcript_dir.data, d->dir.len);
    d->dir.data[d->dir.len] = '\0';
    d->pool = vlcf->thread_pool;
    d->keep = vlcf->transcript_keep;
    d->outbox = NULL;

    return NGX_OK;
}


void
ngx_http_voice_recover_init_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf)
{
    ngx_uint_t                      i;
    ngx_http_voice_recover_dir_t   *d;
    ngx_http_voice_recover_pass_t  *p;

    d = vmcf->recover_dirs.elts;

    for (i = 0; i < vmcf->recover_dirs.nelts; i++) {

        p = ngx_calloc(sizeof(ngx_http_voice_recover_pass_t) + d[i].dir.len
                       + 1, cycle->log);
        if (p == NULL) {
            return;
        }

        p->dir = (u_char *) (p + 1);
        ngx_memcpy(p->dir, d[i].dir.data, d[i].dir.len + 1);
        p->pool = d[i].pool;
        p->outbox = d[i].outbox;

        p->task.ctx = p;
        p->task.handler = ngx_http_voice_recover_scan;
        p->task.event.handler = ngx_http_voice_recover_done;
        p->task.event.data = p;
        p->task.event.log = cycle->log;

        if (ngx_thread_task_post(p->pool, &p->task) != NGX_OK) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                          "voice: the thread pool refused the transcript "
                          "recovery of \"%s\"", p->dir);
            ngx_free(p);
        }
    }
}


/* runs in a thread of the pool: the journals' names */

static void
ngx_http_voice_recover_scan(void *data, ngx_log_t *log)
{
    ngx_http_voice_recover_pass_t *p = data;

    DIR            *dir;
    u_char         *name, iso[NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN];
    size_t          len, ph, plen;
    struct dirent  *de;

    dir = opendir((char *) p->dir);
    if (dir == NULL) {
        p->e.err = ngx_errno;
        p->e.failed = "opendir()";
        return;
    }

    while ((de = readdir(dir)) != NULL) {

        /* .{name}.journal */

        len = ngx_strlen(de->d_name);

        if (len < sizeof(".journal") || de->d_name[0] != '.'
            || ngx_strcmp(de->d_name + len - 8, ".journal") != 0)
        {
            continue;
        }

        name = (u_char *) de->d_name + 1;
        len -= 9;

        if (len > NGX_HTTP_VOICE_RECOVER_NAME_MAX
            || !ngx_http_voice_transcript_fmt_name(name, len, &ph, &plen,
                                                   iso))
        {
            continue;
        }

        if (p->n == NGX_HTTP_VOICE_RECOVER_MAX_JOURNALS) {
            p->more++;
            continue;
        }

        if (p->names == NULL) {
            p->names = malloc(NGX_HTTP_VOICE_RECOVER_MAX_JOURNALS
                              * (NGX_HTTP_VOICE_RECOVER_NAME_MAX + 1));
            if (p->names == NULL) {
                p->e.err = NGX_ENOMEM;
                p->e.failed = "malloc()";
                break;
            }
        }

        ngx_memcpy(p->names + p->n * (NGX_HTTP_VOICE_RECOVER_NAME_MAX + 1),
                   name, len);
        p->names[p->n * (NGX_HTTP_VOICE_RECOVER_NAME_MAX + 1) + len] = '\0';
        p->n++;
    }

    (void) closedir(dir);
}


/* runs in a thread of the pool */

static void
ngx_http_voice_recover_one(void *data, ngx_log_t *log)
{
    ngx_http_voice_recover_pass_t *p = data;

    u_char  *name;

    name = p->names + p->cur * (NGX_HTTP_VOICE_RECOVER_NAME_MAX + 1);

    ngx_http_voice_recover_journal(p->dir, name, ngx_strlen(name), p->outbox,
                                   &p->res);
}


static void
ngx_http_voice_recover_done(ngx_event_t *ev)
{
    ngx_http_voice_recover_pass_t *p = ev->data;

    u_char      *name;
    ngx_uint_t   level;

    if (!p->scanned) {
        p->scanned = 1;
        p->cur = 0;

        if (p->e.failed) {

            /* no directory yet: nothing to recover, the first call makes
             * its journal fail as storage that does not work */
            level = (p->e.err == NGX_ENOENT) ? NGX_LOG_INFO : NGX_LOG_ERR;

            ngx_log_error(level, ev->log, p->e.err,
                          "voice: transcript recovery: %s \"%s\" failed",
                          p->e.failed, p->dir);
        }

    } else {
        name = p->names + p->cur * (NGX_HTTP_VOICE_RECOVER_NAME_MAX + 1);

        ngx_http_voice_recover_log(ev->log, NGX_LOG_WARN, p->dir, name,
                                   ngx_strlen(name), &p->res);

        p->count[p->res.state]++;

        if (p->res.state == NGX_HTTP_VOICE_RECOVER_RECOVERED) {
            ngx_http_voice_metrics_inc(
                NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_RECOVERED);
        }

        p->cur++;
    }

    if (p->cur >= p->n) {
        ngx_http_voice_recover_finish(p, ev->log);
        return;
    }

    ngx_memzero(&p->res, sizeof(ngx_http_voice_recover_result_t));
    p->task.handler = ngx_http_voice_recover_one;

    if (ngx_thread_task_post(p->pool, &p->task) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "voice: the thread pool refused the transcript "
                      "recovery of \"%s\"", p->dir);
        ngx_http_voice_recover_finish(p, ev->log);
    }
}


static void
ngx_http_voice_recover_finish(ngx_http_voice_recover_pass_t *p,
    ngx_log_t *log)
{
    if (p->n) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "voice: transcript recovery in \"%s\": %ui records "
                      "recovered, %ui already written, %ui journals held by "
                      "live processes left alone, %ui failed", p->dir,
                      p->count[NGX_HTTP_VOICE_RECOVER_RECOVERED],
                      p->count[NGX_HTTP_VOICE_RECOVER_WRITTEN],
                      p->count[NGX_HTTP_VOICE_RECOVER_IN_USE],
                      p->count[NGX_HTTP_VOICE_RECOVER_FAILED]);
    }

    if (p->more) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "voice: transcript recovery in \"%s\": %ui more "
                      "journals than %d, left for the next start", p->dir,
                      p->more, NGX_HTTP_VOICE_RECOVER_MAX_JOURNALS);
    }

    free(p->names);
    ngx_free(p);
}


void
ngx_http_voice_recover_log(ngx_log_t *log, ngx_uint_t level,
    const u_char *dir, const u_char *name, size_t len,
    ngx_http_voice_recover_result_t *res)
{
    size_t  sid;

    sid = ngx_min(len, NGX_HTTP_VOICE_SID_LEN);

    switch (res->state) {

    case NGX_HTTP_VOICE_RECOVER_RECOVERED:
        ngx_log_error(level, log, 0,
                      "voice: call %*s: its record was not written before "
                      "the server stopped; recovered from its journal into "
                      "\"%s%*s.json\", marked incomplete (%ud entries, %ud "
                      "lines left out)", sid, name, dir, len, name,
                      res->entries, res->dropped);

        if (res->hooked && res->hook.rc != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, log, res->hook.e.err,
                          "voice: call %*s: the webhook's outbox entry of "
                          "its recovered record could not be written (%s "
                          "failed): the record is not posted", sid, name,
                          res->hook.e.failed);
        }

        return;

    case NGX_HTTP_VOICE_RECOVER_WRITTEN:
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "voice: call %*s: its record was written, its journal "
                      "was left: removed", sid, name);
        return;

    case NGX_HTTP_VOICE_RECOVER_EMPTY:
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "voice: call %*s: an empty journal, removed", sid,
                      name);
        return;

    case NGX_HTTP_VOICE_RECOVER_FAILED:
        ngx_log_error(NGX_LOG_ERR, log, res->e.err,
                      "voice: call %*s: its journal \"%s.%*s.journal\" "
                      "cannot be recovered: %s failed; it is kept", sid,
                      name, dir, len, name,
                      res->e.failed ? res->e.failed : "rendering");
        return;

    default:
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                       "voice call %*s: journal left alone (%d)", sid, name,
                       (int) res->state);
        return;
    }
}


static ngx_int_t
ngx_http_voice_recover_newer(ngx_file_info_t *a, ngx_file_info_t *b)
{
    return a->st_mtim.tv_sec > b->st_mtim.tv_sec
           || (a->st_mtim.tv_sec == b->st_mtim.tv_sec
               && a->st_mtim.tv_nsec >= b->st_mtim.tv_nsec);
}


/*
 * In a thread of the pool: TRANSCRIPT_DIR/.{name}.journal, if no live
 * process holds it, into TRANSCRIPT_DIR/{name}.json.  When the record is
 * there already, the journal's process died between writing it and
 * removing the journal -- unless the journal continues the record (a call
 * back from a transfer), and is newer than it.  Any failure keeps the
 * journal for the next try.
 */

void
ngx_http_voice_recover_journal(const u_char *dir, const u_char *name,
    size_t len, ngx_http_voice_outbox_t *ob,
    ngx_http_voice_recover_result_t *res)
{
    u_char                                   journal[NGX_MAX_PATH];
    u_char                                   final[NGX_MAX_PATH];
    u_char                                   tmp[NGX_MAX_PATH];
    u_char                                   sid[NGX_HTTP_VOICE_SID_LEN + 1];
    u_char                                   phone[NGX_HTTP_VOICE_PHONE_MAX
                                                   + 1];
    u_char                                   iso[32], *data, *out;
    size_t                                   ph, plen, size, n, cap, nslots;
    size_t                                   i;
    ngx_fd_t                                 fd;
    ngx_int_t                                rc;
    ngx_file_info_t                          fi, ffi;
    voice_json_tok_t                        *toks;
    ngx_http_voice_transcript_fmt_slot_t    *slots;
    ngx_http_voice_transcript_fmt_journal_t  j;

    ngx_memzero(res, sizeof(ngx_http_voice_recover_result_t));
    res->state = NGX_HTTP_VOICE_RECOVER_FAILED;

    data = NULL;
    out = NULL;
    toks = NULL;
    slots = NULL;

    if (len > NGX_HTTP_VOICE_RECOVER_NAME_MAX
        || !ngx_http_voice_transcript_fmt_name(name, len, &ph, &plen, iso)
        || ngx_strlen(dir) + len + sizeof("..json.tmp") > NGX_MAX_PATH)
    {
        res->e.failed = "checking its name";
        return;
    }

    ngx_sprintf(journal, "%s.%*s.journal%Z", dir, len, name);
    ngx_sprintf(final, "%s%*s.json%Z", dir, len, name);
    ngx_sprintf(tmp, "%s.%*s.json.tmp%Z", dir, len, name);

    ngx_memcpy(sid, name, NGX_HTTP_VOICE_SID_LEN);
    sid[NGX_HTTP_VOICE_SID_LEN] = '\0';
    ngx_memcpy(phone, name + ph, plen);
    phone[plen] = '\0';

    rc = ngx_http_voice_store_journal_take((char *) journal, &fd, &fi,
                                           &res->e);
    switch (rc) {

    case NGX_OK:
        break;

    case NGX_BUSY:
        res->state = NGX_HTTP_VOICE_RECOVER_IN_USE;
        return;

    case NGX_DECLINED:
        res->state = NGX_HTTP_VOICE_RECOVER_GONE;
        return;

    default:
        return;
    }

    if (ngx_file_size(&fi) == 0) {

        /* its process died before it wrote the header, or it is being
         * created, and its process waits for our lock */

        if (time(NULL) - fi.st_mtime > NGX_HTTP_VOICE_RECOVER_EMPTY_AGE) {
            ngx_http_voice_store_journal_drop((char *) journal, fd);
            res->state = NGX_HTTP_VOICE_RECOVER_EMPTY;
            return;
        }

        (void) ngx_close_file(fd);
        res->state = NGX_HTTP_VOICE_RECOVER_YOUNG;
        return;
    }

    if (ngx_http_voice_store_read_fd(fd, NGX_HTTP_VOICE_RECOVER_MAX_SIZE,
                                     &data, &size, &res->e)
        != NGX_OK)
    {
        goto failed;
    }

    nslots = 1;
    for (i = 0; i < size && nslots < NGX_HTTP_VOICE_RECOVER_MAX_ENTRIES; i++) {
        nslots += (data[i] == '\n');
    }

    cap = 2 * size + 2048 + 96 * nslots;

    slots = malloc(nslots * sizeof(ngx_http_voice_transcript_fmt_slot_t));
    toks = malloc(NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS
                  * sizeof(voice_json_tok_t));
    out = malloc(cap);

    if (slots == NULL || toks == NULL || out == NULL) {
        res->e.err = NGX_ENOMEM;
        res->e.failed = "malloc()";
        goto failed;
    }

    ngx_memzero(&j, sizeof(ngx_http_voice_transcript_fmt_journal_t));
    j.call_sid = (char *) sid;
    j.phone = (char *) phone;
    j.time = iso;
    j.reason = NGX_HTTP_VOICE_RECOVER_REASON;

    n = ngx_http_voice_transcript_fmt_recover(data, size, &j, slots, nslots,
                                          toks,
                                          NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS,
                                          out, cap);
    if (n == (size_t) -1) {
        res->e.failed = "rendering the record";
        goto failed;
    }

    res->entries = j.entries;
    res->dropped = j.dropped;

    if (ngx_file_info((char *) final, &ffi) == 0) {

        if (!j.continued || ngx_http_voice_recover_newer(&ffi, &fi)) {
            (void) ngx_delete_file(tmp);
            ngx_http_voice_store_journal_drop((char *) journal, fd);
            res->state = NGX_HTTP_VOICE_RECOVER_WRITTEN;
            goto done;
        }

        if (ngx_http_voice_store_merge((char *) final, &out, &n, &res->e)
            != NGX_OK)
        {
            goto failed;
        }

    } else if (ngx_errno != NGX_ENOENT) {
        res->e.err = ngx_errno;
        res->e.failed = "stat() record";
        goto failed;
    }

    if (ngx_http_voice_store_write((char *) dir, (char *) tmp,
                                   (char *) final, out, n, &res->e)
        != NGX_OK)
    {
        goto failed;
    }

    ngx_http_voice_store_journal_drop((char *) journal, fd);
    res->state = NGX_HTTP_VOICE_RECOVER_RECOVERED;

    /* a record made final here is posted like any other */
    if (ob) {
        ngx_http_voice_outbox_recovered(ob, &res->hook, sid, out, n);
        res->hooked = 1;
    }

    goto done;

failed:

    (void) ngx_close_file(fd);

done:

    free(data);
    free(slots);
    free(toks);
    free(out);
}
