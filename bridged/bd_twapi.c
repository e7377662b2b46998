/*
 * bd_twapi.c: Twilio REST transfers, driven by the libuv loop.
 *
 * curl's multi_socket interface in the multi-uv.c shape: curl tells us
 * which sockets to watch (one uv_poll each) and when to call it back (one
 * uv_timer), and we call curl_multi_socket_action() from those handles,
 * never from inside a curl callback.  Each request nginx sends is one
 * bd_twapi_req_t, reached from its easy handle through CURLOPT_PRIVATE; a
 * request may take several transfers (the sender number lookup before a
 * call, the pages of the number list), one at a time.  Every request is
 * answered exactly once, with the HTTP status and the JSON body nginx must
 * send; the bodies are built in bd_twapi_json.c.
 */

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <curl/curl.h>
#include <uv.h>

#include "bd_chan.h"
#include "bd_conf.h"
#include "bd_form.h"
#include "bd_log.h"
#include "bd_twapi.h"
#include "bd_twapi_json.h"
#include "voice_proto.h"


#define BD_TWAPI_BODY_MAX      (1024 * 1024)
#define BD_TWAPI_BODY_START    16384
#define BD_TWAPI_PAGES_MAX     100
#define BD_TWAPI_NUMBERS_MAX   10000
#define BD_TWAPI_REQS_MAX      256
#define BD_TWAPI_CONNECT_MS    5000
#define BD_TWAPI_URL_MAX       8192
#define BD_TWAPI_FORM_MAX      (3 * (2 * VOICE_PROTO_MAX_SID + 2 * 4096) + 256)
#define BD_TWAPI_TWIML_MAX     4096


typedef enum {
    BD_TWAPI_ST_FROM = 0,     /* GET the first owned number (no From) */
    BD_TWAPI_ST_CREATE,       /* POST Calls.json */
    BD_TWAPI_ST_END,          /* POST Calls/{sid}.json Status=completed */
    BD_TWAPI_ST_PAGE          /* GET one page of IncomingPhoneNumbers */
} bd_twapi_state_e;


typedef struct bd_twapi_req_s  bd_twapi_req_t;

struct bd_twapi_req_s {
    bd_twapi_req_t     *next;
    bd_twapi_req_t     *prev;
    bd_twapi_state_e    state;
    uint8_t             type;         /* the VOICE_PROTO_MSG_* asked */
    bd_chan_peer_t     *peer;
    uint64_t            request_id;
    uint64_t            started;      /* loop time, ms */
    CURL               *easy;         /* the transfer in flight */
    unsigned            transfers;
    unsigned            pages;
    unsigned            too_big:1;
    cJSON              *numbers;
    char               *body;         /* Twilio's answer, NUL-terminated */
    size_t              body_len;
    size_t              body_size;
    long                http_status;
    char                to[VOICE_PROTO_MAX_SID + 1];
    char                from[VOICE_PROTO_MAX_SID + 1];
    char                call_sid[VOICE_PROTO_MAX_SID + 1];
    char                twiml[BD_TWAPI_TWIML_MAX + 1];
    char                status_url[BD_TWAPI_TWIML_MAX + 1];  /* or "" */
    char                errbuf[CURL_ERROR_SIZE];
    char                target[BD_TWAPI_URL_MAX];
    char                form[BD_TWAPI_FORM_MAX];
};


typedef struct bd_twapi_sock_s  bd_twapi_sock_t;

struct bd_twapi_sock_s {
    uv_poll_t           poll;
    curl_socket_t       fd;
    bd_twapi_sock_t    *next;
    bd_twapi_sock_t    *prev;
};


static uv_loop_t           *bd_twapi_loop;
static const bd_conf_t     *bd_twapi_conf;
static CURLM               *bd_twapi_multi;
static uv_timer_t           bd_twapi_timer;
static struct curl_slist   *bd_twapi_headers;
static bd_twapi_req_t      *bd_twapi_reqs;
static unsigned             bd_twapi_nreqs;
static bd_twapi_sock_t     *bd_twapi_socks;
static int                  bd_twapi_closing;


static const char *
bd_twapi_type_name(bd_twapi_req_t *req)
{
    return voice_proto_type_name(req->type);
}


static void
bd_twapi_free(bd_twapi_req_t *req)
{
    if (req->easy != NULL) {
        curl_multi_remove_handle(bd_twapi_multi, req->easy);
        curl_easy_cleanup(req->easy);
    }

    if (req->prev) {
        req->prev->next = req->next;

    } else {
        bd_twapi_reqs = req->next;
    }

    if (req->next) {
        req->next->prev = req->prev;
    }

    bd_twapi_nreqs--;

    bd_chan_peer_unref(req->peer);
    cJSON_Delete(req->numbers);
    free(req->body);
    free(req);
}


