/* Small fp32 neural-net primitives: the CPU backend's arithmetic (src/backend/cpu.c puts them in
 * the backend table the model is written in): linear layers on gdn2_sgemm, the depthwise causal short conv + SiLU, RMSNorm and the gated (swish) RMSNorm, and the
 * scalar activations. Forward and backward (VJP) of each. Rows are tokens, row-major.
 * Backward conventions: dX is written (or accumulated when `accumulate` is set), weight gradients
 * are always accumulated (+=). n_threads <= 0 means the OpenMP default. */
#ifndef GDN2_MODEL_NN_H
#define GDN2_MODEL_NN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/act.h"
#include "../util/internal.h"
#include "backend.h"

#ifdef _OPENMP
#include <omp.h>
#endif


/* scalar activations: src/util/act.h (gdn2_sigmoid_f32, gdn2_softplus_f32, gdn2_silu_f32, ...) */

/* Y[N,out] = X[N,in] W[out,in]^T (+ bias[out] if not NULL)  (torch nn.Linear layout) */
void gdn2_linear_fwd(int64_t N, int64_t in, int64_t out, const float *X, const float *W, const float *bias,
                     float *Y);
/* dX[N,in] = (or +=) dY W;  dW[out,in] = (dw_acc ? dW : 0) + dY^T X;  dbias[out] += sum_n dY (if dbias).
 * dX may be NULL (input gradient not needed), dW may be NULL (frozen weight). */
void gdn2_linear_bwd(int64_t N, int64_t in, int64_t out, const float *X, const float *W, const float *dY,
                     float *dX, int accumulate, float *dW, int dw_acc, float *dbias);

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

/* the layer's gates and their VJP (formulas and argument roles: backend.h gates_fwd / gates_bwd) */
void gdn2_nn_gates_fwd(int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb, const float *f,
                       const float *sb, const float *sw, const float *A_log, const float *dt, float *g, float *b,
                       float *w, int n_threads);
int gdn2_nn_gates_bwd(int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb, const float *f,
                      const float *sb, const float *sw, const float *g, const float *A_log, const float *dt,
                      const float *dg, const float *db, const float *dw, float *df, float *dpb, float *dpw,
                      float *dA_log, float *ddt, int n_threads);
/* x *= mask / (1 - p), the mask of gdn2_dropout_keep(seed, i, ...) (backend.h dropout) */
void gdn2_nn_dropout(size_t n, float *x, float p, uint64_t seed, int n_threads);
/* a = silu(h1) h2;  backward: da in dh1 -> dh1, dh2 */
void gdn2_nn_swiglu_fwd(size_t n, const float *h1, const float *h2, float *a, int n_threads);
void gdn2_nn_swiglu_bwd(size_t n, const float *h1, const float *h2, float *dh1, float *dh2, int n_threads);
/* per-row cross-entropy of logits [N,Vp] (backend.h xent); dlogits may be NULL */
void gdn2_nn_xent(int64_t N, int64_t Vp, const float *logits, const int32_t *targets, float scale, float *dlogits,
                  float *loss, int n_threads);
/* AdamW over segments of the flat block (backend.h adamw) */
void gdn2_nn_adamw(const gdn2_adamw_seg *segs, int n_segs, const gdn2_adamw_hyper *h, float *w, const float *g,
                   float *m, float *v, int n_threads);
double gdn2_nn_sumsq(size_t n, const float *g);
/* attention (backend.h rope_split, attn_fwd, ...): RoPE angle as lit_gpt builds its cache in fp32,
 * theta_i = 1 / base^(2i/hs), angle = pos theta_i; rotate-half y1 = x1 c - x2 s, y2 = x2 c + x1 s */
void gdn2_nn_rope_cs(int64_t pos, int64_t hs, float base, float *c, float *s);
void gdn2_nn_rope_apply(const float *x, float *y, int64_t hs, const float *c, const float *s);
/* dot product with 8 independent partial sums (vectorises without -ffast-math) */
float gdn2_nn_dot(const float *a, const float *b, int64_t n);
int gdn2_nn_rope_split(const gdn2_attn_cfg *a, int64_t B, int64_t T, const float *qkv, float *q, float *k, float *v,
                       int n_threads);
int gdn2_nn_rope_split_bwd(const gdn2_attn_cfg *a, int64_t B, int64_t T, const float *dq, const float *dk,
                           const float *dv, float *dqkv, int n_threads);
/* Streams each query row over its visible keys (one row of scores per thread, O(window)), saving
 * the row's log-sum-exp; the backward recomputes the probabilities from it (flash-attention style):
 * SWA costs O(T window) time, nothing O(T^2) in memory. */
int gdn2_nn_attn_fwd(const gdn2_attn_cfg *a, int64_t B, int64_t T, const float *q, const float *k, const float *v,
                     float *o, float *lse, int n_threads);
int gdn2_nn_attn_bwd(const gdn2_attn_cfg *a, int64_t B, int64_t T, const float *q, const float *k, const float *v,
                     const float *o, const float *lse, const float *dO, float *dq, float *dk, float *dv,
                     int n_threads);
/* one query per sequence against its key/value cache (backend.h attn_step; pos, slots HOST);
 * the scores of a row in one pass, then the softmax and the weighted values: O(window) per query */
int gdn2_nn_attn_step(const gdn2_attn_cfg *a, int64_t n, const float *qkv, const int64_t *pos, const int32_t *slots,
                      int64_t cap, float *cache, size_t stride, float *o, int n_threads);

#endif
