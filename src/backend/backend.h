/* The model's arithmetic backend (docs/BACKEND.md): the operations the language model
 * (src/model) is written in, with one implementation per device. The model — config, parameter
 * table, order of operations, training loop, checkpoints — exists once; a backend only computes.
 *
 *   cpu  (src/backend/cpu.c over src/backend/nn.c and src/ops): fp32 everywhere, host memory.
 *   cuda (src/backend/cuda.c over src/cuda/nn.cu, attn.cu and the chunk kernels): bf16-mixed as the
 *        official torch.autocast training: activations that feed matrix products in bf16, fp32
 *        residual stream, norms' statistics, gates' decay, recurrent state, loss, master weights,
 *        gradients and AdamW moments. Matrix products through cuBLASLt (bf16 in, fp32 accumulate).
 *
 * Types. Every tensor argument is either fp32 (`float *`) or of the backend's activation type
 * (`void *`, "ACT": fp32 on the CPU, bf16 on CUDA; act_bytes bytes per element). Weights come in
 * two views of the same flat parameter block: fp32 master weights (`const float *`, norms, convs,
 * gate parameters read them) and the ACT view (`const void *W`, what matrix products read: the
 * master block itself on the CPU, a bf16 copy on CUDA refreshed by adamw). Weight gradients are
 * always fp32 and accumulated (+=), but for linear_bwd's dW with dw_acc 0 (written: the first backward
 * after the model's zero_grad, which leaves the matrix weights' gradients to it).
 *
 * Memory. All tensors handed to an op live in the backend's memory (alloc; host memory on the CPU,
 * device memory on CUDA) unless the argument says HOST. Ops are queued in order on the backend's
 * one stream; `sync` waits for them. No op allocates memory that outlives the call except the
 * backend's own scratch (sized at the first call that needs it and kept in ctx; `destroy`
 * frees it). Nothing here is process-global: two backends are independent.
 *
 * Errors: GDN2_OK or a gdn2 status with gdn2_last_error() set. An op a backend lacks returns
 * GDN2_ERR_UNSUPPORTED naming the op and the backend.
 *
 * Determinism: every reduction runs in a fixed order on both backends (no atomics whose order
 * changes the result), so the same call twice gives the same bits. */
#ifndef GDN2_BACKEND_H
#define GDN2_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "gdn2_ops.h"
#include "../util/sample.h"
#include "../util/product.h"

enum { GDN2_DT_F32 = 0, GDN2_DT_ACT = 1 };

#ifndef GDN2_IGNORE
#define GDN2_IGNORE (-100) /* target value that carries no loss (as torch) */
#endif

/* causal attention with RoPE, full (window 0) or sliding-window (query t sees keys t-window+1..t);
 * n_head query heads in n_groups kv groups (GQA), head size hs */
typedef struct {
    int64_t d, n_head, n_groups, hs;
    int64_t window;
    float rope_base;
    int64_t pos0;  /* rope_split(_bwd): token t is at position pos0 + t (its RoPE angle); 0 but for a
                    * prefill that continues a sequence (src/model/attention.c) */
} gdn2_attn_cfg;

/* one stretch of the flat parameter block with one weight decay (AdamW) */
typedef struct {
    size_t offset, numel;
    float weight_decay;
} gdn2_adamw_seg;

typedef struct {
    float lr, beta1, beta2, eps;
    float step_size; /* lr / (1 - beta1^t)                                  */
    float bc2_sqrt;  /* sqrt(1 - beta2^t)                                   */
    float grad_scale; /* g is read as g * grad_scale: a clip factor applied in the update's pass (1: as is) */
} gdn2_adamw_hyper;

/* the activation a product may apply as it writes its output (linear_fwd_batch's act) */
enum { GDN2_BE_NO_ACT = 0, GDN2_BE_SIGMOID = 1, GDN2_BE_SWIGLU = 2 };

typedef struct gdn2_backend gdn2_backend;
struct gdn2_backend {
    const char *name;  /* "cpu" or "cuda"                                   */
    int on_device;     /* 0: tensors are host memory; 1: device memory       */
    size_t act_bytes;  /* 4 (fp32) or 2 (bf16)                               */
    int n_threads;     /* CPU: OpenMP threads (0 = default)                  */
    void *ctx;         /* backend's private state (stream, handles, scratch) */
    void *stream;      /* the device stream every op is queued on (cudaStream_t), NULL on the CPU:
                        * what other libraries (NCCL) queue their work on to stay in order */

