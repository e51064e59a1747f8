// A candidate for the training step's short-convolution backward (issue 16: conv_silu_bwd ran at 29 % of the
// H100's bandwidth at 6c2b831, bench/results/h100-train-ab/; dev/cuda/NEXT_RUN.md has the instruction count).
//
// The library's k_conv_bwd_fast<W> (src/cuda/nn.cu) takes one channel and a run of CONV_R = 32 time steps a
// thread: 122 registers, scalar 2-byte loads with 64-bit address arithmetic. The candidate here takes two
// adjacent channels a thread (bf16x2 loads and stores, 32-bit row offsets) and its 32-step run in two halves of
// 16 (the registers of one half), carrying the dw partial from the first half into the second: the same
// formulas, and every sum in the same order as the library's kernel (dc_t = dy_t silu'(sum_i w_i xe_{t+i});
// dx_t = sum_i w_i dc_{t+W-1-i}; part[run, ch W + i] = sum over the run's t, increasing, of dc_t xe_{t+i}), so
// dx and the partials are compared bit for bit, then both are timed. Training inputs: no conv history (hist NULL).
//
// Build and run on the device, after `make CUDA=1` (links the library's objects for the reference op):
//   nvcc -O3 -std=c++17 -arch=sm_90a -Iinclude -Isrc dev/cuda/conv_dev.cu build/libgdn2.a -lcublasLt -lcublas \
//        -lnccl -lgomp -o /tmp/conv_dev && /tmp/conv_dev
// It prints, per shape (B, T, D) of the four training configs, the library op's and the candidate's time (the
// candidate's partials then the same column sum as the library) and whether the outputs are identical.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/cuda/nn.h"
#include "../../src/util/act.h"

#include "dev_check.h"

typedef __nv_bfloat16 bf16;
#define RUN 32  // time steps a thread (the library's CONV_R: the same partial rows)
#define HALF 16 // done in two halves
#define BS 128  // threads a block

// One half-run of rows [ts, ts + nr) (nr <= HALF) for channels c, c+1 (x2, dy2: the pair's column, row stride
// D2 = D/2 pairs). dc is needed for rows [ts, te), te = min(T, ts + nr + W - 1).
template <int W>
__device__ __forceinline__ void half_run(const __nv_bfloat162 *x2, const __nv_bfloat162 *dy2, __nv_bfloat162 *dx2,
                                         int D2, int T, int ts, int nr, const float (&wa)[W], const float (&wb)[W],
                                         float (&pa)[W], float (&pb)[W]) {
    const int te = ts + nr + W - 1 < T ? ts + nr + W - 1 : T;
    float xa[HALF + 2 * W - 2], xb[HALF + 2 * W - 2], da[HALF + W - 1], db[HALF + W - 1];
    // xe_s = x row s - (W - 1) for s >= W - 1, else 0 (no history): rows ts .. te + W - 2
#pragma unroll
    for (int j = 0; j < HALF + 2 * W - 2; j++) {
        const int s = ts + j;
        float2 v = make_float2(0.0f, 0.0f);
        if (s < te + W - 1 && s >= W - 1) v = __bfloat1622float2(x2[(uint32_t)(s - (W - 1)) * (uint32_t)D2]);
        xa[j] = v.x, xb[j] = v.y;
    }
#pragma unroll
    for (int j = 0; j < HALF + W - 1; j++) {
        const int t = ts + j;
        float2 g = make_float2(0.0f, 0.0f);
        if (t < te) g = __bfloat1622float2(dy2[(uint32_t)t * (uint32_t)D2]);
        float ca = 0.0f, cb = 0.0f;
#pragma unroll
        for (int i = 0; i < W; i++) ca += wa[i] * xa[j + i], cb += wb[i] * xb[j + i];
        da[j] = t < te ? g.x * gdn2_silu_grad_f32(ca) : 0.0f;
        db[j] = t < te ? g.y * gdn2_silu_grad_f32(cb) : 0.0f;
    }
#pragma unroll
    for (int r = 0; r < HALF; r++) {
        if (r >= nr) break;
        float sa = 0.0f, sb = 0.0f;
#pragma unroll
        for (int i = 0; i < W; i++) sa += wa[i] * da[r + W - 1 - i], sb += wb[i] * db[r + W - 1 - i];
        dx2[(uint32_t)(ts + r) * (uint32_t)D2] = __floats2bfloat162_rn(sa, sb);
    }
#pragma unroll
    for (int i = 0; i < W; i++)
#pragma unroll
        for (int r = 0; r < HALF; r++)
            if (r < nr) pa[i] += da[r] * xa[r + i], pb[i] += db[r] * xb[r + i];
}

