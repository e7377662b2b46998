/*
 * bd_session.h: a call's session settings, as nginx sends them (the
 * SETTINGS blob of STREAM_START, docs/proto.md), and the OpenAI
 * session.update they become.
 *
 * The blob is parsed once per stream into a cJSON tree that the call
 * keeps; bd_session_parse() checks every field's type and bound, so the
 * rest of bridged reads it without checking again.  It holds secrets
 * (the tools' signing secret, MCP authorization): never log it.
 */

#ifndef BD_SESSION_H
#define BD_SESSION_H

#include <stddef.h>

#include <cJSON.h>


#define BD_SESSION_TOOL_END       "end_call"
#define BD_SESSION_TOOL_TRANSFER  "transfer_call"

#define BD_SESSION_VOICEMAIL_MAX  65536

/* the event_id of our session.update: an error naming it is fatal */
#define BD_SESSION_EVENT_ID       "bd-session"


/* bridged's own defaults, for what nginx.conf does not set */
typedef struct {
    const char  *model;
    const char  *voice;
    const char  *instructions;
    const char  *transcribe_model;
} bd_session_defaults_t;


/*
 * Parses and checks the blob.  Returns the tree (release with
 * cJSON_Delete()), or NULL with err filled.
 */
cJSON *bd_session_parse(const char *json, size_t len, char *err,
    size_t size);

/* a string member, or NULL when absent */
const char *bd_session_str(const cJSON *s, const char *key);

/* a number member, or def when absent */
double bd_session_num(const cJSON *s, const char *key, double def);

/* the HTTP tool or transfer destination of that name, or NULL */
const cJSON *bd_session_tool(const cJSON *s, const char *name);
const cJSON *bd_session_transfer(const cJSON *s, const char *name);

/* 1 when the model offers this built-in tool */
int bd_session_end_call(const cJSON *s);

/* the model to open the session with */
const char *bd_session_model(const cJSON *s, const bd_session_defaults_t *d);

/* what a call changes in its session as it goes */
typedef struct {
    int          hold;        /* the model answers no turn by itself
                                 (create_response false): while an
                                 answering machine's verdict is awaited */
    unsigned     idle_ms;     /* the server VAD's idle_timeout_ms, 0: none */
} bd_session_live_t;


/*
 * The session.update event (GA shape) for these settings, with the
 * built-in tools, the HTTP tools and the MCP servers; release with
 * cJSON_free(), NULL if no memory.
 */
char *bd_session_update(const cJSON *s, const bd_session_defaults_t *d,
    const bd_session_live_t *live);

/*
 * The idle timeout OpenAI can keep itself: server_vad, and a timeout
 * within the bounds used here (5 to 30 s); 0 when bridged keeps it.
 */
unsigned bd_session_server_idle(const cJSON *s);

/* "off", "on" or "wait" */
const char *bd_session_machine_detection(const cJSON *s);


#endif /* BD_SESSION_H */
