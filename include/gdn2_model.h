/* gdn2 language model (src/model): the official lit_gpt GPT with GDN-2 / KDA / GDN token mixers and
 * softmax attention (full or sliding window, RoPE), SwiGLU MLP, RMSNorm, untied lm_head; its AdamW,
 * training loop, checkpoints and constant-memory generation. fp32 on the CPU. docs/MODEL.md.
 *
 * Block (pre-norm, docs/MODEL.md):  x += mixer(norm_1(x));  x += w3(silu(w1 n) * w2 n), n = norm_2(x)
 * Model: wte -> blocks -> ln_f -> lm_head (padded vocab, not tied to wte).
 * Parameters live in one flat float block (m->params), described by a table of official names. */
#ifndef GDN2_MODEL_H
#define GDN2_MODEL_H

#include "gdn2_export.h"

#include <stdio.h>

#include "gdn2_io.h"
#include "gdn2_layer.h"
#include "gdn2_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GDN2_MAX_LAYERS 128
#ifndef GDN2_IGNORE
#define GDN2_IGNORE (-100) /* target value that carries no loss (as torch) */
#endif

/* token mixer of one layer */
typedef enum {
    GDN2_LAYER_GDN2 = 0, /* official GatedDeltaNet2 (gdn2_layer_*)                                 */
    GDN2_LAYER_KDA = 1,  /* KDA variant on the same layer code                                      */
    GDN2_LAYER_GDN = 2,  /* GDN variant on the same layer code                                      */
    GDN2_LAYER_SWA = 3,  /* sliding-window causal softmax attention + RoPE (window local_window)   */
    GDN2_LAYER_ATTN = 4, /* full causal softmax attention + RoPE                                    */
} gdn2_layer_kind;

typedef struct {
    char name[64];
    int64_t n_layer, n_embd;
    int64_t n_head, n_query_groups, head_size; /* attention layers: fused qkv, per group [q*(n_head/groups), k, v] */
    int64_t intermediate_size;                 /* SwiGLU hidden size                                             */
    int64_t vocab_size, padding_multiple, padded_vocab;
    int64_t block_size;                        /* RoPE table / full-attention decode cache length               */
    int64_t local_window;                      /* SWA: query t sees keys t-W+1 .. t                              */
    float norm_eps, rope_base;
    int64_t gdn_heads, gdn_v_heads, gdn_head_dim, gdn_expand_v, conv_size; /* recurrent layers (K = head_dim, V = K*expand_v) */
    int allow_neg_eigval;
    char layout[160];                          /* comma list of gdn2|kda|gdn|swa|attn, cycled over n_layer      */
    int kind[GDN2_MAX_LAYERS];                 /* gdn2_layer_kind per layer (from layout)                       */
    gdn2_layer_kernel kernel;                  /* recurrence kernel of every recurrent layer (a run-time choice:
                                                * not saved in checkpoints; GDN2_KERNEL_CHUNK = 0 by default)  */
} gdn2_model_cfg;

/* Named configs: gdn2_1.3B, swa_gdn2_1.3B, gdn2_12h_100M, gdn2_12h_305M, swa_gdn2_100M, tiny, small.
 * Returns GDN2_ERR_ARG (message lists the names) for an unknown name. */
GDN2_API int gdn2_model_config(const char *name, gdn2_model_cfg *c);
GDN2_API const char *gdn2_model_config_names(void);
/* Set the layout string and the per-layer kinds ("gdn2", "gdn2,swa", "gdn2,kda,attn", ...). */
GDN2_API int gdn2_model_set_layout(gdn2_model_cfg *c, const char *layout);
/* Recompute padded_vocab from vocab_size / padding_multiple and validate every field. Every size is
 * bounded, generously but finitely, so that no parameter count or activation size computed from a
 * config overflows: n_layer <= GDN2_MAX_LAYERS, n_embd <= 2^16, vocab_size <= 2^24,
 * padding_multiple <= 2^16, intermediate_size <= 2^20, block_size and local_window <= 2^24,
 * n_head / n_query_groups / gdn2 heads <= 4096, head_size and gdn2_head_dim <= 4096,
 * gdn2_expand_v <= 16, gdn2_conv_size <= 64 (the unused ones too). The message names the key, the
 * value and the range. */
