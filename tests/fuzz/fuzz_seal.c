/*
 * fuzz_seal.c: libFuzzer target of the sealed tokens
 * (ngx_voice_module/ngx_http_voice_seal.c), which come back from Twilio
 * in the TwiML URL and the stream's parameters, and which anyone who can
 * reach that URL may try to forge.
 *
 * The input is a token.  Opening it must keep to the room the header
 * promises (the token's length) and fail, since no token can be made
 * without the key.  The input is also sealed, and the token must open to
 * it again, and fail once any one of its characters is changed.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_voice_seal.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t          n, m, cap, i;
    uint8_t        *out, *token, *back;

    static uint8_t  key[NGX_HTTP_VOICE_SEAL_KEY];
    static int      keyed;

    if (!keyed) {
        if (ngx_http_voice_seal_key((const uint8_t *) "fuzz-auth-token", 15,
                                    key) != 0)
        {
            abort();
        }

        keyed = 1;
    }

    out = malloc(size ? size : 1);
    if (out == NULL) {
        abort();
    }

    if (ngx_http_voice_unseal(key, data, size, out, size) != (size_t) -1) {
        abort();        /* a forgery: 2^-128 */
    }

    free(out);

    cap = NGX_HTTP_VOICE_SEAL_LEN(size);
    token = malloc(cap);
    if (token == NULL) {
        abort();
    }

    n = ngx_http_voice_seal(key, data, size, token, cap);
    if (n == 0 || n > cap) {
        abort();
    }

    back = malloc(n);
    if (back == NULL) {
        abort();
    }

    m = ngx_http_voice_unseal(key, token, n, back, n);
    if (m != size || memcmp(back, data, size) != 0) {
        abort();
    }

    i = size % n;
    token[i] ^= (token[i] == 'A') ? 0x02 : 0x01;

    if (ngx_http_voice_unseal(key, token, n, back, n) != (size_t) -1) {
        abort();
    }

    free(back);
    free(token);

    return 0;
}
