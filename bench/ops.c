/* CPU op benchmark: chunk fwd, chunk fwd+bwd, recurrent fwd and the decode step at two shapes,
 * with the machine's OpenBLAS sgemm rate measured in the same run as the ceiling.
 *
 *   build/bench/ops [--reps N] [--threads N] [--out DIR]     (default DIR bench/results)
 *
 * FLOP count (the nominal count of the GPU peer tables, for comparability): per token per head the
 * nominal forward is F_fwd = 2C(3K + 2V) + 6KV with C = 64; forward+backward counts 3·F_fwd. The
 * same nominal count is used for the recurrent forward and the decode step (their real work is
 * ~8KV per token-head), so every GFLOP/s column compares speed at equal nominal work.
 * Timing: best of N repetitions (the best is the least disturbed run); the load average before and
 * after the run is printed and written beside the figures, so a run on a busy machine shows as one.
 * Validation before timing (exit 1, nothing timed, on a failure): at each shape the chunk forward
 * against the fp32 token-serial recurrence, the chunk backward on the shape's first 192 tokens
 * against the float64 reference (BPTT), and the decode step against the recurrence's first token. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "gdn2.h"
#include "util/internal.h"
#include "common.h"

#ifdef GDN2_HAVE_BLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int64_t B, T, H, K, V;
} shape;

/* process CPU time (all threads): with the wall time of the same repetition it shows how much of
 * the machine the run actually got (the benchmark machine is shared) */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static double g_cpu; /* CPU seconds of the last best repetition */


static double rel_rmse64(const float *x, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)x[i] - ref[i];
        num += e * e, den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
static double *to64(const float *x, size_t n) {
    double *y = malloc((n ? n : 1) * sizeof(double));
    if (!y) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}
#define VALIDATE(what, err, bar)                                                                         \
    do {                                                                                                 \
        const double e_ = (err);                                                                         \
        printf("  validate %-44s rel_rmse %.2e (bar %.0e) %s\n", what, e_, (double)(bar), e_ <= (bar) ? "ok" : "FAILED"); \
        if (!(e_ <= (bar))) {                                                                            \
            fprintf(stderr, "bench/ops: %s is wrong (rel_rmse %.3e > %.0e): nothing timed\n", what, e_, (double)(bar)); \
            exit(1);                                                                                     \
        }                                                                                                \
    } while (0)

