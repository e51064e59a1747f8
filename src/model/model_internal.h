/* Internal pieces of the language model (src/model): the layers written once over the backend
 * (src/backend/backend.h). Not public API. Buffers are backend memory unless a comment says HOST;
 * `void *` tensors are of the backend's activation type (ACT), `float *` fp32. Every layer takes
 * its weights twice: the fp32 master block (params) and the matmul view (params_act). */
#ifndef GDN2_MODEL_INTERNAL_H
#define GDN2_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gdn2_model.h"

#include "../backend/backend.h"
#include "../util/internal.h"
#include "../util/rng.h"

/* ---- recurrent layer (layer_gdn2.c) ------------------------------------------------------- */
size_t gdn2_layer_act_bytes(const gdn2_backend *be, const gdn2_layer_cfg *c, int64_t B, int64_t T);
/* scratch of one forward (backward 0; with_states: the forward gets states) or backward call */
size_t gdn2_layer_scratch_bytes(const gdn2_backend *be, const gdn2_layer_cfg *c, int64_t B, int64_t T,
                                int backward, int with_states);
/* x, y [B,T,d] ACT; acts (gdn2_layer_act_bytes) filled for the backward; states (fp32, may be NULL)
 * as gdn2_layer_forward. */
int gdn2_layer_fwd_be(gdn2_backend *be, const gdn2_layer_cfg *c, const float *params, const void *params_act,
                      const void *x, int64_t B, int64_t T, void *y, void *acts, float *states, void *scratch);
/* dx (ACT) written; dparams (fp32) accumulated, but for the matrix products' weights with dw_acc 0: those
 * are written (the first backward of a step; the backend's linear_bwd) */
int gdn2_layer_bwd_be(gdn2_backend *be, const gdn2_layer_cfg *c, const float *params, const void *params_act,
                      const void *x, int64_t B, int64_t T, const void *acts, const void *dy, void *dx, float *dparams,
                      int dw_acc, void *scratch);

/* ---- attention (attention.c) --------------------------------------------------------------- */
gdn2_attn_cfg gdn2_attn_cfg_of(const gdn2_model_cfg *c, int kind);
/* saved by the forward: q [B,nh,T,hs], k,v [B,ng,T,hs] (post-RoPE), o [B,T,nh*hs] (ACT), lse [B,nh,T] (fp32) */
size_t gdn2_attn_act_bytes(const gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T);
size_t gdn2_attn_scratch_bytes(const gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, int backward);
/* y [B,T,d] = proj(attn(rope(qkv(x)))) (x, y ACT). w_qkv [(nh+2ng)hs, d], w_proj [d, nh*hs] (matmul views). */
int gdn2_attn_forward(gdn2_backend *be, const gdn2_attn_cfg *a, const void *w_qkv, const void *w_proj, const void *x,
                      int64_t B, int64_t T, void *y, void *acts, void *scratch);
/* dx (ACT) written; dw_qkv, dw_proj (fp32) accumulated (dw_acc 1) or written (0). */
int gdn2_attn_backward(gdn2_backend *be, const gdn2_attn_cfg *a, const void *w_qkv, const void *w_proj,
                       const void *x, int64_t B, int64_t T, const void *acts, const void *dy, void *dx, float *dw_qkv,
                       float *dw_proj, int dw_acc, void *scratch);
/* decode: the cache of a sequence, fp32: keys [ng, cap, hs] then values [ng, cap, hs]; cap = window
 * for SWA (a ring: position p in row p % cap), max_len for full attention (row p) */
int64_t gdn2_attn_cache_cap(const gdn2_attn_cfg *a, int64_t max_len);
size_t gdn2_attn_state_size(const gdn2_attn_cfg *a, int64_t max_len);
/* after a forward over T tokens at positions p0 .. p0+T-1 (acts of that forward, backend memory),
 * fill the caches of its B sequences (sequence b's at states + b * state_stride) */
int gdn2_attn_fill_cache(gdn2_backend *be, const gdn2_attn_cfg *a, const void *acts, int64_t B, int64_t T,
                         int64_t p0, int64_t max_len, float *states, size_t state_stride);
/* the forward of one sequence's T new tokens after position p0 > 0, against its cache (state, fp32)
 * and then into it (src/model/attention.c; inference only: no backward) */
