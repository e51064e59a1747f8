/* Task generators and scorers (src/data): MQAR / forgetting-MQAR structure, RULER NIAH strings,
 * placement and lengths, state-tracking answers recomputed independently, determinism, train/test
 * disjointness, scorer edge cases, SVG heatmap well-formedness. Recipes: Zoology (multiquery_ar.py),
 * RULER (niah.py), Grazzi et al. 2025; docs/TASKS.md. The essay haystack is a text generated here
 * (tests/gentext.h); the word lists are RULER's, in data/. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gdn2.h"
#include "gentext.h"
#include "gdn2_data.h"

/* ---- small helpers ---------------------------------------------------------------------- */
static uint64_t fnv(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}
static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
/* number of values of a (sorted) that also occur in b (sorted) */
static int overlap(const uint64_t *a, int na, const uint64_t *b, int nb) {
    int i = 0, j = 0, n = 0;
    while (i < na && j < nb) {
        if (a[i] == b[j]) n++, i++, j++;
        else if (a[i] < b[j]) i++;
        else j++;
    }
    return n;
}
static int count_sub(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub)) n++;
    return n;
}
static int is_uuid4(const char *s) {
    if (strlen(s) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) { if (s[i] != '-') return 0; }
        else if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return 0;
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}
static int is_7digit(const char *s) {
    if (strlen(s) != 7) return 0;
    for (int i = 0; i < 7; i++) if (!isdigit((unsigned char)s[i])) return 0;
    return s[0] != '0';
}

