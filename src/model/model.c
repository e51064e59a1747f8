/* The lit_gpt GPT (docs/MODEL.md) on the CPU: embedding, pre-norm blocks, ln_f, untied lm_head, mean
 * cross-entropy; forward, backward, and constant-memory generation (prefill + step).
 *
 *   res_0 = wte[tokens]
 *   mid_l = res_l + mixer_l(norm_1(res_l))          (mixer: GDN-2/KDA/GDN layer, SWA or full attention)
 *   res_{l+1} = mid_l + w3(silu(w1 n) * w2 n),  n = norm_2(mid_l)
 *   logits = lm_head(ln_f(res_L));  loss = mean over targets != -100 of CE(logits, target)
 *
 * Activations for the backward are carved out of one buffer sized from (B, T), as llm.c does. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "ops/check.h"
#include "util/internal.h"

struct gdn2_model_acts {
    int64_t B, T;
    int recompute;                   /* 1: one block's activations, shared by all layers (below)     */
    int keep;                        /* 1: recurrent layers keep their chunk reserve (keep_chunk)    */
    int dropped;                     /* the last forward applied dropout (its backward does too)     */
    int emb_dropped;                 /* ... and the embedding's (m->emb_dropout)                      */
    void *buf;                       /* backend memory: what the backward needs                     */
    size_t buf_bytes;
    void *scr;                       /* backend memory: scratch of one forward or backward          */
    size_t scr_bytes;
    size_t buf_cap, scr_cap, bt_cap; /* what buf, scr and the [BT] arrays hold: a smaller (B, T)
                                      * reuses them (no free and fresh allocation per prompt length) */
    float **res, **r1, **mid, **r2;  /* fp32 residual stream and norms' 1/rms (res has n_layer+1)  */
    void **n1, **mix, **n2, **mlp;   /* ACT norm outputs, the mixers' and MLPs' saved blocks         */
    void *nf;                        /* ACT ln_f output                                             */
    float *rf;
    int32_t *dtokens, *drt;          /* backend: tokens [BT], lm_head row targets [BT]             */
    float *dloss;                    /* backend: per-row loss [BT]                                   */
    int32_t *tokens, *targets, *rt;  /* HOST copies; rt: the targets of the lm_head rows            */
    int64_t n_rows, *rows;           /* HOST: lm_head rows (all B*T, or those with a target)        */
    float *loss_rows;                /* HOST [BT]                                                    */
    int64_t n_valid;
    int trained;                     /* 1 after a train forward (backward allowed)                   */
    int head_done;                   /* 1: that forward also ran lm_head's backward (forward_backward) */
};

/* bytes of the mixer's saved block of layer l (keep: with the recurrence's keep-mode reserve), and
 * of its forward/backward scratch */
static size_t mixer_bytes(const gdn2_backend *be, const gdn2_model_cfg *c, int l, int64_t B, int64_t T, int what,
                          int keep) {
    if (c->kind[l] >= GDN2_LAYER_SWA) {
        gdn2_attn_cfg a = gdn2_attn_cfg_of(c, c->kind[l]);
        return what == 0 ? gdn2_attn_act_bytes(be, &a, B, T) : gdn2_attn_scratch_bytes(be, &a, B, T, what == 2);
    }
    gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, l);
    lc.keep_chunk = keep;
    return what == 0 ? gdn2_layer_act_bytes(be, &lc, B, T) : gdn2_layer_scratch_bytes(be, &lc, B, T, what == 2, 1);
}

/* lm_head rows per pass: the fp32 logits of one pass stay under 256 MiB */
static int64_t head_chunk(const gdn2_model_cfg *c, int64_t n_rows) {
    int64_t hc = ((int64_t)1 << 26) / c->padded_vocab;
    if (hc < 1) hc = 1;
    return n_rows < hc ? (n_rows > 0 ? n_rows : 1) : hc;
}

static size_t al(const gdn2_backend *be, size_t o) {
    const size_t a = be->on_device ? 256 : 16;
    return (o + a - 1) / a * a;
}

/* scratch: [y ACT BT d | dres fp32 BT d | dres_act ACT BT d | dn ACT BT d] then the largest of the
 * mixers' and MLPs' scratch and the lm_head's (rows ACT [BT,d] | logits fp32 [hc,Vp] | dlogits ACT
 * [hc,Vp] | drows ACT [BT,d]) */
typedef struct {
    size_t y, dres, dres_act, dn, var, head_rows, head_logits, head_dlogits, head_drows, total;
} scr_layout;

static scr_layout scr_offsets(const gdn2_backend *be, const gdn2_model_cfg *c, int64_t B, int64_t T) {
    const size_t BT = (size_t)(B * T), d = (size_t)c->n_embd, Vp = (size_t)c->padded_vocab;
    const size_t hc = (size_t)head_chunk(c, (int64_t)BT);
    scr_layout S;
    size_t o = 0;
    S.y = o, o = al(be, o + gdn2_be_bytes(be, BT * d, GDN2_DT_ACT));
    S.dres = o, o = al(be, o + gdn2_be_bytes(be, BT * d, GDN2_DT_F32));
    S.dres_act = o, o = al(be, o + gdn2_be_bytes(be, BT * d, GDN2_DT_ACT));
    S.dn = o, o = al(be, o + gdn2_be_bytes(be, BT * d, GDN2_DT_ACT));
    S.var = o;
    size_t var = gdn2_mlp_scratch_bytes(be, B * T, c->intermediate_size);
    for (int l = 0; l < c->n_layer; l++)
        for (int w = 1; w <= 2; w++) {
            size_t b = mixer_bytes(be, c, l, B, T, w, 0);
            if (b > var) var = b;
        }
    size_t h = 0;
    S.head_rows = o + h, h = al(be, h + gdn2_be_bytes(be, BT * d, GDN2_DT_ACT));
    S.head_logits = o + h, h = al(be, h + gdn2_be_bytes(be, hc * Vp, GDN2_DT_F32));
    S.head_dlogits = o + h, h = al(be, h + gdn2_be_bytes(be, hc * Vp, GDN2_DT_ACT));
    S.head_drows = o + h, h = al(be, h + gdn2_be_bytes(be, BT * d, GDN2_DT_ACT));
    S.total = o + al(be, var > h ? var : h);
    return S;
}

#define AT(p, off) ((void *)((char *)(p) + (off)))

static void acts_free(gdn2_backend *be, struct gdn2_model_acts *a) {
    if (!a) return;
    if (be) {
        be->release(be, a->buf), be->release(be, a->scr), be->release(be, a->dtokens), be->release(be, a->drt);
        be->release(be, a->dloss);
    }
    free(a->res), free(a->tokens), free(a->targets), free(a->rt), free(a->rows), free(a->loss_rows);
    free(a);
}

/* lay the activation buffers out for (B, T): in the buffers held when they are large enough (the
 * offsets of a smaller shape fit in a larger one's bytes), else in new ones of exactly its size */
static int acts_ensure(gdn2_model *m, int64_t B, int64_t T) {
    struct gdn2_model_acts *a = m->acts;
    gdn2_backend *be = m->be;
    const gdn2_model_cfg *c = &m->cfg;
    const int rcp = m->recompute != 0, keep = m->keep_chunk != 0;
    if (a && a->B == B && a->T == T && a->recompute == rcp && a->keep == keep) return GDN2_OK;
    const int64_t L = c->n_layer, d = c->n_embd, BT = B * T, I = c->intermediate_size;
    /* saved: res[0..L], per layer n1 r1 mix mid n2 r2 mlp, then nf rf */
    size_t o = 0;
    size_t *off = calloc((size_t)(8 * L + 3), sizeof(size_t));
    if (!off) return gdn2_error(GDN2_ERR_NOMEM, "out of memory for model activations");
    size_t *po = off;
    for (int l = 0; l <= L; l++) *po++ = o, o = al(be, o + gdn2_be_bytes(be, (size_t)(BT * d), GDN2_DT_F32));
    /* recompute: every layer's block activations share one slot (sized for the largest mixer); the
     * backward re-runs block l from res[l] before differentiating it */
    size_t mixmax = 0;
    for (int l = 0; l < L; l++) {
        const size_t b = mixer_bytes(be, c, l, B, T, 0, keep);
        if (b > mixmax) mixmax = b;
    }
    for (int l = 0; l < L; l++) {
        if (rcp && l > 0) { /* the same offsets as layer 0 */
            for (int k = 0; k < 7; k++, po++) *po = po[-7];
            continue;
        }
        *po++ = o, o = al(be, o + gdn2_be_bytes(be, (size_t)(BT * d), GDN2_DT_ACT)); /* n1  */
        *po++ = o, o = al(be, o + gdn2_be_bytes(be, (size_t)BT, GDN2_DT_F32));       /* r1  */
        *po++ = o, o = al(be, o + (rcp ? mixmax : mixer_bytes(be, c, l, B, T, 0, keep))); /* mix */
        *po++ = o, o = al(be, o + gdn2_be_bytes(be, (size_t)(BT * d), GDN2_DT_F32)); /* mid */
        *po++ = o, o = al(be, o + gdn2_be_bytes(be, (size_t)(BT * d), GDN2_DT_ACT)); /* n2  */
        *po++ = o, o = al(be, o + gdn2_be_bytes(be, (size_t)BT, GDN2_DT_F32));       /* r2  */
        *po++ = o, o = al(be, o + gdn2_mlp_act_bytes(be, BT, I));                    /* mlp */
    }
    *po++ = o, o = al(be, o + gdn2_be_bytes(be, (size_t)(BT * d), GDN2_DT_ACT)); /* nf */
    *po++ = o, o = al(be, o + gdn2_be_bytes(be, (size_t)BT, GDN2_DT_F32));       /* rf */
    const size_t scr_need = scr_offsets(be, c, B, T).total;
    const int reuse = a && a->recompute == rcp && a->keep == keep && o <= a->buf_cap && scr_need <= a->scr_cap && (size_t)BT <= a->bt_cap;
    if (!reuse) {
        acts_free(be, a);
        m->acts = a = calloc(1, sizeof *a);
        if (!a) {
            free(off);
            return gdn2_error(GDN2_ERR_NOMEM, "out of memory for model activations");
        }
    }
    a->B = B, a->T = T, a->recompute = rcp, a->keep = keep;
    a->buf_bytes = o;
    a->scr_bytes = scr_need;
    if (reuse) goto layout;
    a->buf_cap = o, a->scr_cap = scr_need, a->bt_cap = (size_t)BT;
    a->buf = be->alloc(be, a->buf_bytes, "model activations");
    a->scr = a->buf ? be->alloc(be, a->scr_bytes, "model scratch") : NULL;
    a->dtokens = a->scr ? be->alloc(be, (size_t)BT * sizeof(int32_t), "tokens") : NULL;
    a->drt = a->dtokens ? be->alloc(be, (size_t)BT * sizeof(int32_t), "lm_head row targets") : NULL;
    a->dloss = a->drt ? be->alloc(be, (size_t)BT * sizeof(float), "per-row loss") : NULL;
    a->res = calloc((size_t)8 * L + 1, sizeof(void *));
    a->tokens = gdn2_malloc((size_t)BT * sizeof(int32_t), "tokens");
    a->targets = gdn2_malloc((size_t)BT * sizeof(int32_t), "targets");
    a->rt = gdn2_malloc((size_t)BT * sizeof(int32_t), "row targets");
    a->rows = gdn2_malloc((size_t)BT * sizeof(int64_t), "lm_head rows");
    a->loss_rows = gdn2_malloc((size_t)BT * sizeof(float), "per-row loss");
    if (!a->buf || !a->scr || !a->dtokens || !a->drt || !a->dloss || !a->res || !a->tokens || !a->targets ||
        !a->rt || !a->rows || !a->loss_rows) {
        free(off);
        acts_free(be, a);
        m->acts = NULL;
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for model activations (%.3g GB on %s for B=%lld T=%lld)",
                          (double)(o + scr_offsets(be, c, B, T).total) / 1e9, be->name, (long long)B, (long long)T);
    }
