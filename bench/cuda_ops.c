/* GPU benchmark of the CUDA kernels (src/cuda), bf16 inputs, fp32 g and state:
 *   - validation first, nothing timed before it passes: at every shape the bf16 training step
 *     (keep_for_backward/reuse_forward, and the recompute mode) against the fp32 CUDA path on the
 *     same bf16-rounded inputs (relative RMSE of o, dq, dk, dv, dg, db, dw; bars 0.005 for o, 0.01
 *     for dq, dk, dv, 0.02 for dg, db, dw: test_cuda's bf16 bars), and every decode size, both state
 *     pools, one GPU step against the CPU step (gdn2_decode_step) on the same inputs and pool (o
 *     0.005, pool 1e-5 fp32 / 1e-3 bf16). A failed check prints the figures, writes no JSON and
 *     exits 1 before any timing;
 *   - device-to-device copy bandwidth (2 GiB, bytes read + written), the memory ceiling;
 *   - chunk forward and forward+backward at the shapes: ms (median of CUDA-event timed
 *     reps after a warm-up), tokens/s, nominal TFLOP/s (2C(3K+2V) + 6KV per token and head, C = 64;
 *     x3 for fwd+bwd). fwd+bwd is a training step: fwd(keep_for_backward) + bwd(reuse_forward); a
 *     row "fwd+bwd (recompute)" times the plain fwd + bwd, whose backward recomputes the forward
 *     (first shape, all with --all-recompute);
 *     Every timed call gets the caller's workspace (opts->workspace), as a training loop passes it;
 *   - peak GPU memory of a training step in both modes: the bytes of every allocation live at the
 *     step's peak (inputs, d_o, o, the gradients, the workspace: the caller's, sized for the
 *     backward, in both modes; without one the library allocates the same sizes stream-ordered, the
 *     backward's the larger), the accounting of torch.cuda.max_memory_allocated;
 *   - decode step (T = 1) over N slots, H = HV = 16, K = V = 128, bf16 inputs, fp32 and bf16 state
 *     pools: µs per step back to back (CUDA events over 200 consecutive launches from C, no graph;
 *     and the host clock over 200, launch included) and from a cold L2 (a 512 MiB buffer, > 2x the
 *     L2, written before each step; events around the one step), with the achieved GB/s;
 *   - speculative verify (snap_slots: T tokens per sequence, each token's state into its own pool
 *     slot) at N = 1, 16, 64 and T = 2, 4, 8, both pools: one call against T single steps, back to
 *     back (events over 200), validated first against the CPU twin gdn2_decode_verify (o 0.005,
 *     snapshots 1e-5 fp32 / 1e-3 bf16, source slots unchanged). --verify runs only this part.
 *   - --modes gdn2,kda,gdn (default gdn2): which chunk rows run. kda / gdn ("collapsed" in the JSON):
 *     our side of fla's chunk_kda / chunk_gated_delta_rule at the same shapes — the GDN-2 kernels
 *     on collapsed inputs (b = w = beta broadcast; GDN also g broadcast from a per-head decay; no
 *     KDA/GDN-specialised kernel), broadcast and backward fold timed apart and end to end; validated
 *     first on a small problem against the CPU gdn2_kda_chunk_* / gdn2_gdn_chunk_* (see
 *     validate_collapsed). Without gdn2 the gdn2 chunk rows (and their validation) are skipped.
 * --decode: the decode step alone (both pools: validation, then timing; ~20 s, for A/Bs of the decode kernel).
 * usage: cuda_ops [out.json] [--quick] [--all-recompute] [--verify] [--decode] [--modes gdn2,kda,gdn]. Without a GPU
 * it prints why and exits 0. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gdn2.h"
#include "util/internal.h"
#include "gdn2_cuda.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* bf16 on the host: src/util/internal.h's conversions (round to nearest even, NaN kept) */
#define f2bf gdn2_f32_to_bf16
#define bf2f gdn2_bf16_to_f32

static unsigned long long g_rng = 12345;
static double urand(void) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}

static void die(const char *what) {
    fprintf(stderr, "cuda_ops: %s: %s\n", what, gdn2_last_error());
    exit(1);
}
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "cuda_ops: out of host memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* n random values uniform in [lo,hi] on the host, rounded to bf16 when bf16 is set */
static float *host_rand(int64_t n, int bf16, double lo, double hi) {
    float *h = xmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        const float x = (float)(lo + (hi - lo) * urand());
        h[i] = bf16 ? bf2f(f2bf(x)) : x;
    }
    return h;
}
/* a device copy of host values, as bf16 or fp32 */
static void *upload(const float *h, int64_t n, int bf16) {
    const size_t es = bf16 ? 2 : 4;
    void *d = gdn2_cuda_malloc((size_t)n * es);
    if (!d) die("device allocation");
    int rc;
    if (bf16) {
        uint16_t *b = xmalloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) b[i] = f2bf(h[i]);
        rc = gdn2_cuda_memcpy(d, b, (size_t)n * 2, GDN2_CUDA_H2D);
        free(b);
    } else
        rc = gdn2_cuda_memcpy(d, h, (size_t)n * 4, GDN2_CUDA_H2D);
    if (rc) die("upload");
    return d;
}
static void *dev_alloc(size_t bytes) {
    void *d = gdn2_cuda_malloc(bytes);
    if (!d) die("device allocation");
    return d;
}
/* device values (bf16 or fp32) -> new host floats */
static float *download(const void *d, int64_t n, int bf16) {
    float *h = xmalloc((size_t)n * 4);
    if (bf16) {
        uint16_t *b = xmalloc((size_t)n * 2);
        if (gdn2_cuda_memcpy(b, d, (size_t)n * 2, GDN2_CUDA_D2H)) die("download");
        for (int64_t i = 0; i < n; i++) h[i] = bf2f(b[i]);
        free(b);
    } else if (gdn2_cuda_memcpy(h, d, (size_t)n * 4, GDN2_CUDA_D2H))
        die("download");
    return h;
}

/* rms(x - ref) / rms(ref); NaN when x holds a non-finite value */
static double rel_rmse(const float *x, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return NAN;
        const double e = (double)x[i] - ref[i];
        num += e * e;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num / (n ? n : 1));
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    int64_t B, T, H, K, V;
} shape;

/* One shape's tensors: host values (bf16-rounded where the kernels read bf16) and device copies. */
typedef struct {
    gdn2_dims d;
    gdn2_opts o;
    int64_t nk, nv;
    float *hq, *hk, *hv, *hb, *hw, *hg, *hdo;
    gdn2_cuda_fwd_args a;
    gdn2_cuda_bwd_args g;
    void *ws;
    size_t ws_bytes;
} problem;

