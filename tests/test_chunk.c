/* Chunkwise fp32 kernels (gdn2_chunk_fwd / gdn2_chunk_bwd) against the float64 token-serial
 * reference (gdn2_ref_fwd / gdn2_ref_bwd): a table of shapes and options, a stability table
 * (strong decay, b and w at 0/1/2), and the official fixtures.
 * Metric: relative RMSE = rms(x − ref)/rms(ref); bars 1e-5 for o/ht, 1e-4 for every gradient. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


#include "check.h"
#include "fixture.h"
#include "gdn2.h"
#include "ops/chunk_common.h" /* gdn2_chunk_fwd_beta, gdn2_transpose (internal) */
#include "util/internal.h"    /* gdn2_gemm_small_kernels */

#define BAR_FWD 1e-5
#define BAR_BWD 1e-4

typedef struct {
    const char *name;
    int64_t B, T, H, HV, K, V;
    int l2norm, gate; /* gate: 0 none, 1 softplus, 2 lower bound */
    int h0, dht, bwd;
    int n_seqs;
    int64_t lens[4];  /* varlen sequence lengths (B = 1) */
    int kind;         /* 0 normal, 1 strong decay + b,w in {0,1,2}, 2 b = 2 everywhere, 3 g = -50 everywhere,
                         4 g uniform in [-3, 0] (every level of the score-tile split) */
    int threads;
} tcase;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *fl(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static double *db(size_t n) { return calloc(n ? n : 1, sizeof(double)); }
static double *to64(const float *x, size_t n) {
    double *y = db(n);
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

/* Deterministic inputs, roughly as the official fixtures make them. */
static void gen(const tcase *c, unsigned long long seed, size_t nq, size_t nv, size_t ns, float *q, float *k,
                float *v, float *g, float *b, float *w, float *h0, float *A_log, float *dt_bias, float *dO,
                float *dht) {
    unsigned long long s = seed;
    const int64_t K = c->K;
    for (size_t i = 0; i < nq; i++) {
        q[i] = (float)test_normal(&s);
        k[i] = (float)test_normal(&s);
    }
    if (!c->l2norm) /* pre-normalised q, k as the layer would pass them */
        for (size_t r = 0; r < nq / K; r++) {
            double sq = 0, sk = 0;
            for (int64_t j = 0; j < K; j++) sq += (double)q[r * K + j] * q[r * K + j], sk += (double)k[r * K + j] * k[r * K + j];
            for (int64_t j = 0; j < K; j++) q[r * K + j] /= (float)sqrt(sq), k[r * K + j] /= (float)sqrt(sk);
        }
    for (size_t i = 0; i < nv; i++) {
        v[i] = (float)test_normal(&s);
        w[i] = (float)(1.0 / (1.0 + exp(-test_normal(&s))));
        dO[i] = (float)test_normal(&s);
    }
    for (size_t i = 0; i < nq; i++) {
        b[i] = (float)(1.0 / (1.0 + exp(-test_normal(&s))));
        if (c->gate) {
            g[i] = (float)(0.5 * test_normal(&s));
        } else {
            double x = test_normal(&s) - 2.5, sp = x > 20 ? x : log1p(exp(x));
            g[i] = (float)fmin(-0.001, fmax(-0.5, -sp));
        }
        if (c->kind == 1) { /* strong decay mixed with none; b in {0,1,2}, w in {0,1} */
            double u = test_uniform(&s);
            g[i] = u < 0.3 ? (float)(-50.0 * test_uniform(&s)) : u < 0.5 ? 0.0f : g[i];
            int sel = (int)(test_uniform(&s) * 3);
            b[i] = (float)sel;
        }
        if (c->kind == 2) b[i] = 2.0f;
        if (c->kind == 3) g[i] = -50.0f;
        if (c->kind == 4) g[i] = (float)(-3.0 * test_uniform(&s)); /* spans ~100 per chunk: nested score tiles */
    }
    if (c->kind == 1)
        for (size_t i = 0; i < nv; i++) w[i] = test_uniform(&s) < 0.5 ? 0.0f : 1.0f;
    for (size_t i = 0; i < ns; i++) {
        h0[i] = (float)(0.1 * test_normal(&s));
        dht[i] = (float)test_normal(&s);
    }
    for (int64_t h = 0; h < c->H; h++) {
        A_log[h] = (float)log(1.0 + 15.0 * test_uniform(&s));
        for (int64_t j = 0; j < K; j++) {
            double dt = exp(log(1e-3) + (log(0.1) - log(1e-3)) * test_uniform(&s));
            dt_bias[h * K + j] = (float)(dt + log(-expm1(-dt)));
        }
    }
}

static int cmp(const tcase *c, const char *what, const float *x, const double *ref, size_t n, double bar) {
    double e = rel_rmse_f32_f64(x, ref, n);
    int fin = all_finite_f32(x, n);
    CHECK(fin && e <= bar, "chunk %-34s %-8s rel_rmse %.2e (bar %.0e)%s", c->name, what, e, bar,
          fin ? "" : " NON-FINITE");
    return fin && e <= bar;
}

static void run_case(const tcase *c) {
    int64_t cu[5] = {0};
    gdn2_dims d = {c->B, c->T, c->H, c->HV, c->K, c->V};
    gdn2_opts o = {0};
    o.qk_l2norm = c->l2norm;
    o.gate_in_kernel = c->gate != 0;
    o.lower_bound = c->gate == 2 ? -3.0f : 0.0f;
    o.n_threads = c->threads;
    if (c->n_seqs) {
        d.B = 1;
        for (int i = 0; i < c->n_seqs; i++) cu[i + 1] = cu[i] + c->lens[i];
        d.T = cu[c->n_seqs];
        o.cu_seqlens = cu;
        o.n_seqs = c->n_seqs;
    }
    const int64_t N = gdn2_num_states(&d, &o);
    const size_t nq = (size_t)(d.B * d.T * d.H * d.K), nv = (size_t)(d.B * d.T * d.HV * d.V);
    const size_t ns = (size_t)(N * d.HV * d.K * d.V), nh = (size_t)d.H, nhk = (size_t)(d.H * d.K);
    float *q = fl(nq), *k = fl(nq), *v = fl(nv), *g = fl(nq), *b = fl(nq), *w = fl(nv), *h0 = fl(ns);
    float *A_log = fl(nh), *dt_bias = fl(nhk), *dO = fl(nv), *dht = fl(ns);
    gen(c, 1234 + (unsigned long long)c->T * 7 + c->K, nq, nv, ns, q, k, v, g, b, w, h0, A_log, dt_bias, dO, dht);

    /* float64 reference on the same (fp32-rounded) inputs */
    double *q64 = to64(q, nq), *k64 = to64(k, nq), *v64 = to64(v, nv), *g64 = to64(g, nq), *b64 = to64(b, nq);
    double *w64 = to64(w, nv), *h064 = to64(h0, ns), *Al64 = to64(A_log, nh), *dtb64 = to64(dt_bias, nhk);
    double *dO64 = to64(dO, nv), *dht64 = to64(dht, ns);
    double *o64 = db(nv), *ht64 = db(ns);
    gdn2_fwd_tensors_f64 t64 = {q64, k64, v64, g64, b64, w64, c->h0 ? h064 : NULL, Al64, dtb64, o64, ht64};
    int rc = gdn2_ref_fwd(&d, &o, &t64);
    CHECK(rc == GDN2_OK, "ref fwd %s: %s", c->name, gdn2_last_error());

    float *out = fl(nv), *ht = fl(ns);
    gdn2_fwd_tensors t = {q, k, v, g, b, w, c->h0 ? h0 : NULL, A_log, dt_bias, out, ht};
    rc = gdn2_chunk_fwd(&d, &o, &t);
    CHECK(rc == GDN2_OK, "chunk fwd %s runs (%s)", c->name, rc ? gdn2_last_error() : "ok");
    if (rc == GDN2_OK) {
        cmp(c, "o", out, o64, nv, BAR_FWD);
        cmp(c, "ht", ht, ht64, ns, BAR_FWD);
    }

    if (c->bwd) {
        double *dq64 = db(nq), *dk64 = db(nq), *dv64 = db(nv), *dg64 = db(nq), *db64 = db(nq), *dw64 = db(nv);
        double *dh064 = db(ns), *dAl64 = db(nh), *ddt64 = db(nhk);
        gdn2_bwd_tensors_f64 g64t = {dO64, c->dht ? dht64 : NULL, dq64, dk64, dv64, dg64, db64, dw64, dh064,
                                     dAl64, ddt64};
        rc = gdn2_ref_bwd(&d, &o, &t64, &g64t);
        CHECK(rc == GDN2_OK, "ref bwd %s: %s", c->name, gdn2_last_error());
        float *dq = fl(nq), *dk = fl(nq), *dv = fl(nv), *dg = fl(nq), *dbb = fl(nq), *dw = fl(nv), *dh0 = fl(ns);
        float *dAl = fl(nh), *ddt = fl(nhk);
        gdn2_bwd_tensors gt = {dO, c->dht ? dht : NULL, dq, dk, dv, dg, dbb, dw, dh0, dAl, ddt};
        rc = gdn2_chunk_bwd(&d, &o, &t, &gt);
        CHECK(rc == GDN2_OK, "chunk bwd %s runs (%s)", c->name, rc ? gdn2_last_error() : "ok");
        if (rc == GDN2_OK) {
            cmp(c, "dq", dq, dq64, nq, BAR_BWD);
            cmp(c, "dk", dk, dk64, nq, BAR_BWD);
            cmp(c, "dv", dv, dv64, nv, BAR_BWD);
            cmp(c, "dg", dg, dg64, nq, BAR_BWD);
            cmp(c, "db", dbb, db64, nq, BAR_BWD);
            cmp(c, "dw", dw, dw64, nv, BAR_BWD);
            cmp(c, "dh0", dh0, dh064, ns, BAR_BWD);
            if (c->gate) {
                cmp(c, "dA_log", dAl, dAl64, nh, BAR_BWD);
                cmp(c, "ddt_bias", ddt, ddt64, nhk, BAR_BWD);
            }
        }
        /* the saved forward: o and ht bit for bit as the plain forward's; the backward from the saved
         * records against the float64 reference (same bars) and against the plain backward. The two
         * backwards agree bit for bit on the fast path (one score tile); on split tiles the forward
         * computes T in the GEMM it stacks with Aqk's ([q ; b⊙k] rows) and the plain backward's
         * state pass on its own, which rounds differently (~1e-7) on the AVX-512 kernels: the
         * per-token gradients then stay within 1e-5 of each other; dA_log and ddt_bias (one
         * cancelling sum per head) are held to the float64 bar only. */
        {
            const size_t ssz = gdn2_chunk_saved_size(&d, &o);
            void *sv = malloc(ssz ? ssz : 1);
            float *o2 = fl(nv), *ht2 = fl(ns);
            gdn2_fwd_tensors t2 = t;
            t2.o = o2;
            t2.ht = ht2;
            rc = gdn2_chunk_fwd_save(&d, &o, &t2, sv, ssz);
            CHECK(rc == GDN2_OK && !memcmp(o2, out, nv * sizeof(float)) && !memcmp(ht2, ht, ns * sizeof(float)),
                  "chunk fwd_save %s: o, ht as the plain forward's (%s)", c->name, rc ? gdn2_last_error() : "ok");
            float *e[9], *p[9] = {dq, dk, dv, dg, dbb, dw, dh0, dAl, ddt};
            const size_t en[9] = {nq, nq, nv, nq, nq, nv, ns, nh, nhk};
            for (int i = 0; i < 9; i++) e[i] = fl(en[i]);
            gdn2_bwd_tensors g2 = {dO, c->dht ? dht : NULL, e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8]};
            rc = gdn2_chunk_bwd_saved(&d, &o, &t2, &g2, sv, ssz);
            CHECK(rc == GDN2_OK, "chunk bwd_saved %s runs (%s)", c->name, rc ? gdn2_last_error() : "ok");
            if (rc == GDN2_OK) {
                static const char *nm[9] = {"dq", "dk", "dv", "dg", "db", "dw", "dh0", "dA_log", "ddt_bias"};
                const double *r64[9] = {dq64, dk64, dv64, dg64, db64, dw64, dh064, dAl64, ddt64};
                double worst = 0.0;
                for (int i = 0; i < (c->gate ? 9 : 7); i++) {
                    char what[32];
                    snprintf(what, sizeof what, "saved %s", nm[i]);
                    cmp(c, what, e[i], r64[i], en[i], BAR_BWD);
                    if (i >= 7) continue;
                    double *pp = to64(p[i], en[i]);
                    double dd = rel_rmse_f32_f64(e[i], pp, en[i]);
                    worst = dd > worst ? dd : worst;
                    free(pp);
                }
                CHECK(worst <= 1e-5, "chunk bwd_saved %s vs plain bwd: worst rel_rmse over dq..dh0 %.2e (bar 1e-5)",
                      c->name, worst);
            }
            if (ssz) {
                rc = gdn2_chunk_bwd_saved(&d, &o, &t2, &g2, sv, ssz - 4);
                CHECK(rc == GDN2_ERR_ARG, "chunk bwd_saved %s rejects a short saved buffer: %s", c->name, gdn2_last_error());
            }
            for (int i = 0; i < 9; i++) free(e[i]);
            free(sv); free(o2); free(ht2);
        }
        free(dq64); free(dk64); free(dv64); free(dg64); free(db64); free(dw64); free(dh064); free(dAl64); free(ddt64);
        free(dq); free(dk); free(dv); free(dg); free(dbb); free(dw); free(dh0); free(dAl); free(ddt);
    }
    free(q); free(k); free(v); free(g); free(b); free(w); free(h0); free(A_log); free(dt_bias); free(dO); free(dht);
    free(q64); free(k64); free(v64); free(g64); free(b64); free(w64); free(h064); free(Al64); free(dtb64);
    free(dO64); free(dht64); free(o64); free(ht64); free(out); free(ht);
}

/* ---- official fixtures ---------------------------------------------------------------------- */

static void fixture(const char *file) {
    gdn2_st st;
    if (!fixture_read(file, &st)) return;
    int rc;
    int64_t sq[4] = {-1, -1, -1, -1}, sv[4] = {-1, -1, -1, -1}, sst[4] = {-1, -1, -1, -1};
    float *q = NULL, *k = NULL, *v = NULL, *g = NULL, *b = NULL, *w = NULL, *h0 = NULL, *dO = NULL, *dht = NULL;
    float *A_log = NULL, *dt_bias = NULL;
    rc = gdn2_st_get_f32(&st, "q", 1, 4, sq, &q);
    if (!rc) rc = gdn2_st_get_f32(&st, "v", 1, 4, sv, &v);
    int64_t s2[4] = {sq[0], sq[1], sq[2], sq[3]}, s3[4] = {sv[0], sv[1], sv[2], sv[3]};
    if (!rc) rc = gdn2_st_get_f32(&st, "k", 1, 4, s2, &k);
    if (!rc) rc = gdn2_st_get_f32(&st, "g", 1, 4, s2, &g);
    if (!rc) rc = gdn2_st_get_f32(&st, "b", 1, 4, s2, &b);
    if (!rc) rc = gdn2_st_get_f32(&st, "w", 1, 4, s3, &w);
    if (!rc) rc = gdn2_st_get_f32(&st, "do", 1, 4, s3, &dO);
    if (!rc) rc = gdn2_st_get_f32(&st, "h0", 0, 4, sst, &h0);
    int64_t s4[4] = {-1, -1, -1, -1};
    if (!rc) rc = gdn2_st_get_f32(&st, "dht", 0, 4, s4, &dht);
    int64_t sa[1] = {-1}, sd[1] = {-1};
    if (!rc) rc = gdn2_st_get_f32(&st, "A_log", 0, 1, sa, &A_log);
    if (!rc) rc = gdn2_st_get_f32(&st, "dt_bias", 0, 1, sd, &dt_bias);
    CHECK(rc == GDN2_OK, "%s: inputs (%s)", file, rc ? gdn2_last_error() : "ok");
    if (rc) goto done;
    {
        gdn2_dims d = {sq[0], sq[1], sq[2], sv[2], sq[3], sv[3]};
        gdn2_opts o;
        fixture_opts(&st, &o);
        const size_t nq = (size_t)(d.B * d.T * d.H * d.K), nv = (size_t)(d.B * d.T * d.HV * d.V);
        const size_t ns = (size_t)(d.B * d.HV * d.K * d.V), nhk = (size_t)(d.H * d.K);
        float *out = fl(nv), *ht = fl(ns), *dq = fl(nq), *dk = fl(nq), *dv = fl(nv), *dg = fl(nq), *dbb = fl(nq);
        float *dw = fl(nv), *dh0 = fl(ns), *dAl = fl((size_t)d.H), *ddt = fl(nhk);
        gdn2_fwd_tensors t = {q, k, v, g, b, w, h0, A_log, dt_bias, out, ht};
        gdn2_bwd_tensors gt = {dO, dht, dq, dk, dv, dg, dbb, dw, dh0, dAl, ddt};
        rc = gdn2_chunk_fwd(&d, &o, &t);
        if (!rc) rc = gdn2_chunk_bwd(&d, &o, &t, &gt);
        CHECK(rc == GDN2_OK, "%s: chunk fwd+bwd (%s)", file, rc ? gdn2_last_error() : "ok");
        if (!rc) {
            struct { const char *n; float *x; size_t len; double bar; } outs[] = {
                {"o", out, nv, BAR_FWD}, {"ht", ht, ns, BAR_FWD}, {"dq", dq, nq, BAR_BWD}, {"dk", dk, nq, BAR_BWD},
                {"dv", dv, nv, BAR_BWD}, {"dg", dg, nq, BAR_BWD}, {"db", dbb, nq, BAR_BWD}, {"dw", dw, nv, BAR_BWD},
                {"dh0", dh0, ns, BAR_BWD}, {"dA_log", dAl, (size_t)d.H, BAR_BWD}, {"ddt_bias", ddt, nhk, BAR_BWD}};
            for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
                char name[64];
                const gdn2_tensor *r;
                if (!o.gate_in_kernel && (!strcmp(outs[i].n, "dA_log") || !strcmp(outs[i].n, "ddt_bias"))) continue;
                if (!strcmp(outs[i].n, "dh0") && !h0) continue;
                snprintf(name, sizeof name, "ref64_%s", outs[i].n);
                r = gdn2_st_find(&st, name);
                if (!r) {
                    CHECK(0, "%s: no ref tensor %s in the fixture", file, name);
                    continue;
                }
                float *ref = NULL;
                int64_t shp[GDN2_MAX_DIMS];
                for (int j = 0; j < r->ndim; j++) shp[j] = -1;
                if (gdn2_st_get_f32(&st, name, 1, r->ndim, shp, &ref) != GDN2_OK) {
                    CHECK(0, "%s: %s unreadable: %s", file, name, gdn2_last_error());
                    continue;
                }
                double e = rel_rmse_f32(outs[i].x, ref, outs[i].len);
                CHECK(e <= outs[i].bar, "fixture %-24s %-8s vs ref64 rel_rmse %.2e (bar %.0e)", file, outs[i].n, e,
                      outs[i].bar);
                free(ref);
                snprintf(name, sizeof name, "chunk_%s", outs[i].n);
                if (gdn2_st_find(&st, name)) {
                    for (int j = 0; j < r->ndim; j++) shp[j] = -1;
                    if (gdn2_st_get_f32(&st, name, 1, r->ndim, shp, &ref) == GDN2_OK) {
                        printf("info fixture %-24s %-8s vs official chunk rel_rmse %.2e\n", file, outs[i].n,
                               rel_rmse_f32(outs[i].x, ref, outs[i].len));
                        free(ref);
                    }
                }
            }
        }
        free(out); free(ht); free(dq); free(dk); free(dv); free(dg); free(dbb); free(dw); free(dh0); free(dAl); free(ddt);
    }
done:
    free(q); free(k); free(v); free(g); free(b); free(w); free(h0); free(dO); free(dht); free(A_log); free(dt_bias);
    gdn2_st_free(&st);
}

