/*
 * ngx_http_voice_bridge.c: the ZeroMQ channel from an nginx worker to
 * bridged, inside nginx's event loop.
 *
 * Each worker holds one DEALER socket per configured bridged endpoint
 * (voice_bridge).  The socket's ZMQ_FD is wrapped in an nginx connection
 * with only its read event registered.  That descriptor signals edges, not
 * levels, so the read handler drains until ZMQ_EVENTS has no POLLIN (a
 * bounded batch per wake-up, then it re-posts itself), and every send
 * re-reads ZMQ_EVENTS because a send can swallow the edge of messages
 * already queued inbound.  Nothing here ever blocks: every send is
 * ZMQ_DONTWAIT, and EAGAIN is backpressure (audio is dropped and counted,
 * a REST request answers 503).
 *
 * Incoming frames (proto/) are decoded and handed on by type: pings and
 * pongs to ngx_http_voice_peer.c (which bridged instances are alive, and
 * which are full), replies to whoever waits for their request id (the
 * webhook's outbox, a voice_metrics scrape, a REST request), and a call's
 * messages to the call registry (ngx_http_voice_call.c), which gives
 * them to its media session or its record.  A socket monitor tells at
 * once when a connection drops, and why a handshake failed.
 *
 * The worker's state is this file's: the ZeroMQ context, one peer per
 * endpoint, the request ids, and the one buffer every proto frame to
 * bridged is written in (a frame is sent as soon as it is written, so
 * one serves every caller).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <zmq.h>


/* a context option of libzmq 4.3.2 and later that its header lists only
 * under ZMQ_BUILD_DRAFT_API; an older library refuses it, harmlessly */
#ifndef ZMQ_ZERO_COPY_RECV
#define ZMQ_ZERO_COPY_RECV  10
#endif

#include "ngx_http_voice_module.h"


#define NGX_HTTP_VOICE_BRIDGE_BATCH      256
#define NGX_HTTP_VOICE_BRIDGE_FRAME      (512 * 1024)  /* settings and
                                                         history fit */


static void ngx_http_voice_bridge_read_handler(ngx_event_t *rev);
static void ngx_http_voice_bridge_dispatch(ngx_http_voice_peer_t *peer,
    u_char *data, size_t len);
static ngx_int_t ngx_http_voice_bridge_monitor(ngx_cycle_t *cycle,
    ngx_http_voice_worker_t *w, ngx_http_voice_peer_t *peer);
static void ngx_http_voice_bridge_monitor_handler(ngx_event_t *rev);
static void ngx_http_voice_bridge_refused(ngx_http_voice_peer_t *peer,
    uint16_t event, uint32_t value);
static ngx_int_t ngx_http_voice_bridge_watch(ngx_cycle_t *cycle,
    ngx_http_voice_peer_t *peer, void *sock, ngx_event_handler_pt handler,
    ngx_connection_t **cp);
static void ngx_http_voice_bridge_release(ngx_connection_t **c);


