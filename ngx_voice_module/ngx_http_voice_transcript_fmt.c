/*
 * ngx_http_voice_transcript_fmt.c: UTC timestamps, the plain-text
 * rendering of stored transcripts, the merge of two records, the record
 * of a journal whose call's process died, a record's file name, and the
 * one walk over a directory's records that the lookup, deletion and
 * listing (ngx_http_voice_transcript_get.c) and retention
 * (ngx_http_voice_keep.c) share (see ngx_http_voice_transcript_fmt.h).
 *
 * The date arithmetic is done by hand (days to civil date, after Howard
 * Hinnant's algorithm) rather than with gmtime_r(), so the result does not
 * depend on the process's time zone data or locale.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

#include "ngx_http_voice_transcript_fmt.h"


static uint8_t *
ngx_http_voice_transcript_fmt_num(uint8_t *p, unsigned v, int width)
{
    int  i;

    for (i = width - 1; i >= 0; i--) {
        p[i] = (uint8_t) ('0' + v % 10);
        v /= 10;
    }

    return p + width;
}


void
ngx_http_voice_transcript_fmt_time(uint64_t ms, uint8_t *out, int file_safe)
{
    int64_t    days, era, z;
    unsigned   doe, yoe, doy, mp, day, month, sec;
    int64_t    year;
    uint8_t   *p;

    days = (int64_t) (ms / 86400000);
    sec = (unsigned) ((ms / 1000) % 86400);

    /* days since 1970-01-01 to a proleptic Gregorian date */
    z = days + 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned) (z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    year = (int64_t) yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    day = doy - (153 * mp + 2) / 5 + 1;
    month = mp < 10 ? mp + 3 : mp - 9;
    year += (month <= 2);

    p = out;
    p = ngx_http_voice_transcript_fmt_num(p, (unsigned) (year % 10000), 4);
    *p++ = '-';
    p = ngx_http_voice_transcript_fmt_num(p, month, 2);
    *p++ = '-';
    p = ngx_http_voice_transcript_fmt_num(p, day, 2);
    *p++ = 'T';
    p = ngx_http_voice_transcript_fmt_num(p, sec / 3600, 2);
    *p++ = file_safe ? '-' : ':';
    p = ngx_http_voice_transcript_fmt_num(p, sec / 60 % 60, 2);
    *p++ = file_safe ? '-' : ':';
    p = ngx_http_voice_transcript_fmt_num(p, sec % 60, 2);
    *p++ = file_safe ? '-' : '.';
    p = ngx_http_voice_transcript_fmt_num(p, (unsigned) (ms % 1000), 3);
    *p = 'Z';
}


/* appends s; 0 when out is full */
static int
ngx_http_voice_transcript_fmt_put(uint8_t *out, size_t cap, size_t *used,
    const void *s, size_t len)
{
    if (cap - *used < len) {
        return 0;
    }

    memcpy(out + *used, s, len);
    *used += len;

    return 1;
}


/* line breaks become spaces: the text has one line per entry */
static void
ngx_http_voice_transcript_fmt_oneline(uint8_t *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] == '\n' || p[i] == '\r') {
            p[i] = ' ';
        }
    }
}


/* appends string token t unescaped, on one line; 0 when it cannot */
static int
ngx_http_voice_transcript_fmt_str(const uint8_t *json,
    voice_json_tok_t *t, uint8_t *out, size_t cap, size_t *used)
{
    size_t  tlen;

    tlen = voice_json_unescape(json, t, out + *used, cap - *used);
    if (tlen == (size_t) -1) {
        return 0;
    }

    ngx_http_voice_transcript_fmt_oneline(out + *used, tlen);
    *used += tlen;

    return 1;
}


#define PUT(s)                                                                \
    if (!ngx_http_voice_transcript_fmt_put(out, cap, &used, s,               \
                                           sizeof(s) - 1))                   \
    {                                                                         \
        return (size_t) -1;                                                   \
    }


/*
 * The plain text form of a stored record: one line per entry,
 *
 *     User: ...
 *     Assistant: ...
 *     Tool: NAME {"arguments": ...} -> OUTPUT
 *     Keypad: 5
 *     Note: OpenAI session 2 took over (...)
 *
 * A reply the caller cut off is what they heard of it (nothing at all:
 * no line).
 */

