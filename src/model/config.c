/* Model configs: the named ones (docs/MODEL.md plus tiny/small for the CPU), layout strings, the
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

/* docs/MODEL.md (official 1.3B, Jellyfish 100M/305M) and two CPU sizes */
static const named_cfg k_named[] = {
    {"gdn2_1.3B", 18, 2304, 18, 128, 16, 128, 6208, 32000, 2048, 4096, "gdn2"},
    {"swa_gdn2_1.3B", 18, 2304, 18, 128, 16, 128, 6784, 32000, 2048, 4096, "gdn2,swa"},
    {"gdn2_12h_100M", 12, 768, 12, 64, 12, 64, 2048, 32000, 2048, 4096, "gdn2"},
    {"gdn2_12h_305M", 12, 1024, 16, 64, 16, 64, 4352, 32000, 2048, 4096, "gdn2"},
    {"swa_gdn2_100M", 12, 768, 12, 64, 4, 64, 2048, 32000, 2048, 4096, "gdn2,swa"},
    {"tiny", 2, 64, 2, 32, 1, 64, 128, 256, 128, 1024, "gdn2"},
    {"small", 4, 128, 4, 32, 4, 32, 352, 256, 128, 1024, "gdn2"},
    /* the GPU tests' hybrid: tiny's size with attention heads of 64 (the CUDA attention's sizes) */
    {"hybrid_tiny", 2, 128, 2, 64, 2, 64, 256, 256, 32, 1024, "gdn2,swa"},
    /* the GPU demo's char model: nanoGPT shakespeare-char's size (6 x 384, ~10.7M parameters) */
    {"char_10M", 6, 384, 6, 64, 6, 64, 1024, 256, 256, 1024, "gdn2"},
};

