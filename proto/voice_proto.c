/*
 * voice_proto.c: encoder and decoder of the nginx <-> bridged frames.
 *
 * The wire format is described in voice_proto.h.  Field handling is table
 * driven: one row per tag gives its kind, its size limit and where its
 * value lands in voice_proto_msg_t; one row per message type gives the
 * fields it requires.  libc only.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "voice_proto.h"


typedef enum {
    VOICE_PROTO_KIND_NONE = 0,
    VOICE_PROTO_KIND_U32,
    VOICE_PROTO_KIND_U64,
    VOICE_PROTO_KIND_BYTES
} voice_proto_kind_e;


typedef struct {
    uint8_t    kind;
    uint32_t   max;       /* longest value, for BYTES */
    size_t     offset;    /* into voice_proto_msg_t */
} voice_proto_field_t;


#define VOICE_PROTO_U32(member)                                               \
    { VOICE_PROTO_KIND_U32, 4, offsetof(voice_proto_msg_t, member) }
#define VOICE_PROTO_U64(member)                                               \
    { VOICE_PROTO_KIND_U64, 8, offsetof(voice_proto_msg_t, member) }
#define VOICE_PROTO_BYTES(member, limit)                                      \
    { VOICE_PROTO_KIND_BYTES, limit, offsetof(voice_proto_msg_t, member) }


static const voice_proto_field_t  voice_proto_fields[VOICE_PROTO_F_MAX] = {
    [VOICE_PROTO_F_REQUEST_ID] = VOICE_PROTO_U64(request_id),
    [VOICE_PROTO_F_STATUS] = VOICE_PROTO_U32(status),
    [VOICE_PROTO_F_SEQ] = VOICE_PROTO_U32(seq),
    [VOICE_PROTO_F_TIMESTAMP] = VOICE_PROTO_U64(timestamp),
    [VOICE_PROTO_F_ORDER] = VOICE_PROTO_U32(order),
    [VOICE_PROTO_F_ROLE] = VOICE_PROTO_U32(role),
    [VOICE_PROTO_F_COUNT] = VOICE_PROTO_U32(count),
    [VOICE_PROTO_F_FLAGS] = VOICE_PROTO_U32(flags),
    [VOICE_PROTO_F_TIME_LIMIT] = VOICE_PROTO_U32(time_limit),
    [VOICE_PROTO_F_LATENCY] = VOICE_PROTO_U32(latency),
    [VOICE_PROTO_F_IN_TEXT] = VOICE_PROTO_U32(in_text),
    [VOICE_PROTO_F_IN_AUDIO] = VOICE_PROTO_U32(in_audio),
    [VOICE_PROTO_F_IN_CACHED] = VOICE_PROTO_U32(in_cached),
    [VOICE_PROTO_F_OUT_TEXT] = VOICE_PROTO_U32(out_text),
    [VOICE_PROTO_F_OUT_AUDIO] = VOICE_PROTO_U32(out_audio),

    [VOICE_PROTO_F_CALL_SID] = VOICE_PROTO_BYTES(call_sid,
                                                 VOICE_PROTO_MAX_SID),
    [VOICE_PROTO_F_STREAM_SID] = VOICE_PROTO_BYTES(stream_sid,
                                                   VOICE_PROTO_MAX_SID),
    [VOICE_PROTO_F_ACCOUNT_SID] = VOICE_PROTO_BYTES(account_sid,
                                                    VOICE_PROTO_MAX_SID),
    [VOICE_PROTO_F_PHONE] = VOICE_PROTO_BYTES(phone, VOICE_PROTO_MAX_SID),
    [VOICE_PROTO_F_DIRECTION] = VOICE_PROTO_BYTES(direction,
                                                  VOICE_PROTO_MAX_SID),
    [VOICE_PROTO_F_TO] = VOICE_PROTO_BYTES(to, VOICE_PROTO_MAX_SID),
    [VOICE_PROTO_F_FROM] = VOICE_PROTO_BYTES(from, VOICE_PROTO_MAX_SID),
    [VOICE_PROTO_F_URL] = VOICE_PROTO_BYTES(url, 4096),
    [VOICE_PROTO_F_NAME] = VOICE_PROTO_BYTES(name, 256),
    [VOICE_PROTO_F_TEXT] = VOICE_PROTO_BYTES(text, VOICE_PROTO_MAX_TEXT),
    [VOICE_PROTO_F_REASON] = VOICE_PROTO_BYTES(reason, 1024),
    [VOICE_PROTO_F_BODY] = VOICE_PROTO_BYTES(body, VOICE_PROTO_MAX_FRAME),
    [VOICE_PROTO_F_AUDIO] = VOICE_PROTO_BYTES(audio, VOICE_PROTO_MAX_AUDIO),
    [VOICE_PROTO_F_STATUS_URL] = VOICE_PROTO_BYTES(status_url, 4096),
    [VOICE_PROTO_F_SETTINGS] = VOICE_PROTO_BYTES(settings,
                                                 VOICE_PROTO_MAX_SETTINGS),
    [VOICE_PROTO_F_ARGUMENTS] = VOICE_PROTO_BYTES(arguments,
                                                  VOICE_PROTO_MAX_TEXT),
    [VOICE_PROTO_F_ENDED_BY] = VOICE_PROTO_BYTES(ended_by, 64),
    [VOICE_PROTO_F_ANSWERED_BY] = VOICE_PROTO_BYTES(answered_by, 64),
    [VOICE_PROTO_F_HISTORY] = VOICE_PROTO_BYTES(history,
                                                VOICE_PROTO_MAX_HISTORY),
    [VOICE_PROTO_F_GENERATED] = VOICE_PROTO_BYTES(generated,
                                                  VOICE_PROTO_MAX_TEXT),
    [VOICE_PROTO_F_MODEL] = VOICE_PROTO_BYTES(model, 128),
    [VOICE_PROTO_F_TRANSCRIBE_MODEL] = VOICE_PROTO_BYTES(transcribe_model,
                                                         128),
    [VOICE_PROTO_F_SECRET] = VOICE_PROTO_BYTES(secret, 4096),
};


