/*
 * ngx_http_voice_ws.c: the media WebSocket inside nginx: the RFC 6455
 * handshake, the takeover of the connection, reading and writing frames.
 *
 * The handshake follows the upstream module's upgrade and lua's raw
 * socket preconditions: a main HTTP/1.1 GET with the Upgrade and
 * Connection tokens, version 13, a 16-byte key, no body, and a valid
 * Twilio signature over the stream URL -- all before the 101.  Then the
 * request is held (r->main->count++), its read and write handlers become
 * this file's, and the socket is only touched from those two handlers.
 *
 * Reads go into one per-worker buffer and through the frame codec
 * (common/voice_ws.c), which assembles each message in another
 * per-worker buffer; only a message split across reads is moved to
 * storage of the session's own, as h2 saves a split frame's state, so an
 * idle call holds no buffer.  Each text message goes to the Twilio session
 * (ngx_http_voice_media.c).  Writes go straight to the socket; what the
 * socket does not take waits in a bounded per-session buffer, where audio
 * that does not fit is dropped and counted.  Keepalive follows rtmp: the
 * read timer ticks every voice_ws_ping_interval, a ping goes out only after
 * a quiet tick, and a ping left unanswered for a tick closes the
 * connection.  A message (or frame) once begun must end within
 * voice_ws_message_timeout, so a peer trickling bytes to keep the
 * connection "active" is dropped too.  The session's life is one enum,
 * changed only by ngx_http_voice_ws_state(): open, pinged (keepalive),
 * closing (our close sent), closed (theirs received), done.  Every way out
 * ends in ngx_http_voice_ws_finalize(), which finalizes the request
 * exactly once, from a posted event.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_sha1.h>

#include "ngx_http_voice_module.h"


#define NGX_HTTP_VOICE_WS_GUID       "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define NGX_HTTP_VOICE_WS_CLOSING    2000   /* ms to wait for their close */
#define NGX_HTTP_VOICE_WS_MAX_CTRL   64     /* control frames per tick */
#define NGX_HTTP_VOICE_WS_RECV       16384  /* bytes per read */


static ngx_int_t ngx_http_voice_ws_check(ngx_http_request_t *r,
    ngx_str_t *key, const char **why);
static ngx_int_t ngx_http_voice_ws_shared(size_t size, ngx_log_t *log);
static ngx_int_t ngx_http_voice_ws_save(ngx_http_voice_ws_t *ws);
static ngx_int_t ngx_http_voice_ws_has_token(ngx_table_elt_t *h,
    const char *token, size_t len);
static void ngx_http_voice_ws_read_handler(ngx_http_request_t *r);
static void ngx_http_voice_ws_write_handler(ngx_http_request_t *r);
static void ngx_http_voice_ws_input(ngx_http_voice_ws_t *ws,
    const u_char *pos, const u_char *end);
static void ngx_http_voice_ws_tick(ngx_http_voice_ws_t *ws);
static void ngx_http_voice_ws_watch(ngx_http_voice_ws_t *ws);
static void ngx_http_voice_ws_too_slow(ngx_event_t *ev);
static ngx_int_t ngx_http_voice_ws_flush(ngx_http_voice_ws_t *ws);
static ngx_int_t ngx_http_voice_ws_queue(ngx_http_voice_ws_t *ws,
    u_char *data, size_t len);
static void ngx_http_voice_ws_state(ngx_http_voice_ws_t *ws,
    ngx_http_voice_ws_state_e state);
static ngx_int_t ngx_http_voice_ws_send_close(ngx_http_voice_ws_t *ws,
    uint16_t code, const char *reason);
static void ngx_http_voice_ws_finalize(ngx_http_voice_ws_t *ws);
static void ngx_http_voice_ws_finalizer(ngx_event_t *ev);
static void ngx_http_voice_ws_cleanup(void *data);


/*
 * The worker's buffers, one set for every session (a process is one
 * worker): reads, and the message being assembled.  A session holds
 * neither while it waits for its next read.
 */

