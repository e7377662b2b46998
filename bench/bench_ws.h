/*
 * bench_ws.h: what the load generator and the fake OpenAI share: growing
 * byte buffers, the monotonic clock, base64, a flat JSON string lookup and
 * the RFC 6455 frame header, parsed and written.  libc and OpenSSL only.
 */

#ifndef BENCH_WS_H
#define BENCH_WS_H

#include <stddef.h>
#include <stdint.h>


#define BENCH_WS_OP_CONT     0x0
#define BENCH_WS_OP_TEXT     0x1
#define BENCH_WS_OP_BINARY   0x2
#define BENCH_WS_OP_CLOSE    0x8
#define BENCH_WS_OP_PING     0x9
#define BENCH_WS_OP_PONG     0xa

/* the largest header: 2 + 8 (64-bit length) + 4 (mask) */
#define BENCH_WS_HEADER_MAX  14

#define BENCH_B64_LEN(n)     (((n) + 2) / 3 * 4)


typedef struct {
    uint8_t    *data;
    size_t      pos;       /* first byte not consumed yet */
    size_t      len;       /* end of the data */
    size_t      size;
} bench_buf_t;


typedef struct {
    unsigned    fin:1;
    unsigned    masked:1;
    unsigned    opcode:4;
    uint8_t     mask[4];
    uint64_t    len;       /* payload length */
    size_t      header;    /* header length */
} bench_ws_frame_t;


/* room for n more bytes at data + len; -1 when out of memory */
int bench_buf_reserve(bench_buf_t *b, size_t n);
int bench_buf_append(bench_buf_t *b, const void *p, size_t n);
/* drops the consumed bytes, moving the rest to the front */
void bench_buf_compact(bench_buf_t *b);
void bench_buf_free(bench_buf_t *b);

uint64_t bench_now_ns(void);

size_t bench_b64_encode(char *dst, const uint8_t *src, size_t n);
/* -1 when src is not base64 */
long bench_b64_decode(uint8_t *dst, const char *src, size_t n);

/*
 * The string value of "key" in a flat search of json: the first
 * occurrence of "key" followed by a colon and a string.  Returns a pointer
 * to its first character (escapes left as they are) and its length, or
 * NULL.
 */
const char *bench_json_str(const char *json, size_t len, const char *key,
    size_t *vlen);

/*
 * Parses the frame header at p: 1 with f filled in, 0 when more bytes are
 * needed, -1 when the header is malformed.
 */
int bench_ws_parse(const uint8_t *p, size_t n, bench_ws_frame_t *f);
/* writes a final frame's header; mask may be NULL; returns its length */
size_t bench_ws_header(uint8_t *dst, unsigned opcode, uint64_t len,
    const uint8_t *mask);
/* XORs n bytes with the mask, starting at byte offset of the payload */
void bench_ws_mask(uint8_t *p, size_t n, const uint8_t *mask, size_t offset);
/* the Sec-WebSocket-Accept of a key: 28 characters and a NUL */
void bench_ws_accept(char *dst, const char *key, size_t key_len);

/* case-insensitive value of an HTTP header in a request or response head */
const char *bench_http_header(const char *head, size_t len, const char *name,
    size_t *vlen);


#endif /* BENCH_WS_H */