/* The outputs of the timed calls checked against independent references (see the header). */
static void validate_shape(const shape *s, const gdn2_opts *o0, const gdn2_fwd_tensors *t) {
    gdn2_dims d = {s->B, s->T, s->H, s->H, s->K, s->V};
    gdn2_opts o = *o0;
    const size_t nv = (size_t)(s->B * s->T * s->H * s->V);
    char what[96];
    /* 1. chunk forward vs the fp32 recurrence at the full shape */
    float *oc = buf(nv, 0, 0), *orr = buf(nv, 0, 0);
    gdn2_fwd_tensors tc = *t, tr = *t;
    tc.o = oc, tc.ht = NULL, tr.o = orr, tr.ht = NULL;
    if (gdn2_chunk_fwd(&d, &o, &tc) || gdn2_recurrent_fwd(&d, &o, &tr)) {
        fprintf(stderr, "bench/ops: validation call failed: %s\n", gdn2_last_error());
        exit(1);
    }
    snprintf(what, sizeof what, "chunk_fwd o vs recurrent (%lld,%lld,%lld,%lld,%lld)", (long long)s->B, (long long)s->T,
             (long long)s->H, (long long)s->K, (long long)s->V);
    VALIDATE(what, rel_rmse(oc, orr, nv), 1e-5);
    /* 2. decode: the first token of every sequence from a zero state = the recurrence's first token */
    {
        gdn2_dims dd = d;
        dd.T = 1;
        const size_t ns = (size_t)(s->B * s->H * s->K * s->V), rq = (size_t)(s->H * s->K), rv = (size_t)(s->H * s->V);
        float *pool = buf(ns, 0, 0), *od = buf((size_t)s->B * rv, 0, 0), *qs[6];
        int32_t *slots = malloc((size_t)s->B * sizeof(int32_t));
        const float *src[6] = {t->q, t->k, t->v, t->g, t->b, t->w};
        for (int j = 0; j < 6; j++) {
            const size_t r = (j == 2 || j == 5) ? rv : rq;
            qs[j] = buf((size_t)s->B * r, 0, 0);
            for (int64_t i = 0; i < s->B; i++) memcpy(qs[j] + i * r, src[j] + (size_t)(i * s->T) * r, r * sizeof(float));
        }
        float *ref1 = buf((size_t)s->B * rv, 0, 0);
        for (int64_t i = 0; i < s->B; i++) {
            slots[i] = (int32_t)i;
            memcpy(ref1 + i * rv, orr + (size_t)(i * s->T) * rv, rv * sizeof(float));
        }
        gdn2_decode_tensors dt = {qs[0], qs[1], qs[2], qs[3], qs[4], qs[5], NULL, NULL, od, pool, s->B, slots, GDN2_STATE_F32};
        if (gdn2_decode_step(&dd, &o, &dt)) {
            fprintf(stderr, "bench/ops: validation call failed: %s\n", gdn2_last_error());
            exit(1);
        }
        VALIDATE("decode_step o vs recurrent, first token", rel_rmse(od, ref1, (size_t)s->B * rv), 1e-5);
        for (int j = 0; j < 6; j++) free(qs[j]);
        free(pool), free(od), free(slots), free(ref1);
    }
    free(oc), free(orr);
    /* 3. chunk backward on the first Ts tokens of every sequence vs the float64 reference */
    const int64_t Ts = s->T < 192 ? s->T : 192;
    gdn2_dims ds = {s->B, Ts, s->H, s->H, s->K, s->V};
    const size_t mq = (size_t)(s->B * Ts * s->H * s->K), mv = (size_t)(s->B * Ts * s->H * s->V);
    float *in[6], *dO = buf(mv, -1, 1), *os = buf(mv, 0, 0), *gr[6];
    const float *src[6] = {t->q, t->k, t->v, t->g, t->b, t->w};
    for (int j = 0; j < 6; j++) {
        const size_t r = (j == 2 || j == 5) ? (size_t)(s->H * s->V) : (size_t)(s->H * s->K), n = (j == 2 || j == 5) ? mv : mq;
        in[j] = buf(n, 0, 0), gr[j] = buf(n, 0, 0);
        for (int64_t i = 0; i < s->B; i++)
            memcpy(in[j] + (size_t)(i * Ts) * r, src[j] + (size_t)(i * s->T) * r, (size_t)Ts * r * sizeof(float));
    }
    gdn2_opts os_ = o;
    os_.workspace = NULL, os_.workspace_size = 0;
    gdn2_fwd_tensors ts = {in[0], in[1], in[2], in[3], in[4], in[5], NULL, NULL, NULL, os, NULL};
    gdn2_bwd_tensors gs = {dO, NULL, gr[0], gr[1], gr[2], gr[3], gr[4], gr[5], NULL, NULL, NULL};
    double *in64[6], *gr64[6], *dO64 = to64(dO, mv), *o64 = calloc(mv, sizeof(double));
    for (int j = 0; j < 6; j++) {
        const size_t n = (j == 2 || j == 5) ? mv : mq;
        in64[j] = to64(in[j], n), gr64[j] = calloc(n, sizeof(double));
    }
    gdn2_fwd_tensors_f64 t64 = {in64[0], in64[1], in64[2], in64[3], in64[4], in64[5], NULL, NULL, NULL, o64, NULL};
    gdn2_bwd_tensors_f64 g64 = {dO64, NULL, gr64[0], gr64[1], gr64[2], gr64[3], gr64[4], gr64[5], NULL, NULL, NULL};
    if (gdn2_chunk_bwd(&ds, &os_, &ts, &gs) || gdn2_ref_bwd(&ds, &os_, &t64, &g64)) {
        fprintf(stderr, "bench/ops: validation call failed: %s\n", gdn2_last_error());
        exit(1);
    }
    static const char *gn[6] = {"dq", "dk", "dv", "dg", "db", "dw"};
    for (int j = 0; j < 6; j++) {
        const size_t n = (j == 2 || j == 5) ? mv : mq;
        snprintf(what, sizeof what, "chunk_bwd %s vs float64, first %lld tokens", gn[j], (long long)Ts);
        VALIDATE(what, rel_rmse64(gr[j], gr64[j], n), 1e-4);
    }
    /* the same through the saved forward (gdn2_chunk_fwd_save + gdn2_chunk_bwd_saved) */
    {
        const size_t ssz = gdn2_chunk_saved_size(&ds, &os_);
        void *sv = malloc(ssz ? ssz : 1);
        if (gdn2_chunk_fwd_save(&ds, &os_, &ts, sv, ssz) || gdn2_chunk_bwd_saved(&ds, &os_, &ts, &gs, sv, ssz)) {
            fprintf(stderr, "bench/ops: validation call failed: %s\n", gdn2_last_error());
            exit(1);
        }
        free(sv);
    }
    for (int j = 0; j < 6; j++) {
        const size_t n = (j == 2 || j == 5) ? mv : mq;
        snprintf(what, sizeof what, "chunk_bwd_saved %s vs float64, first %lld tokens", gn[j], (long long)Ts);
        VALIDATE(what, rel_rmse64(gr[j], gr64[j], n), 1e-4);
        free(in[j]), free(gr[j]), free(in64[j]), free(gr64[j]);
    }
    free(dO), free(os), free(dO64), free(o64);
}

