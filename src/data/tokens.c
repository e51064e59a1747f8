/* Token-file data loader: llm.c's .bin shards, memory-mapped (include/gdn2_tokens.h,
 * docs/FORMATS.md "Token shards"). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gdn2_io.h"
#include "gdn2_tokens.h"
#include "util/internal.h"
#include "util/rng.h"

typedef struct {
    char *path;
    int version, width;     /* width: bytes per token, 2 or 4 */
    int64_t n_tokens;
    const uint8_t *map;     /* the whole file, read-only */
    size_t map_len;
} shard_file;

typedef struct {
    const shard_file *f;
    int64_t lo, hi;         /* tokens [lo, hi) of f */
} span;

typedef struct {
    span *sp;
    int64_t n;
    int64_t max_len;        /* the longest span, for the "no shard holds a batch" error */
    int64_t largest;        /* its index */
    int shuffle;
    int64_t *order;         /* the shard order of epoch order_epoch */
    int64_t order_epoch;
    gdn2_tokens_state st;
} stream;

struct gdn2_tokens {
    shard_file *files;      /* [0, n_main): the pattern's shards; [n_main, n_files): val_pattern's */
    int64_t n_files, n_main;
    stream s[2];
    gdn2_tokens_cfg cfg;
};

/* ---- reading ids ---------------------------------------------------------------------------- */

static inline uint32_t tok_at(const shard_file *f, int64_t i) {
    const uint8_t *p = f->map + GDN2_TOK_HEADER_BYTES + (size_t)i * (size_t)f->width;
    if (f->width == 2) return (uint32_t)p[0] | (uint32_t)p[1] << 8;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int bad_id(const shard_file *f, int64_t i, uint32_t id, int64_t vocab) {
    long long off = (long long)GDN2_TOK_HEADER_BYTES + (long long)i * f->width;
    if (vocab > 0)
        return gdn2_error(GDN2_ERR_FORMAT, "%s: token %lld (byte offset %lld) is %lu, not below the vocabulary size %lld",
                          f->path, (long long)i, off, (unsigned long)id, (long long)vocab);
    return gdn2_error(GDN2_ERR_FORMAT, "%s: token %lld (byte offset %lld) is %lu, beyond 2^31-1", f->path, (long long)i,
                      off, (unsigned long)id);
}

/* ids [a, b) of f against vocab (and int32) */
static int check_ids(const shard_file *f, int64_t a, int64_t b, int64_t vocab) {
    const uint32_t lim = vocab > 0 && vocab <= 2147483647LL ? (uint32_t)vocab : 2147483648u;
    if (f->width == 2 && lim > 65535) return GDN2_OK;
    for (int64_t i = a; i < b; i++) {
        uint32_t id = tok_at(f, i);
        if (id >= lim) return bad_id(f, i, id, vocab);
    }
    return GDN2_OK;
}

/* ---- opening -------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* the sorted, distinct paths matched by the comma list `pattern` (*paths malloc'ed, each strdup'ed) */
static int expand(const char *pattern, const char *what, char ***paths, int64_t *n) {
    *paths = NULL, *n = 0;
    if (!pattern || !*pattern) return gdn2_error(GDN2_ERR_ARG, "%s: empty file pattern", what);
    char *list = strdup(pattern);
    if (!list) return gdn2_error(GDN2_ERR_NOMEM, "out of memory");
    int st = GDN2_OK;
    char **v = NULL;
    int64_t nv = 0, cap = 0;
    for (char *item = list, *next; item && !st; item = next) {
        next = strchr(item, ',');
        if (next) *next++ = 0;
        if (!*item) {
            st = gdn2_error(GDN2_ERR_ARG, "%s '%s': an empty item in the comma list", what, pattern);
            break;
        }
        glob_t g;
        memset(&g, 0, sizeof g);
        int rc = glob(item, 0, NULL, &g);
        if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
            st = gdn2_error(GDN2_ERR_IO, "%s '%s': no file matches '%s'", what, pattern, item);
        } else if (rc != 0) {
            st = gdn2_error(GDN2_ERR_IO, "%s '%s': cannot expand '%s' (%s)", what, pattern, item,
                            rc == GLOB_NOSPACE ? "out of memory" : "read error");
        } else {
            for (size_t k = 0; k < g.gl_pathc && !st; k++) {
                if (nv == cap) {
                    cap = cap ? 2 * cap : 16;
                    char **nvp = realloc(v, (size_t)cap * sizeof *v);
                    if (!nvp) {
                        st = gdn2_error(GDN2_ERR_NOMEM, "out of memory listing the shards");
                        break;
                    }
                    v = nvp;
                }
                if (!(v[nv] = strdup(g.gl_pathv[k]))) st = gdn2_error(GDN2_ERR_NOMEM, "out of memory listing the shards");
                else nv++;
            }
        }
        globfree(&g);
    }
    free(list);
    if (!st) {
        qsort(v, (size_t)nv, sizeof *v, cmp_str);
        int64_t w = 0;
        for (int64_t i = 0; i < nv; i++) {
            if (w && !strcmp(v[w - 1], v[i])) free(v[i]);
            else v[w++] = v[i];
        }
        nv = w;
        *paths = v, *n = nv;
        return GDN2_OK;
    }
    for (int64_t i = 0; i < nv; i++) free(v[i]);
    free(v);
    return st;
}