static u_char  *ngx_http_voice_ws_recv;
static u_char  *ngx_http_voice_ws_msg;
static size_t   ngx_http_voice_ws_msg_size;


static const char *ngx_http_voice_ws_state_name[] = {
    "open", "pinged", "closing", "closed", "done"
};


ngx_int_t
ngx_http_voice_ws_handler(ngx_http_request_t *r)
{
    u_char                      hash[20], *accept;
    ngx_int_t                   rc;
    const char                 *why;
    ngx_str_t                   key, src, dst;
    ngx_sha1_t                  sha1;
    ngx_connection_t           *c;
    ngx_table_elt_t            *h;
    ngx_pool_cleanup_t         *cln;
    ngx_http_voice_ws_t        *ws;
    ngx_http_core_loc_conf_t   *clcf;
    ngx_http_voice_loc_conf_t  *vlcf;

    c = r->connection;
    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_voice_module);

    ngx_str_null(&key);

    rc = ngx_http_voice_ws_check(r, &key, &why);
    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "voice: media stream refused: %s", why);
        return ngx_http_voice_send_error(r, rc, "%s", why);
    }

    /* Twilio signs the stream URL of the TwiML, wss:// scheme, no query,
     * and no parameters */
    if (vlcf->signature) {
        rc = ngx_http_voice_webhook_verify(r, vlcf, &vlcf->stream_url, NULL,
                                           0);

        if (rc == NGX_DECLINED) {
            return ngx_http_voice_send_error(r, NGX_HTTP_FORBIDDEN,
                                             "missing or invalid Twilio "
                                             "signature");
        }

        if (rc != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_voice_worker() == NULL) {
        return ngx_http_voice_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "bridged is not configured");
    }

    ws = ngx_pcalloc(r->pool, sizeof(ngx_http_voice_ws_t));
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_voice_ws_shared(vlcf->ws_max_message_size, c->log)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_voice_ws_cleanup;
    cln->data = ws;

    ngx_http_set_ctx(r, ws, ngx_http_voice_module);

    ws->request = r;
    ws->connection = c;
    ws->vlcf = vlcf;
    ws->finalizer.handler = ngx_http_voice_ws_finalizer;
    ws->finalizer.data = ws;
    ws->finalizer.log = c->log;
    ws->slow.handler = ngx_http_voice_ws_too_slow;
    ws->slow.data = ws;
    ws->slow.log = c->log;
    ws->slow.cancelable = 1;

    voice_ws_parser_init(&ws->parser, VOICE_WS_SERVER, ngx_http_voice_ws_msg,
                         vlcf->ws_max_message_size);

    ws->media = ngx_http_voice_media_create(r);
    if (ws->media == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* Sec-WebSocket-Accept: base64(SHA-1(key + GUID)) */
    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key.data, key.len);
    ngx_sha1_update(&sha1, NGX_HTTP_VOICE_WS_GUID,
                    sizeof(NGX_HTTP_VOICE_WS_GUID) - 1);
    ngx_sha1_final(hash, &sha1);

    accept = ngx_pnalloc(r->pool, ngx_base64_encoded_length(20));
    if (accept == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    src.data = hash;
    src.len = 20;
    dst.data = accept;
    ngx_encode_base64(&dst, &src);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Upgrade");
    ngx_str_set(&h->value, "websocket");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Accept");
    h->value = dst;

    /* no subprotocol and no extension: Twilio offers none, and echoing
     * one it did not offer makes it drop the connection */

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    ngx_str_set(&r->headers_out.status_line, "101 Switching Protocols");
    r->headers_out.content_length_n = -1;
    r->keepalive = 0;

    /* an empty body: nginx must never try to read one from this socket */
    r->request_body = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (r->request_body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    if (ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR) {
        return NGX_ERROR;
    }

    c->log->action = "handling media stream";

    /* small frames both ways, every 20 ms: Nagle would hold a frame until
     * Twilio's delayed ACK, which comes with its next frame */
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->tcp_nodelay && ngx_tcp_nodelay(c) != NGX_OK) {
        return NGX_ERROR;
    }

    r->read_event_handler = ngx_http_voice_ws_read_handler;
    r->write_event_handler = ngx_http_voice_ws_write_handler;
    r->main->count++;

    ngx_log_error(NGX_LOG_INFO, c->log, 0, "voice: media stream open");

    ngx_add_timer(c->read, vlcf->ws_ping_interval);

    /* bytes read past the request headers are the first frames */
    if (r->header_in->pos < r->header_in->last) {
        ngx_http_voice_ws_input(ws, r->header_in->pos, r->header_in->last);
        r->header_in->pos = r->header_in->last;
        ngx_http_voice_ws_watch(ws);
    }

    if (ws->state != NGX_HTTP_VOICE_WS_ST_DONE && c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

    return NGX_DONE;
}


/*
 * Returns NGX_OK for a valid upgrade request, else the status to refuse it
 * with and, in *why, the reason in words for the client.
 */

static ngx_int_t
ngx_http_voice_ws_check(ngx_http_request_t *r, ngx_str_t *key,
    const char **why)
{
    u_char            buf[32];
    ngx_str_t         decoded;
    ngx_table_elt_t  *h;

    if (r != r->main) {
        *why = "not a main request";
        return NGX_HTTP_BAD_REQUEST;
    }

#if (NGX_HTTP_V2)
    if (r->stream) {
        *why = "the media stream needs HTTP/1.1";
        return NGX_HTTP_BAD_REQUEST;
    }
#endif

    if (r->method != NGX_HTTP_GET) {
        *why = "the media stream is a WebSocket: use GET with Upgrade";
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (r->http_version != NGX_HTTP_VERSION_11) {
        *why = "the media stream needs HTTP/1.1";
        return NGX_HTTP_BAD_REQUEST;
    }

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        *why = "a WebSocket upgrade has no body";
        return NGX_HTTP_BAD_REQUEST;
    }

    /* nginx 1.22 does not keep the Connection header in headers_in */
    if (!ngx_http_voice_ws_has_token(
            ngx_http_voice_header(r, "Upgrade", sizeof("Upgrade") - 1),
            "websocket", sizeof("websocket") - 1)
        || !ngx_http_voice_ws_has_token(
            ngx_http_voice_header(r, "Connection",
                                     sizeof("Connection") - 1),
            "upgrade", sizeof("upgrade") - 1))
    {
        *why = "not a WebSocket upgrade request";
        return NGX_HTTP_BAD_REQUEST;
    }

    h = ngx_http_voice_header(r, "Sec-WebSocket-Version",
                                 sizeof("Sec-WebSocket-Version") - 1);

    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            *why = "out of memory";
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Sec-WebSocket-Version");
        ngx_str_set(&h->value, "13");

        *why = "WebSocket version 13 is required";
        return 426;  /* Upgrade Required */
    }

    h = ngx_http_voice_header(r, "Sec-WebSocket-Key",
                                 sizeof("Sec-WebSocket-Key") - 1);

    decoded.data = buf;

    if (h == NULL || h->value.len != 24
        || ngx_decode_base64(&decoded, &h->value) != NGX_OK
        || decoded.len != 16)
    {
        *why = "invalid Sec-WebSocket-Key";
        return NGX_HTTP_BAD_REQUEST;
    }

    *key = h->value;

    return NGX_OK;
}


