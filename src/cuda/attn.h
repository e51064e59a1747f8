/* Causal softmax attention for the CUDA backend (src/cuda/attn.cu): RoPE split of the fused qkv
 * projection, a flash-attention-style forward and backward (bf16 in/out, fp32 softmax statistics),
 * full causal or sliding window, GQA. C API over device pointers, queued on `stream`
 * (cudaStream_t as void *). The semantics are those of the CPU ops in src/backend/nn.c
 * (gdn2_nn_rope_split, gdn2_nn_attn_fwd, ...), which the tests compare against.
 * Not public API. */
#ifndef GDN2_CUDA_ATTN_H
#define GDN2_CUDA_ATTN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t B, T;        /* sequences, tokens per sequence                                   */
    int64_t n_head;      /* query heads                                                      */
    int64_t n_groups;    /* kv heads (n_head % n_groups == 0)                                */
    int64_t hs;          /* head size: 64 or 128                                             */
    int64_t window;      /* 0: full causal; else query t sees keys t-window+1 .. t            */
    float rope_base;     /* 10000                                                            */
    int64_t pos0;        /* rope_split(_bwd): token t at position pos0 + t (0 unless a prefill
                          * continues a sequence)                                            */
} gdn2_cuda_attn_shape;

/* qkv [B*T, (nh+2ng)*hs] bf16 (per group [q x nh/ng, k, v]) -> q [B,nh,T,hs], k, v [B,ng,T,hs]
 * bf16, rotate-half RoPE applied to q and k at positions 0..T-1 (angles in fp32 as lit_gpt:
 * theta_i = 1/base^(2i/hs), angle = t*theta_i). */
int gdn2_cuda_rope_split(const gdn2_cuda_attn_shape *s, const void *qkv, void *q, void *k, void *v, void *stream);
/* its VJP: dqkv written (bf16) */
int gdn2_cuda_rope_split_bwd(const gdn2_cuda_attn_shape *s, const void *dq, const void *dk, const void *dv,
                             void *dqkv, void *stream);
/* o [B,T,nh*hs] bf16 = softmax(q k^T / sqrt(hs), causal + window) v;  lse [B,nh,T] fp32 */
int gdn2_cuda_attn_fwd(const gdn2_cuda_attn_shape *s, const void *q, const void *k, const void *v, void *o,
                       float *lse, void *stream);
/* dq [B,nh,T,hs], dk, dv [B,ng,T,hs] (bf16) written; deterministic (no atomics on dk/dv across
 * query blocks). Scratch, if any, is allocated stream-ordered and freed in the call. */
int gdn2_cuda_attn_bwd(const gdn2_cuda_attn_shape *s, const void *q, const void *k, const void *v, const void *o,
                       const float *lse, const void *dO, void *dq, void *dk, void *dv, void *stream);

#ifdef __cplusplus
}
#endif
#endif
