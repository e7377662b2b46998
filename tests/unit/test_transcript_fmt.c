/*
 * test_transcript_fmt.c: unit tests of ngx_http_voice_transcript_fmt.c:
 * UTC timestamps (ISO 8601 and the file-name form) checked against known
 * dates, the text rendering of stored transcripts, valid and not, the
 * merge of two records, and the record a journal becomes after a crash
 * (torn lines, order, header, bounds) and the names journals have; the
 * walk over a directory's records, in a temporary directory (records,
 * names that are not, dot files, two records of one call, a path too
 * long).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
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


/* the walk over a directory's records */

#define SID_B  "CAfedcba9876543210fedcba9876543210"
#define SID_C  "CA00000000000000000000000000000000"
#define A1     SID "_+14155550123_2026-11-24T10-15-00-123Z.json"
#define A2     SID "_+14155550123_2026-11-24T11-00-00-000Z.json"
#define B1     SID_B "_unknown_2026-11-23T09-00-00-000Z.json"

/* what is not a record: dot files (a journal, a record being written),
 * other suffixes, a bad time, no phone, a phone of 33 (the name is too
 * long), another kind of SID */
static const char  *not_records[] = {
    "." SID "_+14155550123_2026-11-24T12-00-00-000Z.journal",
    "." SID "_+14155550123_2026-11-24T12-00-00-000Z.json.tmp",
    ".json",
    "notes.txt",
    SID "_+14155550123_2026-11-24T10-15-00-123Z.json.tmp",
    SID "_+14155550123_2026-11-24T10-15-00-123Z",
    SID "_+14155550123_2026-11-24T10:15:00.123Z.json",
    SID "__2026-11-24T10-15-00-123Z.json",
    SID "_123456789012345678901234567890123_2026-11-24T10-15-00-123Z.json",
    "CB0123456789abcdef0123456789abcdef_+1_2026-11-24T10-15-00-123Z.json",
};


static void
touch_at(int dfd, const char *name)
{
    int  fd;

    fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{}", 2), 2);
    assert_int_equal(close(fd), 0);
}


static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/* the names a walk returns, sorted (readdir's order is the file
 * system's), each checked against what the iterator says of it */
static size_t
walk(const char *dir, const char *sid, char **names, size_t max, int *live)
{
    size_t                                n;
    ngx_http_voice_transcript_fmt_dir_t   d;
    char                                  path[4096], iso[32];

    assert_int_equal(ngx_http_voice_transcript_fmt_dir_open(&d, dir,
                         (const uint8_t *) sid), 0);

    n = 0;

    while (ngx_http_voice_transcript_fmt_dir_next(&d)) {
        assert_true(n < max);
        assert_int_equal(d.len, strlen(d.name));
        assert_true(d.name[0] != '.');

        if (sid != NULL) {
            assert_memory_equal(d.name, sid, 34);
        }

        /* the phone and the time are the name's, the time in ISO 8601 */
        assert_int_equal(d.phone, 35);
        assert_int_equal(d.name[d.phone + d.phone_len], '_');
        memcpy(iso, d.iso, NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN);
        iso[NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN] = '\0';
        assert_int_equal(iso[13], ':');
        assert_int_equal(iso[19], '.');
        assert_memory_equal(iso, d.name + d.phone + d.phone_len + 1, 13);

        assert_non_null(d.path);
        snprintf(path, sizeof(path), "%s%s", dir, d.name);
        assert_string_equal(d.path, path);

        names[n++] = strdup(d.name);
    }

    /* the end is the end */
    assert_false(ngx_http_voice_transcript_fmt_dir_next(&d));
    *live = d.live;
    ngx_http_voice_transcript_fmt_dir_close(&d);
    ngx_http_voice_transcript_fmt_dir_close(&d);
    assert_false(ngx_http_voice_transcript_fmt_dir_next(&d));

    qsort(names, n, sizeof(char *), cmp_str);

    return n;
}


static void
free_names(char **names, size_t n)
{
    while (n) {
        free(names[--n]);
    }
}


static void
test_dir(void **state)
{
    int      dfd, live;
    char    *names[16], dir[64], *last;
    size_t   i, n;

    (void) state;

    strcpy(dir, "/tmp/test_transcript_fmt.XXXXXX");
    assert_non_null(mkdtemp(dir));
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    strcat(dir, "/");

    touch_at(dfd, A1);
    touch_at(dfd, A2);
    touch_at(dfd, B1);
    for (i = 0; i < sizeof(not_records) / sizeof(not_records[0]); i++) {
        touch_at(dfd, not_records[i]);
    }
    assert_int_equal(mkdirat(dfd, "sub", 0700), 0);

    /* every record, and nothing else; no sid: live is not looked for */
    n = walk(dir, NULL, names, 16, &live);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], A1);
    assert_string_equal(names[1], A2);
    assert_string_equal(names[2], B1);
    assert_false(live);
    free_names(names, n);

    /* one call's: both of its records, and its journal seen */
    n = walk(dir, SID, names, 16, &live);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], A1);
    assert_string_equal(names[1], A2);
    assert_true(live);

    /* the latest name is the later time, as the lookup picks it */
    last = strcmp(names[0], names[1]) > 0 ? names[0] : names[1];
    assert_string_equal(last, A2);
    free_names(names, n);

    n = walk(dir, SID_B, names, 16, &live);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], B1);
    assert_false(live);
    free_names(names, n);

    n = walk(dir, SID_C, names, 16, &live);
    assert_int_equal(n, 0);
    assert_false(live);

    assert_int_equal(unlinkat(dfd, A1, 0), 0);
    assert_int_equal(unlinkat(dfd, A2, 0), 0);
    assert_int_equal(unlinkat(dfd, B1, 0), 0);
    for (i = 0; i < sizeof(not_records) / sizeof(not_records[0]); i++) {
        assert_int_equal(unlinkat(dfd, not_records[i], 0), 0);
    }
    assert_int_equal(unlinkat(dfd, "sub", AT_REMOVEDIR), 0);
    assert_int_equal(close(dfd), 0);
    assert_int_equal(rmdir(dir), 0);

    /* no directory: opendir()'s errno */
    errno = 0;
    assert_int_equal(ngx_http_voice_transcript_fmt_dir_open(
                         &(ngx_http_voice_transcript_fmt_dir_t) { 0 }, dir,
                         NULL), -1);
    assert_int_equal(errno, ENOENT);
}


