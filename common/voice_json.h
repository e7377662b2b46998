/*
 * voice_json.h: a strict, allocation-free JSON tokenizer, and the string
 * writer that goes with it, shared by the nginx module, bridged and the
 * benchmark tools.
 *
 * Leaf code (libc only).  The tokenizer turns one JSON text into a flat
 * array of tokens in document order, in the caller's storage, and
 * validates the whole text against RFC 8259 on the way (no trailing
 * garbage, no control characters in strings, valid escapes, valid UTF-8,
 * bounded depth).  Values are views into the text; strings with escapes
 * are decoded on demand with voice_json_unescape().  The writer appends
 * literal text and quoted, escaped strings to a bounded buffer.
 *
 * Used for Twilio's media events (ngx_http_voice_twilio.c), the REST
 * request bodies (ngx_http_voice_body.c), stored transcripts, OpenAI's
 * audio deltas (bridged/bd_oai_event.c) and the benchmark tools' reading
 * of the events they receive.
 */

#ifndef VOICE_JSON_H
#define VOICE_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>


#define VOICE_JSON_OBJECT   1
#define VOICE_JSON_ARRAY    2
#define VOICE_JSON_STRING   3
#define VOICE_JSON_NUMBER   4
#define VOICE_JSON_TRUE     5
#define VOICE_JSON_FALSE    6
#define VOICE_JSON_NULL     7

#define VOICE_JSON_MAX_DEPTH  16


/*
 * One token.  For an object, size is the number of members and the
 * member tokens follow as key, value, key, value...; for an array, size is
 * the number of elements.  next is the index of the token after this one's
 * whole subtree, so siblings are walked without recursion.  A string's
 * start/end exclude the quotes.
 */
typedef struct {
    uint8_t    type;
    uint8_t    escaped;   /* string holds a backslash escape */
    uint32_t   start;     /* byte offsets into the text */
    uint32_t   end;
    uint32_t   size;
    uint32_t   next;
} voice_json_tok_t;


/* voice_json_parse() errors (negative) */
#define VOICE_JSON_EINVAL   -1   /* not valid JSON */
#define VOICE_JSON_ENOMEM   -2   /* more tokens than ntoks */
#define VOICE_JSON_EDEPTH   -3   /* nested deeper than max */


/*
 * Tokenizes text[0..len).  Returns the number of tokens (>= 1) or a
 * negative error; *err, when not NULL, gets a static reason on error.
 */
int voice_json_parse(const uint8_t *text, size_t len,
    voice_json_tok_t *toks, unsigned ntoks, const char **err);

/*
 * In the object at token index obj, finds the member named key (compared
 * after unescaping) and returns its value's token index, or -1.  The first
 * match wins.
 */
int voice_json_get(const uint8_t *text,
    const voice_json_tok_t *toks, int obj, const char *key);

/*
 * 1 when no member name of the object at token index obj holds an escape,
 * 0 otherwise (or when obj is no object).  bridged reads a member without
 * cJSON only then: cJSON ends a name at an escaped NUL, this tokenizer
 * does not, and the two must find the same members.
 */
int voice_json_names_plain(const voice_json_tok_t *toks, int obj);

/* 1 when string token i equals s (compared after unescaping) */
int voice_json_str_eq(const uint8_t *text,
    const voice_json_tok_t *toks, int i, const char *s);

/*
 * Decodes string token i into out (UTF-8; \u escapes incl. surrogate
 * pairs; a lone surrogate is refused).  Returns the length, or (size_t) -1
 * when out is too small or the string is invalid.  Never writes a NUL.
 */
size_t voice_json_unescape(const uint8_t *text,
    const voice_json_tok_t *tok, uint8_t *out, size_t cap);

/*
 * Parses number token i as a non-negative integer (no sign, fraction or
 * exponent) into *v; returns 1, or 0 when it is not one or overflows.
 */
int voice_json_uint(const uint8_t *text,
    const voice_json_tok_t *tok, uint64_t *v);


/*
 * The writer's appenders write at p, never past last, and return the
 * position after what they wrote, or NULL when it does not fit; NULL in
 * gives NULL out, so a chain of them is checked once at its end.
 *
 * voice_json_put() appends s as it is (JSON text the caller wrote);
 * voice_json_put_str() appends s (len bytes) as a quoted JSON string:
 * '"', '\\' and control characters escaped, bytes >= 0x80 passed
 * through (the caller's text is UTF-8).
 */
uint8_t *voice_json_put_str(uint8_t *p, uint8_t *last, const uint8_t *s,
    size_t len);


/*
 * Inline: its text is a literal, whose length the compiler then knows, and
 * nginx writes a media message to Twilio (four of these) for every frame.
 */

static inline uint8_t *
voice_json_put(uint8_t *p, uint8_t *last, const char *s)
{
    size_t  n;

    if (p == NULL) {
        return NULL;
    }

    n = strlen(s);

    if ((size_t) (last - p) < n) {
        return NULL;
    }

    memcpy(p, s, n);

    return p + n;
}


#endif /* VOICE_JSON_H */