#define F(tag)  ((uint64_t) 1 << VOICE_PROTO_F_##tag)

typedef struct {
    uint8_t      known;
    uint64_t     required;
    const char  *name;
} voice_proto_type_t;


static const voice_proto_type_t  voice_proto_types[128] = {
    [VOICE_PROTO_MSG_PING] = { 1, F(REQUEST_ID), "ping" },
    [VOICE_PROTO_MSG_PONG] = { 1, F(REQUEST_ID), "pong" },
    [VOICE_PROTO_MSG_STREAM_START] = { 1,
        F(CALL_SID) | F(STREAM_SID) | F(PHONE) | F(DIRECTION) | F(SETTINGS),
        "stream.start" },
    [VOICE_PROTO_MSG_AUDIO_IN] = { 1, F(CALL_SID) | F(AUDIO),
                                   "audio.in" },
    [VOICE_PROTO_MSG_MARK_ACK] = { 1, F(CALL_SID) | F(NAME),
                                   "mark.ack" },
    [VOICE_PROTO_MSG_DTMF] = { 1, F(CALL_SID) | F(TEXT), "dtmf" },
    [VOICE_PROTO_MSG_STREAM_STOP] = { 1, F(CALL_SID), "stream.stop" },
    [VOICE_PROTO_MSG_CALL_EVENT] = { 1, F(CALL_SID) | F(NAME) | F(TEXT),
                                     "call.event" },
    [VOICE_PROTO_MSG_AUDIO_OUT] = { 1, F(CALL_SID) | F(AUDIO),
                                    "audio.out" },
    [VOICE_PROTO_MSG_MARK] = { 1, F(CALL_SID) | F(NAME), "mark" },
    [VOICE_PROTO_MSG_CLEAR] = { 1, F(CALL_SID), "clear" },
    [VOICE_PROTO_MSG_HANGUP] = { 1, F(CALL_SID), "hangup" },
    [VOICE_PROTO_MSG_TRANSCRIPT] = { 1,
        F(CALL_SID) | F(ORDER) | F(ROLE) | F(TEXT) | F(TIMESTAMP),
        "transcript" },
    [VOICE_PROTO_MSG_CALL_DONE] = { 1, F(CALL_SID), "call.done" },
    [VOICE_PROTO_MSG_USAGE] = { 1, F(CALL_SID), "usage" },
    [VOICE_PROTO_MSG_CALL_CREATE] = { 1,
        F(REQUEST_ID) | F(TO) | F(URL), "call.create" },
    [VOICE_PROTO_MSG_CALL_END] = { 1, F(REQUEST_ID) | F(CALL_SID),
                                   "call.end" },
    [VOICE_PROTO_MSG_NUMBERS_LIST] = { 1, F(REQUEST_ID),
                                       "numbers.list" },
    [VOICE_PROTO_MSG_WEBHOOK] = { 1,
        F(REQUEST_ID) | F(CALL_SID) | F(URL) | F(BODY) | F(SECRET),
        "webhook" },
    [VOICE_PROTO_MSG_STATS] = { 1, F(REQUEST_ID), "stats" },
    [VOICE_PROTO_MSG_REPLY] = { 1, F(REQUEST_ID) | F(STATUS) | F(BODY),
                                "reply" },
    [VOICE_PROTO_MSG_ERROR] = { 1, F(REASON), "error" },
};

