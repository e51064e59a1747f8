/* MQAR (Zoology multi-query associative recall) and forgetting-MQAR generators.
 * Recipe: Zoology's multiquery_ar.py (HazyResearch/zoology, Arora et al. 2023) and its forgetting
 * variant, re-derived; docs/TASKS.md ("MQAR and forgetting-MQAR") states what is generated. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_data.h"
#include "rng.h"
#include "util/internal.h"

#define MQAR_TAG 0x4d514152ULL /* "MQAR" */

static void mqar_defaults(const gdn2_mqar_cfg *c, int *n_updates, double *a) {
    *n_updates = 0;
    if (c->forgetting) *n_updates = c->n_updates > 0 ? c->n_updates : (c->n_pairs / 2 > 0 ? c->n_pairs / 2 : 1);
    *a = c->power_a > 0 ? c->power_a : 0.01;
}

int gdn2_mqar_check(const gdn2_mqar_cfg *c) {
    if (!c) return gdn2_error(GDN2_ERR_ARG, "mqar: NULL config");
    int u;
    double a;
    mqar_defaults(c, &u, &a);
    if (c->vocab_size < 4) return gdn2_error(GDN2_ERR_ARG, "mqar: vocab_size %d < 4", c->vocab_size);
    if (c->seq_len < 4 || c->seq_len % 2)
        return gdn2_error(GDN2_ERR_ARG, "mqar: seq_len %d must be even and >= 4", c->seq_len);
    if (c->n_pairs < 1 || c->n_pairs > c->vocab_size / 2 - 1)
        return gdn2_error(GDN2_ERR_ARG, "mqar: n_pairs %d must be in [1, vocab_size/2 - 1 = %d]", c->n_pairs,
                          c->vocab_size / 2 - 1);
    if (c->forgetting && (u > c->n_pairs || c->vocab_size - c->vocab_size / 2 < 2))
        return gdn2_error(GDN2_ERR_ARG, "mqar: n_updates %d must be <= n_pairs %d (and >= 2 values)", u, c->n_pairs);
    int need = 2 * (c->n_pairs + u) + 2 * c->n_pairs;
    if (need > c->seq_len)
        return gdn2_error(GDN2_ERR_ARG,
                          "mqar: seq_len %d too short for %d pairs%s: needs 2*(pairs+updates) + 2*pairs = %d",
                          c->seq_len, c->n_pairs, c->forgetting ? " + updates" : "", need);
    return GDN2_OK;
}

/* n distinct integers from [lo, lo+m) in random order (Floyd's sampling, then Fisher-Yates). */
static void sample_distinct(gdn2_rng *r, int lo, int m, int n, int32_t *out) {
    int k = 0;
    for (int j = m - n; j < m; j++) {
        int t = (int)gdn2_rng_below(r, (uint64_t)j + 1), dup = 0;
        for (int i = 0; i < k; i++) dup |= out[i] == lo + t;
        out[k++] = lo + (dup ? j : t);
    }
    for (int i = n - 1; i > 0; i--) {
        int j = (int)gdn2_rng_below(r, (uint64_t)i + 1);
        int32_t x = out[i]; out[i] = out[j]; out[j] = x;
    }
}

