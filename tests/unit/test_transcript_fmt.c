/*
 * test_transcript_fmt.c: unit tests of ngx_http_voice_transcript_fmt.c:
 * UTC timestamps (ISO 8601 and the file-name form) checked against known
 * dates, and the text rendering of stored transcripts, valid and not.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ngx_http_voice_transcript_fmt.h"


static void
check_time(uint64_t ms, const char *iso, const char *file)
{
    uint8_t  out[NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN + 1];

    out[NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN] = '\0';

    ngx_http_voice_transcript_fmt_time(ms, out, 0);
    assert_string_equal((char *) out, iso);

    ngx_http_voice_transcript_fmt_time(ms, out, 1);
    assert_string_equal((char *) out, file);
}


static void
test_time(void **state)
{
    (void) state;

    check_time(0, "1970-01-01T00:00:00.000Z", "1970-01-01T00-00-00-000Z");

    /* `date -u -d @1795515300` = Tue Nov 24 10:15:00 UTC 2026 */
    check_time(1795515300123ULL, "2026-11-24T10:15:00.123Z",
               "2026-11-24T10-15-00-123Z");

    /* leap days, the ends of months and years */
    check_time(951782400000ULL, "2000-02-29T00:00:00.000Z",
               "2000-02-29T00-00-00-000Z");
    check_time(1709251199999ULL, "2024-02-29T23:59:59.999Z",
               "2024-02-29T23-59-59-999Z");
    check_time(1767225599999ULL, "2025-12-31T23:59:59.999Z",
               "2025-12-31T23-59-59-999Z");
    check_time(4102444800000ULL, "2100-01-01T00:00:00.000Z",
               "2100-01-01T00-00-00-000Z");
}


static size_t
render(const char *json, uint8_t *out, size_t cap)
{
    size_t                     len;
    ngx_http_voice_json_tok_t  toks[256];

    len = strlen(json);

    return ngx_http_voice_transcript_fmt_text((const uint8_t *) json, len,
                                              toks, len / 2 + 2 < 256
                                                    ? len / 2 + 2 : 256,
                                              out, cap);
}


static void
test_text(void **state)
{
    size_t       n;
    uint8_t      out[1024];
    const char  *doc;

    (void) state;

    doc = "{\n  \"callSid\": \"CA0123456789abcdef0123456789abcdef\",\n"
          "  \"transcript\": [\n"
          "    {\"role\": \"user\", \"text\": \"Hello\\nthere \\u00e9\","
          " \"timestamp\": \"2026-11-24T10:15:00.123Z\"},\n"
          "    {\"role\": \"assistant\", \"text\": \"Hi \\\"you\\\"\","
          " \"timestamp\": \"2026-11-24T10:15:01.000Z\"}\n"
          "  ]\n}\n";

    n = render(doc, out, sizeof(out));
    assert_int_not_equal(n, (size_t) -1);
    out[n] = '\0';
    assert_string_equal((char *) out,
                        "User: Hello there \xc3\xa9\nAssistant: Hi \"you\"\n");

    /* never longer than the JSON it comes from */
    assert_true(n <= strlen(doc));

    /* an empty transcript is an empty text */
    assert_int_equal(render("{\"transcript\": []}", out, sizeof(out)), 0);
}


static void
test_text_refuses_what_is_not_a_transcript(void **state)
{
    uint8_t  out[256];

    (void) state;

    assert_int_equal(render("[]", out, sizeof(out)), (size_t) -1);
    assert_int_equal(render("{}", out, sizeof(out)), (size_t) -1);
    assert_int_equal(render("{\"transcript\": {}}", out, sizeof(out)),
                     (size_t) -1);
    assert_int_equal(render("{\"transcript\": [1]}", out, sizeof(out)),
                     (size_t) -1);
    assert_int_equal(render("{\"transcript\": [{\"role\": \"system\", "
                            "\"text\": \"x\"}]}", out, sizeof(out)),
                     (size_t) -1);
    assert_int_equal(render("{\"transcript\": [{\"role\": \"user\"}]}",
                            out, sizeof(out)), (size_t) -1);
    assert_int_equal(render("{\"transcript\": [{\"role\": \"user\", "
                            "\"text\": 5}]}", out, sizeof(out)),
                     (size_t) -1);
    assert_int_equal(render("{\"transcript\": [", out, sizeof(out)),
                     (size_t) -1);

    /* an output buffer too small is an error, not an overflow */
    assert_int_equal(render("{\"transcript\": [{\"role\": \"user\", "
                            "\"text\": \"hello\"}]}", out, 8), (size_t) -1);
}


