/* Training tests: AdamW against a hand-computed float64 step, the LR schedule, gradient clipping,
 * a short run whose loss decreases, checkpoint round trip, bit-exact resume (20 steps straight ==
 * 10 steps, save, resume, 10 steps: losses, final weights and AdamW m, v, step, bit for bit), and the
 * durability of checkpoints through the CLI: a save killed between its two renames, a pair mixed
 * from two runs, changed run settings (--allow-change), leftover temp files.
 * The text trained on is generated here (pseudo-English from a fixed word list and a seeded RNG). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h> /* dead_pid */
#include <unistd.h>

#include "check.h"
#include "ckpt_pair.h"
#include "cli_run.h"
#include "gdn2.h"
#include "gdn2_model.h"
#include "gdn2_text.h"

#ifdef GDN2_HAVE_BLAS
#include <cblas.h>
#endif

static void test_adamw(void) {
    /* two tensors: "w" (decayed) and "n" (no_decay); two steps with different gradients */
    gdn2_model_param tp[2];
    memset(tp, 0, sizeof tp);
    strcpy(tp[0].name, "w"), tp[0].ndim = 1, tp[0].shape[0] = 3, tp[0].offset = 0, tp[0].numel = 3;
    strcpy(tp[1].name, "n"), tp[1].ndim = 1, tp[1].shape[0] = 2, tp[1].offset = 3, tp[1].numel = 2, tp[1].no_decay = 1;
    float p[5] = {0.5f, -1.0f, 2.0f, 1.0f, 0.25f}, g[5];
    gdn2_model m;
    memset(&m, 0, sizeof m);
    m.n_tensors = 2, m.tensors = tp, m.n_params = 5, m.n_flat = 5, m.params = p, m.grads = g, m.n_threads = 1;
    for (int exempt = 0; exempt < 2; exempt++) {
        float pp[5] = {0.5f, -1.0f, 2.0f, 1.0f, 0.25f};
        memcpy(p, pp, sizeof p);
        gdn2_adamw_cfg c = gdn2_adamw_default();
        c.exempt_no_decay = exempt;
        gdn2_adamw o;
        gdn2_adamw_init(&o, &c, 5);
        double P[5], M[5] = {0}, V[5] = {0};
        for (int i = 0; i < 5; i++) P[i] = pp[i];
        const float gs[2][5] = {{0.1f, -0.2f, 0.3f, 0.05f, -1.0f}, {-0.3f, 0.1f, 0.2f, 0.4f, 0.0f}};
        const float lrs[2] = {1e-2f, 5e-3f};
        for (int s = 0; s < 2; s++) {
            memcpy(g, gs[s], sizeof g);
            gdn2_adamw_step(&o, &m, lrs[s]);
            /* torch.optim.AdamW by hand */
            for (int i = 0; i < 5; i++) {
                double wd = (exempt && i >= 3) ? 0.0 : 0.1, lr = lrs[s];
                P[i] *= 1 - lr * wd;
                M[i] = 0.9 * M[i] + 0.1 * gs[s][i];
                V[i] = 0.95 * V[i] + 0.05 * (double)gs[s][i] * gs[s][i];
                double bc1 = 1 - pow(0.9, s + 1), bc2 = 1 - pow(0.95, s + 1);
                P[i] -= lr / bc1 * M[i] / (sqrt(V[i]) / sqrt(bc2) + 1e-8);
            }
        }
        double err = 0;
        for (int i = 0; i < 5; i++) err = fmax(err, fabs(P[i] - p[i]));
        CHECK(err < 1e-6 && o.step == 2, "AdamW 2 steps vs float64 torch formula (exempt_no_decay=%d): max |diff| %.1e",
              exempt, err);
        if (exempt) CHECK(fabs(p[4] - 0.25) > 1e-4 && fabs(P[4] - p[4]) < 1e-6, "no_decay tensor not decayed when exempt");
        gdn2_adamw_free(&o);
    }
}

/* the clip factor folded into AdamW's pass (gdn2_adamw_step_scaled, what train does) against clipping the
 * gradients first (gdn2_clip_grad_norm + gdn2_adamw_step): the same bits, and the gradients left as they were */
