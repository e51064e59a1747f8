/* The lit_gpt GPT (docs/MODEL.md) on the CPU: embedding, pre-norm blocks, ln_f, untied lm_head, mean
 * cross-entropy; forward, backward, and constant-memory generation (prefill + step).
 *
 *   res_0 = wte[tokens]
 *   mid_l = res_l + mixer_l(norm_1(res_l))          (mixer: GDN-2/KDA/GDN layer, SWA or full attention)
 *   res_{l+1} = mid_l + w3(silu(w1 n) * w2 n),  n = norm_2(mid_l)
 *   logits = lm_head(ln_f(res_L));  loss = mean over targets != -100 of CE(logits, target)
 *
 * Activations for the backward are carved out of one buffer sized from (B, T), as llm.c does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util/internal.h"

struct gdn2_model_acts {
    int64_t B, T;
    size_t size;
    float *buf;
    float **res, **n1, **r1, **mix, **mid, **n2, **r2, **mlp; /* per layer (res has n_layer+1)  */
    float *nf, *rf;
    int32_t *tokens, *targets;
    /* lm_head rows: all B*T, or only those with a target */
    int64_t n_rows, *rows;
    float *logits; /* [n_rows, Vp] */
    size_t logits_cap;
    int64_t n_valid;
    int trained; /* 1 after a train forward (backward allowed) */
};

static size_t mixer_act_size(const gdn2_model_cfg *c, int l, int64_t B, int64_t T) {
    if (c->kind[l] >= GDN2_LAYER_SWA) {
        gdn2_attn_cfg a = gdn2_attn_cfg_of(c, c->kind[l]);
        return gdn2_attn_act_size(&a, B, T);
    }
    gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, l);
    return gdn2_layer_act_size(&lc, B, T);
}

static void acts_free(struct gdn2_model_acts *a) {
    if (!a) return;
    free(a->buf), free(a->res), free(a->tokens), free(a->targets), free(a->rows), free(a->logits);
    free(a);
}

/* (re)size the activation buffer for (B, T) */
static int acts_ensure(gdn2_model *m, int64_t B, int64_t T) {
    struct gdn2_model_acts *a = m->acts;
    const gdn2_model_cfg *c = &m->cfg;
    if (a && a->B == B && a->T == T) return GDN2_OK;
    acts_free(a);
    m->acts = a = calloc(1, sizeof *a);
    if (!a) return gdn2_error(GDN2_ERR_NOMEM, "out of memory for model activations");
    const int64_t L = c->n_layer, d = c->n_embd, BT = B * T, I = c->intermediate_size;
    size_t tot = (size_t)(L + 1) * BT * d + (size_t)BT * d + BT; /* res, nf, rf */
    for (int l = 0; l < L; l++)
        tot += (size_t)BT * d * 3 + 2 * BT + mixer_act_size(c, l, B, T) + gdn2_mlp_act_size(BT, I);
    a->B = B, a->T = T, a->size = tot;
    a->buf = gdn2_malloc(tot * sizeof(float), "model activations");
    a->res = calloc((size_t)8 * L + 1, sizeof(float *));
    a->tokens = gdn2_malloc((size_t)BT * sizeof(int32_t), "tokens");
    a->targets = gdn2_malloc((size_t)BT * sizeof(int32_t), "targets");
    a->rows = gdn2_malloc((size_t)BT * sizeof(int64_t), "lm_head rows");
    if (!a->buf || !a->res || !a->tokens || !a->targets || !a->rows) {
        acts_free(a);
        m->acts = NULL;
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for model activations (%zu floats)", tot);
    }
    a->n1 = a->res + L + 1, a->r1 = a->n1 + L, a->mix = a->r1 + L, a->mid = a->mix + L;
    a->n2 = a->mid + L, a->r2 = a->n2 + L, a->mlp = a->r2 + L;
    float *p = a->buf;
    for (int l = 0; l <= L; l++) a->res[l] = p, p += BT * d;
    for (int l = 0; l < L; l++) {
        a->n1[l] = p, p += BT * d;
        a->r1[l] = p, p += BT;
        a->mix[l] = p, p += mixer_act_size(c, l, B, T);
        a->mid[l] = p, p += BT * d;
        a->n2[l] = p, p += BT * d;
        a->r2[l] = p, p += BT;
        a->mlp[l] = p, p += gdn2_mlp_act_size(BT, I);
    }
    a->nf = p, p += BT * d;
    a->rf = p, p += BT;
    return GDN2_OK;
}

