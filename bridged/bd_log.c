/*
 * bd_log.c: one line per event, with the level and the call SID, on stderr
 * (with a UTC timestamp) or to syslog.
 *
 * The line is formatted into a stack buffer and written with one write(2),
 * so lines from one process never interleave.  Registered secrets are
 * overwritten before the write: the daemon never prints them itself, and
 * this is the guard for text that comes from libraries (lws, curl).
 *
 * syslog is spoken here rather than through libc's syslog(3), which may
 * block on a busy /dev/log and would stall the loop with every call on
 * it.  The target is named the way nginx names its own
 * ("syslog:server=unix:/dev/log,facility=daemon,tag=bridged"), each line
 * is one RFC 3164 datagram sent without waiting, and a line the receiver
 * has no room for is dropped and counted, never waited for.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bd_log.h"


#define BD_LOG_LINE_MAX  2048
#define BD_LOG_SECRETS   4
#define BD_LOG_TAG_MAX   32
#define BD_LOG_HOST_MAX  64
#define BD_LOG_SYSLOG_PORT  514


/* where lines go when they go to syslog */
typedef struct {
    int                      fd;         /* -1: lines go to stderr */
    int                      facility;
    struct sockaddr_storage  addr;
    socklen_t                addrlen;
    char                     tag[BD_LOG_TAG_MAX + 1];
    char                     host[BD_LOG_HOST_MAX + 1];
} bd_log_syslog_t;


int       bd_log_level = BD_LOG_INFO;
uint64_t  bd_log_dropped;


static const char  *bd_log_names[] = { "debug", "info", "warn", "error" };

/* syslog severities of the levels: debug, info, warning, err */
static const int    bd_log_severity[] = { 7, 6, 4, 3 };

static const char  *bd_log_facilities[] = {
    "kern", "user", "mail", "daemon", "auth", "intern", "lpr", "news",
    "uucp", "clock", "authpriv", "ftp", "ntp", "audit", "alert", "cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7"
};

static const char  *bd_log_secrets[BD_LOG_SECRETS];
static size_t       bd_log_nsecrets;

static bd_log_syslog_t  bd_log_sys = { .fd = -1 };


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


static int
bd_log_syslog_server(bd_log_syslog_t *sys, const char *v, size_t len,
    char *err, size_t err_size)
{
    char                 addr[INET6_ADDRSTRLEN + 8], *host, *colon, *end;
    unsigned long        port;
    struct sockaddr_un  *un;
    struct sockaddr_in  *in4;
    struct sockaddr_in6 *in6;

    memset(&sys->addr, 0, sizeof(sys->addr));

    if (len > 5 && memcmp(v, "unix:", 5) == 0) {
        un = (struct sockaddr_un *) &sys->addr;

        if (len - 5 >= sizeof(un->sun_path) || v[5] != '/') {
            snprintf(err, err_size, "\"%.*s\" is not an absolute socket "
                     "path that fits", (int) len, v);
            return -1;
        }

        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, v + 5, len - 5);
        sys->addrlen = sizeof(struct sockaddr_un);
        return 0;
    }

    /* a numeric address, so nothing is looked up: "[::1]:514", "10.0.0.2" */

    if (len == 0 || len >= sizeof(addr)) {
        snprintf(err, err_size, "server \"%.*s\" is not unix:PATH or "
                 "ADDRESS[:PORT]", (int) len, v);
        return -1;
    }

    memcpy(addr, v, len);
    addr[len] = '\0';
    port = BD_LOG_SYSLOG_PORT;

    host = addr;

    if (addr[0] == '[') {
        end = strchr(addr, ']');

        if (end == NULL || (end[1] != '\0' && end[1] != ':')) {
            goto bad;
        }

        host = addr + 1;
        *end = '\0';
        colon = (end[1] == ':') ? end + 1 : NULL;

    } else {
        colon = strchr(addr, ':');
    }

    if (colon != NULL) {
        *colon++ = '\0';
        port = strtoul(colon, &end, 10);

        if (*colon == '\0' || *end != '\0' || port == 0 || port > 65535) {
            goto bad;
        }
    }

    in4 = (struct sockaddr_in *) &sys->addr;
    in6 = (struct sockaddr_in6 *) &sys->addr;

    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t) port);
        sys->addrlen = sizeof(struct sockaddr_in);
        return 0;
    }

    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t) port);
        sys->addrlen = sizeof(struct sockaddr_in6);
        return 0;
    }

bad:

    snprintf(err, err_size, "server \"%.*s\" is not unix:PATH or a numeric "
             "ADDRESS[:PORT]", (int) len, v);
    return -1;
}


