/*
 * test_voice_ws.c: unit tests of common/voice_ws.c, the RFC 6455 frame
 * parser and writers, as nginx's server and as the benchmark's client.  The refusals follow the autobahn
 * and haproxy websocket.vtc torture lists: unmasked frames, RSV bits,
 * reserved opcodes, long or fragmented control frames, bad lengths, bad
 * fragmentation, bad UTF-8, bad close frames, oversize messages.  Every
 * valid stream is also fed in every chunk size from 1 byte up, which must
 * give the same events: that is what exercises the split-header and
 * split-UTF-8 paths.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "voice_ws.h"


#define FIN     0x80
#define TEXT    VOICE_WS_OP_TEXT
#define BINARY  VOICE_WS_OP_BINARY
#define CONT    VOICE_WS_OP_CONT
#define CLOSE   VOICE_WS_OP_CLOSE
#define PING    VOICE_WS_OP_PING
#define PONG    VOICE_WS_OP_PONG

#define MAX_EVENTS  16
#define BIG         (1 << 17)


typedef struct {
    uint8_t   data[BIG + 64];
    size_t    len;
    unsigned  frames;
} stream_t;


typedef struct {
    int       rc;
    int       opcode;
    size_t    len;
    uint16_t  close_code;
    uint64_t  hash;
    uint8_t   head[64];
} event_t;


typedef struct {
    event_t   ev[MAX_EVENTS];
    unsigned  n;
    int       last;          /* AGAIN or ERROR */
    uint16_t  close_code;    /* on ERROR */
    size_t    consumed;
} result_t;


static uint8_t   msgbuf[BIG];
static stream_t  s;
/* the end run() parses for; the client tests set VOICE_WS_CLIENT */
static int       role = VOICE_WS_SERVER;


static uint64_t
fnv(const uint8_t *p, size_t n)
{
    uint64_t  h;

    h = 0xcbf29ce484222325ULL;

    while (n--) {
        h = (h ^ *p++) * 0x100000001b3ULL;
    }

    return h;
}


/* appends one client frame; ext forces a 126 or 127 length form */

static void
put_frame_ext(stream_t *st, unsigned b0, const void *payload, size_t len,
    int masked, int ext)
{
    size_t          i;
    uint8_t        *p, key[4];
    const uint8_t  *src;

    p = st->data + st->len;
    src = payload;

    /* a different key per frame, so a wrong mask phase shows */
    key[0] = (uint8_t) (0x37 + st->frames * 11);
    key[1] = 0xfa;
    key[2] = (uint8_t) (0x21 ^ st->frames);
    key[3] = 0x3d;
    st->frames++;

    *p++ = (uint8_t) b0;

    if (ext == 0) {
        ext = (len < 126) ? 0 : (len <= 0xffff) ? 126 : 127;
    }

    if (ext == 0) {
        *p++ = (uint8_t) ((masked ? 0x80 : 0) | len);

    } else if (ext == 126) {
        *p++ = (uint8_t) ((masked ? 0x80 : 0) | 126);
        *p++ = (uint8_t) (len >> 8);
        *p++ = (uint8_t) len;

    } else {
        *p++ = (uint8_t) ((masked ? 0x80 : 0) | 127);

        for (i = 0; i < 8; i++) {
            *p++ = (uint8_t) ((uint64_t) len >> (56 - 8 * i));
        }
    }

    if (masked) {
        memcpy(p, key, 4);
        p += 4;
    }

    for (i = 0; i < len; i++) {
        *p++ = masked ? (uint8_t) (src[i] ^ key[i & 3]) : src[i];
    }

    st->len = (size_t) (p - st->data);
}


static void
put_frame(stream_t *st, unsigned b0, const void *payload, size_t len)
{
    put_frame_ext(st, b0, payload, len, 1, 0);
}


static void
put_str(stream_t *st, unsigned b0, const char *payload)
{
    put_frame(st, b0, payload, strlen(payload));
}


static void
put_close(stream_t *st, unsigned code, const char *reason, size_t rlen)
{
    uint8_t  buf[128];

    buf[0] = (uint8_t) (code >> 8);
    buf[1] = (uint8_t) code;
    memcpy(buf + 2, reason, rlen);

    put_frame(st, FIN | CLOSE, buf, 2 + rlen);
}


static void
reset(void)
{
    s.len = 0;
    s.frames = 0;
    role = VOICE_WS_SERVER;
}


/*
 * Feeds data in chunks of chunk bytes (0: all at once), the way
 * ngx_http_voice_ws.c does: parse until AGAIN, then the next read.
 */

