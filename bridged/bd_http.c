/*
 * bd_http.c: HTTP transfers driven by the libuv loop.
 *
 * curl's multi_socket interface in the multi-uv.c shape: curl tells us
 * which sockets to watch (one uv_poll each) and when to call it back (one
 * uv_timer), and we call curl_multi_socket_action() from those handles,
 * never from inside a curl callback.  Each transfer is one bd_http_t,
 * reached from its easy handle through CURLOPT_PRIVATE; its done callback
 * runs once, from the loop, after the easy handle is gone, and the
 * object is freed when the callback returns.
 *
 * Every transfer verifies TLS (the system store or BRIDGED_CA_FILE),
 * follows no redirect, speaks only http and https, and has a hard time
 * limit and a hard cap on the answer it keeps; of the answer's headers
 * only Retry-After is kept, for bd_twapi.c's retries.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <uv.h>

#include "bd_conf.h"
#include "bd_http.h"
#include "bd_log.h"


#define BD_HTTP_ANSWER_START   16384
#define BD_HTTP_CONNECT_MS     5000


typedef struct bd_http_sock_s  bd_http_sock_t;

struct bd_http_sock_s {
    uv_poll_t           poll;
    curl_socket_t       fd;
    bd_http_sock_t     *next;
    bd_http_sock_t     *prev;
};


static uv_loop_t           *bd_http_loop;
static const bd_conf_t     *bd_http_conf;
static CURLM               *bd_http_multi;
static uv_timer_t           bd_http_timer;
static bd_http_t           *bd_http_list;
static bd_http_sock_t      *bd_http_socks;
static int                  bd_http_closing;


static void
bd_http_unlink(bd_http_t *h)
{
    if (h->prev) {
        h->prev->next = h->next;

    } else {
        bd_http_list = h->next;
    }

    if (h->next) {
        h->next->prev = h->prev;
    }
}


static void
bd_http_release(bd_http_t *h)
{
    if (h->easy != NULL) {
        curl_multi_remove_handle(bd_http_multi, h->easy);
        curl_easy_cleanup(h->easy);
        h->easy = NULL;
    }

    bd_http_unlink(h);
    free(h->answer);
    free(h);
}


static size_t
bd_http_write(char *data, size_t size, size_t n, void *userp)
{
    char       *p;
    size_t      len, want;
    bd_http_t  *h;

    h = userp;
    len = size * n;

    /* the cap is hard: returning short makes curl fail the transfer */

    if (len > h->max_answer - h->answer_len) {
        h->too_big = 1;
        return 0;
    }

    if (h->answer_len + len + 1 > h->answer_size) {
        want = h->answer_size ? 2 * h->answer_size : BD_HTTP_ANSWER_START;

        while (want < h->answer_len + len + 1) {
            want *= 2;
        }

        if (want > h->max_answer + 1) {
            want = h->max_answer + 1;
        }

        p = realloc(h->answer, want);
        if (p == NULL) {
            return 0;
        }

        h->answer = p;
        h->answer_size = want;
    }

    memcpy(h->answer + h->answer_len, data, len);
    h->answer_len += len;
    h->answer[h->answer_len] = '\0';

    return len;
}


/*
 * The answer's headers, one line at a time: only Retry-After is kept (a
 * 429 or 503 may say when to come back).  A status line starts another
 * answer, whose headers are the ones that count.
 */

static size_t
bd_http_header(char *line, size_t size, size_t n, void *userp)
{
    size_t      len, vlen;
    bd_http_t  *h;

    h = userp;
    len = size * n;

    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        h->retry_after[0] = '\0';
        return len;
    }

    if (len > 12 && strncasecmp(line, "Retry-After:", 12) == 0) {
        vlen = len - 12;

        if (vlen >= sizeof(h->retry_after)) {
            vlen = sizeof(h->retry_after) - 1;
        }

        memcpy(h->retry_after, line + 12, vlen);
        h->retry_after[vlen] = '\0';
    }

    return len;
}


