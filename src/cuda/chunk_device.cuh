// What the chunk translation units share: chunk.cu (host side), chunk_f32.cu / chunk_bf16.cu (the
// generic kernels, chunk_generic.cuh) and chunk_fast.cu (the bf16 fast path, chunk_tc.cuh):
// parameters, shared-memory loaders, the prep kernels, the intra-chunk VJP products, k_fin, the
// profiling marks and the launchers' declarations. Separate translation units so that a parallel
// build compiles the kernel families at the same time.
#ifndef GDN2_CUDA_CHUNK_DEVICE_CUH
#define GDN2_CUDA_CHUNK_DEVICE_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <type_traits>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "tc.cuh"
#include "gdn2_cuda.h"

#define NT 256
#define CS 64

struct ChunkParams {
    int B, T, H, HV, K, V, G;
    float scale;
    int l2, gate;
    float lb;
    int nchunks, nseq;
    const int *ctab; // [nchunks][3] = {seq, tok0, len}, or NULL: fixed length T per sequence
    const int *cofs; // [nseq+1] first chunk of each sequence, or NULL
    const void *q, *k, *v, *b, *w;
    const float *g, *h0, *A_log, *dt_bias;
    void *o;
    float *ht;
    const void *d_o;
    const float *dht;
    void *dq, *dk, *dv, *db, *dw;
    float *dg, *dh0, *dA_log, *ddt_bias;
    // workspace, chunk-major: block ch = c*HV + hv. On the bf16 fast path dY holds dE = A^T dY and
    // dA1 holds dT instead (k_bv_tc computes them); E = gamma.b.k (bf16, for k_bv_tc) and Rn, the
    // q and k row norms 1/|x| (for k_bk_tc), are kept by k_prep_tc.
    float *Y, *U, *Qg, *Kg, *Gl, *Aqk, *R, *Hs;
    float *A, *dHs, *dR, *dY, *dA1, *dAqk, *dQi, *dKi, *dGl, *dQs, *dKs, *dBs, *dGs, *E, *Rn;
};

__device__ __forceinline__ void chunk_info(const ChunkParams &p, int c, int &n, size_t &tok0, int &len) {
    if (p.ctab) {
        n = p.ctab[3 * c];
        tok0 = (size_t)p.ctab[3 * c + 1];
        len = p.ctab[3 * c + 2];
    } else {
        int nts = (p.T + CS - 1) / CS, i = c % nts;
        n = c / nts;
        tok0 = (size_t)n * p.T + (size_t)i * CS;
        len = min(CS, p.T - i * CS);
    }
}
__device__ __forceinline__ void seq_chunks(const ChunkParams &p, int n, int &c0, int &c1) {
    if (p.cofs) {
        c0 = p.cofs[n];
        c1 = p.cofs[n + 1];
    } else {
        int nts = (p.T + CS - 1) / CS;
        c0 = n * nts;
        c1 = c0 + nts;
    }
}

// dev: per-phase clock64() marks of k_prep_tc's first 1024 blocks, printed by GDN2_CUDA_PROFILE=1
// when built with NVFLAGS_EXTRA=-DGDN2_CUDA_CLOCKS (thread 0's view, after each phase's barrier).
#define PREP_MARKS 8
#ifdef GDN2_CUDA_CLOCKS
static __device__ long long g_prep_clk[1024][PREP_MARKS];
#define PREP_MARK(i)                                                                                   \
    do {                                                                                               \
        const unsigned blk_ = blockIdx.x + gridDim.x * blockIdx.y;                                     \
        if (threadIdx.x == 0 && blk_ < 1024) g_prep_clk[blk_][i] = clock64();                          \
    } while (0)
#else
#define PREP_MARK(i) \
    do {             \
    } while (0)
#endif

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
template <class T> struct is_bf16 { static constexpr bool value = false; };
template <> struct is_bf16<__nv_bfloat16> { static constexpr bool value = true; };

