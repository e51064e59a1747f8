/* gdn2 GPU API (src/cuda, CUDA C for sm_90a). Without CUDA support built in, every call returns
 * GDN2_ERR_UNSUPPORTED.
 *
 * Two levels:
 *   - *_host entry points: fp32 host arrays in and out (copy, run the fp32 kernels, copy back);
 *     used by `gdn2 op --device cuda` and the tests.
 *   - the device-pointer API: tensors already on the GPU, q,k,v,b,w (and o, dq,dk,dv,db,dw) in fp32
 *     or bf16 (GDN2_CUDA_F32 / GDN2_CUDA_BF16), g, states and gate parameters always fp32, work
 *     queued on a cudaStream_t passed as void* (NULL = default stream). The layouts are those of
 *     include/gdn2.h. opts->cu_seqlens stays a HOST array (the chunk table is built on the host and
 *     uploaded). opts->workspace, when set, is a DEVICE buffer of gdn2_cuda_chunk_workspace_size()
 *     bytes; NULL means the call allocates stream-ordered scratch itself.
 * Limits: K <= 128 and V <= 128 (the official kernels allow K <= 256).
 * Values are not checked: unlike the CPU entry points, no CUDA entry point (device-pointer or
 * *_host) scans its inputs for NaN / inf or a positive log-decay g (a device scan would cost a
 * pass over the inputs and a synchronisation per call). A non-finite input gives non-finite
 * outputs, not an error (how far a NaN spreads in the chunk kernels: docs/ALGORITHM.md §8). Callers
 * that take tensors from outside check them on the host first with gdn2_check_inputs (as
 * `gdn2 op --device cuda` does before the upload). */
#ifndef GDN2_CUDA_H
#define GDN2_CUDA_H

#include "gdn2_export.h"

#include "gdn2_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if a CUDA device is usable (library built with CUDA and a device present), else 0 with the
 * reason in gdn2_last_error(). */
GDN2_API int gdn2_cuda_available(void);

/* Host-pointer convenience entry points (fp32 in and out): copy the tensors to the GPU, run the
 * CUDA chunk kernels in fp32, copy the results back. Used by `gdn2 op --device cuda` and tests. */
GDN2_API int gdn2_cuda_chunk_fwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t);
GDN2_API int gdn2_cuda_chunk_bwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                             const gdn2_bwd_tensors *g);

/* ---------------------------------------------------------------------------------------- */
/* device-pointer API                                                                       */
/* ---------------------------------------------------------------------------------------- */
enum { GDN2_CUDA_F32 = 0, GDN2_CUDA_BF16 = 1 };

typedef struct {
    int dtype;                          /* GDN2_CUDA_F32 or GDN2_CUDA_BF16: q,k,v,b,w and o     */
    const void *q, *k, *v, *b, *w;      /* [B,T,H,K] / [B,T,HV,V] as in gdn2.h                  */
    const float *g;                     /* [B,T,H,K] fp32 (raw f when gate_in_kernel)           */
    const float *h0;                    /* [N,HV,K,V] fp32 or NULL                              */
    const float *A_log, *dt_bias;       /* [H], [H*K] fp32 (gate_in_kernel; both required here:
                                           pass zeros for an absent one. The CPU ops and the
                                           *_host entry points take NULL as zero)                */
    void *o;                            /* out [B,T,HV,V], dtype                                */
    float *ht;                          /* out [N,HV,K,V] fp32 or NULL                          */
    int keep_for_backward;              /* 1: also compute A and leave in opts->workspace all the
                                           backward needs (see gdn2_cuda_chunk_bwd); 0: as before */
    void *reserve;                      /* keep_for_backward / reuse_forward with a separate reserve:
                                           NULL (the kept intermediates live in opts->workspace), or
                                           a 256-byte aligned device buffer of reserve_size >=
                                           gdn2_cuda_chunk_reserve_size bytes that holds them, so
                                           that opts->workspace is scratch only (shareable between
                                           calls; optional; when given, of at least
                                           gdn2_cuda_chunk_call_workspace_size bytes, the same
                                           in both calls). The backward gets the same a, reserve
                                           included. */
    size_t reserve_size;
} gdn2_cuda_fwd_args;

typedef struct {
    const void *d_o;                    /* [B,T,HV,V], dtype                                    */
    const float *dht;                   /* [N,HV,K,V] or NULL                                   */
    void *dq, *dk, *dv, *db, *dw;       /* out, dtype                                           */
    float *dg;                          /* out [B,T,H,K] fp32 (w.r.t. the g passed)             */
    float *dh0;                         /* out [N,HV,K,V] or NULL                               */
    float *dA_log, *ddt_bias;           /* out [H], [H*K] when gate_in_kernel                   */
    int reuse_forward;                  /* 1: take the intermediates a keep_for_backward forward
                                           left in opts->workspace instead of recomputing them  */
} gdn2_cuda_bwd_args;

