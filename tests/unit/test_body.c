/*
 * test_body.c: unit tests of ngx_voice_module/ngx_http_voice_body.c: the
 * E.164 and SID validators at their edges, the /api/call and
 * /api/end-call bodies with the exact error texts API clients see, and the
 * form decoder Twilio's webhooks go through.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ngx_http_voice_body.h"


#define U(s)  ((const uint8_t *) (s))

#define E164_ERR  "number must be a phone number in E.164 format, " \
                  "like +14155550123"
#define FROM_ERR  "fromNumber must be a phone number in E.164 format, " \
                  "like +14155550123"
#define SID_ERR   "callSid must be a call SID: CA followed by " \
                  "32 hexadecimal digits"


static int
e164(const char *s)
{
    return ngx_http_voice_body_valid_e164(U(s), strlen(s));
}


static int
call_sid(const char *s)
{
    return ngx_http_voice_body_valid_call_sid(U(s), strlen(s));
}


static void
test_valid_e164(void **state)
{
    (void) state;

    assert_true(e164("+14155550123"));
    assert_true(e164("+12"));
    assert_true(e164("+912345678901234"));     /* 15 digits */
    assert_true(e164("+447911123456"));

    assert_false(e164(""));
    assert_false(e164("+"));
    assert_false(e164("+1"));                  /* one digit */
    assert_false(e164("+9123456789012345"));   /* 16 digits */
    assert_false(e164("+04155550123"));
    assert_false(e164("14155550123"));
    assert_false(e164("++14155550123"));
    assert_false(e164("+1415555012a"));
    assert_false(e164("+1 4155550123"));
    assert_false(e164(" +14155550123"));
    assert_false(e164("+14155550123 "));
    assert_false(e164("+1-415-555-0123"));
    assert_false(e164("+1415555012\xd9\xa3"));  /* an Arabic-Indic digit */

    /* the length is the length: an embedded NUL is not an end */
    assert_false(ngx_http_voice_body_valid_e164(U("+1415\0"), 6));
}


static void
test_valid_sids(void **state)
{
    (void) state;

    assert_true(call_sid("CA0123456789abcdef0123456789abcdef"));
    assert_true(call_sid("CA0123456789ABCDEF0123456789ABCDEF"));
    assert_false(call_sid("ca0123456789abcdef0123456789abcdef"));
    assert_false(call_sid("CB0123456789abcdef0123456789abcdef"));
    assert_false(call_sid("CA0123456789abcdef0123456789abcde"));
    assert_false(call_sid("CA0123456789abcdef0123456789abcdef0"));
    assert_false(call_sid("CA0123456789abcdef0123456789abcdeg"));
    assert_false(call_sid("CA0123456789abcdef 123456789abcdef"));
    assert_false(call_sid(""));
    assert_false(call_sid("CA"));

    assert_true(ngx_http_voice_body_valid_sid(
                    U("MZ00112233445566778899aabbccddeeff"), 34, "MZ"));
    assert_false(ngx_http_voice_body_valid_sid(
                    U("MZ00112233445566778899aabbccddeeff"), 34, "AC"));
    assert_true(ngx_http_voice_body_valid_sid(
                    U("AC00000000000000000000000000000001"), 34, "AC"));
    assert_false(ngx_http_voice_body_valid_sid(U("AC"), 2, "AC"));
}


static void
assert_call(const char *body, int rc, const char *number, const char *from,
    const char *err)
{
    int          r;
    char         n[NGX_HTTP_VOICE_E164_MAX + 2], f[NGX_HTTP_VOICE_E164_MAX + 2];
    const char  *e;

    /* a guard byte past each buffer */
    memset(n, 'Z', sizeof(n));
    memset(f, 'Z', sizeof(f));
    e = NULL;

    r = ngx_http_voice_body_parse_call(U(body), strlen(body), n, f, &e);

    if (r != rc) {
        print_error("body %s: rc %d, err %s\n", body, r, e ? e : "-");
    }

    assert_int_equal(r, rc);
    assert_int_equal(n[NGX_HTTP_VOICE_E164_MAX + 1], 'Z');
    assert_int_equal(f[NGX_HTTP_VOICE_E164_MAX + 1], 'Z');

    if (rc == 0) {
        assert_string_equal(n, number);
        assert_string_equal(f, from);

    } else {
        assert_non_null(e);
        assert_string_equal(e, err);
    }
}


