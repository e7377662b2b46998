/*
 * test_twilio.c: unit tests of ngx_voice_module/ngx_http_voice_twilio.c
 * with the exact example messages of
 * docs/protocols.md, Media Streams: every event of section 4,
 * parsed field by field, and the exact bytes of the three messages of
 * section 5.  Then what must be refused: JSON numbers where Twilio sends
 * decimal strings, bad or oversize base64, missing or malformed SIDs.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ngx_http_voice_twilio.h"


#define MZ  "MZ00112233445566778899aabbccddeeff"
#define AC  "AC0123456789abcdef0123456789abcdef"
#define CA  "CA0123456789abcdef0123456789abcdef"


static uint8_t                        audio[NGX_HTTP_VOICE_TWILIO_MAX_AUDIO];
static uint8_t                        scratch[4096];
static ngx_http_voice_twilio_event_t  ev;
static const char                    *err;


static int
parse_n(const char *msg, size_t scratch_size)
{
    err = NULL;

    return ngx_http_voice_twilio_parse((const uint8_t *) msg, strlen(msg),
                                       &ev, audio, scratch, scratch_size,
                                       &err);
}


static int
parse(const char *msg)
{
    return parse_n(msg, sizeof(scratch));
}


static void
assert_str(ngx_http_voice_twilio_str_t s, const char *expect)
{
    assert_non_null(s.data);
    assert_int_equal(s.len, strlen(expect));
    assert_memory_equal(s.data, expect, s.len);
}


static void
assert_refused(const char *msg, const char *why)
{
    if (parse(msg) != -1) {
        print_error("accepted: %s\n", msg);
        fail();
    }

    assert_non_null(err);

    if (why && strstr(err, why) == NULL) {
        print_error("'%s' does not say '%s'\n", err, why);
        fail();
    }
}


static void
test_connected(void **state)
{
    (void) state;

    assert_int_equal(parse("{\"event\":\"connected\",\"protocol\":\"Call\","
                           "\"version\":\"1.0.0\"}"), 0);
    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_CONNECTED);
    assert_str(ev.event_name, "connected");
    assert_null(ev.stream_sid.data);
    assert_int_equal(ev.has_sequence, 0);
}


static const char  *start_example =
    "{\n"
    "  \"event\": \"start\",\n"
    "  \"sequenceNumber\": \"1\",\n"
    "  \"start\": {\n"
    "    \"accountSid\": \"AC0123456789abcdef0123456789abcdef\",\n"
    "    \"streamSid\": \"MZ00112233445566778899aabbccddeeff\",\n"
    "    \"callSid\": \"CA0123456789abcdef0123456789abcdef\",\n"
    "    \"tracks\": [\"inbound\"],\n"
    "    \"customParameters\": {\n"
    "      \"callSid\": \"CA0123456789abcdef0123456789abcdef\",\n"
    "      \"direction\": \"outbound\",\n"
    "      \"phoneNumber\": \"+14155550123\"\n"
    "    },\n"
    "    \"mediaFormat\": {\"encoding\": \"audio/x-mulaw\", "
    "\"sampleRate\": 8000, \"channels\": 1}\n"
    "  },\n"
    "  \"streamSid\": \"MZ00112233445566778899aabbccddeeff\"\n"
    "}";


static void
test_start(void **state)
{
    (void) state;

    assert_int_equal(parse(start_example), 0);
    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_START);
    assert_str(ev.event_name, "start");
    assert_str(ev.stream_sid, MZ);
    assert_int_equal(ev.has_sequence, 1);
    assert_int_equal(ev.sequence, 1);
    assert_str(ev.account_sid, AC);
    assert_str(ev.call_sid, CA);
    assert_str(ev.start_stream_sid, MZ);
    assert_str(ev.encoding, "audio/x-mulaw");
    assert_int_equal(ev.sample_rate, 8000);
    assert_int_equal(ev.channels, 1);

    assert_int_equal(ev.nparams, 3);
    assert_str(ev.params[0].name, "callSid");
    assert_str(ev.params[0].value, CA);
    assert_str(ev.params[1].name, "direction");
    assert_str(ev.params[1].value, "outbound");
    assert_str(ev.params[2].name, "phoneNumber");
    assert_str(ev.params[2].value, "+14155550123");

    assert_null(ev.audio);
    assert_null(ev.mark_name.data);
}


static void
test_start_variants(void **state)
{
    char  msg[2048];

    (void) state;

    /* no parameters, no mediaFormat, escaped parameter strings */
    assert_int_equal(parse("{\"event\":\"start\",\"sequenceNumber\":\"1\","
                           "\"start\":{\"accountSid\":\"" AC "\",\"streamSid\":"
                           "\"" MZ "\",\"callSid\":\"" CA "\",\"tracks\":"
                           "[\"inbound\"],\"customParameters\":{\"n\\/x\":"
                           "\"caf\\u00e9\"}},\"streamSid\":\"" MZ "\"}"), 0);
    assert_int_equal(ev.nparams, 1);
    assert_str(ev.params[0].name, "n/x");
    assert_str(ev.params[0].value, "caf\xc3\xa9");
    assert_int_equal(ev.sample_rate, 0);
    assert_null(ev.encoding.data);

    /* a missing SID, each in turn */
    assert_refused("{\"event\":\"start\",\"start\":{\"streamSid\":\"" MZ "\","
                   "\"callSid\":\"" CA "\"},\"streamSid\":\"" MZ "\"}",
                   "accountSid");
    assert_refused("{\"event\":\"start\",\"start\":{\"accountSid\":\"" AC "\","
                   "\"streamSid\":\"" MZ "\"},\"streamSid\":\"" MZ "\"}",
                   "callSid");
    assert_refused("{\"event\":\"start\",\"start\":{\"accountSid\":\"" AC "\","
                   "\"callSid\":\"" CA "\"},\"streamSid\":\"" MZ "\"}",
                   "start.streamSid");
    assert_refused("{\"event\":\"start\",\"streamSid\":\"" MZ "\"}",
                   "start object");
    assert_refused("{\"event\":\"start\",\"start\":[],\"streamSid\":\""
                   MZ "\"}", "start object");

    /* SIDs of the wrong kind or shape */
    assert_refused("{\"event\":\"start\",\"start\":{\"accountSid\":\"" CA "\","
                   "\"streamSid\":\"" MZ "\",\"callSid\":\"" CA "\"},"
                   "\"streamSid\":\"" MZ "\"}", "accountSid");
    assert_refused("{\"event\":\"start\",\"start\":{\"accountSid\":\"" AC "\","
                   "\"streamSid\":\"" MZ "\",\"callSid\":\"CA0123\"},"
                   "\"streamSid\":\"" MZ "\"}", "callSid");
    assert_refused("{\"event\":\"start\",\"start\":{\"accountSid\":\"" AC "\","
                   "\"streamSid\":\"" MZ "\",\"callSid\":"
                   "\"CA0123456789abcdef0123456789abcdeg\"},"
                   "\"streamSid\":\"" MZ "\"}", "callSid");

    /* sampleRate and channels are JSON numbers, not strings */
    strcpy(msg, start_example);
    memcpy(strstr(msg, "8000"), "\"80\"", 4);
    assert_refused(msg, "sampleRate");

    strcpy(msg, start_example);
    memcpy(strstr(msg, "\"channels\": 1"), "\"channels\":-1", 13);
    assert_refused(msg, "channels");

    /* parameters: values are strings, at most MAX_PARAMS */
    strcpy(msg, start_example);
    memcpy(strstr(msg, "\"outbound\""), "[1,2,3,45]", 10);
    assert_refused(msg, "customParameters");

    assert_refused("{\"event\":\"start\",\"start\":{\"accountSid\":\"" AC "\","
                   "\"streamSid\":\"" MZ "\",\"callSid\":\"" CA "\","
                   "\"customParameters\":\"x\"},\"streamSid\":\"" MZ "\"}",
                   "customParameters");
    assert_refused("{\"event\":\"start\",\"start\":{\"accountSid\":\"" AC "\","
                   "\"streamSid\":\"" MZ "\",\"callSid\":\"" CA "\","
                   "\"mediaFormat\":[]},\"streamSid\":\"" MZ "\"}",
                   "mediaFormat");
}


