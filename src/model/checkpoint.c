/* Checkpoints. The model file is a safetensors file with the official lit_gpt parameter names and
 * the config JSON in __metadata__ ("format": "gdn2", "config": {...}); the optimizer file holds the
 * AdamW moments ("adamw.m", "adamw.v", flat, in parameter order), the step and the trainer's state.
 * Both are written atomically (temp file + rename) by gdn2_st_write. fp32 throughout, so a resume
 * continues bit-exactly. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_quant.h"
#include "model_internal.h"
#include "util/internal.h"

int gdn2_model_save(const gdn2_model *m, const char *path) {
    gdn2_tensor *t = calloc((size_t)m->n_tensors, sizeof *t);
    char *cfg = gdn2_model_config_to_json(&m->cfg);
    if (!t || !cfg) {
        free(t), free(cfg);
        return gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory writing the checkpoint", path);
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        t[i].name = (char *)p->name;
        t[i].dtype = GDN2_F32;
        t[i].ndim = p->ndim;
        for (int k = 0; k < p->ndim; k++) t[i].shape[k] = p->shape[k];
        t[i].nbytes = p->numel * sizeof(float);
        t[i].data = m->params + p->offset;
    }
    const char *keys[] = {"format", "config"};
    const char *vals[] = {"gdn2", cfg};
    int st = gdn2_st_write(path, t, m->n_tensors, keys, vals, 2);
    free(t), free(cfg);
    return st;
}

int gdn2_model_load_params(gdn2_model *m, const gdn2_st *st, const char *prefix) {
    char nm[256];
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        snprintf(nm, sizeof nm, "%s%s", prefix, p->name);
        int64_t shape[4];
        for (int k = 0; k < 4; k++) shape[k] = p->shape[k];
        float *buf = NULL;
        char nq[300];
        snprintf(nq, sizeof nq, "%s.q", nm);
        if (p->ndim == 2 && !gdn2_st_find(st, nm) && gdn2_st_find(st, nq)) { /* packed (gdn2_model_save_quant) */
            int s = gdn2_quant_load_weight(st, nm, p->shape[0], p->shape[1], m->params + p->offset);
            if (s) return s;
            continue;
        }
        int s = gdn2_st_get_f32(st, nm, 1, p->ndim, shape, &buf);
        if (s) return s;
        memcpy(m->params + p->offset, buf, p->numel * sizeof(float));
        free(buf);
    }
    return GDN2_OK;
}

int gdn2_model_load(const char *path, gdn2_model **out) {
    *out = NULL;
    gdn2_st st;
    int s = gdn2_st_read(path, &st);
    if (s) return s;
    const char *cfg = gdn2_st_meta(&st, "config");
    if (!cfg) cfg = gdn2_st_meta(&st, "meta"); /* official fixtures: meta.config */
    gdn2_model_cfg c;
    if (!cfg) s = gdn2_error(GDN2_ERR_FORMAT, "%s: no model config in the metadata ('config' or 'meta')", path);
    else if ((s = gdn2_model_config_from_json(cfg, &c))) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", gdn2_last_error());
        gdn2_error(s, "%s: %s", path, msg);
    }
    if (!s) {
        /* every parameter is stored (4 bytes as F32, at least half a byte packed as int4): a config
         * that asks for more than twice the file's tensor bytes is refused before it is allocated */
        size_t held = 0, need = gdn2_model_param_count(&c);
        for (int i = 0; i < st.n_tensors; i++) held += st.tensors[i].nbytes; /* <= the file size */
        if (need / 2 > held)
            s = gdn2_error(GDN2_ERR_FORMAT,
                           "%s: the config describes %zu parameters but the file holds only %zu bytes of tensors",
                           path, need, held);
    }
    gdn2_model *m = NULL;
    if (!s) s = gdn2_model_create(&c, &m);
    const int bare = gdn2_st_find(&st, "transformer.wte.weight") || gdn2_st_find(&st, "transformer.wte.weight.q");
    if (!s) s = gdn2_model_load_params(m, &st, bare ? "" : "param."); /* official fixtures: "param." */
    gdn2_st_free(&st);
    if (s) {
        gdn2_model_free(m);
        return s;
    }
    *out = m;
    return GDN2_OK;
}

int gdn2_adamw_save(const gdn2_adamw *o, const char *path, const char *train_json) {
    gdn2_tensor t[2];
    memset(t, 0, sizeof t);
    const char *names[2] = {"adamw.m", "adamw.v"};
    float *d[2] = {o->m, o->v};
    for (int i = 0; i < 2; i++) {
        t[i].name = (char *)names[i];
        t[i].dtype = GDN2_F32;
        t[i].ndim = 1;
        t[i].shape[0] = (int64_t)o->n;
        t[i].nbytes = o->n * sizeof(float);
        t[i].data = d[i];
    }
    char step[32], hyp[256];
    snprintf(step, sizeof step, "%lld", (long long)o->step);
    snprintf(hyp, sizeof hyp, "{\"beta1\":%.9g,\"beta2\":%.9g,\"eps\":%.9g,\"weight_decay\":%.9g,\"exempt_no_decay\":%d}",
             o->cfg.beta1, o->cfg.beta2, o->cfg.eps, o->cfg.weight_decay, o->cfg.exempt_no_decay);
    const char *keys[] = {"format", "step", "adamw", "train"};
    const char *vals[] = {"gdn2-adamw", step, hyp, train_json ? train_json : "{}"};
    return gdn2_st_write(path, t, 2, keys, vals, 4);
}

int gdn2_adamw_load(gdn2_adamw *o, const char *path, char **train_json) {
    if (train_json) *train_json = NULL;
    gdn2_st st;
    int s = gdn2_st_read(path, &st);
    if (s) return s;
    const char *step = gdn2_st_meta(&st, "step");
    if (!step) s = gdn2_error(GDN2_ERR_FORMAT, "%s: no 'step' in the metadata (not a gdn2 optimizer file)", path);
    float *mv[2] = {NULL, NULL};
    const char *names[2] = {"adamw.m", "adamw.v"};
    for (int i = 0; i < 2 && !s; i++) {
        int64_t shape[1] = {(int64_t)o->n};
        s = gdn2_st_get_f32(&st, names[i], 1, 1, shape, &mv[i]);
    }
    if (!s) {
        memcpy(o->m, mv[0], o->n * sizeof(float));
        memcpy(o->v, mv[1], o->n * sizeof(float));
        o->step = strtoll(step, NULL, 10);
        const char *tj = gdn2_st_meta(&st, "train");
        if (train_json && tj) *train_json = strdup(tj);
    }
    free(mv[0]), free(mv[1]);
    gdn2_st_free(&st);
    return s;
}
