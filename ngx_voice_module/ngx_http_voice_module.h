/*
 * ngx_http_voice_module.h: types shared by the files of the voice module,
 * and the functions they export to each other.
 *
 * The module is the public edge of the voice bridge.  Its files, by what
 * they do (a .h beside a .c is that file's interface, when the file is
 * leaf code or its interface is used by few):
 *
 *   configuration    config (nginx's build file),
 *                    ngx_http_voice_module.c (directives, their merge
 *                    and postconfiguration, life cycle),
 *                    ngx_http_voice_session.c (the assistant's settings,
 *                    a second module), ngx_http_voice_zone.c (shared
 *                    memory: what holds across workers)
 *   HTTP helpers     ngx_http_voice_http.c (a header, the answers, a
 *                    request body: what every handler shares)
 *   Twilio's HTTP    ngx_http_voice_webhook.c (its requests, signed:
 *                    ngx_http_voice_signature.c/.h),
 *                    ngx_http_voice_twiml.c,
 *                    ngx_http_voice_call_status.c
 *   the REST API     ngx_http_voice_rest.c, ngx_http_voice_auth.c (the
 *                    bearer token), ngx_http_voice_body.c/.h (its
 *                    bodies), ngx_http_voice_seal.c/.h (a call's sealed
 *                    context)
 *   media            ngx_http_voice_ws.c over ../common/voice_ws.c (the
 *                    WebSocket), ngx_http_voice_media.c (the Twilio
 *                    session, its events: ngx_http_voice_twilio.c/.h)
 *   calls            ngx_http_voice_call.c (a worker's calls, their life
 *                    cycle, which bridged carries each),
 *                    ngx_http_voice_bridge.c (the ZeroMQ channel),
 *                    ngx_http_voice_peer.c (which bridged answer, which
 *                    are full: the heartbeat),
 *                    ngx_http_voice_curve.c (its CURVE keys, for a
 *                    bridged on another host)
 *   records          ngx_http_voice_transcript.c (a call's record),
 *                    ngx_http_voice_outcome.c (what Twilio reports of
 *                    each call, in shared memory),
 *                    ngx_http_voice_store.c (its files, on the thread
 *                    pool), ngx_http_voice_recover.c (journals whose
 *                    process died), ngx_http_voice_transcript_get.c (the
 *                    lookup, listing and deletion),
 *                    ngx_http_voice_keep.c (retention),
 *                    ngx_http_voice_outbox.c (the post-call webhook, its
 *                    outbox: ngx_http_voice_outbox_fmt.c/.h),
 *                    ngx_http_voice_transcript_fmt.c/.h (formats, a
 *                    record's file name, the walk over a directory's
 *                    records),
 *                    ngx_http_voice_live.c (the live calls: their list,
 *                    a call's record as it grows, as Server-Sent Events)
 *   observing        ngx_http_voice_log.c (the call a request is about:
 *                    its error_log lines, $voice_call_sid and
 *                    $voice_call_status), ngx_http_voice_metrics.c
 *                    (voice_metrics: counters in shared memory, and
 *                    bridged's)
 *   leaf code        ../common/voice_json.c (the JSON tokenizer and string
 *                    writer), ../common/voice_b64.c (base64): shared
 *                    with bridged; ../common/voice_ws.c (RFC 6455
 *                    framing): shared with the benchmark tools
 *
 * The protocols these files speak -- Twilio's and OpenAI's -- are
 * summarized in docs/protocols.md, bridged's in docs/proto.md.
 */

#ifndef NGX_HTTP_VOICE_MODULE_H
#define NGX_HTTP_VOICE_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#if !(NGX_THREADS)
#error "the voice module needs nginx built --with-threads"
#endif

#include "voice_proto.h"
#include "voice_ws.h"
#include "ngx_http_voice_twilio.h"
#include "ngx_http_voice_body.h"
#include "ngx_http_voice_outbox_fmt.h"


#define NGX_HTTP_VOICE_SID_LEN       34
#define NGX_HTTP_VOICE_PHONE_MAX     32
#define NGX_HTTP_VOICE_CALL_STATUSES 10  /* CallStatus values counted */
#define NGX_HTTP_VOICE_CURVE_KEY     41  /* a CURVE key in Z85, and NUL */
#define NGX_HTTP_VOICE_CALL_STATUS_COMPLETED  5  /* and after: over */

/* a record's name, {callSid}_{phone}_{start}, at most */
#define NGX_HTTP_VOICE_CALL_NAME_MAX                                          \
    (NGX_HTTP_VOICE_SID_LEN + NGX_HTTP_VOICE_PHONE_MAX + 26)

/* what Twilio says when the assistant cannot go on (voice_fallback_message) */
#define NGX_HTTP_VOICE_FALLBACK                                               \
    "We are sorry, the assistant cannot continue this call right now. "      \
    "Please call again later. Goodbye."


/* what a location does: set by its handler directive */
typedef enum {
    NGX_HTTP_VOICE_NONE = 0,
    NGX_HTTP_VOICE_TWIML,
    NGX_HTTP_VOICE_MEDIA_STREAM,
    NGX_HTTP_VOICE_API_NUMBERS,
    NGX_HTTP_VOICE_API_CALL,
    NGX_HTTP_VOICE_API_END_CALL,
    NGX_HTTP_VOICE_API_TRANSCRIPT,
    NGX_HTTP_VOICE_API_TRANSCRIPTS,
    NGX_HTTP_VOICE_API_CALLS,
    NGX_HTTP_VOICE_STATUS,
    NGX_HTTP_VOICE_CALL_STATUS,
    NGX_HTTP_VOICE_METRICS
} ngx_http_voice_handler_e;


