// Is the decode step's one-row product bound by how it reads its weights? (issue 13)
//
// The library's k_gemv_bf16 (src/cuda/gemv.cuh) reads W as 16-byte loads, lane l of a warp the groups l, l + 32, ...
// of two rows, four loads in flight a lane: each round of a warp touches two 512-byte pieces of rows 4.6-12.4 KB
// apart. Nsight saw the 2304-row products at 1.3 TB/s cold and the larger ones at 2.1-2.3 (bench/results/
// h100-decode-prof/README.md), and neither more loads in flight nor other block shapes changed the step
// (dev/cuda/candidates/README.md). Here the other way to read them: a block of R rows (R contiguous rows of a
// row-major W are one contiguous run of R * in * 2 bytes) asks for its whole tile with one bulk copy
// (cp.async.bulk, Hopper's TMA engine, completing on an mbarrier), issued first thing, then one warp a row
// sums it from shared memory, lane l the groups l, l + 32, ... in the library's order (gemv_dot8, then the same
// butterfly): the same bits as k_gemv_bf16.
//
// For each weight shape of gdn2_1.3B's batch-1 step (rows x in; the multi-product and SwiGLU shapes as plain rows)
// it checks the bulk kernel's output against the library kernel's bit for bit, then times both: 20 launches back
// to back between two events, the weight cycling through copies in a 2 GiB pool so that it comes from DRAM, the
// median of 7 such groups, per launch; GB/s counts the weight bytes. R = 1, 2, 4, 8, 16 (one warp a row), where the
// tile fits 100 KB. Neither launch is a programmatic dependent here (the step's launches are).
//
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Iinclude -Isrc dev/cuda/gemv_bulk_dev.cu \
//        -o /tmp/gemv_bulk_dev && /tmp/gemv_bulk_dev
// Written without a device (nineteenth session); not run yet.
#include "../../src/cuda/gemv.cuh"

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <vector>

#include "dev_check.h"

typedef __nv_bfloat16 bf16;

namespace {

const size_t POOL = (size_t)2 << 30;

__device__ __forceinline__ uint32_t sa(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint64_t *b, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(b)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t *b, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sa(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *b, uint32_t parity) {
    uint32_t done = 0;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(sa(b)), "r"(parity)
                     : "memory");
    } while (!done);
}
// bytes (a multiple of 16, both addresses 16-byte aligned) from global src to shared dst, completing on bar
__device__ __forceinline__ void bulk_copy(void *dst, const void *src, uint32_t bytes, uint64_t *bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(sa(dst)),
                 "l"(src), "r"(bytes), "r"(sa(bar))
                 : "memory");
}

// Y[j] = X . W[j, :] for the R rows of block blockIdx.x (fp32 Y), one warp a row; dynamic shared memory: the tile
// (R * in bf16) then X (in bf16)
template <int R>
__global__ void __launch_bounds__(32 * R) k_gemv_bulk(int64_t in, int64_t out, const bf16 *X, const bf16 *W, float *Y) {
    extern __shared__ __align__(128) unsigned char smem[];
    __shared__ __align__(8) uint64_t bar;
    const int64_t j0 = (int64_t)blockIdx.x * R;
    const int rows = (int)(out - j0 < R ? out - j0 : R);
    const int64_t g = in >> 3; // 16-byte groups a row
    uint4 *tile = (uint4 *)smem, *xs = tile + (size_t)R * g;
    if (threadIdx.x == 0) {
        mbar_init(&bar, 1);
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // the init, seen by the copy engine
        mbar_expect_tx(&bar, (uint32_t)(rows * in * 2));
        bulk_copy(tile, W + j0 * in, (uint32_t)(rows * in * 2), &bar); // the rows are contiguous
    }
    const uint4 *xg = (const uint4 *)X; // X into shared memory meanwhile
    for (int64_t c = threadIdx.x; c < g; c += blockDim.x) xs[c] = __ldg(xg + c);
    __syncthreads(); // the barrier's init and X, seen by every thread
    mbar_wait(&bar, 0);
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (w >= rows) return;
    const uint4 *wr = tile + (size_t)w * g;
    float acc = 0.0f;
    for (int64_t c = lane; c < g; c += 32) acc = gemv_dot8(wr[c], xs[c], acc); // k_gemv_bf16's order
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) Y[j0 + w] = gemv_value(0.0f, 0, 0.0f, acc); // the library's store (-0 included)
}

