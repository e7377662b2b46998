/*
 * ngx_http_voice_session.c: the assistant's session settings, as one
 * bounded blob that travels with each call.
 *
 * Every directive that shapes a call -- the model and its voice, the
 * instructions, turn detection, transcription, the tools the assistant
 * may call (built-in end_call and transfer_call, HTTP tools, remote MCP
 * servers), answering machines, silence and length -- is read here, by a
 * module of its own (ngx_http_voice_session_module, in the same shared
 * object), so the main module's configuration keeps only the endpoints.
 * Each is valid in http, server and location; a list (voice_tool,
 * voice_transfer_to, voice_mcp_server) given in a location replaces the
 * enclosing one's, as nginx's own lists do.  Tool schema files and MCP
 * authorizations are read and checked when the directive is read, the
 * tools' signing secret in postconfiguration (merge_loc_conf only
 * merges), so `nginx -t` fails on a bad one.
 *
 * At a stream's start the settings are rendered as one JSON object, the
 * proto field SETTINGS (docs/proto.md), which bridged maps onto OpenAI's
 * session.update; nginx keeps it with the call, so it can be sent again.
 * A call takes the settings of the location that answered its /twiml,
 * not of /media-stream's: the TwiML names that location's profile (its
 * index among the /twiml locations and a checksum of its settings) in a
 * <Parameter>, which Twilio hands back in the stream's start event.  The
 * profile table is built at configuration time, so every worker (and
 * every host with the same configuration) reads a name the same way; a
 * name that does not match (a reload changed the settings between the
 * TwiML and the stream) falls back to the stream location's own.
 *
 * The blob holds secrets (the tools' signing secret, MCP authorization):
 * it is never logged.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"
#include "voice_json.h"


#define NGX_HTTP_VOICE_SESSION_SCHEMA_MAX   (32 * 1024)
#define NGX_HTTP_VOICE_SESSION_TOOLS_MAX    64
#define NGX_HTTP_VOICE_SESSION_NAME_MAX     64
#define NGX_HTTP_VOICE_SESSION_TOKENS       4096

/*
 * The optional values nginx.conf gives (the session conf's "given"), set
 * in merge: one not given is left out of the blob, so bridged's default
 * applies, and no NGX_CONF_UNSET is read at run time.
 */
#define NGX_HTTP_VOICE_SESSION_GIVEN_REASONING      0x0001
#define NGX_HTTP_VOICE_SESSION_GIVEN_VAD_THRESHOLD  0x0002
#define NGX_HTTP_VOICE_SESSION_GIVEN_VAD_PREFIX     0x0004
#define NGX_HTTP_VOICE_SESSION_GIVEN_VAD_SILENCE    0x0008
#define NGX_HTTP_VOICE_SESSION_GIVEN_NOISE          0x0010
#define NGX_HTTP_VOICE_SESSION_GIVEN_SPEED          0x0020
#define NGX_HTTP_VOICE_SESSION_GIVEN_TOKENS         0x0040
#define NGX_HTTP_VOICE_SESSION_GIVEN_TRUNCATION     0x0080


typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   url;
    ngx_str_t                   schema;         /* the file's JSON text */
    ngx_msec_t                  timeout;
} ngx_http_voice_session_tool_t;


typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   to;             /* +E164 or sip:URI */
} ngx_http_voice_session_transfer_t;


typedef struct {
    ngx_str_t                   label;
    ngx_str_t                   url;
    ngx_array_t                *allowed;        /* of ngx_str_t, or NULL */
    ngx_str_t                   authorization;  /* or empty */
} ngx_http_voice_session_mcp_t;


struct ngx_http_voice_session_conf_s {
    ngx_str_t                   model;
    ngx_str_t                   voice;
    ngx_str_t                   instructions;
    ngx_str_t                   greeting;
    ngx_str_t                   transcribe_model;
    ngx_str_t                   transcribe_language;
    ngx_str_t                   transcribe_prompt;
    ngx_uint_t                  reasoning;
    ngx_uint_t                  turn_detection;
    ngx_uint_t                  eagerness;
    ngx_uint_t                  vad_threshold;  /* per mille */
    ngx_msec_t                  vad_silence;
    ngx_msec_t                  vad_prefix;
    ngx_flag_t                  interrupt;
    ngx_uint_t                  noise_reduction;
    ngx_uint_t                  speed;          /* per mille */
    ngx_uint_t                  max_output_tokens;  /* 0: inf */
    ngx_uint_t                  truncation;     /* per mille; see below */
    ngx_uint_t                  given;          /* _GIVEN_* */

    ngx_flag_t                  end_call;
    ngx_array_t                *tools;          /* of session_tool_t */
    ngx_str_t                   tool_secret_file;
    ngx_str_t                   tool_secret;
    ngx_array_t                *transfer;       /* of session_transfer_t */
    ngx_array_t                *mcp;            /* of session_mcp_t */

    ngx_uint_t                  machine_detection;
    ngx_str_t                   voicemail_message;
    ngx_msec_t                  idle_timeout;
    ngx_uint_t                  idle_prompts;
    ngx_msec_t                  max_call_duration;

    ngx_int_t                   profile;        /* -1: not a /twiml one */
    ngx_str_t                   twiml_url;      /* a /twiml one's own URL:
                                                   a transfer's way back */
    uint32_t                    crc;            /* of its rendered blob */
};


typedef struct {
    ngx_array_t                 profiles;       /* of session_conf_t * */
} ngx_http_voice_session_main_conf_t;


/* the writer renders twice: p == NULL counts, then it writes */
typedef struct {
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  first;          /* no comma before */
} ngx_http_voice_session_out_t;


/* voice_truncation values besides a retention ratio (1..999 per mille) */
#define NGX_HTTP_VOICE_SESSION_TRUNC_AUTO       1000
#define NGX_HTTP_VOICE_SESSION_TRUNC_DISABLED   1001


static void *ngx_http_voice_session_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_voice_session_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_voice_session_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_voice_session_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_voice_session_location(ngx_conf_t *cf,
    void **loc_conf);

