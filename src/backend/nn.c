/* fp32 neural-net primitives (see nn.h): linear, depthwise causal conv + SiLU, RMSNorm, gated
 * RMSNorm. Plain loops parallelised with OpenMP; the GEMMs go through gdn2_sgemm. */
#include "nn.h"

#include <stdlib.h>
#include <string.h>

#include "../util/internal.h"
#include "../util/rng.h"
#include "../util/rope.h"

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
                     float *dX, int accumulate, float *dW, int dw_acc, float *dbias) {
    /* dX = dY W   ([N,out] x [out,in]) */
    if (dX) gdn2_sgemm(0, 0, (int)N, (int)in, (int)out, 1.0f, dY, (int)out, W, (int)in, accumulate ? 1.0f : 0.0f,
                       dX, (int)in);
    /* dW (+)= dY^T X   ([out,N] x [N,in]); no rows: dW = 0 unless accumulating */
    if (dW && N > 0)
        gdn2_sgemm(1, 0, (int)out, (int)in, (int)N, 1.0f, dY, (int)out, X, (int)in, dw_acc ? 1.0f : 0.0f, dW, (int)in);
    else if (dW && !dw_acc)
        memset(dW, 0, (size_t)(out * in) * sizeof(float));
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
        for (int64_t ch = 0; ch < D; ch++) yt[ch] = gdn2_silu_f32(yt[ch]);
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
            for (int64_t ch = 0; ch < D; ch++) dct[ch] = dy[bt * D + ch] * gdn2_silu_grad_f32(dct[ch]);
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
        for (int64_t j = 0; j < D; j++) y[n * D + j] = xr[j] * r * w[j] * gdn2_silu_f32(ar[j]);
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
                const float xh = xr[j] * r, dn = dyr[j] * gdn2_silu_f32(ar[j]);
                dgate[n * D + j] = dyr[j] * xh * w[j] * gdn2_silu_grad_f32(ar[j]);
                pw[j] += dn * xh;
                dot += dn * w[j] * xh;
            }
            dot /= (float)D;
            for (int64_t j = 0; j < D; j++) {
                const float dn = dyr[j] * gdn2_silu_f32(ar[j]);
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

/* ------------------------------------------------------------------------------------------ */
/* the recurrent layer's gates (formulas: nn.h)                                               */
/* ------------------------------------------------------------------------------------------ */
void gdn2_nn_gates_fwd(int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb, const float *f,
                       const float *sb, const float *sw, const float *A_log, const float *dt, float *g, float *b,
                       float *w, int n_threads) {
    const int64_t G = HV / H;
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(n_threads))
    for (int64_t n = 0; n < N; n++) {
        for (int64_t h = 0; h < H; h++) {
            const float a = expf(A_log[h]);
            float *gr = g ? g + (n * H + h) * K : NULL, *br = b ? b + (n * H + h) * K : NULL;
            if (!g) {
            } else if (mixer == 2) {
                const float gs = -a * gdn2_softplus_f32(f[n * H + h] + dt[h]);
                for (int64_t i = 0; i < K; i++) gr[i] = gs;
            } else {
                for (int64_t i = 0; i < K; i++) gr[i] = -a * gdn2_softplus_f32(f[(n * H + h) * K + i] + dt[h * K + i]);
            }
            if (!br) {
            } else if (mixer == 0) {
                for (int64_t i = 0; i < K; i++) br[i] = cb * sb[(n * H + h) * K + i];
            } else {
                for (int64_t i = 0; i < K; i++) br[i] = cb * sb[n * H + h];
            }
        }
        for (int64_t hv = 0; w && hv < HV; hv++) {
            float *wr = w + (n * HV + hv) * V;
            if (mixer == 0)
                memcpy(wr, sw + (n * HV + hv) * V, (size_t)V * sizeof(float));
            else
                for (int64_t j = 0; j < V; j++) wr[j] = cb * sb[n * H + hv / G];
        }
    }
}

