/*
 * bench_load.c: the benchmark's load generator, a crowd of fake Twilio
 * media streams.
 *
 * One thread, epoll, non-blocking sockets, and a minimal RFC 6455 client
 * (masked frames, text, close, ping/pong).  It opens --calls WebSockets to
 * nginx's /media-stream, --ramp-per-sec of them a second, each signed the
 * way Twilio signs (HMAC-SHA1 of the wss:// stream URL), and on each sends
 * `connected`, `start`, then a 160-byte mu-law `media` frame every 20 ms by
 * an absolute schedule until every call has run --seconds at full load;
 * after a second of draining it sends `stop` and closes with 1000.
 *
 * Round trip.  Each frame's payload is tagged: 4 magic bytes, the call's
 * index and the frame's number (big endian), then 0xff (mu-law silence).
 * Its send time is kept in a ring per call.  The bridge under test, with
 * the fake OpenAI echoing every append, sends the same bytes back as
 * Twilio `media`, possibly several frames in one message (audio held at
 * call start is coalesced); they are split into 160-byte frames, matched
 * by tag, and the round trip goes into a log-linear histogram (1 us steps
 * below 128 us, then 128 steps per octave).
 *
 * Marks are acknowledged as Twilio does: the received audio "plays" in
 * real time (8 bytes per ms) on a clock per call, and a mark is echoed
 * once the audio received before it has played.
 *
 * Lateness.  A frame is never skipped: when the tool falls behind, the
 * frames due are sent at once and how late each was is counted, so a row
 * where the tool could not keep up says so.
 *
 * Refusals.  A call the server closes with 1013 (try again later: the
 * bridge is at its limit) right after its start is counted as refused,
 * not as dropped, and its frames count nowhere: the round trips and the
 * losses are those of the calls admitted.
 *
 * Windows.  The steady window starts 2 s after the last call connected or
 * failed, and ends when the calls stop sending.  Round trips and losses
 * are reported for the frames sent in it; "lost at start" counts the
 * frames of each call's first second that never came back.  It writes
 * "bench_load: event steady-begin" and "... steady-end" on stderr at the
 * two ends of the window, so that a driver can sample the processes under
 * test exactly there.
 */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "voice_b64.h"
#include "voice_json.h"
#include "voice_ws.h"
#include "bench_util.h"


#define BENCH_FRAME             160         /* bytes of mu-law: 20 ms */
#define BENCH_PERIOD            20000000ull /* ns */
#define BENCH_MS                1000000ull
#define BENCH_SEC               1000000000ull
#define BENCH_RING              512         /* frames remembered: 10.24 s */
#define BENCH_START_FRAMES      50          /* a call's first second */
#define BENCH_MARKS             64          /* marks awaiting their echo */
#define BENCH_MARK_NAME         64
#define BENCH_CONNECT_TIMEOUT   (10 * BENCH_SEC)
#define BENCH_SETTLE            (2 * BENCH_SEC)
#define BENCH_DRAIN             (1 * BENCH_SEC)
#define BENCH_CLOSE_WAIT        (3 * BENCH_SEC)
#define BENCH_LATE              (5 * BENCH_MS)
#define BENCH_EVENTS            1024
#define BENCH_READ              65536
#define BENCH_MSG_MAX           65536       /* nginx's largest is ~22 KiB */

#define BENCH_HIST_SUB          128
#define BENCH_HIST_BUCKETS      (48 * BENCH_HIST_SUB)

#define BENCH_SLOT_USED         0x01
#define BENCH_SLOT_ECHOED       0x02
#define BENCH_SLOT_WINDOW       0x04


typedef enum {
    BENCH_CALL_IDLE = 0,        /* not connected yet */
    BENCH_CALL_CONNECTING,
    BENCH_CALL_HANDSHAKE,       /* upgrade sent, waiting for the 101 */
    BENCH_CALL_OPEN,
    BENCH_CALL_CLOSING,         /* close sent */
    BENCH_CALL_DONE
} bench_call_state_e;


typedef enum {
    BENCH_FAIL_NONE = 0,
    BENCH_FAIL_REFUSED,
    BENCH_FAIL_STATUS,
    BENCH_FAIL_TIMEOUT,
    BENCH_FAIL_OTHER
} bench_fail_e;


typedef enum {
    BENCH_PHASE_RUN = 0,        /* connecting and streaming */
    BENCH_PHASE_DRAIN,          /* no more frames; echoes still come */
    BENCH_PHASE_CLOSE,          /* stop and close sent */
    BENCH_PHASE_OVER
} bench_phase_e;


typedef struct {
    uint64_t    sent;
    uint32_t    frame;
    uint32_t    flags;
} bench_slot_t;


typedef struct {
    uint64_t    due;
    char        name[BENCH_MARK_NAME];
} bench_mark_t;


typedef struct {
    uint64_t    count;
    uint64_t    max;
    uint64_t    buckets[BENCH_HIST_BUCKETS];
} bench_hist_t;


typedef struct {
    int                  fd;
    unsigned             index;
    bench_call_state_e   state;
    unsigned             heap_pos;
    unsigned             want_out:1;
    unsigned             connected:1;
    unsigned             dropped:1;
    unsigned             refused:1;     /* closed with 1013 */
    uint64_t             wake;
    uint64_t             connect_at;
    uint64_t             base;          /* frame k is due at base + 20k ms */
    uint64_t             play_end;      /* when the audio received ends */
    uint64_t             start_echoed;  /* frames of the first second */
    uint32_t             frames;        /* frames sent */
    uint32_t             seq;           /* Twilio's sequenceNumber */
    bench_slot_t        *ring;
    bench_mark_t        *marks;
    unsigned             mark_head;
    unsigned             mark_len;
    size_t               carry_len;
    uint8_t              carry[BENCH_FRAME];
    bench_buf_t          in;
    bench_buf_t          out;
    uint8_t             *msg;           /* the parser's message storage */
    voice_ws_parser_t    ws;
    char                 call_sid[40];
    char                 stream_sid[40];
    char                 key[32];
} bench_call_t;


typedef struct {
    uint64_t             attempted;
    uint64_t             connected;
    uint64_t             failed[BENCH_FAIL_OTHER + 1];
    uint64_t             dropped;
    uint64_t             refused;
    int                  last_status;
    char                 drop_reason[96];
    uint64_t             frames_sent;
    uint64_t             frames_echoed;
    uint64_t             window_sent;
    uint64_t             window_lost;
    uint64_t             start_sent;
    uint64_t             start_lost;
    uint64_t             duplicates;
    uint64_t             misrouted;
    uint64_t             unknown;
    uint64_t             corrupt;
    uint64_t             garbage_bytes;
    uint64_t             late_frames;
    uint64_t             late_max;
    uint64_t             late_window_max;
    uint64_t             media_in;
    uint64_t             marks_in;
    uint64_t             marks_acked;
    uint64_t             marks_forced;
    uint64_t             clears_in;
    uint64_t             other_in;
    uint64_t             backlog_max;
    uint64_t             backlog_events;
    uint64_t             protocol_errors;
} bench_stats_t;


static struct {
    const char          *host;
    unsigned             port;
    const char          *path;
    const char          *sign_url;
    const char          *auth_token;
    unsigned             calls;
    unsigned             seconds;
    unsigned             ramp;
    int                  json;
    int                  quickack;
} bench_opt = {
    "127.0.0.1", 0, "/media-stream", NULL, NULL, 100, 30, 200, 0, 0
};


static const uint8_t      bench_magic[4] = { 0x42, 0x4e, 0x43, 0x48 };

static int                bench_ep;
static struct sockaddr_in bench_addr;
static char               bench_signature[64];
static char               bench_host_header[256];
static char               bench_account_sid[40];
static uint8_t            bench_ones[BENCH_FRAME];
static uint64_t           bench_rng;

static bench_call_t      *bench_calls;
static bench_call_t     **bench_heap;
static unsigned           bench_heap_len;

