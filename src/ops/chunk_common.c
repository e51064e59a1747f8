/* Per-chunk building blocks of the chunkwise WY algorithm (docs/ALGORITHM.md; equations F1..F7).
 * Everything here works on one chunk of n <= 64 rows of one (sequence, value head). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_common.h"
#include "gate.h"

#ifdef GDN2_HAVE_BLAS
#include <cblas.h>
#endif

int gdn2_blas_threads_begin(void) {
#ifdef GDN2_HAVE_BLAS
    int saved = openblas_get_num_threads();
    if (saved != 1) openblas_set_num_threads(1);
    return saved;
#else
    return 1;
#endif
}

void gdn2_blas_threads_end(int saved) {
#ifdef GDN2_HAVE_BLAS
    if (saved != 1) openblas_set_num_threads(saved);
#else
    (void)saved;
#endif
}

size_t gdn2_chunk_ws_floats(int64_t K, int64_t V) {
    const size_t C = GDN2_C;
    return C * K * 4 + C * 2 + C * K * 6 + C * (K + V) * 2 + C * C * 2 + 2 * C * K + C * K +
           2 * C * K + 2 * C * C + C + (size_t)(K * V) + 32 * 16; /* + slack for 64-byte alignment of each buffer */
}

/* 16-float (64-byte) aligned carving */
static float *carve(float **p, size_t n) {
    float *r = *p;
    *p += (n + 15) & ~(size_t)15;
    return r;
}

float *gdn2_chunk_ws_init(gdn2_chunk_ws *w, float *mem, int64_t K, int64_t V) {
    const size_t C = GDN2_C;
    memset(w, 0, sizeof *w);
    w->V = V;
    w->small = gdn2_gemm_small_kernels();
    uintptr_t a = (uintptr_t)mem;
    float *p = mem + ((64 - (a & 63)) & 63) / sizeof(float);
    w->q = carve(&p, C * K);
    w->k = carve(&p, C * K);
    w->b = carve(&p, C * K);
    w->g = carve(&p, C * K);
    w->rq = carve(&p, C);
    w->rk = carve(&p, C);
    w->gam = carve(&p, C * K);
    w->kgf = carve(&p, C * K);
    w->ig = carve(&p, C * K);
    w->qg = carve(&p, C * K);
    w->kg = carve(&p, C * K);
    w->bk = carve(&p, C * K);
    w->EZ = carve(&p, C * (K + V));
    w->YU = carve(&p, C * (K + V));
    w->R = w->YU + K; /* R = U − Y S overwrites U in place */
    w->Aqk = carve(&p, C * C);
    w->A = carve(&p, C * C);
    w->Lr = carve(&p, 2 * C * K);
    w->Lc = carve(&p, C * K);
    w->Fr = carve(&p, C * K);
    w->Fc = carve(&p, C * K);
    w->Sc = carve(&p, 2 * C * C);
    w->tmp = carve(&p, C);
    w->S = carve(&p, (size_t)(K * V));
    return p;
}

/* (F1) Load and transform the chunk's inputs.
 *   q̂, k̂ = l2norm(q), l2norm(k) (or copies); g = gate(f) (or copy); b, w (or beta in KDA mode)
 *   γ_r = exp(Σ_{i<=r} g_i),  kgf_r = exp(Σ_{r<i<=n-1} g_i): every exponent is a sum of g <= 0 over
 *   the tokens between the two rows, so both factors lie in [0,1] and no cumsum difference is taken
 *   (on the fast path, span <= GDN2_SPAN_MAX, kgf = γ_last · (1/γ) instead: no underflow there).
 *   qg = q̂⊙γ, kg = k̂⊙kgf, bk = b⊙k̂, Ē = γ⊙b⊙k̂, Z = w⊙v (F4 operands). */
