// The attention backward on Hopper's warpgroup MMA (issue 16: bench/results/h100-pair/README.md, our backward
// 23.8 ms against flex's 11.9 in the swa_gdn2_1.3B step). The library's two kernels (src/cuda/attn.cu, included
// here) keep their blocks and their math; only the products change:
//   dk/dv block = 64 keys, 4 warps = one warpgroup, warp w owns keys 16w..16w+15: that is wgmma's m64 layout, so
//     S^T = K Q^T and dP^T = V dO^T are m64n{BQ}k16 with both operands in shared memory (SS), and
//     dV += P^T dO, dK += dS^T Q are m64n{HS}k16 with P^T / dS^T from the registers they are computed in (RS) and
//     dO / Q read MN-major from the same shared tiles (tnspB);
//   dq block = 64 queries: S = Q K^T, dP = dO V^T (SS, N = 64 keys), dQ += dS K (RS, K MN-major).
// The shared tiles are stored in the 128-byte-swizzle form (wgmma.cuh) by the same 16-byte cp.async copies.
// Masks, exponentials, the fixed order of the query heads and tiles, and the stores are the library's.
//
// The forward likewise (wg_fwd_kernel: the block's 128 queries as two m64 halves; S = Q K^T SS, O += P V RS with V
// MN-major), checked against the library's forward (o, lse).
// Checked against the library's backward on the same inputs (relative RMSE and max error of dq, dk, dv: the two
// sum in different orders, so not bit for bit), at the hybrid's shape and at small ragged / GQA / windowed ones;
// then both are timed (CUDA events, median of 9 after 2) at the swa_gdn2_1.3B and swa_gdn2_100M training shapes.
//
// On the device, after `make` (the library for gdn2_error):
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Iinclude -Isrc [-DWG_MN_LBO_IS_NSTR=0]
//        dev/cuda/attn_wg_dev.cu build/libgdn2.a -lcublasLt -lcublas -lnccl -lgomp -o /tmp/attn_wg_dev
#include "../../src/cuda/attn.cu"

#include "dev_check.h"
#include "wgmma.cuh"

#include <algorithm>
#include <vector>

