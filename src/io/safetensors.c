/* safetensors read/write (the format of the official fixtures, PyTorch and fla users).
 *
 * File layout: [u64 little-endian N][N bytes of JSON header][data section].
 * The header is an object: { "__metadata__": {str: str}, "name": {"dtype": "F32",
 * "shape": [..], "data_offsets": [begin, end]}, ... } with offsets relative to the data section.
 * The reader validates every field before any pointer into the buffer is handed out, so a
 * malformed file is an error message (naming the file and tensor), never an out-of-bounds read.
 * See docs/FORMATS.md for the subset we support. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/internal.h"
#include "gdn2_io.h"

/* A header larger than this is not a tensor file (real headers are a few KB to a few MB). */
#define ST_MAX_HEADER ((uint64_t)100 * 1024 * 1024)
/* Offsets and shape entries must be exact integers in a double (cJSON stores numbers as double). */
#define ST_MAX_INT 9007199254740992.0 /* 2^53 */
#define ST_MAX_DIM ((size_t)9007199254740992u) /* the same bound, for the writer's dims and offsets */

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [GDN2_F32] = {"F32", 4}, [GDN2_F64] = {"F64", 8}, [GDN2_BF16] = {"BF16", 2},
    [GDN2_F16] = {"F16", 2}, [GDN2_I32] = {"I32", 4}, [GDN2_I64] = {"I64", 8},
    [GDN2_I8] = {"I8", 1},   [GDN2_U8] = {"U8", 1},
};
#define N_DTYPES ((int)(sizeof dtype_info / sizeof dtype_info[0]))

size_t gdn2_dtype_size(gdn2_dtype dt) {
    return ((int)dt >= 0 && (int)dt < N_DTYPES) ? dtype_info[dt].size : 0;
}

const char *gdn2_dtype_name(gdn2_dtype dt) {
    return ((int)dt >= 0 && (int)dt < N_DTYPES) ? dtype_info[dt].name : "?";
}

static int dtype_parse(const char *s, gdn2_dtype *out) {
    for (int i = 0; i < N_DTYPES; i++)
        if (!strcmp(s, dtype_info[i].name)) {
            *out = (gdn2_dtype)i;
            return 1;
        }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* reading                                                                                    */
/* ------------------------------------------------------------------------------------------ */

void gdn2_st_free(gdn2_st *st) {
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_values);
    free(st->buffer);
    free(st->path);
    memset(st, 0, sizeof *st);
}