static void
run(const uint8_t *data, size_t len, size_t chunk, size_t max, result_t *r)
{
    int                          rc;
    size_t                       off, n;
    const uint8_t               *pos, *end;
    voice_ws_event_t             ev;
    voice_ws_parser_t            p;

    memset(r, 0, sizeof(result_t));
    voice_ws_parser_init(&p, role, msgbuf, max);

    if (chunk == 0) {
        chunk = len ? len : 1;
    }

    off = 0;
    rc = VOICE_WS_AGAIN;

    do {
        n = (len - off < chunk) ? len - off : chunk;
        pos = data + off;
        end = pos + n;

        for ( ;; ) {
            rc = voice_ws_parse(&p, &pos, end, &ev);

            assert_true(pos >= data + off && pos <= end);

            if (rc == VOICE_WS_AGAIN) {
                assert_true(pos == end);
                break;
            }

            if (rc == VOICE_WS_ERROR) {
                r->close_code = p.close_code;
                assert_non_null(p.error);
                break;
            }

            assert_true(r->n < MAX_EVENTS);

            r->ev[r->n].rc = rc;
            r->ev[r->n].opcode = ev.opcode;
            r->ev[r->n].len = ev.len;
            r->ev[r->n].close_code = ev.close_code;
            r->ev[r->n].hash = fnv(ev.data, ev.len);
            memcpy(r->ev[r->n].head, ev.data,
                   ev.len < 64 ? ev.len : 64);
            r->n++;
        }

        r->consumed = (size_t) (pos - data);
        off += n;

    } while (rc != VOICE_WS_ERROR && off < len);

    r->last = rc;
}


/* the stream gives the same result whatever the read sizes */

static void
run_all_chunks(size_t max, result_t *r)
{
    size_t    chunk;
    unsigned  i;
    result_t  other;

    static const size_t  chunks[] = { 1, 2, 3, 4, 5, 7, 13, 64, 1000 };

    run(s.data, s.len, 0, max, r);

    for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        chunk = chunks[i];

        run(s.data, s.len, chunk, max, &other);

        assert_int_equal(other.n, r->n);
        assert_int_equal(other.last, r->last);
        assert_int_equal(other.close_code, r->close_code);
        assert_memory_equal(other.ev, r->ev, r->n * sizeof(event_t));
    }
}


static void
assert_event(result_t *r, unsigned i, int rc, int opcode, const void *data,
    size_t len)
{
    assert_true(i < r->n);
    assert_int_equal(r->ev[i].rc, rc);
    assert_int_equal(r->ev[i].opcode, opcode);
    assert_int_equal(r->ev[i].len, len);
    assert_true(r->ev[i].hash == fnv(data, len));
}


static void
assert_valid(size_t max, result_t *r, unsigned nevents)
{
    run_all_chunks(max, r);
    assert_int_equal(r->last, VOICE_WS_AGAIN);
    assert_int_equal(r->n, nevents);
    assert_int_equal(r->consumed, s.len);
}


static void
assert_refused(size_t max, uint16_t code)
{
    result_t  r;

    run_all_chunks(max, &r);
    assert_int_equal(r.last, VOICE_WS_ERROR);
    assert_int_equal(r.close_code, code);
}


static void
test_text_message(void **state)
{
    result_t  r;

    (void) state;

    reset();
    put_str(&s, FIN | TEXT, "Hello");
    assert_valid(1024, &r, 1);
    assert_event(&r, 0, VOICE_WS_MESSAGE, TEXT, "Hello", 5);
}


static void
test_two_frames_in_one_read(void **state)
{
    int                          rc;
    const uint8_t               *pos, *end;
    voice_ws_event_t             ev;
    voice_ws_parser_t            p;

    (void) state;

    reset();
    put_str(&s, FIN | TEXT, "one");
    put_str(&s, FIN | PING, "hb");
    put_str(&s, FIN | BINARY, "two");

    voice_ws_parser_init(&p, VOICE_WS_SERVER, msgbuf, 1024);
    pos = s.data;
    end = s.data + s.len;

    /* stops at each event, pos just past the frame */
    rc = voice_ws_parse(&p, &pos, end, &ev);
    assert_int_equal(rc, VOICE_WS_MESSAGE);
    assert_int_equal(pos - s.data, 2 + 4 + 3);
    assert_memory_equal(ev.data, "one", 3);

    rc = voice_ws_parse(&p, &pos, end, &ev);
    assert_int_equal(rc, VOICE_WS_PING);
    assert_int_equal(ev.opcode, PING);
    assert_int_equal(ev.len, 2);
    assert_memory_equal(ev.data, "hb", 2);
    assert_int_equal(pos - s.data, 2 * (2 + 4) + 3 + 2);

    rc = voice_ws_parse(&p, &pos, end, &ev);
    assert_int_equal(rc, VOICE_WS_MESSAGE);
    assert_int_equal(ev.opcode, BINARY);
    assert_memory_equal(ev.data, "two", 3);
    assert_true(pos == end);

    rc = voice_ws_parse(&p, &pos, end, &ev);
    assert_int_equal(rc, VOICE_WS_AGAIN);

    assert_int_equal(p.frames, 3);
    assert_int_equal(p.ctrl_frames, 1);
    assert_int_equal(p.data_bytes, 6);
}


