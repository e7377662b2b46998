/*
 * fuzz_oai_event.c: libFuzzer target of bridged's OpenAI event dispatch
 * (bridged/bd_oai_event.c), the code that reads whatever OpenAI's socket
 * delivers.
 *
 * The input is a script, one line per step: a line starting with '!' is a
 * Twilio mark echo (the rest is its name), '#' a key press (the next
 * byte), '.' the caller hanging up (bd_oai_event_stop()); any other line
 * is a server event, dispatched as it is.  The effects go to checking
 * callbacks, and after every step the conversation's bookkeeping must
 * hold: bounded rings, no more pending transcriptions than items, audio
 * pieces within the proto limit, transcripts with a known role, a real
 * order and bounded text, tool calls only with a plain call_id.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "bd_log.h"
#include "bd_oai_event.h"
#include "voice_proto.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static bd_oai_event_conv_t  fuzz_cv;


static int
fuzz_audio_out(void *data, const uint8_t *audio, size_t len,
    const char *mark)
{
    (void) data;

    if (len > BD_OAI_EVENT_PIECE || (len && audio == NULL)
        || (mark != NULL && strlen(mark) > 31))
    {
        abort();
    }

    return len % 7 != 3;    /* now and then nginx does not take it */
}


static void
fuzz_clear(void *data)
{
    (void) data;
}


static int
fuzz_transcript(void *data, const bd_oai_event_said_t *said)
{
    size_t       len, generated_len;
    uint32_t     order, role;
    const char  *text, *generated;

    (void) data;

    order = said->order;
    role = said->role;
    text = said->text;
    len = said->len;
    generated = said->generated;
    generated_len = said->generated_len;

    if (order == 0 || order >= fuzz_cv.next_order
        || role < VOICE_PROTO_ROLE_USER || role > VOICE_PROTO_ROLE_DTMF
        || len > VOICE_PROTO_MAX_TEXT || text == NULL)
    {
        abort();
    }

    /* only a reply cut off may be empty, and it is a start of all it
     * said, shorter, ending before a space */

    if (generated == NULL ? len == 0
        : (role != VOICE_PROTO_ROLE_ASSISTANT || generated_len <= len
           || generated_len > VOICE_PROTO_MAX_TEXT
           || memcmp(generated, text, len) != 0
           || (len > 0 && (generated[len] != ' ' && generated[len] != '\n'
                           && generated[len] != '\t'))))
    {
        abort();
    }

    return 1;
}


static void
fuzz_send(void *data, const char *json, size_t len)
{
    (void) data;

    if (len == 0 || json[0] != '{' || json[len - 1] != '}') {
        abort();
    }
}


static void
fuzz_ready(void *data)
{
    (void) data;
}


static void
fuzz_fatal(void *data, const char *why)
{
    (void) data;

    if (why == NULL) {
        abort();
    }
}


static void
fuzz_tool_call(void *data, uint32_t order, const char *call_id,
    const char *name, const char *arguments)
{
    size_t  i;

    (void) data;

    if (order == 0 || name == NULL || name[0] == '\0' || strlen(name) > 64
        || arguments == NULL || call_id == NULL || call_id[0] == '\0'
        || strlen(call_id) >= BD_OAI_EVENT_ID_MAX)
    {
        abort();
    }

    for (i = 0; call_id[i]; i++) {
        if (call_id[i] == '"' || call_id[i] == '\\'
            || (unsigned char) call_id[i] < 0x21)
        {
            abort();
        }
    }

    /* a tool answers at once, as a failing HTTP tool would */
    (void) bd_oai_event_tool_output(&fuzz_cv, call_id, "{\"error\":\"x\"}",
                                    !bd_oai_event_active(&fuzz_cv));
}


static void
fuzz_mcp_call(void *data, uint32_t order, const char *name,
    const char *arguments, const char *output)
{
    cJSON  *parsed;

    (void) data;

    if (order == 0 || name == NULL || arguments == NULL || output == NULL) {
        abort();
    }

    /* arguments nginx will keep (a JSON object) are on one line: nginx
     * journals the entry as one */

    parsed = cJSON_Parse(arguments);

    if (cJSON_IsObject(parsed) && strpbrk(arguments, "\r\n") != NULL) {
        abort();
    }

    cJSON_Delete(parsed);
}


static void
fuzz_response_done(void *data)
{
    (void) data;

    if (bd_oai_event_active(&fuzz_cv)) {
        abort();
    }
}


static void
fuzz_speech(void *data, int started)
{
    (void) data;

    if (started != 0 && started != 1) {
        abort();
    }
}


static void
fuzz_idle(void *data)
{
    (void) data;
}


static void
fuzz_usage(void *data, const bd_oai_event_usage_t *usage)
{
    (void) data;
    (void) usage;
}


/* a clock that moves, and input that runs ahead of it or behind */

static uint64_t
fuzz_clock(void *data, uint64_t *input_ms)
{
    static uint64_t  now;

    (void) data;

    now += 7;

    if (input_ms != NULL) {
        *input_ms = now * 3 / 2;
    }

    return now;
}


static const bd_oai_event_ops_t  fuzz_ops = {
    fuzz_audio_out, fuzz_clear, fuzz_transcript, fuzz_send, fuzz_ready,
    fuzz_fatal, fuzz_fatal, fuzz_tool_call, fuzz_mcp_call, fuzz_response_done,
    fuzz_speech, fuzz_idle, fuzz_usage, fuzz_clock
};


static void
fuzz_check(void)
{
    if (fuzz_cv.items_len > BD_OAI_EVENT_ITEMS
        || fuzz_cv.items_head >= BD_OAI_EVENT_ITEMS
        || fuzz_cv.marks_len > BD_OAI_EVENT_MARKS
        || fuzz_cv.marks_head >= BD_OAI_EVENT_MARKS
        || fuzz_cv.pending > fuzz_cv.items_len
        || fuzz_cv.next_order == 0)
    {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char           *line;
    size_t          i, start, len;
    uint32_t        order;

    bd_log_level = BD_LOG_ERROR + 1;

    bd_oai_event_init(&fuzz_cv, &fuzz_ops, NULL, "CAfuzz");

    line = malloc(size + 1);
    if (line == NULL) {
        return 0;
    }

    for (start = 0; start < size; start = i + 1) {

        for (i = start; i < size && data[i] != '\n'; i++) {
            /* void */
        }

        len = i - start;
        memcpy(line, data + start, len);
        line[len] = '\0';
        order = fuzz_cv.next_order;

        if (len > 0 && line[0] == '!') {
            bd_oai_event_mark_ack(&fuzz_cv, line + 1, len - 1);

        } else if (len > 1 && line[0] == '#') {
            (void) bd_oai_event_dtmf(&fuzz_cv, line[1]);

        } else if (len == 1 && line[0] == '.') {
            bd_oai_event_stop(&fuzz_cv);

        } else if (len > 0 && line[0] == '~') {
            bd_oai_event_new_session(&fuzz_cv);

        } else {
            (void) bd_oai_event_dispatch(&fuzz_cv, line, len);
        }

        /* orders only grow: nginx sorts the record by them */
        if (fuzz_cv.next_order < order) {
            abort();
        }

        fuzz_check();
    }

    /* as the call does when it ends: what is held goes, then is freed */
    bd_oai_event_flush(&fuzz_cv, 1);
    bd_oai_event_flush(&fuzz_cv, 0);

    free(line);

    return 0;
}
