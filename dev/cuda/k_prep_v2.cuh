// k_prep_v2: drop-in replacement of k_prep (src/cuda/chunk.cu) for the bf16 (tensor-core) path.
// Included by chunk.cu only when built with -DGDN2_CUDA_V2; the fp32 path keeps k_prep.
//
// What changed (written 2026-11-28 without a GPU; compiled and checked with -Xptxas -v only):
// - The score blocks. k_prep evaluates Aqk_rs = scale sum_d q_rd k_sd 2^(G2_rd-G2_sd) and
//   T_rs = sum_d b_rd k_rd k_sd 2^(...) per element: 10 of 16 (r,s) entries of every 4x4 thread
//   tile, one exp2 + 2 FMA + ~2.4 shared loads per entry and channel (~1280 exp2 and ~3000 shared
//   loads per thread per chunk). Here only the 4 diagonal 16x16 blocks keep that exact loop (136
//   lower entries each, 2-3 entries per thread); the 6 off-diagonal blocks (row block i > column
//   block j, so every s < every r) use a reference row per row block, ref = 16 i (its first row):
//       2^(G2_r - G2_s) = 2^(G2_r - G2_ref) * 2^(G2_ref - G2_s),   r >= ref > s,
//   both exponents <= 0 (G2 is non-increasing), so strong decay underflows to 0 but never
//   overflows. Each block is then a 16x16x128 product on tensor cores (mma.sync m16n8k16),
//   one warp per block (warps 0..5), the q-side factor shared by Aqk and T.
// - Precision of those products: each fp32 operand x is split into bf16 hi + lo (x - hi) and the
//   product is ah*bh + ah*bl + al*bh (3 mma; ~16 mantissa bits, better than the TF32 dots of the
//   official kernels, GDN2.md §11.3), so the bf16 path's Aqk/T stay within ~1e-5 relative of the
//   exact loop and the test bars (o 5e-3, where call 3 measured 4.1e-3) keep their margin.
// - Y and U are written with 8-byte stores (pairs of columns of an mma fragment).
// - q, k, b, g are loaded with 16-byte loads, all in flight at once (v2_load_keys), when K == KP
//   and the pointers are 16-byte aligned (always so at K = 64 or 128 from cudaMalloc).
// Everything after the scores (Qg, Kg, E, the (I+T)^-1 solve, Y, U) is k_prep's code unchanged.
//
// Expected gain (not measured): the score phase is ~half of k_prep's 99 us per block at 2 blocks
// per SM (issue-bound: ~3,000 shared loads, 1,280 exp2, ~6,000 FP32 ops per thread); here ~1,900
// loads, ~500 exp2, ~3,000 ops, so k_prep 3.07 -> ~2.2-2.5 ms at (8,4096,16,128,128) bf16, in the
// forward and again in the backward (k_prep runs in both).
// Next steps not done here: bf16 workspace (Y, U, Qg, Kg, Aqk as the official rounds them, halving
// the ~1 ms of fp32 round trips), ldmatrix-fed A/E/Z operands for Y = A E and U = A Z, and a
// tensor-core solve for the off-diagonal blocks of (I+T)^-1.

// one m16n8k16 bf16 mma, fp32 accumulate
__device__ __forceinline__ void v2_mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                       uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// (x, y) -> bf16x2 hi = rn(x, y) and lo = rn(x - hi, y - hi): x = hi + lo to ~2^-16 relative
__device__ __forceinline__ void v2_split(float x, float y, uint32_t &hi, uint32_t &lo) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    float2 hf = __bfloat1622float2(h);
    __nv_bfloat162 l = __floats2bfloat162_rn(x - hf.x, y - hf.y);
    hi = *reinterpret_cast<uint32_t *>(&h);
    lo = *reinterpret_cast<uint32_t *>(&l);
}
// c += a b with a, b given as hi/lo splits (the lo*lo term, ~2^-18 relative, is dropped)
__device__ __forceinline__ void v2_mma3(float (&c)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], uint32_t bh0,
                                        uint32_t bh1, uint32_t bl0, uint32_t bl1) {
    v2_mma(c, al[0], al[1], al[2], al[3], bh0, bh1);
    v2_mma(c, ah[0], ah[1], ah[2], ah[3], bl0, bl1);
    v2_mma(c, ah[0], ah[1], ah[2], ah[3], bh0, bh1);
}

// mm_tc with a paired epilogue fe2(m, n, acc_n, acc_n+1) (n even): 8-byte stores
template <int M, int N, class FA, class FB, class FE2>
__device__ __forceinline__ void v2_mm_tc2(int kd, FA fa, FB fb, FE2 fe2) {
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
            v2_mma(acc[j], a0, a1, a2, a3, pack_bf16(fb(ka, n), fb(ka + 1, n)), pack_bf16(fb(ka + 8, n), fb(ka + 9, n)));
        }
    }
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        const int n0 = cb + j * 8 + 2 * tq;
        fe2(r0 + gq, n0, acc[j][0], acc[j][1]);
        fe2(r0 + gq + 8, n0, acc[j][2], acc[j][3]);
    }
}

