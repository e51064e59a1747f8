/* gdn2 post-training weight quantization (src/quant/quant.c, docs/QUANT.md).
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
 * The caller owns every buffer; gdn2_quant_sizes says how large they must be. Only
 * gdn2_model_fake_quant allocates (one scratch row, freed before it returns).
 */
#ifndef GDN2_QUANT_H
#define GDN2_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "gdn2.h"
#include "gdn2_model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GDN2_QUANT_GROUP_DEFAULT 32

/* Buffer sizes for (bits, rows, cols, group): *q_bytes bytes of quantized values and *n_scales
 * fp32 scales (either pointer may be NULL). bits 8: rows*cols bytes, rows scales (group is
 * ignored); bits 4: rows*ceil(cols/2) bytes, rows*ceil(cols/group) scales (group >= 1).
 * GDN2_ERR_ARG for other bits, group < 1 with bits 4, or rows/cols < 1. */
int gdn2_quant_sizes(int bits, int64_t rows, int64_t cols, int64_t group, size_t *q_bytes, size_t *n_scales);
/* Bytes the quantized matrix takes with its fp32 scales (q_bytes + 4 * n_scales); 0 on bad arguments. */
size_t gdn2_quant_nbytes(int bits, int64_t rows, int64_t cols, int64_t group);

/* Quantize w [rows, cols] into q (int8_t for bits 8, packed uint8_t for bits 4) and scales. */
int gdn2_quantize(int bits, int64_t group, const float *w, int64_t rows, int64_t cols, void *q, float *scales);
/* w [rows, cols] = dequantized q (w may not alias q or scales). */
int gdn2_dequantize(int bits, int64_t group, const void *q, const float *scales, int64_t rows, int64_t cols,
                    float *w);

/* ---- model level ------------------------------------------------------------------------- */
/* Sets of the model's Linear weights (official names, N = layer). Everything else (norm weights,
 * A_log, dt_bias, the short-conv weights, g_proj.1.bias) always stays fp32.
 *   PROJ : transformer.h.N.attn.{q,k,v,o}_proj.weight (GDN-2/KDA/GDN), attn.attn.weight and
 *          attn.proj.weight (softmax attention), mlp.swiglu.{w1,w2,w3}.weight
 *   GATES: transformer.h.N.attn.{b_proj, w_proj, f_proj.0, f_proj.1, a_proj, g_proj.0, g_proj.1}.weight
 *          (erase gate b, write gate w, the decay path f (a_proj for the gdn variant), output gate g)
 *   HEAD : transformer.wte.weight (embedding) and lm_head.weight */
enum { GDN2_QSET_PROJ = 1, GDN2_QSET_GATES = 2, GDN2_QSET_HEAD = 4 };

/* The set a parameter name belongs to (GDN2_QSET_*), or 0 for a tensor that is never quantized. */
int gdn2_quant_set_of(const char *name);
/* Parse "proj", "proj,gates", "proj,gates,head", "all" ... into a GDN2_QSET_* mask (> 0). */
int gdn2_quant_parse_sets(const char *s, int *sets);
/* The mask as text ("proj,gates", ...), written into buf (cap bytes); returns buf. */
const char *gdn2_quant_sets_str(int sets, char *buf, size_t cap);

typedef struct {
    int n_tensors;         /* tensors quantized                                          */
    size_t n_weights;      /* their elements                                             */
    size_t bytes_fp32;     /* their size in fp32                                         */
    size_t bytes_quant;    /* their size quantized, incl. the fp32 scales                */
    size_t model_bytes_fp32;  /* whole model in fp32 (all tensors)                        */
    size_t model_bytes_quant; /* whole model with the selected tensors quantized          */
    double weight_rel_rmse;   /* rms(w' - w) / rms(w) over the quantized elements         */
} gdn2_quant_stats;

/* Fake quantization: every selected 2-D weight of m is quantized (bits 8 or 4, group for int4)
 * and dequantized in place, so m->params holds exactly what a quantized model computes with.
 * stats may be NULL. Allocates scratch for one row of the widest selected tensor (its quantized
 * bytes, scales and an fp32 copy: about 5*cols bytes) and frees it before returning. On error
 * (bad bits/group/sets, non-finite weight: the message names the tensor) m may be partly
 * quantized. */
int gdn2_model_fake_quant(gdn2_model *m, int bits, int64_t group, int sets, gdn2_quant_stats *stats);

/* ---- packed checkpoints ------------------------------------------------------------------ */
/* Like gdn2_model_save, but each selected 2-D weight NAME is stored quantized from m's current
 * weights (call it on the fp32 model): NAME.q ("I8" [rows, cols] for int8; "U8" [rows,
 * ceil(cols/2)] packed as above for int4) and NAME.scale (F32 [rows] for int8, [rows,
 * ceil(cols/group)] for int4); the metadata gets "quant" = {"bits": B, "group": G, "sets": "..."}.
 * Every other tensor stays F32 under its name. gdn2_model_load reads these files and dequantizes
 * into fp32 parameters, so the loaded model equals gdn2_model_fake_quant of the saved one, bit for
 * bit. Written atomically (temp file + rename). Allocates the quantized copies while it writes. */
int gdn2_model_save_quant(const gdn2_model *m, const char *path, int bits, int64_t group, int sets);

/* Dequantize the packed weight `name` (NAME.q and NAME.scale of a gdn2_model_save_quant file, its
 * "quant" metadata giving bits and group) into w [rows, cols]; checks dtypes, shapes and that the
 * scales are finite and >= 0 (errors name the file and tensor). GDN2_ERR_FORMAT when NAME.q is
 * absent. Used by gdn2_model_load. */
int gdn2_quant_load_weight(const gdn2_st *st, const char *name, int64_t rows, int64_t cols, float *w);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_QUANT_H */