static void loadavg(char *out, size_t n) {
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return;
    double a, b, c;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3) snprintf(out, n, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
}

static double nominal_fwd_flops(const shape *s) {
    const double C = GDN2_CHUNK;
    return (2.0 * C * (3.0 * s->K + 2.0 * s->V) + 6.0 * s->K * s->V) * (double)(s->B * s->T * s->H);
}

/* sgemm rate of an M x N x K product, `threads` OpenBLAS threads, best of reps */
static double sgemm_gflops(int M, int N, int K, int reps, int inner) {
    float *A = buf((size_t)M * K, -1, 1), *B = buf((size_t)K * N, -1, 1), *C = buf((size_t)M * N, 0, 0);
    double best = 1e30;
    gdn2_sgemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    for (int r = 0; r < reps; r++) {
        double t0 = gdn2_now(), c0 = cpu_now();
        for (int i = 0; i < inner; i++) gdn2_sgemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        double dt = (gdn2_now() - t0) / inner;
        if (dt < best) best = dt, g_cpu = (cpu_now() - c0) / inner;
    }
    free(A); free(B); free(C);
    return 2.0 * M * N * K / best * 1e-9;
}

/* aggregate rate of `nt` threads each running single-threaded M x N x K sgemms (the way the chunk
 * kernel uses them) */
static double sgemm_block_gflops(int M, int N, int K, int nt, int reps, int inner) {
    double best = 1e30;
#ifdef GDN2_HAVE_BLAS
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
#endif
    float *A = buf((size_t)nt * M * K, -1, 1), *B = buf((size_t)nt * K * N, -1, 1), *C = buf((size_t)nt * M * N, 0, 0);
    for (int r = 0; r < reps; r++) {
        double t0 = gdn2_now(), c0 = cpu_now();
#pragma omp parallel num_threads(nt)
        {
            int id = 0;
#ifdef _OPENMP
            id = omp_get_thread_num();
#endif
            for (int i = 0; i < inner; i++)
                gdn2_sgemm(0, 0, M, N, K, 1.0f, A + (size_t)id * M * K, K, B + (size_t)id * K * N, N, 0.0f,
                           C + (size_t)id * M * N, N);
        }
        double dt = (gdn2_now() - t0) / inner;
        if (dt < best) best = dt, g_cpu = (cpu_now() - c0) / inner;
    }
#ifdef GDN2_HAVE_BLAS
    openblas_set_num_threads(saved);
#endif
    free(A); free(B); free(C);
    return 2.0 * M * N * K * nt / best * 1e-9;
}

