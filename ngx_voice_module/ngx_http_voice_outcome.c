/*
 * ngx_http_voice_outcome.c: what Twilio reports of each call, in shared
 * memory, for its record.
 *
 * Twilio's status callbacks (ngx_http_voice_call_status.c) land on any
 * worker; a call's record is written by the worker that holds its media
 * stream (ngx_http_voice_call.c), or by none when the call never
 * connected.  So the reports meet here, by call SID: the last status and
 * the call's duration, whether any report came at all (a call whose
 * number does not report status never gets one: its record does not wait
 * for it), whether a stream started (some worker writes the record), and
 * whether the record of a call that never connected was written (once,
 * whichever worker the final report reached).
 *
 * The zone is the module's own, "voice_outcomes", 1 MiB: about 5,000
 * calls.  An entry lives an hour after its last report; when the zone is
 * full the least recently reported go first.  A reload keeps it.  The
 * calls are in nginx's own string tree (ngx_str_rbtree_*), by call SID.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"


#define NGX_HTTP_VOICE_OUTCOME_NAME     "voice_outcomes"
#define NGX_HTTP_VOICE_OUTCOME_SIZE     (1024 * 1024)
#define NGX_HTTP_VOICE_OUTCOME_TTL      3600        /* s */
#define NGX_HTTP_VOICE_OUTCOME_EVICT    16          /* at a time */

/* flags */
#define NGX_HTTP_VOICE_OUTCOME_REPORTS  0x01        /* a report came */
#define NGX_HTTP_VOICE_OUTCOME_STREAMED 0x02        /* a stream started */
#define NGX_HTTP_VOICE_OUTCOME_RECORDED 0x04        /* its unconnected
                                                       record is written */


/* one call: nginx's string tree node, keyed by its call SID */
typedef struct {
    ngx_str_node_t              sn;             /* str: sid below */
    u_char                      status;         /* CallStatus index + 1 */
    u_char                      flags;
    u_char                      final;
    ngx_queue_t                 queue;          /* newest report first */
    time_t                      updated;
    ngx_int_t                   duration;       /* s, -1 unknown */
    u_char                      sid[NGX_HTTP_VOICE_SID_LEN];
} ngx_http_voice_outcome_node_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 lru;
} ngx_http_voice_outcome_sh_t;


typedef struct {
    ngx_http_voice_outcome_sh_t  *sh;
    ngx_slab_pool_t              *shpool;
} ngx_http_voice_outcome_ctx_t;


static ngx_int_t ngx_http_voice_outcome_init(ngx_shm_zone_t *shm_zone,
    void *data);


static ngx_shm_zone_t  *ngx_http_voice_outcome_zone;


