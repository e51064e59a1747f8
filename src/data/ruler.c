/* RULER needle-in-a-haystack generators: S-NIAH-1/2/3, MK-NIAH-1/2/3, MV-NIAH, MQ-NIAH.
 * Recipe and verbatim strings: NVIDIA/RULER scripts/data/synthetic/niah.py and synthetic.yaml,
 * re-derived; docs/TASKS.md ("RULER NIAH") states what is generated.
 * Lengths are in tokens of the byte-level tokenizer (1 byte = 1 token), so the fit to length is
 * exact arithmetic on byte counts instead of RULER's search over haystack sizes. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_data.h"
#include "rng.h"
#include "util/internal.h"

#define NIAH_TAG 0x4e494148ULL /* "NIAH" */

enum { HAY_NOISE, HAY_ESSAY, HAY_NEEDLE };
enum { TY_WORDS, TY_NUMBERS, TY_UUIDS };

typedef struct {
    const char *name, *paper;
    int hay, key_type, val_type, k, v, q;
} niah_spec;

/* RULER synthetic.yaml: haystack, key type, value type, #keys, #values per key, #queries */
static const niah_spec SPECS[GDN2_NIAH_COUNT] = {
    {"niah_single_1", "S-NIAH-1", HAY_NOISE, TY_WORDS, TY_NUMBERS, 1, 1, 1},
    {"niah_single_2", "S-NIAH-2", HAY_ESSAY, TY_WORDS, TY_NUMBERS, 1, 1, 1},
    {"niah_single_3", "S-NIAH-3", HAY_ESSAY, TY_WORDS, TY_UUIDS, 1, 1, 1},
    {"niah_multikey_1", "MK-NIAH-1", HAY_ESSAY, TY_WORDS, TY_NUMBERS, 4, 1, 1},
    {"niah_multikey_2", "MK-NIAH-2", HAY_NEEDLE, TY_WORDS, TY_NUMBERS, 1, 1, 1},
    {"niah_multikey_3", "MK-NIAH-3", HAY_NEEDLE, TY_UUIDS, TY_UUIDS, 1, 1, 1},
    {"niah_multivalue", "MV-NIAH", HAY_ESSAY, TY_WORDS, TY_NUMBERS, 1, 4, 1},
    {"niah_multiquery", "MQ-NIAH", HAY_ESSAY, TY_WORDS, TY_NUMBERS, 4, 1, 4},
};

/* RULER's strings, verbatim (niah.py and synthetic.yaml). {V} = type_needle_v, {Q} = query, {C} = context. */
static const char TEMPLATE[] =
    "Some special magic {V} are hidden within the following text. Make sure to memorize it. I will quiz "
    "you about the {V} afterwards.\n{C}\nWhat are all the special magic {V} for {Q} mentioned in the "
    "provided text?";
