// Linear layers for a few rows (the decode step): Y[n, j] = (acc ? Y[n, j] : 0) + bias[j] + X[n, :] . W[j, :]
// for n < N <= 8, bf16 X [N,in] and W [out,in] (row-major, as src/cuda/gemm.cu), fp32 sums,
// Y fp32 or bf16; a strided batch of `count` weights (W + b*wstride, Y + b*ystride, X shared).
// The library takes it for N <= GEMV_MAX_N = 1 only: measured on an H100 (dev/cuda/gemm_small_n.cu,
// bench/results/h100-decode/8fb0eae-gemm_small_n.log) it beats cuBLASLt at n = 1 (2304 x 2304: 7.9 vs
// 10.2 us; 128 x 2304: 5.3 vs 10.2; lm_head 51.1 vs 54.0) and loses at n = 8 (21.1 vs 8.2 us: every
// warp reads its 8 input rows through L1 for each weight load); n = 2..7 are not measured.
//
// Why not cuBLASLt here: at N = 1 its products are latency-bound, not bandwidth-bound — every weight
// shape of gdn2_1.3B's step takes 9-15 us whatever its size (2304 x 2304: 9.7 us = 1.1 TB/s; 128 x
// 2304: 9.2 us for 0.6 MB; dev/cuda/gemm_small_n.cu, bench/results/h100-keep/ebf7c6f-gemm_small_n.log,
// every algorithm the heuristic offers), and the step is ~150 of them. A matrix-vector product is a
// stream over W: this kernel reads each weight row once with 16-byte loads, all of a lane's loads
// issued before its first multiply, and takes X from L1 (every warp reads the same few rows).
//
// Work split: one warp per GEMV_ROWS output rows j (the rows share each X load); lane l reads the
// 8-element column groups l, l + 32, ... of its rows, so a row of 2304 is 9 loads a lane. Sums: per
// lane in column order, then the warp's butterfly (__shfl_xor_sync, fixed order) — one order for
// every N, so row n of the result does not depend on how many rows came with it, and no atomics:
// the same bits at every run. Needs in % 8 == 0 and 16-byte aligned X, W (and
// strides); gemv_fits says whether a call qualifies (else the caller takes cuBLASLt).
//
// In the decode step it launches as a programmatic dependent of the kernel ahead (src/cuda/pdl.cuh:
// -4.4 % on the H100's batch-1 step, bench/results/h100-decode/) and may finish the op that would
// follow it as it stores (gemv_epi; one launch fewer a layer each, the same bits as that op):
//   GEMV_SIGMOID     Y = sigmoid(Y)                    the b/w gates (nn.cu k_sigmoid)
//   GEMV_SWIGLU      Y_0 = silu(X W_0^T) * (X W_1^T)  the MLP's w1|w2 (nn.cu k_swiglu_fwd): a warp takes
//                    row j of W_0 and of W_1 instead of rows j, j + 1 of one, and writes a[j] only
//   GEMV_NORM_SWISH  Y = RMSNorm(o) wn * silu(Y) over   the output gate (nn.cu k_rmsnorm_swish_fwd): the
//                    rows of D of o                    warp sums the squares of its rows' o row itself,
//                                                      in that kernel's order (D = 128: 128 values)
//   GEMV_CONV        Y = silu(conv(hist ++ Y)), hist   q/k/v's short convolutions (decode_nn.cu
//                    moves on                          k_conv_step): per channel, part p = the grid's y
// Each epilogue first rounds the product's value to bf16 as the plain store would, then applies the
// op's arithmetic in the op's order.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>
#include <string.h>

#include "../util/act.h"
#include "pdl.cuh"

#define GEMV_MAX_N 1 // the rows the library sends here (the kernel takes up to 8)
#define GEMV_ROWS 2     // output rows per warp
#define GEMV_WARPS 4    // warps per block
#define GEMV_UNROLL 4   // 16-byte loads in flight per lane and row before the multiplies
// X's loads: read-only-cache loads (X is not written while a product kernel runs). A program that runs gemv_block
// inside one kernel after X was written by that kernel (dev/cuda/decode_persist_dev.cu) defines it as a plain load.
#ifndef GEMV_LOAD_X
#define GEMV_LOAD_X(p) __ldg(p)
#endif

