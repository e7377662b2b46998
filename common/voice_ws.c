/*
 * voice_ws.c: the RFC 6455 frame parser and frame writers (see voice_ws.h).
 *
 * Leaf code, libc only: nginx's media WebSocket (ngx_http_voice_ws.c)
 * feeds the parser the bytes it reads and writes the frames built here;
 * the benchmark's load generator and fake OpenAI (bench/) do the same as a
 * client and as a server, so the tools speak exactly the framing the
 * bridge does.  nginx has no WebSocket framing of its own to reuse, and
 * bridged's WebSocket is libwebsockets'.  The parser is a state machine
 * in the style of nginx's HTTP/2 code: one function per state, each taking
 * (parser, pos, end) and returning the new position.  A fixed-size field
 * split across reads is gathered in p->hdr.  The input is const, so frame
 * payloads are unmasked while they are copied: data frames into the
 * caller's message storage, control frames into p->ctrl.
 */

#include <string.h>

#include "voice_ws.h"


/* parser states; DONE means a frame has ended and its event is pending */
#define VOICE_WS_ST_HEADER    0
#define VOICE_WS_ST_EXT_LEN   1
#define VOICE_WS_ST_MASK      2
#define VOICE_WS_ST_PAYLOAD   3
#define VOICE_WS_ST_CONTROL   4
#define VOICE_WS_ST_DONE      5
#define VOICE_WS_ST_ERROR     6

/*
 * The incremental UTF-8 validator's state: 0 between code points, else the
 * number of continuation bytes still expected in bits 0-7 and the range
 * the next one must fall in (bits 8-15 and 16-23), which is how overlongs,
 * surrogates and code points over U+10FFFF are refused on their second
 * byte.  REJECT is returned, never stored.
 */
#define VOICE_WS_UTF8_REJECT  0xffffffffu
#define VOICE_WS_UTF8_NEED(n, lo, hi)                                \
    ((uint32_t) (n) | ((uint32_t) (lo) << 8) | ((uint32_t) (hi) << 16))


static const uint8_t *voice_ws_state_header(
    voice_ws_parser_t *p, const uint8_t *pos, const uint8_t *end);
static const uint8_t *voice_ws_state_ext_len(
    voice_ws_parser_t *p, const uint8_t *pos, const uint8_t *end);
static const uint8_t *voice_ws_state_mask(
    voice_ws_parser_t *p, const uint8_t *pos, const uint8_t *end);
static const uint8_t *voice_ws_state_payload(
    voice_ws_parser_t *p, const uint8_t *pos, const uint8_t *end);
static const uint8_t *voice_ws_state_control(
    voice_ws_parser_t *p, const uint8_t *pos, const uint8_t *end);
static const uint8_t *voice_ws_gather(voice_ws_parser_t *p,
    const uint8_t **pos, const uint8_t *end, size_t need);
static int voice_ws_event(voice_ws_parser_t *p, voice_ws_event_t *ev);
static void voice_ws_frame_start(voice_ws_parser_t *p);
static void voice_ws_frame_done(voice_ws_parser_t *p);
static void voice_ws_mask_next(voice_ws_parser_t *p);
static void voice_ws_payload_next(voice_ws_parser_t *p);
static void voice_ws_fail(voice_ws_parser_t *p, uint16_t code,
    const char *error);
static int voice_ws_close_code_valid(unsigned code);
static void voice_ws_unmask(uint8_t *dst, const uint8_t *src, size_t n,
    const uint8_t *mask, uint64_t phase);
static uint32_t voice_ws_utf8_step(uint32_t state, const uint8_t *p,
    size_t len);


void
voice_ws_parser_init(voice_ws_parser_t *p, int role, uint8_t *msg,
    size_t msg_max)
{
    memset(p, 0, sizeof(voice_ws_parser_t));

    p->state = VOICE_WS_ST_HEADER;
    p->client = (role == VOICE_WS_CLIENT);
    p->msg = msg;
    p->msg_max = msg_max;
}


int
voice_ws_parser_busy(const voice_ws_parser_t *p)
{
    return p->state != VOICE_WS_ST_HEADER || p->hdr_len != 0
           || p->msg_opcode != 0;
}


