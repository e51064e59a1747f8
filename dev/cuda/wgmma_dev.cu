// Hopper's warpgroup MMA (wgmma, sm_90a) from CUDA C: the primitive the attention and GDN-2 chunk kernels would need
// to go past mma.sync (bench/results/h100-pair/README.md: flex's Triton attention backward runs at ~330 TFLOP/s where
// our mma.sync kernel reaches ~164). This program settles, before any kernel is built on it:
//   1. the operand layouts: shared tiles in the 128-byte-swizzle canonical form, K-major and (for B) MN-major
//      (tnspB = 1), A from shared memory (SS) and from registers (RS), N = 32 / 64 / 128 / 256, K = 64 and 128. Each
//      case is checked against a float64 product of the same bf16 inputs (relative max error; fp32 accumulation
//      gives ~1e-6). For the MN-major B with two 64-column atoms the descriptor's two offsets are tried both ways
//      and the program says which matches;
//   2. the rate: loops of m64nNk16 on resident tiles (N = 256 / 128 / 64 / 32, SS and RS, 1 or 2 warpgroups a
//      block, 1 to 4 blocks an SM) against a loop of mma.sync m16n8k16 on registers (TFLOP/s, CUDA events).
//
// The layouts are described in wgmma.cuh.
//
// Build and run on the device (no library needed):
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a dev/cuda/wgmma_dev.cu -o /tmp/wgmma_dev && /tmp/wgmma_dev
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "dev_check.h"

typedef __nv_bfloat16 bf16;

#include "wgmma.cuh"

// ---- layout checks ------------------------------------------------------------------------------------------
// K-major swizzled store of rows x K (K a multiple of 64) from global row-major src (row stride K): 64-wide tiles
// one after the other, each rows x 128 B
__device__ void store_kmajor(uint8_t *s, const bf16 *src, int rows, int K) {
    const int cpr = K / 8; // 16-byte chunks a row
    for (int i = threadIdx.x; i < rows * cpr; i += blockDim.x) {
        const int r = i / cpr, c = i % cpr, t = c / 8, cc = c % 8;
        *(uint4 *)(s + t * rows * 128 + r * 128 + ((cc ^ (r & 7)) << 4)) = *(const uint4 *)(src + (size_t)r * K + c * 8);
    }
}
// MN-major swizzled store of B^T given as src [K][N] row-major: atom (k-group kg, column atom na) at
// kg * KSTR + na * NSTR bytes; inside an atom k-row kr (0..7) at 128 kr, its chunk c at c ^ kr
__device__ void store_mnmajor(uint8_t *s, const bf16 *src, int K, int N, int KSTR, int NSTR) {
    const int cpr = N / 8;
    for (int i = threadIdx.x; i < K * cpr; i += blockDim.x) {
        const int k = i / cpr, c = i % cpr, na = c / 8, cc = c % 8, kg = k / 8, kr = k % 8;
        *(uint4 *)(s + kg * KSTR + na * NSTR + kr * 128 + ((cc ^ kr) << 4)) = *(const uint4 *)(src + (size_t)k * N + c * 8);
    }
}
template <int N> __device__ void store_acc(float *D, const float (&d)[N / 2]) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < N / 8; j++) {
        const int r = 16 * w + g, c = 8 * j + 2 * t;
        D[r * N + c] = d[4 * j], D[r * N + c + 1] = d[4 * j + 1];
        D[(r + 8) * N + c] = d[4 * j + 2], D[(r + 8) * N + c + 1] = d[4 * j + 3];
    }
}
__device__ __forceinline__ uint32_t pk(bf16 lo, bf16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | (uint32_t)__bfloat16_as_ushort(hi) << 16;
}

