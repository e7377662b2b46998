/*
 * test_seal.c: unit tests of ngx_http_voice_seal.c: a sealed token opens
 * with its key only, any change to it is refused, it is URL-safe and no
 * longer than announced, and two seals of the same text differ.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ngx_http_voice_seal.h"


static uint8_t  key[NGX_HTTP_VOICE_SEAL_KEY];
static uint8_t  other[NGX_HTTP_VOICE_SEAL_KEY];


static int
setup(void **state)
{
    (void) state;

    assert_int_equal(ngx_http_voice_seal_key((const uint8_t *) "token-a", 7,
                                             key), 0);
    assert_int_equal(ngx_http_voice_seal_key((const uint8_t *) "token-b", 7,
                                             other), 0);
    assert_int_equal(ngx_http_voice_seal_key((const uint8_t *) "", 0,
                                             other + 0), -1);

    return 0;
}


static void
test_round_trip(void **state)
{
    size_t       i, n, m, lens[] = { 0, 1, 2, 3, 100, 2048 };
    uint8_t      in[2048], tok[NGX_HTTP_VOICE_SEAL_LEN(2048)], out[4096];
    uint8_t      tok2[NGX_HTTP_VOICE_SEAL_LEN(2048)];

    (void) state;

    for (i = 0; i < sizeof(in); i++) {
        in[i] = (uint8_t) (i * 7);
    }

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        n = ngx_http_voice_seal(key, in, lens[i], tok, sizeof(tok));
        assert_true(n > 3 && n < NGX_HTTP_VOICE_SEAL_LEN(lens[i]));
        assert_memory_equal(tok, "v1.", 3);

        for (m = 3; m < n; m++) {
            assert_true((tok[m] >= 'A' && tok[m] <= 'Z')
                        || (tok[m] >= 'a' && tok[m] <= 'z')
                        || (tok[m] >= '0' && tok[m] <= '9')
                        || tok[m] == '-' || tok[m] == '_');
        }

        m = ngx_http_voice_unseal(key, tok, n, out, sizeof(out));
        assert_int_equal(m, lens[i]);
        assert_memory_equal(out, in, lens[i]);

        /* another key, another token */
        assert_int_equal(ngx_http_voice_unseal(other, tok, n, out,
                                               sizeof(out)), (size_t) -1);

        /* a fresh nonce each time */
        assert_int_equal(ngx_http_voice_seal(key, in, lens[i], tok2,
                                             sizeof(tok2)), n);
        assert_memory_not_equal(tok, tok2, n);
    }
}


static void
test_tampering(void **state)
{
    size_t   n, i;
    uint8_t  tok[NGX_HTTP_VOICE_SEAL_LEN(64)], bad[sizeof(tok)], out[128];

    (void) state;

    n = ngx_http_voice_seal(key, (const uint8_t *) "{\"greeting\":\"hi\"}",
                            17, tok, sizeof(tok));
    assert_true(n > 0);

    /* every byte changed, one at a time */
    for (i = 0; i < n; i++) {
        memcpy(bad, tok, n);
        bad[i] = (bad[i] == 'A') ? 'B' : 'A';
        assert_int_equal(ngx_http_voice_unseal(key, bad, n, out,
                                               sizeof(out)), (size_t) -1);
    }

    /* cut, padded, another alphabet, another version, too small out */
    assert_int_equal(ngx_http_voice_unseal(key, tok, n - 1, out,
                                           sizeof(out)), (size_t) -1);
    assert_int_equal(ngx_http_voice_unseal(key, tok, 10, out, sizeof(out)),
                     (size_t) -1);
    memcpy(bad, tok, n);
    bad[n] = '=';
    assert_int_equal(ngx_http_voice_unseal(key, bad, n + 1, out,
                                           sizeof(out)), (size_t) -1);
    bad[5] = '+';
    assert_int_equal(ngx_http_voice_unseal(key, bad, n, out, sizeof(out)),
                     (size_t) -1);
    memcpy(bad, tok, n);
    bad[1] = '2';
    assert_int_equal(ngx_http_voice_unseal(key, bad, n, out, sizeof(out)),
                     (size_t) -1);
    assert_int_equal(ngx_http_voice_unseal(key, tok, n, out, 16),
                     (size_t) -1);
    assert_int_equal(ngx_http_voice_unseal(key, (const uint8_t *) "v1.", 3,
                                           out, sizeof(out)), (size_t) -1);

    /* too little room to seal */
    assert_int_equal(ngx_http_voice_seal(key, (const uint8_t *) "x", 1, out,
                                         10), 0);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test_setup(test_round_trip, setup),
        cmocka_unit_test_setup(test_tampering, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
