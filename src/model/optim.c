/* AdamW as torch.optim.AdamW (decoupled weight decay), gradient-norm clipping as
 * torch.nn.utils.clip_grad_norm_, and the official schedule (linear warmup, cosine to min_lr). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util/internal.h"

gdn2_adamw_cfg gdn2_adamw_default(void) {
    gdn2_adamw_cfg c = {0.9f, 0.95f, 1e-8f, 0.1f, 0};
    return c;
}

int gdn2_adamw_init(gdn2_adamw *o, const gdn2_adamw_cfg *c, size_t n) {
    memset(o, 0, sizeof *o);
    o->cfg = *c;
    o->n = n;
    o->m = gdn2_calloc(n, sizeof(float), "AdamW m");
    o->v = gdn2_calloc(n, sizeof(float), "AdamW v");
    if (!o->m || !o->v) {
        gdn2_adamw_free(o);
        return GDN2_ERR_NOMEM;
    }
    return GDN2_OK;
}

void gdn2_adamw_free(gdn2_adamw *o) {
    free(o->m), free(o->v);
    if (o->be) {
        if (o->dm) o->be->release(o->be, o->dm);
        if (o->dv) o->be->release(o->be, o->dv);
    }
    o->m = o->v = o->dm = o->dv = NULL;
    o->be = NULL;
}

/* t = step+1;  g <- g grad_scale (read so, not stored);  p <- p (1 - lr wd);  m <- b1 m + (1-b1) g;
 * v <- b2 v + (1-b2) g^2;  p <- p - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)   (the backend's adamw, one pass) */
int gdn2_adamw_step_scaled(gdn2_adamw *o, gdn2_model *m, float lr, float grad_scale) {
    const gdn2_adamw_cfg *c = &o->cfg;
    gdn2_backend cpu, *be = m->be;
    if (!be) { /* a model struct filled by hand (tests): host tensors */
        gdn2_backend_cpu_init(&cpu, m->n_threads);
        be = &cpu;
    }
    if (m->be) { /* gradients that zero_grad left to a backward that did not come */
        const int st = gdn2_model_grads_settle(m);
        if (st) return st;
    }
    float *wp = m->dev_params ? m->dev_params : m->params, *gp = m->dev_grads ? m->dev_grads : m->grads;
    void *wa = m->dev_params_act ? m->dev_params_act : wp;
    if (o->n != m->n_flat)
        return gdn2_error(GDN2_ERR_ARG, "AdamW: %zu moments for a model whose flat parameter block has %zu floats",
                          o->n, m->n_flat);
    if (!gp) return gdn2_error(GDN2_ERR_ARG, "AdamW: the model has no gradients (no backward yet)");
    float *mm = o->m, *vv = o->v;
    if (be->on_device) {
        if (!o->dm) {
            o->dm = be->alloc(be, o->n * sizeof(float), "AdamW m");
            o->dv = o->dm ? be->alloc(be, o->n * sizeof(float), "AdamW v") : NULL;
            int st = !o->dv ? GDN2_ERR_NOMEM : be->upload(be, o->dm, o->m, o->n * sizeof(float));
            if (!st) st = be->upload(be, o->dv, o->v, o->n * sizeof(float));
            if (st) {
                if (o->dm) be->release(be, o->dm);
                if (o->dv) be->release(be, o->dv);
                o->dm = o->dv = NULL;
                return st;
            }
            o->be = be;
        }
        mm = o->dm, vv = o->dv;
    } else {
        be->n_threads = m->n_threads;
    }
    gdn2_adamw_seg *segs = gdn2_malloc((size_t)m->n_tensors * sizeof *segs, "AdamW segments");
    if (!segs) return GDN2_ERR_NOMEM;
    for (int t = 0; t < m->n_tensors; t++) {
        const gdn2_model_param *p = &m->tensors[t];
        segs[t].offset = p->offset, segs[t].numel = p->numel;
        segs[t].weight_decay = (c->exempt_no_decay && p->no_decay) ? 0.0f : c->weight_decay;
    }
    if (!(grad_scale > 0.0f) || !isfinite(grad_scale)) {
        free(segs);
        return gdn2_error(GDN2_ERR_ARG, "AdamW: grad_scale %g must be finite and > 0", grad_scale);
    }
    gdn2_adamw_hyper h = gdn2_adamw_next_hyper(o, lr);
    h.grad_scale = grad_scale;
    int st = be->adamw(be, segs, m->n_tensors, &h, wp, gp, mm, vv, wa);
    free(segs);
    return st;
}

int gdn2_adamw_step(gdn2_adamw *o, gdn2_model *m, float lr) { return gdn2_adamw_step_scaled(o, m, lr, 1.0f); }

gdn2_adamw_hyper gdn2_adamw_next_hyper(gdn2_adamw *o, float lr) {
    const gdn2_adamw_cfg *c = &o->cfg;
    o->step++;
    const double bc1 = 1.0 - pow((double)c->beta1, (double)o->step);
    const double bc2 = 1.0 - pow((double)c->beta2, (double)o->step);
    gdn2_adamw_hyper h = {lr, c->beta1, c->beta2, c->eps, (float)(lr / bc1), (float)sqrt(bc2), 1.0f};
    return h;
}

int gdn2_adamw_sync_host(gdn2_adamw *o) {
    if (!o->be || !o->dm) return GDN2_OK;
    int st = o->be->download(o->be, o->m, o->dm, o->n * sizeof(float));
    if (!st) st = o->be->download(o->be, o->v, o->dv, o->n * sizeof(float));
    return st;
}

/* lr * (step+1)/warmup during warmup; then min_lr + (lr-min_lr) (1 + cos(pi r))/2, r the fraction of
 * the remaining steps done */
float gdn2_lr_at(int64_t step, int64_t warmup, int64_t max_steps, float lr, float min_lr) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (step >= max_steps || max_steps <= warmup) return min_lr;
    double r = (double)(step - warmup) / (double)(max_steps - warmup);
    return (float)(min_lr + 0.5 * (1.0 + cos(3.14159265358979323846 * r)) * (lr - min_lr));
}