static void
test_empty_frames(void **state)
{
    result_t  r;

    (void) state;

    reset();
    put_frame(&s, FIN | TEXT, "", 0);
    put_frame(&s, FIN | PING, "", 0);
    put_frame(&s, FIN | PONG, "", 0);
    put_frame(&s, TEXT, "", 0);
    put_frame(&s, CONT, "", 0);
    put_frame(&s, FIN | CONT, "", 0);
    put_frame(&s, FIN | BINARY, "", 0);
    put_frame(&s, FIN | CLOSE, "", 0);
    assert_valid(0, &r, 6);

    assert_event(&r, 0, VOICE_WS_MESSAGE, TEXT, "", 0);
    assert_event(&r, 1, VOICE_WS_PING, PING, "", 0);
    assert_event(&r, 2, VOICE_WS_PONG, PONG, "", 0);
    assert_event(&r, 3, VOICE_WS_MESSAGE, TEXT, "", 0);
    assert_event(&r, 4, VOICE_WS_MESSAGE, BINARY, "", 0);
    assert_event(&r, 5, VOICE_WS_CLOSE, CLOSE, "", 0);
    assert_int_equal(r.ev[5].close_code, VOICE_WS_CLOSE_NO_STATUS);
}


static void
test_unmasked_frame(void **state)
{
    (void) state;

    reset();
    put_frame_ext(&s, FIN | TEXT, "Hello", 5, 0, 0);
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

    reset();
    put_frame_ext(&s, FIN | PING, "", 0, 0, 0);
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);
}


static void
test_rsv_bits(void **state)
{
    unsigned  rsv;

    (void) state;

    for (rsv = 0x10; rsv <= 0x70; rsv += 0x10) {
        reset();
        put_str(&s, FIN | rsv | TEXT, "Hello");
        assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

        reset();
        put_str(&s, FIN | rsv | PING, "");
        assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);
    }
}


static void
test_reserved_opcodes(void **state)
{
    unsigned  op;
    result_t  r;

    (void) state;

    for (op = 3; op <= 0xf; op++) {
        if (op >= 8 && op <= 0xa) {
            continue;
        }

        reset();
        put_str(&s, FIN | op, "x");
        assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

        /* also after a valid message: nothing of it is lost */
        reset();
        put_str(&s, FIN | TEXT, "ok");
        put_frame(&s, FIN | op, "", 0);
        run_all_chunks(1024, &r);
        assert_int_equal(r.n, 1);
        assert_int_equal(r.last, VOICE_WS_ERROR);
    }
}


static void
test_control_frame_lengths(void **state)
{
    uint8_t   buf[126];
    result_t  r;

    (void) state;

    memset(buf, 'p', sizeof(buf));

    /* 125 bytes, the most a control frame may carry */
    reset();
    put_frame(&s, FIN | PING, buf, 125);
    put_frame(&s, FIN | PONG, buf, 125);
    assert_valid(0, &r, 2);
    assert_event(&r, 0, VOICE_WS_PING, PING, buf, 125);

    /* 126 bytes need the 16-bit length form, refused for control frames */
    reset();
    put_frame(&s, FIN | PING, buf, 126);
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

    reset();
    put_frame_ext(&s, FIN | PONG, buf, 5, 1, 126);
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

    reset();
    put_frame_ext(&s, FIN | CLOSE, buf, 5, 1, 127);
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);
}


static void
test_fragmented_control_frames(void **state)
{
    unsigned  i;

    static const unsigned  ops[] = { PING, PONG, CLOSE };

    (void) state;

    for (i = 0; i < 3; i++) {
        reset();
        put_frame(&s, ops[i], "", 0);
        assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

        /* "fragmented ping": a ping without FIN, then a continuation */
        reset();
        put_str(&s, ops[i], "ab");
        put_str(&s, FIN | CONT, "cd");
        assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);
    }
}


static void
test_64bit_length_top_bit(void **state)
{
    uint8_t  hdr[14] = { FIN | BINARY, 0x80 | 127,
                         0x80, 0, 0, 0, 0, 0, 0, 1,
                         1, 2, 3, 4 };

    (void) state;

    reset();
    memcpy(s.data, hdr, sizeof(hdr));
    s.len = sizeof(hdr);
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

    /* 2^63 - 1 is a legal length, but far over the maximum */
    hdr[2] = 0x7f;
    memcpy(s.data, hdr, sizeof(hdr));
    assert_refused(1024, VOICE_WS_CLOSE_TOO_BIG);
}


static void
test_bad_fragmentation(void **state)
{
    result_t  r;

    (void) state;

    /* a continuation with no message to continue */
    reset();
    put_str(&s, FIN | CONT, "x");
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

    reset();
    put_str(&s, CONT, "x");
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

    /* ... or after the message has ended */
    reset();
    put_str(&s, TEXT, "a");
    put_str(&s, FIN | CONT, "b");
    put_str(&s, FIN | CONT, "c");
    run_all_chunks(1024, &r);
    assert_int_equal(r.n, 1);
    assert_event(&r, 0, VOICE_WS_MESSAGE, TEXT, "ab", 2);
    assert_int_equal(r.last, VOICE_WS_ERROR);
    assert_int_equal(r.close_code, VOICE_WS_CLOSE_PROTOCOL);

    /* a new data frame inside a fragmented message */
    reset();
    put_str(&s, TEXT, "a");
    put_str(&s, FIN | TEXT, "b");
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

    reset();
    put_str(&s, BINARY, "a");
    put_str(&s, FIN | TEXT, "b");
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

    reset();
    put_str(&s, TEXT, "a");
    put_str(&s, BINARY, "b");
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);
}


