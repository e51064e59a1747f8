/* Inputs of the CPU benchmarks (bench/ops.c, bench/verify.c): a 64-bit LCG (the stream a seed
 * fixes, so two runs time the same numbers) and buffers of uniform floats in [lo, hi). */
#ifndef GDN2_BENCH_RAND_H
#define GDN2_BENCH_RAND_H

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

#endif