static void problem_make(problem *p, shape s) {
    memset(p, 0, sizeof *p);
    gdn2_dims d = {s.B, s.T, s.H, s.H, s.K, s.V};
    p->d = d;
    p->o.qk_l2norm = 1;
    p->nk = s.B * s.T * s.H * s.K;
    p->nv = s.B * s.T * s.H * s.V;
    p->hq = host_rand(p->nk, 1, -1, 1); p->hk = host_rand(p->nk, 1, -1, 1); p->hv = host_rand(p->nv, 1, -1, 1);
    p->hb = host_rand(p->nk, 1, 0, 1); p->hw = host_rand(p->nv, 1, 0, 1); p->hg = host_rand(p->nk, 0, -0.5, -0.01);
    p->hdo = host_rand(p->nv, 1, -1, 1);
    gdn2_cuda_fwd_args *a = &p->a;
    gdn2_cuda_bwd_args *g = &p->g;
    a->dtype = GDN2_CUDA_BF16;
    a->q = upload(p->hq, p->nk, 1); a->k = upload(p->hk, p->nk, 1); a->v = upload(p->hv, p->nv, 1);
    a->b = upload(p->hb, p->nk, 1); a->w = upload(p->hw, p->nv, 1); a->g = upload(p->hg, p->nk, 0);
    a->o = dev_alloc(p->nv * 2);
    g->d_o = upload(p->hdo, p->nv, 1);
    g->dq = dev_alloc(p->nk * 2); g->dk = dev_alloc(p->nk * 2); g->dv = dev_alloc(p->nv * 2);
    g->db = dev_alloc(p->nk * 2); g->dw = dev_alloc(p->nv * 2); g->dg = dev_alloc(p->nk * 4);
    /* the backward's workspace for these tensors (the bf16 fast path's size): a recomputing backward and a
     * keep_for_backward / reuse_forward pair without a reserve take the same; a forward less */
    p->ws_bytes = gdn2_cuda_chunk_call_workspace_size(&p->d, &p->o, a, g);
    p->ws = dev_alloc(p->ws_bytes);
}
static void problem_free(problem *p) {
    void *bufs[] = {(void *)p->a.q, (void *)p->a.k, (void *)p->a.v, (void *)p->a.b, (void *)p->a.w, (void *)p->a.g, p->a.o,
                    (void *)p->g.d_o, p->g.dq, p->g.dk, p->g.dv, p->g.db, p->g.dw, p->g.dg, p->ws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gdn2_cuda_free(bufs[i]);
    free(p->hq); free(p->hk); free(p->hv); free(p->hb); free(p->hw); free(p->hg); free(p->hdo);
}
/* one call (bwd 0) or training step (bwd 1) with the caller's workspace (as a training loop passes
 * it); kept: fwd(keep_for_backward) + bwd(reuse_forward), else the backward recomputes the forward.
 * scratch: no workspace, the library's own stream-ordered scratch (the validation's second run) */
static int step_ws(problem *p, int kept, int bwd, int scratch) {
    gdn2_opts o = p->o;
    if (!scratch) {
        o.workspace = p->ws;
        o.workspace_size = p->ws_bytes;
    }
    p->a.keep_for_backward = kept;
    p->g.reuse_forward = kept;
    int rc = gdn2_cuda_chunk_fwd(&p->d, &o, &p->a, NULL);
    if (!rc && bwd) rc = gdn2_cuda_chunk_bwd(&p->d, &o, &p->a, &p->g, NULL);
    return rc;
}
static int step(problem *p, int kept, int bwd) { return step_ws(p, kept, bwd, 0); }

/* Median of reps CUDA-event timed calls of run(ctx) after one untimed warm-up call; t[0..reps)
 * (reps <= 10) holds the sorted times (ms). Exits on an error. */
static double time_median(int (*run)(void *), void *ctx, int reps, double *t) {
    int rc = 0;
    for (int r = -1; r < reps && !rc; r++) {
        gdn2_cuda_timer_start();
        rc = run(ctx);
        const double ms = gdn2_cuda_timer_stop();
        if (!rc) rc = gdn2_cuda_sync();
        if (r >= 0) t[r] = ms;
    }
    if (rc) die("timed step");
    qsort(t, reps, sizeof(double), cmp_d);
    return t[reps / 2];
}
typedef struct {
    problem *p;
    int kept, bwd;
} step_call;
static int run_step(void *c) {
    const step_call *s = c;
    return step(s->p, s->kept, s->bwd);
}

enum { VO, VDQ, VDK, VDV, VDG, VDB, VDW, NV };
static const char *vname[NV] = {"o", "dq", "dk", "dv", "dg", "db", "dw"};
static const double vbar[NV] = {0.005, 0.01, 0.01, 0.01, 0.02, 0.02, 0.02};

/* the outputs of the step in p's device buffers (bf16 except dg), or of the fp32 run in f */
static void outputs(const gdn2_cuda_fwd_args *a, const gdn2_cuda_bwd_args *g, int64_t nk, int64_t nv, int bf16, float **X) {
    X[VO] = download(a->o, nv, bf16);
    X[VDQ] = download(g->dq, nk, bf16); X[VDK] = download(g->dk, nk, bf16); X[VDV] = download(g->dv, nv, bf16);
    X[VDG] = download(g->dg, nk, 0);
    X[VDB] = download(g->db, nk, bf16); X[VDW] = download(g->dw, nv, bf16);
}
static int64_t vlen(int i, const problem *p) { return i == VO || i == VDV || i == VDW ? p->nv : p->nk; }

/* Validation of one shape: the bf16 step (both modes) against the fp32 CUDA path. 0 when it passes. */
static int validate_chunk(shape s, int si) {
    problem p;
    problem_make(&p, s);
    /* the fp32 path on the same (bf16-rounded) values */
    gdn2_cuda_fwd_args fa;
    gdn2_cuda_bwd_args fg;
    memset(&fa, 0, sizeof fa);
    memset(&fg, 0, sizeof fg);
    fa.dtype = GDN2_CUDA_F32;
    fa.q = upload(p.hq, p.nk, 0); fa.k = upload(p.hk, p.nk, 0); fa.v = upload(p.hv, p.nv, 0);
    fa.b = upload(p.hb, p.nk, 0); fa.w = upload(p.hw, p.nv, 0); fa.g = p.a.g;
    fa.o = dev_alloc(p.nv * 4);
    fg.d_o = upload(p.hdo, p.nv, 0);
    fg.dq = dev_alloc(p.nk * 4); fg.dk = dev_alloc(p.nk * 4); fg.dv = dev_alloc(p.nv * 4);
    fg.db = dev_alloc(p.nk * 4); fg.dw = dev_alloc(p.nv * 4); fg.dg = dev_alloc(p.nk * 4);
    int rc = gdn2_cuda_chunk_fwd(&p.d, &p.o, &fa, NULL);
    if (!rc) rc = gdn2_cuda_chunk_bwd(&p.d, &p.o, &fa, &fg, NULL);
    if (!rc) rc = gdn2_cuda_sync();
    if (rc) die("fp32 reference run");
    float *F[NV];
    outputs(&fa, &fg, p.nk, p.nv, 0, F);
    void *fb[] = {(void *)fa.q, (void *)fa.k, (void *)fa.v, (void *)fa.b, (void *)fa.w, fa.o, (void *)fg.d_o, fg.dq, fg.dk,
                  fg.dv, fg.db, fg.dw, fg.dg};
    for (size_t i = 0; i < sizeof fb / sizeof fb[0]; i++) gdn2_cuda_free(fb[i]);
    int bad = 0;
    for (int kept = 1; kept >= 0; kept--) {
        /* poison the outputs: every element must be written */
        if (gdn2_cuda_memset(p.a.o, 0xff, p.nv * 2) || gdn2_cuda_memset(p.g.dq, 0xff, p.nk * 2) ||
            gdn2_cuda_memset(p.g.dg, 0xff, p.nk * 4) || gdn2_cuda_memset(p.g.dw, 0xff, p.nv * 2))
            die("poison");
        rc = step_ws(&p, kept, 1, !kept); /* the recompute mode with the library's own scratch */
        if (!rc) rc = gdn2_cuda_sync();
        if (rc) die("bf16 step");
        float *X[NV];
        outputs(&p.a, &p.g, p.nk, p.nv, 1, X);
        printf("validate (%lld,%lld,%lld,%lld,%lld) bf16 %-14s vs fp32 CUDA, rel_rmse:", (long long)s.B, (long long)s.T,
               (long long)s.H, (long long)s.K, (long long)s.V, kept ? "keep/reuse" : "recompute");
        for (int i = 0; i < NV; i++) {
            const double e = rel_rmse(X[i], F[i], vlen(i, &p));
            const int ok = e <= vbar[i]; /* NaN fails */
            bad |= !ok;
            printf(" %s %.2e%s", vname[i], e, ok ? "" : " FAIL");
            free(X[i]);
        }
        printf("\n");
    }
    for (int i = 0; i < NV; i++) free(F[i]);
    problem_free(&p);
    (void)si;
    return bad;
}

/* The inputs of a recurrent problem (both decode and verify): host q,k,v,b,w,g in [-1,1] / [0,1] /
 * [-0.5,-0.01] (bf16-exact but g) and a pool of state dtype sb, uploaded into a (bf16 tensors, o
 * allocated); slots are the caller's. rec_inputs_free releases what this made. */
typedef struct {
    float *hq, *hk, *hv, *hb, *hw, *hg, *hpool;
} rec_host;
static void rec_inputs_make(rec_host *h, gdn2_cuda_recurrent_args *a, int64_t nk, int64_t nv, int64_t ns, int sb) {
    h->hq = host_rand(nk, 1, -1, 1); h->hk = host_rand(nk, 1, -1, 1); h->hv = host_rand(nv, 1, -1, 1);
    h->hb = host_rand(nk, 1, 0, 1); h->hw = host_rand(nv, 1, 0, 1); h->hg = host_rand(nk, 0, -0.5, -0.01);
    h->hpool = host_rand(ns, sb, -0.1, 0.1);
    a->dtype = GDN2_CUDA_BF16;
    a->q = upload(h->hq, nk, 1); a->k = upload(h->hk, nk, 1); a->v = upload(h->hv, nv, 1);
    a->b = upload(h->hb, nk, 1); a->w = upload(h->hw, nv, 1); a->g = upload(h->hg, nk, 0);
    a->o = dev_alloc(nv * 2);
    a->state_pool = upload(h->hpool, ns, sb);
    a->state_dtype = sb ? GDN2_CUDA_BF16 : GDN2_CUDA_F32;
}
static void rec_inputs_free(rec_host *h, gdn2_cuda_recurrent_args *a) {
    void *bufs[] = {(void *)a->q, (void *)a->k, (void *)a->v, (void *)a->b, (void *)a->w, (void *)a->g, a->o, a->state_pool};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gdn2_cuda_free(bufs[i]);
    free(h->hq); free(h->hk); free(h->hv); free(h->hb); free(h->hw); free(h->hg); free(h->hpool);
}

/* One decode problem: N slots (a permutation), bf16 inputs, pool of state dtype sb. */
typedef struct {
    gdn2_dims d;
    gdn2_opts o;
    int64_t N, nk, nv, ns;
    rec_host h;
    int32_t *hslots;
    gdn2_cuda_recurrent_args a;
    void *ds;
} dproblem;
static void dproblem_make(dproblem *p, int64_t N, int sb) {
    const int64_t H = 16, K = 128, V = 128;
    memset(p, 0, sizeof *p);
    gdn2_dims d = {N, 1, H, H, K, V};
    p->d = d;
    p->o.qk_l2norm = 1;
    p->N = N;
    p->nk = N * H * K;
    p->nv = N * H * V;
    p->ns = N * H * K * V;
    gdn2_cuda_recurrent_args *a = &p->a;
    rec_inputs_make(&p->h, a, p->nk, p->nv, p->ns, sb);
    a->n_slots = N;
    p->hslots = xmalloc(N * 4);
    for (int64_t i = 0; i < N; i++) p->hslots[i] = (int32_t)((i * 7) % N); /* a permutation when N is not a multiple of 7 */
    p->ds = dev_alloc(N * 4);
    if (gdn2_cuda_memcpy(p->ds, p->hslots, N * 4, GDN2_CUDA_H2D)) die("upload");
    a->slots = p->ds;
}
static void dproblem_free(dproblem *p) {
    rec_inputs_free(&p->h, &p->a);
    gdn2_cuda_free(p->ds);
    free(p->hslots);
}
/* one GPU step against the CPU step on the same inputs and pool; 0 when it passes */
static int validate_decode(int64_t N, int sb) {
    dproblem p;
    dproblem_make(&p, N, sb);
    if (gdn2_cuda_memset(p.a.o, 0xff, p.nv * 2)) die("poison");
    int rc = gdn2_cuda_recurrent_fwd(&p.d, &p.o, &p.a, NULL);
    if (!rc) rc = gdn2_cuda_sync();
    if (rc) die("decode step");
    float *og = download(p.a.o, p.nv, 1), *pg = download(p.a.state_pool, p.ns, sb);
    float *oc = xmalloc(p.nv * 4);
    void *pc;
    if (sb) { /* the CPU step's bf16 pool: the same starting values */
        uint16_t *b = xmalloc(p.ns * 2);
        for (int64_t i = 0; i < p.ns; i++) b[i] = f2bf(p.h.hpool[i]);
        pc = b;
    } else {
        pc = xmalloc(p.ns * 4);
        memcpy(pc, p.h.hpool, p.ns * 4);
    }
    const gdn2_decode_tensors t = {p.h.hq, p.h.hk, p.h.hv, p.h.hg, p.h.hb, p.h.hw, NULL, NULL, oc, pc, N, p.hslots,
                                   sb ? GDN2_STATE_BF16 : GDN2_STATE_F32};
    if (gdn2_decode_step(&p.d, &p.o, &t)) die("CPU decode step");
    float *pcf = xmalloc(p.ns * 4);
    for (int64_t i = 0; i < p.ns; i++) pcf[i] = sb ? bf2f(((uint16_t *)pc)[i]) : ((float *)pc)[i];
    const double eo = rel_rmse(og, oc, p.nv), es = rel_rmse(pg, pcf, p.ns), bs = sb ? 1e-3 : 1e-5;
    const int bad = !(eo <= 0.005) || !(es <= bs);
    printf("validate decode N=%-5lld %s pool: GPU vs CPU step, o rel_rmse %.2e (bar 5e-3), pool %.2e (bar %.0e)%s\n",
           (long long)N, sb ? "bf16" : "fp32", eo, es, bs, bad ? " FAIL" : "");
    free(og); free(pg); free(oc); free(pc); free(pcf);
    dproblem_free(&p);
    return bad;
}

/* One speculative-verify problem (gdn2_cuda_recurrent_fwd with snap_slots): N sequences of T draft
 * tokens, bf16 inputs, H = HV = 16, K = V = 128, a pool of N*(T+1) slots of state dtype sb: sequence
 * i reads slot i*(T+1) + T/2 and writes its T per-token states into the other T slots of its block. */
typedef struct {
    gdn2_dims d;
    gdn2_opts o;
    int64_t N, T, nslot, nk, nv, ns;
    rec_host h;
    int32_t *hsrc, *hsnap;
    gdn2_cuda_recurrent_args a;
    void *dsrc, *dsnap;
} vproblem;
static void vproblem_make(vproblem *p, int64_t N, int64_t T, int sb) {
    const int64_t H = 16, K = 128, V = 128;
    memset(p, 0, sizeof *p);
    gdn2_dims d = {N, T, H, H, K, V};
    p->d = d;
    p->o.qk_l2norm = 1;
    p->N = N, p->T = T, p->nslot = N * (T + 1);
    p->nk = N * T * H * K, p->nv = N * T * H * V, p->ns = p->nslot * H * K * V;
    p->hsrc = xmalloc((size_t)N * 4);
    p->hsnap = xmalloc((size_t)(N * T) * 4);
    for (int64_t i = 0; i < N; i++) {
        const int64_t base = i * (T + 1), mid = T / 2;
        p->hsrc[i] = (int32_t)(base + mid);
        for (int64_t j = 0, m = 0; j <= T; j++)
            if (j != mid) p->hsnap[i * T + m++] = (int32_t)(base + j);
    }
    gdn2_cuda_recurrent_args *a = &p->a;
    rec_inputs_make(&p->h, a, p->nk, p->nv, p->ns, sb);
    a->n_slots = p->nslot;
    p->dsrc = dev_alloc(N * 4);
    p->dsnap = dev_alloc(N * T * 4);
    if (gdn2_cuda_memcpy(p->dsrc, p->hsrc, N * 4, GDN2_CUDA_H2D) || gdn2_cuda_memcpy(p->dsnap, p->hsnap, N * T * 4, GDN2_CUDA_H2D))
        die("upload");
    a->slots = p->dsrc;
    a->snap_slots = p->dsnap;
}
static void vproblem_free(vproblem *p) {
    rec_inputs_free(&p->h, &p->a);
    gdn2_cuda_free(p->dsrc), gdn2_cuda_free(p->dsnap);
    free(p->hsrc); free(p->hsnap);
}
/* one GPU verify against the CPU twin (gdn2_decode_verify) on the same inputs and pool: o, every
 * snapshot slot, and the source slots unchanged; 0 when it passes */
static int validate_verify(int64_t N, int64_t T, int sb) {
    vproblem p;
    vproblem_make(&p, N, T, sb);
    if (gdn2_cuda_memset(p.a.o, 0xff, p.nv * 2)) die("poison");
    int rc = gdn2_cuda_recurrent_fwd(&p.d, &p.o, &p.a, NULL);
    if (!rc) rc = gdn2_cuda_sync();
    if (rc) die("verify");
    float *og = download(p.a.o, p.nv, 1), *pg = download(p.a.state_pool, p.ns, sb);
    float *oc = xmalloc(p.nv * 4);
    void *pc;
    if (sb) {
        uint16_t *b = xmalloc(p.ns * 2);
        for (int64_t i = 0; i < p.ns; i++) b[i] = f2bf(p.h.hpool[i]);
        pc = b;
    } else {
        pc = xmalloc(p.ns * 4);
        memcpy(pc, p.h.hpool, p.ns * 4);
    }
    const gdn2_decode_tensors t = {p.h.hq, p.h.hk, p.h.hv, p.h.hg, p.h.hb, p.h.hw, NULL, NULL, oc, pc, p.nslot, p.hsrc,
                                   sb ? GDN2_STATE_BF16 : GDN2_STATE_F32};
    if (gdn2_decode_verify(&p.d, &p.o, &t, p.hsnap)) die("CPU verify");
    float *pcf = xmalloc(p.ns * 4);
    for (int64_t i = 0; i < p.ns; i++) pcf[i] = sb ? bf2f(((uint16_t *)pc)[i]) : ((float *)pc)[i];
    /* every slot of the pool: snapshots compared with the CPU's, sources must still be the start */
    const int64_t S = 16 * 128 * 128;
    int src_same = 1;
    for (int64_t i = 0; i < N; i++)
        src_same &= !memcmp(pg + (size_t)p.hsrc[i] * S, p.h.hpool + (size_t)p.hsrc[i] * S, (size_t)S * 4);
    const double eo = rel_rmse(og, oc, p.nv), es = rel_rmse(pg, pcf, p.ns), bs = sb ? 1e-3 : 1e-5;
    const int bad = !(eo <= 0.005) || !(es <= bs) || !src_same;
    printf("validate verify N=%-3lld T=%lld %s pool: GPU vs CPU twin, o rel_rmse %.2e (bar 5e-3), pool (snapshots) %.2e (bar %.0e), "
           "sources %s%s\n", (long long)N, (long long)T, sb ? "bf16" : "fp32", eo, es, bs, src_same ? "unchanged" : "CHANGED",
           bad ? " FAIL" : "");
    free(og); free(pg); free(oc); free(pc); free(pcf);
    vproblem_free(&p);
    return bad;
}
static const int64_t vNs[3] = {1, 16, 64}, vTs[3] = {2, 4, 8};
static int validate_verify_all(void) {
    int bad = 0;
    for (int sb = 0; sb < 2; sb++)
        for (int a = 0; a < 3; a++)
            for (int c = 0; c < 3; c++) bad |= validate_verify(vNs[a], vTs[c], sb);
    return bad;
}
/* One verify call (snapshots into slots) against T single decode steps (T = 1 calls, in place),
 * back to back, CUDA events over 200 repetitions each (after 20 warm-up ones). JSON rows into jf. */
static void verify_bench(FILE *jf) {
    if (jf) fprintf(jf, "\"verify\": [\n");
    int first = 1;
    for (int sb = 0; sb < 2; sb++)
        for (int a = 0; a < 3; a++)
            for (int c = 0; c < 3; c++) {
                const int64_t N = vNs[a], T = vTs[c];
                vproblem p;
                vproblem_make(&p, N, T, sb);
                dproblem s;
                dproblem_make(&s, N, sb);
                int rc = 0;
                for (int i = 0; i < 20 && !rc; i++) rc = gdn2_cuda_recurrent_fwd(&p.d, &p.o, &p.a, NULL);
                for (int i = 0; i < 20 && !rc; i++) rc = gdn2_cuda_recurrent_fwd(&s.d, &s.o, &s.a, NULL);
                rc |= gdn2_cuda_sync();
                const int reps = 200;
                rc |= gdn2_cuda_timer_start();
                for (int i = 0; i < reps && !rc; i++) rc = gdn2_cuda_recurrent_fwd(&p.d, &p.o, &p.a, NULL);
                const double us_verify = gdn2_cuda_timer_stop() / reps * 1e3;
                rc |= gdn2_cuda_timer_start();
                for (int i = 0; i < reps && !rc; i++)
                    for (int64_t j = 0; j < T && !rc; j++) rc = gdn2_cuda_recurrent_fwd(&s.d, &s.o, &s.a, NULL);
                const double us_steps = gdn2_cuda_timer_stop() / reps * 1e3;
                if (rc || gdn2_cuda_sync()) die("verify timing");
                /* state bytes: one read of the source, T snapshot writes (verify); T reads + T writes (steps) */
                const double sbytes = (double)N * 16 * 128 * 128 * (sb ? 2 : 4);
                const double gb_v = sbytes * (1 + T) / (us_verify * 1e-6) / 1e9;
                printf("verify N=%-3lld T=%lld%s: one call %8.2f us (state %5.0f GB/s) | %lld steps %8.2f us | steps/verify %.2fx\n",
                       (long long)N, (long long)T, sb ? " bf16 state" : "", us_verify, gb_v, (long long)T, us_steps,
                       us_steps / us_verify);
                if (jf)
                    fprintf(jf, "%s  {\"N\": %lld, \"T\": %lld, \"state\": \"%s\", \"us_verify\": %.3f, \"us_steps\": %.3f, \"speedup\": %.3f}",
                            first ? "" : ",\n", (long long)N, (long long)T, sb ? "bf16" : "fp32", us_verify, us_steps,
                            us_steps / us_verify);
                first = 0;
                vproblem_free(&p);
                dproblem_free(&s);
            }
    if (jf) fprintf(jf, "\n]");
}

/* --modes: which chunk rows run (decode and verify always do) */
enum { MODE_GDN2 = 1, MODE_KDA = 2, MODE_GDN = 4 };
static int parse_modes(const char *s) {
    int m = 0;
    while (*s) {
        const size_t n = strcspn(s, ",");
        if (n == 4 && !strncmp(s, "gdn2", 4)) m |= MODE_GDN2;
        else if (n == 3 && !strncmp(s, "kda", 3)) m |= MODE_KDA;
        else if (n == 3 && !strncmp(s, "gdn", 3)) m |= MODE_GDN;
        else return -1;
        s += n + (s[n] == ',');
    }
    return m ? m : -1;
}

#ifdef GDN2_HAVE_CUDA
/* ---- KDA / GDN rows (--modes kda,gdn): our side of fla's chunk_kda / chunk_gated_delta_rule ----
 * There is no KDA- or GDN-specialised CUDA kernel: these rows run the GDN-2 chunk kernels on
 * collapsed inputs (src/ops/collapse.c's limits, here on the device):
 *   KDA: b[n,h,:] = beta[n,h], w[n,hv,:] = beta[n,hv/G]   (beta [B,T,H] bf16, g per channel)
 *   GDN: the same, and g[n,h,:] = -softplus(f[n,h]): a scalar log decay per head (f [B,T,H] bf16;
 *        A_log = 0, dt_bias = 0), broadcast over K.
 * The broadcast is the model's own gate kernel (gdn2_cuda_gates_fwd, src/cuda/nn.cu, mixer "gdn":
 * its b / w broadcast is KDA's too; g only for GDN) and the backward's fold is gdn2_cuda_gates_bwd:
 *   dpb[n,h] = (sum_c db[n,h,c] + sum_{hv of h} sum_j dw[n,hv,j]) beta (1 - beta)
 *   GDN also df[n,h] = (sum_c dg[n,h,c]) (-softplus'(f[n,h]))
 * (the model's fused form: dpb is the gradient of the pre-sigmoid beta logit, the same bytes as
 * fla's dbeta; df is that of the raw gate f). Timed separately: ms_gdn2 the chunk call(s) alone on
 * the expanded inputs, ms_expand the broadcast (+ the fold for fwd+bwd) alone, ms_total the whole
 * (expand, fwd, [bwd, fold]) end to end, the figure to compare with fla's. */
#include "cuda/nn.h"
#include "util/act.h"

#define MX_BCAST 2 /* gdn2_cuda_gates_* mixer "gdn" (src/cuda/nn.cu); g NULL: KDA's b, w broadcast */

typedef struct {
    problem p;
    int gdn;
    int64_t nh;               /* B*T*H */
    float *hbeta, *hf;        /* host beta, f [B,T,H] (bf16-exact) */
    void *beta, *f, *dpb, *df; /* device bf16 [B,T,H] (f, df: GDN only) */
    float *zeros;             /* device fp32 [H]: A_log = dt_bias = 0 */
    gdn2_cuda_nn *nn;
} cproblem;

/* the expansion: b, w (and GDN's g) of p.a from beta (and f) */
static int c_expand(cproblem *c) {
    const problem *p = &c->p;
    return gdn2_cuda_gates_fwd(MX_BCAST, p->d.B * p->d.T, p->d.H, p->d.HV, p->d.K, p->d.V, 1.0f, c->f, c->beta, NULL,
                               c->zeros, c->zeros, c->gdn ? (float *)p->a.g : NULL, (void *)p->a.b, (void *)p->a.w,
                               gdn2_cuda_nn_stream(c->nn));
}
/* the backward's fold: dpb (and GDN's df) from db, dw (and dg) */
static int c_fold(cproblem *c) {
    const problem *p = &c->p;
    return gdn2_cuda_gates_bwd(c->nn, MX_BCAST, p->d.B * p->d.T, p->d.H, p->d.HV, p->d.K, p->d.V, 1.0f, c->f, c->beta,
                               NULL, p->a.g, c->zeros, c->zeros, p->g.dg, p->g.db, p->g.dw, c->gdn ? c->df : NULL, c->dpb,
                               NULL, NULL, NULL);
}
static void cproblem_make(cproblem *c, shape s, int gdn) {
    memset(c, 0, sizeof *c);
    problem_make(&c->p, s); /* q, k, v, d_o, g (KDA's per-channel decay) and the buffers; b, w overwritten */
    c->gdn = gdn;
    c->nh = s.B * s.T * s.H;
    c->hbeta = host_rand(c->nh, 1, 0, 1);
    c->beta = upload(c->hbeta, c->nh, 1);
    c->dpb = dev_alloc(c->nh * 2);
    c->zeros = dev_alloc(s.H * 4);
    if (gdn2_cuda_memset(c->zeros, 0, s.H * 4)) die("memset");
    if (gdn) { /* -softplus(f) in [-0.5, -0.01], the range of the per-channel g */
        c->hf = host_rand(c->nh, 1, -4.6, -0.54);
        c->f = upload(c->hf, c->nh, 1);
        c->df = dev_alloc(c->nh * 2);
    }
    if (gdn2_cuda_nn_create(&c->nn)) die("gdn2_cuda_nn_create");
    if (c_expand(c) || gdn2_cuda_nn_sync(c->nn)) die("expansion");
}
static void cproblem_free(cproblem *c) {
    gdn2_cuda_nn_destroy(c->nn);
    void *bufs[] = {c->beta, c->f, c->dpb, c->df, c->zeros};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gdn2_cuda_free(bufs[i]);
    free(c->hbeta); free(c->hf);
    problem_free(&c->p);
}
/* one timed unit: what 0 the chunk call(s) alone, 1 the expansion (+ fold) alone, 2 all of it */
typedef struct {
    cproblem *c;
    int bwd, what;
} cstep_call;
static int run_cstep(void *x) {
    const cstep_call *s = x;
    int rc = 0;
    if (s->what) rc = c_expand(s->c);
    if (!rc && s->what != 1) rc = step(&s->c->p, s->bwd, s->bwd);
    if (!rc && s->bwd && s->what) rc = c_fold(s->c);
    return rc;
}

/* Validation on a small problem, (1, 256, 2, 128, 128): expansion, training step (keep/reuse) and
 * fold on the GPU (bf16) against the CPU collapse entry points gdn2_kda_chunk_fwd / _bwd (or
 * gdn2_gdn_*) in fp32 on the same bf16-rounded inputs (GDN: the g the device computed, column 0).
 * Bars: the bf16 ones (o 0.005; dq, dk, dv 0.01; dg (KDA), dpb, df (GDN) 0.02). 0 when it passes. */
static int validate_collapsed(int gdn) {
    const shape s = {1, 256, 2, 128, 128};
    cproblem c;
    cproblem_make(&c, s, gdn);
    problem *p = &c.p;
    const int64_t nk = p->nk, nv = p->nv, nh = c.nh, K = s.K;
    if (gdn2_cuda_memset(p->a.o, 0xff, nv * 2) || gdn2_cuda_memset(c.dpb, 0xff, nh * 2)) die("poison");
    int rc = step(p, 1, 1);
    if (!rc) rc = c_fold(&c);
    if (!rc) rc = gdn2_cuda_sync();
    if (!rc) rc = gdn2_cuda_nn_sync(c.nn);
    if (rc) die("collapsed step");
    float *X[NV];
    outputs(&p->a, &p->g, nk, nv, 1, X);
    float *xpb = download(c.dpb, nh, 1), *xdf = gdn ? download(c.df, nh, 1) : NULL;
    float *gdev = gdn ? download(p->a.g, nk, 0) : NULL;
    /* the CPU twin */
    float *gs = NULL;
    if (gdn) {
        gs = xmalloc(nh * 4);
        for (int64_t i = 0; i < nh; i++) gs[i] = gdev[i * K];
    }
    float *oc = xmalloc(nv * 4), *dq = xmalloc(nk * 4), *dk = xmalloc(nk * 4), *dv = xmalloc(nv * 4);
    float *dg = xmalloc((gdn ? nh : nk) * 4), *dbeta = xmalloc(nh * 4);
    const gdn2_fwd_tensors t = {p->hq, p->hk, p->hv, gdn ? gs : p->hg, NULL, NULL, NULL, NULL, NULL, oc, NULL};
    const gdn2_bwd_tensors g = {p->hdo, NULL, dq, dk, dv, dg, NULL, NULL, NULL, NULL, NULL};
    rc = gdn ? gdn2_gdn_chunk_fwd(&p->d, &p->o, &t, c.hbeta) : gdn2_kda_chunk_fwd(&p->d, &p->o, &t, c.hbeta);
    if (!rc) rc = gdn ? gdn2_gdn_chunk_bwd(&p->d, &p->o, &t, c.hbeta, &g, dbeta)
                      : gdn2_kda_chunk_bwd(&p->d, &p->o, &t, c.hbeta, &g, dbeta);
    if (rc) die("CPU collapse reference");
    /* the fold's expected outputs: dpb = dbeta beta (1 - beta), df = dg_scalar (-softplus'(f)) */
    float *epb = xmalloc(nh * 4), *edf = xmalloc(nh * 4);
    for (int64_t i = 0; i < nh; i++) {
        epb[i] = dbeta[i] * c.hbeta[i] * (1.0f - c.hbeta[i]);
        edf[i] = gdn ? dg[i] * -gdn2_softplus_grad_f32(c.hf[i]) : 0.0f;
    }
    struct { const char *n; const float *x, *r; int64_t len; double bar; } chk[] = {
        {"o", X[VO], oc, nv, 0.005}, {"dq", X[VDQ], dq, nk, 0.01}, {"dk", X[VDK], dk, nk, 0.01},
        {"dv", X[VDV], dv, nv, 0.01}, {gdn ? "df" : "dg", gdn ? xdf : X[VDG], gdn ? edf : dg, gdn ? nh : nk, 0.02},
        {"dpb", xpb, epb, nh, 0.02}};
    int bad = 0;
    printf("validate %s (1,256,2,128,128) bf16 GDN-2 kernels on collapsed inputs vs CPU %s, rel_rmse:", gdn ? "gdn" : "kda",
           gdn ? "gdn2_gdn_chunk_fwd/bwd" : "gdn2_kda_chunk_fwd/bwd");
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++) {
        const double e = rel_rmse(chk[i].x, chk[i].r, chk[i].len);
        const int ok = e <= chk[i].bar; /* NaN fails */
        bad |= !ok;
        printf(" %s %.2e%s", chk[i].n, e, ok ? "" : " FAIL");
    }
    printf("\n");
    for (int i = 0; i < NV; i++) free(X[i]);
    free(xpb); free(xdf); free(gdev); free(gs); free(oc); free(dq); free(dk); free(dv); free(dg); free(dbeta);
    free(epb); free(edf);
    cproblem_free(&c);
    return bad;
}