GDN2_VEC_CLONES void gdn2_chunk_load(gdn2_chunk_ws *w, const gdn2_chunk_args *a, int64_t tok0, int n, int64_t h,
                                     int64_t hv) {
    const int64_t K = a->K, V = a->V, H = a->H, HV = a->HV, KV = K + V;
    for (int r = 0; r < n; r++) {
        const int64_t ok = ((tok0 + r) * H + h) * K, ov = ((tok0 + r) * HV + hv) * V;
        float *restrict q = w->q + r * K, *restrict k = w->k + r * K, *restrict b = w->b + r * K;
        float *restrict g = w->g + r * K;
        const float *restrict sq = a->q + ok, *restrict sk = a->k + ok;
        const float *restrict sb = a->beta ? NULL : a->b + ok;
        const int skip_q = w->skip_q;
        float rq = 1.0f, rk = 1.0f;
        if (a->l2norm) { /* y = x / sqrt(Σx² + 1e-6) */
            float ssq = 0.0f, ssk = 0.0f;
            if (!skip_q) {
                GDN2_SIMD_SUM(ssq)
                for (int64_t c = 0; c < K; c++) ssq += sq[c] * sq[c];
            }
            GDN2_SIMD_SUM(ssk)
            for (int64_t c = 0; c < K; c++) ssk += sk[c] * sk[c];
            rq = 1.0f / sqrtf(ssq + 1e-6f);
            rk = 1.0f / sqrtf(ssk + 1e-6f);
        }
        w->rq[r] = rq;
        w->rk[r] = rk;
        const float bt = a->beta ? a->beta[(tok0 + r) * H + h] : 0.0f;
        if (!skip_q) { /* one loop for both, as the forward has always had it */
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) {
                q[c] = sq[c] * rq;
                k[c] = sk[c] * rk;
            }
        } else {
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) k[c] = sk[c] * rk;
        }
        /* two loops, not a select inside one: vectorised, `a->beta ? bt : sb[c]` became a masked load
         * through the NULL sb in KDA mode, and each such load took a microcode assist (18% of the
         * KDA forward at K = 128) */
        if (a->beta) {
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) b[c] = bt;
        } else {
            memcpy(b, sb, K * sizeof(float));
        }
        if (a->gate) {
            const float *f = a->g + ok;
            const float al = a->A_log ? a->A_log[h] : 0.0f; /* absent A_log / dt_bias: zero */
            const float *dtb = a->dt_bias ? a->dt_bias + h * K : NULL;
            for (int64_t c = 0; c < K; c++) g[c] = gdn2_gate_f32(f[c], al, dtb ? dtb[c] : 0.0f, a->lb);
        } else {
            memcpy(g, a->g + ok, K * sizeof(float));
        }
        const float *restrict v = a->v + ov;
        float *restrict z = w->EZ + r * KV + K;
        if (a->beta) { /* KDA: w = beta of the key head */
            GDN2_SIMD
            for (int64_t c = 0; c < V; c++) z[c] = bt * v[c];
        } else {
            const float *restrict wv = a->w + ov;
            GDN2_SIMD
            for (int64_t c = 0; c < V; c++) z[c] = wv[c] * v[c];
        }
        /* the input value scan, folded in: the rows just read (still in L1) must be finite, and g
         * <= 0 unless the gate is computed here (in KDA mode b, w are beta, checked by the caller) */
        if (w->check == GDN2_CHECK_Q) { /* the q rows only (the rest was tested by an earlier load) */
            int bad = 0;
            GDN2_SIMD_OR(bad)
            for (int64_t c = 0; c < K; c++) {
                const int32_t uq = gdn2_bits(sq + c);
                bad |= GDN2_BAD_BITS(uq, INT32_MAX);
            }
            w->bad |= bad;
        } else if (w->check) {
            /* bad = OR over c of [q_c, k_c, b_c, v_c, w_c not finite] | [g_c not finite or (no gate) g_c > 0];
             * in KDA mode k, v stand in for b, w, and with skip_q k stands in for q (no loads through
             * NULL, see above; with skip_q q is not read at all: a later load must test it) */
            const float *restrict sf = a->g + ok, *restrict sbb = a->beta ? sk : sb, *restrict sqq = skip_q ? sk : sq;
            const float *restrict sw = a->beta ? v : a->w + ov;
            const int32_t gmax = a->gate ? INT32_MAX : 0;
            int bad = 0;
            GDN2_SIMD_OR(bad)
            for (int64_t c = 0; c < K; c++) {
                const int32_t uq = gdn2_bits(sqq + c), uk = gdn2_bits(sk + c), ub = gdn2_bits(sbb + c);
                const int32_t ug = gdn2_bits(sf + c);
                bad |= GDN2_BAD_BITS(uq, INT32_MAX) | GDN2_BAD_BITS(uk, INT32_MAX) | GDN2_BAD_BITS(ub, INT32_MAX) |
                       GDN2_BAD_BITS(ug, gmax);
            }
            GDN2_SIMD_OR(bad)
            for (int64_t c = 0; c < V; c++) {
                const int32_t uv = gdn2_bits(v + c), uw = gdn2_bits(sw + c);
                bad |= GDN2_BAD_BITS(uv, INT32_MAX) | GDN2_BAD_BITS(uw, INT32_MAX);
            }
            w->bad |= bad;
        }
    }
    /* forward cumulative sums G_r = Σ_{i<=r} g_i (into gam, exponentiated below), and the chunk's
     * decay span max_c (max(0, max_r G) − min(0, min_r G)) */
    float *restrict lo = w->Fr, *restrict hi = w->Fr + K;
    GDN2_SIMD
    for (int64_t c = 0; c < K; c++) {
        const float x = w->g[c];
        w->gam[c] = x;
        lo[c] = x < 0.0f ? x : 0.0f;
        hi[c] = x > 0.0f ? x : 0.0f;
    }
    for (int r = 1; r < n; r++) {
        float *restrict G = w->gam + r * K;
        const float *restrict g = w->g + r * K, *restrict Gp = w->gam + (r - 1) * K;
        GDN2_SIMD
        for (int64_t c = 0; c < K; c++) {
            const float x = Gp[c] + g[c];
            G[c] = x;
            lo[c] = x < lo[c] ? x : lo[c];
            hi[c] = x > hi[c] ? x : hi[c];
        }
    }
    float sp = 0.0f;
    GDN2_SIMD_MAX(sp)
    for (int64_t c = 0; c < K; c++) sp = sp > hi[c] - lo[c] ? sp : hi[c] - lo[c];
    /* fast path (docs §3): the whole chunk is one score tile anchored before row 0. Then the row
     * factors are γ itself, the column factors are 1/γ (<= e^GDN2_SPAN_MAX) and kgf = γ_last/γ_s. */
    w->fast = sp <= GDN2_SPAN_MAX;
    if (w->fast) {
        for (int r = 0; r < n; r++) {
            float *restrict gam = w->gam + r * K, *restrict ig = w->ig + r * K;
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) {
                const float ga = gdn2_fexp(gam[c]);
                gam[c] = ga;
                ig[c] = 1.0f / ga;
            }
        }
        const float *restrict gl = w->gam + (n - 1) * K;
        for (int r = 0; r < n; r++) {
            float *restrict kgf = w->kgf + r * K;
            const float *restrict ig = w->ig + r * K;
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) kgf[c] = gl[c] * ig[c];
        }
    } else {
        /* suffix sums Σ_{r<i<=n-1} g_i, so that kgf never divides by an underflowed γ */
        memset(w->kgf + (n - 1) * K, 0, K * sizeof(float));
        for (int r = n - 2; r >= 0; r--) {
            float *restrict Gb = w->kgf + r * K;
            const float *restrict Gn = w->kgf + (r + 1) * K, *restrict gn = w->g + (r + 1) * K;
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) Gb[c] = Gn[c] + gn[c];
        }
        for (int r = 0; r < n; r++) {
            float *restrict gam = w->gam + r * K, *restrict kgf = w->kgf + r * K;
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) {
                gam[c] = gdn2_fexp(gam[c]);
                kgf[c] = gdn2_fexp(kgf[c]);
            }
        }
    }
    for (int r = 0; r < n; r++) {
        const float *restrict gam = w->gam + r * K, *restrict kgf = w->kgf + r * K;
        const float *restrict q = w->q + r * K, *restrict k = w->k + r * K, *restrict b = w->b + r * K;
        float *restrict qg = w->qg + r * K, *restrict kg = w->kg + r * K, *restrict bk = w->bk + r * K;
        float *restrict E = w->EZ + r * KV;
        if (!w->skip_q) {
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) {
                const float bkc = b[c] * k[c];
                qg[c] = q[c] * gam[c];
                kg[c] = k[c] * kgf[c];
                bk[c] = bkc;
                E[c] = gam[c] * bkc;
            }
        } else {
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) {
                const float bkc = b[c] * k[c];
                kg[c] = k[c] * kgf[c];
                bk[c] = bkc;
                E[c] = gam[c] * bkc;
            }
        }
    }
}

