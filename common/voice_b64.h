/*
 * voice_b64.h: base64 (RFC 4648, standard alphabet) into the caller's
 * buffers, shared by the nginx module, bridged and the benchmark tools.
 *
 * Both directions run once per audio frame on each side: Twilio's media
 * payloads (ngx_http_voice_twilio.c), OpenAI's audio deltas and appends
 * (bridged/bd_oai_event.c).  Neither direction allocates.  libc only.
 */

#ifndef VOICE_B64_H
#define VOICE_B64_H

#include <stddef.h>
#include <stdint.h>


/* encoded size of n bytes, padding included */
#define VOICE_B64_ENCODED_LEN(n)  ((((n) + 2) / 3) * 4)

/* the most bytes n base64 characters can decode to */
#define VOICE_B64_DECODED_MAX(n)  ((((n) + 3) / 4) * 3)


/* writes VOICE_B64_ENCODED_LEN(len) characters, no NUL; returns that count */
size_t voice_b64_encode(char *dst, const uint8_t *src, size_t len);

/*
 * Decodes len characters into dst (cap bytes).  Strict: the standard
 * alphabet only, no whitespace, '=' only to close the last group, and the
 * bits a short last group drops must be zero, so that every byte string
 * has exactly one spelling.  Padding itself is optional: a caller that
 * insists on it checks len % 4.  Returns the decoded length, or -1 for
 * input that is not base64 or decodes to more than cap bytes.
 */
long voice_b64_decode(uint8_t *dst, size_t cap, const char *src, size_t len);


/*
 * The bytes len characters of base64 decode to, padded or not: what
 * voice_b64_decode() returns when it accepts them, found without
 * decoding (to say "too big" rather than "invalid", or to count audio
 * that is dropped undecoded).  Inline: it runs once per frame.
 */

static inline size_t
voice_b64_decoded_len(const char *src, size_t len)
{
    if (len >= 4 && len % 4 == 0 && src[len - 1] == '=') {
        len -= (src[len - 2] == '=') ? 2 : 1;
    }

    return len / 4 * 3 + ((len % 4) ? len % 4 - 1 : 0);
}


#endif /* VOICE_B64_H */
