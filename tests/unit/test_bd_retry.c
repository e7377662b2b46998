/*
 * test_bd_retry.c: unit tests of bridged/bd_retry.c: which outcomes of a
 * Twilio REST request are worth another attempt, which surely did
 * nothing, the backoff's bounds, and the Retry-After parser (seconds and
 * the three HTTP-date forms of RFC 9110, with RFC 9110's own example).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "bd_retry.h"


/* Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example */
#define T_1994  784111777


static int
parse(const char *s, time_t now, uint64_t *ms)
{
    return bd_retry_after_parse(s, strlen(s), now, ms);
}


static void
test_transient(void **state)
{
    (void) state;

    assert_true(bd_retry_transient(CURLE_OK, 429));
    assert_true(bd_retry_transient(CURLE_OK, 500));
    assert_true(bd_retry_transient(CURLE_OK, 502));
    assert_true(bd_retry_transient(CURLE_OK, 503));
    assert_true(bd_retry_transient(CURLE_OK, 504));
    assert_false(bd_retry_transient(CURLE_OK, 200));
    assert_false(bd_retry_transient(CURLE_OK, 201));
    assert_false(bd_retry_transient(CURLE_OK, 400));
    assert_false(bd_retry_transient(CURLE_OK, 401));
    assert_false(bd_retry_transient(CURLE_OK, 404));

    assert_true(bd_retry_transient(CURLE_COULDNT_CONNECT, 0));
    assert_true(bd_retry_transient(CURLE_OPERATION_TIMEDOUT, 0));
    assert_true(bd_retry_transient(CURLE_RECV_ERROR, 0));
    assert_true(bd_retry_transient(CURLE_SEND_ERROR, 0));
    assert_true(bd_retry_transient(CURLE_GOT_NOTHING, 0));

    /* a certificate that does not verify stays so; so does an answer
     * over the cap (the write callback refused it) */
    assert_false(bd_retry_transient(CURLE_PEER_FAILED_VERIFICATION, 0));
    assert_false(bd_retry_transient(CURLE_WRITE_ERROR, 0));
    assert_false(bd_retry_transient(CURLE_URL_MALFORMAT, 0));

    /* the HTTP status of a failed transfer is not an answer */
    assert_false(bd_retry_transient(CURLE_WRITE_ERROR, 503));
}


static void
test_not_done(void **state)
{
    (void) state;

    /* Twilio refused it, or said it never processed it (429) */
    assert_true(bd_retry_not_done(CURLE_OK, 400));
    assert_true(bd_retry_not_done(CURLE_OK, 401));
    assert_true(bd_retry_not_done(CURLE_OK, 429));

    /* the request never left */
    assert_true(bd_retry_not_done(CURLE_COULDNT_CONNECT, 0));
    assert_true(bd_retry_not_done(CURLE_COULDNT_RESOLVE_HOST, 0));
    assert_true(bd_retry_not_done(CURLE_PEER_FAILED_VERIFICATION, 0));

    /* Twilio may have acted on it */
    assert_false(bd_retry_not_done(CURLE_OK, 201));
    assert_false(bd_retry_not_done(CURLE_OK, 500));
    assert_false(bd_retry_not_done(CURLE_OK, 503));
    assert_false(bd_retry_not_done(CURLE_OPERATION_TIMEDOUT, 0));
    assert_false(bd_retry_not_done(CURLE_RECV_ERROR, 0));
    assert_false(bd_retry_not_done(CURLE_GOT_NOTHING, 0));
}


static void
test_backoff(void **state)
{
    unsigned  n, lo, hi;

    (void) state;

    assert_int_equal(bd_retry_backoff_ms(1, 0), 250);
    assert_int_equal(bd_retry_backoff_ms(1, 250), 500);
    assert_int_equal(bd_retry_backoff_ms(1, 251), 250);
    assert_int_equal(bd_retry_backoff_ms(2, 0), 500);
    assert_int_equal(bd_retry_backoff_ms(3, 0), 1000);

    /* within [half, full] of an exponential capped at 8 s, always */

    for (n = 1; n < 40; n++) {
        hi = n >= 5 ? 8000 : 500u << (n - 1);
        lo = hi / 2;

        assert_in_range(bd_retry_backoff_ms(n, 0), lo, hi);
        assert_in_range(bd_retry_backoff_ms(n, UINT32_MAX), lo, hi);
        assert_in_range(bd_retry_backoff_ms(n, 123456789), lo, hi);
    }

    assert_int_equal(bd_retry_backoff_ms(0, 0), 250);
}


