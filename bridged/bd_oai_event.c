/*
 * bd_oai_event.c: OpenAI Realtime server events -> the bridge's actions.
 *
 * Ordering.  Every item gets an order number the first time its id shows
 * up in an event that adds an item (input_audio_buffer.committed,
 * conversation.item.added/created, response.output_item.added): that is
 * OpenAI's conversation order.  Transcripts then carry the number of their
 * item, so nginx can sort utterances that arrive in any order.
 *
 * Barge-in.  Assistant audio sent to nginx is followed by marks (one per
 * 100 ms of audio, and one at the end of each item's audio); Twilio
 * echoes a mark once the audio before it has played.  When the VAD hears
 * the caller while marks are still unechoed, or audio went out after the
 * last mark, the caller is talking over the assistant: nginx is told to
 * clear Twilio's buffer, each item still playing is truncated at the
 * audio really played (never more than OpenAI produced for it), the rest
 * of that response is dropped, and the outstanding marks are forgotten so
 * that the echoes the clear causes do not count as played.
 *
 * What was heard.  An assistant's transcript usually comes before its
 * audio has played (OpenAI generates faster than Twilio plays), so it is
 * held until its fate is known: its last mark echoed (all of it was
 * heard), or a barge-in, the caller's leaving or the session's end cut
 * it.  A cut one goes to the record as the share of its text that the
 * played share of its audio covers, back to a word boundary (OpenAI gives
 * no word timings), with the whole text apart.
 *
 * Memory.  response.output_audio.delta, the event that comes at frame
 * rate, is read where it lies by the shared tokenizer
 * (common/voice_json.c) when it has the plain shape OpenAI sends.  Any
 * other server event is parsed with cJSON into a static arena that is
 * reset after each event, so events cost no malloc; an event that does
 * not fit falls back to malloc.  The arena is used only while
 * cJSON_ParseWithLength() runs: anything else cJSON allocates, here or
 * elsewhere in bridged, comes from malloc as usual.
 */

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "bd_log.h"
#include "bd_stats.h"
#include "bd_oai_event.h"
#include "bd_session.h"
#include "voice_b64.h"
#include "voice_json.h"
#include "voice_proto.h"


#define BD_OAI_EVENT_ARENA  (512 * 1024)

/* a delta event has 7 members (15 tokens); room for OpenAI to add some */
#define BD_OAI_EVENT_DELTA_TOKS  48


typedef void (*bd_oai_event_handler_pt)(bd_oai_event_conv_t *cv,
    const cJSON *ev);


typedef struct {
    const char               *type;
    bd_oai_event_handler_pt   handler;
} bd_oai_event_handler_t;


static void bd_oai_event_heard(bd_oai_event_conv_t *cv,
    bd_oai_event_item_t *it, int force);
