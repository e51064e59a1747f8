// What another choice of matrix-product kernel would save in the decode step (issue 13).
//
// The library (src/cuda/gemm.cu) takes cuBLASLt's first heuristic algorithm for each shape. At batch 1
// the decode step's products are matrix-vector products, and ncu (bench/results/h200-decode-prof/
// 3cb6379-ncu_decode.csv) saw the first choice read a 2304 x 2304 bf16 weight at 1.35 TB/s and run
// the 2304 -> 128 products on 2 CTAs (6.4 us for 0.6 MB). For each weight shape of gdn2_1.3B's step,
// Y[n,out] = X[n,in] W[out,in]^T, bf16 in and out, fp32 compute, at n = 1 and 16, this prints:
//   lt_first  cuBLASLt's first heuristic algorithm (what the library runs)
//   lt_best   the fastest of the up to 32 algorithms the heuristic offers (the library's reduction
//             mask: none or in the workspace, so every one is deterministic), and its index
//   gemmex    cublasGemmEx with CUBLAS_GEMM_DEFAULT (cuBLAS may take a matrix-vector kernel there)
//   gemv      the small-N kernel (src/cuda/gemv.cuh; n <= 8; the library uses it at n = 1), after checking its output
//             against cuBLASLt's (relative RMSE, bf16 outputs)
// and two ways to read q, k, v's weights (one contiguous [3*2304, 2304] block) in one launch:
//   qkv one   one product of 6912 rows (the same as three only at n = 1: the outputs interleave per row)
//   qkv x3    a strided batch of 3 with the input's batch stride 0 (outputs [3][n][2304]: any n)
// Each time: 20 launches back to back between two CUDA events (as in the step's graph), the weight
// cycling through copies 1 GiB apart so that it comes from DRAM, not the 50 MB L2; the median of 7
// such groups, per launch. GB/s counts the weight bytes only.
//
//   nvcc -O2 -std=c++17 -arch=sm_90a -Iinclude -Isrc dev/cuda/gemm_small_n.cu -lcublasLt -lcublas -o /tmp/gemm_small_n && /tmp/gemm_small_n
//
// Runs: bench/results/h100-keep/ebf7c6f-gemm_small_n.log (cuBLASLt only), bench/results/h100-decode/
// 8fb0eae-gemm_small_n.log (with gemv: faster at n = 1, 2.5x slower at n = 8).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/cuda/gemv.cuh"

#include "dev_check.h"

static const size_t WS_BYTES = 32u << 20, POOL = 1ull << 30;
static cublasLtHandle_t g_lt;
static cublasHandle_t g_blas;
static void *g_ws, *g_pool, *g_x, *g_y;
static cudaStream_t g_st;
static cudaEvent_t g_e0, g_e1;

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

// one launch with the weight copy r; returns 0 when the library refused it
typedef int (*launch_fn)(void *ctx, const void *W);

// median over 7 groups of the per-launch time of 20 back-to-back launches (us); < 0: refused
static float time_us(launch_fn f, void *ctx, size_t wbytes) {
    const int copies = (int)(POOL / wbytes) < 64 ? (int)(POOL / wbytes) : 64;
    float t[7];
    int r = 0;
    for (int g = -1; g < 7; g++) { // group -1: warm-up
        CK(cudaEventRecord(g_e0, g_st));
        for (int i = 0; i < 20; i++, r++)
            if (!f(ctx, (const char *)g_pool + (size_t)(r % copies) * wbytes)) return -1.0f;
        CK(cudaEventRecord(g_e1, g_st));
        CK(cudaEventSynchronize(g_e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, g_e0, g_e1));
        if (g >= 0) t[g] = ms * 1e3f / 20.0f;
    }
    qsort(t, 7, sizeof t[0], cmpf);
    return t[3];
}

typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} lt_ctx;

static int lt_launch(void *c, const void *W) {
    lt_ctx *l = (lt_ctx *)c;
    const float alpha = 1, beta = 0;
    return cublasLtMatmul(g_lt, l->op, &alpha, W, l->la, g_x, l->lb, &beta, g_y, l->lc, g_y, l->lc, &l->algo, g_ws,
                          WS_BYTES, g_st) == CUBLAS_STATUS_SUCCESS;
}

