// Causal softmax attention for the CUDA backend (C API: src/cuda/attn.h), bf16 in/out, fp32
// softmax statistics, sm_90a. Semantics: src/model/attention.c (gdn2_attn_forward / _backward).
//
// Kernels (128 threads = 4 warps; tensor cores: mma.sync m16n8k16 bf16 -> fp32, operands by
// ldmatrix from shared tiles of row stride hs + 8, the conventions of tc.cuh):
//   rope_split_kernel<NP>    elementwise, a block per token row (angles once a row, in shared
//                            memory), NP pairs a thread; fwd and bwd (the transposed rotation)
//   attn_fwd_kernel<HS,MT>   block = (b, h, 64 MT queries); loops over the 64-key tiles inside the
//                            causal window (SWA costs O(T * window)), K/V double-buffered with
//                            cp.async; warp w owns query rows 16 MT w .. + 16 MT (MT = 2: each K/V
//                            fragment feeds two products; at hs 128 Q is re-read from shared memory)
//                            and all 64 keys of the tile, so the online-softmax row statistics live
//                            in a quad of lanes.
//   attn_bwd_D_kernel<HS>    D = rowsum(dO * o) (fp32), one warp per (b, h, t)
//   attn_bwd_dkdv_kernel<HS> block = (b, g, 64 keys); loops over the query heads of the group and
//                            the query tiles (BQ = 64 for hs 64, 32 for hs 128) that see the keys,
//                            in a fixed order: dk, dv accumulate in registers, written once (no
//                            atomics: deterministic). Warp w owns keys 16w..16w+15 (S^T, dP^T).
//                            (Double-buffering its query tiles was measured slower: +19 % at hs 64,
//                            +11 % at hs 128 on an H100, bench/results/h100-attn/.)
//   attn_bwd_dq_kernel<HS>   block = (b, h, 64 queries); recomputes P, dP over the visible key
//                            tiles, dq in registers (deterministic).
// lse is natural-log: lse_t = log sum_j exp(scale q_t.k_j); inside the kernels scores are kept in
// log2 units (x * scale * log2 e) and 2^x is one MUFU.EX2 (ex2 below). The causal / window mask is
// evaluated per element only in the tiles a boundary crosses (tile_masked); the others skip it.
// Rows past T (ragged last tile) load as zeros and are never stored; fully masked rows of a tile
// (window lower bound) are handled by the -inf guard of the online softmax.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "attn.h"
#include "common.cuh"
#include "gdn2_error.h"
#include "host.cuh"
#include "tc.cuh"
#include "../util/rope.h"

namespace {

constexpr int NTH = 128; // threads per attention block (4 warps)
constexpr int BM = 64;   // query tile (forward, dq)
constexpr int BN = 64;   // key tile
constexpr float LN2 = 0.6931471805599453f;

struct AttnParams {
    const bf16 *q, *k, *v, *o, *dO;
    bf16 *out, *dq, *dk, *dv; // out: the forward's o
    const float *lse_in, *D;
    float *lse;
    int T, nh, ng, qpk, window; // window: 0 = full causal (also when >= T)
    float scale, sl2;           // hs^-1/2, hs^-1/2 log2(e)
};

__device__ __forceinline__ void zero4(float (&c)[4]) { c[0] = c[1] = c[2] = c[3] = 0.0f; }

// 2^x with results below 2^-126 flushed to zero: one MUFU.EX2, where exp2f adds a denormal fix-up of four
// instructions an element. Attention probabilities that small are far below bf16's resolution of the sums
// they join (a row's largest p is at least 1/n), so the flush changes no stored value in practice.
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// key kc is visible to query qr: causal, and inside the window (W = 0: full causal)
__device__ __forceinline__ bool visible(int qr, int kc, int W) { return kc <= qr && (W == 0 || qr - kc < W); }
// does some (query, key) pair of queries q_lo..q_hi and keys k_lo..k_hi fail visible()? (warp-uniform: the
// per-element mask runs only then)
__device__ __forceinline__ bool tile_masked(int q_lo, int q_hi, int k_lo, int k_hi, int W) {
    return k_hi > q_lo || (W > 0 && q_hi - k_lo >= W);
}

// A fragment (m16 x k16) of rows 16w.. of a shared tile (row stride LD), columns k0..k0+15
template <int LD>
__device__ __forceinline__ void lda_rows(uint32_t (&a)[4], const bf16 *s, int row0, int k0) {
    const int lane = threadIdx.x & 31;
    ldsm_x4(a, s + (row0 + (lane & 15)) * LD + k0 + (lane >> 4) * 8);
}
// B fragments of two 8-column blocks n0.., n0+8.. where B(k, n) = s[n][k] (s row-major in n):
// b[0], b[1] for block n0, b[2], b[3] for block n0 + 8
template <int LD>
__device__ __forceinline__ void ldb_nk(uint32_t (&b)[4], const bf16 *s, int n0, int k0) {
    const int lane = threadIdx.x & 31, l8 = lane & 7, mi = lane >> 3;
    ldsm_x4(b, s + (n0 + l8 + (mi >> 1) * 8) * LD + k0 + (mi & 1) * 8);
}
// the same where B(k, n) = s[k][n] (s row-major in k): ldmatrix.trans
template <int LD>
__device__ __forceinline__ void ldb_kn(uint32_t (&b)[4], const bf16 *s, int k0, int n0) {
    const int lane = threadIdx.x & 31, l8 = lane & 7, mi = lane >> 3;
    ldsm_x4_t(b, s + (k0 + l8 + (mi & 1) * 8) * LD + n0 + (mi >> 1) * 8);
}
// accumulator fragments c[2kk], c[2kk+1] (16 x 16 block of a C tile) -> A fragment for k step kk
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}
__device__ __forceinline__ void mma4(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    mma_bf16(c, a[0], a[1], a[2], a[3], b0, b1);
}

