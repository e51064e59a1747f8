/* The official GatedDeltaNet2 token mixer (lit_gpt/gdn2.py, docs/LAYER.md) on the CPU in fp32:
 * forward, full backward (VJP), and a constant-memory decode step; plus the `kda` and `gdn` mixer
 * variants on the same code and state size. docs/LAYER.md has the parameter tables.
 *
 * Notation: d = hidden, N = B·T tokens, Dk = H·K (key_dim), Dv = HV·V (value_dim), R = V (rank of
 * the low-rank f_proj / g_proj), W = conv_size, G = HV/H, c = 2 if allow_neg_eigval else 1.
 *
 * Forward (gdn2):
 *   qp = x Wqᵀ, kp = x Wkᵀ, vp = x Wvᵀ                          projections       [N,Dk|Dk|Dv]
 *   q, k, v = silu(causal depthwise conv_W(qp, kp, vp))          short conv + SiLU
 *   f = (x Wf0ᵀ) Wf1ᵀ;  g = −exp(A_log[h]) · softplus(f + dt_bias)   log-decay, fp32, [N,H,K]
 *   b = c · σ(x Wbᵀ)  [N,H,K];   w = σ(x Wwᵀ)  [N,HV,V]
 *   o = GDN2(q, k, v, g, b, w)   (q,k L2-normalised inside the kernel, scale K^-1/2)
 *   a = (x Wg0ᵀ) Wg1ᵀ + bg;  z = RMSNorm_V(o)·wn ⊙ a σ(a)   (per value head, wn [V] shared)
 *   y = z Woᵀ
 * kda: b = w = c·β with β = σ(x Wβᵀ) [N,H] per key head (shared by the group's value heads).
 * gdn: β as kda, and g = −exp(A_log[h])·softplus(x Waᵀ + dt_bias[h]) [N,H], broadcast over K.
 *
 * Saved for backward (acts, O(N·d)): qp, kp, vp, the kernel inputs q, k, v, g, f1 = x Wf0ᵀ, f
 * (gdn: the [N,H] decay pre-activation), σ of the erase (gdn2) or β (kda, gdn) gate, σ of the write
 * gate (gdn2), o, g1 = x Wg0ᵀ, a; and the initial states the forward started from. b, w and z are
 * rebuilt in the backward (cheap; no exp).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/internal.h"
#include "../util/rng.h"
#include "gdn2_layer.h"
#include "nn.h"

/* ------------------------------------------------------------------------------------------ */
/* parameters                                                                                 */
/* ------------------------------------------------------------------------------------------ */
enum {
    P_Q, P_K, P_V, P_QC, P_KC, P_VC, P_F0, P_F1, P_A, P_B, P_W, P_ALOG, P_DT, P_G0, P_G1, P_G1B, P_ON, P_O,
    P_COUNT
};
enum { INIT_XAVIER, INIT_CONV, INIT_ZERO, INIT_ONE, INIT_ALOG, INIT_DT };

static const char *const k_names[P_COUNT] = {
    "q_proj.weight", "k_proj.weight", "v_proj.weight", "q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight",
    "f_proj.0.weight", "f_proj.1.weight", "a_proj.weight", "b_proj.weight", "w_proj.weight", "A_log", "dt_bias",
    "g_proj.0.weight", "g_proj.1.weight", "g_proj.1.bias", "o_norm.weight", "o_proj.weight",
};

/* Shape (ndim 0 = absent for this mixer), element count, init and weight-decay flag of parameter
 * slot p. */
static int slot_spec(const gdn2_layer_cfg *c, int p, int64_t shape[4], size_t *numel, int *init, int *no_decay) {
    const int64_t d = c->hidden, Dk = c->H * c->K, Dv = c->HV * c->V, R = c->V, H = c->H, W = c->conv_size;
    const int m = c->mixer;
    int nd = 2;
    *init = INIT_XAVIER;
    *no_decay = 0;
    *numel = 0;
    for (int i = 0; i < 4; i++) shape[i] = 0;
    switch (p) {
    case P_Q: case P_K: shape[0] = Dk; shape[1] = d; break;
    case P_V: shape[0] = Dv; shape[1] = d; break;
    case P_QC: case P_KC: shape[0] = Dk; shape[1] = 1; shape[2] = W; nd = 3; *init = INIT_CONV; break;
    case P_VC: shape[0] = Dv; shape[1] = 1; shape[2] = W; nd = 3; *init = INIT_CONV; break;
    case P_F0: if (m == GDN2_MIXER_GDN) return 0; shape[0] = R; shape[1] = d; break;
    case P_F1: if (m == GDN2_MIXER_GDN) return 0; shape[0] = Dk; shape[1] = R; break;
    case P_A: if (m != GDN2_MIXER_GDN) return 0; shape[0] = H; shape[1] = d; break;
    case P_B: shape[0] = m == GDN2_MIXER_GDN2 ? Dk : H; shape[1] = d; break;
    case P_W: if (m != GDN2_MIXER_GDN2) return 0; shape[0] = Dv; shape[1] = d; break;
    case P_ALOG: shape[0] = H; nd = 1; *init = INIT_ALOG; *no_decay = 1; break;
    case P_DT: shape[0] = m == GDN2_MIXER_GDN ? H : Dk; nd = 1; *init = INIT_DT; *no_decay = 1; break;
    case P_G0: shape[0] = R; shape[1] = d; break;
    case P_G1: shape[0] = Dv; shape[1] = R; break;
    case P_G1B: shape[0] = Dv; nd = 1; *init = INIT_ZERO; *no_decay = 1; break;
    case P_ON: shape[0] = c->V; nd = 1; *init = INIT_ONE; *no_decay = 1; break;
    case P_O: shape[0] = d; shape[1] = Dv; break;
    default: return 0;
    }
    *numel = 1;
    for (int i = 0; i < nd; i++) *numel *= (size_t)shape[i];
    return nd;
}

