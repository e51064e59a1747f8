// The CUDA backend's elementwise, row, norm, conv, gate, loss and optimizer kernels (src/cuda/nn.h).
// bf16 = __nv_bfloat16 (round to nearest even), every product and sum in fp32 (double where the CPU
// op sums in double), the formulas and their evaluation order those of the CPU ops
// (src/backend/nn.c, src/model/{mlp,head,optim,layer_gdn2}.c). Reductions run in a fixed order: a
// per-row reduction is one warp (shuffle tree), a reduction over rows is a per-chunk partial then a
// second pass over the chunks in increasing order. No atomics anywhere: the same call, the same bits.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/act.h"
#include "../util/rng.h"
#include "gdn2_cuda.h"
#include "nn_ctx.cuh"
#include "pdl.cuh"

typedef __nv_bfloat16 bf16;

#define NN_BS 256        // threads per block of the elementwise and column kernels
#define NN_ROWS_WARPS 8  // rows (warps) per block of the per-row kernels
#define NN_RCH 64        // rows per chunk of the column (over-rows) reductions
#define NN_MAX_GRID (1u << 22)

// ---- scalar helpers (the activations: src/util/act.h, shared with the CPU) --------------------------------------
__device__ __forceinline__ float ldb(const bf16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ bf16 tob(float x) { return __float2bfloat16_rn(x); }
__device__ __forceinline__ float warp_sum_(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
// the same over segments of LPR lanes (a row each); LPR = 16 gives warp_sum_'s bits when the other half holds
// zeros (warp_sum_ adds those first)
template <int LPR> __device__ __forceinline__ float seg_sum(float x) {
#pragma unroll
    for (int o = LPR / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// ---- 8-wide groups: elements [i0, i0+8) as one 16-byte access of bf16 (two of fp32) when the caller
// says every pointer is 16-byte aligned (vec) and the group is whole, else element by element, the
// elements at or past `lim` reading 0 and not written. Same values either way; the vector form only
// puts more bytes in flight per thread (the scalar kernels ran at 15-40 % of the copy bandwidth).
__device__ __forceinline__ void ld8(const bf16 *p, size_t i0, size_t lim, bool vec, float o[8]) {
    if (vec && i0 + 8 <= lim) {
        const uint4 u = *reinterpret_cast<const uint4 *>(p + i0);
        const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float2 f = __bfloat1622float2(h[k]);
            o[2 * k] = f.x, o[2 * k + 1] = f.y;
        }
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) o[k] = i0 + k < lim ? ldb(p, i0 + k) : 0.0f;
    }
}
__device__ __forceinline__ void ld8(const float *p, size_t i0, size_t lim, bool vec, float o[8]) {
    if (vec && i0 + 8 <= lim) {
        const float4 a = *reinterpret_cast<const float4 *>(p + i0), b = *reinterpret_cast<const float4 *>(p + i0 + 4);
        o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) o[k] = i0 + k < lim ? p[i0 + k] : 0.0f;
    }
}
__device__ __forceinline__ void st8(bf16 *p, size_t i0, size_t lim, bool vec, const float v[8]) {
    if (vec && i0 + 8 <= lim) {
        uint4 u;
        __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
        for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
        *reinterpret_cast<uint4 *>(p + i0) = u;
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++)
            if (i0 + k < lim) p[i0 + k] = tob(v[k]);
    }
}
__device__ __forceinline__ void st8(float *p, size_t i0, size_t lim, bool vec, const float v[8]) {
    if (vec && i0 + 8 <= lim) {
        *reinterpret_cast<float4 *>(p + i0) = make_float4(v[0], v[1], v[2], v[3]);
        *reinterpret_cast<float4 *>(p + i0 + 4) = make_float4(v[4], v[5], v[6], v[7]);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++)
            if (i0 + k < lim) p[i0 + k] = v[k];
    }
}
// 4-wide, the same contract (the per-row kernels: a warp covers 128 columns per step)
__device__ __forceinline__ void ld4(const bf16 *p, size_t i0, size_t lim, bool vec, float o[4]) {
    if (vec && i0 + 4 <= lim) {
        const uint2 u = *reinterpret_cast<const uint2 *>(p + i0);
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.x));
        const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.y));
        o[0] = a.x, o[1] = a.y, o[2] = b.x, o[3] = b.y;
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++) o[k] = i0 + k < lim ? ldb(p, i0 + k) : 0.0f;
    }
}
__device__ __forceinline__ void ld4(const float *p, size_t i0, size_t lim, bool vec, float o[4]) {
    if (vec && i0 + 4 <= lim) {
        const float4 a = *reinterpret_cast<const float4 *>(p + i0);
        o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w;
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++) o[k] = i0 + k < lim ? p[i0 + k] : 0.0f;
    }
}
__device__ __forceinline__ void st4(bf16 *p, size_t i0, size_t lim, bool vec, const float v[4]) {
    if (vec && i0 + 4 <= lim) {
        uint2 u;
        *reinterpret_cast<__nv_bfloat162 *>(&u.x) = __floats2bfloat162_rn(v[0], v[1]);
        *reinterpret_cast<__nv_bfloat162 *>(&u.y) = __floats2bfloat162_rn(v[2], v[3]);
        *reinterpret_cast<uint2 *>(p + i0) = u;
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (i0 + k < lim) p[i0 + k] = tob(v[k]);
    }
}
__device__ __forceinline__ void st4(float *p, size_t i0, size_t lim, bool vec, const float v[4]) {
    if (vec && i0 + 4 <= lim) {
        *reinterpret_cast<float4 *>(p + i0) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (i0 + k < lim) p[i0 + k] = v[k];
    }
}
static inline bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }
static inline bool al8(const void *p) { return ((uintptr_t)p & 7) == 0; }
static inline bool al_n(const void *p, unsigned n) { return ((uintptr_t)p & (n - 1)) == 0; }
// the 8-wide grid-stride loop: i0 = the first element of each group
#define GRID_STRIDE8(i0, n) GRID_STRIDE(g8_, ((n) + 7) / 8) for (size_t i0 = g8_ * 8, once_ = 1; once_; once_ = 0)

static inline cudaStream_t S(void *stream) { return (cudaStream_t)stream; }
static inline unsigned grid1(size_t n) {
    size_t b = (n + NN_BS - 1) / NN_BS;
    return (unsigned)(b > NN_MAX_GRID ? NN_MAX_GRID : (b ? b : 1));
}
static inline unsigned cdiv(int64_t a, int64_t b) { return (unsigned)((a + b - 1) / b); }
static inline unsigned grid8(size_t n) { return grid1((n + 7) / 8); }
// the column reductions put the row chunks on grid.y (at most 65535 of NN_RCH rows)
#define CHECK_CHUNKS(fn, nch)                                                                          \
    if ((nch) > 65535)                                                                                 \
        return gdn2_error(GDN2_ERR_ARG, "%s: %lld rows, more than the %d a call can reduce", fn,       \
                          (long long)(nch) * NN_RCH, 65535 * NN_RCH);
#define GRID_STRIDE(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

static int cuerr(const char *fn, cudaError_t e) {
    return e == cudaSuccess ? GDN2_OK : gdn2_error(GDN2_ERR_DEVICE, "%s: %s", fn, cudaGetErrorString(e));
}

// =====================================================================================================
// context, scratch and memory
// =====================================================================================================
extern "C" int gdn2_cuda_nn_create(gdn2_cuda_nn **out) {
    *out = NULL;
    gdn2_cuda_nn *c = (gdn2_cuda_nn *)calloc(1, sizeof *c);
    if (!c) return gdn2_error(GDN2_ERR_NOMEM, "gdn2_cuda_nn_create: out of host memory");
    int rc = cuerr("gdn2_cuda_nn_create: cudaStreamCreate", cudaStreamCreate(&c->stream));
    if (!rc) rc = cuerr("gdn2_cuda_nn_create: cudaMallocHost", cudaMallocHost((void **)&c->host_word, 8 * sizeof(double)));
    if (!rc)
        rc = cuerr("gdn2_cuda_nn_create: cudaMalloc (attention step partials)",
                   cudaMalloc((void **)&c->attn_part, GDN2_CUDA_ATTN_PART_FLOATS * sizeof(float)));
    if (!rc) rc = gdn2_cuda_gemm_init(c);
    if (rc) {
        gdn2_cuda_nn_destroy(c);
        return rc;
    }
    *out = c;
    return GDN2_OK;
}

extern "C" void gdn2_cuda_nn_destroy(gdn2_cuda_nn *c) {
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    gdn2_cuda_gemm_fini(c);
    if (c->scratch) cudaFree(c->scratch);
    if (c->seg_dev) cudaFree(c->seg_dev);
    if (c->attn_part) cudaFree(c->attn_part);
    free(c->seg_copy);
    if (c->host_word) cudaFreeHost(c->host_word);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" void *gdn2_cuda_nn_stream(const gdn2_cuda_nn *c) { return (void *)c->stream; }
extern "C" float *gdn2_cuda_nn_attn_part(const gdn2_cuda_nn *c) { return c->attn_part; }

extern "C" void *gdn2_cuda_nn_workspace(gdn2_cuda_nn *c, size_t bytes, const char *what) {
    return gdn2_cuda_nn_scratch(c, bytes, what);
}

void *gdn2_cuda_nn_scratch(gdn2_cuda_nn *c, size_t bytes, const char *what) {
    if (bytes == 0) bytes = 256;
    if (bytes <= c->scratch_bytes) return c->scratch;
    if (c->capturing) { // growing waits for the stream and allocates: neither can be recorded
        gdn2_error(GDN2_ERR_DEVICE, "scratch for %s: cannot grow the device scratch (%zu to %zu bytes) while recording "
                                    "a CUDA graph", what, c->scratch_bytes, bytes);
        return NULL;
    }
    size_t nb = c->scratch_bytes + c->scratch_bytes / 2;
    if (nb < bytes) nb = bytes;
    nb = (nb + 4095) & ~(size_t)4095;
    // the old buffer may still be read by queued kernels: wait for them before freeing it
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        gdn2_error(GDN2_ERR_DEVICE, "scratch for %s: a queued kernel failed: %s", what, cudaGetErrorString(e));
        return NULL;
    }
    if (c->scratch) cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    e = cudaMalloc(&c->scratch, nb);
    if (e != cudaSuccess) {
        c->scratch = NULL;
        gdn2_error(GDN2_ERR_NOMEM, "device scratch for %s: cudaMalloc(%zu) failed: %s", what, nb, cudaGetErrorString(e));
        return NULL;
    }
    c->scratch_bytes = nb;
    return c->scratch;
}

static inline size_t al256(size_t b) { return (b + 255) & ~(size_t)255; }

