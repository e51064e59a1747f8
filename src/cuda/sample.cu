// Token sampling on the GPU (C API: src/cuda/decode_nn.h gdn2_cuda_sample_rows): the semantics of the
// CPU sampler (src/ops/sample.c) on the integer weights of src/util/sample.h, bit for bit.
//
// Two kernels, one semantics. k_sample_cl (rows of at most CL * SB * EPT = 65,536 logits, on a GPU with
// thread block clusters): a cluster of CL = 8 blocks per row, each holding its slice's keys and weights
// in registers (each weight is computed once; the radix passes read registers), the histograms and
// sums combined across the cluster through distributed shared memory. k_sample (any V): one block per
// row that recomputes keys and weights at every pass (for larger V, and for batches whose clusters would
// not fit one wave: gdn2_cuda_sample_rows). The single block spent ~0.45 ms at batch 1 on gdn2_1.3B's
// 50,304 logits at top-p 0.95 (the weights are double-precision polynomials, ~11 passes, one SM); the
// cluster ~0.1 ms (bench/results/h100-decode/a83144c-sample_ab_*). In both everything is a 64-bit integer: a candidate's order key (larger = earlier:
// larger logit, then smaller id) and its weight w = floor(exp((z - z_max)/T) 2^40). The argmax is the
// largest key; the top-k cut is the k-th largest key, found by an MSB radix select (8 passes of 8
// bits, histograms of counts); the nucleus boundary is found the same way with histograms of
// weight (the first digit, from the top, where the running mass reaches what is still needed); the
// draw is an inclusive scan of the kept weights in id order. Histograms use integer atomics (one per
// warp and bin, hist_add) and the sums integer reductions: exact, so the result does not depend on
// the order the threads run in.
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../util/sample.h"
#include "decode_nn.h"
#include "gdn2_error.h"
#include "host.cuh"

namespace {

constexpr int SB = 512;        // threads per row
constexpr int NW = SB / 32;

// block-wide max / sum of one uint64 per thread; every thread gets the result
__device__ uint64_t block_max(uint64_t x, uint64_t *red) {
    for (int o = 16; o > 0; o >>= 1) {
        uint64_t y = __shfl_xor_sync(0xffffffffu, x, o);
        x = y > x ? y : x;
    }
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) red[wid] = x;
    __syncthreads();
    uint64_t m = red[0];
    for (int i = 1; i < NW; i++) m = red[i] > m ? red[i] : m;
    return m;
}

__device__ uint64_t block_sum(uint64_t x, uint64_t *red) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) red[wid] = x;
    __syncthreads();
    uint64_t s = 0;
    for (int i = 0; i < NW; i++) s += red[i];
    return s;
}

// hist[d] += add, this lane's share, with the adds of the warp's lanes that go to the same bin summed
// first and added once: most of a row's keys share their top digits, and 32 lanes adding to one
// shared address one after another made the sampled decode step at batch 1 0.4 ms slower than
// downloading the logits (bench/results/h200-decode-prof). Integer sums: the histogram is the same
// whatever the grouping. Every lane of the warp calls it (d = -1: nothing to add).
__device__ __forceinline__ void hist_add(uint64_t *hist, int d, uint64_t add) {
    const unsigned grp = __match_any_sync(0xffffffffu, d);
    uint64_t s;
    if (grp == 0xffffffffu) {
        s = add;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    } else {
        s = 0;
        for (unsigned m = grp; m; m &= m - 1) s += __shfl_sync(grp, add, __ffs(m) - 1);
    }
    if (d >= 0 && s && (int)(threadIdx.x & 31) == __ffs(grp) - 1)
        atomicAdd((unsigned long long *)&hist[d], (unsigned long long)s);
}

// thread 0: the digit d (255 down) at which the running total of hist, from the top, first reaches
// need, and the mass still needed inside d, into bcast[0], bcast[1] (radix_select's step; hist the
// block's histogram or the cluster's totals)
__device__ __forceinline__ void pick_digit(const uint64_t *hist, uint64_t need, uint64_t *bcast) {
    if (threadIdx.x != 0) return;
    uint64_t cum = 0;
    int d = 255;
    for (; d > 0; d--) {
        if (cum + hist[d] >= need) break;
        cum += hist[d];
    }
    bcast[0] = (uint64_t)d;
    bcast[1] = need - cum;
}

