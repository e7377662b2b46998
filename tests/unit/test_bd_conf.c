/*
 * test_bd_conf.c: unit tests of bridged/bd_conf.c: defaults, environment
 * versus command line, and the values refused at start.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bd_conf.h"
#include "bd_log.h"


static const char  *vars[] = {
    "BRIDGED_LISTEN", "BRIDGED_CA_FILE", "BRIDGED_TWILIO_TIMEOUT_MS",
    "BRIDGED_FINAL_WAIT_MS", "BRIDGED_AUDIO_BUFFER_MS", "BRIDGED_LOG_LEVEL",
    "BRIDGED_SCHED",
    "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_URL",
    "OPENAI_API_KEY", "OPENAI_REALTIME_URL", "OPENAI_MODEL", NULL
};


static int
clean_env(void **state)
{
    const char  **v;

    (void) state;

    for (v = vars; *v; v++) {
        unsetenv(*v);
    }

    return 0;
}


static int
load(bd_conf_t *conf, char *err, ...)
{
    int       argc;
    char     *argv[16];
    va_list   args;

    argv[0] = "bridged";
    argc = 1;

    va_start(args, err);
    while ((argv[argc] = va_arg(args, char *)) != NULL) {
        argc++;
    }
    va_end(args);

    return bd_conf_load(conf, argc, argv, err, 256);
}


static void
test_defaults(void **state)
{
    char       err[256];
    bd_conf_t  c;

    (void) state;

    assert_int_equal(load(&c, err, "--listen", "ipc:///tmp/b.sock", NULL),
                     BD_CONF_OK);

    assert_string_equal(c.listen, "ipc:///tmp/b.sock");
    assert_null(c.ca_file);
    assert_null(c.twilio_sid);
    assert_null(c.twilio_token);
    assert_null(c.openai_key);
    assert_string_equal(c.twilio_api_url, "https://api.twilio.com");
    assert_string_equal(c.openai_url, "wss://api.openai.com/v1/realtime");
    assert_string_equal(c.openai_model, "gpt-realtime-2.1");
    assert_int_equal(c.twilio_timeout_ms, 10000);
    assert_int_equal(c.final_wait_ms, 5000);
    assert_int_equal(c.audio_buffer_ms, 10000);
    assert_int_equal(c.twilio_retries, 2);
    assert_int_equal(c.twilio_deadline_ms, 20000);
    assert_int_equal(c.max_calls, 4096);
    assert_int_equal(c.log_level, BD_LOG_INFO);
}


static void
test_environment_and_options(void **state)
{
    char       err[256];
    bd_conf_t  c;

    (void) state;

    setenv("BRIDGED_LISTEN", "tcp://127.0.0.1:5555", 1);
    setenv("BRIDGED_TWILIO_TIMEOUT_MS", "2000", 1);
    setenv("BRIDGED_FINAL_WAIT_MS", "0", 1);
    setenv("BRIDGED_LOG_LEVEL", "warn", 1);
    setenv("TWILIO_ACCOUNT_SID", "AC1", 1);
    setenv("TWILIO_AUTH_TOKEN", "", 1);
    setenv("TWILIO_API_URL", "http://127.0.0.1:8080//", 1);
    setenv("OPENAI_REALTIME_URL", "ws://127.0.0.1:9000/v1/realtime", 1);
    setenv("OPENAI_MODEL", "gpt-realtime-mini", 1);

    setenv("BRIDGED_TWILIO_RETRIES", "5", 1);

    assert_int_equal(load(&c, err, "--twilio-timeout-ms", "3000",
                          "--log-level", "debug", "--twilio-deadline-ms",
                          "4000", "--max-calls", "2", NULL),
                     BD_CONF_OK);

    assert_int_equal(c.max_calls, 2);

    assert_int_equal(c.twilio_retries, 5);
    assert_int_equal(c.twilio_deadline_ms, 4000);
    unsetenv("BRIDGED_TWILIO_RETRIES");

    assert_string_equal(c.listen, "tcp://127.0.0.1:5555");
    assert_int_equal(c.twilio_timeout_ms, 3000);
    assert_int_equal(c.final_wait_ms, 0);
    assert_int_equal(c.log_level, BD_LOG_DEBUG);
    assert_int_equal(c.sched_batch, 1);           /* the default */
    assert_string_equal(c.twilio_sid, "AC1");
    assert_null(c.twilio_token);                 /* empty counts as unset */
    assert_string_equal(c.twilio_api_url, "http://127.0.0.1:8080");
    assert_string_equal(c.openai_url, "ws://127.0.0.1:9000/v1/realtime");
    assert_string_equal(c.openai_model, "gpt-realtime-mini");

    /* the scheduling policy: the environment, and the option over it */

    setenv("BRIDGED_SCHED", "other", 1);
    assert_int_equal(load(&c, err, NULL), BD_CONF_OK);
    assert_int_equal(c.sched_batch, 0);
    assert_int_equal(load(&c, err, "--sched", "batch", NULL), BD_CONF_OK);
    assert_int_equal(c.sched_batch, 1);
}


