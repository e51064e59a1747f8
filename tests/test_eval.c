/* Evaluation protocol (src/data/evaluate.c) against oracle models with known scores, and the
 * `gdn2 eval` / `gdn2 task` CLI run as subprocesses: outputs (table, JSON, SVG), the default data
 * files (data/ word lists; the essay haystack data/tinyshakespeare.txt, missing -> exit 2 saying how
 * to get it) and bad input. The essay haystack is a text generated here (tests/gentext.h). */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "cli_run.h"
#include "gdn2.h"
#include "gentext.h"
#include "gdn2_data.h"
#include "gdn2_model.h"

/* ---- oracle models ------------------------------------------------------------------------ */
enum { OR_ALL, OR_FIRST, OR_SILENT, OR_LATE, OR_EXACT };
typedef struct {
    int mode;
    int steps;        /* tokens emitted in the last call (for the early-stop check) */
    int n_pairs, n_updates, latest; /* MQAR oracle */
} oracle;

/* Reads the RULER prompt like a perfect reader: the keys named in the question, the needles that
 * carry them, then "answers" with their values. */
static int oracle_generate(void *p, const int32_t *prompt, int n, int max_new, int32_t *out, int *n_out,
                           gdn2_eval_stop_fn stop, void *sctx) {
    oracle *o = p;
    char *s = malloc((size_t)n + 1), ans[512] = "";
    for (int i = 0; i < n; i++) s[i] = (char)prompt[i];
    s[n] = 0;
    const char *q = strstr(strstr(s, "\nWhat ") + 1, " for ") + 5;
    const char *qe = strstr(q, " mentioned in the provided text?");
    char query[512];
    snprintf(query, sizeof query, "%.*s", (int)(qe - q), q);
    for (const char *nd = s; (nd = strstr(nd, "One of the special magic ")); nd++) {
        const char *k = strstr(nd, " for ") + 5, *ke = strstr(k, " is: "), *v = ke + 5, *ve = strchr(v, '.');
        char key[256], item[300];
        snprintf(key, sizeof key, "%.*s", (int)(ke - k), k);
        /* whole items of "k1, k2, and k3" */
        int named = 0;
        for (const char *h = query; (h = strstr(h, key)); h++) {
            char after = h[strlen(key)];
            int start = h == query || h[-1] == ' ';
            if (start && (after == 0 || after == ',')) named = 1;
        }
        if (!named) continue;
        snprintf(item, sizeof item, "%s%.*s", ans[0] ? ", " : " ", (int)(ve - v), v);
        if (o->mode == OR_FIRST && ans[0]) continue;
        strncat(ans, item, sizeof ans - strlen(ans) - 1);
    }
    free(s);
    char text[1024] = "";
    int la = (int)strlen(ans);
    if (o->mode == OR_SILENT) snprintf(text, sizeof text, " I do not know.");
    else if (o->mode == OR_LATE || o->mode == OR_EXACT) {
        /* filler so the answer ends one token after the budget (LATE) or exactly at it (EXACT) */
        int fill = max_new - la + (o->mode == OR_LATE ? 1 : 0);
        for (int i = 0; i < fill && i < 900; i++) text[i] = '.';
        text[fill > 0 ? fill : 0] = 0;
        strncat(text, ans, sizeof text - strlen(text) - 1);
    } else
        snprintf(text, sizeof text, "%s", ans);
    int k = 0, lt = (int)strlen(text);
    for (; k < lt && k < max_new; k++) {
        out[k] = (unsigned char)text[k];
        if (stop && stop(out, k + 1, sctx)) { k++; break; }
    }
    *n_out = k;
    o->steps = k;
    return GDN2_OK;
}

/* MQAR: remembers the context's pairs (latest or first value per key); parity: running count;
 * modarith: evaluates the expression before '='. */
