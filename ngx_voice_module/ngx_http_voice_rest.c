/*
 * ngx_http_voice_rest.c: the REST endpoints that need bridged
 * (/api/numbers, /api/call, /api/end-call) and voice_status.
 *
 * A request is checked here (method, body size, JSON shape, phone
 * numbers, call SID), then parked while bridged talks to Twilio: the
 * proto request goes out with a request id over the bridge channel
 * (ngx_http_voice_bridge.c), the request waits in a per-worker tree with a
 * timer, and ngx_http_voice_rest_reply() sends bridged's answer when it
 * comes.  Whatever comes first -- reply, timer (504) or the client
 * leaving (pool cleanup) -- finalizes the request exactly once.  A bridged
 * that is down or full answers 503 at once.
 *
 * POST /api/call may carry an Idempotency-Key: the same key again gets
 * the first call's answer (with Idempotent-Replayed: true) instead of a
 * second call, from any worker (the keys are in ngx_http_voice_zone.c);
 * while the first is in flight, 409 with Retry-After; with another body,
 * 422.  The parked request's context then outlives a client that leaves:
 * bridged's answer is still kept for the key.  Past voice_max_calls, or
 * when every bridged is full, /api/call answers 503 with Retry-After.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_md5.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_seal.h"


/* a parked request; ngx_alloc()ed, as it may outlive the request */
typedef struct {
    ngx_rbtree_node_t           node;       /* key: request id */
    ngx_http_request_t         *request;    /* NULL once it is gone */
    ngx_pool_cleanup_t         *cln;
    ngx_event_t                 timer;
    ngx_msec_t                  timeout;    /* voice_bridge_timeout */
    ngx_http_voice_peer_t      *peer;
    uint64_t                    idem_id;    /* its key's, 0: none */
    ngx_str_t                   idem_key;   /* after this struct */
    uint64_t                    slot;       /* its reservation under
                                               voice_max_calls, 0: none */
    unsigned                    pending:1;
} ngx_http_voice_rest_ctx_t;


/* a request that waits for this worker's first contact with bridged */
typedef struct {
    ngx_http_request_t         *request;
    ngx_event_t                 ev;
    u_char                     *body;
    size_t                      len;
    ngx_msec_t                  since;
} ngx_http_voice_rest_wait_t;

#define NGX_HTTP_VOICE_REST_FIRST_WAIT  5000     /* ms, at most */
#define NGX_HTTP_VOICE_REST_FIRST_POLL  20       /* ms */


/* an Idempotency-Key and the request it names; the call's reservation */
typedef struct {
    ngx_str_t                   key;
    uint64_t                    id;         /* 0: no key */
    uint64_t                    slot;       /* 0: none */
} ngx_http_voice_rest_idem_t;


/* s a refused /api/call is told to wait (Retry-After) */
#define NGX_HTTP_VOICE_REST_RETRY_AFTER  "5"


static void ngx_http_voice_rest_body_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_voice_rest_first_contact(ngx_http_request_t *r,
    u_char *body, size_t len);
static void ngx_http_voice_rest_first_contact_poll(ngx_event_t *ev);
static void ngx_http_voice_rest_wait_cleanup(void *data);
static ngx_uint_t ngx_http_voice_rest_call_url(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, u_char *body, size_t len, ngx_str_t *url,
    ngx_uint_t *amd, const char **err);
static ngx_int_t ngx_http_voice_rest_start(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, u_char *body, size_t len);
static ngx_int_t ngx_http_voice_rest_idem(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, u_char *body, size_t len,
    ngx_http_voice_rest_idem_t *idem);
static ngx_int_t ngx_http_voice_rest_park(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, ngx_http_voice_peer_t *peer,
    voice_proto_writer_t *wr, uint64_t id, ngx_http_voice_rest_idem_t *idem);
static ngx_int_t ngx_http_voice_rest_header(ngx_http_request_t *r,
    char *name, char *value);
static ngx_int_t ngx_http_voice_rest_admit(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, const char *number,
    ngx_http_voice_rest_idem_t *idem);
static void ngx_http_voice_rest_free(ngx_http_voice_rest_ctx_t *ctx);
static void ngx_http_voice_rest_timeout(ngx_event_t *ev);
static void ngx_http_voice_rest_cleanup(void *data);
static void ngx_http_voice_rest_unpark(ngx_http_voice_rest_ctx_t *ctx);


