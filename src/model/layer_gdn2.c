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
#include "../backend/backend.h"
#include "../backend/nn.h"
#include "gdn2_layer.h"
#include "model_internal.h"

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
    if (c->keep_chunk != 0 && c->keep_chunk != 1)
        return gdn2_error(GDN2_ERR_ARG, "gdn2 layer: keep_chunk %d (expected 0 recompute or 1 keep)", c->keep_chunk);
    return GDN2_OK;
}

static size_t layout(const gdn2_layer_cfg *c, size_t off[P_COUNT]);

int gdn2_layer_params(const gdn2_layer_cfg *c, gdn2_param_info *out, int cap) {
    int n = 0;
    size_t off[P_COUNT];
    layout(c, off);
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
            pi->offset = off[p];
            pi->numel = numel;
            pi->no_decay = nod;
        }
        n++;
    }
    return n;
}

/* offsets of every slot ((size_t)-1 when absent), each at a multiple of GDN2_PARAM_ALIGN floats;
 * returns the floats of the block (the end of the last slot) */
static size_t layout(const gdn2_layer_cfg *c, size_t off[P_COUNT]) {
    size_t o = 0;
    for (int p = 0; p < P_COUNT; p++) {
        int64_t shape[4];
        size_t numel;
        int init, nod, nd = slot_spec(c, p, shape, &numel, &init, &nod);
        off[p] = (size_t)-1;
        if (!nd) continue;
        off[p] = gdn2_param_align_up(o);
        o = off[p] + numel;
    }
    return o;
}

size_t gdn2_layer_param_count(const gdn2_layer_cfg *c) {
    size_t off[P_COUNT];
    return layout(c, off);
}

void gdn2_layer_init(const gdn2_layer_cfg *c, float *params, uint64_t seed) {
    gdn2_rng s = {seed * 0x2545F4914F6CDD1DULL + 0x1234567ULL};
    size_t off[P_COUNT];
    memset(params, 0, layout(c, off) * sizeof(float)); /* the alignment gaps */
    for (int p = 0; p < P_COUNT; p++) {
        int64_t shape[4];
        size_t numel;
        int init, nod, nd = slot_spec(c, p, shape, &numel, &init, &nod);
        if (!nd) continue;
        float *x = params + off[p];
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
    }
}

/* ------------------------------------------------------------------------------------------ */
/* activations and states                                                                     */
/* ------------------------------------------------------------------------------------------ */
/* Byte offsets of the saved activations: ACT tensors (the backend's activation type) but g and the
 * initial states (fp32). On a device every tensor starts on a 256-byte boundary. */
typedef struct {
    size_t qp, kp, vp, q, k, v, g, f1, f, sb, sw, o, g1, a, st, rsv, rsv_bytes, total;
} act_layout;

static int64_t gate_width(const gdn2_layer_cfg *c) { return c->mixer == GDN2_MIXER_GDN2 ? c->H * c->K : c->H; }
/* gdn2 without negative eigenvalues: the gates b, w are the sigmoids sb, sw themselves */
static int gates_alias(const gdn2_layer_cfg *c) { return c->mixer == GDN2_MIXER_GDN2 && !c->allow_neg_eigval; }

/* a bump allocator over byte offsets: each tensor n elements of type dt */
typedef struct {
    const gdn2_backend *be;
    size_t o;
} carve;
static size_t take(carve *cv, size_t n, int dt) {
    const size_t align = cv->be->on_device ? 256 : 1;
    size_t at = (cv->o + align - 1) / align * align;
    cv->o = at + gdn2_be_bytes(cv->be, n, dt);
    return at;
}

static gdn2_opts rec_opts(const gdn2_backend *be);
/* bytes of the recurrence's keep-mode reserve over [B,T] (0: this backend and kernel keep nothing) */
static size_t keep_reserve_bytes(const gdn2_backend *be, const gdn2_layer_cfg *c, int64_t B, int64_t T) {
    const gdn2_dims dm = {B, T, c->H, c->HV, c->K, c->V};
    const gdn2_opts op = rec_opts(be);
    return B > 0 && T > 0 && be->gdn2_reserve_bytes ? be->gdn2_reserve_bytes(be, (int)c->kernel, &dm, &op) : 0;
}

static act_layout act_offsets(const gdn2_backend *be, const gdn2_layer_cfg *c, int64_t B, int64_t T) {
    const size_t N = (size_t)(B * T), Dk = (size_t)(c->H * c->K), Dv = (size_t)(c->HV * c->V), R = (size_t)c->V;
    const int gdn = c->mixer == GDN2_MIXER_GDN;
    act_layout L;
    carve cv = {be, 0};
    L.qp = take(&cv, N * Dk, GDN2_DT_ACT);
    L.kp = take(&cv, N * Dk, GDN2_DT_ACT);
    L.vp = take(&cv, N * Dv, GDN2_DT_ACT);
    L.q = take(&cv, N * Dk, GDN2_DT_ACT);
    L.k = take(&cv, N * Dk, GDN2_DT_ACT);
    L.v = take(&cv, N * Dv, GDN2_DT_ACT);
    L.g = take(&cv, N * Dk, GDN2_DT_F32);
    L.f1 = take(&cv, gdn ? 0 : N * R, GDN2_DT_ACT);
    L.f = take(&cv, gdn ? N * (size_t)c->H : N * Dk, GDN2_DT_ACT);
    L.sb = take(&cv, N * (size_t)gate_width(c), GDN2_DT_ACT);
    L.sw = take(&cv, c->mixer == GDN2_MIXER_GDN2 ? N * Dv : 0, GDN2_DT_ACT);
    L.o = take(&cv, N * Dv, GDN2_DT_ACT);
    L.g1 = take(&cv, N * R, GDN2_DT_ACT);
    L.a = take(&cv, N * Dv, GDN2_DT_ACT);
    L.st = take(&cv, (size_t)B * gdn2_layer_state_size(c), GDN2_DT_F32);
    /* keep mode: the chunk kernels' reserve, last (a step's scratch stops before it) */
    L.rsv_bytes = c->keep_chunk ? keep_reserve_bytes(be, c, B, T) : 0;
    L.rsv = take(&cv, (L.rsv_bytes + 3) / 4, GDN2_DT_F32);
    L.total = take(&cv, 0, GDN2_DT_F32);
    return L;
}

