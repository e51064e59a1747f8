/* gdn2 — Gated DeltaNet-2 in C and CUDA C. The public API: this umbrella header includes every
 * per-area header; a program may include it alone, or only the headers of the areas it uses.
 *
 * Conventions (ggml-like):
 *   - every symbol is prefixed gdn2_; functions return an int status (GDN2_OK = 0) and leave a
 *     human-readable message in gdn2_last_error() on failure (gdn2_error.h);
 *   - the caller owns all memory; ops that need scratch space take an optional workspace
 *     (NULL: the op allocates and frees it itself);
 *   - tensors are dense, row-major, fp32 unless stated, in the official/fla layout (gdn2_ops.h).
 */
#ifndef GDN2_H
#define GDN2_H

#include "gdn2_export.h"

#include "gdn2_error.h"       /* status codes, gdn2_last_error                          */
#include "gdn2_ops.h"         /* the ops: reference, recurrent, chunkwise, decode, KDA/GDN */
#include "gdn2_io.h"          /* safetensors                                             */
#include "gdn2_cuda.h"        /* GPU kernels (stubs without CUDA)                        */
#include "gdn2_layer.h"       /* the GatedDeltaNet2 layer and its variants               */
#include "gdn2_model.h"       /* hybrid language models, training, generation            */
#include "gdn2_text.h"        /* byte tokenizer and text loader                          */
#include "gdn2_tokens.h"      /* token shards (llm.c's .bin), memory-mapped              */
#include "gdn2_data.h"        /* task generators, scoring, evaluation                    */
#include "gdn2_quant.h"       /* int8 / int4 quantization of a matrix                    */
#include "gdn2_quant_model.h" /* a model's weights quantized, packed checkpoints         */

#endif /* GDN2_H */