static void
test_fragmented_message(void **state)
{
    result_t  r;

    (void) state;

    /* with a ping and a pong between the fragments, which is allowed */
    reset();
    put_str(&s, TEXT, "Hel");
    put_str(&s, FIN | PING, "p1");
    put_str(&s, CONT, "lo, ");
    put_str(&s, FIN | PONG, "p2");
    put_str(&s, CONT, "");
    put_str(&s, FIN | CONT, "world");
    put_str(&s, FIN | BINARY, "next");
    assert_valid(1024, &r, 4);

    assert_event(&r, 0, VOICE_WS_PING, PING, "p1", 2);
    assert_event(&r, 1, VOICE_WS_PONG, PONG, "p2", 2);
    assert_event(&r, 2, VOICE_WS_MESSAGE, TEXT, "Hello, world", 12);
    assert_event(&r, 3, VOICE_WS_MESSAGE, BINARY, "next", 4);

    /* a close between fragments is reported too; the caller ends it all */
    reset();
    put_str(&s, BINARY, "ab");
    put_close(&s, 1000, "", 0);
    assert_valid(1024, &r, 1);
    assert_int_equal(r.ev[0].rc, VOICE_WS_CLOSE);
    assert_int_equal(r.ev[0].close_code, 1000);
}


static void
test_invalid_utf8_text(void **state)
{
    unsigned  i;
    result_t  r;

    static const char  *bad[] = {
        "\x80",                       /* stray continuation */
        "a\xbf",
        "\xc0\x80",                   /* overlong NUL */
        "\xc1\xbf",                   /* overlong 2-byte */
        "\xe0\x80\x80",               /* overlong 3-byte */
        "\xe0\x9f\xbf",
        "\xf0\x80\x80\x80",           /* overlong 4-byte */
        "\xf0\x8f\xbf\xbf",
        "\xed\xa0\x80",               /* U+D800, a surrogate */
        "\xed\xbf\xbf",               /* U+DFFF */
        "\xed\xa0\x80\xed\xb0\x80",   /* a CESU-8 pair */
        "\xf4\x90\x80\x80",           /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xf8\x88\x80\x80\x80",
        "\xfe",
        "\xff",
        "\xc3\x28",                   /* lead, then no continuation */
        "\xe2\x82\x28",
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80" "edited",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        reset();
        put_str(&s, FIN | TEXT, bad[i]);
        assert_refused(1024, VOICE_WS_CLOSE_BAD_DATA);

        /* also split over fragments */
        reset();
        put_frame(&s, TEXT, bad[i], 1);
        put_frame(&s, FIN | CONT, bad[i] + 1, strlen(bad[i]) - 1);
        assert_refused(1024, VOICE_WS_CLOSE_BAD_DATA);

        /* binary messages are not text: anything goes */
        reset();
        put_str(&s, FIN | BINARY, bad[i]);
        assert_valid(1024, &r, 1);
    }

    /* a message that ends inside a sequence */
    reset();
    put_str(&s, FIN | TEXT, "ok\xe2\x82");
    assert_refused(1024, VOICE_WS_CLOSE_BAD_DATA);

    reset();
    put_str(&s, TEXT, "\xf0\x9f\x98");
    put_str(&s, FIN | CONT, "");
    assert_refused(1024, VOICE_WS_CLOSE_BAD_DATA);
}


static void
test_invalid_utf8_fails_fast(void **state)
{
    int                          rc;
    const uint8_t               *pos, *end;
    voice_ws_event_t             ev;
    voice_ws_parser_t            p;

    (void) state;

    /* the first fragment is bad: refused without waiting for the rest */
    reset();
    put_str(&s, TEXT, "abc\xff");

    voice_ws_parser_init(&p, VOICE_WS_SERVER, msgbuf, 1024);
    pos = s.data;
    end = s.data + s.len;

    rc = voice_ws_parse(&p, &pos, end, &ev);
    assert_int_equal(rc, VOICE_WS_ERROR);
    assert_int_equal(p.close_code, VOICE_WS_CLOSE_BAD_DATA);

    /* sticky */
    rc = voice_ws_parse(&p, &pos, end, &ev);
    assert_int_equal(rc, VOICE_WS_ERROR);

    /* and within a frame whose end has not arrived */
    reset();
    put_str(&s, FIN | TEXT, "abc\xc0 and much more text to come");

    voice_ws_parser_init(&p, VOICE_WS_SERVER, msgbuf, 1024);
    pos = s.data;
    end = s.data + 2 + 4 + 5;

    rc = voice_ws_parse(&p, &pos, end, &ev);
    assert_int_equal(rc, VOICE_WS_ERROR);
    assert_int_equal(p.close_code, VOICE_WS_CLOSE_BAD_DATA);
}


