/*
 * ngx_http_voice_outbox.c: the post-call webhook (voice_call_webhook).
 *
 * When a call's record is final (ngx_http_voice_transcript.c writes it),
 * it is POSTed to the operator's URL, signed.  nginx cannot do HTTP
 * client work without blocking a worker, so bridged makes the POST
 * (bd_hook.c, the webhook message) and answers with the receiver's
 * status; nginx keeps what must survive: an outbox on disk, one file per
 * record to deliver (ngx_http_voice_outbox_fmt.h), written atomically by
 * the same thread-pool task that writes the record, right after it.  So
 * neither a receiver that is down, nor bridged, nor a restart of nginx
 * loses a record: an entry goes only when a 2xx answered it, or when it
 * is given up, voice_call_webhook_retry after its record was made.
 *
 * Who sends what.  The worker that wrote the record tries it at once,
 * from memory.  The first worker (ngx_worker 0, as for retention) looks
 * at each outbox on the thread pool at its start and then every few
 * seconds, and sends the entries that are due, at most
 * NGX_HTTP_VOICE_OUTBOX_FLIGHT at once.  An entry's mtime is when it is
 * due: a new one, or one taken by a look, is leased for
 * NGX_HTTP_VOICE_OUTBOX_LEASE (longer than an attempt can take), so no
 * other look sends it meanwhile; a failed one is due after about its age
 * (waits double, 1 s to 5 min, jittered) -- so the schedule lives in the
 * file system and a restart resumes it.  Delivery is at least once (a
 * worker that dies between the 2xx and the unlink sends it again): the
 * X-Voice-Delivery header, {callSid}.{made}, is the same on every attempt
 * so a receiver can deduplicate.
 *
 * Why not let bridged keep the outbox: bridged keeps no durable state, may
 * run on another host, and may be restarted at any time; nginx already
 * owns the records and their directory.
 *
 * Deliveries, failed attempts, records given up, and the entries waiting
 * (as the last look counted them) are counted in the shared zone
 * (ngx_http_voice_metrics.c: voice_metrics, and voice_status's
 * "webhook").
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <dirent.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_outbox_fmt.h"


#define NGX_HTTP_VOICE_OUTBOX_FLIGHT    8       /* a look's sends at once */
#define NGX_HTTP_VOICE_OUTBOX_LEASE     30000   /* ms an attempt may take */
#define NGX_HTTP_VOICE_OUTBOX_REPLY     15000   /* ms for bridged's answer
                                                   (it gives a POST 10 s) */
#define NGX_HTTP_VOICE_OUTBOX_LOOK_MIN  250     /* ms between looks */
#define NGX_HTTP_VOICE_OUTBOX_LOOK_MAX  5000
/* a body fits in one proto frame with the URL, the secret and the rest */
#define NGX_HTTP_VOICE_OUTBOX_MAX_BODY                                        \
    (VOICE_PROTO_MAX_FRAME - 2 * NGX_HTTP_VOICE_OUTBOX_URL_MAX - 1024)


/* one outbox directory and the webhook its locations share */
struct ngx_http_voice_outbox_s {
    ngx_str_t                   dir;            /* ends with '/', NUL */
    ngx_str_t                   url;            /* its first location's:
                                                   recovered records go
                                                   there */
    ngx_str_t                   secret;
    ngx_msec_t                  retry;
    ngx_thread_pool_t          *pool;

    /* the first worker's looks */
    ngx_thread_task_t           task;
    ngx_event_t                 timer;
    ngx_uint_t                  flight;         /* its sends in progress */
    unsigned                    busy:1;
    unsigned                    more:1;         /* due entries were left */

    /* the look's results, set by the thread */
    u_char                     *taken[NGX_HTTP_VOICE_OUTBOX_FLIGHT];
    size_t                      taken_len[NGX_HTTP_VOICE_OUTBOX_FLIGHT];
    u_char                      taken_name[NGX_HTTP_VOICE_OUTBOX_FLIGHT]
                                          [NGX_HTTP_VOICE_OUTBOX_NAME_MAX];
    ngx_uint_t                  ntaken;
    ngx_uint_t                  want;
    ngx_uint_t                  pending;        /* entries seen */
    ngx_uint_t                  bad;            /* files set aside */
    uint64_t                    earliest;       /* the next due, ms */
    ngx_http_voice_store_err_t  e;
};