int
bd_log_target(const char *target, char *err, size_t err_size)
{
    int              fd;
    size_t           i, klen, vlen;
    const char      *p, *key, *val, *next;
    bd_log_syslog_t  sys;

    if (strcmp(target, "stderr") == 0) {
        bd_log_close();
        return 0;
    }

    if (strncmp(target, "syslog", 6) != 0
        || (target[6] != '\0' && target[6] != ':'))
    {
        snprintf(err, err_size, "\"%s\" is not stderr or syslog[:...]",
                 target);
        return -1;
    }

    memset(&sys, 0, sizeof(sys));
    sys.facility = 3;
    strcpy(sys.tag, "bridged");

    if (bd_log_syslog_server(&sys, "unix:/dev/log", 13, err, err_size) != 0) {
        return -1;
    }

    for (p = target + 6; *p == ':' || *p == ','; p = next) {
        key = p + 1;
        next = strchr(key, ',');
        if (next == NULL) {
            next = key + strlen(key);
        }

        val = memchr(key, '=', (size_t) (next - key));
        if (val == NULL) {
            snprintf(err, err_size, "\"%.*s\" is not KEY=VALUE",
                     (int) (next - key), key);
            return -1;
        }

        klen = (size_t) (val - key);
        val++;
        vlen = (size_t) (next - val);

        if (klen == 6 && memcmp(key, "server", 6) == 0) {
            if (bd_log_syslog_server(&sys, val, vlen, err, err_size) != 0) {
                return -1;
            }

        } else if (klen == 8 && memcmp(key, "facility", 8) == 0) {
            for (i = 0; i < sizeof(bd_log_facilities) / sizeof(char *); i++) {
                if (strlen(bd_log_facilities[i]) == vlen
                    && memcmp(bd_log_facilities[i], val, vlen) == 0)
                {
                    break;
                }
            }

            if (i == sizeof(bd_log_facilities) / sizeof(char *)) {
                snprintf(err, err_size, "unknown facility \"%.*s\"",
                         (int) vlen, val);
                return -1;
            }

            sys.facility = (int) i;

        } else if (klen == 3 && memcmp(key, "tag", 3) == 0) {
            if (vlen == 0 || vlen > BD_LOG_TAG_MAX
                || strspn(val, "abcdefghijklmnopqrstuvwxyz"
                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
                   < vlen)
            {
                snprintf(err, err_size, "tag \"%.*s\" is not 1 to %d "
                         "letters, digits, '_' or '-'", (int) vlen, val,
                         BD_LOG_TAG_MAX);
                return -1;
            }

            memcpy(sys.tag, val, vlen);
            sys.tag[vlen] = '\0';

        } else {
            snprintf(err, err_size, "unknown syslog parameter \"%.*s\"",
                     (int) klen, key);
            return -1;
        }
    }

    if (*p != '\0') {
        snprintf(err, err_size, "\"%s\" is not syslog:KEY=VALUE,...",
                 target);
        return -1;
    }

    if (gethostname(sys.host, sizeof(sys.host) - 1) != 0
        || sys.host[0] == '\0')
    {
        strcpy(sys.host, "localhost");
    }

    fd = socket(sys.addr.ss_family,
                SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_size, "socket(): %s", strerror(errno));
        return -1;
    }

    /*
     * Connecting now finds a missing receiver at start, while the error
     * can still stop bridged; a receiver that restarts later is connected
     * to again by the first line that finds it gone.
     */

    if (connect(fd, (struct sockaddr *) &sys.addr, sys.addrlen) != 0) {
        snprintf(err, err_size, "cannot reach the syslog server: %s",
                 strerror(errno));
        close(fd);
        return -1;
    }

    bd_log_close();
    sys.fd = fd;
    bd_log_sys = sys;

    return 0;
}


void
bd_log_close(void)
{
    if (bd_log_sys.fd >= 0) {
        close(bd_log_sys.fd);
        bd_log_sys.fd = -1;
    }
}


static void
bd_log_send(int level, const char *msg, size_t len)
{
    int        n, retry;
    char       line[BD_LOG_LINE_MAX + 128];
    time_t     now;
    struct tm  tm;
    static const char  *months[] = {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun",
        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
    };

    /* <PRI>Mmm dd hh:mm:ss HOST TAG: message, in local time (RFC 3164) */

    now = time(NULL);
    localtime_r(&now, &tm);

    n = snprintf(line, sizeof(line), "<%d>%s %2d %02d:%02d:%02d %s %s: ",
                 bd_log_sys.facility * 8 + bd_log_severity[level],
                 months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, bd_log_sys.host, bd_log_sys.tag);

    if (n < 0 || (size_t) n + len > sizeof(line)) {
        return;
    }

    memcpy(line + n, msg, len);

    for (retry = 0; retry < 2; retry++) {
        if (send(bd_log_sys.fd, line, (size_t) n + len,
                 MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
        {
            return;
        }

        if (errno == EINTR) {
            continue;
        }

        if (errno != ECONNREFUSED && errno != ENOTCONN && errno != ENOENT) {
            break;
        }

        /* the receiver restarted: its socket is a new one */

        if (connect(bd_log_sys.fd, (struct sockaddr *) &bd_log_sys.addr,
                    bd_log_sys.addrlen) != 0)
        {
            break;
        }
    }

    bd_log_dropped++;
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

    len = 0;

    /* syslog stamps the line itself, and carries the level as a number */

    if (bd_log_sys.fd < 0) {
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);

        len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);

        n = snprintf(line + len, sizeof(line) - len, ".%03dZ [%s] ",
                     (int) (ts.tv_nsec / 1000000), bd_log_names[level]);
        len += (size_t) n;
    }

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

    if (bd_log_sys.fd >= 0) {
        bd_log_send(level, line, len);
        return;
    }

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
