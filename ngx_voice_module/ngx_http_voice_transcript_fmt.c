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


size_t
ngx_http_voice_transcript_fmt_text(const uint8_t *json, size_t len,
    ngx_http_voice_json_tok_t *toks, unsigned ntoks, uint8_t *out,
    size_t cap)
{
    int        n, list, item, role, text;
    size_t     used, tlen, i;
    uint8_t   *p;
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
        text = ngx_http_voice_json_get(json, toks, item, "text");

        if (role < 0 || text < 0
            || toks[role].type != NGX_HTTP_VOICE_JSON_STRING
            || toks[text].type != NGX_HTTP_VOICE_JSON_STRING)
        {
            return (size_t) -1;
        }

        if (ngx_http_voice_json_str_eq(json, toks, role, "user")) {
            if (cap - used < sizeof("User: ") - 1) {
                return (size_t) -1;
            }
            memcpy(out + used, "User: ", sizeof("User: ") - 1);
            used += sizeof("User: ") - 1;

        } else if (ngx_http_voice_json_str_eq(json, toks, role, "assistant")) {
            if (cap - used < sizeof("Assistant: ") - 1) {
                return (size_t) -1;
            }
            memcpy(out + used, "Assistant: ", sizeof("Assistant: ") - 1);
            used += sizeof("Assistant: ") - 1;

        } else {
            return (size_t) -1;
        }

        tlen = ngx_http_voice_json_unescape(json, &toks[text], out + used,
                                            cap - used);
        if (tlen == (size_t) -1 || cap - used - tlen < 1) {
            return (size_t) -1;
        }

        /* one line per utterance */
        p = out + used;
        for (i = 0; i < tlen; i++) {
            if (p[i] == '\n' || p[i] == '\r') {
                p[i] = ' ';
            }
        }

        used += tlen;
        out[used++] = '\n';
    }

    return used;
}
