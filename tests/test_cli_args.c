/* The CLI's argument parser and pre-flight checks (src/cli/args.c), end to end: runs the CLI
 * (cli_path(): build/gdn2, env GDN2_CLI) with bad input for every command (train, generate,
 * quantize, demo, eval, layer, forward, op, task, tokens) and checks the exit status (2 bad usage or input,
 * 1 a write that cannot succeed, never a signal) and that the message names the option or file and
 * the value; then good values, which must still be accepted. Every refusal happens before any heavy
 * work, so the whole program runs in seconds. Also the library side: gdn2_text_load on a directory. */
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "cli_run.h"
#include "gdn2.h"
#include "gdn2_model.h"
#include "gdn2_text.h"
#include "st_edit.h"

/* run, then check the exit status and that the output names must1 and must2 (NULL: anything) */
static void expect(int want, const char *must1, const char *must2, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int rc = run("'%s' %s", cli_path(), args);
    CHECK(rc == want && (!must1 || strstr(g_out, must1)) && (!must2 || strstr(g_out, must2)),
          "gdn2 %.100s -> exit %d (want %d, naming %s%s%s): %s", args, rc, want, must1 ? must1 : "-",
          must2 ? " and " : "", must2 ? must2 : "", first_line());
}
#define EXPECT expect

/* a random, untrained `tiny` byte-level checkpoint through the library API (no training) */
static int make_ckpt(const char *path) {
    gdn2_model_cfg c;
    gdn2_model *m;
    if (gdn2_model_config("tiny", &c) || gdn2_model_create(&c, &m)) return 1;
    gdn2_model_init(m, 1);
    int st = gdn2_model_save(m, path);
    gdn2_model_free(m);
    return st;
}

/* a text file made here (no text written by others): 40 KB of pseudo-random lowercase words */
static int make_text(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    unsigned long long s = 7;
    for (int i = 0; i < 8000; i++) {
        int len = 1 + (int)(test_rng_next(&s) % 7);
        for (int j = 0; j < len; j++) fputc('a' + (int)(test_rng_next(&s) % 26), f);
        fputc(i % 12 == 11 ? '\n' : ' ', f);
    }
    return fclose(f) != 0;
}

