/*
 * bd_oai.c: an OpenAI Realtime WebSocket, with libwebsockets as a guest on
 * bridged's libuv loop (LWS_SERVER_OPTION_LIBUV, foreign loop).
 *
 * Each connection is a bd_oai_conn_t of its own with its own states
 * (bd_oai_set_state() is their one transition): a call holds its current
 * connection and lets it go when it ends or is replaced, so a lost
 * session is followed by a new connection, not by the old one coming
 * back.  The connection is the wsi's userdata; it is freed when neither
 * its owner, nor lws (LWS_CALLBACK_WSI_DESTROY, which with libuv comes
 * after the socket's handle has closed), nor a name lookup refers to it.
 * One static retry policy gives each wsi its idle ping and hang-up times
 * and the owner its backoff between sessions (bd_oai_backoff_ms()).
 *
 * Writes are one lws_write() each, into LWS_PRE headroom: first the
 * queued client events, then caller audio taken from the owner's hold
 * ring and encoded straight into the static write buffer, so audio costs
 * no allocation.  They happen in WRITEABLE, except for the common case of
 * a live call's audio with nothing ahead of it, which goes out as it
 * arrives (bd_oai_flush()).  An incoming message that lws hands over
 * whole is parsed in place; one in pieces (lws's buffer is 4 KiB) is
 * reassembled up to a hard cap in a buffer the connection keeps, then
 * handed to the owner, which parses it (bd_oai_event.c).  Nothing inbound
 * is queued: an event is acted on as it arrives and what it sends to
 * nginx is bounded by the ZeroMQ queue, so lws_rx_flow_control() has
 * nothing to protect and is not used.
 *
 * TLS: wss:// uses LCCSCF_USE_SSL and nothing else, so the certificate
 * and the host name are always verified, against --ca-file when given.
 *
 * Name lookup: Debian's lws has no async DNS, so it would resolve the host
 * with a blocking getaddrinfo() on the loop.  bridged resolves it with
 * uv_getaddrinfo() (libuv's thread pool), caches the answer for a minute,
 * and gives lws the numeric address; the host name still goes in "host",
 * which lws uses for the Host header, SNI and certificate verification.

 */

#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>
#include <libwebsockets.h>

#include "bd_conf.h"
#include "bd_form.h"
#include "bd_log.h"
#include "bd_oai.h"
#include "bd_oai_event.h"
#include "bd_ring.h"


#define BD_OAI_RX_MAX        (256 * 1024)    /* one server event */
#define BD_OAI_RX_START      8192
#define BD_OAI_RX_PIECE      4096            /* lws's per-connection buffer */
#define BD_OAI_OUT_MAX       160             /* queued client events: a
                                                resumed conversation's
                                                history fits */
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
static int bd_oai_write(bd_oai_conn_t *c, struct lws *wsi);
static void bd_oai_connect(bd_oai_conn_t *c);


static const struct lws_protocols  bd_oai_protocols[] = {
    { "bd-oai", bd_oai_callback, 0, BD_OAI_RX_PIECE, 0, NULL,
      BD_OAI_WBUF_SIZE },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};


/*
 * A lost session is tried again 5 times over about 8 s: enough for a
 * blip or a restart on OpenAI's side, short for a caller, who hears a
 * pause meanwhile.  The jitter spreads the calls of one outage.  The
 * ping and hang-up times apply to each connection: OpenAI pings about
 * every 20 s, so a connection silent for 45 s is dead.
 */

static const uint32_t  bd_oai_backoff[] = { 250, 750, 1500, 2500, 3000 };

