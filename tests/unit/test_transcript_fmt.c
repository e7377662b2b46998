/*
 * test_transcript_fmt.c: unit tests of ngx_http_voice_transcript_fmt.c:
 * UTC timestamps (ISO 8601 and the file-name form) checked against known
 * dates, the text rendering of stored transcripts, valid and not, the
 * merge of two records, and the record a journal becomes after a crash
 * (torn lines, order, header, bounds) and the names journals have.
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
    voice_json_tok_t           toks[256];

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


#define SID    "CA0123456789abcdef0123456789abcdef"
#define T1     "2026-11-24T10:15:00.123Z"
#define T2     "2026-11-24T10:15:01.000Z"
#define T3     "2026-11-24T10:15:02.500Z"
#define REASON "the server stopped during the call"

#define HEADER(cont, ctx)                                                     \
    "{\"callSid\":\"" SID "\",\"phoneNumber\":\"+14155550123\","             \
    "\"timestamp\":\"" T1 "\",\"continued\":" cont ctx "}\n"

#define USER(o, text, t)                                                      \
    "{\"order\":" #o ",\"role\":\"user\",\"text\":\"" text "\","            \
    "\"timestamp\":\"" t "\"}\n"

#define ASSISTANT(o, text, t)                                                 \
    "{\"order\":" #o ",\"role\":\"assistant\",\"text\":\"" text "\","       \
    "\"timestamp\":\"" t "\"}\n"

#define RECORD_HEAD                                                           \
    "{\n  \"callSid\": \"" SID "\",\n"                                      \
    "  \"phoneNumber\": \"+14155550123\",\n"                                \
    "  \"timestamp\": \"" T1 "\",\n"                                        \
    "  \"endedBy\": \"server\",\n"                                          \
    "  \"endReason\": \"" REASON "\",\n"                                    \
    "  \"incomplete\": true,\n"

#define ENTRY(role, member, t)                                                \
    "\n    {\n      \"role\": \"" role "\",\n      " member ",\n"          \
    "      \"timestamp\": \"" t "\"\n    }"


static size_t
recover(const char *journal, ngx_http_voice_transcript_fmt_journal_t *j,
    size_t nslots, uint8_t *out, size_t cap)
{
    size_t                                 n;
    voice_json_tok_t                      *toks;
    ngx_http_voice_transcript_fmt_slot_t   slots[16];

    toks = test_malloc(NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS
                       * sizeof(voice_json_tok_t));

    memset(j, 0, sizeof(*j));
    j->call_sid = SID;
    j->phone = "+14155550123";
    j->time = (const uint8_t *) T1;
    j->reason = REASON;

    n = ngx_http_voice_transcript_fmt_recover((const uint8_t *) journal,
                                              strlen(journal), j, slots,
                                              nslots < 16 ? nslots : 16,
                                              toks,
                                          NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS,
                                              out, cap);
    test_free(toks);

    if (n != (size_t) -1) {
        out[n] = '\0';
    }

    return n;
}


static void
test_recover(void **state)
{
    size_t                                   n;
    uint8_t                                  out[4096], text[1024];
    voice_json_tok_t                         toks[512];
    ngx_http_voice_transcript_fmt_journal_t  j;

    (void) state;

    /* a header, two entries, and the last line torn by a crash */
    n = recover(HEADER("false", ",\"context\":{\"order\":\"42\"}")
                USER(1, "Hello \\\"there\\\"", T2)
                ASSISTANT(2, "Hi.\\nYes?", T3)
                "{\"order\":3,\"role\":\"user\",\"text\":\"I wou",
                &j, 16, out, sizeof(out));

    assert_int_not_equal(n, (size_t) -1);
    assert_int_equal(j.entries, 2);
    assert_int_equal(j.dropped, 1);
    assert_true(j.header);
    assert_false(j.continued);
    assert_string_equal((char *) out,
                        RECORD_HEAD
                        "  \"context\": {\"order\":\"42\"},\n"
                        "  \"transcript\": ["
                        ENTRY("user", "\"text\": \"Hello \\\"there\\\"\"", T2)
                        ","
                        ENTRY("assistant", "\"text\": \"Hi.\\nYes?\"", T3)
                        "\n  ]\n}\n");

    /* a record like any other: rendered as text */
    n = ngx_http_voice_transcript_fmt_text(out, n, toks, 512, text,
                                           sizeof(text));
    assert_int_not_equal(n, (size_t) -1);
    text[n] = '\0';
    assert_string_equal((char *) text,
                        "User: Hello \"there\"\nAssistant: Hi. Yes?\n");
}


/* a reply the caller cut off keeps what was heard and all it said, and
 * its latency; as text, what was heard (nothing: no line) */

