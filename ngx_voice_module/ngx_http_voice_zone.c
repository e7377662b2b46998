/*
 * ngx_http_voice_zone.c: the module's shared memory (voice_zone), for
 * what must hold for a whole nginx instance rather than one worker: the
 * answers of POST /api/call by Idempotency-Key, so that a client that
 * retries on any worker gets the first call's answer instead of a second
 * call; and the calls admitted under voice_max_calls, so that the limit
 * counts every worker's calls.  One zone serves both: they are small,
 * they are touched at the same moments (an /api/call is both), one lock
 * and one size are simpler to run than two, and when the zone is full
 * the answers kept for a day make room for the calls, which matter now.
 *
 * The zone is the way limit_req keeps its state (its init, lock, slab and
 * rbtree + LRU queue).  Idempotency-Keys live in an rbtree by a CRC32 of
 * the key, in a queue by last use.  A key is held for a day; when the
 * slab is full the least recently used answers go first.  A key whose
 * request is still in flight is never evicted (its request would run
 * twice): it is "pending" until ngx_http_voice_rest.c ends it with
 * bridged's answer, or forgets it when Twilio surely placed no call, so
 * that the client may try again.  A pending key whose worker went away
 * (it outlived its bound) becomes a 504: whether the call was placed is
 * unknown.
 *
 * A call takes a slot from /api/call's request (a reservation, then its
 * call SID) or /twiml's answer (ringing) until its record is written
 * (live, from its media stream's start); a slot whose stream never came
 * goes after a bound, or when Twilio reports the call over; a live slot
 * whose worker died goes when the limit is reached.  A reload with the
 * same name and size keeps the zone, and so the counts.  Each slot also
 * holds what GET /api/calls shows of its call (ngx_http_voice_live.c):
 * its direction and number, from /api/call or /twiml while it rings, and
 * then from the worker that holds it (ngx_http_voice_call.c), with its
 * start, its stage and the name of its record.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_transcript_fmt.h"


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


/* the states of a call's slot */
#define NGX_HTTP_VOICE_ZONE_RESERVED    0       /* /api/call in flight */
#define NGX_HTTP_VOICE_ZONE_RINGING     1       /* waits for its stream */
#define NGX_HTTP_VOICE_ZONE_LIVE        2       /* has a call record */

#define NGX_HTTP_VOICE_ZONE_RING        90      /* s a stream may take: a
                                                   call rings 60 s */
#define NGX_HTTP_VOICE_ZONE_TOKEN_LEN   17      /* "R" and 16 hex digits */


/* one admitted call, laid over an rbtree node from its color on */
typedef struct {
    u_char                      color;
    u_char                      state;
    u_char                      len;
    u_char                      records;        /* its live call records */
    ngx_queue_t                 queue;          /* waiting, or live */
    ngx_pid_t                   pid;            /* live: its worker */
    time_t                      expires;        /* waiting: its bound */
    u_char                      key[NGX_HTTP_VOICE_SID_LEN];

    /* what GET /api/calls and the live stream show of it
     * (ngx_http_voice_live.c), set by whoever knows it */
    u_char                      stage;          /* _STAGE_* */
    u_char                      outbound;       /* 1, 0, or 2: unknown */
    u_char                      number_len;
    u_char                      named;          /* its worker set number
                                                   and start: its record
                                                   is {key}_{number}_{start}
                                                   (not kept: 256 bytes a
                                                   slot, not 512) */
    uint64_t                    start;          /* ms since the epoch */
    u_char                      number[NGX_HTTP_VOICE_PHONE_MAX];
} ngx_http_voice_zone_call_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 lru;            /* most recent first */
    uint64_t                    next_id;
    ngx_uint_t                  keys;
    ngx_uint_t                  replayed;
    ngx_uint_t                  evicted;        /* before their day */
    ngx_uint_t                  conflicts;      /* 409s */

    ngx_rbtree_t                calls;          /* by call SID or token */
    ngx_rbtree_node_t           calls_sentinel;
    ngx_queue_t                 waiting;        /* reserved and ringing */
    ngx_queue_t                 live;
    ngx_uint_t                  ncalls;
    ngx_uint_t                  nwaiting;
    ngx_uint_t                  expired;        /* streams never came */
    ngx_uint_t                  orphans;        /* their worker died */
    time_t                      swept;
    uint64_t                    next_token;
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
static void ngx_http_voice_zone_call_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_voice_zone_call_t *ngx_http_voice_zone_call_find(
    ngx_http_voice_zone_ctx_t *ctx, const u_char *key, size_t len);
