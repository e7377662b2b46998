/*
 * test_bd_stats.c: unit tests of bridged/bd_stats.c: the Prometheus lines
 * bridged gives nginx's voice_metrics -- the counts, a label value
 * escaped, the label sets bounded (the 17th value is "other"), the
 * histogram cumulative with its sum and count, and the text within
 * BD_STATS_MAX whatever comes in.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "bd_stats.h"


static char  buf[BD_STATS_MAX];


static const char *
render(unsigned calls)
{
    size_t  len;

    len = bd_stats_render(buf, sizeof(buf), calls);
    assert_true(len > 0 && len < sizeof(buf));
    assert_int_equal(buf[len], '\0');
    assert_int_equal(buf[len - 1], '\n');

    return buf;
}


static int
has(const char *text, const char *line)
{
    char  want[512];

    snprintf(want, sizeof(want), "\n%s\n", line);

    /* the first line has no newline before it */
    return strstr(text, want) != NULL
           || strncmp(text, want + 1, strlen(want + 1)) == 0;
}


static int
setup(void **state)
{
    (void) state;
    bd_stats_reset();
    return 0;
}


static void
test_empty(void **state)
{
    const char  *t;

    (void) state;

    t = render(0);
    assert_true(has(t, "voice_bridged_calls 0"));
    assert_true(has(t, "voice_openai_sessions_total 0"));
    assert_true(has(t, "voice_twilio_request_seconds_bucket{le=\"+Inf\"} 0"));
    assert_true(has(t, "voice_twilio_request_seconds_count 0"));
    assert_null(strstr(t, "voice_tool_calls_total"));
    assert_null(strstr(t, "#"));
}


static void
test_counts(void **state)
{
    const char  *t;

    (void) state;

    bd_stats_openai_session(0);
    bd_stats_openai_session(1);
    bd_stats_openai_session(0);
    bd_stats_openai_error("rate_limit_exceeded");
    bd_stats_openai_error("rate_limit_exceeded");
    bd_stats_openai_error(NULL);
    bd_stats_tool("lookup_order", 0);
    bd_stats_tool("lookup_order", 1);
    bd_stats_tool("end_call", 0);
    bd_stats_refused();

    t = render(3);
    assert_true(has(t, "voice_bridged_calls 3"));
    assert_true(has(t, "voice_bridged_calls_refused_total 1"));
    assert_true(has(t, "voice_openai_sessions_total 3"));
    assert_true(has(t, "voice_openai_reconnects_total 1"));
    assert_true(has(t,
        "voice_openai_errors_total{code=\"rate_limit_exceeded\"} 2"));
    assert_true(has(t, "voice_openai_errors_total{code=\"none\"} 1"));
    assert_true(has(t,
        "voice_tool_calls_total{name=\"lookup_order\",outcome=\"ok\"} 1"));
    assert_true(has(t,
        "voice_tool_calls_total{name=\"lookup_order\",outcome=\"error\"} 1"));
    assert_true(has(t,
        "voice_tool_calls_total{name=\"end_call\",outcome=\"ok\"} 1"));
    assert_true(has(t,
        "voice_tool_calls_total{name=\"end_call\",outcome=\"error\"} 0"));
}


static void
test_histogram(void **state)
{
    const char  *t;

    (void) state;

    bd_stats_twilio(200, 40000);        /* 0.04 s */
    bd_stats_twilio(201, 300000);       /* 0.3 s */
    bd_stats_twilio(0, 60000000);       /* no answer, 60 s */

    t = render(0);
    assert_true(has(t, "voice_twilio_requests_total{status=\"200\"} 1"));
    assert_true(has(t, "voice_twilio_requests_total{status=\"201\"} 1"));
    assert_true(has(t, "voice_twilio_requests_total{status=\"error\"} 1"));
    assert_true(has(t,
        "voice_twilio_request_seconds_bucket{le=\"0.05\"} 1"));
    assert_true(has(t, "voice_twilio_request_seconds_bucket{le=\"0.25\"} 1"));
    assert_true(has(t, "voice_twilio_request_seconds_bucket{le=\"0.5\"} 2"));
    assert_true(has(t, "voice_twilio_request_seconds_bucket{le=\"30\"} 2"));
    assert_true(has(t,
        "voice_twilio_request_seconds_bucket{le=\"+Inf\"} 3"));
    assert_true(has(t, "voice_twilio_request_seconds_sum 60.340000"));
    assert_true(has(t, "voice_twilio_request_seconds_count 3"));
}


static void
test_escaped(void **state)
{
    const char  *t;

    (void) state;

    bd_stats_openai_error("a\"b\\c\nd");

    t = render(0);
    assert_true(has(t,
        "voice_openai_errors_total{code=\"a\\\"b\\\\c\\nd\"} 1"));
}


static void
test_bounded(void **state)
{
    char          name[BD_STATS_KEY * 4];
    unsigned      i;
    const char   *t;

    (void) state;

    /* more names than kept, each as long as it gets, all to escape */
    for (i = 0; i < 3 * BD_STATS_KEYS; i++) {
        memset(name, '"', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        snprintf(name, 8, "t%03u", i);
        name[4] = '"';
        bd_stats_tool(name, i & 1);
        bd_stats_openai_error(name);
        bd_stats_twilio(100 + i, 1000);
    }

    t = render(0);

    assert_non_null(strstr(t, "name=\"t000\\\""));
    assert_non_null(strstr(t, "name=\"t015\\\""));
    assert_null(strstr(t, "name=\"t016"));
    assert_true(has(t,
        "voice_tool_calls_total{name=\"other\",outcome=\"ok\"} 16"));
    assert_true(has(t,
        "voice_tool_calls_total{name=\"other\",outcome=\"error\"} 16"));
    assert_true(has(t, "voice_twilio_requests_total{status=\"other\"} 32"));
}


static void
test_utf8_cut(void **state)
{
    char         name[BD_STATS_KEY + 8];
    const char  *t, *p;

    (void) state;

    /* a two-byte character across the cut is left out whole */
    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    name[BD_STATS_KEY - 2] = (char) 0xc3;
    name[BD_STATS_KEY - 1] = (char) 0xa9;

    bd_stats_tool(name, 0);
    t = render(0);

    p = strstr(t, "name=\"x");
    assert_non_null(p);
    assert_int_equal(strcspn(p + 6, "\""), BD_STATS_KEY - 2);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_empty, setup),
        cmocka_unit_test_setup(test_counts, setup),
        cmocka_unit_test_setup(test_histogram, setup),
        cmocka_unit_test_setup(test_escaped, setup),
        cmocka_unit_test_setup(test_bounded, setup),
        cmocka_unit_test_setup(test_utf8_cut, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
