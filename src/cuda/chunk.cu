// Chunkwise (C = 64, WY form) GDN-2 forward and gate-aware backward in CUDA C.
//
// Per chunk of 64 tokens (rows r, s), value head hv, key head h = hv / (HV/H), with the chunk-local
// log2 cumulative gate G2_r = log2(e) * sum_{i<=r} g_i (per key channel), gamma_r = 2^G2_r:
//   Aqk_rs = scale sum_d q_rd k_sd 2^(G2_rd - G2_sd)   (s <= r)
//   T_rs   =       sum_d b_rd k_rd k_sd 2^(G2_rd - G2_sd)   (s < r),  A = (I + T)^-1
//   Y = A (gamma . b . k),  U = A (w . v),  Qg = scale q . gamma,  Kg = k . 2^(G2_last - G2)
//   R = U - Y S0,  O = Qg S0 + Aqk R,  S_C = Diag(gamma_last) S0 + Kg^T R
// Every exponent above is <= 0 (the pairwise 2^(G2_r - G2_s) is evaluated exactly per element, so
// the chunk's first row is the reference point of each factor): strong decay cannot overflow.
//
// Kernels (one block of 256 threads each, fp32 math in shared memory; bf16 inputs are widened on
// load):
//   forward : k_prep (chunk, hv) -> Y,U,Qg,Kg,gamma_last,Aqk[,A];  k_state (V tile, seq*hv):
//             sequential over the chunks of one sequence -> H (state at chunk start), R, ht;
//             k_out (chunk, hv) -> o.
//   backward: k_prep, k_state (recompute; skipped with reuse_forward after a keep_for_backward
//             forward), k_bstate (reverse scan -> dH (grad of chunk end state), dR, dh0),
//             k_bv (value-side contractions, dv, dw), k_bk (key side, the WY and intra-chunk
//             VJPs, reverse cumsum of dG), k_fin (GVA group sum, L2-norm and gate VJPs).
// Nothing of size O(T K V) is allocated: the per-chunk states are O(T/64 K V).
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
// a pair of adjacent elements (8-byte fp32 / 4-byte bf16 store)
__device__ __forceinline__ void st2(float *x, float a, float b) { *reinterpret_cast<float2 *>(x) = make_float2(a, b); }
__device__ __forceinline__ void st2(__nv_bfloat16 *x, float a, float b) { *reinterpret_cast<uint32_t *>(x) = pack_bf16(a, b); }
// row stride of a [64][KP] shared array of element type ST (odd in 32-bit words: no bank conflicts)
template <class ST, int KP>
__host__ __device__ constexpr int ld_of() { return sizeof(ST) == 2 ? KP + 2 : KP + 1; }

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
    constexpr int LDK = ld_of<ST, KP>(), LDG = KP + 1;
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
    constexpr int LDK = ld_of<ST, KP>(), LDG = KP + 1;
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

// A = (I+T)^-1 in place in sTA ([64][65] fp32, T strictly lower), by 16x16 blocks, with scratch sX
// ([16][65]) and sTd (4 x 256). Diagonal blocks: forward substitution per column on a copy of T_dd,
// A_ic = [i==c] - sum_{c<=j<i} T_ij A_jc.
__device__ __forceinline__ void solve_unit_lower(float *sTA, float *sX, float *sTd) {
    for (int i = threadIdx.x; i < 4 * 256; i += NT) {
        int bd = i / 256, e = i % 256;
        sTd[i] = sTA[(16 * bd + e / 16) * 65 + 16 * bd + e % 16];
    }
    __syncthreads();
    if (threadIdx.x < 64) {
        const int bd = threadIdx.x / 16, o = 16 * bd, cc = threadIdx.x % 16;
        for (int i = cc; i < 16; i++) {
            float v = (i == cc) ? 1.0f : 0.0f;
            for (int j = cc; j < i; j++) v -= sTd[bd * 256 + i * 16 + j] * sTA[(o + j) * 65 + o + cc];
            sTA[(o + i) * 65 + o + cc] = v;
        }
    }
    __syncthreads();
    // Block row ib: A_{ib,c} = A_{ib,ib} (- sum_{s<16ib} T_{ib,s} A_{s,c}) for columns c < 16ib; T of
    // row block ib is read into X before A overwrites it.
    for (int ib = 1; ib < 4; ib++) {
        mm<16, 64, 1, 4>(
            16 * ib, [&](int r, int s) { return sTA[(16 * ib + r) * 65 + s]; },
            [&](int s, int cc) { return cc < 16 * ib ? sTA[s * 65 + cc] : 0.0f; },
            [&](int r, int cc, float acc) { sX[r * 65 + cc] = -acc; });
        __syncthreads();
        mm<16, 64, 1, 4>(
            16, [&](int r, int m) { return sTA[(16 * ib + r) * 65 + 16 * ib + m]; },
            [&](int m, int cc) { return sX[m * 65 + cc]; },
            [&](int r, int cc, float acc) {
                if (cc < 16 * ib) sTA[(16 * ib + r) * 65 + cc] = acc;
            });
        __syncthreads();
    }
}

// ------------------------------------------------------------------------------------------------
// k_prep: per (chunk, hv): Aqk, A = (I+T)^-1, Y, U, Qg, Kg, gamma_last (and A when bwd)
// ------------------------------------------------------------------------------------------------
// Shared memory: q, k, b (then E) as ST (bf16 on the tensor-core path: the values the official
// kernels round to bf16 anyway; fp32 on the exact path), G2 fp32, one 64x64 fp32 array that holds
// T and then A (solved in place), gamma reference. The bf16 layout fits two blocks per SM.
template <class ST, int KP>
constexpr int prep_smem_bytes() { return 3 * CS * ld_of<ST, KP>() * (int)sizeof(ST) + CS * (KP + 1) * 4 + CS * 65 * 4 + KP * 4; }