// Load one chunk's key-side inputs of key head h into shared rows [64][KP+1]: q (L2-normalised if
// asked), k (likewise), b, and sG = G2 (log2 cumulative effective gate). Rows >= len and channels
// >= K are zero (g = 0 there, so G2 stays flat after the last valid row).
// G2 is taken relative to row 31 and accumulated outward from it in double: the pairwise
// differences G2_r - G2_s then carry rounding of at most half a chunk's decay, not a whole one
// (strong gates make |G2| large). sStart[d] = G2 of the virtual row -1, so gamma_r = 2^(G2_r-sStart).
__device__ __forceinline__ float sget(const float *x) { return *x; }
__device__ __forceinline__ float sget(const __nv_bfloat16 *x) { return __bfloat162float(*x); }
__device__ __forceinline__ void sset(float *x, float v) { *x = v; }
__device__ __forceinline__ void sset(__nv_bfloat16 *x, float v) { *x = __float2bfloat16(v); }
// an 8-byte aligned pair of shared fp32 values
__device__ __forceinline__ float2 ld2(const float *x) { return *reinterpret_cast<const float2 *>(x); }
// a pair of adjacent elements (8-byte fp32 / 4-byte bf16 store)
__device__ __forceinline__ void st2(float *x, float a, float b) { *reinterpret_cast<float2 *>(x) = make_float2(a, b); }
__device__ __forceinline__ void st2(__nv_bfloat16 *x, float a, float b) { *reinterpret_cast<uint32_t *>(x) = pack_bf16(a, b); }
// 8 adjacent elements (one 16-byte bf16 store / two 16-byte fp32 stores; 16-byte aligned)
__device__ __forceinline__ void st8(float *x, const float (&v)[8]) {
    reinterpret_cast<float4 *>(x)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4 *>(x)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void st8(__nv_bfloat16 *x, const float (&v)[8]) {
    *reinterpret_cast<uint4 *>(x) = make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
}
// row stride of a [64][KP] shared array of element type ST: fp32 rows odd in 32-bit words (no bank
// conflicts for column walks); bf16 rows padded by 16 bytes (16-byte aligned for vector and cp.async
// access, and the mma fragment pattern, 8 rows x 4 words, hits 32 distinct banks)
template <class ST, int KP>
__host__ __device__ constexpr int ld_of() { return sizeof(ST) == 2 ? KP + 8 : KP + 1; }
// row stride of the fp32 G2 array beside them: odd on the exact path; on the bf16 path a multiple of
// 8 words, so that the fragment pattern's channel pairs are conflict-free 8-byte loads
template <class ST, int KP>
__host__ __device__ constexpr int ldg_of() { return sizeof(ST) == 2 ? KP + 8 : KP + 1; }

// Chunk-local cumulative sum of the gate per channel d < NCH of sG ([64][LDG]), in place, in log2
// units relative to row 31, accumulated in double; sStart[d] = G2 of the virtual row -1.
template <int NCH, int LDG>
__device__ __forceinline__ void gate_cumsum(float *sG, float *sStart) {
    for (int d = threadIdx.x; d < NCH; d += NT) {
        double acc = 0;
        for (int r = 32; r < CS; r++) {
            acc += sG[r * LDG + d];
            sG[r * LDG + d] = (float)(acc * 1.4426950408889634);
        }
        acc = 0;
        for (int r = 31; r >= 0; r--) {
            double gr = sG[r * LDG + d];
            sG[r * LDG + d] = (float)(acc * 1.4426950408889634);
            acc -= gr;
        }
        sStart[d] = (float)(acc * 1.4426950408889634);
    }
}

// The common end of load_keys / load_keys_vec, after the raw q, k, b, g are in shared memory: the
// q/k L2 norm, then the chunk-local cumulative gate G2 (log2 units, relative to row 31) and sStart.
template <class ST, int KP>
__device__ __forceinline__ void keys_finish(const ChunkParams &p, ST *sQ, ST *sK, float *sG, float *sStart,
                                            float *rnorm) {
    constexpr int LDK = ld_of<ST, KP>(), LDG = ldg_of<ST, KP>();
    __syncthreads();
    if (p.l2) { // x <- x / sqrt(sum x^2 + 1e-6), one warp per row
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        for (int r = warp; r < CS; r += NT / 32) {
            float sq = 0, sk = 0;
            for (int d = lane; d < KP; d += 32) {
                float a = sget(&sQ[r * LDK + d]), c = sget(&sK[r * LDK + d]);
                sq += a * a;
                sk += c * c;
            }
            sq = warp_sum(sq);
            sk = warp_sum(sk);
            float rq = 1.0f / sqrtf(sq + 1e-6f), rk = 1.0f / sqrtf(sk + 1e-6f);
            if (rnorm && lane == 0) { // kept for k_bk_tc, which sees half of each row
                rnorm[r] = rq;
                rnorm[CS + r] = rk;
            }
            for (int d = lane; d < KP; d += 32) {
                sset(&sQ[r * LDK + d], sget(&sQ[r * LDK + d]) * rq);
                sset(&sK[r * LDK + d], sget(&sK[r * LDK + d]) * rk);
            }
        }
    }
    gate_cumsum<KP, LDG>(sG, sStart);
    __syncthreads();
}

template <class Tin, int KP, class ST = float>
__device__ void load_keys(const ChunkParams &p, size_t tok0, int len, int h, ST *sQ, ST *sK, ST *sB,
                          float *sG, float *sStart, float *rnorm = nullptr) {
    constexpr int LDK = ld_of<ST, KP>(), LDG = ldg_of<ST, KP>();
    const Tin *q = (const Tin *)p.q, *k = (const Tin *)p.k, *b = (const Tin *)p.b;
    for (int i = threadIdx.x; i < CS * KP; i += NT) {
        int r = i / KP, d = i % KP;
        float qv = 0, kv = 0, bv = 0, gv = 0;
        if (r < len && d < p.K) {
            size_t idx = ((tok0 + r) * p.H + h) * p.K + d;
            qv = ldf(q, idx);
            kv = ldf(k, idx);
            bv = ldf(b, idx);
            gv = p.g[idx];
            if (p.gate) gv = gate_fwd(gv, p.A_log[h], p.dt_bias[(size_t)h * p.K + d], p.lb);
        }
        sset(&sQ[r * LDK + d], qv);
        sset(&sK[r * LDK + d], kv);
        sset(&sB[r * LDK + d], bv);
        sG[r * LDG + d] = gv;
    }
    keys_finish<ST, KP>(p, sQ, sK, sG, sStart, rnorm);
}

// Register-staged copy of a dense ROWS x COLS fp32 tile (row stride gld floats in global memory)
// into shared memory (row stride ld). load() issues every 16-byte load at once and store() writes
// them out, so the sequential kernels keep the next chunk's tiles in flight while they compute.
template <int ROWS, int COLS>
struct Tile {
    static constexpr int N4 = ROWS * COLS / 4, PER = (N4 + NT - 1) / NT;
    float4 v[PER];
    __device__ __forceinline__ void load(const float *src, size_t gld) {
#pragma unroll
        for (int i = 0; i < PER; i++) {
            const int q = threadIdx.x + i * NT, e = q * 4;
            if (N4 % NT == 0 || q < N4)
                v[i] = __ldg(reinterpret_cast<const float4 *>(src + (size_t)(e / COLS) * gld + e % COLS));
        }
    }
    __device__ __forceinline__ void store(float *dst, int ld) const {
#pragma unroll
        for (int i = 0; i < PER; i++) {
            const int q = threadIdx.x + i * NT, e = q * 4;
            if (N4 % NT == 0 || q < N4) {
                float *o = dst + (e / COLS) * ld + e % COLS;
                o[0] = v[i].x;
                o[1] = v[i].y;
                o[2] = v[i].z;
                o[3] = v[i].w;
            }
        }
    }
};
template <int ROWS, int COLS>
__device__ __forceinline__ void stage(float *dst, int ld, const float *src, size_t gld) {
    Tile<ROWS, COLS> t;
    t.load(src, gld);
    t.store(dst, ld);
}
// the same from a bf16 tile (the fast path's workspace), 8-byte loads
template <int ROWS, int COLS>
__device__ __forceinline__ void stage(float *dst, int ld, const __nv_bfloat16 *src, size_t gld) {
    for (int i = threadIdx.x; i < ROWS * COLS / 4; i += NT) {
        const int e = i * 4, r = e / COLS, c = e % COLS;
        const uint2 u = __ldg(reinterpret_cast<const uint2 *>(src + (size_t)r * gld + c));
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.x));
        const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.y));
        float *o = dst + r * ld + c;
        o[0] = a.x;
        o[1] = a.y;
        o[2] = b.x;
        o[3] = b.y;
    }
}

// Z = w . v of one chunk and value head into shared rows [64][ldz] (zero past len and V)
template <class Tin, int VP, class ST>
__device__ __forceinline__ void load_z(const ChunkParams &p, size_t tok0, int len, int hv, ST *sZ, int ldz) {
    const Tin *v = (const Tin *)p.v, *w = (const Tin *)p.w;
    for (int i = threadIdx.x; i < CS * VP; i += NT) {
        int r = i / VP, e = i % VP;
        float z = 0;
        if (r < len && e < p.V) {
            size_t idx = ((tok0 + r) * p.HV + hv) * p.V + e;
            z = ldf(w, idx) * ldf(v, idx);
        }
        sset(&sZ[r * ldz + e], z);
    }
}

