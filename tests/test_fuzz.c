/* The fuzzers' inputs through the normal build (tests/fuzz/: make fuzz runs them under libFuzzer
 * with clang; this replays them with whatever compiler built the suite, so every finding stays
 * fixed without clang):
 *   - every seed of tests/fuzz/corpus/ loads (they are valid files, except one truncated copy);
 *   - every input in tests/fuzz/regressions/ (what a fuzzer found, or a hostile file written
 *     after it) is refused with an error naming the problem: the table below gives the words
 *     the message must contain; an input not in the table must be handled (refused, or loaded
 *     and, for a config, loaded the same again after gdn2_model_config_to_json) without a crash. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "gdn2.h"

#define FUZZ_DIR "tests/fuzz"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) free(s), s = NULL;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

#define RC_UNSTABLE (-2)

/* What the checkpoint fuzzer does with one input (without its invariant aborts): a config JSON
 * (first byte '{'), else a model file, and an optimizer file of 16 parameters when it says adamw. */
static int load_checkpoint_input(const char *path, const char *name) {
    char *text = slurp(path);
    if (!text) return -1;
    int rc;
    if (text[0] == '{') {
        /* as fuzz_checkpoint: a config that loads passes gdn2_model_check again and survives
         * to_json -> from_json unchanged (else RC_UNSTABLE) */
        gdn2_model_cfg c, chk, back;
        rc = gdn2_model_config_from_json(text, &c);
        if (!rc) {
            chk = c;
            char *j = gdn2_model_config_to_json(&c);
            if (gdn2_model_check(&chk) || !j || gdn2_model_config_from_json(j, &back) || memcmp(&c, &back, sizeof c)) {
                fprintf(stderr, "%s: the config loads but %s\n", path, j ? j : "cannot be written");
                rc = RC_UNSTABLE;
            }
            free(j);
        }
    } else if (strstr(name, "adamw")) {
        gdn2_adamw o;
        gdn2_adamw_cfg oc = gdn2_adamw_default();
        char *train = NULL;
        rc = gdn2_adamw_init(&o, &oc, 16);
        if (!rc) rc = gdn2_adamw_load(&o, path, &train);
        free(train);
        gdn2_adamw_free(&o);
    } else {
        gdn2_model *m = NULL;
        rc = gdn2_model_load(path, &m);
        gdn2_model_free(m);
    }
    free(text);
    return rc;
}

static int load_safetensors_input(const char *path) {
    gdn2_st st;
    int rc = gdn2_st_read(path, &st);
    if (!rc) gdn2_st_free(&st);
    return rc;
}

static int load_input(const char *target, const char *path, const char *name) {
    return !strcmp(target, "fuzz_checkpoint") ? load_checkpoint_input(path, name) : load_safetensors_input(path);
}

/* regression input -> the words its error message must contain ('|' separates words that must all
 * appear, in any order: the wording of a range error may change, the key and value may not) */
static const struct {
    const char *name, *words;
} k_expect[] = {
    {"config_int_cast_overflow.json", "'gdn2_head_dim'|not an integer"},
    {"config_width_overflow.json", "gdn2_num_heads|4294967296"},
    {"config_rope_base_inf.json", "rope_base|finite"},
    {"model_huge_config_tiny_file.safetensors", "parameters but the file holds only"},
    {"shape_product_overflow.safetensors", "'x'|too large"},
    {"header_length_max.safetensors", "header length 18446744073709551615|exceeds the file size"},
};

static int has_words(const char *msg, const char *words) {
    char w[256];
    for (const char *p = words; *p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        snprintf(w, sizeof w, "%.*s", (int)n, p);
        if (!strstr(msg, w)) return 0;
        p += n + (bar != NULL);
    }
    return 1;
}

static void replay(const char *target, int regressions) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s/%s", FUZZ_DIR, regressions ? "regressions" : "corpus", target);
    DIR *d = opendir(dir);
    CHECK(d != NULL, "%s exists", dir);
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        n++;
        int rc = load_input(target, path, e->d_name);
        const char *msg = rc ? gdn2_last_error() : "";
        if (!regressions) {
            if (ends_with(e->d_name, "_truncated.safetensors"))
                CHECK(rc && strstr(msg, "beyond the data section"), "seed %s is refused as truncated: %s", path, msg);
            else
                CHECK(rc == 0, "seed %s loads%s%s", path, rc ? ": " : "", msg);
            continue;
        }
        const char *words = NULL;
        for (size_t i = 0; i < sizeof k_expect / sizeof k_expect[0]; i++)
            if (!strcmp(k_expect[i].name, e->d_name)) words = k_expect[i].words;
        if (words)
            CHECK(rc && has_words(msg, words), "regression %s refused with \"%s\" (got rc %d: %s)", path, words, rc, msg);
        else
            CHECK(rc != RC_UNSTABLE, "regression %s handled (rc %d%s%s)", path, rc, rc ? ": " : "", msg);
    }
    closedir(d);
    CHECK(n > 0, "%s holds inputs (%d)", dir, n);
}

int main(void) {
    const char *targets[] = {"fuzz_safetensors", "fuzz_checkpoint"};
    for (int t = 0; t < 2; t++) {
        replay(targets[t], 0);
        replay(targets[t], 1);
    }
    return test_summary();
}
