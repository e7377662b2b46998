/*
 * fuzz_json_cjson.c: libFuzzer target of the shared JSON tokenizer
 * (common/voice_json.c), checked against cJSON, the way bridged reads
 * OpenAI's audio delta with it (bridged/bd_oai_event.c).
 *
 * The input is the text.  Whenever the tokenizer accepts an object none
 * of whose names holds an escape (bridged leaves the others to cJSON),
 * cJSON must parse it too, as an object, and every member the tokenizer
 * finds must be what cJSON has for that name: the same type, and for a
 * string without escapes the very same bytes (a member it does not find
 * must not be a string for cJSON).  bridged acts on the tokenizer's
 * reading without the full parse, so the two must never disagree.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "voice_json.h"


#define FUZZ_TOKS  512


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static voice_json_tok_t  fuzz_toks[FUZZ_TOKS];
static char              fuzz_name[1 << 16];


static int
fuzz_json_cjson_type(int type, const cJSON *item)
{
    switch (type) {

    case VOICE_JSON_OBJECT:
        return cJSON_IsObject(item);

    case VOICE_JSON_ARRAY:
        return cJSON_IsArray(item);

    case VOICE_JSON_STRING:
        return cJSON_IsString(item);

    case VOICE_JSON_NUMBER:
        return cJSON_IsNumber(item);

    case VOICE_JSON_TRUE:
        return cJSON_IsTrue(item);

    case VOICE_JSON_FALSE:
        return cJSON_IsFalse(item);

    default: /* VOICE_JSON_NULL */
        return cJSON_IsNull(item);
    }
}


static void
fuzz_json_cjson_member(const uint8_t *data, const cJSON *root,
    const char *name)
{
    int                      i;
    size_t                   len;
    const cJSON             *item;
    const voice_json_tok_t  *t;

    i = voice_json_get(data, fuzz_toks, 0, name);
    item = cJSON_GetObjectItemCaseSensitive(root, name);

    if (i < 0) {
        if (cJSON_IsString(item)) {
            abort();
        }

        return;
    }

    t = &fuzz_toks[i];

    if (!fuzz_json_cjson_type(t->type, item)) {
        abort();
    }

    if (t->type != VOICE_JSON_STRING || t->escaped) {
        return;
    }

    len = t->end - t->start;

    if (strlen(item->valuestring) != len
        || memcmp(item->valuestring, data + t->start, len) != 0)
    {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                      n, k;
    size_t                   len;
    cJSON                   *root;
    uint32_t                 j;
    const voice_json_tok_t  *t;

    n = voice_json_parse(data, size, fuzz_toks, FUZZ_TOKS, NULL);

    if (n < 1 || !voice_json_names_plain(fuzz_toks, 0)) {
        return 0;
    }

    root = cJSON_ParseWithLength((const char *) data, size);

    if (!cJSON_IsObject(root)) {
        abort();
    }

    /* the names bridged reads, one nobody sends, and every name there is */

    fuzz_json_cjson_member(data, root, "type");
    fuzz_json_cjson_member(data, root, "item_id");
    fuzz_json_cjson_member(data, root, "delta");
    fuzz_json_cjson_member(data, root, "");

    for (k = 1, j = 0; j < fuzz_toks[0].size; j++) {
        t = &fuzz_toks[k];
        len = t->end - t->start;

        if (len < sizeof(fuzz_name)) {
            memcpy(fuzz_name, data + t->start, len);
            fuzz_name[len] = '\0';
            fuzz_json_cjson_member(data, root, fuzz_name);
        }

        k = (int) fuzz_toks[k + 1].next;
    }

    cJSON_Delete(root);

    return 0;
}