// ---- RoPE split ------------------------------------------------------------------------------
// element pair (i, i + hs/2) of head slot `slot` of token bt; slot = g (qpk + 2) + j: j < qpk a query
// head, j = qpk the key, j = qpk + 1 the value. Angles as rope_cs (fp32): theta_i = 1/base^(2i/hs).
__device__ __forceinline__ void rope_angle(int t, int i, int hs, float base, float &c, float &s) {
    gdn2_rope_angle(t, i, hs, base, &c, &s); // src/util/rope.h, the CPU's formula
}

// the [B, heads, T, hs] row of head slot (grp, j) of token (b, t): q head grp qpk + j, the key, or the value
__device__ __forceinline__ bf16 *qkv_row(bf16 *q, bf16 *k, bf16 *v, int64_t b, int t, int T, int nh, int ng, int qpk,
                                         int grp, int j, int hs) {
    if (j == qpk + 1) return v + ((b * ng + grp) * T + t) * hs;
    if (j < qpk) return q + ((b * nh + grp * qpk + j) * T + t) * hs;
    return k + ((b * ng + grp) * T + t) * hs;
}
// One block per token row bt (grid-stride): the row's angles are computed once into shared memory (cs:
// cos of pairs 0..h2-1, then sin), then the block's threads take (head slot, pair) of the row with 32-bit
// index arithmetic, two adjacent pairs a thread with bf16x2 accesses when vec (hs % 4 == 0, 4-byte aligned
// tensors). The same arithmetic per element as before (one thread per pair, angles per element, 64-bit
// index division: 0.7 ms a call at the 1.3B hybrid's size, ~5x its bytes).
__device__ __forceinline__ void rope_row_angles(float *cs, int64_t pos, int hs, float base) {
    const int h2 = hs / 2;
    __syncthreads(); // the previous row's angles have been read
    for (int i = threadIdx.x; i < h2; i += blockDim.x) rope_angle((int)pos, i, hs, base, cs[i], cs[h2 + i]);
    __syncthreads();
}
// n pairs (1 or 2) at i, i + h2 of src -> dst: rotated (fwd: y1 = x1 c - x2 s, y2 = x2 c + x1 s; bwd, the
// transpose: y1 = x1 c + x2 s, y2 = x2 c - x1 s; each product rounded, no fma, as the CPU) or copied
template <int NP>
__device__ __forceinline__ void rope_pairs(const bf16 *src, bf16 *dst, int i, int h2, const float *cs, int mode) {
    float x1[NP], x2[NP];
    if (NP == 2) {
        const float2 a = __bfloat1622float2(*(const __nv_bfloat162 *)(src + i));
        const float2 b = __bfloat1622float2(*(const __nv_bfloat162 *)(src + i + h2));
        x1[0] = a.x, x1[NP - 1] = a.y, x2[0] = b.x, x2[NP - 1] = b.y;
    } else {
        x1[0] = __bfloat162float(src[i]), x2[0] = __bfloat162float(src[i + h2]);
    }
    float y1[NP], y2[NP];
#pragma unroll
    for (int u = 0; u < NP; u++) {
        const float c = cs[i + u], s = cs[h2 + i + u];
        if (mode == 0) { // copy (the value slot)
            y1[u] = x1[u], y2[u] = x2[u];
        } else if (mode == 1) {
            y1[u] = __fsub_rn(__fmul_rn(x1[u], c), __fmul_rn(x2[u], s));
            y2[u] = __fadd_rn(__fmul_rn(x2[u], c), __fmul_rn(x1[u], s));
        } else {
            y1[u] = __fadd_rn(__fmul_rn(x1[u], c), __fmul_rn(x2[u], s));
            y2[u] = __fsub_rn(__fmul_rn(x2[u], c), __fmul_rn(x1[u], s));
        }
    }
    if (NP == 2) {
        *(__nv_bfloat162 *)(dst + i) = __floats2bfloat162_rn(y1[0], y1[NP - 1]);
        *(__nv_bfloat162 *)(dst + i + h2) = __floats2bfloat162_rn(y2[0], y2[NP - 1]);
    } else {
        dst[i] = __float2bfloat16(y1[0]), dst[i + h2] = __float2bfloat16(y2[0]);
    }
}

// fwd (bwd = 0): qkv [B,T,ns,hs] -> q [B,nh,T,hs], k, v [B,ng,T,hs], q and k rotated.
// bwd: dq, dk, dv -> dqkv, the transposed rotation. Head slot = g (qpk + 2) + j: j < qpk a query head,
// j = qpk the key, j = qpk + 1 the value. Angles as rope_cs (fp32): theta_i = 1/base^(2i/hs).
template <int NP>
__global__ void rope_split_kernel(bf16 *__restrict__ qkv, bf16 *__restrict__ q, bf16 *__restrict__ k,
                                  bf16 *__restrict__ v, int64_t rows, int T, int nh, int ng, int qpk, int hs,
                                  float base, int64_t pos0, int bwd) {
    extern __shared__ float cs[];
    const int h2 = hs / 2, ns = nh + 2 * ng, ppr = h2 / NP, per = ns * ppr;
    for (int64_t bt = blockIdx.x; bt < rows; bt += gridDim.x) {
        const int t = (int)(bt % T);
        const int64_t b = bt / T;
        rope_row_angles(cs, pos0 + t, hs, base);
        for (int e = threadIdx.x; e < per; e += blockDim.x) {
            const int slot = e / ppr, i = (e - slot * ppr) * NP;
            const int grp = slot / (qpk + 2), j = slot - grp * (qpk + 2);
            bf16 *row = qkv_row(q, k, v, b, t, T, nh, ng, qpk, grp, j, hs);
            bf16 *packed = qkv + (bt * ns + slot) * hs; // read (fwd) or written (bwd): no const
            const int mode = j == qpk + 1 ? 0 : bwd ? 2 : 1;
            if (bwd) rope_pairs<NP>(row, packed, i, h2, cs, mode);
            else rope_pairs<NP>(packed, row, i, h2, cs, mode);
        }
    }
}