GDN2_API int gdn2_model_check(gdn2_model_cfg *c);
/* lit_gpt config JSON (fixture meta.config: n_layer, n_embd, n_head, vocab_size, padding_multiple,
 * gdn2_per_layer, intermediate_size, local_window, norm_eps, gdn2_num_heads, gdn2_head_dim, ...;
 * gdn2 checkpoints add "gdn2_layout" and the other fields). Integer keys must hold exact integers
 * of magnitude <= 2^53 (GDN2_ERR_FORMAT naming the key otherwise); then gdn2_model_check. */
GDN2_API int gdn2_model_config_from_json(const char *json, gdn2_model_cfg *c);
GDN2_API char *gdn2_model_config_to_json(const gdn2_model_cfg *c); /* malloc'ed; free() it */
/* The layer config of recurrent layer i (kind GDN2/KDA/GDN). */
GDN2_API gdn2_layer_cfg gdn2_model_layer_cfg(const gdn2_model_cfg *c, int i);

/* Training FLOPs per token at sequence length T as the official harness counts them (6 N_nonemb +
 * attention; docs/BACKEND.md); *recurrence (may be NULL) gets the GDN-2 recurrence's nominal count,
 * not included in the return value. */
GDN2_API double gdn2_model_flops_per_token(const gdn2_model_cfg *c, int64_t T, double *recurrence);

/* one parameter tensor of the model: official lit_gpt name, shape, place in the flat block (offset
 * in floats, a multiple of GDN2_PARAM_ALIGN; the gaps between tensors are zeros) */
typedef struct {
    char name[128];
    int ndim;
    int64_t shape[4];
    size_t offset, numel;
    int no_decay; /* A_log, dt_bias, norm weights, biases */
} gdn2_model_param;

/* Parameter table straight from the config (no allocation of the weights; used for the 1.3B counts).
 * Returns the number of tensors; out may be NULL. */
GDN2_API int gdn2_model_params(const gdn2_model_cfg *c, gdn2_model_param *out, int cap);
GDN2_API size_t gdn2_model_param_count(const gdn2_model_cfg *c); /* parameters: the sum of the tensors' numel */
GDN2_API size_t gdn2_model_flat_size(const gdn2_model_cfg *c);   /* floats in the flat block, gaps included */

struct gdn2_model_acts; /* activations saved by a training forward (private) */
struct gdn2_backend;    /* the arithmetic backend (src/backend/backend.h, private)               */
struct gdn2_comm;       /* a data-parallel communicator (src/dist/comm.h, private)                */

typedef struct {
    gdn2_model_cfg cfg;
    int n_tensors;
    gdn2_model_param *tensors;
    size_t n_params;            /* parameters (gdn2_model_param_count): what logs and counts report */
    size_t n_flat;              /* floats in the flat block (gdn2_model_flat_size): the size of params,
                                 * grads, the device copies, AdamW's moments and data-parallel shards */
    float *params;              /* [n_flat]                                                      */
    float *grads;               /* [n_flat], allocated by the first backward / zero_grad         */
    size_t *layer_off;          /* [n_layer] offset of each layer's mixer block in params (aligned) */
    int n_threads;              /* 0 = OpenMP default                                            */
    float dropout;              /* training forwards drop this share of each mixer's and MLP's output
                                 * before its residual add (nanoGPT's resid dropout), 0 = none     */
    uint64_t dropout_seed;      /* the masks' stream, set per micro-batch by the trainer          */
    float emb_dropout;          /* training forwards drop this share of the embedding's output (the
                                 * residual stream's start: nanoGPT's embedding dropout), 0 = none */
    int recompute;              /* 1: a training forward keeps only each block's input (the residual
                                 * stream) and the backward re-runs the block before differentiating
                                 * it: one more forward of compute, activations of one block instead of
                                 * all (the 1.3B configs at T = 4096); the same gradients bit for bit */
    int keep_chunk;             /* 1: a training forward of a GDN-2 / KDA / GDN layer also keeps the
                                 * chunk kernels' intermediates (the backend's reserve, O(B·T·K·V/64)
                                 * bytes a layer) and the backward reads them instead of recomputing
                                 * them (keep mode: a faster backward for more memory); with recompute
                                 * one reserve serves every layer (the backward's re-run keeps). 0:
                                 * the backward recomputes (the default). Gradients equal to rounding. */
    int cuda_graph;             /* 1 (gdn2_model_create's default): on a CUDA model the decode step
                                 * (gdn2_model_step_slots) is recorded as a CUDA graph per launch shape
                                 * and replayed (docs/SERVING.md); 0: every op launched each step. No
                                 * effect on the CPU. When a recording fails the library prints one
                                 * line on stderr, sets this to 0 and decodes eagerly from then on. */
    int64_t prefill_chunk;      /* 4096 (gdn2_model_create's default): gdn2_model_prefill_slot consumes
                                 * a longer prompt in pieces of this many tokens, each continuing from
                                 * the slot (recurrent states carried; attention against the cached
                                 * keys and values), so its activations are those of one piece (the
                                 * memory of a forward grows with its length: ~2.5 MB a token at
                                 * 1.3B); 0: one forward. */
    struct gdn2_model_acts *acts;
    /* Where the arithmetic runs: the CPU backend unless gdn2_model_set_device moved the model.
     * params / grads are always HOST memory: on the CPU they are the live tensors; on a device
     * they are the host copies, written by gdn2_model_sync_host (checkpoint saving does it). */
    struct gdn2_backend *be;
    float *dev_params;          /* fp32 master weights in the backend's memory (== params on the CPU) */
    void *dev_params_act;       /* the same weights as the matrix products read them (CPU: params;
                                 * CUDA: bf16, rewritten by every optimizer step)                  */
    float *dev_grads;           /* gradients in the backend's memory (== grads on the CPU)           */
    int grads_pending;          /* private: gdn2_model_zero_grad left the matrix weights' gradients to
                                 * the next backward, which writes them whole (no pass of zeros over
                                 * ~all of the gradients, no read of them in the products); whatever
                                 * reads the gradients before that zeroes them first                 */
} gdn2_model;