// Block row IB of the solve below: A_{IB,c} = A_{IB,IB} (- sum_{s<16IB} T_{IB,s} A_{s,c}) for the
// columns c < 16 IB; T of row block IB is read into X before A overwrites it.
template <int IB>
__device__ __forceinline__ void solve_merge_row(float *sTA, float *sX) {
    mm<16, 16 * IB, 1, IB>(
        16 * IB, [&](int r, int s) { return sTA[(16 * IB + r) * 65 + s]; }, [&](int s, int cc) { return sTA[s * 65 + cc]; },
        [&](int r, int cc, float acc) { sX[r * 65 + cc] = -acc; });
    __syncthreads();
    mm<16, 16 * IB, 1, IB>(
        16, [&](int r, int m) { return sTA[(16 * IB + r) * 65 + 16 * IB + m]; }, [&](int m, int cc) { return sX[m * 65 + cc]; },
        [&](int r, int cc, float acc) { sTA[(16 * IB + r) * 65 + cc] = acc; });
    __syncthreads();
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

// The same block row on tensor cores (the bf16 paths): X = T_{IB,<IB} A_{<IB,<IB}, then
// A_{IB,<IB} = -A_{IB,IB} X, every operand split into bf16 hi + lo (3 mma, ~2^-16 relative: A is
// rounded to bf16 before each later use). Warp j < 2 IB owns the 8 columns 8j .. 8j+7; its X tile
// passes through sX to become the B operand of the second product.
template <int IB>
__device__ __forceinline__ void solve_merge_row_tc(float *sTA, float *sX) {
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3, R = 16 * IB;
    float y[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (wp < 2 * IB) {
        const int n = 8 * wp + gq;
        float x[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int k0 = 0; k0 < 16 * IB; k0 += 16)
            mma_split3_s65(x, sTA + (R + gq) * 65 + k0 + 2 * tq, sTA + (k0 + 2 * tq) * 65 + n);
        float *xs = sX + 8 * wp; // [16][65]: this warp's columns
        xs[gq * 65 + 2 * tq] = x[0];
        xs[gq * 65 + 2 * tq + 1] = x[1];
        xs[(gq + 8) * 65 + 2 * tq] = x[2];
        xs[(gq + 8) * 65 + 2 * tq + 1] = x[3];
        __syncwarp();
        mma_split3_s65(y, sTA + (R + gq) * 65 + R + 2 * tq, xs + 2 * tq * 65 + gq);
    }
    __syncthreads(); // every read of T_{IB,<IB} is done
    if (wp < 2 * IB) {
        float *o = sTA + (R + gq) * 65 + 8 * wp + 2 * tq;
        o[0] = -y[0];
        o[1] = -y[1];
        o[8 * 65] = -y[2];
        o[8 * 65 + 1] = -y[3];
    }
    __syncthreads();
}

// A = (I+T)^-1 in place in sTA ([64][65] fp32, T strictly lower), by 16x16 blocks, with scratch sX
// ([16][65]). Diagonal blocks: forward substitution, A_ic = [i==c] - sum_{j<i} T_ij A_jc (A_jc = 0
// for j < c), warp d < 4 for block d, lane c < 16 for column c, the column in registers (the
// 16-step chain runs at register latency; lanes 16..31 repeat lanes 0..15 and do not store). The
// block rows below: exact fp32 (TC false) or split-bf16 tensor cores (TC true, the bf16 paths).
template <bool TC>
__device__ __forceinline__ void solve_unit_lower(float *sTA, float *sX) {
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (wp < 4) {
        const int o = 16 * wp, cc = lane % 16;
        float a[16];
#pragma unroll
        for (int i = 0; i < 16; i++) {
            float v = i == cc ? 1.0f : 0.0f;
#pragma unroll
            for (int j = 0; j < i; j++) v -= sTA[(o + i) * 65 + o + j] * a[j];
            a[i] = i < cc ? 0.0f : v;
        }
        __syncwarp(); // every lane's reads of T_dd precede the stores of A_dd
        if (lane < 16)
#pragma unroll
            for (int i = 0; i < 16; i++) sTA[(o + i) * 65 + o + cc] = a[i];
    }
    __syncthreads();
    PREP_MARK(4);
    if constexpr (TC) {
        solve_merge_row_tc<1>(sTA, sX);
        solve_merge_row_tc<2>(sTA, sX);
        solve_merge_row_tc<3>(sTA, sX);
    } else {
        solve_merge_row<1>(sTA, sX);
        solve_merge_row<2>(sTA, sX);
        solve_merge_row<3>(sTA, sX);
    }
}

// ------------------------------------------------------------------------------------------------
// k_prep: per (chunk, hv): Aqk, A = (I+T)^-1, Y, U, Qg, Kg, gamma_last (and A when bwd)
// ------------------------------------------------------------------------------------------------
// Shared memory: q, k, b (then E) as ST (bf16 on the tensor-core path: the values the official
// kernels round to bf16 anyway; fp32 on the exact path), G2 fp32, one 64x64 fp32 array that holds
// T and then A (solved in place), gamma reference. The bf16 layout fits two blocks per SM.
template <class ST, int KP>
constexpr int prep_smem_bytes() { return 3 * CS * ld_of<ST, KP>() * (int)sizeof(ST) + CS * ldg_of<ST, KP>() * 4 + CS * 65 * 4 + KP * 4; }
// That layout, shared by k_prep and k_prep_tc: q, k, b [64][ld_of], G2 [64][ldg_of], T/A [64][65],
// gamma reference [KP]. Z = w.v later takes the q, k region.
template <class ST, int KP, int VP>
struct PrepSmem {
    static_assert(2 * CS * ld_of<ST, KP>() >= CS * ld_of<ST, VP>(), "Z does not fit in the q,k region");
    ST *q, *k, *b;
    float *g, *ta, *st;
    __device__ explicit PrepSmem(float *sm)
        : q((ST *)sm), k(q + CS * ld_of<ST, KP>()), b(k + CS * ld_of<ST, KP>()), g((float *)(b + CS * ld_of<ST, KP>())),
          ta(g + CS * ldg_of<ST, KP>()), st(ta + CS * 65) {}
};

template <class Tin, int KP, int VP>
__global__ __launch_bounds__(NT) void k_prep(ChunkParams p, int bwd) {
    extern __shared__ float sm[];
    constexpr bool TC = is_bf16<Tin>::value;
    typedef typename std::conditional<TC, __nv_bfloat16, float>::type ST;
    constexpr int LDQ = ld_of<ST, KP>(), LDG = ldg_of<ST, KP>(), LDZ = ld_of<ST, VP>();
    const PrepSmem<ST, KP, VP> L(sm);
    ST *sQ = L.q, *sK = L.k, *sB = L.b;
    float *sG = L.g, *sTA = L.ta, *sSt = L.st;
    float *sX = (float *)sK; // the solve's scratch [16][65]: k is dead by then
    const int c = blockIdx.x, hv = blockIdx.y, h = hv / p.G;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    const size_t ch = (size_t)c * p.HV + hv;
    load_keys<Tin, KP, ST>(p, tok0, len, h, sQ, sK, sB, sG, sSt);

    // scores, exact per element: Aqk_rs = scale sum_d q_rd k_sd 2^(G2_rd-G2_sd) (s<=r),
    // T_rs = sum_d b_rd k_rd k_sd 2^(...) (s<r). Thread tile: rows ty+16i, columns tx+16j, j<=i.
    {
        const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
        float aq[4][4], at[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) aq[i][j] = at[i][j] = 0.0f;
        for (int d = 0; d < KP; d++) {
            float qr[4], bkr[4], gr[4], ks[4], gs[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int r = ty + 16 * i;
                qr[i] = sget(&sQ[r * LDQ + d]);
                bkr[i] = sget(&sB[r * LDQ + d]) * sget(&sK[r * LDQ + d]);
                gr[i] = sG[r * LDG + d];
                ks[i] = sget(&sK[(tx + 16 * i) * LDQ + d]);
                gs[i] = sG[(tx + 16 * i) * LDG + d];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j <= i; j++) {
                    float e = exp2f(fminf(gr[i] - gs[j], 0.0f));
                    float ke = ks[j] * e;
                    aq[i][j] = fmaf(qr[i], ke, aq[i][j]);
                    at[i][j] = fmaf(bkr[i], ke, at[i][j]);
                }
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int r = ty + 16 * i, s = tx + 16 * j;
                p.Aqk[ch * CS * CS + r * CS + s] = (j <= i && s <= r) ? p.scale * aq[i][j] : 0.0f;
                sTA[r * 65 + s] = (j <= i && s < r) ? at[i][j] : 0.0f;
            }
    }
    __syncthreads();

    // Qg, Kg, gamma_last to global; the pseudo-key E = gamma . b . k replaces b in shared memory
    for (int i = threadIdx.x; i < CS * KP; i += NT) {
        int r = i / KP, d = i % KP;
        float g2 = sG[r * LDG + d], gl = sG[(CS - 1) * LDG + d], gam = exp2f(g2 - sSt[d]);
        float kv = sget(&sK[r * LDQ + d]);
        size_t o = ch * CS * KP + i;
        p.Qg[o] = p.scale * sget(&sQ[r * LDQ + d]) * gam;
        p.Kg[o] = kv * exp2f(gl - g2);
        sset(&sB[r * LDQ + d], gam * sget(&sB[r * LDQ + d]) * kv);
    }
    for (int d = threadIdx.x; d < KP; d += NT) p.Gl[ch * KP + d] = exp2f(sG[(CS - 1) * LDG + d] - sSt[d]);
    __syncthreads(); // k is dead from here: its region holds the solve's scratch

    solve_unit_lower<false>(sTA, sX); // A = (I+T)^-1 in place
    if (bwd)
        for (int i = threadIdx.x; i < CS * CS; i += NT) p.A[ch * CS * CS + i] = sTA[(i / CS) * 65 + i % CS];

    // Y = A E
    mmx<TC, 64, KP, 4, KP / 16>(
        CS, [&](int r, int s) { return sTA[r * 65 + s]; }, [&](int s, int d) { return sget(&sB[s * LDQ + d]); },
        [&](int r, int d, float acc) { p.Y[ch * CS * KP + r * KP + d] = acc; });
    // Z = w . v into the q/k region (no longer read), then U = A Z
    ST *sZ = sQ;
    load_z<Tin, VP>(p, tok0, len, hv, sZ, LDZ);
    __syncthreads();
    mmx<TC, 64, VP, 4, VP / 16>(
        CS, [&](int r, int s) { return sTA[r * 65 + s]; }, [&](int s, int e) { return sget(&sZ[s * LDZ + e]); },
        [&](int r, int e, float acc) { p.U[ch * CS * VP + r * VP + e] = acc; });
}

// ------------------------------------------------------------------------------------------------
// k_prep_tc: k_prep for bf16 inputs (the tensor-core path; fp32 inputs keep k_prep, the exact test
// path). The 16x16 score blocks use a reference row per row block, ref = 16 i:
//     2^(G2_r - G2_s) = 2^(G2_r - G2_ref) * 2^(G2_ref - G2_s),   r >= ref > s,
// both exponents <= 0 for the off-diagonal blocks (G2 is non-increasing), so strong decay
// underflows to 0 but never overflows; the diagonal blocks take the same path when their decay span
// allows, else k_prep's exact per-element loop. Each block is then a 16x16x128 product on tensor
// cores, the q-side factor shared by Aqk and T (and by the two blocks of a row pair). Each fp32
// operand x is split into bf16 hi + lo (x - hi) and the product is ah*bh + ah*bl + al*bh (3 mma, ~16
// mantissa bits; the official kernels use TF32, ~11, GDN2.md §11.3). The math after the scores (Qg,
// Kg, E, the solve, Y, U) is k_prep's, with the solve's block rows on tensor cores too and the
// operands by cp.async / ldmatrix (phase costs: docs/CUDA.md).

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


// load_keys for bf16 inputs with K == KP and 16-byte aligned q, k, b, g: the four tiles arrive by
// cp.async, all in flight at once (one memory round trip, no registers held), then
// - q, k: the L2 norm, the KP/8 threads of a row adjacent lanes with 8 channels each (16-byte shared
//   accesses), the sums of squares by shuffles within those lanes;
// - g: thread (row group rg, channel quad c4) takes rows rg*RPG .. +RPG-1 of 4 channels. The
//   cumulative sum is P_r = sum_{j<=r} g_j in double (a local pass, the group totals through
//   shared memory, a second local pass from the group's offset); G2_r = (P_r - P_31) log2(e), the
//   values load_keys computes outward from row 31 (the same double sums, added in another order).
// dtot is scratch of NT/(KP/4) x KP doubles (the caller's T/A array, unused until the scores).
template <int KP>
__device__ void load_keys_vec(const ChunkParams &p, size_t tok0, int len, int h, __nv_bfloat16 *sQ, __nv_bfloat16 *sK,
                             __nv_bfloat16 *sB, float *sG, float *sStart, float *rnorm, double *dtot) {
    constexpr int LDK = ld_of<__nv_bfloat16, KP>(), LDG = ldg_of<__nv_bfloat16, KP>(), P8 = CS * KP / 8 / NT, TPR = KP / 8;
    constexpr int CPL = KP / 4, NG = NT / CPL, RPG = CS / NG; // g: channel quads, row groups, rows per group
    static_assert(P8 * 8 * NT == CS * KP && NG * RPG == CS && 32 % RPG == 0, "vector tiling");
    static_assert(LDK % 8 == 0 && LDG % 4 == 0, "16-byte shared rows");
    typedef __nv_bfloat16 bf;
    const size_t g0 = (tok0 * p.H + h) * KP, gld = (size_t)p.H * KP;
    cp_tile<CS, KP, NT>(sQ, LDK, (const bf *)p.q + g0, gld, len);
    cp_tile<CS, KP, NT>(sK, LDK, (const bf *)p.k + g0, gld, len);
    cp_tile<CS, KP, NT>(sB, LDK, (const bf *)p.b + g0, gld, len);
    cp_tile<CS, KP, NT>(sG, LDG, p.g + g0, gld, len);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    if (p.l2) { // x <- x / sqrt(sum x^2 + 1e-6) per row
#pragma unroll
        for (int i = 0; i < P8; i++) {
            const int e = (threadIdx.x + i * NT) * 8, r = e / KP, d = e % KP;
            uint4 vq = *reinterpret_cast<const uint4 *>(&sQ[r * LDK + d]), vk = *reinterpret_cast<const uint4 *>(&sK[r * LDK + d]);
            uint32_t *a = reinterpret_cast<uint32_t *>(&vq), *c = reinterpret_cast<uint32_t *>(&vk);
            float ssq = 0.0f, ssk = 0.0f;
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&a[u]));
                const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&c[u]));
                ssq += x.x * x.x + x.y * x.y;
                ssk += y.x * y.x + y.y * y.y;
            }
