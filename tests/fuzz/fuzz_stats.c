/*
 * fuzz_stats.c: libFuzzer target of bridged's counters and their
 * Prometheus text (bridged/bd_stats.c), whose label values come from
 * outside: an OpenAI error code, a tool name the model chose.
 *
 * The input is a list of label values, one a line; the first byte of
 * each says which counter it goes to.  Whatever they are, the text must
 * fit BD_STATS_MAX and never be cut, every line must be a sample whose
 * label values are closed and escaped as the text format wants (no raw
 * newline or quote), and it must be valid UTF-8 whenever the values were:
 * one bad line fails a Prometheus server's whole scrape.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bd_stats.h"
#include "voice_ws.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static char  fuzz_text[BD_STATS_MAX];


/* one sample line: name{label="value",...} number, values escaped */

static void
fuzz_line(const char *p, const char *end)
{
    int  quoted;

    while (p < end && *p != '{' && *p != ' ') {
        if (!((*p >= 'a' && *p <= 'z') || *p == '_')) {
            abort();
        }

        p++;
    }

    quoted = 0;

    if (p < end && *p == '{') {
        for (p++; p < end && (quoted || *p != '}'); p++) {
            if (*p == '\\') {
                if (!quoted || p + 1 == end
                    || (p[1] != '\\' && p[1] != '"' && p[1] != 'n'))
                {
                    abort();
                }

                p++;

            } else if (*p == '"') {
                quoted = !quoted;
            }
        }

        if (p == end || quoted) {
            abort();
        }

        p++;
    }

    if (p == end || *p != ' ' || p + 1 == end) {
        abort();
    }

    for (p++; p < end; p++) {
        if (!((*p >= '0' && *p <= '9') || *p == '.')) {
            abort();
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          utf8;
    char        *value;
    size_t       i, start, len, n;
    const char  *p, *nl;

    bd_stats_reset();

    value = malloc(size + 1);
    if (value == NULL) {
        abort();
    }

    utf8 = 1;

    for (start = 0; start < size; start = i + 1) {
        for (i = start; i < size && data[i] != '\n'; i++) {
            /* void */
        }

        len = i - start;
        if (len == 0) {
            continue;
        }

        /* the value as it comes, a C string: up to a NUL */
        memcpy(value, data + start + 1, len - 1);
        value[len - 1] = '\0';

        utf8 = utf8 && voice_ws_utf8_valid((uint8_t *) value,
                                           strlen(value));

        switch (data[start] % 4) {
        case 0:
            bd_stats_openai_error(value);
            break;
        case 1:
            bd_stats_tool(value, data[start] & 4);
            break;
        case 2:
            bd_stats_twilio((long) strtol(value, NULL, 10),
                            (uint64_t) len * 99991);
            break;
        default:
            bd_stats_openai_session(data[start] & 4);
            bd_stats_refused();
        }
    }

    free(value);

    n = bd_stats_render(fuzz_text, sizeof(fuzz_text), (unsigned) size);

    if (n == 0 || n >= sizeof(fuzz_text) || fuzz_text[n - 1] != '\n'
        || memchr(fuzz_text, '\0', n) != NULL
        || (utf8 && !voice_ws_utf8_valid((uint8_t *) fuzz_text, n)))
    {
        abort();
    }

    for (p = fuzz_text; p < fuzz_text + n; p = nl + 1) {
        nl = memchr(p, '\n', (size_t) (fuzz_text + n - p));
        fuzz_line(p, nl);
    }

    return 0;
}