// D[64][N] = A[64][K] B, B given as Bk[N][K] (TB = 0) or Bt[K][N] (TB = 1); A from shared memory (RS = 0) or
// loaded straight into mma.sync A fragments (RS = 1). One warpgroup.
template <int N, int TB, int RS>
__global__ void __launch_bounds__(128) k_check(const bf16 *A, const bf16 *B, float *D, int K, int KSTR, int NSTR,
                                               int lbo, int sbo) {
    extern __shared__ uint8_t smem_raw[];
    uint8_t *s = (uint8_t *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    uint8_t *sA = s, *sB = s + 64 * K * 2;
    store_kmajor(sA, A, 64, K);
    if (TB) store_mnmajor(sB, B, K, N, KSTR, NSTR);
    else store_kmajor(sB, B, N, K);
    fence_async_smem();
    __syncthreads();
    float d[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; i++) d[i] = 0.0f;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int ks = 0; ks < K / 16; ks++) {
        uint64_t db;
        if (TB) db = desc(sB + (ks * 2) * KSTR, lbo, sbo); // the k16 step's first k-group
        else db = desc(sB + (ks / 4) * N * 128 + (ks % 4) * 32, 16, 1024);
        if (RS) {
            const bf16 *a0 = A + (size_t)(16 * w + g) * K + ks * 16 + 2 * t, *a1 = a0 + 8 * K;
            uint32_t a[4] = {pk(a0[0], a0[1]), pk(a1[0], a1[1]), pk(a0[8], a0[9]), pk(a1[8], a1[9])};
            wg_fence(); // A's registers were just written by ordinary instructions
            WG<N>::template rs<TB>(d, a, db, ks > 0);
        } else {
            wg_fence();
            WG<N>::template ss<TB>(d, desc(sA + (ks / 4) * 64 * 128 + (ks % 4) * 32, 16, 1024), db, ks > 0);
        }
    }
    wg_commit();
    wg_wait0();
    store_acc<N>(D, d);
}

struct Case { int N, K, TB, RS, KSTR, NSTR, lbo, sbo; const char *what; };