GDN2_API int gdn2_model_create(const gdn2_model_cfg *c, gdn2_model **out); /* params zeroed; call init or load */
GDN2_API void gdn2_model_free(gdn2_model *m);
/* Official init (docs/MODEL.md: wte N(0,0.02); Linear U(±1/sqrt(fan_in)); w3 and attn proj further
 * / sqrt(2 n_layer); norms 1; recurrent layers their own init). Deterministic in seed. */
GDN2_API void gdn2_model_init(gdn2_model *m, uint64_t seed);
GDN2_API const gdn2_model_param *gdn2_model_find(const gdn2_model *m, const char *name);

/* Move the model's arithmetic to "cpu" (default) or "cuda" (bf16-mixed: docs/BACKEND.md). The
 * host weights m->params are uploaded; activations are reallocated on the new device. Call after
 * init or load. GDN2_ERR_UNSUPPORTED without a CUDA build or device, GDN2_ERR_NOMEM naming the
 * sizes when the weights do not fit. Generation (prefill, step, the state slots) runs on the model's
 * device too: make the states after moving the model. */
GDN2_API int gdn2_model_set_device(gdn2_model *m, const char *device);
GDN2_API const char *gdn2_model_device(const gdn2_model *m); /* "cpu" or "cuda" */
/* After editing m->params on the host of a device model: upload them (and refresh the bf16 copy). */
GDN2_API int gdn2_model_upload(gdn2_model *m);
/* Device weights (and gradients, when allocated) -> m->params (m->grads). No-op on the CPU. */
GDN2_API int gdn2_model_sync_host(gdn2_model *m);
/* Global L2 norm of the gradients (double sum in a fixed order), clipped to max_norm as
 * torch.nn.utils.clip_grad_norm_ (max_norm <= 0: no clip); returns the norm before (NaN on error). */
GDN2_API float gdn2_model_clip_grad_norm(gdn2_model *m, float max_norm);
/* The same norm, gradients unchanged (NaN on error): with gdn2_clip_factor and gdn2_adamw_step_scaled a
 * clipped step without a pass over the gradients of its own (what `gdn2 train` does). */
GDN2_API float gdn2_model_grad_norm(gdn2_model *m);

/* Forward over tokens [B,T] (values in [0, vocab)). targets [B,T] (GDN2_IGNORE = no loss) may be NULL.
 * loss (may be NULL): mean cross-entropy over the non-ignored targets (0 if none).
 * logits (may be NULL): [B,T,padded_vocab]. train = 1 keeps the activations for gdn2_model_backward
 * (then only the rows with a target are sent through lm_head unless logits are requested). */
GDN2_API int gdn2_model_forward(gdn2_model *m, const int32_t *tokens, const int32_t *targets, int64_t B, int64_t T,
                       float *logits, float *loss, int train);