/* Non-negative exact integer from a JSON number (shape entries, offsets). */
static int json_uint(const cJSON *x, uint64_t *out) {
    if (!cJSON_IsNumber(x)) return 0;
    double v = x->valuedouble;
    if (!(v >= 0.0 && v <= ST_MAX_INT) || v != floor(v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

typedef struct {
    uint64_t begin, end;
    int idx;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

/* Parse one tensor entry of the header into t (name already set). */
static int parse_entry(const char *path, const cJSON *e, uint64_t data_len, gdn2_tensor *t,
                       uint64_t *begin, uint64_t *end) {
    const char *nm = t->name;
    if (!cJSON_IsObject(e))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': header entry is not a JSON object", path, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dt || !sh || !of)
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': header entry lacks '%s'", path, nm,
                          !dt ? "dtype" : !sh ? "shape" : "data_offsets");
    if (!cJSON_IsString(dt))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", path, nm);
    if (!dtype_parse(dt->valuestring, &t->dtype))
        return gdn2_error(GDN2_ERR_FORMAT,
                          "%s: tensor '%s': unknown dtype '%s' (supported: F32 F64 BF16 F16 I32 I64 I8 U8)", path,
                          nm, dt->valuestring);
    if (!cJSON_IsArray(sh))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': shape is not an array", path, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > GDN2_MAX_DIMS)
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': %d dimensions, at most %d supported", path, nm,
                          nd, GDN2_MAX_DIMS);
    t->ndim = nd;
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, sh) {
        uint64_t dim;
        if (!json_uint(x, &dim))
            return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': shape entry %d is not a non-negative integer",
                              path, nm, i);
        t->shape[i++] = (int64_t)dim;
    }
    /* numel * dtype size, checked. A zero dimension makes the tensor empty, but the other
     * dimensions are still multiplied by whoever reads the shape (row sizes, strides): their
     * product (zeros counted as 1), in bytes, must fit in int64 too. */
    size_t nbytes = gdn2_dtype_size(t->dtype), extent = nbytes;
    for (i = 0; i < nd; i++) {
        const size_t dim = (size_t)t->shape[i];
        if (!gdn2_mul_sz(extent, dim ? dim : 1, &extent) || extent > (size_t)INT64_MAX) {
            char sb[160];
            return gdn2_error(GDN2_ERR_FORMAT,
                              "%s: tensor '%s': shape %s x %s is too large (the product of its dimensions overflows "
                              "64-bit sizes)",
                              path, nm, gdn2_shape_str(nd, t->shape, sb, sizeof sb), dtype_info[t->dtype].name);
        }
        gdn2_mul_sz(nbytes, dim, &nbytes); /* <= extent: cannot overflow */
    }
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !json_uint(cJSON_GetArrayItem(of, 0), begin) ||
        !json_uint(cJSON_GetArrayItem(of, 1), end))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': data_offsets is not [begin, end] of non-negative integers",
                          path, nm);
    if (*end < *begin)
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before begin", path,
                          nm, (unsigned long long)*begin, (unsigned long long)*end);
    if (*end > data_len)
        return gdn2_error(GDN2_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] beyond the data section of %llu bytes "
                          "(file truncated?)",
                          path, nm, (unsigned long long)*begin, (unsigned long long)*end,
                          (unsigned long long)data_len);
    if (nbytes != *end - *begin) {
        char sb[160];
        return gdn2_error(GDN2_ERR_FORMAT,
                          "%s: tensor '%s': shape %s x %s (%zu bytes) = %llu bytes, but data_offsets span %llu bytes",
                          path, nm, gdn2_shape_str(nd, t->shape, sb, sizeof sb), dtype_info[t->dtype].name,
                          dtype_info[t->dtype].size, (unsigned long long)nbytes,
                          (unsigned long long)(*end - *begin));
    }
    t->nbytes = (size_t)nbytes;
    return GDN2_OK;
}