static void
test_refusals(void **state)
{
    char       err[256];
    bd_conf_t  c;

    (void) state;

    assert_int_equal(load(&c, err, NULL), BD_CONF_ERROR);
    assert_non_null(strstr(err, "--listen"));

    assert_int_equal(load(&c, err, "--listen", "ipc:///x",
                          "--final-wait-ms", "12x", NULL),
                     BD_CONF_ERROR);
    assert_non_null(strstr(err, "--final-wait-ms"));

    assert_int_equal(load(&c, err, "--listen", "ipc:///x",
                          "--twilio-timeout-ms", "0", NULL),
                     BD_CONF_ERROR);
    assert_int_equal(load(&c, err, "--listen", "ipc:///x",
                          "--audio-buffer-ms", "-5", NULL),
                     BD_CONF_ERROR);
    assert_int_equal(load(&c, err, "--listen", "ipc:///x",
                          "--twilio-retries", "11", NULL),
                     BD_CONF_ERROR);
    assert_non_null(strstr(err, "--twilio-retries"));
    assert_int_equal(load(&c, err, "--listen", "ipc:///x",
                          "--twilio-deadline-ms", "99", NULL),
                     BD_CONF_ERROR);
    assert_int_equal(load(&c, err, "--listen", "ipc:///x",
                          "--max-calls", "0", NULL),
                     BD_CONF_ERROR);
    assert_non_null(strstr(err, "--max-calls"));
    assert_int_equal(load(&c, err, "--listen", "ipc:///x",
                          "--log-level", "loud", NULL),
                     BD_CONF_ERROR);
    assert_int_equal(load(&c, err, "--listen", "ipc:///x",
                          "--sched", "fifo", NULL),
                     BD_CONF_ERROR);
    assert_non_null(strstr(err, "--sched"));
    assert_int_equal(load(&c, err, "--listen", "ipc:///x", "--insecure",
                          NULL),
                     BD_CONF_ERROR);
    assert_int_equal(load(&c, err, "--listen", "ipc:///x", "extra", NULL),
                     BD_CONF_ERROR);
    assert_int_equal(load(&c, err, "--listen", "ipc:///x", "--ca-file",
                          "/nonexistent/ca.pem", NULL),
                     BD_CONF_ERROR);

    setenv("OPENAI_REALTIME_URL", "https://api.openai.com/v1/realtime", 1);
    assert_int_equal(load(&c, err, "--listen", "ipc:///x", NULL),
                     BD_CONF_ERROR);
    unsetenv("OPENAI_REALTIME_URL");

    setenv("TWILIO_API_URL", "ftp://api.twilio.com", 1);
    assert_int_equal(load(&c, err, "--listen", "ipc:///x", NULL),
                     BD_CONF_ERROR);
}


static void
test_help(void **state)
{
    char       err[256];
    FILE      *saved;
    bd_conf_t  c;

    (void) state;

    saved = stdout;
    stdout = fopen("/dev/null", "w");

    assert_int_equal(load(&c, err, "--help", NULL), BD_CONF_EXIT);

    fclose(stdout);
    stdout = saved;
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test_setup(test_defaults, clean_env),
        cmocka_unit_test_setup(test_environment_and_options, clean_env),
        cmocka_unit_test_setup(test_refusals, clean_env),
        cmocka_unit_test_setup(test_help, clean_env),
    };

    return cmocka_run_group_tests_name("bd_conf", tests, NULL, NULL);
}
