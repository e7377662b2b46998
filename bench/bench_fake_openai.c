/*
 * bench_fake_openai.c: a fast fake of OpenAI's Realtime WebSocket, for the
 * benchmark.
 *
 * One thread, epoll, plain ws:// (no TLS).  It accepts
 * GET /v1/realtime?model=... with "Authorization: Bearer <key>" (another
 * key gets 401), optionally after --accept-delay-ms, sends session.created,
 * answers session.update with session.updated, and answers each
 * input_audio_buffer.append at once with a response.output_audio.delta
 * carrying the same base64: the bridge under test hears its caller's audio
 * straight back, so the load generator can time the round trip.  Other
 * client events are ignored.
 *
 * With --twilio-echo it is instead the server side of Twilio's media
 * stream, at any path: each `media` from the client comes back as a
 * `media` with the same payload, followed by a `mark`.  bench_load then
 * runs against it with no bridge in between (./build.sh bench --calibrate).
 *
 * It prints "READY <port>" on stdout once it listens (--port 0: any free
 * port), and its counters on stderr when it ends (SIGTERM, SIGINT).  On
 * SIGUSR1 it prints one line of what is open now, within a second:
 * "bench_fake_openai: open: C connections, S sessions (A accepted, U
 * upgraded)", a session being an upgraded WebSocket not yet closed
 * (bench/soak.py checks that none is left once the calls are over).
 */

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "voice_b64.h"
#include "voice_ws.h"
#include "bench_util.h"


/* bridged's largest event, a session.update, is far smaller */
#define BENCH_FAKE_MAX_MESSAGE  (1024 * 1024)
#define BENCH_FAKE_MAX_HEAD     16384
#define BENCH_FAKE_EVENTS       512
#define BENCH_FAKE_READ         65536


typedef enum {
    BENCH_FAKE_HTTP = 0,      /* reading the upgrade request */
    BENCH_FAKE_DELAYED,       /* valid request, 101 held back */
    BENCH_FAKE_WS,
    BENCH_FAKE_CLOSING        /* close sent or answered: flush, then go */
} bench_fake_state_e;


typedef struct bench_fake_conn_s  bench_fake_conn_t;

struct bench_fake_conn_s {
    int                  fd;
    bench_fake_state_e   state;
    unsigned             want_out:1;    /* EPOLLOUT is armed */
    unsigned             upgraded:1;    /* counted in bench_fake_sessions */
    char                 accept[32];
    uint64_t             due;           /* when a delayed 101 goes out */
    bench_fake_conn_t   *next;          /* the delayed FIFO */
    bench_buf_t          in;
    bench_buf_t          out;
    uint8_t             *msg;           /* the parser's message storage */
    voice_ws_parser_t    ws;
    uint64_t             events;
    char                 stream_sid[40];
};


static int                 bench_fake_ep;
static int                 bench_fake_twilio;
static unsigned            bench_fake_delay_ms;
static int                 bench_fake_no_echo;     /* swallow the audio */
static const char         *bench_fake_key;
static volatile sig_atomic_t  bench_fake_stop;
static volatile sig_atomic_t  bench_fake_report;    /* SIGUSR1 */

static bench_fake_conn_t  *bench_fake_delayed;
static bench_fake_conn_t  *bench_fake_delayed_tail;

static uint64_t            bench_fake_ids;
static uint64_t            bench_fake_marks;

/* counters, printed at the end */
static uint64_t            bench_fake_accepted;
static uint64_t            bench_fake_refused;
static uint64_t            bench_fake_upgraded;
static uint64_t            bench_fake_open;
static uint64_t            bench_fake_max_open;
static uint64_t            bench_fake_sessions;    /* upgraded, still open */
static uint64_t            bench_fake_appends;
static uint64_t            bench_fake_audio_bytes;
static uint64_t            bench_fake_updates;
static uint64_t            bench_fake_ignored;
static uint64_t            bench_fake_bad;


static void bench_fake_close(bench_fake_conn_t *c);
static void bench_fake_refuse(bench_fake_conn_t *c, const char *status,
    const char *why);
static int bench_fake_flush(bench_fake_conn_t *c);


static void
bench_fake_on_signal(int signo)
{
    if (signo == SIGUSR1) {
        bench_fake_report = 1;
        return;
    }

    bench_fake_stop = 1;
}