namespace {

__device__ __forceinline__ uint8_t *align1024(unsigned char *p) {
    return (uint8_t *)(((uintptr_t)p + 1023) & ~(uintptr_t)1023);
}
// ROWS x HS bf16 tile (row stride gld elements in global) -> K-major 128B-swizzled atoms: columns 64a..64a+63 at
// a ROWS 128 bytes. Rows >= nrows are zero-filled. 16-byte cp.async pieces, NTH threads.
template <int ROWS, int HS>
__device__ __forceinline__ void cp_tile_sw(uint8_t *dst, const bf16 *src, size_t gld, int nrows) {
    constexpr int PR = HS / 8;
    static_assert((ROWS * PR) % NTH == 0 && NTH % PR == 0, "whole pieces per thread");
    const int r0 = (int)threadIdx.x / PR, c = (int)threadIdx.x % PR;
#pragma unroll
    for (int j = 0; j < ROWS * PR / NTH; j++) {
        const int r = r0 + j * (NTH / PR);
        const bool ok = r < nrows;
        cp_async16(dst + (c >> 3) * ROWS * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4),
                   src + (ok ? (size_t)r * gld + c * 8 : 0), ok ? 16 : 0);
    }
}
// accumulator blocks 2kk, 2kk+1 of a flat wgmma accumulator -> the RS A fragment of k step kk
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float *c, int kk) {
    const float *c0 = c + 8 * kk, *c1 = c0 + 4;
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

// dk, dv of 64 keys of one (b, group): grid (B*ng, ceil(T/BN)), as attn_bwd_dkdv_kernel
template <int HS, int BQ>
__global__ void __launch_bounds__(NTH) wg_dkdv_kernel(const AttnParams p) {
    constexpr int NB = BQ / 8, OJ = HS / 8, KS = HS / 16;
    extern __shared__ unsigned char smem_raw[];
    uint8_t *sK = align1024(smem_raw), *sV = sK + BN * HS * 2, *sQ = sV + BN * HS * 2, *sO = sQ + BQ * HS * 2;
    float *sL = reinterpret_cast<float *>(sO + BQ * HS * 2), *sD = sL + BQ;
    const int T = p.T, W = p.window, nh = p.nh;
    const int bg = blockIdx.x, b = bg / p.ng, g = bg % p.ng;
    const int n0 = blockIdx.y * BN;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;

    cp_tile_sw<BN, HS>(sK, p.k + ((size_t)bg * T + n0) * HS, HS, min(BN, T - n0));
    cp_tile_sw<BN, HS>(sV, p.v + ((size_t)bg * T + n0) * HS, HS, min(BN, T - n0));
    cp_async_commit();

    const int last = W > 0 ? min(T - 1, n0 + BN - 1 + W - 1) : T - 1;
    const int qt_lo = n0 / BQ, qt_hi = last / BQ;
    const int kr0 = n0 + warp * 16 + gq;

    float dk[OJ * 4], dv[OJ * 4];
#pragma unroll
    for (int j = 0; j < OJ * 4; j++) dk[j] = dv[j] = 0.0f;

    for (int jh = 0; jh < p.qpk; jh++) {
        const int h = g * p.qpk + jh;
        const bf16 *qg = p.q + (size_t)(b * nh + h) * T * HS;
        const bf16 *og = p.dO + (size_t)b * T * nh * HS + (size_t)h * HS;
        const float *lg = p.lse_in + (size_t)(b * nh + h) * T, *Dg = p.D + (size_t)(b * nh + h) * T;
        for (int qt = qt_lo; qt <= qt_hi; qt++) {
            const int t0 = qt * BQ;
            __syncthreads(); // the previous tile's readers (wgmma included: waited below) are done
            cp_tile_sw<BQ, HS>(sQ, qg + (size_t)t0 * HS, HS, min(BQ, T - t0));
            cp_tile_sw<BQ, HS>(sO, og + (size_t)t0 * nh * HS, (size_t)nh * HS, min(BQ, T - t0));
            cp_async_commit();
            if (threadIdx.x < BQ) {
                const int t = t0 + threadIdx.x;
                sL[threadIdx.x] = t < T ? lg[t] * GDN2_LOG2E : INFINITY;
                sD[threadIdx.x] = t < T ? Dg[t] : 0.0f;
            }
            cp_async_wait<0>();
            fence_async_smem(); // the copies, seen by the wgmma (async) proxy
            __syncthreads();
            // S^T = K Q^T, dP^T = V dO^T: m64 n{BQ}, K = HS in k16 steps, both operands K-major
            float st[NB * 4], dp[NB * 4];
#pragma unroll
            for (int j = 0; j < NB * 4; j++) st[j] = dp[j] = 0.0f;
            wg_hold(st), wg_hold(dp);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                const int ao = (kk >> 2) * BN * 128 + (kk & 3) * 32, bo = (kk >> 2) * BQ * 128 + (kk & 3) * 32;
                WG<BQ>::template ss<0>(st, desc(sK + ao, 16, 1024), desc(sQ + bo, 16, 1024), kk > 0);
                WG<BQ>::template ss<0>(dp, desc(sV + ao, 16, 1024), desc(sO + bo, 16, 1024), kk > 0);
            }
            wg_commit();
            wg_wait0();
            wg_hold(st), wg_hold(dp);
            if (tile_masked(t0, t0 + BQ - 1, n0 + warp * 16, n0 + warp * 16 + 15, W)) {
#pragma unroll
                for (int j = 0; j < NB; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (!visible(t0 + 8 * j + 2 * tq + (e & 1), kr0 + (e >> 1) * 8, W)) st[4 * j + e] = -INFINITY;
            }
#pragma unroll
            for (int j = 0; j < NB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int cl = 8 * j + 2 * tq + (e & 1);
                    const float pe = ex2(st[4 * j + e] * p.sl2 - sL[cl]);
                    st[4 * j + e] = pe;
                    dp[4 * j + e] = pe * (dp[4 * j + e] - sD[cl]);
                }
            // dV += P^T dO, dK += dS^T Q: m64 n{HS}, K = BQ queries; B = the [query][hs] tiles read MN-major
            // (k16 step kq: query rows 16kq.., k-groups 1024 B apart, hs column atoms BQ 128 B apart)
            // (P^T, dS^T packed into the A fragments before the fence)
            uint32_t pa[BQ / 16][4], da[BQ / 16][4];
#pragma unroll
            for (int kq = 0; kq < BQ / 16; kq++) acc_to_a(pa[kq], st, kq), acc_to_a(da[kq], dp, kq);
            wg_hold(dv), wg_hold(dk);
            wg_fence();
#pragma unroll
            for (int kq = 0; kq < BQ / 16; kq++) {
                WG<HS>::template rs<1>(dv, pa[kq], desc_mn(sO + kq * 2048, 1024, BQ * 128), 1);
                WG<HS>::template rs<1>(dk, da[kq], desc_mn(sQ + kq * 2048, 1024, BQ * 128), 1);
            }
            wg_commit();
            wg_wait0();
            wg_hold(dv), wg_hold(dk);
        }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = kr0 + 8 * i;
        if (r >= T) continue;
        bf16 *dkr = p.dk + ((size_t)bg * T + r) * HS, *dvr = p.dv + ((size_t)bg * T + r) * HS;
#pragma unroll
        for (int j = 0; j < OJ; j++) {
            *reinterpret_cast<uint32_t *>(dkr + 8 * j + 2 * tq) =
                pack_bf16(dk[4 * j + 2 * i] * p.scale, dk[4 * j + 2 * i + 1] * p.scale);
            *reinterpret_cast<uint32_t *>(dvr + 8 * j + 2 * tq) = pack_bf16(dv[4 * j + 2 * i], dv[4 * j + 2 * i + 1]);
        }
    }
}

// dq of 64 queries of one (b, h): grid (B*nh, ceil(T/BM)), as attn_bwd_dq_kernel (K/V double-buffered)
template <int HS>
__global__ void __launch_bounds__(NTH) wg_dq_kernel(const AttnParams p) {
    constexpr int NB = BN / 8, OJ = HS / 8, KS = HS / 16, TB = BN * HS * 2; // TB: bytes of a K or V tile
    extern __shared__ unsigned char smem_raw[];
    uint8_t *sQ = align1024(smem_raw), *sO = sQ + BM * HS * 2, *sK = sO + BM * HS * 2, *sV = sK + 2 * TB;
    const int T = p.T, W = p.window, nh = p.nh;
    const int bh = blockIdx.x, b = bh / nh, h = bh % nh, g = h / p.qpk;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BM;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const bf16 *kg = p.k + (size_t)(b * p.ng + g) * T * HS;
    const bf16 *vg = p.v + (size_t)(b * p.ng + g) * T * HS;
    const int kt_lo = W > 0 ? max(0, q0 - W + 1) / BN : 0;
    const int kt_hi = min(q0 + BM - 1, T - 1) / BN;

    cp_tile_sw<BM, HS>(sQ, p.q + ((size_t)bh * T + q0) * HS, HS, min(BM, T - q0));
    cp_tile_sw<BM, HS>(sO, p.dO + ((size_t)b * T + q0) * nh * HS + (size_t)h * HS, (size_t)nh * HS, min(BM, T - q0));
    cp_tile_sw<BN, HS>(sK, kg + (size_t)kt_lo * BN * HS, HS, min(BN, T - kt_lo * BN));
    cp_tile_sw<BN, HS>(sV, vg + (size_t)kt_lo * BN * HS, HS, min(BN, T - kt_lo * BN));
    cp_async_commit();

    const int r0 = q0 + warp * 16 + gq;
    float Lr[2], Dr[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = r0 + 8 * i;
        Lr[i] = r < T ? p.lse_in[(size_t)bh * T + r] * GDN2_LOG2E : INFINITY;
        Dr[i] = r < T ? p.D[(size_t)bh * T + r] : 0.0f;
    }
    float dq[OJ * 4];
#pragma unroll
    for (int j = 0; j < OJ * 4; j++) dq[j] = 0.0f;

    for (int kt = kt_lo, it = 0; kt <= kt_hi; kt++, it++) {
        const int cur = it & 1;
        uint8_t *cK = sK + cur * TB, *cV = sV + cur * TB;
        if (kt < kt_hi) {
            const int n1 = (kt + 1) * BN;
            cp_tile_sw<BN, HS>(sK + (cur ^ 1) * TB, kg + (size_t)n1 * HS, HS, min(BN, T - n1));
            cp_tile_sw<BN, HS>(sV + (cur ^ 1) * TB, vg + (size_t)n1 * HS, HS, min(BN, T - n1));
        }
        cp_async_commit();
        cp_async_wait<1>();
        fence_async_smem();
        __syncthreads();
        // S = Q K^T, dP = dO V^T: m64 n64, K = HS, both K-major
        float s[NB * 4], dp[NB * 4];
#pragma unroll
        for (int j = 0; j < NB * 4; j++) s[j] = dp[j] = 0.0f;
        wg_hold(s), wg_hold(dp);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            const int o = (kk >> 2) * BM * 128 + (kk & 3) * 32, ok = (kk >> 2) * BN * 128 + (kk & 3) * 32;
            WG<BN>::template ss<0>(s, desc(sQ + o, 16, 1024), desc(cK + ok, 16, 1024), kk > 0);
            WG<BN>::template ss<0>(dp, desc(sO + o, 16, 1024), desc(cV + ok, 16, 1024), kk > 0);
        }
        wg_commit();
        wg_wait0();
        wg_hold(s), wg_hold(dp);
        const int c0 = kt * BN;
        if (tile_masked(q0 + warp * 16, q0 + warp * 16 + 15, c0, c0 + BN - 1, W)) {
#pragma unroll
            for (int j = 0; j < NB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (!visible(r0 + (e >> 1) * 8, c0 + 8 * j + 2 * tq + (e & 1), W)) s[4 * j + e] = -INFINITY;
        }
#pragma unroll
        for (int j = 0; j < NB; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int i = e >> 1;
                dp[4 * j + e] = ex2(s[4 * j + e] * p.sl2 - Lr[i]) * (dp[4 * j + e] - Dr[i]);
            }
        // dQ += dS K: m64 n{HS}, K = 64 keys; B = the [key][hs] tile read MN-major (column atoms BN 128 B apart)
        uint32_t da[BN / 16][4]; // dS packed into the A fragments before the fence
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) acc_to_a(da[kk], dp, kk);
        wg_hold(dq);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
            WG<HS>::template rs<1>(dq, da[kk], desc_mn(cK + kk * 2048, 1024, BN * 128), 1);
        wg_commit();
        wg_wait0();
        wg_hold(dq);
        __syncthreads();
    }
    cp_async_wait<0>();
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = r0 + 8 * i;
        if (r >= T) continue;
        bf16 *dqr = p.dq + ((size_t)bh * T + r) * HS;
#pragma unroll
        for (int j = 0; j < OJ; j++)
            *reinterpret_cast<uint32_t *>(dqr + 8 * j + 2 * tq) =
                pack_bf16(dq[4 * j + 2 * i] * p.scale, dq[4 * j + 2 * i + 1] * p.scale);
    }
}

