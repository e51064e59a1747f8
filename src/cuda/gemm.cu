// Linear layers on cuBLASLt (src/cuda/nn.h): bf16 A and B, fp32 compute and scale, C = D fp32 or bf16.
//
// Layouts. The model's matrices are row-major (torch): X [N,in], W [out,in], Y [N,out]. cuBLASLt is
// column-major; a row-major [r,c] buffer read column-major is its transpose [c,r] with ld = c. So
//   forward   Y = X W^T     <=>  Y^T [out,N]  = (W^T)^T [out,in] . X^T [in,N]  : op TN, m=out, n=N,  k=in
//   dX        dX = dY W     <=>  dX^T [in,N]  = W^T [in,out] . dY^T [out,N]    : op NN, m=in,  n=N,  k=out
//   dW       dW += dY^T X   <=>  dW^T [in,out] += X^T [in,N] . (dY^T)^T [N,out]: op NT, m=in,  n=out, k=N
// where each buffer's column-major view is: W -> [in,out] ld in, X -> [in,N] ld in, dY -> [out,N] ld out.
// Accumulation is beta = 1 with C = D (in place). The bias is put in Y by a small kernel before the
// product (beta = 1); dbias is a fixed-order column sum (per-chunk partials, then chunks in order).
//
// One row (N = 1: the batch-1 decode step's products) goes to a matrix-vector kernel instead
// (src/cuda/gemv.cuh: cuBLASLt is latency-bound there, 9-15 us a product of any size).
//
// Determinism: cuBLASLt gives the same bits for the same algorithm, shapes and workspace; the
// algorithm is the heuristic's first choice for (shape, transposes, C type, alignments), cached per
// context, and split-K reductions that write in place are excluded (only NONE, or reductions in the
// workspace, which run in a fixed order).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <string.h>

#include "gdn2_cuda.h"
#include "decode_nn.h"
#include "gemv.cuh"
#include "nn_ctx.cuh"

typedef __nv_bfloat16 bf16;

static const char *lt_status(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_MAPPING_ERROR: return "mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "unknown status";
    }
}

extern "C" size_t gdn2_cuda_cublaslt_version(void) { return cublasLtGetVersion(); }

int gdn2_cuda_gemm_init(gdn2_cuda_nn *c) {
    cublasStatus_t s = cublasLtCreate(&c->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        c->lt = NULL;
        return gdn2_error(GDN2_ERR_DEVICE, "cublasLtCreate failed: %s", lt_status(s));
    }
    cudaError_t e = cudaMalloc(&c->lt_ws, GDN2_LT_WORKSPACE_BYTES);
    if (e != cudaSuccess) {
        c->lt_ws = NULL;
        return gdn2_error(GDN2_ERR_NOMEM, "cuBLASLt workspace (%zu bytes): %s", GDN2_LT_WORKSPACE_BYTES, cudaGetErrorString(e));
    }
    return GDN2_OK;
}

void gdn2_cuda_gemm_fini(gdn2_cuda_nn *c) {
    if (c->lt_ws) cudaFree(c->lt_ws);
    if (c->lt) cublasLtDestroy(c->lt);
    c->lt_ws = NULL, c->lt = NULL;
}

// the largest power of two (<= 256) dividing the address: what the heuristic may assume
static uint32_t ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

// D = C = alpha op(A) op(B) + beta C; A, B bf16, C (cdt) in place. m, n, k as cuBLAS (column-major).
// a layout as a strided batch: count matrices, stride elements apart
static cublasStatus_t lt_batch(cublasLtMatrixLayout_t l, int32_t count, int64_t stride) {
    cublasStatus_t s = cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride);
    return s;
}