/* a comma-separated header holds token, case-insensitively */

static ngx_int_t
ngx_http_voice_ws_has_token(ngx_table_elt_t *h, const char *token,
    size_t len)
{
    u_char  *p, *last, *start;

    if (h == NULL) {
        return 0;
    }

    p = h->value.data;
    last = p + h->value.len;

    while (p < last) {

        while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        start = p;

        while (p < last && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }

        if ((size_t) (p - start) == len
            && ngx_strncasecmp(start, (u_char *) token, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static void
ngx_http_voice_ws_read_handler(ngx_http_request_t *r)
{
    ssize_t               n;
    ngx_event_t          *rev;
    ngx_connection_t     *c;
    ngx_http_voice_ws_t  *ws;

    c = r->connection;
    rev = c->read;
    ws = ngx_http_get_module_ctx(r, ngx_http_voice_module);

    if (c->destroyed || ws->state == NGX_HTTP_VOICE_WS_ST_DONE) {
        return;
    }

    if (c->close) {
        /* a worker shutting down: tell Twilio we are going away */
        ngx_http_voice_ws_close(ws, VOICE_WS_CLOSE_GOING_AWAY,
                                "server shutting down");
        ngx_http_voice_ws_finalize(ws);
        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;
        ngx_http_voice_ws_tick(ws);

        if (ws->state == NGX_HTTP_VOICE_WS_ST_DONE) {
            return;
        }
    }

    while (rev->ready && ws->state != NGX_HTTP_VOICE_WS_ST_DONE) {

        n = c->recv(c, ngx_http_voice_ws_recv, NGX_HTTP_VOICE_WS_RECV);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "voice: media stream connection %s",
                          n == 0 ? "closed by Twilio" : "failed");
            ngx_http_voice_ws_finalize(ws);
            return;
        }

        ws->active = 1;
        ngx_http_voice_ws_input(ws, ngx_http_voice_ws_recv,
                                ngx_http_voice_ws_recv + n);
    }

    if (ws->state == NGX_HTTP_VOICE_WS_ST_DONE) {
        return;
    }

    ngx_http_voice_ws_watch(ws);

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_voice_ws_finalize(ws);
    }
}


static void
ngx_http_voice_ws_input(ngx_http_voice_ws_t *ws, const u_char *pos,
    const u_char *end)
{
    int                         rc;
    u_char                      buf[VOICE_WS_OUT_HEADER + VOICE_WS_MAX_CONTROL];
    ngx_connection_t           *c;
    voice_ws_event_t            ev;

    c = ws->connection;

    /* a message that is not split assembles in the worker's buffer */
    if (ws->parser.msg_opcode == 0 && ws->msg) {
        ngx_free(ws->msg);
        ws->msg = NULL;
        ws->parser.msg = ngx_http_voice_ws_msg;
    }

    while (ws->state != NGX_HTTP_VOICE_WS_ST_DONE) {

        rc = voice_ws_parse(&ws->parser, &pos, end, &ev);

        switch (rc) {

        case VOICE_WS_AGAIN:
            if (ws->parser.msg_opcode != 0 && ws->msg == NULL
                && ngx_http_voice_ws_save(ws) != NGX_OK)
            {
                ngx_http_voice_ws_finalize(ws);
            }
            return;

        case VOICE_WS_MESSAGE:
            if (ws->state == NGX_HTTP_VOICE_WS_ST_CLOSING) {
                /* after our close, only their close matters */
                break;
            }

            if (ev.opcode != VOICE_WS_OP_TEXT) {
                ngx_log_error(NGX_LOG_INFO, c->log, 0,
                              "voice: binary frame on the media stream");
                ngx_http_voice_ws_close(ws,
                                        VOICE_WS_CLOSE_UNSUPPORTED,
                                        "binary frames are not accepted");
                break;
            }

            ngx_http_voice_media_on_message(ws->media, (u_char *) ev.data,
                                            ev.len);
            break;

        case VOICE_WS_PING:
            if (++ws->control > NGX_HTTP_VOICE_WS_MAX_CTRL) {
                goto flood;
            }

            if (ws->state < NGX_HTTP_VOICE_WS_ST_CLOSING) {
                ngx_memcpy(buf + VOICE_WS_OUT_HEADER, ev.data,
                           ev.len);
                (void) ngx_http_voice_ws_send(ws, VOICE_WS_OP_PONG,
                                    buf + VOICE_WS_OUT_HEADER,
                                    ev.len, 0);
            }
            break;

        case VOICE_WS_PONG:
            if (++ws->control > NGX_HTTP_VOICE_WS_MAX_CTRL) {
                goto flood;
            }

            if (ws->state == NGX_HTTP_VOICE_WS_ST_PINGED) {
                ngx_http_voice_ws_state(ws, NGX_HTTP_VOICE_WS_ST_OPEN);
            }
            break;

        case VOICE_WS_CLOSE:
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "voice: media stream closed by Twilio with %ui",
                          (ngx_uint_t) ev.close_code);

            /* echo their code, as RFC 6455 5.5.1 asks, unless ours went
             * first and theirs is the answer */
            if (ws->state < NGX_HTTP_VOICE_WS_ST_CLOSING
                && ngx_http_voice_ws_send_close(ws,
                       ev.close_code == VOICE_WS_CLOSE_NO_STATUS
                       ? VOICE_WS_CLOSE_NORMAL : ev.close_code,
                       NULL)
                   != NGX_OK)
            {
                return;
            }

            ngx_http_voice_ws_state(ws, NGX_HTTP_VOICE_WS_ST_CLOSED);
            ngx_http_voice_ws_finalize(ws);
            return;

        default: /* VOICE_WS_ERROR */
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "voice: media stream protocol error: %s",
                          ws->parser.error);
            ngx_http_voice_ws_close(ws, ws->parser.close_code,
                                    ws->parser.error);
            ngx_http_voice_ws_finalize(ws);
            return;
        }
    }

    return;

