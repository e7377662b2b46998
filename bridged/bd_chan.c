/*
 * bd_chan.c: the ROUTER socket on the libuv loop.
 *
 * ZMQ_FD is edge-like: it signals that ZMQ_EVENTS changed, not that a
 * message is there.  So the socket is drained until ZMQ_EVENTS shows no
 * POLLIN, from three places: a uv_poll on the descriptor, a uv_prepare
 * that checks again just before the loop would block (a zmq_send made by
 * any callback can swallow the edge of messages already queued), and a
 * uv_idle that continues a drain cut short by the batch limit, so one busy
 * worker cannot starve OpenAI and curl.
 *
 * ZMQ_ROUTER_MANDATORY makes a send to a worker that is gone fail with
 * EHOSTUNREACH instead of vanishing: the calls that worker owned are then
 * ended.  Workers that stay silent are pinged, and any message counts as
 * proof of life.  A worker is live, gone (its calls are due to end, from
 * the loop) or torn down, changed only by bd_chan_peer_state().  Messages
 * go to bd_call.c and bd_twapi.c.  With CURVE
 * on, bd_curve.c makes the socket a CURVE server before it binds.
 */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>
#include <zmq.h>


/* a context option of libzmq 4.3.2 and later that its header lists only
 * under ZMQ_BUILD_DRAFT_API; an older library refuses it, harmlessly */
#ifndef ZMQ_ZERO_COPY_RECV
#define ZMQ_ZERO_COPY_RECV  10
#endif

#include "bd_call.h"
#include "bd_chan.h"
#include "bd_curve.h"
#include "bd_hook.h"
#include "bd_log.h"
#include "bd_stats.h"
#include "bd_twapi.h"
#include "voice_proto.h"


#define BD_CHAN_HWM           20000
#define BD_CHAN_BATCH         256       /* messages per wake-up */
#define BD_CHAN_PEERS_MAX     1024
#define BD_CHAN_HEARTBEAT_MS  5000
#define BD_CHAN_LIVENESS      3         /* pings before a worker is gone */
#define BD_CHAN_FORGET_MS     60000     /* idle peers are forgotten */
#define BD_CHAN_LINGER_MS     200       /* at exit only, see bd_chan_term */

/* the largest frame but a REST reply: a transcript of the longest text */
#define BD_CHAN_BUF_SIZE                                                      \
    (VOICE_PROTO_HEADER_SIZE + 8 * VOICE_PROTO_FIELD_HEADER                   \
     + 2 * VOICE_PROTO_MAX_SID + 64 + VOICE_PROTO_MAX_TEXT)


static uv_loop_t             *bd_chan_loop;
static void                  *bd_chan_ctx;
static void                  *bd_chan_sock;
static uv_poll_t              bd_chan_poll;
static uv_prepare_t           bd_chan_prepare;
static uv_idle_t              bd_chan_idle;
static uv_timer_t             bd_chan_timer;
static zmq_msg_t              bd_chan_rid;
static zmq_msg_t              bd_chan_part;
static int                    bd_chan_open;
static int                    bd_chan_gone;     /* a peer awaits teardown */
static bd_chan_peer_t        *bd_chan_peers;
static unsigned               bd_chan_npeers;
static uint64_t               bd_chan_nonce;
static voice_proto_writer_t   bd_chan_writer;
static uint8_t                bd_chan_buf[BD_CHAN_BUF_SIZE];


static void bd_chan_idle_cb(uv_idle_t *idle);