static void mqar_draw(const gdn2_mqar_cfg *c, int u, double a, gdn2_rng *r, int32_t *tok, int32_t *tgt,
                      int32_t *keys, int32_t *vals, int32_t *upd, double *w, int32_t *gaps) {
    const int V = c->vocab_size, T = c->seq_len, n = c->n_pairs, half = V / 2;
    for (int t = 0; t < T; t++) tok[t] = 0, tgt[t] = GDN2_IGNORE;
    /* keys from 1..V/2-1, values from V/2..V-1, each distinct within the sample */
    sample_distinct(r, 1, half - 1, n, keys);
    sample_distinct(r, half, V - half, n, vals);
    for (int j = 0; j < n; j++) tok[2 * j] = keys[j], tok[2 * j + 1] = vals[j];
    int C = 2 * n;
    if (u > 0) {
        /* forgetting: u distinct keys come back with a new value (!= their previous one); the
         * query wants the latest. */
        sample_distinct(r, 0, n, u, upd);
        for (int j = 0; j < u; j++) {
            int32_t nv = half + (int32_t)gdn2_rng_below(r, (uint64_t)(V - half - 1));
            if (nv >= vals[upd[j]]) nv++; /* skip the old value */
            vals[upd[j]] = nv;
            tok[C + 2 * j] = keys[upd[j]], tok[C + 2 * j + 1] = nv;
        }
        C += 2 * u;
    }
    /* query gaps: S = (T - C)/2 slots, P(g) ~ (g+1)^(a-1), n distinct gaps drawn sequentially
     * without replacement (renormalising after each draw, as numpy's choice(replace=False) does);
     * key j sits at C + 2 g_j and its target (what follows it) is its latest value. */
    const int S = (T - C) / 2;
    double tot = 0;
    for (int g = 0; g < S; g++) tot += (w[g] = pow(g + 1.0, a - 1.0));
    for (int j = 0; j < n; j++) {
        double x = gdn2_rng_uniform(r) * tot, acc = 0;
        int g = -1, last = -1;
        for (int i = 0; i < S; i++) {
            if (w[i] <= 0) continue;
            last = i;
            acc += w[i];
            if (x < acc) { g = i; break; }
        }
        if (g < 0) g = last; /* rounding at the top end */
        gaps[j] = g;
        tot -= w[g];
        w[g] = 0;
        tok[C + 2 * g] = keys[j];
        tgt[C + 2 * g] = vals[j];
    }
    /* random_non_queries: every remaining blank becomes a uniform token of the whole vocabulary */
    if (!c->no_fill)
        for (int t = C; t < T; t++)
            if (tok[t] == 0) tok[t] = (int32_t)gdn2_rng_below(r, (uint64_t)V);
}

int gdn2_mqar_sample(const gdn2_mqar_cfg *c, uint64_t seed, int split, int32_t *tokens, int32_t *targets) {
    int st = gdn2_mqar_check(c);
    if (st) return st;
    if (!tokens || !targets) return gdn2_error(GDN2_ERR_ARG, "mqar: NULL tokens/targets");
    if (split != 0 && split != 1) return gdn2_error(GDN2_ERR_ARG, "mqar: split %d must be 0 (train) or 1 (test)", split);
    int u;
    double a;
    mqar_defaults(c, &u, &a);
    const int n = c->n_pairs, T = c->seq_len;
    int32_t *ints = gdn2_malloc(sizeof(int32_t) * (size_t)(3 * n + T / 2 + 1), "mqar scratch");
    double *w = gdn2_malloc(sizeof(double) * (size_t)(T / 2 + 1), "mqar gap weights");
    uint8_t *buf = gdn2_malloc(sizeof(int32_t) * 2 * (size_t)T, "mqar hash buffer");
    if (!ints || !w || !buf) { free(ints); free(w); free(buf); return GDN2_ERR_NOMEM; }
    gdn2_rng r = gdn2_rng_for(MQAR_TAG + (uint64_t)c->forgetting, seed, split);
    /* Train/test disjointness: a sample belongs to the split given by a hash of its tokens and
     * targets; each stream redraws until it gets one of its own (2 tries on average). */
    st = gdn2_error(GDN2_ERR_ARG, "mqar: config V=%d T=%d n=%d has too few distinct samples to split train/test",
                    c->vocab_size, T, n);
    for (int attempt = 0; attempt < 256; attempt++) {
        mqar_draw(c, u, a, &r, tokens, targets, ints, ints + n, ints + 2 * n, w, ints + 3 * n);
        memcpy(buf, tokens, sizeof(int32_t) * (size_t)T);
        memcpy(buf + sizeof(int32_t) * (size_t)T, targets, sizeof(int32_t) * (size_t)T);
        if (gdn2_content_split(buf, sizeof(int32_t) * 2 * (size_t)T) == split) { st = GDN2_OK; break; }
    }
    if (st == GDN2_OK) gdn2_clear_error();
    free(ints); free(w); free(buf);
    return st;
}
