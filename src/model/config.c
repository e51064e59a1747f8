/* Model configs: the named ones (GDN2.md §5.2 plus tiny/small for the CPU), layout strings, the
 * lit_gpt config JSON (fixtures' meta.config, our checkpoints), and the parameter table with the
 * official lit_gpt names, computed from the config alone (the 1.3B counts need no weights). */
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util/internal.h"

typedef struct {
    const char *name;
    int64_t n_layer, n_embd, n_head, head_size, gdn_heads, gdn_head_dim, inter, vocab, window, block;
    const char *layout;
} named_cfg;

/* GDN2.md §5.2 (official 1.3B, Jellyfish 100M/305M) and two CPU sizes */
static const named_cfg k_named[] = {
    {"gdn2_1.3B", 18, 2304, 18, 128, 16, 128, 6208, 32000, 2048, 4096, "gdn2"},
    {"swa_gdn2_1.3B", 18, 2304, 18, 128, 16, 128, 6784, 32000, 2048, 4096, "gdn2,swa"},
    {"gdn2_12h_100M", 12, 768, 12, 64, 12, 64, 2048, 32000, 2048, 4096, "gdn2"},
    {"gdn2_12h_305M", 12, 1024, 16, 64, 16, 64, 4352, 32000, 2048, 4096, "gdn2"},
    {"swa_gdn2_100M", 12, 768, 12, 64, 4, 64, 2048, 32000, 2048, 4096, "gdn2,swa"},
    {"tiny", 2, 64, 2, 32, 1, 64, 128, 256, 128, 1024, "gdn2"},
    {"small", 4, 128, 4, 32, 4, 32, 352, 256, 128, 1024, "gdn2"},
};

const char *gdn2_model_config_names(void) {
    return "gdn2_1.3B, swa_gdn2_1.3B, gdn2_12h_100M, gdn2_12h_305M, swa_gdn2_100M, tiny, small";
}

static void cfg_defaults(gdn2_model_cfg *c) {
    memset(c, 0, sizeof *c);
    c->padding_multiple = 64;
    c->norm_eps = 1e-5f;
    c->rope_base = 10000.0f;
    c->gdn_expand_v = 1;
    c->conv_size = 4;
    c->block_size = 4096;
    c->local_window = 2048;
    c->gdn_heads = 16;
    c->gdn_head_dim = 128;
}

int gdn2_model_set_layout(gdn2_model_cfg *c, const char *layout) {
    if (!layout || !*layout) return gdn2_error(GDN2_ERR_ARG, "model layout: empty (use e.g. gdn2 or gdn2,swa)");
    if (strlen(layout) >= sizeof c->layout)
        return gdn2_error(GDN2_ERR_ARG, "model layout '%s': longer than %zu characters", layout, sizeof c->layout - 1);
    int kinds[GDN2_MAX_LAYERS], n = 0;
    const char *p = layout;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int k = -1;
        if (len == 4 && !strncmp(p, "gdn2", 4)) k = GDN2_LAYER_GDN2;
        else if (len == 3 && !strncmp(p, "kda", 3)) k = GDN2_LAYER_KDA;
        else if (len == 3 && !strncmp(p, "gdn", 3)) k = GDN2_LAYER_GDN;
        else if (len == 3 && !strncmp(p, "swa", 3)) k = GDN2_LAYER_SWA;
        else if (len == 4 && !strncmp(p, "attn", 4)) k = GDN2_LAYER_ATTN;
        if (k < 0 || n >= GDN2_MAX_LAYERS)
            return gdn2_error(GDN2_ERR_ARG, "model layout '%s': item %d is not one of gdn2|kda|gdn|swa|attn", layout,
                              n + 1);
        kinds[n++] = k;
        if (!e) break;
        p = e + 1;
    }
    strcpy(c->layout, layout);
    for (int i = 0; i < GDN2_MAX_LAYERS; i++) c->kind[i] = kinds[i % n];
    return GDN2_OK;
}

