/*
 * test_bd_oai_event.c: unit tests of bridged/bd_oai_event.c with a fake
 * table of effects: conversation order, transcripts arriving in any order,
 * assistant audio pieces and marks, barge-in (clear, truncate at the audio
 * played, drops), settlement for the final wait, error events, and the
 * client events bridged builds.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cJSON.h>

#include "voice_b64.h"
#include "bd_log.h"
#include "bd_oai_event.h"
#include "bd_session.h"
#include "voice_proto.h"


typedef struct {
    uint8_t     audio[65536];
    size_t      audio_len;
    unsigned    pieces;
    size_t      max_piece;
    char        marks[32][32];
    unsigned    marked_pieces[32];  /* pieces sent when each mark came */
    unsigned    nmarks;
    unsigned    clears;
    uint32_t    tr_order[16];
    uint32_t    tr_role[16];
    char        tr_text[16][128];
    char        tr_gen[16][128];    /* a cut reply's whole text, or "" */
    uint32_t    tr_latency[16];
    unsigned    ntr;
    bd_oai_event_usage_t  usage;    /* summed */
    unsigned    usages;
    uint64_t    now;                /* the clock, ms */
    uint64_t    input_ms;           /* caller audio given, ms */
    char        sent[16][1024];
    unsigned    nsent;
    unsigned    ready;
    char        fatal[320];
    unsigned    nfatal;
    char        renew[320];
    unsigned    nrenew;
    int         refuse_audio;
    char        tool_call[8][256];  /* "order|call_id|name|arguments" */
    unsigned    ntools;
    char        mcp[4][256];        /* "order|name|arguments|output" */
    unsigned    nmcp;
    unsigned    responses_done;
    unsigned    speech;             /* starts + 100 * stops */
    unsigned    idles;
} fake_t;


static int
fake_audio_out(void *data, const uint8_t *audio, size_t len,
    const char *mark)
{
    fake_t  *f = data;

    if (f->refuse_audio) {
        return 0;
    }

    /* len 0: a mark alone */
    if (len) {
        memcpy(f->audio + f->audio_len, audio, len);
        f->audio_len += len;
        f->pieces++;
    }

    if (len > f->max_piece) {
        f->max_piece = len;
    }

    /* a mark rides on a delta's last piece only */
    if (mark) {
        snprintf(f->marks[f->nmarks++], sizeof(f->marks[0]), "%s", mark);
        f->marked_pieces[f->nmarks - 1] = f->pieces;
    }

    return 1;
}


static void
fake_clear(void *data)
{
    fake_t  *f = data;

    f->clears++;
}


static int
fake_transcript(void *data, const bd_oai_event_said_t *said)
{
    fake_t  *f = data;

    f->tr_order[f->ntr] = said->order;
    f->tr_role[f->ntr] = said->role;
    snprintf(f->tr_text[f->ntr], sizeof(f->tr_text[0]), "%.*s",
             (int) said->len, said->text);
    snprintf(f->tr_gen[f->ntr], sizeof(f->tr_gen[0]), "%.*s",
             (int) said->generated_len,
             said->generated ? said->generated : "");
    f->tr_latency[f->ntr] = said->latency_ms;
    f->ntr++;

    return 1;
}


static void
fake_send(void *data, const char *json, size_t len)
{
    fake_t  *f = data;

    snprintf(f->sent[f->nsent++], sizeof(f->sent[0]), "%.*s", (int) len,
             json);
}


static void
fake_ready(void *data)
{
    fake_t  *f = data;

    f->ready++;
}


static void
fake_fatal(void *data, const char *why)
{
    fake_t  *f = data;

    snprintf(f->fatal, sizeof(f->fatal), "%s", why);
    f->nfatal++;
}


static void
fake_renew(void *data, const char *why)
{
    fake_t  *f = data;

    snprintf(f->renew, sizeof(f->renew), "%s", why);
    f->nrenew++;
}


static void
fake_tool_call(void *data, uint32_t order, const char *call_id,
    const char *name, const char *arguments)
{
    fake_t  *f = data;

    snprintf(f->tool_call[f->ntools++], sizeof(f->tool_call[0]),
             "%u|%s|%s|%s", (unsigned) order, call_id, name, arguments);
}


static void
fake_mcp_call(void *data, uint32_t order, const char *name,
    const char *arguments, const char *output)
{
    fake_t  *f = data;

    snprintf(f->mcp[f->nmcp++], sizeof(f->mcp[0]), "%u|%s|%s|%s",
             (unsigned) order, name, arguments, output);
}


static void
fake_response_done(void *data)
{
    fake_t  *f = data;

    f->responses_done++;
}


static void
fake_speech(void *data, int started)
{
    fake_t  *f = data;

    f->speech += started ? 1 : 100;
}


static void
fake_idle(void *data)
{
    fake_t  *f = data;

    f->idles++;
}


static void
fake_usage(void *data, const bd_oai_event_usage_t *u)
{
    fake_t  *f = data;

    f->usage.input_text += u->input_text;
    f->usage.input_audio += u->input_audio;
    f->usage.input_cached += u->input_cached;
    f->usage.output_text += u->output_text;
    f->usage.output_audio += u->output_audio;
    f->usages++;
}


static uint64_t
fake_clock(void *data, uint64_t *input_ms)
{
    fake_t  *f = data;

    if (input_ms != NULL) {
        *input_ms = f->input_ms;
    }

    return f->now;
}


static const bd_oai_event_ops_t  fake_ops = {
    fake_audio_out, fake_clear, fake_transcript, fake_send,
    fake_ready, fake_fatal, fake_renew, fake_tool_call, fake_mcp_call,
    fake_response_done, fake_speech, fake_idle, fake_usage, fake_clock
};


typedef struct {
    fake_t               f;
    bd_oai_event_conv_t  cv;
} fixture_t;


static int
setup(void **state)
{
    fixture_t  *x;

    bd_log_level = BD_LOG_ERROR + 1;

    x = calloc(1, sizeof(fixture_t));
    bd_oai_event_init(&x->cv, &fake_ops, &x->f, "CAtest");
    *state = x;

    return 0;
}


static int
teardown(void **state)
{
    free(*state);
    return 0;
}


static void
ev(fixture_t *x, const char *fmt, ...)
{
    int      n;
    char     buf[4096];
    va_list  args;

    va_start(args, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);

    assert_int_equal(bd_oai_event_dispatch(&x->cv, buf, (size_t) n), 0);
}


/* an audio delta of len bytes of value c, of item and response */

static void
delta(fixture_t *x, const char *item, const char *resp, size_t len, int c)
{
    char     *json, *p;
    uint8_t  *raw;

    raw = malloc(len);
    memset(raw, c, len);

    json = malloc(VOICE_B64_ENCODED_LEN(len) + 256);
    p = json + sprintf(json, "{\"type\":\"response.output_audio.delta\","
                       "\"response_id\":\"%s\",\"item_id\":\"%s\","
                       "\"output_index\":0,\"content_index\":0,"
                       "\"delta\":\"", resp, item);
    p += voice_b64_encode(p, raw, len);
    p += sprintf(p, "\"}");

    assert_int_equal(bd_oai_event_dispatch(&x->cv, json,
                                           (size_t) (p - json)), 0);

    free(json);
    free(raw);
}