int
voice_ws_parse(voice_ws_parser_t *p, const uint8_t **pos,
    const uint8_t *end, voice_ws_event_t *ev)
{
    const uint8_t  *b;

    b = *pos;

    for ( ;; ) {

        if (p->state == VOICE_WS_ST_DONE) {
            *pos = b;
            p->state = VOICE_WS_ST_HEADER;
            return voice_ws_event(p, ev);
        }

        if (p->state == VOICE_WS_ST_ERROR) {
            *pos = b;
            return VOICE_WS_ERROR;
        }

        if (b == end) {
            *pos = b;
            return VOICE_WS_AGAIN;
        }

        switch (p->state) {

        case VOICE_WS_ST_HEADER:
            b = voice_ws_state_header(p, b, end);
            break;

        case VOICE_WS_ST_EXT_LEN:
            b = voice_ws_state_ext_len(p, b, end);
            break;

        case VOICE_WS_ST_MASK:
            b = voice_ws_state_mask(p, b, end);
            break;

        case VOICE_WS_ST_PAYLOAD:
            b = voice_ws_state_payload(p, b, end);
            break;

        default: /* VOICE_WS_ST_CONTROL */
            b = voice_ws_state_control(p, b, end);
            break;
        }
    }
}


/* a frame has ended (state DONE): fills the event it makes */

static int
voice_ws_event(voice_ws_parser_t *p,
    voice_ws_event_t *ev)
{
    ev->close_code = 0;

    if (p->opcode & 0x8) {
        ev->opcode = p->opcode;
        ev->data = p->ctrl;
        ev->len = p->ctrl_len;

        switch (p->opcode) {

        case VOICE_WS_OP_PING:
            return VOICE_WS_PING;

        case VOICE_WS_OP_PONG:
            return VOICE_WS_PONG;

        default: /* VOICE_WS_OP_CLOSE, checked by frame_done() */
            ev->close_code = (p->ctrl_len >= 2)
                             ? (uint16_t) (p->ctrl[0] << 8 | p->ctrl[1])
                             : VOICE_WS_CLOSE_NO_STATUS;
            return VOICE_WS_CLOSE;
        }
    }

    ev->opcode = p->msg_opcode;
    ev->data = p->msg;
    ev->len = p->msg_len;

    p->msg_opcode = 0;

    return VOICE_WS_MESSAGE;
}


static const uint8_t *
voice_ws_state_header(voice_ws_parser_t *p,
    const uint8_t *pos, const uint8_t *end)
{
    unsigned        fin, rsv, opcode, masked, len;
    const uint8_t  *h;

    h = voice_ws_gather(p, &pos, end, 2);
    if (h == NULL) {
        return pos;
    }

    fin = h[0] >> 7;
    rsv = h[0] & 0x70;
    opcode = h[0] & 0x0f;
    masked = h[1] >> 7;
    len = h[1] & 0x7f;

    p->frames++;

    if (rsv) {
        voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                      "RSV bit set with no extension negotiated");
        return pos;
    }

    /* RFC 6455 5.1: a client masks every frame, a server none */
    if (masked == p->client) {
        voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                      p->client ? "masked server frame"
                                : "unmasked client frame");
        return pos;
    }

    switch (opcode) {

    case VOICE_WS_OP_CONT:
        if (p->msg_opcode == 0) {
            voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                          "continuation frame with no message open");
            return pos;
        }
        break;

    case VOICE_WS_OP_TEXT:
    case VOICE_WS_OP_BINARY:
        if (p->msg_opcode != 0) {
            voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                          "data frame inside a fragmented message");
            return pos;
        }
        break;

    case VOICE_WS_OP_CLOSE:
    case VOICE_WS_OP_PING:
    case VOICE_WS_OP_PONG:
        p->ctrl_frames++;

        if (!fin) {
            voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                          "fragmented control frame");
            return pos;
        }

        if (len > VOICE_WS_MAX_CONTROL) {
            voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                          "control frame over 125 bytes");
            return pos;
        }
        break;

    default:
        voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                      "reserved opcode");
        return pos;
    }

    p->fin = (uint8_t) fin;
    p->opcode = (uint8_t) opcode;
    p->frame_len = len;
    p->frame_pos = 0;

    if (len >= 126) {
        /* frame_len keeps 126 or 127 to tell the next state the size */
        p->state = VOICE_WS_ST_EXT_LEN;
        return pos;
    }

    voice_ws_frame_start(p);

    return pos;
}


