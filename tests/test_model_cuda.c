/* The model's CUDA backend against the CPU one and the official fixtures (skips cleanly without a
 * GPU; run on the H200, log in bench/results/). The CUDA backend is bf16-mixed (docs/BACKEND.md), so
 * every comparison has a bar for bf16 rounding, stated at each check:
 *   1. the official layer fixture through gdn2_layer_run("cuda"): y and every gradient against the
 *      float64 reference (relative RMSE: y 2e-2, gradients 5e-2);
 *   2. the official model fixture on the GPU: logits (relative RMSE 2e-2) and loss (|diff| 1e-2 relative);
 *   3. 100 training steps of `tiny` (gdn2) and `hybrid_tiny` (gdn2,swa) on MQAR, GPU against CPU from
 *      the same init and batches: the loss curves agree (mean |diff|/loss <= 3 %, max <= 8 %: bf16
 *      noise accumulated over 100 AdamW steps), and the GPU run twice is bit-identical (trace and
 *      weights);
 *   4. checkpoints cross-load: a GPU-written checkpoint evaluates on the CPU to the GPU's loss
 *      (within 1e-2 relative) and a CPU-written one on the GPU;
 *   5. resume on the GPU is bit-exact: 20 steps straight == 10 + resume 10 (weights, AdamW m, v);
 *   6. generation on the GPU (tiny: gdn2; hybrid_tiny: gdn2,swa with a 32-token window, so that the
 *      ring wraps) against the CPU from the same weights, rounded to bf16 first so that only the
 *      activations' rounding differs: prefill_slot's logits and 24 step_slots over random subsets of
 *      8 slots in shuffled order (every logit row within relative RMSE 3e-2 of the CPU's; the
 *      greedy token the same wherever the CPU's top-2 margin exceeds 0.1); the GPU run twice is
 *      bit-identical; copy_slot and reset_slot on the GPU reproduce a slot's logits bit for bit;
 *      a prefix file saved from the GPU loads on the CPU and one from the CPU on the GPU (the next
 *      step's logits within the same bar); greedy gdn2_generate runs on the GPU; a CPU state is
 *      refused by the GPU model, naming both devices.
 * GDN2_TEST_DECODE_DEVICE=cpu runs part 6 with a CPU model in the GPU's place (a self-check of the
 * test on a machine without a GPU: every bar then holds with room, the bits are the same). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "decode_check.h"
#include "step_sample.h"
#include "ckpt_pair.h"
#include "cli_run.h"
#include "gdn2.h"
#include "gdn2_cuda.h"
#include "gdn2_layer.h"
#include "gdn2_model.h"

static double rel_rmse(const float *a, const float *ref, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) e += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), r += (double)ref[i] * ref[i];
    return sqrt(e / (r > 0 ? r : 1));
}

static void test_layer_fixture(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/layer.safetensors", fixture_dir());
    gdn2_st st;
    if (gdn2_st_read(path, &st)) {
        CHECK(0, "read %s: %s", path, gdn2_last_error());
        return;
    }
    gdn2_layer_cfg c;
    if (gdn2_layer_config_from_file(&st, &c)) {
        CHECK(0, "layer fixture config: %s", gdn2_last_error());
        gdn2_st_free(&st);
        return;
    }
    const int np = gdn2_layer_params(&c, NULL, 0);
    gdn2_param_info *pi = calloc((size_t)np, sizeof *pi);
    gdn2_layer_params(&c, pi, np);
    const size_t npar = gdn2_layer_param_count(&c);
    float *params = calloc(npar, sizeof(float)), *x = NULL, *r = NULL, *y64 = NULL, *gx = NULL;
    int ok = !gdn2_layer_load_params(&c, &st, "param.", params);
    int64_t xs[3] = {-1, -1, c.hidden}, s3[3] = {-1, -1, c.hidden};
    ok = ok && !gdn2_st_get_f32(&st, "x", 1, 3, xs, &x) && !gdn2_st_get_f32(&st, "r", 1, 3, s3, &r) &&
         !gdn2_st_get_f32(&st, "ref64_train_y", 1, 3, s3, &y64) && !gdn2_st_get_f32(&st, "grad.x", 1, 3, s3, &gx);
    CHECK(ok, "layer fixture tensors and parameters%s%s", ok ? "" : ": ", ok ? "" : gdn2_last_error());
    if (ok) {
        const int64_t B = xs[0], T = xs[1];
        const size_t ny = (size_t)(B * T * c.hidden);
        float *y = malloc(ny * 4), *dx = malloc(ny * 4), *dp = calloc(npar, 4);
        int rc = gdn2_layer_run("cuda", &c, params, x, B, T, y, r, dx, dp, 0);
        CHECK(rc == 0, "layer fwd+bwd on the GPU [B=%lld T=%lld d=%lld]: %s", (long long)B, (long long)T,
              (long long)c.hidden, rc ? gdn2_last_error() : "ok");
        if (!rc) {
            double ey = rel_rmse(y, y64, ny), ex = rel_rmse(dx, gx, ny);
            CHECK(ey <= 2e-2, "GPU layer y vs float64 reference: relative RMSE %.2e <= 2e-2", ey);
            CHECK(ex <= 5e-2, "GPU layer grad.x vs official: relative RMSE %.2e <= 5e-2", ex);
            double worst = 0;
            const char *wn = "";
            int all = 1;
            for (int i = 0; i < np; i++) {
                char name[128];
                snprintf(name, sizeof name, "grad.%s", pi[i].name);
                int64_t shape[4];
                memcpy(shape, pi[i].shape, sizeof shape);
                float *g = NULL;
                if (gdn2_st_get_f32(&st, name, 1, pi[i].ndim, shape, &g)) {
                    all = 0;
                    continue;
                }
                double e = rel_rmse(dp + pi[i].offset, g, pi[i].numel);
                if (e > worst) worst = e, wn = pi[i].name;
                free(g);
            }
            CHECK(all && worst <= 5e-2, "GPU layer: every parameter gradient vs official, worst relative RMSE %.2e (%s) <= 5e-2",
                  worst, wn);
        }
        free(y), free(dx), free(dp);
    }
    free(pi), free(params), free(x), free(r), free(y64), free(gx);
    gdn2_st_free(&st);
}

static void test_model_fixture(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", fixture_dir());
    gdn2_model *m = NULL;
    int st = gdn2_model_load(path, &m);
    CHECK(st == 0, "load %s%s%s", path, st ? ": " : "", st ? gdn2_last_error() : "");
    if (st) return;
    gdn2_st file;
    gdn2_st_read(path, &file);
    int64_t sh[2] = {-1, -1}, lsh[3] = {-1, -1, -1}, one[1] = {1};
    int64_t *tok64 = NULL;
    float *ref = NULL, *refloss = NULL;
    gdn2_st_get_i64(&file, "tokens", 1, 2, sh, &tok64);
    gdn2_st_get_f32(&file, "logits", 1, 3, lsh, &ref);
    gdn2_st_get_f32(&file, "loss", 1, 1, one, &refloss);
    gdn2_st_free(&file);
    const int64_t B = sh[0], T = sh[1], Vp = m->cfg.padded_vocab;
    int32_t *tok = malloc(B * T * 4), *tgt = malloc(B * T * 4);
    for (int64_t i = 0; i < B * T; i++) {
        tok[i] = (int32_t)tok64[i];
        tgt[i] = (i % T == T - 1) ? GDN2_IGNORE : (int32_t)tok64[i + 1];
    }
    float *lg = malloc(B * T * Vp * 4), loss = 0;
    st = gdn2_model_set_device(m, "cuda");
    if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, lg, &loss, 0);
    CHECK(st == 0, "official model fixture forward on the GPU: %s", st ? gdn2_last_error() : "ok");
    if (!st) {
        double e = rel_rmse(lg, ref, (size_t)(B * T * Vp));
        CHECK(e <= 2e-2, "GPU official model logits: relative RMSE %.2e <= 2e-2", e);
        CHECK(fabs(loss - refloss[0]) <= 1e-2 * fabs(refloss[0]), "GPU official model loss %.5f vs %.5f (<= 1e-2 relative)",
              loss, refloss[0]);
    }
    free(tok), free(tgt), free(lg), free(tok64), free(ref), free(refloss);
    gdn2_model_free(m);
}

static gdn2_train_opts run_opts(const char *model, int64_t steps, float *trace, const char *device) {
    gdn2_train_opts o;
    gdn2_train_defaults(&o);
    o.model = model;
    o.task = "mqar";
    o.batch = 16, o.seq_len = 64, o.steps = steps, o.warmup = 10, o.lr = 3e-3f;
    o.log_every = 0, o.eval_samples = 64, o.n_threads = 2, o.seed = 5;
    o.mqar_pairs = 4;
    o.quiet = 1;
    o.loss_trace = trace;
    o.device = device;
    return o;
}

/* results[0].score of an eval.json (NAN when missing) */
static double eval_score(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NAN;
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    const cJSON *r = j ? cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "results"), 0) : NULL;
    const cJSON *sc = r ? cJSON_GetObjectItemCaseSensitive(r, "score") : NULL;
    const double v = cJSON_IsNumber(sc) ? sc->valuedouble : NAN;
    cJSON_Delete(j);
    return v;
}