static int parse_metadata(const char *path, const cJSON *m, gdn2_st *st) {
    if (!cJSON_IsObject(m))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: __metadata__ is not a JSON object", path);
    int n = cJSON_GetArraySize(m);
    st->meta_keys = gdn2_calloc((size_t)n, sizeof(char *), "safetensors metadata");
    st->meta_values = gdn2_calloc((size_t)n, sizeof(char *), "safetensors metadata");
    if (!st->meta_keys || !st->meta_values) return GDN2_ERR_NOMEM;
    const cJSON *x;
    cJSON_ArrayForEach(x, m) {
        if (!cJSON_IsString(x))
            return gdn2_error(GDN2_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string", path, x->string);
        st->meta_keys[st->n_meta] = strdup(x->string);
        st->meta_values[st->n_meta] = strdup(x->valuestring);
        st->n_meta++;
        if (!st->meta_keys[st->n_meta - 1] || !st->meta_values[st->n_meta - 1])
            return gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory copying metadata", path);
    }
    return GDN2_OK;
}

/* Validate the header (JSON text hdr of hlen bytes) against a data section of data_len bytes and
 * fill st->tensors / st->meta_*; data pointers are set relative to `data`. */
static int parse_header(const char *path, const char *hdr, size_t hlen, char *data, uint64_t data_len,
                        gdn2_st *st) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
    if (!root) {
        size_t at = (end && end >= hdr && end <= hdr + hlen) ? (size_t)(end - hdr) : 0;
        return gdn2_error(GDN2_ERR_FORMAT, "%s: header is not well-formed JSON (parse error near byte %zu of %zu)",
                          path, at, hlen);
    }
    int rc = GDN2_OK;
    span *spans = NULL;
    /* only padding (spaces; tolerate NULs and other whitespace) may follow the JSON value */
    for (const char *p = end; p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != 0) {
            rc = gdn2_error(GDN2_ERR_FORMAT, "%s: header has trailing bytes after the JSON object (at byte %zu)",
                            path, (size_t)(p - hdr));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        rc = gdn2_error(GDN2_ERR_FORMAT, "%s: header JSON is not an object", path);
        goto done;
    }
    int n_entries = cJSON_GetArraySize(root);
    st->tensors = gdn2_calloc((size_t)n_entries, sizeof(gdn2_tensor), "safetensors tensor table");
    spans = gdn2_calloc((size_t)n_entries, sizeof(span), "safetensors spans");
    if (!st->tensors || !spans) {
        rc = GDN2_ERR_NOMEM;
        goto done;
    }
    int seen_meta = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if (seen_meta++) {
                rc = gdn2_error(GDN2_ERR_FORMAT, "%s: __metadata__ appears twice", path);
                goto done;
            }
            if ((rc = parse_metadata(path, e, st))) goto done;
            continue;
        }
        /* cJSON keeps duplicate keys; a name must identify one tensor */
        for (int j = 0; j < st->n_tensors; j++)
            if (!strcmp(st->tensors[j].name, e->string)) {
                rc = gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", path, e->string);
                goto done;
            }
        gdn2_tensor *t = &st->tensors[st->n_tensors];
        if (!(t->name = strdup(e->string))) {
            rc = gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        st->n_tensors++;
        span *s = &spans[st->n_tensors - 1];
        if ((rc = parse_entry(path, e, data_len, t, &s->begin, &s->end))) goto done;
        s->idx = st->n_tensors - 1;
        t->data = data + s->begin;
    }
    /* spans may not overlap (empty tensors occupy nothing and may sit anywhere) */
    qsort(spans, (size_t)st->n_tensors, sizeof(span), span_cmp);
    uint64_t prev_end = 0;
    int prev = -1;
    for (int j = 0; j < st->n_tensors; j++) {
        if (spans[j].begin == spans[j].end) continue;
        if (prev >= 0 && spans[j].begin < prev_end) {
            rc = gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s' bytes [%llu, %llu) overlap tensor '%s' bytes [%llu, %llu)",
                            path, st->tensors[spans[j].idx].name, (unsigned long long)spans[j].begin,
                            (unsigned long long)spans[j].end, st->tensors[spans[prev].idx].name,
                            (unsigned long long)spans[prev].begin, (unsigned long long)prev_end);
            goto done;
        }
        prev = j;
        prev_end = spans[j].end;
    }
done:
    free(spans);
    cJSON_Delete(root);
    return rc;
}

int gdn2_st_read(const char *path, gdn2_st *out) {
    if (!out) return gdn2_error(GDN2_ERR_ARG, "gdn2_st_read: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return gdn2_error(GDN2_ERR_ARG, "gdn2_st_read: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return gdn2_error(GDN2_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return gdn2_error(GDN2_ERR_IO, "%s: not a regular file", path);
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    if (fsize < 8) {
        fclose(f);
        return gdn2_error(GDN2_ERR_FORMAT, "%s: file is %llu bytes, too short for a safetensors header (8-byte length + JSON)",
                          path, (unsigned long long)fsize);
    }
    if ((uint64_t)(size_t)fsize != fsize) {
        fclose(f);
        return gdn2_error(GDN2_ERR_FORMAT, "%s: file too large for this machine", path);
    }
    /* the whole file is read at once: tensors are views into this buffer */
    char *buf = gdn2_malloc((size_t)fsize, path);
    if (!buf) {
        fclose(f);
        return GDN2_ERR_NOMEM;
    }
    size_t got = fread(buf, 1, (size_t)fsize, f);
    int ferr = ferror(f);
    fclose(f);
    if (got != (size_t)fsize || ferr) {
        free(buf);
        return gdn2_error(GDN2_ERR_IO, "%s: read %zu of %llu bytes", path, got, (unsigned long long)fsize);
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)buf[i];
    if (hlen > fsize - 8 || hlen > ST_MAX_HEADER || hlen < 2) {
        free(buf);
        if (hlen < 2)
            return gdn2_error(GDN2_ERR_FORMAT, "%s: header length %llu is too small for a JSON object", path,
                              (unsigned long long)hlen);
        return gdn2_error(GDN2_ERR_FORMAT,
                          "%s: header length %llu exceeds %s (%llu bytes): not a safetensors file or truncated",
                          path, (unsigned long long)hlen, hlen > fsize - 8 ? "the file size - 8" : "the 100 MB bound",
                          (unsigned long long)(hlen > fsize - 8 ? fsize - 8 : ST_MAX_HEADER));
    }
    out->buffer = buf;
    out->path = strdup(path);
    int rc = out->path ? parse_header(path, buf + 8, (size_t)hlen, buf + 8 + hlen, fsize - 8 - hlen, out)
                       : gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory", path);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", gdn2_last_error());
        gdn2_st_free(out);
        gdn2_error(rc, "%s", msg);
    }
    return rc;
}

