/*
 * bd_oai.c: one OpenAI Realtime WebSocket per call, with libwebsockets as
 * a guest on bridged's libuv loop (LWS_SERVER_OPTION_LIBUV, foreign loop).
 *
 * The shape is lws's minimal ws client: the call owns its connection
 * (userdata and pwsi), every attempt starts from a sul, and one static
 * retry policy gives the backoff, the jitter, the number of attempts and
 * the idle ping / hang-up times.  Writes are one lws_write() each, into
 * LWS_PRE headroom: first the queued client events, then caller audio
 * taken from the call's hold ring and encoded straight into the static
 * write buffer, so audio costs no allocation.  They happen in WRITEABLE,
 * except for the common case of a live call's audio with nothing ahead of
 * it, which goes out as it arrives (bd_oai_flush()).
 * An incoming message that lws hands over whole is parsed in place;
 * one in pieces (lws's buffer is 4 KiB) is reassembled up to a hard cap
 * in a buffer the call keeps, then handed to bd_call.c, which parses it
 * (bd_oai_event.c).  Nothing inbound is
 * queued: an event is acted on as it arrives and what it sends to nginx
 * is bounded by the ZeroMQ queue, so lws_rx_flow_control() has nothing to
 * protect and is not used.
 *
 * TLS: wss:// uses LCCSCF_USE_SSL and nothing else, so the certificate
 * and the host name are always verified, against --ca-file when given.
 *
 * Name lookup: Debian's lws has no async DNS, so it would resolve the host
 * with a blocking getaddrinfo() on the loop.  bridged resolves it with
 * uv_getaddrinfo() (libuv's thread pool), caches the answer for a minute,
 * and gives lws the numeric address; the host name still goes in "host",
 * which lws uses for the Host header, SNI and certificate verification.
 *
 * A connection keeps the call alive (bd_call_t.refs) until lws reports
 * LWS_CALLBACK_WSI_DESTROY, which with libuv comes after the socket's
 * handle has closed; only the current connection of a live call may act
 * on the call.
 */

#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>
#include <libwebsockets.h>

#include "bd_call.h"
#include "bd_conf.h"
#include "bd_form.h"
#include "bd_log.h"
#include "bd_oai.h"
#include "bd_oai_event.h"
#include "bd_ring.h"


#define BD_OAI_RX_MAX        (256 * 1024)    /* one server event */
#define BD_OAI_RX_START      8192
#define BD_OAI_RX_PIECE      4096            /* lws's per-connection buffer */
#define BD_OAI_OUT_MAX       64              /* queued client events */
#define BD_OAI_CLOSE_WAIT_S  3               /* for the peer's Close */
#define BD_OAI_HOST_MAX      300
#define BD_OAI_DNS_TTL_MS    60000

/*
 * lws 4.1.6 built with _DEBUG and libuv closes a connection twice when a
 * callback returns -1 (its "uv repeat test" in lws_service_fd_tsi), and
 * the second call kills the socket before the Close frame queued by
 * lws_close_reason() is sent.  So bridged writes the Close frame itself;
 * 4 is lws's private LWS_WRITE_CLOSE, which the public header leaves out.
 */
#define BD_OAI_WRITE_CLOSE   ((enum lws_write_protocol) 4)

#define BD_OAI_WBUF_SIZE                                                      \
    (LWS_PRE + BD_OAI_EVENT_APPEND_SIZE(BD_OAI_EVENT_APPEND_MAX))


struct bd_oai_msg_s {
    bd_oai_msg_t   *next;
    size_t          len;
    uint8_t         data[];       /* LWS_PRE headroom, then the text */
};


static int bd_oai_callback(struct lws *wsi, enum lws_callback_reasons reason,
    void *user, void *in, size_t len);
static int bd_oai_write(bd_call_t *call, struct lws *wsi);
static int bd_oai_build_path(bd_call_t *call);


static const struct lws_protocols  bd_oai_protocols[] = {
    { "bd-oai", bd_oai_callback, 0, BD_OAI_RX_PIECE, 0, NULL,
      BD_OAI_WBUF_SIZE },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};


/* 5 attempts over about 5 s: enough for a blip, short for a caller */