int gdn2_nn_gates_bwd(int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb, const float *f,
                      const float *sb, const float *sw, const float *g, const float *A_log, const float *dt,
                      const float *dg, const float *db, const float *dw, float *df, float *dpb, float *dpw,
                      float *dA_log, float *ddt, int n_threads) {
    const int64_t G = HV / H, Dk = H * K, Dv = HV * V;
    /* decay. gdn2/kda: u = f + dt, a = e^{A_log[h]}, g = -a softplus(u):
     *   df = dg (-a) softplus'(u);  d dt += sum_n df;  dA_log[h] += sum dg g.
     * gdn: the same on the scalar per head with dg summed over K. The token sums run in double
     * (dA_log adds up N K terms of both signs), one partial per thread, added in thread order. */
    const int64_t ndt = mixer == 2 ? H : Dk, nacc = H + ndt;
    const int nth = gdn2_threads(n_threads);
    double *acc = calloc((size_t)(nacc * nth), sizeof(double));
    if (!acc) return gdn2_error(GDN2_ERR_NOMEM, "gdn2 layer backward: out of memory for the gate sums");
#pragma omp parallel num_threads(nth)
    {
#ifdef _OPENMP
        double *dA = acc + (size_t)omp_get_thread_num() * (size_t)nacc;
#else
        double *dA = acc;
#endif
        double *dd = dA + H;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++) {
                const float a = expf(A_log[h]);
                const float *dgr = dg + (n * H + h) * K;
                if (mixer == 2) {
                    float s = 0.0f;
                    for (int64_t i = 0; i < K; i++) s += dgr[i];
                    const float u = f[n * H + h] + dt[h], gs = -a * gdn2_softplus_f32(u);
                    const float d = s * (-a) * gdn2_softplus_grad_f32(u);
                    dA[h] += (double)s * gs;
                    dd[h] += d;
                    df[n * H + h] = d;
                } else {
                    const float *fr = f + (n * H + h) * K, *dtr = dt + h * K;
                    for (int64_t i = 0; i < K; i++) {
                        const float u = fr[i] + dtr[i];
                        const float d = dgr[i] * (-a) * gdn2_softplus_grad_f32(u);
                        dA[h] += (double)dgr[i] * g[(n * H + h) * K + i];
                        dd[h * K + i] += d;
                        df[(n * H + h) * K + i] = d;
                    }
                }
            }
    }
    for (int t = 1; t < nth; t++)
        for (int64_t i = 0; i < nacc; i++) acc[i] += acc[(size_t)t * (size_t)nacc + i];
    for (int64_t h = 0; h < H; h++) dA_log[h] += (float)acc[h];
    for (int64_t i = 0; i < ndt; i++) ddt[i] += (float)acc[H + i];
    free(acc);
    /* erase/write gates. gdn2: b = cb s(pb): dpb = db cb s (1-s);  w = s(pw): dpw = dw s (1-s).
     * kda/gdn: b = w = cb beta: dbeta[n,h] = cb (sum_i db[n,h,i] + sum_{hv in group h} sum_j dw[n,hv,j]);
     * dpb = dbeta beta (1-beta) */
    if (mixer == 0) {
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int64_t i = 0; i < N * Dk; i++) dpb[i] = db[i] * cb * sb[i] * (1.0f - sb[i]);
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int64_t i = 0; i < N * Dv; i++) dpw[i] = dw[i] * sw[i] * (1.0f - sw[i]);
    } else {
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++) {
                float s = 0.0f;
                for (int64_t i = 0; i < K; i++) s += db[(n * H + h) * K + i];
                for (int64_t j = 0; j < G * V; j++) s += dw[(n * HV + h * G) * V + j];
                const float be = sb[n * H + h];
                dpb[n * H + h] = s * cb * be * (1.0f - be);
            }
    }
    return GDN2_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* SwiGLU, cross-entropy, optimizer                                                           */
/* ------------------------------------------------------------------------------------------ */
void gdn2_nn_swiglu_fwd(size_t n, const float *h1, const float *h2, float *a, int n_threads) {
#pragma omp parallel for num_threads(gdn2_threads(n_threads)) schedule(static)
    for (int64_t i = 0; i < (int64_t)n; i++) a[i] = h1[i] * gdn2_sigmoid_f32(h1[i]) * h2[i];
}