layout:;
    void **pv = (void **)a->res;
    a->r1 = (float **)(pv + L + 1), a->mid = a->r1 + L, a->r2 = a->mid + L;
    a->n1 = (void **)(a->r2 + L), a->mix = a->n1 + L, a->n2 = a->mix + L, a->mlp = a->n2 + L;
    po = off;
    for (int l = 0; l <= L; l++) a->res[l] = AT(a->buf, *po++);
    for (int l = 0; l < L; l++) {
        a->n1[l] = AT(a->buf, *po++);
        a->r1[l] = AT(a->buf, *po++);
        a->mix[l] = AT(a->buf, *po++);
        a->mid[l] = AT(a->buf, *po++);
        a->n2[l] = AT(a->buf, *po++);
        a->r2[l] = AT(a->buf, *po++);
        a->mlp[l] = AT(a->buf, *po++);
    }
    a->nf = AT(a->buf, *po++);
    a->rf = AT(a->buf, *po++);
    free(off);
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
    m->n_params = 0;
    for (int i = 0; i < m->n_tensors; i++) m->n_params += m->tensors[i].numel;
    m->n_flat = m->tensors[m->n_tensors - 1].offset + m->tensors[m->n_tensors - 1].numel;
    /* each mixer block starts at the first aligned offset after its norm_1 (as gdn2_model_params
     * places it) */
    char nm[64];
    for (int64_t l = 0; l < c.n_layer; l++) {
        snprintf(nm, sizeof nm, "transformer.h.%lld.norm_1.weight", (long long)l);
        const gdn2_model_param *p = gdn2_model_find(m, nm);
        m->layer_off[l] = gdn2_param_align_up(p->offset + p->numel);
    }
    m->params = gdn2_calloc(m->n_flat, sizeof(float), "model parameters");
    m->be = malloc(sizeof *m->be);
    if (!m->params || !m->be) {
        gdn2_model_free(m);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the model parameters");
    }
    gdn2_backend_cpu_init(m->be, 0);
    m->dev_params = m->params, m->dev_params_act = m->params;
    m->cuda_graph = 1;
    m->prefill_chunk = 4096;
    *out = m;
    return GDN2_OK;
}

static void release_device(gdn2_model *m) {
    gdn2_backend *be = m->be;
    acts_free(be, m->acts);
    m->acts = NULL;
    if (be && be->on_device) {
        be->release(be, m->dev_params), be->release(be, m->dev_params_act), be->release(be, m->dev_grads);
        be->destroy(be);
        gdn2_backend_cpu_init(be, m->n_threads);
    }
    m->dev_params = m->params, m->dev_params_act = m->params, m->dev_grads = m->grads;
}

void gdn2_model_free(gdn2_model *m) {
    if (!m) return;
    release_device(m);
    free(m->tensors), free(m->layer_off), free(m->params), free(m->grads), free(m->be);
    free(m);
}

const char *gdn2_model_device(const gdn2_model *m) { return m->be->name; }

int gdn2_model_upload(gdn2_model *m) {
    gdn2_backend *be = m->be;
    if (!be->on_device) return GDN2_OK;
    int st = be->upload(be, m->dev_params, m->params, m->n_flat * sizeof(float));
    if (!st) st = be->cast(be, m->n_flat, m->dev_params, GDN2_DT_F32, m->dev_params_act, GDN2_DT_ACT);
    if (!st) st = be->sync(be);
    return st;
}

int gdn2_model_sync_host(gdn2_model *m) {
    gdn2_backend *be = m->be;
    int st = gdn2_model_grads_settle(m);
    if (st || !be->on_device) return st;
    st = be->download(be, m->params, m->dev_params, m->n_flat * sizeof(float));
    if (!st && m->dev_grads) {
        if (!m->grads && !(m->grads = gdn2_malloc(m->n_flat * sizeof(float), "model gradients")))
            return GDN2_ERR_NOMEM;
        st = be->download(be, m->grads, m->dev_grads, m->n_flat * sizeof(float));
    }
    return st;
}

int gdn2_model_set_device(gdn2_model *m, const char *device) {
    if (!device) device = "cpu";
    if (!strcmp(device, m->be->name)) return GDN2_OK;
    if (strcmp(device, "cpu") && strcmp(device, "cuda"))
        return gdn2_error(GDN2_ERR_ARG, "model device '%s': expected cpu or cuda", device);
    int st = gdn2_model_sync_host(m);
    if (st) return st;
    release_device(m);
    m->grads_pending = 0; /* the gradients move as the host has them (synced, settled) */
    if (!strcmp(device, "cpu")) return GDN2_OK;
    gdn2_backend be;
    if ((st = gdn2_backend_init(&be, device, m->n_threads))) return st;
    *m->be = be;
    const size_t n = m->n_flat;
    m->dev_params = be.alloc(m->be, n * sizeof(float), "model weights (fp32 master)");
    m->dev_params_act = m->dev_params ? be.alloc(m->be, gdn2_be_bytes(m->be, n, GDN2_DT_ACT), "model weights (matmul copy)") : NULL;
    m->dev_grads = m->dev_params_act ? be.alloc(m->be, n * sizeof(float), "model gradients") : NULL;
    if (!m->dev_grads || (st = gdn2_model_upload(m))) {
        st = st ? st : GDN2_ERR_NOMEM;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", gdn2_last_error());
        release_device(m);
        return gdn2_error(st, "model to %s (%zu parameters): %s", device, m->n_params, msg);
    }
    return GDN2_OK;
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
        /* each tensor's stream starts at a hash of (seed, i). (seed ^ φ(i+1) started them a small multiple
         * of φ apart for many pairs, i.e. at shifts of one splitmix64 sequence: with seed 3407, 146 pairs of
         * the first 400 tensors drew the same numbers a few draws apart; with seed 0, all of them.) */
        gdn2_rng r = {gdn2_mix64(gdn2_mix64(seed ^ 0x696e6974ULL) + (uint64_t)(i + 1))};
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

/* A matrix weight: every 2-D tensor but the embedding (whose gradient is a scatter-add). The backward
 * computes each one's whole gradient in one product (linear_bwd), so the first backward after
 * gdn2_model_zero_grad writes it (dw_acc 0) instead of adding it to zeros. */
static int matrix_weight(const gdn2_model_param *p) {
    return p->ndim == 2 && strcmp(p->name, "transformer.wte.weight") != 0;
}

/* gradients [a, b) of the flat block = 0 */
static int zero_range(gdn2_model *m, size_t a, size_t b) {
    if (b <= a) return GDN2_OK;
    if (m->be->on_device) return m->be->zero(m->be, m->dev_grads + a, (b - a) * sizeof(float));
    memset(m->grads + a, 0, (b - a) * sizeof(float));
    return GDN2_OK;
}

/* zero the matrix weights' gradients (matrices = 1), or everything else: the stretches between them,
 * the flat block's alignment gaps included (the table is in offset order) */
static int zero_stretches(gdn2_model *m, int matrices) {
    size_t cur = 0; /* the end of the last matrix weight */
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        if (!matrix_weight(p)) continue;
        const int st = matrices ? zero_range(m, p->offset, p->offset + p->numel) : zero_range(m, cur, p->offset);
        if (st) return st;
        cur = p->offset + p->numel;
    }
    return matrices ? GDN2_OK : zero_range(m, cur, m->n_flat);
}

int gdn2_model_zero_grad(gdn2_model *m) {
    if (!m->be->on_device && !m->grads) {
        m->grads = gdn2_calloc(m->n_flat, sizeof(float), "model gradients");
        m->dev_grads = m->grads, m->grads_pending = 0;
        return m->grads ? GDN2_OK : GDN2_ERR_NOMEM;
    }
    const int st = zero_stretches(m, 0);
    if (!st) m->grads_pending = 1;
    return st;
}

int gdn2_model_grads_settle(gdn2_model *m) {
    if (!m->grads_pending || !m->dev_grads) return GDN2_OK;
    const int st = zero_stretches(m, 1);
    if (!st) m->grads_pending = 0;
    return st;
}

/* matmul view of parameter fmt (layer l) */
static const void *PA(const gdn2_model *m, const char *fmt, long long l) {
    char nm[128];
    snprintf(nm, sizeof nm, fmt, l);
    const gdn2_model_param *p = gdn2_model_find(m, nm);
    return p ? (const char *)m->dev_params_act + p->offset * m->be->act_bytes : NULL;
}

/* ---- forward ------------------------------------------------------------------------------ */
/* One pass of lm_head over the rows a->rows (ln_f outputs), in chunks of head_chunk rows:
 *   logits = rows W_head^T (fp32);  loss per row;  backward: dlogits = scale (softmax - onehot),
 *   dW_head += dlogits^T rows, drows = dlogits W_head, scattered to dn [BT,d] (zero elsewhere).
 * The full fp32 logits are never stored: the backward recomputes each chunk (one more GEMM).
 * logits_out / last_logits (HOST) receive the chunks' logits when asked. */
