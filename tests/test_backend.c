/* The CUDA backend (src/backend/cuda.c over src/cuda/nn.cu, gemm.cu, attn.cu, decode_nn.cu and the
 * chunk and recurrent kernels)
 * against the CPU backend (src/backend/cpu.c), op by op, forward and backward, on random inputs.
 * Inputs are rounded to bf16 first, so both backends see the same values (the CPU reads them as
 * fp32, the GPU as bf16 where the op's argument is ACT). Shapes are CI-small but include sizes that
 * are not multiples of 128 (37, 200, 1003, 2304-wide rows) and head sizes K = V = 64 and 128.
 *
 * Bars (relative RMSE of the GPU output against the CPU's, check.h rel_rmse_f32):
 *   ACT (bf16) outputs: 1e-2 (one bf16 rounding is 2^-9 = 2e-3 relative at most);
 *   fp32 outputs computed from bf16-exact inputs in fp32: 1e-5 forward (elementwise / per row),
 *   1e-4 where a reduction's order differs (norm, conv and gate parameter gradients, dbias, dW);
 *   exact (0) for pure data movement (casts of bf16-exact values, embed, gather/scatter, hist);
 *   the GDN-2 chunk kernels in bf16 vs the CPU's fp32 chunk: 2e-2 (o, ht), 3e-2 (gradients)
 *   (fla's bars for bf16 against fp32 are 0.005-0.02 against a float64 reference);
 *   attention: 1e-2 (q, k, v, o, dqkv), 1e-4 (lse), 2e-2 (dq, dk, dv);
 *   sumsq: 1e-12 relative (both in double);
 *   the decode ops over a slot pool with a stride (shuffled slots, untouched rows checked too):
 *   conv_step y 1e-2 and the caches after exact; decode o 1e-2 and the states after 1e-5 (fp32 in
 *   another order); attn_step o 1e-2 and the caches after 1e-5 (RoPE'd keys: another libm's sin/cos).
 * Determinism: embed_bwd, rmsnorm_bwd (dw), gates_bwd (all outputs) and linear_bwd (dX, dW, dbias)
 * run twice on the GPU give bit-identical results.
 * Without a GPU: the CPU side still runs (finite outputs), every GPU check is SKIP_NO_GPU, and
 * gdn2_backend_cuda_init must fail with GDN2_ERR_UNSUPPORTED and a message. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "util/internal.h"
#include "gdn2_cuda.h"
#include "gdn2_layer.h"

static gdn2_backend CPU, GPU;
static int have_gpu;

/* bf16 on the host: src/util/internal.h's conversions (round to nearest even, NaN kept) */
#define f2bf gdn2_f32_to_bf16
#define bf2f gdn2_bf16_to_f32
static float rbf(float x) { return bf2f(f2bf(x)); }

static unsigned long long g_seed = 12345;
/* n values sd * N(0,1), rounded to bf16 */
static float *randn(size_t n, double sd) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rbf((float)(sd * test_normal(&g_seed)));
    return x;
}
/* n values U(lo, hi), rounded to bf16 */
static float *randu(size_t n, double lo, double hi) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rbf((float)(lo + (hi - lo) * test_uniform(&g_seed)));
    return x;
}
/* ---- device buffers of one run, freed together ---- */
typedef struct {
    gdn2_backend *be;
    void *p[64];
    int n, rc;
} arena;

static void *put(arena *a, const float *h, size_t n, int dt) {
    gdn2_backend *be = a->be;
    const size_t bytes = gdn2_be_bytes(be, n, dt);
    void *d = be->alloc(be, bytes, "test tensor");
    if (!d) { a->rc = a->rc ? a->rc : GDN2_ERR_NOMEM; return NULL; }
    a->p[a->n++] = d;
    if (!h) return d;
    int rc;
    if (dt == GDN2_DT_ACT && be->act_bytes == 2) {
        uint16_t *t = malloc((n ? n : 1) * 2);
        for (size_t i = 0; i < n; i++) t[i] = f2bf(h[i]);
        rc = be->upload(be, d, t, bytes);
        free(t);
    } else {
        rc = be->upload(be, d, h, bytes);
    }
    if (rc && !a->rc) a->rc = rc;
    return d;
}
static void *put_raw(arena *a, const void *h, size_t bytes) {
    void *d = a->be->alloc(a->be, bytes, "test raw");
    if (!d) { a->rc = a->rc ? a->rc : GDN2_ERR_NOMEM; return NULL; }
    a->p[a->n++] = d;
    int rc = a->be->upload(a->be, d, h, bytes);
    if (rc && !a->rc) a->rc = rc;
    return d;
}
/* host fp32 copy of a device tensor (malloc'd) */
static float *get(arena *a, const void *d, size_t n, int dt) {
    gdn2_backend *be = a->be;
    float *h = calloc(n ? n : 1, sizeof(float));
    if (!d || a->rc) return h;
    int rc;
    if (dt == GDN2_DT_ACT && be->act_bytes == 2) {
        uint16_t *t = malloc((n ? n : 1) * 2);
        rc = be->download(be, t, d, n * 2);
        for (size_t i = 0; i < n; i++) h[i] = bf2f(t[i]);
        free(t);
    } else {
        rc = be->download(be, h, d, n * sizeof(float));
    }
    if (rc && !a->rc) a->rc = rc;
    return h;
}
static void arena_free(arena *a) {
    for (int i = 0; i < a->n; i++) a->be->release(a->be, a->p[i]);
    a->n = 0;
}
static void note(arena *a, int rc) {
    if (rc && !a->rc) a->rc = rc;
}

/* ---- the outputs of one run ---- */
#define MAXOUT 12
typedef struct {
    int n, rc;
    const char *name[MAXOUT];
    float *v[MAXOUT];
    size_t len[MAXOUT];
    double bar[MAXOUT];
} res;
static void res_add(res *r, const char *name, float *v, size_t len, double bar) {
    r->name[r->n] = name, r->v[r->n] = v, r->len[r->n] = len, r->bar[r->n] = bar;
    r->n++;
}
static void res_free(res *r) {
    for (int i = 0; i < r->n; i++) free(r->v[i]);
    memset(r, 0, sizeof *r);
}
static void finish(arena *a, res *r) {
    r->rc = a->rc;
    if (a->rc == GDN2_OK) r->rc = a->be->sync(a->be);
    arena_free(a);
}

/* CPU sanity (rc, finite) always; then, with a GPU, each output against the CPU's */
static void compare(const char *op, const res *c, const res *g) {
    int fin = c->rc == GDN2_OK;
    for (int i = 0; i < c->n && fin; i++) fin = all_finite_f32(c->v[i], c->len[i]);
    CHECK(fin, "%s: cpu backend runs, finite outputs (rc %d %s)", op, c->rc, c->rc ? gdn2_last_error() : "");
    if (!have_gpu) {
        SKIP_NO_GPU("%s: cuda vs cpu", op);
        return;
    }
    if (g->rc) {
        CHECK(0, "%s: cuda backend failed: rc %d: %s", op, g->rc, gdn2_last_error());
        return;
    }
    for (int i = 0; i < c->n; i++) {
        const double e = rel_rmse_f32(g->v[i], c->v[i], c->len[i]);
        const int ok = all_finite_f32(g->v[i], g->len[i]) && (c->bar[i] == 0 ? e == 0 : e <= c->bar[i]);
        CHECK(ok, "%s %s: cuda vs cpu rel RMSE %.3g (bar %.0e, %zu values)", op, c->name[i], e, c->bar[i], c->len[i]);
    }
}
/* two GPU runs: bit-identical outputs */
static void same_bits(const char *op, const res *g1, const res *g2) {
    if (!have_gpu) {
        SKIP_NO_GPU("%s: determinism", op);
        return;
    }
    int ok = g1->rc == GDN2_OK && g2->rc == GDN2_OK && g1->n == g2->n;
    for (int i = 0; i < g1->n && ok; i++) ok = !memcmp(g1->v[i], g2->v[i], g1->len[i] * sizeof(float));
    CHECK(ok, "%s: two cuda runs give the same bits (all %d outputs)", op, g1->n);
}

#define BOTH(call_cpu, call_gpu)                                 \
    do {                                                         \
        call_cpu;                                                \
        if (have_gpu) { call_gpu; }                              \
    } while (0)

