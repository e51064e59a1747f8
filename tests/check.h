/* Minimal test harness: each tests/test_*.c is one program that prints a line per check and ends
 * with "N passed, N failed, N skipped" (tests/run.sh sums them). Header-only on purpose.
 * Paths: the fixtures (tests/fixtures/official, env GDN2_FIXTURES), the project's data files (data/,
 * env GDN2_DATA) and the CLI under test (build/gdn2, env GDN2_CLI: the sanitized build sets it) are
 * relative to the project root, where tests/run.sh runs the programs. */
#ifndef GDN2_TEST_CHECK_H
#define GDN2_TEST_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/rng.h"

static int g_pass, g_fail, g_skip;

/* CHECK(cond, fmt, ...): one named assertion */
#define CHECK(cond, ...)                                                                         \
    do {                                                                                         \
        int ok_ = (cond);                                                                        \
        printf("%s ", ok_ ? "PASS" : "FAIL");                                                    \
        printf(__VA_ARGS__);                                                                     \
        printf("\n");                                                                            \
        if (ok_) g_pass++; else g_fail++;                                                        \
        fflush(stdout);                                                                          \
    } while (0)

/* SKIP(fmt, ...): a check that cannot run on this machine, printed with the reason and counted.
 * Only SKIP_NO_GPU is an expected skip (tests/run.sh fails the run on any other under CI); a missing
 * fixture or data file is a FAIL, never a SKIP. */
#define SKIP(...)                                                                                \
    do { printf("SKIP "); printf(__VA_ARGS__); printf("\n"); g_skip++; fflush(stdout); } while (0)
#define SKIP_NO_GPU(...)                                                                         \
    do { printf("SKIP (no CUDA device) "); printf(__VA_ARGS__); printf("\n"); g_skip++; fflush(stdout); } while (0)

static inline int test_summary(void) {
    printf("%d passed, %d failed, %d skipped\n", g_pass, g_fail, g_skip);
    return g_fail ? 1 : 0;
}

/* tests/fixtures/official (env GDN2_FIXTURES overrides) */
static inline const char *fixture_dir(void) {
    const char *e = getenv("GDN2_FIXTURES");
    return e && *e ? e : "tests/fixtures/official";
}
/* data/ (env GDN2_DATA overrides): RULER word lists */
static inline const char *data_dir(void) {
    const char *e = getenv("GDN2_DATA");
    return e && *e ? e : "data";
}
/* the CLI binary under test (env GDN2_CLI overrides; `make asan` sets it to the sanitized build) */
static inline const char *cli_path(void) {
    const char *e = getenv("GDN2_CLI");
    return e && *e ? e : "build/gdn2";
}

/* 1 when s contains sub (0 when either is NULL: a missing message is not a match) */
static inline int contains(const char *s, const char *sub) { return s && sub && strstr(s, sub) != NULL; }

/* relative RMSE: rms(x - ref) / rms(ref) (ref all zero: rms(x)) */
static inline double rel_rmse_f32_f64(const float *x, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)x[i] - ref[i];
        num += e * e;
        den += ref[i] * ref[i];
    }
    if (den == 0) return sqrt(num / (n ? n : 1));
    return sqrt(num / den);
}
static inline double rel_rmse_f32(const float *x, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)x[i] - (double)ref[i];
        num += e * e;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0) return sqrt(num / (n ? n : 1));
    return sqrt(num / den);
}
static inline int all_finite_f32(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}


/* 1 when the command-line tool `name` is on PATH. Without it, the check `what` it would do is a FAIL
 * under CI (env CI=true: .ci/run installs the tool) and a SKIP elsewhere; returns 0. */
static inline int need_tool(const char *name, const char *what) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    if (system(cmd) == 0) return 1;
    const char *ci = getenv("CI");
    if (ci && !strcmp(ci, "true")) CHECK(0, "%s not installed (CI=true; .ci/run installs it), so not checked: %s", name, what);
    else SKIP("%s not installed, so not checked: %s", name, what);
    return 0;
}

/* deterministic RNG for tests (the library's splitmix64, src/util/rng.h, + Box-Muller) */
static inline unsigned long long test_rng_next(unsigned long long *s) {
    uint64_t t = *s, z = gdn2_splitmix64(&t);
    *s = t;
    return z;
}
static inline double test_uniform(unsigned long long *s) { return (test_rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }
static inline double test_normal(unsigned long long *s) {
    double u1 = test_uniform(s), u2 = test_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