int gdn2_layer_check(const gdn2_layer_cfg *c) {
    if (!c) return gdn2_error(GDN2_ERR_ARG, "gdn2 layer: config is NULL");
    if (c->hidden <= 0 || c->H <= 0 || c->HV <= 0 || c->K <= 0 || c->V <= 0 || c->conv_size <= 0)
        return gdn2_error(GDN2_ERR_ARG,
                          "gdn2 layer: sizes must be positive (hidden=%lld H=%lld HV=%lld K=%lld V=%lld conv_size=%lld)",
                          (long long)c->hidden, (long long)c->H, (long long)c->HV, (long long)c->K, (long long)c->V,
                          (long long)c->conv_size);
    if (c->HV % c->H)
        return gdn2_error(GDN2_ERR_ARG, "gdn2 layer: num_v_heads (%lld) must be a multiple of num_heads (%lld)",
                          (long long)c->HV, (long long)c->H);
    if (!(c->norm_eps > 0.0f)) return gdn2_error(GDN2_ERR_ARG, "gdn2 layer: norm_eps must be > 0, got %g", c->norm_eps);
    if (c->mixer != GDN2_MIXER_GDN2 && c->mixer != GDN2_MIXER_KDA && c->mixer != GDN2_MIXER_GDN)
        return gdn2_error(GDN2_ERR_ARG, "gdn2 layer: unknown mixer kind %d (0 gdn2, 1 kda, 2 gdn)", (int)c->mixer);
    if (c->kernel != GDN2_KERNEL_CHUNK && c->kernel != GDN2_KERNEL_REFERENCE)
        return gdn2_error(GDN2_ERR_ARG, "gdn2 layer: unknown recurrence kernel %d (0 chunk, 1 reference)", (int)c->kernel);
    return GDN2_OK;
}

int gdn2_layer_params(const gdn2_layer_cfg *c, gdn2_param_info *out, int cap) {
    int n = 0;
    size_t off = 0;
    for (int p = 0; p < P_COUNT; p++) {
        int64_t shape[4];
        size_t numel;
        int init, nod, nd = slot_spec(c, p, shape, &numel, &init, &nod);
        if (!nd) continue;
        if (out && n < cap) {
            gdn2_param_info *pi = &out[n];
            memset(pi, 0, sizeof *pi);
            snprintf(pi->name, sizeof pi->name, "%s", k_names[p]);
            pi->ndim = nd;
            memcpy(pi->shape, shape, sizeof shape);
            pi->offset = off;
            pi->numel = numel;
            pi->no_decay = nod;
        }
        off += numel;
        n++;
    }
    return n;
}

/* offsets of every slot ((size_t)-1 when absent) */
static size_t layout(const gdn2_layer_cfg *c, size_t off[P_COUNT]) {
    size_t o = 0;
    for (int p = 0; p < P_COUNT; p++) {
        int64_t shape[4];
        size_t numel;
        int init, nod, nd = slot_spec(c, p, shape, &numel, &init, &nod);
        off[p] = (size_t)-1;
        if (!nd) continue;
        off[p] = o;
        o += numel;
    }
    return o;
}

size_t gdn2_layer_param_count(const gdn2_layer_cfg *c) {
    size_t off[P_COUNT];
    return layout(c, off);
}