static void
test_start_max_params(void **state)
{
    int   i;
    char  msg[2048], *p;

    (void) state;

    for (i = 16; i <= 17; i++) {
        int  k;

        p = msg;
        p += sprintf(p, "{\"event\":\"start\",\"start\":{\"accountSid\":\""
                     AC "\",\"streamSid\":\"" MZ "\",\"callSid\":\"" CA
                     "\",\"customParameters\":{");

        for (k = 0; k < i; k++) {
            p += sprintf(p, "%s\"p%d\":\"v%d\"", k ? "," : "", k, k);
        }

        sprintf(p, "}},\"streamSid\":\"" MZ "\"}");

        if (i == 16) {
            assert_int_equal(parse(msg), 0);
            assert_int_equal(ev.nparams, 16);
            assert_str(ev.params[15].name, "p15");
            assert_str(ev.params[15].value, "v15");

        } else {
            assert_refused(msg, "too many");
        }
    }
}


static void
test_media(void **state)
{
    size_t  i;

    (void) state;

    assert_int_equal(parse("{\n"
                           "  \"event\": \"media\",\n"
                           "  \"sequenceNumber\": \"2\",\n"
                           "  \"media\": {\n"
                           "    \"track\": \"inbound\",\n"
                           "    \"chunk\": \"1\",\n"
                           "    \"timestamp\": \"0\",\n"
                           "    \"payload\": \"//////////8=\"\n"
                           "  },\n"
                           "  \"streamSid\": \"" MZ "\"\n"
                           "}"), 0);

    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_MEDIA);
    assert_str(ev.stream_sid, MZ);
    assert_int_equal(ev.has_sequence, 1);
    assert_int_equal(ev.sequence, 2);
    assert_str(ev.track, "inbound");
    assert_int_equal(ev.chunk, 1);
    assert_int_equal(ev.timestamp, 0);
    assert_ptr_equal(ev.audio, audio);
    assert_int_equal(ev.audio_len, 8);

    for (i = 0; i < 8; i++) {
        assert_int_equal(audio[i], 0xff);
    }
}


