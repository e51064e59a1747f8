/* Per-op timing of a model step through the backend table (bench/train_step.c, bench/decode_model.c):
 * profile_on(be) wraps every op of the table — CUDA events around the call, synchronised
 * (gdn2_cuda_timer_*), summed per op name into g_op_ms / g_op_n — and profile_off(be) puts the table
 * back. Each op synchronised: a profiled step is slower than a timed one; it is a breakdown only, and
 * the step's wall time minus profile_sum() is what runs between ops (host work, launches). Ops the
 * table has and this list does not (alloc, release, sync, the graph hooks) are not wrapped.
 * Timeline mode (profile_timeline_begin / _end around the step): the same wrappers put a mark before and
 * after each op (gdn2_cuda_timeline_*: events the host does not wait for) and the times are read once at the
 * end, so the ops run back to back as in a timed step; between consecutive marks of two ops is the device's
 * idle time between them (launch gaps, host waits). */
#ifndef GDN2_BENCH_OP_PROFILE_H
#define GDN2_BENCH_OP_PROFILE_H

#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "gdn2_cuda.h"
enum {
    OP_linear_fwd, OP_linear_bwd, OP_gdn2_fwd, OP_gdn2_bwd, OP_rope_split, OP_rope_split_bwd, OP_attn_fwd,
    OP_attn_bwd, OP_cast, OP_add, OP_embed_fwd, OP_embed_bwd, OP_gather_rows, OP_scatter_rows, OP_sigmoid,
    OP_rmsnorm_fwd, OP_add_rmsnorm_fwd, OP_rmsnorm_bwd, OP_rmsnorm_swish_fwd, OP_rmsnorm_swish_bwd, OP_conv_silu_fwd,
    OP_conv_silu_bwd, OP_gates_fwd, OP_gates_bwd, OP_swiglu_fwd, OP_swiglu_bwd, OP_xent, OP_sumsq, OP_scale,
    OP_adamw, OP_copy, OP_zero, OP_upload, OP_download, OP_dropout, OP_conv_hist_update, OP_conv_step, OP_decode,
    OP_attn_step, OP_sample, OP_linear_fwd_batch, OP_linear_rmsnorm_swish_fwd, OP_linear_conv_step, N_OP
};
static const char *const k_op[N_OP] = {
    "linear_fwd", "linear_bwd", "gdn2_fwd", "gdn2_bwd", "rope_split", "rope_split_bwd", "attn_fwd", "attn_bwd",
    "cast", "add", "embed_fwd", "embed_bwd", "gather_rows", "scatter_rows", "sigmoid", "rmsnorm_fwd",
    "add_rmsnorm_fwd", "rmsnorm_bwd", "rmsnorm_swish_fwd", "rmsnorm_swish_bwd", "conv_silu_fwd", "conv_silu_bwd", "gates_fwd",
    "gates_bwd", "swiglu_fwd", "swiglu_bwd", "xent", "sumsq", "scale", "adamw", "copy", "zero", "upload",
    "download", "dropout", "conv_hist_update", "conv_step", "decode", "attn_step", "sample", "linear_fwd_batch",
    "linear_rmsnorm_swish_fwd", "linear_conv_step"};
static double g_op_ms[N_OP];
static int g_op_n[N_OP];
static gdn2_backend g_orig;
/* timeline mode: the (op, first mark, second mark) of each call, in order */
#define TL_MAX_CALLS 16384
static int g_tl_on, g_tl_calls, g_tl_lost;
static struct { int op, m0, m1; } g_tl[TL_MAX_CALLS];
static void tl_call(int op, int m0, int m1) {
    if (m0 >= 0 && m1 > m0 && g_tl_calls < TL_MAX_CALLS) {
        g_tl[g_tl_calls].op = op, g_tl[g_tl_calls].m0 = m0, g_tl[g_tl_calls].m1 = m1;
        g_tl_calls++;
    } else {
        g_tl_lost++;
    }
}
#define TIMED(op, call)                                                                            \
    do {                                                                                           \
        if (g_tl_on) {                                                                             \
            const int m0_ = gdn2_cuda_timeline_mark();                                             \
            int rc_ = (call);                                                                      \
            tl_call(op, m0_, gdn2_cuda_timeline_mark());                                           \
            g_op_n[op]++;                                                                          \
            return rc_;                                                                            \
        }                                                                                          \
        gdn2_cuda_timer_start();                                                                   \
        int rc_ = (call);                                                                          \
        double ms_ = gdn2_cuda_timer_stop();                                                       \
        if (ms_ > 0) g_op_ms[op] += ms_;                                                           \
        g_op_n[op]++;                                                                              \
        return rc_;                                                                                \
    } while (0)