int gdn2_model_create(const gdn2_model_cfg *cin, gdn2_model **out) {
    *out = NULL;
    gdn2_model_cfg c = *cin;
    int st = gdn2_model_check(&c);
    if (st) return st;
    for (int64_t l = 0; l < c.n_layer; l++)
        if (c.kind[l] < GDN2_LAYER_SWA) {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(&c, (int)l);
            if ((st = gdn2_layer_check(&lc))) return st;
        }
    gdn2_model *m = calloc(1, sizeof *m);
    if (!m) return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the model");
    m->cfg = c;
    m->n_tensors = gdn2_model_params(&c, NULL, 0);
    m->tensors = calloc((size_t)m->n_tensors, sizeof *m->tensors);
    m->layer_off = calloc((size_t)c.n_layer, sizeof(size_t));
    if (!m->tensors || !m->layer_off) {
        gdn2_model_free(m);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the parameter table");
    }
    gdn2_model_params(&c, m->tensors, m->n_tensors);
    m->n_params = m->tensors[m->n_tensors - 1].offset + m->tensors[m->n_tensors - 1].numel;
    /* each mixer block starts right after its norm_1 */
    char nm[64];
    for (int64_t l = 0; l < c.n_layer; l++) {
        snprintf(nm, sizeof nm, "transformer.h.%lld.norm_1.weight", (long long)l);
        const gdn2_model_param *p = gdn2_model_find(m, nm);
        m->layer_off[l] = p->offset + p->numel;
    }
    m->params = gdn2_calloc(m->n_params, sizeof(float), "model parameters");
    if (!m->params) {
        gdn2_model_free(m);
        return GDN2_ERR_NOMEM;
    }
    *out = m;
    return GDN2_OK;
}

void gdn2_model_free(gdn2_model *m) {
    if (!m) return;
    free(m->tensors), free(m->layer_off), free(m->params), free(m->grads);
    acts_free(m->acts);
    free(m);
}

const gdn2_model_param *gdn2_model_find(const gdn2_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

static float *P(const gdn2_model *m, float *base, const char *fmt, long long l) {
    char nm[128];
    snprintf(nm, sizeof nm, fmt, l);
    const gdn2_model_param *p = gdn2_model_find(m, nm);
    return p ? base + p->offset : NULL;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

void gdn2_model_init(gdn2_model *m, uint64_t seed) {
    const gdn2_model_cfg *c = &m->cfg;
    for (int64_t l = 0; l < c->n_layer; l++)
        if (c->kind[l] < GDN2_LAYER_SWA) {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
            gdn2_layer_init(&lc, m->params + m->layer_off[l], seed * 1000003ULL + 7919ULL * (uint64_t)(l + 1));
        }
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        float *w = m->params + p->offset;
        gdn2_rng r = {seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1))};
        int is_mixer = strstr(p->name, ".attn.") && !ends_with(p->name, ".attn.attn.weight") &&
                       !ends_with(p->name, ".attn.proj.weight");
        if (is_mixer) continue; /* recurrent layers: their own init above */
        if (!strcmp(p->name, "transformer.wte.weight")) {
            /* N(0, 0.02), Box-Muller */
            for (size_t j = 0; j < p->numel; j++) {
                double u1 = gdn2_rng_uniform(&r), u2 = gdn2_rng_uniform(&r);
                if (u1 < 1e-300) u1 = 1e-300;
                w[j] = (float)(0.02 * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
            }
        } else if (p->ndim == 1) {
            for (size_t j = 0; j < p->numel; j++) w[j] = 1.0f; /* RMSNorm weights */
        } else {
            /* kaiming-uniform(a=sqrt 5) = U(+-1/sqrt(fan_in)); w3 and attn proj / sqrt(2 n_layer) */
            double bound = 1.0 / sqrt((double)p->shape[1]);
            if (ends_with(p->name, "swiglu.w3.weight") || ends_with(p->name, ".attn.proj.weight"))
                bound /= sqrt(2.0 * (double)c->n_layer);
            for (size_t j = 0; j < p->numel; j++) w[j] = (float)((2.0 * gdn2_rng_uniform(&r) - 1.0) * bound);
        }
    }
}