static void test_train(const char *text, const char *nodir) {
    const char *mq = "train --task mqar --batch 2 --seq-len 16 --mqar-pairs 2 --steps 1 --eval-samples 2 --quiet";
    /* the findings of the issue: each was accepted (or crashed) before */
    EXPECT(2, "--lr", "\"abc\"", "%s --lr abc", mq);
    EXPECT(2, "--steps", "abc", "train --task mqar --steps abc --quiet");
    EXPECT(2, "--mqar-vocab", "4294967552", "%s --mqar-vocab 4294967552", mq);
    EXPECT(2, "--threads", "-7", "%s --threads -7", mq);
    char big[32]; /* one more than the most --threads accepts: 4 x the online CPUs, at most 1024 */
    long lim = 4 * sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(big, sizeof big, "%ld", lim >= 1024 ? 1025 : lim + 1);
    EXPECT(2, "--threads", big, "%s --threads %s", mq, big);
    EXPECT(2, "--eval-samples", "\"0\"", "train --task mqar --batch 2 --seq-len 16 --mqar-pairs 2 --steps 1 --quiet --eval-samples 0");
    EXPECT(2, "--accum", "1e9", "%s --accum 1e9", mq);
    /* sizes: parsed, then refused for the memory they need, before any allocation */
    EXPECT(2, "memory", "--seq-len 100000000", "train --task mqar --seq-len 1e8 --steps 1 --quiet");
    EXPECT(2, "memory", "--seq-len", "train --data %s --seq-len 100000000 --steps 1 --quiet", text);
    EXPECT(2, "memory", "--batch 1000000", "train --task mqar --batch 1e6 --seq-len 1e6 --steps 1 --quiet");
    /* numbers: NaN, inf, overflow, trailing garbage, hex, empty */
    EXPECT(2, "--lr", "nan", "%s --lr nan", mq);
    EXPECT(2, "--lr", "inf", "%s --lr inf", mq);
    EXPECT(2, "--lr", "1e999", "%s --lr 1e999", mq);
    EXPECT(2, "--lr", "-1", "%s --lr -1", mq);
    EXPECT(2, "--wd", "0x10", "%s --wd 0x10", mq);
    EXPECT(2, "--clip", "1.0x", "%s --clip 1.0x", mq);
    EXPECT(2, "--batch", "2.5", "%s --batch 2.5", mq);
    EXPECT(2, "--seed", "99999999999999999999", "%s --seed 99999999999999999999", mq);
    EXPECT(2, "--target-acc", "1.5", "%s --target-acc 1.5", mq);
    EXPECT(2, "--time-limit", "nan", "%s --time-limit nan", mq);
    EXPECT(2, "--batch", "\"\"", "%s --batch ''", mq);
    EXPECT(2, "--task", "bogus", "train --task bogus --steps 1 --quiet");
    /* unknown option, missing value, a flag with a value */
    EXPECT(2, "--frobnicate", NULL, "%s --frobnicate", mq);
    EXPECT(2, "--lr", "missing", "%s --lr", mq);
    EXPECT(2, "--quiet", "takes no value", "%s --quiet=1", mq);
    /* files: a directory as the data file; an output directory that does not exist (a failed write: 1) */
    EXPECT(2, "not a regular file", g_dir, "train --data %s --steps 1 --quiet", g_dir);
    EXPECT(1, "does not exist", nodir, "%s -o %s/ck.safetensors", mq, nodir);
    EXPECT(1, "not a regular file", g_dir, "%s -o %s", mq, g_dir);
    /* task tokens: its options' ranges, a pattern matching nothing, a text that is not a shard */
    EXPECT(2, "--vocab", "\"0\"", "train --task tokens --data x.bin --vocab 0 --steps 1 --quiet");
    EXPECT(2, "--vocab", "16777217", "train --task tokens --data x.bin --vocab 16777217 --steps 1 --quiet");
    EXPECT(2, "no file matches", "nothing_*.bin", "train --task tokens --data '%s/nothing_*.bin' --steps 1 --quiet", g_dir);
    EXPECT(2, "bad magic", text, "train --task tokens --data %s --steps 1 --quiet", text);
    EXPECT(2, "needs --data", NULL, "train --task tokens --steps 1 --quiet");
    EXPECT(2, "only to --task tokens", NULL, "%s --shuffle-shards", mq);

    /* good values are still accepted: scientific integers, --name=value, 64-bit seeds */
    const char *ck = path_in("trained.safetensors");
    EXPECT(0, NULL, NULL, "%s --steps 2e0 --lr=1e-3 --seed 9223372036854775807 --threads 1 --accum 2 -o %s", mq, ck);
    struct stat sb;
    CHECK(!stat(ck, &sb) && sb.st_size > 0, "train wrote the checkpoint %s", ck);
    EXPECT(0, NULL, NULL, "train --data %s --batch 2 --seq-len 16 --steps 1 --eval-batches 1 --threads 1 --quiet", text);
}

static void test_generate(const char *ck, const char *nodir) {
    (void)nodir;
    /* -n 1e15 segfaulted (NULL ids after a failed malloc, signed overflow in P + n) */
    EXPECT(2, "-n", "memory", "generate %s -n 1000000000000000", ck);
    EXPECT(2, "-n", "memory", "generate %s -n 1e15", ck);
    EXPECT(2, "-n", "9223372036854775807", "generate %s -n 9223372036854775807", ck);
    EXPECT(2, "--temperature", "nan", "generate %s -n 1 --temperature nan", ck);
    EXPECT(2, "--temperature", "-1", "generate %s -n 1 --temperature -1", ck);
    EXPECT(2, "--top-k", "-1", "generate %s -n 1 --top-k -1", ck);
    EXPECT(2, "--threads", "abc", "generate %s -n 1 --threads abc", ck);
    EXPECT(2, "--samples", "0", "generate %s -n 1 --samples 0", ck);
    EXPECT(2, "-n", "abc", "generate %s -n abc", ck);
    EXPECT(2, "--prompt", "non-empty", "generate %s -n 1 --prompt ''", ck);
    EXPECT(2, "not a regular file", g_dir, "generate %s -n 1", g_dir);
    EXPECT(2, "--bogus", NULL, "generate %s --bogus", ck);
    EXPECT(2, "unexpected argument", "extra", "generate %s extra -n 1", ck);
    EXPECT(0, "ab", NULL, "generate %s -n 3 --prompt ab --temperature 0 --top-k 0 --seed 5 --threads 1", ck);
    EXPECT(2, "--cuda-graph", "maybe", "generate %s -n 1 --cuda-graph maybe", ck);
    EXPECT(0, "ab", NULL, "generate %s -n 3 --prompt ab --temperature 0 --cuda-graph off", ck); /* no effect on the CPU */
}

