/* Small fp32 neural-net primitives shared by the model's layers (src/model): linear layers on
 * gdn2_sgemm, the depthwise causal short conv + SiLU, RMSNorm and the gated (swish) RMSNorm, and the
 * scalar activations. Forward and backward (VJP) of each. Rows are tokens, row-major.
 * Backward conventions: dX is written (or accumulated when `accumulate` is set), weight gradients
 * are always accumulated (+=). n_threads <= 0 means the OpenMP default. */
#ifndef GDN2_MODEL_NN_H
#define GDN2_MODEL_NN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif


static inline float gdn2_nn_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
/* torch softplus (beta 1, threshold 20): linear above 20 */
static inline float gdn2_nn_softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
/* d softplus / dx as torch computes it: 1 above the threshold, else sigmoid(x) */
static inline float gdn2_nn_softplus_grad(float x) { return x > 20.0f ? 1.0f : gdn2_nn_sigmoid(x); }
static inline float gdn2_nn_silu(float x) { return x * gdn2_nn_sigmoid(x); }
/* d silu / dx = s (1 + x (1 - s)), s = sigmoid(x) */
static inline float gdn2_nn_silu_grad(float x) {
    float s = gdn2_nn_sigmoid(x);
    return s * (1.0f + x * (1.0f - s));
}

/* Y[N,out] = X[N,in] W[out,in]^T (+ bias[out] if not NULL)  (torch nn.Linear layout) */
void gdn2_linear_fwd(int64_t N, int64_t in, int64_t out, const float *X, const float *W, const float *bias,
                     float *Y);
/* dX[N,in] = (or +=) dY W;  dW[out,in] += dY^T X;  dbias[out] += sum_n dY (if dbias).
 * dX may be NULL (input gradient not needed), dW may be NULL (frozen weight). */
void gdn2_linear_bwd(int64_t N, int64_t in, int64_t out, const float *X, const float *W, const float *dY,
                     float *dX, int accumulate, float *dW, float *dbias);

/* Depthwise causal conv (kernel W, no bias) followed by SiLU over x [B,T,D]:
 *   c_t[ch] = sum_{i=0}^{W-1} w[ch*W + i] * xe_{t+i}[ch],   y = silu(c)
 * where xe is x preceded by W-1 history rows: hist + b*hist_stride is [W-1, D] (oldest first), or
 * zeros when hist is NULL (fresh sequence: the official zero left pad). w is Conv1d's [D,1,W]. */
int gdn2_conv_silu_fwd(int64_t B, int64_t T, int64_t D, int64_t W, const float *x, const float *hist,
                       size_t hist_stride, const float *w, float *y, int n_threads);
/* VJP: dx [B,T,D] written, dw [D,W] accumulated. The gradient w.r.t. hist is dropped. */
int gdn2_conv_silu_bwd(int64_t B, int64_t T, int64_t D, int64_t W, const float *x, const float *hist,
                       size_t hist_stride, const float *w, const float *dy, float *dx, float *dw, int n_threads);
/* After a forward over x [B,T,D], replace each hist [W-1,D] by the last W-1 rows of (hist ++ x). */
void gdn2_conv_hist_update(int64_t B, int64_t T, int64_t D, int64_t W, const float *x, float *hist,
                           size_t hist_stride);

/* RMSNorm over rows of D (the model's norm_1, norm_2, ln_f; FusedRMSNorm):
 * y = x * rsqrt(mean(x^2) + eps) * w; rstd [N] saved for the backward (may be NULL) */
void gdn2_rmsnorm_fwd(int64_t N, int64_t D, const float *x, const float *w, float eps, float *y, float *rstd,
                      int n_threads);
/* dx written (or += when accumulate), dw accumulated (row-serial: the same sum order whatever the
 * thread count); rstd as the forward saved it. */
void gdn2_rmsnorm_bwd(int64_t N, int64_t D, const float *x, const float *w, const float *rstd, const float *dy,
                      float *dx, int accumulate, float *dw, int n_threads);

/* Gated RMSNorm with a swish gate (official FusedRMSNormSwishGate), rows of D:
 *   y = x * rsqrt(mean(x^2) + eps) * w  ⊙  a * sigmoid(a)      (a = gate) */
void gdn2_rmsnorm_swish_fwd(int64_t N, int64_t D, const float *x, const float *gate, const float *w, float eps,
                            float *y, int n_threads);
/* dx, dgate written; dw accumulated. */
int gdn2_rmsnorm_swish_bwd(int64_t N, int64_t D, const float *x, const float *gate, const float *w, float eps,
                           const float *dy, float *dx, float *dgate, float *dw, int n_threads);

#endif
