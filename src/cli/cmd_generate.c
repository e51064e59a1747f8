/* gdn2 generate — sample text from a checkpoint with the byte tokenizer, in constant memory per
 * sequence for GDN-2 and SWA layers, through the generation engine (src/serve): several prompts
 * and samples run as one continuous batch, each sequence in its own state slot; a prompt prefix's
 * state can be saved to a file and loaded again (prefilled once). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_model.h"
#include "gdn2_serve.h"
#include "gdn2_text.h"
#include "util/internal.h"

static void generate_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 generate CKPT.safetensors [--prompt TEXT | --prompts FILE] [-n TOKENS] [--temperature T]\n"
            "                     [--top-k K] [--top-p P] [--seed S] [--samples N] [--stop TEXT] [--slots N]\n"
            "                     [--save-prefix FILE] [--load-prefix FILE] [--device cpu|cuda] [--threads N]\n"
            "                     [--cuda-graph on|off]\n"
            "\n"
            "Generates bytes from a checkpoint written by gdn2 train (byte tokenizer, vocab >= 256). Every\n"
            "prompt x sample is one request of the generation engine; they run as one continuous batch\n"
            "(--slots at a time) and print in order: the prompt, then its continuation, then a newline.\n"
            "  --prompt TEXT       prompt (default: a newline; with --load-prefix: empty)\n"
            "  --prompts FILE      one prompt per line (instead of --prompt)\n"
            "  -n TOKENS           bytes to generate (200)\n"
            "  --temperature T     0 = greedy (default 0.8)\n"
            "  --top-k K           sample among the K most likely bytes (0 = all; default 40)\n"
            "  --top-p P           nucleus: the most likely bytes whose probability reaches P (1 = off; default 1)\n"
            "  --seed S            sampling seed (1); sample j of each prompt uses S + j\n"
            "  --samples N         independent samples per prompt (1)\n"
            "  --stop TEXT         stop a sequence when it generates TEXT (not printed)\n"
            "  --slots N           sequences decoded at once (default: all requests, at most 64)\n"
            "  --save-prefix FILE  save the state after the (one) prompt to FILE (safetensors), then generate\n"
            "  --load-prefix FILE  start every sequence from the state in FILE (same checkpoint), then its prompt\n"
            "                      (prefix files are the same on both devices: one saved on the GPU loads on the CPU)\n"
            "  --device D          cpu (default) or cuda: the model, its decode states and the steps on the GPU\n"
            "                      (bf16-mixed, docs/BACKEND.md)\n"
            "  --cuda-graph on|off with --device cuda: each decode step replayed from a CUDA graph (on, default)\n"
            "                      or its kernels launched one by one (off); docs/SERVING.md\n"
            "  --threads N         CPU threads (0 = OpenMP default)\n"
            "Exit status: 0 ok, 2 bad usage or input, 1 runtime failure.\n");
}

/* the lines of path (without '\n' / "\r\n") as NUL-terminated strings in one buffer */
static int read_lines(const char *path, char **buf_out, char ***lines_out, int64_t *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "gdn2 generate: --prompts: cannot open '%s'\n", path);
        return 2;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *nb = cap < ((size_t)1 << 32) ? realloc(buf, 2 * cap + 1) : NULL;
            if (!nb) free(buf);
            buf = nb, cap *= 2;
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "gdn2 generate: --prompts: '%s' does not fit in memory\n", path);
        return 1;
    }
    buf[n] = 0;
    int64_t nl = 0;
    for (size_t i = 0; i < n; i++) nl += buf[i] == '\n';
    char **lines = malloc((size_t)(nl + 1) * sizeof *lines);
    if (!lines) {
        free(buf);
        return 1;
    }
    int64_t c = 0;
    char *p = buf;
    while (p < buf + n) {
        char *e = memchr(p, '\n', (size_t)(buf + n - p));
        if (!e) e = buf + n;
        if (memchr(p, 0, (size_t)(e - p))) { /* a line is a C string from here on: a NUL would cut it */
            fprintf(stderr, "gdn2 generate: --prompts: line %lld of '%s' holds a NUL byte (prompts are text lines)\n",
                    (long long)c + 1, path);
            free(buf), free(lines);
            return 2;
        }
        *e = 0;
        if (e > p && e[-1] == '\r') e[-1] = 0;
        lines[c++] = p;
        p = e + 1;
    }
    *buf_out = buf, *lines_out = lines, *n_out = c;
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *ckpt = NULL, *prompt = NULL, *prompts_file = NULL, *save_prefix = NULL, *load_prefix = NULL;
    const char *stop = NULL;
    int64_t n_new = 200, samples = 1, slots = 0;
    uint64_t seed = 1;
    float temp = 0.8f, top_p = 1.0f;
    int top_k = 40, threads = 0, npos = 0, device = 0, graph_off = 0;
    const cli_opt opts[] = {
        CLI_OPT_STR("--prompt", NULL, &prompt),
        CLI_OPT_STR("--prompts", NULL, &prompts_file),
        CLI_OPT_I64("-n", &n_new, 1, INT64_MAX / 8), /* then the memory check */
        CLI_OPT_F32("--temperature", &temp, 0, INFINITY, 0),
        CLI_OPT_INT("--top-k", &top_k, 0, INT_MAX),
        CLI_OPT_F32("--top-p", &top_p, 0, 1, CLI_LO_OPEN),
        CLI_OPT_U64("--seed", &seed, 0, CLI_SEED_MAX),
        CLI_OPT_I64("--samples", &samples, 1, 1000000),
        CLI_OPT_STR("--stop", NULL, &stop),
        CLI_OPT_I64("--slots", &slots, 1, 65536),
        CLI_OPT_STR("--save-prefix", NULL, &save_prefix),
        CLI_OPT_STR("--load-prefix", NULL, &load_prefix),
        CLI_OPT_INT("--threads", &threads, 0, cli_max_threads()),
        CLI_OPT_CHOICE("--device", &device, "cpu|cuda"),
        CLI_OPT_CHOICE("--cuda-graph", &graph_off, "on|off"),
    };
    int rc = cli_parse("generate", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), &ckpt, 1, &npos,
                       generate_usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!ckpt) {
        fprintf(stderr, "gdn2 generate: missing the checkpoint CKPT.safetensors\n");
        generate_usage(stderr);
        return 2;
    }
    if (prompt && prompts_file) {
        fprintf(stderr, "gdn2 generate: --prompt and --prompts: give one of them\n");
        return 2;
    }
    if ((rc = cli_check_in("generate", "checkpoint", ckpt))) return rc;
    if (load_prefix && (rc = cli_check_in("generate", "--load-prefix", load_prefix))) return rc;
    if (prompts_file && (rc = cli_check_in("generate", "--prompts", prompts_file))) return rc;
    if (save_prefix && (rc = cli_check_out("generate", "--save-prefix", save_prefix))) return rc;

    /* the prompts */
    char *pbuf = NULL, **plist = NULL, *one[1];
    int64_t n_prompts = 1;
    if (prompts_file) {
        if ((rc = read_lines(prompts_file, &pbuf, &plist, &n_prompts))) return rc;
        if (n_prompts == 0) {
            fprintf(stderr, "gdn2 generate: --prompts: '%s' has no lines\n", prompts_file);
            free(pbuf), free(plist);
            return 2;
        }
    } else {
        one[0] = (char *)(prompt ? prompt : load_prefix ? "" : "\n");
        plist = one;
    }
    int64_t maxP = 0;
    for (int64_t i = 0; i < n_prompts; i++) {
        int64_t P = (int64_t)strlen(plist[i]);
        if (P == 0 && !load_prefix) {
            fprintf(stderr, "gdn2 generate: --prompts: line %lld of '%s' is empty (a prompt needs a byte)\n",
                    (long long)i + 1, prompts_file);
            rc = 2;
        }
        if (P > maxP) maxP = P;
    }
    if (!rc && save_prefix && n_prompts * samples != 1) {
        fprintf(stderr, "gdn2 generate: --save-prefix saves the state after one prompt: give one prompt and one sample "
                        "(here %lld x %lld)\n",
                (long long)n_prompts, (long long)samples);
        rc = 2;
    }
    const int64_t n_req = n_prompts * samples;
    if (!slots) slots = n_req < 64 ? n_req : 64;
    if (slots > n_req) slots = n_req;
    /* per request: ids [P + n] int32 and the text [n + 1]; checked before the checkpoint loads */
    int64_t total;
    size_t ids_bytes = 0, txt_bytes, bytes = 0;
    if (!rc && (__builtin_add_overflow(maxP, n_new, &total) ||
                !gdn2_mul_sz((size_t)total, sizeof(int32_t), &ids_bytes) || !gdn2_add_sz((size_t)n_new, 1, &txt_bytes) ||
                !gdn2_add_sz(ids_bytes, txt_bytes, &bytes) || !gdn2_mul_sz(bytes, (size_t)n_req, &bytes))) {
        fprintf(stderr, "gdn2 generate: -n %lld with a %lld-byte prompt overflows the buffer size\n", (long long)n_new,
                (long long)maxP);
        rc = 2;
    }
    char what[96];
    snprintf(what, sizeof what, "-n %lld", (long long)n_new);
    if (!rc) rc = cli_check_mem("generate", what, (double)bytes);
    gdn2_model *m = NULL;
    int st = GDN2_OK;
    if (!rc && (st = gdn2_model_load(ckpt, &m))) {
        fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
        rc = cli_exit_code(st);
    }
    if (!rc && m->cfg.vocab_size < GDN2_BYTE_VOCAB) {
        fprintf(stderr, "gdn2 generate: %s: vocab_size %lld < 256, not a byte-level model\n", ckpt,
                (long long)m->cfg.vocab_size);
        rc = 2;
    }
    if (!rc) {
        m->n_threads = threads;
        rc = cli_model_device("generate", m, device, !graph_off); /* before any state: states live where the model runs */
    }
    /* the prefix, into a one-slot pool (its full-attention cache sized by the file's token count) */
    gdn2_model_state *pre = NULL;
    float *pre_lg = NULL;
    int pre_has_lg = 0;
    int64_t n_pre = 0;
    if (!rc && load_prefix) {
        gdn2_st f;
        if ((st = gdn2_st_read(load_prefix, &f))) {
            fprintf(stderr, "gdn2 generate: --load-prefix: %s\n", gdn2_last_error());
            rc = cli_exit_code(st);
        } else {
            st = gdn2_model_prefix_tokens(&f, load_prefix, &n_pre);
            gdn2_st_free(&f);
            /* the one-slot pool holds n_pre positions of every full-attention layer */
            if (!st)
                rc = cli_check_mem("generate", "the --load-prefix file's states", cli_state_bytes(&m->cfg, (double)n_pre));
            if (!st && !rc) pre_lg = gdn2_malloc((size_t)m->cfg.padded_vocab * sizeof(float), "prefix logits");
            if (!st && !rc) st = pre_lg ? gdn2_model_state_create(m, 1, n_pre > 1 ? n_pre : 2, &pre) : GDN2_ERR_NOMEM;
            if (!st && !rc) st = gdn2_model_state_load_slot(m, pre, 0, load_prefix, pre_lg, &pre_has_lg);
            if (st) {
                fprintf(stderr, "gdn2 generate: --load-prefix: %s\n", gdn2_last_error());
                rc = cli_exit_code(st);
            }
        }
        for (int64_t i = 0; !rc && i < n_prompts; i++)
            if (!plist[i][0] && !pre_has_lg) {
                fprintf(stderr, "gdn2 generate: --load-prefix: '%s' has no logits, so a prompt is needed after it\n",
                        load_prefix);
                rc = 2;
            }
    }
    /* with the model: the engine's state (attention caches grow with the context: linear in the
     * length, so taken from lengths 1 and 2 in double) and the longest prompt's prefill */
    const int64_t ctx = n_pre + maxP + n_new;
    if (!rc) {
        double need = (double)bytes + (double)slots * cli_state_bytes(&m->cfg, (double)ctx) +
                      cli_forward_bytes(&m->cfg, cli_prefill_tokens(m, (double)maxP), 0);
        if (device) /* the states and the forward live on the GPU: the host holds the ids, texts, logits */
            need = (double)bytes + 8.0 * (double)slots * (double)m->cfg.padded_vocab;
        rc = cli_check_mem("generate", what, need);
    }
    gdn2_engine *e = NULL;
    if (!rc) {
        if ((st = gdn2_engine_create(m, slots, ctx > 2 ? ctx : 2, &e))) {
            fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
            rc = cli_exit_code(st);
        }
    }
    int32_t *ids = NULL, *stop_ids = NULL;
    char *txt = NULL;
    int64_t *slot_of = NULL, *req_of_slot = NULL;
    double *t_start = NULL;
    if (!rc) {
        ids = gdn2_malloc((size_t)(maxP > 0 ? maxP : 1) * sizeof(int32_t), "token ids");
        txt = gdn2_malloc((size_t)n_new + 1, "generated text");
        slot_of = malloc((size_t)n_req * sizeof *slot_of);
        req_of_slot = malloc((size_t)slots * sizeof *req_of_slot);
        t_start = malloc((size_t)n_req * sizeof *t_start);
        stop_ids = stop ? gdn2_malloc(strlen(stop) * sizeof(int32_t), "stop ids") : NULL;
        if (!ids || !txt || !slot_of || !req_of_slot || !t_start || (stop && !stop_ids)) {
            fprintf(stderr, "gdn2 generate: out of memory\n");
            rc = 1;
        }
    }
    /* the batch: submit while slots are free, step, print finished requests in order */
    int64_t next = 0, printed = 0;
    const int32_t *stops[1] = {stop_ids};
    int64_t stop_len[1] = {stop ? (int64_t)strlen(stop) : 0};
    if (stop_ids) gdn2_byte_encode(stop, stop_len[0], stop_ids);
    for (int64_t k = 0; !rc && k < slots; k++) req_of_slot[k] = -1;
    for (int64_t i = 0; !rc && i < n_req; i++) slot_of[i] = -1;
    while (!rc && printed < n_req) {
        while (!rc && next < n_req && gdn2_engine_free_slots(e) > 0) {
            const char *p = plist[next / samples];
            const int64_t P = (int64_t)strlen(p);
            gdn2_byte_encode(p, P, ids);
            gdn2_request r = {ids, P, n_new, {temp, top_k, top_p, seed + (uint64_t)(next % samples)},
                              stops, stop_len, stop ? 1 : 0, pre, 0, pre_has_lg ? pre_lg : NULL};
            int64_t k;
            t_start[next] = gdn2_now();
            if ((st = gdn2_engine_submit(e, &r, &k))) {
                fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
                rc = cli_exit_code(st);
                break;
            }
            if (save_prefix) {
                if ((st = gdn2_engine_save_prefix(e, k, save_prefix))) {
                    fprintf(stderr, "gdn2 generate: --save-prefix: %s\n", gdn2_last_error());
                    rc = 1;
                    break;
                }
                fprintf(stderr, "[prefix of %lld tokens saved to %s]\n", (long long)(n_pre + P), save_prefix);
            }
            slot_of[next] = k, req_of_slot[k] = next++;
        }
        if (rc) break;
        /* print every finished request at the head of the order */
        for (;;) {
            if (printed >= n_req || slot_of[printed] < 0) break;
            gdn2_slot_output o;
            gdn2_engine_output(e, slot_of[printed], &o);
            if (o.finish == GDN2_FINISH_NONE) break;
            if (o.finish == GDN2_FINISH_ERROR) {
                fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
                rc = 1;
                break;
            }
            double dt = gdn2_now() - t_start[printed];
            gdn2_byte_decode(o.tokens, o.n_committed, txt);
            fputs(plist[printed / samples], stdout);
            fwrite(txt, 1, (size_t)o.n_committed, stdout);
            fputc('\n', stdout);
            fflush(stdout);
            fprintf(stderr, "[sample %lld: %lld bytes in %.2f s, %.0f tok/s (%lld in the batch); decode state %zu floats]\n",
                    (long long)printed + 1, (long long)o.n_generated, dt, o.n_generated / (dt > 0 ? dt : 1),
                    (long long)slots, gdn2_model_state_floats(&m->cfg, ctx));
            gdn2_engine_release(e, slot_of[printed]);
            req_of_slot[slot_of[printed]] = -1;
            printed++;
        }
        if (rc || printed >= n_req) break;
        if (gdn2_engine_running(e) == 0) continue; /* all finished: free slots to refill or print */
        if ((st = gdn2_engine_step(e))) {
            fprintf(stderr, "gdn2 generate: %s\n", gdn2_last_error());
            rc = 1;
        }
    }
    free(ids), free(txt), free(slot_of), free(req_of_slot), free(t_start), free(stop_ids), free(pre_lg);
    gdn2_engine_free(e);
    gdn2_model_state_free(pre);
    gdn2_model_free(m);
    if (plist != one) free(plist);
    free(pbuf);
    return rc;
}
