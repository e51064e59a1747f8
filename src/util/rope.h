/* The RoPE angle, one home for the CPU ops (src/backend/nn.c) and the CUDA kernels (src/cuda/attn.cu,
 * src/cuda/decode_nn.cu: host and device): as lit_gpt builds its cache in fp32,
 * theta_i = 1 / base^(2i/hs), angle = pos theta_i, (c, s) = (cos, sin)(angle), i < hs/2. */
#ifndef GDN2_UTIL_ROPE_H
#define GDN2_UTIL_ROPE_H

#include <math.h>
#include <stdint.h>

#include "hd.h"

static inline GDN2_HD void gdn2_rope_angle(int64_t pos, int64_t i, int64_t hs, float base, float *c, float *s) {
    const float th = 1.0f / powf(base, (float)(2 * i) / (float)hs);
    const float ang = (float)pos * th;
    *c = cosf(ang);
    *s = sinf(ang);
}

#endif
