/*
 * voice_b64.c: the base64 encoder and strict decoder of voice_b64.h.
 *
 * Why our own rather than a dependency's.  nginx's ngx_decode_base64()
 * stops at the first '=' and ignores what follows, and keeps the bits a
 * short group drops, so "Zg==junk" and "Zh==" pass; it also exists only
 * inside nginx, and this code is fuzzed and unit tested outside it and
 * runs in bridged too.  OpenSSL's EVP_DecodeBlock() skips whitespace,
 * counts padding as decoded bytes and takes no output bound.  A media
 * payload or an audio delta that is not canonical base64 is better
 * refused than played as noise, so one strict decoder serves both sides
 * (nginx still uses ngx_encode_base64() and ngx_decode_base64() for the
 * WebSocket handshake's key and accept, where nginx's own is the right
 * tool).  The decoder takes four characters at a time and tests their
 * table values together: both sides decode every frame.
 */

#include <stddef.h>
#include <stdint.h>

#include "voice_b64.h"


static const char  voice_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/* 0..63 for an alphabet character, 64 for anything else ('=' included) */

static const uint8_t  voice_b64_values[256] = {
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 62, 64, 64, 64, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 64, 64, 64, 64, 64, 64,
    64,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 64, 64, 64, 64, 64,
    64, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64
};


size_t
voice_b64_encode(char *dst, const uint8_t *src, size_t len)
{
    char        *p;
    uint32_t     v;
    const char  *d;

    p = dst;
    d = voice_b64_alphabet;

    while (len >= 3) {
        v = (uint32_t) src[0] << 16 | (uint32_t) src[1] << 8 | src[2];

        p[0] = d[v >> 18];
        p[1] = d[v >> 12 & 0x3f];
        p[2] = d[v >> 6 & 0x3f];
        p[3] = d[v & 0x3f];

        p += 4;
        src += 3;
        len -= 3;
    }

    if (len) {
        v = (uint32_t) src[0] << 16;

        if (len == 2) {
            v |= (uint32_t) src[1] << 8;
        }

        p[0] = d[v >> 18];
        p[1] = d[v >> 12 & 0x3f];
        p[2] = (len == 2) ? d[v >> 6 & 0x3f] : '=';
        p[3] = '=';

        p += 4;
    }

    return (size_t) (p - dst);
}


long
voice_b64_decode(uint8_t *dst, size_t cap, const char *src, size_t len)
{
    size_t          n, rest;
    uint8_t        *p;
    uint32_t        a, b, c, d;
    const uint8_t  *s, *last, *v;

    s = (const uint8_t *) src;
    v = voice_b64_values;

    /* padding closes a whole group of four, with one or two '=' */

    if (len && s[len - 1] == '=') {
        if (len % 4) {
            return -1;
        }

        len -= (s[len - 2] == '=') ? 2 : 1;
    }

    rest = len % 4;

    if (rest == 1) {
        return -1;
    }

    n = len / 4 * 3 + (rest ? rest - 1 : 0);

    if (n > cap) {
        return -1;
    }

    p = dst;
    last = s + (len - rest);

    while (s < last) {
        a = v[s[0]];
        b = v[s[1]];
        c = v[s[2]];
        d = v[s[3]];

        if ((a | b | c | d) & 0x40) {
            return -1;
        }

        a = a << 18 | b << 12 | c << 6 | d;

        p[0] = (uint8_t) (a >> 16);
        p[1] = (uint8_t) (a >> 8);
        p[2] = (uint8_t) a;

        p += 3;
        s += 4;
    }

    if (rest == 0) {
        return (long) n;
    }

    /*
     * A last group of 2 or 3 characters carries 1 or 2 bytes; the bits
     * it drops must be zero, or no encoder wrote it.
     */

    a = v[s[0]];
    b = v[s[1]];
    c = (rest == 3) ? v[s[2]] : 0;

    if ((a | b | c) & 0x40) {
        return -1;
    }

    a = a << 18 | b << 12 | c << 6;

    p[0] = (uint8_t) (a >> 16);

    if (rest == 2) {
        return (a & 0xffff) ? -1 : (long) n;
    }

    p[1] = (uint8_t) (a >> 8);

    return (a & 0xff) ? -1 : (long) n;
}
