/*
 * bd_form.c: percent-encoding into a bounded buffer.
 *
 * Twilio numbers are E.164 ("+14155550123"): in a form body a raw "+"
 * decodes to a space, which Twilio rejects as an invalid number (21211),
 * so nothing outside the unreserved set is ever sent raw.
 */

#include <stddef.h>
#include <string.h>

#include "bd_form.h"


static const char  bd_form_hex[] = "0123456789ABCDEF";


void
bd_form_init(bd_form_t *f, char *buf, size_t size)
{
    f->start = buf;
    f->len = 0;
    f->size = size;
    f->failed = (size == 0);
    f->params = 0;

    if (size) {
        buf[0] = '\0';
    }
}


void
bd_form_raw(bd_form_t *f, const char *s, size_t len)
{
    /* one byte always stays free for the NUL */

    if (f->failed || f->size - f->len <= len) {
        f->failed = 1;
        return;
    }

    memcpy(f->start + f->len, s, len);
    f->len += len;
    f->start[f->len] = '\0';
}


static int
bd_form_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9')
           || c == '-' || c == '.' || c == '_' || c == '~';
}


void
bd_form_escape(bd_form_t *f, const char *s, size_t len)
{
    char                 *p;
    size_t                i, need;
    const unsigned char  *u;

    if (f->failed) {
        return;
    }

    u = (const unsigned char *) s;
    need = 0;

    for (i = 0; i < len; i++) {
        need += bd_form_unreserved(u[i]) ? 1 : 3;
    }

    if (f->size - f->len <= need) {
        f->failed = 1;
        return;
    }

    p = f->start + f->len;

    for (i = 0; i < len; i++) {
        if (bd_form_unreserved(u[i])) {
            *p++ = (char) u[i];
            continue;
        }

        *p++ = '%';
        *p++ = bd_form_hex[u[i] >> 4];
        *p++ = bd_form_hex[u[i] & 0xf];
    }

    f->len += need;
    f->start[f->len] = '\0';
}


void
bd_form_param(bd_form_t *f, const char *name, const char *value, size_t len)
{
    if (f->params++) {
        bd_form_raw(f, "&", 1);
    }

    bd_form_escape(f, name, strlen(name));
    bd_form_raw(f, "=", 1);
    bd_form_escape(f, value, len);
}


int
bd_form_done(bd_form_t *f)
{
    return !f->failed;
}
