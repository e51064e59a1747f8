/* gdn2 quantize — post-training weight quantization of a checkpoint with its measured accuracy
 * cost: the metric with fp32 weights, then with the selected weights quantized and dequantized
 * (gdn2_model_fake_quant), one table row. Text checkpoints: validation loss in nats per byte over
 * the whole validation split (last 10% of the file, as `gdn2 train`), in consecutive windows of
 * --seq-len bytes, each from a fresh state. MQAR checkpoints: per-query test accuracy through the
 * evaluator of `gdn2 eval --task mqar` (gdn2_eval_cell_run). docs/QUANT.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_data.h"
#include "gdn2_model.h"
#include "gdn2_quant_model.h"
#include "gdn2_text.h"
#include "util/internal.h"

#define DEFAULT_TEXT "../shared/data/tinyshakespeare.txt"

static void quant_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 quantize --model CKPT --bits 8|4 [options]\n"
            "\n"
            "Measures the checkpoint with fp32 weights, quantizes the selected Linear weights (symmetric\n"
            "int8 per output row, or int4 per group of input columns) and dequantizes them in place, measures\n"
            "again and prints one table row (docs/QUANT.md). Norm weights, A_log, dt_bias, conv weights and\n"
            "biases stay fp32.\n"
            "  --model CKPT      checkpoint (safetensors, official names)\n"
            "  --bits 8|4        int8 per output row or int4 group-wise\n"
            "  --group N         int4 group size along the input dimension (default %d; ignored for int8)\n"
            "  --what SETS       comma list of proj, gates, head (or all); default proj\n"
            "                    proj:  attention q/k/v/o (fused attn/proj), GDN-2 q/k/v/o_proj, MLP w1/w2/w3\n"
            "                    gates: GDN-2 b_proj, w_proj, f_proj.0/1 (a_proj), g_proj.0/1 (output gate)\n"
            "                    head:  wte (embedding) and lm_head\n"
            "  --task text|mqar  metric: validation nats/byte (text, default) or MQAR test accuracy\n"
            "  --data FILE       text: file (default " DEFAULT_TEXT "; last 10%% = validation)\n"
            "  --seq-len N       text: window in bytes (default 128); mqar: T (default 64)\n"
            "  --max-bytes N     text: use only the first N validation bytes (default all)\n"
            "  --samples N       mqar: test samples (default 500)\n"
            "  --pairs N         mqar: key-value pairs (default T/16)\n"
            "  --seed S          mqar: sample seed (default 0)\n"
            "  --threads N       CPU threads (default 1)\n"
            "  -o, --out PATH    also write the dequantized weights (same names and config) to PATH\n"
            "  --packed          with -o: write the weights quantized instead (NAME.q int8 / packed int4,\n"
            "                    NAME.scale fp32; ~4-6x smaller); every command that loads a checkpoint\n"
            "                    reads it and gets the same weights as the dequantized file\n"
            "Prints a table row and a JSON line (mqar: also the test loss on the queried positions). Exit status: 0 ok, 2 bad usage or input, 1 runtime failure.\n",
            GDN2_QUANT_GROUP_DEFAULT);
}

/* ---- metric: validation loss (nats per byte) over the whole validation split --------------- */
static int text_loss(gdn2_model *m, const gdn2_text *t, int64_t T, int64_t max_bytes, double *nats, int64_t *count) {
    int64_t lo = t->n_train, nv = t->n - t->n_train;
    if (max_bytes > 0 && nv > max_bytes) nv = max_bytes;
    if (nv < 2) return gdn2_error(GDN2_ERR_ARG, "validation split has %lld bytes (need >= 2)", (long long)nv);
    const int64_t npred = nv - 1, nfull = npred / T, rem = npred % T, BMAX = 16;
    int32_t *tok = gdn2_malloc(sizeof(int32_t) * (size_t)(BMAX * T), "tokens");
    int32_t *tgt = gdn2_malloc(sizeof(int32_t) * (size_t)(BMAX * T), "targets");
    if (!tok || !tgt) {
        free(tok), free(tgt);
        return GDN2_ERR_NOMEM;
    }
    double sum = 0.0;
    int64_t n = 0;
    int st = GDN2_OK;
    /* window w: bytes [lo + w*T, lo + w*T + T] -> T predictions; then one shorter window for the rest */
    for (int64_t w0 = 0; w0 < nfull + (rem > 0) && !st;) {
        int64_t B, TT = T;
        if (w0 == nfull) B = 1, TT = rem;
        else B = nfull - w0 < BMAX ? nfull - w0 : BMAX;
        for (int64_t b = 0; b < B; b++) {
            const uint8_t *p = t->data + lo + (w0 + b) * T;
            for (int64_t i = 0; i < TT; i++) tok[b * TT + i] = p[i], tgt[b * TT + i] = p[i + 1];
        }
        float l = 0.0f;
        st = gdn2_model_forward(m, tok, tgt, B, TT, NULL, &l, 0);
        sum += (double)l * (double)(B * TT);
        n += B * TT;
        w0 += B;
    }
    free(tok), free(tgt);
    *nats = n ? sum / (double)n : 0.0;
    *count = n;
    return st;
}