static void
bench_fake_usage(FILE *out)
{
    fputs(
"usage: bench_fake_openai [--port N] [--api-key KEY] [--accept-delay-ms N]\n"
"                         [--twilio-echo] [--no-echo]\n"
"\n"
"  --port N             port on 127.0.0.1; 0 (default) picks a free one\n"
"  --api-key KEY        the only Bearer key accepted; none: any key\n"
"  --accept-delay-ms N  hold each 101 this long (a slow OpenAI)\n"
"  --twilio-echo        be the server side of Twilio's media stream:\n"
"                       echo each media payload, then send a mark\n"
"  --no-echo            take the appended audio and send nothing back\n"
"                       (the caller-to-OpenAI direction alone)\n"
"\n"
"SIGUSR1: one line on stderr with the connections and sessions open now\n",
        out);
}


/* a frame header and its payload go straight into the output buffer */

static int
bench_fake_frame(bench_fake_conn_t *c, unsigned opcode, const void *p,
    size_t n)
{
    if (bench_buf_reserve(&c->out, n + VOICE_WS_OUT_HEADER) != 0) {
        return -1;
    }

    c->out.len += voice_ws_frame_header(c->out.data + c->out.len, opcode, n);
    memcpy(c->out.data + c->out.len, p, n);
    c->out.len += n;

    return 0;
}


/* a text frame of head + body + tail, body not copied twice */

static int
bench_fake_text3(bench_fake_conn_t *c, const char *head, size_t hn,
    const char *body, size_t bn, const char *tail, size_t tn)
{
    size_t    n;
    uint8_t  *p;

    n = hn + bn + tn;

    if (bench_buf_reserve(&c->out, n + VOICE_WS_OUT_HEADER) != 0) {
        return -1;
    }

    p = c->out.data + c->out.len;
    p += voice_ws_frame_header(p, VOICE_WS_OP_TEXT, n);
    memcpy(p, head, hn);
    memcpy(p + hn, body, bn);
    memcpy(p + hn + bn, tail, tn);
    p += n;

    c->out.len = (size_t) (p - c->out.data);

    return 0;
}


static void
bench_fake_send_close(bench_fake_conn_t *c, unsigned code)
{
    uint8_t  payload[2];

    payload[0] = (uint8_t) (code >> 8);
    payload[1] = (uint8_t) code;

    (void) bench_fake_frame(c, VOICE_WS_OP_CLOSE, payload, 2);
    c->state = BENCH_FAKE_CLOSING;
}


/* the object value of "session" in a session.update, or "{}" */

static const char *
bench_fake_session(const char *json, size_t *n)
{
    int  i;

    i = bench_json_obj(json, 0, "session");

    if (i < 0) {
        *n = 2;
        return "{}";
    }

    return bench_json_text(json, i, n);
}


static int
bench_fake_openai_message(bench_fake_conn_t *c, const char *json, size_t len)
{
    int          n;
    char         head[256];
    size_t       tn, an, sn;
    const char  *type, *audio, *session;

    type = (bench_json_parse(json, len) == 0)
           ? bench_json_str(json, 0, "type", &tn) : NULL;

    if (type == NULL) {
        bench_fake_bad++;
        return 0;
    }

    if (tn == sizeof("input_audio_buffer.append") - 1
        && memcmp(type, "input_audio_buffer.append", tn) == 0)
    {
        audio = bench_json_str(json, 0, "audio", &an);

        if (audio == NULL) {
            bench_fake_bad++;
            return 0;
        }

        bench_fake_appends++;
        bench_fake_audio_bytes += voice_b64_decoded_len(audio, an);

        if (bench_fake_no_echo) {
            return 0;
        }

        n = snprintf(head, sizeof(head),
                     "{\"type\":\"response.output_audio.delta\","
                     "\"event_id\":\"event_%llu\",\"response_id\":\"resp_1\","
                     "\"item_id\":\"item_1\",\"output_index\":0,"
                     "\"content_index\":0,\"delta\":\"",
                     (unsigned long long) ++bench_fake_ids);

        return bench_fake_text3(c, head, (size_t) n, audio, an, "\"}", 2);
    }

    if (tn == sizeof("session.update") - 1
        && memcmp(type, "session.update", tn) == 0)
    {
        bench_fake_updates++;
        session = bench_fake_session(json, &sn);

        n = snprintf(head, sizeof(head),
                     "{\"type\":\"session.updated\","
                     "\"event_id\":\"event_%llu\",\"session\":",
                     (unsigned long long) ++bench_fake_ids);

        return bench_fake_text3(c, head, (size_t) n, session, sn, "}", 1);
    }

    bench_fake_ignored++;

    return 0;
}