/* one wrapper per op: W(name, (params), (args)) */
#define W(name, params, args) \
    static int p_##name params { TIMED(OP_##name, g_orig.name args); }
W(linear_fwd, (gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *Wt, const float *bias,
               void *Y, int ydt, int acc), (be, N, in, out, X, Wt, bias, Y, ydt, acc))
W(linear_fwd_batch, (gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *Wt, size_t ws,
                     void *Y, size_t ys, int count, int act), (be, N, in, out, X, Wt, ws, Y, ys, count, act))
W(linear_rmsnorm_swish_fwd, (gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *Wt,
                             const float *bias, const void *o, const float *wn, int64_t D, float eps, void *z),
  (be, N, in, out, X, Wt, bias, o, wn, D, eps, z))
W(linear_conv_step, (gdn2_backend *be, int64_t n, int64_t in, int64_t D, const void *X, const void *Wl, size_t wls,
                     int count, void *x, size_t xs, int64_t Wd, float *hist, size_t ps, size_t hs, const int32_t *slots,
                     const float *w, size_t ws, void *y, size_t ys),
  (be, n, in, D, X, Wl, wls, count, x, xs, Wd, hist, ps, hs, slots, w, ws, y, ys))
W(linear_bwd, (gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *Wt, const void *dY,
               void *dX, int acc, float *dW, int dwa, float *db), (be, N, in, out, X, Wt, dY, dX, acc, dW, dwa, db))
W(gdn2_fwd, (gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q, const void *k,
             const void *v, const float *g, const void *b, const void *w, const float *h0, void *o, float *ht,
             void *rsv), (be, kernel, dm, op, q, k, v, g, b, w, h0, o, ht, rsv))
W(gdn2_bwd, (gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q, const void *k,
             const void *v, const float *g, const void *b, const void *w, const float *h0, const void *d_o, void *dq,
             void *dk, void *dv, float *dg, void *db, void *dw, void *rsv),
  (be, kernel, dm, op, q, k, v, g, b, w, h0, d_o, dq, dk, dv, dg, db, dw, rsv))
W(rope_split, (gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *qkv, void *q, void *k,
               void *v), (be, a, B, T, qkv, q, k, v))
W(rope_split_bwd, (gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *dq, const void *dk,
                   const void *dv, void *dqkv), (be, a, B, T, dq, dk, dv, dqkv))
W(attn_fwd, (gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *q, const void *k,
             const void *v, void *o, float *lse), (be, a, B, T, q, k, v, o, lse))
W(attn_bwd, (gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *q, const void *k,
             const void *v, const void *o, const float *lse, const void *dO, void *dq, void *dk, void *dv),
  (be, a, B, T, q, k, v, o, lse, dO, dq, dk, dv))
W(cast, (gdn2_backend *be, size_t n, const void *x, int xdt, void *y, int ydt), (be, n, x, xdt, y, ydt))
W(add, (gdn2_backend *be, size_t n, const float *a, const void *b, float *out), (be, n, a, b, out))
W(embed_fwd, (gdn2_backend *be, int64_t N, int64_t d, const int32_t *t, const float *wte, float *out),
  (be, N, d, t, wte, out))
W(embed_bwd, (gdn2_backend *be, int64_t N, int64_t d, const int32_t *th, const int32_t *t, const float *dout,
              float *dwte), (be, N, d, th, t, dout, dwte))
W(gather_rows, (gdn2_backend *be, int64_t nr, int64_t d, const int64_t *rows, const void *src, void *dst),
  (be, nr, d, rows, src, dst))
W(scatter_rows, (gdn2_backend *be, int64_t nr, int64_t N, int64_t d, const int64_t *rows, const void *src, void *dst),
  (be, nr, N, d, rows, src, dst))
