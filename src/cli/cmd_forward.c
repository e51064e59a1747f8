/* gdn2 forward — the official lit_gpt GPT forward and mean next-token cross-entropy on tensors
 * from a safetensors file in the format of tests/fixtures/official/model.safetensors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_model.h"
#include "util/internal.h"

static void forward_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 forward IN.safetensors -o OUT.safetensors [--device cpu|cuda] [--kernel chunk|reference]\n"
            "                    [--threads N]\n"
            "\n"
            "Runs the lit_gpt GPT (GDN-2 / SWA hybrid as configured) in fp32 on the CPU, or bf16-mixed on the\n"
            "GPU (--device cuda; docs/BACKEND.md).\n"
            "IN:  param.<name> for every parameter (official lit_gpt names: transformer.wte.weight,\n"
            "     transformer.h.N.{norm_1,attn.*,norm_2,mlp.swiglu.w1/w2/w3}, transformer.ln_f.weight,\n"
            "     lm_head.weight), tokens I64 [B,T], and __metadata__ \"meta\" = JSON whose \"config\" has\n"
            "     n_layer, n_embd, n_head, vocab_size, padding_multiple, gdn2_per_layer,\n"
            "     intermediate_size, local_window, norm_eps, gdn2_num_heads, gdn2_head_dim.\n"
            "     Parameters may also be unprefixed with the config in __metadata__ \"config\" (gdn2 checkpoints).\n"
            "OUT: logits F32 [B,T,padded_vocab], loss F32 [1] = mean CE(logits[:, :-1], tokens[:, 1:]).\n"
            "  --device D      cpu (default) or cuda\n"
            "  --kernel NAME   GDN-2 recurrence: chunk (default, fp32) or reference (float64, CPU only)\n"
            "  --threads N     CPU threads (0 = OpenMP default)\n"
            "Exit status: 0 ok, 2 bad usage or bad input file, 1 runtime failure.\n");
}

int cmd_forward(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    int threads = 0, kernel = 0, npos = 0, device = 0;
    const cli_opt opts[] = {
        CLI_OPT_STR("--out", "-o", &out),
        CLI_OPT_CHOICE("--device", &device, "cpu|cuda"),
        CLI_OPT_CHOICE("--kernel", &kernel, "chunk|reference"),
        CLI_OPT_INT("--threads", &threads, 0, cli_max_threads()),
    };
    int rc = cli_parse("forward", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), &in, 1, &npos,
                       forward_usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!in || !out) {
        fprintf(stderr, "gdn2 forward: %s\n", !in ? "missing input file IN.safetensors" : "missing -o OUT.safetensors");
        forward_usage(stderr);
        return 2;
    }
    if ((rc = cli_check_in("forward", "input", in)) || (rc = cli_check_out("forward", "--out", out))) return rc;
    gdn2_model *m = NULL;
    int st = gdn2_model_load(in, &m);
    if (st) {
        fprintf(stderr, "gdn2 forward: %s\n", gdn2_last_error());
        return st == GDN2_ERR_NOMEM ? 1 : 2;
    }
    m->n_threads = threads;
    m->cfg.kernel = kernel ? GDN2_KERNEL_REFERENCE : GDN2_KERNEL_CHUNK;
    if ((rc = cli_model_device("forward", m, device, 1))) {
        gdn2_model_free(m);
        return rc;
    }
    gdn2_st file;
    if ((st = gdn2_st_read(in, &file))) {
        fprintf(stderr, "gdn2 forward: %s\n", gdn2_last_error());
        gdn2_model_free(m);
        return 2;
    }
    int64_t shape[2] = {-1, -1};
    int64_t *tok64 = NULL;
    st = gdn2_st_get_i64(&file, "tokens", 1, 2, shape, &tok64);
    gdn2_st_free(&file);
    if (st) {
        fprintf(stderr, "gdn2 forward: %s (expected tokens I64 [B,T])\n", gdn2_last_error());
        gdn2_model_free(m);
        return 2;
    }
    const int64_t B = shape[0], T = shape[1], Vp = m->cfg.padded_vocab;
    if (B < 1 || T < 2) { /* the loss is over tokens[:, 1:]: T = 1 has no target (a loss of 0 would mean nothing) */
        fprintf(stderr, "gdn2 forward: %s: tokens has shape [%lld,%lld], expected [B,T] with B >= 1 and T >= 2\n", in,
                (long long)B, (long long)T);
        free(tok64);
        gdn2_model_free(m);
        return 2;
    }
    rc = 0;
    /* B*T is bounded by the tokens tensor read from the file; B*T*Vp (the logits) is not */
    size_t ntok = (size_t)(B * T > 0 ? B * T : 1), nlog, log_bytes;
    int32_t *tok = NULL, *tgt = NULL;
    float *logits = NULL;
    if (!gdn2_mul_sz(ntok, (size_t)Vp, &nlog) || !gdn2_mul_sz(nlog, sizeof(float), &log_bytes)) {
        fprintf(stderr, "gdn2 forward: %s: %lld x %lld tokens x padded vocab %lld logits overflow the size type\n", in,
                (long long)B, (long long)T, (long long)Vp);
        rc = 2;
        goto done;
    }
    if ((rc = cli_check_mem("forward", "the tokens tensor of the input",
                            (double)log_bytes + cli_forward_bytes(&m->cfg, (double)ntok, 0))))
        goto done;
    tok = malloc(ntok * sizeof(int32_t));
    tgt = malloc(ntok * sizeof(int32_t));
    logits = malloc(log_bytes);
    if (!tok || !tgt || !logits) {
        fprintf(stderr, "gdn2 forward: out of memory for %lld x %lld tokens\n", (long long)B, (long long)T);
        rc = 1;
        goto done;
    }
    for (int64_t i = 0; i < B * T; i++) {
        if (tok64[i] < 0 || tok64[i] >= m->cfg.vocab_size) {
            fprintf(stderr, "gdn2 forward: %s: tokens[%lld][%lld] = %lld outside [0, vocab_size %lld)\n", in,
                    (long long)(i / T), (long long)(i % T), (long long)tok64[i], (long long)m->cfg.vocab_size);
            rc = 2;
            goto done;
        }
        tok[i] = (int32_t)tok64[i];
        /* next-token targets: the last position of each row has none */
        tgt[i] = (i % T == T - 1) ? GDN2_IGNORE : (int32_t)tok64[i + 1];
    }
    float loss = 0.0f;
    if ((st = gdn2_model_forward(m, tok, tgt, B, T, logits, &loss, 0))) {
        fprintf(stderr, "gdn2 forward: %s\n", gdn2_last_error());
        rc = st == GDN2_ERR_ARG ? 2 : 1;
        goto done;
    }
    gdn2_tensor t[2];
    memset(t, 0, sizeof t);
    t[0].name = "logits", t[0].dtype = GDN2_F32, t[0].ndim = 3;
    t[0].shape[0] = B, t[0].shape[1] = T, t[0].shape[2] = Vp;
    t[0].nbytes = B * T > 0 ? log_bytes : 0, t[0].data = logits;
    t[1].name = "loss", t[1].dtype = GDN2_F32, t[1].ndim = 1, t[1].shape[0] = 1;
    t[1].nbytes = sizeof(float), t[1].data = &loss;
    if ((st = gdn2_st_write(out, t, 2, NULL, NULL, 0))) {
        fprintf(stderr, "gdn2 forward: %s\n", gdn2_last_error());
        rc = 1;
        goto done;
    }
    printf("gdn2 forward: %s (%s, %zu params): B=%lld T=%lld loss %.6f -> %s\n", in, m->cfg.layout, m->n_params,
           (long long)B, (long long)T, loss, out);
done:
    free(tok64), free(tok), free(tgt), free(logits);
    gdn2_model_free(m);
    return rc;
}