void *g_pool, *g_x, *g_y, *g_y2;
cudaStream_t g_st;
cudaEvent_t g_e0, g_e1;

size_t bulk_smem(int R, int64_t in) { return (size_t)R * in * 2 + (size_t)in * 2; }

cudaError_t launch_bulk(int R, int64_t in, int64_t out, const void *W, void *Y) {
    const unsigned grid = (unsigned)((out + R - 1) / R);
    const size_t sm = bulk_smem(R, in);
    const bf16 *x = (const bf16 *)g_x, *w = (const bf16 *)W;
    float *y = (float *)Y;
#define GO(r)                                                                                  \
    case r: k_gemv_bulk<r><<<grid, 32 * r, sm, g_st>>>(in, out, x, w, y); break;
    switch (R) {
        GO(1) GO(2) GO(4) GO(8) GO(16)
    default: return cudaErrorInvalidValue;
    }
#undef GO
    return cudaGetLastError();
}
cudaError_t launch_lib(int64_t in, int64_t out, const void *W, void *Y) {
    return gemv_launch(1, in, out, g_x, W, 0, NULL, Y, 0, 0, 0, NULL, 1, 0, g_st);
}

// median over 7 groups of the per-launch time of 20 back-to-back launches (us), weights from DRAM
template <typename F> float time_us(F launch, size_t wbytes) {
    const int copies = (int)(POOL / wbytes); // all of the pool: the smallest weight stays out of the 50 MB L2 too
    float t[7];
    int r = 0;
    for (int gi = -1; gi < 7; gi++) { // group -1: warm-up
        CK(cudaEventRecord(g_e0, g_st));
        for (int i = 0; i < 20; i++, r++) CK(launch((const char *)g_pool + (size_t)(r % copies) * wbytes));
        CK(cudaEventRecord(g_e1, g_st));
        CK(cudaEventSynchronize(g_e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, g_e0, g_e1));
        if (gi >= 0) t[gi] = ms * 1e3f / 20.0f;
    }
    std::sort(t, t + 7);
    return t[3];
}

__global__ void k_fill(bf16 *x, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        x[i] = __float2bfloat16_rn(0.05f * ((float)(h >> 8) * (1.0f / 8388608.0f) - 1.0f));
    }
}

} // namespace