static void
test_parse_call(void **state)
{
    (void) state;

    assert_call("{\"number\": \"+14155550123\"}", 0, "+14155550123", "",
                NULL);
    assert_call("{\"number\":\"+14155550123\",\"fromNumber\":\"+15005550006\"}",
                0, "+14155550123", "+15005550006", NULL);
    assert_call("{\"fromNumber\":\"+15005550006\",\"number\":\"+14155550123\"}",
                0, "+14155550123", "+15005550006", NULL);
    assert_call("{\"number\":\"+14155550123\",\"fromNumber\":null}", 0,
                "+14155550123", "", NULL);
    assert_call("{\"number\":\"+14155550123\",\"fromNumber\":\"\"}", 0,
                "+14155550123", "", NULL);
    assert_call("{\"number\":\"+912345678901234\",\"other\":[1,{\"x\":2}]}",
                0, "+912345678901234", "", NULL);
    assert_call(" {\"number\":\"\\u002b14155550123\"} \n", 0,
                "+14155550123", "", NULL);

    /* the first of duplicate members wins */
    assert_call("{\"number\":\"+14155550123\",\"number\":\"bad\"}", 0,
                "+14155550123", "", NULL);

    assert_call("{\"number\":\"4155550123\"}", -1, NULL, NULL, E164_ERR);
    assert_call("{\"number\":\"+1 415 555 0123\"}", -1, NULL, NULL, E164_ERR);
    assert_call("{\"number\":\"+9123456789012345\"}", -1, NULL, NULL,
                E164_ERR);
    assert_call("{\"number\":\"+91234567890123456789\"}", -1, NULL, NULL,
                E164_ERR);
    assert_call("{\"number\":\"\"}", -1, NULL, NULL, E164_ERR);
    assert_call("{\"number\":\"+1415\\u00005550123\"}", -1, NULL, NULL,
                E164_ERR);

    assert_call("{}", -1, NULL, NULL,
                "number is required: a phone number in E.164 format, "
                "like +14155550123");
    assert_call("{\"Number\":\"+14155550123\"}", -1, NULL, NULL,
                "number is required: a phone number in E.164 format, "
                "like +14155550123");
    assert_call("{\"number\":14155550123}", -1, NULL, NULL,
                "number must be a string: a phone number in E.164 format, "
                "like +14155550123");
    assert_call("{\"number\":null}", -1, NULL, NULL,
                "number must be a string: a phone number in E.164 format, "
                "like +14155550123");

    assert_call("{\"number\":\"+14155550123\",\"fromNumber\":\"123\"}", -1,
                NULL, NULL, FROM_ERR);
    assert_call("{\"number\":\"+14155550123\",\"fromNumber\":"
                "\"+1500555000612345678\"}", -1, NULL, NULL, FROM_ERR);
    assert_call("{\"number\":\"+14155550123\",\"fromNumber\":15005550006}",
                -1, NULL, NULL,
                "fromNumber must be a string: a phone number in E.164 "
                "format, like +14155550123, or null");
    assert_call("{\"number\":\"+14155550123\",\"fromNumber\":false}",
                -1, NULL, NULL,
                "fromNumber must be a string: a phone number in E.164 "
                "format, like +14155550123, or null");

    assert_call("", -1, NULL, NULL, "body is empty: a JSON object is expected");
    assert_call("{\"number\":\"+14155550123\"", -1, NULL, NULL,
                "body is not valid JSON");
    assert_call("number=+14155550123", -1, NULL, NULL,
                "body is not valid JSON");
    assert_call("[\"+14155550123\"]", -1, NULL, NULL,
                "body must be a JSON object");
    assert_call("\"+14155550123\"", -1, NULL, NULL,
                "body must be a JSON object");
    assert_call("{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}", -1, NULL, NULL,
                "body is nested too deeply");
}


