/*
 * bd_tool.h: the function calls of a call's assistant.
 *
 * The model calls a built-in tool (end_call, transfer_call) or an HTTP
 * tool of the location (voice_tool); bd_tool.c runs it without blocking
 * the loop, gives its output back to the model as a function_call_output
 * item, asks for the next response once every call of the turn has its
 * output and no response is generating, and puts each call and its
 * outcome in the record.  While a tool runs the call stays live: audio
 * flows both ways and barge-in works.
 */

#ifndef BD_TOOL_H
#define BD_TOOL_H

#include <stdint.h>

#include <curl/curl.h>

#include "bd_http.h"
#include "bd_oai_event.h"


#define BD_TOOL_RUNS         4          /* at once, per call */
#define BD_TOOL_ANSWER_MAX   16384      /* an HTTP tool's answer */
#define BD_TOOL_RECORD_MAX   4096       /* an output kept in the record */
#define BD_TOOL_NAME_MAX     64


typedef enum {
    BD_TOOL_ST_FREE = 0,
    BD_TOOL_ST_RUNNING                  /* its HTTP request in flight */
} bd_tool_state_e;


typedef struct bd_call_s  bd_tool_call_t;

typedef struct {
    bd_tool_state_e     state;
    bd_tool_call_t     *call;
    uint32_t            order;          /* its item's, for the record */
    unsigned            session;        /* the call's OpenAI session it
                                           was called in */
    uint64_t            started;        /* loop time, ms */
    unsigned            timeout_ms;
    bd_http_t          *http;
    struct curl_slist  *headers;        /* curl keeps a pointer to them */
    char               *arguments;      /* the model's JSON text */
    char                call_id[BD_OAI_EVENT_ID_MAX];
    char                name[BD_TOOL_NAME_MAX + 1];
} bd_tool_run_t;


typedef struct {
    bd_tool_run_t       runs[BD_TOOL_RUNS];
    unsigned            running;
    unsigned            calls;          /* tool calls of this call */
    unsigned            failed;         /* of those, with an error */
    unsigned            want_response:1; /* outputs given, no response
                                            asked for them yet */
} bd_tool_set_t;


/* the model called name (bd_oai_event.c's tool_call) */
void bd_tool_call(bd_tool_call_t *call, uint32_t order, const char *call_id,
    const char *name, const char *arguments);

/* a transfer's outcome: failed ones go back to the model as errors */
void bd_tool_transfer_done(bd_tool_run_t *run, const char *output,
    int failed);

/* a response ended: the outputs given meanwhile may want one */
void bd_tool_response_done(bd_tool_call_t *call);

/* the call ends: requests in flight are dropped, nothing is answered */
void bd_tool_cancel(bd_tool_set_t *set);


#endif /* BD_TOOL_H */