// one tile of the draw, every thread of the block: x this thread's kept weight at id v (tiles in
// ascending id order, `before_tiles` the kept mass of the ids before the tile). The inclusive scan of
// the tile; the first id whose running mass exceeds r is written to *found (the running mass only
// grows, so at most one thread sees before + inc - x <= r < before + inc with x > 0). Returns the
// tile's mass; *found is read after the call's last barrier.
__device__ __forceinline__ uint64_t draw_tile(uint64_t x, int v, uint64_t before_tiles, uint64_t r, uint64_t *wsum,
                                              int *found) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    uint64_t inc = x;
    for (int o = 1; o < 32; o <<= 1) {
        const uint64_t y = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += y;
    }
    __syncthreads();
    if (lane == 31) wsum[wid] = inc;
    __syncthreads();
    uint64_t before = before_tiles, tile = 0;
    for (int i = 0; i < wid; i++) before += wsum[i];
    for (int i = 0; i < NW; i++) tile += wsum[i];
    if (x > 0 && before + inc > r && before + inc - x <= r) *found = v;
    __syncthreads();
    return tile;
}

// MSB radix select over the keys of row z[0..V) that are >= lo_key: the key at which the running
// total of `weighted ? w : 1`, taken from the largest key down, first reaches `need` (>= 1, at most
// the total). weighted = 0: the need-th largest key (top-k); 1: the nucleus boundary.
__device__ uint64_t radix_select(const float *z, int V, float zmax, float T, uint64_t lo_key, int weighted, uint64_t need,
                                 uint64_t *hist, uint64_t *bcast) {
    uint64_t prefix = 0, mask = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int d = threadIdx.x; d < 256; d += SB) hist[d] = 0;
        __syncthreads();
        for (int v0 = 0; v0 < V; v0 += SB) { // the same trip count in every thread: hist_add is warp-wide
            const int v = v0 + (int)threadIdx.x;
            int d = -1;
            uint64_t add = 0;
            if (v < V) {
                const uint64_t key = gdn2_sample_key(z[v], v);
                if (key >= lo_key && (key & mask) == prefix) {
                    add = weighted ? gdn2_sample_weight(z[v], zmax, T) : 1;
                    if (add) d = (int)((key >> shift) & 255);
                }
            }
            hist_add(hist, d, add);
        }
        __syncthreads();
        pick_digit(hist, need, bcast);
        __syncthreads();
        prefix |= bcast[0] << shift;
        mask |= (uint64_t)255 << shift;
        need = bcast[1];
        __syncthreads();
    }
    return prefix;
}