static void
test_parse_call_too_many_values(void **state)
{
    int          i;
    char         body[2048], *p, n[17], f[17];
    const char  *e;

    (void) state;

    p = body;
    p += sprintf(p, "{\"number\":\"+14155550123\",\"x\":[");

    for (i = 0; i < 300; i++) {
        p += sprintf(p, "%s0", i ? "," : "");
    }

    sprintf(p, "]}");

    e = NULL;
    assert_int_equal(ngx_http_voice_body_parse_call(U(body), strlen(body), n,
                                                    f, &e), -1);
    assert_string_equal(e, "body has too many JSON values");
}


static void
assert_end_call(const char *body, int rc, const char *sid, const char *err)
{
    int          r;
    char         out[NGX_HTTP_VOICE_SID_LEN + 2];
    const char  *e;

    memset(out, 'Z', sizeof(out));
    e = NULL;

    r = ngx_http_voice_body_parse_end_call(U(body), strlen(body), out, &e);

    assert_int_equal(r, rc);
    assert_int_equal(out[NGX_HTTP_VOICE_SID_LEN + 1], 'Z');

    if (rc == 0) {
        assert_string_equal(out, sid);

    } else {
        assert_non_null(e);
        assert_string_equal(e, err);
    }
}


static void
test_parse_end_call(void **state)
{
    (void) state;

    assert_end_call("{\"callSid\":\"CA0123456789abcdef0123456789abcdef\"}", 0,
                    "CA0123456789abcdef0123456789abcdef", NULL);
    assert_end_call("{\"x\":1,\"callSid\":"
                    "\"CA0123456789ABCDEF0123456789ABCDEF\"}", 0,
                    "CA0123456789ABCDEF0123456789ABCDEF", NULL);

    assert_end_call("{\"callSid\":\"CA0123\"}", -1, NULL, SID_ERR);
    assert_end_call("{\"callSid\":\"CA0123456789abcdef0123456789abcdef0\"}",
                    -1, NULL, SID_ERR);
    assert_end_call("{\"callSid\":\"CA0123456789abcdef0123456789abcdefabcdef"
                    "0123456789\"}", -1, NULL, SID_ERR);
    assert_end_call("{\"callSid\":\"MZ0123456789abcdef0123456789abcdef\"}",
                    -1, NULL, SID_ERR);
    assert_end_call("{\"callSid\":\"\"}", -1, NULL, SID_ERR);
    assert_end_call("{\"callSid\":1}", -1, NULL,
                    "callSid must be a string: a call SID, CA followed by "
                    "32 hexadecimal digits");
    assert_end_call("{\"sid\":\"CA0123456789abcdef0123456789abcdef\"}", -1,
                    NULL,
                    "callSid is required: a call SID, CA followed by "
                    "32 hexadecimal digits");
    assert_end_call("{callSid: \"CA0123456789abcdef0123456789abcdef\"}", -1,
                    NULL, "body is not valid JSON");
    assert_end_call("[]", -1, NULL, "body must be a JSON object");
}


static int
form(const char *data, ngx_http_voice_body_param_t *p, size_t max,
    uint8_t *scratch, size_t size)
{
    return ngx_http_voice_body_parse_form(U(data), strlen(data), p, max,
                                          scratch, size);
}


static void
assert_param(const ngx_http_voice_body_param_t *p, const char *name,
    size_t nlen, const char *value, size_t vlen)
{
    assert_int_equal(p->name_len, nlen);
    assert_memory_equal(p->name, name, nlen);
    assert_int_equal(p->value_len, vlen);
    assert_memory_equal(p->value, value, vlen);
}


