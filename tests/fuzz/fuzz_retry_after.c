/*
 * fuzz_retry_after.c: libFuzzer target of bridged's reading of Twilio's
 * Retry-After header (bd_retry_after_parse(), bridged/bd_retry.c): the
 * wait bridged keeps to before it asks again, and tells the client.
 *
 * The input is the header's value.  Whatever it is, a wait that is read
 * is at most a day, and does not grow as the clock moves on.  Its first
 * bytes also make a time, written as each of the three HTTP-date forms:
 * each must read back as exactly the wait to that time.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bd_retry.h"


#define FUZZ_DAY_MS   86400000ULL
#define FUZZ_NOW      1764000000        /* 2025-11-24 */


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static const char  *fuzz_forms[] = {
    "%a, %d %b %Y %H:%M:%S GMT",        /* IMF-fixdate */
    "%A, %d-%b-%y %H:%M:%S GMT",        /* RFC 850 */
    "%a %b %e %H:%M:%S %Y"              /* asctime */
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int        ok, later_ok;
    char       buf[64];
    size_t     i, n;
    time_t     t, now;
    uint32_t   wait;
    uint64_t   ms, later;
    struct tm  tm;

    ok = bd_retry_after_parse((const char *) data, size, FUZZ_NOW, &ms);
    later_ok = bd_retry_after_parse((const char *) data, size,
                                    FUZZ_NOW + 3600, &later);

    if (ok != later_ok || (ok && (ms > FUZZ_DAY_MS || later > ms))) {
        abort();
    }

    if (size < 4) {
        return 0;
    }

    /* a date within a day of now, in 2000..2068 (RFC 850's two-digit
     * years read as 1970..2069) */

    memcpy(&wait, data, 4);
    wait %= 86400;
    now = 946684800 + (time_t) (wait * 24U);
    t = now + (time_t) wait;

    if (gmtime_r(&t, &tm) == NULL) {
        abort();
    }

    for (i = 0; i < sizeof(fuzz_forms) / sizeof(fuzz_forms[0]); i++) {
        n = strftime(buf, sizeof(buf), fuzz_forms[i], &tm);

        if (n == 0 || !bd_retry_after_parse(buf, n, now, &ms)
            || ms != (uint64_t) wait * 1000)
        {
            abort();
        }
    }

    return 0;
}
