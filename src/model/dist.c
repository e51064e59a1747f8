/* Data-parallel pieces of the trainer (docs/DIST.md) over a communicator (src/dist/comm.h):
 * gradient reduction, the global gradient norm, and the optimizer step — replicated (every rank
 * holds all AdamW moments and makes the same update) or ZeRO-1 (rank r holds the moments of one
 * contiguous shard of the flat parameter block, updates its shard and all-gathers the weights).
 *
 *   shard = ceil(n / W);  rank r owns [r·shard, min(n, (r+1)·shard))
 *   replicated:  g <- all_reduce(g);  clip;  AdamW on all of w (the same on every rank)
 *   ZeRO-1:      g_r <- reduce_scatter(g);  ||g||² = all_reduce_host(||g_r||²);  g_r *= clip;
 *                AdamW on w_r with m_r, v_r;  w <- all_gather(w_r);  w_act <- cast(w)
 * The fp32 master weights stay whole on every rank (norms, convolutions and gates read them); what
 * ZeRO-1 shards is the moments (8 bytes a parameter), as llm.c's ZeRO-1 does. When n is not a
 * multiple of W the collectives go through one padded [W·shard] buffer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../dist/comm.h"
#include "model_internal.h"

struct gdn2_dist {
    gdn2_comm *c;
    int zero1;
    size_t n, shard, lo, len;
    float *pad;          /* [W·shard] when n % W != 0, else NULL                       */
    float *gshard;       /* ZeRO-1: this rank's reduced gradient [shard]                */
    float *dm, *dv;      /* ZeRO-1: this rank's moments [shard] (zero tail)             */
    gdn2_adamw_seg *segs;/* ZeRO-1: the tensors' segments cut to the shard, shard-based */
    int nseg;
};

static void dist_release(gdn2_backend *be, gdn2_dist *d) {
    float *bufs[] = {d->pad, d->gshard, d->dm, d->dv};
    for (int i = 0; i < 4; i++)
        if (bufs[i]) be->release(be, bufs[i]);
    free(d->segs);
    free(d);
}

void gdn2_dist_free(gdn2_dist *d, gdn2_model *m) {
    if (d) dist_release(m->be, d);
}

int gdn2_dist_create(gdn2_comm *c, int zero1, gdn2_model *m, const gdn2_adamw *o, gdn2_dist **out) {
    *out = NULL;
    gdn2_backend *be = m->be;
    gdn2_dist *d = calloc(1, sizeof *d);
    if (!d) return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the data-parallel state");
    const size_t W = (size_t)c->world;
    d->c = c, d->zero1 = zero1, d->n = m->n_flat; /* shards of the flat block, gaps included */
    d->shard = (d->n + W - 1) / W;
    d->lo = (size_t)c->rank * d->shard;
    d->len = d->lo >= d->n ? 0 : (d->n - d->lo < d->shard ? d->n - d->lo : d->shard);
    int st = GDN2_OK;
    if (d->n % W && !(d->pad = be->alloc(be, W * d->shard * sizeof(float), "data-parallel padded buffer")))
        st = GDN2_ERR_NOMEM;
    if (!st && zero1) {
        d->gshard = be->alloc(be, d->shard * sizeof(float), "ZeRO-1 gradient shard");
        d->dm = d->gshard ? be->alloc(be, d->shard * sizeof(float), "ZeRO-1 AdamW m shard") : NULL;
        d->dv = d->dm ? be->alloc(be, d->shard * sizeof(float), "ZeRO-1 AdamW v shard") : NULL;
        d->segs = calloc((size_t)m->n_tensors + 1, sizeof *d->segs);
        if (!d->dv || !d->segs) st = GDN2_ERR_NOMEM;
        /* the moments of this shard from the (loaded or zero) host moments */
        if (!st && d->len) st = be->upload(be, d->dm, o->m + d->lo, d->len * sizeof(float));
        if (!st && d->len) st = be->upload(be, d->dv, o->v + d->lo, d->len * sizeof(float));
        for (int t = 0; !st && t < m->n_tensors; t++) {
            const gdn2_model_param *p = &m->tensors[t];
            size_t a = p->offset > d->lo ? p->offset : d->lo, b = p->offset + p->numel;
            if (b > d->lo + d->len) b = d->lo + d->len;
            if (a >= b) continue;
            gdn2_adamw_seg *s = &d->segs[d->nseg++];
            s->offset = a - d->lo, s->numel = b - a;
            s->weight_decay = (o->cfg.exempt_no_decay && p->no_decay) ? 0.0f : o->cfg.weight_decay;
        }
    }
    if (st) {
        dist_release(be, d);
        return st == GDN2_ERR_NOMEM && !gdn2_last_error()[0] ? gdn2_error(st, "data-parallel buffers") : st;
    }
    *out = d;
    return GDN2_OK;
}

