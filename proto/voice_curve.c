/*
 * voice_curve.c: reads the key files of the CURVE link (voice_curve.h
 * describes their format).
 *
 * A key is checked as libzmq would decode it -- 40 characters of Z85's
 * alphabet, each group of five a value below 2^32 -- so that a bad key is
 * refused at start, naming its file and line, and not by a handshake that
 * fails later without saying why.  libc only.
 */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "voice_curve.h"


static const char  voice_curve_z85[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ".-:+=^!/*?&<>()[]{}@%$#";


static int
voice_curve_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}


/* 1 when the line (without its blanks) is a valid Z85 key */

static int
voice_curve_valid(const char *p, size_t len, const char **why)
{
    size_t        i, j;
    uint64_t      v;
    const char   *d;

    if (len != VOICE_CURVE_KEY_LEN) {
        *why = "is not a key of 40 Z85 characters";
        return 0;
    }

    for (i = 0; i < len; i += 5) {
        v = 0;

        for (j = i; j < i + 5; j++) {
            d = (p[j] != '\0') ? strchr(voice_curve_z85, p[j]) : NULL;

            if (d == NULL) {
                *why = "has a character that is not Z85";
                return 0;
            }

            v = v * 85 + (uint64_t) (d - voice_curve_z85);
        }

        if (v > UINT32_MAX) {
            *why = "is not valid Z85 (a group of five is out of range)";
            return 0;
        }
    }

    return 1;
}


int
voice_curve_keys(const char *text, size_t len, voice_curve_key_t *keys,
    size_t max, char *err, size_t err_size)
{
    size_t       n, line, klen;
    const char  *p, *end, *eol, *k, *why;

    n = 0;
    line = 0;
    p = text;
    end = text + len;

    while (p < end) {
        line++;

        eol = memchr(p, '\n', end - p);
        if (eol == NULL) {
            eol = end;
        }

        k = p;
        while (k < eol && voice_curve_blank(*k)) {
            k++;
        }

        klen = eol - k;
        while (klen > 0 && voice_curve_blank(k[klen - 1])) {
            klen--;
        }

        p = eol + 1;

        if (klen == 0 || k[0] == '#') {
            continue;
        }

        if (!voice_curve_valid(k, klen, &why)) {
            snprintf(err, err_size, "line %zu %s", line, why);
            return -1;
        }

        if (n == max) {
            snprintf(err, err_size, "line %zu: more than %zu key%s", line,
                     max, max == 1 ? "" : "s");
            return -1;
        }

        memcpy(keys[n], k, VOICE_CURVE_KEY_LEN);
        keys[n][VOICE_CURVE_KEY_LEN] = '\0';
        n++;
    }

    return (int) n;
}


int
voice_curve_key(const char *text, size_t len, voice_curve_key_t key,
    char *err, size_t err_size)
{
    int  n;

    n = voice_curve_keys(text, len, (voice_curve_key_t *) key, 1, err,
                         err_size);

    if (n == 0) {
        snprintf(err, err_size, "holds no key");
    }

    return n == 1;
}


static int
voice_curve_prefix(const char *s, size_t len, const char *prefix)
{
    size_t  n;

    n = strlen(prefix);

    return len >= n && memcmp(s, prefix, n) == 0;
}


/*
 * "127.d.d.d:port": digits and dots up to the port.  A name that merely
 * begins with "127." (127.example.com) is resolved by DNS, and may lead
 * anywhere.
 */

static int
voice_curve_loopback4(const char *s, size_t len)
{
    size_t  i;

    if (!voice_curve_prefix(s, len, "127.")) {
        return 0;
    }

    for (i = 4; i < len && s[i] != ':'; i++) {
        if (s[i] != '.' && (s[i] < '0' || s[i] > '9')) {
            return 0;
        }
    }

    return i < len;
}


int
voice_curve_endpoint_local(const char *ep, size_t len)
{
    if (voice_curve_prefix(ep, len, "ipc://")
        || voice_curve_prefix(ep, len, "inproc://"))
    {
        return 1;
    }

    if (!voice_curve_prefix(ep, len, "tcp://")) {
        return 0;
    }

    ep += 6;
    len -= 6;

    /* a source address ("tcp://src;dst") says nothing of where it goes */
    if (memchr(ep, ';', len) != NULL) {
        return 0;
    }

    return voice_curve_loopback4(ep, len)
           || voice_curve_prefix(ep, len, "[::1]:")
           || voice_curve_prefix(ep, len, "localhost:");
}
