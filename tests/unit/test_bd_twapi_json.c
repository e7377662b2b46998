/*
 * test_bd_twapi_json.c: unit tests of bridged/bd_twapi_json.c: Twilio's
 * number pages (with next_page_uri), Call resources and error bodies, and
 * the exact reply bodies nginx passes on to API clients.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <cJSON.h>

#include "bd_twapi_json.h"


#define ACC  "AC0123456789abcdef0123456789abcdef"
#define URI  "/2010-04-01/Accounts/" ACC "/IncomingPhoneNumbers.json"

#define PAGE0                                                                 \
    "{\"end\":1,\"first_page_uri\":\"" URI "?PageSize=2&Page=0\","            \
    "\"incoming_phone_numbers\":["                                            \
    "{\"sid\":\"PN01\",\"phone_number\":\"+15005550001\","                    \
    "\"friendly_name\":\"(500) 555-0001\",\"capabilities\":{\"voice\":true}," \
    "\"voice_url\":\"https://x/twiml\"},"                                     \
    "{\"sid\":\"PN02\",\"phone_number\":\"+15005550002\","                    \
    "\"friendly_name\":null}],"                                               \
    "\"next_page_uri\":\"" URI "?PageSize=2&Page=1&PageToken=PAx1\","         \
    "\"page\":0,\"page_size\":2,\"previous_page_uri\":null,\"start\":0}"

#define EMPTY  "{\"incoming_phone_numbers\":[],\"next_page_uri\":null}"

#define PAGE1                                                                 \
    "{\"incoming_phone_numbers\":[{\"sid\":\"PN03\",\"phone_number\":"        \
    "\"+15005550003\",\"friendly_name\":\"Support\"}],"                       \
    "\"next_page_uri\":null,\"page\":1}"


static int
page(const char *body, cJSON *numbers, size_t max, char *next, size_t size)
{
    return bd_twapi_json_page(body, strlen(body), numbers, max, next, size);
}


static void
expect_json(char *s, const char *want)
{
    assert_non_null(s);
    assert_string_equal(s, want);
    cJSON_free(s);
}


static void
test_pages_in_order(void **state)
{
    char    next[256], *s;
    cJSON  *numbers;

    (void) state;

    numbers = cJSON_CreateArray();

    assert_int_equal(page(PAGE0, numbers, 100, next, sizeof(next)),
                     BD_TWAPI_JSON_OK);
    assert_string_equal(next, URI "?PageSize=2&Page=1&PageToken=PAx1");

    assert_int_equal(page(PAGE1, numbers, 100, next, sizeof(next)),
                     BD_TWAPI_JSON_OK);
    assert_string_equal(next, "");

    s = bd_twapi_json_numbers(numbers);
    expect_json(s,
        "[{\"sid\":\"PN01\",\"phoneNumber\":\"+15005550001\","
        "\"friendlyName\":\"(500) 555-0001\"},"
        "{\"sid\":\"PN02\",\"phoneNumber\":\"+15005550002\","
        "\"friendlyName\":\"\"},"
        "{\"sid\":\"PN03\",\"phoneNumber\":\"+15005550003\","
        "\"friendlyName\":\"Support\"}]");

    cJSON_Delete(numbers);
}


static void
test_page_bounds(void **state)
{
    char    next[256];
    cJSON  *numbers;

    (void) state;

    numbers = cJSON_CreateArray();
    assert_int_equal(page(PAGE0, numbers, 1, next, sizeof(next)),
                     BD_TWAPI_JSON_TOO_MANY);
    cJSON_Delete(numbers);

    /* a next_page_uri longer than the caller's buffer is refused */

    numbers = cJSON_CreateArray();
    assert_int_equal(page(PAGE0, numbers, 100, next, 16),
                     BD_TWAPI_JSON_MALFORMED);
    cJSON_Delete(numbers);
}


static void
test_page_refusals(void **state)
{
    char         next[256];
    cJSON       *numbers;
    size_t       i;
    const char  *bad[] = {
        "",
        "[]",
        "{\"incoming_phone_numbers\":{}}",
        "{\"incoming_phone_numbers\":[{\"sid\":\"PN1\"}]}",
        "{\"incoming_phone_numbers\":[{\"sid\":1,\"phone_number\":\"+1\"}]}",
        "{\"incoming_phone_numbers\":[\"+15005550001\"]}",
        "{\"incoming_phone_numbers\":[],\"next_page_uri\":7}",

        /* fetched with our credentials: never another host */
        "{\"incoming_phone_numbers\":[],"
        "\"next_page_uri\":\"https://evil.example.com/x\"}",
        "{\"incoming_phone_numbers\":[],\"next_page_uri\":\"/a b\"}",
        "{\"incoming_phone_numbers\":[",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        numbers = cJSON_CreateArray();
        assert_int_equal(page(bad[i], numbers, 100, next, sizeof(next)),
                         BD_TWAPI_JSON_MALFORMED);
        cJSON_Delete(numbers);
    }

    /* no next_page_uri at all: the last page */

    numbers = cJSON_CreateArray();
    assert_int_equal(page("{\"incoming_phone_numbers\":[]}", numbers, 100,
                          next, sizeof(next)),
                     BD_TWAPI_JSON_OK);
    assert_string_equal(next, "");
    cJSON_Delete(numbers);
}