typedef struct ngx_http_voice_peer_s      ngx_http_voice_peer_t;
typedef struct ngx_http_voice_call_s      ngx_http_voice_call_t;
typedef struct ngx_http_voice_media_s     ngx_http_voice_media_t;
typedef struct ngx_http_voice_worker_s    ngx_http_voice_worker_t;
typedef struct ngx_http_voice_ws_s        ngx_http_voice_ws_t;
typedef struct ngx_http_voice_transcript_files_s
    ngx_http_voice_transcript_files_t;
typedef struct ngx_http_voice_outbox_s    ngx_http_voice_outbox_t;


/*
 * A location with a handler directive, noted as the directive is read:
 * postconfiguration walks these (ngx_http_voice_conf_walk()), and its
 * errors name the directive's file and line.
 */
typedef struct {
    void                      **loc_conf;       /* its confs, by ctx_index */
    ngx_str_t                   file;
    ngx_uint_t                  line;
} ngx_http_voice_conf_loc_t;


/* an environment variable or a secret file, read once at configuration */
typedef struct {
    ngx_str_t                   name;           /* the variable, or the
                                                   file's full name */
    ngx_uint_t                  file;           /* name is a file's */
    ngx_str_t                   value;          /* empty: unset */
} ngx_http_voice_conf_read_t;


typedef struct {
    ngx_array_t                 endpoints;      /* of ngx_str_t */
    ngx_uint_t                  hwm;
    ngx_msec_t                  heartbeat;
    ngx_msec_t                  shutdown_timeout;  /* then live calls are
                                                      ended politely */
    ngx_uint_t                  worker_sched;   /* 1: SCHED_BATCH */
    ngx_shm_zone_t             *zone;           /* voice_zone */
    ngx_shm_zone_t             *metrics;        /* the counters */
    ngx_array_t                 recover_dirs;   /* of recover_dir_t: the
                                                   transcript directories
                                                   of the media streams */
    ngx_str_t                   curve_key_file;         /* this host's */
    ngx_str_t                   curve_server_key_file;  /* bridged's */
    u_char                     *curve;          /* NULL: no CURVE; else
                                                   this host's public and
                                                   secret keys, bridged's
                                                   public key: 3 x _KEY */
    ngx_array_t                 outboxes;       /* of outbox_t *: the
                                                   webhook's */
    ngx_array_t                 locations;      /* of conf_loc_t: those
                                                   with a handler */
    ngx_array_t                 reads;          /* of conf_read_t */

    /* per-worker state, created in init_process */
    ngx_http_voice_worker_t    *worker;
} ngx_http_voice_main_conf_t;


typedef struct {
    ngx_http_voice_handler_e    handler;

    ngx_str_t                   public_url;     /* scheme://host[:port] */
    ngx_str_t                   twiml_url;      /* given to Calls.json */
    ngx_str_t                   stream_url;     /* wss://host/media-stream */
    ngx_str_t                   status_url;     /* given to Calls.json, or
                                                   empty: no callbacks */
    ngx_str_t                   fallback;       /* said when the stream
                                                   closes from our side;
                                                   empty: off */

    ngx_str_t                   transcript_dir; /* ends with '/' */
    ngx_thread_pool_t          *thread_pool;
    ngx_str_t                   thread_pool_name;
    ngx_msec_t                  transcript_wait;
    ngx_msec_t                  transcript_retry;
    time_t                      transcript_keep; /* s, 0: forever */

    ngx_flag_t                  signature;
    ngx_str_t                   auth_token;
    ngx_str_t                   auth_token_file;
    ngx_str_t                   api_token;      /* guards the API */
    ngx_str_t                   api_token_file;

    ngx_msec_t                  bridge_timeout;
    size_t                      max_body_size;
    ngx_int_t                   max_calls;      /* 0: no limit */

    size_t                      ws_max_message_size;
    size_t                      ws_send_buffer_size;
    ngx_msec_t                  ws_message_timeout;
    ngx_msec_t                  ws_ping_interval;

    ngx_str_t                   webhook_url;    /* empty: none */
    ngx_str_t                   webhook_secret;
    ngx_str_t                   webhook_secret_file;
    ngx_str_t                   webhook_outbox; /* empty: the default */
    ngx_msec_t                  webhook_retry;
    ngx_http_voice_outbox_t    *outbox;         /* where its records' go */
} ngx_http_voice_loc_conf_t;


/* the assistant's session settings (ngx_http_voice_session.c) */
typedef struct ngx_http_voice_session_conf_s  ngx_http_voice_session_conf_t;

/*
 * What one call sets over its location's settings (its /api/call
 * request's members, or a stream back from a transfer): JSON literals
 * (a string with its quotes, an object), empty when not set.
 */
typedef struct {
    ngx_str_t                   instructions;
    ngx_str_t                   greeting;
    ngx_str_t                   context;
    ngx_int_t                   machine_detection;  /* _BODY_AMD_* */
    ngx_str_t                   sealed;         /* all of it, as sealed by
                                                   the API: a transfer's
                                                   way back carries it */
} ngx_http_voice_session_extra_t;