static void
turn(fixture_t *x)
{
    ev(x, "{\"type\":\"session.updated\",\"session\":{}}");
    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"audio_start_ms\":100,\"item_id\":\"item_U1\"}");
    ev(x, "{\"type\":\"input_audio_buffer.speech_stopped\","
          "\"item_id\":\"item_U1\"}");
    ev(x, "{\"type\":\"input_audio_buffer.committed\","
          "\"previous_item_id\":null,\"item_id\":\"item_U1\"}");
    ev(x, "{\"type\":\"conversation.item.added\",\"item\":{\"id\":"
          "\"item_U1\",\"role\":\"user\",\"type\":\"message\"}}");
    ev(x, "{\"type\":\"response.created\",\"response\":{\"id\":\"resp_R1\","
          "\"status\":\"in_progress\"}}");
    ev(x, "{\"type\":\"response.output_item.added\",\"response_id\":"
          "\"resp_R1\",\"item\":{\"id\":\"item_A1\",\"role\":\"assistant\"}}");
    ev(x, "{\"type\":\"conversation.item.added\",\"item\":{\"id\":"
          "\"item_A1\",\"role\":\"assistant\"}}");
}


static void
test_ready_once(void **state)
{
    fixture_t  *x = *state;

    ev(x, "{\"type\":\"session.created\",\"session\":{\"id\":\"sess_1\"}}");
    assert_int_equal(x->f.ready, 0);

    ev(x, "{\"type\":\"session.updated\",\"session\":{}}");
    ev(x, "{\"type\":\"session.updated\",\"session\":{}}");
    assert_int_equal(x->f.ready, 1);
    assert_true(x->cv.ready);
}


static void
test_order_and_late_transcripts(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    /* the assistant's transcript first, the caller's after: any order */

    ev(x, "{\"type\":\"response.output_audio_transcript.done\",\"response_id\""
          ":\"resp_R1\",\"item_id\":\"item_A1\",\"transcript\":"
          "\"Sure, for what time?\"}");
    ev(x, "{\"type\":\"conversation.item.input_audio_transcription.completed\""
          ",\"item_id\":\"item_U1\",\"content_index\":0,\"transcript\":"
          "\"Can you book a table for two?\"}");

    assert_int_equal(x->f.ntr, 2);
    assert_int_equal(x->f.tr_order[0], 2);
    assert_int_equal(x->f.tr_role[0], VOICE_PROTO_ROLE_ASSISTANT);
    assert_string_equal(x->f.tr_text[0], "Sure, for what time?");
    assert_int_equal(x->f.tr_order[1], 1);
    assert_int_equal(x->f.tr_role[1], VOICE_PROTO_ROLE_USER);
    assert_string_equal(x->f.tr_text[1], "Can you book a table for two?");
    assert_int_equal(x->cv.transcripts, 2);

    /* a repeated completion is not a second utterance */

    ev(x, "{\"type\":\"conversation.item.input_audio_transcription.completed\""
          ",\"item_id\":\"item_U1\",\"transcript\":\"again\"}");
    assert_int_equal(x->f.ntr, 2);

    /* an item first seen in a transcription event still gets an order */

    ev(x, "{\"type\":\"conversation.item.input_audio_transcription.completed\""
          ",\"item_id\":\"item_U9\",\"transcript\":\"hello\"}");
    assert_int_equal(x->f.tr_order[2], 3);
}


static void
test_settlement(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    /* U1 is committed (transcription due) and R1 is generating */

    assert_int_equal(x->cv.pending, 1);
    assert_true(bd_oai_event_responding(&x->cv));
    assert_false(bd_oai_event_settled(&x->cv));

    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A1\",\"transcript\":\"\"}");
    assert_false(bd_oai_event_responding(&x->cv));
    assert_int_equal(x->f.ntr, 0);                /* empty: skipped */
    assert_false(bd_oai_event_settled(&x->cv));

    ev(x, "{\"type\":\"conversation.item.input_audio_transcription.failed\""
          ",\"item_id\":\"item_U1\",\"error\":{\"message\":\"asr down\"}}");
    assert_int_equal(x->cv.pending, 0);
    assert_true(bd_oai_event_settled(&x->cv));
    assert_int_equal(x->f.ntr, 0);

    /* response.done ends a response that produced no transcript */

    ev(x, "{\"type\":\"response.created\",\"response\":{\"id\":\"resp_R2\"}}");
    assert_false(bd_oai_event_settled(&x->cv));
    ev(x, "{\"type\":\"response.done\",\"response\":{\"id\":\"resp_R2\","
          "\"status\":\"failed\",\"status_details\":{\"type\":\"failed\","
          "\"error\":{\"code\":\"server_error\"}}}}");
    assert_true(bd_oai_event_settled(&x->cv));
}


static void
test_delta_pieces_and_marks(void **state)
{
    size_t      i;
    fixture_t  *x = *state;

    turn(x);

    delta(x, "item_A1", "resp_R1", 1600, 0x11);
    delta(x, "item_A1", "resp_R1", 20000, 0x22);

    /* 20000 bytes go out as 16383 + 3617: each piece fits one frame */

    assert_int_equal(x->f.audio_len, 21600);
    assert_int_equal(x->f.pieces, 3);
    assert_int_equal(x->f.max_piece, 16383);
    assert_true(x->f.max_piece <= VOICE_PROTO_MAX_AUDIO);

    for (i = 0; i < 1600; i++) {
        assert_int_equal(x->f.audio[i], 0x11);
    }

    for (i = 1600; i < 21600; i++) {
        assert_int_equal(x->f.audio[i], 0x22);
    }

    /* one mark per delta: "<item order>-<seq>", unique */

    assert_int_equal(x->f.nmarks, 2);
    assert_string_equal(x->f.marks[0], "2-1");
    assert_string_equal(x->f.marks[1], "2-2");
    assert_int_equal(x->cv.marks_len, 2);

    /* on the last piece of each delta: after piece 1, and after piece 3 */
    assert_int_equal(x->f.marked_pieces[0], 1);
    assert_int_equal(x->f.marked_pieces[1], 3);

    /* both read by the flat scan, no cJSON tree */
    assert_int_equal(x->cv.deltas_flat, 2);
}


static void
test_delta_shapes_the_flat_scan_declines(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    /* an escaped slash in the base64 ("AAAA////" is 00 00 00 ff ff ff),
     * an escape in a name, and one in the item id: parsed in full by
     * cJSON, with the same effect */

    ev(x, "{\"type\":\"response.output_audio.delta\",\"response_id\":"
          "\"resp_R1\",\"item_id\":\"item_A1\",\"delta\":\"AAAA\\/\\/\\/\\/\"}");
    ev(x, "{\"type\":\"response.output_audio.delta\",\"response_id\":"
          "\"resp_R1\",\"item_id\":\"item_A1\",\"n\\u006fte\":1,"
          "\"delta\":\"////\"}");
    ev(x, "{\"type\":\"response.output_audio.delta\",\"response_id\":"
          "\"resp_R1\",\"item_id\":\"item\\u005fA1\",\"delta\":\"////\"}");

    assert_int_equal(x->cv.deltas_flat, 0);
    assert_int_equal(x->f.audio_len, 12);
    assert_memory_equal(x->f.audio, "\x00\x00\x00\xff\xff\xff\xff\xff\xff"
                        "\xff\xff\xff", 12);

    /* a nested member: the tokenizer reads past it (the flat scan that
     * came before it declined) */

    ev(x, "{\"type\":\"response.output_audio.delta\",\"response_id\":"
          "\"resp_R1\",\"item_id\":\"item_A1\",\"extra\":{\"a\":[1]},"
          "\"delta\":\"////\"}");

    assert_int_equal(x->cv.deltas_flat, 1);
    assert_int_equal(x->f.audio_len, 15);
    assert_memory_equal(x->f.audio + 12, "\xff\xff\xff", 3);

    /* the plain shape is read without cJSON */

    ev(x, "{\"type\":\"response.output_audio.delta\",\"response_id\":"
          "\"resp_R1\",\"item_id\":\"item_A1\",\"delta\":\"AQID\"}");
    assert_int_equal(x->cv.deltas_flat, 2);
    assert_int_equal(x->f.audio_len, 18);
    assert_memory_equal(x->f.audio + 15, "\x01\x02\x03", 3);
}


