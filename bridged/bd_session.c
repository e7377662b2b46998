/*
 * bd_session.c: the SETTINGS blob of a stream, checked, and the OpenAI
 * session.update it becomes.
 *
 * nginx writes the blob from the directives of the location that answered
 * the call's /twiml (ngx_http_voice_session.c); its shape is ours, not
 * OpenAI's (docs/proto.md), so that bridged alone knows the Realtime
 * interface and a new OpenAI field needs no change in nginx.  Settings
 * the blob leaves out take bridged's defaults.  The blob comes once per
 * stream, so it is parsed with cJSON (malloc), not with the per-frame
 * scan.
 *
 * Built-in tools: end_call is offered unless the location says
 * `voice_end_call off`; transfer_call when it names destinations
 * (`voice_transfer_to`), with their names as an enum, so the model can
 * only pick one of them.  HTTP tools carry the operator's description
 * and JSON Schema; MCP servers are handed to OpenAI, which calls them
 * itself, with approval never required (nobody is there to approve).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "bd_session.h"


#define BD_SESSION_TEXT_MAX      65536
#define BD_SESSION_LIST_MAX      64


static const char  *bd_session_efforts[] = {
    "minimal", "low", "medium", "high", "xhigh", NULL
};

static const char  *bd_session_noise[] = {
    "off", "near_field", "far_field", NULL
};

static const char  *bd_session_amd[] = {
    "off", "on", "wait", NULL
};

static const char  *bd_session_turns[] = {
    "server_vad", "semantic_vad", NULL
};

static const char  *bd_session_eagerness[] = {
    "auto", "low", "medium", "high", NULL
};

static const char  *bd_session_truncations[] = {
    "auto", "disabled", NULL
};


static const char  bd_session_end_description[] =
    "End the phone call. Call it only when the conversation is over: the "
    "caller has said goodbye or asked to hang up, or the task is done. Say "
    "a short goodbye first, in the same turn: the line is cut once your "
    "goodbye has been heard.";

static const char  bd_session_transfer_description[] =
    "Transfer the caller to a person. Tell the caller first that you are "
    "transferring them, in the same turn. Call it only when the caller "
    "asks for a person or you cannot help.";


const char *
bd_session_str(const cJSON *s, const char *key)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(s, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}


double
bd_session_num(const cJSON *s, const char *key, double def)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(s, key);

    return cJSON_IsNumber(v) ? v->valuedouble : def;
}


static int
bd_session_one_of(const char *v, const char **set)
{
    for ( /* void */ ; *set; set++) {
        if (strcmp(v, *set) == 0) {
            return 1;
        }
    }

    return 0;
}


/* the checks of bd_session_parse(): each returns NULL or the problem */

static const char *
bd_session_check_str(const cJSON *s, const char *key, size_t max,
    const char **set)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(s, key);

    if (v == NULL) {
        return NULL;
    }

    if (!cJSON_IsString(v) || strlen(v->valuestring) > max
        || (set != NULL && !bd_session_one_of(v->valuestring, set)))
    {
        return key;
    }

    return NULL;
}


static const char *
bd_session_check_num(const cJSON *s, const char *key, double min, double max)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(s, key);

    if (v == NULL) {
        return NULL;
    }

    if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max) {
        return key;
    }

    return NULL;
}


static const char *
bd_session_check_name(const cJSON *o, const char *key)
{
    size_t       i;
    const char  *n;

    n = bd_session_str(o, key);

    if (n == NULL || n[0] == '\0' || strlen(n) > 64) {
        return key;
    }

    for (i = 0; n[i]; i++) {
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z')
              || (n[i] >= '0' && n[i] <= '9') || n[i] == '_' || n[i] == '-'))
        {
            return key;
        }
    }

    return NULL;
}