static void
test_retry_after_seconds(void **state)
{
    uint64_t  ms;

    (void) state;

    assert_true(parse("120", 0, &ms));
    assert_int_equal(ms, 120000);
    assert_true(parse("0", 0, &ms));
    assert_int_equal(ms, 0);
    assert_true(parse(" 2\r\n", 0, &ms));
    assert_int_equal(ms, 2000);

    /* a huge value is a day, and never overflows */
    assert_true(parse("99999999999999999999999999", 0, &ms));
    assert_int_equal(ms, 86400 * 1000ULL);

    assert_false(parse("", 0, &ms));
    assert_false(parse("  ", 0, &ms));
    assert_false(parse("-1", 0, &ms));
    assert_false(parse("1.5", 0, &ms));
    assert_false(parse("12s", 0, &ms));
    assert_false(parse("+3", 0, &ms));
}


static void
test_retry_after_dates(void **state)
{
    uint64_t  ms;

    (void) state;

    /* the three forms of RFC 9110's example, 10 s after "now" */

    assert_true(parse("Sun, 06 Nov 1994 08:49:37 GMT", T_1994 - 10, &ms));
    assert_int_equal(ms, 10000);
    assert_true(parse("Sunday, 06-Nov-94 08:49:37 GMT", T_1994 - 10, &ms));
    assert_int_equal(ms, 10000);
    assert_true(parse("Sun Nov  6 08:49:37 1994", T_1994 - 10, &ms));
    assert_int_equal(ms, 10000);

    /* in the past: no wait */
    assert_true(parse("Sun, 06 Nov 1994 08:49:37 GMT", T_1994 + 5, &ms));
    assert_int_equal(ms, 0);

    /* a leap day, the end of a year, a two-digit year of this century */
    assert_true(parse("Thu, 29 Feb 2024 00:00:00 GMT", 1709164800 - 1,
                      &ms));
    assert_int_equal(ms, 1000);
    assert_true(parse("Thu, 31 Dec 2026 23:59:59 GMT", 1798761599 - 3,
                      &ms));
    assert_int_equal(ms, 3000);
    assert_true(parse("Thursday, 31-Dec-26 23:59:59 GMT", 1798761599 - 3,
                      &ms));
    assert_int_equal(ms, 3000);

    /* far ahead: a day at most */
    assert_true(parse("Fri, 31 Dec 9999 23:59:59 GMT", 0, &ms));
    assert_int_equal(ms, 86400 * 1000ULL);
}


static void
test_retry_after_malformed(void **state)
{
    size_t        i;
    uint64_t      ms;
    const char   *bad[] = {
        "Sun, 06 Nov 1994 08:49:37",            /* no zone */
        "Sun, 06 Nov 1994 08:49:37 UTC",        /* not GMT */
        "Sun, 06 Nov 1994 08:49:37 GMTx",
        "Sun, 6 Nov 1994 08:49:37 GMT",         /* one digit */
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 29 Feb 2023 08:49:37 GMT",        /* not a leap year */
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun 06 Nov 1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",              /* asctime pads with a
                                                   space */
        "Sun Nov  6 08:49:37 94",
        "S, 06 Nov 1994 08:49:37 GMT",
        "Sun,06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "tomorrow",
        "Sun, 06 Nov 1994 08:49",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 77;

        if (parse(bad[i], 0, &ms)) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
    }

    /* the length is the value's: what follows it is not read */
    assert_true(bd_retry_after_parse("12345", 2, 0, &ms));
    assert_int_equal(ms, 12000);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_transient),
        cmocka_unit_test(test_not_done),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_retry_after_dates),
        cmocka_unit_test(test_retry_after_malformed),
    };

    return cmocka_run_group_tests_name("bd_retry", tests, NULL, NULL);
}