/* ---- bad input ------------------------------------------------------------------------------ */
static void bad_inputs(void) {
    gdn2_dims d = {1, 10, 2, 3, 16, 16};
    gdn2_opts o = {0};
    /* large enough for every tensor of d (zeros are valid values): the ops read their inputs
     * before some of the checks below (the value scan precedes the workspace check) */
    static float x[1024];
    gdn2_fwd_tensors t = {x, x, x, x, x, x, NULL, NULL, NULL, x, NULL};
    int rc = gdn2_chunk_fwd(&d, &o, &t);
    CHECK(rc == GDN2_ERR_ARG, "chunk fwd rejects HV=3 with H=2: %s", gdn2_last_error());
    d.HV = 2;
    t.b = NULL;
    rc = gdn2_chunk_fwd(&d, &o, &t);
    CHECK(rc == GDN2_ERR_ARG && strstr(gdn2_last_error(), "'b'"), "chunk fwd rejects b=NULL: %s", gdn2_last_error());
    t.b = x;
    {
        gdn2_bwd_tensors gb = {NULL, NULL, x, x, x, x, x, x, NULL, NULL, NULL};
        rc = gdn2_chunk_bwd(&d, &o, &t, &gb);
        CHECK(rc == GDN2_ERR_ARG && strstr(gdn2_last_error(), "'do'"), "chunk bwd rejects do=NULL: %s",
              gdn2_last_error());
        gb.d_o = x;
        gb.dg = NULL;
        rc = gdn2_chunk_bwd(&d, &o, &t, &gb);
        CHECK(rc == GDN2_ERR_ARG && strstr(gdn2_last_error(), "'dg'"), "chunk bwd rejects dg=NULL: %s",
              gdn2_last_error());
        o.gate_in_kernel = 1;
        gdn2_clear_error();
        rc = gdn2_chunk_fwd(&d, &o, &t); /* A_log and dt_bias NULL: zero (test_python / test_cli_op compare) */
        CHECK(rc == GDN2_OK, "chunk fwd with the gate and no A_log / dt_bias runs (absent = zero): %d %s", rc,
              gdn2_last_error());
        o.gate_in_kernel = 0;
    }
    o.workspace = x;
    o.workspace_size = 4;
    rc = gdn2_chunk_fwd(&d, &o, &t);
    CHECK(rc == GDN2_ERR_ARG, "chunk fwd rejects a too small workspace: %s", gdn2_last_error());
}

