/*
 * ngx_http_voice_transcript_fmt.h: formats of the transcript store that
 * need no nginx: UTC timestamps (ISO 8601, and the file-name-safe form),
 * the plain-text rendering of a stored transcript, and the merge of a
 * call's two records into one.
 *
 * Leaf code (libc only, on ngx_http_voice_json.c), unit tested outside
 * nginx; ngx_http_voice_transcript.c calls it, from the event loop and
 * from its thread-pool tasks (every function here is reentrant).
 */

#ifndef NGX_HTTP_VOICE_TRANSCRIPT_FMT_H
#define NGX_HTTP_VOICE_TRANSCRIPT_FMT_H

#include <stddef.h>
#include <stdint.h>

#include "ngx_http_voice_json.h"


/* "2026-11-24T10:15:00.123Z": 24 characters, no NUL */
#define NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN   24


/*
 * Writes ms (milliseconds since the Unix epoch) as UTC into out
 * (NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN bytes).  file_safe uses '-' instead
 * of ':' and '.', as in "2026-11-24T10-15-00-123Z", which every file
 * system accepts.
 */
void ngx_http_voice_transcript_fmt_time(uint64_t ms, uint8_t *out,
    int file_safe);

/*
 * Renders a stored transcript ({"transcript": [{"role", "text"}, ...]})
 * as text: one line per utterance, "User: ..." or "Assistant: ...", with
 * line breaks inside an utterance turned into spaces.  toks has ntoks
 * entries (len / 2 + 2 always suffice); out has cap bytes (len always
 * suffices: the text is never longer than the JSON it comes from).
 * Returns the text's length, or (size_t) -1 if the JSON is not a
 * transcript.
 */
size_t ngx_http_voice_transcript_fmt_text(const uint8_t *json, size_t len,
    ngx_http_voice_json_tok_t *toks, unsigned ntoks, uint8_t *out,
    size_t cap);

/*
 * One record for a call that goes on in a second stream (back from a
 * transfer nobody answered): the entries of the earlier document (prev)
 * come first, then those of the new one (next), whose other members --
 * the call's outcome -- win.  Both are documents this module wrote.  out
 * has cap bytes (prev_len + next_len + 16 suffice).  Returns the merged
 * length, or (size_t) -1 when either is not such a document.
 */
size_t ngx_http_voice_transcript_fmt_merge(const uint8_t *prev,
    size_t prev_len, const uint8_t *next, size_t next_len, uint8_t *out,
    size_t cap);


#endif /* NGX_HTTP_VOICE_TRANSCRIPT_FMT_H */