// the forward (attn_fwd_kernel<HS, 2>'s grid: 128 queries a block) on wgmma: the block's rows as two m64 halves,
// warp w owning rows 16w.. of each (the library's kernel gives a warp 32 consecutive rows; the same math per row).
// S = Q K^T (SS, N = 64 keys), the online softmax in registers, O += P V (RS, V read MN-major).
template <int HS>
__global__ void __launch_bounds__(NTH) wg_fwd_kernel(const AttnParams p) {
    constexpr int MT = 2, KS = HS / 16, NB = BN / 8, OJ = HS / 8, BQ = 64 * MT, TB = BN * HS * 2;
    extern __shared__ unsigned char smem_raw[];
    uint8_t *sQ = align1024(smem_raw), *sK = sQ + BQ * HS * 2, *sV = sK + 2 * TB;
    const int T = p.T, W = p.window;
    const int bh = blockIdx.x, b = bh / p.nh, h = bh % p.nh, g = h / p.qpk;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const bf16 *qg = p.q + ((size_t)bh * T + q0) * HS;
    const bf16 *kg = p.k + (size_t)(b * p.ng + g) * T * HS;
    const bf16 *vg = p.v + (size_t)(b * p.ng + g) * T * HS;
    const int kt_lo = W > 0 ? max(0, q0 - W + 1) / BN : 0;
    const int kt_hi = min(q0 + BQ - 1, T - 1) / BN;

    cp_tile_sw<BQ, HS>(sQ, qg, HS, min(BQ, T - q0));
    cp_tile_sw<BN, HS>(sK, kg + (size_t)kt_lo * BN * HS, HS, min(BN, T - kt_lo * BN));
    cp_tile_sw<BN, HS>(sV, vg + (size_t)kt_lo * BN * HS, HS, min(BN, T - kt_lo * BN));
    cp_async_commit();

    float o[MT][OJ * 4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int j = 0; j < OJ * 4; j++) o[mt][j] = 0.0f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
    }
    const int r0 = q0 + warp * 16 + gq; // this thread's rows r0 + 64 mt, r0 + 64 mt + 8

    for (int kt = kt_lo, it = 0; kt <= kt_hi; kt++, it++) {
        const int cur = it & 1;
        uint8_t *cK = sK + cur * TB, *cV = sV + cur * TB;
        if (kt < kt_hi) {
            const int n1 = (kt + 1) * BN;
            cp_tile_sw<BN, HS>(sK + (cur ^ 1) * TB, kg + (size_t)n1 * HS, HS, min(BN, T - n1));
            cp_tile_sw<BN, HS>(sV + (cur ^ 1) * TB, vg + (size_t)n1 * HS, HS, min(BN, T - n1));
        }
        cp_async_commit();
        cp_async_wait<1>();
        fence_async_smem();
        __syncthreads();
        float s[MT][NB * 4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < NB * 4; j++) s[mt][j] = 0.0f;
#pragma unroll
        for (int mt = 0; mt < MT; mt++) wg_hold(s[mt]);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            const uint64_t dk = desc(cK + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024);
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                WG<BN>::template ss<0>(s[mt], desc(sQ + (kk >> 2) * BQ * 128 + mt * 64 * 128 + (kk & 3) * 32, 16, 1024),
                                       dk, kk > 0);
        }
        wg_commit();
        wg_wait0();
