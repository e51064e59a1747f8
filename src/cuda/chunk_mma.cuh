// Block matrix products of the chunk kernels (256 threads): the fp32 SIMT product mm, its
// tensor-core twins mm_tc2 / mm_tc, the split-bf16 fp32-operand mma step, and the A-operand
// products of the solved 64 x 64 array (a64_frags, mm_a64). Built on the primitives of tc.cuh.
#ifndef GDN2_CUDA_CHUNK_MMA_CUH
#define GDN2_CUDA_CHUNK_MMA_CUH

#include "chunk_params.cuh"
#include "tc.cuh"

// Block matrix product, 256 threads: out(m,n) = sum_{kk<kd} fa(m,kk) fb(kk,n) for m<M, n<N; each
// thread owns a TM x TN micro tile (rows ty + i*M/TM, columns tx + j*N/TN) handed to fe(m,n,acc).
template <int M, int N, int TM, int TN, class FA, class FB, class FE>
__device__ __forceinline__ void mm(int kd, FA fa, FB fb, FE fe) {
    constexpr int SY = M / TM, SX = N / TN;
    static_assert(SY * SX == NT, "micro tile does not cover the block");
    const int ty = threadIdx.x / SX, tx = threadIdx.x % SX;
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.0f;
#pragma unroll 2
    for (int kk = 0; kk < kd; kk++) {
        float a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; i++) a[i] = fa(ty + i * SY, kk);
#pragma unroll
        for (int j = 0; j < TN; j++) b[j] = fb(kk, tx + j * SX);
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
            for (int j = 0; j < TN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) fe(ty + i * SY, tx + j * SX, acc[i][j]);
}

// Tensor-core twin of mm (bf16 path): mma.sync m16n8k16, bf16 operands rounded from the fp32
// values that fa/fb return, fp32 accumulation. kd % 16 == 0. Warp w owns a 16-row strip and NJ
// 16x8 fragments of it, so one A fragment serves NJ mma per k step. The epilogue takes pairs,
// fe2(m, n, acc_n, acc_n+1) (n even), for 8-byte stores; mm_tc hands out single elements.
template <int M, int N, class FA, class FB, class FE2>
__device__ __forceinline__ void mm_tc2(int kd, FA fa, FB fb, FE2 fe2) {
    constexpr int RT = M / 16, CT = N / 8, WR = 8 / RT, NJ = CT / WR;
    static_assert(RT * WR == 8 && NJ * WR == CT && NJ >= 1, "tensor-core tiling");
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;
    const int r0 = (wp / WR) * 16, cb = (wp % WR) * NJ * 8;
    float acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    for (int k0 = 0; k0 < kd; k0 += 16) {
        const int ka = k0 + 2 * tq;
        uint32_t a0 = pack_bf16(fa(r0 + gq, ka), fa(r0 + gq, ka + 1));
        uint32_t a1 = pack_bf16(fa(r0 + gq + 8, ka), fa(r0 + gq + 8, ka + 1));
        uint32_t a2 = pack_bf16(fa(r0 + gq, ka + 8), fa(r0 + gq, ka + 9));
        uint32_t a3 = pack_bf16(fa(r0 + gq + 8, ka + 8), fa(r0 + gq + 8, ka + 9));
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            const int n = cb + j * 8 + gq;
            mma_bf16(acc[j], a0, a1, a2, a3, pack_bf16(fb(ka, n), fb(ka + 1, n)), pack_bf16(fb(ka + 8, n), fb(ka + 9, n)));
        }
    }
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        const int n0 = cb + j * 8 + 2 * tq;
        fe2(r0 + gq, n0, acc[j][0], acc[j][1]);
        fe2(r0 + gq + 8, n0, acc[j][2], acc[j][3]);
    }
}
template <int M, int N, class FA, class FB, class FE>
__device__ __forceinline__ void mm_tc(int kd, FA fa, FB fb, FE fe) {
    mm_tc2<M, N>(kd, fa, fb, [&](int m, int n, float a0, float a1) {
        fe(m, n, a0);
        fe(m, n + 1, a1);
    });
}
// TC: tensor cores (bf16 inputs) or the exact fp32 SIMT product (fp32 inputs, the test path)
template <bool TC, int M, int N, int TM, int TN, class FA, class FB, class FE>
__device__ __forceinline__ void mmx(int kd, FA fa, FB fb, FE fe) {
    if constexpr (TC) mm_tc<M, N>(kd, fa, fb, fe);
    else mm<M, N, TM, TN>(kd, fa, fb, fe);
}

