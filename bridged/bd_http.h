/*
 * bd_http.h: HTTP requests on bridged's loop, with curl's multi_socket
 * interface: the Twilio REST client (bd_twapi.c), the HTTP tools
 * (bd_tool.c) and the post-call webhook (bd_hook.c) all go through it, so
 * there is one curl multi handle, one set of uv_poll handles and one
 * timer; and the one signature of what bridged POSTs for the operator
 * (bd_http_sign()).
 *
 * A request is started with everything it needs (URL, body, headers,
 * credentials, a time limit and a cap on the answer's size) and ends in
 * exactly one call of its done callback, unless it is cancelled first;
 * nothing blocks.
 */

#ifndef BD_HTTP_H
#define BD_HTTP_H

#include <stddef.h>

#include <curl/curl.h>
#include <uv.h>

#include "bd_conf.h"


typedef struct bd_http_s  bd_http_t;

typedef void (*bd_http_done_pt)(bd_http_t *h, void *data);


typedef struct {
    const char                *url;
    const char                *body;         /* POST this, or NULL: GET */
    size_t                     body_len;
    const struct curl_slist   *headers;      /* kept by the caller */
    const char                *user;         /* basic auth, or NULL */
    const char                *password;
    unsigned                   timeout_ms;   /* the whole transfer */
    size_t                     max_answer;   /* larger: the transfer fails */
    unsigned                   once:1;       /* never sent twice: on a
                                                connection of its own */
} bd_http_opts_t;


/* what the done callback reads; valid until it returns */
struct bd_http_s {
    CURLcode                   result;       /* CURLE_OK: an answer came */
    long                       status;       /* HTTP status, 0 if none */
    char                      *answer;       /* NUL-terminated, or NULL */
    size_t                     answer_len;
    unsigned                   too_big:1;    /* over max_answer */
    char                       error[CURL_ERROR_SIZE];
    char                       retry_after[64];  /* the answer's
                                                    Retry-After, or "" */

    /* private */
    CURL                      *easy;
    bd_http_t                 *next;
    bd_http_t                 *prev;
    bd_http_done_pt            done;
    void                      *data;
    size_t                     answer_size;
    size_t                     max_answer;
};


int bd_http_init(uv_loop_t *loop, const bd_conf_t *conf);

/* cancels what is in flight (no callbacks) and releases curl */
void bd_http_shutdown(void);

/* NULL when the request cannot be started (then no callback comes) */
bd_http_t *bd_http_start(const bd_http_opts_t *o, bd_http_done_pt done,
    void *data);

/* the request is dropped and its callback never comes */
void bd_http_cancel(bd_http_t *h);

/* the answer's buffer, now the caller's (free()); NULL if none */
char *bd_http_take_answer(bd_http_t *h, size_t *len);

/*
 * Writes "X-Voice-Signature: t=T,v1=HEX(HMAC-SHA256(secret, "T.body"))"
 * (T: now, Unix seconds) into header, a curl header line; 0, or -1 when
 * out of memory or OpenSSL fails.  128 bytes hold it.
 */
int bd_http_sign(const char *secret, const char *body, size_t len,
    char *header, size_t size);

/* the reason a transfer failed, in words */
const char *bd_http_strerror(bd_http_t *h);


#endif /* BD_HTTP_H */