// ---- forward -----------------------------------------------------------------------------------
// grid (B*nh, ceil(T/(64 MT))); blockIdx.y = 0 takes the last (heaviest) query tile. Warp w owns MT
// blocks of 16 query rows (rows 16 MT w .. + 16 MT): each K / V fragment loaded from shared memory feeds
// MT products (MT = 2 halves the shared-memory reads per product; hs 64).
// shared: Q [64 MT][LD], K [2][BN][LD], V [2][BN][LD]
template <int HS, int MT>
__global__ void __launch_bounds__(NTH) attn_fwd_kernel(const AttnParams p) {
    constexpr int LD = HS + 8, KS = HS / 16, NB = BN / 8, OJ = HS / 8, BQ = 16 * MT * (NTH / 32);
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sQ = reinterpret_cast<bf16 *>(smem_raw), *sK = sQ + BQ * LD, *sV = sK + 2 * BN * LD;
    const int T = p.T, W = p.window;
    const int bh = blockIdx.x, b = bh / p.nh, h = bh % p.nh, g = h / p.qpk;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const bf16 *qg = p.q + ((size_t)bh * T + q0) * HS;
    const bf16 *kg = p.k + (size_t)(b * p.ng + g) * T * HS;
    const bf16 *vg = p.v + (size_t)(b * p.ng + g) * T * HS;
    const int kt_lo = W > 0 ? max(0, q0 - W + 1) / BN : 0;
    const int kt_hi = min(q0 + BQ - 1, T - 1) / BN;

    cp_tile<BQ, HS, NTH>(sQ, LD, qg, HS, min(BQ, T - q0));
    cp_tile<BN, HS, NTH>(sK, LD, kg + (size_t)kt_lo * BN * HS, HS, min(BN, T - kt_lo * BN));
    cp_tile<BN, HS, NTH>(sV, LD, vg + (size_t)kt_lo * BN * HS, HS, min(BN, T - kt_lo * BN));
    cp_async_commit();

    // Q's fragments: held in registers (QK = KS), or re-read from shared memory at each k step (QK = 1: hs 128 with
    // two row blocks a warp, where o and s already take 192 registers)
    constexpr int QK = (HS == 128 && MT == 2) ? 1 : KS;
    uint32_t qf[MT][QK][4];
    float o[MT][OJ][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int j = 0; j < OJ; j++) zero4(o[mt][j]);
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
    }
    const int r0 = q0 + warp * 16 * MT + gq; // this thread's rows r0 + 16 mt, r0 + 16 mt + 8

    for (int kt = kt_lo, it = 0; kt <= kt_hi; kt++, it++) {
        const int cur = it & 1;
        const bf16 *cK = sK + cur * BN * LD, *cV = sV + cur * BN * LD;
        if (kt < kt_hi) { // prefetch the next tile into the other buffer (freed by the last sync)
            const int n1 = (kt + 1) * BN;
            cp_tile<BN, HS, NTH>(sK + (cur ^ 1) * BN * LD, LD, kg + (size_t)n1 * HS, HS, min(BN, T - n1));
            cp_tile<BN, HS, NTH>(sV + (cur ^ 1) * BN * LD, LD, vg + (size_t)n1 * HS, HS, min(BN, T - n1));
        }
        cp_async_commit();
        cp_async_wait<1>(); // this tile (and Q) arrived
        __syncthreads();
        if (QK == KS && it == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int kk = 0; kk < QK; kk++) lda_rows<LD>(qf[mt][kk], sQ, (warp * MT + mt) * 16, 16 * kk);
        }
        // S = Q K^T (16 MT rows x 64 keys per warp)
        float s[MT][NB][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < NB; j++) zero4(s[mt][j]);
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            const int qk = QK == KS ? kk : 0;
            if (QK != KS) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++) lda_rows<LD>(qf[mt][0], sQ, (warp * MT + mt) * 16, 16 * kk);
            }