size_t
ngx_http_voice_transcript_fmt_text(const uint8_t *json, size_t len,
    voice_json_tok_t *toks, unsigned ntoks, uint8_t *out,
    size_t cap)
{
    int        n, list, item, role, text, name, args, output, digit;
    size_t     used, alen;
    uint32_t   k;

    n = voice_json_parse(json, len, toks, ntoks, NULL);
    if (n < 1 || toks[0].type != VOICE_JSON_OBJECT) {
        return (size_t) -1;
    }

    list = voice_json_get(json, toks, 0, "transcript");
    if (list < 0 || toks[list].type != VOICE_JSON_ARRAY) {
        return (size_t) -1;
    }

    used = 0;
    item = list + 1;

    for (k = 0; k < toks[list].size; k++, item = (int) toks[item].next) {

        if (toks[item].type != VOICE_JSON_OBJECT) {
            return (size_t) -1;
        }

        role = voice_json_get(json, toks, item, "role");

        if (role < 0 || toks[role].type != VOICE_JSON_STRING) {
            return (size_t) -1;
        }

        if (voice_json_str_eq(json, toks, role, "tool")) {
            name = voice_json_get(json, toks, item, "name");
            args = voice_json_get(json, toks, item, "arguments");
            output = voice_json_get(json, toks, item, "output");

            if (name < 0 || args < 0 || output < 0
                || toks[name].type != VOICE_JSON_STRING
                || toks[args].type != VOICE_JSON_OBJECT
                || toks[output].type != VOICE_JSON_STRING)
            {
                return (size_t) -1;
            }

            PUT("Tool: ");

            if (!ngx_http_voice_transcript_fmt_str(json, &toks[name], out,
                                                   cap, &used))
            {
                return (size_t) -1;
            }

            PUT(" ");

            /* the arguments as stored, on one line whatever their white
             * space: a string inside holds no raw line break */
            alen = toks[args].end - toks[args].start;

            if (!ngx_http_voice_transcript_fmt_put(out, cap, &used,
                                                   json + toks[args].start,
                                                   alen))
            {
                return (size_t) -1;
            }

            ngx_http_voice_transcript_fmt_oneline(out + used - alen, alen);

            PUT(" -> ");

            if (!ngx_http_voice_transcript_fmt_str(json, &toks[output], out,
                                                   cap, &used))
            {
                return (size_t) -1;
            }

            PUT("\n");
            continue;
        }

        if (voice_json_str_eq(json, toks, role, "dtmf")) {
            digit = voice_json_get(json, toks, item, "digit");

            if (digit < 0 || toks[digit].type != VOICE_JSON_STRING) {
                return (size_t) -1;
            }

            PUT("Keypad: ");

            if (!ngx_http_voice_transcript_fmt_str(json, &toks[digit], out,
                                                   cap, &used))
            {
                return (size_t) -1;
            }

            PUT("\n");
            continue;
        }

        text = voice_json_get(json, toks, item, "text");

        if (text < 0 || toks[text].type != VOICE_JSON_STRING) {
            return (size_t) -1;
        }

        if (voice_json_str_eq(json, toks, role, "user")) {
            PUT("User: ");

        } else if (voice_json_str_eq(json, toks, role, "assistant")) {

            /* a reply cut off before a word of it played: nothing said */
            if (toks[text].end == toks[text].start) {
                continue;
            }

            PUT("Assistant: ");

        } else if (voice_json_str_eq(json, toks, role, "note")) {
            PUT("Note: ");

        } else {
            return (size_t) -1;
        }

        if (!ngx_http_voice_transcript_fmt_str(json, &toks[text], out, cap,
                                               &used))
        {
            return (size_t) -1;
        }

        PUT("\n");
    }

    return used;
}


/*
 * Where the entries start: just after the "transcript" member's '['.  The
 * key with a space after its colon is only ever written by the record
 * renderer, first at the top level: tool arguments are compact JSON, and
 * a string value cannot hold an unescaped quote.
 */

static const uint8_t *
ngx_http_voice_transcript_fmt_entries(const uint8_t *doc, size_t len)
{
    size_t  i;

    static const char  key[] = "\n  \"transcript\": [";

    if (len < sizeof(key) - 1 || doc[0] != '{') {
        return NULL;
    }

    for (i = 0; i + sizeof(key) - 1 <= len; i++) {
        if (memcmp(doc + i, key, sizeof(key) - 1) == 0) {
            return doc + i + sizeof(key) - 1;
        }
    }

    return NULL;
}