/* a bridged as one worker sees it (ngx_http_voice_peer_state()) */
typedef enum {
    NGX_HTTP_VOICE_PEER_ST_NEW = 0,     /* has not answered yet: calls and
                                           requests are refused at once */
    NGX_HTTP_VOICE_PEER_ST_UP,          /* answers */
    NGX_HTTP_VOICE_PEER_ST_DOWN         /* answered once, no longer */
} ngx_http_voice_peer_state_e;


/* one configured bridged endpoint, in one worker */
struct ngx_http_voice_peer_s {
    ngx_str_t                   endpoint;
    ngx_uint_t                  index;
    void                       *sock;           /* ZeroMQ DEALER */
    ngx_connection_t           *conn;           /* wraps ZMQ_FD */
    void                       *mon;            /* its monitor's PAIR */
    ngx_connection_t           *mon_conn;       /* wraps that ZMQ_FD */
    ngx_msec_t                  last_seen;      /* any message from it */
    ngx_msec_t                  last_ping;
    uint64_t                    ping_id;        /* the last ping's */
    uint64_t                    ping_us;        /* and when it left */
    ngx_uint_t                  missed;         /* pings unanswered */
    ngx_uint_t                  dropped;        /* frames refused (HWM) */
    ngx_uint_t                  calls;          /* its own count, as its
                                                   last pong said */
    ngx_http_voice_peer_state_e state;
    unsigned                    full:1;         /* refuses new calls */
    unsigned                    curve:1;        /* its link uses CURVE */
    unsigned                    refused:4;      /* why its handshakes
                                                   failed, each said
                                                   once */
};


/*
 * One worker's channel to bridged (ngx_http_voice_bridge.c), NULL when no
 * voice_bridge is configured.  What waits for bridged is kept by the file
 * that waits: REST requests (ngx_http_voice_rest.c), webhook attempts
 * (ngx_http_voice_outbox.c), scrapes (ngx_http_voice_metrics.c), calls
 * (ngx_http_voice_call.c); the buffers of the media path by their users
 * (ngx_http_voice_ws.c, ngx_http_voice_media.c).
 */
struct ngx_http_voice_worker_s {
    void                       *zmq_ctx;
    ngx_http_voice_peer_t      *peers;
    ngx_uint_t                  npeers;
    ngx_uint_t                  next_any;       /* round robin */
    uint64_t                    next_request_id;
    unsigned                    contacted:1;    /* a bridged has answered
                                                   this worker, once */

    u_char                     *frame;          /* a proto frame to
                                                   bridged, sent at once */
    size_t                      frame_size;
};


/* a media WebSocket's life (ngx_http_voice_ws_state()) */
typedef enum {
    NGX_HTTP_VOICE_WS_ST_OPEN = 0,      /* messages flow */
    NGX_HTTP_VOICE_WS_ST_PINGED,        /* a quiet tick: our ping waits for
                                           its pong, or any input */
    NGX_HTTP_VOICE_WS_ST_CLOSING,       /* our close sent: theirs awaited,
                                           a bounded time */
    NGX_HTTP_VOICE_WS_ST_CLOSED,        /* theirs received: the closing
                                           handshake is over */
    NGX_HTTP_VOICE_WS_ST_DONE           /* the request is being finalized,
                                           once */
} ngx_http_voice_ws_state_e;


/*
 * The media WebSocket of one call (ngx_http_voice_ws.c): the RFC 6455
 * connection taken over from the HTTP request.  The Twilio session on top
 * of it is ngx_http_voice_media.c's.
 */
struct ngx_http_voice_ws_s {
    ngx_http_request_t         *request;
    ngx_connection_t           *connection;
    ngx_http_voice_media_t     *media;
    ngx_http_voice_loc_conf_t  *vlcf;

    voice_ws_parser_t           parser;
    u_char                     *msg;            /* a message split across
                                                   reads, or NULL */

    /* bytes accepted for sending but not yet written */
    u_char                     *out;
    size_t                      out_pos;
    size_t                      out_last;
    size_t                      out_cap;

    ngx_event_t                 finalizer;      /* posted: finalize once */
    ngx_event_t                 slow;           /* timer: a message begun
                                                   must end in time */
    ngx_uint_t                  dropped;        /* frames not queued */
    ngx_uint_t                  control;        /* control frames, this tick */

    ngx_http_voice_ws_state_e   state;
    unsigned                    active:1;       /* any input this tick (an
                                                   observation the tick
                                                   reads, not a state) */
};


/* what Twilio reported of a call (ngx_http_voice_outcome.c) */
typedef struct {
    ngx_uint_t                  status;         /* CallStatus index */
    ngx_uint_t                  final;          /* the call is over */
    ngx_int_t                   duration;       /* s, -1 unknown */
} ngx_http_voice_outcome_t;


/* a call's life (ngx_http_voice_call.c) */
typedef enum {
    NGX_HTTP_VOICE_CALL_ST_LIVE = 0,    /* media flowing */
    NGX_HTTP_VOICE_CALL_ST_ENDING,      /* stream over; awaiting call.done */
    NGX_HTTP_VOICE_CALL_ST_REPORT,      /* awaiting Twilio's final status */
    NGX_HTTP_VOICE_CALL_ST_WRITING,     /* final file being written */
    NGX_HTTP_VOICE_CALL_ST_DONE
} ngx_http_voice_call_state_e;


