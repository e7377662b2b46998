/*
 * ngx_http_voice_signature.c: Twilio's request signature
 * (X-Twilio-Signature), as docs/protocols.md, Twilio REST section 9
 * describes it: base64(HMAC-SHA1(auth token, url + sorted parameters)),
 * also accepted over the URL's port variant, compared in constant time;
 * and the JSON-body variant's bodySHA256.
 *
 * Leaf code: libc and OpenSSL's HMAC and SHA-256 only.
 * ngx_http_voice_webhook.c gathers the URL, the decoded parameters
 * (ngx_http_voice_body.c) and the header, and calls
 * ngx_http_voice_signature_check(), for the webhooks and for the media
 * stream's upgrade.
 */

#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "ngx_http_voice_signature.h"


static size_t ngx_http_voice_signature_params(
    const ngx_http_voice_body_param_t *params, size_t n, size_t *order,
    uint8_t *out, size_t cap);
static void ngx_http_voice_signature_sort(
    const ngx_http_voice_body_param_t *params, size_t n, size_t *order);
static void ngx_http_voice_signature_sift(
    const ngx_http_voice_body_param_t *params, size_t *order, size_t root,
    size_t n);
static int ngx_http_voice_signature_cmp(const ngx_http_voice_body_param_t *a,
    const ngx_http_voice_body_param_t *b);
static int ngx_http_voice_signature_bytes_cmp(const uint8_t *a, size_t alen,
    const uint8_t *b, size_t blen);
static int ngx_http_voice_signature_scheme(const uint8_t *url, size_t len,
    size_t *skip, const char **port);
static int ngx_http_voice_signature_equal(const uint8_t *a, const uint8_t *b,
    size_t len);


size_t
ngx_http_voice_signature_canonical(const uint8_t *url, size_t url_len,
    const ngx_http_voice_body_param_t *params, size_t n, size_t *order,
    uint8_t *out, size_t cap)
{
    size_t  len;

    if (url_len > cap) {
        return (size_t) -1;
    }

    if (url_len) {
        memcpy(out, url, url_len);
    }

    len = ngx_http_voice_signature_params(params, n, order, out + url_len,
                                          cap - url_len);
    if (len == (size_t) -1) {
        return (size_t) -1;
    }

    return url_len + len;
}


/*
 * Appends name + value for each distinct (name, value) pair in byte order:
 * as the official SDKs do, a repeated name is signed once per distinct
 * value, and an exact duplicate pair once.
 */

static size_t
ngx_http_voice_signature_params(const ngx_http_voice_body_param_t *params,
    size_t n, size_t *order, uint8_t *out, size_t cap)
{
    size_t                              i, len;
    const ngx_http_voice_body_param_t  *p, *prev;

    for (i = 0; i < n; i++) {
        order[i] = i;
    }

    ngx_http_voice_signature_sort(params, n, order);

    len = 0;
    prev = NULL;

    for (i = 0; i < n; i++) {
        p = &params[order[i]];

        if (prev && ngx_http_voice_signature_cmp(prev, p) == 0) {
            continue;
        }

        prev = p;

        if (p->name_len > cap - len
            || p->value_len > cap - len - p->name_len)
        {
            return (size_t) -1;
        }

        if (p->name_len) {
            memcpy(out + len, p->name, p->name_len);
            len += p->name_len;
        }

        if (p->value_len) {
            memcpy(out + len, p->value, p->value_len);
            len += p->value_len;
        }
    }

    return len;
}


/* a heap sort: no recursion, no allocation, n log n for any input */

static void
ngx_http_voice_signature_sort(const ngx_http_voice_body_param_t *params,
    size_t n, size_t *order)
{
    size_t  i, t;

    if (n < 2) {
        return;
    }

    for (i = n / 2; i > 0; i--) {
        ngx_http_voice_signature_sift(params, order, i - 1, n);
    }

    for (i = n - 1; i > 0; i--) {
        t = order[0];
        order[0] = order[i];
        order[i] = t;

        ngx_http_voice_signature_sift(params, order, 0, i);
    }
}


static void
ngx_http_voice_signature_sift(const ngx_http_voice_body_param_t *params,
    size_t *order, size_t root, size_t n)
{
    size_t  child, t;

    for ( ;; ) {
        child = 2 * root + 1;

        if (child >= n) {
            return;
        }

        if (child + 1 < n
            && ngx_http_voice_signature_cmp(&params[order[child]],
                                            &params[order[child + 1]]) < 0)
        {
            child++;
        }

        if (ngx_http_voice_signature_cmp(&params[order[root]],
                                         &params[order[child]]) >= 0)
        {
            return;
        }

        t = order[root];
        order[root] = order[child];
        order[child] = t;

        root = child;
    }
}


