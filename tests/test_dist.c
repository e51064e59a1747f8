/* Data-parallel training on local ranks (src/dist, src/model/dist.c, train_parallel.c; docs/DIST.md):
 *   1. the local communicator's collectives in 3 forked ranks, exact;
 *   2. MQAR training of `tiny` on 1, 2 and 4 ranks from the same global batches: the loss curves agree
 *      (bound 1e-4 relative per step: only the order of the gradient sum over ranks differs), and
 *      ZeRO-1 on 2 ranks is bit-identical to the replicated optimizer on 2 ranks (curve, weights,
 *      AdamW moments: the update is elementwise, only where it is computed changes);
 *   3. checkpoints: a 2-rank run resumed on 2 ranks is bit-exact against the straight run, and its
 *      checkpoint continues on 1 rank;
 *   4. failure: a rank that dies (GDN2_DIST_FAIL) stops the run within seconds with an error naming
 *      it, and the last checkpoint stays loadable;
 *   5. bad input: a global batch that does not split over the ranks;
 *   6. MPI (built with it, .ci/run installs OpenMPI): `mpirun -np 2 gdn2 train` gives the same loss
 *      lines and the same checkpoint, bit for bit, as `gdn2 train --ranks 2` (the MPI communicator
 *      sums in rank order), replicated and ZeRO-1; a rank that dies under mpirun stops the job with
 *      its checkpoint intact. Built without MPI: a process that finds itself under mpirun refuses
 *      with an error saying so (instead of training alone). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ckpt_pair.h"
#include "cli_run.h"
#include "dist/comm.h"
#include "dist/launch.h"
#include "gdn2.h"
#include "gdn2_model.h"
#include "util/internal.h"
#ifdef GDN2_HAVE_MPI
#include <mpi.h>
#endif

/* ---- 1. collectives ---------------------------------------------------------------------- */
/* the collectives of communicator c checked (exact: small integers); returns 0 when right */
static int coll_check(gdn2_comm *c) {
    const int rank = c->rank, world = c->world;
    int bad = 0;
    /* all_reduce over a buffer larger than one slot (2 rounds) */
    const size_t n = (1u << 20) + 777;
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(rank + 1) * (float)(i % 97);
    if (c->all_reduce(c, x, n)) bad |= 1;
    const float want = (float)(world * (world + 1) / 2);
    for (size_t i = 0; i < n && !bad; i++)
        if (x[i] != want * (float)(i % 97)) bad |= 2;
    /* reduce_scatter: shard s of rank r = sum over ranks of in[r*s + i] */
    const size_t s = 1001;
    float *in = malloc((size_t)world * s * sizeof(float)), *out = malloc(s * sizeof(float));
    for (size_t i = 0; i < (size_t)world * s; i++) in[i] = (float)(rank * 1000 + (int)(i % 13));
    if (c->reduce_scatter(c, in, out, s)) bad |= 4;
    for (size_t i = 0; i < s && !bad; i++) {
        float e = 0;
        for (int r = 0; r < world; r++) e += (float)(r * 1000 + (int)(((size_t)rank * s + i) % 13));
        if (out[i] != e) bad |= 8;
    }
    /* all_gather in place (in = out + rank*bytes) */
    int32_t *g = calloc((size_t)world * 5, sizeof(int32_t));
    for (int i = 0; i < 5; i++) g[rank * 5 + i] = rank * 10 + i;
    if (c->all_gather(c, g + rank * 5, g, 5 * sizeof(int32_t))) bad |= 16;
    for (int r = 0; r < world && !bad; r++)
        for (int i = 0; i < 5; i++)
            if (g[r * 5 + i] != r * 10 + i) bad |= 32;
    double h[2] = {1.0, (double)rank};
    if (c->all_reduce_host(c, h, 2) || h[0] != world || h[1] != world * (world - 1) / 2.0) bad |= 64;
    free(x), free(in), free(out), free(g);
    if (bad) fprintf(stderr, "rank %d (%s): collective check bits %d\n", rank, c->name, bad);
    return bad;
}

