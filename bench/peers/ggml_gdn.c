/* Side-by-side peer: ggml's CPU GATED_DELTA_NET op in KDA mode (per-channel decay g, scalar beta)
 * against gdn2_kda_chunk_fwd at the same shape, fp32, same thread count. Our own harness; ggml is
 * built from a public checkout in the git-ignored third_party/ (see bench/peers/README.md).
 *
 *   ggml_gdn [--T 4096] [--H 8] [--D 128] [--threads 2] [--reps 3] [--out bench/results]
 *
 * Both compute, per head, S_t = (I − β_t k_t k_tᵀ) Diag(e^{g_t}) S_{t−1} + β_t k_t v_tᵀ,
 * o_t = S_tᵀ q_t / √D, from a zero state, on the same (pre-normalised) q, k. ggml's op is
 * token-serial (one pass over the D x D state per token); ours is the chunkwise WY kernel. The
 * outputs are compared (relative RMSE) so that the timings are of the same function. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ggml-cpu.h"
#include "ggml.h"
#include "gdn2.h"
#include "ops/chunk_common.h" /* gdn2_chunk_fwd_beta: the kernel's KDA mode, without expanding beta */
#include "../common.h"      /* git_commit, cpu_model, blas_core */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* process CPU time: the machine is shared, so the CPU seconds each run actually got are reported too */
static double cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv) {
    int64_t T = 4096, H = 8, D = 128;
    int threads = 2, reps = 3;
    const char *dir = "bench/results";
    const char *usage = "usage: ggml_gdn [--T 4096] [--H 8] [--D 128] [--threads 2] [--reps 3] [--out bench/results]";
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) {
            fprintf(stderr, "option %s needs a value\n%s\n", argv[i], usage);
            return 2;
        }
        const char *a = argv[i + 1];
        if (!strcmp(argv[i], "--out")) {
            dir = a;
            continue;
        }
        char *end;
        const long long v = strtoll(a, &end, 10);
        if (*end || end == a || v < 1 || v > (1LL << 30)) {
            fprintf(stderr, "option %s: '%s' is not a positive integer\n%s\n", argv[i], a, usage);
            return 2;
        }
        if (!strcmp(argv[i], "--T")) T = v;
        else if (!strcmp(argv[i], "--H")) H = v;
        else if (!strcmp(argv[i], "--D")) D = v;
        else if (!strcmp(argv[i], "--threads")) threads = (int)v;
        else if (!strcmp(argv[i], "--reps")) reps = (int)v;
        else {
            fprintf(stderr, "unknown option %s\n%s\n", argv[i], usage);
            return 2;
        }
    }
    bench_rng = 7; /* the inputs the committed figures were measured on */
    const size_t nqk = (size_t)(T * H * D), nb = (size_t)(T * H), ns = (size_t)(H * D * D);
    /* inputs in our layout [B=1, T, H, D] — the same memory order as ggml's [D, H, T, 1] */
    float *q = malloc(nqk * 4), *k = malloc(nqk * 4), *v = malloc(nqk * 4), *g = malloc(nqk * 4);
    float *beta = malloc(nb * 4), *o_ours = malloc(nqk * 4);
    for (size_t r = 0; r < nqk / D; r++) {
        double sq = 0, sk = 0;
        for (int64_t c = 0; c < D; c++) {
            q[r * D + c] = frand() - 0.5f;
            k[r * D + c] = frand() - 0.5f;
            sq += (double)q[r * D + c] * q[r * D + c];
            sk += (double)k[r * D + c] * k[r * D + c];
        }
        for (int64_t c = 0; c < D; c++) q[r * D + c] /= (float)sqrt(sq), k[r * D + c] /= (float)sqrt(sk);
    }
    for (size_t i = 0; i < nqk; i++) {
        v[i] = frand() - 0.5f;
        g[i] = -0.5f * frand() - 0.001f;
    }
    for (size_t i = 0; i < nb; i++) beta[i] = frand();

    /* ---- ggml ---- */
    const size_t mem = (5 * nqk + nb + 2 * ns) * sizeof(float) + 64 * ggml_tensor_overhead() +
                       ggml_graph_overhead() + (16 << 20);
    struct ggml_init_params ip = {mem, NULL, false};
    struct ggml_context *ctx = ggml_init(ip);
    if (!ctx) {
        fprintf(stderr, "ggml_init failed (%zu bytes)\n", mem);
        return 1;
    }
    struct ggml_tensor *tq = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, H, T, 1);
    struct ggml_tensor *tk = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, H, T, 1);
    struct ggml_tensor *tv = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, H, T, 1);
    struct ggml_tensor *tg = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, H, T, 1); /* KDA: per-channel */
    struct ggml_tensor *tb = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 1, H, T, 1);
    struct ggml_tensor *ts = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, D, H, 1);
    memcpy(tq->data, q, nqk * 4);
    memcpy(tk->data, k, nqk * 4);
    memcpy(tv->data, v, nqk * 4);
    memcpy(tg->data, g, nqk * 4);
    memcpy(tb->data, beta, nb * 4);
    memset(ts->data, 0, ns * 4);
    struct ggml_tensor *out = ggml_gated_delta_net(ctx, tq, tk, tv, tg, tb, ts, 1);
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, out);
    /* ---- same function? One untimed run of each, compared before anything is timed (ggml's output is the
     * attention part first, in the same [D,H,T] order as ours) ---- */
    gdn2_dims d = {1, T, H, H, D, D};
    gdn2_opts o = {0};
    o.n_threads = threads;
    gdn2_fwd_tensors t = {q, k, v, g, NULL, NULL, NULL, NULL, NULL, o_ours, NULL};
    if (ggml_graph_compute_with_ctx(ctx, gf, threads) != GGML_STATUS_SUCCESS) {
        fprintf(stderr, "ggml graph compute failed\n");
        return 1;
    }
    const float *og = (const float *)out->data;
    if (gdn2_kda_chunk_fwd(&d, &o, &t, beta) != GDN2_OK) {
        fprintf(stderr, "gdn2_kda_chunk_fwd: %s\n", gdn2_last_error());
        return 1;
    }
    const double rel = rel_rmse(o_ours, og, nqk);
    if (gdn2_chunk_fwd_beta(&d, &o, &t, beta) != GDN2_OK) {
        fprintf(stderr, "gdn2_chunk_fwd_beta: %s\n", gdn2_last_error());
        return 1;
    }
    const double rel_beta = rel_rmse(o_ours, og, nqk);
    if (!(rel < 1e-4 && rel_beta < 1e-4)) {
        fprintf(stderr, "outputs differ from ggml's: rel. RMSE %.2e (gdn2_kda_chunk_fwd), %.2e (beta mode), bar 1e-4; "
                        "nothing timed\n", rel, rel_beta);
        return 1;
    }

    double best_ggml = 1e30, cpu_ggml = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now(), c0 = cpu();
        if (ggml_graph_compute_with_ctx(ctx, gf, threads) != GGML_STATUS_SUCCESS) {
            fprintf(stderr, "ggml graph compute failed\n");
            return 1;
        }
        double dt = now() - t0;
        if (dt < best_ggml) best_ggml = dt, cpu_ggml = cpu() - c0;
    }

    /* ---- gdn2 KDA entry point ---- */
    double best_ours = 1e30, cpu_ours = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now(), c0 = cpu();
        if (gdn2_kda_chunk_fwd(&d, &o, &t, beta) != GDN2_OK) {
            fprintf(stderr, "gdn2_kda_chunk_fwd: %s\n", gdn2_last_error());
            return 1;
        }
        double dt = now() - t0;
        if (dt < best_ours) best_ours = dt, cpu_ours = cpu() - c0;
    }

    /* the chunk kernel's KDA mode (scalar beta read in place; what gdn2_kda_chunk_fwd reduces to
     * once it stops expanding b and w) */
    double best_beta = 1e30, cpu_beta = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now(), c0 = cpu();
        if (gdn2_chunk_fwd_beta(&d, &o, &t, beta) != GDN2_OK) {
            fprintf(stderr, "gdn2_chunk_fwd_beta: %s\n", gdn2_last_error());
            return 1;
        }
        double dt = now() - t0;
        if (dt < best_beta) best_beta = dt, cpu_beta = cpu() - c0;
    }

    const double F = (2.0 * 64 * (3.0 * D + 2.0 * D) + 6.0 * D * D) * (double)(T * H); /* nominal, PERF_ANCHORS.md */
    char commit[64], cpu_name[256];
    git_commit(commit, sizeof commit);
    cpu_model(cpu_name, sizeof cpu_name);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("machine: %s, OpenBLAS kernels %s (OPENBLAS_CORETYPE %s), commit %s\n", cpu_name, blas_core(),
           ct ? ct : "unset", commit);
    printf("KDA fwd (B,T,H,K,V)=(1,%lld,%lld,%lld,%lld) fp32, %d threads, best of %d\n", (long long)T, (long long)H,
           (long long)D, (long long)D, threads, reps);
    printf("  ggml GATED_DELTA_NET (CPU) %9.1f ms  %10.0f tok/s  %6.1f GFLOP/s nominal  [cpu %.1f ms]\n",
           best_ggml * 1e3, T / best_ggml, F / best_ggml * 1e-9, cpu_ggml * 1e3);
    printf("  gdn2_kda_chunk_fwd         %9.1f ms  %10.0f tok/s  %6.1f GFLOP/s nominal  [cpu %.1f ms]\n",
           best_ours * 1e3, T / best_ours, F / best_ours * 1e-9, cpu_ours * 1e3);
    printf("  gdn2 chunk, KDA beta mode  %9.1f ms  %10.0f tok/s  %6.1f GFLOP/s nominal  [cpu %.1f ms]\n",
           best_beta * 1e3, T / best_beta, F / best_beta * 1e-9, cpu_beta * 1e3);
    printf("  speed-up %.2fx (beta mode %.2fx); outputs agree to rel. RMSE %.2e (beta mode %.2e), checked before timing\n",
           best_ggml / best_ours, best_ggml / best_beta, rel, rel_beta);

    /* what the file says of the run: the figures depend on OpenBLAS's kernel set (bench/peers/README.md) */
    char path[1024], buf[2048];
    int n = snprintf(buf, sizeof buf,
                     "{\"commit\": \"%s\", \"cpu\": \"%s\", \"openblas_kernels\": \"%s\", \"openblas_coretype\": \"%s\", "
                     "\"op\": \"KDA fwd\", \"B\": 1, \"T\": %lld, \"H\": %lld, \"K\": %lld, \"V\": %lld, \"dtype\": \"fp32\", "
                     "\"threads\": %d, \"timing\": \"best of %d\", \"ggml_ms\": %.2f, \"ggml_tokens_per_s\": %.0f, "
                     "\"gdn2_ms\": %.2f, \"gdn2_tokens_per_s\": %.0f, \"speedup\": %.2f, \"gdn2_beta_mode_ms\": %.2f, "
                     "\"gdn2_beta_mode_tokens_per_s\": %.0f, \"speedup_beta_mode\": %.2f, \"ggml_cpu_ms\": %.2f, \"gdn2_cpu_ms\": %.2f, "
                     "\"gdn2_beta_mode_cpu_ms\": %.2f, \"rel_rmse_outputs\": %.2e, \"rel_rmse_outputs_beta_mode\": %.2e}\n",
                     commit, cpu_name, blas_core(), ct ? ct : "unset", (long long)T, (long long)H, (long long)D,
                     (long long)D, threads, reps, best_ggml * 1e3, T / best_ggml,
                     best_ours * 1e3, T / best_ours, best_ggml / best_ours, best_beta * 1e3, T / best_beta,
                     best_ggml / best_beta, cpu_ggml * 1e3, cpu_ours * 1e3, cpu_beta * 1e3, rel, rel_beta);
    snprintf(path, sizeof path, "%s/cpu-peer-ggml.json", dir);
    if (gdn2_write_file_atomic(path, buf, (size_t)n)) fprintf(stderr, "%s\n", gdn2_last_error());
    ggml_free(ctx);
    free(q); free(k); free(v); free(g); free(beta); free(o_ours);
    return 0;
}