#pragma unroll
        for (int mt = 0; mt < MT; mt++) wg_hold(s[mt]);
        const int c0 = kt * BN;
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int rw = q0 + 64 * mt + warp * 16;
            if (tile_masked(rw, rw + 15, c0, c0 + BN - 1, W)) {
#pragma unroll
                for (int j = 0; j < NB; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (!visible(r0 + 64 * mt + (e >> 1) * 8, c0 + 8 * j + 2 * tq + (e & 1), W)) s[mt][4 * j + e] = -INFINITY;
            }
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
#pragma unroll
            for (int j = 0; j < NB * 4; j++) s[mt][j] *= p.sl2;
            float mx[2] = {m[mt][0], m[mt][1]};
#pragma unroll
            for (int j = 0; j < NB; j++) {
                mx[0] = fmaxf(mx[0], fmaxf(s[mt][4 * j], s[mt][4 * j + 1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[mt][4 * j + 2], s[mt][4 * j + 3]));
            }
            float base[2], alpha[2], rs[2] = {0.0f, 0.0f};
#pragma unroll
            for (int i = 0; i < 2; i++) {
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                base[i] = mx[i] == -INFINITY ? 0.0f : mx[i];
                alpha[i] = ex2(m[mt][i] - base[i]);
                m[mt][i] = mx[i];
            }
#pragma unroll
            for (int j = 0; j < NB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float pe = ex2(s[mt][4 * j + e] - base[e >> 1]);
                    s[mt][4 * j + e] = pe;
                    rs[e >> 1] += pe;
                }
            l[mt][0] = l[mt][0] * alpha[0] + rs[0];
            l[mt][1] = l[mt][1] * alpha[1] + rs[1];
#pragma unroll
            for (int j = 0; j < OJ; j++) {
                o[mt][4 * j] *= alpha[0];
                o[mt][4 * j + 1] *= alpha[0];
                o[mt][4 * j + 2] *= alpha[1];
                o[mt][4 * j + 3] *= alpha[1];
            }
        }
        // O += P V (P rounded to bf16): K = the 64 keys, B = the [key][hs] tile read MN-major. P is packed into
        // the A fragments before the fence (registers an RS wgmma reads are written before it, not after)
        uint32_t pa[MT][BN / 16][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++) acc_to_a(pa[mt][kk], s[mt], kk);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) wg_hold(o[mt]);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            const uint64_t dv = desc_mn(cV + kk * 2048, 1024, BN * 128);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) WG<HS>::template rs<1>(o[mt], pa[mt][kk], dv, 1);
        }
        wg_commit();
        wg_wait0();
