/*
 * bd_jscan.h: a flat scan of one JSON object's top-level string members.
 *
 * OpenAI sends a response.output_audio.delta for every piece of reply
 * audio: the one event that comes at frame rate.  Building a cJSON tree
 * for it cost bridged a sixth of its instructions per frame; this scan
 * finds its few string members where they lie instead, without copying
 * or allocating.  It handles only what such an event is: an object whose
 * members are strings, numbers, true, false or null, and strings without
 * escapes.  Anything else (a nested value, an escape in a wanted member,
 * text that is not JSON) makes it decline, and the caller parses the
 * event in full as before.  libc only.
 */

#ifndef BD_JSCAN_H
#define BD_JSCAN_H

#include <stddef.h>


typedef struct {
    const char  *name;      /* in: the member's name */
    const char  *val;       /* out: its string value, not terminated, or
                               NULL when absent or not a string */
    size_t       len;
} bd_jscan_field_t;


/*
 * Scans json (len bytes) for the n members named in f; the first of equal
 * names counts, as with cJSON.  Returns 0 when the text is a flat object
 * as described above, -1 when the caller must parse it in full.
 */
int bd_jscan_flat(const char *json, size_t len, bd_jscan_field_t *f,
    size_t n);


#endif /* BD_JSCAN_H */
