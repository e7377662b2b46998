/*
 * ngx_http_voice_twilio.c: parser of the Twilio Media Streams events and
 * writer of the media, mark and clear messages we send back
 * (docs/protocols.md, Media Streams, sections 4 and 5).
 *
 * Leaf code, libc only, on common/voice_json.c (the tokenizer and the
 * string writer) and common/voice_b64.c; the media session
 * (ngx_http_voice_media.c) calls it for every text message.  The media
 * event is the hot path (50 a second per call): it costs one tokenizer
 * pass, a few lookups over the tokens, and the base64 decode straight
 * from the message into the caller's audio buffer.  Only strings that hold
 * escapes are copied, unescaped, into the caller's scratch buffer.
 */

#include <string.h>

#include "voice_b64.h"
#include "voice_json.h"
#include "ngx_http_voice_twilio.h"


/* a start event with every parameter takes about 70 */
#define NGX_HTTP_VOICE_TWILIO_TOKENS  256


typedef struct {
    const uint8_t                  *msg;
    voice_json_tok_t               *toks;
    uint8_t                        *scratch;
    size_t                          scratch_size;
    size_t                          used;
    const char                     *err;
} ngx_http_voice_twilio_ctx_t;


static int ngx_http_voice_twilio_parse_start(ngx_http_voice_twilio_ctx_t *c,
    int root, ngx_http_voice_twilio_event_t *ev);
static int ngx_http_voice_twilio_parse_media(ngx_http_voice_twilio_ctx_t *c,
    int root, ngx_http_voice_twilio_event_t *ev, uint8_t *audio);
static int ngx_http_voice_twilio_parse_stop(ngx_http_voice_twilio_ctx_t *c,
    int root, ngx_http_voice_twilio_event_t *ev);
static int ngx_http_voice_twilio_object(ngx_http_voice_twilio_ctx_t *c,
    int obj, const char *key, int required, const char *bad);
static int ngx_http_voice_twilio_string(ngx_http_voice_twilio_ctx_t *c,
    int obj, const char *key, ngx_http_voice_twilio_str_t *out, int required,
    const char *bad);
static int ngx_http_voice_twilio_value(ngx_http_voice_twilio_ctx_t *c, int i,
    ngx_http_voice_twilio_str_t *out);
static int ngx_http_voice_twilio_sid(ngx_http_voice_twilio_ctx_t *c, int obj,
    const char *key, const char *prefix, ngx_http_voice_twilio_str_t *out,
    int required, const char *bad);
static int ngx_http_voice_twilio_decimal(ngx_http_voice_twilio_ctx_t *c,
    int obj, const char *key, uint64_t *v, const char *bad);
static int ngx_http_voice_twilio_number(ngx_http_voice_twilio_ctx_t *c,
    int obj, const char *key, uint32_t *v, const char *bad);


