/* Token sampling on top of the constant-memory prefill/step API (include/gdn2_model.h):
 * temperature, top-k, top-p (nucleus), one splitmix64 stream per request. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util/internal.h"

uint64_t gdn2_sampler_seed(uint64_t seed) { return seed * 0x9E3779B97F4A7C15ULL + 1; }

typedef struct {
    float z;
    int32_t v;
} cand;

/* larger logit first, then smaller id: a total order, so the nucleus is reproducible */
static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->z != y->z) return x->z > y->z ? -1 : 1;
    return (x->v > y->v) - (x->v < y->v);
}

int32_t gdn2_sample(const float *z, int64_t V, const gdn2_sampling *sp, uint64_t *rng) {
    int64_t am = 0;
    for (int64_t v = 1; v < V; v++)
        if (z[v] > z[am]) am = v;
    const float temperature = sp->temperature;
    if (!(temperature > 0)) return (int32_t)am;
    const int top_k = sp->top_k;
    const int nucleus = sp->top_p > 0 && sp->top_p < 1;
    gdn2_rng r = {*rng};
    float thr = -INFINITY;
    if ((top_k > 0 && top_k < V) || nucleus) {
        /* the candidates in order (the k largest, or all for the nucleus) */
        cand *c = malloc((size_t)V * sizeof *c);
        if (!c) return (int32_t)am; /* no memory for the sort: the most likely token */
        for (int64_t v = 0; v < V; v++) c[v].z = z[v], c[v].v = (int32_t)v;
        qsort(c, (size_t)V, sizeof *c, cand_cmp);
        int64_t keep = top_k > 0 && top_k < V ? top_k : V;
        if (nucleus) {
            double tot = 0, acc = 0;
            for (int64_t i = 0; i < keep; i++) tot += exp((c[i].z - z[am]) / temperature);
            int64_t i = 0;
            for (; i < keep; i++) {
                acc += exp((c[i].z - z[am]) / temperature);
                if (acc >= sp->top_p * tot) break;
            }
            keep = i + 1 < keep ? i + 1 : keep;
        }
        /* draw among c[0..keep) in id order below */
        double tot = 0;
        for (int64_t i = 0; i < keep; i++) tot += exp((c[i].z - z[am]) / temperature);
        if (!nucleus) {
            /* top-k alone: the k-th largest logit as a threshold over the ids, as before */
            thr = c[keep - 1].z;
            free(c);
        } else {
            double u = gdn2_rng_uniform(&r) * tot, acc = 0;
            int32_t pick = c[0].v;
            /* ids ascending among the kept (the same walk as the threshold path) */
            int32_t *ids = malloc((size_t)keep * sizeof *ids);
            if (ids) {
                for (int64_t i = 0; i < keep; i++) ids[i] = c[i].v;
                for (int64_t i = 1; i < keep; i++) /* insertion sort: keep is small in practice */
                    for (int64_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
                        int32_t t = ids[j];
                        ids[j] = ids[j - 1], ids[j - 1] = t;
                    }
                for (int64_t i = 0; i < keep; i++) {
                    acc += exp((z[ids[i]] - z[am]) / temperature);
                    if (acc >= u) {
                        pick = ids[i];
                        break;
                    }
                }
                free(ids);
            }
            free(c);
            *rng = r.s;
            return pick;
        }
    }
    double tot = 0;
    for (int64_t v = 0; v < V; v++) tot += z[v] >= thr ? exp((z[v] - z[am]) / temperature) : 0.0;
    double u = gdn2_rng_uniform(&r) * tot, acc = 0;
    *rng = r.s;
    for (int64_t v = 0; v < V; v++) {
        if (z[v] < thr) continue;
        acc += exp((z[v] - z[am]) / temperature);
        if (acc >= u) return (int32_t)v;
    }
    return (int32_t)am;
}

int gdn2_generate(gdn2_model *m, const int32_t *prompt, int64_t P, int64_t n_new, float temperature, int top_k,
                  uint64_t seed, int32_t *out) {
    if (P < 1) return gdn2_error(GDN2_ERR_ARG, "generate: the prompt needs at least one token");
    const int64_t Vp = m->cfg.padded_vocab, V = m->cfg.vocab_size;
    gdn2_model_state *s = NULL;
    int st = gdn2_model_state_create(m, 1, P + n_new, &s);
    if (st) return st;
    float *lg = gdn2_malloc((size_t)Vp * sizeof(float), "generation logits");
    if (!lg) {
        gdn2_model_state_free(s);
        return GDN2_ERR_NOMEM;
    }
    const gdn2_sampling sp = {temperature, top_k, 1.0f, seed};
    uint64_t r = gdn2_sampler_seed(seed);
    st = gdn2_model_prefill(m, s, prompt, P, lg);
    for (int64_t i = 0; i < n_new && !st; i++) {
        out[i] = gdn2_sample(lg, V, &sp, &r);
        if (i + 1 < n_new) st = gdn2_model_step(m, s, &out[i], lg);
    }
    free(lg);
    gdn2_model_state_free(s);
    return st;
}
