/*
 * bd_twapi.h: the Twilio REST client (create a call, end a call, list the
 * account's numbers) on curl's multi_socket interface.
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


#endif /* BD_TWAPI_H */