extern "C" void *gdn2_cuda_nn_alloc(gdn2_cuda_nn *c, size_t bytes, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 4);
    if (e != cudaSuccess) {
        gdn2_error(GDN2_ERR_NOMEM, "GPU allocation of %s (%zu bytes) failed: %s", what ? what : "a tensor", bytes,
                   cudaGetErrorString(e));
        return NULL;
    }
    e = cudaMemsetAsync(p, 0, bytes ? bytes : 4, c->stream);
    if (e != cudaSuccess) {
        cudaFree(p);
        gdn2_error(GDN2_ERR_DEVICE, "zero-fill of %s (%zu bytes) failed: %s", what ? what : "a tensor", bytes,
                   cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

extern "C" void gdn2_cuda_nn_free(gdn2_cuda_nn *c, void *p) {
    if (!p) return;
    cudaStreamSynchronize(c->stream);
    cudaFree(p);
}

extern "C" int gdn2_cuda_nn_upload(gdn2_cuda_nn *c, void *dst, const void *host_src, size_t bytes) {
    if (!bytes) return GDN2_OK;
    int rc = cuerr("upload to the GPU", cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c->stream));
    // the caller may reuse its buffer at once (pinned memory would still be read asynchronously)
    if (!rc) rc = cuerr("upload to the GPU", cudaStreamSynchronize(c->stream));
    return rc;
}

extern "C" int gdn2_cuda_nn_download(gdn2_cuda_nn *c, void *host_dst, const void *src, size_t bytes) {
    if (!bytes) return GDN2_OK;
    int rc = cuerr("download from the GPU", cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    if (!rc) rc = cuerr("download from the GPU", cudaStreamSynchronize(c->stream));
    return rc;
}

extern "C" int gdn2_cuda_nn_copy(gdn2_cuda_nn *c, void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return GDN2_OK;
    return cuerr("GPU copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

extern "C" int gdn2_cuda_nn_zero(gdn2_cuda_nn *c, void *p, size_t bytes) {
    if (!bytes) return GDN2_OK;
    return cuerr("GPU zero-fill", cudaMemsetAsync(p, 0, bytes, c->stream));
}

// ---- recorded op sequences (CUDA graphs) -----------------------------------------------------------------------
extern "C" void *gdn2_cuda_nn_host_alloc(size_t bytes, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 4);
    if (e != cudaSuccess) {
        gdn2_error(GDN2_ERR_NOMEM, "pinned host allocation of %s (%zu bytes) failed: %s", what ? what : "a buffer",
                   bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

extern "C" void gdn2_cuda_nn_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

extern "C" int gdn2_cuda_nn_upload_async(gdn2_cuda_nn *c, void *dst, const void *host_src, size_t bytes) {
    if (!bytes) return GDN2_OK;
    return cuerr("upload to the GPU (queued)", cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c->stream));
}

extern "C" int gdn2_cuda_nn_capture_begin(gdn2_cuda_nn *c) {
    if (c->capturing) return gdn2_error(GDN2_ERR_ARG, "CUDA graph capture: already recording");
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); // not sticky: the launch checks of the eager fallback must not see it
        return gdn2_error(GDN2_ERR_DEVICE, "CUDA graph capture: cudaStreamBeginCapture failed: %s", cudaGetErrorString(e));
    }
    c->capturing = 1;
    return GDN2_OK;
}

extern "C" int gdn2_cuda_nn_capture_end(gdn2_cuda_nn *c, void **exec) {
    if (exec) *exec = NULL;
    if (!c->capturing) return gdn2_error(GDN2_ERR_ARG, "CUDA graph capture: not recording");
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    c->capturing = 0;
    if (e != cudaSuccess || !g) {
        if (g) cudaGraphDestroy(g);
        (void)cudaGetLastError();
        return gdn2_error(GDN2_ERR_DEVICE, "CUDA graph capture: cudaStreamEndCapture failed: %s (an op of the sequence "
                                          "cannot be recorded)", e != cudaSuccess ? cudaGetErrorString(e) : "no graph");
    }
    if (!exec) {
        cudaGraphDestroy(g);
        return GDN2_OK;
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g); // the executable graph is independent of its template
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return gdn2_error(GDN2_ERR_DEVICE, "CUDA graph capture: cudaGraphInstantiate failed: %s", cudaGetErrorString(e));
    }
    *exec = (void *)x;
    return GDN2_OK;
}

extern "C" int gdn2_cuda_nn_graph_launch(gdn2_cuda_nn *c, void *exec) {
    return cuerr("CUDA graph launch", cudaGraphLaunch((cudaGraphExec_t)exec, c->stream));
}

extern "C" void gdn2_cuda_nn_graph_free(void *exec) {
    if (exec) cudaGraphExecDestroy((cudaGraphExec_t)exec);
}

extern "C" int gdn2_cuda_nn_sync(gdn2_cuda_nn *c) {
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) e = cudaGetLastError();
    return e == cudaSuccess ? GDN2_OK : gdn2_error(GDN2_ERR_DEVICE, "cuda backend: a kernel failed: %s", cudaGetErrorString(e));
}

// =====================================================================================================
// column reductions over rows: the fixed-order second pass
// =====================================================================================================
// out[j] += sum_{r = 0..nch-1} part[r * ncols + j]   (r increasing)
// A block owns CS_COLS columns; its CS_GROUPS warps each sum the rows r = g, g + CS_GROUPS, ... of
// those columns (coalesced: a warp reads 32 consecutive columns of one row), then warp 0 adds the
// groups in order g = 0, 1, ...: a fixed order, with CS_GROUPS times the loads in flight of one
// thread per column (which left a column sum over 4096 chunks latency-bound on one SM).
#define CS_COLS 32
#define CS_GROUPS 32
// out[j] += sum over rows of part[r, j] (float), or (double) into a double result when `dbl`
template <typename TP, typename TO>
__global__ void __launch_bounds__(CS_COLS * CS_GROUPS) k_colsum(const TP *part, int64_t nch, int64_t ncols, TO *out) {
    __shared__ TP sh[CS_GROUPS][CS_COLS + 1];
    const int c = threadIdx.x % CS_COLS, g = threadIdx.x / CS_COLS;
    const int64_t j = blockIdx.x * (int64_t)CS_COLS + c;
    TP acc = 0;
    if (j < ncols)
        for (int64_t r = g; r < nch; r += CS_GROUPS) acc += part[r * ncols + j];
    sh[g][c] = acc;
    __syncthreads();
    if (g == 0 && j < ncols) {
        TP t = 0;
        for (int k = 0; k < CS_GROUPS; k++) t += sh[k][c];
        out[j] += (TO)t;
    }
}

int gdn2_cuda_colsum_finish(const float *part, int64_t nch, int64_t ncols, float *out, cudaStream_t s) {
    if (ncols <= 0) return GDN2_OK;
    k_colsum<float, float><<<cdiv(ncols, CS_COLS), CS_COLS * CS_GROUPS, 0, s>>>(part, nch, ncols, out);
    return gdn2_cuda_launch_check("column sum");
}

// =====================================================================================================
// elementwise
// =====================================================================================================
// y = bf16(x)  /  y = float(x)
template <typename TX, typename TY> __global__ void k_cast(size_t n, const TX *x, TY *y, bool vec) {
    GRID_STRIDE8(i0, n) {
        float v[8];
        ld8(x, i0, n, vec, v);
        st8(y, i0, n, vec, v);
    }
}

extern "C" int gdn2_cuda_cast(size_t n, const void *x, int xdt, void *y, int ydt, void *stream) {
    if (!n) return GDN2_OK;
    if (xdt == ydt) {
        if (x == y) return GDN2_OK;
        return cuerr("cast (copy)", cudaMemcpyAsync(y, x, n * (xdt == GDN2_CUDA_BF16 ? 2 : 4),
                                                    cudaMemcpyDeviceToDevice, S(stream)));
    }
    const bool vec = al16(x) && al16(y);
    if (xdt == GDN2_CUDA_F32) k_cast<<<grid8(n), NN_BS, 0, S(stream)>>>(n, (const float *)x, (bf16 *)y, vec);
    else k_cast<<<grid8(n), NN_BS, 0, S(stream)>>>(n, (const bf16 *)x, (float *)y, vec);
    return gdn2_cuda_launch_check("cast");
}

// out = a + float(b)
__global__ void k_add(size_t n, const float *a, const bf16 *b, float *out, bool vec) {
    GRID_STRIDE8(i0, n) {
        float u[8], v[8];
        ld8(a, i0, n, vec, u);
        ld8(b, i0, n, vec, v);
#pragma unroll
        for (int k = 0; k < 8; k++) u[k] += v[k];
        st8(out, i0, n, vec, u);
    }
}

extern "C" int gdn2_cuda_add(size_t n, const float *a, const void *b, float *out, void *stream) {
    if (!n) return GDN2_OK;
    k_add<<<grid8(n), NN_BS, 0, S(stream)>>>(n, a, (const bf16 *)b, out, al16(a) && al16(b) && al16(out));
    return gdn2_cuda_launch_check("add");
}

// x = sigmoid(x) = 1 / (1 + e^-x), in place
__global__ void k_sigmoid(size_t n, bf16 *x, bool vec) {
    GRID_STRIDE8(i0, n) {
        float v[8];
        ld8(x, i0, n, vec, v);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = gdn2_sigmoid_f32(v[k]);
        st8(x, i0, n, vec, v);
    }
}

extern "C" int gdn2_cuda_sigmoid(size_t n, void *x, void *stream) {
    if (!n) return GDN2_OK;
    k_sigmoid<<<grid8(n), NN_BS, 0, S(stream)>>>(n, (bf16 *)x, al16(x));
    return gdn2_cuda_launch_check("sigmoid");
}

// dropout: x = x / (1 - p) where gdn2_dropout_keep(seed, i, thr) (util/rng.h: the CPU's mask), else 0
__global__ void k_dropout(size_t n, bf16 *x, uint32_t thr, float s, uint64_t seed, bool vec) {
    GRID_STRIDE8(i0, n) {
        float v[8];
        ld8(x, i0, n, vec, v);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = gdn2_dropout_keep(seed, (uint64_t)(i0 + k), thr) ? v[k] * s : 0.0f;
        st8(x, i0, n, vec, v);
    }
}

// the same on fp32 (the residual stream: the embedding's dropout)
__global__ void k_dropout_f32(size_t n, float *x, uint32_t thr, float s, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = gdn2_dropout_keep(seed, (uint64_t)i, thr) ? x[i] * s : 0.0f;
}

extern "C" int gdn2_cuda_dropout(size_t n, void *x, int dt, float p, uint64_t seed, void *stream) {
    if (!n) return GDN2_OK;
    const uint32_t thr = gdn2_dropout_thr(p);
    if (dt == GDN2_CUDA_F32)
        k_dropout_f32<<<grid8(n), NN_BS, 0, S(stream)>>>(n, (float *)x, thr, 1.0f / (1.0f - p), seed);
    else
        k_dropout<<<grid8(n), NN_BS, 0, S(stream)>>>(n, (bf16 *)x, thr, 1.0f / (1.0f - p), seed, al16(x));
    return gdn2_cuda_launch_check("dropout");
}

// x *= k
__global__ void k_scale(size_t n, float *x, float s, bool vec) {
    GRID_STRIDE8(i0, n) {
        float v[8];
        ld8(x, i0, n, vec, v);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] *= s;
        st8(x, i0, n, vec, v);
    }
}

extern "C" int gdn2_cuda_scale(size_t n, float *x, float k, void *stream) {
    if (!n) return GDN2_OK;
    k_scale<<<grid8(n), NN_BS, 0, S(stream)>>>(n, x, k, al16(x));
    return gdn2_cuda_launch_check("scale");
}

// a = silu(h1) h2 = (h1 sigma(h1)) h2
__global__ void k_swiglu_fwd(size_t n, const bf16 *h1, const bf16 *h2, bf16 *a, bool vec) {
    pdl_trigger(); // the next kernel may be a one-row product (src/cuda/pdl.cuh)
    GRID_STRIDE8(i0, n) {
        float z[8], u[8];
        ld8(h1, i0, n, vec, z);
        ld8(h2, i0, n, vec, u);
#pragma unroll
        for (int k = 0; k < 8; k++) z[k] = z[k] * gdn2_sigmoid_f32(z[k]) * u[k];
        st8(a, i0, n, vec, z);
    }
}
// in: da in dh1.  dh2 = da z s;  dh1 = da h2 s (1 + z (1 - s)),  z = h1, s = sigma(z)
__global__ void k_swiglu_bwd(size_t n, const bf16 *h1, const bf16 *h2, bf16 *dh1, bf16 *dh2, bool vec) {
    GRID_STRIDE8(i0, n) {
        float z[8], u[8], da[8], d2[8];
        ld8(h1, i0, n, vec, z);
        ld8(h2, i0, n, vec, u);
        ld8(dh1, i0, n, vec, da);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const float s = gdn2_sigmoid_f32(z[k]);
            d2[k] = da[k] * z[k] * s;
            da[k] = da[k] * u[k] * s * (1.0f + z[k] * (1.0f - s));
        }
        st8(dh2, i0, n, vec, d2);
        st8(dh1, i0, n, vec, da);
    }
}

extern "C" int gdn2_cuda_swiglu_fwd(size_t n, const void *h1, const void *h2, void *a, void *stream) {
    if (!n) return GDN2_OK;
    k_swiglu_fwd<<<grid8(n), NN_BS, 0, S(stream)>>>(n, (const bf16 *)h1, (const bf16 *)h2, (bf16 *)a,
                                                   al16(h1) && al16(h2) && al16(a));
    return gdn2_cuda_launch_check("swiglu_fwd");
}
extern "C" int gdn2_cuda_swiglu_bwd(size_t n, const void *h1, const void *h2, void *dh1, void *dh2, void *stream) {
    if (!n) return GDN2_OK;
    k_swiglu_bwd<<<grid8(n), NN_BS, 0, S(stream)>>>(n, (const bf16 *)h1, (const bf16 *)h2, (bf16 *)dh1, (bf16 *)dh2,
                                                   al16(h1) && al16(h2) && al16(dh1) && al16(dh2));
    return gdn2_cuda_launch_check("swiglu_bwd");
}

// =====================================================================================================
// embedding and rows
// =====================================================================================================
// out[n, c] = wte[tokens[n], c]   (grid: x = row, y = column block)
__global__ void k_embed_fwd(int64_t d, const int32_t *tokens, const float *wte, float *out) {
    int64_t n = blockIdx.x, c = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
    if (c >= d) return;
    out[n * d + c] = wte[(int64_t)tokens[n] * d + c];
}

extern "C" int gdn2_cuda_embed_fwd(int64_t N, int64_t d, const int32_t *tokens, const float *wte, float *out,
                                   void *stream) {
    if (N <= 0 || d <= 0) return GDN2_OK;
    dim3 grid((unsigned)N, cdiv(d, NN_BS));
    k_embed_fwd<<<grid, NN_BS, 0, S(stream)>>>(d, tokens, wte, out);
    return gdn2_cuda_launch_check("embed_fwd");
}

// One block row per distinct token u (ids[u]), positions pos[offs[u] .. offs[u+1]) increasing:
//   acc = dwte[id, c];  acc += dout[p, c] for each p in order;  dwte[id, c] = acc
// (the CPU's dwte[t] += dout[i] in increasing i, the same additions in the same order)
__global__ void k_embed_bwd(int64_t d, const int32_t *ids, const int32_t *offs, const int32_t *pos,
                            const float *dout, float *dwte) {
    int64_t u = blockIdx.x, c = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
    if (c >= d) return;
    float *dst = dwte + (int64_t)ids[u] * d + c;
    float acc = *dst;
    for (int32_t p = offs[u]; p < offs[u + 1]; p++) acc += dout[(int64_t)pos[p] * d + c];
    *dst = acc;
}

// keys (token << 32 | position), given in position order, sorted by token: a stable LSD radix sort on the
// token's two 16-bit digits (the high one only when some token is >= 2^16), so positions stay increasing
// within a token (qsort took ~5 ms for the 100M configs' 65536 tokens, on the host, every step)
static int sort_by_token(uint64_t *key, int64_t N, uint32_t max_tok) {
    uint64_t *tmp = (uint64_t *)malloc((size_t)N * sizeof(uint64_t));
    size_t *cnt = (size_t *)malloc(65537 * sizeof(size_t));
    if (!tmp || !cnt) {
        free(tmp), free(cnt);
        return GDN2_ERR_NOMEM;
    }
    uint64_t *src = key, *dst = tmp;
    for (int pass = 0; pass < (max_tok >> 16 ? 2 : 1); pass++) {
        const int sh = 32 + 16 * pass;
        memset(cnt, 0, 65537 * sizeof(size_t));
        for (int64_t i = 0; i < N; i++) cnt[((src[i] >> sh) & 0xffffu) + 1]++;
        for (int b = 0; b < 65536; b++) cnt[b + 1] += cnt[b];
        for (int64_t i = 0; i < N; i++) dst[cnt[(src[i] >> sh) & 0xffffu]++] = src[i];
        uint64_t *t = src;
        src = dst, dst = t;
    }
    if (src != key) memcpy(key, src, (size_t)N * sizeof(uint64_t));
    free(tmp), free(cnt);
    return GDN2_OK;
}

extern "C" int gdn2_cuda_embed_bwd(gdn2_cuda_nn *c, int64_t N, int64_t d, const int32_t *tokens_host,
                                   const float *dout, float *dwte) {
    const char *fn = "cuda embed_bwd";
    if (N <= 0 || d <= 0) return GDN2_OK;
    if (N > INT32_MAX) return gdn2_error(GDN2_ERR_ARG, "%s: N=%lld too large", fn, (long long)N);
    if (!tokens_host) return gdn2_error(GDN2_ERR_ARG, "%s: tokens_host is NULL", fn);
    // bucket on the host: sort (token << 32 | position), then the CSR [ids U][offs U+1][pos N]
    uint64_t *key = (uint64_t *)malloc((size_t)N * sizeof(uint64_t));
    int32_t *tab = (int32_t *)malloc((size_t)(3 * N + 1) * sizeof(int32_t));
    if (!key || !tab) {
        free(key), free(tab);
        return gdn2_error(GDN2_ERR_NOMEM, "%s: out of host memory for %lld token ids", fn, (long long)N);
    }
    uint32_t max_tok = 0;
    for (int64_t i = 0; i < N; i++) {
        if (tokens_host[i] < 0) {
            free(key), free(tab);
            return gdn2_error(GDN2_ERR_ARG, "%s: tokens[%lld] = %d is negative", fn, (long long)i, (int)tokens_host[i]);
        }
        if ((uint32_t)tokens_host[i] > max_tok) max_tok = (uint32_t)tokens_host[i];
        key[i] = ((uint64_t)(uint32_t)tokens_host[i] << 32) | (uint64_t)i;
    }
    if (sort_by_token(key, N, max_tok)) {
        free(key), free(tab);
        return gdn2_error(GDN2_ERR_NOMEM, "%s: out of host memory for sorting %lld token ids", fn, (long long)N);
    }
    int64_t U = 0;
    for (int64_t i = 0; i < N; i++)
        if (i == 0 || (key[i] >> 32) != (key[i - 1] >> 32)) U++;
    int32_t *ids = tab, *offs = tab + U, *pos = offs + U + 1;
    int64_t u = -1;
    for (int64_t i = 0; i < N; i++) {
        if (i == 0 || (key[i] >> 32) != (key[i - 1] >> 32)) {
            u++;
            ids[u] = (int32_t)(key[i] >> 32);
            offs[u] = (int32_t)i;
        }
        pos[i] = (int32_t)(key[i] & 0xffffffffu);
    }
    offs[U] = (int32_t)N;
    free(key);
    const size_t bytes = (size_t)(2 * U + 1 + N) * sizeof(int32_t);
    int32_t *dtab = (int32_t *)gdn2_cuda_nn_scratch(c, bytes, "embed_bwd token buckets");
    int rc = dtab ? GDN2_OK : GDN2_ERR_NOMEM;
    // pageable source: cudaMemcpyAsync has staged it when it returns, so tab may be freed after
    if (!rc) rc = cuerr(fn, cudaMemcpyAsync(dtab, tab, bytes, cudaMemcpyHostToDevice, c->stream));
    free(tab);
    if (rc) return rc;
    dim3 grid((unsigned)U, cdiv(d, NN_BS));
    k_embed_bwd<<<grid, NN_BS, 0, c->stream>>>(d, dtab, dtab + U, dtab + 2 * U + 1, dout, dwte);
    return gdn2_cuda_launch_check(fn);
}

// dst[r, :] = src[rows[r], :]  (grid: x = r, y = column block)
__global__ void k_gather(int64_t d, const int64_t *rows, const bf16 *src, bf16 *dst) {
    int64_t r = blockIdx.x, c = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
    if (c < d) dst[r * d + c] = src[rows[r] * d + c];
}
// dst[rows[r], :] = src[r, :]
__global__ void k_scatter(int64_t d, const int64_t *rows, const bf16 *src, bf16 *dst) {
    int64_t r = blockIdx.x, c = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
    if (c < d) dst[rows[r] * d + c] = src[r * d + c];
}