/* Every width a parameter shape is built from (a dimension, or heads x head size) is at most
 * MAX_WIDTH = 2^20, so no tensor exceeds 2^40 elements and the parameter table (at most 128 layers
 * x 20 tensors) sums without overflow in int64 or size_t. The 1.3B models' widest is 32000. */
#define MAX_WIDTH ((int64_t)1 << 20)
/* block_size and local_window size caches and tables, not parameters */
#define MAX_CONTEXT ((int64_t)1 << 30)

static int width_ok(const char *what, int64_t v) {
    if (v >= 1 && v <= MAX_WIDTH) return GDN2_OK;
    return gdn2_error(GDN2_ERR_ARG, "model config: %s %lld not in [1, %lld]", what, (long long)v, (long long)MAX_WIDTH);
}

int gdn2_model_check(gdn2_model_cfg *c) {
    if (c->n_layer < 1 || c->n_layer > GDN2_MAX_LAYERS)
        return gdn2_error(GDN2_ERR_ARG, "model config: n_layer %lld not in [1, %d]", (long long)c->n_layer,
                          GDN2_MAX_LAYERS);
    if (c->n_embd < 1 || c->vocab_size < 1 || c->intermediate_size < 1)
        return gdn2_error(GDN2_ERR_ARG, "model config: n_embd %lld, vocab_size %lld, intermediate_size %lld must be > 0",
                          (long long)c->n_embd, (long long)c->vocab_size, (long long)c->intermediate_size);
    if (c->padding_multiple < 1) c->padding_multiple = 1;
    int st;
    if ((st = width_ok("n_embd", c->n_embd)) || (st = width_ok("vocab_size", c->vocab_size)) ||
        (st = width_ok("intermediate_size", c->intermediate_size)) ||
        (st = width_ok("padding_multiple", c->padding_multiple)))
        return st;
    if (c->block_size < 1 || c->block_size > MAX_CONTEXT || c->local_window < 0 || c->local_window > MAX_CONTEXT)
        return gdn2_error(GDN2_ERR_ARG, "model config: block_size %lld not in [1, %lld] or local_window %lld not in [0, %lld]",
                          (long long)c->block_size, (long long)MAX_CONTEXT, (long long)c->local_window,
                          (long long)MAX_CONTEXT);
    c->padded_vocab = (c->vocab_size + c->padding_multiple - 1) / c->padding_multiple * c->padding_multiple;
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
        return gdn2_error(GDN2_ERR_ARG, "model config: norm_eps %g must be finite and > 0", c->norm_eps);
    if (!(c->rope_base > 0) || !isfinite(c->rope_base))
        return gdn2_error(GDN2_ERR_ARG, "model config: rope_base %g must be finite and > 0", c->rope_base);
    if (c->allow_neg_eigval != 0 && c->allow_neg_eigval != 1)
        return gdn2_error(GDN2_ERR_ARG, "model config: gdn2_allow_neg_eigval %d must be 0 or 1", c->allow_neg_eigval);
    if (!c->layout[0]) {
        st = gdn2_model_set_layout(c, "gdn2");
        if (st) return st;
    }
    int any_attn = 0, any_rec = 0;
    for (int64_t i = 0; i < c->n_layer; i++) {
        if (c->kind[i] >= GDN2_LAYER_SWA) any_attn = 1;
        else any_rec = 1;
    }
    if (any_attn) {
        if (c->n_head < 1) return gdn2_error(GDN2_ERR_ARG, "model config: n_head %lld < 1", (long long)c->n_head);
        if (c->n_query_groups <= 0) c->n_query_groups = c->n_head;
        if (c->head_size <= 0) c->head_size = c->n_embd / c->n_head;
        if ((st = width_ok("n_head", c->n_head)) || (st = width_ok("n_query_groups", c->n_query_groups)) ||
            (st = width_ok("head_size", c->head_size)))
            return st;
        if (c->n_head % c->n_query_groups || c->head_size % 2 || c->head_size < 2)
            return gdn2_error(GDN2_ERR_ARG,
                              "model config: n_head %lld must be a multiple of n_query_groups %lld, head_size %lld even",
                              (long long)c->n_head, (long long)c->n_query_groups, (long long)c->head_size);
        /* the fused qkv rows (each factor <= 2^20, so the product fits) */
        if ((st = width_ok("(n_head + 2 n_query_groups) x head_size", (c->n_head + 2 * c->n_query_groups) * c->head_size)))
            return st;
        for (int64_t i = 0; i < c->n_layer; i++)
            if (c->kind[i] == GDN2_LAYER_SWA && c->local_window < 1)
                return gdn2_error(GDN2_ERR_ARG, "model config: layer %lld is swa but local_window is %lld",
                                  (long long)i, (long long)c->local_window);
    }
    if (any_rec) {
        if (c->gdn_v_heads <= 0) c->gdn_v_heads = c->gdn_heads;
        if (c->gdn_expand_v <= 0) c->gdn_expand_v = 1;
        if ((st = width_ok("gdn2_num_heads", c->gdn_heads)) || (st = width_ok("gdn2_num_v_heads", c->gdn_v_heads)) ||
            (st = width_ok("gdn2_head_dim", c->gdn_head_dim)) || (st = width_ok("gdn2_expand_v", c->gdn_expand_v)) ||
            (st = width_ok("gdn2_conv_size", c->conv_size)) ||
            (st = width_ok("gdn2_num_heads x gdn2_head_dim", c->gdn_heads * c->gdn_head_dim)) ||
            (st = width_ok("gdn2_head_dim x gdn2_expand_v", c->gdn_head_dim * c->gdn_expand_v)) ||
            (st = width_ok("gdn2_num_v_heads x value head dim", c->gdn_v_heads * c->gdn_head_dim * c->gdn_expand_v)))
            return st;
        gdn2_layer_cfg l = gdn2_model_layer_cfg(c, 0);
        if (l.H < 1 || l.K < 1 || l.HV % l.H || l.conv_size < 1)
            return gdn2_error(GDN2_ERR_ARG,
                              "model config: recurrent heads %lld x %lld (value heads %lld, conv %lld) invalid",
                              (long long)l.H, (long long)l.K, (long long)l.HV, (long long)l.conv_size);
    }
    return GDN2_OK;
}