static bd_chan_peer_t *
bd_chan_peer(const uint8_t *id, size_t len)
{
    size_t           i;
    bd_chan_peer_t  *peer;

    for (peer = bd_chan_peers; peer; peer = peer->next) {
        if (peer->id_len == len && memcmp(peer->id, id, len) == 0) {
            return peer;
        }
    }

    if (bd_chan_npeers == BD_CHAN_PEERS_MAX || len > BD_CHAN_ID_MAX) {
        return NULL;
    }

    peer = calloc(1, sizeof(bd_chan_peer_t));
    if (peer == NULL) {
        return NULL;
    }

    memcpy(peer->id, id, len);
    peer->id_len = len;

    /* nginx's workers name themselves "nginx-PID-N-RANDOM": printed as
     * it is; any other routing id in hex */

    for (i = 0; i < len && id[i] >= 0x21 && id[i] < 0x7f; i++) {
        /* printable */
    }

    if (i == len && len < sizeof(peer->name)) {
        memcpy(peer->name, id, len);
        peer->name[len] = '\0';

    } else {
        for (i = 0; i < len && i < (sizeof(peer->name) - 1) / 2; i++) {
            snprintf(peer->name + 2 * i, 3, "%02x", id[i]);
        }
    }

    peer->next = bd_chan_peers;
    if (bd_chan_peers) {
        bd_chan_peers->prev = peer;
    }

    bd_chan_peers = peer;
    bd_chan_npeers++;

    bd_log(BD_LOG_INFO, NULL, "nginx worker %s connected", peer->name);

    return peer;
}


static void
bd_chan_peer_free(bd_chan_peer_t *peer)
{
    if (peer->prev) {
        peer->prev->next = peer->next;

    } else {
        bd_chan_peers = peer->next;
    }

    if (peer->next) {
        peer->next->prev = peer->prev;
    }

    bd_chan_npeers--;
    free(peer);
}


void
bd_chan_peer_ref(bd_chan_peer_t *peer)
{
    peer->refs++;
}


void
bd_chan_peer_unref(bd_chan_peer_t *peer)
{
    /* peers are freed by the heartbeat once idle, never under a caller */

    peer->refs--;
}


/* the one place a peer's state changes */

static void
bd_chan_peer_state(bd_chan_peer_t *peer, bd_chan_peer_state_e state)
{
    static const char  *names[] = { "live", "gone", "torn down" };

    bd_log(BD_LOG_DEBUG, NULL, "nginx worker %s: %s -> %s", peer->name,
           names[peer->state], names[state]);

    peer->state = state;
}


static void
bd_chan_set_gone(bd_chan_peer_t *peer, const char *why)
{
    if (peer->state != BD_CHAN_PEER_ST_LIVE) {
        return;
    }

    bd_log(BD_LOG_WARN, NULL, "nginx worker %s is gone (%s)", peer->name,
           why);

    bd_chan_peer_state(peer, BD_CHAN_PEER_ST_GONE);
    bd_chan_gone = 1;
}


/* ends what gone workers owned; runs from the loop, outside any handler */

static void
bd_chan_tear_down(void)
{
    bd_chan_peer_t  *peer;

    bd_chan_gone = 0;

    for (peer = bd_chan_peers; peer; peer = peer->next) {
        if (peer->state == BD_CHAN_PEER_ST_GONE) {
            bd_chan_peer_state(peer, BD_CHAN_PEER_ST_TORN_DOWN);
            bd_call_peer_gone(peer);
        }
    }
}


voice_proto_writer_t *
bd_chan_begin(voice_proto_msg_type_e type)
{
    voice_proto_begin(&bd_chan_writer, bd_chan_buf, sizeof(bd_chan_buf),
                      type);

    return &bd_chan_writer;
}


