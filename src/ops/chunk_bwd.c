/* fp32 chunkwise (WY, chunk 64) gate-aware backward of GDN-2 on the CPU (docs/ALGORITHM.md §4).
 *
 * One task = (sequence n, key head h), so the key-head gradients dq, dk, dg, db (summed over the
 * group's HV/H value heads) are written by one thread only. For each value head hv of the group:
 *   1. forward pass over the chunks keeping the chunk-start states S0 (T/64 x K x V), and A and
 *      [Y | R] per chunk when that is affordable (cache_ok);
 *   2. reverse pass over the chunks with the running dS (gradient of the chunk-end state):
 *      recompute Aqk (and T, A, Y, U, R unless kept) of the chunk (F2..F5), then B1..B10 below.
 * At the end of the task the l2norm VJP (on dq̂, dk̂) and the gate VJP (on dg) are applied in
 * place, and dA_log / ddt_bias partial sums are stored per (sequence, key head). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_common.h"
#include "gate.h"

/* per-thread buffers of the backward beyond gdn2_chunk_ws (sized by gdn2_chunk_bwd_extra_floats) */
typedef struct {
    float *cache;            /* NT x (C·(K+V) + C²): [Y | R] and A per chunk, or NULL */
    float *states;           /* NT x K x V chunk-start states */
    float *dS, *dSn;         /* K x V: gradient of the chunk-end / chunk-start state */
    float *dYR, *dEZ;        /* 2C x (K+V): [dY | dR] over −scale·dO's rows (B3); C x (K+V): [dĒ | dZ] */
    float *dAqk, *dA, *M, *dT; /* C x C (dT holds dTᵀ, B8) */
    float *dkg, *dqi, *Ep, *dkt, *P1, *P2, *P3, *X; /* C x K (dqg lives in dYR, B3) */
    float *dAd;              /* C: diagonal of dAqk */
    float *zL;               /* K: γ_last ⊙ rowsum(S0 ⊙ dS) */
    float *Bt;               /* max(K·V, (K+V)·C): the transposed operand of an NT product (gemm_nt) */
} bwd_ws;

static float *carve(float **p, size_t n) {
    float *r = *p;
    *p += (n + 15) & ~(size_t)15;
    return r;
}

static void bwd_ws_init(bwd_ws *b, float *p, int64_t K, int64_t V, int64_t max_len) {
    const size_t C = GDN2_C, NT = (size_t)((max_len + GDN2_C - 1) / GDN2_C), KV = (size_t)(K * V);
    b->cache = gdn2_chunk_bwd_cache_ok(K, V) ? carve(&p, NT * (C * (size_t)(K + V) + C * C)) : NULL;
    b->states = carve(&p, NT * KV);
    b->dS = carve(&p, KV);
    b->dSn = carve(&p, KV);
    b->dYR = carve(&p, 2 * C * (K + V));
    b->dEZ = carve(&p, C * (K + V));
    b->dAqk = carve(&p, C * C);
    b->dA = carve(&p, C * C);
    b->M = carve(&p, C * C);
    b->dT = carve(&p, C * C);
    b->dkg = carve(&p, C * K);
    b->dqi = carve(&p, C * K);
    b->Ep = carve(&p, C * K);
    b->dkt = carve(&p, C * K);
    b->P1 = carve(&p, C * K);
    b->P2 = carve(&p, C * K);
    b->P3 = carve(&p, C * K);
    b->X = carve(&p, C * K);
    b->dAd = carve(&p, C);
    b->zL = carve(&p, (size_t)K);
    b->Bt = carve(&p, (size_t)(K * V) > C * (size_t)(K + V) ? (size_t)(K * V) : C * (size_t)(K + V));
}

/* Cm = alpha·A Bᵀ + beta·Cm (row-major NT; A: m x kk, B: n x kk). With OpenBLAS's small-matrix
 * kernels (w->small) as NN against Bᵀ, transposed into bt (kk x n, row stride n): the small kernels
 * never take NT with a result of more than 1200 elements, and on the packed path NT costs ~1.7x NN
 * (dev/cpu/NOTES.md §8, §10); else one NT call. */
static void gemm_nt(const gdn2_chunk_ws *w, float *bt, int m, int n, int kk, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *Cm, int ldc) {
    if (w->small) {
        gdn2_transpose(bt, n, B, ldb, n, kk);
        gdn2_chunk_sgemm(w, 0, 0, m, n, kk, alpha, A, lda, bt, n, beta, Cm, ldc);
    } else {
        gdn2_sgemm(0, 1, m, n, kk, alpha, A, lda, B, ldb, beta, Cm, ldc);
    }
}