static int oracle_predict(void *p, const int32_t *tok, int n, int32_t *pred) {
    oracle *o = p;
    if (o->n_pairs) {
        int32_t mem[1 << 12];
        memset(mem, 0, sizeof mem);
        int C = 2 * (o->n_pairs + o->n_updates);
        for (int t = 0; t + 1 < C; t += 2)
            if (o->latest || !mem[tok[t]]) mem[tok[t]] = tok[t + 1];
        for (int t = 0; t < n; t++) pred[t] = t >= C ? mem[tok[t]] : 0;
        return GDN2_OK;
    }
    if (o->mode == OR_FIRST) { /* constant guess */
        for (int t = 0; t < n; t++) pred[t] = 1;
        return GDN2_OK;
    }
    int twos = 0;
    for (int t = 0; t < n; t++) {
        twos += tok[t] == 2;
        pred[t] = 1 + twos % 2;
        if (tok[t] == 4) { /* modarith '=': value of tok[0..t-1] */
            long sum = 0, term = tok[0] - 5, sign = 1;
            for (int i = 1; i < t; i += 2) {
                int d = tok[i + 1] - 5;
                if (tok[i] == 3) term = term * d % 5;
                else sum += sign * term, sign = tok[i] == 1 ? 1 : -1, term = d;
            }
            sum += sign * term;
            pred[t] = 5 + (int)(((sum % 5) + 5) % 5);
        }
    }
    return GDN2_OK;
}

static void test_protocol(void) {
    char adj[512], noun[512], hay[] = "/tmp/gdn2_test_eval_essayXXXXXX";
    snprintf(adj, sizeof adj, "%s/ruler_adjectivelist.txt", data_dir());
    snprintf(noun, sizeof noun, "%s/ruler_nounlist.txt", data_dir());
    int fd = mkstemp(hay);
    if (fd >= 0) close(fd);
    gdn2_ruler_res r;
    int st = fd < 0 || test_write_text(hay, 20000, 5) ? GDN2_ERR_IO : gdn2_ruler_load(&r, adj, noun, hay);
    if (fd >= 0) unlink(hay);
    CHECK(!st, "NIAH protocol resources: word lists in %s, a generated essay%s%s", data_dir(), st ? ": " : "",
          st ? gdn2_last_error() : "");
    if (!st) {
        oracle o = {OR_ALL, 0, 0, 0, 0};
        gdn2_eval_model em = {&o, 256, oracle_generate, oracle_predict};
        int all100 = 1;
        for (int task = 0; task < GDN2_NIAH_COUNT; task++) {
            gdn2_eval_cell_cfg c = {gdn2_task_find(gdn2_niah_name(task)), 2048, 1, 50, 20, 3, 0, 0, 0, &r};
            gdn2_eval_cell out;
            int st = gdn2_eval_cell_run(&em, &c, &out);
            all100 &= !st && out.score == 100.0 && out.n == 20;
            if (st || out.score != 100.0) printf("  %s: st %d score %.2f (%s)\n", gdn2_niah_name(task), st, out.score, gdn2_last_error());
        }
        CHECK(all100, "a perfect reader scores 100 on all eight NIAH tasks (2K, depth 50, 20 samples)");

        const gdn2_task_info *mv = gdn2_task_find("MV-NIAH"), *s1 = gdn2_task_find("S-NIAH-1"), *s3 = gdn2_task_find("S-NIAH-3");
        gdn2_eval_cell_cfg c = {mv, 2048, 0, 0, 10, 1, 0, 0, 0, &r};
        gdn2_eval_cell out;
        o.mode = OR_FIRST;
        gdn2_eval_cell_run(&em, &c, &out);
        CHECK(out.score == 25.0 && out.score_part == 100.0, "MV-NIAH, one of four values: string_match_all %.1f (25), match_part %.1f (100)",
              out.score, out.score_part);
        o.mode = OR_SILENT;
        c.task = s1;
        gdn2_eval_cell_run(&em, &c, &out);
        CHECK(out.score == 0.0, "a reader that never answers scores 0 (%.1f)", out.score);
        o.mode = OR_LATE;
        gdn2_eval_cell_run(&em, &c, &out);
        double late = out.score;
        o.mode = OR_EXACT;
        gdn2_eval_cell_run(&em, &c, &out);
        CHECK(late == 0.0 && out.score == 100.0, "the max-new-token budget is enforced: answer ending at token max_new+1 -> %.0f, at max_new -> %.0f",
              late, out.score);
        o.mode = OR_ALL;
        c.task = s3, c.n_samples = 1;
        gdn2_eval_cell_run(&em, &c, &out);
        CHECK(out.score == 100.0 && o.steps == 37, "decoding stops once the answer is complete (%d of 64 tokens for ' ' + 36-char UUID)",
              o.steps);
        c.task = s1, c.length = 200;
        CHECK(gdn2_eval_cell_run(&em, &c, &out) == GDN2_ERR_ARG, "length 200 shorter than the NIAH frame: %s", gdn2_last_error());
        gdn2_eval_model small = {&o, 16, oracle_generate, oracle_predict};
        c.length = 2048;
        CHECK(gdn2_eval_cell_run(&small, &c, &out) == GDN2_ERR_ARG && strstr(gdn2_last_error(), "vocab_size"),
              "a vocab-16 model cannot take byte prompts: %s", gdn2_last_error());
        gdn2_ruler_free(&r);
    }

    /* token tasks */
    oracle o = {OR_ALL, 0, 4, 2, 1};
    gdn2_eval_model em = {&o, 256, oracle_generate, oracle_predict};
    gdn2_eval_cell_cfg c = {gdn2_task_find("forgetting-mqar"), 64, 0, 0, 200, 5, 0, 0, 4, NULL};
    gdn2_eval_cell out;
    st = gdn2_eval_cell_run(&em, &c, &out);
    CHECK(!st && out.score == 100.0, "forgetting-MQAR: a memory that overwrites scores %.1f (100)", out.score);
    o.latest = 0;
    gdn2_eval_cell_run(&em, &c, &out);
    CHECK(out.score == 50.0, "forgetting-MQAR: a memory that keeps the first value scores %.1f (exactly 50: 2 of 4 keys updated)",
          out.score);
    o.n_updates = 0;
    c.task = gdn2_task_find("mqar");
    gdn2_eval_cell_run(&em, &c, &out);
    CHECK(out.score == 100.0, "MQAR: associative memory scores %.1f", out.score);
    oracle op = {OR_ALL, 0, 0, 0, 0};
    em.ctx = &op;
    c.task = gdn2_task_find("parity"), c.length = 101;
    st = gdn2_eval_cell_run(&em, &c, &out);
    CHECK(!st && out.score == 100.0 && out.scaled == 1.0, "parity L=101: running count scores %.1f (scaled %.2f)", out.score, out.scaled);
    c.task = gdn2_task_find("modarith");
    st = gdn2_eval_cell_run(&em, &c, &out);
    CHECK(!st && out.score == 100.0, "modarith L=101: evaluator scores %.1f", out.score);
    c.length = 100;
    CHECK(gdn2_eval_cell_run(&em, &c, &out) == GDN2_ERR_ARG, "modarith even length rejected: %s", gdn2_last_error());
    op.mode = OR_FIRST;
    c.task = gdn2_task_find("parity"), c.length = 101;
    gdn2_eval_cell_run(&em, &c, &out);
    CHECK(out.score > 35 && out.score < 65 && out.scaled < 0.3, "parity: a constant guess scores %.1f (chance 50), scaled %.2f", out.score,
          out.scaled);
    gdn2_eval_model small = {&op, 8, NULL, oracle_predict};
    c.task = gdn2_task_find("modarith"), c.length = 41;
    CHECK(gdn2_eval_cell_run(&small, &c, &out) == GDN2_ERR_ARG && strstr(gdn2_last_error(), "vocab"),
          "modarith (vocab 10) on a vocab-8 model rejected: %s", gdn2_last_error());
}