__global__ void __launch_bounds__(SB) k_sample(const float *__restrict__ logits, int64_t ld, int V,
                                               const gdn2_sample_row_params *__restrict__ params, int32_t *out) {
    __shared__ uint64_t red[NW];
    __shared__ uint64_t hist[256];
    __shared__ uint64_t bcast[2];
    __shared__ int found;
    const float *z = logits + (size_t)blockIdx.x * (size_t)ld;
    const gdn2_sample_row_params p = params[blockIdx.x];

    // argmax: the largest key
    uint64_t best = 0;
    for (int v = threadIdx.x; v < V; v += SB) {
        const uint64_t key = gdn2_sample_key(z[v], v);
        best = key > best ? key : best;
    }
    best = block_max(best, red);
    const int am = (int)(0xFFFFFFFFu - (uint32_t)best);
    if (!(p.temperature > 0)) {
        if (threadIdx.x == 0) out[blockIdx.x] = am;
        return;
    }
    const float zmax = z[am], T = p.temperature;
    const int topk = p.top_k > 0 && p.top_k < V, nucleus = p.top_p > 0 && p.top_p < 1;
    // the kept set: key >= cut (all: cut 0; top-k alone: the k-th logit's key with the largest id
    // bits cleared, so every equal logit passes; nucleus: the boundary's key)
    uint64_t cut = 0;
    if (topk) cut = radix_select(z, V, zmax, T, 0, 0, (uint64_t)p.top_k, hist, bcast);
    if (nucleus) {
        uint64_t tot = 0;
        for (int v = threadIdx.x; v < V; v += SB)
            if (gdn2_sample_key(z[v], v) >= cut) tot += gdn2_sample_weight(z[v], zmax, T);
        tot = block_sum(tot, red);
        cut = radix_select(z, V, zmax, T, cut, 1, gdn2_sample_target(p.top_p, tot), hist, bcast);
    } else if (topk) {
        cut &= 0xFFFFFFFF00000000ull; // z >= the k-th's logit (its key's high half)
    }
    uint64_t M = 0;
    for (int v = threadIdx.x; v < V; v += SB)
        if (gdn2_sample_key(z[v], v) >= cut) M += gdn2_sample_weight(z[v], zmax, T);
    M = block_sum(M, red);
    const uint64_t r = gdn2_sample_point(p.u, M);
    // the draw: tiles of SB ids in ascending order, an inclusive scan of the kept weights
    if (threadIdx.x == 0) found = -1;
    uint64_t base = 0;
    __shared__ uint64_t wsum[NW];
    for (int t0 = 0; t0 < V; t0 += SB) {
        const int v = t0 + threadIdx.x;
        uint64_t x = 0;
        if (v < V && gdn2_sample_key(z[v], v) >= cut) x = gdn2_sample_weight(z[v], zmax, T);
        const uint64_t tile = draw_tile(x, v, base, r, wsum, &found);
        if (found >= 0) break;
        base += tile;
    }
    if (threadIdx.x == 0) out[blockIdx.x] = found >= 0 ? found : am;
}

// ---- one cluster of CL blocks per row ------------------------------------------------------------
constexpr int CL = 8;   // blocks per row (a thread block cluster: portable size)
constexpr int EPT = 16; // logits per thread, held in registers: rows of V <= CL * SB * EPT
namespace cg = cooperative_groups;

// a value per block (every thread of the block holds it) combined over the cluster in rank order:
// op 0 max, 1 sum, 2 the sum over the ranks below this block's. slot: this block's shared word; the
// trailing cluster sync lets the caller write it again.
__device__ uint64_t cl_combine(cg::cluster_group &cl, uint64_t x, uint64_t *slot, int op) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x == 0) *slot = x;
    cl.sync();
    const int me = (int)cl.block_rank();
    uint64_t m = 0;
    for (int r = 0; r < CL; r++) {
        const uint64_t y = *cl.map_shared_rank(slot, r);
        if (op == 0) m = y > m ? y : m;
        else if (op == 1 || r < me) m += y;
    }
    cl.sync();
    return m;
#else
    return x;
#endif
}

// radix_select over the cluster's row: this thread's logits are v = v0 + threadIdx.x + e SB (e < EPT,
// v < v1) with keys key[e] and weights w[e]; each block's histogram of its slice, then every block sums
// the CL histograms (distributed shared memory, rank order: integers, exact) and takes the same digit.
// Two histogram buffers, alternating: a block clears buffer b two passes later, after the cluster sync
// of the pass between, which every block reaches only once it has read buffer b.
__device__ __forceinline__ uint64_t radix_select_cl(cg::cluster_group &cl, const uint64_t (&key)[EPT],
                                                    const uint64_t (&w)[EPT], int v0, int v1, uint64_t lo_key,
                                                    int weighted, uint64_t need, uint64_t (*hist)[256], uint64_t *tot,
                                                    uint64_t *bcast) {
    uint64_t prefix = 0, mask = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    int b = 0;
    for (int shift = 56; shift >= 0; shift -= 8, b ^= 1) {
        for (int d = threadIdx.x; d < 256; d += SB) hist[b][d] = 0;
        __syncthreads();
#pragma unroll
        for (int e = 0; e < EPT; e++) { // the same trip count in every thread: hist_add is warp-wide
            const int v = v0 + (int)threadIdx.x + e * SB;
            int d = -1;
            uint64_t add = 0;
            if (v < v1 && key[e] >= lo_key && (key[e] & mask) == prefix) {
                add = weighted ? w[e] : 1;
                if (add) d = (int)((key[e] >> shift) & 255);
            }
            hist_add(hist[b], d, add);
        }
        cl.sync(); // every block's histogram complete
        for (int d = threadIdx.x; d < 256; d += SB) {
            uint64_t t = 0;
            for (int r = 0; r < CL; r++) t += cl.map_shared_rank(hist[b], r)[d];
            tot[d] = t;
        }
        __syncthreads();
        pick_digit(tot, need, bcast); // on the cluster's totals
        __syncthreads();
        prefix |= bcast[0] << shift;
        mask |= (uint64_t)255 << shift;
        need = bcast[1];
        __syncthreads();
    }
    cl.sync(); // the last two buffers read by all before the caller goes on (and may exit)
#endif
    return prefix;
}