int
ngx_http_voice_twilio_parse(const uint8_t *msg, size_t len,
    ngx_http_voice_twilio_event_t *ev, uint8_t *audio, uint8_t *scratch,
    size_t scratch_size, const char **err)
{
    int                          n, i, rc;
    voice_json_tok_t             toks[NGX_HTTP_VOICE_TWILIO_TOKENS];
    ngx_http_voice_twilio_ctx_t  c;

    memset(ev, 0, sizeof(ngx_http_voice_twilio_event_t));

    c.msg = msg;
    c.toks = toks;
    c.scratch = scratch;
    c.scratch_size = scratch_size;
    c.used = 0;
    c.err = NULL;

    n = voice_json_parse(msg, len, toks,
                         NGX_HTTP_VOICE_TWILIO_TOKENS, NULL);
    if (n < 0) {
        c.err = (n == VOICE_JSON_EINVAL) ? "message is not valid JSON"
                                                 : "message is too complex";
        goto failed;
    }

    if (toks[0].type != VOICE_JSON_OBJECT) {
        c.err = "message is not a JSON object";
        goto failed;
    }

    i = voice_json_get(msg, toks, 0, "event");

    if (i < 0 || toks[i].type != VOICE_JSON_STRING) {
        c.err = "message has no \"event\" string";
        goto failed;
    }

    if (ngx_http_voice_twilio_value(&c, i, &ev->event_name) != 0) {
        goto failed;
    }

    if (voice_json_str_eq(msg, toks, i, "media")) {
        ev->event = NGX_HTTP_VOICE_TWILIO_MEDIA;

    } else if (voice_json_str_eq(msg, toks, i, "mark")) {
        ev->event = NGX_HTTP_VOICE_TWILIO_MARK;

    } else if (voice_json_str_eq(msg, toks, i, "start")) {
        ev->event = NGX_HTTP_VOICE_TWILIO_START;

    } else if (voice_json_str_eq(msg, toks, i, "dtmf")) {
        ev->event = NGX_HTTP_VOICE_TWILIO_DTMF;

    } else if (voice_json_str_eq(msg, toks, i, "stop")) {
        ev->event = NGX_HTTP_VOICE_TWILIO_STOP;

    } else if (voice_json_str_eq(msg, toks, i, "connected")) {
        ev->event = NGX_HTTP_VOICE_TWILIO_CONNECTED;
        return 0;

    } else {
        /* Twilio may add events: the caller decides what to do */
        ev->event = NGX_HTTP_VOICE_TWILIO_UNKNOWN;
        return 0;
    }

    /* every event but "connected" belongs to a stream */

    if (ngx_http_voice_twilio_sid(&c, 0, "streamSid", "MZ", &ev->stream_sid, 1,
                                  "streamSid missing or not a stream SID")
        != 0)
    {
        goto failed;
    }

    rc = ngx_http_voice_twilio_decimal(&c, 0, "sequenceNumber", &ev->sequence,
                                       "sequenceNumber is not a decimal "
                                       "string");
    if (rc < 0) {
        goto failed;
    }

    ev->has_sequence = rc;

    switch (ev->event) {

    case NGX_HTTP_VOICE_TWILIO_MEDIA:
        rc = ngx_http_voice_twilio_parse_media(&c, 0, ev, audio);
        break;

    case NGX_HTTP_VOICE_TWILIO_START:
        rc = ngx_http_voice_twilio_parse_start(&c, 0, ev);
        break;

    case NGX_HTTP_VOICE_TWILIO_MARK:
        i = ngx_http_voice_twilio_object(&c, 0, "mark", 1,
                                         "mark event without a mark object");
        if (i < 0) {
            goto failed;
        }

        rc = ngx_http_voice_twilio_string(&c, i, "name", &ev->mark_name, 1,
                                          "mark.name missing or not a string");

        if (rc == 0 && ev->mark_name.len > NGX_HTTP_VOICE_TWILIO_MAX_NAME) {
            c.err = "mark.name is too long";
            rc = -1;
        }

        break;

    case NGX_HTTP_VOICE_TWILIO_DTMF:
        i = ngx_http_voice_twilio_object(&c, 0, "dtmf", 1,
                                         "dtmf event without a dtmf object");
        if (i < 0) {
            goto failed;
        }

        rc = ngx_http_voice_twilio_string(&c, i, "digit", &ev->digit, 1,
                                          "dtmf.digit missing or not a string");
        if (rc == 0) {
            rc = ngx_http_voice_twilio_string(&c, i, "track", &ev->track, 0,
                                              "dtmf.track is not a string");
        }

        break;

    default: /* NGX_HTTP_VOICE_TWILIO_STOP */
        rc = ngx_http_voice_twilio_parse_stop(&c, 0, ev);
        break;
    }

    if (rc == 0) {
        return 0;
    }

failed:

    if (err) {
        *err = c.err;
    }

    return -1;
}