/*
 * A call's record on the thread pool, one operation at a time
 * (ngx_http_voice_transcript.c; ngx_http_voice_transcript_io_state() is
 * the one transition): IDLE -> TASK -> IDLE, or on a failure IDLE ->
 * RETRY -> IDLE when the retry timer fires (or the record is closed).
 * Which operation comes next (journal or record) is the call's state.
 */
typedef enum {
    NGX_HTTP_VOICE_CALL_IO_IDLE = 0,    /* nothing in flight */
    NGX_HTTP_VOICE_CALL_IO_TASK,        /* an operation on the pool */
    NGX_HTTP_VOICE_CALL_IO_RETRY        /* one failed: the next waits for
                                           the retry timer */
} ngx_http_voice_call_io_e;


/* one entry of a call's record: an utterance, a tool call, a key */
typedef struct {
    uint32_t                    order;
    uint32_t                    role;           /* VOICE_PROTO_ROLE_* */
    uint64_t                    time;           /* ms since the epoch */
    ngx_str_t                   text;           /* a tool's: its output;
                                                   a key's: the digit */
    ngx_str_t                   name;           /* a tool's */
    ngx_str_t                   arguments;      /* a tool's: JSON object */
    ngx_str_t                   generated;      /* an assistant's the
                                                   caller cut off: all it
                                                   said (text: what was
                                                   heard); else empty */
    uint32_t                    latency;        /* an assistant's: ms from
                                                   the end of the caller's
                                                   speech to its first
                                                   audio; 0: none */
} ngx_http_voice_utterance_t;


/*
 * One call, from its media stream's start until its transcript file is
 * written.  It outlives the WebSocket (the last transcript events arrive
 * after Twilio's stop), so it has its own pool; its life cycle is
 * ngx_http_voice_call.c's, its record ngx_http_voice_transcript.c's.
 */
struct ngx_http_voice_call_s {
    ngx_str_node_t              node;           /* key: call_sid */
    ngx_pool_t                 *pool;
    ngx_log_t                  *log;
    ngx_http_voice_call_state_e state;

    u_char                      call_sid[NGX_HTTP_VOICE_SID_LEN + 1];
    u_char                      stream_sid[NGX_HTTP_VOICE_SID_LEN + 1];
    u_char                      phone[NGX_HTTP_VOICE_PHONE_MAX + 1];
    ngx_str_t                   name;           /* {sid}_{phone}_{time} */
    uint64_t                    start;          /* ms since the epoch */

    ngx_http_voice_media_t     *media;          /* NULL once it is gone */
    ngx_http_voice_peer_t      *peer;           /* the bridged owning it */
    ngx_http_voice_loc_conf_t  *vlcf;
    ngx_str_t                   settings;       /* the session blob sent
                                                   with its stream start */

    ngx_array_t                 utterances;     /* of utterance_t */
    u_char                      ended_by[16];   /* who ended the call */
    u_char                      answered_by[24];  /* Twilio's AMD verdict */
    ngx_str_t                   context;        /* the call's own, a JSON
                                                   object from /api/call */
    ngx_str_t                   end_reason;
    ngx_str_t                   ours;           /* its Twilio number */
    ngx_str_t                   model;          /* as bridged reported */
    ngx_str_t                   transcribe_model;
    ngx_http_voice_outcome_t    outcome;        /* as Twilio reported */
    ngx_uint_t                  reported;       /* outcome is known */
    ngx_msec_t                  report_since;
    uint64_t                    tokens[5];      /* input text, audio,
                                                   cached; output text,
                                                   audio: summed */
    size_t                      text_bytes;
    ngx_uint_t                  dropped;        /* over the limits */

    /* journal appends and the final write run on the thread pool, one
     * task at a time per call, so the file sees them in order; the final
     * write is wanted from NGX_HTTP_VOICE_CALL_ST_WRITING on */
    ngx_uint_t                  journaled;      /* utterances written */
    ngx_http_voice_call_io_e    io;
    unsigned                    continued:1;    /* a second stream of the
                                                   call: one record */

    /* its bridged sent call.done: not handed over when it goes.  A fact
     * of bridged's, not a step of the call: it may come in any state
     * (bridged ends a live call) and the call's state goes on its own */
    unsigned                    bridge_done:1;
    unsigned                    admitted:1;     /* holds a slot of
                                                   voice_max_calls */
    unsigned                    outbound:1;     /* placed by /api/call */
    unsigned                    active:1;       /* counted as active
                                                   (voice_calls_active) */
    unsigned                    hurried:1;      /* counted in
                                                   voice_calls_total, or
                                                   left to the stream that
                                                   goes on with its
                                                   record */

    ngx_event_t                 wait;           /* bounded wait for done */
    ngx_http_voice_transcript_files_t  *files;  /* its file operations */
};


/* ngx_http_voice_module.c */
extern ngx_module_t  ngx_http_voice_module;

ngx_http_voice_worker_t *ngx_http_voice_worker(void);
uint64_t ngx_http_voice_now_ms(void);
ngx_int_t ngx_http_voice_conf_read_file(ngx_conf_t *cf, ngx_str_t *file,
    size_t max, ngx_str_t *out);
ngx_int_t ngx_http_voice_conf_secret(ngx_conf_t *cf, ngx_str_t *file,
    const char *env, ngx_str_t *secret);
