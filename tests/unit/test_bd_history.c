/*
 * test_bd_history.c: the conversation kept for a later OpenAI session --
 * order, bounds, the tool text cut, and nginx's HISTORY document.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bd_history.h"
#include "voice_proto.h"


static void
add(bd_history_t *h, uint32_t order, uint32_t role, const char *text)
{
    assert_int_equal(bd_history_add(h, order, role, text, strlen(text)), 0);
}


static void
test_kept_in_order(void **state)
{
    bd_history_t  h;

    (void) state;

    bd_history_init(&h);

    /* the caller's transcript comes after the reply that followed it */

    add(&h, 2, VOICE_PROTO_ROLE_ASSISTANT, "Hello, how can I help?");
    add(&h, 1, VOICE_PROTO_ROLE_USER, "Hi there");
    add(&h, 4, VOICE_PROTO_ROLE_DTMF, "5");
    add(&h, 3, VOICE_PROTO_ROLE_TOOL, "lookup({}) returned: ok");

    assert_int_equal(h.len, 4);
    assert_int_equal(h.items[0].order, 1);
    assert_string_equal(h.items[0].text, "Hi there");
    assert_int_equal(h.items[1].role, VOICE_PROTO_ROLE_ASSISTANT);
    assert_int_equal(h.items[2].role, VOICE_PROTO_ROLE_TOOL);
    assert_string_equal(h.items[3].text, "5");
    assert_int_equal(bd_history_last_order(&h), 4);
    assert_int_equal(h.bytes, 8 + 22 + 1 + 23);
    assert_int_equal(h.dropped, 0);

    bd_history_free(&h);
    assert_int_equal(h.len, 0);
    assert_int_equal(bd_history_last_order(&h), 0);
}


static void
test_bounded(void **state)
{
    char          text[BD_HISTORY_ITEM_MAX * 2];
    unsigned      i;
    bd_history_t  h;

    (void) state;

    bd_history_init(&h);

    for (i = 1; i <= BD_HISTORY_ITEMS + 10; i++) {
        snprintf(text, sizeof(text), "utterance %u", i);
        add(&h, i, VOICE_PROTO_ROLE_USER, text);
    }

    /* the oldest went first, and were counted */

    assert_int_equal(h.len, BD_HISTORY_ITEMS);
    assert_int_equal(h.dropped, 10);
    assert_string_equal(h.items[0].text, "utterance 11");

    /* an item over the bound is cut, at a UTF-8 boundary */

    memset(text, 'a', sizeof(text));
    memcpy(text + BD_HISTORY_ITEM_MAX - 1, "\xc3\xa9", 2);   /* e-acute */
    text[sizeof(text) - 1] = '\0';

    assert_int_equal(bd_history_add(&h, 1000, VOICE_PROTO_ROLE_ASSISTANT,
                                    text, strlen(text)), 0);
    assert_int_equal(h.items[h.len - 1].len, BD_HISTORY_ITEM_MAX - 1);

    /* the byte bound: big items push the small ones out */

    for (i = 0; i < 20; i++) {
        add(&h, 2000 + i, VOICE_PROTO_ROLE_USER, text);
    }

    assert_true(h.bytes <= BD_HISTORY_BYTES);
    assert_int_equal(h.items[h.len - 1].order, 2019);

    bd_history_free(&h);
}


static void
test_load(void **state)
{
    bd_history_t  h;

    static const char  doc[] =
        "{\"dropped\":3,\"items\":["
        "{\"order\":7,\"role\":\"user\",\"text\":\"Where is my order?\"},"
        "{\"order\":9,\"role\":\"assistant\",\"text\":\"It ships \\\"today\\\"."
        "\"},"
        "{\"order\":8,\"role\":\"tool\",\"text\":\"lookup({}) returned: x\"},"
        "{\"order\":10,\"role\":\"dtmf\",\"text\":\"#\"}]}";

    (void) state;

    bd_history_init(&h);

    assert_int_equal(bd_history_load(&h, doc, sizeof(doc) - 1), 0);
    assert_int_equal(h.len, 4);
    assert_int_equal(h.dropped, 3);
    assert_int_equal(h.items[1].role, VOICE_PROTO_ROLE_TOOL);
    assert_string_equal(h.items[2].text, "It ships \"today\".");
    assert_int_equal(bd_history_last_order(&h), 10);

    bd_history_free(&h);
}


static void
test_load_refuses_bad_shapes(void **state)
{
    unsigned      i;
    bd_history_t  h;

    static const char  *bad[] = {
        "",
        "[]",
        "{\"items\":{}}",
        "{\"items\":[{\"order\":1,\"role\":\"user\"}]}",
        "{\"items\":[{\"order\":-1,\"role\":\"user\",\"text\":\"a\"}]}",
        "{\"items\":[{\"order\":1,\"role\":\"system\",\"text\":\"a\"}]}",
        "{\"items\":[{\"order\":\"1\",\"role\":\"user\",\"text\":\"a\"}]}",
        "{\"items\":[],\"dropped\":-2}",
        /* one good item before a bad one: nothing is kept */
        "{\"items\":[{\"order\":1,\"role\":\"user\",\"text\":\"a\"},7]}",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bd_history_init(&h);
        assert_int_equal(bd_history_load(&h, bad[i], strlen(bad[i])), -1);
        assert_int_equal(h.len, 0);
        assert_int_equal(h.dropped, 0);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_kept_in_order),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_load_refuses_bad_shapes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
