/* Model-level weight quantization (include/gdn2_quant_model.h, docs/QUANT.md): which of a model's
 * Linear weights are quantized (the weight sets), fake quantization of a model in place, and the
 * packed checkpoints (NAME.q + NAME.scale) with their loader. The matrix formats themselves are
 * src/quant/quant.c's. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_quant_model.h"
#include "util/internal.h"

static int in_list(const char *s, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(s, list[i])) return 1;
    return 0;
}

int gdn2_quant_set_of(const char *name) {
    static const char *const proj[] = {"attn.q_proj.weight", "attn.k_proj.weight",  "attn.v_proj.weight",
                                       "attn.o_proj.weight", "attn.attn.weight",    "attn.proj.weight",
                                       "mlp.swiglu.w1.weight", "mlp.swiglu.w2.weight", "mlp.swiglu.w3.weight",
                                       NULL};
    static const char *const gates[] = {"attn.b_proj.weight",   "attn.w_proj.weight",   "attn.f_proj.0.weight",
                                        "attn.f_proj.1.weight", "attn.a_proj.weight",   "attn.g_proj.0.weight",
                                        "attn.g_proj.1.weight", NULL};
    if (!name) return 0;
    if (!strcmp(name, "transformer.wte.weight") || !strcmp(name, "lm_head.weight")) return GDN2_QSET_HEAD;
    const char *pre = "transformer.h.";
    size_t np = strlen(pre);
    if (strncmp(name, pre, np)) return 0;
    const char *p = name + np;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
    if (*p++ != '.') return 0;
    if (in_list(p, proj)) return GDN2_QSET_PROJ;
    if (in_list(p, gates)) return GDN2_QSET_GATES;
    return 0;
}

int gdn2_quant_parse_sets(const char *s, int *sets) {
    if (!s || !sets) return gdn2_error(GDN2_ERR_ARG, "gdn2_quant_parse_sets: NULL set list");
    int m = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 4 && !strncmp(p, "proj", 4)) m |= GDN2_QSET_PROJ;
        else if (n == 5 && !strncmp(p, "gates", 5)) m |= GDN2_QSET_GATES;
        else if (n == 4 && !strncmp(p, "head", 4)) m |= GDN2_QSET_HEAD;
        else if (n == 3 && !strncmp(p, "all", 3)) m |= GDN2_QSET_PROJ | GDN2_QSET_GATES | GDN2_QSET_HEAD;
        else
            return gdn2_error(GDN2_ERR_ARG, "gdn2_quant_parse_sets: unknown weight set '%.*s' in '%s' (proj, gates, head, all)",
                              (int)n, p, s);
        p += n;
        if (*p == ',') p++;
    }
    if (!m) return gdn2_error(GDN2_ERR_ARG, "gdn2_quant_parse_sets: empty weight set list '%s' (proj, gates, head, all)", s);
    *sets = m;
    return GDN2_OK;
}

const char *gdn2_quant_sets_str(int sets, char *buf, size_t cap) {
    if (!buf || !cap) return buf;
    buf[0] = 0;
    const char *names[3] = {"proj", "gates", "head"};
    size_t len = 0;
    for (int i = 0; i < 3; i++)
        if (sets & (1 << i)) {
            int k = snprintf(buf + len, cap - len, "%s%s", len ? "," : "", names[i]);
            if (k < 0 || (size_t)k >= cap - len) break;
            len += (size_t)k;
        }
    return buf;
}

int gdn2_model_fake_quant(gdn2_model *m, int bits, int64_t group, int sets, gdn2_quant_stats *stats) {
    if (!m) return gdn2_error(GDN2_ERR_ARG, "gdn2_model_fake_quant: model is NULL");
    int st = gdn2_quant_sizes(bits, 1, 1, group, NULL, NULL);
    if (st) return st;
    if (sets <= 0 || (sets & ~(GDN2_QSET_PROJ | GDN2_QSET_GATES | GDN2_QSET_HEAD)))
        return gdn2_error(GDN2_ERR_ARG, "gdn2_model_fake_quant: bad weight-set mask %d", sets);
    gdn2_quant_stats s;
    memset(&s, 0, sizeof s);
    int64_t maxc = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        s.model_bytes_fp32 += p->numel * sizeof(float);
        if (p->ndim == 2 && (gdn2_quant_set_of(p->name) & sets) && p->shape[1] > maxc) maxc = p->shape[1];
    }
    s.model_bytes_quant = s.model_bytes_fp32;
    if (!maxc) {
        if (stats) *stats = s;
        return GDN2_OK;
    }
    size_t qb, ns;
    gdn2_quant_sizes(bits, 1, maxc, group, &qb, &ns);
    uint8_t *qrow = gdn2_malloc(qb, "quantized row");
    float *srow = gdn2_malloc(ns * sizeof(float), "row scales"), *tmp = gdn2_malloc((size_t)maxc * sizeof(float), "row");
    if (!qrow || !srow || !tmp) {
        free(qrow), free(srow), free(tmp);
        return GDN2_ERR_NOMEM;
    }
    double err2 = 0.0, ref2 = 0.0;
    for (int i = 0; i < m->n_tensors && !st; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        if (p->ndim != 2 || !(gdn2_quant_set_of(p->name) & sets)) continue;
        const int64_t rows = p->shape[0], cols = p->shape[1];
        float *w = m->params + p->offset;
        for (int64_t r = 0; r < rows; r++) {
            float *x = w + r * cols;
            if ((st = gdn2_quantize(bits, group, x, 1, cols, qrow, srow))) {
                char msg[256];
                snprintf(msg, sizeof msg, "%s", gdn2_last_error());
                st = gdn2_error(st, "gdn2_model_fake_quant: %s row %lld: %s", p->name, (long long)r, msg);
                break;
            }
            gdn2_dequantize(bits, group, qrow, srow, 1, cols, tmp);
            for (int64_t c = 0; c < cols; c++) {
                double e = (double)tmp[c] - (double)x[c];
                err2 += e * e;
                ref2 += (double)x[c] * (double)x[c];
            }
            memcpy(x, tmp, (size_t)cols * sizeof(float));
        }
        size_t qbytes = gdn2_quant_nbytes(bits, rows, cols, group);
        s.n_tensors++;
        s.n_weights += p->numel;
        s.bytes_fp32 += p->numel * sizeof(float);
        s.bytes_quant += qbytes;
        s.model_bytes_quant = s.model_bytes_quant - p->numel * sizeof(float) + qbytes;
    }
    free(qrow), free(srow), free(tmp);
    s.weight_rel_rmse = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2);
    if (stats) *stats = s;
    return st;
}

/* ---- packed checkpoints ------------------------------------------------------------------ */
int gdn2_model_save_quant(const gdn2_model *m, const char *path, int bits, int64_t group, int sets) {
    if (!m || !path) return gdn2_error(GDN2_ERR_ARG, "gdn2_model_save_quant: model or path is NULL");
    int st = gdn2_quant_sizes(bits, 1, 1, group, NULL, NULL);
    if (st) return st;
    if (sets <= 0 || (sets & ~(GDN2_QSET_PROJ | GDN2_QSET_GATES | GDN2_QSET_HEAD)))
        return gdn2_error(GDN2_ERR_ARG, "gdn2_model_save_quant: bad weight-set mask %d", sets);
    if (bits == 8) group = 0; /* one scale per row: no group in the file */
    int nsel = 0;
    for (int i = 0; i < m->n_tensors; i++)
        nsel += m->tensors[i].ndim == 2 && (gdn2_quant_set_of(m->tensors[i].name) & sets);
    const int nt = m->n_tensors + nsel; /* a selected weight becomes two tensors */
    gdn2_tensor *t = calloc((size_t)nt, sizeof *t);
    void **owned = calloc((size_t)(2 * nsel + 1), sizeof *owned); /* q, scale buffers and names */
    char **names = calloc((size_t)(2 * nsel + 1), sizeof *names);
    char *cfg = gdn2_model_config_to_json(&m->cfg);
    if (!t || !owned || !names || !cfg) {
        st = gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory writing the packed checkpoint", path);
        goto done;
    }
    int k = 0, no = 0, nn = 0;
    for (int i = 0; i < m->n_tensors && !st; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        const float *w = m->params + p->offset;
        if (!(p->ndim == 2 && (gdn2_quant_set_of(p->name) & sets))) {
            t[k].name = (char *)p->name;
            t[k].dtype = GDN2_F32;
            t[k].ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) t[k].shape[d] = p->shape[d];
            t[k].nbytes = p->numel * sizeof(float);
            t[k++].data = (void *)w;
            continue;
        }
        const int64_t rows = p->shape[0], cols = p->shape[1];
        size_t qb, ns;
        gdn2_quant_sizes(bits, rows, cols, bits == 8 ? 1 : group, &qb, &ns);
        void *q = gdn2_malloc(qb, p->name);
        float *sc = gdn2_malloc(ns * sizeof(float), p->name);
        char *nq = malloc(strlen(p->name) + 3), *nsn = malloc(strlen(p->name) + 7);
        owned[no++] = q, owned[no++] = sc, names[nn++] = nq, names[nn++] = nsn;
        if (!q || !sc || !nq || !nsn) {
            st = gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory quantizing '%s'", path, p->name);
            break;
        }
        if ((st = gdn2_quantize(bits, bits == 8 ? 1 : group, w, rows, cols, q, sc))) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s", gdn2_last_error());
            st = gdn2_error(st, "gdn2_model_save_quant: %s: %s", p->name, msg);
            break;
        }
        sprintf(nq, "%s.q", p->name);
        sprintf(nsn, "%s.scale", p->name);
        t[k].name = nq;
        t[k].dtype = bits == 8 ? GDN2_I8 : GDN2_U8;
        t[k].ndim = 2;
        t[k].shape[0] = rows;
        t[k].shape[1] = bits == 8 ? cols : (cols + 1) / 2;
        t[k].nbytes = qb;
        t[k++].data = q;
        t[k].name = nsn;
        t[k].dtype = GDN2_F32;
        t[k].ndim = bits == 8 ? 1 : 2;
        t[k].shape[0] = rows;
        t[k].shape[1] = bits == 8 ? 0 : (cols + group - 1) / group;
        t[k].nbytes = ns * sizeof(float);
        t[k++].data = sc;
    }
    if (!st) {
        char sbuf[32], qj[96];
        snprintf(qj, sizeof qj, "{\"bits\":%d,\"group\":%lld,\"sets\":\"%s\"}", bits, (long long)group,
                 gdn2_quant_sets_str(sets, sbuf, sizeof sbuf));
        const char *keys[] = {"format", "config", "quant"};
        const char *vals[] = {"gdn2", cfg, qj};
        st = gdn2_st_write(path, t, k, keys, vals, 3);
    }
