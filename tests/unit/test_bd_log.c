/*
 * test_bd_log.c: unit tests of bridged/bd_log.c: the line format, level
 * filtering, one line per event, secrets scrubbed from every line, and
 * the syslog target: its syntax, and the datagrams a receiver gets.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <cmocka.h>

#include "bd_log.h"


static char  out[8192];


/* runs fn with stderr going to a file, and reads what it wrote */

static void
capture(void (*fn)(void))
{
    int     fd, saved;
    FILE   *f;
    size_t  n;

    f = tmpfile();
    assert_non_null(f);

    fflush(stderr);
    saved = dup(STDERR_FILENO);
    fd = fileno(f);
    dup2(fd, STDERR_FILENO);

    fn();

    dup2(saved, STDERR_FILENO);
    close(saved);

    rewind(f);
    n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    fclose(f);
}


static void
log_format(void)
{
    bd_log_level = BD_LOG_INFO;
    bd_log(BD_LOG_INFO, "CA0123", "stream %s started", "MZ1");
    bd_log(BD_LOG_WARN, NULL, "no call here");
    bd_log(BD_LOG_DEBUG, "CA0123", "filtered out");
}


static void
test_format_and_levels(void **state)
{
    char  *second;

    (void) state;

    capture(log_format);

    /* 2026-11-24T10:15:00.123Z [info] [CA0123] stream MZ1 started */

    assert_true(strlen(out) > 25);
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[19], '.');
    assert_int_equal(out[23], 'Z');
    assert_memory_equal(out + 24, " [info] [CA0123] stream MZ1 started\n",
                        36);

    second = strchr(out, '\n') + 1;
    assert_memory_equal(second + 24, " [warn] no call here\n", 21);

    assert_null(strstr(out, "filtered out"));
    assert_string_equal(strchr(second, '\n'), "\n");
}


static void
log_secrets(void)
{
    bd_log_level = BD_LOG_DEBUG;
    bd_log_secret("sk-test-secret-key-123");
    bd_log_secret("short");
    bd_log(BD_LOG_ERROR, NULL, "Authorization: Bearer %s, again %s",
           "sk-test-secret-key-123", "sk-test-secret-key-123");
    bd_log(BD_LOG_INFO, NULL, "short words stay");
}


static void
test_secrets_scrubbed(void **state)
{
    (void) state;

    capture(log_secrets);

    assert_null(strstr(out, "sk-test-secret-key-123"));
    assert_non_null(strstr(out, "Bearer **********************, again "
                           "**********************\n"));

    /* too short to be a secret: registering it scrubs nothing */

    assert_non_null(strstr(out, "short words stay"));
}


static void
log_one_line(void)
{
    int   i;
    char  big[4000];

    bd_log_level = BD_LOG_DEBUG;
    bd_log(BD_LOG_INFO, "CA1", "peer said: %s", "a\nb\rc\td");

    for (i = 0; i < (int) sizeof(big) - 1; i++) {
        big[i] = 'x';
    }

    big[sizeof(big) - 1] = '\0';
    bd_log(BD_LOG_INFO, NULL, "%s", big);
}


static void
test_one_line_per_event(void **state)
{
    char   *nl;
    size_t  lines;

    (void) state;

    capture(log_one_line);

    assert_non_null(strstr(out, "peer said: a b c d\n"));

    lines = 0;
    for (nl = out; (nl = strchr(nl, '\n')) != NULL; nl++) {
        lines++;
    }

    assert_int_equal(lines, 2);

    /* the long line is cut, marked, and still ends the line */

    nl = strchr(out, '\n') + 1;
    assert_true(strlen(nl) < 2100);
    assert_non_null(strstr(nl, "xxx...\n"));
}


static void
test_level_names(void **state)
{
    (void) state;

    assert_int_equal(bd_log_level_parse("debug"), BD_LOG_DEBUG);
    assert_int_equal(bd_log_level_parse("info"), BD_LOG_INFO);
    assert_int_equal(bd_log_level_parse("warn"), BD_LOG_WARN);
    assert_int_equal(bd_log_level_parse("error"), BD_LOG_ERROR);
    assert_int_equal(bd_log_level_parse("notice"), -1);
}


static void
test_syslog_targets(void **state)
{
    char         err[256];
    size_t       i;
    const char  *bad[] = {
        "file:/tmp/x",
        "syslogx",
        "syslog:server=relative/path",
        "syslog:server=localhost:514",          /* names are not looked up */
        "syslog:server=10.0.0.1:0",
        "syslog:server=10.0.0.1:70000",
        "syslog:server=[::1",
        "syslog:facility=nope",
        "syslog:tag=has space",
        "syslog:tag=",
        "syslog:colour=blue",
        "syslog:server",
        "syslog:server=unix:/nonexistent/dir/log",   /* cannot be reached */
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(bd_log_target(bad[i], err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
    }

    /* numeric UDP targets need no listener to be connected to */

    assert_int_equal(bd_log_target("syslog:server=127.0.0.1", err,
                                   sizeof(err)), 0);
    assert_int_equal(bd_log_target("syslog:server=[::1]:5514,facility="
                                   "local3,tag=voice_b", err, sizeof(err)),
                     0);
    assert_int_equal(bd_log_target("stderr", err, sizeof(err)), 0);
}


static void
test_syslog_datagrams(void **state)
{
    int                 fd;
    char                path[64], target[128], err[256], buf[4096];
    ssize_t             n;
    struct sockaddr_un  un;

    (void) state;

    snprintf(path, sizeof(path), "/tmp/test_bd_log.%d.sock", (int) getpid());
    unlink(path);

    fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, path);
    assert_int_equal(bind(fd, (struct sockaddr *) &un, sizeof(un)), 0);

    snprintf(target, sizeof(target),
             "syslog:server=unix:%s,facility=local7,tag=bridged", path);
    assert_int_equal(bd_log_target(target, err, sizeof(err)), 0);

    bd_log_level = BD_LOG_INFO;
    bd_log_secret("sk-test-secret-key-123");
    bd_log(BD_LOG_ERROR, "CA0123", "Twilio refused: %s",
           "sk-test-secret-key-123");
    bd_log(BD_LOG_DEBUG, "CA0123", "filtered out");
    bd_log(BD_LOG_INFO, NULL, "two\nlines");

    /* local7 (23) * 8 + err (3) = 187; the level is in PRI, not the text */

    n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_memory_equal(buf, "<187>", 5);
    assert_non_null(strstr(buf, " bridged: [CA0123] Twilio refused: "
                           "**********************"));
    assert_null(strstr(buf, "\n"));
    assert_null(strstr(buf, "[error]"));

    /* the debug line was filtered; the info one is 23 * 8 + 6 = 190 */

    n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_memory_equal(buf, "<190>", 5);
    assert_non_null(strstr(buf, " bridged: two lines"));

    assert_true(recv(fd, buf, sizeof(buf), MSG_DONTWAIT) < 0);

    /* a receiver gone: lines are dropped and counted, never waited for */

    close(fd);
    unlink(path);
    bd_log_dropped = 0;
    bd_log(BD_LOG_WARN, NULL, "nobody hears this");
    assert_int_equal(bd_log_dropped, 1);

    bd_log_close();
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_format_and_levels),
        cmocka_unit_test(test_secrets_scrubbed),
        cmocka_unit_test(test_one_line_per_event),
        cmocka_unit_test(test_level_names),
        cmocka_unit_test(test_syslog_targets),
        cmocka_unit_test(test_syslog_datagrams),
    };

    return cmocka_run_group_tests_name("bd_log", tests, NULL, NULL);
}