static const char ANSWER_PREFIX[] = " The special magic {V} for {Q} mentioned in the provided text are";
static const char NEEDLE[] = "One of the special magic {V} for {K} is: {X}.";
static const char NOISE[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
/* round(linspace(0, 100, 40)) */
static const int DEPTHS[40] = {0,  3,  5,  8,  10, 13, 15, 18, 21, 23, 26, 28, 31, 33, 36, 38, 41, 44, 46, 49,
                               51, 54, 56, 59, 62, 64, 67, 69, 72, 74, 77, 79, 82, 85, 87, 90, 92, 95, 97, 100};

const char *gdn2_niah_name(int task) { return task >= 0 && task < GDN2_NIAH_COUNT ? SPECS[task].name : "?"; }
const char *gdn2_niah_paper_name(int task) { return task >= 0 && task < GDN2_NIAH_COUNT ? SPECS[task].paper : "?"; }
int gdn2_niah_needs_essay(int task) { return task >= 0 && task < GDN2_NIAH_COUNT && SPECS[task].hay == HAY_ESSAY; }
int gdn2_niah_default_max_new(int task) {
    if (task < 0 || task >= GDN2_NIAH_COUNT) return 0;
    const niah_spec *s = &SPECS[task];
    /* byte-level answers: ": 1234567." is ~10 bytes, a UUID 36, four numbers ~45 (at least 16 / 48
     * bytes; RULER reserves 128 Llama tokens) */
    return (s->val_type == TY_UUIDS || s->v * s->q > 1) ? 64 : 32;
}

/* ---------------------------------------------------------------------------------------- */
/* small string builder                                                                      */
/* ---------------------------------------------------------------------------------------- */
typedef struct { char *p; size_t n, cap; int oom; } sbuf;
static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->n + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Python str.replace(old, new) on a malloc'd string (all occurrences, left to right). */
static char *replace_all(char *s, const char *old, const char *rep) {
    if (!s) return NULL;
    sbuf b = {0};
    size_t ol = strlen(old);
    const char *p = s, *h;
    while ((h = strstr(p, old))) {
        sb_put(&b, p, (size_t)(h - p));
        sb_str(&b, rep);
        p = h + ol;
    }
    sb_str(&b, p);
    free(s);
    return b.oom ? (free(b.p), NULL) : b.p;
}

static char *dupstr(const char *s) {
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

/* The prompt frame: RULER's singular rewrite (only when #queries x #values == 1, applied to the
 * template and the answer prefix in this order: Some->A, are all->is, are->is, answers->answer;
 * the value type loses its "s"), then {V} and {Q} substituted. The needle keeps the plural. */
static int frame_strings(int task, const char *query, char **pre, char **post) {
    const niah_spec *s = &SPECS[task];
    char *t = dupstr(TEMPLATE), *a = dupstr(ANSWER_PREFIX);
    const char *tv = s->val_type == TY_UUIDS ? "uuids" : "numbers";
    char tv1[16];
    snprintf(tv1, sizeof tv1, "%s", tv);
    if (s->q * s->v == 1) {
        static const char *const rw[4][2] = {{"Some", "A"}, {"are all", "is"}, {"are", "is"}, {"answers", "answer"}};
        for (int i = 0; i < 4; i++) t = replace_all(t, rw[i][0], rw[i][1]), a = replace_all(a, rw[i][0], rw[i][1]);
        tv1[strlen(tv1) - 1] = 0;
    }
    t = replace_all(replace_all(t, "{V}", tv1), "{Q}", query);
    a = replace_all(replace_all(a, "{V}", tv1), "{Q}", query);
    if (!t || !a) { free(t); free(a); return gdn2_error(GDN2_ERR_NOMEM, "niah: out of memory building the prompt"); }
    char *c = strstr(t, "{C}");
    *c = 0;
    *pre = dupstr(t);
    sbuf b = {0};
    sb_str(&b, c + 3);
    sb_str(&b, a);
    *post = b.p;
    free(t); free(a);
    if (!*pre || !*post || b.oom) { free(*pre); free(*post); return gdn2_error(GDN2_ERR_NOMEM, "niah: out of memory"); }
    return GDN2_OK;
}

int gdn2_niah_frame(int task, const char *query, char *pre, size_t pre_cap, char *post, size_t post_cap) {
    if (task < 0 || task >= GDN2_NIAH_COUNT) return gdn2_error(GDN2_ERR_ARG, "niah: unknown task %d", task);
    char *a, *b;
    int st = frame_strings(task, query, &a, &b);
    if (st) return st;
    if (strlen(a) + 1 > pre_cap || strlen(b) + 1 > post_cap) st = gdn2_error(GDN2_ERR_ARG, "niah_frame: buffer too small");
    else memcpy(pre, a, strlen(a) + 1), memcpy(post, b, strlen(b) + 1);
    free(a); free(b);
    return st;
}

int gdn2_niah_needle(int task, const char *key, const char *value, char *out, size_t cap) {
    if (task < 0 || task >= GDN2_NIAH_COUNT) return gdn2_error(GDN2_ERR_ARG, "niah: unknown task %d", task);
    /* the needle always uses the plural value type */
    char *t = dupstr(NEEDLE);
    t = replace_all(replace_all(replace_all(t, "{V}", SPECS[task].val_type == TY_UUIDS ? "uuids" : "numbers"), "{K}", key),
                    "{X}", value);
    if (!t) return gdn2_error(GDN2_ERR_NOMEM, "niah_needle: out of memory");
    size_t n = strlen(t);
    if (n + 1 > cap) { free(t); return gdn2_error(GDN2_ERR_ARG, "niah_needle: buffer too small"); }
    memcpy(out, t, n + 1);
    free(t);
    return GDN2_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* resources: word lists and the essay haystack                                              */
/* ---------------------------------------------------------------------------------------- */
static int read_file(const char *path, const char *what, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return gdn2_error(GDN2_ERR_IO, "cannot open %s file '%s'", what, path);
    sbuf b = {0};
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) sb_put(&b, tmp, n);
    int err = ferror(f);
    fclose(f);
    if (err || b.oom) { free(b.p); return gdn2_error(GDN2_ERR_IO, "cannot read %s file '%s'", what, path); }
    if (b.n == 0) { free(b.p); return gdn2_error(GDN2_ERR_IO, "%s file '%s' is empty", what, path); }
    *out = b.p, *len = b.n;
    return GDN2_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* one entry per line, surrounding whitespace stripped, empty lines dropped, sorted, deduplicated
 * (RULER builds sorted(set(adj-noun)); with deduplicated parts every combination is distinct) */
static int load_list(const char *path, const char *what, char ***out, int *n_out) {
    char *txt;
    size_t len;
    int st = read_file(path, what, &txt, &len);
    if (st) return st;
    int cap = 1024, n = 0;
    char **v = malloc(sizeof(char *) * cap);
    for (char *line = strtok(txt, "\n"); line && v; line = strtok(NULL, "\n")) {
        while (*line && isspace((unsigned char)*line)) line++;
        size_t l = strlen(line);
        while (l && isspace((unsigned char)line[l - 1])) line[--l] = 0;
        if (!l) continue;
        if (n == cap) {
            char **nv = realloc(v, sizeof(char *) * (cap *= 2));
            if (!nv) { for (int i = 0; i < n; i++) free(v[i]); free(v); v = NULL; break; }
            v = nv;
        }
        if (!(v[n++] = dupstr(line))) { st = GDN2_ERR_NOMEM; break; }
    }
    free(txt);
    if (!v || st) return gdn2_error(GDN2_ERR_NOMEM, "out of memory reading %s '%s'", what, path);
    qsort(v, (size_t)n, sizeof(char *), cmp_str);
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m && !strcmp(v[m - 1], v[i])) { free(v[i]); continue; }
        v[m++] = v[i];
    }
    if (m == 0) { free(v); return gdn2_error(GDN2_ERR_IO, "%s file '%s' has no entries", what, path); }
    *out = v, *n_out = m;
    return GDN2_OK;
}

/* essay: whitespace collapsed and split into words; words[0] is the start of one buffer holding
 * all words NUL-separated */
static int load_essay(const char *path, char ***out, int64_t *n_out) {
    char *txt;
    size_t len;
    int st = read_file(path, "essay haystack", &txt, &len);
    if (st) return st;
    char *buf = malloc(len + 1);
    int64_t n = 0, cap = 4096;
    char **w = malloc(sizeof(char *) * (size_t)cap);
    if (!buf || !w) { free(txt); free(buf); free(w); return gdn2_error(GDN2_ERR_NOMEM, "out of memory loading '%s'", path); }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        while (i < len && isspace((unsigned char)txt[i])) i++;
        if (i >= len) break;
        if (n == cap) {
            char **nw = realloc(w, sizeof(char *) * (size_t)(cap *= 2));
            if (!nw) { free(txt); free(buf); free(w); return gdn2_error(GDN2_ERR_NOMEM, "out of memory loading '%s'", path); }
            w = nw;
        }
        w[n++] = buf + o;
        while (i < len && !isspace((unsigned char)txt[i])) buf[o++] = txt[i++];
        buf[o++] = 0;
    }
    free(txt);
    if (n == 0) { free(buf); free(w); return gdn2_error(GDN2_ERR_IO, "essay haystack '%s' has no words", path); }
    *out = w, *n_out = n;
    return GDN2_OK;
}