void gdn2_nn_swiglu_bwd(size_t n, const float *h1, const float *h2, float *dh1, float *dh2, int n_threads) {
    /* dh2 = da silu(h1);  dh1 = da h2 silu'(h1),  silu'(z) = s (1 + z (1 - s)) */
#pragma omp parallel for num_threads(gdn2_threads(n_threads)) schedule(static)
    for (int64_t i = 0; i < (int64_t)n; i++) {
        float z = h1[i], s = gdn2_sigmoid_f32(z), da = dh1[i];
        dh2[i] = da * z * s;
        dh1[i] = da * h2[i] * s * (1.0f + z * (1.0f - s));
    }
}

/* loss_n = logsumexp(z_n) - z_n[y_n];  d loss_n / dz = softmax(z_n) - onehot(y_n) */
void gdn2_nn_xent(int64_t N, int64_t Vp, const float *logits, const int32_t *targets, float scale, float *dlogits,
                  float *loss, int n_threads) {
#pragma omp parallel for num_threads(gdn2_threads(n_threads)) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits + n * Vp;
        float *dz = dlogits ? dlogits + n * Vp : NULL;
        int32_t y = targets[n];
        if (y == GDN2_IGNORE) {
            loss[n] = 0.0f;
            if (dz) memset(dz, 0, (size_t)Vp * sizeof(float));
            continue;
        }
        float mx = -INFINITY;
        for (int64_t i = 0; i < Vp; i++) mx = z[i] > mx ? z[i] : mx;
        double s = 0.0;
        for (int64_t i = 0; i < Vp; i++) s += exp((double)(z[i] - mx));
        double lse = mx + log(s);
        loss[n] = (float)(lse - z[y]);
        if (dz) {
            for (int64_t i = 0; i < Vp; i++) dz[i] = scale * (float)exp((double)z[i] - lse);
            dz[y] -= scale;
        }
    }
}

void gdn2_nn_adamw(const gdn2_adamw_seg *segs, int n_segs, const gdn2_adamw_hyper *h, float *w, const float *g,
                   float *m, float *v, int n_threads) {
    const int nt = gdn2_threads(n_threads);
    for (int t = 0; t < n_segs; t++) {
        const float decay = 1.0f - h->lr * segs[t].weight_decay;
        float *ws = w + segs[t].offset, *ms = m + segs[t].offset, *vs = v + segs[t].offset;
        const float *gs = g + segs[t].offset;
        const int64_t n = (int64_t)segs[t].numel;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) {
            float gi = gs[i] * h->grad_scale;
            ws[i] *= decay;
            ms[i] = h->beta1 * ms[i] + (1.0f - h->beta1) * gi;
            vs[i] = h->beta2 * vs[i] + (1.0f - h->beta2) * gi * gi;
            ws[i] -= h->step_size * ms[i] / (sqrtf(vs[i]) / h->bc2_sqrt + h->eps);
        }
    }
}

double gdn2_nn_sumsq(size_t n, const float *g) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* attention                                                                                  */
/* ------------------------------------------------------------------------------------------ */
void gdn2_nn_rope_cs(int64_t pos, int64_t hs, float base, float *c, float *s) {
    for (int64_t i = 0; i < hs / 2; i++) gdn2_rope_angle(pos, i, hs, base, c + i, s + i);
}

void gdn2_nn_rope_apply(const float *x, float *y, int64_t hs, const float *c, const float *s) {
    int64_t h2 = hs / 2;
    for (int64_t i = 0; i < h2; i++) {
        float x1 = x[i], x2 = x[i + h2];
        y[i] = x1 * c[i] - x2 * s[i];
        y[i + h2] = x2 * c[i] + x1 * s[i];
    }
}

/* transpose of the rotation (its VJP): dx1 = dy1 c + dy2 s, dx2 = dy2 c - dy1 s */
static void rope_apply_t(const float *dy, float *dx, int64_t hs, const float *c, const float *s) {
    int64_t h2 = hs / 2;
    for (int64_t i = 0; i < h2; i++) {
        float d1 = dy[i], d2 = dy[i + h2];
        dx[i] = d1 * c[i] + d2 * s[i];
        dx[i + h2] = d2 * c[i] - d1 * s[i];
    }
}