#pragma unroll
            for (int o = TPR / 2; o > 0; o >>= 1) {
                ssq += __shfl_xor_sync(0xffffffffu, ssq, o);
                ssk += __shfl_xor_sync(0xffffffffu, ssk, o);
            }
            const float rq = 1.0f / sqrtf(ssq + 1e-6f), rk = 1.0f / sqrtf(ssk + 1e-6f);
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&a[u]));
                const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&c[u]));
                a[u] = pack_bf16(x.x * rq, x.y * rq);
                c[u] = pack_bf16(y.x * rk, y.y * rk);
            }
            *reinterpret_cast<uint4 *>(&sQ[r * LDK + d]) = vq;
            *reinterpret_cast<uint4 *>(&sK[r * LDK + d]) = vk;
            if (rnorm && threadIdx.x % TPR == 0) { // kept for k_bk_tc, which sees half of each row
                rnorm[r] = rq;
                rnorm[CS + r] = rk;
            }
        }
    }
    const int c4 = threadIdx.x % CPL, rg = threadIdx.x / CPL, d0 = 4 * c4;
    float gv[RPG][4];
#pragma unroll
    for (int i = 0; i < RPG; i++) {
        const float4 x = *reinterpret_cast<const float4 *>(&sG[(rg * RPG + i) * LDG + d0]);
        gv[i][0] = x.x; gv[i][1] = x.y; gv[i][2] = x.z; gv[i][3] = x.w;
    }
    if (p.gate)
#pragma unroll
        for (int i = 0; i < RPG; i++)
            if (rg * RPG + i < len)
#pragma unroll
                for (int j = 0; j < 4; j++) gv[i][j] = gate_fwd(gv[i][j], p.A_log[h], p.dt_bias[(size_t)h * p.K + d0 + j], p.lb);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        double t = 0.0;
#pragma unroll
        for (int i = 0; i < RPG; i++) t += gv[i][j];
        dtot[rg * KP + d0 + j] = t;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < 4; j++) {
        double acc = 0.0, p31 = 0.0; // P before this group; P_31 (the groups of rows 0..31)
        for (int gi = 0; gi < NG; gi++) {
            const double t = dtot[gi * KP + d0 + j];
            if (gi < rg) acc += t;
            if (gi < 32 / RPG) p31 += t;
        }
#pragma unroll
        for (int i = 0; i < RPG; i++) {
            acc += gv[i][j];
            gv[i][j] = (float)((acc - p31) * 1.4426950408889634);
        }
        if (rg == 0) sStart[d0 + j] = (float)(-p31 * 1.4426950408889634);
    }
#pragma unroll
    for (int i = 0; i < RPG; i++)
        *reinterpret_cast<float4 *>(&sG[(rg * RPG + i) * LDG + d0]) = make_float4(gv[i][0], gv[i][1], gv[i][2], gv[i][3]);
    __syncthreads();
}