// the 8 products of one 16-byte group of W and of X, added to acc in element order
static __device__ __forceinline__ float gemv_dot8(uint4 w, uint4 x, float acc) {
    const __nv_bfloat162 *a = (const __nv_bfloat162 *)&w, *b = (const __nv_bfloat162 *)&x;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 fa = __bfloat1622float2(a[i]), fb = __bfloat1622float2(b[i]);
        acc = fmaf(fa.x, fb.x, acc);
        acc = fmaf(fa.y, fb.y, acc);
    }
    return acc;
}

// what the product does as it stores (above), with the operands of the op it finishes
enum { GEMV_STORE = 0, GEMV_SIGMOID = 1, GEMV_SWIGLU = 2, GEMV_NORM_SWISH = 3, GEMV_CONV = 4 };
typedef struct {
    int mode;
    // GEMV_NORM_SWISH
    const __nv_bfloat16 *o; // [N * out / D, D]
    const float *wn;        // [D]
    int64_t D;
    float eps;
    // GEMV_CONV (k_conv_step's): part p's cache of row n at hist + p*hps + slot(n)*hstride ([ksize-1, out]
    // fp32, oldest first), its weights at cw + p*cws ([out, ksize])
    float *hist;
    size_t hps, hstride;
    const int32_t *slots; // NULL: row n's slot is n
    const float *cw;
    size_t cws;
    int ksize;
} gemv_epi;

// the plain store's value before its rounding: (acc_y ? y : 0) + bias + sum, in that order
static __device__ __forceinline__ float gemv_value(float yold, int acc_y, float bj, float s) {
    return (acc_y ? yold : 0.0f) + bj + s;
}

// 1 / sqrt(mean(x^2) + eps) of the bf16 row x[0, D), summed as nn.cu's k_rmsnorm_swish_fwd does: lane l
// the elements 4 l + 128 s + k in (s, k) order, then the warp's butterfly (every lane gets it)
static __device__ __forceinline__ float gemv_row_rstd(const __nv_bfloat16 *x, int64_t D, float eps, int lane) {
    float ss = 0.0f;
    for (int64_t i = 4 * (int64_t)lane; i < D; i += 128) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float v = i + k < D ? __bfloat162float(x[i + k]) : 0.0f;
            ss += v * v;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    return 1.0f / sqrtf(ss / (float)D + eps);
}

// One block's rows: block bx of part by (the plain kernel's blockIdx.x, .y; the multi-product kernel's
// from its table). ydt: 0 fp32, 1 bf16 (the caller maps its own dtype codes); GEMV_SWIGLU and
// GEMV_NORM_SWISH: bf16 Y, acc_y 0, and for GEMV_SWIGLU no bias and one part (by 0)
template <int NB>
static __device__ __forceinline__ void gemv_block(unsigned bx, unsigned by, int N, int64_t in, int64_t out,
                                                  const __nv_bfloat16 *X, const __nv_bfloat16 *W, size_t wstride,
                                                  const float *bias, void *Y, size_t ystride, int ybf16, int acc_y,
                                                  const gemv_epi &ep) {
    static_assert(GEMV_ROWS == 2, "GEMV_SWIGLU pairs a warp's two rows");
    const int lane = threadIdx.x & 31;
    const int pair = ep.mode == GEMV_SWIGLU; // rows j of W and of W + wstride
    const int64_t warp = (int64_t)bx * GEMV_WARPS + (threadIdx.x >> 5);
    const int64_t j0 = pair ? warp : warp * GEMV_ROWS;
    W += by * wstride;
    const int64_t g = in >> 3; // 16-byte groups per row
    const uint4 *wr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
        wr[r] = (const uint4 *)(pair ? W + r * wstride + (j0 < out ? j0 : 0) * in : W + (j0 + r < out ? j0 + r : j0) * in);
    // Launched as a dependent (src/cuda/pdl.cuh): while the kernel ahead still runs, fetch this warp's
    // first weight groups into L2 (weights are not written by the step; a hint, so a weight written
    // by an earlier kernel is still read correctly: L2 is where writes land), then wait for it
    // before X is read or Y written.
    if (j0 < out) {
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int64_t c = lane + 32 * u;
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++)
                if (c < g && (c & 7) == 0) prefetch_l2(wr[r] + c); // one hint a 128-byte line
        }
    }
    pdl_wait();
    if (j0 >= out) return;
    const uint4 *xr = (const uint4 *)X;
    float acc[NB][GEMV_ROWS];
