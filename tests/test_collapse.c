/* KDA and Gated DeltaNet entry points (gdn2_kda_*, gdn2_gdn_*) against independent float64
 * recurrences written here from their own formulas, with their own finite-difference gradients:
 *   KDA: S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ
 *   GDN: S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ          (α_t a scalar per head)
 *   o_t = S_tᵀ q_t · scale
 * Recurrent entry points: forward (o, ht) ≤ 1e-5 relative RMSE. Chunk entry points: forward ≤ 1e-5
 * and every gradient (dq, dk, dv, dg, dβ, dh0, dA_log, ddt_bias) ≤ 1e-4. dβ checks Σ db + Σ dw. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gdn2.h"

typedef struct {
    const char *name;
    int gdn; /* 0 KDA, 1 GDN */
    gdn2_dims d;
    gdn2_opts o;
    int64_t cu[8];
    int use_h0;
    double *q, *k, *v, *g, *beta, *h0, *A_log, *dt_bias, *R, *R2;
    int64_t nk, nv, ns, nb, ng;
    double *fd_g[8]; /* finite-difference gradients: q k v g beta h0 A_log dt_bias (NULL = n/a) */
} cprob;

static double *rn(int64_t n, unsigned long long *s, double lo, double hi, int normal) {
    double *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++) x[i] = normal ? lo + hi * test_normal(s) : lo + (hi - lo) * test_uniform(s);
    return x;
}

static void cp_init(cprob *p, unsigned long long seed) {
    unsigned long long s = seed;
    if (p->o.n_seqs) p->o.cu_seqlens = p->cu;
    const gdn2_dims *d = &p->d;
    const int64_t N = gdn2_num_states(d, &p->o), K = d->K;
    p->nk = d->B * d->T * d->H * K;
    p->nv = d->B * d->T * d->HV * d->V;
    p->ns = N * d->HV * K * d->V;
    p->nb = d->B * d->T * d->H;
    p->ng = p->gdn ? p->nb : p->nk;
    p->q = rn(p->nk, &s, 0, 1, 1);
    p->k = rn(p->nk, &s, 0, 1, 1);
    if (!p->o.qk_l2norm)
        for (int64_t i = 0; i < p->nk; i++) { p->q[i] /= sqrt((double)K); p->k[i] /= sqrt((double)K); }
    p->v = rn(p->nv, &s, 0, 1, 1);
    p->g = p->o.gate_in_kernel ? rn(p->ng, &s, 0, 1, 1) : rn(p->ng, &s, -0.6, -0.01, 0);
    p->beta = rn(p->nb, &s, 0.05, 1.0, 0);
    p->h0 = p->use_h0 ? rn(p->ns, &s, 0, 0.3, 1) : NULL;
    p->A_log = rn(d->H, &s, 0.0, log(16.0), 0);
    p->dt_bias = rn(d->H * K, &s, 0, 0.5, 1);
    p->R = rn(p->nv, &s, 0, 1, 1);
    p->R2 = rn(p->ns, &s, 0, 1, 1);
}
static void cp_free(cprob *p) {
    free(p->q); free(p->k); free(p->v); free(p->g); free(p->beta); free(p->h0); free(p->A_log); free(p->dt_bias);
    free(p->R); free(p->R2);
    for (int i = 0; i < 8; i++) free(p->fd_g[i]);
}

