/* The CPU backend: fp32 everywhere, host memory, the ops of nn.c and src/ops behind the table of
 * backend.h. ACT is fp32, so `void *` activations are `float *` and the matmul view of the weights
 * is the master block itself. */
#include <stdlib.h>
#include <string.h>

#include "../util/internal.h"
#include "backend.h"
#include "gdn2_layer.h"
#include "nn.h"
#include "ops/sample.h"

#define F(p) ((float *)(p))
#define CF(p) ((const float *)(p))
#define NT(be) ((be)->n_threads)

static void *cpu_alloc(gdn2_backend *be, size_t bytes, const char *what) {
    (void)be;
    return gdn2_calloc(bytes ? bytes : 1, 1, what);
}
static void cpu_release(gdn2_backend *be, void *p) { (void)be, free(p); }
static int cpu_copy(gdn2_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes && dst != src) memmove(dst, src, bytes);
    return GDN2_OK;
}
static int cpu_zero(gdn2_backend *be, void *p, size_t bytes) {
    (void)be;
    if (bytes) memset(p, 0, bytes);
    return GDN2_OK;
}
static int cpu_sync(gdn2_backend *be) { (void)be; return GDN2_OK; }
static void cpu_destroy(gdn2_backend *be) { (void)be; }
static int cpu_cast(gdn2_backend *be, size_t n, const void *x, int xdt, void *y, int ydt) {
    (void)xdt, (void)ydt;
    return cpu_copy(be, y, x, n * sizeof(float));
}

/* through be->linear_fwd: a caller's replacement (the decode step's per-row products) applies too */
static int cpu_linear_fwd_batch(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                                size_t wstride, void *Y, size_t ystride, int count, int act) {
    const char *fn = "cpu linear_fwd_batch";
    if (act != GDN2_BE_NO_ACT && act != GDN2_BE_SIGMOID && act != GDN2_BE_SWIGLU)
        return gdn2_error(GDN2_ERR_ARG, "%s: act=%d (expected %d, %d or %d)", fn, act, GDN2_BE_NO_ACT, GDN2_BE_SIGMOID,
                          GDN2_BE_SWIGLU);
    if (act == GDN2_BE_SWIGLU && count != 2)
        return gdn2_error(GDN2_ERR_ARG, "%s: the swiglu act takes count=2 (w1, w2), got %d", fn, count);
    int rc = GDN2_OK;
    for (int i = 0; i < count && !rc; i++) {
        rc = be->linear_fwd(be, N, in, out, X, CF(W) + i * wstride, NULL, F(Y) + i * ystride, GDN2_DT_ACT, 0);
        if (!rc && act == GDN2_BE_SIGMOID) rc = be->sigmoid(be, (size_t)(N * out), F(Y) + i * ystride);
    }
    /* a = silu(h1) h2 into h1's place (elementwise: each element read before it is written) */
    if (!rc && act == GDN2_BE_SWIGLU) rc = be->swiglu_fwd(be, (size_t)(N * out), Y, F(Y) + ystride, Y);
    return rc;
}
/* the product into z, then the gated norm over it in place (each row's gate read before it is written) */
static int cpu_linear_rmsnorm_swish_fwd(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X,
                                        const void *W, const float *bias, const void *o, const float *wn, int64_t D,
                                        float eps, void *z) {
    if (D <= 0 || out % D != 0)
        return gdn2_error(GDN2_ERR_ARG, "cpu linear_rmsnorm_swish_fwd: out=%lld must be a multiple of the norm's row D=%lld",
                          (long long)out, (long long)D);
    int rc = be->linear_fwd(be, N, in, out, X, W, bias, z, GDN2_DT_ACT, 0);
    return rc ? rc : be->rmsnorm_swish_fwd(be, N * (out / D), D, o, z, wn, eps, z);
}
static int cpu_linear_fwd(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                          const float *bias, void *Y, int ydt, int accumulate) {
    (void)be, (void)ydt;
    if (!accumulate) {
        gdn2_linear_fwd(N, in, out, CF(X), CF(W), bias, F(Y));
        return GDN2_OK;
    }
    gdn2_sgemm(0, 1, (int)N, (int)out, (int)in, 1.0f, CF(X), (int)in, CF(W), (int)in, 1.0f, F(Y), (int)out);
    if (bias)
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < out; j++) F(Y)[n * out + j] += bias[j];
    return GDN2_OK;
}
static int cpu_linear_bwd(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                          const void *dY, void *dX, int accumulate, float *dW, int dw_acc, float *dbias) {
    (void)be;
    gdn2_linear_bwd(N, in, out, CF(X), CF(W), CF(dY), F(dX), accumulate, dW, dw_acc, dbias);
    return GDN2_OK;
}