/*
 * A directory so deep that a record with a phone of 1 still has a path
 * and one with a phone of 32 has none: the walk still returns it, with
 * its name, but no path; _path() draws the same line.
 */
static void
test_dir_long_path(void **state)
{
    int                                   fd[32], depth;
    char                                  top[64], comp[201], *dir, *p;
    size_t                                dlen, i, clen[32];
    const char                           *longest, *shortest;
    ngx_http_voice_transcript_fmt_dir_t   d;
    int                                   seen_short, seen_long;

    (void) state;

    strcpy(top, "/tmp/test_transcript_fmt.XXXXXX");
    assert_non_null(mkdtemp(top));

    shortest = SID "_1_2026-11-24T10-15-00-123Z.json";
    longest = SID "_12345678901234567890123456789012_2026-11-24T10-15-00-123Z"
              ".json";
    assert_int_equal(strlen(longest), NGX_HTTP_VOICE_TRANSCRIPT_FILE_MAX);

    /* the directory, with its '/', of 4010 bytes: the shortest record's
     * path fits (4010 + 66 + 1), the longest's does not (4010 + 97 + 1) */
    dir = malloc(NGX_HTTP_VOICE_TRANSCRIPT_PATH_MAX);
    assert_non_null(dir);
    p = dir + sprintf(dir, "%s/", top);
    fd[0] = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd[0] >= 0);
    depth = 0;

    while ((dlen = (size_t) (p - dir)) < 4010) {
        i = 4010 - dlen - 1;
        i = i > 200 ? 200 : i;
        memset(comp, 'd', i);
        comp[i] = '\0';

        clen[depth] = i;
        assert_int_equal(mkdirat(fd[depth], comp, 0700), 0);
        fd[depth + 1] = openat(fd[depth], comp,
                               O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(fd[depth + 1] >= 0);
        depth++;
        p += sprintf(p, "%s/", comp);
    }

    assert_int_equal(strlen(dir), 4010);
    touch_at(fd[depth], shortest);
    touch_at(fd[depth], longest);

    assert_int_equal(ngx_http_voice_transcript_fmt_dir_open(&d, dir, NULL),
                     0);
    seen_short = 0;
    seen_long = 0;

    while (ngx_http_voice_transcript_fmt_dir_next(&d)) {
        if (strcmp(d.name, shortest) == 0) {
            assert_non_null(d.path);
            assert_int_equal(strlen(d.path), 4010 + strlen(shortest));
            seen_short++;

        } else {
            assert_string_equal(d.name, longest);
            assert_null(d.path);
            seen_long++;
        }
    }

    ngx_http_voice_transcript_fmt_dir_close(&d);
    assert_int_equal(seen_short, 1);
    assert_int_equal(seen_long, 1);

    /* _path(): the directory and a name, up to the last byte */
    assert_non_null(ngx_http_voice_transcript_fmt_dir_path(&d, longest,
                        NGX_HTTP_VOICE_TRANSCRIPT_PATH_MAX - 4010 - 1));
    assert_null(ngx_http_voice_transcript_fmt_dir_path(&d, longest,
                    NGX_HTTP_VOICE_TRANSCRIPT_PATH_MAX - 4010));
    p = (char *) ngx_http_voice_transcript_fmt_dir_path(&d, shortest,
                                                        strlen(shortest));
    assert_non_null(p);
    assert_memory_equal(p, dir, 4010);
    assert_string_equal(p + 4010, shortest);

    assert_int_equal(unlinkat(fd[depth], shortest, 0), 0);
    assert_int_equal(unlinkat(fd[depth], longest, 0), 0);

    while (depth > 0) {
        assert_int_equal(close(fd[depth]), 0);
        depth--;
        memset(comp, 'd', clen[depth]);
        comp[clen[depth]] = '\0';
        assert_int_equal(unlinkat(fd[depth], comp, AT_REMOVEDIR), 0);
    }

    assert_int_equal(close(fd[0]), 0);
    assert_int_equal(rmdir(top), 0);
    free(dir);
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
        cmocka_unit_test(test_dir),
        cmocka_unit_test(test_dir_long_path),
    };

    return cmocka_run_group_tests_name("transcript_fmt", tests, NULL, NULL);
}
