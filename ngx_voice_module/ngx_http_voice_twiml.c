/*
 * ngx_http_voice_twiml.c: the TwiML webhook (/twiml) and the nginx side
 * of Twilio's signature check.
 *
 * Twilio fetches /twiml, by POST (form body) or GET (query string), when a
 * call placed through /api/call is answered and when an inbound call
 * arrives.  The answer connects the call to the media WebSocket:
 * <Connect><Stream url="wss://PUBLIC_HOST/media-stream"> with the call SID,
 * the caller's number (To for an outbound call, From for an inbound one)
 * and the direction as <Parameter>s, which come back in the stream's
 * start event (ngx_http_voice_media.c).
 *
 * ngx_http_voice_twiml_verify() checks X-Twilio-Signature for this handler
 * and for the WebSocket upgrade (ngx_http_voice_ws.c) with the leaf code
 * of ngx_http_voice_signature.c, over the public URL Twilio used (behind
 * a TLS-terminating proxy nginx sees another one).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_signature.h"


#define NGX_HTTP_VOICE_TWIML_MAX_PARAMS  128


static void ngx_http_voice_twiml_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_voice_twiml_answer(ngx_http_request_t *r,
    u_char *form, size_t len);
static u_char *ngx_http_voice_twiml_escape(u_char *dst, const u_char *src,
    size_t len);
static size_t ngx_http_voice_twiml_escape_len(const u_char *src, size_t len);



ngx_int_t
ngx_http_voice_twiml_handler(ngx_http_request_t *r)
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

        return ngx_http_voice_twiml_answer(r, r->args.data, r->args.len);
    }

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    if (r->headers_in.content_length_n > (off_t) vlcf->max_body_size) {
        return ngx_http_voice_send_error(r,
                                         NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                         "request body is too large");
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_voice_twiml_body_handler);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_voice_twiml_body_handler(ngx_http_request_t *r)
{
    u_char       *form, *p;
    size_t        len;
    ngx_chain_t  *cl;

    form = NULL;
    len = 0;

    if (r->request_body && r->request_body->bufs) {

        if (r->request_body->temp_file) {
            ngx_http_finalize_request(r,
                ngx_http_voice_send_error(r,
                                          NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                          "request body is too large"));
            return;
        }

        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            len += cl->buf->last - cl->buf->pos;
        }

        form = ngx_pnalloc(r->pool, len + 1);
        if (form == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        p = form;
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    ngx_http_finalize_request(r, ngx_http_voice_twiml_answer(r, form, len));
}


static ngx_int_t
ngx_http_voice_twiml_answer(ngx_http_request_t *r, u_char *form, size_t len)
{
    int                                 n;
    u_char                             *scratch, *body, *p;
    size_t                              size, nsigned;
    ngx_int_t                           rc;
    ngx_str_t                           url, dir;
    ngx_buf_t                          *b;
    ngx_chain_t                         out;
    ngx_http_voice_loc_conf_t          *vlcf;
    ngx_http_voice_body_param_t        *params;
    const ngx_http_voice_body_param_t  *sid, *direction, *phone;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    params = ngx_palloc(r->pool, NGX_HTTP_VOICE_TWIML_MAX_PARAMS
                                 * sizeof(ngx_http_voice_body_param_t));
    scratch = ngx_pnalloc(r->pool, len + 1);
    if (params == NULL || scratch == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = ngx_http_voice_body_parse_form(form, len, params,
                                       NGX_HTTP_VOICE_TWIML_MAX_PARAMS,
                                       scratch, len + 1);
    if (n < 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice: malformed TwiML webhook parameters");
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "malformed webhook parameters");
    }

    if (vlcf->signature) {

        /* the URL Twilio requested: the public origin and the request's
         * own URI with its query; only a POST's body parameters are
         * appended, a GET's are inside the URL already */
        url.len = vlcf->public_url.len + r->unparsed_uri.len;
        url.data = ngx_pnalloc(r->pool, url.len);
        if (url.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_cpymem(url.data, vlcf->public_url.data, vlcf->public_url.len);
        ngx_memcpy(p, r->unparsed_uri.data, r->unparsed_uri.len);

        nsigned = (r->method == NGX_HTTP_POST) ? (size_t) n : 0;

        rc = ngx_http_voice_twiml_verify(r, vlcf, &url, params, nsigned);

        if (rc == NGX_DECLINED) {
            return ngx_http_voice_send_error(r, NGX_HTTP_FORBIDDEN,
                                             "missing or invalid Twilio "
                                             "signature");
        }

        if (rc != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    sid = ngx_http_voice_body_form_get(params, n, "CallSid");

    if (sid == NULL
        || !ngx_http_voice_body_valid_call_sid(sid->value, sid->value_len))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice: TwiML webhook without a valid CallSid");
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "CallSid is missing or is not a "
                                         "call SID");
    }

    direction = ngx_http_voice_body_form_get(params, n, "Direction");

    if (direction && direction->value_len >= 8
        && ngx_strncmp(direction->value, "outbound", 8) == 0)
    {
        ngx_str_set(&dir, "outbound");
        phone = ngx_http_voice_body_form_get(params, n, "To");

    } else {
        ngx_str_set(&dir, "inbound");
        phone = ngx_http_voice_body_form_get(params, n, "From");
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "voice: %V call %*s, connecting its media stream",
                  &dir, sid->value_len, sid->value);

    size = sizeof("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<Response><Connect><Stream url=\"\">"
                  "<Parameter name=\"callSid\" value=\"\"/>"
                  "<Parameter name=\"phoneNumber\" value=\"\"/>"
                  "<Parameter name=\"direction\" value=\"\"/>"
                  "</Stream></Connect></Response>\n")
           + ngx_http_voice_twiml_escape_len(vlcf->stream_url.data,
                                             vlcf->stream_url.len)
           + ngx_http_voice_twiml_escape_len(sid->value, sid->value_len)
           + (phone ? ngx_http_voice_twiml_escape_len(phone->value,
                                                      phone->value_len)
                    : 0)
           + dir.len;

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<Response><Connect><Stream url=\"");
    p = ngx_http_voice_twiml_escape(p, vlcf->stream_url.data,
                                    vlcf->stream_url.len);
    p = ngx_sprintf(p, "\"><Parameter name=\"callSid\" value=\"");
    p = ngx_http_voice_twiml_escape(p, sid->value, sid->value_len);
    p = ngx_sprintf(p, "\"/><Parameter name=\"phoneNumber\" value=\"");
    if (phone) {
        p = ngx_http_voice_twiml_escape(p, phone->value, phone->value_len);
    }
    p = ngx_sprintf(p, "\"/><Parameter name=\"direction\" value=\"%V\"/>"
                    "</Stream></Connect></Response>\n", &dir);

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = p - body;
    ngx_str_set(&r->headers_out.content_type, "text/xml");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = p;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