// batch > 1: a strided batch of products, A_i = A + i*sA, C_i = C + i*sC elements, B shared (stride 0).
static int lt_matmul_b(gdn2_cuda_nn *c, const char *fn, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                       int64_t n, int64_t k, const void *A, int64_t lda, const void *B, int64_t ldb, void *C,
                       cudaDataType_t cdt, int64_t ldc, float beta, int batch, int64_t sA, int64_t sC) {
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t s;
    int rc = GDN2_OK;
    const float alpha = 1.0f;
    uint32_t alA = ptr_align(A), alB = ptr_align(B), alC = ptr_align(C);
    if (batch > 1) { // every product of the batch: the strides' alignment too (A bf16, C of cdt)
        const uint32_t sa = ptr_align((const void *)(uintptr_t)(sA * 2));
        const uint32_t sc = ptr_align((const void *)(uintptr_t)(sC * (cdt == CUDA_R_32F ? 4 : 2)));
        alA = sa < alA ? sa : alA, alC = sc < alC ? sc : alC;
    }
#define LT(call)                                                                                  \
    do {                                                                                          \
        s = (call);                                                                               \
        if (s != CUBLAS_STATUS_SUCCESS) {                                                         \
            rc = gdn2_error(GDN2_ERR_DEVICE, "%s: %s failed: %s (m=%lld n=%lld k=%lld)", fn, #call, \
                            lt_status(s), (long long)m, (long long)n, (long long)k);              \
            goto done;                                                                            \
        }                                                                                         \
    } while (0)
    LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    {
        int32_t tA = ta, tB = tb;
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB));
    }
    // stored shapes (before op): A is m x k (N) or k x m (T); B is k x n (N) or n x k (T)
    LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda));
    LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb));
    LT(cublasLtMatrixLayoutCreate(&lc, cdt, m, n, ldc));
    if (batch > 1) {
        LT(lt_batch(la, batch, sA));
        LT(lt_batch(lb, batch, 0));
        LT(lt_batch(lc, batch, sC));
    } else {
        batch = 1, sA = 0, sC = 0;
    }
    {
        gdn2_gemm_algo_entry *hit = NULL;
        const int cd = (int)cdt, b1 = beta != 0.0f;
        // key: shape, transposes, C type, beta != 0 and the three alignments (packed in ta/tb fields)
        const int kta = (int)ta | (int)(alA << 8), ktb = (int)tb | (int)(alB << 8) | (int)(alC << 20);
        uint64_t hsh = (uint64_t)m * 73856093u ^ (uint64_t)n * 19349663u ^ (uint64_t)k * 83492791u ^ (uint64_t)kta * 2654435761u ^
                       (uint64_t)ktb * 40503u ^ (uint64_t)cd * 97u ^ (uint64_t)b1 ^ (uint64_t)batch * 1000003u ^
                       (uint64_t)sA * 7919u ^ (uint64_t)sC * 104729u;
        int slot = (int)(hsh % GDN2_GEMM_CACHE);
        gdn2_gemm_algo_entry *e = &c->gemm_cache[slot];
        if (e->used && e->m == m && e->n == n && e->k == k && e->lda == lda && e->ldb == ldb && e->ldc == ldc &&
            e->ta == kta && e->tb == ktb && e->cdt == cd && e->beta1 == b1 && e->batch == batch && e->sA == sA &&
            e->sC == sC)
            hit = e;
        if (!hit) {
            LT(cublasLtMatmulPreferenceCreate(&pref));
            uint64_t ws = GDN2_LT_WORKSPACE_BYTES;
            uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                           CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
            LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
            LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
            LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &alA, sizeof alA));
            LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &alB, sizeof alB));
            LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &alC, sizeof alC));
            LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &alC, sizeof alC));
            cublasLtMatmulHeuristicResult_t res;
            int nres = 0;
            memset(&res, 0, sizeof res);
            LT(cublasLtMatmulAlgoGetHeuristic(c->lt, op, la, lb, lc, lc, pref, 1, &res, &nres));
            if (nres < 1) {
                rc = gdn2_error(GDN2_ERR_DEVICE, "%s: cuBLASLt has no algorithm for m=%lld n=%lld k=%lld", fn,
                                (long long)m, (long long)n, (long long)k);
                goto done;
            }
            e->used = 1, e->m = m, e->n = n, e->k = k, e->lda = lda, e->ldb = ldb, e->ldc = ldc;
            e->ta = kta, e->tb = ktb, e->cdt = cd, e->beta1 = b1, e->algo = res.algo;
            e->batch = batch, e->sA = sA, e->sC = sC;
            hit = e;
        }
        LT(cublasLtMatmul(c->lt, op, &alpha, A, la, B, lb, &beta, C, lc, C, lc, &hit->algo, c->lt_ws,
                          GDN2_LT_WORKSPACE_BYTES, c->stream));
    }
