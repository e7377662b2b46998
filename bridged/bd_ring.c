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
bd_ring_init(bd_ring_t *r, size_t size)
{
    memset(r, 0, sizeof(bd_ring_t));

    r->buf = malloc(size ? size : 1);
    if (r->buf == NULL) {
        return -1;
    }

    r->size = size;

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


size_t
bd_ring_push(bd_ring_t *r, const uint8_t *data, size_t len)
{
    size_t  dropped, evict, tail, n;

    dropped = 0;

    if (len > r->size) {
        dropped = len - r->size;
        data += dropped;
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
