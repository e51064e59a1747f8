/* Loading and comparing a training checkpoint pair (PATH + PATH.optim) in tests: the resume and
 * rank-count tests compare weights and AdamW moments bit for bit. Header-only. */
#ifndef GDN2_TEST_CKPT_PAIR_H
#define GDN2_TEST_CKPT_PAIR_H

#include <stdio.h>
#include <string.h>

#include "gdn2_model.h"

/* *m and *o from PATH and PATH.optim (o initialised with the default AdamW config) */
static inline int ckpt_load_pair(const char *path, gdn2_model **m, gdn2_adamw *o) {
    char op[1300];
    snprintf(op, sizeof op, "%s.optim", path);
    gdn2_adamw_cfg ac = gdn2_adamw_default();
    int st = gdn2_model_load(path, m);
    if (!st) st = gdn2_adamw_init(o, &ac, (*m)->n_flat);
    if (!st) st = gdn2_adamw_load(o, op, NULL);
    return st;
}

/* 1 when the two pairs hold the same weights, AdamW m, v and step, bit for bit; why says which differ */
static inline int ckpt_same_pair(const char *a, const char *b, char *why, size_t n) {
    gdn2_model *ma = NULL, *mb = NULL;
    gdn2_adamw oa, ob;
    memset(&oa, 0, sizeof oa), memset(&ob, 0, sizeof ob);
    int st = ckpt_load_pair(a, &ma, &oa);
    if (!st) st = ckpt_load_pair(b, &mb, &ob);
    int same = 0;
    if (st) snprintf(why, n, "%s", gdn2_last_error());
    else if (ma->n_flat != mb->n_flat) snprintf(why, n, "flat blocks of %zu vs %zu floats", ma->n_flat, mb->n_flat);
    else {
        const size_t by = ma->n_flat * sizeof(float);
        int w = !memcmp(ma->params, mb->params, by), m1 = !memcmp(oa.m, ob.m, by), v = !memcmp(oa.v, ob.v, by);
        same = w && m1 && v && oa.step == ob.step;
        snprintf(why, n, "weights %s, m %s, v %s, step %lld vs %lld", w ? "equal" : "DIFFER", m1 ? "equal" : "DIFFER",
                 v ? "equal" : "DIFFER", (long long)oa.step, (long long)ob.step);
    }
    gdn2_model_free(ma), gdn2_model_free(mb);
    gdn2_adamw_free(&oa), gdn2_adamw_free(&ob);
    return same;
}

#endif
