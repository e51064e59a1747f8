/* gdn2 model-level weight quantization (src/model/quant_model.c, docs/QUANT.md): which Linear
 * weights of a model are quantized (the weight sets), fake quantization of a model in place, and
 * packed checkpoints. The matrix formats (int8 per row, int4 per group, the packing) are those of
 * gdn2_quant.h. Only gdn2_model_fake_quant and the packed save / load allocate (scratch rows, the
 * quantized copies), and free what they allocate before they return.
 */
#ifndef GDN2_QUANT_MODEL_H
#define GDN2_QUANT_MODEL_H

#include "gdn2_export.h"

#include <stddef.h>
#include <stdint.h>

#include "gdn2_io.h"
#include "gdn2_model.h"
#include "gdn2_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sets of the model's Linear weights (official names, N = layer). Everything else (norm weights,
 * A_log, dt_bias, the short-conv weights, g_proj.1.bias) always stays fp32.
 *   PROJ : transformer.h.N.attn.{q,k,v,o}_proj.weight (GDN-2/KDA/GDN), attn.attn.weight and
 *          attn.proj.weight (softmax attention), mlp.swiglu.{w1,w2,w3}.weight
 *   GATES: transformer.h.N.attn.{b_proj, w_proj, f_proj.0, f_proj.1, a_proj, g_proj.0, g_proj.1}.weight
 *          (erase gate b, write gate w, the decay path f (a_proj for the gdn variant), output gate g)
 *   HEAD : transformer.wte.weight (embedding) and lm_head.weight */
enum { GDN2_QSET_PROJ = 1, GDN2_QSET_GATES = 2, GDN2_QSET_HEAD = 4 };

/* The set a parameter name belongs to (GDN2_QSET_*), or 0 for a tensor that is never quantized. */
GDN2_API int gdn2_quant_set_of(const char *name);
/* Parse "proj", "proj,gates", "proj,gates,head", "all" ... into a GDN2_QSET_* mask (> 0). */
GDN2_API int gdn2_quant_parse_sets(const char *s, int *sets);
/* The mask as text ("proj,gates", ...), written into buf (cap bytes); returns buf. */
GDN2_API const char *gdn2_quant_sets_str(int sets, char *buf, size_t cap);

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
GDN2_API int gdn2_model_fake_quant(gdn2_model *m, int bits, int64_t group, int sets, gdn2_quant_stats *stats);

/* ---- packed checkpoints ------------------------------------------------------------------ */
/* Like gdn2_model_save, but each selected 2-D weight NAME is stored quantized from m's current
 * weights (call it on the fp32 model): NAME.q ("I8" [rows, cols] for int8; "U8" [rows,
 * ceil(cols/2)] packed as above for int4) and NAME.scale (F32 [rows] for int8, [rows,
 * ceil(cols/group)] for int4); the metadata gets "quant" = {"bits": B, "group": G, "sets": "..."}.
 * Every other tensor stays F32 under its name. gdn2_model_load reads these files and dequantizes
 * into fp32 parameters, so the loaded model equals gdn2_model_fake_quant of the saved one, bit for
 * bit. Written atomically (temp file + rename). Allocates the quantized copies while it writes. */
GDN2_API int gdn2_model_save_quant(const gdn2_model *m, const char *path, int bits, int64_t group, int sets);

/* Dequantize the packed weight `name` (NAME.q and NAME.scale of a gdn2_model_save_quant file, its
 * "quant" metadata giving bits and group) into w [rows, cols]; checks dtypes, shapes and that the
 * scales are finite and >= 0 (errors name the file and tensor). GDN2_ERR_FORMAT when NAME.q is
 * absent. Used by gdn2_model_load. */
GDN2_API int gdn2_quant_load_weight(const gdn2_st *st, const char *name, int64_t rows, int64_t cols, float *w);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_QUANT_MODEL_H */