typedef struct {
    const char *op;
    shape s;
    double sec, tok_s, gflops;
    double cpu_sec, gflops_per_core; /* CPU seconds of the best repetition; flops / CPU second */
} result;

static result results[16];
static int n_results;

static void record(const char *op, const shape *s, double sec, double tokens, double flops) {
    result *r = &results[n_results++];
    r->op = op;
    r->s = *s;
    r->sec = sec;
    r->tok_s = tokens / sec;
    r->gflops = flops / sec * 1e-9;
    r->cpu_sec = g_cpu;
    r->gflops_per_core = flops / g_cpu * 1e-9;
    printf("%-16s (B,T,H,K,V)=(%lld,%lld,%lld,%lld,%lld)  %9.3f ms  %12.0f tok/s  %7.1f GFLOP/s (nominal)"
           "  [cpu %.3f ms, %.2f cores, %.1f GFLOP/s per core]\n", op,
           (long long)s->B, (long long)s->T, (long long)s->H, (long long)s->K, (long long)s->V, sec * 1e3,
           r->tok_s, r->gflops, g_cpu * 1e3, g_cpu / sec, r->gflops_per_core);
    fflush(stdout);
}

#define TIME_BEST(reps, best, stmt)                                                                  \
    do {                                                                                             \
        best = 1e30;                                                                                 \
        for (int r_ = 0; r_ < (reps); r_++) {                                                        \
            double t0_ = gdn2_now(), c0_ = cpu_now();                                                \
            int rc_ = (stmt);                                                                        \
            double dt_ = gdn2_now() - t0_;                                                           \
            if (rc_) {                                                                               \
                fprintf(stderr, "%s failed: %s\n", #stmt, gdn2_last_error());                      \
                exit(1);                                                                             \
            }                                                                                        \
            if (dt_ < best) best = dt_, g_cpu = cpu_now() - c0_;                                     \
        }                                                                                            \
    } while (0)

static void bench_shape(const shape *s, int reps, int threads) {
    gdn2_dims d = {s->B, s->T, s->H, s->H, s->K, s->V};
    gdn2_opts o = {0};
    o.qk_l2norm = 1; /* training style, as the GPU anchors */
    o.n_threads = threads;
    const size_t nq = (size_t)(s->B * s->T * s->H * s->K), nv = (size_t)(s->B * s->T * s->H * s->V);
    const size_t ns = (size_t)(s->B * s->H * s->K * s->V);
    float *q = buf(nq, -1, 1), *k = buf(nq, -1, 1), *v = buf(nv, -1, 1), *g = buf(nq, -0.5f, -0.001f);
    float *b = buf(nq, 0, 1), *w = buf(nv, 0, 1), *out = buf(nv, 0, 0), *ht = buf(ns, 0, 0), *dO = buf(nv, -1, 1);
    float *dq = buf(nq, 0, 0), *dk = buf(nq, 0, 0), *dv = buf(nv, 0, 0), *dg = buf(nq, 0, 0), *dbb = buf(nq, 0, 0);
    float *dw = buf(nv, 0, 0);
    gdn2_fwd_tensors t = {q, k, v, g, b, w, NULL, NULL, NULL, out, ht};
    gdn2_bwd_tensors gt = {dO, NULL, dq, dk, dv, dg, dbb, dw, NULL, NULL, NULL};
    const double F = nominal_fwd_flops(s), tokens = (double)(s->B * s->T);
    /* workspace allocated once, as a caller would */
    size_t wsz = gdn2_chunk_workspace_size(&d, &o, 1);
    void *ws = malloc(wsz);
    o.workspace = ws;
    o.workspace_size = wsz;
    validate_shape(s, &o, &t);
    double best;
    TIME_BEST(reps, best, gdn2_chunk_fwd(&d, &o, &t));
    record("chunk_fwd", s, best, tokens, F);
    TIME_BEST(reps, best, gdn2_chunk_fwd(&d, &o, &t) || gdn2_chunk_bwd(&d, &o, &t, &gt));
    record("chunk_fwd+bwd", s, best, tokens, 3 * F);
    /* the saved forward (reserve space allocated once, as the workspace) and the backward from it */
    {
        const size_t ssz = gdn2_chunk_saved_size(&d, &o);
        void *sv = malloc(ssz);
        TIME_BEST(reps, best, gdn2_chunk_fwd_save(&d, &o, &t, sv, ssz) || gdn2_chunk_bwd_saved(&d, &o, &t, &gt, sv, ssz));
        record("chunk_fwd_save+bwd_saved", s, best, tokens, 3 * F);
        free(sv);
    }
    o.workspace = NULL;
    o.workspace_size = 0;
    TIME_BEST(reps, best, gdn2_recurrent_fwd(&d, &o, &t));
    record("recurrent_fwd", s, best, tokens, F);
    /* decode: n = B sequences, one token each per step; step through T tokens once */
    {
        gdn2_dims dd = d;
        dd.T = 1;
        const int64_t steps = s->T < 256 ? s->T : 256;
        float *pool = buf(ns, -0.1f, 0.1f);
        int32_t *slots = malloc((size_t)s->B * sizeof(int32_t));
        for (int64_t i = 0; i < s->B; i++) slots[i] = (int32_t)i;
        const size_t rq = (size_t)(s->H * s->K), rv = (size_t)(s->H * s->V);
        double bs = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = gdn2_now(), c0 = cpu_now();
            for (int64_t st = 0; st < steps; st++) {
                /* step inputs [n,H,K] / [n,H,V]: consecutive slices of the prefill buffers */
                gdn2_decode_tensors dt = {q + st * s->B * rq % nq, k + st * s->B * rq % nq, v + st * s->B * rv % nv,
                                          g + st * s->B * rq % nq, b + st * s->B * rq % nq, w + st * s->B * rv % nv,
                                          NULL, NULL, out, pool, s->B, slots, GDN2_STATE_F32};
                if (gdn2_decode_step(&dd, &o, &dt)) {
                    fprintf(stderr, "decode failed: %s\n", gdn2_last_error());
                    exit(1);
                }
            }
            double dt = (gdn2_now() - t0) / steps;
            if (dt < bs) bs = dt, g_cpu = (cpu_now() - c0) / steps;
        }
        shape s1 = *s;
        s1.T = 1;
        record("decode_step", s, bs, (double)s->B, nominal_fwd_flops(&s1));
        free(pool); free(slots);
    }
    free(ws);
    free(q); free(k); free(v); free(g); free(b); free(w); free(out); free(ht); free(dO);
    free(dq); free(dk); free(dv); free(dg); free(dbb); free(dw);
}

