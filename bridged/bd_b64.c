/*
 * bd_b64.c: base64 encoder and strict decoder.
 *
 * The decoder refuses anything that is not canonical base64 with the
 * standard alphabet (no whitespace, no URL alphabet, no padding in the
 * middle), because the only producer is OpenAI and a bad delta is better
 * dropped than played as noise.  Used by bd_oai_event.c.
 */

#include <stddef.h>
#include <stdint.h>

#include "bd_b64.h"


static const char  bd_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/* 0..63 for an alphabet character, 64 for '=', 255 for anything else */

static const uint8_t  bd_b64_values[256] = {
    255, 255, 255, 255, 255, 255, 255, 255,   /* 00 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* 08 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* 10 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* 18 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* 20 */
    255, 255, 255,  62, 255, 255, 255,  63,   /* 28 */
     52,  53,  54,  55,  56,  57,  58,  59,   /* 30 */
     60,  61, 255, 255, 255,  64, 255, 255,   /* 38 */
    255,   0,   1,   2,   3,   4,   5,   6,   /* 40 */
      7,   8,   9,  10,  11,  12,  13,  14,   /* 48 */
     15,  16,  17,  18,  19,  20,  21,  22,   /* 50 */
     23,  24,  25, 255, 255, 255, 255, 255,   /* 58 */
    255,  26,  27,  28,  29,  30,  31,  32,   /* 60 */
     33,  34,  35,  36,  37,  38,  39,  40,   /* 68 */
     41,  42,  43,  44,  45,  46,  47,  48,   /* 70 */
     49,  50,  51, 255, 255, 255, 255, 255,   /* 78 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* 80 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* 88 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* 90 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* 98 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* a0 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* a8 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* b0 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* b8 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* c0 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* c8 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* d0 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* d8 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* e0 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* e8 */
    255, 255, 255, 255, 255, 255, 255, 255,   /* f0 */
    255, 255, 255, 255, 255, 255, 255, 255   /* f8 */
};


size_t
bd_b64_encode(char *dst, const uint8_t *src, size_t len)
{
    char      *p;
    uint32_t   v;

    p = dst;

    while (len >= 3) {
        v = (uint32_t) src[0] << 16 | (uint32_t) src[1] << 8 | src[2];

        *p++ = bd_b64_alphabet[v >> 18];
        *p++ = bd_b64_alphabet[(v >> 12) & 0x3f];
        *p++ = bd_b64_alphabet[(v >> 6) & 0x3f];
        *p++ = bd_b64_alphabet[v & 0x3f];

        src += 3;
        len -= 3;
    }

    if (len) {
        v = (uint32_t) src[0] << 16;
        if (len == 2) {
            v |= (uint32_t) src[1] << 8;
        }

        *p++ = bd_b64_alphabet[v >> 18];
        *p++ = bd_b64_alphabet[(v >> 12) & 0x3f];
        *p++ = (len == 2) ? bd_b64_alphabet[(v >> 6) & 0x3f] : '=';
        *p++ = '=';
    }

    return (size_t) (p - dst);
}


long
bd_b64_decode(uint8_t *dst, const char *src, size_t len)
{
    size_t          i, n, pad;
    uint8_t        *p, c;
    uint32_t        v;
    const uint8_t  *s;

    s = (const uint8_t *) src;

    /* padding may only close the input, and only up to a whole group */

    pad = 0;
    while (pad < 2 && len > 0 && s[len - 1] == '=') {
        len--;
        pad++;
    }

    if (pad && (len + pad) % 4 != 0) {
        return -1;
    }

    if (len % 4 == 1) {
        return -1;
    }

    p = dst;
    v = 0;
    n = 0;

    for (i = 0; i < len; i++) {
        c = bd_b64_values[s[i]];
        if (c > 63) {
            return -1;
        }

        v = v << 6 | c;

        if (++n == 4) {
            *p++ = (uint8_t) (v >> 16);
            *p++ = (uint8_t) (v >> 8);
            *p++ = (uint8_t) v;
            v = 0;
            n = 0;
        }
    }

    /*
     * A tail of 2 or 3 characters carries 1 or 2 bytes; its spare bits
     * must be zero, or the input was not produced by an encoder.
     */

    if (n == 2) {
        if (v & 0xf) {
            return -1;
        }
        *p++ = (uint8_t) (v >> 4);

    } else if (n == 3) {
        if (v & 0x3) {
            return -1;
        }
        *p++ = (uint8_t) (v >> 10);
        *p++ = (uint8_t) (v >> 2);
    }

    return (long) (p - dst);
}
