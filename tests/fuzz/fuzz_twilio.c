/*
 * fuzz_twilio.c: libFuzzer target of ngx_voice_module's Twilio Media
 * Streams parser and writers (ngx_http_voice_twilio.c).
 *
 * Byte 0 picks the scratch size, the rest is one text message.  A parsed
 * event must keep its views inside the message or the scratch buffer and
 * its audio within the limit; a media or mark event written back with the
 * writers must parse to the same audio or name.  (The base64 decoder the
 * media payload goes through is fuzzed by fuzz_b64.c.)
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_voice_twilio.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


#define FUZZ_AUDIO  NGX_HTTP_VOICE_TWILIO_MAX_AUDIO


static uint8_t                        fuzz_audio[FUZZ_AUDIO];
static uint8_t                        fuzz_audio2[FUZZ_AUDIO];
static uint8_t                        fuzz_scratch[16384];
static uint8_t                        fuzz_scratch2[16384];
static uint8_t                        fuzz_out[32768];
static ngx_http_voice_twilio_event_t  fuzz_ev, fuzz_ev2;


static void
fuzz_twilio_view(ngx_http_voice_twilio_str_t s, const uint8_t *msg,
    size_t len, size_t scratch_size)
{
    if (s.data == NULL) {
        if (s.len) {
            abort();
        }

        return;
    }

    if (s.data >= msg && s.data + s.len <= msg + len) {
        return;
    }

    if (s.data >= fuzz_scratch && s.data + s.len <= fuzz_scratch + scratch_size)
    {
        return;
    }

    abort();
}


static void
fuzz_twilio_check(const uint8_t *msg, size_t len, size_t scratch_size)
{
    unsigned                        i;
    ngx_http_voice_twilio_event_t  *ev;

    ev = &fuzz_ev;

    if (ev->event < NGX_HTTP_VOICE_TWILIO_CONNECTED
        || ev->event > NGX_HTTP_VOICE_TWILIO_UNKNOWN
        || ev->event_name.data == NULL
        || ev->audio_len > NGX_HTTP_VOICE_TWILIO_MAX_AUDIO
        || ev->nparams > NGX_HTTP_VOICE_TWILIO_MAX_PARAMS
        || ev->mark_name.len > NGX_HTTP_VOICE_TWILIO_MAX_NAME)
    {
        abort();
    }

    fuzz_twilio_view(ev->event_name, msg, len, scratch_size);
    fuzz_twilio_view(ev->stream_sid, msg, len, scratch_size);
    fuzz_twilio_view(ev->account_sid, msg, len, scratch_size);
    fuzz_twilio_view(ev->call_sid, msg, len, scratch_size);
    fuzz_twilio_view(ev->start_stream_sid, msg, len, scratch_size);
    fuzz_twilio_view(ev->encoding, msg, len, scratch_size);
    fuzz_twilio_view(ev->track, msg, len, scratch_size);
    fuzz_twilio_view(ev->mark_name, msg, len, scratch_size);
    fuzz_twilio_view(ev->digit, msg, len, scratch_size);

    for (i = 0; i < ev->nparams; i++) {
        fuzz_twilio_view(ev->params[i].name, msg, len, scratch_size);
        fuzz_twilio_view(ev->params[i].value, msg, len, scratch_size);
    }

    if (ev->event != NGX_HTTP_VOICE_TWILIO_CONNECTED
        && ev->event != NGX_HTTP_VOICE_TWILIO_UNKNOWN
        && ev->stream_sid.len != 34)
    {
        abort();
    }

    if (ev->event == NGX_HTTP_VOICE_TWILIO_MEDIA && ev->audio != fuzz_audio) {
        abort();
    }
}


static void
fuzz_twilio_round_trip(void)
{
    size_t       n;
    const char  *err;

    if (fuzz_ev.event == NGX_HTTP_VOICE_TWILIO_MEDIA) {
        n = ngx_http_voice_twilio_write_media(fuzz_out, sizeof(fuzz_out),
                                              fuzz_ev.stream_sid.data, 34,
                                              fuzz_ev.audio,
                                              fuzz_ev.audio_len);
        if (n == 0
            || n > NGX_HTTP_VOICE_TWILIO_MEDIA_SIZE(34, fuzz_ev.audio_len)
            || ngx_http_voice_twilio_parse(fuzz_out, n, &fuzz_ev2,
                                           fuzz_audio2, fuzz_scratch2, 0,
                                           &err) != 0
            || fuzz_ev2.event != NGX_HTTP_VOICE_TWILIO_MEDIA
            || fuzz_ev2.audio_len != fuzz_ev.audio_len
            || memcmp(fuzz_audio2, fuzz_audio, fuzz_ev.audio_len) != 0)
        {
            abort();
        }

        return;
    }

    if (fuzz_ev.event == NGX_HTTP_VOICE_TWILIO_MARK) {
        n = ngx_http_voice_twilio_write_mark(fuzz_out, sizeof(fuzz_out),
                                             fuzz_ev.stream_sid.data, 34,
                                             fuzz_ev.mark_name.data,
                                             fuzz_ev.mark_name.len);
        if (n == 0
            || ngx_http_voice_twilio_parse(fuzz_out, n, &fuzz_ev2,
                                           fuzz_audio2, fuzz_scratch2,
                                           sizeof(fuzz_scratch2), &err) != 0
            || fuzz_ev2.event != NGX_HTTP_VOICE_TWILIO_MARK
            || fuzz_ev2.mark_name.len != fuzz_ev.mark_name.len
            || memcmp(fuzz_ev2.mark_name.data, fuzz_ev.mark_name.data,
                      fuzz_ev.mark_name.len) != 0)
        {
            abort();
        }

        n = ngx_http_voice_twilio_write_clear(fuzz_out, sizeof(fuzz_out),
                                              fuzz_ev.stream_sid.data, 34);
        if (n == 0
            || ngx_http_voice_twilio_parse(fuzz_out, n, &fuzz_ev2,
                                           fuzz_audio2, fuzz_scratch2,
                                           sizeof(fuzz_scratch2), &err) != 0
            || fuzz_ev2.event != NGX_HTTP_VOICE_TWILIO_UNKNOWN)
        {
            abort();
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          rc;
    size_t       scratch_size;
    const char  *err;

    if (size < 1) {
        return 0;
    }

    scratch_size = (data[0] == 0xff) ? sizeof(fuzz_scratch)
                                     : (size_t) data[0] * 16;
    data++;
    size--;

    err = NULL;
    rc = ngx_http_voice_twilio_parse(data, size, &fuzz_ev, fuzz_audio,
                                     fuzz_scratch, scratch_size, &err);

    if (rc == 0) {
        fuzz_twilio_check(data, size, scratch_size);
        fuzz_twilio_round_trip();

    } else if (rc != -1 || err == NULL) {
        abort();
    }

    return 0;
}