size_t gdn2_layer_act_bytes(const gdn2_backend *be, const gdn2_layer_cfg *c, int64_t B, int64_t T) {
    return act_offsets(be, c, B, T).total;
}

size_t gdn2_layer_act_size(const gdn2_layer_cfg *c, int64_t B, int64_t T) {
    gdn2_backend be;
    gdn2_backend_cpu_init(&be, 1);
    return act_offsets(&be, c, B, T).total / sizeof(float);
}

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

/* Scratch of one forward (backward = 0) or backward call, byte offsets.
 *   forward:  b, w (kernel layout), z | h0, ht (only with states)
 *   backward: b, w | dq, dk, dv, dg (fp32), db, dw | zd (z, then do) | dga | dg1 | dpre | df | dpw | h0 */
typedef struct {
    size_t b, w, z, h0, ht;
    size_t dq, dk, dv, dg, db, dw, zd, dga, dg1, dpre, df, dpw, bh0, total;
} scr_layout;

static scr_layout scr_offsets(const gdn2_backend *be, const gdn2_layer_cfg *c, int64_t B, int64_t T, int backward,
                              int with_states) {
    const size_t N = (size_t)(B * T), Dk = (size_t)(c->H * c->K), Dv = (size_t)(c->HV * c->V), R = (size_t)c->V;
    const size_t KVs = (size_t)(c->HV * c->K * c->V);
    scr_layout S;
    memset(&S, 0, sizeof S);
    carve cv = {be, 0};
    S.b = take(&cv, N * Dk, GDN2_DT_ACT);
    S.w = take(&cv, N * Dv, GDN2_DT_ACT);
    if (!backward) {
        S.z = take(&cv, N * Dv, GDN2_DT_ACT);
        S.h0 = take(&cv, with_states ? (size_t)B * KVs : 0, GDN2_DT_F32);
        S.ht = take(&cv, with_states ? (size_t)B * KVs : 0, GDN2_DT_F32);
    } else {
        S.dq = take(&cv, N * Dk, GDN2_DT_ACT);
        S.dk = take(&cv, N * Dk, GDN2_DT_ACT);
        S.dv = take(&cv, N * Dv, GDN2_DT_ACT);
        S.dg = take(&cv, N * Dk, GDN2_DT_F32);
        S.db = take(&cv, N * Dk, GDN2_DT_ACT);
        S.dw = take(&cv, N * Dv, GDN2_DT_ACT);
        S.zd = take(&cv, N * Dv, GDN2_DT_ACT);
        S.dga = take(&cv, N * Dv, GDN2_DT_ACT);
        S.dg1 = take(&cv, N * R, GDN2_DT_ACT);
        S.dpre = take(&cv, N * (Dk > Dv ? Dk : Dv), GDN2_DT_ACT);
        S.df = take(&cv, N * Dk, GDN2_DT_ACT);
        S.dpw = take(&cv, N * Dv, GDN2_DT_ACT);
        S.bh0 = take(&cv, (size_t)B * KVs, GDN2_DT_F32);
    }
    S.total = take(&cv, 0, GDN2_DT_F32);
    return S;
}

size_t gdn2_layer_scratch_bytes(const gdn2_backend *be, const gdn2_layer_cfg *c, int64_t B, int64_t T,
                                int backward, int with_states) {
    return scr_offsets(be, c, B, T, backward, with_states).total;
}

/* ------------------------------------------------------------------------------------------ */
/* forward                                                                                    */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
    const float *p;   /* fp32 master block                                   */
    const char *pa;   /* the same block in the backend's activation type     */
    size_t off[P_COUNT];
    size_t ab;        /* bytes per ACT element                               */
} lparams;
#define PP(lp, slot) ((lp)->p + (lp)->off[slot])                      /* fp32 view     */
#define PA(lp, slot) ((const void *)((lp)->pa + (lp)->off[slot] * (lp)->ab)) /* matmul view */
#define AT(base, off) ((void *)((char *)(base) + (off)))

static int check_call(const char *fn, const gdn2_layer_cfg *c, const float *params, const void *x, int64_t B,
                      int64_t T, const void *y) {
    int rc = gdn2_layer_check(c);
    if (rc) return rc;
    if (B < 0 || T < 0) return gdn2_error(GDN2_ERR_ARG, "%s: B=%lld T=%lld must be >= 0", fn, (long long)B, (long long)T);
    if (!params || !x || !y)
        return gdn2_error(GDN2_ERR_ARG, "%s: %s is NULL", fn, !params ? "params" : !x ? "x" : "y/dx");
    return GDN2_OK;
}

static gdn2_opts rec_opts(const gdn2_backend *be) {
    gdn2_opts op;
    memset(&op, 0, sizeof op);
    op.qk_l2norm = 1;
    op.n_threads = be->n_threads;
    op.trust_values = 1; /* no value scan per layer call: a NaN here comes from a diverged run, caught at the loss */
    return op;
}

