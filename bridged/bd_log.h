/*
 * bd_log.h: the one logging function of bridged.
 *
 * Every file logs through bd_log(); lws and curl messages are routed into
 * it too (bd_oai.c, bd_twapi.c).  libc only, so unit tests link it.
 */

#ifndef BD_LOG_H
#define BD_LOG_H

#include <stddef.h>
#include <stdint.h>


#define BD_LOG_DEBUG  0
#define BD_LOG_INFO   1
#define BD_LOG_WARN   2
#define BD_LOG_ERROR  3


extern int       bd_log_level;
extern uint64_t  bd_log_dropped;    /* lines syslog had no room for */


/* returns BD_LOG_* for "debug", "info", "warn" or "error", -1 otherwise */
int bd_log_level_parse(const char *name);

/*
 * Registers a string that must never reach the log (a token, a key, an
 * Authorization value).  Lines that contain it are scrubbed.  The string
 * must outlive the process's logging.
 */
void bd_log_secret(const char *secret);

/*
 * Chooses where lines go: "stderr" (the default), or syslog named the way
 * nginx's error_log names it, "syslog[:server=unix:PATH|ADDRESS[:PORT]]
 * [,facility=NAME][,tag=TAG]" (defaults: unix:/dev/log, daemon, bridged;
 * a numeric address only, UDP, port 514 by default).  Returns 0, or -1
 * with err filled when the target is malformed or cannot be reached.
 */
int bd_log_target(const char *target, char *err, size_t err_size);

/* back to stderr, closing the syslog socket */
void bd_log_close(void);

/*
 * Writes one line to stderr:
 *
 *     2026-11-24T10:15:00.123Z [info] [CA0123...] message
 *
 * or, to syslog, one datagram "<PRI>Nov 24 10:15:00 HOST bridged:
 * [CA0123...] message" whose PRI holds the level (debug, info, warning,
 * err).  sid may be NULL or empty when the line is about no call.  Control
 * characters in the message become spaces, so a line is always one line.
 */
void bd_log(int level, const char *sid, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#define bd_log_enabled(level)  ((level) >= bd_log_level)


#endif /* BD_LOG_H */