static int head_pass(gdn2_model *m, int backward, float scale, float *logits_out, float *last_logits, int want_loss) {
    gdn2_backend *be = m->be;
    struct gdn2_model_acts *a = m->acts;
    const gdn2_model_cfg *c = &m->cfg;
    const int64_t BT = a->B * a->T, d = c->n_embd, Vp = c->padded_vocab, nr = a->n_rows, hc = head_chunk(c, BT);
    const scr_layout S = scr_offsets(be, c, a->B, a->T);
    const void *W = PA(m, "lm_head.weight", 0);
    float *dW = backward ? P(m, m->dev_grads, "lm_head.weight", 0) : NULL;
    void *rows = nr == BT ? a->nf : AT(a->scr, S.head_rows);
    void *drows = nr == BT ? AT(a->scr, S.dn) : AT(a->scr, S.head_drows);
    float *logits = AT(a->scr, S.head_logits);
    void *dlogits = AT(a->scr, S.head_dlogits);
    int st = GDN2_OK;
    if (nr == 0) return backward ? be->zero(be, AT(a->scr, S.dn), gdn2_be_bytes(be, (size_t)(BT * d), GDN2_DT_ACT)) : 0;
    if (nr != BT && (st = be->gather_rows(be, nr, d, a->rows, a->nf, rows))) return st;
    for (int64_t r0 = 0; r0 < nr && !st; r0 += hc) {
        const int64_t n = nr - r0 < hc ? nr - r0 : hc;
        const void *x = (const char *)rows + gdn2_be_bytes(be, (size_t)(r0 * d), GDN2_DT_ACT);
        st = be->linear_fwd(be, n, d, Vp, x, W, NULL, logits, GDN2_DT_F32, 0);
        if (!st && logits_out) st = be->download(be, logits_out + r0 * Vp, logits, (size_t)(n * Vp) * sizeof(float));
        if (!st && last_logits) st = be->download(be, last_logits + r0 * Vp, logits, (size_t)(n * Vp) * sizeof(float));
        if (!st && (want_loss || backward))
            st = be->xent(be, n, Vp, logits, a->drt + r0, scale, backward ? dlogits : NULL, a->dloss + r0);
        if (!st && backward)
            st = be->linear_bwd(be, n, d, Vp, x, W, dlogits,
                                (char *)drows + gdn2_be_bytes(be, (size_t)(r0 * d), GDN2_DT_ACT), 0, dW,
                                !m->grads_pending || r0 > 0, NULL); /* the first chunk writes a pending dW */
    }
    if (!st && backward && nr != BT) st = be->scatter_rows(be, nr, BT, d, a->rows, drows, AT(a->scr, S.dn));
    return st;
}

#define TRY(call) do { if ((st = (call))) return st; } while (0)

/* the dropout stream of the embedding's output (m->emb_dropout) */
static uint64_t emb_drop_seed(const gdn2_model *m) { return gdn2_mix64(m->dropout_seed ^ 0xE3B0C44298FC1C14ULL); }

/* the dropout stream of block l's mixer (k 0) or MLP (k 1) output */
static uint64_t drop_seed(const gdn2_model *m, int64_t l, int k) {
    return gdn2_mix64(m->dropout_seed ^ (0xD1B54A32D192ED03ULL * (uint64_t)(2 * l + k + 1)));
}

/* Block l of the forward: mid = res_l + mixer(norm_1(res_l)); res_{l+1} = mid + mlp(norm_2(mid)).
 * normed: norm_1(res_l) is already in n1[l], r1[l] (the previous block wrote it with res_l). write_next:
 * res_{l+1} is written, in the same pass as the norm after it (block l+1's norm_1, or ln_f into nf, rf
 * after the last block: add_rmsnorm_fwd, the same bits as add then rmsnorm_fwd). states: prefill into
 * slots slot0.. of s, or NULL. y, var: scratch. keep: a recurrent mixer fills its keep-mode reserve. */
static int block_forward(gdn2_model *m, int64_t l, gdn2_model_state *s, int64_t slot0, void *y, void *var,
                         int write_next, int drop, int keep, int normed) {
    const gdn2_model_cfg *c = &m->cfg;
    gdn2_backend *be = m->be;
    struct gdn2_model_acts *a = m->acts;
    const int64_t d = c->n_embd, B = a->B, T = a->T, BT = B * T, I = c->intermediate_size;
    int st;
    if (!normed)
        TRY(be->rmsnorm_fwd(be, BT, d, a->res[l], P(m, m->dev_params, "transformer.h.%lld.norm_1.weight", l),
                            c->norm_eps, a->n1[l], a->r1[l]));
    const int64_t p0 = s && B == 1 ? s->slot_pos[slot0] : 0; /* a prefill continuing a slot */
    if (c->kind[l] >= GDN2_LAYER_SWA && p0 > 0) {
        gdn2_attn_cfg ac = gdn2_attn_cfg_of(c, c->kind[l]);
        TRY(gdn2_attn_forward_cont(be, &ac, PA(m, "transformer.h.%lld.attn.attn.weight", l),
                                   PA(m, "transformer.h.%lld.attn.proj.weight", l), a->n1[l], T, p0, s->max_len,
                                   s->data + s->layer_off[l] + (size_t)slot0 * s->layer_size[l], y, a->mix[l], var));
    } else if (c->kind[l] >= GDN2_LAYER_SWA) {
        gdn2_attn_cfg ac = gdn2_attn_cfg_of(c, c->kind[l]);
        TRY(gdn2_attn_forward(be, &ac, PA(m, "transformer.h.%lld.attn.attn.weight", l),
                              PA(m, "transformer.h.%lld.attn.proj.weight", l), a->n1[l], B, T, y, a->mix[l], var));
        if (s) TRY(gdn2_attn_fill_cache(be, &ac, a->mix[l], B, T, 0, s->max_len,
                                        s->data + s->layer_off[l] + (size_t)slot0 * s->layer_size[l],
                                        s->layer_size[l]));
    } else {
        gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
        lc.keep_chunk = keep;
        TRY(gdn2_layer_fwd_be(be, &lc, m->dev_params + m->layer_off[l],
                              (const char *)m->dev_params_act + m->layer_off[l] * be->act_bytes, a->n1[l], B, T, y,
                              a->mix[l], s ? s->data + s->layer_off[l] + (size_t)slot0 * s->layer_size[l] : NULL,
                              var));
    }
    if (drop) TRY(be->dropout(be, (size_t)(BT * d), y, GDN2_DT_ACT, m->dropout, drop_seed(m, l, 0)));
    TRY(be->add_rmsnorm_fwd(be, BT, d, a->res[l], y, a->mid[l],
                            P(m, m->dev_params, "transformer.h.%lld.norm_2.weight", l), c->norm_eps, a->n2[l],
                            a->r2[l]));
    TRY(gdn2_mlp_forward(be, BT, d, I, PA(m, "transformer.h.%lld.mlp.swiglu.w1.weight", l),
                         PA(m, "transformer.h.%lld.mlp.swiglu.w2.weight", l),
                         PA(m, "transformer.h.%lld.mlp.swiglu.w3.weight", l), a->n2[l], y, a->mlp[l], 0));
    if (drop) TRY(be->dropout(be, (size_t)(BT * d), y, GDN2_DT_ACT, m->dropout, drop_seed(m, l, 1)));
    if (write_next) {
        const int last = l + 1 == c->n_layer;
        TRY(be->add_rmsnorm_fwd(be, BT, d, a->mid[l], y, a->res[l + 1],
                                last ? P(m, m->dev_params, "transformer.ln_f.weight", 0)
                                     : P(m, m->dev_params, "transformer.h.%lld.norm_1.weight", l + 1),
                                c->norm_eps, last ? a->nf : a->n1[l + 1], last ? a->rf : a->r1[l + 1]));
    }
    return GDN2_OK;
}

/* last_logits: [B,Vp] of position T-1. states (in the backend's memory, as the model): sequence b of
 * the batch uses state slot slot0 + b of s (a recurrent layer starts from the slot's state and
 * leaves its final state and conv history there; attention layers fill their caches: from
 * position 0 only). head_scale >= 0 (a train forward of gdn2_model_forward_backward): lm_head's pass also
 * runs its backward with that scale, so its logits are computed once (gdn2_model_backward then starts at
 * ln_f); < 0: not. */
