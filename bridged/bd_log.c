/*
 * bd_log.c: one line per event on stderr, with a UTC timestamp, the level
 * and the call SID.
 *
 * The line is formatted into a stack buffer and written with one write(2),
 * so lines from one process never interleave.  Registered secrets are
 * overwritten before the write: the daemon never prints them itself, and
 * this is the guard for text that comes from libraries (lws, curl).
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bd_log.h"


#define BD_LOG_LINE_MAX  2048
#define BD_LOG_SECRETS   4


int  bd_log_level = BD_LOG_INFO;


static const char  *bd_log_names[] = { "debug", "info", "warn", "error" };

static const char  *bd_log_secrets[BD_LOG_SECRETS];
static size_t       bd_log_nsecrets;


int
bd_log_level_parse(const char *name)
{
    int  i;

    for (i = BD_LOG_DEBUG; i <= BD_LOG_ERROR; i++) {
        if (strcmp(name, bd_log_names[i]) == 0) {
            return i;
        }
    }

    return -1;
}


void
bd_log_secret(const char *secret)
{
    /* short strings would scrub ordinary words: nothing that short is a key */

    if (secret == NULL || strlen(secret) < 8
        || bd_log_nsecrets == BD_LOG_SECRETS)
    {
        return;
    }

    bd_log_secrets[bd_log_nsecrets++] = secret;
}


static void
bd_log_scrub(char *p, size_t len)
{
    char    *hit, *end;
    size_t   i, slen;

    end = p + len;

    for (i = 0; i < bd_log_nsecrets; i++) {
        slen = strlen(bd_log_secrets[i]);

        for (hit = memmem(p, len, bd_log_secrets[i], slen);
             hit != NULL;
             hit = memmem(hit, (size_t) (end - hit), bd_log_secrets[i], slen))
        {
            memset(hit, '*', slen);
        }
    }
}


void
bd_log(int level, const char *sid, const char *fmt, ...)
{
    int               n;
    char             *p;
    char              line[BD_LOG_LINE_MAX];
    size_t            len, msg, i;
    ssize_t           w;
    va_list           args;
    struct tm         tm;
    struct timespec   ts;

    if (level < bd_log_level || level < BD_LOG_DEBUG || level > BD_LOG_ERROR) {
        return;
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);

    n = snprintf(line + len, sizeof(line) - len, ".%03dZ [%s] ",
                 (int) (ts.tv_nsec / 1000000), bd_log_names[level]);
    len += (size_t) n;

    if (sid != NULL && sid[0] != '\0') {
        n = snprintf(line + len, sizeof(line) - len, "[%s] ", sid);
        len += (size_t) n;
    }

    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
    }

    msg = len;

    /* one byte stays free for the newline */

    va_start(args, fmt);
    n = vsnprintf(line + len, sizeof(line) - len - 1, fmt, args);
    va_end(args);

    if (n < 0) {
        return;
    }

    len += (size_t) n;
    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
        memcpy(line + len - 3, "...", 3);
    }

    for (i = msg; i < len; i++) {
        if ((unsigned char) line[i] < 0x20 || line[i] == 0x7f) {
            line[i] = ' ';
        }
    }

    bd_log_scrub(line, len);

    line[len++] = '\n';

    for (p = line; len > 0; p += w, len -= (size_t) w) {
        w = write(STDERR_FILENO, p, len);
        if (w < 0) {
            if (errno == EINTR) {
                w = 0;
                continue;
            }

            return;
        }
    }
}
