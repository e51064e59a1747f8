/* Token sampling on top of the constant-memory prefill/step API (include/gdn2_model.h):
 * temperature, top-k, top-p (nucleus), one splitmix64 stream per request. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util/internal.h"

uint64_t gdn2_sampler_seed(uint64_t seed) { return seed * 0x9E3779B97F4A7C15ULL + 1; }

/* The candidates' total order: larger logit first, then smaller id (so ties are reproducible). */
static inline int ranks_before(const float *z, int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); }

/* Partition idx[lo, hi) around its middle element (the pivot) in the total order: on return the
 * elements ranked before the pivot are idx[lo, *pv), the pivot idx[*pv], the rest after it. */
static void partition(const float *z, int32_t *idx, int64_t lo, int64_t hi, int64_t *pv) {
    const int64_t mid = lo + (hi - lo) / 2;
    int32_t t = idx[mid];
    idx[mid] = idx[hi - 1], idx[hi - 1] = t;
    const int32_t p = idx[hi - 1];
    int64_t w = lo;
    for (int64_t i = lo; i < hi - 1; i++)
        if (ranks_before(z, idx[i], p)) t = idx[i], idx[i] = idx[w], idx[w++] = t;
    idx[hi - 1] = idx[w], idx[w] = p;
    *pv = w;
}

/* Quickselect: afterwards idx[0, k) are the k first candidates of idx[0, n) (in no order) and
 * idx[k - 1] the k-th. Expected O(n). */
static int32_t select_kth(const float *z, int32_t *idx, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n;
    for (;;) {
        int64_t pv;
        partition(z, idx, lo, hi, &pv);
        if (pv == k - 1) return idx[pv];
        if (pv > k - 1) hi = pv;
        else lo = pv + 1;
    }
}

/* Weighted quickselect: the nucleus boundary among idx[0, n): the candidate b such that the mass e of
 * the candidates ranked up to b reaches `need` and that of those ranked before b does not. Expected
 * O(n); the sums are taken per partition, not along the sorted order (equal up to rounding). */
static int32_t select_mass(const float *z, const double *e, int32_t *idx, int64_t n, double need) {
    int64_t lo = 0, hi = n;
    for (;;) {
        int64_t pv;
        partition(z, idx, lo, hi, &pv);
        double before = 0;
        for (int64_t i = lo; i < pv; i++) before += e[idx[i]];
        if (before >= need && pv > lo) {
            hi = pv;
        } else if (before + e[idx[pv]] >= need || pv + 1 == hi) {
            return idx[pv]; /* also the last candidate when rounding leaves `need` unreached */
        } else {
            need -= before + e[idx[pv]];
            lo = pv + 1;
        }
    }
}

/* Semantics (gdn2_model.h): p ∝ exp((z - max) / temperature); top_k keeps the k first candidates
 * in the total order above (and, without top_p, every logit equal to the k-th: a threshold); top_p
 * then keeps the shortest prefix of that order whose mass reaches top_p of the kept mass; the draw
 * walks the kept ids in ascending order. Expected O(V): quickselects instead of a sort (a sort of
 * V = 32000 candidates, and the ordered walk over a flat nucleus, cost milliseconds to a second a
 * token). */
int32_t gdn2_sample(const float *z, int64_t V, const gdn2_sampling *sp, uint64_t *rng) {
    int64_t am = 0;
    for (int64_t v = 1; v < V; v++)
        if (z[v] > z[am]) am = v;
    const float temperature = sp->temperature;
    if (!(temperature > 0)) return (int32_t)am;
    const int top_k = sp->top_k;
    const int topk = top_k > 0 && top_k < V;
    const int nucleus = sp->top_p > 0 && sp->top_p < 1;
    gdn2_rng r = {*rng};
    float thr = -INFINITY;
    if (topk || nucleus) {
        int32_t *idx = malloc((size_t)V * sizeof *idx);
        double *e = nucleus ? malloc((size_t)V * sizeof *e) : NULL;
        if (!idx || (nucleus && !e)) { /* no memory for the candidates: the most likely token */
            free(idx), free(e);
            return (int32_t)am;
        }
        for (int64_t v = 0; v < V; v++) idx[v] = (int32_t)v;
        const int64_t keep = topk ? top_k : V;
        const int32_t kth = topk ? select_kth(z, idx, V, keep) : -1;
        if (!nucleus) {
            thr = z[kth]; /* top-k alone: the k-th largest logit as a threshold over the ids */
            free(idx);
        } else {
            double tot = 0;
            for (int64_t v = 0; v < V; v++) e[v] = exp((z[v] - z[am]) / temperature);
            for (int64_t i = 0; i < keep; i++) tot += e[idx[i]];
            const int32_t b = select_mass(z, e, idx, keep, sp->top_p * tot);
            free(idx);
            /* the kept candidates: ranked up to b */
            double kept = 0;
            for (int64_t v = 0; v < V; v++)
                if (ranks_before(z, (int32_t)v, b) || v == b) kept += e[v];
            const double u = gdn2_rng_uniform(&r) * kept;
            double acc = 0;
            int32_t pick = (int32_t)am;
            for (int64_t v = 0; v < V; v++) {
                if (!(ranks_before(z, (int32_t)v, b) || v == b)) continue;
                acc += e[v];
                if (acc >= u) {
                    pick = (int32_t)v;
                    break;
                }
            }
            free(e);
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
