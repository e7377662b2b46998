/*
 * bd_ring.c: the bounded audio hold buffer.
 *
 * Order is kept byte for byte: bytes come out exactly as they went in,
 * minus whatever was evicted from the front.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bd_ring.h"


int
bd_ring_init(bd_ring_t *r, size_t max)
{
    memset(r, 0, sizeof(bd_ring_t));

    r->max = max;

    return 0;
}


void
bd_ring_free(bd_ring_t *r)
{
    free(r->buf);
    r->buf = NULL;
    r->size = 0;
    r->head = 0;
    r->len = 0;
}


void
bd_ring_reset(bd_ring_t *r)
{
    r->head = 0;
    r->len = 0;
}


/* a buffer of at least need bytes (at most max), the held bytes moved to
 * its start; on failure the ring stays as it was */

static int
bd_ring_grow(bd_ring_t *r, size_t need)
{
    size_t    n, first;
    uint8_t  *p;

    n = r->size ? r->size : BD_RING_MIN;

    while (n < need && n < r->max) {
        n *= 2;
    }

    if (n > r->max) {
        n = r->max;
    }

    p = malloc(n);
    if (p == NULL) {
        return -1;
    }

    if (r->len) {
        first = r->size - r->head;
        if (first > r->len) {
            first = r->len;
        }

        memcpy(p, r->buf + r->head, first);
        memcpy(p + first, r->buf, r->len - first);
    }

    free(r->buf);
    r->buf = p;
    r->size = n;
    r->head = 0;

    return 0;
}


size_t
bd_ring_push(bd_ring_t *r, const uint8_t *data, size_t len)
{
    size_t  dropped, evict, tail, n;

    dropped = 0;

    if (len > r->max) {
        dropped = len - r->max;
        data += dropped;
        len = r->max;
    }

    if (r->size - r->len < len && r->size < r->max) {
        (void) bd_ring_grow(r, r->len + len);
    }

    if (len > r->size) {

        /* no memory to grow into: keep what fits */

        dropped += len - r->size;
        data += len - r->size;
        len = r->size;
    }

    if (r->size - r->len < len) {
        evict = len - (r->size - r->len);
        r->head = (r->head + evict) % r->size;
        r->len -= evict;
        dropped += evict;
    }

    if (len == 0) {
        r->dropped += dropped;
        return dropped;
    }

    tail = (r->head + r->len) % r->size;

    n = r->size - tail;
    if (n > len) {
        n = len;
    }

    memcpy(r->buf + tail, data, n);
    memcpy(r->buf, data + n, len - n);

    r->len += len;
    r->dropped += dropped;

    return dropped;
}


size_t
bd_ring_read(bd_ring_t *r, uint8_t *dst, size_t max)
{
    size_t  len, n;

    len = (max < r->len) ? max : r->len;
    if (len == 0) {
        return 0;
    }

    n = r->size - r->head;
    if (n > len) {
        n = len;
    }

    memcpy(dst, r->buf + r->head, n);
    memcpy(dst + n, r->buf, len - n);

    r->head = (r->head + len) % r->size;
    r->len -= len;

    if (r->len == 0) {
        r->head = 0;
    }

    return len;
}