#undef LT
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return rc;
}

static int lt_matmul(gdn2_cuda_nn *c, const char *fn, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                     int64_t n, int64_t k, const void *A, int64_t lda, const void *B, int64_t ldb, void *C,
                     cudaDataType_t cdt, int64_t ldc, float beta) {
    return lt_matmul_b(c, fn, ta, tb, m, n, k, A, lda, B, ldb, C, cdt, ldc, beta, 1, 0, 0);
}

// Y[n, j] = (overwrite ? 0 : Y[n, j]) + bias[j]   (bias NULL: 0)
__global__ void k_bias_rows(int64_t N, int64_t out, const float *bias, void *Y, int ydt, int overwrite) {
    const size_t n = (size_t)(N * out);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float b = bias ? bias[i % out] : 0.0f;
        if (ydt == GDN2_CUDA_BF16) {
            bf16 *y = (bf16 *)Y;
            y[i] = __float2bfloat16_rn(overwrite ? b : __bfloat162float(y[i]) + b);
        } else {
            float *y = (float *)Y;
            y[i] = overwrite ? b : y[i] + b;
        }
    }
}
// part[ch, j] = sum_{n in rows chunk ch (64 rows), increasing} dY[n, j]
#define GEMM_RCH 64
__global__ void k_colsum_part_bf16(int64_t N, int64_t ncols, const bf16 *src, float *part) {
    const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (j >= ncols) return;
    const int64_t n1 = (ch + 1) * GEMM_RCH < N ? (ch + 1) * GEMM_RCH : N;
    float acc = 0.0f;
    for (int64_t n = ch * GEMM_RCH; n < n1; n++) acc += __bfloat162float(src[n * ncols + j]);
    part[ch * ncols + j] = acc;
}

static unsigned grid_elems(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b > (1u << 22) ? (1u << 22) : (b ? b : 1));
}

// the one-row kernel's launch error, else the thread's last CUDA error (gdn2_cuda_launch_check)
static int gemv_status(const char *fn, cudaError_t e) {
    return e != cudaSuccess ? gdn2_error(GDN2_ERR_DEVICE, "%s: kernel launch failed: %s", fn, cudaGetErrorString(e))
                            : gdn2_cuda_launch_check(fn);
}

extern "C" int gdn2_cuda_linear_fwd(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t out, const void *X,
                                    const void *W, const float *bias, void *Y, int ydt, int accumulate) {
    const char *fn = "cuda linear_fwd";
    if (ydt != GDN2_CUDA_F32 && ydt != GDN2_CUDA_BF16) return gdn2_error(GDN2_ERR_ARG, "%s: ydt=%d", fn, ydt);
    if (N <= 0 || out <= 0) return GDN2_OK;
    int rc;
    if (in > 0 && gemv_fits(N, in, X, W, 0)) { // one row (the batch-1 decode step): src/cuda/gemv.cuh
        const cudaError_t e = gemv_launch(N, in, out, X, W, 0, bias, Y, 0, ydt == GDN2_CUDA_BF16, accumulate, NULL, 1,
                                          pdl_enabled(), c->stream);
        return gemv_status(fn, e);
    }
    if (bias || in <= 0) { // Y = (acc ? Y : 0) + bias first, then the product with beta = 1
        if (!(in <= 0 && !bias && accumulate)) {
            k_bias_rows<<<grid_elems((size_t)(N * out)), 256, 0, c->stream>>>(N, out, bias, Y, ydt, !accumulate);
            if ((rc = gdn2_cuda_launch_check(fn))) return rc;
        }
        if (in <= 0) return GDN2_OK;
        accumulate = 1;
    }
    return lt_matmul(c, fn, CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, W, in, X, in, Y,
                     ydt == GDN2_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F, out, accumulate ? 1.0f : 0.0f);
}