// k_sample's steps on a cluster of CL blocks per row (rank r: the slice [r chunk, (r+1) chunk) of the
// row). The draw: each block's kept mass, the masses of the ranks below it as its base; the block whose
// range [base, base + mass) holds r scans its slice in id order as k_sample does and writes the token.
__global__ void __launch_bounds__(SB) k_sample_cl(const float *__restrict__ logits, int64_t ld, int V,
                                                  const gdn2_sample_row_params *__restrict__ params, int32_t *out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    __shared__ uint64_t red[NW];
    __shared__ uint64_t hist[2][256];
    __shared__ uint64_t tot[256];
    __shared__ uint64_t bcast[2];
    __shared__ uint64_t slot;
    __shared__ uint64_t wsum[NW];
    __shared__ int found;
    cg::cluster_group cl = cg::this_cluster();
    const int row = (int)(blockIdx.x / CL), rank = (int)cl.block_rank();
    const int chunk = (V + CL - 1) / CL, v0 = rank * chunk, v1 = v0 + chunk < V ? v0 + chunk : V;
    const float *z = logits + (size_t)row * (size_t)ld;
    const gdn2_sample_row_params p = params[row];

    uint64_t key[EPT], w[EPT];
    uint64_t best = 0;
#pragma unroll
    for (int e = 0; e < EPT; e++) {
        const int v = v0 + (int)threadIdx.x + e * SB;
        key[e] = v < v1 ? gdn2_sample_key(z[v], v) : 0;
        best = v < v1 && key[e] > best ? key[e] : best;
    }
    best = cl_combine(cl, block_max(best, red), &slot, 0);
    const int am = (int)(0xFFFFFFFFu - (uint32_t)best);
    if (!(p.temperature > 0)) { // every block of the row takes this branch
        if (rank == 0 && threadIdx.x == 0) out[row] = am;
        return;
    }
    const float zmax = z[am], T = p.temperature;
#pragma unroll
    for (int e = 0; e < EPT; e++) {
        const int v = v0 + (int)threadIdx.x + e * SB;
        w[e] = v < v1 ? gdn2_sample_weight(z[v], zmax, T) : 0;
    }
    const int topk = p.top_k > 0 && p.top_k < V, nucleus = p.top_p > 0 && p.top_p < 1;
    uint64_t cut = 0;
    if (topk) cut = radix_select_cl(cl, key, w, v0, v1, 0, 0, (uint64_t)p.top_k, hist, tot, bcast);
    if (nucleus) {
        uint64_t t = 0;
#pragma unroll
        for (int e = 0; e < EPT; e++)
            if (v0 + (int)threadIdx.x + e * SB < v1 && key[e] >= cut) t += w[e];
        t = cl_combine(cl, block_sum(t, red), &slot, 1);
        cut = radix_select_cl(cl, key, w, v0, v1, cut, 1, gdn2_sample_target(p.top_p, t), hist, tot, bcast);
    } else if (topk) {
        cut &= 0xFFFFFFFF00000000ull;
    }
    uint64_t m = 0;
#pragma unroll
    for (int e = 0; e < EPT; e++)
        if (v0 + (int)threadIdx.x + e * SB < v1 && key[e] >= cut) m += w[e];
    m = block_sum(m, red);
    const uint64_t base = cl_combine(cl, m, &slot, 2), M = cl_combine(cl, m, &slot, 1);
    const uint64_t r = gdn2_sample_point(p.u, M);
    if (!(base <= r && r < base + m)) return; // another block's range holds the draw
    if (threadIdx.x == 0) found = -1;
    uint64_t before_tiles = base;
#pragma unroll
    for (int e = 0; e < EPT; e++) { // tiles of SB ids in ascending order: k_sample's scan from base
        const int v = v0 + (int)threadIdx.x + e * SB;
        const uint64_t tile = draw_tile(v < v1 && key[e] >= cut ? w[e] : 0, v, before_tiles, r, wsum, &found);
        if (found >= 0) break;
        before_tiles += tile;
    }
    if (threadIdx.x == 0) out[row] = found >= 0 ? found : am;
#endif
}

} // namespace