static void
test_parse_form(void **state)
{
    uint8_t                       scratch[256];
    ngx_http_voice_body_param_t   p[8];

    (void) state;

    assert_int_equal(form("a=1&b=2", p, 8, scratch, sizeof(scratch)), 2);
    assert_param(&p[0], "a", 1, "1", 1);
    assert_param(&p[1], "b", 1, "2", 1);

    /* '+' and %XX in names and values, either case */
    assert_int_equal(form("Caller+Name=Jane+Doe&To=%2B1415&X%3d=%2f%2F%00",
                          p, 8, scratch, sizeof(scratch)), 3);
    assert_param(&p[0], "Caller Name", 11, "Jane Doe", 8);
    assert_param(&p[1], "To", 2, "+1415", 5);
    assert_param(&p[2], "X=", 2, "//\0", 3);

    /* empty values kept, empty pairs skipped, only the first '=' splits */
    assert_int_equal(form("&&a&b=&&=v&c=1=2&", p, 8, scratch,
                          sizeof(scratch)), 4);
    assert_param(&p[0], "a", 1, "", 0);
    assert_param(&p[1], "b", 1, "", 0);
    assert_param(&p[2], "", 0, "v", 1);
    assert_param(&p[3], "c", 1, "1=2", 3);

    assert_int_equal(form("", p, 8, scratch, sizeof(scratch)), 0);
    assert_int_equal(form("&", p, 8, scratch, sizeof(scratch)), 0);

    /* bad %-escapes */
    assert_int_equal(form("a=%", p, 8, scratch, sizeof(scratch)), -1);
    assert_int_equal(form("a=%4", p, 8, scratch, sizeof(scratch)), -1);
    assert_int_equal(form("a=%4&b=1", p, 8, scratch, sizeof(scratch)), -1);
    assert_int_equal(form("a=%g1", p, 8, scratch, sizeof(scratch)), -1);
    assert_int_equal(form("a=%1g", p, 8, scratch, sizeof(scratch)), -1);
    assert_int_equal(form("%zz=1", p, 8, scratch, sizeof(scratch)), -1);
    assert_int_equal(form("a=%%41", p, 8, scratch, sizeof(scratch)), -1);

    /* the parameter limit: exactly max, then one more */
    assert_int_equal(form("a=1&b=2&c=3", p, 3, scratch, sizeof(scratch)), 3);
    assert_int_equal(form("a=1&b=2&c=3&", p, 3, scratch, sizeof(scratch)), 3);
    assert_int_equal(form("a=1&b=2&c=3&d", p, 3, scratch, sizeof(scratch)),
                     -1);
    assert_int_equal(form("a", p, 0, scratch, sizeof(scratch)), -1);

    /* len bytes of scratch always suffice, fewer may not */
    assert_int_equal(form("ab=cd&ef=gh", p, 8, scratch, 11), 2);
    assert_param(&p[1], "ef", 2, "gh", 2);
    assert_int_equal(form("ab=cd&ef=gh", p, 8, scratch, 7), -1);
    assert_int_equal(form("ab=cd&ef=gh", p, 8, scratch, 0), -1);
}


static void
test_form_get(void **state)
{
    uint8_t                             scratch[256];
    ngx_http_voice_body_param_t         p[8];
    const ngx_http_voice_body_param_t  *v;

    (void) state;

    assert_int_equal(form("CallSid=CA1&From=%2B1&CallSid=CA2&Empty=",
                          p, 8, scratch, sizeof(scratch)), 4);

    v = ngx_http_voice_body_form_get(p, 4, "CallSid");
    assert_non_null(v);
    assert_memory_equal(v->value, "CA1", 3);

    v = ngx_http_voice_body_form_get(p, 4, "From");
    assert_non_null(v);
    assert_int_equal(v->value_len, 2);
    assert_memory_equal(v->value, "+1", 2);

    v = ngx_http_voice_body_form_get(p, 4, "Empty");
    assert_non_null(v);
    assert_int_equal(v->value_len, 0);

    assert_null(ngx_http_voice_body_form_get(p, 4, "callsid"));
    assert_null(ngx_http_voice_body_form_get(p, 4, "Call"));
    assert_null(ngx_http_voice_body_form_get(p, 4, "CallSidX"));
    assert_null(ngx_http_voice_body_form_get(p, 0, "CallSid"));
}


static int
jparams(const char *body, ngx_http_voice_body_param_t *p, size_t max,
    uint8_t *scratch, size_t cap, const char **err)
{
    *err = NULL;
    return ngx_http_voice_body_parse_json_params((const uint8_t *) body,
                                                 strlen(body), p, max,
                                                 scratch, cap, err);
}


