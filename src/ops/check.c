/* Validation of dims, options and input values, shared by every implementation (CPU, CUDA,
 * reference). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

int64_t gdn2_num_states(const gdn2_dims *d, const gdn2_opts *o) {
    return (o && o->cu_seqlens) ? o->n_seqs : d->B;
}

float gdn2_scale(const gdn2_dims *d, const gdn2_opts *o) {
    return (o && o->scale != 0.0f) ? o->scale : (float)(1.0 / sqrt((double)d->K));
}

/* *out = the product of the n factors, 0 when it overflows size_t or when the bytes of that many
 * float64 elements would not fit in int64 (the kernels index with int64_t). */
static int elems_ok(const int64_t *f, int n, size_t *out) {
    size_t p = 1, bytes;
    for (int i = 0; i < n; i++)
        if (!gdn2_mul_sz(p, (size_t)f[i], &p)) return 0;
    if (!gdn2_mul_sz(p, sizeof(double), &bytes) || bytes > (size_t)INT64_MAX) return 0;
    *out = p;
    return 1;
}

int gdn2_check(const gdn2_dims *d, const gdn2_opts *o) {
    if (!d || !o) return gdn2_error(GDN2_ERR_ARG, "gdn2_check: dims and opts must not be NULL");
    if (d->B < 1 || d->T < 0 || d->H < 1 || d->HV < 1 || d->K < 1 || d->V < 1)
        return gdn2_error(GDN2_ERR_ARG,
                          "invalid dims B=%lld T=%lld H=%lld HV=%lld K=%lld V=%lld (all >= 1, T >= 0)",
                          (long long)d->B, (long long)d->T, (long long)d->H, (long long)d->HV,
                          (long long)d->K, (long long)d->V);
    /* each dimension on its own: a zero T (an empty batch) must not let the others grow unchecked */
    {
        const char *nm[6] = {"B", "T", "H", "HV", "K", "V"};
        const int64_t v[6] = {d->B, d->T, d->H, d->HV, d->K, d->V};
        for (int i = 0; i < 6; i++)
            if (v[i] > GDN2_MAX_DIM)
                return gdn2_error(GDN2_ERR_ARG, "dims: %s=%lld exceeds the limit %lld", nm[i], (long long)v[i],
                                  (long long)GDN2_MAX_DIM);
    }
    if (d->HV % d->H != 0)
        return gdn2_error(GDN2_ERR_ARG, "HV=%lld value heads is not a multiple of H=%lld key heads",
                          (long long)d->HV, (long long)d->H);
    /* token rows are [H*K] and [HV*V] floats; their strides go to the GEMMs as int */
    if (d->H * d->K > GDN2_MAX_DIM || d->HV * d->V > GDN2_MAX_DIM)
        return gdn2_error(GDN2_ERR_ARG, "dims: a token row of H*K=%lld or HV*V=%lld floats exceeds the limit %lld",
                          (long long)(d->H * d->K), (long long)(d->HV * d->V), (long long)GDN2_MAX_DIM);
    if (!isfinite(o->scale) || o->scale < 0.0f)
        return gdn2_error(GDN2_ERR_ARG, "scale=%g must be finite and >= 0 (0 = K^-1/2)", (double)o->scale);
    if (o->lower_bound != 0.0f) {
        if (!o->gate_in_kernel)
            return gdn2_error(GDN2_ERR_ARG, "lower_bound=%g needs gate_in_kernel", (double)o->lower_bound);
        if (!(o->lower_bound >= -5.0f && o->lower_bound < 0.0f))
            return gdn2_error(GDN2_ERR_ARG, "lower_bound=%g must lie in [-5, 0)", (double)o->lower_bound);
    }
    if (o->cu_seqlens) {
        if (d->B != 1)
            return gdn2_error(GDN2_ERR_ARG, "cu_seqlens requires B=1 (got B=%lld)", (long long)d->B);
        if (o->n_seqs < 1 || o->n_seqs > GDN2_MAX_DIM)
            return gdn2_error(GDN2_ERR_ARG, "cu_seqlens needs n_seqs in [1, %lld] (got %lld)", (long long)GDN2_MAX_DIM,
                              (long long)o->n_seqs);
        if (o->cu_seqlens[0] != 0)
            return gdn2_error(GDN2_ERR_ARG, "cu_seqlens[0]=%lld, expected 0", (long long)o->cu_seqlens[0]);
        for (int64_t i = 0; i < o->n_seqs; i++)
            if (o->cu_seqlens[i + 1] < o->cu_seqlens[i])
                return gdn2_error(GDN2_ERR_ARG, "cu_seqlens is not non-decreasing: cu_seqlens[%lld]=%lld < cu_seqlens[%lld]=%lld",
                                  (long long)(i + 1), (long long)o->cu_seqlens[i + 1], (long long)i,
                                  (long long)o->cu_seqlens[i]);
        if (o->cu_seqlens[o->n_seqs] != d->T)
            return gdn2_error(GDN2_ERR_ARG, "cu_seqlens[%lld]=%lld must equal T=%lld", (long long)o->n_seqs,
                              (long long)o->cu_seqlens[o->n_seqs], (long long)d->T);
    }
    /* the tensors' element counts (T counted as at least 1, so that the bounds do not depend on
     * whether the batch happens to be empty) */
    const int64_t T1 = d->T > 0 ? d->T : 1, N = gdn2_num_states(d, o);
    const int64_t fq[4] = {d->B, T1, d->H, d->K}, fv[4] = {d->B, T1, d->HV, d->V}, fs[4] = {N, d->HV, d->K, d->V};
    size_t nq, nv, ns;
    if (!elems_ok(fq, 4, &nq) || !elems_ok(fv, 4, &nv) || !elems_ok(fs, 4, &ns))
        return gdn2_error(GDN2_ERR_ARG,
                          "dims B=%lld T=%lld H=%lld HV=%lld K=%lld V=%lld N=%lld: a tensor of [B,T,H,K], [B,T,HV,V] or "
                          "[N,HV,K,V] elements is too large to address (its float64 bytes overflow int64)",
                          (long long)d->B, (long long)d->T, (long long)d->H, (long long)d->HV, (long long)d->K,
                          (long long)d->V, (long long)N);
    return GDN2_OK;
}

