/*
 * test_voice_b64.c: unit tests of common/voice_b64.c: RFC 4648 vectors,
 * the strict decoder's refusals and its output bound, round trips, the
 * Twilio silence frame, and base64 cut into pieces the way
 * bridged/bd_oai_event.c decodes long audio deltas.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "voice_b64.h"


static const char  *vectors[][2] = {
    { "", "" },
    { "f", "Zg==" },
    { "fo", "Zm8=" },
    { "foo", "Zm9v" },
    { "foob", "Zm9vYg==" },
    { "fooba", "Zm9vYmE=" },
    { "foobar", "Zm9vYmFy" },
};


static void
test_rfc4648_vectors(void **state)
{
    long      n;
    char      enc[16];
    size_t    i, len;
    uint8_t   dec[16];

    (void) state;

    for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        len = strlen(vectors[i][0]);

        assert_int_equal(voice_b64_encode(enc, (const uint8_t *) vectors[i][0],
                                       len),
                         strlen(vectors[i][1]));
        assert_memory_equal(enc, vectors[i][1], strlen(vectors[i][1]));

        n = voice_b64_decode(dec, sizeof(dec), vectors[i][1],
                             strlen(vectors[i][1]));
        assert_int_equal(n, len);
        assert_memory_equal(dec, vectors[i][0], len);
    }
}


static void
test_twilio_silence_frame(void **state)
{
    long     n;
    char     enc[VOICE_B64_ENCODED_LEN(160)];
    size_t   i;
    uint8_t  silence[160], dec[VOICE_B64_DECODED_MAX(216)];

    (void) state;

    /* 20 ms of mu-law silence: 213 '/' then "w==" (216 characters) */

    memset(silence, 0xff, sizeof(silence));

    assert_int_equal(voice_b64_encode(enc, silence, sizeof(silence)), 216);

    for (i = 0; i < 213; i++) {
        assert_int_equal(enc[i], '/');
    }

    assert_memory_equal(enc + 213, "w==", 3);

    n = voice_b64_decode(dec, sizeof(dec), enc, 216);
    assert_int_equal(n, 160);
    assert_memory_equal(dec, silence, 160);
}


static void
test_unpadded_input(void **state)
{
    uint8_t  dec[8];

    (void) state;

    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zg", 2), 1);
    assert_int_equal(dec[0], 'f');
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zm8", 3), 2);
    assert_memory_equal(dec, "fo", 2);
}


static void
test_refusals(void **state)
{
    uint8_t  dec[32];

    (void) state;

    /* not the standard alphabet, whitespace, a lone character */
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zm9v-_8=", 8), -1);
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zm9v Zm9v", 9), -1);
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zm9vY", 5), -1);
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zm9v\n", 5), -1);

    /* padding only at the end, and only to close a group */
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zg==Zg==", 8), -1);
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zm9=", 4), -1);
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Z===", 4), -1);
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zg=", 3), -1);

    /* spare bits set: not what an encoder writes */
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zh==", 4), -1);
    assert_int_equal(voice_b64_decode(dec, sizeof(dec), "Zm9=", 4), -1);
}


static void
test_round_trip_all_lengths(void **state)
{
    long      n;
    char     *enc;
    size_t    len, i;
    uint8_t  *src, *dec;

    (void) state;

    src = malloc(1000);
    enc = malloc(VOICE_B64_ENCODED_LEN(1000));
    dec = malloc(VOICE_B64_DECODED_MAX(VOICE_B64_ENCODED_LEN(1000)));

    srand(1);

    for (len = 0; len <= 1000; len++) {
        for (i = 0; i < len; i++) {
            src[i] = (uint8_t) rand();
        }

        assert_int_equal(voice_b64_encode(enc, src, len),
                         VOICE_B64_ENCODED_LEN(len));

        n = voice_b64_decode(dec, len, enc, VOICE_B64_ENCODED_LEN(len));
        assert_int_equal(n, len);
        assert_memory_equal(dec, src, len);
    }

    free(src);
    free(enc);
    free(dec);
}