#pragma unroll
            for (int j = 0; j < NB; j += 2) {
                uint32_t bf[4];
                ldb_nk<LD>(bf, cK, 8 * j, 16 * kk);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma4(s[mt][j], qf[mt][qk], bf[0], bf[1]);
                    mma4(s[mt][j + 1], qf[mt][qk], bf[2], bf[3]);
                }
            }
        }
        // log2 units, causal / window mask (only where a boundary crosses this warp's rows of the tile)
        const int c0 = kt * BN, qw = q0 + warp * 16 * MT;
        if (tile_masked(qw, qw + 16 * MT - 1, c0, c0 + BN - 1, W)) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < NB; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (!visible(r0 + 16 * mt + (e >> 1) * 8, c0 + 8 * j + 2 * tq + (e & 1), W))
                            s[mt][j][e] = -INFINITY;
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < NB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[mt][j][e] *= p.sl2;
        // online softmax over each of the thread's rows
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float mx[2] = {m[mt][0], m[mt][1]};
#pragma unroll
            for (int j = 0; j < NB; j++) {
                mx[0] = fmaxf(mx[0], fmaxf(s[mt][j][0], s[mt][j][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[mt][j][2], s[mt][j][3]));
            }
            float base[2], alpha[2], rs[2] = {0.0f, 0.0f};
#pragma unroll
            for (int i = 0; i < 2; i++) {
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                base[i] = mx[i] == -INFINITY ? 0.0f : mx[i]; // a row with nothing visible yet
                alpha[i] = ex2(m[mt][i] - base[i]);
                m[mt][i] = mx[i];
            }
#pragma unroll
            for (int j = 0; j < NB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float pe = ex2(s[mt][j][e] - base[e >> 1]);
                    s[mt][j][e] = pe;
                    rs[e >> 1] += pe;
                }
            l[mt][0] = l[mt][0] * alpha[0] + rs[0]; // per-thread partial sums (the quad's are added at the end)
            l[mt][1] = l[mt][1] * alpha[1] + rs[1];
#pragma unroll
            for (int j = 0; j < OJ; j++) {
                o[mt][j][0] *= alpha[0];
                o[mt][j][1] *= alpha[0];
                o[mt][j][2] *= alpha[1];
                o[mt][j][3] *= alpha[1];
            }
        }
        // O += P V (P rounded to bf16)
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) c_to_a(pa[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
            for (int j = 0; j < OJ; j += 2) {
                uint32_t bf[4];
                ldb_kn<LD>(bf, cV, 16 * kk, 8 * j);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma4(o[mt][j], pa[mt], bf[0], bf[1]);
                    mma4(o[mt][j + 1], pa[mt], bf[2], bf[3]);
                }
            }
        }
        __syncthreads(); // everyone is done with this buffer before it is refilled
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float li = l[mt][i];
            li += __shfl_xor_sync(0xffffffffu, li, 1);
            li += __shfl_xor_sync(0xffffffffu, li, 2);
            const int r = r0 + 16 * mt + 8 * i;
            if (r >= T) continue;
            const float inv = li > 0.0f ? 1.0f / li : 0.0f;
            bf16 *orow = p.out + ((size_t)(b * T + r) * p.nh + h) * HS;
#pragma unroll
            for (int j = 0; j < OJ; j++)
                *reinterpret_cast<uint32_t *>(orow + 8 * j + 2 * tq) =
                    pack_bf16(o[mt][j][2 * i] * inv, o[mt][j][2 * i + 1] * inv);
            if (tq == 0) p.lse[(size_t)bh * T + r] = (m[mt][i] + log2f(li)) * LN2;
        }
}

