/*
 * test_voice_json.c: unit tests of common/voice_json.c, the strict JSON
 * tokenizer: token layout (sizes, next indexes), the RFC 8259 grammar at
 * its edges (numbers, literals, strings, escapes, UTF-8, whitespace,
 * trailing data), the limits (tokens, depth), and the lookup, comparison,
 * unescaping and integer helpers; the shapes of OpenAI's audio delta that
 * bridged reads with it (the cases of the flat scan it replaced,
 * bridged/bd_jscan.c); and the string writer.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "voice_json.h"


#define NTOKS  64


static voice_json_tok_t  toks[NTOKS];


static int
parse(const char *text)
{
    const char  *err;

    err = NULL;

    return voice_json_parse((const uint8_t *) text, strlen(text),
                            toks, NTOKS, &err);
}


static void
assert_invalid(const char *text)
{
    int          rc;
    const char  *err;

    err = NULL;
    rc = voice_json_parse((const uint8_t *) text, strlen(text), toks,
                          NTOKS, &err);
    if (rc != VOICE_JSON_EINVAL) {
        print_error("accepted: '%s'\n", text);
    }

    assert_int_equal(rc, VOICE_JSON_EINVAL);
    assert_non_null(err);
}


static void
assert_tok(int i, int type, const char *text, const char *value)
{
    size_t  n;

    n = strlen(value);

    assert_int_equal(toks[i].type, type);
    assert_int_equal(toks[i].end - toks[i].start, n);
    assert_memory_equal(text + toks[i].start, value, n);
}


static void
test_token_layout(void **state)
{
    const char  *t;

    (void) state;

    t = "{\"a\": [1, {\"b\": null}, [], \"s\"], \"c\": {}, \"d\": true}";

    assert_int_equal(parse(t), 13);

    /* 0: the object, 3 members, its subtree is everything */
    assert_int_equal(toks[0].type, VOICE_JSON_OBJECT);
    assert_int_equal(toks[0].size, 3);
    assert_int_equal(toks[0].next, 13);
    assert_int_equal(toks[0].start, 0);
    assert_int_equal(toks[0].end, strlen(t));

    assert_tok(1, VOICE_JSON_STRING, t, "a");
    assert_int_equal(toks[1].next, 2);

    /* 2: the array, 4 elements, next is key "c" */
    assert_int_equal(toks[2].type, VOICE_JSON_ARRAY);
    assert_int_equal(toks[2].size, 4);
    assert_int_equal(toks[2].next, 9);
    assert_tok(2, VOICE_JSON_ARRAY, t,
               "[1, {\"b\": null}, [], \"s\"]");

    assert_tok(3, VOICE_JSON_NUMBER, t, "1");
    assert_int_equal(toks[4].type, VOICE_JSON_OBJECT);
    assert_int_equal(toks[4].size, 1);
    assert_int_equal(toks[4].next, 7);
    assert_tok(5, VOICE_JSON_STRING, t, "b");
    assert_tok(6, VOICE_JSON_NULL, t, "null");
    assert_int_equal(toks[7].type, VOICE_JSON_ARRAY);
    assert_int_equal(toks[7].size, 0);
    assert_int_equal(toks[7].next, 8);
    assert_tok(8, VOICE_JSON_STRING, t, "s");

    assert_tok(9, VOICE_JSON_STRING, t, "c");
    assert_int_equal(toks[10].type, VOICE_JSON_OBJECT);
    assert_int_equal(toks[10].size, 0);
    assert_int_equal(toks[10].next, 11);
    assert_tok(11, VOICE_JSON_STRING, t, "d");
    assert_tok(12, VOICE_JSON_TRUE, t, "true");
    assert_int_equal(toks[12].next, 13);
}


