/*
 * bd_ring.h: a bounded byte ring that drops its oldest bytes when full.
 *
 * It holds a call's caller audio between nginx and OpenAI (bd_call.c):
 * while the OpenAI session opens, and whenever OpenAI reads slower than
 * the caller talks.  Its bound is fixed at init; the buffer itself grows
 * on demand, by doubling, up to that bound, because a live call's audio
 * passes straight through and needs a few hundred bytes while the bound
 * (a second of audio or more) is only reached when OpenAI stalls.  It
 * never shrinks, so a call reallocates a handful of times at most, never
 * per frame.  Under pressure the oldest audio goes first, because the
 * freshest audio is what a live conversation needs.  libc only.
 */

#ifndef BD_RING_H
#define BD_RING_H

#include <stddef.h>
#include <stdint.h>


#define BD_RING_MIN  512     /* the first allocation, bytes */


typedef struct {
    uint8_t   *buf;
    size_t     size;        /* allocated: 0 until the first push */
    size_t     max;         /* the bound */
    size_t     head;        /* offset of the oldest byte */
    size_t     len;         /* bytes held */
    uint64_t   dropped;     /* bytes evicted since init */
} bd_ring_t;


/* a ring of at most max bytes; allocates nothing yet, and returns 0 */
int bd_ring_init(bd_ring_t *r, size_t max);
void bd_ring_free(bd_ring_t *r);

/* forgets the bytes held (not counted as dropped) */
void bd_ring_reset(bd_ring_t *r);

/*
 * Appends len bytes, growing the buffer toward the bound when it is full,
 * then evicting the oldest bytes when there is still no room (at the
 * bound, or when memory cannot be had); if len is larger than the ring,
 * only its last bytes are kept.  Returns the number of bytes dropped
 * (evicted or never stored).
 */
size_t bd_ring_push(bd_ring_t *r, const uint8_t *data, size_t len);

/* copies up to max of the oldest bytes into dst and consumes them */
size_t bd_ring_read(bd_ring_t *r, uint8_t *dst, size_t max);

#define bd_ring_len(r)  ((r)->len)


#endif /* BD_RING_H */
