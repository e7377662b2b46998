/*
 * ngx_http_voice_peer.c: the bridged instances as one worker sees them:
 * which answer, which are full, and which takes a request that has no
 * call yet.
 *
 * Any message from a bridged is proof of life (the channel,
 * ngx_http_voice_bridge.c, marks it seen); a ping goes out to each every
 * voice_bridge_heartbeat, and one that leaves them unanswered is taken for
 * down until it speaks again -- or at once, when the channel's monitor
 * sees its connection drop.  Its pongs say how many calls it has and
 * whether it is full (at its --max-calls).  A peer is new (it has not
 * answered yet), up or down, changed only by ngx_http_voice_peer_state().
 * What becomes of the calls of one that goes, or comes back, is
 * ngx_http_voice_call.c's.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"


#define NGX_HTTP_VOICE_PEER_MISSED   2      /* pings: down in 2-3 s */
#define NGX_HTTP_VOICE_PEER_PROBE    50     /* ms, while one is down */


static void ngx_http_voice_peer_state(ngx_http_voice_peer_t *peer,
    ngx_http_voice_peer_state_e state);
static void ngx_http_voice_peer_heartbeat(ngx_event_t *ev);
static void ngx_http_voice_peer_ping(ngx_http_voice_peer_t *peer,
    voice_proto_msg_type_e type, uint64_t id);


/* the worker's heartbeat (a process is one worker) */
static ngx_event_t  ngx_http_voice_peer_beat;


static const char *ngx_http_voice_peer_state_name[] = {
    "new", "up", "down"
};


void
ngx_http_voice_peer_start(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf)
{
    ngx_http_voice_peer_beat.handler = ngx_http_voice_peer_heartbeat;
    ngx_http_voice_peer_beat.data = vmcf;
    ngx_http_voice_peer_beat.log = cycle->log;
    ngx_http_voice_peer_beat.cancelable = 1;

    /* the first ping goes out as soon as the connection can be made */
    ngx_add_timer(&ngx_http_voice_peer_beat, NGX_HTTP_VOICE_PEER_PROBE);
}


void
ngx_http_voice_peer_stop(void)
{
    if (ngx_http_voice_peer_beat.timer_set) {
        ngx_del_timer(&ngx_http_voice_peer_beat);
    }
}


/*
 * A ping goes out every voice_bridge_heartbeat, and a bridged that leaves
 * them unanswered is taken for dead until it speaks again: calls it owns
 * and REST requests then answer 503 at once instead of timing out.
 */

static void
ngx_http_voice_peer_heartbeat(ngx_event_t *ev)
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

        if (peer->missed >= NGX_HTTP_VOICE_PEER_MISSED
            && peer->state == NGX_HTTP_VOICE_PEER_ST_UP)
        {
            ngx_http_voice_peer_down(peer, "does not answer",
                                     "its bridged stopped answering");
        }

        if (peer->state == NGX_HTTP_VOICE_PEER_ST_UP) {
            peer->missed++;

        } else {
            down++;
        }

        peer->ping_id = w->next_request_id++;
        peer->ping_us = ngx_http_voice_metrics_now_us();

        ngx_http_voice_peer_ping(peer, VOICE_PROTO_MSG_PING, peer->ping_id);
    }

    /* one that is down is probed often, so it serves soon after it is back */
    ngx_add_timer(ev, down ? ngx_min(vmcf->heartbeat,
                                     NGX_HTTP_VOICE_PEER_PROBE)
                           : vmcf->heartbeat);
}


static void
ngx_http_voice_peer_ping(ngx_http_voice_peer_t *peer,
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


/* a ping from bridged, answered; or a pong, the answer to ours */

void
ngx_http_voice_peer_on_heartbeat(ngx_http_voice_peer_t *peer,
    voice_proto_msg_t *msg)
{
    if (msg->type == VOICE_PROTO_MSG_PING) {
        ngx_http_voice_peer_ping(peer, VOICE_PROTO_MSG_PONG, msg->request_id);
        return;
    }

    /* the answer to our last ping: the round trip */

    if (peer->ping_us && msg->request_id == peer->ping_id) {
        ngx_http_voice_metrics_bridge_rtt(
            ngx_http_voice_metrics_now_us() - peer->ping_us);
        peer->ping_us = 0;
    }

    /* bridged's answer to our ping says whether it takes new calls */

    if (voice_proto_has(msg, VOICE_PROTO_F_COUNT)) {
        peer->calls = msg->count;
        peer->full = (msg->flags & VOICE_PROTO_FLAG_FULL) != 0;
    }
}


/*
 * A bridged that was down (or never answered) speaks: the channel has
 * marked it seen, this is the rest, out of the path of every message.
 */

void
ngx_http_voice_peer_up(ngx_http_voice_peer_t *peer)
{
    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "voice bridge: bridged at \"%V\" answers%s",
                  &peer->endpoint,
                  peer->state == NGX_HTTP_VOICE_PEER_ST_DOWN ? " again" : "");

    ngx_http_voice_peer_state(peer, NGX_HTTP_VOICE_PEER_ST_UP);
    ngx_http_voice_worker()->contacted = 1;

    /* calls that wait for a bridged go to it */
    ngx_http_voice_call_peer_changed(peer, NULL);
}


/*
 * A bridged is taken for down: by the heartbeat, or at once when its
 * connection drops (the channel's monitor).  Its calls go on elsewhere.
 */

void
ngx_http_voice_peer_down(ngx_http_voice_peer_t *peer, const char *why,
    const char *note)
{
    if (peer->state != NGX_HTTP_VOICE_PEER_ST_UP) {
        return;
    }

    ngx_http_voice_peer_state(peer, NGX_HTTP_VOICE_PEER_ST_DOWN);
    peer->missed = 0;

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "voice bridge: bridged at \"%V\" %s", &peer->endpoint,
                  why);

    ngx_http_voice_call_peer_changed(peer, note);
}


/* the one place a peer's state changes */

static void
ngx_http_voice_peer_state(ngx_http_voice_peer_t *peer,
    ngx_http_voice_peer_state_e state)
{
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "voice bridge: \"%V\" %s -> %s", &peer->endpoint,
                   ngx_http_voice_peer_state_name[peer->state],
                   ngx_http_voice_peer_state_name[state]);

    peer->state = state;
}


/*
 * 1 when every bridged that answers is full (at its --max-calls): a new
 * call would be refused wherever its call SID takes it.
 */

ngx_uint_t
ngx_http_voice_peer_full(void)
{
    ngx_uint_t                i, alive;
    ngx_http_voice_worker_t  *w;

    w = ngx_http_voice_worker();
    if (w == NULL) {
        return 0;
    }

    alive = 0;

    for (i = 0; i < w->npeers; i++) {
        if (w->peers[i].state == NGX_HTTP_VOICE_PEER_ST_UP) {
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
ngx_http_voice_peer_send_any(const u_char *frame, size_t len)
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

        if (peer->state == NGX_HTTP_VOICE_PEER_ST_UP
            && ngx_http_voice_bridge_send(peer, frame, len) == NGX_OK)
        {
            return peer;
        }
    }

    return NULL;
}
