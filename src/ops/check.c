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

/* A branch-free pass over blocks of SCAN elements ORs the verdicts together, on the bit patterns
 * (integer compares vectorise; float compares do not, under the default trapping math): x is NaN
 * or ±inf when its exponent bits are all ones, and x > 0 (a positive log-decay, +inf or a
 * positive NaN) when its bits read as a signed integer are > 0. Only a block that failed is walked
 * again, for the position of the first bad element. */
#define SCAN 4096
/* Blocks are spread over the op's threads from this many on (1M elements); below, one thread. */
#define PAR_MIN_BLOCKS 256
#define PRAGMA_(x) _Pragma(#x)
#ifdef _OPENMP
#define SIMD_OR(v) PRAGMA_(omp simd reduction(| : v))
#define PAR_MIN(v, nt) PRAGMA_(omp parallel for schedule(static) num_threads(nt) reduction(min : v) if (nt > 1))
#else
#define SIMD_OR(v)
#define PAR_MIN(v, nt)
#endif
#define DEFINE_CHECK(NAME, T, I, EXP, IMAX)                                                             \
    static int NAME##_bad(const T *y, size_t n, int nonpos) {                                           \
        const I pmax = nonpos ? 0 : IMAX; /* bits > pmax: x > 0 */                                      \
        int bad = 0;                                                                                    \
        SIMD_OR(bad)                                                                                    \
        for (size_t i = 0; i < n; i++) {                                                                \
            I u;                                                                                        \
            memcpy(&u, y + i, sizeof u);                                                                \
            bad |= ((u & EXP) == EXP) | (u > pmax);                                                     \
        }                                                                                               \
        return bad;                                                                                     \
    }                                                                                                   \
    int NAME(const char *fn, const char *name, const T *x, int ndim, const int64_t *shape, size_t first, \
             size_t count, int nonpos, int n_threads) {                                                 \
        if (!x || !count) return GDN2_OK;                                                               \
        const T *p = x + first;                                                                         \
        const int64_t nblk = (int64_t)((count - 1) / SCAN + 1);                                         \
        const int nt = nblk >= PAR_MIN_BLOCKS ? gdn2_threads(n_threads) : 1;                            \
        int64_t fb = nblk; /* first block with a bad element */                                         \
        (void)nt;                                                                                       \
        PAR_MIN(fb, nt)                                                                                 \
        for (int64_t bi = 0; bi < nblk; bi++) {                                                         \
            const size_t b0 = (size_t)bi * SCAN, n = count - b0 < SCAN ? count - b0 : SCAN;             \
            if (bi < fb && NAME##_bad(p + b0, n, nonpos)) fb = bi;                                      \
        }                                                                                               \
        if (fb == nblk) return GDN2_OK;                                                                 \
        const size_t b0 = (size_t)fb * SCAN, n = count - b0 < SCAN ? count - b0 : SCAN;                 \
        for (size_t i = 0; i < n; i++)                                                                  \
            if (NAME##_bad(p + b0 + i, 1, nonpos))                                                      \
                return value_error(fn, name, first + b0 + i, (double)p[b0 + i], ndim, shape);           \
        return GDN2_OK; /* not reached */                                                               \
    }
DEFINE_CHECK(gdn2_check_tensor_values, float, int32_t, (int32_t)0x7f800000, INT32_MAX)
DEFINE_CHECK(gdn2_check_tensor_values_f64, double, int64_t, (int64_t)0x7ff0000000000000, INT64_MAX)

/* Both precisions: the same list of tensors. */
#define CHECK_ALL(CHK)                                                                                     \
    do {                                                                                                   \
        const int64_t B = d->B, T = d->T, N = gdn2_num_states(d, o);                                       \
        const int64_t sq[4] = {B, T, d->H, d->K}, sv[4] = {B, T, d->HV, d->V}, ss[4] = {N, d->HV, d->K, d->V}; \
        const int64_t sa[1] = {d->H}, sd[1] = {d->H * d->K};                                               \
        const size_t nq = (size_t)(B * T * d->H * d->K), nv = (size_t)(B * T * d->HV * d->V);              \
        const size_t ns = (size_t)(N * d->HV * d->K * d->V);                                               \
        const int gate = o->gate_in_kernel != 0, nt = o->n_threads;                                        \
        int rc_;                                                                                           \
        if (t) {                                                                                           \
            if ((rc_ = CHK(fn, "q", t->q, 4, sq, 0, nq, 0, nt)) || (rc_ = CHK(fn, "k", t->k, 4, sq, 0, nq, 0, nt)) ||  \
                (rc_ = CHK(fn, "v", t->v, 4, sv, 0, nv, 0, nt)) ||                                             \
                (rc_ = CHK(fn, "g", t->g, 4, sq, 0, nq, !gate, nt)) ||                                         \
                (rc_ = CHK(fn, "b", t->b, 4, sq, 0, nq, 0, nt)) || (rc_ = CHK(fn, "w", t->w, 4, sv, 0, nv, 0, nt)) ||  \
                (rc_ = CHK(fn, "h0", t->h0, 4, ss, 0, ns, 0, nt)))                                             \
                return rc_;                                                                                \
            if (gate && ((rc_ = CHK(fn, "A_log", t->A_log, 1, sa, 0, (size_t)d->H, 0, nt)) ||                 \
                         (rc_ = CHK(fn, "dt_bias", t->dt_bias, 1, sd, 0, (size_t)(d->H * d->K), 0, nt))))      \
                return rc_;                                                                                \
        }                                                                                                  \
        if (g && ((rc_ = CHK(fn, "do", g->d_o, 4, sv, 0, nv, 0, nt)) || (rc_ = CHK(fn, "dht", g->dht, 4, ss, 0, ns, 0, nt)))) \
            return rc_;                                                                                    \
        return GDN2_OK;                                                                                    \
    } while (0)

int gdn2_check_values(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                      const gdn2_bwd_tensors *g) {
    CHECK_ALL(gdn2_check_tensor_values);
}

int gdn2_check_beta_values(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                           const float *beta, int scalar_g) {
    gdn2_fwd_tensors rest = *t;
    rest.b = rest.w = NULL;
    if (scalar_g) rest.g = NULL;
    int rc = gdn2_check_values(fn, d, o, &rest, NULL);
    if (rc) return rc;
    const int64_t sb[3] = {d->B, d->T, d->H};
    const size_t nb = (size_t)(d->B * d->T * d->H);
    if ((rc = gdn2_check_tensor_values(fn, "beta", beta, 3, sb, 0, nb, 0, o->n_threads))) return rc;
    return scalar_g ? gdn2_check_tensor_values(fn, "g", t->g, 3, sb, 0, nb, !o->gate_in_kernel, o->n_threads) : GDN2_OK;
}

int gdn2_check_values_f64(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t,
                          const gdn2_bwd_tensors_f64 *g) {
    CHECK_ALL(gdn2_check_tensor_values_f64);
}

int gdn2_check_inputs(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const gdn2_bwd_tensors *g) {
    int rc = gdn2_check(d, o);
    return rc ? rc : gdn2_check_values(NULL, d, o, t, g);
}

int gdn2_check_inputs_f64(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t,
                          const gdn2_bwd_tensors_f64 *g) {
    int rc = gdn2_check(d, o);
    return rc ? rc : gdn2_check_values_f64(NULL, d, o, t, g);
}
