/*
 * bd_twapi_json.h: the JSON side of the Twilio REST client.
 *
 * Parsers for what Twilio answers (a page of IncomingPhoneNumbers, a Call
 * resource, an error body) and builders for the reply bodies bridged sends
 * to nginx, which passes them to the HTTP client as they are.  Only cJSON
 * and libc, so the unit tests link this file alone; bd_twapi.c does the
 * transfers.
 */

#ifndef BD_TWAPI_JSON_H
#define BD_TWAPI_JSON_H

#include <stddef.h>

#include <cJSON.h>


#define BD_TWAPI_JSON_OK          0
#define BD_TWAPI_JSON_NONE        1     /* well formed, nothing in it */
#define BD_TWAPI_JSON_MALFORMED  -1
#define BD_TWAPI_JSON_TOO_MANY   -2


/*
 * Parses one page of IncomingPhoneNumbers.json and appends each number to
 * the array numbers as {"sid","phoneNumber","friendlyName"}, in Twilio's
 * order.  next receives next_page_uri, or "" on the last page (next may
 * be NULL when the caller reads only this page).  Refuses
 * to grow numbers beyond max elements (TOO_MANY), and a next_page_uri
 * that is not a relative URI (MALFORMED): it is fetched with credentials,
 * so it must not lead to another host.
 */
int bd_twapi_json_page(const char *body, size_t len, cJSON *numbers,
    size_t max, char *next, size_t next_size);

/* the first number of a page (OK), NONE if the page is empty */
int bd_twapi_json_first_number(const char *body, size_t len, char *number,
    size_t size);

/* the "sid" of a Call resource */
int bd_twapi_json_call_sid(const char *body, size_t len, char *sid,
    size_t size);

/* a Twilio error body: {"code": 21211, "message": "...", "status": 400} */
int bd_twapi_json_error(const char *body, size_t len, long *code,
    char *message, size_t size);


/*
 * Reply bodies.  Each returns a string to release with cJSON_free(), or
 * NULL when memory is short.
 */
char *bd_twapi_json_call_created(const char *call_sid, const char *to);
char *bd_twapi_json_call_ended(void);
char *bd_twapi_json_numbers(const cJSON *numbers);

/* {"success":false,"error":...}; the twilio* keys only when not 0 */
char *bd_twapi_json_failure(const char *error, long twilio_code,
    long twilio_status);

/*
 * Maps a Twilio answer with a 4xx/5xx status to the reply for nginx:
 * *status gets the HTTP status nginx must send (502, or 404 for an
 * unknown call when call_sid is given).  attempts > 1 is said in the
 * error; retry_after (seconds, 0: none) is Twilio's Retry-After, passed
 * on as "retryAfter".
 */
char *bd_twapi_json_twilio_failure(long http_status, const char *body,
    size_t len, const char *call_sid, unsigned attempts, unsigned retry_after,
    unsigned *status);


#endif /* BD_TWAPI_JSON_H */