static const char *
bd_session_check_list(const cJSON *s, const char *key)
{
    int           n;
    const char   *bad;
    const cJSON  *list, *o, *schema, *allowed, *a;

    list = cJSON_GetObjectItemCaseSensitive(s, key);

    if (list == NULL) {
        return NULL;
    }

    if (!cJSON_IsArray(list)) {
        return key;
    }

    n = 0;

    cJSON_ArrayForEach(o, list) {
        if (!cJSON_IsObject(o) || ++n > BD_SESSION_LIST_MAX) {
            return key;
        }

        if (strcmp(key, "tools") == 0) {
            schema = cJSON_GetObjectItemCaseSensitive(o, "schema");

            if ((bad = bd_session_check_name(o, "name"))
                || (bad = bd_session_check_str(o, "url", 4096, NULL))
                || bd_session_str(o, "url") == NULL
                || (bad = bd_session_check_num(o, "timeoutMs", 1, 60000))
                || bd_session_str(schema, "description") == NULL
                || !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(schema,
                                                             "parameters")))
            {
                return "tools";
            }

        } else if (strcmp(key, "transfer") == 0) {
            if (bd_session_check_name(o, "name")
                || bd_session_check_str(o, "to", 256, NULL)
                || bd_session_str(o, "to") == NULL)
            {
                return "transfer";
            }

        } else { /* mcp */
            if (bd_session_check_name(o, "label")
                || bd_session_check_str(o, "url", 4096, NULL)
                || bd_session_str(o, "url") == NULL
                || bd_session_check_str(o, "authorization", 4096, NULL))
            {
                return "mcp";
            }

            allowed = cJSON_GetObjectItemCaseSensitive(o, "allowed");

            if (allowed != NULL) {
                if (!cJSON_IsArray(allowed)) {
                    return "mcp";
                }

                cJSON_ArrayForEach(a, allowed) {
                    if (!cJSON_IsString(a)) {
                        return "mcp";
                    }
                }
            }
        }
    }

    return NULL;
}


cJSON *
bd_session_parse(const char *json, size_t len, char *err, size_t size)
{
    int           tokens;
    cJSON        *s;
    const char   *bad;
    const cJSON  *v, *turn;

    s = cJSON_ParseWithLength(json, len);

    if (!cJSON_IsObject(s)) {
        snprintf(err, size, "the settings are not a JSON object");
        cJSON_Delete(s);
        return NULL;
    }

    turn = cJSON_GetObjectItemCaseSensitive(s, "turnDetection");

    if ((bad = bd_session_check_str(s, "model", 128, NULL))
        || (bad = bd_session_check_str(s, "voice", 128, NULL))
        || (bad = bd_session_check_str(s, "instructions", BD_SESSION_TEXT_MAX,
                                       NULL))
        || (bad = bd_session_check_str(s, "greeting", BD_SESSION_TEXT_MAX,
                                       NULL))
        || (bad = bd_session_check_str(s, "transcribeModel", 128, NULL))
        || (bad = bd_session_check_str(s, "transcribeLanguage", 16, NULL))
        || (bad = bd_session_check_str(s, "transcribePrompt", 4096, NULL))
        || (bad = bd_session_check_str(s, "reasoningEffort", 16,
                                       bd_session_efforts))
        || (bad = bd_session_check_str(s, "noiseReduction", 16,
                                       bd_session_noise))
        || (bad = bd_session_check_str(s, "machineDetection", 8,
                                       bd_session_amd))
        || (bad = bd_session_check_str(s, "voicemailMessage",
                                       BD_SESSION_TEXT_MAX, NULL))
        || (bad = bd_session_check_str(s, "toolSecret", 4096, NULL))
        || (bad = bd_session_check_str(s, "twimlUrl", 4096, NULL))
        || (bad = bd_session_check_str(s, "sealedContext", 4096, NULL))
        || (bad = bd_session_check_num(s, "speed", 0.25, 1.5))
        || (bad = bd_session_check_num(s, "idleTimeoutMs", 0, 86400000))
        || (bad = bd_session_check_num(s, "idlePrompts", 0, 10))
        || (bad = bd_session_check_num(s, "maxDurationMs", 0, 86400000))
        || (bad = bd_session_check_list(s, "tools"))
        || (bad = bd_session_check_list(s, "transfer"))
        || (bad = bd_session_check_list(s, "mcp")))
    {
        goto invalid;
    }

    if (turn != NULL
        && (!cJSON_IsObject(turn)
            || bd_session_str(turn, "type") == NULL
            || bd_session_check_str(turn, "type", 16, bd_session_turns)
            || bd_session_check_str(turn, "eagerness", 8,
                                    bd_session_eagerness)
            || bd_session_check_num(turn, "threshold", 0, 1)
            || bd_session_check_num(turn, "prefixMs", 0, 10000)
            || bd_session_check_num(turn, "silenceMs", 0, 10000)))
    {
        bad = "turnDetection";
        goto invalid;
    }

    v = cJSON_GetObjectItemCaseSensitive(s, "endCall");
    if (v != NULL && !cJSON_IsBool(v)) {
        bad = "endCall";
        goto invalid;
    }

    v = cJSON_GetObjectItemCaseSensitive(s, "maxOutputTokens");
    if (v != NULL) {
        tokens = cJSON_IsNumber(v) ? v->valueint : 0;

        if (!(cJSON_IsString(v) && strcmp(v->valuestring, "inf") == 0)
            && (tokens < 1 || tokens > 4096))
        {
            bad = "maxOutputTokens";
            goto invalid;
        }
    }

    v = cJSON_GetObjectItemCaseSensitive(s, "truncation");
    if (v != NULL
        && !(cJSON_IsString(v)
             && bd_session_one_of(v->valuestring, bd_session_truncations))
        && !(cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < 1))
    {
        bad = "truncation";
        goto invalid;
    }

    v = cJSON_GetObjectItemCaseSensitive(s, "context");
    if (v != NULL) {
        const cJSON  *c;

        if (!cJSON_IsObject(v)) {
            bad = "context";
            goto invalid;
        }

        cJSON_ArrayForEach(c, v) {
            if (!cJSON_IsString(c)) {
                bad = "context";
                goto invalid;
            }
        }
    }

    return s;

invalid:

    snprintf(err, size, "the setting \"%s\" is invalid", bad);
    cJSON_Delete(s);

    return NULL;
}