static void
test_media_20ms_of_silence(void **state)
{
    size_t  i;
    char    msg[512], *p;

    (void) state;

    /* 160 bytes of 0xff: 213 '/' then "w==" (reference section 6) */
    p = msg + sprintf(msg, "{\"event\":\"media\",\"sequenceNumber\":\"3\","
                      "\"media\":{\"track\":\"inbound\",\"chunk\":\"2\","
                      "\"timestamp\":\"20\",\"payload\":\"");
    memset(p, '/', 213);
    strcpy(p + 213, "w==\"},\"streamSid\":\"" MZ "\"}");

    assert_int_equal(parse(msg), 0);
    assert_int_equal(ev.audio_len, 160);
    assert_int_equal(ev.timestamp, 20);
    assert_int_equal(ev.chunk, 2);

    for (i = 0; i < 160; i++) {
        assert_int_equal(audio[i], 0xff);
    }

    /* the payload was decoded from the message: scratch was not needed */
    assert_int_equal(parse_n(msg, 0), 0);
    assert_int_equal(ev.audio_len, 160);
}


static void
test_media_escaped_payload(void **state)
{
    (void) state;

    /* "\/" for '/', as some JSON encoders write it, and \u escapes */
    assert_int_equal(parse("{\"event\":\"media\",\"media\":{\"payload\":"
                           "\"f\\/9+\\/n39\"},\"streamSid\":\"" MZ "\"}"), 0);
    assert_int_equal(ev.audio_len, 6);
    assert_memory_equal(audio, "\x7f\xff\x7e\xfe\x7d\xfd", 6);

    assert_int_equal(parse("{\"event\":\"media\",\"media\":{\"payload\":"
                           "\"\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/8=\"},"
                           "\"streamSid\":\"" MZ "\"}"), 0);
    assert_int_equal(ev.audio_len, 8);
    assert_memory_equal(audio, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);

    assert_int_equal(parse("{\"event\":\"media\",\"media\":{\"payload\":"
                           "\"f\\u002F9+\\u002fn39\"},\"streamSid\":\""
                           MZ "\"}"), 0);
    assert_int_equal(ev.audio_len, 6);
    assert_memory_equal(audio, "\x7f\xff\x7e\xfe\x7d\xfd", 6);

    /* an escape that is not a base64 character */
    assert_refused("{\"event\":\"media\",\"media\":{\"payload\":"
                   "\"f\\n9+\\/n39\"},\"streamSid\":\"" MZ "\"}", "base64");

    /* the unescaped payload does not fit the scratch: an error */
    assert_int_equal(parse_n("{\"event\":\"media\",\"media\":{\"payload\":"
                             "\"f\\/9+\\/n39\"},\"streamSid\":\"" MZ "\"}", 7),
                     -1);
    assert_non_null(strstr(err, "scratch"));
    assert_int_equal(parse_n("{\"event\":\"media\",\"media\":{\"payload\":"
                             "\"f\\/9+\\/n39\"},\"streamSid\":\"" MZ "\"}", 8),
                     0);
}


