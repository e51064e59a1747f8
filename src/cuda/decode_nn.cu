// The CUDA backend's decode-step kernels (C API: src/cuda/decode_nn.h): the short conv of one token
// with its cache, and one query per sequence against its key/value cache. bf16 activations, fp32
// caches, fp32 math; the formulas those of the CPU ops (src/backend/cpu.c cpu_conv_step,
// src/backend/nn.c gdn2_nn_attn_step). No atomics: the same call, the same bits.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "../util/act.h"
#include "../util/rope.h"
#include "common.cuh"
#include "decode_nn.h"
#include "gdn2_error.h"
#include "host.cuh"
#include "pdl.cuh"

typedef __nv_bfloat16 bf16;

namespace {

constexpr int CS_BS = 256;     // threads per block of the conv step and the cache store
constexpr int AS_WARPS = 8;    // warps per (sequence, query head) block of the attention step
constexpr int AS_MAXR = 8;     // dims per lane: hs <= 32 * AS_MAXR

int launch_status(const char *fn) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "%s: kernel launch failed: %s", fn, cudaGetErrorString(e));
    return GDN2_OK;
}

unsigned blocks_for(int64_t n) {
    int64_t b = (n + CS_BS - 1) / CS_BS;
    if (b < 1) b = 1;
    return (unsigned)(b < (1 << 22) ? b : (1 << 22));
}

// ---- conv step ----------------------------------------------------------------------------------
// part blockIdx.y: x + part*xs, hist + part*ps, w + part*ws, y + part*ys
__global__ void k_conv_step(int64_t n, int64_t D, int W, const bf16 *__restrict__ x, size_t xs, float *hist, size_t ps,
                            size_t hs, const int32_t *__restrict__ slots, const float *__restrict__ w, size_t ws,
                            bf16 *__restrict__ y, size_t ys) {
    pdl_trigger(); // the next kernel may be a one-row product (src/cuda/pdl.cuh)
    x += blockIdx.y * xs, hist += blockIdx.y * ps, w += blockIdx.y * ws, y += blockIdx.y * ys;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n * D; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = e / D, ch = e % D;
        float *h = hist + (size_t)(slots ? slots[i] : i) * hs + ch;
        const float xv = __bfloat162float(x[e]);
        const float *wc = w + ch * W;
        // c = sum_{k<W} w_k xe_k (k increasing), xe = (h rows 0..W-2, x)
        float c = 0.0f;
        for (int k = 0; k < W - 1; k++) c += wc[k] * h[(size_t)k * D];
        c += wc[W - 1] * xv;
        y[e] = __float2bfloat16_rn(gdn2_silu_f32(c));
        // the cache moves on: rows 1..W-2 up by one, x last
        for (int k = 0; k + 1 < W - 1; k++) h[(size_t)k * D] = h[(size_t)(k + 1) * D];
        if (W > 1) h[(size_t)(W - 2) * D] = xv;
    }
}

// ---- attention step -----------------------------------------------------------------------------
struct StepParams {
    const bf16 *qkv;
    const int64_t *pos;
    const int32_t *slots;
    float *cache;
    size_t stride;
    bf16 *o;
    float *part; // S > 1: the splits' partials [n, nh, S, 2 + hs] (max, sum, unnormalised output)
    int64_t cap;
    int n, nh, ng, qpk, hs, window, S;
    float base, scale;
};

__device__ __forceinline__ int64_t cache_row(const StepParams &p, int64_t j) { return p.window > 0 ? j % p.cap : j; }

// rotate-half RoPE of the pair (i, i + hs/2) of src (bf16) at position pos, as the CPU: each product
// rounded (no fma)
__device__ __forceinline__ void rope_pair(const bf16 *src, int i, int hs, int64_t pos, float base, float &y1,
                                          float &y2) {
    float c, s;
    gdn2_rope_angle(pos, i, hs, base, &c, &s);
    const int h2 = hs / 2;
    const float x1 = __bfloat162float(src[i]), x2 = __bfloat162float(src[i + h2]);
    y1 = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
    y2 = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
}

