/*
 * ngx_http_voice_twiml.c: the answer of the TwiML webhook (/twiml).
 *
 * Twilio fetches /twiml, by POST (form body) or GET (query string), when a
 * call placed through /api/call is answered and when an inbound call
 * arrives.  The answer connects the call to the media WebSocket:
 * <Connect><Stream url="wss://PUBLIC_HOST/media-stream"> with the call SID,
 * the caller's number (To for an outbound call, From for an inbound one)
 * and the direction as <Parameter>s, which come back in the stream's
 * start event (ngx_http_voice_media.c), with the call's Twilio number
 * (the caller ID of a transfer) and the settings profile of this location.
 * It is also the action of a transfer's <Dial>: answered, the call ends;
 * not answered, it comes back here as a new stream of the same call.
 * Past voice_max_calls, or when the call's bridged is full, the answer
 * speaks voice_fallback_message and hangs up instead.
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


#define NGX_HTTP_VOICE_TWIML_PARAMS  16

/* a <Parameter>'s name and value must stay under 500 characters */
#define NGX_HTTP_VOICE_TWIML_CHUNK   480
#define NGX_HTTP_VOICE_TWIML_CHUNKS  8


static ngx_int_t ngx_http_voice_twiml_send(ngx_http_request_t *r,
    u_char *body, size_t len);
static ngx_int_t ngx_http_voice_twiml_refuse(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf);


/* params: the webhook's, signature checked (ngx_http_voice_webhook.c) */

ngx_int_t
ngx_http_voice_twiml_answer(ngx_http_request_t *r,
    ngx_http_voice_body_param_t *params, size_t n)
{
    u_char                             *body, *p;
    u_char                              profile[NGX_INT_T_LEN + 9];
    size_t                              size, i, np;
    ngx_str_t                           dir, record, ctx;
    u_char                              chunk[NGX_HTTP_VOICE_TWIML_CHUNKS][5];
    ngx_str_t                           names[NGX_HTTP_VOICE_TWIML_PARAMS];
    ngx_str_t                           values[NGX_HTTP_VOICE_TWIML_PARAMS];
    ngx_http_voice_peer_t              *peer;
    ngx_http_voice_loc_conf_t          *vlcf;
    const ngx_http_voice_body_param_t  *sid, *direction, *phone, *ours, *dial;

    static u_char  hangup[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                              "<Response><Hangup/></Response>\n";

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

    /*
     * The action of a transfer's <Dial> (bridged's transfer_call): after a
     * person answered and the conversation is over, the call ends; when
     * nobody answered, it comes back to the assistant, as a new stream of
     * the same call that knows why.
     */

    dial = ngx_http_voice_body_form_get(params, n, "DialCallStatus");

    if (dial != NULL
        && ((dial->value_len == 9
             && ngx_strncmp(dial->value, "completed", 9) == 0)
            || (dial->value_len == 8
                && ngx_strncmp(dial->value, "answered", 8) == 0)))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice: call %*s: the transfer was answered and is "
                      "over, hanging up", sid->value_len, sid->value);
        return ngx_http_voice_twiml_send(r, hangup, sizeof(hangup) - 1);
    }

    /*
     * voice_max_calls (counted across workers), and bridged's own limit:
     * past them the caller hears the fallback message and the call ends
     * here, before it costs anything; the calls already up go on as they
     * were.  A call whose own bridged is full goes to one with room
     * (ngx_http_voice_call_place()): it is refused when every one is full.
     */

    peer = ngx_http_voice_call_place(sid->value, sid->value_len);

    if (peer != NULL && peer->full) {
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "voice: call %*s refused: every bridged is full",
                      sid->value_len, sid->value);
        return ngx_http_voice_twiml_refuse(r, vlcf);
    }

    direction = ngx_http_voice_body_form_get(params, n, "Direction");

    if (direction && direction->value_len >= 8
        && ngx_strncmp(direction->value, "outbound", 8) == 0)
    {
        ngx_str_set(&dir, "outbound");
        phone = ngx_http_voice_body_form_get(params, n, "To");
        ours = ngx_http_voice_body_form_get(params, n, "From");

    } else {
        ngx_str_set(&dir, "inbound");
        phone = ngx_http_voice_body_form_get(params, n, "From");
        ours = ngx_http_voice_body_form_get(params, n, "To");
    }

    if (ngx_http_voice_zone_call_ring(vlcf->max_calls, sid->value,
                                      dir.len == sizeof("outbound") - 1,
                                      phone ? (u_char *) phone->value : NULL,
                                      phone ? phone->value_len : 0)
        == NGX_HTTP_VOICE_ADMIT_FULL)
    {
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "voice: call %*s refused: voice_max_calls %i reached",
                      sid->value_len, sid->value, vlcf->max_calls);
        return ngx_http_voice_twiml_refuse(r, vlcf);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "voice: %V call %*s, connecting its media stream%s",
                  &dir, sid->value_len, sid->value,
                  dial ? " again after a transfer nobody answered" : "");

    /* the <Parameter>s the stream's start event hands back */

    np = 0;