// grid (ceil(D/2 / BS), B * ceil(T / RUN)); part as the library's: [run][D * W]
template <int W>
__global__ void __launch_bounds__(BS) k_conv_bwd_2ch(int T, int D, const bf16 *x, const float *w, const bf16 *dy,
                                                     bf16 *dx, float *part) {
    const int p = blockIdx.x * BS + threadIdx.x, D2 = D / 2; // channel pair p: channels 2p, 2p + 1
    if (p >= D2) return;
    const int nr = (T + RUN - 1) / RUN, b = blockIdx.y / nr, t0 = (blockIdx.y % nr) * RUN;
    const int n = t0 + RUN < T ? RUN : T - t0;
    const size_t off = (size_t)b * (size_t)T * (size_t)D2 + (size_t)p;
    const __nv_bfloat162 *x2 = (const __nv_bfloat162 *)x + off, *dy2 = (const __nv_bfloat162 *)dy + off;
    __nv_bfloat162 *dx2 = (__nv_bfloat162 *)dx + off;
    float wa[W], wb[W], pa[W], pb[W];
#pragma unroll
    for (int i = 0; i < W; i++) wa[i] = w[(2 * p) * W + i], wb[i] = w[(2 * p + 1) * W + i], pa[i] = pb[i] = 0.0f;
    half_run<W>(x2, dy2, dx2, D2, T, t0, n < HALF ? n : HALF, wa, wb, pa, pb);
    if (n > HALF) half_run<W>(x2, dy2, dx2, D2, T, t0 + HALF, n - HALF, wa, wb, pa, pb);
    float *pr = part + (size_t)blockIdx.y * (size_t)D * W + (size_t)(2 * p) * W;
#pragma unroll
    for (int i = 0; i < W; i++) pr[i] = pa[i], pr[W + i] = pb[i];
}

// the same column sum as the library's gdn2_cuda_colsum_finish (one thread a column, runs in order here:
// only the partials are compared bit for bit, the final dw to a relative bar)
__global__ void k_colsum_ref(const float *part, int nch, int ncols, float *out) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= ncols) return;
    float s = 0.0f;
    for (int r = 0; r < nch; r++) s += part[(size_t)r * ncols + j];
    out[j] += s;
}

