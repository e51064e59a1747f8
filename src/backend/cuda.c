/* The CUDA backend (src/backend/backend.h): thin wrappers over the C APIs of src/cuda/nn.h (kernels,
 * cuBLASLt linears, memory), src/cuda/attn.h (RoPE, attention) and include/gdn2_cuda.h (the GDN-2
 * chunk kernels). This file includes no CUDA header: the C compile has no CUDA include path.
 *
 * Types: ACT is bf16 (act_bytes 2); fp32 tensors are float. Memory: device memory (cudaMalloc,
 * zero-filled on the stream).
 * Stream: one per backend, created by gdn2_cuda_nn_create with cudaStreamCreate: a blocking stream,
 * so it stays ordered with the legacy default stream that plain cudaMemcpy and other library calls
 * use. Every op is queued on it; `sync` waits for it; upload, download and sumsq wait themselves.
 * ctx: the gdn2_cuda_nn context (stream, cuBLASLt handle + 32 MiB workspace, scratch, caches).
 * Without CUDA built in, gdn2_backend_cuda_init returns GDN2_ERR_UNSUPPORTED. */
#include <string.h>

#include "backend.h"
#include "gdn2_cuda.h"
#include "gdn2_error.h"
#include "gdn2_layer.h"

#ifdef GDN2_HAVE_CUDA

#include "cuda/attn.h"
#include "cuda/decode_nn.h"
#include "cuda/nn.h"

#define NN(be) ((gdn2_cuda_nn *)(be)->ctx)
#define STREAM(be) gdn2_cuda_nn_stream(NN(be))

static int cdt(int dt) { return dt == GDN2_DT_ACT ? GDN2_CUDA_BF16 : GDN2_CUDA_F32; }

/* ---- memory -------------------------------------------------------------------------------- */
static void *cu_alloc(gdn2_backend *be, size_t bytes, const char *what) { return gdn2_cuda_nn_alloc(NN(be), bytes, what); }
static void cu_release(gdn2_backend *be, void *p) { gdn2_cuda_nn_free(NN(be), p); }
static int cu_upload(gdn2_backend *be, void *dst, const void *src, size_t bytes) {
    return gdn2_cuda_nn_upload(NN(be), dst, src, bytes);
}
static int cu_download(gdn2_backend *be, void *dst, const void *src, size_t bytes) {
    return gdn2_cuda_nn_download(NN(be), dst, src, bytes);
}
static int cu_copy(gdn2_backend *be, void *dst, const void *src, size_t bytes) {
    return gdn2_cuda_nn_copy(NN(be), dst, src, bytes);
}
static int cu_zero(gdn2_backend *be, void *p, size_t bytes) { return gdn2_cuda_nn_zero(NN(be), p, bytes); }
static int cu_sync(gdn2_backend *be) { return gdn2_cuda_nn_sync(NN(be)); }
static void cu_destroy(gdn2_backend *be) {
    gdn2_cuda_nn_destroy(NN(be));
    be->ctx = NULL;
}

static int cu_cast(gdn2_backend *be, size_t n, const void *x, int xdt, void *y, int ydt) {
    return gdn2_cuda_cast(n, x, cdt(xdt), y, cdt(ydt), STREAM(be));
}

/* ---- matrix products ----------------------------------------------------------------------- */
static int cu_linear_fwd_batch(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                               size_t wstride, void *Y, size_t ystride, int count, int act) {
    const int a = act == GDN2_BE_SIGMOID ? GDN2_CUDA_SIGMOID : act == GDN2_BE_SWIGLU ? GDN2_CUDA_SWIGLU
                : act == GDN2_BE_NO_ACT ? GDN2_CUDA_STORE : -1;
    return gdn2_cuda_linear_fwd_batch(NN(be), N, in, out, X, W, wstride, Y, ystride, count, a);
}
static int cu_linear_rmsnorm_swish_fwd(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X,
                                       const void *W, const float *bias, const void *o, const float *wn, int64_t D,
                                       float eps, void *z) {
    return gdn2_cuda_linear_rmsnorm_swish_fwd(NN(be), N, in, out, X, W, bias, o, wn, D, eps, z);
}
static int cu_linear_fwd(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                         const float *bias, void *Y, int ydt, int accumulate) {
    return gdn2_cuda_linear_fwd(NN(be), N, in, out, X, W, bias, Y, cdt(ydt), accumulate);
}
static int cu_linear_bwd(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                         const void *dY, void *dX, int accumulate, float *dW, int dw_acc, float *dbias) {
    return gdn2_cuda_linear_bwd(NN(be), N, in, out, X, W, dY, dX, accumulate, dW, dw_acc, dbias);
}

