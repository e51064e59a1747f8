/* gdn2 synthetic tasks: generators, scorers and the result heatmap (src/data).
 *
 * Every generator is deterministic in (config, seed, split). split 0 is the train stream, split 1
 * the test stream; the two are disjoint by construction (see docs/TASKS.md: token tasks keep a
 * sample only if a hash of its content has the split's parity; RULER tasks draw every key and
 * value from the split's half of the key/value space, so no test key or value is ever trained on).
 *
 * Token tasks (MQAR, forgetting-MQAR, parity, modular arithmetic) fill tokens[seq_len] and
 * targets[seq_len]: targets[t] is the token the model must predict after reading tokens[0..t]
 * (next-token convention), GDN2_IGNORE where there is no loss. RULER NIAH tasks produce text
 * (bytes = tokens of the byte-level tokenizer) and a list of reference answers.
 */
#ifndef GDN2_DATA_H
#define GDN2_DATA_H

#include "gdn2_export.h"

#include <stddef.h>
#include <stdint.h>

#include "gdn2_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef GDN2_IGNORE
#define GDN2_IGNORE (-100) /* target of a position without loss (as torch) */
#endif

/* ------------------------------------------------------------------------------------------ */
/* MQAR (Zoology multi-query associative recall) and forgetting-MQAR                          */
/* ------------------------------------------------------------------------------------------ */
/* Keys are tokens 1..V/2-1, values V/2..V-1 (0 is the blank). Context k1 v1 .. kn vn (then, for
 * forgetting-MQAR, n_updates of those keys again with new values), then a query region where each
 * key appears once at a power-law distributed gap; the target at a query key is its (latest)
 * value. Constraints: seq_len even, 2(n_pairs + n_updates) + 2 n_pairs <= seq_len,
 * n_pairs <= V/2 - 1. All-zero extra fields give the Zoology defaults. */
typedef struct {
    int vocab_size;  /* V, >= 4 */
    int seq_len;     /* T, even */
    int n_pairs;     /* n key-value pairs, all queried */
    int forgetting;  /* 1: forgetting-MQAR (keys overwritten later; the query wants the latest) */
    int n_updates;   /* forgetting only: keys re-assigned; 0 = n_pairs / 2 (at least 1)         */
    float power_a;   /* query-gap power law w(g) ~ (g+1)^(a-1); 0 = 0.01 (Zoology)              */
    int no_fill;     /* 1: leave unused query slots 0 (Zoology random_non_queries=False)        */
} gdn2_mqar_cfg;

/* Validate a config (clear message via gdn2_last_error on failure). */
GDN2_API int gdn2_mqar_check(const gdn2_mqar_cfg *c);
/* One sample: tokens[seq_len], targets[seq_len] (GDN2_IGNORE where no loss).
 * split 0 = train stream, 1 = test stream (disjoint); deterministic in (cfg, seed, split). */
GDN2_API int gdn2_mqar_sample(const gdn2_mqar_cfg *c, uint64_t seed, int split, int32_t *tokens, int32_t *targets);

/* ------------------------------------------------------------------------------------------ */
/* State tracking (Grazzi et al.): parity and modular arithmetic without brackets             */
/* ------------------------------------------------------------------------------------------ */
enum { GDN2_ST_PARITY = 0, GDN2_ST_MODARITH = 1 };
/* parity:   vocab 3 {0 pad, 1, 2}; L-1 random bits then 1 + (#2s mod 2).
 * modarith: vocab 10 {0 pad, 1 '+', 2 '-', 3 '*', 4 '=', 5..9 digits 0..4}; an expression of
 *           odd length L-2 (number op number ...), '=', then the value mod 5 (* before +/-).
 * The sample is right-padded with 0 to seq_len; the only target is the answer, at position L-2.
 * Lengths L: uniform in [min_len, max_len]; 0 = the protocol (train 3..40, test 40..256). */
typedef struct {
    int kind;     /* GDN2_ST_PARITY or GDN2_ST_MODARITH */
    int seq_len;  /* padded length, >= max_len; 0 = 256 */
    int min_len, max_len;
} gdn2_state_cfg;

GDN2_API int gdn2_state_vocab(int kind); /* 3 or 10 */
/* One sample; *len_out (may be NULL) gets L. */
GDN2_API int gdn2_state_sample(const gdn2_state_cfg *c, uint64_t seed, int split, int32_t *tokens,
                      int32_t *targets, int *len_out);