ngx_int_t ngx_http_voice_conf_env(ngx_conf_t *cf, ngx_str_t *value,
    const char *name);
/* postconfiguration: fn for each location with a handler directive */
ngx_int_t ngx_http_voice_conf_walk(ngx_conf_t *cf,
    ngx_int_t (*fn)(ngx_conf_t *cf, void **loc_conf));


/* ngx_http_voice_http.c: the HTTP helpers every handler shares */
ngx_table_elt_t *ngx_http_voice_header(ngx_http_request_t *r,
    const char *name, size_t len);
ngx_int_t ngx_http_voice_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len);
ngx_int_t ngx_http_voice_send_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len);
ngx_int_t ngx_http_voice_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...);
ngx_int_t ngx_http_voice_read_body(ngx_http_request_t *r, size_t max,
    u_char **body, size_t *len);


/* ngx_http_voice_session.c */
extern ngx_module_t  ngx_http_voice_session_module;

ngx_int_t ngx_http_voice_session_render(ngx_pool_t *pool,
    ngx_http_voice_session_conf_t *conf,
    ngx_http_voice_session_extra_t *extra, ngx_str_t *blob);
/* buf holds at least NGX_INT_T_LEN + 9 bytes */
u_char *ngx_http_voice_session_profile_name(ngx_http_request_t *r,
    u_char *buf);
ngx_http_voice_session_conf_t *ngx_http_voice_session_find(
    ngx_http_request_t *r, ngx_str_t *name);
int ngx_http_voice_session_machine_detection(ngx_http_request_t *r);
ngx_uint_t ngx_http_voice_session_time_limit(ngx_http_request_t *r);


/* ngx_http_voice_auth.c: NGX_OK, NGX_HTTP_UNAUTHORIZED or
 * NGX_HTTP_FORBIDDEN; the refusal is sent once the body is discarded */
ngx_int_t ngx_http_voice_auth_check(ngx_http_request_t *r);
ngx_int_t ngx_http_voice_auth_refuse(ngx_http_request_t *r, ngx_int_t status);
/* NGX_DECLINED: a GET or HEAD with the token, go on */
ngx_int_t ngx_http_voice_auth_reader(ngx_http_request_t *r);


/* ngx_http_voice_curve.c */
ngx_int_t ngx_http_voice_curve_init_conf(ngx_conf_t *cf,
    ngx_http_voice_main_conf_t *vmcf);
ngx_int_t ngx_http_voice_curve_socket(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf, ngx_http_voice_peer_t *peer);


/* ngx_http_voice_bridge.c */
ngx_int_t ngx_http_voice_bridge_init_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf);
void ngx_http_voice_bridge_exit_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf);
ngx_int_t ngx_http_voice_bridge_send(ngx_http_voice_peer_t *peer,
    const u_char *frame, size_t len);


/* ngx_http_voice_peer.c */
void ngx_http_voice_peer_start(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf);
void ngx_http_voice_peer_stop(void);
void ngx_http_voice_peer_on_heartbeat(ngx_http_voice_peer_t *peer,
    voice_proto_msg_t *msg);
void ngx_http_voice_peer_up(ngx_http_voice_peer_t *peer);
void ngx_http_voice_peer_down(ngx_http_voice_peer_t *peer, const char *why,
    const char *note);
ngx_uint_t ngx_http_voice_peer_full(void);
ngx_http_voice_peer_t *ngx_http_voice_peer_send_any(const u_char *frame,
    size_t len);


/* ngx_http_voice_call.c */
ngx_http_voice_call_t *ngx_http_voice_call_create(
    ngx_http_voice_loc_conf_t *vlcf, ngx_log_t *log,
    ngx_http_voice_twilio_event_t *start, ngx_str_t *phone,
    uint64_t resume);
void ngx_http_voice_call_end(ngx_http_voice_call_t *call);
void ngx_http_voice_call_hurry(ngx_http_voice_call_t *call);
ngx_int_t ngx_http_voice_call_unconnected(ngx_http_voice_loc_conf_t *vlcf,
    const u_char *sid, ngx_str_t *phone, ngx_str_t *ours,
    ngx_uint_t outbound);
void ngx_http_voice_call_written(ngx_http_voice_call_t *call);
void ngx_http_voice_call_detach(ngx_http_voice_call_t *call);
void ngx_http_voice_call_on_bridge(ngx_http_voice_peer_t *peer,
    voice_proto_msg_t *msg);
ngx_uint_t ngx_http_voice_call_count(void);
void ngx_http_voice_call_ended_by(ngx_http_voice_call_t *call,
    const u_char *by, size_t by_len, const u_char *reason, size_t len);
ngx_http_voice_call_t *ngx_http_voice_call_find(const u_char *sid,
    size_t len);
ngx_http_voice_peer_t *ngx_http_voice_call_pick(const u_char *sid,
    size_t len);
ngx_http_voice_peer_t *ngx_http_voice_call_place(const u_char *sid,
    size_t len);
ngx_http_voice_peer_t *ngx_http_voice_call_peer_of(const u_char *sid,
    size_t len);
void ngx_http_voice_call_peer_changed(ngx_http_voice_peer_t *peer,
    const char *down);
void ngx_http_voice_call_announce(ngx_http_voice_call_t *call);
ngx_int_t ngx_http_voice_call_history(ngx_http_voice_call_t *call,
    ngx_pool_t *pool, ngx_str_t *out, uint32_t *next);