/* the independent float64 recurrences */
static void fwd64(const cprob *p, double *o, double *ht) {
    const gdn2_dims *d = &p->d;
    const int64_t H = d->H, HV = d->HV, K = d->K, V = d->V, G = HV / H, N = gdn2_num_states(d, &p->o);
    const double scale = p->o.scale ? p->o.scale : 1.0 / sqrt((double)K);
    double *S = malloc(K * V * 8), *m = malloc(V * 8), *qn = malloc(K * 8), *kn = malloc(K * 8), *al = malloc(K * 8);
    for (int64_t n = 0; n < N; n++)
        for (int64_t hv = 0; hv < HV; hv++) {
            const int64_t h = hv / G;
            const int64_t bos = p->o.cu_seqlens ? p->cu[n] : n * d->T, eos = p->o.cu_seqlens ? p->cu[n + 1] : bos + d->T;
            for (int64_t i = 0; i < K * V; i++) S[i] = p->h0 ? p->h0[(n * HV + hv) * K * V + i] : 0;
            for (int64_t t = bos; t < eos; t++) {
                const double *q = p->q + (t * H + h) * K, *k = p->k + (t * H + h) * K, *v = p->v + (t * HV + hv) * V;
                const double beta = p->beta[t * H + h];
                double sq = 0, sk = 0;
                for (int64_t c = 0; c < K; c++) { sq += q[c] * q[c]; sk += k[c] * k[c]; }
                for (int64_t c = 0; c < K; c++) {
                    qn[c] = p->o.qk_l2norm ? q[c] / sqrt(sq + 1e-6) : q[c];
                    kn[c] = p->o.qk_l2norm ? k[c] / sqrt(sk + 1e-6) : k[c];
                }
                if (!p->gdn) {
                    /* KDA: S = (I − β k kᵀ) Diag(α) S + β k vᵀ */
                    for (int64_t c = 0; c < K; c++) {
                        double ge = p->g[(t * H + h) * K + c];
                        if (p->o.gate_in_kernel) {
                            const double x = ge + p->dt_bias[h * K + c], A = exp(p->A_log[h]);
                            ge = p->o.lower_bound < 0 ? p->o.lower_bound / (1 + exp(-A * x)) : -A * log1p(exp(x));
                        }
                        al[c] = exp(ge);
                    }
                    for (int64_t c = 0; c < K; c++)
                        for (int64_t j = 0; j < V; j++) S[c * V + j] *= al[c];
                    for (int64_t j = 0; j < V; j++) {
                        m[j] = 0;
                        for (int64_t c = 0; c < K; c++) m[j] += kn[c] * S[c * V + j];
                    }
                    for (int64_t c = 0; c < K; c++)
                        for (int64_t j = 0; j < V; j++) S[c * V + j] += beta * kn[c] * (v[j] - m[j]);
                } else {
                    /* GDN: S = α (I − β k kᵀ) S + β k vᵀ */
                    const double a = exp(p->g[t * H + h]);
                    for (int64_t j = 0; j < V; j++) {
                        m[j] = 0;
                        for (int64_t c = 0; c < K; c++) m[j] += kn[c] * S[c * V + j];
                    }
                    for (int64_t c = 0; c < K; c++)
                        for (int64_t j = 0; j < V; j++)
                            S[c * V + j] = a * (S[c * V + j] - beta * kn[c] * m[j]) + beta * kn[c] * v[j];
                }
                for (int64_t j = 0; j < V; j++) {
                    double acc = 0;
                    for (int64_t c = 0; c < K; c++) acc += S[c * V + j] * qn[c];
                    o[(t * HV + hv) * V + j] = acc * scale;
                }
            }
            memcpy(ht + (n * HV + hv) * K * V, S, K * V * 8);
        }
    free(S); free(m); free(qn); free(kn); free(al);
}

static double loss64(const cprob *p, double *o, double *ht) {
    fwd64(p, o, ht);
    double L = 0;
    for (int64_t i = 0; i < p->nv; i++) L += o[i] * p->R[i];
    for (int64_t i = 0; i < p->ns; i++) L += ht[i] * p->R2[i];
    return L;
}
static double *fd(cprob *p, double *x, int64_t n, double *o, double *ht) {
    double *g = malloc((size_t)(n > 0 ? n : 1) * 8);
    for (int64_t i = 0; i < n; i++) {
        const double x0 = x[i], h = 1e-6;
        x[i] = x0 + h;
        const double Lp = loss64(p, o, ht);
        x[i] = x0 - h;
        const double Lm = loss64(p, o, ht);
        x[i] = x0;
        g[i] = (Lp - Lm) / (2 * h);
    }
    return g;
}

static void fd_all(cprob *p) {
    const int64_t H = p->d.H, K = p->d.K;
    double *o = malloc(p->nv * 8), *ht = malloc(p->ns * 8);
    double *x[8] = {p->q, p->k, p->v, p->g, p->beta, p->h0, p->o.gate_in_kernel ? p->A_log : NULL,
                    p->o.gate_in_kernel ? p->dt_bias : NULL};
    int64_t n[8] = {p->nk, p->nk, p->nv, p->ng, p->nb, p->ns, H, H * K};
    for (int i = 0; i < 8; i++) p->fd_g[i] = x[i] ? fd(p, x[i], n[i], o, ht) : NULL;
    free(o); free(ht);
}

