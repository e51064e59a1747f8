/* Training tests: AdamW against a hand-computed float64 step, the LR schedule, gradient clipping,
 * a short run whose loss decreases, checkpoint round trip, and bit-exact resume
 * (20 steps straight == 10 steps, save, resume, 10 steps). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
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
    m.n_tensors = 2, m.tensors = tp, m.n_params = 5, m.params = p, m.grads = g, m.n_threads = 1;
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
    gdn2_model_zero_grad(m);
    gdn2_model_forward(m, tok, tgt, B, T, NULL, &l, 1);
    gdn2_model_backward(m, 1.0f);
    float *full = malloc(m->n_params * sizeof(float));
    memcpy(full, m->grads, m->n_params * sizeof(float));
    gdn2_model_zero_grad(m);
    for (int h = 0; h < 2; h++) {
        gdn2_model_forward(m, tok + h * (B / 2) * T, tgt + h * (B / 2) * T, B / 2, T, NULL, &l, 1);
        gdn2_model_backward(m, 0.5f);
    }
    double e = rel_rmse_f32(m->grads, full, m->n_params);
    CHECK(e < 1e-5, "gradient accumulation: 2 half-batches x 0.5 == full batch (rel RMSE %.2e)", e);
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

int main(void) {
#ifdef GDN2_HAVE_BLAS
    /* one BLAS thread, as the CLI's training commands set it (the library leaves it to its caller) */
    if (!getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
#endif
    test_adamw();
    test_accumulation();
    test_schedule_clip();

    char data[1024];
    snprintf(data, sizeof data, "%s/data/tinyshakespeare.txt", shared_dir());
    const char *task = access(data, R_OK) == 0 ? "text" : "mqar";
    if (strcmp(task, "text")) SKIP("%s missing: the training tests run on MQAR instead of text", data);
    char dir[] = "/tmp/gdn2_test_train_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return test_summary();
    }
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
    if (!st) st = gdn2_train(&o, &r, NULL);
    int ident = !st && !memcmp(straight, split, sizeof straight);
    CHECK(ident && r.steps == 20, "resume: 20 steps straight == 10 + resume 10, bit for bit (step 20 loss %.6f vs %.6f)%s%s",
          straight[19], split[19], st ? ": " : "", st ? gdn2_last_error() : "");
    if (!ident)
        for (int i = 0; i < 20; i++) printf("  step %d: %.9g %.9g\n", i, straight[i], split[i]);
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
    /* a missing checkpoint is a clean error */
    o.out = "/nonexistent/x.safetensors";
    st = gdn2_train(&o, &r, NULL);
    CHECK(st != 0 && strstr(gdn2_last_error(), "/nonexistent/x.safetensors"), "resume from a missing checkpoint: %s",
          gdn2_last_error());

    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) printf("note: could not remove %s\n", dir);
    return test_summary();
}