static void
test_scalars_at_top_level(void **state)
{
    (void) state;

    assert_int_equal(parse("0"), 1);
    assert_int_equal(toks[0].type, VOICE_JSON_NUMBER);
    assert_int_equal(parse(" \t\r\n\"x\" \n"), 1);
    assert_tok(0, VOICE_JSON_STRING, " \t\r\n\"x\" \n", "x");
    assert_int_equal(parse("true"), 1);
    assert_int_equal(parse("false"), 1);
    assert_int_equal(toks[0].type, VOICE_JSON_FALSE);
    assert_int_equal(parse("null"), 1);
    assert_int_equal(parse("[]"), 1);
    assert_int_equal(parse("{}"), 1);
}


static void
test_numbers(void **state)
{
    unsigned  i;

    static const char  *good[] = {
        "0", "-0", "1", "-1", "10", "1234567890", "0.5", "-0.0", "1.25",
        "1e5", "1E5", "1e+5", "1e-5", "0e0", "-1.5E-10",
        "123456789012345678901234567890",
        "[0,-0,1.5e3]"
    };
    static const char  *bad[] = {
        "01", "-01", "00", "+1", "-", ".5", "1.", "1.e5", "1e", "1e+",
        "--1", "0x10", "1.5.5", "NaN", "Infinity", "-Infinity", "1 2",
        "[01]", "[1.]", "[-]", "1_000", "\xef\xbc\x91"
    };

    (void) state;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (parse(good[i]) < 1) {
            print_error("refused: '%s'\n", good[i]);
            fail();
        }
    }

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_invalid(bad[i]);
    }
}


static void
test_structure_errors(void **state)
{
    unsigned  i;

    static const char  *bad[] = {
        "", " ", "{", "}", "[", "]", "[1,]", "[,1]", "[1,,2]", "{,}",
        "{\"a\":1,}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{a:1}",
        "{1:1}", "{\"a\":1 \"b\":2}", "[1 2]", "[1}", "{\"a\":1]",
        "{} {}", "[] x", "{}x", "\"a\" \"b\"", "tru", "truee", "nul",
        "True", "NULL", "'a'", "[true false]", "{\"a\":1}}", "[[]",
        "\xef\xbb\xbf{}", "[\"a\"\x0c]", "[\"a\"\x0b]",
        "/* c */ {}", "{\"a\":1}//"
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_invalid(bad[i]);
    }

    /* an embedded NUL is not the end of the text */
    assert_int_equal(voice_json_parse((const uint8_t *) "{}\0", 3,
                                      toks, NTOKS, NULL),
            VOICE_JSON_EINVAL);
    assert_int_equal(voice_json_parse((const uint8_t *) "\"\0\"", 3,
                                      toks, NTOKS, NULL),
            VOICE_JSON_EINVAL);
}


static void
test_strings(void **state)
{
    unsigned  i;

    static const char  *good[] = {
        "\"\"", "\"plain\"", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\\u0041\\u00e9\\u20AC\"", "\"\\ud83d\\ude00\"", "\"\\uDBFF\\uDFFF\"",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", "\"\x7f\"",
        "\"\\u0000\""
    };
    static const char  *bad[] = {
        "\"abc", "\"\\\"", "\"\\x41\"", "\"\\a\"", "\"\\'\"", "\"\\U0041\"",
        "\"\\u004\"", "\"\\u004g\"", "\"\\ud83d\"", "\"\\ud83dx\"",
        "\"\\ud83d\\u0041\"", "\"\\ude00\"", "\"\\ude00\\ud83d\"",
        "\"\\ud83d\\ud83d\"", "\"tab\there\"", "\"nl\nhere\"", "\"\x1f\"",
        "\"\x80\"", "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
        "\"\xc3\"", "\"\xe2\x82\"", "\"\xff\"", "\"\\"
    };

    (void) state;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (parse(good[i]) != 1) {
            print_error("refused: '%s'\n", good[i]);
            fail();
        }
    }

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_invalid(bad[i]);
    }

    /* the escaped flag */
    assert_int_equal(parse("[\"a\", \"a\\n\", \"\\u0061\"]"), 4);
    assert_int_equal(toks[1].escaped, 0);
    assert_int_equal(toks[2].escaped, 1);
    assert_int_equal(toks[3].escaped, 1);
}