done:
    if (owned)
        for (int i = 0; i < 2 * nsel; i++) free(owned[i]);
    if (names)
        for (int i = 0; i < 2 * nsel; i++) free(names[i]);
    free(owned), free(names), free(t), free(cfg);
    return st;
}

/* bits and group from the file's "quant" metadata */
static int quant_meta(const gdn2_st *st, int *bits, int64_t *group) {
    const char *path = st->path ? st->path : "(safetensors)";
    const char *qj = gdn2_st_meta(st, "quant");
    if (!qj) return gdn2_error(GDN2_ERR_FORMAT, "%s: quantized tensors but no 'quant' metadata (bits, group)", path);
    cJSON *j = cJSON_Parse(qj);
    const cJSON *b = j ? cJSON_GetObjectItemCaseSensitive(j, "bits") : NULL;
    const cJSON *g = j ? cJSON_GetObjectItemCaseSensitive(j, "group") : NULL;
    int ok = cJSON_IsNumber(b) && cJSON_IsNumber(g) && (b->valuedouble == 8 || b->valuedouble == 4) &&
             (b->valuedouble == 8 || (g->valuedouble >= 1 && g->valuedouble <= (double)(1 << 30) &&
                                      g->valuedouble == (double)(int64_t)g->valuedouble));
    if (ok) {
        *bits = (int)b->valuedouble;
        *group = *bits == 8 ? 1 : (int64_t)g->valuedouble;
    }
    cJSON_Delete(j);
    if (!ok)
        return gdn2_error(GDN2_ERR_FORMAT, "%s: bad 'quant' metadata '%s' (expected {\"bits\": 8|4, \"group\": G >= 1})",
                          path, qj);
    return GDN2_OK;
}

