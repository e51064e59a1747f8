/* gdn2 token-mixing layer: the official GatedDeltaNet2 (lit_gpt/gdn2.py) on the CPU, fp32, with
 * forward, backward (full VJP) and a constant-memory decode step (src/model/layer_gdn2.c).
 * docs/LAYER.md lists the parameters of each mixer variant and the decode-state layout. */
#ifndef GDN2_LAYER_H
#define GDN2_LAYER_H

#include "gdn2_export.h"

#include "gdn2_io.h"
#include "gdn2_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { GDN2_MIXER_GDN2 = 0, GDN2_MIXER_KDA = 1, GDN2_MIXER_GDN = 2 } gdn2_mixer_kind;

/* Which recurrence kernel the forward / backward / step use: the fp32 chunk kernels (the default,
 * 0), or the float64 reference (gdn2_ref_fwd/bwd through a float<->double adapter; exact but slow:
 * for conformance tests and finite differences). */
typedef enum { GDN2_KERNEL_CHUNK = 0, GDN2_KERNEL_REFERENCE = 1 } gdn2_layer_kernel;

typedef struct {
    int64_t hidden;              /* d (hidden_size)                                   */
    int64_t H, HV, K, V;         /* key heads, value heads, key head dim, value head dim (V = K*expand_v) */
    int64_t conv_size;           /* short conv kernel, 4                              */
    int allow_neg_eigval;        /* b <- 2b                                           */
    float norm_eps;              /* 1e-5                                              */
    gdn2_mixer_kind mixer;       /* gdn2 (official), kda or gdn variant, same state size */
    gdn2_layer_kernel kernel;    /* recurrence kernel, GDN2_KERNEL_CHUNK (0) unless a caller asks */
    int keep_chunk;              /* 1: the forward also keeps the chunk kernel's intermediates in the
                                    activations (the "reserve": O(B·T·K·V/64) more bytes) and the
                                    backward reads them instead of recomputing them (keep mode; a
                                    run-time choice like kernel). 0: recompute (the default). */
} gdn2_layer_cfg;

/* The flat parameter block: every tensor starts at a multiple of GDN2_PARAM_ALIGN floats (256 bytes
 * in fp32, 128 in bf16: the alignment the CUDA backend's matrix products want), the gaps between
 * tensors are zeros. So a block holds more floats (gdn2_layer_param_count) than parameters (the sum
 * of gdn2_layer_params' numel); files store the tensors by name, never the block. */
#define GDN2_PARAM_ALIGN 64

/* The one rounding rule of the flat block's offsets (the model's table and the layer's slots): up
 * to a multiple of GDN2_PARAM_ALIGN floats (256 bytes fp32, 128 bf16: cuBLASLt's TMA kernels on every
 * weight); the gaps are zeros. Saturates at SIZE_MAX (overflowing configs are refused elsewhere). */
static inline size_t gdn2_param_align_up(size_t off) {
    const size_t a = GDN2_PARAM_ALIGN;
    return off > SIZE_MAX - (a - 1) ? SIZE_MAX : (off + a - 1) / a * a;
}

typedef struct {
    char name[96];               /* official name relative to the layer, e.g. "q_proj.weight", "A_log" */
    int ndim; int64_t shape[4];
    size_t offset, numel;        /* in floats, into the layer's flat parameter block (offset a multiple of GDN2_PARAM_ALIGN) */
    int no_decay;                /* exempt from weight decay when the optimizer is asked to exempt (A_log, dt_bias, norm weights, biases) */
} gdn2_param_info;

/* Validate a config (positive sizes, HV % H == 0, conv_size >= 1, eps > 0, known mixer and kernel). */
GDN2_API int    gdn2_layer_check(const gdn2_layer_cfg *c);
GDN2_API int    gdn2_layer_params(const gdn2_layer_cfg *c, gdn2_param_info *out, int cap); /* returns the count; out may be NULL */
/* Floats in the flat block (alignment gaps included): the size to allocate for params / dparams.
 * Not the number of parameters, which is the sum of gdn2_layer_params' numel. */
GDN2_API size_t gdn2_layer_param_count(const gdn2_layer_cfg *c);
GDN2_API void   gdn2_layer_init(const gdn2_layer_cfg *c, float *params, uint64_t seed);    /* official init (docs/LAYER.md) */
GDN2_API size_t gdn2_layer_act_size(const gdn2_layer_cfg *c, int64_t B, int64_t T);        /* floats saved by forward for backward (O(B·T·d); keep_chunk adds O(B·T·K·V/64)) */
GDN2_API size_t gdn2_layer_state_size(const gdn2_layer_cfg *c);                             /* floats of decode state per sequence: conv caches + recurrent state */

/* x,y [B,T,d]. acts: NULL for inference, else a buffer of gdn2_layer_act_size floats filled for backward.
 * states: NULL, or [B, state_size]: the forward starts from these states and writes the final states back
 * (prefill, chunked prefill; zero-filled states = fresh sequence). */
GDN2_API int gdn2_layer_forward(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B, int64_t T,
                       float *y, float *acts, float *states, int n_threads);
/* dx written (not accumulated); dparams accumulated (+=) into the flat gradient block. */
GDN2_API int gdn2_layer_backward(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B, int64_t T,
                        const float *acts, const float *dy, float *dx, float *dparams, int n_threads);
/* one token for n sequences: x,y [n,d]; states [n, state_size] updated in place (constant memory). */
GDN2_API int gdn2_layer_step(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t n, float *states,
                    float *y, int n_threads);

/* Forward (and, when dy is not NULL, backward: dx written, dparams accumulated) of one layer on
 * device "cpu" or "cuda" from host fp32 tensors: upload, run on that backend, download. On CUDA the
 * layer runs bf16-mixed (inputs, weights and activations rounded to bf16 where the matrix products
 * read them; docs/BACKEND.md). The conformance entry point of `gdn2 layer --device`. */
GDN2_API int gdn2_layer_run(const char *device, const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B,
                   int64_t T, float *y, const float *dy, float *dx, float *dparams, int n_threads);

/* ---- layer files (src/model/layer_file.c): one layer in a safetensors file, as the official
 * fixture (tests/fixtures/official/layer.safetensors) stores it -------------------------------- */
/* The config from the __metadata__ "meta" JSON's "config" object (the official kwargs:
 * hidden_size, head_dim (128), num_heads (16), num_v_heads (null = num_heads), expand_v (1),
 * conv_size (4), allow_neg_eigval (false), norm_eps (1e-5), mixer ("gdn2"|"kda"|"gdn")); kernel is
 * GDN2_KERNEL_CHUNK. GDN2_ERR_FORMAT, naming the file and the key, for a missing or bad entry. */
GDN2_API int gdn2_layer_config_from_file(const gdn2_st *st, gdn2_layer_cfg *c);
/* Every parameter <prefix><official name> (prefix "param." in the fixture), each required with
 * exactly its expected shape (errors name the file, tensor and shape), into the flat block params
 * (gdn2_layer_param_count floats, the alignment gaps zeroed). */
GDN2_API int gdn2_layer_load_params(const gdn2_layer_cfg *c, const gdn2_st *st, const char *prefix, float *params);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_LAYER_H */
