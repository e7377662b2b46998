/*
 * ngx_http_voice_http.c: the HTTP helpers every handler of the voice
 * module shares: a request header by name, the answers (a JSON body, any
 * body with its type, an error as {"success":false,"error":...}), and a
 * request body as one piece of memory.
 *
 * They sit on nginx's own functions (ngx_http_send_header(),
 * ngx_http_output_filter(), ngx_escape_json()), and are apart from the
 * configuration (ngx_http_voice_module.c) because every handler file
 * calls them and none of them reads a directive.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"


/* the first request header called name, case-insensitively, or NULL */

ngx_table_elt_t *
ngx_http_voice_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


ngx_int_t
ngx_http_voice_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    ngx_str_t  type = ngx_string("application/json");

    return ngx_http_voice_send_body(r, status, &type, body, len);
}


/*
 * Every answer ends with a newline, as a line of text does: curl in a
 * shell prints one JSON answer per line.  A body that has it already (a
 * stored record, Prometheus text) is sent as it is; one that has not gets
 * it as a second buffer, so the body itself is never copied.
 */

ngx_int_t
ngx_http_voice_send_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len)
{
    u_char       *semi;
    ngx_int_t     rc;
    ngx_buf_t    *b, *nl;
    ngx_uint_t    eol;
    ngx_chain_t   out, tail;

    static u_char  newline[] = "\n";

    eol = (len > 0 && body[len - 1] != '\n');

    r->headers_out.status = status;
    r->headers_out.content_length_n = len + eol;
    r->headers_out.content_type = *type;

    /* the type without its parameters, as nginx's filters read it */
    semi = ngx_strlchr(type->data, type->data + type->len, ';');
    r->headers_out.content_type_len = semi ? (size_t) (semi - type->data)
                                           : type->len;
    r->headers_out.content_type_lowcase = NULL;

    if (r->method == NGX_HTTP_HEAD || len == 0) {
        r->header_only = (r->method == NGX_HTTP_HEAD);
        rc = ngx_http_send_header(r);
        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            return rc;
        }
        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;

    out.buf = b;
    out.next = NULL;

    if (eol) {
        nl = ngx_calloc_buf(r->pool);
        if (nl == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        nl->pos = newline;
        nl->last = newline + 1;
        nl->memory = 1;

        tail.buf = nl;
        tail.next = NULL;
        out.next = &tail;
        b = nl;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_voice_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char   *body, *p, msg[1024], *last;
    size_t    len;
    va_list   args;

    va_start(args, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    len = sizeof("{\"success\":false,\"error\":\"\"}") - 1
          + (last - msg) + ngx_escape_json(NULL, msg, last - msg);

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"success\":false,\"error\":\"",
                   sizeof("{\"success\":false,\"error\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, msg, last - msg);
    p = ngx_cpymem(p, "\"}", 2);

    return ngx_http_voice_send_json(r, status, body, p - body);
}


/*
 * The request body, read by ngx_http_read_client_request_body() with
 * request_body_in_single_buf, as one piece of memory: in place when it is
 * one buffer, else copied.  Returns NGX_OK, or without sending anything
 * NGX_HTTP_REQUEST_ENTITY_TOO_LARGE for a body over max bytes (possible
 * with chunked encoding, which has no Content-Length to refuse early) or
 * one nginx buffered to a file, or NGX_HTTP_INTERNAL_SERVER_ERROR.
 */

ngx_int_t
ngx_http_voice_read_body(ngx_http_request_t *r, size_t max, u_char **body,
    size_t *len)
{
    u_char       *p;
    size_t        size;
    ngx_chain_t  *cl;

    *body = NULL;
    *len = 0;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    if (r->request_body->temp_file) {
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (cl->buf->in_file) {
            return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        }

        size += cl->buf->last - cl->buf->pos;
    }

    if (size > max) {
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    if (r->request_body->bufs->next == NULL) {
        *body = r->request_body->bufs->buf->pos;
        *len = size;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *body = p;
    *len = size;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    return NGX_OK;
}