static const cJSON *
bd_session_find(const cJSON *s, const char *list, const char *key,
    const char *name)
{
    const cJSON  *o;

    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(s, list)) {
        if (strcmp(bd_session_str(o, key), name) == 0) {
            return o;
        }
    }

    return NULL;
}


const cJSON *
bd_session_tool(const cJSON *s, const char *name)
{
    return bd_session_find(s, "tools", "name", name);
}


const cJSON *
bd_session_transfer(const cJSON *s, const char *name)
{
    return bd_session_find(s, "transfer", "name", name);
}


int
bd_session_end_call(const cJSON *s)
{
    return !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(s, "endCall"));
}


const char *
bd_session_model(const cJSON *s, const bd_session_defaults_t *d)
{
    const char  *m;

    m = bd_session_str(s, "model");

    return (m != NULL && m[0] != '\0') ? m : d->model;
}


/* the models that take reasoning.effort (gpt-realtime-2 and later) */

static int
bd_session_reasoning_model(const char *model)
{
    return strncmp(model, "gpt-realtime-2", 14) == 0;
}


/* the instructions, with the call's context (from /api/call) after them */

static char *
bd_session_instructions(const cJSON *s, const bd_session_defaults_t *d)
{
    char         *out, *p;
    size_t        size;
    const char   *ins;
    const cJSON  *ctx, *c;

    static const char  head[] =
        "\n\nWhat is known about this call (from the operator):\n";

    ins = bd_session_str(s, "instructions");
    if (ins == NULL || ins[0] == '\0') {
        ins = d->instructions;
    }

    ctx = cJSON_GetObjectItemCaseSensitive(s, "context");

    size = strlen(ins) + sizeof(head);

    cJSON_ArrayForEach(c, ctx) {
        size += strlen(c->string) + strlen(c->valuestring) + 5;
    }

    out = malloc(size);
    if (out == NULL) {
        return NULL;
    }

    p = out + sprintf(out, "%s", ins);

    if (cJSON_GetArraySize(ctx) > 0) {
        p += sprintf(p, "%s", head);

        cJSON_ArrayForEach(c, ctx) {
            p += sprintf(p, "- %s: %s\n", c->string, c->valuestring);
        }
    }

    return out;
}