static int
ngx_http_voice_twilio_parse_start(ngx_http_voice_twilio_ctx_t *c, int root,
    ngx_http_voice_twilio_event_t *ev)
{
    int                               s, cp, mf, k;
    uint32_t                          j;
    ngx_http_voice_twilio_param_t    *param;
    const voice_json_tok_t           *t;

    s = ngx_http_voice_twilio_object(c, root, "start", 1,
                                     "start event without a start object");
    if (s < 0) {
        return -1;
    }

    if (ngx_http_voice_twilio_sid(c, s, "accountSid", "AC", &ev->account_sid,
                                  1, "start.accountSid missing or not an "
                                  "account SID") != 0
        || ngx_http_voice_twilio_sid(c, s, "callSid", "CA", &ev->call_sid, 1,
                                     "start.callSid missing or not a call SID")
           != 0
        || ngx_http_voice_twilio_sid(c, s, "streamSid", "MZ",
                                     &ev->start_stream_sid, 1,
                                     "start.streamSid missing or not a "
                                     "stream SID") != 0)
    {
        return -1;
    }

    cp = ngx_http_voice_twilio_object(c, s, "customParameters", 0,
                                      "start.customParameters is not an "
                                      "object");
    if (cp == -2) {
        return -1;
    }

    if (cp >= 0) {
        t = c->toks;

        if (t[cp].size > NGX_HTTP_VOICE_TWILIO_MAX_PARAMS) {
            c->err = "start.customParameters has too many parameters";
            return -1;
        }

        k = cp + 1;

        for (j = 0; j < t[cp].size; j++) {
            param = &ev->params[j];

            if (t[k + 1].type != VOICE_JSON_STRING) {
                c->err = "a start.customParameters value is not a string";
                return -1;
            }

            if (ngx_http_voice_twilio_value(c, k, &param->name) != 0
                || ngx_http_voice_twilio_value(c, k + 1, &param->value) != 0)
            {
                return -1;
            }

            k = (int) t[k + 1].next;
        }

        ev->nparams = t[cp].size;
    }

    mf = ngx_http_voice_twilio_object(c, s, "mediaFormat", 0,
                                      "start.mediaFormat is not an object");
    if (mf == -2) {
        return -1;
    }

    if (mf >= 0) {
        if (ngx_http_voice_twilio_string(c, mf, "encoding", &ev->encoding, 0,
                                         "start.mediaFormat.encoding is not "
                                         "a string") != 0
            || ngx_http_voice_twilio_number(c, mf, "sampleRate",
                                            &ev->sample_rate,
                                            "start.mediaFormat.sampleRate is "
                                            "not an integer") != 0
            || ngx_http_voice_twilio_number(c, mf, "channels", &ev->channels,
                                            "start.mediaFormat.channels is "
                                            "not an integer") != 0)
        {
            return -1;
        }
    }

    return 0;
}


static int
ngx_http_voice_twilio_parse_media(ngx_http_voice_twilio_ctx_t *c, int root,
    ngx_http_voice_twilio_event_t *ev, uint8_t *audio)
{
    int                          m, i;
    long                         k;
    ngx_http_voice_twilio_str_t  s;

    m = ngx_http_voice_twilio_object(c, root, "media", 1,
                                     "media event without a media object");
    if (m < 0) {
        return -1;
    }

    if (ngx_http_voice_twilio_string(c, m, "track", &ev->track, 0,
                                     "media.track is not a string") != 0
        || ngx_http_voice_twilio_decimal(c, m, "chunk", &ev->chunk,
                                         "media.chunk is not a decimal "
                                         "string") < 0
        || ngx_http_voice_twilio_decimal(c, m, "timestamp", &ev->timestamp,
                                         "media.timestamp is not a decimal "
                                         "string") < 0)
    {
        return -1;
    }

    i = voice_json_get(c->msg, c->toks, m, "payload");

    if (i < 0 || c->toks[i].type != VOICE_JSON_STRING) {
        c->err = "media.payload missing or not a string";
        return -1;
    }

    /*
     * A JSON encoder may write '/' as "\/": such a payload is unescaped
     * into scratch first; the usual one is decoded where it lies.
     */

    if (ngx_http_voice_twilio_value(c, i, &s) != 0) {
        return -1;
    }

    /* say "too big" rather than "invalid" when that is what it is */

    if (s.len % 4 == 0
        && voice_b64_decoded_len((const char *) s.data, s.len)
           > NGX_HTTP_VOICE_TWILIO_MAX_AUDIO)
    {
        c->err = "media.payload decodes to more than 8192 bytes";
        return -1;
    }

    /* Twilio pads: a payload that does not is refused */

    k = (s.len % 4) ? -1
                    : voice_b64_decode(audio, NGX_HTTP_VOICE_TWILIO_MAX_AUDIO,
                                       (const char *) s.data, s.len);
    if (k < 0) {
        c->err = "media.payload is not valid padded base64";
        return -1;
    }

    ev->audio = audio;
    ev->audio_len = (size_t) k;

    return 0;
}


