/*
 * fuzz_jscan.c: libFuzzer target of bridged's flat JSON scan
 * (bridged/bd_jscan.c), checked against cJSON.
 *
 * The input is the text.  Whenever the scan accepts it, cJSON must parse
 * it too, as an object, and every member the scan found must be the very
 * string cJSON has for that name (and a member the scan did not find must
 * not be a string for cJSON): the scan may decline anything, but what it
 * accepts must mean what the full parse means, since bridged acts on the
 * scan without the parse.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "bd_jscan.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t             i;
    cJSON             *root;
    const cJSON       *item;
    bd_jscan_field_t   f[4];

    f[0].name = "type";
    f[1].name = "item_id";
    f[2].name = "delta";
    f[3].name = "";

    if (bd_jscan_flat((const char *) data, size, f, 4) != 0) {
        return 0;
    }

    root = cJSON_ParseWithLength((const char *) data, size);

    if (!cJSON_IsObject(root)) {
        abort();
    }

    for (i = 0; i < 4; i++) {
        item = cJSON_GetObjectItemCaseSensitive(root, f[i].name);

        if (f[i].val == NULL) {
            if (cJSON_IsString(item)) {
                abort();
            }

            continue;
        }

        if (!cJSON_IsString(item)
            || strlen(item->valuestring) != f[i].len
            || memcmp(item->valuestring, f[i].val, f[i].len) != 0)
        {
            abort();
        }
    }

    cJSON_Delete(root);

    return 0;
}