#pragma unroll
    for (int n = 0; n < NB; n++)
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) acc[n][r] = 0.0f;
    for (int64_t c0 = lane; c0 < g; c0 += 32 * GEMV_UNROLL) {
        uint4 w[GEMV_UNROLL][GEMV_ROWS];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int64_t c = c0 + 32 * u;
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++)
                w[u][r] = c < g ? __ldcs(wr[r] + c) : make_uint4(0, 0, 0, 0); // streamed: read once
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int64_t c = c0 + 32 * u;
            if (c >= g) break;
#pragma unroll
            for (int n = 0; n < NB; n++) {
                if (n >= N) break;
                const uint4 x = GEMV_LOAD_X(xr + n * g + c);
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++) acc[n][r] = gemv_dot8(w[u][r], x, acc[n][r]);
            }
        }
    }
#pragma unroll
    for (int n = 0; n < NB; n++)
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) acc[n][r] += __shfl_xor_sync(0xffffffffu, acc[n][r], o);
    if (pair) { // a[j] = silu(h1) h2 from the rounded h1 = X W_0[j]^T, h2 = X W_1[j]^T (k_swiglu_fwd's order)
        if (lane != 0 || j0 >= out) return;
        __nv_bfloat16 *y = (__nv_bfloat16 *)Y;
#pragma unroll
        for (int n = 0; n < NB; n++) {
            if (n >= N) break;
            const float z = __bfloat162float(__float2bfloat16_rn(gemv_value(0.0f, 0, 0.0f, acc[n][0])));
            const float u = __bfloat162float(__float2bfloat16_rn(gemv_value(0.0f, 0, 0.0f, acc[n][1])));
            y[(size_t)n * out + j0] = __float2bfloat16_rn(z * gdn2_sigmoid_f32(z) * u);
        }
        return;
    }
    // GEMV_NORM_SWISH: the rstd of the o row under each of this warp's outputs (whole warp: a butterfly);
    // rows j0 and j0 + 1 share their o row unless j0 + 1 starts the next one
    float rs[NB][GEMV_ROWS];
    if (ep.mode == GEMV_NORM_SWISH) {
#pragma unroll
        for (int n = 0; n < NB; n++) {
            if (n >= N) break;
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) {
                const int64_t j = j0 + r < out ? j0 + r : j0;
                if (r > 0 && j / ep.D == (j0 + r - 1) / ep.D) rs[n][r] = rs[n][r - 1];
                else rs[n][r] = gemv_row_rstd(ep.o + (size_t)n * out + j / ep.D * ep.D, ep.D, ep.eps, lane);
            }
        }
    }
    if (lane >= GEMV_ROWS) return;
    // lane r writes row j0 + r (a register array indexed by a runtime lane: select, not index)
    const int64_t j = j0 + lane;
    if (j >= out) return;
    const float bj = bias ? bias[j] : 0.0f;