/* ---- metric: MQAR test accuracy through the evaluator ------------------------------------- */
typedef struct {
    gdn2_model *m;
    float *logits;
    int64_t cap;
} pred_ctx;

static int predict(void *p, const int32_t *tokens, int n, int32_t *pred) {
    pred_ctx *c = p;
    const int64_t Vp = c->m->cfg.padded_vocab, V = c->m->cfg.vocab_size;
    if (n > c->cap) {
        float *q = realloc(c->logits, sizeof(float) * (size_t)n * (size_t)Vp);
        if (!q) return gdn2_error(GDN2_ERR_NOMEM, "out of memory for logits");
        c->logits = q, c->cap = n;
    }
    int st = gdn2_model_forward(c->m, tokens, NULL, 1, n, c->logits, NULL, 0);
    if (st) return st;
    for (int t = 0; t < n; t++) {
        const float *z = c->logits + (size_t)t * Vp;
        int64_t b = 0;
        for (int64_t v = 1; v < V; v++)
            if (z[v] > z[b]) b = v;
        pred[t] = (int32_t)b;
    }
    return GDN2_OK;
}

static int mqar_acc(gdn2_model *m, int T, int samples, int pairs, uint64_t seed, double *acc) {
    pred_ctx pc = {m, NULL, 0};
    gdn2_eval_model em = {&pc, (int)m->cfg.vocab_size, NULL, predict};
    gdn2_eval_cell_cfg cc;
    memset(&cc, 0, sizeof cc);
    cc.task = gdn2_task_find("mqar");
    cc.length = T, cc.n_samples = samples, cc.seed = seed, cc.pairs = pairs;
    gdn2_eval_cell out;
    int st = gdn2_eval_cell_run(&em, &cc, &out);
    free(pc.logits);
    *acc = out.score / 100.0;
    return st;
}

/* secondary MQAR metric: mean cross-entropy over the queried positions of `samples` test-stream
 * samples (the library's loss, gdn2_model_forward), finer-grained than the accuracy near 1 */
static int mqar_nll(gdn2_model *m, int T, int samples, int pairs, uint64_t seed, double *nll) {
    gdn2_mqar_cfg mq;
    memset(&mq, 0, sizeof mq);
    mq.vocab_size = (int)m->cfg.vocab_size, mq.seq_len = T, mq.n_pairs = pairs > 0 ? pairs : (T / 16 > 0 ? T / 16 : 1);
    int st = gdn2_mqar_check(&mq);
    if (st) return st;
    const int BMAX = 32;
    int32_t *tok = gdn2_malloc(sizeof(int32_t) * (size_t)BMAX * (size_t)T * 2, "mqar batch");
    if (!tok) return GDN2_ERR_NOMEM;
    int32_t *tgt = tok + (size_t)BMAX * T;
    double sum = 0.0;
    int64_t n = 0;
    for (int i0 = 0; i0 < samples && !st; i0 += BMAX) {
        int B = samples - i0 < BMAX ? samples - i0 : BMAX, nv = 0;
        for (int b = 0; b < B && !st; b++)
            st = gdn2_mqar_sample(&mq, seed * 0x9E3779B97F4A7C15ULL + 0x4E4CULL + (uint64_t)(i0 + b), 1,
                                  tok + (size_t)b * T, tgt + (size_t)b * T);
        for (int r = 0; r < B * T; r++) nv += tgt[r] != GDN2_IGNORE;
        float l = 0.0f;
        if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &l, 0);
        sum += (double)l * nv, n += nv;
    }
    free(tok);
    *nll = n ? sum / (double)n : 0.0;
    return st;
}