#define COLLAPSED_NOTE "GDN-2 CUDA kernel on collapsed inputs (no KDA/GDN-specialised kernel): b = w = beta broadcast%s " \
    "by the model's gate kernel; ms_gdn2 = chunk call(s) alone, ms_expand = broadcast%s alone, ms_total = all end to end"
/* JSON rows "collapsed": fwd and fwd+bwd (keep/reuse) at each shape for each mode in modes */
static void collapsed_bench(FILE *jf, const shape *shapes, int nshapes, int modes) {
    if (jf) fprintf(jf, ",\n\"collapsed\": [\n");
    int first = 1;
    for (int m = 0; m < 2; m++) {
        const int gdn = m == 1;
        if (!(modes & (gdn ? MODE_GDN : MODE_KDA))) continue;
        for (int si = 0; si < nshapes; si++) {
            const shape s = shapes[si];
            cproblem c;
            cproblem_make(&c, s, gdn);
            const problem *p = &c.p;
            /* peak: the gdn2 rows' tensors (expanded b, w, g and their gradients included) + beta, dpb (+ f, df) */
            const double tensors = (double)(p->nk * 2 * 3 + p->nk * 4 + p->nv * 2 * 3) + (double)(p->nv * 2) +
                                   (double)(p->nk * 2 * 3 + p->nk * 4 + p->nv * 2 * 2) + (double)c.nh * 2 * (gdn ? 4 : 2);
            const double peak = (tensors + (double)p->ws_bytes) / 1e9;
            for (int bwd = 0; bwd < 2; bwd++) {
                const int reps = bwd ? 5 : 10;
                double t[10];
                double ms[3];
                for (int what = 0; what < 3; what++) {
                    cstep_call sc = {&c, bwd, what};
                    ms[what] = time_median(run_cstep, &sc, reps, t);
                }
                const double tok = (double)s.B * s.T;
                const char *mname = gdn ? "gdn" : "kda", *name = bwd ? "fwd+bwd" : "fwd";
                printf("%-3s %-7s B=%-3lld T=%-6lld H=%-3lld K=%lld V=%lld: chunk %8.3f ms  expand%s %6.3f ms  total %8.3f ms  %7.2f Mtok/s",
                       mname, name, (long long)s.B, (long long)s.T, (long long)s.H, (long long)s.K, (long long)s.V, ms[0],
                       bwd ? "+fold" : "", ms[1], ms[2], tok / ms[2] / 1e3);
                if (bwd) printf("  peak %.2f GB", peak);
                printf("\n");
                if (jf) {
                    fprintf(jf, "%s  {\"mode\": \"%s\", \"name\": \"%s\", \"shape\": [%lld, %lld, %lld, %lld, %lld], \"dtype\": \"bf16\", "
                            "\"ms_gdn2\": %.4f, \"ms_expand\": %.4f, \"ms_total\": %.4f, \"mtok_s\": %.3f",
                            first ? "" : ",\n", mname, name, (long long)s.B, (long long)s.T, (long long)s.H, (long long)s.K,
                            (long long)s.V, ms[0], ms[1], ms[2], tok / ms[2] / 1e3);
                    if (bwd) fprintf(jf, ", \"peak_gb_gdn2\": %.3f, \"workspace_gb\": %.3f", peak, (double)p->ws_bytes / 1e9);
                    fprintf(jf, ", \"note\": \"" COLLAPSED_NOTE "\"}", gdn ? " and g = -softplus(f) broadcast over K" : "",
                            bwd ? " + fold (dbeta, GDN dg)" : "");
                }
                first = 0;
            }
            cproblem_free(&c);
        }
    }
    if (jf) fprintf(jf, "\n]");
}
#endif