static void
test_limits(void **state)
{
    int                         i, rc;
    char                        deep[64];
    const char                 *err;
    voice_json_tok_t            few[3];

    (void) state;

    /* exactly MAX_DEPTH nested containers, then one more */
    for (i = 0; i < VOICE_JSON_MAX_DEPTH; i++) {
        deep[i] = '[';
        deep[2 * VOICE_JSON_MAX_DEPTH - 1 - i] = ']';
    }

    deep[2 * VOICE_JSON_MAX_DEPTH] = '\0';
    assert_int_equal(parse(deep), VOICE_JSON_MAX_DEPTH);

    for (i = 0; i <= VOICE_JSON_MAX_DEPTH; i++) {
        deep[i] = '[';
    }

    deep[VOICE_JSON_MAX_DEPTH + 1] = '\0';
    err = NULL;
    rc = voice_json_parse((const uint8_t *) deep, strlen(deep), toks,
                          NTOKS, &err);
    assert_int_equal(rc, VOICE_JSON_EDEPTH);
    assert_non_null(err);

    rc = parse("{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":"
               "{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":"
               "{\"a\":1}}}}}}}"
               "}}}}}}}}}}");
    assert_int_equal(rc, VOICE_JSON_EDEPTH);

    /* token count: exactly enough, then one short */
    rc = voice_json_parse((const uint8_t *) "[1,2]", 5, few, 3, NULL);
    assert_int_equal(rc, 3);
    rc = voice_json_parse((const uint8_t *) "[1,2,3]", 7, few, 3,
                          &err);
    assert_int_equal(rc, VOICE_JSON_ENOMEM);
    rc = voice_json_parse((const uint8_t *) "1", 1, few, 0, NULL);
    assert_int_equal(rc, VOICE_JSON_ENOMEM);
}


static void
test_get_and_str_eq(void **state)
{
    int          obj, v;
    const char  *t;

    (void) state;

    t = "{\"event\":\"media\",\"nested\":{\"event\":\"inner\"},"
        "\"arr\":[{\"x\":1},[2,3]],\"ev\\u0065nt\":\"second\","
        "\"k\\/ey\":\"v\\/al\",\"\":\"empty\",\"last\":7}";

    assert_true(parse(t) > 0);

    v = voice_json_get((const uint8_t *) t, toks, 0, "event");
    assert_true(v > 0);
    assert_true(voice_json_str_eq((const uint8_t *) t, toks, v,
                                  "media"));
    assert_false(voice_json_str_eq((const uint8_t *) t, toks, v,
                                   "medi"));
    assert_false(voice_json_str_eq((const uint8_t *) t, toks, v,
                                   "mediaa"));

    /* siblings are walked past nested subtrees */
    v = voice_json_get((const uint8_t *) t, toks, 0, "last");
    assert_true(v > 0);
    assert_tok(v, VOICE_JSON_NUMBER, t, "7");

    obj = voice_json_get((const uint8_t *) t, toks, 0, "nested");
    v = voice_json_get((const uint8_t *) t, toks, obj, "event");
    assert_true(voice_json_str_eq((const uint8_t *) t, toks, v,
                                  "inner"));

    /* keys are compared after unescaping */
    v = voice_json_get((const uint8_t *) t, toks, 0, "k/ey");
    assert_true(v > 0);
    assert_true(voice_json_str_eq((const uint8_t *) t, toks, v,
                                  "v/al"));
    assert_false(voice_json_str_eq((const uint8_t *) t, toks, v,
                                   "v\\/al"));
    assert_false(voice_json_str_eq((const uint8_t *) t, toks, v,
                                   "v/a"));
    assert_false(voice_json_str_eq((const uint8_t *) t, toks, v,
                                   "v/all"));

    v = voice_json_get((const uint8_t *) t, toks, 0, "");
    assert_true(voice_json_str_eq((const uint8_t *) t, toks, v,
                                  "empty"));

    /* the first match wins, even over an escaped spelling */
    v = voice_json_get((const uint8_t *) t, toks, 0, "event");
    assert_true(voice_json_str_eq((const uint8_t *) t, toks, v,
                                  "media"));

    assert_int_equal(voice_json_get((const uint8_t *) t, toks, 0,
                                    "x"), -1);
    assert_int_equal(voice_json_get((const uint8_t *) t, toks, 0,
                                    "Event"), -1);

    /* not an object, not a string */
    obj = voice_json_get((const uint8_t *) t, toks, 0, "arr");
    assert_int_equal(voice_json_get((const uint8_t *) t, toks, obj,
                                    "x"), -1);
    assert_false(voice_json_str_eq((const uint8_t *) t, toks, obj,
                                   "x"));
    assert_int_equal(voice_json_get((const uint8_t *) t, toks, -1,
                                    "x"), -1);
}


