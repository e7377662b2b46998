/*
 * bd_tool.c: running the tools the assistant calls.
 *
 * end_call and transfer_call are the call's own business (bd_call.c ends
 * or redirects it through Twilio's REST API); their output only tells the
 * model it is done, and no response follows, so the model says nothing
 * after its goodbye.  An HTTP tool is a signed POST on bd_http.c:
 *
 *     {"callSid": "CA...", "name": "...", "arguments": {...}}
 *     X-Voice-Signature: t=UNIX_SECONDS,v1=HEX(HMAC-SHA256(secret,
 *                                                    "{t}.{body}"))
 *
 * so the receiver can tell the request is ours and fresh (a replay
 * carries an old t).  A 2xx answer, valid UTF-8 and at most
 * BD_TOOL_ANSWER_MAX bytes, is the output; anything else -- refused,
 * another status, too slow, too large -- becomes an error output the
 * model can talk about, so the caller never waits on silence.  A call
 * runs at most BD_TOOL_RUNS tools at once.
 *
 * Once every tool of a turn has its output and no response is generating,
 * one response.create lets the model speak with the results
 * (docs/protocols.md, Realtime acting §2.3: outputs never start one by
 * themselves).  Each call and its outcome goes to nginx as a record entry
 * in the order of its function_call item.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <curl/curl.h>
#include <uv.h>

#include "bd_call.h"
#include "bd_http.h"
#include "bd_log.h"
#include "bd_oai_event.h"
#include "bd_session.h"
#include "bd_stats.h"
#include "bd_tool.h"


static void bd_tool_http_done(bd_http_t *h, void *data);


static void
bd_tool_free_run(bd_tool_run_t *run)
{
    bd_tool_set_t  *set;

    set = &run->call->tools;

    if (run->state == BD_TOOL_ST_RUNNING) {
        set->running--;
    }

    curl_slist_free_all(run->headers);
    free(run->arguments);
    memset(run, 0, sizeof(bd_tool_run_t));
}


/* the turn's outputs are all in and the model is quiet: let it speak */

static void
bd_tool_maybe_respond(bd_call_t *call)
{
    bd_tool_set_t  *set;

    set = &call->tools;

    /* asked too: a response.create already sent (a key's, one asked
     * again) has not been answered by response.created yet */

    if (!set->want_response || set->running > 0
        || call->conv.response != BD_OAI_EVENT_RESP_IDLE
        || call->state != BD_CALL_ST_LIVE)
    {
        return;
    }

    set->want_response = 0;
    bd_oai_event_respond(&call->conv, NULL);
}


/*
 * The output of one run: to the model (as is), and to the record (cut to
 * BD_TOOL_RECORD_MAX bytes); the run is over.
 */

static void
bd_tool_output(bd_tool_run_t *run, const char *output, int failed,
    int respond)
{
    char        note[BD_TOOL_RECORD_MAX + 128];
    bd_call_t  *call;

    call = run->call;

    if (failed) {
        call->tools.failed++;
    }

    bd_stats_tool(run->name, failed);

    bd_log(failed ? BD_LOG_WARN : BD_LOG_INFO, call->sid,
           "tool %s (%s): %s after %llu ms", run->name, run->call_id,
           failed ? output : "done",
           (unsigned long long) (bd_call_now() - run->started));

    /*
     * A session that took over since the model called the tool does not
     * know the call (a function_call item cannot be given back, and an
     * output without its call is refused): it reads the result as a
     * system item instead.  While no session is up, the result reaches
     * the next one with the history.
     */

    if (run->session != call->sessions) {
        if (call->state == BD_CALL_ST_LIVE) {
            snprintf(note, sizeof(note), "The tool %s that you called "
                     "before the interruption returned: %.*s", run->name,
                     (int) BD_TOOL_RECORD_MAX, output);
            (void) bd_oai_event_system(&call->conv, note);
        }

    } else if (bd_oai_event_tool_output(&call->conv, run->call_id, output,
                                        0)
               != 0)
    {
        bd_log(BD_LOG_WARN, call->sid, "no memory for a tool's output");
    }

    bd_call_tool_record(call, run->order, run->name, run->arguments, output);

    bd_tool_free_run(run);

    if (respond) {
        call->tools.want_response = 1;
        bd_tool_maybe_respond(call);
    }
}


