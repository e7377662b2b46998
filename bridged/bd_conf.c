/*
 * bd_conf.c: reads the command line and the environment into bd_conf_t.
 *
 * Each option has an environment variable; the command line wins.  The
 * secrets (Twilio token, OpenAI key) come only from the environment, so
 * they never show in a process listing.  Values are checked here, so a bad
 * one stops bridged at start with a clear message rather than at the first
 * call.  Called by main() in bd_loop.c.
 */

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bd_conf.h"
#include "bd_log.h"


#define BD_CONF_URL_MAX  1024


typedef struct {
    const char  *name;       /* long option, without "--" */
    const char  *env;
    unsigned     min;
    unsigned     max;
    unsigned     def;
    size_t       offset;     /* into bd_conf_t */
} bd_conf_num_t;


static const bd_conf_num_t  bd_conf_nums[] = {
    { "twilio-timeout-ms", "BRIDGED_TWILIO_TIMEOUT_MS", 100, 600000, 10000,
      offsetof(bd_conf_t, twilio_timeout_ms) },
    { "final-wait-ms", "BRIDGED_FINAL_WAIT_MS", 0, 600000, 5000,
      offsetof(bd_conf_t, final_wait_ms) },
    { "audio-buffer-ms", "BRIDGED_AUDIO_BUFFER_MS", 20, 120000, 10000,
      offsetof(bd_conf_t, audio_buffer_ms) },
    { "session-max-s", "BRIDGED_SESSION_MAX_S", 0, 86400, 3300,
      offsetof(bd_conf_t, session_max_s) },
    { "twilio-retries", "BRIDGED_TWILIO_RETRIES", 0, 10, 2,
      offsetof(bd_conf_t, twilio_retries) },
    { "twilio-deadline-ms", "BRIDGED_TWILIO_DEADLINE_MS", 100, 600000, 20000,
      offsetof(bd_conf_t, twilio_deadline_ms) },
    { "max-calls", "BRIDGED_MAX_CALLS", 1, 65536, 4096,
      offsetof(bd_conf_t, max_calls) },
};


enum {
    BD_CONF_OPT_LISTEN = 1,
    BD_CONF_OPT_CA_FILE,
    BD_CONF_OPT_TWILIO_TIMEOUT,
    BD_CONF_OPT_FINAL_WAIT,
    BD_CONF_OPT_AUDIO_BUFFER,
    BD_CONF_OPT_SESSION_MAX,
    BD_CONF_OPT_TWILIO_RETRIES,
    BD_CONF_OPT_TWILIO_DEADLINE,
    BD_CONF_OPT_MAX_CALLS,
    BD_CONF_OPT_LOG_LEVEL,
    BD_CONF_OPT_LOG,
    BD_CONF_OPT_SCHED,
    BD_CONF_OPT_CURVE_SECRET_KEY,
    BD_CONF_OPT_CURVE_CLIENTS,
    BD_CONF_OPT_CURVE_KEYGEN,
    BD_CONF_OPT_HELP
};


static const struct option  bd_conf_options[] = {
    { "listen", required_argument, NULL, BD_CONF_OPT_LISTEN },
    { "ca-file", required_argument, NULL, BD_CONF_OPT_CA_FILE },
    { "twilio-timeout-ms", required_argument, NULL,
      BD_CONF_OPT_TWILIO_TIMEOUT },
    { "final-wait-ms", required_argument, NULL, BD_CONF_OPT_FINAL_WAIT },
    { "audio-buffer-ms", required_argument, NULL, BD_CONF_OPT_AUDIO_BUFFER },
    { "session-max-s", required_argument, NULL, BD_CONF_OPT_SESSION_MAX },
    { "twilio-retries", required_argument, NULL, BD_CONF_OPT_TWILIO_RETRIES },
    { "twilio-deadline-ms", required_argument, NULL,
      BD_CONF_OPT_TWILIO_DEADLINE },
    { "max-calls", required_argument, NULL, BD_CONF_OPT_MAX_CALLS },
    { "log-level", required_argument, NULL, BD_CONF_OPT_LOG_LEVEL },
    { "log", required_argument, NULL, BD_CONF_OPT_LOG },
    { "sched", required_argument, NULL, BD_CONF_OPT_SCHED },
    { "curve-secret-key", required_argument, NULL,
      BD_CONF_OPT_CURVE_SECRET_KEY },
    { "curve-clients", required_argument, NULL, BD_CONF_OPT_CURVE_CLIENTS },
    { "curve-keygen", required_argument, NULL, BD_CONF_OPT_CURVE_KEYGEN },
    { "help", no_argument, NULL, BD_CONF_OPT_HELP },
    { NULL, 0, NULL, 0 }
};