static void
test_marks_thinned_for_small_deltas(void **state)
{
    int         i;
    fixture_t  *x = *state;

    turn(x);

    /* twelve deltas of 20 ms: a mark once 100 ms have gone out since the
     * last one, so after the fifth and the tenth */

    for (i = 0; i < 12; i++) {
        delta(x, "item_A1", "resp_R1", 160, 0x11);
    }

    assert_int_equal(x->f.pieces, 12);
    assert_int_equal(x->f.nmarks, 2);
    assert_int_equal(x->f.marked_pieces[0], 5);
    assert_int_equal(x->f.marked_pieces[1], 10);
    assert_int_equal(x->cv.unmarked_order, 2);

    /* the end of the item's audio gets a mark of its own, once */

    ev(x, "{\"type\":\"response.output_audio.done\",\"response_id\":"
          "\"resp_R1\",\"item_id\":\"item_A1\",\"output_index\":0,"
          "\"content_index\":0}");
    ev(x, "{\"type\":\"response.output_audio.done\",\"response_id\":"
          "\"resp_R1\",\"item_id\":\"item_A1\",\"output_index\":0,"
          "\"content_index\":0}");

    assert_int_equal(x->f.nmarks, 3);
    assert_int_equal(x->f.pieces, 12);
    assert_string_equal(x->f.marks[2], "2-3");
    assert_int_equal(x->cv.marks_len, 3);
    assert_int_equal(x->cv.unmarked_order, 0);

    /* its echo says all of it played */

    bd_oai_event_mark_ack(&x->cv, "2-3", 3);
    assert_int_equal(x->cv.marks_len, 0);
    assert_int_equal(x->cv.items[1].played, 1920);

    /* the next reply: 100 ms marked and echoed, then 20 ms more that
     * carry no mark; a barge-in still stops that and truncates at what
     * the echo confirmed */

    ev(x, "{\"type\":\"response.created\",\"response\":{\"id\":\"resp_R2\"}}");

    for (i = 0; i < 6; i++) {
        delta(x, "item_A2", "resp_R2", 160, 0x22);
    }

    assert_int_equal(x->f.nmarks, 4);
    bd_oai_event_mark_ack(&x->cv, x->f.marks[3], strlen(x->f.marks[3]));
    assert_int_equal(x->cv.marks_len, 0);
    assert_int_equal(x->cv.unmarked_order, 3);

    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"item_id\":\"item_U3\"}");

    assert_int_equal(x->f.clears, 1);
    assert_int_equal(x->f.nsent, 1);
    assert_string_equal(x->f.sent[0],
        "{\"type\":\"conversation.item.truncate\",\"item_id\":\"item_A2\","
        "\"content_index\":0,\"audio_end_ms\":100}");
    assert_int_equal(x->cv.unmarked_order, 0);
}


static void
test_refused_audio_sends_no_mark(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    x->f.refuse_audio = 1;
    delta(x, "item_A1", "resp_R1", 800, 0x33);

    assert_int_equal(x->f.nmarks, 0);
    assert_int_equal(x->cv.audio_lost, 800);
    assert_int_equal(x->cv.marks_len, 0);
}


static void
test_barge_in(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    delta(x, "item_A1", "resp_R1", 1600, 0x11);
    delta(x, "item_A1", "resp_R1", 2400, 0x22);
    delta(x, "item_A1", "resp_R1", 800, 0x33);

    /* Twilio played the first delta (200 ms) */

    bd_oai_event_mark_ack(&x->cv, x->f.marks[0], strlen(x->f.marks[0]));
    assert_int_equal(x->cv.marks_len, 2);

    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"audio_start_ms\":2500,\"item_id\":\"item_U2\"}");

    assert_int_equal(x->f.clears, 1);
    assert_int_equal(x->f.nsent, 1);
    assert_string_equal(x->f.sent[0],
        "{\"type\":\"conversation.item.truncate\",\"item_id\":\"item_A1\","
        "\"content_index\":0,\"audio_end_ms\":200}");
    assert_int_equal(x->cv.marks_len, 0);
    assert_int_equal(x->cv.barge_ins, 1);

    /* the rest of R1 is not played; the clear's echoes count for nothing */

    delta(x, "item_A1", "resp_R1", 800, 0x44);
    assert_int_equal(x->f.audio_len, 4800);
    assert_int_equal(x->cv.audio_dropped, 800);

    bd_oai_event_mark_ack(&x->cv, x->f.marks[1], strlen(x->f.marks[1]));
    bd_oai_event_mark_ack(&x->cv, x->f.marks[2], strlen(x->f.marks[2]));
    assert_int_equal(x->cv.items[1].played, 1600);

    /* a second speech start with nothing playing is an ordinary turn */

    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"item_id\":\"item_U3\"}");
    assert_int_equal(x->f.clears, 1);
    assert_int_equal(x->f.nsent, 1);

    /* the next response plays again */

    ev(x, "{\"type\":\"response.created\",\"response\":{\"id\":\"resp_R2\"}}");
    delta(x, "item_A2", "resp_R2", 160, 0x55);
    assert_int_equal(x->f.audio_len, 4960);
}


/* a reply's text goes to the record once all its audio has played */

static void
test_reply_recorded_once_played(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    delta(x, "item_A1", "resp_R1", 800, 0x11);
    delta(x, "item_A1", "resp_R1", 400, 0x22);
    ev(x, "{\"type\":\"response.output_audio.done\",\"response_id\":"
          "\"resp_R1\",\"item_id\":\"item_A1\"}");
    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A1\",\"transcript\":\"Sure, for when?\"}");

    /* generated, not yet heard */
    assert_int_equal(x->f.ntr, 0);
    assert_int_equal(x->f.nmarks, 2);

    bd_oai_event_mark_ack(&x->cv, x->f.marks[0], strlen(x->f.marks[0]));
    assert_int_equal(x->f.ntr, 0);

    /* the last mark: all of it played */
    bd_oai_event_mark_ack(&x->cv, x->f.marks[1], strlen(x->f.marks[1]));
    assert_int_equal(x->f.ntr, 1);
    assert_string_equal(x->f.tr_text[0], "Sure, for when?");
    assert_string_equal(x->f.tr_gen[0], "");
    assert_int_equal(x->f.tr_role[0], VOICE_PROTO_ROLE_ASSISTANT);
    assert_int_equal(x->cv.transcripts, 1);

    /* once */
    bd_oai_event_mark_ack(&x->cv, x->f.marks[1], strlen(x->f.marks[1]));
    bd_oai_event_stop(&x->cv);
    assert_int_equal(x->f.ntr, 1);
}


