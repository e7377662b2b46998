/*
 * ngx_http_voice_metrics.c: the module's counters and histograms, and
 * voice_metrics, which serves them as Prometheus text.
 *
 * The counters live in a shared-memory zone of their own (voice_metrics,
 * a fixed size), so every worker counts into the same figures and a
 * reload keeps them (nginx hands the old zone to the new cycle when its
 * name and size are unchanged).  Each count is one atomic add, without
 * the zone's lock: the media path counts every frame.  A histogram is a
 * fixed array of buckets (not cumulative; cumulated when rendered, and
 * its count is their sum, so a scrape never sees a count apart from its
 * buckets).  voice_status (ngx_http_voice_rest.c) reads the same
 * counters: one source.  nginx's own families are one table
 * (ngx_http_voice_metrics_owns: name, type, help, where the samples are),
 * rendered by one loop: a new counter is an id in ngx_http_voice_module.h
 * and a line there.
 *
 * bridged keeps counters of its own (OpenAI sessions, tools, Twilio's REST
 * API; bridged/bd_stats.c).  A scrape asks every live bridged this worker
 * knows with a stats message (VOICE_PROTO_MSG_STATS) and parks the
 * request, as the REST API parks its requests (ngx_http_voice_rest.c),
 * until each has answered or NGX_HTTP_VOICE_METRICS_WAIT has passed;
 * bridged's answer is Prometheus sample lines, which are checked, grouped
 * under their family's HELP and TYPE, and given a bridged="<endpoint>"
 * label.  A bridged that does not answer is voice_bridged_up 0.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <time.h>

#include "ngx_http_voice_module.h"


#define NGX_HTTP_VOICE_METRICS_ZONE      "voice_metrics"
#define NGX_HTTP_VOICE_METRICS_UNKNOWN   NGX_HTTP_VOICE_CALL_STATUSES
#define NGX_HTTP_VOICE_METRICS_OUTCOMES  (NGX_HTTP_VOICE_CALL_STATUSES + 1)
#define NGX_HTTP_VOICE_METRICS_BUCKETS   16     /* +Inf included */
#define NGX_HTTP_VOICE_METRICS_WAIT      1000   /* ms for bridged */
#define NGX_HTTP_VOICE_METRICS_SCRAPES   8      /* parked, per worker */
#define NGX_HTTP_VOICE_METRICS_BODY_MAX  (64 * 1024)  /* a bridged's */
#define NGX_HTTP_VOICE_METRICS_OWN       16384  /* nginx's own text */
#define NGX_HTTP_VOICE_METRICS_RTT       0
#define NGX_HTTP_VOICE_METRICS_TURN      1


typedef struct {
    ngx_atomic_t                bucket[NGX_HTTP_VOICE_METRICS_BUCKETS];
    ngx_atomic_t                sum;            /* us */
} ngx_http_voice_metrics_hist_t;


/* the zone's content */
typedef struct {
    ngx_atomic_t                counter[NGX_HTTP_VOICE_METRIC_N];
    ngx_atomic_t                active[2];      /* inbound, outbound */
    ngx_atomic_t                calls[2][NGX_HTTP_VOICE_METRICS_OUTCOMES];
    ngx_atomic_t                call_status[NGX_HTTP_VOICE_CALL_STATUSES];
    ngx_http_voice_metrics_hist_t  hist[2];
} ngx_http_voice_metrics_sh_t;


/* a histogram's buckets: their bounds, in us and as rendered */
typedef struct {
    ngx_uint_t                  n;              /* bounds, +Inf apart */
    const uint64_t             *le_us;
    const char                **le;
} ngx_http_voice_metrics_hdef_t;


/* one bridged asked by a scrape */
typedef struct {
    ngx_http_voice_peer_t      *peer;
    uint64_t                    id;
    ngx_str_t                   body;           /* its lines, in r->pool */
    unsigned                    asked:1;
    unsigned                    answered:1;
} ngx_http_voice_metrics_ask_t;


/* a scrape parked while bridged answers */
typedef struct {
    ngx_queue_t                 queue;
    ngx_http_request_t         *request;
    ngx_event_t                 timer;
    ngx_uint_t                  waiting;
    ngx_uint_t                  nasks;
    unsigned                    parked:1;
    ngx_http_voice_metrics_ask_t  asks[1];
} ngx_http_voice_metrics_scrape_t;


/* a family of bridged's lines: nginx gives its HELP and TYPE */
typedef struct {
    const char                 *name;
    const char                 *type;
    const char                 *help;
} ngx_http_voice_metrics_family_t;


