/* The repository is self-contained (issue 11 A):
 *   - the official fixtures ship in tests/fixtures/official (GDN2_FIXTURES overrides), and a missing
 *     one is a FAIL of the test that reads it, never a SKIP;
 *   - RULER's word lists ship in data/;
 *   - nothing in src/, include/, tests/, bench/, experiments/ or the Makefile refers to the recipe
 *     package that used to sit beside the project;
 *   - the commands that read a text (train --task text, demo --shakespeare, quantize) default to
 *     data/tinyshakespeare.txt, which is not shipped: missing -> exit 2 naming it and
 *     `sh scripts/get_data.sh`; present -> read (eval / task: tests/test_eval.c);
 *   - scripts/get_data.sh writes the file only when its size is right, through a temporary name.
 * The CLI runs from a temporary working directory so that the project's own data/ is not seen. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "cli_run.h"
#include "fixture.h"
#include "gdn2.h"
#include "gentext.h"

/* entries in dir/sub (-1: cannot open) */
static int count_entries(const char *dir, const char *sub) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, sub);
    DIR *d = opendir(p);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}
static long file_size(const char *p) {
    struct stat sb;
    return stat(p, &sb) ? -1 : (long)sb.st_size;
}

/* ---- fixtures and word lists ------------------------------------------------------------- */
static void test_shipped(void) {
    static const char *const fx[] = {"op_small.safetensors", "op_gate_in_kernel.safetensors", "op_gva.safetensors",
                                     "layer.safetensors", "model.safetensors"};
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        gdn2_st st;
        if (fixture_read(fx[i], &st)) {
            CHECK(st.n_tensors > 0 && gdn2_st_meta(&st, "meta"), "fixture %s: %d tensors and its meta", fx[i], st.n_tensors);
            gdn2_st_free(&st);
        }
    }
    char p[600];
    snprintf(p, sizeof p, "%s/README.md", fixture_dir());
    CHECK(file_size(p) > 0, "%s: the fixtures' provenance", p);
    static const char *const dl[] = {"ruler_adjectivelist.txt", "ruler_nounlist.txt", "README.md"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", data_dir(), dl[i]);
        CHECK(file_size(p) > 1000, "%s shipped (%ld bytes)", p, file_size(p));
    }

    /* a missing fixture is one FAIL (not a SKIP) naming its path: fixture_read in a child whose
     * counters are returned through the exit status, with GDN2_FIXTURES pointing at an empty dir */
    char dir[] = "/tmp/gdn2_test_nofixXXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    char log[600];
    snprintf(log, sizeof log, "%s/out.txt", dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(log, "w", stdout)) _exit(99);
        setenv("GDN2_FIXTURES", dir, 1);
        g_pass = g_fail = g_skip = 0;
        gdn2_st st;
        int ok = fixture_read("op_small.safetensors", &st);
        fflush(stdout);
        _exit(ok ? 98 : g_fail * 10 + g_skip);
    }
    int ws = 0;
    while (pid > 0 && waitpid(pid, &ws, 0) < 0) {}
    FILE *f = fopen(log, "r");
    char line[1024] = "";
    if (f) { if (!fgets(line, sizeof line, f)) line[0] = 0; fclose(f); }
    line[strcspn(line, "\n")] = 0;
    char want[600];
    snprintf(want, sizeof want, "%s/op_small.safetensors", dir);
    CHECK(pid > 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 10 && !strncmp(line, "FAIL ", 5) && strstr(line, want),
          "GDN2_FIXTURES=<empty dir>: a missing fixture is 1 FAIL and 0 SKIP naming the path (%s)", line);
    remove(log);
    rmdir(dir);
}

/* ---- the source tree: no path into the recipe package beside the project ------------------ */
static void test_no_outside_paths(void) {
    /* the pattern is written so that this file does not match it */
    int rc = run("grep -rnE '[.][.]/sha[r]ed' src include tests bench experiments Makefile .ci scripts");
    CHECK(rc == 1, "no reference to the recipe package beside the project in src include tests bench experiments "
                   "Makefile .ci scripts (grep rc %d)%s%s", rc, rc == 0 ? ": " : "", rc == 0 ? first_line() : "");
}