/* `gdn2 eval` of a checkpoint trained on the GPU to >= 0.9 MQAR accuracy (the demo's recipe, at most
 * 1500 steps or 120 s), on the CPU and with --device cuda: the same score up to the few queries whose
 * greedy choice is within bf16 noise (bar: 1 point of 800 queries) */
static void test_eval_devices(const char *model, const char *dir) {
    char ck[1100], oc[1100], og[1100], jc[1200], jg[1200];
    snprintf(ck, sizeof ck, "%s/ev_%s.safetensors", dir, model);
    snprintf(oc, sizeof oc, "%s/ev_cpu_%s", dir, model);
    snprintf(og, sizeof og, "%s/ev_gpu_%s", dir, model);
    snprintf(jc, sizeof jc, "%s/eval.json", oc);
    snprintf(jg, sizeof jg, "%s/eval.json", og);
    int rt = run("%s train --device cuda --task mqar --model %s --mqar-pairs 4 --seq-len 64 --batch 32 --steps 1500 "
                 "--lr 3e-3 --warmup 50 --eval-every 50 --eval-samples 512 --target-acc 0.9 --time-limit 120 --quiet "
                 "-o %s", cli_path(), model, ck);
    CHECK(rt == 0, "%s: a checkpoint trained on the GPU for the eval comparison (exit %d): %s", model, rt, first_line());
    if (rt) return;
    const char *ckpt = ck;
    int rc = run("%s eval --model %s --task mqar --lengths 64 --samples 200 --out %s", cli_path(), ckpt, oc);
    int rg = run("%s eval --model %s --task mqar --lengths 64 --samples 200 --device cuda --out %s", cli_path(), ckpt, og);
    const double c = eval_score(jc), g = eval_score(jg);
    /* the checkpoint must have learned the task (chance is below 1 %): two untrained models agree too */
    CHECK(rc == 0 && rg == 0 && isfinite(c) && isfinite(g) && fabs(c - g) <= 1.0 && c >= 50.0,
          "%s: gdn2 eval mqar (200 samples, 800 queries) of a GPU-trained checkpoint: CPU %.2f (>= 50), --device cuda "
          "%.2f (|diff| <= 1 point) (exit %d / %d)", model, c, g, rc, rg);
}