template <class Tin, int KP, int VP, class WT>
__global__ __launch_bounds__(NT) void k_prep_tc(ChunkParams p, int bwd) {
    static_assert(is_bf16<Tin>::value, "k_prep_tc is the bf16 path; fp32 inputs use k_prep");
    extern __shared__ float sm[];
    typedef __nv_bfloat16 ST;
    constexpr int LDQ = ld_of<ST, KP>(), LDG = ldg_of<ST, KP>(), LDZ = ld_of<ST, VP>();
    static_assert(LDQ % 2 == 0 && LDZ % 2 == 0, "bf16 pair loads need even row strides");
    const PrepSmem<ST, KP, VP> L(sm);
    ST *sQ = L.q, *sK = L.k, *sB = L.b;
    float *sG = L.g, *sTA = L.ta, *sSt = L.st;
    float *sX = sG; // the solve's scratch [16][65]: G2 is dead by then, q and k hold v and w
    const int c = blockIdx.x, hv = blockIdx.y, h = hv / p.G;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    const size_t ch = (size_t)c * p.HV + hv;
    PREP_MARK(0);
    WT *gA = (WT *)p.Aqk + ch * CS * CS;
    const bool vec = p.K == KP && ((uintptr_t)p.q | (uintptr_t)p.k | (uintptr_t)p.b | (uintptr_t)p.g) % 16 == 0;
    float *rnorm = bwd && is_bf16<WT>::value && p.l2 ? p.Rn + ch * 2 * CS : nullptr; // the fast backward's row norms
    if (vec) load_keys_vec<KP>(p, tok0, len, h, sQ, sK, sB, sG, sSt, rnorm, (double *)sTA);
    else load_keys<Tin, KP, ST>(p, tok0, len, h, sQ, sK, sB, sG, sSt, rnorm);
    PREP_MARK(1);
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;

    // Score blocks (16 x 16, block row bi, block column bj <= bi) on tensor cores, reference row
    // ref = 16 bi: A operand rows r = ref + gq (+8): x_rd = 2^(G2_rd - G2_ref,d) (<= 1), q_rd x_rd and
    // b_rd k_rd x_rd; B operand columns s = 16 bj + 8 f + gq: k_sd 2^(G2_ref,d - G2_sd), <= 1 for
    // bj < bi. On a diagonal block (bj = bi) that factor is >= 1: it is used only when the block's
    // decay span max_d (G2_ref,d - G2_ref+15,d) is <= 64 (no overflow, products >= 2^-64 stay
    // normal), and the entries above the diagonal are masked; a block with a longer span is summed
    // exactly per element instead (one exp2 per term, every exponent <= 0). score_row does the nbv
    // (1 or 2) column blocks from bj0 of block row bi with the A fragments shared (a diagonal one is
    // stored only if dok).
    auto score_row = [&](int bi, int bj0, int nbv, bool dok) {
        constexpr int NB = 2;
        const int ref = 16 * bi;
        float cq[NB][2][4], ct[NB][2][4];
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int f = 0; f < 2; f++)
#pragma unroll
                for (int e = 0; e < 4; e++) cq[nb][f][e] = ct[nb][f][e] = 0.0f;
#pragma unroll 2
        for (int k0 = 0; k0 < KP; k0 += 16) {
            uint32_t qh[4], ql[4], th[4], tl[4];
#pragma unroll
            for (int m = 0; m < 4; m++) { // fragment register m: row gq (+8 if m odd), channels +8 if m >= 2
                const int r = ref + gq + (m & 1) * 8, d = k0 + 2 * tq + (m >> 1) * 8;
                const float2 gr = ld2(&sG[r * LDG + d]), gf = ld2(&sG[ref * LDG + d]);
                const float x0 = exp2f(fminf(gr.x - gf.x, 0.0f)), x1 = exp2f(fminf(gr.y - gf.y, 0.0f));
                const float2 qv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sQ[r * LDQ + d]));
                const float2 kv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sK[r * LDQ + d]));
                const float2 bv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sB[r * LDQ + d]));
                split_bf16(qv.x * x0, qv.y * x1, qh[m], ql[m]);
                split_bf16(bv.x * kv.x * x0, bv.y * kv.y * x1, th[m], tl[m]);
            }
#pragma unroll
            for (int nb = 0; nb < NB; nb++) {
                if (nb >= nbv) break;
                const int bj = bj0 + nb;
                const bool diag = bj == bi;
#pragma unroll
                for (int f = 0; f < 2; f++) {
                    const int s = 16 * bj + 8 * f + gq;
                    uint32_t bh[2], bl[2];
#pragma unroll
                    for (int m = 0; m < 2; m++) { // b0: channels 2tq, 2tq+1; b1: +8
                        const int d = k0 + 2 * tq + 8 * m;
                        const float2 gf = ld2(&sG[ref * LDG + d]), gs = ld2(&sG[s * LDG + d]);
                        const float e0 = gf.x - gs.x, e1 = gf.y - gs.y;
                        const float x0 = exp2f(diag ? e0 : fminf(e0, 0.0f)), x1 = exp2f(diag ? e1 : fminf(e1, 0.0f));
                        const float2 kv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sK[s * LDQ + d]));
                        split_bf16(kv.x * x0, kv.y * x1, bh[m], bl[m]);
                    }
                    mma_split3(cq[nb][f], qh, ql, bh[0], bh[1], bl[0], bl[1]);
                    mma_split3(ct[nb][f], th, tl, bh[0], bh[1], bl[0], bl[1]);
                }
            }
        }
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            const int bj = bj0 + nb;
            const bool diag = bj == bi;
            if (nb >= nbv || (diag && !dok)) continue;