static void
bd_tool_error(bd_tool_run_t *run, const char *fmt, const char *detail)
{
    char   *json, text[512];
    cJSON  *o;

    snprintf(text, sizeof(text), fmt, detail);

    o = cJSON_CreateObject();
    json = NULL;

    if (o != NULL && cJSON_AddStringToObject(o, "error", text) != NULL) {
        json = cJSON_PrintUnformatted(o);
    }

    cJSON_Delete(o);

    bd_tool_output(run, json ? json : "{\"error\":\"the tool failed\"}", 1,
                   1);
    cJSON_free(json);
}


/* RFC 3629: the answer goes into a JSON string, which must be UTF-8 */

static int
bd_tool_utf8(const unsigned char *p, size_t len)
{
    size_t    i, n, k;
    unsigned  c, min;

    for (i = 0; i < len; i += n) {
        c = p[i];

        if (c < 0x80) {
            n = 1;
            continue;
        }

        if ((c & 0xe0) == 0xc0) {
            n = 2; c &= 0x1f; min = 0x80;

        } else if ((c & 0xf0) == 0xe0) {
            n = 3; c &= 0x0f; min = 0x800;

        } else if ((c & 0xf8) == 0xf0) {
            n = 4; c &= 0x07; min = 0x10000;

        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            c = (c << 6) | (p[i + k] & 0x3f);
        }

        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}


static void
bd_tool_http_done(bd_http_t *h, void *data)
{
    char            status[16];
    bd_tool_run_t  *run;

    run = data;
    run->http = NULL;

    if (h->result == CURLE_OPERATION_TIMEDOUT) {
        snprintf(status, sizeof(status), "%u", run->timeout_ms);
        bd_tool_error(run, "the tool did not answer within %s ms", status);
        return;
    }

    if (h->too_big) {
        bd_tool_error(run, "the tool's answer is larger than %s bytes",
                      "16384");
        return;
    }

    if (h->result != CURLE_OK) {
        bd_tool_error(run, "the tool could not be reached: %s",
                      bd_http_strerror(h));
        return;
    }

    if (h->status < 200 || h->status > 299) {
        snprintf(status, sizeof(status), "%ld", h->status);
        bd_tool_error(run, "the tool failed with HTTP status %s", status);
        return;
    }

    if (!bd_tool_utf8((unsigned char *) h->answer, h->answer_len)
        || (h->answer && memchr(h->answer, '\0', h->answer_len)))
    {
        bd_tool_error(run, "the tool's answer is not %s", "UTF-8 text");
        return;
    }

    bd_tool_output(run, h->answer ? h->answer : "", 0, 1);
}


static void
bd_tool_http(bd_tool_run_t *run, const cJSON *tool, cJSON *args)
{
    int                  ok;
    char                *body, sig[128];
    cJSON               *o;
    const char          *secret;
    bd_call_t           *call;
    bd_http_opts_t       opts;
    struct curl_slist   *headers, *h;

    call = run->call;

    o = cJSON_CreateObject();
    ok = o != NULL;
    ok = ok && cJSON_AddStringToObject(o, "callSid", call->sid) != NULL;
    ok = ok && cJSON_AddStringToObject(o, "name", run->name) != NULL;
    ok = ok && cJSON_AddItemReferenceToObject(o, "arguments", args);

    body = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);

    secret = bd_session_str(call->settings, "toolSecret");

    if (body == NULL || secret == NULL
        || bd_http_sign(secret, body, strlen(body), sig, sizeof(sig)) != 0)
    {
        cJSON_free(body);
        bd_tool_error(run, "bridged could not sign the %s request", "tool");
        return;
    }

    headers = curl_slist_append(NULL, "Content-Type: application/json");
    h = headers ? curl_slist_append(headers, sig) : NULL;
    h = h ? curl_slist_append(h, "Accept: application/json") : NULL;

    run->timeout_ms = (unsigned) bd_session_num(tool, "timeoutMs", 5000);

    memset(&opts, 0, sizeof(bd_http_opts_t));
    opts.url = bd_session_str(tool, "url");
    opts.body = body;
    opts.body_len = strlen(body);
    opts.headers = headers;
    opts.timeout_ms = run->timeout_ms;
    opts.max_answer = BD_TOOL_ANSWER_MAX;

    /* curl copies the body; the header list must outlive the transfer
     * only until curl_multi_add_handle() has taken it: curl keeps a
     * pointer, so the list is kept until the run ends */

    run->http = (h != NULL) ? bd_http_start(&opts, bd_tool_http_done, run)
                            : NULL;
    cJSON_free(body);

    if (run->http == NULL) {
        curl_slist_free_all(headers);
        bd_tool_error(run, "bridged could not start the %s request", "tool");
        return;
    }

    run->headers = headers;
    run->state = BD_TOOL_ST_RUNNING;
    call->tools.running++;

    bd_log(BD_LOG_INFO, call->sid, "tool %s (%s): POST %s", run->name,
           run->call_id, opts.url);
}