static int
ngx_http_voice_signature_cmp(const ngx_http_voice_body_param_t *a,
    const ngx_http_voice_body_param_t *b)
{
    int  rc;

    rc = ngx_http_voice_signature_bytes_cmp(a->name, a->name_len, b->name,
                                            b->name_len);
    if (rc != 0) {
        return rc;
    }

    return ngx_http_voice_signature_bytes_cmp(a->value, a->value_len,
                                              b->value, b->value_len);
}


/* strcmp() order: bytes as unsigned, a prefix first */

static int
ngx_http_voice_signature_bytes_cmp(const uint8_t *a, size_t alen,
    const uint8_t *b, size_t blen)
{
    int  rc;

    rc = (alen && blen) ? memcmp(a, b, alen < blen ? alen : blen) : 0;

    if (rc != 0) {
        return rc;
    }

    return (alen > blen) - (alen < blen);
}


int
ngx_http_voice_signature_compute(const uint8_t *key, size_t key_len,
    const uint8_t *data, size_t len, uint8_t *out)
{
    uint8_t        md[EVP_MAX_MD_SIZE];
    unsigned int   md_len;
    unsigned char  b64[NGX_HTTP_VOICE_SIGNATURE_LEN + 1];

    static const uint8_t  empty[1];

    if (key_len > 0x7fffffff) {
        return -1;
    }

    if (HMAC(EVP_sha1(), key ? key : empty, (int) key_len,
             data ? data : empty, len, md, &md_len) == NULL
        || md_len != 20)
    {
        return -1;
    }

    /* 20 bytes encode to 28 characters and a NUL, which out has no room
     * for */
    if (EVP_EncodeBlock(b64, md, 20) != NGX_HTTP_VOICE_SIGNATURE_LEN) {
        return -1;
    }

    memcpy(out, b64, NGX_HTTP_VOICE_SIGNATURE_LEN);

    return 0;
}


size_t
ngx_http_voice_signature_port_variant(const uint8_t *url, size_t url_len,
    uint8_t *out, size_t cap)
{
    size_t          skip, host, colon, end, i, n;
    const char     *port;
    const uint8_t  *at;

    if (ngx_http_voice_signature_scheme(url, url_len, &skip, &port) != 0) {
        return (size_t) -1;
    }

    /* the authority ends at the path, the query or the fragment */

    for (end = skip; end < url_len; end++) {
        if (url[end] == '/' || url[end] == '?' || url[end] == '#') {
            break;
        }
    }

    host = skip;
    at = memchr(url + skip, '@', end - skip);

    while (at) {
        host = (size_t) (at - url) + 1;
        at = memchr(url + host, '@', end - host);
    }

    i = host;

    if (i < end && url[i] == '[') {
        while (i < end && url[i] != ']') {
            i++;
        }

        if (i == end) {
            return (size_t) -1;
        }

        i++;

    } else {
        while (i < end && url[i] != ':') {
            i++;
        }
    }

    if (i == host) {
        return (size_t) -1;
    }

    if (i < end && url[i] != ':') {
        return (size_t) -1;
    }

    colon = i;

    if (colon < end) {

        /* an explicit port, default or not: the variant goes without it */

        n = end - colon - 1;

        if (n == 0 || n > 5) {
            return (size_t) -1;
        }

        for (i = colon + 1; i < end; i++) {
            if (url[i] < '0' || url[i] > '9') {
                return (size_t) -1;
            }
        }

        n = url_len - (end - colon);

        if (n > cap) {
            return (size_t) -1;
        }

        memcpy(out, url, colon);
        memcpy(out + colon, url + end, url_len - end);

        return n;
    }

    /* no port: the variant has the scheme's default */

    n = strlen(port);

    if (url_len > cap || n > cap - url_len) {
        return (size_t) -1;
    }

    memcpy(out, url, colon);
    memcpy(out + colon, port, n);
    memcpy(out + colon + n, url + colon, url_len - colon);

    return url_len + n;
}


/*
 * Sets *skip past "scheme://" and *port to the scheme's default port;
 * -1 for any scheme but http, https, ws and wss (case-insensitive).
 */