template <class Tin, int KP, int VP>
__global__ __launch_bounds__(NT) void k_prep(ChunkParams p, int bwd) {
    extern __shared__ float sm[];
    constexpr bool TC = is_bf16<Tin>::value;
    typedef typename std::conditional<TC, __nv_bfloat16, float>::type ST;
    constexpr int LDQ = ld_of<ST, KP>(), LDG = KP + 1, LDZ = ld_of<ST, VP>();
    ST *sQ = (ST *)sm, *sK = sQ + CS * LDQ, *sB = sK + CS * LDQ;
    float *sG = (float *)(sB + CS * LDQ), *sTA = sG + CS * LDG, *sSt = sTA + CS * 65;
    // scratch of the solve lives in the k region (k is dead by then): X [16][65], diagonal T blocks
    float *sX = (float *)sK, *sTd = sX + 16 * 65;
    static_assert(2 * CS * ld_of<ST, KP>() >= CS * ld_of<ST, VP>(), "Z does not fit in the q,k region");
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

    solve_unit_lower(sTA, sX, sTd); // A = (I+T)^-1 in place
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
// path). Only the 4 diagonal 16x16 score blocks keep k_prep's exact per-element loop; the 6
// off-diagonal blocks (row block i > column block j, every s < every r) use a reference row per
// row block, ref = 16 i:
//     2^(G2_r - G2_s) = 2^(G2_r - G2_ref) * 2^(G2_ref - G2_s),   r >= ref > s,
// both exponents <= 0 (G2 is non-increasing), so strong decay underflows to 0 but never
// overflows. Each block is then a 16x16x128 product on tensor cores, one warp per block, the
// q-side factor shared by Aqk and T. Each fp32 operand x is split into bf16 hi + lo (x - hi) and
// the product is ah*bh + ah*bl + al*bh (3 mma, ~16 mantissa bits; the official kernels use TF32,
// ~11, GDN2.md §11.3). q, k, b, g arrive by 16-byte loads, all in flight at once; Y and U leave
// by 8-byte stores. Everything after the scores (Qg, Kg, E, the solve, Y, U) is k_prep's math.

// load_keys for bf16 inputs with K == KP and 16-byte aligned q, k, b, g: every load is
// 16 bytes (8 bf16 or 4 fp32), issued in two batches (q, k, b; then g) before their stores, instead
// of 4 scalar loads per loop step. The L2 norm and the cumulative gate are load_keys' code.
template <int KP>
__device__ void load_keys_vec(const ChunkParams &p, size_t tok0, int len, int h, __nv_bfloat16 *sQ, __nv_bfloat16 *sK,
                             __nv_bfloat16 *sB, float *sG, float *sStart, float *rnorm) {
    constexpr int LDK = ld_of<__nv_bfloat16, KP>(), LDG = KP + 1, P8 = CS * KP / 8 / NT, P4 = CS * KP / 4 / NT;
    static_assert(P8 * 8 * NT == CS * KP && P4 * 4 * NT == CS * KP, "vector tiling");
    const __nv_bfloat16 *q = (const __nv_bfloat16 *)p.q, *k = (const __nv_bfloat16 *)p.k, *b = (const __nv_bfloat16 *)p.b;
    uint4 vq[P8], vk[P8], vb[P8];
#pragma unroll
    for (int i = 0; i < P8; i++) {
        const int e = (threadIdx.x + i * NT) * 8, r = e / KP, d = e % KP;
        vq[i] = vk[i] = vb[i] = make_uint4(0u, 0u, 0u, 0u);
        if (r < len) {
            const size_t idx = ((tok0 + r) * p.H + h) * KP + d;
            vq[i] = __ldg(reinterpret_cast<const uint4 *>(q + idx));
            vk[i] = __ldg(reinterpret_cast<const uint4 *>(k + idx));
            vb[i] = __ldg(reinterpret_cast<const uint4 *>(b + idx));
        }
    }
#pragma unroll
    for (int i = 0; i < P8; i++) {
        const int e = (threadIdx.x + i * NT) * 8, r = e / KP, d = e % KP;
        uint32_t *oq = reinterpret_cast<uint32_t *>(&sQ[r * LDK + d]), *ok = reinterpret_cast<uint32_t *>(&sK[r * LDK + d]);
        uint32_t *ob_ = reinterpret_cast<uint32_t *>(&sB[r * LDK + d]);
        oq[0] = vq[i].x; oq[1] = vq[i].y; oq[2] = vq[i].z; oq[3] = vq[i].w;
        ok[0] = vk[i].x; ok[1] = vk[i].y; ok[2] = vk[i].z; ok[3] = vk[i].w;
        ob_[0] = vb[i].x; ob_[1] = vb[i].y; ob_[2] = vb[i].z; ob_[3] = vb[i].w;
    }
    // g in a second batch (all four tensors at once need ~80 registers and spilled)
    float4 vg[P4];
#pragma unroll
    for (int i = 0; i < P4; i++) {
        const int e = (threadIdx.x + i * NT) * 4, r = e / KP, d = e % KP;
        vg[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < len) vg[i] = __ldg(reinterpret_cast<const float4 *>(p.g + ((tok0 + r) * p.H + h) * KP + d));
    }
#pragma unroll
    for (int i = 0; i < P4; i++) {
        const int e = (threadIdx.x + i * NT) * 4, r = e / KP, d = e % KP;
        float gv[4] = {vg[i].x, vg[i].y, vg[i].z, vg[i].w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (p.gate && r < len) gv[j] = gate_fwd(gv[j], p.A_log[h], p.dt_bias[(size_t)h * p.K + d + j], p.lb);
            sG[r * LDG + d + j] = gv[j];
        }
    }
    keys_finish<__nv_bfloat16, KP>(p, sQ, sK, sG, sStart, rnorm);
}

template <class Tin, int KP, int VP, class WT>
__global__ __launch_bounds__(NT) void k_prep_tc(ChunkParams p, int bwd) {
    static_assert(is_bf16<Tin>::value, "k_prep_tc is the bf16 path; fp32 inputs use k_prep");
    extern __shared__ float sm[];
    typedef __nv_bfloat16 ST;
    constexpr int LDQ = ld_of<ST, KP>(), LDG = KP + 1, LDZ = ld_of<ST, VP>();
    static_assert(LDQ % 2 == 0 && LDZ % 2 == 0, "bf16 pair loads need even row strides");
    ST *sQ = (ST *)sm, *sK = sQ + CS * LDQ, *sB = sK + CS * LDQ;
    float *sG = (float *)(sB + CS * LDQ), *sTA = sG + CS * LDG, *sSt = sTA + CS * 65;
    float *sX = (float *)sK, *sTd = sX + 16 * 65;
    static_assert(2 * CS * ld_of<ST, KP>() >= CS * ld_of<ST, VP>(), "Z does not fit in the q,k region");
    const int c = blockIdx.x, hv = blockIdx.y, h = hv / p.G;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    const size_t ch = (size_t)c * p.HV + hv;
    WT *gA = (WT *)p.Aqk + ch * CS * CS;
    const bool vec = p.K == KP && ((uintptr_t)p.q | (uintptr_t)p.k | (uintptr_t)p.b | (uintptr_t)p.g) % 16 == 0;
    float *rnorm = bwd && is_bf16<WT>::value && p.l2 ? p.Rn + ch * 2 * CS : nullptr; // the fast backward's row norms
    if (vec) load_keys_vec<KP>(p, tok0, len, h, sQ, sK, sB, sG, sSt, rnorm);
    else load_keys<Tin, KP, ST>(p, tok0, len, h, sQ, sK, sB, sG, sSt, rnorm);
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;

    // Score blocks (16 x 16, block row bi, block column bj <= bi) on tensor cores, reference row
    // ref = 16 bi: A operand rows r = ref + gq (+8): x_rd = 2^(G2_rd - G2_ref,d) (<= 1), q_rd x_rd and
    // b_rd k_rd x_rd; B operand columns s = 16 bj + 8 f + gq: k_sd 2^(G2_ref,d - G2_sd), <= 1 for
    // bj < bi. On a diagonal block (bj = bi) that factor is >= 1: it is used only when the block's
    // decay span max_d (G2_ref,d - G2_ref+15,d) is <= 64 (no overflow, products >= 2^-64 stay
    // normal), and the entries above the diagonal are masked; a block with a longer span is summed
    // exactly per element instead (one exp2 per term, every exponent <= 0).
    auto score_block = [&](int bi, int bj) {
        const int ref = 16 * bi;
        const bool diag = bi == bj;
        float cq[2][4], ct[2][4];
#pragma unroll
        for (int f = 0; f < 2; f++)
#pragma unroll
            for (int e = 0; e < 4; e++) cq[f][e] = ct[f][e] = 0.0f;
#pragma unroll 2
        for (int k0 = 0; k0 < KP; k0 += 16) {
            uint32_t qh[4], ql[4], th[4], tl[4];
#pragma unroll
            for (int m = 0; m < 4; m++) { // fragment register m: row gq (+8 if m odd), channels +8 if m >= 2
                const int r = ref + gq + (m & 1) * 8, d = k0 + 2 * tq + (m >> 1) * 8;
                const float x0 = exp2f(fminf(sG[r * LDG + d] - sG[ref * LDG + d], 0.0f));
                const float x1 = exp2f(fminf(sG[r * LDG + d + 1] - sG[ref * LDG + d + 1], 0.0f));
                const float2 qv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sQ[r * LDQ + d]));
                const float2 kv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sK[r * LDQ + d]));
                const float2 bv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sB[r * LDQ + d]));
                split_bf16(qv.x * x0, qv.y * x1, qh[m], ql[m]);
                split_bf16(bv.x * kv.x * x0, bv.y * kv.y * x1, th[m], tl[m]);
            }
#pragma unroll
            for (int f = 0; f < 2; f++) {
                const int s = 16 * bj + 8 * f + gq;
                uint32_t bh[2], bl[2];
#pragma unroll
                for (int m = 0; m < 2; m++) { // b0: channels 2tq, 2tq+1; b1: +8
                    const int d = k0 + 2 * tq + 8 * m;
                    const float e0 = sG[ref * LDG + d] - sG[s * LDG + d], e1 = sG[ref * LDG + d + 1] - sG[s * LDG + d + 1];
                    const float x0 = exp2f(diag ? e0 : fminf(e0, 0.0f)), x1 = exp2f(diag ? e1 : fminf(e1, 0.0f));
                    const float2 kv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sK[s * LDQ + d]));
                    split_bf16(kv.x * x0, kv.y * x1, bh[m], bl[m]);
                }
                mma_split3(cq[f], qh, ql, bh[0], bh[1], bl[0], bl[1]);
                mma_split3(ct[f], th, tl, bh[0], bh[1], bl[0], bl[1]);
            }
        }