static void
test_parse_json_params(void **state)
{
    const char                   *err, *b;
    uint8_t                       scratch[256];
    ngx_http_voice_body_param_t   p[8];

    (void) state;

    /* strings unescaped, numbers as written, other members skipped */
    b = "{\"CallSid\":\"CA1\",\"CallDuration\":42,\"nested\":{\"a\":\"b\"},"
        "\"Caller\":\"\\u002B1415\",\"flag\":true,\"list\":[1,\"x\"],"
        "\"Empty\":\"\",\"Big\":-1.5e3}";
    assert_int_equal(jparams(b, p, 8, scratch, sizeof(scratch), &err), 5);
    assert_param(&p[0], "CallSid", 7, "CA1", 3);
    assert_param(&p[1], "CallDuration", 12, "42", 2);
    assert_param(&p[2], "Caller", 6, "+1415", 5);
    assert_param(&p[3], "Empty", 5, "", 0);
    assert_param(&p[4], "Big", 3, "-1.5e3", 6);

    /* len bytes of scratch suffice */
    b = "{\"a\\u0062\":\"c\\td\",\"e\":1}";
    assert_int_equal(jparams(b, p, 8, scratch, strlen(b), &err), 2);
    assert_param(&p[0], "ab", 2, "c\td", 3);
    assert_param(&p[1], "e", 1, "1", 1);
    assert_int_equal(jparams(b, p, 8, scratch, 4, &err), -1);
    assert_non_null(err);

    assert_int_equal(jparams("{}", p, 8, scratch, sizeof(scratch), &err), 0);

    /* the member limit counts only what becomes a parameter */
    assert_int_equal(jparams("{\"a\":1,\"b\":null,\"c\":\"x\"}", p, 2,
                             scratch, sizeof(scratch), &err), 2);
    assert_int_equal(jparams("{\"a\":1,\"b\":2,\"c\":3}", p, 2, scratch,
                             sizeof(scratch), &err), -1);
    assert_string_equal(err, "body has too many members");

    /* not an object, not JSON, empty, a NUL in a name or value */
    assert_int_equal(jparams("[\"a\",1]", p, 8, scratch, sizeof(scratch),
                             &err), -1);
    assert_string_equal(err, "body must be a JSON object");
    assert_int_equal(jparams("{\"a\":", p, 8, scratch, sizeof(scratch),
                             &err), -1);
    assert_string_equal(err, "body is not valid JSON");
    assert_int_equal(jparams("", p, 8, scratch, sizeof(scratch), &err), -1);
    assert_int_equal(jparams("{\"a\":\"x\\u0000\"}", p, 8, scratch,
                             sizeof(scratch), &err), -1);
    assert_int_equal(jparams("{\"a\\u0000\":\"x\"}", p, 8, scratch,
                             sizeof(scratch), &err), -1);
    assert_non_null(err);
}


static size_t
extra(const char *body, int *amd, const char **err, char *out)
{
    size_t  n;

    *err = NULL;

    if (ngx_http_voice_body_parse_call_extra((const uint8_t *) body,
                                             strlen(body), (uint8_t *) out,
                                             4096, &n, amd, err)
        != 0)
    {
        assert_non_null(*err);
        return (size_t) -1;
    }

    out[n] = '\0';
    return n;
}