static char *ngx_http_voice_session_set_threshold(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_voice_session_set_turn(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_voice_session_set_speed(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_voice_session_set_tokens(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_voice_session_set_truncation(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_voice_session_set_tool(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_voice_session_set_transfer(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_voice_session_set_mcp(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

static size_t ngx_http_voice_session_write(
    ngx_http_voice_session_conf_t *conf,
    ngx_http_voice_session_extra_t *extra, u_char *p);


static ngx_conf_enum_t  ngx_http_voice_session_efforts[] = {
    { ngx_string("minimal"), 1 },
    { ngx_string("low"), 2 },
    { ngx_string("medium"), 3 },
    { ngx_string("high"), 4 },
    { ngx_string("xhigh"), 5 },
    { ngx_null_string, 0 }
};

static ngx_conf_enum_t  ngx_http_voice_session_noise[] = {
    { ngx_string("off"), 1 },
    { ngx_string("near_field"), 2 },
    { ngx_string("far_field"), 3 },
    { ngx_null_string, 0 }
};

static ngx_conf_enum_t  ngx_http_voice_session_amd[] = {
    { ngx_string("off"), 1 },
    { ngx_string("on"), 2 },
    { ngx_string("wait"), 3 },
    { ngx_null_string, 0 }
};

static const char  *ngx_http_voice_session_effort_names[] = {
    "", "minimal", "low", "medium", "high", "xhigh"
};

static const char  *ngx_http_voice_session_noise_names[] = {
    "", "off", "near_field", "far_field"
};

static const char  *ngx_http_voice_session_amd_names[] = {
    "", "off", "on", "wait"
};

static const char  *ngx_http_voice_session_eagerness_names[] = {
    "auto", "low", "medium", "high"
};


static ngx_conf_num_bounds_t  ngx_http_voice_session_prompts_bounds = {
    ngx_conf_check_num_bounds, 0, 10
};


#define NGX_HTTP_VOICE_SESSION_CONF                                           \
    NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF

#define NGX_HTTP_VOICE_SESSION_VALUE(name, args, slot, field, post)           \
    { ngx_string(name),                                                       \
      NGX_HTTP_VOICE_SESSION_CONF|args,                                       \
      slot,                                                                   \
      NGX_HTTP_LOC_CONF_OFFSET,                                               \
      offsetof(ngx_http_voice_session_conf_t, field),                         \
      post }


static ngx_command_t  ngx_http_voice_session_commands[] = {

    NGX_HTTP_VOICE_SESSION_VALUE("voice_model", NGX_CONF_TAKE1,
        ngx_conf_set_str_slot, model, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_voice", NGX_CONF_TAKE1,
        ngx_conf_set_str_slot, voice, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_instructions", NGX_CONF_TAKE1,
        ngx_conf_set_str_slot, instructions, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_greeting", NGX_CONF_TAKE1,
        ngx_conf_set_str_slot, greeting, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_transcribe_model", NGX_CONF_TAKE1,
        ngx_conf_set_str_slot, transcribe_model, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_transcribe_language", NGX_CONF_TAKE1,
        ngx_conf_set_str_slot, transcribe_language, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_transcribe_prompt", NGX_CONF_TAKE1,
        ngx_conf_set_str_slot, transcribe_prompt, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_reasoning_effort", NGX_CONF_TAKE1,
        ngx_conf_set_enum_slot, reasoning, ngx_http_voice_session_efforts),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_turn_detection", NGX_CONF_TAKE12,
        ngx_http_voice_session_set_turn, turn_detection, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_vad_threshold", NGX_CONF_TAKE1,
        ngx_http_voice_session_set_threshold, vad_threshold, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_vad_silence", NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot, vad_silence, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_vad_prefix", NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot, vad_prefix, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_interrupt_response", NGX_CONF_FLAG,
        ngx_conf_set_flag_slot, interrupt, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_noise_reduction", NGX_CONF_TAKE1,
        ngx_conf_set_enum_slot, noise_reduction,
        ngx_http_voice_session_noise),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_speed", NGX_CONF_TAKE1,
        ngx_http_voice_session_set_speed, speed, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_max_output_tokens", NGX_CONF_TAKE1,
        ngx_http_voice_session_set_tokens, max_output_tokens, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_truncation", NGX_CONF_TAKE1,
        ngx_http_voice_session_set_truncation, truncation, NULL),

    NGX_HTTP_VOICE_SESSION_VALUE("voice_end_call", NGX_CONF_FLAG,
        ngx_conf_set_flag_slot, end_call, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_tool", NGX_CONF_TAKE3|NGX_CONF_TAKE4,
        ngx_http_voice_session_set_tool, tools, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_tool_secret_file", NGX_CONF_TAKE1,
        ngx_conf_set_str_slot, tool_secret_file, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_transfer_to", NGX_CONF_TAKE2,
        ngx_http_voice_session_set_transfer, transfer, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_mcp_server", NGX_CONF_2MORE,
        ngx_http_voice_session_set_mcp, mcp, NULL),

    NGX_HTTP_VOICE_SESSION_VALUE("voice_machine_detection", NGX_CONF_TAKE1,
        ngx_conf_set_enum_slot, machine_detection,
        ngx_http_voice_session_amd),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_voicemail_message", NGX_CONF_TAKE1,
        ngx_conf_set_str_slot, voicemail_message, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_idle_timeout", NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot, idle_timeout, NULL),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_idle_prompts", NGX_CONF_TAKE1,
        ngx_conf_set_num_slot, idle_prompts,
        &ngx_http_voice_session_prompts_bounds),
    NGX_HTTP_VOICE_SESSION_VALUE("voice_max_call_duration", NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot, max_call_duration, NULL),

      ngx_null_command
};


static ngx_http_module_t  ngx_http_voice_session_module_ctx = {
    NULL,                                     /* preconfiguration */
    ngx_http_voice_session_postconfiguration, /* postconfiguration */

    ngx_http_voice_session_create_main_conf,  /* create main conf */
    NULL,                                     /* init main conf */

    NULL,                                     /* create server conf */
    NULL,                                     /* merge server conf */

    ngx_http_voice_session_create_loc_conf,   /* create location conf */
    ngx_http_voice_session_merge_loc_conf     /* merge location conf */
};


ngx_module_t  ngx_http_voice_session_module = {
    NGX_MODULE_V1,
    &ngx_http_voice_session_module_ctx,    /* module context */
    ngx_http_voice_session_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_voice_session_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_voice_session_main_conf_t  *smcf;

    smcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_voice_session_main_conf_t));
    if (smcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&smcf->profiles, cf->pool, 4,
                       sizeof(ngx_http_voice_session_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return smcf;
}


static void *
ngx_http_voice_session_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_voice_session_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_voice_session_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->model = { 0, NULL };
     *     conf->voice = { 0, NULL };
     *     conf->instructions = { 0, NULL };
     *     conf->greeting = { 0, NULL };
     *     conf->transcribe_model = { 0, NULL };
     *     conf->transcribe_language = { 0, NULL };
     *     conf->transcribe_prompt = { 0, NULL };
     *     conf->tool_secret_file = { 0, NULL };
     *     conf->tool_secret = { 0, NULL };
     *     conf->voicemail_message = { 0, NULL };
     *     conf->given = 0;
     *     conf->crc = 0;
     */

    conf->reasoning = NGX_CONF_UNSET_UINT;
    conf->turn_detection = NGX_CONF_UNSET_UINT;
    conf->eagerness = NGX_CONF_UNSET_UINT;
    conf->vad_threshold = NGX_CONF_UNSET_UINT;
    conf->vad_silence = NGX_CONF_UNSET_MSEC;
    conf->vad_prefix = NGX_CONF_UNSET_MSEC;
    conf->interrupt = NGX_CONF_UNSET;
    conf->noise_reduction = NGX_CONF_UNSET_UINT;
    conf->speed = NGX_CONF_UNSET_UINT;
    conf->max_output_tokens = NGX_CONF_UNSET_UINT;
    conf->truncation = NGX_CONF_UNSET_UINT;
    conf->end_call = NGX_CONF_UNSET;
    conf->tools = NGX_CONF_UNSET_PTR;
    conf->transfer = NGX_CONF_UNSET_PTR;
    conf->mcp = NGX_CONF_UNSET_PTR;
    conf->machine_detection = NGX_CONF_UNSET_UINT;
    conf->idle_timeout = NGX_CONF_UNSET_MSEC;
    conf->idle_prompts = NGX_CONF_UNSET_UINT;
    conf->max_call_duration = NGX_CONF_UNSET_MSEC;
    conf->profile = -1;

    return conf;
}


/*
 * Values not written anywhere stay unset and are left out of the blob,
 * so bridged's defaults apply (docs/directives.md names them).
 */

static char *
ngx_http_voice_session_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_voice_session_conf_t *prev = parent;
    ngx_http_voice_session_conf_t *conf = child;

    ngx_conf_merge_str_value(conf->model, prev->model, "");
    ngx_conf_merge_str_value(conf->voice, prev->voice, "");
    ngx_conf_merge_str_value(conf->instructions, prev->instructions, "");
    ngx_conf_merge_str_value(conf->greeting, prev->greeting, "");
    ngx_conf_merge_str_value(conf->transcribe_model, prev->transcribe_model,
                             "");
    ngx_conf_merge_str_value(conf->transcribe_language,
                             prev->transcribe_language, "");
    ngx_conf_merge_str_value(conf->transcribe_prompt,
                             prev->transcribe_prompt, "");
    ngx_conf_merge_uint_value(conf->reasoning, prev->reasoning,
                              NGX_CONF_UNSET_UINT);

    if (conf->turn_detection == NGX_CONF_UNSET_UINT) {
        conf->turn_detection = prev->turn_detection;
        conf->eagerness = prev->eagerness;
    }

    ngx_conf_merge_uint_value(conf->vad_threshold, prev->vad_threshold,
                              NGX_CONF_UNSET_UINT);
    ngx_conf_merge_msec_value(conf->vad_silence, prev->vad_silence,
                              NGX_CONF_UNSET_MSEC);
    ngx_conf_merge_msec_value(conf->vad_prefix, prev->vad_prefix,
                              NGX_CONF_UNSET_MSEC);
    ngx_conf_merge_value(conf->interrupt, prev->interrupt, 1);
    ngx_conf_merge_uint_value(conf->noise_reduction, prev->noise_reduction,
                              NGX_CONF_UNSET_UINT);
    ngx_conf_merge_uint_value(conf->speed, prev->speed, NGX_CONF_UNSET_UINT);
    ngx_conf_merge_uint_value(conf->max_output_tokens,
                              prev->max_output_tokens, NGX_CONF_UNSET_UINT);
    ngx_conf_merge_uint_value(conf->truncation, prev->truncation,
                              NGX_CONF_UNSET_UINT);

    ngx_conf_merge_value(conf->end_call, prev->end_call, 1);
    ngx_conf_merge_ptr_value(conf->tools, prev->tools, NULL);
    ngx_conf_merge_ptr_value(conf->transfer, prev->transfer, NULL);
    ngx_conf_merge_ptr_value(conf->mcp, prev->mcp, NULL);
    ngx_conf_merge_str_value(conf->tool_secret_file, prev->tool_secret_file,
                             "");

    ngx_conf_merge_uint_value(conf->machine_detection,
                              prev->machine_detection, 1);
    ngx_conf_merge_str_value(conf->voicemail_message,
                             prev->voicemail_message, "");
    ngx_conf_merge_msec_value(conf->idle_timeout, prev->idle_timeout, 0);
    ngx_conf_merge_uint_value(conf->idle_prompts, prev->idle_prompts, 2);
    ngx_conf_merge_msec_value(conf->max_call_duration,
                              prev->max_call_duration, 0);

    /* server_vad, bridged's own default, when none is given */

    if (conf->turn_detection == NGX_CONF_UNSET_UINT) {
        conf->turn_detection = 0;
    }

    conf->given = 0;

    if (conf->reasoning != NGX_CONF_UNSET_UINT) {
        conf->given |= NGX_HTTP_VOICE_SESSION_GIVEN_REASONING;
    }

    if (conf->vad_threshold != NGX_CONF_UNSET_UINT) {
        conf->given |= NGX_HTTP_VOICE_SESSION_GIVEN_VAD_THRESHOLD;
    }

    if (conf->vad_prefix != NGX_CONF_UNSET_MSEC) {
        conf->given |= NGX_HTTP_VOICE_SESSION_GIVEN_VAD_PREFIX;
    }

    if (conf->vad_silence != NGX_CONF_UNSET_MSEC) {
        conf->given |= NGX_HTTP_VOICE_SESSION_GIVEN_VAD_SILENCE;
    }

    if (conf->noise_reduction != NGX_CONF_UNSET_UINT) {
        conf->given |= NGX_HTTP_VOICE_SESSION_GIVEN_NOISE;
    }

    if (conf->speed != NGX_CONF_UNSET_UINT) {
        conf->given |= NGX_HTTP_VOICE_SESSION_GIVEN_SPEED;
    }

    if (conf->max_output_tokens != NGX_CONF_UNSET_UINT) {
        conf->given |= NGX_HTTP_VOICE_SESSION_GIVEN_TOKENS;
    }

    if (conf->truncation != NGX_CONF_UNSET_UINT) {
        conf->given |= NGX_HTTP_VOICE_SESSION_GIVEN_TRUNCATION;
    }

    return NGX_CONF_OK;
}


/*
 * Once the main module has completed its locations (its postconfiguration
 * runs first, and makes the public URL final): the tools' secret of each
 * location with a handler, read once and checked, and its settings'
 * checksum; a /twiml location's settings become a profile.
 */

static ngx_int_t
ngx_http_voice_session_postconfiguration(ngx_conf_t *cf)
{
    return ngx_http_voice_conf_walk(cf, ngx_http_voice_session_location);
}


static ngx_int_t
ngx_http_voice_session_location(ngx_conf_t *cf, void **loc_conf)
{
    size_t                               n;
    u_char                              *blob;
    ngx_http_voice_loc_conf_t           *vlcf;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_voice_session_conf_t       *conf, **profile;
    ngx_http_voice_session_main_conf_t  *smcf;

    conf = loc_conf[ngx_http_voice_session_module.ctx_index];
    vlcf = loc_conf[ngx_http_voice_module.ctx_index];
    clcf = loc_conf[ngx_http_core_module.ctx_index];

    /* the secret of the tools in effect */

    if (conf->tools != NULL) {

        if (ngx_http_voice_conf_secret(cf, &conf->tool_secret_file,
                                       "VOICE_TOOL_SECRET",
                                       &conf->tool_secret)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (conf->tool_secret.len < 16) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"voice_tool\" needs a signing secret of "
                               "at least 16 bytes: set VOICE_TOOL_SECRET in "
                               "the environment or use "
                               "\"voice_tool_secret_file\"");
            return NGX_ERROR;
        }
    }

    /* the checksum that names these settings in a /twiml answer */

    n = ngx_http_voice_session_write(conf, NULL, NULL);

    blob = ngx_pnalloc(cf->temp_pool, n);
    if (blob == NULL) {
        return NGX_ERROR;
    }

    n = ngx_http_voice_session_write(conf, NULL, blob);

    if (n > VOICE_PROTO_MAX_SETTINGS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the session settings take %uz bytes, more than "
                           "the %d a call can carry", n,
                           VOICE_PROTO_MAX_SETTINGS);
        return NGX_ERROR;
    }

    conf->crc = ngx_crc32_long(blob, n);

    if (vlcf->handler != NGX_HTTP_VOICE_TWIML || conf->profile != -1) {
        return NGX_OK;
    }

    smcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_voice_session_module);

    /*
     * Where a transfer nobody answered comes back: this location, by its
     * own path when it has a plain one, else voice_twiml_url.
     */

    if (clcf->name.len && clcf->name.data[0] == '/'
#if (NGX_PCRE)
        && clcf->regex == NULL
#endif
        && ngx_strlchr(clcf->name.data, clcf->name.data + clcf->name.len,
                       '"') == NULL)
    {
        conf->twiml_url.len = vlcf->public_url.len + clcf->name.len;
        conf->twiml_url.data = ngx_pnalloc(cf->pool, conf->twiml_url.len);
        if (conf->twiml_url.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_cpymem(conf->twiml_url.data, vlcf->public_url.data,
                              vlcf->public_url.len),
                   clcf->name.data, clcf->name.len);

    } else {
        conf->twiml_url = vlcf->twiml_url;
    }

    profile = ngx_array_push(&smcf->profiles);
    if (profile == NULL) {
        return NGX_ERROR;
    }

    *profile = conf;
    conf->profile = smcf->profiles.nelts - 1;

    return NGX_OK;
}


