/* Accuracy cost of keeping the decode state in bf16 (half the bytes of fp32) over a long generation.
 *
 * Runs gdn2_decode_step for N steps on the same random token stream three ways: state in fp32, state
 * in bf16 (GDN2_STATE_BF16: widen, fp32 update, round to nearest even), and a float64 token-serial
 * recurrence written out below (the reference). Reports the relative RMSE of o against the float64
 * run over step windows, and of the final state. Two gate regimes: the official layer's
 * initialisation (A_log = log U(1,16), dt in [1e-3, 1e-1], gate input ~ N(0,1)) and a weak-decay one
 * (A_log = log 0.1, dt_bias = -6: per-token decay ~0.9998, the long-memory stress case).
 * Problem: 2 sequences x 4 heads, K = V = 128, q/k L2-normalised in the step, b, w = sigmoid(N(0,1)).
 *
 * usage: decode_state [steps (default 10000)] [out.json]  -- a program, not a test; one thread. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gdn2.h"

#define NSEQ 2
#define H 4
#define K 128
#define V 128

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double unif(void) { /* xorshift64*, (0,1) */
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return ((rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0) + 1e-17;
}
static double gauss(void) { return sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif()); }
static double sigm(double x) { return 1 / (1 + exp(-x)); }
static double softplus(double x) { return x > 20 ? x : log1p(exp(x)); }

/* float64 decode step for one (sequence, head), same math as gdn2_decode_step:
 * S <- Diag(exp g) S;  S <- S - k (b.k)^T S + k (w.v)^T;  o = scale S^T q  (q, k L2-normalised) */
static void step64(double *S, const float *q, const float *k, const float *g, const float *b, const float *v,
                   const float *w, double scale, double *o) {
    double qn[K], kn[K], sq = 0, sk = 0, r[V];
    for (int d = 0; d < K; d++) sq += (double)q[d] * q[d], sk += (double)k[d] * k[d];
    for (int d = 0; d < K; d++) qn[d] = q[d] / sqrt(sq + 1e-6), kn[d] = k[d] / sqrt(sk + 1e-6);
    for (int e = 0; e < V; e++) r[e] = 0;
    for (int d = 0; d < K; d++) {
        const double a = exp((double)g[d]), bk = b[d] * kn[d];
        for (int e = 0; e < V; e++) S[d * V + e] *= a, r[e] += bk * S[d * V + e];
    }
    for (int e = 0; e < V; e++) o[e] = 0, r[e] = (double)w[e] * v[e] - r[e];
    for (int d = 0; d < K; d++)
        for (int e = 0; e < V; e++) S[d * V + e] += kn[d] * r[e], o[e] += qn[d] * S[d * V + e];
    for (int e = 0; e < V; e++) o[e] *= scale;
}

static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct { double o32[4], o16[4], s32, s16; } result; /* o windows: steps 1-100, 1-1k, the last 10%, all */

