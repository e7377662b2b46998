/*
 * bench_ws.h: what the load generator and the fake OpenAI share: growing
 * byte buffers, the monotonic clock, JSON lookups over common/voice_json.c
 * and the RFC 6455 frame header, parsed and written.  libc, OpenSSL and
 * common/ (base64: voice_b64.h) only.
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

/*
 * Tokenizes one event, which must be a JSON object: 0, or -1.  The lookups
 * below read its tokens until the next call (one static table: the tools
 * are single-threaded).
 */
int bench_json_parse(const char *json, size_t len);
/* the object member key of object obj (0 is the event): its index, or -1 */
int bench_json_obj(const char *json, int obj, const char *key);
/*
 * The string member key of object obj: a pointer to its first character
 * (escapes left as they are) and its length, or NULL.
 */
const char *bench_json_str(const char *json, int obj, const char *key,
    size_t *vlen);
/* the text of token i, as written (an object with its braces) */
const char *bench_json_text(const char *json, int i, size_t *vlen);

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