static void
test_duplicate_keys_first_wins(void **state)
{
    int          v;
    const char  *t;

    (void) state;

    t = "{\"a\":\"first\",\"a\":\"second\"}";
    assert_int_equal(parse(t), 5);

    v = voice_json_get((const uint8_t *) t, toks, 0, "a");
    assert_true(voice_json_str_eq((const uint8_t *) t, toks, v,
                                  "first"));
}


static void
test_unescape(void **state)
{
    size_t       n;
    uint8_t      out[64];
    const char  *t;

    (void) state;

    t = "[\"plain\", \"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", "
        "\"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\", \"\\u0000\", \"\"]";
    assert_int_equal(parse(t), 6);

    n = voice_json_unescape((const uint8_t *) t, &toks[1], out,
                            sizeof(out));
    assert_int_equal(n, 5);
    assert_memory_equal(out, "plain", 5);

    n = voice_json_unescape((const uint8_t *) t, &toks[2], out,
                            sizeof(out));
    assert_int_equal(n, 12);
    assert_memory_equal(out, "a\"b\\c/d\b\f\n\r\t", 12);

    n = voice_json_unescape((const uint8_t *) t, &toks[3], out,
                            sizeof(out));
    assert_int_equal(n, 1 + 2 + 3 + 4);
    assert_memory_equal(out, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10);

    n = voice_json_unescape((const uint8_t *) t, &toks[4], out,
                            sizeof(out));
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 0);

    n = voice_json_unescape((const uint8_t *) t, &toks[5], out, 0);
    assert_int_equal(n, 0);

    /* too small, by one, for plain and escaped strings; never overruns */
    memset(out, 'Z', sizeof(out));
    n = voice_json_unescape((const uint8_t *) t, &toks[1], out, 4);
    assert_int_equal(n, (size_t) -1);
    assert_int_equal(out[4], 'Z');
    n = voice_json_unescape((const uint8_t *) t, &toks[3], out, 9);
    assert_int_equal(n, (size_t) -1);
    assert_int_equal(out[9], 'Z');
    n = voice_json_unescape((const uint8_t *) t, &toks[3], out, 10);
    assert_int_equal(n, 10);

    /* only strings */
    n = voice_json_unescape((const uint8_t *) t, &toks[0], out,
                            sizeof(out));
    assert_int_equal(n, (size_t) -1);
}