static int
ngx_http_voice_twilio_parse_stop(ngx_http_voice_twilio_ctx_t *c, int root,
    ngx_http_voice_twilio_event_t *ev)
{
    int  s;

    s = ngx_http_voice_twilio_object(c, root, "stop", 0,
                                     "stop is not an object");
    if (s == -2) {
        return -1;
    }

    if (s < 0) {
        return 0;
    }

    if (ngx_http_voice_twilio_sid(c, s, "accountSid", "AC", &ev->account_sid,
                                  0, "stop.accountSid is not an account SID")
        != 0
        || ngx_http_voice_twilio_sid(c, s, "callSid", "CA", &ev->call_sid, 0,
                                     "stop.callSid is not a call SID") != 0)
    {
        return -1;
    }

    return 0;
}


/*
 * The member key of object obj when it is an object: returns its token
 * index, -1 when it is absent and not required, -2 (with c->err) when it is
 * required and absent or is not an object.
 */

static int
ngx_http_voice_twilio_object(ngx_http_voice_twilio_ctx_t *c, int obj,
    const char *key, int required, const char *bad)
{
    int  i;

    i = voice_json_get(c->msg, c->toks, obj, key);

    if (i < 0 && !required) {
        return -1;
    }

    if (i < 0 || c->toks[i].type != VOICE_JSON_OBJECT) {
        c->err = bad;
        return -2;
    }

    return i;
}


/*
 * A string member: 0 when found (or absent and not required, *out left
 * empty), -1 with c->err set otherwise.
 */

static int
ngx_http_voice_twilio_string(ngx_http_voice_twilio_ctx_t *c, int obj,
    const char *key, ngx_http_voice_twilio_str_t *out, int required,
    const char *bad)
{
    int  i;

    i = voice_json_get(c->msg, c->toks, obj, key);

    if (i < 0 && !required) {
        return 0;
    }

    if (i < 0 || c->toks[i].type != VOICE_JSON_STRING) {
        c->err = bad;
        return -1;
    }

    return ngx_http_voice_twilio_value(c, i, out);
}


/* string token i as a view: into the message, or unescaped into scratch */

static int
ngx_http_voice_twilio_value(ngx_http_voice_twilio_ctx_t *c, int i,
    ngx_http_voice_twilio_str_t *out)
{
    size_t                            n;
    const voice_json_tok_t           *t;

    t = &c->toks[i];

    if (!t->escaped) {
        out->data = c->msg + t->start;
        out->len = t->end - t->start;
        return 0;
    }

    if (c->scratch == NULL) {
        c->err = "no scratch buffer for the escaped strings";
        return -1;
    }

    n = voice_json_unescape(c->msg, t, c->scratch + c->used,
                            c->scratch_size - c->used);
    if (n == (size_t) -1) {
        c->err = "scratch buffer too small for the escaped strings";
        return -1;
    }

    out->data = c->scratch + c->used;
    out->len = n;
    c->used += n;

    return 0;
}


/* a string member that must be prefix + 32 hex digits */

static int
ngx_http_voice_twilio_sid(ngx_http_voice_twilio_ctx_t *c, int obj,
    const char *key, const char *prefix, ngx_http_voice_twilio_str_t *out,
    int required, const char *bad)
{
    size_t    i;
    uint8_t   ch;

    if (ngx_http_voice_twilio_string(c, obj, key, out, required, bad) != 0) {
        return -1;
    }

    if (out->data == NULL) {
        return 0;
    }

    if (out->len != 34 || out->data[0] != prefix[0]
        || out->data[1] != prefix[1])
    {
        goto bad;
    }

    for (i = 2; i < 34; i++) {
        ch = out->data[i];

        if (ch >= '0' && ch <= '9') {
            continue;
        }

        /* lower-cased only now: 0x10-0x19 | 0x20 would pass as digits */
        ch |= 0x20;

        if (ch < 'a' || ch > 'f') {
            goto bad;
        }
    }

    return 0;

bad:

    c->err = bad;
    return -1;
}