const char *gdn2_model_config_names(void) {
    return "gdn2_1.3B, swa_gdn2_1.3B, gdn2_12h_100M, gdn2_12h_305M, swa_gdn2_100M, tiny, small, hybrid_tiny, char_10M";
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

/* Limits of the config's sizes: far above any real model (the 1.3B has n_embd 2304, vocab 32000,
 * intermediate 6784, heads 16-18 of 128), low enough that every parameter count and activation
 * size computed from them fits in 64 bits; what is too large for the machine is then an
 * allocation failure with a message, never a wrapped product. */
#define CFG_MAX_EMBD ((int64_t)1 << 16)   /* n_embd                                    */
#define CFG_MAX_VOCAB ((int64_t)1 << 24)  /* vocab_size                                */
#define CFG_MAX_PAD ((int64_t)1 << 16)    /* padding_multiple                          */
#define CFG_MAX_INTER ((int64_t)1 << 20)  /* intermediate_size                         */
#define CFG_MAX_HEADS 4096                /* n_head, n_query_groups, gdn2 (v) heads     */
#define CFG_MAX_HEAD_DIM 4096             /* head_size, gdn2_head_dim (the CPU kernels) */
#define CFG_MAX_EXPAND 16                 /* gdn2_expand_v                             */
#define CFG_MAX_CONV 64                   /* gdn2_conv_size                            */
#define CFG_MAX_LEN ((int64_t)1 << 24)    /* block_size, local_window (tokens)         */

/* lo <= v <= hi, or an error naming the config key, the value and the range */
static int cfg_range(const char *key, int64_t v, int64_t lo, int64_t hi) {
    if (v >= lo && v <= hi) return GDN2_OK;
    return gdn2_error(GDN2_ERR_ARG, "model config: %s = %lld is out of range [%lld, %lld]", key, (long long)v,
                      (long long)lo, (long long)hi);
}

int gdn2_model_check(gdn2_model_cfg *c) {
    int st;
    if (c->padding_multiple < 1) c->padding_multiple = 1;
    /* every size is bounded, the ones a layout does not use too (they are saved with the config);
     * those <= 0 that mean "default" are resolved further down */
    if ((st = cfg_range("n_layer", c->n_layer, 1, GDN2_MAX_LAYERS)) ||
        (st = cfg_range("n_embd", c->n_embd, 1, CFG_MAX_EMBD)) ||
        (st = cfg_range("vocab_size", c->vocab_size, 1, CFG_MAX_VOCAB)) ||
        (st = cfg_range("padding_multiple", c->padding_multiple, 1, CFG_MAX_PAD)) ||
        (st = cfg_range("intermediate_size", c->intermediate_size, 1, CFG_MAX_INTER)) ||
        (st = cfg_range("block_size", c->block_size, 1, CFG_MAX_LEN)) ||
        (st = cfg_range("local_window", c->local_window, 0, CFG_MAX_LEN)) ||
        (st = cfg_range("n_head", c->n_head, 0, CFG_MAX_HEADS)) ||
        (st = cfg_range("n_query_groups", c->n_query_groups, 0, CFG_MAX_HEADS)) ||
        (st = cfg_range("head_size", c->head_size, 0, CFG_MAX_HEAD_DIM)) ||
        (st = cfg_range("gdn2_num_heads", c->gdn_heads, 0, CFG_MAX_HEADS)) ||
        (st = cfg_range("gdn2_num_v_heads", c->gdn_v_heads, 0, CFG_MAX_HEADS)) ||
        (st = cfg_range("gdn2_head_dim", c->gdn_head_dim, 0, CFG_MAX_HEAD_DIM)) ||
        (st = cfg_range("gdn2_expand_v", c->gdn_expand_v, 0, CFG_MAX_EXPAND)) ||
        (st = cfg_range("gdn2_conv_size", c->conv_size, 0, CFG_MAX_CONV)))
        return st;
    c->padded_vocab = (c->vocab_size + c->padding_multiple - 1) / c->padding_multiple * c->padding_multiple;
    if (!(c->norm_eps > 0 && isfinite(c->norm_eps)))
        return gdn2_error(GDN2_ERR_ARG, "model config: norm_eps %g must be finite and > 0", c->norm_eps);
    if (!(c->rope_base > 0 && isfinite(c->rope_base)))
        return gdn2_error(GDN2_ERR_ARG, "model config: rope_base %g must be finite and > 0", c->rope_base);
    if (!c->layout[0]) {
        int st = gdn2_model_set_layout(c, "gdn2");
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
        /* the derived head size obeys the same range as a given one (else a config that loads is
         * refused when its own saved copy is read back: tests/fuzz/regressions/config_check_twice.json) */
        int st = cfg_range("head_size", c->head_size, 0, CFG_MAX_HEAD_DIM);
        if (st) return st;
        if (c->n_query_groups > c->n_head || c->n_head % c->n_query_groups || c->head_size % 2 || c->head_size < 2)
            return gdn2_error(GDN2_ERR_ARG,
                              "model config: n_head %lld must be a multiple of n_query_groups %lld, head_size %lld even",
                              (long long)c->n_head, (long long)c->n_query_groups, (long long)c->head_size);
        for (int64_t i = 0; i < c->n_layer; i++)
            if (c->kind[i] == GDN2_LAYER_SWA && c->local_window < 1)
                return gdn2_error(GDN2_ERR_ARG, "model config: layer %lld is swa but local_window is %lld",
                                  (long long)i, (long long)c->local_window);
    }
    if (any_rec) {
        if (c->gdn_v_heads <= 0) c->gdn_v_heads = c->gdn_heads;
        if (c->gdn_expand_v <= 0) c->gdn_expand_v = 1;
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
    l.kernel = c->kernel;
    return l;
}

/* ---- JSON --------------------------------------------------------------------------------- */
/* Integer key: 1 and *v set when present as a number, 0 when absent (or not a number: defaults
 * apply); -1 (error recorded) when the number is not an integer of magnitude <= 2^53 (converting
 * a larger or fractional double, or a huge one, to int64 is not defined / not exact). */
static int json_i64(const cJSON *o, const char *key, int64_t *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it)) return 0;
    const double x = it->valuedouble;
    if (!(fabs(x) <= 9007199254740992.0) || x != floor(x)) {
        gdn2_error(GDN2_ERR_FORMAT, "model config: '%s' = %g is not an integer in [-2^53, 2^53]", key, x);
        return -1;
    }
    *v = (int64_t)x;
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
    /* every integer key, read in one pass so that a malformed one stops the load */
    int64_t neg = 0, per = 0;
    c->n_head = 1;
    const struct {
        const char *key;
        int64_t *dst;
    } ints[] = {
        {"n_layer", &c->n_layer}, {"n_embd", &c->n_embd}, {"vocab_size", &c->vocab_size},
        {"padding_multiple", &c->padding_multiple}, {"intermediate_size", &c->intermediate_size},
        {"n_head", &c->n_head}, {"n_query_groups", &c->n_query_groups}, {"head_size", &c->head_size},
        {"block_size", &c->block_size}, {"local_window", &c->local_window}, {"gdn2_num_heads", &c->gdn_heads},
        {"gdn2_head_dim", &c->gdn_head_dim}, {"gdn2_num_v_heads", &c->gdn_v_heads},
        {"gdn2_expand_v", &c->gdn_expand_v}, {"gdn2_conv_size", &c->conv_size},
        {"gdn2_allow_neg_eigval", &neg}, {"gdn2_per_layer", &per},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (json_i64(o, ints[i].key, ints[i].dst) < 0) {
            cJSON_Delete(root);
            return GDN2_ERR_FORMAT;
        }
    /* lit_gpt keys that would select arithmetic gdn2 does not implement: absent, or the value it does */
    static const struct {
        const char *key, *want; /* want: "false", a number, or strings separated by '|' */
    } fixed[] = {{"bias", "false"},          {"lm_head_bias", "false"},  {"parallel_residual", "false"},
                 {"rotary_percentage", "1"}, {"_mlp_class", "LLaMAMLP"}, {"_norm_class", "RMSNorm|FusedRMSNorm"}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, fixed[i].key);
        if (!it || cJSON_IsNull(it)) continue;
        int ok;
        if (!strcmp(fixed[i].want, "false")) ok = cJSON_IsFalse(it) || (cJSON_IsNumber(it) && it->valuedouble == 0);
        else if (!strcmp(fixed[i].want, "1")) ok = cJSON_IsNumber(it) && it->valuedouble == 1.0;
        else {
            ok = 0;
            if (cJSON_IsString(it)) {
                const size_t n = strlen(it->valuestring);
                for (const char *w = fixed[i].want; *w && !ok;) {
                    const char *bar = strchr(w, '|');
                    const size_t k = bar ? (size_t)(bar - w) : strlen(w);
                    ok = k == n && !strncmp(w, it->valuestring, k);
                    w += k + (bar != NULL);
                }
            }
        }
        if (!ok) {
            char *txt = cJSON_PrintUnformatted(it);
            const int e = gdn2_error(GDN2_ERR_FORMAT,
                                     "model config: %s = %s is not supported (gdn2 implements %s = %s only)",
                                     fixed[i].key, txt ? txt : "?", fixed[i].key, fixed[i].want);
            free(txt);
            cJSON_Delete(root);
            return e;
        }
    }
    if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "intermediate_size")))
        c->intermediate_size = 4 * c->n_embd; /* |n_embd| <= 2^53: no overflow; range-checked below */
    c->allow_neg_eigval = neg != 0;
    /* float keys: a finite number in float range (a double beyond FLT_MAX has no float value) */
    static const char *fkeys[2] = {"norm_eps", "rope_base"};
    float *fdst[2] = {&c->norm_eps, &c->rope_base};
    for (int i = 0; i < 2; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, fkeys[i]);
        if (!cJSON_IsNumber(it)) continue;
        const double x = it->valuedouble;
        if (!isfinite(x) || fabs(x) > FLT_MAX) {
            cJSON_Delete(root);
            return gdn2_error(GDN2_ERR_FORMAT, "model config: %s = %g is not a finite float", fkeys[i], x);
        }
        *fdst[i] = (float)it->valuedouble;
    }
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
/* Sizes from the config, multiplied and added with overflow checks. gdn2_model_check's bounds keep
 * every product far below 2^64; were one to overflow anyway, the result saturates at SIZE_MAX,
 * which no allocation satisfies (an out-of-memory error, not a wrapped size). */