typedef enum {
    NGX_HTTP_VOICE_OUTBOX_ST_NEW = 0,
    NGX_HTTP_VOICE_OUTBOX_ST_SENT,      /* awaiting bridged's reply */
    NGX_HTTP_VOICE_OUTBOX_ST_FILING,    /* its entry deleted or deferred */
    NGX_HTTP_VOICE_OUTBOX_ST_DONE
} ngx_http_voice_outbox_state_e;


/* one attempt at one entry */
typedef struct {
    ngx_queue_t                 queue;          /* the worker's attempts */
    ngx_http_voice_outbox_t    *ob;
    ngx_http_voice_outbox_state_e  state;
    u_char                     *data;           /* ngx_alloc()ed */
    ngx_str_t                   url;            /* views into data */
    ngx_str_t                   body;
    u_char                      name[NGX_HTTP_VOICE_OUTBOX_NAME_MAX];
    size_t                      sid_len;        /* the name starts with */
    uint64_t                    made;
    uint64_t                    request_id;
    ngx_event_t                 timer;
    ngx_thread_task_t           task;

    uint64_t                    next;           /* 0: delete the entry */
    ngx_http_voice_store_err_t  e;              /* the thread's */
    unsigned                    stored:1;       /* it has an entry */
    unsigned                    looked:1;       /* a look took it */
} ngx_http_voice_outbox_send_t;


static void ngx_http_voice_outbox_recover_dir(
    ngx_http_voice_main_conf_t *vmcf, ngx_http_voice_loc_conf_t *vlcf);
static void ngx_http_voice_outbox_start(ngx_http_voice_outbox_send_t *s);
static void ngx_http_voice_outbox_state(ngx_http_voice_outbox_send_t *s,
    ngx_http_voice_outbox_state_e state);
static void ngx_http_voice_outbox_outcome(ngx_http_voice_outbox_send_t *s,
    ngx_uint_t status, ngx_str_t *reason);
static void ngx_http_voice_outbox_timeout(ngx_event_t *ev);
static void ngx_http_voice_outbox_file_thread(void *data, ngx_log_t *log);
static void ngx_http_voice_outbox_file_done(ngx_event_t *ev);
static void ngx_http_voice_outbox_look(ngx_event_t *ev);
static void ngx_http_voice_outbox_look_thread(void *data, ngx_log_t *log);
static void ngx_http_voice_outbox_look_done(ngx_event_t *ev);


/* the worker's attempts sent to bridged, awaiting its reply (a process
 * is one worker) */

static ngx_queue_t  ngx_http_voice_outbox_sent = {
    &ngx_http_voice_outbox_sent, &ngx_http_voice_outbox_sent
};


/*
 * Configuration: a location that writes records (a media stream's, a
 * status callback's) and has voice_call_webhook gets the outbox of its
 * directory; locations that share one share its secret and retry time.
 */