static const int64_t *upload_rows(gdn2_cuda_nn *c, const char *fn, int64_t n_rows, const int64_t *rows_host,
                                  int64_t limit, int *rc) {
    *rc = GDN2_OK;
    for (int64_t r = 0; r < n_rows; r++)
        if (rows_host[r] < 0 || (limit >= 0 && rows_host[r] >= limit)) {
            *rc = gdn2_error(GDN2_ERR_ARG, "%s: rows[%lld] = %lld out of range", fn, (long long)r, (long long)rows_host[r]);
            return NULL;
        }
    int64_t *d = (int64_t *)gdn2_cuda_nn_scratch(c, (size_t)n_rows * sizeof(int64_t), fn);
    if (!d) {
        *rc = GDN2_ERR_NOMEM;
        return NULL;
    }
    *rc = cuerr(fn, cudaMemcpyAsync(d, rows_host, (size_t)n_rows * sizeof(int64_t), cudaMemcpyHostToDevice, c->stream));
    // a pinned rows_host would be read later: wait so that the caller may change it at once
    if (!*rc) *rc = cuerr(fn, cudaStreamSynchronize(c->stream));
    return *rc ? NULL : d;
}

extern "C" int gdn2_cuda_gather_rows(gdn2_cuda_nn *c, int64_t n_rows, int64_t d, const int64_t *rows_host,
                                     const void *src, void *dst) {
    const char *fn = "cuda gather_rows";
    if (n_rows <= 0 || d <= 0) return GDN2_OK;
    int rc;
    const int64_t *rows = upload_rows(c, fn, n_rows, rows_host, -1, &rc);
    if (rc) return rc;
    dim3 grid((unsigned)n_rows, cdiv(d, NN_BS));
    k_gather<<<grid, NN_BS, 0, c->stream>>>(d, rows, (const bf16 *)src, (bf16 *)dst);
    return gdn2_cuda_launch_check(fn);
}

extern "C" int gdn2_cuda_scatter_rows(gdn2_cuda_nn *c, int64_t n_rows, int64_t N, int64_t d,
                                      const int64_t *rows_host, const void *src, void *dst) {
    const char *fn = "cuda scatter_rows";
    if (N <= 0 || d <= 0) return GDN2_OK;
    int rc = cuerr(fn, cudaMemsetAsync(dst, 0, (size_t)(N * d) * sizeof(bf16), c->stream));
    if (rc || n_rows <= 0) return rc;
    const int64_t *rows = upload_rows(c, fn, n_rows, rows_host, N, &rc);
    if (rc) return rc;
    dim3 grid((unsigned)n_rows, cdiv(d, NN_BS));
    k_scatter<<<grid, NN_BS, 0, c->stream>>>(d, rows, (const bf16 *)src, (bf16 *)dst);
    return gdn2_cuda_launch_check(fn);
}

// 4 columns from p at i (vector access) when ok, else zeros: the register rows of the fused norm kernels
template <typename T> __device__ __forceinline__ void ld4z(const T *p, size_t i, size_t lim, bool ok, float (&v)[4]) {
    if (ok) ld4(p, i, lim, true, v);
    else v[0] = v[1] = v[2] = v[3] = 0.0f;
}

// the norm weight at a thread's columns i0 + 4 T j (j < G; T threads a row) and a zeroed dw partial beside it
template <int G, int T>
__device__ __forceinline__ void norm_w_cols(const float *w, int64_t D, int64_t i0, float (&wv)[G][4], float (&pw)[G][4]) {
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int64_t i = i0 + 4 * T * j;
        ld4z(w, (size_t)i, (size_t)D, i < D, wv[j]);
        pw[j][0] = pw[j][1] = pw[j][2] = pw[j][3] = 0.0f;
    }
}

// =====================================================================================================
// RMSNorm (one warp per row, NN_ROWS_WARPS rows per block)
// =====================================================================================================
#define ROW_OF_WARP(row, lane, N)                                                   \
    const int64_t row = blockIdx.x * (int64_t)NN_ROWS_WARPS + (threadIdx.x >> 5);   \
    const int lane = threadIdx.x & 31;                                              \
    if (row >= (N)) return;
static inline unsigned row_grid(int64_t N) { return cdiv(N, NN_ROWS_WARPS); }

// Each lane takes 4 consecutive columns per step (16- or 8-byte accesses when vec: D % 4 == 0 and
// aligned pointers): i = 4 lane + 128 s. Sums: per lane in that order, then the warp's shuffle tree.
#define ROW_STEP(i, lane, D) for (int64_t i = 4 * (int64_t)(lane); i < (D); i += 128)

// The two passes of a warp's RMSNorm row, shared by k_rmsnorm_fwd and k_add_rmsnorm_fwd. The row's
// steps (ROW_STEP) are loaded RS_G at a time, then used in ROW_STEP order: the same sums in the same
// order as one step at a time, where a warp waited for 18 dependent round trips on a 2304-wide row
// (17 us a row at batch 1 on the H200, ncu, bench/results/h200-decode-prof/3cb6379-ncu_decode.csv: 640
// of a decode step's 3235 us of kernels were rmsnorm_fwd's 37 calls). Past the row: zeros loaded,
// nothing stored.
#define RS_G 6
// this lane's sum of squares of the row v = x (b NULL) or v = x + float(b), which is then stored in
// out (k_add's sum; out may be x: the lane reads each element before it writes it)
__device__ __forceinline__ float rms_row_sumsq(const float *x, const bf16 *b, float *out, size_t r0, int64_t D,
                                               int lane, bool vec) {
    const size_t lim = r0 + (size_t)D;
    float ss = 0.0f;
    for (int64_t i0 = 4 * (int64_t)lane; i0 < D; i0 += 128 * RS_G) {
        float v[RS_G][4], u[RS_G][4];
#pragma unroll
        for (int g = 0; g < RS_G; g++) {
            ld4(x, r0 + i0 + 128 * g, lim, vec, v[g]);
            if (b) ld4(b, r0 + i0 + 128 * g, lim, vec, u[g]);
        }
#pragma unroll
        for (int g = 0; g < RS_G; g++) {
            if (b) {
#pragma unroll
                for (int k = 0; k < 4; k++) v[g][k] += u[g][k];
                st4(out, r0 + i0 + 128 * g, lim, vec, v[g]);
            }
            if (i0 + 128 * g < D) {
#pragma unroll
                for (int k = 0; k < 4; k++) ss += v[g][k] * v[g][k];
            }
        }
    }
    return ss;
}
// y = x r w over the row
__device__ __forceinline__ void rms_row_apply(const float *x, const float *__restrict__ w, float r,
                                              bf16 *__restrict__ y, size_t r0, int64_t D, int lane, bool vec) {
    const size_t lim = r0 + (size_t)D;
    for (int64_t i0 = 4 * (int64_t)lane; i0 < D; i0 += 128 * RS_G) {
        float v[RS_G][4], wv[RS_G][4];
#pragma unroll
        for (int g = 0; g < RS_G; g++) {
            ld4(x, r0 + i0 + 128 * g, lim, vec, v[g]);
            ld4(w, (size_t)(i0 + 128 * g), (size_t)D, vec, wv[g]);
        }
#pragma unroll
        for (int g = 0; g < RS_G; g++) {
#pragma unroll
            for (int k = 0; k < 4; k++) v[g][k] = v[g][k] * r * wv[g][k];
            st4(y, r0 + i0 + 128 * g, lim, vec, v[g]);
        }
    }
}

// r = 1 / sqrt(mean(x^2) + eps);  y = x r w;  rstd[n] = r
__global__ void k_rmsnorm_fwd(int64_t N, int64_t D, const float *__restrict__ x, const float *__restrict__ w, float eps,
                              bf16 *__restrict__ y, float *__restrict__ rstd, bool vec) {
    pdl_trigger(); // the next kernel may be a one-row product (src/cuda/pdl.cuh)
    ROW_OF_WARP(row, lane, N);
    const size_t r0 = (size_t)(row * D);
    const float ss = warp_sum_(rms_row_sumsq(x, nullptr, nullptr, r0, D, lane, vec));
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (lane == 0 && rstd) rstd[row] = r;
    rms_row_apply(x, w, r, y, r0, D, lane, vec);
}

// A few rows (the decode step: N <= RMS_BLK_ROWS, D % 4 == 0, D <= 4 NN_BS RMS_BLK_G, aligned): a block a row,
// thread t owns columns 4t + 4 NN_BS j (j < G), the row stays in registers from the residual add (b given:
// out = a + float(b), written) to y. A warp a row left one warp of the SM busy through ~D/128 dependent
// steps (~14 us a call at D = 2304, 36 calls a step at batch 1). Sums: per thread in j order, the warp's
// shuffle tree, then the warps in order: fixed (not the bits of the warp-per-row kernels; both rmsnorm_fwd and
// add_rmsnorm_fwd take this path at such N, so add_rmsnorm_fwd is still add then rmsnorm_fwd bit for bit).
#define RMS_BLK_ROWS 256
#define RMS_BLK_G 4
template <int G>
__global__ void __launch_bounds__(NN_BS) k_rmsnorm_fwd_blk(int64_t D, const float *a, const bf16 *b, float *out,
                                                           const float *__restrict__ w, float eps,
                                                           bf16 *__restrict__ y, float *__restrict__ rstd) {
    pdl_trigger(); // the next kernel may be a one-row product (src/cuda/pdl.cuh)
    __shared__ float red[NN_BS / 32];
    const int t = threadIdx.x;
    const size_t r0 = (size_t)blockIdx.x * (size_t)D, lim = r0 + (size_t)D;
    float v[G][4], ss = 0.0f;
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int64_t i = 4 * (int64_t)t + 4 * NN_BS * j;
        if (i >= D) continue;
        ld4(a, r0 + i, lim, true, v[j]);
        if (b) {
            float u[4];
            ld4(b, r0 + i, lim, true, u);
#pragma unroll
            for (int k = 0; k < 4; k++) v[j][k] += u[k];
            st4(out, r0 + i, lim, true, v[j]);
        }
#pragma unroll
        for (int k = 0; k < 4; k++) ss += v[j][k] * v[j][k];
    }
    ss = warp_sum_(ss);
    if ((t & 31) == 0) red[t >> 5] = ss;
    __syncthreads();
    ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NN_BS / 32; k++) ss += red[k];
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (t == 0 && rstd) rstd[blockIdx.x] = r;
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int64_t i = 4 * (int64_t)t + 4 * NN_BS * j;
        if (i >= D) continue;
        float wv[4];
        ld4(w, (size_t)i, (size_t)D, true, wv);
#pragma unroll
        for (int k = 0; k < 4; k++) v[j][k] = v[j][k] * r * wv[k];
        st4(y, r0 + i, lim, true, v[j]);
    }
}
// true when it ran (the caller's shape and pointers suit it)
static bool rmsnorm_fwd_blk(int64_t N, int64_t D, const float *a, const bf16 *b, float *out, const float *w, float eps,
                            bf16 *y, float *rstd, cudaStream_t s) {
    if (N > RMS_BLK_ROWS || D % 4 || D > 4 * NN_BS * RMS_BLK_G || !al16(a) || !al16(w) || !al8(y) ||
        (b && (!al8(b) || !al16(out))))
        return false;
    switch (cdiv(D, 4 * NN_BS)) {
    case 1: k_rmsnorm_fwd_blk<1><<<(unsigned)N, NN_BS, 0, s>>>(D, a, b, out, w, eps, y, rstd); break;
    case 2: k_rmsnorm_fwd_blk<2><<<(unsigned)N, NN_BS, 0, s>>>(D, a, b, out, w, eps, y, rstd); break;
    case 3: k_rmsnorm_fwd_blk<3><<<(unsigned)N, NN_BS, 0, s>>>(D, a, b, out, w, eps, y, rstd); break;
    default: k_rmsnorm_fwd_blk<4><<<(unsigned)N, NN_BS, 0, s>>>(D, a, b, out, w, eps, y, rstd); break;
    }
    return true;
}

extern "C" int gdn2_cuda_rmsnorm_fwd(int64_t N, int64_t D, const float *x, const float *w, float eps, void *y,
                                     float *rstd, void *stream) {
    if (N <= 0 || D <= 0) return GDN2_OK;
    if (rmsnorm_fwd_blk(N, D, x, NULL, NULL, w, eps, (bf16 *)y, rstd, S(stream))) return gdn2_cuda_launch_check("rmsnorm_fwd");
    const bool vec = D % 4 == 0 && al16(x) && al16(w) && al8(y);
    k_rmsnorm_fwd<<<row_grid(N), 32 * NN_ROWS_WARPS, 0, S(stream)>>>(N, D, x, w, eps, (bf16 *)y, rstd, vec);
    return gdn2_cuda_launch_check("rmsnorm_fwd");
}

// out = a + float(b) (k_add's sum), then k_rmsnorm_fwd on out: the same values in the same order, so the
// same bits as the two kernels, in one launch (the residual add before each norm of the decode step
// was 36 of its ~500 launches). The second pass reads out back: the lane wrote those very addresses.
__global__ void k_add_rmsnorm_fwd(int64_t N, int64_t D, const float *a, const bf16 *b, float *out,
                                  const float *__restrict__ w, float eps, bf16 *__restrict__ y,
                                  float *__restrict__ rstd, bool vec) {
    pdl_trigger(); // the next kernel may be a one-row product (src/cuda/pdl.cuh)
    ROW_OF_WARP(row, lane, N);
    const size_t r0 = (size_t)(row * D);
    const float ss = warp_sum_(rms_row_sumsq(a, b, out, r0, D, lane, vec));
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (lane == 0 && rstd) rstd[row] = r;
    rms_row_apply(out, w, r, y, r0, D, lane, vec);
}

extern "C" int gdn2_cuda_add_rmsnorm_fwd(int64_t N, int64_t D, const float *a, const void *b, float *out,
                                         const float *w, float eps, void *y, float *rstd, void *stream) {
    if (N <= 0 || D <= 0) return GDN2_OK;
    if (rmsnorm_fwd_blk(N, D, a, (const bf16 *)b, out, w, eps, (bf16 *)y, rstd, S(stream)))
        return gdn2_cuda_launch_check("add_rmsnorm_fwd");
    const bool vec = D % 4 == 0 && al16(a) && al8(b) && al16(out) && al16(w) && al8(y);
    k_add_rmsnorm_fwd<<<row_grid(N), 32 * NN_ROWS_WARPS, 0, S(stream)>>>(N, D, a, (const bf16 *)b, out, w, eps,
                                                                         (bf16 *)y, rstd, vec);
    return gdn2_cuda_launch_check("add_rmsnorm_fwd");
}

// dx = (acc ? dx : 0) + r dy w - c x,   c = r^3 / D * sum_i dy_i w_i x_i
__global__ void k_rmsnorm_bwd_dx(int64_t N, int64_t D, const float *x, const float *w, const float *rstd,
                                 const bf16 *dy, float *dx, int acc, bf16 *dxa, bool vec) {
    ROW_OF_WARP(row, lane, N);
    const size_t r0 = (size_t)(row * D), lim = r0 + (size_t)D;
    const float r = rstd[row];
    float dot = 0.0f;
    ROW_STEP(i, lane, D) {
        float xv[4], wv[4], dv[4];
        ld4(x, r0 + i, lim, vec, xv);
        ld4(w, i, D, vec, wv);
        ld4(dy, r0 + i, lim, vec, dv);
#pragma unroll
        for (int k = 0; k < 4; k++) dot += dv[k] * wv[k] * xv[k];
    }
    dot = warp_sum_(dot);
    const float cc = dot * r * r * r / (float)D;
    ROW_STEP(i, lane, D) {
        float xv[4], wv[4], dv[4], o[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        ld4(x, r0 + i, lim, vec, xv);
        ld4(w, i, D, vec, wv);
        ld4(dy, r0 + i, lim, vec, dv);
        if (acc) ld4(dx, r0 + i, lim, vec, o);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float v = r * dv[k] * wv[k] - cc * xv[k];
            o[k] = acc ? o[k] + v : v;
        }
        st4(dx, r0 + i, lim, vec, o);
        if (dxa) st4(dxa, r0 + i, lim, vec, o);
    }
}
// part[ch, i] = sum_{n in chunk ch, increasing} dy[n,i] x[n,i] r[n]
__global__ void k_rmsnorm_dw_part(int64_t N, int64_t D, const float *x, const float *rstd, const bf16 *dy,
                                  float *part) {
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (i >= D) return;
    const int64_t n1 = (ch + 1) * NN_RCH < N ? (ch + 1) * NN_RCH : N;
    float acc = 0.0f;
#pragma unroll 8
    for (int64_t n = ch * NN_RCH; n < n1; n++) acc += ldb(dy, n * D + i) * x[n * D + i] * rstd[n];
    part[ch * D + i] = acc;
}

