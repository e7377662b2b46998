/*
 * ngx_http_voice_seal.h: sealed tokens, for what a call carries through
 * Twilio and must get back intact and unread.
 *
 * A call placed through /api/call may have its own instructions, greeting
 * and context (possibly personal data).  The call SID is not known before
 * Twilio creates the call, and the TwiML fetch and the media stream may
 * land on any worker of any nginx host, so the context travels with the
 * call itself: sealed into the TwiML URL given to Twilio, passed on as
 * <Parameter>s of the stream, unsealed at the stream's start.  Sealing is
 * AES-256-GCM with a key derived from the Twilio auth token (which every
 * host of the service has, to check Twilio's signatures), so the token is
 * opaque in Twilio's logs and in nginx's access log, and cannot be made or
 * altered without the auth token.
 *
 * Token: "v1." base64url(nonce[12] ciphertext tag[16]), no padding.
 *
 * Leaf code: libc and OpenSSL only, unit tested outside nginx.
 */

#ifndef NGX_HTTP_VOICE_SEAL_H
#define NGX_HTTP_VOICE_SEAL_H

#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_VOICE_SEAL_KEY      32

/* room for the token of n bytes of plaintext (its length is less) */
#define NGX_HTTP_VOICE_SEAL_LEN(n)   (3 + 4 * ((12 + (n) + 16 + 2) / 3) + 1)


/* the sealing key of an auth token: HMAC-SHA256(token, label) */
int ngx_http_voice_seal_key(const uint8_t *secret, size_t len,
    uint8_t key[NGX_HTTP_VOICE_SEAL_KEY]);

/*
 * Seals in[0..len) into out (cap bytes, NGX_HTTP_VOICE_SEAL_LEN(len)
 * suffice).  Returns the token's length, or 0 on failure.
 */
size_t ngx_http_voice_seal(const uint8_t key[NGX_HTTP_VOICE_SEAL_KEY],
    const uint8_t *in, size_t len, uint8_t *out, size_t cap);

/*
 * Opens a token into out (cap bytes; the token's length suffices).
 * Returns the plaintext's length, or (size_t) -1 when the token is
 * malformed, was made with another key, or was altered.
 */
size_t ngx_http_voice_unseal(const uint8_t key[NGX_HTTP_VOICE_SEAL_KEY],
    const uint8_t *token, size_t len, uint8_t *out, size_t cap);


#endif /* NGX_HTTP_VOICE_SEAL_H */