/* Prefetch the inputs of chunk rows [tok0, tok0+n) (the next chunk) while this one computes: the
 * first touch of q, k, g, b, v, w otherwise stalls the load on memory. */
void gdn2_chunk_prefetch(const gdn2_chunk_args *a, int64_t tok0, int n, int64_t h, int64_t hv) {
    const int64_t K = a->K, V = a->V, H = a->H, HV = a->HV;
    for (int r = 0; r < n; r++) {
        const int64_t ok = ((tok0 + r) * H + h) * K, ov = ((tok0 + r) * HV + hv) * V;
        for (int64_t c = 0; c < K; c += 16) {
            __builtin_prefetch(a->q + ok + c, 0, 1);
            __builtin_prefetch(a->k + ok + c, 0, 1);
            __builtin_prefetch(a->g + ok + c, 0, 1);
            if (!a->beta) __builtin_prefetch(a->b + ok + c, 0, 1);
        }
        for (int64_t c = 0; c < V; c += 16) {
            __builtin_prefetch(a->v + ov + c, 0, 1);
            if (!a->beta) __builtin_prefetch(a->w + ov + c, 0, 1);
        }
    }
}

/* decay span of rows [r0, r1): max over channels of (max − min) of D_r = Σ_{r0<i<=r} g_i */
static float span(const float *g, int64_t K, int r0, int r1, float *restrict lo, float *restrict hi,
                  float *restrict D) {
    for (int64_t c = 0; c < K; c++) lo[c] = hi[c] = D[c] = 0.0f;
    for (int r = r0 + 1; r < r1; r++) {
        const float *restrict gr = g + r * K;
        GDN2_SIMD
        for (int64_t c = 0; c < K; c++) {
            const float x = D[c] + gr[c];
            D[c] = x;
            lo[c] = x < lo[c] ? x : lo[c];
            hi[c] = x > hi[c] ? x : hi[c];
        }
    }
    float s = 0.0f;
    GDN2_SIMD_MAX(s)
    for (int64_t c = 0; c < K; c++) s = s > hi[c] - lo[c] ? s : hi[c] - lo[c];
    return s;
}

