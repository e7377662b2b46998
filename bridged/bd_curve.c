/*
 * bd_curve.c: CURVE (RFC 26) on bridged's ROUTER socket, for nginx hosts
 * that reach it over tcp:// across a network: the link carries each
 * call's settings, the secrets of its tools and the conversation, so it is
 * encrypted, and only the nginx hosts whose public keys are listed may
 * connect.
 *
 * The keys are files (proto/voice_curve.c reads them), read once at start:
 * bridged's secret key, which must be readable by its owner only, and the
 * public keys of the nginx hosts (--curve-clients: one file, or a
 * directory of *.pub files).  libzmq asks who may connect through ZAP
 * (RFC 27): a REP socket bound at inproc://zeromq.zap.01 in the ROUTER's
 * context before the ROUTER binds, so that no connection is ever let in
 * unchecked.  Its descriptor is watched on bridged's loop the way
 * bd_chan.c watches the ROUTER's (edge-triggered: drained until
 * ZMQ_EVENTS has no POLLIN, again before the loop blocks, a bounded batch
 * per turn); a request is answered at once, so nothing waits.  A refused
 * key is logged with the address it came from, once a minute per key and
 * address, since a refused nginx tries again ten times a second.  The
 * handshakes that fail before ZAP is asked -- an nginx without CURVE, or
 * one with another public key for bridged -- are seen by a monitor of the
 * ROUTER (a PAIR socket, watched the same way) and logged once a minute
 * each; libzmq does not say where those came from.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>
#include <zmq.h>

#include "bd_curve.h"
#include "bd_log.h"
#include "voice_curve.h"


#define BD_CURVE_ZAP          "inproc://zeromq.zap.01"
#define BD_CURVE_DOMAIN       "voice"
#define BD_CURVE_CLIENTS_MAX  1024
#define BD_CURVE_PARTS        7         /* of a ZAP request (RFC 27) */
#define BD_CURVE_BATCH        64        /* requests per wake-up */
#define BD_CURVE_QUIET_MS     60000     /* between two lines of one key */
#define BD_CURVE_REFUSED      16        /* refusals remembered for that */
#define BD_CURVE_ADDR_MAX     64
#define BD_CURVE_MONITOR      "inproc://bd-curve-monitor"
#define BD_CURVE_KINDS        3         /* of failed handshakes */


typedef struct {
    uint8_t       key[32];
    char          addr[BD_CURVE_ADDR_MAX];
    uint64_t      last;                 /* loop time of its last line */
    unsigned      quiet;                /* refusals since, not logged */
    unsigned      used:1;
} bd_curve_refusal_t;


static int                  bd_curve_enabled;
static voice_curve_key_t    bd_curve_secret;
static voice_curve_key_t    bd_curve_public;
static uint8_t              bd_curve_clients[BD_CURVE_CLIENTS_MAX][32];
static size_t               bd_curve_nclients;
static voice_curve_key_t    bd_curve_text[BD_CURVE_CLIENTS_MAX];
static char                 bd_curve_file[VOICE_CURVE_FILE_MAX];

static uv_loop_t           *bd_curve_loop;
static void                *bd_curve_zap;
static uv_poll_t            bd_curve_poll;
static uv_prepare_t         bd_curve_prepare;
static uv_idle_t            bd_curve_idle;
static int                  bd_curve_open;
static bd_curve_refusal_t   bd_curve_refusals[BD_CURVE_REFUSED];
static void                *bd_curve_mon;
static void                *bd_curve_sock;
static uv_poll_t            bd_curve_mon_poll;
static uint64_t             bd_curve_failed_last[BD_CURVE_KINDS];
static unsigned             bd_curve_failed_quiet[BD_CURVE_KINDS];


static void bd_curve_idle_cb(uv_idle_t *idle);


static int
bd_curve_has(char *err, size_t err_size)
{
    if (zmq_has("curve")) {
        return 1;
    }

    snprintf(err, err_size, "this libzmq has no CURVE (zmq_has(\"curve\") "
             "is false): it must be built with libsodium, as Debian's is");

    return 0;
}


/*
 * Reads a key file into bd_curve_file; a secret one must be readable by
 * its owner only, as ssh asks of its keys.  The length, or -1 with the
 * reason in err.
 */