int gdn2_model_zero_grad(gdn2_model *m) {
    if (!m->grads) {
        m->grads = gdn2_calloc(m->n_params, sizeof(float), "model gradients");
        return m->grads ? GDN2_OK : GDN2_ERR_NOMEM;
    }
    memset(m->grads, 0, m->n_params * sizeof(float));
    return GDN2_OK;
}

/* ---- forward ------------------------------------------------------------------------------ */
/* states: generation state (prefill from position 0) or NULL. last_logits: [B,Vp] of position T-1. */
static int forward_impl(gdn2_model *m, const int32_t *tokens, const int32_t *targets, int64_t B, int64_t T,
                        float *logits_out, float *loss, int train, gdn2_model_state *s, float *last_logits) {
    const gdn2_model_cfg *c = &m->cfg;
    const int64_t L = c->n_layer, d = c->n_embd, BT = B * T, I = c->intermediate_size, Vp = c->padded_vocab;
    const int nt = m->n_threads;
    if (B < 1 || T < 1) return gdn2_error(GDN2_ERR_ARG, "model forward: B=%lld, T=%lld must be >= 1", (long long)B,
                                          (long long)T);
    for (int64_t i = 0; i < BT; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return gdn2_error(GDN2_ERR_ARG, "model forward: tokens[%lld] = %d outside [0, vocab_size %lld)",
                              (long long)i, tokens[i], (long long)c->vocab_size);
    if (targets)
        for (int64_t i = 0; i < BT; i++)
            if (targets[i] != GDN2_IGNORE && (targets[i] < 0 || targets[i] >= c->vocab_size))
                return gdn2_error(GDN2_ERR_ARG, "model forward: targets[%lld] = %d outside [0, %lld) and not -100",
                                  (long long)i, targets[i], (long long)c->vocab_size);
    if (train && !targets) return gdn2_error(GDN2_ERR_ARG, "model forward: training needs targets");
    int st = acts_ensure(m, B, T);
    if (st) return st;
    struct gdn2_model_acts *a = m->acts;
    a->trained = 0;
    memcpy(a->tokens, tokens, (size_t)BT * sizeof(int32_t));
    if (targets) memcpy(a->targets, targets, (size_t)BT * sizeof(int32_t));
    else
        for (int64_t i = 0; i < BT; i++) a->targets[i] = GDN2_IGNORE;
    float *tmp = gdn2_malloc((size_t)BT * d * sizeof(float), "mixer output");
    if (!tmp) return GDN2_ERR_NOMEM;

    const float *wte = P(m, m->params, "transformer.wte.weight", 0);
    for (int64_t i = 0; i < BT; i++) memcpy(a->res[0] + i * d, wte + (size_t)tokens[i] * d, d * sizeof(float));
    for (int64_t l = 0; l < L && !st; l++) {
        gdn2_rmsnorm_fwd(BT, d, a->res[l], P(m, m->params, "transformer.h.%lld.norm_1.weight", l), c->norm_eps,
                             a->n1[l], a->r1[l], nt);
        if (c->kind[l] >= GDN2_LAYER_SWA) {
            gdn2_attn_cfg ac = gdn2_attn_cfg_of(c, c->kind[l]);
            st = gdn2_attn_forward(&ac, P(m, m->params, "transformer.h.%lld.attn.attn.weight", l),
                                   P(m, m->params, "transformer.h.%lld.attn.proj.weight", l), a->n1[l], B, T, tmp,
                                   a->mix[l], nt);
            if (!st && s) st = gdn2_attn_fill_cache(&ac, a->mix[l], B, T, s->max_len, s->data + s->layer_off[l],
                                                    s->layer_size[l]);
        } else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
            st = gdn2_layer_forward(&lc, m->params + m->layer_off[l], a->n1[l], B, T, tmp, train ? a->mix[l] : NULL,
                                    s ? s->data + s->layer_off[l] : NULL, nt);
        }
        if (st) break;
        for (int64_t i = 0; i < BT * d; i++) a->mid[l][i] = a->res[l][i] + tmp[i];
        gdn2_rmsnorm_fwd(BT, d, a->mid[l], P(m, m->params, "transformer.h.%lld.norm_2.weight", l), c->norm_eps,
                             a->n2[l], a->r2[l], nt);
        gdn2_mlp_forward(BT, d, I, P(m, m->params, "transformer.h.%lld.mlp.swiglu.w1.weight", l),
                         P(m, m->params, "transformer.h.%lld.mlp.swiglu.w2.weight", l),
                         P(m, m->params, "transformer.h.%lld.mlp.swiglu.w3.weight", l), a->n2[l], tmp, a->mlp[l], nt);
        for (int64_t i = 0; i < BT * d; i++) a->res[l + 1][i] = a->mid[l][i] + tmp[i];
    }
    free(tmp);
    if (st) return st;
    gdn2_rmsnorm_fwd(BT, d, a->res[L], P(m, m->params, "transformer.ln_f.weight", 0), c->norm_eps, a->nf, a->rf,
                         nt);
    /* lm_head rows: everything when logits are wanted; the last position for generation; else only
     * rows that carry a target (MQAR has 4 of 64) */
    a->n_rows = 0;
    for (int64_t i = 0; i < BT; i++) {
        int keep = logits_out ? 1 : last_logits ? (i % T == T - 1) : a->targets[i] != GDN2_IGNORE;
        if (keep) a->rows[a->n_rows++] = i;
    }
    size_t need = (size_t)(a->n_rows ? a->n_rows : 1) * Vp;
    if (a->logits_cap < need) {
        free(a->logits);
        a->logits = gdn2_malloc(need * sizeof(float), "logits");
        a->logits_cap = a->logits ? need : 0;
        if (!a->logits) return GDN2_ERR_NOMEM;
    }
    float *nr = a->nf;
    if (a->n_rows != BT) {
        nr = gdn2_malloc((size_t)(a->n_rows ? a->n_rows : 1) * d * sizeof(float), "lm_head input rows");
        if (!nr) return GDN2_ERR_NOMEM;
        for (int64_t r = 0; r < a->n_rows; r++) memcpy(nr + r * d, a->nf + a->rows[r] * d, d * sizeof(float));
    }
    if (a->n_rows)
        gdn2_sgemm(0, 1, (int)a->n_rows, (int)Vp, (int)d, 1.0f, nr, (int)d,
                   P(m, m->params, "lm_head.weight", 0), (int)d, 0.0f, a->logits, (int)Vp);
    if (nr != a->nf) free(nr);
    if (logits_out) memcpy(logits_out, a->logits, (size_t)BT * Vp * sizeof(float));
    if (last_logits)
        for (int64_t r = 0; r < a->n_rows; r++)
            memcpy(last_logits + r * Vp, a->logits + r * Vp, Vp * sizeof(float));
    a->n_valid = 0;
    if (loss) *loss = 0.0f;
    if (targets && (loss || train)) {
        int32_t *rt = gdn2_malloc((size_t)(a->n_rows ? a->n_rows : 1) * sizeof(int32_t), "row targets");
        if (!rt) return GDN2_ERR_NOMEM;
        for (int64_t r = 0; r < a->n_rows; r++) rt[r] = a->targets[a->rows[r]];
        double tot = gdn2_mdl_xent(a->n_rows, Vp, a->logits, rt, 0.0f, 0, &a->n_valid, nt);
        free(rt);
        if (loss) *loss = a->n_valid ? (float)(tot / (double)a->n_valid) : 0.0f;
    }
    a->trained = train;
    return GDN2_OK;
}