static const uint8_t *
voice_ws_state_ext_len(voice_ws_parser_t *p,
    const uint8_t *pos, const uint8_t *end)
{
    size_t          i, n;
    uint64_t        len;
    const uint8_t  *h;

    n = (p->frame_len == 126) ? 2 : 8;

    h = voice_ws_gather(p, &pos, end, n);
    if (h == NULL) {
        return pos;
    }

    len = 0;

    for (i = 0; i < n; i++) {
        len = len << 8 | h[i];
    }

    if (len >> 63) {
        voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                      "64-bit payload length with the top bit set");
        return pos;
    }

    p->frame_len = len;

    voice_ws_frame_start(p);

    return pos;
}


static const uint8_t *
voice_ws_state_mask(voice_ws_parser_t *p,
    const uint8_t *pos, const uint8_t *end)
{
    const uint8_t  *h;

    h = voice_ws_gather(p, &pos, end, 4);
    if (h == NULL) {
        return pos;
    }

    memcpy(p->mask, h, 4);

    voice_ws_payload_next(p);

    return pos;
}


static const uint8_t *
voice_ws_state_payload(voice_ws_parser_t *p,
    const uint8_t *pos, const uint8_t *end)
{
    size_t     n;
    uint8_t   *dst;
    uint32_t   st;
    uint64_t   left;

    left = p->frame_len - p->frame_pos;
    n = (size_t) (end - pos);

    if ((uint64_t) n > left) {
        n = (size_t) left;
    }

    /* frame_start() checked that the whole frame fits in msg */
    dst = p->msg + p->msg_len;

    voice_ws_unmask(dst, pos, n, p->mask, p->frame_pos);

    if (p->msg_opcode == VOICE_WS_OP_TEXT) {
        /* checked as it arrives, to fail fast on an endless bad message */
        st = voice_ws_utf8_step(p->utf8_state, dst, n);

        if (st == VOICE_WS_UTF8_REJECT) {
            voice_ws_fail(p, VOICE_WS_CLOSE_BAD_DATA,
                          "text message is not valid UTF-8");
            return pos + n;
        }

        p->utf8_state = st;
    }

    p->frame_pos += n;
    p->msg_len += n;
    p->data_bytes += n;

    if (p->frame_pos == p->frame_len) {
        voice_ws_frame_done(p);
    }

    return pos + n;
}


static const uint8_t *
voice_ws_state_control(voice_ws_parser_t *p,
    const uint8_t *pos, const uint8_t *end)
{
    size_t    n;
    uint64_t  left;

    left = p->frame_len - p->frame_pos;
    n = (size_t) (end - pos);

    if ((uint64_t) n > left) {
        n = (size_t) left;
    }

    voice_ws_unmask(p->ctrl + p->ctrl_len, pos, n, p->mask,
                    p->frame_pos);

    p->frame_pos += n;
    p->ctrl_len += n;

    if (p->frame_pos == p->frame_len) {
        voice_ws_frame_done(p);
    }

    return pos + n;
}


/*
 * Returns need contiguous bytes: straight from the input when they are all
 * there (the usual case), else gathered in p->hdr across calls.  NULL means
 * the input ran out and was saved.
 */

static const uint8_t *
voice_ws_gather(voice_ws_parser_t *p, const uint8_t **pos,
    const uint8_t *end, size_t need)
{
    size_t          n;
    const uint8_t  *b;

    b = *pos;

    if (p->hdr_len == 0 && (size_t) (end - b) >= need) {
        *pos = b + need;
        return b;
    }

    n = need - p->hdr_len;

    if (n > (size_t) (end - b)) {
        n = (size_t) (end - b);
    }

    memcpy(p->hdr + p->hdr_len, b, n);
    p->hdr_len += n;
    *pos = b + n;

    if (p->hdr_len < need) {
        return NULL;
    }

    p->hdr_len = 0;

    return p->hdr;
}


/* the payload length is known: check it against the message limit */