/* A caller-provided workspace and 1 vs 2 threads give bit-identical results (tasks are independent). */
static void workspace_threads(void) {
    gdn2_dims d = {2, 100, 2, 2, 32, 32};
    tcase c = {.name = "ws", .K = 32, .H = 2};
    const size_t nq = 2 * 100 * 2 * 32, ns = 2 * 2 * 32 * 32;
    float *q = fl(nq), *k = fl(nq), *v = fl(nq), *g = fl(nq), *b = fl(nq), *w = fl(nq), *h0 = fl(ns), *dht = fl(ns);
    float *Al = fl(2), *dtb = fl(64), *dO = fl(nq);
    gen(&c, 99, nq, nq, ns, q, k, v, g, b, w, h0, Al, dtb, dO, dht);
    float *o1 = fl(nq), *o2 = fl(nq), *dq1 = fl(nq), *dq2 = fl(nq), *dg1 = fl(nq), *dg2 = fl(nq), *sc = fl(nq * 4);
    gdn2_opts o = {0};
    o.n_threads = 1;
    gdn2_fwd_tensors t = {q, k, v, g, b, w, h0, NULL, NULL, o1, NULL};
    gdn2_bwd_tensors gt = {dO, dht, dq1, sc, sc + nq, dg1, sc + 2 * nq, sc + 3 * nq, NULL, NULL, NULL};
    int rc = gdn2_chunk_fwd(&d, &o, &t) || gdn2_chunk_bwd(&d, &o, &t, &gt);
    o.n_threads = 2;
    size_t sz = gdn2_chunk_workspace_size(&d, &o, 1);
    void *ws = malloc(sz);
    o.workspace = ws;
    o.workspace_size = sz;
    t.o = o2;
    gt.dq = dq2;
    gt.dg = dg2;
    rc = rc || gdn2_chunk_fwd(&d, &o, &t) || gdn2_chunk_bwd(&d, &o, &t, &gt);
    CHECK(rc == 0 && sz > 0 && !memcmp(o1, o2, nq * sizeof(float)) && !memcmp(dq1, dq2, nq * sizeof(float)) &&
              !memcmp(dg1, dg2, nq * sizeof(float)),
          "chunk: 2 threads + caller workspace (%zu bytes) bit-identical to 1 thread", sz);
    free(ws); free(q); free(k); free(v); free(g); free(b); free(w); free(h0); free(dht); free(Al); free(dtb); free(dO);
    free(o1); free(o2); free(dq1); free(dq2); free(dg1); free(dg2); free(sc);
}