bd_http_t *
bd_http_start(const bd_http_opts_t *o, bd_http_done_pt done, void *data)
{
    int         ok;
    long        connect;
    CURL       *easy;
    bd_http_t  *h;

    if (bd_http_multi == NULL || bd_http_closing) {
        return NULL;
    }

    h = calloc(1, sizeof(bd_http_t));
    if (h == NULL) {
        return NULL;
    }

    easy = curl_easy_init();
    if (easy == NULL) {
        free(h);
        return NULL;
    }

    h->done = done;
    h->data = data;
    h->max_answer = o->max_answer;

    connect = o->timeout_ms < BD_HTTP_CONNECT_MS ? (long) o->timeout_ms
                                                 : BD_HTTP_CONNECT_MS;

    ok = curl_easy_setopt(easy, CURLOPT_URL, o->url) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_PRIVATE, h) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, h->error) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) o->timeout_ms)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, connect)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https")
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_USERAGENT, "bridged/1") == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, bd_http_write)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_WRITEDATA, h) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, bd_http_header)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_HEADERDATA, h) == CURLE_OK;

    /*
     * curl sends a request again by itself when a connection it reused
     * dies before any answer (a keep-alive connection the server had
     * closed) -- but the server may have read it and acted on it.  A
     * request that must not be repeated goes on a connection of its own.
     */

    if (o->once) {
        ok &= curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L) == CURLE_OK;
    }

    if (o->headers != NULL) {
        ok &= curl_easy_setopt(easy, CURLOPT_HTTPHEADER, o->headers)
              == CURLE_OK;
    }

    if (o->user != NULL) {
        ok &= curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC)
              == CURLE_OK;
        ok &= curl_easy_setopt(easy, CURLOPT_USERNAME, o->user) == CURLE_OK;
        ok &= curl_easy_setopt(easy, CURLOPT_PASSWORD, o->password)
              == CURLE_OK;
    }

    if (bd_http_conf->ca_file != NULL) {
        ok &= curl_easy_setopt(easy, CURLOPT_CAINFO, bd_http_conf->ca_file)
              == CURLE_OK;
    }

    if (o->body != NULL) {
        ok &= curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE,
                               (long) o->body_len)
              == CURLE_OK;

        /* copied: the caller's buffer need not outlive this call */
        ok &= curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, o->body)
              == CURLE_OK;
    }

    if (!ok || curl_multi_add_handle(bd_http_multi, easy) != CURLM_OK) {
        curl_easy_cleanup(easy);
        free(h);
        return NULL;
    }

    h->easy = easy;

    h->next = bd_http_list;
    if (bd_http_list) {
        bd_http_list->prev = h;
    }

    bd_http_list = h;

    return h;
}


void
bd_http_cancel(bd_http_t *h)
{
    if (h != NULL) {
        bd_http_release(h);
    }
}


char *
bd_http_take_answer(bd_http_t *h, size_t *len)
{
    char  *a;

    a = h->answer;
    *len = h->answer_len;

    h->answer = NULL;
    h->answer_len = 0;
    h->answer_size = 0;

    return a;
}


/*
 * X-Voice-Signature: t=T,v1=HEX of HMAC-SHA256(secret, "T.body"): the
 * one signature of what bridged POSTs for the operator (HTTP tools,
 * bd_tool.c; the post-call webhook, bd_hook.c).
 */

int
bd_http_sign(const char *secret, const char *body, size_t len, char *header,
    size_t size)
{
    int             n;
    char           *signed_text;
    unsigned char   mac[EVP_MAX_MD_SIZE];
    unsigned int    mac_len, i;

    /* "{t}.{body}", with OpenSSL's one-shot HMAC (not deprecated in 3.0,
     * unlike HMAC_CTX) */

    signed_text = malloc(24 + len);
    if (signed_text == NULL) {
        return -1;
    }

    n = snprintf(signed_text, 24, "%lld.", (long long) time(NULL));
    memcpy(signed_text + n, body, len);

    mac_len = 0;

    if (HMAC(EVP_sha256(), secret, (int) strlen(secret),
             (unsigned char *) signed_text, (size_t) n + len, mac, &mac_len)
        == NULL)
    {
        free(signed_text);
        return -1;
    }

    n = snprintf(header, size, "X-Voice-Signature: t=%.*s,v1=", n - 1,
                 signed_text);
    free(signed_text);

    for (i = 0; i < mac_len && (size_t) n + 3 <= size; i++) {
        n += snprintf(header + n, size - n, "%02x", mac[i]);
    }

    return 0;
}


const char *
bd_http_strerror(bd_http_t *h)
{
    return h->error[0] ? h->error : curl_easy_strerror(h->result);
}


static void
bd_http_check_done(void)
{
    int         pending;
    char       *priv;
    CURL       *easy;
    CURLMsg    *msg;
    bd_http_t  *h;

    while ((msg = curl_multi_info_read(bd_http_multi, &pending)) != NULL) {

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;

        priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        h = (bd_http_t *) priv;

        h->result = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &h->status);

        curl_multi_remove_handle(bd_http_multi, easy);
        curl_easy_cleanup(easy);
        h->easy = NULL;

        /* the callback may start other transfers, never free this one */

        h->done(h, h->data);
        bd_http_release(h);
    }
}