static int cpu_add(gdn2_backend *be, size_t n, const float *a, const void *b, float *out) {
    const float *bb = CF(b);
#pragma omp parallel for num_threads(gdn2_threads(NT(be))) schedule(static) if (n > 65536)
    for (int64_t i = 0; i < (int64_t)n; i++) out[i] = a[i] + bb[i];
    return GDN2_OK;
}
static int cpu_embed_fwd(gdn2_backend *be, int64_t N, int64_t d, const int32_t *tokens, const float *wte,
                         float *out) {
    (void)be;
    for (int64_t i = 0; i < N; i++) memcpy(out + i * d, wte + (size_t)tokens[i] * d, (size_t)d * sizeof(float));
    return GDN2_OK;
}
static int cpu_embed_bwd(gdn2_backend *be, int64_t N, int64_t d, const int32_t *tokens_host, const int32_t *tokens,
                         const float *dout, float *dwte) {
    (void)be, (void)tokens;
    for (int64_t i = 0; i < N; i++) { /* serial scatter-add: deterministic */
        float *g = dwte + (size_t)tokens_host[i] * d;
        const float *s = dout + i * d;
        for (int64_t j = 0; j < d; j++) g[j] += s[j];
    }
    return GDN2_OK;
}
static int cpu_gather_rows(gdn2_backend *be, int64_t n_rows, int64_t d, const int64_t *rows, const void *src,
                           void *dst) {
    (void)be;
    for (int64_t r = 0; r < n_rows; r++) memcpy(F(dst) + r * d, CF(src) + rows[r] * d, (size_t)d * sizeof(float));
    return GDN2_OK;
}
static int cpu_scatter_rows(gdn2_backend *be, int64_t n_rows, int64_t N, int64_t d, const int64_t *rows,
                            const void *src, void *dst) {
    (void)be;
    memset(dst, 0, (size_t)(N * d) * sizeof(float));
    for (int64_t r = 0; r < n_rows; r++) memcpy(F(dst) + rows[r] * d, CF(src) + r * d, (size_t)d * sizeof(float));
    return GDN2_OK;
}
static int cpu_dropout(gdn2_backend *be, size_t n, void *x, int dt, float p, uint64_t seed) {
    (void)dt; /* ACT is fp32 on the CPU */
    gdn2_nn_dropout(n, F(x), p, seed, NT(be));
    return GDN2_OK;
}
static int cpu_sigmoid(gdn2_backend *be, size_t n, void *x) {
    float *p = F(x);
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(NT(be)))
    for (int64_t i = 0; i < (int64_t)n; i++) p[i] = gdn2_sigmoid_f32(p[i]);
    return GDN2_OK;
}