static int coll_body(int rank, int world, void *arg) {
    gdn2_comm *c = NULL;
    if (gdn2_comm_local(arg, rank, &c)) return 1;
    int bad = coll_check(c);
    c->destroy(c);
    return bad ? 1 : 0;
}

static void test_collectives(void) {
    gdn2_local_arena *a = NULL;
    int st = gdn2_comm_local_arena(3, 60, &a);
    if (!st) st = gdn2_launch(3, coll_body, a, a, 5);
    CHECK(st == 0, "local collectives on 3 ranks (all_reduce over 2 slot rounds, reduce_scatter, all_gather in place, "
                   "host sums) exact%s%s", st ? ": " : "", st ? gdn2_last_error() : "");
    gdn2_comm_local_arena_free(a);
}

/* ---- 2-4. training ------------------------------------------------------------------------ */
enum { S = 16 };

static gdn2_train_opts opts(float *trace, const char *out) {
    gdn2_train_opts o;
    gdn2_train_defaults(&o);
    o.model = "tiny";
    o.layout = "gdn2,swa";
    o.task = "mqar";
    o.batch = 8, o.seq_len = 32, o.steps = S, o.warmup = 3, o.lr = 3e-3f;
    o.log_every = 0, o.eval_samples = 16, o.n_threads = 1, o.seed = 21, o.mqar_pairs = 2;
    o.quiet = 1;
    o.loss_trace = trace;
    o.out = out;
    o.dist_grace_s = 3;
    return o;
}

