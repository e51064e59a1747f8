/* float64 token-serial GDN-2 recurrence and its exact backward (BPTT): the oracle every other
 * implementation is tested against. Readable on purpose; no blocking, no tricks.
 *
 * Per (sequence, value head hv), key head h = hv / (HV/H), K x V state S (row c = key channel):
 *   S̄   = Diag(exp g_t) S_{t-1}
 *   p   = b_t ⊙ k_t          r = S̄ᵀ p          z = w_t ⊙ v_t          u = z − r
 *   S_t = S̄ + k_t uᵀ
 *   o_t = S_tᵀ (scale · q_t)
 * with q,k optionally L2-normalised and g optionally computed from the raw f (gate in kernel).
 *
 * Memory of the backward per (sequence, head): one checkpoint of S every 64 tokens plus the 65
 * states of the segment being walked back, i.e. O((T/64)·K·V + 64·K·V). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/internal.h"
#include "check.h"
#include "gate.h"

#define REF_SEG 64

/* the default K^-1/2 in double (gdn2_scale rounds it to float) */
static double ref_scale(const gdn2_dims *d, const gdn2_opts *o) {
    return o->scale != 0.0f ? (double)o->scale : 1.0 / sqrt((double)d->K);
}

/* token range [bos, eos) of sequence n in the flattened B*T token axis */
static void seq_range(const gdn2_dims *d, const gdn2_opts *o, int64_t n, int64_t *bos, int64_t *eos) {
    if (o->cu_seqlens) {
        *bos = o->cu_seqlens[n];
        *eos = o->cu_seqlens[n + 1];
    } else {
        *bos = n * d->T;
        *eos = *bos + d->T;
    }
}

static int check_fwd_ptrs(const char *fn, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t) {
    if (!t) return gdn2_error(GDN2_ERR_ARG, "%s: tensors must not be NULL", fn);
    const char *miss = !t->q ? "q" : !t->k ? "k" : !t->v ? "v" : !t->g ? "g" : !t->b ? "b" : !t->w ? "w" : NULL;
    if (miss) return gdn2_error(GDN2_ERR_ARG, "%s: input tensor '%s' is NULL", fn, miss);
    return GDN2_OK;
}

/* Inputs after the in-kernel transforms, all [B*T, H, K]: q̂, k̂ (L2-normalised or copies), their
 * rstd [B*T, H] (l2norm only) and the effective log-decay g. */
typedef struct {
    double *q, *k, *g, *rq, *rk;
} ref_prep;

static void prep_free(ref_prep *p) {
    free(p->q); free(p->k); free(p->g); free(p->rq); free(p->rk);
    memset(p, 0, sizeof *p);
}

static int prep(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t, ref_prep *p) {
    const int64_t NT = d->B * d->T, H = d->H, K = d->K;
    const size_t n = (size_t)(NT * H * K);
    memset(p, 0, sizeof *p);
    p->q = gdn2_malloc((n ? n : 1) * sizeof(double), "reference q");
    p->k = gdn2_malloc((n ? n : 1) * sizeof(double), "reference k");
    p->g = gdn2_malloc((n ? n : 1) * sizeof(double), "reference g");
    p->rq = gdn2_malloc((size_t)(NT * H + 1) * sizeof(double), "reference rstd q");
    p->rk = gdn2_malloc((size_t)(NT * H + 1) * sizeof(double), "reference rstd k");
    if (!p->q || !p->k || !p->g || !p->rq || !p->rk) { prep_free(p); return GDN2_ERR_NOMEM; }
    const double lb = o->gate_in_kernel ? (double)o->lower_bound : 0.0;
    for (int64_t i = 0; i < NT * H; i++) {
        const int64_t h = i % H;
        const double *q = t->q + i * K, *k = t->k + i * K, *g = t->g + i * K;
        if (o->qk_l2norm) {
            p->rq[i] = gdn2_l2norm_f64(K, q, p->q + i * K);
            p->rk[i] = gdn2_l2norm_f64(K, k, p->k + i * K);
        } else {
            memcpy(p->q + i * K, q, K * sizeof(double));
            memcpy(p->k + i * K, k, K * sizeof(double));
            p->rq[i] = p->rk[i] = 1.0;
        }
        for (int64_t c = 0; c < K; c++)
            p->g[i * K + c] = o->gate_in_kernel ? gdn2_gate_f64(g[c], t->A_log ? t->A_log[h] : 0.0,
                                                                 t->dt_bias ? t->dt_bias[h * K + c] : 0.0, lb)
                                                : g[c];
    }
    return GDN2_OK;
}

/* One token of the recurrence on S (K x V) in place: S ← (I − k(b⊙k)ᵀ) Diag(exp g) S + k(w⊙v)ᵀ.
 * u (V doubles) receives w⊙v − S̄ᵀ(b⊙k). */