/* a barge-in keeps the share of the text its played audio covers, back
 * to a word boundary, and the whole text apart */

static void
test_barge_in_records_what_was_heard(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    delta(x, "item_A1", "resp_R1", 800, 0x11);
    delta(x, "item_A1", "resp_R1", 800, 0x22);
    ev(x, "{\"type\":\"response.output_audio.done\","
          "\"item_id\":\"item_A1\"}");
    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A1\",\"transcript\":"
          "\"one two three four\"}");

    /* half of it played (800 of 1600 bytes): 9 of 18 bytes, "one two t" */
    bd_oai_event_mark_ack(&x->cv, x->f.marks[0], strlen(x->f.marks[0]));

    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"item_id\":\"item_U2\"}");

    assert_int_equal(x->f.ntr, 1);
    assert_string_equal(x->f.tr_text[0], "one two");
    assert_string_equal(x->f.tr_gen[0], "one two three four");

    /* nothing is heard twice */
    bd_oai_event_stop(&x->cv);
    bd_oai_event_flush(&x->cv, 1);
    assert_int_equal(x->f.ntr, 1);
}


/* cut before its transcript came: it comes cut; cut before any echo: the
 * caller heard nothing of it */

static void
test_transcript_after_the_cut(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    delta(x, "item_A1", "resp_R1", 1600, 0x11);
    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"item_id\":\"item_U2\"}");
    assert_int_equal(x->f.ntr, 0);

    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A1\",\"transcript\":\"Hello there\"}");
    assert_int_equal(x->f.ntr, 1);
    assert_string_equal(x->f.tr_text[0], "");
    assert_string_equal(x->f.tr_gen[0], "Hello there");
}


/* the caller leaves mid-reply, or the session goes: what played counts;
 * a reply without audio is recorded whole at once */

static void
test_stop_and_new_session_cut_held_replies(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    /* 3 marks' worth; the first two come back (1600 of 2000 bytes) */
    delta(x, "item_A1", "resp_R1", 800, 0x11);
    delta(x, "item_A1", "resp_R1", 800, 0x22);
    delta(x, "item_A1", "resp_R1", 400, 0x33);
    ev(x, "{\"type\":\"response.output_audio.done\","
          "\"item_id\":\"item_A1\"}");
    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A1\",\"transcript\":"
          "\"alpha beta gamma delta epsilon\"}");
    bd_oai_event_mark_ack(&x->cv, x->f.marks[1], strlen(x->f.marks[1]));
    assert_int_equal(x->f.ntr, 0);

    bd_oai_event_new_session(&x->cv);

    /* 30 bytes * 1600 / 2000 = 24: "alpha beta gamma delta e" -> back */
    assert_int_equal(x->f.ntr, 1);
    assert_string_equal(x->f.tr_text[0], "alpha beta gamma delta");
    assert_string_equal(x->f.tr_gen[0], "alpha beta gamma delta epsilon");

    /* a text reply, no audio */
    ev(x, "{\"type\":\"response.output_item.added\",\"item\":{\"id\":"
          "\"item_T1\",\"role\":\"assistant\"}}");
    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_T1\",\"transcript\":\"In writing.\"}");
    assert_int_equal(x->f.ntr, 2);
    assert_string_equal(x->f.tr_text[1], "In writing.");

    /* the caller hangs up while a reply plays, none of it confirmed */
    ev(x, "{\"type\":\"response.output_item.added\",\"item\":{\"id\":"
          "\"item_A2\",\"role\":\"assistant\"}}");
    delta(x, "item_A2", "resp_R2", 800, 0x44);
    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A2\",\"transcript\":\"Goodbye now\"}");
    assert_int_equal(x->f.ntr, 2);

    bd_oai_event_stop(&x->cv);
    assert_int_equal(x->f.ntr, 3);
    assert_string_equal(x->f.tr_text[2], "");
    assert_string_equal(x->f.tr_gen[2], "Goodbye now");
}


/* a turn's latency: from the end of the caller's speech (audio_end_ms,
 * placed on the clock by the input given since) to the reply's first
 * audio; a response's usage by kind */

static void
test_turn_latency_and_usage(void **state)
{
    fixture_t  *x = *state;

    ev(x, "{\"type\":\"session.updated\",\"session\":{}}");
    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"audio_start_ms\":100,\"item_id\":\"item_U1\"}");

    /* the VAD speaks 500 ms after the speech ended at 2000 ms of input */
    x->f.now = 10000;
    x->f.input_ms = 2500;
    ev(x, "{\"type\":\"input_audio_buffer.speech_stopped\","
          "\"audio_end_ms\":2000,\"item_id\":\"item_U1\"}");

    ev(x, "{\"type\":\"response.output_item.added\",\"item\":{\"id\":"
          "\"item_A1\",\"role\":\"assistant\"}}");
    x->f.now = 10300;
    delta(x, "item_A1", "resp_R1", 800, 0x11);
    x->f.now = 10400;
    delta(x, "item_A1", "resp_R1", 800, 0x22);
    ev(x, "{\"type\":\"response.output_audio.done\","
          "\"item_id\":\"item_A1\"}");
    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A1\",\"transcript\":\"Yes.\"}");
    bd_oai_event_mark_ack(&x->cv, x->f.marks[1], strlen(x->f.marks[1]));

    assert_int_equal(x->f.ntr, 1);
    assert_int_equal(x->f.tr_latency[0], 800);

    ev(x, "{\"type\":\"response.done\",\"response\":{\"id\":"
          "\"resp_R1\",\"status\":\"completed\",\"usage\":{"
          "\"total_tokens\":300,\"input_tokens\":200,\"output_tokens\":100,"
          "\"input_token_details\":{\"text_tokens\":120,\"audio_tokens\":80,"
          "\"cached_tokens\":64},\"output_token_details\":{\"text_tokens\":"
          "10,\"audio_tokens\":90}}}}");
    ev(x, "{\"type\":\"response.done\",\"response\":{\"id\":"
          "\"resp_R2\",\"status\":\"cancelled\",\"usage\":{"
          "\"input_tokens\":5,\"output_tokens\":7}}}");
    ev(x, "{\"type\":\"response.done\",\"response\":{\"id\":"
          "\"resp_R3\",\"status\":\"completed\",\"usage\":null}}");

    assert_int_equal(x->f.usages, 2);
    assert_int_equal(x->f.usage.input_text, 125);
    assert_int_equal(x->f.usage.input_audio, 80);
    assert_int_equal(x->f.usage.input_cached, 64);
    assert_int_equal(x->f.usage.output_text, 17);
    assert_int_equal(x->f.usage.output_audio, 90);

    /* a reply nobody asked for by speaking (a greeting, after a tool) has
     * no turn latency */
    ev(x, "{\"type\":\"response.output_item.added\",\"item\":{\"id\":"
          "\"item_A2\",\"role\":\"assistant\"}}");
    delta(x, "item_A2", "resp_R4", 160, 0x33);
    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A2\",\"transcript\":\"And?\"}");
    bd_oai_event_stop(&x->cv);
    assert_int_equal(x->f.ntr, 2);
    assert_int_equal(x->f.tr_latency[1], 0);
}