/* grads += scale * d(loss)/d(params) for the last train forward (scale = 1/accum for accumulation). */
GDN2_API int gdn2_model_backward(gdn2_model *m, float scale);
/* gdn2_model_forward (train = 1, no logits) then gdn2_model_backward(scale), the same loss and gradients
 * bit for bit, with lm_head's logits computed once: its forward pass also runs its backward (one matrix
 * product and one cross-entropy pass per row chunk fewer than the two calls). scale finite, >= 0. */
GDN2_API int gdn2_model_forward_backward(gdn2_model *m, const int32_t *tokens, const int32_t *targets, int64_t B,
                                         int64_t T, float *loss, float scale);
/* grads = 0 (as the next backward, clip, norm, optimizer step or sync_host sees them). Only the
 * gradients the backward accumulates are zeroed here; the matrix weights' are written by the next
 * backward's products (or zeroed by whatever reads them first). */
GDN2_API int gdn2_model_zero_grad(gdn2_model *m);

/* ---- checkpoints -------------------------------------------------------------------------- */
/* safetensors with the official names (prefix "" ) and __metadata__ {"format":"gdn2","config":JSON}. */
GDN2_API int gdn2_model_save(const gdn2_model *m, const char *path);
/* Build a model from a checkpoint (config from metadata "config", or the fixture's "meta".config). */
GDN2_API int gdn2_model_load(const char *path, gdn2_model **out);
/* Copy every tensor `<prefix><name>` from an open file into m->params (all required, F32 any width
 * converted; errors name the file, tensor and expected shape). */
GDN2_API int gdn2_model_load_params(gdn2_model *m, const gdn2_st *st, const char *prefix);

/* ---- generation (constant memory per sequence for recurrent and SWA layers) ---------------- */
/* Per-sequence state: recurrent layers gdn2_layer_state_size floats; SWA a ring of the last
 * local_window post-RoPE keys and values; full attention a cache of max_len keys/values (grows
 * with the context — the one non-constant part, as any transformer).
 *
 * The state is a pool of n SLOTS, one sequence each, every slot with its own position
 * (slot_pos): continuous batching steps any subset of the slots, each at its own position
 * (gdn2_model_step_slots), and a slot is reset, filled from a prefix file or copied on its own.
 * Nothing moves when the set of active slots changes: a step reads and writes the slots it is
 * given in place. The whole-state calls (prefill, step) treat all n slots as one batch at one
 * position (pos) and are written on the slot calls. */
typedef struct {
    int64_t n, max_len, pos; /* slots, capacity for full attention, tokens consumed (whole-state calls) */
    size_t per_seq;          /* floats per slot (all layers)                                   */
    size_t *layer_off;       /* [n_layer] offset in data of layer l's block [n, layer_size[l]]  */
    size_t *layer_size;      /* [n_layer] floats of layer l's state per slot                    */
    float *data;             /* n * per_seq floats, in the memory of the model's device when the state
                              * was made: host memory on the CPU, GPU memory on CUDA (the same layout;
                              * read a slot on the host through gdn2_model_state_save_slot)      */
    int64_t *slot_pos;       /* [n] tokens consumed by each slot (its next position), HOST        */
    int n_layer;
    /* private: the device of data, and the step's buffers kept between steps */
    int on_device;           /* 1: data (and work) are device memory of be                       */
    struct gdn2_backend *be; /* the model's backend at creation (device states only)             */
    void *work;              /* the step's activations and tables, in be's memory                */
    int64_t work_n;          /* sequences the work buffer is laid out for                        */
    void *stage;             /* HOST staging of the step's tables (device states)                */
    int stage_pinned;        /* stage is pinned memory of be (be->host_alloc)                     */
    struct gdn2_step_graphs *graphs; /* the decode step's CUDA graphs, one per launch shape      */
} gdn2_model_state;

GDN2_API size_t gdn2_model_state_floats(const gdn2_model_cfg *c, int64_t max_len); /* per sequence */
/* n slots; max_len (< 1: block_size) sizes the full-attention caches. The state lives where the
 * model runs (gdn2_model_set_device): on a GPU its slots are device memory, and every call below
 * works there (reset, copy, prefill, step; save and load go through host copies, so that a prefix
 * file written from the GPU loads on the CPU and back). Free a device state before the model, and
 * make states after gdn2_model_set_device: a state made on another device is refused. */