static void ngx_http_voice_zone_call_delete(ngx_http_voice_zone_ctx_t *ctx,
    ngx_http_voice_zone_call_t *slot);
static void ngx_http_voice_zone_call_sweep(ngx_http_voice_zone_ctx_t *ctx,
    time_t now);
static ngx_int_t ngx_http_voice_zone_call_add(ngx_http_voice_zone_ctx_t *ctx,
    ngx_uint_t max, const u_char *key, size_t len, ngx_uint_t state,
    time_t expires);
static void ngx_http_voice_zone_call_number(ngx_http_voice_zone_call_t *slot,
    ngx_int_t outbound, const u_char *number, size_t len);
static u_char *ngx_http_voice_zone_token(u_char *buf, uint64_t token);


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

    ngx_rbtree_init(&ctx->sh->calls, &ctx->sh->calls_sentinel,
                    ngx_http_voice_zone_call_insert);
    ngx_queue_init(&ctx->sh->waiting);
    ngx_queue_init(&ctx->sh->live);

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

    p = ngx_sprintf(p, ",\"admitted\":{\"calls\":%ui,\"waiting\":%ui,"
                    "\"refused\":%ui,\"expired\":%ui,\"orphans\":%ui}",
                    ctx->sh->ncalls, ctx->sh->nwaiting,
                    ngx_http_voice_metrics_get(
                        NGX_HTTP_VOICE_METRIC_REFUSED_LIMIT),
                    ctx->sh->expired, ctx->sh->orphans);

    p = ngx_sprintf(p, ",\"webhook\":{\"delivered\":%ui,"
                    "\"failedAttempts\":%ui,\"givenUp\":%ui,"
                    "\"pending\":%ui}",
                    ngx_http_voice_metrics_get(
                        NGX_HTTP_VOICE_METRIC_WEBHOOK_DELIVERED),
                    ngx_http_voice_metrics_get(
                        NGX_HTTP_VOICE_METRIC_WEBHOOK_FAILED),
                    ngx_http_voice_metrics_get(
                        NGX_HTTP_VOICE_METRIC_WEBHOOK_GIVEN_UP),
                    ngx_http_voice_metrics_get(
                        NGX_HTTP_VOICE_METRIC_WEBHOOK_PENDING));

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return p;
}


/*
 * The calls admitted (voice_max_calls).  Each entry point takes the lock,
 * and may add a slot only under max (0: no limit, the calls are only
 * counted).  A slot that cannot be allocated refuses the call when there
 * is a limit: a call that is not counted could pass it.
 */

static void
ngx_http_voice_zone_call_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t           **p;
    ngx_http_voice_zone_call_t   *a, *b;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            a = (ngx_http_voice_zone_call_t *) &node->color;
            b = (ngx_http_voice_zone_call_t *) &temp->color;

            p = (ngx_memn2cmp(a->key, b->key, a->len, b->len) < 0)
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