static void
test_uint(void **state)
{
    uint64_t     v;
    const char  *t;

    (void) state;

    t = "[0, 8000, 18446744073709551615, 18446744073709551616, -1, 1.0, 1e3,"
        " \"1\", 99999999999999999999]";
    assert_int_equal(parse(t), 10);

    assert_true(voice_json_uint((const uint8_t *) t, &toks[1], &v));
    assert_true(v == 0);
    assert_true(voice_json_uint((const uint8_t *) t, &toks[2], &v));
    assert_true(v == 8000);
    assert_true(voice_json_uint((const uint8_t *) t, &toks[3], &v));
    assert_true(v == UINT64_MAX);

    assert_false(voice_json_uint((const uint8_t *) t, &toks[4], &v));
    assert_false(voice_json_uint((const uint8_t *) t, &toks[5], &v));
    assert_false(voice_json_uint((const uint8_t *) t, &toks[6], &v));
    assert_false(voice_json_uint((const uint8_t *) t, &toks[7], &v));
    assert_false(voice_json_uint((const uint8_t *) t, &toks[8], &v));
    assert_false(voice_json_uint((const uint8_t *) t, &toks[9], &v));
}


static void
test_twilio_start_example(void **state)
{
    int          n, s, cp;
    const char  *t;

    (void) state;

    t = "{\n"
        "  \"event\": \"start\",\n"
        "  \"sequenceNumber\": \"1\",\n"
        "  \"start\": {\n"
        "    \"accountSid\": \"AC0123456789abcdef0123456789abcdef\",\n"
        "    \"streamSid\": \"MZ00112233445566778899aabbccddeeff\",\n"
        "    \"callSid\": \"CA0123456789abcdef0123456789abcdef\",\n"
        "    \"tracks\": [\"inbound\"],\n"
        "    \"customParameters\": {\n"
        "      \"callSid\": \"CA0123456789abcdef0123456789abcdef\",\n"
        "      \"direction\": \"outbound\",\n"
        "      \"phoneNumber\": \"+14155550123\"\n"
        "    },\n"
        "    \"mediaFormat\": {\"encoding\": \"audio/x-mulaw\", "
        "\"sampleRate\": 8000, \"channels\": 1}\n"
        "  },\n"
        "  \"streamSid\": \"MZ00112233445566778899aabbccddeeff\"\n"
        "}";

    n = parse(t);
    assert_int_equal(n, 1 + 2 + 2 + 2 + 6 + 3 + 2 + 6 + 2 + 6 + 2);
    assert_int_equal(toks[0].size, 4);

    s = voice_json_get((const uint8_t *) t, toks, 0, "start");
    assert_int_equal(toks[s].size, 6);

    cp = voice_json_get((const uint8_t *) t, toks, s,
                        "customParameters");
    assert_int_equal(toks[cp].size, 3);

    /* the top-level streamSid, after the whole start subtree */
    assert_true(voice_json_get((const uint8_t *) t, toks, 0,
                               "streamSid") == n - 1);
}


/*
 * The string member name of the object text as bridged reads a delta's
 * members: its token must be an unescaped string equal to want, or, when
 * want is NULL, absent or not a string.
 */

static void
expect_member(const char *text, const char *name, const char *want)
{
    int  i;

    i = voice_json_get((const uint8_t *) text, toks, 0, name);

    if (want == NULL) {
        assert_true(i < 0 || toks[i].type != VOICE_JSON_STRING);
        return;
    }

    assert_true(i > 0);
    assert_false(toks[i].escaped);
    assert_tok(i, VOICE_JSON_STRING, text, want);
}