static const uint32_t  bd_oai_backoff_ms[] = { 500, 1000, 1500, 2000 };

static const lws_retry_bo_t  bd_oai_retry_policy = {
    .retry_ms_table = bd_oai_backoff_ms,
    .retry_ms_table_count = LWS_ARRAY_SIZE(bd_oai_backoff_ms),
    .conceal_count = LWS_ARRAY_SIZE(bd_oai_backoff_ms),
    .secs_since_valid_ping = 20,
    .secs_since_valid_hangup = 45,
    .jitter_percent = 20,
};


static struct lws_context  *bd_oai_ctx;
static const bd_conf_t     *bd_oai_conf;
static void                *bd_oai_foreign[1];
static int                  bd_oai_port;
static int                  bd_oai_tls;
static char                 bd_oai_url[1024];
static char                 bd_oai_address[256];
static char                 bd_oai_host[BD_OAI_HOST_MAX];
static char                 bd_oai_base[1024];
static char                 bd_oai_path[BD_CALL_PATH_MAX];
static char                *bd_oai_auth;
static char                 bd_oai_tls_error[160];
static uv_loop_t           *bd_oai_loop;
static int                  bd_oai_numeric;  /* the host is an IP literal */
static char                 bd_oai_ip[INET6_ADDRSTRLEN];
static uint64_t             bd_oai_ip_at;    /* loop time of the lookup */
static uint8_t              bd_oai_raw[BD_OAI_EVENT_APPEND_MAX];
static uint8_t              bd_oai_wbuf[BD_OAI_WBUF_SIZE];


static void
bd_oai_log_emit(int level, const char *line)
{
    int     l;
    size_t  len;

    len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
        len--;
    }

    /* lws's errors are about one connection, which bridged reports too */

    l = (level & LLL_ERR) ? BD_LOG_WARN
        : (level & LLL_WARN) ? BD_LOG_INFO : BD_LOG_DEBUG;

    /*
     * A refused certificate reaches the connection's CONNECTION_ERROR only
     * as "connect SSL err 1"; the reason is in this line, which lws logs
     * from its verify callback just before.  Keep it for that report.
     */

    if (strncmp(line, "SSL error: ", 11) == 0) {
        snprintf(bd_oai_tls_error, sizeof(bd_oai_tls_error), "TLS: %.*s",
                 (int) (len - 11), line + 11);
        l = BD_LOG_INFO;
    }

    bd_log(l, NULL, "lws: %.*s", (int) len, line);
}


int
bd_oai_has_key(void)
{
    return bd_oai_auth != NULL;
}


/*
 * lws 4.1.6 on a foreign libuv loop re-arms its timer for the suls (and
 * for lws_set_timeout(), which is a sul too) only when lws itself runs.
 * A sul scheduled from a ZeroMQ or curl callback would wait for the next
 * unrelated lws event, so lws is woken up to look at its list again.
 */

static void
bd_oai_kick(void)
{
    lws_cancel_service(bd_oai_ctx);
}


void
bd_oai_timer(lws_sorted_usec_list_t *sul, sul_cb_t cb, uint64_t ms)
{
    lws_sul_schedule(bd_oai_ctx, 0, sul, cb,
                     ms ? (lws_usec_t) ms * LWS_US_PER_MS : 1);
    bd_oai_kick();
}


static void
bd_oai_drop_queue(bd_call_t *call)
{
    bd_oai_msg_t  *m;

    while (call->out_head) {
        m = call->out_head;
        call->out_head = m->next;
        free(m);
    }

    call->out_tail = NULL;
    call->out_count = 0;
}


/* the current connection of a call that still runs */

static int
bd_oai_current(bd_call_t *call, struct lws *wsi)
{
    return call != NULL && wsi == call->wsi
           && call->state != BD_CALL_ST_CLOSED;
}


/* forgets a destroyed connection; 1 if it was one of the call's */

static int
bd_oai_forget(bd_call_t *call, struct lws *wsi)
{
    int  i;

    for (i = 0; i < BD_CALL_WSI_MAX; i++) {
        if (call->wsis[i] == wsi) {
            call->wsis[i] = NULL;

            if (call->wsi == wsi) {
                call->wsi = NULL;
                call->open = 0;
            }

            return 1;
        }
    }

    return 0;
}