int gdn2_model_config(const char *name, gdn2_model_cfg *c) {
    for (size_t i = 0; i < sizeof k_named / sizeof k_named[0]; i++) {
        const named_cfg *n = &k_named[i];
        if (strcmp(name, n->name)) continue;
        cfg_defaults(c);
        snprintf(c->name, sizeof c->name, "%s", n->name);
        c->n_layer = n->n_layer;
        c->n_embd = n->n_embd;
        c->n_head = n->n_head;
        c->n_query_groups = n->n_head;
        c->head_size = n->head_size;
        c->gdn_heads = n->gdn_heads;
        c->gdn_v_heads = n->gdn_heads;
        c->gdn_head_dim = n->gdn_head_dim;
        c->intermediate_size = n->inter;
        c->vocab_size = n->vocab;
        c->local_window = n->window;
        c->block_size = n->block;
        int st = gdn2_model_set_layout(c, n->layout);
        return st ? st : gdn2_model_check(c);
    }
    return gdn2_error(GDN2_ERR_ARG, "unknown model config '%s' (known: %s)", name, gdn2_model_config_names());
}

gdn2_layer_cfg gdn2_model_layer_cfg(const gdn2_model_cfg *c, int i) {
    gdn2_layer_cfg l;
    memset(&l, 0, sizeof l);
    l.hidden = c->n_embd;
    l.H = c->gdn_heads;
    l.HV = c->gdn_v_heads > 0 ? c->gdn_v_heads : c->gdn_heads;
    l.K = c->gdn_head_dim;
    l.V = c->gdn_head_dim * (c->gdn_expand_v > 0 ? c->gdn_expand_v : 1);
    l.conv_size = c->conv_size;
    l.allow_neg_eigval = c->allow_neg_eigval;
    l.norm_eps = c->norm_eps;
    int k = c->kind[i];
    l.mixer = k == GDN2_LAYER_KDA ? GDN2_MIXER_KDA : k == GDN2_LAYER_GDN ? GDN2_MIXER_GDN : GDN2_MIXER_GDN2;
    return l;
}

