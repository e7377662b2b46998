/*
 * bd_retry.h: when a Twilio REST request may be sent again, and when.
 *
 * bd_twapi.c asks it whether an attempt's outcome is worth another
 * attempt, how long to wait before it (backoff with jitter, or Twilio's
 * Retry-After), and whether Twilio surely did nothing with the request.
 * Whether the request itself is safe to repeat is bd_twapi.c's to say.
 * Leaf code: libc and curl's result codes only, unit tested in
 * tests/unit/test_bd_retry.c.
 */

#ifndef BD_RETRY_H
#define BD_RETRY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>


/*
 * 1 when another attempt may end otherwise: the connection was refused,
 * failed or cut, the answer did not come in time, or Twilio answered 429
 * or a 5xx.  curl_result is a CURLcode; http_status counts only when
 * curl_result is CURLE_OK.
 */
int bd_retry_transient(int curl_result, long http_status);

/*
 * 1 when Twilio surely did not act on the request: it never reached
 * Twilio (no connection, no name, a certificate that does not verify),
 * or Twilio refused it (a 4xx: 429 is "never processed" in Twilio's
 * words).  0 when it may have: a time-out, a cut connection, a 5xx, a
 * success.
 */
int bd_retry_not_done(int curl_result, long http_status);

/*
 * The wait before retry number n (1 for the first): exponential from
 * 500 ms, capped at 8 s, its upper half random (random is any 32-bit
 * value), so that the requests of one outage do not come back together.
 */
unsigned bd_retry_backoff_ms(unsigned n, uint32_t random);

/*
 * A Retry-After value (RFC 9110 10.2.3): delay-seconds or an HTTP-date
 * (IMF-fixdate, and the obsolete RFC 850 and asctime forms), relative to
 * now.  Returns 1 and *ms (0 for a date in the past, at most a day), or
 * 0 when the value is malformed.
 */
int bd_retry_after_parse(const char *value, size_t len, time_t now,
    uint64_t *ms);


#endif /* BD_RETRY_H */