// ---- backward ------------------------------------------------------------------------------------
// D[b,h,t] = sum_i dO[b,t,h,i] o[b,t,h,i]; one warp per row
template <int HS>
__global__ void attn_bwd_D_kernel(const bf16 *__restrict__ o, const bf16 *__restrict__ dO, float *__restrict__ D,
                                  int64_t rows, int T, int nh) {
    const int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int64_t t = row % T, bh = row / T, h = bh % nh, b = bh / nh;
    const size_t off = ((size_t)(b * T + t) * nh + h) * HS;
    float acc = 0.0f;
#pragma unroll
    for (int i = 2 * lane; i < HS; i += 64) {
        const float2 a = bf2_to_f2(o + off + i), c = bf2_to_f2(dO + off + i);
        acc = fmaf(a.x, c.x, acc);
        acc = fmaf(a.y, c.y, acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) D[row] = acc;
}

// dk, dv of 64 keys of one (b, g): grid (B*ng, ceil(T/BN)); blockIdx.y = 0 (the most queries) first.
// shared: K [BN][LD], V [BN][LD], Q [BQ][LD], dO [BQ][LD], lse*log2e [BQ], D [BQ]
template <int HS, int BQ>
__global__ void __launch_bounds__(NTH) attn_bwd_dkdv_kernel(const AttnParams p) {
    constexpr int LD = HS + 8, KS = HS / 16, NB = BQ / 8, OJ = HS / 8;
    static_assert(NB % 2 == 0, "query tile in pairs of 8-column blocks");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sK = reinterpret_cast<bf16 *>(smem_raw), *sV = sK + BN * LD, *sQ = sV + BN * LD, *sO = sQ + BQ * LD;
    float *sL = reinterpret_cast<float *>(sO + BQ * LD), *sD = sL + BQ;
    const int T = p.T, W = p.window, nh = p.nh;
    const int bg = blockIdx.x, b = bg / p.ng, g = bg % p.ng;
    const int n0 = blockIdx.y * BN;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;

    cp_tile<BN, HS, NTH>(sK, LD, p.k + ((size_t)bg * T + n0) * HS, HS, min(BN, T - n0));
    cp_tile<BN, HS, NTH>(sV, LD, p.v + ((size_t)bg * T + n0) * HS, HS, min(BN, T - n0));
    cp_async_commit();

    const int last = W > 0 ? min(T - 1, n0 + BN - 1 + W - 1) : T - 1; // the last query that sees a key here
    const int qt_lo = n0 / BQ, qt_hi = last / BQ;
    const int kr0 = n0 + warp * 16 + gq; // this thread's keys kr0, kr0 + 8

    float dk[OJ][4], dv[OJ][4];
#pragma unroll
    for (int j = 0; j < OJ; j++) zero4(dk[j]), zero4(dv[j]);

    for (int jh = 0; jh < p.qpk; jh++) {
        const int h = g * p.qpk + jh;
        const bf16 *qg = p.q + (size_t)(b * nh + h) * T * HS;
        const bf16 *og = p.dO + (size_t)b * T * nh * HS + (size_t)h * HS;
        const float *lg = p.lse_in + (size_t)(b * nh + h) * T, *Dg = p.D + (size_t)(b * nh + h) * T;
        for (int qt = qt_lo; qt <= qt_hi; qt++) {
            const int t0 = qt * BQ;
            __syncthreads(); // the previous tile's readers are done
            cp_tile<BQ, HS, NTH>(sQ, LD, qg + (size_t)t0 * HS, HS, min(BQ, T - t0));
            cp_tile<BQ, HS, NTH>(sO, LD, og + (size_t)t0 * nh * HS, (size_t)nh * HS, min(BQ, T - t0));
            cp_async_commit();
            if (threadIdx.x < BQ) {
                const int t = t0 + threadIdx.x;
                sL[threadIdx.x] = t < T ? lg[t] * GDN2_LOG2E : INFINITY; // p = 0 past T
                sD[threadIdx.x] = t < T ? Dg[t] : 0.0f;
            }
            cp_async_wait<0>();
            __syncthreads();
            // S^T = K Q^T, dP^T = V dO^T (16 keys x BQ queries per warp)
            float st[NB][4], dp[NB][4];
#pragma unroll
            for (int j = 0; j < NB; j++) zero4(st[j]), zero4(dp[j]);
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t ka[4], va[4];
                lda_rows<LD>(ka, sK, warp * 16, 16 * kk);
                lda_rows<LD>(va, sV, warp * 16, 16 * kk);
#pragma unroll
                for (int j = 0; j < NB; j += 2) {
                    uint32_t bq[4], bo[4];
                    ldb_nk<LD>(bq, sQ, 8 * j, 16 * kk);
                    ldb_nk<LD>(bo, sO, 8 * j, 16 * kk);
                    mma4(st[j], ka, bq[0], bq[1]);
                    mma4(st[j + 1], ka, bq[2], bq[3]);
                    mma4(dp[j], va, bo[0], bo[1]);
                    mma4(dp[j + 1], va, bo[2], bo[3]);
                }
            }
            // P^T = exp(scale s - lse) where visible, dS^T = P^T (dP^T - D). The mask runs only where a boundary
            // crosses this warp's keys x the query tile: an invisible score becomes -inf, p = 2^-inf = 0.
            if (tile_masked(t0, t0 + BQ - 1, n0 + warp * 16, n0 + warp * 16 + 15, W)) {
#pragma unroll
                for (int j = 0; j < NB; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (!visible(t0 + 8 * j + 2 * tq + (e & 1), kr0 + (e >> 1) * 8, W)) st[j][e] = -INFINITY;
            }
#pragma unroll
            for (int j = 0; j < NB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int cl = 8 * j + 2 * tq + (e & 1);
                    const float pe = ex2(st[j][e] * p.sl2 - sL[cl]);
                    st[j][e] = pe;
                    dp[j][e] = pe * (dp[j][e] - sD[cl]);
                }
            // dV += P^T dO, dK += dS^T Q
#pragma unroll
            for (int kq = 0; kq < BQ / 16; kq++) {
                uint32_t pa[4], da[4];
                c_to_a(pa, st[2 * kq], st[2 * kq + 1]);
                c_to_a(da, dp[2 * kq], dp[2 * kq + 1]);
#pragma unroll
                for (int j = 0; j < OJ; j += 2) {
                    uint32_t bo[4], bq[4];
                    ldb_kn<LD>(bo, sO, 16 * kq, 8 * j);
                    ldb_kn<LD>(bq, sQ, 16 * kq, 8 * j);
                    mma4(dv[j], pa, bo[0], bo[1]);
                    mma4(dv[j + 1], pa, bo[2], bo[3]);
                    mma4(dk[j], da, bq[0], bq[1]);
                    mma4(dk[j + 1], da, bq[2], bq[3]);
                }
            }
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
                pack_bf16(dk[j][2 * i] * p.scale, dk[j][2 * i + 1] * p.scale);
            *reinterpret_cast<uint32_t *>(dvr + 8 * j + 2 * tq) = pack_bf16(dv[j][2 * i], dv[j][2 * i + 1]);
        }
    }
}

// dq of 64 queries of one (b, h): grid (B*nh, ceil(T/BM)); blockIdx.y = 0 takes the last tile.
// shared: Q [BM][LD], dO [BM][LD], K [2][BN][LD], V [2][BN][LD]
template <int HS>
__global__ void __launch_bounds__(NTH) attn_bwd_dq_kernel(const AttnParams p) {
    constexpr int LD = HS + 8, KS = HS / 16, NB = BN / 8, OJ = HS / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sQ = reinterpret_cast<bf16 *>(smem_raw), *sO = sQ + BM * LD, *sK = sO + BM * LD, *sV = sK + 2 * BN * LD;
    const int T = p.T, W = p.window, nh = p.nh;
    const int bh = blockIdx.x, b = bh / nh, h = bh % nh, g = h / p.qpk;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BM;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const bf16 *kg = p.k + (size_t)(b * p.ng + g) * T * HS;
    const bf16 *vg = p.v + (size_t)(b * p.ng + g) * T * HS;
    const int kt_lo = W > 0 ? max(0, q0 - W + 1) / BN : 0;
    const int kt_hi = min(q0 + BM - 1, T - 1) / BN;

    cp_tile<BM, HS, NTH>(sQ, LD, p.q + ((size_t)bh * T + q0) * HS, HS, min(BM, T - q0));
    cp_tile<BM, HS, NTH>(sO, LD, p.dO + ((size_t)b * T + q0) * nh * HS + (size_t)h * HS, (size_t)nh * HS,
                         min(BM, T - q0));
    cp_tile<BN, HS, NTH>(sK, LD, kg + (size_t)kt_lo * BN * HS, HS, min(BN, T - kt_lo * BN));
    cp_tile<BN, HS, NTH>(sV, LD, vg + (size_t)kt_lo * BN * HS, HS, min(BN, T - kt_lo * BN));
    cp_async_commit();

    const int r0 = q0 + warp * 16 + gq;
    float Lr[2], Dr[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = r0 + 8 * i;
        Lr[i] = r < T ? p.lse_in[(size_t)bh * T + r] * GDN2_LOG2E : INFINITY;
        Dr[i] = r < T ? p.D[(size_t)bh * T + r] : 0.0f;
    }
    float dq[OJ][4];
#pragma unroll
    for (int j = 0; j < OJ; j++) zero4(dq[j]);

    for (int kt = kt_lo, it = 0; kt <= kt_hi; kt++, it++) {
        const int cur = it & 1;
        const bf16 *cK = sK + cur * BN * LD, *cV = sV + cur * BN * LD;
        if (kt < kt_hi) {
            const int n1 = (kt + 1) * BN;
            cp_tile<BN, HS, NTH>(sK + (cur ^ 1) * BN * LD, LD, kg + (size_t)n1 * HS, HS, min(BN, T - n1));
            cp_tile<BN, HS, NTH>(sV + (cur ^ 1) * BN * LD, LD, vg + (size_t)n1 * HS, HS, min(BN, T - n1));
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        // S = Q K^T, dP = dO V^T (16 rows x 64 keys per warp)
        float s[NB][4], dp[NB][4];
#pragma unroll
        for (int j = 0; j < NB; j++) zero4(s[j]), zero4(dp[j]);
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t qa[4], oa[4];
            lda_rows<LD>(qa, sQ, warp * 16, 16 * kk);
            lda_rows<LD>(oa, sO, warp * 16, 16 * kk);
#pragma unroll
            for (int j = 0; j < NB; j += 2) {
                uint32_t bk[4], bv[4];
                ldb_nk<LD>(bk, cK, 8 * j, 16 * kk);
                ldb_nk<LD>(bv, cV, 8 * j, 16 * kk);
                mma4(s[j], qa, bk[0], bk[1]);
                mma4(s[j + 1], qa, bk[2], bk[3]);
                mma4(dp[j], oa, bv[0], bv[1]);
                mma4(dp[j + 1], oa, bv[2], bv[3]);
            }
        }
        // P = exp(scale s - lse) where visible (the mask only where a boundary crosses this warp's rows of the
        // tile), dS = P (dP - D)
        const int c0 = kt * BN;
        if (tile_masked(q0 + warp * 16, q0 + warp * 16 + 15, c0, c0 + BN - 1, W)) { // invisible: p = 2^-inf = 0
#pragma unroll
            for (int j = 0; j < NB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (!visible(r0 + (e >> 1) * 8, c0 + 8 * j + 2 * tq + (e & 1), W)) s[j][e] = -INFINITY;
        }
#pragma unroll
        for (int j = 0; j < NB; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int i = e >> 1;
                dp[j][e] = ex2(s[j][e] * p.sl2 - Lr[i]) * (dp[j][e] - Dr[i]);
            }
        // dQ += dS K
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t da[4];
            c_to_a(da, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
            for (int j = 0; j < OJ; j += 2) {
                uint32_t bk[4];
                ldb_kn<LD>(bk, cK, 16 * kk, 8 * j);
                mma4(dq[j], da, bk[0], bk[1]);
                mma4(dq[j + 1], da, bk[2], bk[3]);
            }
        }
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
                pack_bf16(dq[j][2 * i] * p.scale, dq[j][2 * i + 1] * p.scale);
    }
}

// ---- host --------------------------------------------------------------------------------------
constexpr int64_t MAX_TILES = 65535; // gridDim.y

int check_shape(const gdn2_cuda_attn_shape *s, const char *fn) {
    if (!s) return gdn2_error(GDN2_ERR_ARG, "%s: shape s is NULL", fn);
    if (s->B < 1) return gdn2_error(GDN2_ERR_ARG, "%s: B = %lld, must be >= 1", fn, (long long)s->B);
    if (s->T < 1) return gdn2_error(GDN2_ERR_ARG, "%s: T = %lld, must be >= 1", fn, (long long)s->T);
    if (s->T > MAX_TILES * BN)
        return gdn2_error(GDN2_ERR_ARG, "%s: T = %lld exceeds the supported %lld", fn, (long long)s->T,
                          (long long)(MAX_TILES * BN));
    if (s->hs != 64 && s->hs != 128)
        return gdn2_error(GDN2_ERR_ARG, "%s: hs = %lld, head size must be 64 or 128", fn, (long long)s->hs);
    if (s->n_head < 1 || s->n_groups < 1 || s->n_head % s->n_groups)
        return gdn2_error(GDN2_ERR_ARG, "%s: n_head = %lld must be a positive multiple of n_groups = %lld", fn,
                          (long long)s->n_head, (long long)s->n_groups);
    if (s->window < 0)
        return gdn2_error(GDN2_ERR_ARG, "%s: window = %lld, must be >= 0 (0: full causal)", fn, (long long)s->window);
    if (s->B * s->n_head > INT_MAX || s->B * s->n_head * s->T > (int64_t)INT_MAX * 32)
        return gdn2_error(GDN2_ERR_ARG, "%s: B * n_head = %lld x T = %lld too large", fn,
                          (long long)(s->B * s->n_head), (long long)s->T);
    return GDN2_OK;
}

int check_ptr(const void *ptr, const char *name, const char *fn, unsigned align) {
    if (!ptr) return gdn2_error(GDN2_ERR_ARG, "%s: %s is NULL", fn, name);
    if ((uintptr_t)ptr % align)
        return gdn2_error(GDN2_ERR_ARG, "%s: %s is not %u-byte aligned", fn, name, align);
    return GDN2_OK;
}

int launch_status(const char *fn) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "%s: launch failed: %s", fn, cudaGetErrorString(e));
    return GDN2_OK;
}

