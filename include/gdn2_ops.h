/* gdn2 — Gated DeltaNet-2 in C and CUDA C: the op API (src/ops) — the problem description, the
 * tensors of one call, and the CPU ops (float64 reference, recurrent, chunkwise, decode, KDA/GDN).
 * include/gdn2.h includes it with every other public header.
 *
 * Conventions (ggml-like):
 *   - every symbol is prefixed gdn2_; functions return an int status (GDN2_OK = 0) and leave a
 *     human-readable message in gdn2_last_error() on failure;
 *   - the caller owns all memory; ops that need scratch space take an optional workspace
 *     (NULL: the op allocates and frees it itself);
 *   - tensors are dense, row-major, fp32 unless stated, in the official/fla layout:
 *       q, k, g, b : [B, T, H,  K]      (key heads)
 *       v, w, o    : [B, T, HV, V]      (value heads; HV % H == 0, value head hv reads key head hv/(HV/H))
 *       states     : [N, HV, K, V]      (N = B, or the number of packed sequences with cu_seqlens)
 *
 * The math: S_t = (I - k_t (b_t*k_t)^T) Diag(exp(g_t)) S_{t-1} + k_t (w_t*v_t)^T,  o_t = scale * S_t^T q_t
 * See docs/ALGORITHM.md for the chunkwise (WY) form and the backward pass.
 */
#ifndef GDN2_OPS_H
#define GDN2_OPS_H

#include "gdn2_export.h"

#include <stddef.h>
#include <stdint.h>

#include "gdn2_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* problem description                                                                        */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
    int64_t B, T;  /* batch and time; with cu_seqlens B must be 1 and T is the packed length */
    int64_t H, HV; /* key heads (q,k,g,b) and value heads (v,w,o,state); HV % H == 0        */
    int64_t K, V;  /* key and value head dims                                               */
} gdn2_dims;

typedef struct {
    float scale;              /* query scale; 0 means K^-1/2                                       */
    int qk_l2norm;            /* 1: q,k <- x / sqrt(sum x^2 + 1e-6) inside the op                   */
    int gate_in_kernel;       /* 1: g holds the raw pre-activation f and                            */
                              /*    g_eff = -exp(A_log[h]) * softplus(f + dt_bias[h*K + c])         */
    float lower_bound;        /* gate_in_kernel and lower_bound < 0:                                */
                              /*    g_eff = lower_bound * sigmoid(exp(A_log[h]) * (f + dt_bias))    */
    const int64_t *cu_seqlens; /* [n_seqs+1] packed sequence offsets (B must be 1), or NULL        */
    int64_t n_seqs;           /* number of packed sequences when cu_seqlens != NULL                 */
    int n_threads;            /* CPU threads; 0 = OpenMP default                                    */
    void *workspace;          /* optional scratch (see gdn2_chunk_workspace_size); NULL = allocate  */
    size_t workspace_size;
    int trust_values;         /* 1: skip the entry point's scan of the input values (gdn2_check_inputs): */
                              /*    for callers that vouch for them or catch non-finite results       */
                              /*    themselves (the model's layers: a diverged run is caught at its   */
                              /*    loss). 0 (default): every CPU entry point scans its inputs.        */
} gdn2_opts;

/* Largest accepted value of each of B, T, H, HV, K, V, n_seqs, and of a token row H*K or HV*V. */
#define GDN2_MAX_DIM ((int64_t)2147483647)

/* Validate dims and options (HV % H, cu_seqlens increasing and ending at T, lower_bound range,
 * ...). Every dimension is bounded on its own by GDN2_MAX_DIM (so that T = 0 cannot hide a huge
 * B, H or K), and every tensor ([B,T,H,K], [B,T,HV,V], [N,HV,K,V], T counted as at least 1) must be
 * addressable: its size in float64 bytes fits in int64. Returns GDN2_OK or GDN2_ERR_ARG with a
 * message naming the offending value. It looks at no tensor; see gdn2_check_inputs for values. */
GDN2_API int gdn2_check(const gdn2_dims *d, const gdn2_opts *o);
/* Number of state slots: B, or n_seqs with cu_seqlens. */
GDN2_API int64_t gdn2_num_states(const gdn2_dims *d, const gdn2_opts *o);
/* Effective query scale (o->scale, or K^-1/2 when 0). */
GDN2_API float gdn2_scale(const gdn2_dims *d, const gdn2_opts *o);

/* ------------------------------------------------------------------------------------------ */
/* tensors of one call (fp32)                                                                 */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
    const float *q, *k, *v, *g, *b, *w; /* inputs (shapes above)                              */
    const float *h0;                    /* [N,HV,K,V] initial state, or NULL (zero)           */
    const float *A_log, *dt_bias;       /* [H], [H*K]; read only when gate_in_kernel; either  */
                                        /* may be NULL: zero (as fla with A_log / dt_bias None) */
    float *o;                           /* out: [B,T,HV,V]                                    */
    float *ht;                          /* out: [N,HV,K,V] final state, or NULL               */
} gdn2_fwd_tensors;