ngx_int_t
ngx_http_voice_outbox_add(ngx_conf_t *cf, ngx_http_voice_loc_conf_t *vlcf)
{
    u_char                       *p;
    ngx_str_t                     dir;
    ngx_uint_t                    i;
    ngx_http_voice_outbox_t     **obs, *ob;
    ngx_http_voice_main_conf_t   *vmcf;

    vmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_voice_module);

    if (ngx_http_voice_conf_secret(cf, &vlcf->webhook_secret_file,
                                   "VOICE_WEBHOOK_SECRET",
                                   &vlcf->webhook_secret)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* as the HTTP tools' key: one a receiver can trust */

    if (vlcf->webhook_secret.len < 16) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"voice_call_webhook\" needs a secret of at "
                           "least 16 bytes to sign with: set "
                           "VOICE_WEBHOOK_SECRET in the environment (and "
                           "\"env VOICE_WEBHOOK_SECRET;\") or use "
                           "\"voice_call_webhook_secret_file\"");
        return NGX_ERROR;
    }

    if (vmcf->endpoints.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"voice_call_webhook\" is sent by bridged: no "
                           "\"voice_bridge\" endpoint is configured");
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_HTTP_VOICE_OUTBOX_HEADER_MAX);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* an entry can hold it: not too long, no control character */

    if (ngx_http_voice_outbox_fmt_header(p, vlcf->webhook_url.data,
                                         vlcf->webhook_url.len)
        == 0
        || (ngx_strncmp(vlcf->webhook_url.data, "http://", 7) != 0
            && ngx_strncmp(vlcf->webhook_url.data, "https://", 8) != 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"voice_call_webhook\" URL \"%V\"",
                           &vlcf->webhook_url);
        return NGX_ERROR;
    }

    /* the default: a folder of the transcript directory, hidden from its
     * listing and its retention */

    dir = vlcf->webhook_outbox;

    if (dir.len == 0) {
        dir.len = vlcf->transcript_dir.len + sizeof(".outbox") - 1;
        dir.data = ngx_pnalloc(cf->pool, dir.len);
        if (dir.data == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(dir.data, "%V.outbox", &vlcf->transcript_dir);
    }

    if (ngx_conf_full_name(cf->cycle, &dir, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    while (dir.len > 1 && dir.data[dir.len - 1] == '/') {
        dir.len--;
    }

    p = ngx_pnalloc(cf->pool, dir.len + 2);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(p, "%V/%Z", &dir);
    dir.data = p;
    dir.len++;

    obs = vmcf->outboxes.elts;

    for (i = 0; i < vmcf->outboxes.nelts; i++) {
        ob = obs[i];

        if (ob->dir.len != dir.len
            || ngx_strncmp(ob->dir.data, dir.data, dir.len) != 0)
        {
            continue;
        }

        if (ob->secret.len != vlcf->webhook_secret.len
            || ngx_memcmp(ob->secret.data, vlcf->webhook_secret.data,
                          ob->secret.len) != 0
            || ob->retry != vlcf->webhook_retry)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "locations sharing the webhook outbox \"%V\" "
                               "have different webhook secrets or retry "
                               "times: give them their own "
                               "\"voice_call_webhook_outbox\"", &dir);
            return NGX_ERROR;
        }

        vlcf->outbox = ob;
        ngx_http_voice_outbox_recover_dir(vmcf, vlcf);
        return NGX_OK;
    }

    ob = ngx_pcalloc(cf->pool, sizeof(ngx_http_voice_outbox_t));
    obs = ngx_array_push(&vmcf->outboxes);
    if (ob == NULL || obs == NULL) {
        return NGX_ERROR;
    }

    ob->dir = dir;
    ob->url = vlcf->webhook_url;
    ob->secret = vlcf->webhook_secret;
    ob->retry = vlcf->webhook_retry;
    ob->pool = vlcf->thread_pool;

    *obs = ob;
    vlcf->outbox = ob;

    ngx_http_voice_outbox_recover_dir(vmcf, vlcf);

    return NGX_OK;
}


/* the records recovered in a media stream's directory go to its webhook */

static void
ngx_http_voice_outbox_recover_dir(ngx_http_voice_main_conf_t *vmcf,
    ngx_http_voice_loc_conf_t *vlcf)
{
    ngx_uint_t                     i;
    ngx_http_voice_recover_dir_t  *d;

    d = vmcf->recover_dirs.elts;

    for (i = 0; vlcf->handler == NGX_HTTP_VOICE_MEDIA_STREAM
                && i < vmcf->recover_dirs.nelts; i++)
    {
        if (d[i].outbox == NULL
            && d[i].dir.len == vlcf->transcript_dir.len
            && ngx_strncmp(d[i].dir.data, vlcf->transcript_dir.data,
                           d[i].dir.len) == 0)
        {
            d[i].outbox = vlcf->outbox;
        }
    }
}


/*
 * In a thread of the pool, right after the record's own write: the
 * outbox entry, atomically; leased to the worker that tries it at once,
 * or due now (the first worker's next look sends it).
 */

