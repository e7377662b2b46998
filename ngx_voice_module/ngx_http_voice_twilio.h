/*
 * ngx_http_voice_twilio.h: parser of the Twilio Media Streams events
 * (Twilio -> us) and writer of the messages we send back (media, mark,
 * clear), as docs/protocols.md, Media Streams describes them.
 *
 * Leaf code (libc only, built on common/voice_json.c and voice_b64.c): the
 * media session (ngx_http_voice_media.c) hands it each text message.
 * Parsing is tolerant of unknown fields and strict about the fields it
 * uses: their types, SID shapes, decimal strings, and base64 payloads of
 * bounded size.  Writing is strict: exactly the documented fields.
 */

#ifndef NGX_HTTP_VOICE_TWILIO_H
#define NGX_HTTP_VOICE_TWILIO_H

#include <stddef.h>
#include <stdint.h>

#include "voice_b64.h"


#define NGX_HTTP_VOICE_TWILIO_CONNECTED   1
#define NGX_HTTP_VOICE_TWILIO_START       2
#define NGX_HTTP_VOICE_TWILIO_MEDIA       3
#define NGX_HTTP_VOICE_TWILIO_MARK        4
#define NGX_HTTP_VOICE_TWILIO_DTMF        5
#define NGX_HTTP_VOICE_TWILIO_STOP        6
#define NGX_HTTP_VOICE_TWILIO_UNKNOWN     7   /* valid JSON, other event */

#define NGX_HTTP_VOICE_TWILIO_MAX_PARAMS  16
#define NGX_HTTP_VOICE_TWILIO_MAX_NAME    256   /* mark names */

/* decoded audio in one media event: 8 KiB = 1 s of mu-law */
#define NGX_HTTP_VOICE_TWILIO_MAX_AUDIO   8192


typedef struct {
    const uint8_t   *data;
    size_t           len;
} ngx_http_voice_twilio_str_t;


typedef struct {
    ngx_http_voice_twilio_str_t   name;
    ngx_http_voice_twilio_str_t   value;
} ngx_http_voice_twilio_param_t;


/*
 * One parsed event.  Strings point into the message, or into the scratch
 * buffer when they had to be unescaped; both must outlive the event.
 * Fields an event does not carry are zero.
 */
typedef struct {
    int                             event;
    ngx_http_voice_twilio_str_t     event_name;     /* as received */

    ngx_http_voice_twilio_str_t     stream_sid;     /* top level */
    uint64_t                        sequence;       /* sequenceNumber */
    unsigned                        has_sequence:1;

    /* start */
    ngx_http_voice_twilio_str_t     account_sid;    /* start or stop */
    ngx_http_voice_twilio_str_t     call_sid;       /* start or stop */
    ngx_http_voice_twilio_str_t     start_stream_sid;
    ngx_http_voice_twilio_str_t     encoding;
    uint32_t                        sample_rate;
    uint32_t                        channels;
    ngx_http_voice_twilio_param_t   params[NGX_HTTP_VOICE_TWILIO_MAX_PARAMS];
    unsigned                        nparams;

    /* media */
    ngx_http_voice_twilio_str_t     track;          /* media or dtmf */
    uint64_t                        chunk;
    uint64_t                        timestamp;
    uint8_t                        *audio;          /* decoded payload */
    size_t                          audio_len;

    /* mark */
    ngx_http_voice_twilio_str_t     mark_name;

    /* dtmf */
    ngx_http_voice_twilio_str_t     digit;
} ngx_http_voice_twilio_event_t;


/*
 * Parses one text message.  audio is where a media payload is decoded
 * (NGX_HTTP_VOICE_TWILIO_MAX_AUDIO bytes); scratch holds unescaped strings
 * (a few KiB is plenty; too small is an error, not an overflow).
 *
 * Returns 0 on success, or -1 with *err set to a static reason: not JSON,
 * not an object, no "event" string, a required field missing or of the
 * wrong type (per event: start needs streamSid, callSid, accountSid;
 * media needs payload; mark needs name; dtmf needs digit), a payload that
 * is not valid padded base64 or decodes to more than the limit, a
 * sequenceNumber/chunk/timestamp that is not a decimal string.
 */
int ngx_http_voice_twilio_parse(const uint8_t *msg, size_t len,
    ngx_http_voice_twilio_event_t *ev, uint8_t *audio, uint8_t *scratch,
    size_t scratch_size, const char **err);


/*
 * Writers.  Each writes one complete JSON message into out (cap bytes)
 * and returns its length, or 0 when it does not fit.  Strings are escaped
 * as JSON requires.
 *
 *   {"event":"media","streamSid":"MZ…","media":{"payload":"<base64>"}}
 *   {"event":"mark","streamSid":"MZ…","mark":{"name":"…"}}
 *   {"event":"clear","streamSid":"MZ…"}
 */
size_t ngx_http_voice_twilio_write_media(uint8_t *out, size_t cap,
    const uint8_t *stream_sid, size_t sid_len, const uint8_t *audio,
    size_t audio_len);
size_t ngx_http_voice_twilio_write_mark(uint8_t *out, size_t cap,
    const uint8_t *stream_sid, size_t sid_len, const uint8_t *name,
    size_t name_len);
size_t ngx_http_voice_twilio_write_clear(uint8_t *out, size_t cap,
    const uint8_t *stream_sid, size_t sid_len);

/* the largest media message for audio_len bytes of audio */
#define NGX_HTTP_VOICE_TWILIO_MEDIA_SIZE(sid_len, audio_len)                  \
    (64 + (sid_len) + VOICE_B64_ENCODED_LEN(audio_len))


#endif /* NGX_HTTP_VOICE_TWILIO_H */