static int forward_impl(gdn2_model *m, const int32_t *tokens, const int32_t *targets, int64_t B, int64_t T,
                        float *logits_out, float *loss, int train, gdn2_model_state *s, int64_t slot0,
                        float *last_logits, float head_scale) {
    const gdn2_model_cfg *c = &m->cfg;
    gdn2_backend *be = m->be;
    const int64_t L = c->n_layer, d = c->n_embd, BT = B * T;
    if (!be->on_device) be->n_threads = m->n_threads;
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
    const scr_layout S = scr_offsets(be, c, B, T);
    void *y = AT(a->scr, S.y), *var = AT(a->scr, S.var);
    a->trained = 0, a->head_done = 0;
    memcpy(a->tokens, tokens, (size_t)BT * sizeof(int32_t));
    if (targets) memcpy(a->targets, targets, (size_t)BT * sizeof(int32_t));
    else
        for (int64_t i = 0; i < BT; i++) a->targets[i] = GDN2_IGNORE;
    if ((st = be->upload(be, a->dtokens, tokens, (size_t)BT * sizeof(int32_t)))) return st;

    TRY(be->embed_fwd(be, BT, d, a->dtokens, P(m, m->dev_params, "transformer.wte.weight", 0), a->res[0]));
    const int drop = train && m->dropout > 0.0f, edrop = train && m->emb_dropout > 0.0f;
    if (drop && !(m->dropout < 1.0f))
        return gdn2_error(GDN2_ERR_ARG, "model forward: dropout %g outside [0, 1)", m->dropout);
    if (edrop && !(m->emb_dropout < 1.0f))
        return gdn2_error(GDN2_ERR_ARG, "model forward: emb_dropout %g outside [0, 1)", m->emb_dropout);
    a->dropped = drop, a->emb_dropped = edrop;
    /* nanoGPT's embedding dropout: on the residual stream's start (fp32), the backward's dres at the end */
    if (edrop) TRY(be->dropout(be, (size_t)(BT * d), a->res[0], GDN2_DT_F32, m->emb_dropout, emb_drop_seed(m)));
    /* keep mode: a training forward fills the reserves, but with recompute only the backward's
     * re-run of each block does (the one that precedes its backward) */
    const int keep = train && a->keep && !a->recompute && !s;
    /* each block writes the next one's norm_1 (the last one ln_f's nf, rf) with its residual add */
    for (int64_t l = 0; l < L; l++) TRY(block_forward(m, l, s, slot0, y, var, 1, drop, keep, l > 0));
    /* lm_head rows: everything when logits are wanted; the last position for generation; else only
     * rows that carry a target (MQAR has 4 of 64) */
    a->n_rows = 0;
    for (int64_t i = 0; i < BT; i++) {
        int keep = logits_out ? 1 : last_logits ? (i % T == T - 1) : a->targets[i] != GDN2_IGNORE;
        if (keep) a->rows[a->n_rows++] = i;
    }
    a->n_valid = 0;
    for (int64_t r = 0; r < a->n_rows; r++) {
        a->rt[r] = a->targets[a->rows[r]];
        a->n_valid += a->rt[r] != GDN2_IGNORE;
    }
    if (loss) *loss = 0.0f;
    const int want_loss = targets && (loss || train);
    if (a->n_rows) TRY(be->upload(be, a->drt, a->rt, (size_t)a->n_rows * sizeof(int32_t)));
    /* the fused head: loss and lm_head's backward from one product per row chunk (the same ops and bits as
     * head_pass(0) here and head_pass(1) in gdn2_model_backward, less the first pass's product and xent) */
    const int fused = train && head_scale >= 0.0f && a->n_valid > 0 && !logits_out && !last_logits;
    if (fused) {
        if (!m->dev_grads && gdn2_model_zero_grad(m)) return GDN2_ERR_NOMEM;
        TRY(head_pass(m, 1, head_scale / (float)a->n_valid, NULL, NULL, 1));
    } else if (logits_out || last_logits || want_loss)
        TRY(head_pass(m, 0, 0.0f, logits_out, last_logits, want_loss));
    if (want_loss && a->n_rows) {
        TRY(be->download(be, a->loss_rows, a->dloss, (size_t)a->n_rows * sizeof(float)));
        double tot = 0.0;
        for (int64_t r = 0; r < a->n_rows; r++) tot += a->loss_rows[r];
        if (loss) *loss = a->n_valid ? (float)(tot / (double)a->n_valid) : 0.0f;
    }
    a->trained = train, a->head_done = fused;
    return GDN2_OK;
}

int gdn2_model_forward(gdn2_model *m, const int32_t *tokens, const int32_t *targets, int64_t B, int64_t T,
                       float *logits, float *loss, int train) {
    return forward_impl(m, tokens, targets, B, T, logits, loss, train, NULL, 0, NULL, -1.0f);
}

int gdn2_model_forward_backward(gdn2_model *m, const int32_t *tokens, const int32_t *targets, int64_t B, int64_t T,
                                float *loss, float scale) {
    if (!(scale >= 0.0f) || !isfinite(scale))
        return gdn2_error(GDN2_ERR_ARG, "model forward_backward: scale %g must be finite and >= 0", scale);
    const int st = forward_impl(m, tokens, targets, B, T, NULL, loss, 1, NULL, 0, NULL, scale);
    return st ? st : gdn2_model_backward(m, scale);
}

/* ---- backward ----------------------------------------------------------------------------- */
int gdn2_model_backward(gdn2_model *m, float scale) {
    struct gdn2_model_acts *a = m->acts;
    gdn2_backend *be = m->be;
    if (!a || !a->trained) return gdn2_error(GDN2_ERR_ARG, "model backward: no training forward to differentiate");
    if (!m->dev_grads && gdn2_model_zero_grad(m)) return GDN2_ERR_NOMEM;
    if (!be->on_device) be->n_threads = m->n_threads;
    const gdn2_model_cfg *c = &m->cfg;
    const int64_t L = c->n_layer, d = c->n_embd, B = a->B, T = a->T, BT = B * T, I = c->intermediate_size;
    float *G = m->dev_grads, *W = m->dev_params;
    if (a->n_valid == 0) return gdn2_model_grads_settle(m); /* nothing carries a loss: the gradients as they were */
    /* the first backward after zero_grad writes the matrix weights' gradients, later ones add to them */
    const int dw_acc = !m->grads_pending;
    const scr_layout S = scr_offsets(be, c, B, T);
    float *dres = AT(a->scr, S.dres);
    /* with an fp32 ACT type the cast of dres is the identity: use dres itself; else each norm backward
     * writes dres's ACT copy as it writes dres (xa) */
    void *dres_act = be->act_bytes == sizeof(float) && !a->dropped ? (void *)dres : AT(a->scr, S.dres_act);
    void *xa = dres_act != (void *)dres ? dres_act : NULL;
    void *dn = AT(a->scr, S.dn), *var = AT(a->scr, S.var);
    int st;
    /* lm_head + cross-entropy: dn = d loss / d nf (mean over the targets, times scale); done already
     * when the forward was gdn2_model_forward_backward's (with this scale) */
    if (!a->head_done) TRY(head_pass(m, 1, scale / (float)a->n_valid, NULL, NULL, 0));
    a->head_done = 0;
    a->trained = 0;
    TRY(be->rmsnorm_bwd(be, BT, d, a->res[L], P(m, W, "transformer.ln_f.weight", 0), a->rf, dn, dres, 0, xa,
                        P(m, G, "transformer.ln_f.weight", 0)));
    for (int64_t l = L - 1; l >= 0; l--) {
        /* recompute mode: block l's activations again from res_l (the same bits: deterministic ops) */
        if (a->recompute) TRY(block_forward(m, l, NULL, 0, AT(a->scr, S.y), var, 0, a->dropped, a->keep, 0));
        /* res_{l+1} = mid + mlp(norm_2(mid)) */
        if (a->dropped) TRY(be->dropout(be, (size_t)(BT * d), dres_act, GDN2_DT_ACT, m->dropout, drop_seed(m, l, 1)));
        TRY(gdn2_mlp_backward(be, BT, d, I, PA(m, "transformer.h.%lld.mlp.swiglu.w1.weight", l),
                              PA(m, "transformer.h.%lld.mlp.swiglu.w2.weight", l),
                              PA(m, "transformer.h.%lld.mlp.swiglu.w3.weight", l), a->n2[l], a->mlp[l], dres_act, dn,
                              P(m, G, "transformer.h.%lld.mlp.swiglu.w1.weight", l),
                              P(m, G, "transformer.h.%lld.mlp.swiglu.w2.weight", l),
                              P(m, G, "transformer.h.%lld.mlp.swiglu.w3.weight", l), dw_acc, var));
        TRY(be->rmsnorm_bwd(be, BT, d, a->mid[l], P(m, W, "transformer.h.%lld.norm_2.weight", l), a->r2[l], dn, dres,
                            1, xa, P(m, G, "transformer.h.%lld.norm_2.weight", l)));
        /* mid = res_l + mixer(norm_1(res_l)) */
        if (a->dropped) TRY(be->dropout(be, (size_t)(BT * d), dres_act, GDN2_DT_ACT, m->dropout, drop_seed(m, l, 0)));
        if (c->kind[l] >= GDN2_LAYER_SWA) {
            gdn2_attn_cfg ac = gdn2_attn_cfg_of(c, c->kind[l]);
            TRY(gdn2_attn_backward(be, &ac, PA(m, "transformer.h.%lld.attn.attn.weight", l),
                                   PA(m, "transformer.h.%lld.attn.proj.weight", l), a->n1[l], B, T, a->mix[l],
                                   dres_act, dn, P(m, G, "transformer.h.%lld.attn.attn.weight", l),
                                   P(m, G, "transformer.h.%lld.attn.proj.weight", l), dw_acc, var));
        } else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
            lc.keep_chunk = a->keep; /* its forward kept the reserve (forward_impl, above) */
            TRY(gdn2_layer_bwd_be(be, &lc, W + m->layer_off[l],
                                  (const char *)m->dev_params_act + m->layer_off[l] * be->act_bytes, a->n1[l], B, T,
                                  a->mix[l], dres_act, dn, G + m->layer_off[l], dw_acc, var));
        }
        TRY(be->rmsnorm_bwd(be, BT, d, a->res[l], P(m, W, "transformer.h.%lld.norm_1.weight", l), a->r1[l], dn, dres,
                            1, l > 0 ? xa : NULL, P(m, G, "transformer.h.%lld.norm_1.weight", l)));
    }
    if (a->emb_dropped) TRY(be->dropout(be, (size_t)(BT * d), dres, GDN2_DT_F32, m->emb_dropout, emb_drop_seed(m)));
    TRY(be->embed_bwd(be, BT, d, a->tokens, a->dtokens, dres, P(m, G, "transformer.wte.weight", 0)));
    m->grads_pending = 0;
    return GDN2_OK;
}

float gdn2_model_grad_norm(gdn2_model *m) {
    gdn2_backend *be = m->be;
    if (!m->dev_grads) return 0.0f;
    if (gdn2_model_grads_settle(m)) return NAN;
    double s = 0.0;
    if (be->sumsq(be, m->n_flat, m->dev_grads, &s)) return NAN;
    return (float)sqrt(s);
}

/* torch.nn.utils.clip_grad_norm_'s factor: max / (total + 1e-6) when total > max > 0, else 1 */
float gdn2_clip_factor(float norm, float max_norm) {
    return max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6f) : 1.0f;
}

/* total = ||g||_2; g *= gdn2_clip_factor(total, max) */
float gdn2_clip_grad_norm(float *g, size_t n, float max_norm) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    float tot = (float)sqrt(s);
    const float k = gdn2_clip_factor(tot, max_norm);
    if (k != 1.0f)
        for (size_t i = 0; i < n; i++) g[i] *= k;
    return tot;
}

