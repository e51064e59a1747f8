/* The CUDA backend's kernels (src/cuda/nn.cu, src/cuda/gemm.cu): the ops of src/backend/backend.h
 * other than attention (src/cuda/attn.h) and the GDN-2 recurrence (include/gdn2_cuda.h), as a C API
 * over device pointers. bf16 is __nv_bfloat16 (here: `void *`, 2 bytes an element), math in fp32,
 * every reduction in a fixed order (no atomics): the same call twice gives the same bits.
 *
 * Context. gdn2_cuda_nn holds what the ops keep between calls: the stream, the cuBLASLt handle
 * and its 32 MiB workspace, a growing device scratch buffer (uploaded index tables, reduction
 * partials), a pinned host word for results sent to the host, and the AdamW segment table cache.
 * Nothing is process-global: two contexts are independent. Every op queues its work on the
 * context's stream (the `stream` of gdn2_cuda_nn_stream) and returns without waiting, except where
 * it synchronises: upload, download, free, sumsq (its result goes to the host), gather/scatter_rows
 * (after uploading the host row table), the first adamw call with a new segment table, and any op
 * whose scratch has to grow (the old buffer is freed once the stream is idle).
 *
 * Stream: gdn2_cuda_nn_create makes its own stream with cudaStreamCreate (a *blocking* stream: it
 * stays ordered with the legacy default stream, so plain cudaMemcpy / gdn2_cuda_memcpy and the
 * chunk kernels' default-stream calls elsewhere cannot race it).
 *
 * dt arguments: GDN2_CUDA_F32 (0) or GDN2_CUDA_BF16 (1), the values of include/gdn2_cuda.h.
 * Errors: GDN2_OK, or GDN2_ERR_ARG / GDN2_ERR_DEVICE / GDN2_ERR_NOMEM with gdn2_last_error() set.
 * Not public API. */
#ifndef GDN2_CUDA_NN_H
#define GDN2_CUDA_NN_H

#include <stddef.h>
#include <stdint.h>

#include "../util/product.h" /* gdn2_product */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gdn2_cuda_nn gdn2_cuda_nn;

/* one stretch of a flat parameter block with its weight decay: the same fields, in the same order,
 * as gdn2_adamw_seg of src/backend/backend.h (that file is not included here) */
typedef struct {
    size_t offset, numel;
    float weight_decay;
} gdn2_cuda_adamw_seg;

/* ---- context and memory ---------------------------------------------------------------------- */
/* creates the stream, the cuBLASLt handle and workspace on the current device */
int gdn2_cuda_nn_create(gdn2_cuda_nn **out);
void gdn2_cuda_nn_destroy(gdn2_cuda_nn *c); /* waits for the stream, frees everything; NULL ok */
void *gdn2_cuda_nn_stream(const gdn2_cuda_nn *c); /* cudaStream_t as void * */
/* the attention decode step's split partials (GDN2_CUDA_ATTN_PART_FLOATS floats, allocated with the
 * context and never moved: a recorded step keeps the address; src/cuda/decode_nn.h) */
#define GDN2_CUDA_ATTN_PART_FLOATS ((size_t)2048 * 258)
float *gdn2_cuda_nn_attn_part(const gdn2_cuda_nn *c);
void *gdn2_cuda_nn_alloc(gdn2_cuda_nn *c, size_t bytes, const char *what); /* zero-filled; NULL + error */
void gdn2_cuda_nn_free(gdn2_cuda_nn *c, void *p);                       /* waits for the stream first */
int gdn2_cuda_nn_upload(gdn2_cuda_nn *c, void *dst, const void *host_src, size_t bytes);   /* synchronises */
int gdn2_cuda_nn_download(gdn2_cuda_nn *c, void *host_dst, const void *src, size_t bytes); /* synchronises */
int gdn2_cuda_nn_copy(gdn2_cuda_nn *c, void *dst, const void *src, size_t bytes);          /* device to device */
int gdn2_cuda_nn_zero(gdn2_cuda_nn *c, void *p, size_t bytes);
int gdn2_cuda_nn_sync(gdn2_cuda_nn *c); /* waits for the stream; reports a failed kernel */
/* ---- recorded op sequences (CUDA graphs: the model's decode step, docs/SERVING.md) ------------ */
/* Pinned host memory (cudaMallocHost), what upload_async reads from; NULL + error. free: NULL ok. */
void *gdn2_cuda_nn_host_alloc(size_t bytes, const char *what);
void gdn2_cuda_nn_host_free(void *p);
/* host_src (pinned) -> dst, queued on the stream without waiting: the caller leaves host_src as it
 * is until the stream has passed the copy (a later download or sync) */
int gdn2_cuda_nn_upload_async(gdn2_cuda_nn *c, void *dst, const void *host_src, size_t bytes);
/* Start recording the stream (cudaStreamBeginCapture, thread-local mode): the ops queued from here
 * on are recorded, not run, until capture_end. While recording, an op that would synchronise or
 * allocate (scratch growth, upload, download, free) fails and the recording is lost. */
