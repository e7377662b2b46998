/*
 * fuzz_signature.c: libFuzzer target of ngx_voice_module's Twilio
 * signature code (ngx_http_voice_signature.c): URL port variants and the
 * canonical string.
 *
 * Input: a URL, a newline, then a form-encoded body.  The canonical string
 * must not depend on the order of the parameters; a signature computed
 * over the URL, or over its port variant, must be accepted by the check;
 * the variant of the variant of a URL without a port is the URL itself.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_voice_body.h"
#include "ngx_http_voice_signature.h"


#define FUZZ_PARAMS  64
#define FUZZ_ROOM    (1 << 16)


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_http_voice_body_param_t  fuzz_params[FUZZ_PARAMS];
static ngx_http_voice_body_param_t  fuzz_reversed[FUZZ_PARAMS];
static size_t                       fuzz_order[FUZZ_PARAMS];
static uint8_t                      fuzz_form[FUZZ_ROOM];
static uint8_t                      fuzz_a[FUZZ_ROOM];
static uint8_t                      fuzz_b[FUZZ_ROOM];
static uint8_t                      fuzz_variant[FUZZ_ROOM];
static uint8_t                      fuzz_variant2[FUZZ_ROOM];
static uint8_t                      fuzz_scratch[FUZZ_ROOM];


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             n, i, rc;
    size_t          url_len, alen, blen, vlen, v2len;
    uint8_t         sig[NGX_HTTP_VOICE_SIGNATURE_LEN];
    const uint8_t  *nl, *body;

    static const uint8_t  key[] = "0123456789abcdef0123456789abcdef";

    if (size > FUZZ_ROOM / 4) {
        return 0;
    }

    nl = memchr(data, '\n', size);
    url_len = nl ? (size_t) (nl - data) : size;
    body = nl ? nl + 1 : data + size;

    n = ngx_http_voice_body_parse_form(body, (size_t) (data + size - body),
                                       fuzz_params, FUZZ_PARAMS, fuzz_form,
                                       sizeof(fuzz_form));
    if (n < 0) {
        n = 0;
    }

    for (i = 0; i < n; i++) {
        fuzz_reversed[i] = fuzz_params[n - 1 - i];
    }

    alen = ngx_http_voice_signature_canonical(data, url_len, fuzz_params,
                                              (size_t) n, fuzz_order, fuzz_a,
                                              sizeof(fuzz_a));
    blen = ngx_http_voice_signature_canonical(data, url_len, fuzz_reversed,
                                              (size_t) n, fuzz_order, fuzz_b,
                                              sizeof(fuzz_b));

    if (alen == (size_t) -1 || alen != blen
        || memcmp(fuzz_a, fuzz_b, alen) != 0
        || memcmp(fuzz_a, data, url_len) != 0)
    {
        abort();
    }

    /* too little room is an error, never an overrun */
    if (alen > 0
        && ngx_http_voice_signature_canonical(data, url_len, fuzz_params,
                                              (size_t) n, fuzz_order, fuzz_b,
                                              alen - 1) != (size_t) -1)
    {
        abort();
    }

    if (ngx_http_voice_signature_compute(key, sizeof(key) - 1, fuzz_a, alen,
                                         sig) != 0)
    {
        abort();
    }

    vlen = ngx_http_voice_signature_port_variant(data, url_len, fuzz_variant,
                                                 sizeof(fuzz_variant));

    rc = ngx_http_voice_signature_check(key, sizeof(key) - 1, data, url_len,
                                        fuzz_params, (size_t) n, fuzz_order,
                                        sig, sizeof(sig), fuzz_scratch,
                                        sizeof(fuzz_scratch));

    if (vlen == (size_t) -1) {
        if (rc != -1) {
            abort();
        }

        return 0;
    }

    if (rc != 1) {
        abort();
    }

    /* a signature over the variant is accepted for the original URL */

    alen = ngx_http_voice_signature_canonical(fuzz_variant, vlen, fuzz_params,
                                              (size_t) n, fuzz_order, fuzz_a,
                                              sizeof(fuzz_a));
    if (alen == (size_t) -1
        || ngx_http_voice_signature_compute(key, sizeof(key) - 1, fuzz_a,
                                            alen, sig) != 0
        || ngx_http_voice_signature_check(key, sizeof(key) - 1, data,
                                          url_len, fuzz_params, (size_t) n,
                                          fuzz_order, sig, sizeof(sig),
                                          fuzz_scratch, sizeof(fuzz_scratch))
           != 1)
    {
        abort();
    }

    /* with a port added, the variant's variant is the original */

    v2len = ngx_http_voice_signature_port_variant(fuzz_variant, vlen,
                                                  fuzz_variant2,
                                                  sizeof(fuzz_variant2));
    if (v2len == (size_t) -1) {
        abort();
    }

    if (vlen > url_len
        && (v2len != url_len || memcmp(fuzz_variant2, data, url_len) != 0))
    {
        abort();
    }

    /* a wrong signature is refused */
    sig[0] ^= 1;

    if (ngx_http_voice_signature_check(key, sizeof(key) - 1, data, url_len,
                                       fuzz_params, (size_t) n, fuzz_order,
                                       sig, sizeof(sig), fuzz_scratch,
                                       sizeof(fuzz_scratch)) != 0)
    {
        abort();
    }

    return 0;
}