static void
test_media_bad_base64(void **state)
{
    unsigned  i;
    char      msg[256];

    static const char  *bad[] = {
        "A", "AA", "AAA", "AAAAA", "A===", "====", "AA=A", "=AAA",
        "AAA=AAAA", "AA==AAAA", "AAAA====", "AA*A", "AA A", "AAA\\u00e9",
        "AB==",        /* dropped bits not zero */
        "AAB=",
        "//////////9=",
        "AA-_",        /* the URL-safe alphabet */
        "AAAA\\n",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sprintf(msg, "{\"event\":\"media\",\"media\":{\"payload\":\"%s\"},"
                "\"streamSid\":\"" MZ "\"}", bad[i]);
        assert_refused(msg, "not valid padded base64");
    }

    /* an empty payload is valid base64 of nothing */
    assert_int_equal(parse("{\"event\":\"media\",\"media\":{\"payload\":\"\"},"
                           "\"streamSid\":\"" MZ "\"}"), 0);
    assert_int_equal(ev.audio_len, 0);

    assert_refused("{\"event\":\"media\",\"media\":{\"payload\":null},"
                   "\"streamSid\":\"" MZ "\"}", "payload");
    assert_refused("{\"event\":\"media\",\"media\":{\"track\":\"inbound\"},"
                   "\"streamSid\":\"" MZ "\"}", "payload");
    assert_refused("{\"event\":\"media\",\"streamSid\":\"" MZ "\"}",
                   "media object");
}


static void
test_media_size_limit(void **state)
{
    size_t         n;
    static char    msg[16384];
    char          *p;

    (void) state;

    /* exactly 8192 bytes: 10920 characters + "AAA=" */
    p = msg + sprintf(msg, "{\"event\":\"media\",\"media\":{\"payload\":\"");
    memset(p, 'A', 10920);
    strcpy(p + 10920, "AAA=\"},\"streamSid\":\"" MZ "\"}");
    assert_int_equal(parse(msg), 0);
    assert_int_equal(ev.audio_len, 8192);

    /* 8193 */
    strcpy(p + 10920, "AAAA\"},\"streamSid\":\"" MZ "\"}");
    assert_refused(msg, "more than 8192");

    /* far more */
    n = 12000;
    memset(p, 'A', n);
    strcpy(p + n, "\"},\"streamSid\":\"" MZ "\"}");
    assert_refused(msg, "more than 8192");
}


