/*
 * test_bd_session.c: unit tests of bridged/bd_session.c: the SETTINGS
 * blob nginx sends (every field checked, bad ones refused by name) and
 * the GA session.update it becomes (defaults, turn detection, reasoning
 * only where the model takes it, built-in and HTTP tools, MCP servers,
 * the call's context after the instructions).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <cJSON.h>

#include "bd_session.h"


static const bd_session_defaults_t  defaults = {
    "gpt-realtime-2.1", "marin", "Be helpful.", "gpt-transcribe"
};


static cJSON *
parse(const char *json)
{
    char  err[128];

    return bd_session_parse(json, strlen(json), err, sizeof(err));
}


/* the session of the session.update for json, as a tree */
static cJSON *
update(const char *json, cJSON **root)
{
    char               *text;
    cJSON              *s;
    bd_session_live_t   live = { 0, 0 };

    s = parse(json);
    assert_non_null(s);

    text = bd_session_update(s, &defaults, &live);
    assert_non_null(text);

    /* GA only: no beta field may slip in */
    assert_null(strstr(text, "input_audio_format"));
    assert_null(strstr(text, "modalities\":[\"text"));

    *root = cJSON_Parse(text);
    assert_non_null(*root);

    cJSON_free(text);
    cJSON_Delete(s);

    assert_string_equal(cJSON_GetObjectItem(*root, "type")->valuestring,
                        "session.update");
    assert_string_equal(cJSON_GetObjectItem(*root, "event_id")->valuestring,
                        BD_SESSION_EVENT_ID);

    return cJSON_GetObjectItem(*root, "session");
}


static const cJSON *
path(const cJSON *o, const char *a, const char *b, const char *c)
{
    o = cJSON_GetObjectItem(o, a);
    if (b) {
        o = cJSON_GetObjectItem(o, b);
    }
    if (c) {
        o = cJSON_GetObjectItem(o, c);
    }
    return o;
}


static const cJSON *
tool(const cJSON *s, const char *name)
{
    const cJSON  *t;

    cJSON_ArrayForEach(t, cJSON_GetObjectItem(s, "tools")) {
        const cJSON  *n = cJSON_GetObjectItem(t, "name");

        if (n == NULL) {
            n = cJSON_GetObjectItem(t, "server_label");
        }

        if (strcmp(n->valuestring, name) == 0) {
            return t;
        }
    }

    return NULL;
}


static void
test_defaults(void **state)
{
    cJSON        *root;
    const cJSON  *s, *vad;

    (void) state;

    s = update("{}", &root);

    assert_string_equal(cJSON_GetObjectItem(s, "type")->valuestring,
                        "realtime");
    assert_string_equal(cJSON_GetObjectItem(s, "model")->valuestring,
                        "gpt-realtime-2.1");
    assert_string_equal(cJSON_GetObjectItem(s, "instructions")->valuestring,
                        "Be helpful.");
    assert_int_equal(
        cJSON_GetArraySize(cJSON_GetObjectItem(s, "output_modalities")), 1);
    assert_string_equal(path(s, "audio", "input", "format")->child
                        ->valuestring, "audio/pcmu");
    assert_string_equal(path(path(s, "audio", "input", "transcription"),
                             "model", NULL, NULL)->valuestring,
                        "gpt-transcribe");
    assert_string_equal(path(path(s, "audio", "output", NULL), "voice", NULL,
                             NULL)->valuestring, "marin");
    assert_string_equal(path(s, "audio", "output", "format")->child
                        ->valuestring, "audio/pcmu");

    vad = path(s, "audio", "input", "turn_detection");
    assert_string_equal(cJSON_GetObjectItem(vad, "type")->valuestring,
                        "server_vad");
    assert_true(cJSON_GetObjectItem(vad, "threshold")->valuedouble == 0.5);
    assert_int_equal(cJSON_GetObjectItem(vad, "silence_duration_ms")
                     ->valueint, 500);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(vad, "create_response")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(vad, "interrupt_response")));

    /* a reasoning model gets a low effort; end_call is on by default */
    assert_string_equal(path(s, "reasoning", "effort", NULL)->valuestring,
                        "low");
    assert_non_null(tool(s, BD_SESSION_TOOL_END));
    assert_null(tool(s, BD_SESSION_TOOL_TRANSFER));
    assert_string_equal(cJSON_GetObjectItem(s, "tool_choice")->valuestring,
                        "auto");

    /* what the location does not set is left to OpenAI */
    assert_null(cJSON_GetObjectItem(s, "max_output_tokens"));
    assert_null(cJSON_GetObjectItem(s, "truncation"));
    assert_null(path(s, "audio", "input", "noise_reduction"));
    assert_null(path(s, "audio", "output", "speed"));

    cJSON_Delete(root);
}