/* ---- elementwise and rows ------------------------------------------------------------------ */
static int cu_add(gdn2_backend *be, size_t n, const float *a, const void *b, float *out) {
    return gdn2_cuda_add(n, a, b, out, STREAM(be));
}
static int cu_embed_fwd(gdn2_backend *be, int64_t N, int64_t d, const int32_t *tokens, const float *wte, float *out) {
    return gdn2_cuda_embed_fwd(N, d, tokens, wte, out, STREAM(be));
}
static int cu_embed_bwd(gdn2_backend *be, int64_t N, int64_t d, const int32_t *tokens_host, const int32_t *tokens,
                        const float *dout, float *dwte) {
    (void)tokens; /* bucketed from the host copy */
    return gdn2_cuda_embed_bwd(NN(be), N, d, tokens_host, dout, dwte);
}
static int cu_gather_rows(gdn2_backend *be, int64_t n_rows, int64_t d, const int64_t *rows_host, const void *src,
                          void *dst) {
    return gdn2_cuda_gather_rows(NN(be), n_rows, d, rows_host, src, dst);
}
static int cu_scatter_rows(gdn2_backend *be, int64_t n_rows, int64_t N, int64_t d, const int64_t *rows_host,
                           const void *src, void *dst) {
    return gdn2_cuda_scatter_rows(NN(be), n_rows, N, d, rows_host, src, dst);
}
static int cu_sigmoid(gdn2_backend *be, size_t n, void *x) { return gdn2_cuda_sigmoid(n, x, STREAM(be)); }
static int cu_dropout(gdn2_backend *be, size_t n, void *x, int dt, float p, uint64_t seed) {
    return gdn2_cuda_dropout(n, x, cdt(dt), p, seed, STREAM(be));
}

/* ---- norms --------------------------------------------------------------------------------- */
static int cu_rmsnorm_fwd(gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *w, float eps, void *y,
                          float *rstd) {
    return gdn2_cuda_rmsnorm_fwd(N, D, x, w, eps, y, rstd, STREAM(be));
}
static int cu_add_rmsnorm_fwd(gdn2_backend *be, int64_t N, int64_t D, const float *a, const void *b, float *out,
                              const float *w, float eps, void *y, float *rstd) {
    return gdn2_cuda_add_rmsnorm_fwd(N, D, a, b, out, w, eps, y, rstd, STREAM(be));
}
static int cu_rmsnorm_bwd(gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *w, const float *rstd,
                          const void *dy, float *dx, int accumulate, void *dx_act, float *dw) {
    return gdn2_cuda_rmsnorm_bwd(NN(be), N, D, x, w, rstd, dy, dx, accumulate, dx_act, dw);
}
static int cu_rmsnorm_swish_fwd(gdn2_backend *be, int64_t N, int64_t D, const void *x, const void *gate,
                                const float *w, float eps, void *y) {
    return gdn2_cuda_rmsnorm_swish_fwd(N, D, x, gate, w, eps, y, STREAM(be));
}
static int cu_rmsnorm_swish_bwd(gdn2_backend *be, int64_t N, int64_t D, const void *x, const void *gate,
                                const float *w, float eps, const void *dy, void *dx, void *dgate, float *dw) {
    return gdn2_cuda_rmsnorm_swish_bwd(NN(be), N, D, x, gate, w, eps, dy, dx, dgate, dw);
}