static int cpu_rmsnorm_fwd(gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *w, float eps,
                           void *y, float *rstd) {
    gdn2_rmsnorm_fwd(N, D, x, w, eps, F(y), rstd, NT(be));
    return GDN2_OK;
}
static int cpu_add_rmsnorm_fwd(gdn2_backend *be, int64_t N, int64_t D, const float *a, const void *b, float *out,
                               const float *w, float eps, void *y, float *rstd) {
    int rc = cpu_add(be, (size_t)(N * D), a, b, out);
    return rc ? rc : cpu_rmsnorm_fwd(be, N, D, out, w, eps, y, rstd);
}
static int cpu_rmsnorm_bwd(gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *w, const float *rstd,
                           const void *dy, float *dx, int accumulate, void *dx_act, float *dw) {
    if (dx_act && !dx) return gdn2_error(GDN2_ERR_ARG, "cpu rmsnorm_bwd: dx_act without dx");
    gdn2_rmsnorm_bwd(N, D, x, w, rstd, CF(dy), dx, accumulate, dw, NT(be));
    if (dx_act && dx_act != (void *)dx) memcpy(dx_act, dx, (size_t)(N * D) * sizeof(float)); /* ACT is fp32 here */
    return GDN2_OK;
}
static int cpu_rmsnorm_swish_fwd(gdn2_backend *be, int64_t N, int64_t D, const void *x, const void *gate,
                                 const float *w, float eps, void *y) {
    gdn2_rmsnorm_swish_fwd(N, D, CF(x), CF(gate), w, eps, F(y), NT(be));
    return GDN2_OK;
}
static int cpu_rmsnorm_swish_bwd(gdn2_backend *be, int64_t N, int64_t D, const void *x, const void *gate,
                                 const float *w, float eps, const void *dy, void *dx, void *dgate, float *dw) {
    return gdn2_rmsnorm_swish_bwd(N, D, CF(x), CF(gate), w, eps, CF(dy), F(dx), F(dgate), dw, NT(be));
}

static int cpu_conv_silu_fwd(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                             const float *hist, size_t hist_stride, const float *w, void *y) {
    return gdn2_conv_silu_fwd(B, T, D, W, CF(x), hist, hist_stride, w, F(y), NT(be));
}
static int cpu_conv_silu_bwd(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                             const float *hist, size_t hist_stride, const float *w, const void *dy, void *dx,
                             float *dw) {
    return gdn2_conv_silu_bwd(B, T, D, W, CF(x), hist, hist_stride, w, CF(dy), F(dx), dw, NT(be));
}
static int cpu_conv_hist_update(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                                float *hist, size_t hist_stride) {
    (void)be;
    gdn2_conv_hist_update(B, T, D, W, CF(x), hist, hist_stride);
    return GDN2_OK;
}
static int cpu_gates_fwd(gdn2_backend *be, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V,
                         float cb, const void *f, const void *sb, const void *sw, const float *A_log, const float *dt,
                         float *g, void *b, void *w) {
    gdn2_nn_gates_fwd(mixer, N, H, HV, K, V, cb, CF(f), CF(sb), CF(sw), A_log, dt, g, F(b), F(w), NT(be));
    return GDN2_OK;
}
static int cpu_gates_bwd(gdn2_backend *be, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V,
                         float cb, const void *f, const void *sb, const void *sw, const float *g, const float *A_log,
                         const float *dt, const float *dg, const void *db, const void *dw, void *df, void *dpb,
                         void *dpw, float *dA_log, float *ddt) {
    return gdn2_nn_gates_bwd(mixer, N, H, HV, K, V, cb, CF(f), CF(sb), CF(sw), g, A_log, dt, dg, CF(db), CF(dw),
                             F(df), F(dpb), F(dpw), dA_log, ddt, NT(be));
}

/* ---- the recurrence: the fp32 chunk kernels, or the float64 reference through an adapter ---- */
static double *to_f64(const float *x, size_t n) {
    if (!x) return NULL;
    double *y = gdn2_malloc((n ? n : 1) * sizeof(double), "layer float64 adapter");
    if (y)
        for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}
static void to_f32(float *y, const double *x, size_t n) {
    if (y && x)
        for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
}