// Y_i = X W_i^T, i < count: op TN as linear_fwd, A (W) and C (Y) strided, B (X) shared; then the act
extern "C" int gdn2_cuda_linear_fwd_batch(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t out, const void *X,
                                          const void *W, size_t wstride, void *Y, size_t ystride, int count, int act) {
    const char *fn = "cuda linear_fwd_batch";
    if (act != GDN2_CUDA_STORE && act != GDN2_CUDA_SIGMOID && act != GDN2_CUDA_SWIGLU)
        return gdn2_error(GDN2_ERR_ARG, "%s: act=%d (expected %d, %d or %d)", fn, act, GDN2_CUDA_STORE, GDN2_CUDA_SIGMOID,
                          GDN2_CUDA_SWIGLU);
    if (act == GDN2_CUDA_SWIGLU && count != 2)
        return gdn2_error(GDN2_ERR_ARG, "%s: the swiglu act takes count=2 (w1, w2), got %d", fn, count);
    if (count < 1 || N <= 0 || out <= 0) return GDN2_OK;
    if (in <= 0) return gdn2_error(GDN2_ERR_ARG, "%s: in=%lld", fn, (long long)in);
    if (gemv_fits(N, in, X, W, wstride) && count <= 65535) {
        gemv_epi ep;
        memset(&ep, 0, sizeof ep);
        ep.mode = act == GDN2_CUDA_SWIGLU ? GEMV_SWIGLU : act == GDN2_CUDA_SIGMOID ? GEMV_SIGMOID : GEMV_STORE;
        const cudaError_t e =
            gemv_launch(N, in, out, X, W, wstride, NULL, Y, ystride, 1, 0, &ep, count, pdl_enabled(), c->stream);
        return gemv_status(fn, e);
    }
    int rc = lt_matmul_b(c, fn, CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, W, in, X, in, Y, CUDA_R_16BF, out, 0.0f, count,
                         (int64_t)wstride, (int64_t)ystride);
    if (rc || act == GDN2_CUDA_STORE) return rc;
    if (act == GDN2_CUDA_SWIGLU) // in place: each element is read before it is written, by the same thread
        return gdn2_cuda_swiglu_fwd((size_t)(N * out), Y, (bf16 *)Y + ystride, Y, c->stream);
    if (ystride == (size_t)(N * out)) return gdn2_cuda_sigmoid((size_t)(count * N * out), Y, c->stream);
    for (int i = 0; i < count && !rc; i++) rc = gdn2_cuda_sigmoid((size_t)(N * out), (bf16 *)Y + i * ystride, c->stream);
    return rc;
}

// z = RMSNorm(o) wn * silu(X W^T + bias) over rows of D: at one row in the product's store, else the
// product into z and gdn2_cuda_rmsnorm_swish_fwd in place (it reads each gate element before writing it)
extern "C" int gdn2_cuda_linear_rmsnorm_swish_fwd(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t out, const void *X,
                                                  const void *W, const float *bias, const void *o, const float *wn,
                                                  int64_t D, float eps, void *z) {
    const char *fn = "cuda linear_rmsnorm_swish_fwd";
    if (D <= 0 || out % D != 0)
        return gdn2_error(GDN2_ERR_ARG, "%s: out=%lld must be a multiple of the norm's row D=%lld", fn, (long long)out,
                          (long long)D);
    if (N <= 0 || out <= 0) return GDN2_OK;
    if (in > 0 && gemv_fits(N, in, X, W, 0)) {
        gemv_epi ep;
        memset(&ep, 0, sizeof ep);
        ep.mode = GEMV_NORM_SWISH, ep.o = (const bf16 *)o, ep.wn = wn, ep.D = D, ep.eps = eps;
        return gemv_status(fn, gemv_launch(N, in, out, X, W, 0, bias, z, 0, 1, 0, &ep, 1, pdl_enabled(), c->stream));
    }
    int rc = gdn2_cuda_linear_fwd(c, N, in, out, X, W, bias, z, GDN2_CUDA_BF16, 0);
    return rc ? rc : gdn2_cuda_rmsnorm_swish_fwd(N * (out / D), D, o, z, wn, eps, z, c->stream);
}

