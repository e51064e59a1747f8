/* gdn2 file formats: safetensors read/write (src/io). */
#ifndef GDN2_IO_H
#define GDN2_IO_H

#include "gdn2_export.h"

#include <stddef.h>
#include <stdint.h>

#include "gdn2_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GDN2_F32 = 0,
    GDN2_F64,
    GDN2_BF16,
    GDN2_F16,
    GDN2_I32,
    GDN2_I64,
    GDN2_I8,  /* int8 quantized weights (gdn2_model_save_quant) */
    GDN2_U8,  /* packed int4 quantized weights                 */
} gdn2_dtype;

#define GDN2_MAX_DIMS 8

typedef struct {
    char *name;
    gdn2_dtype dtype;
    int ndim;
    int64_t shape[GDN2_MAX_DIMS];
    size_t nbytes;
    void *data; /* points into the file's buffer (read) or the caller's memory (write) */
} gdn2_tensor;

typedef struct {
    char *path;
    int n_tensors;
    gdn2_tensor *tensors;
    int n_meta;
    char **meta_keys;   /* __metadata__ entries (string -> string) */
    char **meta_values;
    void *buffer;       /* owned file contents */
} gdn2_st;

/* Read and fully validate a safetensors file (header bound, JSON, dtypes, shapes vs byte spans,
 * offsets in range and non-overlapping, truncation). Errors name the file and the tensor. */
GDN2_API int gdn2_st_read(const char *path, gdn2_st *out);
GDN2_API void gdn2_st_free(gdn2_st *st);
GDN2_API const gdn2_tensor *gdn2_st_find(const gdn2_st *st, const char *name);
GDN2_API const char *gdn2_st_meta(const gdn2_st *st, const char *key); /* NULL if absent */
GDN2_API size_t gdn2_dtype_size(gdn2_dtype dt);
GDN2_API const char *gdn2_dtype_name(gdn2_dtype dt);

/* Fetch tensor `name` converted to a newly malloc'ed fp32 (or f64 / int64) array, checking its
 * shape: ndim must match and each shape[i] >= 0 must match (-1 = any; the actual dims are written
 * back into shape). required = 0: a missing tensor returns GDN2_OK with *out = NULL.
 * Errors: "FILE: tensor 'q' has shape [..], expected [..]" and similar. */
GDN2_API int gdn2_st_get_f32(const gdn2_st *st, const char *name, int required, int ndim, int64_t *shape, float **out);
GDN2_API int gdn2_st_get_f64(const gdn2_st *st, const char *name, int required, int ndim, int64_t *shape, double **out);
GDN2_API int gdn2_st_get_i64(const gdn2_st *st, const char *name, int required, int ndim, int64_t *shape, int64_t **out);

/* Write tensors (+ optional __metadata__ string pairs) to path atomically (temp file + rename). */
GDN2_API int gdn2_st_write(const char *path, const gdn2_tensor *tensors, int n_tensors,
                  const char *const *meta_keys, const char *const *meta_values, int n_meta);

/* The atomic writers' temporary name is PATH GDN2_TMP_INFIX <pid in decimal> ("<path>.tmp.<pid>");
 * a writer killed before its rename leaves that file behind (gdn2_checkpoint_clean_tmp removes
 * those of a checkpoint). */
#define GDN2_TMP_INFIX ".tmp."

/* Write any file atomically: data to "<path>.tmp.<pid>", fsync, rename. */
GDN2_API int gdn2_write_file_atomic(const char *path, const void *data, size_t len);

/* The same path for a file written in pieces (e.g. a token shard streamed from a text): open
 * creates "<path>.tmp.<pid>" (refusing to replace anything at path but a regular file), write
 * appends, commit fsyncs, renames over path and fsyncs the folder; abort (or a failed write or
 * commit, which abort themselves) removes the temporary file. */
typedef struct {
    const char *path;
    char tmp[4096];
    int fd;
} gdn2_atomic_file;
GDN2_API int gdn2_atomic_open(gdn2_atomic_file *af, const char *path);
GDN2_API int gdn2_atomic_write(gdn2_atomic_file *af, const void *data, size_t len);
GDN2_API int gdn2_atomic_commit(gdn2_atomic_file *af);
GDN2_API void gdn2_atomic_abort(gdn2_atomic_file *af);

#ifdef __cplusplus
}
#endif
#endif /* GDN2_IO_H */
