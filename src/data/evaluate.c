/* Evaluation of one (task, length, depth) cell: draw n test samples, run the model through the
 * callbacks of gdn2_eval_model, score as the literature does (RULER, Zoology, Grazzi et al.; docs/TASKS.md "Scoring"). */
#include <stdlib.h>
#include <string.h>

#include "gdn2.h"
#include "gdn2_data.h"
#include "rng.h"
#include "util/internal.h"

/* sample i of a cell: independent of the length/depth, so sample i carries the same draw stream at
 * every cell of the heatmap */
static uint64_t sample_seed(uint64_t seed, int i) { return gdn2_mix64(seed * 0x9E3779B97F4A7C15ULL + 0x5EED) + (uint64_t)i; }

/* stop generating once every reference occurs in the text so far: later tokens cannot lower
 * string_match_all or string_match_part, so the score is the one of the full budget */
typedef struct { const gdn2_niah_sample *s; char *buf; } stop_ctx;
static int niah_stop(const int32_t *gen, int n, void *p) {
    stop_ctx *c = p;
    for (int i = 0; i < n; i++) c->buf[i] = gen[i] > 0 && gen[i] < 256 ? (char)gen[i] : '\n';
    c->buf[n] = 0;
    const char *refs[GDN2_NIAH_MAX_ANS];
    for (int a = 0; a < c->s->n_answers; a++) refs[a] = c->s->answers[a];
    return gdn2_string_match_all(c->buf, refs, c->s->n_answers) == 1.0;
}

static int eval_niah(const gdn2_eval_model *m, const gdn2_eval_cell_cfg *c, gdn2_eval_cell *o) {
    if (m->vocab_size < 256)
        return gdn2_error(GDN2_ERR_ARG, "%s: the model's vocab_size %d cannot hold the byte-level prompt (needs 256)",
                          c->task->alias, m->vocab_size);
    gdn2_niah_cfg nc = {c->task->id, c->length, c->max_new, c->use_depth, c->depth};
    double sum = 0, sum_part = 0, len = 0;
    for (int i = 0; i < c->n_samples; i++) {
        gdn2_niah_sample s;
        int st = gdn2_niah_generate(c->res, &nc, sample_seed(c->seed, i), 1, &s);
        if (st) return st;
        int32_t *tok = gdn2_malloc(sizeof(int32_t) * (size_t)(s.prompt_len + s.max_new), "eval tokens");
        char *buf = gdn2_malloc((size_t)s.max_new + 1, "eval text"), *post = gdn2_malloc((size_t)s.max_new + 1, "eval text");
        if (!tok || !buf || !post) { free(tok); free(buf); free(post); gdn2_niah_sample_free(&s); return GDN2_ERR_NOMEM; }
        /* byte-level tokens: token = byte value */
        for (int t = 0; t < s.prompt_len; t++) tok[t] = (unsigned char)s.prompt[t];
        int n_gen = 0;
        stop_ctx sc = {&s, buf};
        st = m->generate(m->ctx, tok, s.prompt_len, s.max_new, tok + s.prompt_len, &n_gen, niah_stop, &sc);
        if (!st) {
            /* decoded text: bytes; out-of-byte-range tokens (a model with vocab > 256) become
             * control characters, which RULER's post-processing turns into newlines */
            for (int t = 0; t < n_gen; t++) {
                int32_t v = tok[s.prompt_len + t];
                buf[t] = v > 0 && v < 256 ? (char)v : '\x01';
            }
            buf[n_gen] = 0; /* a generated 0 byte was mapped to 0x01 above, so the string is whole */
            gdn2_ruler_postprocess(buf, (size_t)n_gen, post, (size_t)s.max_new + 1);
            const char *refs[GDN2_NIAH_MAX_ANS];
            for (int a = 0; a < s.n_answers; a++) refs[a] = s.answers[a];
            sum += gdn2_string_match_all(post, refs, s.n_answers);
            sum_part += gdn2_string_match_part(post, refs, s.n_answers);
            len += s.prompt_len;
        }
        free(tok); free(buf); free(post);
        gdn2_niah_sample_free(&s);
        if (st) return st;
    }
    o->n = c->n_samples;
    o->score = 100.0 * sum / c->n_samples;
    o->score_part = 100.0 * sum_part / c->n_samples;
    o->scaled = o->score / 100.0;
    o->mean_len = len / c->n_samples;
    return GDN2_OK;
}