int main(int argc, char **argv) {
    int reps = 5, threads = 0;
    const char *dir = "bench/results";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) dir = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--reps N] [--threads N] [--out DIR]\n", argv[0]);
            return 2;
        }
    }
    int nt = threads;
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_max_threads();
#else
    nt = 1;
#endif
    char commit[64], cpu[256];
    git_commit(commit, sizeof commit);
    cpu_model(cpu, sizeof cpu);
    const long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    char load0[64], load1[64];
    loadavg(load0, sizeof load0);
    printf("load average before: %s\n", load0);
    printf("machine: %s, nproc %ld, threads %d, gemm %s (kernels %s), commit %s, best of %d\n", cpu, nproc, nt,
           gdn2_gemm_backend(), blas_core(), commit, reps);
    if (!strcmp(blas_core(), "Prescott"))
        printf("warning: OpenBLAS runs its generic SSE3 (Prescott) kernels; if this CPU is newer than the OpenBLAS "
               "build, set OPENBLAS_CORETYPE (e.g. Cooperlake, SkylakeX, Haswell)\n");
    const double g1024 = sgemm_gflops(1024, 1024, 1024, reps, 3);
    const double g1024c = 2.0 * 1024 * 1024 * 1024 / g_cpu * 1e-9;
    const double gblk = sgemm_block_gflops(64, 128, 128, nt, reps, 2000);
    const double gblkc = 2.0 * 64 * 128 * 128 * nt / g_cpu * 1e-9;
    printf("sgemm 1024^3 (OpenBLAS threads)          %7.1f GFLOP/s  [%.1f GFLOP/s per core]\n", g1024, g1024c);
    printf("sgemm 64x128x128 blocks, %d x 1 thread    %7.1f GFLOP/s  [%.1f GFLOP/s per core]\n", nt, gblk, gblkc);

    const shape shapes[2] = {{1, 4096, 8, 128, 128}, {4, 1024, 4, 64, 64}};
    for (int i = 0; i < 2; i++) bench_shape(&shapes[i], reps, threads);
    loadavg(load1, sizeof load1);
    printf("load average after: %s\n", load1);

    /* bench/results/cpu-ops.{json,md} */
    char path[1024], *txt = malloc(1 << 16);
    size_t len = 0, cap = 1 << 16;