static void
test_barge_in_before_any_echo(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    delta(x, "item_A1", "resp_R1", 4000, 0x11);

    /* no mark came back: nothing was heard, truncate at 0 */

    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"item_id\":\"item_U2\"}");

    assert_int_equal(x->f.clears, 1);
    assert_string_equal(x->f.sent[0],
        "{\"type\":\"conversation.item.truncate\",\"item_id\":\"item_A1\","
        "\"content_index\":0,\"audio_end_ms\":0}");
}


static void
test_mark_echoes(void **state)
{
    fixture_t  *x = *state;

    turn(x);

    delta(x, "item_A1", "resp_R1", 800, 1);
    delta(x, "item_A1", "resp_R1", 800, 2);
    delta(x, "item_A1", "resp_R1", 800, 3);

    /* an echo of a later mark settles the earlier ones */

    bd_oai_event_mark_ack(&x->cv, "2-2", 3);
    assert_int_equal(x->cv.marks_len, 1);
    assert_int_equal(x->cv.items[1].played, 1600);

    /* unknown and malformed names are ignored */

    bd_oai_event_mark_ack(&x->cv, "2-1", 3);
    bd_oai_event_mark_ack(&x->cv, "junk", 4);
    bd_oai_event_mark_ack(&x->cv, "2-", 2);
    bd_oai_event_mark_ack(&x->cv, "2-x3", 4);
    assert_int_equal(x->cv.marks_len, 1);
    assert_int_equal(x->cv.items[1].played, 1600);

    bd_oai_event_mark_ack(&x->cv, "2-3", 3);
    assert_int_equal(x->cv.marks_len, 0);
    assert_int_equal(x->cv.items[1].played, 2400);
}


static void
test_error_events(void **state)
{
    fixture_t  *x = *state;

    ev(x, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
          "\"code\":\"response_cancel_not_active\",\"message\":\"Cancellation "
          "failed\"}}");
    assert_int_equal(x->f.nfatal, 0);

    ev(x, "{\"type\":\"error\",\"error\":{\"code\":\"invalid_api_key\","
          "\"message\":\"Incorrect API key\"}}");
    assert_int_equal(x->f.nfatal, 1);
    assert_string_equal(x->f.fatal,
                        "OpenAI error invalid_api_key: Incorrect API key");

    ev(x, "{\"type\":\"error\",\"error\":{\"code\":\"beta_api_shape_disabled\""
          "}}");
    ev(x, "{\"type\":\"error\",\"error\":{\"code\":\"model_not_found\"}}");
    ev(x, "{\"type\":\"error\",\"error\":{\"type\":\"insufficient_quota\","
          "\"code\":\"insufficient_quota\"}}");
    assert_int_equal(x->f.nfatal, 4);

    /* an expired session is over, the call is not: a new one takes over */

    ev(x, "{\"type\":\"error\",\"error\":{\"code\":\"session_expired\"}}");
    assert_int_equal(x->f.nfatal, 4);
    assert_int_equal(x->f.nrenew, 1);
    assert_string_equal(x->f.renew, "the session expired");

    /* our session.update refused: the session would play garbage */

    ev(x, "{\"type\":\"error\",\"error\":{\"code\":\"unknown_parameter\","
          "\"event_id\":\"" BD_SESSION_EVENT_ID "\"}}");
    assert_int_equal(x->f.nfatal, 5);

    /* a malformed error event is logged, not fatal */

    ev(x, "{\"type\":\"error\"}");
    assert_int_equal(x->f.nfatal, 5);
    assert_int_equal(x->f.nrenew, 1);
}


/* one sent conversation.item.create: its role, part type and text */

static void
assert_item(const char *json, const char *role, const char *type,
    const char *text)
{
    cJSON        *root;
    const cJSON  *item, *part;

    root = cJSON_Parse(json);
    assert_non_null(root);
    assert_string_equal(cJSON_GetObjectItem(root, "type")->valuestring,
                        "conversation.item.create");

    item = cJSON_GetObjectItem(root, "item");
    assert_null(cJSON_GetObjectItem(item, "previous_item_id"));
    assert_string_equal(cJSON_GetObjectItem(item, "role")->valuestring, role);

    part = cJSON_GetArrayItem(cJSON_GetObjectItem(item, "content"), 0);
    assert_string_equal(cJSON_GetObjectItem(part, "type")->valuestring, type);

    if (text != NULL) {
        assert_string_equal(cJSON_GetObjectItem(part, "text")->valuestring,
                            text);
    }

    cJSON_Delete(root);
}


static void
test_restore_history(void **state)
{
    fixture_t     *x = *state;
    bd_history_t   h;

    bd_history_init(&h);
    (void) bd_history_add(&h, 1, VOICE_PROTO_ROLE_USER, "Hi", 2);
    (void) bd_history_add(&h, 2, VOICE_PROTO_ROLE_ASSISTANT, "Hello!", 6);
    (void) bd_history_add(&h, 3, VOICE_PROTO_ROLE_TOOL,
                          "lookup({}) returned: ok", 23);
    (void) bd_history_add(&h, 4, VOICE_PROTO_ROLE_DTMF, "5", 1);
    h.dropped = 2;

    assert_int_equal(bd_oai_event_restore(&x->cv, &h, "closed by OpenAI "
                                          "with 1011"), 0);
    assert_int_equal(x->f.nsent, 5);

    /* a note first, with why and what is missing; then oldest first */

    assert_item(x->f.sent[0], "system", "input_text", NULL);
    assert_non_null(strstr(x->f.sent[0], "closed by OpenAI with 1011"));
    assert_non_null(strstr(x->f.sent[0], "without its 2 oldest turns"));
    assert_item(x->f.sent[1], "user", "input_text", "Hi");
    assert_item(x->f.sent[2], "assistant", "output_text", "Hello!");
    assert_item(x->f.sent[3], "system", "input_text",
                "Earlier in the call, the tool lookup({}) returned: ok");
    assert_item(x->f.sent[4], "user", "input_text", "The caller pressed 5.");

    /* restoring asks for no response by itself, and settles nothing */

    assert_true(bd_oai_event_settled(&x->cv));

    bd_history_free(&h);
}


static void
test_stop_commits_speech(void **state)
{
    fixture_t  *x = *state;

    ev(x, "{\"type\":\"session.updated\",\"session\":{}}");

    /* not mid-utterance: nothing to commit */

    bd_oai_event_stop(&x->cv);
    assert_int_equal(x->f.nsent, 0);
    assert_true(bd_oai_event_settled(&x->cv));

    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"item_id\":\"item_U1\"}");
    bd_oai_event_stop(&x->cv);

    assert_int_equal(x->f.nsent, 1);
    assert_string_equal(x->f.sent[0], "{\"type\":\"input_audio_buffer."
                        "commit\",\"event_id\":\"bd-commit\"}");
    assert_false(bd_oai_event_settled(&x->cv));

    ev(x, "{\"type\":\"input_audio_buffer.committed\","
          "\"item_id\":\"item_U1\"}");
    assert_false(bd_oai_event_settled(&x->cv));

    ev(x, "{\"type\":\"conversation.item.input_audio_transcription.completed\""
          ",\"item_id\":\"item_U1\",\"transcript\":\"bye\"}");
    assert_true(bd_oai_event_settled(&x->cv));
    assert_int_equal(x->f.ntr, 1);
}