int main(int argc, char **argv) {
    const char *json = NULL;
    int quick = 0, all_recompute = 0, verify_only = 0, decode_only = 0, modes = MODE_GDN2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--modes")) {
            if (i + 1 >= argc || (modes = parse_modes(argv[i + 1])) < 0) {
                fprintf(stderr, "cuda_ops: --modes %s: expected a comma list of gdn2, kda, gdn (e.g. gdn2,kda,gdn)\n",
                        i + 1 < argc ? argv[i + 1] : "(missing)");
                return 2;
            }
            i++;
        }
        else if (!strcmp(argv[i], "--all-recompute")) all_recompute = 1;
        else if (!strcmp(argv[i], "--verify")) verify_only = 1;
        else if (!strcmp(argv[i], "--decode")) decode_only = 1;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: cuda_ops [out.json] [--quick] [--all-recompute] [--verify] [--decode] [--modes gdn2,kda,gdn]\n");
            return 2;
        } else json = argv[i];
    }
    if (!gdn2_cuda_available()) {
        printf("cuda_ops: no GPU benchmark: %s\n", gdn2_last_error());
        return 0;
    }
    char name[128];
    int drv = 0, rt = 0;
    gdn2_cuda_device_info(name, sizeof name, &drv, &rt);
    printf("device: %s, driver API %d, runtime %d\n", name, drv, rt);

    const shape shapes[] = {{8, 4096, 16, 128, 128}, {2, 16384, 16, 128, 128}, {1, 65536, 16, 128, 128}, {32, 2048, 32, 128, 128}};
    const int nshapes = quick ? 1 : 4;
    const int Ns[] = {1, 16, 64, 256, 1024};

    if (verify_only) { /* the speculative verify alone: its validation, then its timing */
        if (validate_verify_all()) {
            fprintf(stderr, "cuda_ops: verify validation failed (lines marked FAIL above): no timing\n");
            return 1;
        }
        char vtmp[4096]; /* written to json.tmp, renamed when complete */
        if (json) snprintf(vtmp, sizeof vtmp, "%.4000s.tmp", json);
        FILE *vf = json ? fopen(vtmp, "w") : NULL;
        if (json && !vf) {
            fprintf(stderr, "cuda_ops: cannot write %s: %s\n", vtmp, strerror(errno));
            return 1;
        }
        if (vf) fprintf(vf, "{\"device\": \"%s\", \"validated\": true,\n", name);
        verify_bench(vf);
        if (vf) {
            fprintf(vf, "}\n");
            if (fclose(vf) || rename(vtmp, json)) {
                fprintf(stderr, "cuda_ops: cannot write %s: %s\n", json, strerror(errno));
                remove(vtmp);
                return 1;
            }
        }
        return 0;
    }

    if (decode_only) modes = 0; /* no chunk rows, no collapsed rows; the verify is left out below */
    /* ---- validation: nothing is timed unless every output is right ---- */
    int bad = 0;
    for (int si = 0; si < nshapes && (modes & MODE_GDN2); si++) bad |= validate_chunk(shapes[si], si);