static void plan_rec(gdn2_chunk_ws *w, int64_t K, int r0, int r1) {
    if (r1 - r0 > 1 && !(span(w->g, K, r0, r1, w->Fr, w->Fr + K, w->Fr + 2 * K) <= GDN2_SPAN_MAX)) {
        int m = r0 + (r1 - r0 + 1) / 2;
        w->tiles[w->n_tiles++] = (gdn2_tile){m, r1, r0, m, 0, 0};
        plan_rec(w, K, r0, m);
        plan_rec(w, K, m, r1);
        return;
    }
    w->tiles[w->n_tiles++] = (gdn2_tile){r0, r1, r0, r1, 1, 0};
}

void gdn2_chunk_plan(gdn2_chunk_ws *w, int64_t K, int n) {
    w->n_tiles = 0;
    if (n <= 0) return;
    if (w->fast) w->tiles[w->n_tiles++] = (gdn2_tile){0, n, 0, n, 1, 1};
    else plan_rec(w, K, 0, n);
}

/* Tile factors (docs §3). The tile's anchor is its first row m = r0:
 *   rows r >= m:           D_r = Σ_{m<i<=r} g_i  (<= 0)
 *   cols s < m (off tile): E_s = Σ_{s<i<=m} g_i  (<= 0)
 *   cols s >= m (diag):    E_s = −D_s            (<= span <= GDN2_SPAN_MAX)
 * so that e^{D_r}·e^{E_s} = e^{Σ_{s<i<=r} g_i} = e^{G_r − G_s}. */
GDN2_VEC_CLONES void gdn2_tile_operands(gdn2_chunk_ws *w, int64_t K, const gdn2_tile *t, int want_qk, float qscale) {
    const int nr = t->r1 - t->r0, nc = t->c1 - t->c0;
    float *restrict Fr = w->Fr, *restrict Fc = w->Fc;
    if (t->fast) {
        /* whole chunk anchored before row 0: e^D = γ, e^E = 1/γ, so the row operands already exist
         * (q̂⊙γ = qg, (b⊙k̂)⊙γ = Ē in EZ); only k̂/γ is formed. qscale is left to the GEMM's alpha. */
        float *restrict Lc = w->Lc;
        const float *restrict k = w->k, *restrict ig = w->ig;
        GDN2_SIMD
        for (int64_t i = 0; i < nc * K; i++) Lc[i] = k[i] * ig[i];
        w->tFr = w->gam;
        w->tFc = w->ig;
        w->tLq = w->qg;
        w->tLb = w->EZ;
        w->ldq = (int)K;
        w->ldb = (int)(K + w->V);
        w->qalpha = qscale;
        return;
    }
    w->tFr = Fr;
    w->tFc = Fc;
    w->tLq = w->Lr;
    w->tLb = w->Lr + (want_qk ? nr * K : 0);
    w->ldq = w->ldb = (int)K;
    w->qalpha = 1.0f;
    /* D into Fr (sums first, exp below) */
    memset(Fr, 0, K * sizeof(float));
    for (int i = 1; i < nr; i++) {
        const float *restrict gr = w->g + (t->r0 + i) * K;
        GDN2_SIMD
        for (int64_t c = 0; c < K; c++) Fr[i * K + c] = Fr[(i - 1) * K + c] + gr[c];
    }
    if (!t->diag) {
        const float *restrict gm = w->g + t->r0 * K;
        memcpy(Fc + (nc - 1) * K, gm, K * sizeof(float));
        for (int j = nc - 2; j >= 0; j--) {
            const float *restrict gn = w->g + (t->c0 + j + 1) * K;
            GDN2_SIMD
            for (int64_t c = 0; c < K; c++) Fc[j * K + c] = Fc[(j + 1) * K + c] + gn[c];
        }
        GDN2_SIMD
        for (int64_t i = 0; i < nc * K; i++) Fc[i] = gdn2_fexp(Fc[i]);
    }
    GDN2_SIMD
    for (int64_t i = 0; i < nr * K; i++) Fr[i] = gdn2_fexp(Fr[i]);
    if (t->diag) { /* e^{-D} = 1/e^{D} <= e^{GDN2_SPAN_MAX}: a division instead of an exp */
        GDN2_SIMD
        for (int64_t i = 0; i < nc * K; i++) Fc[i] = 1.0f / Fr[i];
    }
    /* rows: the q block first (pre-scaled), then the b⊙k̂ block */
    float *restrict Lq = w->Lr, *restrict Lb = w->Lr + (want_qk ? nr * K : 0);
    const float *restrict q = w->q + t->r0 * K, *restrict bk = w->bk + t->r0 * K;
    if (want_qk) {
        GDN2_SIMD
        for (int64_t i = 0; i < nr * K; i++) Lq[i] = qscale * q[i] * Fr[i];
    }
    GDN2_SIMD
    for (int64_t i = 0; i < nr * K; i++) Lb[i] = bk[i] * Fr[i];
    const float *restrict k = w->k + t->c0 * K;
    float *restrict Lc = w->Lc;
    GDN2_SIMD
    for (int64_t i = 0; i < nc * K; i++) Lc[i] = k[i] * Fc[i];
}