static void bd_oai_connect_cb(lws_sorted_usec_list_t *sul);


static void
bd_oai_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    char              why[320];
    bd_call_t        *call;
    struct addrinfo  *ai, *pick;

    call = lws_container_of(req, bd_call_t, dns);
    call->resolving = 0;

    /* IPv4 first: it is reachable from anywhere OpenAI is */

    pick = NULL;

    for (ai = res; status == 0 && ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }

        if (ai->ai_family == AF_INET6 && pick == NULL) {
            pick = ai;
        }
    }

    if (pick != NULL) {
        if (pick->ai_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *) pick->ai_addr, bd_oai_ip,
                        sizeof(bd_oai_ip));

        } else {
            uv_ip6_name((struct sockaddr_in6 *) pick->ai_addr, bd_oai_ip,
                        sizeof(bd_oai_ip));
        }

        bd_oai_ip_at = uv_now(bd_oai_loop);

        bd_log(BD_LOG_DEBUG, call->sid, "%s is %s", bd_oai_address,
               bd_oai_ip);
    }

    uv_freeaddrinfo(res);

    if (call->state != BD_CALL_ST_CLOSED) {
        if (pick != NULL) {
            bd_oai_connect_cb(&call->sul_connect);

        } else {
            snprintf(why, sizeof(why), "cannot resolve %s: %s",
                     bd_oai_address,
                     status ? uv_strerror(status) : "no address");
            bd_call_oai_lost(call, why);
        }
    }

    bd_call_unref(call);
}


/* 1 when the lookup started (the call waits for it), 0 when it failed */

static int
bd_oai_resolve(bd_call_t *call)
{
    int              rc;
    struct addrinfo  hints;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    rc = uv_getaddrinfo(bd_oai_loop, &call->dns, bd_oai_resolved,
                        bd_oai_address, NULL, &hints);
    if (rc != 0) {
        bd_log(BD_LOG_WARN, call->sid, "uv_getaddrinfo: %s", uv_strerror(rc));
        return 0;
    }

    call->resolving = 1;
    call->refs++;

    return 1;
}


static void
bd_oai_connect_cb(lws_sorted_usec_list_t *sul)
{
    int                              i, slot;
    bd_call_t                       *call;
    struct lws                      *wsi;
    struct lws_client_connect_info   ci;

    call = lws_container_of(sul, bd_call_t, sul_connect);

    if (call->state == BD_CALL_ST_CLOSED || call->resolving) {
        return;
    }

    if (!bd_oai_numeric
        && (bd_oai_ip[0] == '\0'
            || uv_now(bd_oai_loop) - bd_oai_ip_at >= BD_OAI_DNS_TTL_MS))
    {
        if (!bd_oai_resolve(call)) {
            bd_call_oai_lost(call, "cannot start a name lookup");
        }

        return;
    }

    slot = -1;

    for (i = 0; i < BD_CALL_WSI_MAX; i++) {
        if (call->wsis[i] == NULL) {
            slot = i;
            break;
        }
    }

    if (slot < 0) {

        /* the previous connections are still being torn down */

        bd_oai_timer(&call->sul_connect, bd_oai_connect_cb, 100);
        return;
    }

    memset(&ci, 0, sizeof(ci));

    ci.context = bd_oai_ctx;
    ci.address = bd_oai_numeric ? bd_oai_address : bd_oai_ip;
    ci.port = bd_oai_port;
    ci.path = bd_oai_path;      /* lws copies it (its client stash) */
    ci.host = bd_oai_host;
    ci.ssl_connection = bd_oai_tls ? LCCSCF_USE_SSL : 0;
    ci.local_protocol_name = bd_oai_protocols[0].name;
    ci.userdata = call;
    ci.pwsi = &call->wsi;
    ci.retry_and_idle_policy = &bd_oai_retry_policy;

    (void) bd_oai_build_path(call);     /* it fitted in bd_oai_connect() */

    call->open = 0;
    call->close_pending = 0;
    call->close_sent = 0;
    call->rx_len = 0;
    call->rx_skip = 0;

    bd_log(BD_LOG_DEBUG, call->sid, "connecting to OpenAI, attempt %u",
           (unsigned) call->retries + 1);

    wsi = lws_client_connect_via_info(&ci);

    if (wsi == NULL) {

        /* failed before any socket was made: no callback comes */

        call->wsi = NULL;
        bd_call_oai_lost(call, "cannot start a connection");
        return;
    }

    call->wsis[slot] = wsi;
    call->refs++;
}


