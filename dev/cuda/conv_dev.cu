// The training step's short convolution (issue 16): the library's kernels (src/cuda/nn.cu, included here, so
// that -D CONV_R/CONV_C/CONV_P/CONV_PB/CONV_BMIN build variants of them) against the one-channel kernels they
// replaced (main d9c49c8, copied below as k_old_fwd / k_old_bwd: the whole run loaded first, 2-byte accesses).
// Same formulas and summation orders: y and dx must be equal bit for bit; dw to a relative bar of 1e-5 (the
// partials are sums over runs of CONV_R rows against the old 32: bit for bit too when CONV_R is 32). Then both
// are timed (CUDA events, 20 calls after 3) at the training shapes, with the minimal bytes and what they are
// of the time. Edge shapes (D not a multiple of 4 or CONV_C, T not a multiple of the run, W 3 and 1, a conv
// history) are checked too.
//
// On the device, after `make` (the library for gdn2_error and the CUDA runtime helpers):
//   nvcc -O3 -std=c++17 -arch=sm_90a -Iinclude -Isrc [-DCONV_R=.. -DCONV_C=.. -DCONV_P=.. -DCONV_PB=..
//        -DCONV_BMIN=..] dev/cuda/conv_dev.cu build/libgdn2.a -lcublasLt -lcublas -lnccl -lgomp -o /tmp/conv_dev
#include "../../src/cuda/nn.cu"

#include "dev_check.h"

