/* The CPU token sampler: temperature, top-k, top-p over integer candidate weights (src/util/sample.h).
 *
 *   w_v = floor(exp((z_v - z_max) / T) 2^40)                       (gdn2_sample_weight)
 *   order: larger z first, then smaller id; top_k: the k first (alone: every z >= the k-th's)
 *   top_p: the shortest prefix of the order (within top_k) with mass >= ceil(top_p * mass(top_k))
 *   draw:  r = floor(u M) for the kept mass M; the first kept id, ascending, whose running mass > r
 *
 * Expected O(V): quickselects by partition, no sort. The masses are integer sums, so any order of
 * summation (here partitions, on the GPU radix histograms) gives the same nucleus and the same token. */
#include <math.h>

#include "sample.h"

size_t gdn2_sample_scratch_bytes(int64_t V) { return (size_t)V * (sizeof(uint64_t) + sizeof(int32_t)); }

static inline int ranks_before(const float *z, int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); }

/* Partition idx[lo, hi) around its middle element in the order: on return idx[lo, *pv) rank before
 * the pivot idx[*pv], the rest after it. */
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

/* idx[0, k) become the k first candidates of idx[0, n) (in no order); returns the k-th */
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

/* the nucleus boundary among idx[0, n): the candidate b whose predecessors in the order weigh less
 * than `need` (>= 1) and which, with them, weighs at least `need` (need <= the mass of idx[0, n)) */
static int32_t select_mass(const float *z, const uint64_t *w, int32_t *idx, int64_t n, uint64_t need) {
    int64_t lo = 0, hi = n;
    for (;;) {
        int64_t pv;
        partition(z, idx, lo, hi, &pv);
        uint64_t before = 0;
        for (int64_t i = lo; i < pv; i++) before += w[idx[i]];
        if (before >= need) {
            hi = pv;
        } else if (before + w[idx[pv]] >= need || pv + 1 >= hi) {
            return idx[pv];
        } else {
            need -= before + w[idx[pv]];
            lo = pv + 1;
        }
    }
}

int32_t gdn2_sample_row(const float *z, int64_t V, const gdn2_sample_row_params *p, void *scratch) {
    int64_t am = 0;
    for (int64_t v = 1; v < V; v++)
        if (z[v] > z[am]) am = v;
    if (!(p->temperature > 0)) return (int32_t)am;
    /* a NaN or +inf logit (a broken model; the loaders refuse non-finite weights and states) leaves no
     * distribution: every weight would be 0 and the nucleus search would never end. The argmax (the
     * first +inf, else id 0 for a NaN there) instead. */
    if (!isfinite(z[am])) return (int32_t)am;
    uint64_t *w = scratch;
    int32_t *idx = (int32_t *)(w + V);
    const float zmax = z[am];
    for (int64_t v = 0; v < V; v++) w[v] = gdn2_sample_weight(z[v], zmax, p->temperature);
    const int topk = p->top_k > 0 && p->top_k < V, nucleus = p->top_p > 0 && p->top_p < 1;
    /* kept: every id (mode 0), z >= thr (1), ranked up to b (2) */
    int mode = 0;
    float thr = 0;
    int32_t b = 0;
    if (topk || nucleus) {
        for (int64_t v = 0; v < V; v++) idx[v] = (int32_t)v;
        const int64_t keep = topk ? p->top_k : V;
        const int32_t kth = topk ? select_kth(z, idx, V, keep) : 0;
        if (!nucleus) {
            mode = 1, thr = z[kth];
        } else {
            uint64_t total = 0;
            for (int64_t i = 0; i < keep; i++) total += w[idx[i]];
            mode = 2, b = select_mass(z, w, idx, keep, gdn2_sample_target(p->top_p, total));
        }
    }
#define KEPT(v) (mode == 0 || (mode == 1 ? z[v] >= thr : (ranks_before(z, (int32_t)(v), b) || (v) == b)))
    uint64_t M = 0;
    for (int64_t v = 0; v < V; v++)
        if (KEPT(v)) M += w[v];
    const uint64_t r = gdn2_sample_point(p->u, M);
    uint64_t acc = 0;
    for (int64_t v = 0; v < V; v++)
        if (KEPT(v) && (acc += w[v]) > r) return (int32_t)v;
#undef KEPT
    return (int32_t)am; /* not reached: the argmax is kept and weighs 2^40 */
}