/* the gradients summed over ranks: whole (replicated) or this rank's shard (ZeRO-1) */
int gdn2_dist_reduce_grads(gdn2_dist *d, gdn2_model *m) {
    gdn2_backend *be = m->be;
    gdn2_comm *c = d->c;
    int st0 = gdn2_model_grads_settle(m); /* a rank whose micro-batches carried no target ran no backward */
    if (st0) return st0;
    if (!d->zero1) return c->all_reduce(c, m->dev_grads, d->n);
    const float *src = m->dev_grads;
    if (d->pad) {
        int st = be->zero(be, d->pad, (size_t)c->world * d->shard * sizeof(float));
        if (!st) st = be->copy(be, d->pad, m->dev_grads, d->n * sizeof(float));
        if (st) return st;
        src = d->pad;
    }
    return c->reduce_scatter(c, src, d->gshard, d->shard);
}

/* global L2 norm of the reduced gradient (unchanged); NaN on error */
float gdn2_dist_grad_norm(gdn2_dist *d, gdn2_model *m) {
    if (!d->zero1) return gdn2_model_grad_norm(m);
    gdn2_backend *be = m->be;
    double s = 0.0;
    if (d->len && be->sumsq(be, d->len, d->gshard, &s)) return NAN;
    if (d->c->all_reduce_host(d->c, &s, 1)) return NAN;
    return (float)sqrt(s);
}

/* one AdamW step on the gradient times grad_scale (the clip factor): replicated, or ZeRO-1 on the shard
 * then all-gather of the weights */
int gdn2_dist_adamw(gdn2_dist *d, gdn2_adamw *o, gdn2_model *m, float lr, float grad_scale) {
    if (!d->zero1) return gdn2_adamw_step_scaled(o, m, lr, grad_scale);
    gdn2_backend *be = m->be;
    gdn2_comm *c = d->c;
    gdn2_adamw_hyper h = gdn2_adamw_next_hyper(o, lr);
    h.grad_scale = grad_scale;
    int st = d->nseg ? be->adamw(be, d->segs, d->nseg, &h, m->dev_params + d->lo, d->gshard, d->dm, d->dv, NULL) : 0;
    if (st) return st;
    if (d->pad) {
        float *mine = d->pad + (size_t)c->rank * d->shard;
        if (d->len && (st = be->copy(be, mine, m->dev_params + d->lo, d->len * sizeof(float)))) return st;
        if ((st = c->all_gather(c, mine, d->pad, d->shard * sizeof(float)))) return st;
        st = be->copy(be, m->dev_params, d->pad, d->n * sizeof(float));
    } else {
        st = c->all_gather(c, m->dev_params + d->lo, m->dev_params, d->shard * sizeof(float));
    }
    if (!st && be->on_device) st = be->cast(be, d->n, m->dev_params, GDN2_DT_F32, m->dev_params_act, GDN2_DT_ACT);
    return st;
}

/* ZeRO-1: every rank's moment shards gathered into o->m, o->v (HOST) for a checkpoint; a
 * collective (every rank calls it). No-op when replicated (o holds all moments). */
int gdn2_dist_gather_moments(gdn2_dist *d, gdn2_adamw *o, gdn2_model *m) {
    if (!d->zero1) return GDN2_OK;
    gdn2_backend *be = m->be;
    gdn2_comm *c = d->c;
    const size_t full = (size_t)c->world * d->shard;
    float *tmp = be->alloc(be, full * sizeof(float), "ZeRO-1 moments for a checkpoint");
    if (!tmp) return GDN2_ERR_NOMEM;
    float *src[2] = {d->dm, d->dv}, *dst[2] = {o->m, o->v};
    int st = GDN2_OK;
    for (int i = 0; i < 2 && !st; i++) {
        st = c->all_gather(c, src[i], tmp, d->shard * sizeof(float));
        if (!st) st = be->download(be, dst[i], tmp, d->n * sizeof(float));
    }
    be->release(be, tmp);
    return st;
}