static bench_phase_e      bench_phase;
static uint64_t           bench_t0;
static uint64_t           bench_t_end;
static uint64_t           bench_settled_at;
static uint64_t           bench_settled;
static uint64_t           bench_win_begin;
static uint64_t           bench_win_end;
static int                bench_win_on;
static int                bench_win_done;
static uint64_t           bench_open;

static struct rusage      bench_ru_begin;
static struct rusage      bench_ru_win_begin;
static struct rusage      bench_ru_win_end;

static bench_hist_t       bench_hist_window;
static bench_hist_t       bench_hist_all;
static bench_stats_t      bench_st;

static uint8_t           *bench_scratch;
static size_t             bench_scratch_size;

static volatile sig_atomic_t  bench_interrupted;


static void bench_load_fail(bench_call_t *c, bench_fail_e why, uint64_t now);
static void bench_load_finish(bench_call_t *c);
static int bench_load_flush(bench_call_t *c);
static void bench_load_schedule(bench_call_t *c);


static void
bench_load_on_signal(int signo)
{
    (void) signo;
    bench_interrupted = 1;
}


static void
bench_load_usage(FILE *out)
{
    fputs(
"usage: bench_load --port P [options]\n"
"\n"
"  --host H             nginx's address, default 127.0.0.1\n"
"  --port P             nginx's port\n"
"  --path PATH          default /media-stream\n"
"  --sign-url URL       the wss:// URL the signature covers, e.g.\n"
"                       wss://voice.example.test/media-stream\n"
"  --auth-token T       Twilio auth token; none: no signature header\n"
"  --calls N            concurrent calls, default 100\n"
"  --seconds D          seconds of full load after the ramp, default 30\n"
"  --ramp-per-sec R     calls started per second, default 200\n"
"  --json               one JSON line of results on stdout\n"
"  --quickack           acknowledge every TCP segment at once (not what\n"
"                       Twilio does): a diagnostic for a server whose\n"
"                       small writes wait on delayed ACKs (Nagle)\n",
        out);
}


/* xorshift64*: WebSocket masks need not be secret here, only cheap */

static uint32_t
bench_load_random(void)
{
    bench_rng ^= bench_rng >> 12;
    bench_rng ^= bench_rng << 25;
    bench_rng ^= bench_rng >> 27;

    return (uint32_t) ((bench_rng * 0x2545f4914f6cdd1dull) >> 32);
}


/* --- the histogram -------------------------------------------------------- */


static void
bench_hist_add(bench_hist_t *h, uint64_t us)
{
    unsigned  e, idx;

    if (us < BENCH_HIST_SUB) {
        idx = (unsigned) us;

    } else {
        e = 63 - (unsigned) __builtin_clzll(us);
        idx = (e - 6) * BENCH_HIST_SUB
              + (unsigned) ((us >> (e - 7)) & (BENCH_HIST_SUB - 1));

        if (idx >= BENCH_HIST_BUCKETS) {
            idx = BENCH_HIST_BUCKETS - 1;
        }
    }

    h->buckets[idx]++;
    h->count++;

    if (us > h->max) {
        h->max = us;
    }
}


/* the middle of the bucket that holds the p-quantile, in us */

static double
bench_hist_quantile(const bench_hist_t *h, double p)
{
    unsigned  i, e;
    uint64_t  rank, seen, lo, width;

    if (h->count == 0) {
        return 0;
    }

    rank = (uint64_t) (p * (double) h->count + 0.999999);
    if (rank == 0) {
        rank = 1;
    }

    seen = 0;

    for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->buckets[i];

        if (seen >= rank) {
            break;
        }
    }

    if (i < BENCH_HIST_SUB) {
        return (double) i;
    }

    e = i / BENCH_HIST_SUB + 6;
    lo = (uint64_t) (BENCH_HIST_SUB + i % BENCH_HIST_SUB) << (e - 7);
    width = 1ull << (e - 7);

    if (lo + width / 2 > h->max) {
        return (double) h->max;
    }

    return (double) (lo + width / 2);
}


/* --- the timer heap: each call's next wake-up ----------------------------- */


static void
bench_heap_swap(unsigned a, unsigned b)
{
    bench_call_t  *t;

    t = bench_heap[a];
    bench_heap[a] = bench_heap[b];
    bench_heap[b] = t;
    bench_heap[a]->heap_pos = a;
    bench_heap[b]->heap_pos = b;
}


static void
bench_heap_fix(unsigned i)
{
    unsigned  p, l, r, m;

    while (i > 0) {
        p = (i - 1) / 2;

        if (bench_heap[p]->wake <= bench_heap[i]->wake) {
            break;
        }

        bench_heap_swap(i, p);
        i = p;
    }

    for ( ;; ) {
        l = 2 * i + 1;
        r = l + 1;
        m = i;

        if (l < bench_heap_len && bench_heap[l]->wake < bench_heap[m]->wake) {
            m = l;
        }

        if (r < bench_heap_len && bench_heap[r]->wake < bench_heap[m]->wake) {
            m = r;
        }

        if (m == i) {
            break;
        }

        bench_heap_swap(i, m);
        i = m;
    }
}


static void
bench_heap_remove(bench_call_t *c)
{
    unsigned  i;

    if (c->heap_pos == UINT_MAX) {
        return;
    }

    i = c->heap_pos;
    c->heap_pos = UINT_MAX;
    bench_heap_len--;

    if (i == bench_heap_len) {
        return;
    }

    bench_heap[i] = bench_heap[bench_heap_len];
    bench_heap[i]->heap_pos = i;
    bench_heap_fix(i);
}


static void
bench_heap_set(bench_call_t *c, uint64_t wake)
{
    if (wake == UINT64_MAX) {
        bench_heap_remove(c);
        return;
    }

    c->wake = wake;

    if (c->heap_pos == UINT_MAX) {
        c->heap_pos = bench_heap_len;
        bench_heap[bench_heap_len++] = c;
    }

    bench_heap_fix(c->heap_pos);
}


/* --- sending -------------------------------------------------------------- */


static int
bench_load_send(bench_call_t *c, unsigned opcode, const void *p, size_t n)
{
    uint32_t  r;
    uint8_t   mask[4];

    if (bench_buf_reserve(&c->out, n + VOICE_WS_MAX_HEADER) != 0) {
        return -1;
    }

    r = bench_load_random();
    memcpy(mask, &r, 4);

    c->out.len += voice_ws_frame_masked(c->out.data + c->out.len, opcode, p,
                                        n, mask);

    return 0;
}


static int
bench_load_flush(bench_call_t *c)
{
    ssize_t             n;
    uint64_t            left;
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

            return -1;
        }

        c->out.pos += (size_t) n;
    }

    left = c->out.len - c->out.pos;

    if (left == 0) {
        c->out.pos = 0;
        c->out.len = 0;

    } else {
        bench_st.backlog_events++;

        if (left > bench_st.backlog_max) {
            bench_st.backlog_max = left;
        }
    }

    if ((left > 0) != c->want_out) {
        c->want_out = left > 0;
        ev.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0);
        ev.data.ptr = c;
        epoll_ctl(bench_ep, EPOLL_CTL_MOD, c->fd, &ev);
    }

    return 0;
}