/* Device scratch bytes for one forward (backward = 0) or backward (backward = 1) call: enough for
 * any such call at these dims, whatever its dtype, path and reserve (the generic kernels' fp32 size). */
GDN2_API size_t gdn2_cuda_chunk_workspace_size(const gdn2_dims *d, const gdn2_opts *o, int backward);
/* Bytes of a separate keep/reuse reserve (gdn2_cuda_fwd_args.reserve): what the backward reads
 * from the forward. dtype GDN2_CUDA_BF16 at K, V in {64, 128}: the fast path's size, which stores
 * most of it in bf16 (2,576 bytes per token and value head at K = V = 128, 0.24 of
 * gdn2_cuda_chunk_workspace_size(d, o, 1)); such inputs that take the generic path instead
 * (misaligned: see above) need the fp32 size (dtype GDN2_CUDA_F32, 4,624 bytes), else GDN2_ERR_ARG. */
GDN2_API size_t gdn2_cuda_chunk_reserve_size(const gdn2_dims *d, const gdn2_opts *o, int dtype);
/* The workspace bytes of one call exactly: gdn2_cuda_chunk_fwd(d, o, a) with g == NULL, else
 * gdn2_cuda_chunk_bwd(d, o, a, g), with the same arguments (tensor pointers included: they decide the
 * kernel path). The bf16 fast path stores most of its workspace in bf16 and writes four scratch
 * buffers over others, and with keep_for_backward / reuse_forward and a->reserve the workspace is
 * the backward's scratch only: at K = V = 128, 3,336 bytes per token and value head for a training
 * step with a reserve (+ the reserve's 2,576), 5,912 recomputing, against 10,264 for
 * gdn2_cuda_chunk_workspace_size(d, o, 1) (whole 64-token chunks). A keep_for_backward forward
 * and its reuse_forward backward need the same size. 0 with gdn2_last_error() set for arguments the
 * call itself would refuse. */
GDN2_API size_t gdn2_cuda_chunk_call_workspace_size(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                                                    const gdn2_cuda_bwd_args *g);

/* Chunkwise (C = 64, WY) forward and gate-aware backward. Asynchronous on `stream`.
 * By default nothing is kept between the calls: the backward recomputes the forward's
 * intermediates from the inputs.
 * Reserve space (as cuDNN's RNNs): a forward with a->keep_for_backward = 1 also computes the WY
 * inverse A and leaves every intermediate the backward needs in opts->workspace, which must then
 * be non-NULL and at least gdn2_cuda_chunk_call_workspace_size bytes (GDN2_ERR_ARG
 * otherwise). A backward with g->reuse_forward = 1 (same size rule) skips the recomputation; it
 * must get the same workspace, the same d, o and input tensors a (same pointers and contents)
 * and be ordered after that forward (same stream, or synchronised). If the workspace or an input
 * was changed in between, or the forward was not a keep_for_backward one, the result is
 * undefined (no error can be detected).
 * bf16 at K, V in {64, 128}: the fast kernels store the workspace in bf16, the generic ones in
 * fp32, and the choice also depends on the 16-byte alignment of the outputs (o, ht; d_o, dht,
 * dh0); with keep/reuse a misaligned output that would switch paths is GDN2_ERR_ARG, naming it. */
GDN2_API int gdn2_cuda_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a, void *stream);
GDN2_API int gdn2_cuda_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_fwd_args *a,
                        const gdn2_cuda_bwd_args *g, void *stream);

/* Token-serial recurrent forward on a pool of states (decode, short prompts, speculative decoding).
 * d->B sequences of d->T tokens each (no cu_seqlens): q,k,g,b [B,T,H,K], v,w,o [B,T,HV,V].
 * Sequence i reads state_pool[slots[i]] ([n_slots,HV,K,V] fp32, or slots slot_stride apart;
 * slots == NULL means slot i),
 * runs its T tokens and writes the state back in place; slots[i] < 0 skips the row (o zeroed).
 * snapshots, when not NULL, receives the state after every token, [B,T,HV,K,V] fp32, so that a
 * speculative step can roll back to any accepted prefix. snap_slots (below) instead puts those
 * states into pool slots, so that committing a prefix copies nothing. d->T = 1 is the decode step. */