    /* ---- memory (bytes) ------------------------------------------------------------------ */
    void *(*alloc)(gdn2_backend *be, size_t bytes, const char *what); /* zero-filled; NULL + error */
    void (*release)(gdn2_backend *be, void *p);
    int (*upload)(gdn2_backend *be, void *dst, const void *host_src, size_t bytes);
    int (*download)(gdn2_backend *be, void *host_dst, const void *src, size_t bytes);
    int (*copy)(gdn2_backend *be, void *dst, const void *src, size_t bytes);
    int (*zero)(gdn2_backend *be, void *p, size_t bytes);
    int (*sync)(gdn2_backend *be);
    void (*destroy)(gdn2_backend *be); /* frees ctx and its scratch; not the struct itself */

    /* y (ydt) = x (xdt), n elements (rounding to bf16: round to nearest even); x and y must not
     * overlap when xdt != ydt (the CUDA kernel is not in-place) */
    int (*cast)(gdn2_backend *be, size_t n, const void *x, int xdt, void *y, int ydt);

    /* ---- matrix products (torch nn.Linear layout, rows are tokens) ------------------------ */
    /* Y[N,out] (ydt) = (accumulate ? Y : 0) + X[N,in] W[out,in]^T (+ bias[out], fp32, may be NULL).
     * X, W: ACT. */
    int (*linear_fwd)(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                      const float *bias, void *Y, int ydt, int accumulate);
    /* count products with one input: Y_i[N,out] (ACT) = X[N,in] W_i[out,in]^T for i < count, W_i = W +
     * i*wstride and Y_i = Y + i*ystride (elements, ACT): the decode step's q/k/v and b/w projections
     * in one launch (CUDA: one strided-batched cuBLASLt product; CPU: linear_fwd per product).
     * act GDN2_BE_SIGMOID: then Y_i = sigmoid(Y_i), the same values as the sigmoid op after it (the
     * b/w gates; at one row the CUDA product applies it as it writes Y: one launch fewer).
     * act GDN2_BE_SWIGLU (count 2: the MLP's w1, w2): Y_0 = silu(Y_0) Y_1, the swiglu op's values after
     * the two products; Y_1 is scratch (unspecified after the call; at one row the CUDA product writes
     * only Y_0: one launch fewer). */
    int (*linear_fwd_batch)(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                            size_t wstride, void *Y, size_t ystride, int count, int act);
    /* the output gate's product and the gated norm in one: z (ACT) = rmsnorm_swish(o, X W^T + bias) over
     * rows of D (out % D == 0), the same bits as linear_fwd (ACT) into z then rmsnorm_swish_fwd(o, z) (the
     * decode step, which does not keep the gate; at one row the CUDA product applies the norm as it
     * writes z: one launch fewer). */
    int (*linear_rmsnorm_swish_fwd)(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X,
                                    const void *W, const float *bias, const void *o, const float *wn, int64_t D,
                                    float eps, void *z);
    /* dX[N,in] (ACT) = (accumulate ? dX : 0) + dY W;  dW[out,in] (fp32) = (dw_acc ? dW : 0) + dY^T X;
     * dbias[out] (fp32) += sum_n dY.  dY: ACT. dX, dW, dbias may each be NULL (not wanted). dw_acc 0 is the
     * first write of a weight's gradient in a step (the model's zero_grad leaves those to it: no pass over
     * them, and no read of the old dW). */
    int (*linear_bwd)(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                      const void *dY, void *dX, int accumulate, float *dW, int dw_acc, float *dbias);