/* the worker's requests waiting for bridged, by request id (a process is
 * one worker); set up as ngx_rbtree_init() would: a sentinel is black */

static ngx_rbtree_node_t  ngx_http_voice_rest_sentinel;
static ngx_rbtree_t       ngx_http_voice_rest_pending = {
    &ngx_http_voice_rest_sentinel, &ngx_http_voice_rest_sentinel,
    ngx_rbtree_insert_value
};


ngx_int_t
ngx_http_voice_rest_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc, auth;
    ngx_uint_t                  want;
    ngx_http_voice_loc_conf_t  *vlcf;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    auth = ngx_http_voice_auth_check(r);
    if (auth != NGX_OK) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_voice_auth_refuse(r, auth);
    }

    want = (vlcf->handler == NGX_HTTP_VOICE_API_NUMBERS)
           ? (NGX_HTTP_GET|NGX_HTTP_HEAD) : NGX_HTTP_POST;

    if (!(r->method & want)) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_voice_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method not allowed: use %s",
                                         want == NGX_HTTP_POST
                                         ? "POST" : "GET");
    }

    if (r->headers_in.content_length_n > (off_t) vlcf->max_body_size) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_voice_send_error(r,
                                         NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                         "request body is larger than %uz "
                                         "bytes", vlcf->max_body_size);
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_voice_rest_body_handler);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_voice_rest_body_handler(ngx_http_request_t *r)
{
    u_char                     *body;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_http_voice_loc_conf_t  *vlcf;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    rc = ngx_http_voice_read_body(r, vlcf->max_body_size, &body, &len);

    if (rc == NGX_OK && ngx_http_voice_rest_first_contact(r, body, len)) {
        return;
    }

    if (rc == NGX_OK) {
        rc = ngx_http_voice_rest_start(r, vlcf, body, len);

    } else if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        rc = ngx_http_voice_send_error(r, rc, "request body is larger than "
                                       "%uz bytes", vlcf->max_body_size);
    }

    if (rc == NGX_DONE) {
        /* parked: a client that goes away is noticed, and the request's
         * pool cleanup unparks it */
        r->read_event_handler = ngx_http_test_reading;
        return;
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * Just after start a worker may not have heard from any bridged yet while
 * another already serves: a request that arrives then waits, polling,
 * until the first contact or NGX_HTTP_VOICE_REST_FIRST_WAIT, instead of
 * being refused.  After that, a bridged that is down is known to be: no
 * wait.  Returns 1 when the request waits.
 */

static ngx_uint_t
ngx_http_voice_rest_first_contact(ngx_http_request_t *r, u_char *body,
    size_t len)
{
    ngx_pool_cleanup_t          *cln;
    ngx_http_voice_worker_t     *w;
    ngx_http_voice_rest_wait_t  *wait;

    w = ngx_http_voice_worker();

    if (w == NULL || w->contacted || w->npeers == 0) {
        return 0;
    }

    wait = ngx_pcalloc(r->pool, sizeof(ngx_http_voice_rest_wait_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (wait == NULL || cln == NULL) {
        return 0;
    }

    wait->request = r;
    wait->body = body;
    wait->len = len;
    wait->since = ngx_current_msec;
    wait->ev.handler = ngx_http_voice_rest_first_contact_poll;
    wait->ev.data = wait;
    wait->ev.log = r->connection->log;

    cln->handler = ngx_http_voice_rest_wait_cleanup;
    cln->data = wait;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "voice: no bridged has answered this worker yet: the "
                  "request waits for the first");

    ngx_add_timer(&wait->ev, NGX_HTTP_VOICE_REST_FIRST_POLL);

    /* a client that goes away is noticed, and the cleanup drops the wait */
    r->read_event_handler = ngx_http_test_reading;

    return 1;
}


static void
ngx_http_voice_rest_first_contact_poll(ngx_event_t *ev)
{
    ngx_int_t                    rc;
    ngx_http_request_t          *r;
    ngx_http_voice_worker_t     *w;
    ngx_http_voice_rest_wait_t  *wait;
    ngx_http_voice_loc_conf_t   *vlcf;

    wait = ev->data;
    r = wait->request;
    w = ngx_http_voice_worker();

    if (w != NULL && !w->contacted
        && ngx_current_msec - wait->since < NGX_HTTP_VOICE_REST_FIRST_WAIT)
    {
        ngx_add_timer(ev, NGX_HTTP_VOICE_REST_FIRST_POLL);
        return;
    }

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    rc = ngx_http_voice_rest_start(r, vlcf, wait->body, wait->len);

    if (rc == NGX_DONE) {
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static void
ngx_http_voice_rest_wait_cleanup(void *data)
{
    ngx_http_voice_rest_wait_t  *wait = data;

    if (wait->ev.timer_set) {
        ngx_del_timer(&wait->ev);
    }
}


static ngx_int_t
ngx_http_voice_rest_start(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, u_char *body, size_t len)
{
    char                      number[NGX_HTTP_VOICE_E164_MAX + 1];
    char                      from[NGX_HTTP_VOICE_E164_MAX + 1];
    char                      sid[NGX_HTTP_VOICE_SID_LEN + 1];
    uint64_t                    id;
    ngx_int_t                   rc;
    ngx_str_t                   url;
    ngx_uint_t                  amd, status;
    const char                 *err;
    voice_proto_writer_t        wr;
    ngx_http_voice_peer_t      *peer;
    ngx_http_voice_worker_t    *w;
    ngx_http_voice_rest_idem_t  idem;

    w = ngx_http_voice_worker();
    if (w == NULL) {
        return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "bridged is not reachable");
    }

    id = w->next_request_id++;
    idem.id = 0;
    idem.slot = 0;
    ngx_str_null(&idem.key);

    switch (vlcf->handler) {

    case NGX_HTTP_VOICE_API_NUMBERS:
        peer = NULL;

        voice_proto_begin(&wr, w->frame, w->frame_size,
                          VOICE_PROTO_MSG_NUMBERS_LIST);
        voice_proto_put_u64(&wr, VOICE_PROTO_F_REQUEST_ID, id);
        break;

    case NGX_HTTP_VOICE_API_CALL:
        if (ngx_http_voice_body_parse_call(body, len, number, from, &err)
            != 0)
        {
            return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "%s", err);
        }

        status = ngx_http_voice_rest_call_url(r, vlcf, body, len, &url, &amd,
                                              &err);
        if (status == NGX_HTTP_INTERNAL_SERVER_ERROR) {
            return status;
        }

        if (status) {
            return ngx_http_voice_send_error(r, status, "%s", err);
        }

        /* a valid request only: a client may fix an invalid one and send
         * it again with the same key */

        rc = ngx_http_voice_rest_idem(r, vlcf, body, len, &idem);
        if (rc != NGX_DECLINED) {
            return rc;
        }

        rc = ngx_http_voice_rest_admit(r, vlcf, number, &idem);
        if (rc != NGX_DECLINED) {
            return rc;
        }

        peer = NULL;

        voice_proto_begin(&wr, w->frame, w->frame_size,
                          VOICE_PROTO_MSG_CALL_CREATE);
        voice_proto_put_u64(&wr, VOICE_PROTO_F_REQUEST_ID, id);
        voice_proto_put_str(&wr, VOICE_PROTO_F_TO, number);
        if (from[0]) {
            voice_proto_put_str(&wr, VOICE_PROTO_F_FROM, from);
        }
        voice_proto_put_bytes(&wr, VOICE_PROTO_F_URL, url.data, url.len);
        if (amd) {
            voice_proto_put_u32(&wr, VOICE_PROTO_F_FLAGS,
                                VOICE_PROTO_FLAG_AMD);
        }

        /* voice_max_call_duration: Twilio's TimeLimit is the backstop,
         * half a minute after the assistant's own goodbye */
        if (ngx_http_voice_session_time_limit(r)) {
            voice_proto_put_u32(&wr, VOICE_PROTO_F_TIME_LIMIT,
                          (uint32_t) ngx_http_voice_session_time_limit(r) + 30);
        }
        if (vlcf->status_url.len) {
            voice_proto_put_bytes(&wr, VOICE_PROTO_F_STATUS_URL,
                                  vlcf->status_url.data,
                                  vlcf->status_url.len);
        }
        break;

    default: /* NGX_HTTP_VOICE_API_END_CALL */
        if (ngx_http_voice_body_parse_end_call(body, len, sid, &err) != 0) {
            return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "%s", err);
        }

        ngx_http_voice_log_call(r, (u_char *) sid, NGX_HTTP_VOICE_SID_LEN);

        /* the call's owner is the bridged that holds its session */
        peer = ngx_http_voice_call_peer_of((u_char *) sid,
                                           NGX_HTTP_VOICE_SID_LEN);
        if (peer == NULL) {
            return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "bridged is not reachable");
        }

        voice_proto_begin(&wr, w->frame, w->frame_size,
                          VOICE_PROTO_MSG_CALL_END);
        voice_proto_put_u64(&wr, VOICE_PROTO_F_REQUEST_ID, id);
        voice_proto_put_str(&wr, VOICE_PROTO_F_CALL_SID, sid);
        break;
    }

    rc = ngx_http_voice_rest_park(r, vlcf, peer, &wr, id, &idem);

    if (rc != NGX_DONE) {

        /* not sent: no call, and the key is free for a retry */

        if (idem.id) {
            ngx_http_voice_zone_idem_end(&idem.key, idem.id, 0, NULL, 0, 0);
        }

        ngx_http_voice_zone_call_placed(idem.slot, NULL);
    }

    return rc;
}


