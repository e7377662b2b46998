/*
 * ngx_http_voice_seal.c: AES-256-GCM tokens with OpenSSL's EVP interface
 * and its base64, made URL-safe by translating "+/" to "-_" and dropping
 * the padding (RFC 4648 section 5).  See ngx_http_voice_seal.h.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "ngx_http_voice_seal.h"


#define NGX_HTTP_VOICE_SEAL_NONCE  12
#define NGX_HTTP_VOICE_SEAL_TAG    16
#define NGX_HTTP_VOICE_SEAL_MAX    8192    /* plaintext bytes */

static const char  ngx_http_voice_seal_label[] = "voice per-call context v1";


int
ngx_http_voice_seal_key(const uint8_t *secret, size_t len,
    uint8_t key[NGX_HTTP_VOICE_SEAL_KEY])
{
    unsigned int  n;

    n = 0;

    if (len == 0
        || HMAC(EVP_sha256(), secret, (int) len,
                (const unsigned char *) ngx_http_voice_seal_label,
                sizeof(ngx_http_voice_seal_label) - 1, key, &n)
           == NULL
        || n != NGX_HTTP_VOICE_SEAL_KEY)
    {
        return -1;
    }

    return 0;
}


size_t
ngx_http_voice_seal(const uint8_t key[NGX_HTTP_VOICE_SEAL_KEY],
    const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    int              n, ok;
    size_t           raw_len, i, b64;
    uint8_t          raw[NGX_HTTP_VOICE_SEAL_NONCE + NGX_HTTP_VOICE_SEAL_MAX
                         + NGX_HTTP_VOICE_SEAL_TAG];
    EVP_CIPHER_CTX  *ctx;

    if (len > NGX_HTTP_VOICE_SEAL_MAX || cap < NGX_HTTP_VOICE_SEAL_LEN(len)
        || RAND_bytes(raw, NGX_HTTP_VOICE_SEAL_NONCE) != 1)
    {
        return 0;
    }

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return 0;
    }

    n = 0;

    ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw) == 1
         && EVP_EncryptUpdate(ctx, raw + NGX_HTTP_VOICE_SEAL_NONCE, &n, in,
                              (int) len) == 1
         && (size_t) n == len
         && EVP_EncryptFinal_ex(ctx, raw + NGX_HTTP_VOICE_SEAL_NONCE + n, &n)
            == 1
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG,
                                NGX_HTTP_VOICE_SEAL_TAG,
                                raw + NGX_HTTP_VOICE_SEAL_NONCE + len) == 1;

    EVP_CIPHER_CTX_free(ctx);

    if (!ok) {
        return 0;
    }

    raw_len = NGX_HTTP_VOICE_SEAL_NONCE + len + NGX_HTTP_VOICE_SEAL_TAG;

    memcpy(out, "v1.", 3);

    /* EVP_EncodeBlock writes a NUL after the text: room was checked */
    b64 = (size_t) EVP_EncodeBlock(out + 3, raw, (int) raw_len);

    while (b64 > 0 && out[3 + b64 - 1] == '=') {
        b64--;
    }

    for (i = 0; i < b64; i++) {
        if (out[3 + i] == '+') {
            out[3 + i] = '-';

        } else if (out[3 + i] == '/') {
            out[3 + i] = '_';
        }
    }

    return 3 + b64;
}


size_t
ngx_http_voice_unseal(const uint8_t key[NGX_HTTP_VOICE_SEAL_KEY],
    const uint8_t *token, size_t len, uint8_t *out, size_t cap)
{
    int              n, ok, decoded;
    size_t           i, b64, pad, raw_len, plain;
    uint8_t          text[(NGX_HTTP_VOICE_SEAL_NONCE + NGX_HTTP_VOICE_SEAL_MAX
                           + NGX_HTTP_VOICE_SEAL_TAG) / 3 * 4 + 8];
    uint8_t          raw[sizeof(text) / 4 * 3 + 3];
    EVP_CIPHER_CTX  *ctx;

    if (len < 4 || memcmp(token, "v1.", 3) != 0) {
        return (size_t) -1;
    }

    b64 = len - 3;

    if (b64 % 4 == 1 || b64 + 3 > sizeof(text) - 1) {
        return (size_t) -1;
    }

    /* back to standard base64, strictly: only the url alphabet */

    for (i = 0; i < b64; i++) {
        uint8_t  c = token[3 + i];

        if (c == '-') {
            c = '+';

        } else if (c == '_') {
            c = '/';

        } else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                     || (c >= '0' && c <= '9')))
        {
            return (size_t) -1;
        }

        text[i] = c;
    }

    pad = (4 - b64 % 4) % 4;

    for (i = 0; i < pad; i++) {
        text[b64 + i] = '=';
    }

    decoded = EVP_DecodeBlock(raw, text, (int) (b64 + pad));
    if (decoded < 0) {
        return (size_t) -1;
    }

    /* EVP_DecodeBlock counts the padding's bytes too */
    raw_len = (size_t) decoded - pad;

    if (raw_len < NGX_HTTP_VOICE_SEAL_NONCE + NGX_HTTP_VOICE_SEAL_TAG) {
        return (size_t) -1;
    }

    plain = raw_len - NGX_HTTP_VOICE_SEAL_NONCE - NGX_HTTP_VOICE_SEAL_TAG;

    if (plain > cap) {
        return (size_t) -1;
    }

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return (size_t) -1;
    }

    n = 0;

    ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw) == 1
         && EVP_DecryptUpdate(ctx, out, &n, raw + NGX_HTTP_VOICE_SEAL_NONCE,
                              (int) plain) == 1
         && (size_t) n == plain
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG,
                                NGX_HTTP_VOICE_SEAL_TAG,
                                raw + NGX_HTTP_VOICE_SEAL_NONCE + plain) == 1
         && EVP_DecryptFinal_ex(ctx, out + n, &n) == 1;

    EVP_CIPHER_CTX_free(ctx);

    return ok ? plain : (size_t) -1;
}
