/*
 * voice_json.c: a strict, allocation-free JSON tokenizer (RFC 8259), the
 * helpers that read its tokens, and the string writer.
 *
 * Leaf code, libc only.  In nginx, ngx_http_voice_twilio.c,
 * ngx_http_voice_body.c, the session settings and the transcripts build
 * on it; nginx has no JSON reader of its own, and its ngx_escape_json()
 * stays the writer for code that holds nginx strings.  In bridged, cJSON
 * reads and writes every event that is not per frame (a tree is the
 * convenient shape there); this tokenizer reads the one that comes at
 * frame rate, OpenAI's audio delta, where building a cJSON tree cost a
 * sixth of bridged's instructions per frame; the benchmark tools read the
 * events they receive with it too.
 *
 * The tokenizer is one iterative pass over the text: open containers are
 * kept on a fixed stack of MAX_DEPTH token indexes, so a hostile text can
 * neither recurse nor allocate.  Strings are validated completely while
 * they are scanned (escapes, surrogate pairs, UTF-8), so that decoding a
 * token later can only fail for lack of room.  The writer is the one the
 * libc-only code needs (ngx_http_voice_twilio.c's messages to Twilio).
 */

#include <limits.h>
#include <string.h>

#include "voice_json.h"


/* what the tokenizer expects next */
#define VOICE_JSON_ST_VALUE      0   /* any value */
#define VOICE_JSON_ST_ARR_FIRST  1   /* a value or ']' */
#define VOICE_JSON_ST_OBJ_FIRST  2   /* a key or '}' */
#define VOICE_JSON_ST_KEY        3   /* a key */
#define VOICE_JSON_ST_COLON      4
#define VOICE_JSON_ST_NEXT       5   /* ',' or the closing bracket */
#define VOICE_JSON_ST_END        6   /* only whitespace */

/* 0x01 in every byte of a word, for the string scan's word tests */
#define VOICE_JSON_ONES  0x0101010101010101ULL


/*
 * Bytes inside a string: 0 is taken as is, 1 ends the string, 2 starts an
 * escape, 3 is a control character, 4 starts a UTF-8 sequence.
 */
static const uint8_t  voice_json_str_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4
};


static int voice_json_token(voice_json_tok_t *toks,
    unsigned ntoks, unsigned *count, int type, size_t start, size_t end);
static size_t voice_json_scan_string(const uint8_t *text,
    size_t len, size_t i, int *escaped, const char **err);
static size_t voice_json_scan_number(const uint8_t *text,
    size_t len, size_t i);
static size_t voice_json_utf8_len(const uint8_t *p,
    const uint8_t *end);
static int voice_json_hex4(const uint8_t *p, const uint8_t *end);
static size_t voice_json_escape(const uint8_t *p,
    const uint8_t *end, const uint8_t **next, uint8_t *out);


