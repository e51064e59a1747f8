/* Internal helpers shared by the library's modules (not part of the public API). */
#ifndef GDN2_INTERNAL_H
#define GDN2_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "gdn2_ops.h"

/* Row-major single-precision GEMM: C = alpha * op(A) op(B) + beta * C, op(X) = X or X^T.
 * op(A) is M x K, op(B) is K x N. OpenBLAS when built with it, else a blocked fallback. */
void gdn2_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);
/* Name of the GEMM backend in use ("openblas" or "fallback"). */
const char *gdn2_gemm_backend(void);
/* nonzero when the GEMM backend has small-matrix kernels for M·N·K <= 100³ (src/ops/gemm.c) */
int gdn2_gemm_small_kernels(void);

/* Thread count for an OpenMP region: n_threads when > 0, else the OpenMP default (1 without OpenMP). */
#ifdef _OPENMP
#include <omp.h>
#endif
static inline int gdn2_threads(int n_threads) {
#ifdef _OPENMP
    return n_threads > 0 ? n_threads : omp_get_max_threads();
#else
    (void)n_threads;
    return 1;
#endif
}

/* bf16 <-> fp32. bf16 is the upper half of an fp32, so widening is exact; narrowing rounds to
 * nearest even (NaN stays NaN, overflow goes to inf), as __float2bfloat16 does on the GPU. */
static inline float gdn2_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } x = {(uint32_t)h << 16};
    return x.f;
}
static inline uint16_t gdn2_f32_to_bf16(float f) {
    union { float f; uint32_t u; } x = {f};
    if ((x.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x.u >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x.u + 0x7fffu + ((x.u >> 16) & 1u)) >> 16);
}

/* Checked size arithmetic: *out = a * b (a + b); returns 0 on overflow of size_t (then *out is
 * unspecified). Every product of sizes read from a file header, a checkpoint config or a user
 * option goes through these. */
static inline int gdn2_mul_sz(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline int gdn2_add_sz(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }

/* Monotonic wall clock in seconds. */
double gdn2_now(void);

/* malloc that records GDN2_ERR_NOMEM with what was being allocated; NULL on failure. */
void *gdn2_malloc(size_t bytes, const char *what);
void *gdn2_calloc(size_t n, size_t size, const char *what);

#endif
