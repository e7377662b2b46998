/*
 * fuzz_json.c: libFuzzer target of ngx_voice_module's JSON tokenizer
 * (common/voice_json.c).
 *
 * The input is the text.  When it tokenizes, the token tree must be
 * consistent (offsets in the text, next indexes, member and element
 * counts), every string must unescape to valid UTF-8 no longer than its
 * escaped form and compare equal to its own unescaping, every object key
 * must be found by a lookup, and one token less of room must give ENOMEM.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "voice_json.h"


#define FUZZ_TOKS  512


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static voice_json_tok_t           fuzz_toks[FUZZ_TOKS];
static uint8_t                    fuzz_buf[1 << 16];
static char                       fuzz_key[1 << 16];


/* an independent UTF-8 check: decode and re-check the ranges */

static int
fuzz_json_utf8(const uint8_t *p, size_t n)
{
    size_t    i, k, need;
    uint32_t  cp, min;

    for (i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            continue;
        }

        if ((p[i] & 0xe0) == 0xc0) {
            need = 1;
            cp = p[i] & 0x1f;
            min = 0x80;

        } else if ((p[i] & 0xf0) == 0xe0) {
            need = 2;
            cp = p[i] & 0x0f;
            min = 0x800;

        } else if ((p[i] & 0xf8) == 0xf0) {
            need = 3;
            cp = p[i] & 0x07;
            min = 0x10000;

        } else {
            return 0;
        }

        for (k = 0; k < need; k++) {
            if (++i == n || (p[i] & 0xc0) != 0x80) {
                return 0;
            }

            cp = cp << 6 | (p[i] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}


/* checks the subtree at i and returns the index after it */

static int
fuzz_json_walk(const uint8_t *text, size_t size, int i, int n)
{
    int                               k, j, v;
    uint32_t                          m;
    size_t                            len;
    uint8_t                           saved;
    uint64_t                          u;
    const voice_json_tok_t           *t;

    if (i >= n) {
        abort();
    }

    t = &fuzz_toks[i];

    if (t->start > t->end || t->end > size || t->next <= (uint32_t) i
        || t->next > (uint32_t) n)
    {
        abort();
    }

    switch (t->type) {

    case VOICE_JSON_OBJECT:
    case VOICE_JSON_ARRAY:
        k = i + 1;

        for (m = 0; m < t->size; m++) {

            if (t->type == VOICE_JSON_OBJECT) {
                if (fuzz_toks[k].type != VOICE_JSON_STRING) {
                    abort();
                }

                j = fuzz_json_walk(text, size, k, n);

                /* the key is found, at this member or an earlier one */
                len = voice_json_unescape(text, &fuzz_toks[k],
                                          (uint8_t *) fuzz_key,
                                          sizeof(fuzz_key) - 1);
                if (len != (size_t) -1 && memchr(fuzz_key, 0, len) == NULL) {
                    fuzz_key[len] = '\0';
                    v = voice_json_get(text, fuzz_toks, i, fuzz_key);

                    if (v < 0 || v > j) {
                        abort();
                    }
                }

                k = j;
            }

            k = fuzz_json_walk(text, size, k, n);
        }

        if ((uint32_t) k != t->next) {
            abort();
        }

        if (text[t->start] != (t->type == VOICE_JSON_OBJECT ? '{'
                                                                     : '[')
            || text[t->end - 1] != (t->type == VOICE_JSON_OBJECT
                                    ? '}' : ']'))
        {
            abort();
        }

        return k;

    case VOICE_JSON_STRING:
        len = voice_json_unescape(text, t, fuzz_buf,
                                  sizeof(fuzz_buf));

        if (len == (size_t) -1 || len > t->end - t->start
            || !fuzz_json_utf8(fuzz_buf, len)
            || (!t->escaped && memchr(text + t->start, '\\',
                                      t->end - t->start)))
        {
            abort();
        }

        /* one byte less of room is refused, and nothing is overrun */
        if (len > 0) {
            fuzz_buf[len - 1] ^= 0x55;
            saved = fuzz_buf[len - 1];

            if (voice_json_unescape(text, t, fuzz_buf, len - 1)
                != (size_t) -1
                || fuzz_buf[len - 1] != saved)
            {
                abort();
            }
        }

        len = voice_json_unescape(text, t, fuzz_buf,
                                  sizeof(fuzz_buf));

        if (memchr(fuzz_buf, 0, len) == NULL) {
            memcpy(fuzz_key, fuzz_buf, len);
            fuzz_key[len] = '\0';

            if (!voice_json_str_eq(text, fuzz_toks, i, fuzz_key)) {
                abort();
            }

            if (len > 0) {
                fuzz_key[len - 1] = '\0';

                if (voice_json_str_eq(text, fuzz_toks, i, fuzz_key)) {
                    abort();
                }
            }
        }

        break;

    case VOICE_JSON_NUMBER:
        if (t->end == t->start) {
            abort();
        }

        (void) voice_json_uint(text, t, &u);
        break;

    case VOICE_JSON_TRUE:
    case VOICE_JSON_FALSE:
    case VOICE_JSON_NULL:
        break;

    default:
        abort();
    }

    if (t->next != (uint32_t) i + 1 || t->size != 0) {
        abort();
    }

    return i + 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          n, rc;
    const char  *err;

    err = NULL;
    n = voice_json_parse(data, size, fuzz_toks, FUZZ_TOKS, &err);

    if (n < 0) {
        if (err == NULL
            || (n != VOICE_JSON_EINVAL
                && n != VOICE_JSON_ENOMEM
                && n != VOICE_JSON_EDEPTH))
        {
            abort();
        }

        return 0;
    }

    if (n == 0 || fuzz_json_walk(data, size, 0, n) != n) {
        abort();
    }

    /* the same text with one token of room less */
    rc = voice_json_parse(data, size, fuzz_toks, (unsigned) n - 1,
                          &err);
    if (rc != VOICE_JSON_ENOMEM) {
        abort();
    }

    return 0;
}
