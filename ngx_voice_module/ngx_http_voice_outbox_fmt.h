/*
 * ngx_http_voice_outbox_fmt.h: the post-call webhook's outbox entries, and
 * when each is tried again (ngx_http_voice_outbox.c keeps the outbox).
 *
 * An entry is one file, OUTBOX/{callSid}.{made}.hook (made: when the
 * record was made, ms since the epoch), holding
 *
 *     voice-webhook 1\n
 *     url {the receiver's URL}\n
 *     \n
 *     {the record, the JSON document POSTed as is}
 *
 * and never the secret.  Its mtime is when it is due next.
 *
 * Leaf code (libc only), unit tested outside nginx; called from the event
 * loop and from thread-pool tasks (every function here is reentrant).
 */

#ifndef NGX_HTTP_VOICE_OUTBOX_FMT_H
#define NGX_HTTP_VOICE_OUTBOX_FMT_H

#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_VOICE_OUTBOX_URL_MAX       4096
#define NGX_HTTP_VOICE_OUTBOX_SID_MAX       64
/* "{sid}.{20 digits}.hook" and a NUL */
#define NGX_HTTP_VOICE_OUTBOX_NAME_MAX                                        \
    (NGX_HTTP_VOICE_OUTBOX_SID_MAX + 27)
/* "voice-webhook 1\nurl " "\n\n" */
#define NGX_HTTP_VOICE_OUTBOX_HEADER_MAX                                      \
    (NGX_HTTP_VOICE_OUTBOX_URL_MAX + 22)

/* a failed entry is tried again after its age, within these (ms) */
#define NGX_HTTP_VOICE_OUTBOX_BACKOFF_MIN   1000
#define NGX_HTTP_VOICE_OUTBOX_BACKOFF_MAX   300000


/*
 * Writes "{sid}.{made}.hook" and a NUL into out
 * (NGX_HTTP_VOICE_OUTBOX_NAME_MAX bytes); its length without the NUL, 0
 * when the SID is empty, too long or not made of letters and digits.
 */
size_t ngx_http_voice_outbox_fmt_name(uint8_t *out, const uint8_t *sid,
    size_t sid_len, uint64_t made);

/*
 * 1 when name (len bytes, no NUL needed) is an entry's, with *sid_len the
 * length of the SID it starts with and *made its time; 0 otherwise.
 */
int ngx_http_voice_outbox_fmt_parse_name(const uint8_t *name, size_t len,
    size_t *sid_len, uint64_t *made);

/*
 * Writes the entry's header for url into out
 * (NGX_HTTP_VOICE_OUTBOX_HEADER_MAX bytes); its length, 0 when the URL is
 * empty, too long or holds a control character.
 */
size_t ngx_http_voice_outbox_fmt_header(uint8_t *out, const uint8_t *url,
    size_t url_len);

/*
 * 1 when data is an entry, with url and body views into it; 0 otherwise
 * (a torn or foreign file).
 */
int ngx_http_voice_outbox_fmt_parse(const uint8_t *data, size_t len,
    const uint8_t **url, size_t *url_len, const uint8_t **body,
    size_t *body_len);

/*
 * When an entry made at made (ms), whose attempt failed at now, is tried
 * next: after about its age (so the waits double), between
 * NGX_HTTP_VOICE_OUTBOX_BACKOFF_MIN and _MAX, give or take a quarter
 * (rnd: any random number), and never after made + retry, where one last
 * attempt is made; 0 when it is past made + retry: given up.
 */
uint64_t ngx_http_voice_outbox_fmt_next(uint64_t made, uint64_t now,
    uint64_t retry, uint32_t rnd);


#endif /* NGX_HTTP_VOICE_OUTBOX_FMT_H */
