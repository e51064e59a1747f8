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

static inline cudaStream_t S(void *stream) { return (cudaStream_t)stream; }
static inline unsigned grid1(size_t n) {
    size_t b = (n + NN_BS - 1) / NN_BS;
    return (unsigned)(b > NN_MAX_GRID ? NN_MAX_GRID : (b ? b : 1));
}
static inline unsigned cdiv(int64_t a, int64_t b) { return (unsigned)((a + b - 1) / b); }
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
    free(c->seg_copy);
    if (c->host_word) cudaFreeHost(c->host_word);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" void *gdn2_cuda_nn_stream(const gdn2_cuda_nn *c) { return (void *)c->stream; }

extern "C" void *gdn2_cuda_nn_workspace(gdn2_cuda_nn *c, size_t bytes, const char *what) {
    return gdn2_cuda_nn_scratch(c, bytes, what);
}

void *gdn2_cuda_nn_scratch(gdn2_cuda_nn *c, size_t bytes, const char *what) {
    if (bytes == 0) bytes = 256;
    if (bytes <= c->scratch_bytes) return c->scratch;
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
__global__ void k_f32_to_bf16(size_t n, const float *x, bf16 *y) { GRID_STRIDE(i, n) y[i] = tob(x[i]); }
__global__ void k_bf16_to_f32(size_t n, const bf16 *x, float *y) { GRID_STRIDE(i, n) y[i] = ldb(x, i); }

extern "C" int gdn2_cuda_cast(size_t n, const void *x, int xdt, void *y, int ydt, void *stream) {
    if (!n) return GDN2_OK;
    if (xdt == ydt) {
        if (x == y) return GDN2_OK;
        return cuerr("cast (copy)", cudaMemcpyAsync(y, x, n * (xdt == GDN2_CUDA_BF16 ? 2 : 4),
                                                    cudaMemcpyDeviceToDevice, S(stream)));
    }
    if (xdt == GDN2_CUDA_F32) k_f32_to_bf16<<<grid1(n), NN_BS, 0, S(stream)>>>(n, (const float *)x, (bf16 *)y);
    else k_bf16_to_f32<<<grid1(n), NN_BS, 0, S(stream)>>>(n, (const bf16 *)x, (float *)y);
    return gdn2_cuda_launch_check("cast");
}

// out = a + float(b)
__global__ void k_add(size_t n, const float *a, const bf16 *b, float *out) { GRID_STRIDE(i, n) out[i] = a[i] + ldb(b, i); }

extern "C" int gdn2_cuda_add(size_t n, const float *a, const void *b, float *out, void *stream) {
    if (!n) return GDN2_OK;
    k_add<<<grid1(n), NN_BS, 0, S(stream)>>>(n, a, (const bf16 *)b, out);
    return gdn2_cuda_launch_check("add");
}

// x = sigmoid(x) = 1 / (1 + e^-x), in place
__global__ void k_sigmoid(size_t n, bf16 *x) { GRID_STRIDE(i, n) x[i] = tob(gdn2_sigmoid_f32(ldb(x, i))); }

extern "C" int gdn2_cuda_sigmoid(size_t n, void *x, void *stream) {
    if (!n) return GDN2_OK;
    k_sigmoid<<<grid1(n), NN_BS, 0, S(stream)>>>(n, (bf16 *)x);
    return gdn2_cuda_launch_check("sigmoid");
}

// dropout: x = x / (1 - p) where gdn2_dropout_keep(seed, i, thr) (util/rng.h: the CPU's mask), else 0
__global__ void k_dropout(size_t n, bf16 *x, uint32_t thr, float k, uint64_t seed) {
    GRID_STRIDE(i, n) x[i] = gdn2_dropout_keep(seed, (uint64_t)i, thr) ? tob(ldb(x, i) * k) : tob(0.0f);
}

extern "C" int gdn2_cuda_dropout(size_t n, void *x, float p, uint64_t seed, void *stream) {
    if (!n) return GDN2_OK;
    const uint32_t thr = gdn2_dropout_thr(p);
    k_dropout<<<grid1(n), NN_BS, 0, S(stream)>>>(n, (bf16 *)x, thr, 1.0f / (1.0f - p), seed);
    return gdn2_cuda_launch_check("dropout");
}

// x *= k
__global__ void k_scale(size_t n, float *x, float k) { GRID_STRIDE(i, n) x[i] *= k; }

extern "C" int gdn2_cuda_scale(size_t n, float *x, float k, void *stream) {
    if (!n) return GDN2_OK;
    k_scale<<<grid1(n), NN_BS, 0, S(stream)>>>(n, x, k);
    return gdn2_cuda_launch_check("scale");
}

// a = silu(h1) h2 = (h1 sigma(h1)) h2
__global__ void k_swiglu_fwd(size_t n, const bf16 *h1, const bf16 *h2, bf16 *a) {
    GRID_STRIDE(i, n) {
        float z = ldb(h1, i);
        a[i] = tob(z * gdn2_sigmoid_f32(z) * ldb(h2, i));
    }
}
// in: da in dh1.  dh2 = da z s;  dh1 = da h2 s (1 + z (1 - s)),  z = h1, s = sigma(z)
__global__ void k_swiglu_bwd(size_t n, const bf16 *h1, const bf16 *h2, bf16 *dh1, bf16 *dh2) {
    GRID_STRIDE(i, n) {
        float z = ldb(h1, i), s = gdn2_sigmoid_f32(z), da = ldb(dh1, i);
        dh2[i] = tob(da * z * s);
        dh1[i] = tob(da * ldb(h2, i) * s * (1.0f + z * (1.0f - s)));
    }
}

extern "C" int gdn2_cuda_swiglu_fwd(size_t n, const void *h1, const void *h2, void *a, void *stream) {
    if (!n) return GDN2_OK;
    k_swiglu_fwd<<<grid1(n), NN_BS, 0, S(stream)>>>(n, (const bf16 *)h1, (const bf16 *)h2, (bf16 *)a);
    return gdn2_cuda_launch_check("swiglu_fwd");
}
extern "C" int gdn2_cuda_swiglu_bwd(size_t n, const void *h1, const void *h2, void *dh1, void *dh2, void *stream) {
    if (!n) return GDN2_OK;
    k_swiglu_bwd<<<grid1(n), NN_BS, 0, S(stream)>>>(n, (const bf16 *)h1, (const bf16 *)h2, (bf16 *)dh1, (bf16 *)dh2);
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

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
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
    for (int64_t i = 0; i < N; i++) {
        if (tokens_host[i] < 0) {
            free(key), free(tab);
            return gdn2_error(GDN2_ERR_ARG, "%s: tokens[%lld] = %d is negative", fn, (long long)i, (int)tokens_host[i]);
        }
        key[i] = ((uint64_t)(uint32_t)tokens_host[i] << 32) | (uint64_t)i;
    }
    qsort(key, (size_t)N, sizeof *key, cmp_u64);
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

// =====================================================================================================
// RMSNorm (one warp per row, NN_ROWS_WARPS rows per block)
// =====================================================================================================
#define ROW_OF_WARP(row, lane, N)                                                   \
    const int64_t row = blockIdx.x * (int64_t)NN_ROWS_WARPS + (threadIdx.x >> 5);   \
    const int lane = threadIdx.x & 31;                                              \
    if (row >= (N)) return;
static inline unsigned row_grid(int64_t N) { return cdiv(N, NN_ROWS_WARPS); }

// r = 1 / sqrt(mean(x^2) + eps);  y = x r w;  rstd[n] = r
__global__ void k_rmsnorm_fwd(int64_t N, int64_t D, const float *x, const float *w, float eps, bf16 *y, float *rstd) {
    ROW_OF_WARP(row, lane, N);
    const float *xr = x + row * D;
    float ss = 0.0f;
    for (int64_t i = lane; i < D; i += 32) ss += xr[i] * xr[i];
    ss = warp_sum_(ss);
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (lane == 0 && rstd) rstd[row] = r;
    for (int64_t i = lane; i < D; i += 32) y[row * D + i] = tob(xr[i] * r * w[i]);
}

extern "C" int gdn2_cuda_rmsnorm_fwd(int64_t N, int64_t D, const float *x, const float *w, float eps, void *y,
                                     float *rstd, void *stream) {
    if (N <= 0 || D <= 0) return GDN2_OK;
    k_rmsnorm_fwd<<<row_grid(N), 32 * NN_ROWS_WARPS, 0, S(stream)>>>(N, D, x, w, eps, (bf16 *)y, rstd);
    return gdn2_cuda_launch_check("rmsnorm_fwd");
}

// dx = (acc ? dx : 0) + r dy w - c x,   c = r^3 / D * sum_i dy_i w_i x_i
__global__ void k_rmsnorm_bwd_dx(int64_t N, int64_t D, const float *x, const float *w, const float *rstd,
                                 const bf16 *dy, float *dx, int acc) {
    ROW_OF_WARP(row, lane, N);
    const float *xr = x + row * D;
    const bf16 *dr = dy + row * D;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int64_t i = lane; i < D; i += 32) dot += ldb(dr, i) * w[i] * xr[i];
    dot = warp_sum_(dot);
    const float cc = dot * r * r * r / (float)D;
    float *o = dx + row * D;
    for (int64_t i = lane; i < D; i += 32) {
        float v = r * ldb(dr, i) * w[i] - cc * xr[i];
        o[i] = acc ? o[i] + v : v;
    }
}
// part[ch, i] = sum_{n in chunk ch, increasing} dy[n,i] x[n,i] r[n]
__global__ void k_rmsnorm_dw_part(int64_t N, int64_t D, const float *x, const float *rstd, const bf16 *dy,
                                  float *part) {
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (i >= D) return;
    const int64_t n1 = (ch + 1) * NN_RCH < N ? (ch + 1) * NN_RCH : N;
    float acc = 0.0f;
    for (int64_t n = ch * NN_RCH; n < n1; n++) acc += ldb(dy, n * D + i) * x[n * D + i] * rstd[n];
    part[ch * D + i] = acc;
}

extern "C" int gdn2_cuda_rmsnorm_bwd(gdn2_cuda_nn *c, int64_t N, int64_t D, const float *x, const float *w,
                                     const float *rstd, const void *dy, float *dx, int accumulate, float *dw) {
    const char *fn = "cuda rmsnorm_bwd";
    if (N <= 0 || D <= 0) return GDN2_OK;
    if (!rstd) return gdn2_error(GDN2_ERR_ARG, "%s: rstd is NULL (the forward must save it)", fn);
    if (dx) {
        k_rmsnorm_bwd_dx<<<row_grid(N), 32 * NN_ROWS_WARPS, 0, c->stream>>>(N, D, x, w, rstd, (const bf16 *)dy, dx,
                                                                           accumulate);
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
                                    bf16 *y) {
    ROW_OF_WARP(row, lane, N);
    const bf16 *xr = x + row * D, *ar = gate + row * D;
    float ss = 0.0f;
    for (int64_t i = lane; i < D; i += 32) {
        float v = ldb(xr, i);
        ss += v * v;
    }
    ss = warp_sum_(ss);
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    for (int64_t i = lane; i < D; i += 32) y[row * D + i] = tob(ldb(xr, i) * r * w[i] * gdn2_silu_f32(ldb(ar, i)));
}

extern "C" int gdn2_cuda_rmsnorm_swish_fwd(int64_t N, int64_t D, const void *x, const void *gate, const float *w,
                                           float eps, void *y, void *stream) {
    if (N <= 0 || D <= 0) return GDN2_OK;
    k_rmsnorm_swish_fwd<<<row_grid(N), 32 * NN_ROWS_WARPS, 0, S(stream)>>>(N, D, (const bf16 *)x, (const bf16 *)gate,
                                                                           w, eps, (bf16 *)y);
    return gdn2_cuda_launch_check("rmsnorm_swish_fwd");
}

// With xh = x r, dn = dy silu(a):  dgate = dy xh w silu'(a);  dx = r (dn w - xh mean(dn w xh));
// rbuf[n] = r for the dw pass
__global__ void k_rmsnorm_swish_bwd(int64_t N, int64_t D, const bf16 *x, const bf16 *gate, const float *w, float eps,
                                    const bf16 *dy, bf16 *dx, bf16 *dgate, float *rbuf) {
    ROW_OF_WARP(row, lane, N);
    const bf16 *xr = x + row * D, *ar = gate + row * D, *dyr = dy + row * D;
    float ss = 0.0f;
    for (int64_t i = lane; i < D; i += 32) {
        float v = ldb(xr, i);
        ss += v * v;
    }
    ss = warp_sum_(ss);
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (lane == 0 && rbuf) rbuf[row] = r;
    float dot = 0.0f;
    for (int64_t j = lane; j < D; j += 32) {
        const float a = ldb(ar, j), xh = ldb(xr, j) * r, dyv = ldb(dyr, j), dn = dyv * gdn2_silu_f32(a);
        dgate[row * D + j] = tob(dyv * xh * w[j] * gdn2_silu_grad_f32(a));
        dot += dn * w[j] * xh;
    }
    dot = warp_sum_(dot) / (float)D;
    for (int64_t j = lane; j < D; j += 32) {
        const float dn = ldb(dyr, j) * gdn2_silu_f32(ldb(ar, j));
        dx[row * D + j] = tob(r * (dn * w[j] - ldb(xr, j) * r * dot));
    }
}
// part[ch, j] = sum_{n in chunk ch} dy silu(a) x r
__global__ void k_rmsnorm_swish_dw_part(int64_t N, int64_t D, const bf16 *x, const bf16 *gate, const bf16 *dy,
                                        const float *rbuf, float *part) {
    const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (j >= D) return;
    const int64_t n1 = (ch + 1) * NN_RCH < N ? (ch + 1) * NN_RCH : N;
    float acc = 0.0f;
    for (int64_t n = ch * NN_RCH; n < n1; n++) {
        const size_t e = (size_t)(n * D + j);
        acc += ldb(dy, e) * gdn2_silu_f32(ldb(gate, e)) * (ldb(x, e) * rbuf[n]);
    }
    part[ch * D + j] = acc;
}

extern "C" int gdn2_cuda_rmsnorm_swish_bwd(gdn2_cuda_nn *c, int64_t N, int64_t D, const void *x, const void *gate,
                                           const float *w, float eps, const void *dy, void *dx, void *dgate, float *dw) {
    const char *fn = "cuda rmsnorm_swish_bwd";
    if (N <= 0 || D <= 0) return GDN2_OK;
    const int64_t nch = cdiv(N, NN_RCH);
    CHECK_CHUNKS(fn, nch);
    const size_t rb = al256((size_t)N * sizeof(float));
    char *scr = (char *)gdn2_cuda_nn_scratch(c, rb + (dw ? (size_t)(nch * D) * sizeof(float) : 0), fn);
    if (!scr) return GDN2_ERR_NOMEM;
    float *rbuf = (float *)scr, *part = (float *)(scr + rb);
    k_rmsnorm_swish_bwd<<<row_grid(N), 32 * NN_ROWS_WARPS, 0, c->stream>>>(
        N, D, (const bf16 *)x, (const bf16 *)gate, w, eps, (const bf16 *)dy, (bf16 *)dx, (bf16 *)dgate, rbuf);
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

// ---- the fast path (W <= CONV_MAXW): one thread per (sequence, channel, run of CONV_R time steps),
// a sliding window of the last W inputs in registers, 32-bit indices inside the run; consecutive
// threads take consecutive channels (coalesced rows). Same formulas and summation orders as above.
#define CONV_MAXW 8
#define CONV_R 32
#define CONV_BS 128
// xe_s of (b, ch) as conv_xe, with x already offset to (b, ch): row stride D
__device__ __forceinline__ float conv_xe_fast(const bf16 *xb, const float *hb, int64_t D, int W, int64_t s) {
    if (s >= W - 1) return ldb(xb, (size_t)((s - (W - 1)) * D));
    return hb ? hb[s * D] : 0.0f;
}
// y_t = silu(sum_i w_i xe_{t+i}), t in [t0, t1)
__global__ void __launch_bounds__(CONV_BS) k_conv_fwd_fast(int64_t T, int64_t D, int W, const bf16 *x,
                                                           const float *hist, size_t hs, const float *w, bf16 *y) {
    const int64_t ch = blockIdx.x * (int64_t)CONV_BS + threadIdx.x;
    if (ch >= D) return;
    const int64_t nr = (T + CONV_R - 1) / CONV_R, b = blockIdx.y / nr, t0 = (blockIdx.y % nr) * CONV_R;
    const int64_t t1 = t0 + CONV_R < T ? t0 + CONV_R : T;
    const bf16 *xb = x + (size_t)(b * T * D + ch);
    const float *hb = hist ? hist + b * hs + ch : NULL;
    float wr[CONV_MAXW], win[CONV_MAXW];
#pragma unroll
    for (int i = 0; i < CONV_MAXW; i++) wr[i] = i < W ? w[ch * W + i] : 0.0f, win[i] = 0.0f;
    // win[i] = xe_{t+i} for the current t; fill the first W-1
#pragma unroll
    for (int i = 0; i < CONV_MAXW - 1; i++)
        if (i < W - 1) win[i] = conv_xe_fast(xb, hb, D, W, t0 + i);
    bf16 *yb = y + (size_t)(b * T * D + ch);
    for (int64_t t = t0; t < t1; t++) {
        float c = 0.0f;
#pragma unroll
        for (int i = 0; i < CONV_MAXW; i++) {
            if (i == W - 1) win[i] = ldb(xb, (size_t)(t * D));
            if (i < W) c += wr[i] * win[i];
        }
        yb[(size_t)(t * D)] = tob(gdn2_silu_f32(c));
#pragma unroll
        for (int i = 0; i < CONV_MAXW - 1; i++) win[i] = win[i + 1];
    }
}
// The backward of one run, fused: dc_t = dy_t silu'(c_t) for t in [t0, min(T, t1+W-1)) (c recomputed),
// dx_t' = sum_i w_i dc_{t'+W-1-i} (i increasing, terms past T absent) for t' in [t0, t1), and the
// run's dw partial part[run, ch*W+i] = sum_{t in [t0,t1)} dc_t xe_{t+i} (t increasing).
__global__ void __launch_bounds__(CONV_BS) k_conv_bwd_fast(int64_t T, int64_t D, int W, const bf16 *x,
                                                           const float *hist, size_t hs, const float *w,
                                                           const bf16 *dy, bf16 *dx, float *part) {
    const int64_t ch = blockIdx.x * (int64_t)CONV_BS + threadIdx.x;
    if (ch >= D) return;
    const int64_t nr = (T + CONV_R - 1) / CONV_R, b = blockIdx.y / nr, t0 = (blockIdx.y % nr) * CONV_R;
    const int64_t t1 = t0 + CONV_R < T ? t0 + CONV_R : T;
    const int64_t te = t1 + W - 1 < T ? t1 + W - 1 : T; // dc rows this run needs
    const bf16 *xb = x + (size_t)(b * T * D + ch), *dyb = dy + (size_t)(b * T * D + ch);
    const float *hb = hist ? hist + b * hs + ch : NULL;
    float wr[CONV_MAXW], win[CONV_MAXW], dcw[CONV_MAXW], acc[CONV_MAXW];
#pragma unroll
    for (int i = 0; i < CONV_MAXW; i++) wr[i] = i < W ? w[ch * W + i] : 0.0f, win[i] = dcw[i] = acc[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < CONV_MAXW - 1; i++)
        if (i < W - 1) win[i] = conv_xe_fast(xb, hb, D, W, t0 + i);
    bf16 *dxb = dx ? dx + (size_t)(b * T * D + ch) : NULL;
    // rows t0 .. t1+W-2: dc for t < te, zero past T (absent terms); dx of row t-(W-1) once its
    // W dc values are known
    for (int64_t t = t0; t < t1 + W - 1; t++) {
        float dc = 0.0f;
        if (t < te) {
            float c = 0.0f;
#pragma unroll
            for (int i = 0; i < CONV_MAXW; i++) {
                if (i == W - 1) win[i] = ldb(xb, (size_t)(t * D));
                if (i < W) c += wr[i] * win[i];
            }
            dc = ldb(dyb, (size_t)(t * D)) * gdn2_silu_grad_f32(c);
            if (t < t1 && part) {
#pragma unroll
                for (int i = 0; i < CONV_MAXW; i++)
                    if (i < W) acc[i] += dc * win[i];
            }
#pragma unroll
            for (int i = 0; i < CONV_MAXW - 1; i++) win[i] = win[i + 1];
        }
        // dcw[j] = dc_{t-(W-1)+j}
#pragma unroll
        for (int j = 0; j < CONV_MAXW - 1; j++) dcw[j] = dcw[j + 1];
#pragma unroll
        for (int j = 0; j < CONV_MAXW; j++)
            if (j == W - 1) dcw[j] = dc;
        const int64_t tp = t - (W - 1);
        if (dxb && tp >= t0 && tp < t1) {
            float s = 0.0f; // sum_i w_i dc_{tp+W-1-i} = sum_i w_i dcw[W-1-i], i increasing
#pragma unroll
            for (int i = 0; i < CONV_MAXW; i++)
                if (i < W) s += wr[i] * dcw[W - 1 - i];
            dxb[(size_t)(tp * D)] = tob(s);
        }
    }
    if (part) {
        float *pr = part + (size_t)blockIdx.y * (size_t)(D * W) + (size_t)(ch * W);
        for (int i = 0; i < W; i++) pr[i] = acc[i];
    }
}

extern "C" int gdn2_cuda_conv_silu_fwd(int64_t B, int64_t T, int64_t D, int64_t W, const void *x, const float *hist,
                                       size_t hist_stride, const float *w, void *y, void *stream) {
    const size_t n = (size_t)(B * T * D);
    if (!n || W <= 0) return GDN2_OK;
    const int64_t runs = B * ((T + CONV_R - 1) / CONV_R);
    if (W <= CONV_MAXW && runs <= 65535) {
        k_conv_fwd_fast<<<dim3((unsigned)cdiv(D, CONV_BS), (unsigned)runs), CONV_BS, 0, S(stream)>>>(
            T, D, (int)W, (const bf16 *)x, hist, hist_stride, w, (bf16 *)y);
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
        k_conv_bwd_fast<<<dim3((unsigned)cdiv(D, CONV_BS), (unsigned)runs), CONV_BS, 0, c->stream>>>(
            T, D, (int)W, (const bf16 *)x, hist, hist_stride, w, (const bf16 *)dy, (bf16 *)dx, part);
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
//               b = cb sb[n,h,i] (gdn2) or cb sb[n,h] (kda, gdn)
__global__ void k_gates_fwd_k(int mixer, int64_t N, int64_t H, int64_t K, float cb, const bf16 *f, const bf16 *sb,
                              const float *A_log, const float *dt, float *g, bf16 *b) {
    const size_t n = (size_t)(N * H * K);
    GRID_STRIDE(e, n) {
        const int64_t nh = (int64_t)(e / K), i = (int64_t)(e % K), h = nh % H;
        if (g) {
            const float a = expf(A_log[h]);
            g[e] = mixer == MX_GDN ? -a * gdn2_softplus_f32(ldb(f, nh) + dt[h]) : -a * gdn2_softplus_f32(ldb(f, e) + dt[h * K + i]);
        }
        b[e] = tob(cb * (mixer == MX_GDN2 ? ldb(sb, e) : ldb(sb, nh)));
    }
}
// per (n,hv,j):  w = sw (gdn2) or cb sb[n, hv/G] (kda, gdn)
__global__ void k_gates_fwd_v(int mixer, int64_t N, int64_t H, int64_t HV, int64_t V, float cb, const bf16 *sb,
                              const bf16 *sw, bf16 *w) {
    const size_t n = (size_t)(N * HV * V);
    const int64_t G = HV / H;
    GRID_STRIDE(e, n) {
        if (mixer == MX_GDN2) {
            w[e] = sw[e];
        } else {
            const int64_t nhv = (int64_t)(e / V), hv = nhv % HV, nn = nhv / HV;
            w[e] = tob(cb * ldb(sb, nn * H + hv / G));
        }
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
    if (nk) {
        k_gates_fwd_k<<<grid1(nk), NN_BS, 0, S(stream)>>>(mixer, N, H, K, cb, (const bf16 *)f, (const bf16 *)sb, A_log,
                                                          dt, g, (bf16 *)b);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (nv) {
        k_gates_fwd_v<<<grid1(nv), NN_BS, 0, S(stream)>>>(mixer, N, H, HV, V, cb, (const bf16 *)sb, (const bf16 *)sw,
                                                          (bf16 *)w);
        rc = gdn2_cuda_launch_check(fn);
    }
    return rc;
}

// gdn2, kda, per (n,h,i), u = f + dt[h,i], a = e^{A_log[h]}:  df = dg (-a) softplus'(u);
// gdn2 also: dpb = db cb sb (1 - sb)
__global__ void k_gates_bwd_k(int mixer, int64_t N, int64_t H, int64_t K, float cb, const bf16 *f, const bf16 *sb,
                              const float *A_log, const float *dt, const float *dg, const bf16 *db, bf16 *df, bf16 *dpb) {
    const size_t n = (size_t)(N * H * K);
    GRID_STRIDE(e, n) {
        const int64_t h = (int64_t)(e / K) % H, i = (int64_t)(e % K);
        const float a = expf(A_log[h]), u = ldb(f, e) + dt[h * K + i];
        if (df) df[e] = tob(dg[e] * (-a) * gdn2_softplus_grad_f32(u));
        if (mixer == MX_GDN2 && dpb) {
            const float s = ldb(sb, e);
            dpb[e] = tob(ldb(db, e) * cb * s * (1.0f - s));
        }
    }
}
// gdn2, per (n,hv,j):  dpw = dw sw (1 - sw)
__global__ void k_gates_bwd_w(size_t n, const bf16 *sw, const bf16 *dw, bf16 *dpw) {
    GRID_STRIDE(e, n) {
        const float s = ldb(sw, e);
        dpw[e] = tob(ldb(dw, e) * s * (1.0f - s));
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
// Token sums of the gate parameters' gradients, chunk ch of NN_RCH tokens, column col:
//   gdn2/kda (col = h*K + i):  pA = sum_n dg g (g recomputed if NULL),  pD = sum_n df   (double)
//   gdn (col = h):              pA = sum_n s gs,  pD = sum_n df,  s = sum_i dg[n,h,i], gs = -a softplus(u)
__global__ void k_gates_red_part(int mixer, int64_t N, int64_t H, int64_t K, const bf16 *f, const float *g,
                                 const float *A_log, const float *dt, const float *dg, double *pA, double *pD) {
    const int64_t ncols = mixer == MX_GDN ? H : H * K;
    const int64_t col = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (col >= ncols) return;
    const int64_t h = mixer == MX_GDN ? col : col / K, i = mixer == MX_GDN ? 0 : col % K;
    const int64_t n1 = (ch + 1) * NN_RCH < N ? (ch + 1) * NN_RCH : N;
    const float a = expf(A_log[h]);
    double sa = 0.0, sd = 0.0;
    for (int64_t n = ch * NN_RCH; n < n1; n++) {
        if (mixer == MX_GDN) {
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++) s += dg[(n * H + h) * K + k];
            const float u = ldb(f, n * H + h) + dt[h], gs = -a * gdn2_softplus_f32(u);
            const float dfv = s * (-a) * gdn2_softplus_grad_f32(u);
            sa += (double)s * gs;
            sd += dfv;
        } else {
            const size_t e = (size_t)((n * H + h) * K + i);
            const float u = ldb(f, e) + dt[h * K + i];
            const float ge = g ? g[e] : -a * gdn2_softplus_f32(u);
            const float dfv = dg[e] * (-a) * gdn2_softplus_grad_f32(u);
            sa += (double)dg[e] * ge;
            sd += dfv;
        }
    }
    pA[ch * ncols + col] = sa;
    pD[ch * ncols + col] = sd;
}
// dA_log[h] += sum over (ch, i) of pA[ch, h per + i]: one block per head, thread t sums k = t,
// t + NN_BS, ... of the (ch, i) pairs, then a fixed tree over the block (double). (One thread per
// head summing its 32768 partials alone took ~3 ms a call at the 1.3B size: too few loads in flight.)
// ddt: k_colsum over pD.
__global__ void __launch_bounds__(NN_BS) k_gates_dA_fin(int64_t nch, int64_t ncols, int64_t per, const double *pA,
                                                        float *dA_log) {
    __shared__ double sh[NN_BS];
    const int64_t h = blockIdx.x, n = nch * per;
    const int t = threadIdx.x;
    double acc = 0.0;
    for (int64_t k = t; k < n; k += NN_BS) acc += pA[(k / per) * ncols + h * per + k % per];
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
    const size_t nk = (size_t)(N * H * K), nv = (size_t)(N * HV * V);
    cudaStream_t s = c->stream;
    if (mixer != MX_GDN && nk) {
        k_gates_bwd_k<<<grid1(nk), NN_BS, 0, s>>>(mixer, N, H, K, cb, fb, sbb, A_log, dt, dg, (const bf16 *)db,
                                                  (bf16 *)df, (bf16 *)dpb);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (mixer == MX_GDN2 && nv && dpw) {
        k_gates_bwd_w<<<grid1(nv), NN_BS, 0, s>>>(nv, (const bf16 *)sw, (const bf16 *)dw, (bf16 *)dpw);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (mixer != MX_GDN2) {
        k_gates_bwd_head<<<cdiv(N * H, NN_BS), NN_BS, 0, s>>>(mixer, N, H, HV, K, V, cb, fb, sbb, A_log, dt, dg,
                                                              (const bf16 *)db, (const bf16 *)dw, (bf16 *)df,
                                                              (bf16 *)dpb);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
    }
    if (!dA_log && !ddt) return GDN2_OK;
    const int64_t ncols = mixer == MX_GDN ? H : H * K, nch = cdiv(N, NN_RCH);
    CHECK_CHUNKS(fn, nch);
    const size_t pb = al256((size_t)(nch * ncols) * sizeof(double));
    char *scr = (char *)gdn2_cuda_nn_scratch(c, 2 * pb, "gates_bwd token sums");
    if (!scr) return GDN2_ERR_NOMEM;
    double *pA = (double *)scr, *pD = (double *)(scr + pb);
    k_gates_red_part<<<dim3(cdiv(ncols, NN_BS), (unsigned)nch), NN_BS, 0, s>>>(mixer, N, H, K, fb, g, A_log, dt, dg,
                                                                               pA, pD);
    if ((rc = gdn2_cuda_launch_check(fn))) return rc;
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
// loss[n] = logsumexp(z) - z[t];  dlogits = scale softmax(z), minus scale at t;  t = -100: 0 and zero row
__global__ void __launch_bounds__(XENT_BS) k_xent(int64_t Vp, const float *logits, const int32_t *targets, float scale,
                                                  bf16 *dlogits, float *loss) {
    __shared__ float sm[XENT_BS / 32], ssum[XENT_BS / 32];
    const int64_t row = blockIdx.x;
    const float *z = logits + row * Vp;
    const int32_t t = targets[row];
    bf16 *dz = dlogits ? dlogits + row * Vp : NULL;
    if (t == -100 || t < 0 || t >= Vp) {
        if (dz)
            for (int64_t i = threadIdx.x; i < Vp; i += blockDim.x) dz[i] = tob(0.0f);
        if (threadIdx.x == 0 && loss) loss[row] = t == -100 ? 0.0f : NAN;
        return;
    }
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

extern "C" int gdn2_cuda_xent(int64_t N, int64_t Vp, const float *logits, const int32_t *targets, float scale,
                              void *dlogits, float *loss, void *stream) {
    if (N <= 0 || Vp <= 0) return GDN2_OK;
    k_xent<<<(unsigned)N, XENT_BS, 0, S(stream)>>>(Vp, logits, targets, scale, (bf16 *)dlogits, loss);
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
// part[b] = sum over the grid-stride elements of block b of (double) g^2
__global__ void k_sumsq_part(size_t n, const float *g, double *part) {
    __shared__ double sh[32];
    double acc = 0.0;
    GRID_STRIDE(i, n) acc += (double)g[i] * g[i];
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
        k_sumsq_part<<<SUMSQ_BLOCKS, NN_BS, 0, c->stream>>>(n, g, part);
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

// Block b works on segment s (the last with first_block <= b), elements [(b - first) * E, +E):
//   w *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g g;  w -= step m / (sqrt(v)/bc2s + eps);  w_act = bf16(w)
__global__ void k_adamw(const adamw_dseg *segs, int n_segs, float lr, float b1, float b2, float eps, float step,
                        float bc2s, float *w, const float *g, float *m, float *v, bf16 *w_act) {
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
    for (uint64_t k = threadIdx.x; k < ADAMW_ELEMS && base + k < sg.numel; k += blockDim.x) {
        const size_t i = sg.offset + base + k;
        const float gi = g[i];
        float wi = w[i] * decay;
        const float mi = b1 * m[i] + (1.0f - b1) * gi;
        const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        wi -= step * mi / (sqrtf(vi) / bc2s + eps);
        m[i] = mi, v[i] = vi, w[i] = wi;
        if (w_act) w_act[i] = tob(wi);
    }
}

extern "C" int gdn2_cuda_adamw(gdn2_cuda_nn *c, const gdn2_cuda_adamw_seg *segs, int n_segs, float lr, float beta1,
                               float beta2, float eps, float step_size, float bc2_sqrt, float *w, const float *g,
                               float *m, float *v, void *w_act) {
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
    k_adamw<<<(unsigned)c->seg_blocks, NN_BS, 0, c->stream>>>((const adamw_dseg *)c->seg_dev, n_segs, lr, beta1, beta2,
                                                              eps, step_size, bc2_sqrt, w, g, m, v,
                                                              (w_act && w_act != (void *)w) ? (bf16 *)w_act : NULL);
    return gdn2_cuda_launch_check(fn);
}