// x_p = X W_p^T (p < count), then gdn2_cuda_conv_step over the parts: at one row the product convolves
// as it stores (x not written), else the two calls
extern "C" int gdn2_cuda_linear_conv_step(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t D, const void *X,
                                          const void *W, size_t wstride, int count, void *x, size_t xs, int64_t ksize,
                                          float *hist, size_t hs, size_t hist_stride, const int32_t *slots,
                                          const float *cw, size_t cws, void *y, size_t ys) {
    const char *fn = "cuda linear_conv_step";
    if (ksize < 1 || ksize > 64 || count < 1 || count > 65535 || in <= 0)
        return gdn2_error(GDN2_ERR_ARG, "%s: ksize=%lld count=%d in=%lld (need 1 <= ksize <= 64, 1 <= count <= 65535, in >= 1)",
                          fn, (long long)ksize, count, (long long)in);
    if (N <= 0 || D <= 0) return GDN2_OK;
    if (gemv_fits(N, in, X, W, wstride) && (ksize == 1 || hist) && cw && y) {
        gemv_epi ep;
        memset(&ep, 0, sizeof ep);
        ep.mode = GEMV_CONV, ep.D = 1, ep.hist = hist, ep.hps = hs, ep.hstride = hist_stride, ep.slots = slots;
        ep.cw = cw, ep.cws = cws, ep.ksize = (int)ksize;
        return gemv_status(fn, gemv_launch(N, in, D, X, W, wstride, NULL, y, ys, 1, 0, &ep, count, pdl_enabled(), c->stream));
    }
    int rc = gdn2_cuda_linear_fwd_batch(c, N, in, D, X, W, wstride, x, xs, count, GDN2_CUDA_STORE);
    return rc ? rc : gdn2_cuda_conv_step(N, D, ksize, count, x, xs, hist, hs, hist_stride, slots, cw, cws, y, ys, c->stream);
}

static_assert(GEMV_MULTI_MAX >= GDN2_PRODUCT_MAX, "one launch holds a whole table");
extern "C" int gdn2_cuda_linear_fwd_multi(gdn2_cuda_nn *c, int64_t N, int64_t in, const void *X, const gdn2_product *p,
                                          int np) {
    const char *fn = "cuda linear_fwd_multi";
    if (np < 0 || np > GDN2_PRODUCT_MAX || (np && !p))
        return gdn2_error(GDN2_ERR_ARG, "%s: np=%d (expected 0..%d products)", fn, np, GDN2_PRODUCT_MAX);
    int one = N > 0 && in > 0, any = 0;
    for (int i = 0; i < np; i++) {
        const gdn2_product *q = &p[i];
        if (q->act != GDN2_PRODUCT_STORE && q->act != GDN2_PRODUCT_SIGMOID && q->act != GDN2_PRODUCT_CONV)
            return gdn2_error(GDN2_ERR_ARG, "%s: product %d: act=%d (expected %d, %d or %d)", fn, i, q->act,
                              GDN2_PRODUCT_STORE, GDN2_PRODUCT_SIGMOID, GDN2_PRODUCT_CONV);
        const int conv = q->act == GDN2_PRODUCT_CONV;
        one = one && gemv_fits(N, in, X, q->W, q->wstride) && q->count >= 1 && q->count <= 65535 &&
              (!conv || (q->ksize >= 1 && q->ksize <= 64 && (q->ksize == 1 || q->hist) && q->cw && q->y));
        any = any || (q->out > 0 && q->count >= 1);
    }
    if (one && any) {
        gemv_table t;
        memset(&t, 0, sizeof t);
        int count[GEMV_MULTI_MAX] = {0};
        for (int i = 0; i < np; i++) {
            const gdn2_product *q = &p[i];
            gemv_product *g = &t.p[t.n];
            if (q->out <= 0) continue;
            g->W = (const bf16 *)q->W, g->wstride = q->wstride, g->out = q->out, g->ybf16 = 1, g->ep.D = 1;
            if (q->act == GDN2_PRODUCT_CONV) {
                g->Y = q->y, g->ystride = q->ys, g->ep.mode = GEMV_CONV;
                g->ep.hist = q->hist, g->ep.hps = q->hs, g->ep.hstride = q->hist_stride, g->ep.slots = q->slots;
                g->ep.cw = q->cw, g->ep.cws = q->cws, g->ep.ksize = (int)q->ksize;
            } else {
                g->Y = q->Y, g->ystride = q->ystride;
                g->ep.mode = q->act == GDN2_PRODUCT_SIGMOID ? GEMV_SIGMOID : GEMV_STORE;
            }
            count[t.n++] = q->count;
        }
        return gemv_status(fn, gemv_multi_launch(N, in, X, &t, count, pdl_enabled(), c->stream));
    }
    int rc = GDN2_OK;
    for (int i = 0; i < np && !rc; i++) {
        const gdn2_product *q = &p[i];
        if (q->act == GDN2_PRODUCT_CONV)
            rc = gdn2_cuda_linear_conv_step(c, N, in, q->out, X, q->W, q->wstride, q->count, q->Y, q->ystride, q->ksize,
                                            q->hist, q->hs, q->hist_stride, q->slots, q->cw, q->cws, q->y, q->ys);
        else
            rc = gdn2_cuda_linear_fwd_batch(c, N, in, q->out, X, q->W, q->wstride, q->Y, q->ystride, q->count,
                                            q->act == GDN2_PRODUCT_SIGMOID ? GDN2_CUDA_SIGMOID : GDN2_CUDA_STORE);
    }
    return rc;
}