#pragma unroll
        for (int f = 0; f < 2; f++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = ref + gq + 8 * (e >> 1), s = 16 * bj + 8 * f + 2 * tq + (e & 1);
                sset(&gA[r * CS + s], !diag || s <= r ? p.scale * cq[f][e] : 0.0f);
                sTA[r * 65 + s] = !diag || s < r ? ct[f][e] : 0.0f;
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
    // (1) warps 0..5: off-diagonal blocks (1,0) (2,0) (2,1) (3,0) (3,1) (3,2); warps 6, 7: the
    //     diagonal blocks 0, 1 and 2, 3
    if (wp < 6) {
        const int bi = wp < 1 ? 1 : wp < 3 ? 2 : 3, bj = wp - bi * (bi - 1) / 2;
        score_block(bi, bj);
    } else {
        for (int bd = 2 * (wp - 6); bd < 2 * (wp - 6) + 2; bd++) {
            bool ok = true;
            for (int d = lane; d < KP; d += 32) ok &= sG[16 * bd * LDG + d] - sG[(16 * bd + 15) * LDG + d] <= 64.0f;
            if (__all_sync(0xffffffffu, ok)) score_block(bd, bd);
            else score_diag_exact(bd);
        }
    }
    // (2) zeros: the blocks above the diagonal (float4 groups never straddle a 16-column block)
    for (int i = threadIdx.x; i < CS * CS / 4; i += NT) {
        const int r = i / 16, s = (i % 16) * 4;
        if (s / 16 > r / 16) {
            st2(&gA[r * CS + s], 0.0f, 0.0f);
            st2(&gA[r * CS + s + 2], 0.0f, 0.0f);
            sTA[r * 65 + s] = sTA[r * 65 + s + 1] = sTA[r * 65 + s + 2] = sTA[r * 65 + s + 3] = 0.0f;
        }
    }
    __syncthreads();

    // ---- from here on: k_prep's code (Y and U with paired stores) ----
    // Qg, Kg, gamma_last to global; the pseudo-key E = gamma . b . k replaces b in shared memory
    for (int i = threadIdx.x; i < CS * KP; i += NT) {
        int r = i / KP, d = i % KP;
        float g2 = sG[r * LDG + d], gl = sG[(CS - 1) * LDG + d], gam = exp2f(g2 - sSt[d]);
        float kv = sget(&sK[r * LDQ + d]);
        size_t o = ch * CS * KP + i;
        sset((WT *)p.Qg + o, p.scale * sget(&sQ[r * LDQ + d]) * gam);
        sset((WT *)p.Kg + o, kv * exp2f(gl - g2));
        sset(&sB[r * LDQ + d], gam * sget(&sB[r * LDQ + d]) * kv);
    }
    for (int d = threadIdx.x; d < KP; d += NT) p.Gl[ch * KP + d] = exp2f(sG[(CS - 1) * LDG + d] - sSt[d]);
    __syncthreads(); // k is dead from here: its region holds the solve's scratch
    if (bwd && is_bf16<WT>::value) // E for the fast backward's dY E^T (k_bv_tc)
        for (int i = threadIdx.x; i < CS * KP / 2; i += NT) {
            const int r = 2 * i / KP, d = 2 * i % KP;
            *reinterpret_cast<uint32_t *>((bf16 *)p.E + ch * CS * KP + 2 * i) = *reinterpret_cast<const uint32_t *>(&sB[r * LDQ + d]);
        }

    // v and w of the chunk (for Z = w . v below): 16-byte loads issued now, so they fly during the solve
    const Tin *v = (const Tin *)p.v, *w = (const Tin *)p.w;
    constexpr int PZ = CS * VP / 8 / NT;
    static_assert(PZ * 8 * NT == CS * VP && LDZ % 2 == 0, "vector tiling of v, w");
    const bool vz = p.V == VP && ((uintptr_t)v | (uintptr_t)w) % 16 == 0;
    uint4 zv[PZ], zw[PZ];
    if (vz)
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

    solve_unit_lower(sTA, sX, sTd); // A = (I+T)^-1 in place
    if (bwd)
        for (int i = threadIdx.x; i < CS * CS; i += NT) sset((WT *)p.A + ch * CS * CS + i, sTA[(i / CS) * 65 + i % CS]);

    // Y = A E
    WT *gY = (WT *)p.Y + ch * CS * KP;
    float *gU = p.U + ch * CS * VP;
    mm_tc2<64, KP>(
        CS, [&](int r, int s) { return sTA[r * 65 + s]; }, [&](int s, int d) { return sget(&sB[s * LDQ + d]); },
        [&](int r, int d, float a0, float a1) { st2(&gY[r * KP + d], a0, a1); });
    // Z = w . v into the q/k region (no longer read), then U = A Z
    ST *sZ = sQ;
    if (vz) { // the 16-byte loads issued before the solve
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
    mm_tc2<64, VP>(
        CS, [&](int r, int s) { return sTA[r * 65 + s]; }, [&](int s, int e) { return sget(&sZ[s * LDZ + e]); },
        [&](int r, int e, float a0, float a1) { *reinterpret_cast<float2 *>(&gU[r * VP + e]) = make_float2(a0, a1); });
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
// and the 16x16 diagonal block is summed exactly per element (one exp2 per term). Shared arrays:
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
                                             const float *sdAqk, const float *sdT, float scale, int dbase, FE fe) {
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;
    const int t = wp >> 1, rb = 16 * t;
    float cq[4][4], ce[4][4], ckq[4][4], ckb[4][4];
#pragma unroll
    for (int f = 0; f < 4; f++)
#pragma unroll
        for (int e = 0; e < 4; e++) cq[f][e] = ce[f][e] = ckq[f][e] = ckb[f][e] = 0.0f;
    for (int j = 0; j < t; j++) { // earlier blocks: dq_in and E' of rows r
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
            const float gref = sG[rb * LDK + d];
            uint32_t bh[2], bl[2];
#pragma unroll
            for (int m = 0; m < 2; m++) {
                const int s = 16 * j + 2 * tq + 8 * m;
                split_bf16(sK[s * LDK + d] * exp2f(fminf(gref - sG[s * LDK + d], 0.0f)),
                           sK[(s + 1) * LDK + d] * exp2f(fminf(gref - sG[(s + 1) * LDK + d], 0.0f)), bh[m], bl[m]);
            }
            mma_split3(cq[f], aqh, aql, bh[0], bh[1], bl[0], bl[1]);
            mma_split3(ce[f], ath, atl, bh[0], bh[1], bl[0], bl[1]);
        }
    }
    for (int i = t + 1; i < 4; i++) { // later blocks: dkt of rows s of block t
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
            const float gref = sG[(rb + 16) * LDK + d];
            uint32_t bqh[2], bql[2], bbh[2], bbl[2];
#pragma unroll
            for (int m = 0; m < 2; m++) {
                const int r2 = 16 * i + 2 * tq + 8 * m;
                const float x0 = exp2f(fminf(sG[r2 * LDK + d] - gref, 0.0f));
                const float x1 = exp2f(fminf(sG[(r2 + 1) * LDK + d] - gref, 0.0f));
                split_bf16(sQ[r2 * LDK + d] * x0, sQ[(r2 + 1) * LDK + d] * x1, bqh[m], bql[m]);
                split_bf16(sB[r2 * LDK + d] * sK[r2 * LDK + d] * x0, sB[(r2 + 1) * LDK + d] * sK[(r2 + 1) * LDK + d] * x1,
                           bbh[m], bbl[m]);
            }
            mma_split3(ckq[f], aqh, aql, bqh[0], bqh[1], bql[0], bql[1]);
            mma_split3(ckb[f], ath, atl, bbh[0], bbh[1], bbl[0], bbl[1]);
        }
    }
    // diagonal block, exact, and the combination; element u of row r: d = dbase + 8(u/2) + 2tq + u%2
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = rb + gq + 8 * h;
        float gr[8], dqa[8], ep[8], dkq[8], dkb[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            gr[u] = sG[r * LDK + dbase + 8 * (u >> 1) + 2 * tq + (u & 1)];
            dqa[u] = ep[u] = dkq[u] = dkb[u] = 0.0f;
        }
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
                const float xa = t > 0 ? exp2f(fminf(gr[u] - sG[rb * LDK + d], 0.0f)) : 0.0f;
                const float yb = t < 3 ? exp2f(fminf(sG[(rb + 16) * LDK + d] - gr[u], 0.0f)) : 0.0f;
                dq_in[c] = scale * (dqa[u] + xa * cq[f][e]);
                ept[c] = ep[u] + xa * ce[f][e];
                dkt[c] = scale * (dkq[u] + yb * ckq[f][e]) + dkb[u] + yb * ckb[f][e];
            }
            fe(h, f, r, d0, dq_in, ept, dkt);
        }
    }
}

#include "chunk_tc.cuh"

// ------------------------------------------------------------------------------------------------
// k_state: per (32-column V tile, sequence*hv), sequential over the sequence's chunks:
//   H[ch] = S;  R = U - Y S;  S = Diag(gamma_last) S + Kg^T R
// ------------------------------------------------------------------------------------------------
template <int KP, int BV>
constexpr int state_smem_floats() { return KP * (BV + 1) + 2 * CS * (KP + 1) + 2 * CS * (BV + 1) + KP; }