/* float64 adapter around gdn2_ref_fwd/bwd: exact, slow; the conformance option and a fallback
 * while the fp32 kernels are not built in (GDN2_ERR_UNSUPPORTED). d_o NULL = forward only. */
static int rec_ref(const gdn2_dims *dm, const gdn2_opts *op, const float *q, const float *k, const float *v,
                   const float *g, const float *b, const float *w, const float *h0, float *o, float *ht,
                   const float *d_o, float *dq, float *dk, float *dv, float *dg, float *db, float *dw) {
    const size_t nk = (size_t)(dm->B * dm->T * dm->H * dm->K), nv = (size_t)(dm->B * dm->T * dm->HV * dm->V);
    const size_t ns = (size_t)(dm->B * dm->HV * dm->K * dm->V);
    enum { Q, Kk, Vv, Gg, Bb, Ww, H0, O, HT, DO, DQ, DK, DV, DG, DB, DW, NBUF };
    double *buf[NBUF] = {0};
    int rc = GDN2_OK;
    buf[Q] = to_f64(q, nk); buf[Kk] = to_f64(k, nk); buf[Vv] = to_f64(v, nv);
    buf[Gg] = to_f64(g, nk); buf[Bb] = to_f64(b, nk); buf[Ww] = to_f64(w, nv);
    buf[H0] = to_f64(h0, ns);
    if (!d_o) {
        buf[O] = gdn2_malloc(nv * sizeof(double) + 8, "layer float64 adapter o");
        if (ht) buf[HT] = gdn2_malloc(ns * sizeof(double) + 8, "layer float64 adapter ht");
    } else {
        buf[DO] = to_f64(d_o, nv);
        for (int i = DQ; i <= DW; i++)
            buf[i] = gdn2_malloc(((i == DV || i == DW) ? nv : nk) * sizeof(double) + 8, "layer float64 adapter grads");
    }
    for (int i = 0; i < NBUF; i++) {
        const int needed = i <= Ww || (i == H0 && h0) || (!d_o && (i == O || (i == HT && ht))) || (d_o && i >= DO);
        if (needed && !buf[i]) { rc = GDN2_ERR_NOMEM; goto done; }
    }
    gdn2_fwd_tensors_f64 t = {buf[Q], buf[Kk], buf[Vv], buf[Gg], buf[Bb], buf[Ww], buf[H0], NULL, NULL,
                              buf[O], buf[HT]};
    if (!d_o) {
        rc = gdn2_ref_fwd(dm, op, &t);
        if (!rc) { to_f32(o, buf[O], nv); to_f32(ht, buf[HT], ns); }
    } else {
        gdn2_bwd_tensors_f64 gt = {buf[DO], NULL, buf[DQ], buf[DK], buf[DV], buf[DG], buf[DB], buf[DW], NULL, NULL, NULL};
        rc = gdn2_ref_bwd(dm, op, &t, &gt);
        if (!rc) {
            to_f32(dq, buf[DQ], nk); to_f32(dk, buf[DK], nk); to_f32(dv, buf[DV], nv);
            to_f32(dg, buf[DG], nk); to_f32(db, buf[DB], nk); to_f32(dw, buf[DW], nv);
        }
    }
done:
    for (int i = 0; i < NBUF; i++) free(buf[i]);
    return rc;
}