GDN2_API int gdn2_model_state_create(const gdn2_model *m, int64_t n, int64_t max_len, gdn2_model_state **out);
GDN2_API void gdn2_model_state_reset(gdn2_model_state *s);
GDN2_API void gdn2_model_state_free(gdn2_model_state *s);
/* Consume tokens [n,T] (all sequences the same length); logits [n,padded_vocab] of the last token. */
GDN2_API int gdn2_model_prefill(gdn2_model *m, gdn2_model_state *s, const int32_t *tokens, int64_t T, float *logits);
/* One token per sequence: tokens [n] -> logits [n,padded_vocab]. */
GDN2_API int gdn2_model_step(gdn2_model *m, gdn2_model_state *s, const int32_t *tokens, float *logits);

/* ---- state slots (continuous batching; docs/SERVING.md) ---------------------------------- */
/* Zero one slot (its states, caches and position): a fresh sequence. */
GDN2_API int gdn2_model_state_reset_slot(gdn2_model_state *s, int64_t slot);
/* dst's slot dst_slot = src's slot src_slot (states and position; full-attention caches copied up
 * to the position, which must fit dst->max_len). dst and src may be the same pool. */
GDN2_API int gdn2_model_state_copy_slot(const gdn2_model *m, gdn2_model_state *dst, int64_t dst_slot,
                               const gdn2_model_state *src, int64_t src_slot);
/* Consume tokens [T] (T >= 1) into one slot, from its position (0 for a fresh slot); logits
 * [padded_vocab] of the last one. Chunked parallel forwards (B = 1) of at most m->prefill_chunk
 * tokens, each continuing from the slot: recurrent layers from its states, attention layers
 * against its cached keys and values (the SWA ring's last window - 1 positions, a full cache's all).
 * On an error the slot holds the pieces consumed before it (slot_pos says how far). */
GDN2_API int gdn2_model_prefill_slot(gdn2_model *m, gdn2_model_state *s, int64_t slot, const int32_t *tokens, int64_t T,
                            float *logits);
/* One token for each of n distinct slots: sequence i is slot slots[i] (slots NULL: i) at position
 * positions[i] (positions NULL: the slot's own slot_pos); tokens [n] -> logits [n,padded_vocab].
 * Each slot's position becomes positions[i] + 1. Batch-invariant on the CPU: a sequence's logits
 * are bit for bit the same whichever other slots share the step (its matrix products run on its
 * own row). On CUDA (bf16-mixed, docs/BACKEND.md) the step is one batch: its matrix products run
 * over all n rows (cuBLASLt picks its kernel by the shape), so a sequence's logits may differ in
 * the last bits with the batch it shares; the same call twice gives the same bits. */
GDN2_API int gdn2_model_step_slots(gdn2_model *m, gdn2_model_state *s, int64_t n, const int32_t *slots,
                          const int64_t *positions, const int32_t *tokens, float *logits);
/* The CUDA graphs of the decode step the state holds (instantiated, one per launch shape: the
 * number of sequences n and whether slots were given); 0 on the CPU or with m->cuda_graph = 0. A
 * shape's first step runs eagerly (it warms the matrix products' algorithm cache), its second is
 * recorded and replayed from then on. Freed with the state. */
GDN2_API int64_t gdn2_model_state_cuda_graphs(const gdn2_model_state *s);

/* Prefix state files: one slot after a prompt prefix, so that a long shared context is prefilled
 * once. safetensors (written atomically): "state.<l>" per layer (full attention: only the
 * positions written, [2, groups, tokens, head_size]), optional "logits" [padded_vocab] of the last
 * prefix token; metadata format "gdn2-prefix", model (config name), config_hash, weights_hash,
 * tokens, config. Loading checks both hashes against m: another config or other weights are
 * GDN2_ERR_ARG naming both. */
GDN2_API uint64_t gdn2_model_config_hash(const gdn2_model_cfg *c);  /* FNV-1a of the config JSON          */
GDN2_API uint64_t gdn2_model_weights_hash(const gdn2_model *m);     /* n_params + up to 2^16 spaced weights (gaps skipped) */
GDN2_API int gdn2_model_state_save_slot(const gdn2_model *m, const gdn2_model_state *s, int64_t slot, const float *logits,
                               const char *path);
/* The token count of an open prefix state file f (read from path): its metadata's format and
 * "tokens", an integer in [1, 2^40]; GDN2_ERR_FORMAT naming the file otherwise. */