static void
test_numbers_must_be_strings(void **state)
{
    (void) state;

    assert_refused("{\"event\":\"media\",\"sequenceNumber\":2,\"media\":"
                   "{\"payload\":\"\"},\"streamSid\":\"" MZ "\"}",
                   "sequenceNumber");
    assert_refused("{\"event\":\"media\",\"media\":{\"chunk\":1,"
                   "\"payload\":\"\"},\"streamSid\":\"" MZ "\"}", "chunk");
    assert_refused("{\"event\":\"media\",\"media\":{\"timestamp\":0,"
                   "\"payload\":\"\"},\"streamSid\":\"" MZ "\"}",
                   "timestamp");
    assert_refused("{\"event\":\"mark\",\"sequenceNumber\":140,\"mark\":"
                   "{\"name\":\"m\"},\"streamSid\":\"" MZ "\"}",
                   "sequenceNumber");

    /* strings that are not decimal */
    assert_refused("{\"event\":\"mark\",\"sequenceNumber\":\"\",\"mark\":"
                   "{\"name\":\"m\"},\"streamSid\":\"" MZ "\"}",
                   "sequenceNumber");
    assert_refused("{\"event\":\"mark\",\"sequenceNumber\":\"-1\",\"mark\":"
                   "{\"name\":\"m\"},\"streamSid\":\"" MZ "\"}",
                   "sequenceNumber");
    assert_refused("{\"event\":\"mark\",\"sequenceNumber\":\"1.0\",\"mark\":"
                   "{\"name\":\"m\"},\"streamSid\":\"" MZ "\"}",
                   "sequenceNumber");
    assert_refused("{\"event\":\"mark\",\"sequenceNumber\":\" 1\",\"mark\":"
                   "{\"name\":\"m\"},\"streamSid\":\"" MZ "\"}",
                   "sequenceNumber");
    assert_refused("{\"event\":\"mark\",\"sequenceNumber\":"
                   "\"18446744073709551616\",\"mark\":"
                   "{\"name\":\"m\"},\"streamSid\":\"" MZ "\"}",
                   "sequenceNumber");

    assert_int_equal(parse("{\"event\":\"mark\",\"sequenceNumber\":"
                           "\"18446744073709551615\",\"mark\":"
                           "{\"name\":\"m\"},\"streamSid\":\"" MZ "\"}"), 0);
    assert_true(ev.sequence == UINT64_MAX);

    /* an escaped digit is still a digit */
    assert_int_equal(parse("{\"event\":\"mark\",\"sequenceNumber\":"
                           "\"4\\u0032\",\"mark\":"
                           "{\"name\":\"m\"},\"streamSid\":\"" MZ "\"}"), 0);
    assert_int_equal(ev.sequence, 42);
}


static void
test_dtmf(void **state)
{
    (void) state;

    assert_int_equal(parse("{\"event\":\"dtmf\",\"streamSid\":\"" MZ "\","
                           "\"sequenceNumber\":\"57\",\"dtmf\":{\"track\":"
                           "\"inbound_track\",\"digit\":\"5\"}}"), 0);
    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_DTMF);
    assert_str(ev.stream_sid, MZ);
    assert_int_equal(ev.sequence, 57);
    assert_str(ev.track, "inbound_track");
    assert_str(ev.digit, "5");

    assert_refused("{\"event\":\"dtmf\",\"streamSid\":\"" MZ "\","
                   "\"dtmf\":{\"track\":\"inbound_track\"}}", "digit");
    assert_refused("{\"event\":\"dtmf\",\"streamSid\":\"" MZ "\","
                   "\"dtmf\":{\"digit\":5}}", "digit");
    assert_refused("{\"event\":\"dtmf\",\"streamSid\":\"" MZ "\"}",
                   "dtmf object");
}


