/*
 * test_proto.c: unit tests of proto/voice_proto.c, the nginx <-> bridged
 * frame codec: round trips of every message type, the limits, and every
 * way a frame can be malformed.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "voice_proto.h"


#define SID  "CA0123456789abcdef0123456789abcdef"


static int
str_eq(voice_proto_str_t s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.data, c, s.len) == 0;
}


static void
test_audio_round_trip(void **state)
{
    size_t                n;
    uint8_t               buf[VOICE_PROTO_AUDIO_FRAME_SIZE], audio[160];
    const char           *err;
    voice_proto_msg_t     m;
    voice_proto_writer_t  w;

    (void) state;

    memset(audio, 0xff, sizeof(audio));
    audio[0] = 0x00;

    voice_proto_begin(&w, buf, sizeof(buf), VOICE_PROTO_MSG_AUDIO_IN);
    voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID);
    voice_proto_put_u32(&w, VOICE_PROTO_F_SEQ, 7);
    voice_proto_put_u64(&w, VOICE_PROTO_F_TIMESTAMP, 0x1122334455667788ULL);
    voice_proto_put_bytes(&w, VOICE_PROTO_F_AUDIO, audio, sizeof(audio));
    n = voice_proto_finish(&w);

    assert_int_equal(n, 8 + 5 + 34 + 5 + 4 + 5 + 8 + 5 + 160);
    assert_int_equal(voice_proto_decode(buf, n, &m, &err), VOICE_PROTO_OK);
    assert_int_equal(m.type, VOICE_PROTO_MSG_AUDIO_IN);
    assert_int_equal(m.size, n);
    assert_true(str_eq(m.call_sid, SID));
    assert_int_equal(m.seq, 7);
    assert_true(m.timestamp == 0x1122334455667788ULL);
    assert_int_equal(m.audio.len, 160);
    assert_memory_equal(m.audio.data, audio, 160);
    assert_true(voice_proto_has(&m, VOICE_PROTO_F_SEQ));
    assert_false(voice_proto_has(&m, VOICE_PROTO_F_TEXT));
    assert_null(m.text.data);
}


static void
test_every_type_with_required_fields(void **state)
{
    int                   types[] = {
        VOICE_PROTO_MSG_PING, VOICE_PROTO_MSG_PONG,
        VOICE_PROTO_MSG_STREAM_START, VOICE_PROTO_MSG_AUDIO_IN,
        VOICE_PROTO_MSG_MARK_ACK, VOICE_PROTO_MSG_DTMF,
        VOICE_PROTO_MSG_STREAM_STOP, VOICE_PROTO_MSG_CALL_EVENT,
        VOICE_PROTO_MSG_AUDIO_OUT,
        VOICE_PROTO_MSG_MARK, VOICE_PROTO_MSG_CLEAR, VOICE_PROTO_MSG_HANGUP,
        VOICE_PROTO_MSG_TRANSCRIPT, VOICE_PROTO_MSG_CALL_DONE,
        VOICE_PROTO_MSG_CALL_CREATE, VOICE_PROTO_MSG_CALL_END,
        VOICE_PROTO_MSG_NUMBERS_LIST, VOICE_PROTO_MSG_WEBHOOK,
        VOICE_PROTO_MSG_STATS, VOICE_PROTO_MSG_REPLY,
        VOICE_PROTO_MSG_ERROR
    };
    size_t                i, n;
    uint8_t               buf[1024];
    voice_proto_msg_t     m;
    voice_proto_writer_t  w;

    (void) state;

    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {

        /* with no field at all, every type but none is refused */
        voice_proto_begin(&w, buf, sizeof(buf), types[i]);
        n = voice_proto_finish(&w);
        assert_int_equal(voice_proto_decode(buf, n, &m, NULL),
                         VOICE_PROTO_ERROR);

        /* with every field, every type decodes */
        voice_proto_begin(&w, buf, sizeof(buf), types[i]);
        voice_proto_put_u64(&w, VOICE_PROTO_F_REQUEST_ID, 42);
        voice_proto_put_u32(&w, VOICE_PROTO_F_STATUS, 200);
        voice_proto_put_u32(&w, VOICE_PROTO_F_ORDER, 3);
        voice_proto_put_u32(&w, VOICE_PROTO_F_ROLE, VOICE_PROTO_ROLE_USER);
        voice_proto_put_u64(&w, VOICE_PROTO_F_TIMESTAMP, 1);
        voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID);
        voice_proto_put_str(&w, VOICE_PROTO_F_STREAM_SID, "MZ1");
        voice_proto_put_str(&w, VOICE_PROTO_F_PHONE, "+14155550123");
        voice_proto_put_str(&w, VOICE_PROTO_F_DIRECTION, "inbound");
        voice_proto_put_str(&w, VOICE_PROTO_F_TO, "+14155550123");
        voice_proto_put_str(&w, VOICE_PROTO_F_URL, "https://x/twiml");
        voice_proto_put_str(&w, VOICE_PROTO_F_NAME, "m1");
        voice_proto_put_str(&w, VOICE_PROTO_F_TEXT, "hello");
        voice_proto_put_str(&w, VOICE_PROTO_F_REASON, "why");
        voice_proto_put_str(&w, VOICE_PROTO_F_BODY, "{}");
        voice_proto_put_str(&w, VOICE_PROTO_F_SETTINGS, "{}");
        voice_proto_put_str(&w, VOICE_PROTO_F_SECRET, "s3cret");
        voice_proto_put_bytes(&w, VOICE_PROTO_F_AUDIO, "\xff", 1);
        n = voice_proto_finish(&w);
        assert_true(n > 0);
        assert_int_equal(voice_proto_decode(buf, n, &m, NULL),
                         VOICE_PROTO_OK);
        assert_int_equal(m.type, types[i]);
        assert_string_not_equal(voice_proto_type_name(types[i]), "unknown");
    }
}