/* ------------------------------------------------------------------------------------------ */
/* RULER needle-in-a-haystack family                                                          */
/* ------------------------------------------------------------------------------------------ */
typedef enum {
    GDN2_NIAH_SINGLE_1 = 0, /* S-NIAH-1: noise haystack, word key, 7-digit number   */
    GDN2_NIAH_SINGLE_2,     /* S-NIAH-2: essay, word key, number                    */
    GDN2_NIAH_SINGLE_3,     /* S-NIAH-3: essay, word key, UUID                      */
    GDN2_NIAH_MULTIKEY_1,   /* MK-NIAH-1: essay, 4 keys (3 distractors), number     */
    GDN2_NIAH_MULTIKEY_2,   /* MK-NIAH-2: haystack of needles, word keys, number    */
    GDN2_NIAH_MULTIKEY_3,   /* MK-NIAH-3: haystack of needles, UUID keys, UUID      */
    GDN2_NIAH_MULTIVALUE,   /* MV-NIAH: essay, 1 key with 4 values (all required)   */
    GDN2_NIAH_MULTIQUERY,   /* MQ-NIAH: essay, 4 keys, all 4 queried               */
    GDN2_NIAH_COUNT
} gdn2_niah_task;

/* Shared inputs of the RULER generators (loaded once). */
typedef struct {
    char **adjs, **nouns; /* word-key parts (RULER: wonderwords adjectivelist/nounlist) */
    int n_adjs, n_nouns;
    char **words;         /* essay haystack, whitespace-split (RULER: Paul Graham essays) */
    int64_t n_words;
} gdn2_ruler_res;

/* RULER's word lists, shipped in data/ (provenance: data/README.md), relative to the working
 * directory (the project root): the commands' defaults for --adjs / --nouns. */
#define GDN2_DEFAULT_ADJS "data/ruler_adjectivelist.txt"
#define GDN2_DEFAULT_NOUNS "data/ruler_nounlist.txt"

/* Load word lists (one word a line) and, if essay_path != NULL, the essay haystack. A missing or
 * empty file is GDN2_ERR_IO with its path in the message. */
GDN2_API int gdn2_ruler_load(gdn2_ruler_res *r, const char *adj_path, const char *noun_path, const char *essay_path);
GDN2_API void gdn2_ruler_free(gdn2_ruler_res *r);

typedef struct {
    int task;        /* gdn2_niah_task */
    int length;      /* total token budget: prompt + max_new <= length (RULER max_seq_length) */
    int max_new;     /* tokens reserved for the answer; 0 = default (32 numbers, 64 UUID/multi) */
    int use_depth;   /* 1: put the (first) queried needle at `depth` percent; 0: RULER's draw */
    double depth;    /* 0..100 */
} gdn2_niah_cfg;

#define GDN2_NIAH_MAX_ANS 4
typedef struct {
    char *prompt;                                 /* malloc'd, NUL-terminated; ends with the answer prefix */
    int prompt_len;                               /* bytes = tokens */
    int max_new;                                  /* generation budget used */
    int n_answers;
    char answers[GDN2_NIAH_MAX_ANS][40];          /* reference strings (7 digits or a 36-char UUID) */
    int n_needles;
    int needle_off[GDN2_NIAH_MAX_ANS];            /* byte offset of each real needle in prompt */
    int context_off, context_len;                 /* the haystack region of the prompt */
    double depth;                                 /* actual depth (percent of context) of needle 0 */
} gdn2_niah_sample;

GDN2_API const char *gdn2_niah_name(int task);             /* RULER name, e.g. "niah_single_1" */
GDN2_API const char *gdn2_niah_paper_name(int task);       /* paper name, e.g. "S-NIAH-1" */
GDN2_API int gdn2_niah_needs_essay(int task);
GDN2_API int gdn2_niah_default_max_new(int task);
/* One sample (free with gdn2_niah_sample_free). GDN2_ERR_ARG if length cannot hold the prompt
 * frame, the needles, one haystack unit and max_new. */
GDN2_API int gdn2_niah_generate(const gdn2_ruler_res *r, const gdn2_niah_cfg *c, uint64_t seed, int split,
                       gdn2_niah_sample *s);
GDN2_API void gdn2_niah_sample_free(gdn2_niah_sample *s);

/* RULER's task template and answer prefix after the singular rewrite (for tests and docs):
 * writes the text before the context, and the text after it (question + answer prefix) with
 * `query` substituted. Returns GDN2_OK or GDN2_ERR_ARG if a buffer is too small. */
GDN2_API int gdn2_niah_frame(int task, const char *query, char *pre, size_t pre_cap, char *post, size_t post_cap);
/* RULER's needle sentence for (value type of task, key, value). */
GDN2_API int gdn2_niah_needle(int task, const char *key, const char *value, char *out, size_t cap);

/* ------------------------------------------------------------------------------------------ */
/* task registry (CLI names)                                                                  */
/* ------------------------------------------------------------------------------------------ */
typedef enum { GDN2_TASK_KIND_TOKENS = 0, GDN2_TASK_KIND_TEXT = 1 } gdn2_task_kind;
typedef struct {
    const char *name;  /* canonical: mqar, forgetting-mqar, parity, modarith, niah_single_1 ... */
    const char *alias; /* S-NIAH-1 ..., fmqar */
    int kind;          /* gdn2_task_kind */
    int id;            /* GDN2_NIAH_* for text tasks; 0 mqar, 1 forgetting, 2 parity, 3 modarith */
} gdn2_task_info;
#define GDN2_TASK_MQAR 0
#define GDN2_TASK_FMQAR 1
#define GDN2_TASK_PARITY 2
#define GDN2_TASK_MODARITH 3
/* Look up a task by name or alias (case-insensitive); NULL if unknown. */
GDN2_API const gdn2_task_info *gdn2_task_find(const char *name);
/* All tasks (count in *n). */
GDN2_API const gdn2_task_info *gdn2_task_list(int *n);