template <int N, int TB, int RS> static void launch(const Case &c, const bf16 *A, const bf16 *B, float *D) {
    const int smem = 1024 + 64 * c.K * 2 + c.N * c.K * 2 + 4096;
    CK(cudaFuncSetAttribute(k_check<N, TB, RS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    k_check<N, TB, RS><<<1, 128, smem>>>(A, B, D, c.K, c.KSTR, c.NSTR, c.lbo, c.sbo);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
}
static void run_case(const Case &c, const bf16 *A, const bf16 *B, float *D) {
#define L(n, tb, rs) if (c.N == n && c.TB == tb && c.RS == rs) launch<n, tb, rs>(c, A, B, D)
    L(64, 0, 0); L(64, 0, 1); L(64, 1, 0); L(64, 1, 1);
    L(128, 0, 0); L(128, 0, 1); L(128, 1, 0); L(128, 1, 1);
    L(256, 0, 0); L(256, 1, 0); L(32, 0, 0); L(32, 1, 0); L(32, 0, 1); L(32, 1, 1);
#undef L
}

static float bf2f(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }

static int check_layouts(void) {
    const int KM = 128, NM = 256;
    uint16_t *hA = (uint16_t *)malloc(64 * KM * 2), *hB = (uint16_t *)malloc(NM * KM * 2), *hBt = (uint16_t *)malloc(NM * KM * 2);
    float *hD = (float *)malloc(64 * NM * 4);
    bf16 *A, *B, *Bt;
    float *D;
    CK(cudaMalloc(&A, 64 * KM * 2)); CK(cudaMalloc(&B, NM * KM * 2)); CK(cudaMalloc(&Bt, NM * KM * 2)); CK(cudaMalloc(&D, 64 * NM * 4));
    const Case cases[] = {
        {64, 64, 0, 0, 0, 0, 16, 1024, "SS K-major"}, {128, 64, 0, 0, 0, 0, 16, 1024, "SS K-major"},
        {256, 128, 0, 0, 0, 0, 16, 1024, "SS K-major"}, {64, 128, 0, 1, 0, 0, 16, 1024, "RS K-major"},
        {128, 128, 0, 1, 0, 0, 16, 1024, "RS K-major"},
        // MN-major B: one column atom (the offset along N unused): k-groups 1024 B apart, given as SBO and LBO
        {64, 64, 1, 0, 1024, 0, 1024, 1024, "SS MN-major, N = one atom"},
        {64, 64, 1, 1, 1024, 0, 1024, 1024, "RS MN-major, N = one atom"},
        // two (four) column atoms: k-groups 1024 B apart, column atoms 2048 B apart (tiles of K = 16 x N = 64
        // interleaved) -- which descriptor field is which is the question
        {128, 64, 1, 0, 1024, 8192, 8192, 1024, "SS MN-major, LBO = column-atom stride, SBO = k-group stride"},
        {128, 64, 1, 0, 1024, 8192, 1024, 8192, "SS MN-major, LBO = k-group stride, SBO = column-atom stride"},
        {128, 64, 1, 1, 1024, 8192, 8192, 1024, "RS MN-major, LBO = column-atom stride, SBO = k-group stride"},
        {128, 64, 1, 1, 1024, 8192, 1024, 8192, "RS MN-major, LBO = k-group stride, SBO = column-atom stride"},
        {256, 64, 1, 0, 1024, 8192, 8192, 1024, "SS MN-major N 256, LBO = column-atom stride, SBO = k-group stride"},
        {256, 64, 1, 0, 1024, 8192, 1024, 8192, "SS MN-major N 256, LBO = k-group stride, SBO = column-atom stride"},
        // N = 32 (the attention backward's query tiles at hs 128): K-major, and MN-major with half a column atom
        {32, 128, 0, 0, 0, 0, 16, 1024, "SS K-major"}, {32, 128, 0, 1, 0, 0, 16, 1024, "RS K-major"},
        {32, 64, 1, 0, 1024, 0, 1024, 1024, "SS MN-major, N = half an atom"},
    };
    int bad = 0;
    for (const Case &c : cases) {
        for (int i = 0; i < 64 * c.K; i++) hA[i] = dev_f2bf(dev_frand());
        for (int i = 0; i < c.N * c.K; i++) hB[i] = dev_f2bf(dev_frand()); // hB[n][k]
        for (int k = 0; k < c.K; k++)
            for (int n = 0; n < c.N; n++) hBt[k * c.N + n] = hB[n * c.K + k];
        CK(cudaMemcpy(A, hA, 64 * c.K * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(B, hB, c.N * c.K * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(Bt, hBt, c.N * c.K * 2, cudaMemcpyHostToDevice));
        CK(cudaMemset(D, 0xff, 64 * c.N * 4)); // NaN: a row never written shows
        // the MN-major smem: k-group stride KSTR, column-atom stride NSTR; the case's tile must fit 8 KB-strided
        run_case(c, A, c.TB ? Bt : B, D);
        CK(cudaMemcpy(hD, D, 64 * c.N * 4, cudaMemcpyDeviceToHost));
        double emax = 0, rmax = 0;
        for (int m = 0; m < 64; m++)
            for (int n = 0; n < c.N; n++) {
                double r = 0;
                for (int k = 0; k < c.K; k++) r += (double)bf2f(hA[m * c.K + k]) * bf2f(hB[n * c.K + k]);
                const double e = fabs(hD[m * c.N + n] - r);
                if (!(e <= emax)) emax = isnan(e) ? INFINITY : e;
                if (fabs(r) > rmax) rmax = fabs(r);
            }
        const double rel = emax / rmax;
        const int ok = rel < 1e-5;
        bad += !ok;
        printf("%-4s N=%3d K=%3d %-70s max rel err %.2e\n", ok ? "OK" : "BAD", c.N, c.K, c.what, rel);
    }
    cudaFree(A); cudaFree(B); cudaFree(Bt); cudaFree(D);
    free(hA); free(hB); free(hBt); free(hD);
    return bad;
}

// ---- rates ------------------------------------------------------------------------------------------------------
// WGS warpgroups a block, each rep x 16 m64nNk16 on the same resident tiles (A 64 x 64, B 256 x 64: 40 KB; RS: A
// from registers, as the attention backward's P^T and dS^T would be), 16 k-steps a commit, the accumulators summed
// once at the end (so the loop is not removed)
template <int N, int RS, int WGS>
__global__ void __launch_bounds__(128 * WGS) k_rate_wgmma(float *out, int rep) {
    extern __shared__ uint8_t smem_raw[];
    uint8_t *s = (uint8_t *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    for (int i = threadIdx.x; i < (64 + 256) * 128 / 16; i += blockDim.x) ((uint4 *)s)[i] = make_uint4(i, i * 3, i * 7, 1);
    fence_async_smem();
    __syncthreads();
    float d[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; i++) d[i] = 0.0f;
    const uint32_t a[4] = {threadIdx.x * 3u, threadIdx.x * 5u, threadIdx.x * 7u, threadIdx.x * 11u};
    const uint8_t *sA = s, *sB = s + 64 * 128;
    for (int r = 0; r < rep; r++) {
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 16; ks++) {
            if (RS) WG<N>::template rs<0>(d, a, desc(sB + (ks & 3) * 32, 16, 1024), 1);
            else WG<N>::template ss<0>(d, desc(sA + (ks & 3) * 32, 16, 1024), desc(sB + (ks & 3) * 32, 16, 1024), 1);
        }
        wg_commit();
        wg_wait0();
    }
    float acc = 0;
#pragma unroll
    for (int i = 0; i < N / 2; i++) acc += d[i];
    if (acc == 1234.5f) out[blockIdx.x] = acc;
}
// mma.sync m16n8k16 on registers: 4 warps, each 8 independent accumulator blocks, REP x 8 products
__global__ void __launch_bounds__(128) k_rate_mma(float *out, int rep) {
    float c[8][4] = {};
    uint32_t a0 = threadIdx.x, a1 = a0 * 3, a2 = a0 * 5, a3 = a0 * 7, b0 = a0 * 11, b1 = a0 * 13;
    for (int r = 0; r < rep; r++) {
#pragma unroll
        for (int j = 0; j < 8; j++)
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                         : "+f"(c[j][0]), "+f"(c[j][1]), "+f"(c[j][2]), "+f"(c[j][3])
                         : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    float acc = 0;
    for (int j = 0; j < 8; j++) acc += c[j][0] + c[j][1] + c[j][2] + c[j][3];
    if (acc == 1234.5f) out[blockIdx.x] = acc;
}

template <int N, int RS, int WGS>
static void rate_wgmma(int sms, int per_sm, float *out, cudaEvent_t e0, cudaEvent_t e1) {
    const int smem = 1024 + (64 + 256) * 128, rep = 300, blocks = sms * per_sm;
    CK(cudaFuncSetAttribute(k_rate_wgmma<N, RS, WGS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    float ms = 0;
    for (int it = 0; it < 2; it++) { // the first is a warm-up
        CK(cudaEventRecord(e0));
        k_rate_wgmma<N, RS, WGS><<<blocks, 128 * WGS, smem>>>(out, rep);
        CK(cudaGetLastError());
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
    }
    const double flop = 2.0 * 64 * N * 16 * 16 * (double)rep * blocks * WGS;
    printf("rate: wgmma m64n%dk16 %s, %d warpgroup(s) a block, %d block(s) an SM %*s %7.1f TFLOP/s (%.2f ms)\n", N,
           RS ? "RS" : "SS", WGS, per_sm, N < 100 ? 1 : 0, "", flop / (ms * 1e-3) / 1e12, ms);
}

static void rates(void) {
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    float *out;
    CK(cudaMalloc(&out, 8192 * 4));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    rate_wgmma<256, 0, 1>(sms, 1, out, e0, e1);
    rate_wgmma<256, 0, 1>(sms, 2, out, e0, e1);
    rate_wgmma<256, 0, 2>(sms, 1, out, e0, e1);
    rate_wgmma<128, 0, 1>(sms, 2, out, e0, e1);
    rate_wgmma<128, 1, 1>(sms, 2, out, e0, e1);
    rate_wgmma<128, 1, 1>(sms, 4, out, e0, e1);
    rate_wgmma<64, 0, 1>(sms, 4, out, e0, e1);
    rate_wgmma<32, 0, 1>(sms, 4, out, e0, e1);
    rate_wgmma<32, 1, 1>(sms, 4, out, e0, e1);
    const int rep = 300, blocks = sms * 8;
    float ms = 0;
    for (int it = 0; it < 2; it++) {
        CK(cudaEventRecord(e0));
        k_rate_mma<<<blocks, 128>>>(out, rep * 4);
        CK(cudaGetLastError());
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
    }
    const double flop = 2.0 * 16 * 8 * 16 * 8 * 4 * (rep * 4.0) * blocks;
    printf("rate: mma.sync m16n8k16, 4 warps a block, 8 blocks an SM (registers only)  %7.1f TFLOP/s (%.2f ms)\n",
           flop / (ms * 1e-3) / 1e12, ms);
    cudaFree(out);
}

int main(void) {
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("device: %s, %d SMs, sm_%d%d\n", p.name, p.multiProcessorCount, p.major, p.minor);
    const int bad = check_layouts();
    rates();
    printf("%d layout case(s) wrong\n", bad);
    return bad ? 1 : 0;
}
