/* Profiling driver for the CPU chunk kernels (lab notebook; not built by make).
 *   cc -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -fopenmp -Iinclude -Isrc dev/cpu/prof.c build/libgdn2.a \
 *      -lopenblas -lcjson -lm -o build/prof
 *   build/prof fwd|bwd|both|kda|saved B T H K V reps threads
 * (saved: gdn2_chunk_fwd_save and gdn2_chunk_bwd_saved, timed apart, after the plain forward)
 * Prints the best wall ms and the CPU ms of that rep, and the single-thread 64^3 / 64x128x64 sgemm
 * rates (the block sizes of the K=V=64 shape) measured in the same run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cblas.h>
#include "gdn2.h"
#include "util/internal.h"

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static double cpu(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static unsigned long long rng = 42;
static float *buf(size_t n, float lo, float hi) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { rng = rng * 6364136223846793005ULL + 1442695040888963407ULL; x[i] = lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0)); }
    return x;
}
static double blk(int M, int N, int K) {
    float *A = buf((size_t)M * K, -1, 1), *B = buf((size_t)K * N, -1, 1), *C = buf((size_t)M * N, 0, 0);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = cpu();
        for (int i = 0; i < 2000; i++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        double dt = (cpu() - t0) / 2000;
        if (dt < best) best = dt;
    }
    free(A); free(B); free(C);
    return 2.0 * M * N * K / best * 1e-9;
}
int main(int argc, char **argv) {
    if (argc < 9) { fprintf(stderr, "usage: prof fwd|bwd|both|kda|saved B T H K V reps threads\n"); return 2; }
    const char *mode = argv[1];
    int64_t B = atoll(argv[2]), T = atoll(argv[3]), H = atoll(argv[4]), K = atoll(argv[5]), V = atoll(argv[6]);
    int reps = atoi(argv[7]), th = atoi(argv[8]);
    openblas_set_num_threads(1);
    if (!getenv("NOBLK")) printf("sgemm 1 thread per CPU-s: 64x64x64 %.1f  64x128x64 %.1f  64x128x128 %.1f  256x256x256 %.1f GFLOP/s\n",
           blk(64, 64, 64), blk(64, 128, 64), blk(64, 128, 128), blk(256, 256, 256));
    gdn2_dims d = {B, T, H, H, K, V};
    gdn2_opts o = {0};
    o.qk_l2norm = 1;
    o.n_threads = th;
    o.trust_values = getenv("TRUST") != NULL; /* A/B of the value scan's cost */
    size_t nq = B * T * H * K, nv = B * T * H * V;
    float *q = buf(nq, -1, 1), *k = buf(nq, -1, 1), *v = buf(nv, -1, 1), *g = buf(nq, -0.5f, -0.001f);
    float *b = buf(nq, 0, 1), *w = buf(nv, 0, 1), *out = buf(nv, 0, 0), *dO = buf(nv, -1, 1), *beta = buf(B * T * H, 0, 1);
    float *dq = buf(nq, 0, 0), *dk = buf(nq, 0, 0), *dv = buf(nv, 0, 0), *dg = buf(nq, 0, 0), *dbb = buf(nq, 0, 0), *dw = buf(nv, 0, 0);
    gdn2_fwd_tensors t = {q, k, v, g, b, w, NULL, NULL, NULL, out, NULL};
    gdn2_bwd_tensors gt = {dO, NULL, dq, dk, dv, dg, dbb, dw, NULL, NULL, NULL};
    size_t wsz = gdn2_chunk_workspace_size(&d, &o, 1);
    o.workspace = malloc(wsz);
    o.workspace_size = wsz;
    const size_t ssz = !strcmp(mode, "saved") ? gdn2_chunk_saved_size(&d, &o) : 0;
    void *sv = ssz ? malloc(ssz) : NULL;
    double F = (2.0 * 64 * (3.0 * K + 2.0 * V) + 6.0 * K * V) * (double)(B * T * H);
    for (int pass = 0; pass < 3; pass++) {
        const char *m = pass == 0 ? "fwd" : !strcmp(mode, "saved") ? (pass == 1 ? "fsave" : "bsaved") : mode;
        if (pass == 1 && !strcmp(mode, "fwd")) break;
        if (pass == 2 && strcmp(mode, "saved")) break;
        double best = 1e30, bc = 0;
        for (int r = 0; r < reps; r++) {
            double t0 = now(), c0 = cpu();
            int rc = 0;
            if (!strcmp(m, "fwd")) rc = gdn2_chunk_fwd(&d, &o, &t);
            else if (!strcmp(m, "bwd")) rc = gdn2_chunk_bwd(&d, &o, &t, &gt);
            else if (!strcmp(m, "kda")) rc = gdn2_kda_chunk_fwd(&d, &o, &t, beta);
            else if (!strcmp(m, "fsave")) rc = gdn2_chunk_fwd_save(&d, &o, &t, sv, ssz);
            else if (!strcmp(m, "bsaved")) rc = gdn2_chunk_bwd_saved(&d, &o, &t, &gt, sv, ssz);
            if (rc) { fprintf(stderr, "%s\n", gdn2_last_error()); return 1; }
            double dt = now() - t0;
            if (dt < best) best = dt, bc = cpu() - c0;
        }
        printf("%-4s (%lld,%lld,%lld,%lld,%lld) best %.2f ms wall, %.2f ms cpu (%.2f cores), %.1f GFLOP/s per CPU-s (fwd-nominal x%d)\n",
               m, (long long)B, (long long)T, (long long)H, (long long)K, (long long)V, best * 1e3, bc * 1e3, bc / best,
               (!strcmp(m, "bwd") ? 2 : 1) * F / bc * 1e-9, !strcmp(m, "bwd") ? 2 : 1);
    }
    return 0;
}
