/* gdn2 eval — evaluate a checkpoint on the synthetic tasks: a table on stdout, a JSON file and one
 * SVG heatmap (score over depth x length) per task. NIAH prompts go through the constant-memory path
 * (prefill, then one decode step per generated token, greedy); token tasks are teacher-forced. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_data.h"
#include "gdn2_io.h"
#include "gdn2_model.h"

#define DEFAULT_ADJS GDN2_DEFAULT_ADJS
#define DEFAULT_NOUNS GDN2_DEFAULT_NOUNS
#define MAX_LIST 64

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 eval --model CKPT --task NAME[,NAME...] --lengths N[,N...] [options]\n\n"
            "  --samples N       samples per cell (default 100; RULER uses 500)\n"
            "  --depths D,...    NIAH needle depths in percent, or 'random' for RULER's own draw\n"
            "                    (default 0,25,50,75,100)\n"
            "  --seed S          sample seed (default 0); samples come from the test stream\n"
            "  --out DIR         where eval.json and <task>_heatmap.svg go (default eval_out)\n"
            "  --haystack FILE   essay haystack for the essay NIAH tasks (RULER: Paul Graham essays;\n"
            "                    default " GDN2_DEFAULT_TEXT ", fetched by sh scripts/get_data.sh)\n"
            "  --adjs FILE       adjective list (default " DEFAULT_ADJS ")\n"
            "  --nouns FILE      noun list (default " DEFAULT_NOUNS ")\n"
            "  --max-new N       NIAH generation budget (default 32 numbers, 64 UUID/multi)\n"
            "  --pairs N         MQAR key-value pairs (default T/16)\n"
            "  --vocab V         MQAR vocabulary (default: the model's vocab_size)\n"
            "  --threads N       CPU threads (default 1: small models decode faster single-threaded)\n"
            "  --device D        cpu (default) or cuda: forwards, prefills and decode steps on the GPU\n"
            "                    (bf16-mixed, docs/BACKEND.md: scores may differ from the CPU's where a\n"
            "                    greedy choice is close)\n"
            "  --cuda-graph on|off with --device cuda: each decode step replayed from a CUDA graph (on,\n"
            "                    default) or its kernels launched one by one (off); docs/SERVING.md\n"
            "lengths are tokens: NIAH prompt + answer budget (bytes), MQAR T, parity/modarith L.\n"
            "tasks: gdn2 task list\n");
}

/* ---- the checkpoint as an evaluator model -------------------------------------------------- */
typedef struct {
    gdn2_model *m;
    float *logits; /* [cap * padded_vocab] */
    int64_t cap;
} model_ctx;

static int ensure_logits(model_ctx *c, int64_t rows) {
    if (rows <= c->cap) return GDN2_OK;
    float *p = realloc(c->logits, sizeof(float) * (size_t)rows * (size_t)c->m->cfg.padded_vocab);
    if (!p) return gdn2_error(GDN2_ERR_NOMEM, "eval: out of memory for %lld rows of logits", (long long)rows);
    c->logits = p, c->cap = rows;
    return GDN2_OK;
}

/* greedy: argmax over the real vocabulary (padding columns excluded); ties -> lowest id */
static int32_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return (int32_t)b;
}

static int model_generate(void *p, const int32_t *prompt, int n, int max_new, int32_t *out, int *n_out,
                          gdn2_eval_stop_fn stop, void *sctx) {
    model_ctx *c = p;
    *n_out = 0;
    int st = ensure_logits(c, 1);
    if (st) return st;
    gdn2_model_state *s = NULL;
    /* recurrent layers: fixed-size state; attention layers (if any) size their caches to the budget */
    if ((st = gdn2_model_state_create(c->m, 1, (int64_t)n + max_new, &s))) return st;
    st = gdn2_model_prefill(c->m, s, prompt, n, c->logits);
    for (int k = 0; !st && k < max_new; k++) {
        int32_t next = argmax(c->logits, c->m->cfg.vocab_size);
        out[k] = next;
        *n_out = k + 1;
        if (k + 1 == max_new || (stop && stop(out, k + 1, sctx))) break;
        st = gdn2_model_step(c->m, s, &next, c->logits);
    }
    gdn2_model_state_free(s);
    return st;
}

