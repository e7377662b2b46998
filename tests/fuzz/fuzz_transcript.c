/*
 * fuzz_transcript.c: libFuzzer target of the transcript store's text
 * rendering and merge (ngx_voice_module/ngx_http_voice_transcript_fmt.c):
 * what GET /api/transcript/{callSid}?format=text serves of a record read
 * from disk, and the one record a call that goes on in a second stream
 * gets.  fuzz_journal.c covers the recovery of a journal.
 *
 * The input is a record as it may lie on disk, and, after its first NUL
 * byte if it has one, a second.  The text of the first must be the same
 * with the least room the header promises (the JSON's length, len / 2 + 2
 * tokens) as with plenty, and one line per entry.  The merge of the two,
 * as they are, must keep to its buffer.  Both are then taken as journals
 * and recovered into records as this module writes them: the merge of
 * those must be a record whose text is the first's followed by the
 * second's.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_voice_transcript_fmt.h"


#define FUZZ_SLOTS  32


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_http_voice_transcript_fmt_slot_t  fuzz_slots[FUZZ_SLOTS];
static voice_json_tok_t
    fuzz_line_toks[NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS];


/* the text of a record with room to spare, in a buffer of its own */

static size_t
fuzz_text(const uint8_t *json, size_t len, uint8_t **text)
{
    size_t                      n, cap;
    voice_json_tok_t  *toks;

    cap = 2 * len + 64;
    *text = malloc(cap);
    toks = malloc((len + 2) * sizeof(voice_json_tok_t));

    if (*text == NULL || toks == NULL) {
        abort();
    }

    n = ngx_http_voice_transcript_fmt_text(json, len, toks,
                                           (unsigned) (len + 2), *text, cap);
    free(toks);

    return n;
}


/* the text of a record: the least room must do, and one line an entry */

static void
fuzz_record(const uint8_t *json, size_t len)
{
    size_t                      n, m, i;
    uint8_t                    *text, *exact;
    voice_json_tok_t  *toks;

    n = fuzz_text(json, len, &text);

    exact = malloc(len ? len : 1);
    toks = malloc((len / 2 + 2) * sizeof(voice_json_tok_t));

    if (exact == NULL || toks == NULL) {
        abort();
    }

    m = ngx_http_voice_transcript_fmt_text(json, len, toks,
                                           (unsigned) (len / 2 + 2), exact,
                                           len);

    if (m != n || (n != (size_t) -1 && (n > len
                                        || memcmp(exact, text, n) != 0)))
    {
        abort();
    }

    if (n != (size_t) -1) {
        for (i = 0; i < n; i++) {
            if (text[i] == '\r' || (text[i] == '\n' && i + 1 < n
                                    && text[i + 1] == '\n'))
            {
                abort();
            }
        }

        if (n > 0 && text[n - 1] != '\n') {
            abort();
        }
    }

    free(toks);
    free(exact);
    free(text);
}


/* a journal's record, as ngx_http_voice_recover.c makes it */

static size_t
fuzz_recover(const uint8_t *journal, size_t len, uint8_t **out)
{
    size_t                                   cap, n;
    ngx_http_voice_transcript_fmt_journal_t  j;

    cap = 2 * len + 2048 + 96 * FUZZ_SLOTS;
    *out = malloc(cap);
    if (*out == NULL) {
        abort();
    }

    memset(&j, 0, sizeof(j));
    j.call_sid = "CA0123456789abcdef0123456789abcdef";
    j.phone = "+14155550123";
    j.time = (const uint8_t *) "2026-11-24T10:15:00.123Z";
    j.reason = "the server stopped";

    n = ngx_http_voice_transcript_fmt_recover(journal, len, &j, fuzz_slots,
                                              FUZZ_SLOTS, fuzz_line_toks,
                                          NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS,
                                              *out, cap);
    if (n == (size_t) -1) {
        abort();
    }

    return n;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t          alen, blen, ra_len, rb_len, n, ta, tb, tm;
    uint8_t        *a, *b, *ra, *rb, *merged, *text_a, *text_b, *text_m;
    const uint8_t  *nul;

    /* each part in a buffer of its own size, so ASan sees a read past it */

    nul = memchr(data, '\0', size);
    alen = nul ? (size_t) (nul - data) : size;
    blen = nul ? size - alen - 1 : 0;

    a = malloc(alen + 1);
    b = malloc(blen + 1);
    if (a == NULL || b == NULL) {
        abort();
    }

    memcpy(a, data, alen);
    memcpy(b, data + size - blen, blen);

    fuzz_record(a, alen);

    /* the merge of whatever lies on disk keeps to its buffer */

    merged = malloc(alen + blen + 16);
    if (merged == NULL) {
        abort();
    }

    n = ngx_http_voice_transcript_fmt_merge(a, alen, b, blen, merged,
                                            alen + blen + 16);
    if (n != (size_t) -1 && n > alen + blen + 16) {
        abort();
    }

    free(merged);

    /* two records this module wrote merge into one, entries in order */

    ra_len = fuzz_recover(a, alen, &ra);
    rb_len = fuzz_recover(b, blen, &rb);

    merged = malloc(ra_len + rb_len + 16);
    if (merged == NULL) {
        abort();
    }

    n = ngx_http_voice_transcript_fmt_merge(ra, ra_len, rb, rb_len, merged,
                                            ra_len + rb_len + 16);
    if (n == (size_t) -1) {
        abort();
    }

    ta = fuzz_text(ra, ra_len, &text_a);
    tb = fuzz_text(rb, rb_len, &text_b);
    tm = fuzz_text(merged, n, &text_m);

    if (ta == (size_t) -1 || tb == (size_t) -1 || tm != ta + tb
        || memcmp(text_m, text_a, ta) != 0
        || memcmp(text_m + ta, text_b, tb) != 0)
    {
        abort();
    }

    fuzz_record(merged, n);

    free(text_a);
    free(text_b);
    free(text_m);
    free(merged);
    free(ra);
    free(rb);
    free(a);
    free(b);

    return 0;
}