/*
 * voice_max_calls (counted across workers) and bridged's own limit: the
 * call's slot is reserved until bridged's answer names its call SID, or
 * past them 503 with Retry-After (the key, if any, is free again: no
 * call was placed).  NGX_DECLINED to go on.
 */

static ngx_int_t
ngx_http_voice_rest_admit(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, const char *number,
    ngx_http_voice_rest_idem_t *idem)
{
    const char  *why;

    why = NULL;

    if (ngx_http_voice_peer_full()) {
        why = "bridged is full";
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_REFUSED_BRIDGED);

    } else if (ngx_http_voice_zone_call_reserve(vlcf->max_calls,
                                                vlcf->bridge_timeout / 1000
                                                + 5, (u_char *) number,
                                                ngx_strlen(number),
                                                &idem->slot)
               == NGX_HTTP_VOICE_ADMIT_FULL)
    {
        why = "voice_max_calls reached";
    }

    if (why == NULL) {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "voice: /api/call refused: %s", why);

    if (idem->id) {
        ngx_http_voice_zone_idem_end(&idem->key, idem->id, 0, NULL, 0, 0);
        idem->id = 0;
    }

    if (ngx_http_voice_rest_header(r, "Retry-After",
                                   NGX_HTTP_VOICE_REST_RETRY_AFTER)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "too many calls: try again later");
}