// The fused backward (D % 4 == 0, D <= RMSB_MAXD, aligned): a block of RMSB_BS threads takes RMSB_ROWS
// consecutive rows, one row at a time; thread t owns columns 4t + 4 RMSB_BS j (j < G) for all of them
// (G = ceil(D / (4 RMSB_BS)), a template argument: the registers of the groups a row has, 88 for 4).
// So x and dy are read once (a row stays in registers from the dot product to dx), dw's partial over the
// block's rows builds up in registers, and dx's act copy is written beside dx (the cast that followed each
// norm backward of the model). Per row, as k_rmsnorm_bwd_dx (the dot summed per thread in j order, then the
// warps in order, then the block's warps in order: fixed, deterministic):
//   dx = (acc ? dx : 0) + r dy w - c x,  c = r^3 / D sum_i dy_i w_i x_i;   part[blk, i] = sum_rows dy_i x_i r
#define RMSB_BS 256
#define RMSB_G 4 // at most
#define RMSB_ROWS 16
#define RMSB_MAXD (4 * RMSB_BS * RMSB_G)
template <int G>
__global__ void __launch_bounds__(RMSB_BS) k_rmsnorm_bwd_fused(int64_t N, int64_t D, const float *x, const float *w,
                                                                const float *rstd, const bf16 *dy, float *dx, int acc,
                                                                bf16 *dxa, float *part) {
    __shared__ float red[2][RMSB_BS / 32];
    const int t = threadIdx.x, lane = t & 31, wid = t >> 5;
    float wv[G][4], pw[G][4];
    norm_w_cols<G, RMSB_BS>(w, D, 4 * (int64_t)t, wv, pw);
    const int64_t n0 = blockIdx.x * (int64_t)RMSB_ROWS;
    for (int rr = 0; rr < RMSB_ROWS && n0 + rr < N; rr++) {
        const int64_t n = n0 + rr;
        const size_t r0 = (size_t)(n * D), lim = r0 + (size_t)D;
        const float r = rstd[n];
        float xv[G][4], dv[G][4], dot = 0.0f;
#pragma unroll
        for (int j = 0; j < G; j++) {
            const int64_t i = 4 * (int64_t)t + 4 * RMSB_BS * j;
            ld4z(x, r0 + i, lim, i < D, xv[j]);
            ld4z(dy, r0 + i, lim, i < D, dv[j]);
        }
#pragma unroll
        for (int j = 0; j < G; j++)
#pragma unroll
            for (int k = 0; k < 4; k++) dot += dv[j][k] * wv[j][k] * xv[j][k];
        dot = warp_sum_(dot);
        if (lane == 0) red[rr & 1][wid] = dot; // two buffers: a row's reads never race the next row's writes
        __syncthreads();
        dot = 0.0f;
#pragma unroll
        for (int k = 0; k < RMSB_BS / 32; k++) dot += red[rr & 1][k];
        const float cc = dot * r * r * r / (float)D;
#pragma unroll
        for (int j = 0; j < G; j++) {
            const int64_t i = 4 * (int64_t)t + 4 * RMSB_BS * j;
            if (i >= D) continue;
            float o[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (acc) ld4(dx, r0 + i, lim, true, o);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float v = r * dv[j][k] * wv[j][k] - cc * xv[j][k];
                o[k] = acc ? o[k] + v : v;
                pw[j][k] += dv[j][k] * xv[j][k] * r;
            }
            st4(dx, r0 + i, lim, true, o);
            if (dxa) st4(dxa, r0 + i, lim, true, o);
        }
    }
    if (!part) return;
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int64_t i = 4 * (int64_t)t + 4 * RMSB_BS * j;
        if (i < D) st4(part, (size_t)blockIdx.x * (size_t)D + (size_t)i, (size_t)(blockIdx.x + 1) * (size_t)D, true, pw[j]);
    }
}

extern "C" int gdn2_cuda_rmsnorm_bwd(gdn2_cuda_nn *c, int64_t N, int64_t D, const float *x, const float *w,
                                     const float *rstd, const void *dy, float *dx, int accumulate, void *dx_act,
                                     float *dw) {
    const char *fn = "cuda rmsnorm_bwd";
    if (N <= 0 || D <= 0) return GDN2_OK;
    if (!rstd) return gdn2_error(GDN2_ERR_ARG, "%s: rstd is NULL (the forward must save it)", fn);
    if (dx_act && !dx) return gdn2_error(GDN2_ERR_ARG, "%s: dx_act without dx", fn);
    bf16 *dxa = (bf16 *)dx_act;
    const bool fused = dx && D % 4 == 0 && D <= RMSB_MAXD && al16(x) && al16(w) && al8(dy) && al16(dx) &&
                       (!dxa || al8(dxa));
    if (fused) {
        const int64_t nb = cdiv(N, RMSB_ROWS);
        if (nb > INT32_MAX) return gdn2_error(GDN2_ERR_ARG, "%s: N=%lld rows too many", fn, (long long)N);
        float *part = NULL;
        if (dw && !(part = (float *)gdn2_cuda_nn_scratch(c, (size_t)(nb * D) * sizeof(float), "rmsnorm_bwd dw partials")))
            return GDN2_ERR_NOMEM;
#define LAUNCH(G)                                                                                       \
    k_rmsnorm_bwd_fused<G><<<(unsigned)nb, RMSB_BS, 0, c->stream>>>(N, D, x, w, rstd, (const bf16 *)dy, dx, accumulate, \
                                                                    dxa, part)
        switch (cdiv(D, 4 * RMSB_BS)) {
        case 1: LAUNCH(1); break;
        case 2: LAUNCH(2); break;
        case 3: LAUNCH(3); break;
        default: LAUNCH(4); break;
        }
#undef LAUNCH
        int rc = gdn2_cuda_launch_check(fn);
        return rc || !dw ? rc : gdn2_cuda_colsum_finish(part, nb, D, dw, c->stream);
    }
    if (dx) {
        const bool vec = D % 4 == 0 && al16(x) && al16(w) && al8(dy) && al16(dx) && (!dxa || al8(dxa));
        k_rmsnorm_bwd_dx<<<row_grid(N), 32 * NN_ROWS_WARPS, 0, c->stream>>>(N, D, x, w, rstd, (const bf16 *)dy, dx,
                                                                           accumulate, dxa, vec);
        int rc = gdn2_cuda_launch_check(fn);
        if (rc) return rc;
    }
    if (!dw) return GDN2_OK;
    const int64_t nch = cdiv(N, NN_RCH);
    CHECK_CHUNKS(fn, nch);
    float *part = (float *)gdn2_cuda_nn_scratch(c, (size_t)(nch * D) * sizeof(float), "rmsnorm_bwd dw partials");
    if (!part) return GDN2_ERR_NOMEM;
    k_rmsnorm_dw_part<<<dim3(cdiv(D, NN_BS), (unsigned)nch), NN_BS, 0, c->stream>>>(N, D, x, rstd, (const bf16 *)dy, part);
    int rc = gdn2_cuda_launch_check(fn);
    return rc ? rc : gdn2_cuda_colsum_finish(part, nch, D, dw, c->stream);
}

// gated: y = x r w silu(a),  r = 1 / sqrt(mean(x^2) + eps)
__global__ void k_rmsnorm_swish_fwd(int64_t N, int64_t D, const bf16 *x, const bf16 *gate, const float *w, float eps,
                                    bf16 *y, bool vec) {
    pdl_trigger(); // the next kernel may be a one-row product (src/cuda/pdl.cuh)
    ROW_OF_WARP(row, lane, N);
    const size_t r0 = (size_t)(row * D), lim = r0 + (size_t)D;
    float ss = 0.0f;
    ROW_STEP(i, lane, D) {
        float v[4];
        ld4(x, r0 + i, lim, vec, v);
#pragma unroll
        for (int k = 0; k < 4; k++) ss += v[k] * v[k];
    }
    ss = warp_sum_(ss);
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    ROW_STEP(i, lane, D) {
        float v[4], av[4], wv[4];
        ld4(x, r0 + i, lim, vec, v);
        ld4(gate, r0 + i, lim, vec, av);
        ld4(w, i, D, vec, wv);
#pragma unroll
        for (int k = 0; k < 4; k++) v[k] = v[k] * r * wv[k] * gdn2_silu_f32(av[k]);
        st4(y, r0 + i, lim, vec, v);
    }
}

// One row of the gated norm into registers for the register kernels below: lane sl of its LPR takes columns
// 4 sl + 4 LPR j (j < G) of x and the gate (zeros past D, or for a row past N: ok false); returns
// r = 1 / sqrt(mean(x^2) + eps) with the sum in k_rmsnorm_swish_fwd's order (per lane, then the lanes' tree).
template <int G, int LPR>
__device__ __forceinline__ float swish_row_load(const bf16 *x, const bf16 *gate, size_t r0, size_t lim, int64_t D,
                                                int sl, bool ok, float eps, float (&xv)[G][4], float (&av)[G][4]) {
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int64_t i = 4 * (int64_t)sl + 4 * LPR * j;
        ld4z(x, r0 + i, lim, ok && i < D, xv[j]);
        ld4z(gate, r0 + i, lim, ok && i < D, av[j]);
#pragma unroll
        for (int k = 0; k < 4; k++) ss += xv[j][k] * xv[j][k];
    }
    ss = seg_sum<LPR>(ss);
    return 1.0f / sqrtf(ss / (float)D + eps);
}

// The same with the row in registers (D % 4 == 0, D <= 512, aligned): x and the gate are loaded together once
// (the row kernel loads x, reduces, then loads x again with the gate), LPR lanes a row (16 for D <= 64, two
// rows a warp, where the row kernel left half the warp idle: 0.4 ms a call for the 100M configs' heads of 64).
// The same sums in the same order: k_rmsnorm_swish_fwd's bits.
template <int G, int LPR>
__global__ void k_rmsnorm_swish_fwd_reg(int64_t N, int64_t D, const bf16 *__restrict__ x, const bf16 *__restrict__ gate,
                                        const float *__restrict__ w, float eps, bf16 *__restrict__ y) {
    pdl_trigger(); // the next kernel may be a one-row product (src/cuda/pdl.cuh)
    constexpr int RPS = 32 / LPR;
    const int lane = threadIdx.x & 31, sub = lane / LPR, sl = lane % LPR;
    const int64_t row0 = (blockIdx.x * (int64_t)NN_ROWS_WARPS + (threadIdx.x >> 5)) * RPS, row = row0 + sub;
    if (row0 >= N) return; // the whole warp
    const bool ok = row < N;
    const size_t r0 = ok ? (size_t)(row * D) : 0, lim = r0 + (size_t)D;
    float v[G][4], av[G][4];
    const float r = swish_row_load<G, LPR>(x, gate, r0, lim, D, sl, ok, eps, v, av);
#pragma unroll
    for (int j = 0; j < G; j++) {
        const int64_t i = 4 * (int64_t)sl + 4 * LPR * j;
        if (!ok || i >= D) continue;
        float wv[4];
        ld4(w, (size_t)i, (size_t)D, true, wv);
#pragma unroll
        for (int k = 0; k < 4; k++) v[j][k] = v[j][k] * r * wv[k] * gdn2_silu_f32(av[j][k]);
        st4(y, r0 + i, lim, true, v[j]);
    }
}

extern "C" int gdn2_cuda_rmsnorm_swish_fwd(int64_t N, int64_t D, const void *x, const void *gate, const float *w,
                                           float eps, void *y, void *stream) {
    if (N <= 0 || D <= 0) return GDN2_OK;
    const bool vec = D % 4 == 0 && al8(x) && al8(gate) && al16(w) && al8(y);
    if (vec && D <= 512) {
        const bf16 *xb = (const bf16 *)x, *gb = (const bf16 *)gate;
        bf16 *yb = (bf16 *)y;
        const unsigned nb1 = (unsigned)cdiv(N, NN_ROWS_WARPS), nb2 = (unsigned)cdiv(N, 2 * NN_ROWS_WARPS);
        const int nt = 32 * NN_ROWS_WARPS;
        if (D <= 64) k_rmsnorm_swish_fwd_reg<1, 16><<<nb2, nt, 0, S(stream)>>>(N, D, xb, gb, w, eps, yb);
        else if (D <= 128) k_rmsnorm_swish_fwd_reg<1, 32><<<nb1, nt, 0, S(stream)>>>(N, D, xb, gb, w, eps, yb);
        else if (D <= 256) k_rmsnorm_swish_fwd_reg<2, 32><<<nb1, nt, 0, S(stream)>>>(N, D, xb, gb, w, eps, yb);
        else k_rmsnorm_swish_fwd_reg<4, 32><<<nb1, nt, 0, S(stream)>>>(N, D, xb, gb, w, eps, yb);
        return gdn2_cuda_launch_check("rmsnorm_swish_fwd");
    }
    k_rmsnorm_swish_fwd<<<row_grid(N), 32 * NN_ROWS_WARPS, 0, S(stream)>>>(N, D, (const bf16 *)x, (const bf16 *)gate,
                                                                           w, eps, (bf16 *)y, vec);
    return gdn2_cuda_launch_check("rmsnorm_swish_fwd");
}

// With xh = x r, dn = dy silu(a):  dgate = dy xh w silu'(a);  dx = r (dn w - xh mean(dn w xh));
// rbuf[n] = r for the dw pass
__global__ void k_rmsnorm_swish_bwd(int64_t N, int64_t D, const bf16 *x, const bf16 *gate, const float *w, float eps,
                                    const bf16 *dy, bf16 *dx, bf16 *dgate, float *rbuf, bool vec) {
    ROW_OF_WARP(row, lane, N);
    const size_t r0 = (size_t)(row * D), lim = r0 + (size_t)D;
    float ss = 0.0f;
    ROW_STEP(i, lane, D) {
        float v[4];
        ld4(x, r0 + i, lim, vec, v);
#pragma unroll
        for (int k = 0; k < 4; k++) ss += v[k] * v[k];
    }
    ss = warp_sum_(ss);
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (lane == 0 && rbuf) rbuf[row] = r;
    float dot = 0.0f;
    ROW_STEP(j, lane, D) {
        float xv[4], av[4], dv[4], wv[4], o[4];
        ld4(x, r0 + j, lim, vec, xv);
        ld4(gate, r0 + j, lim, vec, av);
        ld4(dy, r0 + j, lim, vec, dv);
        ld4(w, j, D, vec, wv);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float xh = xv[k] * r, dn = dv[k] * gdn2_silu_f32(av[k]);
            o[k] = dv[k] * xh * wv[k] * gdn2_silu_grad_f32(av[k]);
            dot += dn * wv[k] * xh;
        }
        st4(dgate, r0 + j, lim, vec, o);
    }
    dot = warp_sum_(dot) / (float)D;
    ROW_STEP(j, lane, D) {
        float xv[4], av[4], dv[4], wv[4], o[4];
        ld4(x, r0 + j, lim, vec, xv);
        ld4(gate, r0 + j, lim, vec, av);
        ld4(dy, r0 + j, lim, vec, dv);
        ld4(w, j, D, vec, wv);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float dn = dv[k] * gdn2_silu_f32(av[k]);
            o[k] = r * (dn * wv[k] - xv[k] * r * dot);
        }
        st4(dx, r0 + j, lim, vec, o);
    }
}
// part[ch, j] = sum_{n in chunk ch} dy silu(a) x r
__global__ void k_rmsnorm_swish_dw_part(int64_t N, int64_t D, const bf16 *x, const bf16 *gate, const bf16 *dy,
                                        const float *rbuf, float *part) {
    const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (j >= D) return;
    const int64_t n1 = (ch + 1) * NN_RCH < N ? (ch + 1) * NN_RCH : N;
    float acc = 0.0f;
#pragma unroll 8
    for (int64_t n = ch * NN_RCH; n < n1; n++) {
        const size_t e = (size_t)(n * D + j);
        acc += ldb(dy, e) * gdn2_silu_f32(ldb(gate, e)) * (ldb(x, e) * rbuf[n]);
    }
    part[ch * D + j] = acc;
}

