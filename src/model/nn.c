/* fp32 neural-net primitives (see nn.h): linear, depthwise causal conv + SiLU, RMSNorm, gated
 * RMSNorm. Plain loops parallelised with OpenMP; the GEMMs go through gdn2_sgemm. */
#include "nn.h"

#include <stdlib.h>
#include <string.h>

#include "../util/internal.h"

void gdn2_linear_fwd(int64_t N, int64_t in, int64_t out, const float *X, const float *W, const float *bias,
                     float *Y) {
    /* Y = X W^T (+ 1 bias^T) */
    if (bias) {
        for (int64_t n = 0; n < N; n++) memcpy(Y + n * out, bias, (size_t)out * sizeof(float));
        gdn2_sgemm(0, 1, (int)N, (int)out, (int)in, 1.0f, X, (int)in, W, (int)in, 1.0f, Y, (int)out);
    } else {
        gdn2_sgemm(0, 1, (int)N, (int)out, (int)in, 1.0f, X, (int)in, W, (int)in, 0.0f, Y, (int)out);
    }
}

void gdn2_linear_bwd(int64_t N, int64_t in, int64_t out, const float *X, const float *W, const float *dY,
                     float *dX, int accumulate, float *dW, float *dbias) {
    /* dX = dY W   ([N,out] x [out,in]) */
    if (dX) gdn2_sgemm(0, 0, (int)N, (int)in, (int)out, 1.0f, dY, (int)out, W, (int)in, accumulate ? 1.0f : 0.0f,
                       dX, (int)in);
    /* dW += dY^T X   ([out,N] x [N,in]) */
    if (dW) gdn2_sgemm(1, 0, (int)out, (int)in, (int)N, 1.0f, dY, (int)out, X, (int)in, 1.0f, dW, (int)in);
    /* dbias += sum over rows of dY */
    if (dbias)
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < out; j++) dbias[j] += dY[n * out + j];
}

/* Row s of xe (s in [0, T+W-1)) of sequence b: history rows first, then x; NULL = zero row. */
static inline const float *conv_row(const float *x, const float *hist, size_t hist_stride, int64_t b, int64_t T,
                                    int64_t D, int64_t W, int64_t s) {
    if (s >= W - 1) return x + (b * T + s - (W - 1)) * D;
    return hist ? hist + b * hist_stride + s * D : NULL;
}

/* c_t = sum_i wT[i] ⊙ xe_{t+i} into c (D floats); wT is the weight transposed to [W, D] */
static inline void conv_pre(const float *x, const float *hist, size_t hist_stride, int64_t b, int64_t t,
                            int64_t T, int64_t D, int64_t W, const float *wT, float *restrict c) {
    for (int64_t ch = 0; ch < D; ch++) c[ch] = 0.0f;
    for (int64_t i = 0; i < W; i++) {
        const float *restrict row = conv_row(x, hist, hist_stride, b, T, D, W, t + i);
        const float *restrict wi = wT + i * D;
        if (row)
            for (int64_t ch = 0; ch < D; ch++) c[ch] += wi[ch] * row[ch];
    }
}

static float *conv_wT(int64_t D, int64_t W, const float *w) {
    float *wT = gdn2_malloc((size_t)(D * W + 1) * sizeof(float), "conv weight transpose");
    if (wT)
        for (int64_t ch = 0; ch < D; ch++)
            for (int64_t i = 0; i < W; i++) wT[i * D + ch] = w[ch * W + i];
    return wT;
}

int gdn2_conv_silu_fwd(int64_t B, int64_t T, int64_t D, int64_t W, const float *x, const float *hist,
                       size_t hist_stride, const float *w, float *y, int n_threads) {
    float *wT = conv_wT(D, W, w);
    if (!wT) return GDN2_ERR_NOMEM;
    /* c_t[ch] = sum_i w[ch,i] xe_{t+i}[ch];  y_t = silu(c_t) */
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(n_threads))
    for (int64_t bt = 0; bt < B * T; bt++) {
        float *yt = y + bt * D;
        conv_pre(x, hist, hist_stride, bt / T, bt % T, T, D, W, wT, yt);
        for (int64_t ch = 0; ch < D; ch++) yt[ch] = gdn2_nn_silu(yt[ch]);
    }
    free(wT);
    return GDN2_OK;
}