float gdn2_model_clip_grad_norm(gdn2_model *m, float max_norm) {
    const float tot = gdn2_model_grad_norm(m), k = gdn2_clip_factor(tot, max_norm);
    if (k != 1.0f && m->be->scale(m->be, m->n_flat, m->dev_grads, k)) return NAN;
    return tot;
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

/* ---- where a state's memory is: host (CPU states, and the HOST side of a transfer: s NULL) or
 * the device of its backend. Every byte of a state moves through these. */
static int mem_zero(const gdn2_model_state *s, void *p, size_t bytes) {
    if (s && s->on_device) return s->be->zero(s->be, p, bytes);
    if (bytes) memset(p, 0, bytes);
    return GDN2_OK;
}
/* bytes from src (in the memory of state ss, or the host when ss is NULL) to dst (of ds / host) */
static int mem_xfer(const gdn2_model_state *ds, void *dst, const gdn2_model_state *ss, const void *src, size_t bytes) {
    const int dd = ds && ds->on_device, sd = ss && ss->on_device;
    if (!bytes || dst == src) return GDN2_OK;
    if (dd && sd) return ds->be->copy(ds->be, dst, src, bytes);
    if (dd) return ds->be->upload(ds->be, dst, src, bytes);
    if (sd) return ss->be->download(ss->be, dst, src, bytes);
    memmove(dst, src, bytes);
    return GDN2_OK;
}

/* the state must live where the model runs now */
static int check_state(const gdn2_model *m, const gdn2_model_state *s, const char *fn) {
    if (s->on_device != m->be->on_device || (s->on_device && s->be != m->be))
        return gdn2_error(GDN2_ERR_ARG,
                          "%s: the state was made for the model on %s, the model is on %s now (make states after "
                          "gdn2_model_set_device)",
                          fn, s->on_device ? "a device" : "cpu", m->be->name);
    return GDN2_OK;
}

int gdn2_model_state_create(const gdn2_model *m, int64_t n, int64_t max_len, gdn2_model_state **out) {
    *out = NULL;
    const gdn2_model_cfg *c = &m->cfg;
    if (n < 1 || n > INT32_MAX)
        return gdn2_error(GDN2_ERR_ARG, "generation state: n = %lld sequences must be in [1, 2^31)", (long long)n);
    if (max_len < 1) max_len = c->block_size;
    gdn2_model_state *s = calloc(1, sizeof *s);
    if (!s) return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the generation state");
    s->n = n, s->max_len = max_len, s->n_layer = (int)c->n_layer;
    s->on_device = m->be->on_device;
    s->be = s->on_device ? m->be : NULL;
    s->layer_off = calloc((size_t)c->n_layer, sizeof(size_t));
    s->layer_size = calloc((size_t)c->n_layer, sizeof(size_t));
    s->slot_pos = calloc((size_t)n, sizeof(int64_t));
    size_t off = 0, bytes = 0;
    int ok = s->layer_off && s->layer_size && s->slot_pos;
    for (int l = 0; ok && l < c->n_layer; l++) {
        s->layer_size[l] = layer_state_size(c, l, max_len);
        s->layer_off[l] = off;
        size_t blk;
        ok = gdn2_mul_sz(s->layer_size[l], (size_t)n, &blk) && gdn2_add_sz(off, blk, &off);
    }
    ok = ok && gdn2_mul_sz(off ? off : 1, sizeof(float), &bytes);
    s->per_seq = ok ? off / (size_t)n : 0;
    if (!ok) s->data = NULL;
    else if (s->on_device) s->data = m->be->alloc(m->be, bytes, "generation state");
    else s->data = gdn2_calloc(off ? off : 1, sizeof(float), "generation state");
    if (!s->data) {
        char why[256];
        snprintf(why, sizeof why, "%s", gdn2_last_error());
        gdn2_model_state_free(s);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the generation state on %s (%lld sequences x %zu floats): %s",
                          m->be->name, (long long)n, gdn2_model_state_floats(c, max_len), why);
    }
    *out = s;
    return GDN2_OK;
}

void gdn2_model_state_reset(gdn2_model_state *s) {
    mem_zero(s, s->data, s->per_seq * (size_t)s->n * sizeof(float));
    memset(s->slot_pos, 0, (size_t)s->n * sizeof(int64_t));
    s->pos = 0;
}

static void graphs_free(gdn2_model_state *s);
static void stage_free(gdn2_model_state *s);

void gdn2_model_state_free(gdn2_model_state *s) {
    if (!s) return;
    graphs_free(s);
    if (s->on_device) {
        if (s->data) s->be->release(s->be, s->data);
        if (s->work) s->be->release(s->be, s->work);
    } else {
        free(s->data), free(s->work);
    }
    stage_free(s);
    free(s->layer_off), free(s->layer_size), free(s->slot_pos);
    free(s);
}

static int check_slot(const gdn2_model_state *s, int64_t slot, const char *fn) {
    if (slot < 0 || slot >= s->n)
        return gdn2_error(GDN2_ERR_ARG, "%s: slot %lld outside [0, %lld)", fn, (long long)slot, (long long)s->n);
    return GDN2_OK;
}

static float *slot_block(const gdn2_model_state *s, int l, int64_t slot) {
    return s->data + s->layer_off[l] + (size_t)slot * s->layer_size[l];
}

int gdn2_model_state_reset_slot(gdn2_model_state *s, int64_t slot) {
    int st = check_slot(s, slot, "state reset");
    for (int l = 0; l < s->n_layer && !st; l++) st = mem_zero(s, slot_block(s, l, slot), s->layer_size[l] * sizeof(float));
    if (!st) s->slot_pos[slot] = 0;
    return st;
}

/* layer l's block of one slot from src (of state ss; NULL: host) to dst (of ds; NULL: host). Full
 * attention caches [2][ng][cap][hs] hold positions by index: rows [0, pos) copied between
 * capacities; every other layer's block is position-independent in size (recurrent state, SWA ring) */
static int copy_layer(const gdn2_model_cfg *c, int l, const gdn2_model_state *ds, float *dst, int64_t dcap,
                      const gdn2_model_state *ss, const float *src, int64_t scap, int64_t pos, size_t size) {
    int st = GDN2_OK;
    if (c->kind[l] == GDN2_LAYER_ATTN) {
        const int64_t ng = c->n_query_groups, hs = c->head_size;
        for (int64_t kv = 0; kv < 2 && !st; kv++)
            for (int64_t g = 0; g < ng && !st; g++)
                st = mem_xfer(ds, dst + ((kv * ng + g) * dcap) * hs, ss, src + ((kv * ng + g) * scap) * hs,
                              (size_t)(pos * hs) * sizeof(float));
    } else {
        st = mem_xfer(ds, dst, ss, src, size * sizeof(float));
    }
    return st;
}

int gdn2_model_state_copy_slot(const gdn2_model *m, gdn2_model_state *dst, int64_t dst_slot,
                               const gdn2_model_state *src, int64_t src_slot) {
    int st;
    if ((st = check_slot(dst, dst_slot, "state copy")) || (st = check_slot(src, src_slot, "state copy"))) return st;
    const gdn2_model_cfg *c = &m->cfg;
    const int64_t pos = src->slot_pos[src_slot];
    for (int l = 0; l < c->n_layer; l++)
        if (c->kind[l] == GDN2_LAYER_ATTN && pos > dst->max_len)
            return gdn2_error(GDN2_ERR_ARG, "state copy: %lld tokens do not fit the full-attention cache of %lld",
                              (long long)pos, (long long)dst->max_len);
    if (dst == src && dst_slot == src_slot) return GDN2_OK;
    for (int l = 0; l < c->n_layer && !st; l++) {
        if (c->kind[l] == GDN2_LAYER_ATTN) st = mem_zero(dst, slot_block(dst, l, dst_slot), dst->layer_size[l] * sizeof(float));
        if (!st)
            st = copy_layer(c, l, dst, slot_block(dst, l, dst_slot), dst->max_len, src, slot_block(src, l, src_slot),
                            src->max_len, pos, dst->layer_size[l]);
    }
    if (!st) dst->slot_pos[dst_slot] = pos;
    return st;
}

/* Y = X W^T row by row (M = 1 products): each sequence's numbers are the same whichever other
 * sequences share the step (a GEMM's blocking, and so its rounding, changes with M) */
static int rows_linear_fwd(gdn2_backend *be, int64_t N, int64_t in, int64_t out, const void *X, const void *W,
                           const float *bias, void *Y, int ydt, int accumulate) {
    (void)be, (void)ydt;
    const float *x = X;
    float *y = Y;
    for (int64_t r = 0; r < N; r++) {
        float *yr = y + r * out;
        if (bias && !accumulate) memcpy(yr, bias, (size_t)out * sizeof(float));
        gdn2_sgemm(0, 1, 1, (int)out, (int)in, 1.0f, x + r * in, (int)in, W, (int)in,
                   (bias || accumulate) ? 1.0f : 0.0f, yr, (int)out);
        if (bias && accumulate)
            for (int64_t j = 0; j < out; j++) yr[j] += bias[j];
    }
    return GDN2_OK;
}

/* The step's buffers for n sequences, in the backend's memory (kept in the state between steps):
 *   x fp32 [n,d] (residual) | mid fp32 [n,d] | h ACT [n,d] | y ACT [n,d] | MLP acts | the largest
 *   mixer step scratch | logits fp32 [n,Vp] (device only: the CPU writes the caller's) |
 *   tables: positions int64 [n], tokens int32 [n], slots int32 [n] (one upload) */
typedef struct {
    size_t x, mid, h, y, mlp, mix, logits, tab, tab_bytes, total;
} step_layout;

static step_layout step_offsets(const gdn2_backend *be, const gdn2_model_cfg *c, int64_t n) {
    const size_t N = (size_t)n, d = (size_t)c->n_embd;
    step_layout S;
    size_t o = 0, mix = 0;
    for (int l = 0; l < c->n_layer; l++) {
        size_t b;
        if (c->kind[l] >= GDN2_LAYER_SWA) {
            gdn2_attn_cfg ac = gdn2_attn_cfg_of(c, c->kind[l]);
            b = gdn2_attn_step_bytes(be, &ac, n);
        } else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, l);
            b = gdn2_layer_step_bytes(be, &lc, n);
        }
        if (b > mix) mix = b;
    }
    S.x = o, o = al(be, o + gdn2_be_bytes(be, N * d, GDN2_DT_F32));
    S.mid = o, o = al(be, o + gdn2_be_bytes(be, N * d, GDN2_DT_F32));
    S.h = o, o = al(be, o + gdn2_be_bytes(be, N * d, GDN2_DT_ACT));
    S.y = o, o = al(be, o + gdn2_be_bytes(be, N * d, GDN2_DT_ACT));
    S.mlp = o, o = al(be, o + gdn2_mlp_act_bytes(be, n, c->intermediate_size));
    S.mix = o, o = al(be, o + mix);
    S.logits = o, o = al(be, o + gdn2_be_bytes(be, N * (size_t)c->padded_vocab, GDN2_DT_F32));
    S.tab = o, S.tab_bytes = N * (sizeof(int64_t) + 2 * sizeof(int32_t));
    S.total = al(be, o + S.tab_bytes);
    return S;
}

