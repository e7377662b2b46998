/*
 * ngx_http_voice_log.c: what nginx's logs say of the call a request is
 * about.
 *
 * A request that concerns a call (Twilio's webhooks, the media stream, the
 * API's calls and records) names it as soon as it knows it, with
 * ngx_http_voice_log_call().  From then on every error_log line of that
 * request ends with ", call: CA..." after nginx's own context (client,
 * server, request), so a grep for a call SID finds all of it; and the
 * variables $voice_call_sid and $voice_call_status hold the call's SID and
 * its status as the request knows it, for log_format.
 *
 * Both live in the request's slots of indexed variables (r->variables),
 * which nginx allocates for every request: no handler's own context has
 * to carry them, and the handlers, whose contexts differ, all set them the
 * same way.  The line's suffix comes from a log handler that wraps
 * nginx's own (r->log_handler), the way nginx's upstream adds its
 * ", upstream: ...".
 */

#include "ngx_http_voice_module.h"


static ngx_int_t ngx_http_voice_log_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static u_char *ngx_http_voice_log_error(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);
static void ngx_http_voice_log_set(ngx_http_request_t *r, ngx_int_t index,
    const u_char *data, size_t len);


static ngx_str_t  ngx_http_voice_log_sid_name =
    ngx_string("voice_call_sid");
static ngx_str_t  ngx_http_voice_log_status_name =
    ngx_string("voice_call_status");

static ngx_int_t  ngx_http_voice_log_sid_index = NGX_ERROR;
static ngx_int_t  ngx_http_voice_log_status_index = NGX_ERROR;

/* nginx's own handler, which this one calls first: the same for every
 * request of the process */
static ngx_http_log_handler_pt  ngx_http_voice_log_next;


ngx_int_t
ngx_http_voice_log_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_voice_log_sid_name, 0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_voice_log_variable;

    var = ngx_http_add_variable(cf, &ngx_http_voice_log_status_name, 0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_voice_log_variable;

    ngx_http_voice_log_sid_index =
        ngx_http_get_variable_index(cf, &ngx_http_voice_log_sid_name);
    ngx_http_voice_log_status_index =
        ngx_http_get_variable_index(cf, &ngx_http_voice_log_status_name);

    if (ngx_http_voice_log_sid_index == NGX_ERROR
        || ngx_http_voice_log_status_index == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Reached only while a request has not named its call: a value set later
 * is written into the slot, which nginx then returns without asking.
 */

static ngx_int_t
ngx_http_voice_log_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    v->not_found = 1;

    return NGX_OK;
}


void
ngx_http_voice_log_call(ngx_http_request_t *r, const u_char *sid,
    size_t len)
{
    if (len == 0 || len > NGX_HTTP_VOICE_SID_LEN) {
        return;
    }

    ngx_http_voice_log_set(r, ngx_http_voice_log_sid_index, sid, len);

    if (r->log_handler != ngx_http_voice_log_error) {
        ngx_http_voice_log_next = r->log_handler;
        r->log_handler = ngx_http_voice_log_error;
    }
}


void
ngx_http_voice_log_status(ngx_http_request_t *r, const u_char *status,
    size_t len)
{
    ngx_http_voice_log_set(r, ngx_http_voice_log_status_index, status, len);
}


static void
ngx_http_voice_log_set(ngx_http_request_t *r, ngx_int_t index,
    const u_char *data, size_t len)
{
    u_char                     *p;
    ngx_http_variable_value_t  *v;

    if (index == NGX_ERROR || r->variables == NULL || len > 64) {
        return;
    }

    v = &r->variables[index];

    /* a value set before is overwritten in place: a status changes during
     * a media stream, and nothing here allocates more than once */

    if (v->valid && v->len >= len) {
        p = v->data;

    } else {
        p = ngx_pnalloc(r->pool, len > 16 ? len : 16);
        if (p == NULL) {
            return;
        }
    }

    ngx_memcpy(p, data, len);

    v->data = p;
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
}


static u_char *
ngx_http_voice_log_error(ngx_http_request_t *r, ngx_http_request_t *sr,
    u_char *buf, size_t len)
{
    u_char                     *p;
    ngx_http_variable_value_t  *v;

    p = ngx_http_voice_log_next(r, sr, buf, len);

    v = &r->variables[ngx_http_voice_log_sid_index];

    if (v->valid && (size_t) (p - buf) < len) {
        p = ngx_snprintf(p, len - (p - buf), ", call: %*s", (size_t) v->len,
                         v->data);
    }

    return p;
}
