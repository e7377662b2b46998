/*
 * bd_twapi.c: Twilio REST requests, as transfers on bd_http.c.
 *
 * Each request is one bd_twapi_req_t.  Those nginx sends (call.create,
 * call.end, numbers.list) may take several transfers (the sender number
 * lookup before a call, the pages of the number list), one at a time, and
 * are answered exactly once, with the HTTP status and the JSON body nginx
 * must send; the bodies are built in bd_twapi_json.c.  Those a call makes
 * itself (bd_twapi_update(): hang up, redirect to a transfer) end in one
 * callback to the call instead.
 *
 * When Twilio or the network fails, a transfer that is safe to repeat --
 * a GET, or Status=completed -- is sent again (--twilio-retries), after a
 * wait that grows (bd_retry.c) and is never shorter than Twilio's
 * Retry-After; creating a call or redirecting one never is: a second
 * phone call or a second <Dial> is worse than an error.  A request never
 * outlives its deadline (--twilio-deadline-ms), each attempt being cut to
 * what is left of it.  A reply to call.create says when Twilio surely
 * placed no call (VOICE_PROTO_FLAG_NOT_DONE): nginx then forgets the
 * request's Idempotency-Key, so that the client may try again.
 */

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <curl/curl.h>
#include <uv.h>

#include "bd_chan.h"
#include "bd_conf.h"
#include "bd_form.h"
#include "bd_http.h"
#include "bd_log.h"
#include "bd_stats.h"
#include "bd_retry.h"
#include "bd_twapi.h"
#include "bd_twapi_json.h"
#include "voice_proto.h"


#define BD_TWAPI_BODY_MAX      (1024 * 1024)
#define BD_TWAPI_PAGES_MAX     100
#define BD_TWAPI_NUMBERS_MAX   10000
#define BD_TWAPI_REQS_MAX      256
#define BD_TWAPI_URL_MAX       8192
#define BD_TWAPI_FORM_MAX      (3 * (2 * VOICE_PROTO_MAX_SID + 2 * 4096) + 256)
#define BD_TWAPI_UPDATE_MAX    16384
#define BD_TWAPI_TWIML_MAX     4096
#define BD_TWAPI_ATTEMPT_MIN   100    /* ms: an attempt with less left of
                                         the deadline is not made */


typedef enum {
    BD_TWAPI_ST_FROM = 0,     /* GET the first owned number (no From) */
    BD_TWAPI_ST_CREATE,       /* POST Calls.json */
    BD_TWAPI_ST_END,          /* POST Calls/{sid}.json Status=completed */
    BD_TWAPI_ST_PAGE,         /* GET one page of IncomingPhoneNumbers */
    BD_TWAPI_ST_UPDATE        /* POST Calls/{sid}.json for a call's own */
} bd_twapi_state_e;

struct bd_twapi_req_s {
    bd_twapi_req_t     *next;
    bd_twapi_req_t     *prev;
    bd_twapi_state_e    state;
    uint8_t             type;         /* the VOICE_PROTO_MSG_* asked */
    bd_chan_peer_t     *peer;
    uint64_t            request_id;
    uint64_t            started;      /* loop time, ms */
    uint64_t            sent_ns;      /* the transfer's, uv_hrtime() */
    bd_http_t          *http;         /* the transfer in flight */
    bd_twapi_update_pt  done;         /* BD_TWAPI_ST_UPDATE's callback */
    void               *data;
    char               *update;       /* its form */
    unsigned            transfers;
    unsigned            pages;
    unsigned            attempt;      /* of the transfer, from 1 */
    uint64_t            deadline;     /* loop time, ms */
    uint64_t            retry_after;  /* Twilio's, ms; UINT64_MAX: none */
    const char         *sent;         /* the transfer's form, or NULL */
    uv_timer_t          retry;        /* the wait before an attempt */
    unsigned            too_big:1;
    unsigned            amd:1;        /* answering-machine detection */
    unsigned            safe:1;       /* the transfer may be repeated */

