/*
 * fuzz_body.c: libFuzzer target of ngx_voice_module's REST body parsers
 * (ngx_http_voice_body.c).
 *
 * The input goes through the /api/call and /api/end-call parsers, whose
 * successful outputs must be valid numbers and SIDs, and through the form
 * decoder and the JSON webhook decoder, whose parameters must lie in the
 * scratch buffer, be no longer than the input, and be found again by
 * name; and through the Idempotency-Key parser, whose key must be within
 * its bound.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_voice_body.h"


#define FUZZ_PARAMS  64


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static void fuzz_check_params(int n, size_t size);


static uint8_t                      fuzz_scratch[1 << 17];
static ngx_http_voice_body_param_t  fuzz_params[FUZZ_PARAMS];
static char                         fuzz_name[1 << 17];
static uint8_t                      fuzz_key[NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX];


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          n;
    size_t       klen;
    const char  *err;
    char         number[NGX_HTTP_VOICE_E164_MAX + 1];
    char         from[NGX_HTTP_VOICE_E164_MAX + 1];
    char         sid[NGX_HTTP_VOICE_SID_LEN + 1];

    err = NULL;

    if (ngx_http_voice_body_parse_call(data, size, number, from, &err) == 0) {
        if (!ngx_http_voice_body_valid_e164((uint8_t *) number,
                                            strlen(number))
            || (from[0] != '\0'
                && !ngx_http_voice_body_valid_e164((uint8_t *) from,
                                                   strlen(from))))
        {
            abort();
        }

    } else if (err == NULL) {
        abort();
    }

    err = NULL;

    if (ngx_http_voice_body_parse_end_call(data, size, sid, &err) == 0) {
        if (!ngx_http_voice_body_valid_call_sid((uint8_t *) sid, strlen(sid))) {
            abort();
        }

    } else if (err == NULL) {
        abort();
    }

    /* a key is never longer than its bound, nor than what was sent */

    if (ngx_http_voice_body_idempotency_key(data, size, fuzz_key, &klen)
        == 0
        && (klen == 0 || klen > NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX
            || klen > size))
    {
        abort();
    }

    if (size > sizeof(fuzz_scratch)) {
        return 0;
    }

    n = ngx_http_voice_body_parse_form(data, size, fuzz_params, FUZZ_PARAMS,
                                       fuzz_scratch, size);
    fuzz_check_params(n, size);

    err = NULL;
    n = ngx_http_voice_body_parse_json_params(data, size, fuzz_params,
                                              FUZZ_PARAMS, fuzz_scratch, size,
                                              &err);
    if (n < 0 && err == NULL) {
        abort();
    }

    fuzz_check_params(n, size);

    return 0;
}


static void
fuzz_check_params(int n, size_t size)
{
    int                                 i;
    size_t                              total;
    const ngx_http_voice_body_param_t  *p;

    if (n < -1 || n > FUZZ_PARAMS) {
        abort();
    }

    total = 0;

    for (i = 0; i < n; i++) {
        p = &fuzz_params[i];

        if (p->name < fuzz_scratch || p->value < fuzz_scratch
            || p->name + p->name_len > fuzz_scratch + size
            || p->value + p->value_len > fuzz_scratch + size)
        {
            abort();
        }

        total += p->name_len + p->value_len;

        if (memchr(p->name, 0, p->name_len) == NULL) {
            memcpy(fuzz_name, p->name, p->name_len);
            fuzz_name[p->name_len] = '\0';

            if (ngx_http_voice_body_form_get(fuzz_params, (size_t) n,
                                             fuzz_name) > p)
            {
                abort();
            }
        }
    }

    if (total > size) {
        abort();
    }
}