    /* ---- elementwise and rows ------------------------------------------------------------- */
    /* out (fp32) = a (fp32) + b (ACT); out may alias a */
    int (*add)(gdn2_backend *be, size_t n, const float *a, const void *b, float *out);
    /* out[i,:] (fp32) = wte[tokens[i],:] (fp32 master); tokens in backend memory */
    int (*embed_fwd)(gdn2_backend *be, int64_t N, int64_t d, const int32_t *tokens, const float *wte, float *out);
    /* dwte[tokens[i],:] += dout[i,:] (fp32), for each vocabulary row the positions summed in
     * increasing i. tokens_host: the same ids on the HOST (the backend may bucket them there). */
    int (*embed_bwd)(gdn2_backend *be, int64_t N, int64_t d, const int32_t *tokens_host, const int32_t *tokens,
                     const float *dout, float *dwte);
    /* dst[r,:] = src[rows[r],:]  (ACT; rows HOST, n_rows of them) */
    int (*gather_rows)(gdn2_backend *be, int64_t n_rows, int64_t d, const int64_t *rows_host, const void *src,
                       void *dst);
    /* dst[rows[r],:] = src[r,:], every other row of dst [N,d] zeroed (ACT) */
    int (*scatter_rows)(gdn2_backend *be, int64_t n_rows, int64_t N, int64_t d, const int64_t *rows_host,
                        const void *src, void *dst);
    /* dropout in place: x (dt: GDN2_DT_ACT or GDN2_DT_F32) = x / (1 - p) where
     * gdn2_dropout_keep(seed, i, thr(p)) (util/rng.h), else 0: the same mask on every backend; the
     * backward is the same call on the gradient. 0 <= p < 1. */
    int (*dropout)(gdn2_backend *be, size_t n, void *x, int dt, float p, uint64_t seed);
    /* x (ACT) = sigmoid(x) in place */
    int (*sigmoid)(gdn2_backend *be, size_t n, void *x);

    /* ---- norms ---------------------------------------------------------------------------- */
    /* RMSNorm over rows of D: y (ACT) = x (fp32) * rstd * w,  rstd [N] (fp32, may be NULL) =
     * 1/sqrt(mean(x^2) + eps) */
    int (*rmsnorm_fwd)(gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *w, float eps, void *y,
                       float *rstd);
    /* the residual add and the next norm in one pass: out (fp32) = a (fp32) + b (ACT), then y, rstd =
     * RMSNorm(out) as rmsnorm_fwd; the same bits as add then rmsnorm_fwd. out may alias a. */
    int (*add_rmsnorm_fwd)(gdn2_backend *be, int64_t N, int64_t D, const float *a, const void *b, float *out,
                           const float *w, float eps, void *y, float *rstd);
    /* dx (fp32) = (accumulate ? dx : 0) + VJP;  dw (fp32) += ...;  dy: ACT. dx_act (ACT, may be NULL):
     * a copy of dx as written (the input of the next backward's products, without a cast of its own) */
    int (*rmsnorm_bwd)(gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *w, const float *rstd,
                       const void *dy, float *dx, int accumulate, void *dx_act, float *dw);
    /* gated RMSNorm with swish gate over rows of D (all ACT but w):
     * y = x rsqrt(mean(x^2) + eps) w * a sigmoid(a) */
    int (*rmsnorm_swish_fwd)(gdn2_backend *be, int64_t N, int64_t D, const void *x, const void *gate,
                             const float *w, float eps, void *y);
    /* dx, dgate (ACT) written; dw (fp32) += */
    int (*rmsnorm_swish_bwd)(gdn2_backend *be, int64_t N, int64_t D, const void *x, const void *gate,
                             const float *w, float eps, const void *dy, void *dx, void *dgate, float *dw);