/* where the samples of one of nginx's own families are in the zone */
typedef enum {
    NGX_HTTP_VOICE_METRICS_COUNTERS = 0,  /* counter[], sample by sample */
    NGX_HTTP_VOICE_METRICS_ACTIVE,        /* active[], by direction */
    NGX_HTTP_VOICE_METRICS_CALLS,         /* calls[][], by direction and
                                             final status */
    NGX_HTTP_VOICE_METRICS_CALL_STATUS,   /* call_status[], by CallStatus */
    NGX_HTTP_VOICE_METRICS_HIST           /* hist[], one histogram */
} ngx_http_voice_metrics_kind_e;


/* one sample of a COUNTERS family: its labels as written, its counter */
typedef struct {
    const char                 *labels;         /* NULL: none */
    ngx_http_voice_metric_e     id;
} ngx_http_voice_metrics_sample_t;


/* one of nginx's own families, as voice_metrics renders it */
typedef struct {
    ngx_http_voice_metrics_family_t  family;
    ngx_http_voice_metrics_kind_e    kind;
    ngx_uint_t                       hist;      /* HIST: which */
    ngx_uint_t                       nsamples;  /* COUNTERS: how many */
    ngx_http_voice_metrics_sample_t  sample[2];
} ngx_http_voice_metrics_own_t;


static ngx_int_t ngx_http_voice_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_voice_metrics_sh_t *ngx_http_voice_metrics_sh(void);
static void ngx_http_voice_metrics_observe(ngx_uint_t h, uint64_t us);
static void ngx_http_voice_metrics_timeout(ngx_event_t *ev);
static void ngx_http_voice_metrics_cleanup(void *data);
static void ngx_http_voice_metrics_unpark(
    ngx_http_voice_metrics_scrape_t *s);
static void ngx_http_voice_metrics_finish(
    ngx_http_voice_metrics_scrape_t *s);
static ngx_int_t ngx_http_voice_metrics_send(ngx_http_request_t *r,
    ngx_http_voice_metrics_scrape_t *s);
static u_char *ngx_http_voice_metrics_own(u_char *p, u_char *last,
    ngx_http_voice_metrics_sh_t *sh);
static u_char *ngx_http_voice_metrics_hist(u_char *p, u_char *last,
    ngx_http_voice_metrics_sh_t *sh, ngx_uint_t h, const char *name);
static u_char *ngx_http_voice_metrics_head(u_char *p, u_char *last,
    const char *name, const char *type, const char *help);
static u_char *ngx_http_voice_metrics_label(u_char *p, u_char *last,
    ngx_str_t *value);
static u_char *ngx_http_voice_metrics_lines(u_char *p, u_char *last,
    ngx_http_voice_metrics_family_t *f, ngx_http_voice_metrics_ask_t *a);
static ngx_uint_t ngx_http_voice_metrics_line(u_char *s, u_char *e,
    ngx_http_voice_metrics_family_t *f, u_char **labels, u_char **value);


static const uint64_t  ngx_http_voice_metrics_rtt_us[] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000
};

static const char  *ngx_http_voice_metrics_rtt_le[] = {
    "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05", "0.1", "0.25", "0.5", "1"
};

static const uint64_t  ngx_http_voice_metrics_turn_us[] = {
    250000, 500000, 750000, 1000000, 1500000, 2000000, 3000000, 5000000,
    10000000
};

static const char  *ngx_http_voice_metrics_turn_le[] = {
    "0.25", "0.5", "0.75", "1", "1.5", "2", "3", "5", "10"
};

static const ngx_http_voice_metrics_hdef_t  ngx_http_voice_metrics_hdefs[] = {
    { sizeof(ngx_http_voice_metrics_rtt_us) / sizeof(uint64_t),
      ngx_http_voice_metrics_rtt_us, ngx_http_voice_metrics_rtt_le },
    { sizeof(ngx_http_voice_metrics_turn_us) / sizeof(uint64_t),
      ngx_http_voice_metrics_turn_us, ngx_http_voice_metrics_turn_le }
};


