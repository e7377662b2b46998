/*
 * test_bd_jscan.c: unit tests of bridged/bd_jscan.c, the flat scan of a
 * JSON object's string members: what it finds, and every shape it must
 * decline so that the caller parses in full.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bd_jscan.h"


static int
scan(const char *json, bd_jscan_field_t *f)
{
    f[0].name = "type";
    f[1].name = "item_id";
    f[2].name = "delta";

    return bd_jscan_flat(json, strlen(json), f, 3);
}


static void
expect(const bd_jscan_field_t *f, const char *want)
{
    if (want == NULL) {
        assert_null(f->val);
        return;
    }

    assert_non_null(f->val);
    assert_int_equal(f->len, strlen(want));
    assert_memory_equal(f->val, want, f->len);
}


static void
test_finds_members_in_any_order(void **state)
{
    bd_jscan_field_t  f[3];

    (void) state;

    assert_int_equal(scan("{\"type\":\"response.output_audio.delta\","
                          "\"event_id\":\"ev_1\",\"output_index\":0,"
                          "\"item_id\":\"item_A\",\"delta\":\"AAEC\"}", f),
                     0);
    expect(&f[0], "response.output_audio.delta");
    expect(&f[1], "item_A");
    expect(&f[2], "AAEC");

    /* another order, white space, literals, an empty string */

    assert_int_equal(scan("{\"a\":0,\"b\":-0.25,\"c\":12E-2,\"d\":7}", f), 0);

    assert_int_equal(scan(" {\n \"delta\" : \"\" , \"x\": -1.5e+3,\t"
                          "\"y\": true, \"z\": null, \"w\": false,"
                          " \"type\":\"t\" } \n", f), 0);
    expect(&f[0], "t");
    expect(&f[1], NULL);
    expect(&f[2], "");

    assert_int_equal(scan("{}", f), 0);
    expect(&f[0], NULL);
}


static void
test_first_of_equal_names_counts(void **state)
{
    bd_jscan_field_t  f[3];

    (void) state;

    assert_int_equal(scan("{\"type\":\"a\",\"type\":\"b\"}", f), 0);
    expect(&f[0], "a");

    /* as with cJSON: a first member that is no string hides a later one */

    assert_int_equal(scan("{\"type\":5,\"type\":\"b\"}", f), 0);
    expect(&f[0], NULL);
}


static void
test_escapes(void **state)
{
    bd_jscan_field_t  f[3];

    (void) state;

    /* in a member nobody asked for: skipped over */

    assert_int_equal(scan("{\"note\":\"a \\\"quoted\\\" \\\\ word\","
                          "\"type\":\"t\"}", f), 0);
    expect(&f[0], "t");

    /* in a wanted member, or in a name: declined */

    assert_int_equal(scan("{\"delta\":\"AA\\/B\"}", f), -1);
    assert_int_equal(scan("{\"ty\\u0070e\":\"t\"}", f), -1);
}


static void
test_declines_what_is_not_flat_json(void **state)
{
    size_t             i;
    bd_jscan_field_t   f[3];
    static const char *bad[] = {
        "",
        "   ",
        "[]",
        "\"type\"",
        "{\"type\":\"t\"",
        "{\"type\":\"t\",}",
        "{\"type\" \"t\"}",
        "{\"type\":}",
        "{\"type\":\"t\"} x",
        "{\"type\":\"t\"}}",
        "{type:\"t\"}",
        "{\"a\":{\"b\":1}}",
        "{\"a\":[1,2]}",
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
        "{\"note\":\"\\u0041\"}",
        "{\"type\":\"unterminated}",
        "{\"type\":\"tab\there\"}",
        "{\"a\":\"\\",
        "{\"a\" : 1 2}",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (scan(bad[i], f) != -1) {
            fail_msg("accepted: %s", bad[i]);
        }
    }
}


static void
test_length_is_respected(void **state)
{
    char              buf[64];
    bd_jscan_field_t  f[3];

    (void) state;

    /* a valid object followed by bytes outside len */

    memcpy(buf, "{\"type\":\"t\"}GARBAGE", 20);

    f[0].name = "type";
    f[1].name = "item_id";
    f[2].name = "delta";

    assert_int_equal(bd_jscan_flat(buf, 12, f, 3), 0);
    expect(&f[0], "t");

    /* a NUL right after a backslash is no escape */

    memcpy(buf, "{\"a\":\"\\\0\"}", 9);
    assert_int_equal(bd_jscan_flat(buf, 9, f, 3), -1);

    /* cut inside a string */

    memcpy(buf, "{\"type\":\"t\"}GARBAGE", 20);

    assert_int_equal(bd_jscan_flat(buf, 10, f, 3), -1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_finds_members_in_any_order),
        cmocka_unit_test(test_first_of_equal_names_counts),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_declines_what_is_not_flat_json),
        cmocka_unit_test(test_length_is_respected),
    };

    return cmocka_run_group_tests_name("bd_jscan", tests, NULL, NULL);
}
