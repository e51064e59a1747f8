/* Byte-level tokenizer and text data loader (src/data/text.c): token = byte (vocab 256), the file
 * split into a train part (first 1 - val_frac) and a validation part (the rest). */
#ifndef GDN2_TEXT_H
#define GDN2_TEXT_H

#include "gdn2_export.h"

#include <stddef.h>
#include <stdint.h>

#include "gdn2_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GDN2_BYTE_VOCAB 256

typedef struct {
    uint8_t *data;
    int64_t n;       /* bytes in the file           */
    int64_t n_train; /* bytes [0, n_train) are train, [n_train, n) validation */
} gdn2_text;

/* The text the commands read when none is given (train --task text, demo --shakespeare, quantize,
 * the essay haystack of eval / task), relative to the working directory (the project root). It is
 * Tiny Shakespeare (karpathy/char-rnn), written by others and not shipped with the repository:
 * `sh scripts/get_data.sh` fetches it. GDN2_DEFAULT_TEXT_HINT ends the message for a missing one. */
#define GDN2_DEFAULT_TEXT "data/tinyshakespeare.txt"
#define GDN2_DEFAULT_TEXT_HINT "it is not shipped with the repository: fetch it with `sh scripts/get_data.sh`"

/* Load a text file; val_frac in [0, 1). Errors name the file; a split too short for seq_len+1
 * bytes is caught by gdn2_text_batch. */
GDN2_API int gdn2_text_load(const char *path, double val_frac, gdn2_text *t);
GDN2_API void gdn2_text_free(gdn2_text *t);
/* B windows of T+1 bytes from split 0 (train) / 1 (val) at offsets drawn from `seed` (a pure
 * function of seed: the trainer passes a hash of (run seed, step, micro-step), so resume is exact):
 * tokens[b,t] = byte[o_b + t], targets[b,t] = byte[o_b + t + 1]. */
GDN2_API int gdn2_text_batch(const gdn2_text *t, int split, uint64_t seed, int64_t B, int64_t T, int32_t *tokens,
                    int32_t *targets);
/* byte tokenizer: encode copies bytes to ids; decode writes n bytes (ids outside 0..255 become '?') */
GDN2_API int64_t gdn2_byte_encode(const char *s, int64_t n, int32_t *ids);
GDN2_API void gdn2_byte_decode(const int32_t *ids, int64_t n, char *out);

#ifdef __cplusplus
}
#endif
#endif