extern "C" int gdn2_cuda_linear_bwd(gdn2_cuda_nn *c, int64_t N, int64_t in, int64_t out, const void *X,
                                    const void *W, const void *dY, void *dX, int accumulate, float *dW, int dw_acc,
                                    float *dbias) {
    const char *fn = "cuda linear_bwd";
    int rc = GDN2_OK;
    if (N <= 0 || in <= 0 || out <= 0) {
        // an empty product: dX = (acc ? dX : 0), dW = (dw_acc ? dW : 0), nothing to add to dbias
        if (dX && !accumulate && N > 0 && in > 0 && (rc = gdn2_cuda_nn_zero(c, dX, (size_t)(N * in) * sizeof(bf16))))
            return rc;
        if (dW && !dw_acc && in > 0 && out > 0) return gdn2_cuda_nn_zero(c, dW, (size_t)(in * out) * sizeof(float));
        return GDN2_OK;
    }
    // dX^T [in,N] = W^T [in,out] . dY^T [out,N]
    if (dX && (rc = lt_matmul(c, fn, CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, W, in, dY, out, dX, CUDA_R_16BF, in,
                              accumulate ? 1.0f : 0.0f)))
        return rc;
    // dW^T [in,out] (+)= X^T [in,N] . (dY^T [out,N])^T   (beta 0: the old dW is not read)
    if (dW && (rc = lt_matmul(c, fn, CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, X, in, dY, out, dW, CUDA_R_32F, in,
                              dw_acc ? 1.0f : 0.0f)))
        return rc;
    if (dbias) {
        const int64_t nch = (N + GEMM_RCH - 1) / GEMM_RCH;
        if (nch > 65535) return gdn2_error(GDN2_ERR_ARG, "%s: dbias over N=%lld rows: at most %d", fn, (long long)N, 65535 * GEMM_RCH);
        float *part = (float *)gdn2_cuda_nn_scratch(c, (size_t)(nch * out) * sizeof(float), "linear_bwd dbias partials");
        if (!part) return GDN2_ERR_NOMEM;
        k_colsum_part_bf16<<<dim3((unsigned)((out + 255) / 256), (unsigned)nch), 256, 0, c->stream>>>(
            N, out, (const bf16 *)dY, part);
        if ((rc = gdn2_cuda_launch_check(fn))) return rc;
        rc = gdn2_cuda_colsum_finish(part, nch, out, dbias, c->stream);
    }
    return rc;
}
