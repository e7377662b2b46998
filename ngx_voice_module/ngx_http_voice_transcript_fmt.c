/*
 * ngx_http_voice_transcript_fmt.c: UTC timestamps and the plain-text
 * rendering of stored transcripts (see ngx_http_voice_transcript_fmt.h).
 *
 * The date arithmetic is done by hand (days to civil date, after Howard
 * Hinnant's algorithm) rather than with gmtime_r(), so the result does not
 * depend on the process's time zone data or locale.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ngx_http_voice_transcript_fmt.h"


static uint8_t *
ngx_http_voice_transcript_fmt_num(uint8_t *p, unsigned v, int width)
{
    int  i;

    for (i = width - 1; i >= 0; i--) {
        p[i] = (uint8_t) ('0' + v % 10);
        v /= 10;
    }

    return p + width;
}


void
ngx_http_voice_transcript_fmt_time(uint64_t ms, uint8_t *out, int file_safe)
{
    int64_t    days, era, z;
    unsigned   doe, yoe, doy, mp, day, month, sec;
    int64_t    year;
    uint8_t   *p;

    days = (int64_t) (ms / 86400000);
    sec = (unsigned) ((ms / 1000) % 86400);

    /* days since 1970-01-01 to a proleptic Gregorian date */
    z = days + 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned) (z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    year = (int64_t) yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    day = doy - (153 * mp + 2) / 5 + 1;
    month = mp < 10 ? mp + 3 : mp - 9;
    year += (month <= 2);

    p = out;
    p = ngx_http_voice_transcript_fmt_num(p, (unsigned) (year % 10000), 4);
    *p++ = '-';
    p = ngx_http_voice_transcript_fmt_num(p, month, 2);
    *p++ = '-';
    p = ngx_http_voice_transcript_fmt_num(p, day, 2);
    *p++ = 'T';
    p = ngx_http_voice_transcript_fmt_num(p, sec / 3600, 2);
    *p++ = file_safe ? '-' : ':';
    p = ngx_http_voice_transcript_fmt_num(p, sec / 60 % 60, 2);
    *p++ = file_safe ? '-' : ':';
    p = ngx_http_voice_transcript_fmt_num(p, sec % 60, 2);
    *p++ = file_safe ? '-' : '.';
    p = ngx_http_voice_transcript_fmt_num(p, (unsigned) (ms % 1000), 3);
    *p = 'Z';
}


/* appends s; 0 when out is full */
static int
ngx_http_voice_transcript_fmt_put(uint8_t *out, size_t cap, size_t *used,
    const void *s, size_t len)
{
    if (cap - *used < len) {
        return 0;
    }

    memcpy(out + *used, s, len);
    *used += len;

    return 1;
}


/* appends string token t unescaped, on one line; 0 when it cannot */
static int
ngx_http_voice_transcript_fmt_str(const uint8_t *json,
    ngx_http_voice_json_tok_t *t, uint8_t *out, size_t cap, size_t *used)
{
    size_t   tlen, i;
    uint8_t  *p;

    tlen = ngx_http_voice_json_unescape(json, t, out + *used, cap - *used);
    if (tlen == (size_t) -1) {
        return 0;
    }

    p = out + *used;
    for (i = 0; i < tlen; i++) {
        if (p[i] == '\n' || p[i] == '\r') {
            p[i] = ' ';
        }
    }

    *used += tlen;

    return 1;
}


#define PUT(s)                                                                \
    if (!ngx_http_voice_transcript_fmt_put(out, cap, &used, s,               \
                                           sizeof(s) - 1))                   \
    {                                                                         \
        return (size_t) -1;                                                   \
    }


/*
 * The plain text form of a stored record: one line per entry,
 *
 *     User: ...
 *     Assistant: ...
 *     Tool: NAME {"arguments": ...} -> OUTPUT
 *     Keypad: 5
 *     Note: OpenAI session 2 took over (...)
 */

