/*
 * fuzz_proto.c: libFuzzer target of the nginx <-> bridged frame decoder
 * (proto/voice_proto.c), which both sides run on what the other sends.
 *
 * The input is one frame.  Whatever it is, decoding must not read past
 * it.  When it decodes, the frame must fit the input, every string field
 * must point inside the frame (or be absent, NULL and empty), and the
 * frame alone (the input cut at msg.size) must decode to the same
 * message; every shorter cut must be refused.  And a frame made again
 * from the decoded fields with the encoder must decode to equal fields.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "voice_proto.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static uint8_t  fuzz_frame[VOICE_PROTO_MAX_FRAME];


static void
fuzz_str_inside(const voice_proto_str_t *s, const uint8_t *buf, size_t size)
{
    if (s->data == NULL) {
        if (s->len != 0) {
            abort();
        }

        return;
    }

    if (s->data < buf || s->len > size
        || (size_t) (s->data - buf) > size - s->len)
    {
        abort();
    }
}


#define FUZZ_STRS(m)                                                          \
    { &(m).call_sid, VOICE_PROTO_F_CALL_SID },                                \
    { &(m).stream_sid, VOICE_PROTO_F_STREAM_SID },                            \
    { &(m).account_sid, VOICE_PROTO_F_ACCOUNT_SID },                          \
    { &(m).phone, VOICE_PROTO_F_PHONE },                                      \
    { &(m).direction, VOICE_PROTO_F_DIRECTION },                              \
    { &(m).to, VOICE_PROTO_F_TO },                                            \
    { &(m).from, VOICE_PROTO_F_FROM },                                        \
    { &(m).url, VOICE_PROTO_F_URL },                                          \
    { &(m).name, VOICE_PROTO_F_NAME },                                        \
    { &(m).text, VOICE_PROTO_F_TEXT },                                        \
    { &(m).reason, VOICE_PROTO_F_REASON },                                    \
    { &(m).body, VOICE_PROTO_F_BODY },                                        \
    { &(m).audio, VOICE_PROTO_F_AUDIO },                                      \
    { &(m).status_url, VOICE_PROTO_F_STATUS_URL },                            \
    { &(m).settings, VOICE_PROTO_F_SETTINGS },                                \
    { &(m).arguments, VOICE_PROTO_F_ARGUMENTS },                              \
    { &(m).ended_by, VOICE_PROTO_F_ENDED_BY },                                \
    { &(m).answered_by, VOICE_PROTO_F_ANSWERED_BY },                          \
    { &(m).history, VOICE_PROTO_F_HISTORY },                                  \
    { &(m).generated, VOICE_PROTO_F_GENERATED },                              \
    { &(m).model, VOICE_PROTO_F_MODEL },                                      \
    { &(m).transcribe_model, VOICE_PROTO_F_TRANSCRIBE_MODEL },                \
    { &(m).secret, VOICE_PROTO_F_SECRET }

typedef struct {
    const voice_proto_str_t  *s;
    voice_proto_field_e       tag;
} fuzz_str_t;


static int
fuzz_same_str(const voice_proto_str_t *a, const voice_proto_str_t *b)
{
    return a->len == b->len
           && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                 i, n;
    uint8_t               *copy;
    voice_proto_msg_t      msg, again;
    voice_proto_writer_t   w;

    if (voice_proto_decode(data, size, &msg, NULL) != VOICE_PROTO_OK) {
        return 0;
    }

    if (msg.size == 0 || msg.size > size) {
        abort();
    }

    {
        fuzz_str_t  strs[] = { FUZZ_STRS(msg) };

        for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
            fuzz_str_inside(strs[i].s, data, msg.size);
        }
    }

    /* the frame alone, in a buffer of its own size (ASan sees overreads) */

    copy = malloc(msg.size);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, msg.size);

    if (voice_proto_decode(copy, msg.size, &again, NULL) != VOICE_PROTO_OK
        || again.size != msg.size || again.type != msg.type
        || again.present != msg.present)
    {
        abort();
    }

    for (n = 0; n < msg.size; n++) {
        if (voice_proto_decode(copy, n, &again, NULL) == VOICE_PROTO_OK) {
            abort();
        }
    }

    free(copy);

    /* made again with the encoder, in tag order */

    voice_proto_begin(&w, fuzz_frame, sizeof(fuzz_frame),
                      (voice_proto_msg_type_e) msg.type);

#define FUZZ_U64(tag, v)                                                      \
    if (voice_proto_has(&msg, tag)) voice_proto_put_u64(&w, tag, v)
#define FUZZ_U32(tag, v)                                                      \
    if (voice_proto_has(&msg, tag)) voice_proto_put_u32(&w, tag, v)

    FUZZ_U64(VOICE_PROTO_F_REQUEST_ID, msg.request_id);
    FUZZ_U32(VOICE_PROTO_F_STATUS, msg.status);
    FUZZ_U32(VOICE_PROTO_F_SEQ, msg.seq);
    FUZZ_U64(VOICE_PROTO_F_TIMESTAMP, msg.timestamp);
    FUZZ_U32(VOICE_PROTO_F_ORDER, msg.order);
    FUZZ_U32(VOICE_PROTO_F_ROLE, msg.role);
    FUZZ_U32(VOICE_PROTO_F_COUNT, msg.count);
    FUZZ_U32(VOICE_PROTO_F_FLAGS, msg.flags);
    FUZZ_U32(VOICE_PROTO_F_TIME_LIMIT, msg.time_limit);

    {
        fuzz_str_t  strs[] = { FUZZ_STRS(msg) };

        for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
            if (voice_proto_has(&msg, strs[i].tag)) {
                voice_proto_put_bytes(&w, strs[i].tag, strs[i].s->data,
                                      strs[i].s->len);
            }
        }
    }

    n = voice_proto_finish(&w);

    /* what decoded within the limits encodes within them */

    if (n == 0 || voice_proto_decode(fuzz_frame, n, &again, NULL)
                  != VOICE_PROTO_OK
        || again.type != msg.type || again.present != msg.present
        || again.request_id != msg.request_id
        || again.timestamp != msg.timestamp || again.status != msg.status
        || again.seq != msg.seq || again.order != msg.order
        || again.role != msg.role || again.count != msg.count
        || again.flags != msg.flags || again.time_limit != msg.time_limit)
    {
        abort();
    }

    {
        fuzz_str_t  a[] = { FUZZ_STRS(msg) };
        fuzz_str_t  b[] = { FUZZ_STRS(again) };

        for (i = 0; i < sizeof(a) / sizeof(a[0]); i++) {
            if (!fuzz_same_str(a[i].s, b[i].s)) {
                abort();
            }
        }
    }

    return 0;
}
