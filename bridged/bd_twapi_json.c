/*
 * bd_twapi_json.c: reads Twilio's JSON and writes the REST reply bodies.
 *
 * Twilio's resources carry many keys; only the few bridged needs are read,
 * each after checking its type, and unknown keys are ignored as Twilio
 * asks of clients.  Whoever parses deletes: every cJSON tree made here is
 * freed here.
 */

#include <stdio.h>
#include <string.h>

#include <cJSON.h>

#include "bd_twapi_json.h"


static int
bd_twapi_json_copy(const cJSON *item, char *dst, size_t size)
{
    size_t  len;

    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        return 0;
    }

    len = strlen(item->valuestring);
    if (len >= size) {
        return 0;
    }

    memcpy(dst, item->valuestring, len + 1);

    return 1;
}


static int
bd_twapi_json_relative_uri(const char *s)
{
    const unsigned char  *p;

    if (s[0] != '/') {
        return 0;
    }

    for (p = (const unsigned char *) s; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f) {
            return 0;
        }
    }

    return 1;
}


static cJSON *
bd_twapi_json_number(const cJSON *src)
{
    cJSON        *dst;
    const cJSON  *sid, *phone, *name;

    sid = cJSON_GetObjectItemCaseSensitive(src, "sid");
    phone = cJSON_GetObjectItemCaseSensitive(src, "phone_number");
    name = cJSON_GetObjectItemCaseSensitive(src, "friendly_name");

    if (!cJSON_IsString(sid) || !cJSON_IsString(phone)
        || !(cJSON_IsString(name) || name == NULL || cJSON_IsNull(name)))
    {
        return NULL;
    }

    dst = cJSON_CreateObject();
    if (dst == NULL) {
        return NULL;
    }

    if (cJSON_AddStringToObject(dst, "sid", sid->valuestring) == NULL
        || cJSON_AddStringToObject(dst, "phoneNumber", phone->valuestring)
           == NULL
        || cJSON_AddStringToObject(dst, "friendlyName",
                                   cJSON_IsString(name) ? name->valuestring
                                                        : "")
           == NULL)
    {
        cJSON_Delete(dst);
        return NULL;
    }

    return dst;
}


int
bd_twapi_json_page(const char *body, size_t len, cJSON *numbers,
    size_t max, char *next, size_t next_size)
{
    int           rc;
    cJSON        *root, *n;
    const cJSON  *list, *item, *uri;

    if (next != NULL) {
        next[0] = '\0';
    }

    root = cJSON_ParseWithLength(body, len);
    if (root == NULL) {
        return BD_TWAPI_JSON_MALFORMED;
    }

    rc = BD_TWAPI_JSON_MALFORMED;

    list = cJSON_GetObjectItemCaseSensitive(root, "incoming_phone_numbers");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(list)) {
        goto done;
    }

    cJSON_ArrayForEach(item, list) {

        if ((size_t) cJSON_GetArraySize(numbers) >= max) {
            rc = BD_TWAPI_JSON_TOO_MANY;
            goto done;
        }

        n = bd_twapi_json_number(item);
        if (n == NULL) {
            goto done;
        }

        cJSON_AddItemToArray(numbers, n);
    }

    if (next == NULL) {
        rc = BD_TWAPI_JSON_OK;
        goto done;
    }

    uri = cJSON_GetObjectItemCaseSensitive(root, "next_page_uri");

    if (cJSON_IsString(uri) && uri->valuestring[0] != '\0') {
        if (!bd_twapi_json_relative_uri(uri->valuestring)
            || !bd_twapi_json_copy(uri, next, next_size))
        {
            next[0] = '\0';
            goto done;
        }

    } else if (uri != NULL && !cJSON_IsNull(uri) && !cJSON_IsString(uri)) {
        goto done;
    }

    rc = BD_TWAPI_JSON_OK;

done:

    cJSON_Delete(root);

    return rc;
}


int
bd_twapi_json_first_number(const char *body, size_t len, char *number,
    size_t size)
{
    int           rc;
    cJSON        *numbers;
    const cJSON  *phone;

    numbers = cJSON_CreateArray();
    if (numbers == NULL) {
        return BD_TWAPI_JSON_MALFORMED;
    }

    /* a page with more than one number is fine: only the first is used */

    rc = bd_twapi_json_page(body, len, numbers, 1, NULL, 0);

    if (rc == BD_TWAPI_JSON_TOO_MANY) {
        rc = BD_TWAPI_JSON_OK;
    }

    if (rc == BD_TWAPI_JSON_OK) {
        phone = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetArrayItem(numbers, 0), "phoneNumber");

        if (phone == NULL) {
            rc = BD_TWAPI_JSON_NONE;

        } else if (!bd_twapi_json_copy(phone, number, size)
                   || number[0] == '\0')
        {
            rc = BD_TWAPI_JSON_MALFORMED;
        }
    }

    cJSON_Delete(numbers);

    return rc;
}


int
bd_twapi_json_call_sid(const char *body, size_t len, char *sid, size_t size)
{
    int           rc;
    cJSON        *root;
    const cJSON  *item;

    root = cJSON_ParseWithLength(body, len);
    if (root == NULL) {
        return BD_TWAPI_JSON_MALFORMED;
    }

    item = cJSON_GetObjectItemCaseSensitive(root, "sid");

    rc = (cJSON_IsObject(root) && bd_twapi_json_copy(item, sid, size)
          && sid[0] != '\0')
         ? BD_TWAPI_JSON_OK : BD_TWAPI_JSON_MALFORMED;

    cJSON_Delete(root);

    return rc;
}