template <class K>
int set_smem(PerDevice &done, K kernel, size_t smem, const char *fn) {
    cudaError_t e = once_per_device(done, [&] {
        return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    });
    if (e != cudaSuccess)
        return gdn2_error(GDN2_ERR_DEVICE, "%s: cudaFuncSetAttribute(%zu bytes shared) failed: %s", fn, smem,
                          cudaGetErrorString(e));
    return GDN2_OK;
}

AttnParams params_of(const gdn2_cuda_attn_shape *s) {
    AttnParams p = {};
    p.T = (int)s->T;
    p.nh = (int)s->n_head;
    p.ng = (int)s->n_groups;
    p.qpk = p.nh / p.ng;
    p.window = s->window >= s->T ? 0 : (int)s->window; // a window covering every position is full causal
    p.scale = 1.0f / sqrtf((float)s->hs);
    p.sl2 = p.scale * GDN2_LOG2E;
    return p;
}

template <int HS>
int launch_fwd(const AttnParams &p, int B, cudaStream_t st, const char *fn) {
    constexpr int MT = 2, BQ = 16 * MT * (NTH / 32); // query row blocks a warp, rows a block
    static PerDevice done;
    const size_t smem = (size_t)(BQ + 4 * BN) * (HS + 8) * sizeof(bf16);
    int rc = set_smem(done, attn_fwd_kernel<HS, MT>, smem, fn);
    if (rc) return rc;
    dim3 grid((unsigned)(B * p.nh), (unsigned)((p.T + BQ - 1) / BQ));
    attn_fwd_kernel<HS, MT><<<grid, NTH, smem, st>>>(p);
    return launch_status(fn);
}