int gdn2_model_forward(gdn2_model *m, const int32_t *tokens, const int32_t *targets, int64_t B, int64_t T,
                       float *logits, float *loss, int train) {
    return forward_impl(m, tokens, targets, B, T, logits, loss, train, NULL, NULL);
}

/* ---- backward ----------------------------------------------------------------------------- */
int gdn2_model_backward(gdn2_model *m, float scale) {
    struct gdn2_model_acts *a = m->acts;
    if (!a || !a->trained) return gdn2_error(GDN2_ERR_ARG, "model backward: no training forward to differentiate");
    if (!m->grads && gdn2_model_zero_grad(m)) return GDN2_ERR_NOMEM;
    const gdn2_model_cfg *c = &m->cfg;
    const int64_t L = c->n_layer, d = c->n_embd, B = a->B, T = a->T, BT = B * T, I = c->intermediate_size,
                  Vp = c->padded_vocab;
    const int nt = m->n_threads;
    float *G = m->grads, *W = m->params;
    if (a->n_valid == 0) return GDN2_OK; /* nothing carries a loss */
    float *dres = gdn2_calloc((size_t)BT * d, sizeof(float), "d residual");
    float *dn = gdn2_malloc((size_t)BT * d * sizeof(float), "d norm");
    float *dtmp = gdn2_malloc((size_t)BT * d * sizeof(float), "d mixer input");
    float *scr = gdn2_malloc((size_t)2 * BT * I * sizeof(float), "mlp backward scratch");
    float *nr = gdn2_malloc((size_t)a->n_rows * d * sizeof(float), "lm_head rows");
    int32_t *rt = gdn2_malloc((size_t)a->n_rows * sizeof(int32_t), "row targets");
    int st = GDN2_OK;
    if (!dres || !dn || !dtmp || !scr || !nr || !rt) {
        st = GDN2_ERR_NOMEM;
        goto done;
    }
    /* dlogits = scale / n_valid * (softmax - onehot), in place of the saved logits */
    for (int64_t r = 0; r < a->n_rows; r++) rt[r] = a->targets[a->rows[r]];
    gdn2_mdl_xent(a->n_rows, Vp, a->logits, rt, scale / (float)a->n_valid, 1, NULL, nt);
    a->trained = 0; /* the logits are now gradients */
    for (int64_t r = 0; r < a->n_rows; r++) memcpy(nr + r * d, a->nf + a->rows[r] * d, d * sizeof(float));
    /* logits = nf W^T: dW_head += dlogits^T nf;  dnf = dlogits W_head (scattered back to rows) */
    gdn2_sgemm(1, 0, (int)Vp, (int)d, (int)a->n_rows, 1.0f, a->logits, (int)Vp, nr, (int)d, 1.0f,
               P(m, G, "lm_head.weight", 0), (int)d);
    gdn2_sgemm(0, 0, (int)a->n_rows, (int)d, (int)Vp, 1.0f, a->logits, (int)Vp, P(m, W, "lm_head.weight", 0), (int)d,
               0.0f, nr, (int)d);
    memset(dn, 0, (size_t)BT * d * sizeof(float));
    for (int64_t r = 0; r < a->n_rows; r++) memcpy(dn + a->rows[r] * d, nr + r * d, d * sizeof(float));
    gdn2_rmsnorm_bwd(BT, d, a->res[L], P(m, W, "transformer.ln_f.weight", 0), a->rf, dn, dres, 0,
                         P(m, G, "transformer.ln_f.weight", 0), nt);
    for (int64_t l = L - 1; l >= 0 && !st; l--) {
        /* res_{l+1} = mid + mlp(norm_2(mid)) */
        gdn2_mlp_backward(BT, d, I, P(m, W, "transformer.h.%lld.mlp.swiglu.w1.weight", l),
                          P(m, W, "transformer.h.%lld.mlp.swiglu.w2.weight", l),
                          P(m, W, "transformer.h.%lld.mlp.swiglu.w3.weight", l), a->n2[l], a->mlp[l], dres, dn,
                          P(m, G, "transformer.h.%lld.mlp.swiglu.w1.weight", l),
                          P(m, G, "transformer.h.%lld.mlp.swiglu.w2.weight", l),
                          P(m, G, "transformer.h.%lld.mlp.swiglu.w3.weight", l), scr, nt);
        gdn2_rmsnorm_bwd(BT, d, a->mid[l], P(m, W, "transformer.h.%lld.norm_2.weight", l), a->r2[l], dn, dres, 1,
                             P(m, G, "transformer.h.%lld.norm_2.weight", l), nt);
        /* mid = res_l + mixer(norm_1(res_l)) */
        if (c->kind[l] >= GDN2_LAYER_SWA) {
            gdn2_attn_cfg ac = gdn2_attn_cfg_of(c, c->kind[l]);
            st = gdn2_attn_backward(&ac, P(m, W, "transformer.h.%lld.attn.attn.weight", l),
                                    P(m, W, "transformer.h.%lld.attn.proj.weight", l), a->n1[l], B, T, a->mix[l], dres,
                                    dn, P(m, G, "transformer.h.%lld.attn.attn.weight", l),
                                    P(m, G, "transformer.h.%lld.attn.proj.weight", l), nt);
        } else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
            st = gdn2_layer_backward(&lc, W + m->layer_off[l], a->n1[l], B, T, a->mix[l], dres, dn,
                                     G + m->layer_off[l], nt);
        }
        if (st) break;
        gdn2_rmsnorm_bwd(BT, d, a->res[l], P(m, W, "transformer.h.%lld.norm_1.weight", l), a->r1[l], dn, dres, 1,
                             P(m, G, "transformer.h.%lld.norm_1.weight", l), nt);
    }
    if (!st) {
        float *gw = P(m, G, "transformer.wte.weight", 0);
        for (int64_t i = 0; i < BT; i++) { /* serial scatter-add: deterministic */
            float *g = gw + (size_t)a->tokens[i] * d;
            const float *s = dres + i * d;
            for (int64_t j = 0; j < d; j++) g[j] += s[j];
        }
    }