const gdn2_tensor *gdn2_st_find(const gdn2_st *st, const char *name) {
    if (!st || !name) return NULL;
    for (int i = 0; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

const char *gdn2_st_meta(const gdn2_st *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* typed getters                                                                              */
/* ------------------------------------------------------------------------------------------ */


/* IEEE half -> fp32, exact for every value (subnormals, inf, NaN). */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0x1f) {
        u = sign | 0x7f800000u | (m << 13); /* inf / NaN */
    } else if (e != 0) {
        u = sign | ((e + 112) << 23) | (m << 13); /* normal: rebias 15 -> 127 */
    } else if (m == 0) {
        u = sign; /* +-0 */
    } else {
        /* subnormal: m * 2^-24, normalise the mantissa */
        int s = 0;
        while (!(m & 0x400)) {
            m <<= 1;
            s++;
        }
        u = sign | ((uint32_t)(113 - s) << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Element i of t as double (float dtypes only); memcpy because data may be unaligned
 * (the data section starts at 8 + header length, which other writers need not align). */
static double elem_f(const gdn2_tensor *t, size_t i) {
    const char *p = (const char *)t->data;
    switch (t->dtype) {
    case GDN2_F32: { float x; memcpy(&x, p + 4 * i, 4); return x; }
    case GDN2_F64: { double x; memcpy(&x, p + 8 * i, 8); return x; }
    case GDN2_BF16: { uint16_t x; memcpy(&x, p + 2 * i, 2); return gdn2_bf16_to_f32(x); }
    case GDN2_F16: { uint16_t x; memcpy(&x, p + 2 * i, 2); return f16_to_f32(x); }
    default: return 0;
    }
}

static int64_t elem_i(const gdn2_tensor *t, size_t i) {
    const char *p = (const char *)t->data;
    if (t->dtype == GDN2_I32) { int32_t x; memcpy(&x, p + 4 * i, 4); return x; }
    int64_t x;
    memcpy(&x, p + 8 * i, 8);
    return x;
}

static int is_float(gdn2_dtype dt) { return dt == GDN2_F32 || dt == GDN2_F64 || dt == GDN2_BF16 || dt == GDN2_F16; }

/* Find `name`, check dtype class and shape; *t = NULL for an absent optional tensor. */
static int get_checked(const gdn2_st *st, const char *name, int required, int ndim, int64_t *shape,
                       int want_float, const gdn2_tensor **t) {
    const char *path = st && st->path ? st->path : "(safetensors)";
    *t = gdn2_st_find(st, name);
    if (!*t) {
        if (!required) return GDN2_OK;
        return gdn2_error(GDN2_ERR_FORMAT, "%s: missing required tensor '%s'", path, name);
    }
    const gdn2_tensor *x = *t;
    if (want_float ? !is_float(x->dtype) : (x->dtype != GDN2_I32 && x->dtype != GDN2_I64))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected %s", path, name,
                          gdn2_dtype_name(x->dtype),
                          want_float ? "a float dtype (F32, F64, BF16, F16)" : "an integer dtype (I32, I64)");
    int ok = x->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        if (shape[i] >= 0 && shape[i] != x->shape[i]) ok = 0;
    if (!ok) {
        char a[160], b[160];
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", path, name,
                          gdn2_shape_str(x->ndim, x->shape, a, sizeof a), gdn2_shape_str(ndim, shape, b, sizeof b));
    }
    for (int i = 0; i < ndim; i++) shape[i] = x->shape[i];
    return GDN2_OK;
}

static size_t numel(const gdn2_tensor *t) { return t->nbytes / gdn2_dtype_size(t->dtype); }

int gdn2_st_get_f32(const gdn2_st *st, const char *name, int required, int ndim, int64_t *shape, float **out) {
    const gdn2_tensor *t;
    *out = NULL;
    int rc = get_checked(st, name, required, ndim, shape, 1, &t);
    if (rc || !t) return rc;
    size_t n = numel(t), bytes;
    if (!gdn2_mul_sz(n, sizeof(float), &bytes))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': %zu elements overflow a float array",
                          st->path ? st->path : "(safetensors)", name, n);
    float *y = gdn2_malloc(bytes, name);
    if (!y) return GDN2_ERR_NOMEM;
    if (t->dtype == GDN2_F32) memcpy(y, t->data, n * sizeof(float));
    else for (size_t i = 0; i < n; i++) y[i] = (float)elem_f(t, i);
    *out = y;
    return GDN2_OK;
}

int gdn2_st_get_f64(const gdn2_st *st, const char *name, int required, int ndim, int64_t *shape, double **out) {
    const gdn2_tensor *t;
    *out = NULL;
    int rc = get_checked(st, name, required, ndim, shape, 1, &t);
    if (rc || !t) return rc;
    size_t n = numel(t), bytes;
    if (!gdn2_mul_sz(n, sizeof(double), &bytes))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': %zu elements overflow a double array",
                          st->path ? st->path : "(safetensors)", name, n);
    double *y = gdn2_malloc(bytes, name);
    if (!y) return GDN2_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) y[i] = elem_f(t, i);
    *out = y;
    return GDN2_OK;
}