static void
voice_ws_frame_start(voice_ws_parser_t *p)
{
    if (p->opcode & 0x8) {
        p->ctrl_len = 0;
        voice_ws_mask_next(p);
        return;
    }

    if (p->opcode != VOICE_WS_OP_CONT) {
        p->msg_opcode = p->opcode;
        p->msg_len = 0;
        p->utf8_state = 0;
    }

    /* refused before any of it is read, so no byte of it is buffered */
    if (p->frame_len > (uint64_t) (p->msg_max - p->msg_len)) {
        voice_ws_fail(p, VOICE_WS_CLOSE_TOO_BIG,
                      "message over the maximum size");
        return;
    }

    voice_ws_mask_next(p);
}


/* a client's frame has its masking key next; a server's frame has none */

static void
voice_ws_mask_next(voice_ws_parser_t *p)
{
    if (!p->client) {
        p->state = VOICE_WS_ST_MASK;
        return;
    }

    /* unmasking with zeros is the copy a server's payload needs */
    memset(p->mask, 0, 4);

    voice_ws_payload_next(p);
}


static void
voice_ws_payload_next(voice_ws_parser_t *p)
{
    if (p->frame_len == 0) {
        voice_ws_frame_done(p);
        return;
    }

    p->state = (p->opcode & 0x8) ? VOICE_WS_ST_CONTROL : VOICE_WS_ST_PAYLOAD;
}


static void
voice_ws_frame_done(voice_ws_parser_t *p)
{
    unsigned  code;

    if (p->opcode == VOICE_WS_OP_CLOSE) {

        if (p->ctrl_len == 1) {
            voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                          "close frame with a 1-byte payload");
            return;
        }

        if (p->ctrl_len >= 2) {
            code = (unsigned) p->ctrl[0] << 8 | p->ctrl[1];

            if (!voice_ws_close_code_valid(code)) {
                voice_ws_fail(p, VOICE_WS_CLOSE_PROTOCOL,
                              "invalid close code");
                return;
            }

            if (!voice_ws_utf8_valid(p->ctrl + 2, p->ctrl_len - 2)) {
                voice_ws_fail(p, VOICE_WS_CLOSE_BAD_DATA,
                              "close reason is not valid UTF-8");
                return;
            }
        }

        p->state = VOICE_WS_ST_DONE;
        return;
    }

    if (p->opcode & 0x8) {
        p->state = VOICE_WS_ST_DONE;
        return;
    }

    if (!p->fin) {
        p->state = VOICE_WS_ST_HEADER;
        return;
    }

    if (p->msg_opcode == VOICE_WS_OP_TEXT && p->utf8_state != 0) {
        voice_ws_fail(p, VOICE_WS_CLOSE_BAD_DATA,
                      "text message ends inside a UTF-8 sequence");
        return;
    }

    p->state = VOICE_WS_ST_DONE;
}


static void
voice_ws_fail(voice_ws_parser_t *p, uint16_t code,
    const char *error)
{
    p->state = VOICE_WS_ST_ERROR;
    p->close_code = code;
    p->error = error;
}


/*
 * The codes a peer may send (RFC 6455 7.4, and the IANA registry for
 * 1012-1014).  1004 is reserved, 1005, 1006 and 1015 must never be on the
 * wire, and 1016-2999 are unassigned or reserved for extensions.
 */

static int
voice_ws_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    return (code >= 1000 && code <= 1003)
           || (code >= 1007 && code <= 1014);
}


/*
 * dst = src ^ mask, with the mask rotated to the frame offset; eight bytes
 * at a time, the unaligned loads and stores left to memcpy().
 */

static void
voice_ws_unmask(uint8_t *dst, const uint8_t *src, size_t n,
    const uint8_t *mask, uint64_t phase)
{
    size_t    i;
    uint8_t   k[8];
    uint64_t  w, m;

    for (i = 0; i < 8; i++) {
        k[i] = mask[(phase + i) & 3];
    }

    memcpy(&m, k, 8);

    while (n >= 8) {
        memcpy(&w, src, 8);
        w ^= m;
        memcpy(dst, &w, 8);

        src += 8;
        dst += 8;
        n -= 8;
    }

    for (i = 0; i < n; i++) {
        dst[i] = src[i] ^ k[i];
    }
}