// c += A B, one m16n8k16 step with fp32 operands in shared arrays of row stride 65, each split into
// bf16 hi + lo (mma_split3). a = &A[gq][2tq] (the fragment's rows gq, gq+8, columns 2tq, 2tq+1, +8,
// +9), b = &B[2tq][gq] (rows 2tq, 2tq+1, +8, +9 of column gq).
__device__ __forceinline__ void mma_split3_s65(float (&c)[4], const float *a, const float *b) {
    uint32_t ah[4], al[4], bh0, bl0, bh1, bl1;
    split_bf16(a[0], a[1], ah[0], al[0]);
    split_bf16(a[8 * 65], a[8 * 65 + 1], ah[1], al[1]);
    split_bf16(a[8], a[9], ah[2], al[2]);
    split_bf16(a[8 * 65 + 8], a[8 * 65 + 9], ah[3], al[3]);
    split_bf16(b[0], b[65], bh0, bl0);
    split_bf16(b[8 * 65], b[9 * 65], bh1, bl1);
    mma_split3(c, ah, al, bh0, bh1, bl0, bl1);
}

// C (64 x N) = A B with A = the solved 64 x 64 fp32 array sTA (stride 65), B bf16 in shared rows
// (16-byte aligned, stride ldb): warp w owns rows 16 (w/2) .. +16 and columns (w%2) N/2 .. +N/2.
// The A fragments (rounded to bf16, as mm_tc2 rounds them) are loaded once by a64_frags and serve
// every product with A; B arrives by ldmatrix.trans, two 8-column blocks per instruction.
__device__ __forceinline__ void a64_frags(const float *sTA, uint32_t (&af)[4][4]) {
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3, r0 = (wp >> 1) * 16;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        const int ka = 16 * kk + 2 * tq;
        af[kk][0] = pack_bf16(sTA[(r0 + gq) * 65 + ka], sTA[(r0 + gq) * 65 + ka + 1]);
        af[kk][1] = pack_bf16(sTA[(r0 + gq + 8) * 65 + ka], sTA[(r0 + gq + 8) * 65 + ka + 1]);
        af[kk][2] = pack_bf16(sTA[(r0 + gq) * 65 + ka + 8], sTA[(r0 + gq) * 65 + ka + 9]);
        af[kk][3] = pack_bf16(sTA[(r0 + gq + 8) * 65 + ka + 8], sTA[(r0 + gq + 8) * 65 + ka + 9]);
    }
}
template <int N, class FE2>
__device__ __forceinline__ void mm_a64(const uint32_t (&af)[4][4], const bf16 *b, int ldb, FE2 fe2) {
    constexpr int NJ = N / 16; // 8-column blocks per warp
    static_assert(NJ % 2 == 0, "column blocks in pairs");
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3, l8 = lane & 7, mi = lane >> 3;
    const int r0 = (wp >> 1) * 16, cb = (wp & 1) * (N / 2);
    float acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int j = 0; j < NJ; j += 2) {
            uint32_t bf[4];
            ldsm_x4_t(bf, b + (16 * kk + l8 + (mi & 1) * 8) * ldb + cb + 8 * j + (mi >> 1) * 8);
            mma_bf16(acc[j], af[kk][0], af[kk][1], af[kk][2], af[kk][3], bf[0], bf[1]);
            mma_bf16(acc[j + 1], af[kk][0], af[kk][1], af[kk][2], af[kk][3], bf[2], bf[3]);
        }
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        fe2(r0 + gq, cb + 8 * j + 2 * tq, acc[j][0], acc[j][1]);
        fe2(r0 + gq + 8, cb + 8 * j + 2 * tq, acc[j][2], acc[j][3]);
    }
}

#endif
