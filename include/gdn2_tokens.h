/* Token-file data loader (src/data/tokens.c): llm.c's .bin shards of uint16 (or uint32) token ids,
 * memory-mapped read-only, so that a corpus larger than memory trains (`gdn2 train --task tokens`).
 * Format and stream order: docs/FORMATS.md "Token shards".
 *
 * A dataset is a glob pattern or a comma list of patterns ("data/fineweb_train_*.bin",
 * "a.bin,b.bin"); every item must match at least one file; the shards are sorted by path (strcmp)
 * and each is mapped whole (only the header page is read at open). Memory beyond the mappings is
 * O(number of shards) + the caller's [B,T] buffers.
 *
 * Two streams, as gdn2_text: split 0 = train, split 1 = validation. The validation stream is the
 * shards of a separate pattern when one is given; else the last shard of the pattern when there are
 * two or more; else the last 10% of the tokens of the only shard (the train stream then stops
 * before them).
 *
 * Stream order (llm.c's): a position inside one shard's span; a batch is the B*T+1 tokens starting
 * there (inputs[b,t] = tok[pos + b*T + t], targets[b,t] = tok[pos + b*T + t + 1]) and the position
 * advances by B*T; when fewer than B*T+1 tokens remain, the stream moves to the next shard at
 * position 0 (a shard shorter than B*T+1 tokens is passed over); after the last shard, the next
 * epoch starts. With shuffle on, the train stream's shard order of epoch e is a permutation drawn
 * from (seed, e); the validation stream is never shuffled. Every batch is therefore a pure function
 * of (seed, state, B, T), and the state is three integers that a run record keeps for --resume.
 *
 * Token ids are checked against vocab_size (when > 0) in every batch served (the window's B*T+1
 * ids), or all at once with gdn2_tokens_scan; a bad id is GDN2_ERR_FORMAT naming the file, the
 * token's index in it and its byte offset. */
#ifndef GDN2_TOKENS_H
#define GDN2_TOKENS_H

#include "gdn2_export.h"

#include <stddef.h>
#include <stdint.h>

#include "gdn2_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GDN2_TOK_MAGIC 20240520        /* llm.c's data shard magic                                  */
#define GDN2_TOK_MAGIC_LLAMA3 20240801 /* llm.c's llama-3 shards: version 7, uint32 tokens        */
#define GDN2_TOK_V_U16 1               /* llm.c: uint16 tokens (GPT-2)                             */
#define GDN2_TOK_V_U32 2               /* gdn2's extension (llm.c defines no version 2): uint32    */
#define GDN2_TOK_V_LLAMA3 7            /* with GDN2_TOK_MAGIC_LLAMA3 only                          */
#define GDN2_TOK_HEADER_INTS 256
#define GDN2_TOK_HEADER_BYTES (GDN2_TOK_HEADER_INTS * 4)
#define GDN2_TOK_MAX_SHARD_TOKENS 2147483647LL /* header[2] is an int32                              */

typedef struct gdn2_tokens gdn2_tokens; /* opaque */

typedef struct {
    int64_t vocab_size; /* ids must be < vocab_size; 0 = not checked                         */
    int shuffle;        /* 1: the train stream's shard order is shuffled per epoch by seed    */
    uint64_t seed;
} gdn2_tokens_cfg;

/* Where a stream is: the next batch starts at token `pos` of the span `shard` (an index into the
 * epoch's shard order: the sorted list, or its permutation for the epoch when shuffled) in pass
 * `epoch` over the shards. {0,0,0} is the start. */
typedef struct {
    int64_t epoch, shard, pos;
} gdn2_tokens_state;

/* Open the shards of pattern (train) and of val_pattern (validation; NULL = the split above).
 * Errors (every one names the file; GDN2_ERR_IO or GDN2_ERR_FORMAT): a pattern item matching no
 * file, a file that is not a regular file or cannot be mapped, a header shorter than 1024 bytes,
 * a bad magic or version, a token count < 1, and a file size that is not exactly
 * 1024 + count * width (truncated or padded: both sizes named). */
