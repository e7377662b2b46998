/*
 * voice_curve.h: the key files of the ZeroMQ CURVE link between nginx and
 * bridged.
 *
 * A key file is text: one CURVE key per line in Z85 (40 characters, as
 * zmq_curve_keypair() writes them), blank lines, and comment lines, which
 * begin with '#'.  ('#' is one of Z85's characters, but no key of 32
 * bytes begins with it: five characters that begin with '#' or '$' are
 * worth more than 32 bits.)  Blanks around a key are ignored, so a file
 * ending in CR LF or indented reads the same.  Both sides compile
 * proto/voice_curve.c: bridged (bridged/bd_curve.c, its own secret key
 * and the public keys of the nginx hosts it lets in) and the module
 * (ngx_http_voice_curve.c, its key pair and bridged's public key).  libc
 * only, so it is unit tested outside both.
 */

#ifndef VOICE_CURVE_H
#define VOICE_CURVE_H

#include <stddef.h>


#define VOICE_CURVE_KEY_LEN     40          /* a key in Z85 */
#define VOICE_CURVE_FILE_MAX    65536       /* the largest key file read */


typedef char  voice_curve_key_t[VOICE_CURVE_KEY_LEN + 1];


/*
 * Reads every key of a key file's text into keys (each NUL-terminated),
 * at most max of them.  Returns the number read (0 for a file with no
 * key), or -1 with the reason, and the line it is on, in err: a line that
 * is not one Z85 key, or more than max keys.
 */
int voice_curve_keys(const char *text, size_t len, voice_curve_key_t *keys,
    size_t max, char *err, size_t err_size);

/* a file that holds exactly one key: 1, or 0 with the reason in err */
int voice_curve_key(const char *text, size_t len, voice_curve_key_t key,
    char *err, size_t err_size);

/*
 * 1 when a ZeroMQ endpoint stays on this host -- ipc://, inproc://, or
 * tcp:// to a loopback address (127.0.0.0/8, ::1, localhost) -- and 0
 * when it may cross a network, which is where the link wants CURVE.
 * A wildcard address (a star, 0.0.0.0, [::]) listens on every interface:
 * it crosses a network.
 */
int voice_curve_endpoint_local(const char *ep, size_t len);


#endif /* VOICE_CURVE_H */