/* ---- default text: missing -> exit 2 with how to get it; present -> read ------------------ */
static void test_default_text(void) {
    char cli[512], dir[] = "/tmp/gdn2_test_datafilesXXXXXX", cmd[4096], ck[600], txt[600];
    absolute(cli_path(), cli);
    if (access(cli, X_OK)) {
        CHECK(0, "%s not built or not executable (make; or set GDN2_CLI)", cli);
        return;
    }
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    snprintf(ck, sizeof ck, "%s/tiny.safetensors", dir);
    gdn2_model_cfg c;
    gdn2_model *m = NULL;
    int st = gdn2_model_config("tiny", &c);
    if (!st) st = gdn2_model_create(&c, &m);
    if (!st) gdn2_model_init(m, 1), st = gdn2_model_save(m, ck);
    gdn2_model_free(m);
    CHECK(!st, "a tiny checkpoint for quantize%s%s", st ? ": " : "", st ? gdn2_last_error() : "");

    /* no data/ in the working directory */
    static const struct { const char *name, *args, *flag; } cmds[] = {
        {"train", "train --steps 2 --batch 2 --seq-len 32 --quiet", "--data"},
        {"train --task text", "train --task text --steps 2", "--data"},
        {"demo --shakespeare", "demo --shakespeare --steps 1", "--data"},
        {"quantize", "quantize --model tiny.safetensors --bits 8", "--data"},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        snprintf(cmd, sizeof cmd, "cd %s && %s %s", dir, cli, cmds[i].args);
        int rc = run("%s", cmd);
        CHECK(rc == 2 && strstr(g_out, "data/tinyshakespeare.txt") && strstr(g_out, "sh scripts/get_data.sh") &&
                  strstr(g_out, cmds[i].flag) && !strstr(g_out, "MQAR"),
              "%s without data/tinyshakespeare.txt: exit %d (2), names the file, scripts/get_data.sh and %s: %s",
              cmds[i].name, rc, cmds[i].flag, first_line());
    }
    snprintf(cmd, sizeof cmd, "cd %s && %s train --help", dir, cli);
    CHECK(run("%s", cmd) == 0 && strstr(g_out, "data/tinyshakespeare.txt") && strstr(g_out, "get_data.sh"),
          "train --help names the default text and scripts/get_data.sh");

    /* data/tinyshakespeare.txt present (a generated text): read by default */
    snprintf(cmd, sizeof cmd, "%s/data", dir);
    mkdir(cmd, 0755);
    snprintf(txt, sizeof txt, "%s/data/tinyshakespeare.txt", dir);
    if (test_write_text(txt, 20000, 3) == 0) {
        snprintf(cmd, sizeof cmd, "cd %s && %s train --steps 2 --batch 2 --seq-len 32 --eval-batches 1 --quiet", dir, cli);
        int rc = run("%s", cmd);
        CHECK(rc == 0, "train with the default text present: exit %d: %s", rc, first_line());
        snprintf(cmd, sizeof cmd, "cd %s && %s quantize --model tiny.safetensors --bits 8 --max-bytes 256", dir, cli);
        rc = run("%s", cmd);
        CHECK(rc == 0, "quantize with the default text present: exit %d: %s", rc, first_line());
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
}

/* ---- scripts/get_data.sh: size checked, temporary name, nothing left on failure ------------ */
static void test_get_data(void) {
    char dir[] = "/tmp/gdn2_test_getdataXXXXXX", cmd[2048], src[600], dest[600];
    if (access("scripts/get_data.sh", R_OK)) {
        CHECK(0, "scripts/get_data.sh missing (run the tests from the project root)");
        return;
    }
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    snprintf(dest, sizeof dest, "%s/out/tinyshakespeare.txt", dir);
    /* a source of the wrong size (a truncated download): exit 1, nothing written, no temp file */
    snprintf(src, sizeof src, "%s/short.txt", dir);
    test_write_text(src, 1000, 1);
    snprintf(cmd, sizeof cmd, "GDN2_DATA=%s/out sh scripts/get_data.sh %s", dir, src);
    int rc = run("%s", cmd);
    CHECK(rc == 1 && strstr(g_out, "expected 1115394") && file_size(dest) < 0 && count_entries(dir, "out") == 0,
          "get_data.sh, a source of the wrong size: exit %d (1), nothing left in the data folder: %s", rc, first_line());
    /* a source of the right size: written (same bytes), no temp file; a second run keeps it */
    snprintf(src, sizeof src, "%s/right.txt", dir);
    FILE *f = fopen(src, "wb");
    for (long i = 0; f && i < 1115394; i++) fputc("abcdefghij klmnopqrstuvwxyz.\n"[i % 29], f);
    if (f) fclose(f);
    snprintf(cmd, sizeof cmd, "GDN2_DATA=%s/out sh scripts/get_data.sh %s", dir, src);
    rc = run("%s", cmd);
    CHECK(rc == 0 && file_size(dest) == 1115394 && count_entries(dir, "out") == 1,
          "get_data.sh, a source of the right size: exit %d, %s written (%ld bytes), no temp file", rc, dest,
          file_size(dest));
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", src, dest);
    CHECK(run("%s", cmd) == 0, "get_data.sh: the written file is the source's bytes");
    snprintf(cmd, sizeof cmd, "GDN2_DATA=%s/out sh scripts/get_data.sh /nonexistent/source.txt", dir);
    rc = run("%s", cmd);
    CHECK(rc == 0 && strstr(g_out, "already there") && file_size(dest) == 1115394,
          "get_data.sh with the file already there: exit %d, kept: %s", rc, first_line());
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
}

int main(void) {
    test_shipped();
    test_no_outside_paths();
    test_default_text();
    test_get_data();
    return test_summary();
}