/* weight slots a, b, c (parameter offsets) and activations at byte offsets ya, yb, yc evenly spaced,
 * forwards (the activation strides whole elements): one strided-batched product can write them */
static int even_stride(const lparams *lp, const gdn2_backend *be, int a, int b, int c, size_t ya, size_t yb,
                       size_t yc) {
    const size_t *o = lp->off;
    if (o[a] == (size_t)-1 || o[b] == (size_t)-1 || o[c] == (size_t)-1 || !be->linear_fwd_batch) return 0;
    return o[b] > o[a] && o[c] - o[b] == (c == b ? 0 : o[b] - o[a]) && yb > ya && yc - yb == (c == b ? 0 : yb - ya) &&
           (yb - ya) % be->act_bytes == 0;
}

/* The forward over [B,T] on backend be (see gdn2_layer_fwd_be). decode = 1: T must be 1, sequence
 * i's state is states + slots[i] * SS (slots in backend memory, NULL: i), and the short convs and
 * the recurrence run through the backend's decode ops (conv_step, decode), in place in the states. */
static int forward_impl(gdn2_backend *be, const gdn2_layer_cfg *c, const float *params, const void *params_act,
                        const void *x, int64_t B, int64_t T, void *y, void *A, float *states, int decode,
                        const int32_t *slots, void *scratch) {
    const int64_t d = c->hidden, H = c->H, HV = c->HV, K = c->K, V = c->V, W = c->conv_size, R = V;
    const int64_t N = B * T, Dk = H * K, Dv = HV * V, m = c->mixer;
    const size_t SS = gdn2_layer_state_size(c), KVs = (size_t)(HV * K * V);
    lparams lp = {params, params_act, {0}, be->act_bytes};
    layout(c, lp.off);
    const act_layout L = act_offsets(be, c, B, T);
    const scr_layout S = scr_offsets(be, c, B, T, 0, states && !decode);
    void *qp = AT(A, L.qp), *kp = AT(A, L.kp), *vp = AT(A, L.vp), *f1 = AT(A, L.f1), *f = AT(A, L.f);
    void *sb = AT(A, L.sb), *sw = AT(A, L.sw), *o = AT(A, L.o), *g1 = AT(A, L.g1), *ga = AT(A, L.a);
    void *q = AT(A, L.q), *k = AT(A, L.k), *v = AT(A, L.v);
    float *g = AT(A, L.g), *st0 = AT(A, L.st);
    void *bs = AT(scratch, S.b), *ws = AT(scratch, S.w), *z = AT(scratch, S.z);
    const void *b = bs, *w = ws;
    float *h0 = AT(scratch, S.h0), *ht = AT(scratch, S.ht);
    int rc = GDN2_OK;

    /* keep the initial states for the backward (zeros for a fresh sequence); not needed by a step */
    if (decode) {
    } else if (states) rc = be->copy(be, st0, states, (size_t)B * SS * sizeof(float));
    else rc = be->zero(be, st0, (size_t)B * SS * sizeof(float));
    if (rc) return rc;

#define LTRY(call) do { if ((rc = (call))) return rc; } while (0)
    /* projections: qp = x Wqᵀ, kp = x Wkᵀ, vp = x Wvᵀ; in the decode step one batched product when
     * the three weights and outputs are evenly spaced (Dk = Dv: at n = 1 a product is latency-bound,
     * ~10 us each on the H100 against ~14 us for the three, bench/results/h100-keep) */
    /* the decode step's conv caches: [3][W-1][Dk] per slot, evenly spaced with the conv weights, inputs
     * and outputs (Dk = Dv): the three parts of one conv_step call */
    const size_t hs = st_conv_k(c) - st_conv_q(c), cws = lp.off[P_KC] - lp.off[P_QC];
    const int conv3 = decode && Dk == Dv && st_conv_v(c) - st_conv_k(c) == hs &&
                      even_stride(&lp, be, P_QC, P_KC, P_VC, L.qp, L.kp, L.vp) && L.k - L.q == L.kp - L.qp &&
                      L.v - L.k == L.kp - L.qp;
    const int qkv3 = decode && Dk == Dv && even_stride(&lp, be, P_Q, P_K, P_V, L.qp, L.kp, L.vp);
    const int conv_in_product = conv3 && qkv3 && be->linear_conv_step;
    /* the decode step's products of x that go in pairs or threes: the output gate's low-rank input
     * g1 = x Wg0ᵀ beside f1 = x Wf0ᵀ (gdn2, kda), and the b/w gates with their sigmoids (gdn2) */
    const int g1_early = decode && m != GDN2_MIXER_GDN && even_stride(&lp, be, P_F0, P_G0, P_G0, L.f1, L.g1, L.g1);
    const int64_t bw = gate_width(c);
    const int bw2 = decode && m == GDN2_MIXER_GDN2 && bw == Dv && even_stride(&lp, be, P_B, P_W, P_W, L.sb, L.sw, L.sw);
    /* all three groups as one call (at one row the CUDA backend makes it one launch: two fewer a layer) */
    const int multi = conv_in_product && g1_early && bw2 && be->linear_fwd_multi;
    if (conv_in_product) {
        /* the products and the convolutions in one call (at one row the CUDA product convolves as it
         * stores): q, k, v = silu(conv(x Wq/k/vᵀ)), the caches move on */
        const size_t xs = (L.kp - L.qp) / be->act_bytes;
        gdn2_product pr[3] = {
            {.out = Dk, .W = PA(&lp, P_Q), .wstride = lp.off[P_K] - lp.off[P_Q], .count = 3, .Y = qp, .ystride = xs,
             .act = GDN2_PRODUCT_CONV, .ksize = W, .hist = states + st_conv_q(c), .hs = hs, .hist_stride = SS,
             .slots = slots, .cw = PP(&lp, P_QC), .cws = cws, .y = q, .ys = xs},
            {.out = R, .W = PA(&lp, P_F0), .wstride = lp.off[P_G0] - lp.off[P_F0], .count = 2, .Y = f1,
             .ystride = (L.g1 - L.f1) / be->act_bytes, .act = GDN2_PRODUCT_STORE},
            {.out = Dv, .W = PA(&lp, P_B), .wstride = lp.off[P_W] - lp.off[P_B], .count = 2, .Y = sb,
             .ystride = (L.sw - L.sb) / be->act_bytes, .act = GDN2_PRODUCT_SIGMOID}};
        if (multi) LTRY(be->linear_fwd_multi(be, N, d, x, pr, 3));
        else LTRY(be->linear_conv_step(be, N, d, Dk, x, pr[0].W, pr[0].wstride, 3, qp, xs, W, pr[0].hist, hs, SS, slots,
                                       pr[0].cw, cws, q, xs));
    } else if (qkv3) {
        LTRY(be->linear_fwd_batch(be, N, d, Dk, x, PA(&lp, P_Q), lp.off[P_K] - lp.off[P_Q], qp,
                                  (L.kp - L.qp) / be->act_bytes, 3, GDN2_BE_NO_ACT));
    } else {
        LTRY(be->linear_fwd(be, N, d, Dk, x, PA(&lp, P_Q), NULL, qp, GDN2_DT_ACT, 0));
        LTRY(be->linear_fwd(be, N, d, Dk, x, PA(&lp, P_K), NULL, kp, GDN2_DT_ACT, 0));
        LTRY(be->linear_fwd(be, N, d, Dv, x, PA(&lp, P_V), NULL, vp, GDN2_DT_ACT, 0));
    }
    /* q = silu(conv(qp)), from the conv caches when states are given */
    const float *hq = states ? states + st_conv_q(c) : NULL, *hk = states ? states + st_conv_k(c) : NULL;
    const float *hv = states ? states + st_conv_v(c) : NULL;
    if (conv_in_product) {
        /* done with the products above */
    } else if (decode) { /* one token per sequence from its slot's conv caches, which move on (T = 1) */
        /* the three in one call when inputs, caches, weights and outputs are evenly spaced (two
         * launches fewer per layer and step) */
        if (conv3) {
            const size_t xs = (L.kp - L.qp) / be->act_bytes;
            LTRY(be->conv_step(be, N, Dk, W, 3, qp, xs, states + st_conv_q(c), hs, SS, slots, PP(&lp, P_QC), cws, q, xs));
        } else {
            LTRY(be->conv_step(be, N, Dk, W, 1, qp, 0, states + st_conv_q(c), 0, SS, slots, PP(&lp, P_QC), 0, q, 0));
            LTRY(be->conv_step(be, N, Dk, W, 1, kp, 0, states + st_conv_k(c), 0, SS, slots, PP(&lp, P_KC), 0, k, 0));
            LTRY(be->conv_step(be, N, Dv, W, 1, vp, 0, states + st_conv_v(c), 0, SS, slots, PP(&lp, P_VC), 0, v, 0));
        }
    } else {
        LTRY(be->conv_silu_fwd(be, B, T, Dk, W, qp, hq, SS, PP(&lp, P_QC), q));
        LTRY(be->conv_silu_fwd(be, B, T, Dk, W, kp, hk, SS, PP(&lp, P_KC), k));
        LTRY(be->conv_silu_fwd(be, B, T, Dv, W, vp, hv, SS, PP(&lp, P_VC), v));
    }
    /* decay pre-activation: f = (x Wf0ᵀ) Wf1ᵀ (gdn2, kda) or f = x Waᵀ (gdn) */
    if (m == GDN2_MIXER_GDN) {
        LTRY(be->linear_fwd(be, N, d, H, x, PA(&lp, P_A), NULL, f, GDN2_DT_ACT, 0));
    } else {
        /* the decode step: the output gate's low-rank input g1 = x Wg0ᵀ in the same batched product */
        if (multi) {
            /* done with the products above */
        } else if (g1_early) LTRY(be->linear_fwd_batch(be, N, d, R, x, PA(&lp, P_F0), lp.off[P_G0] - lp.off[P_F0], f1,
                                                 (L.g1 - L.f1) / be->act_bytes, 2, GDN2_BE_NO_ACT));
        else LTRY(be->linear_fwd(be, N, d, R, x, PA(&lp, P_F0), NULL, f1, GDN2_DT_ACT, 0));
        LTRY(be->linear_fwd(be, N, R, Dk, f1, PA(&lp, P_F1), NULL, f, GDN2_DT_ACT, 0));
    }
    /* erase/write gates: sb = σ(x Wbᵀ) ([N,Dk] or β [N,H]); sw = σ(x Wwᵀ) (gdn2) */
    if (multi) {
        /* done with the products above */
    } else if (bw2) {
        /* the sigmoids in the product (at one row the CUDA product applies them as it stores) */
        LTRY(be->linear_fwd_batch(be, N, d, Dv, x, PA(&lp, P_B), lp.off[P_W] - lp.off[P_B], sb,
                                  (L.sw - L.sb) / be->act_bytes, 2, GDN2_BE_SIGMOID));
    } else {
        LTRY(be->linear_fwd(be, N, d, bw, x, PA(&lp, P_B), NULL, sb, GDN2_DT_ACT, 0));
        if (m == GDN2_MIXER_GDN2) LTRY(be->linear_fwd(be, N, d, Dv, x, PA(&lp, P_W), NULL, sw, GDN2_DT_ACT, 0));
        /* one sigmoid launch for both when sw follows sb in the activations (it does at every size
         * whose sb is a multiple of the device's 256-byte alignment) */
        if (m == GDN2_MIXER_GDN2 && (char *)sw == (char *)sb + gdn2_be_bytes(be, (size_t)(N * bw), GDN2_DT_ACT)) {
            LTRY(be->sigmoid(be, (size_t)(N * (bw + Dv)), sb));
        } else {
            LTRY(be->sigmoid(be, (size_t)(N * bw), sb));
            if (m == GDN2_MIXER_GDN2) LTRY(be->sigmoid(be, (size_t)(N * Dv), sw));
        }
    }
    const float cb = c->allow_neg_eigval ? 2.0f : 1.0f;
    /* gdn2 with cb = 1: b = sb and w = sw exactly, so the recurrence reads the sigmoids in place
     * (the gates op would only copy them) */
    const int alias = gates_alias(c);
    if (alias) b = sb, w = sw;
    /* the decode step with aliased gates: the decode op takes the pre-activation f and computes g
     * itself (the same values; one launch fewer a layer) */
    const int gate_in_decode = decode && alias;
    if (!gate_in_decode)
        LTRY(be->gates_fwd(be, (int)m, N, H, HV, K, V, cb, f, sb, sw, PP(&lp, P_ALOG), PP(&lp, P_DT), g,
                           alias ? NULL : bs, alias ? NULL : ws));

    /* recurrence: o = GDN2(q, k, v, g, b, w), q/k L2-normalised in the kernel */
    gdn2_opts op = rec_opts(be);
    if (decode) { /* the decode op on the slots' states, in place */
        gdn2_dims d1 = {B, 1, H, HV, K, V};
        if (gate_in_decode)
            rc = be->decode(be, c->kernel, &d1, &op, q, k, v, f, PP(&lp, P_ALOG), PP(&lp, P_DT), b, w, states + st_S(c),
                            SS, slots, o);
        else
            rc = be->decode(be, c->kernel, &d1, &op, q, k, v, g, NULL, NULL, b, w, states + st_S(c), SS, slots, o);
    } else {
        gdn2_dims dm = {B, T, H, HV, K, V};
        float *h0p = NULL;
        if (states) {
            for (int64_t i = 0; i < B && !rc; i++)
                rc = be->copy(be, h0 + i * KVs, states + i * SS + st_S(c), KVs * sizeof(float));
            h0p = h0;
        }
        void *rsv = L.rsv_bytes ? AT(A, L.rsv) : NULL; /* keep mode (c->keep_chunk) */
        if (!rc) rc = be->gdn2_fwd(be, c->kernel, &dm, &op, q, k, v, g, b, w, h0p, o, states ? ht : NULL, rsv);
        if (!rc && states)
            for (int64_t i = 0; i < B && !rc; i++)
                rc = be->copy(be, states + i * SS + st_S(c), ht + i * KVs, KVs * sizeof(float));
    }
    if (rc) return rc;
    /* the prefill's conv caches move on only once the recurrence succeeded (a failed call leaves
     * them as they were; the decode step's conv_step moved them already) */
    if (states && !decode) {
        LTRY(be->conv_hist_update(be, B, T, Dk, W, qp, states + st_conv_q(c), SS));
        LTRY(be->conv_hist_update(be, B, T, Dk, W, kp, states + st_conv_k(c), SS));
        LTRY(be->conv_hist_update(be, B, T, Dv, W, vp, states + st_conv_v(c), SS));
    }

    /* output gate a = (x Wg0ᵀ) Wg1ᵀ + bg;  z = RMSNorm(o)·wn ⊙ silu(a) per value head;  y = z Woᵀ */
    if (!g1_early) LTRY(be->linear_fwd(be, N, d, R, x, PA(&lp, P_G0), NULL, g1, GDN2_DT_ACT, 0));
    if (decode && be->linear_rmsnorm_swish_fwd) { /* the step keeps no gate: the product and the norm in one */
        LTRY(be->linear_rmsnorm_swish_fwd(be, N, R, Dv, g1, PA(&lp, P_G1), PP(&lp, P_G1B), o, PP(&lp, P_ON), V,
                                          c->norm_eps, z));
    } else {
        LTRY(be->linear_fwd(be, N, R, Dv, g1, PA(&lp, P_G1), PP(&lp, P_G1B), ga, GDN2_DT_ACT, 0));
        LTRY(be->rmsnorm_swish_fwd(be, N * HV, V, o, ga, PP(&lp, P_ON), c->norm_eps, z));
    }
    LTRY(be->linear_fwd(be, N, Dv, d, z, PA(&lp, P_O), NULL, y, GDN2_DT_ACT, 0));
    return GDN2_OK;
}

