// The intra-chunk VJPs of the two score products on tensor cores (k_bk, k_bk_tc).
#ifndef GDN2_CUDA_CHUNK_VJP_CUH
#define GDN2_CUDA_CHUNK_VJP_CUH

#include "chunk_load.cuh"
#include "chunk_mma.cuh"

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

#endif
