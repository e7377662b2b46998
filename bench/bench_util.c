/*
 * bench_util.c: the pieces both benchmark tools share (see bench_util.h).
 *
 * Nothing here allocates except the buffers, and nothing is clever: the
 * tools must stay cheap next to what they measure.  WebSocket framing,
 * base64 and JSON are the bridge's own (common/), the same code nginx and
 * bridged run: the tools then read what the bridge writes as strictly as
 * the bridge reads what they write.  What is left here is the tools' own:
 * growing buffers, the clock, JSON lookups by key, the opening handshake's
 * Sec-WebSocket-Accept and HTTP header lookup.
 */

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/sha.h>

#include "voice_json.h"
#include "voice_b64.h"
#include "bench_util.h"


#define BENCH_WS_GUID    "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* a session.update with its tools takes a few hundred */
#define BENCH_JSON_TOKS  4096


/* the tokens of the last event bench_json_parse() read */
static voice_json_tok_t  bench_json_toks[BENCH_JSON_TOKS];


static void bench_buf_compact(bench_buf_t *b);


int
bench_buf_reserve(bench_buf_t *b, size_t n)
{
    size_t    size;
    uint8_t  *p;

    if (b->size - b->len >= n) {
        return 0;
    }

    if (b->pos > 0) {
        bench_buf_compact(b);

        if (b->size - b->len >= n) {
            return 0;
        }
    }

    size = b->size ? b->size : 4096;

    while (size - b->len < n) {
        size *= 2;
    }

    p = realloc(b->data, size);
    if (p == NULL) {
        return -1;
    }

    b->data = p;
    b->size = size;

    return 0;
}


int
bench_buf_append(bench_buf_t *b, const void *p, size_t n)
{
    if (bench_buf_reserve(b, n) != 0) {
        return -1;
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;

    return 0;
}


/* drops the consumed bytes, moving the rest to the front */

static void
bench_buf_compact(bench_buf_t *b)
{
    if (b->pos == 0) {
        return;
    }

    if (b->pos < b->len) {
        memmove(b->data, b->data + b->pos, b->len - b->pos);
    }

    b->len -= b->pos;
    b->pos = 0;
}


void
bench_buf_free(bench_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(bench_buf_t));
}


uint64_t
bench_now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}


int
bench_json_parse(const char *json, size_t len)
{
    int  n;

    n = voice_json_parse((const uint8_t *) json, len, bench_json_toks,
                         BENCH_JSON_TOKS, NULL);

    return (n > 0 && bench_json_toks[0].type == VOICE_JSON_OBJECT) ? 0 : -1;
}


int
bench_json_obj(const char *json, int obj, const char *key)
{
    int  i;

    i = voice_json_get((const uint8_t *) json, bench_json_toks, obj, key);

    return (i >= 0 && bench_json_toks[i].type == VOICE_JSON_OBJECT) ? i : -1;
}


const char *
bench_json_str(const char *json, int obj, const char *key, size_t *vlen)
{
    int  i;

    i = voice_json_get((const uint8_t *) json, bench_json_toks, obj, key);

    if (i < 0 || bench_json_toks[i].type != VOICE_JSON_STRING) {
        return NULL;
    }

    *vlen = bench_json_toks[i].end - bench_json_toks[i].start;

    return json + bench_json_toks[i].start;
}


const char *
bench_json_text(const char *json, int i, size_t *vlen)
{
    *vlen = bench_json_toks[i].end - bench_json_toks[i].start;

    return json + bench_json_toks[i].start;
}


void
bench_ws_accept(char *dst, const char *key, size_t key_len)
{
    char     buf[128];
    size_t   n;
    uint8_t  md[SHA_DIGEST_LENGTH];

    if (key_len > sizeof(buf) - sizeof(BENCH_WS_GUID)) {
        key_len = sizeof(buf) - sizeof(BENCH_WS_GUID);
    }

    memcpy(buf, key, key_len);
    memcpy(buf + key_len, BENCH_WS_GUID, sizeof(BENCH_WS_GUID) - 1);
    n = key_len + sizeof(BENCH_WS_GUID) - 1;

    SHA1((const unsigned char *) buf, n, md);

    n = voice_b64_encode(dst, md, SHA_DIGEST_LENGTH);
    dst[n] = '\0';
}


const char *
bench_http_header(const char *head, size_t len, const char *name,
    size_t *vlen)
{
    size_t       nlen;
    const char  *p, *end, *line, *v;

    nlen = strlen(name);
    end = head + len;

    /* skip the request or status line */

    p = memchr(head, '\n', len);

    while (p != NULL && p + 1 < end) {
        line = p + 1;
        p = memchr(line, '\n', (size_t) (end - line));

        if (p == NULL) {
            p = end;
        }

        if ((size_t) (p - line) > nlen && line[nlen] == ':'
            && strncasecmp(line, name, nlen) == 0)
        {
            v = line + nlen + 1;

            while (v < p && (*v == ' ' || *v == '\t')) {
                v++;
            }

            *vlen = (size_t) (p - v);

            while (*vlen > 0 && isspace((unsigned char) v[*vlen - 1])) {
                (*vlen)--;
            }

            return v;
        }

        if (p == end) {
            break;
        }
    }

    return NULL;
}
