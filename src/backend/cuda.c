/* The CUDA backend's table (placeholder until src/cuda/nn.cu lands): refuses cleanly. */
#include "../util/internal.h"
#include "backend.h"

int gdn2_backend_cuda_init(gdn2_backend *be) {
    (void)be;
    return gdn2_error(GDN2_ERR_UNSUPPORTED, "CUDA backend of the model: not built yet");
}