/* ------------------------------------------------------------------------------------------ */
/* scoring                                                                                    */
/* ------------------------------------------------------------------------------------------ */
/* RULER post-processing: strip, control characters (0x00-0x1F) -> '\n', strip. Writes to out. */
GDN2_API void gdn2_ruler_postprocess(const char *pred, size_t n, char *out, size_t cap);
/* RULER string_match_all for one sample: fraction of refs that occur case-insensitively as
 * substrings of pred (after postprocessing). 0 refs -> 0. */
GDN2_API double gdn2_string_match_all(const char *pred, const char *const *refs, int n_refs);
/* string_match_part: 1 if any ref occurs, else 0. */
GDN2_API double gdn2_string_match_part(const char *pred, const char *const *refs, int n_refs);
/* Token tasks: predicted argmax pred[t] vs targets[t] over positions with a target.
 * *n_correct and *n_scored get the counts; returns the per-sample accuracy (0 if nothing scored). */
GDN2_API double gdn2_token_accuracy(const int32_t *pred, const int32_t *targets, int n, int *n_correct, int *n_scored);
/* Sequence accuracy: 1 if every scored position is right (and at least one is scored). */
GDN2_API int gdn2_sequence_correct(const int32_t *pred, const int32_t *targets, int n);

/* ------------------------------------------------------------------------------------------ */
/* evaluation of one (task, length, depth) cell against any model (src/data/evaluate.c)       */
/* ------------------------------------------------------------------------------------------ */
/* The evaluator sees a model through two callbacks, so the protocol (sampling, decoding budget,
 * scoring) is testable with an oracle; `gdn2 eval` plugs in a checkpoint (prefill + steps). */
typedef int (*gdn2_eval_stop_fn)(const int32_t *gen, int n_gen, void *stop_ctx);
typedef struct {
    void *ctx;
    int vocab_size; /* tokens must be < vocab_size */
    /* greedy continuation of prompt[n]: up to max_new tokens into out, count in *n_out; after each
     * token the model may call stop(out, count, stop_ctx) and end early when it returns 1 (the
     * evaluator only asks to stop when the score can no longer change). */
    int (*generate)(void *ctx, const int32_t *prompt, int n, int max_new, int32_t *out, int *n_out,
                    gdn2_eval_stop_fn stop, void *stop_ctx);
    /* teacher-forced argmax of the next token at every position: tokens[n] -> pred[n] */
    int (*predict)(void *ctx, const int32_t *tokens, int n, int32_t *pred);
} gdn2_eval_model;

typedef struct {
    const gdn2_task_info *task;
    int length;       /* NIAH: token budget; MQAR: T; parity/modarith: L                         */
    int use_depth;    /* NIAH: 1 = needle at depth, 0 = RULER's draw                             */
    double depth;
    int n_samples;
    uint64_t seed;    /* sample i uses a seed derived from (seed, i); the test stream (split 1)   */
    int max_new;      /* NIAH: 0 = task default                                                  */
    int vocab;        /* MQAR: V (0 = the model's vocab_size)                                    */
    int pairs;        /* MQAR: pairs (0 = T/16, at least 1)                                      */
    const gdn2_ruler_res *res; /* NIAH resources                                               */
} gdn2_eval_cell_cfg;

typedef struct {
    double score;      /* 0..100: NIAH string_match_all, MQAR per-query accuracy, state sequence acc */
    double score_part; /* NIAH string_match_part (0..100)                                        */
    double scaled;     /* state tracking: (acc - chance) / (1 - chance), 0..1; else = score / 100   */
    int n;             /* samples scored                                                         */
    double mean_len;   /* mean prompt / sequence length in tokens                                */
} gdn2_eval_cell;

GDN2_API int gdn2_eval_cell_run(const gdn2_eval_model *m, const gdn2_eval_cell_cfg *c, gdn2_eval_cell *out);

/* ------------------------------------------------------------------------------------------ */
/* heatmap (SVG): score over depth (rows) x length (columns), the standard NIAH picture       */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
    const char *title;
    int n_rows, n_cols;
    const double *row_vals; /* depths (percent), n_rows; a NAN row is labelled "random" (RULER's draw) */
    const int *col_vals;    /* lengths (tokens), n_cols */
    const double *score;    /* [n_rows * n_cols], 0..100, NAN = not measured */
    const char *row_axis;   /* y-axis title; NULL = "needle depth (%)" */
} gdn2_heatmap;
/* Render to a malloc'd NUL-terminated SVG string (*out). */
GDN2_API int gdn2_heatmap_svg(const gdn2_heatmap *h, char **out);
/* Render and write atomically to path. */
GDN2_API int gdn2_heatmap_write(const gdn2_heatmap *h, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_DATA_H */