/* ---- input values --------------------------------------------------------------------------- */

/* "[0,17,1,3]": the index of flat element i of a tensor of shape shape[0..ndim) */
static const char *index_str(size_t i, int ndim, const int64_t *shape, char *buf, size_t len) {
    int64_t idx[8] = {0};
    for (int a = ndim - 1; a >= 0; a--) {
        const size_t s = shape[a] > 0 ? (size_t)shape[a] : 1;
        idx[a] = (int64_t)(i % s);
        i /= s;
    }
    return gdn2_shape_str(ndim, idx, buf, len);
}

static int value_error(const char *fn, const char *name, size_t i, double x, int ndim, const int64_t *shape) {
    char is[160], ss[160];
    index_str(i, ndim, shape, is, sizeof is);
    gdn2_shape_str(ndim, shape, ss, sizeof ss);
    if (isfinite(x)) /* finite and rejected: a positive log-decay */
        return gdn2_error(GDN2_ERR_ARG,
                          "%s%s%s%s = %.9g (shape %s): a log-decay must be <= 0 (decay exp(g) <= 1) unless the gate "
                          "is computed in the kernel (gate_in_kernel)",
                          fn ? fn : "", fn ? ": " : "", name, is, x, ss);
    return gdn2_error(GDN2_ERR_ARG, "%s%s%s%s = %g (shape %s): inputs must be finite", fn ? fn : "", fn ? ": " : "",
                      name, is, x, ss);
}

/* The scan. A branch-free pass over blocks of SCAN elements ORs the verdicts together on the bit
 * patterns (integer compares vectorise; float compares do not, under the default trapping math):
 * x is NaN or ±inf when its exponent bits are all ones, and x > 0 (a positive log-decay, +inf or a
 * positive NaN) when its bits read as a signed integer are > 0. Only the first block that failed
 * is walked again, for the position of the first bad element. All the tensors of a call are one
 * list of blocks, scanned in one parallel region (one barrier per call: on a loaded machine each
 * barrier can cost a time slice) when there are at least PAR_MIN_BLOCKS, else by one thread. */
#define SCAN 4096
#define PAR_MIN_BLOCKS 1024 /* 4M elements */
#define MAX_ITEMS 12
#define PRAGMA_(x) _Pragma(#x)
#ifdef _OPENMP
#define SIMD_OR(v) PRAGMA_(omp simd reduction(| : v))
#define PAR_MIN(v, nt) PRAGMA_(omp parallel for schedule(static) num_threads(nt) reduction(min : v) if (nt > 1))
#else
#define SIMD_OR(v)
#define PAR_MIN(v, nt)
#endif

/* compiled for baseline x86-64, x86-64-v3 and x86-64-v4 (8- / 16-wide integer compares), as the chunk kernels'
 * element-wise functions (chunk_common.h) */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && !defined(__AVX2__)
