/*
 * bd_conf.h: bridged's configuration, from the command line and the
 * environment.
 *
 * bd_loop.c loads it once at start; every other file reads it through the
 * pointer it is given at init.  libc only.
 */

#ifndef BD_CONF_H
#define BD_CONF_H

#include <stddef.h>
#include <stdio.h>


#define BD_CONF_OK      0
#define BD_CONF_EXIT    1     /* --help was printed: exit 0 */
#define BD_CONF_ERROR  -1     /* err holds the reason: exit 2 */


typedef struct {
    const char  *listen;            /* ZeroMQ endpoint to bind */
    const char  *curve_secret_key;  /* a file; NULL: no CURVE */
    const char  *curve_clients;     /* a file or a directory of them */
    const char  *curve_keygen;      /* make a key pair, and exit */
    const char  *ca_file;           /* NULL: the system trust store */

    const char  *twilio_sid;        /* NULL when not configured */
    const char  *twilio_token;
    const char  *twilio_api_url;    /* no trailing slash */

    const char  *openai_key;        /* NULL when not configured */
    const char  *openai_url;
    const char  *openai_model;

    unsigned     twilio_timeout_ms; /* one transfer */
    unsigned     twilio_retries;    /* of a request safe to repeat */
    unsigned     twilio_deadline_ms;  /* a request, retries included */
    unsigned     max_calls;         /* calls at once */
    unsigned     final_wait_ms;
    unsigned     audio_buffer_ms;
    unsigned     session_max_s;     /* renew an OpenAI session after */
    int          log_level;
    const char  *log;               /* NULL or "stderr", or syslog:... */
    int          sched_batch;       /* run as SCHED_BATCH */
} bd_conf_t;


/*
 * Fills conf from argv and the environment (a command line option wins
 * over its environment variable).  The strings point into argv, the
 * environment or static storage: they live as long as the process.
 */
int bd_conf_load(bd_conf_t *conf, int argc, char **argv, char *err,
    size_t err_size);

void bd_conf_usage(FILE *out);


#endif /* BD_CONF_H */
