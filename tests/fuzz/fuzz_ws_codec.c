/*
 * fuzz_ws_codec.c: libFuzzer target of ngx_voice_module's WebSocket frame
 * parser (ngx_http_voice_ws_codec.c).
 *
 * Input: byte 0 picks the message limit, byte 1 the read sizes, the rest
 * is the client's byte stream.  The stream is parsed twice, in one read
 * and in reads of varying sizes, and both must give the same events and
 * the same end; each event is checked against what the parser promises
 * (UTF-8 text, sizes within limits, valid close codes).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_voice_ws_codec.h"


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
fuzz_ws_check_event(int rc, const ngx_http_voice_ws_event_t *ev,
    size_t max)
{
    unsigned  c;

    switch (rc) {

    case NGX_HTTP_VOICE_WS_MESSAGE:
        if (ev->len > max) {
            abort();
        }

        if (ev->opcode == NGX_HTTP_VOICE_WS_OP_TEXT) {
            if (!ngx_http_voice_ws_utf8_valid(ev->data, ev->len)) {
                abort();
            }

        } else if (ev->opcode != NGX_HTTP_VOICE_WS_OP_BINARY) {
            abort();
        }

        break;

    case NGX_HTTP_VOICE_WS_CLOSE:
        if (ev->len > NGX_HTTP_VOICE_WS_MAX_CONTROL || ev->len == 1) {
            abort();
        }

        c = ev->close_code;

        if (ev->len == 0) {
            if (c != NGX_HTTP_VOICE_WS_CLOSE_NO_STATUS) {
                abort();
            }

        } else if (!((c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014)
                     || (c >= 3000 && c <= 4999))
                   || c != (unsigned) (ev->data[0] << 8 | ev->data[1])
                   || !ngx_http_voice_ws_utf8_valid(ev->data + 2,
                                                    ev->len - 2))
        {
            abort();
        }

        break;

    case NGX_HTTP_VOICE_WS_PING:
    case NGX_HTTP_VOICE_WS_PONG:
        if (ev->len > NGX_HTTP_VOICE_WS_MAX_CONTROL) {
            abort();
        }

        break;

    default:
        abort();
    }
}


static void
fuzz_ws_run(const uint8_t *in, size_t len, size_t max, unsigned seed,
    fuzz_ws_result_t *r)
{
    int                          rc;
    size_t                       off, n, step;
    const uint8_t               *pos, *end;
    ngx_http_voice_ws_event_t    ev;
    ngx_http_voice_ws_parser_t   p;

    memset(r, 0, sizeof(fuzz_ws_result_t));
    r->digest = 0xcbf29ce484222325ULL;

    ngx_http_voice_ws_parser_init(&p, fuzz_msg, max);

    off = 0;
    rc = NGX_HTTP_VOICE_WS_AGAIN;

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
            rc = ngx_http_voice_ws_parse(&p, &pos, end, &ev);

            if (pos < in + off || pos > end) {
                abort();
            }

            if (rc == NGX_HTTP_VOICE_WS_AGAIN) {
                if (pos != end) {
                    abort();
                }

                break;
            }

            if (rc == NGX_HTTP_VOICE_WS_ERROR) {
                if ((p.close_code != NGX_HTTP_VOICE_WS_CLOSE_PROTOCOL
                     && p.close_code != NGX_HTTP_VOICE_WS_CLOSE_BAD_DATA
                     && p.close_code != NGX_HTTP_VOICE_WS_CLOSE_TOO_BIG)
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


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t            max, n;
    uint8_t           hdr[NGX_HTTP_VOICE_WS_OUT_HEADER];
    uint8_t           close[NGX_HTTP_VOICE_WS_MAX_CONTROL];
    char              reason[256];
    fuzz_ws_result_t  whole, split;

    if (size < 2) {
        return 0;
    }

    max = (data[0] == 0xff) ? FUZZ_MSG_MAX : (size_t) data[0] * 4;

    fuzz_ws_run(data + 2, size - 2, max, 0, &whole);
    fuzz_ws_run(data + 2, size - 2, max, data[1] | 1, &split);

    if (whole.digest != split.digest || whole.events != split.events
        || whole.last != split.last || whole.close_code != split.close_code)
    {
        abort();
    }

    /* the writers, on the same bytes */

    n = ngx_http_voice_ws_frame_header(hdr, data[1] & 0xf, size * 251);
    if (n != 2 && n != 4 && n != 10) {
        abort();
    }

    n = (size - 2 < sizeof(reason) - 1) ? size - 2 : sizeof(reason) - 1;
    memcpy(reason, data + 2, n);
    reason[n] = '\0';

    n = ngx_http_voice_ws_close_payload(close, 1000, reason);

    if (n < 2 || n > NGX_HTTP_VOICE_WS_MAX_CONTROL) {
        abort();
    }

    if (ngx_http_voice_ws_utf8_valid((const uint8_t *) reason, strlen(reason))
        && !ngx_http_voice_ws_utf8_valid(close + 2, n - 2))
    {
        abort();
    }

    return 0;
}
