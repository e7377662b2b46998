/*
 * bd_retry.c: the retry policy of Twilio REST requests, and Retry-After.
 *
 * A phone call is not a request to try twice, so bd_twapi.c repeats only
 * what is safe to repeat (a GET, a hang-up) and asks here whether an
 * outcome is worth it: failures of the network and Twilio's 429 and 5xx
 * are, Twilio's 4xx refusals are not.  The waits grow exponentially with
 * random jitter, and Twilio's Retry-After, when it sends one, is a floor.
 * Everything here is arithmetic on its arguments (the caller gives the
 * time and the randomness), so tests/unit/test_bd_retry.c checks it all.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "bd_retry.h"


#define BD_RETRY_BASE_MS     500
#define BD_RETRY_CAP_MS      8000
#define BD_RETRY_AFTER_MAX   86400      /* s: a longer wait is a day */


int
bd_retry_transient(int curl_result, long http_status)
{
    switch (curl_result) {

    case CURLE_OK:
        return http_status == 429 || (http_status >= 500
                                       && http_status <= 599);

    /* the network failed, or Twilio's edge was restarting */
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:     /* a handshake cut short */
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;

    /* a certificate that does not verify, an answer over the cap, our
     * own mistakes: the same again gives the same */
    default:
        return 0;
    }
}


int
bd_retry_not_done(int curl_result, long http_status)
{
    switch (curl_result) {

    case CURLE_OK:
        return http_status >= 400 && http_status <= 499;

    /* the request was never sent: no connection, or TLS not set up */
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        return 1;

    default:
        return 0;
    }
}


unsigned
bd_retry_backoff_ms(unsigned n, uint32_t random)
{
    unsigned  ms, half;

    ms = BD_RETRY_BASE_MS;

    while (n-- > 1 && ms < BD_RETRY_CAP_MS) {
        ms *= 2;
    }

    if (ms > BD_RETRY_CAP_MS) {
        ms = BD_RETRY_CAP_MS;
    }

    /* "equal jitter": half of it fixed, the other half random */
    half = ms / 2;

    return half + random % (half + 1);
}


/* digits: n of them exactly, into *v */

static int
bd_retry_digits(const char **p, const char *end, int n, int *v)
{
    int  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (*p >= end || **p < '0' || **p > '9') {
            return 0;
        }

        *v = *v * 10 + (**p - '0');
        (*p)++;
    }

    return 1;
}


static int
bd_retry_char(const char **p, const char *end, char c)
{
    if (*p >= end || **p != c) {
        return 0;
    }

    (*p)++;

    return 1;
}


static int
bd_retry_word(const char **p, const char *end, const char *w)
{
    size_t  n;

    n = strlen(w);

    if ((size_t) (end - *p) < n || memcmp(*p, w, n) != 0) {
        return 0;
    }

    *p += n;

    return 1;
}


static int
bd_retry_month(const char **p, const char *end, int *mon)
{
    int  i;

    static const char  months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

    if (end - *p < 3) {
        return 0;
    }

    for (i = 0; i < 12; i++) {
        if (memcmp(*p, months + 3 * i, 3) == 0) {
            *mon = i + 1;
            *p += 3;
            return 1;
        }
    }

    return 0;
}


/* hh:mm:ss */

static int
bd_retry_clock(const char **p, const char *end, int *h, int *m, int *s)
{
    return bd_retry_digits(p, end, 2, h) && bd_retry_char(p, end, ':')
           && bd_retry_digits(p, end, 2, m) && bd_retry_char(p, end, ':')
           && bd_retry_digits(p, end, 2, s)
           && *h <= 23 && *m <= 59 && *s <= 60;
}


/* days since 1970-01-01 of a proleptic Gregorian date (Hinnant's) */

static int64_t
bd_retry_days(int y, int m, int d)
{
    int64_t   era;
    unsigned  yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t) doe - 719468;
}