int cmd_quant(int argc, char **argv) {
    const char *model_path = NULL, *data = DEFAULT_TEXT, *task = "text", *out = NULL, *what = "proj";
    int packed = 0;
    long long bits = 0, group = GDN2_QUANT_GROUP_DEFAULT, seq_len = 0, max_bytes = 0, samples = 500, pairs = 0,
              seed = 0, threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            quant_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--packed")) {
            packed = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "gdn2 quantize: option '%s' needs a value (or is unknown)\n", a);
            quant_usage(stderr);
            return 2;
        }
        int ok = 1;
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--task")) task = v;
        else if (!strcmp(a, "--what")) what = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--bits")) ok = cli_parse_ll(v, 4, 8, &bits) && (bits == 4 || bits == 8);
        else if (!strcmp(a, "--group")) ok = cli_parse_ll(v, 1, 1 << 30, &group);
        else if (!strcmp(a, "--seq-len")) ok = cli_parse_ll(v, 1, 1 << 24, &seq_len);
        else if (!strcmp(a, "--max-bytes")) ok = cli_parse_ll(v, 2, (long long)1 << 50, &max_bytes);
        else if (!strcmp(a, "--samples")) ok = cli_parse_ll(v, 1, 1000000, &samples);
        else if (!strcmp(a, "--pairs")) ok = cli_parse_ll(v, 1, 1 << 24, &pairs);
        else if (!strcmp(a, "--seed")) ok = cli_parse_ll(v, 0, (long long)1 << 62, &seed);
        else if (!strcmp(a, "--threads")) ok = cli_parse_ll(v, 0, 1024, &threads);
        else {
            fprintf(stderr, "gdn2 quantize: unknown option '%s'\n", a);
            quant_usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "gdn2 quantize: bad value '%s' for %s%s\n", v, a,
                    !strcmp(a, "--bits") ? " (8 or 4)" : "");
            return 2;
        }
        i++;
    }
    if (!model_path || !bits) {
        fprintf(stderr, "gdn2 quantize: --model and --bits are required\n");
        quant_usage(stderr);
        return 2;
    }
    if (packed && !out) {
        fprintf(stderr, "gdn2 quantize: --packed needs -o PATH\n");
        return 2;
    }
    int is_mqar = !strcmp(task, "mqar");
    if (!is_mqar && strcmp(task, "text")) {
        fprintf(stderr, "gdn2 quantize: unknown --task '%s' (text or mqar)\n", task);
        return 2;
    }
    int sets = 0;
    if (gdn2_quant_parse_sets(what, &sets)) {
        fprintf(stderr, "gdn2 quantize: %s\n", gdn2_last_error());
        return 2;
    }
    if (!seq_len) seq_len = is_mqar ? 64 : 128;
    cli_blas_one_thread();

    gdn2_model *m = NULL;
    gdn2_text text;
    memset(&text, 0, sizeof text);
    int st = gdn2_model_load(model_path, &m);
    if (!st && !is_mqar) st = gdn2_text_load(data, 0.1, &text);
    if (st) {
        fprintf(stderr, "gdn2 quantize: %s\n", gdn2_last_error());
        gdn2_model_free(m);
        return st == GDN2_ERR_NOMEM ? 1 : 2;
    }
    m->n_threads = (int)threads;

    double v0 = 0, v1 = 0, n0 = 0, n1 = 0, t0 = gdn2_now(), t_metric;
    int64_t count = 0;
    gdn2_quant_stats qs;
    memset(&qs, 0, sizeof qs);
    if (is_mqar) {
        st = mqar_acc(m, (int)seq_len, (int)samples, (int)pairs, (uint64_t)seed, &v0);
        if (!st) st = mqar_nll(m, (int)seq_len, (int)samples, (int)pairs, (uint64_t)seed, &n0);
    } else st = text_loss(m, &text, seq_len, max_bytes, &v0, &count);
    t_metric = gdn2_now() - t0;
    if (!st && out && packed) st = gdn2_model_save_quant(m, out, (int)bits, group, sets); /* from the fp32 weights */
    if (!st) st = gdn2_model_fake_quant(m, (int)bits, group, sets, &qs);
    if (!st) {
        if (is_mqar) {
            st = mqar_acc(m, (int)seq_len, (int)samples, (int)pairs, (uint64_t)seed, &v1);
            if (!st) st = mqar_nll(m, (int)seq_len, (int)samples, (int)pairs, (uint64_t)seed, &n1);
        } else st = text_loss(m, &text, seq_len, max_bytes, &v1, &count);
    }
    if (!st && out && !packed) st = gdn2_model_save(m, out);
    gdn2_text_free(&text);
    if (st) {
        fprintf(stderr, "gdn2 quantize: %s\n", gdn2_last_error());
        gdn2_model_free(m);
        return st == GDN2_ERR_ARG || st == GDN2_ERR_IO || st == GDN2_ERR_FORMAT ? 2 : 1;
    }
    char sbuf[32], gbuf[16];
    gdn2_quant_sets_str(sets, sbuf, sizeof sbuf);
    if (bits == 4) snprintf(gbuf, sizeof gbuf, "%lld", group);
    else snprintf(gbuf, sizeof gbuf, "row");
    const char *metric = is_mqar ? "mqar acc" : "val nats/byte";
    printf("| bits | group | what | metric | fp32 | quantized | delta | weight rel-RMSE | selected MB fp32 -> quant | "
           "model MB fp32 -> quant |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    printf("| %lld | %s | %s | %s | %.4f | %.4f | %+.4f | %.2e | %.3f -> %.3f (%.2fx) | %.3f -> %.3f (%.2fx) |\n", bits,
           gbuf, sbuf, metric, v0, v1, v1 - v0, qs.weight_rel_rmse, qs.bytes_fp32 / 1e6, qs.bytes_quant / 1e6,
           qs.bytes_quant ? (double)qs.bytes_fp32 / qs.bytes_quant : 0.0, qs.model_bytes_fp32 / 1e6,
           qs.model_bytes_quant / 1e6, qs.model_bytes_quant ? (double)qs.model_bytes_fp32 / qs.model_bytes_quant : 0.0);
    char extra[96] = "";
    if (is_mqar) snprintf(extra, sizeof extra, "\"mqar_nll_fp32\":%.6f,\"mqar_nll_quant\":%.6f,", n0, n1);
    if (is_mqar)
        printf("mqar test loss on the queried positions (nats): fp32 %.4f, quantized %.4f, delta %+.4f\n", n0, n1,
               n1 - n0);
    printf("{\"model\":\"%s\",\"bits\":%lld,\"group\":%lld,\"what\":\"%s\",\"metric\":\"%s\",\"fp32\":%.6f,"
           "\"quantized\":%.6f,\"delta\":%.6f,\"weight_rel_rmse\":%.4e,\"tensors\":%d,\"weights\":%zu,"
           "\"bytes_fp32\":%zu,\"bytes_quant\":%zu,\"model_bytes_fp32\":%zu,\"model_bytes_quant\":%zu,"
           "\"seq_len\":%lld,\"%s\":%lld,%s\"metric_s\":%.2f%s%s%s}\n",
           model_path, bits, bits == 4 ? group : 0, sbuf, is_mqar ? "mqar_accuracy" : "val_nats_per_byte", v0, v1,
           v1 - v0, qs.weight_rel_rmse, qs.n_tensors, qs.n_weights, qs.bytes_fp32, qs.bytes_quant,
           qs.model_bytes_fp32, qs.model_bytes_quant, seq_len, is_mqar ? "samples" : "bytes",
           is_mqar ? samples : (long long)count, extra, t_metric, out ? ",\"out\":\"" : "", out ? out : "", out ? "\"" : "");
    gdn2_model_free(m);
    return 0;
}