int gdn2_layer_fwd_be(gdn2_backend *be, const gdn2_layer_cfg *c, const float *params, const void *params_act,
                      const void *x, int64_t B, int64_t T, void *y, void *acts, float *states, void *scratch) {
    int rc = check_call("gdn2_layer_forward", c, params, x, B, T, y);
    if (rc) return rc;
    if (!acts || !scratch) return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_forward: %s is NULL", !acts ? "acts" : "scratch");
    if (B == 0 || T == 0) return GDN2_OK;
    return forward_impl(be, c, params, params_act, x, B, T, y, acts, states, 0, NULL, scratch);
}

int gdn2_layer_forward(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B, int64_t T,
                       float *y, float *acts, float *states, int n_threads) {
    int rc = check_call("gdn2_layer_forward", c, params, x, B, T, y);
    if (rc) return rc;
    if (B == 0 || T == 0) return GDN2_OK;
    gdn2_backend be;
    gdn2_backend_cpu_init(&be, n_threads);
    void *A = acts;
    if (!A) {
        A = gdn2_malloc(gdn2_layer_act_bytes(&be, c, B, T) + 4, "gdn2 layer activations");
        if (!A) return GDN2_ERR_NOMEM;
    }
    void *scr = gdn2_malloc(gdn2_layer_scratch_bytes(&be, c, B, T, 0, states != NULL) + 4, "gdn2 layer forward scratch");
    rc = scr ? forward_impl(&be, c, params, params, x, B, T, y, A, states, 0, NULL, scr) : GDN2_ERR_NOMEM;
    free(scr);
    if (A != acts) free(A);
    return rc;
}