/* ---- MQAR --------------------------------------------------------------------------------- */
static void test_mqar(void) {
    enum { T = 64 };
    gdn2_mqar_cfg c = {256, T, 4, 0, 0, 0, 0};
    int32_t tok[T], tgt[T], tok2[T], tgt2[T];
    int ok = 1, st = 0, structure_ok = 1;
    /* demo config: structure of 500 test samples */
    for (int s = 0; s < 500 && structure_ok; s++) {
        st |= gdn2_mqar_sample(&c, (uint64_t)s, 1, tok, tgt);
        int keys[4], vals[4];
        for (int j = 0; j < 4; j++) {
            keys[j] = tok[2 * j], vals[j] = tok[2 * j + 1];
            if (keys[j] < 1 || keys[j] >= 128 || vals[j] < 128 || vals[j] >= 256) structure_ok = 0;
            for (int i = 0; i < j; i++) if (keys[i] == keys[j] || vals[i] == vals[j]) structure_ok = 0;
        }
        int seen[4] = {0}, n_t = 0;
        for (int t = 0; t < T; t++) {
            if (t < 8 && tgt[t] != GDN2_IGNORE) structure_ok = 0;
            if (tgt[t] == GDN2_IGNORE) continue;
            n_t++;
            if ((t - 8) % 2) structure_ok = 0; /* queries at even offsets of the query region */
            int j = -1;
            for (int i = 0; i < 4; i++) if (keys[i] == tok[t]) j = i;
            if (j < 0 || tgt[t] != vals[j] || seen[j]++) structure_ok = 0;
        }
        if (n_t != 4) structure_ok = 0;
    }
    CHECK(!st && structure_ok, "mqar V=256 T=64 n=4: keys in [1,128), values in [128,256), distinct; each key queried once at an even offset after the context; target = its value (500 samples)");

    /* determinism and seed sensitivity */
    gdn2_mqar_sample(&c, 7, 0, tok, tgt);
    gdn2_mqar_sample(&c, 7, 0, tok2, tgt2);
    ok = !memcmp(tok, tok2, sizeof tok) && !memcmp(tgt, tgt2, sizeof tgt);
    gdn2_mqar_sample(&c, 8, 0, tok2, tgt2);
    CHECK(ok && memcmp(tok, tok2, sizeof tok), "mqar deterministic in (cfg, seed, split); seed 7 != seed 8");
    gdn2_mqar_sample(&c, 7, 1, tok2, tgt2);
    CHECK(memcmp(tok, tok2, sizeof tok) != 0, "mqar: split 0 and split 1 with the same seed differ");

    /* power law: small gaps dominate (a = 0.01: P(g) ~ 1/(g+1) over 28 slots) */
    int first_slot = 0, last_slot = 0;
    for (int s = 0; s < 2000; s++) {
        gdn2_mqar_sample(&c, (uint64_t)s, 0, tok, tgt);
        first_slot += tgt[8] != GDN2_IGNORE;
        last_slot += tgt[62] != GDN2_IGNORE;
    }
    CHECK(first_slot > 1000 && last_slot < 300 && first_slot > 4 * last_slot,
          "mqar power-law gaps: first query slot used in %d/2000 samples, last slot in %d/2000", first_slot, last_slot);

    /* random fillers vs none */
    gdn2_mqar_cfg c0 = c;
    c0.no_fill = 1;
    gdn2_mqar_sample(&c0, 3, 0, tok, tgt);
    int zeros = 0;
    for (int t = 8; t < T; t++) zeros += tok[t] == 0;
    CHECK(zeros == T - 8 - 4, "mqar no_fill: %d blanks in the query region (expected %d)", zeros, T - 8 - 4);

    /* train/test disjointness where the sample space is small enough for collisions to be certain
     * without the partition: V=8 (keys 1..3, values 4..7), T=8, n=1, no fillers -> 3*4*3 = 36 samples */
    gdn2_mqar_cfg cs = {8, 8, 1, 0, 0, 0, 1};
    uint64_t htr[400], hte[400];
    int32_t a[8], b[8];
    st = 0;
    for (int s = 0; s < 400; s++) {
        st |= gdn2_mqar_sample(&cs, (uint64_t)s, 0, a, b);
        int32_t buf[16];
        memcpy(buf, a, sizeof a), memcpy(buf + 8, b, sizeof b);
        htr[s] = fnv(buf, sizeof buf);
        st |= gdn2_mqar_sample(&cs, (uint64_t)s, 1, a, b);
        memcpy(buf, a, sizeof a), memcpy(buf + 8, b, sizeof b);
        hte[s] = fnv(buf, sizeof buf);
    }
    qsort(htr, 400, 8, cmp_u64), qsort(hte, 400, 8, cmp_u64);
    int distinct_tr = 0;
    for (int i = 0; i < 400; i++) distinct_tr += !i || htr[i] != htr[i - 1];
    CHECK(!st && overlap(htr, 400, hte, 400) == 0 && distinct_tr >= 8,
          "mqar train/test disjoint on a 36-sample space (400 draws each, %d distinct train samples, 0 shared)", distinct_tr);

    /* disjointness on the demo config too */
    enum { NS = 3000 };
    uint64_t *h0 = malloc(8 * NS), *h1 = malloc(8 * NS);
    for (int s = 0; s < NS; s++) {
        gdn2_mqar_sample(&c, (uint64_t)s, 0, tok, tgt), h0[s] = fnv(tok, sizeof tok) ^ fnv(tgt, sizeof tgt);
        gdn2_mqar_sample(&c, (uint64_t)s, 1, tok, tgt), h1[s] = fnv(tok, sizeof tok) ^ fnv(tgt, sizeof tgt);
    }
    qsort(h0, NS, 8, cmp_u64), qsort(h1, NS, 8, cmp_u64);
    CHECK(overlap(h0, NS, h1, NS) == 0, "mqar demo config: %d train vs %d test samples share none", NS, NS);
    free(h0), free(h1);

    /* forgetting-MQAR: 4 pairs then 2 updates; the query wants the latest value */
    gdn2_mqar_cfg cf = {256, T, 4, 1, 0, 0, 0};
    structure_ok = 1;
    st = 0;
    for (int s = 0; s < 300; s++) {
        st |= gdn2_mqar_sample(&cf, (uint64_t)s, s & 1, tok, tgt);
        int latest[128];
        for (int k = 0; k < 128; k++) latest[k] = -1;
        for (int j = 0; j < 6; j++) latest[tok[2 * j]] = tok[2 * j + 1];
        int distinct_keys = 0, updated = 0;
        for (int k = 0; k < 128; k++) distinct_keys += latest[k] >= 0;
        for (int j = 4; j < 6; j++) {
            int orig = -1;
            for (int i = 0; i < 4; i++) if (tok[2 * i] == tok[2 * j]) orig = tok[2 * i + 1];
            if (orig < 0 || orig == tok[2 * j + 1]) structure_ok = 0; /* an update re-uses a key, new value */
            updated++;
        }
        int n_t = 0;
        for (int t = 12; t < T; t++)
            if (tgt[t] != GDN2_IGNORE) n_t++, structure_ok &= tok[t] < 128 && latest[tok[t]] == tgt[t];
        if (distinct_keys != 4 || n_t != 4 || updated != 2) structure_ok = 0;
    }
    CHECK(!st && structure_ok, "forgetting-mqar: 2 of 4 keys re-assigned a new value after the context; each query's target is the latest value (300 samples)");

    /* bad configs */
    gdn2_mqar_cfg bad = {256, 10, 4, 0, 0, 0, 0};
    st = gdn2_mqar_sample(&bad, 0, 0, tok, tgt);
    CHECK(st == GDN2_ERR_ARG && strstr(gdn2_last_error(), "too short"), "mqar T=10 n=4 rejected: %s", gdn2_last_error());
    bad.seq_len = 63;
    CHECK(gdn2_mqar_sample(&bad, 0, 0, tok, tgt) == GDN2_ERR_ARG, "mqar odd seq_len rejected: %s", gdn2_last_error());
    bad = c, bad.n_pairs = 200;
    CHECK(gdn2_mqar_sample(&bad, 0, 0, tok, tgt) == GDN2_ERR_ARG, "mqar n_pairs > V/2-1 rejected: %s", gdn2_last_error());
    CHECK(gdn2_mqar_sample(&c, 0, 2, tok, tgt) == GDN2_ERR_ARG, "mqar split 2 rejected");
}