static void test_training(const char *dir) {
    float t1[S], t2[S], t4[S], tz[S], g1[S], g2[S], g4[S];
    char c2[1024], cz[1024], cs[1024], c1[1024];
    snprintf(c2, sizeof c2, "%s/r2.safetensors", dir);
    snprintf(cz, sizeof cz, "%s/z2.safetensors", dir);
    snprintf(cs, sizeof cs, "%s/split.safetensors", dir);
    snprintf(c1, sizeof c1, "%s/one.safetensors", dir);
    gdn2_train_result r;
    gdn2_train_opts o = opts(t1, c1);
    o.gnorm_trace = g1;
    int st1 = gdn2_train(&o, &r, NULL);
    o = opts(t2, c2);
    o.gnorm_trace = g2;
    int st2 = gdn2_train_parallel(&o, 2, &r);
    o = opts(t4, NULL);
    o.gnorm_trace = g4;
    int st4 = gdn2_train_parallel(&o, 4, &r);
    o = opts(tz, cz);
    o.zero1 = 1;
    int stz = gdn2_train_parallel(&o, 2, &r);
    CHECK(!st1 && !st2 && !st4 && !stz, "tiny gdn2,swa MQAR on 1, 2, 4 ranks and 2 ranks ZeRO-1 trained%s%s",
          (st1 || st2 || st4 || stz) ? ": " : "", (st1 || st2 || st4 || stz) ? gdn2_last_error() : "");
    if (st1 || st2 || st4 || stz) return;
    double e2 = 0, e4 = 0;
    for (int i = 0; i < S; i++) {
        e2 = fmax(e2, fabs((double)t2[i] - t1[i]) / t1[i]);
        e4 = fmax(e4, fabs((double)t4[i] - t1[i]) / t1[i]);
    }
    CHECK(e2 <= 1e-4 && e4 <= 1e-4,
          "loss curves of 2 and 4 ranks vs 1 rank at the same global batch: max relative diff %.1e, %.1e <= 1e-4 "
          "(final %.6f, %.6f, %.6f)", e2, e4, t1[S - 1], t2[S - 1], t4[S - 1]);
    /* the gradient itself, before the clip: a reduction that summed instead of averaging (or missed a
     * rank) leaves the clipped AdamW steps, and so the losses, nearly unchanged, but not the norm */
    double n2 = 0, n4 = 0;
    for (int i = 0; i < S; i++) {
        n2 = fmax(n2, fabs((double)g2[i] - g1[i]) / g1[i]);
        n4 = fmax(n4, fabs((double)g4[i] - g1[i]) / g1[i]);
    }
    CHECK(n2 <= 1e-4 && n4 <= 1e-4 && g1[0] > 0,
          "gradient norms before the clip of 2 and 4 ranks vs 1 rank: max relative diff %.1e, %.1e <= 1e-4 "
          "(step 0: %.6f, %.6f, %.6f)", n2, n4, g1[0], g2[0], g4[0]);
    char why[256];
    int same = !memcmp(t2, tz, sizeof t2) && ckpt_same_pair(c2, cz, why, sizeof why);
    CHECK(same, "ZeRO-1 on 2 ranks == replicated AdamW on 2 ranks, bit for bit (loss curve; %s)", why);
    /* resume on 2 ranks: 8 + 8 == 16 straight */
    float ts[S];
    o = opts(ts, cs);
    o.zero1 = 1;
    o.stop_at = 8;
    int st = gdn2_train_parallel(&o, 2, &r);
    o.stop_at = 0;
    o.resume = 1;
    /* the resumed call runs steps 8..15 only: the first half of its trace is poisoned and must stay so */
    float first[8];
    memcpy(first, ts, sizeof first);
    for (int i = 0; i < 8; i++) ts[i] = NAN;
    if (!st) st = gdn2_train_parallel(&o, 2, &r);
    int untouched = 1;
    for (int i = 0; i < 8; i++) untouched &= isnan(ts[i]);
    CHECK(!st && untouched, "2 ranks ZeRO-1: the resumed call runs steps 8..15 only");
    memcpy(ts, first, sizeof first);
    same = !st && !memcmp(ts, tz, sizeof ts) && ckpt_same_pair(cs, cz, why, sizeof why);
    CHECK(same, "2 ranks ZeRO-1: 8 steps + resume 8 == 16 straight, bit for bit (%s)%s%s", st ? "" : why,
          st ? ": " : "", st ? gdn2_last_error() : "");
    /* a 2-rank checkpoint continues on 1 rank (steps 16 -> 20) as the 1-rank run's own checkpoint does:
     * the two hold the same model to ~1e-7, so their next 4 losses agree to the curves' bar */
    float t20[20], u20[20];
    for (int i = 0; i < 20; i++) t20[i] = u20[i] = NAN;
    o = opts(t20, c2);
    o.steps = 20, o.resume = 1, o.allow_change = "steps";
    st = gdn2_train(&o, &r, NULL);
    const int64_t steps2 = r.steps;
    o = opts(u20, c1);
    o.steps = 20, o.resume = 1, o.allow_change = "steps";
    if (!st) st = gdn2_train(&o, &r, NULL);
    double e20 = st ? 1.0 : 0.0;
    int ran = !st;
    for (int i = 0; i < 20 && !st; i++) {
        if (i < S) ran &= isnan(t20[i]) && isnan(u20[i]);
        else e20 = fmax(e20, isfinite(t20[i]) && isfinite(u20[i]) ? fabs((double)t20[i] - u20[i]) / u20[i] : 1.0);
    }
    CHECK(!st && ran && steps2 == 20 && r.steps == 20 && e20 <= 1e-4,
          "the 2-rank checkpoint resumes on 1 rank (--allow-change steps) to step 20 with the losses of the 1-rank "
          "checkpoint's resume (steps 16..19 only; max relative diff %.1e <= 1e-4)%s%s",
          e20, st ? ": " : "", st ? gdn2_last_error() : "");
}