size_t gdn2_layer_step_bytes(const gdn2_backend *be, const gdn2_layer_cfg *c, int64_t n) {
    /* the step keeps no copy of the initial states: the activations stop where they would start */
    const size_t a = act_offsets(be, c, n, 1).st, al = be->on_device ? 256 : 16;
    return (a + al - 1) / al * al + gdn2_layer_scratch_bytes(be, c, n, 1, 0, 0);
}

int gdn2_layer_step(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t n, float *states,
                    float *y, int n_threads) {
    int rc = check_call("gdn2_layer_step", c, params, x, n, 1, y);
    if (rc) return rc;
    if (!states) return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_step: states is NULL");
    if (n == 0) return GDN2_OK;
    gdn2_backend be;
    gdn2_backend_cpu_init(&be, n_threads);
    void *scr = gdn2_malloc(gdn2_layer_step_bytes(&be, c, n) + 4, "gdn2 layer step scratch");
    rc = scr ? gdn2_layer_step_be(&be, c, params, params, x, n, states, NULL, y, scr) : GDN2_ERR_NOMEM;
    free(scr);
    return rc;
}

int gdn2_layer_step_be(gdn2_backend *be, const gdn2_layer_cfg *c, const float *params, const void *params_act,
                       const void *x, int64_t n, float *states, const int32_t *slots, void *y, void *scratch) {
    int rc = check_call("gdn2_layer_step", c, params, x, n, 1, y);
    if (rc) return rc;
    if (!states || !scratch) return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_step: %s is NULL", !states ? "states" : "scratch");
    if (n == 0) return GDN2_OK;
    const size_t a = act_offsets(be, c, n, 1).st, al = be->on_device ? 256 : 16;
    return forward_impl(be, c, params, params_act, x, n, 1, y, scratch, states, 1, slots,
                        AT(scratch, (a + al - 1) / al * al));
}

