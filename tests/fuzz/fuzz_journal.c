/*
 * fuzz_journal.c: libFuzzer target of the journal recovery of
 * ngx_voice_module's transcript store (ngx_http_voice_transcript_fmt.c).
 *
 * The input is a journal as a crash may leave it.  With the room the
 * header promises, the record must always be made, must be JSON that the
 * tokenizer accepts and the text rendering takes, and must count every
 * line that is not blank as kept or left out; with one byte less of room
 * it must be refused without writing past it.  The input's first line
 * is also tried as a journal's name.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_voice_transcript_fmt.h"


#define FUZZ_SLOTS  64


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_http_voice_transcript_fmt_slot_t  fuzz_slots[FUZZ_SLOTS];
static voice_json_tok_t
    fuzz_toks[NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS];


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                                   cap, n, m, lines, i, p, plen;
    uint8_t                                 *out, *text, iso[32];
    const uint8_t                           *nl;
    voice_json_tok_t                        *toks;
    ngx_http_voice_transcript_fmt_journal_t  j;

    nl = memchr(data, '\n', size);
    if (ngx_http_voice_transcript_fmt_name(data, nl ? (size_t) (nl - data)
                                                    : size,
                                           &p, &plen, iso))
    {
        if (plen == 0 || p + plen > size || iso[13] != ':') {
            abort();
        }
    }

    lines = 1;
    for (i = 0; i < size; i++) {
        lines += (data[i] == '\n');
    }

    cap = 2 * size + 2048 + 96 * FUZZ_SLOTS;
    out = malloc(cap);
    if (out == NULL) {
        return 0;
    }

    memset(&j, 0, sizeof(j));
    j.call_sid = "CA0123456789abcdef0123456789abcdef";
    j.phone = "+14155550123";
    j.time = (const uint8_t *) "2026-11-24T10:15:00.123Z";
    j.reason = "the server stopped";

    n = ngx_http_voice_transcript_fmt_recover(data, size, &j, fuzz_slots,
                                              FUZZ_SLOTS, fuzz_toks,
                                          NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS,
                                              out, cap);
    if (n == (size_t) -1 || n > cap
        || j.entries + j.dropped + (j.header ? 1 : 0) > lines
        || j.entries > FUZZ_SLOTS)
    {
        abort();
    }

    toks = malloc((n / 2 + 2) * sizeof(voice_json_tok_t));
    text = malloc(n + 1);

    if (toks && text) {
        if (voice_json_parse(out, n, toks, (unsigned) (n / 2 + 2),
                             NULL) < 1
   || ngx_http_voice_transcript_fmt_text(out, n, toks,
                                         (unsigned) (n / 2 + 2),
                                         text, n + 1)
      == (size_t) -1)
        {
            abort();
        }
    }

    free(toks);
    free(text);

    /* one byte less: refused, and the byte past it untouched */
    out[n - 1] ^= 0x5a;
    m = out[n - 1];

    if (ngx_http_voice_transcript_fmt_recover(data, size, &j, fuzz_slots,
                                              FUZZ_SLOTS, fuzz_toks,
                                          NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS,
                                              out, n - 1)
        != (size_t) -1
        || out[n - 1] != m)
    {
        abort();
    }

    free(out);

    return 0;
}