static void test_adamw_scaled(void) {
    gdn2_model_param tp[1];
    memset(tp, 0, sizeof tp);
    strcpy(tp[0].name, "w"), tp[0].ndim = 1, tp[0].shape[0] = 6, tp[0].numel = 6;
    const float g0[6] = {0.7f, -1.3f, 0.25f, 2.0f, -0.01f, 0.5f};
    float pa[6], pb[6], ga[6], gb[6];
    gdn2_model ma, mb;
    memset(&ma, 0, sizeof ma);
    ma.n_tensors = 1, ma.tensors = tp, ma.n_params = 6, ma.n_flat = 6, ma.n_threads = 1;
    mb = ma;
    ma.params = pa, ma.grads = ga, mb.params = pb, mb.grads = gb;
    for (int i = 0; i < 6; i++) pa[i] = pb[i] = 0.1f * (float)(i + 1) - 0.3f;
    gdn2_adamw_cfg c = gdn2_adamw_default();
    gdn2_adamw oa, ob;
    gdn2_adamw_init(&oa, &c, 6), gdn2_adamw_init(&ob, &c, 6);
    int same = 1, kept = 1, clipped = 0;
    for (int s = 0; s < 3; s++) {
        const float mx = s == 1 ? 100.0f : 0.5f; /* step 1: no clip (factor 1) */
        for (int i = 0; i < 6; i++) ga[i] = gb[i] = g0[i] * (float)(s + 1);
        float norm = gdn2_clip_grad_norm(ga, 6, mx);
        const float k = gdn2_clip_factor(norm, mx);
        clipped += k != 1.0f;
        gdn2_adamw_step(&oa, &ma, 1e-2f);
        CHECK(gdn2_adamw_step_scaled(&ob, &mb, 1e-2f, k) == GDN2_OK, "adamw_step_scaled step %d: %s", s, gdn2_last_error());
        same &= !memcmp(pa, pb, sizeof pa) && !memcmp(oa.m, ob.m, sizeof pa) && !memcmp(oa.v, ob.v, sizeof pa);
        for (int i = 0; i < 6; i++) kept &= gb[i] == g0[i] * (float)(s + 1);
    }
    CHECK(same && clipped == 2, "AdamW with the clip factor in its pass == clip then AdamW, bit for bit (3 steps, %d clipped)",
          clipped);
    CHECK(kept, "adamw_step_scaled leaves the gradients as they were");
    CHECK(gdn2_adamw_step_scaled(&ob, &mb, 1e-2f, 0.0f) == GDN2_ERR_ARG && strstr(gdn2_last_error(), "grad_scale") &&
              gdn2_adamw_step_scaled(&ob, &mb, 1e-2f, NAN) == GDN2_ERR_ARG,
          "adamw_step_scaled refuses a grad_scale of 0 or NaN: %s", gdn2_last_error());
    CHECK(gdn2_clip_factor(5.0f, 1.0f) == 1.0f / (5.0f + 1e-6f) && gdn2_clip_factor(0.5f, 1.0f) == 1.0f &&
              gdn2_clip_factor(5.0f, 0.0f) == 1.0f,
          "clip factor: max/(norm+1e-6) above the limit, 1 below it or without a limit");
    gdn2_adamw_free(&oa), gdn2_adamw_free(&ob);
}

static void test_schedule_clip(void) {
    float lr = 1e-3f, mn = 1e-4f;
    CHECK(fabsf(gdn2_lr_at(0, 10, 100, lr, mn) - 1e-4f) < 1e-9f && fabsf(gdn2_lr_at(9, 10, 100, lr, mn) - lr) < 1e-9f,
          "linear warmup: lr(0) = lr/10 (1/warmup), lr(9) = lr");
    CHECK(fabsf(gdn2_lr_at(10, 10, 100, lr, mn) - lr) < 1e-9f && fabsf(gdn2_lr_at(55, 10, 100, lr, mn) - 5.5e-4f) < 1e-8f &&
              fabsf(gdn2_lr_at(100, 10, 100, lr, mn) - mn) < 1e-9f,
          "cosine: lr at the end of warmup, (lr+min)/2 halfway, min_lr at the end");
    float g[4] = {3, 4, 0, 0};
    float n = gdn2_clip_grad_norm(g, 4, 1.0f);
    CHECK(fabsf(n - 5) < 1e-6f && fabsf(sqrtf(g[0] * g[0] + g[1] * g[1]) - 1.0f) < 1e-5f,
          "clip: norm 5 returned, clipped to 1 (%.6f, %.6f)", g[0], g[1]);
    float h[2] = {0.3f, 0.4f};
    gdn2_clip_grad_norm(h, 2, 1.0f);
    CHECK(h[0] == 0.3f && h[1] == 0.4f, "clip: a norm below the limit is untouched");
}