/* KDA mode of the forward (scalar beta read directly) equals the full op on expanded b = w = beta. */
static void beta_mode(void) {
    gdn2_dims d = {1, 150, 2, 4, 32, 48};
    tcase c = {.name = "beta", .K = 32, .H = 2};
    const size_t nq = 150 * 2 * 32, nv = 150 * 4 * 48, ns = 4 * 32 * 48;
    float *q = fl(nq), *k = fl(nq), *v = fl(nv), *g = fl(nq), *b = fl(nq), *w = fl(nv), *h0 = fl(ns), *dht = fl(ns);
    float *Al = fl(2), *dtb = fl(64), *dO = fl(nv), *beta = fl(150 * 2), *o1 = fl(nv), *o2 = fl(nv), *h1 = fl(ns), *h2 = fl(ns);
    gen(&c, 5, nq, nv, ns, q, k, v, g, b, w, h0, Al, dtb, dO, dht);
    for (int i = 0; i < 150 * 2; i++) beta[i] = b[i * 32];
    for (size_t i = 0; i < nq; i++) b[i] = beta[i / 32];
    for (size_t i = 0; i < nv; i++) w[i] = beta[(i / (4 * 48)) * 2 + (i / 48 % 4) / 2];
    gdn2_opts o = {0};
    o.qk_l2norm = 1;
    gdn2_fwd_tensors t = {q, k, v, g, b, w, h0, NULL, NULL, o1, h1};
    int rc = gdn2_chunk_fwd(&d, &o, &t);
    t.b = t.w = NULL;
    t.o = o2;
    t.ht = h2;
    rc = rc || gdn2_chunk_fwd_beta(&d, &o, &t, beta);
    CHECK(rc == 0 && !memcmp(o1, o2, nv * sizeof(float)) && !memcmp(h1, h2, ns * sizeof(float)),
          "chunk fwd, KDA beta mode (GVA 2->4) bit-identical to expanded b = w = beta");
    free(q); free(k); free(v); free(g); free(b); free(w); free(h0); free(dht); free(Al); free(dtb); free(dO); free(beta);
    free(o1); free(o2); free(h1); free(h2);
}

