/* A dev experiment (issue 15, CPU goals on AVX2-only hosts): a hand-written AVX2 product for the chunk kernels'
 * small shapes against OpenBLAS on the same host.
 *
 * Why: OpenBLAS 0.3.21 has small-matrix kernels (no packing) only in its AVX-512 sets (src/ops/gemm.c,
 * gdn2_gemm_small_kernels). On an AVX2-only CPU every 64-wide product of the chunk forward goes through the
 * packed path. bench/results/cpu-ops-amd-epyc-avx2/ shows what that costs: the (4,1024,4,64,64) forward at 44 % of
 * sgemm, against 67 % on an AVX-512 host.
 *
 * The kernel: row-major C (M x N) = alpha·op(A) B + beta·C, op(A) = A (NN) or Aᵀ (TN; A stored K x M), B K x N,
 * M % 4 == 0, N % 16 == 0. A 4 x 16 register tile: per k, two 8-float loads of B's row k, four broadcasts of A,
 * eight FMAs. Each element's sum runs over k in increasing order, as a dot product would. No packing: the
 * operands of the chunk's products (<= 128 x 256 floats) sit in L1/L2.
 *
 * Build and run (one thread, hot cache):
 *   gcc -O3 -march=x86-64-v3 dev/cpu/small_gemm_avx2.c -lopenblas -o /tmp/small_gemm && OPENBLAS_NUM_THREADS=1 /tmp/small_gemm
 * It prints, per shape, OpenBLAS's and this kernel's µs per call and GFLOP/s, and the relative RMS difference
 * between the two results (they sum in different orders). */
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* C = alpha·op(A) B + beta·C, the 4 x 16 tile at (i0, j0) */
static inline void tile4x16(int transA, int K, float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                            float *C, int ldc, int i0, int j0) {
    __m256 c[4][2];
    for (int r = 0; r < 4; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        const __m256 b0 = _mm256_loadu_ps(B + (size_t)k * ldb + j0), b1 = _mm256_loadu_ps(B + (size_t)k * ldb + j0 + 8);
        for (int r = 0; r < 4; r++) {
            const float a = transA ? A[(size_t)k * lda + i0 + r] : A[(size_t)(i0 + r) * lda + k];
            const __m256 av = _mm256_set1_ps(a);
            c[r][0] = _mm256_fmadd_ps(av, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(av, b1, c[r][1]);
        }
    }
    const __m256 al = _mm256_set1_ps(alpha), be = _mm256_set1_ps(beta);
    for (int r = 0; r < 4; r++)
        for (int h = 0; h < 2; h++) {
            float *cp = C + (size_t)(i0 + r) * ldc + j0 + 8 * h;
            __m256 v = _mm256_mul_ps(al, c[r][h]);
            if (beta != 0.0f) v = _mm256_fmadd_ps(be, _mm256_loadu_ps(cp), v);
            _mm256_storeu_ps(cp, v);
        }
}

static void small_sgemm(int transA, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                        float beta, float *C, int ldc) {
    for (int i0 = 0; i0 < M; i0 += 4)
        for (int j0 = 0; j0 < N; j0 += 16) tile4x16(transA, K, alpha, A, lda, B, ldb, beta, C, ldc, i0, j0);
}

static float *rnd(size_t n, unsigned *s) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        *s = *s * 1664525u + 1013904223u;
        p[i] = (float)(*s >> 8) / 16777216.0f - 0.5f;
    }
    return p;
}

int main(void) {
    /* the chunk's products (dev/cpu/NOTES.md §10): M, N, K, transA */
    const int shapes[][4] = {{64, 128, 64, 0}, {64, 128, 128, 0}, {64, 64, 128, 0}, {64, 256, 64, 0},
                             {128, 128, 64, 1}, {64, 64, 64, 1},   {64, 64, 64, 0}};
    unsigned s = 1;
    int bad = 0;
    printf("OpenBLAS %s (%s); one thread, hot cache, best of 5 runs of 2000 calls\n", openblas_get_config(),
           openblas_get_corename());
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int M = shapes[t][0], N = shapes[t][1], K = shapes[t][2], tA = shapes[t][3];
        float *A = rnd((size_t)M * K, &s), *B = rnd((size_t)K * N, &s), *C0 = rnd((size_t)M * N, &s);
        float *C1 = malloc((size_t)M * N * sizeof(float));
        for (int i = 0; i < M * N; i++) C1[i] = C0[i];
        const int lda = tA ? M : K;
        cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, N, 0.5f, C0,
                    N);
        small_sgemm(tA, M, N, K, 1.0f, A, lda, B, N, 0.5f, C1, N);
        double dd = 0, nn = 0; /* relative RMS difference (the two sum in different orders) */
        for (int i = 0; i < M * N; i++) {
            const double d = (double)C0[i] - C1[i];
            dd += d * d, nn += (double)C0[i] * C0[i];
        }
        const double md = sqrt(dd / nn);
        if (!(md <= 1e-6)) bad = 1;
        double tb = 1e30, tk = 1e30;
        const int reps = 2000;
        for (int run = 0; run < 5; run++) {
            double t0 = now();
            for (int r = 0; r < reps; r++)
                cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, N,
                            0.0f, C0, N);
            double t1 = now();
            for (int r = 0; r < reps; r++) small_sgemm(tA, M, N, K, 1.0f, A, lda, B, N, 0.0f, C1, N);
            double t2 = now();
            if (t1 - t0 < tb) tb = t1 - t0;
            if (t2 - t1 < tk) tk = t2 - t1;
        }
        tb /= reps, tk /= reps;
        const double fl = 2.0 * M * N * K;
        printf("%4dx%-4dx%-4d %s  openblas %6.2f us %6.1f GFLOP/s   avx2 4x16 %6.2f us %6.1f GFLOP/s  (%.2fx)  rel RMS "
               "diff %.1e\n",
               M, N, K, tA ? "TN" : "NN", tb * 1e6, fl / tb * 1e-9, tk * 1e6, fl / tk * 1e-9, tb / tk, md);
        free(A), free(B), free(C0), free(C1);
    }
    printf("%s\n", bad ? "small_gemm: results differ beyond 1e-6 (relative RMS)" : "small_gemm: results agree within 1e-6 (relative RMS)");
    return bad;
}