extern "C" int gdn2_cuda_sample_rows(int64_t n, int64_t V, int64_t ld, const float *logits,
                                     const gdn2_sample_row_params *params, int32_t *tokens, void *stream) {
    if (n < 0 || V < 1 || V > INT32_MAX || ld < V || (n > 0 && (!logits || !params || !tokens)))
        return gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_sample_rows: n %lld, V %lld, ld %lld (need V >= 1, ld >= V) or a NULL "
                                        "pointer", (long long)n, (long long)V, (long long)ld);
    if (n == 0) return GDN2_OK;
    if (n > INT32_MAX) return gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_sample_rows: %lld rows", (long long)n);
    // The cluster kernel where the row fits its registers, the device launches clusters (sm_90+) and the
    // clusters fit one wave (n CL <= the SM count: a block takes an SM's registers). Measured on an H100
    // (gdn2_1.3B's sampled step, top-p 0.95; bench/results/h100-decode/a83144c-sample_ab_*): batch 1
    // 2,350 -> 1,998 us, 16 3,041 -> 2,780; past one wave it lost (64: 3,761 -> 3,813, 256: 7,046 ->
    // 8,275), so there the one-block kernel runs. GDN2_CUDA_SAMPLE_CLUSTER=0: never (same tokens).
    static PerDevice has_clusters, sms; // has_clusters 1 yes, 2 no
    static std::atomic<int> env(INT_MIN);
    const int dev = current_device();
    const int clusters = has_clusters.get(dev, [dev] {
        // the device launches clusters and this build's k_sample_cl has its body (compiled for sm_90+:
        // built for an older CUDA_ARCH, the body is empty and the one-block kernel must run)
        int a = 0;
        cudaFuncAttributes fa;
        return cudaDeviceGetAttribute(&a, cudaDevAttrClusterLaunch, dev) == cudaSuccess && a &&
                       cudaFuncGetAttributes(&fa, k_sample_cl) == cudaSuccess && fa.ptxVersion >= 90
                   ? 1
                   : 2;
    }) == 1;
    const int n_sm = sms.get(dev, [dev] {
        int a = 0;
        return cudaDeviceGetAttribute(&a, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess ? a : 0;
    });
    const int allowed = env_once(env, "GDN2_CUDA_SAMPLE_CLUSTER", [](const char *v) { return v && v[0] == '0' ? 0 : 1; });
    cudaError_t e;
    if (clusters && allowed && V <= (int64_t)CL * SB * EPT && n * CL <= n_sm) {
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3((unsigned)(n * CL));
        cfg.blockDim = dim3(SB);
        cfg.stream = (cudaStream_t)stream;
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeClusterDimension;
        at[0].val.clusterDim.x = CL, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
        cfg.attrs = at;
        cfg.numAttrs = 1;
        e = cudaLaunchKernelEx(&cfg, k_sample_cl, logits, ld, (int)V, params, tokens);
        if (e == cudaSuccess) e = cudaGetLastError();
    } else {
        k_sample<<<(unsigned)n, SB, 0, (cudaStream_t)stream>>>(logits, ld, (int)V, params, tokens);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess)
        return gdn2_error(GDN2_ERR_DEVICE, "gdn2_cuda_sample_rows: kernel launch failed: %s", cudaGetErrorString(e));
    return GDN2_OK;
}