#define OLD_R 32
#define OLD_BS 128
// xe_s of (b, ch) as conv_xe, with x already offset to (b, ch): row stride D
__device__ __forceinline__ float o_xe(const bf16 *xb, const float *hb, int64_t D, int W, int64_t s) {
    if (s >= W - 1) return ldb(xb, (size_t)((s - (W - 1)) * D));
    return hb ? hb[s * D] : 0.0f;
}
// y_t = silu(sum_i w_i xe_{t+i}), t in [t0, t1)
template <int W>
__global__ void __launch_bounds__(OLD_BS) k_old_fwd(int64_t T, int64_t D, const bf16 *x, const float *hist,
                                                           size_t hs, const float *w, bf16 *y) {
    const int64_t ch = blockIdx.x * (int64_t)OLD_BS + threadIdx.x;
    if (ch >= D) return;
    const int64_t nr = (T + OLD_R - 1) / OLD_R, b = blockIdx.y / nr, t0 = (blockIdx.y % nr) * OLD_R;
    const int n = (int)(t0 + OLD_R < T ? OLD_R : T - t0); // rows of this run
    const bf16 *xb = x + (size_t)(b * T * D + ch);
    const float *hb = hist ? hist + b * hs + ch : NULL;
    float wr[W], xe[OLD_R + W - 1]; // xe[j] = xe_{t0+j}
#pragma unroll
    for (int i = 0; i < W; i++) wr[i] = w[ch * W + i];
#pragma unroll
    for (int j = 0; j < OLD_R + W - 1; j++) xe[j] = j < n + W - 1 ? o_xe(xb, hb, D, W, t0 + j) : 0.0f;
    bf16 *yb = y + (size_t)(b * T * D + ch);
#pragma unroll
    for (int r = 0; r < OLD_R; r++) {
        if (r >= n) break;
        float c = 0.0f;
#pragma unroll
        for (int i = 0; i < W; i++) c += wr[i] * xe[r + i];
        yb[(size_t)((t0 + r) * D)] = tob(gdn2_silu_f32(c));
    }
}
// The backward of one run, fused: dc_t = dy_t silu'(c_t) for t in [t0, te), te = min(T, t1+W-1) (c
// recomputed; dc = 0 past T: absent terms), dx_t = sum_i w_i dc_{t+W-1-i} (i increasing) for t in
// [t0, t1), and the run's dw partial part[run, ch*W+i] = sum_{t in [t0,t1)} dc_t xe_{t+i} (t increasing).
template <int W>
__global__ void __launch_bounds__(OLD_BS) k_old_bwd(int64_t T, int64_t D, const bf16 *x, const float *hist,
                                                           size_t hs, const float *w, const bf16 *dy, bf16 *dx,
                                                           float *part) {
    const int64_t ch = blockIdx.x * (int64_t)OLD_BS + threadIdx.x;
    if (ch >= D) return;
    const int64_t nr = (T + OLD_R - 1) / OLD_R, b = blockIdx.y / nr, t0 = (blockIdx.y % nr) * OLD_R;
    const int n = (int)(t0 + OLD_R < T ? OLD_R : T - t0);             // rows of this run
    const int ne = (int)(t0 + n + W - 1 < T ? n + W - 1 : T - t0);      // dc rows it needs
    const bf16 *xb = x + (size_t)(b * T * D + ch), *dyb = dy + (size_t)(b * T * D + ch);
    const float *hb = hist ? hist + b * hs + ch : NULL;
    float wr[W], xe[OLD_R + 2 * W - 2], dc[OLD_R + W - 1]; // xe[j] = xe_{t0+j}, dc[j] = dc_{t0+j}
#pragma unroll
    for (int i = 0; i < W; i++) wr[i] = w[ch * W + i];
#pragma unroll
    for (int j = 0; j < OLD_R + 2 * W - 2; j++) xe[j] = j < ne + W - 1 ? o_xe(xb, hb, D, W, t0 + j) : 0.0f;
#pragma unroll
    for (int j = 0; j < OLD_R + W - 1; j++) dc[j] = j < ne ? ldb(dyb, (size_t)((t0 + j) * D)) : 0.0f;
#pragma unroll
    for (int j = 0; j < OLD_R + W - 1; j++) {
        float c = 0.0f;
#pragma unroll
        for (int i = 0; i < W; i++) c += wr[i] * xe[j + i];
        dc[j] = j < ne ? dc[j] * gdn2_silu_grad_f32(c) : 0.0f;
    }
    if (dx) {
        bf16 *dxb = dx + (size_t)(b * T * D + ch);
#pragma unroll
        for (int r = 0; r < OLD_R; r++) {
            if (r >= n) break;
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < W; i++) s += wr[i] * dc[r + W - 1 - i];
            dxb[(size_t)((t0 + r) * D)] = tob(s);
        }
    }
    if (part) {
        float *pr = part + (size_t)blockIdx.y * (size_t)(D * W) + (size_t)(ch * W);
#pragma unroll
        for (int i = 0; i < W; i++) {
            float acc = 0.0f;
#pragma unroll
            for (int r = 0; r < OLD_R; r++)
                if (r < n) acc += dc[r] * xe[r + i];
            pr[i] = acc;
        }
    }
}


#define OLD_LAUNCH_FWD(WW) k_old_fwd<WW><<<dim3(cdiv(D, OLD_BS), (unsigned)runs0), OLD_BS, 0, s>>>(T, D, x, hist, hs, w, y0)
#define OLD_LAUNCH_BWD(WW)                                                                                  \
    k_old_bwd<WW><<<dim3(cdiv(D, OLD_BS), (unsigned)runs0), OLD_BS, 0, s>>>(T, D, x, hist, hs, w, dy, dx0, part0)