/*
 * The Idempotency-Key of POST /api/call: NGX_DECLINED to go on (idem->id
 * is the key's when there is one), or the answer sent: the first request's
 * answer replayed, 409 while it is in flight, 422 for another request
 * with the key, 400 for a malformed key, 503 when the zone is full.
 */

static ngx_int_t
ngx_http_voice_rest_idem(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, u_char *body, size_t len,
    ngx_http_voice_rest_idem_t *idem)
{
    u_char           *k, digest[16];
    size_t            klen;
    ngx_int_t         rc;
    ngx_str_t         replay;
    ngx_md5_t         md5;
    ngx_uint_t        status;
    ngx_table_elt_t  *h;

    h = ngx_http_voice_header(r, "Idempotency-Key", 15);
    if (h == NULL) {
        return NGX_DECLINED;
    }

    k = ngx_pnalloc(r->pool, NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX);
    if (k == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_voice_body_idempotency_key(h->value.data, h->value.len, k,
                                            &klen)
        != 0)
    {
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "Idempotency-Key must be 1 to %d "
                                         "visible ASCII characters, or a "
                                         "quoted string",
                                         NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX);
    }

    idem->key.data = k;
    idem->key.len = klen;

    /* the request the key names: the same key elsewhere is another */

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, r->uri.data, r->uri.len);
    ngx_md5_update(&md5, "\n", 1);
    ngx_md5_update(&md5, body, len);
    ngx_md5_final(digest, &md5);

    /* pending until bridged answers, or its timer: then some margin for
     * a worker that went away without ending it */

    rc = ngx_http_voice_zone_idem_begin(&idem->key, digest,
                                        vlcf->bridge_timeout / 1000 + 30,
                                        r->pool, &idem->id, &status,
                                        &replay);

    switch (rc) {

    case NGX_HTTP_VOICE_IDEM_NEW:
        return NGX_DECLINED;

    case NGX_HTTP_VOICE_IDEM_REPLAY:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice: /api/call replayed for its Idempotency-Key "
                      "(%ui)", status);

        if (ngx_http_voice_rest_header(r, "Idempotent-Replayed", "true")
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_voice_send_json(r, status, replay.data, replay.len);

    case NGX_HTTP_VOICE_IDEM_BUSY:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice: /api/call with an Idempotency-Key in flight");

        if (ngx_http_voice_rest_header(r, "Retry-After", "1") != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_voice_send_error(r, NGX_HTTP_CONFLICT,
                                         "a request with this "
                                         "Idempotency-Key is in progress");

    case NGX_HTTP_VOICE_IDEM_MISMATCH:
        return ngx_http_voice_send_error(r, 422,
                                         "this Idempotency-Key was used "
                                         "with another request");

    case NGX_HTTP_VOICE_IDEM_FULL:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "voice: voice_zone is full of requests in flight");

        if (ngx_http_voice_rest_header(r, "Retry-After", "1") != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "too many requests in flight");

    case NGX_HTTP_VOICE_IDEM_NONE:
        return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "Idempotency-Key needs a "
                                         "voice_zone");

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


