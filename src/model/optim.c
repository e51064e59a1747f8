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
    o->m = o->v = NULL;
}

/* t = step+1;  p <- p (1 - lr wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
 * p <- p - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps) */
void gdn2_adamw_step(gdn2_adamw *o, gdn2_model *m, float lr) {
    const gdn2_adamw_cfg *c = &o->cfg;
    o->step++;
    const double bc1 = 1.0 - pow((double)c->beta1, (double)o->step);
    const double bc2 = 1.0 - pow((double)c->beta2, (double)o->step);
    const float step_size = (float)(lr / bc1), bc2s = (float)sqrt(bc2);
    const int nt = gdn2_threads(m->n_threads);
    for (int t = 0; t < m->n_tensors; t++) {
        const gdn2_model_param *p = &m->tensors[t];
        float wd = (c->exempt_no_decay && p->no_decay) ? 0.0f : c->weight_decay;
        float decay = 1.0f - lr * wd;
        float *w = m->params + p->offset, *g = m->grads + p->offset, *mm = o->m + p->offset, *vv = o->v + p->offset;
        const int64_t n = (int64_t)p->numel;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i];
            w[i] *= decay;
            mm[i] = c->beta1 * mm[i] + (1.0f - c->beta1) * gi;
            vv[i] = c->beta2 * vv[i] + (1.0f - c->beta2) * gi * gi;
            w[i] -= step_size * mm[i] / (sqrtf(vv[i]) / bc2s + c->eps);
        }
    }
}

/* total = ||g||_2; if total > max: g *= max / (total + 1e-6) */
float gdn2_clip_grad_norm(float *g, size_t n, float max_norm) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    float tot = (float)sqrt(s);
    if (max_norm > 0 && tot > max_norm) {
        float k = max_norm / (tot + 1e-6f);
        for (size_t i = 0; i < n; i++) g[i] *= k;
    }
    return tot;
}

/* lr * (step+1)/warmup during warmup; then min_lr + (lr-min_lr) (1 + cos(pi r))/2, r the fraction of
 * the remaining steps done */
float gdn2_lr_at(int64_t step, int64_t warmup, int64_t max_steps, float lr, float min_lr) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (step >= max_steps || max_steps <= warmup) return min_lr;
    double r = (double)(step - warmup) / (double)(max_steps - warmup);
    return (float)(min_lr + 0.5 * (1.0 + cos(3.14159265358979323846 * r)) * (lr - min_lr));
}