static int32_t le32(const uint8_t *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

/* open, validate and map one shard (f->path set) */
static int map_shard(shard_file *f) {
    const char *path = f->path;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return gdn2_error(GDN2_ERR_IO, "%s: cannot open token shard: %s", path, strerror(errno));
    struct stat sb;
    int st = GDN2_OK;
    uint8_t h[12];
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = gdn2_error(GDN2_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    const long long size = (long long)sb.st_size;
    if (size < GDN2_TOK_HEADER_BYTES) {
        st = gdn2_error(GDN2_ERR_FORMAT, "%s: %lld bytes, shorter than the %d-byte token shard header", path, size,
                        GDN2_TOK_HEADER_BYTES);
        goto out;
    }
    ssize_t got;
    do got = pread(fd, h, sizeof h, 0);
    while (got < 0 && errno == EINTR);
    if (got != (ssize_t)sizeof h) {
        st = gdn2_error(GDN2_ERR_IO, "%s: cannot read the header: %s", path, got < 0 ? strerror(errno) : "short read");
        goto out;
    }
    const int32_t magic = le32(h), version = le32(h + 4), count = le32(h + 8);
    if (magic == GDN2_TOK_MAGIC) {
        if (version != GDN2_TOK_V_U16 && version != GDN2_TOK_V_U32) {
            st = gdn2_error(GDN2_ERR_FORMAT,
                            "%s: token shard version %d not supported (1: uint16 tokens, llm.c; 2: uint32 tokens)", path,
                            (int)version);
            goto out;
        }
        f->width = version == GDN2_TOK_V_U16 ? 2 : 4;
    } else if (magic == GDN2_TOK_MAGIC_LLAMA3) {
        if (version != GDN2_TOK_V_LLAMA3) {
            st = gdn2_error(GDN2_ERR_FORMAT, "%s: token shard version %d not supported with magic %d (7: llm.c's uint32 tokens)",
                            path, (int)version, GDN2_TOK_MAGIC_LLAMA3);
            goto out;
        }
        f->width = 4;
    } else {
        st = gdn2_error(GDN2_ERR_FORMAT, "%s: bad magic %d, expected %d (an llm.c token shard; or %d, llm.c's llama-3 shard)",
                        path, (int)magic, GDN2_TOK_MAGIC, GDN2_TOK_MAGIC_LLAMA3);
        goto out;
    }
    f->version = version;
    if (count < 1) {
        st = gdn2_error(GDN2_ERR_FORMAT, "%s: the header's token count is %d, expected at least 1", path, (int)count);
        goto out;
    }
    const long long want = (long long)GDN2_TOK_HEADER_BYTES + (long long)count * f->width;
    if (size != want) {
        st = gdn2_error(GDN2_ERR_FORMAT,
                        "%s: file size %lld bytes, but the header's %d uint%d tokens make exactly %lld bytes (%s)", path,
                        size, (int)count, 8 * f->width, want,
                        size < want ? "truncated" : "extra bytes after the tokens");
        goto out;
    }
    if ((unsigned long long)size > (unsigned long long)SIZE_MAX) {
        st = gdn2_error(GDN2_ERR_IO, "%s: %lld bytes do not fit this machine's address space", path, size);
        goto out;
    }
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        st = gdn2_error(GDN2_ERR_IO, "%s: cannot map %lld bytes: %s", path, size, strerror(errno));
        goto out;
    }
    f->map = m;
    f->map_len = (size_t)size;
    f->n_tokens = count;
out:
    close(fd);
    return st;
}

static int add_span(stream *s, const shard_file *f, int64_t lo, int64_t hi) {
    span *p = realloc(s->sp, (size_t)(s->n + 1) * sizeof *p);
    if (!p) return gdn2_error(GDN2_ERR_NOMEM, "out of memory");
    s->sp = p;
    p[s->n] = (span){f, lo, hi};
    if (hi - lo > s->max_len || s->n == 0) s->max_len = hi - lo, s->largest = s->n;
    s->n++;
    return GDN2_OK;
}

static int load_files(gdn2_tokens *d, const char *pattern, const char *what) {
    char **paths;
    int64_t n;
    int st = expand(pattern, what, &paths, &n);
    if (st) return st;
    shard_file *nf = realloc(d->files, (size_t)(d->n_files + n) * sizeof *nf);
    if (!nf) {
        for (int64_t i = 0; i < n; i++) free(paths[i]);
        free(paths);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory");
    }
    d->files = nf;
    for (int64_t i = 0; i < n; i++) {
        memset(&nf[d->n_files], 0, sizeof *nf);
        nf[d->n_files++].path = paths[i]; /* owned by d from here, mapped or not */
    }
    free(paths);
    for (int64_t i = d->n_files - n; i < d->n_files && !st; i++) st = map_shard(&d->files[i]);
    return st;
}

int gdn2_tokens_open(const char *pattern, const char *val_pattern, const gdn2_tokens_cfg *cfg, gdn2_tokens **out) {
    *out = NULL;
    gdn2_tokens *d = gdn2_calloc(1, sizeof *d, "token dataset");
    if (!d) return GDN2_ERR_NOMEM;
    if (cfg) d->cfg = *cfg;
    d->s[0].shuffle = d->cfg.shuffle;
    d->s[0].order_epoch = d->s[1].order_epoch = -1;
    int st = load_files(d, pattern, "token data pattern");
    d->n_main = d->n_files;
    if (!st && val_pattern) st = load_files(d, val_pattern, "validation token data pattern");
    if (!st) {
        if (val_pattern) {
            for (int64_t i = 0; i < d->n_main && !st; i++) st = add_span(&d->s[0], &d->files[i], 0, d->files[i].n_tokens);
            for (int64_t i = d->n_main; i < d->n_files && !st; i++)
                st = add_span(&d->s[1], &d->files[i], 0, d->files[i].n_tokens);
        } else if (d->n_main >= 2) {
            for (int64_t i = 0; i + 1 < d->n_main && !st; i++)
                st = add_span(&d->s[0], &d->files[i], 0, d->files[i].n_tokens);
            const shard_file *l = &d->files[d->n_main - 1];
            if (!st) st = add_span(&d->s[1], l, 0, l->n_tokens);
        } else {
            const shard_file *f = &d->files[0];
            int64_t n_val = f->n_tokens / 10;
            st = add_span(&d->s[0], f, 0, f->n_tokens - n_val);
            if (!st) st = add_span(&d->s[1], f, f->n_tokens - n_val, f->n_tokens);
        }
    }
    for (int k = 0; k < 2 && !st; k++)
        if (!(d->s[k].order = gdn2_malloc((size_t)d->s[k].n * sizeof(int64_t) + 1, "shard order"))) st = GDN2_ERR_NOMEM;
    if (st) {
        gdn2_tokens_close(d);
        return st;
    }
    *out = d;
    return GDN2_OK;
}

void gdn2_tokens_close(gdn2_tokens *d) {
    if (!d) return;
    for (int64_t i = 0; i < d->n_files; i++) {
        if (d->files[i].map) munmap((void *)d->files[i].map, d->files[i].map_len);
        free(d->files[i].path);
    }
    for (int k = 0; k < 2; k++) free(d->s[k].sp), free(d->s[k].order);
    free(d->files);
    free(d);
}

void gdn2_tokens_set_vocab(gdn2_tokens *d, int64_t vocab_size) { d->cfg.vocab_size = vocab_size; }

/* ---- the stream ----------------------------------------------------------------------------- */

/* the shard order of `epoch` into s->order: the identity, or Fisher-Yates from (seed, epoch) */
static void set_order(stream *s, uint64_t seed, int64_t epoch) {
    if (s->order_epoch == epoch) return;
    for (int64_t i = 0; i < s->n; i++) s->order[i] = i;
    if (s->shuffle) {
        gdn2_rng r = {gdn2_mix64(gdn2_mix64(seed ^ 0x746f6b656e73ULL) + (uint64_t)epoch)};
        for (int64_t i = s->n - 1; i > 0; i--) {
            int64_t j = (int64_t)gdn2_rng_below(&r, (uint64_t)i + 1), t = s->order[i];
            s->order[i] = s->order[j], s->order[j] = t;
        }
    }
    s->order_epoch = epoch;
}

/* the error for a split none of whose shards holds a batch of need tokens; GDN2_OK if one does */
static int split_fits(const gdn2_tokens *d, int split, int64_t B, int64_t T, int64_t *need_out) {
    if (split != 0 && split != 1) return gdn2_error(GDN2_ERR_ARG, "tokens: split %d is not 0 (train) or 1 (validation)", split);
    const stream *s = &d->s[split];
    int64_t bt, need;
    if (B < 1 || T < 1 || __builtin_mul_overflow(B, T, &bt) || __builtin_add_overflow(bt, 1, &need))
        return gdn2_error(GDN2_ERR_ARG, "tokens: batch %lld x %lld is not a valid size", (long long)B, (long long)T);
    if (need_out) *need_out = need;
    const char *name = split ? "validation" : "train";
    if (s->n == 0 || s->max_len < need) {
        if (s->n == 0) return gdn2_error(GDN2_ERR_ARG, "tokens: the %s split has no tokens", name);
        const span *l = &s->sp[s->largest];
        return gdn2_error(GDN2_ERR_ARG,
                          "tokens: no %s shard holds batch x seq-len + 1 = %lld tokens (the largest, %s, has %lld%s)",
                          name, (long long)need, l->f->path, (long long)(l->hi - l->lo),
                          l->hi - l->lo < l->f->n_tokens ? " in this split" : "");
    }
    return GDN2_OK;
}

int gdn2_tokens_check_batch(const gdn2_tokens *d, int64_t B, int64_t T) {
    int st = split_fits(d, 0, B, T, NULL);
    return st ? st : split_fits(d, 1, B, T, NULL);
}

int gdn2_tokens_next(gdn2_tokens *d, int split, int64_t B, int64_t T, int32_t *inputs, int32_t *targets) {
    int64_t need;
    int rc = split_fits(d, split, B, T, &need);
    if (rc) return rc;
    stream *s = &d->s[split];
    const int64_t bt = need - 1;
    gdn2_tokens_state st = s->st;
    for (;;) { /* ends within n moves: some span holds `need` */
        set_order(s, d->cfg.seed, st.epoch);
        const span *p = &s->sp[s->order[st.shard]];
        if (p->hi - p->lo - st.pos >= need) break;
        st.pos = 0;
        if (++st.shard == s->n) st.shard = 0, st.epoch++;
    }
    const span *p = &s->sp[s->order[st.shard]];
    const int64_t a = p->lo + st.pos;
    rc = check_ids(p->f, a, a + need, d->cfg.vocab_size);
    if (rc) return rc;
    for (int64_t i = 0; i < bt; i++) inputs[i] = (int32_t)tok_at(p->f, a + i);
    for (int64_t i = 0; i + 1 < bt; i++) targets[i] = inputs[i + 1];
    targets[bt - 1] = (int32_t)tok_at(p->f, a + bt);
    st.pos += bt;
    s->st = st;
    return GDN2_OK;
}

gdn2_tokens_state gdn2_tokens_get_state(const gdn2_tokens *d, int split) { return d->s[split ? 1 : 0].st; }

int gdn2_tokens_set_state(gdn2_tokens *d, int split, const gdn2_tokens_state *x) {
    stream *s = &d->s[split ? 1 : 0];
    if (x->epoch < 0 || x->shard < 0 || x->pos < 0 || x->shard >= (s->n ? s->n : 1))
        return gdn2_error(GDN2_ERR_ARG, "tokens: data position epoch %lld, shard %lld, token %lld does not fit the %s split's %lld shards",
                          (long long)x->epoch, (long long)x->shard, (long long)x->pos, split ? "validation" : "train",
                          (long long)s->n);
    if (s->n) {
        set_order(s, d->cfg.seed, x->epoch);
        const span *p = &s->sp[s->order[x->shard]];
        if (x->pos > p->hi - p->lo)
            return gdn2_error(GDN2_ERR_ARG, "tokens: data position token %lld is beyond the %lld tokens of %s (shard %lld of epoch %lld)",
                              (long long)x->pos, (long long)(p->hi - p->lo), p->f->path, (long long)x->shard,
                              (long long)x->epoch);
    }
    s->st = *x;
    return GDN2_OK;
}

char *gdn2_tokens_state_json(const gdn2_tokens *d, int split) {
    stream *s = (stream *)&d->s[split ? 1 : 0];
    const gdn2_tokens_state x = s->st;
    const char *file = "";
    if (s->n) {
        set_order(s, d->cfg.seed, x.epoch);
        file = s->sp[s->order[x.shard]].f->path;
    }
    cJSON *o = cJSON_CreateObject();
    char b[3][32];
    snprintf(b[0], sizeof b[0], "%lld", (long long)x.epoch);
    snprintf(b[1], sizeof b[1], "%lld", (long long)x.shard);
    snprintf(b[2], sizeof b[2], "%lld", (long long)x.pos);
    char *out = NULL;
    if (o && cJSON_AddRawToObject(o, "epoch", b[0]) && cJSON_AddRawToObject(o, "shard", b[1]) &&
        cJSON_AddRawToObject(o, "pos", b[2]) && cJSON_AddStringToObject(o, "file", file))
        out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!out) gdn2_error(GDN2_ERR_NOMEM, "out of memory");
    return out;
}