static int
bd_session_add_str(cJSON *o, const char *key, const char *v)
{
    return cJSON_AddStringToObject(o, key, v) != NULL;
}


static int
bd_session_add_item(cJSON *array, cJSON *item)
{
    if (item == NULL || !cJSON_AddItemToArray(array, item)) {
        cJSON_Delete(item);
        return 0;
    }

    return 1;
}


static int
bd_session_function(cJSON *tools, const char *name, const char *description,
    const cJSON *parameters)
{
    int     ok;
    cJSON  *t;

    t = cJSON_CreateObject();
    if (!bd_session_add_item(tools, t)) {
        return 0;
    }

    ok = bd_session_add_str(t, "type", "function");
    ok &= bd_session_add_str(t, "name", name);
    ok &= bd_session_add_str(t, "description", description);
    ok &= cJSON_AddItemToObject(t, "parameters",
                                cJSON_Duplicate(parameters, 1));

    return ok;
}


static int
bd_session_tools(cJSON *session, const cJSON *s)
{
    int           ok;
    cJSON        *tools, *params, *props, *p, *names, *t, *allowed;
    const cJSON  *o, *schema, *a;

    ok = 1;

    tools = cJSON_AddArrayToObject(session, "tools");
    if (tools == NULL) {
        return 0;
    }

    if (bd_session_end_call(s)) {
        params = cJSON_CreateObject();
        ok &= bd_session_add_str(params, "type", "object");
        props = cJSON_AddObjectToObject(params, "properties");
        p = cJSON_AddObjectToObject(props, "reason");
        ok &= bd_session_add_str(p, "type", "string");
        ok &= bd_session_add_str(p, "description",
                                 "Why the call ends, in a few words.");
        ok &= cJSON_AddArrayToObject(params, "required") != NULL;

        ok &= bd_session_function(tools, BD_SESSION_TOOL_END,
                                  bd_session_end_description, params);
        cJSON_Delete(params);
    }

    if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(s, "transfer"))
        > 0)
    {
        params = cJSON_CreateObject();
        ok &= bd_session_add_str(params, "type", "object");
        props = cJSON_AddObjectToObject(params, "properties");
        p = cJSON_AddObjectToObject(props, "destination");
        ok &= bd_session_add_str(p, "type", "string");
        ok &= bd_session_add_str(p, "description",
                                 "Who to transfer the caller to.");
        names = cJSON_AddArrayToObject(p, "enum");

        cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(s,
                                                               "transfer"))
        {
            ok &= bd_session_add_item(names,
                      cJSON_CreateString(bd_session_str(o, "name")));
        }

        p = cJSON_AddObjectToObject(props, "reason");
        ok &= bd_session_add_str(p, "type", "string");
        ok &= bd_session_add_str(p, "description",
                                 "Why the caller is transferred, for the "
                                 "person who answers.");
        names = cJSON_AddArrayToObject(params, "required");
        ok &= bd_session_add_item(names, cJSON_CreateString("destination"));

        ok &= bd_session_function(tools, BD_SESSION_TOOL_TRANSFER,
                                  bd_session_transfer_description, params);
        cJSON_Delete(params);
    }

    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(s, "tools")) {
        schema = cJSON_GetObjectItemCaseSensitive(o, "schema");

        ok &= bd_session_function(tools, bd_session_str(o, "name"),
                                  bd_session_str(schema, "description"),
                                  cJSON_GetObjectItemCaseSensitive(schema,
                                                                "parameters"));
    }

    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(s, "mcp")) {
        t = cJSON_CreateObject();
        if (!bd_session_add_item(tools, t)) {
            return 0;
        }

        ok &= bd_session_add_str(t, "type", "mcp");
        ok &= bd_session_add_str(t, "server_label", bd_session_str(o, "label"));
        ok &= bd_session_add_str(t, "server_url", bd_session_str(o, "url"));
        ok &= bd_session_add_str(t, "require_approval", "never");

        if (bd_session_str(o, "authorization") != NULL) {
            ok &= bd_session_add_str(t, "authorization",
                                     bd_session_str(o, "authorization"));
        }

        a = cJSON_GetObjectItemCaseSensitive(o, "allowed");

        if (a != NULL) {
            allowed = cJSON_Duplicate(a, 1);
            ok &= cJSON_AddItemToObject(t, "allowed_tools", allowed);
        }
    }

    ok &= bd_session_add_str(session, "tool_choice", "auto");

    return ok;
}