    /* ---- the recurrent layer's pieces ----------------------------------------------------- */
    /* y = silu(causal depthwise conv_W(x)) over [B,T,D] (ACT), w [D,W] fp32; hist (fp32, may be
     * NULL = zeros): per sequence b, hist + b*hist_stride holds the W-1 previous rows [W-1,D]. */
    int (*conv_silu_fwd)(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                         const float *hist, size_t hist_stride, const float *w, void *y);
    /* dx (ACT) written, dw (fp32) += */
    int (*conv_silu_bwd)(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                         const float *hist, size_t hist_stride, const float *w, const void *dy, void *dx, float *dw);
    /* hist <- the last W-1 rows of (hist ++ x) per sequence (x ACT, hist fp32) */
    int (*conv_hist_update)(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                            float *hist, size_t hist_stride);
    /* The layer's gates at kernel layout (src/model/layer_gdn2.c has the formulas), N tokens:
     *   mixer 0 gdn2: g[n,h,i] = -e^{A_log[h]} softplus(f[n,h,i] + dt[h,i]);  b = cb sb [N,H,K];  w = sw [N,HV,V]
     *   mixer 1 kda:  g as gdn2;  b[n,h,:] = cb sb[n,h];  w[n,hv,:] = cb sb[n,hv/G]
     *   mixer 2 gdn:  g[n,h,:] = -e^{A_log[h]} softplus(f[n,h] + dt[h]);  b, w as kda
     * f, sb, sw ACT (sb, sw already sigmoids; sw only for gdn2); g fp32, b, w ACT; each output may be
 * NULL (not computed). */
    int (*gates_fwd)(gdn2_backend *be, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V,
                     float cb, const void *f, const void *sb, const void *sw, const float *A_log, const float *dt,
                     float *g, void *b, void *w);
    /* Their VJP. In: dg (fp32 [N,H,K]), db (ACT [N,H,K]), dw (ACT [N,HV,V]), the forward's f, sb, sw,
     * g. Out: df (ACT, [N,H,K], gdn [N,H]): the gradient of f; dpb (ACT, [N,H,K] gdn2, [N,H] kda/gdn):
     * of the erase (or beta) projection's output before the sigmoid; dpw (ACT [N,HV,V], gdn2 only):
     * of the write projection's; dA_log [H], ddt ([H,K], gdn [H]) fp32 +=, each summed over n in
     * double in a fixed order. g may be recomputed from f rather than read (CUDA: the forward's
     * formula on the same device, the same bits). */
    int (*gates_bwd)(gdn2_backend *be, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V,
                     float cb, const void *f, const void *sb, const void *sw, const float *g, const float *A_log,
                     const float *dt, const float *dg, const void *db, const void *dw, void *df, void *dpb,
                     void *dpw, float *dA_log, float *ddt);
    /* The GDN-2 recurrence over [B,T] (src/ops, src/cuda): q,k,v,b,w,o ACT; g, h0, ht fp32 (h0, ht
     * may be NULL); opts as gdn2_chunk_fwd (qk_l2norm ...). kernel: GDN2_KERNEL_CHUNK or
     * GDN2_KERNEL_REFERENCE (the float64 reference; CPU only).
     * reserve: NULL (the backward recomputes the forward's intermediates: the default, no memory
     * kept between the calls), or a buffer of gdn2_reserve_bytes (backend memory, kept by the caller
     * from this forward to its backward) that the forward fills with what the backward would
     * recompute (keep mode: CPU gdn2_chunk_fwd_save, CUDA keep_for_backward). */
    int (*gdn2_fwd)(gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q,
                    const void *k, const void *v, const float *g, const void *b, const void *w, const float *h0,
                    void *o, float *ht, void *reserve);
    /* dq, dk, dv, db, dw (ACT), dg (fp32) written; dh0 not computed. reserve: NULL, or the buffer a
     * keep-mode gdn2_fwd filled for the same dims, opts and inputs (same contents; the backward may
     * overwrite it: one backward per forward), read instead of recomputing (CPU
     * gdn2_chunk_bwd_saved, CUDA reuse_forward). The gradients equal the recomputing backward's to
     * rounding (CPU ~1e-7 relative; CUDA the bf16 kernels' own bars). */
    int (*gdn2_bwd)(gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q,
                    const void *k, const void *v, const float *g, const void *b, const void *w, const float *h0,
                    const void *d_o, void *dq, void *dk, void *dv, float *dg, void *db, void *dw, void *reserve);
    /* Bytes of the keep-mode reserve of gdn2_fwd / gdn2_bwd at these dims and opts; 0 when this
     * backend and kernel have no keep mode there (the caller passes NULL: recompute). */
    size_t (*gdn2_reserve_bytes)(const gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op);