done:
    free(dres), free(dn), free(dtmp), free(scr), free(nr), free(rt);
    return st;
}

/* ---- generation --------------------------------------------------------------------------- */
static size_t layer_state_size(const gdn2_model_cfg *c, int l, int64_t max_len) {
    if (c->kind[l] >= GDN2_LAYER_SWA) {
        gdn2_attn_cfg a = gdn2_attn_cfg_of(c, c->kind[l]);
        return gdn2_attn_state_size(&a, max_len);
    }
    gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, l);
    return gdn2_layer_state_size(&lc);
}

size_t gdn2_model_state_floats(const gdn2_model_cfg *c, int64_t max_len) {
    size_t t = 0;
    for (int l = 0; l < c->n_layer; l++) t += layer_state_size(c, l, max_len);
    return t;
}

int gdn2_model_state_create(const gdn2_model *m, int64_t n, int64_t max_len, gdn2_model_state **out) {
    *out = NULL;
    const gdn2_model_cfg *c = &m->cfg;
    if (n < 1) return gdn2_error(GDN2_ERR_ARG, "generation state: n = %lld sequences must be >= 1", (long long)n);
    if (max_len < 1) max_len = c->block_size;
    gdn2_model_state *s = calloc(1, sizeof *s);
    if (!s) return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the generation state");
    s->n = n, s->max_len = max_len;
    s->layer_off = calloc((size_t)c->n_layer, sizeof(size_t));
    s->layer_size = calloc((size_t)c->n_layer, sizeof(size_t));
    size_t off = 0;
    for (int l = 0; s->layer_off && s->layer_size && l < c->n_layer; l++) {
        s->layer_size[l] = layer_state_size(c, l, max_len);
        s->layer_off[l] = off;
        off += s->layer_size[l] * (size_t)n;
    }
    s->per_seq = off / (size_t)n;
    s->data = s->layer_off && s->layer_size ? gdn2_calloc(off ? off : 1, sizeof(float), "generation state") : NULL;
    if (!s->data) {
        gdn2_model_state_free(s);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the generation state (%zu floats)", off);
    }
    *out = s;
    return GDN2_OK;
}