static void test_failure(const char *dir) {
    char ck[1024];
    snprintf(ck, sizeof ck, "%s/fail.safetensors", dir);
    float tr[S];
    gdn2_train_opts o = opts(tr, ck);
    o.save_every = 3;
    setenv("GDN2_DIST_FAIL", "1:5", 1);
    gdn2_train_result r;
    double t0 = gdn2_now();
    int st = gdn2_train_parallel(&o, 2, &r);
    double dt = gdn2_now() - t0;
    unsetenv("GDN2_DIST_FAIL");
    CHECK(st != 0 && contains(gdn2_last_error(), "rank 1 of 2") && dt < 60,
          "a rank that dies at step 5 stops the run in %.1f s (< 60) with an error naming it: %s", dt,
          gdn2_last_error());
    gdn2_model *m = NULL;
    gdn2_adamw oa;
    memset(&oa, 0, sizeof oa);
    int ls = ckpt_load_pair(ck, &m, &oa);
    CHECK(!ls && oa.step == 3, "the checkpoint of step 3 is intact (loads, step %lld)%s%s", (long long)oa.step,
          ls ? ": " : "", ls ? gdn2_last_error() : "");
    gdn2_model_free(m);
    gdn2_adamw_free(&oa);
    /* bad input */
    o = opts(NULL, NULL);
    o.batch = 6;
    st = gdn2_train_parallel(&o, 4, &r);
    CHECK(st == GDN2_ERR_ARG && contains(gdn2_last_error(), "multiple of the 4 ranks"),
          "--batch 6 on 4 ranks refused: %s", gdn2_last_error());
}

static char g_self[4096]; /* this program, run again under mpirun */

/* ---- 6. mpirun ----------------------------------------------------------------------------- */
#define MPI_TRAIN                                                                                             \
    "train --task mqar --model tiny --layout gdn2,swa --batch 8 --seq-len 32 --steps 16 --warmup 3 "          \
    "--lr 3e-3 --mqar-pairs 2 --eval-samples 16 --threads 1 --seed 21 --log-every 1"
/* mpirun as root on a machine with fewer cores than ranks; no LeakSanitizer in the ranks of an ASan
 * build (OpenMPI's own allocations at exit are not the library's) */
#define MPIRUN "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun -np 2 --oversubscribe --allow-run-as-root"

#ifdef GDN2_HAVE_MPI
/* the "loss X" fields of the progress lines in g_out, space-separated */
static void loss_fields(char *dst, size_t n) {
    size_t k = 0;
    dst[0] = 0;
    for (const char *p = g_out; (p = strstr(p, "| loss ")) != NULL; p += 7) {
        const char *e = strchr(p + 7, ' ');
        size_t len = e ? (size_t)(e - (p + 7)) : strlen(p + 7);
        if (k + len + 2 >= n) break;
        memcpy(dst + k, p + 7, len), k += len, dst[k++] = ' ', dst[k] = 0;
    }
}

#endif