#ifdef GDN2_HAVE_CUDA
    if (modes & MODE_KDA) bad |= validate_collapsed(0);
    if (modes & MODE_GDN) bad |= validate_collapsed(1);
#endif
    for (int sb = 0; sb < 2; sb++)
        for (int ni = 0; ni < 5; ni++) bad |= validate_decode(Ns[ni], sb);
    if (!decode_only) bad |= validate_verify_all();
    if (bad) {
        fprintf(stderr, "cuda_ops: validation failed (lines marked FAIL above): no timing\n");
        return 1;
    }
    printf("validation passed\n");

    FILE *jf = NULL;
    char tmp[1100];
    if (json) {
        snprintf(tmp, sizeof tmp, "%s.tmp", json);
        jf = fopen(tmp, "w");
        if (!jf) {
            fprintf(stderr, "cuda_ops: cannot write %s\n", tmp);
            return 1;
        }
        fprintf(jf, "{\"device\": \"%s\", \"driver_api\": %d, \"runtime\": %d, \"validated\": true,\n", name, drv, rt);
    }

    /* copy bandwidth: 2 GiB, read + write counted */
    double copy_gbps = 0;
    {
        size_t bytes = (size_t)2 << 30;
        void *a = dev_alloc(bytes), *b = dev_alloc(bytes);
        gdn2_cuda_memset(a, 1, bytes);
        gdn2_cuda_memcpy(b, a, bytes, GDN2_CUDA_D2D);
        double t[10];
        for (int r = 0; r < 10; r++) {
            gdn2_cuda_timer_start();
            gdn2_cuda_memcpy(b, a, bytes, GDN2_CUDA_D2D);
            t[r] = gdn2_cuda_timer_stop();
        }
        qsort(t, 10, sizeof(double), cmp_d);
        copy_gbps = 2.0 * bytes / (t[5] * 1e-3) / 1e9;
        gdn2_cuda_free(a);
        gdn2_cuda_free(b);
        printf("device-to-device copy: %.0f GB/s (2 GiB, read+write)\n", copy_gbps);
    }
    if (jf) fprintf(jf, "\"copy_gbps\": %.1f,\n\"workloads\": [\n", copy_gbps);

    int first = 1;
    for (int si = 0; si < nshapes && (modes & MODE_GDN2); si++) {
        const shape s = shapes[si];
        problem p;
        problem_make(&p, s);
        /* peak memory of a training step: the step's tensors plus the workspace (the caller's in both
         * modes; without one, the forward's scratch is freed, stream-ordered, before the backward
         * takes its own, the larger: the same peak) */
        const double tensors = (double)(p.nk * 2 * 3 + p.nk * 4 + p.nv * 2 * 3) /* q,k,b bf16; g fp32; v,w,d_o bf16 */
                             + (double)(p.nv * 2) /* o */
                             + (double)(p.nk * 2 * 3 + p.nk * 4 + p.nv * 2 * 2); /* dq,dk,db bf16; dg fp32; dv,dw bf16 */
        const size_t ws_fwd = gdn2_cuda_chunk_call_workspace_size(&p.d, &p.o, &p.a, NULL), ws_bwd = p.ws_bytes;
        const double peak_keep = (tensors + (double)ws_bwd) / 1e9;
        const double peak_rec = (tensors + (double)(ws_fwd > ws_bwd ? ws_fwd : ws_bwd)) / 1e9;
        /* mode 0: fwd; 1: fwd(keep) + bwd(reuse); 2: fwd + bwd recomputing */
        static const char *mode_name[3] = {"fwd", "fwd+bwd", "fwd+bwd (recompute)"};
        for (int mode = 0; mode < (si == 0 || all_recompute ? 3 : 2); mode++) {
            const int reps = mode ? 5 : 10;
            double t[10];
            step_call sc = {&p, mode == 1, mode != 0};
            const double ms = time_median(run_step, &sc, reps, t), tok = (double)s.B * s.T;
            const double flop = tok * s.H * (2.0 * 64 * (3 * s.K + 2 * s.V) + 6.0 * s.K * s.V) * (mode ? 3 : 1);
            const double peak = mode == 1 ? peak_keep : mode == 2 ? peak_rec : 0;
            printf("%-19s B=%-3lld T=%-6lld H=%-3lld K=%lld V=%lld: %8.3f ms  %7.2f Mtok/s  %6.1f TFLOP/s (min %.3f max %.3f)",
                   mode_name[mode], (long long)s.B, (long long)s.T, (long long)s.H, (long long)s.K,
                   (long long)s.V, ms, tok / ms / 1e3, flop / ms / 1e9, t[0], t[reps - 1]);
            if (mode) printf("  peak %.2f GB", peak);
            printf("\n");
            if (jf) {
                fprintf(jf, "%s  {\"name\": \"%s\", \"shape\": [%lld, %lld, %lld, %lld, %lld], \"dtype\": \"bf16\", \"ms_gdn2\": %.4f, \"mtok_s\": %.3f, \"tflops\": %.2f",
                        first ? "" : ",\n", mode_name[mode], (long long)s.B, (long long)s.T, (long long)s.H,
                        (long long)s.K, (long long)s.V, ms, tok / ms / 1e3, flop / ms / 1e9);
                if (mode) fprintf(jf, ", \"peak_gb_gdn2\": %.3f, \"peak_gb_gdn2_recompute\": %.3f, \"workspace_gb\": %.3f", peak_keep,
                                  peak_rec, (double)ws_bwd / 1e9);
                fprintf(jf, "}");
            }
            first = 0;
        }
        problem_free(&p);
    }
    if (jf) fprintf(jf, "\n],\n\"decode\": [\n");

    /* decode step: fp32 state pool ("decode"), then a bf16 pool ("decode_bf16_state": half the state bytes) */
    const size_t flush_bytes = (size_t)512 << 20; /* > 2x the H200's L2 (50 MB) */
    void *flush = dev_alloc(flush_bytes);
    for (int sb = 0; sb < 2; sb++)
        for (int ni = 0; ni < 5; ni++) {
            const int64_t N = Ns[ni], H = 16, K = 128, V = 128;
            if (sb && ni == 0 && jf) fprintf(jf, "\n],\n\"decode_bf16_state\": [\n");
            dproblem p;
            dproblem_make(&p, N, sb);
            int rc = 0;
            for (int i = 0; i < 20 && !rc; i++) rc = gdn2_cuda_recurrent_fwd(&p.d, &p.o, &p.a, NULL);
            rc |= gdn2_cuda_sync();
            const int steps = 200;
            double t0 = now_s();
            for (int i = 0; i < steps && !rc; i++) rc = gdn2_cuda_recurrent_fwd(&p.d, &p.o, &p.a, NULL);
            rc |= gdn2_cuda_sync();
            const double us_host = (now_s() - t0) / steps * 1e6;
            rc |= gdn2_cuda_timer_start();
            for (int i = 0; i < steps && !rc; i++) rc = gdn2_cuda_recurrent_fwd(&p.d, &p.o, &p.a, NULL);
            const double us_b2b = gdn2_cuda_timer_stop() / steps * 1e3;
            /* cold L2: the flush buffer written before each step, events around the step alone */
            const int cold_reps = 50;
            double tc[50];
            for (int i = 0; i < cold_reps && !rc; i++) {
                rc = gdn2_cuda_memset(flush, i & 0xff, flush_bytes);
                if (!rc) rc = gdn2_cuda_timer_start();
                if (!rc) rc = gdn2_cuda_recurrent_fwd(&p.d, &p.o, &p.a, NULL);
                tc[i] = gdn2_cuda_timer_stop() * 1e3;
            }
            if (rc) die("decode timing");
            qsort(tc, cold_reps, sizeof(double), cmp_d);
            const double us_cold = tc[cold_reps / 2];
            const double bytes = (double)N * H * K * V * (sb ? 2 : 4) * 2 + (double)N * H * (4 * K * 2 + K * 4 + 3 * V * 2) + N * 4;
            const double gb_b2b = bytes / (us_b2b * 1e-6) / 1e9, gb_cold = bytes / (us_cold * 1e-6) / 1e9;
            printf("decode N=%-5lld%s: back to back %8.2f us/step (events; host clock %.2f)  %6.0f GB/s %3.0f%% of copy; cold L2 %8.2f us  %6.0f GB/s %3.0f%%\n",
                   (long long)N, sb ? " bf16 state" : "", us_b2b, us_host, gb_b2b, 100.0 * gb_b2b / copy_gbps, us_cold, gb_cold,
                   100.0 * gb_cold / copy_gbps);
            if (jf)
                fprintf(jf, "%s  {\"N\": %lld, \"us\": %.3f, \"us_events\": %.3f, \"us_cold\": %.3f, \"bytes\": %.0f, \"gbps\": %.1f, \"gbps_cold\": %.1f, \"copy_gbps\": %.1f}",
                        ni ? ",\n" : "", (long long)N, us_host, us_b2b, us_cold, bytes, gb_b2b, gb_cold, copy_gbps);
            dproblem_free(&p);
        }
    gdn2_cuda_free(flush);
    if (jf) fprintf(jf, "\n],\n");
    if (!decode_only) verify_bench(jf);
#ifdef GDN2_HAVE_CUDA
    if (modes & (MODE_KDA | MODE_GDN)) collapsed_bench(jf, shapes, nshapes, modes);
#endif
    if (jf) {
        fprintf(jf, "}\n");
        if (fclose(jf) != 0 || rename(tmp, json) != 0) {
            fprintf(stderr, "cuda_ops: cannot write %s\n", json);
            return 1;
        }
    }
    return 0;
}
