/*
 * ngx_http_voice_webhook.c: the HTTP requests Twilio makes to us -- the
 * TwiML webhook (voice_twiml) and the call status callback
 * (voice_call_status) -- read and checked in one place before their
 * answers (ngx_http_voice_twiml.c, ngx_http_voice_call_status.c) see them.
 *
 * A webhook is a GET, its parameters in the query string, or a POST: a
 * form, or in Twilio's JSON variant a JSON object whose SHA-256 is the
 * bodySHA256 query parameter.  The body is read whole into memory, up to
 * voice_api_max_body_size.  X-Twilio-Signature is checked over the URL
 * Twilio requested -- voice_public_url and the request's own URI, since
 * behind a TLS-terminating proxy nginx sees another one -- with a form's
 * decoded parameters appended, or for JSON with none and the body's hash
 * compared with bodySHA256.  A request that fails gets 403 and goes no
 * further: never to an answer, never to bridged.
 *
 * ngx_http_voice_webhook_verify() also checks the media WebSocket's
 * upgrade (ngx_http_voice_ws.c), signed over the stream URL alone.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_signature.h"


#define NGX_HTTP_VOICE_WEBHOOK_MAX_PARAMS  128


static void ngx_http_voice_webhook_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_voice_webhook_params(ngx_http_request_t *r,
    u_char *body, size_t len);
static ngx_int_t ngx_http_voice_webhook_url(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, ngx_str_t *url);


ngx_int_t
ngx_http_voice_webhook_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_http_voice_loc_conf_t  *vlcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_POST))) {
        return ngx_http_voice_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method not allowed: use POST or "
                                         "GET");
    }

    if (r->method == NGX_HTTP_GET) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_voice_webhook_params(r, NULL, 0);
    }

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    if (r->headers_in.content_length_n > (off_t) vlcf->max_body_size) {
        return ngx_http_voice_send_error(r,
                                         NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                         "request body is too large");
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                        ngx_http_voice_webhook_body_handler);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_voice_webhook_body_handler(ngx_http_request_t *r)
{
    u_char                     *body;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_http_voice_loc_conf_t  *vlcf;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    rc = ngx_http_voice_read_body(r, vlcf->max_body_size, &body, &len);

    if (rc == NGX_OK) {
        rc = ngx_http_voice_webhook_params(r, body, len);

    } else if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        rc = ngx_http_voice_send_error(r, rc, "request body is larger than "
                                       "%uz bytes", vlcf->max_body_size);
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * The parameters of a GET's query, a POST's form or a POST's JSON object,
 * checked against the signature, to the location's answer.
 */