static int cpu_gdn2_fwd(gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q,
                        const void *k, const void *v, const float *g, const void *b, const void *w, const float *h0,
                        void *o, float *ht, void *reserve) {
    (void)be;
    if (kernel == GDN2_KERNEL_CHUNK) {
        gdn2_fwd_tensors t = {CF(q), CF(k), CF(v), g, CF(b), CF(w), h0, NULL, NULL, F(o), ht};
        int rc = reserve ? gdn2_chunk_fwd_save(dm, op, &t, reserve, gdn2_chunk_saved_size(dm, op))
                         : gdn2_chunk_fwd(dm, op, &t);
        if (rc != GDN2_ERR_UNSUPPORTED) return rc;
        gdn2_clear_error();
    }
    return rec_ref(dm, op, CF(q), CF(k), CF(v), g, CF(b), CF(w), h0, F(o), ht, NULL, NULL, NULL, NULL, NULL, NULL,
                   NULL);
}
static int cpu_gdn2_bwd(gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q,
                        const void *k, const void *v, const float *g, const void *b, const void *w, const float *h0,
                        const void *d_o, void *dq, void *dk, void *dv, float *dg, void *db, void *dw,
                        void *reserve) {
    (void)be;
    if (kernel == GDN2_KERNEL_CHUNK) {
        gdn2_fwd_tensors t = {CF(q), CF(k), CF(v), g, CF(b), CF(w), h0, NULL, NULL, NULL, NULL};
        gdn2_bwd_tensors gt = {CF(d_o), NULL, F(dq), F(dk), F(dv), dg, F(db), F(dw), NULL, NULL, NULL};
        int rc = reserve ? gdn2_chunk_bwd_saved(dm, op, &t, &gt, reserve, gdn2_chunk_saved_size(dm, op))
                         : gdn2_chunk_bwd(dm, op, &t, &gt);
        if (rc != GDN2_ERR_UNSUPPORTED) return rc;
        gdn2_clear_error();
    }
    return rec_ref(dm, op, CF(q), CF(k), CF(v), g, CF(b), CF(w), h0, NULL, NULL, CF(d_o), F(dq), F(dk), F(dv), dg,
                   F(db), F(dw));
}

/* the saved pair's buffer (gdn2_chunk_saved_size); the reference kernel keeps nothing */
static size_t cpu_gdn2_reserve_bytes(const gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op) {
    (void)be;
    return kernel == GDN2_KERNEL_CHUNK ? gdn2_chunk_saved_size(dm, op) : 0;
}

/* ---- decoding ---------------------------------------------------------------------------- */
/* per part and sequence: the conv of the forward (T = 1) from its cache, then the cache moves on */
static int cpu_conv_step(gdn2_backend *be, int64_t n, int64_t D, int64_t W, int count, const void *x, size_t xs,
                         float *hist, size_t hs, size_t hist_stride, const int32_t *slots, const float *w, size_t ws,
                         void *y, size_t ys) {
    for (int p = 0; p < count; p++) {
        const float *xp = CF(x) + p * xs, *wp = w + p * ws;
        float *yp = F(y) + p * ys;
        for (int64_t i = 0; i < n; i++) {
            float *h = hist + p * hs + (size_t)(slots ? slots[i] : i) * hist_stride;
            int rc = gdn2_conv_silu_fwd(1, 1, D, W, xp + i * D, h, hist_stride, wp, yp + i * D, NT(be));
            if (rc) return rc;
            gdn2_conv_hist_update(1, 1, D, W, xp + i * D, h, hist_stride);
        }
    }
    return GDN2_OK;
}
/* the two calls (be->: a caller's per-row products apply) */
static int cpu_linear_conv_step(gdn2_backend *be, int64_t n, int64_t in, int64_t D, const void *X, const void *Wl,
                                size_t wlstride, int count, void *x, size_t xs, int64_t W, float *hist, size_t hs,
                                size_t hist_stride, const int32_t *slots, const float *w, size_t ws, void *y, size_t ys) {
    int rc = be->linear_fwd_batch(be, n, in, D, X, Wl, wlstride, x, xs, count, GDN2_BE_NO_ACT);
    return rc ? rc : be->conv_step(be, n, D, W, count, x, xs, hist, hs, hist_stride, slots, w, ws, y, ys);
}
/* one call per product (be->: a caller's per-row products apply) */
static int cpu_linear_fwd_multi(gdn2_backend *be, int64_t n, int64_t in, const void *X, const gdn2_product *p, int np) {
    if (np < 0 || np > GDN2_PRODUCT_MAX || (np && !p))
        return gdn2_error(GDN2_ERR_ARG, "cpu linear_fwd_multi: np=%d (expected 0..%d products)", np, GDN2_PRODUCT_MAX);
    int rc = GDN2_OK;
    for (int i = 0; i < np && !rc; i++) {
        const gdn2_product *q = &p[i];
        if (q->act == GDN2_PRODUCT_CONV)
            rc = be->linear_conv_step(be, n, in, q->out, X, q->W, q->wstride, q->count, q->Y, q->ystride, q->ksize,
                                      q->hist, q->hs, q->hist_stride, q->slots, q->cw, q->cws, q->y, q->ys);
        else if (q->act == GDN2_PRODUCT_STORE || q->act == GDN2_PRODUCT_SIGMOID)
            rc = be->linear_fwd_batch(be, n, in, q->out, X, q->W, q->wstride, q->Y, q->ystride, q->count,
                                      q->act == GDN2_PRODUCT_SIGMOID ? GDN2_BE_SIGMOID : GDN2_BE_NO_ACT);
        else
            rc = gdn2_error(GDN2_ERR_ARG, "cpu linear_fwd_multi: product %d: act=%d (expected %d, %d or %d)", i, q->act,
                            GDN2_PRODUCT_STORE, GDN2_PRODUCT_SIGMOID, GDN2_PRODUCT_CONV);
    }
    return rc;
}
/* per sequence: gdn2_decode_step on its own state (a one-slot pool), or the float64 reference from
 * the state (kernel REFERENCE, or sizes the fp32 decode kernel does not take) */
