/*
 * bd_twapi.h: the Twilio REST client (create a call, end a call, list the
 * account's numbers, and a live call's own updates) on bd_http.c.
 *
 * bd_chan.c hands it the REST requests of nginx; the replies go back
 * through bd_chan_reply().  JSON work is in bd_twapi_json.c.
 */

#ifndef BD_TWAPI_H
#define BD_TWAPI_H

#include <uv.h>

#include "bd_chan.h"
#include "bd_conf.h"
#include "voice_proto.h"


/* call after curl_global_init(); 0, or -1 (logged) */
int bd_twapi_init(uv_loop_t *loop, const bd_conf_t *conf);

/* answers the requests in flight with 503 and releases curl */
void bd_twapi_shutdown(void);

/* a CALL_CREATE, CALL_END or NUMBERS_LIST: always answered, once */
void bd_twapi_request(bd_chan_peer_t *peer, const voice_proto_msg_t *msg);


typedef struct bd_twapi_req_s  bd_twapi_req_t;

/*
 * What a call's own request came to: the HTTP status (Twilio's, or 502 /
 * 504 when Twilio could not be reached) and Twilio's error code (21220:
 * the call is no longer in progress), 0 when none.
 */
typedef void (*bd_twapi_update_pt)(void *data, unsigned status, long code);

/*
 * POST Calls/{call_sid}.json with form (url-encoded), for a live call:
 * done is called once with the outcome, unless bd_twapi_cancel() comes
 * first.  NULL when it cannot be sent (no credentials, shutting down).
 */
bd_twapi_req_t *bd_twapi_update(const char *call_sid, const char *form,
    bd_twapi_update_pt done, void *data);
void bd_twapi_cancel(bd_twapi_req_t *req);


#endif /* BD_TWAPI_H */