static int
bd_chan_send_frame(bd_chan_peer_t *peer, const uint8_t *frame, size_t len)
{
    if (!bd_chan_open || peer->state != BD_CHAN_PEER_ST_LIVE) {
        return -1;
    }

    /*
     * With ROUTER_MANDATORY the routing-id part is where a full queue
     * (EAGAIN) or an unknown peer (EHOSTUNREACH) shows; once it is
     * accepted, the frame part is too.
     */

    if (zmq_send(bd_chan_sock, peer->id, peer->id_len,
                 ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0
        || zmq_send(bd_chan_sock, frame, len, ZMQ_DONTWAIT) < 0)
    {
        if (errno == EAGAIN) {
            peer->dropped++;
            return 0;
        }

        if (errno == EHOSTUNREACH) {
            bd_chan_set_gone(peer, "it is no longer connected");
            return -1;
        }

        bd_log(BD_LOG_ERROR, NULL, "zmq_send to %s: %s", peer->name,
               zmq_strerror(errno));
        return -1;
    }

    return 1;
}


int
bd_chan_send(bd_chan_peer_t *peer, voice_proto_writer_t *w)
{
    size_t  len;

    len = voice_proto_finish(w);
    if (len == 0) {
        bd_log(BD_LOG_ERROR, NULL, "frame for %s does not fit: not sent",
               peer->name);
        return -1;
    }

    return bd_chan_send_frame(peer, w->start, len);
}


int
bd_chan_reply(bd_chan_peer_t *peer, uint64_t request_id, unsigned status,
    uint32_t flags, const char *call_sid, const char *body, size_t len)
{
    int                    rc;
    size_t                 size, n;
    uint8_t               *buf;
    voice_proto_writer_t   w;

    size = VOICE_PROTO_HEADER_SIZE + 5 * VOICE_PROTO_FIELD_HEADER + 8 + 4
           + 4 + VOICE_PROTO_MAX_SID + len;

    buf = malloc(size);
    if (buf == NULL) {
        return -1;
    }

    voice_proto_begin(&w, buf, size, VOICE_PROTO_MSG_REPLY);
    voice_proto_put_u64(&w, VOICE_PROTO_F_REQUEST_ID, request_id);
    voice_proto_put_u32(&w, VOICE_PROTO_F_STATUS, status);

    if (flags) {
        voice_proto_put_u32(&w, VOICE_PROTO_F_FLAGS, flags);
    }

    if (call_sid != NULL) {
        voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, call_sid);
    }

    voice_proto_put_bytes(&w, VOICE_PROTO_F_BODY, body, len);

    n = voice_proto_finish(&w);

    rc = (n == 0) ? -1 : bd_chan_send_frame(peer, buf, n);

    free(buf);

    return rc;
}


void
bd_chan_error(bd_chan_peer_t *peer, const char *reason,
    const uint8_t *call_sid, size_t sid_len)
{
    voice_proto_writer_t  *w;

    w = bd_chan_begin(VOICE_PROTO_MSG_ERROR);
    voice_proto_put_str(w, VOICE_PROTO_F_REASON, reason);

    if (call_sid != NULL) {
        voice_proto_put_bytes(w, VOICE_PROTO_F_CALL_SID, call_sid, sid_len);
    }

    (void) bd_chan_send(peer, w);
}


/* nginx's voice_metrics asks for bridged's counters (bd_stats.c) */

static void
bd_chan_stats(bd_chan_peer_t *peer, uint64_t request_id)
{
    size_t       len;
    static char  buf[BD_STATS_MAX];

    len = bd_stats_render(buf, sizeof(buf), bd_call_calls());

    (void) bd_chan_reply(peer, request_id, len ? 200 : 500, 0, NULL, buf,
                         len);
}


