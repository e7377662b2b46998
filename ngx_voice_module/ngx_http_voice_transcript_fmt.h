/*
 * ngx_http_voice_transcript_fmt.h: formats of the transcript store that
 * need no nginx: UTC timestamps (ISO 8601, and the file-name-safe form),
 * the plain-text rendering of a stored transcript, the merge of a call's
 * two records into one, the record a journal left behind becomes, a
 * record's file name, and the walk over the records a directory holds.
 *
 * Leaf code (libc only, on common/voice_json.c), unit tested and fuzzed
 * outside nginx; ngx_http_voice_transcript.c, ngx_http_voice_recover.c,
 * ngx_http_voice_transcript_get.c and ngx_http_voice_keep.c call it, from
 * the event loop and from their thread-pool tasks (every function here is
 * reentrant; the walk blocks on the disk, so only threads of the pool
 * take it).
 */

#ifndef NGX_HTTP_VOICE_TRANSCRIPT_FMT_H
#define NGX_HTTP_VOICE_TRANSCRIPT_FMT_H

#include <stddef.h>
#include <stdint.h>
#include <limits.h>
#include <dirent.h>

#include "voice_json.h"


/* "2026-11-24T10:15:00.123Z": 24 characters, no NUL */
#define NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN   24

/* a record's file name, {callSid}_{phone}_{file-safe time}.json, at most
 * (no NUL): a call SID, a phone of 32 */
#define NGX_HTTP_VOICE_TRANSCRIPT_FILE_MAX                                    \
    (34 + 1 + 32 + 1 + NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN + 5)

/* a path's longest, with its NUL, as nginx's NGX_MAX_PATH */
#if defined(PATH_MAX)
#define NGX_HTTP_VOICE_TRANSCRIPT_PATH_MAX   PATH_MAX
#else
#define NGX_HTTP_VOICE_TRANSCRIPT_PATH_MAX   4096
#endif


/*
 * Writes ms (milliseconds since the Unix epoch) as UTC into out
 * (NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN bytes).  file_safe uses '-' instead
 * of ':' and '.', as in "2026-11-24T10-15-00-123Z", which every file
 * system accepts.
 */
void ngx_http_voice_transcript_fmt_time(uint64_t ms, uint8_t *out,
    int file_safe);

/*
 * Renders a stored transcript ({"transcript": [{"role", "text"}, ...]})
 * as text: one line per utterance, "User: ..." or "Assistant: ...", with
 * line breaks inside an utterance turned into spaces.  toks has ntoks
 * entries (len / 2 + 2 always suffice); out has cap bytes (len always
 * suffices: the text is never longer than the JSON it comes from).
 * Returns the text's length, or (size_t) -1 if the JSON is not a
 * transcript.
 */
size_t ngx_http_voice_transcript_fmt_text(const uint8_t *json, size_t len,
    voice_json_tok_t *toks, unsigned ntoks, uint8_t *out,
    size_t cap);

/*
 * One record for a call that goes on in a second stream (back from a
 * transfer nobody answered): the entries of the earlier document (prev)
 * come first, then those of the new one (next), whose other members --
 * the call's outcome -- win.  Both are documents this module wrote.  out
 * has cap bytes (prev_len + next_len + 16 suffice).  Returns the merged
 * length, or (size_t) -1 when either is not such a document.
 */
size_t ngx_http_voice_transcript_fmt_merge(const uint8_t *prev,
    size_t prev_len, const uint8_t *next, size_t next_len, uint8_t *out,
    size_t cap);


/*
 * A journal, TRANSCRIPT_DIR/.{name}.journal, is one JSON object per line:
 * first a header,
 *
 *     {"callSid":"CA...","phoneNumber":"...","timestamp":"...",
 *      "continued":false,"context":{...}}
 *
 * then one line per entry, as it happened, in the members of the record's
 * entries plus the entry's place in the conversation:
 *
 *     {"order":3,"role":"user","text":"...","timestamp":"..."}
 *
 * A line is written with one write(), so a crash can only tear the last
 * one; one whose write failed is cut off again, or, when even that fails,
 * ended by the next line's leading newline.  Either way a line that does
 * not parse is left out and nothing else is lost.
 */

/* the tokens one journal line may take: a tool's arguments are checked
 * against 1024 before they are journaled */
#define NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS   1100


/* an entry found in a journal: its line, and its place */
typedef struct {
    uint32_t   order;
    uint32_t   seq;         /* its line's number: ties keep journal order */
    size_t     start;
    size_t     len;
} ngx_http_voice_transcript_fmt_slot_t;


