// The CUDA backend's context (src/cuda/nn.h's gdn2_cuda_nn), shared by nn.cu and gemm.cu only.
#ifndef GDN2_CUDA_NN_CTX_CUH
#define GDN2_CUDA_NN_CTX_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "gdn2_error.h"
#include "nn.h"

#ifndef GDN2_LT_WORKSPACE_BYTES /* a build may set another size (NVFLAGS_EXTRA=-DGDN2_LT_WORKSPACE_BYTES=...) */
#define GDN2_LT_WORKSPACE_BYTES ((size_t)32 << 20)
#endif
#define GDN2_GEMM_CACHE 64

typedef struct {
    int used;
    int64_t m, n, k, lda, ldb, ldc;
    int ta, tb, cdt, beta1;
    int batch;                      // strided batch: count, A and C strides (B is shared: stride 0)
    int64_t sA, sC;
    cublasLtMatmulAlgo_t algo;
} gdn2_gemm_algo_entry;

struct gdn2_cuda_nn {
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws;                    // cuBLASLt workspace, GDN2_LT_WORKSPACE_BYTES
    void *scratch;                  // grows; stream-ordered reuse between ops
    size_t scratch_bytes;
    int capturing;                  // 1 between capture_begin and capture_end (scratch cannot grow)
    double *host_word;              // pinned, 8 doubles: results read back by the host (sumsq)
    float *attn_part;               // GDN2_CUDA_ATTN_PART_FLOATS: the split attention step's partials
                                    // (fixed at creation: a recorded decode step keeps its address)
    // AdamW segment table cache: the host table (pointer, count and a copy of its contents) and its
    // device twin with the per-segment first block
    const void *seg_key;
    int seg_n;
    gdn2_cuda_adamw_seg *seg_copy;
    void *seg_dev;
    int64_t seg_blocks;
    gdn2_gemm_algo_entry gemm_cache[GDN2_GEMM_CACHE];
};

// gemm.cu: create / destroy the cuBLASLt handle and its workspace
int gdn2_cuda_gemm_init(gdn2_cuda_nn *c);
void gdn2_cuda_gemm_fini(gdn2_cuda_nn *c);
// nn.cu: device scratch of at least `bytes` (grows, waiting for the stream first); NULL + error
void *gdn2_cuda_nn_scratch(gdn2_cuda_nn *c, size_t bytes, const char *what);
// nn.cu: out[j] (+)= sum_{r < nch} part[r * ncols + j] in increasing r (fp32), the fixed-order
// second pass of the column reductions
int gdn2_cuda_colsum_finish(const float *part, int64_t nch, int64_t ncols, float *out, cudaStream_t s);

static inline int gdn2_cuda_launch_check(const char *fn) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return gdn2_error(GDN2_ERR_DEVICE, "%s: kernel launch failed: %s", fn, cudaGetErrorString(e));
    return GDN2_OK;
}

#endif
