/*
 * bd_hook.c: the post-call webhook's POSTs.
 *
 * nginx keeps the outbox (ngx_http_voice_outbox.c) and decides when a
 * record is sent and how often; bridged only does the HTTP work nginx
 * cannot do without blocking.  One webhook message is one POST of its
 * body, as is, on bd_http.c's loop:
 *
 *     Content-Type: application/json
 *     X-Voice-Signature: t=UNIX_SECONDS,v1=HEX(HMAC-SHA256(secret,
 *                                                    "{t}.{body}"))
 *     X-Voice-Delivery: {callSid}.{made}   (the same on every attempt)
 *
 * signed as the HTTP tools are (bd_http_sign()), and answered with a
 * reply: status the receiver's HTTP status, 0 when none came (refused,
 * timed out, bridged busy), reason in words, body empty.  At most
 * BD_HOOK_RUNS POSTs run at once, each within BD_HOOK_TIMEOUT_MS; more
 * are answered busy at once, and nginx tries them again later.  The
 * secret arrives with each message (bridged keeps no configuration of
 * nginx's) and never reaches the log.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "bd_chan.h"
#include "bd_hook.h"
#include "bd_http.h"
#include "bd_log.h"


typedef struct {
    bd_chan_peer_t      *peer;          /* NULL: the slot is free */
    bd_http_t           *http;
    struct curl_slist   *headers;
    uint64_t             request_id;
    char                 sid[VOICE_PROTO_MAX_SID + 1];
} bd_hook_run_t;


static bd_hook_run_t  bd_hook_runs[BD_HOOK_RUNS];


static void bd_hook_done(bd_http_t *h, void *data);


static void
bd_hook_reply(bd_chan_peer_t *peer, uint64_t request_id, unsigned status,
    const char *reason)
{
    voice_proto_writer_t  *w;

    w = bd_chan_begin(VOICE_PROTO_MSG_REPLY);
    voice_proto_put_u64(w, VOICE_PROTO_F_REQUEST_ID, request_id);
    voice_proto_put_u32(w, VOICE_PROTO_F_STATUS, status);
    voice_proto_put_str(w, VOICE_PROTO_F_REASON, reason);
    voice_proto_put_bytes(w, VOICE_PROTO_F_BODY, "", 0);
    (void) bd_chan_send(peer, w);
}


static void
bd_hook_free_run(bd_hook_run_t *run)
{
    curl_slist_free_all(run->headers);
    bd_chan_peer_unref(run->peer);
    memset(run, 0, sizeof(bd_hook_run_t));
}


void
bd_hook_request(bd_chan_peer_t *peer, voice_proto_msg_t *msg)
{
    char                *url, *secret, *body, sig[128], id[128];
    unsigned             i;
    bd_hook_run_t       *run;
    bd_http_opts_t       opts;
    struct curl_slist   *h;

    run = NULL;

    for (i = 0; i < BD_HOOK_RUNS; i++) {
        if (bd_hook_runs[i].peer == NULL) {
            run = &bd_hook_runs[i];
            break;
        }
    }

    snprintf(id, sizeof(id), "%.*s", (int) msg->call_sid.len,
             (const char *) msg->call_sid.data);

    if (run == NULL) {
        bd_log(BD_LOG_WARN, id, "webhook not sent: %d POSTs already "
               "running", BD_HOOK_RUNS);
        bd_hook_reply(peer, msg->request_id, 0, "bridged is busy");
        return;
    }

    /* the message's views are not NUL-terminated: one copy of each */

    url = strndup((const char *) msg->url.data, msg->url.len);
    secret = strndup((const char *) msg->secret.data, msg->secret.len);
    body = malloc(msg->body.len + 1);

    if (body != NULL) {
        memcpy(body, msg->body.data, msg->body.len);
    }

    if (url == NULL || secret == NULL || body == NULL
        || msg->secret.len == 0
        || bd_http_sign(secret, body, msg->body.len, sig, sizeof(sig)) != 0)
    {
        bd_log(BD_LOG_ERROR, id, "webhook not sent: no memory, or no "
               "secret to sign it with");
        bd_hook_reply(peer, msg->request_id, 0, "bridged could not sign it");
        goto done;
    }

    /* the delivery id: the call SID and when its record was made, so a
     * receiver can tell a retry from a new record */

    snprintf(id, sizeof(id), "X-Voice-Delivery: %.*s",
             (int) msg->name.len, (const char *) msg->name.data);

    run->headers = curl_slist_append(NULL, "Content-Type: application/json");
    h = run->headers ? curl_slist_append(run->headers, sig) : NULL;
    h = (h && msg->name.len) ? curl_slist_append(h, id) : h;

    memset(&opts, 0, sizeof(bd_http_opts_t));
    opts.url = url;
    opts.body = body;
    opts.body_len = msg->body.len;
    opts.headers = run->headers;
    opts.timeout_ms = BD_HOOK_TIMEOUT_MS;
    opts.max_answer = BD_HOOK_ANSWER_MAX;

    snprintf(run->sid, sizeof(run->sid), "%.*s", (int) msg->call_sid.len,
             (const char *) msg->call_sid.data);

    /* curl copies the body (COPYPOSTFIELDS); it keeps the header list */
    run->http = (h != NULL) ? bd_http_start(&opts, bd_hook_done, run) : NULL;

    if (run->http == NULL) {
        bd_log(BD_LOG_ERROR, run->sid, "webhook to %s not sent: bridged "
               "could not start the request", url);
        bd_hook_reply(peer, msg->request_id, 0,
                      "bridged could not start the request");
        curl_slist_free_all(run->headers);
        memset(run, 0, sizeof(bd_hook_run_t));
        goto done;
    }

    run->peer = peer;
    run->request_id = msg->request_id;
    bd_chan_peer_ref(peer);

    bd_log(BD_LOG_INFO, run->sid, "webhook: POST %s (%zu bytes)", url,
           msg->body.len);

done:

    free(url);
    free(body);

    if (secret != NULL) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
}


static void
bd_hook_done(bd_http_t *h, void *data)
{
    char            reason[CURL_ERROR_SIZE + 64];
    unsigned        status;
    bd_hook_run_t  *run;

    run = data;

    if (h->result == CURLE_OK || h->too_big) {
        status = (unsigned) h->status;
        snprintf(reason, sizeof(reason), "HTTP %u", status);

    } else {
        status = 0;
        snprintf(reason, sizeof(reason), "%s", bd_http_strerror(h));
    }

    bd_log(status / 100 == 2 ? BD_LOG_INFO : BD_LOG_WARN, run->sid,
           "webhook: %s", reason);

    bd_hook_reply(run->peer, run->request_id, status, reason);
    bd_hook_free_run(run);
}


void
bd_hook_shutdown(void)
{
    unsigned  i;

    for (i = 0; i < BD_HOOK_RUNS; i++) {
        if (bd_hook_runs[i].peer != NULL) {
            bd_http_cancel(bd_hook_runs[i].http);
            bd_hook_free_run(&bd_hook_runs[i]);
        }
    }
}