flood:

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "voice: control frame flood on the media stream");
    ngx_http_voice_ws_close(ws, VOICE_WS_CLOSE_POLICY,
                            "control frame flood");
    ngx_http_voice_ws_finalize(ws);
}


/*
 * The message being assembled continues in the next read, and the worker's
 * buffer will serve other sessions meanwhile: move its first part to
 * storage of this session's own, until the message is complete.
 */

static ngx_int_t
ngx_http_voice_ws_save(ngx_http_voice_ws_t *ws)
{
    ws->msg = ngx_alloc(ws->parser.msg_max, ws->connection->log);
    if (ws->msg == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ws->msg, ws->parser.msg, ws->parser.msg_len);
    ws->parser.msg = ws->msg;

    return NGX_OK;
}


/* the worker's buffers: the message buffer as large as the largest
 * maximum; ngx_alloc()ed, they last as long as the process */

static ngx_int_t
ngx_http_voice_ws_shared(size_t size, ngx_log_t *log)
{
    u_char  *p;

    if (ngx_http_voice_ws_recv == NULL) {
        ngx_http_voice_ws_recv = ngx_alloc(NGX_HTTP_VOICE_WS_RECV, log);
        if (ngx_http_voice_ws_recv == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_voice_ws_msg_size >= size) {
        return NGX_OK;
    }

    /* sessions that started with a smaller one keep pointing at it: the
     * old buffer is never freed (a location with a larger maximum is a
     * configuration matter, met once per worker) */
    p = ngx_alloc(size, log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_voice_ws_msg = p;
    ngx_http_voice_ws_msg_size = size;

    return NGX_OK;
}


/*
 * The read timer ticks every voice_ws_ping_interval: a quiet connection
 * gets a ping, and one that stays quiet after it is gone.  While closing,
 * the tick is the deadline for the peer's close frame.
 */

static void
ngx_http_voice_ws_tick(ngx_http_voice_ws_t *ws)
{
    u_char            buf[VOICE_WS_OUT_HEADER + 4];
    ngx_connection_t  *c;

    c = ws->connection;

    if (ws->state == NGX_HTTP_VOICE_WS_ST_CLOSING) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "voice: no close frame from Twilio in time");
        ngx_http_voice_ws_finalize(ws);
        return;
    }

    ws->control = 0;

    if (ws->active) {
        ws->active = 0;

        if (ws->state == NGX_HTTP_VOICE_WS_ST_PINGED) {
            ngx_http_voice_ws_state(ws, NGX_HTTP_VOICE_WS_ST_OPEN);
        }

    } else if (ws->state == NGX_HTTP_VOICE_WS_ST_PINGED) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "voice: media stream idle, closing it");
        ngx_http_voice_ws_close(ws, VOICE_WS_CLOSE_GOING_AWAY,
                                "idle");
        ngx_http_voice_ws_finalize(ws);
        return;

    } else {
        ngx_http_voice_ws_state(ws, NGX_HTTP_VOICE_WS_ST_PINGED);
        ngx_memcpy(buf + VOICE_WS_OUT_HEADER, "ping", 4);
        (void) ngx_http_voice_ws_send(ws, VOICE_WS_OP_PING,
                                      buf + VOICE_WS_OUT_HEADER, 4,
                                      0);
    }

    if (ws->state != NGX_HTTP_VOICE_WS_ST_DONE) {
        ngx_add_timer(c->read, ws->vlcf->ws_ping_interval);
    }
}


