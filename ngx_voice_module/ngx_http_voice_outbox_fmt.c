/*
 * ngx_http_voice_outbox_fmt.c: the outbox entries' names and contents,
 * and the post-call webhook's backoff (see the header for the format).
 * Leaf code: libc only.
 */

#include <stdio.h>
#include <string.h>

#include "ngx_http_voice_outbox_fmt.h"


#define NGX_HTTP_VOICE_OUTBOX_MAGIC  "voice-webhook 1\nurl "
#define NGX_HTTP_VOICE_OUTBOX_EXT    ".hook"


static int
ngx_http_voice_outbox_fmt_alnum(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
           || (c >= 'A' && c <= 'Z');
}


size_t
ngx_http_voice_outbox_fmt_name(uint8_t *out, const uint8_t *sid,
    size_t sid_len, uint64_t made)
{
    size_t  i;
    int     n;

    if (sid_len == 0 || sid_len > NGX_HTTP_VOICE_OUTBOX_SID_MAX) {
        return 0;
    }

    for (i = 0; i < sid_len; i++) {
        if (!ngx_http_voice_outbox_fmt_alnum(sid[i])) {
            return 0;
        }
    }

    n = snprintf((char *) out, NGX_HTTP_VOICE_OUTBOX_NAME_MAX,
                 "%.*s.%llu" NGX_HTTP_VOICE_OUTBOX_EXT, (int) sid_len,
                 (const char *) sid, (unsigned long long) made);

    return (n > 0 && n < NGX_HTTP_VOICE_OUTBOX_NAME_MAX) ? (size_t) n : 0;
}


int
ngx_http_voice_outbox_fmt_parse_name(const uint8_t *name, size_t len,
    size_t *sid_len, uint64_t *made)
{
    size_t    i, ext, digits;
    uint64_t  t;

    ext = sizeof(NGX_HTTP_VOICE_OUTBOX_EXT) - 1;

    if (len <= ext
        || memcmp(name + len - ext, NGX_HTTP_VOICE_OUTBOX_EXT, ext) != 0)
    {
        return 0;
    }

    len -= ext;

    for (i = 0; i < len && ngx_http_voice_outbox_fmt_alnum(name[i]); i++) {
        /* the SID */
    }

    if (i == 0 || i > NGX_HTTP_VOICE_OUTBOX_SID_MAX || i == len
        || name[i] != '.')
    {
        return 0;
    }

    *sid_len = i;
    t = 0;

    for (i++, digits = 0; i < len; i++, digits++) {
        if (name[i] < '0' || name[i] > '9' || digits == 19) {
            return 0;
        }

        t = t * 10 + (name[i] - '0');
    }

    if (digits == 0) {
        return 0;
    }

    *made = t;

    return 1;
}


size_t
ngx_http_voice_outbox_fmt_header(uint8_t *out, const uint8_t *url,
    size_t url_len)
{
    size_t  i, n;

    if (url_len == 0 || url_len > NGX_HTTP_VOICE_OUTBOX_URL_MAX) {
        return 0;
    }

    for (i = 0; i < url_len; i++) {
        if (url[i] < 0x20 || url[i] == 0x7f) {
            return 0;
        }
    }

    n = sizeof(NGX_HTTP_VOICE_OUTBOX_MAGIC) - 1;

    memcpy(out, NGX_HTTP_VOICE_OUTBOX_MAGIC, n);
    memcpy(out + n, url, url_len);
    n += url_len;
    out[n++] = '\n';
    out[n++] = '\n';

    return n;
}


int
ngx_http_voice_outbox_fmt_parse(const uint8_t *data, size_t len,
    const uint8_t **url, size_t *url_len, const uint8_t **body,
    size_t *body_len)
{
    size_t          n;
    const uint8_t  *p, *end, *nl;

    n = sizeof(NGX_HTTP_VOICE_OUTBOX_MAGIC) - 1;

    if (len < n || memcmp(data, NGX_HTTP_VOICE_OUTBOX_MAGIC, n) != 0) {
        return 0;
    }

    p = data + n;
    end = data + len;

    nl = memchr(p, '\n', (size_t) (end - p));

    /* a URL, its newline, the empty line, and a body: a torn file has
     * none of the last */

    if (nl == NULL || nl == p || (size_t) (nl - p)
                                 > NGX_HTTP_VOICE_OUTBOX_URL_MAX
        || end - nl < 3 || nl[1] != '\n')
    {
        return 0;
    }

    *url = p;
    *url_len = (size_t) (nl - p);
    *body = nl + 2;
    *body_len = (size_t) (end - (nl + 2));

    return 1;
}


uint64_t
ngx_http_voice_outbox_fmt_next(uint64_t made, uint64_t now, uint64_t retry,
    uint32_t rnd)
{
    uint64_t  age, delay, last;

    age = (now > made) ? now - made : 0;
    last = made + retry;

    if (age >= retry) {
        return 0;
    }

    delay = age;

    if (delay < NGX_HTTP_VOICE_OUTBOX_BACKOFF_MIN) {
        delay = NGX_HTTP_VOICE_OUTBOX_BACKOFF_MIN;
    }

    if (delay > NGX_HTTP_VOICE_OUTBOX_BACKOFF_MAX) {
        delay = NGX_HTTP_VOICE_OUTBOX_BACKOFF_MAX;
    }

    /* three quarters of it, and up to half more: many entries that
     * failed together do not come back together */

    delay = delay * 3 / 4 + rnd % (delay / 2 + 1);

    return (now + delay < last) ? now + delay : last;
}
