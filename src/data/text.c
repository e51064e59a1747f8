/* Byte-level tokenizer and text loader (include/gdn2_text.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gdn2_text.h"
#include "util/internal.h"
#include "util/rng.h"

int gdn2_text_load(const char *path, double val_frac, gdn2_text *t) {
    memset(t, 0, sizeof *t);
    if (!(val_frac >= 0 && val_frac < 1))
        return gdn2_error(GDN2_ERR_ARG, "%s: validation fraction %g not in [0, 1)", path, val_frac);
    FILE *f = fopen(path, "rb");
    if (!f) return gdn2_error(GDN2_ERR_IO, "%s: cannot open text file: %s", path, strerror(errno));
    /* a directory opens too, and ftell on it reports a huge size (an out-of-memory message
     * followed): the size comes from fstat, and only a regular file is read */
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return gdn2_error(GDN2_ERR_IO, "%s: not a regular file", path);
    }
    const int64_t n = (int64_t)sb.st_size;
    if (n <= 0) {
        fclose(f);
        return gdn2_error(GDN2_ERR_FORMAT, "%s: empty text file", path);
    }
    t->data = gdn2_malloc((size_t)n, "text file");
    if (!t->data) {
        fclose(f);
        return GDN2_ERR_NOMEM;
    }
    size_t got = fread(t->data, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        gdn2_text_free(t);
        return gdn2_error(GDN2_ERR_IO, "%s: short read (%zu of %lld bytes)", path, got, (long long)n);
    }
    t->n = n;
    t->n_train = (int64_t)((double)n * (1.0 - val_frac));
    return GDN2_OK;
}

void gdn2_text_free(gdn2_text *t) {
    free(t->data);
    memset(t, 0, sizeof *t);
}

int gdn2_text_batch(const gdn2_text *t, int split, uint64_t seed, int64_t B, int64_t T, int32_t *tokens,
                    int32_t *targets) {
    int64_t lo = split ? t->n_train : 0, hi = split ? t->n : t->n_train;
    int64_t span = hi - lo - (T + 1);
    if (span < 0)
        return gdn2_error(GDN2_ERR_ARG, "text %s split has %lld bytes, fewer than seq_len+1 = %lld",
                          split ? "validation" : "train", (long long)(hi - lo), (long long)(T + 1));
    uint64_t s = gdn2_mix64(seed + 0x74657874ULL);
    for (int64_t b = 0; b < B; b++) {
        s = gdn2_mix64(s + 0x9E3779B97F4A7C15ULL);
        int64_t o = lo + (int64_t)(((unsigned __int128)s * (uint64_t)(span + 1)) >> 64);
        for (int64_t i = 0; i < T; i++) {
            tokens[b * T + i] = t->data[o + i];
            targets[b * T + i] = t->data[o + i + 1];
        }
    }
    return GDN2_OK;
}

int64_t gdn2_byte_encode(const char *s, int64_t n, int32_t *ids) {
    for (int64_t i = 0; i < n; i++) ids[i] = (unsigned char)s[i];
    return n;
}

void gdn2_byte_decode(const int32_t *ids, int64_t n, char *out) {
    for (int64_t i = 0; i < n; i++) out[i] = ids[i] >= 0 && ids[i] < 256 ? (char)ids[i] : '?';
}