#pragma unroll
            for (int f = 0; f < 2; f++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = ref + gq + 8 * (e >> 1), s = 16 * bj + 8 * f + 2 * tq + (e & 1);
                    sset(&gA[r * CS + s], !diag || s <= r ? p.scale * cq[nb][f][e] : 0.0f);
                    sTA[r * 65 + s] = !diag || s < r ? ct[nb][f][e] : 0.0f;
                }
        }
    };
    // the exact sum of diagonal block bd's 136 lower entries by one warp (long decay spans only)
    auto score_diag_exact = [&](int bd) {
        for (int pi = lane; pi < 136; pi += 32) {
            int rl = (int)((sqrtf(8.0f * pi + 1.0f) - 1.0f) * 0.5f);
            if ((rl + 1) * (rl + 2) / 2 <= pi) rl++; // guard the float sqrt at exact squares
            if (rl * (rl + 1) / 2 > pi) rl--;
            const int sl = pi - rl * (rl + 1) / 2, r = 16 * bd + rl, s = 16 * bd + sl;
            float aq = 0.0f, at = 0.0f;
#pragma unroll 4
            for (int d = 0; d < KP; d += 2) {
                const float2 qv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sQ[r * LDQ + d]));
                const float2 kr = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sK[r * LDQ + d]));
                const float2 br = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sB[r * LDQ + d]));
                const float2 ks = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sK[s * LDQ + d]));
                const float e0 = ks.x * exp2f(fminf(sG[r * LDG + d] - sG[s * LDG + d], 0.0f));
                const float e1 = ks.y * exp2f(fminf(sG[r * LDG + d + 1] - sG[s * LDG + d + 1], 0.0f));
                aq = fmaf(qv.x, e0, aq);
                at = fmaf(br.x * kr.x, e0, at);
                aq = fmaf(qv.y, e1, aq);
                at = fmaf(br.y * kr.y, e1, at);
            }
            sset(&gA[r * CS + s], p.scale * aq);
            sTA[r * 65 + s] = sl < rl ? at : 0.0f;
        }
        for (int i = lane; i < 256; i += 32) { // the upper triangle
            const int rl = i / 16, sl = i % 16;
            if (sl > rl) {
                sset(&gA[(16 * bd + rl) * CS + 16 * bd + sl], 0.0f);
                sTA[(16 * bd + rl) * 65 + 16 * bd + sl] = 0.0f;
            }
        }
    };
    // whether diagonal block bd's decay span allows the tensor-core path
    auto diag_tc_ok = [&](int bd) {
        bool ok = true;
        for (int d = lane; d < KP; d += 32) ok &= sG[16 * bd * LDG + d] - sG[(16 * bd + 15) * LDG + d] <= 64.0f;
        return __all_sync(0xffffffffu, ok);
    };
    // The 10 blocks by 6 warps, pairs in one block row sharing the A fragments on warps 0..3, one per
    // scheduler: (3,0)(3,1) | (3,2)(3,3) | (2,0)(2,1) | (1,0)(1,1); single blocks (2,2) | (0,0) on
    // warps 5, 6; warps 4, 7 zero the blocks above the diagonal. One call site, so one copy of the
    // code (a diagonal block whose span is too long is computed, dropped and summed exactly).
    if (wp != 4 && wp != 7) {
        const int bi = wp < 2 ? 3 : wp == 2 || wp == 5 ? 2 : wp == 3 ? 1 : 0;
        const int bj0 = wp == 1 || wp == 5 ? 2 : 0, nbv = wp < 4 ? 2 : 1;
        const bool dok = bj0 + nbv - 1 != bi || diag_tc_ok(bi);
        score_row(bi, bj0, nbv, dok);
        if (!dok) score_diag_exact(bi);
    } else { // float4 groups never straddle a 16-column block
        for (int i = threadIdx.x % 32 + (wp == 7) * 32; i < CS * CS / 4; i += 64) {
            const int r = i / 16, s = (i % 16) * 4;
            if (s / 16 > r / 16) {
                st2(&gA[r * CS + s], 0.0f, 0.0f);
                st2(&gA[r * CS + s + 2], 0.0f, 0.0f);
                sTA[r * 65 + s] = sTA[r * 65 + s + 1] = sTA[r * 65 + s + 2] = sTA[r * 65 + s + 3] = 0.0f;
            }
        }
    }
    __syncthreads();
    PREP_MARK(2);

    // Qg = scale q gamma, Kg = k gamma_last/gamma, gamma_last to global; the pseudo-key E = gamma b k
    // replaces b in shared memory (and goes to global for the fast backward's dY E^T, k_bv_tc).
    // Thread = one channel pair (consecutive across the warp: 4-byte stores coalesce, shared reads
    // hit distinct banks), every NT/(KP/2)-th row; G2 of the last row and sStart stay in registers.
    {
        constexpr int NPAIR = KP / 2, RSTEP = NT / NPAIR;
        const int d = 2 * (threadIdx.x % NPAIR);
        const float2 gst = ld2(&sSt[d]), glast = ld2(&sG[(CS - 1) * LDG + d]);
        const float st0 = gst.x, st1 = gst.y, gl0 = glast.x, gl1 = glast.y;
        for (int r = threadIdx.x / NPAIR; r < CS; r += RSTEP) {
            const float2 qv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sQ[r * LDQ + d]));
            const float2 kv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sK[r * LDQ + d]));
            const float2 bv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sB[r * LDQ + d]));
            const float2 gr = ld2(&sG[r * LDG + d]);
            const float g0 = gr.x, g1 = gr.y;
            const float gm0 = exp2f(g0 - st0), gm1 = exp2f(g1 - st1);
            const size_t o = ch * CS * KP + r * KP + d;
            st2((WT *)p.Qg + o, p.scale * qv.x * gm0, p.scale * qv.y * gm1);
            st2((WT *)p.Kg + o, kv.x * exp2f(gl0 - g0), kv.y * exp2f(gl1 - g1));
            const uint32_t e = pack_bf16(gm0 * bv.x * kv.x, gm1 * bv.y * kv.y);
            *reinterpret_cast<uint32_t *>(&sB[r * LDQ + d]) = e;
            if (bwd && is_bf16<WT>::value) *reinterpret_cast<uint32_t *>((bf16 *)p.E + o) = e;
        }
        if (threadIdx.x < NPAIR) st2(p.Gl + ch * KP + d, exp2f(gl0 - st0), exp2f(gl1 - st1));
    }
    __syncthreads(); // q, k, G2 are dead from here
    PREP_MARK(3);

    // v and w of the chunk (for Z = w . v below), issued now so that they fly during the solve and Y:
    // by cp.async into the dead q, k region when both tiles fit there (KP >= VP), else by 16-byte
    // register loads
    const Tin *v = (const Tin *)p.v, *w = (const Tin *)p.w;
    constexpr bool ASYNC_VW = KP >= VP;
    constexpr int PZ = ASYNC_VW ? 1 : CS * VP / 8 / NT;
    static_assert(ASYNC_VW || (PZ * 8 * NT == CS * VP && LDZ % 2 == 0), "vector tiling of v, w");
    const bool vz = p.V == VP && ((uintptr_t)v | (uintptr_t)w) % 16 == 0;
    ST *sZ = sQ, *sWs = sQ + CS * LDZ; // Z (v staged there first) and w: [64][LDZ] each, below sB
    uint4 zv[PZ], zw[PZ];
    if (vz && ASYNC_VW) {
        const size_t g0 = (tok0 * p.HV + hv) * VP;
        cp_tile<CS, VP, NT>(sZ, LDZ, (const bf16 *)v + g0, (size_t)p.HV * VP, len);
        cp_tile<CS, VP, NT>(sWs, LDZ, (const bf16 *)w + g0, (size_t)p.HV * VP, len);
        cp_async_commit();
    } else if (vz)
#pragma unroll
        for (int i = 0; i < PZ; i++) {
            const int e = (threadIdx.x + i * NT) * 8, r = e / VP, c = e % VP;
            zv[i] = zw[i] = make_uint4(0u, 0u, 0u, 0u);
            if (r < len) {
                const size_t idx = ((tok0 + r) * p.HV + hv) * VP + c;
                zv[i] = __ldg(reinterpret_cast<const uint4 *>(v + idx));
                zw[i] = __ldg(reinterpret_cast<const uint4 *>(w + idx));
            }
        }

    solve_unit_lower<true>(sTA, sX); // A = (I+T)^-1 in place
    PREP_MARK(5);
    if (bwd)
        for (int i = threadIdx.x; i < CS * CS; i += NT) sset((WT *)p.A + ch * CS * CS + i, sTA[(i / CS) * 65 + i % CS]);

    // Y = A E
    WT *gY = (WT *)p.Y + ch * CS * KP;
    float *gU = p.U + ch * CS * VP;
    uint32_t af[4][4];
    a64_frags(sTA, af);
    mm_a64<KP>(af, sB, LDQ, [&](int r, int d, float a0, float a1) { st2(&gY[r * KP + d], a0, a1); });
    PREP_MARK(6);
    // Z = w . v into the q/k region, then U = A Z
    if (vz && ASYNC_VW) {
        cp_async_wait<0>();
        // the same (row, 8 columns) per thread as cp_tile's: each thread reads only its own copies
        for (int i = threadIdx.x; i < CS * VP / 8; i += NT) {
            const int r = 8 * i / VP, c = 8 * i % VP;
            uint4 a = *reinterpret_cast<const uint4 *>(&sZ[r * LDZ + c]);
            const uint4 b = *reinterpret_cast<const uint4 *>(&sWs[r * LDZ + c]);
            uint32_t *pa = reinterpret_cast<uint32_t *>(&a);
            const uint32_t *pb = reinterpret_cast<const uint32_t *>(&b);
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&pa[u]));
                const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&pb[u]));
                pa[u] = pack_bf16(x.x * y.x, x.y * y.y);
            }
            *reinterpret_cast<uint4 *>(&sZ[r * LDZ + c]) = a;
        }
    } else if (vz) { // the 16-byte loads issued before the solve
#pragma unroll
        for (int i = 0; i < PZ; i++) {
            const int e = (threadIdx.x + i * NT) * 8, r = e / VP, c = e % VP;
            const uint32_t *pv = reinterpret_cast<const uint32_t *>(&zv[i]), *pw = reinterpret_cast<const uint32_t *>(&zw[i]);
            uint32_t *o = reinterpret_cast<uint32_t *>(&sZ[r * LDZ + c]);
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&pv[u]));
                const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&pw[u]));
                o[u] = pack_bf16(a.x * b.x, a.y * b.y);
            }
        }
    } else {
        load_z<Tin, VP>(p, tok0, len, hv, sZ, LDZ);
    }
    __syncthreads();
    mm_a64<VP>(af, sZ, LDZ, [&](int r, int e, float a0, float a1) { *reinterpret_cast<float2 *>(&gU[r * VP + e]) = make_float2(a0, a1); });
    PREP_MARK(7);
}


