/* Where one NaN in q spreads in the chunk backward vs the float64 reference (docs/ALGORITHM.md
 * §8). Needs a library whose entry points do not scan their inputs (before the scan: 0fc2150):
 *   gcc -O2 -fopenmp -I<tree>/include dev/check/nan_spread.c <tree>/build/libgdn2.a -lm -lopenblas -lcjson -o ns
 *   ./ns T t_nan     (B = 2, H = HV = 2, K = V = 16; the NaN at q[0, t_nan, 0, 3])
 * Prints, per output and (sequence, head), the NaN counts before / at / after t_nan for the chunk
 * backward and the reference, and whether the elements outside (sequence 0, head 0, tokens up to
 * the end of t_nan's chunk) are bit-identical to a run without the NaN. Not built by the Makefile. */
/* NaN in one q element: where do NaNs appear in the chunk bwd vs the f64 reference? */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gdn2.h"
static unsigned long long st = 88172645463325252ull;
static double ur(void) { st ^= st << 13; st ^= st >> 7; st ^= st << 17; return (st >> 11) * (1.0 / 9007199254740992.0); }
static double nr(void) { double u = ur() + 1e-12, v = ur(); return sqrt(-2 * log(u)) * cos(6.283185307 * v); }
int main(int argc, char **argv) {
    int64_t B = 2, T = argc > 1 ? atoi(argv[1]) : 200, H = 2, HV = 2, K = 16, V = 16;
    int64_t tn = argc > 2 ? atoi(argv[2]) : 70, cn = 3; /* NaN at q[b=0, t=tn, h=0, c=cn] */
    gdn2_dims d = {B, T, H, HV, K, V};
    gdn2_opts o = {0};
    o.n_threads = 1;
    size_t nq = B * T * H * K, nv = B * T * HV * V, ns = B * HV * K * V;
    float *q = malloc(nq * 4), *k = malloc(nq * 4), *g = malloc(nq * 4), *b = malloc(nq * 4), *v = malloc(nv * 4), *w = malloc(nv * 4), *dO = malloc(nv * 4);
    for (size_t i = 0; i < nq; i++) { q[i] = nr() * 0.25; k[i] = nr() * 0.25; g[i] = -0.05 - 0.1 * ur(); b[i] = 0.5 * ur(); }
    for (size_t i = 0; i < nv; i++) { v[i] = nr(); w[i] = ur(); dO[i] = nr(); }
    float *o_ = calloc(nv, 4), *ht = calloc(ns, 4);
    float *c_dk = calloc(nq, 4), *c_dg = calloc(nq, 4), *c_db = calloc(nq, 4), *c_dq = calloc(nq, 4), *c_dv = calloc(nv, 4), *c_dw = calloc(nv, 4), *c_dh0 = calloc(ns, 4);
    {
        gdn2_fwd_tensors ft = {q, k, v, g, b, w, NULL, NULL, NULL, o_, ht};
        gdn2_bwd_tensors bt = {dO, NULL, c_dq, c_dk, c_dv, c_dg, c_db, c_dw, c_dh0, NULL, NULL};
        gdn2_chunk_bwd(&d, &o, &ft, &bt);
    }
    q[((0 * T + tn) * H + 0) * K + cn] = NAN;
    float *dq = calloc(nq, 4), *dk = calloc(nq, 4), *dg = calloc(nq, 4), *db = calloc(nq, 4), *dv = calloc(nv, 4), *dw = calloc(nv, 4), *dh0 = calloc(ns, 4);
    gdn2_fwd_tensors ft = {q, k, v, g, b, w, NULL, NULL, NULL, o_, ht};
    gdn2_bwd_tensors bt = {dO, NULL, dq, dk, dv, dg, db, dw, dh0, NULL, NULL};
    int rc = gdn2_chunk_bwd(&d, &o, &ft, &bt);
    printf("chunk_bwd rc=%d %s\n", rc, gdn2_last_error());
    /* f64 reference */
    double *Q = malloc(nq * 8), *Kd = malloc(nq * 8), *G = malloc(nq * 8), *Bd = malloc(nq * 8), *Vd = malloc(nv * 8), *W = malloc(nv * 8), *DO = malloc(nv * 8);
    for (size_t i = 0; i < nq; i++) Q[i] = q[i], Kd[i] = k[i], G[i] = g[i], Bd[i] = b[i];
    for (size_t i = 0; i < nv; i++) Vd[i] = v[i], W[i] = w[i], DO[i] = dO[i];
    double *O = calloc(nv, 8), *HT = calloc(ns, 8), *DQ = calloc(nq, 8), *DK = calloc(nq, 8), *DG = calloc(nq, 8), *DB = calloc(nq, 8), *DV = calloc(nv, 8), *DW = calloc(nv, 8), *DH0 = calloc(ns, 8);
    gdn2_fwd_tensors_f64 fr = {Q, Kd, Vd, G, Bd, W, NULL, NULL, NULL, O, HT};
    gdn2_bwd_tensors_f64 br = {DO, NULL, DQ, DK, DV, DG, DB, DW, DH0, NULL, NULL};
    rc = gdn2_ref_bwd(&d, &o, &fr, &br);
    printf("ref_bwd rc=%d\n", rc);
    {
        const char *nm2[] = {"dq", "dk", "dg", "db", "dv", "dw"};
        float *a2[] = {dq, dk, dg, db, dv, dw}, *c2[] = {c_dq, c_dk, c_dg, c_db, c_dv, c_dw};
        int64_t cend = (tn / 64 + 1) * 64;
        for (int x = 0; x < 6; x++) {
            int64_t hd = x < 4 ? H : HV, dd = x < 4 ? K : V, diff = 0, nanother = 0;
            for (int64_t bb = 0; bb < B; bb++) for (int64_t t = 0; t < T; t++) for (int64_t h = 0; h < hd; h++) for (int64_t e = 0; e < dd; e++) {
                size_t i = ((bb * T + t) * hd + h) * dd + e;
                int affected = bb == 0 && h == 0 && t < cend; /* dq: only t itself matters, ignore */
                if (affected) continue;
                if (memcmp(&a2[x][i], &c2[x][i], 4)) diff++;
                if (isnan(a2[x][i])) nanother++;
            }
            printf("%s outside (b0,h0,t<%lld): %lld differ from the clean run, %lld NaN\n", nm2[x], (long long)cend, (long long)diff, (long long)nanother);
        }
    }
    const char *nm[] = {"dq", "dk", "dg", "db", "dv", "dw"};
    float *cf[] = {dq, dk, dg, db, dv, dw};
    double *rf[] = {DQ, DK, DG, DB, DV, DW};
    for (int x = 0; x < 6; x++) {
        int64_t hd = x < 4 ? H : HV, dd = x < 4 ? K : V;
        printf("%s: NaN count per (b,h) and token range  [chunk | ref]\n", nm[x]);
        for (int64_t bb = 0; bb < B; bb++)
            for (int64_t h = 0; h < hd; h++) {
                int64_t c[3] = {0}, r[3] = {0}; /* t < tn, t == tn, t > tn */
                int64_t cmin = T, cmax = -1, rmin = T, rmax = -1;
                for (int64_t t = 0; t < T; t++)
                    for (int64_t e = 0; e < dd; e++) {
                        size_t i = ((bb * T + t) * hd + h) * dd + e;
                        int reg = t < tn ? 0 : t == tn ? 1 : 2;
                        if (isnan(cf[x][i])) { c[reg]++; if (t < cmin) cmin = t; if (t > cmax) cmax = t; }
                        if (isnan(rf[x][i])) { r[reg]++; if (t < rmin) rmin = t; if (t > rmax) rmax = t; }
                    }
                printf("  b%lld h%lld: chunk %lld/%lld/%lld (t %lld..%lld) | ref %lld/%lld/%lld (t %lld..%lld)\n", (long long)bb, (long long)h,
                       (long long)c[0], (long long)c[1], (long long)c[2], (long long)cmin, (long long)cmax,
                       (long long)r[0], (long long)r[1], (long long)r[2], (long long)rmin, (long long)rmax);
            }
    }
    return 0;
}