static void
test_recover_interrupted(void **state)
{
    size_t                                   n;
    uint8_t                                  out[4096], text[1024];
    voice_json_tok_t                         toks[512];
    ngx_http_voice_transcript_fmt_journal_t  j;

    (void) state;

    n = recover(USER(1, "Hi", T1)
                "{\"order\":2,\"role\":\"assistant\",\"text\": \"Hello,"
                "\",\"interrupted\": true,\"generated\": \"Hello, how "
                "are you?\",\"latencyMs\": 640,\"timestamp\":\"" T2 "\"}\n"
                "{\"order\":3,\"role\":\"assistant\",\"text\": \"\","
                "\"interrupted\": true,\"generated\": \"Sorry\","
                "\"timestamp\":\"" T3 "\"}\n",
                &j, 16, out, sizeof(out));

    assert_int_not_equal(n, (size_t) -1);
    assert_int_equal(j.entries, 3);
    assert_string_equal((char *) out,
                        RECORD_HEAD
                        "  \"transcript\": ["
                        ENTRY("user", "\"text\": \"Hi\"", T1)
                        ","
                        ENTRY("assistant", "\"text\": \"Hello,\",\n"
                              "      \"interrupted\": true,\n"
                              "      \"generated\": \"Hello, how are you?\",\n"
                              "      \"latencyMs\": 640", T2)
                        ","
                        ENTRY("assistant", "\"text\": \"\",\n"
                              "      \"interrupted\": true,\n"
                              "      \"generated\": \"Sorry\"", T3)
                        "\n  ]\n}\n");

    n = ngx_http_voice_transcript_fmt_text(out, n, toks, 512, text,
                                           sizeof(text));
    assert_int_not_equal(n, (size_t) -1);
    text[n] = '\0';
    assert_string_equal((char *) text, "User: Hi\nAssistant: Hello,\n");
}


static void
test_recover_order_and_bad_lines(void **state)
{
    size_t                                   n;
    uint8_t                                  out[4096];
    ngx_http_voice_transcript_fmt_journal_t  j;

    (void) state;

    /* no header (an older journal); conversation order, ties in journal
     * order; a torn line in the middle, ended by a newline of its own;
     * lines that are not entries; a last line complete but for its
     * newline */
    n = recover(ASSISTANT(7, "second", T2)
                "{\"order\":5,\"role\":\"use\n"
                "\n"
                USER(5, "first", T1)
                "{\"order\":6,\"role\":\"system\",\"text\":\"x\","
                "\"timestamp\":\"" T1 "\"}\n"
                "{\"role\":\"user\",\"text\":\"x\",\"timestamp\":\"" T1 "\"}\n"
                "{\"order\":6,\"role\":\"user\",\"text\":\"x\","
                "\"timestamp\":\"10:15\"}\n"
                "{\"order\":-1,\"role\":\"user\",\"text\":\"x\","
                "\"timestamp\":\"" T1 "\"}\n"
                "{\"order\":6,\"role\":\"user\",\"text\":5,"
                "\"timestamp\":\"" T1 "\"}\n"
                "[1,2]\n"
                "   \n"
                "{\"order\":7,\"role\":\"dtmf\",\"digit\":\"5\","
                "\"timestamp\":\"" T3 "\"}",
                &j, 16, out, sizeof(out));

    assert_int_not_equal(n, (size_t) -1);
    assert_false(j.header);
    assert_int_equal(j.entries, 3);
    assert_int_equal(j.dropped, 7);
    assert_string_equal((char *) out,
                        RECORD_HEAD
                        "  \"transcript\": ["
                        ENTRY("user", "\"text\": \"first\"", T1) ","
                        ENTRY("assistant", "\"text\": \"second\"", T2) ","
                        ENTRY("dtmf", "\"digit\": \"5\"", T3)
                        "\n  ]\n}\n");

    /* a second header is no header */
    n = recover(HEADER("true", "") HEADER("false", ",\"context\":{}"),
                &j, 16, out, sizeof(out));
    assert_int_not_equal(n, (size_t) -1);
    assert_true(j.header);
    assert_true(j.continued);
    assert_int_equal(j.entries, 0);
    assert_int_equal(j.dropped, 1);
    assert_string_equal((char *) out,
                        RECORD_HEAD "  \"transcript\": []\n}\n");

    /* nothing at all */
    n = recover("", &j, 16, out, sizeof(out));
    assert_int_not_equal(n, (size_t) -1);
    assert_false(j.header);
    assert_string_equal((char *) out,
                        RECORD_HEAD "  \"transcript\": []\n}\n");
}