/* "0.5" -> 500: a decimal with up to 3 places, kept per mille */

static ngx_int_t
ngx_http_voice_session_decimal(ngx_str_t *v, ngx_uint_t *per_mille)
{
    ngx_int_t  n;

    n = ngx_atofp(v->data, v->len, 3);
    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    *per_mille = (ngx_uint_t) n;

    return NGX_OK;
}


static char *
ngx_http_voice_session_set_threshold(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_voice_session_conf_t *scf = conf;

    ngx_str_t  *value;

    if (scf->vad_threshold != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_voice_session_decimal(&value[1], &scf->vad_threshold)
        != NGX_OK
        || scf->vad_threshold > 1000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": a number "
                           "between 0 and 1 is expected",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* voice_speed 1.1;  OpenAI takes 0.25 to 1.5 */

static char *
ngx_http_voice_session_set_speed(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_voice_session_conf_t *scf = conf;

    ngx_str_t  *value;

    if (scf->speed != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_voice_session_decimal(&value[1], &scf->speed) != NGX_OK
        || scf->speed < 250 || scf->speed > 1500)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": a number "
                           "between 0.25 and 1.5 is expected",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* voice_max_output_tokens 1..4096 | inf */

static char *
ngx_http_voice_session_set_tokens(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_voice_session_conf_t *scf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (scf->max_output_tokens != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "inf", 3) == 0) {
        scf->max_output_tokens = 0;
        return NGX_CONF_OK;
    }

    n = ngx_atoi(value[1].data, value[1].len);

    if (n < 1 || n > NGX_HTTP_VOICE_SESSION_TOKENS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": \"inf\" or a "
                           "number from 1 to %d is expected",
                           &value[1], &cmd->name,
                           NGX_HTTP_VOICE_SESSION_TOKENS);
        return NGX_CONF_ERROR;
    }

    scf->max_output_tokens = n;

    return NGX_CONF_OK;
}


/* voice_truncation auto | disabled | RATIO (0 < RATIO < 1) */

static char *
ngx_http_voice_session_set_truncation(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_voice_session_conf_t *scf = conf;

    ngx_str_t  *value;

    if (scf->truncation != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 4 && ngx_strncmp(value[1].data, "auto", 4) == 0) {
        scf->truncation = NGX_HTTP_VOICE_SESSION_TRUNC_AUTO;
        return NGX_CONF_OK;
    }

    if (value[1].len == 8 && ngx_strncmp(value[1].data, "disabled", 8) == 0)
    {
        scf->truncation = NGX_HTTP_VOICE_SESSION_TRUNC_DISABLED;
        return NGX_CONF_OK;
    }

    if (ngx_http_voice_session_decimal(&value[1], &scf->truncation) != NGX_OK
        || scf->truncation == 0 || scf->truncation >= 1000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": \"auto\", "
                           "\"disabled\" or a retention ratio between 0 "
                           "and 1 is expected", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* voice_turn_detection server_vad | semantic_vad [eagerness=E] */

static char *
ngx_http_voice_session_set_turn(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_voice_session_conf_t *scf = conf;

    ngx_str_t   *value, e;
    ngx_uint_t   i;

    if (scf->turn_detection != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 10
        && ngx_strncmp(value[1].data, "server_vad", 10) == 0)
    {
        scf->turn_detection = 0;

    } else if (value[1].len == 12
               && ngx_strncmp(value[1].data, "semantic_vad", 12) == 0)
    {
        scf->turn_detection = 1;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": \"server_vad\" "
                           "or \"semantic_vad\" is expected",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    scf->eagerness = 0;

    if (cf->args->nelts == 2) {
        return NGX_CONF_OK;
    }

    if (scf->turn_detection != 1 || value[2].len <= 10
        || ngx_strncmp(value[2].data, "eagerness=", 10) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\": only "
                           "semantic_vad takes \"eagerness=\"",
                           &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    e.data = value[2].data + 10;
    e.len = value[2].len - 10;

    for (i = 0; i < 4; i++) {
        if (e.len == ngx_strlen(ngx_http_voice_session_eagerness_names[i])
            && ngx_strncmp(e.data, ngx_http_voice_session_eagerness_names[i],
                           e.len)
               == 0)
        {
            scf->eagerness = i;
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid eagerness \"%V\" in \"%V\": auto, low, "
                       "medium or high is expected", &e, &cmd->name);

    return NGX_CONF_ERROR;
}


/* names the model calls: OpenAI's function name rule */

static ngx_int_t
ngx_http_voice_session_name_ok(ngx_str_t *name)
{
    ngx_uint_t  i;
    u_char      c;

    if (name->len == 0 || name->len > NGX_HTTP_VOICE_SESSION_NAME_MAX) {
        return 0;
    }

    for (i = 0; i < name->len; i++) {
        c = name->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_voice_session_url_ok(ngx_str_t *url)
{
    if (url->len > 8
        && ngx_strncasecmp(url->data, (u_char *) "https://", 8) == 0)
    {
        return 1;
    }

    return url->len > 7
           && ngx_strncasecmp(url->data, (u_char *) "http://", 7) == 0;
}


static ngx_int_t
ngx_http_voice_session_printable(ngx_str_t *s)
{
    ngx_uint_t  i;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] <= ' ' || s->data[i] == 0x7f || s->data[i] == '"'
            || s->data[i] == '\\')
        {
            return 0;
        }
    }

    return 1;
}


/*
 * A tool's schema file: {"description": "...", "parameters": {JSON
 * Schema of the arguments}}.  Only what OpenAI needs is checked: the
 * shape, and that the parameters are an object schema.
 */

static char *
ngx_http_voice_session_read_schema(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *schema)
{
    int                         n, desc, params, type;
    const char                 *err;
    voice_json_tok_t           *toks;

    if (ngx_http_voice_conf_read_file(cf, file,
                                      NGX_HTTP_VOICE_SESSION_SCHEMA_MAX,
                                      schema)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    toks = ngx_palloc(cf->temp_pool, 4096 * sizeof(voice_json_tok_t));
    if (toks == NULL) {
        return NGX_CONF_ERROR;
    }

    n = voice_json_parse(schema->data, schema->len, toks, 4096,
                         &err);
    if (n < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "tool schema \"%V\" is not valid JSON: %s",
                           file, err);
        return NGX_CONF_ERROR;
    }

    if (toks[0].type != VOICE_JSON_OBJECT) {
        err = "it is not a JSON object";
        goto invalid;
    }

    desc = voice_json_get(schema->data, toks, 0, "description");
    params = voice_json_get(schema->data, toks, 0, "parameters");

    if (desc < 0 || toks[desc].type != VOICE_JSON_STRING
        || toks[desc].end == toks[desc].start)
    {
        err = "\"description\" must be a non-empty string";
        goto invalid;
    }

    if (params < 0 || toks[params].type != VOICE_JSON_OBJECT) {
        err = "\"parameters\" must be a JSON Schema object";
        goto invalid;
    }

    type = voice_json_get(schema->data, toks, params, "type");

    if (type < 0
        || !voice_json_str_eq(schema->data, toks, type, "object"))
    {
        err = "\"parameters\" must have \"type\": \"object\"";
        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "tool schema \"%V\" is invalid: %s", file, err);

    return NGX_CONF_ERROR;
}


/* voice_tool NAME URL SCHEMA_FILE [timeout=TIME]; */

static char *
ngx_http_voice_session_set_tool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_voice_session_conf_t *scf = conf;

    char                           *rv;
    ngx_str_t                      *value, t;
    ngx_uint_t                      i;
    ngx_http_voice_session_tool_t  *tool;

    value = cf->args->elts;

    if (!ngx_http_voice_session_name_ok(&value[1])
        || (value[1].len == 8 && ngx_strncmp(value[1].data, "end_call", 8)
                                 == 0)
        || (value[1].len == 13
            && ngx_strncmp(value[1].data, "transfer_call", 13) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid tool name \"%V\" in \"%V\": 1 to %d "
                           "letters, digits, \"_\" or \"-\", and not a "
                           "built-in tool's name", &value[1], &cmd->name,
                           NGX_HTTP_VOICE_SESSION_NAME_MAX);
        return NGX_CONF_ERROR;
    }

    if (!ngx_http_voice_session_url_ok(&value[2])
        || !ngx_http_voice_session_printable(&value[2]))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid tool URL \"%V\" in \"%V\": an http:// "
                           "or https:// URL is expected",
                           &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (scf->tools == NGX_CONF_UNSET_PTR) {
        scf->tools = ngx_array_create(cf->pool, 4,
                                      sizeof(ngx_http_voice_session_tool_t));
        if (scf->tools == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    tool = scf->tools->elts;

    for (i = 0; i < scf->tools->nelts; i++) {
        if (tool[i].name.len == value[1].len
            && ngx_strncmp(tool[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "tool \"%V\" is declared twice", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (scf->tools->nelts == NGX_HTTP_VOICE_SESSION_TOOLS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "more than %d tools in one location",
                           NGX_HTTP_VOICE_SESSION_TOOLS_MAX);
        return NGX_CONF_ERROR;
    }

    tool = ngx_array_push(scf->tools);
    if (tool == NULL) {
        return NGX_CONF_ERROR;
    }

    tool->name = value[1];
    tool->url = value[2];
    tool->timeout = 5000;

    rv = ngx_http_voice_session_read_schema(cf, &value[3], &tool->schema);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (cf->args->nelts == 5) {
        if (value[4].len <= 8
            || ngx_strncmp(value[4].data, "timeout=", 8) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"%V\"",
                               &value[4], &cmd->name);
            return NGX_CONF_ERROR;
        }

        t.data = value[4].data + 8;
        t.len = value[4].len - 8;

        tool->timeout = ngx_parse_time(&t, 0);

        if (tool->timeout == (ngx_msec_t) NGX_ERROR || tool->timeout == 0
            || tool->timeout > 60000)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid timeout \"%V\" in \"%V\": up to "
                               "60s", &t, &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* voice_transfer_to NAME +E164 | sip:URI; */

static char *
ngx_http_voice_session_set_transfer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_voice_session_conf_t *scf = conf;

    ngx_str_t                          *value;
    ngx_uint_t                          i, ok;
    ngx_http_voice_session_transfer_t  *t;

    value = cf->args->elts;

    if (!ngx_http_voice_session_name_ok(&value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid destination name \"%V\" in \"%V\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    ok = ngx_http_voice_body_valid_e164(value[2].data, value[2].len);

    if (!ok && value[2].len > 4 && value[2].len <= 256
        && ngx_strncasecmp(value[2].data, (u_char *) "sip:", 4) == 0)
    {
        ok = ngx_http_voice_session_printable(&value[2]);

        for (i = 0; ok && i < value[2].len; i++) {
            if (value[2].data[i] == '<' || value[2].data[i] == '>'
                || value[2].data[i] == '&' || value[2].data[i] == '\'')
            {
                ok = 0;
            }
        }
    }

    if (!ok) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid destination \"%V\" in \"%V\": a number "
                           "in E.164 form (+14155550123) or a sip: URI is "
                           "expected", &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (scf->transfer == NGX_CONF_UNSET_PTR) {
        scf->transfer = ngx_array_create(cf->pool, 2,
                                    sizeof(ngx_http_voice_session_transfer_t));
        if (scf->transfer == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    t = scf->transfer->elts;

    for (i = 0; i < scf->transfer->nelts; i++) {
        if (t[i].name.len == value[1].len
            && ngx_strncmp(t[i].name.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "destination \"%V\" is declared twice",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (scf->transfer->nelts == NGX_HTTP_VOICE_SESSION_TOOLS_MAX) {
        return "has too many destinations";
    }

    t = ngx_array_push(scf->transfer);
    if (t == NULL) {
        return NGX_CONF_ERROR;
    }

    t->name = value[1];
    t->to = value[2];

    return NGX_CONF_OK;
}


/*
 * voice_mcp_server LABEL URL [allowed=a,b]
 *                  [authorization=file:PATH | authorization=env:NAME];
 */

static char *
ngx_http_voice_session_set_mcp(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_voice_session_conf_t *scf = conf;

    u_char                        *p, *last, *comma;
    ngx_str_t                     *value, v, file, *a;
    ngx_uint_t                     i;
    ngx_http_voice_session_mcp_t  *m;

    value = cf->args->elts;

    if (!ngx_http_voice_session_name_ok(&value[1])
        || !ngx_http_voice_session_url_ok(&value[2])
        || !ngx_http_voice_session_printable(&value[2]))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid label \"%V\" or URL \"%V\" in \"%V\"",
                           &value[1], &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (scf->mcp == NGX_CONF_UNSET_PTR) {
        scf->mcp = ngx_array_create(cf->pool, 2,
                                    sizeof(ngx_http_voice_session_mcp_t));
        if (scf->mcp == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    m = scf->mcp->elts;

    for (i = 0; i < scf->mcp->nelts; i++) {
        if (m[i].label.len == value[1].len
            && ngx_strncmp(m[i].label.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "MCP server \"%V\" is declared twice",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    m = ngx_array_push(scf->mcp);
    if (m == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(m, sizeof(ngx_http_voice_session_mcp_t));
    m->label = value[1];
    m->url = value[2];

    for (i = 3; i < cf->args->nelts; i++) {

        if (value[i].len > 8
            && ngx_strncmp(value[i].data, "allowed=", 8) == 0)
        {
            m->allowed = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
            if (m->allowed == NULL) {
                return NGX_CONF_ERROR;
            }

            p = value[i].data + 8;
            last = value[i].data + value[i].len;

            while (p < last) {
                comma = ngx_strlchr(p, last, ',');
                if (comma == NULL) {
                    comma = last;
                }

                v.data = p;
                v.len = comma - p;

                if (!ngx_http_voice_session_name_ok(&v)) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "invalid tool name \"%V\" in "
                                       "\"%V\"", &v, &cmd->name);
                    return NGX_CONF_ERROR;
                }

                a = ngx_array_push(m->allowed);
                if (a == NULL) {
                    return NGX_CONF_ERROR;
                }

                *a = v;
                p = comma + 1;
            }

            continue;
        }

        if (value[i].len > 19
            && ngx_strncmp(value[i].data, "authorization=file:", 19) == 0)
        {
            file.data = value[i].data + 19;
            file.len = value[i].len - 19;

            if (ngx_http_voice_conf_secret(cf, &file, NULL,
                                           &m->authorization)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (value[i].len > 18
            && ngx_strncmp(value[i].data, "authorization=env:", 18) == 0)
        {
            v.data = value[i].data + 18;
            v.len = value[i].len - 18;

            p = ngx_pnalloc(cf->temp_pool, v.len + 1);
            if (p == NULL) {
                return NGX_CONF_ERROR;
            }

            (void) ngx_cpystrn(p, v.data, v.len + 1);
            ngx_str_null(&file);

            if (ngx_http_voice_conf_secret(cf, &file, (char *) p,
                                           &m->authorization)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            if (m->authorization.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "the environment variable \"%V\" named "
                                   "by \"%V\" is not set", &v, &cmd->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\"",
                           &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* --- rendering ---------------------------------------------------------- */


static void
ngx_http_voice_session_raw(ngx_http_voice_session_out_t *o, const char *s,
    size_t len)
{
    if (o->p) {
        o->p = ngx_cpymem(o->p, s, len);
    }

    o->len += len;
}


static void
ngx_http_voice_session_key(ngx_http_voice_session_out_t *o, const char *key)
{
    if (!o->first) {
        ngx_http_voice_session_raw(o, ",", 1);
    }

    o->first = 0;

    ngx_http_voice_session_raw(o, "\"", 1);
    ngx_http_voice_session_raw(o, key, ngx_strlen(key));
    ngx_http_voice_session_raw(o, "\":", 2);
}


static void
ngx_http_voice_session_quoted(ngx_http_voice_session_out_t *o, u_char *s,
    size_t len)
{
    ngx_http_voice_session_raw(o, "\"", 1);

    if (o->p) {
        o->p = (u_char *) ngx_escape_json(o->p, s, len);
    }

    o->len += len + ngx_escape_json(NULL, s, len);

    ngx_http_voice_session_raw(o, "\"", 1);
}


static void
ngx_http_voice_session_str(ngx_http_voice_session_out_t *o, const char *key,
    ngx_str_t *v)
{
    if (v->len == 0) {
        return;
    }

    ngx_http_voice_session_key(o, key);
    ngx_http_voice_session_quoted(o, v->data, v->len);
}


static void
ngx_http_voice_session_cstr(ngx_http_voice_session_out_t *o, const char *key,
    const char *v)
{
    ngx_http_voice_session_key(o, key);
    ngx_http_voice_session_quoted(o, (u_char *) v, ngx_strlen(v));
}


static void
ngx_http_voice_session_num(ngx_http_voice_session_out_t *o, const char *key,
    ngx_uint_t v)
{
    u_char  buf[NGX_INT_T_LEN];

    ngx_http_voice_session_key(o, key);
    ngx_http_voice_session_raw(o, (char *) buf, ngx_sprintf(buf, "%ui", v)
                                                - buf);
}


/* per mille -> "0.5" */
static void
ngx_http_voice_session_frac(ngx_http_voice_session_out_t *o, const char *key,
    ngx_uint_t v)
{
    u_char  buf[NGX_INT_T_LEN + 8];

    ngx_http_voice_session_key(o, key);
    ngx_http_voice_session_raw(o, (char *) buf,
                               ngx_sprintf(buf, "%ui.%03ui", v / 1000,
                                           v % 1000)
                               - buf);
}


static void
ngx_http_voice_session_bool(ngx_http_voice_session_out_t *o, const char *key,
    ngx_flag_t v)
{
    ngx_http_voice_session_key(o, key);
    ngx_http_voice_session_raw(o, v ? "true" : "false", v ? 4 : 5);
}


static void
ngx_http_voice_session_open(ngx_http_voice_session_out_t *o, const char *key,
    char c)
{
    if (key != NULL) {
        ngx_http_voice_session_key(o, key);

    } else if (!o->first) {
        ngx_http_voice_session_raw(o, ",", 1);
    }

    ngx_http_voice_session_raw(o, &c, 1);
    o->first = 1;
}


static void
ngx_http_voice_session_close(ngx_http_voice_session_out_t *o, char c)
{
    ngx_http_voice_session_raw(o, &c, 1);
    o->first = 0;
}


/*
 * Writes the settings blob of conf, with a call's own extras (from its
 * /api/call request) over it, into p; with p NULL, only counts.  Returns
 * its length.  The shape is documented in docs/proto.md.
 */

static size_t
ngx_http_voice_session_write(ngx_http_voice_session_conf_t *conf,
    ngx_http_voice_session_extra_t *extra, u_char *p)
{
    ngx_str_t                          *a;
    ngx_uint_t                          i, k;
    ngx_http_voice_session_out_t        o;
    ngx_http_voice_session_mcp_t       *m;
    ngx_http_voice_session_tool_t      *t;
    ngx_http_voice_session_transfer_t  *d;

    o.p = p;
    o.len = 0;
    o.first = 1;

    ngx_http_voice_session_raw(&o, "{", 1);

    ngx_http_voice_session_str(&o, "model", &conf->model);
    ngx_http_voice_session_str(&o, "voice", &conf->voice);

    /* a call's own values are JSON literals, checked by the API */

    if (extra && extra->instructions.len) {
        ngx_http_voice_session_key(&o, "instructions");
        ngx_http_voice_session_raw(&o, (char *) extra->instructions.data,
                                   extra->instructions.len);

    } else {
        ngx_http_voice_session_str(&o, "instructions", &conf->instructions);
    }

    if (extra && extra->greeting.len) {
        ngx_http_voice_session_key(&o, "greeting");
        ngx_http_voice_session_raw(&o, (char *) extra->greeting.data,
                                   extra->greeting.len);

    } else {
        ngx_http_voice_session_str(&o, "greeting", &conf->greeting);
    }

    if (extra && extra->context.len) {
        ngx_http_voice_session_key(&o, "context");
        ngx_http_voice_session_raw(&o, (char *) extra->context.data,
                                   extra->context.len);
    }

    ngx_http_voice_session_str(&o, "transcribeModel", &conf->transcribe_model);
    ngx_http_voice_session_str(&o, "transcribeLanguage",
                               &conf->transcribe_language);
    ngx_http_voice_session_str(&o, "transcribePrompt",
                               &conf->transcribe_prompt);

    if (conf->given & NGX_HTTP_VOICE_SESSION_GIVEN_REASONING) {
        ngx_http_voice_session_cstr(&o, "reasoningEffort",
                        ngx_http_voice_session_effort_names[conf->reasoning]);
    }

    ngx_http_voice_session_open(&o, "turnDetection", '{');

    ngx_http_voice_session_cstr(&o, "type", conf->turn_detection == 1
                                            ? "semantic_vad" : "server_vad");

    if (conf->turn_detection == 1) {
        ngx_http_voice_session_cstr(&o, "eagerness",
                     ngx_http_voice_session_eagerness_names[conf->eagerness]);
    }

    if (conf->given & NGX_HTTP_VOICE_SESSION_GIVEN_VAD_THRESHOLD) {
        ngx_http_voice_session_frac(&o, "threshold", conf->vad_threshold);
    }

    if (conf->given & NGX_HTTP_VOICE_SESSION_GIVEN_VAD_PREFIX) {
        ngx_http_voice_session_num(&o, "prefixMs", conf->vad_prefix);
    }

    if (conf->given & NGX_HTTP_VOICE_SESSION_GIVEN_VAD_SILENCE) {
        ngx_http_voice_session_num(&o, "silenceMs", conf->vad_silence);
    }

    ngx_http_voice_session_bool(&o, "interrupt", conf->interrupt);
    ngx_http_voice_session_close(&o, '}');

    if (conf->given & NGX_HTTP_VOICE_SESSION_GIVEN_NOISE) {
        ngx_http_voice_session_cstr(&o, "noiseReduction",
                 ngx_http_voice_session_noise_names[conf->noise_reduction]);
    }

    if (conf->given & NGX_HTTP_VOICE_SESSION_GIVEN_SPEED) {
        ngx_http_voice_session_frac(&o, "speed", conf->speed);
    }

    if (conf->given & NGX_HTTP_VOICE_SESSION_GIVEN_TOKENS) {
        if (conf->max_output_tokens == 0) {
            ngx_http_voice_session_cstr(&o, "maxOutputTokens", "inf");

        } else {
            ngx_http_voice_session_num(&o, "maxOutputTokens",
                                       conf->max_output_tokens);
        }
    }

    if (!(conf->given & NGX_HTTP_VOICE_SESSION_GIVEN_TRUNCATION)) {
        /* bridged's default */

    } else if (conf->truncation == NGX_HTTP_VOICE_SESSION_TRUNC_AUTO) {
        ngx_http_voice_session_cstr(&o, "truncation", "auto");

    } else if (conf->truncation == NGX_HTTP_VOICE_SESSION_TRUNC_DISABLED) {
        ngx_http_voice_session_cstr(&o, "truncation", "disabled");

    } else {
        ngx_http_voice_session_frac(&o, "truncation", conf->truncation);
    }

    ngx_http_voice_session_bool(&o, "endCall", conf->end_call);

    if (conf->tools) {
        ngx_http_voice_session_open(&o, "tools", '[');

        t = conf->tools->elts;

        for (i = 0; i < conf->tools->nelts; i++) {
            ngx_http_voice_session_open(&o, NULL, '{');
            ngx_http_voice_session_str(&o, "name", &t[i].name);
            ngx_http_voice_session_str(&o, "url", &t[i].url);
            ngx_http_voice_session_num(&o, "timeoutMs", t[i].timeout);
            ngx_http_voice_session_key(&o, "schema");
            ngx_http_voice_session_raw(&o, (char *) t[i].schema.data,
                                       t[i].schema.len);
            ngx_http_voice_session_close(&o, '}');
        }

        ngx_http_voice_session_close(&o, ']');
        ngx_http_voice_session_str(&o, "toolSecret", &conf->tool_secret);
    }

    if (conf->transfer) {
        ngx_http_voice_session_open(&o, "transfer", '[');

        d = conf->transfer->elts;

        for (i = 0; i < conf->transfer->nelts; i++) {
            ngx_http_voice_session_open(&o, NULL, '{');
            ngx_http_voice_session_str(&o, "name", &d[i].name);
            ngx_http_voice_session_str(&o, "to", &d[i].to);
            ngx_http_voice_session_close(&o, '}');
        }

        ngx_http_voice_session_close(&o, ']');
    }

    if (conf->mcp) {
        ngx_http_voice_session_open(&o, "mcp", '[');

        m = conf->mcp->elts;

        for (i = 0; i < conf->mcp->nelts; i++) {
            ngx_http_voice_session_open(&o, NULL, '{');
            ngx_http_voice_session_str(&o, "label", &m[i].label);
            ngx_http_voice_session_str(&o, "url", &m[i].url);
            ngx_http_voice_session_str(&o, "authorization",
                                       &m[i].authorization);

            if (m[i].allowed) {
                ngx_http_voice_session_open(&o, "allowed", '[');

                a = m[i].allowed->elts;

                for (k = 0; k < m[i].allowed->nelts; k++) {
                    if (k) {
                        ngx_http_voice_session_raw(&o, ",", 1);
                    }

                    ngx_http_voice_session_quoted(&o, a[k].data, a[k].len);
                }

                ngx_http_voice_session_close(&o, ']');
            }

            ngx_http_voice_session_close(&o, '}');
        }

        ngx_http_voice_session_close(&o, ']');
    }

    if (extra && extra->machine_detection != NGX_HTTP_VOICE_BODY_AMD_UNSET) {

        /* the call's own: it asked Twilio for a verdict, or did not */

        ngx_http_voice_session_cstr(&o, "machineDetection",
            ngx_http_voice_session_amd_names[extra->machine_detection + 1]);

    } else {
        ngx_http_voice_session_cstr(&o, "machineDetection",
            ngx_http_voice_session_amd_names[conf->machine_detection]);
    }
    ngx_http_voice_session_str(&o, "voicemailMessage",
                               &conf->voicemail_message);
    ngx_http_voice_session_str(&o, "twimlUrl", &conf->twiml_url);

    if (extra && extra->sealed.len) {
        ngx_http_voice_session_str(&o, "sealedContext", &extra->sealed);
    }

    if (conf->idle_timeout) {
        ngx_http_voice_session_num(&o, "idleTimeoutMs", conf->idle_timeout);
        ngx_http_voice_session_num(&o, "idlePrompts", conf->idle_prompts);
    }

    if (conf->max_call_duration) {
        ngx_http_voice_session_num(&o, "maxDurationMs",
                                   conf->max_call_duration);
    }

    ngx_http_voice_session_raw(&o, "}", 1);

    return o.len;
}


/* --- at run time -------------------------------------------------------- */


ngx_int_t
ngx_http_voice_session_render(ngx_pool_t *pool,
    ngx_http_voice_session_conf_t *conf,
    ngx_http_voice_session_extra_t *extra, ngx_str_t *blob)
{
    size_t   n;
    u_char  *p;

    n = ngx_http_voice_session_write(conf, extra, NULL);

    if (n > VOICE_PROTO_MAX_SETTINGS) {
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(pool, n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    blob->len = ngx_http_voice_session_write(conf, extra, p);
    blob->data = p;

    return NGX_OK;
}


/* the location's voice_machine_detection, as NGX_HTTP_VOICE_BODY_AMD_* */

int
ngx_http_voice_session_machine_detection(ngx_http_request_t *r)
{
    ngx_http_voice_session_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_voice_session_module);

    /* the enum's values are off 1, on 2, wait 3 */
    return (int) conf->machine_detection - 1;
}


/* the location's voice_max_call_duration, seconds, 0: none */

ngx_uint_t
ngx_http_voice_session_time_limit(ngx_http_request_t *r)
{
    ngx_http_voice_session_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_voice_session_module);

    return (conf->max_call_duration + 999) / 1000;
}


/* "N.CRC": the /twiml location's profile, for its <Parameter> */

u_char *
ngx_http_voice_session_profile_name(ngx_http_request_t *r, u_char *buf)
{
    ngx_http_voice_session_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_voice_session_module);

    if (conf->profile < 0) {
        return buf;
    }

    return ngx_sprintf(buf, "%i.%08xD", conf->profile, conf->crc);
}


/*
 * The settings a stream runs with: the profile its TwiML named, when it
 * names one this configuration has, else the stream location's own.
 */

ngx_http_voice_session_conf_t *
ngx_http_voice_session_find(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char                              *dot;
    uint32_t                             crc;
    ngx_int_t                            index, c;
    ngx_http_voice_session_conf_t      **profiles, *own;
    ngx_http_voice_session_main_conf_t  *smcf;

    own = ngx_http_get_module_loc_conf(r, ngx_http_voice_session_module);

    if (name == NULL || name->len == 0) {
        return own;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_voice_session_module);

    dot = ngx_strlchr(name->data, name->data + name->len, '.');

    if (dot == NULL || name->data + name->len - dot != 9) {
        goto mismatch;
    }

    index = ngx_atoi(name->data, dot - name->data);
    c = ngx_hextoi(dot + 1, 8);

    if (index == NGX_ERROR || c == NGX_ERROR
        || (ngx_uint_t) index >= smcf->profiles.nelts)
    {
        goto mismatch;
    }

    crc = (uint32_t) c;
    profiles = smcf->profiles.elts;

    if (profiles[index]->crc != crc) {
        goto mismatch;
    }

    return profiles[index];

mismatch:

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "voice: the stream names settings \"%V\" that this "
                  "configuration does not have (reloaded since its TwiML?): "
                  "it takes the settings of its own location", name);

    return own;
}
