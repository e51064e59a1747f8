// The chunk kernels' parameters (ChunkParams: dims, flags, tensors, workspace buffers), the chunk
// and sequence lookups, and the launchers' declarations: the interface between the host side
// (chunk.cu) and the kernel translation units (chunk_f32.cu, chunk_bf16.cu, chunk_fast.cu).
#ifndef GDN2_CUDA_CHUNK_PARAMS_CUH
#define GDN2_CUDA_CHUNK_PARAMS_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>

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

template <class T> struct is_bf16 { static constexpr bool value = false; };
template <> struct is_bf16<__nv_bfloat16> { static constexpr bool value = true; };

// the launch sequences of one (KP, VP, BV) configuration: the bf16 fast path (chunk_fast.cu) and the
// generic kernels for Tin = float or __nv_bfloat16 (chunk_f32.cu, chunk_bf16.cu)
cudaError_t chunk_launch_fast(ChunkParams &p, int KP, int VP, int BV, int bwd, int kept, cudaStream_t st);
template <class Tin>
cudaError_t chunk_launch_generic(ChunkParams &p, int KP, int VP, int BV, int bwd, int kept, cudaStream_t st);

#endif