int main() {
    setvbuf(stdout, NULL, _IOLBF, 0);
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device %s, %d SMs, %zu KB shared a block at most\n", prop.name, prop.multiProcessorCount,
           prop.sharedMemPerBlockOptin / 1024);
    if (prop.major < 9) { printf("needs sm_90 (cp.async.bulk)\n"); return 1; }
    CK(cudaMalloc(&g_pool, POOL));
    k_fill<<<4096, 256>>>((bf16 *)g_pool, POOL / 2, 1u);
    CK(cudaGetLastError());
    CK(cudaMalloc(&g_x, 16384 * 2));
    k_fill<<<64, 256>>>((bf16 *)g_x, 16384, 7u);
    CK(cudaMalloc(&g_y, 65536 * 4));
    CK(cudaMalloc(&g_y2, 65536 * 4));
    CK(cudaStreamCreate(&g_st));
    const int maxsm = 100 * 1024; // the tiles tried (launch_bulk's callers keep to it)
    CK(cudaFuncSetAttribute(k_gemv_bulk<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, maxsm));
    CK(cudaFuncSetAttribute(k_gemv_bulk<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, maxsm));
    CK(cudaFuncSetAttribute(k_gemv_bulk<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, maxsm));
    CK(cudaFuncSetAttribute(k_gemv_bulk<8>, cudaFuncAttributeMaxDynamicSharedMemorySize, maxsm));
    CK(cudaFuncSetAttribute(k_gemv_bulk<16>, cudaFuncAttributeMaxDynamicSharedMemorySize, maxsm));
    CK(cudaEventCreate(&g_e0));
    CK(cudaEventCreate(&g_e1));
    // copy bandwidth, read + write counted
    const size_t cb = (size_t)1 << 30;
    const float cus = time_us([&](const void *) { return cudaMemcpyAsync((char *)g_pool + cb, g_pool, cb, cudaMemcpyDeviceToDevice, g_st); }, POOL);
    printf("copy %.0f GB/s (read + write)\n", 2.0 * cb / (cus * 1e3));
    struct Shape { const char *what; int64_t out, in; int per_layer; };
    const Shape shapes[] = {{"o_proj (2048 -> 2304)", 2304, 2048, 1},     {"w2 (6208 -> 2304)", 2304, 6208, 1},
                            {"w1|w3 as 12416 rows", 12416, 2304, 1},      {"multi as 10496 rows", 10496, 2304, 1},
                            {"low rank (128 -> 2048)", 2048, 128, 2},     {"lm_head (2304 -> 32000)", 32000, 2304, 0}};
    double lib_layer = 0, best_layer = 0;
    for (const Shape &s : shapes) {
        const size_t wbytes = (size_t)s.out * s.in * 2;
        CK(launch_lib(s.in, s.out, g_pool, g_y));
        std::vector<float> ref(s.out), got(s.out);
        CK(cudaStreamSynchronize(g_st));
        CK(cudaMemcpy(ref.data(), g_y, s.out * 4, cudaMemcpyDeviceToHost));
        const float tl = time_us([&](const void *W) { return launch_lib(s.in, s.out, W, g_y); }, wbytes);
        printf("%-26s %6lld x %5lld  library %8.2f us (%5.0f GB/s)\n", s.what, (long long)s.out, (long long)s.in, tl,
               wbytes / (tl * 1e3));
        float best = 1e30f;
        for (int R : {1, 2, 4, 8, 16}) {
            if (bulk_smem(R, s.in) > std::min<size_t>(100 * 1024, prop.sharedMemPerBlockOptin)) continue;
            CK(cudaMemset(g_y2, 0xff, s.out * 4));
            CK(launch_bulk(R, s.in, s.out, g_pool, g_y2));
            CK(cudaStreamSynchronize(g_st));
            CK(cudaMemcpy(got.data(), g_y2, s.out * 4, cudaMemcpyDeviceToHost));
            int64_t bad = 0, first = -1;
            for (int64_t j = 0; j < s.out; j++)
                if (memcmp(&ref[j], &got[j], 4)) bad++, first = first < 0 ? j : first;
            if (bad) {
                printf("    bulk R=%-2d WRONG: %lld of %lld outputs differ from the library's (first, row %lld: %.8g vs %.8g)\n",
                       R, (long long)bad, (long long)s.out, (long long)first, got[first], ref[first]);
                continue;
            }
            const float tb = time_us([&](const void *W) { return launch_bulk(R, s.in, s.out, W, g_y2); }, wbytes);
            printf("    bulk R=%-2d %8.2f us (%5.0f GB/s), same bits\n", R, tb, wbytes / (tb * 1e3));
            best = std::min(best, tb);
        }
        lib_layer += s.per_layer * tl;
        best_layer += s.per_layer * std::min(best, tl); // the library's where no bulk R passed or won
    }
    printf("a layer's products (as above): library %.1f us, with the best bulk R where it wins %.1f us\n", lib_layer,
           best_layer);
    return 0;
}