/* the URL path of a call's session, into bd_oai_path: built for each
 * attempt rather than kept in every call */

static int
bd_oai_build_path(bd_call_t *call)
{
    bd_form_t  f;

    bd_form_init(&f, bd_oai_path, sizeof(bd_oai_path));
    bd_form_raw(&f, bd_oai_base, strlen(bd_oai_base));
    bd_form_raw(&f, strchr(bd_oai_base, '?') ? "&" : "?", 1);
    bd_form_raw(&f, "model=", 6);
    bd_form_escape(&f, call->model, strlen(call->model));

    return bd_form_done(&f);
}


int
bd_oai_connect(bd_call_t *call)
{
    if (!bd_oai_build_path(call)) {
        bd_log(BD_LOG_WARN, call->sid, "the OpenAI URL is too long");
        return -1;
    }

    call->retries = 0;
    bd_oai_timer(&call->sul_connect, bd_oai_connect_cb, 0);

    return 0;
}


int
bd_oai_retry(bd_call_t *call)
{
    /* the lost connection's queue belonged to its session */

    bd_oai_drop_queue(call);

    call->wsi = NULL;
    call->open = 0;

    if (lws_retry_sul_schedule(bd_oai_ctx, 0, &call->sul_connect,
                               &bd_oai_retry_policy, bd_oai_connect_cb,
                               &call->retries)
        != 0)
    {
        return 0;
    }

    bd_oai_kick();

    return 1;
}


void
bd_oai_send(bd_call_t *call, const char *json, size_t len)
{
    bd_oai_msg_t  *m;

    if (call->wsi == NULL || !call->open || call->close_pending) {
        bd_log(BD_LOG_DEBUG, call->sid, "no OpenAI connection: client "
               "event dropped");
        return;
    }

    if (call->out_count == BD_OAI_OUT_MAX) {
        bd_log(BD_LOG_WARN, call->sid, "%d client events wait for OpenAI: "
               "one more is dropped", BD_OAI_OUT_MAX);
        return;
    }

    m = malloc(sizeof(bd_oai_msg_t) + LWS_PRE + len);
    if (m == NULL) {
        return;
    }

    m->next = NULL;
    m->len = len;
    memcpy(m->data + LWS_PRE, json, len);

    if (call->out_tail) {
        call->out_tail->next = m;

    } else {
        call->out_head = m;
    }

    call->out_tail = m;
    call->out_count++;

    lws_callback_on_writable(call->wsi);
}


void
bd_oai_want_write(bd_call_t *call)
{
    if (call->wsi != NULL && call->open && !call->close_pending) {
        lws_callback_on_writable(call->wsi);
    }
}




/*
 * Asking lws for WRITEABLE costs, through libuv, two epoll_ctl() per frame
 * (POLLOUT on, then off) and a loop turn: a tenth of bridged's core at 500
 * calls.  A socket with nothing buffered is nearly always writable, so a
 * frame goes out at once instead.  This is safe outside WRITEABLE because
 * of how lws_write() treats a short send: it keeps the rest (its
 * buflist_out) and asks for WRITEABLE itself.  lws_partial_buffered() says
 * when that has happened; then audio waits in the hold ring, bounded, for
 * WRITEABLE as before, so nothing piles up in lws.  Queued client events
 * go first, so they keep going through WRITEABLE.
 */

void
bd_oai_flush(bd_call_t *call)
{
    struct lws  *wsi;

    wsi = call->wsi;

    if (wsi == NULL || !call->open || call->close_pending || call->close_sent
        || call->state != BD_CALL_ST_LIVE || call->out_head != NULL
        || lws_partial_buffered(wsi))
    {
        bd_oai_want_write(call);
        return;
    }

    if (bd_oai_write(call, wsi) != 0) {

        /* as a failed write in WRITEABLE would: the connection is lost */

        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        bd_oai_kick();
    }
}