static void
test_text_tool_and_keypad(void **state)
{
    size_t   n;
    uint8_t  out[512];

    (void) state;

    n = render("{\"callSid\":\"CA1\",\"endedBy\":\"assistant\","
               "\"transcript\":["
               "{\"role\":\"user\",\"text\":\"Where is order 42?\"},"
               "{\"role\":\"tool\",\"name\":\"lookup_order\","
               "\"arguments\":{\"n\":\"42\"},"
               "\"output\":\"{\\\"status\\\":\\\"shipped\\\"}\"},"
               "{\"role\":\"dtmf\",\"digit\":\"5\"},"
               "{\"role\":\"tool\",\"name\":\"end_call\",\"arguments\":{},"
               "\"output\":\"line1\\nline2\"}]}", out, sizeof(out));
    assert_int_not_equal(n, (size_t) -1);
    out[n] = '\0';
    assert_string_equal((char *) out,
                        "User: Where is order 42?\n"
                        "Tool: lookup_order {\"n\":\"42\"} -> "
                        "{\"status\":\"shipped\"}\n"
                        "Keypad: 5\n"
                        "Tool: end_call {} -> line1 line2\n");

    /* a tool entry must have its three members, of the right types */
    assert_int_equal(render("{\"transcript\":[{\"role\":\"tool\","
                            "\"name\":\"x\",\"arguments\":\"{}\","
                            "\"output\":\"\"}]}", out, sizeof(out)),
                     (size_t) -1);
    assert_int_equal(render("{\"transcript\":[{\"role\":\"tool\","
                            "\"name\":\"x\",\"arguments\":{}}]}", out,
                            sizeof(out)),
                     (size_t) -1);
    assert_int_equal(render("{\"transcript\":[{\"role\":\"dtmf\"}]}", out,
                            sizeof(out)),
                     (size_t) -1);

    /* and what does not fit is refused, never cut */
    assert_int_equal(render("{\"transcript\":[{\"role\":\"dtmf\","
                            "\"digit\":\"5\"}]}", out, 9),
                     (size_t) -1);
}


static void
check_merge(const char *prev, const char *next, const char *want)
{
    size_t   n;
    uint8_t  out[1024];

    n = ngx_http_voice_transcript_fmt_merge((const uint8_t *) prev,
                                            strlen(prev),
                                            (const uint8_t *) next,
                                            strlen(next), out, sizeof(out));
    if (want == NULL) {
        assert_int_equal(n, (size_t) -1);
        return;
    }

    assert_int_not_equal(n, (size_t) -1);
    out[n] = '\0';
    assert_string_equal((char *) out, want);
}


#define HEAD(by)                                                              \
    "{\n  \"callSid\": \"CA1\",\n  \"endedBy\": \"" by "\",\n"               \
    "  \"endReason\": \"\",\n  \"transcript\": ["


static void
test_merge(void **state)
{
    (void) state;

    /* both have entries: the earlier ones first, the later outcome */
    check_merge(HEAD("transfer") "\n    {\n      \"role\": \"user\"\n    },"
                "\n    {\n      \"role\": \"tool\"\n    }\n  ]\n}\n",
                HEAD("caller") "\n    {\n      \"role\": \"assistant\"\n"
                "    }\n  ]\n}\n",
                HEAD("caller") "\n    {\n      \"role\": \"user\"\n    },"
                "\n    {\n      \"role\": \"tool\"\n    },"
                "\n    {\n      \"role\": \"assistant\"\n    }\n  ]\n}\n");

    /* the second stream said nothing */
    check_merge(HEAD("transfer") "\n    {\n      \"role\": \"user\"\n    }"
                "\n  ]\n}\n",
                HEAD("caller") "]\n}\n",
                HEAD("caller") "\n    {\n      \"role\": \"user\"\n    }"
                "\n  ]\n}\n");

    /* the first said nothing */
    check_merge(HEAD("transfer") "]\n}\n",
                HEAD("caller") "\n    {\n      \"role\": \"user\"\n    }"
                "\n  ]\n}\n",
                HEAD("caller") "\n    {\n      \"role\": \"user\"\n    }"
                "\n  ]\n}\n");

    /* a tool's arguments that look like the key do not fool it */
    check_merge(HEAD("transfer") "\n    {\n      \"arguments\": "
                "{\"transcript\":[1]}\n    }\n  ]\n}\n",
                HEAD("caller") "]\n}\n",
                HEAD("caller") "\n    {\n      \"arguments\": "
                "{\"transcript\":[1]}\n    }\n  ]\n}\n");

    /* not ours */
    check_merge("{\"transcript\": []}", HEAD("caller") "]\n}\n", NULL);
    check_merge(HEAD("caller") "]\n}\n", "[]", NULL);
    check_merge(HEAD("caller"), HEAD("caller") "]\n}\n", NULL);
    check_merge(HEAD("caller") "]\n}\n", HEAD("caller"), NULL);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_text_refuses_what_is_not_a_transcript),
        cmocka_unit_test(test_text_tool_and_keypad),
        cmocka_unit_test(test_merge),
    };

    return cmocka_run_group_tests_name("transcript_fmt", tests, NULL, NULL);
}