template <int HS>
int launch_bwd(const AttnParams &p, int B, cudaStream_t st, const char *fn) {
    constexpr int BQ = HS == 128 ? 32 : 64;
    static PerDevice done_kv, done_q;
    const int64_t rows = (int64_t)B * p.nh * p.T;
    attn_bwd_D_kernel<HS><<<(unsigned)((rows * 32 + 255) / 256), 256, 0, st>>>(p.o, p.dO, const_cast<float *>(p.D),
                                                                               rows, p.T, p.nh);
    int rc = launch_status(fn);
    if (rc) return rc;
    const size_t smem_kv = (size_t)(2 * BN + 2 * BQ) * (HS + 8) * sizeof(bf16) + 2 * BQ * sizeof(float);
    rc = set_smem(done_kv, attn_bwd_dkdv_kernel<HS, BQ>, smem_kv, fn);
    if (rc) return rc;
    attn_bwd_dkdv_kernel<HS, BQ><<<dim3((unsigned)(B * p.ng), (unsigned)((p.T + BN - 1) / BN)), NTH, smem_kv, st>>>(p);
    rc = launch_status(fn);
    if (rc) return rc;
    const size_t smem_q = (size_t)(2 * BM + 4 * BN) * (HS + 8) * sizeof(bf16);
    rc = set_smem(done_q, attn_bwd_dq_kernel<HS>, smem_q, fn);
    if (rc) return rc;
    attn_bwd_dq_kernel<HS><<<dim3((unsigned)(B * p.nh), (unsigned)((p.T + BM - 1) / BM)), NTH, smem_q, st>>>(p);
    return launch_status(fn);
}

// rope_split_kernel over the B T token rows (a block a row, at most 65536 8 blocks, grid-stride beyond)
int rope_launch(const gdn2_cuda_attn_shape *s, bf16 *qkv, bf16 *q, bf16 *k, bf16 *v, int bwd, void *stream,
                const char *fn) {
    const int64_t rows = s->B * s->T;
    const unsigned nb = (unsigned)(rows < 65536 * 8 ? rows : 65536 * 8);
    const size_t smem = (size_t)s->hs * sizeof(float);
    const int hs = (int)s->hs, nh = (int)s->n_head, ng = (int)s->n_groups, qpk = nh / ng, T = (int)s->T;
    const bool vec = hs % 4 == 0 && ((uintptr_t)qkv | (uintptr_t)q | (uintptr_t)k | (uintptr_t)v) % 4 == 0;
    if (vec)
        rope_split_kernel<2><<<nb, 256, smem, (cudaStream_t)stream>>>(qkv, q, k, v, rows, T, nh, ng, qpk, hs,
                                                                     s->rope_base, s->pos0, bwd);
    else
        rope_split_kernel<1><<<nb, 256, smem, (cudaStream_t)stream>>>(qkv, q, k, v, rows, T, nh, ng, qpk, hs,
                                                                     s->rope_base, s->pos0, bwd);
    return launch_status(fn);
}

} // namespace

