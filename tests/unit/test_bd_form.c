/*
 * test_bd_form.c: unit tests of bridged/bd_form.c, the percent-encoder
 * behind Twilio's form bodies and URLs and the OpenAI "?model=" query.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "bd_form.h"


static void
test_plus_is_encoded(void **state)
{
    char       buf[256];
    bd_form_t  f;

    (void) state;

    /* a raw "+" would reach Twilio as a space: error 21211 */

    bd_form_init(&f, buf, sizeof(buf));
    bd_form_param(&f, "To", "+14155550123", 12);
    bd_form_param(&f, "From", "+15005550006", 12);

    assert_true(bd_form_done(&f));
    assert_string_equal(buf, "To=%2B14155550123&From=%2B15005550006");
}


static void
test_call_create_body(void **state)
{
    char         buf[512];
    bd_form_t    f;
    const char  *url = "https://voice.example.com/twiml?a=1&b=2";

    (void) state;

    bd_form_init(&f, buf, sizeof(buf));
    bd_form_param(&f, "To", "+14155550123", 12);
    bd_form_param(&f, "From", "+15005550006", 12);
    bd_form_param(&f, "Url", url, strlen(url));
    bd_form_param(&f, "Method", "POST", 4);

    assert_true(bd_form_done(&f));
    assert_string_equal(buf, "To=%2B14155550123&From=%2B15005550006"
                        "&Url=https%3A%2F%2Fvoice.example.com%2Ftwiml"
                        "%3Fa%3D1%26b%3D2&Method=POST");
}


static void
test_escape_set(void **state)
{
    char         buf[128];
    bd_form_t    f;
    const char  *s = "aZ09-._~ /+=&?%\xc3\xa9\"";

    (void) state;

    bd_form_init(&f, buf, sizeof(buf));
    bd_form_escape(&f, s, strlen(s));

    assert_true(bd_form_done(&f));
    assert_string_equal(buf,
        "aZ09-._~%20%2F%2B%3D%26%3F%25%C3%A9%22");
}


static void
test_url_building(void **state)
{
    char       buf[128];
    bd_form_t  f;

    (void) state;

    bd_form_init(&f, buf, sizeof(buf));
    bd_form_raw(&f, "/v1/realtime", 12);
    bd_form_raw(&f, "?model=", 7);
    bd_form_escape(&f, "gpt-realtime-2025-08-28", 23);

    assert_true(bd_form_done(&f));
    assert_string_equal(buf, "/v1/realtime?model=gpt-realtime-2025-08-28");
}


static void
test_overflow_fails_and_stays_failed(void **state)
{
    char       buf[8];
    bd_form_t  f;

    (void) state;

    /* 7 characters and the NUL fit exactly */

    bd_form_init(&f, buf, sizeof(buf));
    bd_form_raw(&f, "1234567", 7);
    assert_true(bd_form_done(&f));
    assert_string_equal(buf, "1234567");

    bd_form_init(&f, buf, sizeof(buf));
    bd_form_raw(&f, "12345678", 8);
    assert_false(bd_form_done(&f));

    /* an escape that grows past the end fails as a whole */

    bd_form_init(&f, buf, sizeof(buf));
    bd_form_raw(&f, "abcd", 4);
    bd_form_escape(&f, "+", 1);
    assert_true(bd_form_done(&f));
    assert_string_equal(buf, "abcd%2B");

    bd_form_init(&f, buf, sizeof(buf));
    bd_form_raw(&f, "abcde", 5);
    bd_form_escape(&f, "+", 1);
    assert_false(bd_form_done(&f));
    assert_string_equal(buf, "abcde");

    bd_form_raw(&f, "x", 1);
    assert_false(bd_form_done(&f));

    bd_form_init(&f, buf, 0);
    assert_false(bd_form_done(&f));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_plus_is_encoded),
        cmocka_unit_test(test_call_create_body),
        cmocka_unit_test(test_escape_set),
        cmocka_unit_test(test_url_building),
        cmocka_unit_test(test_overflow_fails_and_stays_failed),
    };

    return cmocka_run_group_tests_name("bd_form", tests, NULL, NULL);
}
