/* Shared by the CPU benchmarks (bench/ops.c, bench/verify.c, bench/peers/ggml_gdn.c): their inputs — a
 * 64-bit LCG (the stream a seed fixes, so two runs time the same numbers) and buffers of uniform floats in
 * [lo, hi) —, the relative RMSE of their validations, and what a result file says of the run: the commit,
 * the CPU model and OpenBLAS's kernel set. */
#ifndef GDN2_BENCH_COMMON_H
#define GDN2_BENCH_COMMON_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static inline void git_commit(char *out, size_t n) {
    snprintf(out, n, "unknown");
    /* "+dirty": the library sources differ from that commit (uncommitted work was measured) */
    FILE *p = popen("git rev-parse --short HEAD 2>/dev/null && "
                    "(git diff --quiet HEAD -- src include 2>/dev/null || echo +dirty)", "r");
    if (!p) return;
    char line[64];
    if (fgets(out, (int)n, p)) out[strcspn(out, "\n")] = 0;
    if (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        strncat(out, line, n - strlen(out) - 1);
    }
    pclose(p);
}

/* OpenBLAS's kernel set (its DYNAMIC_ARCH pick, or OPENBLAS_CORETYPE): a build older than the CPU
 * falls back to "Prescott" (SSE3 kernels, ~1/4 of an AVX-512 core's sgemm rate) — e.g. OpenBLAS
 * 0.3.21 on Emerald Rapids; then set OPENBLAS_CORETYPE (Cooperlake, SkylakeX or Haswell). */
#ifdef GDN2_HAVE_BLAS
char *openblas_get_corename(void);
#endif
static inline const char *blas_core(void) {
#ifdef GDN2_HAVE_BLAS
    return openblas_get_corename();
#else
    return "none";
#endif
}

static inline void cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ') c++;
                snprintf(out, n, "%s", c);
                out[strcspn(out, "\n")] = 0;
            }
            break;
        }
    fclose(f);
}

#endif
