/*
 * ngx_http_voice_body.h: parsers and validators of what clients and
 * Twilio send to the REST endpoints: the JSON bodies of /api/call and
 * /api/end-call, form-encoded webhook parameters (/twiml), phone numbers,
 * call SIDs, the Idempotency-Key header of /api/call.
 *
 * Leaf code (libc only, on common/voice_json.c), unit tested and fuzzed
 * outside nginx; ngx_http_voice_rest.c and ngx_http_voice_twiml.c call it.
 */

#ifndef NGX_HTTP_VOICE_BODY_H
#define NGX_HTTP_VOICE_BODY_H

#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_VOICE_E164_MAX      16   /* '+' and up to 15 digits */
#define NGX_HTTP_VOICE_SID_LEN       34   /* 2 letters and 32 hex digits */


/* 1 when s is an E.164 number: ^\+[1-9][0-9]{1,14}$ */
int ngx_http_voice_body_valid_e164(const uint8_t *s, size_t len);

/* 1 when s is a call SID: "CA" and 32 hex digits (either case) */
int ngx_http_voice_body_valid_call_sid(const uint8_t *s, size_t len);

/* 1 when s is prefix + 32 hex digits, e.g. "MZ", "AC" */
int ngx_http_voice_body_valid_sid(const uint8_t *s, size_t len,
    const char *prefix);


/*
 * POST /api/call: {"number": "+E164", "fromNumber": "+E164"}, fromNumber
 * optional (absent, null or "" mean "not given").  Other members are
 * ignored.  On success the numbers are copied, NUL-terminated, into
 * number and from (NGX_HTTP_VOICE_E164_MAX + 1 bytes each; from is ""
 * when not given) and 0 is returned; otherwise -1 and *err says why, in
 * words fit for the client ("body is not valid JSON", "number must be a
 * phone number in E.164 format, like +14155550123", ...).
 */
int ngx_http_voice_body_parse_call(const uint8_t *body, size_t len,
    char *number, char *from, const char **err);

/* the bounds of a call's own context (docs/directives.md, README) */
#define NGX_HTTP_VOICE_BODY_INSTRUCTIONS_MAX   2000
#define NGX_HTTP_VOICE_BODY_GREETING_MAX       500
#define NGX_HTTP_VOICE_BODY_CONTEXT_MEMBERS    16
#define NGX_HTTP_VOICE_BODY_CONTEXT_KEY_MAX    64
#define NGX_HTTP_VOICE_BODY_CONTEXT_VALUE_MAX  256
#define NGX_HTTP_VOICE_BODY_EXTRA_MAX          2048

/* machineDetection: not given, false, true; and a location's "wait" */
#define NGX_HTTP_VOICE_BODY_AMD_UNSET  -1
#define NGX_HTTP_VOICE_BODY_AMD_OFF     0
#define NGX_HTTP_VOICE_BODY_AMD_ON      1
#define NGX_HTTP_VOICE_BODY_AMD_WAIT    2


/* a JSON literal within a text: a string with its quotes, an object */
typedef struct {
    const uint8_t   *data;
    size_t           len;
} ngx_http_voice_body_slice_t;


/*
 * POST /api/call's optional members that shape the call's assistant:
 * "instructions" and "greeting" (strings), "context" (a flat object of
 * string values) -- their bounds above -- and "machineDetection" (a
 * boolean, into *amd).  On success, out (cap bytes) gets a compact JSON
 * object of those present, as the client wrote them, *out_len its length
 * (0 when none is present) and 0 is returned; otherwise -1 and *err says
 * why.
 */
int ngx_http_voice_body_parse_call_extra(const uint8_t *body, size_t len,
    uint8_t *out, size_t cap, size_t *out_len, int *amd, const char **err);

/*
 * The object parse_call_extra() wrote, read back at the call's stream
 * (after its trip through Twilio): the literals of the members present
 * (data NULL when absent) and "machineDetection" ("on", "wait", "off").
 * 0, or -1 when it is not such an object.
 */
int ngx_http_voice_body_call_extra(const uint8_t *text, size_t len,
    ngx_http_voice_body_slice_t *instructions,
    ngx_http_voice_body_slice_t *greeting,
    ngx_http_voice_body_slice_t *context, int *amd);

/*
 * POST /api/end-call: {"callSid": "CA…"}.  Copies the SID, NUL-terminated,
 * into call_sid (NGX_HTTP_VOICE_SID_LEN + 1 bytes).  0 or -1 as above.
 */
int ngx_http_voice_body_parse_end_call(const uint8_t *body, size_t len,
    char *call_sid, const char **err);


/* one decoded form parameter; views into the caller's scratch buffer */
typedef struct {
    const uint8_t   *name;
    size_t           name_len;
    const uint8_t   *value;
    size_t           value_len;
} ngx_http_voice_body_param_t;

/*
 * Parses application/x-www-form-urlencoded data (a POST body, or a query
 * string without the '?'): splits on '&', then '=', decodes '+' as space
 * and %XX; keeps empty values, skips empty pairs.  Decoded names and
 * values go to scratch (len bytes always suffice).  Returns the number of
 * parameters, or -1 for a bad %-escape, more than max parameters, or
 * scratch too small.
 */
int ngx_http_voice_body_parse_form(const uint8_t *data, size_t len,
    ngx_http_voice_body_param_t *params, size_t max, uint8_t *scratch,
    size_t scratch_size);

/*
 * A JSON webhook body (Twilio's bodySHA256 variant): an object whose
 * string and number members become parameters, as a form's would; other
 * members are skipped.  Names and string values are unescaped into
 * scratch (len bytes always suffice), a number keeps its literal text.
 * Returns the number of parameters, or -1 with *err set when the body is
 * not a JSON object, has more than max such members, or a name or value
 * holds a NUL.
 */
int ngx_http_voice_body_parse_json_params(const uint8_t *body, size_t len,
    ngx_http_voice_body_param_t *params, size_t max, uint8_t *scratch,
    size_t scratch_size, const char **err);

/*
 * The Idempotency-Key header of POST /api/call, as the IETF draft
 * (draft-ietf-httpapi-idempotency-key-header) writes it -- a structured
 * field string, "8e03978e-40d5-43e8-bc93-6894a57f9324", with \" and \\
 * escapes -- or bare, as Stripe's clients send it: visible ASCII without
 * quotes, spaces or backslashes.  The key itself (unquoted, unescaped)
 * goes to out (NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX bytes), *out_len its
 * length.  Returns 0, or -1 for an empty key, a longer one, another
 * character, or a broken quoted string.
 */
#define NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX   255

int ngx_http_voice_body_idempotency_key(const uint8_t *value, size_t len,
    uint8_t *out, size_t *out_len);

/* the value of the first parameter called name, or NULL */
const ngx_http_voice_body_param_t *ngx_http_voice_body_form_get(
    const ngx_http_voice_body_param_t *params, size_t n, const char *name);


#endif /* NGX_HTTP_VOICE_BODY_H */