void gdn2_ruler_free(gdn2_ruler_res *r) {
    if (!r) return;
    for (int i = 0; i < r->n_adjs; i++) free(r->adjs[i]);
    for (int i = 0; i < r->n_nouns; i++) free(r->nouns[i]);
    free(r->adjs);
    free(r->nouns);
    if (r->words) free(r->words[0]);
    free(r->words);
    memset(r, 0, sizeof *r);
}

int gdn2_ruler_load(gdn2_ruler_res *r, const char *adj_path, const char *noun_path, const char *essay_path) {
    memset(r, 0, sizeof *r);
    if (!adj_path || !noun_path) return gdn2_error(GDN2_ERR_ARG, "ruler: adjective and noun list paths are required");
    int st = load_list(adj_path, "adjective list", &r->adjs, &r->n_adjs);
    if (!st) st = load_list(noun_path, "noun list", &r->nouns, &r->n_nouns);
    if (!st && essay_path) st = load_essay(essay_path, &r->words, &r->n_words);
    if (st) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", gdn2_last_error());
        gdn2_ruler_free(r);
        return gdn2_error(st, "%s", msg);
    }
    return GDN2_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* keys and values                                                                           */
/* ---------------------------------------------------------------------------------------- */
#define ITEM_CAP 160

/* One key or value of the given type, from this split's half of the space: an item belongs to the
 * split its hash says, so train and test never share a key or a value. */