static void
test_call_extra(void **state)
{
    int          amd;
    char         out[4096], big[4096], res[4096];
    size_t       n;
    const char  *err;

    ngx_http_voice_body_slice_t  ins, greet, ctx;

    (void) state;

    /* none: nothing to carry */
    assert_int_equal(extra("{\"number\":\"+14155550123\"}", &amd, &err, out),
                     0);
    assert_int_equal(amd, NGX_HTTP_VOICE_BODY_AMD_UNSET);

    /* all of them, as written (escapes kept), in a fixed order */
    n = extra("{\"number\":\"+14155550123\",\"context\":{\"name\":\"Jane\","
              "\"time\":\"7 pm\"},\"greeting\":\"Hi \\u00e9\","
              "\"instructions\":\"Confirm the \\\"booking\\\".\","
              "\"machineDetection\":true}", &amd, &err, out);
    assert_int_not_equal(n, (size_t) -1);
    assert_string_equal(out, "{\"instructions\":\"Confirm the \\\"booking"
                        "\\\".\",\"greeting\":\"Hi \\u00e9\",\"context\":"
                        "{\"name\":\"Jane\",\"time\":\"7 pm\"}}");
    assert_int_equal(amd, NGX_HTTP_VOICE_BODY_AMD_ON);

    /* read back */
    assert_int_equal(ngx_http_voice_body_call_extra((uint8_t *) out, n, &ins,
                                                    &greet, &ctx, &amd), 0);
    assert_memory_equal(ins.data, "\"Confirm the \\\"booking\\\".\"",
                        ins.len);
    assert_memory_equal(greet.data, "\"Hi \\u00e9\"", greet.len);
    assert_memory_equal(ctx.data, "{\"name\":\"Jane\",\"time\":\"7 pm\"}",
                        ctx.len);
    assert_int_equal(amd, NGX_HTTP_VOICE_BODY_AMD_UNSET);

    assert_int_equal(ngx_http_voice_body_call_extra(
                         (const uint8_t *) "{\"machineDetection\":\"wait\"}",
                         27, &ins, &greet, &ctx, &amd), 0);
    assert_int_equal(amd, NGX_HTTP_VOICE_BODY_AMD_WAIT);
    assert_null(ins.data);

    /* nulls are "not given"; false is off */
    assert_int_equal(extra("{\"instructions\":null,\"context\":null,"
                           "\"machineDetection\":false}", &amd, &err, out),
                     0);
    assert_int_equal(amd, NGX_HTTP_VOICE_BODY_AMD_OFF);

    /* refused, each with its reason */
    assert_int_equal(extra("{\"instructions\":5}", &amd, &err, out),
                     (size_t) -1);
    assert_non_null(strstr(err, "instructions"));
    assert_int_equal(extra("{\"instructions\":\"\"}", &amd, &err, out),
                     (size_t) -1);
    assert_int_equal(extra("{\"greeting\":[\"x\"]}", &amd, &err, out),
                     (size_t) -1);
    assert_non_null(strstr(err, "greeting"));
    assert_int_equal(extra("{\"context\":{\"a\":1}}", &amd, &err, out),
                     (size_t) -1);
    assert_non_null(strstr(err, "context"));
    assert_int_equal(extra("{\"context\":{\"a\":{\"b\":\"c\"}}}", &amd,
                           &err, out), (size_t) -1);
    assert_int_equal(extra("{\"context\":\"a=b\"}", &amd, &err, out),
                     (size_t) -1);
    assert_int_equal(extra("{\"context\":{\"\":\"x\"}}", &amd, &err, out),
                     (size_t) -1);
    assert_int_equal(extra("{\"machineDetection\":\"yes\"}", &amd, &err,
                           out), (size_t) -1);
    assert_non_null(strstr(err, "machineDetection"));

    /* the bounds */
    memset(big, 'x', 2001);
    snprintf(out, sizeof(out), "{\"instructions\":\"%.*s\"}", 2001, big);
    assert_int_equal(extra(out, &amd, &err, res), (size_t) -1);
    snprintf(out, sizeof(out), "{\"instructions\":\"%.*s\"}", 2000, big);
    assert_int_not_equal(extra(out, &amd, &err, res), (size_t) -1);
    snprintf(out, sizeof(out), "{\"greeting\":\"%.*s\"}", 501, big);
    assert_int_equal(extra(out, &amd, &err, res), (size_t) -1);
    snprintf(out, sizeof(out), "{\"instructions\":\"%.*s\",\"greeting\":"
             "\"%.*s\"}", 1800, big, 400, big);
    assert_int_equal(extra(out, &amd, &err, res), (size_t) -1);
    assert_non_null(strstr(err, "2048"));
    assert_int_equal(extra("{\"context\":{\"a\":\"1\",\"b\":\"1\",\"c\":\"1\","
                           "\"d\":\"1\",\"e\":\"1\",\"f\":\"1\",\"g\":\"1\","
                           "\"h\":\"1\",\"i\":\"1\",\"j\":\"1\",\"k\":\"1\","
                           "\"l\":\"1\",\"m\":\"1\",\"n\":\"1\",\"o\":\"1\","
                           "\"p\":\"1\",\"q\":\"1\"}}", &amd, &err, out),
                     (size_t) -1);

    /* what is not ours does not read back */
    assert_int_equal(ngx_http_voice_body_call_extra(
                         (const uint8_t *) "{\"context\":\"x\"}", 15, &ins,
                         &greet, &ctx, &amd), -1);
    assert_int_equal(ngx_http_voice_body_call_extra(
                         (const uint8_t *) "[]", 2, &ins, &greet, &ctx,
                         &amd), -1);
}