static int
bench_fake_twilio_message(bench_fake_conn_t *c, const char *json, size_t len)
{
    int          n, m;
    char         head[160], tail[200];
    size_t       en, pn, sn;
    const char  *event, *payload, *sid;

    event = (bench_json_parse(json, len) == 0)
            ? bench_json_str(json, 0, "event", &en) : NULL;

    if (event == NULL) {
        bench_fake_bad++;
        return 0;
    }

    sid = bench_json_str(json, 0, "streamSid", &sn);

    if (sid != NULL && sn < sizeof(c->stream_sid)) {
        memcpy(c->stream_sid, sid, sn);
        c->stream_sid[sn] = '\0';
    }

    if (en == 5 && memcmp(event, "media", 5) == 0) {
        m = bench_json_obj(json, 0, "media");
        payload = (m < 0) ? NULL : bench_json_str(json, m, "payload", &pn);

        if (payload == NULL) {
            bench_fake_bad++;
            return 0;
        }

        bench_fake_appends++;
        bench_fake_audio_bytes += voice_b64_decoded_len(payload, pn);

        n = snprintf(head, sizeof(head),
                     "{\"event\":\"media\",\"streamSid\":\"%s\","
                     "\"media\":{\"payload\":\"", c->stream_sid);

        if (bench_fake_text3(c, head, (size_t) n, payload, pn, "\"}}", 3)
            != 0)
        {
            return -1;
        }

        n = snprintf(tail, sizeof(tail),
                     "{\"event\":\"mark\",\"streamSid\":\"%s\","
                     "\"mark\":{\"name\":\"m%llu\"}}", c->stream_sid,
                     (unsigned long long) ++bench_fake_marks);

        return bench_fake_frame(c, VOICE_WS_OP_TEXT, tail, (size_t) n);
    }

    if (en == 4 && memcmp(event, "stop", 4) == 0) {
        bench_fake_send_close(c, 1000);
        return 0;
    }

    bench_fake_ignored++;

    return 0;
}


static int
bench_fake_message(bench_fake_conn_t *c, const uint8_t *p, size_t n)
{
    c->events++;

    if (bench_fake_twilio) {
        return bench_fake_twilio_message(c, (const char *) p, n);
    }

    return bench_fake_openai_message(c, (const char *) p, n);
}


