/*
 * fuzz_curve.c: libFuzzer target of the CURVE key file reader
 * (proto/voice_curve.c), which nginx and bridged both use on the key
 * files an operator gives them, and of its test of an endpoint.
 *
 * The input is a key file.  Whatever it holds, the reader must keep to
 * the room it is given, return only keys of 40 Z85 characters that are
 * lines of the file, and say why and where when it refuses; reading at
 * most one key must agree with reading many.  The input's first line is
 * also tried as an endpoint.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "voice_curve.h"


#define FUZZ_KEYS  4


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static const char  fuzz_z85[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ".-:+=^!/*?&<>()[]{}@%$#";


/* 1 when s is digits and dots only */

static int
fuzz_dotted(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] != '.' && (s[i] < '0' || s[i] > '9')) {
            return 0;
        }
    }

    return 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 n, one, i, j, local;
    char                err[64], *text, *ep, *host;
    size_t              eplen, hlen;
    voice_curve_key_t   keys[FUZZ_KEYS + 1], key;

    text = malloc(size ? size : 1);
    if (text == NULL) {
        abort();
    }

    memcpy(text, data, size);
    memset(keys, 'x', sizeof(keys));
    memset(err, 'x', sizeof(err));

    n = voice_curve_keys(text, size, keys, FUZZ_KEYS, err, sizeof(err));

    if (n < -1 || n > FUZZ_KEYS
        || (n == -1 && (memchr(err, '\0', sizeof(err)) == NULL
                        || strncmp(err, "line ", 5) != 0))
        || keys[FUZZ_KEYS][0] != 'x')
    {
        abort();
    }

    for (i = 0; i < n; i++) {
        if (strlen(keys[i]) != VOICE_CURVE_KEY_LEN
            || strspn(keys[i], fuzz_z85) != VOICE_CURVE_KEY_LEN
            || memmem(text, size, keys[i], VOICE_CURVE_KEY_LEN) == NULL
            || keys[i][0] == '#')
        {
            abort();
        }
    }

    memset(err, 'x', sizeof(err));

    one = voice_curve_key(text, size, key, err, sizeof(err));

    if (one != (n == 1)
        || (!one && memchr(err, '\0', sizeof(err)) == NULL)
        || (one && memcmp(key, keys[0], sizeof(key)) != 0))
    {
        abort();
    }

    /* the endpoint: what is local says so by its very start */

    ep = memchr(text, '\n', size);
    eplen = ep ? (size_t) (ep - text) : size;
    local = voice_curve_endpoint_local(text, eplen);

    j = (eplen >= 6 && memcmp(text, "ipc://", 6) == 0)
        || (eplen >= 9 && memcmp(text, "inproc://", 9) == 0)
        || (eplen >= 6 && memcmp(text, "tcp://", 6) == 0);

    if (local && !j) {
        abort();
    }

    /* a TCP one to a loopback address: its host, up to the port's ':',
     * is [::1], localhost or 127.* in digits; no name DNS resolves */

    if (local && memcmp(text, "tcp://", 6) == 0) {
        host = text + 6;
        hlen = 0;

        if (eplen > 11 && memcmp(host, "[::1]", 5) == 0) {
            hlen = 5;

        } else {
            while (6 + hlen < eplen && host[hlen] != ':') {
                hlen++;
            }
        }

        if (memchr(host, ';', eplen - 6) != NULL || 6 + hlen == eplen
            || host[hlen] != ':'
            || !((hlen == 9 && memcmp(host, "localhost", 9) == 0)
                 || (hlen == 5 && memcmp(host, "[::1]", 5) == 0)
                 || (hlen >= 4 && memcmp(host, "127.", 4) == 0
                     && fuzz_dotted(host, hlen))))
        {
            abort();
        }
    }

    free(text);

    return 0;
}