#define P(...) len += (size_t)snprintf(txt + len, cap - len, __VA_ARGS__)
    P("{\n  \"machine\": {\"cpu\": \"%s\", \"nproc\": %ld, \"threads\": %d, \"gemm\": \"%s\", \"blas_kernels\": \"%s\"},\n",
      cpu, nproc, nt, gdn2_gemm_backend(), blas_core());
    P("  \"commit\": \"%s\",\n  \"dtype\": \"fp32\",\n  \"timing\": \"best of %d repetitions\",\n", commit, reps);
    P("  \"loadavg_before\": \"%s\",\n  \"loadavg_after\": \"%s\",\n", load0, load1);
    P("  \"validated\": \"chunk fwd vs fp32 recurrence, decode vs recurrence, chunk bwd and bwd_saved (first 192 tokens) vs float64: passed\",\n");
    P("  \"flops\": \"nominal F_fwd = 2C(3K+2V)+6KV per token per head, C=64; fwd+bwd = 3 F_fwd\",\n");
    P("  \"sgemm_gflops\": {\"1024x1024x1024\": %.1f, \"64x128x128_per_thread_blocks\": %.1f},\n", g1024, gblk);
    P("  \"sgemm_gflops_per_core\": {\"1024x1024x1024\": %.1f, \"64x128x128_per_thread_blocks\": %.1f},\n", g1024c, gblkc);
    P("  \"results\": [\n");
    for (int i = 0; i < n_results; i++) {
        const result *r = &results[i];
        P("    {\"op\": \"%s\", \"B\": %lld, \"T\": %lld, \"H\": %lld, \"K\": %lld, \"V\": %lld, \"ms\": %.3f, "
          "\"tokens_per_s\": %.0f, \"gflops\": %.2f, \"pct_of_sgemm_1024\": %.1f, \"cpu_ms\": %.3f, "
          "\"gflops_per_core\": %.2f, \"pct_of_sgemm_1024_per_core\": %.1f}%s\n",
          r->op, (long long)r->s.B, (long long)r->s.T, (long long)r->s.H, (long long)r->s.K, (long long)r->s.V,
          r->sec * 1e3, r->tok_s, r->gflops, 100.0 * r->gflops / g1024, r->cpu_sec * 1e3, r->gflops_per_core,
          100.0 * r->gflops_per_core / g1024c, i + 1 < n_results ? "," : "");
    }
    P("  ]\n}\n");
    snprintf(path, sizeof path, "%s/cpu-ops.json", dir);
    int rc = gdn2_write_file_atomic(path, txt, len);
    if (rc) fprintf(stderr, "%s\n", gdn2_last_error());
    len = 0;
    P("# CPU op benchmark (bench/ops.c)\n\n");
    P("Machine: %s, nproc %ld, %d threads, gemm backend %s (kernels %s%s). Commit %s. fp32. Best of %d repetitions. "
      "Load average (1/5/15 min) before the run %s, after it %s.\n\n", cpu, nproc, nt, gdn2_gemm_backend(), blas_core(),
      getenv("OPENBLAS_CORETYPE") ? ", set by OPENBLAS_CORETYPE" : "", commit, reps, load0, load1);
    P("Outputs validated before timing: the chunk forward against the fp32 token-serial recurrence (rel RMSE <= 1e-5), "
      "the decode step against the recurrence's first token (1e-5), the chunk backward, recomputing and from a saved "
      "forward (gdn2_chunk_fwd_save + gdn2_chunk_bwd_saved), on each shape's first 192 tokens against the float64 "
      "reference (1e-4).\n\n");
    P("FLOPs are nominal (the peers' count): F_fwd = 2C(3K+2V) + 6KV per token per head with C = 64; "
      "fwd+bwd = 3·F_fwd (either way); the recurrent forward and the decode step use the same F_fwd so that "
      "GFLOP/s ratios equal speed ratios. q/k L2 norm in kernel, no h0/ht.\n\n");
    P("Ceiling (same run): OpenBLAS sgemm 1024³ %.1f GFLOP/s (%.1f per CPU-second); 64×128×128 blocks, "
      "%d threads × 1: %.1f GFLOP/s (%.1f per CPU-second).\n\n", g1024, g1024c, nt, gblk, gblkc);
    P("Wall-clock columns: best repetition. *cores* = process CPU time / wall time of that repetition "
      "(below %d means other jobs took the cores); *per core* = nominal FLOPs / CPU seconds, compared "
      "with sgemm 1024³ per CPU-second.\n\n", nt);
    P("| op | (B,T,H,K,V) | ms | tokens/s | GFLOP/s | %% of sgemm 1024³ | cores | GFLOP/s per core | %% of sgemm per core |\n"
      "|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_results; i++) {
        const result *r = &results[i];
        P("| %s | (%lld,%lld,%lld,%lld,%lld) | %.3f | %.0f | %.1f | %.0f%% | %.2f | %.1f | %.0f%% |\n", r->op,
          (long long)r->s.B, (long long)r->s.T, (long long)r->s.H, (long long)r->s.K, (long long)r->s.V,
          r->sec * 1e3, r->tok_s, r->gflops, 100.0 * r->gflops / g1024, r->cpu_sec / r->sec, r->gflops_per_core,
          100.0 * r->gflops_per_core / g1024c);
    }
    P("\ndecode_step: one token for each of the B sequences per call (ms per call; tokens/s = B / time).\n");
    for (int i = 0; i < n_results; i++)
        if (!strcmp(results[i].op, "chunk_fwd"))
            P("\nTarget chunk_fwd >= 50%% of the sgemm rate: (%lld,%lld,%lld,%lld,%lld) reaches %.0f%% of sgemm 1024³ "
              "(wall clock), %.0f%% per CPU-second.\n", (long long)results[i].s.B, (long long)results[i].s.T,
              (long long)results[i].s.H, (long long)results[i].s.K, (long long)results[i].s.V,
              100.0 * results[i].gflops / g1024, 100.0 * results[i].gflops_per_core / g1024c);
    /* the backward alone = (fwd+bwd) − fwd of the same shape, against the forward */
    for (int i = 0; i < n_results; i++)
        for (int j = 0; j < n_results; j++)
            if (!strcmp(results[i].op, "chunk_fwd") &&
                (!strcmp(results[j].op, "chunk_fwd+bwd") || !strcmp(results[j].op, "chunk_fwd_save+bwd_saved")) &&
                !memcmp(&results[i].s, &results[j].s, sizeof(shape)))
                P("\nTarget backward <= 3x the forward%s: (%lld,%lld,%lld,%lld,%lld) backward = (%s) − fwd = %.1f ms, "
                  "%.2fx the forward (wall clock); %.2fx in CPU time.\n",
                  strcmp(results[j].op, "chunk_fwd+bwd") ? ", saved forward" : " (recomputing)",
                  (long long)results[i].s.B,
                  (long long)results[i].s.T, (long long)results[i].s.H, (long long)results[i].s.K,
                  (long long)results[i].s.V, strcmp(results[j].op, "chunk_fwd+bwd") ? "fwd_save+bwd_saved" : "fwd+bwd",
                  (results[j].sec - results[i].sec) * 1e3,
                  (results[j].sec - results[i].sec) / results[i].sec,
                  (results[j].cpu_sec - results[i].cpu_sec) / results[i].cpu_sec);
    /* the ggml peer (bench/peers/ggml_gdn.c) leaves its figures in DIR/cpu-peer-ggml.json */
    {
        char pp[1024];
        snprintf(pp, sizeof pp, "%s/cpu-peer-ggml.json", dir);
        FILE *f = fopen(pp, "rb");
        char jb[4096];
        size_t jn = f ? fread(jb, 1, sizeof jb - 1, f) : 0;
        if (f) fclose(f);
        jb[jn] = 0;
        cJSON *j = jn ? cJSON_Parse(jb) : NULL;
        if (j) {
#define JN(k) (cJSON_IsNumber(cJSON_GetObjectItem(j, k)) ? cJSON_GetObjectItem(j, k)->valuedouble : 0.0)
            P("\n## Peer: ggml CPU GATED_DELTA_NET (KDA mode) vs gdn2_kda_chunk_fwd\n\n");
            P("(B,T,H,K,V)=(1,%.0f,%.0f,%.0f,%.0f), fp32, %.0f threads, best of repetitions, from "
              "bench/peers/ggml_gdn.c (%s/cpu-peer-ggml.json; how to run: bench/peers/README.md).\n\n",
              JN("T"), JN("H"), JN("K"), JN("V"), JN("threads"), dir);
            P("| implementation | ms | tokens/s | CPU ms of that run |\n|---|---|---|---|\n");
            P("| ggml GATED_DELTA_NET (token-serial) | %.1f | %.0f | %.1f |\n", JN("ggml_ms"), JN("ggml_tokens_per_s"),
              JN("ggml_cpu_ms"));
            P("| gdn2_kda_chunk_fwd (public entry point; expands beta to b, w) | %.1f | %.0f | %.1f |\n", JN("gdn2_ms"),
              JN("gdn2_tokens_per_s"), JN("gdn2_cpu_ms"));
            P("| gdn2 chunk kernel in KDA mode (beta read in place) | %.1f | %.0f | %.1f |\n", JN("gdn2_beta_mode_ms"),
              JN("gdn2_beta_mode_tokens_per_s"), JN("gdn2_beta_mode_cpu_ms"));
            P("\nSpeed-up %.2fx (KDA mode of the kernel: %.2fx); outputs agree to relative RMSE %.1e.\n",
              JN("speedup"), JN("speedup_beta_mode"), JN("rel_rmse_outputs"));
#undef JN
            cJSON_Delete(j);
        }
    }
#undef P
    snprintf(path, sizeof path, "%s/cpu-ops.md", dir);
    if (gdn2_write_file_atomic(path, txt, len)) fprintf(stderr, "%s\n", gdn2_last_error()), rc = 1;
    else printf("wrote %s/cpu-ops.{json,md}\n", dir);
    free(txt);
    return rc ? 1 : 0;
}