static void
test_stop_cancels_a_reply_nobody_hears(void **state)
{
    fixture_t  *x = *state;

    ev(x, "{\"type\":\"session.updated\",\"session\":{}}");
    ev(x, "{\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\","
          "\"status\":\"in_progress\"}}");
    assert_false(bd_oai_event_settled(&x->cv));

    /* the caller is gone: the reply is cancelled, not waited for */

    bd_oai_event_stop(&x->cv);
    assert_int_equal(x->f.nsent, 1);
    assert_string_equal(x->f.sent[0], "{\"type\":\"response.cancel\","
                        "\"event_id\":\"bd-stop-cancel\"}");

    ev(x, "{\"type\":\"response.done\",\"response\":{\"id\":\"resp_1\","
          "\"status\":\"cancelled\"}}");
    assert_true(bd_oai_event_settled(&x->cv));
}


static void
test_refused_commit_settles(void **state)
{
    fixture_t  *x = *state;

    ev(x, "{\"type\":\"session.updated\",\"session\":{}}");
    ev(x, "{\"type\":\"input_audio_buffer.speech_started\","
          "\"item_id\":\"item_U1\"}");
    bd_oai_event_stop(&x->cv);
    assert_false(bd_oai_event_settled(&x->cv));

    ev(x, "{\"type\":\"error\",\"error\":{\"code\":null,\"message\":\"buffer "
          "too small\",\"event_id\":\"bd-commit\"}}");
    assert_true(bd_oai_event_settled(&x->cv));
    assert_int_equal(x->f.nfatal, 0);
}


static void
test_greeting(void **state)
{
    cJSON        *root;
    fixture_t    *x = *state;
    const cJSON  *item, *part;

    assert_int_equal(bd_oai_event_greet(&x->cv, "Say \"hi\" to the caller."),
                     0);
    assert_int_equal(x->f.nsent, 2);
    assert_false(bd_oai_event_settled(&x->cv));

    root = cJSON_Parse(x->f.sent[0]);
    assert_non_null(root);
    assert_string_equal(cJSON_GetObjectItem(root, "type")->valuestring,
                        "conversation.item.create");

    item = cJSON_GetObjectItem(root, "item");
    assert_string_equal(cJSON_GetObjectItem(item, "type")->valuestring,
                        "message");
    assert_string_equal(cJSON_GetObjectItem(item, "role")->valuestring,
                        "user");

    part = cJSON_GetArrayItem(cJSON_GetObjectItem(item, "content"), 0);
    assert_string_equal(cJSON_GetObjectItem(part, "type")->valuestring,
                        "input_text");
    assert_string_equal(cJSON_GetObjectItem(part, "text")->valuestring,
                        "Say \"hi\" to the caller.");
    cJSON_Delete(root);

    assert_string_equal(x->f.sent[1],
                        "{\"type\":\"response.create\",\"event_id\":"
                        "\"bd-greet\"}");

    /* a refused response.create does not hold the final wait forever */

    ev(x, "{\"type\":\"error\",\"error\":{\"code\":\"x\",\"event_id\":"
          "\"bd-greet\"}}");
    assert_true(bd_oai_event_settled(&x->cv));
}


static void
test_new_session_keeps_counters(void **state)
{
    fixture_t  *x = *state;

    turn(x);
    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A1\",\"transcript\":\"one\"}");
    delta(x, "item_A1", "resp_R1", 160, 1);

    bd_oai_event_new_session(&x->cv);

    assert_int_equal(x->cv.items_len, 0);
    assert_int_equal(x->cv.marks_len, 0);
    assert_int_equal(x->cv.pending, 0);
    assert_false(x->cv.ready);
    assert_true(bd_oai_event_settled(&x->cv));
    assert_int_equal(x->cv.transcripts, 1);

    /* numbering goes on after the old session's items */

    ev(x, "{\"type\":\"input_audio_buffer.committed\","
          "\"item_id\":\"item_N1\"}");
    ev(x, "{\"type\":\"conversation.item.input_audio_transcription.completed\""
          ",\"item_id\":\"item_N1\",\"transcript\":\"two\"}");
    assert_int_equal(x->f.tr_order[1], 3);
}


/* the function call flow of docs/protocols.md, Realtime acting 2.2 */

static void
test_function_call_runs_once_completed(void **state)
{
    fixture_t  *x = *state;

    ev(x, "{\"type\":\"response.created\",\"response\":{\"id\":\"resp_F\"}}");
    ev(x, "{\"type\":\"response.output_item.added\",\"response_id\":"
          "\"resp_F\",\"output_index\":0,\"item\":{\"id\":\"item_F1\","
          "\"type\":\"function_call\",\"status\":\"in_progress\","
          "\"name\":\"lookup\",\"call_id\":\"call_1\",\"arguments\":\"\"}}");
    ev(x, "{\"type\":\"response.function_call_arguments.delta\","
          "\"item_id\":\"item_F1\",\"call_id\":\"call_1\","
          "\"delta\":\"{\\\"n\\\":\"}");
    ev(x, "{\"type\":\"response.function_call_arguments.done\","
          "\"item_id\":\"item_F1\",\"call_id\":\"call_1\",\"name\":\"lookup\","
          "\"arguments\":\"{\\\"n\\\":\\\"42\\\"}\"}");

    /* not yet: only a completed item is run */
    assert_int_equal(x->f.ntools, 0);

    ev(x, "{\"type\":\"conversation.item.done\",\"item\":{\"id\":\"item_F1\","
          "\"type\":\"function_call\",\"status\":\"completed\"}}");
    assert_int_equal(x->f.ntools, 0);

    ev(x, "{\"type\":\"response.output_item.done\",\"response_id\":"
          "\"resp_F\",\"output_index\":0,\"item\":{\"id\":\"item_F1\","
          "\"type\":\"function_call\",\"status\":\"completed\","
          "\"name\":\"lookup\",\"call_id\":\"call_1\","
          "\"arguments\":\"{\\\"n\\\":\\\"42\\\"}\"}}");
    assert_int_equal(x->f.ntools, 1);
    assert_string_equal(x->f.tool_call[0], "1|call_1|lookup|{\"n\":\"42\"}");

    assert_true(bd_oai_event_responding(&x->cv));
    ev(x, "{\"type\":\"response.done\",\"response\":{\"id\":\"resp_F\","
          "\"status\":\"completed\"}}");
    assert_false(bd_oai_event_responding(&x->cv));
    assert_int_equal(x->f.responses_done, 1);

    /* cut short by a barge-in: partial arguments, never run */
    ev(x, "{\"type\":\"response.output_item.done\",\"item\":{\"id\":"
          "\"item_F2\",\"type\":\"function_call\",\"status\":\"incomplete\","
          "\"name\":\"lookup\",\"call_id\":\"call_2\",\"arguments\":"
          "\"{\\\"n\\\":\"}}");
    assert_int_equal(x->f.ntools, 1);

    /* malformed ones neither */
    ev(x, "{\"type\":\"response.output_item.done\",\"item\":{\"id\":"
          "\"item_F3\",\"type\":\"function_call\",\"status\":\"completed\","
          "\"name\":\"lookup\",\"call_id\":\"bad id\"}}");
    ev(x, "{\"type\":\"response.output_item.done\",\"item\":{\"id\":"
          "\"item_F4\",\"type\":\"function_call\",\"status\":\"completed\","
          "\"call_id\":\"call_4\"}}");
    ev(x, "{\"type\":\"response.output_item.done\",\"item\":\"x\"}");
    assert_int_equal(x->f.ntools, 1);

    /* a failed response is done too */
    ev(x, "{\"type\":\"response.done\",\"response\":{\"status\":\"failed\","
          "\"status_details\":{\"error\":{\"code\":\"x\"}}}}");
    assert_int_equal(x->f.responses_done, 2);
}