static void test_train(const char *model, const char *dir) {
    enum { S = 100 };
    float gpu[S], gpu2[S], cpu[S];
    memset(gpu, 0, sizeof gpu), memset(gpu2, 0, sizeof gpu2), memset(cpu, 0, sizeof cpu);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/%s_gpu_a.safetensors", dir, model);
    snprintf(b, sizeof b, "%s/%s_gpu_b.safetensors", dir, model);
    gdn2_train_result r;
    gdn2_train_opts o = run_opts(model, S, cpu, NULL);
    int st = gdn2_train(&o, &r, NULL);
    CHECK(st == 0, "%s: 100 MQAR steps on the CPU: %s", model, st ? gdn2_last_error() : "ok");
    o = run_opts(model, S, gpu, "cuda");
    o.out = a;
    int sg = gdn2_train(&o, &r, NULL);
    CHECK(sg == 0, "%s: 100 MQAR steps on the GPU: %s (loss %.4f -> %.4f)", model, sg ? gdn2_last_error() : "ok", gpu[0],
          gpu[S - 1]);
    o = run_opts(model, S, gpu2, "cuda");
    o.out = b;
    int sg2 = sg ? sg : gdn2_train(&o, &r, NULL);
    if (!sg) CHECK(sg2 == 0, "%s: the same 100 GPU steps again: %s", model, sg2 ? gdn2_last_error() : "ok");
    if (st || sg || sg2) return;
    double mean = 0, mx = 0;
    for (int i = 0; i < S; i++) {
        double d = fabs((double)gpu[i] - cpu[i]) / fabs(cpu[i]);
        mean += d / S;
        if (d > mx) mx = d;
    }
    CHECK(mean <= 3e-2 && mx <= 8e-2,
          "%s: GPU loss curve vs CPU over 100 steps: mean |diff|/loss %.2e <= 3e-2, max %.2e <= 8e-2 (final %.4f vs %.4f)",
          model, mean, mx, gpu[S - 1], cpu[S - 1]);
    if (mean > 3e-2 || mx > 8e-2)
        for (int i = 0; i < S; i += 10) printf("  step %d: gpu %.5f cpu %.5f\n", i, gpu[i], cpu[i]);
    /* bit-identical reruns */
    gdn2_model *ma = NULL, *mb = NULL;
    gdn2_adamw oa, ob;
    memset(&oa, 0, sizeof oa), memset(&ob, 0, sizeof ob);
    int ls = ckpt_load_pair(a, &ma, &oa);
    if (!ls) ls = ckpt_load_pair(b, &mb, &ob);
    int same = !ls && !memcmp(gpu, gpu2, sizeof gpu) && !memcmp(ma->params, mb->params, ma->n_flat * 4) &&
               !memcmp(oa.m, ob.m, ma->n_flat * 4) && !memcmp(oa.v, ob.v, ma->n_flat * 4);
    CHECK(same, "%s: the same GPU run twice is bit-identical (loss trace, weights, AdamW moments)%s%s", model,
          ls ? ": " : "", ls ? gdn2_last_error() : "");
    /* cross-load: the GPU checkpoint evaluated on the CPU and on the GPU */
    if (!ls) {
        int32_t tok[2 * 64], tgt[2 * 64];
        for (int i = 0; i < 128; i++) tok[i] = (i * 37 + 5) % 256, tgt[i] = (i * 11 + 3) % 256;
        float lc = 0, lgp = 0;
        int s1 = gdn2_model_forward(ma, tok, tgt, 2, 64, NULL, &lc, 0);
        int s2 = s1 ? s1 : gdn2_model_set_device(ma, "cuda");
        if (!s2) s2 = gdn2_model_forward(ma, tok, tgt, 2, 64, NULL, &lgp, 0);
        CHECK(!s1 && !s2 && fabs(lc - lgp) <= 1e-2 * fabs(lc),
              "%s: GPU-written checkpoint: CPU loss %.5f, GPU loss %.5f (<= 1e-2 relative)%s%s", model, lc, lgp,
              (s1 || s2) ? ": " : "", (s1 || s2) ? gdn2_last_error() : "");
        /* and back: saved from the GPU model, loaded on the CPU, same weights */
        char c2[1100];
        snprintf(c2, sizeof c2, "%s/%s_back.safetensors", dir, model);
        gdn2_model *mc = NULL;
        int s3 = s2 ? s2 : gdn2_model_save(ma, c2);
        if (!s3) s3 = gdn2_model_load(c2, &mc);
        CHECK(!s3 && !memcmp(mc->params, mb->params, mb->n_flat * 4),
              "%s: a model moved to the GPU and saved from there reloads with the same weights%s%s", model,
              s3 ? ": " : "", s3 ? gdn2_last_error() : "");
        gdn2_model_free(mc);
    }
    gdn2_model_free(ma), gdn2_model_free(mb);
    gdn2_adamw_free(&oa), gdn2_adamw_free(&ob);
}