ngx_int_t
ngx_http_voice_bridge_init_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf)
{
    int                       hwm, zero, one;
    u_char                    id[64], *p;
    ngx_str_t                *ep;
    ngx_uint_t                i;
    ngx_http_voice_peer_t    *peer;
    ngx_http_voice_worker_t  *w;

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_http_voice_worker_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    /* one frame buffer serves every caller: each frame is sent as soon
     * as it is written */
    w->frame_size = NGX_HTTP_VOICE_BRIDGE_FRAME;
    w->frame = ngx_palloc(cycle->pool, w->frame_size);
    if (w->frame == NULL) {
        return NGX_ERROR;
    }

    /* request ids start from a random point: a reply that outlives a
     * worker's restart must not match a new request */
    w->next_request_id = ((uint64_t) ngx_random() << 32) | ngx_random();

    w->zmq_ctx = zmq_ctx_new();
    if (w->zmq_ctx == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "zmq_ctx_new() failed");
        return NGX_ERROR;
    }

    (void) zmq_ctx_set(w->zmq_ctx, ZMQ_IO_THREADS, 1);

    /*
     * ZeroMQ's I/O thread as SCHED_BATCH: woken by the worker's
     * zmq_send(), it no longer preempts the worker for each message but
     * runs when the worker waits for events, and sends everything queued
     * by then in one go.  Under load that halved the context switches of
     * the core nginx and bridged share and cost an eighth less CPU per
     * call (docs/performance.md).  The worker itself keeps its policy:
     * that is the operator's choice (worker_priority).
     */

    (void) zmq_ctx_set(w->zmq_ctx, ZMQ_THREAD_SCHED_POLICY, SCHED_BATCH);

    /*
     * Received messages copied into their own small buffers.  By default
     * libzmq decodes into 8 KiB buffers shared by the messages they hold,
     * and a buffer still referenced when the next read comes is replaced
     * by a fresh malloc(): with a message per 20 ms frame, that was 9 KB
     * of allocation per message in bridged (valgrind's heap summary).
     * Small copies come from malloc's per-thread cache instead.
     */

    (void) zmq_ctx_set(w->zmq_ctx, ZMQ_ZERO_COPY_RECV, 0);

    w->npeers = vmcf->endpoints.nelts;
    w->peers = ngx_pcalloc(cycle->pool,
                           w->npeers * sizeof(ngx_http_voice_peer_t));
    if (w->peers == NULL) {
        return NGX_ERROR;
    }

    ep = vmcf->endpoints.elts;

    for (i = 0; i < w->npeers; i++) {
        peer = &w->peers[i];
        peer->index = i;

        /* up once it has spoken: until then calls and requests are
         * refused at once (503) instead of failing later */
        peer->state = NGX_HTTP_VOICE_PEER_ST_NEW;

        peer->endpoint.len = ep[i].len;
        peer->endpoint.data = ngx_pnalloc(cycle->pool, ep[i].len + 1);
        if (peer->endpoint.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(peer->endpoint.data, ep[i].data, ep[i].len);
        *p = '\0';

        peer->sock = zmq_socket(w->zmq_ctx, ZMQ_DEALER);
        if (peer->sock == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "zmq_socket() failed: %s", zmq_strerror(errno));
            return NGX_ERROR;
        }

        /* the routing id names this worker to bridged: a new worker after
         * a reload gets a new one, and bridged keeps each call with the
         * worker that owns its WebSocket */
        p = ngx_sprintf(id, "nginx-%P-%ui-%08xD", ngx_pid, i,
                        (uint32_t) ngx_random());

        hwm = (int) vmcf->hwm;
        zero = 0;
        one = 1;

        /* with ZMQ_IMMEDIATE a send fails at once while bridged is not
         * connected, so a REST request answers 503 instead of waiting */
        if (zmq_setsockopt(peer->sock, ZMQ_ROUTING_ID, id, p - id) != 0
            || zmq_setsockopt(peer->sock, ZMQ_SNDHWM, &hwm, sizeof(int)) != 0
            || zmq_setsockopt(peer->sock, ZMQ_RCVHWM, &hwm, sizeof(int)) != 0
            || zmq_setsockopt(peer->sock, ZMQ_LINGER, &zero, sizeof(int))
               != 0
            || zmq_setsockopt(peer->sock, ZMQ_IMMEDIATE, &one, sizeof(int))
               != 0)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "zmq_setsockopt() failed: %s",
                          zmq_strerror(errno));
            return NGX_ERROR;
        }

        if (ngx_http_voice_curve_socket(cycle, vmcf, peer) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ngx_http_voice_bridge_monitor(cycle, w, peer) != NGX_OK) {
            return NGX_ERROR;
        }

        if (zmq_connect(peer->sock, (char *) peer->endpoint.data) != 0) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "zmq_connect(\"%V\") failed: %s", &peer->endpoint,
                          zmq_strerror(errno));
            return NGX_ERROR;
        }

        if (ngx_http_voice_bridge_watch(cycle, peer, peer->sock,
                                        ngx_http_voice_bridge_read_handler,
                                        &peer->conn)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                       "voice bridge: connecting to \"%V\" as \"%s\"",
                       &peer->endpoint, id);
    }

    vmcf->worker = w;

    ngx_http_voice_peer_start(cycle, vmcf);

    return NGX_OK;
}


