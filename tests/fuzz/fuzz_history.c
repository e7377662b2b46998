/*
 * fuzz_history.c: libFuzzer target of bridged's reader of nginx's HISTORY
 * (bd_history_load(), bridged/bd_history.c): the conversation a bridged
 * that takes over a call is handed, which it gives back to OpenAI.
 *
 * The input is the JSON, loaded twice on top of what is kept.  The store
 * must stay within its bounds in items and bytes, each item's text
 * NUL-terminated and cut within BD_HISTORY_ITEM_MAX, the items in order,
 * a refused document must keep nothing, and text that was valid UTF-8
 * must still be once cut.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bd_history.h"
#include "voice_ws.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void
fuzz_check(const bd_history_t *h, int utf8)
{
    size_t    bytes;
    unsigned  i;

    if (h->len > BD_HISTORY_ITEMS || h->bytes > BD_HISTORY_BYTES) {
        abort();
    }

    bytes = 0;

    for (i = 0; i < h->len; i++) {
        if (h->items[i].len > BD_HISTORY_ITEM_MAX
            || strlen(h->items[i].text) > h->items[i].len
            || h->items[i].text[h->items[i].len] != '\0'
            || (i > 0 && h->items[i - 1].order > h->items[i].order)
            || (utf8 && !voice_ws_utf8_valid(
                             (const uint8_t *) h->items[i].text,
                             strlen(h->items[i].text))))
        {
            abort();
        }

        bytes += h->items[i].len;
    }

    if (bytes != h->bytes) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int            rc, utf8;
    char          *json;
    bd_history_t   h;

    json = malloc(size ? size : 1);
    if (json == NULL) {
        abort();
    }

    memcpy(json, data, size);
    utf8 = voice_ws_utf8_valid(data, size);

    bd_history_init(&h);

    rc = bd_history_load(&h, json, size);
    if (rc != 0 && (h.len != 0 || h.dropped != 0)) {
        abort();
    }

    fuzz_check(&h, utf8);

    (void) bd_history_load(&h, json, size);
    fuzz_check(&h, utf8);

    bd_history_free(&h);
    free(json);

    return 0;
}
