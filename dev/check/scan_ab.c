/* A/B timing of the input-value scan (docs/ALGORITHM.md §8): chunk fwd and bwd at
 * (B,T,H,K,V) = (1,4096,4,64,64), best of `reps` runs, built once against a library without the
 * scan (e.g. 0fc2150) and once against one with it, run alternately:
 *   gcc -O2 -fopenmp -I<tree>/include dev/check/scan_ab.c <tree>/build/libgdn2.a -lm -lopenblas -lcjson -o ab
 *   ./ab THREADS REPS      -> "fwd_ms bwd_ms"
 * Result: bench/results/cpu-value-scan.txt. Not built by the Makefile (a lab tool). */
#include <stdio.h>
#include <stdlib.h>
#include "gdn2.h"
double gdn2_now(void);
static unsigned long long st = 88172645463325252ull;
static double ur(void) { st ^= st << 13; st ^= st >> 7; st ^= st << 17; return (st >> 11) * (1.0 / 9007199254740992.0); }
int main(int argc, char **argv) {
    int64_t B = 1, T = 4096, H = 4, K = 64, V = 64, HV = 4;
    gdn2_dims d = {B, T, H, HV, K, V};
    gdn2_opts o = {0};
    o.n_threads = atoi(argv[1]);
    int reps = atoi(argv[2]);
    size_t nq = B * T * H * K, nv = B * T * HV * V, ns = B * HV * K * V;
    float *q = malloc(nq * 4), *k = malloc(nq * 4), *g = malloc(nq * 4), *b = malloc(nq * 4), *v = malloc(nv * 4), *w = malloc(nv * 4), *dO = malloc(nv * 4);
    for (size_t i = 0; i < nq; i++) { q[i] = ur() - .5; k[i] = (ur() - .5) * 0.25; g[i] = -0.05 - 0.1 * ur(); b[i] = 0.5 * ur(); }
    for (size_t i = 0; i < nv; i++) { v[i] = ur(); w[i] = ur(); dO[i] = ur(); }
    float *o_ = calloc(nv, 4), *ht = calloc(ns, 4);
    float *dq = calloc(nq, 4), *dk = calloc(nq, 4), *dg = calloc(nq, 4), *db = calloc(nq, 4), *dv = calloc(nv, 4), *dw = calloc(nv, 4), *dh0 = calloc(ns, 4);
    gdn2_fwd_tensors ft = {q, k, v, g, b, w, NULL, NULL, NULL, o_, ht};
    gdn2_bwd_tensors bt = {dO, NULL, dq, dk, dv, dg, db, dw, dh0, NULL, NULL};
    double bf = 1e9, bb = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = gdn2_now(); gdn2_chunk_fwd(&d, &o, &ft);
        double t1 = gdn2_now(); gdn2_chunk_bwd(&d, &o, &ft, &bt);
        double t2 = gdn2_now();
        if (t1 - t0 < bf) bf = t1 - t0; if (t2 - t1 < bb) bb = t2 - t1;
    }
    printf("%.2f %.2f\n", 1e3 * bf, 1e3 * bb);
    return 0;
}