static uint32_t
voice_ws_utf8_step(uint32_t state, const uint8_t *p, size_t len)
{
    unsigned        c;
    uint64_t        w;
    const uint8_t  *end;

    end = p + len;

    while (p < end) {

        if (state == 0) {

            /* Twilio's messages are ASCII JSON: skip it a word at a time */

            while (end - p >= 8) {
                memcpy(&w, p, 8);

                if (w & 0x8080808080808080ULL) {
                    break;
                }

                p += 8;
            }

            while (p < end && *p < 0x80) {
                p++;
            }

            if (p == end) {
                break;
            }

            c = *p++;

            if (c < 0xc2) {
                /* a stray continuation byte, or an overlong 2-byte lead */
                return VOICE_WS_UTF8_REJECT;

            } else if (c < 0xe0) {
                state = VOICE_WS_UTF8_NEED(1, 0x80, 0xbf);

            } else if (c < 0xf0) {
                /* E0: no overlongs; ED: no surrogates */
                state = VOICE_WS_UTF8_NEED(2,
                                           c == 0xe0 ? 0xa0 : 0x80,
                                           c == 0xed ? 0x9f : 0xbf);

            } else if (c < 0xf5) {
                /* F0: no overlongs; F4: nothing over U+10FFFF */
                state = VOICE_WS_UTF8_NEED(3,
                                           c == 0xf0 ? 0x90 : 0x80,
                                           c == 0xf4 ? 0x8f : 0xbf);

            } else {
                return VOICE_WS_UTF8_REJECT;
            }

            continue;
        }

        c = *p++;

        if (c < ((state >> 8) & 0xff) || c > (state >> 16)) {
            return VOICE_WS_UTF8_REJECT;
        }

        state = (state & 0xff) - 1;

        if (state) {
            state = VOICE_WS_UTF8_NEED(state, 0x80, 0xbf);
        }
    }

    return state;
}


int
voice_ws_utf8_valid(const uint8_t *p, size_t len)
{
    return voice_ws_utf8_step(0, p, len) == 0;
}


size_t
voice_ws_frame_header(uint8_t *buf, int opcode, size_t len)
{
    uint64_t  n;

    buf[0] = (uint8_t) (0x80 | (opcode & 0x0f));

    if (len < 126) {
        buf[1] = (uint8_t) len;
        return 2;
    }

    if (len <= 0xffff) {
        buf[1] = 126;
        buf[2] = (uint8_t) (len >> 8);
        buf[3] = (uint8_t) len;
        return 4;
    }

    n = len;

    buf[1] = 127;
    buf[2] = (uint8_t) (n >> 56);
    buf[3] = (uint8_t) (n >> 48);
    buf[4] = (uint8_t) (n >> 40);
    buf[5] = (uint8_t) (n >> 32);
    buf[6] = (uint8_t) (n >> 24);
    buf[7] = (uint8_t) (n >> 16);
    buf[8] = (uint8_t) (n >> 8);
    buf[9] = (uint8_t) n;

    return 10;
}


size_t
voice_ws_frame_masked(uint8_t *dst, int opcode, const uint8_t *payload,
    size_t len, const uint8_t *mask)
{
    size_t  n;

    n = voice_ws_frame_header(dst, opcode, len);

    dst[1] |= 0x80;
    memcpy(dst + n, mask, 4);
    n += 4;

    voice_ws_unmask(dst + n, payload, len, mask, 0);

    return n + len;
}


size_t
voice_ws_close_payload(uint8_t *buf, uint16_t code, const char *reason)
{
    size_t  n;

    buf[0] = (uint8_t) (code >> 8);
    buf[1] = (uint8_t) code;

    if (reason == NULL) {
        return 2;
    }

    n = strlen(reason);

    if (n > VOICE_WS_MAX_CONTROL - 2) {
        n = VOICE_WS_MAX_CONTROL - 2;

        /* back up to the start of the code point the cut falls in */
        while (n > 0 && ((uint8_t) reason[n] & 0xc0) == 0x80) {
            n--;
        }
    }

    memcpy(buf + 2, reason, n);

    return 2 + n;
}