static char  bd_conf_twilio_url[BD_CONF_URL_MAX];


void
bd_conf_usage(FILE *out)
{
    fputs(
"usage: bridged --listen ENDPOINT [options]\n"
"       bridged --curve-keygen PREFIX\n"
"\n"
"  --listen ENDPOINT         ZeroMQ endpoint to bind, e.g.\n"
"                            ipc:///run/voice/bridged.sock or\n"
"                            tcp://127.0.0.1:5555  (BRIDGED_LISTEN)\n"
"  --ca-file PATH            CA bundle that verifies OpenAI's and Twilio's\n"
"                            certificates; default: the system store\n"
"                            (BRIDGED_CA_FILE)\n"
"  --twilio-timeout-ms N     total time of one Twilio REST transfer,\n"
"                            default 10000 (BRIDGED_TWILIO_TIMEOUT_MS)\n"
"  --twilio-retries N        how many times a Twilio request that is safe\n"
"                            to repeat (a GET, a hang-up) is sent again\n"
"                            after a failure of the network, a 429 or a\n"
"                            5xx, 0 to 10, default 2; creating a call or\n"
"                            redirecting one never is\n"
"                            (BRIDGED_TWILIO_RETRIES)\n"
"  --twilio-deadline-ms N    the longest a Twilio request takes, retries\n"
"                            and their waits included, default 20000\n"
"                            (BRIDGED_TWILIO_DEADLINE_MS)\n"
"  --final-wait-ms N         after the caller hangs up, how long to wait\n"
"                            for the last transcripts, default 5000\n"
"                            (BRIDGED_FINAL_WAIT_MS)\n"
"  --audio-buffer-ms N       caller audio held while the OpenAI session\n"
"                            opens, default 10000 (BRIDGED_AUDIO_BUFFER_MS)\n"
"  --session-max-s N         a call moves to a new OpenAI session, with the\n"
"                            conversation so far, at a quiet moment after\n"
"                            this long (and always before the session's\n"
"                            own expires_at); 0: only then. Default 3300\n"
"                            (BRIDGED_SESSION_MAX_S)\n"
"  --max-calls N             calls at once, 1 to 65536, default 4096; a\n"
"                            stream past them is refused, and nginx takes\n"
"                            this bridged for full until it has room\n"
"                            (BRIDGED_MAX_CALLS)\n"
"  --log-level LEVEL         debug, info, warn or error, default info\n"
"                            (BRIDGED_LOG_LEVEL)\n"
"  --log TARGET              where lines go: stderr (default) or syslog,\n"
"                            named as nginx's error_log names it:\n"
"                            syslog[:server=unix:/dev/log|ADDR[:PORT]]\n"
"                            [,facility=daemon][,tag=bridged]\n"
"                            (BRIDGED_LOG)\n"
"  --sched POLICY            batch (default) or other: the Linux scheduling\n"
"                            policy; batch lets bridged and its ZeroMQ\n"
"                            thread take their messages in batches instead\n"
"                            of preempting each other for every one\n"
"                            (BRIDGED_SCHED)\n"
"  --curve-secret-key FILE   bridged's CURVE secret key (Z85, mode 600):\n"
"                            the channel is encrypted, and only the nginx\n"
"                            hosts in --curve-clients may connect\n"
"                            (BRIDGED_CURVE_SECRET_KEY)\n"
"  --curve-clients FILE|DIR  the public keys of those nginx hosts: a file,\n"
"                            one key a line, or a directory of *.pub\n"
"                            files; needed with --curve-secret-key\n"
"                            (BRIDGED_CURVE_CLIENTS)\n"
"  --curve-keygen PREFIX     writes a new key pair, PREFIX.key (secret,\n"
"                            mode 600) and PREFIX.pub, and exits\n"
"  --help                    this text\n"
"\n"
"environment:\n"
"  TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN   Twilio REST credentials\n"
"  TWILIO_API_URL            default https://api.twilio.com\n"
"  OPENAI_API_KEY            OpenAI Realtime key\n"
"  OPENAI_REALTIME_URL       default wss://api.openai.com/v1/realtime\n"
"  OPENAI_MODEL              default gpt-realtime-2.1\n",
        out);
}