typedef struct {
    const float *d_o;           /* upstream gradient of o [B,T,HV,V]                              */
    const float *dht;           /* upstream gradient of ht [N,HV,K,V], or NULL (zero)             */
    float *dq, *dk, *dv, *dg, *db, *dw; /* out, shapes of q,k,v,g,b,w; dg is w.r.t. the g passed */
                                        /* (the raw f when gate_in_kernel)                        */
    float *dh0;                 /* out [N,HV,K,V], or NULL                                        */
    float *dA_log, *ddt_bias;   /* out [H], [H*K] when gate_in_kernel, else ignored; NULL: not    */
                                /* written (the CPU ops; the CUDA device API needs both)          */
} gdn2_bwd_tensors;

/* float64 twins, used by the reference implementation only */
typedef struct {
    const double *q, *k, *v, *g, *b, *w, *h0, *A_log, *dt_bias;
    double *o, *ht;
} gdn2_fwd_tensors_f64;
typedef struct {
    const double *d_o, *dht;
    double *dq, *dk, *dv, *dg, *db, *dw, *dh0, *dA_log, *ddt_bias;
} gdn2_bwd_tensors_f64;

/* Value checks: gdn2_check, then every input that is not NULL (q, k, v, g, b, w, h0; A_log and
 * dt_bias with gate_in_kernel; do and dht of g when g is not NULL) must be finite, and g must be
 * <= 0 (a log-decay: the decay exp(g) <= 1) unless gate_in_kernel (then g is the raw gate
 * pre-activation, any finite value). GDN2_ERR_ARG with a message naming the first tensor (in the
 * order above) that has a bad element, the index of its first one and the value, e.g.
 * "q[0,17,1,3] = nan (shape [2,64,2,16]): inputs must be finite". One memory-bound pass over the
 * inputs (on o->n_threads threads when large): measurable next to a single-threaded op, +8.6% on a
 * forward and +4.6% on a backward at K = V = 64 (docs/ALGORITHM.md §8).
 * Every CPU entry point below (chunk, recurrent, reference, decode, KDA/GDN collapse) runs these
 * checks on its inputs itself (unless o->trust_values) and returns that error; all but the chunk
 * forward and backward before computing anything. Those two test the rows of q, k, v, g, b, w (and
 * the backward those of do) as they read them (one read of each row instead of two) and scan the
 * rest (h0, A_log, dt_bias, dht) first: on a bad row they return the same error after the kernel,
 * and their outputs then hold unspecified values. The decode step
 * checks the rows it runs (slots[i] >= 0) and not its state pool (the op's own state, carried from
 * step to step). The CUDA entry points do not (include/gdn2_cuda.h): call these on the host first. */
GDN2_API int gdn2_check_inputs(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const gdn2_bwd_tensors *g);
GDN2_API int gdn2_check_inputs_f64(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t,
                          const gdn2_bwd_tensors_f64 *g);

/* ------------------------------------------------------------------------------------------ */
/* CPU kernels (src/ops)                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* float64 token-serial recurrence and its exact backward (BPTT): the oracle. */
GDN2_API int gdn2_ref_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t);
GDN2_API int gdn2_ref_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t,
                 const gdn2_bwd_tensors_f64 *g);

/* fp32 token-serial forward (the decode semantics over a whole sequence). */
GDN2_API int gdn2_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t);

/* fp32 chunkwise (WY, chunk 64) forward and gate-aware backward. The backward recomputes what it
 * needs from the inputs (nothing is saved between the calls). */
#define GDN2_CHUNK 64
GDN2_API size_t gdn2_chunk_workspace_size(const gdn2_dims *d, const gdn2_opts *o, int backward);
GDN2_API int gdn2_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t);
GDN2_API int gdn2_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                   const gdn2_bwd_tensors *g);

/* Saved forward (reserve space, as gdn2_cuda_chunk_fwd's keep_for_backward): gdn2_chunk_fwd_save
 * is gdn2_chunk_fwd (same outputs, bit for bit) that also leaves in `saved` what the backward
 * would otherwise recompute in a pass of its own over the chunks: every chunk's start state and,
 * when C·(K+V) + C² <= 3·K·V (C = 64; e.g. K = V >= 64), its WY inverse A, [Y | R] and the
 * scores Aqk. gdn2_chunk_bwd_saved is gdn2_chunk_bwd without that pass; it must get the same d,
 * o (but for workspace and n_threads) and input tensors t (same contents) as the forward that
 * filled `saved`, else its result is undefined (nothing can be detected). Its gradients equal
 * gdn2_chunk_bwd's bit for bit when every chunk's decay span is <= 24 (one score tile), else to
 * ~1e-7 (the forward computes T in one GEMM with Aqk: other rounding). gdn2_chunk_saved_size: the
 * bytes of `saved` (0 on bad dims / opts); smaller is GDN2_ERR_ARG. Per chunk and value head
 * 16 + 64 KiB at K = V = 64, 64 + 96 KiB at K = V = 128. o->workspace, when set, is sized by
 * gdn2_chunk_workspace_size(d, o, 0) for the forward, (d, o, 1) for the backward. */