/* ---- the recurrent layer's pieces ---------------------------------------------------------- */
static int cu_conv_silu_fwd(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                            const float *hist, size_t hist_stride, const float *w, void *y) {
    return gdn2_cuda_conv_silu_fwd(B, T, D, W, x, hist, hist_stride, w, y, STREAM(be));
}
static int cu_conv_silu_bwd(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                            const float *hist, size_t hist_stride, const float *w, const void *dy, void *dx,
                            float *dw) {
    return gdn2_cuda_conv_silu_bwd(NN(be), B, T, D, W, x, hist, hist_stride, w, dy, dx, dw);
}
static int cu_conv_hist_update(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                               float *hist, size_t hist_stride) {
    return gdn2_cuda_conv_hist_update(B, T, D, W, x, hist, hist_stride, STREAM(be));
}
static int cu_gates_fwd(gdn2_backend *be, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb,
                        const void *f, const void *sb, const void *sw, const float *A_log, const float *dt, float *g,
                        void *b, void *w) {
    return gdn2_cuda_gates_fwd(mixer, N, H, HV, K, V, cb, f, sb, sw, A_log, dt, g, b, w, STREAM(be));
}
static int cu_gates_bwd(gdn2_backend *be, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb,
                        const void *f, const void *sb, const void *sw, const float *g, const float *A_log,
                        const float *dt, const float *dg, const void *db, const void *dw, void *df, void *dpb,
                        void *dpw, float *dA_log, float *ddt) {
    return gdn2_cuda_gates_bwd(NN(be), mixer, N, H, HV, K, V, cb, f, sb, sw, g, A_log, dt, dg, db, dw, df, dpb, dpw,
                               dA_log, ddt);
}

/* the chunk kernels in bf16, their workspace in the context's scratch (a NULL workspace would make
 * them allocate stream-ordered memory at every call, which the default pool returns at every
 * synchronisation: 2.3x slower forward, docs/CUDA.md), sized for the call (its path; with a reserve,
 * the backward's scratch only). Keep mode: the caller's reserve holds what the forward keeps for the
 * backward (keep_for_backward, then reuse_forward; the scratch is then the same size in both calls). */
static int chunk_kernel(const char *fn, int kernel) {
    if (kernel == GDN2_KERNEL_CHUNK) return GDN2_OK;
    if (kernel == GDN2_KERNEL_REFERENCE)
        return gdn2_error(GDN2_ERR_UNSUPPORTED, "%s: the float64 reference kernel runs on the cpu backend only", fn);
    return gdn2_error(GDN2_ERR_ARG, "%s: kernel %d unknown", fn, kernel);
}
static size_t cu_gdn2_reserve_bytes(const gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op) {
    (void)be;
    return kernel == GDN2_KERNEL_CHUNK ? gdn2_cuda_chunk_reserve_size(dm, op, GDN2_CUDA_BF16) : 0;
}
/* o2: op with the workspace of the call (a, g: gdn2_cuda_chunk_call_workspace_size) in the context's scratch */
static int chunk_workspace(gdn2_backend *be, const gdn2_dims *dm, const gdn2_opts *op, const gdn2_cuda_fwd_args *a,
                           const gdn2_cuda_bwd_args *g, gdn2_opts *o2) {
    *o2 = *op;
    o2->workspace_size = gdn2_cuda_chunk_call_workspace_size(dm, op, a, g);
    if (!o2->workspace_size) return GDN2_ERR_ARG; /* the reason is in gdn2_last_error() */
    o2->workspace = gdn2_cuda_nn_workspace(NN(be), o2->workspace_size,
                                           g ? "chunk backward workspace" : "chunk forward workspace");
    return o2->workspace ? GDN2_OK : GDN2_ERR_NOMEM;
}
static int cu_gdn2_fwd(gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q,
                       const void *k, const void *v, const float *g, const void *b, const void *w, const float *h0,
                       void *o, float *ht, void *reserve) {
    gdn2_opts o2;
    int rc = chunk_kernel("cuda gdn2_fwd", kernel);
    if (rc) return rc;
    gdn2_cuda_fwd_args a;
    memset(&a, 0, sizeof a);
    a.dtype = GDN2_CUDA_BF16;
    a.q = q, a.k = k, a.v = v, a.b = b, a.w = w, a.g = g, a.h0 = h0, a.o = o, a.ht = ht;
    a.keep_for_backward = reserve != NULL;
    a.reserve = reserve, a.reserve_size = reserve ? gdn2_cuda_chunk_reserve_size(dm, op, GDN2_CUDA_BF16) : 0;
    if ((rc = chunk_workspace(be, dm, op, &a, NULL, &o2))) return rc;
    return gdn2_cuda_chunk_fwd(dm, &o2, &a, STREAM(be));
}
static int cu_gdn2_bwd(gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q,
                       const void *k, const void *v, const float *g, const void *b, const void *w, const float *h0,
                       const void *d_o, void *dq, void *dk, void *dv, float *dg, void *db, void *dw, void *reserve) {
    gdn2_opts o2;
    int rc = chunk_kernel("cuda gdn2_bwd", kernel);
    if (rc) return rc;
    gdn2_cuda_fwd_args a;
    gdn2_cuda_bwd_args ga;
    memset(&a, 0, sizeof a);
    memset(&ga, 0, sizeof ga);
    a.dtype = GDN2_CUDA_BF16;
    a.q = q, a.k = k, a.v = v, a.b = b, a.w = w, a.g = g, a.h0 = h0;
    ga.d_o = d_o, ga.dq = dq, ga.dk = dk, ga.dv = dv, ga.dg = dg, ga.db = db, ga.dw = dw;
    a.reserve = reserve, a.reserve_size = reserve ? gdn2_cuda_chunk_reserve_size(dm, op, GDN2_CUDA_BF16) : 0;
    ga.reuse_forward = reserve != NULL;
    if ((rc = chunk_workspace(be, dm, op, &a, &ga, &o2))) return rc;
    return gdn2_cuda_chunk_bwd(dm, &o2, &a, &ga, STREAM(be));
}