/*
 * Sends the reply and releases the request.  body may be NULL (no memory);
 * error, when given, says in words why the request failed.
 */

static void
bd_twapi_finish(bd_twapi_req_t *req, unsigned status, char *body,
    const char *error)
{
    char  twilio[32];

    static const char  nomem[] =
        "{\"success\":false,\"error\":\"bridged is out of memory\"}";

    if (body == NULL) {
        status = 500;
    }

    if (req->http_status) {
        snprintf(twilio, sizeof(twilio), "Twilio %ld", req->http_status);

    } else {
        snprintf(twilio, sizeof(twilio), "no answer from Twilio");
    }

    /* a failure's body is what the API client will read: log it too */

    bd_log(status < 400 ? BD_LOG_INFO : BD_LOG_WARN,
           req->call_sid[0] ? req->call_sid : NULL,
           "%s -> %u (%s, %u transfer%s, %llu ms)%s%s",
           bd_twapi_type_name(req), status, twilio,
           req->transfers, req->transfers == 1 ? "" : "s",
           (unsigned long long) (uv_now(bd_twapi_loop) - req->started),
           status < 400 ? "" : ": ",
           status < 400 ? "" : (error ? error : (body ? body : nomem)));

    if (body == NULL) {
        (void) bd_chan_reply(req->peer, req->request_id, status, nomem,
                             sizeof(nomem) - 1);

    } else {
        if (bd_chan_reply(req->peer, req->request_id, status, body,
                          strlen(body))
            < 0)
        {
            bd_log(BD_LOG_WARN, NULL, "the reply to %s could not be sent",
                   bd_twapi_type_name(req));
        }

        cJSON_free(body);
    }

    bd_twapi_free(req);
}


static void
bd_twapi_fail(bd_twapi_req_t *req, unsigned status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;


static void
bd_twapi_fail(bd_twapi_req_t *req, unsigned status, const char *fmt, ...)
{
    char     error[CURL_ERROR_SIZE + 128];
    va_list  args;

    va_start(args, fmt);
    vsnprintf(error, sizeof(error), fmt, args);
    va_end(args);

    bd_twapi_finish(req, status, bd_twapi_json_failure(error, 0, 0), error);
}


static size_t
bd_twapi_write(char *data, size_t size, size_t n, void *userp)
{
    char            *p;
    size_t           len, want;
    bd_twapi_req_t  *req;

    req = userp;
    len = size * n;

    /* the cap is hard: returning short makes curl fail the transfer */

    if (len > BD_TWAPI_BODY_MAX - req->body_len) {
        req->too_big = 1;
        return 0;
    }

    if (req->body_len + len + 1 > req->body_size) {
        want = req->body_size ? 2 * req->body_size : BD_TWAPI_BODY_START;

        while (want < req->body_len + len + 1) {
            want *= 2;
        }

        if (want > BD_TWAPI_BODY_MAX + 1) {
            want = BD_TWAPI_BODY_MAX + 1;
        }

        p = realloc(req->body, want);
        if (p == NULL) {
            return 0;
        }

        req->body = p;
        req->body_size = want;
    }

    memcpy(req->body + req->body_len, data, len);
    req->body_len += len;
    req->body[req->body_len] = '\0';

    return len;
}


/* starts one transfer of req: a GET, or a form POST when form is given */

static int
bd_twapi_start(bd_twapi_req_t *req, const char *form)
{
    int     ok;
    long    connect;
    CURL   *easy;

    easy = curl_easy_init();
    if (easy == NULL) {
        return -1;
    }

    connect = bd_twapi_conf->twilio_timeout_ms < BD_TWAPI_CONNECT_MS
              ? (long) bd_twapi_conf->twilio_timeout_ms : BD_TWAPI_CONNECT_MS;

    req->errbuf[0] = '\0';
    req->body_len = 0;
    req->too_big = 0;
    req->http_status = 0;

    ok = curl_easy_setopt(easy, CURLOPT_URL, req->target) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_PRIVATE, req) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                           (long) bd_twapi_conf->twilio_timeout_ms)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, connect)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https")
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_USERNAME, bd_twapi_conf->twilio_sid)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_PASSWORD,
                           bd_twapi_conf->twilio_token)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_HTTPHEADER, bd_twapi_headers)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_USERAGENT, "bridged/1") == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, bd_twapi_write)
          == CURLE_OK;
    ok &= curl_easy_setopt(easy, CURLOPT_WRITEDATA, req) == CURLE_OK;

    if (bd_twapi_conf->ca_file != NULL) {
        ok &= curl_easy_setopt(easy, CURLOPT_CAINFO, bd_twapi_conf->ca_file)
              == CURLE_OK;
    }

    if (form != NULL) {
        ok &= curl_easy_setopt(easy, CURLOPT_POSTFIELDS, form) == CURLE_OK;
        ok &= curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE,
                               (long) strlen(form))
              == CURLE_OK;
    }

    if (!ok || curl_multi_add_handle(bd_twapi_multi, easy) != CURLM_OK) {
        curl_easy_cleanup(easy);
        return -1;
    }

    req->easy = easy;
    req->transfers++;

    bd_log(BD_LOG_DEBUG, req->call_sid[0] ? req->call_sid : NULL,
           "%s: %s %s", bd_twapi_type_name(req), form ? "POST" : "GET",
           req->target);

    return 0;
}