float gdn2_nn_dot(const float *a, const float *b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* cos / sin of positions pos0 .. pos0 + T - 1 */
static float *rope_table(int64_t pos0, int64_t T, int64_t hs, float base) {
    float *cs = gdn2_malloc((size_t)T * hs * sizeof(float) + 4, "attention rope table");
    if (cs)
        for (int64_t t = 0; t < T; t++) gdn2_nn_rope_cs(pos0 + t, hs, base, cs + t * hs, cs + t * hs + hs / 2);
    return cs;
}

int gdn2_nn_rope_split(const gdn2_attn_cfg *a, int64_t B, int64_t T, const float *qkv, float *q, float *k, float *v,
                       int n_threads) {
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, qpk = nh / ng, h2 = hs / 2;
    const int64_t nqkv = (nh + 2 * ng) * hs, BT = B * T;
    float *cs = rope_table(a->pos0, T, hs, a->rope_base);
    if (!cs) return GDN2_ERR_NOMEM;
    /* split per group [q.. , k, v], RoPE q and k, store head-major */
#pragma omp parallel for num_threads(gdn2_threads(n_threads)) schedule(static)
    for (int64_t bt = 0; bt < BT; bt++) {
        int64_t b = bt / T, t = bt % T;
        const float *row = qkv + bt * nqkv, *c = cs + t * hs, *s = c + h2;
        for (int64_t g = 0; g < ng; g++) {
            const float *grp = row + g * (qpk + 2) * hs;
            for (int64_t j = 0; j < qpk; j++)
                gdn2_nn_rope_apply(grp + j * hs, q + (((b * nh + g * qpk + j) * T) + t) * hs, hs, c, s);
            gdn2_nn_rope_apply(grp + qpk * hs, k + ((b * ng + g) * T + t) * hs, hs, c, s);
            memcpy(v + ((b * ng + g) * T + t) * hs, grp + (qpk + 1) * hs, hs * sizeof(float));
        }
    }
    free(cs);
    return GDN2_OK;
}

int gdn2_nn_rope_split_bwd(const gdn2_attn_cfg *a, int64_t B, int64_t T, const float *dq, const float *dk,
                           const float *dv, float *dqkv, int n_threads) {
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, qpk = nh / ng, h2 = hs / 2;
    const int64_t nqkv = (nh + 2 * ng) * hs, BT = B * T;
    float *cs = rope_table(a->pos0, T, hs, a->rope_base);
    if (!cs) return GDN2_ERR_NOMEM;
#pragma omp parallel for num_threads(gdn2_threads(n_threads)) schedule(static)
    for (int64_t bt = 0; bt < BT; bt++) {
        int64_t b = bt / T, t = bt % T;
        float *row = dqkv + bt * nqkv;
        const float *c = cs + t * hs, *s = c + h2;
        for (int64_t g = 0; g < ng; g++) {
            float *grp = row + g * (qpk + 2) * hs;
            for (int64_t j = 0; j < qpk; j++)
                rope_apply_t(dq + (((b * nh + g * qpk + j) * T) + t) * hs, grp + j * hs, hs, c, s);
            rope_apply_t(dk + ((b * ng + g) * T + t) * hs, grp + qpk * hs, hs, c, s);
            memcpy(grp + (qpk + 1) * hs, dv + ((b * ng + g) * T + t) * hs, hs * sizeof(float));
        }
    }
    free(cs);
    return GDN2_OK;
}

int gdn2_nn_attn_fwd(const gdn2_attn_cfg *a, int64_t B, int64_t T, const float *q, const float *k, const float *v,
                     float *o, float *lse, int n_threads) {
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, qpk = nh / ng;
    const float scale = 1.0f / sqrtf((float)hs);
    const int nt = gdn2_threads(n_threads);
    float *sc = gdn2_malloc((size_t)nt * T * sizeof(float), "attention scores");
    if (!sc) return GDN2_ERR_NOMEM;
    /* per query row: s_j = scale q_t.k_j over visible j; p = softmax(s); o_t = sum_j p_j v_j;
     * lse_t = log sum_j exp(s_j) saved for the backward */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < B * nh * T; r++) {
        int64_t b = r / (nh * T), h = (r / T) % nh, t = r % T, g = h / qpk;
#ifdef _OPENMP
        float *srow = sc + (size_t)omp_get_thread_num() * T;
#else
        float *srow = sc;
#endif
        const float *qt = q + r * hs;
        const float *kb = k + (b * ng + g) * T * hs, *vb = v + (b * ng + g) * T * hs;
        int64_t j0 = a->window > 0 && t - a->window + 1 > 0 ? t - a->window + 1 : 0;
        float mx = -INFINITY;
        for (int64_t j = j0; j <= t; j++) {
            float sj = scale * gdn2_nn_dot(qt, kb + j * hs, hs);
            srow[j] = sj;
            if (sj > mx) mx = sj;
        }
        float l = 0.0f;
        for (int64_t j = j0; j <= t; j++) {
            srow[j] = expf(srow[j] - mx);
            l += srow[j];
        }
        float *ot = o + (b * T + t) * nh * hs + h * hs;
        memset(ot, 0, hs * sizeof(float));
        float il = 1.0f / l;
        for (int64_t j = j0; j <= t; j++) {
            float p = srow[j] * il;
            const float *vj = vb + j * hs;
            for (int64_t i = 0; i < hs; i++) ot[i] += p * vj[i];
        }
        lse[r] = mx + logf(l);
    }
    free(sc);
    return GDN2_OK;
}