/* Products whose triangle is known, split at row hh (a multiple of 16 near the middle) so that each
 * skips its zero quarter (~25 % of the multiply-adds; dev/cpu/NOTES.md §11):
 * gemm_nt_lower: Cm = alpha·A Bᵀ (m x m, NT as gemm_nt) of which only the lower triangle (with the
 *   diagonal) is wanted: rows [0, hh) are computed over the columns [0, hh) only, the rest of those
 *   rows is left as it was (the caller zeroes the upper triangle). */
static void gemm_nt_lower(const gdn2_chunk_ws *w, float *bt, int m, int kk, float alpha, const float *A, int lda,
                          const float *B, int ldb, float *Cm, int ldc) {
    if (!w->small || m < 32) {
        gemm_nt(w, bt, m, m, kk, alpha, A, lda, B, ldb, 0.0f, Cm, ldc);
        return;
    }
    const int hh = gdn2_chunk_half(m);
    gdn2_transpose(bt, m, B, ldb, m, kk);
    gdn2_chunk_sgemm(w, 0, 0, hh, hh, kk, alpha, A, lda, bt, m, 0.0f, Cm, ldc);
    gdn2_chunk_sgemm(w, 0, 0, m - hh, m, kk, alpha, A + (size_t)hh * lda, lda, bt, m, 0.0f, Cm + (size_t)hh * ldc, ldc);
}

/* Cm = alpha·Lᵀ B + beta·Cm (row-major TN) with L (m x m) lower triangular: row s of the result
 * sums over r >= s only, so rows [hh, m) run over r in [hh, m). */
static void gemm_tn_lower(const gdn2_chunk_ws *w, int m, int n, float alpha, const float *L, int ldl, const float *B,
                          int ldb, float beta, float *Cm, int ldc) {
    if (m < 32) {
        gdn2_chunk_sgemm(w, 1, 0, m, n, m, alpha, L, ldl, B, ldb, beta, Cm, ldc);
        return;
    }
    const int hh = gdn2_chunk_half(m);
    gdn2_chunk_sgemm(w, 1, 0, hh, n, m, alpha, L, ldl, B, ldb, beta, Cm, ldc);
    gdn2_chunk_sgemm(w, 1, 0, m - hh, n, m - hh, alpha, L + (size_t)hh * ldl + hh, ldl, B + (size_t)hh * ldb, ldb, beta,
                     Cm + (size_t)hh * ldc, ldc);
}

/* The recompute of one chunk (F1..F5) against its chunk-start state S0.
 *   pass 0 (forward pass of the backward): T, A, [Y | R]; into `slot` if given;
 *   pass 1 (reverse pass): Aqk, plus A and [Y | R] from `slot` if given, else recomputed; with
 *   `aqk` (a saved forward's slot) Aqk is read from there too.
 * With a slot, w->YU, w->R, w->A (w->Aqk) are left pointing into it (no copies); bwd_head restores them. */
static void recompute(gdn2_chunk_ws *w, const gdn2_chunk_args *a, int64_t tok, int n, int64_t h, int64_t hv,
                      const float *S0, int pass, float *slot, int aqk) {
    const int C = GDN2_C;
    const size_t kv = (size_t)(a->K + a->V);
    gdn2_chunk_load(w, a, tok, n, h, hv);
    gdn2_chunk_plan(w, a->K, n);
    if (pass == 1 && slot) { /* Aqk only; A and [Y | R] read in place from where the forward pass left
                              * them (w->YU, R, A point into the slot; the reverse pass only reads them,
                              * and bwd_head points them back at the workspace after it) */
        if (aqk) w->Aqk = slot + C * kv + C * C;
        else gdn2_chunk_scores(w, a->K, n, a->scale, 1, 0);
        w->YU = slot;
        w->R = slot + a->K;
        w->A = slot + C * kv;
        return;
    }
    if (slot) { /* pass 0: T, A and [Y | R] computed straight into the slot */
        w->YU = slot;
        w->R = slot + a->K;
        w->A = slot + C * kv;
    }
    gdn2_chunk_scores(w, a->K, n, a->scale, pass == 1, 1);
    gdn2_chunk_solve(w, n);
    gdn2_chunk_wy(w, a->K, a->V, n, S0);
}

/* B9: the intra-chunk VJP through Aqk and T, tile by tile with the forward's exp anchoring:
 *   dq̂_r  += e^{D_r} ⊙ Σ_s dAqk_rs (k̂_s e^{E_s})                     (dqi)
 *   E'_r  += e^{D_r} ⊙ Σ_s dT_rs   (k̂_s e^{E_s})                     (Ep)
 *   dkt_s += e^{E_s} ⊙ Σ_r [dAqk_rs (q̂_r e^{D_r}) + dT_rs ((b⊙k̂)_r e^{D_r})]
 * dAqk here has its diagonal removed (handled exactly in B10, it carries no decay). */