/* target = TWILIO_API_URL/2010-04-01/Accounts/{sid}/<rest> */

static int
bd_twapi_target(bd_twapi_req_t *req, const char *rest, const char *sid)
{
    bd_form_t  f;

    bd_form_init(&f, req->target, sizeof(req->target));

    bd_form_raw(&f, bd_twapi_conf->twilio_api_url,
                strlen(bd_twapi_conf->twilio_api_url));
    bd_form_raw(&f, "/2010-04-01/Accounts/", 21);
    bd_form_escape(&f, bd_twapi_conf->twilio_sid,
                   strlen(bd_twapi_conf->twilio_sid));
    bd_form_raw(&f, rest, strlen(rest));

    if (sid != NULL) {
        bd_form_escape(&f, sid, strlen(sid));
        bd_form_raw(&f, ".json", 5);
    }

    return bd_form_done(&f);
}


static void
bd_twapi_create(bd_twapi_req_t *req)
{
    bd_form_t  f;

    req->state = BD_TWAPI_ST_CREATE;

    bd_form_init(&f, req->form, sizeof(req->form));
    bd_form_param(&f, "To", req->to, strlen(req->to));
    bd_form_param(&f, "From", req->from, strlen(req->from));
    bd_form_param(&f, "Url", req->twiml, strlen(req->twiml));
    bd_form_param(&f, "Method", "POST", 4);

    /* every progress event, so nginx's log tells a call that rang out
     * from one that was never placed */
    if (req->status_url[0] != '\0') {
        bd_form_param(&f, "StatusCallback", req->status_url,
                      strlen(req->status_url));
        bd_form_param(&f, "StatusCallbackMethod", "POST", 4);
        bd_form_param(&f, "StatusCallbackEvent", "initiated", 9);
        bd_form_param(&f, "StatusCallbackEvent", "ringing", 7);
        bd_form_param(&f, "StatusCallbackEvent", "answered", 8);
        bd_form_param(&f, "StatusCallbackEvent", "completed", 9);
    }

    if (!bd_form_done(&f) || !bd_twapi_target(req, "/Calls.json", NULL)
        || bd_twapi_start(req, req->form) != 0)
    {
        bd_twapi_fail(req, 500, "bridged could not start the request");
    }
}


static void
bd_twapi_transport_failed(bd_twapi_req_t *req, CURLcode rc)
{
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        bd_twapi_fail(req, 504, "Twilio did not answer within %u ms",
                      bd_twapi_conf->twilio_timeout_ms);
        return;
    }

    if (rc == CURLE_WRITE_ERROR && req->too_big) {
        bd_twapi_fail(req, 502, "Twilio's answer is larger than %d bytes",
                      BD_TWAPI_BODY_MAX);
        return;
    }

    bd_twapi_fail(req, 502, "Twilio unreachable: %s",
                  req->errbuf[0] ? req->errbuf : curl_easy_strerror(rc));
}


static void
bd_twapi_twilio_failed(bd_twapi_req_t *req)
{
    char      *body;
    unsigned   status;

    body = bd_twapi_json_twilio_failure(req->http_status,
                                        req->body ? req->body : "",
                                        req->body_len,
                                        req->state == BD_TWAPI_ST_END
                                        ? req->call_sid : NULL,
                                        &status);

    bd_twapi_finish(req, status, body, NULL);
}