static int
bd_retry_date(const char *p, const char *end, int64_t *t)
{
    int          y, mon, d, h, m, s, mdays;
    const char  *q;

    static const int  days[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31,
                                 30, 31 };

    /* the day's name, unchecked beyond its letters: the date says it */

    q = p;
    while (p < end && ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))) {
        p++;
    }

    if (p - q < 3) {
        return 0;
    }

    if (p < end && *p == ',') {
        p++;

        if (!bd_retry_char(&p, end, ' ') || !bd_retry_digits(&p, end, 2, &d))
        {
            return 0;
        }

        if (p < end && *p == ' ') {

            /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */

            p++;

            if (!bd_retry_month(&p, end, &mon) || !bd_retry_char(&p, end, ' ')
                || !bd_retry_digits(&p, end, 4, &y))
            {
                return 0;
            }

        } else {

            /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */

            if (!bd_retry_char(&p, end, '-') || !bd_retry_month(&p, end, &mon)
                || !bd_retry_char(&p, end, '-')
                || !bd_retry_digits(&p, end, 2, &y))
            {
                return 0;
            }

            /* a two-digit year more than 50 years ahead is in the past */
            y += (y < 70) ? 2000 : 1900;
        }

        if (!bd_retry_char(&p, end, ' ') || !bd_retry_clock(&p, end, &h, &m, &s)
            || !bd_retry_word(&p, end, " GMT"))
        {
            return 0;
        }

    } else {

        /* asctime: Sun Nov  6 08:49:37 1994 */

        if (!bd_retry_char(&p, end, ' ') || !bd_retry_month(&p, end, &mon)
            || !bd_retry_char(&p, end, ' '))
        {
            return 0;
        }

        if (p < end && *p == ' ') {
            p++;

            if (!bd_retry_digits(&p, end, 1, &d)) {
                return 0;
            }

        } else if (!bd_retry_digits(&p, end, 2, &d)) {
            return 0;
        }

        if (!bd_retry_char(&p, end, ' ') || !bd_retry_clock(&p, end, &h, &m, &s)
            || !bd_retry_char(&p, end, ' ') || !bd_retry_digits(&p, end, 4, &y))
        {
            return 0;
        }
    }

    if (p != end) {
        return 0;
    }

    mdays = days[mon - 1];

    if (mon == 2 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) {
        mdays = 28;
    }

    if (d < 1 || d > mdays) {
        return 0;
    }

    *t = bd_retry_days(y, mon, d) * 86400 + h * 3600 + m * 60 + s;

    return 1;
}


int
bd_retry_after_parse(const char *value, size_t len, time_t now,
    uint64_t *ms)
{
    int64_t      t;
    uint64_t     s;
    const char  *p, *end;

    p = value;
    end = value + len;

    /* a header value's surrounding white space is not part of it */

    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'
                       || end[-1] == '\n'))
    {
        end--;
    }

    if (p == end) {
        return 0;
    }

    if (*p >= '0' && *p <= '9') {

        /* delay-seconds: 1*DIGIT */

        s = 0;

        for ( /* void */ ; p < end; p++) {
            if (*p < '0' || *p > '9') {
                return 0;
            }

            if (s <= BD_RETRY_AFTER_MAX) {
                s = s * 10 + (uint64_t) (*p - '0');
            }
        }

        if (s > BD_RETRY_AFTER_MAX) {
            s = BD_RETRY_AFTER_MAX;
        }

        *ms = s * 1000;

        return 1;
    }

    if (!bd_retry_date(p, end, &t)) {
        return 0;
    }

    if (t <= (int64_t) now) {
        *ms = 0;

    } else if (t - (int64_t) now > BD_RETRY_AFTER_MAX) {
        *ms = (uint64_t) BD_RETRY_AFTER_MAX * 1000;

    } else {
        *ms = (uint64_t) (t - (int64_t) now) * 1000;
    }

    return 1;
}
