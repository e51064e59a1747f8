/* The CPU token sampler (src/ops/sample.c): the reference semantics of src/util/sample.h, which the
 * GPU sampler (src/cuda/sample.cu) reproduces bit for bit. Internal header (library only). */
#ifndef GDN2_OPS_SAMPLE_H
#define GDN2_OPS_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "../util/sample.h"

/* scratch bytes gdn2_sample_row needs for V candidates */
size_t gdn2_sample_scratch_bytes(int64_t V);
/* One token from logits z[0..V) (finite) under p; scratch of gdn2_sample_scratch_bytes(V) bytes
 * (8-byte aligned). Greedy (temperature <= 0): the first largest logit. Expected O(V). */
int32_t gdn2_sample_row(const float *z, int64_t V, const gdn2_sample_row_params *p, void *scratch);

#endif