static void
test_valid_utf8_split(void **state)
{
    size_t       i, n;
    result_t     r;
    const char  *t;

    (void) state;

    /* 2-, 3- and 4-byte sequences, the extremes of each range */
    t = "\xc2\x80 \xdf\xbf \xe0\xa0\x80 \xed\x9f\xbf \xee\x80\x80 \xef\xbf\xbf"
        " \xf0\x90\x80\x80 \xf4\x8f\xbf\xbf \xce\xba\xe1\xbd\xb9\xcf\x83\xce"
        "\xbc\xce\xb5 \xf0\x9f\x98\x80";
    n = strlen(t);

    /* one frame: every chunk size splits the code points across reads */
    reset();
    put_frame(&s, FIN | TEXT, t, n);
    assert_valid(1024, &r, 1);
    assert_event(&r, 0, VOICE_WS_MESSAGE, TEXT, t, n);

    /* one fragment per byte: every code point split across fragments */
    reset();
    put_frame(&s, TEXT, t, 1);

    for (i = 1; i < n - 1; i++) {
        put_frame(&s, CONT, t + i, 1);
    }

    put_frame(&s, FIN | CONT, t + n - 1, 1);
    assert_valid(1024, &r, 1);
    assert_event(&r, 0, VOICE_WS_MESSAGE, TEXT, t, n);

    /* fragments cut at odd places, with an empty one */
    reset();
    put_frame(&s, TEXT, t, 5);
    put_frame(&s, CONT, t + 5, 0);
    put_frame(&s, CONT, t + 5, 9);
    put_frame(&s, FIN | CONT, t + 14, n - 14);
    assert_valid(1024, &r, 1);
    assert_event(&r, 0, VOICE_WS_MESSAGE, TEXT, t, n);
}


static void
test_close_frames(void **state)
{
    unsigned  i;
    result_t  r;

    static const unsigned  valid[] = {
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
        1014, 3000, 3999, 4000, 4999
    };
    static const unsigned  invalid[] = {
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
        65535
    };

    (void) state;

    for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        reset();
        put_close(&s, valid[i], "bye", 3);
        assert_valid(1024, &r, 1);
        assert_int_equal(r.ev[0].rc, VOICE_WS_CLOSE);
        assert_int_equal(r.ev[0].opcode, CLOSE);
        assert_int_equal(r.ev[0].close_code, valid[i]);

        /* the data is the whole payload: code, then reason */
        assert_int_equal(r.ev[0].len, 5);
        assert_int_equal(r.ev[0].head[0], valid[i] >> 8);
        assert_int_equal(r.ev[0].head[1], valid[i] & 0xff);
        assert_memory_equal(r.ev[0].head + 2, "bye", 3);
    }

    for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        reset();
        put_close(&s, invalid[i], "", 0);
        assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);
    }

    /* a 1-byte payload */
    reset();
    put_frame(&s, FIN | CLOSE, "\x03", 1);
    assert_refused(1024, VOICE_WS_CLOSE_PROTOCOL);

    /* a reason that is not UTF-8 */
    reset();
    put_close(&s, 1000, "\xce\xba\xed\xa0\x80", 5);
    assert_refused(1024, VOICE_WS_CLOSE_BAD_DATA);

    reset();
    put_close(&s, 1000, "ab\xe2\x82", 4);
    assert_refused(1024, VOICE_WS_CLOSE_BAD_DATA);

    /* a UTF-8 reason of the full 123 bytes */
    reset();
    {
        char  reason[123];

        memset(reason, 'r', sizeof(reason));
        memcpy(reason + 119, "\xf0\x9f\x98\x80", 4);
        put_close(&s, 1001, reason, sizeof(reason));
        assert_valid(1024, &r, 1);
        assert_int_equal(r.ev[0].close_code, 1001);
        assert_int_equal(r.ev[0].len, 125);
    }
}