int gdn2_attn_forward_cont(gdn2_backend *be, const gdn2_attn_cfg *a, const void *w_qkv, const void *w_proj,
                           const void *x, int64_t T, int64_t p0, int64_t max_len, float *state, void *y, void *acts,
                           void *scratch);
/* one token for each of n sequences, sequence i at position pos[i] with its cache at
 * states + slots[i] * state_stride (pos, slots in backend memory; slots NULL: i); x, y [n,d] ACT;
 * scratch: gdn2_attn_step_bytes. Full attention needs pos[i] < cap (the caller checks). */
size_t gdn2_attn_step_bytes(const gdn2_backend *be, const gdn2_attn_cfg *a, int64_t n);
int gdn2_attn_step_be(gdn2_backend *be, const gdn2_attn_cfg *a, const void *w_qkv, const void *w_proj, const void *x,
                      int64_t n, const int64_t *pos, const int32_t *slots, int64_t cap, float *states,
                      size_t state_stride, void *y, void *scratch);
/* ---- recurrent layer decode over state slots (layer_gdn2.c) ------------------------------ */
/* bytes of the scratch of one decode step of n sequences */
size_t gdn2_layer_step_bytes(const gdn2_backend *be, const gdn2_layer_cfg *c, int64_t n);
/* one token for n sequences (x, y [n,d] ACT); sequence i's decode state is
 * states + slots[i] * gdn2_layer_state_size(c) (slots int32 in backend memory, NULL: i), updated in
 * place; scratch: gdn2_layer_step_bytes */
int gdn2_layer_step_be(gdn2_backend *be, const gdn2_layer_cfg *c, const float *params, const void *params_act,
                       const void *x, int64_t n, float *states, const int32_t *slots, void *y, void *scratch);

/* ---- SwiGLU MLP (mlp.c) ------------------------------------------------------------------- */
/* acts: h1, h2, a each [N, I] ACT; backward scratch: 2 N I ACT */
size_t gdn2_mlp_act_bytes(const gdn2_backend *be, int64_t N, int64_t I);
size_t gdn2_mlp_scratch_bytes(const gdn2_backend *be, int64_t N, int64_t I);
/* batch: the two input projections and the SwiGLU as one strided-batched product when w2 follows w1
 * at a whole number of elements (the decode step: latency-bound products at a few rows); then acts
 * holds a in h1's place and h2 is scratch (no backward) */
int gdn2_mlp_forward(gdn2_backend *be, int64_t N, int64_t d, int64_t I, const void *w1, const void *w2,
                     const void *w3, const void *x, void *y, void *acts, int batch);
/* dx written, dw* accumulated (dw_acc 1) or written (0) */
int gdn2_mlp_backward(gdn2_backend *be, int64_t N, int64_t d, int64_t I, const void *w1, const void *w2,
                      const void *w3, const void *x, const void *acts, const void *dy, void *dx, float *dw1,
                      float *dw2, float *dw3, int dw_acc, void *scratch);

/* ---- gradients (model.c) ------------------------------------------------------------------- */
/* the zeroing gdn2_model_zero_grad left to the backward, done now for a reader of the gradients that
 * comes first (norm, clip, optimizer step, data-parallel reduction, sync_host); nothing when none is due */
int gdn2_model_grads_settle(gdn2_model *m);

/* ---- AdamW (optim.c) ----------------------------------------------------------------------- */
/* the next step's hyper-parameters (bias corrections of step o->step + 1); increments o->step */
gdn2_adamw_hyper gdn2_adamw_next_hyper(gdn2_adamw *o, float lr);

/* ---- data parallel (dist.c, docs/DIST.md) -------------------------------------------------- */
typedef struct gdn2_dist gdn2_dist;
int gdn2_dist_create(struct gdn2_comm *c, int zero1, gdn2_model *m, const gdn2_adamw *o, gdn2_dist **out);
void gdn2_dist_free(gdn2_dist *d, gdn2_model *m);
int gdn2_dist_reduce_grads(gdn2_dist *d, gdn2_model *m);
float gdn2_dist_grad_norm(gdn2_dist *d, gdn2_model *m);
int gdn2_dist_adamw(gdn2_dist *d, gdn2_adamw *o, gdn2_model *m, float lr, float grad_scale);
int gdn2_dist_gather_moments(gdn2_dist *d, gdn2_adamw *o, gdn2_model *m);

#endif