int gdn2_st_get_i64(const gdn2_st *st, const char *name, int required, int ndim, int64_t *shape, int64_t **out) {
    const gdn2_tensor *t;
    *out = NULL;
    int rc = get_checked(st, name, required, ndim, shape, 0, &t);
    if (rc || !t) return rc;
    size_t n = numel(t), bytes;
    if (!gdn2_mul_sz(n, sizeof(int64_t), &bytes))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: tensor '%s': %zu elements overflow an int64 array",
                          st->path ? st->path : "(safetensors)", name, n);
    int64_t *y = gdn2_malloc(bytes, name);
    if (!y) return GDN2_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) y[i] = elem_i(t, i);
    *out = y;
    return GDN2_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* writing                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Temp-file writer: open "<path>.tmp.<pid>", append pieces, then fsync + rename in commit. */
typedef struct {
    const char *path;
    char tmp[4096];
    int fd;
} atomic_file;

static int af_open(atomic_file *af, const char *path) {
    af->path = path;
    af->fd = -1;
    /* the rename would replace whatever is at path: only a regular file (or nothing) is replaced,
     * never a device, a FIFO or a directory (as root, -o /dev/null would otherwise become a file) */
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return gdn2_error(GDN2_ERR_IO, "%s: exists and is not a regular file; refusing to replace it", path);
    if ((size_t)snprintf(af->tmp, sizeof af->tmp, "%s" GDN2_TMP_INFIX "%ld", path, (long)getpid()) >= sizeof af->tmp)
        return gdn2_error(GDN2_ERR_IO, "%s: path too long", path);
    af->fd = open(af->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (af->fd < 0) return gdn2_error(GDN2_ERR_IO, "%s: cannot create temporary file %s: %s", path, af->tmp, strerror(errno));
    return GDN2_OK;
}

static int af_write(atomic_file *af, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t w = write(af->fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return gdn2_error(GDN2_ERR_IO, "%s: write failed: %s", af->tmp, strerror(errno));
        p += w;
        len -= (size_t)w;
    }
    return GDN2_OK;
}

static void af_abort(atomic_file *af) {
    if (af->fd >= 0) close(af->fd);
    af->fd = -1;
    unlink(af->tmp);
}

static int af_commit(atomic_file *af) {
    if (fsync(af->fd) != 0) {
        int e = errno;
        af_abort(af);
        return gdn2_error(GDN2_ERR_IO, "%s: fsync failed: %s", af->tmp, strerror(e));
    }
    int rc = close(af->fd);
    af->fd = -1;
    if (rc != 0 || rename(af->tmp, af->path) != 0) {
        int e = errno;
        unlink(af->tmp);
        return gdn2_error(GDN2_ERR_IO, "%s: cannot replace with %s: %s", af->path, af->tmp, strerror(e));
    }
    /* make the rename itself durable (best effort: some filesystems refuse fsync on a directory) */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", af->path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    else snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return GDN2_OK;
}

int gdn2_write_file_atomic(const char *path, const void *data, size_t len) {
    if (!path) return gdn2_error(GDN2_ERR_ARG, "gdn2_write_file_atomic: path is NULL");
    if (len && !data) return gdn2_error(GDN2_ERR_ARG, "%s: data is NULL", path);
    atomic_file af;
    int rc = af_open(&af, path);
    if (rc) return rc;
    if ((rc = af_write(&af, data, len))) {
        af_abort(&af);
        return rc;
    }
    return af_commit(&af);
}

/* the streaming form (include/gdn2_io.h): the same temp-file writer */
_Static_assert(sizeof(((gdn2_atomic_file *)0)->tmp) == sizeof(((atomic_file *)0)->tmp), "atomic_file layouts");
int gdn2_atomic_open(gdn2_atomic_file *af, const char *path) {
    atomic_file a;
    int rc = af_open(&a, path);
    af->path = a.path, af->fd = a.fd;
    memcpy(af->tmp, a.tmp, sizeof af->tmp);
    return rc;
}
static atomic_file af_of(const gdn2_atomic_file *af) {
    atomic_file a;
    a.path = af->path, a.fd = af->fd;
    memcpy(a.tmp, af->tmp, sizeof a.tmp);
    return a;
}
int gdn2_atomic_write(gdn2_atomic_file *af, const void *data, size_t len) {
    atomic_file a = af_of(af);
    int rc = af_write(&a, data, len);
    if (rc) {
        af_abort(&a);
        af->fd = -1;
    }
    return rc;
}
int gdn2_atomic_commit(gdn2_atomic_file *af) {
    atomic_file a = af_of(af);
    int rc = af_commit(&a);
    af->fd = -1;
    return rc;
}
void gdn2_atomic_abort(gdn2_atomic_file *af) {
    atomic_file a = af_of(af);
    if (a.fd >= 0) af_abort(&a);
    af->fd = -1;
}

static cJSON *json_int(int64_t v) {
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)v);
    return cJSON_CreateRaw(s); /* exact integers (cJSON's number printer goes through double) */
}

