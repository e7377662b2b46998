/*
 * voice_proto.h: the message format between the nginx module and bridged.
 *
 * Both sides compile proto/voice_proto.c; it uses libc only, so it is unit
 * tested and fuzzed outside nginx.  One ZeroMQ message part carries one
 * frame (on the ROUTER side the routing id part comes before it).
 *
 * Wire format, all integers little-endian:
 *
 *     offset  size  field
 *     0       1     version (VOICE_PROTO_VERSION)
 *     1       1     message type (VOICE_PROTO_MSG_*)
 *     2       2     reserved, must be 0
 *     4       4     body length N (bytes that follow the header)
 *     8       N     fields
 *
 * A field is
 *
 *     0       1     tag (VOICE_PROTO_F_*)
 *     1       4     length L
 *     5       L     value: an integer field holds exactly 4 or 8 bytes,
 *                   a string or blob field holds L raw bytes (no NUL)
 *
 * Fields may come in any order; a tag may appear once.  Unknown tags are
 * skipped, so a newer peer can add fields.  Each message type names the
 * fields it requires; the decoder refuses a frame that lacks one.
 *
 * Decoding produces views (pointer + length) into the frame: nothing is
 * copied, and the views live as long as the frame does.
 */

#ifndef VOICE_PROTO_H
#define VOICE_PROTO_H

#include <stddef.h>
#include <stdint.h>


#define VOICE_PROTO_VERSION          1
#define VOICE_PROTO_HEADER_SIZE      8
#define VOICE_PROTO_FIELD_HEADER     5

/* limits: a frame over these is refused by both the encoder and decoder */
#define VOICE_PROTO_MAX_FRAME        (1024 * 1024)
#define VOICE_PROTO_MAX_AUDIO        16384
#define VOICE_PROTO_MAX_SID          64
#define VOICE_PROTO_MAX_TEXT         65536
#define VOICE_PROTO_MAX_SETTINGS     (256 * 1024)
#define VOICE_PROTO_MAX_HISTORY      (128 * 1024)

/* a buffer of this size always holds one audio message (in or out) */
#define VOICE_PROTO_AUDIO_FRAME_SIZE                                          \
    (VOICE_PROTO_HEADER_SIZE + 4 * VOICE_PROTO_FIELD_HEADER                   \
     + VOICE_PROTO_MAX_SID + 4 + 8 + VOICE_PROTO_MAX_AUDIO)


/* message types; the comment says who sends it: N = nginx, B = bridged */
typedef enum {
    VOICE_PROTO_MSG_PING = 0x01,          /* N<->B  request_id (nonce) */
    VOICE_PROTO_MSG_PONG = 0x02,          /* N<->B  request_id */

    VOICE_PROTO_MSG_STREAM_START = 0x10,  /* N->B  call, stream, settings */
    VOICE_PROTO_MSG_AUDIO_IN = 0x11,      /* N->B  caller audio (mu-law) */
    VOICE_PROTO_MSG_MARK_ACK = 0x12,      /* N->B  Twilio echoed a mark */
    VOICE_PROTO_MSG_DTMF = 0x13,          /* N->B  caller pressed a key */
    VOICE_PROTO_MSG_STREAM_STOP = 0x14,   /* N->B  the media stream ended */
    VOICE_PROTO_MSG_CALL_EVENT = 0x15,    /* N->B  Twilio told of a call:
                                             name "amd", text AnsweredBy */

    VOICE_PROTO_MSG_AUDIO_OUT = 0x20,     /* B->N  assistant audio */
    VOICE_PROTO_MSG_MARK = 0x21,          /* B->N  send a Twilio mark */
    VOICE_PROTO_MSG_CLEAR = 0x22,         /* B->N  barge-in: Twilio clear */
    VOICE_PROTO_MSG_HANGUP = 0x23,        /* B->N  end the media stream */
    VOICE_PROTO_MSG_TRANSCRIPT = 0x24,    /* B->N  one finished utterance */
    VOICE_PROTO_MSG_CALL_DONE = 0x25,     /* B->N  no more transcript */
    VOICE_PROTO_MSG_USAGE = 0x26,         /* B->N  a response's tokens */

    VOICE_PROTO_MSG_CALL_CREATE = 0x30,   /* N->B  REST: place a call */
    VOICE_PROTO_MSG_CALL_END = 0x31,      /* N->B  REST: hang up a call */
    VOICE_PROTO_MSG_NUMBERS_LIST = 0x32,  /* N->B  REST: list numbers */
    VOICE_PROTO_MSG_WEBHOOK = 0x33,       /* N->B  POST a call's record to
                                             the operator (reply: status
                                             the receiver's, 0 if none) */
    VOICE_PROTO_MSG_STATS = 0x34,         /* N->B  bridged's counters, as
                                             a REPLY's Prometheus lines */
    VOICE_PROTO_MSG_REPLY = 0x3f,         /* B->N  REST reply */

    VOICE_PROTO_MSG_ERROR = 0x7f          /* B->N  protocol error */
} voice_proto_msg_type_e;