static const lws_retry_bo_t  bd_oai_retry_policy = {
    .retry_ms_table = bd_oai_backoff,
    .retry_ms_table_count = LWS_ARRAY_SIZE(bd_oai_backoff),
    .conceal_count = LWS_ARRAY_SIZE(bd_oai_backoff),
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


uint32_t
bd_oai_backoff_ms(uint16_t *tries)
{
    char  conceal;

    if (*tries >= LWS_ARRAY_SIZE(bd_oai_backoff)) {
        return 0;
    }

    return lws_retry_get_delay_ms(bd_oai_ctx, &bd_oai_retry_policy, tries,
                                  &conceal);
}


static void
bd_oai_drop_queue(bd_oai_conn_t *c)
{
    bd_oai_msg_t  *m;

    while (c->out_head) {
        m = c->out_head;
        c->out_head = m->next;
        free(m);
    }

    c->out_tail = NULL;
    c->out_count = 0;
}


static void
bd_oai_unref(bd_oai_conn_t *c)
{
    if (--c->refs > 0) {
        return;
    }

    bd_oai_drop_queue(c);
    free(c->rx);
    free(c);
}


/* the one place a connection changes state */

static void
bd_oai_set_state(bd_oai_conn_t *c, bd_oai_state_e state)
{
    static const char  *names[] = {
        "resolving", "connecting", "open", "close due", "closing", "closed"
    };

    if (c->state == state) {
        return;
    }

    bd_log(BD_LOG_DEBUG, c->sid, "OpenAI connection: %s -> %s",
           names[c->state], names[state]);

    c->state = state;

    if (state == BD_OAI_ST_CLOSED) {
        bd_oai_drop_queue(c);
    }
}


/* the connection ended without the owner asking: told once */

static void
bd_oai_lost(bd_oai_conn_t *c, const char *why, int fatal)
{
    if (c->state == BD_OAI_ST_CLOSED) {
        return;
    }

    bd_oai_set_state(c, BD_OAI_ST_CLOSED);

    if (c->owner != NULL) {
        c->ops->lost(c->owner, why, fatal);
    }
}


static void
bd_oai_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    char              why[320];
    bd_oai_conn_t    *c;
    struct addrinfo  *ai, *pick;

    c = lws_container_of(req, bd_oai_conn_t, dns);
    c->resolving = 0;

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

        bd_log(BD_LOG_DEBUG, c->sid, "%s is %s", bd_oai_address, bd_oai_ip);
    }

    uv_freeaddrinfo(res);

    if (c->state == BD_OAI_ST_RESOLVING) {
        if (pick != NULL) {
            bd_oai_connect(c);

        } else {
            snprintf(why, sizeof(why), "cannot resolve %s: %s",
                     bd_oai_address,
                     status ? uv_strerror(status) : "no address");
            bd_oai_lost(c, why, 0);
        }
    }

    bd_oai_unref(c);
}


/* 1 when the lookup started (the connection waits for it), 0 if not */

static int
bd_oai_resolve(bd_oai_conn_t *c)
{
    int              rc;
    struct addrinfo  hints;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    rc = uv_getaddrinfo(bd_oai_loop, &c->dns, bd_oai_resolved,
                        bd_oai_address, NULL, &hints);
    if (rc != 0) {
        bd_log(BD_LOG_WARN, c->sid, "uv_getaddrinfo: %s", uv_strerror(rc));
        return 0;
    }

    c->resolving = 1;
    c->refs++;

    return 1;
}


/* the upgrade itself, once the address is known */

static void
bd_oai_connect(bd_oai_conn_t *c)
{
    struct lws                      *wsi;
    struct lws_client_connect_info   ci;

    memset(&ci, 0, sizeof(ci));

    ci.context = bd_oai_ctx;
    ci.address = bd_oai_numeric ? bd_oai_address : bd_oai_ip;
    ci.port = bd_oai_port;
    ci.path = c->path;          /* lws copies it (its client stash) */
    ci.host = bd_oai_host;
    ci.ssl_connection = bd_oai_tls ? LCCSCF_USE_SSL : 0;
    ci.local_protocol_name = bd_oai_protocols[0].name;
    ci.userdata = c;
    ci.retry_and_idle_policy = &bd_oai_retry_policy;

    bd_oai_set_state(c, BD_OAI_ST_CONNECTING);

    /* the wsi's reference, taken first: lws may report on it at once */

    c->refs++;

    wsi = lws_client_connect_via_info(&ci);

    if (wsi != NULL) {
        c->wsi = wsi;

    } else if (c->wsi == NULL) {

        /* failed before any socket was made: no callback comes */

        c->refs--;
        bd_oai_lost(c, "cannot start a connection", 0);
    }
}


