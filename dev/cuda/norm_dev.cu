// The training step's fused RMSNorm backward (issue 16): the library's kernel (src/cuda/nn.cu, included here)
// against a software-pipelined variant (the candidate dev/cuda/candidates/rmsb-pf.patch, as k_pf below, with the
// rows a block takes as a template argument), and beside them the step's other bandwidth-bound ops at the same
// shapes with the bytes each must move, so that one device call says which of them is furthest from copy speed.
//
// rmsnorm_bwd was 7.7 ms over 37 calls in the H100 gdn2_1.3B B = 3 step (bench/results/h100-conv/, 882b90e): per
// row of D = 2304 it reads x (fp32), dy (bf16) and the accumulated dx (fp32), writes dx (fp32) and its bf16 copy,
// ~37 KB a row, ~68 % of copy bandwidth. The library's kernel takes a row at a time per block of 256 threads; the
// dx read sits after the block's reduction, so a row waits for two memory round trips. k_pf issues row n + 1's x
// and dy and row n's dx before row n's reduction: one round trip a row, at more registers (121 against 80 at
// G = 3: 2 blocks an SM instead of 3).
//
// Measured (H100, bench/results/h100-cand17/, af13c5a): the pipelined kernel at 16 rows is no faster at gdn2_1.3B B = 3
// (200.0 against 200.8 us), 5 % faster at B = 4 and at gdn2_12h_100M; not taken into the library.
//
// Checks before timing: dx and its bf16 copy equal to the library's bit for bit (same arithmetic, same order); dw
// bit for bit at the library's 16 rows a block, else within 1e-5 of max|dw| (partials over other row groups).
// Times: CUDA events over 20 calls after 3, each kernel alone.
//
// On the device, after `make` (the library for gdn2_error and the CUDA runtime helpers):
//   nvcc -O3 -std=c++17 -arch=sm_90a -Iinclude -Isrc dev/cuda/norm_dev.cu build/libgdn2.a -lcublasLt -lcublas \
//        -lnccl -lgomp -o /tmp/norm_dev && /tmp/norm_dev
#include "../../src/cuda/nn.cu"

#include "dev_check.h"

// The candidate: as k_rmsnorm_bwd_fused, with row rr + 1's x, dy and row rr's dx loaded before row rr's reduction.
template <int G, int ROWS>
__global__ void __launch_bounds__(RMSB_BS) k_pf(int64_t N, int64_t D, const float *x, const float *w, const float *rstd,
                                                const bf16 *dy, float *dx, int acc, bf16 *dxa, float *part) {
    __shared__ float red[2][RMSB_BS / 32];
    const int t = threadIdx.x, lane = t & 31, wid = t >> 5;
    float wv[G][4], pw[G][4], xv[G][4], dv[G][4];
    norm_w_cols<G, RMSB_BS>(w, D, 4 * (int64_t)t, wv, pw);
    const int64_t n0 = blockIdx.x * (int64_t)ROWS;
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int64_t i = 4 * (int64_t)t + 4 * RMSB_BS * j;
        const size_t r0 = (size_t)(n0 * D);
        ld4z(x, r0 + i, r0 + (size_t)D, i < D, xv[j]);
        ld4z(dy, r0 + i, r0 + (size_t)D, i < D, dv[j]);
    }
    for (int rr = 0; rr < ROWS && n0 + rr < N; rr++) {
        const int64_t n = n0 + rr;
        const size_t r0 = (size_t)(n * D), lim = r0 + (size_t)D;
        const float r = rstd[n];
        const bool more = rr + 1 < ROWS && n + 1 < N;
        float o[G][4], xn[G][4], dn[G][4], dot = 0.0f;
#pragma unroll
        for (int j = 0; j < G; j++) {
            const int64_t i = 4 * (int64_t)t + 4 * RMSB_BS * j;
            ld4z(dx, r0 + i, lim, acc && i < D, o[j]);
            ld4z(x, r0 + D + i, lim + D, more && i < D, xn[j]);
            ld4z(dy, r0 + D + i, lim + D, more && i < D, dn[j]);
        }
#pragma unroll
        for (int j = 0; j < G; j++)
#pragma unroll
            for (int k = 0; k < 4; k++) dot += dv[j][k] * wv[j][k] * xv[j][k];
        dot = warp_sum_(dot);
        if (lane == 0) red[rr & 1][wid] = dot;
        __syncthreads();
        dot = 0.0f;
#pragma unroll
        for (int k = 0; k < RMSB_BS / 32; k++) dot += red[rr & 1][k];
        const float cc = dot * r * r * r / (float)D;
#pragma unroll
        for (int j = 0; j < G; j++) {
            const int64_t i = 4 * (int64_t)t + 4 * RMSB_BS * j;
            if (i < D) {
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const float v = r * dv[j][k] * wv[j][k] - cc * xv[j][k];
                    o[j][k] = acc ? o[j][k] + v : v;
                    pw[j][k] += dv[j][k] * xv[j][k] * r;
                }
                st4(dx, r0 + i, lim, true, o[j]);
                if (dxa) st4(dxa, r0 + i, lim, true, o[j]);
            }
#pragma unroll
            for (int k = 0; k < 4; k++) xv[j][k] = xn[j][k], dv[j][k] = dn[j][k];
        }
    }
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int64_t i = 4 * (int64_t)t + 4 * RMSB_BS * j;
        if (i < D) st4(part, (size_t)blockIdx.x * (size_t)D + (size_t)i, (size_t)(blockIdx.x + 1) * (size_t)D, true, pw[j]);
    }
}