static void
bd_chan_handle(bd_chan_peer_t *peer, const uint8_t *data, size_t len)
{
    int                     rc;
    const char             *err;
    voice_proto_msg_t       msg;
    voice_proto_writer_t   *w;

    rc = voice_proto_decode(data, len, &msg, &err);

    if (rc == VOICE_PROTO_AGAIN) {
        err = "truncated frame";
        rc = VOICE_PROTO_ERROR;

    } else if (rc == VOICE_PROTO_OK && msg.size != len) {
        err = "bytes after the frame";
        rc = VOICE_PROTO_ERROR;
    }

    if (rc != VOICE_PROTO_OK) {
        bd_log(BD_LOG_INFO, NULL, "bad frame from nginx worker %s: %s",
               peer->name, err);
        bd_chan_error(peer, err, NULL, 0);
        return;
    }

    switch (msg.type) {

    case VOICE_PROTO_MSG_PING:

        /* the pong says how many calls bridged has, and whether it takes
         * more: nginx refuses new calls early while it is full */

        w = bd_chan_begin(VOICE_PROTO_MSG_PONG);
        voice_proto_put_u64(w, VOICE_PROTO_F_REQUEST_ID, msg.request_id);
        voice_proto_put_u32(w, VOICE_PROTO_F_COUNT, bd_call_calls());
        voice_proto_put_u32(w, VOICE_PROTO_F_FLAGS,
                            bd_call_full() ? VOICE_PROTO_FLAG_FULL : 0);
        (void) bd_chan_send(peer, w);
        break;

    case VOICE_PROTO_MSG_PONG:
        break;

    case VOICE_PROTO_MSG_STREAM_START:
    case VOICE_PROTO_MSG_AUDIO_IN:
    case VOICE_PROTO_MSG_MARK_ACK:
    case VOICE_PROTO_MSG_DTMF:
    case VOICE_PROTO_MSG_STREAM_STOP:
    case VOICE_PROTO_MSG_CALL_EVENT:
        bd_call_on_message(peer, &msg);
        break;

    case VOICE_PROTO_MSG_CALL_END:
        bd_call_end_requested(&msg.call_sid);
        bd_twapi_request(peer, &msg);
        break;

    case VOICE_PROTO_MSG_CALL_CREATE:
    case VOICE_PROTO_MSG_NUMBERS_LIST:
        bd_twapi_request(peer, &msg);
        break;

    case VOICE_PROTO_MSG_WEBHOOK:
        bd_hook_request(peer, &msg);
        break;

    case VOICE_PROTO_MSG_STATS:
        bd_chan_stats(peer, msg.request_id);
        break;

    default:
        bd_log(BD_LOG_INFO, NULL, "nginx worker %s sent %s, which only "
               "bridged sends", peer->name, voice_proto_type_name(msg.type));
        bd_chan_error(peer, "unexpected message type", NULL, 0);
        break;
    }
}


/* receives one message; returns 0 when there was none */

static int
bd_chan_recv(void)
{
    int              more;
    bd_chan_peer_t  *peer;

    if (zmq_msg_recv(&bd_chan_rid, bd_chan_sock, ZMQ_DONTWAIT) < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            bd_log(BD_LOG_ERROR, NULL, "zmq_msg_recv: %s",
                   zmq_strerror(errno));
        }

        return 0;
    }

    /* a ROUTER always delivers [routing id][parts...]; take one part */

    if (!zmq_msg_more(&bd_chan_rid)
        || zmq_msg_recv(&bd_chan_part, bd_chan_sock, ZMQ_DONTWAIT) < 0)
    {
        return 1;
    }

    more = zmq_msg_more(&bd_chan_part);

    peer = bd_chan_peer(zmq_msg_data(&bd_chan_rid), zmq_msg_size(&bd_chan_rid));

    if (peer == NULL) {
        bd_log(BD_LOG_WARN, NULL, "too many nginx workers: message dropped");

    } else {
        peer->last_seen = uv_now(bd_chan_loop);
        peer->liveness = BD_CHAN_LIVENESS;

        if (peer->state != BD_CHAN_PEER_ST_LIVE) {
            bd_log(BD_LOG_INFO, NULL, "nginx worker %s is back", peer->name);
            bd_chan_peer_state(peer, BD_CHAN_PEER_ST_LIVE);
        }

        if (more) {
            bd_log(BD_LOG_INFO, NULL,
                   "bad frame from nginx worker %s: more than one part",
                   peer->name);
            bd_chan_error(peer, "more than one message part", NULL, 0);

        } else {
            bd_chan_handle(peer, zmq_msg_data(&bd_chan_part),
                           zmq_msg_size(&bd_chan_part));
        }
    }

    while (more) {
        if (zmq_msg_recv(&bd_chan_part, bd_chan_sock, ZMQ_DONTWAIT) < 0) {
            break;
        }

        more = zmq_msg_more(&bd_chan_part);
    }

    return 1;
}


static int
bd_chan_readable(void)
{
    int     events;
    size_t  len;

    len = sizeof(events);

    if (zmq_getsockopt(bd_chan_sock, ZMQ_EVENTS, &events, &len) != 0) {
        return 0;
    }

    return (events & ZMQ_POLLIN) != 0;
}