GDN2_API size_t gdn2_chunk_saved_size(const gdn2_dims *d, const gdn2_opts *o);
GDN2_API int gdn2_chunk_fwd_save(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, void *saved,
                        size_t saved_size);
GDN2_API int gdn2_chunk_bwd_saved(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                         const gdn2_bwd_tensors *g, const void *saved, size_t saved_size);

/* One decode step for a batch of n = d->B sequences (d->T is ignored, one token each).
 * q,k,g,b [n,H,K]; v,w,o [n,HV,V]. Sequence i reads and updates in place the state
 * state_pool[slots[i]] ([n_slots,HV,K,V]); slots[i] < 0 skips the row (o is zeroed). Slots may be
 * reused across calls (continuous batching); two rows may not share a slot in one call.
 * state_dtype GDN2_STATE_BF16: the pool holds bf16 values (uint16_t bit patterns, half the bytes);
 * each step widens the state to fp32, updates it in fp32 and rounds it back to nearest even
 * (accuracy cost over 10k steps: docs/ALGORITHM.md, "Decode state in bf16"). */
enum { GDN2_STATE_F32 = 0, GDN2_STATE_BF16 = 1 };
typedef struct {
    const float *q, *k, *v, *g, *b, *w;
    const float *A_log, *dt_bias; /* gate_in_kernel only */
    float *o;
    void *state_pool;             /* float (GDN2_STATE_F32) or uint16_t bf16 (GDN2_STATE_BF16) */
    int64_t n_slots;
    const int32_t *slots;
    int state_dtype;              /* GDN2_STATE_F32 (0, the default) or GDN2_STATE_BF16 */
} gdn2_decode_tensors;
GDN2_API int gdn2_decode_step(const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t);

/* Multi-token decode / speculative verify: d->T tokens for each of n = d->B sequences in one call
 * (no cu_seqlens), the same tensors as gdn2_decode_step with a time axis: q,k,g,b [n,T,H,K],
 * v,w,o [n,T,HV,V]; sequence i starts from state_pool[slots[i]] (slots[i] < 0 skips the row: its T
 * outputs are zeroed, its inputs and snap_slots entries are not read). Within the call the state
 * stays fp32 (a bf16 pool is widened once and rounded only where a state is stored), so for an
 * fp32 pool the outputs and states equal T gdn2_decode_step calls; for a bf16 pool they are the
 * GPU kernel's (gdn2_cuda_recurrent_fwd), one rounding per stored state instead of one per token.
 *   snap_slots NULL: the state after the last token is written back to slots[i] (in place).
 *   snap_slots [n,T]: the state after token j of sequence i is written to pool slot
 *     snap_slots[i*T+j] and slots[i] is left untouched. Committing a accepted draft tokens is then
 *     re-pointing the sequence: a = 0 keeps slots[i], a >= 1 takes snap_slots[i*T+a-1]; the other
 *     slots are free again. No state is copied (docs/ALGORITHM.md §7a). Every snap_slots entry of
 *     a row that runs must be in [0, n_slots), distinct from every other entry and from every
 *     slots[i] of the call; GDN2_ERR_ARG naming the index otherwise (nothing is written).
 * gdn2_decode_step is this call with T = 1 and snap_slots NULL. T is bounded by GDN2_MAX_DIM only
 * (speculative decoding uses 2..8). */
GDN2_API int gdn2_decode_verify(const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t,
                                const int32_t *snap_slots);

/* Collapse limits, on the same kernels.
 *   KDA: b = w = beta, beta [B,T,H] (per key head; the value heads of a group share it).
 *   GDN: KDA with a scalar decay per head: g [B,T,H] (broadcast over K); gate_in_kernel unsupported.
 * In the gdn2_*_tensors the b and w fields are ignored; dbeta = sum_c db + sum_c dw. */
GDN2_API int gdn2_kda_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta);
GDN2_API int gdn2_kda_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta);
GDN2_API int gdn2_kda_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta,
                       const gdn2_bwd_tensors *g, float *dbeta);
GDN2_API int gdn2_gdn_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta);
GDN2_API int gdn2_gdn_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta);
GDN2_API int gdn2_gdn_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta,
                       const gdn2_bwd_tensors *g, float *dbeta);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_OPS_H */
