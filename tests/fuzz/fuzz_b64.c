/*
 * fuzz_b64.c: libFuzzer target of the shared base64 (common/voice_b64.c).
 *
 * Byte 0 picks the output bound, the rest is decoded as base64.  What the
 * strict decoder accepts must fit the bound, have the length
 * voice_b64_decoded_len() predicts, and re-encode to the same characters,
 * padding aside (it accepts only the canonical spelling); the same text
 * padded or not must decode alike.  The rest is also encoded as bytes,
 * which must decode back to themselves, and to nothing with one byte less
 * of room.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "voice_b64.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


#define FUZZ_MAX  (1 << 16)


static uint8_t  fuzz_dec[FUZZ_MAX];
static uint8_t  fuzz_dec2[FUZZ_MAX];
static char     fuzz_enc[VOICE_B64_ENCODED_LEN(FUZZ_MAX)];


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long         n, k;
    size_t       cap, m, len, bare;
    const char  *text;

    if (size < 1 || size > FUZZ_MAX) {
        return 0;
    }

    cap = (data[0] == 0xff) ? sizeof(fuzz_dec) : (size_t) data[0] * 16;
    text = (const char *) data + 1;
    len = size - 1;

    n = voice_b64_decode(fuzz_dec, cap, text, len);

    if (n >= 0) {
        if ((size_t) n > cap || (size_t) n > VOICE_B64_DECODED_MAX(len)
            || voice_b64_decoded_len(text, len) != (size_t) n)
        {
            abort();
        }

        m = voice_b64_encode(fuzz_enc, fuzz_dec, (size_t) n);

        bare = len;
        while (bare && text[bare - 1] == '=') {
            bare--;
        }

        if (m < bare || memcmp(fuzz_enc, text, bare) != 0) {
            abort();
        }

        while (m > bare && fuzz_enc[m - 1] == '=') {
            m--;
        }

        if (m != bare) {
            abort();
        }

        /* the other spelling, padded or bare, means the same bytes */

        m = voice_b64_encode(fuzz_enc, fuzz_dec, (size_t) n);
        k = voice_b64_decode(fuzz_dec2, (size_t) n, fuzz_enc,
                             (bare == len) ? m : bare);

        if (k != n || memcmp(fuzz_dec, fuzz_dec2, (size_t) n) != 0) {
            abort();
        }
    }

    /* the input as bytes */

    m = voice_b64_encode(fuzz_enc, (const uint8_t *) text, len);

    if (m != VOICE_B64_ENCODED_LEN(len)) {
        abort();
    }

    n = voice_b64_decode(fuzz_dec, len, fuzz_enc, m);

    if (n < 0 || (size_t) n != len || memcmp(fuzz_dec, text, len) != 0) {
        abort();
    }

    if (len && voice_b64_decode(fuzz_dec, len - 1, fuzz_enc, m) != -1) {
        abort();
    }

    return 0;
}
