/* safetensors I/O: round trips of every dtype and metadata, exact bf16/f16 widening, typed getters
 * with shape checks, every malformed-file case rejected with a message naming the file (and the
 * tensor), and atomic writes. Bad files are generated in a mkdtemp() directory. */
#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "cli_run.h" /* make_tmp_dir, path_in */
#include "gdn2.h"

/* Raw file: 8-byte little-endian length hlen (the real JSON length unless overridden), JSON, data. */
static const char *raw_file(const char *name, const char *json, int64_t hlen_override, const void *data,
                            size_t data_len) {
    const char *p = path_in(name);
    FILE *f = fopen(p, "wb");
    uint64_t hlen = hlen_override >= 0 ? (uint64_t)hlen_override : strlen(json);
    unsigned char pre[8];
    for (int i = 0; i < 8; i++) pre[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(pre, 1, 8, f);
    fwrite(json, 1, strlen(json), f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
    return p;
}

/* The file must be rejected with GDN2_ERR_FORMAT, the message naming the file and `tensor`. */
static void expect_reject(const char *what, const char *path, const char *tensor, const char *phrase) {
    gdn2_st st;
    memset(&st, 0xAB, sizeof st);
    int rc = gdn2_st_read(path, &st);
    const char *msg = gdn2_last_error();
    int ok = rc == GDN2_ERR_FORMAT && contains(msg, path) && (!tensor || contains(msg, tensor)) &&
             (!phrase || contains(msg, phrase)) && st.n_tensors == 0 && st.buffer == NULL && st.tensors == NULL;
    CHECK(ok, "malformed: %s rejected (rc=%d): %s", what, rc, msg);
    if (rc == GDN2_OK) gdn2_st_free(&st);
}

static void test_roundtrip(void) {
    float f32[6] = {1.5f, -2.25f, 3.0e-38f, 1e30f, -0.0f, 7.0f};
    double f64[3] = {3.141592653589793, -1e-300, 2.5e300};
    uint16_t bf16[4] = {0x3F80, 0xC040, 0x0001, 0x7F80};
    uint16_t f16[5] = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x3555};
    int32_t i32[4] = {0, -1, 2147483647, -2147483647 - 1};
    int64_t i64[3] = {-5, (int64_t)1 << 40, INT64_MAX};
    float scalar = 42.0f;
    gdn2_tensor ts[] = {
        {"a_f32", GDN2_F32, 2, {2, 3}, sizeof f32, f32},
        {"b_f64", GDN2_F64, 1, {3}, sizeof f64, f64},
        {"c_bf16", GDN2_BF16, 2, {2, 2}, sizeof bf16, bf16},
        {"d_f16", GDN2_F16, 1, {5}, sizeof f16, f16},
        {"e_i32", GDN2_I32, 3, {1, 2, 2}, sizeof i32, i32},
        {"f_i64", GDN2_I64, 1, {3}, sizeof i64, i64},
        {"g_empty", GDN2_F32, 2, {0, 3}, 0, NULL},
        {"h_scalar", GDN2_F32, 0, {0}, sizeof scalar, &scalar},
    };
    int n = (int)(sizeof ts / sizeof ts[0]);
    const char *mk[] = {"meta", "note"};
    const char *mv[] = {"{\"scale\": 0.125, \"use_gate_in_kernel\": true}", "quote \" backslash \\ unicode \xc3\xa9"};
    const char *p = path_in("rt.safetensors");
    int rc = gdn2_st_write(p, ts, n, mk, mv, 2);
    CHECK(rc == GDN2_OK, "write %d tensors of every dtype + 2 metadata entries (%s)", n, gdn2_last_error());

    /* header length: data section 8-byte aligned, padded with spaces */
    FILE *f = fopen(p, "rb");
    unsigned char pre[8] = {0};
    size_t got = f ? fread(pre, 1, 8, f) : 0;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | pre[i];
    char *hdr = calloc(1, hlen + 1);
    if (f && hdr) got += fread(hdr, 1, hlen, f);
    if (f) fclose(f);
    CHECK(got == 8 + hlen && (8 + hlen) % 8 == 0 && hdr && hdr[0] == '{',
          "header length %llu: data section starts 8-byte aligned", (unsigned long long)hlen);
    size_t jl = hdr ? strlen(hdr) : 0;
    int spaces_ok = hdr && jl > 0;
    while (spaces_ok && jl > 0 && hdr[jl - 1] == ' ') jl--;
    CHECK(spaces_ok && hdr[jl - 1] == '}', "header padding is spaces after the JSON object");
    free(hdr);

    gdn2_st st;
    rc = gdn2_st_read(p, &st);
    CHECK(rc == GDN2_OK && st.n_tensors == n && st.n_meta == 2, "read back: %d tensors, %d meta (%s)",
          st.n_tensors, st.n_meta, gdn2_last_error());
    if (rc) return;
    for (int i = 0; i < n; i++) {
        const gdn2_tensor *t = gdn2_st_find(&st, ts[i].name);
        int ok = t && t->dtype == ts[i].dtype && t->ndim == ts[i].ndim && t->nbytes == ts[i].nbytes &&
                 (t->nbytes == 0 || memcmp(t->data, ts[i].data, t->nbytes) == 0);
        for (int j = 0; ok && j < ts[i].ndim; j++) ok = t->shape[j] == ts[i].shape[j];
        CHECK(ok, "round trip %s (%s, %d dims, %zu bytes) bit-exact", ts[i].name, gdn2_dtype_name(ts[i].dtype),
              ts[i].ndim, ts[i].nbytes);
    }
    CHECK(gdn2_st_find(&st, "nope") == NULL, "find of an absent name gives NULL");
    CHECK(gdn2_st_meta(&st, "meta") && !strcmp(gdn2_st_meta(&st, "meta"), mv[0]) && gdn2_st_meta(&st, "note") &&
              !strcmp(gdn2_st_meta(&st, "note"), mv[1]) && gdn2_st_meta(&st, "absent") == NULL,
          "metadata round trip (with quotes, backslash, UTF-8)");

    /* typed getters: exact widening of bf16 / f16, F64 -> fp32 rounding, integers */
    int64_t s2[2] = {-1, -1}, s1[1] = {-1}, s3[3] = {1, -1, 2};
    float *x = NULL;
    double *xd = NULL;
    int64_t *xi = NULL;
    rc = gdn2_st_get_f32(&st, "c_bf16", 1, 2, s2, &x);
    float bf_expect[4] = {1.0f, -3.0f, ldexpf(1.0f, -133), INFINITY};
    CHECK(rc == 0 && x && s2[0] == 2 && s2[1] == 2 && x[0] == bf_expect[0] && x[1] == bf_expect[1] &&
              x[2] == bf_expect[2] && isinf(x[3]) && x[3] > 0,
          "bf16 -> f32 exact: 1, -3, 2^-133 (subnormal), +inf; wildcards filled in [%lld,%lld]", (long long)s2[0],
          (long long)s2[1]);
    free(x);
    rc = gdn2_st_get_f64(&st, "d_f16", 1, 1, s1, &xd);
    double f16_expect[5] = {1.0, -2.0, ldexp(1.0, -24), 65504.0, 0.333251953125};
    int ok = rc == 0 && xd && s1[0] == 5;
    for (int i = 0; ok && i < 5; i++) ok = xd[i] == f16_expect[i];
    CHECK(ok, "f16 -> f64 exact: 1, -2, 2^-24 (subnormal), 65504 (max), 0.333251953125");
    free(xd);
    s1[0] = 5;
    rc = gdn2_st_get_f32(&st, "d_f16", 1, 1, s1, &x);
    ok = rc == 0 && x;
    for (int i = 0; ok && i < 5; i++) ok = x[i] == (float)f16_expect[i];
    CHECK(ok, "f16 -> f32 exact");
    free(x);
    /* every f16 bit pattern: widening must agree with value = (-1)^s 2^(e-15) (1 + m/1024) */
    {
        uint16_t all[65536];
        for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
        gdn2_tensor t = {"all", GDN2_F16, 1, {65536}, sizeof all, all};
        const char *pa = path_in("f16_all.safetensors");
        gdn2_st sa;
        int64_t sh[1] = {65536};
        float *y = NULL;
        int bad = -1;
        if (gdn2_st_write(pa, &t, 1, NULL, NULL, 0) == 0 && gdn2_st_read(pa, &sa) == 0) {
            if (gdn2_st_get_f32(&sa, "all", 1, 1, sh, &y) == 0) {
                bad = 0;
                for (int i = 0; i < 65536; i++) {
                    int s = i >> 15, e = (i >> 10) & 31, m = i & 1023;
                    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
                    if (s) v = -v;
                    if (isnan(v) ? !isnan(y[i]) : ((double)y[i] != v || !signbit(y[i]) != !signbit(v))) bad++;
                }
            }
            free(y);
            gdn2_st_free(&sa);
        }
        CHECK(bad == 0, "f16 -> f32 exact for all 65536 bit patterns (%d wrong)", bad);
    }
    s1[0] = 3;
    rc = gdn2_st_get_f32(&st, "b_f64", 1, 1, s1, &x);
    CHECK(rc == 0 && x && x[0] == (float)f64[0] && x[1] == (float)f64[1] && isinf(x[2]),
          "F64 -> f32 rounds to nearest");
    free(x);
    rc = gdn2_st_get_f64(&st, "a_f32", 1, 2, (int64_t[2]){2, 3}, &xd);
    ok = rc == 0 && xd;
    for (int i = 0; ok && i < 6; i++) ok = xd[i] == (double)f32[i];
    CHECK(ok, "F32 -> f64 exact");
    free(xd);
    rc = gdn2_st_get_i64(&st, "e_i32", 1, 3, s3, &xi);
    CHECK(rc == 0 && xi && xi[0] == 0 && xi[1] == -1 && xi[2] == 2147483647 && xi[3] == -2147483648LL,
          "I32 -> i64 sign-extended");
    free(xi);
    s1[0] = 3;
    rc = gdn2_st_get_i64(&st, "f_i64", 1, 1, s1, &xi);
    CHECK(rc == 0 && xi && xi[0] == -5 && xi[1] == ((int64_t)1 << 40) && xi[2] == INT64_MAX, "I64 -> i64");
    free(xi);

    /* errors of the getters */
    x = (float *)1;
    rc = gdn2_st_get_f32(&st, "e_i32", 1, 3, (int64_t[3]){-1, -1, -1}, &x);
    CHECK(rc != 0 && x == NULL && contains(gdn2_last_error(), p) &&
              contains(gdn2_last_error(), "tensor 'e_i32' has dtype I32, expected a float dtype"),
          "integer tensor as float rejected: %s", gdn2_last_error());
    rc = gdn2_st_get_i64(&st, "a_f32", 1, 2, (int64_t[2]){-1, -1}, &xi);
    CHECK(rc != 0 && contains(gdn2_last_error(), "tensor 'a_f32' has dtype F32, expected an integer dtype"),
          "float tensor as integer rejected: %s", gdn2_last_error());
    char expect[600];
    snprintf(expect, sizeof expect, "%s: tensor 'a_f32' has shape [2,3], expected [2,4]", p);
    rc = gdn2_st_get_f32(&st, "a_f32", 1, 2, (int64_t[2]){2, 4}, &x);
    CHECK(rc != 0 && x == NULL && !strcmp(gdn2_last_error(), expect), "shape mismatch message: %s",
          gdn2_last_error());
    rc = gdn2_st_get_f32(&st, "a_f32", 1, 3, (int64_t[3]){2, 3, -1}, &x);
    CHECK(rc != 0 && contains(gdn2_last_error(), "has shape [2,3], expected [2,3,*]"), "ndim mismatch: %s",
          gdn2_last_error());
    rc = gdn2_st_get_f32(&st, "zz", 1, 1, s1, &x);
    CHECK(rc != 0 && contains(gdn2_last_error(), p) && contains(gdn2_last_error(), "'zz'"),
          "missing required tensor: %s", gdn2_last_error());
    x = (float *)1;
    rc = gdn2_st_get_f32(&st, "zz", 0, 1, s1, &x);
    CHECK(rc == 0 && x == NULL, "missing optional tensor: OK with NULL");
    gdn2_st_free(&st);
    CHECK(st.n_tensors == 0 && st.buffer == NULL, "free resets the struct");
}

static void test_malformed(void) {
    float d4[4] = {1, 2, 3, 4};
    const char *p;

    p = path_in("empty.safetensors");
    fclose(fopen(p, "wb"));
    expect_reject("zero-length file", p, NULL, "too short");
    p = path_in("short.safetensors");
    FILE *f = fopen(p, "wb");
    fwrite("\x02\0\0", 1, 3, f);
    fclose(f);
    expect_reject("3-byte file", p, NULL, "too short");

    const char *ok_json = "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    p = raw_file("hlen_beyond.safetensors", ok_json, 100000, d4, sizeof d4);
    expect_reject("header length beyond the file", p, NULL, "header length 100000");
    p = raw_file("hlen_absurd.safetensors", ok_json, (int64_t)1 << 40, d4, sizeof d4);
    expect_reject("absurd header length 2^40", p, NULL, "header length");
    p = raw_file("hlen_zero.safetensors", ok_json, 0, d4, sizeof d4);
    expect_reject("header length 0", p, NULL, "header length 0");
    p = raw_file("garbled.safetensors", "{\"x\":{\"dtype\":\"F32\",\"sha", -1, d4, sizeof d4);
    expect_reject("garbled JSON", p, NULL, "not well-formed JSON");
    p = raw_file("binary.safetensors", "\x01\x02\xff\xfe garbage", -1, d4, sizeof d4);
    expect_reject("binary garbage header", p, NULL, "JSON");
    p = raw_file("array.safetensors", "[1, 2, 3]", -1, d4, sizeof d4);
    expect_reject("JSON not an object", p, NULL, "not an object");
    p = raw_file("trailing.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}} xx", -1, d4, sizeof d4);
    expect_reject("bytes after the JSON object", p, NULL, "trailing");
    p = raw_file("dtype.safetensors", "{\"wq\":{\"dtype\":\"F8_E4M3\",\"shape\":[16],\"data_offsets\":[0,16]}}", -1, d4, sizeof d4);
    expect_reject("unknown dtype", p, "'wq'", "F8_E4M3");
    p = raw_file("nodtype.safetensors", "{\"wq\":{\"shape\":[4],\"data_offsets\":[0,16]}}", -1, d4, sizeof d4);
    expect_reject("entry without dtype", p, "'wq'", "dtype");
    p = raw_file("nooffsets.safetensors", "{\"wq\":{\"dtype\":\"F32\",\"shape\":[4]}}", -1, d4, sizeof d4);
    expect_reject("entry without data_offsets", p, "'wq'", "data_offsets");
    p = raw_file("notobj.safetensors", "{\"wq\":[1,2]}", -1, d4, sizeof d4);
    expect_reject("entry not an object", p, "'wq'", NULL);
    p = raw_file("negshape.safetensors", "{\"wq\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", -1, d4, sizeof d4);
    expect_reject("negative shape", p, "'wq'", "shape");
    p = raw_file("fracshape.safetensors", "{\"wq\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", -1, d4, sizeof d4);
    expect_reject("fractional shape", p, "'wq'", "shape");
    p = raw_file("hugeshape.safetensors", "{\"wq\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", -1, d4, sizeof d4);
    expect_reject("shape overflowing 64 bits", p, "'wq'", "shape");
    p = raw_file("range.safetensors", "{\"wq\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", -1, d4, sizeof d4);
    expect_reject("offsets beyond the data section", p, "'wq'", "data_offsets");
    p = raw_file("reversed.safetensors", "{\"wq\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}}", -1, d4, sizeof d4);
    expect_reject("offsets end before begin", p, "'wq'", "data_offsets");
    p = raw_file("overlap.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", -1, d4, sizeof d4);
    expect_reject("overlapping spans", p, "'b'", "overlap");
    p = raw_file("span.safetensors", "{\"wq\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", -1, d4, sizeof d4);
    expect_reject("shape x dtype != byte span", p, "'wq'", "span");
    p = raw_file("dup.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", -1, d4, sizeof d4);
    expect_reject("duplicate tensor name", p, "'a'", "twice");
    p = raw_file("meta.safetensors", "{\"__metadata__\":{\"k\":3}}", -1, NULL, 0);
    expect_reject("metadata value not a string", p, "'k'", "__metadata__");

    /* a valid file, then cut short by 4 bytes: the last tensor's span runs past the end */
    gdn2_tensor ts[2] = {{"first", GDN2_F32, 1, {4}, sizeof d4, d4}, {"second", GDN2_F32, 1, {4}, sizeof d4, d4}};
    p = path_in("trunc.safetensors");
    int rc = gdn2_st_write(p, ts, 2, NULL, NULL, 0);
    gdn2_st st;
    rc = rc ? rc : gdn2_st_read(p, &st);
    CHECK(rc == 0, "untruncated file reads");
    if (rc == 0) gdn2_st_free(&st);
    struct stat sb;
    stat(p, &sb);
    CHECK(truncate(p, sb.st_size - 4) == 0, "truncate the file by 4 bytes");
    expect_reject("truncated data", p, "'second'", "truncated");
    CHECK(truncate(p, 20) == 0, "truncate the file into its header");
    expect_reject("truncated inside the header", p, NULL, "header length");

    p = path_in("does_not_exist.safetensors");
    rc = gdn2_st_read(p, &st);
    CHECK(rc == GDN2_ERR_IO && contains(gdn2_last_error(), p), "missing file: GDN2_ERR_IO naming it: %s",
          gdn2_last_error());
    rc = gdn2_st_read(g_dir, &st);
    CHECK(rc == GDN2_ERR_IO && contains(gdn2_last_error(), g_dir), "directory instead of a file: %s",
          gdn2_last_error());
}

/* Random corruption of a valid file's bytes (header and length prefix): every read must either
 * succeed with all tensors inside the data section or fail with a message naming the file. */
static void test_corruption(void) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    double b[2] = {7, 8};
    gdn2_tensor ts[2] = {{"alpha", GDN2_F32, 2, {2, 3}, sizeof a, a}, {"beta", GDN2_F64, 1, {2}, sizeof b, b}};
    const char *mk[] = {"meta"}, *mv[] = {"{\"scale\": 0.5}"};
    const char *p = path_in("fuzz_src.safetensors"), *q = path_in("fuzz.safetensors");
    if (gdn2_st_write(p, ts, 2, mk, mv, 1)) {
        CHECK(0, "write fuzz source: %s", gdn2_last_error());
        return;
    }
    FILE *f = fopen(p, "rb");
    unsigned char img[1024];
    size_t n = fread(img, 1, sizeof img, f);
    fclose(f);
    size_t hdr_end = n - sizeof a - sizeof b;
    unsigned long long seed = 123;
    int bad = 0, accepted = 0, rejected = 0;
    for (int it = 0; it < 3000; it++) {
        unsigned char m[1024];
        memcpy(m, img, n);
        int flips = 1 + (int)(test_rng_next(&seed) % 3);
        for (int j = 0; j < flips; j++) {
            size_t at = (size_t)(test_rng_next(&seed) % hdr_end);
            static const char pool[] = "0123456789[]{},:\"-. eE\x00\xff";
            m[at] = (test_rng_next(&seed) & 1) ? (unsigned char)pool[test_rng_next(&seed) % (sizeof pool - 1)]
                                               : (unsigned char)test_rng_next(&seed);
        }
        size_t len = n - (size_t)(test_rng_next(&seed) % 4 == 0 ? test_rng_next(&seed) % 16 : 0);
        f = fopen(q, "wb");
        fwrite(m, 1, len, f);
        fclose(f);
        gdn2_st st;
        int rc = gdn2_st_read(q, &st);
        if (rc == 0) {
            accepted++;
            const char *lo = (const char *)st.buffer, *hi = lo + len;
            for (int i = 0; i < st.n_tensors; i++) {
                const char *d = st.tensors[i].data;
                if (d < lo || d + st.tensors[i].nbytes > hi) bad++;
            }
            gdn2_st_free(&st);
        } else {
            rejected++;
            if (rc != GDN2_ERR_FORMAT || !contains(gdn2_last_error(), q)) bad++;
        }
    }
    CHECK(bad == 0, "3000 randomly corrupted files: %d accepted (in bounds), %d rejected naming the file, %d bad",
          accepted, rejected, bad);
}

