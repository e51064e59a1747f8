/* Collapse limits of GDN-2 on the same kernels (docs/ALGORITHM.md):
 *   KDA:           b_t = β_t·1_K, w_t = β_t·1_V   → S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ
 *   Gated DeltaNet: KDA with a scalar decay per head, g_t·1_K.
 * β is [B,T,H] (per key head; the value heads of a group share it), the GDN decay g is [B,T,H].
 * The entry points expand β (and g) to the full per-channel tensors and call the GDN-2 kernels;
 * the backward folds the per-channel gradients back: dβ = Σ_c db_c + Σ_{group's value heads} Σ_c dw_c,
 * dg_scalar = Σ_c dg_c. */
#include <stdlib.h>
#include <string.h>

#include "../util/internal.h"
#include "chunk_common.h"
#include "gate.h"

typedef struct {
    float *b, *w, *g; /* expanded [B,T,H,K], [B,T,HV,V], [B,T,H,K] (g only for GDN) */
} expanded;

static void expanded_free(expanded *e) {
    free(e->b); free(e->w); free(e->g);
    memset(e, 0, sizeof *e);
}

/* Validate and build the full-tensor call `out` from the collapsed one. scalar_g: GDN. */
static int expand(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                  const float *beta, int scalar_g, expanded *e, gdn2_fwd_tensors *out) {
    memset(e, 0, sizeof *e);
    int rc = gdn2_check(d, o);
    if (rc) return rc;
    if (!t) return gdn2_error(GDN2_ERR_ARG, "%s: tensors must not be NULL", fn);
    if (!beta) return gdn2_error(GDN2_ERR_ARG, "%s: beta [B,T,H] is NULL", fn);
    if (!t->g) return gdn2_error(GDN2_ERR_ARG, "%s: g is NULL", fn);
    if (scalar_g && o->gate_in_kernel)
        return gdn2_error(GDN2_ERR_ARG, "%s: gate_in_kernel is not supported for Gated DeltaNet (scalar decay g [B,T,H]); "
                          "compute the decay outside and pass gate_in_kernel=0", fn);
    if ((rc = gdn2_check_beta_values(fn, d, o, t, beta, scalar_g))) return rc;
    const int64_t NT = d->B * d->T, H = d->H, HV = d->HV, K = d->K, V = d->V, G = HV / H;
    e->b = gdn2_malloc((size_t)(NT * H * K + 1) * sizeof(float), "expanded b");
    e->w = gdn2_malloc((size_t)(NT * HV * V + 1) * sizeof(float), "expanded w");
    if (scalar_g) e->g = gdn2_malloc((size_t)(NT * H * K + 1) * sizeof(float), "expanded g");
    if (!e->b || !e->w || (scalar_g && !e->g)) {
        expanded_free(e);
        return GDN2_ERR_NOMEM;
    }
    const int nt = gdn2_threads(o->n_threads);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t i = 0; i < NT * H; i++)
        for (int64_t c = 0; c < K; c++) {
            e->b[i * K + c] = beta[i];
            if (scalar_g) e->g[i * K + c] = t->g[i];
        }
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t i = 0; i < NT * HV; i++) {
        const int64_t tok = i / HV, hv = i % HV;
        const float bt = beta[tok * H + hv / G];
        for (int64_t j = 0; j < V; j++) e->w[i * V + j] = bt;
    }
    *out = *t;
    out->b = e->b;
    out->w = e->w;
    if (scalar_g) out->g = e->g;
    return GDN2_OK;
}

typedef int (*fwd_fn)(const gdn2_dims *, const gdn2_opts *, const gdn2_fwd_tensors *);

static int collapse_fwd(const char *fn, fwd_fn f, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                        const float *beta, int scalar_g) {
    expanded e;
    gdn2_fwd_tensors full;
    int rc = expand(fn, d, o, t, beta, scalar_g, &e, &full);
    if (rc) return rc;
    rc = f(d, o, &full);
    expanded_free(&e);
    return rc;
}