static int cpu_decode(gdn2_backend *be, int kernel, const gdn2_dims *dm, const gdn2_opts *op, const void *q,
                      const void *k, const void *v, const void *gin, const float *A_log, const float *dt_bias,
                      const void *b, const void *w, float *pool, size_t slot_stride, const int32_t *slots, void *o) {
    const int64_t n = dm->B, Dk = dm->H * dm->K, Dv = dm->HV * dm->V;
    const gdn2_dims d1 = {1, 1, dm->H, dm->HV, dm->K, dm->V};
    int rc = GDN2_OK;
    /* the gate from the pre-activation: gates_fwd's values first (then as with a given log-decay) */
    float *gbuf = NULL;
    if (A_log) {
        if (!dt_bias) return gdn2_error(GDN2_ERR_ARG, "decode: A_log given without dt_bias");
        if (!(gbuf = gdn2_malloc((size_t)(n * Dk) * sizeof(float) + 8, "decode: the log-decay"))) return GDN2_ERR_NOMEM;
        rc = be->gates_fwd(be, 0, n, dm->H, dm->HV, dm->K, dm->V, 1.0f, gin, NULL, NULL, A_log, dt_bias, gbuf, NULL, NULL);
    }
    const float *g = A_log ? gbuf : CF(gin);
    for (int64_t i = 0; i < n && !rc; i++) {
        float *S = pool + (size_t)(slots ? slots[i] : i) * slot_stride;
        if (kernel == GDN2_KERNEL_CHUNK) {
            const int32_t slot = 0;
            gdn2_decode_tensors t = {CF(q) + i * Dk, CF(k) + i * Dk, CF(v) + i * Dv, g + i * Dk, CF(b) + i * Dk,
                                     CF(w) + i * Dv, NULL, NULL, F(o) + i * Dv, S, 1, &slot, GDN2_STATE_F32};
            rc = gdn2_decode_step(&d1, op, &t);
            if (rc != GDN2_ERR_UNSUPPORTED) continue;
            gdn2_clear_error();
        }
        rc = rec_ref(&d1, op, CF(q) + i * Dk, CF(k) + i * Dk, CF(v) + i * Dv, g + i * Dk, CF(b) + i * Dk,
                     CF(w) + i * Dv, S, F(o) + i * Dv, S, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    }
    free(gbuf);
    return rc;
}
static int cpu_attn_step(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t n, const void *qkv, const int64_t *pos,
                         const int32_t *slots, int64_t cap, float *cache, size_t stride, void *o) {
    return gdn2_nn_attn_step(a, n, CF(qkv), pos, slots, cap, cache, stride, F(o), NT(be));
}
/* rows in parallel, a scratch per thread (each row's draw is its own: the thread count changes nothing) */
static int cpu_sample(gdn2_backend *be, int64_t n, int64_t V, int64_t ld, const float *logits,
                      const gdn2_sample_row_params *params, int32_t *tokens) {
    if (n < 0 || V < 1 || ld < V) return gdn2_error(GDN2_ERR_ARG, "sample: n %lld, V %lld, ld %lld", (long long)n, (long long)V, (long long)ld);
    int bad = 0;
#pragma omp parallel num_threads(gdn2_threads(NT(be))) if (n > 1 && V >= 4096) reduction(| : bad)
    {
        void *scratch = malloc(gdn2_sample_scratch_bytes(V));
        if (!scratch) bad = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n; i++)
            if (scratch) tokens[i] = gdn2_sample_row(logits + (size_t)i * (size_t)ld, V, &params[i], scratch);
        free(scratch);
    }
    return bad ? gdn2_error(GDN2_ERR_NOMEM, "sample: out of memory for the candidates of %lld tokens", (long long)V) : GDN2_OK;
}