/* field tags */
typedef enum {
    VOICE_PROTO_F_REQUEST_ID = 1,      /* u64 */
    VOICE_PROTO_F_STATUS = 2,          /* u32: HTTP status of a REPLY */
    VOICE_PROTO_F_SEQ = 3,             /* u32: Twilio chunk / counter */
    VOICE_PROTO_F_TIMESTAMP = 4,       /* u64: ms (epoch, or stream time) */
    VOICE_PROTO_F_ORDER = 5,           /* u32: conversation item order */
    VOICE_PROTO_F_ROLE = 6,            /* u32: VOICE_PROTO_ROLE_* */
    VOICE_PROTO_F_COUNT = 7,           /* u32 */
    VOICE_PROTO_F_FLAGS = 11,          /* u32: VOICE_PROTO_FLAG_* */
    VOICE_PROTO_F_TIME_LIMIT = 12,     /* u32: a call's limit, seconds */
    VOICE_PROTO_F_LATENCY = 13,        /* u32: ms, a reply's turn latency */
    VOICE_PROTO_F_IN_TEXT = 14,        /* u32: tokens, input text */
    VOICE_PROTO_F_IN_AUDIO = 15,       /* u32: tokens, input audio */
    VOICE_PROTO_F_IN_CACHED = 16,      /* u32: tokens, input cached */
    VOICE_PROTO_F_OUT_TEXT = 17,       /* u32: tokens, output text */
    VOICE_PROTO_F_OUT_AUDIO = 18,      /* u32: tokens, output audio */
                                       /* 8..10: retired (VAD settings,
                                          now in SETTINGS) */

    VOICE_PROTO_F_CALL_SID = 32,       /* string: CA + 32 hex */
    VOICE_PROTO_F_STREAM_SID = 33,     /* string: MZ + 32 hex */
    VOICE_PROTO_F_ACCOUNT_SID = 34,    /* string */
    VOICE_PROTO_F_PHONE = 35,          /* string: the caller's number */
    VOICE_PROTO_F_DIRECTION = 36,      /* string: inbound | outbound */
    VOICE_PROTO_F_TO = 37,             /* string */
    VOICE_PROTO_F_FROM = 38,           /* string */
    VOICE_PROTO_F_URL = 39,            /* string: TwiML URL for a call */
    VOICE_PROTO_F_NAME = 40,           /* string: mark name */
    VOICE_PROTO_F_TEXT = 41,           /* string: utterance, digit */
    VOICE_PROTO_F_REASON = 42,         /* string */
    VOICE_PROTO_F_BODY = 43,           /* blob: REST reply JSON */
    VOICE_PROTO_F_AUDIO = 44,          /* blob: raw mu-law 8 kHz */
                                       /* 45..49: retired (session
                                          settings, now in SETTINGS) */
    VOICE_PROTO_F_STATUS_URL = 50,     /* string: status callback URL */
    VOICE_PROTO_F_SETTINGS = 51,       /* blob: the call's session settings,
                                          a JSON object (docs/proto.md) */
    VOICE_PROTO_F_ARGUMENTS = 52,      /* blob: a tool call's arguments,
                                          a JSON object */
    VOICE_PROTO_F_ENDED_BY = 53,       /* string: who ended the call */
    VOICE_PROTO_F_ANSWERED_BY = 54,    /* string: Twilio's AnsweredBy */
    VOICE_PROTO_F_HISTORY = 55,        /* blob: a call's conversation so
                                          far, a JSON object (docs/proto.md),
                                          when another bridged had it */
    VOICE_PROTO_F_GENERATED = 56,      /* string: what the model generated
                                          of an assistant utterance the
                                          caller cut off (text: what was
                                          heard) */
    VOICE_PROTO_F_MODEL = 57,          /* string: the realtime model */
    VOICE_PROTO_F_TRANSCRIBE_MODEL = 58, /* string: the transcription
                                            model */
    VOICE_PROTO_F_SECRET = 59,         /* string: a webhook's signing
                                          secret */

    VOICE_PROTO_F_MAX = 64             /* tags are below this */
} voice_proto_field_e;


#define VOICE_PROTO_ROLE_USER        1
#define VOICE_PROTO_ROLE_ASSISTANT   2
#define VOICE_PROTO_ROLE_TOOL        3   /* name, arguments, text: output */
#define VOICE_PROTO_ROLE_DTMF        4   /* text: the digit */
#define VOICE_PROTO_ROLE_NOTE        5   /* text: what happened to the call
                                            (a session took over) */

/* call.create's and stream.start's flags */
#define VOICE_PROTO_FLAG_AMD         1   /* call.create: answering-machine
                                            detection */