/* ---- the decode step's CUDA graphs (docs/SERVING.md) ----------------------------------------
 * A recording holds every pointer and size its ops were queued with: the state's buffers (data;
 * work and the tables in it, laid out for work_n), the model's weights (both views), the backend's
 * context (its stream and cuBLASLt workspace) and the number of sequences n, slots given or not
 * (NULL slots are a NULL kernel argument). That is the key of a recording. What changes from step
 * to step — tokens, positions, slot indices — is in the work buffer's tables, uploaded before the
 * replay and read by the kernels at run time; nothing of it is baked in. */
typedef struct {
    int64_t n, work_n;
    int has_slots;
    const void *work, *data, *params, *params_act, *ctx;
    void *graph; /* NULL: the shape's first step ran eagerly; its second is recorded */
} step_graph;

struct gdn2_step_graphs {
    int count, cap;
    step_graph *g;
};

/* drop every recording (they hold the work buffer's address: before it is freed or resized) */
static void graphs_clear(gdn2_model_state *s) {
    struct gdn2_step_graphs *G = s->graphs;
    if (!G) return;
    for (int i = 0; i < G->count; i++)
        if (G->g[i].graph && s->be && s->be->graph_free) s->be->graph_free(s->be, G->g[i].graph);
    G->count = 0;
}

static void graphs_free(gdn2_model_state *s) {
    graphs_clear(s);
    if (s->graphs) free(s->graphs->g);
    free(s->graphs);
    s->graphs = NULL;
}

int64_t gdn2_model_state_cuda_graphs(const gdn2_model_state *s) {
    int64_t k = 0;
    if (s && s->graphs)
        for (int i = 0; i < s->graphs->count; i++) k += s->graphs->g[i].graph != NULL;
    return k;
}

/* the host staging of the tables: pinned memory of the device backend when it has it (the upload
 * is then queued without waiting), else malloc'ed */
static void stage_free(gdn2_model_state *s) {
    if (s->stage && s->stage_pinned) {
        if (s->be && s->be->host_free) s->be->host_free(s->be, s->stage);
    } else {
        free(s->stage);
    }
    s->stage = NULL, s->stage_pinned = 0;
}

/* the state's step buffers laid out for at least n sequences */
static int step_work(gdn2_model_state *s, const gdn2_backend *be, const gdn2_model_cfg *c, int64_t n) {
    if (s->work && s->work_n >= n) return GDN2_OK;
    const step_layout S = step_offsets(be, c, n);
    if (s->on_device) {
        graphs_clear(s); /* recorded with the old buffer */
        if (s->work) s->be->release(s->be, s->work);
        stage_free(s);
        s->work = s->be->alloc(s->be, S.total, "generation step buffers");
        if (s->work && s->be->host_alloc && s->be->upload_async) {
            s->stage = s->be->host_alloc(s->be, S.tab_bytes, "generation step tables (pinned)");
            s->stage_pinned = s->stage != NULL;
        }
        if (s->work && !s->stage) s->stage = gdn2_malloc(S.tab_bytes, "generation step tables"); /* waited-for upload */
    } else {
        free(s->work);
        s->work = gdn2_malloc(S.total, "generation step buffers");
        s->stage = NULL;
    }
    s->work_n = s->work && (s->stage || !s->on_device) ? n : 0;
    return s->work_n ? GDN2_OK : GDN2_ERR_NOMEM;
}

/* The step's ops, from the tables in the work buffer (uploaded) to the logits (fp32 [n,Vp]: in the
 * work buffer on a device, the caller's `logits` on the CPU when given, else the work buffer's). Exactly what a CUDA graph records:
 * kernels and matrix products on the backend's stream, no transfer, no synchronisation, no
 * allocation (the buffers are the state's, sized by step_work before). */
static int step_ops(gdn2_model *m, gdn2_model_state *s, gdn2_backend *be, int64_t n, int has_slots, float *logits) {
    const gdn2_model_cfg *c = &m->cfg;
    const int64_t d = c->n_embd, I = c->intermediate_size, Vp = c->padded_vocab;
    const step_layout S = step_offsets(be, c, s->work_n);
    int st;
    /* the tables are laid out for work_n sequences: the three arrays at their full offsets */
    const int64_t *dpos = (const int64_t *)AT(s->work, S.tab);
    const int32_t *dtok = (const int32_t *)(dpos + s->work_n), *dsl = has_slots ? dtok + s->work_n : NULL;
    float *x = AT(s->work, S.x), *mid = AT(s->work, S.mid);
    void *h = AT(s->work, S.h), *y = AT(s->work, S.y), *mact = AT(s->work, S.mlp), *mix = AT(s->work, S.mix);
    TRY(be->embed_fwd(be, n, d, dtok, P(m, m->dev_params, "transformer.wte.weight", 0), x));
    /* h = norm_1(x) of layer 0 here, of layer l + 1 (or ln_f) fused with the residual add ending layer l */
    TRY(be->rmsnorm_fwd(be, n, d, x,
                        c->n_layer ? P(m, m->dev_params, "transformer.h.%lld.norm_1.weight", 0)
                                   : P(m, m->dev_params, "transformer.ln_f.weight", 0),
                        c->norm_eps, h, NULL));
    for (int64_t l = 0; l < c->n_layer; l++) {
        float *states = s->data + s->layer_off[l];
        if (c->kind[l] >= GDN2_LAYER_SWA) {
            gdn2_attn_cfg ac = gdn2_attn_cfg_of(c, c->kind[l]);
            TRY(gdn2_attn_step_be(be, &ac, PA(m, "transformer.h.%lld.attn.attn.weight", l),
                                  PA(m, "transformer.h.%lld.attn.proj.weight", l), h, n, dpos, dsl,
                                  gdn2_attn_cache_cap(&ac, s->max_len), states, s->layer_size[l], y, mix));
        } else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
            TRY(gdn2_layer_step_be(be, &lc, m->dev_params + m->layer_off[l],
                                   (const char *)m->dev_params_act + m->layer_off[l] * be->act_bytes, h, n, states, dsl,
                                   y, mix));
        }
        TRY(be->add_rmsnorm_fwd(be, n, d, x, y, mid, P(m, m->dev_params, "transformer.h.%lld.norm_2.weight", l),
                                c->norm_eps, h, NULL));
        TRY(gdn2_mlp_forward(be, n, d, I, PA(m, "transformer.h.%lld.mlp.swiglu.w1.weight", l),
                             PA(m, "transformer.h.%lld.mlp.swiglu.w2.weight", l),
                             PA(m, "transformer.h.%lld.mlp.swiglu.w3.weight", l), h, y, mact, 1));
        TRY(be->add_rmsnorm_fwd(be, n, d, mid, y, x,
                                l + 1 < c->n_layer ? P(m, m->dev_params, "transformer.h.%lld.norm_1.weight", l + 1)
                                                   : P(m, m->dev_params, "transformer.ln_f.weight", 0),
                                c->norm_eps, h, NULL));
    }
    float *lg = s->on_device || !logits ? (float *)AT(s->work, S.logits) : logits;
    TRY(be->linear_fwd(be, n, d, Vp, h, PA(m, "lm_head.weight", 0), NULL, lg, GDN2_DT_F32, 0));
    return GDN2_OK;
}

/* a recording failed: said once (this turns graphs off for the model), then eager launches */
static void graph_off(gdn2_model *m, const char *why) {
    fprintf(stderr, "gdn2: warning: the CUDA graph of the decode step failed (%s); decoding with eager launches "
                    "from now on (cuda_graph set to 0)\n", why);
    m->cuda_graph = 0;
}

/* step_ops on a device with CUDA graphs: a launch shape's first step eagerly (it fills the matrix
 * products' algorithm cache and loads the kernels, so that recording only queues), its second
 * recorded then replayed, every later one replayed. Any failure to record, instantiate or launch
 * turns graphs off for the model (graph_off) and the step runs eagerly: a recording runs nothing,
 * so the states are untouched by a failed one. */
static int step_graphed(gdn2_model *m, gdn2_model_state *s, gdn2_backend *be, int64_t n, int has_slots) {
    if (!s->on_device || !m->cuda_graph || !be->graph_begin || !be->graph_end || !be->graph_launch || !be->graph_free)
        return step_ops(m, s, be, n, has_slots, NULL);
    if (!s->graphs && !(s->graphs = calloc(1, sizeof *s->graphs))) return step_ops(m, s, be, n, has_slots, NULL);
    struct gdn2_step_graphs *G = s->graphs;
    step_graph key;
    memset(&key, 0, sizeof key);
    key.n = n, key.work_n = s->work_n, key.has_slots = has_slots;
    key.work = s->work, key.data = s->data, key.params = m->dev_params, key.params_act = m->dev_params_act;
    key.ctx = be->ctx;
    step_graph *e = NULL;
    for (int i = 0; i < G->count && !e; i++) {
        step_graph *g = &G->g[i];
        if (g->n == key.n && g->work_n == key.work_n && g->has_slots == key.has_slots && g->work == key.work &&
            g->data == key.data && g->params == key.params && g->params_act == key.params_act && g->ctx == key.ctx)
            e = g;
    }
    if (!e) { /* a new shape: remembered, run eagerly */
        if (G->count == G->cap) {
            const int nc = G->cap ? 2 * G->cap : 8;
            step_graph *ng = realloc(G->g, (size_t)nc * sizeof *ng);
            if (!ng) return step_ops(m, s, be, n, has_slots, NULL); /* no entry: this shape stays eager */
            G->g = ng, G->cap = nc;
        }
        G->g[G->count++] = key;
        return step_ops(m, s, be, n, has_slots, NULL);
    }
    char why[1200];
    if (!e->graph) { /* the second step of this shape: record it */
        int st = be->graph_begin(be);
        if (st) {
            snprintf(why, sizeof why, "%s", gdn2_last_error());
            graph_off(m, why);
            return step_ops(m, s, be, n, has_slots, NULL);
        }
        /* GDN2_CUDA_GRAPH_FAIL=1: the recording fails (fault injection: the fallback's test) */
        const char *inj = getenv("GDN2_CUDA_GRAPH_FAIL");
        const int so = inj && *inj == '1' ? gdn2_error(GDN2_ERR_DEVICE, "GDN2_CUDA_GRAPH_FAIL=1 (fault injection)")
                                          : step_ops(m, s, be, n, has_slots, NULL);
        if (so) snprintf(why, sizeof why, "recording n = %lld: %s", (long long)n, gdn2_last_error());
        void *g = NULL;
        const int se = be->graph_end(be, so ? NULL : &g);
        if (!so && se) snprintf(why, sizeof why, "n = %lld: %s", (long long)n, gdn2_last_error());
        if (so || se) {
            graph_off(m, why);
            return step_ops(m, s, be, n, has_slots, NULL);
        }
        e->graph = g;
    }
    int st = be->graph_launch(be, e->graph);
    if (st) {
        snprintf(why, sizeof why, "n = %lld: %s", (long long)n, gdn2_last_error());
        graph_off(m, why);
        return step_ops(m, s, be, n, has_slots, NULL);
    }
    return GDN2_OK;
}