int gdn2_cuda_nn_capture_begin(gdn2_cuda_nn *c);
/* Stop recording. exec not NULL: instantiate the recording into *exec (a cudaGraphExec_t); NULL:
 * discard it. Always ends the capture; on failure (an op invalidated the recording, or the
 * instantiation failed) the runtime's error is cleared (later launch checks do not see it) and the
 * message names the call. */
int gdn2_cuda_nn_capture_end(gdn2_cuda_nn *c, void **exec);
/* queue a recorded sequence on the stream (cudaGraphLaunch) */
int gdn2_cuda_nn_graph_launch(gdn2_cuda_nn *c, void *exec);
void gdn2_cuda_nn_graph_free(void *exec); /* NULL ok */

/* The context's device scratch, at least `bytes` (grows as the ops' scratch does; valid until the
 * next op that takes scratch): the chunk kernels' workspace, so that they do not allocate
 * stream-ordered memory at every call (docs/CUDA.md: 3.47 vs 1.49 ms at (8,4096,16)). */
void *gdn2_cuda_nn_workspace(gdn2_cuda_nn *c, size_t bytes, const char *what);

/* ---- matrix products (gemm.cu, cuBLASLt; row-major torch nn.Linear layout) ------------------- */
/* Y[N,out] (ydt) = (accumulate ? Y : 0) + X[N,in] W[out,in]^T (+ bias[out] fp32 or NULL); X, W bf16 */
int gdn2_cuda_linear_fwd(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                         const float *bias, void *Y, int ydt, int accumulate);
/* count products Y_i = X W_i^T (bf16 out), W_i = W + i*wstride, Y_i = Y + i*ystride (elements): one
 * strided-batched cuBLASLt call (X read by every product: stride 0), or at one row the matrix-vector
 * kernel, then act (at one row in the product's store, else the op after it, with the op's bits):
 *   GDN2_CUDA_SIGMOID  Y_i = sigmoid(Y_i) (gdn2_cuda_sigmoid);
 *   GDN2_CUDA_SWIGLU   count 2: Y_0 = silu(Y_0) Y_1 (gdn2_cuda_swiglu_fwd); Y_1 is scratch after the call */
enum { GDN2_CUDA_STORE = 0, GDN2_CUDA_SIGMOID = 1, GDN2_CUDA_SWIGLU = 2 };
int gdn2_cuda_linear_fwd_batch(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                               size_t wstride, void *Y, size_t ystride, int count, int act);
/* z (bf16) = gdn2_cuda_rmsnorm_swish_fwd(o, X W^T + bias) over rows of D (out % D == 0), the product's
 * value not kept: the same bits as gdn2_cuda_linear_fwd (bf16) then the norm; at one row one launch */
int gdn2_cuda_linear_rmsnorm_swish_fwd(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t out, const void *X,
                                       const void *W, const float *bias, const void *o, const float *wn, int64_t D,
                                       float eps, void *z);
/* the decode step's q/k/v: x_p = X W_p^T (p < count, gdn2_cuda_linear_fwd_batch), then
 * gdn2_cuda_conv_step (decode_nn.h) over them, the same bits; at one row in the product's store (x is
 * then not written) */
int gdn2_cuda_linear_conv_step(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t D, const void *X, const void *W,
                               size_t wstride, int count, void *x, size_t xs, int64_t ksize, float *hist, size_t hs,
                               size_t hist_stride, const int32_t *slots, const float *cw, size_t cws, void *y,
                               size_t ys);
/* np <= GDN2_PRODUCT_MAX products of the one input X (bf16 [N,in]; src/util/product.h): at one row, with
 * every product's W and X as the one-row kernel takes them, one launch (src/cuda/gemv.cuh k_gemv_multi);
 * else gdn2_cuda_linear_conv_step (act CONV) or gdn2_cuda_linear_fwd_batch per product. The same bits
 * either way. */
int gdn2_cuda_linear_fwd_multi(gdn2_cuda_nn *c, int64_t N, int64_t in, const void *X, const gdn2_product *p, int np);
/* dX[N,in] (bf16) = (accumulate ? dX : 0) + dY W;  dW[out,in] (fp32) = (dw_acc ? dW : 0) + dY^T X;
 * dbias (fp32) += sum_n dY; X, W, dY bf16; dX, dW, dbias may each be NULL */
int gdn2_cuda_linear_bwd(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                         const void *dY, void *dX, int accumulate, float *dW, int dw_acc, float *dbias);

/* ---- elementwise and rows (nn.cu) -------------------------------------------------------------- */
int gdn2_cuda_cast(size_t n, const void *x, int xdt, void *y, int ydt, void *stream);
int gdn2_cuda_add(size_t n, const float *a, const void *b_bf16, float *out, void *stream); /* out may be a */
int gdn2_cuda_embed_fwd(int64_t N, int64_t d, const int32_t *tokens, const float *wte, float *out, void *stream);
/* buckets tokens_host into per-token position lists on the host, uploads them to scratch */
int gdn2_cuda_embed_bwd(gdn2_cuda_nn *c, int64_t N, int64_t d, const int32_t *tokens_host, const float *dout,
                        float *dwte);