// variant v: 0 the library, 1..3 k_pf at 8, 16, 32 rows a block
static const int VROWS[4] = {RMSB_ROWS, 8, 16, 32};
static void launch(int v, gdn2_cuda_nn *c, int64_t N, int64_t D, const float *x, const float *w, const float *rstd,
                   const bf16 *dy, float *dx, bf16 *dxa, float *part, float *dw) {
    cudaStream_t s = (cudaStream_t)gdn2_cuda_nn_stream(c);
    if (v == 0) {
        if (gdn2_cuda_rmsnorm_bwd(c, N, D, x, w, rstd, dy, dx, 1, dxa, dw)) {
            fprintf(stderr, "norm_dev: %s\n", gdn2_last_error());
            exit(1);
        }
        return;
    }
    const int rows = VROWS[v];
    const unsigned nb = (unsigned)cdiv(N, rows);
    const int G = (int)cdiv(D, 4 * RMSB_BS);
#define PF(GG, RR) k_pf<GG, RR><<<nb, RMSB_BS, 0, s>>>(N, D, x, w, rstd, dy, dx, 1, dxa, part)
#define PF_G(RR)                                                                                                \
    do {                                                                                                        \
        if (G == 1) PF(1, RR);                                                                                  \
        else if (G == 2) PF(2, RR);                                                                             \
        else PF(3, RR);                                                                                         \
    } while (0)
    if (rows == 8) PF_G(8);
    else if (rows == 16) PF_G(16);
    else PF_G(32);
#undef PF_G
#undef PF
    CK(cudaGetLastError());
    if (gdn2_cuda_colsum_finish(part, nb, D, dw, s)) exit(1);
}

static float time_us(cudaStream_t s, void (*f)(void *), void *arg) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    for (int it = 0; it < 23; it++) {
        if (it == 3) CK(cudaEventRecord(e0, s));
        f(arg);
    }
    CK(cudaEventRecord(e1, s));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return ms * 1000.0f / 20.0f;
}

typedef struct {
    gdn2_cuda_nn *c;
    int v;
    int64_t N, D, F;
    float *x, *w, *rstd, *dx, *part, *dw, *res, *cp0, *cp1;
    bf16 *dy, *dxa, *h1, *h2, *d1, *d2, *y;
} shape;
static void f_bwd(void *p) {
    shape *a = (shape *)p;
    launch(a->v, a->c, a->N, a->D, a->x, a->w, a->rstd, a->dy, a->dx, a->dxa, a->part, a->dw);
}
static void f_addnorm(void *p) {
    shape *a = (shape *)p;
    gdn2_cuda_add_rmsnorm_fwd(a->N, a->D, a->x, a->dy, a->res, a->w, 1e-5f, a->y, a->rstd, gdn2_cuda_nn_stream(a->c));
}
static void f_swiglu(void *p) {
    shape *a = (shape *)p;
    gdn2_cuda_swiglu_bwd((size_t)(a->N * a->F), a->h1, a->h2, a->d1, a->d2, gdn2_cuda_nn_stream(a->c));
}
static void f_copy(void *p) { // the backward's bytes as a copy (8 a row element read, 8 written): the bandwidth reference
    shape *a = (shape *)p;
    CK(cudaMemcpyAsync(a->cp1, a->cp0, (size_t)(a->N * a->D) * 8, cudaMemcpyDeviceToDevice,
                       (cudaStream_t)gdn2_cuda_nn_stream(a->c)));
}