/* ================================================================================================ */
/* elementwise                                                                                      */
/* ================================================================================================ */
static void run_elem(gdn2_backend *be, size_t n, const float *x, const float *a, const float *h1, const float *h2,
                     const float *da, res *r) {
    arena A = {.be = be};
    void *xa = put(&A, x, n, GDN2_DT_ACT);
    float *af = put(&A, a, n, GDN2_DT_F32);
    float *out = put(&A, NULL, n, GDN2_DT_F32);
    float *xf = put(&A, x, n, GDN2_DT_F32);
    void *sg = put(&A, x, n, GDN2_DT_ACT), *dr = put(&A, x, n, GDN2_DT_ACT);
    void *y1 = put(&A, NULL, n, GDN2_DT_ACT);
    void *h1d = put(&A, h1, n, GDN2_DT_ACT), *h2d = put(&A, h2, n, GDN2_DT_ACT), *ad = put(&A, NULL, n, GDN2_DT_ACT);
    void *dh1 = put(&A, da, n, GDN2_DT_ACT), *dh2 = put(&A, NULL, n, GDN2_DT_ACT);
    float *sc = put(&A, a, n, GDN2_DT_F32), *drf = put(&A, a, n, GDN2_DT_F32);
    if (!A.rc) {
        note(&A, be->add(be, n, af, xa, out));
        note(&A, be->cast(be, n, xa, GDN2_DT_ACT, xf, GDN2_DT_F32)); /* bf16-exact: the same values back */
        note(&A, be->cast(be, n, af, GDN2_DT_F32, y1, GDN2_DT_ACT));
        note(&A, be->sigmoid(be, n, sg));
        note(&A, be->dropout(be, n, dr, GDN2_DT_ACT, 0.3f, 0x5EEDULL));
        note(&A, be->swiglu_fwd(be, n, h1d, h2d, ad));
        note(&A, be->swiglu_bwd(be, n, h1d, h2d, dh1, dh2));
        note(&A, be->scale(be, n, sc, 0.37f));
        note(&A, be->dropout(be, n, drf, GDN2_DT_F32, 0.3f, 0x5EEDULL)); /* fp32: the embedding's dropout */
    }
    res_add(r, "add", get(&A, out, n, GDN2_DT_F32), n, 1e-7);
    res_add(r, "cast act->f32", get(&A, xf, n, GDN2_DT_F32), n, 0);
    res_add(r, "cast f32->act", get(&A, y1, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "sigmoid", get(&A, sg, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "dropout p=0.3", get(&A, dr, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "swiglu a", get(&A, ad, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "swiglu dh1", get(&A, dh1, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "swiglu dh2", get(&A, dh2, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "scale", get(&A, sc, n, GDN2_DT_F32), n, 1e-7);
    res_add(r, "dropout f32 p=0.3", get(&A, drf, n, GDN2_DT_F32), n, 1e-7);
    finish(&A, r);
}

static void t_elem(size_t n) {
    float *x = randn(n, 2.0), *a = malloc(n * sizeof(float)), *h1 = randn(n, 2.0), *h2 = randn(n, 1.0);
    float *da = randn(n, 1.0);
    for (size_t i = 0; i < n; i++) a[i] = (float)test_normal(&g_seed); /* not bf16-exact: the cast rounds */
    res c = {0}, g = {0};
    BOTH(run_elem(&CPU, n, x, a, h1, h2, da, &c), run_elem(&GPU, n, x, a, h1, h2, da, &g));
    char op[64];
    snprintf(op, sizeof op, "elementwise n=%zu", n);
    compare(op, &c, &g);
    if (have_gpu && !g.rc) { /* the cast rounds to nearest even, as the host does */
        int exact = 1;
        for (size_t i = 0; i < n; i++) exact &= g.v[2][i] == rbf(a[i]);
        CHECK(exact, "%s: cast f32->bf16 is round-to-nearest-even (bit-exact)", op);
    }
    if (!c.rc) { /* the same dropout mask on both backends, and a share near p dropped */
        size_t zc = 0, same = 1;
        for (size_t i = 0; i < n; i++) {
            zc += c.v[4][i] == 0.0f && x[i] != 0.0f;
            if (have_gpu && !g.rc) same &= (c.v[4][i] == 0.0f) == (g.v[4][i] == 0.0f);
        }
        const double share = (double)zc / (double)n;
        CHECK(same && fabs(share - 0.3) < 0.3 * 0.1 + 3.0 / sqrt((double)n),
              "%s: dropout p=0.3 drops %.4f of the values%s", op, share, have_gpu ? ", the same ones on both backends" : "");
        /* the fp32 dropout: the same mask as the ACT one, the kept values scaled by 1/(1-p) */
        size_t agree = 1;
        for (size_t i = 0; i < n; i++)
            agree &= (c.v[4][i] == 0.0f) == (c.v[9][i] == 0.0f) &&
                     (c.v[9][i] == 0.0f || fabsf(c.v[9][i] - a[i] / 0.7f) <= 1e-6f * fabsf(a[i] / 0.7f));
        CHECK(agree, "%s: fp32 dropout p=0.3: the ACT dropout's mask, kept values / 0.7", op);
    }
    res_free(&c), res_free(&g);
    free(x), free(a), free(h1), free(h2), free(da);
}

/* ================================================================================================ */
/* embedding, rows                                                                                  */
/* ================================================================================================ */
static void run_embed(gdn2_backend *be, int64_t N, int64_t d, int64_t vocab, const int32_t *tok, const float *wte,
                      const float *dout, const float *dwte0, res *r) {
    arena A = {.be = be};
    int32_t *td = put_raw(&A, tok, (size_t)N * sizeof(int32_t));
    float *w = put(&A, wte, (size_t)(vocab * d), GDN2_DT_F32), *out = put(&A, NULL, (size_t)(N * d), GDN2_DT_F32);
    float *dd = put(&A, dout, (size_t)(N * d), GDN2_DT_F32), *dw = put(&A, dwte0, (size_t)(vocab * d), GDN2_DT_F32);
    if (!A.rc) {
        note(&A, be->embed_fwd(be, N, d, td, w, out));
        note(&A, be->embed_bwd(be, N, d, tok, td, dd, dw));
    }
    res_add(r, "out", get(&A, out, (size_t)(N * d), GDN2_DT_F32), (size_t)(N * d), 0);
    res_add(r, "dwte", get(&A, dw, (size_t)(vocab * d), GDN2_DT_F32), (size_t)(vocab * d), 1e-6);
    finish(&A, r);
}

static void t_embed(int64_t N, int64_t d, int64_t vocab) {
    int32_t *tok = malloc((size_t)N * sizeof(int32_t));
    for (int64_t i = 0; i < N; i++) tok[i] = (int32_t)(test_rng_next(&g_seed) % (unsigned long long)vocab);
    float *wte = randn((size_t)(vocab * d), 1.0), *dout = randn((size_t)(N * d), 1.0), *dw0 = randn((size_t)(vocab * d), 0.1);
    res c = {0}, g = {0}, g2 = {0};
    BOTH(run_embed(&CPU, N, d, vocab, tok, wte, dout, dw0, &c), run_embed(&GPU, N, d, vocab, tok, wte, dout, dw0, &g));
    char op[64];
    snprintf(op, sizeof op, "embed N=%lld d=%lld vocab=%lld", (long long)N, (long long)d, (long long)vocab);
    compare(op, &c, &g);
    if (have_gpu) run_embed(&GPU, N, d, vocab, tok, wte, dout, dw0, &g2);
    same_bits(op, &g, &g2);
    res_free(&c), res_free(&g), res_free(&g2);
    free(tok), free(wte), free(dout), free(dw0);
}

static void run_rows(gdn2_backend *be, int64_t nr, int64_t N, int64_t d, const int64_t *rows, const float *src,
                     const float *small, res *r) {
    arena A = {.be = be};
    void *s = put(&A, src, (size_t)(N * d), GDN2_DT_ACT), *g = put(&A, NULL, (size_t)(nr * d), GDN2_DT_ACT);
    void *sm = put(&A, small, (size_t)(nr * d), GDN2_DT_ACT), *sc = put(&A, src, (size_t)(N * d), GDN2_DT_ACT);
    if (!A.rc) {
        note(&A, be->gather_rows(be, nr, d, rows, s, g));
        note(&A, be->scatter_rows(be, nr, N, d, rows, sm, sc));
    }
    res_add(r, "gather", get(&A, g, (size_t)(nr * d), GDN2_DT_ACT), (size_t)(nr * d), 0);
    res_add(r, "scatter", get(&A, sc, (size_t)(N * d), GDN2_DT_ACT), (size_t)(N * d), 0);
    finish(&A, r);
}

static void t_rows(int64_t N, int64_t d) {
    int64_t rows[7] = {3, 0, N - 1, 5, 11, 2, 8}, nr = 7;
    float *src = randn((size_t)(N * d), 1.0), *small = randn((size_t)(nr * d), 1.0);
    res c = {0}, g = {0};
    BOTH(run_rows(&CPU, nr, N, d, rows, src, small, &c), run_rows(&GPU, nr, N, d, rows, src, small, &g));
    compare("gather_rows / scatter_rows", &c, &g);
    res_free(&c), res_free(&g);
    free(src), free(small);
}

/* ================================================================================================ */
/* norms                                                                                            */
/* ================================================================================================ */
static void run_rms(gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *w, const float *dy,
                    const float *dx0, const float *dw0, int acc, res *r) {
    arena A = {.be = be};
    const size_t n = (size_t)(N * D);
    float *xd = put(&A, x, n, GDN2_DT_F32), *wd = put(&A, w, (size_t)D, GDN2_DT_F32);
    void *y = put(&A, NULL, n, GDN2_DT_ACT);
    float *rs = put(&A, NULL, (size_t)N, GDN2_DT_F32);
    void *dyd = put(&A, dy, n, GDN2_DT_ACT);
    float *dx = put(&A, dx0, n, GDN2_DT_F32), *dw = put(&A, dw0, (size_t)D, GDN2_DT_F32);
    void *dxa = put(&A, NULL, n, GDN2_DT_ACT), *dxc = put(&A, NULL, n, GDN2_DT_ACT);
    if (!A.rc) {
        note(&A, be->rmsnorm_fwd(be, N, D, xd, wd, 1e-5f, y, rs));
        note(&A, be->rmsnorm_bwd(be, N, D, xd, wd, rs, dyd, dx, acc, dxa, dw));
        note(&A, be->cast(be, n, dx, GDN2_DT_F32, dxc, GDN2_DT_ACT));
    }
    res_add(r, "y", get(&A, y, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "rstd", get(&A, rs, (size_t)N, GDN2_DT_F32), (size_t)N, 1e-5);
    res_add(r, "dx", get(&A, dx, n, GDN2_DT_F32), n, 1e-4);
    /* dx's ACT copy: the same bits as a cast of dx on this backend */
    float *va = get(&A, dxa, n, GDN2_DT_ACT), *vc = get(&A, dxc, n, GDN2_DT_ACT);
    CHECK(!A.rc && va && vc && !memcmp(va, vc, n * sizeof(float)), "rmsnorm_bwd N=%lld D=%lld (%s): dx_act == cast(dx) bit for bit",
          (long long)N, (long long)D, be == &GPU ? "cuda" : "cpu");
    res_add(r, "dx_act", va, n, 1e-2);
    free(vc);
    res_add(r, "dw", get(&A, dw, (size_t)D, GDN2_DT_F32), (size_t)D, 1e-4);
    finish(&A, r);
}

static void t_rms(int64_t N, int64_t D, int acc) {
    const size_t n = (size_t)(N * D);
    float *x = randn(n, 1.5), *w = randu((size_t)D, 0.5, 1.5), *dy = randn(n, 1.0), *dx0 = randn(n, 0.5);
    float *dw0 = randn((size_t)D, 0.5);
    res c = {0}, g = {0}, g2 = {0};
    BOTH(run_rms(&CPU, N, D, x, w, dy, dx0, dw0, acc, &c), run_rms(&GPU, N, D, x, w, dy, dx0, dw0, acc, &g));
    char op[80];
    snprintf(op, sizeof op, "rmsnorm N=%lld D=%lld acc=%d", (long long)N, (long long)D, acc);
    compare(op, &c, &g);
    if (have_gpu) run_rms(&GPU, N, D, x, w, dy, dx0, dw0, acc, &g2);
    same_bits(op, &g, &g2);
    res_free(&c), res_free(&g), res_free(&g2);
    free(x), free(w), free(dy), free(dx0), free(dw0);
}

/* The residual add fused with the next norm (add_rmsnorm_fwd, the model's forward and decode step):
 * on each backend the same bits as add then rmsnorm_fwd, out apart from a or in place of it; CUDA
 * against the CPU at add's and rmsnorm's bars. */
static void run_addrms(gdn2_backend *be, int64_t N, int64_t D, const float *a, const float *b, const float *w,
                       int fused, int in_place, res *r) {
    arena A = {.be = be};
    const size_t n = (size_t)(N * D);
    float *ad = put(&A, a, n, GDN2_DT_F32), *wd = put(&A, w, (size_t)D, GDN2_DT_F32);
    void *bd = put(&A, b, n, GDN2_DT_ACT), *y = put(&A, NULL, n, GDN2_DT_ACT);
    float *out = in_place ? ad : put(&A, NULL, n, GDN2_DT_F32), *rs = put(&A, NULL, (size_t)N, GDN2_DT_F32);
    if (!A.rc) {
        if (fused) {
            note(&A, be->add_rmsnorm_fwd(be, N, D, ad, bd, out, wd, 1e-5f, y, rs));
        } else {
            note(&A, be->add(be, n, ad, bd, out));
            note(&A, be->rmsnorm_fwd(be, N, D, out, wd, 1e-5f, y, rs));
        }
    }
    res_add(r, "out", get(&A, out, n, GDN2_DT_F32), n, 1e-7);
    res_add(r, "y", get(&A, y, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "rstd", get(&A, rs, (size_t)N, GDN2_DT_F32), (size_t)N, 1e-5);
    finish(&A, r);
}

static int res_same(const res *x, const res *y) {
    int ok = x->rc == GDN2_OK && y->rc == GDN2_OK && x->n == y->n;
    for (int i = 0; i < x->n && ok; i++) ok = !memcmp(x->v[i], y->v[i], x->len[i] * sizeof(float));
    return ok;
}

static void t_addrms(int64_t N, int64_t D) {
    const size_t n = (size_t)(N * D);
    float *a = malloc(n * sizeof(float)), *b = randn(n, 1.0), *w = randu((size_t)D, 0.5, 1.5);
    for (size_t i = 0; i < n; i++) a[i] = 1.5f * (float)test_normal(&g_seed); /* the fp32 residual */
    for (int in_place = 0; in_place < 2; in_place++) {
        res c = {0}, c1 = {0}, g = {0}, g1 = {0};
        char op[96];
        snprintf(op, sizeof op, "add_rmsnorm_fwd N=%lld D=%lld%s", (long long)N, (long long)D, in_place ? " in place" : "");
        BOTH(run_addrms(&CPU, N, D, a, b, w, 1, in_place, &c), run_addrms(&GPU, N, D, a, b, w, 1, in_place, &g));
        compare(op, &c, &g);
        run_addrms(&CPU, N, D, a, b, w, 0, in_place, &c1);
        CHECK(res_same(&c, &c1), "%s: cpu: the same bits as add then rmsnorm_fwd", op);
        if (have_gpu) {
            run_addrms(&GPU, N, D, a, b, w, 0, in_place, &g1);
            CHECK(res_same(&g, &g1), "%s: cuda: the same bits as add then rmsnorm_fwd", op);
        } else {
            SKIP_NO_GPU("%s: cuda: the same bits as add then rmsnorm_fwd", op);
        }
        res_free(&c), res_free(&c1), res_free(&g), res_free(&g1);
    }
    free(a), free(b), free(w);
}

static void run_rmss(gdn2_backend *be, int64_t N, int64_t D, const float *x, const float *a, const float *w,
                     const float *dy, const float *dw0, res *r) {
    arena A = {.be = be};
    const size_t n = (size_t)(N * D);
    void *xd = put(&A, x, n, GDN2_DT_ACT), *ad = put(&A, a, n, GDN2_DT_ACT), *y = put(&A, NULL, n, GDN2_DT_ACT);
    float *wd = put(&A, w, (size_t)D, GDN2_DT_F32), *dw = put(&A, dw0, (size_t)D, GDN2_DT_F32);
    void *dyd = put(&A, dy, n, GDN2_DT_ACT), *dx = put(&A, NULL, n, GDN2_DT_ACT), *dg = put(&A, NULL, n, GDN2_DT_ACT);
    if (!A.rc) {
        note(&A, be->rmsnorm_swish_fwd(be, N, D, xd, ad, wd, 1e-5f, y));
        note(&A, be->rmsnorm_swish_bwd(be, N, D, xd, ad, wd, 1e-5f, dyd, dx, dg, dw));
    }
    res_add(r, "y", get(&A, y, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "dx", get(&A, dx, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "dgate", get(&A, dg, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "dw", get(&A, dw, (size_t)D, GDN2_DT_F32), (size_t)D, 1e-4);
    finish(&A, r);
}

static void t_rmss(int64_t N, int64_t D) {
    const size_t n = (size_t)(N * D);
    float *x = randn(n, 1.0), *a = randn(n, 2.0), *w = randu((size_t)D, 0.5, 1.5), *dy = randn(n, 1.0);
    float *dw0 = randn((size_t)D, 0.5);
    res c = {0}, g = {0}, g2 = {0};
    BOTH(run_rmss(&CPU, N, D, x, a, w, dy, dw0, &c), run_rmss(&GPU, N, D, x, a, w, dy, dw0, &g));
    char op[80];
    snprintf(op, sizeof op, "rmsnorm_swish N=%lld D=%lld", (long long)N, (long long)D);
    compare(op, &c, &g);
    if (have_gpu) run_rmss(&GPU, N, D, x, a, w, dy, dw0, &g2);
    same_bits(op, &g, &g2);
    res_free(&c), res_free(&g), res_free(&g2);
    free(x), free(a), free(w), free(dy), free(dw0);
}

/* ================================================================================================ */
/* conv                                                                                             */
/* ================================================================================================ */
static void run_conv(gdn2_backend *be, int64_t B, int64_t T, int64_t D, int64_t W, const float *x, const float *hist,
                     size_t hs, const float *w, const float *dy, const float *dw0, res *r) {
    arena A = {.be = be};
    const size_t n = (size_t)(B * T * D), nh = (size_t)B * hs;
    void *xd = put(&A, x, n, GDN2_DT_ACT), *y = put(&A, NULL, n, GDN2_DT_ACT);
    float *hd = hist ? put(&A, hist, nh, GDN2_DT_F32) : NULL;
    float *wd = put(&A, w, (size_t)(D * W), GDN2_DT_F32), *dw = put(&A, dw0, (size_t)(D * W), GDN2_DT_F32);
    void *dyd = put(&A, dy, n, GDN2_DT_ACT), *dx = put(&A, NULL, n, GDN2_DT_ACT);
    float *h2 = put(&A, hist ? hist : NULL, nh, GDN2_DT_F32);
    if (!A.rc) {
        note(&A, be->conv_silu_fwd(be, B, T, D, W, xd, hd, hs, wd, y));
        note(&A, be->conv_silu_bwd(be, B, T, D, W, xd, hd, hs, wd, dyd, dx, dw));
        note(&A, be->conv_hist_update(be, B, T, D, W, xd, h2, hs));
    }
    res_add(r, "y", get(&A, y, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "dx", get(&A, dx, n, GDN2_DT_ACT), n, 1e-2);
    res_add(r, "dw", get(&A, dw, (size_t)(D * W), GDN2_DT_F32), (size_t)(D * W), 1e-4);
    res_add(r, "hist_update", get(&A, h2, nh, GDN2_DT_F32), nh, 0);
    finish(&A, r);
}

static void t_conv(int64_t B, int64_t T, int64_t D, int64_t W, int with_hist) {
    const size_t n = (size_t)(B * T * D), hs = (size_t)((W - 1) * D + 17);
    float *x = randn(n, 1.0), *hist = with_hist ? randn((size_t)B * hs, 1.0) : NULL, *w = randn((size_t)(D * W), 0.5);
    float *dy = randn(n, 1.0), *dw0 = randn((size_t)(D * W), 0.1);
    res c = {0}, g = {0};
    BOTH(run_conv(&CPU, B, T, D, W, x, hist, hs, w, dy, dw0, &c), run_conv(&GPU, B, T, D, W, x, hist, hs, w, dy, dw0, &g));
    char op[96];
    snprintf(op, sizeof op, "conv_silu B=%lld T=%lld D=%lld W=%lld hist=%d", (long long)B, (long long)T, (long long)D,
             (long long)W, with_hist);
    compare(op, &c, &g);
    res_free(&c), res_free(&g);
    free(x), free(hist), free(w), free(dy), free(dw0);
}

/* ================================================================================================ */
/* gates                                                                                            */
/* ================================================================================================ */
typedef struct {
    int mixer;
    int64_t N, H, HV, K, V;
    float cb;
} gcase;

static void run_gates(gdn2_backend *be, const gcase *c, const float *f, const float *sb, const float *sw,
                      const float *A_log, const float *dt, const float *g_in, const float *dg, const float *db,
                      const float *dw, const float *dA0, const float *ddt0, res *r) {
    arena A = {.be = be};
    const int gdn = c->mixer == GDN2_MIXER_GDN, g2 = c->mixer == GDN2_MIXER_GDN2;
    const size_t nk = (size_t)(c->N * c->H * c->K), nv = (size_t)(c->N * c->HV * c->V), nh = (size_t)(c->N * c->H);
    const size_t nf = gdn ? nh : nk, nb = g2 ? nk : nh, ndt = gdn ? (size_t)c->H : (size_t)(c->H * c->K);
    void *fd = put(&A, f, nf, GDN2_DT_ACT), *sbd = put(&A, sb, nb, GDN2_DT_ACT);
    void *swd = g2 ? put(&A, sw, nv, GDN2_DT_ACT) : NULL;
    float *Al = put(&A, A_log, (size_t)c->H, GDN2_DT_F32), *dtd = put(&A, dt, ndt, GDN2_DT_F32);
    float *g = put(&A, NULL, nk, GDN2_DT_F32);
    void *b = put(&A, NULL, nk, GDN2_DT_ACT), *w = put(&A, NULL, nv, GDN2_DT_ACT);
    float *gi = g_in ? put(&A, g_in, nk, GDN2_DT_F32) : NULL, *dgd = dg ? put(&A, dg, nk, GDN2_DT_F32) : NULL;
    void *dbd = db ? put(&A, db, nk, GDN2_DT_ACT) : NULL, *dwd = dw ? put(&A, dw, nv, GDN2_DT_ACT) : NULL;
    void *df = put(&A, NULL, nf, GDN2_DT_ACT), *dpb = put(&A, NULL, nb, GDN2_DT_ACT);
    void *dpw = g2 ? put(&A, NULL, nv, GDN2_DT_ACT) : NULL;
    float *dA = dA0 ? put(&A, dA0, (size_t)c->H, GDN2_DT_F32) : NULL, *ddt = ddt0 ? put(&A, ddt0, ndt, GDN2_DT_F32) : NULL;
    if (!A.rc) note(&A, be->gates_fwd(be, c->mixer, c->N, c->H, c->HV, c->K, c->V, c->cb, fd, sbd, swd, Al, dtd, g, b, w));
    if (!A.rc && g_in)
        note(&A, be->gates_bwd(be, c->mixer, c->N, c->H, c->HV, c->K, c->V, c->cb, fd, sbd, swd, gi, Al, dtd, dgd, dbd,
                               dwd, df, dpb, dpw, dA, ddt));
    if (!g_in) { /* forward only */
        res_add(r, "g", get(&A, g, nk, GDN2_DT_F32), nk, 1e-5);
        res_add(r, "b", get(&A, b, nk, GDN2_DT_ACT), nk, 1e-2);
        res_add(r, "w", get(&A, w, nv, GDN2_DT_ACT), nv, 1e-2);
    } else {
        res_add(r, "df", get(&A, df, nf, GDN2_DT_ACT), nf, 1e-2);
        res_add(r, "dpb", get(&A, dpb, nb, GDN2_DT_ACT), nb, 1e-2);
        if (g2) res_add(r, "dpw", get(&A, dpw, nv, GDN2_DT_ACT), nv, 1e-2);
        res_add(r, "dA_log", get(&A, dA, (size_t)c->H, GDN2_DT_F32), (size_t)c->H, 1e-4);
        res_add(r, "ddt", get(&A, ddt, ndt, GDN2_DT_F32), ndt, 1e-4);
    }
    finish(&A, r);
}

static void t_gates(int mixer, int64_t N, int64_t H, int64_t HV, int64_t K, int64_t V) {
    gcase c = {mixer, N, H, HV, K, V, mixer == GDN2_MIXER_GDN2 ? 2.0f : 1.0f};
    const int gdn = mixer == GDN2_MIXER_GDN, g2 = mixer == GDN2_MIXER_GDN2;
    const size_t nk = (size_t)(N * H * K), nv = (size_t)(N * HV * V), nh = (size_t)(N * H);
    const size_t nf = gdn ? nh : nk, nb = g2 ? nk : nh, ndt = gdn ? (size_t)H : (size_t)(H * K);
    float *f = randn(nf, 2.0), *sb = randu(nb, 0.01, 0.99), *sw = randu(nv, 0.01, 0.99), *A_log = randu((size_t)H, -1, 1);
    float *dt = randn(ndt, 0.5), *dg = randn(nk, 1.0), *db = randn(nk, 1.0), *dw = randn(nv, 1.0);
    float *dA0 = randn((size_t)H, 0.1), *ddt0 = randn(ndt, 0.1);
    f[0] = 21.0f, f[nf / 2] = 25.0f; /* past softplus's threshold (20) */
    res cf = {0}, gf = {0}, cb = {0}, gb = {0}, gb2 = {0};
    BOTH(run_gates(&CPU, &c, f, sb, sw, A_log, dt, NULL, NULL, NULL, NULL, NULL, NULL, &cf),
         run_gates(&GPU, &c, f, sb, sw, A_log, dt, NULL, NULL, NULL, NULL, NULL, NULL, &gf));
    char op[96];
    snprintf(op, sizeof op, "gates_fwd mixer=%d N=%lld H=%lld HV=%lld K=%lld", mixer, (long long)N, (long long)H,
             (long long)HV, (long long)K);
    compare(op, &cf, &gf);
    /* the backward reads the forward's g: the CPU's, given to both */
    const float *g_in = cf.v[0];
    BOTH(run_gates(&CPU, &c, f, sb, sw, A_log, dt, g_in, dg, db, dw, dA0, ddt0, &cb),
         run_gates(&GPU, &c, f, sb, sw, A_log, dt, g_in, dg, db, dw, dA0, ddt0, &gb));
    op[6] = 'b', op[7] = 'w', op[8] = 'd'; /* "gates_fwd" -> "gates_bwd" */
    compare(op, &cb, &gb);
    if (have_gpu) run_gates(&GPU, &c, f, sb, sw, A_log, dt, g_in, dg, db, dw, dA0, ddt0, &gb2);
    same_bits(op, &gb, &gb2);
    res_free(&cf), res_free(&gf), res_free(&cb), res_free(&gb), res_free(&gb2);
    free(f), free(sb), free(sw), free(A_log), free(dt), free(dg), free(db), free(dw), free(dA0), free(ddt0);
}

/* ================================================================================================ */
/* linear                                                                                           */
/* ================================================================================================ */
static void run_lin(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const float *X, const float *W,
                    const float *bias, const float *Y0, int ydt, int acc, int dwacc, const float *dY,
                    const float *dX0, const float *dW0, const float *db0, res *r) {
    arena A = {.be = be};
    const size_t nx = (size_t)(N * in), nw = (size_t)(out * in), ny = (size_t)(N * out);
    void *Xd = put(&A, X, nx, GDN2_DT_ACT), *Wd = put(&A, W, nw, GDN2_DT_ACT), *Yd = put(&A, Y0, ny, ydt);
    float *bd = bias ? put(&A, bias, (size_t)out, GDN2_DT_F32) : NULL;
    void *dYd = put(&A, dY, ny, GDN2_DT_ACT), *dXd = put(&A, dX0, nx, GDN2_DT_ACT);
    float *dWd = put(&A, dW0, nw, GDN2_DT_F32), *dbd = bias ? put(&A, db0, (size_t)out, GDN2_DT_F32) : NULL;
    if (!A.rc) {
        note(&A, be->linear_fwd(be, N, in, out, Xd, Wd, bd, Yd, ydt, acc));
        note(&A, be->linear_bwd(be, N, in, out, Xd, Wd, dYd, dXd, acc, dWd, dwacc, dbd));
    }
    res_add(r, "Y", get(&A, Yd, ny, ydt), ny, ydt == GDN2_DT_ACT ? 1e-2 : 1e-5);
    res_add(r, "dX", get(&A, dXd, nx, GDN2_DT_ACT), nx, 1e-2);
    res_add(r, "dW", get(&A, dWd, nw, GDN2_DT_F32), nw, 1e-4);
    if (bias) res_add(r, "dbias", get(&A, dbd, (size_t)out, GDN2_DT_F32), (size_t)out, 1e-4);
    finish(&A, r);
}

/* dwacc 0: dW is written, not added to (the random dW0 the GPU is given must not show) */
static void t_lin(int64_t N, int64_t in, int64_t out, int with_bias, int ydt, int acc, int dwacc) {
    float *X = randn((size_t)(N * in), 1.0), *W = randn((size_t)(out * in), 0.05), *bias = randn((size_t)out, 0.5);
    float *Y0 = randn((size_t)(N * out), 1.0), *dY = randn((size_t)(N * out), 1.0), *dX0 = randn((size_t)(N * in), 0.1);
    float *dW0 = randn((size_t)(out * in), 0.1), *db0 = randn((size_t)out, 0.1);
    res c = {0}, g = {0}, g2 = {0};
    const float *b = with_bias ? bias : NULL;
    BOTH(run_lin(&CPU, N, in, out, X, W, b, Y0, ydt, acc, dwacc, dY, dX0, dW0, db0, &c),
         run_lin(&GPU, N, in, out, X, W, b, Y0, ydt, acc, dwacc, dY, dX0, dW0, db0, &g));
    char op[112];
    snprintf(op, sizeof op, "linear N=%lld in=%lld out=%lld bias=%d y=%s acc=%d dw_acc=%d", (long long)N, (long long)in,
             (long long)out, with_bias, ydt == GDN2_DT_ACT ? "act" : "f32", acc, dwacc);
    compare(op, &c, &g);
    if (have_gpu) run_lin(&GPU, N, in, out, X, W, b, Y0, ydt, acc, dwacc, dY, dX0, dW0, db0, &g2);
    same_bits(op, &g, &g2);
    res_free(&c), res_free(&g), res_free(&g2);
    free(X), free(W), free(bias), free(Y0), free(dY), free(dX0), free(dW0), free(db0);
}

/* count products with one input (the decode step's q/k/v): weights and outputs `wgap` / `ygap`
 * elements apart beyond their size; the gaps of Y keep their values. act: GDN2_BE_SIGMOID on each
 * product (the b/w gates), GDN2_BE_SWIGLU (count 2: the MLP's w1|w2; only Y_0 and its gap are
 * compared, Y_1 is scratch). sep 0: one linear_fwd_batch; 1: linear_fwd (then sigmoid) per product
 * (then swiglu); 2: linear_fwd_batch without act, then the sigmoid op per product (the swiglu op) */
static void run_linb(gdn2_backend *be, int64_t N, int64_t in, int64_t out, int count, size_t wgap, size_t ygap,
                     const float *X, const float *W, const float *Y0, int act, int sep, res *r) {
    arena A = {.be = be};
    const size_t nx = (size_t)(N * in), ws = (size_t)(out * in) + wgap, ys = (size_t)(N * out) + ygap;
    void *Xd = put(&A, X, nx, GDN2_DT_ACT), *Wd = put(&A, W, ws * count, GDN2_DT_ACT), *Yd = put(&A, Y0, ys * count, GDN2_DT_ACT);
    if (!A.rc && sep != 1) note(&A, be->linear_fwd_batch(be, N, in, out, Xd, Wd, ws, Yd, ys, count, sep ? GDN2_BE_NO_ACT : act));
    for (int i = 0; i < count && sep && !A.rc; i++) {
        void *Yi = (char *)Yd + gdn2_be_bytes(be, i * ys, GDN2_DT_ACT);
        if (sep == 1)
            note(&A, be->linear_fwd(be, N, in, out, Xd, (char *)Wd + gdn2_be_bytes(be, i * ws, GDN2_DT_ACT), NULL, Yi,
                                    GDN2_DT_ACT, 0));
        if (act == GDN2_BE_SIGMOID && !A.rc) note(&A, be->sigmoid(be, (size_t)(N * out), Yi));
    }
    if (act == GDN2_BE_SWIGLU && sep && !A.rc)
        note(&A, be->swiglu_fwd(be, (size_t)(N * out), Yd, (char *)Yd + gdn2_be_bytes(be, ys, GDN2_DT_ACT), Yd));
    const size_t keep = act == GDN2_BE_SWIGLU ? ys : ys * count;
    res_add(r, act == GDN2_BE_SWIGLU ? "a = silu(Y_0) Y_1 (and its gap)" : "Y (and the gaps)",
            get(&A, Yd, keep, GDN2_DT_ACT), keep, 1e-2);
    finish(&A, r);
}

static void t_linb(int64_t N, int64_t in, int64_t out, int count, size_t wgap, size_t ygap, int act) {
    const size_t ws = (size_t)(out * in) + wgap, ys = (size_t)(N * out) + ygap;
    float *X = randn((size_t)(N * in), 1.0), *W = randn(ws * count, 0.05), *Y0 = randn(ys * count, 1.0);
    res c = {0}, cs = {0}, g = {0}, g2 = {0}, gs = {0}, gu = {0};
    char op[128];
    snprintf(op, sizeof op, "linear_fwd_batch N=%lld in=%lld out=%lld count=%d gaps %zu/%zu%s", (long long)N,
             (long long)in, (long long)out, count, wgap, ygap,
             act == GDN2_BE_SIGMOID ? " sigmoid" : act == GDN2_BE_SWIGLU ? " swiglu" : "");
    BOTH(run_linb(&CPU, N, in, out, count, wgap, ygap, X, W, Y0, act, 0, &c),
         run_linb(&GPU, N, in, out, count, wgap, ygap, X, W, Y0, act, 0, &g));
    compare(op, &c, &g);
    run_linb(&CPU, N, in, out, count, wgap, ygap, X, W, Y0, act, 1, &cs);
    CHECK(res_same(&c, &cs), "%s: cpu: the same bits as linear_fwd per product (and the act's op)", op);
    if (have_gpu) {
        run_linb(&GPU, N, in, out, count, wgap, ygap, X, W, Y0, act, 0, &g2);
        run_linb(&GPU, N, in, out, count, wgap, ygap, X, W, Y0, act, 1, &gs);
        /* the batched product against cuda's own linear_fwd per product (another algorithm: bf16 bar) */
        const double e = gs.rc || g.rc ? 1.0 : rel_rmse_f32(g.v[0], gs.v[0], gs.len[0]);
        CHECK(e <= 1e-2, "%s: cuda batched vs cuda linear_fwd per product: rel RMSE %.3g (bar 1e-2)", op, e);
        if (act != GDN2_BE_NO_ACT) { /* the act in the product's store == the act's op after it */
            run_linb(&GPU, N, in, out, count, wgap, ygap, X, W, Y0, act, 2, &gu);
            CHECK(res_same(&g, &gu), "%s: cuda: the same bits as the product, then the act's op", op);
        }
    } else if (act != GDN2_BE_NO_ACT) {
        SKIP_NO_GPU("%s: cuda against the product, then the act's op", op);
    }
    same_bits(op, &g, &g2);
    res_free(&c), res_free(&cs), res_free(&g), res_free(&g2), res_free(&gs), res_free(&gu);
    free(X), free(W), free(Y0);
}

/* The output gate's product and the gated norm in one (the decode step): z = rmsnorm_swish(o, X W^T +
 * bias) over rows of D. sep 0: linear_rmsnorm_swish_fwd; 1: linear_fwd into z, then rmsnorm_swish_fwd
 * in place; 2: linear_fwd into a separate gate, then rmsnorm_swish_fwd. At one row the CUDA product
 * applies the norm as it stores (src/cuda/gemv.cuh GEMV_NORM_SWISH): the same bits as 1 and 2. */
static void run_lns(gdn2_backend *be, int64_t N, int64_t in, int64_t out, int64_t D, const float *X, const float *W,
                    const float *bias, const float *o, const float *wn, int sep, res *r) {
    arena A = {.be = be};
    const size_t nz = (size_t)(N * out);
    void *Xd = put(&A, X, (size_t)(N * in), GDN2_DT_ACT), *Wd = put(&A, W, (size_t)(out * in), GDN2_DT_ACT);
    const float *bd = bias ? put(&A, bias, (size_t)out, GDN2_DT_F32) : NULL, *wd = put(&A, wn, (size_t)D, GDN2_DT_F32);
    void *od = put(&A, o, nz, GDN2_DT_ACT), *zd = put(&A, NULL, nz, GDN2_DT_ACT), *gd = put(&A, NULL, nz, GDN2_DT_ACT);
    if (!A.rc && sep == 0) note(&A, be->linear_rmsnorm_swish_fwd(be, N, in, out, Xd, Wd, bd, od, wd, D, 1e-5f, zd));
    if (!A.rc && sep) {
        void *gate = sep == 1 ? zd : gd;
        note(&A, be->linear_fwd(be, N, in, out, Xd, Wd, bd, gate, GDN2_DT_ACT, 0));
        if (!A.rc) note(&A, be->rmsnorm_swish_fwd(be, N * (out / D), D, od, gate, wd, 1e-5f, zd));
    }
    res_add(r, "z", get(&A, zd, nz, GDN2_DT_ACT), nz, 1e-2);
    finish(&A, r);
}

static void t_lns(int64_t N, int64_t in, int64_t out, int64_t D, int with_bias) {
    float *X = randn((size_t)(N * in), 1.0), *W = randn((size_t)(out * in), 0.1), *b = randn((size_t)out, 0.5);
    float *o = randn((size_t)(N * out), 1.0), *wn = randu((size_t)D, 0.5, 1.5);
    const float *bias = with_bias ? b : NULL;
    res c = {0}, c1 = {0}, g = {0}, g1 = {0}, g2 = {0}, g3 = {0};
    char op[112];
    snprintf(op, sizeof op, "linear_rmsnorm_swish N=%lld in=%lld out=%lld D=%lld bias=%d", (long long)N, (long long)in,
             (long long)out, (long long)D, with_bias);
    BOTH(run_lns(&CPU, N, in, out, D, X, W, bias, o, wn, 0, &c), run_lns(&GPU, N, in, out, D, X, W, bias, o, wn, 0, &g));
    compare(op, &c, &g);
    run_lns(&CPU, N, in, out, D, X, W, bias, o, wn, 2, &c1);
    CHECK(res_same(&c, &c1), "%s: cpu: the same bits as linear_fwd then rmsnorm_swish_fwd", op);
    if (have_gpu) {
        run_lns(&GPU, N, in, out, D, X, W, bias, o, wn, 1, &g1);
        run_lns(&GPU, N, in, out, D, X, W, bias, o, wn, 2, &g2);
        CHECK(res_same(&g, &g1) && res_same(&g, &g2),
              "%s: cuda: the same bits as linear_fwd then rmsnorm_swish_fwd (in place and apart)", op);
        run_lns(&GPU, N, in, out, D, X, W, bias, o, wn, 0, &g3);
    } else {
        SKIP_NO_GPU("%s: cuda against linear_fwd then rmsnorm_swish_fwd", op);
    }
    same_bits(op, &g, &g3);
    /* a bad row length: a clear error on each backend, nothing written */
    gdn2_backend *bes[2] = {&CPU, &GPU};
    for (int i = 0; i < 1 + have_gpu; i++) {
        const int rc = bes[i]->linear_rmsnorm_swish_fwd(bes[i], N, in, out, NULL, NULL, NULL, NULL, NULL, out + 1,
                                                         1e-5f, NULL);
        CHECK(rc == GDN2_ERR_ARG && strstr(gdn2_last_error(), "multiple of the norm's row D"),
              "%s: %s: D = out + 1 refused (rc %d: %s)", op, bes[i]->name, rc, gdn2_last_error());
    }
    res_free(&c), res_free(&c1), res_free(&g), res_free(&g1), res_free(&g2), res_free(&g3);
    free(X), free(W), free(b), free(o), free(wn);
}

/* A decode-like chain with no host sync between the ops: per layer l, h = rmsnorm(x + y) (x updated in
 * place), u = h W1_l^T, y = u W2_l^T, all at N = 1 (the one-row products, which the CUDA backend
 * launches as programmatic dependents of the kernel ahead: src/cuda/pdl.cuh). `sync`: the backend's
 * sync after every op, so no kernel can overlap another. A product that read its input before the
 * kernel ahead had written it would give other bits than the synchronised run. */
static void run_chain(gdn2_backend *be, int64_t D, int L, const float *x0, const float *W, const float *nw, int sync,
                      res *r) {
    arena A = {.be = be};
    float *x = put(&A, x0, (size_t)D, GDN2_DT_F32);
    const float *w = put(&A, nw, (size_t)D, GDN2_DT_F32);
    void *Wd = put(&A, W, (size_t)(2 * L * D * D), GDN2_DT_ACT);
    void *h = put(&A, NULL, (size_t)D, GDN2_DT_ACT), *u = put(&A, NULL, (size_t)D, GDN2_DT_ACT);
    void *y = put(&A, x0, (size_t)D, GDN2_DT_ACT);
    for (int l = 0; l < L && !A.rc; l++) {
        const char *W1 = (const char *)Wd + gdn2_be_bytes(be, (size_t)(2 * l) * D * D, GDN2_DT_ACT);
        const char *W2 = (const char *)Wd + gdn2_be_bytes(be, (size_t)(2 * l + 1) * D * D, GDN2_DT_ACT);
        note(&A, be->add_rmsnorm_fwd(be, 1, D, x, y, x, w, 1e-5f, h, NULL));
        if (sync) note(&A, be->sync(be));
        note(&A, be->linear_fwd(be, 1, D, D, h, W1, NULL, u, GDN2_DT_ACT, 0));
        if (sync) note(&A, be->sync(be));
        note(&A, be->linear_fwd(be, 1, D, D, u, W2, NULL, y, GDN2_DT_ACT, 0));
        if (sync) note(&A, be->sync(be));
    }
    res_add(r, "x (the residual)", get(&A, x, (size_t)D, GDN2_DT_F32), (size_t)D, 2e-2);
    res_add(r, "y (the last product)", get(&A, y, (size_t)D, GDN2_DT_ACT), (size_t)D, 2e-2);
    finish(&A, r);
}

static void t_chain(int64_t D, int L) {
    float *x0 = randn((size_t)D, 1.0), *W = randn((size_t)(2 * L * D * D), 1.0 / sqrt((double)D));
    float *nw = randu((size_t)D, 0.5, 1.5);
    res c = {0}, g = {0}, gs = {0};
    char op[96];
    snprintf(op, sizeof op, "decode-like chain D=%lld layers=%d (no sync between ops)", (long long)D, L);
    BOTH(run_chain(&CPU, D, L, x0, W, nw, 0, &c), run_chain(&GPU, D, L, x0, W, nw, 0, &g));
    compare(op, &c, &g);
    if (have_gpu) {
        run_chain(&GPU, D, L, x0, W, nw, 1, &gs);
        CHECK(res_same(&g, &gs), "%s: the same bits as with a sync after every op", op);
    } else {
        SKIP_NO_GPU("%s: against the synchronised run", op);
    }
    res_free(&c), res_free(&g), res_free(&gs);
    free(x0), free(W), free(nw);
}

/* ================================================================================================ */
/* loss, optimizer                                                                                  */
/* ================================================================================================ */
static void run_xent(gdn2_backend *be, int64_t N, int64_t Vp, const float *z, const int32_t *t, res *r) {
    arena A = {.be = be};
    float *zd = put(&A, z, (size_t)(N * Vp), GDN2_DT_F32), *loss = put(&A, NULL, (size_t)N, GDN2_DT_F32);
    int32_t *td = put_raw(&A, t, (size_t)N * sizeof(int32_t));
    void *dz = put(&A, NULL, (size_t)(N * Vp), GDN2_DT_ACT);
    if (!A.rc) note(&A, be->xent(be, N, Vp, zd, td, 1.0f / 9.0f, dz, loss));
    res_add(r, "loss", get(&A, loss, (size_t)N, GDN2_DT_F32), (size_t)N, 1e-5);
    res_add(r, "dlogits", get(&A, dz, (size_t)(N * Vp), GDN2_DT_ACT), (size_t)(N * Vp), 1e-2);
    finish(&A, r);
}

static void t_xent(int64_t N, int64_t Vp) {
    float *z = randn((size_t)(N * Vp), 3.0);
    int32_t *t = malloc((size_t)N * sizeof(int32_t));
    for (int64_t i = 0; i < N; i++) t[i] = i % 4 == 1 ? GDN2_IGNORE : (int32_t)(test_rng_next(&g_seed) % (unsigned long long)Vp);
    res c = {0}, g = {0};
    BOTH(run_xent(&CPU, N, Vp, z, t, &c), run_xent(&GPU, N, Vp, z, t, &g));
    char op[64];
    snprintf(op, sizeof op, "xent N=%lld Vp=%lld", (long long)N, (long long)Vp);
    compare(op, &c, &g);
    res_free(&c), res_free(&g);
    free(z), free(t);
}

static double run_sumsq(gdn2_backend *be, size_t n, const float *x, int *rc) {
    arena A = {.be = be};
    float *d = put(&A, x, n, GDN2_DT_F32);
    double s = -1;
    *rc = A.rc ? A.rc : be->sumsq(be, n, d, &s);
    arena_free(&A);
    return s;
}

static void t_sumsq(size_t n) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)test_normal(&g_seed);
    int rc1 = 0, rc2 = 0, rc3 = 0;
    double c = run_sumsq(&CPU, n, x, &rc1);
    CHECK(rc1 == 0 && c > 0, "sumsq n=%zu: cpu runs", n);
    if (!have_gpu) SKIP_NO_GPU("sumsq n=%zu: cuda vs cpu", n);
    else {
        double g = run_sumsq(&GPU, n, x, &rc2), g2 = run_sumsq(&GPU, n, x, &rc3);
        CHECK(rc2 == 0 && fabs(g - c) <= 1e-12 * fabs(c), "sumsq n=%zu: cuda %.17g vs cpu %.17g (rel bar 1e-12)", n, g, c);
        CHECK(rc3 == 0 && !memcmp(&g, &g2, sizeof g), "sumsq n=%zu: two cuda runs give the same bits", n);
    }
    free(x);
}

/* gdn2_cuda_timeline_* (bench/op_profile.h's timeline mode): marks in order around device work, -1 past the
 * cap, the gaps read at the end; end without a begin is an error (also in a build without CUDA). A gap is
 * checked against the synchronised event timer on the same work to within a factor (timed twice). */
static void t_timeline(void) {
    float ms[4] = {-1.0f, -1.0f, -1.0f, -1.0f};
    CHECK(gdn2_cuda_timeline_end(ms, 4) == -1 && gdn2_last_error()[0] && ms[0] == -1.0f,
          "timeline: end without begin fails and writes nothing: %s", gdn2_last_error());
    CHECK(gdn2_cuda_timeline_begin(1) != 0, "timeline: begin(1) is refused (a gap needs two marks)");
    if (!have_gpu) {
        SKIP_NO_GPU("timeline: marks around device work");
        return;
    }
    const size_t n = (size_t)1 << 24;
    arena A = {.be = &GPU};
    float *d = put(&A, NULL, n, GDN2_DT_F32);
    int rc = A.rc ? A.rc : gdn2_cuda_timeline_begin(3);
    const int m0 = gdn2_cuda_timeline_mark();
    if (!rc) rc = GPU.zero(&GPU, d, n * sizeof(float));
    const int m1 = gdn2_cuda_timeline_mark();
    if (!rc) rc = GPU.zero(&GPU, d, n * sizeof(float));
    const int m2 = gdn2_cuda_timeline_mark(), m3 = gdn2_cuda_timeline_mark();
    const int nm = gdn2_cuda_timeline_end(ms, 4);
    CHECK(!rc && m0 == 0 && m1 == 1 && m2 == 2 && m3 == -1 && nm == 3,
          "timeline: marks 0, 1, 2 in order, the fourth past cap 3 refused (-1), end counts 3 (got %d %d %d %d, %d)", m0,
          m1, m2, m3, nm);
    CHECK(ms[0] > 0.0f && ms[1] > 0.0f && ms[2] == -1.0f,
          "timeline: two positive gaps (%.4f, %.4f ms), nothing written past them", ms[0], ms[1]);
    double t = -1.0;
    if (!rc && !gdn2_cuda_timer_start()) {
        rc = GPU.zero(&GPU, d, n * sizeof(float));
        t = gdn2_cuda_timer_stop();
    }
    CHECK(!rc && t > 0 && ms[1] < 10.0 * t && t < 10.0 * ms[1],
          "timeline: a gap and the synchronised timer agree within 10x on the same 64 MB memset (%.4f vs %.4f ms)",
          ms[1], t);
    arena_free(&A);
}

static void run_adamw(gdn2_backend *be, const gdn2_adamw_seg *segs, int ns, size_t n, const float *w0, const float *g,
                      res *r) {
    arena A = {.be = be};
    float *w = put(&A, w0, n, GDN2_DT_F32), *gd = put(&A, g, n, GDN2_DT_F32);
    float *m = put(&A, NULL, n, GDN2_DT_F32), *v = put(&A, NULL, n, GDN2_DT_F32);
    void *wa = put(&A, NULL, n, GDN2_DT_ACT);
    for (int t = 1; t <= 3 && !A.rc; t++) { /* three steps: the segment table cached after the first */
        gdn2_adamw_hyper h = {1e-2f, 0.9f, 0.95f, 1e-8f, 0, 0, t == 2 ? 0.37f : 1.0f}; /* step 2: a clip factor */
        h.step_size = (float)(h.lr / (1.0 - pow(h.beta1, t)));
        h.bc2_sqrt = (float)sqrt(1.0 - pow(h.beta2, t));
        note(&A, be->adamw(be, segs, ns, &h, w, gd, m, v, wa));
    }
    res_add(r, "w", get(&A, w, n, GDN2_DT_F32), n, 1e-5);
    res_add(r, "m", get(&A, m, n, GDN2_DT_F32), n, 1e-6);
    res_add(r, "v", get(&A, v, n, GDN2_DT_F32), n, 1e-6);
    res_add(r, "w_act", get(&A, wa, n, GDN2_DT_ACT), n, 1e-2);
    finish(&A, r);
}

static void t_adamw(void) {
    /* three segments with a gap (elements 4001..4099 untouched) and two weight decays */
    gdn2_adamw_seg segs[3] = {{0, 1000, 0.1f}, {1000, 3001, 0.0f}, {4100, 2999, 0.1f}};
    const size_t n = 7099;
    float *w0 = randn(n, 1.0), *g = randn(n, 1.0);
    res c = {0}, gg = {0};
    BOTH(run_adamw(&CPU, segs, 3, n, w0, g, &c), run_adamw(&GPU, segs, 3, n, w0, g, &gg));
    compare("adamw (3 segments, 3 steps)", &c, &gg);
    res_free(&c), res_free(&gg);
    free(w0), free(g);
}

/* ================================================================================================ */
/* the GDN-2 recurrence (chunk kernels: CPU fp32, GPU bf16)                                         */
/* ================================================================================================ */
static void run_gdn2(gdn2_backend *be, const gdn2_dims *dm, const float *q, const float *k, const float *v,
                     const float *g, const float *b, const float *w, const float *h0, const float *d_o, res *r) {
    arena A = {.be = be};
    const size_t nk = (size_t)(dm->B * dm->T * dm->H * dm->K), nv = (size_t)(dm->B * dm->T * dm->HV * dm->V);
    const size_t ns = (size_t)(dm->B * dm->HV * dm->K * dm->V);
    gdn2_opts op;
    memset(&op, 0, sizeof op);
    op.qk_l2norm = 1;
    op.trust_values = 1;
    void *qd = put(&A, q, nk, GDN2_DT_ACT), *kd = put(&A, k, nk, GDN2_DT_ACT), *vd = put(&A, v, nv, GDN2_DT_ACT);
    float *gd = put(&A, g, nk, GDN2_DT_F32), *h0d = put(&A, h0, ns, GDN2_DT_F32), *ht = put(&A, NULL, ns, GDN2_DT_F32);
    void *bd = put(&A, b, nk, GDN2_DT_ACT), *wd = put(&A, w, nv, GDN2_DT_ACT), *o = put(&A, NULL, nv, GDN2_DT_ACT);
    void *dod = put(&A, d_o, nv, GDN2_DT_ACT), *dq = put(&A, NULL, nk, GDN2_DT_ACT), *dk = put(&A, NULL, nk, GDN2_DT_ACT);
    void *dv = put(&A, NULL, nv, GDN2_DT_ACT), *db = put(&A, NULL, nk, GDN2_DT_ACT), *dw = put(&A, NULL, nv, GDN2_DT_ACT);
    float *dg = put(&A, NULL, nk, GDN2_DT_F32);
    if (!A.rc) note(&A, be->gdn2_fwd(be, GDN2_KERNEL_CHUNK, dm, &op, qd, kd, vd, gd, bd, wd, h0d, o, ht, NULL));
    if (!A.rc)
        note(&A, be->gdn2_bwd(be, GDN2_KERNEL_CHUNK, dm, &op, qd, kd, vd, gd, bd, wd, h0d, dod, dq, dk, dv, dg, db, dw, NULL));
    res_add(r, "o", get(&A, o, nv, GDN2_DT_ACT), nv, 2e-2);
    res_add(r, "ht", get(&A, ht, ns, GDN2_DT_F32), ns, 2e-2);
    res_add(r, "dq", get(&A, dq, nk, GDN2_DT_ACT), nk, 3e-2);
    res_add(r, "dk", get(&A, dk, nk, GDN2_DT_ACT), nk, 3e-2);
    res_add(r, "dv", get(&A, dv, nv, GDN2_DT_ACT), nv, 3e-2);
    res_add(r, "dg", get(&A, dg, nk, GDN2_DT_F32), nk, 3e-2);
    res_add(r, "db", get(&A, db, nk, GDN2_DT_ACT), nk, 3e-2);
    res_add(r, "dw", get(&A, dw, nv, GDN2_DT_ACT), nv, 3e-2);
    finish(&A, r);
}

static void t_gdn2(int64_t B, int64_t T, int64_t H, int64_t HV, int64_t K, int64_t V) {
    gdn2_dims dm = {B, T, H, HV, K, V};
    const size_t nk = (size_t)(B * T * H * K), nv = (size_t)(B * T * HV * V), ns = (size_t)(B * HV * K * V);
    float *q = randn(nk, 1.0), *k = randn(nk, 1.0), *v = randn(nv, 1.0), *g = randu(nk, -1.0, -0.01);
    float *b = randu(nk, 0.0, 2.0), *w = randu(nv, 0.0, 1.0), *h0 = randn(ns, 0.1), *d_o = randn(nv, 1.0);
    res c = {0}, gg = {0};
    BOTH(run_gdn2(&CPU, &dm, q, k, v, g, b, w, h0, d_o, &c), run_gdn2(&GPU, &dm, q, k, v, g, b, w, h0, d_o, &gg));
    char op[96];
    snprintf(op, sizeof op, "gdn2 chunk B=%lld T=%lld H=%lld HV=%lld K=%lld V=%lld", (long long)B, (long long)T,
             (long long)H, (long long)HV, (long long)K, (long long)V);
    compare(op, &c, &gg);
    res_free(&c), res_free(&gg);
    free(q), free(k), free(v), free(g), free(b), free(w), free(h0), free(d_o);
}

/* ================================================================================================ */
/* attention (src/cuda/attn.cu)                                                                     */
/* ================================================================================================ */
/* rope_split on qkv; attn fwd/bwd on the given (shared, bf16-exact) q, k, v; rope_split_bwd on dq,dk,dv */
static void run_attn(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t B, int64_t T, const float *qkv,
                     const float *q, const float *k, const float *v, const float *dO, res *r) {
    arena A = {.be = be};
    const size_t nq = (size_t)(B * a->n_head * T * a->hs), nkv = (size_t)(B * a->n_groups * T * a->hs);
    const size_t nqkv = (size_t)(B * T * (a->n_head + 2 * a->n_groups) * a->hs), nl = (size_t)(B * a->n_head * T);
    void *qkvd = put(&A, qkv, nqkv, GDN2_DT_ACT), *q1 = put(&A, NULL, nq, GDN2_DT_ACT), *k1 = put(&A, NULL, nkv, GDN2_DT_ACT);
    void *v1 = put(&A, NULL, nkv, GDN2_DT_ACT);
    void *qd = put(&A, q, nq, GDN2_DT_ACT), *kd = put(&A, k, nkv, GDN2_DT_ACT), *vd = put(&A, v, nkv, GDN2_DT_ACT);
    void *o = put(&A, NULL, nq, GDN2_DT_ACT), *dOd = put(&A, dO, nq, GDN2_DT_ACT);
    float *lse = put(&A, NULL, nl, GDN2_DT_F32);
    void *dq = put(&A, NULL, nq, GDN2_DT_ACT), *dk = put(&A, NULL, nkv, GDN2_DT_ACT), *dv = put(&A, NULL, nkv, GDN2_DT_ACT);
    void *dqkv = put(&A, NULL, nqkv, GDN2_DT_ACT);
    if (!A.rc) note(&A, be->rope_split(be, a, B, T, qkvd, q1, k1, v1));
    if (!A.rc) note(&A, be->attn_fwd(be, a, B, T, qd, kd, vd, o, lse));
    if (!A.rc) note(&A, be->attn_bwd(be, a, B, T, qd, kd, vd, o, lse, dOd, dq, dk, dv));
    if (!A.rc) note(&A, be->rope_split_bwd(be, a, B, T, dq, dk, dv, dqkv));
    res_add(r, "rope q", get(&A, q1, nq, GDN2_DT_ACT), nq, 1e-2);
    res_add(r, "rope k", get(&A, k1, nkv, GDN2_DT_ACT), nkv, 1e-2);
    res_add(r, "rope v", get(&A, v1, nkv, GDN2_DT_ACT), nkv, 1e-2);
    res_add(r, "o", get(&A, o, nq, GDN2_DT_ACT), nq, 1e-2);
    res_add(r, "lse", get(&A, lse, nl, GDN2_DT_F32), nl, 1e-4);
    res_add(r, "dq", get(&A, dq, nq, GDN2_DT_ACT), nq, 2e-2);
    res_add(r, "dk", get(&A, dk, nkv, GDN2_DT_ACT), nkv, 2e-2);
    res_add(r, "dv", get(&A, dv, nkv, GDN2_DT_ACT), nkv, 2e-2);
    res_add(r, "dqkv", get(&A, dqkv, nqkv, GDN2_DT_ACT), nqkv, 2e-2);
    finish(&A, r);
}

static void t_attn(int64_t B, int64_t T, int64_t nh, int64_t ng, int64_t hs, int64_t window) {
    gdn2_attn_cfg a = {nh * hs, nh, ng, hs, window, 10000.0f, 0};
    const size_t nq = (size_t)(B * nh * T * hs), nkv = (size_t)(B * ng * T * hs), nqkv = (size_t)(B * T * (nh + 2 * ng) * hs);
    float *qkv = randn(nqkv, 1.0), *q = randn(nq, 1.0), *k = randn(nkv, 1.0), *v = randn(nkv, 1.0), *dO = randn(nq, 1.0);
    res c = {0}, g = {0};
    BOTH(run_attn(&CPU, &a, B, T, qkv, q, k, v, dO, &c), run_attn(&GPU, &a, B, T, qkv, q, k, v, dO, &g));
    char op[96];
    snprintf(op, sizeof op, "attention B=%lld T=%lld nh=%lld ng=%lld hs=%lld window=%lld", (long long)B, (long long)T,
             (long long)nh, (long long)ng, (long long)hs, (long long)window);
    compare(op, &c, &g);
    res_free(&c), res_free(&g);
    free(qkv), free(q), free(k), free(v), free(dO);
}

/* ================================================================================================ */
/* the decode step's ops over a pool of per-sequence states (conv_step, decode, attn_step)           */
/* ================================================================================================ */
/* n = 3 sequences in slots {3, 0, 4} of a pool of 5 whose per-slot stride is larger than the state
 * (as in the model's decode state): the rows not named stay as they were */
enum { DEC_NS = 5, DEC_N = 3 };
static const int32_t k_dec_slots[DEC_N] = {3, 0, 4};

/* count parts at strides: x and y parts D * DEC_N + 5 elements apart, caches hs * DEC_NS + 3 floats,
 * weights D * W + 7 (the gaps keep their values). sep: one call per part */
static void run_conv_step(gdn2_backend *be, int64_t D, int64_t W, size_t hs, int count, int sep, const float *x,
                          const float *hist, const float *w, res *r) {
    arena A = {.be = be};
    const size_t n = (size_t)(DEC_N * D), xs = n + 5, ps = DEC_NS * hs + 3, wsz = (size_t)(D * W) + 7;
    const size_t nx = xs * count, nh = ps * count, nw = wsz * count;
    void *xd = put(&A, x, nx, GDN2_DT_ACT), *y = put(&A, x, nx, GDN2_DT_ACT);
    float *hd = put(&A, hist, nh, GDN2_DT_F32), *wd = put(&A, w, nw, GDN2_DT_F32);
    const int32_t *sl = put_raw(&A, k_dec_slots, sizeof k_dec_slots);
    for (int p = 0; p < count && sep && !A.rc; p++)
        note(&A, be->conv_step(be, DEC_N, D, W, 1, (char *)xd + gdn2_be_bytes(be, p * xs, GDN2_DT_ACT), 0, hd + p * ps, 0,
                               hs, sl, wd + p * wsz, 0, (char *)y + gdn2_be_bytes(be, p * xs, GDN2_DT_ACT), 0));
    if (!sep && !A.rc) note(&A, be->conv_step(be, DEC_N, D, W, count, xd, xs, hd, ps, hs, sl, wd, wsz, y, xs));
    res_add(r, "y (and the gaps)", get(&A, y, nx, GDN2_DT_ACT), nx, 1e-2);
    res_add(r, "caches after", get(&A, hd, nh, GDN2_DT_F32), nh, 0);
    finish(&A, r);
}

static void t_conv_step(int64_t D, int64_t W, int count) {
    const size_t hs = (size_t)((W - 1) * D + 17), n = (size_t)(DEC_N * D);
    const size_t nx = (n + 5) * count, nh = (DEC_NS * hs + 3) * count, nw = ((size_t)(D * W) + 7) * count;
    float *x = randn(nx, 1.0), *hist = randn(nh, 1.0), *w = randn(nw, 0.5);
    res c = {0}, g = {0}, cs = {0}, gs = {0};
    BOTH(run_conv_step(&CPU, D, W, hs, count, 0, x, hist, w, &c), run_conv_step(&GPU, D, W, hs, count, 0, x, hist, w, &g));
    char op[96];
    snprintf(op, sizeof op, "conv_step n=%d of %d slots D=%lld W=%lld count=%d", DEC_N, DEC_NS, (long long)D,
             (long long)W, count);
    compare(op, &c, &g);
    if (count > 1) { /* one call of count parts == count calls of one part, bit for bit */
        run_conv_step(&CPU, D, W, hs, count, 1, x, hist, w, &cs);
        CHECK(res_same(&c, &cs), "%s: cpu: the same bits as one call per part", op);
        if (have_gpu) {
            run_conv_step(&GPU, D, W, hs, count, 1, x, hist, w, &gs);
            CHECK(res_same(&g, &gs), "%s: cuda: the same bits as one call per part", op);
        } else {
            SKIP_NO_GPU("%s: cuda against one call per part", op);
        }
    }
    res_free(&c), res_free(&g), res_free(&cs), res_free(&gs);
    free(x), free(hist), free(w);
}

/* the products ahead of the conv step and the step in one (the decode step's q/k/v): n rows (slots
 * k_dec_slots[0..n)), count parts at strides as run_conv_step's, weights Wl [D,in] + a gap. sep 0:
 * linear_conv_step; 1: linear_fwd_batch into x, then conv_step. At one row the CUDA product convolves
 * as it stores (src/cuda/gemv.cuh GEMV_CONV): the same bits as 1. x itself is not compared (not
 * written by the fused form). */
static void run_linconv(gdn2_backend *be, int64_t n, int64_t in, int64_t D, int64_t W, size_t hs, int count, int sep,
                        const float *X, const float *Wl, const float *hist, const float *w, res *r) {
    arena A = {.be = be};
    const size_t xs = (size_t)(n * D) + 5, ps = DEC_NS * hs + 3, wsz = (size_t)(D * W) + 7, wls = (size_t)(D * in) + 24;
    void *Xd = put(&A, X, (size_t)(n * in), GDN2_DT_ACT), *Wd = put(&A, Wl, wls * count, GDN2_DT_ACT);
    void *xd = put(&A, NULL, xs * count, GDN2_DT_ACT), *y = put(&A, NULL, xs * count, GDN2_DT_ACT);
    float *hd = put(&A, hist, ps * count, GDN2_DT_F32), *wd = put(&A, w, wsz * count, GDN2_DT_F32);
    const int32_t *sl = put_raw(&A, k_dec_slots, sizeof k_dec_slots);
    if (!sep && !A.rc)
        note(&A, be->linear_conv_step(be, n, in, D, Xd, Wd, wls, count, xd, xs, W, hd, ps, hs, sl, wd, wsz, y, xs));
    if (sep && !A.rc) note(&A, be->linear_fwd_batch(be, n, in, D, Xd, Wd, wls, xd, xs, count, GDN2_BE_NO_ACT));
    if (sep && !A.rc) note(&A, be->conv_step(be, n, D, W, count, xd, xs, hd, ps, hs, sl, wd, wsz, y, xs));
    res_add(r, "y (and the gaps)", get(&A, y, xs * count, GDN2_DT_ACT), xs * count, 1e-2);
    res_add(r, "caches after", get(&A, hd, ps * count, GDN2_DT_F32), ps * count, 1e-2); /* x: bf16 vs fp32 */
    finish(&A, r);
}

static void t_linconv(int64_t n, int64_t in, int64_t D, int64_t W, int count) {
    const size_t hs = (size_t)((W - 1) * D + 17), wls = (size_t)(D * in) + 24;
    const size_t nh = (DEC_NS * hs + 3) * count, nw = ((size_t)(D * W) + 7) * count;
    float *X = randn((size_t)(n * in), 1.0), *Wl = randn(wls * count, 0.05), *hist = randn(nh, 1.0), *w = randn(nw, 0.5);
    res c = {0}, g = {0}, cs = {0}, gs = {0}, g2 = {0};
    BOTH(run_linconv(&CPU, n, in, D, W, hs, count, 0, X, Wl, hist, w, &c),
         run_linconv(&GPU, n, in, D, W, hs, count, 0, X, Wl, hist, w, &g));
    char op[112];
    snprintf(op, sizeof op, "linear_conv_step n=%lld of %d slots in=%lld D=%lld W=%lld count=%d", (long long)n, DEC_NS,
             (long long)in, (long long)D, (long long)W, count);
    compare(op, &c, &g);
    run_linconv(&CPU, n, in, D, W, hs, count, 1, X, Wl, hist, w, &cs);
    CHECK(res_same(&c, &cs), "%s: cpu: the same bits as linear_fwd_batch then conv_step", op);
    if (have_gpu) {
        run_linconv(&GPU, n, in, D, W, hs, count, 1, X, Wl, hist, w, &gs);
        CHECK(res_same(&g, &gs), "%s: cuda: the same bits as linear_fwd_batch then conv_step (y, caches)", op);
        run_linconv(&GPU, n, in, D, W, hs, count, 0, X, Wl, hist, w, &g2);
    } else {
        SKIP_NO_GPU("%s: cuda against linear_fwd_batch then conv_step", op);
    }
    same_bits(op, &g, &g2);
    res_free(&c), res_free(&g), res_free(&cs), res_free(&gs), res_free(&g2);
    free(X), free(Wl), free(hist), free(w);
}

/* The decode step's three groups of products of x in one call (linear_fwd_multi): q/k/v with their
 * convolutions (count 3, conv parts as run_linconv's), f0|g0 (count 2, R rows) and b|w with their
 * sigmoids (count 2, D2 rows), weights and outputs with gaps. sep 0: one linear_fwd_multi; 1:
 * linear_conv_step, linear_fwd_batch, linear_fwd_batch (sigmoid). At one row the CUDA backend makes the
 * table one launch (src/cuda/gemv.cuh k_gemv_multi): the same bits as 1. */
static void run_linmulti(gdn2_backend *be, int64_t n, int64_t in, int64_t D, int64_t W, size_t hs, int64_t R, int64_t D2,
                         int sep, const float *X, const float *Wl, const float *hist, const float *w, const float *Wf,
                         const float *Wb, const float *Y0, res *r) {
    arena A = {.be = be};
    const size_t xs = (size_t)(n * D) + 5, ps = DEC_NS * hs + 3, wsz = (size_t)(D * W) + 7, wls = (size_t)(D * in) + 24;
    const size_t wfs = (size_t)(R * in) + 8, fs = (size_t)(n * R) + 9, wbs = (size_t)(D2 * in) + 16, bs = (size_t)(n * D2) + 11;
    void *Xd = put(&A, X, (size_t)(n * in), GDN2_DT_ACT), *Wd = put(&A, Wl, wls * 3, GDN2_DT_ACT);
    void *xd = put(&A, NULL, xs * 3, GDN2_DT_ACT), *y = put(&A, NULL, xs * 3, GDN2_DT_ACT);
    float *hd = put(&A, hist, ps * 3, GDN2_DT_F32), *wd = put(&A, w, wsz * 3, GDN2_DT_F32);
    void *Wfd = put(&A, Wf, wfs * 2, GDN2_DT_ACT), *fd = put(&A, Y0, fs * 2, GDN2_DT_ACT);
    void *Wbd = put(&A, Wb, wbs * 2, GDN2_DT_ACT), *bd = put(&A, Y0, bs * 2, GDN2_DT_ACT);
    const int32_t *sl = put_raw(&A, k_dec_slots, sizeof k_dec_slots);
    const gdn2_product pr[3] = {
        {.out = D, .W = Wd, .wstride = wls, .count = 3, .Y = xd, .ystride = xs, .act = GDN2_PRODUCT_CONV, .ksize = W,
         .hist = hd, .hs = ps, .hist_stride = hs, .slots = sl, .cw = wd, .cws = wsz, .y = y, .ys = xs},
        {.out = R, .W = Wfd, .wstride = wfs, .count = 2, .Y = fd, .ystride = fs, .act = GDN2_PRODUCT_STORE},
        {.out = D2, .W = Wbd, .wstride = wbs, .count = 2, .Y = bd, .ystride = bs, .act = GDN2_PRODUCT_SIGMOID}};
    if (!sep && !A.rc) note(&A, be->linear_fwd_multi(be, n, in, Xd, pr, 3));
    if (sep && !A.rc)
        note(&A, be->linear_conv_step(be, n, in, D, Xd, Wd, wls, 3, xd, xs, W, hd, ps, hs, sl, wd, wsz, y, xs));
    if (sep && !A.rc) note(&A, be->linear_fwd_batch(be, n, in, R, Xd, Wfd, wfs, fd, fs, 2, GDN2_BE_NO_ACT));
    if (sep && !A.rc) note(&A, be->linear_fwd_batch(be, n, in, D2, Xd, Wbd, wbs, bd, bs, 2, GDN2_BE_SIGMOID));
    res_add(r, "q/k/v: y (and the gaps)", get(&A, y, xs * 3, GDN2_DT_ACT), xs * 3, 1e-2);
    res_add(r, "q/k/v: caches after", get(&A, hd, ps * 3, GDN2_DT_F32), ps * 3, 1e-2);
    res_add(r, "f0|g0 (and the gaps)", get(&A, fd, fs * 2, GDN2_DT_ACT), fs * 2, 1e-2);
    res_add(r, "sigmoid(b|w) (and the gaps)", get(&A, bd, bs * 2, GDN2_DT_ACT), bs * 2, 1e-2);
    finish(&A, r);
}

static void t_linmulti(int64_t n, int64_t in, int64_t D, int64_t W, int64_t R, int64_t D2) {
    const size_t hs = (size_t)((W - 1) * D + 17), wls = (size_t)(D * in) + 24, wfs = (size_t)(R * in) + 8;
    const size_t wbs = (size_t)(D2 * in) + 16, nh = (DEC_NS * hs + 3) * 3, nw = ((size_t)(D * W) + 7) * 3;
    const size_t ny = 2 * ((size_t)(n * (R > D2 ? R : D2)) + 11);
    float *X = randn((size_t)(n * in), 1.0), *Wl = randn(wls * 3, 0.05), *hist = randn(nh, 1.0), *w = randn(nw, 0.5);
    float *Wf = randn(wfs * 2, 0.05), *Wb = randn(wbs * 2, 0.05), *Y0 = randn(ny, 1.0);
    res c = {0}, g = {0}, cs = {0}, gs = {0}, g2 = {0};
#define LM(be, sep, r) run_linmulti(be, n, in, D, W, hs, R, D2, sep, X, Wl, hist, w, Wf, Wb, Y0, r)
    BOTH(LM(&CPU, 0, &c), LM(&GPU, 0, &g));
    char op[112];
    snprintf(op, sizeof op, "linear_fwd_multi n=%lld in=%lld q/k/v D=%lld W=%lld, f0|g0 R=%lld, b|w D=%lld", (long long)n,
             (long long)in, (long long)D, (long long)W, (long long)R, (long long)D2);
    compare(op, &c, &g);
    LM(&CPU, 1, &cs);
    CHECK(res_same(&c, &cs), "%s: cpu: the same bits as one call per product", op);
    if (have_gpu) {
        LM(&GPU, 1, &gs);
        CHECK(res_same(&g, &gs), "%s: cuda: the same bits as one call per product (y, caches, f, b|w)", op);
        LM(&GPU, 0, &g2);
    } else {
        SKIP_NO_GPU("%s: cuda against one call per product", op);
    }
#undef LM
    same_bits(op, &g, &g2);
    /* a bad table: a clear error on each backend */
    gdn2_backend *bes[2] = {&CPU, &GPU};
    gdn2_product bad = {.out = 8, .count = 1, .act = 7};
    for (int i = 0; i < 1 + have_gpu; i++) {
        int rc = bes[i]->linear_fwd_multi(bes[i], n, in, NULL, &bad, 1);
        CHECK(rc == GDN2_ERR_ARG && strstr(gdn2_last_error(), "act=7"), "%s: %s: act 7 refused (rc %d: %s)", op,
              bes[i]->name, rc, gdn2_last_error());
        rc = bes[i]->linear_fwd_multi(bes[i], n, in, NULL, &bad, GDN2_PRODUCT_MAX + 1);
        CHECK(rc == GDN2_ERR_ARG && strstr(gdn2_last_error(), "np=5"), "%s: %s: 5 products refused (rc %d: %s)", op,
              bes[i]->name, rc, gdn2_last_error());
    }
    res_free(&c), res_free(&g), res_free(&cs), res_free(&gs), res_free(&g2);
    free(X), free(Wl), free(hist), free(w), free(Wf), free(Wb), free(Y0);
}

/* gate 0: g is the log-decay (fp32); 1: g holds the pre-activation f (ACT) and the op computes the
 * log-decay from A_log, dt (gates_fwd's formula); 2: gates_fwd first, then as 0 (the unfused pair) */
static void run_decode(gdn2_backend *be, const gdn2_dims *dm, size_t stride, const float *q, const float *k,
                       const float *v, const float *g, const float *b, const float *w, const float *pool, int gate,
                       const float *A_log, const float *dt, res *r) {
    arena A = {.be = be};
    const size_t nk = (size_t)(DEC_N * dm->H * dm->K), nv = (size_t)(DEC_N * dm->HV * dm->V), np = DEC_NS * stride;
    gdn2_opts op;
    memset(&op, 0, sizeof op);
    op.qk_l2norm = 1;
    op.trust_values = 1;
    void *qd = put(&A, q, nk, GDN2_DT_ACT), *kd = put(&A, k, nk, GDN2_DT_ACT), *vd = put(&A, v, nv, GDN2_DT_ACT);
    void *bd = put(&A, b, nk, GDN2_DT_ACT), *wd = put(&A, w, nv, GDN2_DT_ACT), *o = put(&A, NULL, nv, GDN2_DT_ACT);
    void *gd = put(&A, g, nk, gate ? GDN2_DT_ACT : GDN2_DT_F32);
    float *pd = put(&A, pool, np, GDN2_DT_F32), *gl = gate == 2 ? put(&A, NULL, nk, GDN2_DT_F32) : NULL;
    const float *al = gate ? put(&A, A_log, (size_t)dm->H, GDN2_DT_F32) : NULL;
    const float *dtd = gate ? put(&A, dt, (size_t)(dm->H * dm->K), GDN2_DT_F32) : NULL;
    const int32_t *sl = put_raw(&A, k_dec_slots, sizeof k_dec_slots);
    gdn2_dims d1 = *dm;
    d1.B = DEC_N, d1.T = 1;
    if (gate == 2 && !A.rc)
        note(&A, be->gates_fwd(be, 0, DEC_N, dm->H, dm->HV, dm->K, dm->V, 1.0f, gd, NULL, NULL, al, dtd, gl, NULL, NULL));
    if (!A.rc)
        note(&A, be->decode(be, GDN2_KERNEL_CHUNK, &d1, &op, qd, kd, vd, gate == 2 ? gl : gd, gate == 1 ? al : NULL,
                            gate == 1 ? dtd : NULL, bd, wd, pd, stride, sl, o));
    res_add(r, "o", get(&A, o, nv, GDN2_DT_ACT), nv, 1e-2);
    res_add(r, "states after", get(&A, pd, np, GDN2_DT_F32), np, 1e-5);
    finish(&A, r);
}

/* gate: the log-decay from the pre-activation in the op (1), checked against gates_fwd then the op */
static void t_decode(int64_t H, int64_t HV, int64_t K, int64_t V, int gate) {
    gdn2_dims dm = {DEC_N, 1, H, HV, K, V};
    const size_t nk = (size_t)(DEC_N * H * K), nv = (size_t)(DEC_N * HV * V), stride = (size_t)(HV * K * V + 64);
    float *q = randn(nk, 1.0), *k = randn(nk, 1.0), *v = randn(nv, 1.0);
    float *g = gate ? randn(nk, 2.0) : randu(nk, -1.0, -0.01);
    float *b = randu(nk, 0.0, 2.0), *w = randu(nv, 0.0, 1.0), *pool = randn(DEC_NS * stride, 0.1);
    float *A_log = randu((size_t)H, -1.0, 1.0), *dt = randn((size_t)(H * K), 0.5);
    res c = {0}, gg = {0}, c2 = {0}, g2 = {0};
    BOTH(run_decode(&CPU, &dm, stride, q, k, v, g, b, w, pool, gate, A_log, dt, &c),
         run_decode(&GPU, &dm, stride, q, k, v, g, b, w, pool, gate, A_log, dt, &gg));
    char op[128];
    snprintf(op, sizeof op, "decode n=%d of %d slots H=%lld HV=%lld K=%lld V=%lld%s", DEC_N, DEC_NS, (long long)H,
             (long long)HV, (long long)K, (long long)V, gate ? " gate from f" : "");
    compare(op, &c, &gg);
    if (gate) { /* the same bits as gates_fwd, then the op with the log-decay */
        run_decode(&CPU, &dm, stride, q, k, v, g, b, w, pool, 2, A_log, dt, &c2);
        CHECK(res_same(&c, &c2), "%s: cpu: the same bits as gates_fwd then decode", op);
        if (have_gpu) {
            run_decode(&GPU, &dm, stride, q, k, v, g, b, w, pool, 2, A_log, dt, &g2);
            CHECK(res_same(&gg, &g2), "%s: cuda: the same bits as gates_fwd then decode", op);
        } else {
            SKIP_NO_GPU("%s: cuda against gates_fwd then decode", op);
        }
    }
    res_free(&c), res_free(&gg), res_free(&c2), res_free(&g2);
    free(q), free(k), free(v), free(g), free(b), free(w), free(pool), free(A_log), free(dt);
}

static void run_attn_step(gdn2_backend *be, const gdn2_attn_cfg *a, int64_t cap, size_t stride, const int64_t *pos,
                          const float *qkv, const float *cache, res *r) {
    arena A = {.be = be};
    const size_t nqkv = (size_t)(DEC_N * (a->n_head + 2 * a->n_groups) * a->hs), no = (size_t)(DEC_N * a->n_head * a->hs);
    const size_t nc = DEC_NS * stride;
    void *qd = put(&A, qkv, nqkv, GDN2_DT_ACT), *o = put(&A, NULL, no, GDN2_DT_ACT);
    float *cd = put(&A, cache, nc, GDN2_DT_F32);
    const int32_t *sl = put_raw(&A, k_dec_slots, sizeof k_dec_slots);
    const int64_t *pd = put_raw(&A, pos, DEC_N * sizeof(int64_t));
    if (!A.rc) note(&A, be->attn_step(be, a, DEC_N, qd, pd, sl, cap, cd, stride, o));
    res_add(r, "o", get(&A, o, no, GDN2_DT_ACT), no, 1e-2);
    res_add(r, "caches after", get(&A, cd, nc, GDN2_DT_F32), nc, 1e-5);
    finish(&A, r);
}

static void t_attn_step(int64_t nh, int64_t ng, int64_t hs, int64_t window, int64_t cap, const int64_t *pos) {
    gdn2_attn_cfg a = {nh * hs, nh, ng, hs, window, 10000.0f, 0};
    const size_t nqkv = (size_t)(DEC_N * (nh + 2 * ng) * hs), stride = (size_t)(2 * ng * cap * hs + 32);
    float *qkv = randn(nqkv, 1.0), *cache = randn(DEC_NS * stride, 1.0);
    res c = {0}, g = {0};
    BOTH(run_attn_step(&CPU, &a, cap, stride, pos, qkv, cache, &c), run_attn_step(&GPU, &a, cap, stride, pos, qkv, cache, &g));
    char op[128];
    snprintf(op, sizeof op, "attn_step n=%d of %d slots nh=%lld ng=%lld hs=%lld window=%lld cap=%lld pos=%lld,%lld,%lld",
             DEC_N, DEC_NS, (long long)nh, (long long)ng, (long long)hs, (long long)window, (long long)cap,
             (long long)pos[0], (long long)pos[1], (long long)pos[2]);
    compare(op, &c, &g);
    res g2 = {0};
    if (have_gpu) run_attn_step(&GPU, &a, cap, stride, pos, qkv, cache, &g2);
    same_bits(op, &g, &g2);
    res_free(&c), res_free(&g), res_free(&g2);
    free(qkv), free(cache);
}

/* ================================================================================================ */
/* sampling: one token per row, CUDA vs CPU exactly (integer weights, src/util/sample.h)             */
/* ================================================================================================ */
static int run_sample(gdn2_backend *be, int64_t n, int64_t V, int64_t ld, const float *z,
                      const gdn2_sample_row_params *p, int32_t *tok) {
    arena A = {.be = be};
    float *zd = put(&A, z, (size_t)(n * ld), GDN2_DT_F32);
    int rc = A.rc ? A.rc : be->sample(be, n, V, ld, zd, p, tok);
    arena_free(&A);
    return rc;
}

/* rows of random logits (every fourth quantized to 0.25 steps: ties), each under its own settings:
 * greedy, temperature 0.7 / 1.3, top_k 0 / 1 / 5 / 200 / V-1, top_p 1 / 0.95 / 0.5 / 1e-6 */
static void t_sample(int64_t n, int64_t V) {
    const int64_t ld = V + 3;
    float *z = randn((size_t)(n * ld), 2.0);
    gdn2_sample_row_params *p = calloc((size_t)n, sizeof *p);
    int32_t *tc = malloc((size_t)n * sizeof *tc), *tg = malloc((size_t)n * sizeof *tg), *tg2 = malloc((size_t)n * sizeof *tg2);
    static const int ks[] = {0, 1, 5, 200, -1};
    static const float ps[] = {1.0f, 0.95f, 0.5f, 1e-6f};
    for (int64_t i = 0; i < n; i++) {
        if (i % 4 == 3)
            for (int64_t v = 0; v < V; v++) z[i * ld + v] = floorf(z[i * ld + v] * 4.0f) / 4.0f;
        p[i].temperature = i % 7 == 0 ? 0.0f : (i % 2 ? 0.7f : 1.3f);
        p[i].top_k = ks[i % 5] < 0 ? (int32_t)(V - 1) : ks[i % 5];
        p[i].top_p = ps[(i / 5) % 4];
        p[i].u = (double)(test_rng_next(&g_seed) >> 11) * (1.0 / 9007199254740992.0);
    }
    int rc = run_sample(&CPU, n, V, ld, z, p, tc), ok = rc == 0;
    for (int64_t i = 0; ok && i < n; i++) ok = tc[i] >= 0 && tc[i] < V && (p[i].temperature > 0 || z[i * ld + tc[i]] >= z[i * ld]);
    CHECK(ok, "sample n=%lld V=%lld: cpu tokens in range, greedy rows on a maximum (rc %d)", (long long)n, (long long)V, rc);
    if (!have_gpu) SKIP_NO_GPU("sample n=%lld V=%lld: cuda vs cpu", (long long)n, (long long)V);
    else {
        int rc2 = run_sample(&GPU, n, V, ld, z, p, tg), rc3 = run_sample(&GPU, n, V, ld, z, p, tg2);
        int64_t diff = 0, first = -1;
        for (int64_t i = 0; i < n; i++)
            if (tg[i] != tc[i] && !diff++) first = i;
        CHECK(rc2 == 0 && rc3 == 0 && diff == 0 && !memcmp(tg, tg2, (size_t)n * sizeof *tg),
              "sample n=%lld V=%lld: cuda tokens == cpu tokens (%lld rows differ, first %lld), two cuda runs equal",
              (long long)n, (long long)V, (long long)diff, (long long)first);
    }
    free(z), free(p), free(tc), free(tg), free(tg2);
}

int main(void) {
    gdn2_backend_cpu_init(&CPU, 0);
    int rc = gdn2_backend_cuda_init(&GPU);
    have_gpu = rc == GDN2_OK;
    if (!have_gpu) {
        CHECK(rc == GDN2_ERR_UNSUPPORTED && gdn2_last_error()[0],
              "no GPU: gdn2_backend_cuda_init fails cleanly (rc %d: %s)", rc, gdn2_last_error());
    } else {
        char name[128] = "?";
        int drv = 0, rt = 0;
        gdn2_cuda_device_info(name, sizeof name, &drv, &rt);
        printf("device: %s, driver API %d, runtime %d\n", name, drv, rt);
        CHECK(!strcmp(GPU.name, "cuda") && GPU.on_device == 1 && GPU.act_bytes == 2, "cuda backend table: name, on_device, act_bytes");
    }

    t_elem(1001);
    t_elem(65537);
    t_embed(50, 200, 17);
    t_embed(300, 2304, 1000);
    t_embed(400, 64, 70000); /* ids past 2^16: both digits of the bucket sort */
    t_rows(20, 200);
    t_rms(37, 2304, 1);  /* the fused backward: 3 blocks of 16 rows, the last one short */
    t_rms(300, 2304, 0); /* forward past the block-a-row path's 256 rows */
    t_rms(100, 200, 0);
    t_rms(40, 1500, 1);  /* 2 and 4 column groups a thread */
    t_rms(17, 4096, 0);
    t_rms(20, 4100, 1);  /* past the fused path's width: the row kernel and the column partials */
    t_rms(9, 202, 1);    /* D % 4 != 0: the same */
    t_addrms(1, 2304);  /* the decode step at batch 1 */
    t_addrms(37, 2304);
    t_addrms(9, 203);   /* D % 4 != 0: the scalar loads */
    t_addrms(300, 2304); /* past the block-a-row path's rows: the warp-a-row kernels */
    t_rmss(37 * 4, 64);    /* fused, a half-warp a row */
    t_rmss(77, 64);        /* the last step's second row past N */
    t_rmss(45, 32);
    t_rmss(37 * 4, 128);   /* fused backward: 5 warps of 32 rows, the last one short */
    t_rmss(33 * 8 + 5, 256); /* 2, 3 and 4 column groups a lane */
    t_rmss(70, 384);
    t_rmss(40, 512);
    t_rmss(30, 600);       /* wider than the fused path: the row kernel + column partials */
    t_rmss(50, 66);        /* D % 4 != 0: the same */
    t_conv(2, 37, 200, 4, 1);
    t_conv(2, 37, 200, 4, 0);
    t_conv(3, 2, 72, 4, 1); /* T < W-1: the history shifts within itself */
    t_conv(2, 150, 202, 4, 0); /* several runs of the fast kernels, D % 4 != 0: the scalar loads */
    t_conv(1, 131, 64, 3, 1);  /* W 3, several runs from a history */
    for (int mixer = 0; mixer < 3; mixer++) {
        t_gates(mixer, 37, 2, 4, 64, 64);
        t_gates(mixer, 150, 2, 2, 128, 128);
    }
    t_gates(0, 70, 2, 2, 96, 32); /* K = 96 does not divide the dA_log block: its general loop */
    t_lin(37, 200, 72, 0, GDN2_DT_F32, 0, 1);
    t_lin(37, 200, 72, 1, GDN2_DT_ACT, 0, 1);
    t_lin(64, 2304, 96, 1, GDN2_DT_F32, 1, 1);
    t_lin(130, 96, 2304, 0, GDN2_DT_ACT, 1, 1);
    t_lin(130, 96, 2304, 0, GDN2_DT_ACT, 1, 0); /* dW written (the first backward of a step) */
    t_lin(64, 2304, 96, 1, GDN2_DT_F32, 0, 0);
    t_lin(5, 37, 11, 1, GDN2_DT_ACT, 1, 1); /* odd leading dimensions: 2-byte aligned rows */
    /* one row: CUDA's matrix-vector kernel (src/cuda/gemv.cuh); N = 3: the product beside it */
    t_lin(1, 2304, 2304, 1, GDN2_DT_F32, 1, 1);
    t_lin(1, 520, 129, 0, GDN2_DT_ACT, 0, 1); /* odd out */
    t_lin(1, 256, 333, 1, GDN2_DT_ACT, 1, 1);
    t_lin(1, 6208, 50, 0, GDN2_DT_F32, 0, 1); /* a partial last round of loads */
    t_lin(3, 520, 129, 0, GDN2_DT_ACT, 0, 1);
    t_linb(1, 2304, 2304, 3, 0, 0, 0);  /* the decode step's q, k, v at batch 1 */
    t_chain(1024, 6);
    t_linb(1, 128, 2304, 2, 8, 3, 0);   /* low-rank outputs, odd output gaps */
    t_linb(1, 2304, 2048, 2, 0, 0, GDN2_BE_SIGMOID);   /* b, w at batch 1: the sigmoid in the product */
    t_linb(1, 256, 192, 2, 64, 130, GDN2_BE_SIGMOID);  /* ... with gaps */
    t_linb(16, 256, 192, 2, 0, 0, GDN2_BE_SIGMOID);    /* N > 1: the product, then one sigmoid launch */
    t_linb(16, 256, 192, 2, 64, 128, GDN2_BE_SIGMOID); /* ... per product (gaps) */
    t_linb(16, 256, 192, 2, 64, 128, 0); /* b, w with gaps between the weights and the outputs */
    t_linb(1, 2304, 6144, 2, 0, 0, GDN2_BE_SWIGLU);  /* the MLP's w1|w2 at batch 1: the SwiGLU in the product */
    t_linb(1, 256, 333, 2, 64, 130, GDN2_BE_SWIGLU); /* ... odd out, gaps */
    t_linb(16, 256, 192, 2, 64, 128, GDN2_BE_SWIGLU); /* N > 1: the product, then the swiglu op in place */
    t_lns(1, 128, 2048, 128, 1); /* the decode step's output gate at batch 1 (gdn2_1.3B: 16 heads of 128) */
    t_lns(1, 64, 2 * 200, 200, 0); /* rows of D = 200: two steps a lane, zeros past the row; no bias */
    t_lns(1, 48, 3 * 37, 37, 1);   /* D = 37: a warp's two outputs in different rows */
    t_lns(5, 128, 512, 128, 1);    /* N > 1: the product, then the norm in place */
    t_xent(13, 1003);
    t_xent(4, 50304);
    t_xent(9, 32000);  /* the row in registers: 16, 8, 4 and 2 float4s a thread */
    t_xent(7, 12000);
    t_xent(6, 5000);
    t_xent(5, 256);
    t_sumsq(100003);
    t_sumsq(3);                         /* the tail alone */
    t_sumsq(((size_t)1 << 22) + 7);    /* the four-group loop (more than 3 x 1024 x 256 groups), then the tail */
    t_timeline();
    t_adamw();
    t_gdn2(2, 100, 2, 4, 64, 64);
    t_gdn2(1, 130, 2, 2, 128, 128);
    t_attn(2, 50, 4, 2, 64, 0);
    t_attn(1, 70, 4, 4, 128, 16);
    t_conv_step(200, 4, 1);
    t_conv_step(72, 2, 1);
    t_conv_step(2048, 4, 3); /* the decode step's q, k, v in one call */
    t_conv_step(40, 1, 2);   /* W = 1: no cache */
    t_linconv(1, 2304, 2048, 4, 3); /* the decode step's q, k, v at batch 1: the convolutions in the product */
    t_linconv(1, 256, 200, 3, 2);   /* odd sizes, W = 3 */
    t_linconv(1, 64, 40, 1, 2);     /* W = 1: no cache */
    t_linconv(3, 256, 200, 4, 3);   /* n > 1: the product, then conv_step */
    t_linmulti(1, 2304, 2048, 4, 128, 2048); /* gdn2_1.3B's decode step at batch 1: one launch */
    t_linmulti(1, 256, 200, 3, 40, 72);      /* odd sizes */
    t_linmulti(3, 256, 200, 4, 40, 72);      /* n > 1: one call per product */
    t_decode(2, 4, 64, 64, 0);
    t_decode(2, 4, 64, 64, 1); /* the log-decay from the pre-activation in the op (the model's decode step) */
    t_decode(1, 2, 128, 128, 0);
    t_decode(16, 16, 128, 128, 1);
    {
        const int64_t ring[DEC_N] = {20, 3, 40}, full[DEC_N] = {20, 3, 63};
        t_attn_step(4, 2, 64, 16, 16, ring);  /* SWA ring: rows p % 16 (two of the three wrapped) */
        t_attn_step(4, 4, 128, 0, 64, full);  /* full attention: row p */
        t_attn_step(2, 1, 64, 2048, 2048, ring);
        /* CUDA: fewer (sequence, head) blocks than SMs split the positions (up to 32 ways, merged in
         * order; every case above); 3 x 48 and 3 x 352 heads do not (132 SMs) */
        t_attn_step(48, 8, 64, 0, 64, full);
        t_attn_step(352, 8, 64, 0, 64, full);
        const int64_t lng[DEC_N] = {2600, 1000, 5000}; /* swa_gdn2_1.3B's layer: 16 heads of 128, window 2048 */
        t_attn_step(16, 16, 128, 2048, 2048, lng);
    }

    t_sample(160, 37);
    t_sample(160, 1000);
    t_sample(64, 32000);
    t_sample(20, 60000); /* a vocabulary twice the configs' */
    /* CUDA: up to 16 rows (8 n <= the SM count of an H100/H200) a cluster of 8 blocks a row, above it
     * and past V = 65,536 one block a row (src/cuda/sample.cu) */
    t_sample(16, 50304);
    t_sample(16, 1000);
    t_sample(3, 37);
    t_sample(12, 70000);

    if (have_gpu) GPU.destroy(&GPU);
    CPU.destroy(&CPU);
    return test_summary();
}