#define VOICE_PROTO_FLAG_RESUMED     2   /* stream.start: the call was on
                                            another bridged (or this one,
                                            before it restarted): go on
                                            with its history, no greeting */

/* a transcript's flags */
#define VOICE_PROTO_FLAG_INTERRUPTED 1   /* an assistant utterance the
                                            caller cut off: text is what
                                            played, generated all of it */

/* a reply's flags */
#define VOICE_PROTO_FLAG_NOT_DONE    2   /* Twilio surely did not act on the
                                            request (it never reached
                                            Twilio, or Twilio refused it):
                                            sending it again cannot do
                                            anything twice */

/* a hangup's and a pong's flags */
#define VOICE_PROTO_FLAG_FULL        4   /* bridged is at its --max-calls:
                                            it refused this stream, or
                                            takes no new call now */


/* decoder results: tri-state */
#define VOICE_PROTO_OK        0
#define VOICE_PROTO_AGAIN     1   /* need more bytes (stream use only) */
#define VOICE_PROTO_ERROR    -1


typedef struct {
    const uint8_t   *data;
    size_t           len;
} voice_proto_str_t;


/*
 * A decoded message.  Integer fields not present are 0; string fields not
 * present have data NULL and len 0.  voice_proto_has() tells presence.
 */
typedef struct {
    uint8_t             type;
    uint64_t            present;        /* bit (1 << tag) per field seen */
    size_t              size;           /* bytes the frame took */

    uint64_t            request_id;
    uint64_t            timestamp;
    uint32_t            status;
    uint32_t            seq;
    uint32_t            order;
    uint32_t            role;
    uint32_t            count;
    uint32_t            flags;
    uint32_t            time_limit;
    uint32_t            latency;
    uint32_t            in_text;
    uint32_t            in_audio;
    uint32_t            in_cached;
    uint32_t            out_text;
    uint32_t            out_audio;

    voice_proto_str_t   call_sid;
    voice_proto_str_t   stream_sid;
    voice_proto_str_t   account_sid;
    voice_proto_str_t   phone;
    voice_proto_str_t   direction;
    voice_proto_str_t   to;
    voice_proto_str_t   from;
    voice_proto_str_t   url;
    voice_proto_str_t   name;
    voice_proto_str_t   text;
    voice_proto_str_t   reason;
    voice_proto_str_t   body;
    voice_proto_str_t   audio;
    voice_proto_str_t   status_url;
    voice_proto_str_t   settings;
    voice_proto_str_t   arguments;
    voice_proto_str_t   ended_by;
    voice_proto_str_t   answered_by;
    voice_proto_str_t   history;
    voice_proto_str_t   generated;
    voice_proto_str_t   model;
    voice_proto_str_t   transcribe_model;
    voice_proto_str_t   secret;
} voice_proto_msg_t;


/*
 * The encoder writes into a caller-owned buffer.  Every put function
 * returns 1 on success and 0 when the buffer or a limit would overflow;
 * after a failure the writer stays failed and voice_proto_finish()
 * returns 0, so a caller may check once at the end.
 */
typedef struct {
    uint8_t   *start;
    uint8_t   *pos;
    uint8_t   *end;
    int        failed;
} voice_proto_writer_t;


void voice_proto_begin(voice_proto_writer_t *w, uint8_t *buf, size_t size,
    voice_proto_msg_type_e type);
int voice_proto_put_u32(voice_proto_writer_t *w, voice_proto_field_e tag,
    uint32_t v);
int voice_proto_put_u64(voice_proto_writer_t *w, voice_proto_field_e tag,
    uint64_t v);
int voice_proto_put_bytes(voice_proto_writer_t *w, voice_proto_field_e tag,
    const void *data, size_t len);
int voice_proto_put_str(voice_proto_writer_t *w, voice_proto_field_e tag,
    const char *s);

/* seals the header; returns the frame size, or 0 if the writer failed */
size_t voice_proto_finish(voice_proto_writer_t *w);


/*
 * Decodes one frame from buf.  Returns VOICE_PROTO_OK (msg filled,
 * msg->size = bytes used), VOICE_PROTO_AGAIN (len is shorter than the frame
 * announces) or VOICE_PROTO_ERROR (then *err, when not NULL, points to a
 * static reason).  A ZeroMQ message is one whole frame, so there AGAIN
 * means a truncated message and is an error too.
 */
int voice_proto_decode(const uint8_t *buf, size_t len, voice_proto_msg_t *msg,
    const char **err);

#define voice_proto_has(msg, tag)  (((msg)->present >> (tag)) & 1)

const char *voice_proto_type_name(int type);


/* the stable call-SID hash that picks the bridged instance owning a call */
uint32_t voice_proto_hash(const uint8_t *data, size_t len);


#endif /* VOICE_PROTO_H */