static size_t mul_sat(size_t a, size_t b) {
    size_t r;
    return gdn2_mul_sz(a, b, &r) ? r : SIZE_MAX;
}
static size_t add_sat(size_t a, size_t b) {
    size_t r;
    return gdn2_add_sz(a, b, &r) ? r : SIZE_MAX;
}

static void add_param(gdn2_model_param *out, int cap, int *n, size_t *off, const char *name, int ndim, int64_t d0,
                      int64_t d1, int no_decay) {
    size_t numel = mul_sat((size_t)d0, ndim > 1 ? (size_t)d1 : 1);
    if (out && *n < cap) {
        gdn2_model_param *p = &out[*n];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", name);
        p->ndim = ndim;
        p->shape[0] = d0;
        if (ndim > 1) p->shape[1] = d1;
        p->offset = gdn2_param_align_up(*off);
        p->numel = numel;
        p->no_decay = no_decay;
    }
    (*n)++;
    *off = add_sat(gdn2_param_align_up(*off), numel);
}

/* Flat order: wte, then per block norm_1, attn.*, norm_2, mlp.swiglu.w1/w2/w3, then ln_f, lm_head;
 * every tensor, and a recurrent layer's block (whose own slots are aligned relative to its start),
 * at a multiple of GDN2_PARAM_ALIGN floats (gdn2_param_align_up). */
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
            const int64_t nq = (c->n_head + 2 * c->n_query_groups) * c->head_size; /* <= 3 * 4096 * 4096 */
            snprintf(nm, sizeof nm, "transformer.h.%lld.attn.attn.weight", (long long)l);
            add_param(out, cap, &n, &off, nm, 2, nq, d, 0);
            snprintf(nm, sizeof nm, "transformer.h.%lld.attn.proj.weight", (long long)l);
            add_param(out, cap, &n, &off, nm, 2, d, c->n_head * c->head_size, 0);
        } else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
            int np = gdn2_layer_params(&lc, NULL, 0);
            gdn2_param_info *pi = np > 0 ? calloc((size_t)np, sizeof *pi) : NULL;
            if (pi) gdn2_layer_params(&lc, pi, np);
            const size_t base = gdn2_param_align_up(off); /* == gdn2_model's layer_off[l] */
            for (int i = 0; pi && i < np; i++) {
                if (out && n < cap) {
                    gdn2_model_param *p = &out[n];
                    memset(p, 0, sizeof *p);
                    snprintf(p->name, sizeof p->name, "transformer.h.%lld.attn.%s", (long long)l, pi[i].name);
                    p->ndim = pi[i].ndim;
                    for (int k = 0; k < 4; k++) p->shape[k] = pi[i].shape[k];
                    p->offset = add_sat(base, pi[i].offset);
                    p->numel = pi[i].numel;
                    p->no_decay = pi[i].no_decay;
                }
                n++;
            }
            off = add_sat(base, gdn2_layer_param_count(&lc));
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