/*
 * Twilio sends its counters as decimal strings ("sequenceNumber": "2"):
 * returns 1 when found, 0 when absent (*v left alone), -1 for anything but
 * a string of 1-20 digits that fits 64 bits, a JSON number included.
 */

static int
ngx_http_voice_twilio_decimal(ngx_http_voice_twilio_ctx_t *c, int obj,
    const char *key, uint64_t *v, const char *bad)
{
    int                               i;
    size_t                            n, k;
    unsigned                          d;
    uint8_t                           buf[24];
    uint64_t                          x;
    const uint8_t                    *p;
    const voice_json_tok_t           *t;

    i = voice_json_get(c->msg, c->toks, obj, key);

    if (i < 0) {
        return 0;
    }

    t = &c->toks[i];

    if (t->type != VOICE_JSON_STRING) {
        goto bad;
    }

    if (t->escaped) {
        n = voice_json_unescape(c->msg, t, buf, sizeof(buf));
        if (n == (size_t) -1) {
            goto bad;
        }

        p = buf;

    } else {
        n = t->end - t->start;
        p = c->msg + t->start;
    }

    if (n == 0 || n > 20) {
        goto bad;
    }

    x = 0;

    for (k = 0; k < n; k++) {
        if (p[k] < '0' || p[k] > '9') {
            goto bad;
        }

        d = p[k] - '0';

        if (x > (UINT64_MAX - d) / 10) {
            goto bad;
        }

        x = x * 10 + d;
    }

    *v = x;

    return 1;

bad:

    c->err = bad;
    return -1;
}


/* mediaFormat's sampleRate and channels are JSON numbers */

static int
ngx_http_voice_twilio_number(ngx_http_voice_twilio_ctx_t *c, int obj,
    const char *key, uint32_t *v, const char *bad)
{
    int       i;
    uint64_t  x;

    i = voice_json_get(c->msg, c->toks, obj, key);

    if (i < 0) {
        return 0;
    }

    if (!voice_json_uint(c->msg, &c->toks[i], &x)
        || x > UINT32_MAX)
    {
        c->err = bad;
        return -1;
    }

    *v = (uint32_t) x;

    return 0;
}


size_t
ngx_http_voice_twilio_write_media(uint8_t *out, size_t cap,
    const uint8_t *stream_sid, size_t sid_len, const uint8_t *audio,
    size_t audio_len)
{
    uint8_t  *p, *last;

    p = out;
    last = out + cap;

    if (audio_len / 3 >= cap / 4) {
        return 0;
    }

    p = voice_json_put(p, last, "{\"event\":\"media\",\"streamSid\":");
    p = voice_json_put_str(p, last, stream_sid, sid_len);
    p = voice_json_put(p, last, ",\"media\":{\"payload\":\"");

    if (p == NULL
        || (size_t) (last - p) < VOICE_B64_ENCODED_LEN(audio_len) + 3)
    {
        return 0;
    }

    p += voice_b64_encode((char *) p, audio, audio_len);
    p = voice_json_put(p, last, "\"}}");

    return (p == NULL) ? 0 : (size_t) (p - out);
}


size_t
ngx_http_voice_twilio_write_mark(uint8_t *out, size_t cap,
    const uint8_t *stream_sid, size_t sid_len, const uint8_t *name,
    size_t name_len)
{
    uint8_t  *p, *last;

    p = out;
    last = out + cap;

    p = voice_json_put(p, last, "{\"event\":\"mark\",\"streamSid\":");
    p = voice_json_put_str(p, last, stream_sid, sid_len);
    p = voice_json_put(p, last, ",\"mark\":{\"name\":");
    p = voice_json_put_str(p, last, name, name_len);
    p = voice_json_put(p, last, "}}");

    return (p == NULL) ? 0 : (size_t) (p - out);
}


size_t
ngx_http_voice_twilio_write_clear(uint8_t *out, size_t cap,
    const uint8_t *stream_sid, size_t sid_len)
{
    uint8_t  *p, *last;

    p = out;
    last = out + cap;

    p = voice_json_put(p, last, "{\"event\":\"clear\",\"streamSid\":");
    p = voice_json_put_str(p, last, stream_sid, sid_len);
    p = voice_json_put(p, last, "}");

    return (p == NULL) ? 0 : (size_t) (p - out);
}
