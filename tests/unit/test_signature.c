/*
 * test_signature.c: unit tests of ngx_voice_module/ngx_http_voice_signature.c
 * against every worked example of docs/protocols.md, Twilio REST
 * section 10: twilio-python's known answers (with the port variants and
 * the repeated key), and the constructed vectors A-D (status callback,
 * WebSocket upgrade over wss://, JSON body, voice webhook).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/sha.h>

#include "ngx_http_voice_body.h"
#include "ngx_http_voice_signature.h"


#define U(s)  ((const uint8_t *) (s))

#define KAT_TOKEN  "12345"
#define KAT_URL    "https://mycompany.com/myapp.php?foo=1&bar=2"
#define TOKEN      "0123456789abcdef0123456789abcdef"


typedef struct {
    ngx_http_voice_body_param_t  params[32];
    size_t                       order[32];
    size_t                       n;
    uint8_t                      scratch[2048];
    uint8_t                      form[2048];
} sig_ctx_t;


static void
add(sig_ctx_t *c, const char *name, const char *value)
{
    c->params[c->n].name = U(name);
    c->params[c->n].name_len = strlen(name);
    c->params[c->n].value = U(value);
    c->params[c->n].value_len = strlen(value);
    c->n++;
}


static void
kat_params1(sig_ctx_t *c)
{
    memset(c, 0, sizeof(sig_ctx_t));

    /* deliberately not in byte order */
    add(c, "To", "+18005551212");
    add(c, "CallSid", "CA1234567890ABCDE");
    add(c, "Digits", "1234");
    add(c, "From", "+14158675309");
    add(c, "Caller", "+14158675309");
}


static void
parse_body(sig_ctx_t *c, const char *body)
{
    int  n;

    memset(c, 0, sizeof(sig_ctx_t));

    n = ngx_http_voice_body_parse_form(U(body), strlen(body), c->params, 32,
                                       c->form, sizeof(c->form));
    assert_true(n > 0);
    c->n = (size_t) n;
}


static int
check(sig_ctx_t *c, const char *token, const char *url, const char *header)
{
    return ngx_http_voice_signature_check(U(token), strlen(token), U(url),
                                          strlen(url), c->params, c->n,
                                          c->order, U(header), strlen(header),
                                          c->scratch, sizeof(c->scratch));
}


static void
assert_signs(sig_ctx_t *c, const char *token, const char *url,
    const char *expect)
{
    size_t   len;
    uint8_t  sig[NGX_HTTP_VOICE_SIGNATURE_LEN];

    len = ngx_http_voice_signature_canonical(U(url), strlen(url), c->params,
                                             c->n, c->order, c->scratch,
                                             sizeof(c->scratch));
    assert_int_not_equal(len, (size_t) -1);
    assert_int_equal(ngx_http_voice_signature_compute(U(token), strlen(token),
                                                      c->scratch, len, sig),
                     0);
    assert_memory_equal(sig, expect, NGX_HTTP_VOICE_SIGNATURE_LEN);
    assert_int_equal(check(c, token, url, expect), 1);
}


static void
assert_canonical(sig_ctx_t *c, const char *url, const char *expect)
{
    size_t  len;

    len = ngx_http_voice_signature_canonical(U(url), strlen(url), c->params,
                                             c->n, c->order, c->scratch,
                                             sizeof(c->scratch));
    assert_int_equal(len, strlen(expect));
    assert_memory_equal(c->scratch, expect, len);
}


