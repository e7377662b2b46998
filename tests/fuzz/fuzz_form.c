/*
 * fuzz_form.c: libFuzzer target of bridged's form and URL builder
 * (bridged/bd_form.c), which writes what an API client gave nginx (a
 * phone number, a call SID) into the URLs and bodies sent to Twilio.
 *
 * The input is a value, and its first byte the room the buffer has.  The
 * builder must keep to that room, fail for good once it overflowed, and
 * otherwise write the value so that percent-decoding gives it back with
 * nothing outside the unreserved set left raw: a '+' that reached Twilio
 * raw would be a space, an '&' a parameter of its own.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bd_form.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static int
fuzz_hex(char c)
{
    return (c >= '0' && c <= '9') ? c - '0'
           : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
}


/* percent-decodes s[0..len) in place; its length, or -1 when it is not
 * strictly encoded */

static long
fuzz_decode(char *s, size_t len)
{
    int     h, l;
    size_t  i, n;

    for (i = 0, n = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len) {
                return -1;
            }

            h = fuzz_hex(s[i + 1]);
            l = fuzz_hex(s[i + 2]);

            if (h < 0 || l < 0) {
                return -1;
            }

            s[n++] = (char) (h << 4 | l);
            i += 2;
            continue;
        }

        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'
              || s[i] == '_' || s[i] == '~'))
        {
            return -1;
        }

        s[n++] = s[i];
    }

    return (long) n;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long        n;
    char       *buf;
    size_t      room, len;
    bd_form_t   f;

    if (size == 0) {
        return 0;
    }

    room = data[0] * 4;
    len = size - 1;

    /* room + 1: the byte past it must stay as it was */
    buf = malloc(room + 1);
    if (buf == NULL) {
        abort();
    }

    memset(buf, 'x', room + 1);

    bd_form_init(&f, buf, room);
    bd_form_raw(&f, "To=", 3);
    bd_form_escape(&f, (const char *) data + 1, len);

    if (buf[room] != 'x' || f.len >= room + (room == 0)) {
        abort();
    }

    if (!bd_form_done(&f)) {

        /* failed: stays failed, whatever fits after */
        bd_form_raw(&f, "", 0);
        bd_form_param(&f, "a", "b", 1);

        if (bd_form_done(&f) || buf[room] != 'x') {
            abort();
        }

        free(buf);
        return 0;
    }

    if (buf[f.len] != '\0' || strlen(buf) != f.len
        || memcmp(buf, "To=", 3) != 0)
    {
        abort();
    }

    n = fuzz_decode(buf + 3, f.len - 3);

    if (n != (long) len || memcmp(buf + 3, data + 1, len) != 0) {
        abort();
    }

    free(buf);

    return 0;
}
