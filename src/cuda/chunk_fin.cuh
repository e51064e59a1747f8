// k_fin, the last backward kernel: GVA group sum, L2-norm and gate VJPs, outputs in their dtypes.
#ifndef GDN2_CUDA_CHUNK_FIN_CUH
#define GDN2_CUDA_CHUNK_FIN_CUH

#include "common.cuh"
#include "chunk_params.cuh"

// ------------------------------------------------------------------------------------------------
// k_fin: per (chunk, key head h): sum the GVA group, L2-norm VJP dx = rstd (dy - (dy.y) y), gate
// VJP (df, and this chunk's parts of dA_log and ddt_bias), store in the output dtypes. One warp per row.
// With the gate in the kernel, dA_log and ddt_bias are sums over every chunk. They are made in a fixed
// order, so that a run gives the same bits as the last (they were float atomics, whose order followed the
// blocks' scheduling): a warp's rows in row order, the NT/32 warps in warp order (here), then the chunks
// in chunk order (k_fin_gate_sum). The per-chunk parts, double, go to part [nchunks][H][KP + 1] (ddt_bias's
// KP, then dA_log's): the scratch of dAqk, which nothing reads after k_bk (not dKi: on the fast path dKs,
// which k_fin reads, lives there; [nchunks][H][KP + 1] doubles fit in dAqk's [nchunks][HV][CS][CS] floats).
// ------------------------------------------------------------------------------------------------
template <int KP>
__device__ __forceinline__ double *fin_gate_part(const ChunkParams &p) { return reinterpret_cast<double *>(p.dAqk); }

template <class Tin, int KP>
__global__ __launch_bounds__(NT) void k_fin(ChunkParams p) {
    __shared__ double sDtb[NT / 32][KP];
    __shared__ double sDal[NT / 32];
    const int c = blockIdx.x, h = blockIdx.y;
    int n, len;
    size_t tok0;
    chunk_info(p, c, n, tok0, len);
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
        dal = warp_sum(dal);
#pragma unroll
        for (int i = 0; i < NPL; i++) sDtb[warp][lane + 32 * i] = dtb[i];
        if (lane == 0) sDal[warp] = dal;
        __syncthreads();
        double *part = fin_gate_part<KP>(p) + ((size_t)c * p.H + h) * (KP + 1);
        for (int d = threadIdx.x; d <= KP; d += NT) {
            double a = 0.0;
            for (int w = 0; w < NT / 32; w++) a += d < KP ? sDtb[w][d] : sDal[w];
            part[d] = a;
        }
    }
}

// dA_log [H] and ddt_bias [H*K] with the gate in the kernel: the chunks' parts (k_fin) added in chunk
// order, one block per key head, thread d channel d (d = KP: dA_log). Overwrites both.
template <int KP>
__global__ __launch_bounds__(KP + 32) void k_fin_gate_sum(ChunkParams p) {
    const int h = blockIdx.x, d = threadIdx.x;
    if (d > KP || (d < KP && d >= p.K)) return;
    const double *part = fin_gate_part<KP>(p) + (size_t)h * (KP + 1) + d;
    const size_t step = (size_t)p.H * (KP + 1);
    double a = 0.0;
    for (int c = 0; c < p.nchunks; c++) a += part[c * step];
    if (d < KP) p.ddt_bias[(size_t)h * p.K + d] = (float)a;
    else p.dA_log[h] = (float)a;
}

// k_fin, then (with the gate in the kernel) k_fin_gate_sum: the last kernels of both backward paths
template <class Tin, int KP>
static void launch_fin(const ChunkParams &p, cudaStream_t st) {
    k_fin<Tin, KP><<<dim3(p.nchunks, p.H), NT, 0, st>>>(p);
    if (p.gate) k_fin_gate_sum<KP><<<p.H, KP + 32, 0, st>>>(p);
}

#endif