static void test_quantize(const char *ck, const char *text, const char *nodir) {
    const char *mq = "--bits 8 --task mqar --seq-len 16 --pairs 2 --samples 2 --threads 1";
    EXPECT(2, "memory", "--seq-len", "quantize --model %s --bits 8 --task mqar --seq-len 1e8", ck);
    EXPECT(2, "not a regular file", g_dir, "quantize --model %s --bits 8 --data %s", ck, g_dir);
    EXPECT(2, "not a regular file", g_dir, "quantize --model %s --bits 8 --task mqar", g_dir);
    EXPECT(1, "does not exist", nodir, "quantize --model %s %s -o %s/q.safetensors", ck, mq, nodir);
    EXPECT(2, "--bits", "6", "quantize --model %s --bits 6", ck);
    EXPECT(2, "--group", "0", "quantize --model %s --bits 4 --group 0", ck);
    EXPECT(2, "--threads", "-1", "quantize --model %s %s --threads -1", ck, mq);
    EXPECT(2, "--samples", "1e30", "quantize --model %s %s --samples 1e30", ck, mq);
    EXPECT(2, "--max-bytes", "1", "quantize --model %s --bits 8 --max-bytes 1", ck);
    EXPECT(0, "mqar acc", NULL, "quantize --model %s %s", ck, mq);
    /* a window longer than the validation split is the split (not a 16 x 1e9 buffer) */
    EXPECT(0, "nats/byte", NULL, "quantize --model %s --bits 4 --data %s --seq-len 1e9 --threads 1", ck, text);
}

static void test_demo(const char *nodir) {
    EXPECT(2, "--steps", "abc", "demo --steps abc");
    EXPECT(2, "--threads", "100000", "demo --steps 1 --threads 100000"); /* segfaulted */
    EXPECT(2, "--time-limit", "nan", "demo --steps 1 --time-limit nan");
    EXPECT(2, "--seed", "-1", "demo --steps 1 --seed -1");
    EXPECT(2, "not a regular file", g_dir, "demo --shakespeare --steps 1 --sh-steps 1 --data %s", g_dir);
    EXPECT(1, nodir, NULL, "demo --steps 1 --out %s", nodir);
    EXPECT(2, "--shakespear", NULL, "demo --shakespear");
}