int gdn2_quant_load_weight(const gdn2_st *st, const char *name, int64_t rows, int64_t cols, float *w) {
    if (!st || !name || !w || rows < 1 || cols < 1)
        return gdn2_error(GDN2_ERR_ARG, "gdn2_quant_load_weight: bad arguments");
    const char *path = st->path ? st->path : "(safetensors)";
    char nq[300], nsn[300];
    snprintf(nq, sizeof nq, "%s.q", name);
    snprintf(nsn, sizeof nsn, "%s.scale", name);
    const gdn2_tensor *tq = gdn2_st_find(st, nq), *ts = gdn2_st_find(st, nsn);
    if (!tq) return gdn2_error(GDN2_ERR_FORMAT, "%s: missing required tensor '%s' (or '%s')", path, name, nq);
    int bits = 0;
    int64_t group = 1;
    int rc = quant_meta(st, &bits, &group);
    if (rc) return rc;
    if (!ts) return gdn2_error(GDN2_ERR_FORMAT, "%s: '%s' has no scales '%s'", path, nq, nsn);
    const int64_t qcols = bits == 8 ? cols : (cols + 1) / 2, ng = (cols + group - 1) / group;
    const gdn2_dtype qdt = bits == 8 ? GDN2_I8 : GDN2_U8;
    char a[160], b[160];
    if (tq->dtype != qdt || tq->ndim != 2 || tq->shape[0] != rows || tq->shape[1] != qcols) {
        int64_t want[2] = {rows, qcols};
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s' is %s %s, expected %s %s (int%d)", path, nq,
                          gdn2_dtype_name(tq->dtype), gdn2_shape_str(tq->ndim, tq->shape, a, sizeof a),
                          gdn2_dtype_name(qdt), gdn2_shape_str(2, want, b, sizeof b), bits);
    }
    const int snd = bits == 8 ? 1 : 2;
    if (ts->dtype != GDN2_F32 || ts->ndim != snd || ts->shape[0] != rows || (snd == 2 && ts->shape[1] != ng)) {
        int64_t want[2] = {rows, ng};
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s' is %s %s, expected F32 %s", path, nsn,
                          gdn2_dtype_name(ts->dtype), gdn2_shape_str(ts->ndim, ts->shape, a, sizeof a),
                          gdn2_shape_str(snd, want, b, sizeof b));
    }
    const size_t n_scales = (size_t)rows * (size_t)(bits == 8 ? 1 : ng);
    float *sc = gdn2_malloc(n_scales * sizeof(float), nsn);
    if (!sc) return GDN2_ERR_NOMEM;
    memcpy(sc, ts->data, n_scales * sizeof(float)); /* the file's data section need not be aligned */
    for (size_t i = 0; i < n_scales; i++)
        if (!isfinite(sc[i]) || sc[i] < 0) {
            free(sc);
            return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s' has a negative or non-finite scale at %zu", path, nsn, i);
        }
    rc = gdn2_dequantize(bits, group, tq->data, sc, rows, cols, w);
    free(sc);
    return rc;
}