#define NGX_HTTP_VOICE_TWIML_PARAM(pn, pv, pl)                                \
    ngx_str_set(&names[np], pn);                                              \
    values[np].data = (u_char *) (pv);                                        \
    values[np].len = (pl);                                                    \
    np++

    NGX_HTTP_VOICE_TWIML_PARAM("callSid", sid->value, sid->value_len);
    NGX_HTTP_VOICE_TWIML_PARAM("phoneNumber", phone ? phone->value : NULL,
                               phone ? phone->value_len : 0);
    NGX_HTTP_VOICE_TWIML_PARAM("direction", dir.data, dir.len);

    if (ours != NULL) {
        NGX_HTTP_VOICE_TWIML_PARAM("twilioNumber", ours->value,
                                   ours->value_len);
    }

    /* which location's settings the stream takes (ngx_http_voice_session.c) */
    p = ngx_http_voice_session_profile_name(r, profile);

    if (p != profile) {
        NGX_HTTP_VOICE_TWIML_PARAM("profile", profile, p - profile);
    }

    if (dial != NULL) {
        NGX_HTTP_VOICE_TWIML_PARAM("transfer", dial->value, dial->value_len);

        /* the record the call goes on with: bridged put its start in the
         * action URL, which Twilio's signature covers */

        if (ngx_http_arg(r, (u_char *) "record", 6, &record) == NGX_OK
            && record.len > 0 && record.len <= 16)
        {
            NGX_HTTP_VOICE_TWIML_PARAM("record", record.data, record.len);
        }
    }

    /*
     * A call's own context, sealed into its TwiML URL by /api/call: passed
     * on as it is, in pieces, to the stream, which unseals it; a context
     * too large for the pieces is not passed (the call goes on with the
     * location's settings).
     */

    if (ngx_http_arg(r, (u_char *) "ctx", 3, &ctx) == NGX_OK && ctx.len) {

        if (ctx.len > NGX_HTTP_VOICE_TWIML_CHUNK * NGX_HTTP_VOICE_TWIML_CHUNKS)
        {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "voice: call %*s: its own context is too large "
                          "to pass on", sid->value_len, sid->value);

        } else {
            for (i = 0; i * NGX_HTTP_VOICE_TWIML_CHUNK < ctx.len; i++) {
                ngx_sprintf(chunk[i], "ctx%ui%Z", i);
                names[np].data = chunk[i];
                names[np].len = 4;
                values[np].data = ctx.data + i * NGX_HTTP_VOICE_TWIML_CHUNK;
                values[np].len = ngx_min(NGX_HTTP_VOICE_TWIML_CHUNK,
                                         ctx.len
                                         - i * NGX_HTTP_VOICE_TWIML_CHUNK);
                np++;
            }
        }
    }

#undef NGX_HTTP_VOICE_TWIML_PARAM

    size = sizeof("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<Response><Connect><Stream url=\"\">"
                  "</Stream></Connect><Say></Say></Response>\n")
           + ngx_http_voice_twiml_escape_len(vlcf->stream_url.data,
                                             vlcf->stream_url.len)
           + ngx_http_voice_twiml_escape_len(vlcf->fallback.data,
                                             vlcf->fallback.len);

    for (i = 0; i < np; i++) {
        size += sizeof("<Parameter name=\"\" value=\"\"/>") + names[i].len
                + ngx_http_voice_twiml_escape_len(values[i].data,
                                                  values[i].len);
    }

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<Response><Connect><Stream url=\"");
    p = ngx_http_voice_twiml_escape(p, vlcf->stream_url.data,
                                    vlcf->stream_url.len);
    p = ngx_sprintf(p, "\">");

    for (i = 0; i < np; i++) {
        p = ngx_sprintf(p, "<Parameter name=\"%V\" value=\"", &names[i]);
        p = ngx_http_voice_twiml_escape(p, values[i].data, values[i].len);
        p = ngx_sprintf(p, "\"/>");
    }

    p = ngx_sprintf(p, "</Stream></Connect>");

    /*
     * Twilio goes on after </Connect> only when the stream is closed from
     * our side -- every deliberate end goes through its REST API -- so
     * this is heard only when the assistant cannot go on.
     */

    if (vlcf->fallback.len) {
        p = ngx_sprintf(p, "<Say>");
        p = ngx_http_voice_twiml_escape(p, vlcf->fallback.data,
                                        vlcf->fallback.len);
        p = ngx_sprintf(p, "</Say>");
    }

    p = ngx_sprintf(p, "</Response>\n");

    return ngx_http_voice_twiml_send(r, body, p - body);
}


/* over capacity: the fallback message, then the call ends */

static ngx_int_t
ngx_http_voice_twiml_refuse(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf)
{
    u_char  *body, *p;
    size_t   size;

    size = sizeof("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<Response><Say></Say><Hangup/></Response>\n")
           + ngx_http_voice_twiml_escape_len(vlcf->fallback.data,
                                             vlcf->fallback.len);

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<Response>");

    if (vlcf->fallback.len) {
        p = ngx_sprintf(p, "<Say>");
        p = ngx_http_voice_twiml_escape(p, vlcf->fallback.data,
                                        vlcf->fallback.len);
        p = ngx_sprintf(p, "</Say>");
    }

    p = ngx_sprintf(p, "<Hangup/></Response>\n");

    return ngx_http_voice_twiml_send(r, body, p - body);
}


/* TwiML through the module's one answer writer (ngx_http_voice_http.c):
 * every document here already ends with its newline */

static ngx_int_t
ngx_http_voice_twiml_send(ngx_http_request_t *r, u_char *body, size_t len)
{
    static ngx_str_t  type = ngx_string("text/xml");

    return ngx_http_voice_send_body(r, NGX_HTTP_OK, &type, body, len);
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