static int
idem(const char *value, char *out)
{
    size_t   n;
    uint8_t  buf[NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX];

    if (ngx_http_voice_body_idempotency_key((const uint8_t *) value,
                                            strlen(value), buf, &n)
        != 0)
    {
        return -1;
    }

    memcpy(out, buf, n);
    out[n] = '\0';

    return (int) n;
}


static void
test_idempotency_key(void **state)
{
    size_t        i;
    char          out[NGX_HTTP_VOICE_BODY_IDEM_KEY_MAX + 1];
    char          long_key[400];
    const char   *bad[] = {
        "",
        "\"\"",                       /* an empty string */
        "a b",                        /* a bare key has no space */
        "a\"b",
        "a\\b",
        "caf\xc3\xa9",                 /* visible ASCII only */
        "\"abc",                      /* no closing quote */
        "\"abc\"x",                   /* something after it */
        "\"a\"b\"",
        "\"a\\x\"",                  /* \\ escapes only \" and \\ */
        "\"a\\\"",                   /* an escape that eats the quote */
        "\"tab\there\"",
        "\"nl\nhere\"",
        "ab\x7f",
    };

    (void) state;

    /* bare, as Stripe's clients send it */
    assert_int_equal(idem("8e03978e-40d5-43e8-bc93-6894a57f9324", out), 36);
    assert_string_equal(out, "8e03978e-40d5-43e8-bc93-6894a57f9324");
    assert_int_equal(idem("a", out), 1);
    assert_int_equal(idem("order:42/retry=1", out), 16);

    /* a structured field string, as the IETF draft writes it */
    assert_int_equal(idem("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"", out),
                     36);
    assert_string_equal(out, "8e03978e-40d5-43e8-bc93-6894a57f9324");
    assert_int_equal(idem("\"with space\"", out), 10);
    assert_string_equal(out, "with space");
    assert_int_equal(idem("\"q\\\"uote\\\\d\"", out), 8);
    assert_string_equal(out, "q\"uote\\d");

    /* the same key either way */
    assert_int_equal(idem("\"abc\"", out), 3);
    assert_string_equal(out, "abc");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (idem(bad[i], out) != -1) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
    }

    /* 255 bytes at most, either way */
    memset(long_key, 'k', sizeof(long_key));
    long_key[255] = '\0';
    assert_int_equal(idem(long_key, out), 255);
    long_key[255] = 'k';
    long_key[256] = '\0';
    assert_int_equal(idem(long_key, out), -1);

    long_key[0] = '"';
    long_key[256] = '"';
    long_key[257] = '\0';
    assert_int_equal(idem(long_key, out), 255);
    long_key[257] = 'k';
    long_key[258] = '"';
    long_key[259] = '\0';
    long_key[256] = 'k';
    assert_int_equal(idem(long_key, out), -1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_valid_e164),
        cmocka_unit_test(test_valid_sids),
        cmocka_unit_test(test_parse_call),
        cmocka_unit_test(test_parse_call_too_many_values),
        cmocka_unit_test(test_parse_end_call),
        cmocka_unit_test(test_parse_form),
        cmocka_unit_test(test_form_get),
        cmocka_unit_test(test_parse_json_params),
        cmocka_unit_test(test_call_extra),
        cmocka_unit_test(test_idempotency_key),
    };

    return cmocka_run_group_tests_name("body", tests, NULL, NULL);
}