bd_oai_conn_t *
bd_oai_open(const bd_oai_ops_t *ops, void *owner, const char *sid,
    const char *model)
{
    bd_form_t       f;
    bd_oai_conn_t  *c;

    c = calloc(1, sizeof(bd_oai_conn_t));
    if (c == NULL) {
        bd_log(BD_LOG_WARN, sid, "no memory for an OpenAI connection");
        return NULL;
    }

    c->ops = ops;
    c->owner = owner;
    c->refs = 1;
    snprintf(c->sid, sizeof(c->sid), "%s", sid);

    bd_form_init(&f, c->path, sizeof(c->path));
    bd_form_raw(&f, bd_oai_base, strlen(bd_oai_base));
    bd_form_raw(&f, strchr(bd_oai_base, '?') ? "&" : "?", 1);
    bd_form_raw(&f, "model=", 6);
    bd_form_escape(&f, model, strlen(model));

    if (!bd_form_done(&f)) {
        bd_log(BD_LOG_WARN, sid, "the OpenAI URL is too long");
        free(c);
        return NULL;
    }

    bd_oai_kick();

    if (bd_oai_numeric
        || (bd_oai_ip[0] != '\0'
            && uv_now(bd_oai_loop) - bd_oai_ip_at < BD_OAI_DNS_TTL_MS))
    {
        bd_oai_connect(c);
        return c;
    }

    bd_oai_set_state(c, BD_OAI_ST_RESOLVING);

    if (!bd_oai_resolve(c)) {
        bd_oai_lost(c, "cannot start a name lookup", 0);
    }

    return c;
}


void
bd_oai_release(bd_oai_conn_t *c, int abort)
{
    if (c == NULL) {
        return;
    }

    c->owner = NULL;
    c->audio = NULL;
    bd_oai_drop_queue(c);

    /* a lookup not started yet is dropped; its callback still comes */

    if (c->resolving) {
        (void) uv_cancel((uv_req_t *) &c->dns);
    }

    if (c->state == BD_OAI_ST_OPEN && !abort) {

        /* a Close frame with 1000, then the peer's Close, time-bounded */

        bd_oai_set_state(c, BD_OAI_ST_CLOSE_DUE);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND,
                        BD_OAI_CLOSE_WAIT_S);
        lws_callback_on_writable(c->wsi);
        bd_oai_kick();

    } else if (c->state != BD_OAI_ST_CLOSE_DUE
               && c->state != BD_OAI_ST_CLOSING)
    {
        if (c->wsi != NULL) {
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
                            LWS_TO_KILL_ASYNC);
            bd_oai_kick();
        }

        bd_oai_set_state(c, BD_OAI_ST_CLOSED);
    }

    bd_oai_unref(c);
}