// the new key (after RoPE) and value of each (sequence, group) into row pos % cap (or pos):
// one thread per (sequence, group, pair)
__global__ void k_attn_store(StepParams p) {
    const int h2 = p.hs / 2;
    const int64_t total = (int64_t)p.n * p.ng * h2;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(e % h2);
        const int64_t r = e / h2;
        const int g = (int)(r % p.ng), b = (int)(r / p.ng);
        const int64_t pos = p.pos[b], row = cache_row(p, pos);
        const int64_t nqkv = (int64_t)(p.nh + 2 * p.ng) * p.hs;
        const bf16 *grp = p.qkv + b * nqkv + (int64_t)g * (p.qpk + 2) * p.hs;
        float *kc = p.cache + (size_t)(p.slots ? p.slots[b] : b) * p.stride;
        float *vc = kc + (size_t)p.ng * p.cap * p.hs;
        float *kr = kc + ((size_t)g * p.cap + row) * p.hs, *vr = vc + ((size_t)g * p.cap + row) * p.hs;
        float y1, y2;
        rope_pair(grp + p.qpk * p.hs, i, p.hs, pos, p.base, y1, y2);
        kr[i] = y1;
        kr[i + h2] = y2;
        const bf16 *vs = grp + (p.qpk + 1) * p.hs;
        vr[i] = __bfloat162float(vs[i]);
        vr[i + h2] = __bfloat162float(vs[i + h2]);
    }
}

// block (sequence b, query head h, split s): the visible positions j0..pos, or with S > 1 the s-th of S
// contiguous shares of them (flash-decoding: at batch 1 the n nh blocks alone leave most SMs idle);
// warp w takes the positions a + w, a + w + 8, ... of its range; lane holds dims lane + 32 r; online
// softmax per warp, merged over the warps at the end: into o (S = 1) or into the split's partial,
// which k_attn_combine merges over the splits in order
template <int R>
__global__ void __launch_bounds__(AS_WARPS * 32) k_attn_step(StepParams p) {
    __shared__ float sq[32 * R];
    __shared__ float sm[AS_WARPS], sl[AS_WARPS];
    __shared__ float sacc[AS_WARPS][32 * R];
    const int b = blockIdx.x, h = blockIdx.y, g = h / p.qpk;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int hs = p.hs, h2 = hs / 2;
    const int64_t pos = p.pos[b];
    const int64_t nqkv = (int64_t)(p.nh + 2 * p.ng) * hs;
    const bf16 *qs = p.qkv + b * nqkv + ((int64_t)g * (p.qpk + 2) + h % p.qpk) * hs;
    for (int i = threadIdx.x; i < 32 * R; i += blockDim.x) sq[i] = 0.0f;
    __syncthreads();
    for (int i = threadIdx.x; i < h2; i += blockDim.x) {
        float y1, y2;
        rope_pair(qs, i, hs, pos, p.base, y1, y2);
        sq[i] = y1;
        sq[i + h2] = y2;
    }
    __syncthreads();
    float q[R];
#pragma unroll
    for (int r = 0; r < R; r++) q[r] = sq[lane + 32 * r];
    const float *kc = p.cache + (size_t)(p.slots ? p.slots[b] : b) * p.stride;
    const float *vc = kc + (size_t)p.ng * p.cap * hs;
    kc += (size_t)g * p.cap * hs;
    vc += (size_t)g * p.cap * hs;
    int64_t j0 = p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0, j1 = pos;
    if (p.S > 1) { // this split's share of j0..pos
        const int64_t chunk = (pos - j0 + p.S) / p.S, a = j0 + (int64_t)blockIdx.z * chunk;
        j1 = a + chunk - 1 < pos ? a + chunk - 1 : pos;
        j0 = a;
    }
    float m = -INFINITY, l = 0.0f, acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    for (int64_t j = j0 + warp; j <= j1; j += AS_WARPS) {
        const size_t row = (size_t)cache_row(p, j) * hs;
        float part = 0.0f, vv[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int d = lane + 32 * r;
            const bool in = d < hs;
            part += in ? q[r] * kc[row + d] : 0.0f;
            vv[r] = in ? vc[row + d] : 0.0f;
        }
        const float s = p.scale * warp_sum(part);
        const float mn = fmaxf(m, s), corr = expf(m - mn), e = expf(s - mn);
        l = l * corr + e;
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = acc[r] * corr + e * vv[r];
        m = mn;
    }
    if (lane == 0) sm[warp] = m, sl[warp] = l;
#pragma unroll
    for (int r = 0; r < R; r++) sacc[warp][lane + 32 * r] = acc[r];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < AS_WARPS; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f;
    for (int w = 0; w < AS_WARPS; w++) L += sm[w] == -INFINITY ? 0.0f : sl[w] * expf(sm[w] - M);
    if (p.S > 1) { // the split's partial: M, L, the unnormalised output (M = -inf: no position here)
        float *pp = p.part + (((size_t)b * p.nh + h) * p.S + blockIdx.z) * (size_t)(2 + hs);
        if (threadIdx.x == 0) pp[0] = M, pp[1] = L;
        for (int d = threadIdx.x; d < hs; d += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < AS_WARPS; w++)
                if (sm[w] != -INFINITY) v += sacc[w][d] * expf(sm[w] - M);
            pp[2 + d] = v;
        }
        return;
    }
    bf16 *ob = p.o + (int64_t)b * p.nh * hs + (int64_t)h * hs;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < AS_WARPS; w++)
            if (sm[w] != -INFINITY) v += sacc[w][d] * expf(sm[w] - M);
        ob[d] = __float2bfloat16_rn(v / L);
    }
}

