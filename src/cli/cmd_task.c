/* gdn2 task — print samples of the task generators (for inspection).
 *   gdn2 task list
 *   gdn2 task show NAME [--len N] [--seed S] [--split train|test] [--depth D] [--haystack FILE]
 *                  [--adjs FILE] [--nouns FILE] [--max-new N] [--vocab V] [--pairs N] [--updates N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_data.h"

#define DEFAULT_ADJS GDN2_DEFAULT_ADJS
#define DEFAULT_NOUNS GDN2_DEFAULT_NOUNS

static void task_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 task list\n"
            "       gdn2 task show NAME [options]\n\n"
            "options:\n"
            "  --len N          length in tokens (bytes for NIAH: prompt + answer budget; MQAR: T;\n"
            "                   parity/modarith: L). Defaults: NIAH 1024, MQAR 64, state: drawn\n"
            "  --seed S         sample seed (default 0)\n"
            "  --split S        train or test (default test)\n"
            "  --depth D        NIAH: put the queried needle at D percent (default: RULER's draw)\n"
            "  --haystack FILE  essay haystack for the essay tasks (RULER: Paul Graham essays; default\n"
            "                   " GDN2_DEFAULT_TEXT ", fetched by sh scripts/get_data.sh)\n"
            "  --adjs FILE      adjective list (default " DEFAULT_ADJS ")\n"
            "  --nouns FILE     noun list (default " DEFAULT_NOUNS ")\n"
            "  --max-new N      NIAH answer budget in tokens (default 32 numbers, 64 UUID/multi)\n"
            "  --vocab V        MQAR vocabulary (default 256)\n"
            "  --pairs N        MQAR key-value pairs (default T/16, at least 1)\n"
            "  --updates N      forgetting-MQAR overwritten keys (default pairs/2)\n");
}

static void list_tasks(void) {
    int n;
    const gdn2_task_info *t = gdn2_task_list(&n);
    printf("%-16s %-10s %s\n", "name", "alias", "kind");
    for (int i = 0; i < n; i++)
        printf("%-16s %-10s %s%s\n", t[i].name, t[i].alias, t[i].kind == GDN2_TASK_KIND_TEXT ? "text (RULER)" : "tokens",
               t[i].kind == GDN2_TASK_KIND_TEXT && gdn2_niah_needs_essay(t[i].id) ? ", essay haystack" : "");
}

static void print_tokens(const int32_t *tok, const int32_t *tgt, int n) {
    printf("tokens:  ");
    for (int t = 0; t < n; t++) printf("%d%s", tok[t], t + 1 < n ? " " : "\n");
    printf("targets: ");
    for (int t = 0; t < n; t++) {
        if (tgt[t] == GDN2_IGNORE) printf("-");
        else printf("%d", tgt[t]);
        printf("%s", t + 1 < n ? " " : "\n");
    }
}

int cmd_task(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        task_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "list")) { list_tasks(); return 0; }
    if (strcmp(argv[1], "show")) {
        fprintf(stderr, "gdn2 task: unknown subcommand '%s' (list, show)\n", argv[1]);
        return 2;
    }
    if (argc < 3 || argv[2][0] == '-') {
        fprintf(stderr, "gdn2 task show: missing task NAME (gdn2 task list shows them)\n");
        return 2;
    }
    const gdn2_task_info *ti = gdn2_task_find(argv[2]);
    if (!ti) {
        fprintf(stderr, "gdn2 task: unknown task '%s' (gdn2 task list shows the names)\n", argv[2]);
        return 2;
    }
    int64_t len = -1;
    uint64_t seed = 0;
    int max_new = 0, vocab = 256, pairs = 0, updates = 0, split = 1, use_depth = 0;
    double depth = 0;
    const char *hay = NULL, *adjs = DEFAULT_ADJS, *nouns = DEFAULT_NOUNS;
    const cli_opt opts[] = {
        CLI_OPT_I64("--len", &len, 1, 1 << 28),
        CLI_OPT_U64("--seed", &seed, 0, CLI_SEED_MAX),
        CLI_OPT_INT("--max-new", &max_new, 1, 1 << 20),
        CLI_OPT_INT("--vocab", &vocab, 4, 1 << 24),
        CLI_OPT_INT("--pairs", &pairs, 1, 1 << 24),
        CLI_OPT_INT("--updates", &updates, 1, 1 << 24),
        CLI_OPT_STR("--haystack", NULL, &hay),
        CLI_OPT_STR("--adjs", NULL, &adjs),
        CLI_OPT_STR("--nouns", NULL, &nouns),
        CLI_OPT_CHOICE("--split", &split, "train|test"),
        {.name = "--depth", .kind = CLI_F64, .dst = &depth, .flo = 0, .fhi = 100, .seen = &use_depth},
    };
    int rc = cli_parse("task", argc, argv, 3, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL, task_usage);
    if (rc) return rc < 0 ? 0 : rc;
    /* a sample is [len] tokens and targets (NIAH: a prompt of len bytes): at most 2^28, 2 GB */
    if (len > 0 && (rc = cli_check_mem("task", "--len", 8.0 * (double)len))) return rc;

    if (ti->kind == GDN2_TASK_KIND_TEXT) {
        if (gdn2_niah_needs_essay(ti->id) && !hay) hay = GDN2_DEFAULT_TEXT;
        if (gdn2_niah_needs_essay(ti->id) && cli_default_text_missing("task", hay, "--haystack")) return 2;
        if ((rc = cli_check_in("task", "--adjs", adjs)) || (rc = cli_check_in("task", "--nouns", nouns)) ||
            (gdn2_niah_needs_essay(ti->id) && (rc = cli_check_in("task", "--haystack", hay))))
            return rc;
        gdn2_ruler_res res;
        if (gdn2_ruler_load(&res, adjs, nouns, gdn2_niah_needs_essay(ti->id) ? hay : NULL)) {
            fprintf(stderr, "gdn2 task: %s\n", gdn2_last_error());
            return 2;
        }
        gdn2_niah_cfg c = {ti->id, len > 0 ? (int)len : 1024, max_new, use_depth, depth};
        gdn2_niah_sample s;
        int st = gdn2_niah_generate(&res, &c, (uint64_t)seed, split, &s);
        gdn2_ruler_free(&res);
        if (st) {
            fprintf(stderr, "gdn2 task: %s\n", gdn2_last_error());
            return 2;
        }
        printf("task: %s (%s)  split: %s  seed: %llu\n", ti->name, ti->alias, split ? "test" : "train",
               (unsigned long long)seed);
        printf("length budget: %d tokens = prompt %d + answer budget %d (byte-level tokens)\n", c.length, s.prompt_len,
               s.max_new);
        printf("needles: %d  depth of the first answer's needle: %.1f%%\n", s.n_needles, s.depth);
        printf("answers (%d):", s.n_answers);
        for (int i = 0; i < s.n_answers; i++) printf(" %s", s.answers[i]);
        printf("\n----- prompt -----\n%s\n----- end of prompt (the model continues here) -----\n", s.prompt);
        gdn2_niah_sample_free(&s);
        return 0;
    }

    /* token tasks */
    int T, n_shown, L = 0;
    int32_t *tok, *tgt;
    int st;
    if (ti->id == GDN2_TASK_MQAR || ti->id == GDN2_TASK_FMQAR) {
        T = len > 0 ? (int)len : 64;
        gdn2_mqar_cfg c = {vocab, T, pairs > 0 ? pairs : (T / 16 > 0 ? T / 16 : 1), ti->id == GDN2_TASK_FMQAR, updates,
                           0, 0};
        tok = malloc(sizeof(int32_t) * (size_t)T), tgt = malloc(sizeof(int32_t) * (size_t)T);
        if (!tok || !tgt) { free(tok); free(tgt); fprintf(stderr, "gdn2 task: out of memory\n"); return 1; }
        st = gdn2_mqar_sample(&c, (uint64_t)seed, split, tok, tgt);
        if (!st) printf("task: %s  split: %s  seed: %llu  V=%d T=%d pairs=%d%s\n", ti->name, split ? "test" : "train",
                        (unsigned long long)seed, c.vocab_size, T, c.n_pairs, c.forgetting ? " (keys overwritten later; answer = latest value)" : "");
        n_shown = T;
    } else {
        gdn2_state_cfg c = {ti->id == GDN2_TASK_PARITY ? GDN2_ST_PARITY : GDN2_ST_MODARITH, 0, 0, 0};
        if (len > 0) {
            c.min_len = c.max_len = (int)len;
            c.seq_len = len > 256 ? (int)len : 256;
        }
        T = c.seq_len > 0 ? c.seq_len : 256;
        tok = malloc(sizeof(int32_t) * (size_t)T), tgt = malloc(sizeof(int32_t) * (size_t)T);
        if (!tok || !tgt) { free(tok); free(tgt); fprintf(stderr, "gdn2 task: out of memory\n"); return 1; }
        st = gdn2_state_sample(&c, (uint64_t)seed, split, tok, tgt, &L);
        if (!st) printf("task: %s  split: %s  seed: %llu  L=%d (padded to %d with 0; shown up to L)  vocab=%d\n", ti->name,
                        split ? "test" : "train", (unsigned long long)seed, L, T, gdn2_state_vocab(c.kind));
        if (!st && c.kind == GDN2_ST_MODARITH) printf("legend: 1 '+', 2 '-', 3 '*', 4 '=', 5..9 digits 0..4\n");
        n_shown = L;
    }
    if (st) {
        fprintf(stderr, "gdn2 task: %s\n", gdn2_last_error());
        free(tok); free(tgt);
        return 2;
    }
    print_tokens(tok, tgt, n_shown);
    printf("answers:");
    for (int t = 0; t < n_shown; t++)
        if (tgt[t] != GDN2_IGNORE) printf(" [pos %d: %d -> %d]", t, tok[t], tgt[t]);
    printf("\n");
    free(tok); free(tgt);
    return 0;
}