static void test_mpi(const char *dir) {
    const char *cli = cli_path();
#ifdef GDN2_HAVE_MPI
    if (!need_tool("mpirun", "mpirun -np 2 gdn2 train == gdn2 train --ranks 2")) return;
    /* this program under mpirun on 3 ranks: the MPI communicator's collectives (mpi_ranks below) */
    int rc0 = run("ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun -np 3 --oversubscribe "
                  "--allow-run-as-root '%s' --mpi-collectives", g_self);
    CHECK(rc0 == 0, "MPI collectives on 3 ranks (all_reduce over 2 chunk rounds, reduce_scatter, all_gather in place, "
                    "host sums) exact: exit %d%s%s", rc0, rc0 ? ": " : "", rc0 ? g_out : "");
    static char want[4096], got[4096];
    char l2[1024], m2[1024], mz[1024], mf[1024], why[256];
    snprintf(l2, sizeof l2, "%s/l2.safetensors", dir);
    snprintf(m2, sizeof m2, "%s/m2.safetensors", dir);
    snprintf(mz, sizeof mz, "%s/mz.safetensors", dir);
    snprintf(mf, sizeof mf, "%s/mf.safetensors", dir);
    int rc = run("'%s' " MPI_TRAIN " --ranks 2 -o '%s'", cli, l2);
    loss_fields(want, sizeof want);
    CHECK(rc == 0 && strlen(want) > 16 * 6, "gdn2 train --ranks 2 (the reference of the MPI runs): exit %d%s%s", rc,
          rc ? ": " : "", rc ? g_out : "");
    if (rc) return;
    double t0 = gdn2_now();
    rc = run(MPIRUN " '%s' " MPI_TRAIN " -o '%s'", cli, m2);
    const double dt = gdn2_now() - t0;
    loss_fields(got, sizeof got);
    const char *js = strstr(g_out, "{\"steps\":16");
    int one_log = js && !strstr(js + 1, "{\"steps\":"); /* rank 1 is quiet */
    CHECK(rc == 0 && !strcmp(want, got) && one_log,
          "mpirun -np 2 gdn2 train (%.1f s): the loss lines of --ranks 2, one log (rank 0's): exit %d, %s%s%s", dt, rc,
          !strcmp(want, got) ? "same losses" : "losses differ", rc ? ": " : "", rc ? g_out : "");
    int same = !rc && ckpt_same_pair(l2, m2, why, sizeof why);
    CHECK(same, "its checkpoint loads and equals --ranks 2's, bit for bit (weights, AdamW moments, step; %s)", rc ? "-" : why);
    rc = run(MPIRUN " '%s' " MPI_TRAIN " --zero1 -o '%s'", cli, mz);
    loss_fields(got, sizeof got);
    same = !rc && !strcmp(want, got) && ckpt_same_pair(l2, mz, why, sizeof why);
    CHECK(same, "mpirun -np 2 gdn2 train --zero1 (reduce_scatter, all_gather over MPI, padded shards) == --ranks 2, bit "
                "for bit (%s)%s%s", rc ? "-" : why, rc ? ": " : "", rc ? g_out : "");
    t0 = gdn2_now();
    rc = run("GDN2_DIST_FAIL=1:5 " MPIRUN " '%s' " MPI_TRAIN " --save-every 3 -o '%s'", cli, mf);
    gdn2_model *m = NULL;
    gdn2_adamw oa;
    memset(&oa, 0, sizeof oa);
    int ls = ckpt_load_pair(mf, &m, &oa);
    CHECK(rc != 0 && gdn2_now() - t0 < 60 && !ls && oa.step == 3,
          "a rank that dies at step 5 under mpirun ends the job (exit %d in %.1f s), the checkpoint of step 3 loads "
          "(step %lld)", rc, gdn2_now() - t0, (long long)oa.step);
    gdn2_model_free(m);
    gdn2_adamw_free(&oa);
#else
    (void)dir;
    const char *ci = getenv("CI");
    if (ci && !strcmp(ci, "true")) CHECK(0, "built without MPI under CI=true (.ci/run installs libopenmpi-dev): mpirun not checked");
    int rc = run("OMPI_COMM_WORLD_SIZE=2 '%s' " MPI_TRAIN, cli);
    CHECK(rc == 1 && contains(g_out, "built without MPI") && contains(g_out, "OMPI_COMM_WORLD_SIZE=2") &&
              !contains(g_out, "step 1/"),
          "built without MPI, a process under mpirun (OMPI_COMM_WORLD_SIZE=2) refuses instead of training alone: "
          "exit %d: %s", rc, first_line());
#endif
}

#ifdef GDN2_HAVE_MPI
/* `test_dist --mpi-collectives` under mpirun: one rank of the collectives check */
static int mpi_ranks(void) {
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) return 1;
    gdn2_comm *c = NULL;
    int bad = gdn2_comm_mpi(&c) ? 1 : coll_check(c);
    if (c) c->destroy(c);
    MPI_Finalize();
    return bad ? 1 : 0;
}
#endif

int main(int argc, char **argv) {
#ifdef GDN2_HAVE_MPI
    if (argc > 1 && !strcmp(argv[1], "--mpi-collectives")) return mpi_ranks();
#endif
    (void)argc;
    snprintf(g_self, sizeof g_self, "%s", argv[0]); /* the tests run from the project root */
    test_collectives();
    if (make_tmp_dir("test_dist_")) return test_summary();
    test_training(g_dir);
    test_failure(g_dir);
    test_mpi(g_dir);
    return test_summary();
}