#pragma unroll
    for (int n = 0; n < NB; n++) {
        if (n >= N) break;
        float s = acc[n][0], rr = ep.mode == GEMV_NORM_SWISH ? rs[n][0] : 0.0f;
#pragma unroll
        for (int r = 1; r < GEMV_ROWS; r++)
            if (lane == r) s = acc[n][r], rr = ep.mode == GEMV_NORM_SWISH ? rs[n][r] : 0.0f;
        const size_t yi = by * ystride + (size_t)n * out + j;
        if (ybf16) { // the op after the product reads the stored bf16 value and rounds its own result
            __nv_bfloat16 *y = (__nv_bfloat16 *)Y;
            __nv_bfloat16 v = __float2bfloat16_rn(gemv_value(acc_y ? __bfloat162float(y[yi]) : 0.0f, acc_y, bj, s));
            if (ep.mode == GEMV_SIGMOID) v = __float2bfloat16_rn(gdn2_sigmoid_f32(__bfloat162float(v)));
            if (ep.mode == GEMV_NORM_SWISH) // k_rmsnorm_swish_fwd: x r w silu(a), left to right
                v = __float2bfloat16_rn(__bfloat162float(ep.o[(size_t)n * out + j]) * rr * ep.wn[j % ep.D] *
                                        gdn2_silu_f32(__bfloat162float(v)));
            if (ep.mode == GEMV_CONV) { // k_conv_step on channel j of part by
                float *h = ep.hist + by * ep.hps + (size_t)(ep.slots ? ep.slots[n] : n) * ep.hstride + j;
                const float xv = __bfloat162float(v), *wc = ep.cw + by * ep.cws + j * ep.ksize;
                const int K = ep.ksize;
                float c = 0.0f;
                for (int k = 0; k < K - 1; k++) c += wc[k] * h[(size_t)k * out];
                c += wc[K - 1] * xv;
                v = __float2bfloat16_rn(gdn2_silu_f32(c));
                for (int k = 0; k + 1 < K - 1; k++) h[(size_t)k * out] = h[(size_t)(k + 1) * out];
                if (K > 1) h[(size_t)(K - 2) * out] = xv;
            }
            y[yi] = v;
        } else {
            float *y = (float *)Y;
            const float v = gemv_value(acc_y ? y[yi] : 0.0f, acc_y, bj, s);
            y[yi] = ep.mode == GEMV_SIGMOID ? gdn2_sigmoid_f32(v) : v;
        }
    }
}

template <int NB>
__global__ void __launch_bounds__(GEMV_WARPS * 32) k_gemv_bf16(int N, int64_t in, int64_t out, const __nv_bfloat16 *X,
                                                             const __nv_bfloat16 *W, size_t wstride, const float *bias,
                                                             void *Y, size_t ystride, int ybf16, int acc_y, gemv_epi ep) {
    pdl_trigger();
    gemv_block<NB>(blockIdx.x, blockIdx.y, N, in, out, X, W, wstride, bias, Y, ystride, ybf16, acc_y, ep);
}

// Several products of the one input X in one launch (the decode step's projections of x: q/k/v with their
// convolutions, f0|g0, b|w with their sigmoids: two launches fewer a layer). Product i takes the blocks
// [first, first + nbx * parts) of the grid; block b of them is block b % nbx of part b / nbx: the same
// warps, rows and sums as its own gemv_launch, so the same bits.
#define GEMV_MULTI_MAX 4
typedef struct {
    const __nv_bfloat16 *W;
    size_t wstride;
    const float *bias;
    void *Y;
    size_t ystride;
    int64_t out;
    unsigned first, nbx; // its first block, its blocks per part
    int ybf16;
    gemv_epi ep;
} gemv_product;
typedef struct {
    int n;
    gemv_product p[GEMV_MULTI_MAX];
} gemv_table;

template <int NB>
__global__ void __launch_bounds__(GEMV_WARPS * 32) k_gemv_multi(int N, int64_t in, const __nv_bfloat16 *X,
                                                              const __grid_constant__ gemv_table t) {
    pdl_trigger();
    int i = 0;
#pragma unroll
    for (int k = 1; k < GEMV_MULTI_MAX; k++)
        if (k < t.n && blockIdx.x >= t.p[k].first) i = k;
    const gemv_product &p = t.p[i];
    const unsigned b = blockIdx.x - p.first;
    gemv_block<NB>(b % p.nbx, b / p.nbx, N, in, p.out, X, p.W, p.wstride, p.bias, p.Y, p.ystride, p.ybf16, 0, p.ep);
}

// whether the small-N kernel takes this call (the pointers and strides 16-byte aligned, in % 8 == 0)
static inline int gemv_fits(int64_t N, int64_t in, const void *X, const void *W, size_t wstride) {
    return N >= 1 && N <= GEMV_MAX_N && in > 0 && in % 8 == 0 && ((uintptr_t)X & 15) == 0 &&
           ((uintptr_t)W & 15) == 0 && wstride % 8 == 0;
}