#undef F


static void
voice_proto_w32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    p[2] = (uint8_t) (v >> 16);
    p[3] = (uint8_t) (v >> 24);
}


static uint32_t
voice_proto_r32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}


static uint64_t
voice_proto_r64(const uint8_t *p)
{
    return (uint64_t) voice_proto_r32(p)
           | (uint64_t) voice_proto_r32(p + 4) << 32;
}


void
voice_proto_begin(voice_proto_writer_t *w, uint8_t *buf, size_t size,
    voice_proto_msg_type_e type)
{
    w->start = buf;
    w->pos = buf;
    w->end = buf + size;
    w->failed = 0;

    if (size < VOICE_PROTO_HEADER_SIZE) {
        w->failed = 1;
        return;
    }

    buf[0] = VOICE_PROTO_VERSION;
    buf[1] = (uint8_t) type;
    buf[2] = 0;
    buf[3] = 0;
    voice_proto_w32(buf + 4, 0);
    w->pos = buf + VOICE_PROTO_HEADER_SIZE;
}


static uint8_t *
voice_proto_reserve(voice_proto_writer_t *w, voice_proto_field_e tag,
    size_t len)
{
    uint8_t  *p;

    if (w->failed
        || (unsigned) tag >= VOICE_PROTO_F_MAX
        || len > VOICE_PROTO_MAX_FRAME
        || (size_t) (w->end - w->pos) < VOICE_PROTO_FIELD_HEADER + len
        || (size_t) (w->pos - w->start) + VOICE_PROTO_FIELD_HEADER + len
           > VOICE_PROTO_MAX_FRAME)
    {
        w->failed = 1;
        return NULL;
    }

    p = w->pos;
    p[0] = (uint8_t) tag;
    voice_proto_w32(p + 1, (uint32_t) len);
    w->pos += VOICE_PROTO_FIELD_HEADER + len;

    return p + VOICE_PROTO_FIELD_HEADER;
}


int
voice_proto_put_u32(voice_proto_writer_t *w, voice_proto_field_e tag,
    uint32_t v)
{
    uint8_t  *p;

    p = voice_proto_reserve(w, tag, 4);
    if (p == NULL) {
        return 0;
    }

    voice_proto_w32(p, v);
    return 1;
}


int
voice_proto_put_u64(voice_proto_writer_t *w, voice_proto_field_e tag,
    uint64_t v)
{
    uint8_t  *p;

    p = voice_proto_reserve(w, tag, 8);
    if (p == NULL) {
        return 0;
    }

    voice_proto_w32(p, (uint32_t) v);
    voice_proto_w32(p + 4, (uint32_t) (v >> 32));
    return 1;
}


int
voice_proto_put_bytes(voice_proto_writer_t *w, voice_proto_field_e tag,
    const void *data, size_t len)
{
    uint8_t  *p;

    if ((unsigned) tag < VOICE_PROTO_F_MAX
        && voice_proto_fields[tag].kind == VOICE_PROTO_KIND_BYTES
        && len > voice_proto_fields[tag].max)
    {
        w->failed = 1;
        return 0;
    }

    p = voice_proto_reserve(w, tag, len);
    if (p == NULL) {
        return 0;
    }

    if (len) {
        memcpy(p, data, len);
    }

    return 1;
}


int
voice_proto_put_str(voice_proto_writer_t *w, voice_proto_field_e tag,
    const char *s)
{
    return voice_proto_put_bytes(w, tag, s, s ? strlen(s) : 0);
}


