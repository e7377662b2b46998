/*
 * bd_loop.c: main() of bridged: one process, one thread, one libuv loop.
 *
 * Everything runs on the loop: the ZeroMQ channel (bd_chan.c, with CURVE
 * and its ZAP handler from bd_curve.c when keys are given), curl for
 * Twilio (bd_twapi.c) and the post-call webhook (bd_hook.c), lws for
 * OpenAI (bd_oai.c) and the calls (bd_call.c).  SIGINT and SIGTERM come
 * in through uv_signal: the calls are hung up, the Twilio requests
 * answered, lws and curl let go of their handles, and once no handle is
 * left uv_run() returns and bridged exits with 0.
 *
 * bridged's files, by what they do (each bd_X.c has its bd_X.h):
 *
 *   the process      bd_loop.c (main, signals), bd_conf.c (options),
 *                    bd_log.c (log lines), bd_stats.c (its counters, for
 *                    nginx's voice_metrics), Makefile
 *   nginx's side     bd_chan.c (the ROUTER socket: proto/ messages),
 *                    bd_curve.c (CURVE keys and the ZAP handler)
 *   calls            bd_call.c (the calls and their state machine),
 *                    bd_session.c (a stream's settings -> session.update),
 *                    bd_history.c (a call's conversation, bounded),
 *                    bd_ring.c (audio held while OpenAI is away),
 *                    bd_tool.c (the tools the assistant calls)
 *   OpenAI           bd_oai.c (the Realtime WebSocket, on lws),
 *                    bd_oai_event.c (its server events -> actions)
 *   Twilio and HTTP  bd_http.c (curl on the loop), bd_twapi.c (Twilio
 *                    REST requests), bd_twapi_json.c (its JSON, the
 *                    replies), bd_retry.c (when to try again),
 *                    bd_hook.c (the post-call webhook's POSTs)
 *   leaf code        bd_form.c (percent-encoding); base64 and the JSON
 *                    tokenizer are common/'s (voice_b64.c, voice_json.c),
 *                    shared with nginx
 *
 * The protocols they speak are summarized in docs/protocols.md (Twilio,
 * OpenAI) and docs/proto.md (nginx <-> bridged).
 */

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <uv.h>
#include <libwebsockets.h>

#include "bd_call.h"
#include "bd_chan.h"
#include "bd_conf.h"
#include "bd_curve.h"
#include "bd_hook.h"
#include "bd_log.h"
#include "bd_oai.h"
#include "bd_http.h"
#include "bd_twapi.h"
#include "voice_curve.h"


/* a shutdown that has not finished by then is forced */
#define BD_LOOP_SHUTDOWN_MS  5000


static uv_loop_t     bd_loop;
static uv_signal_t   bd_loop_sigint;
static uv_signal_t   bd_loop_sigterm;
static uv_timer_t    bd_loop_watchdog;
static bd_conf_t     bd_loop_conf;
static int           bd_loop_stopping;
static int           bd_loop_forced;


static void
bd_loop_watchdog_cb(uv_timer_t *timer)
{
    (void) timer;

    bd_log(BD_LOG_ERROR, NULL, "shutdown is taking longer than %d ms: "
           "stopping the loop", BD_LOOP_SHUTDOWN_MS);

    bd_loop_forced = 1;
    uv_stop(&bd_loop);
}


static void bd_loop_stop_rest(void);


static void
bd_loop_stop(uv_signal_t *signal, int signum)
{
    (void) signal;

    if (bd_loop_stopping) {
        bd_log(BD_LOG_INFO, NULL, "%s: already shutting down",
               signum == SIGINT ? "SIGINT" : "SIGTERM");
        return;
    }

    bd_loop_stopping = 1;

    bd_log(BD_LOG_INFO, NULL, "%s: shutting down",
           signum == SIGINT ? "SIGINT" : "SIGTERM");

    /*
     * The handlers stay, so that a second signal cannot kill bridged
     * halfway through, but they no longer keep the loop running.
     */

    uv_unref((uv_handle_t *) &bd_loop_sigint);
    uv_unref((uv_handle_t *) &bd_loop_sigterm);

    /* unreferenced: it must not keep uv_run() going by itself */

    uv_timer_init(&bd_loop, &bd_loop_watchdog);
    uv_timer_start(&bd_loop_watchdog, bd_loop_watchdog_cb,
                   BD_LOOP_SHUTDOWN_MS, 0);
    uv_unref((uv_handle_t *) &bd_loop_watchdog);

    /* the calls end through Twilio first: that needs everything else */

    bd_call_shutdown(bd_loop_stop_rest);
}


/* the calls are gone; the order matters: requests still talk to nginx */

static void
bd_loop_stop_rest(void)
{
    bd_twapi_shutdown();
    bd_hook_shutdown();
    bd_http_shutdown();
    bd_oai_shutdown();
    bd_chan_close();
}