// The fused backward (D % 4 == 0, D <= 128 RSWB_G, aligned): warp v takes RSWB_ROWS consecutive rows, LPR
// lanes a row (16 for D <= 64: the two half-warps take alternate rows, where the row kernel left half the warp
// idle), lane l owns columns 4 (l % LPR) + 4 LPR j (j < G) of its rows: x, gate and dy are read once
// (k_rmsnorm_swish_bwd reads them three times and the dw partial kernel a fourth), dw's partial builds up in
// registers. dx and dgate: k_rmsnorm_swish_bwd's formulas and sums in its order (the same bits: its lanes past
// the row add zeros first); part[v, i] = sum over the warp's rows of dy silu(a) x r, each half-warp's rows in
// increasing order, then the first half's sum plus the second's.
#define RSWB_G 4
#define RSWB_ROWS 32
#define RSWB_WARPS 8
template <int G, int LPR>
__global__ void __launch_bounds__(32 * RSWB_WARPS) k_rmsnorm_swish_bwd_fused(int64_t N, int64_t D, const bf16 *x,
                                                                             const bf16 *gate, const float *w,
                                                                             float eps, const bf16 *dy, bf16 *dx,
                                                                             bf16 *dgate, float *part) {
    constexpr int RPS = 32 / LPR; // rows a warp step
    const int lane = threadIdx.x & 31, sub = lane / LPR, sl = lane % LPR;
    const int64_t v = blockIdx.x * (int64_t)RSWB_WARPS + (threadIdx.x >> 5), n0 = v * RSWB_ROWS;
    if (n0 >= N) return; // the whole warp
    float wv[G][4], pw[G][4];
    norm_w_cols<G, LPR>(w, D, 4 * (int64_t)sl, wv, pw);
    for (int rr = 0; rr < RSWB_ROWS && n0 + rr < N; rr += RPS) { // every lane takes every step (shuffles)
        const int64_t n = n0 + rr + sub;
        const bool ok = n < N;
        const size_t r0 = ok ? (size_t)(n * D) : 0, lim = r0 + (size_t)D;
        float xv[G][4], av[G][4], dv[G][4];
#pragma unroll
        for (int j = 0; j < G; j++) {
            const int64_t i = 4 * (int64_t)sl + 4 * LPR * j;
            ld4z(dy, r0 + i, lim, ok && i < D, dv[j]);
        }
        const float r = swish_row_load<G, LPR>(x, gate, r0, lim, D, sl, ok, eps, xv, av);
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < G; j++) {
            const int64_t i = 4 * (int64_t)sl + 4 * LPR * j;
            if (!ok || i >= D) continue;
            float o[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float xh = xv[j][k] * r, dn = dv[j][k] * gdn2_silu_f32(av[j][k]);
                o[k] = dv[j][k] * xh * wv[j][k] * gdn2_silu_grad_f32(av[j][k]);
                dot += dn * wv[j][k] * xh;
                pw[j][k] += dn * xh;
                av[j][k] = dn; // the gate is done with: keep dn for dx (one silu an element, not two)
            }
            st4(dgate, r0 + i, lim, true, o);
        }
        dot = seg_sum<LPR>(dot) / (float)D;
#pragma unroll
        for (int j = 0; j < G; j++) {
            const int64_t i = 4 * (int64_t)sl + 4 * LPR * j;
            if (!ok || i >= D) continue;
            float o[4];
#pragma unroll
            for (int k = 0; k < 4; k++) o[k] = r * (av[j][k] * wv[j][k] - xv[j][k] * r * dot);
            st4(dx, r0 + i, lim, true, o);
        }
    }
    if (!part) return;
#pragma unroll
    for (int j = 0; j < G; j++) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float other = RPS == 2 ? __shfl_down_sync(0xffffffffu, pw[j][k], LPR) : 0.0f;
            if (RPS == 2) pw[j][k] = pw[j][k] + other; // lane sl: its first half's sum + the second's
        }
        const int64_t i = 4 * (int64_t)sl + 4 * LPR * j;
        if (sub == 0 && i < D)
            st4(part, (size_t)v * (size_t)D + (size_t)i, (size_t)(v + 1) * (size_t)D, true, pw[j]);
    }
}

extern "C" int gdn2_cuda_rmsnorm_swish_bwd(gdn2_cuda_nn *c, int64_t N, int64_t D, const void *x, const void *gate,
                                           const float *w, float eps, const void *dy, void *dx, void *dgate, float *dw) {
    const char *fn = "cuda rmsnorm_swish_bwd";
    if (N <= 0 || D <= 0) return GDN2_OK;
    if (D % 4 == 0 && D <= 128 * RSWB_G && al8(x) && al8(gate) && al16(w) && al8(dy) && al8(dx) && al8(dgate)) {
        const int64_t nw = cdiv(N, RSWB_ROWS), nb = cdiv(nw, RSWB_WARPS);
        if (nb > INT32_MAX) return gdn2_error(GDN2_ERR_ARG, "%s: N=%lld rows too many", fn, (long long)N);
        float *part = NULL;
        if (dw && !(part = (float *)gdn2_cuda_nn_scratch(c, (size_t)(nw * D) * sizeof(float), "rmsnorm_swish_bwd dw partials")))
            return GDN2_ERR_NOMEM;
#define LAUNCH(G, LPR)                                                                                       \
    k_rmsnorm_swish_bwd_fused<G, LPR><<<(unsigned)nb, 32 * RSWB_WARPS, 0, c->stream>>>(                      \
        N, D, (const bf16 *)x, (const bf16 *)gate, w, eps, (const bf16 *)dy, (bf16 *)dx, (bf16 *)dgate, part)
        if (D <= 64) LAUNCH(1, 16);
        else switch (cdiv(D, 128)) {
            case 1: LAUNCH(1, 32); break;
            case 2: LAUNCH(2, 32); break;
            case 3: LAUNCH(3, 32); break;
            default: LAUNCH(4, 32); break;
            }
#undef LAUNCH
        int rc = gdn2_cuda_launch_check(fn);
        return rc || !dw ? rc : gdn2_cuda_colsum_finish(part, nw, D, dw, c->stream);
    }
    const int64_t nch = cdiv(N, NN_RCH);
    CHECK_CHUNKS(fn, nch);
    const size_t rb = al256((size_t)N * sizeof(float));
    char *scr = (char *)gdn2_cuda_nn_scratch(c, rb + (dw ? (size_t)(nch * D) * sizeof(float) : 0), fn);
    if (!scr) return GDN2_ERR_NOMEM;
    float *rbuf = (float *)scr, *part = (float *)(scr + rb);
    const bool vec = D % 4 == 0 && al8(x) && al8(gate) && al16(w) && al8(dy) && al8(dx) && al8(dgate);
    k_rmsnorm_swish_bwd<<<row_grid(N), 32 * NN_ROWS_WARPS, 0, c->stream>>>(
        N, D, (const bf16 *)x, (const bf16 *)gate, w, eps, (const bf16 *)dy, (bf16 *)dx, (bf16 *)dgate, rbuf, vec);
    int rc = gdn2_cuda_launch_check(fn);
    if (rc || !dw) return rc;
    k_rmsnorm_swish_dw_part<<<dim3(cdiv(D, NN_BS), (unsigned)nch), NN_BS, 0, c->stream>>>(
        N, D, (const bf16 *)x, (const bf16 *)gate, (const bf16 *)dy, rbuf, part);
    rc = gdn2_cuda_launch_check(fn);
    return rc ? rc : gdn2_cuda_colsum_finish(part, nch, D, dw, c->stream);
}

// =====================================================================================================
// depthwise causal conv + SiLU
// =====================================================================================================
// xe_s (s in [0, T+W-1)) of sequence b at channel ch: hist row s for s < W-1 (0 without hist), else
// x row s-(W-1). `have` says whether the row exists (a missing one is skipped, as the CPU does).
__device__ __forceinline__ float conv_xe(const bf16 *x, const float *hist, size_t hs, int64_t b, int64_t T,
                                         int64_t D, int64_t W, int64_t s, int64_t ch, bool *have) {
    if (s >= W - 1) {
        *have = true;
        return ldb(x, (size_t)((b * T + s - (W - 1)) * D + ch));
    }
    *have = hist != NULL;
    return hist ? hist[b * hs + s * D + ch] : 0.0f;
}
// c_t[ch] = sum_{i=0}^{W-1} w[ch*W + i] xe_{t+i}[ch]   (i increasing)
__device__ __forceinline__ float conv_pre_(const bf16 *x, const float *hist, size_t hs, const float *w, int64_t b,
                                           int64_t t, int64_t T, int64_t D, int64_t W, int64_t ch) {
    float c = 0.0f;
    for (int64_t i = 0; i < W; i++) {
        bool have;
        float v = conv_xe(x, hist, hs, b, T, D, W, t + i, ch, &have);
        if (have) c += w[ch * W + i] * v;
    }
    return c;
}

// y = silu(c)
__global__ void k_conv_silu_fwd(int64_t B, int64_t T, int64_t D, int64_t W, const bf16 *x, const float *hist,
                                size_t hs, const float *w, bf16 *y) {
    const size_t n = (size_t)(B * T * D);
    GRID_STRIDE(e, n) {
        const int64_t ch = (int64_t)(e % D), bt = (int64_t)(e / D), t = bt % T, b = bt / T;
        y[e] = tob(gdn2_silu_f32(conv_pre_(x, hist, hs, w, b, t, T, D, W, ch)));
    }
}

// ---- the fast path (W <= CONV_MAXW, W a template argument): one thread per (sequence, CONV_C adjacent
// channels, run of CONV_R time steps); consecutive threads take consecutive channel groups (a warp reads
// 64 CONV_C contiguous bytes of a row, in accesses of 2 CONV_C bytes when vec: D % CONV_C == 0 and aligned
// tensors). The run walks its rows in order with a window of the last W - 1 inputs (and, backward, of the last
// W - 1 dc) in registers, loading CONV_P (CONV_PB) rows ahead. The formulas and summation orders are those of
// the reference kernels above: y and dx the same bits, and dw's per-run partials the reference's 64-row
// chunks when T is a multiple of 64. (The one-channel kernel before, which loaded its whole 32-step run first,
// ran at ~1 TB/s: 122 registers and ~60 instructions an element, most of them 2-byte loads and their 64-bit
// address arithmetic; dev/cuda/conv_dev.cu times the two, bench/results/h100-conv/.)
#define CONV_MAXW 8
#ifndef CONV_R // (dev/cuda/conv_dev.cu builds variants)
#define CONV_R 64   // time steps a thread
#define CONV_C 2    // channels a thread: 2, 4 or 8
#define CONV_P 8    // rows loaded ahead (forward)
#define CONV_PB 8   // rows loaded ahead (backward)
#define CONV_BMIN 6 // blocks an SM the backward is compiled for (80 registers at W = 4)
#endif
#define CONV_BS 128
// CONV_C channels of one row as bf16 pairs; conv_ld reads c < nc (the rest 0), one access of 2 CONV_C bytes
// when vec and the group is whole; conv_un unpacks to fp32 (rows loaded ahead stay packed: half the registers)
struct __align__(2 * CONV_C) conv_pk { __nv_bfloat162 h[CONV_C / 2]; };
__device__ __forceinline__ conv_pk conv_ld(const bf16 *p, int nc, bool vec) {
    if (vec && nc == CONV_C) return *reinterpret_cast<const conv_pk *>(p);
    const bf16 z = __float2bfloat16_rn(0.0f);
    conv_pk u;
#pragma unroll
    for (int k = 0; k < CONV_C / 2; k++)
        u.h[k] = __halves2bfloat162(2 * k < nc ? p[2 * k] : z, 2 * k + 1 < nc ? p[2 * k + 1] : z);
    return u;
}
__device__ __forceinline__ void conv_un(const conv_pk &u, float o[CONV_C]) {
#pragma unroll
    for (int k = 0; k < CONV_C / 2; k++) {
        const float2 f = __bfloat1622float2(u.h[k]);
        o[2 * k] = f.x, o[2 * k + 1] = f.y;
    }
}
__device__ __forceinline__ void conv_st(bf16 *p, int nc, bool vec, const float v[CONV_C]) {
    if (vec && nc == CONV_C) {
        conv_pk u;
#pragma unroll
        for (int k = 0; k < CONV_C / 2; k++) u.h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
        *reinterpret_cast<conv_pk *>(p) = u;
    } else {
#pragma unroll
        for (int c = 0; c < CONV_C; c++)
            if (c < nc) p[c] = tob(v[c]);
    }
}
// xe_s of the thread's channels (x, hist already offset to (b, ch0)): x row s - (W-1), or hist row s, or 0
__device__ __forceinline__ void conv_xe_row(const bf16 *xb, const float *hb, int64_t D, int W, int64_t s, int nc,
                                         bool vec, float o[CONV_C]) {
    if (s >= W - 1) {
        conv_un(conv_ld(xb + (size_t)((s - (W - 1)) * D), nc, vec), o);
        return;
    }
#pragma unroll
    for (int c = 0; c < CONV_C; c++) o[c] = hb && c < nc ? hb[s * D + c] : 0.0f;
}
#define WIN(W) ((W) > 1 ? (W) - 1 : 1) // the window's length (one unused slot at W = 1)
// the thread's weights wr[i][c] = w[(ch0 + c) W + i] (0 past D)
template <int W>
__device__ __forceinline__ void conv_wload(const float *w, int64_t ch0, int nc, float (&wr)[W][CONV_C]) {
#pragma unroll
    for (int i = 0; i < W; i++)
#pragma unroll
        for (int c = 0; c < CONV_C; c++) wr[i][c] = c < nc ? w[(ch0 + c) * W + i] : 0.0f;
}
// c_t of channel c: sum_i w_i xe_{t+i} (i increasing), the window holding xe_t .. xe_{t+W-2} and x_t = xe_{t+W-1}
template <int W>
__device__ __forceinline__ float conv_pre_win(const float (&wr)[W][CONV_C], const float (&xw)[WIN(W)][CONV_C],
                                              const float (&xt)[CONV_C], int c) {
    float cc = 0.0f;
#pragma unroll
    for (int i = 0; i < W - 1; i++) cc += wr[i][c] * xw[i][c];
    return cc + wr[W - 1][c] * xt[c];
}