ngx_int_t
ngx_http_voice_outcome_add(ngx_conf_t *cf)
{
    ngx_str_t                      name;
    ngx_shm_zone_t                *shm_zone;
    ngx_http_voice_outcome_ctx_t  *ctx;

    ngx_str_set(&name, NGX_HTTP_VOICE_OUTCOME_NAME);

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_voice_outcome_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf, &name, NGX_HTTP_VOICE_OUTCOME_SIZE,
                                     &ngx_http_voice_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    if (shm_zone->data == NULL) {
        shm_zone->init = ngx_http_voice_outcome_init;
        shm_zone->data = ctx;
    }

    ngx_http_voice_outcome_zone = shm_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_voice_outcome_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_voice_outcome_ctx_t  *octx = data;

    ngx_http_voice_outcome_ctx_t  *ctx;

    ctx = shm_zone->data;

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

    ctx->sh = ngx_slab_alloc(ctx->shpool,
                             sizeof(ngx_http_voice_outcome_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;

    ngx_rbtree_init(&ctx->sh->rbtree, &ctx->sh->sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&ctx->sh->lru);

    /* a full zone is expected: the oldest make room */
    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


/* the call's entry; with create, made when missing (the oldest go to make
 * room); NULL otherwise.  The zone is locked. */

static void
ngx_http_voice_outcome_drop(ngx_http_voice_outcome_ctx_t *ctx,
    ngx_http_voice_outcome_node_t *o)
{
    ngx_queue_remove(&o->queue);
    ngx_rbtree_delete(&ctx->sh->rbtree, &o->sn.node);
    ngx_slab_free_locked(ctx->shpool, o);
}


static ngx_http_voice_outcome_node_t *
ngx_http_voice_outcome_find(ngx_http_voice_outcome_ctx_t *ctx,
    const u_char *sid, ngx_uint_t create)
{
    uint32_t                        hash;
    ngx_str_t                       name;
    ngx_uint_t                      i;
    ngx_queue_t                    *q;
    ngx_http_voice_outcome_node_t  *o;

    name.data = (u_char *) sid;
    name.len = NGX_HTTP_VOICE_SID_LEN;
    hash = ngx_crc32_short(name.data, name.len);

    o = (ngx_http_voice_outcome_node_t *)
            ngx_str_rbtree_lookup(&ctx->sh->rbtree, &name, hash);

    if (o != NULL) {
        o->updated = ngx_time();
        ngx_queue_remove(&o->queue);
        ngx_queue_insert_head(&ctx->sh->lru, &o->queue);
        return o;
    }

    if (!create) {
        return NULL;
    }

    /* those not reported for an hour go, a few at a time */

    for (i = 0; i < NGX_HTTP_VOICE_OUTCOME_EVICT
                && !ngx_queue_empty(&ctx->sh->lru); i++)
    {
        q = ngx_queue_last(&ctx->sh->lru);
        o = ngx_queue_data(q, ngx_http_voice_outcome_node_t, queue);

        if (ngx_time() - o->updated < NGX_HTTP_VOICE_OUTCOME_TTL) {
            break;
        }

        ngx_http_voice_outcome_drop(ctx, o);
    }

    /* a full zone: the least recently reported make room */

    for ( ;; ) {
        o = ngx_slab_alloc_locked(ctx->shpool,
                                  sizeof(ngx_http_voice_outcome_node_t));

        if (o != NULL || ngx_queue_empty(&ctx->sh->lru)) {
            break;
        }

        q = ngx_queue_last(&ctx->sh->lru);
        ngx_http_voice_outcome_drop(ctx, ngx_queue_data(q,
                                        ngx_http_voice_outcome_node_t, queue));
    }

    if (o == NULL) {
        return NULL;
    }

    ngx_memzero(o, sizeof(ngx_http_voice_outcome_node_t));
    ngx_memcpy(o->sid, sid, NGX_HTTP_VOICE_SID_LEN);
    o->sn.str.data = o->sid;
    o->sn.str.len = NGX_HTTP_VOICE_SID_LEN;
    o->sn.node.key = hash;
    o->duration = -1;
    o->updated = ngx_time();

    ngx_rbtree_insert(&ctx->sh->rbtree, &o->sn.node);
    ngx_queue_insert_head(&ctx->sh->lru, &o->queue);

    return o;
}


static ngx_http_voice_outcome_ctx_t *
ngx_http_voice_outcome_ctx(void)
{
    if (ngx_http_voice_outcome_zone == NULL) {
        return NULL;
    }

    return ngx_http_voice_outcome_zone->data;
}


/*
 * A status callback: status is the CallStatus's index, final when the
 * call is over, duration its CallDuration (-1 without).  Returns 1 when
 * the call never connected and its record is this caller's to write (the
 * first final report without a stream), else 0.
 */

ngx_uint_t
ngx_http_voice_outcome_report(const u_char *sid, ngx_uint_t status,
    ngx_uint_t final, ngx_int_t duration)
{
    ngx_uint_t                      record;
    ngx_http_voice_outcome_ctx_t   *ctx;
    ngx_http_voice_outcome_node_t  *o;

    ctx = ngx_http_voice_outcome_ctx();
    if (ctx == NULL) {
        return 0;
    }

    record = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    o = ngx_http_voice_outcome_find(ctx, sid, 1);

    if (o != NULL && !o->final) {
        o->flags |= NGX_HTTP_VOICE_OUTCOME_REPORTS;
        o->status = (u_char) (status + 1);
        o->final = (u_char) final;

        if (duration >= 0) {
            o->duration = duration;
        }

        if (final && !(o->flags & (NGX_HTTP_VOICE_OUTCOME_STREAMED
                                   |NGX_HTTP_VOICE_OUTCOME_RECORDED)))
        {
            o->flags |= NGX_HTTP_VOICE_OUTCOME_RECORDED;
            record = 1;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return record;
}


/* a media stream of the call started: a worker writes its record */

void
ngx_http_voice_outcome_streamed(const u_char *sid)
{
    ngx_http_voice_outcome_ctx_t   *ctx;
    ngx_http_voice_outcome_node_t  *o;

    ctx = ngx_http_voice_outcome_ctx();
    if (ctx == NULL) {
        return;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    o = ngx_http_voice_outcome_find(ctx, sid, 1);
    if (o != NULL) {
        o->flags |= NGX_HTTP_VOICE_OUTCOME_STREAMED;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * What was reported of the call, for its record: NGX_OK with out filled
 * when a report came, NGX_DECLINED when none did.
 */

ngx_int_t
ngx_http_voice_outcome_get(const u_char *sid,
    ngx_http_voice_outcome_t *out)
{
    ngx_int_t                       rc;
    ngx_http_voice_outcome_ctx_t   *ctx;
    ngx_http_voice_outcome_node_t  *o;

    ctx = ngx_http_voice_outcome_ctx();
    if (ctx == NULL) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    o = ngx_http_voice_outcome_find(ctx, sid, 0);

    if (o != NULL && (o->flags & NGX_HTTP_VOICE_OUTCOME_REPORTS)) {
        out->status = (ngx_uint_t) o->status - 1;
        out->final = o->final;
        out->duration = o->duration;
        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}
