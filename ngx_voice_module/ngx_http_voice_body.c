/*
 * ngx_http_voice_body.c: parsers and validators of what API clients and
 * Twilio send to the REST endpoints: the JSON bodies of /api/call and
 * /api/end-call, webhook parameters (form-encoded, or a JSON object),
 * phone numbers and SIDs, the Idempotency-Key header.
 *
 * Leaf code, libc only, on common/voice_json.c; ngx_http_voice_rest.c
 * and ngx_http_voice_webhook.c call it.  The error texts go back to API
 * clients as they are, so each names the member and what it must be.
 */

#include <string.h>

#include "voice_json.h"
#include "ngx_http_voice_body.h"


/* a request body has two or three members; room for some unknown ones */
#define NGX_HTTP_VOICE_BODY_TOKENS  128


static int ngx_http_voice_body_json(const uint8_t *body, size_t len,
    voice_json_tok_t *toks, const char **err);
static int ngx_http_voice_body_string(const uint8_t *body,
    const voice_json_tok_t *toks, int i, char *out, size_t size);
static size_t ngx_http_voice_body_member(const uint8_t *body,
    const voice_json_tok_t *tok, uint8_t *out, size_t cap);
static int ngx_http_voice_body_hex(const uint8_t *s, size_t len);
static int ngx_http_voice_body_unhex(uint8_t c);