// block (sequence b, query head h): the S partials merged in split order, as the warps are above
__global__ void k_attn_combine(StepParams p) {
    const int b = blockIdx.x, h = blockIdx.y, hs = p.hs;
    const float *pp = p.part + ((size_t)b * p.nh + h) * p.S * (size_t)(2 + hs);
    float M = -INFINITY;
    for (int s = 0; s < p.S; s++) M = fmaxf(M, pp[(size_t)s * (2 + hs)]);
    float L = 0.0f;
    for (int s = 0; s < p.S; s++) {
        const float ms = pp[(size_t)s * (2 + hs)];
        L += ms == -INFINITY ? 0.0f : pp[(size_t)s * (2 + hs) + 1] * expf(ms - M);
    }
    bf16 *ob = p.o + (int64_t)b * p.nh * hs + (int64_t)h * hs;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < p.S; s++) {
            const float ms = pp[(size_t)s * (2 + hs)];
            if (ms != -INFINITY) v += pp[(size_t)s * (2 + hs) + 2 + d] * expf(ms - M);
        }
        ob[d] = __float2bfloat16_rn(v / L);
    }
}

} // namespace

extern "C" int gdn2_cuda_conv_step(int64_t n, int64_t D, int64_t W, int count, const void *x, size_t xs, float *hist,
                                   size_t hs, size_t hist_stride, const int32_t *slots, const float *w, size_t ws, void *y,
                                   size_t ys, void *stream) {
    const char *fn = "gdn2_cuda_conv_step";
    if (n < 0 || D < 0 || W < 1 || W > 64 || count < 0 || count > 65535)
        return gdn2_error(GDN2_ERR_ARG, "%s: n=%lld D=%lld W=%lld count=%d (need n, D >= 0, 1 <= W <= 64, 0 <= count <= 65535)",
                          fn, (long long)n, (long long)D, (long long)W, count);
    if (n == 0 || D == 0 || count == 0) return GDN2_OK;
    if (!x || !w || !y || (W > 1 && !hist))
        return gdn2_error(GDN2_ERR_ARG, "%s: %s is NULL", fn, !x ? "x" : !w ? "w" : !y ? "y" : "hist");
    const dim3 grid(blocks_for(n * D), (unsigned)count);
    k_conv_step<<<grid, CS_BS, 0, (cudaStream_t)stream>>>(n, D, (int)W, (const bf16 *)x, xs, hist, hs, hist_stride,
                                                          slots, w, ws, (bf16 *)y, ys);
    return launch_status(fn);
}