void
ngx_http_voice_bridge_exit_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf)
{
    ngx_uint_t                i;
    ngx_http_voice_peer_t    *peer;
    ngx_http_voice_worker_t  *w;

    w = vmcf->worker;

    ngx_http_voice_peer_stop();

    for (i = 0; i < w->npeers; i++) {
        peer = &w->peers[i];

        ngx_http_voice_bridge_release(&peer->conn);
        ngx_http_voice_bridge_release(&peer->mon_conn);

        if (peer->sock) {
            (void) zmq_socket_monitor(peer->sock, NULL, 0);
            (void) zmq_close(peer->sock);
            peer->sock = NULL;
        }

        if (peer->mon) {
            (void) zmq_close(peer->mon);
            peer->mon = NULL;
        }
    }

    (void) zmq_ctx_term(w->zmq_ctx);

    vmcf->worker = NULL;
}


static void
ngx_http_voice_bridge_read_handler(ngx_event_t *rev)
{
    int                     events, more;
    size_t                  len;
    ngx_uint_t              n;
    zmq_msg_t               msg;
    ngx_connection_t       *c;
    ngx_http_voice_peer_t  *peer;

    c = rev->data;
    peer = c->data;

    if (c->close || ngx_http_voice_worker() == NULL) {
        /* a shutting-down worker: nothing to drain any more; the socket
         * is closed in exit_process */
        return;
    }

    for (n = 0; n < NGX_HTTP_VOICE_BRIDGE_BATCH; n++) {

        len = sizeof(int);
        if (zmq_getsockopt(peer->sock, ZMQ_EVENTS, &events, &len) != 0) {
            ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                          "zmq_getsockopt(ZMQ_EVENTS) failed: %s",
                          zmq_strerror(errno));
            return;
        }

        if (!(events & ZMQ_POLLIN)) {
            return;
        }

        zmq_msg_init(&msg);

        if (zmq_msg_recv(&msg, peer->sock, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close(&msg);

            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }

            ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                          "zmq_msg_recv() failed: %s", zmq_strerror(errno));
            return;
        }

        more = zmq_msg_more(&msg);

        /* any message is proof of life */
        peer->missed = 0;
        peer->last_seen = ngx_current_msec;

        if (peer->state != NGX_HTTP_VOICE_PEER_ST_UP) {
            ngx_http_voice_peer_up(peer);
        }

        ngx_http_voice_bridge_dispatch(peer, zmq_msg_data(&msg),
                                       zmq_msg_size(&msg));
        zmq_msg_close(&msg);

        /* one frame per message is the protocol: drop any extra parts */
        while (more) {
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, peer->sock, ZMQ_DONTWAIT) == -1) {
                zmq_msg_close(&msg);
                break;
            }
            more = zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }
    }

    /* the batch is full: let other events run, then continue */
    if (!rev->posted) {
        ngx_post_event(rev, &ngx_posted_events);
    }
}


static void
ngx_http_voice_bridge_dispatch(ngx_http_voice_peer_t *peer, u_char *data,
    size_t len)
{
    const char         *err;
    voice_proto_msg_t   msg;

    if (voice_proto_decode(data, len, &msg, &err) != VOICE_PROTO_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "voice bridge: bad frame from \"%V\": %s",
                      &peer->endpoint,
                      voice_proto_decode(data, len, &msg, &err)
                      == VOICE_PROTO_AGAIN ? "truncated" : err);
        return;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "voice bridge: %s from \"%V\", %uz bytes",
                   voice_proto_type_name(msg.type), &peer->endpoint, len);

    switch (msg.type) {

    case VOICE_PROTO_MSG_PING:
    case VOICE_PROTO_MSG_PONG:
        ngx_http_voice_peer_on_heartbeat(peer, &msg);
        return;

    case VOICE_PROTO_MSG_REPLY:
        if (ngx_http_voice_outbox_reply(&msg) != NGX_OK
            && !ngx_http_voice_metrics_reply(peer, &msg))
        {
            ngx_http_voice_rest_reply(&msg);
        }

        return;

    case VOICE_PROTO_MSG_ERROR:
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "voice bridge: \"%V\" reports an error%s%*s: %*s",
                      &peer->endpoint,
                      msg.call_sid.len ? " for call " : "",
                      msg.call_sid.len, msg.call_sid.data,
                      msg.reason.len, msg.reason.data);
        return;

    default:
        ngx_http_voice_call_on_bridge(peer, &msg);
        return;
    }
}


