/*
 * bd_curve.h: CURVE on bridged's ROUTER socket -- its secret key, the
 * public keys of the nginx hosts it lets in, and the ZAP handler that
 * checks them.
 *
 * bd_loop.c loads the keys at start (bd_curve_load) or makes a key pair
 * (bd_curve_keygen); bd_chan.c makes its socket a CURVE server before it
 * binds (bd_curve_server) and closes the handler with it.
 */

#ifndef BD_CURVE_H
#define BD_CURVE_H

#include <uv.h>

#include "bd_conf.h"


/* --curve-keygen PREFIX: writes PREFIX.key and PREFIX.pub; exit status */
int bd_curve_keygen(const char *prefix);

/*
 * Reads --curve-secret-key and --curve-clients, when set, before the loop
 * starts (blocking reads are fine then).  0, or -1 with the reason in err.
 */
int bd_curve_load(const bd_conf_t *conf, char *err, size_t err_size);

/* 1 when bd_curve_load() found keys to use */
int bd_curve_on(void);

/*
 * Binds the ZAP handler in the socket's context and makes the socket a
 * CURVE server; before zmq_bind(), so that no connection is ever let in
 * unchecked.  0, or -1 (logged).
 */
int bd_curve_server(uv_loop_t *loop, void *ctx, void *sock);

/* stops watching the handler (its uv handles close) */
void bd_curve_close(void);

/* closes the handler's socket; before zmq_ctx_term() */
void bd_curve_term(void);


#endif /* BD_CURVE_H */