GDN2_VEC_CLONES static void intra_bwd(gdn2_chunk_ws *w, bwd_ws *b, int64_t K, int n) {
    const int C = GDN2_C, k = (int)K;
    /* one tile over the whole chunk (the fast path): its terms are the sums themselves, stored
     * without zeroing dqi, Ep, dkt first */
    const int whole = w->n_tiles == 1 && w->tiles[0].r0 == 0 && w->tiles[0].r1 == n && w->tiles[0].c0 == 0 &&
                      w->tiles[0].c1 == n;
    if (!whole) {
        memset(b->dqi, 0, (size_t)n * K * sizeof(float));
        memset(b->Ep, 0, (size_t)n * K * sizeof(float));
        memset(b->dkt, 0, (size_t)n * K * sizeof(float));
    }
    for (int ti = 0; ti < w->n_tiles; ti++) {
        const gdn2_tile *t = &w->tiles[ti];
        const int nr = t->r1 - t->r0, nc = t->c1 - t->c0;
        /* b->dT holds dTᵀ (B8): the tile's block is rows c0.., columns r0.. of it */
        const float *dAq = b->dAqk + t->r0 * C + t->c0, *dTt = b->dT + t->c0 * C + t->r0;
        gdn2_tile_operands(w, K, t, 1, 1.0f);
        if (t->diag && nr >= 32) {
            /* a diagonal tile: dAqk and dT are strictly lower there (dTᵀ strictly upper), so with
             * the rows split at hh each product skips its zero quarter:
             *   P1 = dAqk Lc, P2 = dT Lc:          rows [0, hh) need columns s < hh only
             *   P3 = dAqkᵀ Lq + dTᵀ Lb (rows s): rows [hh, nc) need r >= hh only */
            const int hh = gdn2_chunk_half(nr), lq = w->ldq, lb = w->ldb;
            gdn2_chunk_sgemm(w, 0, 0, hh, k, hh, 1.0f, dAq, C, w->Lc, k, 0.0f, b->P1, k);
            gdn2_chunk_sgemm(w, 0, 0, nr - hh, k, nc, 1.0f, dAq + hh * C, C, w->Lc, k, 0.0f, b->P1 + hh * k, k);
            gdn2_chunk_sgemm(w, 1, 0, hh, k, hh, 1.0f, dTt, C, w->Lc, k, 0.0f, b->P2, k);
            gdn2_chunk_sgemm(w, 1, 0, nr - hh, k, nc, 1.0f, dTt + hh, C, w->Lc, k, 0.0f, b->P2 + hh * k, k);
            gdn2_chunk_sgemm(w, 1, 0, hh, k, nr, w->qalpha, dAq, C, w->tLq, lq, 0.0f, b->P3, k);
            gdn2_chunk_sgemm(w, 1, 0, nc - hh, k, nr - hh, w->qalpha, dAq + hh * C + hh, C, w->tLq + hh * lq, lq,
                             0.0f, b->P3 + hh * k, k);
            gdn2_chunk_sgemm(w, 0, 0, hh, k, nr, 1.0f, dTt, C, w->tLb, lb, 1.0f, b->P3, k);
            gdn2_chunk_sgemm(w, 0, 0, nc - hh, k, nr - hh, 1.0f, dTt + hh * C + hh, C, w->tLb + hh * lb, lb, 1.0f,
                             b->P3 + hh * k, k);
        } else {
            gdn2_chunk_sgemm(w, 0, 0, nr, k, nc, 1.0f, dAq, C, w->Lc, k, 0.0f, b->P1, k);
            gdn2_chunk_sgemm(w, 1, 0, nr, k, nc, 1.0f, dTt, C, w->Lc, k, 0.0f, b->P2, k);
            gdn2_chunk_sgemm(w, 1, 0, nc, k, nr, w->qalpha, dAq, C, w->tLq, w->ldq, 0.0f, b->P3, k);
            gdn2_chunk_sgemm(w, 0, 0, nc, k, nr, 1.0f, dTt, C, w->tLb, w->ldb, 1.0f, b->P3, k);
        }
        {
            float *restrict dq = b->dqi + t->r0 * K, *restrict ep = b->Ep + t->r0 * K;
            const float *restrict f = w->tFr, *restrict p1 = b->P1, *restrict p2 = b->P2;
            if (whole) {
                GDN2_SIMD
                for (int64_t i = 0; i < nr * K; i++) {
                    dq[i] = f[i] * p1[i];
                    ep[i] = f[i] * p2[i];
                }
            } else {
                GDN2_SIMD
                for (int64_t i = 0; i < nr * K; i++) {
                    dq[i] += f[i] * p1[i];
                    ep[i] += f[i] * p2[i];
                }
            }
        }
        {
            float *restrict dk = b->dkt + t->c0 * K;
            const float *restrict f = w->tFc, *restrict p3 = b->P3;
            if (whole) {
                GDN2_SIMD
                for (int64_t i = 0; i < nc * K; i++) dk[i] = f[i] * p3[i];
            } else {
                GDN2_SIMD
                for (int64_t i = 0; i < nc * K; i++) dk[i] += f[i] * p3[i];
            }
        }
    }
}