/* the webhook's message: the secret is a field of its own, and without
 * it (or the body, or the URL) the message is refused */

static void
test_webhook(void **state)
{
    size_t                n, i;
    uint8_t               buf[1024];
    voice_proto_msg_t     m;
    voice_proto_writer_t  w;
    voice_proto_field_e   drop[] = {
        VOICE_PROTO_F_REQUEST_ID, VOICE_PROTO_F_CALL_SID, VOICE_PROTO_F_URL,
        VOICE_PROTO_F_BODY, VOICE_PROTO_F_SECRET
    };

    (void) state;

    for (i = 0; i <= sizeof(drop) / sizeof(drop[0]); i++) {
        voice_proto_begin(&w, buf, sizeof(buf), VOICE_PROTO_MSG_WEBHOOK);

        if (i == 0 || drop[i - 1] != VOICE_PROTO_F_REQUEST_ID) {
            voice_proto_put_u64(&w, VOICE_PROTO_F_REQUEST_ID, 7);
        }

        if (i == 0 || drop[i - 1] != VOICE_PROTO_F_CALL_SID) {
            voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID);
        }

        if (i == 0 || drop[i - 1] != VOICE_PROTO_F_URL) {
            voice_proto_put_str(&w, VOICE_PROTO_F_URL, "https://h/x");
        }

        if (i == 0 || drop[i - 1] != VOICE_PROTO_F_BODY) {
            voice_proto_put_str(&w, VOICE_PROTO_F_BODY, "{\"a\":1}");
        }

        if (i == 0 || drop[i - 1] != VOICE_PROTO_F_SECRET) {
            voice_proto_put_str(&w, VOICE_PROTO_F_SECRET, "s3cret");
        }

        voice_proto_put_str(&w, VOICE_PROTO_F_NAME, SID ".17");
        n = voice_proto_finish(&w);
        assert_true(n > 0);

        if (i > 0) {
            assert_int_equal(voice_proto_decode(buf, n, &m, NULL),
                             VOICE_PROTO_ERROR);
            continue;
        }

        assert_int_equal(voice_proto_decode(buf, n, &m, NULL),
                         VOICE_PROTO_OK);
        assert_int_equal(m.type, VOICE_PROTO_MSG_WEBHOOK);
        assert_string_equal(voice_proto_type_name(m.type), "webhook");
        assert_int_equal(m.secret.len, 6);
        assert_memory_equal(m.secret.data, "s3cret", 6);
        assert_int_equal(m.body.len, 7);
        assert_int_equal(m.name.len, strlen(SID) + 3);
    }
}


