/* gdn2 GPU API (src/cuda). Without CUDA support built in, every call returns GDN2_ERR_UNSUPPORTED. */
#ifndef GDN2_CUDA_H
#define GDN2_CUDA_H

#include "gdn2.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if a CUDA device is usable (library built with CUDA and a device present), else 0 with the
 * reason in gdn2_last_error(). */
int gdn2_cuda_available(void);

/* Host-pointer convenience entry points (fp32 in and out): copy the tensors to the GPU, run the
 * CUDA chunk kernels in fp32, copy the results back. Used by `gdn2 op --device cuda` and tests.
 * The device-pointer API (bf16/fp32, streams) is below. */
int gdn2_cuda_chunk_fwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t);
int gdn2_cuda_chunk_bwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                             const gdn2_bwd_tensors *g);

#ifdef __cplusplus
}
#endif
#endif