static ssize_t
bd_curve_read(const char *path, int secret, char *err, size_t err_size)
{
    int          fd;
    size_t       len;
    ssize_t      n;
    struct stat  st;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_size, "cannot open \"%s\": %s", path,
                 strerror(errno));
        return -1;
    }

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "\"%s\" is not a regular file", path);
        goto failed;
    }

    if (secret && (st.st_mode & 077)) {
        snprintf(err, err_size, "\"%s\" has mode %03o: a secret key must be "
                 "readable by its owner only (chmod 600)", path,
                 (unsigned) (st.st_mode & 0777));
        goto failed;
    }

    len = 0;

    for ( ;; ) {
        n = read(fd, bd_curve_file + len, sizeof(bd_curve_file) - len);

        if (n < 0 && errno == EINTR) {
            continue;
        }

        if (n < 0) {
            snprintf(err, err_size, "cannot read \"%s\": %s", path,
                     strerror(errno));
            goto failed;
        }

        if (n == 0) {
            break;
        }

        len += n;

        if (len == sizeof(bd_curve_file)) {
            snprintf(err, err_size, "\"%s\" is larger than %d bytes", path,
                     VOICE_CURVE_FILE_MAX - 1);
            goto failed;
        }
    }

    close(fd);

    return (ssize_t) len;

failed:

    close(fd);

    return -1;
}


/* the public keys of one file, added to the clients */

static int
bd_curve_add_clients(const char *path, char *err, size_t err_size)
{
    int      n, i;
    char     why[128];
    ssize_t  len;

    len = bd_curve_read(path, 0, err, err_size);
    if (len < 0) {
        return -1;
    }

    n = voice_curve_keys(bd_curve_file, len, bd_curve_text,
                         BD_CURVE_CLIENTS_MAX - bd_curve_nclients, why,
                         sizeof(why));
    if (n < 0) {
        snprintf(err, err_size, "\"%s\": %s", path, why);
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (zmq_z85_decode(bd_curve_clients[bd_curve_nclients],
                           bd_curve_text[i])
            == NULL)
        {
            snprintf(err, err_size, "\"%s\": key %d is not Z85", path, i + 1);
            return -1;
        }

        bd_curve_nclients++;
    }

    return 0;
}


/* --curve-clients DIR: each *.pub file in it, not the hidden ones */

static int
bd_curve_add_dir(const char *dir, char *err, size_t err_size)
{
    int             rc;
    DIR            *d;
    size_t          len;
    char            path[PATH_MAX];
    struct dirent  *e;

    d = opendir(dir);
    if (d == NULL) {
        snprintf(err, err_size, "cannot open the directory \"%s\": %s", dir,
                 strerror(errno));
        return -1;
    }

    rc = 0;

    while (rc == 0 && (e = readdir(d)) != NULL) {
        len = strlen(e->d_name);

        if (e->d_name[0] == '.' || len < 5
            || strcmp(e->d_name + len - 4, ".pub") != 0)
        {
            continue;
        }

        if ((size_t) snprintf(path, sizeof(path), "%s/%s", dir, e->d_name)
            >= sizeof(path))
        {
            snprintf(err, err_size, "a path in \"%s\" is too long", dir);
            rc = -1;
            break;
        }

        rc = bd_curve_add_clients(path, err, err_size);
    }

    closedir(d);

    return rc;
}