ngx_int_t
ngx_http_voice_bridge_send(ngx_http_voice_peer_t *peer, const u_char *frame,
    size_t len)
{
    if (zmq_send(peer->sock, frame, len, ZMQ_DONTWAIT) == -1) {

        if (errno == EAGAIN || errno == EINTR) {
            peer->dropped++;
            return NGX_AGAIN;
        }

        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "zmq_send() to \"%V\" failed: %s", &peer->endpoint,
                      zmq_strerror(errno));
        return NGX_ERROR;
    }

    /* a send can consume the edge that announced queued input: the read
     * handler checks ZMQ_EVENTS once, after this burst of sends, rather
     * than a system call after each of them */
    if (peer->conn && !peer->conn->read->posted) {
        ngx_post_event(peer->conn->read, &ngx_posted_events);
    }

    return NGX_OK;
}


/*
 * libzmq reconnects by itself and says nothing when a peer goes; its
 * socket monitor does, at once, when the connection drops -- a bridged
 * that crashed, on this host or another.  That turns a 2-3 s wait for
 * the heartbeat into the time the kernel takes to close a socket.  The
 * monitor's events arrive on a PAIR socket over inproc://, whose ZMQ_FD is
 * watched like the channel's own (edge-triggered, drained).  A hung
 * bridged keeps its connection: the heartbeat is still what finds it.
 * The monitor also says why a handshake failed -- above all a CURVE one:
 * a key bridged does not list, a wrong key of bridged's, one side without
 * CURVE -- which libzmq would otherwise retry in silence.
 */

static ngx_int_t
ngx_http_voice_bridge_monitor(ngx_cycle_t *cycle, ngx_http_voice_worker_t *w,
    ngx_http_voice_peer_t *peer)
{
    u_char  addr[64];

    (void) ngx_sprintf(addr, "inproc://voice-monitor-%ui%Z", peer->index);

    if (zmq_socket_monitor(peer->sock, (char *) addr,
                           ZMQ_EVENT_DISCONNECTED
                           | ZMQ_EVENT_HANDSHAKE_SUCCEEDED
                           | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
                           | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                           | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        != 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "zmq_socket_monitor() failed: %s", zmq_strerror(errno));
        return NGX_ERROR;
    }

    peer->mon = zmq_socket(w->zmq_ctx, ZMQ_PAIR);

    if (peer->mon == NULL || zmq_connect(peer->mon, (char *) addr) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "the monitor of \"%V\" failed: %s", &peer->endpoint,
                      zmq_strerror(errno));
        return NGX_ERROR;
    }

    return ngx_http_voice_bridge_watch(cycle, peer, peer->mon,
                                       ngx_http_voice_bridge_monitor_handler,
                                       &peer->mon_conn);
}


/*
 * Wraps a ZeroMQ socket's ZMQ_FD in an nginx connection with only its read
 * event registered.  The descriptor signals edges, and libzmq signals
 * nothing until a first read has found the queue empty, so the first
 * drain is posted by hand.
 */