static result run(int steps, int weak) {
    const int NK = NSEQ * H * K, NV = NSEQ * H * V, NS = NSEQ * H * K * V;
    float *q = malloc(NK * 4), *k = malloc(NK * 4), *g = malloc(NK * 4), *b = malloc(NK * 4);
    float *v = malloc(NV * 4), *w = malloc(NV * 4), *o32 = malloc(NV * 4), *o16 = malloc(NV * 4);
    float *S32 = calloc(NS, 4), A_log[H], dt_bias[H * K];
    uint16_t *S16 = calloc(NS, 2);
    double *S64 = calloc(NS, 8), o64[V];
    for (int h = 0; h < H; h++) {
        A_log[h] = weak ? (float)log(0.1) : (float)log(1 + 15 * unif());
        for (int d = 0; d < K; d++) {
            double dt = exp(log(1e-3) + unif() * (log(1e-1) - log(1e-3)));
            dt_bias[h * K + d] = weak ? -6.0f : (float)(dt + log(-expm1(-dt)));
        }
    }
    int32_t slots[NSEQ] = {0, 1};
    gdn2_dims dims = {NSEQ, 1, H, H, K, V};
    gdn2_opts opts = {.qk_l2norm = 1, .gate_in_kernel = 1, .n_threads = 1};
    gdn2_decode_tensors t32 = {q, k, v, g, b, w, A_log, dt_bias, o32, S32, NSEQ, slots, GDN2_STATE_F32};
    gdn2_decode_tensors t16 = t32;
    t16.o = o16;
    t16.state_pool = S16;
    t16.state_dtype = GDN2_STATE_BF16;
    const int ends[4] = {100 < steps ? 100 : steps, 1000 < steps ? 1000 : steps, steps - steps / 10, steps};
    double num32[4] = {0}, num16[4] = {0}, den[4] = {0};
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < NK; i++) q[i] = gauss(), k[i] = gauss(), g[i] = gauss(), b[i] = sigm(gauss());
        for (int i = 0; i < NV; i++) v[i] = gauss(), w[i] = sigm(gauss());
        if (gdn2_decode_step(&dims, &opts, &t32) || gdn2_decode_step(&dims, &opts, &t16)) {
            fprintf(stderr, "decode_state: %s\n", gdn2_last_error());
            exit(1);
        }
        for (int n = 0; n < NSEQ; n++)
            for (int h = 0; h < H; h++) {
                const int ik = (n * H + h) * K, iv = (n * H + h) * V;
                float gg[K];
                for (int d = 0; d < K; d++) /* the in-kernel gate, in double */
                    gg[d] = (float)(-exp((double)A_log[h]) * softplus((double)g[ik + d] + dt_bias[h * K + d]));
                step64(S64 + (size_t)(n * H + h) * K * V, q + ik, k + ik, gg, b + ik, v + iv, w + iv, 1 / sqrt(K), o64);
                for (int e = 0; e < V; e++) {
                    const double d32 = o32[iv + e] - o64[e], d16 = o16[iv + e] - o64[e], r = o64[e] * o64[e];
                    num32[3] += d32 * d32, num16[3] += d16 * d16, den[3] += r;
                    if (s < ends[0]) num32[0] += d32 * d32, num16[0] += d16 * d16, den[0] += r;
                    if (s < ends[1]) num32[1] += d32 * d32, num16[1] += d16 * d16, den[1] += r;
                    if (s >= ends[2]) num32[2] += d32 * d32, num16[2] += d16 * d16, den[2] += r;
                }
            }
    }
    result res;
    for (int wi = 0; wi < 4; wi++) res.o32[wi] = sqrt(num32[wi] / den[wi]), res.o16[wi] = sqrt(num16[wi] / den[wi]);
    double a32 = 0, a16 = 0, ref = 0;
    for (int i = 0; i < NS; i++) {
        a32 += (S32[i] - S64[i]) * (S32[i] - S64[i]);
        a16 += (from_bf16(S16[i]) - S64[i]) * (from_bf16(S16[i]) - S64[i]);
        ref += S64[i] * S64[i];
    }
    res.s32 = sqrt(a32 / ref), res.s16 = sqrt(a16 / ref);
    free(q); free(k); free(g); free(b); free(v); free(w); free(o32); free(o16); free(S32); free(S16); free(S64);
    return res;
}

int main(int argc, char **argv) {
    const int steps = argc > 1 ? atoi(argv[1]) : 10000;
    const char *json = argc > 2 ? argv[2] : NULL;
    if (steps < 100) {
        fprintf(stderr, "decode_state: steps=%d, expected >= 100\n", steps);
        return 2;
    }
    const char *names[2] = {"official init", "weak decay (~0.9998/token)"};
    result r[2];
    printf("decode state precision: %d steps, %d sequences x %d heads, K=V=%d, o and state vs a float64 run\n", steps,
           NSEQ, H, K);
    printf("%-28s %-6s %12s %12s %12s %12s %12s\n", "gates", "state", "o 1-100", "o 1-1k", "o last 10%", "o all",
           "final state");
    for (int m = 0; m < 2; m++) {
        const clock_t t0 = clock();
        r[m] = run(steps, m);
        printf("%-28s %-6s %12.2e %12.2e %12.2e %12.2e %12.2e\n", names[m], "fp32", r[m].o32[0], r[m].o32[1], r[m].o32[2],
               r[m].o32[3], r[m].s32);
        printf("%-28s %-6s %12.2e %12.2e %12.2e %12.2e %12.2e   (%.0f s)\n", names[m], "bf16", r[m].o16[0], r[m].o16[1],
               r[m].o16[2], r[m].o16[3], r[m].s16, (double)(clock() - t0) / CLOCKS_PER_SEC);
    }
    if (json) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", json);
        FILE *f = fopen(tmp, "w");
        if (!f) {
            fprintf(stderr, "decode_state: cannot write %s\n", tmp);
            return 1;
        }
        fprintf(f, "{\"steps\": %d, \"shape\": [%d, %d, %d, %d], \"rows\": [\n", steps, NSEQ, H, K, V);
        for (int m = 0; m < 2; m++)
            for (int sb = 0; sb < 2; sb++) {
                const double *o = sb ? r[m].o16 : r[m].o32;
                fprintf(f, "  {\"gates\": \"%s\", \"state\": \"%s\", \"o_rel_rmse\": {\"1-100\": %.3e, \"1-1k\": %.3e, \"last10pct\": %.3e, "
                           "\"all\": %.3e}, \"state_rel_rmse_final\": %.3e}%s\n",
                        names[m], sb ? "bf16" : "fp32", o[0], o[1], o[2], o[3], sb ? r[m].s16 : r[m].s32, m == 1 && sb ? "" : ",");
            }
        fprintf(f, "]}\n");
        if (fclose(f) || rename(tmp, json)) {
            fprintf(stderr, "decode_state: cannot write %s\n", json);
            return 1;
        }
    }
    return 0;
}