void gdn2_model_state_reset(gdn2_model_state *s) {
    memset(s->data, 0, s->per_seq * (size_t)s->n * sizeof(float));
    s->pos = 0;
}

void gdn2_model_state_free(gdn2_model_state *s) {
    if (!s) return;
    free(s->layer_off), free(s->layer_size), free(s->data);
    free(s);
}

int gdn2_model_step(gdn2_model *m, gdn2_model_state *s, const int32_t *tokens, float *logits) {
    const gdn2_model_cfg *c = &m->cfg;
    const int64_t n = s->n, d = c->n_embd, I = c->intermediate_size, Vp = c->padded_vocab;
    const int nt = m->n_threads;
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return gdn2_error(GDN2_ERR_ARG, "model step: tokens[%lld] = %d outside [0, vocab_size %lld)",
                              (long long)i, tokens[i], (long long)c->vocab_size);
    size_t need = (size_t)n * (4 * d + 3 * I);
    float *x = gdn2_malloc(need * sizeof(float), "step buffers");
    if (!x) return GDN2_ERR_NOMEM;
    float *h = x + n * d, *y = h + n * d, *mid = y + n * d, *mact = mid + n * d;
    const float *wte = P(m, m->params, "transformer.wte.weight", 0);
    int st = GDN2_OK;
    for (int64_t i = 0; i < n; i++) memcpy(x + i * d, wte + (size_t)tokens[i] * d, d * sizeof(float));
    for (int64_t l = 0; l < c->n_layer && !st; l++) {
        gdn2_rmsnorm_fwd(n, d, x, P(m, m->params, "transformer.h.%lld.norm_1.weight", l), c->norm_eps, h, NULL, nt);
        if (c->kind[l] >= GDN2_LAYER_SWA) {
            gdn2_attn_cfg ac = gdn2_attn_cfg_of(c, c->kind[l]);
            st = gdn2_attn_step(&ac, P(m, m->params, "transformer.h.%lld.attn.attn.weight", l),
                                P(m, m->params, "transformer.h.%lld.attn.proj.weight", l), h, n, s->pos, s->max_len,
                                s->data + s->layer_off[l], s->layer_size[l], y, nt);
        } else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
            st = gdn2_layer_step(&lc, m->params + m->layer_off[l], h, n, s->data + s->layer_off[l], y, nt);
        }
        if (st) break;
        for (int64_t i = 0; i < n * d; i++) mid[i] = x[i] + y[i];
        gdn2_rmsnorm_fwd(n, d, mid, P(m, m->params, "transformer.h.%lld.norm_2.weight", l), c->norm_eps, h, NULL,
                             nt);
        gdn2_mlp_forward(n, d, I, P(m, m->params, "transformer.h.%lld.mlp.swiglu.w1.weight", l),
                         P(m, m->params, "transformer.h.%lld.mlp.swiglu.w2.weight", l),
                         P(m, m->params, "transformer.h.%lld.mlp.swiglu.w3.weight", l), h, y, mact, nt);
        for (int64_t i = 0; i < n * d; i++) x[i] = mid[i] + y[i];
    }
    if (!st) {
        gdn2_rmsnorm_fwd(n, d, x, P(m, m->params, "transformer.ln_f.weight", 0), c->norm_eps, h, NULL, nt);
        gdn2_sgemm(0, 1, (int)n, (int)Vp, (int)d, 1.0f, h, (int)d, P(m, m->params, "lm_head.weight", 0), (int)d, 0.0f,
                   logits, (int)Vp);
        s->pos++;
    }
    free(x);
    return st;
}

int gdn2_model_prefill(gdn2_model *m, gdn2_model_state *s, const int32_t *tokens, int64_t T, float *logits) {
    if (T < 1) return gdn2_error(GDN2_ERR_ARG, "prefill: T = %lld must be >= 1", (long long)T);
    if (s->pos == 0) {
        /* one parallel forward from a fresh state: recurrent layers carry their states out, the
         * attention layers copy their last keys/values into the caches */
        int st = forward_impl(m, tokens, NULL, s->n, T, NULL, NULL, 0, s, logits);
        if (!st) s->pos = T;
        return st;
    }
    /* continuing a sequence: token by token (attention caches are positional) */
    int32_t *tok = gdn2_malloc((size_t)s->n * sizeof(int32_t), "prefill tokens");
    if (!tok) return GDN2_ERR_NOMEM;
    int st = GDN2_OK;
    for (int64_t t = 0; t < T && !st; t++) {
        for (int64_t i = 0; i < s->n; i++) tok[i] = tokens[i * T + t];
        st = gdn2_model_step(m, s, tok, logits);
    }
    free(tok);
    return st;
}