int
voice_json_parse(const uint8_t *text, size_t len,
    voice_json_tok_t *toks, unsigned ntoks, const char **err)
{
    int          rc, type, escaped, state;
    size_t       i, j;
    uint8_t      c;
    unsigned     count, depth, top;
    uint32_t     stack[VOICE_JSON_MAX_DEPTH];
    const char  *e;

    if (len >= UINT32_MAX) {
        e = "text too long";
        rc = VOICE_JSON_EINVAL;
        goto failed;
    }

    if (ntoks > INT_MAX) {
        ntoks = INT_MAX;
    }

    count = 0;
    depth = 0;
    top = 0;
    state = VOICE_JSON_ST_VALUE;
    i = 0;

    for ( ;; ) {

        while (i < len
               && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r'
                   || text[i] == '\t'))
        {
            i++;
        }

        if (i == len) {
            break;
        }

        c = text[i];

        switch (state) {

        case VOICE_JSON_ST_OBJ_FIRST:
            if (c == '}') {
                goto close;
            }

            /* fall through */

        case VOICE_JSON_ST_KEY:
            if (c != '"') {
                e = (c == '}') ? "trailing comma in object"
                               : "object key is not a string";
                rc = VOICE_JSON_EINVAL;
                goto failed;
            }

            j = voice_json_scan_string(text, len, i, &escaped, &e);
            if (j == 0) {
                rc = VOICE_JSON_EINVAL;
                goto failed;
            }

            rc = voice_json_token(toks, ntoks, &count,
                                           VOICE_JSON_STRING,
                                           i + 1, j);
            if (rc < 0) {
                e = "too many tokens";
                goto failed;
            }

            toks[rc].escaped = (uint8_t) escaped;
            toks[top].size++;

            i = j + 1;
            state = VOICE_JSON_ST_COLON;
            continue;

        case VOICE_JSON_ST_COLON:
            if (c != ':') {
                e = "expected ':' after an object key";
                rc = VOICE_JSON_EINVAL;
                goto failed;
            }

            i++;
            state = VOICE_JSON_ST_VALUE;
            continue;

        case VOICE_JSON_ST_NEXT:
            if (c == ',') {
                i++;
                state = (toks[top].type == VOICE_JSON_OBJECT)
                        ? VOICE_JSON_ST_KEY
                        : VOICE_JSON_ST_VALUE;
                continue;
            }

            if (c == '}' || c == ']') {
                goto close;
            }

            e = "expected ',' or the end of the container";
            rc = VOICE_JSON_EINVAL;
            goto failed;

        case VOICE_JSON_ST_END:
            e = "trailing data after the value";
            rc = VOICE_JSON_EINVAL;
            goto failed;

        case VOICE_JSON_ST_ARR_FIRST:
            if (c == ']') {
                goto close;
            }

            /* fall through */

        default: /* VOICE_JSON_ST_VALUE */
            if (c == ']' && depth > 0
                && toks[top].type == VOICE_JSON_ARRAY)
            {
                e = "trailing comma in array";
                rc = VOICE_JSON_EINVAL;
                goto failed;
            }
            break;
        }

        /* a value starts at i */

        if (depth > 0 && toks[top].type == VOICE_JSON_ARRAY) {
            toks[top].size++;
        }

        if (c == '{' || c == '[') {

            if (depth == VOICE_JSON_MAX_DEPTH) {
                e = "nested too deeply";
                rc = VOICE_JSON_EDEPTH;
                goto failed;
            }

            type = (c == '{') ? VOICE_JSON_OBJECT
                              : VOICE_JSON_ARRAY;

            rc = voice_json_token(toks, ntoks, &count, type, i, 0);
            if (rc < 0) {
                e = "too many tokens";
                goto failed;
            }

            stack[depth++] = (uint32_t) rc;
            top = (unsigned) rc;

            i++;
            state = (c == '{') ? VOICE_JSON_ST_OBJ_FIRST
                               : VOICE_JSON_ST_ARR_FIRST;
            continue;
        }

        escaped = 0;

        if (c == '"') {
            j = voice_json_scan_string(text, len, i, &escaped, &e);
            if (j == 0) {
                rc = VOICE_JSON_EINVAL;
                goto failed;
            }

            type = VOICE_JSON_STRING;
            rc = voice_json_token(toks, ntoks, &count, type, i + 1,
                                           j);
            j++;

        } else if (c == '-' || (c >= '0' && c <= '9')) {
            j = voice_json_scan_number(text, len, i);
            if (j == 0) {
                e = "invalid number";
                rc = VOICE_JSON_EINVAL;
                goto failed;
            }

            type = VOICE_JSON_NUMBER;
            rc = voice_json_token(toks, ntoks, &count, type, i, j);

        } else {
            if (c == 't' && len - i >= 4 && memcmp(text + i, "true", 4) == 0) {
                type = VOICE_JSON_TRUE;
                j = i + 4;

            } else if (c == 'f' && len - i >= 5
                       && memcmp(text + i, "false", 5) == 0)
            {
                type = VOICE_JSON_FALSE;
                j = i + 5;

            } else if (c == 'n' && len - i >= 4
                       && memcmp(text + i, "null", 4) == 0)
            {
                type = VOICE_JSON_NULL;
                j = i + 4;

            } else {
                e = "unexpected character";
                rc = VOICE_JSON_EINVAL;
                goto failed;
            }

            rc = voice_json_token(toks, ntoks, &count, type, i, j);
        }

        if (rc < 0) {
            e = "too many tokens";
            goto failed;
        }

        toks[rc].escaped = (uint8_t) escaped;

        i = j;
        state = depth ? VOICE_JSON_ST_NEXT
                      : VOICE_JSON_ST_END;
        continue;

    close:

        if ((c == '}') != (toks[top].type == VOICE_JSON_OBJECT)) {
            e = "mismatched closing bracket";
            rc = VOICE_JSON_EINVAL;
            goto failed;
        }

        toks[top].end = (uint32_t) (i + 1);
        toks[top].next = count;

        depth--;
        top = depth ? stack[depth - 1] : 0;

        i++;
        state = depth ? VOICE_JSON_ST_NEXT
                      : VOICE_JSON_ST_END;
    }

    if (state != VOICE_JSON_ST_END) {
        e = (count == 0) ? "no value" : "unexpected end of text";
        rc = VOICE_JSON_EINVAL;
        goto failed;
    }

    return (int) count;