/* ---- state tracking ----------------------------------------------------------------------- */
/* independent modarith evaluator: fold products into a term list, then add/subtract */
static int modarith_ref(const int32_t *tok, int e) {
    int terms[300], signs[300], nt = 0;
    terms[0] = tok[0] - 5, signs[0] = 1, nt = 1;
    for (int t = 1; t < e; t += 2) {
        int d = tok[t + 1] - 5;
        if (tok[t] == 3) terms[nt - 1] *= d;
        else terms[nt] = d, signs[nt] = tok[t] == 1 ? 1 : -1, nt++;
    }
    long v = 0;
    for (int i = 0; i < nt; i++) v += signs[i] * (long)terms[i];
    return (int)(((v % 5) + 5) % 5);
}

static void test_state(void) {
    enum { T = 256 };
    int32_t tok[T], tgt[T];
    for (int kind = 0; kind < 2; kind++) {
        const char *nm = kind ? "modarith" : "parity";
        gdn2_state_cfg c = {kind, 0, 0, 0};
        int ok = 1, st = 0, minL[2] = {1 << 30, 1 << 30}, maxL[2] = {0, 0};
        for (int split = 0; split < 2; split++)
            for (int s = 0; s < 400; s++) {
                int L;
                st |= gdn2_state_sample(&c, (uint64_t)s, split, tok, tgt, &L);
                if (L < minL[split]) minL[split] = L;
                if (L > maxL[split]) maxL[split] = L;
                int ans;
                if (kind == 0) {
                    int twos = 0;
                    for (int t = 0; t < L - 1; t++) ok &= tok[t] == 1 || tok[t] == 2, twos += tok[t] == 2;
                    ans = 1 + twos % 2;
                } else {
                    ok &= L % 2 == 1 && tok[L - 2] == 4;
                    for (int t = 0; t < L - 2; t++) ok &= t % 2 ? (tok[t] >= 1 && tok[t] <= 3) : (tok[t] >= 5 && tok[t] <= 9);
                    ans = 5 + modarith_ref(tok, L - 2);
                }
                ok &= tok[L - 1] == ans && tgt[L - 2] == ans;
                for (int t = 0; t < T; t++) {
                    if (t != L - 2) ok &= tgt[t] == GDN2_IGNORE;
                    if (t >= L) ok &= tok[t] == 0;
                }
            }
        CHECK(!st && ok, "%s: answer recomputed independently, single target at L-2, zero padding (800 samples)", nm);
        CHECK(minL[0] >= 3 && maxL[0] <= 40 && minL[1] >= 40 && maxL[1] <= 256 && maxL[1] > 200 && minL[0] < 8,
              "%s lengths: train [%d,%d] within [3,40], test [%d,%d] within [40,256]", nm, minL[0], maxL[0], minL[1], maxL[1]);
        /* determinism */
        int32_t t2[T], g2[T];
        gdn2_state_sample(&c, 11, 1, tok, tgt, NULL);
        gdn2_state_sample(&c, 11, 1, t2, g2, NULL);
        CHECK(!memcmp(tok, t2, sizeof tok) && !memcmp(tgt, g2, sizeof tgt), "%s deterministic by seed", nm);
        /* disjointness where the ranges meet (length 41 for both splits) */
        gdn2_state_cfg c41 = {kind, 0, 41, 41};
        enum { NS = 1500 };
        uint64_t *h0 = malloc(8 * NS), *h1 = malloc(8 * NS);
        for (int s = 0; s < NS; s++) {
            gdn2_state_sample(&c41, (uint64_t)s, 0, tok, tgt, NULL), h0[s] = fnv(tok, 41 * 4);
            gdn2_state_sample(&c41, (uint64_t)s, 1, tok, tgt, NULL), h1[s] = fnv(tok, 41 * 4);
        }
        qsort(h0, NS, 8, cmp_u64), qsort(h1, NS, 8, cmp_u64);
        CHECK(overlap(h0, NS, h1, NS) == 0, "%s: train and test samples of the same length 41 never coincide", nm);
        free(h0), free(h1);
    }
    gdn2_state_cfg bad = {0, 0, 50, 300};
    CHECK(gdn2_state_sample(&bad, 0, 0, tok, tgt, NULL) == GDN2_ERR_ARG, "state: max_len > seq_len rejected: %s",
          gdn2_last_error());
    bad.kind = 7;
    CHECK(gdn2_state_sample(&bad, 0, 0, tok, tgt, NULL) == GDN2_ERR_ARG, "state: unknown kind rejected");
}

