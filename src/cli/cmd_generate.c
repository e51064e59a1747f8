/* gdn2 generate — sample text from a checkpoint with the byte tokenizer, in constant memory per
 * sequence for GDN-2 and SWA layers (prefill, then one recurrent step per token). */
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
    long long n_new = 200, samples = 1, seed = 1;
    float temp = 0.8f;
    int top_k = 40, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            generate_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--prompt") && more) prompt = argv[++i];
        else if (!strcmp(a, "-n") && more) n_new = atoll(argv[++i]);
        else if (!strcmp(a, "--temperature") && more) temp = (float)atof(argv[++i]);
        else if (!strcmp(a, "--top-k") && more) top_k = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && more) seed = atoll(argv[++i]);
        else if (!strcmp(a, "--samples") && more) samples = atoll(argv[++i]);
        else if (!strcmp(a, "--threads") && more) threads = atoi(argv[++i]);
        else if (a[0] == '-') {
            fprintf(stderr, "gdn2 generate: unknown or incomplete option '%s'\n", a);
            generate_usage(stderr);
            return 2;
        } else if (!ckpt) ckpt = a;
        else {
            fprintf(stderr, "gdn2 generate: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!ckpt || n_new < 1 || samples < 1 || !*prompt) {
        generate_usage(stderr);
        return 2;
    }
    gdn2_model *m = NULL;
    int st = gdn2_model_load(ckpt, &m);
    if (st) {
        fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
        return 2;
    }
    if (m->cfg.vocab_size < GDN2_BYTE_VOCAB) {
        fprintf(stderr, "gdn2 generate: %s: vocab_size %lld < 256, not a byte-level model\n", ckpt,
                (long long)m->cfg.vocab_size);
        gdn2_model_free(m);
        return 2;
    }
    m->n_threads = threads;
    int64_t P = (int64_t)strlen(prompt);
    int32_t *ids = malloc((size_t)(P + n_new) * sizeof(int32_t));
    char *txt = malloc((size_t)n_new + 1);
    int rc = 0;
    if (!ids || !txt) {
        fprintf(stderr, "gdn2 generate: out of memory\n");
        rc = 1;
    }
    gdn2_byte_encode(prompt, P, ids);
    for (long long s = 0; s < samples && !rc; s++) {
        double t0 = gdn2_now();
        if ((st = gdn2_generate(m, ids, P, n_new, temp, top_k, (uint64_t)(seed + s), ids + P))) {
            fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
            rc = 1;
            break;
        }
        double dt = gdn2_now() - t0;
        gdn2_byte_decode(ids + P, n_new, txt);
        txt[n_new] = 0;
        printf("%s%s\n", prompt, txt);
        fprintf(stderr, "[sample %lld: %lld bytes in %.2f s, %.0f tok/s; decode state %zu floats]\n", s + 1, n_new,
                dt, n_new / (dt > 0 ? dt : 1), gdn2_model_state_floats(&m->cfg, P + n_new));
    }
    free(ids), free(txt);
    gdn2_model_free(m);
    return rc;
}