GDN2_API int gdn2_model_prefix_tokens(const gdn2_st *f, const char *path, int64_t *tokens);
/* logits [padded_vocab] (may be NULL) gets the file's logits; *has_logits (may be NULL) says
 * whether it had them; every state and the logits must be finite. On error the slot is left reset. */
GDN2_API int gdn2_model_state_load_slot(const gdn2_model *m, gdn2_model_state *s, int64_t slot, const char *path,
                               float *logits, int *has_logits);

/* ---- sampling ----------------------------------------------------------------------------- */
typedef struct {
    float temperature; /* <= 0: greedy (argmax, first of equals)                               */
    int top_k;         /* > 0: only the k largest logits                                        */
    float top_p;       /* in (0, 1): nucleus, the most likely tokens whose mass reaches top_p;
                        * >= 1 (or <= 0): off                                                   */
    uint64_t seed;     /* the draw stream (gdn2_sampler_seed)                                    */
} gdn2_sampling;
/* The random stream of a request (state for gdn2_sample) from its seed: the seed hashed, so that different
 * seeds give unrelated streams. */
GDN2_API uint64_t gdn2_sampler_seed(uint64_t seed);
/* One token from logits[0..V) (V = vocab_size): softmax(z / temperature) restricted by top_k,
 * then top_p; *rng advances by one draw unless greedy. */
GDN2_API int32_t gdn2_sample(const float *logits, int64_t V, const gdn2_sampling *sp, uint64_t *rng);
/* gdn2_model_step_slots, then each sequence's next token drawn where its logits are: next[i] from
 * sequence i's logits under sp[i] with the stream rng[i], the token gdn2_sample would draw from
 * the same logits (every backend draws the same tokens from the same logits: integer candidate
 * weights, src/util/sample.h); rng[i] advances by one draw unless greedy, and only when the call
 * succeeds. On a device only the n tokens come back, not the [n, padded_vocab] logits; logits may be
 * NULL, else it also receives them. */
GDN2_API int gdn2_model_step_slots_sample(gdn2_model *m, gdn2_model_state *s, int64_t n, const int32_t *slots,
                                          const int64_t *positions, const int32_t *tokens, const gdn2_sampling *sp,
                                          uint64_t *rng, int32_t *next, float *logits);

/* Sample n_new tokens after prompt [P] (P >= 1) for one sequence, in constant memory (prefill, then
 * one step per token). temperature <= 0: greedy; top_k > 0 keeps the k most likely tokens. */
GDN2_API int gdn2_generate(gdn2_model *m, const int32_t *prompt, int64_t P, int64_t n_new, float temperature, int top_k,
                  uint64_t seed, int32_t *out);

/* ---- optimizer ---------------------------------------------------------------------------- */
typedef struct {
    float beta1, beta2, eps, weight_decay; /* 0.9, 0.95, 1e-8, 0.1 (official)                   */
    int exempt_no_decay;                   /* 1: no decay on A_log, dt_bias, norms, biases       */
} gdn2_adamw_cfg;
typedef struct {
    gdn2_adamw_cfg cfg;
    size_t n;      /* moments: the model's flat block (gdn2_model.n_flat), alignment gaps included */
    float *m, *v;  /* HOST moments (the checkpoint's); on a device, copies written when saving */
    int64_t step; /* updates done */
    struct gdn2_backend *be; /* set by the first step of a device model: dm, dv live there */
    float *dm, *dv;
} gdn2_adamw;
GDN2_API gdn2_adamw_cfg gdn2_adamw_default(void);
GDN2_API int gdn2_adamw_init(gdn2_adamw *o, const gdn2_adamw_cfg *c, size_t n); /* n = the model's n_flat */
GDN2_API void gdn2_adamw_free(gdn2_adamw *o);
/* One update of the model's weights from its gradients at learning rate lr (torch AdamW:
 * decoupled decay), on the model's device (the moments move there at the first step). */
GDN2_API int gdn2_adamw_step(gdn2_adamw *o, gdn2_model *m, float lr);
/* The same step on the gradients times grad_scale (finite, > 0), read so and not stored: the factor of a
 * clip (gdn2_clip_factor) costs no pass of its own. Bit for bit gdn2_model_clip_grad_norm + gdn2_adamw_step. */
