// The generic chunk kernels (fp32 or bf16 inputs, any K, V <= 128; fp32 workspace) and their launch
// sequence, included by chunk_f32.cu and chunk_bf16.cu: one translation unit per input type so that
// a parallel build compiles them at the same time. chunk.cu picks the path.
#ifndef GDN2_CUDA_CHUNK_GENERIC_CUH
#define GDN2_CUDA_CHUNK_GENERIC_CUH

#include "chunk_device.cuh"
#include "host.cuh"


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
// sEx [BK_EXN][KP]: the per-channel sum_r k.dKi-term in parts written once each and added in a fixed order
// (it was a shared-memory float atomicAdd, whose order followed the warps' scheduling): the tensor-core path's
// 4 row blocks, or the scalar path's NT / KP row phases
template <int KP>
__host__ __device__ constexpr int bk_exn() { return NT / KP > 4 ? NT / KP : 4; }
template <int KP>
constexpr int bk_smem_floats() { return 5 * CS * (KP + 1) + 3 * CS * 65 + bk_exn<KP>() * KP + KP; }

template <class Tin, int KP, int VP>
__global__ __launch_bounds__(NT) void k_bk(ChunkParams p) {
    extern __shared__ float sm[];
    constexpr int LDK = KP + 1;
    float *sQ = sm, *sK = sQ + CS * LDK, *sB = sK + CS * LDK, *sG = sB + CS * LDK, *sTmp = sG + CS * LDK;
    float *sA = sTmp + CS * LDK, *sdA = sA + CS * 65, *sdAqk = sdA + CS * 65, *sEx = sdAqk + CS * 65;
    float *sSt = sEx + bk_exn<KP>() * KP;
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
        // ex: this thread's two rows (h = 0 then 1) per channel (qd, f, c), then the warp's 8 gq lanes by a
        // butterfly, then row block t's part in sEx[t][.]
        const int lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3, t = threadIdx.x / 64;
        float ex[KP / 64][8];
#pragma unroll
        for (int qd = 0; qd < KP / 64; qd++)
#pragma unroll
            for (int u = 0; u < 8; u++) ex[qd][u] = 0.0f;
#pragma unroll
        for (int qd = 0; qd < KP / 64; qd++)
            intra_vjp_tc<LDK, 65>(sQ, sK, sB, sG, sdAqk, sdA, p.scale, (threadIdx.x / 32 & 1) * (KP / 2) + qd * 32, false,
                              [&](int, int f, int r, int d0, const float(&dq_in)[2], const float(&ept)[2], const float(&dkt)[2]) {
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
                    ex[qd][2 * f + c] += kr * dki;
                }
                *reinterpret_cast<float2 *>(&p.dQs[o]) = vq;
                *reinterpret_cast<float2 *>(&p.dKs[o]) = vk;
                *reinterpret_cast<float2 *>(&p.dBs[o]) = vb;
                *reinterpret_cast<float2 *>(&p.dGs[o]) = vg;
            });
#pragma unroll
        for (int qd = 0; qd < KP / 64; qd++)
#pragma unroll
            for (int u = 0; u < 8; u++) {
#pragma unroll
                for (int o = 4; o < 32; o <<= 1) ex[qd][u] += __shfl_xor_sync(0xffffffffu, ex[qd][u], o);
                if (gq == 0)
                    sEx[t * KP + (threadIdx.x / 32 & 1) * (KP / 2) + qd * 32 + 8 * (u >> 1) + 2 * tq + (u & 1)] = ex[qd][u];
            }
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
        sEx[r0 * KP + d] = ex; // row phase r0's part
    }
    __syncthreads();
    // dg = reverse cumulative sum of dG; G2_last (row 63, flat after the last valid row) also
    // receives gamma_last rowsum(S0.dSC) + sum_r k.dKi-term
    for (int d = threadIdx.x; d < KP; d += NT) {
        float ext = sEx[d];
        for (int i = 1; i < (TC ? 4 : NT / KP); i++) ext += sEx[i * KP + d];
        float acc = exp2f(sG[(CS - 1) * LDK + d] - sSt[d]) * p.dGl[ch * KP + d] + ext;
        for (int r = CS - 1; r >= 0; r--) {
            acc += p.dGs[ob + r * KP + d];
            p.dGs[ob + r * KP + d] = acc;
        }
    }
}

// kept: the forward's intermediates live in the workspace across the calls (keep_for_backward /
// reuse_forward): the forward's prep also stores A, the backward skips prep and the forward scan.
template <class Tin, int KP, int VP, int BV>
static cudaError_t launch_all(ChunkParams &p, int bwd, int kept, cudaStream_t st) {
    constexpr bool TC = is_bf16<Tin>::value;
    typedef typename std::conditional<TC, __nv_bfloat16, float>::type ST;
    const int nsm_prep = prep_smem_bytes<ST, KP>(), nsm_state = state_smem_floats<KP, BV>() * 4;
    const int nsm_out = out_smem_floats<KP, VP>() * 4, nsm_bstate = bstate_smem_floats<KP, BV>() * 4;
    const int nsm_bv = bv_smem_floats<VP>() * 4, nsm_bk = bk_smem_floats<KP>() * 4;
    static PerDevice attr; // the shared-memory limits are set once per device
    const cudaError_t ea = once_per_device(attr, [&] {
        const cudaFuncAttribute m = cudaFuncAttributeMaxDynamicSharedMemorySize;
        cudaError_t e;
        if constexpr (TC) e = cudaFuncSetAttribute(k_prep_tc<Tin, KP, VP, float>, m, nsm_prep);
        else e = cudaFuncSetAttribute(k_prep<Tin, KP, VP>, m, nsm_prep);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_state<KP, VP, BV, TC>, m, nsm_state);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_out<Tin, KP, VP>, m, nsm_out);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_bstate<Tin, KP, VP, BV>, m, nsm_bstate);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_bv<Tin, KP, VP>, m, nsm_bv);
        if (e == cudaSuccess) e = cudaFuncSetAttribute(k_bk<Tin, KP, VP>, m, nsm_bk);
        return e;
    });
    if (ea != cudaSuccess) return ea;
    Prof pr(st);
    const dim3 gc(p.nchunks, p.HV), gs(VP / BV, p.nseq * p.HV);
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
        launch_fin<Tin, KP>(p, st);
        pr.mark("fin");
    }
    pr.report(kept ? "bwd (reuse)" : "bwd");
    return cudaGetLastError();
}

template <class Tin>
cudaError_t chunk_launch_generic(ChunkParams &p, int KP, int VP, int BV, int bwd, int kept, cudaStream_t st) {
    if (KP == 64 && VP == 64) return BV == 16 ? launch_all<Tin, 64, 64, 16>(p, bwd, kept, st) : launch_all<Tin, 64, 64, 32>(p, bwd, kept, st);
    if (KP == 64 && VP == 128) return BV == 16 ? launch_all<Tin, 64, 128, 16>(p, bwd, kept, st) : launch_all<Tin, 64, 128, 32>(p, bwd, kept, st);
    if (KP == 128 && VP == 64) return BV == 16 ? launch_all<Tin, 128, 64, 16>(p, bwd, kept, st) : launch_all<Tin, 128, 64, 32>(p, bwd, kept, st);
    if (KP == 128 && VP == 128) return BV == 16 ? launch_all<Tin, 128, 128, 16>(p, bwd, kept, st) : launch_all<Tin, 128, 128, 32>(p, bwd, kept, st);
    return cudaErrorInvalidValue;
}

#endif