int gdn2_cuda_gather_rows(gdn2_cuda_nn *c, int64_t n_rows, int64_t d, const int64_t *rows_host, const void *src,
                          void *dst);
int gdn2_cuda_scatter_rows(gdn2_cuda_nn *c, int64_t n_rows, int64_t N, int64_t d, const int64_t *rows_host,
                           const void *src, void *dst);
int gdn2_cuda_sigmoid(size_t n, void *x_bf16, void *stream);
/* x (dt: bf16 or fp32) = x / (1 - p) where gdn2_dropout_keep(seed, i, p·2^32), else 0 (src/util/rng.h) */
int gdn2_cuda_dropout(size_t n, void *x, int dt, float p, uint64_t seed, void *stream);

/* ---- norms ------------------------------------------------------------------------------------- */
int gdn2_cuda_rmsnorm_fwd(int64_t N, int64_t D, const float *x, const float *w, float eps, void *y_bf16,
                          float *rstd, void *stream);
/* out (fp32) = a + float(b_bf16) (out may be a), then y, rstd = RMSNorm(out): the same bits as
 * gdn2_cuda_add then gdn2_cuda_rmsnorm_fwd, in one pass */
int gdn2_cuda_add_rmsnorm_fwd(int64_t N, int64_t D, const float *a, const void *b_bf16, float *out, const float *w,
                              float eps, void *y_bf16, float *rstd, void *stream);
/* dx_act (bf16, may be NULL): a copy of dx as written */
int gdn2_cuda_rmsnorm_bwd(gdn2_cuda_nn *c, int64_t N, int64_t D, const float *x, const float *w,
                          const float *rstd, const void *dy, float *dx, int accumulate, void *dx_act, float *dw);
int gdn2_cuda_rmsnorm_swish_fwd(int64_t N, int64_t D, const void *x, const void *gate, const float *w, float eps,
                                void *y, void *stream);
int gdn2_cuda_rmsnorm_swish_bwd(gdn2_cuda_nn *c, int64_t N, int64_t D, const void *x, const void *gate,
                                const float *w, float eps, const void *dy, void *dx, void *dgate, float *dw);

/* ---- the recurrent layer's pieces -------------------------------------------------------------- */
int gdn2_cuda_conv_silu_fwd(int64_t B, int64_t T, int64_t D, int64_t W, const void *x, const float *hist,
                            size_t hist_stride, const float *w, void *y, void *stream);
int gdn2_cuda_conv_silu_bwd(gdn2_cuda_nn *c, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                            const float *hist, size_t hist_stride, const float *w, const void *dy, void *dx,
                            float *dw);
int gdn2_cuda_conv_hist_update(int64_t B, int64_t T, int64_t D, int64_t W, const void *x, float *hist,
                               size_t hist_stride, void *stream);
/* mixer: 0 gdn2, 1 kda, 2 gdn (gdn2_mixer_kind) */
int gdn2_cuda_gates_fwd(int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb, const void *f,
                        const void *sb, const void *sw, const float *A_log, const float *dt, float *g, void *b,
                        void *w, void *stream);
int gdn2_cuda_gates_bwd(gdn2_cuda_nn *c, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V,
                        float cb, const void *f, const void *sb, const void *sw, const float *g, const float *A_log,
                        const float *dt, const float *dg, const void *db, const void *dw, void *df, void *dpb,
                        void *dpw, float *dA_log, float *ddt);

/* ---- SwiGLU, loss, optimizer ------------------------------------------------------------------- */
int gdn2_cuda_swiglu_fwd(size_t n, const void *h1, const void *h2, void *a, void *stream);
int gdn2_cuda_swiglu_bwd(size_t n, const void *h1, const void *h2, void *dh1, void *dh2, void *stream);
int gdn2_cuda_xent(int64_t N, int64_t Vp, const float *logits, const int32_t *targets, float scale,
                   void *dlogits_bf16, float *loss, void *stream);
int gdn2_cuda_sumsq(gdn2_cuda_nn *c, size_t n, const float *g, double *out_host); /* synchronises */
int gdn2_cuda_scale(size_t n, float *x, float k, void *stream);
/* step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t); g is read as g * grad_scale (a clip
 * factor; 1: as is); w_act (bf16) may be NULL */
int gdn2_cuda_adamw(gdn2_cuda_nn *c, const gdn2_cuda_adamw_seg *segs, int n_segs, float lr, float beta1,
                    float beta2, float eps, float step_size, float bc2_sqrt, float grad_scale, float *w,
                    const float *g, float *m, float *v, void *w_act);

#ifdef __cplusplus
}
#endif
#endif