// y_t = silu(sum_i w_i xe_{t+i}), t in [t0, t0 + n): the window holds xe_t .. xe_{t+W-2}, x_t = xe_{t+W-1}
template <int W>
__global__ void __launch_bounds__(CONV_BS) k_conv_fwd_fast(int64_t T, int64_t D, const bf16 *__restrict__ x,
                                                           const float *__restrict__ hist, size_t hs,
                                                           const float *__restrict__ w, bf16 *__restrict__ y,
                                                           bool vec) {
    const int64_t ch0 = (blockIdx.x * (int64_t)CONV_BS + threadIdx.x) * CONV_C;
    if (ch0 >= D) return;
    const int nc = D - ch0 < CONV_C ? (int)(D - ch0) : CONV_C;
    const int64_t nr = (T + CONV_R - 1) / CONV_R, b = blockIdx.y / nr, t0 = (blockIdx.y % nr) * CONV_R;
    const int n = (int)(t0 + CONV_R < T ? CONV_R : T - t0);
    const bf16 *xb = x + (size_t)(b * T * D + ch0);
    const float *hb = hist ? hist + b * hs + ch0 : NULL;
    bf16 *yb = y + (size_t)(b * T * D + ch0);
    float wr[W][CONV_C], xw[WIN(W)][CONV_C];
    conv_wload<W>(w, ch0, nc, wr);
#pragma unroll
    for (int j = 0; j < W - 1; j++) conv_xe_row(xb, hb, D, W, t0 + j, nc, vec, xw[j]);
    for (int r0 = 0; r0 < n; r0 += CONV_P) {
        conv_pk xp[CONV_P];
#pragma unroll
        for (int p = 0; p < CONV_P; p++)
            if (r0 + p < n) xp[p] = conv_ld(xb + (size_t)((t0 + r0 + p) * D), nc, vec);
#pragma unroll
        for (int p = 0; p < CONV_P; p++) {
            if (r0 + p >= n) break;
            float o[CONV_C], xt[CONV_C];
            conv_un(xp[p], xt);
#pragma unroll
            for (int c = 0; c < CONV_C; c++) o[c] = gdn2_silu_f32(conv_pre_win<W>(wr, xw, xt, c));
            conv_st(yb + (size_t)((t0 + r0 + p) * D), nc, vec, o);
#pragma unroll
            for (int c = 0; c < CONV_C; c++) {
#pragma unroll
                for (int i = 0; i + 1 < W - 1; i++) xw[i][c] = xw[i + 1][c];
                if (W > 1) xw[WIN(W) - 1][c] = xt[c];
            }
        }
    }
}
// The backward of one run, fused, in one pass over steps t = t0 .. t0 + n + W - 2:
//   dc_t = dy_t silu'(c_t) for t < T (c recomputed from the window and x_t), 0 past T (absent terms);
//   the dw partial part[run, ch*W + i] += dc_t xe_{t+i} for t < t0 + n (t increasing);
//   dx_u = sum_i w_i dc_{u+W-1-i} (i increasing) for u = t - (W-1) once u >= t0 (dc_{t-i} from the dc window).
template <int W>
__global__ void __launch_bounds__(CONV_BS, CONV_BMIN) k_conv_bwd_fast(int64_t T, int64_t D, const bf16 *__restrict__ x,
                                                           const float *__restrict__ hist, size_t hs,
                                                           const float *__restrict__ w, const bf16 *__restrict__ dy,
                                                           bf16 *__restrict__ dx, float *__restrict__ part, bool vec) {
    const int64_t ch0 = (blockIdx.x * (int64_t)CONV_BS + threadIdx.x) * CONV_C;
    if (ch0 >= D) return;
    const int nc = D - ch0 < CONV_C ? (int)(D - ch0) : CONV_C;
    const int64_t nr = (T + CONV_R - 1) / CONV_R, b = blockIdx.y / nr, t0 = (blockIdx.y % nr) * CONV_R;
    const int n = (int)(t0 + CONV_R < T ? CONV_R : T - t0);             // rows of this run
    const int ne = (int)(t0 + n + W - 1 < T ? n + W - 1 : T - t0);      // dc rows it needs
    const int ns = n + W - 1;                                           // steps
    const bf16 *xb = x + (size_t)(b * T * D + ch0), *dyb = dy + (size_t)(b * T * D + ch0);
    bf16 *dxb = dx ? dx + (size_t)(b * T * D + ch0) : NULL;
    const float *hb = hist ? hist + b * hs + ch0 : NULL;
    float wr[W][CONV_C], xw[WIN(W)][CONV_C], dcw[WIN(W)][CONV_C], acc[W][CONV_C];
    conv_wload<W>(w, ch0, nc, wr);
#pragma unroll
    for (int i = 0; i < W; i++)
#pragma unroll
        for (int c = 0; c < CONV_C; c++) acc[i][c] = 0.0f;
#pragma unroll
    for (int j = 0; j < WIN(W); j++) {
        if (j < W - 1) conv_xe_row(xb, hb, D, W, t0 + j, nc, vec, xw[j]);
#pragma unroll
        for (int c = 0; c < CONV_C; c++) dcw[j][c] = 0.0f;
    }
    for (int j0 = 0; j0 < ns; j0 += CONV_PB) {
        conv_pk xp[CONV_PB], gp[CONV_PB];
#pragma unroll
        for (int p = 0; p < CONV_PB; p++) {
            const bool in = j0 + p < ne; // rows at or past T read as 0
            xp[p] = conv_ld(xb + (size_t)((t0 + (in ? j0 + p : 0)) * D), in ? nc : 0, vec);
            gp[p] = conv_ld(dyb + (size_t)((t0 + (in ? j0 + p : 0)) * D), in ? nc : 0, vec);
        }
#pragma unroll
        for (int p = 0; p < CONV_PB; p++) {
            const int j = j0 + p;
            if (j >= ns) break;
            float dct[CONV_C], o[CONV_C], xt[CONV_C], gt[CONV_C];
            conv_un(xp[p], xt);
            conv_un(gp[p], gt);
#pragma unroll
            for (int c = 0; c < CONV_C; c++) {
                dct[c] = j < ne ? gt[c] * gdn2_silu_grad_f32(conv_pre_win<W>(wr, xw, xt, c)) : 0.0f;
                if (j < n) {
#pragma unroll
                    for (int i = 0; i < W - 1; i++) acc[i][c] += dct[c] * xw[i][c];
                    acc[W - 1][c] += dct[c] * xt[c];
                }
                float sx = 0.0f;
                sx += wr[0][c] * dct[c];
#pragma unroll
                for (int i = 1; i < W; i++) sx += wr[i][c] * dcw[W - 1 - i][c];
                o[c] = sx;
            }
            if (dxb && j >= W - 1) conv_st(dxb + (size_t)((t0 + j - (W - 1)) * D), nc, vec, o);
#pragma unroll
            for (int c = 0; c < CONV_C; c++) {
#pragma unroll
                for (int i = 0; i + 1 < W - 1; i++) xw[i][c] = xw[i + 1][c], dcw[i][c] = dcw[i + 1][c];
                if (W > 1) xw[WIN(W) - 1][c] = xt[c], dcw[WIN(W) - 1][c] = dct[c];
            }
        }
    }
    if (part) {
        float *pr = part + (size_t)blockIdx.y * (size_t)(D * W) + (size_t)(ch0 * W);
#pragma unroll
        for (int c = 0; c < CONV_C; c++)
            if (c < nc)
#pragma unroll
                for (int i = 0; i < W; i++) pr[c * W + i] = acc[i][c];
    }
}
// the launches for W = 1 .. CONV_MAXW
#define CONV_FAST_SWITCH(W, LAUNCH)                                                                     \
    switch (W) {                                                                                        \
    case 1: LAUNCH(1); break;                                                                           \
    case 2: LAUNCH(2); break;                                                                           \
    case 3: LAUNCH(3); break;                                                                           \
    case 4: LAUNCH(4); break;                                                                           \
    case 5: LAUNCH(5); break;                                                                           \
    case 6: LAUNCH(6); break;                                                                           \
    case 7: LAUNCH(7); break;                                                                           \
    default: LAUNCH(8); break;                                                                          \
    }

extern "C" int gdn2_cuda_conv_silu_fwd(int64_t B, int64_t T, int64_t D, int64_t W, const void *x, const float *hist,
                                       size_t hist_stride, const float *w, void *y, void *stream) {
    const size_t n = (size_t)(B * T * D);
    if (!n || W <= 0) return GDN2_OK;
    const int64_t runs = B * ((T + CONV_R - 1) / CONV_R);
    if (W <= CONV_MAXW && runs <= 65535) {
        const bool vec = D % CONV_C == 0 && al_n(x, 2 * CONV_C) && al_n(y, 2 * CONV_C);
#define LAUNCH(WW)                                                                                     \
    k_conv_fwd_fast<WW><<<dim3(cdiv(D, CONV_BS * CONV_C), (unsigned)runs), CONV_BS, 0, S(stream)>>>(         \
        T, D, (const bf16 *)x, hist, hist_stride, w, (bf16 *)y, vec)
        CONV_FAST_SWITCH(W, LAUNCH)
#undef LAUNCH
        return gdn2_cuda_launch_check("conv_silu_fwd");
    }
    k_conv_silu_fwd<<<grid1(n), NN_BS, 0, S(stream)>>>(B, T, D, W, (const bf16 *)x, hist, hist_stride, w, (bf16 *)y);
    return gdn2_cuda_launch_check("conv_silu_fwd");
}

// dc = dy silu'(c)   (c recomputed)
__global__ void k_conv_dc(int64_t B, int64_t T, int64_t D, int64_t W, const bf16 *x, const float *hist, size_t hs,
                          const float *w, const bf16 *dy, float *dc) {
    const size_t n = (size_t)(B * T * D);
    GRID_STRIDE(e, n) {
        const int64_t ch = (int64_t)(e % D), bt = (int64_t)(e / D), t = bt % T, b = bt / T;
        dc[e] = ldb(dy, e) * gdn2_silu_grad_f32(conv_pre_(x, hist, hs, w, b, t, T, D, W, ch));
    }
}
// dx_t[ch] = sum_i w[ch*W+i] dc_{t+W-1-i}[ch]   (i increasing, terms with t+W-1-i < T)
__global__ void k_conv_dx(int64_t B, int64_t T, int64_t D, int64_t W, const float *w, const float *dc, bf16 *dx) {
    const size_t n = (size_t)(B * T * D);
    GRID_STRIDE(e, n) {
        const int64_t ch = (int64_t)(e % D), t = (int64_t)(e / D) % T;
        float acc = 0.0f;
        for (int64_t i = 0; i < W; i++) {
            if (t + W - 1 - i >= T) continue;
            acc += w[ch * W + i] * dc[e + (size_t)((W - 1 - i) * D)];
        }
        dx[e] = tob(acc);
    }
}
// part[ch_blk, col], col = ch*W + i:  sum over rows bt of chunk (increasing) of dc[bt,ch] xe_{t+i}[ch]
__global__ void k_conv_dw_part(int64_t B, int64_t T, int64_t D, int64_t W, const bf16 *x, const float *hist,
                               size_t hs, const float *dc, float *part) {
    const int64_t col = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, chk = blockIdx.y;
    if (col >= D * W) return;
    const int64_t ch = col / W, i = col % W, BT = B * T;
    const int64_t r1 = (chk + 1) * NN_RCH < BT ? (chk + 1) * NN_RCH : BT;
    float acc = 0.0f;
    for (int64_t bt = chk * NN_RCH; bt < r1; bt++) {
        bool have;
        const float v = conv_xe(x, hist, hs, bt / T, T, D, W, bt % T + i, ch, &have);
        if (have) acc += dc[bt * D + ch] * v;
    }
    part[chk * D * W + col] = acc;
}

extern "C" int gdn2_cuda_conv_silu_bwd(gdn2_cuda_nn *c, int64_t B, int64_t T, int64_t D, int64_t W, const void *x,
                                       const float *hist, size_t hist_stride, const float *w, const void *dy, void *dx,
                                       float *dw) {
    const char *fn = "cuda conv_silu_bwd";
    const size_t n = (size_t)(B * T * D);
    if (!n || W <= 0) return GDN2_OK;
    const int64_t runs = B * ((T + CONV_R - 1) / CONV_R);
    if (W <= CONV_MAXW && runs <= 65535) {
        /* one fused pass: dx and the per-run dw partials, then the fixed-order sum over runs */
        float *part = NULL;
        if (dw && !(part = (float *)gdn2_cuda_nn_scratch(c, (size_t)(runs * D * W) * sizeof(float), fn)))
            return GDN2_ERR_NOMEM;
        const bool vec = D % CONV_C == 0 && al_n(x, 2 * CONV_C) && al_n(dy, 2 * CONV_C) && (!dx || al_n(dx, 2 * CONV_C));
#define LAUNCH(WW)                                                                                     \
    k_conv_bwd_fast<WW><<<dim3(cdiv(D, CONV_BS * CONV_C), (unsigned)runs), CONV_BS, 0, c->stream>>>(         \
        T, D, (const bf16 *)x, hist, hist_stride, w, (const bf16 *)dy, (bf16 *)dx, part, vec)
        CONV_FAST_SWITCH(W, LAUNCH)
#undef LAUNCH
        int rc = gdn2_cuda_launch_check(fn);
        return rc || !dw ? rc : gdn2_cuda_colsum_finish(part, runs, D * W, dw, c->stream);
    }
    const int64_t nch = cdiv(B * T, NN_RCH);
    CHECK_CHUNKS(fn, nch);
    const size_t dcb = al256(n * sizeof(float));
    char *scr = (char *)gdn2_cuda_nn_scratch(c, dcb + (dw ? (size_t)(nch * D * W) * sizeof(float) : 0), fn);
    if (!scr) return GDN2_ERR_NOMEM;
    float *dc = (float *)scr, *part = (float *)(scr + dcb);
    const bf16 *xb = (const bf16 *)x;
    k_conv_dc<<<grid1(n), NN_BS, 0, c->stream>>>(B, T, D, W, xb, hist, hist_stride, w, (const bf16 *)dy, dc);
    int rc = gdn2_cuda_launch_check(fn);
    if (rc) return rc;
    if (dx) {
        k_conv_dx<<<grid1(n), NN_BS, 0, c->stream>>>(B, T, D, W, w, dc, (bf16 *)dx);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (!dw) return GDN2_OK;
    k_conv_dw_part<<<dim3(cdiv(D * W, NN_BS), (unsigned)nch), NN_BS, 0, c->stream>>>(B, T, D, W, xb, hist, hist_stride,
                                                                                     dc, part);
    if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    return gdn2_cuda_colsum_finish(part, nch, D * W, dw, c->stream);
}

// hist row j (j = 0..W-2, increasing) <- xe_{T+j}: x row T+j-(W-1) when T+j >= W-1, else hist row
// T+j (which lies after row j, not yet overwritten). One thread per (sequence, channel).
__global__ void k_conv_hist_update(int64_t B, int64_t T, int64_t D, int64_t W, const bf16 *x, float *hist, size_t hs) {
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (e >= B * D) return;
    const int64_t b = e / D, ch = e % D;
    float *hb = hist + b * hs;
    for (int64_t j = 0; j < W - 1; j++) {
        const int64_t s = T + j;
        hb[j * D + ch] = s >= W - 1 ? ldb(x, (size_t)((b * T + s - (W - 1)) * D + ch)) : hb[s * D + ch];
    }
}

extern "C" int gdn2_cuda_conv_hist_update(int64_t B, int64_t T, int64_t D, int64_t W, const void *x, float *hist,
                                          size_t hist_stride, void *stream) {
    if (B <= 0 || D <= 0 || W <= 1) return GDN2_OK;
    k_conv_hist_update<<<cdiv(B * D, NN_BS), NN_BS, 0, S(stream)>>>(B, T, D, W, (const bf16 *)x, hist, hist_stride);
    return gdn2_cuda_launch_check("conv_hist_update");
}

// =====================================================================================================
// the layer's gates (src/model/layer_gdn2.c make_gates and the gate backward loop)
// =====================================================================================================
enum { MX_GDN2 = 0, MX_KDA = 1, MX_GDN = 2 };

// per (n,h,i):  g = -e^{A_log[h]} softplus(f + dt)  (gdn: the head's scalar f[n,h] + dt[h]);
//               b = cb sb[n,h,i] (gdn2) or cb sb[n,h] (kda, gdn).   g or b may be NULL (not wanted).
// On the vector path (vec: K % 8 == 0 and 16-byte aligned pointers) a group of 8 lies in one (n, h) row.
__global__ void k_gates_fwd_k(int mixer, size_t nk, int64_t H, int64_t K, float cb, const bf16 *f, const bf16 *sb,
                              const float *A_log, const float *dt, float *g, bf16 *b, bool vec) {
    GRID_STRIDE8(e0, nk) {
        float fv[8], o[8];
        if (mixer != MX_GDN) ld8(f, e0, nk, vec, fv);
        if (g) {
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const size_t e = e0 + (e0 + k < nk ? k : 0); // past the end: any valid index (not stored)
                const int64_t nh = (int64_t)(e / K), i = (int64_t)(e % K), h = nh % H;
                const float a = expf(A_log[h]);
                o[k] = mixer == MX_GDN ? -a * gdn2_softplus_f32(ldb(f, nh) + dt[h]) : -a * gdn2_softplus_f32(fv[k] + dt[h * K + i]);
            }
            st8(g, e0, nk, vec, o);
        }
        if (b) {
            if (mixer == MX_GDN2) {
                ld8(sb, e0, nk, vec, o);
            } else {
#pragma unroll
                for (int k = 0; k < 8; k++) o[k] = e0 + k < nk ? ldb(sb, (e0 + k) / K) : 0.0f;
            }
#pragma unroll
            for (int k = 0; k < 8; k++) o[k] *= cb;
            st8(b, e0, nk, vec, o);
        }
    }
}
// per (n,hv,j):  w = sw (gdn2) or cb sb[n, hv/G] (kda, gdn)
__global__ void k_gates_fwd_v(int mixer, size_t nv, int64_t H, int64_t HV, int64_t V, float cb, const bf16 *sb,
                              const bf16 *sw, bf16 *w, bool vec) {
    const int64_t G = HV / H;
    GRID_STRIDE8(e0, nv) {
        float o[8];
        if (mixer == MX_GDN2) {
            ld8(sw, e0, nv, vec, o);
        } else {
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const int64_t nhv = (int64_t)((e0 + k) / V), hv = nhv % HV, nn = nhv / HV;
                o[k] = e0 + k < nv ? cb * ldb(sb, nn * H + hv / G) : 0.0f;
            }
        }
        st8(w, e0, nv, vec, o);
    }
}