static ngx_http_voice_zone_call_t *
ngx_http_voice_zone_call_find(ngx_http_voice_zone_ctx_t *ctx,
    const u_char *key, size_t len)
{
    uint32_t                     hash;
    ngx_int_t                    rc;
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_http_voice_zone_call_t  *slot;

    hash = ngx_crc32_short((u_char *) key, len);

    node = ctx->sh->calls.root;
    sentinel = ctx->sh->calls.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        slot = (ngx_http_voice_zone_call_t *) &node->color;

        rc = ngx_memn2cmp((u_char *) key, slot->key, len, slot->len);

        if (rc == 0) {
            return slot;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_voice_zone_call_delete(ngx_http_voice_zone_ctx_t *ctx,
    ngx_http_voice_zone_call_t *slot)
{
    ngx_rbtree_node_t  *node;

    node = (ngx_rbtree_node_t *)
               ((u_char *) slot - offsetof(ngx_rbtree_node_t, color));

    if (slot->state != NGX_HTTP_VOICE_ZONE_LIVE) {
        ctx->sh->nwaiting--;
    }

    ngx_queue_remove(&slot->queue);
    ngx_rbtree_delete(&ctx->sh->calls, node);
    ngx_slab_free_locked(ctx->shpool, node);

    ctx->sh->ncalls--;
}


/*
 * At the limit, once a second at most: slots whose stream never came
 * within their bound, and live slots whose worker is gone (it crashed:
 * its calls went with it), make room.
 */

static void
ngx_http_voice_zone_call_sweep(ngx_http_voice_zone_ctx_t *ctx, time_t now)
{
    ngx_queue_t                 *q, *next;
    ngx_http_voice_zone_call_t  *slot;

    if (ctx->sh->swept == now) {
        return;
    }

    ctx->sh->swept = now;

    for (q = ngx_queue_head(&ctx->sh->waiting);
         q != ngx_queue_sentinel(&ctx->sh->waiting);
         q = next)
    {
        next = ngx_queue_next(q);
        slot = ngx_queue_data(q, ngx_http_voice_zone_call_t, queue);

        if (slot->expires < now) {
            ctx->sh->expired++;
            ngx_http_voice_zone_call_delete(ctx, slot);
        }
    }

    for (q = ngx_queue_head(&ctx->sh->live);
         q != ngx_queue_sentinel(&ctx->sh->live);
         q = next)
    {
        next = ngx_queue_next(q);
        slot = ngx_queue_data(q, ngx_http_voice_zone_call_t, queue);

        if (kill(slot->pid, 0) == -1 && ngx_errno == NGX_ESRCH) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "voice: the call %*s of worker %P, which is "
                          "gone, no longer counts", (size_t) slot->len,
                          slot->key, slot->pid);
            ctx->sh->orphans++;
            ngx_http_voice_zone_call_delete(ctx, slot);
        }
    }
}


/* a new slot, under max; the lock held */

static ngx_int_t
ngx_http_voice_zone_call_add(ngx_http_voice_zone_ctx_t *ctx, ngx_uint_t max,
    const u_char *key, size_t len, ngx_uint_t state, time_t expires)
{
    size_t                       size;
    time_t                       now;
    ngx_rbtree_node_t           *node;
    ngx_http_voice_zone_call_t  *slot;

    now = ngx_time();

    if (max && ctx->sh->ncalls >= max) {
        ngx_http_voice_zone_call_sweep(ctx, now);

        if (ctx->sh->ncalls >= max) {
            ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_REFUSED_LIMIT);
            return NGX_HTTP_VOICE_ADMIT_FULL;
        }
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + sizeof(ngx_http_voice_zone_call_t);

    /* answers kept for a day make room for a call */
    node = ngx_http_voice_zone_alloc(ctx, size, now);

    if (node == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "voice: no room for a call%s", ctx->shpool->log_ctx);

        if (max) {
            ngx_http_voice_metrics_inc(NGX_HTTP_VOICE_METRIC_REFUSED_LIMIT);
            return NGX_HTTP_VOICE_ADMIT_FULL;
        }

        return NGX_HTTP_VOICE_ADMIT_UNCOUNTED;
    }

    node->key = ngx_crc32_short((u_char *) key, len);

    slot = (ngx_http_voice_zone_call_t *) &node->color;
    slot->state = (u_char) state;
    slot->len = (u_char) len;
    slot->records = 0;
    slot->pid = ngx_pid;
    slot->expires = expires;
    ngx_memcpy(slot->key, key, len);

    slot->stage = (state == NGX_HTTP_VOICE_ZONE_LIVE)
                  ? NGX_HTTP_VOICE_STAGE_LIVE : NGX_HTTP_VOICE_STAGE_RINGING;
    slot->outbound = 2;
    slot->number_len = 0;
    slot->named = 0;
    slot->start = ngx_http_voice_now_ms();

    ngx_rbtree_insert(&ctx->sh->calls, node);

    if (state == NGX_HTTP_VOICE_ZONE_LIVE) {
        slot->records = 1;
        ngx_queue_insert_tail(&ctx->sh->live, &slot->queue);

    } else {
        ngx_queue_insert_tail(&ctx->sh->waiting, &slot->queue);
        ctx->sh->nwaiting++;
    }

    ctx->sh->ncalls++;

    return NGX_HTTP_VOICE_ADMIT_OK;
}


