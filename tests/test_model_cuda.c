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
 *   5. resume on the GPU is bit-exact: 20 steps straight == 10 + resume 10 (weights, AdamW m, v). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
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

int main(void) {
    if (!gdn2_cuda_available()) {
        const char *why = gdn2_last_error();
        SKIP_NO_GPU("model on the GPU: layer and model fixtures, training vs CPU, determinism, cross-load, resume (%s)",
                    why);
        return test_summary();
    }
    test_layer_fixture();
    test_model_fixture();
    if (make_tmp_dir("test_model_cuda_")) return test_summary();
    test_train("tiny", g_dir);
    test_train("hybrid_tiny", g_dir);
    test_resume(g_dir);
    return test_summary();
}
