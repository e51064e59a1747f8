/* The scalar activations in fp32, one home for the CPU ops (src/ops/gate.h), the CPU backend
 * (src/backend/nn.h) and the CUDA kernels (src/cuda/nn.cu: host and device). Torch's definitions:
 * softplus with beta 1 and threshold 20 (linear above), its derivative 1 above the threshold. */
#ifndef GDN2_UTIL_ACT_H
#define GDN2_UTIL_ACT_H

#include <math.h>

#include "hd.h"

static inline GDN2_HD float gdn2_sigmoid_f32(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline GDN2_HD float gdn2_softplus_f32(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline GDN2_HD float gdn2_softplus_grad_f32(float x) { return x > 20.0f ? 1.0f : gdn2_sigmoid_f32(x); }
static inline GDN2_HD float gdn2_silu_f32(float x) { return x * gdn2_sigmoid_f32(x); }
/* d silu / dx = s (1 + x (1 - s)), s = sigmoid(x) */
static inline GDN2_HD float gdn2_silu_grad_f32(float x) {
    const float s = gdn2_sigmoid_f32(x);
    return s * (1.0f + x * (1.0f - s));
}

#endif