static void
bench_load_send_frame(bench_call_t *c, uint64_t now)
{
    int            n;
    char           msg[512];
    uint8_t        audio[BENCH_FRAME];
    uint32_t       f;
    bench_slot_t  *s;

    f = c->frames;

    memcpy(audio, bench_magic, 4);
    audio[4] = (uint8_t) (c->index >> 24);
    audio[5] = (uint8_t) (c->index >> 16);
    audio[6] = (uint8_t) (c->index >> 8);
    audio[7] = (uint8_t) c->index;
    audio[8] = (uint8_t) (f >> 24);
    audio[9] = (uint8_t) (f >> 16);
    audio[10] = (uint8_t) (f >> 8);
    audio[11] = (uint8_t) f;
    memset(audio + 12, 0xff, BENCH_FRAME - 12);

    n = snprintf(msg, sizeof(msg),
                 "{\"event\":\"media\",\"sequenceNumber\":\"%u\","
                 "\"media\":{\"track\":\"inbound\",\"chunk\":\"%u\","
                 "\"timestamp\":\"%llu\",\"payload\":\"",
                 (unsigned) ++c->seq, (unsigned) f + 1,
                 (unsigned long long) f * 20);

    n += (int) voice_b64_encode(msg + n, audio, BENCH_FRAME);
    n += snprintf(msg + n, sizeof(msg) - (size_t) n,
                  "\"},\"streamSid\":\"%s\"}", c->stream_sid);

    s = &c->ring[f % BENCH_RING];

    /* a frame this old that never came back is lost */

    if ((s->flags & (BENCH_SLOT_USED | BENCH_SLOT_ECHOED | BENCH_SLOT_WINDOW))
        == (BENCH_SLOT_USED | BENCH_SLOT_WINDOW))
    {
        bench_st.window_lost++;
    }

    s->sent = now;
    s->frame = f;
    s->flags = BENCH_SLOT_USED | (bench_win_on ? BENCH_SLOT_WINDOW : 0);

    if (bench_win_on) {
        bench_st.window_sent++;
    }

    c->frames++;
    bench_st.frames_sent++;

    (void) bench_load_send(c, VOICE_WS_OP_TEXT, msg, (size_t) n);
}


static void
bench_load_ack_mark(bench_call_t *c, const char *name)
{
    int   n;
    char  msg[256];

    n = snprintf(msg, sizeof(msg),
                 "{\"event\":\"mark\",\"sequenceNumber\":\"%u\","
                 "\"streamSid\":\"%s\",\"mark\":{\"name\":\"%s\"}}",
                 (unsigned) ++c->seq, c->stream_sid, name);

    (void) bench_load_send(c, VOICE_WS_OP_TEXT, msg, (size_t) n);
    bench_st.marks_acked++;
}


/* the marks whose audio has played by "until" */

static void
bench_load_ack_marks(bench_call_t *c, uint64_t until)
{
    bench_mark_t  *m;

    while (c->mark_len > 0) {
        m = &c->marks[c->mark_head];

        if (m->due > until) {
            break;
        }

        bench_load_ack_mark(c, m->name);
        c->mark_head = (c->mark_head + 1) % BENCH_MARKS;
        c->mark_len--;
    }
}


/* --- connecting ----------------------------------------------------------- */


static void
bench_load_connect(bench_call_t *c, uint64_t now)
{
    int                 fd, one;
    struct epoll_event  ev;

    bench_st.attempted++;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        bench_load_fail(c, BENCH_FAIL_OTHER, now);
        return;
    }

    one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    c->fd = fd;
    c->state = BENCH_CALL_CONNECTING;
    c->connect_at = now;

    if (connect(fd, (struct sockaddr *) &bench_addr, sizeof(bench_addr)) != 0
        && errno != EINPROGRESS)
    {
        bench_load_fail(c, errno == ECONNREFUSED ? BENCH_FAIL_REFUSED
                                                 : BENCH_FAIL_OTHER, now);
        return;
    }

    ev.events = EPOLLOUT;
    ev.data.ptr = c;
    c->want_out = 1;

    if (epoll_ctl(bench_ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        bench_load_fail(c, BENCH_FAIL_OTHER, now);
        return;
    }

    bench_open++;
}


static void
bench_load_send_upgrade(bench_call_t *c, uint64_t now)
{
    int        n, err;
    char       req[1024];
    uint8_t    raw[16];
    socklen_t  len;

    err = 0;
    len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);

    if (err != 0) {
        bench_load_fail(c, err == ECONNREFUSED ? BENCH_FAIL_REFUSED
                                               : BENCH_FAIL_OTHER, now);
        return;
    }

    RAND_bytes(raw, sizeof(raw));
    n = (int) voice_b64_encode(c->key, raw, sizeof(raw));
    c->key[n] = '\0';

    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\n"
                 "Host: %s\r\n"
                 "User-Agent: Twilio.TmeWs/1.0\r\n"
                 "Connection: Upgrade\r\n"
                 "Upgrade: websocket\r\n"
                 "Sec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "%s%s%s"
                 "Accept-Encoding: gzip\r\n\r\n",
                 bench_opt.path, bench_host_header, c->key,
                 bench_signature[0] ? "x-twilio-signature: " : "",
                 bench_signature, bench_signature[0] ? "\r\n" : "");

    c->state = BENCH_CALL_HANDSHAKE;

    if (bench_buf_append(&c->out, req, (size_t) n) != 0
        || bench_load_flush(c) != 0)
    {
        bench_load_fail(c, BENCH_FAIL_OTHER, now);
    }
}


static void
bench_load_settle(uint64_t now)
{
    bench_settled++;
    bench_settled_at = now;
}


static void
bench_load_open(bench_call_t *c, uint64_t now)
{
    int       n;
    char      msg[1024];
    uint64_t  phase, k;

    c->state = BENCH_CALL_OPEN;
    c->connected = 1;
    bench_st.connected++;
    bench_load_settle(now);

    n = snprintf(msg, sizeof(msg),
                 "{\"event\":\"connected\",\"protocol\":\"Call\","
                 "\"version\":\"1.0.0\"}");
    (void) bench_load_send(c, VOICE_WS_OP_TEXT, msg, (size_t) n);

    c->seq = 1;

    n = snprintf(msg, sizeof(msg),
                 "{\"event\":\"start\",\"sequenceNumber\":\"1\","
                 "\"start\":{\"accountSid\":\"%s\",\"streamSid\":\"%s\","
                 "\"callSid\":\"%s\",\"tracks\":[\"inbound\"],"
                 "\"customParameters\":{\"callSid\":\"%s\","
                 "\"phoneNumber\":\"+14155550123\","
                 "\"direction\":\"outbound\"},"
                 "\"mediaFormat\":{\"encoding\":\"audio/x-mulaw\","
                 "\"sampleRate\":8000,\"channels\":1}},"
                 "\"streamSid\":\"%s\"}",
                 bench_account_sid, c->stream_sid, c->call_sid, c->call_sid,
                 c->stream_sid);
    (void) bench_load_send(c, VOICE_WS_OP_TEXT, msg, (size_t) n);

    /* the schedules are staggered: call i's frames fall i % 20 ms into
     * each 20 ms period, so no millisecond carries all of them */

    phase = (uint64_t) (c->index % 20) * BENCH_MS;

    if (now <= bench_t0 + phase) {
        c->base = bench_t0 + phase;

    } else {
        k = (now - bench_t0 - phase + BENCH_PERIOD - 1) / BENCH_PERIOD;
        c->base = bench_t0 + phase + k * BENCH_PERIOD;
    }

    c->play_end = now;

    if (bench_load_flush(c) != 0) {
        bench_load_finish(c);
        return;
    }

    bench_load_schedule(c);
}


static void
bench_load_handshake(bench_call_t *c, uint64_t now)
{
    int          status;
    char         accept[32];
    size_t       n, vn, hn;
    const char  *head, *end, *v;

    head = (const char *) c->in.data;
    n = c->in.len;

    end = memmem(head, n, "\r\n\r\n", 4);

    if (end == NULL) {
        if (n > 16384) {
            bench_load_fail(c, BENCH_FAIL_OTHER, now);
        }
        return;
    }

    hn = (size_t) (end + 4 - head);

    status = 0;
    if (n > 12 && memcmp(head, "HTTP/1.", 7) == 0) {
        status = atoi(head + 9);
    }

    if (status != 101) {
        bench_st.last_status = status;
        bench_load_fail(c, BENCH_FAIL_STATUS, now);
        return;
    }

    bench_ws_accept(accept, c->key, strlen(c->key));
    v = bench_http_header(head, hn, "Sec-WebSocket-Accept", &vn);

    if (v == NULL || vn != strlen(accept) || memcmp(v, accept, vn) != 0) {
        bench_st.last_status = 101;
        bench_load_fail(c, BENCH_FAIL_STATUS, now);
        return;
    }

    c->in.pos = hn;

    c->msg = malloc(BENCH_MSG_MAX);
    if (c->msg == NULL) {
        bench_load_fail(c, BENCH_FAIL_OTHER, now);
        return;
    }

    voice_ws_parser_init(&c->ws, VOICE_WS_CLIENT, c->msg, BENCH_MSG_MAX);

    bench_load_open(c, now);
}