static int
ngx_http_voice_transcript_fmt_space(uint8_t c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}


size_t
ngx_http_voice_transcript_fmt_merge(const uint8_t *prev, size_t prev_len,
    const uint8_t *next, size_t next_len, uint8_t *out, size_t cap)
{
    size_t          head, n;
    uint8_t        *p;
    const uint8_t  *ps, *pe, *ns, *ne;

    ps = ngx_http_voice_transcript_fmt_entries(prev, prev_len);
    ns = ngx_http_voice_transcript_fmt_entries(next, next_len);

    if (ps == NULL || ns == NULL || cap < prev_len + next_len + 16) {
        return (size_t) -1;
    }

    /* prev's entries: up to the array's closing bracket, trimmed */

    pe = prev + prev_len;

    while (pe > ps && pe[-1] != ']') {
        pe--;
    }

    if (pe == ps) {
        return (size_t) -1;
    }

    pe--;

    while (ps < pe && ngx_http_voice_transcript_fmt_space(*ps)) {
        ps++;
    }

    while (pe > ps && ngx_http_voice_transcript_fmt_space(pe[-1])) {
        pe--;
    }

    /* does next have entries of its own? */

    ne = ns;

    while (ne < next + next_len && ngx_http_voice_transcript_fmt_space(*ne)) {
        ne++;
    }

    if (ne == next + next_len) {
        return (size_t) -1;
    }

    head = (size_t) (ns - next);
    p = out;

    memcpy(p, next, head);
    p += head;

    if (pe > ps) {
        n = (size_t) (pe - ps);

        memcpy(p, "\n    ", 5);
        p += 5;
        memcpy(p, ps, n);
        p += n;

        if (*ne == ']') {
            memcpy(p, "\n  ", 3);
            p += 3;

        } else {
            *p++ = ',';
        }
    }

    memcpy(p, ns, next_len - head);
    p += next_len - head;

    return (size_t) (p - out);
}


static int
ngx_http_voice_transcript_fmt_digits(const uint8_t *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
    }

    return 1;
}