static void
test_message_size_limit(void **state)
{
    uint8_t   buf[1001];
    result_t  r;

    (void) state;

    memset(buf, 'm', sizeof(buf));

    /* exactly the maximum */
    reset();
    put_frame(&s, FIN | TEXT, buf, 1000);
    assert_valid(1000, &r, 1);
    assert_event(&r, 0, VOICE_WS_MESSAGE, TEXT, buf, 1000);

    reset();
    put_frame(&s, TEXT, buf, 400);
    put_frame(&s, CONT, buf, 599);
    put_frame(&s, FIN | CONT, buf, 1);
    assert_valid(1000, &r, 1);
    assert_int_equal(r.ev[0].len, 1000);

    /* one byte more */
    reset();
    put_frame(&s, FIN | TEXT, buf, 1001);
    assert_refused(1000, VOICE_WS_CLOSE_TOO_BIG);

    reset();
    put_frame(&s, TEXT, buf, 400);
    put_frame(&s, CONT, buf, 599);
    put_frame(&s, FIN | CONT, buf, 2);
    assert_refused(1000, VOICE_WS_CLOSE_TOO_BIG);

    /* refused on the header, before the payload has arrived */
    reset();
    put_frame(&s, FIN | BINARY, buf, 1001);
    s.len = 4;
    assert_refused(1000, VOICE_WS_CLOSE_TOO_BIG);

    /* the limit is per message, not per connection */
    reset();
    put_frame(&s, FIN | TEXT, buf, 1000);
    put_frame(&s, FIN | TEXT, buf, 1000);
    assert_valid(1000, &r, 2);

    /* control frames do not count against it */
    reset();
    put_frame(&s, TEXT, buf, 1000);
    put_frame(&s, FIN | PING, buf, 125);
    put_frame(&s, FIN | CONT, buf, 0);
    assert_valid(1000, &r, 2);
}


static void
test_length_forms(void **state)
{
    size_t    i;
    result_t  r;

    static const size_t  sizes[] = { 125, 126, 127, 200, 65535, 65536,
                                     70000 };

    (void) state;

    for (i = 0; i < BIG; i++) {
        msgbuf[i] = 0;
    }

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        static uint8_t  payload[BIG];
        size_t          k;

        for (k = 0; k < sizes[i]; k++) {
            payload[k] = (uint8_t) (k * 7 + i);
        }

        reset();
        put_frame(&s, FIN | BINARY, payload, sizes[i]);
        assert_valid(BIG, &r, 1);
        assert_event(&r, 0, VOICE_WS_MESSAGE, BINARY, payload,
                     sizes[i]);
    }

    /* non-minimal length forms are tolerated */
    reset();
    put_frame_ext(&s, FIN | TEXT, "short", 5, 1, 126);
    put_frame_ext(&s, FIN | TEXT, "short", 5, 1, 127);
    put_frame_ext(&s, FIN | TEXT, "", 0, 1, 127);
    assert_valid(1024, &r, 3);
    assert_event(&r, 1, VOICE_WS_MESSAGE, TEXT, "short", 5);
}


static void
test_twilio_like_session(void **state)
{
    unsigned     i;
    result_t     r;
    const char  *media;

    (void) state;

    media = "{\"event\":\"media\",\"sequenceNumber\":\"2\",\"media\":"
            "{\"track\":\"inbound\",\"chunk\":\"1\",\"timestamp\":\"0\","
            "\"payload\":\"//////////8=\"},\"streamSid\":"
            "\"MZ00112233445566778899aabbccddeeff\"}";

    reset();

    for (i = 0; i < 10; i++) {
        put_str(&s, FIN | TEXT, media);
    }

    put_close(&s, 1000, "", 0);
    assert_valid(4096, &r, 11);

    for (i = 0; i < 10; i++) {
        assert_event(&r, i, VOICE_WS_MESSAGE, TEXT, media,
                     strlen(media));
    }

    assert_int_equal(r.ev[10].close_code, 1000);
}