static void
test_recover_tools_merge_and_bounds(void **state)
{
    size_t                                   n, m;
    uint8_t                                  out[4096], merged[8192];
    const char                              *journal;
    ngx_http_voice_transcript_fmt_journal_t  j;

    (void) state;

    journal = HEADER("true", "")
              USER(1, "Where is order 42?", T1)
              "{\"order\":2,\"role\":\"tool\",\"name\":\"lookup\","
              "\"arguments\":{\"n\":\"42\",\"deep\":{\"a\":[1,2]}},"
              "\"output\":\"{\\\"status\\\":\\\"shipped\\\"}\","
              "\"timestamp\":\"" T2 "\"}\n"
              "{\"order\":3,\"role\":\"note\",\"text\":\"OpenAI session 2 "
              "took over\",\"timestamp\":\"" T3 "\"}\n";

    n = recover(journal, &j, 16, out, sizeof(out));
    assert_int_not_equal(n, (size_t) -1);
    assert_true(j.continued);
    assert_int_equal(j.entries, 3);
    assert_int_equal(j.dropped, 0);
    assert_string_equal((char *) out,
                        RECORD_HEAD
                        "  \"transcript\": ["
                        ENTRY("user", "\"text\": \"Where is order 42?\"", T1)
                        ","
                        ENTRY("tool", "\"name\": \"lookup\",\n"
                              "      \"arguments\": {\"n\":\"42\","
                              "\"deep\":{\"a\":[1,2]}},\n"
                              "      \"output\": \"{\\\"status\\\":"
                              "\\\"shipped\\\"}\"", T2)
                        ","
                        ENTRY("note", "\"text\": \"OpenAI session 2 took "
                              "over\"", T3)
                        "\n  ]\n}\n");

    /* it continues an earlier record: the merge takes it */
    m = ngx_http_voice_transcript_fmt_merge(out, n, out, n, merged,
                                            sizeof(merged));
    assert_int_not_equal(m, (size_t) -1);

    /* bounded: entries past the slots are left out and counted */
    n = recover(journal, &j, 2, out, sizeof(out));
    assert_int_not_equal(n, (size_t) -1);
    assert_int_equal(j.entries, 2);
    assert_int_equal(j.dropped, 1);

    /* what does not fit is refused, never cut */
    n = recover(journal, &j, 16, out, 200);
    assert_int_equal(n, (size_t) -1);
    n = recover(journal, &j, 16, out, strlen(journal) * 2 + 2048 + 96 * 16);
    assert_int_not_equal(n, (size_t) -1);
}


static void
check_name(const char *name, const char *phone, const char *iso)
{
    int      ok;
    size_t   p, plen;
    uint8_t  out[NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN + 1];

    out[NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN] = '\0';
    ok = ngx_http_voice_transcript_fmt_name((const uint8_t *) name,
                                            strlen(name), &p, &plen, out);
    if (phone == NULL) {
        assert_false(ok);
        return;
    }

    assert_true(ok);
    assert_int_equal(plen, strlen(phone));
    assert_memory_equal(name + p, phone, plen);
    assert_string_equal((char *) out, iso);
}


static void
test_name(void **state)
{
    (void) state;

    check_name(SID "_+14155550123_2026-11-24T10-15-00-123Z",
               "+14155550123", T1);
    check_name(SID "_unknown_2026-11-24T10-15-00-123Z", "unknown", T1);
    check_name(SID "_-_2026-11-24T10-15-00-123Z", "-", T1);
    check_name("CA0123456789ABCDEF0123456789abcdef_1_2026-11-24T10-15-00-123Z",
               "1", T1);

    check_name(SID "__2026-11-24T10-15-00-123Z", NULL, NULL);
    check_name(SID "_a_b_2026-11-24T10-15-00-123Z", NULL, NULL);
    check_name(SID "_+1415_2026-11-24T10:15:00.123Z", NULL, NULL);
    check_name(SID "_+1415_2026-11-24T10-15-00-123", NULL, NULL);
    check_name("CB0123456789abcdef0123456789abcdef_+1_"
               "2026-11-24T10-15-00-123Z", NULL, NULL);
    check_name("CA0123456789abcdef0123456789abcdeg_+1_"
               "2026-11-24T10-15-00-123Z", NULL, NULL);
    check_name(SID "_123456789012345678901234567890123_"
               "2026-11-24T10-15-00-123Z", NULL, NULL);
    check_name(SID "_+1 5_2026-11-24T10-15-00-123Z", NULL, NULL);
    check_name("", NULL, NULL);
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
        cmocka_unit_test(test_recover),
        cmocka_unit_test(test_recover_interrupted),
        cmocka_unit_test(test_recover_order_and_bad_lines),
        cmocka_unit_test(test_recover_tools_merge_and_bounds),
        cmocka_unit_test(test_name),
    };

    return cmocka_run_group_tests_name("transcript_fmt", tests, NULL, NULL);
}