static void
bd_chan_drain(void)
{
    unsigned  n;

    if (!bd_chan_open) {
        return;
    }

    for (n = 0; n < BD_CHAN_BATCH; n++) {
        if (!bd_chan_readable() || !bd_chan_recv()) {
            uv_idle_stop(&bd_chan_idle);
            return;
        }

        /* a handler may have closed the channel (shutdown) */

        if (!bd_chan_open) {
            return;
        }
    }

    /* batch used up: come back on the next loop turn without blocking */

    uv_idle_start(&bd_chan_idle, bd_chan_idle_cb);
}


static void
bd_chan_poll_cb(uv_poll_t *poll, int status, int events)
{
    (void) poll;
    (void) events;

    if (status < 0) {
        bd_log(BD_LOG_ERROR, NULL, "polling the ZeroMQ descriptor: %s",
               uv_strerror(status));
    }

    bd_chan_drain();
}


static void
bd_chan_prepare_cb(uv_prepare_t *prepare)
{
    (void) prepare;

    if (bd_chan_gone) {
        bd_chan_tear_down();
    }

    bd_chan_drain();
}


static void
bd_chan_idle_cb(uv_idle_t *idle)
{
    (void) idle;

    bd_chan_drain();
}


static void
bd_chan_heartbeat(uv_timer_t *timer)
{
    uint64_t                now;
    bd_chan_peer_t         *peer, *next;
    voice_proto_writer_t   *w;

    (void) timer;

    now = uv_now(bd_chan_loop);

    for (peer = bd_chan_peers; peer; peer = next) {
        next = peer->next;

        if (peer->dropped) {
            bd_log(BD_LOG_WARN, NULL, "nginx worker %s: %llu frames dropped "
                   "on a full queue in the last %d s", peer->name,
                   (unsigned long long) peer->dropped,
                   BD_CHAN_HEARTBEAT_MS / 1000);
            peer->dropped = 0;
        }

        if (peer->refs == 0) {
            if (now - peer->last_seen >= BD_CHAN_FORGET_MS) {
                bd_chan_peer_free(peer);
            }

            continue;
        }

        if (peer->state != BD_CHAN_PEER_ST_LIVE
            || now - peer->last_seen < BD_CHAN_HEARTBEAT_MS)
        {
            continue;
        }

        if (peer->liveness == 0) {
            bd_chan_set_gone(peer, "it stopped answering");
            continue;
        }

        peer->liveness--;

        w = bd_chan_begin(VOICE_PROTO_MSG_PING);
        voice_proto_put_u64(w, VOICE_PROTO_F_REQUEST_ID, ++bd_chan_nonce);
        (void) bd_chan_send(peer, w);
    }
}


static int
bd_chan_setopt(int option, int value)
{
    return zmq_setsockopt(bd_chan_sock, option, &value, sizeof(value));
}