/* gdn2_transpose (16x16 vector blocks and ragged strips) against the plain loop, exactly */
static void transpose_blocks(void) {
    const int sizes[][2] = {{128, 128}, {64, 128}, {37, 70}, {16, 5}, {1, 33}, {17, 16}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        const int r = sizes[t][0], c = sizes[t][1], lds = c + 3, ldd = r + 5;
        float *src = fl((size_t)r * lds), *dst = fl((size_t)c * ldd);
        for (int i = 0; i < r * lds; i++) src[i] = (float)(i % 977) - 400.5f;
        gdn2_transpose(dst, ldd, src, lds, r, c);
        int ok = 1;
        for (int i = 0; i < r; i++)
            for (int j = 0; j < c; j++) ok &= dst[(size_t)j * ldd + i] == src[(size_t)i * lds + j];
        CHECK(ok, "gdn2_transpose %dx%d (row strides %d, %d) equals the plain loop", r, c, lds, ldd);
        free(src), free(dst);
    }
}

int main(void) {
    const tcase cases[] = {
        {.name = "T1 K16 V16", .B = 1, .T = 1, .H = 1, .HV = 1, .K = 16, .V = 16, .l2norm = 0, .gate = 0, .h0 = 0, .dht = 0, .bwd = 1},
        {.name = "T15 K16 V64 h0 dht", .B = 2, .T = 15, .H = 1, .HV = 1, .K = 16, .V = 64, .l2norm = 0, .gate = 0, .h0 = 1, .dht = 1, .bwd = 1},
        {.name = "T63 K64 V16 l2", .B = 1, .T = 63, .H = 2, .HV = 2, .K = 64, .V = 16, .l2norm = 1, .gate = 0, .h0 = 1, .dht = 0, .bwd = 1},
        {.name = "T64 K64 V64 GVA2x", .B = 1, .T = 64, .H = 2, .HV = 4, .K = 64, .V = 64, .l2norm = 0, .gate = 0, .h0 = 1, .dht = 1, .bwd = 1},
        {.name = "T65 K128 V64 l2 gate", .B = 1, .T = 65, .H = 1, .HV = 1, .K = 128, .V = 64, .l2norm = 1, .gate = 1, .h0 = 0, .dht = 1, .bwd = 1},
        {.name = "T200 K64 V128 l2 lb GVA", .B = 1, .T = 200, .H = 1, .HV = 2, .K = 64, .V = 128, .l2norm = 1, .gate = 2, .h0 = 1, .dht = 1, .bwd = 1},
        {.name = "T200 K16 V16 B2 gate h0", .B = 2, .T = 200, .H = 2, .HV = 2, .K = 16, .V = 16, .l2norm = 0, .gate = 1, .h0 = 1, .dht = 0, .bwd = 1},
        {.name = "varlen 1,64,129 K64 V16 gate", .B = 1, .T = 0, .H = 1, .HV = 2, .K = 64, .V = 16, .l2norm = 1, .gate = 1, .h0 = 1, .dht = 1, .bwd = 1, .n_seqs = 3, .lens = {1, 64, 129}},
        {.name = "varlen 129,1,64 K16 V128 lb", .B = 1, .T = 0, .H = 2, .HV = 2, .K = 16, .V = 128, .l2norm = 0, .gate = 2, .h0 = 0, .dht = 1, .bwd = 1, .n_seqs = 3, .lens = {129, 1, 64}},
        {.name = "varlen 0,70,0 K16 V16 (empty seqs)", .B = 1, .T = 0, .H = 1, .HV = 1, .K = 16, .V = 16, .l2norm = 1, .gate = 0, .h0 = 1, .dht = 1, .bwd = 1, .n_seqs = 3, .lens = {0, 70, 0}},
        {.name = "T1000 K128 V128 l2 h0 dht", .B = 1, .T = 1000, .H = 1, .HV = 1, .K = 128, .V = 128, .l2norm = 1, .gate = 0, .h0 = 1, .dht = 1, .bwd = 1},
        {.name = "T1000 K128 V128 gate 2thr", .B = 1, .T = 1000, .H = 2, .HV = 2, .K = 128, .V = 128, .l2norm = 1, .gate = 1, .h0 = 0, .dht = 0, .bwd = 0, .threads = 2},
        /* stability */
        {.name = "stab g>=-50 b,w in{0,1,2}", .B = 1, .T = 200, .H = 2, .HV = 2, .K = 64, .V = 64, .l2norm = 0, .gate = 0, .h0 = 1, .dht = 1, .bwd = 1, .kind = 1},
        {.name = "stab b=2", .B = 1, .T = 200, .H = 1, .HV = 1, .K = 64, .V = 32, .l2norm = 1, .gate = 0, .h0 = 1, .dht = 1, .bwd = 1, .kind = 2},
        {.name = "g in [-3,0] K128 V64 GVA", .B = 1, .T = 130, .H = 1, .HV = 2, .K = 128, .V = 64, .l2norm = 1, .gate = 0, .h0 = 1, .dht = 1, .bwd = 1, .kind = 4},
        {.name = "stab g=-50", .B = 1, .T = 130, .H = 1, .HV = 1, .K = 32, .V = 32, .l2norm = 0, .gate = 0, .h0 = 1, .dht = 1, .bwd = 1, .kind = 3},
    };
    double t0 = now_s();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    /* the other shape of the chunk products (gdn2_chunk_sgemm's column blocks and the scores against
     * a transposed operand for OpenBLAS's small-matrix kernels, or the plain products), whichever this
     * machine's kernel set does not take, on the cases with 64- and 128-wide heads */
    const int small = gdn2_gemm_small_kernels();
    setenv("GDN2_GEMM_SMALL", small ? "0" : "1", 1);
    CHECK(gdn2_gemm_small_kernels() == !small, "GDN2_GEMM_SMALL=%d forces the products' shape (kernel set's: %d)",
          !small, small);
    const size_t other[] = {3, 4, 5, 7, 10, 14};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        tcase c = cases[other[i]];
        char name[96];
        snprintf(name, sizeof name, "%s [small=%d]", c.name, !small);
        c.name = name;
        run_case(&c);
    }
    unsetenv("GDN2_GEMM_SMALL");
    transpose_blocks();
    fixture("op_small.safetensors");
    fixture("op_gate_in_kernel.safetensors");
    fixture("op_gva.safetensors");
    bad_inputs();
    workspace_threads();
    beta_mode();
    printf("info test_chunk took %.1f s\n", now_s() - t0);
    return test_summary();
}