// every heuristic algorithm of Y^T[m, n] = W^T . X^T (W [m rows of k], X [n rows of k]), batch of
// `batch` weights (stride m*k) against one input (stride 0) into batch outputs (stride m*n)
static void lt_sweep(const char *what, long m, long k, long n, int batch) {
    lt_ctx l;
    LK(cublasLtMatmulDescCreate(&l.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
    LK(cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
    LK(cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB));
    LK(cublasLtMatrixLayoutCreate(&l.la, CUDA_R_16BF, k, m, k));
    LK(cublasLtMatrixLayoutCreate(&l.lb, CUDA_R_16BF, k, n, k));
    LK(cublasLtMatrixLayoutCreate(&l.lc, CUDA_R_16BF, m, n, m));
    if (batch > 1) {
        int32_t bc = batch;
        int64_t sa = m * k, sb = 0, sc = m * n;
        LK(cublasLtMatrixLayoutSetAttribute(l.la, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
        LK(cublasLtMatrixLayoutSetAttribute(l.lb, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
        LK(cublasLtMatrixLayoutSetAttribute(l.lc, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
        LK(cublasLtMatrixLayoutSetAttribute(l.la, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa));
        LK(cublasLtMatrixLayoutSetAttribute(l.lb, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sb, sizeof sb));
        LK(cublasLtMatrixLayoutSetAttribute(l.lc, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sc, sizeof sc));
    }
    cublasLtMatmulPreference_t pref;
    LK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t wsb = WS_BYTES;
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                   CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
    cublasLtMatmulHeuristicResult_t res[32];
    int nres = 0;
    cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(g_lt, l.op, l.la, l.lb, l.lc, l.lc, pref, 32, res, &nres);
    const size_t wbytes = (size_t)batch * m * k * 2;
    float first = -1, best = 1e30f;
    int besti = -1;
    for (int a = 0; hs == CUBLAS_STATUS_SUCCESS && a < nres; a++) {
        l.algo = res[a].algo;
        const float us = time_us(lt_launch, &l, wbytes);
        if (us < 0) continue;
        if (a == 0) first = us;
        if (us < best) best = us, besti = a;
    }
    if (besti < 0)
        printf("%-26s %6ld %6ld %3ld %2d | no algorithm (heuristic status %d, %d results)\n", what, m, k, n, batch,
               (int)hs, nres);
    else
        printf("%-26s %6ld %6ld %3ld %2d | lt_first %8.2f  lt_best %8.2f (#%d of %d, %5.0f GB/s)", what, m, k, n,
               batch, first, best, besti, nres, wbytes / (best * 1e3));
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(l.la), cublasLtMatrixLayoutDestroy(l.lb), cublasLtMatrixLayoutDestroy(l.lc);
    cublasLtMatmulDescDestroy(l.op);
}

typedef struct {
    long m, k, n;
} gx_ctx;

static int gx_launch(void *c, const void *W) {
    gx_ctx *g = (gx_ctx *)c;
    const float alpha = 1, beta = 0;
    return cublasGemmEx(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)g->m, (int)g->n, (int)g->k, &alpha, W, CUDA_R_16BF,
                        (int)g->k, g_x, CUDA_R_16BF, (int)g->k, &beta, g_y, CUDA_R_16BF, (int)g->m, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
}

typedef struct {
    long m, k, n;
    int batch;
} gv_ctx;

static int gv_launch(void *c, const void *W) {
    gv_ctx *g = (gv_ctx *)c;
    gemv_launch(g->n, g->k, g->m, g_x, W, (size_t)(g->m * g->k), NULL, g_y, (size_t)(g->m * g->n), 1, 0, NULL, g->batch, 0, g_st);
    return cudaGetLastError() == cudaSuccess;
}

static float bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// the small-N kernel against cuBLASLt's first algorithm on random data (relative RMSE of the bf16
// outputs), then its time; one line
static void gemv_check_time(long m, long k, long n, int batch) {
    if (n > 8) { printf("  gemv: n > 8\n"); return; } // the kernel's limit (the library sends n <= GEMV_MAX_N)
    const size_t nw = (size_t)batch * m * k, ny = (size_t)batch * m * n;
    uint16_t *hw = (uint16_t *)malloc(nw * 2), *hx = (uint16_t *)malloc((size_t)n * k * 2);
    uint16_t *y0 = (uint16_t *)malloc(ny * 2), *y1 = (uint16_t *)malloc(ny * 2);
    unsigned s = 12345;
    for (size_t i = 0; i < nw; i++) s = s * 1664525u + 1013904223u, hw[i] = (uint16_t)(0x3c00 + (s >> 24) % 64 - 32) ^ (s & 0x8000);
    for (size_t i = 0; i < (size_t)n * k; i++) s = s * 1664525u + 1013904223u, hx[i] = (uint16_t)(0x3f00 + (s >> 24) % 64) ^ (s & 0x8000);
    CK(cudaMemcpy(g_pool, hw, nw * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(g_x, hx, (size_t)n * k * 2, cudaMemcpyHostToDevice));
    // reference: cuBLASLt through cublasGemmStridedBatchedEx (B stride 0)
    const float alpha = 1, beta = 0;
    LK(cublasGemmStridedBatchedEx(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)m, (int)n, (int)k, &alpha, g_pool, CUDA_R_16BF,
                                  (int)k, m * k, g_x, CUDA_R_16BF, (int)k, 0, &beta, g_y, CUDA_R_16BF, (int)m, m * n, batch,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    CK(cudaMemcpy(y0, g_y, ny * 2, cudaMemcpyDeviceToHost));
    gv_ctx g = {m, k, n, batch};
    gv_launch(&g, g_pool);
    CK(cudaMemcpy(y1, g_y, ny * 2, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < ny; i++) {
        const double a = bf2f(y0[i]), b = bf2f(y1[i]);
        num += (a - b) * (a - b), den += a * a;
    }
    const double e = sqrt(num / (den > 0 ? den : 1));
    free(hw), free(hx), free(y0), free(y1);
    if (!(e <= 1e-2)) { printf("  gemv: WRONG, rel RMSE %.3g against cuBLAS (bar 1e-2): not timed\n", e); return; }
    const float us = time_us(gv_launch, &g, nw * 2);
    printf("  gemv %8.2f (%5.0f GB/s, rel RMSE %.1e)\n", us, nw * 2 / (us * 1e3), e);
}

int main(void) {
    const long shapes[][2] = {{2304, 2304}, {128, 2304}, {2304, 128}, {6208, 2304}, {2304, 6208}, {32000, 2304}};
    const char *what[] = {"q k v b w o", "f0 g0 (low rank in)", "f1 g1 (low rank out)", "w1 w3", "w2", "lm_head"};
    const long ns[] = {1, 8, 16};
    LK(cublasLtCreate(&g_lt));
    LK(cublasCreate(&g_blas));
    CK(cudaMalloc(&g_ws, WS_BYTES));
    CK(cudaMalloc(&g_pool, POOL));
    CK(cudaMemset(g_pool, 0, POOL));
    CK(cudaMalloc(&g_x, 16 * 8192 * 2));
    CK(cudaMemset(g_x, 0, 16 * 8192 * 2));
    CK(cudaMalloc(&g_y, 3 * 16 * 32000 * 2));
    CK(cudaStreamCreate(&g_st));
    LK(cublasSetStream(g_blas, g_st));
    LK(cublasSetWorkspace(g_blas, g_ws, WS_BYTES));
    CK(cudaEventCreate(&g_e0));
    CK(cudaEventCreate(&g_e1));
    printf("weights                       out     in   n  b | microseconds per launch (median of 7 x 20 back to back)\n");
    for (int si = 0; si < 6; si++)
        for (int ni = 0; ni < 3; ni++) {
            const long m = shapes[si][0], k = shapes[si][1], n = ns[ni];
            lt_sweep(what[si], m, k, n, 1);
            gx_ctx g = {m, k, n};
            const float us = time_us(gx_launch, &g, (size_t)m * k * 2);
            if (us < 0)
                printf("  gemmex refused");
            else
                printf("  gemmex %8.2f (%5.0f GB/s)", us, (size_t)m * k * 2 / (us * 1e3));
            gemv_check_time(m, k, n, 1);
        }
    for (int ni = 0; ni < 3; ni++) {
        if (ns[ni] == 1) {
            lt_sweep("qkv one (6912 rows)", 3 * 2304, 2304, 1, 1);
            gemv_check_time(3 * 2304, 2304, 1, 1);
        }
        lt_sweep("qkv x3 (batch, B stride 0)", 2304, 2304, ns[ni], 3);
        gemv_check_time(2304, 2304, ns[ni], 3);
    }
    return 0;
}
