// The chunk's unit lower triangular solve A = (I+T)^-1 in shared memory (exact fp32 or split-bf16
// tensor cores for the block rows), used by k_prep / k_prep_tc.
#ifndef GDN2_CUDA_CHUNK_SOLVE_CUH
#define GDN2_CUDA_CHUNK_SOLVE_CUH

#include "chunk_mma.cuh"
#include "chunk_prof.cuh"

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

#endif