int
bd_curve_load(const bd_conf_t *conf, char *err, size_t err_size)
{
    char         why[256];
    ssize_t      len;
    struct stat  st;

    if (conf->curve_secret_key == NULL) {
        return 0;
    }

    if (!bd_curve_has(err, err_size)) {
        return -1;
    }

    len = bd_curve_read(conf->curve_secret_key, 1, why, sizeof(why));

    if (len < 0) {
        snprintf(err, err_size, "--curve-secret-key: %s", why);
        return -1;
    }

    if (!voice_curve_key(bd_curve_file, len, bd_curve_secret, why,
                         sizeof(why)))
    {
        explicit_bzero(bd_curve_file, sizeof(bd_curve_file));
        snprintf(err, err_size, "--curve-secret-key \"%s\": %s",
                 conf->curve_secret_key, why);
        return -1;
    }

    explicit_bzero(bd_curve_file, sizeof(bd_curve_file));

    if (zmq_curve_public(bd_curve_public, bd_curve_secret) != 0) {
        snprintf(err, err_size, "--curve-secret-key \"%s\": not a CURVE "
                 "secret key", conf->curve_secret_key);
        return -1;
    }

    bd_log_secret(bd_curve_secret);

    bd_curve_nclients = 0;

    if (stat(conf->curve_clients, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (bd_curve_add_dir(conf->curve_clients, why, sizeof(why)) != 0) {
            snprintf(err, err_size, "--curve-clients: %s", why);
            return -1;
        }

    } else if (bd_curve_add_clients(conf->curve_clients, why, sizeof(why))
               != 0)
    {
        snprintf(err, err_size, "--curve-clients: %s", why);
        return -1;
    }

    if (bd_curve_nclients == 0) {
        snprintf(err, err_size, "--curve-clients \"%s\" holds no public key: "
                 "no nginx could connect", conf->curve_clients);
        return -1;
    }

    bd_curve_enabled = 1;

    return 0;
}


int
bd_curve_on(void)
{
    return bd_curve_enabled;
}


/* writes one key file, never over an existing one; 0 or -1 (said) */

static int
bd_curve_write(const char *path, mode_t mode, const char *comment,
    const char *key)
{
    int   fd, n;
    char  text[256];

    n = snprintf(text, sizeof(text), "# %s\n%s\n", comment, key);

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "bridged: --curve-keygen: cannot create \"%s\": %s\n",
                path, strerror(errno));
        explicit_bzero(text, sizeof(text));
        return -1;
    }

    /* the umask may have taken more than asked: say exactly */

    if (fchmod(fd, mode) != 0 || write(fd, text, n) != n || fsync(fd) != 0) {
        fprintf(stderr, "bridged: --curve-keygen: cannot write \"%s\": %s\n",
                path, strerror(errno));
        explicit_bzero(text, sizeof(text));
        close(fd);
        unlink(path);
        return -1;
    }

    explicit_bzero(text, sizeof(text));
    close(fd);

    return 0;
}


int
bd_curve_keygen(const char *prefix)
{
    char               err[160], key[PATH_MAX], pub[PATH_MAX];
    voice_curve_key_t  public, secret;

    if (!bd_curve_has(err, sizeof(err))) {
        fprintf(stderr, "bridged: --curve-keygen: %s\n", err);
        return 1;
    }

    if ((size_t) snprintf(key, sizeof(key), "%s.key", prefix) >= sizeof(key)
        || (size_t) snprintf(pub, sizeof(pub), "%s.pub", prefix)
           >= sizeof(pub))
    {
        fprintf(stderr, "bridged: --curve-keygen: \"%s\" is too long\n",
                prefix);
        return 1;
    }

    if (zmq_curve_keypair(public, secret) != 0) {
        fprintf(stderr, "bridged: --curve-keygen: zmq_curve_keypair: %s\n",
                zmq_strerror(errno));
        return 1;
    }

    if (bd_curve_write(key, 0600, "CURVE secret key (bridged "
                       "--curve-keygen): keep it readable by its owner only",
                       secret)
        != 0)
    {
        explicit_bzero(secret, sizeof(secret));
        return 1;
    }

    explicit_bzero(secret, sizeof(secret));

    if (bd_curve_write(pub, 0644, "CURVE public key (bridged "
                       "--curve-keygen): give it to the other side", public)
        != 0)
    {
        unlink(key);
        return 1;
    }

    printf("%s: the secret key (mode 600)\n%s: the public key %s\n", key, pub,
           public);

    return 0;
}


/* one line per refused key and address a minute, with what it missed */

static void
bd_curve_refused(const zmq_msg_t *key, const char *addr)
{
    size_t               i;
    uint64_t             now;
    const char          *which;
    voice_curve_key_t    z85;
    bd_curve_refusal_t  *r, *oldest;

    if (zmq_msg_size(key) == 32) {
        zmq_z85_encode(z85, zmq_msg_data((zmq_msg_t *) key), 32);
        which = z85;

    } else {
        which = "(none)";
    }

    now = uv_now(bd_curve_loop);
    oldest = &bd_curve_refusals[0];

    for (i = 0; i < BD_CURVE_REFUSED; i++) {
        r = &bd_curve_refusals[i];

        if (r->used && zmq_msg_size(key) == 32
            && memcmp(r->key, zmq_msg_data((zmq_msg_t *) key), 32) == 0
            && strcmp(r->addr, addr) == 0)
        {
            if (now - r->last < BD_CURVE_QUIET_MS) {
                r->quiet++;
                return;
            }

            bd_log(BD_LOG_WARN, NULL, "CURVE: refused nginx at %s: its "
                   "public key %s is not in --curve-clients (and %u more "
                   "times in the last minute)", addr, which, r->quiet);
            r->last = now;
            r->quiet = 0;
            return;
        }

        if (!r->used || (oldest->used && r->last < oldest->last)) {
            oldest = r;
        }
    }

    bd_log(BD_LOG_WARN, NULL, "CURVE: refused nginx at %s: its public key "
           "%s is not in --curve-clients", addr, which);

    r = oldest;
    r->used = 1;
    r->last = now;
    r->quiet = 0;
    memset(r->key, 0, sizeof(r->key));

    if (zmq_msg_size(key) == 32) {
        memcpy(r->key, zmq_msg_data((zmq_msg_t *) key), 32);
    }

    snprintf(r->addr, sizeof(r->addr), "%s", addr);
}