static void
test_delta_members_in_any_order(void **state)
{
    const char  *t;

    (void) state;

    t = "{\"type\":\"response.output_audio.delta\","
        "\"event_id\":\"ev_1\",\"output_index\":0,"
        "\"item_id\":\"item_A\",\"delta\":\"AAEC\"}";
    assert_true(parse(t) > 0);
    expect_member(t, "type", "response.output_audio.delta");
    expect_member(t, "item_id", "item_A");
    expect_member(t, "delta", "AAEC");

    /* another order, white space, literals, an empty string */

    assert_true(parse("{\"a\":0,\"b\":-0.25,\"c\":12E-2,\"d\":7}") > 0);

    t = " {\n \"delta\" : \"\" , \"x\": -1.5e+3,\t"
        "\"y\": true, \"z\": null, \"w\": false,"
        " \"type\":\"t\" } \n";
    assert_true(parse(t) > 0);
    expect_member(t, "type", "t");
    expect_member(t, "item_id", NULL);
    expect_member(t, "delta", "");

    assert_true(parse("{}") > 0);
    expect_member("{}", "type", NULL);

    /* as with cJSON: the first of equal names counts, even no string */

    t = "{\"type\":\"a\",\"type\":\"b\"}";
    assert_true(parse(t) > 0);
    expect_member(t, "type", "a");

    t = "{\"type\":5,\"type\":\"b\"}";
    assert_true(parse(t) > 0);
    expect_member(t, "type", NULL);
}


static void
test_delta_escapes_and_nesting(void **state)
{
    int          i;
    const char  *t;

    (void) state;

    /* an escape elsewhere does not hide a plain member */

    t = "{\"note\":\"a \\\"quoted\\\" \\\\ word\",\"type\":\"t\"}";
    assert_true(parse(t) > 0);
    expect_member(t, "type", "t");

    /* an escape in a member or a name is flagged (bridged then asks
     * cJSON, which reads names differently) */

    t = "{\"delta\":\"AA\\/B\"}";
    assert_true(parse(t) > 0);
    i = voice_json_get((const uint8_t *) t, toks, 0, "delta");
    assert_true(i > 0 && toks[i].escaped);

    t = "{\"ty\\u0070e\":\"t\"}";
    assert_true(parse(t) > 0);
    assert_true(toks[1].escaped);
    assert_false(voice_json_names_plain(toks, 0));

    t = "{\"a\":{\"b\\n\":1},\"l\":[\"\\n\"],\"c\":\"\\n\"}";
    assert_true(parse(t) > 0);
    assert_true(voice_json_names_plain(toks, 0));
    assert_false(voice_json_names_plain(toks, 2));
    assert_false(voice_json_names_plain(toks, 5));

    /* nested values are read past, unlike the flat scan */

    t = "{\"a\":{\"b\":1},\"l\":[1,2],\"type\":\"t\"}";
    assert_true(parse(t) > 0);
    expect_member(t, "type", "t");

    t = "{\"note\":\"\\u0041\",\"type\":\"t\"}";
    assert_true(parse(t) > 0);
    expect_member(t, "type", "t");
}


static void
test_delta_refusals(void **state)
{
    size_t              i;
    static const char  *bad[] = {
        "",
        "   ",
        "\"type\" x",
        "{\"type\":\"t\"",
        "{\"type\":\"t\",}",
        "{\"type\" \"t\"}",
        "{\"type\":}",
        "{\"type\":\"t\"} x",
        "{\"type\":\"t\"}}",
        "{type:\"t\"}",
        "{\"a\":tru}",
        "{\"a\":nul}",
        "{\"a\":+}x",
        "{\"a\":+1}",
        "{\"a\":.5}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":1e}",
        "{\"a\":--1}",
        "{\"a\":-}",
        "{\"a\":1x}",
        "{\"note\":\"a \\`/y\"}",
        "{\"type\":\"unterminated}",
        "{\"type\":\"tab\there\"}",
        "{\"a\":\"\\",
        "{\"a\" : 1 2}",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_invalid(bad[i]);
    }

    /* not objects: valid JSON, which bridged checks the type of */

    assert_true(parse("[]") > 0);
    assert_int_equal(toks[0].type, VOICE_JSON_ARRAY);
    assert_true(parse("\"type\"") > 0);
    assert_int_equal(toks[0].type, VOICE_JSON_STRING);
}


