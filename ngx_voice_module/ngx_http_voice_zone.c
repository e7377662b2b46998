/*
 * ngx_http_voice_zone.c: the module's shared memory (voice_zone), for
 * what must hold for a whole nginx instance rather than one worker: the
 * answers of POST /api/call by Idempotency-Key, so that a client that
 * retries on any worker gets the first call's answer instead of a second
 * call.
 *
 * The zone is the way limit_req keeps its state (its init, lock, slab and
 * rbtree + LRU queue): the keys live in an rbtree by a CRC32 of the key,
 * in a queue by last use.  A key is held for a day; when the slab is full
 * the least recently used answers go first.  A key whose request is still
 * in flight is never evicted (its request would run twice): it is
 * "pending" until ngx_http_voice_rest.c ends it with bridged's answer, or
 * forgets it when Twilio surely placed no call, so that the client may
 * try again.  A pending key whose worker went away (it outlived its
 * bound) becomes a 504: whether the call was placed is unknown.  A
 * reload with the same name and size keeps the zone.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"


#define NGX_HTTP_VOICE_ZONE_IDEM_TTL    86400   /* s: a day */
#define NGX_HTTP_VOICE_ZONE_BODY_MAX    4096    /* a longer answer is not
                                                   kept, its status is */
#define NGX_HTTP_VOICE_ZONE_INLINE      160     /* bytes of answer held in
                                                   the key's own node: a
                                                   success always fits */
#define NGX_HTTP_VOICE_ZONE_EVICT_SCAN  64      /* entries looked at */


/* one Idempotency-Key, laid over an rbtree node from its color on */
typedef struct {
    u_char                      color;
    u_char                      pending;
    u_short                     len;
    ngx_queue_t                 queue;
    uint64_t                    id;
    time_t                      expires;
    u_char                      digest[16];     /* MD5 of the request */
    ngx_uint_t                  status;
    u_char                     *body;           /* slab, or NULL */
    size_t                      body_len;
    u_short                     inline_len;     /* or the answer is after
                                                   the key */
    u_char                      key[1];
} ngx_http_voice_zone_idem_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 lru;            /* most recent first */
    uint64_t                    next_id;
    ngx_uint_t                  keys;
    ngx_uint_t                  replayed;
    ngx_uint_t                  evicted;        /* before their day */
    ngx_uint_t                  conflicts;      /* 409s */
} ngx_http_voice_zone_sh_t;


typedef struct {
    ngx_http_voice_zone_sh_t   *sh;
    ngx_slab_pool_t            *shpool;
} ngx_http_voice_zone_ctx_t;


static ngx_int_t ngx_http_voice_zone_init(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_voice_zone_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_voice_zone_ctx_t *ngx_http_voice_zone_ctx(void);
static ngx_http_voice_zone_idem_t *ngx_http_voice_zone_find(
    ngx_http_voice_zone_ctx_t *ctx, uint32_t hash, ngx_str_t *key);
static void ngx_http_voice_zone_delete(ngx_http_voice_zone_ctx_t *ctx,
    ngx_http_voice_zone_idem_t *in);
static ngx_uint_t ngx_http_voice_zone_evict(ngx_http_voice_zone_ctx_t *ctx,
    time_t now, ngx_uint_t force);
static void *ngx_http_voice_zone_alloc(ngx_http_voice_zone_ctx_t *ctx,
    size_t size, time_t now);


/* the answer a pending key gets when its request's worker went away */
static u_char  ngx_http_voice_zone_unknown[] =
    "{\"success\":false,\"error\":\"the first request with this "
    "Idempotency-Key got no answer: the call may have been placed\"}";

/* the answer of a failure whose own was too large to keep */
static u_char  ngx_http_voice_zone_lost[] =
    "{\"success\":false,\"error\":\"the first request with this "
    "Idempotency-Key failed; its answer was too large to keep\"}";


ngx_shm_zone_t *
ngx_http_voice_zone_add(ngx_conf_t *cf, ngx_str_t *name, size_t size)
{
    ngx_shm_zone_t             *shm_zone;
    ngx_http_voice_zone_ctx_t  *ctx;

    if (size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "voice_zone \"%V\" is too small: at least %uz",
                           name, 8 * ngx_pagesize);
        return NULL;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_voice_zone_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    shm_zone = ngx_shared_memory_add(cf, name, size, &ngx_http_voice_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "voice_zone \"%V\" is duplicate", name);
        return NULL;
    }

    shm_zone->init = ngx_http_voice_zone_init;
    shm_zone->data = ctx;

    return shm_zone;
}