static gdn2_train_opts small_run(const char *task, const char *layout, int64_t steps, float *trace) {
    gdn2_train_opts o;
    gdn2_train_defaults(&o);
    o.model = "tiny";
    o.layout = layout;
    o.task = task;
    o.batch = 8, o.seq_len = 32, o.steps = steps, o.warmup = 4, o.lr = 3e-3f;
    o.log_every = 0, o.eval_batches = 2, o.eval_samples = 16, o.n_threads = 2, o.seed = 11;
    o.quiet = 1;
    o.loss_trace = trace;
    o.mqar_pairs = 2;
    return o;
}

/* gradient accumulation: two half-batches with backward(0.5) == one backward on the whole batch
 * (every position has a target, so the mean over the batch is the mean of the two means) */
static void test_accumulation(void) {
    gdn2_model_cfg c;
    gdn2_model_config("tiny", &c);
    gdn2_model_set_layout(&c, "gdn2,swa");
    gdn2_model *m = NULL;
    if (gdn2_model_create(&c, &m)) {
        CHECK(0, "accumulation: create failed: %s", gdn2_last_error());
        return;
    }
    gdn2_model_init(m, 5);
    enum { B = 4, T = 24 };
    int32_t tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (i * 131 + 7) % 256, tgt[i] = (i * 71 + 3) % 256;
    float l;
    int st = gdn2_model_zero_grad(m);
    if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &l, 1);
    if (!st) st = gdn2_model_backward(m, 1.0f);
    float *full = malloc(m->n_flat * sizeof(float));
    memcpy(full, m->grads, m->n_flat * sizeof(float));
    double nf = 0;
    for (int64_t i = 0; i < m->n_flat; i++) nf += (double)full[i] * full[i];
    if (!st) st = gdn2_model_zero_grad(m);
    for (int h = 0; h < 2 && !st; h++) {
        st = gdn2_model_forward(m, tok + h * (B / 2) * T, tgt + h * (B / 2) * T, B / 2, T, NULL, &l, 1);
        if (!st) st = gdn2_model_backward(m, 0.5f);
    }
    double e = rel_rmse_f32(m->grads, full, m->n_flat);
    CHECK(!st && nf > 0 && e < 1e-5,
          "gradient accumulation: 2 half-batches x 0.5 == full batch (rel RMSE %.2e, |g| %.3e)%s%s", e, sqrt(nf),
          st ? ": " : "", st ? gdn2_last_error() : "");
    int flags_ok = 1;
    for (int i = 0; i < m->n_tensors; i++) {
        const char *n = m->tensors[i].name;
        int want = strstr(n, "A_log") || strstr(n, "dt_bias") || strstr(n, "norm") || strstr(n, "ln_f") || strstr(n, ".bias");
        if (want != m->tensors[i].no_decay) {
            flags_ok = 0;
            printf("  %s: no_decay %d\n", n, m->tensors[i].no_decay);
        }
    }
    CHECK(flags_ok, "no-decay flags: exactly A_log, dt_bias, norm weights and biases");
    free(full);
    gdn2_model_free(m);
}

/* Deterministic pseudo-English: sentences of 4-13 words from a fixed list, Zipf-like word choice
 * (index = n u^2), capitalised, ending in '.', a newline after some. ~n bytes to path. */