/*
 * After each read: a frame or message left unfinished starts the clock
 * (frames nearly always come whole, so this timer is rarely set), one
 * finished stops it.
 */

static void
ngx_http_voice_ws_watch(ngx_http_voice_ws_t *ws)
{
    if (ws->state == NGX_HTTP_VOICE_WS_ST_DONE) {
        return;
    }

    if (voice_ws_parser_busy(&ws->parser)) {
        if (!ws->slow.timer_set) {
            ngx_add_timer(&ws->slow, ws->vlcf->ws_message_timeout);
        }

    } else if (ws->slow.timer_set) {
        ngx_del_timer(&ws->slow);
    }
}


static void
ngx_http_voice_ws_too_slow(ngx_event_t *ev)
{
    ngx_http_voice_ws_t  *ws = ev->data;

    if (ws->state == NGX_HTTP_VOICE_WS_ST_DONE) {
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                  "voice: media stream message not finished in %M ms, "
                  "closing it", ws->vlcf->ws_message_timeout);

    ngx_http_voice_ws_close(ws, VOICE_WS_CLOSE_POLICY,
                            "message sent too slowly");
    ngx_http_voice_ws_finalize(ws);
}


/*
 * Sends one frame.  payload has VOICE_WS_OUT_HEADER bytes of headroom
 * before it, where the header goes, so nothing is copied when the
 * socket takes it all.  A droppable frame (audio) that does not fit the
 * send buffer is dropped and counted (NGX_DECLINED); other frames always
 * queue.  NGX_ERROR means the session is being finalized.
 */