static void
test_frame_header_writer(void **state)
{
    uint8_t  b[VOICE_WS_OUT_HEADER];

    (void) state;

    assert_int_equal(voice_ws_frame_header(b, TEXT, 0), 2);
    assert_memory_equal(b, "\x81\x00", 2);

    assert_int_equal(voice_ws_frame_header(b, TEXT, 125), 2);
    assert_memory_equal(b, "\x81\x7d", 2);

    assert_int_equal(voice_ws_frame_header(b, PONG, 5), 2);
    assert_memory_equal(b, "\x8a\x05", 2);

    assert_int_equal(voice_ws_frame_header(b, CLOSE, 2), 2);
    assert_memory_equal(b, "\x88\x02", 2);

    assert_int_equal(voice_ws_frame_header(b, TEXT, 126), 4);
    assert_memory_equal(b, "\x81\x7e\x00\x7e", 4);

    assert_int_equal(voice_ws_frame_header(b, BINARY, 65535), 4);
    assert_memory_equal(b, "\x82\x7e\xff\xff", 4);

    assert_int_equal(voice_ws_frame_header(b, TEXT, 65536), 10);
    assert_memory_equal(b, "\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);

    assert_int_equal(voice_ws_frame_header(b, TEXT, 0x12345678), 10);
    assert_memory_equal(b, "\x81\x7f\x00\x00\x00\x00\x12\x34\x56\x78", 10);
}


static void
test_close_payload_writer(void **state)
{
    size_t   n;
    char     reason[200];
    uint8_t  b[VOICE_WS_MAX_CONTROL];

    (void) state;

    n = voice_ws_close_payload(b, 1000, NULL);
    assert_int_equal(n, 2);
    assert_memory_equal(b, "\x03\xe8", 2);

    n = voice_ws_close_payload(b, 1009, "message too big");
    assert_int_equal(n, 17);
    assert_memory_equal(b, "\x03\xf1message too big", 17);

    /* long ASCII: cut at 123 */
    memset(reason, 'a', sizeof(reason));
    reason[199] = '\0';
    n = voice_ws_close_payload(b, 1001, reason);
    assert_int_equal(n, 125);

    /* a 2-byte sequence over the cut: cut before it */
    memset(reason, 'a', 122);
    strcpy(reason + 122, "\xc3\xa9tail");
    n = voice_ws_close_payload(b, 1001, reason);
    assert_int_equal(n, 124);
    assert_true(voice_ws_utf8_valid(b + 2, n - 2));

    /* a 4-byte sequence over the cut */
    memset(reason, 'a', 121);
    strcpy(reason + 121, "\xf0\x9f\x98\x80");
    n = voice_ws_close_payload(b, 1001, reason);
    assert_int_equal(n, 123);

    /* a sequence ending exactly at the cut is kept */
    memset(reason, 'a', 120);
    strcpy(reason + 120, "\xe2\x82\xac" "more");
    n = voice_ws_close_payload(b, 1001, reason);
    assert_int_equal(n, 125);
    assert_memory_equal(b + 122, "\xe2\x82\xac", 3);
}


static void
test_utf8_valid(void **state)
{
    (void) state;

#define V(str)  voice_ws_utf8_valid((const uint8_t *) (str),         \
                                    sizeof(str) - 1)

    assert_true(V(""));
    assert_true(V("plain ASCII, long enough for the word-at-a-time path"));
    assert_true(V("\x7f"));
    assert_true(V("\xc2\x80"));
    assert_true(V("\xdf\xbf"));
    assert_true(V("\xe0\xa0\x80"));
    assert_true(V("\xed\x9f\xbf"));
    assert_true(V("\xee\x80\x80"));
    assert_true(V("\xf0\x90\x80\x80"));
    assert_true(V("\xf4\x8f\xbf\xbf"));
    assert_true(V("12345678\xc3\xa9" "12345678"));

    assert_false(V("\x80"));
    assert_false(V("\xc0\x80"));
    assert_false(V("\xc2"));
    assert_false(V("\xe0\x9f\xbf"));
    assert_false(V("\xed\xa0\x80"));
    assert_false(V("\xf0\x8f\xbf\xbf"));
    assert_false(V("\xf4\x90\x80\x80"));
    assert_false(V("\xf5\x80\x80\x80"));
    assert_false(V("12345678\xff" "12345678"));
    assert_false(V("1234567\xc3"));

#undef V
}


/*
 * busy: set from a frame's first byte until the message it belongs to is
 * whole -- across fragments and the pings between them -- and clear at
 * every message boundary.
 */

static void
test_parser_busy(void **state)
{
    int                          rc, events;
    size_t                       i, first_end, second_end;
    const uint8_t               *pos, *end;
    voice_ws_event_t             ev;
    voice_ws_parser_t            p;

    (void) state;

    reset();
    put_str(&s, FIN | TEXT, "{\"event\":\"media\"}");
    first_end = s.len;
    put_str(&s, TEXT, "{\"event\":");
    put_str(&s, FIN | PING, "x");
    put_str(&s, FIN | CONT, "\"mark\"}");
    second_end = s.len;

    voice_ws_parser_init(&p, VOICE_WS_SERVER, msgbuf, 1024);
    assert_false(voice_ws_parser_busy(&p));

    events = 0;

    for (i = 0; i < s.len; i++) {
        pos = s.data + i;
        end = pos + 1;

        do {
            rc = voice_ws_parse(&p, &pos, end, &ev);
            assert_int_not_equal(rc, VOICE_WS_ERROR);
            events += (rc != VOICE_WS_AGAIN);
        } while (rc != VOICE_WS_AGAIN);

        if (i + 1 == first_end || i + 1 == second_end) {
            assert_false(voice_ws_parser_busy(&p));

        } else {
            assert_true(voice_ws_parser_busy(&p));
        }
    }

    /* two messages and the ping */
    assert_int_equal(events, 3);
}


/* a server's frames are unmasked: the client's parser reads them alike */