/* dst (cols x rows, row stride ldd) = srcᵀ (src: rows x cols, row stride lds). 16x16 blocks as
 * four rounds of two-source shuffles (one 16-float vector a row), the ragged edges element by
 * element. This is what lets a row-major NT product run as NN against the transposed operand, on
 * OpenBLAS's small-matrix kernels (gdn2_chunk_sgemm): ~2.8 µs for 128x128 on one core here, the
 * plain double loop ~10x that. */
#if defined(__GNUC__) && !defined(__clang__) /* __builtin_shuffle is GCC's; elsewhere the strips do it all */
#define GDN2_TRANSPOSE_BLOCKS 1
typedef float gdn2_v16 __attribute__((vector_size(64)));
typedef int32_t gdn2_i16 __attribute__((vector_size(64)));
#else
#define GDN2_TRANSPOSE_BLOCKS 0
#endif
GDN2_VEC_CLONES void gdn2_transpose(float *restrict dst, int64_t ldd, const float *restrict src, int64_t lds, int rows,
                                    int cols) {
#if GDN2_TRANSPOSE_BLOCKS
    static const gdn2_i16 lo1 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
                          hi1 = {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31},
                          lo2 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                          hi2 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
                          lo4 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                          hi4 = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
                          lo8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                          hi8 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    const int R16 = rows & ~15, C16 = cols & ~15;
    for (int r0 = 0; r0 < R16; r0 += 16)
        for (int c0 = 0; c0 < C16; c0 += 16) {
            gdn2_v16 x[16], y[16];
            for (int i = 0; i < 16; i++) memcpy(&x[i], src + (r0 + i) * lds + c0, sizeof x[i]);
            /* rounds of 1, 2, 4, 8 elements: after them x[i] is column c0 + i of the block */
            for (int i = 0; i < 8; i++) {
                y[2 * i] = __builtin_shuffle(x[2 * i], x[2 * i + 1], lo1);
                y[2 * i + 1] = __builtin_shuffle(x[2 * i], x[2 * i + 1], hi1);
            }
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 2; j++) {
                    x[4 * i + j] = __builtin_shuffle(y[4 * i + j], y[4 * i + j + 2], lo2);
                    x[4 * i + j + 2] = __builtin_shuffle(y[4 * i + j], y[4 * i + j + 2], hi2);
                }
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 4; j++) {
                    y[8 * i + j] = __builtin_shuffle(x[8 * i + j], x[8 * i + j + 4], lo4);
                    y[8 * i + j + 4] = __builtin_shuffle(x[8 * i + j], x[8 * i + j + 4], hi4);
                }
            for (int j = 0; j < 8; j++) {
                x[j] = __builtin_shuffle(y[j], y[j + 8], lo8);
                x[j + 8] = __builtin_shuffle(y[j], y[j + 8], hi8);
            }
            for (int i = 0; i < 16; i++) memcpy(dst + (c0 + i) * ldd + r0, &x[i], sizeof x[i]);
        }
#else
    const int R16 = 0, C16 = 0;