int gdn2_nn_attn_bwd(const gdn2_attn_cfg *a, int64_t B, int64_t T, const float *q, const float *k, const float *v,
                     const float *o, const float *lse, const float *dO, float *dq, float *dk, float *dv,
                     int n_threads) {
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, qpk = nh / ng, C = nh * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const int nt = gdn2_threads(n_threads);
    const size_t nq = (size_t)B * T * C, nk = (size_t)B * T * ng * hs;
    float *Dt = gdn2_malloc((size_t)B * nh * T * sizeof(float) + 4, "attention D");
    float *sc = gdn2_malloc((size_t)nt * T * 2 * sizeof(float) + 4, "attention scores");
    if (!Dt || !sc) {
        free(Dt), free(sc);
        return GDN2_ERR_NOMEM;
    }
    memset(dq, 0, nq * sizeof(float));
    memset(dk, 0, nk * sizeof(float));
    memset(dv, 0, nk * sizeof(float));
    /* D_t = dO_t . o_t per (b, h, t) */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < B * nh * T; r++) {
        int64_t b = r / (nh * T), h = (r / T) % nh, t = r % T;
        size_t off = (size_t)(b * T + t) * C + h * hs;
        Dt[r] = gdn2_nn_dot(dO + off, o + off, hs);
    }
    /* per (b, group): p_j = exp(s_j - lse_t), dp_j = dO_t.v_j, ds_j = p_j (dp_j - D_t);
     * dq_t = scale sum_j ds_j k_j;  dk_j += scale ds_j q_t;  dv_j += p_j dO_t.
     * Parallel over (b, g) so that dk/dv of a group are owned by one thread (deterministic). */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t bg = 0; bg < B * ng; bg++) {
        int64_t b = bg / ng, g = bg % ng;
#ifdef _OPENMP
        float *pr = sc + (size_t)omp_get_thread_num() * T * 2;
#else
        float *pr = sc;
#endif
        float *dsr = pr + T;
        const float *kb = k + bg * T * hs, *vb = v + bg * T * hs;
        float *dkb = dk + bg * T * hs, *dvb = dv + bg * T * hs;
        for (int64_t j = 0; j < qpk; j++) {
            int64_t h = g * qpk + j;
            for (int64_t t = 0; t < T; t++) {
                size_t r = (size_t)(b * nh + h) * T + t;
                const float *qt = q + r * hs, *dot = dO + (size_t)(b * T + t) * C + h * hs;
                float *dqt = dq + r * hs;
                int64_t j0 = a->window > 0 && t - a->window + 1 > 0 ? t - a->window + 1 : 0;
                float L = lse[r], D = Dt[r];
                for (int64_t s = j0; s <= t; s++) {
                    float p = expf(scale * gdn2_nn_dot(qt, kb + s * hs, hs) - L);
                    float dp = gdn2_nn_dot(dot, vb + s * hs, hs);
                    pr[s] = p;
                    dsr[s] = p * (dp - D);
                }
                for (int64_t s = j0; s <= t; s++) {
                    float ds = scale * dsr[s], p = pr[s];
                    const float *ks = kb + s * hs;
                    float *dks = dkb + s * hs, *dvs = dvb + s * hs;
                    for (int64_t i = 0; i < hs; i++) {
                        dqt[i] += ds * ks[i];
                        dks[i] += ds * qt[i];
                        dvs[i] += p * dot[i];
                    }
                }
            }
        }
    }
    free(Dt), free(sc);
    return GDN2_OK;
}

