/* Per-chunk building blocks shared by the chunkwise forward (chunk_fwd.c) and backward
 * (chunk_bwd.c). Internal header (src/ops only). Equation numbers (F1.., B1..) refer to
 * docs/ALGORITHM.md.
 *
 * One chunk = n <= 64 consecutive tokens of one (sequence, value head hv); the key-side inputs come
 * from key head h = hv / (HV/H). All buffers are row-major with n rows; the workspace of one thread
 * (gdn2_chunk_ws) is carved out of one float array. */
#ifndef GDN2_OPS_CHUNK_COMMON_H
#define GDN2_OPS_CHUNK_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../util/internal.h"
#include "check.h"

#define GDN2_C GDN2_CHUNK
/* A diagonal score tile is computed with one GEMM, anchored at its first row, only when the
 * log-decay it spans (max over channels of the range of Σ g inside the tile) is at most this;
 * otherwise it is split in two (docs/ALGORITHM.md §3). e^{±24} keeps every factor far from fp32
 * overflow and underflow, and the rounding of the local sums at ~1.4e-6 relative. */
#define GDN2_SPAN_MAX 24.0f

/* `#pragma omp simd` on the element-wise loops (the default -O2 build does not vectorise loops of
 * unknown trip count on its own) */
#ifdef _OPENMP
#define GDN2_PRAGMA(x) _Pragma(#x)
#define GDN2_SIMD _Pragma("omp simd")
#define GDN2_SIMD_MAX(v) GDN2_PRAGMA(omp simd reduction(max : v))
#define GDN2_SIMD_SUM(v) GDN2_PRAGMA(omp simd reduction(+ : v))
#define GDN2_SIMD_OR(v) GDN2_PRAGMA(omp simd reduction(| : v))
#else
#define GDN2_SIMD_SUM(v)
#define GDN2_SIMD_OR(v)
#define GDN2_SIMD
#define GDN2_SIMD_MAX(v)
#endif

/* GCC if-converts the float selects of these element-wise loops (and so vectorises them) only
 * without trapping-math. FP exception flags are never inspected here; results do not change.
 * (This header is included by the chunk kernels only.) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

/* The element-wise functions are compiled three times, baseline x86-64, x86-64-v3 (AVX2+FMA) and
 * x86-64-v4 (AVX-512F/BW/DQ/VL), and the loader picks one for the machine (GCC function
 * multi-versioning, GCC >= 12): the default build stays portable and still uses 8- or 16-wide
 * vectors where the CPU has them. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && !defined(__AVX2__)
#define GDN2_VEC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GDN2_VEC_CLONES
#endif

/* exp in fp32, written to vectorise: Cody–Waite reduction x = n ln2 + r, degree-7 polynomial for
 * e^r (Cephes coefficients), 2^n through the exponent bits. Max relative error 8e-8 (1.3 ulp)
 * over [-87.3, 88]; 0 below -87.3 (no denormals), e^88 above 88, NaN passes through.
 * The clamp is written so that NaN lands on `hi` (a comparison with NaN is false): n is then
 * always an integer in [-126, 127], and its conversion to int32 is defined (converting a NaN
 * float to an integer is undefined behaviour in C); the NaN is put back by the last select. */
static inline float gdn2_fexp(float x) {
    const float hi = 88.0f, lo = -87.33654475f;
    float xc = x < hi ? x : hi;
    xc = xc > lo ? xc : lo;
    const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x log2 e) */
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    const float e = p * r * r + r + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)n + 127) << 23;
    const float res = e * u.f; /* computed unconditionally: the selects below stay branch-free */
    return x < lo ? 0.0f : (x == x ? res : x);
}

/* The value scan's test (check.c) on one element's bits u, for the chunk load: nonzero when the
 * float is NaN or ±inf (exponent bits all ones) or its bits as a signed integer exceed pmax (pmax =
 * 0: x > 0, a positive log-decay; INT32_MAX: never). Integer compares: vectorise in OR-reductions. */
static inline int32_t gdn2_bits(const float *x) {
    int32_t u;
    memcpy(&u, x, sizeof u);
    return u;
}
#define GDN2_BAD_BITS(u, pmax) ((((u) & 0x7f800000) == 0x7f800000) | ((u) > (pmax)))
/* gdn2_chunk_ws.check */
#define GDN2_CHECK_ALL 1
#define GDN2_CHECK_Q 2

/* the problem, flattened for the per-chunk code */
typedef struct {
    int64_t H, HV, K, V, G;            /* G = HV / H value heads per key head */
    float scale, lb;
    int l2norm, gate;
    const float *q, *k, *v, *g, *b, *w; /* inputs as passed */
    const float *A_log, *dt_bias;
    const float *beta;                  /* KDA mode: b = w = beta[t,h] ([B*T,H]); b, w unused */
} gdn2_chunk_args;

/* one score tile: rows [r0, r1) x cols [c0, c1) of Aqk / T, exp anchored at row `ref` */
typedef struct {
    int r0, r1, c0, c1, diag, fast; /* fast: the whole chunk as one tile anchored before row 0 */
} gdn2_tile;

