// k_fin, the last backward kernel: GVA group sum, L2-norm and gate VJPs, outputs in their dtypes.
#ifndef GDN2_CUDA_CHUNK_FIN_CUH
#define GDN2_CUDA_CHUNK_FIN_CUH

#include "common.cuh"
#include "chunk_params.cuh"

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

#endif
