/* CPU benchmark of the speculative verify (gdn2_decode_verify): one call of T tokens per sequence
 * with every per-token state written to its own pool slot (snap_slots), against T single decode
 * steps (gdn2_decode_step, in place) on the same tokens, and against T steps each followed by a copy
 * of the new states into that token's snapshot slots (rollback without snap_slots). The in-place
 * verify (snap_slots NULL, no rollback) is timed too. H = HV = 16, K = V = 128, q/k L2-normalised,
 * fp32 pool, N sequences, T in {2, 4, 8}.
 *
 *   build/bench/verify [--reps N] [--threads N] [--n LIST] [--t LIST]   (LIST e.g. 1,16,64)
 *
 * Validation before any timing (exit 1 on a failure): at every (N, T) the verify's o and every
 * snapshot bit-identical to T decode steps on a copy of the pool, and its o and last snapshot
 * against the fp32 whole-sequence recurrence (gdn2_recurrent_fwd from the same states, rel RMSE
 * <= 1e-5); the source slots unchanged. Timing: best of --reps (default 5) repetitions of each; the
 * load average before and after is printed (the machine may be shared). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gdn2.h"
#include "common.h"

enum { H = 16, K = 128, V = 128 };
#define SS ((int64_t)H * K * V)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static void loadavg(char *s, size_t n) {
    FILE *f = fopen("/proc/loadavg", "r");
    s[0] = 0;
    if (f) {
        if (!fgets(s, (int)n, f)) s[0] = 0;
        fclose(f);
    }
    s[strcspn(s, "\n")] = 0;
}
static int parse_list(const char *s, int64_t *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = strtoll(s, (char **)&s, 10);
        if (*s == ',') s++;
        else break;
    }
    return n;
}
static void fail(const char *what) {
    fprintf(stderr, "bench/verify: %s: %s: nothing timed\n", what, gdn2_last_error());
    exit(1);
}

/* One (N, T): inputs [N,T,...], a pool of N*(T+1) slots: sequence i's source is slot i*(T+1) + T/2
 * (mid-block: not slot i), its snapshots the other T of its block. */
typedef struct {
    int64_t N, T, nslot;
    float *q, *k, *v, *g, *b, *w, *pool;
    int32_t *src, *snap;
} problem;

static void problem_make(problem *p, int64_t N, int64_t T) {
    p->N = N, p->T = T, p->nslot = N * (T + 1);
    const size_t nk = (size_t)(N * T * H * K), nv = (size_t)(N * T * H * V);
    p->q = buf(nk, -1, 1), p->k = buf(nk, -1, 1), p->g = buf(nk, -0.5f, -0.01f), p->b = buf(nk, 0, 1);
    p->v = buf(nv, -1, 1), p->w = buf(nv, 0, 1);
    p->pool = buf((size_t)(p->nslot * SS), -0.1f, 0.1f);
    p->src = malloc((size_t)N * 4), p->snap = malloc((size_t)(N * T) * 4);
    for (int64_t i = 0; i < N; i++) {
        const int64_t base = i * (T + 1), mid = T / 2;
        p->src[i] = (int32_t)(base + mid);
        for (int64_t j = 0, m = 0; j <= T; j++)
            if (j != mid) p->snap[i * T + m++] = (int32_t)(base + j);
    }
}
static void problem_free(problem *p) {
    free(p->q); free(p->k); free(p->v); free(p->g); free(p->b); free(p->w); free(p->pool); free(p->src); free(p->snap);
}
/* token j of every sequence as a [N,1,...] batch (copied out of the [N,T,...] inputs) */
static void token(const problem *p, int64_t j, float *q, float *k, float *g, float *b, float *v, float *w) {
    for (int64_t i = 0; i < p->N; i++) {
        const size_t fk = (size_t)((i * p->T + j) * H * K), fv = (size_t)((i * p->T + j) * H * V);
        memcpy(q + i * H * K, p->q + fk, H * K * 4); memcpy(k + i * H * K, p->k + fk, H * K * 4);
        memcpy(g + i * H * K, p->g + fk, H * K * 4); memcpy(b + i * H * K, p->b + fk, H * K * 4);
        memcpy(v + i * H * V, p->v + fv, H * V * 4); memcpy(w + i * H * V, p->w + fv, H * V * 4);
    }
}