    /* ---- decoding: one token per sequence over a pool of per-sequence states ------------- */
    /* The decode step of generation (src/model gdn2_model_step_slots): n sequences, sequence i's
     * state at base + slots[i] * stride (slots: int32 [n] in backend memory; NULL: slot i).
     *
     * conv_step: the short conv for one token: with hist_i = hist + slots[i]*hist_stride ([W-1,D]
     * fp32, oldest row first), y[i] = silu(conv_W(hist_i ++ x[i])) (as conv_silu_fwd with T = 1),
     * then hist_i <- the last W-1 rows of (hist_i ++ x[i]) (as conv_hist_update). x, y ACT [n,D].
     * count parts in one call (the decode step's q, k and v): part p on x + p*xs, y + p*ys (ACT
     * elements), hist + p*hs and w + p*ws (floats); the same results as count calls of one part. */
    int (*conv_step)(gdn2_backend *be, int64_t n, int64_t D, int64_t W, int count, const void *x, size_t xs,
                     float *hist, size_t hs, size_t hist_stride, const int32_t *slots, const float *w, size_t ws,
                     void *y, size_t ys);
    /* the products ahead of conv_step and conv_step in one: x_p = X[n,in] Wl_p[D,in]^T for p < count
     * (Wl_p = Wl + p*wlstride, x_p = x + p*xs: linear_fwd_batch without act), then conv_step over the
     * x_p with the rest of the arguments as conv_step's: the same bits as the two calls. x is where the
     * products go when the backend makes the two calls; at one row the CUDA product convolves as it
     * stores and x is not written. */
    int (*linear_conv_step)(gdn2_backend *be, int64_t n, int64_t in, int64_t D, const void *X, const void *Wl,
                            size_t wlstride, int count, void *x, size_t xs, int64_t W, float *hist, size_t hs,
                            size_t hist_stride, const int32_t *slots, const float *w, size_t ws, void *y, size_t ys);
    /* np <= GDN2_PRODUCT_MAX products of the one input X [n,in] (src/util/product.h): the same bits as
     * linear_conv_step (act CONV) or linear_fwd_batch (STORE, SIGMOID) for each, in table order (the
     * decode step's q/k/v, f0|g0 and b|w; at one row the CUDA backend makes them one launch). */
    int (*linear_fwd_multi)(gdn2_backend *be, int64_t n, int64_t in, const void *X, const gdn2_product *p, int np);
    /* decode: one token of the GDN-2 recurrence (the semantics of gdn2_decode_step) for n = dm->B
     * sequences (dm->T = 1): sequence i's state pool + slots[i]*slot_stride ([HV,K,V] fp32, slot_stride
     * in floats) is read and updated in place. q, k, b [n,H,K], v, w, o [n,HV,V] ACT; g fp32; opts as
     * gdn2_fwd. kernel: GDN2_KERNEL_CHUNK (the fp32 decode kernel) or GDN2_KERNEL_REFERENCE (the
     * float64 reference; CPU only; CUDA runs its one decode kernel for either).
     * A_log NULL: g is the log-decay, fp32 [n,H,K]. A_log [H] and dt_bias [H,K] given: g is the
     * gdn2 decay pre-activation f (ACT [n,H,K]) and the log-decay is gates_fwd's (mixer gdn2), the
     * same values (CUDA: computed in the decode kernel, one launch fewer a layer and step). */
    int (*decode)(gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q,
                  const void *k, const void *v, const void *g, const float *A_log, const float *dt_bias,
                  const void *b, const void *w, float *pool, size_t slot_stride, const int32_t *slots, void *o);
    /* attn_step: one query per sequence against its key/value cache. qkv [n,(nh+2ng)hs] ACT (the fused
     * projection, per group [q x nh/ng, k, v]); pos int64 [n] (backend memory): sequence i's position.
     * Sequence i's cache, fp32 at cache + slots[i]*stride: keys [ng,cap,hs] then values [ng,cap,hs];
     * position p lives in row p % cap when a->window > 0 (a ring of the last cap = window positions),
     * row p otherwise (full attention: p < cap, checked by the caller). RoPE (rope_split's) is applied
     * to q and k at pos[i]; k (after RoPE) and v are written to row p; then
     * o[i] (ACT [n, nh*hs]) = softmax(q k^T / sqrt(hs)) v over the positions max(0, p-window+1) .. p
     * (0 .. p for full attention). */
    int (*attn_step)(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t n, const void *qkv, const int64_t *pos,
                     const int32_t *slots, int64_t cap, float *cache, size_t stride, void *o);
    /* sample: one token per row of logits [n, ld] fp32 (backend memory; the first V of each row), row
     * i under params[i] (HOST; src/util/sample.h: temperature, top_k, top_p and the draw u), into
     * tokens[i] (HOST). Integer candidate weights: every backend draws the same tokens from the same
     * logits (src/ops/sample.c is the reference; CUDA src/cuda/sample.cu). Synchronises. */
    int (*sample)(gdn2_backend *be, int64_t n, int64_t V, int64_t ld, const float *logits,
                  const gdn2_sample_row_params *params, int32_t *tokens);