// ------------------------------------------------------------------------------------------------
// Intra-chunk VJPs of the two score products, on tensor cores (bf16 paths of k_bk and k_bk_tc).
// With X = dAqk (lower, diagonal included) or dT (strictly lower) and y = q or b.k, per row r and
// channel d:
//   dq_in_r  = scale sum_{s<=r} dAqk_rs k_s 2^(G2_r-G2_s),   E'_r = sum_{s<r} dT_rs k_s 2^(G2_r-G2_s)
//   dkt_r    = scale sum_{r2>=r} dAqk_r2,r q_r2 2^(G2_r2-G2_r) + sum_{r2>r} dT_r2,r b_r2 k_r2 2^(..)
// Warp w owns the 16 rows of block t = w / 2 and 32 channels from dbase; thread (gq, tq) holds the
// mma fragment elements r = 16t + gq (+8), d = dbase + 8f + 2tq (+1), f < 4. The sums over the other
// row blocks run on tensor cores (operands split into bf16 hi + lo, 3 mma: plain bf16 operands cost
// 5x in dA_log error) with a reference row per block, every exponent <= 0:
//   s in blocks j < t, ref = 16t:        2^(G2_r-G2_ref) sum_s X_rs [k_s 2^(G2_ref-G2_s)]
//   r2 in blocks i > t, ref = 16(t+1):   2^(G2_ref-G2_r) sum_r2 X_r2,r [y_r2 2^(G2_r2-G2_ref)]
// and the 16x16 diagonal block likewise when diag_tc and its decay span allows (below), else exactly
// per element (one exp2 per term). Shared arrays:
// sQ, sK, sB, sG [64][LDK] fp32, sdAqk and sdT [64][LDX] fp32. fe(h, f, r, d, dq_in, E', dkt) receives
// the pairs (d, d+1) of row r = 16t + gq + 8h, d = dbase + 8f + 2tq.
// ------------------------------------------------------------------------------------------------
// x[0], x[1] of a shared fp32 row with stride LD (x 8-byte aligned when LD is even)
template <int LD>
__device__ __forceinline__ float2 ld_pair(const float *x) {
    if constexpr (LD % 2 == 0) return *reinterpret_cast<const float2 *>(x);
    else return make_float2(x[0], x[1]);
}
template <int LDK, int LDX, class FE>
__device__ __forceinline__ void intra_vjp_tc(const float *sQ, const float *sK, const float *sB, const float *sG,
                                             const float *sdAqk, const float *sdT, float scale, int dbase, bool diag_tc,
                                             FE fe) {
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;
    const int t = wp >> 1, rb = 16 * t;
    float cq[4][4], ce[4][4], ckq[4][4], ckb[4][4];
#pragma unroll
    for (int f = 0; f < 4; f++)
#pragma unroll
        for (int e = 0; e < 4; e++) cq[f][e] = ce[f][e] = ckq[f][e] = ckb[f][e] = 0.0f;
    // rows r of block t, columns s of block j: cq += dAqk_rs [k_s 2^(G2_ref - G2_s)], ce likewise with dT
    auto row_block = [&](int j, int ref, bool clamp) {
        uint32_t aqh[4], aql[4], ath[4], atl[4];
#pragma unroll
        for (int m = 0; m < 4; m++) {
            const int r = rb + gq + 8 * (m & 1), s = 16 * j + 2 * tq + 8 * (m >> 1);
            split_bf16(sdAqk[r * LDX + s], sdAqk[r * LDX + s + 1], aqh[m], aql[m]);
            split_bf16(sdT[r * LDX + s], sdT[r * LDX + s + 1], ath[m], atl[m]);
        }
#pragma unroll
        for (int f = 0; f < 4; f++) {
            const int d = dbase + 8 * f + gq;
            const float gref = sG[ref * LDK + d];
            uint32_t bh[2], bl[2];
#pragma unroll
            for (int m = 0; m < 2; m++) {
                const int s = 16 * j + 2 * tq + 8 * m;
                const float e0 = gref - sG[s * LDK + d], e1 = gref - sG[(s + 1) * LDK + d];
                split_bf16(sK[s * LDK + d] * exp2f(clamp ? fminf(e0, 0.0f) : e0),
                           sK[(s + 1) * LDK + d] * exp2f(clamp ? fminf(e1, 0.0f) : e1), bh[m], bl[m]);
            }
            mma_split3(cq[f], aqh, aql, bh[0], bh[1], bl[0], bl[1]);
            mma_split3(ce[f], ath, atl, bh[0], bh[1], bl[0], bl[1]);
        }
    };
    // rows s of block t (column sums), rows r2 of block i: ckq += X_r2,s [y_r2 2^(G2_r2 - G2_ref)]
    auto col_block = [&](int i, int ref, bool clamp) {
        uint32_t aqh[4], aql[4], ath[4], atl[4]; // A(m = s, k = r2) = X[r2][s]
#pragma unroll
        for (int m = 0; m < 4; m++) {
            const int sr = rb + gq + 8 * (m & 1), r2 = 16 * i + 2 * tq + 8 * (m >> 1);
            split_bf16(sdAqk[r2 * LDX + sr], sdAqk[(r2 + 1) * LDX + sr], aqh[m], aql[m]);
            split_bf16(sdT[r2 * LDX + sr], sdT[(r2 + 1) * LDX + sr], ath[m], atl[m]);
        }
#pragma unroll
        for (int f = 0; f < 4; f++) {
            const int d = dbase + 8 * f + gq;
            const float gref = sG[ref * LDK + d];
            uint32_t bqh[2], bql[2], bbh[2], bbl[2];
#pragma unroll
            for (int m = 0; m < 2; m++) {
                const int r2 = 16 * i + 2 * tq + 8 * m;
                const float e0 = sG[r2 * LDK + d] - gref, e1 = sG[(r2 + 1) * LDK + d] - gref;
                const float x0 = exp2f(clamp ? fminf(e0, 0.0f) : e0), x1 = exp2f(clamp ? fminf(e1, 0.0f) : e1);
                split_bf16(sQ[r2 * LDK + d] * x0, sQ[(r2 + 1) * LDK + d] * x1, bqh[m], bql[m]);
                split_bf16(sB[r2 * LDK + d] * sK[r2 * LDK + d] * x0, sB[(r2 + 1) * LDK + d] * sK[(r2 + 1) * LDK + d] * x1,
                           bbh[m], bbl[m]);
            }
            mma_split3(ckq[f], aqh, aql, bqh[0], bqh[1], bql[0], bql[1]);
            mma_split3(ckb[f], ath, atl, bbh[0], bbh[1], bbl[0], bbl[1]);
        }
    };
    for (int j = 0; j < t; j++) row_block(j, rb, true); // earlier blocks, ref = 16t
    for (int i = t + 1; i < 4; i++) col_block(i, rb + 16, true); // later blocks, ref = 16(t+1)
    // The diagonal block on tensor cores too (diag_tc), when the decay over rows 16t .. 16t+16 is
    // at most 2^-64 in every channel of this warp: row sums with ref = 16t (factors 2^(G2_16t - G2_s)
    // in [1, 2^64]), column sums with ref = 16t+15 (factors 2^(G2_r2 - G2_16t+15) in [1, 2^64]); the
    // later blocks' column sums are first moved to that reference (x 2^(G2_16t+16 - G2_16t+15)).
    // Entries outside the triangle are zero in dAqk and dT, so the full-block products need no mask.
    bool diag = false;
    if (diag_tc) {
        const int d = dbase + lane, last = min(rb + 16, CS - 1);
        diag = __all_sync(0xffffffffu, sG[rb * LDK + d] - sG[last * LDK + d] <= 64.0f);
    }
    if (diag) {
        row_block(t, rb, false);
        if (t < 3)
#pragma unroll
            for (int f = 0; f < 4; f++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int d = dbase + 8 * f + 2 * tq + (e & 1);
                    const float mv = exp2f(sG[(rb + 16) * LDK + d] - sG[(rb + 15) * LDK + d]);
                    ckq[f][e] *= mv;
                    ckb[f][e] *= mv;
                }
        col_block(t, rb + 15, false);
    }
    // diagonal block exact (unless done above), and the combination; element u of row r:
    // d = dbase + 8(u/2) + 2tq + u%2
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = rb + gq + 8 * h;
        float gr[8], dqa[8], ep[8], dkq[8], dkb[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            gr[u] = sG[r * LDK + dbase + 8 * (u >> 1) + 2 * tq + (u & 1)];
            dqa[u] = ep[u] = dkq[u] = dkb[u] = 0.0f;
        }
        if (!diag)
            for (int s = rb; s < rb + 16; s++) { // s <= r: row sums of r; s >= r: column sums (s = r2)
                const float a = s <= r ? sdAqk[r * LDX + s] : 0.0f, tt = sdT[r * LDX + s];
                const float a2 = s >= r ? sdAqk[s * LDX + r] : 0.0f, t2 = sdT[s * LDX + r]; // dT strictly lower
#pragma unroll
                for (int f = 0; f < 4; f++) { // channel pairs d, d+1: one 8-byte load per array when LDK is even
                    const int d = dbase + 8 * f + 2 * tq;
                    const float2 g2 = ld_pair<LDK>(&sG[s * LDK + d]), k2 = ld_pair<LDK>(&sK[s * LDK + d]);
                    const float2 q2 = ld_pair<LDK>(&sQ[s * LDK + d]), b2 = ld_pair<LDK>(&sB[s * LDK + d]);
                    const float gs[2] = {g2.x, g2.y}, ks[2] = {k2.x, k2.y}, qs[2] = {q2.x, q2.y}, bs[2] = {b2.x, b2.y};
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        const int u = 2 * f + c;
                        const float e = exp2f(-fabsf(gr[u] - gs[c])); // 2^(G2_r-G2_s) for s <= r, 2^(G2_s-G2_r) for s >= r
                        dqa[u] = fmaf(a, e * ks[c], dqa[u]);
                        ep[u] = fmaf(tt, e * ks[c], ep[u]);
                        dkq[u] = fmaf(a2 * qs[c], e, dkq[u]);
                        dkb[u] = fmaf(t2 * bs[c] * ks[c], e, dkb[u]);
                    }
                }
            }