/* per-thread scratch for one chunk; sizes in floats (C = 64) */
typedef struct {
    float *q, *k, *b, *g;      /* C x K: q̂, k̂ (normalised if l2norm), b, effective log-decay g */
    float *rq, *rk;            /* C: rstd of q and k (l2norm) */
    float *gam;                /* C x K: γ_r = exp(Σ_{i<=r} g_i)              (F1) */
    float *kgf;                /* C x K: exp(Σ_{r<i<=n-1} g_i)                (F1) */
    float *ig;                 /* C x K: 1/γ (fast path only) */
    int fast;                  /* the chunk's decay span is <= GDN2_SPAN_MAX: one score tile */
    int64_t V;
    float *qg, *kg, *bk;       /* C x K: q̂⊙γ, k̂⊙kgf, b⊙k̂ */
    float *EZ;                 /* C x (K+V): [Ē | Z], Ē = γ⊙b⊙k̂, Z = w⊙v      (F4) */
    float *YU;                 /* C x (K+V): [Y | U] = A [Ē | Z]              (F4) */
    float *R;                  /* C x V, row stride K+V: R = U − Y S0, in place of U in YU (F5) */
    float *Aqk, *A;            /* C x C: scaled scores (F2), T then (I+T)^-1 (F3) */
    float *Lr, *Lc;            /* tile operands: 2C x K rows, C x K cols */
    float *Sc;                 /* 2C x C: tile scores before they are scattered into Aqk / A */
    float *Fr, *Fc;            /* C x K: the tile's row and column exp factors */
    /* set by gdn2_tile_operands: the current tile's factors and row operands (pointers into the
     * buffers above, or into gam/ig/qg/EZ on the fast path) with their row strides; the q rows
     * still need the factor qalpha */
    const float *tFr, *tFc, *tLq, *tLb;
    int ldq, ldb;
    float qalpha;
    float *tmp;                /* C: solve row */
    gdn2_tile tiles[2 * GDN2_C];
    int n_tiles;
    float *S;                  /* K x V running state */
    int check;                 /* gdn2_chunk_load tests the input rows it reads (the value scan's test):
                                * GDN2_CHECK_ALL, or GDN2_CHECK_Q (the q rows only), or 0 */
    int skip_q;                /* gdn2_chunk_load leaves q̂, rq, qg alone and does not read q (the
                                * recomputing backward's state pass: no scores against q, no output) */
    int bad;                   /* ... and ORs the verdict in here (0 from gdn2_chunk_ws_init) */
    int small;                 /* gdn2_gemm_small_kernels(): shape the products for them (gdn2_chunk_sgemm) */
    int tri;                   /* the fast-path scores and [Y | U] = A [Ē | Z] skip the zero quarter of
                                * their triangle (rows split at ~n/2; set by the forward and the backward) */
} gdn2_chunk_ws;

size_t gdn2_chunk_ws_floats(int64_t K, int64_t V);
/* Carve a chunk workspace out of `mem` (gdn2_chunk_ws_floats floats); returns the first float after it. */
float *gdn2_chunk_ws_init(gdn2_chunk_ws *w, float *mem, int64_t K, int64_t V);
/* Inside an OpenMP region: gdn2_chunk_ws_init on the calling thread's slice of `per` floats of ws. */
float *gdn2_chunk_thread_ws(gdn2_chunk_ws *w, float *ws, size_t per, int64_t K, int64_t V);

/* Load chunk rows [tok0, tok0+n) (global token row index into the [B*T] axis) for key head h and
 * value head hv: q̂, k̂ (+rstd), b, g (gate applied), v⊙w, the cumulative-decay factors and the
 * derived rows qg, kg, bk, Ē, Z (F1, F4). */
void gdn2_chunk_load(gdn2_chunk_ws *w, const gdn2_chunk_args *a, int64_t tok0, int n, int64_t h, int64_t hv);
/* Hint the inputs of the next chunk into cache (the forward's; the backward does without). */
void gdn2_chunk_prefetch(const gdn2_chunk_args *a, int64_t tok0, int n, int64_t h, int64_t hv);

/* Plan the score tiles of the loaded chunk (recursive halving until each diagonal tile's decay
 * span is <= GDN2_SPAN_MAX; docs §3). */
void gdn2_chunk_plan(gdn2_chunk_ws *w, int64_t K, int n);
/* Scores of the loaded chunk (F2): when want_t, T (strictly lower, into w->A); when want_qk, Aqk
 * (lower with diagonal, scale included). Entries above the used triangle are zeroed. */
void gdn2_chunk_scores(gdn2_chunk_ws *w, int64_t K, int n, float scale, int want_qk, int want_t);
/* w->A <- (I + T)^-1 in place (unit lower triangular; forward substitution, F3). */
void gdn2_chunk_solve(gdn2_chunk_ws *w, int n);
/* gdn2_sgemm; when w->small, issued as column blocks (N halved, at least 16 wide) of at most 100³
 * multiply-adds each, NN and TN only: OpenBLAS's AVX-512 kernel sets run such products (never
 * row-major NT) through their small-matrix kernels, without packing, ~1.3–1.5x the rate of a
 * 64x128x128 product on the packed path (dev/cpu/NOTES.md §10). Every element of C gets the sum it
 * gets from one call of the same kernel (no split of the inner dimension). */