void ngx_http_voice_call_shutdown(ngx_http_voice_main_conf_t *vmcf);


/* ngx_http_voice_zone.c */
#define NGX_HTTP_VOICE_ZONE_NAME       "voice"      /* the default zone */
#define NGX_HTTP_VOICE_ZONE_SIZE       (1024 * 1024)

#define NGX_HTTP_VOICE_IDEM_NEW        0    /* pending now: go on */
#define NGX_HTTP_VOICE_IDEM_REPLAY     1    /* the first answer */
#define NGX_HTTP_VOICE_IDEM_BUSY       2    /* in flight: 409 */
#define NGX_HTTP_VOICE_IDEM_MISMATCH   3    /* another request: 422 */
#define NGX_HTTP_VOICE_IDEM_FULL       4    /* no room: 503 */
#define NGX_HTTP_VOICE_IDEM_NONE       5    /* no zone */

ngx_shm_zone_t *ngx_http_voice_zone_add(ngx_conf_t *cf, ngx_str_t *name,
    size_t size);
ngx_int_t ngx_http_voice_zone_idem_begin(ngx_str_t *key, u_char *digest,
    time_t bound, ngx_pool_t *pool, uint64_t *id, ngx_uint_t *status,
    ngx_str_t *body);
void ngx_http_voice_zone_idem_end(ngx_str_t *key, uint64_t id,
    ngx_uint_t status, const u_char *body, size_t len, ngx_uint_t keep);
u_char *ngx_http_voice_zone_status(u_char *p);

#define NGX_HTTP_VOICE_ADMIT_OK         0
#define NGX_HTTP_VOICE_ADMIT_FULL       1    /* voice_max_calls reached */
#define NGX_HTTP_VOICE_ADMIT_UNCOUNTED  2    /* no room, and no limit */

ngx_int_t ngx_http_voice_zone_call_reserve(ngx_uint_t max, time_t bound,
    const u_char *number, size_t len, uint64_t *token);
void ngx_http_voice_zone_call_placed(uint64_t token, const u_char *sid);
ngx_int_t ngx_http_voice_zone_call_ring(ngx_uint_t max, const u_char *sid,
    ngx_uint_t outbound, const u_char *number, size_t len);
ngx_int_t ngx_http_voice_zone_call_live(ngx_uint_t max, const u_char *sid);
void ngx_http_voice_zone_call_end(const u_char *sid);
void ngx_http_voice_zone_call_over(const u_char *sid);

/* where a call is, as GET /api/calls shows it */
#define NGX_HTTP_VOICE_STAGE_RINGING    0    /* placed or answered: no
                                                stream yet */
#define NGX_HTTP_VOICE_STAGE_LIVE       1    /* its stream runs */
#define NGX_HTTP_VOICE_STAGE_ENDING     2    /* over: its record is being
                                                finished */

/* a call as the zone knows it */
typedef struct {
    u_char                      sid[NGX_HTTP_VOICE_SID_LEN];
    ngx_uint_t                  stage;
    ngx_int_t                   outbound;       /* 1, 0, -1: unknown */
    uint64_t                    start;          /* ms since the epoch */
    size_t                      number_len;
    size_t                      name_len;       /* of its record; 0:
                                                   none yet */
    u_char                      number[NGX_HTTP_VOICE_PHONE_MAX];
    u_char                      name[NGX_HTTP_VOICE_CALL_NAME_MAX];
} ngx_http_voice_zone_info_t;

void ngx_http_voice_zone_call_note(ngx_http_voice_zone_info_t *info);
ngx_int_t ngx_http_voice_zone_call_get(const u_char *sid,
    ngx_http_voice_zone_info_t *info);
ngx_int_t ngx_http_voice_zone_call_list(ngx_pool_t *pool,
    ngx_http_voice_zone_info_t **list, ngx_uint_t *n);


/* ngx_http_voice_metrics.c: counters, each an atomic add in shared
 * memory (no lock: the media path counts every frame) */
typedef enum {
    NGX_HTTP_VOICE_METRIC_FRAMES_IN = 0,
    NGX_HTTP_VOICE_METRIC_FRAMES_OUT,
    NGX_HTTP_VOICE_METRIC_DROPPED_IN,
    NGX_HTTP_VOICE_METRIC_DROPPED_OUT,
    NGX_HTTP_VOICE_METRIC_EVENTS_IGNORED,
    NGX_HTTP_VOICE_METRIC_EVENTS_INVALID,
    NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_WRITTEN,
    NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_FAILED,
    NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_RECOVERED,
    NGX_HTTP_VOICE_METRIC_TRANSCRIPTS_LOST,
    NGX_HTTP_VOICE_METRIC_REFUSED_LIMIT,      /* voice_max_calls */
    NGX_HTTP_VOICE_METRIC_REFUSED_BRIDGED,    /* every bridged full */
    NGX_HTTP_VOICE_METRIC_WEBHOOK_DELIVERED,  /* an attempt answered 2xx */
    NGX_HTTP_VOICE_METRIC_WEBHOOK_FAILED,     /* an attempt that failed */
    NGX_HTTP_VOICE_METRIC_WEBHOOK_GIVEN_UP,   /* a record given up */
    NGX_HTTP_VOICE_METRIC_WEBHOOK_PENDING,    /* a gauge: entries waiting,
                                                 as the last look saw */
    NGX_HTTP_VOICE_METRIC_N
} ngx_http_voice_metric_e;