static ngx_int_t
ngx_http_voice_webhook_params(ngx_http_request_t *r, u_char *body,
    size_t len)
{
    int                           n;
    u_char                       *scratch, *data;
    size_t                        size, nsigned;
    ngx_int_t                     rc;
    ngx_str_t                     url, hash;
    ngx_uint_t                    json;
    const char                   *err;
    ngx_http_voice_loc_conf_t    *vlcf;
    ngx_http_voice_body_param_t  *params;

    const ngx_http_voice_body_param_t  *sid, *status;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    ngx_str_null(&url);

    json = (r->method == NGX_HTTP_POST
            && ngx_http_arg(r, (u_char *) "bodySHA256", 10, &hash) == NGX_OK);

    if (r->method == NGX_HTTP_GET) {
        data = r->args.data;
        size = r->args.len;

    } else {
        data = body;
        size = len;
    }

    params = ngx_palloc(r->pool, NGX_HTTP_VOICE_WEBHOOK_MAX_PARAMS
                                 * sizeof(ngx_http_voice_body_param_t));
    scratch = ngx_pnalloc(r->pool, size + 1);
    if (params == NULL || scratch == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (vlcf->signature) {

        if (ngx_http_voice_webhook_url(r, vlcf, &url) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* JSON: the URL alone is signed, and it carries the body's hash;
         * both are checked before the body is parsed */
        if (json) {
            rc = ngx_http_voice_webhook_verify(r, vlcf, &url, NULL, 0);

            if (rc == NGX_OK
                && !ngx_http_voice_signature_body_ok(url.data, url.len, body,
                                                     len))
            {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "voice: webhook body does not match its "
                              "bodySHA256");
                rc = NGX_DECLINED;
            }

            if (rc == NGX_DECLINED) {
                goto forbidden;
            }

            if (rc != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }

    err = "malformed webhook parameters";

    if (json) {
        n = ngx_http_voice_body_parse_json_params(body, len, params,
                                            NGX_HTTP_VOICE_WEBHOOK_MAX_PARAMS,
                                            scratch, size + 1, &err);
    } else {
        n = ngx_http_voice_body_parse_form(data, size, params,
                                           NGX_HTTP_VOICE_WEBHOOK_MAX_PARAMS,
                                           scratch, size + 1);
    }

    if (n < 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice: webhook refused: %s", err);
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST, "%s", err);
    }

    if (vlcf->signature && !json) {

        /* only a POST form's parameters are appended: a GET's are inside
         * the URL already */
        nsigned = (r->method == NGX_HTTP_POST) ? (size_t) n : 0;

        rc = ngx_http_voice_webhook_verify(r, vlcf, &url, params, nsigned);

        if (rc == NGX_DECLINED) {
            goto forbidden;
        }

        if (rc != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* from here the request is about its call: the log says which */

    sid = ngx_http_voice_body_form_get(params, n, "CallSid");
    status = ngx_http_voice_body_form_get(params, n, "CallStatus");

    if (sid && ngx_http_voice_body_valid_call_sid(sid->value, sid->value_len))
    {
        ngx_http_voice_log_call(r, sid->value, sid->value_len);

        if (status && status->value_len <= 16) {
            ngx_http_voice_log_status(r, status->value, status->value_len);
        }
    }

    if (vlcf->handler == NGX_HTTP_VOICE_CALL_STATUS) {
        return ngx_http_voice_call_status_answer(r, params, n);
    }

    return ngx_http_voice_twiml_answer(r, params, n);

forbidden:

    return ngx_http_voice_send_error(r, NGX_HTTP_FORBIDDEN,
                                     "missing or invalid Twilio signature");
}


/* the URL Twilio requested: the public origin and the request's own URI
 * with its query, as it came */

static ngx_int_t
ngx_http_voice_webhook_url(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, ngx_str_t *url)
{
    u_char  *p;

    url->len = vlcf->public_url.len + r->unparsed_uri.len;
    url->data = ngx_pnalloc(r->pool, url->len);
    if (url->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(url->data, vlcf->public_url.data, vlcf->public_url.len);
    ngx_memcpy(p, r->unparsed_uri.data, r->unparsed_uri.len);

    return NGX_OK;
}


/*
 * Returns NGX_OK when the request's X-Twilio-Signature is valid for url
 * and params, NGX_DECLINED when it is missing or wrong (the caller answers
 * 403, and the request never reaches bridged), NGX_ERROR otherwise.
 */

ngx_int_t
ngx_http_voice_webhook_verify(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, ngx_str_t *url,
    ngx_http_voice_body_param_t *params, size_t n)
{
    int               ok;
    u_char           *scratch;
    size_t            i, cap, *order;
    ngx_table_elt_t  *sig;

    sig = ngx_http_voice_header(r, "X-Twilio-Signature",
                                sizeof("X-Twilio-Signature") - 1);

    if (sig == NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice: request without X-Twilio-Signature refused");
        return NGX_DECLINED;
    }

    /* the canonical string: the URL (twice for its port variant) and
     * every name and value */
    cap = 2 * url->len + 64;
    for (i = 0; i < n; i++) {
        cap += params[i].name_len + params[i].value_len;
    }

    scratch = ngx_pnalloc(r->pool, cap);
    order = ngx_palloc(r->pool, (n + 1) * sizeof(size_t));
    if (scratch == NULL || order == NULL) {
        return NGX_ERROR;
    }

    ok = ngx_http_voice_signature_check(vlcf->auth_token.data,
                                        vlcf->auth_token.len,
                                        url->data, url->len, params, n, order,
                                        sig->value.data, sig->value.len,
                                        scratch, cap);
    if (ok != 1) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice: invalid Twilio signature for \"%V\"", url);
        return NGX_DECLINED;
    }

    return NGX_OK;
}