    /* facts, set once and never cleared, not steps of the request (its
     * state is which request it is; its attempts are bd_retry.c's) */
    unsigned            uncertain:1;  /* an attempt may have reached
                                         Twilio and done its work */
    unsigned            retry_init:1;
    unsigned            create_sent:1;  /* Calls.json went out: never
                                           again, or a second call */
    uint32_t            time_limit;   /* TimeLimit, s, 0: none */
    cJSON              *numbers;
    char               *body;         /* Twilio's answer, NUL-terminated */
    size_t              body_len;
    long                http_status;
    char                to[VOICE_PROTO_MAX_SID + 1];
    char                from[VOICE_PROTO_MAX_SID + 1];
    char                call_sid[VOICE_PROTO_MAX_SID + 1];
    char                twiml[BD_TWAPI_TWIML_MAX + 1];
    char                status_url[BD_TWAPI_TWIML_MAX + 1];  /* or "" */
    char                errbuf[CURL_ERROR_SIZE];
    CURLcode            result;
    char                target[BD_TWAPI_URL_MAX];
    char                form[BD_TWAPI_FORM_MAX];
};


static uv_loop_t           *bd_twapi_loop;
static const bd_conf_t     *bd_twapi_conf;
static struct curl_slist   *bd_twapi_headers;
static bd_twapi_req_t      *bd_twapi_reqs;
static unsigned             bd_twapi_nreqs;
static int                  bd_twapi_closing;


static const char *
bd_twapi_type_name(bd_twapi_req_t *req)
{
    return voice_proto_type_name(req->type);
}


static void
bd_twapi_closed(uv_handle_t *handle)
{
    free(handle->data);
}