#endif
    for (int r = 0; r < R16; r++) /* right strip */
        for (int c = C16; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
    for (int r = R16; r < rows; r++) /* bottom strip */
        for (int c = 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
}

/* (F2) per tile, one GEMM for both score matrices (rows stacked [q̂ ; b⊙k̂]):
 *   Aqk[R,S] = scale · (q̂⊙e^D)(k̂⊙e^E)ᵀ,  T[R,S] = ((b⊙k̂)⊙e^D)(k̂⊙e^E)ᵀ,
 * then keep s <= r in Aqk and s < r in T. */
void gdn2_chunk_scores(gdn2_chunk_ws *w, int64_t K, int n, float scale, int want_qk, int want_t) {
    const int C = GDN2_C;
    for (int ti = 0; ti < w->n_tiles; ti++) {
        const gdn2_tile *t = &w->tiles[ti];
        const int nr = t->r1 - t->r0, nc = t->c1 - t->c0;
        gdn2_tile_operands(w, K, t, want_qk, scale);
        if (t->fast) { /* operands in place: GEMMs straight into Aqk and A; with small-matrix kernels
                        * against Lcᵀ (in Lr, unused here) */
            const float *Lt = w->Lc;
            int tb = 1, ldl = (int)K;
            if (w->small) {
                gdn2_transpose(w->Lr, C, w->Lc, K, nc, (int)K);
                Lt = w->Lr, tb = 0, ldl = C;
            }
            if (w->tri && nr >= 32) { /* both results lower triangular: rows [0, hh) over the columns
                                       * [0, hh) only (the rest is zeroed below) */
                const int hh = gdn2_chunk_half(nr);
                for (int i = 0; i < 2; i++) {
                    if (!(i ? want_t : want_qk)) continue;
                    const float *L = i ? w->tLb : w->tLq;
                    const int ld = i ? w->ldb : w->ldq;
                    float *out = i ? w->A : w->Aqk;
                    const float al = i ? 1.0f : w->qalpha;
                    gdn2_sgemm(0, tb, hh, hh, (int)K, al, L, ld, Lt, ldl, 0.0f, out, C);
                    gdn2_sgemm(0, tb, nr - hh, nc, (int)K, al, L + (size_t)hh * ld, ld, Lt, ldl, 0.0f, out + hh * C, C);
                }
                continue;
            }
            if (want_qk) gdn2_sgemm(0, tb, nr, nc, (int)K, w->qalpha, w->tLq, w->ldq, Lt, ldl, 0.0f, w->Aqk, C);
            if (want_t) gdn2_sgemm(0, tb, nr, nc, (int)K, 1.0f, w->tLb, w->ldb, Lt, ldl, 0.0f, w->A, C);
            continue;
        }
        /* Lr = [q block (when want_qk) ; b⊙k̂ block]: the first nr or 2·nr rows are the ones wanted */
        const int m = (want_qk && want_t) ? 2 * nr : nr;
        gdn2_sgemm(0, 1, m, nc, (int)K, 1.0f, w->Lr, (int)K, w->Lc, (int)K, 0.0f, w->Sc, C);
        const float *sq = w->Sc, *sb = w->Sc + (want_qk ? nr * C : 0);
        for (int i = 0; i < nr; i++) {
            if (want_t) memcpy(w->A + (t->r0 + i) * C + t->c0, sb + i * C, nc * sizeof(float));
            if (want_qk) memcpy(w->Aqk + (t->r0 + i) * C + t->c0, sq + i * C, nc * sizeof(float));
        }
    }
    for (int r = 0; r < n; r++) {
        float *a = w->A + r * C, *s = w->Aqk + r * C;
        if (want_t)
            for (int c = r; c < C; c++) a[c] = 0.0f;
        if (want_qk)
            for (int c = r + 1; c < C; c++) s[c] = 0.0f;
    }
}

/* (F3) A = (I + T)^{-1} by forward substitution, row by row in place:
 *   A_i = e_i − Σ_{j<i} T_ij A_j
 * Row j of A is zero beyond column j and A_jj = 1, and row i of T is zero from column i on (the
 * scores zero it), so every update can run over the columns [0, W) with W = i rounded up to 16:
 * fixed 16-wide blocks (two 8-wide vectors, no ragged tails), four rows j per pass over A_i. */
GDN2_VEC_CLONES void gdn2_chunk_solve(gdn2_chunk_ws *w, int n) {
    const int C = GDN2_C;
    float *restrict t = w->tmp;
    if (n > 0) w->A[0] = 1.0f; /* row 0 = e_0 */
    for (int i = 1; i < n; i++) {
        float *restrict Ai = w->A + i * C;
        const int W = (i + 15) & ~15;
        for (int j = 0; j < i; j++) {
            t[j] = Ai[j];
            Ai[j] = 0.0f;
        }
        for (int c0 = 0; c0 < W; c0 += 16) {
            float acc[16] = {0};
            int j = 0;
            /* acc = Σ_j T_ij A_j[c0, c0+16), four rows at a time */
            for (; j + 4 <= i; j += 4) {
                const float t0 = t[j], t1 = t[j + 1], t2 = t[j + 2], t3 = t[j + 3];
                const float *restrict A0 = w->A + j * C + c0, *restrict A1 = A0 + C, *restrict A2 = A1 + C,
                                      *restrict A3 = A2 + C;
                GDN2_SIMD
                for (int c = 0; c < 16; c++) acc[c] += t0 * A0[c] + t1 * A1[c] + t2 * A2[c] + t3 * A3[c];
            }
            for (; j < i; j++) {
                const float tj = t[j];
                const float *restrict Aj = w->A + j * C + c0;
                GDN2_SIMD
                for (int c = 0; c < 16; c++) acc[c] += tj * Aj[c];
            }
            GDN2_SIMD
            for (int c = 0; c < 16; c++) Ai[c0 + c] = -acc[c];
        }
        Ai[i] = 1.0f;
    }
}

/* OpenBLAS's small-matrix path takes M·N·K <= 100³ (kernel/x86_64/sgemm_small_kernel_permit_skylakex.c) */
#define GDN2_SMALL_MNK 1.0e6

void gdn2_chunk_sgemm(const gdn2_chunk_ws *w, int transA, int transB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    int nb = N;
    /* row-major NT (column-major TN) with a result of more than 1200 elements is never taken: no split */
    while (w->small && !transB && (double)M * (double)nb * (double)K > GDN2_SMALL_MNK && nb > 16) nb = ((nb + 1) / 2 + 15) & ~15;
    for (int j = 0; j < N; j += nb) {
        const int wj = N - j < nb ? N - j : nb;
        gdn2_sgemm(transA, transB, M, wj, K, alpha, A, lda, transB ? B + (size_t)j * ldb : B + j, ldb, beta, C + j,
                   ldc);
    }
}

/* C (n x N) = alpha·L B + beta·C with L (n x n, row stride ldl) lower triangular: with w->tri the rows
 * [0, hh) sum over [0, hh) only (hh ~ n/2, a multiple of 16), skipping L's zero quarter */
void gdn2_chunk_sgemm_lower(const gdn2_chunk_ws *w, int n, int N, float alpha, const float *L, int ldl, const float *B,
                            int ldb, float beta, float *C, int ldc) {
    if (w->tri && n >= 32) {
        const int hh = gdn2_chunk_half(n);
        gdn2_chunk_sgemm(w, 0, 0, hh, N, hh, alpha, L, ldl, B, ldb, beta, C, ldc);
        gdn2_chunk_sgemm(w, 0, 0, n - hh, N, n, alpha, L + (size_t)hh * ldl, ldl, B, ldb, beta, C + (size_t)hh * ldc,
                         ldc);
    } else {
        gdn2_chunk_sgemm(w, 0, 0, n, N, n, alpha, L, ldl, B, ldb, beta, C, ldc);
    }
}

/* (F4) [Y | U] = A [Ē | Z];  (F5) R = U − Y S */
void gdn2_chunk_wy(gdn2_chunk_ws *w, int64_t K, int64_t V, int n, const float *S) {
    const int KV = (int)(K + V);
    gdn2_chunk_sgemm_lower(w, n, KV, 1.0f, w->A, GDN2_C, w->EZ, KV, 0.0f, w->YU, KV);
    gdn2_chunk_sgemm(w, 0, 0, n, (int)V, (int)K, -1.0f, w->YU, KV, S, (int)V, 1.0f, w->R, KV);
}

/* (F7) Sn <- Diag(γ_last) S + kgᵀ R (Sn may be S) */
GDN2_VEC_CLONES void gdn2_chunk_state_next(gdn2_chunk_ws *w, int64_t K, int64_t V, int n, const float *S, float *Sn) {
    const float *gl = w->gam + (n - 1) * K;
    for (int64_t c = 0; c < K; c++) {
        const float *s = S + c * V;
        float *sn = Sn + c * V;
        const float f = gl[c];
        GDN2_SIMD
        for (int64_t j = 0; j < V; j++) sn[j] = s[j] * f;
    }
    gdn2_chunk_sgemm(w, 1, 0, (int)K, (int)V, n, 1.0f, w->kg, (int)K, w->R, (int)(K + V), 1.0f, Sn, (int)V);
}

void gdn2_chunk_state_update(gdn2_chunk_ws *w, int64_t K, int64_t V, int n, float *S) {
    gdn2_chunk_state_next(w, K, V, n, S, S);
}

size_t gdn2_chunk_saved_rec_floats(int64_t K, int64_t V) {
    const size_t C = GDN2_C;
    return (size_t)(K * V) + (gdn2_chunk_bwd_cache_ok(K, V) ? C * (size_t)(K + V) + 2 * C * C : 0);
}

int64_t *gdn2_chunk_saved_offsets(const gdn2_dims *d, const gdn2_opts *o) {
    const int64_t N = gdn2_num_states(d, o);
    int64_t *cb = gdn2_malloc((size_t)(N + 1) * sizeof(int64_t), "saved-forward chunk offsets");
    if (!cb) return NULL;
    cb[0] = 0;
    for (int64_t n = 0; n < N; n++) {
        int64_t bos, len;
        gdn2_seq_range(d, o, n, &bos, &len);
        cb[n + 1] = cb[n] + (len + GDN2_C - 1) / GDN2_C;
    }
    return cb;
}

size_t gdn2_chunk_saved_size(const gdn2_dims *d, const gdn2_opts *o) {
    if (!d || !o || gdn2_check(d, o) != GDN2_OK) return 0;
    int64_t *cb = gdn2_chunk_saved_offsets(d, o);
    if (!cb) return 0;
    const size_t n = (size_t)cb[gdn2_num_states(d, o)] * (size_t)d->HV * gdn2_chunk_saved_rec_floats(d->K, d->V);
    free(cb);
    return n * sizeof(float);
}

/* ---- setup and workspace of the chunk ops (chunk_fwd.c, chunk_bwd.c) ---------------------- */
float *gdn2_chunk_thread_ws(gdn2_chunk_ws *w, float *ws, size_t per, int64_t K, int64_t V) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    return gdn2_chunk_ws_init(w, ws + (size_t)tid * per, K, V);
}

