// Shared device helpers of the CUDA kernels (src/cuda only).
#ifndef GDN2_CUDA_COMMON_CUH
#define GDN2_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../util/act.h"

#define GDN2_LOG2E 1.4426950408889634f

// element load/store in the input dtype, math in fp32
__device__ __forceinline__ float ldf(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ldf(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void stf(float *p, size_t i, float x) { p[i] = x; }
__device__ __forceinline__ void stf(__nv_bfloat16 *p, size_t i, float x) { p[i] = __float2bfloat16(x); }

// the warp's sum by a butterfly (float or double): a fixed order, every lane gets it
template <class T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}


// In-kernel decay gate (same as src/ops/gate.h): u = f + dt_bias, a = exp(A_log)
//   default: g = -a * softplus(u) (torch softplus, threshold 20); lower bound lb < 0: g = lb * sigmoid(a u)
__device__ __forceinline__ float gate_fwd(float f, float A_log, float dtb, float lb) {
    float a = expf(A_log), u = f + dtb;
    if (lb < 0.0f) return lb * gdn2_sigmoid_f32(a * u);
    return -a * gdn2_softplus_f32(u);
}
// VJP of the gate: returns d f and adds the A_log part to *dAl.
__device__ __forceinline__ float gate_vjp(float dg, float f, float A_log, float dtb, float lb, float *dAl) {
    float a = expf(A_log), u = f + dtb;
    if (lb < 0.0f) {
        float s = gdn2_sigmoid_f32(a * u), inner = dg * lb * s * (1.0f - s);
        *dAl += inner * a * u;
        return inner * a;
    }
    float g = -a * gdn2_softplus_f32(u);
    *dAl += dg * g;
    return dg * (-a) * gdn2_softplus_grad_f32(u);
}

#endif