static void test_resume(const char *dir) {
    float straight[20], split[20];
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/resume_a.safetensors", dir);
    snprintf(b, sizeof b, "%s/resume_b.safetensors", dir);
    gdn2_train_result r;
    gdn2_train_opts o = run_opts("hybrid_tiny", 20, straight, "cuda");
    o.out = a;
    int st = gdn2_train(&o, &r, NULL);
    o = run_opts("hybrid_tiny", 20, split, "cuda");
    o.out = b;
    o.stop_at = 10;
    if (!st) st = gdn2_train(&o, &r, NULL);
    o.stop_at = 0;
    o.resume = 1;
    if (!st) st = gdn2_train(&o, &r, NULL);
    gdn2_model *ma = NULL, *mb = NULL;
    gdn2_adamw oa, ob;
    memset(&oa, 0, sizeof oa), memset(&ob, 0, sizeof ob);
    if (!st) st = ckpt_load_pair(a, &ma, &oa);
    if (!st) st = ckpt_load_pair(b, &mb, &ob);
    int same = !st && !memcmp(straight, split, sizeof straight) && !memcmp(ma->params, mb->params, ma->n_flat * 4) &&
               !memcmp(oa.m, ob.m, ma->n_flat * 4) && !memcmp(oa.v, ob.v, ma->n_flat * 4) && oa.step == ob.step;
    CHECK(same, "GPU resume: 20 steps straight == 10 + resume 10, loss trace, weights and AdamW state bit for bit%s%s",
          st ? ": " : "", st ? gdn2_last_error() : "");
    gdn2_model_free(ma), gdn2_model_free(mb);
    gdn2_adamw_free(&oa), gdn2_adamw_free(&ob);
}

/* ---- 6. generation on the GPU against the CPU ------------------------------------------------ */

/* the model named `name` twice from one init, weights rounded to bf16: *cpu on the CPU, *dev on dev */
static int decode_models(const char *name, const char *dev, gdn2_model **cpu, gdn2_model **gpu) {
    gdn2_model_cfg c;
    *cpu = *gpu = NULL;
    int st = gdn2_model_config(name, &c);
    if (!st) st = gdn2_model_create(&c, cpu);
    if (!st) st = gdn2_model_create(&c, gpu);
    if (st) return st;
    gdn2_model_init(*cpu, 11);
    for (size_t i = 0; i < (*cpu)->n_flat; i++) (*cpu)->params[i] = bf16_round((*cpu)->params[i]);
    memcpy((*gpu)->params, (*cpu)->params, (*cpu)->n_flat * sizeof(float));
    (*cpu)->n_threads = (*gpu)->n_threads = 2;
    return gdn2_model_set_device(*gpu, dev);
}

/* the worst relative RMSE of n rows of logits, and whether the greedy tokens agree where the
 * reference's margin is above 0.1 */
static double rows_err(const float *a, const float *ref, int64_t n, int64_t Vp, int64_t V, int *argmax_ok) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = rel_rmse(a + i * Vp, ref + i * Vp, (size_t)V), ma, mr;
        if (e > worst) worst = e;
        int ta = argmax_v(a + i * Vp, V, &ma), tr = argmax_v(ref + i * Vp, V, &mr);
        if (mr > 0.1 && ta != tr) *argmax_ok = 0;
    }
    return worst;
}