/* The forward pass of the backward keeps, besides the chunk-start states, each chunk's A and
 * [Y | R] when that costs at most about as much memory as the states themselves
 * (C·(K+V) + C² <= 3·K·V, e.g. K = V >= 64): the reverse pass then skips the solve, the T scores
 * and the two WY products. */
int gdn2_chunk_bwd_cache_ok(int64_t K, int64_t V) {
    const int64_t C = GDN2_C;
    return C * (K + V) + C * C <= 3 * K * V;
}

/* floats of the backward's per-thread buffers beyond gdn2_chunk_ws: what bwd_ws_init (chunk_bwd.c)
 * carves, each buffer rounded up to 16 floats */
size_t gdn2_chunk_bwd_extra_floats(int64_t K, int64_t V, int64_t max_len) {
    const size_t C = GDN2_C, NT = (size_t)((max_len + GDN2_C - 1) / GDN2_C);
    const size_t cache = gdn2_chunk_bwd_cache_ok(K, V) ? NT * (C * (size_t)(K + V) + C * C) + 16 : 0;
    const size_t bt = (size_t)(K * V) > C * (size_t)(K + V) ? (size_t)(K * V) : C * (size_t)(K + V);
    return cache + (NT + 2) * (size_t)(K * V) + 3 * C * (size_t)(K + V) + 4 * C * C + 8 * C * (size_t)K + C +
           (size_t)K + bt + 25 * 16;
}