ngx_int_t ngx_http_voice_metrics_add(ngx_conf_t *cf,
    ngx_http_voice_main_conf_t *vmcf);
void ngx_http_voice_metrics_inc(ngx_http_voice_metric_e id);
ngx_atomic_uint_t ngx_http_voice_metrics_get(ngx_http_voice_metric_e id);
void ngx_http_voice_metrics_set(ngx_http_voice_metric_e id,
    ngx_atomic_uint_t value);
void ngx_http_voice_metrics_call_status(ngx_uint_t status);
ngx_atomic_uint_t ngx_http_voice_metrics_call_status_get(ngx_uint_t status);
void ngx_http_voice_metrics_call_active(ngx_http_voice_call_t *call,
    ngx_uint_t on);
void ngx_http_voice_metrics_call_over(ngx_http_voice_call_t *call);
void ngx_http_voice_metrics_bridge_rtt(uint64_t us);
void ngx_http_voice_metrics_turn(uint32_t ms);
uint64_t ngx_http_voice_metrics_now_us(void);
ngx_int_t ngx_http_voice_metrics_handler(ngx_http_request_t *r);
ngx_uint_t ngx_http_voice_metrics_reply(ngx_http_voice_peer_t *peer,
    voice_proto_msg_t *msg);


/* ngx_http_voice_rest.c */
ngx_int_t ngx_http_voice_rest_handler(ngx_http_request_t *r);
void ngx_http_voice_rest_reply(voice_proto_msg_t *msg);
ngx_int_t ngx_http_voice_status_handler(ngx_http_request_t *r);


/* ngx_http_voice_webhook.c */
ngx_int_t ngx_http_voice_webhook_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_voice_webhook_verify(ngx_http_request_t *r,
    ngx_http_voice_loc_conf_t *vlcf, ngx_str_t *url,
    ngx_http_voice_body_param_t *params, size_t n);


/* ngx_http_voice_twiml.c */
ngx_int_t ngx_http_voice_twiml_answer(ngx_http_request_t *r,
    ngx_http_voice_body_param_t *params, size_t n);


/* ngx_http_voice_call_status.c */
ngx_int_t ngx_http_voice_call_status_answer(ngx_http_request_t *r,
    ngx_http_voice_body_param_t *params, size_t n);
ngx_str_t *ngx_http_voice_call_status_name(ngx_uint_t i);


/* ngx_http_voice_ws.c */
ngx_int_t ngx_http_voice_ws_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_voice_ws_send(ngx_http_voice_ws_t *ws, int opcode,
    u_char *payload, size_t len, ngx_uint_t droppable);
ngx_int_t ngx_http_voice_ws_send_frames(ngx_http_voice_ws_t *ws,
    u_char *start, size_t total, ngx_uint_t droppable);
void ngx_http_voice_ws_close(ngx_http_voice_ws_t *ws, uint16_t code,
    const char *reason);


/* ngx_http_voice_media.c */
ngx_http_voice_media_t *ngx_http_voice_media_create(ngx_http_request_t *r);
void ngx_http_voice_media_on_message(ngx_http_voice_media_t *m,
    u_char *data, size_t len);
void ngx_http_voice_media_on_close(ngx_http_voice_media_t *m);
void ngx_http_voice_media_on_bridge(ngx_http_voice_media_t *m,
    voice_proto_msg_t *msg);
void ngx_http_voice_media_hand_over(ngx_http_voice_media_t *m,
    const char *why);


/* ngx_http_voice_transcript.c */
ngx_int_t ngx_http_voice_transcript_open(ngx_http_voice_call_t *call);
void ngx_http_voice_transcript_add(ngx_http_voice_call_t *call,
    voice_proto_msg_t *msg);
void ngx_http_voice_transcript_write(ngx_http_voice_call_t *call);
void ngx_http_voice_transcript_close(ngx_http_voice_call_t *call);


/* ngx_http_voice_outcome.c */
ngx_int_t ngx_http_voice_outcome_add(ngx_conf_t *cf);
ngx_uint_t ngx_http_voice_outcome_report(const u_char *sid,
    ngx_uint_t status, ngx_uint_t final, ngx_int_t duration);
void ngx_http_voice_outcome_streamed(const u_char *sid);
ngx_int_t ngx_http_voice_outcome_get(const u_char *sid,
    ngx_http_voice_outcome_t *out);


/* ngx_http_voice_log.c */
ngx_int_t ngx_http_voice_log_add_variables(ngx_conf_t *cf);
void ngx_http_voice_log_call(ngx_http_request_t *r, const u_char *sid,
    size_t len);
void ngx_http_voice_log_status(ngx_http_request_t *r, const u_char *status,
    size_t len);


/* ngx_http_voice_keep.c */
void ngx_http_voice_keep_init_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf);


/* ngx_http_voice_transcript_get.c */
ngx_int_t ngx_http_voice_transcript_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_voice_transcripts_handler(ngx_http_request_t *r);


/* ngx_http_voice_live.c */
ngx_int_t ngx_http_voice_live_calls_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_voice_live_handler(ngx_http_request_t *r);


/* ngx_http_voice_store.c: called only from the thread pool's threads */
#define NGX_HTTP_VOICE_STORE_MAX_RECORD  (16 * 1024 * 1024)

typedef struct {
    ngx_err_t                   err;
    const char                 *failed;         /* the call that failed */
} ngx_http_voice_store_err_t;