static int
ngx_http_voice_signature_scheme(const uint8_t *url, size_t len, size_t *skip,
    const char **port)
{
    size_t  i, n;
    char    scheme[6];

    static const struct {
        const char  *name;
        const char  *port;
    }  schemes[] = {
        { "https", ":443" },
        { "http", ":80" },
        { "wss", ":443" },
        { "ws", ":80" }
    };

    for (n = 0; n < len && n < sizeof(scheme) - 1 && url[n] != ':'; n++) {
        scheme[n] = (char) (url[n] | 0x20);
    }

    scheme[n] = '\0';

    if (len - n < 3 || memcmp(url + n, "://", 3) != 0) {
        return -1;
    }

    for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        if (strcmp(scheme, schemes[i].name) == 0) {
            *skip = n + 3;
            *port = schemes[i].port;
            return 0;
        }
    }

    return -1;
}


int
ngx_http_voice_signature_check(const uint8_t *key, size_t key_len,
    const uint8_t *url, size_t url_len,
    const ngx_http_voice_body_param_t *params, size_t n, size_t *order,
    const uint8_t *header, size_t header_len, uint8_t *scratch, size_t cap)
{
    int      ok;
    size_t   len, plen;
    uint8_t  sig[NGX_HTTP_VOICE_SIGNATURE_LEN];
    uint8_t  alt[NGX_HTTP_VOICE_SIGNATURE_LEN];

    /* the URL as given */

    len = ngx_http_voice_signature_canonical(url, url_len, params, n, order,
                                             scratch, cap);
    if (len == (size_t) -1) {
        return -1;
    }

    if (ngx_http_voice_signature_compute(key, key_len, scratch, len, sig)
        != 0)
    {
        return -1;
    }

    /* and its port variant: Twilio signs either */

    len = ngx_http_voice_signature_port_variant(url, url_len, scratch, cap);
    if (len == (size_t) -1) {
        return -1;
    }

    plen = ngx_http_voice_signature_params(params, n, order, scratch + len,
                                           cap - len);
    if (plen == (size_t) -1) {
        return -1;
    }

    if (ngx_http_voice_signature_compute(key, key_len, scratch, len + plen,
                                         alt)
        != 0)
    {
        return -1;
    }

    /* the length is public; both comparisons always run in full */

    if (header_len != NGX_HTTP_VOICE_SIGNATURE_LEN) {
        return 0;
    }

    ok = ngx_http_voice_signature_equal(sig, header,
                                        NGX_HTTP_VOICE_SIGNATURE_LEN);
    ok |= ngx_http_voice_signature_equal(alt, header,
                                         NGX_HTTP_VOICE_SIGNATURE_LEN);

    return ok;
}


/* 1 when equal; the time depends on len only, never on where they differ */

static int
ngx_http_voice_signature_equal(const uint8_t *a, const uint8_t *b,
    size_t len)
{
    size_t            i;
    volatile uint8_t  d;

    d = 0;

    for (i = 0; i < len; i++) {
        d |= a[i] ^ b[i];
    }

    return d == 0;
}


int
ngx_http_voice_signature_body_ok(const uint8_t *url, size_t url_len,
    const uint8_t *body, size_t body_len)
{
    size_t          i, n, found;
    uint8_t         md[SHA256_DIGEST_LENGTH];
    uint8_t         hex[2 * SHA256_DIGEST_LENGTH];
    const uint8_t  *p, *end, *amp, *sent;

    static const char  name[] = "bodySHA256=";
    static const char  digits[] = "0123456789abcdef";

    p = memchr(url, '?', url_len);
    if (p == NULL) {
        return 0;
    }

    end = url + url_len;
    sent = NULL;
    found = 0;

    /* each name=value of the query string; the name compared as sent */

    for (p++; p < end; p = amp + 1) {
        amp = memchr(p, '&', (size_t) (end - p));
        if (amp == NULL) {
            amp = end;
        }

        n = (size_t) (amp - p);

        if (n >= sizeof(name) - 1 && memcmp(p, name, sizeof(name) - 1) == 0) {
            found++;

            if (n - (sizeof(name) - 1) != sizeof(hex)) {
                return 0;
            }

            sent = p + sizeof(name) - 1;
        }
    }

    if (found != 1) {
        return 0;
    }

    SHA256(body, body_len, md);

    for (i = 0; i < sizeof(md); i++) {
        hex[2 * i] = (uint8_t) digits[md[i] >> 4];
        hex[2 * i + 1] = (uint8_t) digits[md[i] & 0x0f];
    }

    return CRYPTO_memcmp(hex, sent, sizeof(hex)) == 0;
}