#define SCAN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SCAN_CLONES
#endif
#define DEFINE_BAD(NAME, T, I, EXP, IMAX)                                                               \
    SCAN_CLONES static int NAME(const T *y, size_t n, int nonpos) {                                                 \
        const I pmax = nonpos ? 0 : IMAX; /* bits > pmax: x > 0 */                                      \
        int bad = 0;                                                                                    \
        SIMD_OR(bad)                                                                                    \
        for (size_t i = 0; i < n; i++) {                                                                \
            I u;                                                                                        \
            memcpy(&u, y + i, sizeof u);                                                                \
            bad |= ((u & EXP) == EXP) | (u > pmax);                                                     \
        }                                                                                               \
        return bad;                                                                                     \
    }
DEFINE_BAD(bad_f32, float, int32_t, (int32_t)0x7f800000, INT32_MAX)
DEFINE_BAD(bad_f64, double, int64_t, (int64_t)0x7ff0000000000000, INT64_MAX)

/* one tensor (or a range of it) to scan */
typedef struct {
    const char *name;
    const void *x;        /* float or double; NULL: skipped */
    int ndim;
    const int64_t *shape;
    size_t first, count;  /* elements [first, first + count) */
    int nonpos;           /* also refuse x > 0 */
} scan_item;

static int block_bad(const scan_item *it, int f64, size_t b0, size_t n) {
    return f64 ? bad_f64((const double *)it->x + it->first + b0, n, it->nonpos)
               : bad_f32((const float *)it->x + it->first + b0, n, it->nonpos);
}

/* GDN2_OK, or GDN2_ERR_ARG naming the first bad element (in list order, then index order) */
static int scan(const char *fn, const scan_item *it, int n_items, int f64, int n_threads) {
    int64_t start[MAX_ITEMS + 1] = {0}; /* global block index of each item's first block */
    for (int i = 0; i < n_items; i++)
        start[i + 1] = start[i] + (it[i].x && it[i].count ? (int64_t)((it[i].count - 1) / SCAN + 1) : 0);
    const int64_t nblk = start[n_items];
    const int nt = nblk >= PAR_MIN_BLOCKS ? gdn2_threads(n_threads) : 1;
    int64_t fb = nblk; /* first bad block */
    (void)nt;
    PAR_MIN(fb, nt)
    for (int64_t gb = 0; gb < nblk; gb++) {
        if (gb >= fb) continue; /* a block before it already failed (this thread's blocks ascend) */
        int i = 0;
        while (start[i + 1] <= gb) i++;
        const size_t b0 = (size_t)(gb - start[i]) * SCAN, n = it[i].count - b0 < SCAN ? it[i].count - b0 : SCAN;
        if (block_bad(&it[i], f64, b0, n)) fb = gb;
    }
    if (fb == nblk) return GDN2_OK;
    int i = 0;
    while (start[i + 1] <= fb) i++;
    const size_t b0 = (size_t)(fb - start[i]) * SCAN, n = it[i].count - b0 < SCAN ? it[i].count - b0 : SCAN;
    for (size_t j = b0; j < b0 + n; j++)
        if (block_bad(&it[i], f64, j, 1)) {
            const size_t at = it[i].first + j;
            const double x = f64 ? ((const double *)it[i].x)[at] : (double)((const float *)it[i].x)[at];
            return value_error(fn, it[i].name, at, x, it[i].ndim, it[i].shape);
        }
    return GDN2_OK; /* not reached */
}

int gdn2_check_tensor_values(const char *fn, const char *name, const float *x, int ndim, const int64_t *shape,
                             size_t first, size_t count, int nonpos, int n_threads) {
    const scan_item it = {name, x, ndim, shape, first, count, nonpos};
    return scan(fn, &it, 1, 0, n_threads);
}

int gdn2_check_tensor_values_f64(const char *fn, const char *name, const double *x, int ndim,
                                 const int64_t *shape, size_t first, size_t count, int nonpos, int n_threads) {
    const scan_item it = {name, x, ndim, shape, first, count, nonpos};
    return scan(fn, &it, 1, 1, n_threads);
}

/* The inputs of one call, both precisions (T = fwd tensors, G = bwd tensors, NULL = none): q, k,
 * v, g, b, w, h0, then A_log, dt_bias with the gate in kernel, then do, dht. */
