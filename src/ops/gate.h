/* Small shared helpers of the CPU ops: the decay gate and the q/k L2 norm, in float and double.
 * Internal header (src/ops only). */
#ifndef GDN2_OPS_GATE_H
#define GDN2_OPS_GATE_H

#include <math.h>
#include <stdint.h>

#include "../util/act.h"
#include "../util/internal.h"

#define GDN2_L2NORM_EPS 1e-6

/* torch softplus (beta 1, threshold 20): x above 20 is passed through. */
static inline double gdn2_softplus_f64(double x) { return x > 20.0 ? x : log1p(exp(x)); }
static inline double gdn2_sigmoid_f64(double x) { return 1.0 / (1.0 + exp(-x)); }

/* In-kernel gate for channel c of key head h, u = f + dt_bias[h*K+c], a = exp(A_log[h]):
 *   default:      g = -a * softplus(u)
 *   lower bound:  g = lb * sigmoid(a * u)          (lb < 0) */
static inline double gdn2_gate_f64(double f, double A_log, double dt_bias, double lb) {
    double a = exp(A_log), u = f + dt_bias;
    return lb < 0.0 ? lb * gdn2_sigmoid_f64(a * u) : -a * gdn2_softplus_f64(u);
}
static inline float gdn2_gate_f32(float f, float A_log, float dt_bias, float lb) {
    float a = expf(A_log), u = f + dt_bias;
    return lb < 0.0f ? lb * gdn2_sigmoid_f32(a * u) : -a * gdn2_softplus_f32(u);
}

/* VJP of the gate: given dg (w.r.t. g_eff), return df (= d dt_bias contribution) and add the
 * A_log contribution to *dA_log.
 *   default:     dg/du = -a * sigmoid(u) (1 above the softplus threshold: -a), dg/dA_log = g
 *   lower bound: dg/du = lb * s(1-s) * a with s = sigmoid(a u), dg/dA_log = lb * s(1-s) * a * u */
static inline double gdn2_gate_vjp_f64(double dg, double f, double A_log, double dt_bias, double lb,
                                       double *dA_log) {
    double a = exp(A_log), u = f + dt_bias;
    if (lb < 0.0) {
        double s = gdn2_sigmoid_f64(a * u), inner = dg * lb * s * (1.0 - s);
        *dA_log += inner * a * u;
        return inner * a;
    }
    double g = -a * gdn2_softplus_f64(u);
    *dA_log += dg * g;
    return dg * (-a) * (u > 20.0 ? 1.0 : gdn2_sigmoid_f64(u));
}

/* y = x / sqrt(sum x^2 + eps); returns rstd. */
static inline double gdn2_l2norm_f64(int64_t n, const double *x, double *y) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss + GDN2_L2NORM_EPS);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * r;
    return r;
}
static inline float gdn2_l2norm_f32(int64_t n, const float *x, float *y) {
    float ss = 0;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss + (float)GDN2_L2NORM_EPS);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * r;
    return r;
}
/* L2-norm VJP in place: dx = rstd * (dy - (dy.y) y), dy in `d`, y the normalised vector. */
static inline void gdn2_l2norm_vjp_f64(int64_t n, const double *y, double rstd, double *d) {
    double dot = 0;
    for (int64_t i = 0; i < n; i++) dot += d[i] * y[i];
    for (int64_t i = 0; i < n; i++) d[i] = rstd * (d[i] - dot * y[i]);
}

#ifdef _OPENMP
#include <omp.h>
#endif
/* Vectorise the next loop (the state-row loops of the token-serial kernels; the default -O2 build
 * would otherwise leave them scalar). */
#ifdef _OPENMP
#define GDN2_SIMD _Pragma("omp simd")
#else
#define GDN2_SIMD
#endif

/* Thread count for an OpenMP region: opts' n_threads, or the OpenMP default. */
/* ... capped at the number of independent work items (no idle threads in tiny calls: their
 * start-up and barrier cost dominates small problems, e.g. the decode step of a few rows). */
static inline int gdn2_threads_for(int n_threads, int64_t items) {
    int nt = gdn2_threads(n_threads);
    return items < 1 ? 1 : items < nt ? (int)items : nt;
}

#endif