static void
bd_twapi_page(bd_twapi_req_t *req)
{
    int        rc;
    char       next[BD_TWAPI_URL_MAX];
    bd_form_t  f;

    rc = bd_twapi_json_page(req->body, req->body_len, req->numbers,
                            BD_TWAPI_NUMBERS_MAX, next, sizeof(next));

    if (rc == BD_TWAPI_JSON_TOO_MANY) {
        bd_twapi_fail(req, 502, "the Twilio account owns more than %d "
                      "phone numbers", BD_TWAPI_NUMBERS_MAX);
        return;
    }

    if (rc != BD_TWAPI_JSON_OK) {
        bd_twapi_fail(req, 502, "Twilio sent a malformed page of numbers");
        return;
    }

    if (next[0] == '\0') {
        bd_twapi_finish(req, 200, bd_twapi_json_numbers(req->numbers), NULL);
        return;
    }

    if (++req->pages == BD_TWAPI_PAGES_MAX) {
        bd_twapi_fail(req, 502, "Twilio's number list has more than %d "
                      "pages", BD_TWAPI_PAGES_MAX);
        return;
    }

    /* next_page_uri is relative to the API's base URL, and used as is */

    bd_form_init(&f, req->target, sizeof(req->target));
    bd_form_raw(&f, bd_twapi_conf->twilio_api_url,
                strlen(bd_twapi_conf->twilio_api_url));
    bd_form_raw(&f, next, strlen(next));

    if (!bd_form_done(&f) || bd_twapi_start(req, NULL) != 0) {
        bd_twapi_fail(req, 500, "bridged could not start the request");
    }
}


/* one transfer of req is over: go on with the request or answer it */

static void
bd_twapi_done(bd_twapi_req_t *req, CURLcode rc)
{
    int    ok;
    char   sid[VOICE_PROTO_MAX_SID + 1];

    if (rc != CURLE_OK) {
        bd_twapi_transport_failed(req, rc);
        return;
    }

    ok = req->http_status >= 200 && req->http_status < 300;

    if (!ok) {
        bd_twapi_twilio_failed(req);
        return;
    }

    switch (req->state) {

    case BD_TWAPI_ST_FROM:
        rc = bd_twapi_json_first_number(req->body, req->body_len, req->from,
                                        sizeof(req->from));

        if (rc == BD_TWAPI_JSON_NONE) {
            bd_twapi_fail(req, 400, "fromNumber not given and the Twilio "
                          "account owns no phone number");
            return;
        }

        if (rc != BD_TWAPI_JSON_OK) {
            bd_twapi_fail(req, 502, "Twilio sent a malformed number list");
            return;
        }

        bd_twapi_create(req);
        return;

    case BD_TWAPI_ST_CREATE:
        if (bd_twapi_json_call_sid(req->body, req->body_len, sid,
                                   sizeof(sid))
            != BD_TWAPI_JSON_OK)
        {
            bd_twapi_fail(req, 502, "Twilio sent a malformed Call resource");
            return;
        }

        memcpy(req->call_sid, sid, sizeof(sid));
        bd_twapi_finish(req, 200, bd_twapi_json_call_created(sid, req->to),
                        NULL);
        return;

    case BD_TWAPI_ST_END:
        bd_twapi_finish(req, 200, bd_twapi_json_call_ended(), NULL);
        return;

    case BD_TWAPI_ST_PAGE:
        bd_twapi_page(req);
        return;
    }
}


static void
bd_twapi_check_done(void)
{
    int              pending;
    char            *priv;
    CURL            *easy;
    CURLMsg         *msg;
    CURLcode         rc;
    bd_twapi_req_t  *req;

    while ((msg = curl_multi_info_read(bd_twapi_multi, &pending)) != NULL) {

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;
        rc = msg->data.result;

        priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        req = (bd_twapi_req_t *) priv;

        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &req->http_status);

        curl_multi_remove_handle(bd_twapi_multi, easy);
        curl_easy_cleanup(easy);
        req->easy = NULL;

        bd_twapi_done(req, rc);
    }
}


static void
bd_twapi_action(curl_socket_t fd, int flags)
{
    int  running;

    curl_multi_socket_action(bd_twapi_multi, fd, flags, &running);
    bd_twapi_check_done();
}


static void
bd_twapi_poll_cb(uv_poll_t *poll, int status, int events)
{
    int               flags;
    bd_twapi_sock_t  *sk;

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

    bd_twapi_action(sk->fd, flags);
}