ngx_int_t
ngx_http_voice_ws_send(ngx_http_voice_ws_t *ws, int opcode, u_char *payload,
    size_t len, ngx_uint_t droppable)
{
    u_char  hdr[VOICE_WS_OUT_HEADER];
    size_t  hlen;

    hlen = voice_ws_frame_header(hdr, opcode, len);
    ngx_memcpy(payload - hlen, hdr, hlen);

    return ngx_http_voice_ws_send_frames(ws, payload - hlen, hlen + len,
                                         droppable);
}


/*
 * Sends whole frames already framed, in one write when the socket takes
 * it: several frames together cost one system call and one TCP segment.
 */

ngx_int_t
ngx_http_voice_ws_send_frames(ngx_http_voice_ws_t *ws, u_char *start,
    size_t total, ngx_uint_t droppable)
{
    ssize_t            n;
    ngx_connection_t  *c;

    /* nothing goes after a close frame (RFC 6455 5.5.1) */
    if (ws->state >= NGX_HTTP_VOICE_WS_ST_CLOSING) {
        return NGX_DECLINED;
    }

    c = ws->connection;

    if (ws->out_last == ws->out_pos && ws->request->out == NULL) {

        n = c->send(c, start, total);

        if (n == NGX_ERROR) {
            ngx_http_voice_ws_finalize(ws);
            return NGX_ERROR;
        }

        if (n == NGX_AGAIN) {
            n = 0;
        }

        if ((size_t) n == total) {
            return NGX_OK;
        }

        /* part of this frame is on the wire: the rest must follow */
        start += n;
        total -= n;
        droppable = 0;
    }

    if (droppable
        && ws->out_last - ws->out_pos + total > ws->vlcf->ws_send_buffer_size)
    {
        ws->dropped++;
        return NGX_DECLINED;
    }

    if (ngx_http_voice_ws_queue(ws, start, total) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "voice: Twilio does not read the media stream");
        ngx_http_voice_ws_finalize(ws);
        return NGX_ERROR;
    }

    return ngx_http_voice_ws_flush(ws);
}


