/* The CUDA backend's decode-step kernels (src/cuda/decode_nn.cu): the ops of the generation step
 * that the training kernels do not cover (src/backend/backend.h conv_step and attn_step; the
 * recurrence's step is gdn2_cuda_recurrent_fwd of include/gdn2_cuda.h). C API over device pointers,
 * queued on `stream` (cudaStream_t as void *); bf16 activations, fp32 caches and math. Semantics:
 * the CPU ops of the same names (src/backend/cpu.c cpu_conv_step, src/backend/nn.c
 * gdn2_nn_attn_step), which the tests compare against. Nothing here knows the model: a state is a
 * pointer, a stride and a slot index. Not public API. */
#ifndef GDN2_CUDA_DECODE_NN_H
#define GDN2_CUDA_DECODE_NN_H

#include <stddef.h>
#include <stdint.h>

#include "../util/sample.h" /* gdn2_sample_row_params */
#include "attn.h"          /* gdn2_cuda_attn_shape */

#ifdef __cplusplus
extern "C" {
#endif

/* n sequences, one token each: with h_i = hist + slots[i]*hist_stride ([W-1,D] fp32, oldest row
 * first; slots int32 [n] device or NULL = i), y[i] = silu(sum_{k<W} w[ch*W+k] xe_k) where xe is
 * (h_i ++ x[i]) (k increasing, as the training kernel), then h_i <- its last W-1 rows.
 * x, y bf16 [n,D]; w fp32 [D,W]. One thread per (sequence, channel). count parts in one launch: part p
 * on x + p*xs, y + p*ys (bf16 elements), hist + p*hs, w + p*ws (floats). */
int gdn2_cuda_conv_step(int64_t n, int64_t D, int64_t W, int count, const void *x, size_t xs, float *hist, size_t hs,
                        size_t hist_stride, const int32_t *slots, const float *w, size_t ws, void *y, size_t ys,
                        void *stream);

/* One query per sequence against its cache (backend.h attn_step): s->B = n sequences (s->T is
 * ignored), qkv bf16 [n,(nh+2ng)hs], pos int64 [n] and slots int32 [n] (or NULL = i) on the device;
 * sequence i's cache at cache + slots[i]*stride: keys [ng,cap,hs] then values [ng,cap,hs] fp32,
 * position p in row p % cap (s->window > 0) or p (full attention, p < cap: the caller checks).
 * Two kernels: the new key (RoPE'd) and value into row p, then per (sequence, query head) a block
 * of 8 warps, each warp one key at a time over its share of the visible positions (online softmax,
 * lane = hs/32 dims), the warps merged at the end. With fewer (sequence, head) pairs than SMs and
 * `part` given (part_floats floats of device memory, e.g. gdn2_cuda_nn_attn_part's), the positions are
 * split over up to 32 blocks per pair and a third kernel merges the splits in order (deterministic).
 * hs even and <= 256. o bf16 [n, nh*hs]. */
int gdn2_cuda_attn_step(const gdn2_cuda_attn_shape *s, const void *qkv, const int64_t *pos, const int32_t *slots,
                        int64_t cap, float *cache, size_t stride, void *o, float *part, size_t part_floats,
                        void *stream);

/* One token per row of logits [n, ld] fp32 (device; the first V of each row), row i under params[i]
 * (device), into tokens[i] (device): src/util/sample.h's semantics, bit for bit those of the CPU
 * sampler (src/ops/sample.c gdn2_sample_row) on the same logits. A cluster of 8 blocks per row for V <=
 * 65,536 and 8 n <= the SM count on GPUs with clusters (GDN2_CUDA_SAMPLE_CLUSTER=0: not), else one block
 * of 512 threads per row;
 * integer atomics and sums only, so the same call gives the same tokens. */
int gdn2_cuda_sample_rows(int64_t n, int64_t V, int64_t ld, const float *logits, const gdn2_sample_row_params *params,
                          int32_t *tokens, void *stream);

#ifdef __cplusplus
}
#endif
#endif