static int model_predict(void *p, const int32_t *tokens, int n, int32_t *pred) {
    model_ctx *c = p;
    int st = ensure_logits(c, n);
    if (st) return st;
    if ((st = gdn2_model_forward(c->m, tokens, NULL, 1, n, c->logits, NULL, 0))) return st;
    const int64_t Vp = c->m->cfg.padded_vocab;
    for (int t = 0; t < n; t++) pred[t] = argmax(c->logits + (size_t)t * Vp, c->m->cfg.vocab_size);
    return GDN2_OK;
}

/* a model that answers nothing: used to validate every (task, length) cell before the real run */
static int null_generate(void *p, const int32_t *prompt, int n, int max_new, int32_t *out, int *n_out,
                         gdn2_eval_stop_fn stop, void *sctx) {
    (void)p, (void)prompt, (void)n, (void)max_new, (void)out, (void)stop, (void)sctx;
    *n_out = 0;
    return GDN2_OK;
}
static int null_predict(void *p, const int32_t *tokens, int n, int32_t *pred) {
    (void)p, (void)tokens;
    memset(pred, 0, sizeof(int32_t) * (size_t)n);
    return GDN2_OK;
}

/* FNV-1a 64 of the checkpoint bytes: identifies the exact weights evaluated */
static int file_hash(const char *path, char out[32]) {
    FILE *f = fopen(path, "rb");
    if (!f) return gdn2_error(GDN2_ERR_IO, "cannot open checkpoint '%s'", path);
    uint64_t h = 0xcbf29ce484222325ULL;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001b3ULL;
    fclose(f);
    snprintf(out, 32, "fnv1a64:%016llx", (unsigned long long)h);
    return GDN2_OK;
}

/* ---- argument lists ----------------------------------------------------------------------- */
/* s split in place at every ','; -1 when it has more than cap items or an empty one ("a,,b", "a,") */
static int split_list(char *s, char **items, int cap) {
    int n = 0;
    for (char *t = s;; t++) {
        char *e = strchr(t, ',');
        if (e) *e = 0;
        if (!*t || n == cap) return -1;
        items[n++] = t;
        if (!e) return n;
        t = e;
    }
}