static void bd_oai_event_usage(bd_oai_event_conv_t *cv, const cJSON *usage);
static void bd_oai_event_session_created(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_session_updated(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_error(bd_oai_event_conv_t *cv, const cJSON *ev);
static void bd_oai_event_speech_started(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_speech_stopped(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_committed(bd_oai_event_conv_t *cv, const cJSON *ev);
static void bd_oai_event_item_added(bd_oai_event_conv_t *cv, const cJSON *ev);
static void bd_oai_event_asr_completed(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_asr_failed(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_response_created(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_audio_delta(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_audio(bd_oai_event_conv_t *cv, const char *item_id,
    const char *response, const char *delta, size_t len);
static int bd_oai_event_flat_delta(bd_oai_event_conv_t *cv, const char *json,
    size_t len);
static void bd_oai_event_audio_done(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_transcript_done(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_response_done(bd_oai_event_conv_t *cv,
    const cJSON *ev);
static void bd_oai_event_item_done(bd_oai_event_conv_t *cv, const cJSON *ev);
static void bd_oai_event_idle(bd_oai_event_conv_t *cv, const cJSON *ev);


static const bd_oai_event_handler_t  bd_oai_event_handlers[] = {
    { "response.output_audio.delta", bd_oai_event_audio_delta },
    { "response.output_audio.done", bd_oai_event_audio_done },
    { "input_audio_buffer.speech_started", bd_oai_event_speech_started },
    { "input_audio_buffer.speech_stopped", bd_oai_event_speech_stopped },
    { "input_audio_buffer.committed", bd_oai_event_committed },
    { "conversation.item.added", bd_oai_event_item_added },
    { "conversation.item.created", bd_oai_event_item_added },
    { "response.output_item.added", bd_oai_event_item_added },
    { "conversation.item.input_audio_transcription.completed",
      bd_oai_event_asr_completed },
    { "conversation.item.input_audio_transcription.failed",
      bd_oai_event_asr_failed },
    { "response.created", bd_oai_event_response_created },
    { "response.output_audio_transcript.done",
      bd_oai_event_transcript_done },
    { "response.done", bd_oai_event_response_done },
    { "response.output_item.done", bd_oai_event_item_done },
    { "input_audio_buffer.timeout_triggered", bd_oai_event_idle },
    { "session.created", bd_oai_event_session_created },
    { "session.updated", bd_oai_event_session_updated },
    { "error", bd_oai_event_error },
    { NULL, NULL }
};


/* error codes after which no session will be of use: the call ends */
static const char  *bd_oai_event_fatal_codes[] = {
    "invalid_api_key",
    "beta_api_shape_disabled",
    "model_not_found",
    "invalid_model",
    "missing_model",
    "insufficient_quota",
    NULL
};


static alignas(max_align_t) unsigned char
                      bd_oai_event_arena[BD_OAI_EVENT_ARENA];
static size_t         bd_oai_event_arena_used;
static int            bd_oai_event_arena_on;
static int            bd_oai_event_hooks_set;

/* one decoded piece of assistant audio */
static uint8_t        bd_oai_event_piece[BD_OAI_EVENT_PIECE];


static void *
bd_oai_event_malloc(size_t size)
{
    void    *p;
    size_t   n;

    if (bd_oai_event_arena_on) {
        n = (size + alignof(max_align_t) - 1)
            & ~(alignof(max_align_t) - 1);

        if (n <= BD_OAI_EVENT_ARENA - bd_oai_event_arena_used) {
            p = bd_oai_event_arena + bd_oai_event_arena_used;
            bd_oai_event_arena_used += n;
            return p;
        }
    }

    return malloc(size);
}


static void
bd_oai_event_free(void *p)
{
    uintptr_t  a, start;

    a = (uintptr_t) p;
    start = (uintptr_t) bd_oai_event_arena;

    /* arena memory is released all at once, after the event */

    if (a >= start && a < start + BD_OAI_EVENT_ARENA) {
        return;
    }

    free(p);
}


void
bd_oai_event_init(bd_oai_event_conv_t *cv, const bd_oai_event_ops_t *ops,
    void *data, const char *sid)
{
    memset(cv, 0, sizeof(bd_oai_event_conv_t));

    cv->ops = ops;
    cv->data = data;
    cv->sid = sid;
    cv->next_order = 1;
}


void
bd_oai_event_new_session(bd_oai_event_conv_t *cv)
{
    /* the old session's replies were cut where they were */
    bd_oai_event_flush(cv, 1);

    cv->items_head = 0;
    cv->items_len = 0;
    cv->marks_head = 0;
    cv->marks_len = 0;
    cv->unmarked_order = 0;
    cv->pending = 0;
    cv->ready = 0;
    bd_oai_event_response(cv, BD_OAI_EVENT_STEP_DONE);
    cv->respond_due = 0;

    if (cv->turn == BD_OAI_EVENT_TURN_SPEAKING) {
        bd_oai_event_turn(cv, BD_OAI_EVENT_TURN_SILENT);
    }

    cv->committing = 0;
    cv->response_id[0] = '\0';
    cv->dropped_id[0] = '\0';
    cv->expires_at = 0;
}


static const char *
bd_oai_event_str(const cJSON *obj, const char *name)
{
    const cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(obj, name);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}


/*
 * Ids are stored only when they are plain tokens, so they can be written
 * back into JSON (conversation.item.truncate) without escaping.
 */

static int
bd_oai_event_id_ok(const char *id)
{
    size_t  i;

    if (id == NULL || id[0] == '\0') {
        return 0;
    }

    for (i = 0; id[i]; i++) {
        if (i == BD_OAI_EVENT_ID_MAX - 1) {
            return 0;
        }

        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z')
              || (id[i] >= '0' && id[i] <= '9')
              || id[i] == '_' || id[i] == '-' || id[i] == '.'))
        {
            return 0;
        }
    }

    return 1;
}


static void
bd_oai_event_set_id(char *dst, const char *id)
{
    if (bd_oai_event_id_ok(id)) {
        memcpy(dst, id, strlen(id) + 1);

    } else {
        dst[0] = '\0';
    }
}


static void
bd_oai_event_settle(bd_oai_event_conv_t *cv, bd_oai_event_item_t *it)
{
    if (it->flags & BD_OAI_EVENT_PENDING) {
        cv->pending--;
    }

    it->flags = (uint8_t) ((it->flags & ~BD_OAI_EVENT_PENDING)
                           | BD_OAI_EVENT_SETTLED);
}


/* finds the item with that id, or gives it the next order number */

static bd_oai_event_item_t *
bd_oai_event_item(bd_oai_event_conv_t *cv, const char *id, unsigned role)
{
    unsigned              i;
    bd_oai_event_item_t  *it;

    if (!bd_oai_event_id_ok(id)) {
        return NULL;
    }

    /* newest first: events mostly concern the latest items */

    for (i = cv->items_len; i-- > 0; /* void */) {
        it = &cv->items[(cv->items_head + i) % BD_OAI_EVENT_ITEMS];

        if (strcmp(it->id, id) == 0) {
            if (it->role == 0) {
                it->role = (uint8_t) role;
            }

            return it;
        }
    }

    if (cv->items_len == BD_OAI_EVENT_ITEMS) {
        it = &cv->items[cv->items_head];

        /* an item that old will not get its transcript any more */

        if (it->flags & BD_OAI_EVENT_PENDING) {
            cv->pending--;
        }

        bd_oai_event_heard(cv, it, 1);

        cv->items_head = (cv->items_head + 1) % BD_OAI_EVENT_ITEMS;
        cv->items_len--;
    }

    it = &cv->items[(cv->items_head + cv->items_len) % BD_OAI_EVENT_ITEMS];
    cv->items_len++;

    memset(it, 0, sizeof(bd_oai_event_item_t));
    memcpy(it->id, id, strlen(id) + 1);
    it->order = cv->next_order++;
    it->role = (uint8_t) role;

    bd_log(BD_LOG_DEBUG, cv->sid, "item %s has order %u", id,
           (unsigned) it->order);

    return it;
}


static bd_oai_event_item_t *
bd_oai_event_item_by_order(bd_oai_event_conv_t *cv, uint32_t order)
{
    unsigned              i;
    bd_oai_event_item_t  *it;

    for (i = cv->items_len; i-- > 0; /* void */) {
        it = &cv->items[(cv->items_head + i) % BD_OAI_EVENT_ITEMS];

        if (it->order == order) {
            return it;
        }
    }

    return NULL;
}


int
bd_oai_event_dispatch(bd_oai_event_conv_t *cv, const char *json, size_t len)
{
    int                            rc;
    cJSON                         *root;
    const char                    *type;
    cJSON_Hooks                    hooks;
    const bd_oai_event_handler_t  *h;

    if (bd_oai_event_flat_delta(cv, json, len)) {
        return 0;
    }

    if (!bd_oai_event_hooks_set) {
        hooks.malloc_fn = bd_oai_event_malloc;
        hooks.free_fn = bd_oai_event_free;
        cJSON_InitHooks(&hooks);
        bd_oai_event_hooks_set = 1;
    }

    bd_oai_event_arena_on = 1;
    root = cJSON_ParseWithLength(json, len);
    bd_oai_event_arena_on = 0;

    rc = -1;

    type = bd_oai_event_str(root, "type");

    if (cJSON_IsObject(root) && type != NULL) {
        rc = 0;

        for (h = bd_oai_event_handlers; h->type; h++) {
            if (strcmp(type, h->type) == 0) {
                h->handler(cv, root);
                break;
            }
        }
    }

    cJSON_Delete(root);
    bd_oai_event_arena_used = 0;

    return rc;
}


static void
bd_oai_event_session_created(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    const char   *id;
    const cJSON  *exp;

    id = bd_oai_event_str(cJSON_GetObjectItemCaseSensitive(ev, "session"),
                          "id");

    bd_log(BD_LOG_DEBUG, cv->sid, "OpenAI session %s created",
           id ? id : "(no id)");

    exp = cJSON_GetObjectItemCaseSensitive(
              cJSON_GetObjectItemCaseSensitive(ev, "session"), "expires_at");

    cv->expires_at = (cJSON_IsNumber(exp) && exp->valuedouble > 0
                      && exp->valuedouble < 1e13)
                     ? (uint64_t) exp->valuedouble : 0;
}


static void
bd_oai_event_session_updated(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    (void) ev;

    if (cv->ready) {
        return;
    }

    cv->ready = 1;
    cv->ops->ready(cv->data);
}


static void
bd_oai_event_error(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    int            fatal;
    char           why[320];
    const char    *code, *message, *event_id, **f;
    const cJSON   *err;

    err = cJSON_GetObjectItemCaseSensitive(ev, "error");

    code = bd_oai_event_str(err, "code");
    message = bd_oai_event_str(err, "message");
    event_id = bd_oai_event_str(err, "event_id");

    bd_log(BD_LOG_WARN, cv->sid, "OpenAI error %s: %s",
           code ? code : "(no code)", message ? message : "(no message)");
    bd_stats_openai_error(code);

    fatal = 0;

    for (f = bd_oai_event_fatal_codes; code != NULL && *f; f++) {
        if (strcmp(code, *f) == 0) {
            fatal = 1;
            break;
        }
    }

    if (event_id != NULL) {

        /* a session that refused our settings would play garbage */

        if (strcmp(event_id, BD_SESSION_EVENT_ID) == 0) {
            fatal = 1;

        } else if (strcmp(event_id, "bd-commit") == 0) {
            cv->committing = 0;

        } else if (strcmp(event_id, "bd-greet") == 0
                   || (strcmp(event_id, "bd-respond") == 0
                       && (code == NULL
                           || strcmp(code, "conversation_already_has_"
                                           "active_response") != 0)))
        {
            /* refused: no response comes of it */
            bd_oai_event_response(cv, BD_OAI_EVENT_STEP_DROP);

        } else if (strcmp(event_id, "bd-respond") == 0) {

            /* one was generating: ask again once it is done */
            cv->respond_due = 1;
        }
    }

    if (fatal) {
        snprintf(why, sizeof(why), "OpenAI error %s: %.256s",
                 code ? code : "(no code)", message ? message : "");
        cv->ops->fatal(cv->data, why);

    } else if (code != NULL && strcmp(code, "session_expired") == 0) {

        /* this session is over, not the call: a new one takes over */

        cv->ops->renew(cv->data, "the session expired");
    }
}


static void
bd_oai_event_truncate(bd_oai_event_conv_t *cv, uint32_t order)
{
    int                   n;
    char                  json[256];
    uint64_t              end;
    bd_oai_event_item_t  *it;

    it = bd_oai_event_item_by_order(cv, order);
    if (it == NULL || (it->flags & BD_OAI_EVENT_TRUNCATED)) {
        return;
    }

    it->flags |= BD_OAI_EVENT_TRUNCATED;
    bd_oai_event_heard(cv, it, 0);

    /* mu-law at 8 kHz: 8 bytes per ms */

    end = (it->played < it->received ? it->played : it->received) / 8;

    n = snprintf(json, sizeof(json),
                 "{\"type\":\"conversation.item.truncate\","
                 "\"item_id\":\"%s\",\"content_index\":0,"
                 "\"audio_end_ms\":%llu}",
                 it->id, (unsigned long long) end);

    bd_log(BD_LOG_INFO, cv->sid,
           "barge-in: truncating %s at %llu ms of %llu ms sent",
           it->id, (unsigned long long) end,
           (unsigned long long) (it->sent / 8));

    cv->ops->send(cv->data, json, (size_t) n);
}


static void
bd_oai_event_speech_started(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    unsigned              i;
    uint32_t              order;
    bd_oai_event_mark_t  *m;

    (void) ev;

    bd_oai_event_turn(cv, BD_OAI_EVENT_TURN_SPEAKING);
    cv->ops->speech(cv->data, 1);

    if (cv->marks_len == 0 && cv->unmarked_order == 0) {
        return;     /* nothing is playing: an ordinary turn */
    }

    cv->barge_ins++;
    cv->ops->clear(cv->data);

    order = 0;

    for (i = 0; i < cv->marks_len; i++) {
        m = &cv->marks[(cv->marks_head + i) % BD_OAI_EVENT_MARKS];

        if (m->order != order) {
            order = m->order;
            bd_oai_event_truncate(cv, order);
        }
    }

    /* audio sent after the last mark may still be playing too */

    if (cv->unmarked_order != 0) {
        bd_oai_event_truncate(cv, cv->unmarked_order);
    }

    if (cv->response_id[0] != '\0') {
        memcpy(cv->dropped_id, cv->response_id, sizeof(cv->dropped_id));
    }

    cv->marks_head = 0;
    cv->marks_len = 0;
    cv->unmarked_order = 0;
}


static void
bd_oai_event_speech_stopped(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    uint64_t      now, input;
    const cJSON  *end;

    bd_oai_event_turn(cv, BD_OAI_EVENT_TURN_ANSWERING);
    cv->ops->speech(cv->data, 0);

    /*
     * The VAD says so after its silence_duration_ms: the speech ended at
     * audio_end_ms of the session's input, which arrived as long before
     * now as the input given since (caller audio comes in real time).
     */

    now = cv->ops->clock(cv->data, &input);
    end = cJSON_GetObjectItemCaseSensitive(ev, "audio_end_ms");

    cv->turn_end = now;

    /* compared as a double first: a larger one is no uint64_t */

    if (cJSON_IsNumber(end) && end->valuedouble >= 0
        && end->valuedouble <= (double) input
        && (uint64_t) end->valuedouble <= input
        && input - (uint64_t) end->valuedouble <= now)
    {
        cv->turn_end = now - (input - (uint64_t) end->valuedouble);
    }
}


/* the server VAD's idle_timeout_ms: OpenAI prompts the caller itself */

static void
bd_oai_event_idle(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    (void) ev;

    bd_log(BD_LOG_INFO, cv->sid, "OpenAI's idle timeout: the caller said "
           "nothing");

    cv->ops->idle(cv->data);
}


static void
bd_oai_event_committed(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    bd_oai_event_item_t  *it;

    if (cv->turn == BD_OAI_EVENT_TURN_SPEAKING) {
        bd_oai_event_turn(cv, BD_OAI_EVENT_TURN_SILENT);
    }

    cv->committing = 0;

    it = bd_oai_event_item(cv, bd_oai_event_str(ev, "item_id"),
                           VOICE_PROTO_ROLE_USER);
    if (it == NULL) {
        return;
    }

    if (!(it->flags & (BD_OAI_EVENT_PENDING | BD_OAI_EVENT_SETTLED))) {
        it->flags |= BD_OAI_EVENT_PENDING;
        cv->pending++;
    }
}


static void
bd_oai_event_item_added(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    unsigned      role;
    const char   *r;
    const cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(ev, "item");

    r = bd_oai_event_str(item, "role");
    role = 0;

    if (r != NULL && strcmp(r, "user") == 0) {
        role = VOICE_PROTO_ROLE_USER;

    } else if (r != NULL && strcmp(r, "assistant") == 0) {
        role = VOICE_PROTO_ROLE_ASSISTANT;
    }

    (void) bd_oai_event_item(cv, bd_oai_event_str(item, "id"), role);
}


static void
bd_oai_event_transcript(bd_oai_event_conv_t *cv, bd_oai_event_item_t *it,
    uint32_t role, const char *text)
{
    size_t               len;
    bd_oai_event_said_t  said;

    if (text == NULL) {
        return;
    }

    len = strlen(text);
    if (len == 0) {
        return;
    }

    if (len > VOICE_PROTO_MAX_TEXT) {
        len = VOICE_PROTO_MAX_TEXT;
    }

    said.order = it->order;
    said.role = role;
    said.text = text;
    said.len = len;
    said.generated = NULL;
    said.generated_len = 0;
    said.latency_ms = (role == VOICE_PROTO_ROLE_ASSISTANT) ? it->latency : 0;

    if (cv->ops->transcript(cv->data, &said)) {
        cv->transcripts++;
    }
}


static void
bd_oai_event_asr_completed(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    bd_oai_event_item_t  *it;

    it = bd_oai_event_item(cv, bd_oai_event_str(ev, "item_id"),
                           VOICE_PROTO_ROLE_USER);

    if (it == NULL || (it->flags & BD_OAI_EVENT_SETTLED)) {
        return;
    }

    bd_oai_event_settle(cv, it);
    bd_oai_event_transcript(cv, it, VOICE_PROTO_ROLE_USER,
                            bd_oai_event_str(ev, "transcript"));
}


static void
bd_oai_event_asr_failed(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    const char           *message;
    bd_oai_event_item_t  *it;

    it = bd_oai_event_item(cv, bd_oai_event_str(ev, "item_id"),
                           VOICE_PROTO_ROLE_USER);

    if (it == NULL || (it->flags & BD_OAI_EVENT_SETTLED)) {
        return;
    }

    message = bd_oai_event_str(cJSON_GetObjectItemCaseSensitive(ev, "error"),
                               "message");

    bd_log(BD_LOG_INFO, cv->sid, "transcription of %s failed: %s", it->id,
           message ? message : "(no message)");

    bd_oai_event_settle(cv, it);
}


/*
 * The one transition of the response's cycle (bd_oai_event.h draws it):
 * every step is defined from every state, as events may come late or out
 * of turn (a response.done after a new session's, a transcript of an old
 * item), so there is nothing to refuse; a change is logged.
 */

void
bd_oai_event_response(bd_oai_event_conv_t *cv, bd_oai_event_step_e step)
{
    bd_oai_event_resp_e  to;

    static const char  *names[] = {
        "idle", "asked", "generating", "finishing"
    };

    static const bd_oai_event_resp_e  next[BD_OAI_EVENT_STEPS][4] = {

        /* from IDLE, ASKED, GENERATING, FINISHING */

        /* ask */     { BD_OAI_EVENT_RESP_ASKED, BD_OAI_EVENT_RESP_ASKED,
                        BD_OAI_EVENT_RESP_GENERATING,
                        BD_OAI_EVENT_RESP_GENERATING },
        /* drop */    { BD_OAI_EVENT_RESP_IDLE, BD_OAI_EVENT_RESP_IDLE,
                        BD_OAI_EVENT_RESP_FINISHING,
                        BD_OAI_EVENT_RESP_FINISHING },
        /* created */ { BD_OAI_EVENT_RESP_GENERATING,
                        BD_OAI_EVENT_RESP_GENERATING,
                        BD_OAI_EVENT_RESP_GENERATING,
                        BD_OAI_EVENT_RESP_GENERATING },
        /* done */    { BD_OAI_EVENT_RESP_IDLE, BD_OAI_EVENT_RESP_IDLE,
                        BD_OAI_EVENT_RESP_IDLE, BD_OAI_EVENT_RESP_IDLE }
    };

    to = next[step][cv->response];

    if (to != cv->response) {
        bd_log(BD_LOG_DEBUG, cv->sid, "response: %s -> %s",
               names[cv->response], names[to]);
        cv->response = to;
    }
}


/*
 * The one transition of the caller's turn (bd_oai_event.h draws it).
 * Each of the three may follow each other one, as the VAD's events of a
 * lost session may come after a new one's, so nothing is refused; the
 * callers say which step SILENT ends (SPEAKING or ANSWERING).
 */

void
bd_oai_event_turn(bd_oai_event_conv_t *cv, bd_oai_event_turn_e turn)
{
    static const char  *names[] = { "silent", "speaking", "answering" };

    if (turn == cv->turn) {
        return;
    }

    bd_log(BD_LOG_DEBUG, cv->sid, "caller's turn: %s -> %s",
           names[cv->turn], names[turn]);

    cv->turn = turn;
}


static void
bd_oai_event_response_created(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    bd_oai_event_response(cv, BD_OAI_EVENT_STEP_CREATED);

    bd_oai_event_set_id(cv->response_id,
        bd_oai_event_str(cJSON_GetObjectItemCaseSensitive(ev, "response"),
                         "id"));
}


/* records the mark just sent after the item's audio */

static void
bd_oai_event_mark_sent(bd_oai_event_conv_t *cv, bd_oai_event_item_t *it)
{
    bd_oai_event_mark_t  *m;

    if (cv->marks_len == BD_OAI_EVENT_MARKS) {

        /* the oldest mark's echo is overdue: a later one covers it */

        cv->marks_head = (cv->marks_head + 1) % BD_OAI_EVENT_MARKS;
        cv->marks_len--;
    }

    m = &cv->marks[(cv->marks_head + cv->marks_len) % BD_OAI_EVENT_MARKS];
    cv->marks_len++;

    m->seq = cv->mark_seq;
    m->order = it->order;
    m->sent = it->sent;

    it->marked = it->sent;

    if (cv->unmarked_order == it->order) {
        cv->unmarked_order = 0;
    }
}


static void
bd_oai_event_mark_name(bd_oai_event_conv_t *cv, bd_oai_event_item_t *it,
    char *name, size_t size)
{
    cv->mark_seq++;
    snprintf(name, size, "%u-%u", (unsigned) it->order,
             (unsigned) cv->mark_seq);
}


static void
bd_oai_event_audio_delta(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    const char  *delta;

    delta = bd_oai_event_str(ev, "delta");
    if (delta == NULL) {
        return;
    }

    bd_oai_event_audio(cv, bd_oai_event_str(ev, "item_id"),
                       bd_oai_event_str(ev, "response_id"),
                       delta, strlen(delta));
}


/*
 * The frame-rate event without a cJSON tree (common/voice_json.c): returns
 * 1 when it was one and has been handled, 0 when the event must be parsed
 * in full: another type, text the tokenizer refuses or that has more
 * members than OpenAI sends, or an escape in a name or in a member read
 * here.  Escapes go to cJSON because cJSON ends a name at an escaped NUL,
 * and the two readers must never see different members (the fuzz target
 * tests/fuzz/fuzz_json_cjson.c checks that they do not).
 */

static int
bd_oai_event_flat_delta(bd_oai_event_conv_t *cv, const char *json,
    size_t len)
{
    int                n, i, m[4];
    char               item[BD_OAI_EVENT_ID_MAX], resp[BD_OAI_EVENT_ID_MAX];
    const uint8_t     *text;
    voice_json_tok_t   toks[BD_OAI_EVENT_DELTA_TOKS];

    static const char  type[] = "response.output_audio.delta";
    static const char *names[4] = { "type", "item_id", "response_id",
                                    "delta" };

    text = (const uint8_t *) json;

    n = voice_json_parse(text, len, toks, BD_OAI_EVENT_DELTA_TOKS, NULL);

    if (n < 1 || !voice_json_names_plain(toks, 0)) {
        return 0;
    }

    for (i = 0; i < 4; i++) {
        m[i] = voice_json_get(text, toks, 0, names[i]);

        if (m[i] >= 0 && toks[m[i]].type != VOICE_JSON_STRING) {
            m[i] = -1;

        } else if (m[i] >= 0 && toks[m[i]].escaped) {
            return 0;
        }
    }

    if (m[0] < 0 || !voice_json_str_eq(text, toks, m[0], type)
        || m[1] < 0 || toks[m[1]].end - toks[m[1]].start >= sizeof(item)
        || m[3] < 0
        || (m[2] >= 0 && toks[m[2]].end - toks[m[2]].start >= sizeof(resp)))
    {
        return 0;
    }

    i = (int) (toks[m[1]].end - toks[m[1]].start);
    memcpy(item, json + toks[m[1]].start, i);
    item[i] = '\0';

    if (m[2] >= 0) {
        i = (int) (toks[m[2]].end - toks[m[2]].start);
        memcpy(resp, json + toks[m[2]].start, i);
        resp[i] = '\0';
    }

    bd_oai_event_audio(cv, item, (m[2] >= 0) ? resp : NULL,
                       json + toks[m[3]].start,
                       toks[m[3]].end - toks[m[3]].start);
    cv->deltas_flat++;

    return 1;
}


static void
bd_oai_event_audio(bd_oai_event_conv_t *cv, const char *item_id,
    const char *response, const char *delta, size_t len)
{
    int                   last, mark, marked;
    long                  n, bytes;
    char                  name[32];
    size_t                off, chunk;
    bd_oai_event_item_t  *it;

    /* the bytes it decodes to */

    bytes = (long) voice_b64_decoded_len(delta, len);

    it = bd_oai_event_item(cv, item_id, VOICE_PROTO_ROLE_ASSISTANT);

    if (it == NULL
        || (it->flags & BD_OAI_EVENT_TRUNCATED)
        || (response != NULL && cv->dropped_id[0] != '\0'
            && strcmp(response, cv->dropped_id) == 0))
    {
        cv->audio_dropped += (uint64_t) bytes;
        return;
    }

    /*
     * The delta's last piece may carry a mark that tells when it has
     * played (one message to nginx, one write to Twilio).  Every mark
     * costs an echo from Twilio and a message each way between nginx and
     * bridged, so there is one per BD_OAI_EVENT_MARK_GAP of audio, and
     * one at the end of the item's audio (bd_oai_event_audio_done()).
     * What played is then known to within that gap, which is what a
     * barge-in truncates at; audio sent after the last mark is
     * remembered (unmarked_order), so a barge-in stops it too.
     */

    mark = (it->sent + (uint64_t) bytes - it->marked
            >= BD_OAI_EVENT_MARK_GAP);

    if (mark) {
        bd_oai_event_mark_name(cv, it, name, sizeof(name));
    }

    marked = 0;
    chunk = BD_OAI_EVENT_PIECE / 3 * 4;

    for (off = 0; off < len; off += chunk) {
        last = (len - off <= chunk);
        n = voice_b64_decode(bd_oai_event_piece, sizeof(bd_oai_event_piece),
                             delta + off, last ? len - off : chunk);

        if (n < 0) {
            bd_log(BD_LOG_INFO, cv->sid,
                   "audio delta of %s is not base64: rest dropped", it->id);
            break;
        }

        it->received += (uint64_t) n;

        if (cv->ops->audio_out(cv->data, bd_oai_event_piece, (size_t) n,
                               (last && mark) ? name : NULL))
        {
            /* the first the caller hears after speaking: the turn's
             * latency */
            if (cv->turn == BD_OAI_EVENT_TURN_ANSWERING && n > 0) {
                bd_oai_event_turn(cv, BD_OAI_EVENT_TURN_SILENT);
                it->latency = (uint32_t) (cv->ops->clock(cv->data, NULL)
                                          - cv->turn_end);
            }

            it->sent += (uint64_t) n;
            cv->audio_sent += (uint64_t) n;
            marked = last && mark;

            if (it->sent != it->marked) {
                cv->unmarked_order = it->order;
            }

        } else {
            cv->audio_lost += (uint64_t) n;
        }
    }

    if (marked) {
        bd_oai_event_mark_sent(cv, it);
    }
}


/* the item's audio is complete: a mark after its last bytes, if they
 * have none yet, so that the end of a reply is known to have played */

static void
bd_oai_event_audio_done(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    char                  name[32];
    const char           *id;
    unsigned              i;
    bd_oai_event_item_t  *it;

    id = bd_oai_event_str(ev, "item_id");
    if (id == NULL) {
        return;
    }

    for (i = cv->items_len; i-- > 0; /* void */) {
        it = &cv->items[(cv->items_head + i) % BD_OAI_EVENT_ITEMS];

        if (strcmp(it->id, id) != 0) {
            continue;
        }

        it->flags |= BD_OAI_EVENT_AUDIO_DONE;

        if (it->sent == it->marked || (it->flags & BD_OAI_EVENT_TRUNCATED)) {
            bd_oai_event_heard(cv, it, 0);
            return;
        }

        bd_oai_event_mark_name(cv, it, name, sizeof(name));

        if (cv->ops->audio_out(cv->data, NULL, 0, name)) {
            bd_oai_event_mark_sent(cv, it);
        }

        return;
    }
}


static void
bd_oai_event_transcript_done(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    size_t                len;
    const char           *text;
    bd_oai_event_item_t  *it;

    bd_oai_event_response(cv, BD_OAI_EVENT_STEP_DROP);

    it = bd_oai_event_item(cv, bd_oai_event_str(ev, "item_id"),
                           VOICE_PROTO_ROLE_ASSISTANT);

    if (it == NULL || (it->flags & BD_OAI_EVENT_SETTLED)) {
        return;
    }

    it->flags |= BD_OAI_EVENT_SETTLED;

    text = bd_oai_event_str(ev, "transcript");
    if (text == NULL || text[0] == '\0') {
        return;
    }

    len = strlen(text);
    if (len > VOICE_PROTO_MAX_TEXT) {
        len = VOICE_PROTO_MAX_TEXT;
    }

    /* held until what of it played is known (bd_oai_event_heard()) */

    it->text = malloc(len + 1);

    if (it->text == NULL) {
        bd_log(BD_LOG_WARN, cv->sid, "no memory to hold a reply's text: "
               "it is recorded as generated");
        bd_oai_event_transcript(cv, it, VOICE_PROTO_ROLE_ASSISTANT, text);
        return;
    }

    memcpy(it->text, text, len);
    it->text[len] = '\0';
    it->text_len = len;

    bd_oai_event_heard(cv, it, 0);
}


/*
 * How much of a text the played share of its audio covers: back to the
 * end of the last word that fits (UTF-8 stays whole: a space is ASCII).
 */

static size_t
bd_oai_event_cut(const char *text, size_t len, uint64_t played,
    uint64_t received)
{
    size_t  n;

    if (played >= received) {
        return len;
    }

    n = (size_t) ((uint64_t) len * played / received);

    /* inside a word: back to its start */
    while (n > 0 && text[n] != ' ' && text[n] != '\n' && text[n] != '\t') {
        n--;
    }

    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\n'
                     || text[n - 1] == '\t'))
    {
        n--;
    }

    return n;
}


/*
 * A held transcript goes to the record once its fate is known: all its
 * audio played (its last mark came back), or it was cut -- a barge-in
 * truncated it, the caller left, or force (the session or the item's
 * slot ends).  A reply with no audio at all is recorded whole.
 */

static void
bd_oai_event_heard(bd_oai_event_conv_t *cv, bd_oai_event_item_t *it,
    int force)
{
    int                  cut, whole;
    size_t               n;
    bd_oai_event_said_t  said;

    if (it->text == NULL) {
        return;
    }

    cut = (it->flags & BD_OAI_EVENT_TRUNCATED) || force || cv->stopped;
    whole = it->received == 0
            || ((it->flags & BD_OAI_EVENT_AUDIO_DONE)
                && it->played >= it->sent
                && !(it->flags & BD_OAI_EVENT_TRUNCATED));

    if (!cut && !whole) {
        return;     /* still playing */
    }

    n = whole ? it->text_len
              : bd_oai_event_cut(it->text, it->text_len, it->played,
                                 it->received);

    if (n < it->text_len) {
        bd_log(BD_LOG_INFO, cv->sid, "reply %s cut off after %llu of %llu "
               "ms: %zu of %zu bytes of its text heard", it->id,
               (unsigned long long) (it->played / 8),
               (unsigned long long) (it->received / 8), n, it->text_len);
    }

    said.order = it->order;
    said.role = VOICE_PROTO_ROLE_ASSISTANT;
    said.text = it->text;
    said.len = n;
    said.generated = (n < it->text_len) ? it->text : NULL;
    said.generated_len = (n < it->text_len) ? it->text_len : 0;
    said.latency_ms = it->latency;

    if (cv->ops->transcript(cv->data, &said)) {
        cv->transcripts++;
    }

    free(it->text);
    it->text = NULL;
    it->text_len = 0;
}


void
bd_oai_event_flush(bd_oai_event_conv_t *cv, int tell)
{
    unsigned              i;
    bd_oai_event_item_t  *it;

    for (i = 0; i < cv->items_len; i++) {
        it = &cv->items[(cv->items_head + i) % BD_OAI_EVENT_ITEMS];

        if (tell) {
            bd_oai_event_heard(cv, it, 1);
        }

        free(it->text);
        it->text = NULL;
    }
}


/* a count of tokens from usage, 0 when absent or not a count */

static uint32_t
bd_oai_event_tokens(const cJSON *obj, const char *name)
{
    const cJSON  *n;

    n = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (!cJSON_IsNumber(n) || n->valuedouble < 0
        || n->valuedouble > (double) UINT32_MAX)
    {
        return 0;
    }

    return (uint32_t) n->valuedouble;
}


/*
 * response.done's usage, by kind: input text and audio (of which some
 * cached), output text and audio.  What a response that was cancelled or
 * failed used is billed too, so every response counts.
 */

static void
bd_oai_event_usage(bd_oai_event_conv_t *cv, const cJSON *usage)
{
    const cJSON           *in, *out;
    bd_oai_event_usage_t   u;

    if (!cJSON_IsObject(usage)) {
        return;
    }

    in = cJSON_GetObjectItemCaseSensitive(usage, "input_token_details");
    out = cJSON_GetObjectItemCaseSensitive(usage, "output_token_details");

    u.input_text = bd_oai_event_tokens(in, "text_tokens");
    u.input_audio = bd_oai_event_tokens(in, "audio_tokens");
    u.input_cached = bd_oai_event_tokens(in, "cached_tokens");
    u.output_text = bd_oai_event_tokens(out, "text_tokens");
    u.output_audio = bd_oai_event_tokens(out, "audio_tokens");

    /* without details, the totals as text */
    if (!cJSON_IsObject(in)) {
        u.input_text = bd_oai_event_tokens(usage, "input_tokens");
    }

    if (!cJSON_IsObject(out)) {
        u.output_text = bd_oai_event_tokens(usage, "output_tokens");
    }

    cv->ops->usage(cv->data, &u);
}


static void
bd_oai_event_response_done(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    const char   *status, *code, *message;
    const cJSON  *response, *err;

    bd_oai_event_response(cv, BD_OAI_EVENT_STEP_DONE);

    /* a response.create refused while this one generated is asked again */

    if (cv->respond_due) {
        cv->respond_due = 0;
        bd_oai_event_respond(cv, NULL);
    }

    response = cJSON_GetObjectItemCaseSensitive(ev, "response");
    status = bd_oai_event_str(response, "status");

    bd_oai_event_usage(cv, cJSON_GetObjectItemCaseSensitive(response,
                                                            "usage"));

    if (status == NULL || strcmp(status, "failed") != 0) {
        bd_log(BD_LOG_DEBUG, cv->sid, "response done: %s",
               status ? status : "(no status)");
        cv->ops->response_done(cv->data);
        return;
    }

    err = cJSON_GetObjectItemCaseSensitive(
              cJSON_GetObjectItemCaseSensitive(response, "status_details"),
              "error");

    code = bd_oai_event_str(err, "code");
    message = bd_oai_event_str(err, "message");

    bd_log(BD_LOG_WARN, cv->sid, "OpenAI response failed: %s %s",
           code ? code : "(no code)", message ? message : "");

    cv->ops->response_done(cv->data);
}


/*
 * An output item is complete.  A function call is run only when its item
 * completed: one cut short by a barge-in or a cancel comes with partial
 * arguments and status "incomplete" (docs/protocols.md, Realtime acting §2.2).
 * An MCP call OpenAI ran itself is only recorded.
 */

static void
bd_oai_event_item_done(bd_oai_event_conv_t *cv, const cJSON *ev)
{
    const char           *type, *status, *call_id, *name, *args, *out;
    const char           *label;
    char                  full[160], *compact;
    cJSON                *parsed;
    const cJSON          *item;
    bd_oai_event_item_t  *it;

    item = cJSON_GetObjectItemCaseSensitive(ev, "item");
    type = bd_oai_event_str(item, "type");

    if (type == NULL) {
        return;
    }

    if (strcmp(type, "function_call") == 0) {
        status = bd_oai_event_str(item, "status");
        call_id = bd_oai_event_str(item, "call_id");
        name = bd_oai_event_str(item, "name");
        args = bd_oai_event_str(item, "arguments");

        if (status == NULL || strcmp(status, "completed") != 0) {
            bd_log(BD_LOG_INFO, cv->sid, "function call %s cut short (%s): "
                   "not run", name ? name : "(no name)",
                   status ? status : "no status");
            return;
        }

        if (!bd_oai_event_id_ok(call_id) || name == NULL || name[0] == '\0'
            || strlen(name) > 64)
        {
            bd_log(BD_LOG_INFO, cv->sid, "malformed function call ignored");
            return;
        }

        it = bd_oai_event_item(cv, bd_oai_event_str(item, "id"),
                               VOICE_PROTO_ROLE_TOOL);

        cv->ops->tool_call(cv->data, it ? it->order : cv->next_order++,
                           call_id, name, args ? args : "{}");
        return;
    }

    if (strcmp(type, "mcp_call") == 0) {
        label = bd_oai_event_str(item, "server_label");
        name = bd_oai_event_str(item, "name");
        args = bd_oai_event_str(item, "arguments");
        out = bd_oai_event_str(item, "output");

        if (out == NULL) {
            out = bd_oai_event_str(cJSON_GetObjectItemCaseSensitive(item,
                                                                  "error"),
                                   "message");
        }

        if (name == NULL) {
            return;
        }

        snprintf(full, sizeof(full), "%.64s.%.64s", label ? label : "mcp",
                 name);

        it = bd_oai_event_item(cv, bd_oai_event_str(item, "id"),
                               VOICE_PROTO_ROLE_TOOL);

        /* compact, as bd_tool.c makes a function call's: the model may
         * indent them, and nginx journals an entry as one line */

        parsed = (args != NULL) ? cJSON_Parse(args) : NULL;
        compact = cJSON_IsObject(parsed) ? cJSON_PrintUnformatted(parsed)
                                         : NULL;
        cJSON_Delete(parsed);

        cv->ops->mcp_call(cv->data, it ? it->order : cv->next_order++, full,
                          compact ? compact : (args ? args : "{}"),
                          out ? out : "");
        cJSON_free(compact);
    }
}


void
bd_oai_event_mark_ack(bd_oai_event_conv_t *cv, const char *name, size_t len)
{
    size_t                i;
    uint32_t              seq;
    unsigned              j, k;
    bd_oai_event_item_t  *it;
    bd_oai_event_mark_t  *m;

    /* names are "<item order>-<seq>"; the seq alone is unique */

    for (i = 0; i < len && name[i] != '-'; i++) {
        /* void */
    }

    if (i + 1 >= len || len - i > 11) {
        return;
    }

    seq = 0;

    for (i++; i < len; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return;
        }

        seq = seq * 10 + (uint32_t) (name[i] - '0');
    }

    for (k = 0; k < cv->marks_len; k++) {
        m = &cv->marks[(cv->marks_head + k) % BD_OAI_EVENT_MARKS];

        if (m->seq != seq) {
            continue;
        }

        /* Twilio echoes in order: the marks before this one are played */

        for (j = 0; j <= k; j++) {
            m = &cv->marks[(cv->marks_head + j) % BD_OAI_EVENT_MARKS];

            it = bd_oai_event_item_by_order(cv, m->order);
            if (it != NULL && m->sent > it->played) {
                it->played = m->sent;
                bd_oai_event_heard(cv, it, 0);
            }
        }

        cv->marks_head = (cv->marks_head + k + 1) % BD_OAI_EVENT_MARKS;
        cv->marks_len -= k + 1;

        return;
    }

    /* not found: a mark from before a clear, or from a lost session */
}


void
bd_oai_event_stop(bd_oai_event_conv_t *cv)
{
    static const char  commit[] =
        "{\"type\":\"input_audio_buffer.commit\",\"event_id\":\"bd-commit\"}";
    static const char  cancel[] =
        "{\"type\":\"response.cancel\",\"event_id\":\"bd-stop-cancel\"}";

    /* what played of the replies is all the caller heard */

    cv->stopped = 1;
    bd_oai_event_flush(cv, 1);

    if (!cv->ready) {
        return;
    }

    /*
     * Nobody hears a reply still generating: it is cancelled, so that the
     * session can close as soon as the transcriptions are in rather than
     * when the reply would have ended (its response.done still comes).
     */

    if (cv->response != BD_OAI_EVENT_RESP_IDLE) {
        cv->ops->send(cv->data, cancel, sizeof(cancel) - 1);
    }

    if (cv->turn != BD_OAI_EVENT_TURN_SPEAKING) {
        return;
    }

    /*
     * The caller hung up mid-utterance: no more audio means the VAD never
     * hears the silence that would end it, so commit it ourselves and let
     * the transcription of those last words come in.
     */

    bd_oai_event_turn(cv, BD_OAI_EVENT_TURN_SILENT);
    cv->committing = 1;
    cv->ops->send(cv->data, commit, sizeof(commit) - 1);
}


int
bd_oai_event_settled(bd_oai_event_conv_t *cv)
{
    return cv->pending == 0 && !bd_oai_event_responding(cv)
           && !cv->committing;
}


static char *
bd_oai_event_print(cJSON *root, int ok)
{
    char  *s;

    s = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);

    return s;
}


/*
 * The one builder of the text items bridged adds to the conversation (a
 * greeting's prompt, a key press, a system note, a resumed conversation's
 * history): a message item of role with one text part (output_text for
 * the assistant, input_text for the others, as OpenAI requires), and our
 * own id when id is not NULL.
 */

static int
bd_oai_event_message(bd_oai_event_conv_t *cv, const char *id,
    const char *event_id, const char *role, const char *text)
{
    int     ok;
    char   *json;
    cJSON  *root, *item, *content, *part;

    root = cJSON_CreateObject();
    if (root == NULL) {
        return -1;
    }

    ok = cJSON_AddStringToObject(root, "type", "conversation.item.create")
         != NULL;
    ok &= cJSON_AddStringToObject(root, "event_id", event_id) != NULL;

    item = cJSON_AddObjectToObject(root, "item");

    if (id != NULL) {
        ok &= cJSON_AddStringToObject(item, "id", id) != NULL;
    }

    ok &= cJSON_AddStringToObject(item, "type", "message") != NULL;
    ok &= cJSON_AddStringToObject(item, "role", role) != NULL;

    content = cJSON_AddArrayToObject(item, "content");
    part = cJSON_CreateObject();
    if (!cJSON_AddItemToArray(content, part)) {
        cJSON_Delete(part);
        part = NULL;
        ok = 0;
    }

    ok &= cJSON_AddStringToObject(part, "type",
                                  strcmp(role, "assistant") == 0
                                  ? "output_text" : "input_text") != NULL;
    ok &= cJSON_AddStringToObject(part, "text", text) != NULL;

    json = bd_oai_event_print(root, ok);
    if (json == NULL) {
        return -1;
    }

    cv->ops->send(cv->data, json, strlen(json));
    cJSON_free(json);

    return 0;
}


int
bd_oai_event_restore(bd_oai_event_conv_t *cv, const bd_history_t *h,
    const char *why)
{
    int                       n;
    char                      note[768], *text;
    size_t                    size;
    unsigned                  i;
    const char               *role;
    const bd_history_item_t  *it;

    n = snprintf(note, sizeof(note),
                 "This phone call goes on in a new session after a "
                 "technical interruption (%.200s); the caller may have "
                 "heard a short pause. The conversation so far follows",
                 why);

    if (h->dropped) {
        n += snprintf(note + n, sizeof(note) - n,
                      ", without its %u oldest turns", h->dropped);
    }

    snprintf(note + n, sizeof(note) - n,
             ". Carry on from where it stopped: do not greet the caller "
             "again and do not repeat what was already said.");

    if (bd_oai_event_message(cv, NULL, "bd-history", "system", note) != 0) {
        return -1;
    }

    /* tool results go back as text: a function_call item cannot be
     * created by a client, and an output without its call is refused */

    size = BD_HISTORY_ITEM_MAX + 64;
    text = malloc(size);
    if (text == NULL) {
        return -1;
    }

    for (i = 0; i < h->len; i++) {
        it = &h->items[i];

        switch (it->role) {

        case VOICE_PROTO_ROLE_ASSISTANT:
            role = "assistant";
            snprintf(text, size, "%s", it->text);
            break;

        case VOICE_PROTO_ROLE_TOOL:
            role = "system";
            snprintf(text, size, "Earlier in the call, the tool %s",
                     it->text);
            break;

        case VOICE_PROTO_ROLE_DTMF:
            role = "user";
            snprintf(text, size, "The caller pressed %s.", it->text);
            break;

        default:
            role = "user";
            snprintf(text, size, "%s", it->text);
            break;
        }

        if (bd_oai_event_message(cv, NULL, "bd-history", role, text) != 0) {
            free(text);
            return -1;
        }
    }

    free(text);

    return 0;
}


int
bd_oai_event_greet(bd_oai_event_conv_t *cv, const char *instruction)
{
    static const char  create[] =
        "{\"type\":\"response.create\",\"event_id\":\"bd-greet\"}";

    if (bd_oai_event_message(cv, NULL, "bd-greet-item", "user", instruction)
        != 0)
    {
        return -1;
    }

    bd_oai_event_response(cv, BD_OAI_EVENT_STEP_ASK);
    cv->ops->send(cv->data, create, sizeof(create) - 1);

    return 0;
}


int
bd_oai_event_dtmf(bd_oai_event_conv_t *cv, char digit)
{
    char                  id[32], text[64];
    bd_oai_event_said_t   said;
    bd_oai_event_item_t  *it;

    /*
     * The item's order is taken now, with an id of ours that OpenAI keeps:
     * the keypad entry sits in the record where the model saw it.
     */

    snprintf(id, sizeof(id), "item_bd_dtmf_%u", (unsigned) ++cv->dtmf_seq);
    snprintf(text, sizeof(text), "The caller pressed %c.", digit);

    it = bd_oai_event_item(cv, id, VOICE_PROTO_ROLE_DTMF);
    if (it == NULL) {
        return -1;
    }

    it->flags |= BD_OAI_EVENT_SETTLED;

    said.order = it->order;
    said.role = VOICE_PROTO_ROLE_DTMF;
    said.text = &digit;
    said.len = 1;
    said.generated = NULL;
    said.generated_len = 0;
    said.latency_ms = 0;

    if (cv->ops->transcript(cv->data, &said)) {
        cv->transcripts++;
    }

    if (bd_oai_event_message(cv, id, "bd-dtmf", "user", text) != 0) {
        return -1;
    }

    /* a response generating now was made before the key: one more after
     * it, so the key is always answered */

    if (cv->response == BD_OAI_EVENT_RESP_IDLE) {
        bd_oai_event_respond(cv, NULL);

    } else {
        cv->respond_due = 1;
    }

    return 0;
}


int
bd_oai_event_tool_output(bd_oai_event_conv_t *cv, const char *call_id,
    const char *output, int respond)
{
    int     ok;
    char   *json;
    cJSON  *root, *item;

    root = cJSON_CreateObject();
    if (root == NULL) {
        return -1;
    }

    ok = cJSON_AddStringToObject(root, "type", "conversation.item.create")
         != NULL;
    ok &= cJSON_AddStringToObject(root, "event_id", "bd-tool-output")
          != NULL;

    item = cJSON_AddObjectToObject(root, "item");
    ok &= cJSON_AddStringToObject(item, "type", "function_call_output")
          != NULL;
    ok &= cJSON_AddStringToObject(item, "call_id", call_id) != NULL;
    ok &= cJSON_AddStringToObject(item, "output", output) != NULL;

    json = bd_oai_event_print(root, ok);
    if (json == NULL) {
        return -1;
    }

    cv->ops->send(cv->data, json, strlen(json));
    cJSON_free(json);

    if (respond) {
        bd_oai_event_respond(cv, NULL);
    }

    return 0;
}


void
bd_oai_event_respond(bd_oai_event_conv_t *cv, const char *instructions)
{
    char   *json;
    cJSON  *root, *response;

    static const char  create[] =
        "{\"type\":\"response.create\",\"event_id\":\"bd-respond\"}";

    /*
     * Marked as generating at once: OpenAI refuses a second response.create
     * while one is active, and a function call's output, a key press and
     * a prompt may all want one in the same moment.
     */

    bd_oai_event_response(cv, BD_OAI_EVENT_STEP_ASK);

    if (instructions == NULL) {
        cv->ops->send(cv->data, create, sizeof(create) - 1);
        return;
    }

    root = cJSON_CreateObject();
    if (root == NULL) {
        return;
    }

    response = NULL;

    if (cJSON_AddStringToObject(root, "type", "response.create") != NULL
        && cJSON_AddStringToObject(root, "event_id", "bd-respond") != NULL)
    {
        response = cJSON_AddObjectToObject(root, "response");
    }

    json = bd_oai_event_print(root,
               response != NULL
               && cJSON_AddStringToObject(response, "instructions",
                                          instructions) != NULL);
    if (json == NULL) {
        cv->ops->send(cv->data, create, sizeof(create) - 1);
        return;
    }

    cv->ops->send(cv->data, json, strlen(json));
    cJSON_free(json);
}


int
bd_oai_event_system(bd_oai_event_conv_t *cv, const char *text)
{
    return bd_oai_event_message(cv, NULL, "bd-system", "system", text);
}


uint64_t
bd_oai_event_unplayed_ms(bd_oai_event_conv_t *cv)
{
    unsigned              i;
    uint64_t              bytes;
    bd_oai_event_item_t  *it;

    bytes = 0;

    for (i = 0; i < cv->items_len; i++) {
        it = &cv->items[(cv->items_head + i) % BD_OAI_EVENT_ITEMS];

        if (!(it->flags & BD_OAI_EVENT_TRUNCATED) && it->sent > it->played) {
            bytes += it->sent - it->played;
        }
    }

    /* mu-law at 8 kHz: 8 bytes per ms */
    return bytes / 8;
}


int
bd_oai_event_quiet(bd_oai_event_conv_t *cv)
{
    return cv->response == BD_OAI_EVENT_RESP_IDLE && cv->marks_len == 0
           && cv->unmarked_order == 0;
}


size_t
bd_oai_event_append(char *dst, size_t size, const uint8_t *audio, size_t len)
{
    char    *p;
    size_t   need;

    need = BD_OAI_EVENT_APPEND_SIZE(len);
    if (need > size) {
        return 0;
    }

    p = dst;

    memcpy(p, BD_OAI_EVENT_APPEND_HEAD, sizeof(BD_OAI_EVENT_APPEND_HEAD) - 1);
    p += sizeof(BD_OAI_EVENT_APPEND_HEAD) - 1;

    p += voice_b64_encode(p, audio, len);

    memcpy(p, BD_OAI_EVENT_APPEND_TAIL, sizeof(BD_OAI_EVENT_APPEND_TAIL) - 1);

    return need;
}