typedef struct {
    int dtype;                          /* q,k,v,b,w and o                                      */
    const void *q, *k, *v, *b, *w;
    const float *g, *A_log, *dt_bias;
    void *o;
    void *state_pool;                   /* [n_slots,HV,K,V] fp32 or bf16, updated in place      */
    int64_t n_slots;
    const int32_t *slots;               /* DEVICE array [B], or NULL                            */
    float *snapshots;                   /* [B,T,HV,K,V] fp32 or NULL                            */
    int state_dtype;                    /* GDN2_CUDA_F32 (0, default) or GDN2_CUDA_BF16: the pool's
                                           type; bf16 halves the bytes a step moves, at ~1-2%
                                           relative error in o over long runs (docs/CUDA.md);
                                           V must be a multiple of 4 (fp32) or 8 (bf16)          */
    int64_t slot_stride;                /* elements of the pool's type from one slot's state to the
                                           next; 0 (default): HV*K*V, a dense pool. A larger stride
                                           lets each state sit inside a bigger per-sequence block
                                           (the model's decode state, gdn2_model_state); it must
                                           keep every state 16-byte aligned (as the pool itself)  */
    const int32_t *snap_slots;          /* DEVICE array [B,T] or NULL (speculative verify, the GPU
                                           twin of gdn2_decode_verify): the state after token t of
                                           sequence i goes to pool slot snap_slots[i*T+t], in the
                                           pool's dtype, and slots[i] is NOT written back. Entries
                                           must be in [0, n_slots) and distinct from each other
                                           and from every slots[i] of the call (not checked on the
                                           device; checked on the host, GDN2_ERR_ARG, only when
                                           both arrays are pinned host memory). Entries of a
                                           skipped row (slots[i] < 0) are not read.              */
    int g_dtype;                        /* g's type: GDN2_CUDA_F32 (0, default) or `dtype` (then g
                                           is read as q..w are: with gate_in_kernel, the bf16
                                           pre-activation the model's decode step projects)       */
} gdn2_cuda_recurrent_args;
GDN2_API int gdn2_cuda_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_cuda_recurrent_args *a,
                            void *stream);

/* fp32 host twin of gdn2_decode_step (include/gdn2.h) on the GPU: copies in, one step, copies back. */
GDN2_API int gdn2_cuda_decode_step_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_decode_tensors *t);


/* ---------------------------------------------------------------------------------------- */
/* small device helpers for C callers (tests, benchmarks) that do not include cuda_runtime.h  */
/* ---------------------------------------------------------------------------------------- */
enum { GDN2_CUDA_H2D = 1, GDN2_CUDA_D2H = 2, GDN2_CUDA_D2D = 3 };
GDN2_API void *gdn2_cuda_malloc(size_t bytes);                 /* NULL on failure (see gdn2_last_error) */
GDN2_API void gdn2_cuda_free(void *p);
GDN2_API int gdn2_cuda_memcpy(void *dst, const void *src, size_t bytes, int kind);
GDN2_API int gdn2_cuda_memset(void *p, int value, size_t bytes);
GDN2_API int gdn2_cuda_sync(void);                             /* device synchronise + error check      */
/* GPU name and driver/runtime versions, e.g. "NVIDIA H200", 13000, 13000. */
GDN2_API int gdn2_cuda_device_info(char *name, size_t len, int *driver, int *runtime);
/* The version of the cuBLASLt the library runs (cublasLtGetVersion, e.g. 130100: the toolkit's, or the copy the
 * Makefile's CUBLAS_LIBS named); 0 without CUDA. Benchmarks record it beside the driver and runtime. */
GDN2_API size_t gdn2_cuda_cublaslt_version(void);
/* Make device `dev` current for this thread (one process per GPU: call before anything else). */
GDN2_API int gdn2_cuda_set_device(int dev);
GDN2_API int gdn2_cuda_device_count(void); /* 0 without CUDA or without a device */
/* Free and total bytes of the current device (cudaMemGetInfo). */
GDN2_API int gdn2_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
/* High-water mark of the device's default stream-ordered memory pool (cudaMallocAsync scratch). */
GDN2_API int gdn2_cuda_pool_high(size_t *bytes);
/* Event timer on the default stream: start, then stop returns the elapsed milliseconds. */
GDN2_API int gdn2_cuda_timer_start(void);
GDN2_API double gdn2_cuda_timer_stop(void);
/* A timeline of marks on the default stream, per thread, for timing many ops without waiting on each:
 * begin makes cap events; mark records the next one (the host does not wait) and returns its index, -1 once
 * cap are used (or on an error); end waits for the last mark, writes ms[i] = milliseconds from mark i to mark
 * i + 1 for i < min(marks - 1, cap_ms), frees the events and returns the number of marks (-1 and
 * gdn2_last_error on failure). */
GDN2_API int gdn2_cuda_timeline_begin(int cap);
GDN2_API int gdn2_cuda_timeline_mark(void);
GDN2_API int gdn2_cuda_timeline_end(float *ms, int cap_ms);

#ifdef __cplusplus
}
#endif
#endif
