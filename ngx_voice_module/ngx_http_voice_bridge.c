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
 * Incoming frames (proto/) are dispatched by type: REST replies to
 * ngx_http_voice_rest.c, media messages to the call's media session
 * (ngx_http_voice_media.c), transcripts to ngx_http_voice_transcript.c.
 * Heartbeats tell which bridged instances are alive, and which are full
 * (at their --max-calls: their pongs say so); which one carries each
 * call, and what happens to its calls when one goes, is
 * ngx_http_voice_call.c's.
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
#define NGX_HTTP_VOICE_BRIDGE_MISSED     2      /* pings: down in 2-3 s */
#define NGX_HTTP_VOICE_BRIDGE_PROBE      50     /* ms, while one is down */
#define NGX_HTTP_VOICE_BRIDGE_FRAME      (512 * 1024)  /* settings and
                                                         history fit */


static void ngx_http_voice_bridge_read_handler(ngx_event_t *rev);
static void ngx_http_voice_bridge_dispatch(ngx_http_voice_peer_t *peer,
    u_char *data, size_t len);
static void ngx_http_voice_bridge_heartbeat(ngx_event_t *ev);
static void ngx_http_voice_bridge_ping(ngx_http_voice_peer_t *peer,
    voice_proto_msg_type_e type, uint64_t id);
static void ngx_http_voice_bridge_seen(ngx_http_voice_peer_t *peer);
static ngx_int_t ngx_http_voice_bridge_monitor(ngx_cycle_t *cycle,
    ngx_http_voice_worker_t *w, ngx_http_voice_peer_t *peer);
static void ngx_http_voice_bridge_monitor_handler(ngx_event_t *rev);
static void ngx_http_voice_bridge_refused(ngx_http_voice_peer_t *peer,
    uint16_t event, uint32_t value);
