/*
 * fuzz_twapi_json.c: libFuzzer target of bridged's reader of Twilio's
 * REST answers (bridged/bd_twapi_json.c): a page of IncomingPhoneNumbers,
 * a Call resource, an error body, and the reply for nginx made of a
 * failed answer.
 *
 * The input is the body Twilio answered; the HTTP status, the attempts
 * and the Retry-After that go with it are drawn from its length.  Each
 * reader must keep to its buffer and hand back only what it promises: a
 * page's numbers as three strings each and never more than asked, a next
 * page that is a relative URI, a SID and a number that are not empty.
 * Every reply body must be JSON that cJSON reads back, with the status
 * nginx must send, and be valid UTF-8 whenever Twilio's body was: nginx
 * gives it to the HTTP client as it is.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "bd_twapi_json.h"
#include "voice_ws.h"


#define FUZZ_MAX      3           /* numbers asked for */


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static const long  fuzz_status[] = { 400, 401, 404, 409, 429, 500, 503 };


static void
fuzz_page(const char *body, size_t len)
{
    int           rc;
    char          next[64];
    cJSON        *numbers;
    const cJSON  *n, *v;
    static const char  *keys[] = { "sid", "phoneNumber", "friendlyName" };
    unsigned      k;

    numbers = cJSON_CreateArray();
    if (numbers == NULL) {
        return;
    }

    memset(next, 'x', sizeof(next));

    rc = bd_twapi_json_page(body, len, numbers, FUZZ_MAX, next,
                            sizeof(next));

    if ((size_t) cJSON_GetArraySize(numbers) > FUZZ_MAX
        || memchr(next, '\0', sizeof(next)) == NULL
        || (rc == BD_TWAPI_JSON_OK && next[0] != '\0' && next[0] != '/')
        || (rc != BD_TWAPI_JSON_OK && next[0] != '\0')
        || (rc != BD_TWAPI_JSON_OK && rc != BD_TWAPI_JSON_MALFORMED
            && rc != BD_TWAPI_JSON_TOO_MANY))
    {
        abort();
    }

    cJSON_ArrayForEach(n, numbers) {
        for (k = 0; k < 3; k++) {
            v = cJSON_GetObjectItemCaseSensitive(n, keys[k]);

            if (!cJSON_IsString(v) || v->valuestring == NULL) {
                abort();
            }
        }
    }

    cJSON_Delete(numbers);
}


static void
fuzz_reply(char *reply, unsigned status, int utf8)
{
    cJSON        *root;
    const cJSON  *error;

    if (reply == NULL) {
        return;     /* out of memory */
    }

    root = cJSON_Parse(reply);
    error = cJSON_GetObjectItemCaseSensitive(root, "error");

    if (root == NULL || !cJSON_IsFalse(
                            cJSON_GetObjectItemCaseSensitive(root, "success"))
        || !cJSON_IsString(error) || error->valuestring[0] == '\0'
        || (status != 502 && status != 404)
        || (utf8 && !voice_ws_utf8_valid((const uint8_t *) reply,
                                         strlen(reply))))
    {
        abort();
    }

    cJSON_Delete(root);
    cJSON_free(reply);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          rc, utf8;
    long         code, http;
    char        *body, *reply, number[20], sid[35], message[64];
    unsigned     status;

    /* a copy with no NUL after it: the readers take a length */
    body = malloc(size ? size : 1);
    if (body == NULL) {
        return 0;
    }

    memcpy(body, data, size);

    fuzz_page(body, size);

    rc = bd_twapi_json_first_number(body, size, number, sizeof(number));
    if (rc == BD_TWAPI_JSON_OK
        && (number[0] == '\0' || strlen(number) >= sizeof(number)))
    {
        abort();
    }

    rc = bd_twapi_json_call_sid(body, size, sid, sizeof(sid));
    if (rc == BD_TWAPI_JSON_OK
        && (sid[0] == '\0' || strlen(sid) >= sizeof(sid)))
    {
        abort();
    }

    code = 0;
    memset(message, 'x', sizeof(message));

    rc = bd_twapi_json_error(body, size, &code, message, sizeof(message));
    if (memchr(message, '\0', sizeof(message)) == NULL
        || (rc != BD_TWAPI_JSON_OK && message[0] != '\0'))
    {
        abort();
    }

    utf8 = voice_ws_utf8_valid(data, size);
    http = fuzz_status[size % (sizeof(fuzz_status) / sizeof(long))];

    reply = bd_twapi_json_twilio_failure(http, body, size,
                                         (size & 8) ? "CAfuzz" : NULL,
                                         (unsigned) (size % 4),
                                         (unsigned) (size % 3) * 60, &status);
    fuzz_reply(reply, status, utf8);

    free(body);

    return 0;
}