failed:

    if (err) {
        *err = e;
    }

    return rc;
}


static int
voice_json_token(voice_json_tok_t *toks, unsigned ntoks,
    unsigned *count, int type, size_t start, size_t end)
{
    unsigned           n;
    voice_json_tok_t  *t;

    n = *count;

    if (n >= ntoks) {
        return VOICE_JSON_ENOMEM;
    }

    t = &toks[n];

    t->type = (uint8_t) type;
    t->escaped = 0;
    t->start = (uint32_t) start;
    t->end = (uint32_t) end;
    t->size = 0;
    t->next = n + 1;

    *count = n + 1;

    return (int) n;
}


/*
 * text[i] is the opening quote.  Returns the index of the closing quote,
 * or 0 with *err set.
 */

static size_t
voice_json_scan_string(const uint8_t *text, size_t len, size_t i,
    int *escaped, const char **err)
{
    size_t          n;
    uint8_t         buf[4];
    uint64_t        w;
    const uint8_t  *p, *end, *next;

    p = text + i + 1;
    end = text + len;
    *escaped = 0;

    for ( ;; ) {

        /*
         * Eight bytes at a time while none is a quote, a backslash, a
         * control character or non-ASCII: a media payload is 216 such.
         */

        while (end - p >= 8) {
            memcpy(&w, p, 8);

            if (((w - VOICE_JSON_ONES * 0x20)
                 | ((w ^ VOICE_JSON_ONES * '"')
                    - VOICE_JSON_ONES)
                 | ((w ^ VOICE_JSON_ONES * '\\')
                    - VOICE_JSON_ONES)
                 | w)
                & VOICE_JSON_ONES * 0x80)
            {
                break;
            }

            p += 8;
        }

        while (p < end && voice_json_str_class[*p] == 0) {
            p++;
        }

        if (p == end) {
            *err = "unterminated string";
            return 0;
        }

        switch (voice_json_str_class[*p]) {

        case 1:
            return (size_t) (p - text);

        case 2:
            if (voice_json_escape(p, end, &next, buf) == 0) {
                *err = "invalid escape in string";
                return 0;
            }

            *escaped = 1;
            p = next;
            break;

        case 3:
            *err = "control character in string";
            return 0;

        default: /* 4 */
            n = voice_json_utf8_len(p, end);
            if (n == 0) {
                *err = "invalid UTF-8 in string";
                return 0;
            }

            p += n;
            break;
        }
    }
}


/*
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?  Returns the index after
 * the number, or 0 when text[i] does not start one.
 */

static size_t
voice_json_scan_number(const uint8_t *text, size_t len, size_t i)
{
#define VOICE_JSON_DIGIT(j)                                                   \
    ((j) < len && text[j] >= '0' && text[j] <= '9')

    if (i < len && text[i] == '-') {
        i++;
    }

    if (i < len && text[i] == '0') {
        i++;

    } else if (VOICE_JSON_DIGIT(i)) {
        while (VOICE_JSON_DIGIT(i)) {
            i++;
        }

    } else {
        return 0;
    }

    if (i < len && text[i] == '.') {
        i++;

        if (!VOICE_JSON_DIGIT(i)) {
            return 0;
        }

        while (VOICE_JSON_DIGIT(i)) {
            i++;
        }
    }

    if (i < len && (text[i] == 'e' || text[i] == 'E')) {
        i++;

        if (i < len && (text[i] == '+' || text[i] == '-')) {
            i++;
        }

        if (!VOICE_JSON_DIGIT(i)) {
            return 0;
        }

        while (VOICE_JSON_DIGIT(i)) {
            i++;
        }
    }

    return i;

#undef VOICE_JSON_DIGIT
}


/* the length of the UTF-8 sequence at p (RFC 3629), or 0 if invalid */

