/*
 * bd_jscan.c: the flat scan of bd_jscan.h.
 *
 * One pass, left to right.  It declines (-1) rather than guess: an escape
 * in a member it was asked for, a \u escape or one JSON does not have
 * anywhere, a nested object or array, a control character in a string, a
 * malformed literal or number, or anything after the closing brace.
 * Other escapes in members nobody asked for are skipped over, since only
 * their end matters.  tests/fuzz/fuzz_jscan.c checks, against cJSON, that
 * whatever it accepts means what a full parse means.
 */

#include <stddef.h>
#include <string.h>

#include "bd_jscan.h"


static const char *
bd_jscan_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }

    return p;
}


/*
 * A string starting after its opening quote: returns the closing quote,
 * or NULL.  *escaped tells whether it holds an escape.
 */

static const char *
bd_jscan_string(const char *p, const char *end, int *escaped)
{
    *escaped = 0;

    while (p < end) {
        if (*p == '"') {
            return p;
        }

        if ((unsigned char) *p < 0x20) {
            return NULL;
        }

        if (*p == '\\') {
            *escaped = 1;
            p++;

            /* the escapes JSON has, but \u: cJSON refuses some of those
             * (lone surrogates), and declining them all is simpler */

            if (p == end || *p == '\0'
                || strchr("\"\\/bfnrt", *p) == NULL)
            {
                return NULL;
            }
        }

        p++;
    }

    return NULL;
}


static const char *
bd_jscan_digits(const char *p, const char *end)
{
    const char  *s;

    s = p;

    while (p < end && *p >= '0' && *p <= '9') {
        p++;
    }

    return (p > s) ? p : NULL;
}


/*
 * A number (RFC 8259's grammar, exactly: a scan that accepted more than a
 * full parser would change what an event means), true, false or null:
 * returns what follows it, or NULL.
 */

static const char *
bd_jscan_scalar(const char *p, const char *end)
{
    size_t               n, i;
    static const char   *words[] = { "true", "false", "null" };

    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        n = strlen(words[i]);

        if ((size_t) (end - p) >= n && memcmp(p, words[i], n) == 0) {
            return p + n;
        }
    }

    if (p < end && *p == '-') {
        p++;
    }

    if (p < end && *p == '0') {
        p++;

    } else if (p < end && *p >= '1' && *p <= '9') {
        p = bd_jscan_digits(p, end);

    } else {
        return NULL;
    }

    if (p < end && *p == '.') {
        p = bd_jscan_digits(p + 1, end);
        if (p == NULL) {
            return NULL;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        p = bd_jscan_digits(p, end);
    }

    return p;
}


int
bd_jscan_flat(const char *json, size_t len, bd_jscan_field_t *f, size_t n)
{
    int                  escaped;
    size_t               i, klen;
    const char          *p, *end, *key, *q;
    unsigned long long   seen;      /* the members met, strings or not */

    if (n > 64) {
        return -1;
    }

    seen = 0;

    for (i = 0; i < n; i++) {
        f[i].val = NULL;
        f[i].len = 0;
    }

    p = json;
    end = json + len;

    p = bd_jscan_ws(p, end);
    if (p == end || *p++ != '{') {
        return -1;
    }

    p = bd_jscan_ws(p, end);

    if (p < end && *p == '}') {
        p++;
        goto done;
    }

    for ( ;; ) {

        /* the member's name */

        if (p == end || *p++ != '"') {
            return -1;
        }

        key = p;
        p = bd_jscan_string(p, end, &escaped);
        if (p == NULL || escaped) {
            return -1;
        }

        klen = (size_t) (p - key);
        p = bd_jscan_ws(p + 1, end);

        if (p == end || *p++ != ':') {
            return -1;
        }

        p = bd_jscan_ws(p, end);
        if (p == end) {
            return -1;
        }

        /* its value */

        q = NULL;
        escaped = 0;

        if (*p == '"') {
            q = bd_jscan_string(p + 1, end, &escaped);
            if (q == NULL) {
                return -1;
            }
        }

        for (i = 0; i < n; i++) {
            if ((seen & (1ULL << i))
                || strlen(f[i].name) != klen
                || memcmp(f[i].name, key, klen) != 0)
            {
                continue;
            }

            seen |= 1ULL << i;

            if (q != NULL) {
                if (escaped) {
                    return -1;
                }

                f[i].val = p + 1;
                f[i].len = (size_t) (q - p - 1);
            }
        }

        if (q != NULL) {
            p = q + 1;

        } else if (*p == '{' || *p == '[') {
            return -1;

        } else {
            p = bd_jscan_scalar(p, end);
            if (p == NULL) {
                return -1;
            }
        }

        p = bd_jscan_ws(p, end);
        if (p == end) {
            return -1;
        }

        if (*p == '}') {
            p++;
            break;
        }

        if (*p++ != ',') {
            return -1;
        }

        p = bd_jscan_ws(p, end);
    }

done:

    p = bd_jscan_ws(p, end);

    return (p == end) ? 0 : -1;
}