static void test_eval(const char *ck, const char *nodir) {
    const char *base = "--task mqar --samples 2 --threads 1";
    EXPECT(2, "--samples", "\"0\"", "eval --model %s --task mqar --lengths 32 --samples 0 --out %s/ev", ck, g_dir);
    EXPECT(2, "memory", "--lengths 1000000000", "eval --model %s %s --lengths 1e9 --out %s/ev", ck, base, g_dir);
    EXPECT(2, "--lengths", "abc", "eval --model %s %s --lengths 32,abc --out %s/ev", ck, base, g_dir);
    EXPECT(2, "--lengths", "empty item", "eval --model %s %s --lengths 32,,64 --out %s/ev", ck, base, g_dir);
    EXPECT(2, "--task", "empty item", "eval --model %s --task mqar, --lengths 32 --out %s/ev", ck, g_dir);
    EXPECT(2, "--cuda-graph", "yes", "eval --model %s %s --lengths 32 --cuda-graph yes --out %s/ev", ck, base, g_dir);
    EXPECT(2, "--lengths", "4294967328", "eval --model %s %s --lengths 4294967328 --out %s/ev", ck, base, g_dir);
    EXPECT(2, "--depths", "nan", "eval --model %s --task S-NIAH-1 --lengths 600 --depths 0,nan --out %s/ev", ck, g_dir);
    EXPECT(2, "--threads", "5000", "eval --model %s %s --lengths 32 --threads 5000 --out %s/ev", ck, base, g_dir);
    EXPECT(2, "--vocab", "4294967552", "eval --model %s %s --lengths 32 --vocab 4294967552 --out %s/ev", ck, base, g_dir);
    EXPECT(2, "not a regular file", g_dir, "eval --model %s %s --lengths 32 --out %s/ev", g_dir, base, g_dir);
    EXPECT(2, "not a regular file", g_dir, "eval --model %s --task S-NIAH-1 --lengths 600 --adjs %s --out %s/ev", ck, g_dir, g_dir);
    EXPECT(1, "--out", nodir, "eval --model %s %s --lengths 32 --out %s/sub", ck, base, nodir);
    EXPECT(2, "--model", "missing", "eval --task mqar --lengths 32 --model");
    EXPECT(0, "mqar", NULL, "eval --model %s %s --lengths 32 --seed 1e3 --out %s/ev", ck, base, g_dir);
}

static void test_files_cmds(const char *nodir) {
    char layer[512], model[512], op[512];
    snprintf(layer, sizeof layer, "%s/layer.safetensors", fixture_dir());
    snprintf(model, sizeof model, "%s/model.safetensors", fixture_dir());
    snprintf(op, sizeof op, "%s/op_small.safetensors", fixture_dir());
    CHECK(!access(layer, R_OK) && !access(model, R_OK) && !access(op, R_OK), "fixtures in %s", fixture_dir());
    const char *out = path_in("out.safetensors");
    /* layer */
    EXPECT(2, "--threads", "abc", "layer %s -o %s --threads abc", layer, out);
    EXPECT(2, "--kernel", "fast", "layer %s -o %s --kernel fast", layer, out);
    EXPECT(2, "-o", NULL, "layer %s", layer);
    EXPECT(2, "not a regular file", g_dir, "layer %s -o %s", g_dir, out);
    EXPECT(1, "does not exist", nodir, "layer %s -o %s/y.safetensors", layer, nodir);
    EXPECT(2, "unexpected argument", NULL, "layer %s %s -o %s", layer, layer, out);
    EXPECT(0, "wrote", NULL, "layer %s --out=%s --kernel reference --threads 1", layer, out);
    const char *lnan = path_in("layer_nan.safetensors");
    CHECK(st_copy_changed(layer, lnan, NULL, NULL, "x", 1, 0) == 0, "a copy of the layer fixture with a NaN in x");
    EXPECT(2, "x[0,0,0] = nan", NULL, "layer %s -o %s", lnan, out);
    /* forward */
    EXPECT(2, "--threads", "1x", "forward %s -o %s --threads 1x", model, out);
    EXPECT(2, "-o", "missing", "forward %s -o", model);
    EXPECT(2, "--kernel", "fast", "forward %s -o %s --kernel fast", model, out);
    EXPECT(1, "does not exist", nodir, "forward %s -o %s/f.safetensors", model, nodir);
    EXPECT(0, "loss", NULL, "forward %s --out %s --threads 1", model, out);
    const char *t1 = path_in("model_t1.safetensors");
    CHECK(st_copy_changed(model, t1, NULL, NULL, "tokens", 0, 0) == 0, "a copy of the model fixture with tokens [1,1]");
    EXPECT(2, "T >= 2", NULL, "forward %s -o %s", t1, out);
    /* op (option parsing; the numerics are test_cli_op's) */
    char big[32];
    long lim = 4 * sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(big, sizeof big, "%ld", lim >= 1024 ? 1025 : lim + 1);
    EXPECT(2, "--threads", big, "op %s -o %s --threads %s", op, out, big);
    EXPECT(2, "--threads", "1e3x", "op %s -o %s --threads 1e3x", op, out);
    EXPECT(2, "--impl", "fast", "op %s -o %s --impl=fast", op, out);
    EXPECT(2, "--device", "gpu", "op %s -o %s --device gpu", op, out);
    EXPECT(1, "not a regular file", g_dir, "op %s -o %s", op, g_dir);
    /* an output that exists and is not a regular file (a FIFO here, /dev/full in the wild) is never
     * replaced: the write cannot succeed, exit 1 */
    const char *fifo = path_in("fifo");
    CHECK(!mkfifo(fifo, 0644), "mkfifo %s", fifo);
    EXPECT(1, "not a regular file", fifo, "op %s -o %s", op, fifo);
    EXPECT(1, "not a regular file", fifo, "train --task mqar --batch 2 --seq-len 16 --mqar-pairs 2 --steps 1 --quiet -o %s", fifo);
    struct stat sb;
    CHECK(!stat(fifo, &sb) && S_ISFIFO(sb.st_mode), "the FIFO is still a FIFO");
    EXPECT(0, "impl=reference", NULL, "op %s -o %s --impl=reference --threads=1", op, out);
}

