/* One run of the mixer study (docs/reports/STUDY.md): train a small model on one synthetic task with the
 * gdn2 library, evaluate it on the test stream, print one JSON line.
 *
 *   study --task mqar|fmqar|parity|modarith|s-niah-1|s-niah-3|mk-niah-1 --mixer gdn2|kda|gdn|attn
 *         [--seed S] [--steps N] [--batch B] [--lr LR] [--layers L] [--dim D] [--heads H]
 *         [--head-dim K] [--mlp I] [--len T] [--vocab V] [--pairs N] [--neg-eig]
 *         [--eval-samples N] [--eval-lens a,b,c] [--haystack FILE] [--threads N] [--out CKPT]
 *         [--full-loss]   (NIAH: train on every next byte of the prompt as well as the answer)
 *
 * Recurrent mixers share H, K (= V) so their recurrent state H*K*V per layer is matched; the
 * attention reference uses the same H and head size. Built by experiments/study.sh (study.mk). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2.h"
#include "gdn2_data.h"
#include "gdn2_model.h"
#include "util/internal.h" /* gdn2_now */
#include "util/rng.h"


typedef struct {
    const gdn2_task_info *task;
    gdn2_mqar_cfg mq;
    gdn2_state_cfg sc;
    gdn2_ruler_res res;
    int niah_len;
    int full_loss; /* NIAH: 1 = next-byte loss on the whole prompt too, not only the answer */
} task_src;

/* one training sample of length T (split 0). NIAH: prompt + " answer[, answer...]." with loss on
 * the continuation only (or, with --full-loss, on every next byte of prompt and continuation),
 * right-padded with 0 (causal, so padding never affects the loss rows). */
static int train_sample(task_src *s, uint64_t seed, int T, int32_t *tok, int32_t *tgt) {
    int id = s->task->id;
    if (s->task->kind == GDN2_TASK_KIND_TOKENS) {
        if (id == GDN2_TASK_MQAR || id == GDN2_TASK_FMQAR) return gdn2_mqar_sample(&s->mq, seed, 0, tok, tgt);
        return gdn2_state_sample(&s->sc, seed, 0, tok, tgt, NULL);
    }
    gdn2_niah_cfg c = {id, s->niah_len, 0, 0, 0};
    gdn2_niah_sample smp;
    int st = gdn2_niah_generate(&s->res, &c, seed, 0, &smp);
    if (st) return st;
    char cont[256] = " ";
    for (int a = 0; a < smp.n_answers; a++) {
        if (a) strcat(cont, ", ");
        strcat(cont, smp.answers[a]);
    }
    strcat(cont, ".");
    int n = smp.prompt_len, m = (int)strlen(cont);
    if (n + m > T) { gdn2_niah_sample_free(&smp); return gdn2_error(GDN2_ERR_ARG, "study: sample longer than T"); }
    for (int t = 0; t < T; t++) tok[t] = 0, tgt[t] = GDN2_IGNORE;
    for (int t = 0; t < n; t++) tok[t] = (unsigned char)smp.prompt[t];
    for (int t = 0; t < m; t++) tok[n + t] = (unsigned char)cont[t];
    for (int t = s->full_loss ? 0 : n - 1; t < n + m - 1; t++) tgt[t] = tok[t + 1];
    gdn2_niah_sample_free(&smp);
    return GDN2_OK;
}

/* ---- the trained model as an evaluator model (same protocol as gdn2 eval) ------------------- */
typedef struct { gdn2_model *m; float *logits; int64_t cap; } mctx;
static int grow(mctx *c, int64_t rows) {
    if (rows <= c->cap) return GDN2_OK;
    float *p = realloc(c->logits, sizeof(float) * (size_t)rows * (size_t)c->m->cfg.padded_vocab);
    if (!p) return gdn2_error(GDN2_ERR_NOMEM, "study: logits");
    c->logits = p, c->cap = rows;
    return GDN2_OK;
}
static int32_t amax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return (int32_t)b;
}
static int gen(void *p, const int32_t *prompt, int n, int max_new, int32_t *out, int *n_out, gdn2_eval_stop_fn stop, void *sc) {
    mctx *c = p;
    *n_out = 0;
    gdn2_model_state *s;
    int st = grow(c, 1);
    if (st || (st = gdn2_model_state_create(c->m, 1, (int64_t)n + max_new, &s))) return st;
    st = gdn2_model_prefill(c->m, s, prompt, n, c->logits);
    for (int k = 0; !st && k < max_new; k++) {
        int32_t nx = amax(c->logits, c->m->cfg.vocab_size);
        out[k] = nx, *n_out = k + 1;
        if (k + 1 == max_new || (stop && stop(out, k + 1, sc))) break;
        st = gdn2_model_step(c->m, s, &nx, c->logits);
    }
    gdn2_model_state_free(s);
    return st;
}
static int pred(void *p, const int32_t *tok, int n, int32_t *out) {
    mctx *c = p;
    int st = grow(c, n);
    if (st || (st = gdn2_model_forward(c->m, tok, NULL, 1, n, c->logits, NULL, 0))) return st;
    for (int t = 0; t < n; t++) out[t] = amax(c->logits + (size_t)t * c->m->cfg.padded_vocab, c->m->cfg.vocab_size);
    return GDN2_OK;
}