int
bd_chan_init(uv_loop_t *loop, const char *endpoint)
{
    int       fd, rc;
    size_t    len;
    int64_t   max;

    bd_chan_loop = loop;

    bd_chan_ctx = zmq_ctx_new();
    if (bd_chan_ctx == NULL) {
        bd_log(BD_LOG_ERROR, NULL, "zmq_ctx_new: %s", zmq_strerror(errno));
        return -1;
    }

    /* see ngx_http_voice_bridge.c: small messages, copied, not 8 KiB
     * shared buffers */
    (void) zmq_ctx_set(bd_chan_ctx, ZMQ_ZERO_COPY_RECV, 0);

    bd_chan_sock = zmq_socket(bd_chan_ctx, ZMQ_ROUTER);
    if (bd_chan_sock == NULL) {
        bd_log(BD_LOG_ERROR, NULL, "zmq_socket: %s", zmq_strerror(errno));
        goto failed_ctx;
    }

    /* a peer may not make us buffer more than one frame per message */

    max = VOICE_PROTO_MAX_FRAME;

    if (bd_chan_setopt(ZMQ_ROUTER_MANDATORY, 1) != 0
        || bd_chan_setopt(ZMQ_SNDHWM, BD_CHAN_HWM) != 0
        || bd_chan_setopt(ZMQ_RCVHWM, BD_CHAN_HWM) != 0
        || bd_chan_setopt(ZMQ_LINGER, 0) != 0
        || zmq_setsockopt(bd_chan_sock, ZMQ_MAXMSGSIZE, &max, sizeof(max))
           != 0)
    {
        bd_log(BD_LOG_ERROR, NULL, "zmq_setsockopt: %s", zmq_strerror(errno));
        goto failed_sock;
    }

    if (bd_curve_on() && bd_curve_server(loop, bd_chan_ctx, bd_chan_sock)
                         != 0)
    {
        goto failed_sock;
    }

    if (zmq_bind(bd_chan_sock, endpoint) != 0) {
        bd_log(BD_LOG_ERROR, NULL, "cannot bind %s: %s", endpoint,
               zmq_strerror(errno));
        goto failed_sock;
    }

    len = sizeof(fd);

    if (zmq_getsockopt(bd_chan_sock, ZMQ_FD, &fd, &len) != 0) {
        bd_log(BD_LOG_ERROR, NULL, "ZMQ_FD: %s", zmq_strerror(errno));
        goto failed_sock;
    }

    rc = uv_poll_init(loop, &bd_chan_poll, fd);
    if (rc != 0) {
        bd_log(BD_LOG_ERROR, NULL, "uv_poll_init: %s", uv_strerror(rc));
        goto failed_sock;
    }

    zmq_msg_init(&bd_chan_rid);
    zmq_msg_init(&bd_chan_part);

    uv_poll_start(&bd_chan_poll, UV_READABLE, bd_chan_poll_cb);

    uv_prepare_init(loop, &bd_chan_prepare);
    uv_prepare_start(&bd_chan_prepare, bd_chan_prepare_cb);

    uv_idle_init(loop, &bd_chan_idle);

    uv_timer_init(loop, &bd_chan_timer);
    uv_timer_start(&bd_chan_timer, bd_chan_heartbeat, BD_CHAN_HEARTBEAT_MS,
                   BD_CHAN_HEARTBEAT_MS);

    bd_chan_open = 1;

    bd_log(BD_LOG_INFO, NULL, "listening on %s", endpoint);

    return 0;

failed_sock:

    bd_curve_close();
    bd_curve_term();
    zmq_close(bd_chan_sock);
    bd_chan_sock = NULL;

failed_ctx:

    zmq_ctx_term(bd_chan_ctx);
    bd_chan_ctx = NULL;

    return -1;
}


void
bd_chan_close(void)
{
    if (!bd_chan_open) {
        return;
    }

    bd_chan_open = 0;

    uv_close((uv_handle_t *) &bd_chan_poll, NULL);
    uv_close((uv_handle_t *) &bd_chan_prepare, NULL);
    uv_close((uv_handle_t *) &bd_chan_idle, NULL);
    uv_close((uv_handle_t *) &bd_chan_timer, NULL);

    bd_curve_close();
}


void
bd_chan_term(void)
{
    bd_chan_peer_t  *peer;

    if (bd_chan_sock != NULL) {

        /*
         * The last frames (HANGUP, CALL_DONE of the calls cut by the
         * shutdown) may still sit in ZeroMQ's queue: give them a short,
         * bounded chance to leave.  Everywhere else LINGER stays 0.
         */

        (void) bd_chan_setopt(ZMQ_LINGER, BD_CHAN_LINGER_MS);

        /* its monitor and the ZAP handler first: every socket of the
         * context must close before the context can end */

        bd_curve_term();

        zmq_msg_close(&bd_chan_rid);
        zmq_msg_close(&bd_chan_part);
        zmq_close(bd_chan_sock);
        bd_chan_sock = NULL;
    }

    if (bd_chan_ctx != NULL) {
        zmq_ctx_term(bd_chan_ctx);
        bd_chan_ctx = NULL;
    }

    while (bd_chan_peers) {
        peer = bd_chan_peers;
        bd_chan_peers = peer->next;
        free(peer);
    }

    bd_chan_npeers = 0;
}