// load_keys (chunk.cu) for bf16 inputs with K == KP and 16-byte aligned q, k, b, g: every load is
// 16 bytes (8 bf16 or 4 fp32), issued in two batches (q, k, b; then g) before their stores, instead
// of 4 scalar loads per loop step. The L2 norm and the cumulative gate are load_keys' code.
template <int KP>
__device__ void v2_load_keys(const ChunkParams &p, size_t tok0, int len, int h, __nv_bfloat16 *sQ, __nv_bfloat16 *sK,
                             __nv_bfloat16 *sB, float *sG, float *sStart) {
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
            for (int d = lane; d < KP; d += 32) {
                sset(&sQ[r * LDK + d], sget(&sQ[r * LDK + d]) * rq);
                sset(&sK[r * LDK + d], sget(&sK[r * LDK + d]) * rk);
            }
        }
    }
    for (int d = threadIdx.x; d < KP; d += NT) { // cumulative gate, log2 units, reference row 31
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
    __syncthreads();
}

template <class Tin, int KP, int VP>
__global__ __launch_bounds__(NT) void k_prep_v2(ChunkParams p, int bwd) {
    static_assert(is_bf16<Tin>::value, "k_prep_v2 is the bf16 path; fp32 inputs use k_prep");
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
    float *gA = p.Aqk + ch * CS * CS;
    const bool vec = p.K == KP && ((uintptr_t)p.q | (uintptr_t)p.k | (uintptr_t)p.b | (uintptr_t)p.g) % 16 == 0;
    if (vec) v2_load_keys<KP>(p, tok0, len, h, sQ, sK, sB, sG, sSt);
    else load_keys<Tin, KP, ST>(p, tok0, len, h, sQ, sK, sB, sG, sSt);
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;

    // (1) off-diagonal blocks (bi > bj) on tensor cores, warp wp < 6 owns block
    //     (bi, bj) = (1,0) (2,0) (2,1) (3,0) (3,1) (3,2); reference row ref = 16 bi.
    //     A operand rows r = ref + gq (+8): x_rd = 2^(G2_rd - G2_ref,d), q_rd x_rd and b_rd k_rd x_rd;
    //     B operand columns s = 16 bj + 8 f + gq: k_sd 2^(G2_ref,d - G2_sd).
    if (wp < 6) {
        const int bi = wp < 1 ? 1 : wp < 3 ? 2 : 3, bj = wp - bi * (bi - 1) / 2, ref = 16 * bi;
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
                v2_split(qv.x * x0, qv.y * x1, qh[m], ql[m]);
                v2_split(bv.x * kv.x * x0, bv.y * kv.y * x1, th[m], tl[m]);
            }
#pragma unroll
            for (int f = 0; f < 2; f++) {
                const int s = 16 * bj + 8 * f + gq;
                uint32_t bh[2], bl[2];
#pragma unroll
                for (int m = 0; m < 2; m++) { // b0: channels 2tq, 2tq+1; b1: +8
                    const int d = k0 + 2 * tq + 8 * m;
                    const float x0 = exp2f(fminf(sG[ref * LDG + d] - sG[s * LDG + d], 0.0f));
                    const float x1 = exp2f(fminf(sG[ref * LDG + d + 1] - sG[s * LDG + d + 1], 0.0f));
                    const float2 kv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&sK[s * LDQ + d]));
                    v2_split(kv.x * x0, kv.y * x1, bh[m], bl[m]);
                }
                v2_mma3(cq[f], qh, ql, bh[0], bh[1], bl[0], bl[1]);
                v2_mma3(ct[f], th, tl, bh[0], bh[1], bl[0], bl[1]);
            }
        }
