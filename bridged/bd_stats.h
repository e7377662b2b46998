/*
 * bd_stats.h: bridged's own counters, and their Prometheus text.
 *
 * bd_call.c, bd_oai_event.c, bd_tool.c and bd_twapi.c count what they do
 * here; bd_chan.c answers nginx's stats message (VOICE_PROTO_MSG_STATS)
 * with bd_stats_render(), which nginx's voice_metrics labels with the
 * bridged's endpoint and serves.  Leaf code (libc only), unit tested in
 * tests/unit/test_bd_stats.c.
 */

#ifndef BD_STATS_H
#define BD_STATS_H

#include <stddef.h>
#include <stdint.h>


#define BD_STATS_KEYS   16          /* distinct label values kept each;
                                       the rest count as "other" */
#define BD_STATS_KEY    64          /* bytes of one, at most */
#define BD_STATS_MAX    16384       /* the rendered text always fits */


/* an OpenAI Realtime session opened: a call's first, or a reconnect */
void bd_stats_openai_session(int reconnect);

/* an OpenAI error event, by its code (NULL: "none") */
void bd_stats_openai_error(const char *code);

/* a tool call of the assistant is over, by the tool's name */
void bd_stats_tool(const char *name, int failed);

/* one request to Twilio's REST API: its HTTP status (0: no answer) and
 * how long it took */
void bd_stats_twilio(long status, uint64_t us);

/* a stream refused at --max-calls */
void bd_stats_refused(void);

/*
 * The counters as Prometheus sample lines (no HELP or TYPE: nginx gives
 * those), calls being the calls carried now.  Returns the length, at
 * most BD_STATS_MAX - 1; buf holds BD_STATS_MAX bytes.
 */
size_t bd_stats_render(char *buf, size_t size, unsigned calls);

/* every counter back to zero (tests) */
void bd_stats_reset(void);


#endif /* BD_STATS_H */