static int gates_check(const char *fn, int mixer, int64_t H, int64_t HV) {
    if (mixer < MX_GDN2 || mixer > MX_GDN) return gdn2_error(GDN2_ERR_ARG, "%s: mixer %d unknown", fn, mixer);
    if (H <= 0 || HV % H) return gdn2_error(GDN2_ERR_ARG, "%s: HV=%lld must be a multiple of H=%lld", fn, (long long)HV, (long long)H);
    return GDN2_OK;
}

extern "C" int gdn2_cuda_gates_fwd(int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb,
                                   const void *f, const void *sb, const void *sw, const float *A_log, const float *dt,
                                   float *g, void *b, void *w, void *stream) {
    const char *fn = "cuda gates_fwd";
    int rc = gates_check(fn, mixer, H, HV);
    if (rc) return rc;
    const size_t nk = (size_t)(N * H * K), nv = (size_t)(N * HV * V);
    if (nk && (g || b)) {
        const bool vec = K % 8 == 0 && al16(f) && al16(sb) && al16(g) && al16(b);
        k_gates_fwd_k<<<grid8(nk), NN_BS, 0, S(stream)>>>(mixer, nk, H, K, cb, (const bf16 *)f, (const bf16 *)sb, A_log,
                                                          dt, g, (bf16 *)b, vec);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (nv && w) {
        const bool vec = V % 8 == 0 && al16(sw) && al16(w);
        k_gates_fwd_v<<<grid8(nv), NN_BS, 0, S(stream)>>>(mixer, nv, H, HV, V, cb, (const bf16 *)sb, (const bf16 *)sw,
                                                          (bf16 *)w, vec);
        rc = gdn2_cuda_launch_check(fn);
    }
    return rc;
}

// gdn2, kda: one thread per GATES_CW columns col = h*K + i of one chunk of NN_RCH tokens (grid.y), u = f + dt[col],
// a = e^{A_log[h]}:  df = dg (-a) softplus'(u);  gdn2 also dpb = db cb sb (1 - sb), and, when the write gate has
// the same columns (HV V = H K: sw, dw, dpw non-NULL), dpw = dw sw (1 - sw) in the same pass (k_gates_bwd_w's
// formula; one launch and its tail fewer); and, unless pA is NULL, the chunk's token sums (n increasing,
// double) pA[ch, col] = sum dg g, pD[ch, col] = sum df with g = -a softplus(u) recomputed (the forward's
// formula on the same device: the same bits as the g it saved, one fp32 read fewer). vec: H K % 4 == 0 and
// 16-byte aligned fp32 / 8-byte aligned bf16 pointers. (8 columns a thread gave 11 warps an SM at the 1.3B
// size, too few for the per-element exp, log1p and division: 51 % of the copy bandwidth at 6c2b831.)
#define GATES_BS 128
#define GATES_CW 4 // columns a thread (the ld4 / st4 groups)
__global__ void __launch_bounds__(GATES_BS) k_gates_bwd_kc(int mixer, int64_t N, int64_t H, int64_t K, float cb,
                                                           const bf16 *__restrict__ f, const bf16 *__restrict__ sb,
                                                           const float *__restrict__ A_log, const float *__restrict__ dt,
                                                           const float *__restrict__ dg, const bf16 *__restrict__ db,
                                                           bf16 *__restrict__ df, bf16 *__restrict__ dpb,
                                                           const bf16 *__restrict__ sw, const bf16 *__restrict__ dw,
                                                           bf16 *__restrict__ dpw, double *__restrict__ pA,
                                                           double *__restrict__ pD, bool vec) {
    static_assert(GATES_CW == 4, "a thread's columns are one ld4 / st4 group");
    const int64_t ncols = H * K, c0 = (blockIdx.x * (int64_t)GATES_BS + threadIdx.x) * GATES_CW, ch = blockIdx.y;
    if (c0 >= ncols) return;
    float a[GATES_CW], dtv[GATES_CW];
#pragma unroll
    for (int k = 0; k < GATES_CW; k++) {
        const int64_t col = c0 + k < ncols ? c0 + k : c0;
        a[k] = expf(A_log[col / K]), dtv[k] = dt[col];
    }
    double sa[GATES_CW], sd[GATES_CW];
#pragma unroll
    for (int k = 0; k < GATES_CW; k++) sa[k] = sd[k] = 0.0;
    const int64_t n1 = (ch + 1) * NN_RCH < N ? (ch + 1) * NN_RCH : N;
    // the pointers are __restrict__ (no output aliases an input) and the loop unrolled: the next rows' loads
    // may issue before this row's stores
#pragma unroll 4
    for (int64_t n = ch * NN_RCH; n < n1; n++) {
        const size_t e0 = (size_t)(n * ncols + c0), lim = (size_t)(n * ncols + ncols);
        float fv[4], gv[4], o[4];
        ld4(f, e0, lim, vec, fv);
        ld4(dg, e0, lim, vec, gv);
#pragma unroll
        for (int k = 0; k < GATES_CW; k++) {
            const float u = fv[k] + dtv[k];
            o[k] = gv[k] * (-a[k]) * gdn2_softplus_grad_f32(u);
            sa[k] += (double)gv[k] * (-a[k] * gdn2_softplus_f32(u));
            sd[k] += o[k];
        }
        if (df) st4(df, e0, lim, vec, o);
        if (mixer == MX_GDN2 && dpb) {
            float sv[4], dv[4];
            ld4(sb, e0, lim, vec, sv);
            ld4(db, e0, lim, vec, dv);
#pragma unroll
            for (int k = 0; k < GATES_CW; k++) o[k] = dv[k] * cb * sv[k] * (1.0f - sv[k]);
            st4(dpb, e0, lim, vec, o);
        }
        if (dpw) {
            float sv[4], dv[4];
            ld4(sw, e0, lim, vec, sv);
            ld4(dw, e0, lim, vec, dv);
#pragma unroll
            for (int k = 0; k < GATES_CW; k++) dv[k] = dv[k] * sv[k] * (1.0f - sv[k]);
            st4(dpw, e0, lim, vec, dv);
        }
    }
    if (pA)
        for (int k = 0; k < GATES_CW && c0 + k < ncols; k++)
            pA[ch * ncols + c0 + k] = sa[k], pD[ch * ncols + c0 + k] = sd[k];
}
// gdn2, per (n,hv,j):  dpw = dw sw (1 - sw)
__global__ void k_gates_bwd_w(size_t n, const bf16 *sw, const bf16 *dw, bf16 *dpw, bool vec) {
    GRID_STRIDE8(i0, n) {
        float s[8], d[8];
        ld8(sw, i0, n, vec, s);
        ld8(dw, i0, n, vec, d);
#pragma unroll
        for (int k = 0; k < 8; k++) d[k] = d[k] * s[k] * (1.0f - s[k]);
        st8(dpw, i0, n, vec, d);
    }
}
// kda, gdn, per (n,h):  dbeta = cb (sum_i db[n,h,i] + sum_{j < G V} dw[n, h G, j]);  dpb = dbeta beta (1 - beta);
// gdn also: s = sum_i dg[n,h,i], df[n,h] = s (-a) softplus'(f[n,h] + dt[h])
__global__ void k_gates_bwd_head(int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V, float cb,
                                 const bf16 *f, const bf16 *sb, const float *A_log, const float *dt, const float *dg,
                                 const bf16 *db, const bf16 *dw, bf16 *df, bf16 *dpb) {
    const int64_t nh = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (nh >= N * H) return;
    const int64_t h = nh % H, nn = nh / H, G = HV / H;
    if (mixer == MX_GDN && df) {
        float s = 0.0f;
        for (int64_t i = 0; i < K; i++) s += dg[nh * K + i];
        const float a = expf(A_log[h]), u = ldb(f, nh) + dt[h];
        df[nh] = tob(s * (-a) * gdn2_softplus_grad_f32(u));
    }
    if (dpb) {
        float s = 0.0f;
        for (int64_t i = 0; i < K; i++) s += ldb(db, nh * K + i);
        const bf16 *dwr = dw + (nn * HV + h * G) * V;
        for (int64_t j = 0; j < G * V; j++) s += ldb(dwr, j);
        const float be = ldb(sb, nh);
        dpb[nh] = tob(s * cb * be * (1.0f - be));
    }
}
// gdn: token sums of the gate parameters' gradients, chunk ch of NN_RCH tokens, head h (grid.x):
//   pA = sum_n s gs,  pD = sum_n df  (double),  s = sum_i dg[n,h,i], gs = -a softplus(u), u = f[n,h] + dt[h]
__global__ void k_gates_red_gdn(int64_t N, int64_t H, int64_t K, const bf16 *f, const float *A_log, const float *dt,
                                const float *dg, double *pA, double *pD) {
    const int64_t h = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (h >= H) return;
    const int64_t n1 = (ch + 1) * NN_RCH < N ? (ch + 1) * NN_RCH : N;
    const float a = expf(A_log[h]);
    double sa = 0.0, sd = 0.0;
    for (int64_t n = ch * NN_RCH; n < n1; n++) {
        float s = 0.0f;
        for (int64_t k = 0; k < K; k++) s += dg[(n * H + h) * K + k];
        const float u = ldb(f, n * H + h) + dt[h];
        sa += (double)s * (-a * gdn2_softplus_f32(u));
        sd += s * (-a) * gdn2_softplus_grad_f32(u);
    }
    pA[ch * H + h] = sa;
    pD[ch * H + h] = sd;
}
// dA_log[h] += sum over (ch, i) of pA[ch, h per + i]: one block per head, thread t sums k = t,
// t + NN_BS, ... of the (ch, i) pairs, then a fixed tree over the block (double). (One thread per
// head summing its 32768 partials alone took ~3 ms a call at the 1.3B size: too few loads in flight.)
// When per divides NN_BS (K = 64, 128; per = 1 for gdn) those pairs are column i = t % per of chunks
// t / per, t / per + NN_BS / per, ...: the same pairs in the same order (the same bits) without a 64-bit
// division and modulo per load, four loads in flight. ddt: k_colsum over pD.
__global__ void __launch_bounds__(NN_BS) k_gates_dA_fin(int64_t nch, int64_t ncols, int64_t per, const double *pA,
                                                        float *dA_log) {
    __shared__ double sh[NN_BS];
    const int64_t h = blockIdx.x, n = nch * per;
    const int t = threadIdx.x;
    double acc = 0.0;
    if (NN_BS % per == 0) {
        const double *col = pA + h * per + t % per;
        const int64_t step = NN_BS / per;
#pragma unroll 4
        for (int64_t ch = t / per; ch < nch; ch += step) acc += col[ch * ncols];
    } else {
        for (int64_t k = t; k < n; k += NN_BS) acc += pA[(k / per) * ncols + h * per + k % per];
    }
    sh[t] = acc;
    __syncthreads();
    for (int o = NN_BS / 2; o > 0; o >>= 1) {
        if (t < o) sh[t] += sh[t + o];
        __syncthreads();
    }
    if (t == 0) dA_log[h] += (float)sh[0];
}
extern "C" int gdn2_cuda_gates_bwd(gdn2_cuda_nn *c, int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V,
                                   float cb, const void *f, const void *sb, const void *sw, const float *g,
                                   const float *A_log, const float *dt, const float *dg, const void *db, const void *dw,
                                   void *df, void *dpb, void *dpw, float *dA_log, float *ddt) {
    const char *fn = "cuda gates_bwd";
    int rc = gates_check(fn, mixer, H, HV);
    if (rc || N <= 0) return rc;
    const bf16 *fb = (const bf16 *)f, *sbb = (const bf16 *)sb;
    const size_t nv = (size_t)(N * HV * V);
    cudaStream_t s = c->stream;
    const int64_t ncols = mixer == MX_GDN ? H : H * K, nch = cdiv(N, NN_RCH);
    CHECK_CHUNKS(fn, nch);
    double *pA = NULL, *pD = NULL;
    const size_t pb = al256((size_t)(nch * ncols) * sizeof(double));
    if (dA_log || ddt) {
        char *scr = (char *)gdn2_cuda_nn_scratch(c, 2 * pb, "gates_bwd token sums");
        if (!scr) return GDN2_ERR_NOMEM;
        pA = (double *)scr, pD = (double *)(scr + pb);
    }
    (void)g; // recomputed on the device (see k_gates_bwd_kc)
    /* the write gate's dpw in the same pass when its columns are the key side's */
    const bool w_in_kc = mixer == MX_GDN2 && dpw && HV * V == H * K;
    if (mixer != MX_GDN && (df || pA || (mixer == MX_GDN2 && dpb) || w_in_kc)) {
        const bool vec = ncols % 4 == 0 && al8(f) && al8(sb) && al16(dg) && al8(db) && al8(df) && al8(dpb) &&
                         (!w_in_kc || (al8(sw) && al8(dw) && al8(dpw)));
        k_gates_bwd_kc<<<dim3(cdiv(ncols, GATES_CW * GATES_BS), (unsigned)nch), GATES_BS, 0, s>>>(
            mixer, N, H, K, cb, fb, sbb, A_log, dt, dg, (const bf16 *)db, (bf16 *)df, (bf16 *)dpb,
            w_in_kc ? (const bf16 *)sw : NULL, w_in_kc ? (const bf16 *)dw : NULL, w_in_kc ? (bf16 *)dpw : NULL, pA, pD,
            vec);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (mixer == MX_GDN2 && nv && dpw && !w_in_kc) {
        const bool vec = al16(sw) && al16(dw) && al16(dpw);
        k_gates_bwd_w<<<grid8(nv), NN_BS, 0, s>>>(nv, (const bf16 *)sw, (const bf16 *)dw, (bf16 *)dpw, vec);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (mixer != MX_GDN2) {
        k_gates_bwd_head<<<cdiv(N * H, NN_BS), NN_BS, 0, s>>>(mixer, N, H, HV, K, V, cb, fb, sbb, A_log, dt, dg,
                                                              (const bf16 *)db, (const bf16 *)dw, (bf16 *)df,
                                                              (bf16 *)dpb);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (!pA) return GDN2_OK;
    if (mixer == MX_GDN) {
        k_gates_red_gdn<<<dim3(cdiv(H, NN_BS), (unsigned)nch), NN_BS, 0, s>>>(N, H, K, fb, A_log, dt, dg, pA, pD);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (ddt) k_colsum<double, float><<<cdiv(ncols, CS_COLS), CS_COLS * CS_GROUPS, 0, s>>>(pD, nch, ncols, ddt);
    if (dA_log) k_gates_dA_fin<<<(unsigned)H, NN_BS, 0, s>>>(nch, ncols, mixer == MX_GDN ? 1 : K, pA, dA_log);
    return gdn2_cuda_launch_check(fn);
}

// =====================================================================================================
// cross-entropy: one block per row
// =====================================================================================================
#define XENT_BS 512
// running (max m, sum s of e^{z - m}) pairs, merged: m' = max, s' = s1 e^{m1-m'} + s2 e^{m2-m'}
__device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2) {
    if (m2 == -INFINITY) return;
    if (m == -INFINITY) { m = m2; s = s2; return; }
    if (m2 > m) { s = s * expf(m - m2) + s2; m = m2; }
    else s += s2 * expf(m2 - m);
}
// a row without a valid target (both xent kernels): t = -100 (ignored) gives loss 0, another value outside
// [0, Vp) NaN; dz's row zero. True when the row is done.
__device__ __forceinline__ bool xent_no_target(int64_t Vp, int64_t row, int32_t t, bf16 *dz, float *loss) {
    if (t != -100 && t >= 0 && t < Vp) return false;
    if (dz)
        for (int64_t i = threadIdx.x; i < Vp; i += blockDim.x) dz[i] = tob(0.0f);
    if (threadIdx.x == 0 && loss) loss[row] = t == -100 ? 0.0f : NAN;
    return true;
}
// loss[n] = logsumexp(z) - z[t];  dlogits = scale softmax(z), minus scale at t;  t = -100: 0 and zero row
__global__ void __launch_bounds__(XENT_BS) k_xent(int64_t Vp, const float *logits, const int32_t *targets, float scale,
                                                  bf16 *dlogits, float *loss) {
    __shared__ float sm[XENT_BS / 32], ssum[XENT_BS / 32];
    const int64_t row = blockIdx.x;
    const float *z = logits + row * Vp;
    const int32_t t = targets[row];
    bf16 *dz = dlogits ? dlogits + row * Vp : NULL;
    if (xent_no_target(Vp, row, t, dz, loss)) return;
    float m = -INFINITY, s = 0.0f;
    for (int64_t i = threadIdx.x; i < Vp; i += blockDim.x) lse_merge(m, s, z[i], 1.0f);
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sm[warp] = m, ssum[warp] = s;
    __syncthreads();
    m = -INFINITY, s = 0.0f;
    for (int w = 0; w < XENT_BS / 32; w++) lse_merge(m, s, sm[w], ssum[w]); // every thread, same order
    const float lse = m + logf(s);
    if (threadIdx.x == 0 && loss) loss[row] = lse - z[t];
    if (!dz) return;
    for (int64_t i = threadIdx.x; i < Vp; i += blockDim.x) {
        float p = scale * expf(z[i] - lse);
        if (i == t) p -= scale;
        dz[i] = tob(p);
    }
}

// The same with the row in registers (Vp % 4 == 0, Vp <= 4 XENT_BS NV4, aligned): the logits are read once,
// every load of the row issued at once (k_xent reads the row twice, one element after another through a
// chain of online-softmax merges), one expf per element: e = exp(z - max), s = sum e (thread: its float4s in
// order; then the warps' lanes by xor shuffles, then the warps in order), lse = max + log s,
// dz = (scale / s) e, minus scale at t.
__device__ __forceinline__ float block_reduce_xent(float v, float *sh, bool is_max) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, u) : v + u;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads(); // sh free (an earlier reduction's readers are done)
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = sh[0];
    for (int w = 1; w < XENT_BS / 32; w++) v = is_max ? fmaxf(v, sh[w]) : v + sh[w];
    return v;
}
template <int NV4>
__global__ void __launch_bounds__(XENT_BS) k_xent_reg(int64_t Vp, const float *logits, const int32_t *targets,
                                                      float scale, bf16 *dlogits, float *loss) {
    __shared__ float sh[XENT_BS / 32];
    const int64_t row = blockIdx.x, n4 = Vp / 4;
    const int32_t t = targets[row];
    bf16 *dz = dlogits ? dlogits + row * Vp : NULL;
    if (xent_no_target(Vp, row, t, dz, loss)) return;
    const float4 *z4 = (const float4 *)(logits + row * Vp);
    float4 v[NV4];
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < NV4; j++) {
        const int64_t q = threadIdx.x + (int64_t)j * XENT_BS;
        v[j] = q < n4 ? z4[q] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
        m = fmaxf(m, fmaxf(fmaxf(v[j].x, v[j].y), fmaxf(v[j].z, v[j].w)));
    }
    m = block_reduce_xent(m, sh, true);
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < NV4; j++) {
        v[j].x = expf(v[j].x - m), v[j].y = expf(v[j].y - m), v[j].z = expf(v[j].z - m), v[j].w = expf(v[j].w - m);
        s += v[j].x + v[j].y + v[j].z + v[j].w; // exp(-inf) = 0 past the row
    }
    s = block_reduce_xent(s, sh, false);
    if (threadIdx.x == 0 && loss) loss[row] = m + logf(s) - logits[row * Vp + t];
    if (!dz) return;
    const float k = scale / s;
#pragma unroll
    for (int j = 0; j < NV4; j++) {
        const int64_t q = threadIdx.x + (int64_t)j * XENT_BS;
        if (q >= n4) continue;
        const int64_t u = t - 4 * q; // the target's place in this float4, if any
        const float p0 = k * v[j].x - (u == 0 ? scale : 0.0f), p1 = k * v[j].y - (u == 1 ? scale : 0.0f);
        const float p2 = k * v[j].z - (u == 2 ? scale : 0.0f), p3 = k * v[j].w - (u == 3 ? scale : 0.0f);
        __nv_bfloat162 *d = (__nv_bfloat162 *)(dz + 4 * q);
        d[0] = __floats2bfloat162_rn(p0, p1), d[1] = __floats2bfloat162_rn(p2, p3);
    }
}

