/* Loading the official op fixtures (tests/fixtures/official/op_*.safetensors, or $GDN2_FIXTURES) in
 * tests: one place for the path, the FAIL when a fixture is missing or unreadable, and the `meta`
 * options. The fixtures ship with the repository, so a missing one is a broken checkout, not a skip. */
#ifndef GDN2_TEST_FIXTURE_H
#define GDN2_TEST_FIXTURE_H

#include <cjson/cJSON.h>

#include "check.h"
#include "gdn2.h"

/* fixture_dir()/file into buf (the one place fixture paths are built) */
static inline const char *fixture_path(char *buf, size_t cap, const char *file) {
    int n = snprintf(buf, cap, "%s/%s", fixture_dir(), file);
    if (n < 0 || (size_t)n >= cap) buf[0] = 0;
    return buf;
}

/* Read fixture `file` into st. Returns 1 when loaded; 0 after a failed CHECK naming the path and the
 * reason (not found, or not a readable safetensors file). */
static inline int fixture_read(const char *file, gdn2_st *st) {
    char path[1024];
    fixture_path(path, sizeof path, file);
    int rc = gdn2_st_read(path, st);
    CHECK(rc == GDN2_OK, "fixture %s reads%s%s", path, rc ? ": " : "", rc ? gdn2_last_error() : "");
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
