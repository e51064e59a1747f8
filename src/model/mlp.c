/* LLaMA SwiGLU MLP as lit_gpt's LLaMAMLP (docs/MODEL.md), no bias:
 *   h1 = x W1^T,  h2 = x W2^T,  a = silu(h1) * h2,  y = a W3^T      (W1, W2 [I,d], W3 [d,I]) */
#include <math.h>
#include <string.h>

#include "model_internal.h"
#include "util/internal.h"

size_t gdn2_mlp_act_size(int64_t N, int64_t I) { return (size_t)3 * N * I; }

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

void gdn2_mlp_forward(int64_t N, int64_t d, int64_t I, const float *w1, const float *w2, const float *w3,
                      const float *x, float *y, float *acts, int n_threads) {
    float *h1 = acts, *h2 = acts + N * I, *a = acts + 2 * N * I;
    const int nt = gdn2_threads(n_threads);
    gdn2_sgemm(0, 1, (int)N, (int)I, (int)d, 1.0f, x, (int)d, w1, (int)d, 0.0f, h1, (int)I);
    gdn2_sgemm(0, 1, (int)N, (int)I, (int)d, 1.0f, x, (int)d, w2, (int)d, 0.0f, h2, (int)I);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < N * I; i++) a[i] = h1[i] * sigm(h1[i]) * h2[i];
    gdn2_sgemm(0, 1, (int)N, (int)d, (int)I, 1.0f, a, (int)I, w3, (int)I, 0.0f, y, (int)d);
}

void gdn2_mlp_backward(int64_t N, int64_t d, int64_t I, const float *w1, const float *w2, const float *w3,
                       const float *x, const float *acts, const float *dy, float *dx, float *dw1, float *dw2,
                       float *dw3, float *scratch, int n_threads) {
    const float *h1 = acts, *h2 = acts + N * I, *a = acts + 2 * N * I;
    float *dh1 = scratch, *dh2 = scratch + N * I;
    const int nt = gdn2_threads(n_threads);
    /* dW3 += dy^T a;  da = dy W3 (into dh1, then split in place) */
    gdn2_sgemm(1, 0, (int)d, (int)I, (int)N, 1.0f, dy, (int)d, a, (int)I, 1.0f, dw3, (int)I);
    gdn2_sgemm(0, 0, (int)N, (int)I, (int)d, 1.0f, dy, (int)d, w3, (int)I, 0.0f, dh1, (int)I);
    /* dh2 = da silu(h1);  dh1 = da h2 silu'(h1),  silu'(z) = s (1 + z (1 - s)) */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < N * I; i++) {
        float z = h1[i], s = sigm(z), da = dh1[i];
        dh2[i] = da * z * s;
        dh1[i] = da * h2[i] * s * (1.0f + z * (1.0f - s));
    }
    gdn2_sgemm(1, 0, (int)I, (int)d, (int)N, 1.0f, dh1, (int)I, x, (int)d, 1.0f, dw1, (int)d);
    gdn2_sgemm(1, 0, (int)I, (int)d, (int)N, 1.0f, dh2, (int)I, x, (int)d, 1.0f, dw2, (int)d);
    gdn2_sgemm(0, 0, (int)N, (int)d, (int)I, 1.0f, dh1, (int)I, w1, (int)d, 0.0f, dx, (int)d);
    gdn2_sgemm(0, 0, (int)N, (int)d, (int)I, 1.0f, dh2, (int)I, w2, (int)d, 1.0f, dx, (int)d);
}