typedef struct {
    const gdn2_chunk_args *a;
    const gdn2_dims *d;
    const gdn2_opts *o;
    const gdn2_fwd_tensors *t;
    const gdn2_bwd_tensors *g;
    double *pA, *pdt; /* [N*H], [N*H*K] partial sums of dA_log, ddt_bias */
    const float *saved; /* gdn2_chunk_bwd_saved: the forward's records (chunk_common.h), or NULL */
    const int64_t *cb;  /* ... and their chunk offsets per sequence */
} bwd_ctx;

/* float VJP of the in-kernel gate (gate.h's formulas): returns df, adds to *dA */
static inline float gate_vjp_f32(float dg, float f, float A_log, float dt_bias, float lb, double *dA) {
    const float aa = expf(A_log), u = f + dt_bias;
    if (lb < 0.0f) {
        const float s = gdn2_sigmoid_f32(aa * u), inner = dg * lb * s * (1.0f - s);
        *dA += (double)inner * aa * u;
        return inner * aa;
    }
    *dA += (double)dg * (-aa * gdn2_softplus_f32(u));
    return dg * (-aa) * gdn2_softplus_grad_f32(u);
}

/* B11 on one finished gradient row (the last value head's B10, in place): the l2norm VJP
 * dx = rstd (dŷ − (dŷ·ŷ) ŷ) on dq̂, dk̂ (rstd as the load computed it: the same sum), and the gate
 * VJP on dg with the parameter partials *pA, pdt. Always inlined: into each ISA clone of bwd_head
 * (left out of line, it was compiled for baseline x86-64 only). */
__attribute__((always_inline)) static inline void row_vjp(const gdn2_chunk_args *a, const gdn2_chunk_ws *w, int r, int64_t ok, int64_t h, float *dq,
                           float *dk, float *dg, double *pA, double *pdt) {
    const int64_t K = a->K;
    if (a->l2norm) {
        for (int i = 0; i < 2; i++) {
            const float *restrict src = (i ? a->k : a->q) + ok;
            float *restrict dst = i ? dk : dq;
            const float rs = i ? w->rk[r] : w->rq[r];
            float dot = 0.0f;
            GDN2_SIMD_SUM(dot)
            for (int64_t c = 0; c < K; c++) dot += dst[c] * src[c];
            dot *= rs; /* dŷ·ŷ */
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) dst[c] = rs * (dst[c] - dot * (src[c] * rs));
        }
    }
    if (a->gate) {
        const float *f = a->g + ok, al = a->A_log ? a->A_log[h] : 0.0f;
        const float *dtb = a->dt_bias ? a->dt_bias + h * K : NULL;
        for (int64_t c = 0; c < K; c++) {
            dg[c] = gate_vjp_f32(dg[c], f[c], al, dtb ? dtb[c] : 0.0f, a->lb, pA);
            pdt[c] += dg[c];
        }
    }
}

/* One value head hv of the task's group: forward state pass, then the reverse chunk loop. The
 * key-head gradients (w.r.t. q̂, k̂, g_eff) are written into g->dq, dk, db, dg by the group's first
 * value head (`first`: no zeroing pass over them beforehand) and accumulated by the others. */
