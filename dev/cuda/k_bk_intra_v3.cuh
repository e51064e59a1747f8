// Intra-chunk VJP block of k_bk (src/cuda/chunk.cu), version 3: tensor cores for the off-diagonal
// 16x16 blocks. Included in place of that block when built with -DGDN2_CUDA_V3 (which implies
// GDN2_CUDA_V2). The fp32 path keeps the exact call-2 block (k_bk_intra_v2.cuh).
// Written 2026-11-28 without a GPU: compiled and checked with -Xptxas -v only.
//
// The block computes, per chunk, channel d and row r (s, r2 rows of the same chunk):
//   dq_in_r = scale sum_{s<=r} dAqk_rs k_s 2^(G2_r-G2_s),   ep_r = sum_{s<r} dT_rs k_s 2^(G2_r-G2_s)
//   dkt_r   = sum_{r2>=r} (scale dAqk_r2,r q_r2 + dT_r2,r b_r2 k_r2) 2^(G2_r2-G2_r)
// and adds them (linearly) to dQs, dKs, dBs, dGs, plus the dQi/dKi terms and sEx.
// What changed against call 2 (k_bk_intra_v2.cuh, 8.41 ms for the whole k_bk at
// (8,4096,16,128,128) bf16, most of it this block: ~4,200 exp2 per channel and chunk):
// - Phase 1 (exact, fp32, thread = channel d): the call-2 loops restricted to the row's own 16x16
//   diagonal block (s and r2 in the same 16-row block): <= 16 steps instead of <= 64, ~1,100 exp2
//   per channel. It also owns the dQi/dKi terms and sEx, and writes dQs with '='.
// - Phase 2 (tensor cores, after a barrier): the off-diagonal blocks. Warp w owns output rows of
//   block t = w/2 and channel half w%2, so no two warps touch the same element and phase 2 adds
//   with plain read-modify-write. With a reference row per 16-row block (every exponent <= 0):
//     part A (t >= 1), ref = 16t:      for r in block t, s in blocks j < t,
//       dq_in_r += scale 2^(G2_r-G2_ref) sum_s dAqk_rs [k_s 2^(G2_ref-G2_s)]   (same for ep with dT);
//     part B (t <= 2), ref = 16(t+1):  for s in block t, r in blocks i > t,
//       dkt_s += 2^(G2_ref-G2_s) sum_r (scale dAqk_rs [q_r 2^(G2_r-G2_ref)] + dT_rs [b_r k_r 2^(...)]).
//   Each warp does 3 k-steps of 16 in total (t of part A, 3 - t of part B): balanced.
//   Operands are split into bf16 hi + lo and multiplied as hi*hi + hi*lo + lo*hi (3 mma): ~16
//   mantissa bits, better than the official kernels' TF32, well inside the bf16 bars.
// Expected gain (not measured): the exact loops shrink ~4x and the rest is ~150 mma per warp;
// k_bk 8.4 -> ~3.5-4.5 ms at (8,4096,16,128,128) bf16 (k_bk's other products and the global
// read-modify-writes remain).
// Uses the names of k_bk: sQ, sK, sB, sG, sdA (= dT), sdAqk, sSt, sEx, ob, p, LDK, KP, TC.
    if constexpr (!TC) {
#include "k_bk_intra_v2.cuh"
    } else {
        { // phase 1: diagonal blocks, exact
            constexpr int RS = NT / KP;
            const int d = threadIdx.x % KP, r0 = threadIdx.x / KP;
            const float g2l = sG[(CS - 1) * LDK + d];
            float ex = 0.0f;
            for (int r = r0; r < CS; r += RS) {
                const int b0 = r & ~15;
                const float g2r = sG[r * LDK + d], qr = sQ[r * LDK + d], kr = sK[r * LDK + d], br = sB[r * LDK + d];
                float dqa = 0, ep = 0, dkq = 0, dkb = 0;
                for (int s = b0; s <= r; s++) {
                    float e = exp2f(fminf(g2r - sG[s * LDK + d], 0.0f)) * sK[s * LDK + d];
                    dqa = fmaf(sdAqk[r * 65 + s], e, dqa);
                    ep = fmaf(sdA[r * 65 + s], e, ep); // dT is zero on the diagonal
                }
                for (int r2 = r; r2 < b0 + 16; r2++) {
                    float e = exp2f(fminf(sG[r2 * LDK + d] - g2r, 0.0f));
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
        { // phase 2: off-diagonal blocks on tensor cores; warp -> (row block t, channel half)
            constexpr int NF = KP / 16; // n8 fragments per channel half
            const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;
            const int t = wp >> 1, dbase = (wp & 1) * (KP / 2);
            float c1[NF][4], c2[NF][4];
            // part A: rows r of block t, columns s of blocks j < t, ref = 16 t
            if (t >= 1) {
                const int ref = 16 * t;
#pragma unroll
                for (int f = 0; f < NF; f++)
#pragma unroll
                    for (int e = 0; e < 4; e++) c1[f][e] = c2[f][e] = 0.0f;
                for (int j = 0; j < t; j++) {
                    uint32_t qh[4], ql[4], th[4], tl[4];
#pragma unroll
                    for (int m = 0; m < 4; m++) {
                        const int r = ref + gq + 8 * (m & 1), s = 16 * j + 2 * tq + 8 * (m >> 1);
                        v2_split(sdAqk[r * 65 + s], sdAqk[r * 65 + s + 1], qh[m], ql[m]);
                        v2_split(sdA[r * 65 + s], sdA[r * 65 + s + 1], th[m], tl[m]);
                    }
#pragma unroll
                    for (int f = 0; f < NF; f++) {
                        const int d = dbase + 8 * f + gq;
                        const float gref = sG[ref * LDK + d];
                        uint32_t bh[2], bl[2];
#pragma unroll
                        for (int m = 0; m < 2; m++) {
                            const int s = 16 * j + 2 * tq + 8 * m;
                            v2_split(sK[s * LDK + d] * exp2f(fminf(gref - sG[s * LDK + d], 0.0f)),
                                     sK[(s + 1) * LDK + d] * exp2f(fminf(gref - sG[(s + 1) * LDK + d], 0.0f)), bh[m], bl[m]);
                        }
                        v2_mma3(c1[f], qh, ql, bh[0], bh[1], bl[0], bl[1]);
                        v2_mma3(c2[f], th, tl, bh[0], bh[1], bl[0], bl[1]);
                    }
                }
#pragma unroll
                for (int f = 0; f < NF; f++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int r = ref + gq + 8 * (e >> 1), d = dbase + 8 * f + 2 * tq + (e & 1);
                        const float x = exp2f(fminf(sG[r * LDK + d] - sG[ref * LDK + d], 0.0f));
                        const float dq_in = p.scale * c1[f][e] * x, ep = c2[f][e] * x;
                        const float qr = sQ[r * LDK + d], kr = sK[r * LDK + d], br = sB[r * LDK + d];
                        const size_t o = ob + r * KP + d;
                        p.dQs[o] += dq_in;
                        p.dKs[o] += br * ep;
                        p.dBs[o] += kr * ep;
                        p.dGs[o] += qr * dq_in + br * kr * ep;
                    }
            }
            // part B: rows s of block t, summed over rows r of blocks i > t, ref = 16 (t + 1)
            if (t <= 2) {
                const int ref = 16 * (t + 1);
#pragma unroll
                for (int f = 0; f < NF; f++)
#pragma unroll
                    for (int e = 0; e < 4; e++) c1[f][e] = c2[f][e] = 0.0f;
                for (int i = t + 1; i < 4; i++) {
                    uint32_t qh[4], ql[4], th[4], tl[4]; // A operands dAqk^T, dT^T: (m = s, k = r)
#pragma unroll
                    for (int m = 0; m < 4; m++) {
                        const int s = 16 * t + gq + 8 * (m & 1), r = 16 * i + 2 * tq + 8 * (m >> 1);
                        v2_split(sdAqk[r * 65 + s], sdAqk[(r + 1) * 65 + s], qh[m], ql[m]);
                        v2_split(sdA[r * 65 + s], sdA[(r + 1) * 65 + s], th[m], tl[m]);
                    }
#pragma unroll
                    for (int f = 0; f < NF; f++) {
                        const int d = dbase + 8 * f + gq;
                        const float gref = sG[ref * LDK + d];
                        uint32_t qbh[2], qbl[2], bbh[2], bbl[2];
#pragma unroll
                        for (int m = 0; m < 2; m++) {
                            const int r = 16 * i + 2 * tq + 8 * m;
                            const float x0 = exp2f(fminf(sG[r * LDK + d] - gref, 0.0f));
                            const float x1 = exp2f(fminf(sG[(r + 1) * LDK + d] - gref, 0.0f));
                            v2_split(sQ[r * LDK + d] * x0, sQ[(r + 1) * LDK + d] * x1, qbh[m], qbl[m]);
                            v2_split(sB[r * LDK + d] * sK[r * LDK + d] * x0, sB[(r + 1) * LDK + d] * sK[(r + 1) * LDK + d] * x1,
                                     bbh[m], bbl[m]);
                        }
                        v2_mma3(c1[f], qh, ql, qbh[0], qbh[1], qbl[0], qbl[1]);
                        v2_mma3(c2[f], th, tl, bbh[0], bbh[1], bbl[0], bbl[1]);
                    }
                }
#pragma unroll
                for (int f = 0; f < NF; f++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int s = 16 * t + gq + 8 * (e >> 1), d = dbase + 8 * f + 2 * tq + (e & 1);
                        const float y = exp2f(fminf(sG[ref * LDK + d] - sG[s * LDK + d], 0.0f));
                        const float dkt = (p.scale * c1[f][e] + c2[f][e]) * y;
                        const size_t o = ob + s * KP + d;
                        p.dKs[o] += dkt;
                        p.dGs[o] -= sK[s * LDK + d] * dkt;
                    }
            }
        }
    }