static void ngx_http_voice_bridge_down(ngx_http_voice_peer_t *peer,
    const char *why, const char *note);
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

    /* one set of buffers per worker serves every call: a call holds
     * nothing while it waits for its next frame */
    w->frame_size = NGX_HTTP_VOICE_BRIDGE_FRAME;
    w->recv_size = 16384;
    w->scratch_size = 16384;   /* a media payload with every "/" escaped */
    w->out_size = NGX_HTTP_VOICE_WS_OUT_HEADER
                  + NGX_HTTP_VOICE_TWILIO_MEDIA_SIZE(VOICE_PROTO_MAX_SID,
                                                     VOICE_PROTO_MAX_AUDIO);

    w->frame = ngx_palloc(cycle->pool, w->frame_size);
    w->recv = ngx_palloc(cycle->pool, w->recv_size);
    w->audio = ngx_palloc(cycle->pool, NGX_HTTP_VOICE_TWILIO_MAX_AUDIO);
    w->scratch = ngx_palloc(cycle->pool, w->scratch_size);
    w->out = ngx_palloc(cycle->pool, w->out_size);

    if (w->frame == NULL || w->recv == NULL || w->audio == NULL
        || w->scratch == NULL || w->out == NULL)
    {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&w->pending, &w->pending_sentinel,
                    ngx_rbtree_insert_value);
    ngx_queue_init(&w->hooks);
    ngx_rbtree_init(&w->calls, &w->calls_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_http_voice_metrics_init_worker(w);

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

        /* alive once it has spoken: until then calls and requests are
         * refused at once (503) instead of failing later */
        peer->alive = 0;

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

    w->heartbeat.handler = ngx_http_voice_bridge_heartbeat;
    w->heartbeat.data = vmcf;
    w->heartbeat.log = cycle->log;
    w->heartbeat.cancelable = 1;
    /* the first ping goes out as soon as the connection can be made */
    ngx_add_timer(&w->heartbeat, NGX_HTTP_VOICE_BRIDGE_PROBE);

    vmcf->worker = w;

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

    if (w->heartbeat.timer_set) {
        ngx_del_timer(&w->heartbeat);
    }

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

        ngx_http_voice_bridge_seen(peer);
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
    const char               *err;
    ngx_http_voice_call_t    *call;
    voice_proto_msg_t         msg;

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
        ngx_http_voice_bridge_ping(peer, VOICE_PROTO_MSG_PONG,
                                   msg.request_id);
        return;

    case VOICE_PROTO_MSG_PONG:

        /* the answer to our last ping: the round trip */

        if (peer->ping_us && msg.request_id == peer->ping_id) {
            ngx_http_voice_metrics_bridge_rtt(
                ngx_http_voice_metrics_now_us() - peer->ping_us);
            peer->ping_us = 0;
        }

        /* bridged's answer to our ping says whether it takes new calls */

        if (voice_proto_has(&msg, VOICE_PROTO_F_COUNT)) {
            peer->calls = msg.count;
            peer->full = (msg.flags & VOICE_PROTO_FLAG_FULL) != 0;
        }

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
        break;
    }

    call = ngx_http_voice_call_find(msg.call_sid.data, msg.call_sid.len);
    if (call == NULL) {
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_EVENTS_IGNORED);
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "voice bridge: %s for unknown call \"%*s\"",
                       voice_proto_type_name(msg.type),
                       msg.call_sid.len, msg.call_sid.data);
        return;
    }

    /* a call handed to another bridged: the one it left may still talk
     * (it was only slow), but no longer for it */

    if (call->peer != peer) {
        ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_EVENTS_IGNORED);
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "voice bridge: %s for call \"%*s\" from a bridged "
                       "that no longer has it",
                       voice_proto_type_name(msg.type),
                       msg.call_sid.len, msg.call_sid.data);
        return;
    }

    switch (msg.type) {

    case VOICE_PROTO_MSG_AUDIO_OUT:
    case VOICE_PROTO_MSG_MARK:
    case VOICE_PROTO_MSG_CLEAR:
    case VOICE_PROTO_MSG_HANGUP:
        if (call->media) {
            ngx_http_voice_media_on_bridge(call->media, &msg);
        }
        return;

    case VOICE_PROTO_MSG_TRANSCRIPT:
    case VOICE_PROTO_MSG_CALL_DONE:
    case VOICE_PROTO_MSG_USAGE:
        ngx_http_voice_call_on_bridge(call, &msg);
        return;

    default:
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "voice bridge: unexpected %s from \"%V\"",
                      voice_proto_type_name(msg.type), &peer->endpoint);
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
 * 1 when every bridged that answers is full (at its --max-calls): a new
 * call would be refused wherever its call SID takes it.
 */

ngx_uint_t
ngx_http_voice_bridge_full(void)
{
    ngx_uint_t                i, alive;
    ngx_http_voice_worker_t  *w;

    w = ngx_http_voice_worker();
    if (w == NULL) {
        return 0;
    }

    alive = 0;

    for (i = 0; i < w->npeers; i++) {
        if (w->peers[i].alive) {
            if (!w->peers[i].full) {
                return 0;
            }

            alive++;
        }
    }

    return alive > 0;
}


/*
 * Sends a frame that any bridged can answer (no call yet: placing a call,
 * listing numbers) to the next live one that takes it, in round-robin
 * order: a bridged that died since its last heartbeat costs a retry, not a
 * failed request.  Returns the peer that took it, or NULL.
 */

ngx_http_voice_peer_t *
ngx_http_voice_bridge_send_any(const u_char *frame, size_t len)
{
    ngx_uint_t                i;
    ngx_http_voice_peer_t    *peer;
    ngx_http_voice_worker_t  *w;

    w = ngx_http_voice_worker();
    if (w == NULL) {
        return NULL;
    }

    for (i = 0; i < w->npeers; i++) {
        peer = &w->peers[w->next_any++ % w->npeers];

        if (peer->alive
            && ngx_http_voice_bridge_send(peer, frame, len) == NGX_OK)
        {
            return peer;
        }
    }

    return NULL;
}