int
bd_twapi_json_error(const char *body, size_t len, long *code,
    char *message, size_t size)
{
    int           rc;
    cJSON        *root;
    const cJSON  *c, *m;

    message[0] = '\0';

    root = cJSON_ParseWithLength(body, len);
    if (root == NULL) {
        return BD_TWAPI_JSON_MALFORMED;
    }

    rc = BD_TWAPI_JSON_MALFORMED;

    c = cJSON_GetObjectItemCaseSensitive(root, "code");

    /* Twilio's codes have five digits: one out of long's range (1e300)
     * is not a code, and converting it would be undefined */

    if (cJSON_IsObject(root) && cJSON_IsNumber(c)
        && c->valuedouble > -1e9 && c->valuedouble < 1e9)
    {
        *code = (long) c->valuedouble;

        /* the 2010 API says "message"; newer problem bodies say "detail" */

        m = cJSON_GetObjectItemCaseSensitive(root, "message");
        if (!cJSON_IsString(m)) {
            m = cJSON_GetObjectItemCaseSensitive(root, "detail");
        }

        if (cJSON_IsString(m)) {
            snprintf(message, size, "%s", m->valuestring);
        }

        rc = BD_TWAPI_JSON_OK;
    }

    cJSON_Delete(root);

    return rc;
}


static char *
bd_twapi_json_print(cJSON *root)
{
    char  *s;

    if (root == NULL) {
        return NULL;
    }

    s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);

    return s;
}


char *
bd_twapi_json_call_created(const char *call_sid, const char *to)
{
    char    message[128];
    cJSON  *root;

    snprintf(message, sizeof(message), "Call initiated to %s", to);

    root = cJSON_CreateObject();

    if (root != NULL
        && (cJSON_AddTrueToObject(root, "success") == NULL
            || cJSON_AddStringToObject(root, "callSid", call_sid) == NULL
            || cJSON_AddStringToObject(root, "message", message) == NULL))
    {
        cJSON_Delete(root);
        return NULL;
    }

    return bd_twapi_json_print(root);
}


char *
bd_twapi_json_call_ended(void)
{
    cJSON  *root;

    root = cJSON_CreateObject();

    if (root != NULL
        && (cJSON_AddTrueToObject(root, "success") == NULL
            || cJSON_AddStringToObject(root, "message",
                                       "Call ended successfully")
               == NULL))
    {
        cJSON_Delete(root);
        return NULL;
    }

    return bd_twapi_json_print(root);
}


char *
bd_twapi_json_numbers(const cJSON *numbers)
{
    return cJSON_PrintUnformatted(numbers);
}


/* {"success":false,"error":...} and the twilio* keys that are not 0 */

static cJSON *
bd_twapi_json_failure_root(const char *error, long twilio_code,
    long twilio_status, unsigned retry_after)
{
    cJSON  *root;

    root = cJSON_CreateObject();
    if (root == NULL) {
        return NULL;
    }

    if (cJSON_AddFalseToObject(root, "success") == NULL
        || cJSON_AddStringToObject(root, "error", error) == NULL
        || (twilio_code
            && cJSON_AddNumberToObject(root, "twilioCode",
                                       (double) twilio_code) == NULL)
        || (twilio_status
            && cJSON_AddNumberToObject(root, "twilioStatus",
                                       (double) twilio_status) == NULL)
        || (retry_after
            && cJSON_AddNumberToObject(root, "retryAfter",
                                       (double) retry_after) == NULL))
    {
        cJSON_Delete(root);
        return NULL;
    }

    return root;
}


char *
bd_twapi_json_failure(const char *error, long twilio_code, long twilio_status)
{
    return bd_twapi_json_print(bd_twapi_json_failure_root(error, twilio_code,
                                                          twilio_status, 0));
}


char *
bd_twapi_json_twilio_failure(long http_status, const char *body,
    size_t len, const char *call_sid, unsigned attempts, unsigned retry_after,
    unsigned *status)
{
    int    rc;
    long   code;
    char   message[512], error[640], n[32];

    *status = 502;
    code = 0;

    rc = bd_twapi_json_error(body, len, &code, message, sizeof(message));

    if (http_status == 404 && call_sid != NULL) {
        *status = 404;
        snprintf(error, sizeof(error), "Call not found: %s", call_sid);
        return bd_twapi_json_failure(error, 0, 0);
    }

    if (http_status == 401) {
        if (rc != BD_TWAPI_JSON_OK) {
            code = 20003;
        }

        snprintf(error, sizeof(error),
                 "Twilio rejected the credentials (%ld)", code);
        return bd_twapi_json_failure(error, code, http_status);
    }

    n[0] = '\0';

    if (attempts > 1) {
        snprintf(n, sizeof(n), " (%u attempts)", attempts);
    }

    if (rc != BD_TWAPI_JSON_OK) {
        snprintf(error, sizeof(error),
                 "Twilio answered HTTP %ld without an error body%s",
                 http_status, n);
        code = 0;

    } else if (message[0] == '\0') {
        snprintf(error, sizeof(error), "Twilio error %ld%s", code, n);

    } else {
        snprintf(error, sizeof(error), "Twilio error %ld: %s%s", code,
                 message, n);
    }

    return bd_twapi_json_print(bd_twapi_json_failure_root(error, code,
                                                          http_status,
                                                          retry_after));
}