void
ngx_http_voice_outbox_store(ngx_http_voice_outbox_t *ob,
    ngx_http_voice_outbox_entry_t *en, const u_char *body, size_t len,
    ngx_uint_t leased)
{
    u_char          *data, *final, *tmp;
    size_t           n, dlen;
    struct timeval   tv[2];

    en->rc = NGX_ERROR;
    en->e.err = 0;
    en->e.failed = NULL;

    if (len > NGX_HTTP_VOICE_OUTBOX_MAX_BODY) {
        en->e.failed = "the size check (a record over 1 MiB)";
        return;
    }

    dlen = ob->dir.len - 1;

    /* malloc(): ngx_alloc() would log through a log this thread lacks */
    data = malloc(NGX_HTTP_VOICE_OUTBOX_HEADER_MAX + len
                  + 2 * (dlen + NGX_HTTP_VOICE_OUTBOX_NAME_MAX + 8));
    if (data == NULL) {
        en->e.err = NGX_ENOMEM;
        en->e.failed = "malloc()";
        return;
    }

    n = ngx_http_voice_outbox_fmt_header(data, en->url.data, en->url.len);
    ngx_memcpy(data + n, body, len);
    n += len;

    final = data + n;
    tmp = ngx_sprintf(final, "%s%s%Z", ob->dir.data, en->name);
    ngx_sprintf(tmp, "%s.%s.tmp%Z", ob->dir.data, en->name);

    if (mkdir((char *) ob->dir.data, 0700) == -1 && ngx_errno != NGX_EEXIST)
    {
        en->e.err = ngx_errno;
        en->e.failed = "mkdir()";
        free(data);
        return;
    }

    en->rc = ngx_http_voice_store_write((char *) ob->dir.data, (char *) tmp,
                                        (char *) final, data, n, &en->e);

    if (en->rc == NGX_OK && leased) {
        (void) gettimeofday(&tv[0], NULL);
        tv[0].tv_sec += NGX_HTTP_VOICE_OUTBOX_LEASE / 1000;
        tv[1] = tv[0];
        (void) utimes((char *) final, tv);
    }

    free(data);
}


/* in a thread of the pool: a record made from a journal, no one tries */

void
ngx_http_voice_outbox_recovered(ngx_http_voice_outbox_t *ob,
    ngx_http_voice_outbox_entry_t *en, const u_char *sid,
    const u_char *body, size_t len)
{
    struct timeval  tv;

    (void) gettimeofday(&tv, NULL);

    en->url = ob->url;
    en->made = (uint64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;

    if (ngx_http_voice_outbox_fmt_name(en->name, sid, NGX_HTTP_VOICE_SID_LEN,
                                       en->made)
        == 0)
    {
        en->rc = NGX_ERROR;
        en->e.err = 0;
        en->e.failed = "naming the entry";
        return;
    }

    ngx_http_voice_outbox_store(ob, en, body, len, 0);
}


/*
 * In the event loop, once the record is written: the first attempt, from
 * the record in memory (body, ngx_alloc()ed, is the outbox's now).  An
 * entry that could not be stored is tried once all the same.
 */

void
ngx_http_voice_outbox_post(ngx_http_voice_outbox_t *ob,
    ngx_http_voice_outbox_entry_t *en, ngx_log_t *log, u_char *body,
    size_t len)
{
    ngx_http_voice_outbox_send_t  *s;

    if (en->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, en->e.err,
                      "voice: call %*s: the webhook's outbox entry "
                      "\"%s%s\" could not be written (%s failed): the "
                      "record is sent once, never again",
                      (size_t) NGX_HTTP_VOICE_SID_LEN, en->name,
                      ob->dir.data, en->name, en->e.failed);

        if (len > NGX_HTTP_VOICE_OUTBOX_MAX_BODY) {
            ngx_http_voice_metrics_inc(
                NGX_HTTP_VOICE_METRIC_WEBHOOK_GIVEN_UP);
            ngx_free(body);
            return;
        }
    }

    s = ngx_calloc(sizeof(ngx_http_voice_outbox_send_t), log);
    if (s == NULL) {
        ngx_free(body);
        return;
    }

    s->ob = ob;
    s->data = body;
    s->body.data = body;
    s->body.len = len;
    s->url = en->url;       /* the location's: lives as its conf does */
    s->made = en->made;
    s->stored = (en->rc == NGX_OK);
    ngx_memcpy(s->name, en->name, NGX_HTTP_VOICE_OUTBOX_NAME_MAX);
    s->sid_len = ngx_strlen(s->name);
    (void) ngx_http_voice_outbox_fmt_parse_name(s->name, s->sid_len,
                                                &s->sid_len, &s->made);

    ngx_http_voice_outbox_start(s);
}


/* sends one attempt to a bridged; the reply or the timer goes on */