static void
bd_twapi_timer_cb(uv_timer_t *timer)
{
    (void) timer;

    bd_twapi_action(CURL_SOCKET_TIMEOUT, 0);
}


static void
bd_twapi_sock_closed(uv_handle_t *handle)
{
    free(handle->data);
}


static void
bd_twapi_sock_close(bd_twapi_sock_t *sk)
{
    if (sk->prev) {
        sk->prev->next = sk->next;

    } else {
        bd_twapi_socks = sk->next;
    }

    if (sk->next) {
        sk->next->prev = sk->prev;
    }

    uv_close((uv_handle_t *) &sk->poll, bd_twapi_sock_closed);
}


static int
bd_twapi_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp,
    void *socketp)
{
    int               events, rc;
    bd_twapi_sock_t  *sk;

    (void) easy;
    (void) userp;

    sk = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            if (!bd_twapi_closing) {
                curl_multi_assign(bd_twapi_multi, fd, NULL);
            }

            bd_twapi_sock_close(sk);
        }

        return 0;
    }

    if (sk == NULL) {
        sk = calloc(1, sizeof(bd_twapi_sock_t));
        if (sk == NULL) {
            return -1;
        }

        rc = uv_poll_init_socket(bd_twapi_loop, &sk->poll, fd);
        if (rc != 0) {
            bd_log(BD_LOG_ERROR, NULL, "uv_poll_init_socket: %s",
                   uv_strerror(rc));
            free(sk);
            return -1;
        }

        sk->fd = fd;
        sk->poll.data = sk;

        sk->next = bd_twapi_socks;
        if (bd_twapi_socks) {
            bd_twapi_socks->prev = sk;
        }

        bd_twapi_socks = sk;

        curl_multi_assign(bd_twapi_multi, fd, sk);
    }

    events = 0;

    if (what & CURL_POLL_IN) {
        events |= UV_READABLE;
    }

    if (what & CURL_POLL_OUT) {
        events |= UV_WRITABLE;
    }

    uv_poll_start(&sk->poll, events, bd_twapi_poll_cb);

    return 0;
}


static int
bd_twapi_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    (void) multi;
    (void) userp;

    if (timeout_ms < 0) {
        uv_timer_stop(&bd_twapi_timer);
        return 0;
    }

    /* 0 means "as soon as possible", but never from inside this callback */

    uv_timer_start(&bd_twapi_timer, bd_twapi_timer_cb,
                   timeout_ms ? (uint64_t) timeout_ms : 1, 0);

    return 0;
}


static int
bd_twapi_copy(char *dst, size_t size, const voice_proto_str_t *s)
{
    if (s->len >= size || (s->len && memchr(s->data, '\0', s->len))) {
        return 0;
    }

    if (s->len) {
        memcpy(dst, s->data, s->len);
    }

    dst[s->len] = '\0';

    return 1;
}