/* ---- CLI ---------------------------------------------------------------------------------- */
static int make_ckpt(const char *path, int vocab) {
    gdn2_model_cfg c;
    if (gdn2_model_config("tiny", &c)) return 1;
    if (vocab) {
        c.vocab_size = vocab;
        if (gdn2_model_check(&c)) return 1;
    }
    gdn2_model *m;
    if (gdn2_model_create(&c, &m)) return 1;
    gdn2_model_init(m, 1);
    int st = gdn2_model_save(m, path);
    gdn2_model_free(m);
    return st;
}

static char g_cli[512]; /* the CLI, absolute */
static int run_cli(const char *args) { return run("%s %s", g_cli, args); }

static void test_cli(void) {
    if (access(cli_path(), X_OK)) {
        CHECK(0, "CLI tests: %s not built or not executable (make; run from the project root, or set GDN2_CLI)", cli_path());
        return;
    }
    char dir[] = "/tmp/gdn2_test_evalXXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "CLI tests: cannot create a temp dir"); return; }
    char ck[600], ck16[600], cmd[8192], words[1100], hay[600], dd[512];
    const char *G = absolute(cli_path(), g_cli);
    snprintf(ck, sizeof ck, "%s/tiny.safetensors", dir);
    snprintf(ck16, sizeof ck16, "%s/tiny16.safetensors", dir);
    absolute(data_dir(), dd);
    snprintf(words, sizeof words, "--adjs %s/ruler_adjectivelist.txt --nouns %s/ruler_nounlist.txt", dd, dd);
    if (make_ckpt(ck, 0) || make_ckpt(ck16, 16)) { CHECK(0, "tiny checkpoints: %s", gdn2_last_error()); return; }
    snprintf(hay, sizeof hay, "%s/essay.txt", dir);
    if (test_write_text(hay, 5000, 7)) return;

    {
        /* a real run: table, JSON, SVG */
        snprintf(cmd, sizeof cmd, "%s eval --model %s --task S-NIAH-1,MK-NIAH-2 --lengths 600,800 --depths 0,100 --samples 2 --seed 3 --out %s/ev %s", G,
                 ck, dir, words);
        int rc = run("%s", cmd);
        CHECK(rc == 0 && strstr(g_out, "niah_single_1") && strstr(g_out, "niah_multikey_2") && strstr(g_out, "score"),
              "gdn2 eval on a (random) tiny checkpoint prints the table (rc %d)", rc);
        char path[700];
        snprintf(path, sizeof path, "%s/ev/eval.json", dir);
        FILE *f = fopen(path, "rb");
        char js[1 << 15] = "";
        if (f) { size_t n = fread(js, 1, sizeof js - 1, f); js[n] = 0; fclose(f); }
        cJSON *root = cJSON_Parse(js);
        cJSON *res = root ? cJSON_GetObjectItem(root, "results") : NULL;
        int ok = res && cJSON_GetArraySize(res) == 2 * 2 * 2;
        for (int i = 0; ok && i < cJSON_GetArraySize(res); i++) {
            cJSON *e = cJSON_GetArrayItem(res, i);
            const char *fields[] = {"task", "length", "depth", "score", "n", "seed", "model_hash"};
            for (int k = 0; k < 7; k++) ok &= cJSON_GetObjectItem(e, fields[k]) != NULL;
            ok &= cJSON_GetObjectItem(e, "n")->valueint == 2 && cJSON_GetObjectItem(e, "seed")->valueint == 3;
            double s = cJSON_GetObjectItem(e, "score")->valuedouble;
            ok &= s >= 0 && s <= 100;
        }
        CHECK(ok, "eval.json: 8 results (2 tasks x 2 lengths x 2 depths) with task, length, depth, score, n, seed, model_hash");
        /* the hash is FNV-1a 64 of the checkpoint bytes */
        FILE *fc = fopen(ck, "rb");
        uint64_t h = 0xcbf29ce484222325ULL;
        int ch;
        while (fc && (ch = fgetc(fc)) != EOF) h = (h ^ (unsigned)ch) * 0x100000001b3ULL;
        if (fc) fclose(fc);
        char want[40];
        snprintf(want, sizeof want, "fnv1a64:%016llx", (unsigned long long)h);
        cJSON *mh = root ? cJSON_GetObjectItem(root, "model_hash") : NULL;
        CHECK(mh && cJSON_IsString(mh) && !strcmp(mh->valuestring, want), "model_hash identifies the checkpoint bytes (%s)", want);
        cJSON_Delete(root);
        struct stat sb;
        snprintf(path, sizeof path, "%s/ev/niah_multikey_2_heatmap.svg", dir);
        CHECK(!stat(path, &sb) && sb.st_size > 500, "heatmap SVG written per task (%s)", path);
        if (need_tool("xmllint", "the eval heatmap is well-formed XML")) {
            snprintf(cmd, sizeof cmd, "xmllint --noout %s", path);
            CHECK(run("%s", cmd) == 0, "eval heatmap is well-formed XML");
        }
        /* bad input */
        snprintf(cmd, sizeof cmd, "%s eval --model %s --task S-NIAH-9 --lengths 600 --out %s/ev %s", G, ck, dir, words);
        CHECK(run("%s", cmd) == 2 && strstr(g_out, "unknown task 'S-NIAH-9'"), "eval: unknown task -> exit 2 with the name");
        snprintf(cmd, sizeof cmd, "%s eval --model %s --task S-NIAH-1 --lengths 200 --samples 1 --out %s/ev %s", G, ck, dir, words);
        CHECK(run("%s", cmd) != 0 && strstr(g_out, "shorter"), "eval: length 200 shorter than the needle prompt -> error");
        snprintf(cmd, sizeof cmd, "%s eval --model %s --task S-NIAH-2 --lengths 600 --out %s/ev %s --haystack %s/nope.txt", G, ck,
                 dir, words, dir);
        CHECK(run("%s", cmd) == 2 && strstr(g_out, "nope.txt"), "eval: missing haystack file -> exit 2 naming it");
        /* the essay haystack: --haystack, else data/tinyshakespeare.txt under the working directory,
         * which the repository does not ship: missing -> exit 2 naming it and scripts/get_data.sh */
        snprintf(cmd, sizeof cmd, "%s eval --model %s --task S-NIAH-2 --lengths 600 --depths 50 --samples 2 --out %s/ev %s --haystack %s", G,
                 ck, dir, words, hay);
        CHECK(run("%s", cmd) == 0 && strstr(g_out, "niah_single_2"), "eval: essay task with --haystack (a generated text) runs");
        snprintf(cmd, sizeof cmd, "cd %s && %s eval --model %s --task S-NIAH-2 --lengths 600 --depths 50 --samples 1 --out %s/ev %s", dir,
                 G, ck, dir, words);
        CHECK(run("%s", cmd) == 2 && strstr(g_out, "data/tinyshakespeare.txt") && strstr(g_out, "sh scripts/get_data.sh") &&
                  strstr(g_out, "--haystack"),
              "eval: essay task, no --haystack, no data/tinyshakespeare.txt -> exit 2 naming it and how to get it: %s",
              strtok(g_out, "\n") ? g_out : "(no output)");
        snprintf(cmd, sizeof cmd, "mkdir -p %s/data && cp %s %s/data/tinyshakespeare.txt && cd %s && %s eval --model %s --task S-NIAH-2 "
                 "--lengths 600 --depths 50 --samples 1 --out %s/ev %s",
                 dir, hay, dir, dir, G, ck, dir, words);
        CHECK(run("%s", cmd) == 0 && strstr(g_out, "niah_single_2"), "eval: essay task, no --haystack -> data/tinyshakespeare.txt is read");
        snprintf(cmd, sizeof cmd, "rm -rf %s/data", dir);
        if (system(cmd)) {}
        snprintf(cmd, sizeof cmd, "%s eval --model %s --task S-NIAH-1 --lengths 600 --samples 1 --out %s/ev %s", G, ck16, dir, words);
        CHECK(run("%s", cmd) != 0 && strstr(g_out, "vocab_size 16"), "eval: a vocab-16 checkpoint on byte-level NIAH -> config mismatch error");
        snprintf(cmd, sizeof cmd, "%s eval --model %s --task S-NIAH-1 --lengths 600 --adjs %s/none.txt --out %s/ev", G, ck, dir, dir);
        CHECK(run("%s", cmd) == 2 && strstr(g_out, "none.txt"), "eval: missing word list -> exit 2 naming it");
        snprintf(cmd, sizeof cmd, "%s eval --model %s --task S-NIAH-1 --lengths 600 --depths 0,150 --out %s/ev %s", G, ck, dir, words);
        CHECK(run("%s", cmd) == 2 && strstr(g_out, "150"), "eval: depth 150 -> exit 2");
    }
    snprintf(cmd, sizeof cmd, "%s eval --model %s --task mqar,parity --lengths 65 --samples 4 --out %s/ev2", G, ck16, dir);
    int rc = run("%s", cmd);
    CHECK(rc != 0 && strstr(g_out, "even"), "eval: MQAR with an odd length -> error (rc %d)", rc);
    snprintf(cmd, sizeof cmd, "%s eval --model %s --task fmqar,parity --lengths 64 --samples 4 --out %s/ev2", G, ck16, dir);
    rc = run("%s", cmd);
    CHECK(rc == 0 && strstr(g_out, "forgetting-mqar") && strstr(g_out, "parity"), "eval: token tasks on a vocab-16 checkpoint run (rc %d)", rc);
    snprintf(cmd, sizeof cmd, "%s eval --model %s --task mqar --vocab 256 --lengths 64 --out %s/ev2", G, ck16, dir);
    CHECK(run("%s", cmd) != 0 && strstr(g_out, "exceeds"), "eval: MQAR vocab 256 on a vocab-16 checkpoint -> config mismatch");
    snprintf(cmd, sizeof cmd, "%s eval --model %s/missing.safetensors --task mqar --lengths 64 --out %s/ev2", G, dir, dir);
    CHECK(run("%s", cmd) == 2 && strstr(g_out, "missing.safetensors"), "eval: missing checkpoint -> exit 2 naming it");
    snprintf(cmd, sizeof cmd, "echo 'not a checkpoint' > %s/bad.safetensors; %s eval --model %s/bad.safetensors --task mqar --lengths 64 --out %s/ev2",
             dir, G, dir, dir);
    CHECK(run("%s", cmd) == 2, "eval: a file that is not a checkpoint -> exit 2");
    CHECK(run_cli("eval --task mqar") == 2 && strstr(g_out, "required"), "eval: missing --model -> usage, exit 2");

    /* gdn2 task */
    CHECK(run_cli("task show mqar --len 64 --seed 1") == 0 && strstr(g_out, "answers:") && strstr(g_out, "targets:"),
          "task show mqar prints tokens, targets, answers");
    {
        snprintf(cmd, sizeof cmd, "%s task show S-NIAH-1 --len 1024 --seed 2 --depth 50 %s", G, words);
        CHECK(run("%s", cmd) == 0 && strstr(g_out, "answers (1):") && strstr(g_out, "The grass is green. The sky is blue.") &&
                  strstr(g_out, "mentioned in the provided text is"),
              "task show S-NIAH-1 prints the prompt and its answer");
        snprintf(cmd, sizeof cmd, "%s task show S-NIAH-1 --len 100 %s", G, words);
        CHECK(run("%s", cmd) == 2 && strstr(g_out, "shorter"), "task show: length shorter than the needle -> exit 2");
        snprintf(cmd, sizeof cmd, "cd %s && %s task show S-NIAH-3 --len 2048 %s", dir, G, words);
        CHECK(run("%s", cmd) == 2 && strstr(g_out, "data/tinyshakespeare.txt") && strstr(g_out, "sh scripts/get_data.sh"),
              "task show: essay task, no --haystack, no data/tinyshakespeare.txt -> exit 2 naming it and how to get it");
        snprintf(cmd, sizeof cmd, "mkdir -p %s/data && cp %s %s/data/tinyshakespeare.txt && cd %s && %s task show S-NIAH-3 --len 2048 %s",
                 dir, hay, dir, dir, G, words);
        CHECK(run("%s", cmd) == 0 && strstr(g_out, GENTEXT_OPENING_COLLAPSED),
              "task show: essay task, no --haystack -> the haystack is data/tinyshakespeare.txt");
        snprintf(cmd, sizeof cmd, "%s task show S-NIAH-3 --len 2048 --haystack %s %s", G, hay, words);
        CHECK(run("%s", cmd) == 0 && strstr(g_out, GENTEXT_OPENING_COLLAPSED) && strstr(g_out, "uuid"),
              "task show S-NIAH-3 --haystack FILE: the prompt's haystack is FILE's text");
        /* the word lists default to data/ruler_*.txt (shipped) */
        CHECK(run_cli("task show S-NIAH-1 --len 1024 --seed 4") == 0 && strstr(g_out, "answers (1):"),
              "task show S-NIAH-1 without --adjs / --nouns reads the shipped data/ word lists");
        snprintf(cmd, sizeof cmd, "%s task show S-NIAH-3 --len 2048 --haystack /nonexistent/pg.txt %s", G, words);
        CHECK(run("%s", cmd) == 2 && strstr(g_out, "/nonexistent/pg.txt"), "task show: missing haystack file -> exit 2 naming it");
    }
    CHECK(run_cli("task show no-such-task") == 2 && strstr(g_out, "unknown task"), "task show: unknown task -> exit 2");
    CHECK(run_cli("task show parity --len 2") == 2, "task show: parity length 2 -> exit 2");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
}

int main(void) {
    test_protocol();
    test_cli();
    return test_summary();
}