int
ngx_http_voice_transcript_fmt_name(const uint8_t *name, size_t len,
    size_t *phone, size_t *phone_len, uint8_t *iso)
{
    size_t          i, plen;
    uint8_t         c;
    const uint8_t  *t;

    /* CA + 32 hex, '_', a phone of 1 to 32, '_', the time */

    if (len < 34 + 1 + 1 + 1 + NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN
        || len > 34 + 1 + 32 + 1 + NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN
        || name[0] != 'C' || name[1] != 'A' || name[34] != '_')
    {
        return 0;
    }

    for (i = 2; i < 34; i++) {
        c = name[i];

        if (!((c >= '0' && c <= '9') || ((c | 0x20) >= 'a'
                                         && (c | 0x20) <= 'f')))
        {
            return 0;
        }
    }

    t = name + len - NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN;
    plen = (size_t) (t - 1 - (name + 35));

    if (t[-1] != '_') {
        return 0;
    }

    for (i = 35; i < 35 + plen; i++) {
        c = name[i];

        if (!((c >= '0' && c <= '9') || c == '+' || c == '-'
              || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')))
        {
            return 0;
        }
    }

    /* 2026-11-24T10-15-00-123Z */

    if (!ngx_http_voice_transcript_fmt_digits(t, 4) || t[4] != '-'
        || !ngx_http_voice_transcript_fmt_digits(t + 5, 2) || t[7] != '-'
        || !ngx_http_voice_transcript_fmt_digits(t + 8, 2) || t[10] != 'T'
        || !ngx_http_voice_transcript_fmt_digits(t + 11, 2) || t[13] != '-'
        || !ngx_http_voice_transcript_fmt_digits(t + 14, 2) || t[16] != '-'
        || !ngx_http_voice_transcript_fmt_digits(t + 17, 2) || t[19] != '-'
        || !ngx_http_voice_transcript_fmt_digits(t + 20, 3) || t[23] != 'Z')
    {
        return 0;
    }

    memcpy(iso, t, NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN);
    iso[13] = ':';
    iso[16] = ':';
    iso[19] = '.';

    *phone = 35;
    *phone_len = plen;

    return 1;
}


int
ngx_http_voice_transcript_fmt_dir_open(ngx_http_voice_transcript_fmt_dir_t *d,
    const char *dir, const uint8_t *sid)
{
    size_t  dlen;

    dlen = strlen(dir);

    d->dir = opendir(dir);
    if (d->dir == NULL) {
        return -1;
    }

    d->sid = sid;
    d->live = 0;
    d->name = NULL;
    d->path = NULL;

    /* the directory is written once: each path only appends a name */
    d->dlen = dlen < sizeof(d->buf) ? dlen : sizeof(d->buf);
    memcpy(d->buf, dir, d->dlen);

    return 0;
}


int
ngx_http_voice_transcript_fmt_dir_next(ngx_http_voice_transcript_fmt_dir_t *d)
{
    size_t          len;
    const char     *name;
    struct dirent  *de;

    if (d->dir == NULL) {
        return 0;
    }

    while ((de = readdir(d->dir)) != NULL) {
        name = de->d_name;
        len = strlen(name);

        if (d->sid != NULL) {

            if (len > 34 + 2 && name[0] == '.'
                && memcmp(name + 1, d->sid, 34) == 0 && name[34 + 1] == '_')
            {
                d->live = 1;
                continue;
            }

            if (len < 34 || memcmp(name, d->sid, 34) != 0) {
                continue;
            }
        }

        if (len < 6 || name[0] == '.'
            || strcmp(name + len - 5, ".json") != 0
            || !ngx_http_voice_transcript_fmt_name((const uint8_t *) name,
                                                   len - 5, &d->phone,
                                                   &d->phone_len, d->iso))
        {
            continue;
        }

        d->name = name;
        d->len = len;
        d->path = ngx_http_voice_transcript_fmt_dir_path(d, name, len);

        return 1;
    }

    d->name = NULL;
    d->path = NULL;

    return 0;
}


const char *
ngx_http_voice_transcript_fmt_dir_path(ngx_http_voice_transcript_fmt_dir_t *d,
    const char *name, size_t len)
{
    if (d->dlen + len + 1 > sizeof(d->buf)) {
        return NULL;
    }

    memcpy(d->buf + d->dlen, name, len);
    d->buf[d->dlen + len] = '\0';

    return d->buf;
}


void
ngx_http_voice_transcript_fmt_dir_close(ngx_http_voice_transcript_fmt_dir_t *d)
{
    if (d->dir != NULL) {
        (void) closedir(d->dir);
        d->dir = NULL;
    }

    d->name = NULL;
    d->path = NULL;
}


/* the roles of a record's entries, and what each holds */

#define NGX_HTTP_VOICE_FMT_TEXT    0
#define NGX_HTTP_VOICE_FMT_TOOL    1
#define NGX_HTTP_VOICE_FMT_DTMF    2

static const struct {
    const char  *name;
    int          kind;
} ngx_http_voice_transcript_fmt_roles[] = {
    { "user", NGX_HTTP_VOICE_FMT_TEXT },
    { "assistant", NGX_HTTP_VOICE_FMT_TEXT },
    { "note", NGX_HTTP_VOICE_FMT_TEXT },
    { "tool", NGX_HTTP_VOICE_FMT_TOOL },
    { "dtmf", NGX_HTTP_VOICE_FMT_DTMF }
};

#define NGX_HTTP_VOICE_FMT_NROLES                                             \
    (sizeof(ngx_http_voice_transcript_fmt_roles)                              \
     / sizeof(ngx_http_voice_transcript_fmt_roles[0]))


/* one journal entry's members: token indexes, checked */
typedef struct {
    int        role;        /* index into _fmt_roles */
    int        text;        /* the text, a tool's output, a key */
    int        name;
    int        arguments;
    int        generated;   /* a reply cut off: all it said, or -1 */
    int        latency;     /* a reply's latencyMs, or -1 */
    int        timestamp;
    uint32_t   order;
} ngx_http_voice_transcript_fmt_member_t;


static int
ngx_http_voice_transcript_fmt_string(const uint8_t *line,
    voice_json_tok_t *toks, int obj, const char *key)
{
    int  i;

    i = voice_json_get(line, toks, obj, key);

    if (i < 0 || toks[i].type != VOICE_JSON_STRING) {
        return -1;
    }

    return i;
}


/*
 * Parses one journal line that is an entry: 1 with its members, 0 when it
 * is not one (a header gives 0 too).
 */

static int
ngx_http_voice_transcript_fmt_entry(const uint8_t *line, size_t len,
    voice_json_tok_t *toks, unsigned ntoks,
    ngx_http_voice_transcript_fmt_member_t *m)
{
    int       n, r, o;
    size_t    k;
    uint64_t  v;

    n = voice_json_parse(line, len, toks, ntoks, NULL);
    if (n < 1 || toks[0].type != VOICE_JSON_OBJECT) {
        return 0;
    }

    r = ngx_http_voice_transcript_fmt_string(line, toks, 0, "role");
    if (r < 0) {
        return 0;
    }

    for (k = 0; k < NGX_HTTP_VOICE_FMT_NROLES; k++) {
        if (voice_json_str_eq(line, toks, r,
                          ngx_http_voice_transcript_fmt_roles[k].name))
        {
            break;
        }
    }

    if (k == NGX_HTTP_VOICE_FMT_NROLES) {
        return 0;
    }

    m->role = (int) k;
    m->name = -1;
    m->arguments = -1;
    m->generated = -1;
    m->latency = -1;

    o = voice_json_get(line, toks, 0, "order");
    if (o < 0 || toks[o].type != VOICE_JSON_NUMBER
        || !voice_json_uint(line, &toks[o], &v) || v > UINT32_MAX)
    {
        return 0;
    }

    m->order = (uint32_t) v;

    /* copied as written into the record: the shape the record has */
    m->timestamp = ngx_http_voice_transcript_fmt_string(line, toks, 0,
                                                        "timestamp");
    if (m->timestamp < 0 || toks[m->timestamp].escaped
        || toks[m->timestamp].end - toks[m->timestamp].start
           != NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN)
    {
        return 0;
    }

    switch (ngx_http_voice_transcript_fmt_roles[k].kind) {

    case NGX_HTTP_VOICE_FMT_TOOL:
        m->name = ngx_http_voice_transcript_fmt_string(line, toks, 0, "name");
        m->text = ngx_http_voice_transcript_fmt_string(line, toks, 0,
                                                       "output");
        m->arguments = voice_json_get(line, toks, 0, "arguments");

        return m->name >= 0 && m->text >= 0 && m->arguments >= 0
               && toks[m->arguments].type == VOICE_JSON_OBJECT;

    case NGX_HTTP_VOICE_FMT_DTMF:
        m->text = ngx_http_voice_transcript_fmt_string(line, toks, 0,
                                                       "digit");
        return m->text >= 0;

    default:
        m->text = ngx_http_voice_transcript_fmt_string(line, toks, 0, "text");
        m->generated = ngx_http_voice_transcript_fmt_string(line, toks, 0,
                                                            "generated");
        m->latency = voice_json_get(line, toks, 0, "latencyMs");

        if (m->latency >= 0
            && (toks[m->latency].type != VOICE_JSON_NUMBER
                || !voice_json_uint(line, &toks[m->latency], &v)
                || v > UINT32_MAX))
        {
            m->latency = -1;
        }

        return m->text >= 0;
    }
}


static int
ngx_http_voice_transcript_fmt_slot_cmp(const void *a, const void *b)
{
    const ngx_http_voice_transcript_fmt_slot_t  *sa = a, *sb = b;

    if (sa->order != sb->order) {
        return sa->order < sb->order ? -1 : 1;
    }

    return sa->seq < sb->seq ? -1 : (sa->seq > sb->seq);
}


#define PUTN(s, n)                                                            \
    if (!ngx_http_voice_transcript_fmt_put(out, cap, &used, s, n)) {          \
        return (size_t) -1;                                                   \
    }

#define PUTZ(s)  PUTN(s, strlen(s))

#define PUTT(t)                                                               \
    PUTN(line + (t)->start, (size_t) ((t)->end - (t)->start))


size_t
ngx_http_voice_transcript_fmt_recover(const uint8_t *journal, size_t len,
    ngx_http_voice_transcript_fmt_journal_t *j,
    ngx_http_voice_transcript_fmt_slot_t *slots, size_t nslots,
    voice_json_tok_t *toks, unsigned ntoks, uint8_t *out,
    size_t cap)
{
    int                                     n, c, x;
    size_t                                  used, nused, i, llen, ctx_len;
    uint32_t                                seq;
    const uint8_t                          *p, *end, *nl, *line, *ctx;
    ngx_http_voice_transcript_fmt_member_t  m;

    j->entries = 0;
    j->dropped = 0;
    j->header = 0;
    j->continued = 0;

    ctx = NULL;
    ctx_len = 0;
    nused = 0;
    seq = 0;

    p = journal;
    end = journal + len;

    /* which lines are entries, and where each goes */

    while (p < end) {
        nl = memchr(p, '\n', (size_t) (end - p));
        line = p;
        llen = (size_t) ((nl ? nl : end) - p);
        p = nl ? nl + 1 : end;
        seq++;

        /* a blank line ends a line that could not be cut back */
        for (i = 0; i < llen; i++) {
            if (line[i] != ' ' && line[i] != '\r' && line[i] != '\t') {
                break;
            }
        }

        if (i == llen) {
            continue;
        }

        if (ngx_http_voice_transcript_fmt_entry(line, llen, toks, ntoks, &m))
        {
            if (nused == nslots) {
                j->dropped++;
                continue;
            }

            slots[nused].order = m.order;
            slots[nused].seq = seq;
            slots[nused].start = (size_t) (line - journal);
            slots[nused].len = llen;
            nused++;
            continue;
        }

        /* the header: the first line with callSid and no role */

        n = voice_json_parse(line, llen, toks, ntoks, NULL);

        if (!j->header && n >= 1 && toks[0].type == VOICE_JSON_OBJECT
            && voice_json_get(line, toks, 0, "role") < 0
            && ngx_http_voice_transcript_fmt_string(line, toks, 0, "callSid")
               >= 0)
        {
            j->header = 1;

            x = voice_json_get(line, toks, 0, "continued");
            j->continued = (x >= 0
                            && toks[x].type == VOICE_JSON_TRUE);

            c = voice_json_get(line, toks, 0, "context");
            if (c >= 0 && toks[c].type == VOICE_JSON_OBJECT) {
                ctx = line + toks[c].start;
                ctx_len = toks[c].end - toks[c].start;
            }

            continue;
        }

        j->dropped++;
    }

    if (nused > 1) {
        qsort(slots, nused, sizeof(ngx_http_voice_transcript_fmt_slot_t),
              ngx_http_voice_transcript_fmt_slot_cmp);
    }

    used = 0;

    PUTZ("{\n  \"callSid\": \"");
    PUTZ(j->call_sid);
    PUTZ("\",\n  \"phoneNumber\": \"");
    PUTZ(j->phone);
    PUTZ("\",\n  \"timestamp\": \"");
    PUTN(j->time, NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN);
    PUTZ("\",\n  \"endedBy\": \"server\",\n  \"endReason\": \"");
    PUTZ(j->reason);
    PUTZ("\",\n  \"incomplete\": true,\n");

    if (ctx) {
        PUTZ("  \"context\": ");
        PUTN(ctx, ctx_len);
        PUTZ(",\n");
    }

    PUTZ("  \"transcript\": [");

    for (i = 0; i < nused; i++) {
        line = journal + slots[i].start;

        /* parsed before: it parses the same way again */
        (void) ngx_http_voice_transcript_fmt_entry(line, slots[i].len, toks,
                                                   ntoks, &m);

        PUTZ(i ? ",\n    {\n      \"role\": \""
               : "\n    {\n      \"role\": \"");
        PUTZ(ngx_http_voice_transcript_fmt_roles[m.role].name);
        PUTZ("\",\n      ");

        switch (ngx_http_voice_transcript_fmt_roles[m.role].kind) {

        case NGX_HTTP_VOICE_FMT_TOOL:
            PUTZ("\"name\": \"");
            PUTT(&toks[m.name]);
            PUTZ("\",\n      \"arguments\": ");
            PUTT(&toks[m.arguments]);
            PUTZ(",\n      \"output\": \"");
            break;

        case NGX_HTTP_VOICE_FMT_DTMF:
            PUTZ("\"digit\": \"");
            break;

        default:
            PUTZ("\"text\": \"");
        }

        PUTT(&toks[m.text]);

        if (m.generated >= 0) {
            PUTZ("\",\n      \"interrupted\": true,"
                 "\n      \"generated\": \"");
            PUTT(&toks[m.generated]);
        }

        PUTZ("\"");

        if (m.latency >= 0) {
            PUTZ(",\n      \"latencyMs\": ");
            PUTT(&toks[m.latency]);
        }

        PUTZ(",\n      \"timestamp\": \"");
        PUTT(&toks[m.timestamp]);
        PUTZ("\"\n    }");
    }

    PUTZ(nused ? "\n  ]\n}\n" : "]\n}\n");

    j->entries = (unsigned) nused;

    return used;
}
