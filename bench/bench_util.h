/*
 * bench_util.h: what the load generator and the fake OpenAI share besides
 * common/'s WebSocket framing, base64 and JSON: growing byte buffers, the
 * monotonic clock, JSON lookups by key over common/voice_json.c, the
 * opening handshake's accept key and HTTP header lookup.  libc, OpenSSL
 * and common/ only.
 */

#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>


typedef struct {
    uint8_t    *data;
    size_t      pos;       /* first byte not consumed yet */
    size_t      len;       /* end of the data */
    size_t      size;
} bench_buf_t;


/* room for n more bytes at data + len; -1 when out of memory */
int bench_buf_reserve(bench_buf_t *b, size_t n);
int bench_buf_append(bench_buf_t *b, const void *p, size_t n);
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

/* the Sec-WebSocket-Accept of a key: 28 characters and a NUL */
void bench_ws_accept(char *dst, const char *key, size_t key_len);

/* case-insensitive value of an HTTP header in a request or response head */
const char *bench_http_header(const char *head, size_t len, const char *name,
    size_t *vlen);


#endif /* BENCH_UTIL_H */