size_t
voice_proto_finish(voice_proto_writer_t *w)
{
    size_t  size;

    if (w->failed) {
        return 0;
    }

    size = (size_t) (w->pos - w->start);
    voice_proto_w32(w->start + 4, (uint32_t) (size - VOICE_PROTO_HEADER_SIZE));

    return size;
}


int
voice_proto_decode(const uint8_t *buf, size_t len, voice_proto_msg_t *msg,
    const char **err)
{
    const char                 *reason;
    const uint8_t              *p, *end;
    uint32_t                    body, flen;
    unsigned                    tag;
    voice_proto_str_t          *s;
    const voice_proto_type_t   *t;
    const voice_proto_field_t  *f;

    memset(msg, 0, sizeof(voice_proto_msg_t));

    if (len < VOICE_PROTO_HEADER_SIZE) {
        return VOICE_PROTO_AGAIN;
    }

    if (buf[0] != VOICE_PROTO_VERSION) {
        reason = "unsupported version";
        goto failed;
    }

    if (buf[1] >= 128 || !voice_proto_types[buf[1]].known) {
        reason = "unknown message type";
        goto failed;
    }

    if (buf[2] != 0 || buf[3] != 0) {
        reason = "reserved bits set";
        goto failed;
    }

    body = voice_proto_r32(buf + 4);

    if (body > VOICE_PROTO_MAX_FRAME - VOICE_PROTO_HEADER_SIZE) {
        reason = "frame too large";
        goto failed;
    }

    if (len - VOICE_PROTO_HEADER_SIZE < body) {
        return VOICE_PROTO_AGAIN;
    }

    t = &voice_proto_types[buf[1]];
    msg->type = buf[1];
    msg->size = VOICE_PROTO_HEADER_SIZE + (size_t) body;

    p = buf + VOICE_PROTO_HEADER_SIZE;
    end = p + body;

    while (p < end) {

        if ((size_t) (end - p) < VOICE_PROTO_FIELD_HEADER) {
            reason = "truncated field header";
            goto failed;
        }

        tag = p[0];
        flen = voice_proto_r32(p + 1);
        p += VOICE_PROTO_FIELD_HEADER;

        if ((size_t) (end - p) < flen) {
            reason = "truncated field";
            goto failed;
        }

        if (tag >= VOICE_PROTO_F_MAX
            || voice_proto_fields[tag].kind == VOICE_PROTO_KIND_NONE)
        {
            /* a field of a newer peer: skip it */
            p += flen;
            continue;
        }

        if ((msg->present >> tag) & 1) {
            reason = "duplicate field";
            goto failed;
        }

        f = &voice_proto_fields[tag];

        switch (f->kind) {

        case VOICE_PROTO_KIND_U32:
            if (flen != 4) {
                reason = "bad integer field length";
                goto failed;
            }
            *(uint32_t *) ((uint8_t *) msg + f->offset) = voice_proto_r32(p);
            break;

        case VOICE_PROTO_KIND_U64:
            if (flen != 8) {
                reason = "bad integer field length";
                goto failed;
            }
            *(uint64_t *) ((uint8_t *) msg + f->offset) = voice_proto_r64(p);
            break;

        default: /* VOICE_PROTO_KIND_BYTES */
            if (flen > f->max) {
                reason = "field too long";
                goto failed;
            }
            s = (voice_proto_str_t *) ((uint8_t *) msg + f->offset);
            s->data = p;
            s->len = flen;
            break;
        }

        msg->present |= (uint64_t) 1 << tag;
        p += flen;
    }

    if ((msg->present & t->required) != t->required) {
        reason = "required field missing";
        goto failed;
    }

    return VOICE_PROTO_OK;

failed:

    if (err) {
        *err = reason;
    }

    return VOICE_PROTO_ERROR;
}


const char *
voice_proto_type_name(int type)
{
    if (type < 0 || type >= 128 || !voice_proto_types[type].known) {
        return "unknown";
    }

    return voice_proto_types[type].name;
}


uint32_t
voice_proto_hash(const uint8_t *data, size_t len)
{
    size_t    i;
    uint32_t  h;

    /* FNV-1a: stable across hosts and versions, which the owner rule needs */

    h = 2166136261u;

    for (i = 0; i < len; i++) {
        h ^= data[i];
        h *= 16777619u;
    }

    return h;
}
