/*
 * ngx_http_voice_twiml.c: the answer of the TwiML webhook (/twiml).
 *
 * Twilio fetches /twiml, by POST (form body) or GET (query string), when a
 * call placed through /api/call is answered and when an inbound call
 * arrives.  The answer connects the call to the media WebSocket:
 * <Connect><Stream url="wss://PUBLIC_HOST/media-stream"> with the call SID,
 * the caller's number (To for an outbound call, From for an inbound one)
 * and the direction as <Parameter>s, which come back in the stream's
 * start event (ngx_http_voice_media.c).
 *
 * The request is read and its signature checked before this answer runs
 * (ngx_http_voice_webhook.c).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"


static u_char *ngx_http_voice_twiml_escape(u_char *dst, const u_char *src,
    size_t len);
static size_t ngx_http_voice_twiml_escape_len(const u_char *src, size_t len);


/* params: the webhook's, signature checked (ngx_http_voice_webhook.c) */

ngx_int_t
ngx_http_voice_twiml_answer(ngx_http_request_t *r,
    ngx_http_voice_body_param_t *params, size_t n)
{
    u_char                             *body, *p;
    size_t                              size;
    ngx_int_t                           rc;
    ngx_str_t                           dir;
    ngx_buf_t                          *b;
    ngx_chain_t                         out;
    ngx_http_voice_loc_conf_t          *vlcf;
    const ngx_http_voice_body_param_t  *sid, *direction, *phone;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

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