static void
test_first_number(void **state)
{
    char  number[65];

    (void) state;

    assert_int_equal(bd_twapi_json_first_number(PAGE0, strlen(PAGE0), number,
                                                sizeof(number)),
                     BD_TWAPI_JSON_OK);
    assert_string_equal(number, "+15005550001");

    assert_int_equal(bd_twapi_json_first_number(EMPTY, strlen(EMPTY), number,
                                                sizeof(number)),
                     BD_TWAPI_JSON_NONE);

    assert_int_equal(bd_twapi_json_first_number("oops", 4, number,
                                                sizeof(number)),
                     BD_TWAPI_JSON_MALFORMED);
}


static void
test_call_sid(void **state)
{
    char         sid[65];
    const char  *call =
        "{\"account_sid\":\"" ACC "\",\"sid\":\"CA0123456789abcdef0123456789"
        "abcdef\",\"status\":\"queued\",\"subresource_uris\":{}}";

    (void) state;

    assert_int_equal(bd_twapi_json_call_sid(call, strlen(call), sid,
                                            sizeof(sid)),
                     BD_TWAPI_JSON_OK);
    assert_string_equal(sid, "CA0123456789abcdef0123456789abcdef");

    assert_int_equal(bd_twapi_json_call_sid("{\"status\":\"queued\"}", 19,
                                            sid, sizeof(sid)),
                     BD_TWAPI_JSON_MALFORMED);
    assert_int_equal(bd_twapi_json_call_sid("{\"sid\":\"\"}", 10, sid,
                                            sizeof(sid)),
                     BD_TWAPI_JSON_MALFORMED);
    assert_int_equal(bd_twapi_json_call_sid("{\"sid\":12}", 10, sid,
                                            sizeof(sid)),
                     BD_TWAPI_JSON_MALFORMED);
    assert_int_equal(bd_twapi_json_call_sid("<html>", 6, sid, sizeof(sid)),
                     BD_TWAPI_JSON_MALFORMED);
}


static void
test_error_body(void **state)
{
    long         code;
    char         msg[128];
    const char  *e1 =
        "{\"code\":21211,\"message\":\"The 'To' number +1415555 is not a "
        "valid phone number.\",\"more_info\":\"https://www.twilio.com/docs/"
        "errors/21211\",\"status\":400}";
    const char  *e2 =
        "{\"code\":20003,\"detail\":\"Your AccountSid or AuthToken was "
        "incorrect.\",\"status\":401}";

    (void) state;

    assert_int_equal(bd_twapi_json_error(e1, strlen(e1), &code, msg,
                                         sizeof(msg)),
                     BD_TWAPI_JSON_OK);
    assert_int_equal(code, 21211);
    assert_string_equal(msg, "The 'To' number +1415555 is not a valid "
                        "phone number.");

    assert_int_equal(bd_twapi_json_error(e2, strlen(e2), &code, msg,
                                         sizeof(msg)),
                     BD_TWAPI_JSON_OK);
    assert_int_equal(code, 20003);
    assert_string_equal(msg, "Your AccountSid or AuthToken was incorrect.");

    assert_int_equal(bd_twapi_json_error("{\"message\":\"x\"}", 15, &code,
                                         msg, sizeof(msg)),
                     BD_TWAPI_JSON_MALFORMED);
}


static void
test_reply_bodies(void **state)
{
    (void) state;

    expect_json(bd_twapi_json_call_created("CA01", "+14155550123"),
                "{\"success\":true,\"callSid\":\"CA01\","
                "\"message\":\"Call initiated to +14155550123\"}");

    expect_json(bd_twapi_json_call_ended(),
                "{\"success\":true,\"message\":\"Call ended successfully\"}");

    expect_json(bd_twapi_json_failure("bridged has no Twilio credentials",
                                      0, 0),
                "{\"success\":false,"
                "\"error\":\"bridged has no Twilio credentials\"}");

    expect_json(bd_twapi_json_failure("a \"quoted\" error", 21211, 400),
                "{\"success\":false,\"error\":\"a \\\"quoted\\\" error\","
                "\"twilioCode\":21211,\"twilioStatus\":400}");
}