/*
 * Returns NGX_OK when the request's X-Twilio-Signature is valid for url
 * and params, NGX_DECLINED when it is missing or wrong (the caller answers
 * 403, and the request never reaches bridged), NGX_ERROR otherwise.
 */

ngx_int_t
ngx_http_voice_twiml_verify(ngx_http_request_t *r,
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


static size_t
ngx_http_voice_twiml_escape_len(const u_char *src, size_t len)
{
    size_t  n;

    for (n = len; len; len--, src++) {
        switch (*src) {
        case '&':
            n += sizeof("&amp;") - 2;
            break;
        case '<':
        case '>':
            n += sizeof("&lt;") - 2;
            break;
        case '"':
        case '\'':
            n += sizeof("&quot;") - 2;
            break;
        }
    }

    return n;
}


static u_char *
ngx_http_voice_twiml_escape(u_char *dst, const u_char *src, size_t len)
{
    for ( /* void */ ; len; len--, src++) {
        switch (*src) {
        case '&':
            dst = ngx_cpymem(dst, "&amp;", sizeof("&amp;") - 1);
            break;
        case '<':
            dst = ngx_cpymem(dst, "&lt;", sizeof("&lt;") - 1);
            break;
        case '>':
            dst = ngx_cpymem(dst, "&gt;", sizeof("&gt;") - 1);
            break;
        case '"':
            dst = ngx_cpymem(dst, "&quot;", sizeof("&quot;") - 1);
            break;
        case '\'':
            dst = ngx_cpymem(dst, "&apos;", sizeof("&apos;") - 1);
            break;
        default:
            *dst++ = *src;
        }
    }

    return dst;
}