int main(int argc, char **argv) {
    bench_rng = 7; /* the stream of the committed results (bench/results/cpu-spec-verify.md) */
    int reps = 5, threads = 0;
    int64_t Ns[8] = {1, 16, 64}, Ts[8] = {2, 4, 8};
    int nN = 3, nT = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--n") && i + 1 < argc) nN = parse_list(argv[++i], Ns, 8);
        else if (!strcmp(argv[i], "--t") && i + 1 < argc) nT = parse_list(argv[++i], Ts, 8);
        else {
            fprintf(stderr, "usage: %s [--reps N] [--threads N] [--n LIST] [--t LIST]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    gdn2_opts o;
    memset(&o, 0, sizeof o);
    o.qk_l2norm = 1;
    o.n_threads = threads;
    char la0[128], la1[128];
    loadavg(la0, sizeof la0);
    printf("bench/verify: H=%d K=%d V=%d fp32 pool, q/k l2norm, threads %d (0 = OpenMP default), best of %d; loadavg before: %s\n",
           H, K, V, threads, reps, la0);

    /* ---- validation of every (N, T) first ---- */
    for (int a = 0; a < nN; a++)
        for (int c = 0; c < nT; c++) {
            problem p;
            problem_make(&p, Ns[a], Ts[c]);
            const int64_t N = p.N, T = p.T;
            const size_t ps = (size_t)(p.nslot * SS), nv = (size_t)(N * T * H * V);
            float *p0 = malloc(ps * 4), *p1 = malloc(ps * 4), *ov = buf(nv, 0, 0);
            if (!p0 || !p1) fail("out of memory");
            memcpy(p0, p.pool, ps * 4);
            memcpy(p1, p.pool, ps * 4);
            gdn2_dims d = {N, T, H, H, K, V};
            gdn2_decode_tensors t = {p.q, p.k, p.v, p.g, p.b, p.w, NULL, NULL, ov, p.pool, p.nslot, p.src, GDN2_STATE_F32};
            if (gdn2_decode_verify(&d, &o, &t, p.snap)) fail("verify");
            /* T decode steps on p1 */
            float *q = buf(N * H * K, 0, 0), *k = buf(N * H * K, 0, 0), *g = buf(N * H * K, 0, 0), *b = buf(N * H * K, 0, 0);
            float *v = buf(N * H * V, 0, 0), *w = buf(N * H * V, 0, 0), *os = buf(N * H * V, 0, 0);
            gdn2_dims d1 = {N, 1, H, H, K, V};
            int same = 1;
            for (int64_t j = 0; j < T; j++) {
                token(&p, j, q, k, g, b, v, w);
                gdn2_decode_tensors t1 = {q, k, v, g, b, w, NULL, NULL, os, p1, p.nslot, p.src, GDN2_STATE_F32};
                if (gdn2_decode_step(&d1, &o, &t1)) fail("decode step");
                for (int64_t i = 0; i < N; i++)
                    same &= !memcmp(os + i * H * V, ov + (i * T + j) * H * V, H * V * 4) &&
                            !memcmp(p1 + (size_t)p.src[i] * SS, p.pool + (size_t)p.snap[i * T + j] * SS, SS * 4);
            }
            /* the fp32 recurrence from the same states */
            float *h0 = buf((size_t)(N * SS), 0, 0), *ht = buf((size_t)(N * SS), 0, 0), *orr = buf(nv, 0, 0);
            float *last = buf((size_t)(N * SS), 0, 0);
            int src_same = 1;
            for (int64_t i = 0; i < N; i++) {
                memcpy(h0 + i * SS, p0 + (size_t)p.src[i] * SS, SS * 4);
                memcpy(last + i * SS, p.pool + (size_t)p.snap[i * T + T - 1] * SS, SS * 4);
                src_same &= !memcmp(p0 + (size_t)p.src[i] * SS, p.pool + (size_t)p.src[i] * SS, SS * 4);
            }
            gdn2_fwd_tensors tr = {p.q, p.k, p.v, p.g, p.b, p.w, h0, NULL, NULL, orr, ht};
            if (gdn2_recurrent_fwd(&d, &o, &tr)) fail("recurrent");
            const double eo = rel_rmse(ov, orr, nv), es = rel_rmse(last, ht, (size_t)(N * SS));
            const int ok = same && src_same && eo <= 1e-5 && es <= 1e-5;
            printf("  validate N=%-3lld T=%lld: vs %lld decode steps %s; vs recurrence o %.2e, last snapshot %.2e (bar 1e-5); "
                   "sources %s %s\n", (long long)N, (long long)T, (long long)T, same ? "bit-identical" : "DIFFER", eo, es,
                   src_same ? "unchanged" : "CHANGED", ok ? "ok" : "FAILED");
            if (!ok) {
                fprintf(stderr, "bench/verify: validation failed: nothing timed\n");
                return 1;
            }
            free(p0); free(p1); free(ov); free(q); free(k); free(g); free(b); free(v); free(w); free(os);
            free(h0); free(ht); free(orr); free(last);
            problem_free(&p);
        }

    /* ---- timing ---- */
    printf("\n| N | T | verify ms (1 call, snapshots to slots) | verify in place ms | T steps ms | T steps + state copies ms | "
           "steps / verify | steps+copies / verify |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (int a = 0; a < nN; a++)
        for (int c = 0; c < nT; c++) {
            problem p;
            problem_make(&p, Ns[a], Ts[c]);
            const int64_t N = p.N, T = p.T;
            float *ov = buf((size_t)(N * T * H * V), 0, 0);
            gdn2_dims d = {N, T, H, H, K, V}, d1 = {N, 1, H, H, K, V};
            gdn2_decode_tensors t = {p.q, p.k, p.v, p.g, p.b, p.w, NULL, NULL, ov, p.pool, p.nslot, p.src, GDN2_STATE_F32};
            /* the T single steps read token j's rows from contiguous [N,1,...] batches, prepared untimed */
            float **tok = malloc((size_t)T * 7 * sizeof(float *));
            for (int64_t j = 0; j < T; j++) {
                for (int e = 0; e < 4; e++) tok[j * 7 + e] = buf(N * H * K, 0, 0);
                for (int e = 4; e < 7; e++) tok[j * 7 + e] = buf(N * H * V, 0, 0);
                token(&p, j, tok[j * 7], tok[j * 7 + 1], tok[j * 7 + 2], tok[j * 7 + 3], tok[j * 7 + 4], tok[j * 7 + 5]);
            }
            double best[4] = {1e30, 1e30, 1e30, 1e30};
            for (int r = 0; r < reps + 1; r++) { /* the first repetition warms up */
                double t0 = now();
                if (gdn2_decode_verify(&d, &o, &t, p.snap)) fail("verify");
                double t1 = now();
                if (gdn2_decode_verify(&d, &o, &t, NULL)) fail("verify in place");
                double t2 = now();
                for (int64_t j = 0; j < T; j++) {
                    float **x = tok + j * 7;
                    gdn2_decode_tensors t1s = {x[0], x[1], x[4], x[2], x[3], x[5], NULL, NULL, x[6], p.pool, p.nslot, p.src,
                                               GDN2_STATE_F32};
                    if (gdn2_decode_step(&d1, &o, &t1s)) fail("decode step");
                }
                double t3 = now();
                /* what a caller does for rollback without snap_slots: each step, then a copy of the
                 * new state into that token's snapshot slot */
                for (int64_t j = 0; j < T; j++) {
                    float **x = tok + j * 7;
                    gdn2_decode_tensors t1s = {x[0], x[1], x[4], x[2], x[3], x[5], NULL, NULL, x[6], p.pool, p.nslot, p.src,
                                               GDN2_STATE_F32};
                    if (gdn2_decode_step(&d1, &o, &t1s)) fail("decode step");
                    for (int64_t i = 0; i < N; i++)
                        memcpy(p.pool + (size_t)p.snap[i * T + j] * SS, p.pool + (size_t)p.src[i] * SS, SS * 4);
                }
                double t4 = now();
                if (r) {
                    if (t4 - t3 < best[3]) best[3] = t4 - t3;
                    if (t1 - t0 < best[0]) best[0] = t1 - t0;
                    if (t2 - t1 < best[1]) best[1] = t2 - t1;
                    if (t3 - t2 < best[2]) best[2] = t3 - t2;
                }
            }
            printf("| %lld | %lld | %.3f | %.3f | %.3f | %.3f | %.2fx | %.2fx |\n", (long long)N, (long long)T, best[0] * 1e3,
                   best[1] * 1e3, best[2] * 1e3, best[3] * 1e3, best[2] / best[0], best[3] / best[0]);
            fflush(stdout);
            for (int64_t j = 0; j < T * 7; j++) free(tok[j]);
            free(tok);
            free(ov);
            problem_free(&p);
        }
    loadavg(la1, sizeof la1);
    printf("loadavg after: %s\n", la1);
    return 0;
}