static void ref_step(int64_t K, int64_t V, double *S, const double *k, const double *g, const double *b,
                     const double *v, const double *w, double *u) {
    for (int64_t j = 0; j < V; j++) u[j] = w[j] * v[j];
    for (int64_t c = 0; c < K; c++) {
        const double a = exp(g[c]), p = b[c] * k[c];
        for (int64_t j = 0; j < V; j++) {
            S[c * V + j] *= a;
            u[j] -= p * S[c * V + j];
        }
    }
    for (int64_t c = 0; c < K; c++)
        for (int64_t j = 0; j < V; j++) S[c * V + j] += k[c] * u[j];
}

int gdn2_ref_fwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t) {
    int rc = gdn2_check(d, o);
    if (rc) return rc;
    if ((rc = check_fwd_ptrs("gdn2_ref_fwd", o, t))) return rc;
    if (!t->o) return gdn2_error(GDN2_ERR_ARG, "gdn2_ref_fwd: output tensor 'o' is NULL");
    if ((rc = gdn2_check_values_f64("gdn2_ref_fwd", d, o, t, NULL))) return rc;
    ref_prep p;
    if ((rc = prep(d, o, t, &p))) return rc;

    const int64_t H = d->H, HV = d->HV, K = d->K, V = d->V, G = HV / H;
    const int64_t N = gdn2_num_states(d, o);
    const double scale = ref_scale(d, o);
    int failed = 0;

#pragma omp parallel for schedule(dynamic) num_threads(gdn2_threads_for(o->n_threads, N * HV))
    for (int64_t nh = 0; nh < N * HV; nh++) {
        const int64_t n = nh / HV, hv = nh % HV, h = hv / G;
        int64_t bos, eos;
        seq_range(d, o, n, &bos, &eos);
        double *S = malloc((size_t)(K * V + V) * sizeof(double));
        if (!S) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        double *u = S + K * V;
        if (t->h0) memcpy(S, t->h0 + nh * K * V, (size_t)(K * V) * sizeof(double));
        else memset(S, 0, (size_t)(K * V) * sizeof(double));
        for (int64_t tt = bos; tt < eos; tt++) {
            const int64_t ik = (tt * H + h) * K, iv = (tt * HV + hv) * V;
            ref_step(K, V, S, p.k + ik, p.g + ik, t->b + ik, t->v + iv, t->w + iv, u);
            /* o_t = S_tᵀ (scale q̂_t) */
            double *out = t->o + iv;
            for (int64_t j = 0; j < V; j++) out[j] = 0;
            for (int64_t c = 0; c < K; c++) {
                const double sq = scale * p.q[ik + c];
                for (int64_t j = 0; j < V; j++) out[j] += sq * S[c * V + j];
            }
        }
        if (t->ht) memcpy(t->ht + nh * K * V, S, (size_t)(K * V) * sizeof(double));
        free(S);
    }
    prep_free(&p);
    if (failed) return gdn2_error(GDN2_ERR_NOMEM, "gdn2_ref_fwd: out of memory for the state (K=%lld V=%lld)",
                                  (long long)K, (long long)V);
    return GDN2_OK;
}

