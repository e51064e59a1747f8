/* Built only when CUDA is off: the GPU API reports that it is not available. */
#include "gdn2_cuda.h"

int gdn2_cuda_available(void) {
    gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2 was built without CUDA (nvcc not found at build time)");
    return 0;
}

int gdn2_cuda_chunk_fwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t) {
    (void)d; (void)o; (void)t;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2 was built without CUDA (nvcc not found at build time)");
}

int gdn2_cuda_chunk_bwd_host(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                             const gdn2_bwd_tensors *g) {
    (void)d; (void)o; (void)t; (void)g;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, "gdn2 was built without CUDA (nvcc not found at build time)");
}