/* ---- JSON --------------------------------------------------------------------------------- */
/* Integer field `key`: 1 = read into *v; 0 = absent or null (lit_gpt writes null for "derive it");
 * -1 = present but not an integer in [-2^53, 2^53] (error recorded: converting such a double to
 * int64 is undefined). A bool counts as 0/1 (lit_gpt's allow_neg_eigval). */
static int json_i64(const cJSON *o, const char *key, int64_t *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it || cJSON_IsNull(it)) return 0;
    if (cJSON_IsBool(it)) {
        *v = cJSON_IsTrue(it);
        return 1;
    }
    const double d = it->valuedouble;
    if (!cJSON_IsNumber(it) || !(fabs(d) <= 9007199254740992.0) || d != floor(d)) {
        gdn2_error(GDN2_ERR_FORMAT, "model config: '%s' is not an integer in [-2^53, 2^53]", key);
        return -1;
    }
    *v = (int64_t)d;
    return 1;
}

/* Float field: as json_i64, for a finite number within float range. */
static int json_f32(const cJSON *o, const char *key, float *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsNumber(it) || !(fabs(it->valuedouble) <= FLT_MAX)) {
        gdn2_error(GDN2_ERR_FORMAT, "model config: '%s' is not a finite number within float range", key);
        return -1;
    }
    *v = (float)it->valuedouble;
    return 1;
}

int gdn2_model_config_from_json(const char *json, gdn2_model_cfg *c) {
    cJSON *root = cJSON_Parse(json);
    if (!root) return gdn2_error(GDN2_ERR_FORMAT, "model config: invalid JSON");
    cJSON *o = root;
    const cJSON *inner = cJSON_GetObjectItemCaseSensitive(root, "config"); /* fixture "meta" wraps it */
    if (cJSON_IsObject(inner)) o = (cJSON *)inner;
    cfg_defaults(c);
    const char *need[] = {"n_layer", "n_embd", "vocab_size"};
    for (int i = 0; i < 3; i++)
        if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, need[i]))) {
            cJSON_Delete(root);
            return gdn2_error(GDN2_ERR_FORMAT, "model config: missing number '%s'", need[i]);
        }
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(o, "name");
    snprintf(c->name, sizeof c->name, "%s", cJSON_IsString(nm) ? nm->valuestring : "custom");
    c->n_head = 1;
    int64_t per = 0, neg = 0;
    const struct {
        const char *key;
        int64_t *v;
    } ints[] = {
        {"n_layer", &c->n_layer}, {"n_embd", &c->n_embd}, {"vocab_size", &c->vocab_size},
        {"padding_multiple", &c->padding_multiple}, {"intermediate_size", &c->intermediate_size},
        {"n_head", &c->n_head}, {"n_query_groups", &c->n_query_groups}, {"head_size", &c->head_size},
        {"block_size", &c->block_size}, {"local_window", &c->local_window}, {"gdn2_num_heads", &c->gdn_heads},
        {"gdn2_head_dim", &c->gdn_head_dim}, {"gdn2_num_v_heads", &c->gdn_v_heads},
        {"gdn2_expand_v", &c->gdn_expand_v}, {"gdn2_conv_size", &c->conv_size},
        {"gdn2_allow_neg_eigval", &neg}, {"gdn2_per_layer", &per},
    };
    int bad = 0, has_inter = 0;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0] && !bad; i++) {
        int r = json_i64(o, ints[i].key, ints[i].v);
        bad = r < 0;
        if (r > 0 && ints[i].v == &c->intermediate_size) has_inter = 1;
    }
    if (!bad) bad = json_f32(o, "norm_eps", &c->norm_eps) < 0 || json_f32(o, "rope_base", &c->rope_base) < 0;
    if (bad) {
        cJSON_Delete(root);
        return GDN2_ERR_FORMAT;
    }
    /* n_embd is checked later; bound it here so that the default 4 * n_embd cannot overflow */
    if (!has_inter) c->intermediate_size = c->n_embd > 0 && c->n_embd <= INT64_MAX / 4 ? 4 * c->n_embd : -1;
    if (neg != 0 && neg != 1) {
        cJSON_Delete(root);
        return gdn2_error(GDN2_ERR_FORMAT, "model config: gdn2_allow_neg_eigval %lld must be 0 or 1", (long long)neg);
    }
    c->allow_neg_eigval = (int)neg;
    int st = GDN2_OK;
    const cJSON *lay = cJSON_GetObjectItemCaseSensitive(o, "gdn2_layout");
    if (cJSON_IsString(lay)) {
        st = gdn2_model_set_layout(c, lay->valuestring);
    } else {
        /* lit_gpt: layer i is GDN-2 iff gdn2_per_layer > 0 and i % gdn2_per_layer == 0, else attention
         * (sliding window when local_window > 0) */
        const char *att = c->local_window > 0 ? "swa" : "attn";
        char buf[160] = "";
        if (per <= 0) snprintf(buf, sizeof buf, "%s", att);
        else if (per > 32) st = gdn2_error(GDN2_ERR_ARG, "model config: gdn2_per_layer %lld too large", (long long)per);
        else
            for (int64_t i = 0; i < per; i++) {
                strcat(buf, i ? "," : "");
                strcat(buf, i == 0 ? "gdn2" : att);
            }
        if (!st) st = gdn2_model_set_layout(c, buf);
    }
    cJSON_Delete(root);
    return st ? st : gdn2_model_check(c);
}