static int cpu_swiglu_fwd(gdn2_backend *be, size_t n, const void *h1, const void *h2, void *a) {
    gdn2_nn_swiglu_fwd(n, CF(h1), CF(h2), F(a), NT(be));
    return GDN2_OK;
}
static int cpu_swiglu_bwd(gdn2_backend *be, size_t n, const void *h1, const void *h2, void *dh1, void *dh2) {
    gdn2_nn_swiglu_bwd(n, CF(h1), CF(h2), F(dh1), F(dh2), NT(be));
    return GDN2_OK;
}
static int cpu_rope_split(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *qkv, void *q,
                          void *k, void *v) {
    return gdn2_nn_rope_split(a, B, T, CF(qkv), F(q), F(k), F(v), NT(be));
}
static int cpu_rope_split_bwd(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *dq,
                              const void *dk, const void *dv, void *dqkv) {
    return gdn2_nn_rope_split_bwd(a, B, T, CF(dq), CF(dk), CF(dv), F(dqkv), NT(be));
}
static int cpu_attn_fwd(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *q, const void *k,
                        const void *v, void *o, float *lse) {
    return gdn2_nn_attn_fwd(a, B, T, CF(q), CF(k), CF(v), F(o), lse, NT(be));
}
static int cpu_attn_bwd(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const void *q, const void *k,
                        const void *v, const void *o, const float *lse, const void *dO, void *dq, void *dk, void *dv) {
    return gdn2_nn_attn_bwd(a, B, T, CF(q), CF(k), CF(v), CF(o), lse, CF(dO), F(dq), F(dk), F(dv), NT(be));
}
static int cpu_xent(gdn2_backend *be, int64_t N, int64_t Vp, const float *logits, const int32_t *targets, float scale,
                    void *dlogits, float *loss) {
    gdn2_nn_xent(N, Vp, logits, targets, scale, F(dlogits), loss, NT(be));
    return GDN2_OK;
}
static int cpu_sumsq(gdn2_backend *be, size_t n, const float *g, double *out) {
    (void)be;
    *out = gdn2_nn_sumsq(n, g);
    return GDN2_OK;
}
static int cpu_scale(gdn2_backend *be, size_t n, float *x, float k) {
    (void)be;
    for (size_t i = 0; i < n; i++) x[i] *= k;
    return GDN2_OK;
}
static int cpu_adamw(gdn2_backend *be, const gdn2_adamw_seg *segs, int n_segs, const gdn2_adamw_hyper *h, float *w,
                     const float *g, float *m, float *v, void *w_act) {
    gdn2_nn_adamw(segs, n_segs, h, w, g, m, v, NT(be));
    if (w_act && w_act != (void *)w) /* the segments only, as the CUDA kernel writes them */
        for (int i = 0; i < n_segs; i++)
            memcpy(F(w_act) + segs[i].offset, w + segs[i].offset, segs[i].numel * sizeof(float));
    return GDN2_OK;
}

