/* libFuzzer target: the safetensors reader (src/io/safetensors.c).
 *
 * Each input is a whole file. gdn2_st_read must either refuse it with an error message or return a
 * table whose every tensor lies inside the file's data section with nbytes = numel x dtype size;
 * the typed getters then convert every tensor of the right class (F32/F64/BF16/F16 to float and
 * double, I32/I64 to int64) over its whole span, so an entry that points outside the buffer is an
 * ASan report even where the table looks consistent. Any other outcome (a crash, a sanitizer
 * report, a broken invariant: abort()) is a finding. Seeds: tests/fuzz/corpus/fuzz_safetensors/. */
#include "fuzz_common.h"

#include <string.h>

#include "gdn2.h"

static volatile float g_sink; /* keeps the reads of every converted element */

static void check_tensor(const gdn2_st *st, const gdn2_tensor *t, size_t file_size) {
    const char *lo = (const char *)st->buffer, *hi = lo + file_size, *d = (const char *)t->data;
    size_t es = gdn2_dtype_size(t->dtype);
    if (es == 0 || t->ndim < 0 || t->ndim > GDN2_MAX_DIMS) abort();
    size_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0) abort();
        numel *= (size_t)t->shape[i]; /* the reader has already refused a product that overflows */
    }
    if (numel * es != t->nbytes) abort();
    if (d < lo + 8 || d > hi || t->nbytes > (size_t)(hi - d)) abort();
    if (gdn2_st_find(st, t->name) != t) abort(); /* duplicate names are refused */

    int64_t shape[GDN2_MAX_DIMS];
    for (int i = 0; i < GDN2_MAX_DIMS; i++) shape[i] = -1;
    float *f = NULL;
    double *g = NULL;
    int64_t *x = NULL;
    if (gdn2_st_get_f32(st, t->name, 1, t->ndim, shape, &f) == GDN2_OK) {
        if (numel && !f) abort();
        for (size_t i = 0; i < numel; i++) g_sink += f[i];
    }
    if (gdn2_st_get_f64(st, t->name, 1, t->ndim, shape, &g) == GDN2_OK && numel && !g) abort();
    if (gdn2_st_get_i64(st, t->name, 1, t->ndim, shape, &x) == GDN2_OK && numel && !x) abort();
    free(f), free(g), free(x);
    char buf[32];
    gdn2_shape_str(t->ndim, t->shape, buf, sizeof buf); /* short buffer: must truncate, not overrun */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gdn2_st st;
    if (gdn2_st_read(fuzz_file(data, size), &st) != GDN2_OK) {
        if (!gdn2_last_error()[0]) abort(); /* a refusal always says why */
        return 0;
    }
    for (int i = 0; i < st.n_tensors; i++) check_tensor(&st, &st.tensors[i], size);
    for (int i = 0; i < st.n_meta; i++)
        if (!st.meta_keys[i] || !st.meta_values[i] || !gdn2_st_meta(&st, st.meta_keys[i])) abort();
    gdn2_st_free(&st);
    return 0;
}
