/*
 * ngx_http_voice_module.c: the voice module's directives, configuration
 * and life cycle.
 *
 * Each endpoint is a handler directive that takes no argument and sets
 * the location's content handler, like stub_status: voice_twiml,
 * voice_call_status, voice_media_stream, voice_api_numbers,
 * voice_api_call, voice_api_end_call, voice_api_transcript and
 * voice_status; each such location is noted as its directive is read.
 * Value directives use nginx's stock slots, and merge_loc_conf only
 * merges them.  Postconfiguration, once the http block is read, completes
 * each noted location: a value not written in nginx.conf falls back to the
 * environment of the master process (PUBLIC_URL, TRANSCRIPT_DIR,
 * TWILIO_AUTH_TOKEN, VOICE_API_TOKEN), so nginx.conf always wins and
 * secrets need never be written into it; secret files are read, each
 * variable and file once; URLs are derived from the public URL; thread
 * pools are added; and the directives are checked against each other, so
 * `nginx -t` fails rather than a request at run time.
 * init_process/exit_process start and stop the per-worker ZeroMQ channel
 * (ngx_http_voice_bridge.c); init_process also starts each worker's
 * recovery of dead journals (ngx_http_voice_recover.c).  The helpers
 * every handler shares (a header lookup, JSON and error answers, reading
 * a request body) are ngx_http_voice_http.c's.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"


static void *ngx_http_voice_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_voice_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_voice_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_voice_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_voice_init_process(ngx_cycle_t *cycle);
static void ngx_http_voice_exit_process(ngx_cycle_t *cycle);

static char *ngx_http_voice_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_voice_set_bridge(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_voice_set_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_voice_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_voice_conf_location(ngx_conf_t *cf,
    void **loc_conf);
static ngx_http_voice_conf_read_t *ngx_http_voice_conf_read_find(
    ngx_conf_t *cf, u_char *name, size_t len, ngx_uint_t file);
static ngx_int_t ngx_http_voice_derive_urls(ngx_conf_t *cf,
    ngx_http_voice_loc_conf_t *conf);


static ngx_conf_num_bounds_t  ngx_http_voice_hwm_bounds = {
    ngx_conf_check_num_bounds, 16, 1000000
};

static ngx_conf_num_bounds_t  ngx_http_voice_max_calls_bounds = {
    ngx_conf_check_num_bounds, 0, 1000000
};


#define NGX_HTTP_VOICE_LOC_CONF                                               \
    NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF

#define NGX_HTTP_VOICE_HANDLER(name, kind)                                    \
    { ngx_string(name),                                                       \
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,                                      \
      ngx_http_voice_set_handler,                                             \
      NGX_HTTP_LOC_CONF_OFFSET,                                               \
      kind,                                                                   \
      NULL }

#define NGX_HTTP_VOICE_VALUE(name, slot, field)                               \
    { ngx_string(name),                                                       \
      NGX_HTTP_VOICE_LOC_CONF|NGX_CONF_TAKE1,                                 \
      slot,                                                                   \
      NGX_HTTP_LOC_CONF_OFFSET,                                               \
      offsetof(ngx_http_voice_loc_conf_t, field),                             \
      NULL }


/* voice_worker_sched: the workers' Linux scheduling policy */
static ngx_conf_enum_t  ngx_http_voice_sched_policies[] = {
    { ngx_string("other"), 0 },
    { ngx_string("batch"), 1 },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_voice_commands[] = {

    NGX_HTTP_VOICE_HANDLER("voice_twiml", NGX_HTTP_VOICE_TWIML),
    NGX_HTTP_VOICE_HANDLER("voice_media_stream", NGX_HTTP_VOICE_MEDIA_STREAM),
    NGX_HTTP_VOICE_HANDLER("voice_api_numbers", NGX_HTTP_VOICE_API_NUMBERS),
    NGX_HTTP_VOICE_HANDLER("voice_api_call", NGX_HTTP_VOICE_API_CALL),
    NGX_HTTP_VOICE_HANDLER("voice_api_end_call", NGX_HTTP_VOICE_API_END_CALL),
    NGX_HTTP_VOICE_HANDLER("voice_api_transcript",
                           NGX_HTTP_VOICE_API_TRANSCRIPT),
    NGX_HTTP_VOICE_HANDLER("voice_api_transcripts",
                           NGX_HTTP_VOICE_API_TRANSCRIPTS),
    NGX_HTTP_VOICE_HANDLER("voice_api_calls", NGX_HTTP_VOICE_API_CALLS),
    NGX_HTTP_VOICE_HANDLER("voice_status", NGX_HTTP_VOICE_STATUS),
    NGX_HTTP_VOICE_HANDLER("voice_call_status", NGX_HTTP_VOICE_CALL_STATUS),
    NGX_HTTP_VOICE_HANDLER("voice_metrics", NGX_HTTP_VOICE_METRICS),

    { ngx_string("voice_bridge"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_voice_set_bridge,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("voice_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_voice_set_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("voice_bridge_hwm"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_voice_main_conf_t, hwm),
      &ngx_http_voice_hwm_bounds },

    { ngx_string("voice_bridge_curve_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_voice_main_conf_t, curve_key_file),
      NULL },

    { ngx_string("voice_bridge_curve_server_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_voice_main_conf_t, curve_server_key_file),
      NULL },

    { ngx_string("voice_worker_sched"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_voice_main_conf_t, worker_sched),
      &ngx_http_voice_sched_policies },

    { ngx_string("voice_bridge_heartbeat"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_voice_main_conf_t, heartbeat),
      NULL },

    { ngx_string("voice_shutdown_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_voice_main_conf_t, shutdown_timeout),
      NULL },

    NGX_HTTP_VOICE_VALUE("voice_public_url", ngx_conf_set_str_slot,
                         public_url),
    NGX_HTTP_VOICE_VALUE("voice_twiml_url", ngx_conf_set_str_slot,
                         twiml_url),
    NGX_HTTP_VOICE_VALUE("voice_stream_url", ngx_conf_set_str_slot,
                         stream_url),
    NGX_HTTP_VOICE_VALUE("voice_status_callback_url", ngx_conf_set_str_slot,
                         status_url),
    NGX_HTTP_VOICE_VALUE("voice_fallback_message", ngx_conf_set_str_slot,
                         fallback),
    NGX_HTTP_VOICE_VALUE("voice_transcript_dir", ngx_conf_set_str_slot,
                         transcript_dir),
    NGX_HTTP_VOICE_VALUE("voice_transcript_thread_pool",
                         ngx_conf_set_str_slot, thread_pool_name),
    NGX_HTTP_VOICE_VALUE("voice_transcript_wait", ngx_conf_set_msec_slot,
                         transcript_wait),
    NGX_HTTP_VOICE_VALUE("voice_transcript_retry", ngx_conf_set_msec_slot,
                         transcript_retry),
    NGX_HTTP_VOICE_VALUE("voice_transcript_keep", ngx_conf_set_sec_slot,
                         transcript_keep),
    NGX_HTTP_VOICE_VALUE("voice_call_webhook", ngx_conf_set_str_slot,
                         webhook_url),
    NGX_HTTP_VOICE_VALUE("voice_call_webhook_secret_file",
                         ngx_conf_set_str_slot, webhook_secret_file),
    NGX_HTTP_VOICE_VALUE("voice_call_webhook_outbox", ngx_conf_set_str_slot,
                         webhook_outbox),
    NGX_HTTP_VOICE_VALUE("voice_call_webhook_retry", ngx_conf_set_msec_slot,
                         webhook_retry),
    NGX_HTTP_VOICE_VALUE("voice_signature", ngx_conf_set_flag_slot,
                         signature),
    NGX_HTTP_VOICE_VALUE("voice_twilio_auth_token_file",
                         ngx_conf_set_str_slot, auth_token_file),
    NGX_HTTP_VOICE_VALUE("voice_api_token_file", ngx_conf_set_str_slot,
                         api_token_file),
    NGX_HTTP_VOICE_VALUE("voice_bridge_timeout", ngx_conf_set_msec_slot,
                         bridge_timeout),
    NGX_HTTP_VOICE_VALUE("voice_api_max_body_size", ngx_conf_set_size_slot,
                         max_body_size),

    { ngx_string("voice_max_calls"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_voice_loc_conf_t, max_calls),
      &ngx_http_voice_max_calls_bounds },
    NGX_HTTP_VOICE_VALUE("voice_ws_max_message_size", ngx_conf_set_size_slot,
                         ws_max_message_size),
    NGX_HTTP_VOICE_VALUE("voice_ws_send_buffer_size", ngx_conf_set_size_slot,
                         ws_send_buffer_size),
    NGX_HTTP_VOICE_VALUE("voice_ws_ping_interval", ngx_conf_set_msec_slot,
                         ws_ping_interval),
    NGX_HTTP_VOICE_VALUE("voice_ws_message_timeout", ngx_conf_set_msec_slot,
                         ws_message_timeout),
      ngx_null_command
};


static ngx_http_module_t  ngx_http_voice_module_ctx = {
    ngx_http_voice_log_add_variables,      /* preconfiguration */
    ngx_http_voice_postconfiguration,      /* postconfiguration */

    ngx_http_voice_create_main_conf,       /* create main configuration */
    ngx_http_voice_init_main_conf,         /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_voice_create_loc_conf,        /* create location configuration */
    ngx_http_voice_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_voice_module = {
    NGX_MODULE_V1,
    &ngx_http_voice_module_ctx,            /* module context */
    ngx_http_voice_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_voice_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_voice_exit_process,           /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


ngx_http_voice_worker_t *
ngx_http_voice_worker(void)
{
    ngx_http_voice_main_conf_t  *vmcf;

    vmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_voice_module);
    if (vmcf == NULL) {
        return NULL;
    }

    return vmcf->worker;
}


uint64_t
ngx_http_voice_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


static void *
ngx_http_voice_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_voice_main_conf_t  *vmcf;

    vmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_voice_main_conf_t));
    if (vmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     vmcf->worker = NULL;
     *     vmcf->zone = NULL;
     *     vmcf->curve_key_file = { 0, NULL };
     *     vmcf->curve_server_key_file = { 0, NULL };
     *     vmcf->curve = NULL;
     */

    if (ngx_array_init(&vmcf->endpoints, cf->pool, 2, sizeof(ngx_str_t))
        != NGX_OK
        || ngx_array_init(&vmcf->recover_dirs, cf->pool, 1,
                          sizeof(ngx_http_voice_recover_dir_t))
           != NGX_OK
        || ngx_array_init(&vmcf->outboxes, cf->pool, 1,
                          sizeof(ngx_http_voice_outbox_t *))
           != NGX_OK
        || ngx_array_init(&vmcf->locations, cf->pool, 8,
                          sizeof(ngx_http_voice_conf_loc_t))
           != NGX_OK
        || ngx_array_init(&vmcf->reads, cf->pool, 4,
                          sizeof(ngx_http_voice_conf_read_t))
           != NGX_OK)
    {
        return NULL;
    }

    vmcf->hwm = NGX_CONF_UNSET_UINT;
    vmcf->heartbeat = NGX_CONF_UNSET_MSEC;
    vmcf->shutdown_timeout = NGX_CONF_UNSET_MSEC;
    vmcf->worker_sched = NGX_CONF_UNSET_UINT;

    return vmcf;
}


static char *
ngx_http_voice_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_voice_main_conf_t *vmcf = conf;

    ngx_str_t  name;

    ngx_conf_init_uint_value(vmcf->hwm, 10000);
    ngx_conf_init_msec_value(vmcf->heartbeat, 1000);
    ngx_conf_init_msec_value(vmcf->shutdown_timeout, 600000);
    ngx_conf_init_uint_value(vmcf->worker_sched, 0);

    /* with a bridge there are calls: the default zone keeps their
     * Idempotency-Keys (ngx_http_voice_zone.c) */

    if (vmcf->zone == NULL && vmcf->endpoints.nelts) {
        ngx_str_set(&name, NGX_HTTP_VOICE_ZONE_NAME);

        vmcf->zone = ngx_http_voice_zone_add(cf, &name,
                                             NGX_HTTP_VOICE_ZONE_SIZE);
        if (vmcf->zone == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    /* the counters of voice_status and voice_metrics, always kept */

    if (ngx_http_voice_metrics_add(cf, vmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* what Twilio reports of each call, for its record */

    if (vmcf->endpoints.nelts && ngx_http_voice_outcome_add(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_voice_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_voice_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_voice_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->handler = NGX_HTTP_VOICE_NONE;
     *     conf->public_url = { 0, NULL };
     *     conf->twiml_url = { 0, NULL };
     *     conf->stream_url = { 0, NULL };
     *     conf->status_url = { 0, NULL };
     *     conf->fallback = { 0, NULL };
     *     conf->transcript_dir = { 0, NULL };
     *     conf->thread_pool_name = { 0, NULL };
     *     conf->thread_pool = NULL;
     *     conf->auth_token = { 0, NULL };
     *     conf->auth_token_file = { 0, NULL };
     *     conf->api_token = { 0, NULL };
     *     conf->api_token_file = { 0, NULL };
     *     conf->webhook_url = { 0, NULL };
     *     conf->webhook_secret = { 0, NULL };
     *     conf->webhook_secret_file = { 0, NULL };
     *     conf->webhook_outbox = { 0, NULL };
     *     conf->outbox = NULL;
     */

    conf->transcript_wait = NGX_CONF_UNSET_MSEC;
    conf->transcript_retry = NGX_CONF_UNSET_MSEC;
    conf->transcript_keep = NGX_CONF_UNSET;
    conf->signature = NGX_CONF_UNSET;
    conf->bridge_timeout = NGX_CONF_UNSET_MSEC;
    conf->max_body_size = NGX_CONF_UNSET_SIZE;
    conf->max_calls = NGX_CONF_UNSET;
    conf->ws_max_message_size = NGX_CONF_UNSET_SIZE;
    conf->ws_send_buffer_size = NGX_CONF_UNSET_SIZE;
    conf->ws_ping_interval = NGX_CONF_UNSET_MSEC;
    conf->ws_message_timeout = NGX_CONF_UNSET_MSEC;
    conf->webhook_retry = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_voice_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_voice_loc_conf_t *prev = parent;
    ngx_http_voice_loc_conf_t *conf = child;

    ngx_conf_merge_str_value(conf->public_url, prev->public_url, "");
    ngx_conf_merge_str_value(conf->twiml_url, prev->twiml_url, "");
    ngx_conf_merge_str_value(conf->stream_url, prev->stream_url, "");
    ngx_conf_merge_str_value(conf->status_url, prev->status_url, "");
    ngx_conf_merge_str_value(conf->fallback, prev->fallback,
                             NGX_HTTP_VOICE_FALLBACK);

    /* off: empty, but not NULL, so that a child inherits it */

    if (conf->fallback.len == 3
        && ngx_strncmp(conf->fallback.data, "off", 3) == 0)
    {
        conf->fallback.len = 0;
    }
    ngx_conf_merge_str_value(conf->transcript_dir, prev->transcript_dir, "");
    ngx_conf_merge_str_value(conf->thread_pool_name, prev->thread_pool_name,
                             "default");
    ngx_conf_merge_msec_value(conf->transcript_wait, prev->transcript_wait,
                              10000);
    ngx_conf_merge_msec_value(conf->transcript_retry,
                              prev->transcript_retry, 600000);
    ngx_conf_merge_sec_value(conf->transcript_keep, prev->transcript_keep, 0);
    ngx_conf_merge_value(conf->signature, prev->signature, 1);
    ngx_conf_merge_str_value(conf->auth_token_file, prev->auth_token_file, "");
    ngx_conf_merge_str_value(conf->api_token_file, prev->api_token_file, "");
    ngx_conf_merge_msec_value(conf->bridge_timeout, prev->bridge_timeout,
                              30000);
    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              16384);
    ngx_conf_merge_value(conf->max_calls, prev->max_calls, 0);
    ngx_conf_merge_size_value(conf->ws_max_message_size,
                              prev->ws_max_message_size, 65536);
    ngx_conf_merge_size_value(conf->ws_send_buffer_size,
                              prev->ws_send_buffer_size, 262144);
    ngx_conf_merge_msec_value(conf->ws_ping_interval, prev->ws_ping_interval,
                              10000);
    ngx_conf_merge_msec_value(conf->ws_message_timeout,
                              prev->ws_message_timeout, 5000);
    ngx_conf_merge_str_value(conf->webhook_url, prev->webhook_url, "");

    /* off: empty, not NULL, as voice_fallback_message's */

    if (conf->webhook_url.len == 3
        && ngx_strncmp(conf->webhook_url.data, "off", 3) == 0)
    {
        conf->webhook_url.len = 0;
    }

    ngx_conf_merge_str_value(conf->webhook_secret_file,
                             prev->webhook_secret_file, "");
    ngx_conf_merge_str_value(conf->webhook_outbox, prev->webhook_outbox, "");
    ngx_conf_merge_msec_value(conf->webhook_retry, prev->webhook_retry,
                              86400000);

    return NGX_CONF_OK;
}


/*
 * Once the http block is read and merged: what comes from files and the
 * environment is read here, once, and checked, so that `nginx -t` fails
 * on it; merge_loc_conf only merges.
 */

static ngx_int_t
ngx_http_voice_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_voice_main_conf_t  *vmcf;

    vmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_voice_module);

    /* the keys of a channel to a bridged on another host */

    if (ngx_http_voice_curve_init_conf(cf, vmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_voice_conf_walk(cf, ngx_http_voice_conf_location);
}


/*
 * Calls fn for each location that has a handler directive, in the order
 * they were read; what fn logs names that directive's file and line, as
 * an error found while it was read would.
 */

ngx_int_t
ngx_http_voice_conf_walk(ngx_conf_t *cf,
    ngx_int_t (*fn)(ngx_conf_t *cf, void **loc_conf))
{
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_conf_file_t             *file, where;
    ngx_http_voice_conf_loc_t   *loc;
    ngx_http_voice_main_conf_t  *vmcf;

    vmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_voice_module);

    file = cf->conf_file;
    loc = vmcf->locations.elts;

    for (i = 0; i < vmcf->locations.nelts; i++) {
        where = *file;
        where.file.name = loc[i].file;
        where.line = loc[i].line;

        cf->conf_file = &where;
        rc = fn(cf, loc[i].loc_conf);
        cf->conf_file = file;

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * What a location's handler needs beyond its merged directives, once the
 * http block is read: values from the master's environment, secrets from
 * files, the URLs derived from the public URL, the transcript directory
 * and its thread pool, and the checks between directives, so that
 * `nginx -t` fails rather than a request at run time.
 */

static ngx_int_t
ngx_http_voice_conf_location(ngx_conf_t *cf, void **loc_conf)
{
    ngx_http_voice_handler_e     h;
    ngx_http_voice_loc_conf_t   *conf;
    ngx_http_voice_main_conf_t  *vmcf;

    conf = loc_conf[ngx_http_voice_module.ctx_index];
    h = conf->handler;

    if (h == NGX_HTTP_VOICE_STATUS || h == NGX_HTTP_VOICE_METRICS) {
        return NGX_OK;
    }

    vmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_voice_module);

    if (h == NGX_HTTP_VOICE_API_NUMBERS || h == NGX_HTTP_VOICE_API_CALL
        || h == NGX_HTTP_VOICE_API_END_CALL
        || h == NGX_HTTP_VOICE_API_TRANSCRIPT
        || h == NGX_HTTP_VOICE_API_TRANSCRIPTS
        || h == NGX_HTTP_VOICE_API_CALLS)
    {
        if (ngx_http_voice_conf_secret(cf, &conf->api_token_file,
                                       "VOICE_API_TOKEN", &conf->api_token)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (conf->api_token.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the API needs a bearer token: set "
                               "VOICE_API_TOKEN in the environment or use "
                               "\"voice_api_token_file\"");
            return NGX_ERROR;
        }
    }

    if (h != NGX_HTTP_VOICE_API_TRANSCRIPT
        && h != NGX_HTTP_VOICE_API_TRANSCRIPTS
        && h != NGX_HTTP_VOICE_CALL_STATUS && vmcf->endpoints.nelts == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no \"voice_bridge\" endpoint is configured "
                           "in the http block");
        return NGX_ERROR;
    }

    if (ngx_http_voice_conf_env(cf, &conf->public_url, "PUBLIC_URL")
        != NGX_OK
        || ngx_http_voice_conf_env(cf, &conf->transcript_dir,
                                   "TRANSCRIPT_DIR")
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (h == NGX_HTTP_VOICE_TWIML || h == NGX_HTTP_VOICE_MEDIA_STREAM
        || h == NGX_HTTP_VOICE_API_CALL || h == NGX_HTTP_VOICE_CALL_STATUS)
    {
        if (ngx_http_voice_derive_urls(cf, conf) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    /* (a call that never connected gets its record where Twilio reports
     * its status) */
    if (h == NGX_HTTP_VOICE_MEDIA_STREAM || h == NGX_HTTP_VOICE_API_TRANSCRIPT
        || h == NGX_HTTP_VOICE_API_TRANSCRIPTS
        || h == NGX_HTTP_VOICE_CALL_STATUS)
    {
        if (conf->transcript_dir.len == 0) {
            ngx_str_set(&conf->transcript_dir, "logs/");
        }

        if (ngx_conf_full_name(cf->cycle, &conf->transcript_dir, 0)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (conf->transcript_dir.data[conf->transcript_dir.len - 1] != '/') {
            u_char  *p;

            p = ngx_pnalloc(cf->pool, conf->transcript_dir.len + 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(p, conf->transcript_dir.data,
                       conf->transcript_dir.len);
            p[conf->transcript_dir.len++] = '/';
            conf->transcript_dir.data = p;
        }

        conf->thread_pool = ngx_thread_pool_add(cf, &conf->thread_pool_name);
        if (conf->thread_pool == NULL) {
            return NGX_ERROR;
        }
    }

    /* where journals are written, each worker recovers dead ones */

    if (h == NGX_HTTP_VOICE_MEDIA_STREAM
        && ngx_http_voice_recover_add_dir(cf, conf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* where records are made final, they are posted (the webhook) */

    if ((h == NGX_HTTP_VOICE_MEDIA_STREAM || h == NGX_HTTP_VOICE_CALL_STATUS)
        && conf->webhook_url.len
        && ngx_http_voice_outbox_add(cf, conf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the auth token checks Twilio's signatures, and seals the context
     * of a call placed through the API (ngx_http_voice_seal.c) */

    if (h == NGX_HTTP_VOICE_TWIML || h == NGX_HTTP_VOICE_MEDIA_STREAM
        || h == NGX_HTTP_VOICE_CALL_STATUS || h == NGX_HTTP_VOICE_API_CALL)
    {
        if (ngx_http_voice_conf_secret(cf, &conf->auth_token_file,
                                       "TWILIO_AUTH_TOKEN",
                                       &conf->auth_token)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (h == NGX_HTTP_VOICE_TWIML || h == NGX_HTTP_VOICE_MEDIA_STREAM
        || h == NGX_HTTP_VOICE_CALL_STATUS)
    {

        if (!conf->signature) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "Twilio signature checking is off "
                               "(\"voice_signature off\"): anyone can "
                               "reach this endpoint");
            return NGX_OK;
        }

        if (conf->auth_token.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "Twilio signature checking is on, but there "
                               "is no auth token: set TWILIO_AUTH_TOKEN in "
                               "the environment or use "
                               "\"voice_twilio_auth_token_file\"");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A directive's value, when nginx.conf does not give one, comes from the
 * master's environment: at configuration time nginx has not yet cleared
 * it (workers only keep what `env` lists), and reading it here lets
 * `nginx -t` report a missing value.  Each variable is read once, however
 * many locations take it.
 */

ngx_int_t
ngx_http_voice_conf_env(ngx_conf_t *cf, ngx_str_t *value, const char *name)
{
    char                        *env;
    size_t                       len;
    ngx_http_voice_conf_read_t  *rd;

    if (value->len) {
        return NGX_OK;
    }

    len = ngx_strlen(name);

    rd = ngx_http_voice_conf_read_find(cf, (u_char *) name, len, 0);
    if (rd == NULL) {
        return NGX_ERROR;
    }

    if (rd->name.len == 0) {
        rd->name.data = (u_char *) name;
        rd->name.len = len;

        env = getenv(name);

        if (env != NULL && *env != '\0') {
            rd->value.len = ngx_strlen(env);
            rd->value.data = ngx_pnalloc(cf->pool, rd->value.len);
            if (rd->value.data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(rd->value.data, env, rd->value.len);
        }
    }

    *value = rd->value;

    return NGX_OK;
}


/* what was read by that name, or a new entry with an empty name */

static ngx_http_voice_conf_read_t *
ngx_http_voice_conf_read_find(ngx_conf_t *cf, u_char *name, size_t len,
    ngx_uint_t file)
{
    ngx_uint_t                   i;
    ngx_http_voice_conf_read_t  *rd;
    ngx_http_voice_main_conf_t  *vmcf;

    vmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_voice_module);

    rd = vmcf->reads.elts;

    for (i = 0; i < vmcf->reads.nelts; i++) {
        if (rd[i].file == file && rd[i].name.len == len
            && ngx_strncmp(rd[i].name.data, name, len) == 0)
        {
            return &rd[i];
        }
    }

    rd = ngx_array_push(&vmcf->reads);
    if (rd == NULL) {
        return NULL;
    }

    ngx_memzero(rd, sizeof(ngx_http_voice_conf_read_t));
    rd->file = file;

    return rd;
}


/*
 * Reads a whole file named in nginx.conf (relative to the prefix) at
 * configuration time, refusing one larger than max bytes.
 */

ngx_int_t
ngx_http_voice_conf_read_file(ngx_conf_t *cf, ngx_str_t *file, size_t max,
    ngx_str_t *out)
{
    u_char           *p;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t         name;
    ngx_file_info_t   fi;

    name = *file;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > (off_t) max)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "file \"%V\" is unreadable or larger than %uz "
                           "bytes", &name, max);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, max + 1);
    if (p == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    n = read(fd, p, max + 1);
    ngx_close_file(fd);

    if (n < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "read() \"%V\" failed", &name);
        return NGX_ERROR;
    }

    if ((size_t) n > max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "file \"%V\" is larger than %uz bytes",
                           &name, max);
        return NGX_ERROR;
    }

    out->data = p;
    out->len = n;

    return NGX_OK;
}


/*
 * A secret: read from file when a *_file directive names one, else from
 * the environment variable env (when not NULL).  Each file is read once,
 * however many locations name it.
 */

ngx_int_t
ngx_http_voice_conf_secret(ngx_conf_t *cf, ngx_str_t *file, const char *env,
    ngx_str_t *secret)
{
    ngx_str_t                    name;
    ngx_http_voice_conf_read_t  *rd;

    if (file->len == 0) {
        return env ? ngx_http_voice_conf_env(cf, secret, env) : NGX_OK;
    }

    name = *file;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    rd = ngx_http_voice_conf_read_find(cf, name.data, name.len, 1);
    if (rd == NULL) {
        return NGX_ERROR;
    }

    if (rd->name.len) {
        *secret = rd->value;
        return NGX_OK;
    }

    if (ngx_http_voice_conf_read_file(cf, &name, 4096, secret) != NGX_OK) {
        return NGX_ERROR;
    }

    /* a trailing newline is not part of the secret */
    while (secret->len > 0
           && (secret->data[secret->len - 1] == '\n'
               || secret->data[secret->len - 1] == '\r'
               || secret->data[secret->len - 1] == ' '))
    {
        secret->len--;
    }

    /* noted once read: a file that failed stops the configuration */
    rd->name = name;
    rd->value = *secret;

    return NGX_OK;
}


/*
 * From the public URL (the TLS-terminated name Twilio reaches us by)
 * come the TwiML URL and the status callback URL given to Calls.json and
 * the media stream URL put in the TwiML; each can also be written out
 * with its own directive ("off" for no status callbacks).
 */

static ngx_int_t
ngx_http_voice_derive_urls(ngx_conf_t *cf, ngx_http_voice_loc_conf_t *conf)
{
    u_char     *p;
    ngx_str_t  *u, host;

    u = &conf->public_url;

    while (u->len && u->data[u->len - 1] == '/') {
        u->len--;
    }

    if (u->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no public URL: set PUBLIC_URL in the "
                           "environment or use \"voice_public_url\"");
        return NGX_ERROR;
    }

    if (u->len > 8 && ngx_strncasecmp(u->data, (u_char *) "https://", 8)
                      == 0)
    {
        host.data = u->data + 8;
        host.len = u->len - 8;

    } else if (u->len > 7
               && ngx_strncasecmp(u->data, (u_char *) "http://", 7) == 0)
    {
        host.data = u->data + 7;
        host.len = u->len - 7;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid public URL \"%V\": it must start with "
                           "https:// (or http://)", u);
        return NGX_ERROR;
    }

    if (conf->twiml_url.len == 0) {
        p = ngx_pnalloc(cf->pool, u->len + sizeof("/twiml") - 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        conf->twiml_url.data = p;
        p = ngx_cpymem(p, u->data, u->len);
        p = ngx_cpymem(p, "/twiml", sizeof("/twiml") - 1);
        conf->twiml_url.len = p - conf->twiml_url.data;
    }

    if (conf->status_url.len == 3
        && ngx_strncmp(conf->status_url.data, "off", 3) == 0)
    {
        conf->status_url.len = 0;
        conf->status_url.data = (u_char *) "";

    } else if (conf->status_url.len == 0) {
        p = ngx_pnalloc(cf->pool, u->len + sizeof("/call-status") - 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        conf->status_url.data = p;
        p = ngx_cpymem(p, u->data, u->len);
        p = ngx_cpymem(p, "/call-status", sizeof("/call-status") - 1);
        conf->status_url.len = p - conf->status_url.data;
    }

    if (conf->stream_url.len == 0) {
        p = ngx_pnalloc(cf->pool, sizeof("wss://") - 1 + host.len
                                  + sizeof("/media-stream") - 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        /* Twilio only dials wss://; ws:// is for a plain-HTTP public URL */
        conf->stream_url.data = p;
        p = ngx_cpymem(p, u->data[4] == 's' || u->data[4] == 'S'
                          ? "wss://" : "ws://",
                       u->data[4] == 's' || u->data[4] == 'S' ? 6 : 5);
        p = ngx_cpymem(p, host.data, host.len);
        p = ngx_cpymem(p, "/media-stream", sizeof("/media-stream") - 1);
        conf->stream_url.len = p - conf->stream_url.data;
    }

    return NGX_OK;
}


static char *
ngx_http_voice_set_handler(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_voice_loc_conf_t *vlcf = conf;

    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_voice_conf_loc_t   *loc;
    ngx_http_voice_main_conf_t  *vmcf;

    if (vlcf->handler != NGX_HTTP_VOICE_NONE) {
        return "is duplicate";
    }

    vlcf->handler = (ngx_http_voice_handler_e) cmd->offset;

    /* postconfiguration completes it (ngx_http_voice_conf_location()) */

    vmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_voice_module);

    loc = ngx_array_push(&vmcf->locations);
    if (loc == NULL) {
        return NGX_CONF_ERROR;
    }

    loc->loc_conf = ((ngx_http_conf_ctx_t *) cf->ctx)->loc_conf;
    loc->file = cf->conf_file->file.name;
    loc->line = cf->conf_file->line;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    switch (vlcf->handler) {

    case NGX_HTTP_VOICE_TWIML:
    case NGX_HTTP_VOICE_CALL_STATUS:
        clcf->handler = ngx_http_voice_webhook_handler;
        break;

    case NGX_HTTP_VOICE_MEDIA_STREAM:
        clcf->handler = ngx_http_voice_ws_handler;
        break;

    case NGX_HTTP_VOICE_API_TRANSCRIPT:
        clcf->handler = ngx_http_voice_transcript_handler;
        break;

    case NGX_HTTP_VOICE_API_TRANSCRIPTS:
        clcf->handler = ngx_http_voice_transcripts_handler;
        break;

    case NGX_HTTP_VOICE_API_CALLS:
        clcf->handler = ngx_http_voice_live_calls_handler;
        break;

    case NGX_HTTP_VOICE_STATUS:
        clcf->handler = ngx_http_voice_status_handler;
        break;

    case NGX_HTTP_VOICE_METRICS:
        clcf->handler = ngx_http_voice_metrics_handler;
        break;

    default:
        clcf->handler = ngx_http_voice_rest_handler;
        break;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_voice_set_bridge(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_voice_main_conf_t *vmcf = conf;

    ngx_str_t   *value, *ep;
    ngx_uint_t   i;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ipc://", 6) != 0
            && ngx_strncmp(value[i].data, "tcp://", 6) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid bridge endpoint \"%V\": it must "
                               "start with ipc:// or tcp://", &value[i]);
            return NGX_CONF_ERROR;
        }

        ep = ngx_array_push(&vmcf->endpoints);
        if (ep == NULL) {
            return NGX_CONF_ERROR;
        }

        *ep = value[i];
    }

    return NGX_CONF_OK;
}


/* voice_zone name size */

static char *
ngx_http_voice_set_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_voice_main_conf_t *vmcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (vmcf->zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid voice_zone size \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    vmcf->zone = ngx_http_voice_zone_add(cf, &value[1], (size_t) size);
    if (vmcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_voice_init_process(ngx_cycle_t *cycle)
{
    ngx_http_voice_main_conf_t  *vmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    vmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_voice_module);
    if (vmcf == NULL) {
        return NGX_OK;
    }

    /*
     * voice_worker_sched batch: a worker that wakes does not preempt what
     * runs, bridged on a shared core above all, so both take their
     * messages in batches (docs/performance.md)
     */

    if (vmcf->worker_sched) {
        struct sched_param  sp;

        ngx_memzero(&sp, sizeof(sp));

        if (sched_setscheduler(0, SCHED_BATCH, &sp) == -1) {
            ngx_log_error(NGX_LOG_WARN, cycle->log, ngx_errno,
                          "voice_worker_sched batch: sched_setscheduler() "
                          "failed, the worker keeps its policy");
        }
    }

    ngx_http_voice_recover_init_process(cycle, vmcf);
    ngx_http_voice_keep_init_process(cycle, vmcf);
    ngx_http_voice_outbox_init_process(cycle, vmcf);

    if (vmcf->endpoints.nelts == 0) {
        return NGX_OK;
    }

    return ngx_http_voice_bridge_init_process(cycle, vmcf);
}


static void
ngx_http_voice_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_voice_main_conf_t  *vmcf;

    vmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_voice_module);
    if (vmcf == NULL || vmcf->worker == NULL) {
        return;
    }

    ngx_http_voice_bridge_exit_process(cycle, vmcf);
}
