// The prep kernels, per (chunk, value head): k_prep (any dtype, exact fp32 math) and k_prep_tc (bf16
// inputs, tensor cores), shared by the generic kernels and the bf16 fast path.
#ifndef GDN2_CUDA_CHUNK_PREP_CUH
#define GDN2_CUDA_CHUNK_PREP_CUH

#include <type_traits>

#include "chunk_load.cuh"
#include "chunk_mma.cuh"
#include "chunk_prof.cuh"
#include "chunk_solve.cuh"

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
// mantissa bits; the official kernels use TF32, ~11, docs/CUDA.md). The math after the scores (Qg,
// Kg, E, the solve, Y, U) is k_prep's, with the solve's block rows on tensor cores too and the
// operands by cp.async / ldmatrix (phase costs: docs/CUDA.md).

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

#endif