static uint16_t f2bf_host(float f) { // round to nearest even
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

int main(void) {
    const int W = 4;
    const struct { const char *what; int B, T, D; } shapes[] = {
        {"gdn2_1.3B / swa_gdn2_1.3B (q, k or v)", 4, 4096, 2304},
        {"gdn2_12h_100M (q, k or v)", 16, 4096, 768},
        {"swa_gdn2_100M (q, k or v)", 16, 4096, 256},
    };
    gdn2_cuda_nn *c = NULL;
    if (gdn2_cuda_nn_create(&c)) {
        fprintf(stderr, "conv_dev: no CUDA context\n");
        return 1;
    }
    cudaStream_t s = (cudaStream_t)gdn2_cuda_nn_stream(c);
    int bad = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int B = shapes[k].B, T = shapes[k].T, D = shapes[k].D;
        const size_t n = (size_t)B * T * D;
        uint16_t *hx = (uint16_t *)malloc(n * 2), *hy = (uint16_t *)malloc(n * 2);
        float *hw = (float *)malloc((size_t)D * W * 4);
        uint64_t r = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < n; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            hx[i] = f2bf_host((float)((int64_t)(r >> 40) - (1 << 23)) / (float)(1 << 22));
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            hy[i] = f2bf_host((float)((int64_t)(r >> 40) - (1 << 23)) / (float)(1 << 23));
        }
        for (int i = 0; i < D * W; i++) hw[i] = 0.5f * sinf(0.37f * (float)i);
        const int runs = B * ((T + RUN - 1) / RUN);
        bf16 *x, *dy, *dx1, *dx2;
        float *w, *dw1, *dw2, *part;
        CK(cudaMalloc(&x, n * 2)); CK(cudaMalloc(&dy, n * 2)); CK(cudaMalloc(&dx1, n * 2)); CK(cudaMalloc(&dx2, n * 2));
        CK(cudaMalloc(&w, (size_t)D * W * 4)); CK(cudaMalloc(&dw1, (size_t)D * W * 4)); CK(cudaMalloc(&dw2, (size_t)D * W * 4));
        CK(cudaMalloc(&part, (size_t)runs * D * W * 4));
        CK(cudaMemcpy(x, hx, n * 2, cudaMemcpyHostToDevice)); CK(cudaMemcpy(dy, hy, n * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(w, hw, (size_t)D * W * 4, cudaMemcpyHostToDevice));
        CK(cudaMemset(dw1, 0, (size_t)D * W * 4)); CK(cudaMemset(dw2, 0, (size_t)D * W * 4));
        // correctness: one call each
        if (gdn2_cuda_conv_silu_bwd(c, B, T, D, W, x, NULL, 0, w, dy, dx1, dw1)) {
            fprintf(stderr, "conv_dev: library op failed\n");
            return 1;
        }
        dim3 grid((unsigned)((D / 2 + BS - 1) / BS), (unsigned)runs);
        k_conv_bwd_2ch<4><<<grid, BS, 0, s>>>(T, D, x, w, dy, dx2, part);
        k_colsum_ref<<<(D * W + 255) / 256, 256, 0, s>>>(part, runs, D * W, dw2);
        CK(cudaStreamSynchronize(s));
        CK(cudaGetLastError());
        uint16_t *a = (uint16_t *)malloc(n * 2), *bb = (uint16_t *)malloc(n * 2);
        float *ga = (float *)malloc((size_t)D * W * 4), *gb = (float *)malloc((size_t)D * W * 4);
        CK(cudaMemcpy(a, dx1, n * 2, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(bb, dx2, n * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(ga, dw1, (size_t)D * W * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(gb, dw2, (size_t)D * W * 4, cudaMemcpyDeviceToHost));
        size_t ndiff = 0;
        for (size_t i = 0; i < n; i++) ndiff += a[i] != bb[i];
        double e2 = 0, r2 = 0;
        for (int i = 0; i < D * W; i++) e2 += (double)(ga[i] - gb[i]) * (ga[i] - gb[i]), r2 += (double)ga[i] * ga[i];
        const double dwrel = sqrt(e2 / (r2 > 0 ? r2 : 1));
        const int ok = ndiff == 0 && dwrel < 1e-6;
        bad += !ok;
        // timing: 20 calls each between events, median of 5 groups
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
        float tl[5], tc[5];
        for (int g = 0; g < 5; g++) {
            CK(cudaEventRecord(e0, s));
            for (int i = 0; i < 20; i++) gdn2_cuda_conv_silu_bwd(c, B, T, D, W, x, NULL, 0, w, dy, dx1, dw1);
            CK(cudaEventRecord(e1, s));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&tl[g], e0, e1));
            CK(cudaEventRecord(e0, s));
            for (int i = 0; i < 20; i++) {
                k_conv_bwd_2ch<4><<<grid, BS, 0, s>>>(T, D, x, w, dy, dx2, part);
                k_colsum_ref<<<(D * W + 255) / 256, 256, 0, s>>>(part, runs, D * W, dw2);
            }
            CK(cudaEventRecord(e1, s));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&tc[g], e0, e1));
        }
        for (int i = 0; i < 5; i++)
            for (int j = i + 1; j < 5; j++) {
                if (tl[j] < tl[i]) { float t = tl[i]; tl[i] = tl[j]; tl[j] = t; }
                if (tc[j] < tc[i]) { float t = tc[i]; tc[i] = tc[j]; tc[j] = t; }
            }
        const double gb_min = (double)n * 2 * 3 / 1e9; // x, dy, dx once
        printf("%-40s B=%d T=%d D=%d: library %.1f us, candidate %.1f us (%.2fx); minimal bytes %.3f GB -> %.2f / %.2f "
               "TB/s; dx %s (%zu of %zu differ), dw rel %.1e: %s\n",
               shapes[k].what, B, T, D, tl[2] * 1e3 / 20, tc[2] * 1e3 / 20, tl[2] / tc[2], gb_min,
               gb_min / (tl[2] / 20 / 1e3) / 1e3, gb_min / (tc[2] / 20 / 1e3) / 1e3, ndiff ? "differs" : "identical",
               ndiff, n, dwrel, ok ? "ok" : "FAILED");
        free(hx), free(hy), free(hw), free(a), free(bb), free(ga), free(gb);
        cudaFree(x), cudaFree(dy), cudaFree(dx1), cudaFree(dx2), cudaFree(w), cudaFree(dw1), cudaFree(dw2), cudaFree(part);
        cudaEventDestroy(e0), cudaEventDestroy(e1);
    }
    gdn2_cuda_nn_destroy(c);
    printf("%s\n", bad ? "conv_dev: FAILED" : "conv_dev: all outputs as the library's");
    return bad != 0;
}