/* ---- RULER -------------------------------------------------------------------------------- */
static void test_ruler_strings(void) {
    char pre[512], post[512], nd[256];
    /* RULER's rendered S-NIAH-2 prompt (niah.py's singular rewrite) */
    gdn2_niah_frame(GDN2_NIAH_SINGLE_2, "<KEY>", pre, sizeof pre, post, sizeof post);
    CHECK(!strcmp(pre, "A special magic number is hidden within the following text. Make sure to memorize it. I will "
                       "quiz you about the number afterwards.\n"),
          "S-NIAH-2 template head, singular (RULER's rendered prompt)");
    CHECK(!strcmp(post, "\nWhat is the special magic number for <KEY> mentioned in the provided text? The special magic "
                        "number for <KEY> mentioned in the provided text is"),
          "S-NIAH-2 question + answer prefix, singular (RULER)");
    gdn2_niah_frame(GDN2_NIAH_SINGLE_3, "k", pre, sizeof pre, post, sizeof post);
    CHECK(!strcmp(pre, "A special magic uuid is hidden within the following text. Make sure to memorize it. I will quiz "
                       "you about the uuid afterwards.\n") &&
              !strcmp(post, "\nWhat is the special magic uuid for k mentioned in the provided text? The special magic uuid "
                            "for k mentioned in the provided text is"),
          "S-NIAH-3 frame uses 'uuid' (singular)");
    /* plural (MV-NIAH: 1 query x 4 values): the template as RULER writes it */
    gdn2_niah_frame(GDN2_NIAH_MULTIVALUE, "k", pre, sizeof pre, post, sizeof post);
    CHECK(!strcmp(pre, "Some special magic numbers are hidden within the following text. Make sure to memorize it. I "
                       "will quiz you about the numbers afterwards.\n") &&
              !strcmp(post, "\nWhat are all the special magic numbers for k mentioned in the provided text? The special "
                            "magic numbers for k mentioned in the provided text are"),
          "MV-NIAH frame plural (the template as RULER writes it)");
    gdn2_niah_needle(GDN2_NIAH_SINGLE_2, "obedient-investment", "1234567", nd, sizeof nd);
    CHECK(!strcmp(nd, "One of the special magic numbers for obedient-investment is: 1234567."), "needle (plural kept): '%s'", nd);
    gdn2_niah_needle(GDN2_NIAH_MULTIKEY_3, "a", "b", nd, sizeof nd);
    CHECK(!strcmp(nd, "One of the special magic uuids for a is: b."), "uuid needle: '%s'", nd);
    CHECK(!strcmp(gdn2_niah_name(GDN2_NIAH_MULTIKEY_1), "niah_multikey_1") &&
              !strcmp(gdn2_niah_paper_name(GDN2_NIAH_MULTIKEY_1), "MK-NIAH-1"),
          "names: niah_multikey_1 / MK-NIAH-1");
    CHECK(gdn2_task_find("s-niah-3") && gdn2_task_find("s-niah-3")->id == GDN2_NIAH_SINGLE_3 && gdn2_task_find("FMQAR") &&
              !gdn2_task_find("niah_single_9"),
          "task registry: names case-insensitive, unknown -> NULL");
}