static void test_task(void) {
    EXPECT(2, "--len", "1e9", "task show mqar --len 1e9");
    EXPECT(2, "--vocab", "4294967552", "task show mqar --len 16 --vocab 4294967552");
    EXPECT(2, "--depth", "nan", "task show S-NIAH-1 --depth nan");
    EXPECT(2, "--split", "dev", "task show mqar --split dev");
    EXPECT(2, "--pairs", "-3", "task show mqar --pairs -3");
    EXPECT(2, "not a regular file", g_dir, "task show S-NIAH-1 --adjs %s", g_dir);
    EXPECT(2, "--len", "missing", "task show mqar --len");
    EXPECT(0, "split: train", NULL, "task show mqar --len 16 --split=train --seed 1e3");
}

int main(void) {
    if (make_tmp_dir("cli_args")) return test_summary();
    CHECK(!access(cli_path(), X_OK), "the CLI under test: %s", cli_path());
    const char *ck = path_in("tiny.safetensors"), *text = path_in("text.txt");
    char nodir[128];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir", g_dir);
    CHECK(!make_ckpt(ck), "tiny checkpoint %s: %s", ck, gdn2_last_error());
    CHECK(!make_text(text), "text file %s", text);

    /* library: a directory is not a text file (it reported out of memory) */
    gdn2_text t;
    int st = gdn2_text_load(g_dir, 0.1, &t);
    CHECK(st == GDN2_ERR_IO && strstr(gdn2_last_error(), "not a regular file"), "gdn2_text_load(directory): %s",
          gdn2_last_error());

    test_train(text, nodir);
    test_generate(ck, nodir);
    test_quantize(ck, text, nodir);
    test_demo(nodir);
    test_eval(ck, nodir);
    test_files_cmds(nodir);
    test_task();
    /* gdn2 tokens */
    EXPECT(2, "--shard-tokens", "\"0\"", "tokens --from-text %s --out %s/t --shard-tokens 0", text, g_dir);
    EXPECT(2, "--shard-tokens", "3e9", "tokens --from-text %s --out %s/t --shard-tokens 3e9", text, g_dir);
    EXPECT(2, "--from-text", "--info", "tokens");
    EXPECT(2, "not a regular file", g_dir, "tokens --from-text %s --out %s/t", g_dir, g_dir);
    EXPECT(1, "does not exist", nodir, "tokens --from-text %s --out %s/t", text, nodir);
    EXPECT(2, "no file matches", NULL, "tokens --info '%s/none_*.bin'", g_dir);
    EXPECT(0, "uint16 shards", "tk_000000.bin", "tokens --from-text %s --out %s/tk --shard-tokens 1e3", text, g_dir);
    EXPECT(0, "every token id is below 256", NULL, "tokens --info '%s/tk_*.bin' --vocab 256", g_dir);

    remove_tmp_dir();
    return test_summary();
}
