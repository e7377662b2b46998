/*
 * bd_stats.c: bridged's own counters (OpenAI sessions, reconnects and
 * errors; tools; Twilio REST requests and their time; refused streams),
 * rendered as Prometheus sample lines for nginx's voice_metrics, which
 * asks for them over the channel (bd_chan.c, VOICE_PROTO_MSG_STATS).
 *
 * Label values come from outside (an error code from OpenAI, a tool name
 * the model chose, Twilio's status), so each label keeps at most
 * BD_STATS_KEYS distinct values and counts the rest as "other": the text
 * stays bounded (BD_STATS_MAX) and so do the series a Prometheus server
 * has to keep.  Values are escaped as the text format wants.  A restart
 * of bridged starts from zero, as a counter may.
 */

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bd_stats.h"


#define BD_STATS_OTHER  BD_STATS_KEYS       /* the slot of "other" */
#define BD_STATS_TWILIO_LE                                                    \
    (sizeof(bd_stats_twilio_le_us) / sizeof(bd_stats_twilio_le_us[0]))

static const uint64_t  bd_stats_twilio_le_us[] = {
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
    30000000
};

static const char  *bd_stats_twilio_le[] = {
    "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30"
};


/* one label value and its count(s) */
typedef struct {
    char          key[BD_STATS_KEY];
    uint64_t      n[2];             /* tools: ok, error */
} bd_stats_slot_t;


typedef struct {
    bd_stats_slot_t   slot[BD_STATS_KEYS + 1];    /* + "other" */
    unsigned          used;
} bd_stats_table_t;


static struct {
    uint64_t          sessions;
    uint64_t          reconnects;
    uint64_t          refused;
    bd_stats_table_t  errors;
    bd_stats_table_t  tools;
    bd_stats_table_t  statuses;
    uint64_t          twilio_bucket[BD_STATS_TWILIO_LE + 1];
    uint64_t          twilio_sum_us;
} bd_stats;


/* the slot of key: its own, a new one, or "other" when the table is full */

static bd_stats_slot_t *
bd_stats_slot(bd_stats_table_t *t, const char *key)
{
    size_t    len;
    unsigned  i;

    len = strlen(key);

    /* cut at a character's start: label values must be UTF-8 */
    if (len >= BD_STATS_KEY) {
        len = BD_STATS_KEY - 1;

        while (len > 0 && ((unsigned char) key[len] & 0xc0) == 0x80) {
            len--;
        }
    }

    for (i = 0; i < t->used; i++) {
        if (strncmp(t->slot[i].key, key, len) == 0
            && t->slot[i].key[len] == '\0')
        {
            return &t->slot[i];
        }
    }

    if (t->used == BD_STATS_KEYS) {
        memcpy(t->slot[BD_STATS_OTHER].key, "other", sizeof("other"));
        return &t->slot[BD_STATS_OTHER];
    }

    memcpy(t->slot[t->used].key, key, len);
    t->slot[t->used].key[len] = '\0';

    return &t->slot[t->used++];
}


void
bd_stats_openai_session(int reconnect)
{
    bd_stats.sessions++;

    if (reconnect) {
        bd_stats.reconnects++;
    }
}


void
bd_stats_openai_error(const char *code)
{
    bd_stats_slot(&bd_stats.errors, code && *code ? code : "none")->n[0]++;
}


void
bd_stats_tool(const char *name, int failed)
{
    bd_stats_slot(&bd_stats.tools, name && *name ? name : "none")
        ->n[failed ? 1 : 0]++;
}


void
bd_stats_twilio(long status, uint64_t us)
{
    char      key[16];
    unsigned  i;

    if (status <= 0 || status > 999) {
        memcpy(key, "error", sizeof("error"));

    } else {
        snprintf(key, sizeof(key), "%ld", status);
    }

    bd_stats_slot(&bd_stats.statuses, key)->n[0]++;

    for (i = 0; i < BD_STATS_TWILIO_LE && us > bd_stats_twilio_le_us[i];
         i++)
    {
        /* void */
    }

    bd_stats.twilio_bucket[i]++;
    bd_stats.twilio_sum_us += us;
}