static void
ngx_http_voice_outbox_start(ngx_http_voice_outbox_send_t *s)
{
    u_char                   *frame;
    size_t                    size, n, nlen;
    ngx_str_t                 reason;
    voice_proto_writer_t      wr;
    ngx_http_voice_worker_t  *w;

    w = ngx_http_voice_worker();

    s->timer.handler = ngx_http_voice_outbox_timeout;
    s->timer.data = s;
    s->timer.log = ngx_cycle->log;
    s->timer.cancelable = 1;        /* its lease brings it back */

    s->task.ctx = s;
    s->task.handler = ngx_http_voice_outbox_file_thread;
    s->task.event.handler = ngx_http_voice_outbox_file_done;
    s->task.event.data = s;
    s->task.event.log = ngx_cycle->log;

    ngx_queue_init(&s->queue);

    nlen = ngx_strlen(s->name);

    if (w == NULL || nlen <= sizeof(".hook") - 1) {
        ngx_str_set(&reason, "no bridge channel");
        ngx_http_voice_outbox_outcome(s, 0, &reason);
        return;
    }

    ngx_queue_insert_tail(&ngx_http_voice_outbox_sent, &s->queue);
    s->request_id = w->next_request_id++;

    size = VOICE_PROTO_HEADER_SIZE + 6 * VOICE_PROTO_FIELD_HEADER + 8
           + NGX_HTTP_VOICE_SID_LEN + NGX_HTTP_VOICE_OUTBOX_NAME_MAX
           + s->url.len + s->ob->secret.len + s->body.len;

    frame = ngx_alloc(size, ngx_cycle->log);
    if (frame == NULL) {
        ngx_str_set(&reason, "no memory");
        ngx_http_voice_outbox_outcome(s, 0, &reason);
        return;
    }

    voice_proto_begin(&wr, frame, size, VOICE_PROTO_MSG_WEBHOOK);
    voice_proto_put_u64(&wr, VOICE_PROTO_F_REQUEST_ID, s->request_id);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_CALL_SID, s->name, s->sid_len);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_NAME, s->name,
                          nlen - (sizeof(".hook") - 1));
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_URL, s->url.data, s->url.len);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_SECRET, s->ob->secret.data,
                          s->ob->secret.len);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_BODY, s->body.data,
                          s->body.len);

    n = voice_proto_finish(&wr);

    if (n == 0 || ngx_http_voice_peer_send_any(frame, n) == NULL) {
        ngx_explicit_memzero(frame, size);
        ngx_free(frame);
        ngx_str_set(&reason, "no bridged took it");
        ngx_http_voice_outbox_outcome(s, 0, &reason);
        return;
    }

    /* the frame held the secret */
    ngx_explicit_memzero(frame, n);
    ngx_free(frame);

    ngx_http_voice_outbox_state(s, NGX_HTTP_VOICE_OUTBOX_ST_SENT);
    ngx_add_timer(&s->timer, NGX_HTTP_VOICE_OUTBOX_REPLY);
}


static void
ngx_http_voice_outbox_state(ngx_http_voice_outbox_send_t *s,
    ngx_http_voice_outbox_state_e state)
{
    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "voice webhook %*s: state %d -> %d", s->sid_len, s->name,
                   s->state, state);

    s->state = state;
}


/* bridged's reply to a webhook message: NGX_DECLINED when not one */