int gdn2_ref_bwd(const gdn2_dims *d, const gdn2_opts *o, const gdn2_fwd_tensors_f64 *t,
                 const gdn2_bwd_tensors_f64 *gr) {
    int rc = gdn2_check(d, o);
    if (rc) return rc;
    if ((rc = check_fwd_ptrs("gdn2_ref_bwd", o, t))) return rc;
    if (!gr || !gr->d_o) return gdn2_error(GDN2_ERR_ARG, "gdn2_ref_bwd: upstream gradient 'do' is NULL");
    {
        const char *miss = !gr->dq ? "dq" : !gr->dk ? "dk" : !gr->dv ? "dv" : !gr->dg ? "dg" : !gr->db ? "db"
                         : !gr->dw ? "dw" : NULL;
        if (miss) return gdn2_error(GDN2_ERR_ARG, "gdn2_ref_bwd: output gradient '%s' is NULL", miss);
    }
    if ((rc = gdn2_check_values_f64("gdn2_ref_bwd", d, o, t, gr))) return rc;
    ref_prep p;
    if ((rc = prep(d, o, t, &p))) return rc;

    const int64_t NT = d->B * d->T, H = d->H, HV = d->HV, K = d->K, V = d->V, G = HV / H;
    const int64_t N = gdn2_num_states(d, o);
    const double scale = ref_scale(d, o);
    const size_t KV = (size_t)(K * V);
    /* dq, dk, dg, db are at key heads and summed over the group's value heads: each (sequence, key
     * head) is owned by one thread, which walks its G value heads in turn, so no two threads add to
     * the same element. dq, dk, dg hold gradients w.r.t. q̂, k̂, g_eff until the final passes. */
    memset(gr->dq, 0, (size_t)(NT * H * K) * sizeof(double));
    memset(gr->dk, 0, (size_t)(NT * H * K) * sizeof(double));
    memset(gr->dg, 0, (size_t)(NT * H * K) * sizeof(double));
    memset(gr->db, 0, (size_t)(NT * H * K) * sizeof(double));
    int failed = 0;

#pragma omp parallel for schedule(dynamic) num_threads(gdn2_threads_for(o->n_threads, N * H))
    for (int64_t nk = 0; nk < N * H; nk++) {
        const int64_t n = nk / H, h = nk % H;
        int64_t bos, eos;
        seq_range(d, o, n, &bos, &eos);
        const int64_t L = eos - bos, nseg = (L + REF_SEG - 1) / REF_SEG;
        double *ckpt = malloc(((size_t)nseg + 1) * KV * sizeof(double));   /* S at each segment start */
        double *seg = malloc((REF_SEG + 1) * KV * sizeof(double));         /* S_{t0-1} .. S_{t0+63}   */
        double *dS = malloc(KV * sizeof(double));
        double *vec = malloc((size_t)(3 * V + K) * sizeof(double));
        if (!ckpt || !seg || !dS || !vec) {
            free(ckpt); free(seg); free(dS); free(vec);
#pragma omp atomic write
            failed = 1;
            continue;
        }
        double *u = vec, *du = vec + V, *dr = vec + 2 * V, *dp = vec + 3 * V;
        for (int64_t j = 0; j < G; j++) {
            const int64_t hv = h * G + j, sidx = (n * HV + hv) * (int64_t)KV;
            /* forward, keeping a checkpoint of S at the start of every segment */
            double *S = ckpt;
            if (t->h0) memcpy(S, t->h0 + sidx, KV * sizeof(double));
            else memset(S, 0, KV * sizeof(double));
            for (int64_t s = 0; s < nseg; s++) {
                double *next = ckpt + (size_t)(s + 1) * KV;
                memcpy(next, ckpt + (size_t)s * KV, KV * sizeof(double));
                const int64_t t1 = bos + (s + 1) * REF_SEG < eos ? bos + (s + 1) * REF_SEG : eos;
                for (int64_t tt = bos + s * REF_SEG; tt < t1; tt++) {
                    const int64_t ik = (tt * H + h) * K, iv = (tt * HV + hv) * V;
                    ref_step(K, V, next, p.k + ik, p.g + ik, t->b + ik, t->v + iv, t->w + iv, u);
                }
            }
            if (gr->dht) memcpy(dS, gr->dht + sidx, KV * sizeof(double));
            else memset(dS, 0, KV * sizeof(double));

            /* Backward through time. With dS = ∂L/∂S_t accumulated from the future (dht at the end):
             *   o_t = S_tᵀ(s q̂):     dS += s q̂ doᵀ            dq̂ += s S_t do
             *   S_t = S̄ + k̂ uᵀ:      dk̂ += dS u               du = dSᵀ k̂          dS̄ = dS
             *   u = w⊙v − r:         dv = du⊙w  dw = du⊙v      dr = −du
             *   r = S̄ᵀ p:            dS̄ += p drᵀ              dp = S̄ dr
             *   p = b⊙k̂:             db += dp⊙k̂               dk̂ += dp⊙b
             *   S̄ = Diag(α)S_{t-1}:   dα_c = Σ_j S_{t-1}[c,j] dS̄[c,j]   dg_c += α_c dα_c
             *                        dS ← Diag(α) dS̄   (= ∂L/∂S_{t-1})
             * S_{t-1} and S_t come from re-running the segment from its checkpoint. */
            for (int64_t s = nseg - 1; s >= 0; s--) {
                const int64_t t0 = bos + s * REF_SEG, t1 = t0 + REF_SEG < eos ? t0 + REF_SEG : eos;
                memcpy(seg, ckpt + (size_t)s * KV, KV * sizeof(double));
                for (int64_t tt = t0; tt < t1; tt++) {
                    const int64_t ik = (tt * H + h) * K, iv = (tt * HV + hv) * V;
                    double *nx = seg + (size_t)(tt - t0 + 1) * KV;
                    memcpy(nx, nx - KV, KV * sizeof(double));
                    ref_step(K, V, nx, p.k + ik, p.g + ik, t->b + ik, t->v + iv, t->w + iv, u);
                }
                for (int64_t tt = t1 - 1; tt >= t0; tt--) {
                    const int64_t ik = (tt * H + h) * K, iv = (tt * HV + hv) * V;
                    const double *Sp = seg + (size_t)(tt - t0) * KV, *Sc = Sp + KV;
                    const double *q = p.q + ik, *k = p.k + ik, *g = p.g + ik, *b = t->b + ik;
                    const double *v = t->v + iv, *w = t->w + iv, *dO = gr->d_o + iv;
                    double *dq = gr->dq + ik, *dk = gr->dk + ik, *dg = gr->dg + ik, *db = gr->db + ik;
                    /* output read */
                    for (int64_t c = 0; c < K; c++) {
                        double acc = 0;
                        for (int64_t x = 0; x < V; x++) acc += Sc[c * V + x] * dO[x];
                        dq[c] += scale * acc;
                        for (int64_t x = 0; x < V; x++) dS[c * V + x] += scale * q[c] * dO[x];
                    }
                    /* recompute u = w⊙v − S̄ᵀ(b⊙k̂) */
                    for (int64_t x = 0; x < V; x++) u[x] = w[x] * v[x];
                    for (int64_t c = 0; c < K; c++) {
                        const double a = exp(g[c]);
                        for (int64_t x = 0; x < V; x++) u[x] -= b[c] * k[c] * a * Sp[c * V + x];
                    }
                    /* rank-1 write */
                    for (int64_t x = 0; x < V; x++) du[x] = 0;
                    for (int64_t c = 0; c < K; c++) {
                        double acc = 0;
                        for (int64_t x = 0; x < V; x++) {
                            acc += dS[c * V + x] * u[x];
                            du[x] += dS[c * V + x] * k[c];
                        }
                        dk[c] += acc;
                    }
                    double *dv = gr->dv + iv, *dw = gr->dw + iv;
                    for (int64_t x = 0; x < V; x++) {
                        dv[x] = du[x] * w[x];
                        dw[x] = du[x] * v[x];
                        dr[x] = -du[x];
                    }
                    /* erase read r = S̄ᵀ p, then the decay */
                    for (int64_t c = 0; c < K; c++) {
                        const double a = exp(g[c]), pc = b[c] * k[c];
                        double acc = 0, da = 0;
                        for (int64_t x = 0; x < V; x++) acc += a * Sp[c * V + x] * dr[x];
                        dp[c] = acc;
                        for (int64_t x = 0; x < V; x++) {
                            const double dsb = dS[c * V + x] + pc * dr[x];
                            da += Sp[c * V + x] * dsb;
                            dS[c * V + x] = a * dsb;
                        }
                        dg[c] += a * da;
                        db[c] += dp[c] * k[c];
                        dk[c] += dp[c] * b[c];
                    }
                }
            }
            if (gr->dh0) memcpy(gr->dh0 + sidx, dS, KV * sizeof(double));
        }
        free(ckpt); free(seg); free(dS); free(vec);
    }
    if (failed) {
        prep_free(&p);
        return gdn2_error(GDN2_ERR_NOMEM, "gdn2_ref_bwd: out of memory for the state checkpoints (T=%lld K=%lld V=%lld)",
                          (long long)d->T, (long long)K, (long long)V);
    }

    /* q̂, k̂ → q, k through the L2 norm; g_eff → raw f, A_log, dt_bias through the gate */
    if (o->qk_l2norm)
        for (int64_t i = 0; i < NT * H; i++) {
            gdn2_l2norm_vjp_f64(K, p.q + i * K, p.rq[i], gr->dq + i * K);
            gdn2_l2norm_vjp_f64(K, p.k + i * K, p.rk[i], gr->dk + i * K);
        }
    if (o->gate_in_kernel) {
        /* absent A_log / dt_bias read as zero; absent dA_log / ddt_bias are not written */
        if (gr->dA_log) memset(gr->dA_log, 0, (size_t)H * sizeof(double));
        if (gr->ddt_bias) memset(gr->ddt_bias, 0, (size_t)(H * K) * sizeof(double));
        for (int64_t i = 0; i < NT * H; i++) {
            const int64_t h = i % H;
            double sink = 0.0;
            for (int64_t c = 0; c < K; c++) {
                double df = gdn2_gate_vjp_f64(gr->dg[i * K + c], t->g[i * K + c], t->A_log ? t->A_log[h] : 0.0,
                                              t->dt_bias ? t->dt_bias[h * K + c] : 0.0, (double)o->lower_bound,
                                              gr->dA_log ? &gr->dA_log[h] : &sink);
                gr->dg[i * K + c] = df;
                if (gr->ddt_bias) gr->ddt_bias[h * K + c] += df;
            }
        }
    }
    prep_free(&p);
    return GDN2_OK;
}