void gdn2_backend_cpu_init(gdn2_backend *be, int n_threads) {
    memset(be, 0, sizeof *be);
    be->name = "cpu";
    be->on_device = 0;
    be->act_bytes = sizeof(float);
    be->n_threads = n_threads;
    be->alloc = cpu_alloc, be->release = cpu_release, be->upload = cpu_copy, be->download = cpu_copy;
    be->copy = cpu_copy, be->zero = cpu_zero, be->sync = cpu_sync, be->destroy = cpu_destroy, be->cast = cpu_cast;
    be->linear_fwd = cpu_linear_fwd, be->linear_bwd = cpu_linear_bwd, be->linear_fwd_batch = cpu_linear_fwd_batch;
    be->linear_rmsnorm_swish_fwd = cpu_linear_rmsnorm_swish_fwd;
    be->add = cpu_add, be->embed_fwd = cpu_embed_fwd, be->embed_bwd = cpu_embed_bwd;
    be->gather_rows = cpu_gather_rows, be->scatter_rows = cpu_scatter_rows, be->sigmoid = cpu_sigmoid, be->dropout = cpu_dropout;
    be->rmsnorm_fwd = cpu_rmsnorm_fwd, be->rmsnorm_bwd = cpu_rmsnorm_bwd;
    be->add_rmsnorm_fwd = cpu_add_rmsnorm_fwd;
    be->rmsnorm_swish_fwd = cpu_rmsnorm_swish_fwd, be->rmsnorm_swish_bwd = cpu_rmsnorm_swish_bwd;
    be->conv_silu_fwd = cpu_conv_silu_fwd, be->conv_silu_bwd = cpu_conv_silu_bwd;
    be->conv_hist_update = cpu_conv_hist_update;
    be->gates_fwd = cpu_gates_fwd, be->gates_bwd = cpu_gates_bwd;
    be->gdn2_fwd = cpu_gdn2_fwd, be->gdn2_bwd = cpu_gdn2_bwd, be->gdn2_reserve_bytes = cpu_gdn2_reserve_bytes;
    be->swiglu_fwd = cpu_swiglu_fwd, be->swiglu_bwd = cpu_swiglu_bwd;
    be->rope_split = cpu_rope_split, be->rope_split_bwd = cpu_rope_split_bwd;
    be->attn_fwd = cpu_attn_fwd, be->attn_bwd = cpu_attn_bwd;
    be->conv_step = cpu_conv_step, be->decode = cpu_decode, be->attn_step = cpu_attn_step;
    be->linear_conv_step = cpu_linear_conv_step;
    be->linear_fwd_multi = cpu_linear_fwd_multi;
    be->sample = cpu_sample;
    be->xent = cpu_xent, be->sumsq = cpu_sumsq, be->scale = cpu_scale, be->adamw = cpu_adamw;
    /* host_alloc, upload_async and the graph hooks stay NULL: the CPU runs every op as it comes */
}

int gdn2_backend_init(gdn2_backend *be, const char *device, int n_threads) {
    if (!device || !strcmp(device, "cpu")) {
        gdn2_backend_cpu_init(be, n_threads);
        return GDN2_OK;
    }
    if (!strcmp(device, "cuda")) return gdn2_backend_cuda_init(be);
    return gdn2_error(GDN2_ERR_ARG, "device '%s': expected cpu or cuda", device);
}