/* an empty variable counts as unset: "FOO= bridged" must not mean "" */

static const char *
bd_conf_env(const char *name)
{
    const char  *v;

    v = getenv(name);

    return (v != NULL && v[0] != '\0') ? v : NULL;
}


static int
bd_conf_parse_num(const char *s, unsigned min, unsigned max, unsigned *out)
{
    char           *end;
    unsigned long   v;

    if (s[0] < '0' || s[0] > '9') {
        return 0;
    }

    v = strtoul(s, &end, 10);

    if (*end != '\0' || v < min || v > max) {
        return 0;
    }

    *out = (unsigned) v;

    return 1;
}


static int
bd_conf_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}


int
bd_conf_load(bd_conf_t *conf, int argc, char **argv, char *err,
    size_t err_size)
{
    int                   c, i;
    size_t                len;
    unsigned             *num;
    const char           *level, *sched, *twilio_url;
    const char           *nums[sizeof(bd_conf_nums) / sizeof(bd_conf_nums[0])];
    const bd_conf_num_t  *n;

    memset(conf, 0, sizeof(bd_conf_t));
    memset(nums, 0, sizeof(nums));

    conf->listen = bd_conf_env("BRIDGED_LISTEN");
    conf->ca_file = bd_conf_env("BRIDGED_CA_FILE");
    conf->curve_secret_key = bd_conf_env("BRIDGED_CURVE_SECRET_KEY");
    conf->curve_clients = bd_conf_env("BRIDGED_CURVE_CLIENTS");
    level = bd_conf_env("BRIDGED_LOG_LEVEL");
    conf->log = bd_conf_env("BRIDGED_LOG");
    sched = bd_conf_env("BRIDGED_SCHED");

    for (i = 0; i < (int) (sizeof(nums) / sizeof(nums[0])); i++) {
        nums[i] = bd_conf_env(bd_conf_nums[i].env);
    }

    opterr = 0;
    optind = 1;

    while ((c = getopt_long(argc, argv, "", bd_conf_options, NULL)) != -1) {

        switch (c) {

        case BD_CONF_OPT_LISTEN:
            conf->listen = optarg;
            break;

        case BD_CONF_OPT_CA_FILE:
            conf->ca_file = optarg;
            break;

        case BD_CONF_OPT_TWILIO_TIMEOUT:
        case BD_CONF_OPT_FINAL_WAIT:
        case BD_CONF_OPT_AUDIO_BUFFER:
        case BD_CONF_OPT_SESSION_MAX:
        case BD_CONF_OPT_TWILIO_RETRIES:
        case BD_CONF_OPT_TWILIO_DEADLINE:
        case BD_CONF_OPT_MAX_CALLS:
            nums[c - BD_CONF_OPT_TWILIO_TIMEOUT] = optarg;
            break;

        case BD_CONF_OPT_LOG_LEVEL:
            level = optarg;
            break;

        case BD_CONF_OPT_LOG:
            conf->log = optarg;
            break;

        case BD_CONF_OPT_SCHED:
            sched = optarg;
            break;

        case BD_CONF_OPT_CURVE_SECRET_KEY:
            conf->curve_secret_key = optarg;
            break;

        case BD_CONF_OPT_CURVE_CLIENTS:
            conf->curve_clients = optarg;
            break;

        case BD_CONF_OPT_CURVE_KEYGEN:
            conf->curve_keygen = optarg;
            break;

        case BD_CONF_OPT_HELP:
            bd_conf_usage(stdout);
            return BD_CONF_EXIT;

        default:
            snprintf(err, err_size, "unknown or incomplete option \"%s\"",
                     argv[optind - 1]);
            return BD_CONF_ERROR;
        }
    }

    if (optind < argc) {
        snprintf(err, err_size, "unexpected argument \"%s\"", argv[optind]);
        return BD_CONF_ERROR;
    }

    /* making keys needs nothing else */
    if (conf->curve_keygen != NULL) {
        return BD_CONF_OK;
    }

    if ((conf->curve_secret_key == NULL) != (conf->curve_clients == NULL)) {
        snprintf(err, err_size, "--curve-secret-key and --curve-clients go "
                 "together: bridged's key, and the nginx hosts it lets in");
        return BD_CONF_ERROR;
    }

    if (conf->listen == NULL) {
        snprintf(err, err_size,
                 "--listen (or BRIDGED_LISTEN) is required, e.g. "
                 "ipc:///run/voice/bridged.sock");
        return BD_CONF_ERROR;
    }

    for (i = 0; i < (int) (sizeof(nums) / sizeof(nums[0])); i++) {
        n = &bd_conf_nums[i];
        num = (unsigned *) ((char *) conf + n->offset);

        if (nums[i] == NULL) {
            *num = n->def;

        } else if (!bd_conf_parse_num(nums[i], n->min, n->max, num)) {
            snprintf(err, err_size,
                     "--%s: \"%s\" is not a number from %u to %u",
                     n->name, nums[i], n->min, n->max);
            return BD_CONF_ERROR;
        }
    }

    conf->log_level = BD_LOG_INFO;

    if (level != NULL) {
        conf->log_level = bd_log_level_parse(level);

        if (conf->log_level < 0) {
            snprintf(err, err_size,
                     "--log-level: \"%s\" is not debug, info, warn or error",
                     level);
            return BD_CONF_ERROR;
        }
    }

    conf->sched_batch = 1;

    if (sched != NULL) {
        if (strcmp(sched, "other") == 0) {
            conf->sched_batch = 0;

        } else if (strcmp(sched, "batch") != 0) {
            snprintf(err, err_size, "--sched: \"%s\" is not batch or other",
                     sched);
            return BD_CONF_ERROR;
        }
    }

    if (conf->ca_file != NULL && access(conf->ca_file, R_OK) != 0) {
        snprintf(err, err_size, "--ca-file: cannot read \"%s\"",
                 conf->ca_file);
        return BD_CONF_ERROR;
    }

    conf->twilio_sid = bd_conf_env("TWILIO_ACCOUNT_SID");
    conf->twilio_token = bd_conf_env("TWILIO_AUTH_TOKEN");

    twilio_url = bd_conf_env("TWILIO_API_URL");
    if (twilio_url == NULL) {
        twilio_url = "https://api.twilio.com";
    }

    if (!bd_conf_prefix(twilio_url, "https://")
        && !bd_conf_prefix(twilio_url, "http://"))
    {
        snprintf(err, err_size,
                 "TWILIO_API_URL: \"%s\" is not an http(s):// URL",
                 twilio_url);
        return BD_CONF_ERROR;
    }

    len = strlen(twilio_url);
    while (len > 0 && twilio_url[len - 1] == '/') {
        len--;
    }

    if (len >= sizeof(bd_conf_twilio_url)) {
        snprintf(err, err_size, "TWILIO_API_URL is too long");
        return BD_CONF_ERROR;
    }

    memcpy(bd_conf_twilio_url, twilio_url, len);
    bd_conf_twilio_url[len] = '\0';
    conf->twilio_api_url = bd_conf_twilio_url;

    conf->openai_key = bd_conf_env("OPENAI_API_KEY");

    conf->openai_url = bd_conf_env("OPENAI_REALTIME_URL");
    if (conf->openai_url == NULL) {
        conf->openai_url = "wss://api.openai.com/v1/realtime";
    }

    if (!bd_conf_prefix(conf->openai_url, "wss://")
        && !bd_conf_prefix(conf->openai_url, "ws://"))
    {
        snprintf(err, err_size,
                 "OPENAI_REALTIME_URL: \"%s\" is not a ws(s):// URL",
                 conf->openai_url);
        return BD_CONF_ERROR;
    }

    if (strlen(conf->openai_url) >= BD_CONF_URL_MAX) {
        snprintf(err, err_size, "OPENAI_REALTIME_URL is too long");
        return BD_CONF_ERROR;
    }

    conf->openai_model = bd_conf_env("OPENAI_MODEL");
    if (conf->openai_model == NULL) {
        conf->openai_model = "gpt-realtime-2.1";
    }

    return BD_CONF_OK;
}