int
ngx_http_voice_body_valid_e164(const uint8_t *s, size_t len)
{
    size_t  i;

    if (len < 3 || len > NGX_HTTP_VOICE_E164_MAX) {
        return 0;
    }

    if (s[0] != '+' || s[1] < '1' || s[1] > '9') {
        return 0;
    }

    for (i = 2; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    return 1;
}


int
ngx_http_voice_body_valid_call_sid(const uint8_t *s, size_t len)
{
    return ngx_http_voice_body_valid_sid(s, len, "CA");
}


int
ngx_http_voice_body_valid_sid(const uint8_t *s, size_t len,
    const char *prefix)
{
    size_t  n;

    n = strlen(prefix);

    if (len != n + 32 || memcmp(s, prefix, n) != 0) {
        return 0;
    }

    return ngx_http_voice_body_hex(s + n, 32);
}


int
ngx_http_voice_body_parse_call(const uint8_t *body, size_t len, char *number,
    char *from, const char **err)
{
    int                        i, rc;
    voice_json_tok_t           toks[NGX_HTTP_VOICE_BODY_TOKENS];

    number[0] = '\0';
    from[0] = '\0';

    if (ngx_http_voice_body_json(body, len, toks, err) != 0) {
        return -1;
    }

    i = voice_json_get(body, toks, 0, "number");

    if (i < 0) {
        *err = "number is required: a phone number in E.164 format, "
               "like +14155550123";
        return -1;
    }

    if (toks[i].type != VOICE_JSON_STRING) {
        *err = "number must be a string: a phone number in E.164 format, "
               "like +14155550123";
        return -1;
    }

    if (ngx_http_voice_body_string(body, toks, i, number,
                                   NGX_HTTP_VOICE_E164_MAX + 1) != 0
        || !ngx_http_voice_body_valid_e164((uint8_t *) number, strlen(number)))
    {
        number[0] = '\0';
        *err = "number must be a phone number in E.164 format, "
               "like +14155550123";
        return -1;
    }

    i = voice_json_get(body, toks, 0, "fromNumber");

    if (i < 0 || toks[i].type == VOICE_JSON_NULL) {
        return 0;
    }

    if (toks[i].type != VOICE_JSON_STRING) {
        *err = "fromNumber must be a string: a phone number in E.164 "
               "format, like +14155550123, or null";
        return -1;
    }

    rc = ngx_http_voice_body_string(body, toks, i, from,
                                    NGX_HTTP_VOICE_E164_MAX + 1);

    if (rc == 0
        && (from[0] == '\0'
            || ngx_http_voice_body_valid_e164((uint8_t *) from, strlen(from))))
    {
        return 0;
    }

    from[0] = '\0';
    *err = "fromNumber must be a phone number in E.164 format, "
           "like +14155550123";

    return -1;
}


/* the text of token i, as written: a string with its quotes */
static void
ngx_http_voice_body_slice(const uint8_t *body,
    const voice_json_tok_t *tok, ngx_http_voice_body_slice_t *sl)
{
    size_t  q;

    q = (tok->type == VOICE_JSON_STRING);

    sl->data = body + tok->start - q;
    sl->len = tok->end - tok->start + 2 * q;
}


/* string token i, unescaped, is 1..max bytes */
static int
ngx_http_voice_body_bounded(const uint8_t *body,
    const voice_json_tok_t *tok, size_t max)
{
    size_t   n;
    uint8_t  buf[NGX_HTTP_VOICE_BODY_INSTRUCTIONS_MAX + 1];

    if (tok->type != VOICE_JSON_STRING || max > sizeof(buf) - 1) {
        return 0;
    }

    n = voice_json_unescape(body, tok, buf, max + 1);

    return n != (size_t) -1 && n >= 1 && n <= max;
}


static int
ngx_http_voice_body_append(uint8_t *out, size_t cap, size_t *used,
    const void *s, size_t len)
{
    if (cap - *used < len) {
        return 0;
    }

    memcpy(out + *used, s, len);
    *used += len;

    return 1;
}


int
ngx_http_voice_body_parse_call_extra(const uint8_t *body, size_t len,
    uint8_t *out, size_t cap, size_t *out_len, int *amd, const char **err)
{
    int                           i, k, m, ins, greet, ctx, det, idx[3];
    size_t                        used;
    uint32_t                      n;
    ngx_http_voice_body_slice_t   sl;
    voice_json_tok_t              toks[NGX_HTTP_VOICE_BODY_TOKENS];

    static const char  *keys[3] = { "instructions", "greeting", "context" };

    *out_len = 0;
    *amd = NGX_HTTP_VOICE_BODY_AMD_UNSET;

    if (ngx_http_voice_body_json(body, len, toks, err) != 0) {
        return -1;
    }

    ins = voice_json_get(body, toks, 0, "instructions");
    greet = voice_json_get(body, toks, 0, "greeting");
    ctx = voice_json_get(body, toks, 0, "context");
    det = voice_json_get(body, toks, 0, "machineDetection");

    if (ins >= 0 && toks[ins].type != VOICE_JSON_NULL
        && !ngx_http_voice_body_bounded(body, &toks[ins],
                                    NGX_HTTP_VOICE_BODY_INSTRUCTIONS_MAX))
    {
        *err = "instructions must be a string of 1 to 2000 bytes";
        return -1;
    }

    if (greet >= 0 && toks[greet].type != VOICE_JSON_NULL
        && !ngx_http_voice_body_bounded(body, &toks[greet],
                                        NGX_HTTP_VOICE_BODY_GREETING_MAX))
    {
        *err = "greeting must be a string of 1 to 500 bytes";
        return -1;
    }

    if (ctx >= 0 && toks[ctx].type != VOICE_JSON_NULL) {
        if (toks[ctx].type != VOICE_JSON_OBJECT
            || toks[ctx].size > NGX_HTTP_VOICE_BODY_CONTEXT_MEMBERS)
        {
            goto bad_context;
        }

        k = ctx + 1;

        for (n = 0; n < toks[ctx].size; n++) {
            m = (int) toks[k].next;

            if (!ngx_http_voice_body_bounded(body, &toks[k],
                                    NGX_HTTP_VOICE_BODY_CONTEXT_KEY_MAX)
                || !ngx_http_voice_body_bounded(body, &toks[m],
                                    NGX_HTTP_VOICE_BODY_CONTEXT_VALUE_MAX))
            {
                goto bad_context;
            }

            k = (int) toks[m].next;
        }
    }

    if (det >= 0) {
        if (toks[det].type == VOICE_JSON_TRUE) {
            *amd = NGX_HTTP_VOICE_BODY_AMD_ON;

        } else if (toks[det].type == VOICE_JSON_FALSE) {
            *amd = NGX_HTTP_VOICE_BODY_AMD_OFF;

        } else if (toks[det].type != VOICE_JSON_NULL) {
            *err = "machineDetection must be true or false";
            return -1;
        }
    }

    /* the compact object of what is present, as the client wrote it */

    used = 0;

    idx[0] = ins;
    idx[1] = greet;
    idx[2] = ctx;

    for (i = 0; i < 3; i++) {
        if (idx[i] < 0 || toks[idx[i]].type == VOICE_JSON_NULL) {
            continue;
        }

        ngx_http_voice_body_slice(body, &toks[idx[i]], &sl);

        if (!ngx_http_voice_body_append(out, cap, &used,
                                        used ? "," : "{", 1)
            || !ngx_http_voice_body_append(out, cap, &used, "\"", 1)
            || !ngx_http_voice_body_append(out, cap, &used, keys[i],
                                           strlen(keys[i]))
            || !ngx_http_voice_body_append(out, cap, &used, "\":", 2)
            || !ngx_http_voice_body_append(out, cap, &used, sl.data, sl.len))
        {
            goto too_big;
        }
    }

    if (used == 0) {
        return 0;
    }

    if (!ngx_http_voice_body_append(out, cap, &used, "}", 1)
        || used > NGX_HTTP_VOICE_BODY_EXTRA_MAX)
    {
        goto too_big;
    }

    *out_len = used;

    return 0;

bad_context:

    *err = "context must be a flat JSON object of at most 16 strings "
           "(keys of 1 to 64 bytes, values of 1 to 256)";
    return -1;

too_big:

    *err = "instructions, greeting and context together must fit in 2048 "
           "bytes of JSON";
    return -1;
}


int
ngx_http_voice_body_call_extra(const uint8_t *text, size_t len,
    ngx_http_voice_body_slice_t *instructions,
    ngx_http_voice_body_slice_t *greeting,
    ngx_http_voice_body_slice_t *context, int *amd)
{
    int                        i;
    voice_json_tok_t           toks[NGX_HTTP_VOICE_BODY_TOKENS];

    instructions->data = NULL;
    greeting->data = NULL;
    context->data = NULL;
    *amd = NGX_HTTP_VOICE_BODY_AMD_UNSET;

    if (voice_json_parse(text, len, toks, NGX_HTTP_VOICE_BODY_TOKENS,
                         NULL) < 1
        || toks[0].type != VOICE_JSON_OBJECT)
    {
        return -1;
    }

    i = voice_json_get(text, toks, 0, "instructions");
    if (i >= 0) {
        if (toks[i].type != VOICE_JSON_STRING) {
            return -1;
        }

        ngx_http_voice_body_slice(text, &toks[i], instructions);
    }

    i = voice_json_get(text, toks, 0, "greeting");
    if (i >= 0) {
        if (toks[i].type != VOICE_JSON_STRING) {
            return -1;
        }

        ngx_http_voice_body_slice(text, &toks[i], greeting);
    }

    i = voice_json_get(text, toks, 0, "context");
    if (i >= 0) {
        if (toks[i].type != VOICE_JSON_OBJECT) {
            return -1;
        }

        ngx_http_voice_body_slice(text, &toks[i], context);
    }

    i = voice_json_get(text, toks, 0, "machineDetection");
    if (i >= 0) {
        if (voice_json_str_eq(text, toks, i, "on")) {
            *amd = NGX_HTTP_VOICE_BODY_AMD_ON;

        } else if (voice_json_str_eq(text, toks, i, "wait")) {
            *amd = NGX_HTTP_VOICE_BODY_AMD_WAIT;

        } else if (voice_json_str_eq(text, toks, i, "off")) {
            *amd = NGX_HTTP_VOICE_BODY_AMD_OFF;

        } else {
            return -1;
        }
    }

    return 0;
}


int
ngx_http_voice_body_parse_end_call(const uint8_t *body, size_t len,
    char *call_sid, const char **err)
{
    int                        i;
    voice_json_tok_t           toks[NGX_HTTP_VOICE_BODY_TOKENS];

    call_sid[0] = '\0';

    if (ngx_http_voice_body_json(body, len, toks, err) != 0) {
        return -1;
    }

    i = voice_json_get(body, toks, 0, "callSid");

    if (i < 0) {
        *err = "callSid is required: a call SID, CA followed by "
               "32 hexadecimal digits";
        return -1;
    }

    if (toks[i].type != VOICE_JSON_STRING) {
        *err = "callSid must be a string: a call SID, CA followed by "
               "32 hexadecimal digits";
        return -1;
    }

    if (ngx_http_voice_body_string(body, toks, i, call_sid,
                                   NGX_HTTP_VOICE_SID_LEN + 1) != 0
        || !ngx_http_voice_body_valid_call_sid((uint8_t *) call_sid,
                                               strlen(call_sid)))
    {
        call_sid[0] = '\0';
        *err = "callSid must be a call SID: CA followed by "
               "32 hexadecimal digits";
        return -1;
    }

    return 0;
}


/* tokenizes a request body that must be a JSON object */

static int
ngx_http_voice_body_json(const uint8_t *body, size_t len,
    voice_json_tok_t *toks, const char **err)
{
    int  n;

    if (len == 0) {
        *err = "body is empty: a JSON object is expected";
        return -1;
    }

    n = voice_json_parse(body, len, toks,
                         NGX_HTTP_VOICE_BODY_TOKENS, NULL);

    switch (n) {

    case VOICE_JSON_EINVAL:
        *err = "body is not valid JSON";
        return -1;

    case VOICE_JSON_ENOMEM:
        *err = "body has too many JSON values";
        return -1;

    case VOICE_JSON_EDEPTH:
        *err = "body is nested too deeply";
        return -1;

    default:
        break;
    }

    if (toks[0].type != VOICE_JSON_OBJECT) {
        *err = "body must be a JSON object";
        return -1;
    }

    return 0;
}


/*
 * String token i, unescaped and NUL-terminated, into out (size bytes);
 * -1 when it does not fit or holds a NUL, which no valid value does.
 */

static int
ngx_http_voice_body_string(const uint8_t *body,
    const voice_json_tok_t *toks, int i, char *out, size_t size)
{
    size_t  n;

    n = voice_json_unescape(body, &toks[i], (uint8_t *) out,
                            size - 1);

    if (n == (size_t) -1 || memchr(out, '\0', n) != NULL) {
        out[0] = '\0';
        return -1;
    }

    out[n] = '\0';

    return 0;
}


int
ngx_http_voice_body_parse_form(const uint8_t *data, size_t len,
    ngx_http_voice_body_param_t *params, size_t max, uint8_t *scratch,
    size_t scratch_size)
{
    int             hi, lo;
    size_t          n, used;
    uint8_t        *dst, c;
    const uint8_t  *p, *end, *pair, *eq;

    p = data;
    end = data + len;
    n = 0;
    used = 0;

    while (p < end) {

        pair = p;

        while (p < end && *p != '&') {
            p++;
        }

        if (p == pair) {
            p++;
            continue;
        }

        if (n == max) {
            return -1;
        }

        eq = memchr(pair, '=', (size_t) (p - pair));

        if (eq == NULL) {
            eq = p;
        }

        /* the decoded pair is never longer than the encoded one */
        if ((size_t) (p - pair) > scratch_size - used) {
            return -1;
        }

        dst = scratch + used;
        params[n].name = dst;

        for ( /* void */ ; pair < p; pair++) {

            if (pair == eq) {
                params[n].name_len = (size_t) (dst - params[n].name);
                params[n].value = dst;
                continue;
            }

            c = *pair;

            if (c == '+') {
                c = ' ';

            } else if (c == '%') {
                if (p - pair < 3) {
                    return -1;
                }

                hi = ngx_http_voice_body_unhex(pair[1]);
                lo = ngx_http_voice_body_unhex(pair[2]);

                if (hi < 0 || lo < 0) {
                    return -1;
                }

                c = (uint8_t) (hi << 4 | lo);
                pair += 2;
            }

            *dst++ = c;
        }

        if (eq == p) {
            params[n].name_len = (size_t) (dst - params[n].name);
            params[n].value = dst;
            params[n].value_len = 0;

        } else {
            params[n].value_len = (size_t) (dst - params[n].value);
        }

        used = (size_t) (dst - scratch);
        n++;

        if (p < end) {
            p++;
        }
    }

    return (int) n;
}


int
ngx_http_voice_body_parse_json_params(const uint8_t *body, size_t len,
    ngx_http_voice_body_param_t *params, size_t max, uint8_t *scratch,
    size_t scratch_size, const char **err)
{
    int                         key, val;
    size_t                      n, used, k, v;
    uint32_t                    i;
    voice_json_tok_t            toks[NGX_HTTP_VOICE_BODY_TOKENS];

    if (ngx_http_voice_body_json(body, len, toks, err) != 0) {
        return -1;
    }

    n = 0;
    used = 0;
    key = 1;

    for (i = 0; i < toks[0].size; i++, key = (int) toks[val].next) {

        val = key + 1;

        if (toks[val].type != VOICE_JSON_STRING
            && toks[val].type != VOICE_JSON_NUMBER)
        {
            continue;
        }

        if (n == max) {
            *err = "body has too many members";
            return -1;
        }

        k = ngx_http_voice_body_member(body, &toks[key], scratch + used,
                                       scratch_size - used);
        if (k == (size_t) -1) {
            goto bad;
        }

        params[n].name = scratch + used;
        params[n].name_len = k;
        used += k;

        v = ngx_http_voice_body_member(body, &toks[val], scratch + used,
                                       scratch_size - used);
        if (v == (size_t) -1) {
            goto bad;
        }

        params[n].value = scratch + used;
        params[n].value_len = v;
        used += v;
        n++;
    }

    return (int) n;

bad:

    *err = "body has a member that cannot be a webhook parameter";
    return -1;
}


/* a member's name or value as text: a string unescaped, a number as is */

static size_t
ngx_http_voice_body_member(const uint8_t *body,
    const voice_json_tok_t *tok, uint8_t *out, size_t cap)
{
    size_t  n;

    if (tok->type == VOICE_JSON_NUMBER) {
        n = tok->end - tok->start;

        if (n > cap) {
            return (size_t) -1;
        }

        memcpy(out, body + tok->start, n);
        return n;
    }

    n = voice_json_unescape(body, tok, out, cap);

    if (n == (size_t) -1 || memchr(out, '\0', n) != NULL) {
        return (size_t) -1;
    }

    return n;
}


int
ngx_http_voice_body_idempotency_key(const uint8_t *value, size_t len,
    uint8_t *out, size_t *out_len)
{
    size_t  i, n;

    *out_len = 0;

    if (len == 0) {
        return -1;
    }

    if (value[0] != '"') {

        /* bare: a token of visible ASCII */

        if (len > NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX) {
            return -1;
        }

        for (i = 0; i < len; i++) {
            if (value[i] <= 0x20 || value[i] >= 0x7f || value[i] == '"'
                || value[i] == '\\')
            {
                return -1;
            }
        }

        memcpy(out, value, len);
        *out_len = len;

        return 0;
    }

    /* sf-string (RFC 8941 3.3.3): printable ASCII, \" and \\ escaped */

    n = 0;

    for (i = 1; i < len; i++) {

        if (value[i] == '"') {
            if (i != len - 1 || n == 0) {
                return -1;
            }

            *out_len = n;

            return 0;
        }

        if (value[i] < 0x20 || value[i] >= 0x7f) {
            return -1;
        }

        if (value[i] == '\\') {
            if (++i == len || (value[i] != '"' && value[i] != '\\')) {
                return -1;
            }
        }

        if (n == NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX) {
            return -1;
        }

        out[n++] = value[i];
    }

    /* no closing quote */

    return -1;
}


const ngx_http_voice_body_param_t *
ngx_http_voice_body_form_get(const ngx_http_voice_body_param_t *params,
    size_t n, const char *name)
{
    size_t  i, len;

    len = strlen(name);

    for (i = 0; i < n; i++) {
        if (params[i].name_len == len
            && memcmp(params[i].name, name, len) == 0)
        {
            return &params[i];
        }
    }

    return NULL;
}


static int
ngx_http_voice_body_hex(const uint8_t *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (ngx_http_voice_body_unhex(s[i]) < 0) {
            return 0;
        }
    }

    return 1;
}


static int
ngx_http_voice_body_unhex(uint8_t c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}