/* ------------------------------------------------------------------------------------------ */
/* backward                                                                                   */
/* ------------------------------------------------------------------------------------------ */
int gdn2_layer_bwd_be(gdn2_backend *be, const gdn2_layer_cfg *c, const float *params, const void *params_act,
                      const void *x, int64_t B, int64_t T, const void *acts, const void *dy, void *dx, float *dparams,
                      int dw_acc, void *scratch) {
    int rc = check_call("gdn2_layer_backward", c, params, x, B, T, dx);
    if (rc) return rc;
    if (!acts || !dy || !dparams || !scratch)
        return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_backward: %s is NULL",
                          !acts ? "acts" : !dy ? "dy" : !dparams ? "dparams" : "scratch");
    if (B == 0 || T == 0) return GDN2_OK;
    const int64_t d = c->hidden, H = c->H, HV = c->HV, K = c->K, V = c->V, W = c->conv_size, R = V;
    const int64_t N = B * T, Dk = H * K, Dv = HV * V, m = c->mixer;
    const size_t SS = gdn2_layer_state_size(c), KVs = (size_t)(HV * K * V);
    const float cb = c->allow_neg_eigval ? 2.0f : 1.0f;
    lparams lp = {params, params_act, {0}, be->act_bytes};
    layout(c, lp.off);
    float *dP[P_COUNT];
    for (int p = 0; p < P_COUNT; p++) dP[p] = lp.off[p] == (size_t)-1 ? NULL : dparams + lp.off[p];
    const act_layout L = act_offsets(be, c, B, T);
    const scr_layout S = scr_offsets(be, c, B, T, 1, 0);
    void *A = (void *)acts;
    const void *qp = AT(A, L.qp), *kp = AT(A, L.kp), *vp = AT(A, L.vp), *f1 = AT(A, L.f1), *f = AT(A, L.f);
    const void *sb = AT(A, L.sb), *sw = AT(A, L.sw), *o = AT(A, L.o), *g1 = AT(A, L.g1), *ga = AT(A, L.a);
    const void *q = AT(A, L.q), *k = AT(A, L.k), *v = AT(A, L.v);
    const float *g = AT(A, L.g), *st0 = AT(A, L.st);
    void *bs = AT(scratch, S.b), *ws = AT(scratch, S.w);
    const void *b = bs, *w = ws;
    void *dq = AT(scratch, S.dq), *dk = AT(scratch, S.dk), *dv = AT(scratch, S.dv), *db = AT(scratch, S.db);
    void *dw = AT(scratch, S.dw), *zd = AT(scratch, S.zd), *dga = AT(scratch, S.dga), *dg1 = AT(scratch, S.dg1);
    void *dpre = AT(scratch, S.dpre), *df = AT(scratch, S.df), *dpw = AT(scratch, S.dpw);
    float *dg = AT(scratch, S.dg), *h0 = AT(scratch, S.bh0);
    const float *hq = st0 + st_conv_q(c), *hk = st0 + st_conv_k(c), *hv = st0 + st_conv_v(c);

    /* y = z Woᵀ:  dWo += dyᵀ z;  dz = dy Wo   (z recomputed from o and a) */
    LTRY(be->rmsnorm_swish_fwd(be, N * HV, V, o, ga, PP(&lp, P_ON), c->norm_eps, zd));
    LTRY(be->linear_bwd(be, N, Dv, d, zd, PA(&lp, P_O), dy, dpre, 0, dP[P_O], dw_acc, NULL));
    /* gated RMSNorm: do (into zd), da, dwn */
    LTRY(be->rmsnorm_swish_bwd(be, N * HV, V, o, ga, PP(&lp, P_ON), c->norm_eps, dpre, zd, dga, dP[P_ON]));
    /* a = g1 Wg1ᵀ + bg, g1 = x Wg0ᵀ:  dWg1 += daᵀ g1, dbg += Σ da, dg1 = da Wg1; dWg0 += dg1ᵀ x, dx = dg1 Wg0 */
    LTRY(be->linear_bwd(be, N, R, Dv, g1, PA(&lp, P_G1), dga, dg1, 0, dP[P_G1], dw_acc, dP[P_G1B]));
    LTRY(be->linear_bwd(be, N, d, R, x, PA(&lp, P_G0), dg1, dx, 0, dP[P_G0], dw_acc, NULL));

    /* rebuild b, w (q, k, v, g are saved) and run the recurrence backward */
    if (gates_alias(c)) b = sb, w = sw;
    else LTRY(be->gates_fwd(be, (int)m, N, H, HV, K, V, cb, f, sb, sw, PP(&lp, P_ALOG), PP(&lp, P_DT), NULL, bs, ws));
    for (int64_t i = 0; i < B; i++) LTRY(be->copy(be, h0 + i * KVs, st0 + i * SS + st_S(c), KVs * sizeof(float)));
    {
        gdn2_dims dm = {B, T, H, HV, K, V};
        gdn2_opts op = rec_opts(be);
        /* keep mode: what the forward left in the reserve instead of the recomputation */
        void *rsv = L.rsv_bytes ? AT(A, L.rsv) : NULL;
        LTRY(be->gdn2_bwd(be, c->kernel, &dm, &op, q, k, v, g, b, w, h0, zd, dq, dk, dv, dg, db, dw, rsv));
    }
    /* gates: df, the erase/write projections' pre-activation grads, dA_log, ddt */
    LTRY(be->gates_bwd(be, (int)m, N, H, HV, K, V, cb, f, sb, sw, g, PP(&lp, P_ALOG), PP(&lp, P_DT), dg, db, dw, df,
                      dpre, dpw, dP[P_ALOG], dP[P_DT]));
    if (m == GDN2_MIXER_GDN) {
        /* f = x Waᵀ (df is [N,H]) */
        LTRY(be->linear_bwd(be, N, d, H, x, PA(&lp, P_A), df, dx, 1, dP[P_A], dw_acc, NULL));
    } else {
        /* f = f1 Wf1ᵀ, f1 = x Wf0ᵀ */
        LTRY(be->linear_bwd(be, N, R, Dk, f1, PA(&lp, P_F1), df, dg1, 0, dP[P_F1], dw_acc, NULL));
        LTRY(be->linear_bwd(be, N, d, R, x, PA(&lp, P_F0), dg1, dx, 1, dP[P_F0], dw_acc, NULL));
    }
    if (m == GDN2_MIXER_GDN2) {
        LTRY(be->linear_bwd(be, N, d, Dk, x, PA(&lp, P_B), dpre, dx, 1, dP[P_B], dw_acc, NULL));
        LTRY(be->linear_bwd(be, N, d, Dv, x, PA(&lp, P_W), dpw, dx, 1, dP[P_W], dw_acc, NULL));
    } else {
        LTRY(be->linear_bwd(be, N, d, H, x, PA(&lp, P_B), dpre, dx, 1, dP[P_B], dw_acc, NULL));
    }
    /* short convs + SiLU, then the projections: dqp = conv_vjp(dq); dWq += dqpᵀ x; dx += dqp Wq */
    LTRY(be->conv_silu_bwd(be, B, T, Dk, W, qp, hq, SS, PP(&lp, P_QC), dq, dpre, dP[P_QC]));
    LTRY(be->linear_bwd(be, N, d, Dk, x, PA(&lp, P_Q), dpre, dx, 1, dP[P_Q], dw_acc, NULL));
    LTRY(be->conv_silu_bwd(be, B, T, Dk, W, kp, hk, SS, PP(&lp, P_KC), dk, dpre, dP[P_KC]));
    LTRY(be->linear_bwd(be, N, d, Dk, x, PA(&lp, P_K), dpre, dx, 1, dP[P_K], dw_acc, NULL));
    LTRY(be->conv_silu_bwd(be, B, T, Dv, W, vp, hv, SS, PP(&lp, P_VC), dv, dpre, dP[P_VC]));
    LTRY(be->linear_bwd(be, N, d, Dv, x, PA(&lp, P_V), dpre, dx, 1, dP[P_V], dw_acc, NULL));
    return GDN2_OK;
}
#undef LTRY