static int count_tmp_files(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void test_atomic(void) {
    const char *p = path_in("atomic.bin");
    int rc = gdn2_write_file_atomic(p, "first version\n", 14);
    CHECK(rc == 0 && access(p, F_OK) == 0, "atomic write creates the file");
    rc = gdn2_write_file_atomic(p, "second\n", 7);
    char buf[64] = {0};
    FILE *f = fopen(p, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    CHECK(rc == 0 && n == 7 && !strcmp(buf, "second\n"), "atomic write replaces an existing file");
    CHECK(count_tmp_files() == 0, "no temporary file left behind");

    /* replacing a safetensors file keeps readers of the old one intact (rename, not overwrite) */
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    gdn2_tensor ta = {"t", GDN2_F32, 1, {2}, sizeof a, a}, tb = {"t", GDN2_F32, 1, {3}, sizeof b, b};
    const char *ps = path_in("replace.safetensors");
    gdn2_st st;
    int64_t s[1] = {-1};
    float *x = NULL;
    rc = gdn2_st_write(ps, &ta, 1, NULL, NULL, 0);
    rc = rc ? rc : gdn2_st_write(ps, &tb, 1, NULL, NULL, 0);
    rc = rc ? rc : gdn2_st_read(ps, &st);
    if (!rc) {
        rc = gdn2_st_get_f32(&st, "t", 1, 1, s, &x);
        gdn2_st_free(&st);
    }
    CHECK(rc == 0 && s[0] == 3 && x && x[2] == 5.0f, "st_write replaces an existing safetensors file");
    free(x);

    rc = gdn2_write_file_atomic(path_in("no/such/dir/file.bin"), "x", 1);
    CHECK(rc == GDN2_ERR_IO && contains(gdn2_last_error(), "no/such/dir"), "write into a missing directory fails: %s",
          gdn2_last_error());
    /* a target that exists and is not a regular file (a FIFO, a directory) is never replaced */
    const char *pf = path_in("fifo"), *pd = path_in("adir");
    struct stat sb;
    if (mkfifo(pf, 0644) == 0) {
        rc = gdn2_write_file_atomic(pf, "x", 1);
        CHECK(rc == GDN2_ERR_IO && contains(gdn2_last_error(), "not a regular file") && stat(pf, &sb) == 0 &&
                  S_ISFIFO(sb.st_mode),
              "a FIFO at the target is refused and left a FIFO: %s", gdn2_last_error());
    } else
        CHECK(0, "mkfifo %s", pf);
    CHECK(mkdir(pd, 0755) == 0, "mkdir %s", pd);
    rc = gdn2_write_file_atomic(pd, "x", 1);
    CHECK(rc == GDN2_ERR_IO && stat(pd, &sb) == 0 && S_ISDIR(sb.st_mode),
          "a directory at the target is refused and left a directory: %s", gdn2_last_error());
    /* the writer refuses inconsistent tensors before touching the disk */
    gdn2_tensor bad = {"t", GDN2_F32, 1, {3}, sizeof a, a};
    const char *pb = path_in("bad_write.safetensors");
    rc = gdn2_st_write(pb, &bad, 1, NULL, NULL, 0);
    CHECK(rc == GDN2_ERR_ARG && access(pb, F_OK) != 0 && contains(gdn2_last_error(), "'t'"),
          "writer rejects nbytes != shape x dtype: %s", gdn2_last_error());
    gdn2_tensor twice[2] = {ta, ta};
    rc = gdn2_st_write(pb, twice, 2, NULL, NULL, 0);
    CHECK(rc == GDN2_ERR_ARG && access(pb, F_OK) != 0, "writer rejects a duplicate name: %s", gdn2_last_error());
    CHECK(count_tmp_files() == 0, "still no temporary file left behind");
}

static void test_fixture(void) {
    char p[512];
    snprintf(p, sizeof p, "%s/op_gva.safetensors", fixture_dir());
    gdn2_st st;
    int rc = gdn2_st_read(p, &st);
    CHECK(rc == 0, "read official fixture %s (%s)", p, rc ? gdn2_last_error() : "ok");
    if (rc) return;
    int64_t q[4] = {-1, -1, -1, -1}, v[4] = {1, 100, -1, -1};
    float *x = NULL, *y = NULL;
    rc = gdn2_st_get_f32(&st, "q", 1, 4, q, &x);
    rc = rc ? rc : gdn2_st_get_f32(&st, "v", 1, 4, v, &y);
    CHECK(rc == 0 && q[0] == 1 && q[1] == 100 && q[2] == 2 && q[3] == 64 && v[2] == 4 && v[3] == 128 &&
              all_finite_f32(x, 1 * 100 * 2 * 64),
          "op_gva: q [1,100,2,64], v [1,100,4,128]");
    const char *m = gdn2_st_meta(&st, "meta");
    CHECK(m && strstr(m, "\"scale\""), "op_gva: __metadata__ 'meta' holds the options");
    free(x);
    free(y);
    gdn2_st_free(&st);
}

int main(void) {
    if (make_tmp_dir("test_io.")) return test_summary();
    test_roundtrip();
    test_malformed();
    test_corruption();
    test_atomic();
    test_fixture();
    remove_tmp_dir();
    return test_summary();
}