    /* ---- recorded op sequences (CUDA graphs of the decode step; all NULL on the CPU) ------- */
    /* gdn2_model_step_slots records its ops once per launch shape and replays the recording
     * (docs/SERVING.md). host_alloc: pinned host memory (NULL + error), freed by host_free;
     * upload_async: host_src (from host_alloc) -> dst queued without waiting (host_src must stay as
     * it is until the stream has passed the copy: a later download or sync). graph_begin: the ops
     * queued from here on are recorded, not run; every op must then be one that records (kernels,
     * matrix products, device copies: no upload, download, sync, alloc, release or scratch growth).
     * graph_end: stop recording (always) and instantiate it into *graph (graph NULL: discard);
     * graph_launch: queue a recording; graph_free: NULL ok. A recording holds the pointers and
     * sizes it was recorded with: what changes between replays must be read from device memory. */
    void *(*host_alloc)(gdn2_backend *be, size_t bytes, const char *what);
    void (*host_free)(gdn2_backend *be, void *p);
    int (*upload_async)(gdn2_backend *be, void *dst, const void *host_src, size_t bytes);
    int (*graph_begin)(gdn2_backend *be);
    int (*graph_end)(gdn2_backend *be, void **graph);
    int (*graph_launch)(gdn2_backend *be, void *graph);
    void (*graph_free)(gdn2_backend *be, void *graph);

    /* ---- SwiGLU --------------------------------------------------------------------------- */
    /* a = silu(h1) * h2 (ACT) */
    int (*swiglu_fwd)(gdn2_backend *be, size_t n, const void *h1, const void *h2, void *a);
    /* in: da (in dh1); out: dh1 = da h2 silu'(h1), dh2 = da silu(h1) (ACT) */
    int (*swiglu_bwd)(gdn2_backend *be, size_t n, const void *h1, const void *h2, void *dh1, void *dh2);

    /* ---- attention ------------------------------------------------------------------------ */
    /* qkv [B*T, (nh+2ng)hs] (per group [q x nh/ng, k, v]) -> q [B,nh,T,hs], k, v [B,ng,T,hs] with
     * rotate-half RoPE on q and k at positions 0..T-1 (all ACT) */
    int (*rope_split)(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *qkv, void *q,
                      void *k, void *v);
    /* its VJP: dqkv (ACT) written from dq, dk, dv */
    int (*rope_split_bwd)(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *dq,
                          const void *dk, const void *dv, void *dqkv);
    /* o [B,T,nh*hs] (ACT) = softmax(scale q k^T, causal/window) v, lse [B,nh,T] fp32 saved */
    int (*attn_fwd)(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *q, const void *k,
                    const void *v, void *o, float *lse);
    /* dq, dk, dv (ACT) written from dO (ACT [B,T,nh*hs]) */
    int (*attn_bwd)(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *q, const void *k,
                    const void *v, const void *o, const float *lse, const void *dO, void *dq, void *dk, void *dv);

    /* ---- loss ----------------------------------------------------------------------------- */
    /* rows of logits [N,Vp] fp32: loss[n] = logsumexp(z_n) - z_n[t_n] (0 where t_n = -100);
     * dlogits (ACT, may be NULL) = scale (softmax(z_n) - onehot(t_n)), rows with t_n = -100 zero.
     * targets in backend memory. */
    int (*xent)(gdn2_backend *be, int64_t N, int64_t Vp, const float *logits, const int32_t *targets, float scale,
                void *dlogits, float *loss);

    /* ---- optimizer ------------------------------------------------------------------------ */
    /* sum of g[i]^2 over n floats, in double in a fixed order, to the HOST */
    int (*sumsq)(gdn2_backend *be, size_t n, const float *g, double *out_host);
    int (*scale)(gdn2_backend *be, size_t n, float *x, float k); /* x *= k */
    /* torch AdamW over the segments (HOST table) of the flat block:
     *   w *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  w -= step_size m / (sqrt(v)/bc2_sqrt + eps)
     * and, when w_act is not NULL and not w, w_act (ACT) = w rounded (the matmul copy). */
    int (*adamw)(gdn2_backend *be, const gdn2_adamw_seg *segs, int n_segs, const gdn2_adamw_hyper *h, float *w,
                 const float *g, float *m, float *v, void *w_act);
};

/* CPU backend with n_threads OpenMP threads (0 = default). Never fails. */
void gdn2_backend_cpu_init(gdn2_backend *be, int n_threads);
/* CUDA backend on the current device: GDN2_ERR_UNSUPPORTED without CUDA built in or without a
 * device (the message says which). */
int gdn2_backend_cuda_init(gdn2_backend *be);
/* "cpu" or "cuda" */
int gdn2_backend_init(gdn2_backend *be, const char *device, int n_threads);

/* bytes of n elements of type dt on this backend */
static inline size_t gdn2_be_bytes(const gdn2_backend *be, size_t n, int dt) {
    return n * (dt == GDN2_DT_ACT ? be->act_bytes : sizeof(float));
}

#endif