unsigned
bd_session_server_idle(const cJSON *s)
{
    double        ms;
    const char   *type;
    const cJSON  *turn;

    turn = cJSON_GetObjectItemCaseSensitive(s, "turnDetection");
    type = bd_session_str(turn, "type");
    ms = bd_session_num(s, "idleTimeoutMs", 0);

    /* OpenAI documents no bounds: these are the ones used in testing */

    if ((type != NULL && strcmp(type, "server_vad") != 0)
        || ms < 5000 || ms > 30000 || bd_session_num(s, "idlePrompts", 2) < 1)
    {
        return 0;
    }

    return (unsigned) ms;
}


static int
bd_session_turn(cJSON *input, const cJSON *s, const bd_session_live_t *live)
{
    int           ok, semantic;
    cJSON        *vad;
    const char   *type;
    const cJSON  *turn, *v;

    turn = cJSON_GetObjectItemCaseSensitive(s, "turnDetection");
    type = bd_session_str(turn, "type");
    semantic = (type != NULL && strcmp(type, "semantic_vad") == 0);

    vad = cJSON_AddObjectToObject(input, "turn_detection");

    ok = bd_session_add_str(vad, "type", semantic ? "semantic_vad"
                                                  : "server_vad");

    if (semantic) {
        v = cJSON_GetObjectItemCaseSensitive(turn, "eagerness");
        ok &= bd_session_add_str(vad, "eagerness",
                                 cJSON_IsString(v) ? v->valuestring : "auto");

    } else {
        ok &= cJSON_AddNumberToObject(vad, "threshold",
                                  bd_session_num(turn, "threshold", 0.5))
              != NULL;
        ok &= cJSON_AddNumberToObject(vad, "prefix_padding_ms",
                                  bd_session_num(turn, "prefixMs", 300))
              != NULL;
        ok &= cJSON_AddNumberToObject(vad, "silence_duration_ms",
                                  bd_session_num(turn, "silenceMs", 500))
              != NULL;

        if (live->idle_ms) {
            ok &= cJSON_AddNumberToObject(vad, "idle_timeout_ms",
                                          live->idle_ms)
                  != NULL;

        } else {
            ok &= cJSON_AddNullToObject(vad, "idle_timeout_ms") != NULL;
        }
    }

    ok &= cJSON_AddBoolToObject(vad, "create_response", !live->hold)
          != NULL;
    ok &= cJSON_AddBoolToObject(vad, "interrupt_response",
              !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(turn,
                                                              "interrupt")))
          != NULL;

    return ok;
}


const char *
bd_session_machine_detection(const cJSON *s)
{
    const char  *v;

    v = bd_session_str(s, "machineDetection");

    return v ? v : "off";
}