static int
bd_curve_listed(const zmq_msg_t *key)
{
    size_t  i;

    if (zmq_msg_size(key) != 32) {
        return 0;
    }

    for (i = 0; i < bd_curve_nclients; i++) {
        if (memcmp(bd_curve_clients[i], zmq_msg_data((zmq_msg_t *) key), 32)
            == 0)
        {
            return 1;
        }
    }

    return 0;
}


static int
bd_curve_part_is(zmq_msg_t *part, const char *s)
{
    return zmq_msg_size(part) == strlen(s)
           && memcmp(zmq_msg_data(part), s, strlen(s)) == 0;
}


/*
 * Answers one ZAP request: [version, request id, domain, address,
 * routing id, mechanism, credentials]; for CURVE the credentials are the
 * client's public key, 32 bytes.  The answer: [version, request id,
 * status, text, user id, metadata].  Returns 0 when there was none.
 */

static int
bd_curve_zap_one(void)
{
    int          n, more, ok, i;
    size_t       len;
    char         addr[BD_CURVE_ADDR_MAX];
    zmq_msg_t    part[BD_CURVE_PARTS], extra, *m;
    const char  *reply[6];
    size_t       reply_len[6];

    n = 0;

    for ( ;; ) {
        m = (n < BD_CURVE_PARTS) ? &part[n] : &extra;
        zmq_msg_init(m);

        if (zmq_msg_recv(m, bd_curve_zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(m);

            if (n == 0) {
                if (errno != EAGAIN && errno != EINTR) {
                    bd_log(BD_LOG_ERROR, NULL, "CURVE: receiving a ZAP "
                           "request: %s", zmq_strerror(errno));
                }

                return 0;
            }

            break;
        }

        more = zmq_msg_more(m);

        if (m == &extra) {
            zmq_msg_close(m);

        } else {
            n++;
        }

        if (!more) {
            break;
        }
    }

    ok = (n == BD_CURVE_PARTS && bd_curve_part_is(&part[0], "1.0")
          && bd_curve_part_is(&part[5], "CURVE") && bd_curve_listed(&part[6]));

    if (!ok && n == BD_CURVE_PARTS) {
        len = zmq_msg_size(&part[3]);
        if (len >= sizeof(addr)) {
            len = sizeof(addr) - 1;
        }

        memcpy(addr, zmq_msg_data(&part[3]), len);
        addr[len] = '\0';

        bd_curve_refused(&part[6], addr);

    } else if (!ok) {
        bd_log(BD_LOG_ERROR, NULL, "CURVE: a ZAP request of %d parts, "
               "refused", n);
    }

    reply[0] = "1.0";
    reply_len[0] = 3;
    reply[1] = (n > 1) ? zmq_msg_data(&part[1]) : "";
    reply_len[1] = (n > 1) ? zmq_msg_size(&part[1]) : 0;
    reply[2] = ok ? "200" : "400";
    reply_len[2] = 3;
    reply[3] = ok ? "OK" : "key not allowed";
    reply_len[3] = strlen(reply[3]);
    reply[4] = ok ? "nginx" : "";
    reply_len[4] = strlen(reply[4]);
    reply[5] = "";
    reply_len[5] = 0;

    /* a REP socket owes its answer: it goes into the inproc pipe, whose
     * room libzmq keeps for exactly that */

    for (i = 0; i < 6; i++) {
        if (zmq_send(bd_curve_zap, reply[i], reply_len[i],
                     ZMQ_DONTWAIT | (i < 5 ? ZMQ_SNDMORE : 0))
            < 0)
        {
            bd_log(BD_LOG_ERROR, NULL, "CURVE: answering a ZAP request: %s",
                   zmq_strerror(errno));
            break;
        }
    }

    for (i = 0; i < n; i++) {
        zmq_msg_close(&part[i]);
    }

    return 1;
}


/* one event of the ROUTER's monitor: [event (2), value (4)] [address] */

static int
bd_curve_monitor_one(void)
{
    int          more, kind;
    char         addr[BD_CURVE_ADDR_MAX];
    size_t       len;
    uint16_t     event;
    uint32_t     value;
    uint64_t     now;
    zmq_msg_t    msg;
    const char  *why;

    zmq_msg_init(&msg);

    if (zmq_msg_recv(&msg, bd_curve_mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return 0;
    }

    event = 0;
    value = 0;

    if (zmq_msg_size(&msg) >= 6) {
        memcpy(&event, zmq_msg_data(&msg), 2);
        memcpy(&value, (char *) zmq_msg_data(&msg) + 2, 4);
    }

    more = zmq_msg_more(&msg);
    addr[0] = '\0';

    while (more) {
        zmq_msg_close(&msg);
        zmq_msg_init(&msg);

        if (zmq_msg_recv(&msg, bd_curve_mon, ZMQ_DONTWAIT) < 0) {
            break;
        }

        len = zmq_msg_size(&msg);
        if (len >= sizeof(addr)) {
            len = sizeof(addr) - 1;
        }

        memcpy(addr, zmq_msg_data(&msg), len);
        addr[len] = '\0';
        more = zmq_msg_more(&msg);
    }

    zmq_msg_close(&msg);

    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
        && value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    {
        kind = 0;
        why = "it does not use CURVE (voice_bridge_curve_key)";

    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
               && value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
    {
        kind = 1;
        why = "its greeting cannot be decrypted: its "
              "voice_bridge_curve_server_key is not bridged's public key";

    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
        kind = 2;
        why = "a protocol error (not an nginx of this version?)";

    } else {
        return 1;
    }

    /* each kind once a minute: a failing nginx retries ten times a second */

    now = uv_now(bd_curve_loop);

    if (bd_curve_failed_last[kind] != 0
        && now - bd_curve_failed_last[kind] < BD_CURVE_QUIET_MS)
    {
        bd_curve_failed_quiet[kind]++;
        return 1;
    }

    /* (libzmq names the endpoint here, not the peer's address) */

    if (bd_curve_failed_quiet[kind]) {
        bd_log(BD_LOG_WARN, NULL, "CURVE: a connection on %s failed its "
               "handshake: %s (and %u more in the last minute)", addr, why,
               bd_curve_failed_quiet[kind]);

    } else {
        bd_log(BD_LOG_WARN, NULL, "CURVE: a connection on %s failed its "
               "handshake: %s", addr, why);
    }

    bd_curve_failed_last[kind] = now ? now : 1;
    bd_curve_failed_quiet[kind] = 0;

    return 1;
}


static int
bd_curve_ready(void *sock)
{
    int     events;
    size_t  len;

    len = sizeof(events);

    return zmq_getsockopt(sock, ZMQ_EVENTS, &events, &len) == 0
           && (events & ZMQ_POLLIN);
}


static void
bd_curve_drain(void)
{
    int       zap, mon;
    unsigned  n;

    if (!bd_curve_open) {
        return;
    }

    for (n = 0; n < BD_CURVE_BATCH; n++) {
        zap = bd_curve_ready(bd_curve_zap) && bd_curve_zap_one();
        mon = bd_curve_ready(bd_curve_mon) && bd_curve_monitor_one();

        if (!zap && !mon) {
            uv_idle_stop(&bd_curve_idle);
            return;
        }
    }

    uv_idle_start(&bd_curve_idle, bd_curve_idle_cb);
}


static void
bd_curve_poll_cb(uv_poll_t *poll, int status, int events)
{
    (void) poll;
    (void) events;

    if (status < 0) {
        bd_log(BD_LOG_ERROR, NULL, "CURVE: polling the ZAP descriptor: %s",
               uv_strerror(status));
    }

    bd_curve_drain();
}


static void
bd_curve_prepare_cb(uv_prepare_t *prepare)
{
    (void) prepare;

    bd_curve_drain();
}


static void
bd_curve_idle_cb(uv_idle_t *idle)
{
    (void) idle;

    bd_curve_drain();
}


int
bd_curve_server(uv_loop_t *loop, void *ctx, void *sock)
{
    int     fd, mfd, one, zero, rc;
    size_t  len;

    bd_curve_loop = loop;
    one = 1;
    zero = 0;

    bd_curve_zap = zmq_socket(ctx, ZMQ_REP);
    if (bd_curve_zap == NULL) {
        bd_log(BD_LOG_ERROR, NULL, "CURVE: zmq_socket: %s",
               zmq_strerror(errno));
        return -1;
    }

    len = sizeof(fd);

    if (zmq_setsockopt(bd_curve_zap, ZMQ_LINGER, &zero, sizeof(zero)) != 0
        || zmq_bind(bd_curve_zap, BD_CURVE_ZAP) != 0
        || zmq_getsockopt(bd_curve_zap, ZMQ_FD, &fd, &len) != 0)
    {
        bd_log(BD_LOG_ERROR, NULL, "CURVE: the ZAP handler at %s: %s",
               BD_CURVE_ZAP, zmq_strerror(errno));
        goto failed;
    }

    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof(one)) != 0
        || zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, bd_curve_secret,
                          sizeof(bd_curve_secret)) != 0
        || zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, BD_CURVE_DOMAIN,
                          strlen(BD_CURVE_DOMAIN)) != 0)
    {
        bd_log(BD_LOG_ERROR, NULL, "CURVE: zmq_setsockopt: %s",
               zmq_strerror(errno));
        goto failed;
    }

    rc = uv_poll_init(loop, &bd_curve_poll, fd);
    if (rc != 0) {
        bd_log(BD_LOG_ERROR, NULL, "CURVE: uv_poll_init: %s",
               uv_strerror(rc));
        goto failed;
    }

    if (zmq_socket_monitor(sock, BD_CURVE_MONITOR,
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) != 0
        || (bd_curve_mon = zmq_socket(ctx, ZMQ_PAIR)) == NULL
        || zmq_connect(bd_curve_mon, BD_CURVE_MONITOR) != 0
        || zmq_getsockopt(bd_curve_mon, ZMQ_FD, &mfd, &len) != 0)
    {
        bd_log(BD_LOG_ERROR, NULL, "CURVE: the monitor of the socket: %s",
               zmq_strerror(errno));
        uv_close((uv_handle_t *) &bd_curve_poll, NULL);
        goto failed;
    }

    rc = uv_poll_init(loop, &bd_curve_mon_poll, mfd);
    if (rc != 0) {
        bd_log(BD_LOG_ERROR, NULL, "CURVE: uv_poll_init: %s",
               uv_strerror(rc));
        uv_close((uv_handle_t *) &bd_curve_poll, NULL);
        goto failed;
    }

    bd_curve_sock = sock;

    uv_poll_start(&bd_curve_poll, UV_READABLE, bd_curve_poll_cb);
    uv_poll_start(&bd_curve_mon_poll, UV_READABLE, bd_curve_poll_cb);

    uv_prepare_init(loop, &bd_curve_prepare);
    uv_prepare_start(&bd_curve_prepare, bd_curve_prepare_cb);

    uv_idle_init(loop, &bd_curve_idle);

    bd_curve_open = 1;

    bd_log(BD_LOG_INFO, NULL, "CURVE: on; bridged's public key %s; %zu "
           "nginx key%s let in", bd_curve_public, bd_curve_nclients,
           bd_curve_nclients == 1 ? "" : "s");

    return 0;

failed:

    if (bd_curve_mon != NULL) {
        (void) zmq_socket_monitor(sock, NULL, 0);
        zmq_close(bd_curve_mon);
        bd_curve_mon = NULL;
    }

    zmq_close(bd_curve_zap);
    bd_curve_zap = NULL;

    return -1;
}


void
bd_curve_close(void)
{
    if (!bd_curve_open) {
        return;
    }

    bd_curve_open = 0;

    uv_close((uv_handle_t *) &bd_curve_poll, NULL);
    uv_close((uv_handle_t *) &bd_curve_mon_poll, NULL);
    uv_close((uv_handle_t *) &bd_curve_prepare, NULL);
    uv_close((uv_handle_t *) &bd_curve_idle, NULL);
}


void
bd_curve_term(void)
{
    if (bd_curve_mon != NULL) {
        (void) zmq_socket_monitor(bd_curve_sock, NULL, 0);
        zmq_close(bd_curve_mon);
        bd_curve_mon = NULL;
    }

    if (bd_curve_zap != NULL) {
        zmq_close(bd_curve_zap);
        bd_curve_zap = NULL;
    }
}