static void
bench_fake_upgrade(bench_fake_conn_t *c)
{
    int   n;
    char  buf[1024];

    c->msg = malloc(BENCH_FAKE_MAX_MESSAGE);
    if (c->msg == NULL) {
        bench_fake_refuse(c, "503 Service Unavailable", "out of memory");
        return;
    }

    voice_ws_parser_init(&c->ws, VOICE_WS_SERVER, c->msg,
                         BENCH_FAKE_MAX_MESSAGE);

    n = snprintf(buf, sizeof(buf),
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n\r\n", c->accept);

    (void) bench_buf_append(&c->out, buf, (size_t) n);

    c->state = BENCH_FAKE_WS;
    c->upgraded = 1;
    bench_fake_upgraded++;
    bench_fake_sessions++;

    if (!bench_fake_twilio) {
        n = snprintf(buf, sizeof(buf),
                     "{\"type\":\"session.created\","
                     "\"event_id\":\"event_%llu\","
                     "\"session\":{\"type\":\"realtime\","
                     "\"object\":\"realtime.session\",\"id\":\"sess_%llu\","
                     "\"model\":\"gpt-realtime\","
                     "\"output_modalities\":[\"audio\"],"
                     "\"audio\":{\"input\":{\"format\":{\"type\":\"audio/pcm\","
                     "\"rate\":24000}},\"output\":{\"format\":{\"type\":"
                     "\"audio/pcm\",\"rate\":24000},\"voice\":\"marin\"}},"
                     "\"expires_at\":0}}",
                     (unsigned long long) ++bench_fake_ids,
                     (unsigned long long) bench_fake_upgraded);

        (void) bench_fake_frame(c, VOICE_WS_OP_TEXT, buf, (size_t) n);
    }
}


static void
bench_fake_refuse(bench_fake_conn_t *c, const char *status, const char *why)
{
    int   n;
    char  buf[512];

    n = snprintf(buf, sizeof(buf),
                 "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                 status, strlen(why), why);

    (void) bench_buf_append(&c->out, buf, (size_t) n);

    c->state = BENCH_FAKE_CLOSING;
    bench_fake_refused++;
}


/* 1: the request is complete and answered, 0: more bytes needed */

static int
bench_fake_http(bench_fake_conn_t *c)
{
    size_t       n, kn, an, hn;
    const char  *head, *end, *key, *auth;

    head = (const char *) c->in.data + c->in.pos;
    n = c->in.len - c->in.pos;

    end = memmem(head, n, "\r\n\r\n", 4);

    if (end == NULL) {
        if (n > BENCH_FAKE_MAX_HEAD) {
            bench_fake_refuse(c, "431 Request Header Fields Too Large", "{}");
            return 1;
        }

        return 0;
    }

    hn = (size_t) (end + 4 - head);
    c->in.pos += hn;

    if (hn < 4 || memcmp(head, "GET ", 4) != 0) {
        bench_fake_refuse(c, "405 Method Not Allowed", "{}");
        return 1;
    }

    if (!bench_fake_twilio && memcmp(head + 4, "/v1/realtime?", 13) != 0) {
        bench_fake_refuse(c, "404 Not Found",
                          "{\"error\":{\"message\":\"not found\"}}");
        return 1;
    }

    key = bench_http_header(head, hn, "Sec-WebSocket-Key", &kn);

    if (key == NULL) {
        bench_fake_refuse(c, "400 Bad Request", "{}");
        return 1;
    }

    if (!bench_fake_twilio && bench_fake_key != NULL) {
        auth = bench_http_header(head, hn, "Authorization", &an);

        if (auth == NULL || an != 7 + strlen(bench_fake_key)
            || strncasecmp(auth, "Bearer ", 7) != 0
            || memcmp(auth + 7, bench_fake_key, an - 7) != 0)
        {
            bench_fake_refuse(c, "401 Unauthorized",
                              "{\"error\":{\"type\":\"invalid_request_error\","
                              "\"code\":\"invalid_api_key\","
                              "\"message\":\"Incorrect API key provided\"}}");
            return 1;
        }
    }

    bench_ws_accept(c->accept, key, kn);

    if (bench_fake_delay_ms) {
        c->state = BENCH_FAKE_DELAYED;
        c->due = bench_now_ns() + (uint64_t) bench_fake_delay_ms * 1000000;
        c->next = NULL;

        if (bench_fake_delayed_tail) {
            bench_fake_delayed_tail->next = c;
        } else {
            bench_fake_delayed = c;
        }

        bench_fake_delayed_tail = c;
        return 1;
    }

    bench_fake_upgrade(c);

    return 1;
}


/*
 * Parses what c->in holds with the bridge's own frame parser (common/
 * voice_ws.c, as a server: bridged's frames are masked), acting on each
 * event; -1: drop the connection.
 */

static int
bench_fake_frames(bench_fake_conn_t *c)
{
    int                rc;
    const uint8_t     *pos, *end;
    voice_ws_event_t   ev;

    pos = c->in.data + c->in.pos;
    end = c->in.data + c->in.len;

    for ( ;; ) {
        if (c->state != BENCH_FAKE_WS) {
            break;
        }

        rc = voice_ws_parse(&c->ws, &pos, end, &ev);

        if (rc == VOICE_WS_AGAIN) {
            break;
        }

        if (rc == VOICE_WS_ERROR) {
            bench_fake_bad++;
            bench_fake_send_close(c, c->ws.close_code);
            break;
        }

        if (rc == VOICE_WS_MESSAGE) {
            if (bench_fake_message(c, ev.data, ev.len) != 0) {
                return -1;
            }

        } else if (rc == VOICE_WS_CLOSE) {
            bench_fake_frame(c, VOICE_WS_OP_CLOSE, ev.data,
                             ev.len >= 2 ? 2 : 0);
            c->state = BENCH_FAKE_CLOSING;

        } else if (rc == VOICE_WS_PING) {
            if (bench_fake_frame(c, VOICE_WS_OP_PONG, ev.data, ev.len) != 0) {
                return -1;
            }
        }
    }

    /* the parser keeps what it needs of a frame split across reads */
    c->in.pos = (size_t) (pos - c->in.data);

    return 0;
}


static void
bench_fake_read(bench_fake_conn_t *c)
{
    ssize_t  n;

    if (bench_buf_reserve(&c->in, BENCH_FAKE_READ) != 0) {
        bench_fake_close(c);
        return;
    }

    n = read(c->fd, c->in.data + c->in.len, c->in.size - c->in.len);

    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        bench_fake_close(c);
        return;
    }

    if (n < 0) {
        return;
    }

    c->in.len += (size_t) n;

    if (c->state == BENCH_FAKE_HTTP && !bench_fake_http(c)) {
        return;
    }

    if (bench_fake_frames(c) != 0) {
        bench_fake_close(c);
        return;
    }

    if (c->in.pos == c->in.len) {
        c->in.pos = 0;
        c->in.len = 0;
    }

    (void) bench_fake_flush(c);
}


/* writes what is pending; 0 when the connection is still usable */

static int
bench_fake_flush(bench_fake_conn_t *c)
{
    ssize_t             n;
    struct epoll_event  ev;

    while (c->out.pos < c->out.len) {
        n = send(c->fd, c->out.data + c->out.pos, c->out.len - c->out.pos,
                 MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            if (errno == EAGAIN) {
                break;
            }

            bench_fake_close(c);
            return -1;
        }

        c->out.pos += (size_t) n;
    }

    if (c->out.pos == c->out.len) {
        c->out.pos = 0;
        c->out.len = 0;

        if (c->state == BENCH_FAKE_CLOSING) {
            bench_fake_close(c);
            return -1;
        }
    }

    if ((c->out.len > 0) != c->want_out) {
        c->want_out = c->out.len > 0;
        ev.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0);
        ev.data.ptr = c;
        epoll_ctl(bench_fake_ep, EPOLL_CTL_MOD, c->fd, &ev);
    }

    return 0;
}


