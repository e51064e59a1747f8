/* Shared by the CPU benchmarks (bench/ops.c, bench/verify.c): their inputs — a 64-bit LCG (the
 * stream a seed fixes, so two runs time the same numbers) and buffers of uniform floats in [lo, hi) —
 * and the relative RMSE of their validations. */
#ifndef GDN2_BENCH_COMMON_H
#define GDN2_BENCH_COMMON_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static unsigned long long bench_rng = 42;
static float frand(void) {
    bench_rng = bench_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((bench_rng >> 40) * (1.0 / 16777216.0));
}
/* n uniform floats in [lo, hi); exits on out of memory (a benchmark has nothing to fall back to) */
static float *buf(size_t n, float lo, float hi) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    if (!x) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * frand();
    return x;
}

/* rms(x - ref) / rms(ref) (rms(x - ref) when ref is all zero) */
static double rel_rmse(const float *x, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)x[i] - ref[i];
        num += e * e, den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#endif