ngx_int_t
ngx_http_voice_outbox_reply(voice_proto_msg_t *msg)
{
    ngx_str_t                      reason;
    ngx_queue_t                   *q;
    ngx_http_voice_outbox_send_t  *s;

    for (q = ngx_queue_head(&ngx_http_voice_outbox_sent);
         q != ngx_queue_sentinel(&ngx_http_voice_outbox_sent);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_voice_outbox_send_t, queue);

        if (s->request_id != msg->request_id
            || s->state != NGX_HTTP_VOICE_OUTBOX_ST_SENT)
        {
            continue;
        }

        if (s->timer.timer_set) {
            ngx_del_timer(&s->timer);
        }

        reason.data = (u_char *) msg->reason.data;
        reason.len = msg->reason.len;

        ngx_http_voice_outbox_outcome(s, msg->status, &reason);
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static void
ngx_http_voice_outbox_timeout(ngx_event_t *ev)
{
    ngx_str_t  reason;

    ngx_str_set(&reason, "bridged did not answer in time");
    ngx_http_voice_outbox_outcome(ev->data, 0, &reason);
}


/*
 * An attempt is over: a 2xx deletes the entry; anything else is a failed
 * attempt, and the entry is due again later, or given up.
 */

static void
ngx_http_voice_outbox_outcome(ngx_http_voice_outbox_send_t *s,
    ngx_uint_t status, ngx_str_t *reason)
{
    uint64_t   now;
    ngx_log_t *log;

    log = ngx_cycle->log;
    now = ngx_http_voice_now_ms();

    if (status >= 200 && status < 300) {
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_WEBHOOK_DELIVERED);

        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "voice: call %*s: webhook delivered to \"%V\" "
                      "(HTTP %ui, %uL ms after the record)", s->sid_len,
                      s->name, &s->url, status, now - s->made);
        s->next = 0;

    } else {
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_WEBHOOK_FAILED);

        s->next = s->stored
                  ? ngx_http_voice_outbox_fmt_next(s->made, now,
                                                   s->ob->retry,
                                                   (uint32_t) ngx_random())
                  : 0;

        if (s->next) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "voice: call %*s: webhook to \"%V\" failed (%s%V)"
                          ": tried again in %uL ms", s->sid_len, s->name,
                          &s->url, status ? "answered " : "", reason,
                          s->next - now);

        } else {
            ngx_http_voice_metrics_inc(
                NGX_HTTP_VOICE_METRIC_WEBHOOK_GIVEN_UP);

            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "voice: call %*s: webhook to \"%V\" given up "
                          "after %uL ms of attempts (last: %s%V); the "
                          "record stays in the transcript directory",
                          s->sid_len, s->name, &s->url, now - s->made,
                          status ? "answered " : "", reason);
        }
    }

    if (!s->stored) {
        ngx_http_voice_outbox_state(s, NGX_HTTP_VOICE_OUTBOX_ST_DONE);
        ngx_http_voice_outbox_file_done(&s->task.event);
        return;
    }

    ngx_http_voice_outbox_state(s, NGX_HTTP_VOICE_OUTBOX_ST_FILING);

    if (ngx_thread_task_post(s->ob->pool, &s->task) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "voice: call %*s: the thread pool refused the "
                      "webhook's outbox task", s->sid_len, s->name);
        ngx_http_voice_outbox_file_done(&s->task.event);
    }
}


/* runs in a thread of the pool: the entry goes, or waits until next */

static void
ngx_http_voice_outbox_file_thread(void *data, ngx_log_t *log)
{
    u_char                         path[NGX_MAX_PATH];
    struct timeval                 tv[2];
    ngx_http_voice_outbox_send_t  *s;

    s = data;

    if (s->ob->dir.len + NGX_HTTP_VOICE_OUTBOX_NAME_MAX > sizeof(path)) {
        return;
    }

    ngx_sprintf(path, "%s%s%Z", s->ob->dir.data, s->name);

    if (s->next == 0) {
        if (unlink((char *) path) == -1 && ngx_errno != NGX_ENOENT) {
            s->e.err = ngx_errno;
            s->e.failed = "unlink()";
        }

        return;
    }

    tv[0].tv_sec = (time_t) (s->next / 1000);
    tv[0].tv_usec = (suseconds_t) (s->next % 1000) * 1000;
    tv[1] = tv[0];

    if (utimes((char *) path, tv) == -1) {
        s->e.err = ngx_errno;
        s->e.failed = "utimes()";
    }
}


static void
ngx_http_voice_outbox_file_done(ngx_event_t *ev)
{
    uint64_t                       now;
    ngx_msec_t                     wait;
    ngx_http_voice_outbox_t       *ob;
    ngx_http_voice_outbox_send_t  *s;

    s = ev->data;
    ob = s->ob;

    if (s->e.failed) {
        ngx_log_error(NGX_LOG_ERR, ev->log, s->e.err,
                      "voice: call %*s: %s \"%s%s\" failed: the webhook's "
                      "outbox entry may be sent again", s->sid_len,
                      s->name, s->e.failed, ob->dir.data, s->name);
    }

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_http_voice_outbox_state(s, NGX_HTTP_VOICE_OUTBOX_ST_DONE);

    if (ngx_queue_next(&s->queue) != &s->queue) {
        ngx_queue_remove(&s->queue);
    }

    if (s->looked) {
        ob->flight--;
    }

    /* the first worker looks again as soon as there is more to send, or
     * when the entry it just deferred is due, not at its next round */

    if (ob->timer.timer_set && !ob->busy) {
        wait = (ob->more && s->looked) ? 1 : 0;

        if (wait == 0 && s->next && !s->e.failed) {
            now = ngx_http_voice_now_ms();
            wait = (s->next > now) ? (ngx_msec_t) (s->next - now) : 1;
        }

        if (wait && ngx_current_msec + wait < ob->timer.timer.key) {
            ngx_del_timer(&ob->timer);
            ngx_add_timer(&ob->timer, wait);
        }
    }

    ngx_free(s->data);
    ngx_free(s);
}


