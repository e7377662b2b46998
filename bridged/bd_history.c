/*
 * bd_history.c: the bounded conversation store of a call (bd_history.h).
 *
 * Items are few (tens) and arrive a few per minute, so an array kept in
 * order by insertion is the simplest thing that is fast enough; the text
 * of each is one allocation, made when the utterance is final, never per
 * audio frame.  nginx's HISTORY is read with cJSON, bridged's reader for
 * events that are not per frame.
 */

#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "bd_history.h"
#include "voice_proto.h"


void
bd_history_init(bd_history_t *h)
{
    memset(h, 0, sizeof(bd_history_t));
}


void
bd_history_free(bd_history_t *h)
{
    unsigned  i;

    for (i = 0; i < h->len; i++) {
        free(h->items[i].text);
    }

    bd_history_init(h);
}


static void
bd_history_drop_oldest(bd_history_t *h)
{
    h->bytes -= h->items[0].len;
    free(h->items[0].text);

    memmove(&h->items[0], &h->items[1],
            (h->len - 1) * sizeof(bd_history_item_t));
    h->len--;
    h->dropped++;
}


int
bd_history_add(bd_history_t *h, uint32_t order, uint32_t role,
    const char *text, size_t len)
{
    char      *copy;
    unsigned   i;

    if (len > BD_HISTORY_ITEM_MAX) {
        len = BD_HISTORY_ITEM_MAX;

        while (len > 0 && ((unsigned char) text[len] & 0xc0) == 0x80) {
            len--;
        }
    }

    copy = malloc(len + 1);
    if (copy == NULL) {
        h->dropped++;
        return -1;
    }

    memcpy(copy, text, len);
    copy[len] = '\0';

    while (h->len > 0
           && (h->len == BD_HISTORY_ITEMS
               || h->bytes + len > BD_HISTORY_BYTES))
    {
        bd_history_drop_oldest(h);
    }

    /* from the end: an item is nearly always the newest */

    i = h->len;

    while (i > 0 && h->items[i - 1].order > order) {
        i--;
    }

    memmove(&h->items[i + 1], &h->items[i],
            (h->len - i) * sizeof(bd_history_item_t));

    h->items[i].order = order;
    h->items[i].role = role;
    h->items[i].text = copy;
    h->items[i].len = len;

    h->len++;
    h->bytes += len;

    return 0;
}


static uint32_t
bd_history_role(const char *name)
{
    if (strcmp(name, "user") == 0) {
        return VOICE_PROTO_ROLE_USER;
    }

    if (strcmp(name, "assistant") == 0) {
        return VOICE_PROTO_ROLE_ASSISTANT;
    }

    if (strcmp(name, "tool") == 0) {
        return VOICE_PROTO_ROLE_TOOL;
    }

    if (strcmp(name, "dtmf") == 0) {
        return VOICE_PROTO_ROLE_DTMF;
    }

    return 0;
}


int
bd_history_load(bd_history_t *h, const char *json, size_t len)
{
    double         n;
    uint32_t       role;
    const cJSON   *items, *it, *order, *r, *text, *dropped;
    cJSON         *root;

    root = cJSON_ParseWithLength(json, len);
    if (root == NULL || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -1;
    }

    items = cJSON_GetObjectItemCaseSensitive(root, "items");
    dropped = cJSON_GetObjectItemCaseSensitive(root, "dropped");

    if (!cJSON_IsArray(items)
        || (dropped != NULL
            && (!cJSON_IsNumber(dropped) || dropped->valuedouble < 0
                || dropped->valuedouble > 1e9)))
    {
        cJSON_Delete(root);
        return -1;
    }

    /* the whole shape first, so that a bad one keeps nothing */

    cJSON_ArrayForEach(it, items) {
        order = cJSON_GetObjectItemCaseSensitive(it, "order");
        r = cJSON_GetObjectItemCaseSensitive(it, "role");
        text = cJSON_GetObjectItemCaseSensitive(it, "text");

        if (!cJSON_IsNumber(order) || order->valuedouble < 0
            || order->valuedouble > UINT32_MAX
            || !cJSON_IsString(r) || bd_history_role(r->valuestring) == 0
            || !cJSON_IsString(text))
        {
            cJSON_Delete(root);
            return -1;
        }
    }

    if (dropped != NULL) {
        h->dropped += (unsigned) dropped->valuedouble;
    }

    cJSON_ArrayForEach(it, items) {
        n = cJSON_GetObjectItemCaseSensitive(it, "order")->valuedouble;
        role = bd_history_role(
                   cJSON_GetObjectItemCaseSensitive(it, "role")->valuestring);
        text = cJSON_GetObjectItemCaseSensitive(it, "text");

        (void) bd_history_add(h, (uint32_t) n, role, text->valuestring,
                              strlen(text->valuestring));
    }

    cJSON_Delete(root);

    return 0;
}


uint32_t
bd_history_last_order(const bd_history_t *h)
{
    return h->len ? h->items[h->len - 1].order : 0;
}