/* --- receiving ------------------------------------------------------------ */


static void
bench_load_echo(bench_call_t *c, const uint8_t *p, uint64_t now)
{
    uint32_t       idx, f;
    uint64_t       us;
    bench_slot_t  *s;

    idx = (uint32_t) p[4] << 24 | (uint32_t) p[5] << 16
          | (uint32_t) p[6] << 8 | p[7];
    f = (uint32_t) p[8] << 24 | (uint32_t) p[9] << 16
        | (uint32_t) p[10] << 8 | p[11];

    if (idx != c->index) {
        bench_st.misrouted++;
        return;
    }

    if (memcmp(p + 12, bench_ones, BENCH_FRAME - 12) != 0) {
        bench_st.corrupt++;
    }

    s = &c->ring[f % BENCH_RING];

    if (!(s->flags & BENCH_SLOT_USED) || s->frame != f || f >= c->frames) {
        bench_st.unknown++;
        return;
    }

    if (s->flags & BENCH_SLOT_ECHOED) {
        bench_st.duplicates++;
        return;
    }

    s->flags |= BENCH_SLOT_ECHOED;
    bench_st.frames_echoed++;

    if (f < BENCH_START_FRAMES) {
        c->start_echoed |= 1ull << f;
    }

    us = (now - s->sent) / 1000;

    bench_hist_add(&bench_hist_all, us);

    if (s->flags & BENCH_SLOT_WINDOW) {
        bench_hist_add(&bench_hist_window, us);
    }
}


/* splits received audio into tagged frames; p starts with the carry */

static void
bench_load_audio(bench_call_t *c, uint8_t *p, size_t n, uint64_t now)
{
    size_t    pos, keep;
    uint8_t  *q;

    pos = 0;

    while (n - pos >= BENCH_FRAME) {
        if (memcmp(p + pos, bench_magic, 4) == 0) {
            bench_load_echo(c, p + pos, now);
            pos += BENCH_FRAME;
            continue;
        }

        /* out of step: find the next tag */

        q = memmem(p + pos + 1, n - pos - 1, bench_magic, 4);

        if (q == NULL) {
            keep = (n - pos < 3) ? n - pos : 3;
            bench_st.garbage_bytes += n - pos - keep;
            pos = n - keep;
            break;
        }

        bench_st.garbage_bytes += (uint64_t) (q - (p + pos));
        pos = (size_t) (q - p);
    }

    c->carry_len = n - pos;
    memcpy(c->carry, p + pos, c->carry_len);
}


static void
bench_load_media(bench_call_t *c, const char *payload, size_t len,
    uint64_t now)
{
    long    n;
    size_t  need;

    need = c->carry_len + len / 4 * 3 + 4;

    if (need > bench_scratch_size) {
        free(bench_scratch);
        bench_scratch_size = need * 2;
        bench_scratch = malloc(bench_scratch_size);

        if (bench_scratch == NULL) {
            fprintf(stderr, "bench_load: out of memory\n");
            exit(1);
        }
    }

    memcpy(bench_scratch, c->carry, c->carry_len);

    n = voice_b64_decode(bench_scratch + c->carry_len,
                         bench_scratch_size - c->carry_len, payload, len);

    if (n < 0) {
        bench_st.protocol_errors++;
        return;
    }

    /* it plays after what is already queued, in real time */

    if (c->play_end < now) {
        c->play_end = now;
    }

    c->play_end += (uint64_t) n * BENCH_MS / 8;

    bench_load_audio(c, bench_scratch, c->carry_len + (size_t) n, now);
}


static void
bench_load_mark(bench_call_t *c, const char *name, size_t len, uint64_t now)
{
    char           buf[BENCH_MARK_NAME];
    uint64_t       due;
    bench_mark_t  *m;

    if (len >= BENCH_MARK_NAME) {
        bench_st.protocol_errors++;
        return;
    }

    /* nothing is playing: the mark is reached already */

    if (c->play_end <= now && c->mark_len == 0) {
        memcpy(buf, name, len);
        buf[len] = '\0';
        bench_load_ack_mark(c, buf);
        return;
    }

    if (c->mark_len == BENCH_MARKS) {
        bench_load_ack_mark(c, c->marks[c->mark_head].name);
        bench_st.marks_forced++;
        c->mark_head = (c->mark_head + 1) % BENCH_MARKS;
        c->mark_len--;
    }

    /* acknowledged on a 1 ms grid, so the wake-ups stay few */

    due = c->play_end;
    due = bench_t0 + (due - bench_t0 + BENCH_MS - 1) / BENCH_MS * BENCH_MS;

    m = &c->marks[(c->mark_head + c->mark_len) % BENCH_MARKS];
    m->due = due;
    memcpy(m->name, name, len);
    m->name[len] = '\0';
    c->mark_len++;

    if (c->mark_len == 1) {
        bench_load_schedule(c);
    }
}


static void
bench_load_message(bench_call_t *c, const char *json, size_t len,
    uint64_t now)
{
    int          m;
    size_t       en, vn;
    const char  *event, *v;

    if (bench_json_parse(json, len) != 0) {
        bench_st.protocol_errors++;
        return;
    }

    event = bench_json_str(json, 0, "event", &en);

    if (event == NULL) {
        bench_st.protocol_errors++;
        return;
    }

    if (en == 5 && memcmp(event, "media", 5) == 0) {
        bench_st.media_in++;
        m = bench_json_obj(json, 0, "media");
        v = (m < 0) ? NULL : bench_json_str(json, m, "payload", &vn);

        if (v == NULL) {
            bench_st.protocol_errors++;
            return;
        }

        bench_load_media(c, v, vn, now);
        return;
    }

    if (en == 4 && memcmp(event, "mark", 4) == 0) {
        bench_st.marks_in++;
        m = bench_json_obj(json, 0, "mark");
        v = (m < 0) ? NULL : bench_json_str(json, m, "name", &vn);

        if (v == NULL) {
            bench_st.protocol_errors++;
            return;
        }

        bench_load_mark(c, v, vn, now);
        return;
    }

    if (en == 5 && memcmp(event, "clear", 5) == 0) {

        /* the queued audio is dropped: every pending mark comes back */

        bench_st.clears_in++;
        c->play_end = now;
        bench_load_ack_marks(c, UINT64_MAX);
        return;
    }

    bench_st.other_in++;
}


static void
bench_load_server_close(bench_call_t *c, const uint8_t *p, size_t n)
{
    unsigned  code, live;

    code = (n >= 2) ? (unsigned) p[0] << 8 | p[1] : 1005;
    live = (c->state == BENCH_CALL_OPEN && bench_phase < BENCH_PHASE_CLOSE);

    if (live && code == 1013) {

        /* over capacity: the call was refused, politely */

        c->refused = 1;
        bench_st.refused++;

    } else if (live) {
        c->dropped = 1;
        bench_st.dropped++;

        snprintf(bench_st.drop_reason, sizeof(bench_st.drop_reason),
                 "close %u %.*s", code, (int) (n > 2 ? n - 2 : 0),
                 (const char *) p + 2);
    }

    if (c->state == BENCH_CALL_OPEN) {
        (void) bench_load_send(c, VOICE_WS_OP_CLOSE, p, n >= 2 ? 2 : 0);
        (void) bench_load_flush(c);
    }

    bench_load_finish(c);
}