static void
test_partial_frames_need_more(void **state)
{
    size_t                n, i;
    uint8_t               buf[256];
    voice_proto_msg_t     m;
    voice_proto_writer_t  w;

    (void) state;

    voice_proto_begin(&w, buf, sizeof(buf), VOICE_PROTO_MSG_CLEAR);
    voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID);
    n = voice_proto_finish(&w);

    for (i = 0; i < n; i++) {
        assert_int_equal(voice_proto_decode(buf, i, &m, NULL),
                         VOICE_PROTO_AGAIN);
    }

    /* trailing bytes belong to the next frame */
    assert_int_equal(voice_proto_decode(buf, n, &m, NULL), VOICE_PROTO_OK);
    assert_int_equal(m.size, n);
}


static void
test_malformed_frames(void **state)
{
    size_t                n;
    uint8_t               buf[256], bad[256];
    const char           *err;
    voice_proto_msg_t     m;
    voice_proto_writer_t  w;

    (void) state;

    voice_proto_begin(&w, buf, sizeof(buf), VOICE_PROTO_MSG_MARK);
    voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID);
    voice_proto_put_str(&w, VOICE_PROTO_F_NAME, "m1");
    n = voice_proto_finish(&w);
    assert_int_equal(voice_proto_decode(buf, n, &m, NULL), VOICE_PROTO_OK);

    memcpy(bad, buf, n);
    bad[0] = 2;
    assert_int_equal(voice_proto_decode(bad, n, &m, &err), VOICE_PROTO_ERROR);
    assert_string_equal(err, "unsupported version");

    memcpy(bad, buf, n);
    bad[1] = 0x55;
    assert_int_equal(voice_proto_decode(bad, n, &m, &err), VOICE_PROTO_ERROR);
    assert_string_equal(err, "unknown message type");

    memcpy(bad, buf, n);
    bad[1] = 0xff;
    assert_int_equal(voice_proto_decode(bad, n, &m, &err), VOICE_PROTO_ERROR);

    memcpy(bad, buf, n);
    bad[3] = 1;
    assert_int_equal(voice_proto_decode(bad, n, &m, &err), VOICE_PROTO_ERROR);
    assert_string_equal(err, "reserved bits set");

    /* a field length that runs past the body */
    memcpy(bad, buf, n);
    bad[8 + 1] = 200;
    assert_int_equal(voice_proto_decode(bad, n, &m, &err), VOICE_PROTO_ERROR);
    assert_string_equal(err, "truncated field");

    /* a body that ends inside a field header */
    memcpy(bad, buf, n);
    bad[4] = (uint8_t) (n - 8 + 3);
    memset(bad + n, 0, 3);
    assert_int_equal(voice_proto_decode(bad, n + 3, &m, &err),
                     VOICE_PROTO_ERROR);
    assert_string_equal(err, "truncated field header");

    /* a body length over the frame limit */
    memcpy(bad, buf, n);
    bad[4] = 0xff; bad[5] = 0xff; bad[6] = 0xff; bad[7] = 0x7f;
    assert_int_equal(voice_proto_decode(bad, n, &m, &err), VOICE_PROTO_ERROR);
    assert_string_equal(err, "frame too large");

    /* an integer field with the wrong width */
    voice_proto_begin(&w, buf, sizeof(buf), VOICE_PROTO_MSG_PING);
    voice_proto_put_u32(&w, VOICE_PROTO_F_REQUEST_ID, 1);
    n = voice_proto_finish(&w);
    assert_int_equal(voice_proto_decode(buf, n, &m, &err), VOICE_PROTO_ERROR);
    assert_string_equal(err, "bad integer field length");

    /* the same field twice */
    voice_proto_begin(&w, buf, sizeof(buf), VOICE_PROTO_MSG_CLEAR);
    voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID);
    voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID);
    n = voice_proto_finish(&w);
    assert_int_equal(voice_proto_decode(buf, n, &m, &err), VOICE_PROTO_ERROR);
    assert_string_equal(err, "duplicate field");

    /* a required field missing */
    voice_proto_begin(&w, buf, sizeof(buf), VOICE_PROTO_MSG_MARK);
    voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID);
    n = voice_proto_finish(&w);
    assert_int_equal(voice_proto_decode(buf, n, &m, &err), VOICE_PROTO_ERROR);
    assert_string_equal(err, "required field missing");

    /* a call SID longer than any SID */
    memset(bad, 'A', sizeof(bad));
    voice_proto_begin(&w, buf, sizeof(buf), VOICE_PROTO_MSG_CLEAR);
    assert_int_equal(voice_proto_put_bytes(&w, VOICE_PROTO_F_CALL_SID, bad,
                                           VOICE_PROTO_MAX_SID + 1), 0);
    assert_int_equal(voice_proto_finish(&w), 0);
}


