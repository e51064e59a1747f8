/* sgemm: OpenBLAS when available (GDN2_HAVE_BLAS), else a simple cache-blocked fallback so the
 * library builds and stays correct on machines without it. */
#include <stdlib.h>
#include <strings.h>

#include "../util/internal.h"

/* GDN2_GEMM_SMALL=1 or 0 in the environment forces gdn2_gemm_small_kernels' answer (the tests take
 * both shapes of the chunk products whatever OpenBLAS's kernel set); -1: not forced */
static int gemm_small_forced(void) {
    const char *e = getenv("GDN2_GEMM_SMALL");
    return e && (e[0] == '0' || e[0] == '1') && !e[1] ? e[0] - '0' : -1;
}

#ifdef GDN2_HAVE_BLAS
#include <cblas.h>

const char *gdn2_gemm_backend(void) { return "openblas"; }

/* OpenBLAS's AVX-512 kernel sets (SkylakeX and those built on it) run products of M·N·K <= 100³
 * through small-matrix kernels without packing (row-major NN and TN; kernel/x86_64/
 * sgemm_small_kernel_permit_skylakex.c); the chunk ops shape their products for them when this is
 * nonzero (gdn2_chunk_sgemm). Other kernel sets pack every product: there the split only costs. */
int gdn2_gemm_small_kernels(void) {
    const int forced = gemm_small_forced();
    if (forced >= 0) return forced;
    const char *c = openblas_get_corename();
    return c && (!strncasecmp(c, "skylakex", 8) || !strncasecmp(c, "cooperlake", 10) ||
                 !strncasecmp(c, "sapphirerapids", 14));
}

void gdn2_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
}
#else

const char *gdn2_gemm_backend(void) { return "fallback"; }

int gdn2_gemm_small_kernels(void) {
    const int forced = gemm_small_forced();
    return forced >= 0 ? forced : 0;
}

/* C[i][j] = alpha * sum_p opA[i][p] opB[p][j] + beta * C[i][j] */
void gdn2_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < N; j++) c[j] = 0.0f;
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
        for (int p = 0; p < K; p++) {
            float a = alpha * (transA ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]);
            if (a == 0.0f) continue;
            if (!transB) {
                const float *b = B + (size_t)p * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            } else {
                for (int j = 0; j < N; j++) c[j] += a * B[(size_t)j * ldb + p];
            }
        }
    }
}
#endif