static void
bench_fake_close(bench_fake_conn_t *c)
{
    bench_fake_conn_t  *p;

    if (c->state == BENCH_FAKE_DELAYED) {
        if (bench_fake_delayed == c) {
            bench_fake_delayed = c->next;
            if (bench_fake_delayed == NULL) {
                bench_fake_delayed_tail = NULL;
            }

        } else {
            for (p = bench_fake_delayed; p && p->next != c; p = p->next) {
                /* void */
            }

            if (p) {
                p->next = c->next;
                if (bench_fake_delayed_tail == c) {
                    bench_fake_delayed_tail = p;
                }
            }
        }
    }

    epoll_ctl(bench_fake_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);

    bench_buf_free(&c->in);
    bench_buf_free(&c->out);
    free(c->msg);

    if (c->upgraded) {
        bench_fake_sessions--;
    }

    free(c);

    bench_fake_open--;
}


static void
bench_fake_accept(int lfd)
{
    int                  fd, one;
    bench_fake_conn_t   *c;
    struct epoll_event   ev;

    for ( ;; ) {
        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                perror("bench_fake_openai: accept");
            }
            return;
        }

        one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        c = calloc(1, sizeof(bench_fake_conn_t));
        if (c == NULL) {
            close(fd);
            continue;
        }

        c->fd = fd;
        c->state = BENCH_FAKE_HTTP;

        ev.events = EPOLLIN;
        ev.data.ptr = c;

        if (epoll_ctl(bench_fake_ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }

        bench_fake_accepted++;
        bench_fake_open++;

        if (bench_fake_open > bench_fake_max_open) {
            bench_fake_max_open = bench_fake_open;
        }
    }
}


static int
bench_fake_timeout(void)
{
    uint64_t  now;

    if (bench_fake_delayed == NULL) {
        return 1000;
    }

    now = bench_now_ns();

    if (bench_fake_delayed->due <= now) {
        return 0;
    }

    return (int) ((bench_fake_delayed->due - now + 999999) / 1000000);
}


