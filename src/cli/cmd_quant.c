/* gdn2 quantize — post-training weight quantization of a checkpoint with its measured accuracy
 * cost: the metric with fp32 weights, then with the selected weights quantized and dequantized
 * (gdn2_model_fake_quant), one table row. Text checkpoints: validation loss in nats per byte over
 * the whole validation split (last 10% of the file, as `gdn2 train`), in consecutive windows of
 * --seq-len bytes, each from a fresh state. MQAR checkpoints: per-query test accuracy through the
 * evaluator of `gdn2 eval --task mqar` (gdn2_eval_cell_run). docs/QUANT.md. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_data.h"
#include "gdn2_model.h"
#include "gdn2_quant_model.h"
#include "gdn2_text.h"
#include "util/internal.h"

#define DEFAULT_TEXT GDN2_DEFAULT_TEXT /* not shipped: sh scripts/get_data.sh */

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
    const int64_t W = T < npred ? T : npred; /* a window longer than the split is the split */
    int32_t *tok = gdn2_malloc(sizeof(int32_t) * (size_t)(BMAX * W), "tokens");
    int32_t *tgt = gdn2_malloc(sizeof(int32_t) * (size_t)(BMAX * W), "targets");
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
    const char *model_path = NULL, *data = DEFAULT_TEXT, *out = NULL, *what = "proj";
    int packed = 0, bits_i = -1, task = 0, samples = 500, pairs = 0, threads = 1;
    int64_t group = GDN2_QUANT_GROUP_DEFAULT, seq_len = 0, max_bytes = 0;
    uint64_t seed = 0;
    const cli_opt opts[] = {
        CLI_OPT_STR("--model", NULL, &model_path),
        CLI_OPT_STR("--data", NULL, &data),
        CLI_OPT_CHOICE("--task", &task, "text|mqar"),
        CLI_OPT_STR("--what", NULL, &what),
        CLI_OPT_STR("--out", "-o", &out),
        CLI_OPT_CHOICE("--bits", &bits_i, "8|4"),
        CLI_OPT_I64("--group", &group, 1, 1 << 30),
        CLI_OPT_I64("--seq-len", &seq_len, 1, 1 << 30), /* then the memory check */
        CLI_OPT_I64("--max-bytes", &max_bytes, 2, INT64_MAX),
        CLI_OPT_INT("--samples", &samples, 1, 10000000),
        CLI_OPT_INT("--pairs", &pairs, 1, 1 << 23),
        CLI_OPT_U64("--seed", &seed, 0, CLI_SEED_MAX),
        CLI_OPT_INT("--threads", &threads, 0, cli_max_threads()),
        CLI_OPT_FLAG("--packed", &packed),
    };
    int rc = cli_parse("quantize", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL, quant_usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!model_path || bits_i < 0) {
        fprintf(stderr, "gdn2 quantize: --model and --bits are required\n");
        quant_usage(stderr);
        return 2;
    }
    const int bits = bits_i == 0 ? 8 : 4, is_mqar = task == 1;
    if (packed && !out) {
        fprintf(stderr, "gdn2 quantize: --packed needs -o PATH\n");
        return 2;
    }
    if ((rc = cli_check_in("quantize", "--model", model_path))) return rc;
    if (!is_mqar && cli_default_text_missing("quantize", data, "--data")) return 2;
    if (!is_mqar && (rc = cli_check_in("quantize", "--data", data))) return rc;
    if (out && (rc = cli_check_out("quantize", "--out", out))) return rc;
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
    if (st) {
        fprintf(stderr, "gdn2 quantize: %s\n", gdn2_last_error());
        return cli_exit_code(st);
    }
    /* memory, before the text loads: text: the forward over 16 windows of --seq-len bytes (a window
     * is at most the validation split, a tenth of the file), the text itself and the windows' ids;
     * mqar: one forward of T tokens and its logits */
    {
        double tokens = (double)seq_len * (is_mqar ? 1 : 16), fixed = 0;
        struct stat sb;
        if (!is_mqar && !stat(data, &sb)) {
            double nv = 0.1 * (double)sb.st_size + 1;
            if (tokens > nv) tokens = nv;
            fixed = (double)sb.st_size;
        } else if (is_mqar)
            fixed = 4.0 * tokens * (double)m->cfg.padded_vocab;
        char w[64];
        snprintf(w, sizeof w, "--seq-len %lld", (long long)seq_len);
        if ((rc = cli_check_mem("quantize", w, cli_forward_bytes(&m->cfg, tokens, 0) + fixed + 8.0 * tokens))) {
            gdn2_model_free(m);
            return rc;
        }
    }
    if (!is_mqar && (st = gdn2_text_load(data, 0.1, &text))) {
        fprintf(stderr, "gdn2 quantize: %s\n", gdn2_last_error());
        gdn2_model_free(m);
        return cli_exit_code(st);
    }
    m->n_threads = threads;

    double v0 = 0, v1 = 0, n0 = 0, n1 = 0, t0 = gdn2_now(), t_metric;
    int64_t count = 0;
    gdn2_quant_stats qs;
    memset(&qs, 0, sizeof qs);
    if (is_mqar) {
        st = mqar_acc(m, (int)seq_len, samples, pairs, (uint64_t)seed, &v0);
        if (!st) st = mqar_nll(m, (int)seq_len, samples, pairs, (uint64_t)seed, &n0);
    } else st = text_loss(m, &text, seq_len, max_bytes, &v0, &count);
    t_metric = gdn2_now() - t0;
    int write_failed = 0;
    if (!st && out && packed) /* from the fp32 weights */
        write_failed = (st = gdn2_model_save_quant(m, out, bits, group, sets)) == GDN2_ERR_IO;
    if (!st) st = gdn2_model_fake_quant(m, bits, group, sets, &qs);
    if (!st) {
        if (is_mqar) {
            st = mqar_acc(m, (int)seq_len, samples, pairs, (uint64_t)seed, &v1);
            if (!st) st = mqar_nll(m, (int)seq_len, samples, pairs, (uint64_t)seed, &n1);
        } else st = text_loss(m, &text, seq_len, max_bytes, &v1, &count);
    }
    if (!st && out && !packed) write_failed = (st = gdn2_model_save(m, out)) == GDN2_ERR_IO;
    gdn2_text_free(&text);
    if (st) {
        fprintf(stderr, "gdn2 quantize: %s\n", gdn2_last_error());
        gdn2_model_free(m);
        return write_failed ? 1 : cli_exit_code(st); /* a failed write is 1 */
    }
    char sbuf[32], gbuf[16];
    gdn2_quant_sets_str(sets, sbuf, sizeof sbuf);
    if (bits == 4) snprintf(gbuf, sizeof gbuf, "%lld", (long long)group);
    else snprintf(gbuf, sizeof gbuf, "row");
    const char *metric = is_mqar ? "mqar acc" : "val nats/byte";
    printf("| bits | group | what | metric | fp32 | quantized | delta | weight rel-RMSE | selected MB fp32 -> quant | "
           "model MB fp32 -> quant |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    printf("| %d | %s | %s | %s | %.4f | %.4f | %+.4f | %.2e | %.3f -> %.3f (%.2fx) | %.3f -> %.3f (%.2fx) |\n", bits,
           gbuf, sbuf, metric, v0, v1, v1 - v0, qs.weight_rel_rmse, qs.bytes_fp32 / 1e6, qs.bytes_quant / 1e6,
           qs.bytes_quant ? (double)qs.bytes_fp32 / qs.bytes_quant : 0.0, qs.model_bytes_fp32 / 1e6,
           qs.model_bytes_quant / 1e6, qs.model_bytes_quant ? (double)qs.model_bytes_fp32 / qs.model_bytes_quant : 0.0);
    char extra[96] = "";
    if (is_mqar) snprintf(extra, sizeof extra, "\"mqar_nll_fp32\":%.6f,\"mqar_nll_quant\":%.6f,", n0, n1);
    if (is_mqar)
        printf("mqar test loss on the queried positions (nats): fp32 %.4f, quantized %.4f, delta %+.4f\n", n0, n1,
               n1 - n0);
    printf("{\"model\":\"%s\",\"bits\":%d,\"group\":%lld,\"what\":\"%s\",\"metric\":\"%s\",\"fp32\":%.6f,"
           "\"quantized\":%.6f,\"delta\":%.6f,\"weight_rel_rmse\":%.4e,\"tensors\":%d,\"weights\":%zu,"
           "\"bytes_fp32\":%zu,\"bytes_quant\":%zu,\"model_bytes_fp32\":%zu,\"model_bytes_quant\":%zu,"
           "\"seq_len\":%lld,\"%s\":%lld,%s\"metric_s\":%.2f%s%s%s}\n",
           model_path, bits, bits == 4 ? (long long)group : 0LL, sbuf, is_mqar ? "mqar_accuracy" : "val_nats_per_byte", v0, v1,
           v1 - v0, qs.weight_rel_rmse, qs.n_tensors, qs.n_weights, qs.bytes_fp32, qs.bytes_quant,
           qs.model_bytes_fp32, qs.model_bytes_quant, (long long)seq_len, is_mqar ? "samples" : "bytes",
           is_mqar ? (long long)samples : (long long)count, extra, t_metric, out ? ",\"out\":\"" : "", out ? out : "", out ? "\"" : "");
    gdn2_model_free(m);
    return 0;
}