void
bd_oai_send(bd_oai_conn_t *c, const char *json, size_t len)
{
    bd_oai_msg_t  *m;

    if (c == NULL || c->state != BD_OAI_ST_OPEN) {
        bd_log(BD_LOG_DEBUG, c ? c->sid : NULL, "no OpenAI connection: "
               "client event dropped");
        return;
    }

    if (c->out_count == BD_OAI_OUT_MAX) {
        bd_log(BD_LOG_WARN, c->sid, "%d client events wait for OpenAI: "
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

    if (c->out_tail) {
        c->out_tail->next = m;

    } else {
        c->out_head = m;
    }

    c->out_tail = m;
    c->out_count++;

    lws_callback_on_writable(c->wsi);
}


void
bd_oai_want_write(bd_oai_conn_t *c)
{
    if (c != NULL && c->state == BD_OAI_ST_OPEN) {
        lws_callback_on_writable(c->wsi);
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
bd_oai_flush(bd_oai_conn_t *c)
{
    if (c == NULL || c->state != BD_OAI_ST_OPEN) {
        return;
    }

    if (c->audio == NULL || c->out_head != NULL
        || lws_partial_buffered(c->wsi))
    {
        lws_callback_on_writable(c->wsi);
        return;
    }

    if (bd_oai_write(c, c->wsi) != 0) {

        /* as a failed write in WRITEABLE would: the connection is lost */

        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        bd_oai_kick();
    }
}


static int
bd_oai_write(bd_oai_conn_t *c, struct lws *wsi)
{
    int            rc;
    size_t         n, len;
    uint8_t       *p;
    bd_oai_msg_t  *m;

    if (c->state == BD_OAI_ST_CLOSE_DUE) {
        bd_oai_set_state(c, BD_OAI_ST_CLOSING);

        p = bd_oai_wbuf + LWS_PRE;
        p[0] = (uint8_t) (LWS_CLOSE_STATUS_NORMAL >> 8);
        p[1] = (uint8_t) (LWS_CLOSE_STATUS_NORMAL & 0xff);

        if (lws_write(wsi, p, 2, BD_OAI_WRITE_CLOSE) < 2) {
            return -1;
        }

        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, BD_OAI_CLOSE_WAIT_S);
        return 0;
    }

    if (c->state != BD_OAI_ST_OPEN) {
        return 0;
    }

    m = c->out_head;

    if (m != NULL) {
        c->out_head = m->next;
        if (c->out_head == NULL) {
            c->out_tail = NULL;
        }

        c->out_count--;

        rc = lws_write(wsi, m->data + LWS_PRE, m->len, LWS_WRITE_TEXT);
        len = m->len;
        free(m);

    } else if (c->audio != NULL && bd_ring_len(c->audio)) {

        /* held audio goes out coalesced: fewer, larger appends */

        n = bd_ring_read(c->audio, bd_oai_raw, sizeof(bd_oai_raw));
        len = bd_oai_event_append((char *) bd_oai_wbuf + LWS_PRE,
                                  sizeof(bd_oai_wbuf) - LWS_PRE,
                                  bd_oai_raw, n);
        c->appended += n;

        rc = lws_write(wsi, bd_oai_wbuf + LWS_PRE, len, LWS_WRITE_TEXT);

    } else {
        return 0;
    }

    if (rc < (int) len) {
        bd_log(BD_LOG_WARN, c->sid, "writing to OpenAI failed");
        return -1;
    }

    if (c->out_head != NULL || (c->audio != NULL && bd_ring_len(c->audio))) {
        lws_callback_on_writable(wsi);
    }

    return 0;
}


static void
bd_oai_deliver(bd_oai_conn_t *c, struct lws *wsi, const char *json,
    size_t len)
{
    if (lws_frame_is_binary(wsi)) {
        bd_log(BD_LOG_DEBUG, c->sid, "binary message from OpenAI ignored");
        return;
    }

    /* an event's effects may release the connection: owner goes NULL */

    if (c->owner != NULL && c->state == BD_OAI_ST_OPEN) {
        c->ops->message(c->owner, json, len);
    }
}


static void
bd_oai_receive(bd_oai_conn_t *c, struct lws *wsi, const void *in, size_t len)
{
    size_t    want;
    uint8_t  *p;

    /* a message whole in one piece, the common case, is parsed where lws
     * has it: no copy, and no buffer of the connection's own */

    if (c->rx_len == 0 && !c->rx_skip && lws_is_final_fragment(wsi)) {
        bd_oai_deliver(c, wsi, in, len);
        return;
    }

    if (!c->rx_skip && len > BD_OAI_RX_MAX - c->rx_len) {
        bd_log(BD_LOG_WARN, c->sid, "OpenAI message larger than %d "
               "bytes: skipped", BD_OAI_RX_MAX);
        c->rx_skip = 1;
    }

    if (!c->rx_skip && len > 0) {
        if (c->rx_len + len > c->rx_size) {
            want = c->rx_size ? c->rx_size : BD_OAI_RX_START;

            while (want < c->rx_len + len) {
                want *= 2;
            }

            if (want > BD_OAI_RX_MAX) {
                want = BD_OAI_RX_MAX;
            }

            p = realloc(c->rx, want);
            if (p == NULL) {
                c->rx_skip = 1;
                goto final;
            }

            c->rx = p;
            c->rx_size = want;
        }

        memcpy(c->rx + c->rx_len, in, len);
        c->rx_len += len;
    }

final:

    if (!lws_is_final_fragment(wsi)) {
        return;
    }

    if (!c->rx_skip) {
        bd_oai_deliver(c, wsi, (const char *) c->rx, c->rx_len);
    }

    c->rx_len = 0;
    c->rx_skip = 0;
}


/*
 * Whether trying again would fail the same way.  An upgrade refused with
 * 408, 429 or 5xx is OpenAI being busy; any other refusal (401, 403, 404)
 * is about the key, the account or the URL.  A failed certificate check
 * stays failed.  Refused or reset connections are transient.
 */

static int
bd_oai_refusal_fatal(struct lws *wsi, int tls)
{
    unsigned  status;

    if (tls) {
        return 1;
    }

    status = lws_http_client_http_response(wsi);

    return status != 0 && status != 101 && status != 408 && status != 429
           && status < 500;
}


static int
bd_oai_callback(struct lws *wsi, enum lws_callback_reasons reason,
    void *user, void *in, size_t len)
{
    int              tls, fatal;
    char             why[320];
    unsigned         code, status;
    bd_oai_conn_t   *c;
    unsigned char  **p, *end;

    c = user;

    /*
     * lws calls protocols[0] for the context's and the vhost's own events
     * too, where user is not a connection (and not always NULL): only the
     * events of a client connection carry ours.
     */

    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
    case LWS_CALLBACK_CLIENT_RECEIVE:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (c == NULL) {
            return 0;
        }
        break;

    default:
        return 0;
    }

    /* lws may report on the connection before connect_via_info returns;
     * pwsi is not used, since lws clears it before WSI_DESTROY */

    if (c->wsi == NULL && reason != LWS_CALLBACK_WSI_DESTROY) {
        c->wsi = wsi;
    }

    switch (reason) {

    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (bd_oai_auth == NULL) {
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
        if (c->state != BD_OAI_ST_CONNECTING || c->owner == NULL) {
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            return 0;
        }

        bd_oai_set_state(c, BD_OAI_ST_OPEN);
        c->ops->open(c->owner);
        return 0;

    case LWS_CALLBACK_CLIENT_RECEIVE:
        bd_oai_receive(c, wsi, in, len);
        return 0;

    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return bd_oai_write(c, wsi);

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        code = (in != NULL && len >= 2)
               ? (unsigned) ((uint8_t *) in)[0] << 8 | ((uint8_t *) in)[1]
               : 0;

        if (c->state == BD_OAI_ST_CLOSING) {

            /* the answer to our Close: done, without echoing it back */

            return -1;
        }

        c->close_code = code;
        snprintf(c->close_reason, sizeof(c->close_reason), "%.*s",
                 (int) (len > 2 ? len - 2 : 0),
                 (in != NULL && len > 2) ? (char *) in + 2 : "");

        bd_log(BD_LOG_INFO, c->sid, "OpenAI closed the connection: %u %s",
               code, c->close_reason);
        return 0;

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        tls = bd_oai_tls_error[0] != '\0' && in != NULL
              && strncmp(in, "connect SSL", 11) == 0;
        status = lws_http_client_http_response(wsi);

        if (tls) {
            snprintf(why, sizeof(why), "%s", bd_oai_tls_error);

        } else if (status != 0 && status != 101) {
            snprintf(why, sizeof(why), "the upgrade was refused with %u",
                     status);

        } else {
            snprintf(why, sizeof(why), "%.*s",
                     (int) (in != NULL ? strnlen(in, len ? len : 128) : 0),
                     in != NULL ? (char *) in : "");
        }

        bd_oai_tls_error[0] = '\0';

        bd_oai_lost(c, why[0] ? why : "connection failed",
                    bd_oai_refusal_fatal(wsi, tls));
        return 0;

    case LWS_CALLBACK_CLIENT_CLOSED:

        /* a 3xxx or 4xxx close is OpenAI refusing the session itself */

        fatal = c->close_code >= 3000 && c->close_code <= 4999;

        if (c->close_code != 0) {
            snprintf(why, sizeof(why), "closed by OpenAI with %u%s%s",
                     c->close_code, c->close_reason[0] ? " " : "",
                     c->close_reason);

        } else {
            snprintf(why, sizeof(why), "the connection closed");
        }

        bd_oai_lost(c, why, fatal);
        return 0;

    case LWS_CALLBACK_WSI_DESTROY:

        /* with libuv this comes after the socket's handle has closed */

        if (c->wsi == wsi) {
            c->wsi = NULL;
            bd_oai_lost(c, "the connection was destroyed", 0);
            bd_oai_unref(c);
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