static int mkdir_p1(const char *dir) {
    struct stat sb;
    if (!stat(dir, &sb)) return S_ISDIR(sb.st_mode) ? GDN2_OK : gdn2_error(GDN2_ERR_IO, "'%s' exists and is not a directory", dir);
    if (mkdir(dir, 0777)) return gdn2_error(GDN2_ERR_IO, "cannot create output directory '%s': %s", dir, strerror(errno));
    return GDN2_OK;
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *out_dir = "eval_out", *hay = NULL, *adjs = DEFAULT_ADJS, *nouns = DEFAULT_NOUNS;
    char *task_arg = NULL, *len_arg = NULL, *depth_arg = NULL;
    int samples = 100, max_new = 0, pairs = 0, vocab = 0, threads = 1, device = 0, graph_off = 0;
    uint64_t seed = 0;
    const cli_opt opts[] = {
        CLI_OPT_STR("--model", NULL, &model_path),
        CLI_OPT_STR("--task", NULL, &task_arg),
        CLI_OPT_STR("--lengths", NULL, &len_arg),
        CLI_OPT_STR("--depths", NULL, &depth_arg),
        CLI_OPT_STR("--out", NULL, &out_dir),
        CLI_OPT_STR("--haystack", NULL, &hay),
        CLI_OPT_STR("--adjs", NULL, &adjs),
        CLI_OPT_STR("--nouns", NULL, &nouns),
        CLI_OPT_INT("--samples", &samples, 1, 1000000),
        CLI_OPT_U64("--seed", &seed, 0, CLI_SEED_MAX),
        CLI_OPT_INT("--max-new", &max_new, 1, 1 << 20),
        CLI_OPT_INT("--pairs", &pairs, 1, 1 << 23),
        CLI_OPT_INT("--vocab", &vocab, 4, 1 << 24),
        CLI_OPT_INT("--threads", &threads, 0, cli_max_threads()),
        CLI_OPT_CHOICE("--device", &device, "cpu|cuda"),
        CLI_OPT_CHOICE("--cuda-graph", &graph_off, "on|off"),
    };
    int rc = cli_parse("eval", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL, eval_usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!model_path || !task_arg || !len_arg) {
        fprintf(stderr, "gdn2 eval: --model, --task and --lengths are required\n");
        eval_usage(stderr);
        return 2;
    }
    if ((rc = cli_check_in("eval", "--model", model_path))) return rc;

    /* tasks, lengths, depths */
    char *tnames[MAX_LIST], *lstr[MAX_LIST], *dstr[MAX_LIST];
    const gdn2_task_info *tasks[MAX_LIST];
    int lens[MAX_LIST];
    double depths[MAX_LIST];
    int nt = split_list(task_arg, tnames, MAX_LIST), nl = split_list(len_arg, lstr, MAX_LIST), nd = 5;
    if (nt < 1 || nl < 1) {
        fprintf(stderr, "gdn2 eval: %s: an empty item, or more than %d items (a comma list: mqar,S-NIAH-1)\n",
                nt < 1 ? "--task" : "--lengths", MAX_LIST);
        return 2;
    }
    int any_text = 0, any_essay = 0;
    for (int i = 0; i < nt; i++) {
        if (!(tasks[i] = gdn2_task_find(tnames[i]))) {
            fprintf(stderr, "gdn2 eval: unknown task '%s' (gdn2 task list shows the names)\n", tnames[i]);
            return 2;
        }
        any_text |= tasks[i]->kind == GDN2_TASK_KIND_TEXT;
        any_essay |= tasks[i]->kind == GDN2_TASK_KIND_TEXT && gdn2_niah_needs_essay(tasks[i]->id);
    }
    for (int i = 0; i < nl; i++) { /* then the memory check once the model's size is known */
        long long v;
        if (!cli_int("eval", "--lengths", lstr[i], 1, INT_MAX, &v)) return 2;
        lens[i] = (int)v;
    }
    int use_depth = 1;
    if (depth_arg && !strcmp(depth_arg, "random")) use_depth = 0, nd = 1, depths[0] = NAN;
    else if (depth_arg) {
        nd = split_list(depth_arg, dstr, MAX_LIST);
        if (nd < 1) {
            fprintf(stderr, "gdn2 eval: --depths: an empty item, or more than %d items\n", MAX_LIST);
            return 2;
        }
        for (int i = 0; i < nd; i++)
            if (!cli_num("eval", "--depths", dstr[i], 0, 100, 0, &depths[i])) return 2; /* percent, or 'random' */
    } else
        for (int i = 0; i < nd; i++) depths[i] = 25.0 * i;
    if (any_essay && !hay) hay = GDN2_DEFAULT_TEXT;
    if (any_essay && cli_default_text_missing("eval", hay, "--haystack")) return 2;

    /* resources before the (slower) checkpoint load, so bad paths fail fast */
    if (any_text && ((rc = cli_check_in("eval", "--adjs", adjs)) || (rc = cli_check_in("eval", "--nouns", nouns))))
        return rc;
    if (any_essay && (rc = cli_check_in("eval", "--haystack", hay))) return rc;
    gdn2_ruler_res res;
    memset(&res, 0, sizeof res);
    if (any_text && gdn2_ruler_load(&res, adjs, nouns, any_essay ? hay : NULL)) {
        fprintf(stderr, "gdn2 eval: %s\n", gdn2_last_error());
        return 2;
    }
    char hash[32];
    gdn2_model *m = NULL;
    int st = file_hash(model_path, hash);
    if (!st) st = gdn2_model_load(model_path, &m);
    if (st) {
        fprintf(stderr, "gdn2 eval: %s\n", gdn2_last_error());
        gdn2_ruler_free(&res);
        return cli_exit_code(st);
    }
    m->n_threads = threads;
    /* config checks: attention layers are bounded by the RoPE table / cache length */
    int has_attn = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) has_attn |= m->cfg.kind[l] >= GDN2_LAYER_SWA;
    for (int i = 0; i < nl; i++)
        if (has_attn && lens[i] > m->cfg.block_size) {
            fprintf(stderr, "gdn2 eval: length %d exceeds the checkpoint's block_size %lld (attention layers)\n", lens[i],
                    (long long)m->cfg.block_size);
            gdn2_model_free(m), gdn2_ruler_free(&res);
            return 2;
        }
    /* memory per length, before any sample is drawn: the forward over the whole length (token
     * tasks: teacher-forced; NIAH: the prefill), the evaluator's logits and the decode state */
    for (int i = 0; i < nl; i++) {
        const double L = lens[i];
        double need = cli_forward_bytes(&m->cfg, L, 0) + 4.0 * L * (double)m->cfg.padded_vocab +
                      cli_state_bytes(&m->cfg, L);
        if (device) need = 4.0 * L * (double)m->cfg.padded_vocab; /* the rest lives on the GPU */
        char what[64];
        snprintf(what, sizeof what, "--lengths %d", lens[i]);
        if ((rc = cli_check_mem("eval", what, need))) {
            gdn2_model_free(m), gdn2_ruler_free(&res);
            return rc;
        }
    }
    if ((rc = cli_model_device("eval", m, device, !graph_off))) {
        gdn2_model_free(m), gdn2_ruler_free(&res);
        return rc;
    }
    if (mkdir_p1(out_dir)) { /* a directory that cannot be made is a failed write: 1 */
        fprintf(stderr, "gdn2 eval: --out: %s\n", gdn2_last_error());
        gdn2_model_free(m), gdn2_ruler_free(&res);
        return 1;
    }

    /* validate every cell first (one sample each, no model work): a length too short for the
     * needle, an odd MQAR length or a vocabulary mismatch fails before any time is spent */
    gdn2_eval_model nullm = {NULL, (int)m->cfg.vocab_size, null_generate, null_predict};
    for (int ti = 0; ti < nt; ti++)
        for (int li = 0; li < nl; li++) {
            int text = tasks[ti]->kind == GDN2_TASK_KIND_TEXT;
            gdn2_eval_cell_cfg cc = {tasks[ti], lens[li], text && use_depth, text ? depths[0] : 0, 1, (uint64_t)seed,
                                     (int)max_new, (int)vocab, (int)pairs, text ? &res : NULL};
            gdn2_eval_cell out;
            if (gdn2_eval_cell_run(&nullm, &cc, &out)) {
                fprintf(stderr, "gdn2 eval: %s at length %d: %s\n", tasks[ti]->name, lens[li], gdn2_last_error());
                gdn2_model_free(m), gdn2_ruler_free(&res);
                return 2;
            }
        }

    model_ctx mc = {m, NULL, 0};
    gdn2_eval_model em = {&mc, (int)m->cfg.vocab_size, model_generate, model_predict};
    cJSON *root = cJSON_CreateObject(), *results = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "model", model_path);
    cJSON_AddStringToObject(root, "model_hash", hash);
    cJSON_AddStringToObject(root, "layout", m->cfg.layout);
    cJSON_AddStringToObject(root, "device", gdn2_model_device(m));
    cJSON_AddNumberToObject(root, "seed", (double)seed);
    cJSON_AddNumberToObject(root, "samples", (double)samples);
    cJSON_AddStringToObject(root, "split", "test");
    if (any_essay) cJSON_AddStringToObject(root, "haystack", hay);
    cJSON_AddItemToObject(root, "results", results);

    printf("model %s (%s, layout %s, vocab %lld)\n", model_path, hash, m->cfg.layout, (long long)m->cfg.vocab_size);
    printf("%-16s %8s %7s %8s %6s %9s %9s\n", "task", "length", "depth", "score", "n", "part", "mean_len");
    for (int ti = 0; ti < nt && !rc; ti++) {
        const gdn2_task_info *t = tasks[ti];
        int text = t->kind == GDN2_TASK_KIND_TEXT, rows = text ? nd : 1;
        double *grid = malloc(sizeof(double) * (size_t)rows * (size_t)nl);
        if (!grid) { rc = 1; break; }
        for (int r = 0; r < rows && !rc; r++)
            for (int li = 0; li < nl && !rc; li++) {
                gdn2_eval_cell_cfg cc = {t, lens[li], text && use_depth, text ? depths[r] : 0, (int)samples, (uint64_t)seed,
                                         (int)max_new, (int)vocab, (int)pairs, text ? &res : NULL};
                gdn2_eval_cell out;
                if ((st = gdn2_eval_cell_run(&em, &cc, &out))) {
                    fprintf(stderr, "gdn2 eval: %s at length %d: %s\n", t->name, lens[li], gdn2_last_error());
                    rc = cli_exit_code(st);
                    break;
                }
                grid[(size_t)r * nl + li] = out.score;
                char dep[16];
                if (!text) snprintf(dep, sizeof dep, "-");
                else if (!use_depth) snprintf(dep, sizeof dep, "random");
                else snprintf(dep, sizeof dep, "%g", depths[r]);
                printf("%-16s %8d %7s %8.2f %6d %9.2f %9.1f\n", t->name, lens[li], dep, out.score, out.n, out.score_part,
                       out.mean_len);
                fflush(stdout);
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "task", t->name);
                cJSON_AddStringToObject(o, "task_alias", t->alias);
                cJSON_AddNumberToObject(o, "length", lens[li]);
                if (text && use_depth) cJSON_AddNumberToObject(o, "depth", depths[r]);
                else if (text) cJSON_AddStringToObject(o, "depth", "random");
                else cJSON_AddNullToObject(o, "depth");
                cJSON_AddNumberToObject(o, "score", round(out.score * 100) / 100); /* RULER: 2 decimals */
                cJSON_AddStringToObject(o, "metric", text ? "string_match_all" : (t->id <= GDN2_TASK_FMQAR ? "query_accuracy" : "sequence_accuracy"));
                if (text) cJSON_AddNumberToObject(o, "score_part", round(out.score_part * 100) / 100);
                if (!text && t->id >= GDN2_TASK_PARITY) cJSON_AddNumberToObject(o, "scaled_accuracy", out.scaled);
                cJSON_AddNumberToObject(o, "n", out.n);
                cJSON_AddNumberToObject(o, "seed", (double)seed);
                cJSON_AddStringToObject(o, "model_hash", hash);
                cJSON_AddNumberToObject(o, "mean_len", out.mean_len);
                cJSON_AddItemToArray(results, o);
            }
        if (!rc) {
            char path[1024], title[512];
            snprintf(path, sizeof path, "%s/%s_heatmap.svg", out_dir, t->name);
            const char *base = strrchr(model_path, '/');
            snprintf(title, sizeof title, "%s (%s): %s, n=%lld per cell, seed %lld", t->alias, text ? "string_match_all" : "accuracy",
                     base ? base + 1 : model_path, (long long)samples, (long long)seed);
            gdn2_heatmap h = {title, rows, nl, text ? depths : NULL, lens, grid, text ? NULL : "(no depth)"};
            double nan_row = NAN;
            if (!text) h.row_vals = &nan_row;
            if (gdn2_heatmap_write(&h, path)) {
                fprintf(stderr, "gdn2 eval: %s\n", gdn2_last_error());
                rc = 1; /* a failed write */
            } else
                fprintf(stderr, "wrote %s\n", path);
        }
        free(grid);
    }
    if (!rc) {
        char path[1024];
        snprintf(path, sizeof path, "%s/eval.json", out_dir);
        char *js = cJSON_Print(root);
        if (!js || gdn2_write_file_atomic(path, js, strlen(js))) {
            fprintf(stderr, "gdn2 eval: %s\n", js ? gdn2_last_error() : "out of memory writing JSON");
            rc = 1; /* a failed write */
        } else
            fprintf(stderr, "wrote %s\n", path);
        free(js);
    }
    cJSON_Delete(root);
    free(mc.logits);
    gdn2_model_free(m);
    gdn2_ruler_free(&res);
    return rc;
}