static int eval_tokens(const gdn2_eval_model *m, const gdn2_eval_cell_cfg *c, gdn2_eval_cell *o) {
    const int id = c->task->id, T = c->length;
    if (T < 1) return gdn2_error(GDN2_ERR_ARG, "%s: length %d must be positive", c->task->name, T);
    gdn2_mqar_cfg mq = {0};
    gdn2_state_cfg sc = {0};
    int task_vocab, st;
    double chance = 0;
    if (id == GDN2_TASK_MQAR || id == GDN2_TASK_FMQAR) {
        mq.vocab_size = c->vocab > 0 ? c->vocab : m->vocab_size;
        mq.seq_len = T;
        mq.n_pairs = c->pairs > 0 ? c->pairs : (T / 16 > 0 ? T / 16 : 1);
        mq.forgetting = id == GDN2_TASK_FMQAR;
        if ((st = gdn2_mqar_check(&mq))) return st;
        task_vocab = mq.vocab_size;
    } else {
        sc.kind = id == GDN2_TASK_PARITY ? GDN2_ST_PARITY : GDN2_ST_MODARITH;
        sc.seq_len = T, sc.min_len = T, sc.max_len = T;
        task_vocab = gdn2_state_vocab(sc.kind);
        chance = sc.kind == GDN2_ST_PARITY ? 0.5 : 0.2;
        if (sc.kind == GDN2_ST_MODARITH && T % 2 == 0)
            return gdn2_error(GDN2_ERR_ARG, "modarith: length %d must be odd (expression, '=', answer)", T);
    }
    if (task_vocab > m->vocab_size)
        return gdn2_error(GDN2_ERR_ARG, "%s: task vocabulary %d exceeds the model's vocab_size %d (checkpoint trained on another task?)",
                          c->task->name, task_vocab, m->vocab_size);
    int32_t *tok = gdn2_malloc(sizeof(int32_t) * 3 * (size_t)T, "eval tokens");
    if (!tok) return GDN2_ERR_NOMEM;
    int32_t *tgt = tok + T, *pred = tgt + T;
    double sum = 0;
    st = GDN2_OK;
    for (int i = 0; i < c->n_samples && !st; i++) {
        uint64_t sd = sample_seed(c->seed, i);
        st = mq.seq_len ? gdn2_mqar_sample(&mq, sd, 1, tok, tgt) : gdn2_state_sample(&sc, sd, 1, tok, tgt, NULL);
        if (!st) st = m->predict(m->ctx, tok, T, pred);
        if (st) break;
        /* MQAR: per-query accuracy averaged over samples; state tracking: sequence accuracy (the
         * only target is the answer, so both equal the answer accuracy there) */
        if (mq.seq_len) sum += gdn2_token_accuracy(pred, tgt, T, NULL, NULL);
        else sum += gdn2_sequence_correct(pred, tgt, T);
    }
    free(tok);
    if (st) return st;
    o->n = c->n_samples;
    o->score = 100.0 * sum / c->n_samples;
    o->score_part = o->score;
    o->scaled = chance > 0 ? (sum / c->n_samples - chance) / (1 - chance) : o->score / 100.0;
    o->mean_len = T;
    return GDN2_OK;
}

int gdn2_eval_cell_run(const gdn2_eval_model *m, const gdn2_eval_cell_cfg *c, gdn2_eval_cell *o) {
    if (!m || !c || !o || !c->task) return gdn2_error(GDN2_ERR_ARG, "eval: NULL argument");
    memset(o, 0, sizeof *o);
    if (c->n_samples < 1) return gdn2_error(GDN2_ERR_ARG, "eval: samples %d must be >= 1", c->n_samples);
    if (c->task->kind == GDN2_TASK_KIND_TEXT) {
        if (!m->generate) return gdn2_error(GDN2_ERR_ARG, "eval: model has no generate callback");
        if (!c->res) return gdn2_error(GDN2_ERR_ARG, "eval: %s needs the RULER word lists", c->task->alias);
        return eval_niah(m, c, o);
    }
    if (!m->predict) return gdn2_error(GDN2_ERR_ARG, "eval: model has no predict callback");
    return eval_tokens(m, c, o);
}