static void
bd_twapi_free(bd_twapi_req_t *req)
{
    bd_http_cancel(req->http);

    if (req->retry_init) {
        uv_timer_stop(&req->retry);
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

    if (req->peer != NULL) {
        bd_chan_peer_unref(req->peer);
    }

    cJSON_Delete(req->numbers);
    free(req->body);
    free(req->update);

    /* a timer handle is the loop's until it is closed */

    if (req->retry_init) {
        uv_close((uv_handle_t *) &req->retry, bd_twapi_closed);
        return;
    }

    free(req);
}


/*
 * Whether Twilio surely placed no call for a call.create that did not
 * succeed: Calls.json never went out, or it never reached Twilio, or
 * Twilio refused it.  A time-out, a cut connection or a 5xx may hide a
 * placed call.
 */

static int
bd_twapi_not_done(bd_twapi_req_t *req, unsigned status)
{
    if (req->type != VOICE_PROTO_MSG_CALL_CREATE || status / 100 == 2) {
        return 0;
    }

    if (!req->create_sent) {
        return 1;
    }

    return bd_retry_not_done(req->result, req->http_status);
}


/*
 * Sends the reply and releases the request.  body may be NULL (no memory);
 * error, when given, says in words why the request failed.
 */

static void
bd_twapi_finish(bd_twapi_req_t *req, unsigned status, char *body,
    const char *error)
{
    char      twilio[32];
    uint32_t  flags;

    long   code;
    char   message[8];

    static const char  nomem[] =
        "{\"success\":false,\"error\":\"bridged is out of memory\"}";

    if (req->state == BD_TWAPI_ST_UPDATE) {

        /* a call's own request: its callback gets Twilio's error code */

        code = 0;

        if (req->http_status >= 400 && req->body != NULL) {
            (void) bd_twapi_json_error(req->body, req->body_len, &code,
                                       message, sizeof(message));
        }

        bd_log(req->http_status / 100 == 2 ? BD_LOG_INFO : BD_LOG_WARN,
               req->call_sid,
               "call update -> %u (Twilio %ld, code %ld, %llu ms)%s%s",
               status, req->http_status, code,
               (unsigned long long) (uv_now(bd_twapi_loop) - req->started),
               error ? ": " : "", error ? error : "");

        if (req->http_status != 0) {
            status = (unsigned) req->http_status;
        }

        if (req->done != NULL) {
            req->done(req->data, status, code);
        }

        if (body != NULL) {
            cJSON_free(body);
        }

        bd_twapi_free(req);
        return;
    }

    if (body == NULL) {
        status = 500;
    }

    if (req->http_status) {
        snprintf(twilio, sizeof(twilio), "Twilio %ld", req->http_status);

    } else {
        snprintf(twilio, sizeof(twilio), "no answer from Twilio");
    }

    flags = bd_twapi_not_done(req, status) ? VOICE_PROTO_FLAG_NOT_DONE : 0;

    /* a failure's body is what the API client will read: log it too */

    bd_log(status < 400 ? BD_LOG_INFO : BD_LOG_WARN,
           req->call_sid[0] ? req->call_sid : NULL,
           "%s -> %u (%s, %u transfer%s, %llu ms)%s%s%s",
           bd_twapi_type_name(req), status, twilio,
           req->transfers, req->transfers == 1 ? "" : "s",
           (unsigned long long) (uv_now(bd_twapi_loop) - req->started),
           flags ? ", no call placed" : "",
           status < 400 ? "" : ": ",
           status < 400 ? "" : (error ? error : (body ? body : nomem)));

    if (body == NULL) {
        (void) bd_chan_reply(req->peer, req->request_id, status, flags,
                             NULL, nomem, sizeof(nomem) - 1);

    } else {
        /* a call placed: its SID, so that nginx counts it as that call */

        if (bd_chan_reply(req->peer, req->request_id, status, flags,
                          (req->type == VOICE_PROTO_MSG_CALL_CREATE
                           && status == 200 && req->call_sid[0])
                          ? req->call_sid : NULL,
                          body, strlen(body))
            < 0)
        {
            bd_log(BD_LOG_WARN, req->call_sid[0] ? req->call_sid : NULL,
                   "the reply to %s could not be sent",
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


/* one attempt of the transfer: to req->target, with req->sent if any */

static void bd_twapi_http_done(bd_http_t *h, void *data);


static int
bd_twapi_send(bd_twapi_req_t *req)
{
    uint64_t        now, left;
    bd_http_opts_t  o;

    req->errbuf[0] = '\0';
    req->too_big = 0;
    req->http_status = 0;
    req->retry_after = UINT64_MAX;
    free(req->body);
    req->body = NULL;
    req->body_len = 0;

    /* an attempt has what is left of the request's deadline, at most */

    now = uv_now(bd_twapi_loop);
    left = req->deadline > now ? req->deadline - now : 0;

    if (left < BD_TWAPI_ATTEMPT_MIN) {
        left = BD_TWAPI_ATTEMPT_MIN;
    }

    memset(&o, 0, sizeof(bd_http_opts_t));
    o.url = req->target;
    o.body = req->sent;
    o.body_len = req->sent ? strlen(req->sent) : 0;
    o.headers = bd_twapi_headers;
    o.user = bd_twapi_conf->twilio_sid;
    o.password = bd_twapi_conf->twilio_token;
    o.timeout_ms = bd_twapi_conf->twilio_timeout_ms < left
                   ? bd_twapi_conf->twilio_timeout_ms : (unsigned) left;
    o.max_answer = BD_TWAPI_BODY_MAX;
    o.once = !req->safe;

    req->sent_ns = uv_hrtime();

    req->http = bd_http_start(&o, bd_twapi_http_done, req);
    if (req->http == NULL) {
        return -1;
    }

    req->attempt++;
    req->transfers++;

    bd_log(BD_LOG_DEBUG, req->call_sid[0] ? req->call_sid : NULL,
           "%s: %s %s (attempt %u, %u ms)", bd_twapi_type_name(req),
           req->sent ? "POST" : "GET", req->target, req->attempt,
           o.timeout_ms);

    return 0;
}


/*
 * Starts a transfer of req: a GET, or a form POST when form is given (it
 * must live as long as req).  safe: it may be sent again if it fails.
 */

static int
bd_twapi_start(bd_twapi_req_t *req, const char *form, unsigned safe)
{
    req->sent = form;
    req->safe = safe;
    req->attempt = 0;

    return bd_twapi_send(req);
}


static void
bd_twapi_retry_cb(uv_timer_t *timer)
{
    bd_twapi_req_t  *req;

    req = timer->data;

    if (bd_twapi_send(req) != 0) {
        bd_twapi_fail(req, 500, "bridged could not start the request");
    }
}


/*
 * After a failed attempt: schedules the next one and returns 1 when the
 * transfer is safe to repeat, the failure may pass, attempts are left and
 * so is time before the deadline (Twilio's Retry-After included); else 0,
 * and the failure is the request's.
 */

static int
bd_twapi_retry(bd_twapi_req_t *req, CURLcode rc)
{
    uint64_t  now, wait;

    if (!req->safe || bd_twapi_closing
        || !bd_retry_transient(rc, rc == CURLE_OK ? req->http_status : 0))
    {
        return 0;
    }

    if (!bd_retry_not_done(rc, rc == CURLE_OK ? req->http_status : 0)) {
        req->uncertain = 1;
    }

    if (req->attempt > bd_twapi_conf->twilio_retries) {
        return 0;
    }

    /* the clock's low bits are random enough to spread the retries */

    wait = bd_retry_backoff_ms(req->attempt, (uint32_t) uv_hrtime());

    if (req->retry_after != UINT64_MAX && req->retry_after >= wait) {
        wait = req->retry_after;

    } else {
        req->retry_after = UINT64_MAX;
    }

    now = uv_now(bd_twapi_loop);

    if (now + wait + BD_TWAPI_ATTEMPT_MIN > req->deadline) {
        bd_log(BD_LOG_WARN, req->call_sid[0] ? req->call_sid : NULL,
               "%s: attempt %u failed (%s), no time is left for another "
               "within %u ms", bd_twapi_type_name(req), req->attempt,
               rc == CURLE_OK ? "Twilio refused it"
                              : (req->errbuf[0] ? req->errbuf
                                                : curl_easy_strerror(rc)),
               bd_twapi_conf->twilio_deadline_ms);
        return 0;
    }

    if (!req->retry_init) {
        uv_timer_init(bd_twapi_loop, &req->retry);
        req->retry.data = req;
        req->retry_init = 1;
    }

    if (rc == CURLE_OK) {
        bd_log(BD_LOG_WARN, req->call_sid[0] ? req->call_sid : NULL,
               "%s: Twilio answered %ld to attempt %u, trying again in "
               "%llu ms%s", bd_twapi_type_name(req), req->http_status,
               req->attempt, (unsigned long long) wait,
               req->retry_after != UINT64_MAX ? " (its Retry-After)" : "");

    } else {
        bd_log(BD_LOG_WARN, req->call_sid[0] ? req->call_sid : NULL,
               "%s: attempt %u failed (%s), trying again in %llu ms",
               bd_twapi_type_name(req), req->attempt,
               req->errbuf[0] ? req->errbuf : curl_easy_strerror(rc),
               (unsigned long long) wait);
    }

    uv_timer_start(&req->retry, bd_twapi_retry_cb, wait, 0);

    return 1;
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
    char       limit[16];
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

    /*
     * Answering machines: asynchronous, so the call connects at once, and
     * with the end of a machine's greeting detected, so a voicemail is
     * left after the beep; the verdict comes to the status callback URL
     * (docs/protocols.md, call control §3)
     */
    if (req->time_limit) {
        snprintf(limit, sizeof(limit), "%u", (unsigned) req->time_limit);
        bd_form_param(&f, "TimeLimit", limit, strlen(limit));
    }

    if (req->amd) {
        bd_form_param(&f, "MachineDetection", "DetectMessageEnd", 16);
        bd_form_param(&f, "AsyncAmd", "true", 4);

        if (req->status_url[0] != '\0') {
            bd_form_param(&f, "AsyncAmdStatusCallback", req->status_url,
                          strlen(req->status_url));
            bd_form_param(&f, "AsyncAmdStatusCallbackMethod", "POST", 4);
        }
    }

    /* never sent again: a second attempt may place a second call */

    if (!bd_form_done(&f) || !bd_twapi_target(req, "/Calls.json", NULL)
        || bd_twapi_start(req, req->form, 0) != 0)
    {
        bd_twapi_fail(req, 500, "bridged could not start the request");
        return;
    }

    req->create_sent = 1;
}


/* " (3 attempts)" after a transfer that was tried more than once */

static const char *
bd_twapi_attempts(bd_twapi_req_t *req, char *buf, size_t size)
{
    if (req->attempt < 2) {
        return "";
    }

    snprintf(buf, size, " (%u attempts)", req->attempt);

    return buf;
}


static void
bd_twapi_transport_failed(bd_twapi_req_t *req, CURLcode rc)
{
    char  n[32];

    if (rc == CURLE_OPERATION_TIMEDOUT) {
        bd_twapi_fail(req, 504, "Twilio did not answer in time%s%s",
                      bd_twapi_attempts(req, n, sizeof(n)),
                      req->state == BD_TWAPI_ST_CREATE
                      ? ": the call may have been placed" : "");
        return;
    }

    if (rc == CURLE_WRITE_ERROR && req->too_big) {
        bd_twapi_fail(req, 502, "Twilio's answer is larger than %d bytes",
                      BD_TWAPI_BODY_MAX);
        return;
    }

    bd_twapi_fail(req, 502, "Twilio unreachable: %s%s",
                  req->errbuf[0] ? req->errbuf : curl_easy_strerror(rc),
                  bd_twapi_attempts(req, n, sizeof(n)));
}


static void
bd_twapi_twilio_failed(bd_twapi_req_t *req)
{
    char      *body;
    unsigned   status, after;

    /* Twilio's Retry-After goes to the client, in whole seconds */

    after = 0;

    if (req->retry_after != UINT64_MAX) {
        after = (unsigned) ((req->retry_after + 999) / 1000);
        after = after ? after : 1;
    }

    body = bd_twapi_json_twilio_failure(req->http_status,
                                        req->body ? req->body : "",
                                        req->body_len,
                                        req->state == BD_TWAPI_ST_END
                                        ? req->call_sid : NULL,
                                        req->attempt, after, &status);

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

    if (uv_now(bd_twapi_loop) + BD_TWAPI_ATTEMPT_MIN > req->deadline) {
        bd_twapi_fail(req, 504, "Twilio's number list took longer than "
                      "%u ms", bd_twapi_conf->twilio_deadline_ms);
        return;
    }

    /* next_page_uri is relative to the API's base URL, and used as is */

    bd_form_init(&f, req->target, sizeof(req->target));
    bd_form_raw(&f, bd_twapi_conf->twilio_api_url,
                strlen(bd_twapi_conf->twilio_api_url));
    bd_form_raw(&f, next, strlen(next));

    if (!bd_form_done(&f) || bd_twapi_start(req, NULL, 1) != 0) {
        bd_twapi_fail(req, 500, "bridged could not start the request");
    }
}


/* one transfer of req is over: go on with the request or answer it */

static void
bd_twapi_done(bd_twapi_req_t *req, CURLcode rc)
{
    int    ok;
    long   code;
    char   sid[VOICE_PROTO_MAX_SID + 1], message[8];

    if (bd_twapi_retry(req, rc)) {
        return;
    }

    if (rc != CURLE_OK) {
        bd_twapi_transport_failed(req, rc);
        return;
    }

    ok = req->http_status >= 200 && req->http_status < 300;

    /*
     * 21220 to a hang-up sent again: the call is no longer in progress,
     * most likely because an earlier attempt that got no answer ended it
     */

    if (!ok && req->state == BD_TWAPI_ST_END && req->uncertain
        && req->http_status == 400 && req->body != NULL
        && bd_twapi_json_error(req->body, req->body_len, &code, message,
                               sizeof(message)) == BD_TWAPI_JSON_OK
        && code == 21220)
    {
        bd_log(BD_LOG_INFO, req->call_sid, "call.end: Twilio says the "
               "call is over (21220) after %u attempts: taken as ended",
               req->attempt);
        ok = 1;
    }

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

    case BD_TWAPI_ST_UPDATE:
        bd_twapi_finish(req, (unsigned) req->http_status, NULL, NULL);
        return;
    }
}


/* one transfer is over: its answer is the request's now */

static void
bd_twapi_http_done(bd_http_t *h, void *data)
{
    bd_twapi_req_t  *req;

    req = data;

    req->http = NULL;
    req->result = h->result;
    req->http_status = h->status;
    req->too_big = h->too_big;

    bd_stats_twilio(h->result == CURLE_OK ? h->status : 0,
                    (uv_hrtime() - req->sent_ns) / 1000);

    if (h->result == CURLE_OK && h->retry_after[0] != '\0'
        && !bd_retry_after_parse(h->retry_after, strlen(h->retry_after),
                                 time(NULL), &req->retry_after))
    {
        req->retry_after = UINT64_MAX;
    }

    if (h->result != CURLE_OK) {
        snprintf(req->errbuf, sizeof(req->errbuf), "%s",
                 bd_http_strerror(h));
    }

    free(req->body);
    req->body = bd_http_take_answer(h, &req->body_len);

    bd_twapi_done(req, h->result);
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
            (void) bd_chan_reply(peer, msg->request_id, 503,
                                 VOICE_PROTO_FLAG_NOT_DONE, NULL, body,
                                 strlen(body));
            cJSON_free(body);
        }

        return;
    }

    if (bd_twapi_nreqs == BD_TWAPI_REQS_MAX || bd_twapi_closing) {
        body = bd_twapi_json_failure("bridged is busy: too many Twilio "
                                     "requests in flight", 0, 0);
        if (body != NULL) {
            (void) bd_chan_reply(peer, msg->request_id, 503,
                                 VOICE_PROTO_FLAG_NOT_DONE, NULL, body,
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
    req->deadline = req->started + bd_twapi_conf->twilio_deadline_ms;

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

        req->amd = (msg->flags & VOICE_PROTO_FLAG_AMD) != 0;
        req->time_limit = msg->time_limit;

        if (req->from[0] != '\0') {
            bd_twapi_create(req);
            return;
        }

        req->state = BD_TWAPI_ST_FROM;

        if (!bd_twapi_target(req, "/IncomingPhoneNumbers.json?PageSize=1",
                             NULL)
            || bd_twapi_start(req, NULL, 1) != 0)
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

        /* safe to repeat: a call ends once, whoever asks again */

        if (!bd_form_done(&f)
            || !bd_twapi_target(req, "/Calls/", req->call_sid)
            || bd_twapi_start(req, req->form, 1) != 0)
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
            || bd_twapi_start(req, NULL, 1) != 0)
        {
            bd_twapi_fail(req, 500, "bridged could not start the request");
        }

        return;
    }
}


/*
 * A call's own request: POST Calls/{sid}.json with form (Status=completed,
 * or Twiml=...).  Not counted against the requests nginx may have in
 * flight, so an API flood cannot keep a call from hanging up.
 */

bd_twapi_req_t *
bd_twapi_update(const char *call_sid, const char *form, bd_twapi_update_pt done,
    void *data)
{
    bd_twapi_req_t  *req;

    if (bd_twapi_conf->twilio_sid == NULL
        || bd_twapi_conf->twilio_token == NULL || bd_twapi_closing
        || strlen(call_sid) > VOICE_PROTO_MAX_SID
        || strlen(form) > BD_TWAPI_UPDATE_MAX)
    {
        return NULL;
    }

    req = calloc(1, sizeof(bd_twapi_req_t));
    if (req == NULL) {
        return NULL;
    }

    req->update = strdup(form);
    if (req->update == NULL) {
        free(req);
        return NULL;
    }

    req->type = VOICE_PROTO_MSG_CALL_END;
    req->state = BD_TWAPI_ST_UPDATE;
    req->started = uv_now(bd_twapi_loop);
    req->deadline = req->started + bd_twapi_conf->twilio_deadline_ms;
    req->done = done;
    req->data = data;
    memcpy(req->call_sid, call_sid, strlen(call_sid) + 1);

    req->next = bd_twapi_reqs;
    if (bd_twapi_reqs) {
        bd_twapi_reqs->prev = req;
    }

    bd_twapi_reqs = req;
    bd_twapi_nreqs++;

    /* a hang-up may be sent again; a redirect may not (a second <Dial>) */

    if (!bd_twapi_target(req, "/Calls/", req->call_sid)
        || bd_twapi_start(req, req->update,
                          strcmp(req->update, "Status=completed") == 0)
           != 0)
    {
        req->done = NULL;
        bd_twapi_free(req);
        return NULL;
    }

    return req;
}


void
bd_twapi_cancel(bd_twapi_req_t *req)
{
    bd_twapi_free(req);
}


int
bd_twapi_init(uv_loop_t *loop, const bd_conf_t *conf)
{
    struct curl_slist  *h;

    bd_twapi_loop = loop;
    bd_twapi_conf = conf;

    h = curl_slist_append(NULL, "Accept: application/json");
    if (h == NULL) {
        return -1;
    }

    bd_twapi_headers = h;

    h = curl_slist_append(bd_twapi_headers, "Accept-Charset: utf-8");
    if (h == NULL) {
        curl_slist_free_all(bd_twapi_headers);
        bd_twapi_headers = NULL;
        return -1;
    }

    if (conf->twilio_sid == NULL || conf->twilio_token == NULL) {
        bd_log(BD_LOG_WARN, NULL, "TWILIO_ACCOUNT_SID or TWILIO_AUTH_TOKEN "
               "is not set: call.create, call.end and numbers.list will be "
               "answered 503");
    }

    return 0;
}


void
bd_twapi_shutdown(void)
{
    bd_twapi_req_t  *req;

    if (bd_twapi_headers == NULL) {
        return;
    }

    bd_twapi_closing = 1;

    while (bd_twapi_reqs) {
        req = bd_twapi_reqs;

        if (req->state == BD_TWAPI_ST_UPDATE) {
            req->done = NULL;
            bd_twapi_free(req);
            continue;
        }

        bd_twapi_fail(req, 503, "bridged is shutting down");
    }

    curl_slist_free_all(bd_twapi_headers);
    bd_twapi_headers = NULL;
}