/* Header JSON for the given tensors; offsets are laid out in order. NULL on failure. */
static char *build_header(const char *path, const gdn2_tensor *ts, int n, const char *const *mk,
                          const char *const *mv, int n_meta) {
    cJSON *root = cJSON_CreateObject();
    if (!root) goto nomem;
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        if (!m) goto nomem;
        for (int i = 0; i < n_meta; i++)
            if (!cJSON_AddStringToObject(m, mk[i], mv[i])) goto nomem;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, ts[i].name);
        cJSON *sh = cJSON_CreateArray(), *of = cJSON_CreateArray();
        if (!e || !sh || !of) {
            cJSON_Delete(sh);
            cJSON_Delete(of);
            goto nomem;
        }
        cJSON_AddItemToObject(e, "dtype", cJSON_CreateString(gdn2_dtype_name(ts[i].dtype)));
        for (int j = 0; j < ts[i].ndim; j++) cJSON_AddItemToArray(sh, json_int(ts[i].shape[j]));
        cJSON_AddItemToObject(e, "shape", sh);
        cJSON_AddItemToArray(of, json_int((int64_t)off));
        off += ts[i].nbytes; /* gdn2_st_write checked that the sum fits */
        cJSON_AddItemToArray(of, json_int((int64_t)off));
        cJSON_AddItemToObject(e, "data_offsets", of);
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!s) gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory printing the header", path);
    return s;
nomem:
    cJSON_Delete(root);
    gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory building the header", path);
    return NULL;
}