void
bd_oai_abort(bd_call_t *call)
{
    bd_oai_drop_queue(call);

    if (call->wsi != NULL) {
        lws_set_timeout(call->wsi, PENDING_TIMEOUT_USER_OK,
                        LWS_TO_KILL_ASYNC);
        bd_oai_kick();
    }

    /* whatever it still reports is no longer about this call's session */

    call->wsi = NULL;
    call->open = 0;
}


void
bd_oai_close(bd_call_t *call)
{
    bd_oai_drop_queue(call);

    /* a lookup not started yet is dropped; its callback still comes */

    if (call->resolving) {
        (void) uv_cancel((uv_req_t *) &call->dns);
    }

    if (call->wsi == NULL) {
        return;
    }

    if (!call->open) {
        lws_set_timeout(call->wsi, PENDING_TIMEOUT_USER_OK,
                        LWS_TO_KILL_ASYNC);
        bd_oai_kick();
        call->wsi = NULL;
        return;
    }

    /* a Close frame with 1000, then the peer's Close, each time-bounded */

    call->close_pending = 1;
    lws_set_timeout(call->wsi, PENDING_TIMEOUT_CLOSE_SEND,
                    BD_OAI_CLOSE_WAIT_S);
    lws_callback_on_writable(call->wsi);
    bd_oai_kick();
}


void
bd_oai_release(bd_call_t *call)
{
    bd_oai_drop_queue(call);

    free(call->rx);
    call->rx = NULL;
    call->rx_size = 0;
}


static int
bd_oai_write(bd_call_t *call, struct lws *wsi)
{
    int            rc;
    size_t         n, len;
    uint8_t       *p;
    bd_oai_msg_t  *m;

    if (call->close_pending) {
        call->close_pending = 0;
        call->close_sent = 1;

        p = bd_oai_wbuf + LWS_PRE;
        p[0] = (uint8_t) (LWS_CLOSE_STATUS_NORMAL >> 8);
        p[1] = (uint8_t) (LWS_CLOSE_STATUS_NORMAL & 0xff);

        if (lws_write(wsi, p, 2, BD_OAI_WRITE_CLOSE) < 2) {
            return -1;
        }

        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, BD_OAI_CLOSE_WAIT_S);
        return 0;
    }

    if (!bd_oai_current(call, wsi) || !call->open) {
        return 0;
    }

    m = call->out_head;

    if (m != NULL) {
        call->out_head = m->next;
        if (call->out_head == NULL) {
            call->out_tail = NULL;
        }

        call->out_count--;

        rc = lws_write(wsi, m->data + LWS_PRE, m->len, LWS_WRITE_TEXT);
        len = m->len;
        free(m);

    } else if (call->state == BD_CALL_ST_LIVE && bd_ring_len(&call->hold)) {

        /* held audio goes out coalesced: fewer, larger appends */

        n = bd_ring_read(&call->hold, bd_oai_raw, sizeof(bd_oai_raw));
        len = bd_oai_event_append((char *) bd_oai_wbuf + LWS_PRE,
                                  sizeof(bd_oai_wbuf) - LWS_PRE,
                                  bd_oai_raw, n);
        call->audio_appended += n;

        rc = lws_write(wsi, bd_oai_wbuf + LWS_PRE, len, LWS_WRITE_TEXT);

    } else {
        return 0;
    }

    if (rc < (int) len) {
        bd_log(BD_LOG_WARN, call->sid, "writing to OpenAI failed");
        return -1;
    }

    if (call->out_head != NULL
        || (call->state == BD_CALL_ST_LIVE && bd_ring_len(&call->hold)))
    {
        lws_callback_on_writable(wsi);
    }

    return 0;
}