/* gdn2_model_step_slots with an optional draw: with rp (row settings, the draws u included), next
 * gets each row's token, sampled by the backend where the logits are; logits (host) may then be NULL */
static int step_slots(gdn2_model *m, gdn2_model_state *s, int64_t n, const int32_t *slots, const int64_t *positions,
                      const int32_t *tokens, float *logits, const gdn2_sample_row_params *rp, int32_t *next) {
    const gdn2_model_cfg *c = &m->cfg;
    int st = check_state(m, s, "model step");
    if (st) return st;
    if (n < 1 || n > s->n)
        return gdn2_error(GDN2_ERR_ARG, "model step: n = %lld sequences outside [1, %lld]", (long long)n,
                          (long long)s->n);
    const int64_t Vp = c->padded_vocab;
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return gdn2_error(GDN2_ERR_ARG, "model step: tokens[%lld] = %d outside [0, vocab_size %lld)",
                              (long long)i, tokens[i], (long long)c->vocab_size);
    /* on the CPU, a copy of the backend whose products run per row (batch-invariant decode); on a
     * device, the model's backend (one batched product) */
    gdn2_backend rb = *m->be;
    gdn2_backend *be = m->be;
    if (!be->on_device) {
        be = &rb;
        be->n_threads = m->n_threads;
        be->linear_fwd = rows_linear_fwd;
    }
    if ((st = step_work(s, be, c, n))) return st;
    const step_layout S = step_offsets(be, c, s->work_n);
    /* the tables (host side: the staging copy on a device, the work buffer itself on the CPU). The
     * pinned staging copy is free again: the last step ended with the logits' download, which
     * waited for the stream (and a failed one synchronised before returning). */
    char *tab = s->on_device ? (char *)s->stage : (char *)AT(s->work, S.tab);
    int64_t *pos = (int64_t *)tab;
    int32_t *tok = (int32_t *)(pos + s->work_n), *sl = tok + s->work_n;
    unsigned char *seen = gdn2_calloc((size_t)s->n, 1, "step slots");
    if (!seen) return GDN2_ERR_NOMEM;
    int has_full = 0;
    for (int l = 0; l < c->n_layer; l++) has_full |= c->kind[l] == GDN2_LAYER_ATTN;
    for (int64_t i = 0; i < n && !st; i++) {
        const int64_t k = slots ? slots[i] : i;
        if (k < 0 || k >= s->n) st = gdn2_error(GDN2_ERR_ARG, "model step: slots[%lld] = %lld outside [0, %lld)",
                                                (long long)i, (long long)k, (long long)s->n);
        else if (seen[k]++) st = gdn2_error(GDN2_ERR_ARG, "model step: slot %lld given twice", (long long)k);
        else if ((pos[i] = positions ? positions[i] : s->slot_pos[k]) < 0)
            st = gdn2_error(GDN2_ERR_ARG, "model step: position %lld < 0", (long long)pos[i]);
        else if (has_full && pos[i] >= s->max_len)
            st = gdn2_error(GDN2_ERR_ARG, "attention cache full: position %lld, max_len %lld (full attention grows)",
                            (long long)pos[i], (long long)s->max_len);
        sl[i] = (int32_t)k;
        tok[i] = tokens[i];
    }
    free(seen);
    if (st) return st;
    if (!s->on_device) {
        st = step_ops(m, s, be, n, slots != NULL, logits);
        if (!st && rp)
            st = be->sample(be, n, c->vocab_size, Vp, logits ? logits : (const float *)AT(s->work, S.logits), rp, next);
    } else {
        /* one upload of the three tables (queued from pinned memory, or waited for), the step's ops
         * (replayed from a CUDA graph, or launched one by one), then the logits to the host and/or
         * the draws on the device with the n tokens to the host (either waits) */
        st = s->stage_pinned ? be->upload_async(be, AT(s->work, S.tab), s->stage, S.tab_bytes)
                             : be->upload(be, AT(s->work, S.tab), s->stage, S.tab_bytes);
        if (!st) st = step_graphed(m, s, be, n, slots != NULL);
        if (!st && logits) st = be->download(be, logits, AT(s->work, S.logits), (size_t)(n * Vp) * sizeof(float));
        if (!st && rp) st = be->sample(be, n, c->vocab_size, Vp, (const float *)AT(s->work, S.logits), rp, next);
        if (st && s->stage_pinned) { /* the queued upload may still read the staging copy: wait */
            char why[1024];
            snprintf(why, sizeof why, "%s", gdn2_last_error());
            (void)be->sync(be);
            gdn2_error(st, "%s", why);
        }
    }
    if (st) return st;
    for (int64_t i = 0; i < n; i++) s->slot_pos[slots ? slots[i] : i] = pos[i] + 1;
    return GDN2_OK;
}

int gdn2_model_step_slots(gdn2_model *m, gdn2_model_state *s, int64_t n, const int32_t *slots,
                          const int64_t *positions, const int32_t *tokens, float *logits) {
    if (!logits) return gdn2_error(GDN2_ERR_ARG, "model step: logits is NULL");
    return step_slots(m, s, n, slots, positions, tokens, logits, NULL, NULL);
}

int gdn2_model_step_slots_sample(gdn2_model *m, gdn2_model_state *s, int64_t n, const int32_t *slots,
                                 const int64_t *positions, const int32_t *tokens, const gdn2_sampling *sp,
                                 uint64_t *rng, int32_t *next, float *logits) {
    if (!sp || !rng || !next) return gdn2_error(GDN2_ERR_ARG, "model step: sp, rng and next must be given");
    /* a missing state or n outside [1, s->n]: step_slots reports it (before any draw is read) */
    if (!s || n < 1 || n > s->n) return step_slots(m, s, n, slots, positions, tokens, logits, NULL, NULL);
    gdn2_sample_row_params *rp = gdn2_malloc((size_t)n * sizeof *rp, "step draws");
    uint64_t *r2 = gdn2_malloc((size_t)n * sizeof *r2, "step draws");
    int st = rp && r2 ? GDN2_OK : GDN2_ERR_NOMEM;
    /* the draws as gdn2_sample takes them: one uniform from the sequence's stream unless greedy;
     * the streams move only when the step succeeds */
    for (int64_t i = 0; i < n && !st; i++) {
        gdn2_rng r = {rng[i]};
        rp[i] = (gdn2_sample_row_params){sp[i].temperature, sp[i].top_k, sp[i].top_p, 0.0f, 0.0};
        if (sp[i].temperature > 0) rp[i].u = gdn2_rng_uniform(&r);
        r2[i] = r.s;
    }
    if (!st) st = step_slots(m, s, n, slots, positions, tokens, logits, rp, next);
    if (!st) memcpy(rng, r2, (size_t)n * sizeof *r2);
    free(rp), free(r2);
    return st;
}

int gdn2_model_step(gdn2_model *m, gdn2_model_state *s, const int32_t *tokens, float *logits) {
    int st = gdn2_model_step_slots(m, s, s->n, NULL, NULL, tokens, logits);
    if (!st) s->pos = s->slot_pos[0];
    return st;
}

int gdn2_model_prefill_slot(gdn2_model *m, gdn2_model_state *s, int64_t slot, const int32_t *tokens, int64_t T,
                            float *logits) {
    int st = check_slot(s, slot, "prefill");
    if (!st) st = check_state(m, s, "prefill");
    if (st) return st;
    if (T < 1) return gdn2_error(GDN2_ERR_ARG, "prefill: T = %lld must be >= 1", (long long)T);
    /* chunked parallel forwards (B = 1) of at most m->prefill_chunk tokens, each continuing from the
     * slot: recurrent layers from its states, attention layers against its caches
     * (gdn2_attn_forward_cont); only the last computes logits */
    const int64_t p0 = s->slot_pos[slot], C = m->prefill_chunk > 0 ? m->prefill_chunk : T;
    for (int64_t off = 0; off < T && !st; off += C) {
        const int64_t n = T - off < C ? T - off : C;
        st = forward_impl(m, tokens + off, NULL, 1, n, NULL, NULL, 0, s, slot, off + n == T ? logits : NULL, -1.0f);
        if (!st) s->slot_pos[slot] = p0 + off + n;
    }
    return st;
}

int gdn2_model_prefill(gdn2_model *m, gdn2_model_state *s, const int32_t *tokens, int64_t T, float *logits) {
    int st = check_state(m, s, "prefill");
    if (st) return st;
    if (T < 1) return gdn2_error(GDN2_ERR_ARG, "prefill: T = %lld must be >= 1", (long long)T);
    if (s->pos == 0) {
        /* one parallel forward from a fresh state: recurrent layers carry their states out, the
         * attention layers copy their last keys/values into the caches */
        st = forward_impl(m, tokens, NULL, s->n, T, NULL, NULL, 0, s, 0, logits, -1.0f);
        if (!st) {
            s->pos = T;
            for (int64_t i = 0; i < s->n; i++) s->slot_pos[i] = T;
        }
        return st;
    }
    /* continuing a sequence: token by token (attention caches are positional) */
    int32_t *tok = gdn2_malloc((size_t)s->n * sizeof(int32_t), "prefill tokens");
    if (!tok) return GDN2_ERR_NOMEM;
    for (int64_t t = 0; t < T && !st; t++) {
        for (int64_t i = 0; i < s->n; i++) tok[i] = tokens[i * T + t];
        st = gdn2_model_step(m, s, tok, logits);
    }
    free(tok);
    return st;
}