static void
bd_http_action(curl_socket_t fd, int flags)
{
    int  running;

    curl_multi_socket_action(bd_http_multi, fd, flags, &running);
    bd_http_check_done();
}


static void
bd_http_poll_cb(uv_poll_t *poll, int status, int events)
{
    int              flags;
    bd_http_sock_t  *sk;

    sk = poll->data;

    flags = 0;

    if (status < 0) {
        flags = CURL_CSELECT_ERR;

    } else {
        if (events & UV_READABLE) {
            flags |= CURL_CSELECT_IN;
        }

        if (events & UV_WRITABLE) {
            flags |= CURL_CSELECT_OUT;
        }
    }

    /* sk may be released by the action: curl only knows the descriptor */

    bd_http_action(sk->fd, flags);
}


static void
bd_http_timer_cb(uv_timer_t *timer)
{
    (void) timer;

    bd_http_action(CURL_SOCKET_TIMEOUT, 0);
}


static void
bd_http_sock_closed(uv_handle_t *handle)
{
    free(handle->data);
}


static void
bd_http_sock_close(bd_http_sock_t *sk)
{
    if (sk->prev) {
        sk->prev->next = sk->next;

    } else {
        bd_http_socks = sk->next;
    }

    if (sk->next) {
        sk->next->prev = sk->prev;
    }

    uv_close((uv_handle_t *) &sk->poll, bd_http_sock_closed);
}


static int
bd_http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp,
    void *socketp)
{
    int              events, rc;
    bd_http_sock_t  *sk;

    (void) easy;
    (void) userp;

    sk = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            if (!bd_http_closing) {
                curl_multi_assign(bd_http_multi, fd, NULL);
            }

            bd_http_sock_close(sk);
        }

        return 0;
    }

    if (sk == NULL) {
        sk = calloc(1, sizeof(bd_http_sock_t));
        if (sk == NULL) {
            return -1;
        }

        rc = uv_poll_init_socket(bd_http_loop, &sk->poll, fd);
        if (rc != 0) {
            bd_log(BD_LOG_ERROR, NULL, "uv_poll_init_socket: %s",
                   uv_strerror(rc));
            free(sk);
            return -1;
        }

        sk->fd = fd;
        sk->poll.data = sk;

        sk->next = bd_http_socks;
        if (bd_http_socks) {
            bd_http_socks->prev = sk;
        }

        bd_http_socks = sk;

        curl_multi_assign(bd_http_multi, fd, sk);
    }

    events = 0;

    if (what & CURL_POLL_IN) {
        events |= UV_READABLE;
    }

    if (what & CURL_POLL_OUT) {
        events |= UV_WRITABLE;
    }

    uv_poll_start(&sk->poll, events, bd_http_poll_cb);

    return 0;
}


static int
bd_http_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    (void) multi;
    (void) userp;

    if (timeout_ms < 0) {
        uv_timer_stop(&bd_http_timer);
        return 0;
    }

    /* 0 means "as soon as possible", but never from inside this callback */

    uv_timer_start(&bd_http_timer, bd_http_timer_cb,
                   timeout_ms ? (uint64_t) timeout_ms : 1, 0);

    return 0;
}


int
bd_http_init(uv_loop_t *loop, const bd_conf_t *conf)
{
    bd_http_loop = loop;
    bd_http_conf = conf;

    bd_http_multi = curl_multi_init();
    if (bd_http_multi == NULL) {
        bd_log(BD_LOG_ERROR, NULL, "curl_multi_init failed");
        return -1;
    }

    curl_multi_setopt(bd_http_multi, CURLMOPT_SOCKETFUNCTION,
                      bd_http_socket_cb);
    curl_multi_setopt(bd_http_multi, CURLMOPT_TIMERFUNCTION,
                      bd_http_timer_set);

    uv_timer_init(loop, &bd_http_timer);

    return 0;
}


void
bd_http_shutdown(void)
{
    if (bd_http_multi == NULL) {
        return;
    }

    while (bd_http_list) {
        bd_http_release(bd_http_list);
    }

    /* curl may report its cached connections' sockets as it closes them */

    bd_http_closing = 1;
    curl_multi_cleanup(bd_http_multi);
    bd_http_multi = NULL;

    while (bd_http_socks) {
        bd_http_sock_close(bd_http_socks);
    }

    uv_close((uv_handle_t *) &bd_http_timer, NULL);
}