void gdn2_chunk_sgemm(const gdn2_chunk_ws *w, int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc);
/* where the products with a triangular operand split their rows: a multiple of 16 near n/2 */
static inline int gdn2_chunk_half(int n) { return (n / 2 + 15) & ~15; }
/* C (n x N) = alpha·L B + beta·C, L (n x n) lower triangular: with w->tri its zero quarter skipped */
void gdn2_chunk_sgemm_lower(const gdn2_chunk_ws *w, int n, int N, float alpha, const float *L, int ldl, const float *B,
                            int ldb, float beta, float *C, int ldc);
/* dst (cols x rows, row stride ldd) = srcᵀ (rows x cols, row stride lds) */
void gdn2_transpose(float *restrict dst, int64_t ldd, const float *restrict src, int64_t lds, int rows, int cols);
/* [Y | U] = A [Ē | Z]  (F4) and R = U − Y S  (F5, overwriting U; row stride K+V) with S (K x V). */
void gdn2_chunk_wy(gdn2_chunk_ws *w, int64_t K, int64_t V, int n, const float *S);
/* S <- Diag(γ_last) S + kgᵀ R  (F7), in place on S. */
void gdn2_chunk_state_update(gdn2_chunk_ws *w, int64_t K, int64_t V, int n, float *S);
/* the same out of place: Sn = Diag(γ_last) S + kgᵀ R (Sn == S allowed) */
void gdn2_chunk_state_next(gdn2_chunk_ws *w, int64_t K, int64_t V, int n, const float *S, float *Sn);

/* The saved forward (gdn2_chunk_fwd_save / gdn2_chunk_bwd_saved): one record per (sequence n,
 * value head hv, chunk ci), [S0 (K·V) | [Y | R], A, Aqk slot (C·(K+V) + 2·C², only when
 * gdn2_chunk_bwd_cache_ok)], at record index cb[n]·HV + hv·nch(n) + ci with cb[n] the number of
 * chunks of the sequences before n (gdn2_chunk_saved_offsets: cb[0..N], malloc'd, NULL when out
 * of memory). */
size_t gdn2_chunk_saved_rec_floats(int64_t K, int64_t V);
int64_t *gdn2_chunk_saved_offsets(const gdn2_dims *d, const gdn2_opts *o);

/* Operands of a tile (docs §3): row factors tFr (nr x K) = e^{D_r}, column factors tFc (nc x K) =
 * e^{E_s} with D_r + E_s = Σ_{s<i<=r} g_i; row operands tLq = q̂⊙e^D (times qscale, or times
 * qalpha = qscale still to apply on the fast path) and tLb = (b⊙k̂)⊙e^D; column operand
 * w->Lc = k̂⊙e^E (nc x K). Off the fast path tLq, tLb are stacked in w->Lr (q half only when
 * want_qk). */
void gdn2_tile_operands(gdn2_chunk_ws *w, int64_t K, const gdn2_tile *t, int want_qk, float qscale);

/* Thread control: while our OpenMP region runs, OpenBLAS must not start its own threads. */
int gdn2_blas_threads_begin(void);
void gdn2_blas_threads_end(int saved);

/* shared plumbing of chunk_fwd.c / chunk_bwd.c */
int gdn2_chunk_threads(const gdn2_dims *d, const gdn2_opts *o, int backward);
size_t gdn2_chunk_per_thread_floats(const gdn2_dims *d, const gdn2_opts *o, int backward);
/* the longest sequence: T, or the longest cu_seqlens range */
int64_t gdn2_chunk_max_seq_len(const gdn2_dims *d, const gdn2_opts *o);
/* whether the backward keeps each chunk's A and [Y | R] (else it recomputes them) */
int gdn2_chunk_bwd_cache_ok(int64_t K, int64_t V);
size_t gdn2_chunk_bwd_extra_floats(int64_t K, int64_t V, int64_t max_len);
int gdn2_chunk_setup(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                     gdn2_chunk_args *a);
float *gdn2_chunk_workspace(const char *fn, const gdn2_opts *o, size_t need, float **owned);

/* The chunk forward with KDA's scalar beta [B,T,H] read directly (b = w = beta broadcast over the
 * channels) instead of expanded b / w tensors; for the collapse entry points (collapse.c), which
 * check the values (gdn2_check_beta_values) before calling it. */
int gdn2_chunk_fwd_beta(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta);

/* token range of sequence n in the flattened [B*T] axis */
static inline void gdn2_seq_range(const gdn2_dims *d, const gdn2_opts *o, int64_t n, int64_t *bos, int64_t *len) {
    if (o->cu_seqlens) {
        *bos = o->cu_seqlens[n];
        *len = o->cu_seqlens[n + 1] - o->cu_seqlens[n];
    } else {
        *bos = n * d->T;
        *len = d->T;
    }
}

#endif
