/*
 * ngx_http_voice_signature.h: Twilio's request signature
 * (X-Twilio-Signature), exactly as docs/protocols.md, Twilio REST §9
 * describes it.
 *
 * Leaf code: libc and OpenSSL's HMAC only, no nginx header, so the worked
 * examples of the reference are unit tests and the canonicalization is
 * fuzzed.  ngx_http_voice_twiml.c and ngx_http_voice_ws.c gather the URL,
 * the parameters and the header, and call ngx_http_voice_signature_check.
 */

#ifndef NGX_HTTP_VOICE_SIGNATURE_H
#define NGX_HTTP_VOICE_SIGNATURE_H

#include <stddef.h>
#include <stdint.h>

#include "ngx_http_voice_body.h"


#define NGX_HTTP_VOICE_SIGNATURE_LEN   28   /* base64 of 20 bytes */


/*
 * The string that is signed: url, then for each distinct parameter name
 * in byte order, name + value for each distinct value of it in byte order.
 * Writes into out (cap bytes) and returns the length, or (size_t) -1 when
 * it does not fit.  params is not modified (sorting uses order, an array
 * of n indexes the caller provides).
 */
size_t ngx_http_voice_signature_canonical(const uint8_t *url, size_t url_len,
    const ngx_http_voice_body_param_t *params, size_t n, size_t *order,
    uint8_t *out, size_t cap);

/* base64(HMAC-SHA1(key, data)) into out (28 bytes, no NUL); 0 or -1 */
int ngx_http_voice_signature_compute(const uint8_t *key, size_t key_len,
    const uint8_t *data, size_t len, uint8_t *out);

/*
 * Writes the port variant of url into out (cap bytes): with an explicit
 * port, the URL without it; with none, the URL with the scheme's default
 * port (443 for https/wss, 80 for http/ws).  Returns the length, or
 * (size_t) -1 for a URL it cannot parse or out too small.
 */
size_t ngx_http_voice_signature_port_variant(const uint8_t *url,
    size_t url_len, uint8_t *out, size_t cap);

/*
 * Checks a signature header against url + params, also accepting the
 * port variant of url; compares in constant time.  scratch (cap bytes)
 * holds the canonical strings; order holds n indexes.  Returns 1 when
 * valid, 0 when not, -1 when scratch is too small or url is unusable.
 */
int ngx_http_voice_signature_check(const uint8_t *key, size_t key_len,
    const uint8_t *url, size_t url_len,
    const ngx_http_voice_body_param_t *params, size_t n, size_t *order,
    const uint8_t *header, size_t header_len, uint8_t *scratch, size_t cap);


/*
 * The JSON-body variant: Twilio puts bodySHA256=<lowercase hex SHA-256 of
 * the raw body> in the URL's query string and signs the URL alone (check
 * it with n = 0).  Returns 1 when url has exactly one bodySHA256 and it
 * is the body's hash (compared in constant time), 0 otherwise.
 */
int ngx_http_voice_signature_body_ok(const uint8_t *url, size_t url_len,
    const uint8_t *body, size_t body_len);


#endif /* NGX_HTTP_VOICE_SIGNATURE_H */