GDN2_API int gdn2_adamw_step_scaled(gdn2_adamw *o, gdn2_model *m, float lr, float grad_scale);
/* Device moments -> o->m, o->v (no-op for a CPU optimizer). */
GDN2_API int gdn2_adamw_sync_host(gdn2_adamw *o);
/* Scale g so that its L2 norm is at most max_norm (max_norm <= 0: no clip); returns the norm before. */
GDN2_API float gdn2_clip_grad_norm(float *g, size_t n, float max_norm);
/* clip_grad_norm_'s factor for a norm: max_norm / (norm + 1e-6) when norm > max_norm > 0, else 1. */
GDN2_API float gdn2_clip_factor(float norm, float max_norm);
/* Linear warmup from 0 over `warmup` steps, then cosine from lr to min_lr at max_steps. */
GDN2_API float gdn2_lr_at(int64_t step, int64_t warmup, int64_t max_steps, float lr, float min_lr);
/* Optimizer checkpoint: m, v, step and a caller string (metadata "train", e.g. data state). The
 * moments are stored as the flat block (n floats): loading refuses, naming both sizes, a file whose
 * moments are of another size (another model, or written before the block was aligned). */
GDN2_API int gdn2_adamw_save(const gdn2_adamw *o, const char *path, const char *train_json);
GDN2_API int gdn2_adamw_load(gdn2_adamw *o, const char *path, char **train_json /* malloc'ed, may be NULL */);

/* ---- training checkpoints: the pair PATH (model) + PATH.optim (optimizer) ----------------- */
/* Both files carry the same run record in metadata "train": a JSON object with at least "run_id"
 * (string, fixed for the whole run across resumes) and "step" (optimizer steps done); gdn2_train adds
 * the run's settings (docs/FORMATS.md). Save writes PATH then PATH.optim, each atomically. */
GDN2_API int gdn2_checkpoint_save(const gdn2_model *m, const gdn2_adamw *o, const char *path, const char *train_json);
/* Load the pair and check it is one commit: same run id and step in both files (and the optimizer's
 * "step"); otherwise GDN2_ERR_FORMAT with a message naming both files and both steps. A model file
 * without a run record is refused too. On success *m, *o (initialised with cfg ac) and *train_json
 * (malloc'ed: the run record) are set; the caller frees them. */
GDN2_API int gdn2_checkpoint_load(const char *path, const gdn2_adamw_cfg *ac, gdn2_model **m, gdn2_adamw *o,
                         char **train_json);
/* Remove the temporary files "PATH.tmp.<pid>" and "PATH.optim.tmp.<pid>" (GDN2_TMP_INFIX) that a
 * killed writer left in PATH's folder — regular files with exactly those names and a writer that is
 * no longer running; nothing else is touched. One line per file to log (may be NULL). Returns the
 * number removed. */
GDN2_API int gdn2_checkpoint_clean_tmp(const char *path, FILE *log);