static void
test_delta_length_is_respected(void **state)
{
    char  buf[64];

    (void) state;

    /* a valid object followed by bytes outside len */

    memcpy(buf, "{\"type\":\"t\"}GARBAGE", 20);

    assert_true(voice_json_parse((const uint8_t *) buf, 12, toks, NTOKS,
                                 NULL) > 0);
    expect_member(buf, "type", "t");

    /* a NUL right after a backslash is no escape */

    memcpy(buf, "{\"a\":\"\\\0\"}", 9);
    assert_int_equal(voice_json_parse((const uint8_t *) buf, 9, toks, NTOKS,
                                      NULL), VOICE_JSON_EINVAL);

    /* cut inside a string */

    memcpy(buf, "{\"type\":\"t\"}GARBAGE", 20);

    assert_int_equal(voice_json_parse((const uint8_t *) buf, 10, toks, NTOKS,
                                      NULL), VOICE_JSON_EINVAL);
}


static void
test_writer(void **state)
{
    int       n;
    uint8_t   out[64], *p, *last;
    uint8_t   in[1];

    (void) state;

    last = out + sizeof(out);

    p = voice_json_put(out, last, "{\"k\":");
    p = voice_json_put_str(p, last,
                           (const uint8_t *) "a\"b\\c\n\r\t\x01\xc3\xa9", 11);
    p = voice_json_put(p, last, "}");
    assert_non_null(p);
    assert_int_equal(p - out, 29);
    assert_memory_equal(out, "{\"k\":\"a\\\"b\\\\c\\n\\r\\t\\u0001\xc3\xa9\"}",
                        29);

    /* what it writes, the tokenizer reads back as it was */

    assert_true(voice_json_parse(out, (size_t) (p - out), toks, NTOKS, NULL)
                > 0);
    n = (int) voice_json_unescape(out, &toks[2], out + 40, 24);
    assert_int_equal(n, 11);
    assert_memory_equal(out + 40, "a\"b\\c\n\r\t\x01\xc3\xa9", 11);

    /* every control character */

    for (n = 0; n < 0x20; n++) {
        in[0] = (uint8_t) n;
        p = voice_json_put_str(out, last, in, 1);
        assert_non_null(p);
        assert_true(voice_json_parse(out, (size_t) (p - out), toks, NTOKS,
                                     NULL) == 1);
        assert_int_equal(voice_json_unescape(out, &toks[0], out + 40, 24), 1);
        assert_int_equal(out[40], n);
    }

    /* too small: NULL, and NULL goes through a chain */

    assert_null(voice_json_put(out, out + 3, "four"));
    assert_non_null(voice_json_put(out, out + 4, "four"));
    assert_null(voice_json_put_str(out, out + 1, (const uint8_t *) "", 0));
    assert_non_null(voice_json_put_str(out, out + 2, (const uint8_t *) "", 0));
    assert_null(voice_json_put_str(out, out + 2, (const uint8_t *) "x", 1));
    assert_null(voice_json_put_str(out, out + 7, (const uint8_t *) "\x01", 1));
    assert_non_null(voice_json_put_str(out, out + 8, (const uint8_t *) "\x01",
                                       1));
    assert_null(voice_json_put(NULL, last, ""));
    assert_null(voice_json_put_str(NULL, last, (const uint8_t *) "", 0));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_token_layout),
        cmocka_unit_test(test_scalars_at_top_level),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_get_and_str_eq),
        cmocka_unit_test(test_duplicate_keys_first_wins),
        cmocka_unit_test(test_unescape),
        cmocka_unit_test(test_uint),
        cmocka_unit_test(test_twilio_start_example),
        cmocka_unit_test(test_delta_members_in_any_order),
        cmocka_unit_test(test_delta_escapes_and_nesting),
        cmocka_unit_test(test_delta_refusals),
        cmocka_unit_test(test_delta_length_is_respected),
        cmocka_unit_test(test_writer),
    };

    return cmocka_run_group_tests_name("voice_json", tests, NULL, NULL);
}