static size_t
voice_json_utf8_len(const uint8_t *p, const uint8_t *end)
{
    size_t   n, i;
    uint8_t  c, lo, hi;

    c = p[0];

    if (c < 0x80) {
        return 1;
    }

    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        lo = (c == 0xe0) ? 0xa0 : 0x80;     /* overlong */
        hi = (c == 0xed) ? 0x9f : 0xbf;     /* surrogate */

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        lo = (c == 0xf0) ? 0x90 : 0x80;     /* overlong */
        hi = (c == 0xf4) ? 0x8f : 0xbf;     /* over U+10FFFF */

    } else {
        return 0;
    }

    if ((size_t) (end - p) < n) {
        return 0;
    }

    if (p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return n;
}


/* four hex digits at p as a number, or -1 */

static int
voice_json_hex4(const uint8_t *p, const uint8_t *end)
{
    int      v, i;
    uint8_t  c;

    if (end - p < 4) {
        return -1;
    }

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            v = v << 4 | (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v = v << 4 | ((c | 0x20) - 'a' + 10);

        } else {
            return -1;
        }
    }

    return v;
}


/*
 * Decodes the escape at p (p[0] is the backslash) into out as UTF-8, a
 * surrogate pair as one code point.  Returns the bytes written (1-4) and
 * sets *next past the escape, or returns 0 for an invalid escape or a lone
 * surrogate.
 */

static size_t
voice_json_escape(const uint8_t *p, const uint8_t *end,
    const uint8_t **next, uint8_t *out)
{
    int  cp, lo;

    if (end - p < 2) {
        return 0;
    }

    *next = p + 2;

    switch (p[1]) {

    case '"':
    case '\\':
    case '/':
        out[0] = p[1];
        return 1;

    case 'b':
        out[0] = '\b';
        return 1;

    case 'f':
        out[0] = '\f';
        return 1;

    case 'n':
        out[0] = '\n';
        return 1;

    case 'r':
        out[0] = '\r';
        return 1;

    case 't':
        out[0] = '\t';
        return 1;

    case 'u':
        break;

    default:
        return 0;
    }

    cp = voice_json_hex4(p + 2, end);
    if (cp < 0) {
        return 0;
    }

    *next = p + 6;

    if (cp >= 0xdc00 && cp <= 0xdfff) {
        return 0;
    }

    if (cp >= 0xd800 && cp <= 0xdbff) {

        if (end - p < 12 || p[6] != '\\' || p[7] != 'u') {
            return 0;
        }

        lo = voice_json_hex4(p + 8, end);
        if (lo < 0xdc00 || lo > 0xdfff) {
            return 0;
        }

        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        *next = p + 12;
    }

    if (cp < 0x80) {
        out[0] = (uint8_t) cp;
        return 1;
    }

    if (cp < 0x800) {
        out[0] = (uint8_t) (0xc0 | cp >> 6);
        out[1] = (uint8_t) (0x80 | (cp & 0x3f));
        return 2;
    }

    if (cp < 0x10000) {
        out[0] = (uint8_t) (0xe0 | cp >> 12);
        out[1] = (uint8_t) (0x80 | (cp >> 6 & 0x3f));
        out[2] = (uint8_t) (0x80 | (cp & 0x3f));
        return 3;
    }

    out[0] = (uint8_t) (0xf0 | cp >> 18);
    out[1] = (uint8_t) (0x80 | (cp >> 12 & 0x3f));
    out[2] = (uint8_t) (0x80 | (cp >> 6 & 0x3f));
    out[3] = (uint8_t) (0x80 | (cp & 0x3f));
    return 4;
}


int
voice_json_get(const uint8_t *text,
    const voice_json_tok_t *toks, int obj, const char *key)
{
    int       i;
    uint32_t  k;

    if (obj < 0 || toks[obj].type != VOICE_JSON_OBJECT) {
        return -1;
    }

    i = obj + 1;

    for (k = 0; k < toks[obj].size; k++) {

        if (voice_json_str_eq(text, toks, i, key)) {
            return i + 1;
        }

        i = (int) toks[i + 1].next;
    }

    return -1;
}


int
voice_json_names_plain(const voice_json_tok_t *toks, int obj)
{
    int       i;
    uint32_t  k;

    if (obj < 0 || toks[obj].type != VOICE_JSON_OBJECT) {
        return 0;
    }

    i = obj + 1;

    for (k = 0; k < toks[obj].size; k++) {

        if (toks[i].escaped) {
            return 0;
        }

        i = (int) toks[i + 1].next;
    }

    return 1;
}