GDN2_API int gdn2_tokens_open(const char *pattern, const char *val_pattern, const gdn2_tokens_cfg *cfg, gdn2_tokens **out);
GDN2_API void gdn2_tokens_close(gdn2_tokens *d);
/* vocab_size for the id checks from now on (0 = none) */
GDN2_API void gdn2_tokens_set_vocab(gdn2_tokens *d, int64_t vocab_size);

/* The next batch of split (0 train, 1 val): inputs[B*T], targets[B*T]; the split's state advances.
 * GDN2_ERR_ARG when no shard of the split holds B*T+1 tokens (the largest is named); GDN2_ERR_FORMAT
 * for an id >= vocab_size in the window. On an error the state does not move. */
GDN2_API int gdn2_tokens_next(gdn2_tokens *d, int split, int64_t B, int64_t T, int32_t *inputs, int32_t *targets);

/* GDN2_OK when both splits can serve a [B,T] batch (some shard of each holds B*T+1 tokens); else the
 * error gdn2_tokens_next would give. For a caller that wants to fail before any work. */
GDN2_API int gdn2_tokens_check_batch(const gdn2_tokens *d, int64_t B, int64_t T);

GDN2_API gdn2_tokens_state gdn2_tokens_get_state(const gdn2_tokens *d, int split);
/* GDN2_ERR_ARG when the state does not fit this dataset (shard index beyond the split's shards,
 * position beyond that shard's tokens, negative values). */
GDN2_API int gdn2_tokens_set_state(gdn2_tokens *d, int split, const gdn2_tokens_state *s);
/* The state as JSON {"epoch":E,"shard":S,"pos":P,"file":"<path of that shard>"} (malloc'ed; NULL
 * when out of memory), and back: "file" is for people and is not read; the three integers must be
 * present, whole and >= 0 (GDN2_ERR_FORMAT otherwise). */
GDN2_API char *gdn2_tokens_state_json(const gdn2_tokens *d, int split);
GDN2_API int gdn2_tokens_state_parse(const char *json, gdn2_tokens_state *s);

/* Check every id of every shard of both splits against vocab_size (reads the whole corpus once,
 * through the mappings). GDN2_OK when vocab_size is 0. */
GDN2_API int gdn2_tokens_scan(const gdn2_tokens *d);

/* Sizes: shards and tokens of a split; shard i's path, version and token count (in sorted order,
 * i < n_shards of that split). */
GDN2_API int64_t gdn2_tokens_n_shards(const gdn2_tokens *d, int split);
GDN2_API int64_t gdn2_tokens_n_tokens(const gdn2_tokens *d, int split);
GDN2_API const char *gdn2_tokens_shard_path(const gdn2_tokens *d, int split, int64_t i);
/* An identity of the files behind both splits for a run record: the shard count, the token count
 * and a hash (FNV-1a + mix64) over each shard's base name, size, version and its first and last
 * 4 KiB of tokens (not the whole corpus: a same-size edit in the middle goes unseen).
 * Writes at most cap bytes, e.g. "3 shards, 123456 tokens, fnv1a64+mix64 0123456789abcdef". */
GDN2_API void gdn2_tokens_identity(const gdn2_tokens *d, int split, char *buf, size_t cap);

/* Write one shard atomically (temp name + rename): the header then n ids (n in 1..2^31-1) as
 * version 1 (uint16: every id must be < 65536) or 2 (uint32). */
GDN2_API int gdn2_tokens_write_shard(const char *path, int version, const uint32_t *ids, int64_t n);
/* Shards from a byte text (token = byte, vocab 256), streamed: PREFIX_000000.bin, PREFIX_000001.bin
 * ... of shard_tokens tokens each (the last may be shorter), version 1 or 2. *n_shards and
 * *n_tokens (may be NULL) get what was written. */
GDN2_API int gdn2_tokens_from_text(const char *text_path, const char *prefix, int64_t shard_tokens, int version,
                          int64_t *n_shards, int64_t *n_tokens);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_TOKENS_H */