static int run_shape(gdn2_cuda_nn *c, const char *what, int64_t N, int64_t D, int64_t F) {
    cudaStream_t s = (cudaStream_t)gdn2_cuda_nn_stream(c);
    const size_t n = (size_t)(N * D), nf = (size_t)(N * F);
    float *hx = (float *)malloc(n * 4), *hdx = (float *)malloc(n * 4), *hw = (float *)malloc((size_t)D * 4);
    float *hr = (float *)malloc((size_t)N * 4);
    uint16_t *hdy = (uint16_t *)malloc(n * 2);
    for (size_t i = 0; i < n; i++) hx[i] = 1.5f * dev_frand(), hdx[i] = 0.5f * dev_frand(), hdy[i] = dev_f2bf(dev_frand());
    for (int64_t i = 0; i < D; i++) hw[i] = 1.0f + 0.5f * dev_frand();
    for (int64_t r = 0; r < N; r++) {
        double ss = 0.0;
        for (int64_t i = 0; i < D; i++) ss += (double)hx[r * D + i] * hx[r * D + i];
        hr[r] = (float)(1.0 / sqrt(ss / (double)D + 1e-5));
    }
    shape a = {c, 0, N, D, F};
    const size_t part_bytes = (size_t)(N / 8 + 1) * D * 4; // k_pf's partials: a row of D per block of 8 rows at most
    CK(cudaMalloc(&a.cp0, n * 8)); CK(cudaMalloc(&a.cp1, n * 8)); CK(cudaMemset(a.cp0, 0, n * 8));
    CK(cudaMalloc(&a.x, n * 4)); CK(cudaMalloc(&a.w, (size_t)D * 4)); CK(cudaMalloc(&a.rstd, (size_t)N * 4));
    CK(cudaMalloc(&a.dx, n * 4)); CK(cudaMalloc(&a.part, part_bytes)); CK(cudaMalloc(&a.dw, (size_t)D * 4));
    CK(cudaMalloc(&a.res, n * 4)); CK(cudaMalloc(&a.dy, n * 2)); CK(cudaMalloc(&a.dxa, n * 2)); CK(cudaMalloc(&a.y, n * 2));
    CK(cudaMalloc(&a.h1, nf * 2)); CK(cudaMalloc(&a.h2, nf * 2)); CK(cudaMalloc(&a.d1, nf * 2)); CK(cudaMalloc(&a.d2, nf * 2));
    CK(cudaMemset(a.h1, 0x3c, nf * 2)); CK(cudaMemset(a.h2, 0x3c, nf * 2));
    CK(cudaMemcpy(a.x, hx, n * 4, cudaMemcpyHostToDevice)); CK(cudaMemcpy(a.w, hw, (size_t)D * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(a.rstd, hr, (size_t)N * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(a.dy, hdy, n * 2, cudaMemcpyHostToDevice));
    // each variant once from the same dx0 and a zero dw; compared with variant 0
    float *rdx[4], *rdw[4];
    uint16_t *rdxa[4];
    for (int v = 0; v < 4; v++) {
        CK(cudaMemcpy(a.dx, hdx, n * 4, cudaMemcpyHostToDevice));
        CK(cudaMemset(a.dw, 0, (size_t)D * 4));
        launch(v, c, N, D, a.x, a.w, a.rstd, a.dy, a.dx, a.dxa, a.part, a.dw);
        CK(cudaStreamSynchronize(s));
        rdx[v] = (float *)malloc(n * 4), rdw[v] = (float *)malloc((size_t)D * 4), rdxa[v] = (uint16_t *)malloc(n * 2);
        CK(cudaMemcpy(rdx[v], a.dx, n * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(rdxa[v], a.dxa, n * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(rdw[v], a.dw, (size_t)D * 4, cudaMemcpyDeviceToHost));
    }
    int bad = 0;
    double amax = 0.0;
    for (int64_t i = 0; i < D; i++) amax = fmax(amax, fabs((double)rdw[0][i]));
    for (int v = 1; v < 4; v++) {
        const size_t bdx = (size_t)(memcmp(rdx[v], rdx[0], n * 4) != 0) + (memcmp(rdxa[v], rdxa[0], n * 2) != 0);
        double e = 0.0;
        for (int64_t i = 0; i < D; i++) {
            const double d = fabs((double)rdw[v][i] - rdw[0][i]) / (amax > 0 ? amax : 1.0);
            if (d > e || d != d) e = d;
        }
        const bool dw_same = !memcmp(rdw[v], rdw[0], (size_t)D * 4);
        const bool ok = !bdx && (VROWS[v] == RMSB_ROWS ? dw_same : e <= 1e-5);
        printf("  %-28s N=%lld D=%lld k_pf rows %2d: dx/dx_act %s, dw %s (max |diff| / max|dw| %.2e) %s\n", what,
               (long long)N, (long long)D, VROWS[v], bdx ? "DIFFER" : "same bits", dw_same ? "same bits" : "differs", e,
               ok ? "ok" : "FAILED");
        bad += !ok;
    }
    for (int v = 0; v < 4; v++) free(rdx[v]), free(rdw[v]), free(rdxa[v]);
    if (!bad && N >= 4096) { // the edge shapes are checked, not timed
        const double bb = (double)n * (4 + 2 + 4 + 4 + 2); // x, dy, dx read; dx, dx_act written
        for (int v = 0; v < 4; v++) {
            a.v = v;
            const float us = time_us(s, f_bwd, &a);
            printf("    rmsnorm_bwd %-16s %8.1f us  %5.2f TB/s\n", v ? (VROWS[v] == 8 ? "k_pf 8 rows" : VROWS[v] == 16 ? "k_pf 16 rows" : "k_pf 32 rows") : "library",
                   us, bb / us * 1e-6);
        }
        const float cu = time_us(s, f_copy, &a);
        printf("    cudaMemcpy of %.0f MB     %8.1f us  %5.2f TB/s (read + write)\n", (double)n * 8 * 1e-6, cu,
               2.0 * n * 8 / cu * 1e-6);
        const float an = time_us(s, f_addnorm, &a);
        printf("    add_rmsnorm_fwd          %8.1f us  %5.2f TB/s (a fp32 + b bf16 read, out fp32 + y bf16 written)\n", an,
               (double)n * 12 / an * 1e-6);
        const float sw = time_us(s, f_swiglu, &a);
        printf("    swiglu_bwd (F=%lld)      %8.1f us  %5.2f TB/s (h1, h2, da read as bf16; dh1, dh2 written)\n",
               (long long)F, sw, (double)nf * 10 / sw * 1e-6);
    }
    cudaFree(a.x); cudaFree(a.w); cudaFree(a.rstd); cudaFree(a.dx); cudaFree(a.part); cudaFree(a.dw); cudaFree(a.res);
    cudaFree(a.cp0); cudaFree(a.cp1); cudaFree(a.dy); cudaFree(a.dxa); cudaFree(a.y); cudaFree(a.h1); cudaFree(a.h2); cudaFree(a.d1); cudaFree(a.d2);
    free(hx); free(hdx); free(hw); free(hr); free(hdy);
    return bad;
}

int main(void) {
    gdn2_cuda_nn *c = NULL;
    if (gdn2_cuda_nn_create(&c)) {
        fprintf(stderr, "norm_dev: no CUDA context: %s\n", gdn2_last_error());
        return 1;
    }
    int bad = 0;
    bad += run_shape(c, "edge: 37 rows", 37, 2304, 64);
    bad += run_shape(c, "edge: D 1500, 40 rows", 40, 1500, 64);
    bad += run_shape(c, "gdn2_1.3B (B 3)", 3 * 4096, 2304, 6208);
    bad += run_shape(c, "gdn2_1.3B (B 4)", 4 * 4096, 2304, 6208);
    bad += run_shape(c, "gdn2_12h_100M (B 16)", 16 * 4096, 768, 2048);
    printf("%s\n", bad ? "norm_dev: FAILED" : "norm_dev: every variant as the library's");
    gdn2_cuda_nn_destroy(c);
    return bad ? 1 : 0;
}