// the blocks of one part of a product of out rows, and its parts in the grid (GEMV_SWIGLU: one output)
static inline unsigned gemv_blocks(int64_t out, int mode) {
    const int64_t per_block = mode == GEMV_SWIGLU ? GEMV_WARPS : GEMV_WARPS * GEMV_ROWS;
    return (unsigned)((out + per_block - 1) / per_block);
}
static inline unsigned gemv_parts(int count, int mode) { return mode == GEMV_SWIGLU ? 1u : (unsigned)count; }

// a launch of GEMV_WARPS warps a block on st, as a programmatic dependent when pdl (src/cuda/pdl.cuh; the
// same results); at holds the attribute and must outlive the launch call
static inline cudaLaunchConfig_t gemv_cfg(dim3 grid, int pdl, cudaStream_t st, cudaLaunchAttribute *at) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(GEMV_WARPS * 32);
    cfg.stream = st;
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = pdl ? 1 : 0;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    return cfg;
}

// the launch: NB the smallest of 1, 2, 4, 8 that holds N (the sums do not depend on it)
// ep: the epilogue (NULL: the plain store); GEMV_SWIGLU takes count 2 as its two weights (one output);
// pdl: launch as a programmatic dependent of the kernel ahead. Returns the launch's error.
static inline cudaError_t gemv_launch(int64_t N, int64_t in, int64_t out, const void *X, const void *W, size_t wstride,
                                      const float *bias, void *Y, size_t ystride, int ybf16, int acc_y,
                                      const gemv_epi *ep, int count, int pdl, cudaStream_t st) {
    gemv_epi e;
    memset(&e, 0, sizeof e);
    e.mode = GEMV_STORE, e.D = 1;
    if (ep) e = *ep;
    const __nv_bfloat16 *x = (const __nv_bfloat16 *)X, *w = (const __nv_bfloat16 *)W;
    cudaLaunchAttribute at[1];
    cudaLaunchConfig_t cfg = gemv_cfg(dim3(gemv_blocks(out, e.mode), gemv_parts(count, e.mode)), pdl, st, at);
#define GEMV_GO(nb) \
    cudaLaunchKernelEx(&cfg, k_gemv_bf16<nb>, (int)N, in, out, x, w, wstride, bias, Y, ystride, ybf16, acc_y, e)
    if (N == 1) return GEMV_GO(1);
    if (N == 2) return GEMV_GO(2);
    if (N <= 4) return GEMV_GO(4);
    return GEMV_GO(8);
#undef GEMV_GO
}

// the multi-product launch: t->n <= GEMV_MULTI_MAX products with W, wstride, bias, Y, ystride, out, ybf16
// and ep set (ep.mode not GEMV_SWIGLU), count[i] parts each; fills first and nbx. Returns the launch's
// error (cudaErrorInvalidValue for a table it does not take).
static inline cudaError_t gemv_multi_launch(int64_t N, int64_t in, const void *X, gemv_table *t, const int *count,
                                            int pdl, cudaStream_t st) {
    if (t->n < 1 || t->n > GEMV_MULTI_MAX) return cudaErrorInvalidValue;
    uint64_t blocks = 0;
    for (int i = 0; i < t->n; i++) {
        gemv_product *p = &t->p[i];
        if (p->ep.mode == GEMV_SWIGLU || count[i] < 1) return cudaErrorInvalidValue;
        p->first = (unsigned)blocks, p->nbx = gemv_blocks(p->out, p->ep.mode);
        blocks += (uint64_t)p->nbx * (unsigned)count[i];
        if (blocks > 0x7fffffffu) return cudaErrorInvalidValue;
    }
    const __nv_bfloat16 *x = (const __nv_bfloat16 *)X;
    cudaLaunchAttribute at[1];
    cudaLaunchConfig_t cfg = gemv_cfg(dim3((unsigned)blocks), pdl, st, at);
#define GEMV_GO(nb) cudaLaunchKernelEx(&cfg, k_gemv_multi<nb>, (int)N, in, x, *t)
    if (N == 1) return GEMV_GO(1);
    if (N == 2) return GEMV_GO(2);
    if (N <= 4) return GEMV_GO(4);
    return GEMV_GO(8);
#undef GEMV_GO
}