/* ---- SwiGLU -------------------------------------------------------------------------------- */
static int cu_swiglu_fwd(gdn2_backend *be, size_t n, const void *h1, const void *h2, void *a) {
    return gdn2_cuda_swiglu_fwd(n, h1, h2, a, STREAM(be));
}
static int cu_swiglu_bwd(gdn2_backend *be, size_t n, const void *h1, const void *h2, void *dh1, void *dh2) {
    return gdn2_cuda_swiglu_bwd(n, h1, h2, dh1, dh2, STREAM(be));
}

/* ---- attention (src/cuda/attn.h) ----------------------------------------------------------- */
static gdn2_cuda_attn_shape attn_shape(const gdn2_attn_cfg *a, int64_t B, int64_t T) {
    gdn2_cuda_attn_shape s;
    s.B = B, s.T = T, s.n_head = a->n_head, s.n_groups = a->n_groups, s.hs = a->hs, s.window = a->window;
    s.rope_base = a->rope_base;
    s.pos0 = a->pos0;
    return s;
}
static int cu_rope_split(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *qkv, void *q,
                         void *k, void *v) {
    gdn2_cuda_attn_shape s = attn_shape(a, B, T);
    return gdn2_cuda_rope_split(&s, qkv, q, k, v, STREAM(be));
}
static int cu_rope_split_bwd(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *dq,
                             const void *dk, const void *dv, void *dqkv) {
    gdn2_cuda_attn_shape s = attn_shape(a, B, T);
    return gdn2_cuda_rope_split_bwd(&s, dq, dk, dv, dqkv, STREAM(be));
}
static int cu_attn_fwd(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *q, const void *k,
                       const void *v, void *o, float *lse) {
    gdn2_cuda_attn_shape s = attn_shape(a, B, T);
    return gdn2_cuda_attn_fwd(&s, q, k, v, o, lse, STREAM(be));
}
static int cu_attn_bwd(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *q, const void *k,
                       const void *v, const void *o, const float *lse, const void *dO, void *dq, void *dk, void *dv) {
    gdn2_cuda_attn_shape s = attn_shape(a, B, T);
    return gdn2_cuda_attn_bwd(&s, q, k, v, o, lse, dO, dq, dk, dv, STREAM(be));
}

