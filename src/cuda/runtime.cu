// CUDA runtime glue: device discovery. (C-style CUDA.)
#include <cuda_runtime.h>

#include "gdn2_cuda.h"

extern "C" int gdn2_cuda_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        gdn2_error(GDN2_ERR_UNSUPPORTED, "no CUDA device: %s", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 0;
    }
    return 1;
}

// placeholders until the chunk kernels land
extern "C" int gdn2_cuda_chunk_fwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t) {
    return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2_cuda_chunk_fwd_host: not implemented yet");
}
extern "C" int gdn2_cuda_chunk_bwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                                        const gdn2_bwd_tensors *g) {
    return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2_cuda_chunk_bwd_host: not implemented yet");
}