static void
test_client_reads_server_frames(void **state)
{
    size_t    i;
    result_t  r;

    static uint8_t  big[70000];

    (void) state;

    for (i = 0; i < sizeof(big); i++) {
        big[i] = (uint8_t) ('a' + i % 26);
    }

    reset();
    role = VOICE_WS_CLIENT;
    put_frame_ext(&s, FIN | TEXT, "{\"event\":\"media\"}", 17, 0, 0);
    put_frame_ext(&s, FIN | PING, "hb", 2, 0, 0);
    put_frame_ext(&s, TEXT, "{\"a\":", 5, 0, 0);
    put_frame_ext(&s, FIN | CONT, "1}", 2, 0, 0);
    put_frame_ext(&s, FIN | BINARY, big, sizeof(big), 0, 0);
    put_frame_ext(&s, FIN | TEXT, "", 0, 0, 0);
    put_frame_ext(&s, FIN | CLOSE, "\x03\xe8" "bye", 5, 0, 0);

    assert_valid(BIG, &r, 6);
    assert_event(&r, 0, VOICE_WS_MESSAGE, TEXT, "{\"event\":\"media\"}", 17);
    assert_event(&r, 1, VOICE_WS_PING, PING, "hb", 2);
    assert_event(&r, 2, VOICE_WS_MESSAGE, TEXT, "{\"a\":1}", 7);
    assert_event(&r, 3, VOICE_WS_MESSAGE, BINARY, big, sizeof(big));
    assert_event(&r, 4, VOICE_WS_MESSAGE, TEXT, "", 0);
    assert_event(&r, 5, VOICE_WS_CLOSE, CLOSE, "\x03\xe8" "bye", 5);
    assert_int_equal(r.ev[5].close_code, 1000);

    /* and its strictness is the server's: bad UTF-8, RSV bits */
    reset();
    role = VOICE_WS_CLIENT;
    put_frame_ext(&s, FIN | TEXT, "\xc0\xaf", 2, 0, 0);
    assert_refused(1024, 1007);

    reset();
    role = VOICE_WS_CLIENT;
    put_frame_ext(&s, FIN | 0x40 | TEXT, "x", 1, 0, 0);
    assert_refused(1024, 1002);
}


static void
test_client_refuses_masked_frames(void **state)
{
    (void) state;

    reset();
    role = VOICE_WS_CLIENT;
    put_frame_ext(&s, FIN | TEXT, "x", 1, 1, 0);
    assert_refused(1024, 1002);

    reset();
    role = VOICE_WS_CLIENT;
    put_frame_ext(&s, FIN | PING, "", 0, 1, 0);
    assert_refused(1024, 1002);
}


/* a client frame written here reads back through the server's parser */

static void
test_masked_frame_writer(void **state)
{
    size_t    i, k, n;
    uint8_t   payload[70000], mask[4];
    result_t  r;

    static const size_t  lens[] = { 0, 1, 7, 8, 9, 125, 126, 65535, 65536,
                                    69999 };
    static uint8_t       frame[70000 + VOICE_WS_MAX_HEADER];

    (void) state;

    for (i = 0; i < sizeof(payload); i++) {
        payload[i] = (uint8_t) (i * 7 + 3);
    }

    for (k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        mask[0] = (uint8_t) (0x11 * (k + 1));
        mask[1] = 0xa5;
        mask[2] = (uint8_t) k;
        mask[3] = 0xff;

        n = voice_ws_frame_masked(frame, BINARY, payload, lens[k], mask);

        assert_int_equal(n, lens[k] + 4 + (lens[k] < 126 ? 2
                                           : lens[k] <= 0xffff ? 4 : 10));
        assert_int_equal(frame[0], FIN | BINARY);
        assert_true(frame[1] & 0x80);
        assert_memory_equal(frame + n - lens[k] - 4, mask, 4);

        reset();
        memcpy(s.data, frame, n);
        s.len = n;

        assert_valid(BIG, &r, 1);
        assert_event(&r, 0, VOICE_WS_MESSAGE, BINARY, payload, lens[k]);
    }

    /* a text frame, with the header bytes of the short form */
    n = voice_ws_frame_masked(frame, TEXT, (const uint8_t *) "Hi", 2,
                              (const uint8_t *) "\x01\x02\x03\x04");
    assert_int_equal(n, 8);
    assert_memory_equal(frame, "\x81\x82\x01\x02\x03\x04" "\x49\x6b", 8);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_text_message),
        cmocka_unit_test(test_two_frames_in_one_read),
        cmocka_unit_test(test_empty_frames),
        cmocka_unit_test(test_unmasked_frame),
        cmocka_unit_test(test_rsv_bits),
        cmocka_unit_test(test_reserved_opcodes),
        cmocka_unit_test(test_control_frame_lengths),
        cmocka_unit_test(test_fragmented_control_frames),
        cmocka_unit_test(test_64bit_length_top_bit),
        cmocka_unit_test(test_bad_fragmentation),
        cmocka_unit_test(test_fragmented_message),
        cmocka_unit_test(test_invalid_utf8_text),
        cmocka_unit_test(test_invalid_utf8_fails_fast),
        cmocka_unit_test(test_valid_utf8_split),
        cmocka_unit_test(test_close_frames),
        cmocka_unit_test(test_message_size_limit),
        cmocka_unit_test(test_length_forms),
        cmocka_unit_test(test_twilio_like_session),
        cmocka_unit_test(test_frame_header_writer),
        cmocka_unit_test(test_close_payload_writer),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_parser_busy),
        cmocka_unit_test(test_client_reads_server_frames),
        cmocka_unit_test(test_client_refuses_masked_frames),
        cmocka_unit_test(test_masked_frame_writer),
    };

    return cmocka_run_group_tests_name("voice_ws", tests, NULL, NULL);
}