static int collapse_bwd(const char *fn, const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t,
                        const float *beta, const gdn2_bwd_tensors *g, float *dbeta, int scalar_g) {
    if (!g) return gdn2_error(GDN2_ERR_ARG, "%s: gradient tensors must not be NULL", fn);
    if (!dbeta) return gdn2_error(GDN2_ERR_ARG, "%s: dbeta [B,T,H] is NULL", fn);
    if (!g->dg) return gdn2_error(GDN2_ERR_ARG, "%s: dg is NULL", fn);
    expanded e;
    gdn2_fwd_tensors full;
    int rc = expand(fn, d, o, t, beta, scalar_g, &e, &full);
    if (rc) return rc;
    const int64_t NT = d->B * d->T, H = d->H, HV = d->HV, K = d->K, V = d->V, G = HV / H;
    /* per-channel gradients of the expanded b, w (and g): the caller's db / dw when given, else scratch */
    float *db = g->db ? g->db : gdn2_malloc((size_t)(NT * H * K + 1) * sizeof(float), "expanded db");
    float *dw = g->dw ? g->dw : gdn2_malloc((size_t)(NT * HV * V + 1) * sizeof(float), "expanded dw");
    float *dgf = scalar_g ? gdn2_malloc((size_t)(NT * H * K + 1) * sizeof(float), "expanded dg") : g->dg;
    if (!db || !dw || !dgf) {
        rc = GDN2_ERR_NOMEM;
        goto done;
    }
    gdn2_bwd_tensors gf = *g;
    gf.db = db;
    gf.dw = dw;
    gf.dg = dgf;
    rc = gdn2_chunk_bwd(d, o, &full, &gf);
    if (rc) goto done;
    /* dβ[t,h] = Σ_c db[t,h,c] + Σ_{hv in group h} Σ_j dw[t,hv,j];  GDN: dg[t,h] = Σ_c dg_full[t,h,c] */
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(o->n_threads))
    for (int64_t i = 0; i < NT * H; i++) {
        const int64_t tok = i / H, h = i % H;
        double acc = 0, accg = 0;
        for (int64_t c = 0; c < K; c++) acc += db[i * K + c];
        for (int64_t hv = h * G; hv < (h + 1) * G; hv++)
            for (int64_t j = 0; j < V; j++) acc += dw[(tok * HV + hv) * V + j];
        dbeta[i] = (float)acc;
        if (scalar_g) {
            for (int64_t c = 0; c < K; c++) accg += dgf[i * K + c];
            g->dg[i] = (float)accg;
        }
    }
done:
    if (!g->db) free(db);
    if (!g->dw) free(dw);
    if (scalar_g) free(dgf);
    expanded_free(&e);
    return rc;
}

int gdn2_kda_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) {
    return collapse_fwd("gdn2_kda_recurrent_fwd", gdn2_recurrent_fwd, d, o, t, beta, 0);
}
int gdn2_kda_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) {
    /* KDA's beta is read in place by the chunk kernel: no expanded b / w tensors */
    int rc = gdn2_check(d, o);
    if (!rc && t && beta) rc = gdn2_check_beta_values("gdn2_kda_chunk_fwd", d, o, t, beta, 0);
    return rc ? rc : gdn2_chunk_fwd_beta(d, o, t, beta);
}
int gdn2_kda_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta,
                       const gdn2_bwd_tensors *g, float *dbeta) {
    return collapse_bwd("gdn2_kda_chunk_bwd", d, o, t, beta, g, dbeta, 0);
}
int gdn2_gdn_recurrent_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) {
    return collapse_fwd("gdn2_gdn_recurrent_fwd", gdn2_recurrent_fwd, d, o, t, beta, 1);
}
int gdn2_gdn_chunk_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta) {
    return collapse_fwd("gdn2_gdn_chunk_fwd", gdn2_chunk_fwd, d, o, t, beta, 1);
}
int gdn2_gdn_chunk_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors *t, const float *beta,
                       const gdn2_bwd_tensors *g, float *dbeta) {
    return collapse_bwd("gdn2_gdn_chunk_bwd", d, o, t, beta, g, dbeta, 1);
}
