/* The float64 reference (gdn2_ref_fwd / gdn2_ref_bwd):
 *  1. forward vs a dense-matrix form of the recurrence written here from its definition,
 *     S_t = (I − k(b⊙k)ᵀ) Diag(α) S_{t−1} + k(w⊙v)ᵀ, with its own l2norm, gate and GVA code;
 *  2. every gradient vs central finite differences of L = Σ o⊙R + Σ ht⊙R2;
 *  3. the official fixtures' ref64_* tensors (float64 autograd of an independent recurrence). */
#include <math.h>
#include <stdlib.h>
#include <string.h>


#include "check.h"
#include "fixture.h"
#include "gdn2.h"
#include "gdn2_io.h"

typedef struct {
    const char *name;
    gdn2_dims d;
    gdn2_opts o;
    int64_t cu[8];
    int use_h0;
    double bmax; /* b ~ U(0, bmax): 2 covers allow_neg_eigval */
    double *q, *k, *v, *g, *b, *w, *h0, *A_log, *dt_bias, *R, *R2;
    int64_t nk, nv, ns;
} prob;

static double *rnd(int64_t n, unsigned long long *s, double lo, double hi) {
    double *x = malloc((size_t)(n ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * test_uniform(s);
    return x;
}
static double *rndn(int64_t n, unsigned long long *s, double sd) {
    double *x = malloc((size_t)(n ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++) x[i] = sd * test_normal(s);
    return x;
}

static void prob_init(prob *p, unsigned long long seed) {
    unsigned long long s = seed;
    if (p->o.cu_seqlens == NULL && p->o.n_seqs > 0) p->o.cu_seqlens = p->cu;
    const gdn2_dims *d = &p->d;
    int64_t N = gdn2_num_states(d, &p->o);
    p->nk = d->B * d->T * d->H * d->K;
    p->nv = d->B * d->T * d->HV * d->V;
    p->ns = N * d->HV * d->K * d->V;
    p->q = rndn(p->nk, &s, 1.0);
    p->k = rndn(p->nk, &s, 1.0);
    if (!p->o.qk_l2norm) /* keep the recurrence in its natural range: |k| ~ 1 */
        for (int64_t i = 0; i < p->nk; i++) { p->q[i] /= sqrt((double)d->K); p->k[i] /= sqrt((double)d->K); }
    p->v = rndn(p->nv, &s, 1.0);
    p->g = p->o.gate_in_kernel ? rndn(p->nk, &s, 1.0) : rnd(p->nk, &s, -1.0, -0.01);
    p->b = rnd(p->nk, &s, 0.0, p->bmax);
    p->w = rnd(p->nv, &s, 0.0, 1.0);
    p->h0 = p->use_h0 ? rndn(p->ns, &s, 0.3) : NULL;
    p->A_log = rnd(d->H, &s, 0.0, log(16.0));
    p->dt_bias = rndn(d->H * d->K, &s, 0.5);
    p->R = rndn(p->nv, &s, 1.0);
    p->R2 = rndn(p->ns, &s, 1.0);
}
static void prob_free(prob *p) {
    free(p->q); free(p->k); free(p->v); free(p->g); free(p->b); free(p->w); free(p->h0);
    free(p->A_log); free(p->dt_bias); free(p->R); free(p->R2);
}
static gdn2_fwd_tensors_f64 prob_fwd(const prob *p, double *o, double *ht) {
    gdn2_fwd_tensors_f64 t = {p->q, p->k, p->v, p->g, p->b, p->w, p->h0, p->A_log, p->dt_bias, o, ht};
    return t;
}

static double loss(const prob *p, double *o, double *ht) {
    gdn2_fwd_tensors_f64 t = prob_fwd(p, o, ht);
    gdn2_opts o1 = p->o;
    o1.n_threads = 1; /* thousands of tiny calls: OpenMP start-up would dominate on a loaded machine */
    if (gdn2_ref_fwd(&p->d, &o1, &t) != GDN2_OK) return NAN;
    double L = 0;
    for (int64_t i = 0; i < p->nv; i++) L += o[i] * p->R[i];
    for (int64_t i = 0; i < p->ns; i++) L += ht[i] * p->R2[i];
    return L;
}

static double rel_err(const double *x, const double *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (x[i] - ref[i]) * (x[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- 1. dense-matrix form, independent of the library's code ---------------------------- */
static void dense_fwd(const prob *p, double *o, double *ht) {
    const gdn2_dims *d = &p->d;
    const int64_t H = d->H, HV = d->HV, K = d->K, V = d->V, G = HV / H, N = gdn2_num_states(d, &p->o);
    const double scale = p->o.scale ? p->o.scale : 1.0 / sqrt((double)K);
    double *S = malloc(K * V * sizeof(double)), *DS = malloc(K * V * sizeof(double));
    double *M = malloc(K * K * sizeof(double)), *qn = malloc(K * sizeof(double)), *kn = malloc(K * sizeof(double));
    double *al = malloc(K * sizeof(double));
    for (int64_t n = 0; n < N; n++)
        for (int64_t hv = 0; hv < HV; hv++) {
            const int64_t h = hv / G;
            int64_t bos = p->o.cu_seqlens ? p->cu[n] : n * d->T, eos = p->o.cu_seqlens ? p->cu[n + 1] : bos + d->T;
            for (int64_t i = 0; i < K * V; i++) S[i] = p->h0 ? p->h0[(n * HV + hv) * K * V + i] : 0.0;
            for (int64_t t = bos; t < eos; t++) {
                const double *q = p->q + (t * H + h) * K, *k = p->k + (t * H + h) * K;
                const double *g = p->g + (t * H + h) * K, *b = p->b + (t * H + h) * K;
                const double *v = p->v + (t * HV + hv) * V, *w = p->w + (t * HV + hv) * V;
                double nq = 0, nk = 0;
                for (int64_t c = 0; c < K; c++) { nq += q[c] * q[c]; nk += k[c] * k[c]; }
                for (int64_t c = 0; c < K; c++) {
                    qn[c] = p->o.qk_l2norm ? q[c] / sqrt(nq + 1e-6) : q[c];
                    kn[c] = p->o.qk_l2norm ? k[c] / sqrt(nk + 1e-6) : k[c];
                    double ge = g[c];
                    if (p->o.gate_in_kernel) {
                        double x = g[c] + p->dt_bias[h * K + c], A = exp(p->A_log[h]);
                        if (p->o.lower_bound < 0) ge = p->o.lower_bound / (1.0 + exp(-A * x));
                        else ge = -A * (x > 20 ? x : log(1.0 + exp(x)));
                    }
                    al[c] = exp(ge);
                }
                /* M = (I − k (b⊙k)ᵀ) Diag(α) */
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < K; j++) M[i * K + j] = ((i == j) - kn[i] * b[j] * kn[j]) * al[j];
                for (int64_t i = 0; i < K; i++)
                    for (int64_t x = 0; x < V; x++) {
                        double acc = kn[i] * w[x] * v[x];
                        for (int64_t j = 0; j < K; j++) acc += M[i * K + j] * S[j * V + x];
                        DS[i * V + x] = acc;
                    }
                memcpy(S, DS, K * V * sizeof(double));
                for (int64_t x = 0; x < V; x++) {
                    double acc = 0;
                    for (int64_t i = 0; i < K; i++) acc += S[i * V + x] * scale * qn[i];
                    o[(t * HV + hv) * V + x] = acc;
                }
            }
            memcpy(ht + (n * HV + hv) * K * V, S, K * V * sizeof(double));
        }
    free(S); free(DS); free(M); free(qn); free(kn); free(al);
}

static void test_dense(prob *p) {
    double *o1 = malloc(p->nv * sizeof(double) + 8), *h1 = malloc(p->ns * sizeof(double) + 8);
    double *o2 = malloc(p->nv * sizeof(double) + 8), *h2 = malloc(p->ns * sizeof(double) + 8);
    gdn2_fwd_tensors_f64 t = prob_fwd(p, o1, h1);
    int rc = gdn2_ref_fwd(&p->d, &p->o, &t);
    dense_fwd(p, o2, h2);
    double eo = rel_err(o1, o2, p->nv), eh = rel_err(h1, h2, p->ns);
    CHECK(rc == GDN2_OK && eo < 1e-12 && eh < 1e-12, "dense form [%s]: rel err o %.2e ht %.2e (bar 1e-12)%s%s",
          p->name, eo, eh, rc ? ": " : "", rc ? gdn2_last_error() : "");
    free(o1); free(h1); free(o2); free(h2);
}

/* ---- 2. finite differences ------------------------------------------------------------- */
static void fd_one(prob *p, const char *what, double *x, int64_t n, const double *an, double *o, double *ht) {
    const double hstep = 1e-6;
    double *fd = malloc((size_t)(n ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + hstep;
        double Lp = loss(p, o, ht);
        x[i] = x0 - hstep;
        double Lm = loss(p, o, ht);
        x[i] = x0;
        fd[i] = (Lp - Lm) / (2 * hstep);
    }
    double e = rel_err(an, fd, n);
    CHECK(isfinite(e) && e < 1e-6, "finite differences [%s] d%s: rel err %.2e over %lld entries (bar 1e-6)", p->name,
          what, e, (long long)n);
    free(fd);
}

static void test_fd(prob *p) {
    const gdn2_dims *d = &p->d;
    const int64_t nH = d->H;
    double *o = malloc(p->nv * sizeof(double) + 8), *ht = malloc(p->ns * sizeof(double) + 8);
    double *dq = malloc(p->nk * 8 + 8), *dk = malloc(p->nk * 8 + 8), *dg = malloc(p->nk * 8 + 8), *db = malloc(p->nk * 8 + 8);
    double *dv = malloc(p->nv * 8 + 8), *dw = malloc(p->nv * 8 + 8), *dh0 = malloc(p->ns * 8 + 8);
    double *dA = malloc(nH * 8 + 8), *ddt = malloc(nH * d->K * 8 + 8);
    gdn2_fwd_tensors_f64 t = prob_fwd(p, o, ht);
    gdn2_bwd_tensors_f64 g = {p->R, p->R2, dq, dk, dv, dg, db, dw, dh0, dA, ddt};
    int rc = gdn2_ref_bwd(&p->d, &p->o, &t, &g);
    CHECK(rc == GDN2_OK, "gdn2_ref_bwd [%s] runs%s%s", p->name, rc ? ": " : "", rc ? gdn2_last_error() : "");
    if (rc == GDN2_OK) {
        fd_one(p, "q", p->q, p->nk, dq, o, ht);
        fd_one(p, "k", p->k, p->nk, dk, o, ht);
        fd_one(p, "v", p->v, p->nv, dv, o, ht);
        fd_one(p, p->o.gate_in_kernel ? "g(raw f)" : "g", p->g, p->nk, dg, o, ht);
        fd_one(p, "b", p->b, p->nk, db, o, ht);
        fd_one(p, "w", p->w, p->nv, dw, o, ht);
        if (p->h0) fd_one(p, "h0", p->h0, p->ns, dh0, o, ht);
        if (p->o.gate_in_kernel) {
            fd_one(p, "A_log", p->A_log, nH, dA, o, ht);
            fd_one(p, "dt_bias", p->dt_bias, nH * d->K, ddt, o, ht);
        }
    }
    free(o); free(ht); free(dq); free(dk); free(dg); free(db); free(dv); free(dw); free(dh0); free(dA); free(ddt);
}

/* ---- 3. official fixtures -------------------------------------------------------------- */
static double *get64(const gdn2_st *st, const char *name, int req) {
    const gdn2_tensor *tn = gdn2_st_find(st, name);
    if (!tn) return NULL;
    int64_t shape[GDN2_MAX_DIMS];
    for (int i = 0; i < GDN2_MAX_DIMS; i++) shape[i] = -1;
    double *x = NULL;
    if (gdn2_st_get_f64(st, name, req, tn->ndim, shape, &x) != GDN2_OK) return NULL;
    return x;
}

static void test_fixture(const char *file) {
    gdn2_st st;
    if (!fixture_read(file, &st)) return;
    const gdn2_tensor *tq = gdn2_st_find(&st, "q"), *tv = gdn2_st_find(&st, "v");
    if (!tq || !tv || tq->ndim != 4 || tv->ndim != 4) {
        CHECK(0, "fixture %s: q and v present", file);
        gdn2_st_free(&st);
        return;
    }
    gdn2_dims d = {tq->shape[0], tq->shape[1], tq->shape[2], tv->shape[2], tq->shape[3], tv->shape[3]};
    gdn2_opts op;
    fixture_opts(&st, &op);
    int rc;

    const int64_t nk = d.B * d.T * d.H * d.K, nv = d.B * d.T * d.HV * d.V, ns = d.B * d.HV * d.K * d.V;
    double *q = get64(&st, "q", 1), *k = get64(&st, "k", 1), *v = get64(&st, "v", 1), *g = get64(&st, "g", 1);
    double *b = get64(&st, "b", 1), *w = get64(&st, "w", 1), *h0 = get64(&st, "h0", 0);
    double *A = get64(&st, "A_log", 0), *dtb = get64(&st, "dt_bias", 0);
    double *dO = get64(&st, "do", 1), *dht = get64(&st, "dht", 0);
    double *o = malloc(nv * 8), *ht = malloc(ns * 8), *dq = malloc(nk * 8), *dk = malloc(nk * 8), *dg = malloc(nk * 8);
    double *db = malloc(nk * 8), *dv = malloc(nv * 8), *dw = malloc(nv * 8), *dh0 = malloc(ns * 8);
    double *dA = malloc(d.H * 8), *ddt = malloc(d.H * d.K * 8);
    gdn2_fwd_tensors_f64 t = {q, k, v, g, b, w, h0, A, dtb, o, ht};
    gdn2_bwd_tensors_f64 gr = {dO, dht, dq, dk, dv, dg, db, dw, dh0, dA, ddt};
    rc = (q && k && v && g && b && w && dO) ? gdn2_ref_fwd(&d, &op, &t) : GDN2_ERR_FORMAT;
    if (!rc) rc = gdn2_ref_bwd(&d, &op, &t, &gr);
    CHECK(rc == GDN2_OK, "fixture %s: reference fwd+bwd run%s%s", file, rc ? ": " : "", rc ? gdn2_last_error() : "");
    if (!rc) {
        struct { const char *name; const double *x; int64_t n; } outs[] = {
            {"o", o, nv}, {"ht", ht, ns}, {"dq", dq, nk}, {"dk", dk, nk}, {"dv", dv, nv}, {"dg", dg, nk},
            {"db", db, nk}, {"dw", dw, nv}, {"dh0", dh0, ns}, {"dA_log", dA, d.H}, {"ddt_bias", ddt, d.H * d.K}};
        for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
            char key[64];
            snprintf(key, sizeof key, "ref64_%s", outs[i].name);
            double *ref = get64(&st, key, 0);
            if (!ref) {
                if (!op.gate_in_kernel && (!strcmp(outs[i].name, "dA_log") || !strcmp(outs[i].name, "ddt_bias"))) continue;
                CHECK(0, "fixture %s: %s present", file, key);
                continue;
            }
            double e = rel_err(outs[i].x, ref, outs[i].n);
            CHECK(e <= 1e-6, "fixture %s: %s vs %s rel RMSE %.2e (bar 1e-6)", file, outs[i].name, key, e);
            free(ref);
        }
    }
    free(q); free(k); free(v); free(g); free(b); free(w); free(h0); free(A); free(dtb); free(dO); free(dht);
    free(o); free(ht); free(dq); free(dk); free(dg); free(db); free(dv); free(dw); free(dh0); free(dA); free(ddt);
    gdn2_st_free(&st);
}

/* one thread vs several: the GVA gradient sums are owned per (sequence, key head), so the result
 * must not depend on the thread count (bitwise) */
static void test_threads(prob *p) {
    double *o = malloc(p->nv * 8), *ht = malloc(p->ns * 8);
    double *gA[2][9];
    int rc = 0;
    for (int r = 0; r < 2; r++) {
        p->o.n_threads = r ? 3 : 1;
        double **x = gA[r];
        int64_t n[9] = {p->nk, p->nk, p->nv, p->nk, p->nk, p->nv, p->ns, p->d.H, p->d.H * p->d.K};
        for (int i = 0; i < 9; i++) x[i] = malloc(n[i] * 8 + 8);
        gdn2_fwd_tensors_f64 t = prob_fwd(p, o, ht);
        gdn2_bwd_tensors_f64 g = {p->R, p->R2, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8]};
        rc |= gdn2_ref_bwd(&p->d, &p->o, &t, &g);
    }
    p->o.n_threads = 0;
    int same = 1;
    int64_t n[9] = {p->nk, p->nk, p->nv, p->nk, p->nk, p->nv, p->ns, p->d.H, p->d.H * p->d.K};
    for (int i = 0; i < 9; i++) {
        if (i >= 7 && !p->o.gate_in_kernel) continue;
        same &= !memcmp(gA[0][i], gA[1][i], n[i] * 8);
    }
    CHECK(rc == 0 && same, "gdn2_ref_bwd [%s]: 1 thread and 3 threads give bitwise identical gradients", p->name);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 9; i++) free(gA[r][i]);
    free(o); free(ht);
}

static void test_bad_inputs(void) {
    gdn2_dims d = {1, 4, 2, 3, 4, 4};
    gdn2_opts o = {0};
    double x[256] = {0};
    gdn2_fwd_tensors_f64 t = {x, x, x, x, x, x, NULL, NULL, NULL, x, NULL};
    int rc = gdn2_ref_fwd(&d, &o, &t);
    CHECK(rc == GDN2_ERR_ARG, "HV=3 not a multiple of H=2 rejected: %s", gdn2_last_error());
    d.HV = 2;
    t.q = NULL;
    rc = gdn2_ref_fwd(&d, &o, &t);
    CHECK(rc == GDN2_ERR_ARG, "NULL q rejected: %s", gdn2_last_error());
    t.q = x;
    o.gate_in_kernel = 1;
    gdn2_clear_error();
    rc = gdn2_ref_fwd(&d, &o, &t);
    CHECK(rc == GDN2_OK, "gate_in_kernel without A_log / dt_bias runs (absent = zero): %d %s", rc, gdn2_last_error());
}

int main(void) {
    prob P[] = {
        /* batch, GVA, h0, l2norm, plain gate, b up to 2 */
        {.name = "B=2 T=13 H=2 HV=4 K=5 V=3 h0 l2norm b<=2", .d = {2, 13, 2, 4, 5, 3}, .o = {.qk_l2norm = 1},
         .use_h0 = 1, .bmax = 2.0},
        /* varlen (lengths 5, 1, 8, 0), gate in kernel, GVA, custom scale */
        {.name = "varlen {5,1,8,0} H=1 HV=2 K=4 V=6 gate l2norm", .d = {1, 14, 1, 2, 4, 6},
         .o = {.qk_l2norm = 1, .gate_in_kernel = 1, .scale = 0.7f, .n_seqs = 4}, .cu = {0, 5, 6, 14, 14},
         .use_h0 = 1, .bmax = 1.0},
        /* lower-bound gate, no l2norm, no h0 */
        {.name = "T=20 H=2 HV=2 K=6 V=4 lower_bound=-3", .d = {1, 20, 2, 2, 6, 4},
         .o = {.gate_in_kernel = 1, .lower_bound = -3.0f}, .use_h0 = 0, .bmax = 1.0},
        /* longer than two checkpoint segments (64), GVA 1:3, gate in kernel */
        {.name = "T=150 H=1 HV=3 K=4 V=3 h0 gate (3 segments)", .d = {1, 150, 1, 3, 4, 3},
         .o = {.gate_in_kernel = 1}, .use_h0 = 1, .bmax = 1.0},
        /* varlen crossing a segment, l2norm + lower bound, GVA */
        {.name = "varlen {70,9} H=2 HV=4 K=4 V=5 lb=-5 l2norm", .d = {1, 79, 2, 4, 4, 5},
         .o = {.qk_l2norm = 1, .gate_in_kernel = 1, .lower_bound = -5.0f, .n_seqs = 2}, .cu = {0, 70, 79},
         .use_h0 = 1, .bmax = 2.0},
    };
    const int np = sizeof P / sizeof P[0];
    for (int i = 0; i < np; i++) {
        prob_init(&P[i], 1234 + i);
        test_dense(&P[i]);
    }
    for (int i = 0; i < np; i++) test_fd(&P[i]);
    test_threads(&P[4]);
    for (int i = 0; i < np; i++) prob_free(&P[i]);

    test_bad_inputs();
    test_fixture("op_small.safetensors");
    test_fixture("op_gate_in_kernel.safetensors");
    test_fixture("op_gva.safetensors");
    return test_summary();
}