#define ESSAY_WORDS 30000L
static void test_ruler(void) {
    char adj[512], noun[512], hay[] = "/tmp/gdn2_test_essayXXXXXX";
    snprintf(adj, sizeof adj, "%s/ruler_adjectivelist.txt", data_dir());
    snprintf(noun, sizeof noun, "%s/ruler_nounlist.txt", data_dir());
    int fd = mkstemp(hay);
    if (fd < 0) {
        CHECK(0, "RULER generator tests: cannot create a temp file for the essay haystack");
        return;
    }
    close(fd);
    if (test_write_text(hay, ESSAY_WORDS, 11)) {
        CHECK(0, "RULER generator tests: cannot write the essay haystack %s", hay);
        unlink(hay);
        return;
    }
    gdn2_ruler_res r;
    int st = gdn2_ruler_load(&r, adj, noun, hay);
    unlink(hay);
    CHECK(!st && r.n_adjs > 900 && r.n_nouns > 6700 && r.n_words == ESSAY_WORDS,
          "ruler resources from %s: %d adjectives, %d nouns, %lld essay words (%ld written)%s%s", data_dir(), r.n_adjs,
          r.n_nouns, st ? -1LL : (long long)r.n_words, ESSAY_WORDS, st ? ": " : "", st ? gdn2_last_error() : "");
    if (st) return;

    /* every task at three lengths: frame, needles, answers, length fit, offsets */
    const int lens[3] = {1024, 2048, 4096};
    for (int task = 0; task < GDN2_NIAH_COUNT; task++) {
        int ok = 1, fit = 1, minslack = 1 << 30, maxslack = 0;
        for (int li = 0; li < 3; li++)
            for (int s = 0; s < 6; s++) {
                gdn2_niah_cfg c = {task, lens[li], 0, 0, 0};
                gdn2_niah_sample smp;
                if (gdn2_niah_generate(&r, &c, (uint64_t)s, s & 1, &smp)) { ok = 0; continue; }
                int slack = lens[li] - smp.prompt_len - smp.max_new;
                if (slack < minslack) minslack = slack;
                if (slack > maxslack) maxslack = slack;
                /* tolerance: one haystack unit (noise sentence 89+1, an essay word, a distractor needle) */
                fit &= slack >= 0 && slack <= 130 && smp.prompt_len == (int)strlen(smp.prompt);
                int uuid = task == GDN2_NIAH_SINGLE_3 || task == GDN2_NIAH_MULTIKEY_3;
                int want_ans = (task == GDN2_NIAH_MULTIVALUE || task == GDN2_NIAH_MULTIQUERY) ? 4 : 1;
                int want_needles = (task == GDN2_NIAH_MULTIKEY_1 || task == GDN2_NIAH_MULTIVALUE || task == GDN2_NIAH_MULTIQUERY) ? 4 : 1;
                ok &= smp.n_answers == want_ans && smp.n_needles == want_needles;
                const char *tv = uuid ? "uuids" : "numbers";
                char head[64];
                snprintf(head, sizeof head, "One of the special magic %s for ", tv);
                for (int a = 0; a < smp.n_answers; a++) {
                    ok &= uuid ? is_uuid4(smp.answers[a]) : is_7digit(smp.answers[a]);
                    /* needle_off points at the needle sentence that carries this answer */
                    const char *p = smp.prompt + smp.needle_off[a];
                    const char *e = strchr(p, '.');
                    ok &= !strncmp(p, head, strlen(head)) && e && e - p > 10 &&
                          !strncmp(e - strlen(smp.answers[a]), smp.answers[a], strlen(smp.answers[a])) &&
                          smp.needle_off[a] >= smp.context_off && smp.needle_off[a] < smp.context_off + smp.context_len;
                }
                /* the frame around the context */
                ok &= smp.prompt[smp.context_off - 1] == '\n' && smp.prompt[smp.context_off + smp.context_len] == '\n';
                ok &= strstr(smp.prompt, "mentioned in the provided text? The special magic ") != NULL;
                const char *tail = (want_ans > 1) ? "mentioned in the provided text are" : "mentioned in the provided text is";
                ok &= !strcmp(smp.prompt + smp.prompt_len - strlen(tail), tail);
                if (task == GDN2_NIAH_MULTIKEY_2 || task == GDN2_NIAH_MULTIKEY_3) /* haystack made of needles */
                    ok &= count_sub(smp.prompt, head) > 3;
                else
                    ok &= count_sub(smp.prompt, head) == want_needles;
                if (task == GDN2_NIAH_MULTIQUERY) ok &= count_sub(smp.prompt, ", and ") >= 2; /* k1, k2, k3, and k4 */
                gdn2_niah_sample_free(&smp);
            }
        CHECK(ok, "%s (%s): strings, needles, answers (%s), offsets at 1K/2K/4K", gdn2_niah_paper_name(task),
              gdn2_niah_name(task), task == GDN2_NIAH_SINGLE_3 || task == GDN2_NIAH_MULTIKEY_3 ? "v4 UUIDs" : "7-digit");
        CHECK(fit, "%s: prompt + answer budget within [length-130, length] (slack %d..%d tokens)", gdn2_niah_paper_name(task),
              minslack, maxslack);
    }

    /* MK-NIAH-1: the 3 distractor needles have other keys; the question names the answer's key */
    {
        gdn2_niah_cfg c = {GDN2_NIAH_MULTIKEY_1, 2048, 0, 0, 0};
        gdn2_niah_sample smp;
        gdn2_niah_generate(&r, &c, 5, 1, &smp);
        const char *p = smp.prompt + smp.needle_off[0] + strlen("One of the special magic numbers for ");
        char key[128];
        int n = (int)(strstr(p, " is: ") - p);
        snprintf(key, sizeof key, "%.*s", n, p);
        char q[256];
        snprintf(q, sizeof q, "What is the special magic number for %s mentioned", key);
        CHECK(strstr(smp.prompt, q) && count_sub(smp.prompt, key) == 3, "MK-NIAH-1: query names the key '%s' of the answer's needle (once in the needle, twice in the question)", key);
        gdn2_niah_sample_free(&smp);
    }

    /* depth placement on the three haystack kinds */
    const int dtasks[3] = {GDN2_NIAH_SINGLE_1, GDN2_NIAH_SINGLE_2, GDN2_NIAH_MULTIKEY_2};
    const double depths[5] = {0, 25, 50, 75, 100};
    for (int i = 0; i < 3; i++) {
        double worst = 0;
        int ok = 1;
        for (int d = 0; d < 5; d++)
            for (int s = 0; s < 3; s++) {
                gdn2_niah_cfg c = {dtasks[i], 4096, 0, 1, depths[d]};
                gdn2_niah_sample smp;
                if (gdn2_niah_generate(&r, &c, (uint64_t)s, 1, &smp)) { ok = 0; continue; }
                /* depth of the needle's start as a fraction of the context; at depth 100 the needle is
                 * the last item, so its start sits one needle length before the end */
                double nd = 100.0 * (double)(strlen("One of the special magic numbers for xxxxxxxxxxxxxxx is: 1234567.") + 40) / smp.context_len;
                double want = depths[d] == 100 ? 100 - nd : depths[d];
                double err = smp.depth - want;
                if (err < 0) err = -err;
                if (depths[d] == 100) err = smp.depth >= 100 - nd ? 0 : err;
                if (err > worst) worst = err;
                gdn2_niah_sample_free(&smp);
            }
        CHECK(ok && worst < 4.0, "%s: needle at the requested depth 0/25/50/75/100%% at 4K (worst error %.2f points)",
              gdn2_niah_paper_name(dtasks[i]), worst);
    }

    /* determinism; different seeds differ; split streams differ */
    {
        gdn2_niah_cfg c = {GDN2_NIAH_SINGLE_2, 2048, 0, 0, 0};
        gdn2_niah_sample a, b, d;
        gdn2_niah_generate(&r, &c, 9, 0, &a);
        gdn2_niah_generate(&r, &c, 9, 0, &b);
        gdn2_niah_generate(&r, &c, 10, 0, &d);
        CHECK(!strcmp(a.prompt, b.prompt) && !strcmp(a.answers[0], b.answers[0]) && strcmp(a.prompt, d.prompt),
              "NIAH deterministic in (cfg, seed, split); seeds 9 and 10 differ");
        gdn2_niah_sample_free(&a), gdn2_niah_sample_free(&b), gdn2_niah_sample_free(&d);
    }
    /* essay haystack = the first words of the corpus (same text at every sample of a length) */
    {
        gdn2_niah_cfg c = {GDN2_NIAH_SINGLE_2, 1024, 0, 1, 100};
        gdn2_niah_sample smp;
        gdn2_niah_generate(&r, &c, 1, 0, &smp);
        CHECK(!strncmp(smp.prompt + smp.context_off, GENTEXT_OPENING_COLLAPSED, strlen(GENTEXT_OPENING_COLLAPSED)),
              "essay haystack starts with the corpus' first words, whitespace collapsed");
        gdn2_niah_sample_free(&smp);
    }

    /* errors: too short, no essay, bad depth */
    {
        gdn2_niah_cfg c = {GDN2_NIAH_SINGLE_1, 300, 0, 0, 0};
        gdn2_niah_sample smp;
        st = gdn2_niah_generate(&r, &c, 0, 0, &smp);
        CHECK(st == GDN2_ERR_ARG && strstr(gdn2_last_error(), "shorter"), "length 300 < frame + needle: %s", gdn2_last_error());
        gdn2_ruler_res nr = r;
        nr.n_words = 0;
        c.task = GDN2_NIAH_SINGLE_2, c.length = 2048;
        st = gdn2_niah_generate(&nr, &c, 0, 0, &smp);
        CHECK(st == GDN2_ERR_ARG && strstr(gdn2_last_error(), "--haystack"), "essay task without a haystack: %s", gdn2_last_error());
        c.use_depth = 1, c.depth = 120;
        CHECK(gdn2_niah_generate(&r, &c, 0, 0, &smp) == GDN2_ERR_ARG, "depth 120 rejected");
    }
    gdn2_ruler_free(&r);

    gdn2_ruler_res r2;
    st = gdn2_ruler_load(&r2, "/nonexistent/adj.txt", noun, NULL);
    CHECK(st == GDN2_ERR_IO && strstr(gdn2_last_error(), "/nonexistent/adj.txt"), "missing word list: %s", gdn2_last_error());
    st = gdn2_ruler_load(&r2, adj, noun, "/nonexistent/essay.txt");
    CHECK(st == GDN2_ERR_IO && strstr(gdn2_last_error(), "/nonexistent/essay.txt"), "missing haystack: %s", gdn2_last_error());
}