#pragma unroll
        for (int f = 0; f < 2; f++) {
            const int s = 16 * bj + 8 * f + 2 * tq, r = ref + gq;
            *reinterpret_cast<float2 *>(&gA[r * CS + s]) = make_float2(p.scale * cq[f][0], p.scale * cq[f][1]);
            *reinterpret_cast<float2 *>(&gA[(r + 8) * CS + s]) = make_float2(p.scale * cq[f][2], p.scale * cq[f][3]);
            sTA[r * 65 + s] = ct[f][0];
            sTA[r * 65 + s + 1] = ct[f][1];
            sTA[(r + 8) * 65 + s] = ct[f][2];
            sTA[(r + 8) * 65 + s + 1] = ct[f][3];
        }
    }
    // (2) zeros: blocks above the diagonal (float4 groups never straddle a 16-column block) and
    //     the upper triangles of the diagonal blocks (T is also zero on its diagonal: set in (3))
    for (int i = threadIdx.x; i < CS * CS / 4; i += NT) {
        const int r = i / 16, s = (i % 16) * 4;
        if (s / 16 > r / 16) {
            *reinterpret_cast<float4 *>(&gA[r * CS + s]) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            sTA[r * 65 + s] = sTA[r * 65 + s + 1] = sTA[r * 65 + s + 2] = sTA[r * 65 + s + 3] = 0.0f;
        }
    }
    for (int i = threadIdx.x; i < 4 * 256; i += NT) {
        const int bd = i / 256, rl = (i % 256) / 16, sl = i % 16;
        if (sl > rl) {
            gA[(16 * bd + rl) * CS + 16 * bd + sl] = 0.0f;
            sTA[(16 * bd + rl) * 65 + 16 * bd + sl] = 0.0f;
        }
    }
    // (3) diagonal blocks, exact fp32 per element (every exponent G2_r - G2_s <= 0, s <= r):
    //     4 x 136 lower entries; threads take items t and t+256, warp 6 also 512+(t-192) (warps
    //     0..5 did the tensor-core blocks). Item -> (block bd, local row rl >= column sl).
    {
        const int nitems = (threadIdx.x >= 192 && threadIdx.x < 224) ? 3 : 2;
        for (int q = 0; q < nitems; q++) {
            const int it = q < 2 ? threadIdx.x + 256 * q : 512 + threadIdx.x - 192, bd = it / 136, pi = it % 136;
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
            gA[r * CS + s] = p.scale * aq;
            sTA[r * 65 + s] = sl < rl ? at : 0.0f;
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
        p.Qg[o] = p.scale * sget(&sQ[r * LDQ + d]) * gam;
        p.Kg[o] = kv * exp2f(gl - g2);
        sset(&sB[r * LDQ + d], gam * sget(&sB[r * LDQ + d]) * kv);
    }
    for (int d = threadIdx.x; d < KP; d += NT) p.Gl[ch * KP + d] = exp2f(sG[(CS - 1) * LDG + d] - sSt[d]);
    __syncthreads(); // k is dead from here: its region holds the solve's scratch

    // A = (I+T)^-1 in place, by 16x16 blocks (as k_prep)
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
    if (bwd)
        for (int i = threadIdx.x; i < CS * CS; i += NT) p.A[ch * CS * CS + i] = sTA[(i / CS) * 65 + i % CS];

    // Y = A E
    float *gY = p.Y + ch * CS * KP, *gU = p.U + ch * CS * VP;
    v2_mm_tc2<64, KP>(
        CS, [&](int r, int s) { return sTA[r * 65 + s]; }, [&](int s, int d) { return sget(&sB[s * LDQ + d]); },
        [&](int r, int d, float a0, float a1) { *reinterpret_cast<float2 *>(&gY[r * KP + d]) = make_float2(a0, a1); });
    // Z = w . v into the q/k region (no longer read), then U = A Z
    ST *sZ = sQ;
    const Tin *v = (const Tin *)p.v, *w = (const Tin *)p.w;
    for (int i = threadIdx.x; i < CS * VP; i += NT) {
        int r = i / VP, e = i % VP;
        float z = 0;
        if (r < len && e < p.V) {
            size_t idx = ((tok0 + r) * p.HV + hv) * p.V + e;
            z = ldf(w, idx) * ldf(v, idx);
        }
        sset(&sZ[r * LDZ + e], z);
    }
    __syncthreads();
    v2_mm_tc2<64, VP>(
        CS, [&](int r, int s) { return sTA[r * 65 + s]; }, [&](int s, int e) { return sget(&sZ[s * LDZ + e]); },
        [&](int r, int e, float a0, float a1) { *reinterpret_cast<float2 *>(&gU[r * VP + e]) = make_float2(a0, a1); });
}

// launch helper used by launch_all under GDN2_CUDA_V2 (same grid and shared memory as k_prep);
// says once on stderr which variant runs, so that logs show the switch took effect
template <class Tin, int KP, int VP>
static void v2_launch_prep(ChunkParams &p, int bwd, dim3 grid, int nsm, cudaStream_t st) {
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_prep_v2<Tin, KP, VP>, cudaFuncAttributeMaxDynamicSharedMemorySize, nsm);
#ifdef GDN2_CUDA_V3
        fprintf(stderr, "gdn2 cuda: GDN2_CUDA_V3 build (k_prep_v2, k_bk intra v3) KP=%d VP=%d\n", KP, VP);
#else
        fprintf(stderr, "gdn2 cuda: GDN2_CUDA_V2 build (k_prep_v2, k_bk intra v2) KP=%d VP=%d\n", KP, VP);
#endif
        attr = true;
    }
    if (p.nchunks > 0) k_prep_v2<Tin, KP, VP><<<grid, NT, nsm, st>>>(p, bwd);
}