extern "C" int gdn2_cuda_rope_split(const gdn2_cuda_attn_shape *s, const void *qkv, void *q, void *k, void *v,
                                    void *stream) {
    const char *fn = "gdn2_cuda_rope_split";
    int rc = check_shape(s, fn);
    if (!rc) rc = check_ptr(qkv, "qkv", fn, 2);
    if (!rc) rc = check_ptr(q, "q", fn, 2);
    if (!rc) rc = check_ptr(k, "k", fn, 2);
    if (!rc) rc = check_ptr(v, "v", fn, 2);
    if (!rc && !(s->rope_base > 0.0f))
        rc = gdn2_error(GDN2_ERR_ARG, "%s: rope_base = %g, must be > 0", fn, (double)s->rope_base);
    if (!rc && (s->pos0 < 0 || s->pos0 + s->T > INT32_MAX))
        rc = gdn2_error(GDN2_ERR_ARG, "%s: pos0 = %lld with T = %lld outside [0, 2^31)", fn, (long long)s->pos0,
                        (long long)s->T);
    if (rc) return rc;
    return rope_launch(s, (bf16 *)qkv, (bf16 *)q, (bf16 *)k, (bf16 *)v, 0, stream, fn);
}

extern "C" int gdn2_cuda_rope_split_bwd(const gdn2_cuda_attn_shape *s, const void *dq, const void *dk, const void *dv,
                                        void *dqkv, void *stream) {
    const char *fn = "gdn2_cuda_rope_split_bwd";
    int rc = check_shape(s, fn);
    if (!rc) rc = check_ptr(dq, "dq", fn, 2);
    if (!rc) rc = check_ptr(dk, "dk", fn, 2);
    if (!rc) rc = check_ptr(dv, "dv", fn, 2);
    if (!rc) rc = check_ptr(dqkv, "dqkv", fn, 2);
    if (!rc && !(s->rope_base > 0.0f))
        rc = gdn2_error(GDN2_ERR_ARG, "%s: rope_base = %g, must be > 0", fn, (double)s->rope_base);
    if (!rc && (s->pos0 < 0 || s->pos0 + s->T > INT32_MAX))
        rc = gdn2_error(GDN2_ERR_ARG, "%s: pos0 = %lld with T = %lld outside [0, 2^31)", fn, (long long)s->pos0,
                        (long long)s->T);
    if (rc) return rc;
    return rope_launch(s, (bf16 *)dqkv, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, 1, stream, fn);
}

extern "C" int gdn2_cuda_attn_fwd(const gdn2_cuda_attn_shape *s, const void *q, const void *k, const void *v, void *o,
                                  float *lse, void *stream) {
    const char *fn = "gdn2_cuda_attn_fwd";
    int rc = check_shape(s, fn);
    if (!rc) rc = check_ptr(q, "q", fn, 16);
    if (!rc) rc = check_ptr(k, "k", fn, 16);
    if (!rc) rc = check_ptr(v, "v", fn, 16);
    if (!rc) rc = check_ptr(o, "o", fn, 4);
    if (!rc) rc = check_ptr(lse, "lse", fn, 4);
    if (rc) return rc;
    AttnParams p = params_of(s);
    p.q = (const bf16 *)q;
    p.k = (const bf16 *)k;
    p.v = (const bf16 *)v;
    p.out = (bf16 *)o;
    p.lse = lse;
    cudaStream_t st = (cudaStream_t)stream;
    return s->hs == 64 ? launch_fwd<64>(p, (int)s->B, st, fn) : launch_fwd<128>(p, (int)s->B, st, fn);
}

extern "C" int gdn2_cuda_attn_bwd(const gdn2_cuda_attn_shape *s, const void *q, const void *k, const void *v,
                                  const void *o, const float *lse, const void *dO, void *dq, void *dk, void *dv,
                                  void *stream) {
    const char *fn = "gdn2_cuda_attn_bwd";
    int rc = check_shape(s, fn);
    if (!rc) rc = check_ptr(q, "q", fn, 16);
    if (!rc) rc = check_ptr(k, "k", fn, 16);
    if (!rc) rc = check_ptr(v, "v", fn, 16);
    if (!rc) rc = check_ptr(o, "o", fn, 4);
    if (!rc) rc = check_ptr(lse, "lse", fn, 4);
    if (!rc) rc = check_ptr(dO, "dO", fn, 16);
    if (!rc) rc = check_ptr(dq, "dq", fn, 4);
    if (!rc) rc = check_ptr(dk, "dk", fn, 4);
    if (!rc) rc = check_ptr(dv, "dv", fn, 4);
    if (rc) return rc;
    AttnParams p = params_of(s);
    p.q = (const bf16 *)q;
    p.k = (const bf16 *)k;
    p.v = (const bf16 *)v;
    p.o = (const bf16 *)o;
    p.dO = (const bf16 *)dO;
    p.lse_in = lse;
    p.dq = (bf16 *)dq;
    p.dk = (bf16 *)dk;
    p.dv = (bf16 *)dv;
    cudaStream_t st = (cudaStream_t)stream;
    float *D = NULL;
    const size_t dbytes = (size_t)(s->B * s->n_head * s->T) * sizeof(float);
    cudaError_t e = cudaMallocAsync((void **)&D, dbytes, st);
    if (e != cudaSuccess)
        return gdn2_error(GDN2_ERR_DEVICE, "%s: cudaMallocAsync(D, %zu bytes) failed: %s", fn, dbytes,
                          cudaGetErrorString(e));
    p.D = D;
    rc = s->hs == 64 ? launch_bwd<64>(p, (int)s->B, st, fn) : launch_bwd<128>(p, (int)s->B, st, fn);
    e = cudaFreeAsync(D, st);
    if (!rc && e != cudaSuccess)
        rc = gdn2_error(GDN2_ERR_DEVICE, "%s: cudaFreeAsync(D) failed: %s", fn, cudaGetErrorString(e));
    return rc;
}