int gdn2_layer_backward(const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B, int64_t T,
                        const float *acts, const float *dy, float *dx, float *dparams, int n_threads) {
    int rc = check_call("gdn2_layer_backward", c, params, x, B, T, dx);
    if (rc) return rc;
    if (!acts || !dy || !dparams)
        return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_backward: %s is NULL", !acts ? "acts" : !dy ? "dy" : "dparams");
    if (B == 0 || T == 0) return GDN2_OK;
    gdn2_backend be;
    gdn2_backend_cpu_init(&be, n_threads);
    void *scr = gdn2_malloc(gdn2_layer_scratch_bytes(&be, c, B, T, 1, 0) + 4, "gdn2 layer backward scratch");
    if (!scr) return GDN2_ERR_NOMEM;
    rc = gdn2_layer_bwd_be(&be, c, params, params, x, B, T, acts, dy, dx, dparams, 1, scr);
    free(scr);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* one layer on a device, host tensors in and out                                             */
/* ------------------------------------------------------------------------------------------ */
int gdn2_layer_run(const char *device, const gdn2_layer_cfg *c, const float *params, const float *x, int64_t B,
                   int64_t T, float *y, const float *dy, float *dx, float *dparams, int n_threads) {
    int rc = check_call("gdn2_layer_run", c, params, x, B, T, y);
    if (rc) return rc;
    if (dy && (!dx || !dparams))
        return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_run: dy given but %s is NULL", !dx ? "dx" : "dparams");
    if (B == 0 || T == 0) return GDN2_OK;
    gdn2_backend be;
    if ((rc = gdn2_backend_init(&be, device, n_threads))) return rc;
    const size_t np = gdn2_layer_param_count(c), nx = (size_t)(B * T * c->hidden);
    float *dpar = NULL, *xf = NULL, *dgr = NULL;
    void *pact = NULL, *xa = NULL, *ya = NULL, *acts = NULL, *scr = NULL, *dya = NULL, *dxa = NULL;
    const size_t sb = gdn2_layer_scratch_bytes(&be, c, B, T, 0, 0), sbb = gdn2_layer_scratch_bytes(&be, c, B, T, 1, 0);
#define ALLOC(p, bytes, what) \
    if (!rc && !((p) = be.alloc(&be, (bytes), (what)))) rc = GDN2_ERR_NOMEM
    ALLOC(dpar, np * sizeof(float), "layer weights");
    ALLOC(pact, gdn2_be_bytes(&be, np, GDN2_DT_ACT), "layer weights (matmul copy)");
    ALLOC(xf, nx * sizeof(float), "layer input");
    ALLOC(xa, gdn2_be_bytes(&be, nx, GDN2_DT_ACT), "layer input");
    ALLOC(ya, gdn2_be_bytes(&be, nx, GDN2_DT_ACT), "layer output");
    ALLOC(acts, gdn2_layer_act_bytes(&be, c, B, T), "layer activations");
    ALLOC(scr, sb > sbb ? sb : sbb, "layer scratch");
    if (dy) {
        ALLOC(dgr, np * sizeof(float), "layer gradients");
        ALLOC(dya, gdn2_be_bytes(&be, nx, GDN2_DT_ACT), "layer output gradient");
        ALLOC(dxa, gdn2_be_bytes(&be, nx, GDN2_DT_ACT), "layer input gradient");
    }
#undef ALLOC
    if (!rc) rc = be.upload(&be, dpar, params, np * sizeof(float));
    if (!rc) rc = be.cast(&be, np, dpar, GDN2_DT_F32, pact, GDN2_DT_ACT);
    if (!rc) rc = be.upload(&be, xf, x, nx * sizeof(float));
    if (!rc) rc = be.cast(&be, nx, xf, GDN2_DT_F32, xa, GDN2_DT_ACT);
    if (!rc) rc = forward_impl(&be, c, dpar, pact, xa, B, T, ya, acts, NULL, 0, NULL, scr);
    /* y back to fp32 on the device (xf is free now), then to the host */
    if (!rc) rc = be.cast(&be, nx, ya, GDN2_DT_ACT, xf, GDN2_DT_F32);
    if (!rc) rc = be.download(&be, y, xf, nx * sizeof(float));
    if (!rc && dy) {
        rc = be.upload(&be, xf, dy, nx * sizeof(float));
        if (!rc) rc = be.cast(&be, nx, xf, GDN2_DT_F32, dya, GDN2_DT_ACT);
        if (!rc) rc = gdn2_layer_bwd_be(&be, c, dpar, pact, xa, B, T, acts, dya, dxa, dgr, 1, scr);
        if (!rc) rc = be.cast(&be, nx, dxa, GDN2_DT_ACT, xf, GDN2_DT_F32);
        if (!rc) rc = be.download(&be, dx, xf, nx * sizeof(float));
        if (!rc) {
            /* dparams += the device's gradients */
            float *h = gdn2_malloc(np * sizeof(float) + 4, "layer gradients (host)");
            if (!h) rc = GDN2_ERR_NOMEM;
            if (!rc) rc = be.download(&be, h, dgr, np * sizeof(float));
            if (!rc)
                for (size_t i = 0; i < np; i++) dparams[i] += h[i];
            free(h);
        }
    }
    if (!rc) rc = be.sync(&be);
    void *bufs[] = {dpar, pact, xf, xa, ya, acts, scr, dgr, dya, dxa};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be.release(&be, bufs[i]);
    be.destroy(&be);
    return rc;
}