/*
 * Parses what c->in holds with the bridge's own frame parser (common/
 * voice_ws.c, as a client: nginx's frames are not masked), acting on each
 * event.  0: go on, 1: the call is finished.
 */

static int
bench_load_frames(bench_call_t *c, uint64_t now)
{
    int                rc;
    const uint8_t     *pos, *end;
    voice_ws_event_t   ev;

    pos = c->in.data + c->in.pos;
    end = c->in.data + c->in.len;

    for ( ;; ) {
        if (c->state == BENCH_CALL_DONE) {
            /* a message ended the call: its buffers are gone */
            return 1;
        }

        rc = voice_ws_parse(&c->ws, &pos, end, &ev);

        switch (rc) {

        case VOICE_WS_AGAIN:
            /* the parser keeps what it needs of a frame split across reads */
            c->in.pos = (size_t) (pos - c->in.data);
            return 0;

        case VOICE_WS_MESSAGE:
            if (ev.opcode != VOICE_WS_OP_TEXT) {
                bench_st.protocol_errors++;
                break;
            }

            bench_load_message(c, (const char *) ev.data, ev.len, now);
            break;

        case VOICE_WS_CLOSE:
            bench_load_server_close(c, ev.data, ev.len);
            return 1;

        case VOICE_WS_PING:
            (void) bench_load_send(c, VOICE_WS_OP_PONG, ev.data, ev.len);
            break;

        case VOICE_WS_PONG:
            break;

        default: /* VOICE_WS_ERROR */
            bench_st.protocol_errors++;
            bench_load_finish(c);
            return 1;
        }
    }
}


static void
bench_load_read(bench_call_t *c, uint64_t now)
{
    int      one;
    ssize_t  n;

    if (bench_buf_reserve(&c->in, BENCH_READ) != 0) {
        bench_load_finish(c);
        return;
    }

    n = read(c->fd, c->in.data + c->in.len, c->in.size - c->in.len);

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }

    if (n <= 0) {
        if (c->state == BENCH_CALL_HANDSHAKE) {
            bench_load_fail(c, BENCH_FAIL_OTHER, now);
            return;
        }

        if (c->state == BENCH_CALL_OPEN && bench_phase < BENCH_PHASE_CLOSE) {
            c->dropped = 1;
            bench_st.dropped++;
            snprintf(bench_st.drop_reason, sizeof(bench_st.drop_reason),
                     "connection closed without a close frame");
        }

        bench_load_finish(c);
        return;
    }

    c->in.len += (size_t) n;

    if (bench_opt.quickack) {
        one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
    }

    if (c->state == BENCH_CALL_HANDSHAKE) {
        bench_load_handshake(c, now);

        if (c->state != BENCH_CALL_OPEN) {
            return;
        }
    }

    if (bench_load_frames(c, now)) {
        return;
    }

    if (c->in.pos == c->in.len) {
        c->in.pos = 0;
        c->in.len = 0;
    }

    if (bench_load_flush(c) != 0) {
        bench_load_finish(c);
    }
}


/* --- the calls' lives ----------------------------------------------------- */


static void
bench_load_finish(bench_call_t *c)
{
    if (c->fd >= 0) {
        epoll_ctl(bench_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        bench_open--;
    }

    bench_heap_remove(c);
    c->state = BENCH_CALL_DONE;
    c->mark_len = 0;

    bench_buf_free(&c->in);
    bench_buf_free(&c->out);
    free(c->msg);
    c->msg = NULL;
}


static void
bench_load_fail(bench_call_t *c, bench_fail_e why, uint64_t now)
{
    bench_st.failed[why]++;
    bench_load_settle(now);
    bench_load_finish(c);
}


static void
bench_load_schedule(bench_call_t *c)
{
    uint64_t  wake, due;

    wake = UINT64_MAX;

    if (c->state == BENCH_CALL_OPEN) {
        if (bench_phase == BENCH_PHASE_RUN) {
            due = c->base + (uint64_t) c->frames * BENCH_PERIOD;

            if (due < bench_t_end) {
                wake = due;
            }
        }

        /* while frames go out, marks go with them (see bench_load_wake) */

        if (wake == UINT64_MAX && c->mark_len > 0) {
            wake = c->marks[c->mark_head].due;
        }
    }

    bench_heap_set(c, wake);
}


static void
bench_load_wake(bench_call_t *c)
{
    uint64_t  now, due;

    now = bench_now_ns();

    if (c->state == BENCH_CALL_IDLE) {
        bench_heap_remove(c);
        bench_load_connect(c, now);
        return;
    }

    if (c->state != BENCH_CALL_OPEN) {
        bench_heap_remove(c);
        return;
    }

    if (bench_phase == BENCH_PHASE_RUN) {
        for ( ;; ) {
            due = c->base + (uint64_t) c->frames * BENCH_PERIOD;

            if (due > now || due >= bench_t_end) {
                break;
            }

            if (now - due > bench_st.late_max) {
                bench_st.late_max = now - due;
            }

            if (bench_win_on && now - due > bench_st.late_window_max) {
                bench_st.late_window_max = now - due;
            }

            if (now - due > BENCH_LATE) {
                bench_st.late_frames++;
            }

            bench_load_send_frame(c, now);
        }
    }

    /*
     * Twilio plays audio in 20 ms packets: a mark whose audio has played
     * is acknowledged on the call's next 20 ms tick, with its frame, which
     * spares a wake-up and a send per mark.  With no frames left to send,
     * marks wake the call on their own.
     */

    bench_load_ack_marks(c, now + BENCH_MS);

    if (bench_load_flush(c) != 0) {
        bench_load_finish(c);
        return;
    }

    bench_load_schedule(c);
}


static void
bench_load_event(bench_call_t *c, uint32_t events)
{
    uint64_t  now;

    now = bench_now_ns();

    switch (c->state) {

    case BENCH_CALL_CONNECTING:
        bench_load_send_upgrade(c, now);
        return;

    case BENCH_CALL_HANDSHAKE:
    case BENCH_CALL_OPEN:
    case BENCH_CALL_CLOSING:
        if ((events & EPOLLOUT) && bench_load_flush(c) != 0) {
            if (c->state == BENCH_CALL_HANDSHAKE) {
                bench_load_fail(c, BENCH_FAIL_OTHER, now);
            } else {
                bench_load_finish(c);
            }
            return;
        }

        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            bench_load_read(c, now);
        }

        return;

    default:
        return;
    }
}


static void
bench_load_timeouts(uint64_t now)
{
    unsigned       i;
    bench_call_t  *c;

    for (i = 0; i < bench_opt.calls; i++) {
        c = &bench_calls[i];

        if ((c->state == BENCH_CALL_CONNECTING
             || c->state == BENCH_CALL_HANDSHAKE)
            && now - c->connect_at > BENCH_CONNECT_TIMEOUT)
        {
            bench_load_fail(c, BENCH_FAIL_TIMEOUT, now);
        }
    }
}


static void
bench_load_event_line(const char *what)
{
    fprintf(stderr, "bench_load: event %s %.3f\n", what,
            (double) (bench_now_ns() - bench_t0) / 1e9);
}


/* frames of the window and of the first second that never came back */