enum { DN = 8, DSTEPS = 24 };

/* one run of the decode script on model m: prefill slots 0..DN-1 (lengths 1..40), then DSTEPS steps
 * over random subsets in shuffled order; logits of every prefill and step appended to lg (rows in
 * order). Returns the status; the script's randomness comes from seed, so two runs on two models
 * see the same tokens. */
static int decode_script(gdn2_model *m, gdn2_model_state *s, uint64_t seed, float *lg, int64_t *rows) {
    unsigned long long r = seed;
    const int64_t Vp = m->cfg.padded_vocab, V = m->cfg.vocab_size;
    int st = GDN2_OK;
    int32_t prompt[40], slots[DN], tok[DN];
    *rows = 0;
    for (int k = 0; k < DN && !st; k++) {
        const int P = 1 + (int)(test_uniform(&r) * 40);
        for (int t = 0; t < P; t++) prompt[t] = (int32_t)(test_uniform(&r) * V);
        st = gdn2_model_prefill_slot(m, s, k, prompt, P, lg + (*rows)++ * Vp);
    }
    for (int step = 0; step < DSTEPS && !st; step++) {
        int n = 0;
        for (int k = 0; k < DN; k++)
            if (test_uniform(&r) < 0.7) slots[n++] = k;
        if (!n) slots[n++] = step % DN;
        for (int i = n - 1; i > 0; i--) { /* shuffled */
            int j = (int)(test_uniform(&r) * (i + 1)), t = slots[i];
            slots[i] = slots[j], slots[j] = t;
        }
        for (int i = 0; i < n; i++) tok[i] = (int32_t)(test_uniform(&r) * V);
        st = gdn2_model_step_slots(m, s, n, slots, NULL, tok, lg + *rows * Vp);
        *rows += n;
    }
    return st;
}