#define DRAW_TRIES 100000
static int draw_item(const gdn2_ruler_res *r, gdn2_rng *g, int type, int split, char *out) {
    for (int tries = 0; tries < DRAW_TRIES; tries++) {
        if (type == TY_WORDS) {
            /* "adjective-noun", uniform over the deduplicated lists */
            const char *a = r->adjs[gdn2_rng_below(g, (uint64_t)r->n_adjs)];
            const char *n = r->nouns[gdn2_rng_below(g, (uint64_t)r->n_nouns)];
            snprintf(out, ITEM_CAP, "%.70s-%.70s", a, n);
        } else if (type == TY_NUMBERS) {
            /* uniform in [1000000, 9999999] */
            snprintf(out, ITEM_CAP, "%d", 1000000 + (int)gdn2_rng_below(g, 9000000));
        } else {
            /* version-4 UUID: 128 random bits, version nibble 4, variant bits 10 */
            unsigned char u[16];
            for (int i = 0; i < 16; i++) u[i] = (unsigned char)gdn2_rng_below(g, 256);
            u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
            u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
            snprintf(out, ITEM_CAP, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                     u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
        }
        if (gdn2_content_split(out, strlen(out)) == split) return GDN2_OK;
    }
    return gdn2_error(GDN2_ERR_ARG, "niah: the %s space is too small to split into train and test halves",
                      type == TY_WORDS ? "word-key (adjective-noun)" : type == TY_NUMBERS ? "number" : "uuid");
}

/* a draw that must differ from the first n entries of `avoid` (distinct keys / values) */
static int draw_distinct(const gdn2_ruler_res *r, gdn2_rng *g, int type, int split, char (*avoid)[ITEM_CAP], int n,
                         char *out) {
    for (int tries = 0; tries < 1000; tries++) {
        int st = draw_item(r, g, type, split, out);
        if (st) return st;
        int dup = 0;
        for (int i = 0; i < n; i++) dup |= !strcmp(avoid[i], out);
        if (!dup) return GDN2_OK;
    }
    return gdn2_error(GDN2_ERR_ARG, "niah: not enough distinct %s in this split's half of the word lists",
                      type == TY_WORDS ? "word keys" : "values");
}

/* ---------------------------------------------------------------------------------------- */
/* the generator                                                                             */
/* ---------------------------------------------------------------------------------------- */
/* bytes of haystack unit u (a noise sentence, a distractor needle, or an essay sentence) */
static int64_t unit_bytes(int hay, const gdn2_ruler_res *r, char (*dis)[2 * ITEM_CAP + 64], const int64_t *sent_start,
                          int64_t u) {
    if (hay == HAY_NOISE) return (int64_t)strlen(NOISE);
    if (hay == HAY_NEEDLE) return (int64_t)strlen(dis[u]);
    int64_t n = 0;
    for (int64_t w = sent_start[u]; w < sent_start[u + 1]; w++) n += (int64_t)strlen(r->words[w % r->n_words]) + 1;
    return n - 1;
}

typedef struct { int pos; int needle; } slot; /* needle `needle` goes before haystack unit `pos` */
static int cmp_slot(const void *a, const void *b) {
    const slot *x = a, *y = b;
    return x->pos != y->pos ? (x->pos < y->pos ? -1 : 1) : (x->needle < y->needle ? -1 : x->needle > y->needle);
}

void gdn2_niah_sample_free(gdn2_niah_sample *s) {
    if (!s) return;
    free(s->prompt);
    memset(s, 0, sizeof *s);
}

int gdn2_niah_generate(const gdn2_ruler_res *r, const gdn2_niah_cfg *c, uint64_t seed, int split,
                       gdn2_niah_sample *s) {
    if (!r || !c || !s) return gdn2_error(GDN2_ERR_ARG, "niah: NULL argument");
    memset(s, 0, sizeof *s);
    if (c->task < 0 || c->task >= GDN2_NIAH_COUNT) return gdn2_error(GDN2_ERR_ARG, "niah: unknown task id %d", c->task);
    const niah_spec *sp = &SPECS[c->task];
    if (split != 0 && split != 1) return gdn2_error(GDN2_ERR_ARG, "niah: split %d must be 0 or 1", split);
    if (!r->n_adjs || !r->n_nouns) return gdn2_error(GDN2_ERR_ARG, "%s: word lists not loaded", sp->paper);
    if (sp->hay == HAY_ESSAY && !r->n_words)
        return gdn2_error(GDN2_ERR_ARG, "%s needs an essay haystack (RULER uses Paul Graham's essays): pass --haystack FILE",
                          sp->paper);
    if (c->use_depth && !(c->depth >= 0 && c->depth <= 100))
        return gdn2_error(GDN2_ERR_ARG, "%s: depth %g must be in [0, 100]", sp->paper, c->depth);
    const int max_new = c->max_new > 0 ? c->max_new : gdn2_niah_default_max_new(c->task);
    gdn2_rng g = gdn2_rng_for(NIAH_TAG + (uint64_t)c->task, seed, split);

    /* 1. k distinct keys; v distinct values per key; one needle per (key, value) */
    char keys[4][ITEM_CAP], vals[4][ITEM_CAP];
    int nk = sp->k, nn = sp->k * sp->v;
    for (int i = 0; i < nk; i++) {
        int st = draw_distinct(r, &g, sp->key_type, split, keys, i, keys[i]);
        if (st) return st;
    }
    for (int i = 0; i < nn; i++) {
        int st = draw_distinct(r, &g, sp->val_type, split, vals, i, vals[i]);
        if (st) return st;
    }
    char needles[4][2 * ITEM_CAP + 64];
    int order[4];
    for (int i = 0; i < nn; i++) {
        gdn2_niah_needle(c->task, keys[i / sp->v], vals[i], needles[i], sizeof needles[i]);
        order[i] = i;
    }
    /* the needle list is shuffled before placement */
    for (int i = nn - 1; i > 0; i--) {
        int j = (int)gdn2_rng_below(&g, (uint64_t)i + 1), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    /* 2. q of the k keys are queried (without replacement); the references are all values of the
     * queried keys, in query order */
    int qk[4], perm[4] = {0, 1, 2, 3};
    for (int i = 0; i < sp->q; i++) {
        int j = i + (int)gdn2_rng_below(&g, (uint64_t)(nk - i)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
        qk[i] = perm[i];
    }
    int ans_needle[GDN2_NIAH_MAX_ANS];
    for (int i = 0; i < sp->q; i++)
        for (int j = 0; j < sp->v; j++) {
            int a = s->n_answers++;
            snprintf(s->answers[a], sizeof s->answers[a], "%s", vals[qk[i] * sp->v + j]);
            ans_needle[a] = qk[i] * sp->v + j;
        }
    /* query string: "k1" or "k1, k2, k3, and k4" */
    sbuf qs = {0};
    for (int i = 0; i < sp->q; i++) {
        if (i) sb_str(&qs, i == sp->q - 1 ? ", and " : ", ");
        sb_str(&qs, keys[qk[i]]);
    }
    char *pre = NULL, *post = NULL;
    int st = qs.oom ? gdn2_error(GDN2_ERR_NOMEM, "niah: out of memory") : frame_strings(c->task, qs.p, &pre, &post);
    free(qs.p);
    if (st) return st;

    /* 3. fit to length: prompt = pre + context + post, prompt + max_new <= length. Context bytes
     * for N haystack units (items joined by "\n" for noise/needle, words+needles by " " for essay):
     *   sum(unit bytes) + sum(needle bytes) + (N + nn - 1) separators. */
    const int64_t fixed = (int64_t)strlen(pre) + (int64_t)strlen(post) + max_new;
    int64_t needle_bytes = 0;
    for (int i = 0; i < nn; i++) needle_bytes += (int64_t)strlen(needles[i]) + 1;
    int64_t room = (int64_t)c->length - fixed - needle_bytes + 1; /* bytes for units + their separators */
    const int64_t need_min = fixed + needle_bytes + 16;
    sbuf ctx = {0};
    int64_t N = 0;
    char (*dis)[2 * ITEM_CAP + 64] = NULL; /* needle haystack: distractor sentences */
    if (sp->hay == HAY_NOISE) {
        N = room / (int64_t)(sizeof NOISE); /* each unit: the sentence + one separator */
    } else if (sp->hay == HAY_ESSAY) {
        /* the first N words of the corpus (cycled if shorter) */
        int64_t used = 0;
        while (used + (int64_t)strlen(r->words[N % r->n_words]) + 1 <= room) used += (int64_t)strlen(r->words[N++ % r->n_words]) + 1;
    } else {
        /* distractor needles with fresh random keys (never a real key) and values, while they fit */
        int64_t used = 0, cap = 0;
        for (;;) {
            char k[ITEM_CAP], v[ITEM_CAP], sent[2 * ITEM_CAP + 64];
            if ((st = draw_distinct(r, &g, sp->key_type, split, keys, nk, k)) ||
                (st = draw_item(r, &g, sp->val_type, split, v))) {
                free(dis); free(pre); free(post);
                return st;
            }
            gdn2_niah_needle(c->task, k, v, sent, sizeof sent);
            int64_t l = (int64_t)strlen(sent) + 1;
            if (used + l > room) break;
            if (N == cap) {
                void *p = realloc(dis, sizeof *dis * (size_t)(cap = cap ? 2 * cap : 64));
                if (!p) { free(dis); free(pre); free(post); return gdn2_error(GDN2_ERR_NOMEM, "niah: out of memory"); }
                dis = p;
            }
            memcpy(dis[N++], sent, (size_t)l);
            used += l;
        }
    }
    if (N < 1) {
        free(dis); free(pre); free(post);
        return gdn2_error(GDN2_ERR_ARG,
                          "%s: length %d is shorter than the prompt frame, %d needle(s) and the %d-token answer budget "
                          "(needs at least ~%lld tokens)",
                          sp->paper, c->length, nn, max_new, (long long)need_min);
    }

    /* 4. placement. noise/needle: nn distinct unit indices uniform in [0, N) (a needle goes before
     * that unit). essay: the units are sentences; nn distinct depths from the 40-value grid,
     * sentence index floor(n_sent * depth / 100). With use_depth, the needle of answer 0 goes to
     * the requested depth and the others are drawn as above. */
    int64_t n_units = N, *sent_start = NULL; /* essay: first word of each sentence */
    if (sp->hay == HAY_ESSAY) {
        sent_start = malloc(sizeof(int64_t) * (size_t)(N + 1));
        if (!sent_start) { free(pre); free(post); return gdn2_error(GDN2_ERR_NOMEM, "niah: out of memory"); }
        n_units = 0;
        sent_start[n_units++] = 0;
        /* sentence split (a stand-in for NLTK punkt): a sentence ends after a word ending in . ! or ?
         * (possibly followed by closing quotes or brackets) */
        for (int64_t i = 0; i + 1 < N; i++) {
            const char *w = r->words[i % r->n_words];
            size_t l = strlen(w);
            while (l && strchr("\"')]", w[l - 1])) l--;
            if (l && strchr(".!?", w[l - 1])) sent_start[n_units++] = i + 1;
        }
        sent_start[n_units] = N;
    }
    slot sl[4];
    int fixed_needle = c->use_depth ? ans_needle[0] : -1, fixed_pos = -1;
    if (fixed_needle >= 0) {
        /* requested depth (our extension, for the depth x length heatmap): the unit boundary whose
         * byte offset is nearest to depth% of the haystack bytes, i.e. depth measured in tokens as
         * in the classic NIAH picture, snapped to a sentence (unit) boundary. RULER's own draw
         * (below) counts sentences instead. */
        int64_t total = 0, cum = 0;
        for (int64_t u = 0; u < n_units; u++) total += unit_bytes(sp->hay, r, dis, sent_start, u) + 1;
        double want = c->depth / 100.0 * (double)total, best = 1e300;
        for (int64_t u = 0; u <= n_units; u++) {
            double e = (double)cum - want;
            if (e < 0) e = -e;
            if (e < best) best = e, fixed_pos = (int)u;
            if (u < n_units) cum += unit_bytes(sp->hay, r, dis, sent_start, u) + 1;
        }
    }
    int used_depth[40] = {0};
    for (int i = 0; i < nn; i++) {
        int nd = order[i];
        sl[i].needle = nd;
        if (nd == fixed_needle) {
            sl[i].pos = fixed_pos;
            continue;
        }
        for (;;) {
            int pos;
            if (sp->hay == HAY_ESSAY) {
                int d = (int)gdn2_rng_below(&g, 40);
                if (used_depth[d]) continue;
                used_depth[d] = 1;
                pos = (int)((double)n_units * DEPTHS[d] / 100.0);
            } else {
                pos = (int)gdn2_rng_below(&g, (uint64_t)n_units);
                int dup = 0;
                for (int j = 0; j < i; j++) dup |= sl[j].pos == pos;
                if (fixed_pos == pos) dup = 1;
                if (dup && n_units > nn) continue;
            }
            sl[i].pos = pos;
            break;
        }
    }
    qsort(sl, (size_t)nn, sizeof sl[0], cmp_slot);

    /* 5. assemble: items in order, joined by "\n" (noise/needle) or " " (essay) */
    const char *sep = sp->hay == HAY_ESSAY ? " " : "\n";
    int off[4] = {0}, k = 0, first = 1;
    size_t base = strlen(pre);
    for (int64_t u = 0; u <= n_units; u++) {
        while (k < nn && sl[k].pos == u) {
            if (!first) sb_str(&ctx, sep);
            off[sl[k].needle] = (int)(base + ctx.n);
            sb_str(&ctx, needles[sl[k].needle]);
            first = 0, k++;
        }
        if (u == n_units) break;
        if (!first) sb_str(&ctx, sep);
        first = 0;
        if (sp->hay == HAY_NOISE) sb_str(&ctx, NOISE);
        else if (sp->hay == HAY_NEEDLE) sb_str(&ctx, dis[u]);
        else
            for (int64_t w = sent_start[u]; w < sent_start[u + 1]; w++) {
                if (w > sent_start[u]) sb_str(&ctx, " ");
                sb_str(&ctx, r->words[w % r->n_words]);
            }
    }
    free(dis);
    free(sent_start);
    sbuf pr = {0};
    sb_str(&pr, pre);
    sb_put(&pr, ctx.p ? ctx.p : "", ctx.n);
    sb_str(&pr, post);
    free(ctx.p);
    free(pre);
    free(post);
    if (pr.oom || ctx.oom) { free(pr.p); return gdn2_error(GDN2_ERR_NOMEM, "niah: out of memory"); }
    s->prompt = pr.p;
    s->prompt_len = (int)pr.n;
    s->max_new = max_new;
    s->n_needles = nn;
    s->context_off = (int)base;
    s->context_len = (int)ctx.n;
    for (int a = 0; a < s->n_answers; a++) s->needle_off[a] = off[ans_needle[a]];
    s->depth = ctx.n ? 100.0 * (s->needle_off[0] - s->context_off) / (double)ctx.n : 0;
    if (s->prompt_len + max_new > c->length) /* cannot happen: the fit above is exact */
        return gdn2_error(GDN2_ERR_ARG, "%s: internal length error (%d + %d > %d)", sp->paper, s->prompt_len, max_new,
                          c->length);
    return GDN2_OK;
}
