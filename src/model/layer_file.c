/* Layer files: a safetensors file holding one GatedDeltaNet2 layer in the format of the official
 * fixture (tests/fixtures/official/layer.safetensors): the layer's kwargs in the __metadata__
 * "meta" JSON's "config" object and every parameter as <prefix><official name>. Read by
 * `gdn2 layer` and by tests/test_layer.c. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_layer.h"
#include "ops/check.h"
#include "util/internal.h"

/* meta.config.<key> as a number (a bool counts as 0/1), def when absent or null */
static int json_num(const cJSON *cfg, const char *key, double def, double *out, const char *path) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!it || cJSON_IsNull(it)) { *out = def; return 0; }
    if (cJSON_IsBool(it)) { *out = cJSON_IsTrue(it) ? 1.0 : 0.0; return 0; }
    if (!cJSON_IsNumber(it)) return gdn2_error(GDN2_ERR_FORMAT, "%s: meta.config.%s must be a number", path, key);
    *out = it->valuedouble;
    return 0;
}

int gdn2_layer_config_from_file(const gdn2_st *st, gdn2_layer_cfg *c) {
    if (!st || !c) return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_config_from_file: NULL argument");
    const char *path = st->path ? st->path : "(safetensors)";
    const char *meta = gdn2_st_meta(st, "meta");
    if (!meta)
        return gdn2_error(GDN2_ERR_FORMAT, "%s: no \"meta\" entry in the __metadata__ (needs meta.config)", path);
    cJSON *root = cJSON_Parse(meta);
    const cJSON *cfg = root ? cJSON_GetObjectItemCaseSensitive(root, "config") : NULL;
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(root);
        return gdn2_error(GDN2_ERR_FORMAT, "%s: meta is not JSON with a \"config\" object", path);
    }
    double hidden, head_dim, nh, nvh, expand_v, conv, neg, eps;
    int rc = json_num(cfg, "hidden_size", -1, &hidden, path) || json_num(cfg, "head_dim", 128, &head_dim, path) ||
             json_num(cfg, "num_heads", 16, &nh, path) || json_num(cfg, "num_v_heads", -1, &nvh, path) ||
             json_num(cfg, "expand_v", 1, &expand_v, path) || json_num(cfg, "conv_size", 4, &conv, path) ||
             json_num(cfg, "allow_neg_eigval", 0, &neg, path) || json_num(cfg, "norm_eps", 1e-5, &eps, path);
    memset(c, 0, sizeof *c);
    c->mixer = GDN2_MIXER_GDN2;
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(cfg, "mixer");
    if (!rc && mx && cJSON_IsString(mx)) {
        if (!strcmp(mx->valuestring, "kda")) c->mixer = GDN2_MIXER_KDA;
        else if (!strcmp(mx->valuestring, "gdn")) c->mixer = GDN2_MIXER_GDN;
        else if (strcmp(mx->valuestring, "gdn2"))
            rc = gdn2_error(GDN2_ERR_FORMAT, "%s: meta.config.mixer '%s' is not gdn2, kda or gdn", path, mx->valuestring);
    }
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(cfg, "use_short_conv");
    if (!rc && sc && cJSON_IsFalse(sc))
        rc = gdn2_error(GDN2_ERR_FORMAT, "%s: use_short_conv=false is not supported (the official layer uses the conv)",
                        path);
    const cJSON *cbias = cJSON_GetObjectItemCaseSensitive(cfg, "conv_bias");
    if (!rc && cbias && cJSON_IsTrue(cbias))
        rc = gdn2_error(GDN2_ERR_FORMAT, "%s: conv_bias=true is not supported (the official layer has no conv bias)",
                        path);
    cJSON_Delete(root);
    if (rc) return GDN2_ERR_FORMAT;
    if (hidden <= 0) return gdn2_error(GDN2_ERR_FORMAT, "%s: meta.config.hidden_size is missing or not positive", path);
    c->hidden = (int64_t)hidden;
    c->H = (int64_t)nh;
    c->HV = nvh > 0 ? (int64_t)nvh : c->H;
    c->K = (int64_t)head_dim;
    c->V = (int64_t)(head_dim * expand_v + 0.5);
    c->conv_size = (int64_t)conv;
    c->allow_neg_eigval = neg != 0.0;
    c->norm_eps = (float)eps;
    if (gdn2_layer_check(c)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", gdn2_last_error());
        return gdn2_error(GDN2_ERR_FORMAT, "%s: %s", path, msg);
    }
    return GDN2_OK;
}

int gdn2_layer_load_params(const gdn2_layer_cfg *c, const gdn2_st *st, const char *prefix, float *params) {
    if (!c || !st || !params) return gdn2_error(GDN2_ERR_ARG, "gdn2_layer_load_params: NULL argument");
    if (!prefix) prefix = "";
    const int np = gdn2_layer_params(c, NULL, 0);
    gdn2_param_info *pi = calloc((size_t)np, sizeof *pi);
    if (!pi) return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the layer's parameter table");
    gdn2_layer_params(c, pi, np);
    int rc = GDN2_OK;
    memset(params, 0, gdn2_layer_param_count(c) * sizeof(float)); /* the alignment gaps */
    for (int i = 0; i < np && !rc; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, pi[i].name);
        int64_t shape[4];
        memcpy(shape, pi[i].shape, sizeof shape);
        float *p = NULL;
        if ((rc = gdn2_st_get_f32(st, name, 1, pi[i].ndim, shape, &p))) break;
        memcpy(params + pi[i].offset, p, pi[i].numel * sizeof(float));
        free(p);
        rc = gdn2_check_tensor_values(st->path, name, params + pi[i].offset, pi[i].ndim, pi[i].shape, 0, pi[i].numel,
                                      0, 0);
    }
    free(pi);
    return rc;
}