static void
test_mcp_call_is_recorded(void **state)
{
    fixture_t  *x = *state;

    ev(x, "{\"type\":\"response.output_item.done\",\"item\":{\"id\":"
          "\"item_M1\",\"type\":\"mcp_call\",\"server_label\":\"kb\","
          "\"name\":\"search\",\"arguments\":\"{\\\"q\\\":\\\"x\\\"}\","
          "\"output\":\"found\"}}");
    assert_int_equal(x->f.nmcp, 1);
    assert_string_equal(x->f.mcp[0], "1|kb.search|{\"q\":\"x\"}|found");

    ev(x, "{\"type\":\"response.output_item.done\",\"item\":{\"id\":"
          "\"item_M2\",\"type\":\"mcp_call\",\"server_label\":\"kb\","
          "\"name\":\"search\",\"arguments\":\"{}\",\"error\":{\"message\":"
          "\"denied\"}}}");
    assert_string_equal(x->f.mcp[1], "2|kb.search|{}|denied");
}


static void
test_tool_output_and_respond(void **state)
{
    fixture_t  *x = *state;
    cJSON      *e;

    assert_int_equal(bd_oai_event_tool_output(&x->cv, "call_1",
                                              "{\"ok\":\"q\\\"\"}", 1), 0);
    assert_int_equal(x->f.nsent, 2);

    e = cJSON_Parse(x->f.sent[0]);
    assert_string_equal(cJSON_GetObjectItem(e, "type")->valuestring,
                        "conversation.item.create");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "item"),
                                            "type")->valuestring,
                        "function_call_output");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "item"),
                                            "call_id")->valuestring,
                        "call_1");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "item"),
                                            "output")->valuestring,
                        "{\"ok\":\"q\\\"\"}");
    cJSON_Delete(e);

    assert_non_null(strstr(x->f.sent[1], "\"response.create\""));
    assert_true(bd_oai_event_responding(&x->cv));

    /* OpenAI refused the response.create: none comes */
    ev(x, "{\"type\":\"error\",\"error\":{\"code\":\"x\","
          "\"event_id\":\"bd-respond\"}}");
    assert_false(bd_oai_event_responding(&x->cv));

    /* ... unless one was active anyway */
    bd_oai_event_respond(&x->cv, "Wrap up.");
    assert_non_null(strstr(x->f.sent[2], "\"instructions\":\"Wrap up.\""));
    ev(x, "{\"type\":\"error\",\"error\":{\"code\":"
          "\"conversation_already_has_active_response\","
          "\"event_id\":\"bd-respond\"}}");
    assert_true(bd_oai_event_responding(&x->cv));

    /* no response asked */
    assert_int_equal(bd_oai_event_tool_output(&x->cv, "call_2", "", 0), 0);
    assert_int_equal(x->f.nsent, 4);
}


static void
test_dtmf_is_an_item_in_order(void **state)
{
    fixture_t  *x = *state;
    cJSON      *e;

    ev(x, "{\"type\":\"input_audio_buffer.committed\",\"item_id\":\"item_U1\"}");

    assert_int_equal(bd_oai_event_dtmf(&x->cv, '5'), 0);

    /* the keypad entry goes to the record with its own order */
    assert_int_equal(x->f.ntr, 1);
    assert_int_equal(x->f.tr_order[0], 2);
    assert_int_equal(x->f.tr_role[0], VOICE_PROTO_ROLE_DTMF);
    assert_string_equal(x->f.tr_text[0], "5");

    e = cJSON_Parse(x->f.sent[0]);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "item"),
                                            "id")->valuestring,
                        "item_bd_dtmf_1");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(
                            cJSON_GetObjectItem(e, "item"), "content"), 0)
                        ->child->next->valuestring,
                        "The caller pressed 5.");
    cJSON_Delete(e);
    assert_non_null(strstr(x->f.sent[1], "\"response.create\""));

    /* OpenAI's echo of our item takes no new order */
    ev(x, "{\"type\":\"conversation.item.added\",\"item\":{\"id\":"
          "\"item_bd_dtmf_1\",\"role\":\"user\"}}");
    ev(x, "{\"type\":\"input_audio_buffer.committed\",\"item_id\":\"item_U2\"}");
    assert_int_equal(x->cv.next_order, 4);

    /* while a response generates, no second response.create: one after
     * it is done */
    assert_int_equal(bd_oai_event_dtmf(&x->cv, '#'), 0);
    assert_int_equal(x->f.nsent, 3);
    assert_int_equal(x->f.tr_order[1], 4);
    assert_true(x->cv.respond_due);

    ev(x, "{\"type\":\"response.done\",\"response\":{\"status\":"
          "\"completed\"}}");
    assert_int_equal(x->f.nsent, 4);
    assert_non_null(strstr(x->f.sent[3], "\"response.create\""));
    assert_false(x->cv.respond_due);
}


/* an input_audio_buffer event about an item */

static void
buffer_event(fixture_t *x, const char *what, const char *item)
{
    ev(x, "{\"type\":\"input_audio_buffer.%s\",\"item_id\":\"%s\"}",
       what, item);
}


/* the response's cycle and the caller's turn, step by step */