static void
test_mark(void **state)
{
    char  msg[1024], *p;

    (void) state;

    assert_int_equal(parse("{\"event\":\"mark\",\"sequenceNumber\":\"140\","
                           "\"streamSid\":\"" MZ "\",\"mark\":{\"name\":"
                           "\"r1-i1-0003\"}}"), 0);
    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_MARK);
    assert_str(ev.stream_sid, MZ);
    assert_int_equal(ev.sequence, 140);
    assert_str(ev.mark_name, "r1-i1-0003");

    /* an escaped name is unescaped into scratch */
    assert_int_equal(parse("{\"event\":\"mark\",\"streamSid\":\"" MZ "\","
                           "\"mark\":{\"name\":\"a\\\"b\\u00e9\"}}"), 0);
    assert_str(ev.mark_name, "a\"b\xc3\xa9");
    assert_true(ev.mark_name.data >= scratch
                && ev.mark_name.data < scratch + sizeof(scratch));

    /* names up to MAX_NAME bytes */
    p = msg + sprintf(msg, "{\"event\":\"mark\",\"streamSid\":\"" MZ "\","
                      "\"mark\":{\"name\":\"");
    memset(p, 'n', 256);
    strcpy(p + 256, "\"}}");
    assert_int_equal(parse(msg), 0);
    assert_int_equal(ev.mark_name.len, 256);

    memset(p, 'n', 257);
    strcpy(p + 257, "\"}}");
    assert_refused(msg, "too long");

    assert_refused("{\"event\":\"mark\",\"streamSid\":\"" MZ "\","
                   "\"mark\":{}}", "mark.name");
    assert_refused("{\"event\":\"mark\",\"streamSid\":\"" MZ "\","
                   "\"mark\":\"m1\"}", "mark object");
}


static void
test_stop(void **state)
{
    (void) state;

    assert_int_equal(parse("{\"event\":\"stop\",\"sequenceNumber\":\"731\","
                           "\"stop\":{\"accountSid\":\"" AC "\",\"callSid\":"
                           "\"" CA "\"},\"streamSid\":\"" MZ "\"}"), 0);
    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_STOP);
    assert_int_equal(ev.sequence, 731);
    assert_str(ev.stream_sid, MZ);
    assert_str(ev.account_sid, AC);
    assert_str(ev.call_sid, CA);

    /* look-alikes add stop.reason: unknown fields are ignored */
    assert_int_equal(parse("{\"event\":\"stop\",\"sequenceNumber\":\"9\","
                           "\"stop\":{\"accountSid\":\"" AC "\",\"callSid\":"
                           "\"" CA "\",\"reason\":{\"x\":[1,2]}},"
                           "\"streamSid\":\"" MZ "\",\"extra\":null}"), 0);
    assert_int_equal(ev.sequence, 9);

    assert_refused("{\"event\":\"stop\",\"stop\":{\"callSid\":\"" AC "\"},"
                   "\"streamSid\":\"" MZ "\"}", "callSid");
    assert_refused("{\"event\":\"stop\",\"stop\":1,"
                   "\"streamSid\":\"" MZ "\"}", "stop");
}


static void
test_stream_sid_required(void **state)
{
    (void) state;

    assert_refused("{\"event\":\"media\",\"sequenceNumber\":\"2\",\"media\":"
                   "{\"payload\":\"//////////8=\"}}", "streamSid");
    assert_refused("{\"event\":\"media\",\"media\":{\"payload\":\"\"},"
                   "\"streamSid\":\"MZ0011\"}", "streamSid");
    assert_refused("{\"event\":\"media\",\"media\":{\"payload\":\"\"},"
                   "\"streamSid\":\"CA0123456789abcdef0123456789abcdef\"}",
                   "streamSid");
    assert_refused("{\"event\":\"media\",\"media\":{\"payload\":\"\"},"
                   "\"streamSid\":null}", "streamSid");

    /* found by fuzz_twilio: control characters that pass for digits */
    assert_refused("{\"event\":\"media\",\"media\":{\"payload\":\"\"},"
                   "\"streamSid\":\"MZ00f\\u00112233445566778899aa1bccddeeff"
                   "\"}", "streamSid");
    assert_refused("{\"event\":\"media\",\"media\":{\"payload\":\"\"},"
                   "\"streamSid\":\"MZ0011223344556677\\u00198899aabbccddeeff"
                   "\"}", "streamSid");
    assert_int_equal(parse("{\"event\":\"media\",\"media\":{\"payload\":"
                           "\"\"},\"streamSid\":\"MZ0011223344556677889"
                           "9AABBCCDDEEFF\"}"), 0);
    assert_refused("{\"event\":\"mark\",\"mark\":{\"name\":\"x\"}}",
                   "streamSid");
    assert_refused("{\"event\":\"dtmf\",\"dtmf\":{\"digit\":\"1\"}}",
                   "streamSid");
    assert_refused("{\"event\":\"stop\",\"stop\":{}}", "streamSid");
}


