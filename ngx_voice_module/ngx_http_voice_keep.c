/*
 * ngx_http_voice_keep.c: retention of call records (voice_transcript_keep).
 *
 * Privacy rules ask that a call's record not outlive its use.  A
 * transcript directory whose locations set voice_transcript_keep (the
 * shortest, when several share it) is swept by one worker, the first
 * (ngx_worker 0: after a reload, the new one): every keep / 2, between 1 s
 * and an hour, a thread of the pool deletes each record
 * ({callSid}_{phone}_{start}.json) whose start, as its file name says, is
 * older than keep.  No file is opened, so a sweep costs one directory
 * scan (the walk over the records' names is
 * ngx_http_voice_transcript_fmt.c's).  Journals of live calls and records
 * being written (their names start with a dot) are never touched; a
 * record that is written after its call's start fell past keep (a call
 * longer than keep) goes at the next sweep.  Each sweep that deletes
 * anything says how many at notice.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_transcript_fmt.h"


/* the sweep's period: keep / 2, within these (ms) */
#define NGX_HTTP_VOICE_KEEP_MIN_PERIOD   1000
#define NGX_HTTP_VOICE_KEEP_MAX_PERIOD   3600000


/* one directory's sweeps */
typedef struct {
    ngx_thread_task_t           task;
    ngx_thread_pool_t          *pool;
    ngx_event_t                 timer;
    ngx_msec_t                  period;
    time_t                      keep;
    u_char                     *dir;          /* NUL-terminated */

    /* for the thread: records that start before cutoff go */
    u_char                      cutoff[NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN];
    ngx_uint_t                  deleted;
    ngx_uint_t                  failed;
    ngx_err_t                   err;
    unsigned                    busy:1;
} ngx_http_voice_keep_t;


static void ngx_http_voice_keep_start(ngx_event_t *ev);
static void ngx_http_voice_keep_thread(void *data, ngx_log_t *log);
static void ngx_http_voice_keep_done(ngx_event_t *ev);


void
ngx_http_voice_keep_init_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf)
{
    ngx_uint_t                     i;
    ngx_msec_t                     period;
    ngx_http_voice_keep_t         *k;
    ngx_http_voice_recover_dir_t  *d;

    if (ngx_worker != 0) {
        return;
    }

    d = vmcf->recover_dirs.elts;

    for (i = 0; i < vmcf->recover_dirs.nelts; i++) {

        if (d[i].keep == 0) {
            continue;
        }

        k = ngx_calloc(sizeof(ngx_http_voice_keep_t) + d[i].dir.len + 1,
                       cycle->log);
        if (k == NULL) {
            return;
        }

        k->dir = (u_char *) (k + 1);
        ngx_memcpy(k->dir, d[i].dir.data, d[i].dir.len + 1);
        k->pool = d[i].pool;
        k->keep = d[i].keep;

        period = (ngx_msec_t) d[i].keep * 1000 / 2;
        k->period = ngx_max(NGX_HTTP_VOICE_KEEP_MIN_PERIOD,
                            ngx_min(period, NGX_HTTP_VOICE_KEEP_MAX_PERIOD));

        k->task.ctx = k;
        k->task.handler = ngx_http_voice_keep_thread;
        k->task.event.handler = ngx_http_voice_keep_done;
        k->task.event.data = k;
        k->task.event.log = cycle->log;

        /* never holds an exiting worker back */
        k->timer.handler = ngx_http_voice_keep_start;
        k->timer.data = k;
        k->timer.log = cycle->log;
        k->timer.cancelable = 1;

        ngx_add_timer(&k->timer, NGX_HTTP_VOICE_KEEP_MIN_PERIOD);
    }
}


static void
ngx_http_voice_keep_start(ngx_event_t *ev)
{
    ngx_http_voice_keep_t  *k;

    k = ev->data;

    if (k->busy) {
        return;
    }

    ngx_http_voice_transcript_fmt_time(ngx_http_voice_now_ms()
                                       - (uint64_t) k->keep * 1000,
                                       k->cutoff, 0);
    k->deleted = 0;
    k->failed = 0;
    k->err = 0;

    if (ngx_thread_task_post(k->pool, &k->task) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "voice: the thread pool refused the retention sweep "
                      "of \"%s\"", k->dir);
        ngx_add_timer(&k->timer, k->period);
        return;
    }

    k->busy = 1;
}


/* runs in a thread of the pool */

static void
ngx_http_voice_keep_thread(void *data, ngx_log_t *log)
{
    ngx_http_voice_keep_t                *k;
    ngx_http_voice_transcript_fmt_dir_t   d;

    k = data;

    if (ngx_http_voice_transcript_fmt_dir_open(&d, (char *) k->dir, NULL)
        != 0)
    {
        k->err = ngx_errno;
        k->failed++;
        return;
    }

    while (ngx_http_voice_transcript_fmt_dir_next(&d)) {

        if (ngx_memcmp(d.iso, k->cutoff, NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN)
            >= 0
            || d.path == NULL)
        {
            continue;
        }

        if (unlink(d.path) == 0) {
            k->deleted++;

        } else if (ngx_errno != NGX_ENOENT) {
            k->err = ngx_errno;
            k->failed++;
        }
    }

    ngx_http_voice_transcript_fmt_dir_close(&d);
}


static void
ngx_http_voice_keep_done(ngx_event_t *ev)
{
    ngx_http_voice_keep_t  *k;

    k = ev->data;
    k->busy = 0;

    if (k->deleted) {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "voice: %ui records older than %T s deleted from "
                      "\"%s\" (voice_transcript_keep)", k->deleted, k->keep,
                      k->dir);
    }

    if (k->failed) {
        ngx_log_error(NGX_LOG_ERR, ev->log, k->err,
                      "voice: the retention sweep of \"%s\" failed %ui "
                      "times: records older than %T s may remain", k->dir,
                      k->failed, k->keep);
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&k->timer, k->period);
    }
}
