/*
 * test_outbox_fmt.c: unit tests of ngx_http_voice_outbox_fmt.c: entry
 * names made and read back (and names that are not an entry's), the
 * entry's contents made and read back (and torn or foreign files), and
 * the backoff: waits that double within their bounds, jitter, one last
 * attempt at the retry time, then none.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ngx_http_voice_outbox_fmt.h"


#define SID  "CA0123456789abcdef0123456789abcdef"


static void
test_name(void **state)
{
    size_t   n, sid_len;
    uint8_t  out[NGX_HTTP_VOICE_OUTBOX_NAME_MAX];
    uint64_t made;

    (void) state;

    n = ngx_http_voice_outbox_fmt_name(out, (const uint8_t *) SID,
                                       strlen(SID), 1764979200123ULL);
    assert_int_equal(n, strlen((char *) out));
    assert_string_equal((char *) out, SID ".1764979200123.hook");

    assert_int_equal(ngx_http_voice_outbox_fmt_parse_name(out, n, &sid_len,
                                                          &made), 1);
    assert_int_equal(sid_len, strlen(SID));
    assert_true(made == 1764979200123ULL);

    /* the largest time there is fits */
    n = ngx_http_voice_outbox_fmt_name(out, (const uint8_t *) SID,
                                       strlen(SID), UINT64_MAX);
    assert_true(n > 0);

    /* no SID, a SID with a dot or a slash, a SID too long */
    assert_int_equal(ngx_http_voice_outbox_fmt_name(out,
                         (const uint8_t *) "", 0, 1), 0);
    assert_int_equal(ngx_http_voice_outbox_fmt_name(out,
                         (const uint8_t *) "CA1.2", 5, 1), 0);
    assert_int_equal(ngx_http_voice_outbox_fmt_name(out,
                         (const uint8_t *) "../x", 4, 1), 0);
    memset(out, 'A', sizeof(out));
    assert_int_equal(ngx_http_voice_outbox_fmt_name(out, out,
                         NGX_HTTP_VOICE_OUTBOX_SID_MAX + 1, 1), 0);
}


static void
test_not_a_name(void **state)
{
    size_t       i, sid_len;
    uint64_t     made;
    const char  *bad[] = {
        "", ".hook", "CA1.hook", ".1.hook", "CA1..hook", "CA1.12x.hook",
        "CA1.12.json", "CA1.12.hook.tmp", ".CA1.12.hook.tmp",
        "CA-1.12.hook", "CA1.123456789012345678901.hook", "CA1.12hook",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(ngx_http_voice_outbox_fmt_parse_name(
                             (const uint8_t *) bad[i], strlen(bad[i]),
                             &sid_len, &made), 0);
    }

    assert_int_equal(ngx_http_voice_outbox_fmt_parse_name(
                         (const uint8_t *) "CA1.0.hook", 10, &sid_len,
                         &made), 1);
    assert_int_equal(sid_len, 3);
    assert_true(made == 0);
}


static void
test_entry(void **state)
{
    size_t          n, url_len, body_len;
    uint8_t         buf[NGX_HTTP_VOICE_OUTBOX_HEADER_MAX + 64];
    const char     *url = "https://hooks.example/calls?x=1";
    const char     *body = "{\"callSid\":\"CA1\"}\n";
    const uint8_t  *u, *b;

    (void) state;

    n = ngx_http_voice_outbox_fmt_header(buf, (const uint8_t *) url,
                                         strlen(url));
    assert_int_equal(n, strlen("voice-webhook 1\nurl ") + strlen(url) + 2);
    assert_memory_equal(buf, "voice-webhook 1\nurl https://", 28);
    memcpy(buf + n, body, strlen(body));

    assert_int_equal(ngx_http_voice_outbox_fmt_parse(buf, n + strlen(body),
                                                     &u, &url_len, &b,
                                                     &body_len), 1);
    assert_int_equal(url_len, strlen(url));
    assert_memory_equal(u, url, url_len);
    assert_int_equal(body_len, strlen(body));
    assert_memory_equal(b, body, body_len);

    /* torn: no body, no empty line, half the header */
    assert_int_equal(ngx_http_voice_outbox_fmt_parse(buf, n, &u, &url_len,
                                                     &b, &body_len), 0);
    assert_int_equal(ngx_http_voice_outbox_fmt_parse(buf, n - 1, &u,
                                                     &url_len, &b,
                                                     &body_len), 0);
    assert_int_equal(ngx_http_voice_outbox_fmt_parse(buf, 10, &u, &url_len,
                                                     &b, &body_len), 0);

    /* foreign, another version, an empty URL */
    assert_int_equal(ngx_http_voice_outbox_fmt_parse(
                         (const uint8_t *) "{\"callSid\":1}", 13, &u,
                         &url_len, &b, &body_len), 0);
    assert_int_equal(ngx_http_voice_outbox_fmt_parse(
                         (const uint8_t *) "voice-webhook 2\nurl x\n\n{}", 25,
                         &u, &url_len, &b, &body_len), 0);
    assert_int_equal(ngx_http_voice_outbox_fmt_parse(
                         (const uint8_t *) "voice-webhook 1\nurl \n\n{}", 24,
                         &u, &url_len, &b, &body_len), 0);

    /* a URL an entry cannot hold */
    assert_int_equal(ngx_http_voice_outbox_fmt_header(buf,
                         (const uint8_t *) "http://a\n/", 10), 0);
    assert_int_equal(ngx_http_voice_outbox_fmt_header(buf,
                         (const uint8_t *) "", 0), 0);
}


static void
test_backoff(void **state)
{
    uint64_t  made, now, next, retry, delay, prev, age;
    uint32_t  rnd;

    (void) state;

    made = 1000000;
    retry = 86400000;

    /* at once after the first attempt: about a second */
    for (rnd = 0; rnd < 5000; rnd += 7) {
        next = ngx_http_voice_outbox_fmt_next(made, made, retry, rnd);
        assert_true(next >= made + 750 && next <= made + 1250);
    }

    /* then about its age: the waits double */
    prev = 0;
    for (age = 1000; age < 200000; age *= 2) {
        now = made + age;
        next = ngx_http_voice_outbox_fmt_next(made, now, retry, 0);
        delay = next - now;
        assert_true(delay == age * 3 / 4);
        assert_true(delay > prev);
        prev = delay;
    }

    /* never more than five minutes, give or take a quarter */
    for (rnd = 0; rnd < 100000; rnd += 997) {
        now = made + 3600000;
        next = ngx_http_voice_outbox_fmt_next(made, now, retry, rnd);
        assert_true(next - now >= 225000 && next - now <= 375000);
    }

    /* one last attempt at made + retry, then given up */
    retry = 4000;
    next = ngx_http_voice_outbox_fmt_next(made, made + 3000, retry, 0);
    assert_true(next == made + retry);
    assert_true(ngx_http_voice_outbox_fmt_next(made, made + retry, retry, 0)
                == 0);
    assert_true(ngx_http_voice_outbox_fmt_next(made, made + retry + 1,
                                               retry, 0) == 0);

    /* a clock that went back counts as age 0 */
    next = ngx_http_voice_outbox_fmt_next(made, made - 5000, 86400000, 0);
    assert_true(next == made - 5000 + 750);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_not_a_name),
        cmocka_unit_test(test_entry),
        cmocka_unit_test(test_backoff),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