static void
bench_load_count_losses(void)
{
    unsigned       i, j, n;
    uint64_t       mask;
    bench_call_t  *c;
    bench_slot_t  *s;

    for (i = 0; i < bench_opt.calls; i++) {
        c = &bench_calls[i];

        if (!c->connected || c->refused) {
            continue;
        }

        for (j = 0; j < BENCH_RING; j++) {
            s = &c->ring[j];

            if ((s->flags & (BENCH_SLOT_USED | BENCH_SLOT_ECHOED
                             | BENCH_SLOT_WINDOW))
                == (BENCH_SLOT_USED | BENCH_SLOT_WINDOW))
            {
                bench_st.window_lost++;
            }
        }

        n = c->frames < BENCH_START_FRAMES ? c->frames : BENCH_START_FRAMES;
        mask = (n == 64) ? ~0ull : (1ull << n) - 1;

        bench_st.start_sent += n;
        bench_st.start_lost += (uint64_t) n
                               - (uint64_t) __builtin_popcountll(
                                     c->start_echoed & mask);
    }
}


static void
bench_load_hangup(void)
{
    int            n;
    char           msg[512];
    unsigned       i;
    bench_call_t  *c;

    static const uint8_t  normal[2] = { 0x03, 0xe8 };

    for (i = 0; i < bench_opt.calls; i++) {
        c = &bench_calls[i];

        if (c->state != BENCH_CALL_OPEN) {
            if (c->state != BENCH_CALL_DONE) {
                bench_load_finish(c);
            }
            continue;
        }

        n = snprintf(msg, sizeof(msg),
                     "{\"event\":\"stop\",\"sequenceNumber\":\"%u\","
                     "\"stop\":{\"accountSid\":\"%s\",\"callSid\":\"%s\"},"
                     "\"streamSid\":\"%s\"}",
                     (unsigned) ++c->seq, bench_account_sid, c->call_sid,
                     c->stream_sid);

        (void) bench_load_send(c, VOICE_WS_OP_TEXT, msg, (size_t) n);
        (void) bench_load_send(c, VOICE_WS_OP_CLOSE, normal, 2);

        c->state = BENCH_CALL_CLOSING;
        bench_heap_remove(c);

        if (bench_load_flush(c) != 0) {
            bench_load_finish(c);
        }
    }
}


/* --- the main loop -------------------------------------------------------- */


static void
bench_load_phases(uint64_t now)
{
    if (!bench_win_on && !bench_win_done && bench_phase == BENCH_PHASE_RUN
        && bench_settled == bench_opt.calls
        && now >= bench_settled_at + BENCH_SETTLE && now < bench_t_end)
    {
        bench_win_on = 1;
        bench_win_begin = now;
        getrusage(RUSAGE_SELF, &bench_ru_win_begin);
        fprintf(stderr, "bench_load: %llu calls connected, %llu failed\n",
                (unsigned long long) bench_st.connected,
                (unsigned long long) (bench_settled - bench_st.connected));
        bench_load_event_line("steady-begin");
    }

    if (bench_phase == BENCH_PHASE_RUN && now >= bench_t_end) {
        bench_phase = BENCH_PHASE_DRAIN;

        if (!bench_win_on) {
            /* the ramp never settled: an empty window */
            bench_win_begin = now;
            getrusage(RUSAGE_SELF, &bench_ru_win_begin);
            bench_load_event_line("steady-begin");
        }

        bench_win_on = 0;
        bench_win_done = 1;
        bench_win_end = now;
        getrusage(RUSAGE_SELF, &bench_ru_win_end);
        bench_load_event_line("steady-end");
    }

    if (bench_phase == BENCH_PHASE_DRAIN && now >= bench_t_end + BENCH_DRAIN) {
        bench_load_count_losses();
        bench_phase = BENCH_PHASE_CLOSE;
        bench_load_hangup();
    }

    if (bench_phase == BENCH_PHASE_CLOSE
        && (bench_open == 0
            || now >= bench_t_end + BENCH_DRAIN + BENCH_CLOSE_WAIT))
    {
        bench_phase = BENCH_PHASE_OVER;
    }
}


static uint64_t
bench_load_next_deadline(void)
{
    uint64_t  t;

    t = UINT64_MAX;

    if (bench_heap_len > 0) {
        t = bench_heap[0]->wake;
    }

    switch (bench_phase) {
    case BENCH_PHASE_RUN:
        if (bench_t_end < t) {
            t = bench_t_end;
        }
        break;
    case BENCH_PHASE_DRAIN:
        if (bench_t_end + BENCH_DRAIN < t) {
            t = bench_t_end + BENCH_DRAIN;
        }
        break;
    default:
        break;
    }

    return t;
}


static void
bench_load_run(void)
{
    int                 n, i;
    uint64_t            now, deadline, next_check, wait;
    struct timespec     ts;
    struct epoll_event  events[BENCH_EVENTS];

    next_check = 0;

    while (bench_phase != BENCH_PHASE_OVER) {
        if (bench_interrupted) {
            break;
        }

        now = bench_now_ns();

        while (bench_heap_len > 0 && bench_heap[0]->wake <= now) {
            bench_load_wake(bench_heap[0]);
        }

        now = bench_now_ns();

        if (now >= next_check) {
            bench_load_timeouts(now);
            next_check = now + 100 * BENCH_MS;
        }

        bench_load_phases(now);

        deadline = bench_load_next_deadline();

        if (next_check < deadline) {
            deadline = next_check;
        }

        now = bench_now_ns();
        wait = deadline > now ? deadline - now : 0;

        ts.tv_sec = (time_t) (wait / BENCH_SEC);
        ts.tv_nsec = (long) (wait % BENCH_SEC);

        n = epoll_pwait2(bench_ep, events, BENCH_EVENTS, &ts, NULL);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            perror("bench_load: epoll_pwait2");
            exit(1);
        }

        for (i = 0; i < n; i++) {
            bench_load_event(events[i].data.ptr, events[i].events);
        }
    }
}


/* --- results -------------------------------------------------------------- */


static double
bench_load_cpu_ms(const struct rusage *a, const struct rusage *b)
{
    double  s;

    s = (double) (b->ru_utime.tv_sec - a->ru_utime.tv_sec)
        + (double) (b->ru_stime.tv_sec - a->ru_stime.tv_sec)
        + (double) (b->ru_utime.tv_usec - a->ru_utime.tv_usec) / 1e6
        + (double) (b->ru_stime.tv_usec - a->ru_stime.tv_usec) / 1e6;

    return s * 1000;
}