/* ---- decoding (src/cuda/decode_nn.h, gdn2_cuda_recurrent_fwd) ------------------------------- */
static int cu_conv_step(gdn2_backend *be, int64_t n, int64_t D, int64_t W, int count, const void *x, size_t xs,
                        float *hist, size_t hs, size_t hist_stride, const int32_t *slots, const float *w, size_t ws,
                        void *y, size_t ys) {
    return gdn2_cuda_conv_step(n, D, W, count, x, xs, hist, hs, hist_stride, slots, w, ws, y, ys, STREAM(be));
}
static int cu_linear_conv_step(gdn2_backend *be, int64_t n, int64_t in, int64_t D, const void *X, const void *Wl,
                               size_t wlstride, int count, void *x, size_t xs, int64_t W, float *hist, size_t hs,
                               size_t hist_stride, const int32_t *slots, const float *w, size_t ws, void *y, size_t ys) {
    return gdn2_cuda_linear_conv_step(NN(be), n, in, D, X, Wl, wlstride, count, x, xs, W, hist, hs, hist_stride, slots,
                                      w, ws, y, ys);
}
static int cu_linear_fwd_multi(gdn2_backend *be, int64_t n, int64_t in, const void *X, const gdn2_product *p, int np) {
    return gdn2_cuda_linear_fwd_multi(NN(be), n, in, X, p, np);
}
/* the token-serial kernel on the state pool (either kernel choice: the float64 reference is CPU only,
 * and the decode step has one CUDA kernel) */
static int cu_decode(gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q,
                     const void *k, const void *v, const void *g, const float *A_log, const float *dt_bias,
                     const void *b, const void *w, float *pool, size_t slot_stride, const int32_t *slots, void *o) {
    (void)kernel;
    /* a pre-activation g: the kernel's own gate (k_recurrent gate_fwd: k_gates_fwd_k's formula and
     * order, so the same log-decay bits), from bf16 f */
    gdn2_opts og = *op;
    if (A_log) {
        if (!dt_bias) return gdn2_error(GDN2_ERR_ARG, "decode: A_log given without dt_bias");
        og.gate_in_kernel = 1, og.lower_bound = 0.0f;
    }
    /* the kernel puts the sequences on grid.z (at most 65535): longer batches in pieces */
    const int64_t Dk = dm->H * dm->K, Dv = dm->HV * dm->V, piece = 65535;
    int rc = GDN2_OK;
    for (int64_t i0 = 0; i0 < dm->B && !rc; i0 += piece) {
        const int64_t n = dm->B - i0 < piece ? dm->B - i0 : piece;
        gdn2_cuda_recurrent_args a;
        memset(&a, 0, sizeof a);
        a.dtype = GDN2_CUDA_BF16;
        a.q = (const char *)q + 2 * i0 * Dk, a.k = (const char *)k + 2 * i0 * Dk, a.b = (const char *)b + 2 * i0 * Dk;
        a.v = (const char *)v + 2 * i0 * Dv, a.w = (const char *)w + 2 * i0 * Dv, a.o = (char *)o + 2 * i0 * Dv;
        a.g = A_log ? (const float *)((const char *)g + 2 * i0 * Dk) : (const float *)g + i0 * Dk;
        a.g_dtype = A_log ? GDN2_CUDA_BF16 : GDN2_CUDA_F32, a.A_log = A_log, a.dt_bias = dt_bias;
        /* slots NULL: sequence i is slot i, so the piece's pool starts at slot i0 */
        a.state_pool = slots ? pool : pool + (size_t)i0 * slot_stride, a.slots = slots ? slots + i0 : NULL;
        a.slot_stride = (int64_t)slot_stride, a.state_dtype = GDN2_CUDA_F32;
        a.n_slots = n; /* with slots: not read by the kernel (the caller's indices are in range) */
        gdn2_dims d1 = *dm;
        d1.B = n, d1.T = 1;
        rc = gdn2_cuda_recurrent_fwd(&d1, &og, &a, STREAM(be));
    }
    return rc;
}
static int cu_attn_step(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t n, const void *qkv, const int64_t *pos,
                        const int32_t *slots, int64_t cap, float *cache, size_t stride, void *o) {
    gdn2_cuda_attn_shape s = attn_shape(a, n, 1);
    return gdn2_cuda_attn_step(&s, qkv, pos, slots, cap, cache, stride, o, gdn2_cuda_nn_attn_part(NN(be)),
                               GDN2_CUDA_ATTN_PART_FLOATS, STREAM(be));
}
/* params and tokens through the context's scratch: upload, one launch, download (synchronises) */
static int cu_sample(gdn2_backend *be, int64_t n, int64_t V, int64_t ld, const float *logits,
                     const gdn2_sample_row_params *params, int32_t *tokens) {
    if (n <= 0) return n < 0 ? gdn2_error(GDN2_ERR_ARG, "sample: n %lld", (long long)n) : GDN2_OK;
    const size_t pb = (size_t)n * sizeof *params, tb = (size_t)n * sizeof *tokens;
    char *ws = gdn2_cuda_nn_workspace(NN(be), pb + tb, "sampling tables");
    if (!ws) return GDN2_ERR_NOMEM;
    int rc = gdn2_cuda_nn_upload(NN(be), ws, params, pb);
    if (!rc) rc = gdn2_cuda_sample_rows(n, V, ld, logits, (const gdn2_sample_row_params *)ws, (int32_t *)(ws + pb), STREAM(be));
    if (!rc) rc = gdn2_cuda_nn_download(NN(be), tokens, ws + pb, tb);
    return rc;
}

