/*
 * bd_oai.h: the OpenAI Realtime WebSocket of each call, with lws running
 * as a guest on the libuv loop.
 *
 * bd_call.c asks for connections, client events and closes; bd_oai.c
 * reports back through bd_call_oai_*().  Nothing here blocks.
 */

#ifndef BD_OAI_H
#define BD_OAI_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>
#include <libwebsockets.h>

#include "bd_call.h"
#include "bd_conf.h"


/* creates the lws context on the loop; 0, or -1 (logged) */
int bd_oai_init(uv_loop_t *loop, const bd_conf_t *conf);

/* starts destroying the context: lws closes its connections and handles */
void bd_oai_shutdown(void);

/* after uv_run() returned: frees what is left of the context */
void bd_oai_term(void);

/* 1 when an OpenAI API key is configured */
int bd_oai_has_key(void);

/* the first connection attempt of a call, at once */
int bd_oai_connect(bd_call_t *call);

/*
 * The current connection is lost: schedules the next attempt after the
 * backoff.  Returns 1 when scheduled, 0 when the attempts are used up.
 */
int bd_oai_retry(bd_call_t *call);

/* queues a client event (JSON text); dropped unless connected */
void bd_oai_send(bd_call_t *call, const char *json, size_t len);

/* caller audio is waiting in call->hold: sent when lws says WRITEABLE */
void bd_oai_want_write(bd_call_t *call);

/* caller audio is waiting in call->hold: sent now if nothing is ahead */
void bd_oai_flush(bd_call_t *call);

/* drops the current connection at once (it is stuck) */
void bd_oai_abort(bd_call_t *call);

/* the call ends: close the connection with 1000 and drop the queue */
void bd_oai_close(bd_call_t *call);

/* frees what bd_oai attached to the call; once no wsi refers to it */
void bd_oai_release(bd_call_t *call);

/* runs cb after ms on the loop, through an lws sul */
void bd_oai_timer(lws_sorted_usec_list_t *sul, sul_cb_t cb, uint64_t ms);


#endif /* BD_OAI_H */