static void
test_unknown_and_malformed(void **state)
{
    (void) state;

    assert_int_equal(parse("{\"event\":\"future\",\"whatever\":[1]}"), 0);
    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_UNKNOWN);
    assert_str(ev.event_name, "future");

    /* an escaped event name is still recognized */
    assert_int_equal(parse("{\"ev\\u0065nt\":\"m\\u0061rk\",\"streamSid\":\""
                           MZ "\",\"mark\":{\"name\":\"x\"}}"), 0);
    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_MARK);
    assert_str(ev.event_name, "mark");

    /* case matters */
    assert_int_equal(parse("{\"event\":\"Media\"}"), 0);
    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_UNKNOWN);

    assert_refused("", "not valid JSON");
    assert_refused("{\"event\":\"media\"", "not valid JSON");
    assert_refused("{\"event\":\"media\"}}", "not valid JSON");
    assert_refused("[\"event\",\"media\"]", "not a JSON object");
    assert_refused("\"media\"", "not a JSON object");
    assert_refused("{}", "event");
    assert_refused("{\"event\":1}", "event");
    assert_refused("{\"event\":null}", "event");
    assert_refused("{\"Event\":\"media\"}", "event");
}


static void
test_write_exact_bytes(void **state)
{
    size_t         n;
    uint8_t        out[512];
    const uint8_t  pcm[] = { 0x7f, 0xff, 0x7e, 0xfe, 0x7d, 0xfd };

    (void) state;

    n = ngx_http_voice_twilio_write_media(out, sizeof(out),
                                          (const uint8_t *) MZ, 34, pcm, 6);
    assert_int_equal(n, strlen("{\"event\":\"media\",\"streamSid\":\"" MZ "\","
                               "\"media\":{\"payload\":\"f/9+/n39\"}}"));
    assert_memory_equal(out, "{\"event\":\"media\",\"streamSid\":\"" MZ "\","
                        "\"media\":{\"payload\":\"f/9+/n39\"}}", n);
    assert_true(n <= NGX_HTTP_VOICE_TWILIO_MEDIA_SIZE(34, 6));

    n = ngx_http_voice_twilio_write_mark(out, sizeof(out),
                                         (const uint8_t *) MZ, 34,
                                         (const uint8_t *) "r1-i1-0003", 10);
    assert_int_equal(n, strlen("{\"event\":\"mark\",\"streamSid\":\"" MZ "\","
                               "\"mark\":{\"name\":\"r1-i1-0003\"}}"));
    assert_memory_equal(out, "{\"event\":\"mark\",\"streamSid\":\"" MZ "\","
                        "\"mark\":{\"name\":\"r1-i1-0003\"}}", n);

    n = ngx_http_voice_twilio_write_clear(out, sizeof(out),
                                          (const uint8_t *) MZ, 34);
    assert_int_equal(n, strlen("{\"event\":\"clear\",\"streamSid\":\""
                               MZ "\"}"));
    assert_memory_equal(out, "{\"event\":\"clear\",\"streamSid\":\"" MZ "\"}",
                        n);
}


