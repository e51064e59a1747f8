/* gdn2 generate — sample text from a checkpoint with the byte tokenizer, in constant memory per
 * sequence for GDN-2 and SWA layers (prefill, then one recurrent step per token). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_model.h"
#include "gdn2_text.h"
#include "util/internal.h"

static void generate_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 generate CKPT.safetensors [--prompt TEXT] [-n TOKENS] [--temperature T] [--top-k K]\n"
            "                     [--seed S] [--samples N] [--threads N]\n"
            "\n"
            "Generates bytes from a checkpoint written by gdn2 train (byte tokenizer, vocab >= 256).\n"
            "  --prompt TEXT       prompt (default: a newline)\n"
            "  -n TOKENS           bytes to generate (200)\n"
            "  --temperature T     0 = greedy (default 0.8)\n"
            "  --top-k K           sample among the K most likely bytes (0 = all; default 40)\n"
            "  --seed S            sampling seed (1)\n"
            "  --samples N         independent samples (1)\n"
            "  --threads N         CPU threads (0 = OpenMP default)\n"
            "Exit status: 0 ok, 2 bad usage or input, 1 runtime failure.\n");
}

int cmd_generate(int argc, char **argv) {
    const char *ckpt = NULL, *prompt = "\n";
    int64_t n_new = 200, samples = 1;
    uint64_t seed = 1;
    float temp = 0.8f;
    int top_k = 40, threads = 0, npos = 0;
    const cli_opt opts[] = {
        CLI_OPT_STR("--prompt", NULL, &prompt),
        CLI_OPT_I64("-n", &n_new, 1, INT64_MAX / 8), /* then the memory check */
        CLI_OPT_F32("--temperature", &temp, 0, INFINITY, 0),
        CLI_OPT_INT("--top-k", &top_k, 0, INT_MAX),
        CLI_OPT_U64("--seed", &seed, 0, CLI_SEED_MAX),
        CLI_OPT_I64("--samples", &samples, 1, 1000000),
        CLI_OPT_INT("--threads", &threads, 0, cli_max_threads()),
    };
    int rc = cli_parse("generate", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), &ckpt, 1, &npos,
                       generate_usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!ckpt) {
        fprintf(stderr, "gdn2 generate: missing the checkpoint CKPT.safetensors\n");
        generate_usage(stderr);
        return 2;
    }
    if ((rc = cli_check_in("generate", "checkpoint", ckpt))) return rc;
    /* buffers: ids [P + n] int32, the decoded text [n + 1]; checked before the checkpoint loads */
    const int64_t P = (int64_t)strlen(prompt);
    int64_t total;
    size_t ids_bytes, txt_bytes, bytes;
    if (__builtin_add_overflow(P, n_new, &total) || !gdn2_mul_sz((size_t)total, sizeof(int32_t), &ids_bytes) ||
        !gdn2_add_sz((size_t)n_new, 1, &txt_bytes) || !gdn2_add_sz(ids_bytes, txt_bytes, &bytes)) {
        fprintf(stderr, "gdn2 generate: -n %lld with a %lld-byte prompt overflows the buffer size\n", (long long)n_new,
                (long long)P);
        return 2;
    }
    char what[96];
    snprintf(what, sizeof what, "-n %lld", (long long)n_new);
    if ((rc = cli_check_mem("generate", what, (double)bytes))) return rc;

    gdn2_model *m = NULL;
    int st = gdn2_model_load(ckpt, &m);
    if (st) {
        fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
        return cli_exit_code(st);
    }
    if (m->cfg.vocab_size < GDN2_BYTE_VOCAB) {
        fprintf(stderr, "gdn2 generate: %s: vocab_size %lld < 256, not a byte-level model\n", ckpt,
                (long long)m->cfg.vocab_size);
        gdn2_model_free(m);
        return 2;
    }
    /* with the model: the decode state (attention caches grow with P + n: linear in the length, so
     * taken from lengths 1 and 2 in double) and the prompt's prefill */
    double st1 = (double)gdn2_model_state_floats(&m->cfg, 1), st2 = (double)gdn2_model_state_floats(&m->cfg, 2);
    double need = (double)bytes + 4.0 * (st1 + (st2 - st1) * ((double)total - 1)) +
                  cli_forward_bytes(&m->cfg, (double)P, 0);
    if ((rc = cli_check_mem("generate", what, need))) {
        gdn2_model_free(m);
        return rc;
    }
    m->n_threads = threads;
    int32_t *ids = gdn2_malloc(ids_bytes, "token ids");
    char *txt = gdn2_malloc(txt_bytes, "generated text");
    if (!ids || !txt) {
        fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
        rc = 1;
    }
    if (!rc) gdn2_byte_encode(prompt, P, ids);
    for (int64_t s = 0; s < samples && !rc; s++) {
        double t0 = gdn2_now();
        if ((st = gdn2_generate(m, ids, P, n_new, temp, top_k, seed + (uint64_t)s, ids + P))) {
            fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
            rc = 1;
            break;
        }
        double dt = gdn2_now() - t0;
        gdn2_byte_decode(ids + P, n_new, txt);
        txt[n_new] = 0;
        printf("%s%s\n", prompt, txt);
        fprintf(stderr, "[sample %lld: %lld bytes in %.2f s, %.0f tok/s; decode state %zu floats]\n", (long long)s + 1,
                (long long)n_new, dt, n_new / (dt > 0 ? dt : 1), gdn2_model_state_floats(&m->cfg, total));
    }
    free(ids), free(txt);
    gdn2_model_free(m);
    return rc;
}