static void
test_every_setting(void **state)
{
    cJSON        *root;
    const cJSON  *s, *vad, *t, *p;

    (void) state;

    s = update("{\"model\":\"gpt-realtime-1.5\",\"voice\":\"cedar\","
               "\"instructions\":\"Sell.\",\"transcribeModel\":\"x-asr\","
               "\"transcribeLanguage\":\"fr\",\"transcribePrompt\":\"Acme\","
               "\"turnDetection\":{\"type\":\"semantic_vad\","
               "\"eagerness\":\"low\",\"interrupt\":false},"
               "\"noiseReduction\":\"far_field\",\"speed\":1.2,"
               "\"maxOutputTokens\":300,\"truncation\":0.75,"
               "\"endCall\":false,"
               "\"context\":{\"name\":\"Jane\",\"time\":\"7 pm\"}}", &root);

    assert_string_equal(cJSON_GetObjectItem(s, "model")->valuestring,
                        "gpt-realtime-1.5");
    assert_string_equal(cJSON_GetObjectItem(s, "instructions")->valuestring,
                        "Sell.\n\nWhat is known about this call (from the "
                        "operator):\n- name: Jane\n- time: 7 pm\n");

    /* 1.5 does not reason: no reasoning field at all */
    assert_null(cJSON_GetObjectItem(s, "reasoning"));

    p = path(s, "audio", "input", "transcription");
    assert_string_equal(cJSON_GetObjectItem(p, "model")->valuestring,
                        "x-asr");
    assert_string_equal(cJSON_GetObjectItem(p, "language")->valuestring,
                        "fr");
    assert_string_equal(cJSON_GetObjectItem(p, "prompt")->valuestring,
                        "Acme");
    assert_string_equal(path(s, "audio", "input", "noise_reduction")->child
                        ->valuestring, "far_field");
    assert_true(path(s, "audio", "output", "speed")->valuedouble == 1.2);

    vad = path(s, "audio", "input", "turn_detection");
    assert_string_equal(cJSON_GetObjectItem(vad, "type")->valuestring,
                        "semantic_vad");
    assert_string_equal(cJSON_GetObjectItem(vad, "eagerness")->valuestring,
                        "low");
    assert_null(cJSON_GetObjectItem(vad, "threshold"));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(vad,
                                                  "interrupt_response")));

    assert_int_equal(cJSON_GetObjectItem(s, "max_output_tokens")->valueint,
                     300);
    t = cJSON_GetObjectItem(s, "truncation");
    assert_string_equal(cJSON_GetObjectItem(t, "type")->valuestring,
                        "retention_ratio");
    assert_true(cJSON_GetObjectItem(t, "retention_ratio")->valuedouble
                == 0.75);

    assert_null(tool(s, BD_SESSION_TOOL_END));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "tools")), 0);

    cJSON_Delete(root);

    /* noise reduction off is an explicit null; inf tokens a string */

    s = update("{\"noiseReduction\":\"off\",\"maxOutputTokens\":\"inf\","
               "\"truncation\":\"disabled\",\"reasoningEffort\":\"high\"}",
               &root);
    assert_true(cJSON_IsNull(path(s, "audio", "input", "noise_reduction")));
    assert_string_equal(cJSON_GetObjectItem(s, "max_output_tokens")
                        ->valuestring, "inf");
    assert_string_equal(cJSON_GetObjectItem(s, "truncation")->valuestring,
                        "disabled");
    assert_string_equal(path(s, "reasoning", "effort", NULL)->valuestring,
                        "high");
    cJSON_Delete(root);
}