static void
test_decode_in_pieces(void **state)
{
    long      n;
    char     *enc;
    size_t    len, off, chunk, total, i;
    uint8_t  *src, *dec;

    (void) state;

    /* a 20000-byte delta decoded in pieces of 16383 bytes (21844 chars) */

    len = 20000;
    chunk = 16383 / 3 * 4;

    src = malloc(len);
    enc = malloc(VOICE_B64_ENCODED_LEN(len));
    dec = malloc(len + 3);

    for (i = 0; i < len; i++) {
        src[i] = (uint8_t) (i * 7 + 3);
    }

    voice_b64_encode(enc, src, len);

    total = 0;

    for (off = 0; off < VOICE_B64_ENCODED_LEN(len); off += chunk) {
        n = voice_b64_decode(dec + total, len + 3 - total, enc + off,
                             VOICE_B64_ENCODED_LEN(len) - off < chunk
                             ? VOICE_B64_ENCODED_LEN(len) - off : chunk);
        assert_true(n > 0 && n <= 16383);
        total += (size_t) n;
    }

    assert_int_equal(total, len);
    assert_memory_equal(dec, src, len);

    free(src);
    free(enc);
    free(dec);
}


/*
 * From the Twilio parser's tests: the output bound, one byte at a time;
 * and the decoded length found without decoding, padded or not.
 */

static void
test_output_bound(void **state)
{
    long     n;
    char     enc[128];
    size_t   m, len;
    uint8_t  in[64], dec[64];

    (void) state;

    m = voice_b64_encode(enc, (const uint8_t *) "foobar", 6);
    assert_int_equal(m, 8);
    assert_memory_equal(enc, "Zm9vYmFy", 8);
    m = voice_b64_encode(enc, (const uint8_t *) "fooba", 5);
    assert_memory_equal(enc, "Zm9vYmE=", m);
    m = voice_b64_encode(enc, (const uint8_t *) "foob", 4);
    assert_memory_equal(enc, "Zm9vYg==", m);
    m = voice_b64_encode(enc, (const uint8_t *) "", 0);
    assert_int_equal(m, 0);

    for (len = 0; len < sizeof(in); len++) {
        in[len] = (uint8_t) (0xa5 ^ len * 37);
        m = voice_b64_encode(enc, in, len);
        assert_int_equal(m, 4 * ((len + 2) / 3));
        assert_int_equal(voice_b64_decode(dec, len, enc, m), len);
        assert_memory_equal(dec, in, len);
        assert_int_equal(voice_b64_decoded_len(enc, m), len);

        /* one byte short of room */
        if (len) {
            assert_int_equal(voice_b64_decode(dec, len - 1, enc, m), -1);
        }

        /* unpadded, the same bytes and the same bound */
        while (m && enc[m - 1] == '=') {
            m--;
        }

        n = voice_b64_decode(dec, len, enc, m);
        assert_int_equal(n, len);
        assert_memory_equal(dec, in, len);
        assert_int_equal(voice_b64_decoded_len(enc, m), len);

        if (len) {
            assert_int_equal(voice_b64_decode(dec, len - 1, enc, m), -1);
        }
    }

    assert_int_equal(voice_b64_decode(dec, 64, "Zm9vYmFy", 8), 6);
    assert_int_equal(voice_b64_decode(dec, 64, "Zm9vYmF=", 8), -1);
    assert_int_equal(voice_b64_decode(dec, 64, "Zm9vYh==", 8), -1);
    assert_int_equal(voice_b64_decode(dec, 64, "Zm9vYg==", 8), 4);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_twilio_silence_frame),
        cmocka_unit_test(test_unpadded_input),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_round_trip_all_lengths),
        cmocka_unit_test(test_decode_in_pieces),
        cmocka_unit_test(test_output_bound),
    };

    return cmocka_run_group_tests_name("voice_b64", tests, NULL, NULL);
}
