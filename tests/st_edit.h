/* Test helper: a changed copy of a safetensors file, for the tests of bad input.
 *   st_copy_changed(src, dst, meta_key, meta_value, name, nan, at)
 * writes src's tensors and metadata to dst with the metadata entry meta_key (when not NULL) set to
 * meta_value, and the tensor `name` (when not NULL) changed: nan = 1 puts a NaN into its element `at`
 * (F32 or F64), nan = 0 makes it the I64 tensor [1,1] = {0}. Returns 0, or -1 when src cannot be read
 * or `name` is missing (or not a float tensor for nan = 1), else gdn2_st_write's status. */
#ifndef GDN2_TEST_ST_EDIT_H
#define GDN2_TEST_ST_EDIT_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_io.h"

static inline int st_copy_changed(const char *src, const char *dst, const char *meta_key, const char *meta_value,
                                  const char *name, int nan, size_t at) {
    static int64_t zero = 0;
    gdn2_st f;
    if (gdn2_st_read(src, &f)) return -1;
    const char **vals = malloc((size_t)(f.n_meta + 1) * sizeof *vals);
    int ok = vals != NULL;
    for (int i = 0; ok && i < f.n_meta; i++)
        vals[i] = meta_key && !strcmp(f.meta_keys[i], meta_key) ? meta_value : f.meta_values[i];
    for (int i = 0; ok && name && i < f.n_tensors; i++) {
        gdn2_tensor *t = &f.tensors[i];
        if (strcmp(t->name, name)) continue;
        name = NULL; /* found */
        if (!nan) {
            t->dtype = GDN2_I64, t->ndim = 2, t->shape[0] = t->shape[1] = 1, t->nbytes = 8, t->data = &zero;
        } else if (t->dtype == GDN2_F32 && (at + 1) * 4 <= t->nbytes) {
            const float x = NAN;
            memcpy((char *)t->data + at * 4, &x, 4);
        } else if (t->dtype == GDN2_F64 && (at + 1) * 8 <= t->nbytes) {
            const double x = NAN;
            memcpy((char *)t->data + at * 8, &x, 8);
        } else {
            ok = 0;
        }
    }
    const int rc = !ok || name ? -1
                               : gdn2_st_write(dst, f.tensors, f.n_tensors, (const char *const *)f.meta_keys, vals,
                                               f.n_meta);
    free(vals);
    gdn2_st_free(&f);
    return rc;
}

#endif