static ngx_int_t
ngx_http_voice_bridge_watch(ngx_cycle_t *cycle, ngx_http_voice_peer_t *peer,
    void *sock, ngx_event_handler_pt handler, ngx_connection_t **cp)
{
    int                fd;
    size_t             fdlen;
    ngx_event_t       *rev;
    ngx_connection_t  *c;

    fdlen = sizeof(int);
    if (zmq_getsockopt(sock, ZMQ_FD, &fd, &fdlen) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "zmq_getsockopt(ZMQ_FD) failed: %s",
                      zmq_strerror(errno));
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = peer;
    *cp = c;

    rev = c->read;
    rev->handler = handler;
    rev->log = cycle->log;
    c->write->log = cycle->log;

    if (ngx_add_event(rev, NGX_READ_EVENT,
                      (ngx_event_flags & NGX_USE_CLEAR_EVENT)
                      ? NGX_CLEAR_EVENT : NGX_LEVEL_EVENT)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rev->ready = 1;
    ngx_post_event(rev, &ngx_posted_events);

    return NGX_OK;
}


static void
ngx_http_voice_bridge_monitor_handler(ngx_event_t *rev)
{
    int                     more, events;
    size_t                  len;
    uint16_t                event;
    uint32_t                value;
    ngx_uint_t              n;
    zmq_msg_t               msg;
    ngx_connection_t       *c;
    ngx_http_voice_peer_t  *peer;

    c = rev->data;
    peer = c->data;

    /* each event is two parts: 2 bytes of event, 4 of value; the peer's
     * address */

    for (n = 0; n < NGX_HTTP_VOICE_BRIDGE_BATCH; n++) {
        zmq_msg_init(&msg);

        if (zmq_msg_recv(&msg, peer->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            break;
        }

        len = zmq_msg_size(&msg);
        event = 0;
        value = 0;

        if (len >= 6) {
            ngx_memcpy(&event, zmq_msg_data(&msg), 2);
            ngx_memcpy(&value, (u_char *) zmq_msg_data(&msg) + 2, 4);
        }

        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);

        while (more) {
            zmq_msg_init(&msg);

            if (zmq_msg_recv(&msg, peer->mon, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&msg);
                break;
            }

            more = zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }

        if (event == ZMQ_EVENT_DISCONNECTED) {
            ngx_http_voice_peer_down(peer, "dropped its connection",
                                     "its bridged dropped its connection");

        } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            peer->refused = 0;

        } else if (event != 0) {
            ngx_http_voice_bridge_refused(peer, event, value);
        }
    }

    if (n == NGX_HTTP_VOICE_BRIDGE_BATCH) {
        ngx_post_event(rev, &ngx_posted_events);
        return;
    }

    /* the descriptor is edge-triggered: read ZMQ_EVENTS to re-arm it */

    len = sizeof(int);
    (void) zmq_getsockopt(peer->mon, ZMQ_EVENTS, &events, &len);

    if (events & ZMQ_POLLIN) {
        ngx_post_event(rev, &ngx_posted_events);
    }
}


/*
 * A handshake failed.  libzmq tries again every 100 ms, so each reason is
 * said once until a handshake succeeds; a reason is said even after
 * another, since the first to come may be only the broken pipe of a peer
 * that closed on us, and the one after it why.  Meanwhile the bridged
 * never answers, so it stays down, as any bridged that cannot be reached.
 */

static void
ngx_http_voice_bridge_refused(ngx_http_voice_peer_t *peer, uint16_t event,
    uint32_t value)
{
    ngx_err_t    err;
    ngx_uint_t   bit;
    const char  *why;

    err = 0;

    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
        bit = 1;
        why = "refused this host's CURVE key: its public key is not in "
              "bridged's --curve-clients";

    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
               && value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    {
        bit = 2;
        why = peer->curve
              ? "does not use CURVE, and this host does "
                "(voice_bridge_curve_key)"
              : "uses CURVE, and this host does not "
                "(voice_bridge_curve_key)";

    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
        bit = 4;
        why = "failed the handshake: a protocol error";

    } else {
        bit = 8;
        err = (ngx_err_t) value;
        /* a bridged with CURVE may close on a host without it before
         * libzmq can name the mismatch: then only this is known */
        why = peer->curve
              ? "failed the CURVE handshake: is "
                "voice_bridge_curve_server_key bridged's public key?"
              : "failed the handshake: if bridged uses CURVE, this host "
                "does not (voice_bridge_curve_key)";
    }

    if (peer->refused & bit) {
        return;
    }

    peer->refused |= bit;

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, err,
                  "voice bridge: bridged at \"%V\" %s (event 0x%xD, "
                  "0x%xD)", &peer->endpoint, why, (uint32_t) event, value);
}


/* the descriptor belongs to libzmq: remove it from the event set (flags
 * 0, not NGX_CLOSE_EVENT) and free the connection without closing it,
 * then zmq_close() closes it */

static void
ngx_http_voice_bridge_release(ngx_connection_t **cp)
{
    ngx_connection_t  *c;

    c = *cp;

    if (c == NULL) {
        return;
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
    *cp = NULL;
}

