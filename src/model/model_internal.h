/* Internal pieces of the language model (src/model/{attention,mlp,head,model}.c). Not public API. */
#ifndef GDN2_MODEL_INTERNAL_H
#define GDN2_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gdn2_model.h"

#include "../util/internal.h"
#include "../util/rng.h"
#include "nn.h"

#ifdef _OPENMP
#include <omp.h>
#endif


/* ---- attention (attention.c) --------------------------------------------------------------- */
typedef struct {
    int64_t d, n_head, n_groups, hs; /* hidden, query heads, kv heads (groups), head size          */
    int64_t window;                  /* keys t-window+1..t visible; 0 = full causal               */
    float rope_base;
} gdn2_attn_cfg;

gdn2_attn_cfg gdn2_attn_cfg_of(const gdn2_model_cfg *c, int kind);
/* floats saved by the forward: q [B,nh,T,hs], k,v [B,ng,T,hs] (post-RoPE), o [B,T,nh*hs], lse [B,nh,T] */
size_t gdn2_attn_act_size(const gdn2_attn_cfg *a, int64_t B, int64_t T);
/* y [B,T,d] = proj(attn(rope(qkv(x)))). acts: buffer of gdn2_attn_act_size (always needed: it holds
 * q/k/v; the caller keeps it for backward). w_qkv [(nh+2ng)hs, d], w_proj [d, nh*hs]. */
int gdn2_attn_forward(const gdn2_attn_cfg *a, const float *w_qkv, const float *w_proj, const float *x, int64_t B,
                      int64_t T, float *y, float *acts, int n_threads);
/* dx written; dw_qkv, dw_proj accumulated. */
int gdn2_attn_backward(const gdn2_attn_cfg *a, const float *w_qkv, const float *w_proj, const float *x, int64_t B,
                       int64_t T, const float *acts, const float *dy, float *dx, float *dw_qkv, float *dw_proj,
                       int n_threads);
/* decode cache per sequence: k,v [ng, cap, hs] (cap = window for SWA: a ring; max_len for full) */
size_t gdn2_attn_state_size(const gdn2_attn_cfg *a, int64_t max_len);
/* after a forward from position 0 over T tokens (acts of that forward), fill the caches of n = B seqs */
int gdn2_attn_fill_cache(const gdn2_attn_cfg *a, const float *acts, int64_t B, int64_t T, int64_t max_len,
                         float *states, size_t state_stride);
/* one token at position pos for n sequences: x,y [n,d] */
int gdn2_attn_step(const gdn2_attn_cfg *a, const float *w_qkv, const float *w_proj, const float *x, int64_t n,
                   int64_t pos, int64_t max_len, float *states, size_t state_stride, float *y, int n_threads);

/* ---- SwiGLU MLP (mlp.c) ------------------------------------------------------------------- */
/* acts: h1, h2, a each [N, I] */
size_t gdn2_mlp_act_size(int64_t N, int64_t I);
void gdn2_mlp_forward(int64_t N, int64_t d, int64_t I, const float *w1, const float *w2, const float *w3,
                      const float *x, float *y, float *acts, int n_threads);
/* dx written, dw* accumulated; scratch [2 N I] */
void gdn2_mlp_backward(int64_t N, int64_t d, int64_t I, const float *w1, const float *w2, const float *w3,
                       const float *x, const float *acts, const float *dy, float *dx, float *dw1, float *dw2,
                       float *dw3, float *scratch, int n_threads);

/* ---- loss (head.c); the RMSNorm is nn.h's ----------------------------------------------- */
/* rows of logits [N,Vp]: overwritten by d(loss_sum)/d(logits) * scale (scale 0: keep the logits),
 * returns the summed CE over rows with target != IGNORE; n_valid counts them. */
double gdn2_mdl_xent(int64_t N, int64_t Vp, float *logits, const int32_t *targets, float grad_scale, int want_grad,
                     int64_t *n_valid, int n_threads);

#endif