#pragma unroll
        for (int f = 0; f < 4; f++) {
            const int d0 = dbase + 8 * f + 2 * tq;
            float dq_in[2], ept[2], dkt[2];
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const int u = 2 * f + c, d = d0 + c, e = 2 * h + c;
                const float xa = t > 0 || diag ? exp2f(fminf(gr[u] - sG[rb * LDK + d], 0.0f)) : 0.0f;
                const float yb = diag ? exp2f(fminf(sG[(rb + 15) * LDK + d] - gr[u], 0.0f))
                               : t < 3 ? exp2f(fminf(sG[(rb + 16) * LDK + d] - gr[u], 0.0f)) : 0.0f;
                dq_in[c] = scale * (dqa[u] + xa * cq[f][e]);
                ept[c] = ep[u] + xa * ce[f][e];
                dkt[c] = scale * (dkq[u] + yb * ckq[f][e]) + dkb[u] + yb * ckb[f][e];
            }
            fe(h, f, r, d0, dq_in, ept, dkt);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// k_fin: per (chunk, key head h): sum the GVA group, L2-norm VJP dx = rstd (dy - (dy.y) y), gate
// VJP (df, dA_log, ddt_bias), store in the output dtypes. One warp per row.
// ------------------------------------------------------------------------------------------------
template <class Tin, int KP>
__global__ __launch_bounds__(NT) void k_fin(ChunkParams p) {
    __shared__ double sDtb[KP];
    __shared__ double sDal;
    const int c = blockIdx.x, h = blockIdx.y;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    for (int d = threadIdx.x; d < KP; d += NT) sDtb[d] = 0.0;
    if (threadIdx.x == 0) sDal = 0.0;
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    constexpr int NPL = KP / 32;
    const Tin *q = (const Tin *)p.q, *k = (const Tin *)p.k;
    // the dA_log / ddt_bias partial sums are kept in double: they sum many terms of both signs
    double dal = 0.0, dtb[NPL];
#pragma unroll
    for (int i = 0; i < NPL; i++) dtb[i] = 0.0;
    for (int r = warp; r < len; r += NT / 32) {
        float dq[NPL], dk[NPL], db[NPL], dg[NPL];
#pragma unroll
        for (int i = 0; i < NPL; i++) dq[i] = dk[i] = db[i] = dg[i] = 0.0f;
        for (int j = 0; j < p.G; j++) {
            const size_t ob = ((size_t)c * p.HV + h * p.G + j) * CS * KP + r * KP;
#pragma unroll
            for (int i = 0; i < NPL; i++) {
                int d = lane + 32 * i;
                dq[i] += p.dQs[ob + d];
                dk[i] += p.dKs[ob + d];
                db[i] += p.dBs[ob + d];
                dg[i] += p.dGs[ob + d];
            }
        }
        const size_t ib = ((tok0 + r) * p.H + h) * p.K;
        if (p.l2) {
            float xq[NPL], xk[NPL], sq = 0, sk = 0;
#pragma unroll
            for (int i = 0; i < NPL; i++) {
                int d = lane + 32 * i;
                xq[i] = d < p.K ? ldf(q, ib + d) : 0.0f;
                xk[i] = d < p.K ? ldf(k, ib + d) : 0.0f;
                sq += xq[i] * xq[i];
                sk += xk[i] * xk[i];
            }
            const float rq = 1.0f / sqrtf(warp_sum(sq) + 1e-6f), rk = 1.0f / sqrtf(warp_sum(sk) + 1e-6f);
            float tq = 0, tk = 0;
#pragma unroll
            for (int i = 0; i < NPL; i++) {
                tq += dq[i] * xq[i] * rq;
                tk += dk[i] * xk[i] * rk;
            }
            tq = warp_sum(tq);
            tk = warp_sum(tk);
#pragma unroll
            for (int i = 0; i < NPL; i++) {
                dq[i] = rq * (dq[i] - tq * xq[i] * rq);
                dk[i] = rk * (dk[i] - tk * xk[i] * rk);
            }
        }
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + 32 * i;
            if (d >= p.K) continue;
            float gd = dg[i];
            if (p.gate) {
                float dalf = 0.0f;
                gd = gate_vjp(gd, p.g[ib + d], p.A_log[h], p.dt_bias[(size_t)h * p.K + d], p.lb, &dalf);
                dal += dalf;
                dtb[i] += gd;
            }
            stf((Tin *)p.dq, ib + d, dq[i]);
            stf((Tin *)p.dk, ib + d, dk[i]);
            stf((Tin *)p.db, ib + d, db[i]);
            p.dg[ib + d] = gd;
        }
    }
    if (p.gate) {
#pragma unroll
        for (int i = 0; i < NPL; i++) atomicAdd(&sDtb[lane + 32 * i], dtb[i]);
        atomicAdd(&sDal, dal);
        __syncthreads();
        for (int d = threadIdx.x; d < p.K; d += NT) atomicAdd(&p.ddt_bias[(size_t)h * p.K + d], (float)sDtb[d]);
        if (threadIdx.x == 0) atomicAdd(&p.dA_log[h], (float)sDal);
    }
}

// GDN2_CUDA_PROFILE=1 in the environment: time each kernel with events and print the split.
static int profile_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("GDN2_CUDA_PROFILE");
        on = e && *e && *e != '0';
    }
    return on;
}
struct Prof {
    cudaEvent_t ev[8];
    const char *name[8];
    int n;
    cudaStream_t st;
    void mark(const char *nm) {
        if (!profile_on()) return;
        cudaEventCreate(&ev[n]);
        cudaEventRecord(ev[n], st);
        name[n++] = nm;
    }
    void report(const char *what) {
        if (!profile_on() || n < 2) return;
        cudaEventSynchronize(ev[n - 1]);
        fprintf(stderr, "[gdn2 cuda profile] %s:", what);
        for (int i = 1; i < n; i++) {
            float ms = 0;
            cudaEventElapsedTime(&ms, ev[i - 1], ev[i]);
            fprintf(stderr, " %s %.3f ms", name[i], ms);
        }
        fprintf(stderr, "\n");
        for (int i = 0; i < n; i++) cudaEventDestroy(ev[i]);
    }
};

// the launch sequences of one (KP, VP, BV) configuration: the bf16 fast path (chunk_fast.cu) and the
// generic kernels for Tin = float or __nv_bfloat16 (chunk_f32.cu, chunk_bf16.cu)
cudaError_t chunk_launch_fast(ChunkParams &p, int KP, int VP, int BV, int bwd, int kept, cudaStream_t st);
template <class Tin>
cudaError_t chunk_launch_generic(ChunkParams &p, int KP, int VP, int BV, int bwd, int kept, cudaStream_t st);

#endif