static ngx_int_t
ngx_http_voice_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_voice_zone_ctx_t  *octx = data;

    size_t                      len;
    ngx_http_voice_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    /* a reload: the old cycle's zone, with everything in it */

    if (octx) {
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_alloc(ctx->shpool, sizeof(ngx_http_voice_zone_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;

    ngx_rbtree_init(&ctx->sh->rbtree, &ctx->sh->sentinel,
                    ngx_http_voice_zone_insert);
    ngx_queue_init(&ctx->sh->lru);

    len = sizeof(" in voice_zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in voice_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full slab is expected: the oldest answers make room */
    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


static void
ngx_http_voice_zone_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t           **p;
    ngx_http_voice_zone_idem_t   *in, *int_;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            in = (ngx_http_voice_zone_idem_t *) &node->color;
            int_ = (ngx_http_voice_zone_idem_t *) &temp->color;

            p = (ngx_memn2cmp(in->key, int_->key, in->len, int_->len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_http_voice_zone_ctx_t *
ngx_http_voice_zone_ctx(void)
{
    ngx_http_voice_main_conf_t  *vmcf;

    vmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_voice_module);

    if (vmcf == NULL || vmcf->zone == NULL) {
        return NULL;
    }

    return vmcf->zone->data;
}


static ngx_http_voice_zone_idem_t *
ngx_http_voice_zone_find(ngx_http_voice_zone_ctx_t *ctx, uint32_t hash,
    ngx_str_t *key)
{
    ngx_int_t                    rc;
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_http_voice_zone_idem_t  *in;

    node = ctx->sh->rbtree.root;
    sentinel = ctx->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        in = (ngx_http_voice_zone_idem_t *) &node->color;

        rc = ngx_memn2cmp(key->data, in->key, key->len, (size_t) in->len);

        if (rc == 0) {
            return in;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_voice_zone_delete(ngx_http_voice_zone_ctx_t *ctx,
    ngx_http_voice_zone_idem_t *in)
{
    ngx_rbtree_node_t  *node;

    node = (ngx_rbtree_node_t *)
               ((u_char *) in - offsetof(ngx_rbtree_node_t, color));

    ngx_queue_remove(&in->queue);
    ngx_rbtree_delete(&ctx->sh->rbtree, node);

    if (in->body) {
        ngx_slab_free_locked(ctx->shpool, in->body);
    }

    ngx_slab_free_locked(ctx->shpool, node);

    ctx->sh->keys--;
}


/*
 * From the least recently used end: answers past their day go, and a
 * pending key past its bound becomes an unknown outcome (504).  force:
 * answers still in their day go too, until one is freed.  Returns how
 * many went.  The caller holds the lock.
 */

static ngx_uint_t
ngx_http_voice_zone_evict(ngx_http_voice_zone_ctx_t *ctx, time_t now,
    ngx_uint_t force)
{
    ngx_uint_t                   n, freed;
    ngx_queue_t                 *q, *prev;
    ngx_http_voice_zone_idem_t  *in;

    freed = 0;

    if (ngx_queue_empty(&ctx->sh->lru)) {
        return 0;
    }

    q = ngx_queue_last(&ctx->sh->lru);

    for (n = 0; n < (force ? NGX_HTTP_VOICE_ZONE_EVICT_SCAN : 4); n++) {

        if (q == ngx_queue_sentinel(&ctx->sh->lru)) {
            break;
        }

        prev = ngx_queue_prev(q);
        in = ngx_queue_data(q, ngx_http_voice_zone_idem_t, queue);

        if (in->pending) {
            if (in->expires < now) {
                in->pending = 0;
                in->status = NGX_HTTP_GATEWAY_TIME_OUT;
                in->expires = now + NGX_HTTP_VOICE_ZONE_IDEM_TTL;
            }

            q = prev;
            continue;
        }

        if (in->expires < now) {
            ngx_http_voice_zone_delete(ctx, in);
            freed++;

        } else if (force && freed == 0) {
            ngx_http_voice_zone_delete(ctx, in);
            ctx->sh->evicted++;
            freed++;
        }

        q = prev;
    }

    return freed;
}


/* a slab allocation, making room when the zone is full; the lock held */

static void *
ngx_http_voice_zone_alloc(ngx_http_voice_zone_ctx_t *ctx, size_t size,
    time_t now)
{
    void        *p;
    ngx_uint_t   i;

    p = ngx_slab_alloc_locked(ctx->shpool, size);

    for (i = 0; p == NULL && i < 4; i++) {
        if (ngx_http_voice_zone_evict(ctx, now, 1) == 0) {
            return NULL;
        }

        p = ngx_slab_alloc_locked(ctx->shpool, size);
    }

    return p;
}


/*
 * POST /api/call with an Idempotency-Key: what its key says.  digest is
 * the request's (an MD5 of its URI and body).  NEW: the key is now
 * pending with *id, the call may be placed (then end it); REPLAY: the
 * first answer, in *status and *body (in pool); BUSY: a request with the
 * key is in flight; MISMATCH: the key came with another request; FULL:
 * no room; NONE: there is no zone.
 */

ngx_int_t
ngx_http_voice_zone_idem_begin(ngx_str_t *key, u_char *digest,
    time_t bound, ngx_pool_t *pool, uint64_t *id, ngx_uint_t *status,
    ngx_str_t *body)
{
    size_t                       size;
    time_t                       now;
    uint32_t                     hash;
    ngx_int_t                    rc;
    ngx_rbtree_node_t           *node;
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_idem_t  *in;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return NGX_HTTP_VOICE_IDEM_NONE;
    }

    hash = ngx_crc32_short(key->data, key->len);
    now = ngx_time();

    ngx_shmtx_lock(&ctx->shpool->mutex);

    (void) ngx_http_voice_zone_evict(ctx, now, 0);

    in = ngx_http_voice_zone_find(ctx, hash, key);

    if (in != NULL && in->pending && in->expires < now) {

        /* its worker went away: nobody knows what became of it */

        in->pending = 0;
        in->status = NGX_HTTP_GATEWAY_TIME_OUT;
        in->expires = now + NGX_HTTP_VOICE_ZONE_IDEM_TTL;
    }

    if (in != NULL && !in->pending && in->expires < now) {
        ngx_http_voice_zone_delete(ctx, in);
        in = NULL;
    }

    if (in != NULL) {

        if (ngx_memcmp(in->digest, digest, 16) != 0) {
            rc = NGX_HTTP_VOICE_IDEM_MISMATCH;

        } else if (in->pending) {
            ctx->sh->conflicts++;
            rc = NGX_HTTP_VOICE_IDEM_BUSY;

        } else {
            ngx_queue_remove(&in->queue);
            ngx_queue_insert_head(&ctx->sh->lru, &in->queue);

            *status = in->status;

            if (in->body || in->inline_len) {
                body->len = in->body ? in->body_len : in->inline_len;
                body->data = ngx_pnalloc(pool, body->len);

                if (body->data != NULL) {
                    ngx_memcpy(body->data,
                               in->body ? in->body : in->key + in->len,
                               body->len);
                }

            } else if (in->status == NGX_HTTP_GATEWAY_TIME_OUT) {
                body->len = sizeof(ngx_http_voice_zone_unknown) - 1;
                body->data = ngx_http_voice_zone_unknown;

            } else {
                body->len = sizeof(ngx_http_voice_zone_lost) - 1;
                body->data = ngx_http_voice_zone_lost;
            }

            ctx->sh->replayed++;
            rc = (body->data == NULL) ? NGX_ERROR
                                      : NGX_HTTP_VOICE_IDEM_REPLAY;
        }

        ngx_shmtx_unlock(&ctx->shpool->mutex);

        return rc;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_voice_zone_idem_t, key) + key->len
           + NGX_HTTP_VOICE_ZONE_INLINE;

    node = ngx_http_voice_zone_alloc(ctx, size, now);

    if (node == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_HTTP_VOICE_IDEM_FULL;
    }

    node->key = hash;

    in = (ngx_http_voice_zone_idem_t *) &node->color;

    in->pending = 1;
    in->len = (u_short) key->len;
    in->id = ++ctx->sh->next_id;
    in->expires = now + bound;
    ngx_memcpy(in->digest, digest, 16);
    in->status = 0;
    in->body = NULL;
    in->body_len = 0;
    in->inline_len = 0;
    ngx_memcpy(in->key, key->data, key->len);

    ngx_rbtree_insert(&ctx->sh->rbtree, node);
    ngx_queue_insert_head(&ctx->sh->lru, &in->queue);
    ctx->sh->keys++;

    *id = in->id;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_HTTP_VOICE_IDEM_NEW;
}


/*
 * The answer to the request that holds key (as begin() gave it id):
 * kept for a day, or, when keep is 0 (Twilio surely placed no call, or
 * the request never left), forgotten, so that the client may try again.
 */

void
ngx_http_voice_zone_idem_end(ngx_str_t *key, uint64_t id, ngx_uint_t status,
    const u_char *body, size_t len, ngx_uint_t keep)
{
    time_t                       now;
    uint32_t                     hash;
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_idem_t  *in;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return;
    }

    hash = ngx_crc32_short(key->data, key->len);
    now = ngx_time();

    ngx_shmtx_lock(&ctx->shpool->mutex);

    in = ngx_http_voice_zone_find(ctx, hash, key);

    /* another key's now, or already taken for an unknown outcome */

    if (in == NULL || in->id != id || !in->pending) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return;
    }

    if (!keep) {
        ngx_http_voice_zone_delete(ctx, in);
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return;
    }

    /*
     * A success (a call SID) fits in the node; a longer answer takes its
     * own allocation, which never evicts this key: it is still pending
     */

    if (len <= NGX_HTTP_VOICE_ZONE_INLINE) {
        ngx_memcpy(in->key + in->len, body, len);
        in->inline_len = (u_short) len;

    } else if (len <= NGX_HTTP_VOICE_ZONE_BODY_MAX) {
        in->body = ngx_http_voice_zone_alloc(ctx, len, now);

        if (in->body) {
            ngx_memcpy(in->body, body, len);
            in->body_len = len;
        }
    }

    in->status = status;
    in->pending = 0;
    in->expires = now + NGX_HTTP_VOICE_ZONE_IDEM_TTL;

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* voice_status: the zone's counters, as JSON members after p */

u_char *
ngx_http_voice_zone_status(u_char *p)
{
    ngx_http_voice_zone_ctx_t  *ctx;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return p;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    p = ngx_sprintf(p, ",\"idempotency\":{\"keys\":%ui,\"replayed\":%ui,"
                    "\"conflicts\":%ui,\"evicted\":%ui}",
                    ctx->sh->keys, ctx->sh->replayed, ctx->sh->conflicts,
                    ctx->sh->evicted);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return p;
}
