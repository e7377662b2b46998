/*
 * fuzz_ws.c: libFuzzer target of the WebSocket frame parser and writers
 * (common/voice_ws.c).
 *
 * Input: byte 0 picks the message limit, byte 1 the read sizes, the rest
 * is the peer's byte stream.  The stream is parsed as a server (nginx
 * reading Twilio) and as a client (the benchmark reading nginx), each
 * twice, in one read and in reads of varying sizes, and both must give the
 * same events and the same end; each event is checked against what the
 * parser promises (UTF-8 text, sizes within limits, valid close codes).
 * The same bytes, written as a masked client frame, must read back whole
 * through a server's parser.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "voice_ws.h"


#define FUZZ_MSG_MAX  70000


typedef struct {
    uint64_t  digest;
    uint64_t  events;
    int       last;
    uint16_t  close_code;
} fuzz_ws_result_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static uint8_t  fuzz_msg[FUZZ_MSG_MAX];


static uint64_t
fuzz_ws_mix(uint64_t h, const uint8_t *p, size_t n)
{
    while (n--) {
        h = (h ^ *p++) * 0x100000001b3ULL;
    }

    return h;
}


static void
fuzz_ws_check_event(int rc, const voice_ws_event_t *ev, size_t max)
{
    unsigned  c;

    switch (rc) {

    case VOICE_WS_MESSAGE:
        if (ev->len > max) {
            abort();
        }

        if (ev->opcode == VOICE_WS_OP_TEXT) {
            if (!voice_ws_utf8_valid(ev->data, ev->len)) {
                abort();
            }

        } else if (ev->opcode != VOICE_WS_OP_BINARY) {
            abort();
        }

        break;

    case VOICE_WS_CLOSE:
        if (ev->len > VOICE_WS_MAX_CONTROL || ev->len == 1) {
            abort();
        }

        c = ev->close_code;

        if (ev->len == 0) {
            if (c != VOICE_WS_CLOSE_NO_STATUS) {
                abort();
            }

        } else if (!((c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014)
                     || (c >= 3000 && c <= 4999))
                   || c != (unsigned) (ev->data[0] << 8 | ev->data[1])
                   || !voice_ws_utf8_valid(ev->data + 2, ev->len - 2))
        {
            abort();
        }

        break;

    case VOICE_WS_PING:
    case VOICE_WS_PONG:
        if (ev->len > VOICE_WS_MAX_CONTROL) {
            abort();
        }

        break;

    default:
        abort();
    }
}


static void
fuzz_ws_run(int role, const uint8_t *in, size_t len, size_t max,
    unsigned seed, fuzz_ws_result_t *r)
{
    int                 rc;
    size_t              off, n, step;
    const uint8_t      *pos, *end;
    voice_ws_event_t    ev;
    voice_ws_parser_t   p;

    memset(r, 0, sizeof(fuzz_ws_result_t));
    r->digest = 0xcbf29ce484222325ULL;

    voice_ws_parser_init(&p, role, fuzz_msg, max);

    off = 0;
    rc = VOICE_WS_AGAIN;

    while (off < len) {

        if (seed == 0) {
            n = len;

        } else {
            step = 1 + (seed * (off + 7)) % 23;
            n = (len - off < step) ? len - off : step;
        }

        pos = in + off;
        end = pos + n;

        for ( ;; ) {
            rc = voice_ws_parse(&p, &pos, end, &ev);

            if (pos < in + off || pos > end) {
                abort();
            }

            if (rc == VOICE_WS_AGAIN) {
                if (pos != end) {
                    abort();
                }

                break;
            }

            if (rc == VOICE_WS_ERROR) {
                if ((p.close_code != VOICE_WS_CLOSE_PROTOCOL
                     && p.close_code != VOICE_WS_CLOSE_BAD_DATA
                     && p.close_code != VOICE_WS_CLOSE_TOO_BIG)
                    || p.error == NULL)
                {
                    abort();
                }

                r->last = rc;
                r->close_code = p.close_code;
                return;
            }

            fuzz_ws_check_event(rc, &ev, max);

            r->events++;
            r->digest = fuzz_ws_mix(r->digest, (const uint8_t *) &rc,
                                    sizeof(rc));
            r->digest = fuzz_ws_mix(r->digest, (const uint8_t *) &ev.opcode,
                                    sizeof(ev.opcode));
            r->digest = fuzz_ws_mix(r->digest, ev.data, ev.len);
        }

        off += n;
    }

    r->last = rc;
}


/* the masked client frame of in reads back as one message, unchanged */

static void
fuzz_ws_round_trip(const uint8_t *in, size_t len, const uint8_t *mask)
{
    int                 rc;
    size_t              n;
    const uint8_t      *pos;
    voice_ws_event_t    ev;
    voice_ws_parser_t   p;

    static uint8_t  frame[FUZZ_MSG_MAX + VOICE_WS_MAX_HEADER];

    if (len > FUZZ_MSG_MAX) {
        return;
    }

    n = voice_ws_frame_masked(frame, VOICE_WS_OP_BINARY, in, len, mask);

    voice_ws_parser_init(&p, VOICE_WS_SERVER, fuzz_msg, FUZZ_MSG_MAX);
    pos = frame;

    rc = voice_ws_parse(&p, &pos, frame + n, &ev);

    if (rc != VOICE_WS_MESSAGE || pos != frame + n
        || ev.opcode != VOICE_WS_OP_BINARY || ev.len != len
        || (len && memcmp(ev.data, in, len) != 0))
    {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               role;
    size_t            max, n;
    uint8_t           hdr[VOICE_WS_OUT_HEADER], mask[4];
    uint8_t           close[VOICE_WS_MAX_CONTROL];
    char              reason[256];
    fuzz_ws_result_t  whole, split;

    if (size < 2) {
        return 0;
    }

    max = (data[0] == 0xff) ? FUZZ_MSG_MAX : (size_t) data[0] * 4;

    for (role = VOICE_WS_SERVER; role <= VOICE_WS_CLIENT; role++) {
        fuzz_ws_run(role, data + 2, size - 2, max, 0, &whole);
        fuzz_ws_run(role, data + 2, size - 2, max, data[1] | 1, &split);

        if (whole.digest != split.digest || whole.events != split.events
            || whole.last != split.last
            || whole.close_code != split.close_code)
        {
            abort();
        }
    }

    mask[0] = data[0];
    mask[1] = data[1];
    mask[2] = (uint8_t) (data[0] ^ 0x5a);
    mask[3] = (uint8_t) (data[1] ^ 0xa5);

    fuzz_ws_round_trip(data + 2, size - 2, mask);

    /* the writers, on the same bytes */

    n = voice_ws_frame_header(hdr, data[1] & 0xf, size * 251);
    if (n != 2 && n != 4 && n != 10) {
        abort();
    }

    n = (size - 2 < sizeof(reason) - 1) ? size - 2 : sizeof(reason) - 1;
    memcpy(reason, data + 2, n);
    reason[n] = '\0';

    n = voice_ws_close_payload(close, 1000, reason);

    if (n < 2 || n > VOICE_WS_MAX_CONTROL) {
        abort();
    }

    if (voice_ws_utf8_valid((const uint8_t *) reason, strlen(reason))
        && !voice_ws_utf8_valid(close + 2, n - 2))
    {
        abort();
    }

    return 0;
}
