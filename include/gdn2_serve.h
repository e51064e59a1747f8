/* gdn2 generation engine (src/serve): a pool of state slots over the model's slot API
 * (gdn2_model_prefill_slot / gdn2_model_step_slots), continuous batching, per-request sampling,
 * stop sequences and token limits. docs/SERVING.md.
 *
 * The engine is single-threaded and owns no thread: its owner calls gdn2_engine_submit to start
 * a request in a free slot (the prompt is prefilled right there) and gdn2_engine_step to advance
 * every running slot by one token (one batched model step over exactly those slots, each at its
 * own position). Requests join and leave between any two steps; nothing is copied when they do.
 * A finished slot keeps its output until gdn2_engine_release frees it for the next request.
 * The engine reaches the model only through the model-level slot functions, so it runs on any
 * backend that implements them (the CPU today). */
#ifndef GDN2_SERVE_H
#define GDN2_SERVE_H

#include "gdn2_export.h"

#include <stdint.h>

#include "gdn2_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GDN2_FINISH_NONE = 0,   /* still running                                                     */
    GDN2_FINISH_LENGTH = 1, /* max_tokens generated                                               */
    GDN2_FINISH_STOP = 2,   /* a stop sequence was generated (it is not part of the output)        */
    GDN2_FINISH_ERROR = 3,  /* the model failed (gdn2_last_error() after the step that said so)    */
} gdn2_finish;

typedef struct {
    const int32_t *prompt;  /* [n_prompt] token ids; n_prompt may be 0 only after a prefix with logits */
    int64_t n_prompt;
    int64_t max_tokens;     /* >= 1 tokens to generate at most                                   */
    gdn2_sampling sampling; /* temperature, top_k, top_p, seed                                   */
    const int32_t *const *stop; /* n_stop stop sequences (token ids), stop_len[i] >= 1 each      */
    const int64_t *stop_len;
    int n_stop;
    /* optional prefix: the request starts from slot prefix_slot of the pool prefix (copied into
     * its own slot), then consumes the prompt; prefix_logits [padded_vocab] are the logits after
     * the prefix (needed when n_prompt = 0) */
    const gdn2_model_state *prefix;
    int64_t prefix_slot;
    const float *prefix_logits;
} gdn2_request;

typedef struct gdn2_engine gdn2_engine;

/* n_slots sequences at once; max_len: the context (prefix + prompt + output) a slot holds, which
 * sizes the full-attention caches only (recurrent and SWA layers are constant in it). */
GDN2_API int gdn2_engine_create(gdn2_model *m, int64_t n_slots, int64_t max_len, gdn2_engine **out);
GDN2_API void gdn2_engine_free(gdn2_engine *e);
GDN2_API int64_t gdn2_engine_slots(const gdn2_engine *e);
GDN2_API int64_t gdn2_engine_free_slots(const gdn2_engine *e);
GDN2_API int64_t gdn2_engine_running(const gdn2_engine *e); /* slots with finish == NONE */
GDN2_API int64_t gdn2_engine_max_len(const gdn2_engine *e);

/* Start r in the lowest free slot (*slot): copies the request (prompt, stops), resets the slot,
 * starts from the prefix if any and prefills the prompt. GDN2_ERR_ARG for a bad request (the
 * message says what) or when no slot is free; the model's error otherwise (the slot stays free). */
GDN2_API int gdn2_engine_submit(gdn2_engine *e, const gdn2_request *r, int64_t *slot);
/* One token for every running slot: take the token drawn for it (at submit from the prompt's
 * logits, after that by the previous step), apply stop sequences and max_tokens, then one
 * gdn2_model_step_slots_sample over the slots that go on, which draws their next tokens where the
 * logits are (the same tokens on every backend for the same logits). A model failure finishes those
 * slots with GDN2_FINISH_ERROR and returns the error. */
GDN2_API int gdn2_engine_step(gdn2_engine *e);

typedef struct {
    const int32_t *tokens; /* the output so far                                                     */
    int64_t n_committed;   /* tokens that are final (a possible start of a stop sequence is held
                            * back until decided; all of them once finished)                       */
    int64_t n_generated;   /* tokens sampled (counts held-back and stop tokens)                     */
    int64_t n_prompt;      /* prompt tokens consumed (without the prefix)                           */
    int64_t n_prefix;      /* prefix tokens the slot started from                                   */
    int finish;            /* gdn2_finish                                                           */
    int in_use;
} gdn2_slot_output;
GDN2_API int gdn2_engine_output(const gdn2_engine *e, int64_t slot, gdn2_slot_output *o);
/* Free a slot (a finished request, or a cancelled one: it stops at once). */
GDN2_API int gdn2_engine_release(gdn2_engine *e, int64_t slot);
/* Save the slot's state right after submit (before any step: prefix + prompt consumed) as a
 * prefix file (gdn2_model_state_save_slot, with the logits). */
GDN2_API int gdn2_engine_save_prefix(gdn2_engine *e, int64_t slot, const char *path);
/* The engine's pool (read only: for tests and tools). */
GDN2_API const gdn2_model_state *gdn2_engine_pool(const gdn2_engine *e);

#ifdef __cplusplus
}
#endif
#endif