size_t
ngx_http_voice_transcript_fmt_text(const uint8_t *json, size_t len,
    ngx_http_voice_json_tok_t *toks, unsigned ntoks, uint8_t *out,
    size_t cap)
{
    int        n, list, item, role, text, name, args, output, digit;
    size_t     used;
    uint32_t   k;

    n = ngx_http_voice_json_parse(json, len, toks, ntoks, NULL);
    if (n < 1 || toks[0].type != NGX_HTTP_VOICE_JSON_OBJECT) {
        return (size_t) -1;
    }

    list = ngx_http_voice_json_get(json, toks, 0, "transcript");
    if (list < 0 || toks[list].type != NGX_HTTP_VOICE_JSON_ARRAY) {
        return (size_t) -1;
    }

    used = 0;
    item = list + 1;

    for (k = 0; k < toks[list].size; k++, item = (int) toks[item].next) {

        if (toks[item].type != NGX_HTTP_VOICE_JSON_OBJECT) {
            return (size_t) -1;
        }

        role = ngx_http_voice_json_get(json, toks, item, "role");

        if (role < 0 || toks[role].type != NGX_HTTP_VOICE_JSON_STRING) {
            return (size_t) -1;
        }

        if (ngx_http_voice_json_str_eq(json, toks, role, "tool")) {
            name = ngx_http_voice_json_get(json, toks, item, "name");
            args = ngx_http_voice_json_get(json, toks, item, "arguments");
            output = ngx_http_voice_json_get(json, toks, item, "output");

            if (name < 0 || args < 0 || output < 0
                || toks[name].type != NGX_HTTP_VOICE_JSON_STRING
                || toks[args].type != NGX_HTTP_VOICE_JSON_OBJECT
                || toks[output].type != NGX_HTTP_VOICE_JSON_STRING)
            {
                return (size_t) -1;
            }

            PUT("Tool: ");

            if (!ngx_http_voice_transcript_fmt_str(json, &toks[name], out,
                                                   cap, &used))
            {
                return (size_t) -1;
            }

            PUT(" ");

            /* the arguments as stored: compact JSON, one line */
            if (!ngx_http_voice_transcript_fmt_put(out, cap, &used,
                                       json + toks[args].start,
                                       toks[args].end - toks[args].start))
            {
                return (size_t) -1;
            }

            PUT(" -> ");

            if (!ngx_http_voice_transcript_fmt_str(json, &toks[output], out,
                                                   cap, &used))
            {
                return (size_t) -1;
            }

            PUT("\n");
            continue;
        }

        if (ngx_http_voice_json_str_eq(json, toks, role, "dtmf")) {
            digit = ngx_http_voice_json_get(json, toks, item, "digit");

            if (digit < 0 || toks[digit].type != NGX_HTTP_VOICE_JSON_STRING) {
                return (size_t) -1;
            }

            PUT("Keypad: ");

            if (!ngx_http_voice_transcript_fmt_str(json, &toks[digit], out,
                                                   cap, &used))
            {
                return (size_t) -1;
            }

            PUT("\n");
            continue;
        }

        text = ngx_http_voice_json_get(json, toks, item, "text");

        if (text < 0 || toks[text].type != NGX_HTTP_VOICE_JSON_STRING) {
            return (size_t) -1;
        }

        if (ngx_http_voice_json_str_eq(json, toks, role, "user")) {
            PUT("User: ");

        } else if (ngx_http_voice_json_str_eq(json, toks, role, "assistant")) {
            PUT("Assistant: ");

        } else if (ngx_http_voice_json_str_eq(json, toks, role, "note")) {
            PUT("Note: ");

        } else {
            return (size_t) -1;
        }

        if (!ngx_http_voice_transcript_fmt_str(json, &toks[text], out, cap,
                                               &used))
        {
            return (size_t) -1;
        }

        PUT("\n");
    }

    return used;
}


/*
 * Where the entries start: just after the "transcript" member's '['.  The
 * key with a space after its colon is only ever written by the record
 * renderer, first at the top level: tool arguments are compact JSON, and
 * a string value cannot hold an unescaped quote.
 */

static const uint8_t *
ngx_http_voice_transcript_fmt_entries(const uint8_t *doc, size_t len)
{
    size_t  i;

    static const char  key[] = "\n  \"transcript\": [";

    if (len < sizeof(key) - 1 || doc[0] != '{') {
        return NULL;
    }

    for (i = 0; i + sizeof(key) - 1 <= len; i++) {
        if (memcmp(doc + i, key, sizeof(key) - 1) == 0) {
            return doc + i + sizeof(key) - 1;
        }
    }

    return NULL;
}


static int
ngx_http_voice_transcript_fmt_space(uint8_t c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}


size_t
ngx_http_voice_transcript_fmt_merge(const uint8_t *prev, size_t prev_len,
    const uint8_t *next, size_t next_len, uint8_t *out, size_t cap)
{
    size_t          head, n;
    uint8_t        *p;
    const uint8_t  *ps, *pe, *ns, *ne;

    ps = ngx_http_voice_transcript_fmt_entries(prev, prev_len);
    ns = ngx_http_voice_transcript_fmt_entries(next, next_len);

    if (ps == NULL || ns == NULL || cap < prev_len + next_len + 16) {
        return (size_t) -1;
    }

    /* prev's entries: up to the array's closing bracket, trimmed */

    pe = prev + prev_len;

    while (pe > ps && pe[-1] != ']') {
        pe--;
    }

    if (pe == ps) {
        return (size_t) -1;
    }

    pe--;

    while (ps < pe && ngx_http_voice_transcript_fmt_space(*ps)) {
        ps++;
    }

    while (pe > ps && ngx_http_voice_transcript_fmt_space(pe[-1])) {
        pe--;
    }

    /* does next have entries of its own? */

    ne = ns;

    while (ne < next + next_len && ngx_http_voice_transcript_fmt_space(*ne)) {
        ne++;
    }

    if (ne == next + next_len) {
        return (size_t) -1;
    }

    head = (size_t) (ns - next);
    p = out;

    memcpy(p, next, head);
    p += head;

    if (pe > ps) {
        n = (size_t) (pe - ps);

        memcpy(p, "\n    ", 5);
        p += 5;
        memcpy(p, ps, n);
        p += n;

        if (*ne == ']') {
            memcpy(p, "\n  ", 3);
            p += 3;

        } else {
            *p++ = ',';
        }
    }

    memcpy(p, ns, next_len - head);
    p += next_len - head;

    return (size_t) (p - out);
}