static u_char *
ngx_http_voice_zone_token(u_char *buf, uint64_t token)
{
    return ngx_sprintf(buf, "R%016xL", token);
}


/*
 * POST /api/call: a slot for a call not placed yet (to number, len
 * bytes), held for bound seconds at most; *token names it.
 */

ngx_int_t
ngx_http_voice_zone_call_reserve(ngx_uint_t max, time_t bound,
    const u_char *number, size_t len, uint64_t *token)
{
    u_char                     buf[NGX_HTTP_VOICE_ZONE_TOKEN_LEN];
    ngx_int_t                  rc;
    ngx_http_voice_zone_ctx_t  *ctx;

    *token = 0;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return NGX_HTTP_VOICE_ADMIT_UNCOUNTED;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    *token = ++ctx->sh->next_token;
    ngx_http_voice_zone_token(buf, *token);

    rc = ngx_http_voice_zone_call_add(ctx, max, buf, sizeof(buf),
                                      NGX_HTTP_VOICE_ZONE_RESERVED,
                                      ngx_time() + bound);

    if (rc == NGX_HTTP_VOICE_ADMIT_OK) {
        ngx_http_voice_zone_call_number(
            ngx_http_voice_zone_call_find(ctx, buf, sizeof(buf)), 1, number,
            len);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (rc != NGX_HTTP_VOICE_ADMIT_OK) {
        *token = 0;
    }

    return rc;
}


/*
 * The reservation's call was placed (sid) or not (sid NULL): the slot is
 * the call's now, ringing, or it goes.
 */

void
ngx_http_voice_zone_call_placed(uint64_t token, const u_char *sid)
{
    u_char                       buf[NGX_HTTP_VOICE_ZONE_TOKEN_LEN];
    ngx_rbtree_node_t           *node;
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_call_t  *slot;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL || token == 0) {
        return;
    }

    ngx_http_voice_zone_token(buf, token);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    slot = ngx_http_voice_zone_call_find(ctx, buf, sizeof(buf));

    if (slot == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return;
    }

    /* no call; or its /twiml came first and took a slot of its own */

    if (sid == NULL
        || ngx_http_voice_zone_call_find(ctx, sid, NGX_HTTP_VOICE_SID_LEN))
    {
        ngx_http_voice_zone_call_delete(ctx, slot);
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return;
    }

    node = (ngx_rbtree_node_t *)
               ((u_char *) slot - offsetof(ngx_rbtree_node_t, color));

    ngx_rbtree_delete(&ctx->sh->calls, node);

    node->key = ngx_crc32_short((u_char *) sid, NGX_HTTP_VOICE_SID_LEN);
    slot->state = NGX_HTTP_VOICE_ZONE_RINGING;
    slot->len = NGX_HTTP_VOICE_SID_LEN;
    slot->expires = ngx_time() + NGX_HTTP_VOICE_ZONE_RING;
    ngx_memcpy(slot->key, sid, NGX_HTTP_VOICE_SID_LEN);

    ngx_rbtree_insert(&ctx->sh->calls, node);

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * /twiml: the call (sid) is admitted, ringing, unless it already is;
 * outbound and number (the other party's, len bytes) say who it is with.
 */

ngx_int_t
ngx_http_voice_zone_call_ring(ngx_uint_t max, const u_char *sid,
    ngx_uint_t outbound, const u_char *number, size_t len)
{
    ngx_int_t                    rc;
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_call_t  *slot;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return NGX_HTTP_VOICE_ADMIT_UNCOUNTED;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    rc = NGX_HTTP_VOICE_ADMIT_OK;

    slot = ngx_http_voice_zone_call_find(ctx, sid, NGX_HTTP_VOICE_SID_LEN);

    if (slot == NULL) {
        rc = ngx_http_voice_zone_call_add(ctx, max, sid,
                                          NGX_HTTP_VOICE_SID_LEN,
                                          NGX_HTTP_VOICE_ZONE_RINGING,
                                          ngx_time()
                                          + NGX_HTTP_VOICE_ZONE_RING);
        if (rc == NGX_HTTP_VOICE_ADMIT_OK) {
            slot = ngx_http_voice_zone_call_find(ctx, sid,
                                                 NGX_HTTP_VOICE_SID_LEN);
        }
    }

    /* a live call's own worker knows better (a stream back from a
     * transfer fetches /twiml again) */

    if (slot != NULL && slot->state != NGX_HTTP_VOICE_ZONE_LIVE) {
        ngx_http_voice_zone_call_number(slot, outbound, number, len);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/*
 * A media stream starts: its call's slot is live and held by one more
 * record (ngx_http_voice_zone_call_end() lets it go); a stream whose call
 * has no slot (one that outlived its bound, one that came to another
 * host's /twiml) is admitted as any other, under max.
 */

ngx_int_t
ngx_http_voice_zone_call_live(ngx_uint_t max, const u_char *sid)
{
    ngx_int_t                    rc;
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_call_t  *slot;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return NGX_HTTP_VOICE_ADMIT_UNCOUNTED;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    slot = ngx_http_voice_zone_call_find(ctx, sid, NGX_HTTP_VOICE_SID_LEN);

    if (slot == NULL) {
        rc = ngx_http_voice_zone_call_add(ctx, max, sid,
                                          NGX_HTTP_VOICE_SID_LEN,
                                          NGX_HTTP_VOICE_ZONE_LIVE, 0);

    } else {
        if (slot->state != NGX_HTTP_VOICE_ZONE_LIVE) {
            ngx_queue_remove(&slot->queue);
            ngx_queue_insert_tail(&ctx->sh->live, &slot->queue);
            ctx->sh->nwaiting--;
            slot->state = NGX_HTTP_VOICE_ZONE_LIVE;
        }

        slot->records++;
        slot->pid = ngx_pid;
        rc = NGX_HTTP_VOICE_ADMIT_OK;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/* a call record that held the slot is written: the call is over */

void
ngx_http_voice_zone_call_end(const u_char *sid)
{
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_call_t  *slot;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    slot = ngx_http_voice_zone_call_find(ctx, sid, NGX_HTTP_VOICE_SID_LEN);

    if (slot != NULL && slot->state == NGX_HTTP_VOICE_ZONE_LIVE
        && --slot->records == 0)
    {
        ngx_http_voice_zone_call_delete(ctx, slot);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* Twilio says the call is over (/call-status): a slot never live goes */

void
ngx_http_voice_zone_call_over(const u_char *sid)
{
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_call_t  *slot;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    slot = ngx_http_voice_zone_call_find(ctx, sid, NGX_HTTP_VOICE_SID_LEN);

    if (slot != NULL && slot->state != NGX_HTTP_VOICE_ZONE_LIVE) {
        ngx_http_voice_zone_call_delete(ctx, slot);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* who a slot's call is with; the lock held, slot may be NULL */

static void
ngx_http_voice_zone_call_number(ngx_http_voice_zone_call_t *slot,
    ngx_int_t outbound, const u_char *number, size_t len)
{
    if (slot == NULL) {
        return;
    }

    slot->outbound = (u_char) (outbound ? 1 : 0);

    if (number != NULL && len && len <= NGX_HTTP_VOICE_PHONE_MAX) {
        ngx_memcpy(slot->number, number, len);
        slot->number_len = (u_char) len;
    }
}


/*
 * The call's own worker says what it knows (ngx_http_voice_call.c): its
 * stage, direction, number, start and the name of its record.  A slot
 * the call does not have (the zone was full) is not made for it.
 */

void
ngx_http_voice_zone_call_note(ngx_http_voice_zone_info_t *info)
{
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_call_t  *slot;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    slot = ngx_http_voice_zone_call_find(ctx, info->sid,
                                         NGX_HTTP_VOICE_SID_LEN);

    if (slot != NULL && slot->state == NGX_HTTP_VOICE_ZONE_LIVE) {
        slot->stage = (u_char) info->stage;
        slot->start = info->start;
        ngx_http_voice_zone_call_number(slot, info->outbound, info->number,
                                        info->number_len);

        slot->named = (slot->number_len == info->number_len);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


static void
ngx_http_voice_zone_call_info(ngx_http_voice_zone_call_t *slot,
    ngx_http_voice_zone_info_t *info)
{
    u_char  *p;

    ngx_memcpy(info->sid, slot->key, NGX_HTTP_VOICE_SID_LEN);
    info->stage = slot->stage;
    info->outbound = (slot->outbound == 2) ? -1 : (ngx_int_t) slot->outbound;
    info->start = slot->start;
    info->number_len = slot->number_len;
    ngx_memcpy(info->number, slot->number, slot->number_len);
    info->name_len = 0;

    if (slot->named) {
        p = ngx_sprintf(info->name, "%*s_%*s_", (size_t) slot->len,
                        slot->key, (size_t) slot->number_len, slot->number);
        ngx_http_voice_transcript_fmt_time(slot->start, p, 1);
        info->name_len = p + NGX_HTTP_VOICE_TRANSCRIPT_TIME_LEN - info->name;
    }
}


/* a live slot whose worker died: its call went with it */

static ngx_uint_t
ngx_http_voice_zone_call_orphan(ngx_http_voice_zone_call_t *slot)
{
    return slot->state == NGX_HTTP_VOICE_ZONE_LIVE && slot->pid != ngx_pid
           && kill(slot->pid, 0) == -1 && ngx_errno == NGX_ESRCH;
}


/*
 * What the zone knows of the call sid: NGX_OK with *info, NGX_DECLINED
 * when it has no such call (or only one whose worker died), NGX_DONE
 * when there is no zone to ask.
 */

ngx_int_t
ngx_http_voice_zone_call_get(const u_char *sid,
    ngx_http_voice_zone_info_t *info)
{
    ngx_int_t                    rc;
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_call_t  *slot;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return NGX_DONE;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    slot = ngx_http_voice_zone_call_find(ctx, sid, NGX_HTTP_VOICE_SID_LEN);

    if (slot == NULL || ngx_http_voice_zone_call_orphan(slot)) {
        rc = NGX_DECLINED;

    } else {
        ngx_http_voice_zone_call_info(slot, info);
        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/*
 * GET /api/calls: every call with a SID (reservations of /api/calls in
 * flight have none yet), in *list, allocated from pool; *n of them.
 * NGX_DONE when there is no zone.
 */

ngx_int_t
ngx_http_voice_zone_call_list(ngx_pool_t *pool,
    ngx_http_voice_zone_info_t **list, ngx_uint_t *n)
{
    ngx_uint_t                   i, j;
    ngx_queue_t                 *queues[2], *q;
    ngx_http_voice_zone_ctx_t   *ctx;
    ngx_http_voice_zone_call_t  *slot;

    *n = 0;

    ctx = ngx_http_voice_zone_ctx();
    if (ctx == NULL) {
        return NGX_DONE;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    *list = ngx_palloc(pool, (ctx->sh->ncalls + 1)
                             * sizeof(ngx_http_voice_zone_info_t));
    if (*list == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_ERROR;
    }

    queues[0] = &ctx->sh->live;
    queues[1] = &ctx->sh->waiting;
    j = 0;

    for (i = 0; i < 2; i++) {
        for (q = ngx_queue_head(queues[i]);
             q != ngx_queue_sentinel(queues[i]) && j < ctx->sh->ncalls;
             q = ngx_queue_next(q))
        {
            slot = ngx_queue_data(q, ngx_http_voice_zone_call_t, queue);

            if (slot->len != NGX_HTTP_VOICE_SID_LEN
                || (slot->state != NGX_HTTP_VOICE_ZONE_LIVE
                    && slot->expires < ngx_time())
                || ngx_http_voice_zone_call_orphan(slot))
            {
                continue;
            }

            ngx_http_voice_zone_call_info(slot, &(*list)[j++]);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    *n = j;

    return NGX_OK;
}