static void
test_write_limits_and_escapes(void **state)
{
    size_t   n, full, len;
    uint8_t  out[16384], pcm[8192];

    (void) state;

    memset(pcm, 0xff, sizeof(pcm));

    /* every audio length: fits the macro, and needs exactly what it says */
    for (len = 0; len <= 200; len++) {
        full = ngx_http_voice_twilio_write_media(out, sizeof(out),
                                                 (const uint8_t *) MZ, 34,
                                                 pcm, len);
        assert_true(full > 0);
        assert_true(full <= NGX_HTTP_VOICE_TWILIO_MEDIA_SIZE(34, len));

        n = ngx_http_voice_twilio_write_media(out, full, (const uint8_t *) MZ,
                                              34, pcm, len);
        assert_int_equal(n, full);

        n = ngx_http_voice_twilio_write_media(out, full - 1,
                                              (const uint8_t *) MZ, 34, pcm,
                                              len);
        assert_int_equal(n, 0);
    }

    full = ngx_http_voice_twilio_write_media(out, sizeof(out),
                                             (const uint8_t *) MZ, 34, pcm,
                                             8192);
    assert_true(full > 0);
    assert_true(full <= NGX_HTTP_VOICE_TWILIO_MEDIA_SIZE(34, 8192));

    /* names are escaped as JSON requires */
    n = ngx_http_voice_twilio_write_mark(out, sizeof(out),
                                         (const uint8_t *) MZ, 34,
                                         (const uint8_t *)
                                         "a\"b\\c\nd\x01/\xc3\xa9", 11);
    assert_int_equal(n, strlen("{\"event\":\"mark\",\"streamSid\":\"" MZ "\","
                               "\"mark\":{\"name\":\"a\\\"b\\\\c\\nd\\u0001/"
                               "\xc3\xa9\"}}"));
    assert_memory_equal(out, "{\"event\":\"mark\",\"streamSid\":\"" MZ "\","
                        "\"mark\":{\"name\":\"a\\\"b\\\\c\\nd\\u0001/"
                        "\xc3\xa9\"}}", n);

    /* and what is written parses back */
    assert_int_equal(ngx_http_voice_twilio_parse(out, n, &ev, pcm, scratch,
                                                 sizeof(scratch), &err), 0);
    assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_MARK);
    assert_str(ev.mark_name, "a\"b\\c\nd\x01/\xc3\xa9");

    full = strlen("{\"event\":\"clear\",\"streamSid\":\"" MZ "\"}");

    for (len = 0; len < full; len++) {
        n = ngx_http_voice_twilio_write_mark(out, len, (const uint8_t *) MZ,
                                             34, (const uint8_t *) "a\"", 2);
        assert_int_equal(n, 0);
        n = ngx_http_voice_twilio_write_clear(out, len, (const uint8_t *) MZ,
                                              34);
        assert_int_equal(n, 0);
    }

    n = ngx_http_voice_twilio_write_clear(out, full, (const uint8_t *) MZ, 34);
    assert_int_equal(n, full);
}


static void
test_media_round_trip(void **state)
{
    size_t   n, len, i;
    uint8_t  out[16384], pcm[8192];

    (void) state;

    for (i = 0; i < sizeof(pcm); i++) {
        pcm[i] = (uint8_t) (i * 131 + 7);
    }

    for (len = 0; len <= 8192; len += (len < 20) ? 1 : 997) {
        n = ngx_http_voice_twilio_write_media(out, sizeof(out),
                                              (const uint8_t *) MZ, 34, pcm,
                                              len);
        assert_true(n > 0);
        assert_int_equal(ngx_http_voice_twilio_parse(out, n, &ev, audio,
                                                     scratch, 0, &err), 0);
        assert_int_equal(ev.event, NGX_HTTP_VOICE_TWILIO_MEDIA);
        assert_int_equal(ev.audio_len, len);
        assert_memory_equal(audio, pcm, len);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_connected),
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_start_variants),
        cmocka_unit_test(test_start_max_params),
        cmocka_unit_test(test_media),
        cmocka_unit_test(test_media_20ms_of_silence),
        cmocka_unit_test(test_media_escaped_payload),
        cmocka_unit_test(test_media_bad_base64),
        cmocka_unit_test(test_media_size_limit),
        cmocka_unit_test(test_numbers_must_be_strings),
        cmocka_unit_test(test_dtmf),
        cmocka_unit_test(test_mark),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_stream_sid_required),
        cmocka_unit_test(test_unknown_and_malformed),
        cmocka_unit_test(test_write_exact_bytes),
        cmocka_unit_test(test_write_limits_and_escapes),
        cmocka_unit_test(test_media_round_trip),
    };

    return cmocka_run_group_tests_name("twilio", tests, NULL, NULL);
}