int gdn2_st_write(const char *path, const gdn2_tensor *tensors, int n_tensors, const char *const *meta_keys,
                  const char *const *meta_values, int n_meta) {
    if (!path) return gdn2_error(GDN2_ERR_ARG, "gdn2_st_write: path is NULL");
    if (n_tensors < 0 || (n_tensors && !tensors) || n_meta < 0 || (n_meta && (!meta_keys || !meta_values)))
        return gdn2_error(GDN2_ERR_ARG, "%s: invalid tensor or metadata list", path);
    /* the same checks the reader makes, so we never write a file we would reject */
    size_t total = 0;
    for (int i = 0; i < n_tensors; i++) {
        const gdn2_tensor *t = &tensors[i];
        const char *nm = t->name ? t->name : "(null)";
        if (!t->name || !t->name[0] || !strcmp(t->name, "__metadata__"))
            return gdn2_error(GDN2_ERR_ARG, "%s: tensor %d has an invalid name '%s'", path, i, nm);
        for (int j = 0; j < i; j++)
            if (!strcmp(tensors[j].name, t->name))
                return gdn2_error(GDN2_ERR_ARG, "%s: tensor '%s' given twice", path, nm);
        if (gdn2_dtype_size(t->dtype) == 0)
            return gdn2_error(GDN2_ERR_ARG, "%s: tensor '%s' has an invalid dtype %d", path, nm, (int)t->dtype);
        if (t->ndim < 0 || t->ndim > GDN2_MAX_DIMS)
            return gdn2_error(GDN2_ERR_ARG, "%s: tensor '%s' has ndim %d (0..%d)", path, nm, t->ndim, GDN2_MAX_DIMS);
        size_t nb = gdn2_dtype_size(t->dtype), extent = nb;
        for (int j = 0; j < t->ndim; j++) {
            if (t->shape[j] < 0)
                return gdn2_error(GDN2_ERR_ARG, "%s: tensor '%s' has a negative dimension", path, nm);
            const size_t dim = (size_t)t->shape[j];
            if (!gdn2_mul_sz(extent, dim ? dim : 1, &extent) || extent > (size_t)INT64_MAX || dim > ST_MAX_DIM) {
                char sb[160];
                return gdn2_error(GDN2_ERR_ARG, "%s: tensor '%s': shape %s is too large", path, nm,
                                  gdn2_shape_str(t->ndim, t->shape, sb, sizeof sb));
            }
            gdn2_mul_sz(nb, dim, &nb); /* <= extent */
        }
        if (nb != t->nbytes) {
            char sb[160];
            return gdn2_error(GDN2_ERR_ARG, "%s: tensor '%s': shape %s x %s needs %llu bytes, nbytes is %zu", path,
                              nm, gdn2_shape_str(t->ndim, t->shape, sb, sizeof sb), gdn2_dtype_name(t->dtype),
                              (unsigned long long)nb, t->nbytes);
        }
        if (!gdn2_add_sz(total, t->nbytes, &total) || total > ST_MAX_DIM)
            return gdn2_error(GDN2_ERR_ARG, "%s: the tensors' bytes add up past 2^53 (the largest offset the format "
                              "can hold exactly)", path);
        if (t->nbytes && !t->data) return gdn2_error(GDN2_ERR_ARG, "%s: tensor '%s' has no data", path, nm);
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta_keys[i] || !meta_values[i])
            return gdn2_error(GDN2_ERR_ARG, "%s: metadata entry %d has a NULL key or value", path, i);
        for (int j = 0; j < i; j++)
            if (!strcmp(meta_keys[j], meta_keys[i]))
                return gdn2_error(GDN2_ERR_ARG, "%s: metadata key '%s' given twice", path, meta_keys[i]);
    }
    char *hdr = build_header(path, tensors, n_tensors, meta_keys, meta_values, n_meta);
    if (!hdr) return GDN2_ERR_NOMEM;
    /* pad the header with spaces so the data section starts 8-byte aligned (8 + hlen = 0 mod 8) */
    size_t len = strlen(hdr), hlen = (len + 7) & ~(size_t)7;
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    atomic_file af;
    int rc = af_open(&af, path);
    if (!rc) rc = af_write(&af, prefix, 8);
    if (!rc) rc = af_write(&af, hdr, len);
    if (!rc) rc = af_write(&af, "       ", hlen - len);
    for (int i = 0; !rc && i < n_tensors; i++) rc = af_write(&af, tensors[i].data, tensors[i].nbytes);
    free(hdr);
    if (rc) {
        if (af.fd >= 0) af_abort(&af);
        return rc;
    }
    return af_commit(&af);
}
