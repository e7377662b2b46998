/*
 * test_bd_ring.c: unit tests of bridged/bd_ring.c, the bounded hold
 * buffer for caller audio: order kept byte for byte across wrap-around,
 * the oldest bytes evicted and counted, and a long random run checked
 * against a plain model.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bd_ring.h"


static void
test_fifo_order(void **state)
{
    uint8_t    out[16];
    bd_ring_t  r;

    (void) state;

    assert_int_equal(bd_ring_init(&r, 10), 0);

    assert_int_equal(bd_ring_push(&r, (const uint8_t *) "abcdef", 6), 0);
    assert_int_equal(bd_ring_read(&r, out, 4), 4);
    assert_memory_equal(out, "abcd", 4);

    /* wraps around the end of the buffer */

    assert_int_equal(bd_ring_push(&r, (const uint8_t *) "ghijklm", 7), 0);
    assert_int_equal(bd_ring_len(&r), 9);
    assert_int_equal(bd_ring_read(&r, out, sizeof(out)), 9);
    assert_memory_equal(out, "efghijklm", 9);

    assert_int_equal(bd_ring_read(&r, out, sizeof(out)), 0);
    assert_int_equal(r.dropped, 0);

    bd_ring_free(&r);
}


static void
test_oldest_dropped_first(void **state)
{
    uint8_t    out[16];
    bd_ring_t  r;

    (void) state;

    assert_int_equal(bd_ring_init(&r, 8), 0);

    assert_int_equal(bd_ring_push(&r, (const uint8_t *) "12345678", 8), 0);
    assert_int_equal(bd_ring_push(&r, (const uint8_t *) "abc", 3), 3);
    assert_int_equal(bd_ring_len(&r), 8);
    assert_int_equal(r.dropped, 3);

    assert_int_equal(bd_ring_read(&r, out, sizeof(out)), 8);
    assert_memory_equal(out, "45678abc", 8);

    bd_ring_free(&r);
}


static void
test_push_larger_than_ring(void **state)
{
    uint8_t    out[16];
    bd_ring_t  r;

    (void) state;

    assert_int_equal(bd_ring_init(&r, 4), 0);

    assert_int_equal(bd_ring_push(&r, (const uint8_t *) "xy", 2), 0);
    assert_int_equal(bd_ring_push(&r, (const uint8_t *) "0123456789", 10),
                     8);
    assert_int_equal(r.dropped, 8);

    assert_int_equal(bd_ring_read(&r, out, sizeof(out)), 4);
    assert_memory_equal(out, "6789", 4);

    bd_ring_free(&r);
}


static void
test_reset_and_zero_size(void **state)
{
    uint8_t    out[4];
    bd_ring_t  r;

    (void) state;

    assert_int_equal(bd_ring_init(&r, 4), 0);
    bd_ring_push(&r, (const uint8_t *) "abc", 3);
    bd_ring_reset(&r);
    assert_int_equal(bd_ring_len(&r), 0);
    assert_int_equal(r.dropped, 0);
    assert_int_equal(bd_ring_read(&r, out, sizeof(out)), 0);
    bd_ring_free(&r);

    /* a ring of no size drops everything and never crashes */

    assert_int_equal(bd_ring_init(&r, 0), 0);
    assert_int_equal(bd_ring_push(&r, (const uint8_t *) "abc", 3), 3);
    assert_int_equal(bd_ring_read(&r, out, sizeof(out)), 0);
    bd_ring_free(&r);
}


static void
test_grows_on_demand_up_to_the_bound(void **state)
{
    int        i;
    size_t     k;
    uint8_t    in[3000], out[4096];
    bd_ring_t  r;

    (void) state;

    for (k = 0; k < sizeof(in); k++) {
        in[k] = (uint8_t) (k * 7 + 1);
    }

    /* nothing is allocated before the first byte */

    assert_int_equal(bd_ring_init(&r, 4096), 0);
    assert_null(r.buf);
    assert_int_equal(r.size, 0);

    /* audio passing straight through keeps the first allocation */

    for (i = 0; i < 100; i++) {
        assert_int_equal(bd_ring_push(&r, in, 160), 0);
        assert_int_equal(bd_ring_read(&r, out, sizeof(out)), 160);
        assert_memory_equal(out, in, 160);
    }

    assert_int_equal(r.size, BD_RING_MIN);

    /* a wrapped ring grows with its bytes in order */

    assert_int_equal(bd_ring_push(&r, in, 400), 0);
    assert_int_equal(bd_ring_read(&r, out, 300), 300);
    assert_int_equal(bd_ring_push(&r, in + 400, 300), 0);
    assert_true(r.head + r.len > r.size);
    assert_int_equal(bd_ring_push(&r, in + 700, 1300), 0);
    assert_int_equal(r.size, 2048);
    assert_int_equal(bd_ring_len(&r), 1700);
    assert_int_equal(bd_ring_read(&r, out, sizeof(out)), 1700);
    assert_memory_equal(out, in + 300, 1700);

    /* and stops at the bound, where the oldest bytes go */

    assert_int_equal(bd_ring_push(&r, in, 3000), 0);
    assert_int_equal(bd_ring_push(&r, in, 3000), 1904);
    assert_int_equal(r.size, 4096);
    assert_int_equal(bd_ring_len(&r), 4096);
    assert_int_equal(bd_ring_read(&r, out, sizeof(out)), 4096);
    assert_memory_equal(out, in + 1904, 1096);
    assert_memory_equal(out + 1096, in, 3000);

    bd_ring_free(&r);
}


static void
test_random_run_against_model(void **state)
{
    int        i;
    size_t     n, k, got, consumed, size, model_len;
    uint8_t    in[700], out[700], *model;
    uint32_t   next;
    bd_ring_t  r;

    (void) state;

    /*
     * The model keeps every byte ever pushed and a read position; the
     * ring must always hold exactly the newest bytes the model would.
     */

    size = 1000;
    model = malloc(1 << 20);
    model_len = 0;

    assert_int_equal(bd_ring_init(&r, size), 0);

    srand(42);
    next = 0;
    consumed = 0;

    for (i = 0; i < 2000; i++) {
        if (rand() % 3) {
            n = (size_t) (rand() % 700);

            for (k = 0; k < n; k++) {
                in[k] = (uint8_t) next++;
            }

            consumed += bd_ring_push(&r, in, n);
            memcpy(model + model_len, in, n);
            model_len += n;

        } else {
            n = (size_t) (rand() % 700);
            got = bd_ring_read(&r, out, n);

            assert_true(got <= n);
            assert_memory_equal(out, model + consumed, got);
            consumed += got;
        }

        assert_int_equal(bd_ring_len(&r), model_len - consumed);
        assert_true(bd_ring_len(&r) <= size);
        assert_true(r.size <= size);
    }

    free(model);
    bd_ring_free(&r);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_oldest_dropped_first),
        cmocka_unit_test(test_push_larger_than_ring),
        cmocka_unit_test(test_reset_and_zero_size),
        cmocka_unit_test(test_grows_on_demand_up_to_the_bound),
        cmocka_unit_test(test_random_run_against_model),
    };

    return cmocka_run_group_tests_name("bd_ring", tests, NULL, NULL);
}