/*
 * The first worker looks at each outbox: at its start, then at the next
 * due entry, every LOOK_MIN to LOOK_MAX ms (an entry written or failed
 * by another worker is seen within LOOK_MAX).
 */

void
ngx_http_voice_outbox_init_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf)
{
    ngx_uint_t                 i;
    ngx_http_voice_outbox_t  **obs, *ob;

    if (ngx_worker != 0) {
        return;
    }

    obs = vmcf->outboxes.elts;

    for (i = 0; i < vmcf->outboxes.nelts; i++) {
        ob = obs[i];

        ob->task.ctx = ob;
        ob->task.handler = ngx_http_voice_outbox_look_thread;
        ob->task.event.handler = ngx_http_voice_outbox_look_done;
        ob->task.event.data = ob;
        ob->task.event.log = cycle->log;

        ob->timer.handler = ngx_http_voice_outbox_look;
        ob->timer.data = ob;
        ob->timer.log = cycle->log;
        ob->timer.cancelable = 1;

        ngx_add_timer(&ob->timer, NGX_HTTP_VOICE_OUTBOX_LOOK_MIN);
    }
}


static void
ngx_http_voice_outbox_look(ngx_event_t *ev)
{
    ngx_http_voice_outbox_t  *ob;

    ob = ev->data;

    if (ob->busy || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ob->want = NGX_HTTP_VOICE_OUTBOX_FLIGHT - ob->flight;
    ob->ntaken = 0;
    ob->pending = 0;
    ob->bad = 0;
    ob->more = 0;
    ob->earliest = 0;
    ob->e.failed = NULL;
    ob->e.err = 0;

    if (ngx_thread_task_post(ob->pool, &ob->task) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "voice: the thread pool refused the look at the "
                      "webhook outbox \"%s\"", ob->dir.data);
        ngx_add_timer(&ob->timer, NGX_HTTP_VOICE_OUTBOX_LOOK_MAX);
        return;
    }

    ob->busy = 1;
}


/* runs in a thread of the pool: counts the entries, takes the due ones */

static void
ngx_http_voice_outbox_look_thread(void *data, ngx_log_t *log)
{
    DIR                      *dir;
    size_t                    nlen, sid_len, url_len, body_len, len;
    u_char                    path[NGX_MAX_PATH], aside[NGX_MAX_PATH];
    u_char                   *buf;
    ngx_int_t                 rc;
    const u_char             *url, *body;
    uint64_t                  made, now, due;
    ngx_fd_t                  fd;
    struct dirent            *de;
    struct timeval            tv[2];
    ngx_file_info_t           fi;
    ngx_http_voice_outbox_t  *ob;

    ob = data;

    dir = opendir((char *) ob->dir.data);
    if (dir == NULL) {
        if (ngx_errno != NGX_ENOENT) {
            ob->e.err = ngx_errno;
            ob->e.failed = "opendir()";
        }
        return;
    }

    (void) gettimeofday(&tv[0], NULL);
    now = (uint64_t) tv[0].tv_sec * 1000 + tv[0].tv_usec / 1000;
    tv[0].tv_sec += NGX_HTTP_VOICE_OUTBOX_LEASE / 1000;
    tv[1] = tv[0];

    while ((de = readdir(dir)) != NULL) {
        nlen = ngx_strlen(de->d_name);

        if (de->d_name[0] == '.'
            || nlen >= NGX_HTTP_VOICE_OUTBOX_NAME_MAX
            || ob->dir.len + nlen + 1 > sizeof(path)
            || !ngx_http_voice_outbox_fmt_parse_name((u_char *) de->d_name,
                                                     nlen, &sid_len, &made))
        {
            continue;
        }

        ngx_sprintf(path, "%s%s%Z", ob->dir.data, de->d_name);

        if (ngx_file_info(path, &fi) == -1) {
            continue;           /* delivered meanwhile */
        }

        ob->pending++;

        due = (uint64_t) fi.st_mtim.tv_sec * 1000
              + fi.st_mtim.tv_nsec / 1000000;

        if (due > now) {
            if (ob->earliest == 0 || due < ob->earliest) {
                ob->earliest = due;
            }
            continue;
        }

        if (ob->ntaken == ob->want) {
            ob->more = 1;
            continue;
        }

        fd = open((char *) path, O_RDONLY | O_CLOEXEC);
        if (fd == -1) {
            continue;           /* delivered meanwhile */
        }

        buf = NULL;
        rc = ngx_http_voice_store_read_fd(fd, VOICE_PROTO_MAX_FRAME, &buf,
                                          &len, &ob->e);
        (void) ngx_close_file(fd);

        if (rc != NGX_OK && ob->e.err != 0) {
            continue;           /* said once the look is done */
        }

        /* not an entry of ours (torn, foreign, too large): set aside,
         * once, where no look goes */

        if (rc != NGX_OK
            || !ngx_http_voice_outbox_fmt_parse(buf, len, &url, &url_len,
                                                &body, &body_len))
        {
            free(buf);
            ob->e.failed = NULL;
            ngx_sprintf(aside, "%s.%s.bad%Z", ob->dir.data, de->d_name);
            (void) rename((char *) path, (char *) aside);
            ob->bad++;
            ob->pending--;
            continue;
        }

        /* leased: no other look takes it while it is tried */
        (void) utimes((char *) path, tv);

        ob->taken[ob->ntaken] = buf;
        ob->taken_len[ob->ntaken] = len;
        ngx_memcpy(ob->taken_name[ob->ntaken], de->d_name, nlen + 1);
        ob->ntaken++;
    }

    (void) closedir(dir);
}