char *
bd_session_update(const cJSON *s, const bd_session_defaults_t *d,
    const bd_session_live_t *live)
{
    int           ok;
    char         *json, *instructions;
    cJSON        *root, *session, *modalities, *audio, *input, *output, *fmt;
    cJSON        *asr, *o;
    const char   *model, *v;
    const cJSON  *n;

    root = cJSON_CreateObject();
    if (root == NULL) {
        return NULL;
    }

    model = bd_session_model(s, d);

    ok = bd_session_add_str(root, "type", "session.update");
    ok &= bd_session_add_str(root, "event_id", BD_SESSION_EVENT_ID);

    session = cJSON_AddObjectToObject(root, "session");
    ok &= bd_session_add_str(session, "type", "realtime");
    ok &= bd_session_add_str(session, "model", model);

    modalities = cJSON_AddArrayToObject(session, "output_modalities");
    ok &= bd_session_add_item(modalities, cJSON_CreateString("audio"));

    instructions = bd_session_instructions(s, d);
    ok &= instructions != NULL
          && bd_session_add_str(session, "instructions", instructions);
    free(instructions);

    audio = cJSON_AddObjectToObject(session, "audio");
    input = cJSON_AddObjectToObject(audio, "input");

    fmt = cJSON_AddObjectToObject(input, "format");
    ok &= bd_session_add_str(fmt, "type", "audio/pcmu");

    asr = cJSON_AddObjectToObject(input, "transcription");
    v = bd_session_str(s, "transcribeModel");
    ok &= bd_session_add_str(asr, "model", (v && v[0]) ? v
                                                      : d->transcribe_model);

    if ((v = bd_session_str(s, "transcribeLanguage")) != NULL) {
        ok &= bd_session_add_str(asr, "language", v);
    }

    /* gpt-realtime-whisper takes no prompt in a Realtime session */

    if ((v = bd_session_str(s, "transcribePrompt")) != NULL
        && strcmp(cJSON_GetObjectItemCaseSensitive(asr, "model")->valuestring,
                  "gpt-realtime-whisper") != 0)
    {
        ok &= bd_session_add_str(asr, "prompt", v);
    }

    v = bd_session_str(s, "noiseReduction");

    if (v != NULL) {
        if (strcmp(v, "off") == 0) {
            ok &= cJSON_AddNullToObject(input, "noise_reduction") != NULL;

        } else {
            o = cJSON_AddObjectToObject(input, "noise_reduction");
            ok &= bd_session_add_str(o, "type", v);
        }
    }

    ok &= bd_session_turn(input, s, live);

    output = cJSON_AddObjectToObject(audio, "output");

    fmt = cJSON_AddObjectToObject(output, "format");
    ok &= bd_session_add_str(fmt, "type", "audio/pcmu");
    v = bd_session_str(s, "voice");
    ok &= bd_session_add_str(output, "voice", (v && v[0]) ? v : d->voice);

    if (cJSON_GetObjectItemCaseSensitive(s, "speed") != NULL) {
        ok &= cJSON_AddNumberToObject(output, "speed",
                                      bd_session_num(s, "speed", 1.0))
              != NULL;
    }

    /*
     * reasoning.effort: what the location says, or "low" (the phone wants
     * short latency), only on the models that reason: the others refuse
     * it
     */

    v = bd_session_str(s, "reasoningEffort");

    if (bd_session_reasoning_model(model)) {
        o = cJSON_AddObjectToObject(session, "reasoning");
        ok &= bd_session_add_str(o, "effort", v ? v : "low");
    }

    n = cJSON_GetObjectItemCaseSensitive(s, "maxOutputTokens");

    if (cJSON_IsString(n)) {
        ok &= bd_session_add_str(session, "max_output_tokens", "inf");

    } else if (cJSON_IsNumber(n)) {
        ok &= cJSON_AddNumberToObject(session, "max_output_tokens",
                                      n->valueint)
              != NULL;
    }

    n = cJSON_GetObjectItemCaseSensitive(s, "truncation");

    if (cJSON_IsString(n)) {
        ok &= bd_session_add_str(session, "truncation", n->valuestring);

    } else if (cJSON_IsNumber(n)) {
        o = cJSON_AddObjectToObject(session, "truncation");
        ok &= bd_session_add_str(o, "type", "retention_ratio");
        ok &= cJSON_AddNumberToObject(o, "retention_ratio", n->valuedouble)
              != NULL;
    }

    ok &= bd_session_tools(session, s);

    json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);

    return json;
}