typedef struct {
    /* in: the record's names (from the journal's file name) */
    const char      *call_sid;
    const char      *phone;
    const uint8_t   *time;      /* ISO 8601, _TIME_LEN bytes */
    const char      *reason;    /* endReason: plain text, no '"' or '\\' */

    /* out */
    unsigned         entries;   /* entries kept */
    unsigned         dropped;   /* lines left out: torn, or not entries */
    int              header;    /* the header line was found */
    int              continued; /* it continues an earlier record */
} ngx_http_voice_transcript_fmt_journal_t;


/*
 * The record a journal left behind, for a call whose process died: the
 * record's usual members with "endedBy": "server", j->reason as
 * "endReason", "incomplete": true, the header's context, and the entries
 * in conversation order, exactly as the live record renders them (so
 * ngx_http_voice_transcript_fmt_text() and _merge() take it).  slots
 * holds nslots entries (more are left out); toks holds ntoks
 * (NGX_HTTP_VOICE_TRANSCRIPT_LINE_TOKS suffice for any line this module
 * writes); out has cap bytes (2 * len + 2048 + 96 * nslots suffice).
 * Returns the record's length, or (size_t) -1 when out is too small.
 */
size_t ngx_http_voice_transcript_fmt_recover(const uint8_t *journal,
    size_t len, ngx_http_voice_transcript_fmt_journal_t *j,
    ngx_http_voice_transcript_fmt_slot_t *slots, size_t nslots,
    voice_json_tok_t *toks, unsigned ntoks, uint8_t *out,
    size_t cap);

/*
 * A journal's record name, {callSid}_{phone}_{file-safe time}: checked the
 * way ngx_http_voice_transcript.c makes it (CA and 32 hex digits; a phone
 * of 1 to 32 characters of [A-Za-z0-9+-]; the time's shape).  On success
 * returns 1, with the phone's offset and length in name and the time,
 * back in ISO 8601, in iso (_TIME_LEN bytes); 0 when it is not such a name.
 */
int ngx_http_voice_transcript_fmt_name(const uint8_t *name, size_t len,
    size_t *phone, size_t *phone_len, uint8_t *iso);


/*
 * A walk over the records of a transcript directory: the files whose
 * name is a record's, {callSid}_{phone}_{file-safe time}.json, as
 * ngx_http_voice_transcript_fmt_name() checks it.  Journals and records
 * being written (their names start with a dot) and any other name are
 * passed over.  Each record comes with its name's parts and its full
 * path, so that no caller builds a path of its own.  Blocks on the disk:
 * only a thread of the pool walks.
 */
typedef struct {
    DIR             *dir;
    const uint8_t   *sid;       /* NULL, or only this call's records */
    size_t           dlen;      /* the directory's length, in buf */

    /* with sid: a name .{sid}_... was passed -- the call's journal, or
     * its record being written */
    int              live;

    /* the record _next() found, until it is called again */
    const char      *name;      /* its file name, NUL-terminated */
    size_t           len;       /* the name's length, ".json" included */
    size_t           phone;     /* the phone's offset in name */
    size_t           phone_len;
    uint8_t          iso[NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN];  /* start */
    const char      *path;      /* directory and name, NUL-terminated, in
                                   buf; NULL when longer than _PATH_MAX */

    char             buf[NGX_HTTP_VOICE_TRANSCRIPT_PATH_MAX];
} ngx_http_voice_transcript_fmt_dir_t;


/*
 * Opens the walk over dir (NUL-terminated, ending in '/'), of every
 * record, or with sid (a call SID, 34 bytes) of that call's only.
 * Returns 0, or -1 with errno as opendir() left it.
 */
int ngx_http_voice_transcript_fmt_dir_open(
    ngx_http_voice_transcript_fmt_dir_t *d, const char *dir,
    const uint8_t *sid);

/* the next record, in the directory's order, in d: 1, or 0 when there
 * is none left */
int ngx_http_voice_transcript_fmt_dir_next(
    ngx_http_voice_transcript_fmt_dir_t *d);

/*
 * dir (as _open() had it) and name (len bytes) in d's buffer, for a name
 * kept from the walk: NULL when the path is longer than _PATH_MAX.  Valid
 * until the next call of _next() or _path(), after _close() too.
 */
const char *ngx_http_voice_transcript_fmt_dir_path(
    ngx_http_voice_transcript_fmt_dir_t *d, const char *name, size_t len);

/* ends the walk; again is harmless */
void ngx_http_voice_transcript_fmt_dir_close(
    ngx_http_voice_transcript_fmt_dir_t *d);


#endif /* NGX_HTTP_VOICE_TRANSCRIPT_FMT_H */