static float *f32(const double *x, int64_t n) {
    if (!x) return NULL;
    float *y = malloc((size_t)(n > 0 ? n : 1) * 4);
    for (int64_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

static void run(cprob *p) {
    const gdn2_dims *d = &p->d;
    const int64_t H = d->H, K = d->K;
    double *o64 = malloc(p->nv * 8), *ht64 = malloc(p->ns * 8);
    fwd64(p, o64, ht64);
    float *q = f32(p->q, p->nk), *k = f32(p->k, p->nk), *v = f32(p->v, p->nv), *g = f32(p->g, p->ng);
    float *beta = f32(p->beta, p->nb), *h0 = f32(p->h0, p->ns), *A = f32(p->A_log, H), *dtb = f32(p->dt_bias, H * K);
    float *R = f32(p->R, p->nv), *R2 = f32(p->R2, p->ns);
    float *o = calloc(p->nv, 4), *ht = calloc(p->ns, 4);
    gdn2_fwd_tensors t = {q, k, v, g, NULL, NULL, h0, A, dtb, o, ht};
    const char *kind = p->gdn ? "gdn" : "kda";

    /* recurrent entry point */
    int rc = p->gdn ? gdn2_gdn_recurrent_fwd(d, &p->o, &t, beta) : gdn2_kda_recurrent_fwd(d, &p->o, &t, beta);
    if (rc) CHECK(0, "%s_recurrent_fwd [%s] runs: %s", kind, p->name, gdn2_last_error());
    else {
        double eo = rel_rmse_f32_f64(o, o64, p->nv), eh = rel_rmse_f32_f64(ht, ht64, p->ns);
        CHECK(eo <= 1e-5 && eh <= 1e-5, "%s_recurrent_fwd [%s] vs float64 %s: rel RMSE o %.2e ht %.2e (bar 1e-5)", kind,
              p->name, p->gdn ? "GDN" : "KDA", eo, eh);
    }

    /* chunk entry points */
    memset(o, 0, p->nv * 4);
    memset(ht, 0, p->ns * 4);
    rc = p->gdn ? gdn2_gdn_chunk_fwd(d, &p->o, &t, beta) : gdn2_kda_chunk_fwd(d, &p->o, &t, beta);
    if (rc) {
        CHECK(0, "%s_chunk_fwd [%s] runs: %s", kind, p->name, gdn2_last_error());
    } else {
        double eo = rel_rmse_f32_f64(o, o64, p->nv), eh = rel_rmse_f32_f64(ht, ht64, p->ns);
        CHECK(eo <= 1e-5 && eh <= 1e-5, "%s_chunk_fwd [%s] vs float64: rel RMSE o %.2e ht %.2e (bar 1e-5)", kind, p->name,
              eo, eh);
        float *dq = calloc(p->nk, 4), *dk = calloc(p->nk, 4), *dv = calloc(p->nv, 4), *dg = calloc(p->ng, 4);
        float *dbeta = calloc(p->nb, 4), *dh0 = calloc(p->ns, 4), *dA = calloc(H, 4), *ddt = calloc(H * K, 4);
        gdn2_bwd_tensors gr = {R, R2, dq, dk, dv, dg, NULL, NULL, dh0, dA, ddt};
        rc = p->gdn ? gdn2_gdn_chunk_bwd(d, &p->o, &t, beta, &gr, dbeta) : gdn2_kda_chunk_bwd(d, &p->o, &t, beta, &gr, dbeta);
        if (rc)
            CHECK(0, "%s_chunk_bwd [%s] runs: %s", kind, p->name, gdn2_last_error());
        else {
            struct { const char *n; double *x; int64_t len; const float *an; int on; } gs[] = {
                {"dq", p->q, p->nk, dq, 1}, {"dk", p->k, p->nk, dk, 1}, {"dv", p->v, p->nv, dv, 1},
                {"dg", p->g, p->ng, dg, 1}, {"dbeta", p->beta, p->nb, dbeta, 1}, {"dh0", p->h0, p->ns, dh0, p->h0 != NULL},
                {"dA_log", p->A_log, H, dA, p->o.gate_in_kernel}, {"ddt_bias", p->dt_bias, H * K, ddt, p->o.gate_in_kernel}};
            double *so = malloc(p->nv * 8), *sh = malloc(p->ns * 8);
            for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) {
                if (!gs[i].on) continue;
                const double *ref = p->fd_g[i];
                double e = rel_rmse_f32_f64(gs[i].an, ref, gs[i].len);
                CHECK(e <= 1e-4 && all_finite_f32(gs[i].an, gs[i].len),
                      "%s_chunk_bwd [%s] %s vs float64 finite differences: rel RMSE %.2e (bar 1e-4)", kind, p->name,
                      gs[i].n, e);
            }
            free(so); free(sh);
        }
        free(dq); free(dk); free(dv); free(dg); free(dbeta); free(dh0); free(dA); free(ddt);
    }
    free(o64); free(ht64); free(q); free(k); free(v); free(g); free(beta); free(h0); free(A); free(dtb);
    free(R); free(R2); free(o); free(ht);
}

/* the finite differences of the test's own recurrence are themselves checked once against the
 * library's float64 reference with b = w = β expanded (a guard on the FD harness) */
static void fd_sanity(cprob *p) {
    const gdn2_dims *d = &p->d;
    const int64_t H = d->H, HV = d->HV, K = d->K, V = d->V, G = HV / H, NT = d->B * d->T;
    double *b = malloc(p->nk * 8), *w = malloc(p->nv * 8), *gk = malloc(p->nk * 8);
    for (int64_t i = 0; i < NT * H; i++)
        for (int64_t c = 0; c < K; c++) {
            b[i * K + c] = p->beta[i];
            gk[i * K + c] = p->gdn ? p->g[i] : p->g[i * K + c];
        }
    for (int64_t i = 0; i < NT * HV; i++)
        for (int64_t j = 0; j < V; j++) w[i * V + j] = p->beta[(i / HV) * H + (i % HV) / G];
    double *o = malloc(p->nv * 8), *ht = malloc(p->ns * 8), *o2 = malloc(p->nv * 8), *ht2 = malloc(p->ns * 8);
    gdn2_fwd_tensors_f64 t = {p->q, p->k, p->v, gk, b, w, p->h0, p->A_log, p->dt_bias, o, ht};
    int rc = gdn2_ref_fwd(d, &p->o, &t);
    fwd64(p, o2, ht2);
    double num = 0, den = 0;
    for (int64_t i = 0; i < p->nv; i++) { num += (o[i] - o2[i]) * (o[i] - o2[i]); den += o2[i] * o2[i]; }
    CHECK(rc == 0 && sqrt(num / den) < 1e-12, "[%s] own %s recurrence agrees with gdn2_ref_fwd on b=w=beta: %.2e",
          p->name, p->gdn ? "GDN" : "KDA", sqrt(num / den));
    /* the folding rule dβ = Σ_c db + Σ_{group} Σ_c dw (and dg = Σ_c dg for GDN) on the float64
     * reference's gradients vs the finite differences of the own recurrence */
    double *dq = malloc(p->nk * 8), *dk = malloc(p->nk * 8), *dv = malloc(p->nv * 8), *dgk = malloc(p->nk * 8);
    double *db = malloc(p->nk * 8), *dw = malloc(p->nv * 8), *dh0 = malloc(p->ns * 8), *dA = malloc(H * 8);
    double *ddt = malloc(H * K * 8), *dbeta = calloc(p->nb, 8), *dg = calloc(p->ng, 8);
    gdn2_bwd_tensors_f64 gr = {p->R, p->R2, dq, dk, dv, dgk, db, dw, dh0, dA, ddt};
    rc = gdn2_ref_bwd(d, &p->o, &t, &gr);
    for (int64_t i = 0; i < NT * H; i++) {
        for (int64_t c = 0; c < K; c++) {
            dbeta[i] += db[i * K + c];
            if (p->gdn) dg[i] += dgk[i * K + c];
            else dg[i * K + c] = dgk[i * K + c];
        }
        for (int64_t hv = (i % H) * G; hv < (i % H + 1) * G; hv++)
            for (int64_t j = 0; j < V; j++) dbeta[i] += dw[((i / H) * HV + hv) * V + j];
    }
    const double *an[8] = {dq, dk, dv, dg, dbeta, dh0, dA, ddt};
    const int64_t n[8] = {p->nk, p->nk, p->nv, p->ng, p->nb, p->ns, H, H * K};
    const char *names[8] = {"dq", "dk", "dv", "dg", "dbeta", "dh0", "dA_log", "ddt_bias"};
    for (int i = 0; i < 8; i++) {
        if (!p->fd_g[i]) continue;
        double e2 = 0, r2 = 0;
        for (int64_t j = 0; j < n[i]; j++) {
            e2 += (an[i][j] - p->fd_g[i][j]) * (an[i][j] - p->fd_g[i][j]);
            r2 += p->fd_g[i][j] * p->fd_g[i][j];
        }
        CHECK(rc == 0 && sqrt(e2 / r2) < 1e-6,
              "[%s] folded gdn2_ref_bwd %s vs finite differences of the own recurrence: %.2e (bar 1e-6)", p->name,
              names[i], sqrt(e2 / r2));
    }
    free(dq); free(dk); free(dv); free(dgk); free(db); free(dw); free(dh0); free(dA); free(ddt); free(dbeta); free(dg);
    free(b); free(w); free(gk); free(o); free(ht); free(o2); free(ht2);
}

static void test_errors(void) {
    gdn2_dims d = {1, 4, 1, 1, 4, 4};
    gdn2_opts o = {.gate_in_kernel = 1};
    float x[64] = {0}, A[1] = {0}, dt[4] = {0};
    gdn2_fwd_tensors t = {x, x, x, x, NULL, NULL, NULL, A, dt, x, NULL};
    int rc = gdn2_gdn_recurrent_fwd(&d, &o, &t, x);
    CHECK(rc == GDN2_ERR_ARG, "gdn_recurrent_fwd with gate_in_kernel rejected: %s", gdn2_last_error());
    rc = gdn2_gdn_chunk_fwd(&d, &o, &t, x);
    CHECK(rc == GDN2_ERR_ARG, "gdn_chunk_fwd with gate_in_kernel rejected: %s", gdn2_last_error());
    o.gate_in_kernel = 0;
    rc = gdn2_kda_recurrent_fwd(&d, &o, &t, NULL);
    CHECK(rc == GDN2_ERR_ARG, "kda_recurrent_fwd with beta NULL rejected: %s", gdn2_last_error());
    d.HV = 3;
    d.H = 2;
    rc = gdn2_kda_chunk_fwd(&d, &o, &t, x);
    CHECK(rc == GDN2_ERR_ARG, "kda_chunk_fwd with HV=3, H=2 rejected: %s", gdn2_last_error());
}

int main(void) {
    cprob P[] = {
        {.name = "KDA B=1 T=70 H=2 HV=4 K=8 V=8 h0 l2norm", .gdn = 0, .d = {1, 70, 2, 4, 8, 8},
         .o = {.qk_l2norm = 1}, .use_h0 = 1},
        {.name = "KDA varlen{1,64,10} H=1 HV=2 K=8 V=16 gate l2norm h0", .gdn = 0, .d = {1, 75, 1, 2, 8, 16},
         .o = {.qk_l2norm = 1, .gate_in_kernel = 1, .n_seqs = 3}, .cu = {0, 1, 65, 75}, .use_h0 = 1},
        {.name = "KDA B=2 T=20 H=1 HV=1 K=16 V=4 lower_bound", .gdn = 0, .d = {2, 20, 1, 1, 16, 4},
         .o = {.gate_in_kernel = 1, .lower_bound = -2.0f}},
        {.name = "GDN B=1 T=130 H=2 HV=2 K=8 V=8 h0", .gdn = 1, .d = {1, 130, 2, 2, 8, 8}, .use_h0 = 1},
        {.name = "GDN varlen{65,5} H=1 HV=2 K=8 V=8 l2norm", .gdn = 1, .d = {1, 70, 1, 2, 8, 8},
         .o = {.qk_l2norm = 1, .n_seqs = 2, .scale = 0.5f}, .cu = {0, 65, 70}},
    };
    const int np = sizeof P / sizeof P[0];
    for (int i = 0; i < np; i++) {
        cp_init(&P[i], 4242 + i);
        fd_all(&P[i]);
        fd_sanity(&P[i]);
        run(&P[i]);
        cp_free(&P[i]);
    }
    test_errors();
    return test_summary();
}