static void
bd_oai_receive(bd_call_t *call, struct lws *wsi, const void *in, size_t len)
{
    size_t    want;
    uint8_t  *p;

    /* a message whole in one piece, the common case, is parsed where lws
     * has it: no copy, and no buffer of the call's own */

    if (call->rx_len == 0 && !call->rx_skip && lws_is_final_fragment(wsi)) {
        if (lws_frame_is_binary(wsi)) {
            bd_log(BD_LOG_DEBUG, call->sid, "binary message from OpenAI "
                   "ignored");

        } else {
            bd_call_oai_message(call, (const char *) in, len);
        }

        return;
    }

    if (!call->rx_skip && len > BD_OAI_RX_MAX - call->rx_len) {
        bd_log(BD_LOG_WARN, call->sid, "OpenAI message larger than %d "
               "bytes: skipped", BD_OAI_RX_MAX);
        call->rx_skip = 1;
    }

    if (!call->rx_skip && len > 0) {
        if (call->rx_len + len > call->rx_size) {
            want = call->rx_size ? call->rx_size : BD_OAI_RX_START;

            while (want < call->rx_len + len) {
                want *= 2;
            }

            if (want > BD_OAI_RX_MAX) {
                want = BD_OAI_RX_MAX;
            }

            p = realloc(call->rx, want);
            if (p == NULL) {
                call->rx_skip = 1;
                goto final;
            }

            call->rx = p;
            call->rx_size = want;
        }

        memcpy(call->rx + call->rx_len, in, len);
        call->rx_len += len;
    }

final:

    if (!lws_is_final_fragment(wsi)) {
        return;
    }

    if (!call->rx_skip) {
        if (lws_frame_is_binary(wsi)) {
            bd_log(BD_LOG_DEBUG, call->sid, "binary message from OpenAI "
                   "ignored");

        } else {
            bd_call_oai_message(call, (const char *) call->rx, call->rx_len);
        }
    }

    call->rx_len = 0;
    call->rx_skip = 0;
}


static int
bd_oai_callback(struct lws *wsi, enum lws_callback_reasons reason,
    void *user, void *in, size_t len)
{
    char             why[160];
    unsigned         code;
    bd_call_t       *call;
    unsigned char  **p, *end;

    call = user;

    switch (reason) {

    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (call == NULL || bd_oai_auth == NULL) {
            return -1;
        }

        p = (unsigned char **) in;
        end = *p + len;

        if (lws_add_http_header_by_name(wsi,
                (const unsigned char *) "authorization:",
                (const unsigned char *) bd_oai_auth,
                (int) strlen(bd_oai_auth), p, end))
        {
            return -1;
        }

        return 0;

    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!bd_oai_current(call, wsi)) {
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            return 0;
        }

        call->open = 1;
        bd_log(BD_LOG_DEBUG, call->sid, "OpenAI WebSocket open");
        bd_call_oai_open(call);
        return 0;

    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (bd_oai_current(call, wsi)) {
            bd_oai_receive(call, wsi, in, len);
        }

        return 0;

    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (call == NULL || wsi != call->wsi) {
            return 0;
        }

        return bd_oai_write(call, wsi);

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        code = (in != NULL && len >= 2)
               ? (unsigned) ((uint8_t *) in)[0] << 8 | ((uint8_t *) in)[1]
               : 0;

        if (call != NULL && wsi == call->wsi && call->close_sent) {

            /* the answer to our Close: done, without echoing it back */

            return -1;
        }

        bd_log(BD_LOG_INFO, call ? call->sid : NULL,
               "OpenAI closed the connection: %u %.*s", code,
               (int) (len > 2 && len < 128 ? len - 2 : 0),
               (in != NULL && len > 2) ? (char *) in + 2 : "");
        return 0;

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (bd_oai_tls_error[0] != '\0' && in != NULL
            && strncmp(in, "connect SSL", 11) == 0)
        {
            snprintf(why, sizeof(why), "%s", bd_oai_tls_error);

        } else {
            snprintf(why, sizeof(why), "%.*s",
                     (int) (in != NULL ? strnlen(in, len ? len : 128) : 0),
                     in != NULL ? (char *) in : "");
        }

        bd_oai_tls_error[0] = '\0';

        if (bd_oai_current(call, wsi)) {
            call->open = 0;
            bd_call_oai_lost(call, why[0] ? why : "connection failed");
        }

        return 0;

    case LWS_CALLBACK_CLIENT_CLOSED:
        if (bd_oai_current(call, wsi)) {
            call->open = 0;
            bd_call_oai_lost(call, "the connection closed");
        }

        return 0;

    case LWS_CALLBACK_WSI_DESTROY:

        /* lws calls protocols[0] for every wsi: only ours carry a call */

        if (call != NULL && bd_oai_forget(call, wsi)) {
            bd_call_unref(call);
        }

        return 0;

    default:
        break;
    }

    return 0;
}