void
bd_tool_call(bd_call_t *call, uint32_t order, const char *call_id,
    const char *name, const char *arguments)
{
    unsigned        i;
    cJSON          *args;
    const char     *reason;
    const cJSON    *tool, *dest;
    bd_tool_run_t  *run;

    call->tools.calls++;

    run = NULL;

    for (i = 0; i < BD_TOOL_RUNS; i++) {
        if (call->tools.runs[i].call == NULL) {
            run = &call->tools.runs[i];
            break;
        }
    }

    if (run == NULL) {
        bd_log(BD_LOG_WARN, call->sid, "tool %s refused: %d already "
               "running", name, BD_TOOL_RUNS);

        (void) bd_oai_event_tool_output(&call->conv, call_id,
                   "{\"error\":\"too many tools are running; try again "
                   "in a moment\"}", 0);
        call->tools.failed++;
        bd_stats_tool(name, 1);
        call->tools.want_response = 1;
        bd_tool_maybe_respond(call);
        return;
    }

    run->call = call;
    run->order = order;
    run->session = call->sessions;
    run->started = bd_call_now();
    snprintf(run->call_id, sizeof(run->call_id), "%s", call_id);
    snprintf(run->name, sizeof(run->name), "%s", name);

    args = cJSON_Parse(arguments);

    if (!cJSON_IsObject(args)) {
        cJSON_Delete(args);
        run->arguments = strdup("{}");
        bd_tool_error(run, "the arguments of %s are not a JSON object",
                      run->name);
        return;
    }

    /* the record keeps them as the model sent them, re-printed compact */
    run->arguments = cJSON_PrintUnformatted(args);

    if (run->arguments == NULL) {
        cJSON_Delete(args);
        run->arguments = strdup("{}");
        bd_tool_error(run, "bridged is out of %s", "memory");
        return;
    }

    if (strcmp(name, BD_SESSION_TOOL_END) == 0
        && bd_session_end_call(call->settings))
    {
        reason = bd_session_str(args, "reason");

        bd_tool_output(run, "{\"ok\":true,\"note\":\"The call ends once "
                       "your goodbye has been heard. Say nothing more.\"}",
                       0, 0);
        bd_call_end(call, "assistant", reason ? reason : "end_call");
        cJSON_Delete(args);
        return;
    }

    if (strcmp(name, BD_SESSION_TOOL_TRANSFER) == 0
        && cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                                  call->settings, "transfer")) > 0)
    {
        dest = bd_session_transfer(call->settings,
                                   bd_session_str(args, "destination")
                                   ? bd_session_str(args, "destination")
                                   : "");

        if (dest == NULL) {
            bd_tool_error(run, "there is no destination named like that; "
                          "the destinations are the ones in the %s "
                          "tool's enum", BD_SESSION_TOOL_TRANSFER);
            cJSON_Delete(args);
            return;
        }

        /* running until Twilio answers: no response meanwhile */

        run->state = BD_TOOL_ST_RUNNING;
        call->tools.running++;

        bd_call_transfer(call, run, bd_session_str(dest, "name"),
                         bd_session_str(dest, "to"));
        cJSON_Delete(args);
        return;
    }

    tool = bd_session_tool(call->settings, name);

    if (tool == NULL) {
        bd_tool_error(run, "there is no tool named %s", run->name);
        cJSON_Delete(args);
        return;
    }

    bd_tool_http(run, tool, args);
    cJSON_Delete(args);
}


void
bd_tool_transfer_done(bd_tool_run_t *run, const char *output, int failed)
{
    /* a transfer that went through leaves the model nothing to say */

    bd_tool_output(run, output, failed, failed);
}


void
bd_tool_response_done(bd_call_t *call)
{
    bd_tool_maybe_respond(call);
}


void
bd_tool_cancel(bd_tool_set_t *set)
{
    unsigned        i;
    bd_tool_run_t  *run;

    for (i = 0; i < BD_TOOL_RUNS; i++) {
        run = &set->runs[i];

        if (run->call == NULL) {
            continue;
        }

        bd_http_cancel(run->http);
        bd_tool_free_run(run);
    }

    set->want_response = 0;
}