#define LIST_INPUTS(TS, GS)                                                                                 \
    const int64_t B_ = d->B, T_ = d->T, N_ = gdn2_num_states(d, o);                                       \
    const int64_t sq[4] = {B_, T_, d->H, d->K}, sv[4] = {B_, T_, d->HV, d->V}, ss[4] = {N_, d->HV, d->K, d->V}; \
    const int64_t sa[1] = {d->H}, sd[1] = {d->H * d->K};                                                  \
    const size_t nq = (size_t)(B_ * T_ * d->H * d->K), nv = (size_t)(B_ * T_ * d->HV * d->V);             \
    const size_t ns = (size_t)(N_ * d->HV * d->K * d->V), na = (size_t)d->H, nd = (size_t)(d->H * d->K);  \
    const int gate = o->gate_in_kernel != 0;                                                              \
    scan_item it[MAX_ITEMS];                                                                              \
    int n = 0;                                                                                            \
    if (TS) {                                                                                              \
        it[n++] = (scan_item){"q", (TS)->q, 4, sq, 0, nq, 0};                                              \
        it[n++] = (scan_item){"k", (TS)->k, 4, sq, 0, nq, 0};                                              \
        it[n++] = (scan_item){"v", (TS)->v, 4, sv, 0, nv, 0};                                              \
        it[n++] = (scan_item){"g", (TS)->g, 4, sq, 0, nq, !gate};                                          \
        it[n++] = (scan_item){"b", (TS)->b, 4, sq, 0, nq, 0};                                              \
        it[n++] = (scan_item){"w", (TS)->w, 4, sv, 0, nv, 0};                                              \
        it[n++] = (scan_item){"h0", (TS)->h0, 4, ss, 0, ns, 0};                                            \
        if (gate) {                                                                                       \
            it[n++] = (scan_item){"A_log", (TS)->A_log, 1, sa, 0, na, 0};                                  \
            it[n++] = (scan_item){"dt_bias", (TS)->dt_bias, 1, sd, 0, nd, 0};                              \
        }                                                                                                 \
    }                                                                                                     \
    if (GS) {                                                                                              \
        it[n++] = (scan_item){"do", (GS)->d_o, 4, sv, 0, nv, 0};                                           \
        it[n++] = (scan_item){"dht", (GS)->dht, 4, ss, 0, ns, 0};                                          \
    }

static int scan_inputs(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                       const gdn2_bwd_tensors *g) {
    LIST_INPUTS(t, g)
    return scan(fn, it, n, 0, o->n_threads);
}

static int scan_inputs_f64(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t,
                           const gdn2_bwd_tensors_f64 *g) {
    LIST_INPUTS(t, g)
    return scan(fn, it, n, 1, o->n_threads);
}

/* the entry points' checks: skipped when the caller vouches for the values (o->trust_values) */
int gdn2_check_values(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                      const gdn2_bwd_tensors *g) {
    return o->trust_values ? GDN2_OK : scan_inputs(fn, d, o, t, g);
}

int gdn2_check_values_f64(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t,
                          const gdn2_bwd_tensors_f64 *g) {
    return o->trust_values ? GDN2_OK : scan_inputs_f64(fn, d, o, t, g);
}

int gdn2_check_values_rest(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                           const gdn2_bwd_tensors *g) {
    if (o->trust_values) return GDN2_OK;
    gdn2_fwd_tensors rest = *t;
    rest.q = rest.k = rest.v = rest.g = rest.b = rest.w = NULL; /* checked by the kernel's load */
    const gdn2_fwd_tensors *tr = &rest;
    {
        LIST_INPUTS(tr, g)
        if (scan(fn, it, n, 0, o->n_threads) == GDN2_OK) return GDN2_OK;
    }
    return scan_inputs(fn, d, o, t, g); /* the error of the full scan: first bad tensor in list order */
}

int gdn2_check_beta_values(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                           const float *beta, int scalar_g) {
    if (o->trust_values) return GDN2_OK;
    gdn2_fwd_tensors rest = *t;
    rest.b = rest.w = NULL; /* ignored by the collapse calls */
    if (scalar_g) rest.g = NULL;
    const gdn2_fwd_tensors *tr = &rest;
    const gdn2_bwd_tensors *none = NULL;
    LIST_INPUTS(tr, none)
    const int64_t sb[3] = {d->B, d->T, d->H};
    const size_t nb = (size_t)(d->B * d->T * d->H);
    it[n++] = (scan_item){"beta", beta, 3, sb, 0, nb, 0};
    if (scalar_g) it[n++] = (scan_item){"g", t->g, 3, sb, 0, nb, !gate};
    return scan(fn, it, n, 0, o->n_threads);
}

int gdn2_check_inputs(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const gdn2_bwd_tensors *g) {
    int rc = gdn2_check(d, o);
    return rc ? rc : scan_inputs(NULL, d, o, t, g);
}

int gdn2_check_inputs_f64(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t,
                          const gdn2_bwd_tensors_f64 *g) {
    int rc = gdn2_check(d, o);
    return rc ? rc : scan_inputs_f64(NULL, d, o, t, g);
}