extern "C" int gdn2_cuda_attn_step(const gdn2_cuda_attn_shape *s, const void *qkv, const int64_t *pos,
                                   const int32_t *slots, int64_t cap, float *cache, size_t stride, void *o,
                                   float *part, size_t part_floats, void *stream) {
    const char *fn = "gdn2_cuda_attn_step";
    if (!s) return gdn2_error(GDN2_ERR_ARG, "%s: shape is NULL", fn);
    if (s->B < 0 || s->B > INT32_MAX || s->n_head < 1 || s->n_head > 65535 || s->n_groups < 1 ||
        s->n_head % s->n_groups || s->hs < 2 || s->hs % 2 || s->hs > 32 * AS_MAXR || s->window < 0 || cap < 1)
        return gdn2_error(GDN2_ERR_UNSUPPORTED,
                          "%s: n=%lld n_head=%lld n_groups=%lld head_size=%lld window=%lld cap=%lld (need n < 2^31, "
                          "n_head a multiple of n_groups, head_size even and <= %d, cap >= 1)",
                          fn, (long long)s->B, (long long)s->n_head, (long long)s->n_groups, (long long)s->hs,
                          (long long)s->window, (long long)cap, 32 * AS_MAXR);
    if (s->B == 0) return GDN2_OK;
    if (!qkv || !pos || !cache || !o)
        return gdn2_error(GDN2_ERR_ARG, "%s: %s is NULL", fn, !qkv ? "qkv" : !pos ? "pos" : !cache ? "cache" : "o");
    StepParams p;
    p.qkv = (const bf16 *)qkv, p.pos = pos, p.slots = slots, p.cache = cache, p.stride = stride, p.o = (bf16 *)o;
    p.cap = cap, p.n = (int)s->B, p.nh = (int)s->n_head, p.ng = (int)s->n_groups, p.qpk = p.nh / p.ng;
    p.hs = (int)s->hs, p.window = (int)(s->window < INT32_MAX ? s->window : INT32_MAX);
    p.base = s->rope_base, p.scale = 1.0f / sqrtf((float)s->hs);
    // splits: a warp walks its keys one at a time (latency-bound); with fewer (sequence, head) blocks
    // than SMs, enough splits for two blocks an SM (at most 32 and what `part` holds). At batch 1 of
    // swa_gdn2_1.3B the 18 blocks alone took ~0.1 ms a layer (the op profile, bench/results/h100-decode/
    // decode_model.log); split 15 ways, the batch-1 step went 3,276 -> 2,063 us at 8K context
    // (bench/results/h100-decode/9c1acb3-attn_ab_*). Splitting up to a full SM (8 blocks of 8 warps),
    // which batch 16's 288 blocks would take, is not measured yet.
    static PerDevice sms;
    const int n_sm = sms.get(current_device(), [] {
        int a = 0;
        return cudaDeviceGetAttribute(&a, cudaDevAttrMultiProcessorCount, current_device()) == cudaSuccess ? a : 0;
    });
    const int64_t blocks = (int64_t)p.n * p.nh;
    int S = 1;
    if (part && blocks < n_sm) {
        S = (int)((2 * (int64_t)n_sm + blocks - 1) / blocks);
        if (S > 32) S = 32;
        while (S > 1 && (size_t)blocks * S * (size_t)(2 + p.hs) > part_floats) S--;
    }
    p.S = S, p.part = part;
    cudaStream_t st = (cudaStream_t)stream;
    k_attn_store<<<blocks_for((int64_t)p.n * p.ng * (p.hs / 2)), CS_BS, 0, st>>>(p);
    int rc = launch_status(fn);
    if (rc) return rc;
    const dim3 grid((unsigned)p.n, (unsigned)p.nh, (unsigned)S);
    const int R = (p.hs + 31) / 32;
    if (R <= 1) k_attn_step<1><<<grid, AS_WARPS * 32, 0, st>>>(p);
    else if (R <= 2) k_attn_step<2><<<grid, AS_WARPS * 32, 0, st>>>(p);
    else if (R <= 4) k_attn_step<4><<<grid, AS_WARPS * 32, 0, st>>>(p);
    else k_attn_step<8><<<grid, AS_WARPS * 32, 0, st>>>(p);
    if ((rc = launch_status(fn)) || S == 1) return rc;
    k_attn_combine<<<dim3((unsigned)p.n, (unsigned)p.nh), 128, 0, st>>>(p);
    return launch_status(fn);
}