/*
 * The send buffer grows by doubling up to voice_ws_send_buffer_size, plus
 * room for one whole frame of any kind, so that a frame already started
 * and control frames always fit.
 */

static ngx_int_t
ngx_http_voice_ws_queue(ngx_http_voice_ws_t *ws, u_char *data, size_t len)
{
    u_char  *p;
    size_t   used, cap, limit;

    used = ws->out_last - ws->out_pos;
    limit = ws->vlcf->ws_send_buffer_size + VOICE_WS_OUT_HEADER
            + NGX_HTTP_VOICE_TWILIO_MEDIA_SIZE(VOICE_PROTO_MAX_SID,
                                               VOICE_PROTO_MAX_AUDIO);

    if (used + len > limit) {
        return NGX_ERROR;
    }

    if (ws->out_cap - ws->out_last < len) {

        if (ws->out_cap - used >= len) {
            ngx_memmove(ws->out, ws->out + ws->out_pos, used);

        } else {
            for (cap = ws->out_cap ? ws->out_cap : 4096;
                 cap < used + len;
                 cap *= 2)
            {
                /* void */
            }

            if (cap > limit) {
                cap = limit;
            }

            p = ngx_alloc(cap, ws->connection->log);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (used) {
                ngx_memcpy(p, ws->out + ws->out_pos, used);
            }

            if (ws->out) {
                ngx_free(ws->out);
            }

            ws->out = p;
            ws->out_cap = cap;
        }

        ws->out_pos = 0;
        ws->out_last = used;
    }

    ngx_memcpy(ws->out + ws->out_last, data, len);
    ws->out_last += len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_voice_ws_flush(ngx_http_voice_ws_t *ws)
{
    ssize_t                    n;
    ngx_int_t                  rc;
    ngx_event_t               *wev;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    r = ws->request;
    c = ws->connection;
    wev = c->write;

    /* what the header filter left buffered (the 101) goes first */
    if (r->out) {
        rc = ngx_http_output_filter(r, NULL);
        if (rc == NGX_ERROR) {
            ngx_http_voice_ws_finalize(ws);
            return NGX_ERROR;
        }
    }

    while (r->out == NULL && ws->out_pos < ws->out_last && wev->ready) {

        n = c->send(c, ws->out + ws->out_pos, ws->out_last - ws->out_pos);

        if (n == NGX_ERROR) {
            ngx_http_voice_ws_finalize(ws);
            return NGX_ERROR;
        }

        if (n == NGX_AGAIN) {
            break;
        }

        ws->out_pos += n;
    }

    if (ws->out_pos == ws->out_last) {
        ws->out_pos = 0;
        ws->out_last = 0;
    }

    if (r->out == NULL && ws->out_last == 0) {
        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

        return NGX_OK;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (!wev->timer_set) {
        ngx_add_timer(wev, clcf->send_timeout);
    }

    if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
        ngx_http_voice_ws_finalize(ws);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_voice_ws_write_handler(ngx_http_request_t *r)
{
    ngx_connection_t     *c;
    ngx_http_voice_ws_t  *ws;

    c = r->connection;
    ws = ngx_http_get_module_ctx(r, ngx_http_voice_module);

    if (c->destroyed || ws->state == NGX_HTTP_VOICE_WS_ST_DONE) {
        return;
    }

    if (c->write->timedout) {
        c->write->timedout = 0;
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "voice: Twilio stopped reading the media stream");
        ngx_http_voice_ws_finalize(ws);
        return;
    }

    (void) ngx_http_voice_ws_flush(ws);
}


/*
 * Sends a close frame (once) and waits, a bounded time, for the peer's:
 * the read timer now measures that wait.
 */

void
ngx_http_voice_ws_close(ngx_http_voice_ws_t *ws, uint16_t code,
    const char *reason)
{
    ngx_connection_t  *c;

    if (ws->state >= NGX_HTTP_VOICE_WS_ST_CLOSING) {
        return;
    }

    if (ngx_http_voice_ws_send_close(ws, code, reason) != NGX_OK) {
        return;
    }

    ngx_http_voice_ws_state(ws, NGX_HTTP_VOICE_WS_ST_CLOSING);

    c = ws->connection;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    ngx_add_timer(c->read, NGX_HTTP_VOICE_WS_CLOSING);
}


/* a close frame, ours or the echo of theirs; NGX_ERROR: the session is
 * being finalized (the socket failed) */

static ngx_int_t
ngx_http_voice_ws_send_close(ngx_http_voice_ws_t *ws, uint16_t code,
    const char *reason)
{
    u_char  buf[VOICE_WS_OUT_HEADER + VOICE_WS_MAX_CONTROL];
    size_t  n;

    n = voice_ws_close_payload(buf + VOICE_WS_OUT_HEADER, code, reason);

    (void) ngx_http_voice_ws_send(ws, VOICE_WS_OP_CLOSE,
                                  buf + VOICE_WS_OUT_HEADER, n, 0);

    return ws->state == NGX_HTTP_VOICE_WS_ST_DONE ? NGX_ERROR : NGX_OK;
}


/* the one place the session's state changes */

static void
ngx_http_voice_ws_state(ngx_http_voice_ws_t *ws,
    ngx_http_voice_ws_state_e state)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "voice ws: %s -> %s",
                   ngx_http_voice_ws_state_name[ws->state],
                   ngx_http_voice_ws_state_name[state]);

    ws->state = state;
}