/*
 * Any message from bridged is proof of life; a ping goes out every
 * voice_bridge_heartbeat, and a bridged that leaves three unanswered is
 * taken for dead until it speaks again: calls it owns and REST requests
 * then answer 503 at once instead of timing out.
 */

static void
ngx_http_voice_bridge_heartbeat(ngx_event_t *ev)
{
    ngx_uint_t                   i, down;
    ngx_http_voice_peer_t       *peer;
    ngx_http_voice_worker_t     *w;
    ngx_http_voice_main_conf_t  *vmcf;

    vmcf = ev->data;
    w = vmcf->worker;

    if (w == NULL) {
        return;
    }

    /*
     * A worker that is going (a reload's old one, or a graceful stop) keeps
     * its live calls, and keeps pinging so that they still move when a
     * bridged dies; the heartbeat is cancelable, so it does not hold the
     * worker back once they are over.
     */

    if (ngx_exiting) {
        ngx_http_voice_call_shutdown(vmcf);
    }

    down = 0;

    for (i = 0; i < w->npeers; i++) {
        peer = &w->peers[i];

        if (peer->missed >= NGX_HTTP_VOICE_BRIDGE_MISSED && peer->alive) {
            ngx_http_voice_bridge_down(peer, "does not answer",
                                       "its bridged stopped answering");
        }

        down += !peer->alive;

        if (peer->alive) {
            peer->missed++;
        }

        peer->ping_id = w->next_request_id++;
        peer->ping_us = ngx_http_voice_metrics_now_us();

        ngx_http_voice_bridge_ping(peer, VOICE_PROTO_MSG_PING,
                                   peer->ping_id);
    }

    /* one that is down is probed often, so it serves soon after it is back */
    ngx_add_timer(ev, down ? ngx_min(vmcf->heartbeat,
                                     NGX_HTTP_VOICE_BRIDGE_PROBE)
                           : vmcf->heartbeat);
}


static void
ngx_http_voice_bridge_ping(ngx_http_voice_peer_t *peer,
    voice_proto_msg_type_e type, uint64_t id)
{
    size_t                n;
    u_char                buf[64];
    voice_proto_writer_t  wr;

    voice_proto_begin(&wr, buf, sizeof(buf), type);
    voice_proto_put_u64(&wr, VOICE_PROTO_F_REQUEST_ID, id);
    n = voice_proto_finish(&wr);

    (void) ngx_http_voice_bridge_send(peer, buf, n);
}


static void
ngx_http_voice_bridge_seen(ngx_http_voice_peer_t *peer)
{
    peer->missed = 0;
    peer->last_seen = ngx_current_msec;

    if (!peer->alive) {
        peer->alive = 1;
        ngx_http_voice_worker()->contacted = 1;
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "voice bridge: bridged at \"%V\" answers%s",
                      &peer->endpoint, peer->answered ? " again" : "");
        peer->answered = 1;

        /* calls that wait for a bridged go to it */
        ngx_http_voice_call_peer_changed(peer, NULL);
    }
}


/*
 * A bridged is taken for down: by the heartbeat, or at once when its
 * connection drops (the monitor).  Its calls go on elsewhere.
 */

static void
ngx_http_voice_bridge_down(ngx_http_voice_peer_t *peer, const char *why,
    const char *note)
{
    if (!peer->alive) {
        return;
    }

    peer->alive = 0;
    peer->missed = 0;

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "voice bridge: bridged at \"%V\" %s", &peer->endpoint,
                  why);

    ngx_http_voice_call_peer_changed(peer, note);
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
            ngx_http_voice_bridge_down(peer, "dropped its connection",
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
        why = peer->curve
              ? "failed the CURVE handshake: is "
                "voice_bridge_curve_server_key bridged's public key?"
              : "failed the handshake";
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