/* ---- training ----------------------------------------------------------------------------- */
typedef struct {
    const char *model;      /* named config (default "tiny")                                         */
    const char *layout;     /* NULL: the config's                                                     */
    const char *task;       /* "text" (default), "mqar" or "tokens"                                   */
    const char *data;       /* text file (default GDN2_DEFAULT_TEXT, data/tinyshakespeare.txt); task
                             * tokens: the shards' glob pattern or comma list (include/gdn2_tokens.h) */
    const char *val_data;   /* tokens: validation shards (NULL: the last shard of data, or its last 10%) */
    int64_t vocab;          /* tokens: the model's vocab_size, ids must be below it (0: the config's)  */
    int shuffle_shards;     /* tokens: shuffle the train shards' order per epoch with seed            */
    int scan_data;          /* tokens: check every token id before the first step (else per batch)    */
    int64_t batch, seq_len, steps, accum, warmup;
    int64_t stop_at;        /* stop (and save) after this many steps while the schedule still runs to
                             * `steps` (0 = run to the end): for the resume test                     */
    int eval_samples;       /* mqar: test samples (default 500)                                       */
    float lr, min_lr, weight_decay, clip;
    int exempt_no_decay;
    uint64_t seed;
    int log_every, eval_every, eval_batches, save_every;
    const char *out;        /* checkpoint path (optimizer state goes to <out>.optim), or NULL        */
    int resume;             /* continue from <out> and <out>.optim: the saved run settings must match
                             * these options (else GDN2_ERR_ARG naming the setting) ...               */
    const char *allow_change; /* ... except those in this comma list of setting names (NULL = none):
                             * task steps seed lr min-lr warmup batch seq-len accum wd clip
                             * exempt-no-decay data mqar-vocab mqar-pairs mqar-no-fill                */
    int n_threads;
    const char *device;     /* "cpu" (NULL) or "cuda": where the model trains (gdn2_model_set_device) */
    int recompute;          /* activation recomputation per block (gdn2_model.recompute)               */
    int keep_chunk;         /* GDN-2 keep mode (gdn2_model.keep_chunk)                                 */
    float dropout;          /* residual-branch dropout of training forwards (0 = none)                 */
    float emb_dropout;      /* embedding dropout of training forwards (gdn2_model.emb_dropout; 0)      */
    /* Data parallel (docs/DIST.md), set by gdn2_train_parallel for each rank; 0 / NULL: one process.
     * Each rank trains on rows [rank·batch/world, (rank+1)·batch/world) of every global batch
     * (--batch is the global micro-batch); rank 0 logs and writes the checkpoints, the same files as
     * one process. */
    int rank, world;
    struct gdn2_comm *comm;            /* local ranks (CPU): made before the ranks start           */
    const unsigned char *nccl_id;      /* GPU ranks: the NCCL unique id (128 bytes)               */
    int zero1;                         /* shard the AdamW moments over the ranks (ZeRO-1)          */
    double dist_timeout_s;             /* a collective waits this long for the slowest rank (600)  */
    double dist_grace_s;               /* after a rank fails, SIGTERM, then SIGKILL after this (10) */
    int mqar_vocab, mqar_pairs; /* task mqar: vocab (256) and key-value pairs (4); seq_len is T     */
    int mqar_no_fill;       /* mqar: unused query slots stay 0 (Zoology Fig. 2); default random fillers */
    int64_t gdn_heads, gdn_head_dim; /* override the config's recurrent heads / head dim (0 = keep) */
    float target_acc;       /* mqar: stop when the eval accuracy reaches this (0 = never)              */
    float target_loss;      /* text: stop when the validation loss is at most this (0 = never)        */
    double time_limit_s;    /* stop after this wall time (0 = none)                                   */
    FILE *log;              /* progress lines (NULL: stderr; set quiet to silence)                   */
    int quiet;
    float *loss_trace;      /* optional [steps]: training loss of each step                            */
    float *gnorm_trace;     /* optional [steps]: each step's global gradient norm, before the clip     */
} gdn2_train_opts;
typedef struct {
    int64_t steps;          /* steps done in total (including before a resume)                        */
    float train_loss;       /* last step's                                                            */
    float val_loss, val_acc;/* last eval (acc: mqar per-query accuracy, text: next-byte accuracy)      */
    double wall_s, tokens_per_s;
    size_t n_params;
} gdn2_train_result;
GDN2_API void gdn2_train_defaults(gdn2_train_opts *o);
GDN2_API int gdn2_train(const gdn2_train_opts *o, gdn2_train_result *r, gdn2_model **model_out /* may be NULL */);
/* Data-parallel training on `world` ranks of this machine: processes forked and supervised here,
 * one per GPU (o->device "cuda": rank r on GPU r, NCCL) or per CPU rank (o->device NULL/"cpu":
 * shared memory). If a rank fails the others are stopped (SIGTERM, then SIGKILL after
 * o->dist_grace_s or 10 s) and the error names the rank; checkpoints written before stay intact.
 * r receives rank 0's result. world = 1 runs gdn2_train in this process. */
GDN2_API int gdn2_train_parallel(const gdn2_train_opts *o, int world, gdn2_train_result *r);
/* Data-parallel training with this process as one rank of an MPI job (`mpirun -np N`, one or
 * several nodes; docs/DIST.md). The caller has called MPI_Init and calls MPI_Finalize (or MPI_Abort
 * when this fails: the other ranks may be waiting in a collective). CPU: the gradient sums go over
 * MPI in rank order (the same bits as gdn2_train_parallel on N ranks); o->device "cuda": this rank
 * uses the GPU of its index on its node, rank 0 makes the NCCL unique id and MPI broadcasts it, then
 * NCCL carries the collectives. Ranks other than 0 are quiet; rank 0 writes the checkpoints; r is
 * this rank's result (rank 0's is the run's). GDN2_ERR_UNSUPPORTED when built without MPI. */
GDN2_API int gdn2_train_mpi(const gdn2_train_opts *o, gdn2_train_result *r);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_MODEL_H */