extern "C" int gdn2_cuda_xent(int64_t N, int64_t Vp, const float *logits, const int32_t *targets, float scale,
                              void *dlogits, float *loss, void *stream) {
    if (N <= 0 || Vp <= 0) return GDN2_OK;
    if (N > INT32_MAX) return gdn2_error(GDN2_ERR_ARG, "cuda xent: N=%lld rows too many", (long long)N);
    const int64_t per = cdiv(Vp / 4, XENT_BS); // float4s a thread
    if (Vp % 4 == 0 && per <= 16 && al16(logits) && (!dlogits || al8(dlogits))) {
#define LAUNCH(NV4) k_xent_reg<NV4><<<(unsigned)N, XENT_BS, 0, S(stream)>>>(Vp, logits, targets, scale, (bf16 *)dlogits, loss)
        if (per <= 2) LAUNCH(2);
        else if (per <= 4) LAUNCH(4);
        else if (per <= 8) LAUNCH(8);
        else LAUNCH(16);
#undef LAUNCH
    } else {
        k_xent<<<(unsigned)N, XENT_BS, 0, S(stream)>>>(Vp, logits, targets, scale, (bf16 *)dlogits, loss);
    }
    return gdn2_cuda_launch_check("xent");
}

// =====================================================================================================
// optimizer
// =====================================================================================================
#define SUMSQ_BLOCKS 1024 // fixed (not the device's SM count): the summation tree is the same everywhere
__device__ __forceinline__ double block_sum_d(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double t = 0.0;
    if (threadIdx.x == 0)
        for (int w = 0; w < nw; w++) t += sh[w];
    return t; // valid in thread 0
}
// part[b] = sum over block b's elements of (double) g^2. vec (g 16-byte aligned): thread t of the grid takes the
// float4 groups t, t + S, t + 2S, ... (S the grid's threads), four loads in flight before their sums (the scalar
// loop had one 4-byte load in flight a thread: ~2.2 TB/s over 5.8 GB at the 1.3B size), the elements of a group in
// order; the n % 4 tail elements go to thread 0 of block 0, last. Either way a fixed order: the same bits a run.
__device__ __forceinline__ void sumsq_add4(double &acc, float4 v) { // the group's elements in order
    acc += (double)v.x * v.x;
    acc += (double)v.y * v.y;
    acc += (double)v.z * v.z;
    acc += (double)v.w * v.w;
}
__global__ void k_sumsq_part(size_t n, const float *g, double *part, bool vec) {
    __shared__ double sh[32];
    double acc = 0.0;
    if (vec) {
        const size_t n4 = n / 4, S = (size_t)gridDim.x * blockDim.x;
        const float4 *g4 = (const float4 *)g;
        size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
        for (; i + 3 * S < n4; i += 4 * S) {
            float4 v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) v[u] = g4[i + u * S];
#pragma unroll
            for (int u = 0; u < 4; u++) sumsq_add4(acc, v[u]);
        }
        for (; i < n4; i += S) sumsq_add4(acc, g4[i]);
        if (blockIdx.x == 0 && threadIdx.x == 0)
            for (size_t j = n4 * 4; j < n; j++) acc += (double)g[j] * g[j];
    } else {
        GRID_STRIDE(i, n) acc += (double)g[i] * g[i];
    }
    double t = block_sum_d(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = t;
}
__global__ void k_sumsq_fin(const double *part, double *out) {
    __shared__ double sh[32];
    double t = block_sum_d(part[threadIdx.x], sh); // blockDim.x == SUMSQ_BLOCKS
    if (threadIdx.x == 0) *out = t;
}

extern "C" int gdn2_cuda_sumsq(gdn2_cuda_nn *c, size_t n, const float *g, double *out_host) {
    const char *fn = "cuda sumsq";
    double *part = (double *)gdn2_cuda_nn_scratch(c, (SUMSQ_BLOCKS + 1) * sizeof(double), fn);
    if (!part) return GDN2_ERR_NOMEM;
    int rc = cuerr(fn, cudaMemsetAsync(part, 0, (SUMSQ_BLOCKS + 1) * sizeof(double), c->stream));
    if (rc) return rc;
    if (n) {
        k_sumsq_part<<<SUMSQ_BLOCKS, NN_BS, 0, c->stream>>>(n, g, part, al16(g));
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    k_sumsq_fin<<<1, SUMSQ_BLOCKS, 0, c->stream>>>(part, part + SUMSQ_BLOCKS);
    if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    rc = cuerr(fn, cudaMemcpyAsync(c->host_word, part + SUMSQ_BLOCKS, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    if (!rc) rc = cuerr(fn, cudaStreamSynchronize(c->stream));
    if (!rc) *out_host = c->host_word[0];
    return rc;
}

#define ADAMW_ELEMS 2048 // elements per block
typedef struct {
    uint64_t offset, numel;
    int64_t first_block;
    float wd;
} adamw_dseg;

// one element: g' = g gs;  w *= 1 - lr wd;  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g' g';
// w -= step m / (sqrt(v)/bc2s + eps)   (gs: the clip factor, folded in here instead of a pass of its own)
__device__ __forceinline__ void adamw_one(float &w, float &m, float &v, float g, float gs, float decay, float b1,
                                          float b2, float eps, float step, float bc2s) {
    const float gi = g * gs;
    float wi = w * decay;
    m = b1 * m + (1.0f - b1) * gi;
    v = b2 * v + (1.0f - b2) * gi * gi;
    wi -= step * m / (sqrtf(v) / bc2s + eps);
    w = wi;
}
// Block b works on segment s (the last with first_block <= b), elements [(b - first) * E, +E), w_act = bf16(w).
// vec (16-byte aligned w, g, m, v; 8-byte aligned w_act) and a segment offset divisible by 4: float4 accesses
// (the same arithmetic per element, so the same bits as the scalar loop).
__global__ void k_adamw(const adamw_dseg *segs, int n_segs, float lr, float b1, float b2, float eps, float step,
                        float bc2s, float gs, float *w, const float *g, float *m, float *v, bf16 *w_act, bool vec) {
    const int64_t b = blockIdx.x;
    int lo = 0, hi = n_segs - 1;
    while (lo < hi) { // last segment with first_block <= b
        int mid = (lo + hi + 1) >> 1;
        if (segs[mid].first_block <= b) lo = mid;
        else hi = mid - 1;
    }
    const adamw_dseg sg = segs[lo];
    const float decay = 1.0f - lr * sg.wd;
    const uint64_t base = (uint64_t)(b - sg.first_block) * ADAMW_ELEMS;
    const uint64_t lim = sg.numel - base < ADAMW_ELEMS ? sg.numel - base : ADAMW_ELEMS; // this block's elements
    const size_t i0 = sg.offset + base;
    uint64_t k0 = 0; // elements before k0 done by the vector loop
    if (vec && i0 % 4 == 0) {
        k0 = lim & ~(uint64_t)3;
        for (uint64_t k = 4 * (uint64_t)threadIdx.x; k < k0; k += 4 * (uint64_t)blockDim.x) {
            const size_t i = i0 + k;
            float4 wv = *(const float4 *)(w + i), mv = *(const float4 *)(m + i), vv = *(const float4 *)(v + i);
            const float4 gv = *(const float4 *)(g + i);
            adamw_one(wv.x, mv.x, vv.x, gv.x, gs, decay, b1, b2, eps, step, bc2s);
            adamw_one(wv.y, mv.y, vv.y, gv.y, gs, decay, b1, b2, eps, step, bc2s);
            adamw_one(wv.z, mv.z, vv.z, gv.z, gs, decay, b1, b2, eps, step, bc2s);
            adamw_one(wv.w, mv.w, vv.w, gv.w, gs, decay, b1, b2, eps, step, bc2s);
            *(float4 *)(w + i) = wv, *(float4 *)(m + i) = mv, *(float4 *)(v + i) = vv;
            if (w_act) {
                __nv_bfloat162 *d = (__nv_bfloat162 *)(w_act + i);
                d[0] = __floats2bfloat162_rn(wv.x, wv.y), d[1] = __floats2bfloat162_rn(wv.z, wv.w);
            }
        }
    }
    for (uint64_t k = k0 + threadIdx.x; k < lim; k += blockDim.x) {
        const size_t i = i0 + k;
        float wi = w[i], mi = m[i], vi = v[i];
        adamw_one(wi, mi, vi, g[i], gs, decay, b1, b2, eps, step, bc2s);
        m[i] = mi, v[i] = vi, w[i] = wi;
        if (w_act) w_act[i] = tob(wi);
    }
}

extern "C" int gdn2_cuda_adamw(gdn2_cuda_nn *c, const gdn2_cuda_adamw_seg *segs, int n_segs, float lr, float beta1,
                               float beta2, float eps, float step_size, float bc2_sqrt, float grad_scale, float *w,
                               const float *g, float *m, float *v, void *w_act) {
    const char *fn = "cuda adamw";
    if (n_segs <= 0) return GDN2_OK;
    if (!segs) return gdn2_error(GDN2_ERR_ARG, "%s: segment table is NULL", fn);
    // the device table, cached: rebuilt when the host table (count or contents; the trainer makes a new table each step) changes
    const size_t hb = (size_t)n_segs * sizeof *segs;
    if (!(c->seg_dev && c->seg_n == n_segs && !memcmp(c->seg_copy, segs, hb))) {
        adamw_dseg *t = (adamw_dseg *)malloc((size_t)n_segs * sizeof *t);
        gdn2_cuda_adamw_seg *cp = (gdn2_cuda_adamw_seg *)malloc(hb);
        if (!t || !cp) {
            free(t), free(cp);
            return gdn2_error(GDN2_ERR_NOMEM, "%s: out of host memory for %d segments", fn, n_segs);
        }
        int64_t nb = 0;
        for (int i = 0; i < n_segs; i++) {
            t[i].offset = segs[i].offset, t[i].numel = segs[i].numel, t[i].wd = segs[i].weight_decay;
            t[i].first_block = nb;
            nb += (int64_t)((segs[i].numel + ADAMW_ELEMS - 1) / ADAMW_ELEMS);
        }
        memcpy(cp, segs, hb);
        int rc = cuerr(fn, cudaStreamSynchronize(c->stream)); // the old table may still be read
        if (c->seg_dev) cudaFree(c->seg_dev);
        c->seg_dev = NULL;
        free(c->seg_copy);
        c->seg_copy = NULL;
        if (!rc) rc = cuerr(fn, cudaMalloc(&c->seg_dev, (size_t)n_segs * sizeof *t));
        if (!rc) rc = cuerr(fn, cudaMemcpy(c->seg_dev, t, (size_t)n_segs * sizeof *t, cudaMemcpyHostToDevice));
        free(t);
        if (rc) {
            if (c->seg_dev) cudaFree(c->seg_dev);
            c->seg_dev = NULL;
            free(cp);
            return rc;
        }
        c->seg_copy = cp, c->seg_key = segs, c->seg_n = n_segs, c->seg_blocks = nb;
    }
    if (c->seg_blocks == 0) return GDN2_OK;
    if (c->seg_blocks > INT32_MAX) return gdn2_error(GDN2_ERR_ARG, "%s: parameter block too large", fn);
    bf16 *wa = (w_act && w_act != (void *)w) ? (bf16 *)w_act : NULL;
    const bool vec = al16(w) && al16(g) && al16(m) && al16(v) && (!wa || al8(wa));
    k_adamw<<<(unsigned)c->seg_blocks, NN_BS, 0, c->stream>>>((const adamw_dseg *)c->seg_dev, n_segs, lr, beta1, beta2,
                                                              eps, step_size, bc2_sqrt, grad_scale, w, g, m, v, wa,
                                                              vec);
    return gdn2_cuda_launch_check(fn);
}