void gdn2_nn_dropout(size_t n, float *x, float p, uint64_t seed, int n_threads) {
    const uint32_t thr = gdn2_dropout_thr(p);
    const float k = 1.0f / (1.0f - p);
#pragma omp parallel for num_threads(gdn2_threads(n_threads)) schedule(static) if (n > 65536)
    for (int64_t i = 0; i < (int64_t)n; i++) x[i] = gdn2_dropout_keep(seed, (uint64_t)i, thr) ? x[i] * k : 0.0f;
}

/* ---- attention decode step (backend.h attn_step) ------------------------------------------- */
int gdn2_nn_attn_step(const gdn2_attn_cfg *a, int64_t n, const float *qkv, const int64_t *pos, const int32_t *slots,
                      int64_t cap, float *cache, size_t stride, float *o, int n_threads) {
    const int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, qpk = nh / ng, h2 = hs / 2;
    const int64_t nqkv = (nh + 2 * ng) * hs, C = nh * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    (void)n_threads;
    for (int64_t b = 0; b < n; b++)
        if (pos[b] < 0 || (a->window == 0 && pos[b] >= cap))
            return gdn2_error(GDN2_ERR_ARG, "attention cache full: position %lld, capacity %lld (full attention grows)",
                              (long long)pos[b], (long long)cap);
    float *cs = gdn2_malloc((size_t)(hs + 2 * cap + hs) * sizeof(float), "attention step scratch");
    if (!cs) return GDN2_ERR_NOMEM;
    float *sc = cs + hs, *qr = sc + cap;
    /* the row of position j: a ring of the last cap positions (SWA) or the position itself */
#define CACHE_ROW(j) (a->window > 0 ? (j) % cap : (j))
    for (int64_t b = 0; b < n; b++) {
        const int64_t p = pos[b];
        gdn2_nn_rope_cs(p, hs, a->rope_base, cs, cs + h2);
        const int64_t j0 = a->window > 0 && p - a->window + 1 > 0 ? p - a->window + 1 : 0;
        const int64_t row_p = CACHE_ROW(p);
        float *kc = cache + (size_t)(slots ? slots[b] : b) * stride, *vc = kc + ng * cap * hs;
        const float *row = qkv + b * nqkv;
        for (int64_t g = 0; g < ng; g++) {
            const float *grp = row + g * (qpk + 2) * hs;
            gdn2_nn_rope_apply(grp + qpk * hs, kc + (g * cap + row_p) * hs, hs, cs, cs + h2);
            memcpy(vc + (g * cap + row_p) * hs, grp + (qpk + 1) * hs, hs * sizeof(float));
        }
        for (int64_t h = 0; h < nh; h++) {
            const int64_t g = h / qpk;
            gdn2_nn_rope_apply(row + g * (qpk + 2) * hs + (h % qpk) * hs, qr, hs, cs, cs + h2);
            float mx = -INFINITY, l = 0.0f;
            for (int64_t j = j0; j <= p; j++) {
                float s = scale * gdn2_nn_dot(qr, kc + (g * cap + CACHE_ROW(j)) * hs, hs);
                sc[j - j0] = s;
                if (s > mx) mx = s;
            }
            for (int64_t j = j0; j <= p; j++) l += (sc[j - j0] = expf(sc[j - j0] - mx));
            float *ot = o + b * C + h * hs;
            memset(ot, 0, hs * sizeof(float));
            for (int64_t j = j0; j <= p; j++) {
                const float pr = sc[j - j0] / l;
                const float *vj = vc + (g * cap + CACHE_ROW(j)) * hs;
                for (int64_t i = 0; i < hs; i++) ot[i] += pr * vj[i];
            }
        }
    }
#undef CACHE_ROW
    free(cs);
    return GDN2_OK;
}