template <int KP, int VP, int BV, bool TC>
__global__ __launch_bounds__(NT) void k_state(ChunkParams p) {
    extern __shared__ float sm[];
    constexpr int LDK = KP + 1, LS = BV + 1;
    float *sS = sm, *sY = sS + KP * LS, *sKg = sY + CS * LDK, *sR = sKg + CS * LDK, *sU = sR + CS * LS;
    float *sGl = sU + CS * LS;
    const int n = blockIdx.y / p.HV, hv = blockIdx.y % p.HV, v0 = blockIdx.x * BV;
    const size_t sidx = (size_t)(n * p.HV + hv) * p.K * p.V;
    for (int i = threadIdx.x; i < KP * BV; i += NT) {
        int d = i / BV, j = i % BV;
        sS[d * LS + j] = (p.h0 && d < p.K && v0 + j < p.V) ? p.h0[sidx + (size_t)d * p.V + v0 + j] : 0.0f;
    }
    int c0, c1;
    seq_chunks(p, n, c0, c1);
    Tile<CS, KP> tY, tK;
    Tile<CS, BV> tU;
    Tile<1, KP> tG;
    if (c0 < c1) {
        const size_t ch = (size_t)c0 * p.HV + hv;
        tY.load(p.Y + ch * CS * KP, KP);
        tK.load(p.Kg + ch * CS * KP, KP);
        tU.load(p.U + ch * CS * VP + v0, VP);
        tG.load(p.Gl + ch * KP, KP);
    }
    for (int c = c0; c < c1; c++) {
        const size_t ch = (size_t)c * p.HV + hv;
        __syncthreads();
        tY.store(sY, LDK);
        tK.store(sKg, LDK);
        tU.store(sU, LS);
        tG.store(sGl, KP);
        for (int i = threadIdx.x; i < KP * BV; i += NT) {
            int d = i / BV, j = i % BV;
            p.Hs[ch * KP * VP + (size_t)d * VP + v0 + j] = sS[d * LS + j];
        }
        if (c + 1 < c1) { // next chunk's tiles fly while this one computes
            const size_t cn = ch + p.HV;
            tY.load(p.Y + cn * CS * KP, KP);
            tK.load(p.Kg + cn * CS * KP, KP);
            tU.load(p.U + cn * CS * VP + v0, VP);
            tG.load(p.Gl + cn * KP, KP);
        }
        __syncthreads();
        mmx<TC, 64, BV, 2, BV / 8>(
            KP, [&](int r, int d) { return sY[r * LDK + d]; }, [&](int d, int j) { return sS[d * LS + j]; },
            [&](int r, int j, float acc) {
                float x = sU[r * LS + j] - acc;
                sR[r * LS + j] = x;
                p.R[ch * CS * VP + (size_t)r * VP + v0 + j] = x;
            });
        __syncthreads();
        mmx<TC, KP, BV, KP / 32, BV / 8>(
            CS, [&](int d, int s) { return sKg[s * LDK + d]; }, [&](int s, int j) { return sR[s * LS + j]; },
            [&](int d, int j, float acc) { sS[d * LS + j] = sGl[d] * sS[d * LS + j] + acc; });
    }
    __syncthreads();
    if (p.ht)
        for (int i = threadIdx.x; i < KP * BV; i += NT) {
            int d = i / BV, j = i % BV;
            if (d < p.K && v0 + j < p.V) p.ht[sidx + (size_t)d * p.V + v0 + j] = sS[d * LS + j];
        }
}

// ------------------------------------------------------------------------------------------------
// k_out: per (chunk, hv): O = Qg S0 + Aqk R
// ------------------------------------------------------------------------------------------------
template <int KP, int VP>
constexpr int out_smem_floats() { return CS * (KP + 1) + KP * (VP + 1) + CS * 65 + CS * (VP + 1); }

template <class Tin, int KP, int VP>
__global__ __launch_bounds__(NT) void k_out(ChunkParams p) {
    extern __shared__ float sm[];
    constexpr int LDK = KP + 1, LDV = VP + 1;
    float *sQg = sm, *sS = sQg + CS * LDK, *sAqk = sS + KP * LDV, *sR = sAqk + CS * 65;
    const int c = blockIdx.x, hv = blockIdx.y;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    const size_t ch = (size_t)c * p.HV + hv;
    stage<CS, KP>(sQg, LDK, p.Qg + ch * CS * KP, KP);
    stage<KP, VP>(sS, LDV, p.Hs + ch * KP * VP, VP);
    stage<CS, CS>(sAqk, 65, p.Aqk + ch * CS * CS, CS);
    stage<CS, VP>(sR, LDV, p.R + ch * CS * VP, VP);
    __syncthreads();
    Tin *o = (Tin *)p.o;
    mmx<is_bf16<Tin>::value, 64, VP, 4, VP / 16>(
        KP + CS, [&](int r, int kk) { return kk < KP ? sQg[r * LDK + kk] : sAqk[r * 65 + kk - KP]; },
        [&](int kk, int e) { return kk < KP ? sS[kk * LDV + e] : sR[(kk - KP) * LDV + e]; },
        [&](int r, int e, float acc) {
            if (r < len && e < p.V) stf(o, ((tok0 + r) * p.HV + hv) * p.V + e, acc);
        });
}

// ------------------------------------------------------------------------------------------------
// k_bstate: reverse scan per (V tile, sequence*hv). dS = gradient of the chunk's END state:
//   dH[ch] = dS;  dR = Aqk^T dO + Kg dS;  dS <- Diag(gamma_last) dS + Qg^T dO - Y^T dR
// ------------------------------------------------------------------------------------------------
template <int KP, int BV>
constexpr int bstate_smem_floats() { return KP * (BV + 1) + CS * 65 + 3 * CS * (KP + 1) + 2 * CS * (BV + 1) + KP; }

template <class Tin, int KP, int VP, int BV>
__global__ __launch_bounds__(NT) void k_bstate(ChunkParams p) {
    constexpr bool TC = is_bf16<Tin>::value;
    extern __shared__ float sm[];
    constexpr int LDK = KP + 1, LS = BV + 1;
    float *sdS = sm, *sAqk = sdS + KP * LS, *sKg = sAqk + CS * 65, *sQg = sKg + CS * LDK, *sY = sQg + CS * LDK;
    float *sdO = sY + CS * LDK, *sdR = sdO + CS * LS, *sGl = sdR + CS * LS;
    const int n = blockIdx.y / p.HV, hv = blockIdx.y % p.HV, v0 = blockIdx.x * BV;
    const size_t sidx = (size_t)(n * p.HV + hv) * p.K * p.V;
    const Tin *dO = (const Tin *)p.d_o;
    for (int i = threadIdx.x; i < KP * BV; i += NT) {
        int d = i / BV, j = i % BV;
        sdS[d * LS + j] = (p.dht && d < p.K && v0 + j < p.V) ? p.dht[sidx + (size_t)d * p.V + v0 + j] : 0.0f;
    }
    int c0, c1;
    seq_chunks(p, n, c0, c1);
    Tile<CS, KP> tY, tK, tQ;
    Tile<CS, CS> tA;
    Tile<1, KP> tG;
    constexpr int NO = CS * BV / NT;
    float vo[NO];
    auto fetch = [&](int c) { // all of chunk c's operands into registers
        const size_t ch = (size_t)c * p.HV + hv;
        int nn, len;
        size_t tok0;
        chunk_info(p, c, nn, tok0, len);
        tY.load(p.Y + ch * CS * KP, KP);
        tK.load(p.Kg + ch * CS * KP, KP);
        tQ.load(p.Qg + ch * CS * KP, KP);
        tA.load(p.Aqk + ch * CS * CS, CS);
        tG.load(p.Gl + ch * KP, KP);
#pragma unroll
        for (int u = 0; u < NO; u++) {
            int i = threadIdx.x + u * NT, r = i / BV, j = i % BV;
            vo[u] = (r < len && v0 + j < p.V) ? ldf(dO, ((tok0 + r) * p.HV + hv) * p.V + v0 + j) : 0.0f;
        }
    };
    if (c0 < c1) fetch(c1 - 1);
    for (int c = c1 - 1; c >= c0; c--) {
        const size_t ch = (size_t)c * p.HV + hv;
        __syncthreads();
        for (int i = threadIdx.x; i < KP * BV; i += NT) {
            int d = i / BV, j = i % BV;
            p.dHs[ch * KP * VP + (size_t)d * VP + v0 + j] = sdS[d * LS + j];
        }
        tY.store(sY, LDK);
        tK.store(sKg, LDK);
        tQ.store(sQg, LDK);
        tA.store(sAqk, 65);
        tG.store(sGl, KP);
#pragma unroll
        for (int u = 0; u < NO; u++) {
            int i = threadIdx.x + u * NT;
            sdO[(i / BV) * LS + i % BV] = vo[u];
        }
        if (c > c0) fetch(c - 1);
        __syncthreads();
        mmx<TC, 64, BV, 2, BV / 8>(
            CS + KP, [&](int r, int kk) { return kk < CS ? sAqk[kk * 65 + r] : sKg[r * LDK + kk - CS]; },
            [&](int kk, int j) { return kk < CS ? sdO[kk * LS + j] : sdS[(kk - CS) * LS + j]; },
            [&](int r, int j, float acc) {
                sdR[r * LS + j] = acc;
                p.dR[ch * CS * VP + (size_t)r * VP + v0 + j] = acc;
            });
        __syncthreads();
        mmx<TC, KP, BV, KP / 32, BV / 8>(
            2 * CS, [&](int d, int kk) { return kk < CS ? sQg[kk * LDK + d] : -sY[(kk - CS) * LDK + d]; },
            [&](int kk, int j) { return kk < CS ? sdO[kk * LS + j] : sdR[(kk - CS) * LS + j]; },
            [&](int d, int j, float acc) { sdS[d * LS + j] = sGl[d] * sdS[d * LS + j] + acc; });
    }
    __syncthreads();
    if (p.dh0)
        for (int i = threadIdx.x; i < KP * BV; i += NT) {
            int d = i / BV, j = i % BV;
            if (d < p.K && v0 + j < p.V) p.dh0[sidx + (size_t)d * p.V + v0 + j] = sdS[d * LS + j];
        }
}