static ngx_int_t
ngx_http_voice_rest_header(ngx_http_request_t *r, char *name, char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}


/*
 * The TwiML URL of a call placed through the API.  The call's own
 * instructions, greeting and context, and its answering-machine mode,
 * travel sealed in it (ngx_http_voice_seal.c): the call SID is not known
 * yet, and Twilio's TwiML fetch and media stream may land on any worker of
 * any host.  The seal keeps them out of Twilio's and nginx's logs; the
 * plaintext is never logged.  *amd tells bridged to ask Twilio for
 * answering-machine detection.  Returns 0, or the HTTP status of a
 * refusal (*err says why).
 */

static ngx_uint_t
ngx_http_voice_rest_call_url(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, u_char *body, size_t len, ngx_str_t *url,
    ngx_uint_t *amd, const char **err)
{
    int          mode, wait;
    u_char      *p, plain[NGX_HTTP_VOICE_BODY_EXTRA_MAX + 64];
    u_char       key[NGX_HTTP_VOICE_SEAL_KEY];
    size_t       n, cap;
    const char  *name;

    *url = vlcf->twiml_url;
    *amd = 0;

    if (ngx_http_voice_body_parse_call_extra(body, len, plain,
                                             NGX_HTTP_VOICE_BODY_EXTRA_MAX,
                                             &n, &mode, err)
        != 0)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    /* machineDetection: the request's, or the location's default */

    wait = (ngx_http_voice_session_machine_detection(r)
            == NGX_HTTP_VOICE_BODY_AMD_WAIT);

    if (mode == NGX_HTTP_VOICE_BODY_AMD_UNSET) {
        mode = ngx_http_voice_session_machine_detection(r);

    } else if (mode == NGX_HTTP_VOICE_BODY_AMD_ON && wait) {
        mode = NGX_HTTP_VOICE_BODY_AMD_WAIT;
    }

    if (mode == NGX_HTTP_VOICE_BODY_AMD_ON
        || mode == NGX_HTTP_VOICE_BODY_AMD_WAIT)
    {
        *amd = 1;
        name = (mode == NGX_HTTP_VOICE_BODY_AMD_WAIT) ? "wait" : "on";

        p = (n == 0) ? ngx_cpymem(plain, "{", 1)
                     : ngx_cpymem(plain + n - 1, ",", 1);
        p = ngx_sprintf(p, "\"machineDetection\":\"%s\"}", name);
        n = p - plain;
    }

    if (n == 0) {
        return 0;
    }

    if (vlcf->auth_token.len == 0
        || ngx_http_voice_seal_key(vlcf->auth_token.data,
                                   vlcf->auth_token.len, key)
           != 0)
    {
        *err = "a call's own instructions, greeting, context and machine "
               "detection need the Twilio auth token (TWILIO_AUTH_TOKEN)";
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    cap = vlcf->twiml_url.len + sizeof("?ctx=") + NGX_HTTP_VOICE_SEAL_LEN(n);

    url->data = ngx_pnalloc(r->pool, cap);
    if (url->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(url->data, vlcf->twiml_url.data, vlcf->twiml_url.len);
    p = ngx_cpymem(p, ngx_strlchr(vlcf->twiml_url.data,
                                  vlcf->twiml_url.data + vlcf->twiml_url.len,
                                  '?')
                      ? "&ctx=" : "?ctx=", 5);

    n = ngx_http_voice_seal(key, plain, n, p, cap - (p - url->data));
    ngx_explicit_memzero(plain, sizeof(plain));
    ngx_explicit_memzero(key, sizeof(key));

    if (n == 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    url->len = p + n - url->data;

    return 0;
}


static ngx_int_t
ngx_http_voice_rest_park(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, ngx_http_voice_peer_t *peer,
    voice_proto_writer_t *wr, uint64_t id, ngx_http_voice_rest_idem_t *idem)
{
    size_t                      n;
    ngx_int_t                   rc;
    ngx_pool_cleanup_t         *cln;
    ngx_http_voice_worker_t    *w;
    ngx_http_voice_rest_ctx_t  *ctx;

    w = ngx_http_voice_worker();

    n = voice_proto_finish(wr);
    if (n == 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "voice: request frame does not fit");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_calloc(sizeof(ngx_http_voice_rest_ctx_t) + idem->key.len,
                     r->connection->log);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a request with no call yet goes to any live bridged (peer NULL);
     * one about a call, to the call's owner */
    if (peer == NULL) {
        peer = ngx_http_voice_peer_send_any(w->frame, n);
        rc = (peer == NULL) ? NGX_AGAIN : NGX_OK;

    } else {
        rc = ngx_http_voice_bridge_send(peer, w->frame, n);
    }

    if (rc != NGX_OK) {
        ngx_free(ctx);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "voice: no bridged takes the request");
        return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "bridged is not reachable");
    }

    ctx->request = r;
    ctx->cln = cln;
    ctx->peer = peer;
    ctx->node.key = (ngx_rbtree_key_t) id;
    ngx_rbtree_insert(&ngx_http_voice_rest_pending, &ctx->node);
    ctx->pending = 1;

    ctx->slot = idem->slot;

    if (idem->id) {
        ctx->idem_id = idem->id;
        ctx->idem_key.data = (u_char *) ctx
                             + sizeof(ngx_http_voice_rest_ctx_t);
        ctx->idem_key.len = idem->key.len;
        ngx_memcpy(ctx->idem_key.data, idem->key.data, idem->key.len);
    }

    ctx->timer.handler = ngx_http_voice_rest_timeout;
    ctx->timer.data = ctx;
    ctx->timer.log = r->connection->log;
    ctx->timeout = vlcf->bridge_timeout;
    ngx_add_timer(&ctx->timer, ctx->timeout);

    cln->handler = ngx_http_voice_rest_cleanup;
    cln->data = ctx;

    return NGX_DONE;
}


void
ngx_http_voice_rest_reply(voice_proto_msg_t *msg)
{
    u_char                     *body;
    ngx_int_t                   rc;
    ngx_uint_t                  valid;
    ngx_rbtree_key_t            key;
    ngx_connection_t           *c;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_request_t         *r;
    ngx_http_voice_rest_ctx_t  *ctx;
    ngx_http_voice_loc_conf_t  *vlcf;

    key = (ngx_rbtree_key_t) msg->request_id;

    node = ngx_http_voice_rest_pending.root;
    sentinel = ngx_http_voice_rest_pending.sentinel;

    while (node != sentinel && node->key != key) {
        node = (key < node->key) ? node->left : node->right;
    }

    if (node == sentinel) {
        /* the client left, or the timer answered first */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "voice: reply for a request no longer pending: %uL",
                       msg->request_id);
        return;
    }

    ctx = (ngx_http_voice_rest_ctx_t *) node;
    ngx_http_voice_rest_unpark(ctx);

    valid = (msg->status >= 200 && msg->status <= 599);

    /* the reserved slot is the call's now, or it goes */

    if (ctx->slot) {
        ngx_http_voice_zone_call_placed(ctx->slot,
                                    (msg->status / 100 == 2
                                     && msg->call_sid.len
                                        == NGX_HTTP_VOICE_SID_LEN)
                                    ? msg->call_sid.data : NULL);
    }

    /* the answer stays with the key, unless Twilio surely placed no
     * call: then the client may try again with it */

    if (ctx->idem_id) {
        ngx_http_voice_zone_idem_end(&ctx->idem_key, ctx->idem_id,
                                     msg->status, msg->body.data,
                                     msg->body.len,
                                     valid && !(msg->flags
                                                & VOICE_PROTO_FLAG_NOT_DONE));
    }

    r = ctx->request;

    if (r == NULL) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "voice: bridged answered %uD after the client left; "
                      "the answer is kept for its Idempotency-Key",
                      msg->status);
        ngx_http_voice_rest_free(ctx);
        return;
    }

    ngx_http_voice_rest_free(ctx);

    c = r->connection;
    ngx_http_set_log_request(c->log, r);

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    /*
     * For the access log: a call placed is "queued" (the status Twilio
     * gives every new call), one ended "completed" (the status asked for)
     */

    if (msg->status / 100 == 2 && msg->call_sid.len == NGX_HTTP_VOICE_SID_LEN)
    {
        ngx_http_voice_log_call(r, msg->call_sid.data, msg->call_sid.len);
        ngx_http_voice_log_status(r, (u_char *) "queued", 6);

    } else if (msg->status / 100 == 2
               && vlcf->handler == NGX_HTTP_VOICE_API_END_CALL)
    {
        ngx_http_voice_log_status(r, (u_char *) "completed", 9);
    }

    if (!valid) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "voice: bridged replied with status %uD",
                      msg->status);
        rc = ngx_http_voice_send_error(r, NGX_HTTP_BAD_GATEWAY,
                                       "bridged sent an invalid reply");
        goto done;
    }

    /* the frame is freed after dispatch; output may outlive it */
    body = ngx_pnalloc(r->pool, msg->body.len);
    if (body == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    ngx_memcpy(body, msg->body.data, msg->body.len);

    rc = ngx_http_voice_send_json(r, msg->status, body, msg->body.len);

done:

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_voice_rest_timeout(ngx_event_t *ev)
{
    u_char                     *p, buf[160];
    ngx_int_t                   rc;
    ngx_msec_t                  timeout;
    ngx_connection_t           *c;
    ngx_http_request_t         *r;
    ngx_http_voice_rest_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    timeout = ctx->timeout;

    ngx_http_voice_rest_unpark(ctx);

    ngx_log_error(NGX_LOG_ERR, r ? r->connection->log : ngx_cycle->log, 0,
                  "voice: bridged at \"%V\" did not answer within %M ms",
                  &ctx->peer->endpoint, timeout);

    /* if it placed the call, the call's /twiml takes a slot again */
    ngx_http_voice_zone_call_placed(ctx->slot, NULL);

    /* bridged may have placed the call: its key says so, for a day */

    if (ctx->idem_id) {
        p = ngx_snprintf(buf, sizeof(buf),
                         "{\"success\":false,\"error\":\"bridged did not "
                         "answer within %M ms: the call may have been "
                         "placed\"}", timeout);

        ngx_http_voice_zone_idem_end(&ctx->idem_key, ctx->idem_id,
                                     NGX_HTTP_GATEWAY_TIME_OUT, buf,
                                     p - buf, 1);
    }

    ngx_http_voice_rest_free(ctx);

    if (r == NULL) {
        return;
    }

    c = r->connection;
    ngx_http_set_log_request(c->log, r);

    rc = ngx_http_voice_send_error(r, NGX_HTTP_GATEWAY_TIME_OUT,
                                   "no answer within %M ms", timeout);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/*
 * The request's pool is going: the client left (or the request is
 * over).  A request with an Idempotency-Key stays parked without it, so
 * that bridged's answer, when it comes, is kept for the key.
 */

static void
ngx_http_voice_rest_cleanup(void *data)
{
    ngx_http_voice_rest_ctx_t  *ctx = data;

    if (ctx->pending && ctx->idem_id) {
        ctx->request = NULL;
        ctx->cln = NULL;
        ctx->timer.log = ngx_cycle->log;
        return;
    }

    ngx_http_voice_rest_unpark(ctx);
    ngx_http_voice_zone_call_placed(ctx->slot, NULL);

    ctx->cln = NULL;
    ngx_http_voice_rest_free(ctx);
}


static void
ngx_http_voice_rest_unpark(ngx_http_voice_rest_ctx_t *ctx)
{
    if (!ctx->pending) {
        return;
    }

    ctx->pending = 0;

    ngx_rbtree_delete(&ngx_http_voice_rest_pending, &ctx->node);

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }
}


/* once unparked: the request's cleanup no longer knows it */

static void
ngx_http_voice_rest_free(ngx_http_voice_rest_ctx_t *ctx)
{
    if (ctx->cln) {
        ctx->cln->handler = NULL;
    }

    ngx_free(ctx);
}


/*
 * voice_status: this worker's view of the bridge and its calls, as JSON,
 * for operators and readiness checks; its counters are the instance's,
 * the same voice_metrics shows (ngx_http_voice_metrics.c).
 */

ngx_int_t
ngx_http_voice_status_handler(ngx_http_request_t *r)
{
    u_char                   *body, *p;
    size_t                    len;
    ngx_int_t                 rc;
    ngx_uint_t                i;
    ngx_http_voice_peer_t    *peer;
    ngx_http_voice_worker_t  *w;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    w = ngx_http_voice_worker();

    /* the fixed text with every counter at its widest takes ~950 bytes,
     * the zone's ~500 */
    len = 1792;
    if (w) {
        for (i = 0; i < w->npeers; i++) {
            len += 160 + 2 * w->peers[i].endpoint.len;
        }
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"pid\":%P,\"bridges\":[", ngx_pid);

    for (i = 0; w && i < w->npeers; i++) {
        peer = &w->peers[i];
        p = ngx_sprintf(p, "%s{\"endpoint\":\"", i ? "," : "");
        p = (u_char *) ngx_escape_json(p, peer->endpoint.data,
                                       peer->endpoint.len);
        p = ngx_sprintf(p, "\",\"alive\":%s,\"full\":%s,\"calls\":%ui,"
                        "\"dropped\":%ui}",
                        peer->state == NGX_HTTP_VOICE_PEER_ST_UP
                        ? "true" : "false",
                        peer->full ? "true" : "false", peer->calls,
                        peer->dropped);
    }

    if (w) {
        p = ngx_sprintf(p, "],\"calls\":%ui,\"audioIn\":%uA,"
                        "\"audioOut\":%uA,\"audioDropped\":%uA,"
                        "\"eventsIgnored\":%uA,\"eventsInvalid\":%uA,"
                        "\"callStatus\":{",
                        ngx_http_voice_call_count(),
                        ngx_http_voice_metrics_get(
                            NGX_HTTP_VOICE_METRIC_FRAMES_IN),
                        ngx_http_voice_metrics_get(
                            NGX_HTTP_VOICE_METRIC_FRAMES_OUT),
                        ngx_http_voice_metrics_get(
                            NGX_HTTP_VOICE_METRIC_DROPPED_IN),
                        ngx_http_voice_metrics_get(
                            NGX_HTTP_VOICE_METRIC_EVENTS_IGNORED),
                        ngx_http_voice_metrics_get(
                            NGX_HTTP_VOICE_METRIC_EVENTS_INVALID));

        for (i = 0; i < NGX_HTTP_VOICE_CALL_STATUSES; i++) {
            p = ngx_sprintf(p, "%s\"%V\":%uA", i ? "," : "",
                            ngx_http_voice_call_status_name(i),
                            ngx_http_voice_metrics_call_status_get(i));
        }

        p = ngx_sprintf(p, "},\"transcriptErrors\":%uA,"
                        "\"transcriptsRecovered\":%uA,"
                        "\"transcriptsLost\":%uA",
                        ngx_http_voice_metrics_get(
                            NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_FAILED),
                        ngx_http_voice_metrics_get(
                            NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_RECOVERED),
                        ngx_http_voice_metrics_get(
                            NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_LOST));

        /* the instance's, from the shared zone */
        p = ngx_http_voice_zone_status(p);

        *p++ = '}';
    } else {
        p = ngx_sprintf(p, "],\"calls\":0}");
    }

    return ngx_http_voice_send_json(r, NGX_HTTP_OK, body, p - body);
}