static void
bench_load_report(uint64_t started, uint64_t ended)
{
    char            last[32];
    double          wall_s, win_s, cpu_ms, win_cpu_ms, cpu_pct, win_pct;
    double          p50, p99, max, a50, a99, amax;
    uint8_t        *q;
    uint64_t        failed;
    struct rusage   ru_end;

    /* the peer's close reason, as a JSON string: 6 bytes a byte at most */
    uint8_t         reason[6 * sizeof(bench_st.drop_reason) + 3];

    getrusage(RUSAGE_SELF, &ru_end);

    q = voice_json_put_str(reason, reason + sizeof(reason) - 1,
                           (const uint8_t *) bench_st.drop_reason,
                           strlen(bench_st.drop_reason));
    *q = '\0';

    wall_s = (double) (ended - started) / 1e9;
    win_s = (double) (bench_win_end - bench_win_begin) / 1e9;
    cpu_ms = bench_load_cpu_ms(&bench_ru_begin, &ru_end);
    win_cpu_ms = bench_load_cpu_ms(&bench_ru_win_begin, &bench_ru_win_end);
    cpu_pct = wall_s > 0 ? cpu_ms / 10 / wall_s : 0;
    win_pct = win_s > 0 ? win_cpu_ms / 10 / win_s : 0;

    p50 = bench_hist_quantile(&bench_hist_window, 0.50) / 1000;
    p99 = bench_hist_quantile(&bench_hist_window, 0.99) / 1000;
    max = (double) bench_hist_window.max / 1000;
    a50 = bench_hist_quantile(&bench_hist_all, 0.50) / 1000;
    a99 = bench_hist_quantile(&bench_hist_all, 0.99) / 1000;
    amax = (double) bench_hist_all.max / 1000;

    failed = bench_st.failed[BENCH_FAIL_REFUSED]
             + bench_st.failed[BENCH_FAIL_STATUS]
             + bench_st.failed[BENCH_FAIL_TIMEOUT]
             + bench_st.failed[BENCH_FAIL_OTHER]
             + (bench_opt.calls - bench_st.attempted);

    if (bench_opt.json) {
        printf("{\"calls\":%u,\"attempted\":%llu,\"connected\":%llu,"
               "\"failed\":%llu,\"failed_refused\":%llu,"
               "\"failed_status\":%llu,\"last_status\":%d,"
               "\"failed_timeout\":%llu,\"failed_other\":%llu,"
               "\"dropped\":%llu,\"drop_reason\":%s,"
               "\"refused\":%llu,"
               "\"seconds\":%u,\"wall_s\":%.3f,\"window_s\":%.3f,"
               "\"frames_sent\":%llu,\"frames_echoed\":%llu,"
               "\"window_frames\":%llu,\"frames_lost\":%llu,"
               "\"start_frames\":%llu,\"start_lost\":%llu,"
               "\"rtt_samples\":%llu,\"rtt_p50_ms\":%.2f,"
               "\"rtt_p99_ms\":%.2f,\"rtt_max_ms\":%.2f,"
               "\"all_rtt_p50_ms\":%.2f,\"all_rtt_p99_ms\":%.2f,"
               "\"all_rtt_max_ms\":%.2f,"
               "\"late_max_ms\":%.2f,\"late_window_max_ms\":%.2f,"
               "\"late_frames\":%llu,"
               "\"duplicates\":%llu,\"misrouted\":%llu,\"unknown\":%llu,"
               "\"corrupt\":%llu,\"garbage_bytes\":%llu,"
               "\"media_in\":%llu,\"marks_in\":%llu,\"marks_acked\":%llu,"
               "\"marks_forced\":%llu,\"clears_in\":%llu,"
               "\"other_in\":%llu,\"protocol_errors\":%llu,"
               "\"tool_cpu_ms\":%.0f,\"tool_cpu_pct\":%.1f,"
               "\"tool_window_cpu_ms\":%.0f,\"tool_window_cpu_pct\":%.1f,"
               "\"backlog_max_bytes\":%llu,\"backlog_events\":%llu,"
               "\"interrupted\":%s}\n",
               bench_opt.calls,
               (unsigned long long) bench_st.attempted,
               (unsigned long long) bench_st.connected,
               (unsigned long long) failed,
               (unsigned long long) bench_st.failed[BENCH_FAIL_REFUSED],
               (unsigned long long) bench_st.failed[BENCH_FAIL_STATUS],
               bench_st.last_status,
               (unsigned long long) bench_st.failed[BENCH_FAIL_TIMEOUT],
               (unsigned long long) bench_st.failed[BENCH_FAIL_OTHER],
               (unsigned long long) bench_st.dropped,
               (const char *) reason,
               (unsigned long long) bench_st.refused,
               bench_opt.seconds, wall_s, win_s,
               (unsigned long long) bench_st.frames_sent,
               (unsigned long long) bench_st.frames_echoed,
               (unsigned long long) bench_st.window_sent,
               (unsigned long long) bench_st.window_lost,
               (unsigned long long) bench_st.start_sent,
               (unsigned long long) bench_st.start_lost,
               (unsigned long long) bench_hist_window.count,
               p50, p99, max, a50, a99, amax,
               (double) bench_st.late_max / 1e6,
               (double) bench_st.late_window_max / 1e6,
               (unsigned long long) bench_st.late_frames,
               (unsigned long long) bench_st.duplicates,
               (unsigned long long) bench_st.misrouted,
               (unsigned long long) bench_st.unknown,
               (unsigned long long) bench_st.corrupt,
               (unsigned long long) bench_st.garbage_bytes,
               (unsigned long long) bench_st.media_in,
               (unsigned long long) bench_st.marks_in,
               (unsigned long long) bench_st.marks_acked,
               (unsigned long long) bench_st.marks_forced,
               (unsigned long long) bench_st.clears_in,
               (unsigned long long) bench_st.other_in,
               (unsigned long long) bench_st.protocol_errors,
               cpu_ms, cpu_pct, win_cpu_ms, win_pct,
               (unsigned long long) bench_st.backlog_max,
               (unsigned long long) bench_st.backlog_events,
               bench_interrupted ? "true" : "false");
        fflush(stdout);
        return;
    }

    printf("bench_load: %u calls to %s:%u%s, %u s of full load, "
           "ramp %u calls/s\n",
           bench_opt.calls, bench_opt.host, bench_opt.port, bench_opt.path,
           bench_opt.seconds, bench_opt.ramp);
    last[0] = '\0';
    if (bench_st.last_status) {
        snprintf(last, sizeof(last), " [last %d]", bench_st.last_status);
    }

    printf("  calls     %llu attempted, %llu connected, %llu failed "
           "(refused %llu, non-101 %llu%s, timeout %llu, other %llu), "
           "%llu refused (1013), %llu dropped by the server%s%s\n",
           (unsigned long long) bench_st.attempted,
           (unsigned long long) bench_st.connected,
           (unsigned long long) failed,
           (unsigned long long) bench_st.failed[BENCH_FAIL_REFUSED],
           (unsigned long long) bench_st.failed[BENCH_FAIL_STATUS], last,
           (unsigned long long) bench_st.failed[BENCH_FAIL_TIMEOUT],
           (unsigned long long) bench_st.failed[BENCH_FAIL_OTHER],
           (unsigned long long) bench_st.refused,
           (unsigned long long) bench_st.dropped,
           bench_st.drop_reason[0] ? ": " : "", bench_st.drop_reason);
    printf("  window    %.1f s steady (%.1f s to %.1f s after the first "
           "connect)\n", win_s,
           (double) (bench_win_begin - bench_t0) / 1e9,
           (double) (bench_win_end - bench_t0) / 1e9);
    printf("  frames    %llu sent, %llu echoed; steady window: %llu sent, "
           "%llu lost; first second of each call: %llu sent, %llu lost\n",
           (unsigned long long) bench_st.frames_sent,
           (unsigned long long) bench_st.frames_echoed,
           (unsigned long long) bench_st.window_sent,
           (unsigned long long) bench_st.window_lost,
           (unsigned long long) bench_st.start_sent,
           (unsigned long long) bench_st.start_lost);
    printf("  rtt       p50 %.2f ms, p99 %.2f ms, max %.2f ms "
           "(steady window, %llu samples); all frames: p50 %.2f, "
           "p99 %.2f, max %.2f ms\n", p50, p99, max,
           (unsigned long long) bench_hist_window.count, a50, a99, amax);
    printf("  echoes    %llu duplicate, %llu misrouted, %llu unknown, "
           "%llu corrupt, %llu stray bytes\n",
           (unsigned long long) bench_st.duplicates,
           (unsigned long long) bench_st.misrouted,
           (unsigned long long) bench_st.unknown,
           (unsigned long long) bench_st.corrupt,
           (unsigned long long) bench_st.garbage_bytes);
    printf("  messages  %llu media, %llu marks (%llu acknowledged, "
           "%llu early), %llu clear, %llu other, %llu protocol errors\n",
           (unsigned long long) bench_st.media_in,
           (unsigned long long) bench_st.marks_in,
           (unsigned long long) bench_st.marks_acked,
           (unsigned long long) bench_st.marks_forced,
           (unsigned long long) bench_st.clears_in,
           (unsigned long long) bench_st.other_in,
           (unsigned long long) bench_st.protocol_errors);
    printf("  schedule  lateness max %.2f ms (steady window %.2f ms), "
           "%llu frames more than 5 ms late\n",
           (double) bench_st.late_max / 1e6,
           (double) bench_st.late_window_max / 1e6,
           (unsigned long long) bench_st.late_frames);
    printf("  tool cpu  %.0f ms, %.1f%% of wall; steady window %.1f%%\n",
           cpu_ms, cpu_pct, win_pct);
    printf("  backlog   max %llu bytes unsent (%llu times)\n",
           (unsigned long long) bench_st.backlog_max,
           (unsigned long long) bench_st.backlog_events);

    if (bench_interrupted) {
        printf("  INTERRUPTED\n");
    }
}