static void
ngx_http_voice_outbox_look_done(ngx_event_t *ev)
{
    size_t                          url_len, body_len, nlen;
    uint64_t                        now;
    ngx_uint_t                      i, pending;
    ngx_msec_t                      wait;
    const u_char                   *url, *body;
    ngx_http_voice_outbox_t        *ob, **obs;
    ngx_http_voice_main_conf_t     *vmcf;
    ngx_http_voice_outbox_send_t   *s;

    ob = ev->data;
    ob->busy = 0;

    /* the instance's: every outbox's, as last looked at */

    vmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_voice_module);
    obs = vmcf->outboxes.elts;
    pending = 0;

    for (i = 0; i < vmcf->outboxes.nelts; i++) {
        pending += obs[i]->pending;
    }

    ngx_http_voice_metrics_set(NGX_HTTP_VOICE_METRIC_WEBHOOK_PENDING,
                              pending);

    if (ob->e.failed) {
        ngx_log_error(NGX_LOG_ERR, ev->log, ob->e.err,
                      "voice: the look at the webhook outbox \"%s\" "
                      "failed: %s failed", ob->dir.data, ob->e.failed);
    }

    if (ob->bad) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "voice: %ui files in the webhook outbox \"%s\" are "
                      "not entries: set aside as .{name}.bad", ob->bad,
                      ob->dir.data);
    }

    for (i = 0; i < ob->ntaken; i++) {
        nlen = ngx_strlen(ob->taken_name[i]);

        s = ngx_calloc(sizeof(ngx_http_voice_outbox_send_t), ev->log);
        if (s == NULL) {
            ngx_free(ob->taken[i]);
            continue;
        }

        /* the thread parsed it already */
        (void) ngx_http_voice_outbox_fmt_parse(ob->taken[i], ob->taken_len[i],
                                               &url, &url_len, &body,
                                               &body_len);

        s->ob = ob;
        s->data = ob->taken[i];
        s->url.data = (u_char *) url;
        s->url.len = url_len;
        s->body.data = (u_char *) body;
        s->body.len = body_len;
        s->stored = 1;
        s->looked = 1;
        ngx_memcpy(s->name, ob->taken_name[i], nlen + 1);
        (void) ngx_http_voice_outbox_fmt_parse_name(s->name, nlen,
                                                    &s->sid_len, &s->made);

        ob->flight++;
        ngx_http_voice_outbox_start(s);
    }

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    now = ngx_http_voice_now_ms();
    wait = NGX_HTTP_VOICE_OUTBOX_LOOK_MAX;

    if (ob->earliest && ob->earliest < now + wait) {
        wait = (ob->earliest > now) ? (ngx_msec_t) (ob->earliest - now) : 0;
    }

    if (ob->more && ob->flight < NGX_HTTP_VOICE_OUTBOX_FLIGHT) {
        wait = 0;
    }

    ngx_add_timer(&ob->timer, ngx_max(wait, NGX_HTTP_VOICE_OUTBOX_LOOK_MIN));
}