static void
test_unknown_fields_are_skipped(void **state)
{
    size_t                n;
    uint8_t               buf[256];
    voice_proto_msg_t     m;
    voice_proto_writer_t  w;

    (void) state;

    voice_proto_begin(&w, buf, sizeof(buf), VOICE_PROTO_MSG_CLEAR);
    voice_proto_put_bytes(&w, (voice_proto_field_e) 60, "new", 3);
    voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID);
    n = voice_proto_finish(&w);

    assert_int_equal(voice_proto_decode(buf, n, &m, NULL), VOICE_PROTO_OK);
    assert_true(str_eq(m.call_sid, SID));
}


static void
test_writer_limits(void **state)
{
    uint8_t               small[12], big[VOICE_PROTO_MAX_AUDIO + 64];
    uint8_t               audio[VOICE_PROTO_MAX_AUDIO + 1];
    voice_proto_writer_t  w;

    (void) state;

    memset(audio, 0x7f, sizeof(audio));

    /* a buffer too small fails, and stays failed */
    voice_proto_begin(&w, small, sizeof(small), VOICE_PROTO_MSG_CLEAR);
    assert_int_equal(voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID), 0);
    assert_int_equal(voice_proto_put_u32(&w, VOICE_PROTO_F_SEQ, 1), 0);
    assert_int_equal(voice_proto_finish(&w), 0);

    voice_proto_begin(&w, small, 4, VOICE_PROTO_MSG_CLEAR);
    assert_int_equal(voice_proto_finish(&w), 0);

    /* audio over the limit is refused, at the limit accepted */
    voice_proto_begin(&w, big, sizeof(big), VOICE_PROTO_MSG_AUDIO_OUT);
    assert_int_equal(voice_proto_put_bytes(&w, VOICE_PROTO_F_AUDIO, audio,
                                           sizeof(audio)), 0);

    voice_proto_begin(&w, big, sizeof(big), VOICE_PROTO_MSG_AUDIO_OUT);
    assert_int_equal(voice_proto_put_str(&w, VOICE_PROTO_F_CALL_SID, SID), 1);
    assert_int_equal(voice_proto_put_bytes(&w, VOICE_PROTO_F_AUDIO, audio,
                                           VOICE_PROTO_MAX_AUDIO), 1);
    assert_true(voice_proto_finish(&w) > VOICE_PROTO_MAX_AUDIO);
}


static void
test_hash_is_stable(void **state)
{
    (void) state;

    /* FNV-1a known answers: the owner of a call must never move */
    assert_int_equal(voice_proto_hash((const uint8_t *) "", 0), 0x811c9dc5u);
    assert_int_equal(voice_proto_hash((const uint8_t *) "a", 1), 0xe40c292cu);
    assert_int_equal(voice_proto_hash((const uint8_t *) "foobar", 6),
                     0xbf9cf968u);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_audio_round_trip),
        cmocka_unit_test(test_every_type_with_required_fields),
        cmocka_unit_test(test_webhook),
        cmocka_unit_test(test_partial_frames_need_more),
        cmocka_unit_test(test_malformed_frames),
        cmocka_unit_test(test_unknown_fields_are_skipped),
        cmocka_unit_test(test_writer_limits),
        cmocka_unit_test(test_hash_is_stable),
    };

    return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