static int write_text(const char *path, size_t n, unsigned long long seed) {
    static const char *const words[] = {
        "the", "of", "and", "to", "a", "in", "that", "is", "was", "he", "for", "it", "with", "as", "his",
        "on", "be", "at", "by", "had", "not", "are", "but", "from", "or", "have", "an", "they", "which",
        "one", "you", "were", "her", "all", "she", "there", "would", "their", "we", "him", "been", "has",
        "when", "who", "will", "more", "no", "if", "out", "so", "said", "what", "up", "its", "about",
        "into", "than", "them", "can", "only", "other", "new", "some", "could", "time", "these", "two",
        "may", "then", "do", "first", "any", "my", "now", "such", "like", "our", "over", "man", "me",
        "even", "most", "made", "after", "also", "did", "many", "before", "must", "through", "back",
        "years", "where", "much", "your", "way", "well", "down", "should", "because", "each", "just",
        "those", "people", "how", "too", "little", "state", "good", "very", "make", "world", "still",
        "own", "see", "men", "work", "long", "get", "here", "between", "both", "life", "being", "under",
        "never", "day", "same", "another", "know", "while", "last", "might", "us", "great", "old", "year",
        "off", "come", "since", "against", "go", "came", "right", "used", "take", "three", "king", "house"};
    const int nw = (int)(sizeof words / sizeof words[0]);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    size_t len = 0;
    while (len < n) {
        int words_in = 4 + (int)(test_uniform(&seed) * 10);
        for (int i = 0; i < words_in; i++) {
            double u = test_uniform(&seed);
            const char *w = words[(int)(nw * u * u)];
            char buf[32];
            snprintf(buf, sizeof buf, "%s", w);
            if (i == 0) buf[0] = (char)(buf[0] - 'a' + 'A');
            len += (size_t)fprintf(f, "%s%s", buf, i + 1 < words_in ? " " : ".");
        }
        len += (size_t)fprintf(f, "%s", test_uniform(&seed) < 0.3 ? "\n" : " ");
    }
    return fclose(f) ? -1 : 0;
}

/* `gdn2 train <args>` (the CLI, cli_path()) with the environment assignments env in front; output
 * (stdout + stderr) into g_out; the exit status (cli_run.h's run) */
static int run_cli(const char *env, const char *args) { return run("%s '%s' train %s", env ? env : "", cli_path(), args); }

