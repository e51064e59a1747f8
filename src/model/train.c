/* The training loop behind `gdn2 train` and `gdn2 demo`: AdamW, warmup + cosine, clipping,
 * gradient accumulation, periodic eval, atomic checkpoints and bit-exact resume.
 *
 * Determinism: every batch is a pure function of (seed, step, micro-step), the optimizer state is
 * saved in fp32, and all reductions run in a fixed order for a fixed thread count, so "N steps" and
 * "k steps, save, resume, N-k steps" produce identical losses (tests/test_train.c). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_data.h"
#include "gdn2_text.h"
#include "model_internal.h"
#include "util/internal.h"
#include "util/rng.h"

void gdn2_train_defaults(gdn2_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->model = "tiny";
    o->task = "text";
    o->batch = 16;
    o->seq_len = 64;
    o->steps = 1000;
    o->accum = 1;
    o->warmup = -1; /* -1: 5% of the steps */
    o->lr = 3e-3f;
    o->min_lr = -1.0f; /* -1: lr / 10 */
    o->weight_decay = 0.1f;
    o->clip = 1.0f;
    o->seed = 3407;
    o->log_every = 50;
    o->eval_every = 0;
    o->eval_batches = 20;
    o->eval_samples = 500;
    o->mqar_vocab = 256;
    o->mqar_pairs = 4;
}

static uint64_t batch_seed(uint64_t seed, int64_t step, int64_t micro) {
    return gdn2_mix64(gdn2_mix64(seed * 0x100000001B3ULL + (uint64_t)step) ^ ((uint64_t)micro * 0x9E3779B97F4A7C15ULL));
}

typedef struct {
    int is_mqar;
    gdn2_text text;
    gdn2_mqar_cfg mq;
} data_src;

/* one [B,T] batch of the train (split 0) or eval (split 1) stream */
static int get_batch(const data_src *ds, int split, uint64_t seed, int64_t B, int64_t T, int32_t *tok, int32_t *tgt) {
    if (!ds->is_mqar) return gdn2_text_batch(&ds->text, split, seed, B, T, tok, tgt);
    for (int64_t b = 0; b < B; b++) {
        int st = gdn2_mqar_sample(&ds->mq, gdn2_mix64(seed + (uint64_t)b), split, tok + b * T, tgt + b * T);
        if (st) return st;
    }
    return GDN2_OK;
}

/* eval: mean CE and argmax accuracy over the labelled positions of the eval stream */
static int evaluate(gdn2_model *m, const data_src *ds, const gdn2_train_opts *o, float *loss, float *acc) {
    const int64_t T = o->seq_len, Vp = m->cfg.padded_vocab;
    int64_t B = o->batch, n_batches;
    if (ds->is_mqar) n_batches = (o->eval_samples + B - 1) / B;
    else n_batches = o->eval_batches;
    int32_t *tok = malloc((size_t)B * T * sizeof(int32_t)), *tgt = malloc((size_t)B * T * sizeof(int32_t));
    float *lg = malloc((size_t)B * T * Vp * sizeof(float));
    if (!tok || !tgt || !lg) {
        free(tok), free(tgt), free(lg);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for evaluation");
    }
    double lsum = 0.0;
    int64_t nlab = 0, ncorrect = 0;
    int st = GDN2_OK;
    for (int64_t i = 0; i < n_batches && !st; i++) {
        /* fixed eval set: seeds independent of the step */
        st = get_batch(ds, 1, batch_seed(o->seed ^ 0xE7A1ULL, i, 0) + (uint64_t)(i * B), B, T, tok, tgt);
        float l = 0.0f;
        if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, lg, &l, 0);
        if (st) break;
        int64_t nv = 0;
        for (int64_t r = 0; r < B * T; r++) {
            if (tgt[r] == GDN2_IGNORE) continue;
            nv++;
            const float *z = lg + r * Vp;
            int64_t am = 0;
            for (int64_t v = 1; v < m->cfg.vocab_size; v++)
                if (z[v] > z[am]) am = v;
            ncorrect += am == tgt[r];
        }
        lsum += (double)l * nv;
        nlab += nv;
    }
    free(tok), free(tgt), free(lg);
    *loss = nlab ? (float)(lsum / nlab) : 0.0f;
    *acc = nlab ? (float)ncorrect / (float)nlab : 0.0f;
    return st;
}