static void test_decode(const char *name, const char *dev, const char *dir) {
    gdn2_model *mc = NULL, *mg = NULL;
    int st = decode_models(name, dev, &mc, &mg);
    CHECK(st == 0, "%s: the model on the CPU and on %s from one init: %s", name, dev, st ? gdn2_last_error() : "ok");
    if (st) {
        gdn2_model_free(mc), gdn2_model_free(mg);
        return;
    }
    const int64_t Vp = mc->cfg.padded_vocab, V = mc->cfg.vocab_size, cap = DN + DSTEPS * DN;
    float *lc = malloc((size_t)(cap * Vp) * 4), *lg = malloc((size_t)(cap * Vp) * 4), *lg2 = malloc((size_t)(cap * Vp) * 4);
    gdn2_model_state *sc = NULL, *sg = NULL, *sg2 = NULL;
    int64_t rc_rows = 0, rg_rows = 0, rg2_rows = 0;
    st = gdn2_model_state_create(mc, DN, 128, &sc);
    if (!st) st = gdn2_model_state_create(mg, DN, 128, &sg);
    if (!st) st = gdn2_model_state_create(mg, DN, 128, &sg2);
    int sc_st = st ? st : decode_script(mc, sc, 77, lc, &rc_rows);
    int sg_st = st ? st : decode_script(mg, sg, 77, lg, &rg_rows);
    CHECK(!sc_st && !sg_st && rc_rows == rg_rows, "%s: prefill of %d slots + %d steps over shuffled slot subsets, CPU and %s%s%s",
          name, DN, DSTEPS, dev, (sc_st || sg_st) ? ": " : "", (sc_st || sg_st) ? gdn2_last_error() : "");
    if (!sc_st && !sg_st && rc_rows == rg_rows) {
        int am_pre = 1, am_step = 1;
        double ep = rows_err(lg, lc, DN, Vp, V, &am_pre);
        double es = rows_err(lg + DN * Vp, lc + DN * Vp, rg_rows - DN, Vp, V, &am_step);
        CHECK(ep <= 3e-2 && am_pre, "%s: %s prefill_slot logits vs CPU: worst row relative RMSE %.2e <= 3e-2, greedy "
              "token equal where the CPU margin > 0.1: %s", name, dev, ep, am_pre ? "yes" : "no");
        CHECK(es <= 3e-2 && am_step, "%s: %s step_slots logits vs CPU (%lld rows): worst row relative RMSE %.2e <= 3e-2, "
              "greedy token equal where the CPU margin > 0.1: %s", name, dev, (long long)(rg_rows - DN), es,
              am_step ? "yes" : "no");
        int st2 = decode_script(mg, sg2, 77, lg2, &rg2_rows);
        CHECK(!st2 && rg2_rows == rg_rows && !memcmp(lg, lg2, (size_t)(rg_rows * Vp) * 4),
              "%s: the same decode script twice on %s gives the same logits bit for bit%s%s", name, dev,
              st2 ? ": " : "", st2 ? gdn2_last_error() : "");
    }
    /* copy_slot and reset_slot: slot 1 <- slot 3, then one step of each alone with the same token */
    if (!sc_st && !sg_st) {
        float *a = malloc((size_t)Vp * 4), *b = malloc((size_t)Vp * 4), *c1 = malloc((size_t)Vp * 4);
        int32_t t = 7, s3 = 3, s1 = 1;
        int64_t pos3 = sg->slot_pos[3];
        int s = gdn2_model_state_copy_slot(mg, sg, 1, sg, 3);
        if (!s) s = gdn2_model_step_slots(mg, sg, 1, &s3, NULL, &t, a);
        if (!s) s = gdn2_model_step_slots(mg, sg, 1, &s1, NULL, &t, b);
        CHECK(!s && !memcmp(a, b, (size_t)Vp * 4) && sg->slot_pos[1] == pos3 + 1,
              "%s: copy_slot on %s: the copy steps to the original's logits bit for bit%s%s", name, dev, s ? ": " : "",
              s ? gdn2_last_error() : "");
        /* reset slot 1, prefill it with slot 0's script prompt again: the first prefill's logits */
        unsigned long long r = 77;
        int32_t prompt[40];
        const int P = 1 + (int)(test_uniform(&r) * 40);
        for (int i = 0; i < P; i++) prompt[i] = (int32_t)(test_uniform(&r) * V);
        s = gdn2_model_state_reset_slot(sg, 1);
        if (!s) s = gdn2_model_prefill_slot(mg, sg, 1, prompt, P, c1);
        CHECK(!s && !memcmp(c1, lg, (size_t)Vp * 4) && sg->slot_pos[1] == P,
              "%s: reset_slot + prefill on %s reproduces the slot's first prefill bit for bit%s%s", name, dev,
              s ? ": " : "", s ? gdn2_last_error() : "");
        free(a), free(b), free(c1);
    }
    /* the step with its draws on the device (tests/step_sample.h): slots 0..2 stepped, 3..5 copies */
    if (!sc_st && !sg_st) check_step_sample(mg, sg2, name);
    /* a 100-token prompt in pieces of 32 (recurrent states carried; attention against the caches,
     * RoPE at the pieces' positions) vs one forward, on the device: within the device-vs-CPU bar */
    if (!st) {
        gdn2_model_state *p1 = NULL, *p2 = NULL;
        int32_t prompt[100];
        float *a = malloc((size_t)Vp * 4), *b = malloc((size_t)Vp * 4);
        for (int i = 0; i < 100; i++) prompt[i] = (int32_t)((i * 53 + 7) % V);
        int s = gdn2_model_state_create(mg, 1, 128, &p1);
        if (!s) s = gdn2_model_state_create(mg, 1, 128, &p2);
        const int64_t c0 = mg->prefill_chunk;
        mg->prefill_chunk = 0;
        if (!s) s = gdn2_model_prefill_slot(mg, p1, 0, prompt, 100, a);
        mg->prefill_chunk = 32;
        if (!s) s = gdn2_model_prefill_slot(mg, p2, 0, prompt, 100, b);
        mg->prefill_chunk = c0;
        int am = 1;
        double e = s ? 1 : rows_err(b, a, 1, Vp, V, &am);
        CHECK(!s && e <= 3e-2 && am && p2->slot_pos[0] == 100, "%s: on %s a 100-token prefill in pieces of 32 vs one "
              "forward: relative RMSE %.2e <= 3e-2, greedy token equal where the margin > 0.1%s%s", name, dev, e,
              s ? ": " : "", s ? gdn2_last_error() : "");
        gdn2_model_state_free(p1), gdn2_model_state_free(p2);
        free(a), free(b);
    }
    /* prefix files across devices: slot 2 of each pool saved, loaded into the other device's pool,
     * then one step with the same token on each side */
    if (!sc_st && !sg_st && dir) {
        char fg[1100], fc[1100];
        snprintf(fg, sizeof fg, "%s/%s_prefix_gpu.safetensors", dir, name);
        snprintf(fc, sizeof fc, "%s/%s_prefix_cpu.safetensors", dir, name);
        float *a = malloc((size_t)Vp * 4), *b = malloc((size_t)Vp * 4);
        int32_t t = 11, s2 = 2, s5 = 5;
        int s = gdn2_model_state_save_slot(mg, sg, 2, NULL, fg);
        if (!s) s = gdn2_model_state_save_slot(mc, sc, 2, NULL, fc);
        if (!s) s = gdn2_model_state_load_slot(mc, sc, 5, fg, NULL, NULL); /* GPU file into CPU slot 5 */
        int64_t pg = sg->slot_pos[2];
        CHECK(!s && sc->slot_pos[5] == pg, "%s: a prefix file saved from %s loads into a CPU pool (%lld tokens)%s%s", name,
              dev, (long long)pg, s ? ": " : "", s ? gdn2_last_error() : "");
        if (!s) s = gdn2_model_step_slots(mc, sc, 1, &s5, NULL, &t, a); /* CPU from the GPU's state   */
        if (!s) s = gdn2_model_step_slots(mc, sc, 1, &s2, NULL, &t, b); /* CPU from its own state      */
        int am = 1;
        double e = s ? 1 : rows_err(a, b, 1, Vp, V, &am);
        CHECK(!s && e <= 3e-2 && am, "%s: the CPU stepping from the %s-saved state vs from its own: relative RMSE %.2e <= 3e-2%s%s",
              name, dev, e, s ? ": " : "", s ? gdn2_last_error() : "");
        if (!s) s = gdn2_model_state_load_slot(mg, sg, 5, fc, NULL, NULL); /* CPU file into GPU slot 5 */
        if (!s) s = gdn2_model_step_slots(mg, sg, 1, &s5, NULL, &t, a);
        am = 1;
        e = s ? 1 : rows_err(a, b, 1, Vp, V, &am);
        CHECK(!s && e <= 3e-2 && am, "%s: a CPU prefix file loaded on %s: the next step vs the CPU's, relative RMSE %.2e <= 3e-2%s%s",
              name, dev, e, s ? ": " : "", s ? gdn2_last_error() : "");
        free(a), free(b);
    }
    /* greedy generation in lockstep: the CPU's token fed to both; the GPU's choice the same wherever
     * the CPU's margin is above 0.1 */
    if (!st) {
        gdn2_model_state *gc = NULL, *gg = NULL;
        float *a = malloc((size_t)Vp * 4), *b = malloc((size_t)Vp * 4);
        int32_t prompt[12], out[16];
        for (int i = 0; i < 12; i++) prompt[i] = (int32_t)((i * 37 + 5) % V);
        int s = gdn2_model_state_create(mc, 1, 64, &gc);
        if (!s) s = gdn2_model_state_create(mg, 1, 64, &gg);
        if (!s) s = gdn2_model_prefill(mc, gc, prompt, 12, b);
        if (!s) s = gdn2_model_prefill(mg, gg, prompt, 12, a);
        int agree = 1, checked = 0;
        for (int i = 0; i < 16 && !s; i++) {
            double mcpu, mgpu;
            int32_t tc = argmax_v(b, V, &mcpu), tg = argmax_v(a, V, &mgpu);
            if (mcpu > 0.1) checked++, agree &= tc == tg;
            if (!s) s = gdn2_model_step(mc, gc, &tc, b);
            if (!s) s = gdn2_model_step(mg, gg, &tc, a);
        }
        CHECK(!s && agree, "%s: greedy decoding in lockstep: %s picks the CPU's token at all %d positions with a margin "
              "> 0.1%s%s", name, dev, checked, s ? ": " : "", s ? gdn2_last_error() : "");
        s = gdn2_generate(mg, prompt, 12, 16, 0.0f, 0, 1, out);
        int valid = !s;
        for (int i = 0; i < 16 && valid; i++) valid = out[i] >= 0 && out[i] < V;
        CHECK(valid, "%s: gdn2_generate (greedy, 16 tokens) on %s%s%s", name, dev, s ? ": " : "", s ? gdn2_last_error() : "");
        gdn2_model_state_free(gc), gdn2_model_state_free(gg);
        free(a), free(b);
    }
    /* a state of the CPU model handed to the device model */
    if (!st && strcmp(dev, "cpu")) {
        int32_t t = 1;
        float *a = malloc((size_t)Vp * 4);
        int s = gdn2_model_step_slots(mg, sc, 1, NULL, NULL, &t, a);
        CHECK(s == GDN2_ERR_ARG && contains(gdn2_last_error(), "cpu") && contains(gdn2_last_error(), dev),
              "%s: a CPU state given to the %s model is refused: %s", name, dev, gdn2_last_error());
        free(a);
    }
    gdn2_model_state_free(sc), gdn2_model_state_free(sg), gdn2_model_state_free(sg2);
    free(lc), free(lg), free(lg2);
    gdn2_model_free(mc), gdn2_model_free(mg);
}