char *gdn2_model_config_to_json(const gdn2_model_cfg *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", c->name);
    cJSON_AddNumberToObject(o, "n_layer", (double)c->n_layer);
    cJSON_AddNumberToObject(o, "n_embd", (double)c->n_embd);
    cJSON_AddNumberToObject(o, "n_head", (double)c->n_head);
    cJSON_AddNumberToObject(o, "n_query_groups", (double)c->n_query_groups);
    cJSON_AddNumberToObject(o, "head_size", (double)c->head_size);
    cJSON_AddNumberToObject(o, "vocab_size", (double)c->vocab_size);
    cJSON_AddNumberToObject(o, "padding_multiple", (double)c->padding_multiple);
    cJSON_AddNumberToObject(o, "padded_vocab_size", (double)c->padded_vocab);
    cJSON_AddNumberToObject(o, "intermediate_size", (double)c->intermediate_size);
    cJSON_AddNumberToObject(o, "block_size", (double)c->block_size);
    cJSON_AddNumberToObject(o, "local_window", (double)c->local_window);
    cJSON_AddNumberToObject(o, "norm_eps", (double)c->norm_eps);
    cJSON_AddNumberToObject(o, "rope_base", (double)c->rope_base);
    cJSON_AddNumberToObject(o, "gdn2_num_heads", (double)c->gdn_heads);
    cJSON_AddNumberToObject(o, "gdn2_num_v_heads", (double)c->gdn_v_heads);
    cJSON_AddNumberToObject(o, "gdn2_head_dim", (double)c->gdn_head_dim);
    cJSON_AddNumberToObject(o, "gdn2_expand_v", (double)c->gdn_expand_v);
    cJSON_AddNumberToObject(o, "gdn2_conv_size", (double)c->conv_size);
    cJSON_AddNumberToObject(o, "gdn2_allow_neg_eigval", (double)c->allow_neg_eigval);
    cJSON_AddStringToObject(o, "gdn2_layout", c->layout);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* ---- parameter table ---------------------------------------------------------------------- */
static void add_param(gdn2_model_param *out, int cap, int *n, size_t *off, const char *name, int ndim, int64_t d0,
                      int64_t d1, int no_decay) {
    size_t numel = (size_t)d0 * (ndim > 1 ? (size_t)d1 : 1);
    if (out && *n < cap) {
        gdn2_model_param *p = &out[*n];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", name);
        p->ndim = ndim;
        p->shape[0] = d0;
        if (ndim > 1) p->shape[1] = d1;
        p->offset = *off;
        p->numel = numel;
        p->no_decay = no_decay;
    }
    (*n)++;
    *off += numel;
}

/* Flat order: wte, then per block norm_1, attn.*, norm_2, mlp.swiglu.w1/w2/w3, then ln_f, lm_head. */
int gdn2_model_params(const gdn2_model_cfg *c, gdn2_model_param *out, int cap) {
    int n = 0;
    size_t off = 0;
    char nm[160];
    const int64_t d = c->n_embd, I = c->intermediate_size;
    add_param(out, cap, &n, &off, "transformer.wte.weight", 2, c->padded_vocab, d, 0);
    for (int64_t l = 0; l < c->n_layer; l++) {
        snprintf(nm, sizeof nm, "transformer.h.%lld.norm_1.weight", (long long)l);
        add_param(out, cap, &n, &off, nm, 1, d, 0, 1);
        if (c->kind[l] >= GDN2_LAYER_SWA) {
            int64_t nq = (c->n_head + 2 * c->n_query_groups) * c->head_size;
            snprintf(nm, sizeof nm, "transformer.h.%lld.attn.attn.weight", (long long)l);
            add_param(out, cap, &n, &off, nm, 2, nq, d, 0);
            snprintf(nm, sizeof nm, "transformer.h.%lld.attn.proj.weight", (long long)l);
            add_param(out, cap, &n, &off, nm, 2, d, c->n_head * c->head_size, 0);
        } else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
            int np = gdn2_layer_params(&lc, NULL, 0);
            gdn2_param_info *pi = np > 0 ? calloc((size_t)np, sizeof *pi) : NULL;
            if (pi) gdn2_layer_params(&lc, pi, np);
            size_t base = off;
            for (int i = 0; pi && i < np; i++) {
                if (out && n < cap) {
                    gdn2_model_param *p = &out[n];
                    memset(p, 0, sizeof *p);
                    snprintf(p->name, sizeof p->name, "transformer.h.%lld.attn.%s", (long long)l, pi[i].name);
                    p->ndim = pi[i].ndim;
                    for (int k = 0; k < 4; k++) p->shape[k] = pi[i].shape[k];
                    p->offset = base + pi[i].offset;
                    p->numel = pi[i].numel;
                    p->no_decay = pi[i].no_decay;
                }
                n++;
            }
            off = base + gdn2_layer_param_count(&lc);
            free(pi);
        }
        snprintf(nm, sizeof nm, "transformer.h.%lld.norm_2.weight", (long long)l);
        add_param(out, cap, &n, &off, nm, 1, d, 0, 1);
        snprintf(nm, sizeof nm, "transformer.h.%lld.mlp.swiglu.w1.weight", (long long)l);
        add_param(out, cap, &n, &off, nm, 2, I, d, 0);
        snprintf(nm, sizeof nm, "transformer.h.%lld.mlp.swiglu.w2.weight", (long long)l);
        add_param(out, cap, &n, &off, nm, 2, I, d, 0);
        snprintf(nm, sizeof nm, "transformer.h.%lld.mlp.swiglu.w3.weight", (long long)l);
        add_param(out, cap, &n, &off, nm, 2, d, I, 0);
    }
    add_param(out, cap, &n, &off, "transformer.ln_f.weight", 1, d, 0, 1);
    add_param(out, cap, &n, &off, "lm_head.weight", 2, c->padded_vocab, d, 0);
    return n;
}

size_t gdn2_model_param_count(const gdn2_model_cfg *c) {
    int n = gdn2_model_params(c, NULL, 0);
    gdn2_model_param *p = calloc((size_t)n, sizeof *p);
    if (!p) return 0;
    gdn2_model_params(c, p, n);
    size_t tot = p[n - 1].offset + p[n - 1].numel;
    free(p);
    return tot;
}
