/*
 * ngx_http_voice_call_status.c: the answer of Twilio's call status
 * callback (voice_call_status, /call-status).
 *
 * Calls placed through /api/call ask Twilio for every progress event
 * (voice_status_callback_url; bridged adds StatusCallback and
 * StatusCallbackEvent to Calls.json).  Each arrives here signature checked
 * (ngx_http_voice_webhook.c), as a form or in Twilio's JSON variant.  A
 * call that never reaches the media stream -- busy, no answer, failed,
 * canceled -- would otherwise leave no trace on our side; here its
 * outcome goes to the error log and every status is counted per worker
 * for voice_status, and its slot under voice_max_calls is let go
 * (ngx_http_voice_zone.c).  The answer is 204: Twilio ignores the body.
 *
 * The same URL takes the verdict of Twilio's asynchronous answering-
 * machine detection (AnsweredBy, no CallStatus): it goes to the bridged
 * that owns the call -- the same on every worker and every host -- which
 * lets the assistant talk, leave a voicemail or hang up.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"


static ngx_int_t ngx_http_voice_call_status_amd(ngx_http_request_t *r,
    ngx_http_voice_body_param_t *params, size_t n,
    const ngx_http_voice_body_param_t *sid);
static void ngx_http_voice_call_status_record(ngx_http_request_t *r,
    ngx_http_voice_body_param_t *params, size_t n,
    const ngx_http_voice_body_param_t *sid);


/* the CallStatus values of docs/protocols.md, Twilio REST 8.2, in the
 * order voice_status lists them, the outcomes of a call never answered
 * last; "answered" is what some Twilio clones send for in-progress */
static ngx_str_t  ngx_http_voice_call_statuses[NGX_HTTP_VOICE_CALL_STATUSES]
    = {
    ngx_string("queued"),
    ngx_string("initiated"),
    ngx_string("ringing"),
    ngx_string("in-progress"),
    ngx_string("answered"),
    ngx_string("completed"),
    ngx_string("busy"),
    ngx_string("no-answer"),
    ngx_string("failed"),
    ngx_string("canceled"),
};

#define NGX_HTTP_VOICE_CALL_STATUS_UNANSWERED  6   /* busy and after */


/* for voice_status */

ngx_str_t *
ngx_http_voice_call_status_name(ngx_uint_t i)
{
    return &ngx_http_voice_call_statuses[i];
}


/* Twilio's AnsweredBy values (docs/protocols.md, call control §3.2) */
static ngx_str_t  ngx_http_voice_call_status_answered_by[] = {
    ngx_string("human"),
    ngx_string("machine_start"),
    ngx_string("machine_end_beep"),
    ngx_string("machine_end_silence"),
    ngx_string("machine_end_other"),
    ngx_string("fax"),
    ngx_string("unknown"),
    ngx_null_string
};


static ngx_int_t
ngx_http_voice_call_status_amd(ngx_http_request_t *r,
    ngx_http_voice_body_param_t *params, size_t n,
    const ngx_http_voice_body_param_t *sid)
{
    size_t                              len;
    ngx_str_t                          *v;
    voice_proto_writer_t                wr;
    ngx_http_voice_peer_t              *peer;
    ngx_http_voice_worker_t            *w;
    const ngx_http_voice_body_param_t  *by;

    by = ngx_http_voice_body_form_get(params, n, "AnsweredBy");

    for (v = ngx_http_voice_call_status_answered_by; v->len; v++) {
        if (v->len == by->value_len
            && ngx_strncmp(v->data, by->value, v->len) == 0)
        {
            break;
        }
    }

    if (v->len == 0) {
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "AnsweredBy is unknown");
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "voice: call %*s answered by: %V", sid->value_len,
                  sid->value, v);

    w = ngx_http_voice_worker();
    peer = ngx_http_voice_call_peer_of(sid->value, sid->value_len);

    if (w == NULL || peer == NULL) {
        return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "bridged is not reachable");
    }

    voice_proto_begin(&wr, w->frame, w->frame_size,
                      VOICE_PROTO_MSG_CALL_EVENT);
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_CALL_SID, sid->value,
                          sid->value_len);
    voice_proto_put_str(&wr, VOICE_PROTO_F_NAME, "amd");
    voice_proto_put_bytes(&wr, VOICE_PROTO_F_TEXT, v->data, v->len);
    len = voice_proto_finish(&wr);

    /* Twilio retries nothing: a verdict bridged cannot take is logged */

    if (len == 0 || ngx_http_voice_bridge_send(peer, w->frame, len) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "voice: call %*s: the answering-machine verdict "
                      "could not reach bridged", sid->value_len, sid->value);
        return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "bridged is not reachable");
    }

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