/*
 * The one way out: the Twilio session hears that the stream is over, and
 * the request is finalized from a posted event, so that no caller -- a
 * read handler, a bridge message, a timer -- ever sees its session freed
 * under it.
 */

static void
ngx_http_voice_ws_finalize(ngx_http_voice_ws_t *ws)
{
    if (ws->state == NGX_HTTP_VOICE_WS_ST_DONE) {
        return;
    }

    ngx_http_voice_ws_state(ws, NGX_HTTP_VOICE_WS_ST_DONE);

    if (ws->media) {
        ngx_http_voice_media_on_close(ws->media);
    }

    ngx_post_event(&ws->finalizer, &ngx_posted_events);
}


static void
ngx_http_voice_ws_finalizer(ngx_event_t *ev)
{
    ngx_connection_t     *c;
    ngx_http_request_t   *r;
    ngx_http_voice_ws_t  *ws;

    ws = ev->data;
    r = ws->request;
    c = ws->connection;

    /* give what is queued (a close frame) one last chance */
    if (ws->out_last > ws->out_pos && c->write->ready && r->out == NULL) {
        (void) c->send(c, ws->out + ws->out_pos, ws->out_last - ws->out_pos);
    }

    ngx_http_set_log_request(c->log, r);

    ngx_http_finalize_request(r, NGX_HTTP_CLOSE);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_voice_ws_cleanup(void *data)
{
    ngx_http_voice_ws_t  *ws = data;

    /* the request is going away, by whatever path */

    if (ws->state != NGX_HTTP_VOICE_WS_ST_DONE) {
        ngx_http_voice_ws_state(ws, NGX_HTTP_VOICE_WS_ST_DONE);

        if (ws->media) {
            ngx_http_voice_media_on_close(ws->media);
        }
    }

    if (ws->finalizer.posted) {
        ngx_delete_posted_event(&ws->finalizer);
    }

    if (ws->slow.timer_set) {
        ngx_del_timer(&ws->slow);
    }

    if (ws->dropped) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "voice: %ui frames to Twilio were dropped (send "
                      "buffer full)", ws->dropped);
    }

    if (ws->msg) {
        ngx_free(ws->msg);
        ws->msg = NULL;
    }

    if (ws->out) {
        ngx_free(ws->out);
        ws->out = NULL;
    }
}