int gdn2_conv_silu_bwd(int64_t B, int64_t T, int64_t D, int64_t W, const float *x, const float *hist,
                       size_t hist_stride, const float *w, const float *dy, float *dx, float *dw, int n_threads) {
    const int nt = gdn2_threads(n_threads);
    float *dc = gdn2_malloc((size_t)(B * T * D + 1) * sizeof(float), "conv backward dc");
    float *wT = conv_wT(D, W, w);
    float *part = gdn2_calloc((size_t)nt * (size_t)(W * D) + 1, sizeof(float), "conv backward dw partials");
    if (!dc || !wT || !part) { free(dc); free(wT); free(part); return GDN2_ERR_NOMEM; }
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        float *pw = part + (size_t)omp_get_thread_num() * (size_t)(W * D);
#else
        float *pw = part;
#endif
        /* dc_t = dy_t ⊙ silu'(c_t)   (c recomputed);  dwT[i] += dc_t ⊙ xe_{t+i} */
#pragma omp for schedule(static)
        for (int64_t bt = 0; bt < B * T; bt++) {
            const int64_t b = bt / T, t = bt % T;
            float *dct = dc + bt * D;
            conv_pre(x, hist, hist_stride, b, t, T, D, W, wT, dct);
            for (int64_t ch = 0; ch < D; ch++) dct[ch] = dy[bt * D + ch] * gdn2_nn_silu_grad(dct[ch]);
            for (int64_t i = 0; i < W; i++) {
                const float *restrict row = conv_row(x, hist, hist_stride, b, T, D, W, t + i);
                float *restrict pi = pw + i * D;
                if (row)
                    for (int64_t ch = 0; ch < D; ch++) pi[ch] += dct[ch] * row[ch];
            }
        }
        /* dx_t = sum_i wT[i] ⊙ dc_{t+W-1-i}  (terms with t+W-1-i < T) */
#pragma omp for schedule(static)
        for (int64_t bt = 0; bt < B * T; bt++) {
            const int64_t t = bt % T;
            float *restrict dxt = dx + bt * D;
            for (int64_t ch = 0; ch < D; ch++) dxt[ch] = 0.0f;
            for (int64_t i = 0; i < W; i++) {
                const int64_t tt = t + W - 1 - i;
                if (tt >= T) continue;
                const float *restrict dcr = dc + (bt + W - 1 - i) * D;
                const float *restrict wi = wT + i * D;
                for (int64_t ch = 0; ch < D; ch++) dxt[ch] += wi[ch] * dcr[ch];
            }
        }
    }
    for (int k = 0; k < nt; k++)
        for (int64_t i = 0; i < W; i++)
            for (int64_t ch = 0; ch < D; ch++) dw[ch * W + i] += part[(size_t)k * (size_t)(W * D) + i * D + ch];
    free(dc); free(wT); free(part);
    return GDN2_OK;
}

void gdn2_conv_hist_update(int64_t B, int64_t T, int64_t D, int64_t W, const float *x, float *hist,
                           size_t hist_stride) {
    /* new hist row j (j < W-1) = xe_{T+j}: the last W-1 rows of hist ++ x. Rows move towards the
     * front, so walking j upwards never reads a row already overwritten. */
    for (int64_t b = 0; b < B; b++) {
        float *hb = hist + b * hist_stride;
        const float *xb = x + b * T * D;
        for (int64_t j = 0; j < W - 1; j++) {
            const int64_t s = T + j;
            if (s >= W - 1) memcpy(hb + j * D, xb + (s - (W - 1)) * D, (size_t)D * sizeof(float));
            else memmove(hb + j * D, hb + s * D, (size_t)D * sizeof(float));
        }
    }
}

/* r = 1 / sqrt(mean(x^2) + eps) of one row of D */
static inline float rms_rstd(const float *xr, int64_t D, float eps) {
    float ss = 0.0f;
    for (int64_t i = 0; i < D; i++) ss += xr[i] * xr[i];
    return 1.0f / sqrtf(ss / (float)D + eps);
}