// one shape: check, then (timed) time both; returns the number of mismatches
static int run_shape(gdn2_cuda_nn *c, const char *what, int B, int T, int D, int W, int with_hist, int timed) {
    cudaStream_t s = (cudaStream_t)gdn2_cuda_nn_stream(c);
    const size_t n = (size_t)B * T * D, hs = (size_t)(W - 1) * D;
    const int runs0 = B * ((T + OLD_R - 1) / OLD_R);
    uint16_t *hx = (uint16_t *)malloc(n * 2), *hdy = (uint16_t *)malloc(n * 2);
    float *hw = (float *)malloc((size_t)D * W * 4), *hh = (float *)malloc((size_t)B * hs * 4 + 4);
    for (size_t i = 0; i < n; i++) hx[i] = dev_f2bf(2.0f * dev_frand()), hdy[i] = dev_f2bf(dev_frand());
    for (int i = 0; i < D * W; i++) hw[i] = 0.5f * dev_frand();
    for (size_t i = 0; i < (size_t)B * hs; i++) hh[i] = dev_frand();
    bf16 *x, *dy, *y0, *y1, *dx0, *dx1;
    float *w, *hist = NULL, *part0, *dw0, *dw1;
    CK(cudaMalloc(&x, n * 2)); CK(cudaMalloc(&dy, n * 2)); CK(cudaMalloc(&y0, n * 2)); CK(cudaMalloc(&y1, n * 2));
    CK(cudaMalloc(&dx0, n * 2)); CK(cudaMalloc(&dx1, n * 2));
    CK(cudaMalloc(&w, (size_t)D * W * 4)); CK(cudaMalloc(&part0, (size_t)runs0 * D * W * 4));
    CK(cudaMalloc(&dw0, (size_t)D * W * 4)); CK(cudaMalloc(&dw1, (size_t)D * W * 4));
    if (with_hist) {
        CK(cudaMalloc(&hist, (size_t)B * hs * 4 + 4));
        CK(cudaMemcpy(hist, hh, (size_t)B * hs * 4, cudaMemcpyHostToDevice));
    }
    CK(cudaMemcpy(x, hx, n * 2, cudaMemcpyHostToDevice)); CK(cudaMemcpy(dy, hdy, n * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(w, hw, (size_t)D * W * 4, cudaMemcpyHostToDevice));
    // old: y0, dx0, dw0 (its partials, then the library's column sum)
    CK(cudaMemset(dw0, 0, (size_t)D * W * 4)); CK(cudaMemset(dw1, 0, (size_t)D * W * 4));
    CONV_FAST_SWITCH(W, OLD_LAUNCH_FWD);
    CONV_FAST_SWITCH(W, OLD_LAUNCH_BWD);
    CK(cudaGetLastError());
    if (gdn2_cuda_colsum_finish(part0, runs0, (int64_t)D * W, dw0, s)) exit(1);
    // the library's ops: y1, dx1, dw1
    if (gdn2_cuda_conv_silu_fwd(B, T, D, W, x, hist, hs, w, y1, s) ||
        gdn2_cuda_conv_silu_bwd(c, B, T, D, W, x, hist, hs, w, dy, dx1, dw1)) {
        fprintf(stderr, "conv_dev: library op failed: %s\n", gdn2_last_error());
        exit(1);
    }
    CK(cudaStreamSynchronize(s));
    uint16_t *a = (uint16_t *)malloc(n * 2), *b2 = (uint16_t *)malloc(n * 2);
    float *da = (float *)malloc((size_t)D * W * 4), *db = (float *)malloc((size_t)D * W * 4);
    size_t bad_y = 0, bad_dx = 0, bad_dw = 0;
    CK(cudaMemcpy(a, y0, n * 2, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(b2, y1, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) bad_y += a[i] != b2[i];
    CK(cudaMemcpy(a, dx0, n * 2, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(b2, dx1, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) bad_dx += a[i] != b2[i];
    CK(cudaMemcpy(da, dw0, (size_t)D * W * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(db, dw1, (size_t)D * W * 4, cudaMemcpyDeviceToHost));
    // dw: bit for bit at the old run length, else |a - b| <= 1e-5 max|dw| (sums over 64 or 128 rows against 32:
    // near-zero entries that cancel are off by rounding, not relatively close)
    double maxrel = 0.0, amax = 0.0;
    for (int i = 0; i < D * W; i++) amax = fmax(amax, fabs((double)da[i]));
    for (int i = 0; i < D * W; i++) {
        const double e = fabs((double)da[i] - db[i]) / (amax > 0.0 ? amax : 1.0);
        if (e > maxrel || e != e) maxrel = e;
        bad_dw += CONV_R == OLD_R ? memcmp(&da[i], &db[i], 4) != 0 : !(e <= 1e-5);
    }
    printf("%-34s B=%d T=%d D=%d W=%d%s: y %zu, dx %zu, dw %zu of %d differ (dw max |diff| / max|dw| %.2e)\n", what, B, T, D, W,
           with_hist ? " hist" : "", bad_y, bad_dx, bad_dw, D * W, maxrel);
    if (timed) {
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
        float ms[4];
        for (int v = 0; v < 4; v++) {
            for (int it = 0; it < 23; it++) {
                if (it == 3) CK(cudaEventRecord(e0, s));
                if (v == 0) CONV_FAST_SWITCH(W, OLD_LAUNCH_FWD)
                else if (v == 1) gdn2_cuda_conv_silu_fwd(B, T, D, W, x, hist, hs, w, y1, s);
                else if (v == 2) {
                    CONV_FAST_SWITCH(W, OLD_LAUNCH_BWD)
                    gdn2_cuda_colsum_finish(part0, runs0, (int64_t)D * W, dw0, s);
                } else gdn2_cuda_conv_silu_bwd(c, B, T, D, W, x, hist, hs, w, dy, dx1, dw1);
            }
            CK(cudaEventRecord(e1, s));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&ms[v], e0, e1));
            ms[v] *= 1000.0f / 20.0f;
        }
        const double fb = 4.0 * n, bb = 6.0 * n; // bytes: fwd x, y; bwd x, dy, dx (bf16)
        printf("  fwd: old %.1f us, new %.1f us (%.2fx), %.2f TB/s | bwd: old %.1f us, new %.1f us (%.2fx), %.2f TB/s\n",
               ms[0], ms[1], ms[0] / ms[1], fb / ms[1] * 1e-6, ms[2], ms[3], ms[2] / ms[3], bb / ms[3] * 1e-6);
    }
    cudaFree(x); cudaFree(dy); cudaFree(y0); cudaFree(y1); cudaFree(dx0); cudaFree(dx1); cudaFree(w);
    cudaFree(part0); cudaFree(dw0); cudaFree(dw1); cudaFree(hist);
    free(hx); free(hdy); free(hw); free(hh); free(a); free(b2); free(da); free(db);
    return (bad_y || bad_dx || bad_dw) ? 1 : 0;
}

int main(void) {
    gdn2_cuda_nn *c = NULL;
    if (gdn2_cuda_nn_create(&c)) {
        fprintf(stderr, "conv_dev: no CUDA context: %s\n", gdn2_last_error());
        return 1;
    }
    printf("conv_dev: CONV_R %d CONV_C %d CONV_P %d CONV_PB %d CONV_BMIN %d\n", CONV_R, CONV_C, CONV_P, CONV_PB,
           CONV_BMIN);
    int bad = 0;
    bad += run_shape(c, "edge: D % 4 = 2, T % run != 0", 2, 333, 2302, 4, 0, 0);
    bad += run_shape(c, "edge: odd D, W 3, history", 2, 100, 77, 3, 1, 0);
    bad += run_shape(c, "edge: W 1, history, T 5", 3, 5, 64, 1, 1, 0);
    bad += run_shape(c, "edge: W 4, history, T 2", 2, 2, 40, 4, 1, 0);
    bad += run_shape(c, "gdn2_1.3B q/k/v (B 3)", 3, 4096, 2048, 4, 0, 1);
    bad += run_shape(c, "gdn2_1.3B q/k/v (B 4)", 4, 4096, 2048, 4, 0, 1);
    bad += run_shape(c, "gdn2_12h_100M q/k/v (B 16)", 16, 4096, 768, 4, 0, 1);
    bad += run_shape(c, "swa_gdn2_100M q/k/v (B 16)", 16, 4096, 256, 4, 0, 1);
    printf("%s\n", bad ? "conv_dev: FAILED" : "conv_dev: all outputs as the old kernels'");
    gdn2_cuda_nn_destroy(c);
    return bad ? 1 : 0;
}