/* train/test disjointness with word lists small enough that an unsplit generator would collide:
 * 4 adjectives x 4 nouns = 16 keys */
static void test_ruler_disjoint(void) {
    char ap[] = "/tmp/gdn2_test_adjXXXXXX", np[] = "/tmp/gdn2_test_nounXXXXXX";
    int fa = mkstemp(ap), fn = mkstemp(np);
    if (fa < 0 || fn < 0) { CHECK(0, "cannot create temp files for the word lists"); return; }
    const char *A = "red\nblue\ngreen\nwet \n", *N = "cat\ndog\nbird\nfish\n";
    if (write(fa, A, strlen(A)) < 0 || write(fn, N, strlen(N)) < 0) {}
    close(fa), close(fn);
    gdn2_ruler_res r;
    int st = gdn2_ruler_load(&r, ap, np, NULL);
    CHECK(!st && r.n_adjs == 4 && !strcmp(r.adjs[3], "wet"), "word list load strips whitespace and sorts (%d adjs)", r.n_adjs);
    char keys[2][64][64];
    int nk[2] = {0, 0};
    uint64_t vals[2][200];
    for (int split = 0; split < 2 && !st; split++)
        for (int s = 0; s < 200; s++) {
            gdn2_niah_cfg c = {GDN2_NIAH_SINGLE_1, 600, 0, 0, 0};
            gdn2_niah_sample smp;
            if ((st = gdn2_niah_generate(&r, &c, (uint64_t)s, split, &smp))) break;
            const char *p = strstr(smp.prompt, "for ") + 4;
            char k[64];
            snprintf(k, sizeof k, "%.*s", (int)(strstr(p, " is: ") - p), p);
            int have = 0;
            for (int i = 0; i < nk[split]; i++) have |= !strcmp(keys[split][i], k);
            if (!have && nk[split] < 64) snprintf(keys[split][nk[split]++], 64, "%s", k);
            vals[split][s] = fnv(smp.answers[0], strlen(smp.answers[0]));
            gdn2_niah_sample_free(&smp);
        }
    int shared = 0;
    for (int i = 0; i < nk[0]; i++)
        for (int j = 0; j < nk[1]; j++) shared += !strcmp(keys[0][i], keys[1][j]);
    qsort(vals[0], 200, 8, cmp_u64), qsort(vals[1], 200, 8, cmp_u64);
    CHECK(!st && nk[0] + nk[1] == 16 && nk[0] > 2 && nk[1] > 2 && shared == 0 && overlap(vals[0], 200, vals[1], 200) == 0,
          "NIAH train/test: %d train keys and %d test keys of 16, none shared; values disjoint", nk[0], nk[1]);
    gdn2_ruler_free(&r);
    unlink(ap), unlink(np);
}

