/* gdn2 post-training weight quantization of a matrix (src/quant/quant.c, docs/QUANT.md).
 *
 * Two formats for a row-major [rows, cols] fp32 matrix (a Linear weight [out, in]):
 *   int8: symmetric, one fp32 scale per output row: s = max|w_row| / 127, q = round(w / s) in
 *         [-127, 127] (int8_t, rows*cols bytes), w' = q * s.
 *   int4: symmetric, one fp32 scale per group of `group` consecutive columns of a row (along the
 *         input dimension; the last group of a row may be shorter): s = max|w_group| / 7,
 *         q = round(w / s) in [-7, 7], w' = q * s. Packed two per byte along the row: element
 *         (r, c) is in byte r*ceil(cols/2) + c/2, low nibble for even c, high nibble for odd c,
 *         stored as q + 8 (1..15); an odd row's unused high nibble is 0. Each row starts on a byte.
 * round() is round-half-away-from-zero. A row / group that is all zero gets scale 0 and q = 0, so
 * it dequantizes to exact zeros. |w - w'| <= s/2 for every element (up to fp32 rounding of w/s and
 * q*s). Non-finite weights are rejected (GDN2_ERR_ARG).
 *
 * The caller owns every buffer; gdn2_quant_sizes says how large they must be; nothing here
 * allocates. Which weights of a model are quantized, and the packed checkpoints, are in
 * gdn2_quant_model.h.
 */
#ifndef GDN2_QUANT_H
#define GDN2_QUANT_H

#include "gdn2_export.h"

#include <stddef.h>
#include <stdint.h>

#include "gdn2_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GDN2_QUANT_GROUP_DEFAULT 32

/* Buffer sizes for (bits, rows, cols, group): *q_bytes bytes of quantized values and *n_scales
 * fp32 scales (either pointer may be NULL). bits 8: rows*cols bytes, rows scales (group is
 * ignored); bits 4: rows*ceil(cols/2) bytes, rows*ceil(cols/group) scales (group >= 1).
 * GDN2_ERR_ARG for other bits, group < 1 with bits 4, or rows/cols < 1. */
GDN2_API int gdn2_quant_sizes(int bits, int64_t rows, int64_t cols, int64_t group, size_t *q_bytes, size_t *n_scales);
/* Bytes the quantized matrix takes with its fp32 scales (q_bytes + 4 * n_scales); 0 on bad arguments. */
GDN2_API size_t gdn2_quant_nbytes(int bits, int64_t rows, int64_t cols, int64_t group);

/* Quantize w [rows, cols] into q (int8_t for bits 8, packed uint8_t for bits 4) and scales. */
GDN2_API int gdn2_quantize(int bits, int64_t group, const float *w, int64_t rows, int64_t cols, void *q, float *scales);
/* w [rows, cols] = dequantized q (w may not alias q or scales). */
GDN2_API int gdn2_dequantize(int bits, int64_t group, const void *q, const float *scales, int64_t rows, int64_t cols,
                    float *w);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_QUANT_H */