/* ---- prefix state files ------------------------------------------------------------------- */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ULL;
    return h;
}

uint64_t gdn2_model_config_hash(const gdn2_model_cfg *c) {
    char *j = gdn2_model_config_to_json(c);
    uint64_t h = j ? fnv1a(0xCBF29CE484222325ULL, j, strlen(j)) : 0;
    free(j);
    return h;
}

uint64_t gdn2_model_weights_hash(const gdn2_model *m) {
    /* the parameter count and up to 2^16 evenly spaced weights (a different checkpoint of the same
     * config differs there with certainty in practice; reading every weight would cost a pass).
     * Index i counts parameters, the tensors in table order without the flat block's alignment
     * gaps: the hash is the weights', independent of how the block is laid out. */
    uint64_t h = fnv1a(0xCBF29CE484222325ULL, &m->n_params, sizeof m->n_params);
    const size_t step = m->n_params > 65536 ? m->n_params / 65536 : 1;
    size_t first = 0; /* parameters before tensor t */
    int t = 0;
    for (size_t i = 0; i < m->n_params; i += step) {
        while (t < m->n_tensors && i >= first + m->tensors[t].numel) first += m->tensors[t++].numel;
        if (t == m->n_tensors) break;
        h = fnv1a(h, &m->params[m->tensors[t].offset + (i - first)], sizeof(float));
    }
    return h;
}

#define PREFIX_FORMAT "gdn2-prefix"

int gdn2_model_state_save_slot(const gdn2_model *m, const gdn2_model_state *s, int64_t slot, const float *logits,
                               const char *path) {
    int st = check_slot(s, slot, "prefix save");
    if (!st) st = check_state(m, s, "prefix save");
    if (st) return st;
    const gdn2_model_cfg *c = &m->cfg;
    const int64_t pos = s->slot_pos[slot];
    if (pos < 1) return gdn2_error(GDN2_ERR_ARG, "prefix save: slot %lld holds no tokens", (long long)slot);
    const int nt = (int)c->n_layer + 1;
    gdn2_tensor *t = calloc((size_t)nt, sizeof *t);
    char (*names)[32] = calloc((size_t)nt, sizeof *names);
    float **bufs = calloc((size_t)nt, sizeof *bufs);
    if (!t || !names || !bufs) {
        free(t), free(names), free(bufs);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the prefix file's table");
    }
    for (int l = 0; l < c->n_layer && !st; l++) {
        snprintf(names[l], sizeof names[l], "state.%d", l);
        t[l].name = names[l];
        t[l].dtype = GDN2_F32;
        if (c->kind[l] == GDN2_LAYER_ATTN) { /* only the positions written so far */
            const int64_t ng = c->n_query_groups, hs = c->head_size;
            bufs[l] = gdn2_malloc((size_t)(2 * ng * pos * hs) * sizeof(float), "prefix attention cache");
            if (!bufs[l]) {
                st = GDN2_ERR_NOMEM;
                break;
            }
            if ((st = copy_layer(c, l, NULL, bufs[l], pos, s, slot_block(s, l, slot), s->max_len, pos, 0))) break;
            t[l].ndim = 4;
            t[l].shape[0] = 2, t[l].shape[1] = ng, t[l].shape[2] = pos, t[l].shape[3] = hs;
            t[l].nbytes = (size_t)(2 * ng * pos * hs) * sizeof(float);
            t[l].data = bufs[l];
        } else {
            t[l].ndim = 1;
            t[l].shape[0] = (int64_t)s->layer_size[l];
            t[l].nbytes = s->layer_size[l] * sizeof(float);
            t[l].data = slot_block(s, l, slot);
            if (s->on_device) { /* a host copy of the slot's block */
                if (!(bufs[l] = gdn2_malloc(t[l].nbytes, "prefix state (host copy)"))) {
                    st = GDN2_ERR_NOMEM;
                    break;
                }
                if ((st = mem_xfer(NULL, bufs[l], s, slot_block(s, l, slot), t[l].nbytes))) break;
                t[l].data = bufs[l];
            }
        }
    }
    int n_t = (int)c->n_layer;
    if (logits) {
        t[n_t].name = "logits";
        t[n_t].dtype = GDN2_F32;
        t[n_t].ndim = 1;
        t[n_t].shape[0] = c->padded_vocab;
        t[n_t].nbytes = (size_t)c->padded_vocab * sizeof(float);
        t[n_t].data = (void *)logits;
        n_t++;
    }
    char *cj = gdn2_model_config_to_json(c);
    char tok[32], ch[32], wh[32];
    snprintf(tok, sizeof tok, "%lld", (long long)pos);
    snprintf(ch, sizeof ch, "%016llx", (unsigned long long)gdn2_model_config_hash(c));
    snprintf(wh, sizeof wh, "%016llx", (unsigned long long)gdn2_model_weights_hash(m));
    const char *keys[] = {"format", "model", "config_hash", "weights_hash", "tokens", "config"};
    const char *vals[] = {PREFIX_FORMAT, c->name, ch, wh, tok, cj ? cj : "{}"};
    if (!st && !cj) st = gdn2_error(GDN2_ERR_NOMEM, "out of memory for the prefix file's config");
    if (!st) st = gdn2_st_write(path, t, n_t, keys, vals, 6);
    free(cj);
    for (int l = 0; l < nt; l++) free(bufs[l]);
    free(t), free(names), free(bufs);
    return st;
}

int gdn2_model_prefix_tokens(const gdn2_st *f, const char *path, int64_t *tokens) {
    const char *fmt = gdn2_st_meta(f, "format"), *tk = gdn2_st_meta(f, "tokens");
    char *end = NULL;
    errno = 0;
    const long long pos = tk ? strtoll(tk, &end, 10) : -1;
    if (!fmt || strcmp(fmt, PREFIX_FORMAT) || !tk || end == tk || *end || errno || pos < 1 || pos > (1LL << 40))
        return gdn2_error(GDN2_ERR_FORMAT,
                          "%s: not a gdn2 prefix state file (metadata format \"%s\" and a token count in [1, 2^40] "
                          "expected; format \"%s\", tokens \"%s\")",
                          path, PREFIX_FORMAT, fmt ? fmt : "(none)", tk ? tk : "(none)");
    *tokens = pos;
    return GDN2_OK;
}

int gdn2_model_state_load_slot(const gdn2_model *m, gdn2_model_state *s, int64_t slot, const char *path,
                               float *logits, int *has_logits) {
    int st = check_slot(s, slot, "prefix load");
    if (!st) st = check_state(m, s, "prefix load");
    if (st) return st;
    if (has_logits) *has_logits = 0;
    const gdn2_model_cfg *c = &m->cfg;
    gdn2_st f;
    if ((st = gdn2_st_read(path, &f))) return st;
    const char *ch = gdn2_st_meta(&f, "config_hash"), *wh = gdn2_st_meta(&f, "weights_hash");
    const char *name = gdn2_st_meta(&f, "model");
    char my_ch[32], my_wh[32];
    snprintf(my_ch, sizeof my_ch, "%016llx", (unsigned long long)gdn2_model_config_hash(c));
    snprintf(my_wh, sizeof my_wh, "%016llx", (unsigned long long)gdn2_model_weights_hash(m));
    int64_t pos = 0;
    if ((st = gdn2_model_prefix_tokens(&f, path, &pos))) {
        /* its message names the file and the metadata */
    } else if (!ch || !wh) {
        st = gdn2_error(GDN2_ERR_FORMAT, "%s: a gdn2 prefix state file without config_hash or weights_hash", path);
    } else if (strcmp(ch, my_ch)) {
        st = gdn2_error(GDN2_ERR_ARG,
                        "%s: prefix state of another model: its config is '%s' (hash %s), this checkpoint's is '%s' "
                        "(hash %s)",
                        path, name ? name : "?", ch, c->name, my_ch);
    } else if (strcmp(wh, my_wh)) {
        st = gdn2_error(GDN2_ERR_ARG,
                        "%s: prefix state of other weights: config '%s' matches but the weights hash %s is not this "
                        "checkpoint's %s",
                        path, c->name, wh, my_wh);
    }
    for (int l = 0; l < c->n_layer && !st; l++) {
        if (c->kind[l] == GDN2_LAYER_ATTN && pos > s->max_len) {
            st = gdn2_error(GDN2_ERR_ARG, "%s: a prefix of %lld tokens does not fit the full-attention cache of %lld",
                            path, (long long)pos, (long long)s->max_len);
            break;
        }
        char nm[32];
        snprintf(nm, sizeof nm, "state.%d", l);
        int64_t shape[4] = {(int64_t)s->layer_size[l], 0, 0, 0};
        int nd = 1;
        if (c->kind[l] == GDN2_LAYER_ATTN)
            nd = 4, shape[0] = 2, shape[1] = c->n_query_groups, shape[2] = pos, shape[3] = c->head_size;
        float *buf = NULL;
        if ((st = gdn2_st_get_f32(&f, nm, 1, nd, shape, &buf))) break;
        size_t numel = 1;
        for (int k = 0; k < nd; k++) numel *= (size_t)shape[k];
        if ((st = gdn2_check_tensor_values(path, nm, buf, nd, shape, 0, numel, 0, 0))) {
            free(buf);
            break;
        }
        float *dst = slot_block(s, l, slot);
        if (c->kind[l] == GDN2_LAYER_ATTN) {
            st = mem_zero(s, dst, s->layer_size[l] * sizeof(float));
            if (!st) st = copy_layer(c, l, s, dst, s->max_len, NULL, buf, pos, pos, 0);
        } else {
            st = mem_xfer(s, dst, NULL, buf, s->layer_size[l] * sizeof(float));
        }
        free(buf);
    }
    if (!st) {
        int64_t shape[1] = {c->padded_vocab};
        float *lg = NULL;
        st = gdn2_st_get_f32(&f, "logits", 0, 1, shape, &lg);
        if (!st && lg) st = gdn2_check_tensor_values(path, "logits", lg, 1, shape, 0, (size_t)shape[0], 0, 0);
        if (!st && lg && logits) memcpy(logits, lg, (size_t)c->padded_vocab * sizeof(float));
        if (!st && has_logits) *has_logits = lg != NULL;
        free(lg);
    }
    if (!st) s->slot_pos[slot] = pos;
    else gdn2_model_state_reset_slot(s, slot);
    gdn2_st_free(&f);
    return st;
}