void
bd_twapi_request(bd_chan_peer_t *peer, const voice_proto_msg_t *msg)
{
    char             *body;
    bd_form_t         f;
    bd_twapi_req_t   *req;

    if (bd_twapi_conf->twilio_sid == NULL
        || bd_twapi_conf->twilio_token == NULL)
    {
        bd_log(BD_LOG_WARN, NULL, "%s refused: bridged has no Twilio "
               "credentials", voice_proto_type_name(msg->type));

        body = bd_twapi_json_failure("bridged has no Twilio credentials",
                                     0, 0);
        if (body != NULL) {
            (void) bd_chan_reply(peer, msg->request_id, 503, body,
                                 strlen(body));
            cJSON_free(body);
        }

        return;
    }

    if (bd_twapi_nreqs == BD_TWAPI_REQS_MAX || bd_twapi_closing) {
        body = bd_twapi_json_failure("bridged is busy: too many Twilio "
                                     "requests in flight", 0, 0);
        if (body != NULL) {
            (void) bd_chan_reply(peer, msg->request_id, 503, body,
                                 strlen(body));
            cJSON_free(body);
        }

        return;
    }

    req = calloc(1, sizeof(bd_twapi_req_t));
    if (req == NULL) {
        return;
    }

    req->type = msg->type;
    req->peer = peer;
    req->request_id = msg->request_id;
    req->started = uv_now(bd_twapi_loop);

    bd_chan_peer_ref(peer);

    req->next = bd_twapi_reqs;
    if (bd_twapi_reqs) {
        bd_twapi_reqs->prev = req;
    }

    bd_twapi_reqs = req;
    bd_twapi_nreqs++;

    switch (msg->type) {

    case VOICE_PROTO_MSG_CALL_CREATE:
        if (!bd_twapi_copy(req->to, sizeof(req->to), &msg->to)
            || !bd_twapi_copy(req->from, sizeof(req->from), &msg->from)
            || !bd_twapi_copy(req->twiml, sizeof(req->twiml), &msg->url)
            || !bd_twapi_copy(req->status_url, sizeof(req->status_url),
                              &msg->status_url))
        {
            bd_twapi_fail(req, 400, "bad call.create fields");
            return;
        }

        if (req->from[0] != '\0') {
            bd_twapi_create(req);
            return;
        }

        req->state = BD_TWAPI_ST_FROM;

        if (!bd_twapi_target(req, "/IncomingPhoneNumbers.json?PageSize=1",
                             NULL)
            || bd_twapi_start(req, NULL) != 0)
        {
            bd_twapi_fail(req, 500, "bridged could not start the request");
        }

        return;

    case VOICE_PROTO_MSG_CALL_END:
        if (!bd_twapi_copy(req->call_sid, sizeof(req->call_sid),
                           &msg->call_sid)
            || req->call_sid[0] == '\0')
        {
            bd_twapi_fail(req, 400, "bad call.end fields");
            return;
        }

        req->state = BD_TWAPI_ST_END;

        bd_form_init(&f, req->form, sizeof(req->form));
        bd_form_param(&f, "Status", "completed", 9);

        if (!bd_form_done(&f)
            || !bd_twapi_target(req, "/Calls/", req->call_sid)
            || bd_twapi_start(req, req->form) != 0)
        {
            bd_twapi_fail(req, 500, "bridged could not start the request");
        }

        return;

    default: /* VOICE_PROTO_MSG_NUMBERS_LIST */
        req->state = BD_TWAPI_ST_PAGE;

        req->numbers = cJSON_CreateArray();

        if (req->numbers == NULL
            || !bd_twapi_target(req,
                                "/IncomingPhoneNumbers.json?PageSize=1000",
                                NULL)
            || bd_twapi_start(req, NULL) != 0)
        {
            bd_twapi_fail(req, 500, "bridged could not start the request");
        }

        return;
    }
}


int
bd_twapi_init(uv_loop_t *loop, const bd_conf_t *conf)
{
    struct curl_slist  *h;

    bd_twapi_loop = loop;
    bd_twapi_conf = conf;

    bd_twapi_multi = curl_multi_init();
    if (bd_twapi_multi == NULL) {
        bd_log(BD_LOG_ERROR, NULL, "curl_multi_init failed");
        return -1;
    }

    h = curl_slist_append(NULL, "Accept: application/json");
    if (h == NULL) {
        goto failed;
    }

    bd_twapi_headers = h;

    h = curl_slist_append(bd_twapi_headers, "Accept-Charset: utf-8");
    if (h == NULL) {
        goto failed;
    }

    curl_multi_setopt(bd_twapi_multi, CURLMOPT_SOCKETFUNCTION,
                      bd_twapi_socket_cb);
    curl_multi_setopt(bd_twapi_multi, CURLMOPT_TIMERFUNCTION,
                      bd_twapi_timer_set);

    uv_timer_init(loop, &bd_twapi_timer);

    if (conf->twilio_sid == NULL || conf->twilio_token == NULL) {
        bd_log(BD_LOG_WARN, NULL, "TWILIO_ACCOUNT_SID or TWILIO_AUTH_TOKEN "
               "is not set: call.create, call.end and numbers.list will be "
               "answered 503");
    }

    return 0;

failed:

    curl_slist_free_all(bd_twapi_headers);
    bd_twapi_headers = NULL;
    curl_multi_cleanup(bd_twapi_multi);
    bd_twapi_multi = NULL;

    return -1;
}


void
bd_twapi_shutdown(void)
{
    bd_twapi_req_t  *req;

    if (bd_twapi_multi == NULL) {
        return;
    }

    while (bd_twapi_reqs) {
        req = bd_twapi_reqs;
        bd_twapi_fail(req, 503, "bridged is shutting down");
    }

    /* curl may report its cached connections' sockets as it closes them */

    bd_twapi_closing = 1;
    curl_multi_cleanup(bd_twapi_multi);
    bd_twapi_multi = NULL;

    while (bd_twapi_socks) {
        bd_twapi_sock_close(bd_twapi_socks);
    }

    uv_close((uv_handle_t *) &bd_twapi_timer, NULL);

    curl_slist_free_all(bd_twapi_headers);
    bd_twapi_headers = NULL;
}