void gdn2_layer_init(const gdn2_layer_cfg *c, float *params, uint64_t seed) {
    gdn2_rng s = {seed * 0x2545F4914F6CDD1DULL + 0x1234567ULL};
    size_t off = 0;
    for (int p = 0; p < P_COUNT; p++) {
        int64_t shape[4];
        size_t numel;
        int init, nod, nd = slot_spec(c, p, shape, &numel, &init, &nod);
        if (!nd) continue;
        float *x = params + off;
        if (init == INIT_XAVIER) {
            /* Xavier uniform, gain 2^-2.5: U(±gain·sqrt(6/(fan_in+fan_out))) */
            const double bound = pow(2.0, -2.5) * sqrt(6.0 / (double)(shape[0] + shape[1]));
            for (size_t i = 0; i < numel; i++) x[i] = (float)((2.0 * gdn2_rng_uniform(&s) - 1.0) * bound);
        } else if (init == INIT_CONV) {
            /* torch Conv1d default (kaiming_uniform a=√5): U(±1/sqrt(fan_in)), fan_in = 1·W */
            const double bound = 1.0 / sqrt((double)c->conv_size);
            for (size_t i = 0; i < numel; i++) x[i] = (float)((2.0 * gdn2_rng_uniform(&s) - 1.0) * bound);
        } else if (init == INIT_ZERO) {
            memset(x, 0, numel * sizeof(float));
        } else if (init == INIT_ONE) {
            for (size_t i = 0; i < numel; i++) x[i] = 1.0f;
        } else if (init == INIT_ALOG) {
            /* A ~ U(1,16), A_log = ln A */
            for (size_t i = 0; i < numel; i++) x[i] = (float)log(1.0 + 15.0 * gdn2_rng_uniform(&s));
        } else { /* INIT_DT: dt log-uniform in [1e-3, 1e-1], >= 1e-4; dt_bias = softplus^-1(dt) */
            for (size_t i = 0; i < numel; i++) {
                double dt = exp(gdn2_rng_uniform(&s) * (log(0.1) - log(0.001)) + log(0.001));
                if (dt < 1e-4) dt = 1e-4;
                x[i] = (float)(dt + log(-expm1(-dt)));
            }
        }
        off += numel;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* activations and states                                                                     */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
    size_t qp, kp, vp, q, k, v, g, f1, f, sb, sw, o, g1, a, st, total;
} act_layout;

static int64_t gate_width(const gdn2_layer_cfg *c) { return c->mixer == GDN2_MIXER_GDN2 ? c->H * c->K : c->H; }

static act_layout act_offsets(const gdn2_layer_cfg *c, int64_t B, int64_t T) {
    const size_t N = (size_t)(B * T), Dk = (size_t)(c->H * c->K), Dv = (size_t)(c->HV * c->V), R = (size_t)c->V;
    const int gdn = c->mixer == GDN2_MIXER_GDN;
    act_layout L;
    size_t o = 0;
    L.qp = o; o += N * Dk;
    L.kp = o; o += N * Dk;
    L.vp = o; o += N * Dv;
    L.q = o;  o += N * Dk;
    L.k = o;  o += N * Dk;
    L.v = o;  o += N * Dv;
    L.g = o;  o += N * Dk;
    L.f1 = o; o += gdn ? 0 : N * R;
    L.f = o;  o += gdn ? N * (size_t)c->H : N * Dk;
    L.sb = o; o += N * (size_t)gate_width(c);
    L.sw = o; o += c->mixer == GDN2_MIXER_GDN2 ? N * Dv : 0;
    L.o = o;  o += N * Dv;
    L.g1 = o; o += N * R;
    L.a = o;  o += N * Dv;
    L.st = o; o += (size_t)B * gdn2_layer_state_size(c);
    L.total = o;
    return L;
}

size_t gdn2_layer_act_size(const gdn2_layer_cfg *c, int64_t B, int64_t T) { return act_offsets(c, B, T).total; }

/* Decode state of one sequence: [q conv cache (W-1)·Dk | k conv cache (W-1)·Dk | v conv cache (W-1)·Dv |
 * S HV·K·V]. Conv caches hold the last W-1 pre-activation (projection) inputs, time-major, oldest
 * first; S is K-major (S[k][v]) like the kernels' states. */
static size_t st_conv_q(const gdn2_layer_cfg *c) { (void)c; return 0; }
static size_t st_conv_k(const gdn2_layer_cfg *c) { return (size_t)((c->conv_size - 1) * c->H * c->K); }
static size_t st_conv_v(const gdn2_layer_cfg *c) { return 2 * (size_t)((c->conv_size - 1) * c->H * c->K); }
static size_t st_S(const gdn2_layer_cfg *c) {
    return st_conv_v(c) + (size_t)((c->conv_size - 1) * c->HV * c->V);
}

size_t gdn2_layer_state_size(const gdn2_layer_cfg *c) { return st_S(c) + (size_t)(c->HV * c->K * c->V); }

/* ------------------------------------------------------------------------------------------ */
/* recurrence dispatch                                                                        */
/* ------------------------------------------------------------------------------------------ */
static double *to_f64(const float *x, size_t n) {
    if (!x) return NULL;
    double *y = gdn2_malloc((n ? n : 1) * sizeof(double), "layer float64 adapter");
    if (y)
        for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}
static void to_f32(float *y, const double *x, size_t n) {
    if (y && x)
        for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
}

typedef struct {
    const float *q, *k, *v, *g, *b, *w, *h0;
} rec_in;

/* float64 adapter around gdn2_ref_fwd/bwd: exact, slow; the conformance option and a fallback
 * while the fp32 kernels are not built in (GDN2_ERR_UNSUPPORTED). d_o NULL = forward only. */
static int rec_ref(const gdn2_dims *dm, const gdn2_opts *op, const rec_in *in, float *o, float *ht,
                   const float *d_o, float *dq, float *dk, float *dv, float *dg, float *db, float *dw) {
    const size_t nk = (size_t)(dm->B * dm->T * dm->H * dm->K), nv = (size_t)(dm->B * dm->T * dm->HV * dm->V);
    const size_t ns = (size_t)(dm->B * dm->HV * dm->K * dm->V);
    enum { Q, Kk, Vv, Gg, Bb, Ww, H0, O, HT, DO, DQ, DK, DV, DG, DB, DW, NBUF };
    double *buf[NBUF] = {0};
    int rc = GDN2_OK;
    buf[Q] = to_f64(in->q, nk); buf[Kk] = to_f64(in->k, nk); buf[Vv] = to_f64(in->v, nv);
    buf[Gg] = to_f64(in->g, nk); buf[Bb] = to_f64(in->b, nk); buf[Ww] = to_f64(in->w, nv);
    buf[H0] = to_f64(in->h0, ns);
    if (!d_o) {
        buf[O] = gdn2_malloc(nv * sizeof(double) + 8, "layer float64 adapter o");
        if (ht) buf[HT] = gdn2_malloc(ns * sizeof(double) + 8, "layer float64 adapter ht");
    } else {
        buf[DO] = to_f64(d_o, nv);
        for (int i = DQ; i <= DW; i++)
            buf[i] = gdn2_malloc(((i == DV || i == DW) ? nv : nk) * sizeof(double) + 8, "layer float64 adapter grads");
    }
    for (int i = 0; i < NBUF; i++) {
        const int needed = i <= Ww || (i == H0 && in->h0) || (!d_o && (i == O || (i == HT && ht))) ||
                           (d_o && i >= DO);
        if (needed && !buf[i]) { rc = GDN2_ERR_NOMEM; goto done; }
    }
    gdn2_fwd_tensors_f64 t = {buf[Q], buf[Kk], buf[Vv], buf[Gg], buf[Bb], buf[Ww], buf[H0], NULL, NULL,
                              buf[O], buf[HT]};
    if (!d_o) {
        rc = gdn2_ref_fwd(dm, op, &t);
        if (!rc) { to_f32(o, buf[O], nv); to_f32(ht, buf[HT], ns); }
    } else {
        gdn2_bwd_tensors_f64 g = {buf[DO], NULL, buf[DQ], buf[DK], buf[DV], buf[DG], buf[DB], buf[DW], NULL, NULL, NULL};
        rc = gdn2_ref_bwd(dm, op, &t, &g);
        if (!rc) {
            to_f32(dq, buf[DQ], nk); to_f32(dk, buf[DK], nk); to_f32(dv, buf[DV], nv);
            to_f32(dg, buf[DG], nk); to_f32(db, buf[DB], nk); to_f32(dw, buf[DW], nv);
        }
    }
done:
    for (int i = 0; i < NBUF; i++) free(buf[i]);
    return rc;
}

static int rec_fwd(int kernel, const gdn2_dims *dm, const gdn2_opts *op, const rec_in *in, float *o, float *ht) {
    if (kernel == GDN2_KERNEL_CHUNK) {
        gdn2_fwd_tensors t = {in->q, in->k, in->v, in->g, in->b, in->w, in->h0, NULL, NULL, o, ht};
        int rc = gdn2_chunk_fwd(dm, op, &t);
        if (rc != GDN2_ERR_UNSUPPORTED) return rc;
        gdn2_clear_error();
    }
    return rec_ref(dm, op, in, o, ht, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
}

static int rec_bwd(int kernel, const gdn2_dims *dm, const gdn2_opts *op, const rec_in *in, const float *d_o,
                   float *dq, float *dk, float *dv, float *dg, float *db, float *dw) {
    if (kernel == GDN2_KERNEL_CHUNK) {
        gdn2_fwd_tensors t = {in->q, in->k, in->v, in->g, in->b, in->w, in->h0, NULL, NULL, NULL, NULL};
        gdn2_bwd_tensors g = {d_o, NULL, dq, dk, dv, dg, db, dw, NULL, NULL, NULL};
        int rc = gdn2_chunk_bwd(dm, op, &t, &g);
        if (rc != GDN2_ERR_UNSUPPORTED) return rc;
        gdn2_clear_error();
    }
    return rec_ref(dm, op, in, NULL, NULL, d_o, dq, dk, dv, dg, db, dw);
}

/* one token for one sequence; S [HV,K,V] updated in place */
static int rec_step(int kernel, const gdn2_dims *dm, const gdn2_opts *op, const rec_in *in, float *o, float *S) {
    if (kernel == GDN2_KERNEL_CHUNK) {
        const int32_t slot = 0;
        gdn2_decode_tensors t = {in->q, in->k, in->v, in->g, in->b, in->w, NULL, NULL, o, S, 1, &slot, GDN2_STATE_F32};
        int rc = gdn2_decode_step(dm, op, &t);
        if (rc != GDN2_ERR_UNSUPPORTED) return rc;
        gdn2_clear_error();
    }
    rec_in r = *in;
    r.h0 = S;
    return rec_ref(dm, op, &r, o, S, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* gates                                                                                      */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
    const float *p;
    size_t off[P_COUNT];
} lparams;
#define PP(lp, slot) ((lp)->p + (lp)->off[slot])

/* g, b, w at kernel layout from the saved pre-activations / sigmoids.
 *   gdn2: g[n,h,c] = −e^{A_log[h]} softplus(f[n,h,c] + dt[h,c]);  b = c·sb;  w = sw
 *   kda:  g as gdn2;  b[n,h,:] = c·β[n,h];  w[n,hv,:] = c·β[n,hv/G]
 *   gdn:  g[n,h,:] = −e^{A_log[h]} softplus(f[n,h] + dt[h]);  b, w as kda
 * g = NULL: only b and w (the backward, which saved g). */
static void make_gates(const gdn2_layer_cfg *c, const lparams *lp, int64_t N, const float *f, const float *sb,
                       const float *sw, float *g, float *b, float *w, int nt) {
    const int64_t H = c->H, HV = c->HV, K = c->K, V = c->V, G = HV / H, m = c->mixer;
    const float cb = c->allow_neg_eigval ? 2.0f : 1.0f;
    const float *A_log = PP(lp, P_ALOG), *dt = PP(lp, P_DT);
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(nt))
    for (int64_t n = 0; n < N; n++) {
        for (int64_t h = 0; h < H; h++) {
            const float a = expf(A_log[h]);
            float *gr = g ? g + (n * H + h) * K : NULL, *br = b + (n * H + h) * K;
            if (!g) {
            } else if (m == GDN2_MIXER_GDN) {
                const float gs = -a * gdn2_nn_softplus(f[n * H + h] + dt[h]);
                for (int64_t i = 0; i < K; i++) gr[i] = gs;
            } else {
                for (int64_t i = 0; i < K; i++) gr[i] = -a * gdn2_nn_softplus(f[(n * H + h) * K + i] + dt[h * K + i]);
            }
            if (m == GDN2_MIXER_GDN2)
                for (int64_t i = 0; i < K; i++) br[i] = cb * sb[(n * H + h) * K + i];
            else
                for (int64_t i = 0; i < K; i++) br[i] = cb * sb[n * H + h];
        }
        for (int64_t hv = 0; hv < HV; hv++) {
            float *wr = w + (n * HV + hv) * V;
            if (m == GDN2_MIXER_GDN2)
                memcpy(wr, sw + (n * HV + hv) * V, (size_t)V * sizeof(float));
            else
                for (int64_t j = 0; j < V; j++) wr[j] = cb * sb[n * H + hv / G];
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* forward                                                                                    */
/* ------------------------------------------------------------------------------------------ */
static int check_call(const char *fn, const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B,
                      int64_t T, const float *y) {
    int rc = gdn2_layer_check(c);
    if (rc) return rc;
    if (B < 0 || T < 0) return gdn2_error(GDN2_ERR_ARG, "%s: B=%lld T=%lld must be >= 0", fn, (long long)B, (long long)T);
    if (!params || !x || !y)
        return gdn2_error(GDN2_ERR_ARG, "%s: %s is NULL", fn, !params ? "params" : !x ? "x" : "y/dx");
    return GDN2_OK;
}

/* The forward over [B,T]. decode = 1: T must be 1 and the recurrence runs through the decode step
 * (per sequence, in place in states). A is the activation block (act_offsets layout). */
static int forward_impl(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B, int64_t T,
                        float *y, float *A, float *states, int decode, int nt) {
    const int64_t d = c->hidden, H = c->H, HV = c->HV, K = c->K, V = c->V, W = c->conv_size, R = V;
    const int64_t N = B * T, Dk = H * K, Dv = HV * V, m = c->mixer;
    const size_t SS = gdn2_layer_state_size(c), KVs = (size_t)(HV * K * V);
    lparams lp = {params, {0}};
    layout(c, lp.off);
    const act_layout L = act_offsets(c, B, T);
    float *qp = A + L.qp, *kp = A + L.kp, *vp = A + L.vp, *f1 = A + L.f1, *f = A + L.f, *sb = A + L.sb;
    float *sw = A + L.sw, *o = A + L.o, *g1 = A + L.g1, *ga = A + L.a, *st0 = A + L.st;
    float *q = A + L.q, *k = A + L.k, *v = A + L.v, *g = A + L.g;
    int rc = GDN2_OK;

    /* scratch: b, w at kernel layout, z (normed, gated output), initial/final recurrent states */
    const size_t nscr = (size_t)N * (size_t)(Dk + 2 * Dv) + (decode || !states ? 0 : 2 * (size_t)B * KVs);
    float *scr = gdn2_malloc((nscr + 1) * sizeof(float), "gdn2 layer forward scratch");
    if (!scr) return GDN2_ERR_NOMEM;
    float *b = scr, *w = b + N * Dk, *z = w + N * Dv, *h0 = z + N * Dv, *ht = h0 + B * KVs;

    /* keep the initial states for the backward (zeros for a fresh sequence); not needed by a step */
    if (decode) {
    } else if (states) memcpy(st0, states, (size_t)B * SS * sizeof(float));
    else memset(st0, 0, (size_t)B * SS * sizeof(float));

    /* projections: qp = x Wqᵀ, kp = x Wkᵀ, vp = x Wvᵀ */
    gdn2_linear_fwd(N, d, Dk, x, PP(&lp, P_Q), NULL, qp);
    gdn2_linear_fwd(N, d, Dk, x, PP(&lp, P_K), NULL, kp);
    gdn2_linear_fwd(N, d, Dv, x, PP(&lp, P_V), NULL, vp);
    /* q = silu(conv(qp)), from the conv caches when states are given */
    const float *hq = states ? states + st_conv_q(c) : NULL, *hk = states ? states + st_conv_k(c) : NULL;
    const float *hv = states ? states + st_conv_v(c) : NULL;
    if ((rc = gdn2_conv_silu_fwd(B, T, Dk, W, qp, hq, SS, PP(&lp, P_QC), q, nt)) ||
        (rc = gdn2_conv_silu_fwd(B, T, Dk, W, kp, hk, SS, PP(&lp, P_KC), k, nt)) ||
        (rc = gdn2_conv_silu_fwd(B, T, Dv, W, vp, hv, SS, PP(&lp, P_VC), v, nt)))
        goto done;
    /* decay pre-activation: f = (x Wf0ᵀ) Wf1ᵀ (gdn2, kda) or f = x Waᵀ (gdn) */
    if (m == GDN2_MIXER_GDN) {
        gdn2_linear_fwd(N, d, H, x, PP(&lp, P_A), NULL, f);
    } else {
        gdn2_linear_fwd(N, d, R, x, PP(&lp, P_F0), NULL, f1);
        gdn2_linear_fwd(N, R, Dk, f1, PP(&lp, P_F1), NULL, f);
    }
    /* erase/write gates: sb = σ(x Wbᵀ) ([N,Dk] or β [N,H]); sw = σ(x Wwᵀ) (gdn2) */
    const int64_t bw = gate_width(c);
    gdn2_linear_fwd(N, d, bw, x, PP(&lp, P_B), NULL, sb);
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(nt))
    for (int64_t i = 0; i < N * bw; i++) sb[i] = gdn2_nn_sigmoid(sb[i]);
    if (m == GDN2_MIXER_GDN2) {
        gdn2_linear_fwd(N, d, Dv, x, PP(&lp, P_W), NULL, sw);
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(nt))
        for (int64_t i = 0; i < N * Dv; i++) sw[i] = gdn2_nn_sigmoid(sw[i]);
    }
    make_gates(c, &lp, N, f, sb, sw, g, b, w, nt);

    /* recurrence: o = GDN2(q, k, v, g, b, w), q/k L2-normalised in the kernel */
    gdn2_opts op;
    memset(&op, 0, sizeof op);
    op.qk_l2norm = 1;
    op.n_threads = nt;
    op.trust_values = 1; /* no value scan per layer call: a NaN here comes from a diverged run, caught at the loss */
    if (decode) {
        gdn2_dims d1 = {1, 1, H, HV, K, V};
        for (int64_t i = 0; i < B && !rc; i++) {
            rec_in in = {q + i * Dk, k + i * Dk, v + i * Dv, g + i * Dk, b + i * Dk, w + i * Dv, NULL};
            rc = rec_step(c->kernel, &d1, &op, &in, o + i * Dv, states + i * SS + st_S(c));
        }
    } else {
        gdn2_dims dm = {B, T, H, HV, K, V};
        rec_in in = {q, k, v, g, b, w, NULL};
        if (states) {
            for (int64_t i = 0; i < B; i++) memcpy(h0 + i * KVs, states + i * SS + st_S(c), KVs * sizeof(float));
            in.h0 = h0;
        }
        rc = rec_fwd(c->kernel, &dm, &op, &in, o, states ? ht : NULL);
        if (!rc && states)
            for (int64_t i = 0; i < B; i++) memcpy(states + i * SS + st_S(c), ht + i * KVs, KVs * sizeof(float));
    }
    if (rc) goto done;
    /* the conv caches move on only once the recurrence succeeded (a failed call leaves them as they were) */
    if (states) {
        gdn2_conv_hist_update(B, T, Dk, W, qp, states + st_conv_q(c), SS);
        gdn2_conv_hist_update(B, T, Dk, W, kp, states + st_conv_k(c), SS);
        gdn2_conv_hist_update(B, T, Dv, W, vp, states + st_conv_v(c), SS);
    }

    /* output gate a = (x Wg0ᵀ) Wg1ᵀ + bg;  z = RMSNorm(o)·wn ⊙ silu(a) per value head;  y = z Woᵀ */
    gdn2_linear_fwd(N, d, R, x, PP(&lp, P_G0), NULL, g1);
    gdn2_linear_fwd(N, R, Dv, g1, PP(&lp, P_G1), PP(&lp, P_G1B), ga);
    gdn2_rmsnorm_swish_fwd(N * HV, V, o, ga, PP(&lp, P_ON), c->norm_eps, z, nt);
    gdn2_linear_fwd(N, Dv, d, z, PP(&lp, P_O), NULL, y);
done:
    free(scr);
    return rc;
}

int gdn2_layer_forward(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B, int64_t T,
                       float *y, float *acts, float *states, int n_threads) {
    int rc = check_call("gdn2_layer_forward", c, params, x, B, T, y);
    if (rc) return rc;
    if (B == 0 || T == 0) return GDN2_OK;
    float *A = acts;
    if (!A) {
        A = gdn2_malloc(gdn2_layer_act_size(c, B, T) * sizeof(float) + 4, "gdn2 layer activations");
        if (!A) return GDN2_ERR_NOMEM;
    }
    rc = forward_impl(c, params, x, B, T, y, A, states, 0, n_threads);
    if (A != acts) free(A);
    return rc;
}

int gdn2_layer_step(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t n, float *states,
                    float *y, int n_threads) {
    int rc = check_call("gdn2_layer_step", c, params, x, n, 1, y);
    if (rc) return rc;
    if (!states) return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_step: states is NULL");
    if (n == 0) return GDN2_OK;
    /* the step keeps no copy of the initial states: the block stops where they would start */
    float *A = gdn2_malloc(act_offsets(c, n, 1).st * sizeof(float) + 4, "gdn2 layer step activations");
    if (!A) return GDN2_ERR_NOMEM;
    rc = forward_impl(c, params, x, n, 1, y, A, states, 1, n_threads);
    free(A);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* backward                                                                                   */
/* ------------------------------------------------------------------------------------------ */
int gdn2_layer_backward(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B, int64_t T,
                        const float *acts, const float *dy, float *dx, float *dparams, int n_threads) {
    int rc = check_call("gdn2_layer_backward", c, params, x, B, T, dx);
    if (rc) return rc;
    if (!acts || !dy || !dparams)
        return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_backward: %s is NULL", !acts ? "acts" : !dy ? "dy" : "dparams");
    if (B == 0 || T == 0) return GDN2_OK;
    const int nt = n_threads;
    const int64_t d = c->hidden, H = c->H, HV = c->HV, K = c->K, V = c->V, W = c->conv_size, R = V, G = HV / H;
    const int64_t N = B * T, Dk = H * K, Dv = HV * V, m = c->mixer;
    const size_t SS = gdn2_layer_state_size(c), KVs = (size_t)(HV * K * V);
    const float cb = c->allow_neg_eigval ? 2.0f : 1.0f;
    lparams lp = {params, {0}};
    layout(c, lp.off);
    float *dP[P_COUNT];
    for (int p = 0; p < P_COUNT; p++) dP[p] = lp.off[p] == (size_t)-1 ? NULL : dparams + lp.off[p];
    const act_layout L = act_offsets(c, B, T);
    const float *qp = acts + L.qp, *kp = acts + L.kp, *vp = acts + L.vp, *f1 = acts + L.f1, *f = acts + L.f;
    const float *sb = acts + L.sb, *sw = acts + L.sw, *o = acts + L.o, *g1 = acts + L.g1, *ga = acts + L.a;
    const float *st0 = acts + L.st;

    const float *q = acts + L.q, *k = acts + L.k, *v = acts + L.v, *g = acts + L.g;
    /* scratch: b,w (rebuilt) | dq,dk,dv,dg,db,dw | z/do | dga | dg1 (R) | dpre | h0 */
    const size_t nscr = (size_t)N * (size_t)(5 * Dk + 5 * Dv + R + (Dk > Dv ? Dk : Dv)) + (size_t)B * KVs;
    float *scr = gdn2_malloc((nscr + 1) * sizeof(float), "gdn2 layer backward scratch");
    if (!scr) return GDN2_ERR_NOMEM;
    float *b = scr, *w = b + N * Dk;
    float *dq = w + N * Dv, *dk = dq + N * Dk, *dv = dk + N * Dk, *dg = dv + N * Dv, *db = dg + N * Dk;
    float *dw = db + N * Dk, *zd = dw + N * Dv, *dga = zd + N * Dv, *dg1 = dga + N * Dv, *dpre = dg1 + N * R;
    float *h0 = dpre + N * (Dk > Dv ? Dk : Dv);
    const float *hq = st0 + st_conv_q(c), *hk = st0 + st_conv_k(c), *hv = st0 + st_conv_v(c);

    /* y = z Woᵀ:  dWo += dyᵀ z;  dz = dy Wo   (z recomputed from o and a) */
    gdn2_rmsnorm_swish_fwd(N * HV, V, o, ga, PP(&lp, P_ON), c->norm_eps, zd, nt);
    gdn2_linear_bwd(N, Dv, d, zd, PP(&lp, P_O), dy, dpre, 0, dP[P_O], NULL);
    /* gated RMSNorm: do (into zd), da, dwn */
    if ((rc = gdn2_rmsnorm_swish_bwd(N * HV, V, o, ga, PP(&lp, P_ON), c->norm_eps, dpre, zd, dga, dP[P_ON], nt)))
        goto done;
    /* a = g1 Wg1ᵀ + bg, g1 = x Wg0ᵀ:  dWg1 += daᵀ g1, dbg += Σ da, dg1 = da Wg1; dWg0 += dg1ᵀ x, dx = dg1 Wg0 */
    gdn2_linear_bwd(N, R, Dv, g1, PP(&lp, P_G1), dga, dg1, 0, dP[P_G1], dP[P_G1B]);
    gdn2_linear_bwd(N, d, R, x, PP(&lp, P_G0), dg1, dx, 0, dP[P_G0], NULL);

    /* rebuild b, w (q, k, v, g are saved) and run the recurrence backward */
    make_gates(c, &lp, N, NULL, sb, sw, NULL, b, w, nt);
    for (int64_t i = 0; i < B; i++) memcpy(h0 + i * KVs, st0 + i * SS + st_S(c), KVs * sizeof(float));
    {
        gdn2_dims dm = {B, T, H, HV, K, V};
        gdn2_opts op;
        memset(&op, 0, sizeof op);
        op.qk_l2norm = 1;
        op.n_threads = nt;
        op.trust_values = 1;
        rec_in in = {q, k, v, g, b, w, h0};
        if ((rc = rec_bwd(c->kernel, &dm, &op, &in, zd, dq, dk, dv, dg, db, dw))) goto done;
    }

    /* gates. gdn2/kda decay: u = f + dt, a = e^{A_log[h]}, g = −a softplus(u):
     *   df = dg·(−a)·softplus'(u);  d dt += Σ_n df;  dA_log[h] += Σ dg ⊙ g.
     * gdn: the same on the scalar per head with dg summed over K. df overwrites dg. */
    {
        const float *A_log = PP(&lp, P_ALOG), *dt = PP(&lp, P_DT);
        /* the token sums run in double (dA_log adds up N·K terms of both signs), one partial per thread */
        const int64_t ndt = m == GDN2_MIXER_GDN ? H : Dk, nacc = H + ndt;
        const int nth = gdn2_threads(nt);
        double *acc = calloc((size_t)(nacc * nth), sizeof(double));
        if (!acc) { rc = gdn2_error(GDN2_ERR_NOMEM, "gdn2_layer_backward: out of memory for the gate sums"); goto done; }
#pragma omp parallel num_threads(nth)
        {
#ifdef _OPENMP
            double *dA = acc + (size_t)omp_get_thread_num() * (size_t)nacc;
#else
            double *dA = acc;
#endif
            double *ddt = dA + H;
#pragma omp for schedule(static)
            for (int64_t n = 0; n < N; n++)
                for (int64_t h = 0; h < H; h++) {
                    const float a = expf(A_log[h]);
                    float *dgr = dg + (n * H + h) * K;
                    if (m == GDN2_MIXER_GDN) {
                        float s = 0.0f;
                        for (int64_t i = 0; i < K; i++) s += dgr[i];
                        const float u = f[n * H + h] + dt[h], gs = -a * gdn2_nn_softplus(u);
                        const float df = s * (-a) * gdn2_nn_softplus_grad(u);
                        dA[h] += (double)s * gs;
                        ddt[h] += df;
                        dgr[0] = df; /* dg[n*H+h] is read below from dgr[0] */
                    } else {
                        const float *fr = f + (n * H + h) * K, *dtr = dt + h * K;
                        for (int64_t i = 0; i < K; i++) {
                            const float u = fr[i] + dtr[i];
                            const float df = dgr[i] * (-a) * gdn2_nn_softplus_grad(u);
                            dA[h] += (double)dgr[i] * g[(n * H + h) * K + i];
                            ddt[h * K + i] += df;
                            dgr[i] = df;
                        }
                    }
                }
        }
        for (int t = 1; t < nth; t++)
            for (int64_t i = 0; i < nacc; i++) acc[i] += acc[(size_t)t * (size_t)nacc + i];
        for (int64_t h = 0; h < H; h++) dP[P_ALOG][h] += (float)acc[h];
        for (int64_t i = 0; i < ndt; i++) dP[P_DT][i] += (float)acc[H + i];
        free(acc);
        if (m == GDN2_MIXER_GDN) {
            /* compact the per-head df to [N,H] then: f = x Waᵀ */
            for (int64_t i = 0; i < N * H; i++) dpre[i] = dg[i * K];
            gdn2_linear_bwd(N, d, H, x, PP(&lp, P_A), dpre, dx, 1, dP[P_A], NULL);
        } else {
            /* f = f1 Wf1ᵀ, f1 = x Wf0ᵀ */
            gdn2_linear_bwd(N, R, Dk, f1, PP(&lp, P_F1), dg, dg1, 0, dP[P_F1], NULL);
            gdn2_linear_bwd(N, d, R, x, PP(&lp, P_F0), dg1, dx, 1, dP[P_F0], NULL);
        }
    }
    /* erase/write gates. gdn2: b = c σ(pb): dpb = db·c·σ(1−σ);  w = σ(pw): dpw = dw·σ(1−σ).
     * kda/gdn: b = w = c β:  dβ[n,h] = c (Σ_i db[n,h,i] + Σ_{hv in group h} Σ_j dw[n,hv,j]);  dpβ = dβ β(1−β) */
    if (m == GDN2_MIXER_GDN2) {
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(nt))
        for (int64_t i = 0; i < N * Dk; i++) dpre[i] = db[i] * cb * sb[i] * (1.0f - sb[i]);
        gdn2_linear_bwd(N, d, Dk, x, PP(&lp, P_B), dpre, dx, 1, dP[P_B], NULL);
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(nt))
        for (int64_t i = 0; i < N * Dv; i++) dpre[i] = dw[i] * sw[i] * (1.0f - sw[i]);
        gdn2_linear_bwd(N, d, Dv, x, PP(&lp, P_W), dpre, dx, 1, dP[P_W], NULL);
    } else {
#pragma omp parallel for schedule(static) num_threads(gdn2_threads(nt))
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++) {
                float s = 0.0f;
                for (int64_t i = 0; i < K; i++) s += db[(n * H + h) * K + i];
                for (int64_t j = 0; j < G * V; j++) s += dw[(n * HV + h * G) * V + j];
                const float be = sb[n * H + h];
                dpre[n * H + h] = s * cb * be * (1.0f - be);
            }
        gdn2_linear_bwd(N, d, H, x, PP(&lp, P_B), dpre, dx, 1, dP[P_B], NULL);
    }
    /* short convs + SiLU, then the projections: dqp = conv_vjp(dq); dWq += dqpᵀ x; dx += dqp Wq */
    if ((rc = gdn2_conv_silu_bwd(B, T, Dk, W, qp, hq, SS, PP(&lp, P_QC), dq, dpre, dP[P_QC], nt))) goto done;
    gdn2_linear_bwd(N, d, Dk, x, PP(&lp, P_Q), dpre, dx, 1, dP[P_Q], NULL);
    if ((rc = gdn2_conv_silu_bwd(B, T, Dk, W, kp, hk, SS, PP(&lp, P_KC), dk, dpre, dP[P_KC], nt))) goto done;
    gdn2_linear_bwd(N, d, Dk, x, PP(&lp, P_K), dpre, dx, 1, dP[P_K], NULL);
    if ((rc = gdn2_conv_silu_bwd(B, T, Dv, W, vp, hv, SS, PP(&lp, P_VC), dv, dpre, dP[P_VC], nt))) goto done;
    gdn2_linear_bwd(N, d, Dv, x, PP(&lp, P_V), dpre, dx, 1, dP[P_V], NULL);
done:
    free(scr);
    return rc;
}
