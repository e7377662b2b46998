/*
 * ngx_http_voice_curve.c: CURVE (RFC 26) on the channel to bridged, for a
 * bridged on another host: the channel carries each call's settings, the
 * secrets of its tools and the conversation, so over tcp:// it is
 * encrypted and bridged knows which nginx hosts talk to it.
 *
 * voice_bridge_curve_key names this host's secret key (its public key is
 * derived from it), voice_bridge_curve_server_key bridged's public key;
 * both are files in the format proto/voice_curve.c reads, made by
 * `bridged --curve-keygen`.  They are read and checked once, in the
 * module's postconfiguration, so that `nginx -t` fails on a missing,
 * unreadable or malformed key, or on a secret key that others may read;
 * a worker only sets them on each tcp:// DEALER before it connects
 * (ngx_http_voice_bridge.c).  An ipc:// endpoint needs none: it never
 * leaves the host, and its socket file's permissions guard it.  A tcp://
 * endpoint beyond loopback without CURVE is only warned about: the
 * network between the hosts may be protected otherwise (WireGuard,
 * IPsec), and a reload must not fail on a configuration that worked.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <zmq.h>

#include "ngx_http_voice_module.h"
#include "voice_curve.h"


#define NGX_HTTP_VOICE_CURVE_FILE_MAX  4096


/* reads one key file into key; a secret one must be its owner's only */

static ngx_int_t
ngx_http_voice_curve_read(ngx_conf_t *cf, const char *directive,
    ngx_str_t *file, ngx_uint_t secret, u_char *key)
{
    char              err[128];
    ngx_str_t         name, text;
    ngx_uint_t        ok, mode;
    ngx_file_info_t   fi;

    name = *file;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_file_info(name.data, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%s: " ngx_file_info_n " \"%V\" failed",
                           directive, &name);
        return NGX_ERROR;
    }

    if (!ngx_is_file(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s: \"%V\" is not a regular file", directive,
                           &name);
        return NGX_ERROR;
    }

    mode = ngx_file_access(&fi);

    /* (nginx's printf has no octal) */

    if (secret && (mode & 077)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s: \"%V\" has mode %ui%ui%ui: a secret key must "
                           "be readable by its owner only (chmod 600)",
                           directive, &name, (ngx_uint_t) (mode >> 6) & 7,
                           (ngx_uint_t) (mode >> 3) & 7,
                           (ngx_uint_t) mode & 7);
        return NGX_ERROR;
    }

    if (ngx_http_voice_conf_read_file(cf, &name,
                                      NGX_HTTP_VOICE_CURVE_FILE_MAX, &text)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ok = voice_curve_key((char *) text.data, text.len, (char *) key, err,
                         sizeof(err));

    ngx_explicit_memzero(text.data, text.len);

    if (!ok) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s: \"%V\": %s", directive,
                           &name, err);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_voice_curve_init_conf(ngx_conf_t *cf,
    ngx_http_voice_main_conf_t *vmcf)
{
    u_char      *keys;
    ngx_str_t   *ep;
    ngx_uint_t   i;

    ep = vmcf->endpoints.elts;

    if (vmcf->curve_key_file.len == 0
        && vmcf->curve_server_key_file.len == 0)
    {
        for (i = 0; i < vmcf->endpoints.nelts; i++) {
            if (!voice_curve_endpoint_local((char *) ep[i].data, ep[i].len)) {
                ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                                   "voice_bridge \"%V\" crosses the network "
                                   "without CURVE: the calls' settings, tool "
                                   "secrets and conversations go in clear "
                                   "(voice_bridge_curve_key)", &ep[i]);
            }
        }

        return NGX_OK;
    }

    if (vmcf->curve_key_file.len == 0
        || vmcf->curve_server_key_file.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"voice_bridge_curve_key\" and "
                           "\"voice_bridge_curve_server_key\" go together: "
                           "this host's key and bridged's");
        return NGX_ERROR;
    }

    if (!zmq_has("curve")) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "voice_bridge_curve_key: this libzmq has no CURVE "
                           "(zmq_has(\"curve\") is false): it must be built "
                           "with libsodium, as Debian's is");
        return NGX_ERROR;
    }

    keys = ngx_pcalloc(cf->pool, 3 * NGX_HTTP_VOICE_CURVE_KEY);
    if (keys == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_voice_curve_read(cf, "voice_bridge_curve_key",
                                  &vmcf->curve_key_file, 1,
                                  keys + NGX_HTTP_VOICE_CURVE_KEY)
        != NGX_OK
        || ngx_http_voice_curve_read(cf, "voice_bridge_curve_server_key",
                                     &vmcf->curve_server_key_file, 0,
                                     keys + 2 * NGX_HTTP_VOICE_CURVE_KEY)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (zmq_curve_public((char *) keys,
                         (char *) keys + NGX_HTTP_VOICE_CURVE_KEY)
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "voice_bridge_curve_key \"%V\" is not a CURVE "
                           "secret key", &vmcf->curve_key_file);
        return NGX_ERROR;
    }

    vmcf->curve = keys;

    return NGX_OK;
}


ngx_int_t
ngx_http_voice_curve_socket(ngx_cycle_t *cycle,
    ngx_http_voice_main_conf_t *vmcf, ngx_http_voice_peer_t *peer)
{
    u_char  *k;

    if (vmcf->curve == NULL
        || ngx_strncmp(peer->endpoint.data, "tcp://", 6) != 0)
    {
        return NGX_OK;
    }

    k = vmcf->curve;

    /* Z85 keys, NUL-terminated: libzmq takes 41 bytes as text */

    if (zmq_setsockopt(peer->sock, ZMQ_CURVE_PUBLICKEY, k,
                       NGX_HTTP_VOICE_CURVE_KEY) != 0
        || zmq_setsockopt(peer->sock, ZMQ_CURVE_SECRETKEY,
                          k + NGX_HTTP_VOICE_CURVE_KEY,
                          NGX_HTTP_VOICE_CURVE_KEY) != 0
        || zmq_setsockopt(peer->sock, ZMQ_CURVE_SERVERKEY,
                          k + 2 * NGX_HTTP_VOICE_CURVE_KEY,
                          NGX_HTTP_VOICE_CURVE_KEY) != 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "voice bridge: CURVE keys for \"%V\": "
                      "zmq_setsockopt() failed: %s", &peer->endpoint,
                      zmq_strerror(errno));
        return NGX_ERROR;
    }

    peer->curve = 1;

    return NGX_OK;
}