GDN2_VEC_CLONES static void bwd_head(const bwd_ctx *x, gdn2_chunk_ws *w, bwd_ws *b, int64_t n, int64_t h, int64_t hv,
                     int64_t bos, int64_t len, int first, int last, double *pA, double *pdt) {
    const gdn2_chunk_args *a = x->a;
    const int64_t K = a->K, V = a->V, H = a->H, HV = a->HV, KV = K + V;
    const int C = GDN2_C, k = (int)K, v = (int)V, kv = (int)KV, ldo = (int)(HV * V);
    const size_t sz = (size_t)(K * V);
    const float scale = a->scale;
    const int64_t nch = (len + C - 1) / C;
    const size_t cslot = (size_t)C * (size_t)KV + (size_t)C * C; /* floats per chunk in b->cache */

    float *const YU0 = w->YU, *const R0 = w->R, *const A0 = w->A, *const Aqk0 = w->Aqk; /* recompute may point
                                                                                            * these into the cache */
    /* the saved forward's records of this (sequence, value head): chunk-start state, then the slot
     * ([Y | R], A, Aqk) when cache_ok; read only (recompute's pass 1 only points into the slot) */
    const size_t rs = gdn2_chunk_saved_rec_floats(K, V);
    float *const rec = x->saved && nch > 0
                           ? (float *)x->saved + ((size_t)x->cb[n] * (size_t)HV + (size_t)(hv * nch)) * rs
                           : NULL;
    float *const rcache = rec && gdn2_chunk_bwd_cache_ok(K, V) ? rec + sz : NULL;
    const int check = w->check;
    if (!rec) { /* 1. chunk-start states (the saved forward left them in the records). The states need
                 * no scores against q (T only) and no output, so the loads skip q (skip_q): its rows
                 * are read, and tested, by the reverse pass's loads only. Neither pass hints the next
                 * chunk's inputs into cache (gdn2_chunk_prefetch): measured, the backward ran 2-6 %
                 * faster without (dev/cpu/NOTES.md §11) */
        float *S = w->S;
        w->skip_q = 1;
        if (x->t->h0) memcpy(S, x->t->h0 + (n * HV + hv) * K * V, sz * sizeof(float));
        else memset(S, 0, sz * sizeof(float));
        for (int64_t ci = 0; ci < nch; ci++) {
            const int cn = (int)(len - ci * C < C ? len - ci * C : C);
            memcpy(b->states + ci * sz, S, sz * sizeof(float));
            recompute(w, a, bos + ci * C, cn, h, hv, S, 0, b->cache ? b->cache + ci * cslot : NULL, 0);
            gdn2_chunk_state_update(w, K, V, cn, S);
        }
        /* the reverse pass's loads need test only the q rows: the state pass tested all the others
         * (with saved records there was no state pass, and they test all) */
        w->skip_q = 0;
        w->check = check ? GDN2_CHECK_Q : 0;
    }

    /* 2. reverse pass */
    if (x->g->dht) memcpy(b->dS, x->g->dht + (n * HV + hv) * K * V, sz * sizeof(float));
    else memset(b->dS, 0, sz * sizeof(float));
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int cn = (int)(len - ci * C < C ? len - ci * C : C);
        const int64_t tok = bos + ci * C;
        const float *S0 = rec ? rec + ci * rs : b->states + ci * sz, *dS = b->dS;
        float *const slot = rec ? (rcache ? rcache + ci * rs : NULL) : b->cache ? b->cache + ci * cslot : NULL;
        const float *dO = x->g->d_o + (tok * HV + hv) * V;
        float *dR = b->dYR + K, *dY = b->dYR;
        recompute(w, a, tok, cn, h, hv, S0, 1, slot, rcache != NULL);

        /* B1: dAqk = scale·tril(dO Rᵀ) (w.r.t. the unscaled score); its diagonal is set aside */
        gemm_nt_lower(w, b->Bt, cn, v, scale, dO, ldo, w->R, kv, b->dAqk, C);
        for (int r = 0; r < cn; r++) {
            float *row = b->dAqk + r * C;
            b->dAd[r] = row[r];
            for (int s = r; s < cn; s++) row[s] = 0.0f;
        }
        /* B2: dR = Aqkᵀ dO + kg dS */
        gemm_tn_lower(w, cn, v, 1.0f, w->Aqk, C, dO, ldo, 0.0f, dR, kv);
        gdn2_chunk_sgemm(w, 0, 0, cn, v, k, 1.0f, w->kg, k, dS, v, 1.0f, dR, kv);
        /* B3: dY = −dR S0ᵀ,  dqg = scale·dO S0ᵀ as one GEMM against S0ᵀ: −scale·dO is copied into
         * the rows cn..2cn−1 of dYR's dR columns, so [dY ; dqg] = −[dR ; −scale·dO] S0ᵀ lands in
         * dYR's dY columns (dqg: rows cn..2cn−1, row stride K+V) */
        for (int r = 0; r < cn; r++) {
            const float *restrict src = dO + (size_t)r * ldo;
            float *restrict dst = dR + (size_t)(cn + r) * kv;
            GDN2_SIMD
            for (int j = 0; j < v; j++) dst[j] = -scale * src[j];
        }
        if (check) { /* the value scan's test of the do rows, folded in here (every row of do passes
                      * through this copy once; the up-front scan leaves do out): bad = OR over the
                      * chunk's rows of [do_j not finite] */
            int bad = 0;
            for (int r = 0; r < cn; r++) {
                const float *restrict src = dO + (size_t)r * ldo;
                GDN2_SIMD_OR(bad)
                for (int j = 0; j < v; j++) {
                    const int32_t u = gdn2_bits(src + j);
                    bad |= GDN2_BAD_BITS(u, INT32_MAX);
                }
            }
            w->bad |= bad;
        }
        gemm_nt(w, b->Bt, 2 * cn, k, v, -1.0f, dR, kv, S0, v, 0.0f, dY, kv);
        const float *const dqg0 = dY + (size_t)cn * kv;
        gemm_nt(w, b->Bt, cn, k, v, 1.0f, w->R, kv, dS, v, 0.0f, b->dkg, k);
        /* B5: dS0 = Diag(γ_last) dS + scale·qgᵀ dO − Yᵀ dR;  zL = γ_last ⊙ rowsum(S0 ⊙ dS) */
        const float *gl = w->gam + (cn - 1) * K;
        for (int64_t c = 0; c < K; c++) {
            const float *restrict s0 = S0 + c * V, *restrict ds = dS + c * V;
            float *restrict dn = b->dSn + c * V, acc = 0.0f;
            GDN2_SIMD_SUM(acc)
            for (int64_t j = 0; j < V; j++) {
                acc += s0[j] * ds[j];
                dn[j] = gl[c] * ds[j];
            }
            b->zL[c] = gl[c] * acc;
        }
        gdn2_chunk_sgemm(w, 1, 0, k, v, cn, scale, w->qg, k, dO, ldo, 1.0f, b->dSn, v);
        gdn2_chunk_sgemm(w, 1, 0, k, v, cn, -1.0f, w->YU, kv, dR, kv, 1.0f, b->dSn, v);
        /* B6: dA = [dY | dR] [Ē | Z]ᵀ, strictly lower */
        gemm_nt_lower(w, b->Bt, cn, kv, 1.0f, b->dYR, kv, w->EZ, kv, b->dA, C);
        for (int r = 0; r < cn; r++)
            for (int s = r; s < cn; s++) b->dA[r * C + s] = 0.0f;
        /* B7: [dĒ | dZ] = Aᵀ [dY | dR] */
        gemm_tn_lower(w, cn, kv, 1.0f, w->A, C, b->dYR, kv, 0.0f, b->dEZ, kv);
        /* B8: dT = −tril(Aᵀ dA Aᵀ, −1), kept transposed: dTᵀ = −A (dAᵀ A), strictly upper. Both
         * products are then NN / TN (OpenBLAS's small kernels); Aᵀ dA · Aᵀ had an NT one (packed
         * path, ~1.7x the time). dA is strictly lower (gemm_tn_lower); A is lower and only the
         * strict upper triangle of dTᵀ is wanted: its rows [0, hh) sum over [0, hh) only, its rows
         * [hh, cn) need the columns [hh, cn) only (the rest is zeroed below) */
        gemm_tn_lower(w, cn, cn, 1.0f, b->dA, C, w->A, C, 0.0f, b->M, C);
        if (cn >= 32) {
            const int hh = gdn2_chunk_half(cn);
            gdn2_chunk_sgemm(w, 0, 0, hh, cn, hh, -1.0f, w->A, C, b->M, C, 0.0f, b->dT, C);
            gdn2_chunk_sgemm(w, 0, 0, cn - hh, cn - hh, cn, -1.0f, w->A + hh * C, C, b->M + hh, C, 0.0f,
                             b->dT + hh * C + hh, C);
        } else {
            gdn2_chunk_sgemm(w, 0, 0, cn, cn, cn, -1.0f, w->A, C, b->M, C, 0.0f, b->dT, C);
        }
        for (int r = 0; r < cn; r++)
            for (int s = 0; s <= r; s++) b->dT[r * C + s] = 0.0f;
        /* B9 */
        intra_bwd(w, b, K, cn);
        /* B10: assemble. With Ē = γ⊙b⊙k̂, qg = q̂⊙γ, kg = k̂⊙kgf:
         *   dq̂ = γ⊙dqg + dqi + dAd_r k̂
         *   dk̂ = kgf⊙dkg + γ⊙b⊙dĒ + b⊙E' + dkt + dAd_r q̂
         *   db = γ⊙k̂⊙dĒ + k̂⊙E'        dv = w⊙dZ        dw = v⊙dZ
         * decay (each term's exponent spans the tokens its g_i belong to):
         *   X_r = q̂⊙γ⊙dqg + Ē⊙dĒ + q̂⊙dqi + (b⊙k̂)⊙E' − k̂⊙dkt   -> dg_i += Σ_{r>=i} X_r
         *   Y_r = kg⊙dkg                                         -> dg_i += Σ_{r<i} Y_r
         *   zL = γ_last ⊙ rowsum(S0⊙dS)                          -> dg_i += zL */
        float *Xs = b->X, *Ys = b->P1; /* running sums (P1 is free after B9) */
        for (int64_t c = 0; c < K; c++) Xs[c] = 0.0f, Ys[c] = 0.0f;
        /* Σ_{r>=i} X_r: walk backwards; Σ_{r<i} Y_r: precompute forward into P2 */
        for (int r = 0; r < cn; r++) {
            const float *restrict kgr = w->kg + r * K, *restrict dkg = b->dkg + r * K;
            float *restrict yex = b->P2 + r * K, *restrict Yr = Ys;
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) {
                yex[c] = Yr[c];
                Yr[c] += kgr[c] * dkg[c];
            }
        }
        for (int r = cn - 1; r >= 0; r--) {
            const int64_t ok = ((tok + r) * H + h) * K, ov = ((tok + r) * HV + hv) * V;
            const float *q = w->q + r * K, *kk = w->k + r * K, *bb = w->b + r * K, *gam = w->gam + r * K;
            const float *kgf = w->kgf + r * K, *bk = w->bk + r * K, *E = w->EZ + r * KV, *dE = b->dEZ + r * KV;
            const float *dqg = dqg0 + r * KV, *dkg = b->dkg + r * K, *dqi = b->dqi + r * K, *ep = b->Ep + r * K;
            const float *dkt = b->dkt + r * K, *yex = b->P2 + r * K;
            const float dAd = b->dAd[r];
            float *restrict gq = x->g->dq + ok, *restrict gk = x->g->dk + ok, *restrict gb = x->g->db + ok;
            float *restrict gg = x->g->dg + ok, *restrict Xr = Xs;
            const float *restrict zL = b->zL;
            if (r >= 4) { /* the gradient rows 4 tokens on (B10 walks up): their lines requested for
                           * writing ahead. The stores go to 1 KiB-strided rows, bottom up, which the
                           * hardware prefetchers do not follow: without this each one waits for its
                           * line (~10 % of the reverse pass at K = 64). A whole chunk's rows hinted
                           * at once did worse (NOTES §8). */
                const int64_t pk = -4 * H * K, pv = -4 * HV * V;
                for (int64_t c = 0; c < K; c += 16) {
                    __builtin_prefetch(gq + pk + c, 1, 3);
                    __builtin_prefetch(gk + pk + c, 1, 3);
                    __builtin_prefetch(gb + pk + c, 1, 3);
                    __builtin_prefetch(gg + pk + c, 1, 3);
                }
                for (int64_t c = 0; c < V; c += 16) {
                    __builtin_prefetch(x->g->dv + ov + pv + c, 1, 3);
                    __builtin_prefetch(x->g->dw + ov + pv + c, 1, 3);
                }
            }
#define B10_ROW(OP)                                                                                           \
            GDN2_SIMD                                                                                             \
            for (int64_t c = 0; c < K; c++) {                                                                     \
                gq[c] OP gam[c] * dqg[c] + dqi[c] + dAd * kk[c];                                                  \
                gk[c] OP kgf[c] * dkg[c] + gam[c] * bb[c] * dE[c] + bb[c] * ep[c] + dkt[c] + dAd * q[c];          \
                gb[c] OP gam[c] * kk[c] * dE[c] + kk[c] * ep[c];                                                  \
                Xr[c] += q[c] * gam[c] * dqg[c] + E[c] * dE[c] + q[c] * dqi[c] + bk[c] * ep[c] - kk[c] * dkt[c]; \
                gg[c] OP Xr[c] + yex[c] + zL[c];                                                                  \
            }
            if (first) {
                B10_ROW(=)
            } else {
                B10_ROW(+=)
            }
#undef B10_ROW
            if (last) row_vjp(a, w, r, ok, h, gq, gk, gg, pA, pdt); /* B11: the row is final */
            const float *dZ = dE + K, *vv = a->v + ov, *ww = a->w + ov;
            float *restrict gv = x->g->dv + ov, *restrict gw = x->g->dw + ov;
            GDN2_SIMD
            for (int64_t j = 0; j < V; j++) {
                gv[j] = ww[j] * dZ[j];
                gw[j] = vv[j] * dZ[j];
            }
        }
        float *tmp = b->dS;
        b->dS = b->dSn;
        b->dSn = tmp;
    }
    w->check = check;
    w->YU = YU0;
    w->R = R0;
    w->A = A0;
    w->Aqk = Aqk0;
    if (x->g->dh0) memcpy(x->g->dh0 + (n * HV + hv) * K * V, b->dS, sz * sizeof(float));
}