/* --- set-up --------------------------------------------------------------- */


static int
bench_load_setup(void)
{
    int               rc;
    char              sig[EVP_MAX_MD_SIZE];
    size_t            n;
    unsigned          i, mdlen;
    uint8_t           raw[16];
    const char       *h, *e;
    bench_call_t     *c;
    struct addrinfo   hints, *ai;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;

    rc = getaddrinfo(bench_opt.host, NULL, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "bench_load: %s: %s\n", bench_opt.host,
                gai_strerror(rc));
        return -1;
    }

    memcpy(&bench_addr, ai->ai_addr, sizeof(bench_addr));
    bench_addr.sin_port = htons((uint16_t) bench_opt.port);
    freeaddrinfo(ai);

    /* Host: the public name Twilio connects to */

    if (bench_opt.sign_url != NULL
        && (h = strstr(bench_opt.sign_url, "://")) != NULL)
    {
        h += 3;
        e = strchr(h, '/');
        n = e ? (size_t) (e - h) : strlen(h);
        snprintf(bench_host_header, sizeof(bench_host_header), "%.*s",
                 (int) n, h);

    } else {
        snprintf(bench_host_header, sizeof(bench_host_header), "%s:%u",
                 bench_opt.host, bench_opt.port);
    }

    /* every upgrade is signed over the same URL with no parameters */

    if (bench_opt.auth_token != NULL) {
        if (bench_opt.sign_url == NULL) {
            fprintf(stderr, "bench_load: --auth-token needs --sign-url\n");
            return -1;
        }

        if (HMAC(EVP_sha1(), bench_opt.auth_token,
                 (int) strlen(bench_opt.auth_token),
                 (const unsigned char *) bench_opt.sign_url,
                 strlen(bench_opt.sign_url), (unsigned char *) sig, &mdlen)
            == NULL)
        {
            fprintf(stderr, "bench_load: HMAC failed\n");
            return -1;
        }

        n = voice_b64_encode(bench_signature, (const uint8_t *) sig, mdlen);
        bench_signature[n] = '\0';
    }

    RAND_bytes((unsigned char *) &bench_rng, sizeof(bench_rng));
    bench_rng |= 1;

    memset(bench_ones, 0xff, sizeof(bench_ones));

    /* SIDs: a random half for the run, the call's index for the rest */

    RAND_bytes(raw, sizeof(raw));

    snprintf(bench_account_sid, sizeof(bench_account_sid),
             "AC%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x"
             "%02x%02x", raw[0], raw[1], raw[2], raw[3], raw[4], raw[5],
             raw[6], raw[7], raw[8], raw[9], raw[10], raw[11], raw[12],
             raw[13], raw[14], raw[15]);

    RAND_bytes(raw, 8);

    bench_calls = calloc(bench_opt.calls, sizeof(bench_call_t));
    bench_heap = calloc(bench_opt.calls, sizeof(bench_call_t *));

    if (bench_calls == NULL || bench_heap == NULL) {
        return -1;
    }

    for (i = 0; i < bench_opt.calls; i++) {
        c = &bench_calls[i];
        c->fd = -1;
        c->index = i;
        c->heap_pos = UINT_MAX;
        c->ring = calloc(BENCH_RING, sizeof(bench_slot_t));
        c->marks = calloc(BENCH_MARKS, sizeof(bench_mark_t));

        if (c->ring == NULL || c->marks == NULL) {
            return -1;
        }

        snprintf(c->call_sid, sizeof(c->call_sid),
                 "CA%02x%02x%02x%02x%02x%02x%02x%02x%016x",
                 raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6],
                 raw[7], i);
        snprintf(c->stream_sid, sizeof(c->stream_sid),
                 "MZ%02x%02x%02x%02x%02x%02x%02x%02x%016x",
                 raw[7], raw[6], raw[5], raw[4], raw[3], raw[2], raw[1],
                 raw[0], i);
    }

    bench_ep = epoll_create1(EPOLL_CLOEXEC);

    return bench_ep < 0 ? -1 : 0;
}


static unsigned
bench_load_num(const char *name, const char *s, unsigned min, unsigned max)
{
    char           *end;
    unsigned long   v;

    v = strtoul(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "bench_load: --%s: \"%s\" is not a number from "
                "%u to %u\n", name, s, min, max);
        exit(2);
    }

    return (unsigned) v;
}


int
main(int argc, char **argv)
{
    int               c;
    unsigned          i;
    uint64_t          started, ended, ramp;
    struct sigaction  sa;

    static const struct option  options[] = {
        { "host", required_argument, NULL, 'H' },
        { "port", required_argument, NULL, 'p' },
        { "path", required_argument, NULL, 'P' },
        { "sign-url", required_argument, NULL, 'u' },
        { "auth-token", required_argument, NULL, 'a' },
        { "calls", required_argument, NULL, 'n' },
        { "seconds", required_argument, NULL, 'd' },
        { "ramp-per-sec", required_argument, NULL, 'r' },
        { "json", no_argument, NULL, 'j' },
        { "quickack", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'H':
            bench_opt.host = optarg;
            break;
        case 'p':
            bench_opt.port = bench_load_num("port", optarg, 1, 65535);
            break;
        case 'P':
            bench_opt.path = optarg;
            break;
        case 'u':
            bench_opt.sign_url = optarg;
            break;
        case 'a':
            bench_opt.auth_token = optarg;
            break;
        case 'n':
            bench_opt.calls = bench_load_num("calls", optarg, 1, 1000000);
            break;
        case 'd':
            bench_opt.seconds = bench_load_num("seconds", optarg, 1, 86400);
            break;
        case 'r':
            bench_opt.ramp = bench_load_num("ramp-per-sec", optarg, 1,
                                            1000000);
            break;
        case 'j':
            bench_opt.json = 1;
            break;
        case 'q':
            bench_opt.quickack = 1;
            break;
        case 'h':
            bench_load_usage(stdout);
            return 0;
        default:
            bench_load_usage(stderr);
            return 2;
        }
    }

    if (bench_opt.port == 0 || optind != argc) {
        bench_load_usage(stderr);
        return 2;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = bench_load_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (bench_load_setup() != 0) {
        fprintf(stderr, "bench_load: set-up failed\n");
        return 1;
    }

    getrusage(RUSAGE_SELF, &bench_ru_begin);

    started = bench_now_ns();
    bench_t0 = started + 10 * BENCH_MS;

    ramp = (uint64_t) bench_opt.calls * BENCH_SEC / bench_opt.ramp;

    for (i = 0; i < bench_opt.calls; i++) {
        bench_heap_set(&bench_calls[i],
                       bench_t0 + (uint64_t) i * BENCH_SEC / bench_opt.ramp);
    }

    bench_t_end = bench_t0 + ramp + (uint64_t) bench_opt.seconds * BENCH_SEC;

    bench_load_run();

    ended = bench_now_ns();

    if (bench_interrupted) {
        if (!bench_win_done) {
            bench_win_end = ended;
            getrusage(RUSAGE_SELF, &bench_ru_win_end);
            if (!bench_win_on) {
                bench_win_begin = ended;
                bench_ru_win_begin = bench_ru_win_end;
            }
        }

        if (bench_phase < BENCH_PHASE_CLOSE) {
            bench_load_count_losses();
        }
    }

    for (i = 0; i < bench_opt.calls; i++) {
        if (bench_calls[i].state != BENCH_CALL_DONE
            && bench_calls[i].state != BENCH_CALL_IDLE)
        {
            bench_load_finish(&bench_calls[i]);
        }
    }

    bench_load_report(started, ended);

    return bench_interrupted ? 130 : 0;
}