/* y = x r w,  r = 1 / sqrt(mean(x^2) + eps) */
void gdn2_rmsnorm_fwd(int64_t N, int64_t D, const float *x, const float *w, float eps, float *y, float *rstd,
                      int n_threads) {
    const int nt = gdn2_threads(n_threads);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D;
        const float r = rms_rstd(xr, D, eps);
        if (rstd) rstd[n] = r;
        float *yr = y + n * D;
        for (int64_t i = 0; i < D; i++) yr[i] = xr[i] * r * w[i];
    }
}

/* dx = r (dy w) - x r^3 / D * sum(dy w x);  dw += sum_n dy x r */
void gdn2_rmsnorm_bwd(int64_t N, int64_t D, const float *x, const float *w, const float *rstd, const float *dy,
                      float *dx, int accumulate, float *dw, int n_threads) {
    const int nt = gdn2_threads(n_threads);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D, *dr = dy + n * D;
        float r = rstd[n], dot = 0.0f;
        for (int64_t i = 0; i < D; i++) dot += dr[i] * w[i] * xr[i];
        float c = dot * r * r * r / (float)D;
        float *o = dx + n * D;
        if (accumulate)
            for (int64_t i = 0; i < D; i++) o[i] += r * dr[i] * w[i] - c * xr[i];
        else
            for (int64_t i = 0; i < D; i++) o[i] = r * dr[i] * w[i] - c * xr[i];
    }
    for (int64_t n = 0; n < N; n++) { /* row-serial: the same sum order whatever the thread count */
        const float *xr = x + n * D, *dr = dy + n * D;
        float r = rstd[n];
        for (int64_t i = 0; i < D; i++) dw[i] += dr[i] * xr[i] * r;
    }
}

void gdn2_rmsnorm_swish_fwd(int64_t N, int64_t D, const float *x, const float *gate, const float *w, float eps,
                            float *y, int n_threads) {
    /* y = (x r w) ⊙ a σ(a) */
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(n_threads))
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D, *ar = gate + n * D;
        const float r = rms_rstd(xr, D, eps);
        for (int64_t j = 0; j < D; j++) y[n * D + j] = xr[j] * r * w[j] * gdn2_nn_silu(ar[j]);
    }
}

int gdn2_rmsnorm_swish_bwd(int64_t N, int64_t D, const float *x, const float *gate, const float *w, float eps,
                           const float *dy, float *dx, float *dgate, float *dw, int n_threads) {
    const int nt = gdn2_threads(n_threads);
    float *part = gdn2_calloc((size_t)nt * (size_t)D + 1, sizeof(float), "gated rmsnorm backward dw partials");
    if (!part) return GDN2_ERR_NOMEM;
    /* With x̂ = x r and n = x̂ ⊙ w:   da = dy ⊙ n ⊙ silu'(a);   dn = dy ⊙ silu(a);
     * dw += sum dn ⊙ x̂;   dx̂ = dn ⊙ w;   dx = r (dx̂ − x̂ mean(dx̂ ⊙ x̂)) */
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        float *pw = part + (size_t)omp_get_thread_num() * D;
#else
        float *pw = part;
#endif
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * D, *ar = gate + n * D, *dyr = dy + n * D;
            float dot = 0.0f;
            const float r = rms_rstd(xr, D, eps);
            for (int64_t j = 0; j < D; j++) {
                const float xh = xr[j] * r, dn = dyr[j] * gdn2_nn_silu(ar[j]);
                dgate[n * D + j] = dyr[j] * xh * w[j] * gdn2_nn_silu_grad(ar[j]);
                pw[j] += dn * xh;
                dot += dn * w[j] * xh;
            }
            dot /= (float)D;
            for (int64_t j = 0; j < D; j++) {
                const float dn = dyr[j] * gdn2_nn_silu(ar[j]);
                dx[n * D + j] = r * (dn * w[j] - xr[j] * r * dot);
            }
        }
    }
    if (dw)
        for (int i = 0; i < nt; i++)
            for (int64_t j = 0; j < D; j++) dw[j] += part[(size_t)i * D + j];
    free(part);
    return GDN2_OK;
}