/* flat = 0: the parameters (sum of numel); 1: the floats of the flat block (end of the last tensor) */
static size_t model_size(const gdn2_model_cfg *c, int flat) {
    int n = gdn2_model_params(c, NULL, 0);
    gdn2_model_param *p = calloc((size_t)n, sizeof *p);
    if (!p) return 0;
    gdn2_model_params(c, p, n);
    size_t tot = 0;
    if (flat) tot = add_sat(p[n - 1].offset, p[n - 1].numel);
    else
        for (int i = 0; i < n; i++) tot = add_sat(tot, p[i].numel);
    free(p);
    return tot;
}

size_t gdn2_model_param_count(const gdn2_model_cfg *c) { return model_size(c, 0); }
size_t gdn2_model_flat_size(const gdn2_model_cfg *c) { return model_size(c, 1); }

/* The official harness's count (../peers official_train_bench.py, docs/BACKEND.md):
 *   6 N_nonemb + sum over attention layers of 12 n_head head_size avg_keys,
 *   avg_keys = mean_{i<T} min(i+1, window) (window T for full attention);
 * the recurrence's nominal chunked-WY FLOPs 3 HV (2C(3K+2V) + 6KV) per layer (C = 64) separately. */
double gdn2_model_flops_per_token(const gdn2_model_cfg *c, int64_t T, double *recurrence) {
    const size_t n = gdn2_model_param_count(c), wte = (size_t)c->padded_vocab * (size_t)c->n_embd;
    double attn = 0.0, rec = 0.0;
    for (int64_t l = 0; l < c->n_layer; l++) {
        if (c->kind[l] >= GDN2_LAYER_SWA) {
            const int64_t W = c->kind[l] == GDN2_LAYER_SWA && c->local_window > 0 ? c->local_window : T;
            double keys = 0.0;
            for (int64_t i = 0; i < T; i++) keys += (double)(i + 1 < W ? i + 1 : W);
            attn += 12.0 * (double)c->n_head * (double)c->head_size * keys / (double)T;
        } else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, (int)l);
            rec += 3.0 * (double)lc.HV * (2.0 * 64 * (3.0 * lc.K + 2.0 * lc.V) + 6.0 * lc.K * lc.V);
        }
    }
    if (recurrence) *recurrence = rec;
    return 6.0 * (double)(n - wte) + attn;
}
