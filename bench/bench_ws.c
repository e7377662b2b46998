/*
 * bench_ws.c: the pieces both benchmark tools share (see bench_ws.h).
 *
 * Nothing here allocates except the buffers, and nothing is clever: the
 * tools must stay cheap next to what they measure, so a frame is parsed
 * without copying.  base64 and JSON are the bridge's own (common/), the
 * same code nginx and bridged run: the tools then read what the bridge
 * writes as strictly as the bridge reads what they write.
 */

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/sha.h>

#include "voice_json.h"
#include "voice_b64.h"
#include "bench_ws.h"


#define BENCH_WS_GUID    "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* a session.update with its tools takes a few hundred */
#define BENCH_JSON_TOKS  4096


/* the tokens of the last event bench_json_parse() read */
static voice_json_tok_t  bench_json_toks[BENCH_JSON_TOKS];


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


void
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


int
bench_ws_parse(const uint8_t *p, size_t n, bench_ws_frame_t *f)
{
    size_t    need, i;
    uint64_t  len;

    if (n < 2) {
        return 0;
    }

    f->fin = (p[0] & 0x80) != 0;
    f->opcode = p[0] & 0x0f;
    f->masked = (p[1] & 0x80) != 0;

    if (p[0] & 0x70) {
        return -1;     /* no extension was negotiated */
    }

    len = p[1] & 0x7f;
    need = 2;

    if (len == 126) {
        need = 4;

    } else if (len == 127) {
        need = 10;
    }

    if (f->masked) {
        need += 4;
    }

    if (n < need) {
        return 0;
    }

    if (len == 126) {
        len = (uint64_t) p[2] << 8 | p[3];

    } else if (len == 127) {
        len = 0;
        for (i = 2; i < 10; i++) {
            len = len << 8 | p[i];
        }

        if (len >> 62) {
            return -1;
        }
    }

    if (f->masked) {
        memcpy(f->mask, p + need - 4, 4);
    }

    if ((f->opcode & 0x8) && (len > 125 || !f->fin)) {
        return -1;     /* control frames are short and never fragmented */
    }

    f->len = len;
    f->header = need;

    return 1;
}


size_t
bench_ws_header(uint8_t *dst, unsigned opcode, uint64_t len,
    const uint8_t *mask)
{
    size_t   n, i;
    uint8_t  m;

    dst[0] = (uint8_t) (0x80 | (opcode & 0x0f));
    m = mask ? 0x80 : 0;

    if (len < 126) {
        dst[1] = (uint8_t) (m | len);
        n = 2;

    } else if (len < 65536) {
        dst[1] = (uint8_t) (m | 126);
        dst[2] = (uint8_t) (len >> 8);
        dst[3] = (uint8_t) len;
        n = 4;

    } else {
        dst[1] = (uint8_t) (m | 127);
        for (i = 0; i < 8; i++) {
            dst[2 + i] = (uint8_t) (len >> (56 - 8 * i));
        }
        n = 10;
    }

    if (mask) {
        memcpy(dst + n, mask, 4);
        n += 4;
    }

    return n;
}


void
bench_ws_mask(uint8_t *p, size_t n, const uint8_t *mask, size_t offset)
{
    size_t    i;
    uint8_t   m[8];
    uint64_t  w, k;

    for (i = 0; i < 8; i++) {
        m[i] = mask[(offset + i) & 3];
    }

    memcpy(&k, m, 8);

    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        w ^= k;
        memcpy(p + i, &w, 8);
    }

    for ( /* void */ ; i < n; i++) {
        p[i] ^= mask[(offset + i) & 3];
    }
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