/* ---- scorers ------------------------------------------------------------------------------ */
static void test_scoring(void) {
    const char *one[] = {"1234567"};
    const char *four[] = {"1111111", "2222222", "3333333", "4444444"};
    const char *uu[] = {"ABCDEF12-aaaa"};
    CHECK(gdn2_string_match_all(": 1234567.", one, 1) == 1.0, "match_all: ': 1234567.' contains the answer -> 1");
    CHECK(gdn2_string_match_all("", one, 1) == 0.0, "match_all: empty prediction -> 0");
    CHECK(gdn2_string_match_all("123456", one, 1) == 0.0, "match_all: a prefix of the answer is not a match");
    CHECK(gdn2_string_match_all(" the number is abcdef12-AAAA ok", uu, 1) == 1.0, "match_all: case-insensitive");
    CHECK(gdn2_string_match_all("2222222 and 4444444, 9999999", four, 4) == 0.5, "match_all: 2 of 4 -> 0.5");
    CHECK(gdn2_string_match_all("4444444 3333333 2222222 1111111", four, 4) == 1.0, "match_all: order irrelevant");
    CHECK(gdn2_string_match_part("2222222", four, 4) == 1.0 && gdn2_string_match_part("5", four, 4) == 0.0,
          "match_part: any reference -> 1, none -> 0");
    CHECK(gdn2_string_match_all("12345\x01" "67", one, 1) == 0.0, "match_all: a control character inside breaks the match (-> newline)");
    CHECK(gdn2_string_match_all("x", one, 0) == 0.0, "match_all: no references -> 0");
    char out[64];
    const char raw[] = "  \x00" "abc\x1f\tdef \n";
    gdn2_ruler_postprocess(raw, sizeof raw - 1, out, sizeof out);
    CHECK(!strcmp(out, "abc\n\ndef"), "postprocess: strip, controls -> newline, strip");
    int32_t tg[6] = {GDN2_IGNORE, 5, GDN2_IGNORE, 7, 8, GDN2_IGNORE}, pr[6] = {0, 5, 1, 7, 9, 3};
    int c, n;
    double acc = gdn2_token_accuracy(pr, tg, 6, &c, &n);
    CHECK(c == 2 && n == 3 && acc == 2.0 / 3, "token accuracy over target positions only: %d/%d", c, n);
    CHECK(!gdn2_sequence_correct(pr, tg, 6), "sequence accuracy: one wrong position -> 0");
    pr[4] = 8;
    CHECK(gdn2_sequence_correct(pr, tg, 6), "sequence accuracy: all target positions right -> 1");
    int32_t none[2] = {GDN2_IGNORE, GDN2_IGNORE};
    CHECK(!gdn2_sequence_correct(pr, none, 2) && gdn2_token_accuracy(pr, none, 2, NULL, NULL) == 0.0,
          "no scored positions -> 0, not 1");
}