int gdn2_tokens_state_parse(const char *json, gdn2_tokens_state *x) {
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return gdn2_error(GDN2_ERR_FORMAT, "token data position: not a JSON object");
    }
    const char *keys[3] = {"epoch", "shard", "pos"};
    int64_t v[3];
    for (int k = 0; k < 3; k++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        double f = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!(f >= 0 && f < 9007199254740992.0 && f == floor(f))) {
            cJSON_Delete(o);
            return gdn2_error(GDN2_ERR_FORMAT, "token data position: '%s' missing or not a whole number >= 0", keys[k]);
        }
        v[k] = (int64_t)f;
    }
    cJSON_Delete(o);
    x->epoch = v[0], x->shard = v[1], x->pos = v[2];
    return GDN2_OK;
}

int gdn2_tokens_scan(const gdn2_tokens *d) {
    if (d->cfg.vocab_size <= 0) return GDN2_OK;
    for (int64_t i = 0; i < d->n_files; i++) {
        int st = check_ids(&d->files[i], 0, d->files[i].n_tokens, d->cfg.vocab_size);
        if (st) return st;
    }
    return GDN2_OK;
}

int64_t gdn2_tokens_n_shards(const gdn2_tokens *d, int split) { return d->s[split ? 1 : 0].n; }
int64_t gdn2_tokens_n_tokens(const gdn2_tokens *d, int split) {
    const stream *s = &d->s[split ? 1 : 0];
    int64_t n = 0;
    for (int64_t i = 0; i < s->n; i++) n += s->sp[i].hi - s->sp[i].lo;
    return n;
}
const char *gdn2_tokens_shard_path(const gdn2_tokens *d, int split, int64_t i) {
    const stream *s = &d->s[split ? 1 : 0];
    return i >= 0 && i < s->n ? s->sp[i].f->path : NULL;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

void gdn2_tokens_identity(const gdn2_tokens *d, int split, char *buf, size_t cap) {
    const int64_t a = split ? d->n_main : 0, b = split ? d->n_files : d->n_main;
    uint64_t h = 0xcbf29ce484222325ULL;
    int64_t n_tok = 0;
    for (int64_t i = a; i < b; i++) {
        const shard_file *f = &d->files[i];
        const char *base = strrchr(f->path, '/');
        base = base ? base + 1 : f->path;
        h = fnv(h, base, strlen(base) + 1);
        const int64_t meta[3] = {(int64_t)f->map_len, f->version, f->n_tokens};
        h = fnv(h, meta, sizeof meta);
        const size_t len = f->map_len - GDN2_TOK_HEADER_BYTES, k = len < 4096 ? len : 4096;
        h = fnv(h, f->map + GDN2_TOK_HEADER_BYTES, k);
        h = fnv(h, f->map + f->map_len - k, k);
        n_tok += f->n_tokens;
    }
    snprintf(buf, cap, "%lld shard%s, %lld tokens, fnv1a64+mix64 %016llx", (long long)(b - a), b - a == 1 ? "" : "s",
             (long long)n_tok, (unsigned long long)gdn2_mix64(h));
}

/* ---- writing -------------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24); }

static int check_write_args(const char *path, int version, int64_t n) {
    if (version != GDN2_TOK_V_U16 && version != GDN2_TOK_V_U32)
        return gdn2_error(GDN2_ERR_ARG, "%s: token shard version %d (1: uint16, 2: uint32)", path, version);
    if (n < 1 || n > GDN2_TOK_MAX_SHARD_TOKENS)
        return gdn2_error(GDN2_ERR_ARG, "%s: %lld tokens in a shard, expected 1 .. 2^31-1", path, (long long)n);
    return GDN2_OK;
}

static int write_header(gdn2_atomic_file *af, int version, int64_t n) {
    uint8_t h[GDN2_TOK_HEADER_BYTES];
    memset(h, 0, sizeof h);
    put32(h, GDN2_TOK_MAGIC), put32(h + 4, (uint32_t)version), put32(h + 8, (uint32_t)n);
    return gdn2_atomic_write(af, h, sizeof h);
}

/* n ids (from 32-bit ids, or from bytes when ids32 is NULL) encoded and appended */
static int write_ids(gdn2_atomic_file *af, int version, const uint32_t *ids32, const uint8_t *bytes, int64_t n) {
    uint8_t buf[1 << 14];
    const int w = version == GDN2_TOK_V_U16 ? 2 : 4;
    const int64_t per = (int64_t)sizeof buf / w;
    for (int64_t i = 0; i < n; i += per) {
        const int64_t m = n - i < per ? n - i : per;
        for (int64_t j = 0; j < m; j++) {
            uint32_t v = ids32 ? ids32[i + j] : bytes[i + j];
            if (w == 2) buf[2 * j] = (uint8_t)v, buf[2 * j + 1] = (uint8_t)(v >> 8);
            else put32(buf + 4 * j, v);
        }
        int st = gdn2_atomic_write(af, buf, (size_t)(m * w));
        if (st) return st;
    }
    return GDN2_OK;
}

int gdn2_tokens_write_shard(const char *path, int version, const uint32_t *ids, int64_t n) {
    int st = check_write_args(path, version, n);
    if (st) return st;
    if (version == GDN2_TOK_V_U16)
        for (int64_t i = 0; i < n; i++)
            if (ids[i] > 65535)
                return gdn2_error(GDN2_ERR_ARG, "%s: id %lu at %lld does not fit a uint16 shard (version 1); use version 2",
                                  path, (unsigned long)ids[i], (long long)i);
    gdn2_atomic_file af;
    if ((st = gdn2_atomic_open(&af, path))) return st;
    if (!(st = write_header(&af, version, n)) && !(st = write_ids(&af, version, ids, NULL, n))) return gdn2_atomic_commit(&af);
    gdn2_atomic_abort(&af);
    return st;
}

int gdn2_tokens_from_text(const char *text_path, const char *prefix, int64_t shard_tokens, int version,
                          int64_t *n_shards, int64_t *n_tokens) {
    if (n_shards) *n_shards = 0;
    if (n_tokens) *n_tokens = 0;
    int st = check_write_args(prefix, version, shard_tokens);
    if (st) return st;
    FILE *in = fopen(text_path, "rb");
    if (!in) return gdn2_error(GDN2_ERR_IO, "%s: cannot open text file: %s", text_path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(in), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(in);
        return gdn2_error(GDN2_ERR_IO, "%s: not a regular file", text_path);
    }
    const int64_t n = (int64_t)sb.st_size;
    if (n < 1) {
        fclose(in);
        return gdn2_error(GDN2_ERR_FORMAT, "%s: empty text file", text_path);
    }
    const size_t plen = strlen(prefix) + 32;
    char *path = malloc(plen);
    uint8_t *chunk = malloc(1 << 16);
    if (!path || !chunk) {
        free(path), free(chunk), fclose(in);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory");
    }
    int64_t done = 0, k = 0;
    while (done < n && !st) {
        const int64_t m = n - done < shard_tokens ? n - done : shard_tokens;
        snprintf(path, plen, "%s_%06lld.bin", prefix, (long long)k);
        gdn2_atomic_file af;
        if ((st = gdn2_atomic_open(&af, path))) break;
        st = write_header(&af, version, m);
        for (int64_t left = m; left > 0 && !st;) {
            size_t want = left < (1 << 16) ? (size_t)left : (size_t)1 << 16, got = fread(chunk, 1, want, in);
            if (got != want) {
                st = gdn2_error(GDN2_ERR_IO, "%s: short read at byte %lld (the file changed while being read?)", text_path,
                                (long long)(done + m - left));
                break;
            }
            st = write_ids(&af, version, NULL, chunk, (int64_t)got);
            left -= (int64_t)got;
        }
        if (st) {
            gdn2_atomic_abort(&af);
            break;
        }
        if ((st = gdn2_atomic_commit(&af))) break;
        done += m, k++;
        if (n_shards) *n_shards = k;
        if (n_tokens) *n_tokens = done;
    }
    free(path), free(chunk), fclose(in);
    return st;
}