int
voice_json_str_eq(const uint8_t *text,
    const voice_json_tok_t *toks, int i, const char *s)
{
    size_t                   n, slen, k;
    uint8_t                  buf[4];
    const uint8_t           *p, *end, *q, *next;
    const voice_json_tok_t  *t;

    if (i < 0 || toks[i].type != VOICE_JSON_STRING) {
        return 0;
    }

    t = &toks[i];
    p = text + t->start;
    end = text + t->end;
    slen = strlen(s);

    if (!t->escaped) {
        return (size_t) (end - p) == slen && memcmp(p, s, slen) == 0;
    }

    /* an escaped string decodes no longer than it is written */
    if (slen > (size_t) (end - p)) {
        return 0;
    }

    k = 0;

    while (p < end) {

        if (*p != '\\') {
            q = memchr(p, '\\', (size_t) (end - p));
            n = (q ? q : end) - p;

            if (n > slen - k || memcmp(p, s + k, n) != 0) {
                return 0;
            }

            p += n;
            k += n;
            continue;
        }

        n = voice_json_escape(p, end, &next, buf);

        if (n == 0 || n > slen - k || memcmp(buf, s + k, n) != 0) {
            return 0;
        }

        p = next;
        k += n;
    }

    return k == slen;
}


size_t
voice_json_unescape(const uint8_t *text,
    const voice_json_tok_t *tok, uint8_t *out, size_t cap)
{
    size_t          n, k;
    uint8_t         buf[4];
    const uint8_t  *p, *end, *q, *next;

    if (tok->type != VOICE_JSON_STRING) {
        return (size_t) -1;
    }

    p = text + tok->start;
    end = text + tok->end;

    if (!tok->escaped) {
        n = (size_t) (end - p);

        if (n > cap) {
            return (size_t) -1;
        }

        if (n) {
            memcpy(out, p, n);
        }

        return n;
    }

    k = 0;

    while (p < end) {

        if (*p != '\\') {
            q = memchr(p, '\\', (size_t) (end - p));
            n = (q ? q : end) - p;

            if (n > cap - k) {
                return (size_t) -1;
            }

            memcpy(out + k, p, n);
            p += n;
            k += n;
            continue;
        }

        n = voice_json_escape(p, end, &next, buf);

        if (n == 0 || n > cap - k) {
            return (size_t) -1;
        }

        memcpy(out + k, buf, n);
        p = next;
        k += n;
    }

    return k;
}


int
voice_json_uint(const uint8_t *text,
    const voice_json_tok_t *tok, uint64_t *v)
{
    unsigned        d;
    uint64_t        n;
    const uint8_t  *p, *end;

    if (tok->type != VOICE_JSON_NUMBER || tok->end <= tok->start) {
        return 0;
    }

    p = text + tok->start;
    end = text + tok->end;
    n = 0;

    for ( /* void */ ; p < end; p++) {

        if (*p < '0' || *p > '9') {
            return 0;
        }

        d = *p - '0';

        if (n > (UINT64_MAX - d) / 10) {
            return 0;
        }

        n = n * 10 + d;
    }

    *v = n;

    return 1;
}


uint8_t *
voice_json_put_str(uint8_t *p, uint8_t *last, const uint8_t *s, size_t len)
{
    size_t   i;
    uint8_t  ch;

    static const char  hex[] = "0123456789abcdef";

    if (p == NULL || last - p < 2) {
        return NULL;
    }

    *p++ = '"';

    for (i = 0; i < len; i++) {
        ch = s[i];

        if (ch >= 0x20 && ch != '"' && ch != '\\') {
            if (p == last) {
                return NULL;
            }

            *p++ = ch;
            continue;
        }

        if (last - p < 6) {
            return NULL;
        }

        *p++ = '\\';

        switch (ch) {

        case '"':
        case '\\':
            *p++ = ch;
            break;

        case '\n':
            *p++ = 'n';
            break;

        case '\r':
            *p++ = 'r';
            break;

        case '\t':
            *p++ = 't';
            break;

        default:
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 0xf];
            break;
        }
    }

    if (p == last) {
        return NULL;
    }

    *p++ = '"';

    return p;
}