int main(int argc, char **argv) {
    const char *task_name = "mqar", *mixer = "gdn2", *hay = GDN2_DEFAULT_TEXT, *out = NULL, *eval_lens = NULL;
    long long seed = 0, steps = 500, batch = 32, layers = 2, dim = 64, heads = 2, head_dim = 32, mlp = 0, len = 64,
              vocab = 256, pairs = 0, eval_samples = 200, threads = 1;
    double lr = 3e-3, target = 0;
    long long eval_every = 100;
    int neg = 0, full_loss = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
#define OPT_LL(name, var) else if (!strcmp(a, name)) var = atoll(v), i++;
        if (!strcmp(a, "--task")) task_name = v, i++;
        else if (!strcmp(a, "--mixer")) mixer = v, i++;
        else if (!strcmp(a, "--haystack")) hay = v, i++;
        else if (!strcmp(a, "--out")) out = v, i++;
        else if (!strcmp(a, "--eval-lens")) eval_lens = v, i++;
        else if (!strcmp(a, "--lr")) lr = atof(v), i++;
        else if (!strcmp(a, "--target")) target = atof(v), i++;
        else if (!strcmp(a, "--neg-eig")) neg = 1;
        else if (!strcmp(a, "--full-loss")) full_loss = 1;
        OPT_LL("--seed", seed) OPT_LL("--steps", steps) OPT_LL("--batch", batch) OPT_LL("--layers", layers)
        OPT_LL("--dim", dim) OPT_LL("--heads", heads) OPT_LL("--head-dim", head_dim) OPT_LL("--mlp", mlp)
        OPT_LL("--len", len) OPT_LL("--vocab", vocab) OPT_LL("--pairs", pairs) OPT_LL("--eval-samples", eval_samples)
        OPT_LL("--threads", threads) OPT_LL("--eval-every", eval_every)
        else { fprintf(stderr, "study: unknown option '%s'\n", a); return 2; }
    }
    task_src src;
    memset(&src, 0, sizeof src);
    if (!(src.task = gdn2_task_find(task_name))) { fprintf(stderr, "study: unknown task '%s'\n", task_name); return 2; }
    int id = src.task->id, text = src.task->kind == GDN2_TASK_KIND_TEXT, T = (int)len, task_vocab;
    if (text) {
        if (gdn2_ruler_load(&src.res, GDN2_DEFAULT_ADJS, GDN2_DEFAULT_NOUNS, gdn2_niah_needs_essay(id) ? hay : NULL)) {
            fprintf(stderr, "study: %s%s%s\n", gdn2_last_error(), strcmp(hay, GDN2_DEFAULT_TEXT) ? "" : "; ",
                    strcmp(hay, GDN2_DEFAULT_TEXT) ? "" : GDN2_DEFAULT_TEXT_HINT);
            return 2;
        }
        src.niah_len = T, src.full_loss = full_loss, task_vocab = 256;
    } else if (id == GDN2_TASK_MQAR || id == GDN2_TASK_FMQAR) {
        gdn2_mqar_cfg mq = {(int)vocab, T, pairs > 0 ? (int)pairs : (T / 16 > 0 ? T / 16 : 1), id == GDN2_TASK_FMQAR, 0, 0, 0};
        src.mq = mq, task_vocab = (int)vocab;
        if (gdn2_mqar_check(&mq)) { fprintf(stderr, "study: %s\n", gdn2_last_error()); return 2; }
    } else {
        /* train lengths 3..40 (the protocol); the padding to 256 is not needed for a causal model */
        gdn2_state_cfg sc = {id == GDN2_TASK_PARITY ? GDN2_ST_PARITY : GDN2_ST_MODARITH, 40, 0, 0};
        src.sc = sc, T = 40, task_vocab = gdn2_state_vocab(sc.kind);
    }

    gdn2_model_cfg c;
    gdn2_model_config("tiny", &c);
    if (gdn2_model_set_layout(&c, mixer)) { fprintf(stderr, "study: %s\n", gdn2_last_error()); return 2; }
    c.n_layer = layers, c.n_embd = dim, c.gdn_heads = heads, c.gdn_v_heads = 0, c.gdn_head_dim = head_dim;
    c.n_head = heads, c.n_query_groups = 0, c.head_size = head_dim;
    c.intermediate_size = mlp > 0 ? mlp : 4 * dim;
    c.vocab_size = task_vocab, c.block_size = 4096, c.allow_neg_eigval = neg;
    snprintf(c.name, sizeof c.name, "study");
    gdn2_model *m;
    if (gdn2_model_check(&c) || gdn2_model_create(&c, &m)) { fprintf(stderr, "study: %s\n", gdn2_last_error()); return 2; }
    gdn2_model_init(m, (uint64_t)seed + 1);
    m->n_threads = (int)threads;
    gdn2_adamw opt;
    gdn2_adamw_cfg ac = gdn2_adamw_default();
    ac.weight_decay = 0.1f;
    gdn2_adamw_init(&opt, &ac, m->n_flat);

    const int64_t B = batch;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(B * T)), *tgt = malloc(sizeof(int32_t) * (size_t)(B * T));
    double t0 = gdn2_now(), loss_ema = NAN;
    int st = 0;
    mctx mc = {m, NULL, 0};
    gdn2_eval_model em = {&mc, (int)c.vocab_size, gen, pred};
    long long done = 0;
    for (int64_t step = 0; step < steps && !st; step++) {
        for (int64_t b = 0; b < B && !st; b++)
            st = train_sample(&src, gdn2_mix64(gdn2_mix64((uint64_t)seed * 1000003ULL + (uint64_t)step) + (uint64_t)b), T, tok + b * T, tgt + b * T);
        float loss;
        if (!st) st = gdn2_model_zero_grad(m);
        if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &loss, 1);
        if (!st) st = gdn2_model_backward(m, 1.0f);
        if (st) break;
        if (!isfinite(loss)) { st = gdn2_error(GDN2_ERR_ARG, "loss %g at step %lld", loss, (long long)step); break; }
        gdn2_clip_grad_norm(m->grads, m->n_flat, 1.0f);
        gdn2_adamw_step(&opt, m, gdn2_lr_at(step, steps / 20, steps, (float)lr, (float)lr / 10));
        loss_ema = isnan(loss_ema) ? loss : 0.95 * loss_ema + 0.05 * loss;
        done = step + 1;
        if ((step + 1) % 100 == 0) fprintf(stderr, "[%s %s seed %lld] step %lld loss %.4f (%.0fs)\n", task_name, mixer, seed,
                                           (long long)step + 1, loss_ema, gdn2_now() - t0);
        /* early stop (Zoology: validation accuracy > 0.99): 100 samples of a separate test seed at
         * the training length, so the final evaluation below stays untouched */
        if (target > 0 && eval_every > 0 && (step + 1) % eval_every == 0 && step + 1 < steps) {
            gdn2_eval_cell_cfg cc = {src.task, T, 0, 0, 100, 4242, 0, (int)vocab, (int)pairs, text ? &src.res : NULL};
            if (!text && id >= GDN2_TASK_PARITY) cc.length = 39; /* a train-range length */
            gdn2_eval_cell r;
            if ((st = gdn2_eval_cell_run(&em, &cc, &r))) break;
            fprintf(stderr, "[%s %s seed %lld] step %lld check %.1f %%\n", task_name, mixer, seed, (long long)step + 1, r.score);
            if (r.score >= target) break;
        }
    }
    double train_s = gdn2_now() - t0;
    if (st) { fprintf(stderr, "study: %s\n", gdn2_last_error()); return 1; }
    if (out && gdn2_model_save(m, out)) fprintf(stderr, "study: %s\n", gdn2_last_error());

    /* evaluation on the test stream */
    int lens[8], nl = 0;
    if (eval_lens) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", eval_lens);
        for (char *p = strtok(buf, ","); p && nl < 8; p = strtok(NULL, ",")) lens[nl++] = atoi(p);
    } else if (text || id <= GDN2_TASK_FMQAR) lens[nl++] = T;
    else lens[0] = 41, lens[1] = 101, lens[2] = 255, nl = 3;
    printf("{\"task\":\"%s\",\"mixer\":\"%s\",\"neg_eig\":%d,\"seed\":%lld,\"steps\":%lld,\"batch\":%lld,\"lr\":%g,"
           "\"layers\":%lld,\"dim\":%lld,\"heads\":%lld,\"head_dim\":%lld,\"state_per_layer\":%lld,\"params\":%zu,"
           "\"train_len\":%d,\"full_loss\":%d,\"final_loss\":%.5f,\"train_s\":%.1f,\"eval\":[",
           src.task->name, mixer, neg, seed, done, batch, lr, layers, dim, heads, head_dim, heads * head_dim * head_dim,
           m->n_params, T, full_loss, loss_ema, train_s);
    for (int i = 0; i < nl && !st; i++) {
        gdn2_eval_cell_cfg cc = {src.task, lens[i], 0, 0, (int)eval_samples, 777, 0, (int)vocab, (int)pairs, text ? &src.res : NULL};
        gdn2_eval_cell r;
        if ((st = gdn2_eval_cell_run(&em, &cc, &r))) break;
        printf("%s{\"length\":%d,\"score\":%.2f,\"part\":%.2f,\"scaled\":%.4f,\"n\":%d}", i ? "," : "", lens[i], r.score,
               r.score_part, r.scaled, r.n);
    }
    printf("],\"wall_s\":%.1f}\n", gdn2_now() - t0);
    if (st) fprintf(stderr, "study: eval: %s\n", gdn2_last_error());
    free(tok), free(tgt), free(mc.logits);
    gdn2_adamw_free(&opt);
    gdn2_model_free(m);
    gdn2_ruler_free(&src.res);
    return st ? 1 : 0;
}