/* ---- recorded op sequences (CUDA graphs) ---------------------------------------------------- */
static void *cu_host_alloc(gdn2_backend *be, size_t bytes, const char *what) {
    (void)be;
    return gdn2_cuda_nn_host_alloc(bytes, what);
}
static void cu_host_free(gdn2_backend *be, void *p) {
    (void)be;
    gdn2_cuda_nn_host_free(p);
}
static int cu_upload_async(gdn2_backend *be, void *dst, const void *src, size_t bytes) {
    return gdn2_cuda_nn_upload_async(NN(be), dst, src, bytes);
}
static int cu_graph_begin(gdn2_backend *be) { return gdn2_cuda_nn_capture_begin(NN(be)); }
static int cu_graph_end(gdn2_backend *be, void **graph) { return gdn2_cuda_nn_capture_end(NN(be), graph); }
static int cu_graph_launch(gdn2_backend *be, void *graph) { return gdn2_cuda_nn_graph_launch(NN(be), graph); }
static void cu_graph_free(gdn2_backend *be, void *graph) {
    (void)be;
    gdn2_cuda_nn_graph_free(graph);
}

/* ---- loss and optimizer -------------------------------------------------------------------- */
static int cu_xent(gdn2_backend *be, int64_t N, int64_t Vp, const float *logits, const int32_t *targets, float scale,
                   void *dlogits, float *loss) {
    return gdn2_cuda_xent(N, Vp, logits, targets, scale, dlogits, loss, STREAM(be));
}
static int cu_sumsq(gdn2_backend *be, size_t n, const float *g, double *out_host) {
    return gdn2_cuda_sumsq(NN(be), n, g, out_host);
}
static int cu_scale(gdn2_backend *be, size_t n, float *x, float k) { return gdn2_cuda_scale(n, x, k, STREAM(be)); }
static int cu_adamw(gdn2_backend *be, const gdn2_adamw_seg *segs, int n_segs, const gdn2_adamw_hyper *h, float *w,
                    const float *g, float *m, float *v, void *w_act) {
    /* gdn2_cuda_adamw_seg is gdn2_adamw_seg field for field (checked below) */
    return gdn2_cuda_adamw(NN(be), (const gdn2_cuda_adamw_seg *)(const void *)segs, n_segs, h->lr, h->beta1, h->beta2,
                           h->eps, h->step_size, h->bc2_sqrt, h->grad_scale, w, g, m, v, w_act);
}
_Static_assert(sizeof(gdn2_cuda_adamw_seg) == sizeof(gdn2_adamw_seg) &&
                   offsetof(gdn2_cuda_adamw_seg, numel) == offsetof(gdn2_adamw_seg, numel) &&
                   offsetof(gdn2_cuda_adamw_seg, weight_decay) == offsetof(gdn2_adamw_seg, weight_decay),
               "gdn2_cuda_adamw_seg must match gdn2_adamw_seg");

