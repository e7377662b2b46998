/*
 * fuzz_outbox.c: libFuzzer target of the post-call webhook's outbox
 * readers (ngx_voice_module/ngx_http_voice_outbox_fmt.c): an entry's file
 * name and its contents, as they are found on disk at a start, possibly
 * torn or put there by someone else.
 *
 * The input is read both as a file's contents and as its name.  An entry
 * read must point inside the file, with a URL on one line and the body
 * after the empty line; a name read must give back, written again, the
 * very name.  The header and the name this module writes of any URL or
 * SID the input holds must read back as them; the retry schedule must
 * stay between now and the last attempt.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_voice_outbox_fmt.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static uint8_t  fuzz_header[NGX_HTTP_VOICE_OUTBOX_HEADER_MAX];


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t          url_len, body_len, sid_len, n, i;
    uint8_t        *entry, name[NGX_HTTP_VOICE_OUTBOX_NAME_MAX];
    uint64_t        made, now, retry, next;
    const uint8_t  *url, *body, *u, *b;

    if (ngx_http_voice_outbox_fmt_parse(data, size, &url, &url_len, &body,
                                        &body_len))
    {
        if (url < data || url_len == 0 || url + url_len + 2 > body
            || body + body_len != data + size || body_len == 0
            || memchr(url, '\n', url_len) != NULL)
        {
            abort();
        }
    }

    if (ngx_http_voice_outbox_fmt_parse_name(data, size, &sid_len, &made)) {
        n = ngx_http_voice_outbox_fmt_name(name, data, sid_len, made);

        /* "007" is read as 7: the same entry, not the same name */
        if (n == 0 || (data[sid_len + 1] != '0'
                       && (n != size || memcmp(name, data, n) != 0)))
        {
            abort();
        }
    }

    /* what this module writes reads back */

    n = ngx_http_voice_outbox_fmt_header(fuzz_header, data, size);

    if (n != 0) {
        entry = malloc(n + 3);
        if (entry == NULL) {
            abort();
        }

        memcpy(entry, fuzz_header, n);
        memcpy(entry + n, "{}\n", 3);

        if (!ngx_http_voice_outbox_fmt_parse(entry, n + 3, &u, &url_len,
                                             &b, &body_len)
            || url_len != size || memcmp(u, data, size) != 0
            || body_len != 3)
        {
            abort();
        }

        free(entry);
    }

    made = 0;
    for (i = 0; i < size && i < 8; i++) {
        made = made << 8 | data[i];
    }

    made &= (1ULL << 50) - 1;       /* a time in ms, for 35000 years */

    n = ngx_http_voice_outbox_fmt_name(name, data, size > 64 ? 64 : size,
                                       made);
    if (n != 0) {
        if (n >= NGX_HTTP_VOICE_OUTBOX_NAME_MAX || name[n] != '\0'
            || !ngx_http_voice_outbox_fmt_parse_name(name, n, &sid_len,
                                                     &now)
            || now != made)
        {
            abort();
        }
    }

    /* the schedule: after now, never past the last attempt */

    now = made + (size > 8 ? data[8] : 0) * 1000ULL * (size & 0xff);
    retry = 3600000ULL * (1 + size % 48);
    next = ngx_http_voice_outbox_fmt_next(made, now, retry,
                                          (uint32_t) size * 2654435761U);

    if (now - made >= retry ? next != 0
        : (next <= now || next > made + retry))
    {
        abort();
    }

    return 0;
}