static void
test_kat_first_params(void **state)
{
    sig_ctx_t  c;

    (void) state;

    kat_params1(&c);

    assert_canonical(&c, KAT_URL,
                     KAT_URL "CallSidCA1234567890ABCDECaller+14158675309"
                     "Digits1234From+14158675309To+18005551212");
    assert_signs(&c, KAT_TOKEN, KAT_URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8=");

    /* params is not modified: the order array does the sorting */
    assert_memory_equal(c.params[0].name, "To", 2);
}


static void
test_kat_port_variants(void **state)
{
    sig_ctx_t  c;

    (void) state;

    kat_params1(&c);

    /* each URL signs to twilio-python's expected value */
    assert_signs(&c, KAT_TOKEN,
                 "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                 "kvajT1Ptam85bY51eRf/AJRuM3w=");
    assert_signs(&c, KAT_TOKEN,
                 "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                 "0ZXoZLH/DfblKGATFgpif+LLRf4=");
    assert_signs(&c, KAT_TOKEN,
                 "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                 "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=");

    /* a port-less URL also accepts the signature over the default port */
    assert_int_equal(check(&c, KAT_TOKEN, KAT_URL,
                           "kvajT1Ptam85bY51eRf/AJRuM3w="), 1);
    assert_int_equal(check(&c, KAT_TOKEN,
                           "http://mycompany.com/myapp.php?foo=1&bar=2",
                           "0ZXoZLH/DfblKGATFgpif+LLRf4="), 1);

    /* a URL with a port also accepts the signature without it */
    assert_int_equal(check(&c, KAT_TOKEN,
                           "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                           "RSOYDt4T1cUTdK1PDd93/VVr8B8="), 1);

    /* but a non-default port is not added to a port-less URL */
    assert_int_equal(check(&c, KAT_TOKEN,
                           "http://mycompany.com/myapp.php?foo=1&bar=2",
                           "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="), 0);

    /* and the scheme's default is never the other scheme's */
    assert_int_equal(check(&c, KAT_TOKEN, KAT_URL,
                           "0ZXoZLH/DfblKGATFgpif+LLRf4="), 0);
    assert_int_equal(check(&c, KAT_TOKEN,
                           "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                           "0ZXoZLH/DfblKGATFgpif+LLRf4="), 0);
}


static void
test_kat_repeated_key(void **state)
{
    sig_ctx_t  c;

    (void) state;

    memset(&c, 0, sizeof(sig_ctx_t));
    add(&c, "Sid", "CA123");
    add(&c, "SidAccount", "AC123");
    add(&c, "Digits", "5678");
    add(&c, "Digits", "1234");
    add(&c, "Digits", "1234");

    /* one name per distinct value, values sorted, the duplicate dropped */
    assert_canonical(&c, KAT_URL,
                     KAT_URL "Digits1234Digits5678SidCA123SidAccountAC123");
    assert_signs(&c, KAT_TOKEN, KAT_URL, "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
}


static void
test_kat_body_sha256(void **state)
{
    size_t         i;
    uint8_t        md[SHA256_DIGEST_LENGTH];
    char           hex[2 * SHA256_DIGEST_LENGTH + 1];
    sig_ctx_t      c;
    const char    *body = "{\"property\": \"value\", \"boolean\": true}";

    (void) state;

    SHA256(U(body), strlen(body), md);

    for (i = 0; i < sizeof(md); i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }

    assert_string_equal(hex, "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7c"
                             "f19632632f96e6620");

    memset(&c, 0, sizeof(sig_ctx_t));
    assert_signs(&c, KAT_TOKEN,
                 KAT_URL "&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b2"
                 "83a80c7cf19632632f96e6620",
                 "a9nBmqA0ju/hNViExpshrM61xv4=");
}


static void
test_example_a_status_callback(void **state)
{
    sig_ctx_t  c;

    (void) state;

    parse_body(&c,
        "AccountSid=AC00000000000000000000000000000001&ApiVersion=2010-04-01"
        "&CallDuration=42&CallSid=CA00000000000000000000000000000002"
        "&CallStatus=completed&CallbackSource=call-progress-events"
        "&Called=%2B14155550123&Caller=%2B15005550006&Direction=outbound-api"
        "&From=%2B15005550006&SequenceNumber=3"
        "&Timestamp=Tue%2C+01+Sep+2026+10%3A00%3A00+%2B0000"
        "&To=%2B14155550123");
    assert_int_equal(c.n, 13);

    assert_canonical(&c, "https://bridge.example.com/twilio/status?tenant=acme",
        "https://bridge.example.com/twilio/status?tenant=acme"
        "AccountSidAC00000000000000000000000000000001ApiVersion2010-04-01"
        "CallDuration42CallSidCA00000000000000000000000000000002"
        "CallStatuscompletedCallbackSourcecall-progress-events"
        "Called+14155550123Caller+15005550006Directionoutbound-api"
        "From+15005550006SequenceNumber3"
        "TimestampTue, 01 Sep 2026 10:00:00 +0000To+14155550123");

    assert_signs(&c, TOKEN,
                 "https://bridge.example.com/twilio/status?tenant=acme",
                 "t74VYw87Kcu0wLA/vgbdMscMkSg=");
    assert_signs(&c, TOKEN,
                 "https://bridge.example.com:443/twilio/status?tenant=acme",
                 "Eoi3xVkUFSq8O4yuVr9ExXusOsI=");

    /* both port variants are accepted for the port-less URL */
    assert_int_equal(check(&c, TOKEN,
                           "https://bridge.example.com/twilio/status"
                           "?tenant=acme",
                           "Eoi3xVkUFSq8O4yuVr9ExXusOsI="), 1);

    /* a changed parameter, path or token is refused */
    c.params[2].value = U("43");
    assert_int_equal(check(&c, TOKEN,
                           "https://bridge.example.com/twilio/status"
                           "?tenant=acme",
                           "t74VYw87Kcu0wLA/vgbdMscMkSg="), 0);
    c.params[2].value = U("42");
    assert_int_equal(check(&c, TOKEN,
                           "https://bridge.example.com/twilio/status/"
                           "?tenant=acme",
                           "t74VYw87Kcu0wLA/vgbdMscMkSg="), 0);
    assert_int_equal(check(&c, "0123456789abcdef0123456789abcdee",
                           "https://bridge.example.com/twilio/status"
                           "?tenant=acme",
                           "t74VYw87Kcu0wLA/vgbdMscMkSg="), 0);
}


static void
test_example_b_websocket_upgrade(void **state)
{
    sig_ctx_t  c;

    (void) state;

    memset(&c, 0, sizeof(sig_ctx_t));

    assert_canonical(&c, "wss://bridge.example.com/media-stream",
                     "wss://bridge.example.com/media-stream");
    assert_signs(&c, TOKEN, "wss://bridge.example.com/media-stream",
                 "0ZvicYzAOFzBhn5l69PEtGsZ3pk=");

    /* the https:// reconstruction's signature is not valid for wss:// */
    assert_int_equal(check(&c, TOKEN, "wss://bridge.example.com/media-stream",
                           "EeRO3/dKOQfrpbyue97XBwvuqA4="), 0);
    assert_signs(&c, TOKEN, "https://bridge.example.com/media-stream",
                 "EeRO3/dKOQfrpbyue97XBwvuqA4=");
    assert_int_equal(check(&c, TOKEN, "https://bridge.example.com/media-stream",
                           "0ZvicYzAOFzBhn5l69PEtGsZ3pk="), 0);
}


static void
test_example_c_json_body(void **state)
{
    size_t         i;
    uint8_t        md[SHA256_DIGEST_LENGTH];
    char           hex[2 * SHA256_DIGEST_LENGTH + 1];
    sig_ctx_t      c;
    const char    *body = "{\"event\":\"test\",\"value\":1}";

    (void) state;

    SHA256(U(body), strlen(body), md);

    for (i = 0; i < sizeof(md); i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }

    assert_string_equal(hex, "7be7ef15405a070759439234b1431f7e8435071ed72dc35"
                             "fa03fcce0c70b7999");

    /* the body must be the one hashed into the URL */
    {
        const char  *u = "https://bridge.example.com/twilio/json-hook?"
                         "bodySHA256=7be7ef15405a070759439234b1431f7e8435071e"
                         "d72dc35fa03fcce0c70b7999";

        assert_int_equal(ngx_http_voice_signature_body_ok(U(u), strlen(u),
                                                          U(body),
                                                          strlen(body)), 1);
        assert_int_equal(ngx_http_voice_signature_body_ok(U(u), strlen(u),
                                                          U(body),
                                                          strlen(body) - 1),
                         0);
        assert_int_equal(ngx_http_voice_signature_body_ok(U(u),
                                                          strlen(u) - 1,
                                                          U(body),
                                                          strlen(body)), 0);
    }

    /* the URL with bodySHA256, no parameters */
    memset(&c, 0, sizeof(sig_ctx_t));
    assert_signs(&c, TOKEN,
                 "https://bridge.example.com/twilio/json-hook?bodySHA256="
                 "7be7ef15405a070759439234b1431f7e8435071ed72dc35fa03fcce0c70b"
                 "7999",
                 "tEp34ggaWukSu2R/3xrOe+ViMfQ=");
}


static void
test_body_sha256_refusals(void **state)
{
    const char  *body = "{\"event\":\"test\",\"value\":1}";
    const char  *hash = "7be7ef15405a070759439234b1431f7e8435071ed72dc35fa03"
                        "fcce0c70b7999";
    char         url[512];
    size_t       i;

    static const char  *bad[] = {
        "https://h/p",                                   /* no query */
        "https://h/p?foo=1",                             /* no bodySHA256 */
        "https://h/p?bodySHA256=%s&bodySHA256=%s",       /* twice */
        "https://h/p?bodysha256=%s",                     /* another name */
        "https://h/p?bodySHA256=%sff",                   /* too long */
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(url, sizeof(url), bad[i], hash, hash);
        assert_int_equal(ngx_http_voice_signature_body_ok(U(url), strlen(url),
                                                          U(body),
                                                          strlen(body)), 0);
    }

    /* among other parameters, and upper-case hex is not Twilio's */

    snprintf(url, sizeof(url), "https://h/p?a=1&bodySHA256=%s&b=2", hash);
    assert_int_equal(ngx_http_voice_signature_body_ok(U(url), strlen(url),
                                                      U(body), strlen(body)),
                     1);

    snprintf(url, sizeof(url), "https://h/p?bodySHA256=7BE7EF15405A0707594392"
             "34B1431F7E8435071ED72DC35FA03FCCE0C70B7999");
    assert_int_equal(ngx_http_voice_signature_body_ok(U(url), strlen(url),
                                                      U(body), strlen(body)),
                     0);
}


static void
test_example_d_voice_webhook(void **state)
{
    sig_ctx_t  c;

    (void) state;

    parse_body(&c,
        "AccountSid=AC00000000000000000000000000000001"
        "&CallSid=CA00000000000000000000000000000003&CallStatus=ringing"
        "&CallerName=Jane+Doe&Direction=inbound&From=%2B14155550100"
        "&To=%2B15005550006");

    assert_canonical(&c, "https://bridge.example.com/twilio/voice",
        "https://bridge.example.com/twilio/voiceAccountSid"
        "AC00000000000000000000000000000001CallSid"
        "CA00000000000000000000000000000003CallStatusringingCallerNameJane Doe"
        "DirectioninboundFrom+14155550100To+15005550006");
    assert_signs(&c, TOKEN, "https://bridge.example.com/twilio/voice",
                 "i/EjGw9taxhXdkt9CEEx4ybi5Ao=");
}


static void
test_check_refuses_bad_headers(void **state)
{
    sig_ctx_t  c;

    (void) state;

    memset(&c, 0, sizeof(sig_ctx_t));

    assert_int_equal(check(&c, TOKEN, "wss://bridge.example.com/media-stream",
                           "0ZvicYzAOFzBhn5l69PEtGsZ3pk="), 1);

    /* one character off, the last one, truncated, padded, empty */
    assert_int_equal(check(&c, TOKEN, "wss://bridge.example.com/media-stream",
                           "0ZvicYzAOFzBhn5l69PEtGsZ3pj="), 0);
    assert_int_equal(check(&c, TOKEN, "wss://bridge.example.com/media-stream",
                           "1ZvicYzAOFzBhn5l69PEtGsZ3pk="), 0);
    assert_int_equal(check(&c, TOKEN, "wss://bridge.example.com/media-stream",
                           "0ZvicYzAOFzBhn5l69PEtGsZ3pk"), 0);
    assert_int_equal(check(&c, TOKEN, "wss://bridge.example.com/media-stream",
                           "0ZvicYzAOFzBhn5l69PEtGsZ3pk= "), 0);
    assert_int_equal(check(&c, TOKEN, "wss://bridge.example.com/media-stream",
                           ""), 0);
}


static void
test_check_errors(void **state)
{
    int        rc;
    sig_ctx_t  c;

    (void) state;

    kat_params1(&c);

    /* scratch too small for the canonical string */
    rc = ngx_http_voice_signature_check(U(KAT_TOKEN), 5, U(KAT_URL),
                                        strlen(KAT_URL), c.params, c.n,
                                        c.order,
                                        U("RSOYDt4T1cUTdK1PDd93/VVr8B8="), 28,
                                        c.scratch, 60);
    assert_int_equal(rc, -1);

    /* room for the URL as given but not for its longer variant */
    rc = ngx_http_voice_signature_check(U(KAT_TOKEN), 5, U(KAT_URL),
                                        strlen(KAT_URL), c.params, c.n,
                                        c.order,
                                        U("RSOYDt4T1cUTdK1PDd93/VVr8B8="), 28,
                                        c.scratch, 128);
    assert_int_equal(rc, -1);

    rc = ngx_http_voice_signature_check(U(KAT_TOKEN), 5, U(KAT_URL),
                                        strlen(KAT_URL), c.params, c.n,
                                        c.order,
                                        U("RSOYDt4T1cUTdK1PDd93/VVr8B8="), 28,
                                        c.scratch, 129);
    assert_int_equal(rc, 1);

    /* URLs with no scheme default or no host */
    assert_int_equal(check(&c, KAT_TOKEN, "ftp://mycompany.com/x",
                           "RSOYDt4T1cUTdK1PDd93/VVr8B8="), -1);
    assert_int_equal(check(&c, KAT_TOKEN, "/myapp.php",
                           "RSOYDt4T1cUTdK1PDd93/VVr8B8="), -1);
    assert_int_equal(check(&c, KAT_TOKEN, "https:///myapp.php",
                           "RSOYDt4T1cUTdK1PDd93/VVr8B8="), -1);
}


static void
assert_variant(const char *url, const char *expect)
{
    size_t   n;
    uint8_t  out[256];

    n = ngx_http_voice_signature_port_variant(U(url), strlen(url), out,
                                              sizeof(out));
    if (expect == NULL) {
        assert_int_equal(n, (size_t) -1);
        return;
    }

    assert_int_equal(n, strlen(expect));
    assert_memory_equal(out, expect, n);
}


static void
test_port_variant(void **state)
{
    size_t  n;
    uint8_t out[64];

    (void) state;

    assert_variant("https://a.example/x?y=1", "https://a.example:443/x?y=1");
    assert_variant("https://a.example:443/x?y=1", "https://a.example/x?y=1");
    assert_variant("http://a.example/x", "http://a.example:80/x");
    assert_variant("http://a.example:80/x", "http://a.example/x");
    assert_variant("http://a.example:8080/x", "http://a.example/x");
    assert_variant("wss://a.example/media-stream",
                   "wss://a.example:443/media-stream");
    assert_variant("wss://a.example:443/media-stream",
                   "wss://a.example/media-stream");
    assert_variant("ws://a.example/m", "ws://a.example:80/m");
    assert_variant("HTTPS://a.example/x", "HTTPS://a.example:443/x");
    assert_variant("https://a.example", "https://a.example:443");
    assert_variant("https://a.example:443", "https://a.example");
    assert_variant("https://a.example?q=1", "https://a.example:443?q=1");
    assert_variant("https://a.example#f", "https://a.example:443#f");
    assert_variant("https://u:p@a.example/x", "https://u:p@a.example:443/x");
    assert_variant("https://u:p@a.example:8443/x", "https://u:p@a.example/x");
    assert_variant("https://[::1]/x", "https://[::1]:443/x");
    assert_variant("https://[::1]:443/x", "https://[::1]/x");
    assert_variant("https://a.example/x:1/y", "https://a.example:443/x:1/y");

    assert_variant("ftp://a.example/x", NULL);
    assert_variant("https:/a.example/x", NULL);
    assert_variant("https://", NULL);
    assert_variant("https://:443/x", NULL);
    assert_variant("https://a.example:/x", NULL);
    assert_variant("https://a.example:4x3/x", NULL);
    assert_variant("https://a.example:123456/x", NULL);
    assert_variant("https://[::1/x", NULL);
    assert_variant("https://[::1]x/x", NULL);
    assert_variant("", NULL);

    /* out too small, and exactly big enough */
    n = ngx_http_voice_signature_port_variant(U("https://a.example/x"), 19,
                                              out, 22);
    assert_int_equal(n, (size_t) -1);
    n = ngx_http_voice_signature_port_variant(U("https://a.example/x"), 19,
                                              out, 23);
    assert_int_equal(n, 23);
}


static void
test_canonical_order_and_room(void **state)
{
    size_t     n;
    sig_ctx_t  c;

    (void) state;

    memset(&c, 0, sizeof(sig_ctx_t));

    /* byte order: 'S' < 'b' < 'e', and a prefix sorts first */
    add(&c, "Called", "3");
    add(&c, "CallbackSource", "2");
    add(&c, "CallStatus", "1");
    add(&c, "Call", "0");
    add(&c, "Empty", "");
    add(&c, "", "v");

    assert_canonical(&c, "u", "uvCall0CallStatus1CallbackSource2Called3Empty");

    n = ngx_http_voice_signature_canonical(U("u"), 1, c.params, c.n, c.order,
                                           c.scratch, 45);
    assert_int_equal(n, 45);
    n = ngx_http_voice_signature_canonical(U("u"), 1, c.params, c.n, c.order,
                                           c.scratch, 44);
    assert_int_equal(n, (size_t) -1);
    n = ngx_http_voice_signature_canonical(U("uu"), 2, c.params, 0, c.order,
                                           c.scratch, 1);
    assert_int_equal(n, (size_t) -1);
}


static void
test_canonical_many_params(void **state)
{
    size_t     i, len;
    char       names[32][4];
    sig_ctx_t  c;

    (void) state;

    memset(&c, 0, sizeof(sig_ctx_t));

    /* 32 names in reverse order, every other one a duplicate pair */
    for (i = 0; i < 32; i++) {
        snprintf(names[i], sizeof(names[i]), "%c%c", 'a' + (int) (31 - i) / 2,
                 'a');
        add(&c, names[i], "v");
    }

    len = ngx_http_voice_signature_canonical(U(""), 0, c.params, c.n,
                                             c.order, c.scratch,
                                             sizeof(c.scratch));
    assert_int_equal(len, 16 * 3);

    for (i = 0; i < 16; i++) {
        assert_int_equal(c.scratch[3 * i], 'a' + i);
        assert_int_equal(c.scratch[3 * i + 1], 'a');
        assert_int_equal(c.scratch[3 * i + 2], 'v');
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_kat_first_params),
        cmocka_unit_test(test_kat_port_variants),
        cmocka_unit_test(test_kat_repeated_key),
        cmocka_unit_test(test_kat_body_sha256),
        cmocka_unit_test(test_example_a_status_callback),
        cmocka_unit_test(test_example_b_websocket_upgrade),
        cmocka_unit_test(test_example_c_json_body),
        cmocka_unit_test(test_body_sha256_refusals),
        cmocka_unit_test(test_example_d_voice_webhook),
        cmocka_unit_test(test_check_refuses_bad_headers),
        cmocka_unit_test(test_check_errors),
        cmocka_unit_test(test_port_variant),
        cmocka_unit_test(test_canonical_order_and_room),
        cmocka_unit_test(test_canonical_many_params),
    };

    return cmocka_run_group_tests_name("signature", tests, NULL, NULL);
}
