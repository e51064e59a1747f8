// Shared-memory loaders of the chunk kernels: element access helpers, the padded row strides,
// the chunk-local cumulative gate, the key-side loads (load_keys, load_keys_vec), the
// register-staged tile copies (Tile, stage) and Z = w . v (load_z).
#ifndef GDN2_CUDA_CHUNK_LOAD_CUH
#define GDN2_CUDA_CHUNK_LOAD_CUH

#include "common.cuh"
#include "chunk_params.cuh"
#include "tc.cuh"

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

// Load one chunk's key-side inputs of key head h into shared rows [64][KP+1]: q (L2-normalised if
// asked), k (likewise), b, and sG = G2 (log2 cumulative effective gate). Rows >= len and channels
// >= K are zero (g = 0 there, so G2 stays flat after the last valid row).
// G2 is taken relative to row 31 and accumulated outward from it in double: the pairwise
// differences G2_r - G2_s then carry rounding of at most half a chunk's decay, not a whole one
// (strong gates make |G2| large). sStart[d] = G2 of the virtual row -1, so gamma_r = 2^(G2_r-sStart).

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

#endif