int
bd_oai_init(uv_loop_t *loop, const bd_conf_t *conf)
{
    int                                n, port;
    size_t                             len;
    const char                        *prot, *address, *path;
    struct in6_addr                    in6;
    struct lws_context_creation_info   info;

    bd_oai_conf = conf;
    bd_oai_loop = loop;

    /* lws_parse_uri() cuts the string it is given */

    snprintf(bd_oai_url, sizeof(bd_oai_url), "%s", conf->openai_url);

    if (lws_parse_uri(bd_oai_url, &prot, &address, &port, &path) != 0
        || address[0] == '\0')
    {
        bd_log(BD_LOG_ERROR, NULL, "OPENAI_REALTIME_URL \"%s\" cannot be "
               "parsed", conf->openai_url);
        return -1;
    }

    bd_oai_tls = (strcmp(prot, "wss") == 0);
    bd_oai_port = port;

    snprintf(bd_oai_address, sizeof(bd_oai_address), "%s", address);

    bd_oai_numeric = inet_pton(AF_INET, address, &in6) == 1
                     || inet_pton(AF_INET6, address, &in6) == 1;
    snprintf(bd_oai_base, sizeof(bd_oai_base), "/%s", path);

    if (port == (bd_oai_tls ? 443 : 80)) {
        snprintf(bd_oai_host, sizeof(bd_oai_host), "%s", address);

    } else {
        snprintf(bd_oai_host, sizeof(bd_oai_host), "%s:%d", address, port);
    }

    if (conf->openai_key != NULL) {
        len = sizeof("Bearer ") + strlen(conf->openai_key);

        bd_oai_auth = malloc(len);
        if (bd_oai_auth == NULL) {
            return -1;
        }

        snprintf(bd_oai_auth, len, "Bearer %s", conf->openai_key);

    } else {
        bd_log(BD_LOG_WARN, NULL, "OPENAI_API_KEY is not set: every call "
               "will be hung up at once");
    }

    /* lws's own lines at a reduced level; headers are never logged */

    n = LLL_ERR | LLL_WARN;
    if (conf->log_level == BD_LOG_DEBUG) {
        n |= LLL_NOTICE;
    }

    lws_set_log_level(n, bd_oai_log_emit);

    bd_oai_foreign[0] = loop;

    memset(&info, 0, sizeof(info));

    info.options = LWS_SERVER_OPTION_LIBUV
                   | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = bd_oai_foreign;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = bd_oai_protocols;
    info.client_ssl_ca_filepath = conf->ca_file;
    info.timeout_secs = 10;
    info.gid = (gid_t) -1;
    info.uid = (uid_t) -1;
    info.pcontext = &bd_oai_ctx;

    bd_oai_ctx = lws_create_context(&info);
    if (bd_oai_ctx == NULL) {
        bd_log(BD_LOG_ERROR, NULL, "lws_create_context failed (is the "
               "libuv plugin, libwebsockets-evlib-uv, installed?)");
        free(bd_oai_auth);
        bd_oai_auth = NULL;
        return -1;
    }

    bd_log(BD_LOG_INFO, NULL, "OpenAI Realtime at %s://%s%s (%s)",
           prot, bd_oai_host, bd_oai_base,
           bd_oai_tls ? "TLS verified" : "no TLS");

    return 0;
}


/*
 * On a foreign loop the context goes in two steps: this call closes the
 * connections and lws's handles from the loop; bd_oai_term(), once the
 * loop has stopped, frees the rest (the vhost and its SSL_CTX).  lws sets
 * bd_oai_ctx to NULL (info.pcontext) when it is all gone.
 */

void
bd_oai_shutdown(void)
{
    if (bd_oai_ctx != NULL) {
        lws_context_destroy(bd_oai_ctx);
    }
}


void
bd_oai_term(void)
{
    if (bd_oai_ctx != NULL) {
        lws_context_destroy(bd_oai_ctx);
    }

    free(bd_oai_auth);
    bd_oai_auth = NULL;
}
