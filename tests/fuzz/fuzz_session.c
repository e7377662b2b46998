/*
 * fuzz_session.c: libFuzzer target of bridged's settings blob
 * (bridged/bd_session.c): what nginx sends with a stream start, parsed
 * and checked, then turned into OpenAI's session.update.
 *
 * Whatever the parse accepts must give a session.update that is a JSON
 * object of type "session.update" with a model, instructions and a tools
 * array; the lookups by name must not fail on any accepted blob.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "bd_session.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static const bd_session_defaults_t  fuzz_defaults = {
    "gpt-realtime-2.1", "marin", "Be helpful.", "gpt-transcribe"
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char               err[128], *json;
    cJSON              *s, *u, *session;
    const cJSON        *t;
    bd_session_live_t   live;

    s = bd_session_parse((const char *) data, size, err, sizeof(err));
    if (s == NULL) {
        if (err[0] == '\0') {
            abort();
        }

        return 0;
    }

    live.hold = size % 2;
    live.idle_ms = bd_session_server_idle(s);

    json = bd_session_update(s, &fuzz_defaults, &live);
    if (json == NULL) {
        abort();
    }

    u = cJSON_Parse(json);
    session = cJSON_GetObjectItemCaseSensitive(u, "session");

    if (!cJSON_IsObject(u)
        || strcmp(cJSON_GetObjectItemCaseSensitive(u, "type")->valuestring,
                  "session.update") != 0
        || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(session,
                                                            "model"))
        || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(session,
                                                        "instructions"))
        || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(session,
                                                           "tools")))
    {
        abort();
    }

    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(s, "tools")) {
        if (bd_session_tool(s, bd_session_str(t, "name")) == NULL) {
            abort();
        }
    }

    (void) bd_session_transfer(s, "x");
    (void) bd_session_end_call(s);

    cJSON_Delete(u);
    cJSON_free(json);
    cJSON_Delete(s);

    return 0;
}