W(sigmoid, (gdn2_backend *be, size_t n, void *x), (be, n, x))
W(rmsnorm_fwd, (gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *w, float eps, void *y,
                float *rstd), (be, N, D, x, w, eps, y, rstd))
W(add_rmsnorm_fwd, (gdn2_backend *be, int64_t N, int64_t D, const float *a, const void *b, float *out, const float *w,
                    float eps, void *y, float *rstd), (be, N, D, a, b, out, w, eps, y, rstd))
W(rmsnorm_bwd, (gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *w, const float *rstd,
                const void *dy, float *dx, int acc, void *dxa, float *dw), (be, N, D, x, w, rstd, dy, dx, acc, dxa, dw))
W(rmsnorm_swish_fwd, (gdn2_backend *be, int64_t N, int64_t D, const void *x, const void *gate, const float *w,
                      float eps, void *y), (be, N, D, x, gate, w, eps, y))
W(rmsnorm_swish_bwd, (gdn2_backend *be, int64_t N, int64_t D, const void *x, const void *gate, const float *w,
                      float eps, const void *dy, void *dx, void *dgate, float *dw),
  (be, N, D, x, gate, w, eps, dy, dx, dgate, dw))
W(conv_silu_fwd, (gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t Wd, const void *x, const float *hist,
                  size_t hs, const float *w, void *y), (be, B, T, D, Wd, x, hist, hs, w, y))
W(conv_silu_bwd, (gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t Wd, const void *x, const float *hist,
                  size_t hs, const float *w, const void *dy, void *dx, float *dw), (be, B, T, D, Wd, x, hist, hs, w, dy, dx, dw))
W(gates_fwd, (gdn2_backend *be, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb,
              const void *f, const void *sb, const void *sw, const float *A, const float *dt, float *g, void *b,
              void *w), (be, mixer, N, H, HV, K, V, cb, f, sb, sw, A, dt, g, b, w))
W(gates_bwd, (gdn2_backend *be, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb,
              const void *f, const void *sb, const void *sw, const float *g, const float *A, const float *dt,
              const float *dg, const void *db, const void *dw, void *df, void *dpb, void *dpw, float *dA, float *ddt),
  (be, mixer, N, H, HV, K, V, cb, f, sb, sw, g, A, dt, dg, db, dw, df, dpb, dpw, dA, ddt))
W(swiglu_fwd, (gdn2_backend *be, size_t n, const void *h1, const void *h2, void *a), (be, n, h1, h2, a))
W(swiglu_bwd, (gdn2_backend *be, size_t n, const void *h1, const void *h2, void *d1, void *d2), (be, n, h1, h2, d1, d2))
W(xent, (gdn2_backend *be, int64_t N, int64_t Vp, const float *lg, const int32_t *t, float sc, void *dl, float *loss),
  (be, N, Vp, lg, t, sc, dl, loss))
W(sumsq, (gdn2_backend *be, size_t n, const float *g, double *out), (be, n, g, out))
W(scale, (gdn2_backend *be, size_t n, float *x, float k), (be, n, x, k))
W(adamw, (gdn2_backend *be, const gdn2_adamw_seg *segs, int ns, const gdn2_adamw_hyper *h, float *w, const float *g,
          float *m, float *v, void *wa), (be, segs, ns, h, w, g, m, v, wa))
W(copy, (gdn2_backend *be, void *dst, const void *src, size_t bytes), (be, dst, src, bytes))
W(zero, (gdn2_backend *be, void *p, size_t bytes), (be, p, bytes))
W(upload, (gdn2_backend *be, void *dst, const void *src, size_t bytes), (be, dst, src, bytes))
W(download, (gdn2_backend *be, void *dst, const void *src, size_t bytes), (be, dst, src, bytes))
W(dropout, (gdn2_backend *be, size_t n, void *x, int dt, float p, uint64_t seed), (be, n, x, dt, p, seed))
W(conv_hist_update, (gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t Wd, const void *x, float *hist,
                     size_t hs), (be, B, T, D, Wd, x, hist, hs))
