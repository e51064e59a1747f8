// What choosing cuBLASLt's algorithm by timing would save in the decode step (issue 13).
//
// The library (src/cuda/gemm.cu) takes the heuristic's first algorithm for each shape. At batch 1
// the decode step's products are matrix-vector products, and ncu (bench/results/h200-decode-prof/
// 3cb6379-ncu_decode.csv) saw the first choice read a 2304 x 2304 bf16 weight at 1.35 TB/s and run
// the 2304 -> 128 products on 2 CTAs (6.4 us for 0.6 MB). This times every algorithm the heuristic
// offers (up to 32, the library's reduction mask: none or in the workspace, so all deterministic)
// for each weight shape of gdn2_1.3B's step, Y[n,out] = X[n,in] W[out,in]^T with bf16 inputs and
// bf16 output, at n = 1 and 16, and prints the first choice's time, the best one's and its index.
// Each time is the median of 50 launches with CUDA events, the weight 1 GiB apart each launch
// (cycling through copies) so that it comes from DRAM as in the step, not from the 50 MB L2.
//
//   nvcc -O2 -arch=sm_90a dev/cuda/gemm_small_n.cu -lcublasLt -o /tmp/gemm_small_n && /tmp/gemm_small_n
//
// Last run: none yet (written 2026-12-06 for the next device call).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } \
    } while (0)
#define LK(x)                                                                                      \
    do {                                                                                           \
        cublasStatus_t s_ = (x);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "%s: status %d\n", #x, (int)s_); exit(1); } \
    } while (0)

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

int main(void) {
    const long shapes[][2] = {{2304, 2304}, {128, 2304}, {2304, 128}, {6208, 2304}, {2304, 6208}, {32000, 2304}};
    const char *what[] = {"q k v b w o", "f0 g0 (low rank in)", "f1 g1 (low rank out)", "w1 w3", "w2", "lm_head"};
    const int ns[] = {1, 16};
    const size_t ws_bytes = 32u << 20, pool = 1ull << 30;
    cublasLtHandle_t lt;
    LK(cublasLtCreate(&lt));
    void *ws, *wpool, *x, *y;
    CK(cudaMalloc(&ws, ws_bytes));
    CK(cudaMalloc(&wpool, pool));
    CK(cudaMemset(wpool, 0, pool));
    CK(cudaMalloc(&x, 16 * 8192 * 2));
    CK(cudaMemset(x, 0, 16 * 8192 * 2));
    CK(cudaMalloc(&y, 16 * 32000 * 2));
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    printf("%-22s %6s %6s %3s | %9s %9s %5s %6s | %s\n", "weights", "out", "in", "n", "first_us", "best_us", "idx",
           "algos", "best GB/s (weight bytes)");
    for (int si = 0; si < 6; si++)
        for (int ni = 0; ni < 2; ni++) {
            const long m = shapes[si][0], k = shapes[si][1], n = ns[ni];
            const size_t wb = (size_t)m * k * 2;
            const int copies = (int)(pool / wb) < 64 ? (int)(pool / wb) : 64;
            cublasLtMatmulDesc_t op;
            LK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            int32_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
            LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA));
            LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB));
            cublasLtMatrixLayout_t la, lb, lc;
            LK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, m, k));
            LK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, n, k));
            LK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, m, n, m));
            cublasLtMatmulPreference_t pref;
            LK(cublasLtMatmulPreferenceCreate(&pref));
            uint64_t wsb = ws_bytes;
            uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                           CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
            LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
            LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
            cublasLtMatmulHeuristicResult_t res[32];
            int nres = 0;
            LK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 32, res, &nres));
            float first = -1, best = 1e30f;
            int besti = -1;
            const float alpha = 1, beta = 0;
            for (int a = 0; a < nres; a++) {
                float t[50];
                int ok = 1;
                for (int r = 0; r < 55 && ok; r++) {
                    const void *W = (const char *)wpool + (size_t)(r % copies) * wb;
                    CK(cudaEventRecord(e0, st));
                    ok = cublasLtMatmul(lt, op, &alpha, W, la, x, lb, &beta, y, lc, y, lc, &res[a].algo, ws, ws_bytes,
                                        st) == CUBLAS_STATUS_SUCCESS;
                    CK(cudaEventRecord(e1, st));
                    CK(cudaEventSynchronize(e1));
                    if (r >= 5) CK(cudaEventElapsedTime(&t[r - 5], e0, e1));
                }
                if (!ok) continue;
                qsort(t, 50, sizeof t[0], cmpf);
                const float us = t[25] * 1e3f;
                if (a == 0) first = us;
                if (us < best) best = us, besti = a;
            }
            printf("%-22s %6ld %6ld %3ld | %9.2f %9.2f %5d %6d | %.0f\n", what[si], m, k, n, first, best, besti, nres,
                   wb / (best * 1e3));
            cublasLtMatmulPreferenceDestroy(pref);
            cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lc);
            cublasLtMatmulDescDestroy(op);
        }
    return 0;
}