// ------------------------------------------------------------------------------------------------
// k_bv: value-side contractions per (chunk, hv):
//   dAqk = tril(dO R^T),  dA1 = dR Z^T,  dZ = A^T dR -> dv = dZ.w, dw = dZ.v
//   dY = -dR S0^T,  dQi = dO S0^T,  dKi = R dSC^T,  dGl = rowsum(S0 . dSC)
// ------------------------------------------------------------------------------------------------
template <int VP>
constexpr int bv_smem_floats() { return 3 * CS * (VP + 1) + 2 * CS * (VP + 1) + CS * 65; }

template <class Tin, int KP, int VP>
__global__ __launch_bounds__(NT) void k_bv(ChunkParams p) {
    extern __shared__ float sm[];
    constexpr int LDV = VP + 1;
    float *sR = sm, *sdR = sR + CS * LDV, *sdO = sdR + CS * LDV, *sX = sdO + CS * LDV;
    float *sV = sX, *sW = sV + CS * LDV, *sA = sW + CS * LDV; // phase 1
    float *sS0 = sX, *sdS = sS0 + CS * LDV;                    // phase 2 (64 key rows at a time)
    constexpr bool TC = is_bf16<Tin>::value;
    const int c = blockIdx.x, hv = blockIdx.y;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    const size_t ch = (size_t)c * p.HV + hv;
    const Tin *v = (const Tin *)p.v, *w = (const Tin *)p.w, *dO = (const Tin *)p.d_o;
    stage<CS, VP>(sR, LDV, p.R + ch * CS * VP, VP);
    stage<CS, VP>(sdR, LDV, p.dR + ch * CS * VP, VP);
    for (int i = threadIdx.x; i < CS * VP; i += NT) {
        int r = i / VP, e = i % VP;
        float vo = 0, vv = 0, vw = 0;
        if (r < len && e < p.V) {
            size_t idx = ((tok0 + r) * p.HV + hv) * p.V + e;
            vo = ldf(dO, idx);
            vv = ldf(v, idx);
            vw = ldf(w, idx);
        }
        sdO[r * LDV + e] = vo;
        sV[r * LDV + e] = vv;
        sW[r * LDV + e] = vw;
    }
    stage<CS, CS>(sA, 65, p.A + ch * CS * CS, CS);
    __syncthreads();
    mmx<TC, 64, 64, 4, 4>(
        VP, [&](int r, int e) { return sdO[r * LDV + e]; }, [&](int e, int s) { return sR[s * LDV + e]; },
        [&](int r, int s, float acc) { p.dAqk[ch * CS * CS + r * CS + s] = s <= r ? acc : 0.0f; });
    mmx<TC, 64, 64, 4, 4>(
        VP, [&](int r, int e) { return sdR[r * LDV + e]; },
        [&](int e, int s) { return sV[s * LDV + e] * sW[s * LDV + e]; },
        [&](int r, int s, float acc) { p.dA1[ch * CS * CS + r * CS + s] = acc; });
    Tin *dv = (Tin *)p.dv, *dw = (Tin *)p.dw;
    mmx<TC, 64, VP, 4, VP / 16>(
        CS, [&](int s, int r) { return sA[r * 65 + s]; }, [&](int r, int e) { return sdR[r * LDV + e]; },
        [&](int s, int e, float acc) {
            if (s < len && e < p.V) {
                size_t idx = ((tok0 + s) * p.HV + hv) * p.V + e;
                stf(dv, idx, acc * sW[s * LDV + e]);
                stf(dw, idx, acc * sV[s * LDV + e]);
            }
        });
    for (int kh = 0; kh < KP / 64; kh++) {
        __syncthreads();
        stage<64, VP>(sS0, LDV, p.Hs + ch * KP * VP + (size_t)kh * 64 * VP, VP);
        stage<64, VP>(sdS, LDV, p.dHs + ch * KP * VP + (size_t)kh * 64 * VP, VP);
        __syncthreads();
        const size_t ob = ch * CS * KP + kh * 64;
        mmx<TC, 64, 64, 4, 4>(
            VP, [&](int r, int e) { return sdR[r * LDV + e]; }, [&](int e, int dd) { return sS0[dd * LDV + e]; },
            [&](int r, int dd, float acc) { p.dY[ob + r * KP + dd] = -acc; });
        mmx<TC, 64, 64, 4, 4>(
            VP, [&](int r, int e) { return sdO[r * LDV + e]; }, [&](int e, int dd) { return sS0[dd * LDV + e]; },
            [&](int r, int dd, float acc) { p.dQi[ob + r * KP + dd] = acc; });
        mmx<TC, 64, 64, 4, 4>(
            VP, [&](int r, int e) { return sR[r * LDV + e]; }, [&](int e, int dd) { return sdS[dd * LDV + e]; },
            [&](int r, int dd, float acc) { p.dKi[ob + r * KP + dd] = acc; });
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        for (int dd = warp; dd < 64; dd += NT / 32) {
            float s = 0;
            for (int e = lane; e < VP; e += 32) s += sS0[dd * LDV + e] * sdS[dd * LDV + e];
            s = warp_sum(s);
            if (lane == 0) p.dGl[ch * KP + kh * 64 + dd] = s;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// k_bk: key side per (chunk, hv). With E = gamma.b.k, dT = -tril(A^T tril(dA,-1) A^T, -1),
// dA = dA1 + dY E^T, dE = A^T dY, and the exact intra-chunk VJPs of Aqk and T:
//   dq_r  = scale gamma_r dQi_r + scale sum_{s<=r} dAqk_rs k_s 2^(G2_r-G2_s)
//   E'_r  = sum_{s<r} dT_rs k_s 2^(G2_r-G2_s)
//   dkt_s = scale sum_{r>=s} dAqk_rs q_r 2^(..) + sum_{r>s} dT_rs b_r k_r 2^(..)
//   dk = dE.gamma.b + b.E' + dkt + 2^(G2_last-G2) dKi;   db = dE.gamma.k + k.E'
//   dG = dE.E + q.dq - b... (see below), then dg = reverse cumsum of dG within the chunk.
// Results (per value head, fp32) go to dQs, dKs, dBs, dGs; k_fin sums GVA groups.
// ------------------------------------------------------------------------------------------------
template <int KP>
constexpr int bk_smem_floats() { return 5 * CS * (KP + 1) + 3 * CS * 65 + 2 * KP; }

template <class Tin, int KP, int VP>
__global__ __launch_bounds__(NT) void k_bk(ChunkParams p) {
    extern __shared__ float sm[];
    constexpr int LDK = KP + 1;
    float *sQ = sm, *sK = sQ + CS * LDK, *sB = sK + CS * LDK, *sG = sB + CS * LDK, *sTmp = sG + CS * LDK;
    float *sA = sTmp + CS * LDK, *sdA = sA + CS * 65, *sdAqk = sdA + CS * 65, *sEx = sdAqk + CS * 65;
    float *sSt = sEx + KP;
    constexpr bool TC = is_bf16<Tin>::value;
    const int c = blockIdx.x, hv = blockIdx.y, h = hv / p.G;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
    const size_t ch = (size_t)c * p.HV + hv, ob = ch * CS * KP;
    load_keys<Tin, KP>(p, tok0, len, h, sQ, sK, sB, sG, sSt);
    stage<CS, CS>(sA, 65, p.A + ch * CS * CS, CS);
    stage<CS, CS>(sdA, 65, p.dA1 + ch * CS * CS, CS);
    stage<CS, CS>(sdAqk, 65, p.dAqk + ch * CS * CS, CS);
    stage<CS, KP>(sTmp, LDK, p.dY + ob, KP);
    for (int d = threadIdx.x; d < KP; d += NT) sEx[d] = 0.0f;
    __syncthreads();
    // dA += dY E^T
    mmx<TC, 64, 64, 4, 4>(
        KP, [&](int r, int d) { return sTmp[r * LDK + d]; },
        [&](int d, int s) { return exp2f(sG[s * LDK + d] - sSt[d]) * sB[s * LDK + d] * sK[s * LDK + d]; },
        [&](int r, int s, float acc) { sdA[r * 65 + s] += acc; });
    // dE = A^T dY -> first terms of db, dk, dG
    mmx<TC, 64, KP, 4, KP / 16>(
        CS, [&](int r, int s) { return sA[s * 65 + r]; }, [&](int s, int d) { return sTmp[s * LDK + d]; },
        [&](int r, int d, float acc) {
            float e = exp2f(sG[r * LDK + d] - sSt[d]) * acc;
            p.dBs[ob + r * KP + d] = e * sK[r * LDK + d];
            p.dKs[ob + r * KP + d] = e * sB[r * LDK + d];
            p.dGs[ob + r * KP + d] = e * sB[r * LDK + d] * sK[r * LDK + d];
        });
    __syncthreads();
    // M1 = tril(dA,-1) A^T  (into sTmp as 64x65), then dT = -tril(A^T M1, -1) into sdA
    float *sM1 = sTmp;
    mmx<TC, 64, 64, 4, 4>(
        CS, [&](int r, int s) { return s < r ? sdA[r * 65 + s] : 0.0f; }, [&](int s, int cc) { return sA[cc * 65 + s]; },
        [&](int r, int cc, float acc) { sM1[r * 65 + cc] = acc; });
    __syncthreads();
    mmx<TC, 64, 64, 4, 4>(
        CS, [&](int r, int s) { return sA[s * 65 + r]; }, [&](int s, int cc) { return sM1[s * 65 + cc]; },
        [&](int r, int cc, float acc) { sdA[r * 65 + cc] = cc < r ? -acc : 0.0f; });
    __syncthreads();

    // intra-chunk VJPs of Aqk and T (see intra_vjp_tc), combined with the terms above
    if constexpr (TC) {
        for (int qd = 0; qd < KP / 64; qd++)
            intra_vjp_tc<LDK, 65>(sQ, sK, sB, sG, sdAqk, sdA, p.scale, (threadIdx.x / 32 & 1) * (KP / 2) + qd * 32,
                              [&](int, int, int r, int d0, const float(&dq_in)[2], const float(&ept)[2], const float(&dkt)[2]) {
                const size_t o = ob + r * KP + d0;
                const float2 vqi = *reinterpret_cast<const float2 *>(&p.dQi[o]), vki = *reinterpret_cast<const float2 *>(&p.dKi[o]);
                float2 vk = *reinterpret_cast<const float2 *>(&p.dKs[o]), vb = *reinterpret_cast<const float2 *>(&p.dBs[o]);
                float2 vg = *reinterpret_cast<const float2 *>(&p.dGs[o]), vq;
                float *pk = &vk.x, *pb = &vb.x, *pg = &vg.x, *pq = &vq.x;
                const float *qi = &vqi.x, *ki = &vki.x;
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int d = d0 + c;
                    const float gr = sG[r * LDK + d], qr = sQ[r * LDK + d], kr = sK[r * LDK + d], br = sB[r * LDK + d];
                    const float dqi = p.scale * exp2f(gr - sSt[d]) * qi[c];
                    const float dki = exp2f(sG[(CS - 1) * LDK + d] - gr) * ki[c];
                    pq[c] = dqi + dq_in[c];
                    pk[c] += br * ept[c] + dkt[c] + dki;
                    pb[c] += kr * ept[c];
                    pg[c] += qr * (dq_in[c] + dqi) + br * kr * ept[c] - kr * (dkt[c] + dki);
                    atomicAdd(&sEx[d], kr * dki);
                }
                *reinterpret_cast<float2 *>(&p.dQs[o]) = vq;
                *reinterpret_cast<float2 *>(&p.dKs[o]) = vk;
                *reinterpret_cast<float2 *>(&p.dBs[o]) = vb;
                *reinterpret_cast<float2 *>(&p.dGs[o]) = vg;
            });
    } else {
        constexpr int RS = NT / KP;
        const int d = threadIdx.x % KP, r0 = threadIdx.x / KP;
        const float g2l = sG[(CS - 1) * LDK + d];
        float ex = 0.0f;
        for (int r = r0; r < CS; r += RS) {
            const float g2r = sG[r * LDK + d], qr = sQ[r * LDK + d], kr = sK[r * LDK + d], br = sB[r * LDK + d];
            float dqa = 0, ep = 0, dkq = 0, dkb = 0;
            for (int s = 0; s <= r; s++) {
                float e = exp2f(g2r - sG[s * LDK + d]) * sK[s * LDK + d];
                dqa = fmaf(sdAqk[r * 65 + s], e, dqa);
                ep = fmaf(sdA[r * 65 + s], e, ep); // dT is zero on the diagonal
            }
            for (int r2 = r; r2 < CS; r2++) {
                float e = exp2f(sG[r2 * LDK + d] - g2r);
                dkq = fmaf(sdAqk[r2 * 65 + r] * sQ[r2 * LDK + d], e, dkq);
                dkb = fmaf(sdA[r2 * 65 + r] * sB[r2 * LDK + d] * sK[r2 * LDK + d], e, dkb);
            }
            const float dq_in = p.scale * dqa, dkt = p.scale * dkq + dkb;
            const float dqi = p.scale * exp2f(g2r - sSt[d]) * p.dQi[ob + r * KP + d];
            const float dki = exp2f(g2l - g2r) * p.dKi[ob + r * KP + d];
            const size_t o = ob + r * KP + d;
            p.dQs[o] = dqi + dq_in;
            p.dKs[o] += br * ep + dkt + dki;
            p.dBs[o] += kr * ep;
            p.dGs[o] += qr * (dq_in + dqi) + br * kr * ep - kr * (dkt + dki);
            ex += kr * dki;
        }
        atomicAdd(&sEx[d], ex);
    }
    __syncthreads();
    // dg = reverse cumulative sum of dG; G2_last (row 63, flat after the last valid row) also
    // receives gamma_last rowsum(S0.dSC) + sum_r k.dKi-term
    for (int d = threadIdx.x; d < KP; d += NT) {
        float acc = exp2f(sG[(CS - 1) * LDK + d] - sSt[d]) * p.dGl[ch * KP + d] + sEx[d];
        for (int r = CS - 1; r >= 0; r--) {
            acc += p.dGs[ob + r * KP + d];
            p.dGs[ob + r * KP + d] = acc;
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

// ================================================================================================
// host side
// ================================================================================================
struct WsLayout {
    size_t nch, KP, VP, total; // total in bytes
    size_t off[32];            // float offsets
    size_t tab_off;            // byte offset of the int tables
};

static int pad_dim(int64_t x) { return x <= 64 ? 64 : 128; }

static int64_t count_chunks(const gdn2_dims *d, const gdn2_opts *o) {
    if (!o->cu_seqlens) return d->B * ((d->T + CS - 1) / CS);
    int64_t n = 0;
    for (int64_t i = 0; i < o->n_seqs; i++) n += (o->cu_seqlens[i + 1] - o->cu_seqlens[i] + CS - 1) / CS;
    return n;
}

// buffers: 0 Y,1 U,2 Qg,3 Kg,4 Gl,5 Aqk,6 R,7 Hs | 8 A,9 dHs,10 dR,11 dY,12 dA1,13 dAqk,14 dQi,15 dKi,
// 16 dGl,17 dQs,18 dKs,19 dBs,20 dGs,21 E,22 Rn
static void ws_layout(const gdn2_dims *d, const gdn2_opts *o, int bwd, WsLayout *L) {
    const size_t nch = (size_t)count_chunks(d, o) * d->HV, KP = pad_dim(d->K), VP = pad_dim(d->V);
    const size_t per[23] = {CS * KP, CS * VP, CS * KP, CS * KP, KP, CS * CS, CS * VP, KP * VP,
                            CS * CS, KP * VP, CS * VP, CS * KP, CS * CS, CS * CS, CS * KP, CS * KP,
                            KP, CS * KP, CS * KP, CS * KP, CS * KP, CS * KP, 2 * CS};
    const int nb = bwd ? 23 : 8;
    size_t off = 0;
    for (int i = 0; i < 23; i++) {
        L->off[i] = off;
        if (i < nb) off += ((nch * per[i] + 63) / 64) * 64; // 256-byte aligned
    }
    L->nch = nch;
    L->KP = KP;
    L->VP = VP;
    L->tab_off = off * sizeof(float);
    const size_t ntab = o->cu_seqlens ? (size_t)count_chunks(d, o) * 3 + o->n_seqs + 1 : 0;
    L->total = L->tab_off + ntab * sizeof(int) + 256;
}

static int validate(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a) {
    int rc = gdn2_check(d, o);
    if (rc) return rc;
    if (!a) return gdn2_error(GDN2_ERR_ARG, "%s: args must not be NULL", fn);
    const char *miss = !a->q ? "q" : !a->k ? "k" : !a->v ? "v" : !a->g ? "g" : !a->b ? "b" : !a->w ? "w" : NULL;
    if (!miss && o->gate_in_kernel) miss = !a->A_log ? "A_log" : !a->dt_bias ? "dt_bias" : NULL;
    if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: input tensor '%s' is NULL", fn, miss);
    if (d->K > 128 || d->V > 128)
        return gdn2_error(GDN2_ERR_UNSUPPORTED, "%s: K=%lld V=%lld, the CUDA kernels support K,V <= 128", fn,
                          (long long)d->K, (long long)d->V);
    if (a->dtype != GDN2_CUDA_F32 && a->dtype != GDN2_CUDA_BF16)
        return gdn2_error(GDN2_ERR_ARG, "%s: dtype=%d, expected GDN2_CUDA_F32 or GDN2_CUDA_BF16", fn, a->dtype);
    if ((int64_t)count_chunks(d, o) * d->HV > 2147483647LL / CS || d->B * d->T * d->HV * 128 > (1LL << 40))
        return gdn2_error(GDN2_ERR_ARG, "%s: problem too large", fn);
    return GDN2_OK;
}

extern "C" size_t gdn2_cuda_chunk_workspace_size(const gdn2_dims *d, const gdn2_opts *o, int backward) {
    if (!d || !o || gdn2_check(d, o)) return 0;
    WsLayout L;
    ws_layout(d, o, backward, &L);
    return L.total;
}

#define CU(call)                                                                                            \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) {                                                                            \
            rc = gdn2_error(GDN2_ERR_DEVICE, "%s: %s failed: %s", fn, #call, cudaGetErrorString(e_));       \
            goto done;                                                                                      \
        }                                                                                                   \
    } while (0)

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

// kept: the forward's intermediates live in the workspace across the calls (keep_for_backward /
// reuse_forward): the forward's prep also stores A, the backward skips prep and the forward scan.
template <class Tin, int KP, int VP, int BV>
static cudaError_t launch_all(ChunkParams &p, int bwd, int kept, cudaStream_t st) {
    constexpr bool TC = is_bf16<Tin>::value;
    typedef typename std::conditional<TC, __nv_bfloat16, float>::type ST;
    const int nsm_prep = prep_smem_bytes<ST, KP>(), nsm_state = state_smem_floats<KP, BV>() * 4;
    const int nsm_out = out_smem_floats<KP, VP>() * 4, nsm_bstate = bstate_smem_floats<KP, BV>() * 4;
    const int nsm_bv = bv_smem_floats<VP>() * 4, nsm_bk = bk_smem_floats<KP>() * 4;
    static bool attr = false;
    if (!attr) {
        if constexpr (TC) cudaFuncSetAttribute(k_prep_tc<Tin, KP, VP, float>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_prep);
        else cudaFuncSetAttribute(k_prep<Tin, KP, VP>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_prep);
        cudaFuncSetAttribute(k_state<KP, VP, BV, TC>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_state);
        cudaFuncSetAttribute(k_out<Tin, KP, VP>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_out);
        cudaFuncSetAttribute(k_bstate<Tin, KP, VP, BV>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_bstate);
        cudaFuncSetAttribute(k_bv<Tin, KP, VP>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_bv);
        cudaFuncSetAttribute(k_bk<Tin, KP, VP>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_bk);
        attr = true;
    }
    Prof pr;
    pr.n = 0;
    pr.st = st;
    const dim3 gc(p.nchunks, p.HV), gs(VP / BV, p.nseq * p.HV), gh(p.nchunks, p.H);
    pr.mark("start");
    if (!(bwd && kept)) { // a reusing backward finds these results in the workspace
        if (p.nchunks > 0) {
            if constexpr (TC) k_prep_tc<Tin, KP, VP, float><<<gc, NT, nsm_prep, st>>>(p, bwd || kept);
            else k_prep<Tin, KP, VP><<<gc, NT, nsm_prep, st>>>(p, bwd || kept);
        }
        pr.mark("prep");
        k_state<KP, VP, BV, TC><<<gs, NT, nsm_state, st>>>(p);
        pr.mark("state");
    }
    if (!bwd) {
        if (p.nchunks > 0) k_out<Tin, KP, VP><<<gc, NT, nsm_out, st>>>(p);
        pr.mark("out");
        pr.report(kept ? "fwd (keep)" : "fwd");
        return cudaGetLastError();
    }
    k_bstate<Tin, KP, VP, BV><<<gs, NT, nsm_bstate, st>>>(p);
    pr.mark("bstate");
    if (p.nchunks > 0) {
        k_bv<Tin, KP, VP><<<gc, NT, nsm_bv, st>>>(p);
        pr.mark("bv");
        k_bk<Tin, KP, VP><<<gc, NT, nsm_bk, st>>>(p);
        pr.mark("bk");
        k_fin<Tin, KP><<<gh, NT, 0, st>>>(p);
        pr.mark("fin");
    }
    pr.report(kept ? "bwd (reuse)" : "bwd");
    return cudaGetLastError();
}

// V tile of the sequential state kernels: 16 columns when there are few (sequence, head) pairs
// (a single long sequence), so that the scan still spreads over the multiprocessors.
// The bf16 fast path (chunk_tc.cuh): bf16 workspace, cp.async + ldmatrix scans and output.
// BV as in launch_all for the forward scan; the reverse scan takes 64-column tiles (it holds one
// block per multiprocessor, so wider tiles halve its operand traffic) unless BV is 16.
template <int KP, int VP, int BV>
static cudaError_t launch_fast(ChunkParams &p, int bwd, int kept, cudaStream_t st) {
    typedef __nv_bfloat16 Tin;
    constexpr int BVB = BV == 16 ? 16 : 64;
    const int nsm_prep = prep_smem_bytes<__nv_bfloat16, KP>(), nsm_state = state_tc_smem_bytes<KP, BV>();
    const int nsm_out = out_tc_smem_bytes<KP, VP>(), nsm_bstate = bstate_tc_smem_bytes<KP, BVB>();
    const int nsm_bv = bv_tc_smem_bytes<VP>(), nsm_bk = bk_tc_smem_bytes();
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_prep_tc<Tin, KP, VP, bf16>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_prep);
        cudaFuncSetAttribute(k_state_tc<KP, VP, BV>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_state);
        cudaFuncSetAttribute(k_out_tc<KP, VP>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_out);
        cudaFuncSetAttribute(k_bstate_tc<KP, VP, BVB>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_bstate);
        cudaFuncSetAttribute(k_bv_tc<KP, VP>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_bv);
        cudaFuncSetAttribute(k_bk_tc<KP>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm_bk);
        attr = true;
    }
    Prof pr;
    pr.n = 0;
    pr.st = st;
    const dim3 gc(p.nchunks, p.HV), gs(VP / BV, p.nseq * p.HV), gb(VP / BVB, p.nseq * p.HV), gh(p.nchunks, p.H);
    const dim3 gk(p.nchunks, p.HV, KP / 64);
    pr.mark("start");
    if (!(bwd && kept)) { // as in launch_all
        if (p.nchunks > 0) k_prep_tc<Tin, KP, VP, bf16><<<gc, NT, nsm_prep, st>>>(p, bwd || kept);
        pr.mark("prep");
        k_state_tc<KP, VP, BV><<<gs, NT, nsm_state, st>>>(p);
        pr.mark("state");
    }
    if (!bwd) {
        if (p.nchunks > 0) k_out_tc<KP, VP><<<gc, NT, nsm_out, st>>>(p);
        pr.mark("out");
        pr.report(kept ? "fwd (keep)" : "fwd");
        return cudaGetLastError();
    }
    k_bstate_tc<KP, VP, BVB><<<gb, NT, nsm_bstate, st>>>(p);
    pr.mark("bstate");
    if (p.nchunks > 0) {
        k_bv_tc<KP, VP><<<gc, NT, nsm_bv, st>>>(p);
        pr.mark("bv");
        k_bk_tc<KP><<<gk, NT, nsm_bk, st>>>(p);
        pr.mark("bk");
        k_fin<Tin, KP><<<gh, NT, 0, st>>>(p);
        pr.mark("fin");
    }
    pr.report(kept ? "bwd (reuse)" : "bwd");
    return cudaGetLastError();
}

// bf16 inputs at K == KP, V == VP with 16-byte aligned tensors take the fast path. Split in the
// part a forward and its backward share (dims, inputs) and the part that differs between them
// (the outputs: o, ht in the forward; d_o, dht, dh0 in the backward), which keep/reuse must not
// let switch the path (run_chunk).
static bool fast_inputs_ok(const ChunkParams &p, int KP, int VP) {
    const uintptr_t al = (uintptr_t)p.q | (uintptr_t)p.k | (uintptr_t)p.v | (uintptr_t)p.b | (uintptr_t)p.w |
                         (uintptr_t)p.h0;
    static int generic = -1; // GDN2_CUDA_GENERIC=1: always the generic kernels (for comparisons)
    if (generic < 0) generic = getenv("GDN2_CUDA_GENERIC") != NULL;
    return p.K == KP && p.V == VP && al % 16 == 0 && !generic;
}
// the first output that is not 16-byte aligned, or NULL
static const char *fast_outputs_misaligned(const ChunkParams &p) {
    const void *t[5] = {p.o, p.ht, p.d_o, p.dht, p.dh0};
    const char *name[5] = {"o", "ht", "d_o", "dht", "dh0"};
    for (int i = 0; i < 5; i++)
        if ((uintptr_t)t[i] % 16) return name[i];
    return NULL;
}
static bool fast_path_ok(const ChunkParams &p, int KP, int VP) {
    return fast_inputs_ok(p, KP, VP) && !fast_outputs_misaligned(p);
}

template <class Tin, int KP, int VP>
static cudaError_t launch_bv(ChunkParams &p, int bwd, int kept, cudaStream_t st) {
    const bool few = (long)p.nseq * p.HV * (VP / 32) < 264;
    if constexpr (is_bf16<Tin>::value)
        if (fast_path_ok(p, KP, VP))
            return few ? launch_fast<KP, VP, 16>(p, bwd, kept, st) : launch_fast<KP, VP, 32>(p, bwd, kept, st);
    if (few) return launch_all<Tin, KP, VP, 16>(p, bwd, kept, st);
    return launch_all<Tin, KP, VP, 32>(p, bwd, kept, st);
}

template <class Tin>
static cudaError_t dispatch(ChunkParams &p, int KP, int VP, int bwd, int kept, cudaStream_t st) {
    if (KP == 64 && VP == 64) return launch_bv<Tin, 64, 64>(p, bwd, kept, st);
    if (KP == 64 && VP == 128) return launch_bv<Tin, 64, 128>(p, bwd, kept, st);
    if (KP == 128 && VP == 64) return launch_bv<Tin, 128, 64>(p, bwd, kept, st);
    return launch_bv<Tin, 128, 128>(p, bwd, kept, st);
}

static int run_chunk(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                     const gdn2_cuda_bwd_args *g, void *stream) {
    int rc = validate(fn, d, o, a);
    if (rc) return rc;
    const int bwd = g != NULL;
    if (bwd) {
        const char *miss = !g->d_o ? "d_o" : !g->dq ? "dq" : !g->dk ? "dk" : !g->dv ? "dv" : !g->dg ? "dg"
                         : !g->db ? "db" : !g->dw ? "dw" : NULL;
        if (!miss && o->gate_in_kernel) miss = !g->dA_log ? "dA_log" : !g->ddt_bias ? "ddt_bias" : NULL;
        if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: gradient tensor '%s' is NULL", fn, miss);
    } else if (!a->o)
        return gdn2_error(GDN2_ERR_ARG, "%s: output tensor 'o' is NULL", fn);
    // keep_for_backward / reuse_forward: what k_prep (with its bwd flag) and k_state write stays in
    // the caller's workspace between the calls, laid out as for the backward
    const int kept = (bwd ? g->reuse_forward : a->keep_for_backward) != 0;
    const char *kfield = bwd ? "reuse_forward" : "keep_for_backward";
    cudaStream_t st = (cudaStream_t)stream;
    WsLayout L;
    ws_layout(d, o, bwd || kept, &L);
    if (kept && (!o->workspace || o->workspace_size < L.total))
        return gdn2_error(GDN2_ERR_ARG, "%s: %s=%d needs opts->workspace (a device buffer of at least "
                          "gdn2_cuda_chunk_workspace_size(d, o, 1) = %zu bytes), got %s of %zu bytes", fn, kfield,
                          kept, L.total, o->workspace ? "one" : "NULL", o->workspace_size);
    const int64_t nchunks = count_chunks(d, o), nseq = gdn2_num_states(d, o);
    char *ws = (char *)o->workspace, *own = NULL;
    int *htab = NULL;
    ChunkParams p;
    memset(&p, 0, sizeof p);
    if (ws && o->workspace_size < L.total) {
        return gdn2_error(GDN2_ERR_ARG, "%s: workspace_size=%zu, need %zu (gdn2_cuda_chunk_workspace_size)", fn,
                          o->workspace_size, L.total);
    }
    if (!ws) {
        CU(cudaMallocAsync((void **)&own, L.total, st));
        ws = own;
    }
    p.B = (int)d->B; p.T = (int)d->T; p.H = (int)d->H; p.HV = (int)d->HV; p.K = (int)d->K; p.V = (int)d->V;
    p.G = (int)(d->HV / d->H);
    p.scale = gdn2_scale(d, o);
    p.l2 = o->qk_l2norm;
    p.gate = o->gate_in_kernel;
    p.lb = o->gate_in_kernel ? o->lower_bound : 0.0f;
    p.nchunks = (int)nchunks;
    p.nseq = (int)nseq;
    p.q = a->q; p.k = a->k; p.v = a->v; p.b = a->b; p.w = a->w; p.g = a->g; p.h0 = a->h0;
    p.A_log = a->A_log; p.dt_bias = a->dt_bias;
    p.o = a->o;
    p.ht = bwd ? NULL : a->ht;
    if (bwd) {
        p.d_o = g->d_o; p.dht = g->dht; p.dq = g->dq; p.dk = g->dk; p.dv = g->dv; p.db = g->db; p.dw = g->dw;
        p.dg = g->dg; p.dh0 = g->dh0; p.dA_log = g->dA_log; p.ddt_bias = g->ddt_bias;
    }
    {
        float *f = (float *)ws;
        float **bufs[23] = {&p.Y, &p.U, &p.Qg, &p.Kg, &p.Gl, &p.Aqk, &p.R, &p.Hs, &p.A, &p.dHs, &p.dR,
                            &p.dY, &p.dA1, &p.dAqk, &p.dQi, &p.dKi, &p.dGl, &p.dQs, &p.dKs, &p.dBs, &p.dGs, &p.E, &p.Rn};
        for (int i = 0; i < (bwd || kept ? 23 : 8); i++) *bufs[i] = f + L.off[i];
    }
    if (kept && a->dtype == GDN2_CUDA_BF16 && fast_inputs_ok(p, (int)L.KP, (int)L.VP)) {
        // the workspace dtype follows the path: forward and backward must take the same one
        const char *bad = fast_outputs_misaligned(p);
        if (bad) {
            rc = gdn2_error(GDN2_ERR_ARG, "%s: %s=%d with bf16 at K=%d V=%d needs '%s' 16-byte aligned (the "
                            "forward and the backward must take the same kernel path)", fn, kfield, kept, p.K, p.V, bad);
            goto done;
        }
    }
    if (o->cu_seqlens) { // chunk table {seq, tok0, len} and per-sequence chunk offsets
        const size_t ntab = (size_t)nchunks * 3 + nseq + 1;
        htab = (int *)malloc(ntab * sizeof(int));
        if (!htab) { rc = gdn2_error(GDN2_ERR_NOMEM, "%s: chunk table", fn); goto done; }
        int c = 0;
        for (int64_t s = 0; s < nseq; s++) {
            htab[nchunks * 3 + s] = c;
            for (int64_t t0 = o->cu_seqlens[s]; t0 < o->cu_seqlens[s + 1]; t0 += CS, c++) {
                htab[3 * c] = (int)s;
                htab[3 * c + 1] = (int)t0;
                htab[3 * c + 2] = (int)(o->cu_seqlens[s + 1] - t0 < CS ? o->cu_seqlens[s + 1] - t0 : CS);
            }
        }
        htab[nchunks * 3 + nseq] = c;
        int *dtab = (int *)(ws + L.tab_off);
        CU(cudaMemcpyAsync(dtab, htab, ntab * sizeof(int), cudaMemcpyHostToDevice, st));
        p.ctab = dtab;
        p.cofs = dtab + nchunks * 3;
    }
    if (bwd && o->gate_in_kernel) {
        CU(cudaMemsetAsync(g->dA_log, 0, d->H * sizeof(float), st));
        CU(cudaMemsetAsync(g->ddt_bias, 0, d->H * d->K * sizeof(float), st));
    }
    if (a->dtype == GDN2_CUDA_BF16)
        CU(dispatch<__nv_bfloat16>(p, (int)L.KP, (int)L.VP, bwd, kept, st));
    else
        CU(dispatch<float>(p, (int)L.KP, (int)L.VP, bwd, kept, st));
    if (htab) CU(cudaStreamSynchronize(st)); // the pageable table must outlive the copy
done:
    if (own) cudaFreeAsync(own, st);
    free(htab);
    return rc;
}

extern "C" int gdn2_cuda_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a, void *stream) {
    return run_chunk("gdn2_cuda_chunk_fwd", d, o, a, NULL, stream);
}

extern "C" int gdn2_cuda_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                                   const gdn2_cuda_bwd_args *g, void *stream) {
    if (!g) return gdn2_error(GDN2_ERR_ARG, "gdn2_cuda_chunk_bwd: gradient args must not be NULL");
    return run_chunk("gdn2_cuda_chunk_bwd", d, o, a, g, stream);
}