ngx_int_t
ngx_http_voice_call_status_answer(ngx_http_request_t *r,
    ngx_http_voice_body_param_t *params, size_t n)
{
    ngx_int_t                           secs;
    ngx_str_t                          *st;
    ngx_uint_t                          i, level;
    const ngx_http_voice_body_param_t  *sid, *status, *to, *duration;

    sid = ngx_http_voice_body_form_get(params, n, "CallSid");
    status = ngx_http_voice_body_form_get(params, n, "CallStatus");

    if (sid == NULL
        || !ngx_http_voice_body_valid_call_sid(sid->value, sid->value_len))
    {
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "CallSid is missing or is not a "
                                         "call SID");
    }

    if (status == NULL
        && ngx_http_voice_body_form_get(params, n, "AnsweredBy") != NULL)
    {
        return ngx_http_voice_call_status_amd(r, params, n, sid);
    }

    for (i = 0; status && i < NGX_HTTP_VOICE_CALL_STATUSES; i++) {
        st = &ngx_http_voice_call_statuses[i];

        if (st->len == status->value_len
            && ngx_strncmp(st->data, status->value, st->len) == 0)
        {
            break;
        }
    }

    if (status == NULL || i == NGX_HTTP_VOICE_CALL_STATUSES) {
        return ngx_http_voice_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "CallStatus is missing or unknown");
    }

    ngx_http_voice_metrics_call_status(i);

    /* a call over before its stream came no longer counts against
     * voice_max_calls; one with a stream counts until its record is
     * written */
    if (i >= NGX_HTTP_VOICE_CALL_STATUS_COMPLETED) {
        ngx_http_voice_zone_call_over(sid->value);
    }

    /* only well-formed values reach the log */
    to = ngx_http_voice_body_form_get(params, n, "To");
    if (to && !ngx_http_voice_body_valid_e164(to->value, to->value_len)) {
        to = NULL;
    }

    duration = ngx_http_voice_body_form_get(params, n, "CallDuration");
    if (duration
        && (duration->value_len == 0 || duration->value_len > 9
            || ngx_atoi((u_char *) duration->value, duration->value_len)
               == NGX_ERROR))
    {
        duration = NULL;
    }

    /* for the call's record, whichever worker writes it; one that never
     * connected gets it here */

    secs = duration ? ngx_atoi((u_char *) duration->value,
                               duration->value_len)
                    : -1;

    if (ngx_http_voice_outcome_report(sid->value, i,
                                  i >= NGX_HTTP_VOICE_CALL_STATUS_COMPLETED,
                                  secs))
    {
        ngx_http_voice_call_status_record(r, params, n, sid);
    }

    /* a call that ended unanswered is worth a notice: nothing else on
     * our side ever hears of it */
    level = (i >= NGX_HTTP_VOICE_CALL_STATUS_UNANSWERED) ? NGX_LOG_NOTICE
                                                         : NGX_LOG_INFO;

    ngx_log_error(level, r->connection->log, 0,
                  "voice: call %*s to %*s: %V%s%*s%s",
                  sid->value_len, sid->value,
                  to ? to->value_len : 1, to ? to->value : (u_char *) "?",
                  &ngx_http_voice_call_statuses[i],
                  duration ? " after " : "",
                  duration ? duration->value_len : 0,
                  duration ? duration->value : (u_char *) "",
                  duration ? " s" : "");

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


/*
 * The record of a call that never connected: the other party is To of a
 * call we placed, From of one that came in; ours the other.
 */

static void
ngx_http_voice_call_status_record(ngx_http_request_t *r,
    ngx_http_voice_body_param_t *params, size_t n,
    const ngx_http_voice_body_param_t *sid)
{
    ngx_str_t                           phone, ours;
    ngx_uint_t                          outbound;
    const ngx_http_voice_body_param_t  *dir, *from, *to;
    ngx_http_voice_loc_conf_t          *vlcf;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    dir = ngx_http_voice_body_form_get(params, n, "Direction");
    from = ngx_http_voice_body_form_get(params, n, "From");
    to = ngx_http_voice_body_form_get(params, n, "To");

    outbound = (dir != NULL && dir->value_len >= 8
                && ngx_strncmp(dir->value, "outbound", 8) == 0);

    ngx_str_null(&phone);
    ngx_str_null(&ours);

    if (to && ngx_http_voice_body_valid_e164(to->value, to->value_len)) {
        (outbound ? &phone : &ours)->data = (u_char *) to->value;
        (outbound ? &phone : &ours)->len = to->value_len;
    }

    if (from
        && ngx_http_voice_body_valid_e164(from->value, from->value_len))
    {
        (outbound ? &ours : &phone)->data = (u_char *) from->value;
        (outbound ? &ours : &phone)->len = from->value_len;
    }

    if (ngx_http_voice_call_unconnected(vlcf, sid->value, &phone, &ours,
                                        outbound)
        == NGX_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "voice: call %*s never connected, and its record "
                      "cannot be made", sid->value_len, sid->value);
    }
}