int
main(int argc, char **argv)
{
    int   rc;
    char  err[512];

    rc = bd_conf_load(&bd_loop_conf, argc, argv, err, sizeof(err));

    if (rc == BD_CONF_EXIT) {
        return 0;
    }

    if (rc != BD_CONF_OK) {
        fprintf(stderr, "bridged: %s (see --help)\n", err);
        return 2;
    }

    if (bd_loop_conf.curve_keygen != NULL) {
        return bd_curve_keygen(bd_loop_conf.curve_keygen);
    }

    if (bd_curve_load(&bd_loop_conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "bridged: %s\n", err);
        return 2;
    }

    bd_log_level = bd_loop_conf.log_level;

    if (bd_loop_conf.log != NULL
        && bd_log_target(bd_loop_conf.log, err, sizeof(err)) != 0)
    {
        fprintf(stderr, "bridged: --log: %s\n", err);
        return 2;
    }
    bd_log_secret(bd_loop_conf.twilio_token);
    bd_log_secret(bd_loop_conf.openai_key);

    /*
     * SCHED_BATCH, before any thread exists so that ZeroMQ's I/O thread
     * and libuv's pool inherit it: a batch thread does not preempt the
     * running one when it wakes, so a message handed between bridged's
     * loop and its ZeroMQ thread waits until the other yields, and goes
     * with everything else that arrived meanwhile.  Under load that halves
     * the context switches and costs a sixth of the CPU per call; the
     * added latency is bounded by one scheduler slice and was not
     * measurable (docs/performance.md).
     */

    if (bd_loop_conf.sched_batch) {
        struct sched_param  sp;

        memset(&sp, 0, sizeof(sp));

        if (sched_setscheduler(0, SCHED_BATCH, &sp) != 0) {
            bd_log(BD_LOG_WARN, NULL, "SCHED_BATCH: %s (running with the "
                   "default policy)", strerror(errno));
        }
    }

    /*
     * Not refused: the network between the hosts may be protected on its
     * own (WireGuard, IPsec), and an upgrade must not stop a bridged that
     * ran the day before.  But it is said at every start.
     */

    if (!bd_curve_on()
        && !voice_curve_endpoint_local(bd_loop_conf.listen,
                                       strlen(bd_loop_conf.listen)))
    {
        bd_log(BD_LOG_WARN, NULL, "listening on %s without CURVE: the calls' "
               "settings, tool secrets and conversations cross the network "
               "in clear, and any host that reaches it may connect "
               "(--curve-secret-key, docs/operations.md)",
               bd_loop_conf.listen);
    }

    /* a peer that closes its socket must not kill the daemon */

    signal(SIGPIPE, SIG_IGN);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        bd_log(BD_LOG_ERROR, NULL, "curl_global_init failed");
        return 1;
    }

    rc = uv_loop_init(&bd_loop);
    if (rc != 0) {
        bd_log(BD_LOG_ERROR, NULL, "uv_loop_init: %s", uv_strerror(rc));
        goto failed_curl;
    }

    if (bd_chan_init(&bd_loop, bd_loop_conf.listen) != 0) {
        goto failed_loop;
    }

    if (bd_http_init(&bd_loop, &bd_loop_conf) != 0
        || bd_twapi_init(&bd_loop, &bd_loop_conf) != 0)
    {
        bd_http_shutdown();
        goto failed_chan;
    }

    if (bd_oai_init(&bd_loop, &bd_loop_conf) != 0) {
        goto failed_twapi;
    }

    bd_call_init(&bd_loop, &bd_loop_conf);

    uv_signal_init(&bd_loop, &bd_loop_sigint);
    uv_signal_start(&bd_loop_sigint, bd_loop_stop, SIGINT);
    uv_signal_init(&bd_loop, &bd_loop_sigterm);
    uv_signal_start(&bd_loop_sigterm, bd_loop_stop, SIGTERM);

    bd_log(BD_LOG_INFO, NULL, "bridged started: Twilio at %s, model %s, "
           "CA %s, Twilio timeout %u ms, final wait %u ms, audio buffer "
           "%u ms", bd_loop_conf.twilio_api_url, bd_loop_conf.openai_model,
           bd_loop_conf.ca_file ? bd_loop_conf.ca_file : "system store",
           bd_loop_conf.twilio_timeout_ms, bd_loop_conf.final_wait_ms,
           bd_loop_conf.audio_buffer_ms);

    uv_run(&bd_loop, UV_RUN_DEFAULT);

    /*
     * Closing the handles restores the default action: a signal from now
     * on would kill bridged in its last milliseconds, so ignore them.
     */

    uv_close((uv_handle_t *) &bd_loop_sigint, NULL);
    uv_close((uv_handle_t *) &bd_loop_sigterm, NULL);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);

    if (bd_loop_stopping) {
        uv_close((uv_handle_t *) &bd_loop_watchdog, NULL);
    }

    bd_oai_term();

    uv_run(&bd_loop, UV_RUN_DEFAULT);

    bd_chan_term();

    rc = uv_loop_close(&bd_loop);
    if (rc != 0 && !bd_loop_forced) {
        bd_log(BD_LOG_ERROR, NULL, "uv_loop_close: %s", uv_strerror(rc));
        bd_loop_forced = 1;
    }

    curl_global_cleanup();

    bd_log(BD_LOG_INFO, NULL, "bridged stopped");

    return bd_loop_forced ? 1 : 0;

failed_twapi:

    bd_oai_term();
    bd_twapi_shutdown();
    bd_http_shutdown();

failed_chan:

    bd_chan_close();
    uv_run(&bd_loop, UV_RUN_DEFAULT);
    bd_chan_term();

failed_loop:

    (void) uv_loop_close(&bd_loop);

failed_curl:

    curl_global_cleanup();

    return 1;
}