static void
test_tools(void **state)
{
    cJSON        *root, *set;
    const cJSON  *s, *t, *e;

    (void) state;

    s = update("{\"tools\":[{\"name\":\"lookup_order\","
               "\"url\":\"https://t.example/o\",\"timeoutMs\":3000,"
               "\"schema\":{\"description\":\"Find an order.\","
               "\"parameters\":{\"type\":\"object\",\"properties\":"
               "{\"n\":{\"type\":\"string\"}}}}}],\"toolSecret\":\"s\","
               "\"transfer\":[{\"name\":\"sales\",\"to\":\"+14155550100\"},"
               "{\"name\":\"desk\",\"to\":\"sip:desk@pbx.example\"}],"
               "\"mcp\":[{\"label\":\"kb\",\"url\":\"https://mcp.example\","
               "\"authorization\":\"Bearer x\",\"allowed\":[\"search\"]}]}",
               &root);

    t = tool(s, "lookup_order");
    assert_non_null(t);
    assert_string_equal(cJSON_GetObjectItem(t, "type")->valuestring,
                        "function");
    assert_string_equal(cJSON_GetObjectItem(t, "description")->valuestring,
                        "Find an order.");
    assert_string_equal(path(t, "parameters", "type", NULL)->valuestring,
                        "object");

    /* the URL and the secret stay in bridged */
    assert_null(cJSON_GetObjectItem(t, "url"));
    assert_null(cJSON_GetObjectItem(s, "toolSecret"));

    t = tool(s, BD_SESSION_TOOL_TRANSFER);
    assert_non_null(t);
    e = path(t, "parameters", "properties", "destination");
    e = cJSON_GetObjectItem(e, "enum");
    assert_int_equal(cJSON_GetArraySize(e), 2);
    assert_string_equal(cJSON_GetArrayItem(e, 0)->valuestring, "sales");
    assert_string_equal(cJSON_GetArrayItem(e, 1)->valuestring, "desk");

    t = tool(s, "kb");
    assert_string_equal(cJSON_GetObjectItem(t, "type")->valuestring, "mcp");
    assert_string_equal(cJSON_GetObjectItem(t, "server_url")->valuestring,
                        "https://mcp.example");
    assert_string_equal(cJSON_GetObjectItem(t, "require_approval")
                        ->valuestring, "never");
    assert_string_equal(cJSON_GetObjectItem(t, "authorization")->valuestring,
                        "Bearer x");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(t,
                            "allowed_tools"), 0)->valuestring, "search");

    cJSON_Delete(root);

    /* lookups by name */

    set = parse("{\"tools\":[{\"name\":\"a\",\"url\":\"http://x\","
                "\"schema\":{\"description\":\"d\",\"parameters\":{}}}],"
                "\"transfer\":[{\"name\":\"b\",\"to\":\"+14155550100\"}]}");
    assert_non_null(set);
    assert_non_null(bd_session_tool(set, "a"));
    assert_null(bd_session_tool(set, "b"));
    assert_string_equal(bd_session_str(bd_session_transfer(set, "b"), "to"),
                        "+14155550100");
    assert_null(bd_session_transfer(set, "a"));
    assert_true(bd_session_end_call(set));
    cJSON_Delete(set);
}


static void
test_refused(void **state)
{
    size_t       i;
    char         err[128];
    cJSON       *s;

    static const char  *bad[] = {
        "", "[]", "\"x\"", "{", "{\"model\":1}",
        "{\"reasoningEffort\":\"max\"}",
        "{\"noiseReduction\":\"loud\"}",
        "{\"speed\":3}",
        "{\"maxOutputTokens\":0}", "{\"maxOutputTokens\":\"lots\"}",
        "{\"truncation\":1.5}", "{\"truncation\":\"never\"}",
        "{\"endCall\":\"yes\"}",
        "{\"turnDetection\":{\"type\":\"push_to_talk\"}}",
        "{\"turnDetection\":{}}",
        "{\"turnDetection\":{\"type\":\"server_vad\",\"threshold\":2}}",
        "{\"context\":{\"n\":1}}", "{\"context\":[\"a\"]}",
        "{\"tools\":{}}",
        "{\"tools\":[{\"name\":\"a b\",\"url\":\"http://x\","
            "\"schema\":{\"description\":\"d\",\"parameters\":{}}}]}",
        "{\"tools\":[{\"name\":\"a\",\"schema\":{\"description\":\"d\","
            "\"parameters\":{}}}]}",
        "{\"tools\":[{\"name\":\"a\",\"url\":\"http://x\","
            "\"schema\":{\"parameters\":{}}}]}",
        "{\"tools\":[{\"name\":\"a\",\"url\":\"http://x\",\"timeoutMs\":0,"
            "\"schema\":{\"description\":\"d\",\"parameters\":{}}}]}",
        "{\"transfer\":[{\"name\":\"a\"}]}",
        "{\"mcp\":[{\"label\":\"a\",\"url\":\"http://x\",\"allowed\":[1]}]}",
        "{\"idlePrompts\":99}",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        s = bd_session_parse(bad[i], strlen(bad[i]), err, sizeof(err));

        if (s != NULL) {
            print_error("accepted: %s\n", bad[i]);
        }

        assert_null(s);
        assert_true(err[0] != '\0');
    }

    /* unknown keys are a newer nginx's: ignored */
    s = parse("{\"somethingNew\":[1,2]}");
    assert_non_null(s);
    cJSON_Delete(s);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_setting),
        cmocka_unit_test(test_tools),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