/* tasks of the forward: (sequence, value head); of the backward: (sequence, key head) */
static int64_t n_tasks(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    return gdn2_num_states(d, o) * (backward ? d->H : d->HV);
}

int64_t gdn2_chunk_max_seq_len(const gdn2_dims *d, const gdn2_opts *o) {
    if (!o->cu_seqlens) return d->T;
    int64_t m = 0;
    for (int64_t i = 0; i < o->n_seqs; i++) {
        int64_t l = o->cu_seqlens[i + 1] - o->cu_seqlens[i];
        if (l > m) m = l;
    }
    return m;
}

/* threads actually used: the requested count, capped by the number of tasks */
int gdn2_chunk_threads(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    int64_t nt = gdn2_threads(o->n_threads), tasks = n_tasks(d, o, backward);
    if (nt > tasks) nt = tasks;
    return nt < 1 ? 1 : (int)nt;
}

size_t gdn2_chunk_per_thread_floats(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    size_t f = gdn2_chunk_ws_floats(d->K, d->V);
    if (backward) f += gdn2_chunk_bwd_extra_floats(d->K, d->V, gdn2_chunk_max_seq_len(d, o));
    return f + 16;
}

size_t gdn2_chunk_workspace_size(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    if (!d || !o || gdn2_check(d, o) != GDN2_OK) return 0;
    return (size_t)gdn2_chunk_threads(d, o, backward) * gdn2_chunk_per_thread_floats(d, o, backward) *
           sizeof(float);
}

/* Shared argument checks of the chunk ops; fills the flattened args. */
int gdn2_chunk_setup(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                     gdn2_chunk_args *a) {
    int st = gdn2_check(d, o);
    if (st) return st;
    if (!t) return gdn2_error(GDN2_ERR_ARG, "%s: tensors must not be NULL", fn);
    const char *miss = !t->q ? "q" : !t->k ? "k" : !t->v ? "v" : !t->g ? "g" : NULL;
    if (!miss && !a->beta) miss = !t->b ? "b" : !t->w ? "w" : NULL;
    if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: input tensor '%s' is NULL", fn, miss);
    if (d->K > 4096 || d->V > 4096)
        return gdn2_error(GDN2_ERR_ARG, "%s: K=%lld V=%lld exceed 4096", fn, (long long)d->K, (long long)d->V);
    a->H = d->H;
    a->HV = d->HV;
    a->K = d->K;
    a->V = d->V;
    a->G = d->HV / d->H;
    a->scale = gdn2_scale(d, o);
    a->l2norm = o->qk_l2norm != 0;
    a->gate = o->gate_in_kernel != 0;
    a->lb = o->gate_in_kernel ? o->lower_bound : 0.0f;
    a->q = t->q;
    a->k = t->k;
    a->v = t->v;
    a->g = t->g;
    a->b = t->b;
    a->w = t->w;
    a->A_log = t->A_log;
    a->dt_bias = t->dt_bias;
    return GDN2_OK;
}

/* Workspace: the caller's (checked for size) or a fresh allocation (*owned set). */
float *gdn2_chunk_workspace(const char *fn, const gdn2_opts *o, size_t need, float **owned) {
    *owned = NULL;
    if (o->workspace) {
        if (o->workspace_size < need) {
            gdn2_error(GDN2_ERR_ARG, "%s: workspace of %zu bytes is smaller than the %zu bytes needed "
                       "(gdn2_chunk_workspace_size)", fn, o->workspace_size, need);
            return NULL;
        }
        return (float *)o->workspace;
    }
    *owned = gdn2_malloc(need, "chunk workspace");
    return *owned;
}
