/*
 * ngx_http_voice_auth.c: the bearer token that guards the /api/ endpoints.
 *
 * Every API request carries "Authorization: Bearer <token>"; the token is
 * VOICE_API_TOKEN or voice_api_token_file, read at configuration time
 * (ngx_http_voice_module.c).  No header, or another scheme, is 401 with a
 * WWW-Authenticate challenge (RFC 6750); a wrong token is 403.  The
 * comparison takes the same time whatever the token sent: both sides are
 * hashed with SHA-256 and the digests compared with CRYPTO_memcmp(), so
 * neither the matching prefix nor the length leaks through timing.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "ngx_http_voice_module.h"


#define NGX_HTTP_VOICE_AUTH_SCHEME  "Bearer "


ngx_int_t
ngx_http_voice_auth_refuse(ngx_http_request_t *r, ngx_int_t status)
{
    ngx_table_elt_t  *h;

    if (status == NGX_HTTP_FORBIDDEN) {
        return ngx_http_voice_send_error(r, NGX_HTTP_FORBIDDEN,
                                         "the bearer token is not valid");
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "WWW-Authenticate");
    ngx_str_set(&h->value, "Bearer realm=\"voice\"");

    return ngx_http_voice_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                     "this API needs \"Authorization: "
                                     "Bearer <token>\"");
}


ngx_int_t
ngx_http_voice_auth_check(ngx_http_request_t *r)
{
    u_char                      *p, *end;
    u_char                       want[SHA256_DIGEST_LENGTH];
    u_char                       got[SHA256_DIGEST_LENGTH];
    size_t                       n;
    ngx_table_elt_t             *h;
    ngx_http_voice_loc_conf_t   *vlcf;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    h = r->headers_in.authorization;

    n = sizeof(NGX_HTTP_VOICE_AUTH_SCHEME) - 1;

    if (h == NULL || h->value.len <= n
        || ngx_strncasecmp(h->value.data, (u_char *) NGX_HTTP_VOICE_AUTH_SCHEME,
                           n) != 0)
    {
        return NGX_HTTP_UNAUTHORIZED;
    }

    p = h->value.data + n;
    end = h->value.data + h->value.len;

    while (p < end && *p == ' ') {
        p++;
    }

    while (end > p && end[-1] == ' ') {
        end--;
    }

    if (p == end) {
        return NGX_HTTP_UNAUTHORIZED;
    }

    SHA256(vlcf->api_token.data, vlcf->api_token.len, want);
    SHA256(p, (size_t) (end - p), got);

    if (CRYPTO_memcmp(want, got, sizeof(want)) != 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "voice: API request with a wrong bearer token");

        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_OK;
}


/*
 * The start of a handler of the API that only reads (GET, HEAD): its body
 * discarded, the bearer token checked, the method checked.  NGX_DECLINED
 * to go on; anything else is what the handler returns.
 */

ngx_int_t
ngx_http_voice_auth_reader(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_voice_auth_check(r);
    if (rc != NGX_OK) {
        return ngx_http_voice_auth_refuse(r, rc);
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_voice_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method not allowed: use GET");
    }

    return NGX_DECLINED;
}