/* nginx's own families, in the order voice_metrics renders them */
static const ngx_http_voice_metrics_own_t  ngx_http_voice_metrics_owns[] = {
    { { "voice_calls_active", "gauge",
        "Calls whose media stream is live." },
      NGX_HTTP_VOICE_METRICS_ACTIVE, 0, 0, { { NULL, 0 } } },

    { { "voice_calls_total", "counter",
        "Calls whose record is final, by direction and Twilio's final "
        "status." },
      NGX_HTTP_VOICE_METRICS_CALLS, 0, 0, { { NULL, 0 } } },

    { { "voice_calls_refused_total", "counter",
        "Calls refused by nginx: voice_max_calls reached (limit), or every "
        "bridged full (bridged_full)." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 2,
      { { "reason=\"limit\"", NGX_HTTP_VOICE_METRIC_REFUSED_LIMIT },
        { "reason=\"bridged_full\"",
          NGX_HTTP_VOICE_METRIC_REFUSED_BRIDGED } } },

    { { "voice_call_status_callbacks_total", "counter",
        "Twilio's call status callbacks, by CallStatus." },
      NGX_HTTP_VOICE_METRICS_CALL_STATUS, 0, 0, { { NULL, 0 } } },

    { { "voice_media_frames_total", "counter",
        "Media frames: in from Twilio to bridged, out to Twilio." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 2,
      { { "direction=\"in\"", NGX_HTTP_VOICE_METRIC_FRAMES_IN },
        { "direction=\"out\"", NGX_HTTP_VOICE_METRIC_FRAMES_OUT } } },

    { { "voice_media_frames_dropped_total", "counter",
        "Media frames dropped on a full queue or a bridged away." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 2,
      { { "direction=\"in\"", NGX_HTTP_VOICE_METRIC_DROPPED_IN },
        { "direction=\"out\"", NGX_HTTP_VOICE_METRIC_DROPPED_OUT } } },

    { { "voice_media_events_total", "counter",
        "Media stream events left aside: ignored (unknown, or for no call) "
        "and invalid." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 2,
      { { "kind=\"ignored\"", NGX_HTTP_VOICE_METRIC_EVENTS_IGNORED },
        { "kind=\"invalid\"", NGX_HTTP_VOICE_METRIC_EVENTS_INVALID } } },

    { { "voice_transcripts_written_total", "counter",
        "Call records written." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 1,
      { { NULL, NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_WRITTEN } } },

    { { "voice_transcripts_failed_total", "counter",
        "Calls whose record storage failed." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 1,
      { { NULL, NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_FAILED } } },

    { { "voice_transcripts_recovered_total", "counter",
        "Records recovered from the journal of a process that died." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 1,
      { { NULL, NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_RECOVERED } } },

    { { "voice_transcripts_lost_total", "counter",
        "Records given up." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 1,
      { { NULL, NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_LOST } } },

    { { "voice_webhook_deliveries_total", "counter",
        "Post-call webhook delivery attempts, by outcome." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 2,
      { { "outcome=\"delivered\"", NGX_HTTP_VOICE_METRIC_WEBHOOK_DELIVERED },
        { "outcome=\"failed\"", NGX_HTTP_VOICE_METRIC_WEBHOOK_FAILED } } },

    { { "voice_webhook_given_up_total", "counter",
        "Records the webhook gave up on (voice_call_webhook_retry)." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 1,
      { { NULL, NGX_HTTP_VOICE_METRIC_WEBHOOK_GIVEN_UP } } },

    { { "voice_webhook_pending", "gauge",
        "Records waiting in the webhook's outboxes, as last looked at." },
      NGX_HTTP_VOICE_METRICS_COUNTERS, 0, 1,
      { { NULL, NGX_HTTP_VOICE_METRIC_WEBHOOK_PENDING } } },

    { { "voice_bridge_rtt_seconds", "histogram",
        "Round trip of a heartbeat between an nginx worker and a bridged." },
      NGX_HTTP_VOICE_METRICS_HIST, NGX_HTTP_VOICE_METRICS_RTT, 0,
      { { NULL, 0 } } },

    { { "voice_turn_latency_seconds", "histogram",
        "From the end of the caller's speech to the assistant's first "
        "audio." },
      NGX_HTTP_VOICE_METRICS_HIST, NGX_HTTP_VOICE_METRICS_TURN, 0,
      { { NULL, 0 } } }
};


static ngx_str_t  ngx_http_voice_metrics_unknown = ngx_string("unknown");

static const char  *ngx_http_voice_metrics_dir[] = { "inbound", "outbound" };

/* the worker's scrapes waiting for bridged (a process is one worker) */
static ngx_queue_t  ngx_http_voice_metrics_scrapes = {
    &ngx_http_voice_metrics_scrapes, &ngx_http_voice_metrics_scrapes
};
static ngx_uint_t   ngx_http_voice_metrics_nscrapes;


/* what bridged reports (bridged/bd_stats.c); other lines are left out */
static ngx_http_voice_metrics_family_t  ngx_http_voice_metrics_bridged[] = {
    { "voice_bridged_calls", "gauge", "Calls a bridged carries now." },
    { "voice_bridged_calls_refused_total", "counter",
      "Streams a bridged refused at its --max-calls." },
    { "voice_openai_sessions_total", "counter",
      "OpenAI Realtime sessions opened (first and reconnects)." },
    { "voice_openai_reconnects_total", "counter",
      "OpenAI Realtime sessions opened again for a call that had one." },
    { "voice_openai_errors_total", "counter",
      "OpenAI error events, by their code." },
    { "voice_tool_calls_total", "counter",
      "Tool calls of the assistant, by tool name and outcome." },
    { "voice_twilio_requests_total", "counter",
      "Requests to Twilio's REST API, by HTTP status (error: no answer)." },
    { "voice_twilio_request_seconds", "histogram",
      "Time of one request to Twilio's REST API." }
};


ngx_int_t
ngx_http_voice_metrics_add(ngx_conf_t *cf, ngx_http_voice_main_conf_t *vmcf)
{
    ngx_str_t        name;
    ngx_shm_zone_t  *shm_zone;

    ngx_str_set(&name, NGX_HTTP_VOICE_METRICS_ZONE);

    /* a fixed size: a reload finds the same zone, with its counts */
    shm_zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                     &ngx_http_voice_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_voice_metrics_init_zone;
    vmcf->metrics = shm_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_voice_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t              *shpool;
    ngx_http_voice_metrics_sh_t  *sh;

    /* a reload: the old cycle's counters go on */

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_voice_metrics_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;
    shm_zone->data = sh;

    return NGX_OK;
}


static ngx_http_voice_metrics_sh_t *
ngx_http_voice_metrics_sh(void)
{
    ngx_http_voice_main_conf_t  *vmcf;

    vmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_voice_module);

    if (vmcf == NULL || vmcf->metrics == NULL) {
        return NULL;
    }

    return vmcf->metrics->data;
}


/* safe in the thread pool's threads too */

void
ngx_http_voice_metrics_inc(ngx_http_voice_metric_e id)
{
    ngx_http_voice_metrics_sh_t  *sh;

    sh = ngx_http_voice_metrics_sh();

    if (sh) {
        (void) ngx_atomic_fetch_add(&sh->counter[id], 1);
    }
}


ngx_atomic_uint_t
ngx_http_voice_metrics_get(ngx_http_voice_metric_e id)
{
    ngx_http_voice_metrics_sh_t  *sh;

    sh = ngx_http_voice_metrics_sh();

    return sh ? sh->counter[id] : 0;
}


/* a gauge that one worker measures for all (the webhook's waiting
 * entries): a plain store, the last measure wins */

void
ngx_http_voice_metrics_set(ngx_http_voice_metric_e id,
    ngx_atomic_uint_t value)
{
    ngx_http_voice_metrics_sh_t  *sh;

    sh = ngx_http_voice_metrics_sh();

    if (sh) {
        sh->counter[id] = value;
    }
}


/* a CallStatus callback from Twilio (its index) */

void
ngx_http_voice_metrics_call_status(ngx_uint_t status)
{
    ngx_http_voice_metrics_sh_t  *sh;

    sh = ngx_http_voice_metrics_sh();

    if (sh && status < NGX_HTTP_VOICE_CALL_STATUSES) {
        (void) ngx_atomic_fetch_add(&sh->call_status[status], 1);
    }
}


ngx_atomic_uint_t
ngx_http_voice_metrics_call_status_get(ngx_uint_t status)
{
    ngx_http_voice_metrics_sh_t  *sh;

    sh = ngx_http_voice_metrics_sh();

    return (sh && status < NGX_HTTP_VOICE_CALL_STATUSES)
           ? sh->call_status[status] : 0;
}


/*
 * A call's stream is live (on) or over: counted once each way, by its
 * direction, which is known before it goes live and does not change.
 * A worker that dies leaves its calls counted (the figure is a gauge of
 * all workers, kept in shared memory).
 */

void
ngx_http_voice_metrics_call_active(ngx_http_voice_call_t *call,
    ngx_uint_t on)
{
    ngx_http_voice_metrics_sh_t  *sh;

    if (call->active == (on ? 1 : 0)) {
        return;
    }

    call->active = on ? 1 : 0;

    sh = ngx_http_voice_metrics_sh();

    if (sh) {
        (void) ngx_atomic_fetch_add(&sh->active[call->outbound],
                                    on ? 1 : -1);
    }
}


/* a call's record is final: voice_calls_total, by what Twilio reported */

void
ngx_http_voice_metrics_call_over(ngx_http_voice_call_t *call)
{
    ngx_uint_t                    outcome;
    ngx_http_voice_metrics_sh_t  *sh;

    sh = ngx_http_voice_metrics_sh();
    if (sh == NULL) {
        return;
    }

    outcome = (call->reported && call->outcome.final
               && call->outcome.status >= NGX_HTTP_VOICE_CALL_STATUS_COMPLETED
               && call->outcome.status < NGX_HTTP_VOICE_CALL_STATUSES)
              ? call->outcome.status : NGX_HTTP_VOICE_METRICS_UNKNOWN;

    (void) ngx_atomic_fetch_add(&sh->calls[call->outbound][outcome], 1);
}


static void
ngx_http_voice_metrics_observe(ngx_uint_t h, uint64_t us)
{
    ngx_uint_t                            i;
    ngx_http_voice_metrics_sh_t          *sh;
    const ngx_http_voice_metrics_hdef_t  *d;

    sh = ngx_http_voice_metrics_sh();
    if (sh == NULL) {
        return;
    }

    d = &ngx_http_voice_metrics_hdefs[h];

    for (i = 0; i < d->n && us > d->le_us[i]; i++) {
        /* void */
    }

    (void) ngx_atomic_fetch_add(&sh->hist[h].bucket[i], 1);
    (void) ngx_atomic_fetch_add(&sh->hist[h].sum, (ngx_atomic_int_t) us);
}


void
ngx_http_voice_metrics_bridge_rtt(uint64_t us)
{
    ngx_http_voice_metrics_observe(NGX_HTTP_VOICE_METRICS_RTT, us);
}


void
ngx_http_voice_metrics_turn(uint32_t ms)
{
    ngx_http_voice_metrics_observe(NGX_HTTP_VOICE_METRICS_TURN,
                                   (uint64_t) ms * 1000);
}


/* a monotonic clock in us: ngx_current_msec is too coarse for a round
 * trip on one host */

uint64_t
ngx_http_voice_metrics_now_us(void)
{
    struct timespec  ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1) {
        return 0;
    }

    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}


/*
 * voice_metrics: asks every live bridged for its counters, then answers;
 * with none to ask, at once.
 */

ngx_int_t
ngx_http_voice_metrics_handler(ngx_http_request_t *r)
{
    size_t                            n;
    u_char                            buf[64];
    ngx_int_t                         rc;
    ngx_uint_t                        i;
    ngx_pool_cleanup_t               *cln;
    voice_proto_writer_t              wr;
    ngx_http_voice_worker_t          *w;
    ngx_http_voice_metrics_ask_t     *a;
    ngx_http_voice_metrics_scrape_t  *s;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    w = ngx_http_voice_worker();
    n = w ? w->npeers : 0;

    s = ngx_pcalloc(r->pool, sizeof(ngx_http_voice_metrics_scrape_t)
                             + n * sizeof(ngx_http_voice_metrics_ask_t));
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s->request = r;
    s->nasks = n;

    if (n == 0) {
        return ngx_http_voice_metrics_send(r, s);
    }

    if (ngx_http_voice_metrics_nscrapes >= NGX_HTTP_VOICE_METRICS_SCRAPES) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice_metrics: %d scrapes already wait for "
                      "bridged", NGX_HTTP_VOICE_METRICS_SCRAPES);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        a = &s->asks[i];
        a->peer = &w->peers[i];

        if (a->peer->state != NGX_HTTP_VOICE_PEER_ST_UP) {
            continue;
        }

        a->id = w->next_request_id++;

        voice_proto_begin(&wr, buf, sizeof(buf), VOICE_PROTO_MSG_STATS);
        voice_proto_put_u64(&wr, VOICE_PROTO_F_REQUEST_ID, a->id);

        if (ngx_http_voice_bridge_send(a->peer, buf,
                                       voice_proto_finish(&wr))
            == NGX_OK)
        {
            a->asked = 1;
            s->waiting++;
        }
    }

    if (s->waiting == 0) {
        return ngx_http_voice_metrics_send(r, s);
    }

    ngx_queue_insert_tail(&ngx_http_voice_metrics_scrapes, &s->queue);
    ngx_http_voice_metrics_nscrapes++;
    s->parked = 1;

    s->timer.handler = ngx_http_voice_metrics_timeout;
    s->timer.data = s;
    s->timer.log = r->connection->log;
    ngx_add_timer(&s->timer, NGX_HTTP_VOICE_METRICS_WAIT);

    cln->handler = ngx_http_voice_metrics_cleanup;
    cln->data = s;

    r->main->count++;

    return NGX_DONE;
}


/* a MSG_REPLY: 1 when it answers a scrape (it is then taken) */

ngx_uint_t
ngx_http_voice_metrics_reply(ngx_http_voice_peer_t *peer,
    voice_proto_msg_t *msg)
{
    ngx_uint_t                        i;
    ngx_queue_t                      *q;
    ngx_http_voice_metrics_ask_t     *a;
    ngx_http_voice_metrics_scrape_t  *s;

    if (ngx_http_voice_metrics_nscrapes == 0) {
        return 0;
    }

    for (q = ngx_queue_head(&ngx_http_voice_metrics_scrapes);
         q != ngx_queue_sentinel(&ngx_http_voice_metrics_scrapes);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_voice_metrics_scrape_t, queue);

        for (i = 0; i < s->nasks; i++) {
            a = &s->asks[i];

            if (!a->asked || a->answered || a->id != msg->request_id
                || a->peer != peer)
            {
                continue;
            }

            a->answered = 1;
            s->waiting--;

            if (msg->status != 200
                || msg->body.len > NGX_HTTP_VOICE_METRICS_BODY_MAX)
            {
                ngx_log_error(NGX_LOG_ERR, s->request->connection->log, 0,
                              "voice_metrics: bridged at \"%V\" answered "
                              "%uD with %uz bytes: left out", &peer->endpoint,
                              msg->status, msg->body.len);
                a->answered = 0;

            } else if (msg->body.len) {
                a->body.data = ngx_pnalloc(s->request->pool, msg->body.len);

                if (a->body.data) {
                    ngx_memcpy(a->body.data, msg->body.data, msg->body.len);
                    a->body.len = msg->body.len;
                }
            }

            if (s->waiting == 0) {
                ngx_http_voice_metrics_finish(s);
            }

            return 1;
        }
    }

    return 0;
}


static void
ngx_http_voice_metrics_timeout(ngx_event_t *ev)
{
    ngx_http_voice_metrics_scrape_t  *s;

    s = ev->data;

    ngx_log_error(NGX_LOG_WARN, s->request->connection->log, 0,
                  "voice_metrics: %ui bridged did not answer within %d ms",
                  s->waiting, NGX_HTTP_VOICE_METRICS_WAIT);

    ngx_http_voice_metrics_finish(s);
}


/* the request is going first (the client left, or the worker exits) */

static void
ngx_http_voice_metrics_cleanup(void *data)
{
    ngx_http_voice_metrics_unpark(data);
}


static void
ngx_http_voice_metrics_unpark(ngx_http_voice_metrics_scrape_t *s)
{
    if (!s->parked) {
        return;
    }

    s->parked = 0;

    ngx_queue_remove(&s->queue);
    ngx_http_voice_metrics_nscrapes--;

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }
}


static void
ngx_http_voice_metrics_finish(ngx_http_voice_metrics_scrape_t *s)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = s->request;
    c = r->connection;

    ngx_http_voice_metrics_unpark(s);
    ngx_http_set_log_request(c->log, r);

    rc = ngx_http_voice_metrics_send(r, s);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_voice_metrics_send(ngx_http_request_t *r,
    ngx_http_voice_metrics_scrape_t *s)
{
    u_char                           *body, *p, *last, *q;
    size_t                            size, lines;
    ngx_str_t                         type;
    ngx_uint_t                        i, f;
    ngx_http_voice_metrics_sh_t      *sh;
    ngx_http_voice_metrics_ask_t     *a;
    ngx_http_voice_metrics_family_t  *fam;

    /* nginx's own figures are bounded; each line of a bridged gains its
     * label (an endpoint escaped takes twice its length at most) */

    size = NGX_HTTP_VOICE_METRICS_OWN
           + sizeof(ngx_http_voice_metrics_bridged)
             / sizeof(ngx_http_voice_metrics_family_t) * 256;

    for (i = 0; i < s->nasks; i++) {
        a = &s->asks[i];
        lines = 1;

        for (q = a->body.data; q < a->body.data + a->body.len; q++) {
            lines += (*q == '\n');
        }

        size += 64 + 2 * a->peer->endpoint.len + a->body.len
                + lines * (16 + 2 * a->peer->endpoint.len);
    }

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = body;
    last = body + size;

    sh = ngx_http_voice_metrics_sh();

    if (sh) {
        p = ngx_http_voice_metrics_own(p, last, sh);
    }

    p = ngx_http_voice_metrics_head(p, last, "voice_bridged_up", "gauge",
                                    "1 when the bridged answered this "
                                    "scrape in time.");

    for (i = 0; i < s->nasks; i++) {
        a = &s->asks[i];
        p = ngx_slprintf(p, last, "voice_bridged_up{bridged=\"");
        p = ngx_http_voice_metrics_label(p, last, &a->peer->endpoint);
        p = ngx_slprintf(p, last, "\"} %d\n", a->answered ? 1 : 0);
    }

    for (f = 0; f < sizeof(ngx_http_voice_metrics_bridged)
                    / sizeof(ngx_http_voice_metrics_family_t); f++)
    {
        fam = &ngx_http_voice_metrics_bridged[f];

        p = ngx_http_voice_metrics_head(p, last, fam->name, fam->type,
                                        fam->help);

        for (i = 0; i < s->nasks; i++) {
            if (s->asks[i].answered) {
                p = ngx_http_voice_metrics_lines(p, last, fam, &s->asks[i]);
            }
        }
    }

    ngx_str_set(&type, "text/plain; version=0.0.4; charset=utf-8");

    return ngx_http_voice_send_body(r, NGX_HTTP_OK, &type, body, p - body);
}


static u_char *
ngx_http_voice_metrics_head(u_char *p, u_char *last, const char *name,
    const char *type, const char *help)
{
    return ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                        name, type);
}


/* a label's value: \, " and newline escaped, as the text format wants */

static u_char *
ngx_http_voice_metrics_label(u_char *p, u_char *last, ngx_str_t *value)
{
    u_char  *s, *e;

    e = value->data + value->len;

    for (s = value->data; s < e && p + 2 <= last; s++) {
        if (*s == '\\' || *s == '"') {
            *p++ = '\\';
            *p++ = *s;

        } else if (*s == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else {
            *p++ = *s;
        }
    }

    return p;
}


/* nginx's own families: one head each, then its samples from the zone */

static u_char *
ngx_http_voice_metrics_own(u_char *p, u_char *last,
    ngx_http_voice_metrics_sh_t *sh)
{
    ngx_str_t                               *st;
    ngx_uint_t                               d, i;
    const ngx_http_voice_metrics_own_t      *o, *end;
    const ngx_http_voice_metrics_sample_t   *sm;

    end = ngx_http_voice_metrics_owns
          + sizeof(ngx_http_voice_metrics_owns)
            / sizeof(ngx_http_voice_metrics_own_t);

    for (o = ngx_http_voice_metrics_owns; o < end; o++) {

        p = ngx_http_voice_metrics_head(p, last, o->family.name,
                                        o->family.type, o->family.help);

        switch (o->kind) {

        case NGX_HTTP_VOICE_METRICS_COUNTERS:
            for (i = 0; i < o->nsamples; i++) {
                sm = &o->sample[i];

                if (sm->labels) {
                    p = ngx_slprintf(p, last, "%s{%s} %uA\n",
                                     o->family.name, sm->labels,
                                     sh->counter[sm->id]);

                } else {
                    p = ngx_slprintf(p, last, "%s %uA\n", o->family.name,
                                     sh->counter[sm->id]);
                }
            }

            break;

        case NGX_HTTP_VOICE_METRICS_ACTIVE:
            for (d = 0; d < 2; d++) {
                p = ngx_slprintf(p, last, "%s{direction=\"%s\"} %A\n",
                                 o->family.name,
                                 ngx_http_voice_metrics_dir[d],
                                 (ngx_atomic_int_t) sh->active[d]);
            }

            break;

        case NGX_HTTP_VOICE_METRICS_CALLS:
            for (d = 0; d < 2; d++) {
                /* the final statuses, and none */
                for (i = NGX_HTTP_VOICE_CALL_STATUS_COMPLETED;
                     i < NGX_HTTP_VOICE_METRICS_OUTCOMES;
                     i++)
                {
                    st = (i == NGX_HTTP_VOICE_METRICS_UNKNOWN)
                         ? &ngx_http_voice_metrics_unknown
                         : ngx_http_voice_call_status_name(i);

                    p = ngx_slprintf(p, last, "%s{direction=\"%s\","
                                     "outcome=\"%V\"} %uA\n",
                                     o->family.name,
                                     ngx_http_voice_metrics_dir[d], st,
                                     sh->calls[d][i]);
                }
            }

            break;

        case NGX_HTTP_VOICE_METRICS_CALL_STATUS:
            for (i = 0; i < NGX_HTTP_VOICE_CALL_STATUSES; i++) {
                p = ngx_slprintf(p, last, "%s{status=\"%V\"} %uA\n",
                                 o->family.name,
                                 ngx_http_voice_call_status_name(i),
                                 sh->call_status[i]);
            }

            break;

        default: /* NGX_HTTP_VOICE_METRICS_HIST */
            p = ngx_http_voice_metrics_hist(p, last, sh, o->hist,
                                            o->family.name);
            break;
        }
    }

    return p;
}


/* histogram h's samples, cumulated, under its family's name */

static u_char *
ngx_http_voice_metrics_hist(u_char *p, u_char *last,
    ngx_http_voice_metrics_sh_t *sh, ngx_uint_t h, const char *name)
{
    uint64_t                              total, sum;
    ngx_uint_t                            i;
    const ngx_http_voice_metrics_hdef_t  *d;

    d = &ngx_http_voice_metrics_hdefs[h];

    total = 0;

    for (i = 0; i <= d->n; i++) {
        total += sh->hist[h].bucket[i];
        p = ngx_slprintf(p, last, "%s_bucket{le=\"%s\"} %uL\n", name,
                         i < d->n ? d->le[i] : "+Inf", total);
    }

    sum = sh->hist[h].sum;

    return ngx_slprintf(p, last, "%s_sum %uL.%06uL\n%s_count %uL\n",
                        name, sum / 1000000, sum % 1000000, name, total);
}


/* the lines of a bridged's answer that belong to family f, labeled */

static u_char *
ngx_http_voice_metrics_lines(u_char *p, u_char *last,
    ngx_http_voice_metrics_family_t *f, ngx_http_voice_metrics_ask_t *a)
{
    u_char  *s, *e, *end, *labels, *value, *name_end;

    end = a->body.data + a->body.len;

    for (s = a->body.data; s < end; s = e + 1) {
        e = ngx_strlchr(s, end, '\n');
        if (e == NULL) {
            e = end;
        }

        if (!ngx_http_voice_metrics_line(s, e, f, &labels, &value)) {
            continue;
        }

        name_end = labels ? labels : value - 1;

        p = ngx_slprintf(p, last, "%*s{bridged=\"", (size_t) (name_end - s),
                         s);
        p = ngx_http_voice_metrics_label(p, last, &a->peer->endpoint);

        if (labels && labels[1] != '}') {
            /* its own labels, with their closing brace */
            p = ngx_slprintf(p, last, "\",%*s",
                             (size_t) (value - labels - 2), labels + 1);

        } else {
            p = ngx_slprintf(p, last, "\"}");
        }

        p = ngx_slprintf(p, last, " %*s\n", (size_t) (e - value), value);
    }

    return p;
}


/*
 * One sample line of bridged's, [s, e): 1 when it is well formed and of
 * family f, with *labels at its '{' (or NULL) and *value after the space.
 */

static ngx_uint_t
ngx_http_voice_metrics_line(u_char *s, u_char *e,
    ngx_http_voice_metrics_family_t *f, u_char **labels, u_char **value)
{
    u_char      *q, ch;
    size_t       len, flen;
    ngx_uint_t   quoted;

    for (q = s; q < e; q++) {
        ch = *q;

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '_' || ch == ':'))
        {
            break;
        }
    }

    len = q - s;
    flen = ngx_strlen(f->name);

    if (len < flen || ngx_strncmp(s, f->name, flen) != 0) {
        return 0;
    }

    if (len != flen) {
        if (f->type[0] != 'h') {
            return 0;
        }

        if (!((len - flen == 7 && ngx_strncmp(s + flen, "_bucket", 7) == 0)
              || (len - flen == 4 && ngx_strncmp(s + flen, "_sum", 4) == 0)
              || (len - flen == 6
                  && ngx_strncmp(s + flen, "_count", 6) == 0)))
        {
            return 0;
        }
    }

    *labels = NULL;

    if (q < e && *q == '{') {
        *labels = q;
        quoted = 0;

        for (q++; q < e; q++) {
            if (quoted) {
                if (*q == '\\') {
                    q++;

                } else if (*q == '"') {
                    quoted = 0;
                }

                continue;
            }

            if (*q == '"') {
                quoted = 1;

            } else if (*q == '}') {
                break;
            }
        }

        if (q == e) {
            return 0;
        }

        q++;
    }

    if (q == e || *q != ' ' || q + 1 == e) {
        return 0;
    }

    *value = ++q;

    for ( /* void */ ; q < e; q++) {
        if (ngx_strlchr((u_char *) "0123456789.eE+-InfNa",
                        (u_char *) "0123456789.eE+-InfNa" + 20, *q)
            == NULL)
        {
            return 0;
        }
    }

    return 1;
}