static int file_exists(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static int touch(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fputs("partial", f);
    return fclose(f);
}

/* a pid that is not running: a child that has exited and been reaped */
static long dead_pid(void) {
    pid_t c = fork();
    if (c == 0) _exit(0);
    if (c > 0) waitpid(c, NULL, 0);
    return (long)c;
}

/* bit-for-bit equality of two checkpoint pairs: weights, AdamW m and v, step */
/* checkpoint durability through the CLI (exit status and message of each refusal); dir and text are
 * the short /tmp paths made by main */
static void test_durability(const char *dir, const char *text) {
    char base[512], args[2048], ck[256], ckb[256], txt2[256];
    snprintf(ck, sizeof ck, "%s/c.safetensors", dir);
    snprintf(base, sizeof base,
             "--task text --data '%s' --batch 4 --seq-len 32 --steps 20 --eval-batches 1 --threads 1 --log-every 0 "
             "--lr 3e-3 --seed 5",
             text);

    /* kill between the two renames: a pair at step 10, then a resumed run killed (test hook) after the
     * model file of step 20 was renamed into place and before the optimizer file's rename */
    snprintf(args, sizeof args, "%s -o '%s' --stop-at 10", base, ck);
    int rc0 = run_cli(NULL, args);
    snprintf(args, sizeof args, "%s -o '%s' --resume", base, ck);
    int rc1 = run_cli("GDN2_TEST_CRASH_AFTER_FIRST_RENAME=1", args);
    CHECK(rc0 == 0 && rc1 == 3, "kill-between-renames hook: the resumed run stops with status 3 after the first rename (got %d, %d)",
          rc0, rc1);
    int rc = run_cli(NULL, args);
    char want1[700], want2[700];
    snprintf(want1, sizeof want1, "%s is step 20", ck);
    snprintf(want2, sizeof want2, "%s.optim is step 10", ck);
    CHECK(rc == 2 && strstr(g_out, want1) && strstr(g_out, want2),
          "--resume refuses a model at step 20 with its optimizer at step 10 (exit 2, both files and steps named): exit %d: %s",
          rc, first_line());

    /* a pair mixed from two runs at the same step: run ids differ */
    snprintf(ckb, sizeof ckb, "%s/d.safetensors", dir);
    snprintf(args, sizeof args, "%s -o '%s' --stop-at 10", base, ck);
    rc0 = run_cli(NULL, args);
    snprintf(args, sizeof args, "%s -o '%s' --stop-at 10", base, ckb);
    rc1 = run_cli(NULL, args);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp '%s.optim' '%s.optim'", ckb, ck);
    int cp = system(cmd);
    snprintf(args, sizeof args, "%s -o '%s' --resume", base, ck);
    rc = run_cli(NULL, args);
    CHECK(rc0 == 0 && rc1 == 0 && cp == 0 && rc == 2 && strstr(g_out, "of run") && strstr(g_out, "does not match"),
          "--resume refuses a model and an optimizer file of two runs at the same step (run ids differ): exit %d: %s",
          rc, first_line());

    /* changed settings: refused, naming the setting and both values; --allow-change honoured */
    snprintf(args, sizeof args, "%s -o '%s' --stop-at 10", base, ck);
    rc0 = run_cli(NULL, args);
    snprintf(args, sizeof args, "%s -o '%s' --resume --lr 1e-3", base, ck);
    rc = run_cli(NULL, args);
    CHECK(rc0 == 0 && rc == 2 && strstr(g_out, "lr: saved 0.003, now 0.001"),
          "--resume with another --lr refused (exit 2, setting, saved and new value named): exit %d: %s", rc, first_line());
    snprintf(args, sizeof args, "%s -o '%s' --resume --seed 6 --steps 30", base, ck);
    rc = run_cli(NULL, args);
    CHECK(rc == 2 && strstr(g_out, "seed: saved 5, now 6") && strstr(g_out, "steps: saved 20, now 30"),
          "--resume with another --seed and --steps: both named: exit %d: %s", rc, first_line());
    /* the same data under another name is fine; other content is refused */
    snprintf(txt2, sizeof txt2, "%s/text2.txt", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && printf 'x' >> '%s'", text, txt2, txt2);
    cp = system(cmd);
    snprintf(args, sizeof args, "%s -o '%s' --resume --data '%s'", base, ck, txt2);
    rc = run_cli(NULL, args);
    CHECK(cp == 0 && rc == 2 && strstr(g_out, "data: saved"), "--resume on a changed --data file refused: exit %d: %s",
          rc, first_line());
    snprintf(args, sizeof args, "%s -o '%s' --resume --allow-change bogus", base, ck);
    rc = run_cli(NULL, args);
    CHECK(rc == 2 && strstr(g_out, "unknown setting 'bogus'"), "--allow-change with an unknown name refused: exit %d: %s",
          rc, first_line());
    snprintf(args, sizeof args, "%s -o '%s' --resume --layout gdn2,swa --allow-change layout", base, ck);
    rc = run_cli(NULL, args);
    CHECK(rc == 2 && strstr(g_out, "architecture"), "--allow-change layout refused (the architecture is the checkpoint's): exit %d: %s",
          rc, first_line());
    snprintf(args, sizeof args, "%s -o '%s' --allow-change lr", base, ckb);
    rc = run_cli(NULL, args);
    CHECK(rc == 2 && strstr(g_out, "only with --resume"), "--allow-change without --resume refused: exit %d: %s", rc, first_line());
    snprintf(args, sizeof args, "%s -o '%s' --resume --lr 1e-3 --allow-change steps,lr", base, ck);
    rc = run_cli(NULL, args);
    CHECK(rc == 0 && strstr(g_out, "lr changes from 0.003 to 0.001") && strstr(g_out, "\"steps\":20"),
          "--resume --lr 1e-3 --allow-change steps,lr continues to step 20 and says so: exit %d: %s", rc, first_line());

    /* leftover temp files of killed writers: exactly the checkpoint's own are removed */
    long dp = dead_pid(), me = (long)getpid();
    char t1[64], t2[64], live[64];
    snprintf(t1, sizeof t1, "c.safetensors.tmp.%ld", dp);
    snprintf(t2, sizeof t2, "c.safetensors.optim.tmp.%ld", dp);
    snprintf(live, sizeof live, "c.safetensors.tmp.%ld", me); /* a writer still running: left alone */
    const char *keep[] = {"c.safetensors.tmp.12x", "c.safetensors.tmpx.7", "d.safetensors.tmp.7x",
                          "other.safetensors.tmp.7", "c.safetensors.tmp.", live};
    int made = touch(dir, t1) == 0 && touch(dir, t2) == 0;
    for (int i = 0; i < 6; i++) made &= touch(dir, keep[i]) == 0;
    snprintf(args, sizeof args, "%s -o '%s' --stop-at 2", base, ck);
    rc = run_cli(NULL, args);
    int kept = 1;
    for (int i = 0; i < 6; i++) kept &= file_exists(dir, keep[i]);
    int ok = made && rc == 0 && !file_exists(dir, t1) && !file_exists(dir, t2) && kept && strstr(g_out, "removed") &&
             strstr(g_out, t1) && strstr(g_out, t2);
    CHECK(ok, "leftover %s and %s removed with a note; other names and a live writer's file kept: exit %d: %s", t1, t2,
          rc, ok ? first_line() : g_out);
}

int main(void) {
#ifdef GDN2_HAVE_BLAS
    /* one BLAS thread, as the CLI's training commands set it (the library leaves it to its caller) */
    if (!getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
#endif
    test_adamw();
    test_adamw_scaled();
    test_accumulation();
    test_schedule_clip();

    if (make_tmp_dir("test_train_")) return test_summary();
    const char *dir = g_dir;
    char data[256];
    snprintf(data, sizeof data, "%s/text.txt", dir);
    CHECK(write_text(data, 1 << 16, 42) == 0, "generated 64 KiB of pseudo-English text in %s", data);
    const char *task = "text";
    char ck[1200], ck2[1200];
    snprintf(ck, sizeof ck, "%s/a.safetensors", dir);
    snprintf(ck2, sizeof ck2, "%s/b.safetensors", dir);
    /* a short run learns: byte-level loss falls from ~ln 256 */
    float tr[40];
    gdn2_train_opts o = small_run(task, "gdn2,swa", 40, tr);
    o.data = data;
    o.n_threads = 1;
    gdn2_train_result r;
    gdn2_model *m = NULL;
    int st = gdn2_train(&o, &r, &m);
    double first = (tr[0] + tr[1] + tr[2]) / 3, last = (tr[37] + tr[38] + tr[39]) / 3;
    CHECK(st == 0 && last < first - 1.0, "40 steps of tiny gdn2,swa on %s: loss %.3f -> %.3f%s%s", task, first, last,
          st ? ": " : "", st ? gdn2_last_error() : "");
    {   /* schedules that would mean something else than they say are refused, naming the option */
        gdn2_train_opts b = small_run(task, "gdn2", 10, NULL);
        b.data = data;
        b.min_lr = 1e-2f;
        const int e1 = gdn2_train(&b, &r, NULL), ok1 = e1 == GDN2_ERR_ARG && strstr(gdn2_last_error(), "--min-lr");
        b = small_run(task, "gdn2", 10, NULL);
        b.data = data;
        b.warmup = 11;
        const int e2 = gdn2_train(&b, &r, NULL), ok2 = e2 == GDN2_ERR_ARG && strstr(gdn2_last_error(), "--warmup");
        b = small_run(task, "gdn2", 10, NULL);
        b.data = data;
        b.stop_at = 12;
        const int e3 = gdn2_train(&b, &r, NULL), ok3 = e3 == GDN2_ERR_ARG && strstr(gdn2_last_error(), "--stop-at");
        CHECK(ok1 && ok2 && ok3, "min-lr above lr, warmup beyond steps, stop-at beyond steps: refused by name (%d %d %d)",
              e1, e2, e3);
    }

    /* checkpoint round trip: same logits bit for bit */
    if (!st) {
        int sst = gdn2_model_save(m, ck);
        gdn2_model *m2 = NULL;
        int lst = sst ? sst : gdn2_model_load(ck, &m2);
        int same = 0;
        if (!lst) {
            int32_t tok[64], tgt[64];
            for (int i = 0; i < 64; i++) tok[i] = (i * 37 + 5) % 256, tgt[i] = (i * 11 + 3) % 256;
            int64_t n = 64 * m->cfg.padded_vocab;
            float *a = malloc(n * 4), *b = malloc(n * 4), la, lb;
            gdn2_model_forward(m, tok, tgt, 2, 32, a, &la, 0);
            gdn2_model_forward(m2, tok, tgt, 2, 32, b, &lb, 0);
            same = !memcmp(a, b, n * 4) && la == lb && !strcmp(m2->cfg.layout, "gdn2,swa") && m2->n_params == m->n_params;
            free(a), free(b);
        }
        CHECK(!sst && !lst && same, "checkpoint save/load round trip: identical logits and loss%s%s",
              (sst || lst) ? ": " : "", (sst || lst) ? gdn2_last_error() : "");
        gdn2_model_free(m2);
    }
    gdn2_model_free(m);

    /* resume bit-exactness: 20 straight vs 10 + resume 10 (same schedule over 20 steps) */
    float straight[20], split[20];
    memset(split, 0, sizeof split);
    o = small_run(task, "gdn2,swa", 20, straight);
    o.data = data;
    o.out = ck;
    st = gdn2_train(&o, &r, NULL);
    o = small_run(task, "gdn2,swa", 20, split);
    o.data = data;
    o.out = ck2;
    o.stop_at = 10;
    if (!st) st = gdn2_train(&o, &r, NULL);
    o.stop_at = 0;
    o.resume = 1;
    /* the resumed call must run steps 10..19 only: a resume that retrained from step 0 (or from fresh
     * weights) could end in the same place, so the first half of its trace is poisoned and must stay so */
    float half[10];
    memcpy(half, split, sizeof half);
    for (int i = 0; i < 10; i++) split[i] = NAN;
    if (!st) st = gdn2_train(&o, &r, NULL);
    int untouched = 1;
    for (int i = 0; i < 10; i++) untouched &= isnan(split[i]);
    CHECK(!st && untouched, "resume: the resumed call runs steps 10..19 only (its trace of steps 0..9 untouched)");
    memcpy(split, half, sizeof half);
    int ident = !st && !memcmp(straight, split, sizeof straight);
    CHECK(ident && r.steps == 20, "resume: 20 steps straight == 10 + resume 10, bit for bit (step 20 loss %.6f vs %.6f)%s%s",
          straight[19], split[19], st ? ": " : "", st ? gdn2_last_error() : "");
    if (!ident)
        for (int i = 0; i < 20; i++) printf("  step %d: %.9g %.9g\n", i, straight[i], split[i]);
    char why[256] = "";
    int same = !st && ckpt_same_pair(ck, ck2, why, sizeof why);
    CHECK(same, "resume: final weights and AdamW m, v, step bit for bit equal to the straight run's (%s)", why);
    /* the optimizer file refuses a model of another size */
    gdn2_adamw ad;
    gdn2_adamw_cfg ac = gdn2_adamw_default();
    gdn2_adamw_init(&ad, &ac, 17);
    char op[1300];
    snprintf(op, sizeof op, "%s.optim", ck2);
    st = gdn2_adamw_load(&ad, op, NULL);
    CHECK(st != 0 && strstr(gdn2_last_error(), "adamw.m"), "optimizer state of another size rejected: %s",
          gdn2_last_error());
    gdn2_adamw_free(&ad);
    /* a model file without a run record (plain gdn2_model_save: e.g. from quantize, or an older gdn2)
     * cannot be checked against its optimizer file: refused */
    gdn2_model *mr = NULL;
    int rst = gdn2_model_load(ck2, &mr);
    if (!rst) rst = gdn2_model_save(mr, ck2);
    gdn2_model_free(mr);
    st = rst ? rst : gdn2_train(&o, &r, NULL);
    CHECK(!rst && st == GDN2_ERR_FORMAT && strstr(gdn2_last_error(), "no run record"),
          "resume from a model file without a run record refused: %s", gdn2_last_error());
    /* a missing checkpoint is a clean error */
    o.out = "/nonexistent/x.safetensors";
    st = gdn2_train(&o, &r, NULL);
    CHECK(st != 0 && strstr(gdn2_last_error(), "/nonexistent/x.safetensors"), "resume from a missing checkpoint: %s",
          gdn2_last_error());

    test_durability(dir, data);

    remove_tmp_dir();
    return test_summary();
}