static void
test_response_and_turn_cycles(void **state)
{
    fixture_t  *x = *state;

    ev(x, "{\"type\":\"session.updated\",\"session\":{}}");
    assert_int_equal(x->cv.response, BD_OAI_EVENT_RESP_IDLE);
    assert_int_equal(x->cv.turn, BD_OAI_EVENT_TURN_SILENT);

    /* asked, created, its text done, and a second asked meanwhile */
    assert_int_equal(bd_oai_event_greet(&x->cv, "Hello."), 0);
    assert_int_equal(x->cv.response, BD_OAI_EVENT_RESP_ASKED);
    assert_true(bd_oai_event_responding(&x->cv));
    assert_false(bd_oai_event_active(&x->cv));

    ev(x, "{\"type\":\"response.created\",\"response\":{\"id\":"
          "\"resp_R1\"}}");
    assert_int_equal(x->cv.response, BD_OAI_EVENT_RESP_GENERATING);
    assert_true(bd_oai_event_active(&x->cv));

    ev(x, "{\"type\":\"response.output_audio_transcript.done\","
          "\"item_id\":\"item_A1\",\"transcript\":\"\"}");
    assert_int_equal(x->cv.response, BD_OAI_EVENT_RESP_FINISHING);
    assert_false(bd_oai_event_responding(&x->cv));
    assert_true(bd_oai_event_active(&x->cv));
    assert_false(bd_oai_event_quiet(&x->cv));

    bd_oai_event_respond(&x->cv, NULL);
    assert_int_equal(x->cv.response, BD_OAI_EVENT_RESP_GENERATING);

    ev(x, "{\"type\":\"response.done\",\"response\":{\"status\":"
          "\"completed\"}}");
    assert_int_equal(x->cv.response, BD_OAI_EVENT_RESP_IDLE);

    /* a refused ask comes to nothing */
    bd_oai_event_respond(&x->cv, NULL);
    ev(x, "{\"type\":\"error\",\"error\":{\"code\":\"x\","
          "\"event_id\":\"bd-respond\"}}");
    assert_int_equal(x->cv.response, BD_OAI_EVENT_RESP_IDLE);

    /* the caller speaks, stops, speaks again before any reply */
    buffer_event(x, "speech_started", "item_U1");
    assert_int_equal(x->cv.turn, BD_OAI_EVENT_TURN_SPEAKING);
    buffer_event(x, "speech_stopped", "item_U1");
    assert_int_equal(x->cv.turn, BD_OAI_EVENT_TURN_ANSWERING);
    buffer_event(x, "speech_started", "item_U2");
    assert_int_equal(x->cv.turn, BD_OAI_EVENT_TURN_SPEAKING);

    /* committed ends the speech; a turn being answered stays so */
    buffer_event(x, "committed", "item_U2");
    assert_int_equal(x->cv.turn, BD_OAI_EVENT_TURN_SILENT);
    buffer_event(x, "speech_stopped", "item_U2");
    buffer_event(x, "committed", "item_U2");
    assert_int_equal(x->cv.turn, BD_OAI_EVENT_TURN_ANSWERING);

    /* a new session answers the turn still; it ends a response */
    bd_oai_event_respond(&x->cv, NULL);
    bd_oai_event_new_session(&x->cv);
    assert_int_equal(x->cv.turn, BD_OAI_EVENT_TURN_ANSWERING);
    assert_int_equal(x->cv.response, BD_OAI_EVENT_RESP_IDLE);

    /* the reply's first audio closes the turn */
    ev(x, "{\"type\":\"session.updated\",\"session\":{}}");
    ev(x, "{\"type\":\"response.created\",\"response\":{\"id\":"
          "\"resp_R2\"}}");
    ev(x, "{\"type\":\"response.output_item.added\",\"response_id\":"
          "\"resp_R2\",\"item\":{\"id\":\"item_A2\","
          "\"role\":\"assistant\"}}");
    delta(x, "item_A2", "resp_R2", 160, 0x55);
    assert_int_equal(x->cv.turn, BD_OAI_EVENT_TURN_SILENT);
}


static void
test_append_builder(void **state)
{
    char     buf[128];
    size_t   n;
    uint8_t  audio[3] = { 'f', 'o', 'o' };

    (void) state;

    n = bd_oai_event_append(buf, sizeof(buf), audio, 3);
    assert_int_equal(n, BD_OAI_EVENT_APPEND_SIZE(3));
    assert_memory_equal(buf, "{\"type\":\"input_audio_buffer.append\","
                        "\"audio\":\"Zm9v\"}", n);

    assert_int_equal(bd_oai_event_append(buf, n - 1, audio, 3), 0);
}


static void
test_item_ring_eviction(void **state)
{
    int         i;
    fixture_t  *x = *state;

    /* more committed items than the ring holds, none transcribed */

    for (i = 0; i < BD_OAI_EVENT_ITEMS + 44; i++) {
        ev(x, "{\"type\":\"input_audio_buffer.committed\","
              "\"item_id\":\"item_%d\"}", i);
    }

    assert_int_equal(x->cv.items_len, BD_OAI_EVENT_ITEMS);
    assert_int_equal(x->cv.pending, BD_OAI_EVENT_ITEMS);
    assert_int_equal(x->cv.next_order, BD_OAI_EVENT_ITEMS + 45);

    ev(x, "{\"type\":\"conversation.item.input_audio_transcription.completed\""
          ",\"item_id\":\"item_%d\",\"transcript\":\"last\"}",
       BD_OAI_EVENT_ITEMS + 43);
    assert_int_equal(x->f.tr_order[0], BD_OAI_EVENT_ITEMS + 44);
    assert_int_equal(x->cv.pending, BD_OAI_EVENT_ITEMS - 1);
}


static void
test_bad_input(void **state)
{
    fixture_t  *x = *state;

    assert_int_equal(bd_oai_event_dispatch(&x->cv, "not json", 8), -1);
    assert_int_equal(bd_oai_event_dispatch(&x->cv, "[1,2]", 5), -1);
    assert_int_equal(bd_oai_event_dispatch(&x->cv, "{\"a\":1}", 7), -1);
    assert_int_equal(bd_oai_event_dispatch(&x->cv, "{\"type\":7}", 10), -1);

    /* an unknown type is fine and does nothing */

    ev(x, "{\"type\":\"rate_limits.updated\",\"rate_limits\":[]}");

    /* ids that could not be written back into JSON are not stored */

    ev(x, "{\"type\":\"input_audio_buffer.committed\","
          "\"item_id\":\"a\\\"b\"}");
    ev(x, "{\"type\":\"input_audio_buffer.committed\",\"item_id\":3}");
    assert_int_equal(x->cv.items_len, 0);

    /* wrong types inside known events are ignored */

    ev(x, "{\"type\":\"response.output_audio.delta\",\"delta\":5}");
    ev(x, "{\"type\":\"response.output_audio.delta\",\"item_id\":\"i\","
          "\"delta\":\"!!!!\"}");
    assert_int_equal(x->f.audio_len, 0);
    assert_int_equal(x->f.nmarks, 0);
}


static void
test_big_events_and_reuse(void **state)
{
    int         i;
    fixture_t  *x = *state;

    turn(x);

    /* larger than the parse arena: cJSON falls back to malloc */

    x->f.refuse_audio = 1;
    delta(x, "item_A1", "resp_R1", 600 * 1024, 0x66);
    assert_int_equal(x->cv.audio_lost, 600 * 1024);

    /* many events: the arena is reused, never exhausted */

    x->f.refuse_audio = 0;

    for (i = 0; i < 2000; i++) {
        delta(x, "item_A1", "resp_R1", 8, 0x77);
        x->f.audio_len = 0;
        x->f.nmarks = 0;
    }

    assert_int_equal(x->cv.audio_sent, 2000 * 8);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test_setup_teardown(test_ready_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_and_late_transcripts,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_settlement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delta_pieces_and_marks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_delta_shapes_the_flat_scan_declines,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_marks_thinned_for_small_deltas,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_audio_sends_no_mark,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_barge_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_barge_in_before_any_echo,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_mark_echoes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_history, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stop_commits_speech, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stop_cancels_a_reply_nobody_hears,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_commit_settles, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_greeting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_session_keeps_counters,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_function_call_runs_once_completed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_mcp_call_is_recorded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tool_output_and_respond, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dtmf_is_an_item_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_response_and_turn_cycles, setup,
                                        teardown),
        cmocka_unit_test(test_append_builder),
        cmocka_unit_test_setup_teardown(test_turn_latency_and_usage, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reply_recorded_once_played,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_barge_in_records_what_was_heard,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transcript_after_the_cut, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_stop_and_new_session_cut_held_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_item_ring_eviction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_events_and_reuse, setup,
                                        teardown),
    };

    return cmocka_run_group_tests_name("bd_oai_event", tests, NULL, NULL);
}
