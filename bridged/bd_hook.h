/*
 * bd_hook.h: the post-call webhook's POSTs (bd_hook.c).
 */

#ifndef BD_HOOK_H
#define BD_HOOK_H

#include "bd_chan.h"
#include "voice_proto.h"


#define BD_HOOK_RUNS         32         /* POSTs at once, all workers */
#define BD_HOOK_TIMEOUT_MS   10000      /* one POST, whole */
#define BD_HOOK_ANSWER_MAX   4096       /* of the receiver's answer */


/* a webhook message from an nginx worker: always answered with a reply */
void bd_hook_request(bd_chan_peer_t *peer, voice_proto_msg_t *msg);

/* drops the POSTs in flight (no replies): bridged is stopping */
void bd_hook_shutdown(void);


#endif /* BD_HOOK_H */