static void
bench_fake_release(void)
{
    uint64_t            now;
    bench_fake_conn_t  *c;

    now = bench_now_ns();

    while (bench_fake_delayed != NULL && bench_fake_delayed->due <= now) {
        c = bench_fake_delayed;
        bench_fake_delayed = c->next;

        if (bench_fake_delayed == NULL) {
            bench_fake_delayed_tail = NULL;
        }

        bench_fake_upgrade(c);

        /* what the client sent meanwhile (nothing, usually) */

        if (bench_fake_frames(c) != 0) {
            bench_fake_close(c);
            continue;
        }

        (void) bench_fake_flush(c);
    }
}


int
main(int argc, char **argv)
{
    int                  lfd, one, n, i, c;
    long                 port;
    socklen_t            slen;
    bench_fake_conn_t   *conn;
    struct sigaction     sa;
    struct sockaddr_in   sin;
    struct epoll_event   ev, events[BENCH_FAKE_EVENTS];

    static const struct option  options[] = {
        { "port", required_argument, NULL, 'p' },
        { "api-key", required_argument, NULL, 'k' },
        { "accept-delay-ms", required_argument, NULL, 'd' },
        { "twilio-echo", no_argument, NULL, 't' },
        { "no-echo", no_argument, NULL, 'e' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    port = 0;

    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'p':
            port = strtol(optarg, NULL, 10);
            break;
        case 'k':
            bench_fake_key = optarg;
            break;
        case 'd':
            bench_fake_delay_ms = (unsigned) strtoul(optarg, NULL, 10);
            break;
        case 'e':
            bench_fake_no_echo = 1;
            break;

        case 't':
            bench_fake_twilio = 1;
            break;
        case 'h':
            bench_fake_usage(stdout);
            return 0;
        default:
            bench_fake_usage(stderr);
            return 2;
        }
    }

    if (port < 0 || port > 65535 || optind != argc) {
        bench_fake_usage(stderr);
        return 2;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = bench_fake_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
        perror("bench_fake_openai: socket");
        return 1;
    }

    one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t) port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (bind(lfd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        || listen(lfd, 4096) != 0)
    {
        perror("bench_fake_openai: bind");
        return 1;
    }

    slen = sizeof(sin);
    getsockname(lfd, (struct sockaddr *) &sin, &slen);

    bench_fake_ep = epoll_create1(EPOLL_CLOEXEC);

    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(bench_fake_ep, EPOLL_CTL_ADD, lfd, &ev);

    printf("READY %u\n", (unsigned) ntohs(sin.sin_port));
    fflush(stdout);

    while (!bench_fake_stop) {
        if (bench_fake_report) {
            bench_fake_report = 0;
            fprintf(stderr, "bench_fake_openai: open: %llu connections, "
                    "%llu sessions (%llu accepted, %llu upgraded)\n",
                    (unsigned long long) bench_fake_open,
                    (unsigned long long) bench_fake_sessions,
                    (unsigned long long) bench_fake_accepted,
                    (unsigned long long) bench_fake_upgraded);
        }

        n = epoll_wait(bench_fake_ep, events, BENCH_FAKE_EVENTS,
                       bench_fake_timeout());

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("bench_fake_openai: epoll_wait");
            return 1;
        }

        for (i = 0; i < n; i++) {
            conn = events[i].data.ptr;

            if (conn == NULL) {
                bench_fake_accept(lfd);
                continue;
            }

            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                bench_fake_read(conn);
                continue;      /* it may be gone */
            }

            if (events[i].events & EPOLLOUT) {
                (void) bench_fake_flush(conn);
            }
        }

        bench_fake_release();
    }

    fprintf(stderr, "bench_fake_openai: %s mode, %llu connections "
            "(%llu upgraded, %llu refused, %llu at most at once), "
            "%llu %s (%llu audio bytes echoed), %llu session.update, "
            "%llu ignored, %llu malformed\n",
            bench_fake_twilio ? "twilio-echo" : "openai",
            (unsigned long long) bench_fake_accepted,
            (unsigned long long) bench_fake_upgraded,
            (unsigned long long) bench_fake_refused,
            (unsigned long long) bench_fake_max_open,
            (unsigned long long) bench_fake_appends,
            bench_fake_twilio ? "media" : "appends",
            (unsigned long long) bench_fake_audio_bytes,
            (unsigned long long) bench_fake_updates,
            (unsigned long long) bench_fake_ignored,
            (unsigned long long) bench_fake_bad);

    return 0;
}