static void
test_twilio_failures(void **state)
{
    unsigned     status;
    const char  *e400 =
        "{\"code\":21211,\"message\":\"The 'To' number 12345 is not a valid "
        "phone number.\",\"status\":400}";
    const char  *e401 =
        "{\"code\":20003,\"message\":\"Authenticate\",\"status\":401}";
    const char  *e404 =
        "{\"code\":20404,\"message\":\"The requested resource was not "
        "found\",\"status\":404}";

    (void) state;

    expect_json(bd_twapi_json_twilio_failure(400, e400, strlen(e400), NULL,
                                             1, 0, &status),
                "{\"success\":false,\"error\":\"Twilio error 21211: The 'To' "
                "number 12345 is not a valid phone number.\","
                "\"twilioCode\":21211,\"twilioStatus\":400}");
    assert_int_equal(status, 502);

    expect_json(bd_twapi_json_twilio_failure(401, e401, strlen(e401), NULL,
                                             1, 0, &status),
                "{\"success\":false,\"error\":\"Twilio rejected the "
                "credentials (20003)\",\"twilioCode\":20003,"
                "\"twilioStatus\":401}");
    assert_int_equal(status, 502);

    /* a 401 without a body still names the code */

    expect_json(bd_twapi_json_twilio_failure(401, "", 0, NULL, 1, 0, &status),
                "{\"success\":false,\"error\":\"Twilio rejected the "
                "credentials (20003)\",\"twilioCode\":20003,"
                "\"twilioStatus\":401}");

    /* 404 is an unknown call only for call.end */

    expect_json(bd_twapi_json_twilio_failure(404, e404, strlen(e404),
                                             "CA77", 1, 0, &status),
                "{\"success\":false,\"error\":\"Call not found: CA77\"}");
    assert_int_equal(status, 404);

    expect_json(bd_twapi_json_twilio_failure(404, e404, strlen(e404), NULL,
                                             1, 0, &status),
                "{\"success\":false,\"error\":\"Twilio error 20404: The "
                "requested resource was not found\",\"twilioCode\":20404,"
                "\"twilioStatus\":404}");
    assert_int_equal(status, 502);

    expect_json(bd_twapi_json_twilio_failure(503, "<html>busy</html>", 17,
                                             NULL, 1, 0, &status),
                "{\"success\":false,\"error\":\"Twilio answered HTTP 503 "
                "without an error body\",\"twilioStatus\":503}");
    assert_int_equal(status, 502);
}


static void
test_twilio_failures_after_retries(void **state)
{
    unsigned     status;
    const char  *e429 =
        "{\"code\":20429,\"message\":\"Too Many Requests\",\"more_info\":"
        "\"https://www.twilio.com/docs/errors/20429\",\"status\":429}";
    const char  *e503 =
        "{\"code\":20503,\"message\":\"Service Unavailable\",\"status\":"
        "503}";

    (void) state;

    /* the attempts are said, Twilio's Retry-After is passed on */

    expect_json(bd_twapi_json_twilio_failure(429, e429, strlen(e429), NULL,
                                             3, 7, &status),
                "{\"success\":false,\"error\":\"Twilio error 20429: Too "
                "Many Requests (3 attempts)\",\"twilioCode\":20429,"
                "\"twilioStatus\":429,\"retryAfter\":7}");
    assert_int_equal(status, 502);

    expect_json(bd_twapi_json_twilio_failure(503, e503, strlen(e503), NULL,
                                             2, 0, &status),
                "{\"success\":false,\"error\":\"Twilio error 20503: "
                "Service Unavailable (2 attempts)\",\"twilioCode\":20503,"
                "\"twilioStatus\":503}");

    expect_json(bd_twapi_json_twilio_failure(503, "", 0, NULL, 4, 2,
                                             &status),
                "{\"success\":false,\"error\":\"Twilio answered HTTP 503 "
                "without an error body (4 attempts)\",\"twilioStatus\":503,"
                "\"retryAfter\":2}");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_pages_in_order),
        cmocka_unit_test(test_page_bounds),
        cmocka_unit_test(test_page_refusals),
        cmocka_unit_test(test_first_number),
        cmocka_unit_test(test_call_sid),
        cmocka_unit_test(test_error_body),
        cmocka_unit_test(test_reply_bodies),
        cmocka_unit_test(test_twilio_failures),
        cmocka_unit_test(test_twilio_failures_after_retries),
    };

    return cmocka_run_group_tests_name("bd_twapi_json", tests, NULL, NULL);
}