void
bd_stats_refused(void)
{
    bd_stats.refused++;
}


void
bd_stats_reset(void)
{
    memset(&bd_stats, 0, sizeof(bd_stats));
}


/* appends to buf; past its end nothing more is written */

static void
bd_stats_put(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    int      n;
    va_list  args;

    if (*len >= size) {
        return;
    }

    va_start(args, fmt);
    n = vsnprintf(buf + *len, size - *len, fmt, args);
    va_end(args);

    if (n < 0 || (size_t) n >= size - *len) {
        *len = size;
        return;
    }

    *len += (size_t) n;
}


/* a label value, escaped: \ " and newline; out holds 2 * BD_STATS_KEY */

static const char *
bd_stats_escape(const char *s, char *out)
{
    char  *p;

    for (p = out; *s; s++) {
        if (*s == '\\' || *s == '"') {
            *p++ = '\\';
            *p++ = *s;

        } else if (*s == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else {
            *p++ = *s;
        }
    }

    *p = '\0';

    return out;
}


static void
bd_stats_table(char *buf, size_t size, size_t *len, bd_stats_table_t *t,
    const char *name, const char *label)
{
    char      esc[2 * BD_STATS_KEY];
    unsigned  i;

    /* the slots past the used ones are empty, up to "other"'s */

    for (i = 0; i <= BD_STATS_KEYS; i++) {
        if (t->slot[i].key[0] == '\0') {
            continue;
        }

        bd_stats_put(buf, size, len, "%s{%s=\"%s\"} %llu\n", name, label,
                     bd_stats_escape(t->slot[i].key, esc),
                     (unsigned long long) t->slot[i].n[0]);
    }
}


size_t
bd_stats_render(char *buf, size_t size, unsigned calls)
{
    char       esc[2 * BD_STATS_KEY];
    size_t     len;
    unsigned   i;
    uint64_t   total;

    len = 0;

    bd_stats_put(buf, size, &len,
                 "voice_bridged_calls %u\n"
                 "voice_bridged_calls_refused_total %llu\n"
                 "voice_openai_sessions_total %llu\n"
                 "voice_openai_reconnects_total %llu\n", calls,
                 (unsigned long long) bd_stats.refused,
                 (unsigned long long) bd_stats.sessions,
                 (unsigned long long) bd_stats.reconnects);

    bd_stats_table(buf, size, &len, &bd_stats.errors,
                   "voice_openai_errors_total", "code");

    for (i = 0; i <= BD_STATS_KEYS; i++) {
        if (bd_stats.tools.slot[i].key[0] == '\0') {
            continue;
        }

        bd_stats_escape(bd_stats.tools.slot[i].key, esc);

        bd_stats_put(buf, size, &len,
                     "voice_tool_calls_total{name=\"%s\",outcome=\"ok\"} "
                     "%llu\n"
                     "voice_tool_calls_total{name=\"%s\",outcome=\"error\"} "
                     "%llu\n", esc,
                     (unsigned long long) bd_stats.tools.slot[i].n[0], esc,
                     (unsigned long long) bd_stats.tools.slot[i].n[1]);
    }

    bd_stats_table(buf, size, &len, &bd_stats.statuses,
                   "voice_twilio_requests_total", "status");

    total = 0;

    for (i = 0; i <= BD_STATS_TWILIO_LE; i++) {
        total += bd_stats.twilio_bucket[i];
        bd_stats_put(buf, size, &len,
                     "voice_twilio_request_seconds_bucket{le=\"%s\"} %llu\n",
                     i < BD_STATS_TWILIO_LE ? bd_stats_twilio_le[i] : "+Inf",
                     (unsigned long long) total);
    }

    bd_stats_put(buf, size, &len,
                 "voice_twilio_request_seconds_sum %llu.%06llu\n"
                 "voice_twilio_request_seconds_count %llu\n",
                 (unsigned long long) (bd_stats.twilio_sum_us / 1000000),
                 (unsigned long long) (bd_stats.twilio_sum_us % 1000000),
                 (unsigned long long) total);

    /* bounded by construction; a cut line would be a wrong figure */
    if (len >= size) {
        len = 0;
    }

    return len;
}