/* NGX_OK with *lock holding it, NGX_BUSY when one by that name exists */
ngx_int_t ngx_http_voice_store_journal_create(const char *path,
    const u_char *data, size_t len, ngx_fd_t *lock,
    ngx_http_voice_store_err_t *e);
/* NGX_DECLINED when path is no longer the journal lock holds */
ngx_int_t ngx_http_voice_store_journal_append(const char *path,
    ngx_fd_t lock, const u_char *data, size_t len, ngx_uint_t *dirty,
    ngx_http_voice_store_err_t *e);
/* NGX_OK with *fd write-locked, NGX_BUSY when a live process holds it,
 * NGX_DECLINED when it is gone */
ngx_int_t ngx_http_voice_store_journal_take(const char *path, ngx_fd_t *fd,
    ngx_file_info_t *fi, ngx_http_voice_store_err_t *e);
void ngx_http_voice_store_journal_drop(const char *path, ngx_fd_t fd);
ngx_int_t ngx_http_voice_store_write(const char *dir, const char *tmp,
    const char *final, const u_char *data, size_t len,
    ngx_http_voice_store_err_t *e);
ngx_int_t ngx_http_voice_store_read_fd(ngx_fd_t fd, size_t max,
    u_char **data, size_t *len, ngx_http_voice_store_err_t *e);
ngx_int_t ngx_http_voice_store_merge(const char *final, u_char **data,
    size_t *len, ngx_http_voice_store_err_t *e);


/* ngx_http_voice_outbox.c: the post-call webhook */
typedef struct {
    ngx_str_t                   url;
    u_char                      name[NGX_HTTP_VOICE_OUTBOX_NAME_MAX];
    uint64_t                    made;           /* ms since the epoch */

    /* the thread's result */
    ngx_int_t                   rc;
    ngx_http_voice_store_err_t  e;
} ngx_http_voice_outbox_entry_t;

ngx_int_t ngx_http_voice_outbox_add(ngx_conf_t *cf,
    ngx_http_voice_loc_conf_t *vlcf);
void ngx_http_voice_outbox_init_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf);
/* in a thread of the pool; a leased entry waits for its first attempt */
void ngx_http_voice_outbox_store(ngx_http_voice_outbox_t *ob,
    ngx_http_voice_outbox_entry_t *en, const u_char *body, size_t len,
    ngx_uint_t leased);
/* in a thread of the pool: a record recovered from a journal, due now */
void ngx_http_voice_outbox_recovered(ngx_http_voice_outbox_t *ob,
    ngx_http_voice_outbox_entry_t *en, const u_char *sid,
    const u_char *body, size_t len);
/* takes body (ngx_alloc()ed) */
void ngx_http_voice_outbox_post(ngx_http_voice_outbox_t *ob,
    ngx_http_voice_outbox_entry_t *en, ngx_log_t *log, u_char *body,
    size_t len);
ngx_int_t ngx_http_voice_outbox_reply(voice_proto_msg_t *msg);


/* ngx_http_voice_recover.c */
typedef struct {
    ngx_str_t                   dir;            /* NUL-terminated */
    ngx_thread_pool_t          *pool;
    time_t                      keep;           /* the shortest
                                                   voice_transcript_keep of
                                                   its locations, 0: all */
    ngx_http_voice_outbox_t    *outbox;         /* the webhook of its first
                                                   location that has one:
                                                   recovered records' */
} ngx_http_voice_recover_dir_t;

/* what became of one journal */
typedef enum {
    NGX_HTTP_VOICE_RECOVER_RECOVERED = 0,
    NGX_HTTP_VOICE_RECOVER_WRITTEN,     /* its record was already there */
    NGX_HTTP_VOICE_RECOVER_IN_USE,      /* a live process holds it */
    NGX_HTTP_VOICE_RECOVER_GONE,
    NGX_HTTP_VOICE_RECOVER_EMPTY,       /* removed: nothing in it */
    NGX_HTTP_VOICE_RECOVER_YOUNG,       /* empty, just created: left */
    NGX_HTTP_VOICE_RECOVER_FAILED
} ngx_http_voice_recover_state_e;

typedef struct {
    ngx_http_voice_recover_state_e  state;
    unsigned                    entries;
    unsigned                    dropped;        /* lines left out */
    ngx_http_voice_store_err_t  e;
    unsigned                    hooked:1;       /* hook is its webhook
                                                   outbox entry's */
    ngx_http_voice_outbox_entry_t  hook;
} ngx_http_voice_recover_result_t;

ngx_int_t ngx_http_voice_recover_add_dir(ngx_conf_t *cf,
    ngx_http_voice_loc_conf_t *vlcf);
void ngx_http_voice_recover_init_process(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf);
/* in a thread of the pool: one journal, TRANSCRIPT_DIR/.{name}.journal;
 * its record goes to ob's webhook too, unless ob is NULL */
void ngx_http_voice_recover_journal(const u_char *dir, const u_char *name,
    size_t len, ngx_http_voice_outbox_t *ob,
    ngx_http_voice_recover_result_t *res);
void ngx_http_voice_recover_log(ngx_log_t *log, ngx_uint_t level,
    const u_char *dir, const u_char *name, size_t len,
    ngx_http_voice_recover_result_t *res);


#endif /* NGX_HTTP_VOICE_MODULE_H */