GDN2_VEC_CLONES static void bwd_task(const bwd_ctx *x, gdn2_chunk_ws *w, bwd_ws *b, int64_t n, int64_t h) {
    const gdn2_chunk_args *a = x->a;
    const int64_t K = a->K, H = a->H;
    int64_t bos, len;
    gdn2_seq_range(x->d, x->o, n, &bos, &len);
    /* the first value head of the group writes dq, dk, db, dg (every row of the sequence), the others
     * add, the last one applies B11 (l2norm and gate VJPs) to each row as it finishes it */
    double pA = 0.0, *pdt = x->pdt ? x->pdt + (n * H + h) * K : NULL;
    if (pdt) memset(pdt, 0, K * sizeof(double));
    for (int64_t j = 0; j < a->G; j++)
        bwd_head(x, w, b, n, h, h * a->G + j, bos, len, j == 0, j == a->G - 1, &pA, pdt);
    if (x->pA) x->pA[n * H + h] = pA;
}

static int chunk_bwd(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                     const gdn2_bwd_tensors *g, const void *saved, size_t saved_size, int use_saved) {
    gdn2_chunk_args a;
    memset(&a, 0, sizeof a);
    int st = gdn2_chunk_setup(fn, d, o, t, &a);
    if (st) return st;
    if (!g || !g->d_o) return gdn2_error(GDN2_ERR_ARG, "%s: upstream gradient 'do' is NULL", fn);
    {
        const char *miss = !g->dq ? "dq" : !g->dk ? "dk" : !g->dv ? "dv" : !g->dg ? "dg" : !g->db ? "db"
                         : !g->dw ? "dw" : NULL;
        if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: output gradient '%s' is NULL", fn, miss);
    }
    /* the value scan: here only h0, A_log, dt_bias, dht; the rows of q, k, v, g, b, w are tested
     * by the loads (w.check: the state pass's, and the reverse pass's for q), those of do by the
     * reverse pass's B3, and a bad one turns into the full scan's error after the kernel (the
     * gradients then hold unspecified values) */
    int64_t *cb = NULL;
    if (use_saved) {
        const size_t need = gdn2_chunk_saved_size(d, o);
        if (!saved || saved_size < need)
            return gdn2_error(GDN2_ERR_ARG, "%s: saved buffer %s of %zu bytes, %zu needed (gdn2_chunk_saved_size)", fn,
                              saved ? "is" : "NULL,", saved ? saved_size : (size_t)0, need);
        if (!(cb = gdn2_chunk_saved_offsets(d, o))) return GDN2_ERR_NOMEM;
    }
    const int check = !o->trust_values ? GDN2_CHECK_ALL : 0;
    gdn2_bwd_tensors g_rest = *g;
    g_rest.d_o = NULL; /* do's rows are tested in the reverse pass (B3's copy of them) */
    if (check && (st = gdn2_check_values_rest(fn, d, o, t, &g_rest))) {
        free(cb);
        return st;
    }
    const int64_t N = gdn2_num_states(d, o), tasks = N * d->H;
    const int nt = gdn2_chunk_threads(d, o, 1);
    const size_t per = gdn2_chunk_per_thread_floats(d, o, 1);
    float *owned, *ws = gdn2_chunk_workspace(fn, o, (size_t)nt * per * sizeof(float), &owned);
    if (!ws) {
        free(cb);
        return o->workspace ? GDN2_ERR_ARG : GDN2_ERR_NOMEM;
    }
    const int64_t max_len = gdn2_chunk_max_seq_len(d, o);
    bwd_ctx x = {&a, d, o, t, g, NULL, NULL, use_saved ? (const float *)saved : NULL, cb};
    if (o->gate_in_kernel) {
        x.pA = gdn2_calloc((size_t)(tasks * (1 + d->K)), sizeof(double), "dA_log/ddt_bias partial sums");
        if (!x.pA) {
            free(owned);
            free(cb);
            return GDN2_ERR_NOMEM;
        }
        x.pdt = x.pA + tasks;
    }
    const int saved_threads = gdn2_blas_threads_begin();
    int bad = 0;
#pragma omp parallel num_threads(nt) reduction(| : bad)
    {
        gdn2_chunk_ws w;
        bwd_ws b;
        float *p = gdn2_chunk_thread_ws(&w, ws, per, a.K, a.V);
        bwd_ws_init(&b, p, a.K, a.V, max_len);
        w.check = check;
        w.tri = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < tasks; i++) bwd_task(&x, &w, &b, i / a.H, i % a.H);
        bad |= w.bad;
    }
    gdn2_blas_threads_end(saved_threads);
    /* parameter gradients: sum the per-(sequence, key head) partials in a fixed order */
    if (o->gate_in_kernel) {
        for (int64_t h = 0; h < d->H; h++) {
            double sA = 0.0;
            for (int64_t n = 0; n < N; n++) sA += x.pA[n * d->H + h];
            if (g->dA_log) g->dA_log[h] = (float)sA;
            for (int64_t c = 0; c < d->K; c++) {
                double s = 0.0;
                for (int64_t n = 0; n < N; n++) s += x.pdt[(n * d->H + h) * d->K + c];
                if (g->ddt_bias) g->ddt_bias[h * d->K + c] = (float)s;
            }
        }
        free(x.pA);
    }
    free(owned);
    free(cb);
    return bad ? gdn2_check_values(fn, d, o, t, g) : GDN2_OK;
}

int gdn2_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const gdn2_bwd_tensors *g) {
    return chunk_bwd("gdn2_chunk_bwd", d, o, t, g, NULL, 0, 0);
}

int gdn2_chunk_bwd_saved(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const gdn2_bwd_tensors *g,
                         const void *saved, size_t saved_size) {
    return chunk_bwd("gdn2_chunk_bwd_saved", d, o, t, g, saved, saved_size, 1);
}
