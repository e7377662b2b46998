/*
 * test_curve.c: unit tests of proto/voice_curve.c, the reader of the CURVE
 * key files: keys with blanks, CR LF and comments around them, files with
 * several keys, and every way a line can fail to be a key; which
 * endpoints stay on the host.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "voice_curve.h"


/* the client keys of ZeroMQ's CURVE documentation (zmq_curve(7)) */
#define PUB  "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
#define SEC  "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"
/* a key with Z85's "#" in it */
#define HASH "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hI#"


static int
one(const char *text, voice_curve_key_t key, char *err, size_t size)
{
    memset(key, 0, sizeof(voice_curve_key_t));
    return voice_curve_key(text, strlen(text), key, err, size);
}


static void
test_one_key(void **state)
{
    char               err[128];
    voice_curve_key_t  k;

    (void) state;

    assert_int_equal(one(PUB, k, err, sizeof(err)), 1);
    assert_string_equal(k, PUB);

    assert_int_equal(one(SEC "\n", k, err, sizeof(err)), 1);
    assert_string_equal(k, SEC);

    /* blanks around it, CR LF, blank lines */
    assert_int_equal(one("\r\n \t" PUB " \t\r\n\r\n", k, err, sizeof(err)),
                     1);
    assert_string_equal(k, PUB);
}


static void
test_comments(void **state)
{
    char               err[128];
    voice_curve_key_t  k;

    (void) state;

    assert_int_equal(one("# the public key of bridged-a\n#\n  # indented\n"
                         PUB "\n# after it\n", k, err, sizeof(err)), 1);
    assert_string_equal(k, PUB);

    /* '#' is Z85, but no key begins with it: a line that does is a
     * comment, whatever follows */
    assert_int_equal(one("#comment\n#" PUB "\n" HASH "\n", k, err,
                         sizeof(err)), 1);
    assert_string_equal(k, HASH);

    /* a comment after a key is not one */
    assert_int_equal(one(PUB " # bridged-a\n", k, err, sizeof(err)), 0);
    assert_string_equal(err, "line 1 is not a key of 40 Z85 characters");
}


static void
test_bad_keys(void **state)
{
    char               err[128];
    voice_curve_key_t  k;

    (void) state;

    assert_int_equal(one("", k, err, sizeof(err)), 0);
    assert_string_equal(err, "holds no key");

    assert_int_equal(one("# only a comment\n\n", k, err, sizeof(err)), 0);
    assert_string_equal(err, "holds no key");

    /* 39 and 41 characters */
    assert_int_equal(one("Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hI", k, err,
                         sizeof(err)), 0);
    assert_string_equal(err, "line 1 is not a key of 40 Z85 characters");

    assert_int_equal(one("\n" PUB "D", k, err, sizeof(err)), 0);
    assert_string_equal(err, "line 2 is not a key of 40 Z85 characters");

    /* a blank inside, characters outside the alphabet, a NUL */
    assert_int_equal(one("Yne@$w-vo<fVvi]a<NY6T1 d:M$fCG*[IaLV{hID", k, err,
                         sizeof(err)), 0);
    assert_string_equal(err, "line 1 has a character that is not Z85");

    assert_int_equal(one("Yne@$w-vo<fVvi]a<NY6T1~d:M$fCG*[IaLV{hID", k, err,
                         sizeof(err)), 0);
    assert_string_equal(err, "line 1 has a character that is not Z85");

    assert_int_equal(one("Yne@$w-vo<fVvi]a<NY6T1\"d:M$fCG*[IaLV{hID", k, err,
                         sizeof(err)), 0);
    assert_string_equal(err, "line 1 has a character that is not Z85");

    assert_int_equal(voice_curve_key("Yne@$w-vo<fVvi]a<NY6T1\0d:M$fCG*[IaLV{hID",
                                     40, k, err, sizeof(err)), 0);
    assert_string_equal(err, "line 1 has a character that is not Z85");

    /* "#####" is 85^5 - 1, more than 32 bits */
    assert_int_equal(one("Yne@$#####fVvi]a<NY6T1ed:M$fCG*[IaLV{hID", k, err,
                         sizeof(err)), 0);
    assert_string_equal(err, "line 1 is not valid Z85 (a group of five is "
                        "out of range)");

    /* a key pair's file is one key: the secret */
    assert_int_equal(one(PUB "\n" SEC "\n", k, err, sizeof(err)), 0);
    assert_string_equal(err, "line 2: more than 1 key");
}


static void
test_many_keys(void **state)
{
    int                n;
    char               err[128];
    const char        *text;
    voice_curve_key_t  k[3];

    (void) state;

    text = "# nginx hosts\n" PUB "\n\n# edge-2\n" SEC "\r\n" HASH;

    n = voice_curve_keys(text, strlen(text), k, 3, err, sizeof(err));
    assert_int_equal(n, 3);
    assert_string_equal(k[0], PUB);
    assert_string_equal(k[1], SEC);
    assert_string_equal(k[2], HASH);

    n = voice_curve_keys(text, strlen(text), k, 2, err, sizeof(err));
    assert_int_equal(n, -1);
    assert_string_equal(err, "line 6: more than 2 keys");

    n = voice_curve_keys("# none yet\n", 11, k, 3, err, sizeof(err));
    assert_int_equal(n, 0);

    text = PUB "\n" PUB "x\n";
    n = voice_curve_keys(text, strlen(text), k, 3, err, sizeof(err));
    assert_int_equal(n, -1);
    assert_string_equal(err, "line 2 is not a key of 40 Z85 characters");
}


static int
local(const char *ep)
{
    return voice_curve_endpoint_local(ep, strlen(ep));
}


static void
test_endpoint_local(void **state)
{
    (void) state;

    assert_true(local("ipc:///run/voice/bridged.sock"));
    assert_true(local("inproc://x"));
    assert_true(local("tcp://127.0.0.1:5555"));
    assert_true(local("tcp://127.100.3.2:5555"));
    assert_true(local("tcp://[::1]:5555"));
    assert_true(local("tcp://localhost:5555"));

    assert_false(local("tcp://10.0.0.2:5555"));
    assert_false(local("tcp://*:5555"));
    assert_false(local("tcp://0.0.0.0:5555"));
    assert_false(local("tcp://[::]:5555"));
    assert_false(local("tcp://bridged.internal:5555"));
    assert_false(local("tcp://127.0.0.1:6000;10.0.0.2:5555"));
    assert_false(local("tcp://localhost.example.com:5555"));
    assert_false(local("tcp://1270.0.0.1:5555"));
    assert_false(local("pgm://eth0;239.192.1.1:5555"));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_one_key),
        cmocka_unit_test(test_comments),
        cmocka_unit_test(test_bad_keys),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_endpoint_local),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