/* keep mode on the GPU (gdn2_model.keep_chunk): the recurrent layers' chunk reserve (keep_for_backward /
 * reuse_forward) at K = V = 128, the bf16 fast path, T = 200 (a partial last chunk), alone and with
 * recompute, against the recomputing backward: the same loss to 1e-5, every gradient within 1e-3 of
 * the largest (bf16 gradients; the op's own test, test_cuda "reuse", compares the two bit for bit) */
static void test_keep_chunk(void) {
    gdn2_model_cfg c;
    gdn2_model_config("hybrid_tiny", &c);
    gdn2_model_set_layout(&c, "gdn2,kda,swa");
    c.n_layer = 3, c.gdn_heads = 2, c.gdn_head_dim = 128;
    gdn2_model *m = NULL;
    int st = gdn2_model_check(&c) ? 1 : gdn2_model_create(&c, &m);
    if (!st) gdn2_model_init(m, 11), st = gdn2_model_set_device(m, "cuda");
    CHECK(st == 0, "keep_chunk on the GPU: model (gdn2,kda,swa, 2 heads of 128): %s", st ? gdn2_last_error() : "ok");
    if (st) { gdn2_model_free(m); return; }
    enum { B = 2, T = 200 };
    int32_t *tok = malloc(B * T * sizeof(int32_t)), *tgt = malloc(B * T * sizeof(int32_t));
    for (int i = 0; i < B * T; i++) tok[i] = (i * 29 + 3) % 256, tgt[i] = (i * 13 + 1) % 256;
    float *g0 = malloc(m->n_flat * sizeof(float)), l0 = 0;
    for (int mode = 0; mode < 3 && !st; mode++) {
        m->keep_chunk = mode > 0, m->recompute = mode == 2;
        float l = 0;
        st = gdn2_model_zero_grad(m);
        if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &l, 1);
        if (!st) st = gdn2_model_backward(m, 1.0f);
        if (!st) st = gdn2_model_sync_host(m);
        if (st) break;
        if (mode == 0) { memcpy(g0, m->grads, m->n_flat * sizeof(float)), l0 = l; continue; }
        double gmax = 0, dmax = 0;
        for (size_t i = 0; i < m->n_flat; i++) {
            if (fabs(g0[i]) > gmax) gmax = fabs(g0[i]);
            if (fabs(g0[i] - m->grads[i]) > dmax) dmax = fabs(g0[i] - m->grads[i]);
        }
        /* bit for bit: the kept intermediates are the ones the backward would recompute, and every sum of the
         * chunk backward has a fixed order since 8f70f32 (before it, dg's shared-memory atomics made the two modes
         * differ by ~1e-7, which a 1e-3 bar had let through) */
        CHECK(l == l0 && !memcmp(g0, m->grads, m->n_flat * sizeof(float)),
              "keep_chunk%s on the GPU (gdn2,kda,swa, K=V=128, T=200): loss %.7f vs %.7f, every gradient bit for bit "
              "equal (max|grad diff| %.2e of max|grad| %.2e)", mode == 2 ? " + recompute" : "", l, l0, dmax, gmax);
    }
    CHECK(st == 0, "keep_chunk on the GPU: three training steps ran: %s", st ? gdn2_last_error() : "ok");
    /* gdn2_model_forward_backward on the GPU (lm_head's loss and backward from one product per chunk):
     * the same loss and gradients as forward then backward, bit for bit (the same ops, one fewer pass),
     * with every row a target and with a third ignored (the gathered rows) */
    m->keep_chunk = 0, m->recompute = 0;
    for (int part = 0; part < 2 && !st; part++) {
        for (int i = 0; i < B * T; i++) tgt[i] = part && i % 3 == 0 ? GDN2_IGNORE : (i * 13 + 1) % 256;
        float la = 0, lb = 0;
        st = gdn2_model_zero_grad(m);
        if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &la, 1);
        if (!st) st = gdn2_model_backward(m, 1.0f);
        if (!st) st = gdn2_model_sync_host(m);
        if (!st) memcpy(g0, m->grads, m->n_flat * sizeof(float));
        if (!st) st = gdn2_model_zero_grad(m);
        if (!st) st = gdn2_model_forward_backward(m, tok, tgt, B, T, &lb, 1.0f);
        if (!st) st = gdn2_model_sync_host(m);
        CHECK(!st && la == lb && !memcmp(g0, m->grads, m->n_flat * sizeof(float)),
              "forward_backward on the GPU (%s targets): loss %.7f vs forward + backward %.7f, every gradient bit for "
              "bit equal%s%s", part ? "a third ignored" : "all", lb, la, st ? ": " : "", st ? gdn2_last_error() : "");
    }
    free(tok), free(tgt), free(g0);
    gdn2_model_free(m);
}

int main(void) {
    const char *ddev = getenv("GDN2_TEST_DECODE_DEVICE");
    if (ddev && !strcmp(ddev, "cpu")) { /* the decode checks with a CPU model as the device one */
        if (make_tmp_dir("test_model_cuda_")) return test_summary();
        test_decode("tiny", "cpu", g_dir);
        test_decode("hybrid_tiny", "cpu", g_dir);
        return test_summary();
    }
    if (!gdn2_cuda_available()) {
        const char *why = gdn2_last_error();
        SKIP_NO_GPU("model on the GPU: layer and model fixtures, training vs CPU, determinism, cross-load, resume, "
                    "generation vs CPU (%s)",
                    why);
        return test_summary();
    }
    test_layer_fixture();
    test_model_fixture();
    test_keep_chunk();
    if (make_tmp_dir("test_model_cuda_")) return test_summary();
    test_train("tiny", g_dir);
    test_train("hybrid_tiny", g_dir);
    test_resume(g_dir);
    test_eval_devices("tiny", g_dir);
    test_decode("tiny", "cuda", g_dir);
    test_decode("hybrid_tiny", "cuda", g_dir);
    return test_summary();
}
