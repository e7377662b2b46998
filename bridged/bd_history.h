/*
 * bd_history.h: the conversation so far, kept to give it back to a new
 * OpenAI session.
 *
 * An OpenAI session forgets everything when its connection goes (a drop,
 * the 60-minute limit, a bridged that died and handed the call over).
 * The call's finished utterances are what nginx writes to the record;
 * the same utterances, in conversation order, are kept here so that the
 * next session starts where the last one stopped (bd_oai_event_restore()
 * turns them into conversation items).  A bridged that takes over a call
 * gets them from nginx (STREAM_START's HISTORY, the same JSON that
 * bd_history_load() reads).  The store is bounded in items and bytes:
 * past the bound the oldest items go and are counted, and the new session
 * is told how many.  libc and cJSON only, so it is unit tested alone.
 */

#ifndef BD_HISTORY_H
#define BD_HISTORY_H

#include <stddef.h>
#include <stdint.h>


#define BD_HISTORY_ITEMS      64            /* items kept */
#define BD_HISTORY_BYTES      (32 * 1024)   /* text kept */
#define BD_HISTORY_ITEM_MAX   2048          /* one item's text */


typedef struct {
    uint32_t    order;        /* the conversation order nginx sorts by */
    uint32_t    role;         /* VOICE_PROTO_ROLE_* */
    char       *text;         /* NUL-terminated; a tool's is folded */
    size_t      len;
} bd_history_item_t;


typedef struct {
    bd_history_item_t   items[BD_HISTORY_ITEMS];  /* by order */
    unsigned            len;
    size_t              bytes;
    unsigned            dropped;      /* items let go for the bound */
} bd_history_t;


void bd_history_init(bd_history_t *h);
void bd_history_free(bd_history_t *h);

/*
 * Keeps a finished item in its place by order (transcripts of the caller
 * come after the assistant's reply that followed them).  A tool's entry
 * is kept as one text: "name(arguments) returned: output".  Text over
 * BD_HISTORY_ITEM_MAX is cut at a UTF-8 boundary.  Returns 0, or -1 when
 * out of memory (the item is counted as dropped).
 */
int bd_history_add(bd_history_t *h, uint32_t order, uint32_t role,
    const char *text, size_t len);

/*
 * Loads nginx's HISTORY, {"dropped":N,"items":[{"order":N,"role":"user"|
 * "assistant"|"tool"|"dtmf","text":"..."}, ...]} (a tool's text already
 * folded), on top of what is kept.  Returns 0, or -1 when it is not that
 * shape (nothing is kept from it).
 */
int bd_history_load(bd_history_t *h, const char *json, size_t len);

/* the highest order kept, or 0 */
uint32_t bd_history_last_order(const bd_history_t *h);


#endif /* BD_HISTORY_H */