int gdn2_backend_cuda_init(gdn2_backend *be) {
    memset(be, 0, sizeof *be);
    if (!gdn2_cuda_available()) return GDN2_ERR_UNSUPPORTED; /* message set: no device */
    gdn2_cuda_nn *nn = NULL;
    int rc = gdn2_cuda_nn_create(&nn);
    if (rc) return rc;
    be->name = "cuda";
    be->on_device = 1;
    be->act_bytes = 2;
    be->n_threads = 0;
    be->ctx = nn;
    be->stream = gdn2_cuda_nn_stream(nn);
    be->alloc = cu_alloc;
    be->release = cu_release;
    be->upload = cu_upload;
    be->download = cu_download;
    be->copy = cu_copy;
    be->zero = cu_zero;
    be->sync = cu_sync;
    be->destroy = cu_destroy;
    be->cast = cu_cast;
    be->linear_fwd = cu_linear_fwd;
    be->linear_fwd_batch = cu_linear_fwd_batch;
    be->linear_rmsnorm_swish_fwd = cu_linear_rmsnorm_swish_fwd;
    be->linear_bwd = cu_linear_bwd;
    be->add = cu_add;
    be->embed_fwd = cu_embed_fwd;
    be->embed_bwd = cu_embed_bwd;
    be->gather_rows = cu_gather_rows;
    be->scatter_rows = cu_scatter_rows;
    be->sigmoid = cu_sigmoid;
    be->dropout = cu_dropout;
    be->rmsnorm_fwd = cu_rmsnorm_fwd;
    be->add_rmsnorm_fwd = cu_add_rmsnorm_fwd;
    be->rmsnorm_bwd = cu_rmsnorm_bwd;
    be->rmsnorm_swish_fwd = cu_rmsnorm_swish_fwd;
    be->rmsnorm_swish_bwd = cu_rmsnorm_swish_bwd;
    be->conv_silu_fwd = cu_conv_silu_fwd;
    be->conv_silu_bwd = cu_conv_silu_bwd;
    be->conv_hist_update = cu_conv_hist_update;
    be->gates_fwd = cu_gates_fwd;
    be->gates_bwd = cu_gates_bwd;
    be->gdn2_fwd = cu_gdn2_fwd;
    be->gdn2_bwd = cu_gdn2_bwd;
    be->gdn2_reserve_bytes = cu_gdn2_reserve_bytes;
    be->swiglu_fwd = cu_swiglu_fwd;
    be->swiglu_bwd = cu_swiglu_bwd;
    be->rope_split = cu_rope_split;
    be->rope_split_bwd = cu_rope_split_bwd;
    be->attn_fwd = cu_attn_fwd;
    be->attn_bwd = cu_attn_bwd;
    be->conv_step = cu_conv_step, be->linear_conv_step = cu_linear_conv_step;
    be->linear_fwd_multi = cu_linear_fwd_multi;
    be->decode = cu_decode;
    be->attn_step = cu_attn_step;
    be->sample = cu_sample;
    be->host_alloc = cu_host_alloc;
    be->host_free = cu_host_free;
    be->upload_async = cu_upload_async;
    be->graph_begin = cu_graph_begin;
    be->graph_end = cu_graph_end;
    be->graph_launch = cu_graph_launch;
    be->graph_free = cu_graph_free;
    be->xent = cu_xent;
    be->sumsq = cu_sumsq;
    be->scale = cu_scale;
    be->adamw = cu_adamw;
    return GDN2_OK;
}

#else /* !GDN2_HAVE_CUDA */

int gdn2_backend_cuda_init(gdn2_backend *be) {
    memset(be, 0, sizeof *be);
    return gdn2_error(GDN2_ERR_UNSUPPORTED,
                      "the cuda backend is not available: gdn2 was built without CUDA (make CUDA=0, or no nvcc at "
                      "build time)");
}

#endif