static void fmt_time(double s, char *buf, size_t n) {
    if (s < 0 || !isfinite(s)) s = 0;
    int64_t t = (int64_t)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
    else snprintf(buf, n, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
}

static int save_all(const gdn2_model *m, const gdn2_adamw *opt, const gdn2_train_opts *o) {
    if (!o->out) return GDN2_OK;
    char path[4096], tj[256];
    int st = gdn2_model_save(m, o->out);
    if (st) return st;
    snprintf(path, sizeof path, "%s.optim", o->out);
    snprintf(tj, sizeof tj, "{\"step\":%lld,\"seed\":%llu,\"steps\":%lld,\"task\":\"%s\"}", (long long)opt->step,
             (unsigned long long)o->seed, (long long)o->steps, o->task);
    return gdn2_adamw_save(opt, path, tj);
}

int gdn2_train(const gdn2_train_opts *oin, gdn2_train_result *res, gdn2_model **model_out) {
    gdn2_train_opts o = *oin;
    gdn2_train_result r;
    memset(&r, 0, sizeof r);
    if (model_out) *model_out = NULL;
    FILE *log = o.log ? o.log : stderr;
    if (o.warmup < 0) o.warmup = o.steps / 20;
    if (o.min_lr < 0) o.min_lr = o.lr / 10.0f;
    if (o.accum < 1) o.accum = 1;
    if (o.batch < 1 || o.seq_len < 2 || o.steps < 1)
        return gdn2_error(GDN2_ERR_ARG, "train: batch %lld, seq_len %lld, steps %lld must be >= 1, 2, 1",
                          (long long)o.batch, (long long)o.seq_len, (long long)o.steps);
    data_src ds;
    memset(&ds, 0, sizeof ds);
    int st = GDN2_OK;
    int64_t vocab = GDN2_BYTE_VOCAB;
    if (!strcmp(o.task, "mqar")) {
        ds.is_mqar = 1;
        ds.mq.vocab_size = o.mqar_vocab;
        ds.mq.seq_len = (int)o.seq_len;
        ds.mq.n_pairs = o.mqar_pairs;
        ds.mq.no_fill = o.mqar_no_fill;
        if ((st = gdn2_mqar_check(&ds.mq))) return st;
        vocab = o.mqar_vocab;
    } else if (!strcmp(o.task, "text")) {
        const char *path = o.data ? o.data : "../shared/data/tinyshakespeare.txt";
        if ((st = gdn2_text_load(path, 0.1, &ds.text))) return st;
    } else {
        return gdn2_error(GDN2_ERR_ARG, "train: unknown task '%s' (text or mqar)", o.task);
    }

    gdn2_model *m = NULL;
    gdn2_adamw opt;
    memset(&opt, 0, sizeof opt);
    gdn2_adamw_cfg ac = gdn2_adamw_default();
    ac.weight_decay = o.weight_decay;
    ac.exempt_no_decay = o.exempt_no_decay;
    if (o.resume) {
        if (!o.out) {
            st = gdn2_error(GDN2_ERR_ARG, "train: --resume needs the checkpoint path (--out)");
            goto done;
        }
        if ((st = gdn2_model_load(o.out, &m))) goto done;
        if ((st = gdn2_adamw_init(&opt, &ac, m->n_params))) goto done;
        char path[4096];
        snprintf(path, sizeof path, "%s.optim", o.out);
        if ((st = gdn2_adamw_load(&opt, path, NULL))) goto done;
    } else {
        gdn2_model_cfg c;
        if ((st = gdn2_model_config(o.model, &c))) goto done;
        if (o.layout && (st = gdn2_model_set_layout(&c, o.layout))) goto done;
        c.vocab_size = vocab;
        if (o.gdn_heads > 0) c.gdn_heads = c.gdn_v_heads = o.gdn_heads;
        if (o.gdn_head_dim > 0) c.gdn_head_dim = o.gdn_head_dim;
        if ((st = gdn2_model_check(&c))) goto done;
        if ((st = gdn2_model_create(&c, &m))) goto done;
        gdn2_model_init(m, o.seed);
        if ((st = gdn2_adamw_init(&opt, &ac, m->n_params))) goto done;
    }
    if (m->cfg.vocab_size < vocab) {
        st = gdn2_error(GDN2_ERR_ARG, "train: model vocab %lld < data vocab %lld", (long long)m->cfg.vocab_size,
                        (long long)vocab);
        goto done;
    }
    m->n_threads = o.n_threads;
    r.n_params = m->n_params;
    if (!o.quiet)
        fprintf(log, "model %s layout %s: %zu parameters (%.3fM); task %s, batch %lld x %lld, accum %lld, %lld steps%s\n",
                m->cfg.name, m->cfg.layout, m->n_params, m->n_params / 1e6, o.task, (long long)o.batch,
                (long long)o.seq_len, (long long)o.accum, (long long)o.steps,
                opt.step ? " (resumed)" : "");
    {
        const int64_t B = o.batch, T = o.seq_len;
        int32_t *tok = malloc((size_t)B * T * sizeof(int32_t)), *tgt = malloc((size_t)B * T * sizeof(int32_t));
        if (!tok || !tgt) {
            free(tok), free(tgt);
            st = gdn2_error(GDN2_ERR_NOMEM, "out of memory for batches");
            goto done;
        }
        int64_t stop = o.stop_at > 0 && o.stop_at < o.steps ? o.stop_at : o.steps;
        double t0 = gdn2_now(), tlast = t0;
        int64_t tok_done = 0, tok_last = 0, step0 = opt.step;
        float vl = NAN, va = NAN;
        while (opt.step < stop && !st) {
            int64_t step = opt.step;
            if ((st = gdn2_model_zero_grad(m))) break;
            double lsum = 0.0;
            for (int64_t k = 0; k < o.accum && !st; k++) {
                float l;
                st = get_batch(&ds, 0, batch_seed(o.seed, step, k), B, T, tok, tgt);
                if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &l, 1);
                if (!st) st = gdn2_model_backward(m, 1.0f / (float)o.accum);
                lsum += l;
            }
            if (st) break;
            float loss = (float)(lsum / o.accum);
            if (!isfinite(loss)) {
                st = gdn2_error(GDN2_ERR_ARG, "train: loss is %g at step %lld (diverged; lower --lr)", loss,
                                (long long)step);
                break;
            }
            gdn2_clip_grad_norm(m->grads, m->n_params, o.clip);
            float lr = gdn2_lr_at(step, o.warmup, o.steps, o.lr, o.min_lr);
            gdn2_adamw_step(&opt, m, lr);
            if (o.loss_trace) o.loss_trace[step] = loss;
            r.train_loss = loss;
            tok_done += B * T * o.accum;
            int last = opt.step == stop;
            int do_eval = last || (o.eval_every > 0 && opt.step % o.eval_every == 0);
            if (do_eval) {
                if ((st = evaluate(m, &ds, &o, &vl, &va))) break;
                r.val_loss = vl, r.val_acc = va;
            }
            if (!o.quiet && (last || (o.log_every > 0 && opt.step % o.log_every == 0) || do_eval)) {
                double now = gdn2_now();
                double tps = (now - tlast) > 0 ? (tok_done - tok_last) / (now - tlast) : 0;
                double avg = (tok_done) / (now - t0 > 0 ? now - t0 : 1);
                char eta[32];
                fmt_time((double)(stop - opt.step) * B * T * o.accum / (avg > 0 ? avg : 1), eta, sizeof eta);
                fprintf(log, "step %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s", (long long)opt.step,
                        (long long)o.steps, loss, lr, tps, eta);
                if (do_eval) fprintf(log, " | val loss %.4f acc %.4f", vl, va);
                fprintf(log, "\n");
                fflush(log);
                tlast = now, tok_last = tok_done;
            }
            if (o.out && o.save_every > 0 && opt.step % o.save_every == 0 && !last) st = save_all(m, &opt, &o);
            if (do_eval && ds.is_mqar && o.target_acc > 0 && va >= o.target_acc) break;
            if (o.time_limit_s > 0 && gdn2_now() - t0 > o.time_limit_s) {
                if (!do_eval && !(st = evaluate(m, &ds, &o, &vl, &va))) r.val_loss = vl, r.val_acc = va;
                break;
            }
        }
        free(tok), free(tgt);
        r.steps = opt.step;
        r.wall_s = gdn2_now() - t0;
        r.tokens_per_s = r.wall_s > 0 ? (double)tok_done / r.wall_s : 0;
        (void)step0;
        if (!st) st = save_all(m, &opt, &o);
    }
done:
    if (!st && !o.quiet)
        fprintf(log,
                "{\"steps\":%lld,\"train_loss\":%.6f,\"val_loss\":%.6f,\"val_acc\":%.6f,\"wall_s\":%.2f,"
                "\"tokens_per_s\":%.0f,\"params\":%zu,\"model\":\"%s\",\"layout\":\"%s\",\"task\":\"%s\"}\n",
                (long long)r.steps, r.train_loss, r.val_loss, r.val_acc, r.wall_s, r.tokens_per_s, r.n_params,
                m ? m->cfg.name : "", m ? m->cfg.layout : "", o.task);
    if (res) *res = r;
    gdn2_adamw_free(&opt);
    if (!ds.is_mqar) gdn2_text_free(&ds.text);
    if (model_out && !st) *model_out = m;
    else gdn2_model_free(m);
    return st;
}