#pragma unroll
        for (int mt = 0; mt < MT; mt++) wg_hold(o[mt]);
        __syncthreads();
    }
    cp_async_wait<0>();
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float li = l[mt][i];
            li += __shfl_xor_sync(0xffffffffu, li, 1);
            li += __shfl_xor_sync(0xffffffffu, li, 2);
            const int r = r0 + 64 * mt + 8 * i;
            if (r >= T) continue;
            const float inv = li > 0.0f ? 1.0f / li : 0.0f;
            bf16 *orow = p.out + ((size_t)(b * T + r) * p.nh + h) * HS;
#pragma unroll
            for (int j = 0; j < OJ; j++)
                *reinterpret_cast<uint32_t *>(orow + 8 * j + 2 * tq) =
                    pack_bf16(o[mt][4 * j + 2 * i] * inv, o[mt][4 * j + 2 * i + 1] * inv);
            if (tq == 0) p.lse[(size_t)bh * T + r] = (m[mt][i] + log2f(li)) * LN2;
        }
}

template <int HS>
void wg_fwd(const AttnParams &p, int B) {
    const int smem = 1024 + (128 + 4 * BN) * HS * 2;
    CK(cudaFuncSetAttribute(wg_fwd_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    wg_fwd_kernel<HS><<<dim3((unsigned)(B * p.nh), (unsigned)((p.T + 127) / 128)), NTH, smem>>>(p);
    CK(cudaGetLastError());
}

// the library's launch_bwd with the wgmma kernels; D computed by the library's kernel into p.D
template <int HS, int BQ>
void wg_bwd(const AttnParams &p, int B) {
    const int64_t rows = (int64_t)B * p.nh * p.T;
    attn_bwd_D_kernel<HS><<<(unsigned)((rows * 32 + 255) / 256), 256>>>(p.o, p.dO, const_cast<float *>(p.D), rows, p.T,
                                                                       p.nh);
    const int smem_kv = 1024 + (2 * BN + 2 * BQ) * HS * 2 + 2 * BQ * 4;
    CK(cudaFuncSetAttribute(wg_dkdv_kernel<HS, BQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_kv));
    wg_dkdv_kernel<HS, BQ><<<dim3((unsigned)(B * p.ng), (unsigned)((p.T + BN - 1) / BN)), NTH, smem_kv>>>(p);
    CK(cudaGetLastError());
    const int smem_q = 1024 + (2 * BM + 4 * BN) * HS * 2;
    CK(cudaFuncSetAttribute(wg_dq_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_q));
    wg_dq_kernel<HS><<<dim3((unsigned)(B * p.nh), (unsigned)((p.T + BM - 1) / BM)), NTH, smem_q>>>(p);
    CK(cudaGetLastError());
}

} // namespace

static float bf(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
// relative RMSE and max |a - b| / max |b| of two bf16 arrays
static void cmp(const std::vector<uint16_t> &a, const std::vector<uint16_t> &b, double &rmse, double &rmax) {
    double se = 0, sr = 0, em = 0, bm = 0;
    for (size_t i = 0; i < a.size(); i++) {
        const double x = bf(a[i]), y = bf(b[i]), e = fabs(x - y);
        se += e * e, sr += y * y;
        if (!(e <= em)) em = isnan(e) ? INFINITY : e;
        if (fabs(y) > bm) bm = fabs(y);
    }
    rmse = sqrt(se / (sr > 0 ? sr : 1)), rmax = em / (bm > 0 ? bm : 1);
}

// one shape: random q, k, v, dO; the library's forward for o, lse; the library's backward and ours; compared;
// timed when `time` (median of 9 after 2, CUDA events)
template <int HS, int BQ>
static int run_shape(int B, int nh, int ng, int T, int W, int time) {
    gdn2_cuda_attn_shape s = {};
    s.B = B, s.T = T, s.n_head = nh, s.n_groups = ng, s.hs = HS, s.window = W;
    const size_t nq = (size_t)B * nh * T * HS, nk = (size_t)B * ng * T * HS;
    std::vector<uint16_t> hq(nq), hk(nk), hv(nk), hdo(nq);
    for (auto &x : hq) x = dev_f2bf(dev_frand());
    for (auto &x : hk) x = dev_f2bf(dev_frand());
    for (auto &x : hv) x = dev_f2bf(dev_frand());
    for (auto &x : hdo) x = dev_f2bf(dev_frand());
    bf16 *q, *k, *v, *o, *o2, *dO, *dq[2], *dk[2], *dv[2];
    float *lse, *lse2, *D;
    CK(cudaMalloc(&q, nq * 2)); CK(cudaMalloc(&k, nk * 2)); CK(cudaMalloc(&v, nk * 2));
    CK(cudaMalloc(&o, nq * 2)); CK(cudaMalloc(&o2, nq * 2)); CK(cudaMalloc(&dO, nq * 2));
    for (int i = 0; i < 2; i++) { CK(cudaMalloc(&dq[i], nq * 2)); CK(cudaMalloc(&dk[i], nk * 2)); CK(cudaMalloc(&dv[i], nk * 2)); }
    CK(cudaMalloc(&lse, (size_t)B * nh * T * 4)); CK(cudaMalloc(&lse2, (size_t)B * nh * T * 4));
    CK(cudaMalloc(&D, (size_t)B * nh * T * 4));
    CK(cudaMemcpy(q, hq.data(), nq * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(k, hk.data(), nk * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(v, hv.data(), nk * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dO, hdo.data(), nq * 2, cudaMemcpyHostToDevice)); // dO laid out [B, T, nh, hs]: any order of randoms
    if (gdn2_cuda_attn_fwd(&s, q, k, v, o, lse, NULL)) { fprintf(stderr, "fwd: %s\n", gdn2_last_error()); exit(1); }
    AttnParams p = params_of(&s);
    p.q = q, p.k = k, p.v = v, p.o = o, p.dO = dO, p.lse_in = lse, p.D = D;
    p.dq = dq[1], p.dk = dk[1], p.dv = dv[1];
    for (int i = 0; i < 2; i++) { CK(cudaMemset(dq[i], 0xff, nq * 2)); CK(cudaMemset(dk[i], 0xff, nk * 2)); CK(cudaMemset(dv[i], 0xff, nk * 2)); }
    auto lib = [&] {
        if (gdn2_cuda_attn_bwd(&s, q, k, v, o, lse, dO, dq[0], dk[0], dv[0], NULL)) {
            fprintf(stderr, "bwd: %s\n", gdn2_last_error());
            exit(1);
        }
    };
    lib();
    wg_bwd<HS, BQ>(p, B);
    AttnParams pf = p;
    pf.out = o2, pf.lse = lse2;
    CK(cudaMemset(o2, 0xff, nq * 2));
    wg_fwd<HS>(pf, B);
    CK(cudaDeviceSynchronize());
    int bad = 0;
    const char *names[3] = {"dq", "dk", "dv"};
    bf16 *const *outs[3] = {dq, dk, dv};
    const size_t ns[3] = {nq, nk, nk};
    printf("B=%d nh=%d ng=%d T=%d hs=%d window=%d BQ=%d:", B, nh, ng, T, HS, W, BQ);
    for (int t = 0; t < 3; t++) {
        std::vector<uint16_t> a(ns[t]), r(ns[t]);
        CK(cudaMemcpy(r.data(), outs[t][0], ns[t] * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(a.data(), outs[t][1], ns[t] * 2, cudaMemcpyDeviceToHost));
        double rmse, rmax;
        cmp(a, r, rmse, rmax);
        const int ok = rmse < 1e-2 && rmax < 5e-2;
        bad += !ok;
        printf("  %s rel RMSE %.2e max %.2e%s", names[t], rmse, rmax, ok ? "" : " BAD");
    }
    {
        std::vector<uint16_t> a(nq), r(nq);
        CK(cudaMemcpy(r.data(), o, nq * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(a.data(), o2, nq * 2, cudaMemcpyDeviceToHost));
        double rmse, rmax;
        cmp(a, r, rmse, rmax);
        const size_t nl = (size_t)B * nh * T;
        std::vector<float> la(nl), lr(nl);
        CK(cudaMemcpy(lr.data(), lse, nl * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(la.data(), lse2, nl * 4, cudaMemcpyDeviceToHost));
        double le = 0;
        for (size_t i = 0; i < nl; i++) {
            const double e = fabs((double)la[i] - lr[i]);
            if (!(e <= le)) le = isnan(e) ? INFINITY : e;
        }
        const int ok = rmse < 1e-2 && rmax < 5e-2 && le < 1e-3;
        bad += !ok;
        printf("  fwd o rel RMSE %.2e max %.2e, lse max abs %.2e%s", rmse, rmax, le, ok ? "" : " BAD");
    }
    printf("\n");
    if (time && !bad) {
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
        for (int which = 0; which < 4; which++) {
            float t[11];
            for (int i = 0; i < 11; i++) {
                CK(cudaEventRecord(e0));
                if (which == 0) lib();
                else if (which == 1) wg_bwd<HS, BQ>(p, B);
                else if (which == 2) {
                    if (gdn2_cuda_attn_fwd(&s, q, k, v, o2, lse2, NULL)) exit(1);
                } else wg_fwd<HS>(pf, B);
                CK(cudaEventRecord(e1));
                CK(cudaEventSynchronize(e1));
                CK(cudaEventElapsedTime(&t[i], e0, e1));
            }
            std::vector<float> v9(t + 2, t + 11);
            std::sort(v9.begin(), v9.end());
            // the visible (query, key) pairs: 4 hs flop each forward, the backward counted as 2.5 forwards
            double pairs = 0;
            for (int i = 0; i < T; i++) pairs += W > 0 && W < T ? (i + 1 < W ? i + 1 : W) : i + 1;
            const double flop = (which < 2 ? 2.5 : 1.0) * 4.0 * HS * pairs * B * nh;
            static const char *what[4] = {"bwd library", "bwd wgmma", "fwd library", "fwd wgmma"};
            printf("  time %-12s %.3f ms  %.0f TFLOP/s\n", what[which], v9[4], flop / (v9[4] * 1e-3) / 1e12);
        }
    }
    cudaFree(q); cudaFree(k); cudaFree(v); cudaFree(o); cudaFree(o2); cudaFree(dO); cudaFree(lse); cudaFree(lse2);
    cudaFree(D);
    for (int i = 0; i < 2; i++) { cudaFree(dq[i]); cudaFree(dk[i]); cudaFree(dv[i]); }
    return bad;
}

int main(void) {
    int bad = 0;
    printf("WG_MN_LBO_IS_NSTR=%d\n", WG_MN_LBO_IS_NSTR);
    bad += run_shape<128, 32>(1, 4, 2, 200, 0, 0);   // ragged T, GQA, full causal
    bad += run_shape<128, 32>(2, 3, 3, 333, 100, 0); // window
    bad += run_shape<128, 32>(1, 2, 1, 64, 0, 0);    // one tile
    bad += run_shape<128, 32>(3, 18, 18, 4096, 2048, 1); // swa_gdn2_1.3B's attention layers, B = 3
    bad += run_shape<128, 64>(3, 18, 18, 4096, 2048, 1); // a 64-query tile for the dk/dv kernel
    bad += run_shape<64, 64>(1, 4, 2, 200, 0, 0);      // hs 64 (the 100M configs; the library's tile for it)
    bad += run_shape<64, 64>(2, 3, 3, 333, 100, 0);
    bad += run_shape<64, 64>(16, 12, 12, 4096, 2048, 1); // swa_gdn2_100M's attention layers, B = 16 (12 heads of 64)
    printf("%d shape(s) wrong\n", bad);
    return bad ? 1 : 0;
}