/* ---- heatmap ------------------------------------------------------------------------------ */
static void test_heatmap(void) {
    double depths[3] = {0, 50, 100}, sc[6] = {100, 87.5, 0, NAN, 50, 12.25};
    int lens[2] = {1024, 2048};
    gdn2_heatmap h = {"S-NIAH-1 <test> & co", 3, 2, depths, lens, sc, NULL};
    char *svg = NULL;
    int st = gdn2_heatmap_svg(&h, &svg);
    CHECK(!st && svg && !strncmp(svg, "<?xml", 5) && strstr(svg, "</svg>\n") && count_sub(svg, "<svg") == 1,
          "heatmap SVG: one <svg> document");
    if (!svg) return;
    CHECK(strstr(svg, "S-NIAH-1 &lt;test&gt; &amp; co") != NULL, "heatmap title XML-escaped");
    CHECK(strstr(svg, ">87.5<") && strstr(svg, ">12.2<") && strstr(svg, ">n/a<") && strstr(svg, ">1024<") &&
              strstr(svg, ">50<"),
          "heatmap cells and axes labelled (87.5, 12.2, n/a, 1024, depth 50)");
    CHECK(strstr(svg, "fill=\"rgb(26,152,80)\"") && strstr(svg, "fill=\"rgb(215,48,39)\"") && strstr(svg, "fill=\"rgb(200,200,200)\""),
          "heatmap colours: 100 green, 0 red, missing grey");
    CHECK(count_sub(svg, "<rect") == 1 + 6 + 10, "heatmap: background + 6 cells + 10 colour-bar steps");
    char path[] = "/tmp/gdn2_test_heatmapXXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        close(fd);
        st = gdn2_heatmap_write(&h, path);
        CHECK(!st, "heatmap written to %s", path);
        if (need_tool("xmllint", "the heatmap SVG is well-formed XML")) {
            char cmd[256];
            snprintf(cmd, sizeof cmd, "xmllint --noout %s", path);
            CHECK(system(cmd) == 0, "heatmap SVG is well-formed XML (xmllint)");
        }
        unlink(path);
    }
    free(svg);
    gdn2_heatmap bad = {"x", 0, 2, depths, lens, sc, NULL};
    CHECK(gdn2_heatmap_svg(&bad, &svg) == GDN2_ERR_ARG, "heatmap with 0 rows rejected");
}

int main(void) {
    test_mqar();
    test_state();
    test_ruler_strings();
    test_ruler();
    test_ruler_disjoint();
    test_scoring();
    test_heatmap();
    return test_summary();
}