W(conv_step, (gdn2_backend *be, int64_t n, int64_t D, int64_t Wd, int count, const void *x, size_t xs, float *hist,
              size_t ps, size_t hs, const int32_t *slots, const float *w, size_t ws, void *y, size_t ys),
  (be, n, D, Wd, count, x, xs, hist, ps, hs, slots, w, ws, y, ys))
W(decode, (gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q, const void *k,
           const void *v, const void *g, const float *A_log, const float *dt, const void *b, const void *w, float *pool,
           size_t ss, const int32_t *slots, void *o), (be, kernel, dm, op, q, k, v, g, A_log, dt, b, w, pool, ss, slots, o))
W(attn_step, (gdn2_backend *be, const gdn2_attn_cfg *a, int64_t n, const void *qkv, const int64_t *pos,
              const int32_t *slots, int64_t cap, float *cache, size_t stride, void *o),
  (be, a, n, qkv, pos, slots, cap, cache, stride, o))
W(sample, (gdn2_backend *be, int64_t n, int64_t V, int64_t ld, const float *logits, const gdn2_sample_row_params *params,
           int32_t *tokens), (be, n, V, ld, logits, params, tokens))
#undef W

static void profile_on(gdn2_backend *be) {
    g_orig = *be;
#define S(name) be->name = p_##name
    S(linear_fwd), S(linear_bwd), S(gdn2_fwd), S(gdn2_bwd), S(rope_split), S(rope_split_bwd), S(attn_fwd);
    S(attn_bwd), S(cast), S(add), S(embed_fwd), S(embed_bwd), S(gather_rows), S(scatter_rows), S(sigmoid);
    S(rmsnorm_fwd), S(add_rmsnorm_fwd), S(rmsnorm_bwd), S(rmsnorm_swish_fwd), S(rmsnorm_swish_bwd), S(conv_silu_fwd);
    S(conv_silu_bwd), S(gates_fwd), S(gates_bwd), S(swiglu_fwd), S(swiglu_bwd), S(xent), S(sumsq), S(scale);
    S(adamw), S(copy), S(zero), S(upload), S(download), S(dropout), S(conv_hist_update), S(conv_step), S(decode);
    S(attn_step), S(sample), S(linear_fwd_batch), S(linear_rmsnorm_swish_fwd), S(linear_conv_step);
#undef S
}
static void profile_off(gdn2_backend *be) { *be = g_orig; }
static void profile_reset(void) {
    memset(g_op_ms, 0, sizeof g_op_ms);
    memset(g_op_n, 0, sizeof g_op_n);
}
/* " name ms/calls ..." of the ops that ran (ms scaled by `scale`: 1 for ms, 1e3 for us) to f */
static void profile_print(FILE *f, double scale) {
    for (int i = 0; i < N_OP; i++)
        if (g_op_n[i]) fprintf(f, " %s %.1f/%d", k_op[i], g_op_ms[i] * scale, g_op_n[i]);
}
/* timeline mode around one step: begin before it (after profile_reset and profile_on), end after it; end
 * fills g_op_ms from the marks and returns the device time from the first mark to the last (ms), the idle
 * time between ops in *between; -1 on failure (a call without its two marks counts as a failure: raise
 * TL_MAX_CALLS) */
static inline int profile_timeline_begin(void) {
    g_tl_calls = g_tl_lost = 0;
    if (gdn2_cuda_timeline_begin(2 * TL_MAX_CALLS)) return -1;
    g_tl_on = 1;
    return 0;
}
static inline double profile_timeline_end(double *between) {
    static float ms[2 * TL_MAX_CALLS];
    g_tl_on = 0;
    const int n = gdn2_cuda_timeline_end(ms, 2 * TL_MAX_CALLS);
    if (n < 2 || g_tl_lost) return -1.0;
    double total = 0.0, inside = 0.0;
    for (int i = 0; i + 1 < n; i++) total += ms[i];
    for (int c = 0; c < g_tl_calls; c++) {
        double t = 0.0;
        for (int i = g_tl[c].m0; i < g_tl[c].m1; i++) t += ms[i];
        g_op_ms[g_tl[c].op] += t, inside += t;
    }
    *between = total - inside;
    return total;
}
/* the sum of the ops' times (ms) */
static double profile_sum(void) {
    double s = 0;
    for (int i = 0; i < N_OP; i++) s += g_op_ms[i];
    return s;
}

#endif
