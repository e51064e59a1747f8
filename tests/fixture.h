/* Loading the official op fixtures (../shared/fixtures/official/op_*.safetensors) in tests: one
 * place for the path, the SKIP when ../shared is absent, and the `meta` options. */
#ifndef GDN2_TEST_FIXTURE_H
#define GDN2_TEST_FIXTURE_H

#include <cjson/cJSON.h>

#include "check.h"
#include "gdn2.h"

/* Read fixture `file` into st. Returns 1 when loaded; 0 after printing a SKIP (file absent) or a
 * failed CHECK (unreadable). */
static inline int fixture_read(const char *file, gdn2_st *st) {
    char path[1024];
    snprintf(path, sizeof path, "%s/fixtures/official/%s", shared_dir(), file);
    FILE *f = fopen(path, "rb");
    if (!f) {
        SKIP("fixture %s: not found (%s; set GDN2_SHARED)", file, path);
        return 0;
    }
    fclose(f);
    int rc = gdn2_st_read(path, st);
    CHECK(rc == GDN2_OK, "fixture %s reads%s%s", file, rc ? ": " : "", rc ? gdn2_last_error() : "");
    return rc == GDN2_OK;
}

/* Options from the fixture's `meta` JSON: scale, use_qk_l2norm_in_kernel, use_gate_in_kernel,
 * lower_bound (each optional). */
static inline void fixture_opts(const gdn2_st *st, gdn2_opts *op) {
    memset(op, 0, sizeof *op);
    const char *ms = gdn2_st_meta(st, "meta");
    cJSON *m = ms ? cJSON_Parse(ms) : NULL, *it;
    if (!m) return;
    if ((it = cJSON_GetObjectItemCaseSensitive(m, "scale")) && cJSON_IsNumber(it)) op->scale = (float)it->valuedouble;
    op->qk_l2norm = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "use_qk_l2norm_in_kernel"));
    op->gate_in_kernel = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "use_gate_in_kernel"));
    if ((it = cJSON_GetObjectItemCaseSensitive(m, "lower_bound")) && cJSON_IsNumber(it))
        op->lower_bound = (float)it->valuedouble;
    cJSON_Delete(m);
}

#endif
