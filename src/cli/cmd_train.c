/* gdn2 train — train a model on a text file (byte tokenizer) or on MQAR, on the CPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_model.h"

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 train [options]\n"
            "\n"
            "Trains a GDN-2 / hybrid language model in fp32 on the CPU (OpenMP) with AdamW (betas 0.9/0.95,\n"
            "eps 1e-8), linear warmup then cosine to min-lr, gradient clipping and accumulation.\n"
            "  --model NAME        config: %s (default tiny)\n"
            "  --layout L          per-layer mixers, cycled: e.g. gdn2 | gdn2,swa | kda | gdn | attn\n"
            "  --task T            text (default) or mqar\n"
            "  --data FILE         text file (default ../shared/data/tinyshakespeare.txt); last 10%% = validation\n"
            "  --batch N           sequences per micro-batch (16)\n"
            "  --seq-len N         tokens per sequence (64)\n"
            "  --steps N           optimizer steps (1000)\n"
            "  --accum N           micro-batches per step (1)\n"
            "  --warmup N          warmup steps (default 5%% of steps)\n"
            "  --lr X              peak learning rate (3e-3)\n"
            "  --min-lr X          final learning rate (default lr/10)\n"
            "  --wd X              AdamW weight decay (0.1, on every parameter as official)\n"
            "  --exempt-no-decay   no decay on A_log, dt_bias, norm weights and biases\n"
            "  --clip X            gradient-norm clip (1.0; 0 = off)\n"
            "  --seed N            seed of init and data (3407)\n"
            "  --log-every N       progress line every N steps (50)\n"
            "  --eval-every N      evaluation every N steps (0 = at the end only)\n"
            "  --eval-batches N    text: validation batches per evaluation (20)\n"
            "  --eval-samples N    mqar: test samples per evaluation (500)\n"
            "  --mqar-vocab N      mqar vocabulary (256)\n"
            "  --mqar-pairs N      mqar key-value pairs (4)\n"
            "  --mqar-no-fill      mqar: unused query slots stay 0 (Zoology Fig. 2) instead of random tokens\n"
            "  --gdn-heads N       override the config's recurrent heads\n"
            "  --gdn-head-dim N    override the config's recurrent head dim\n"
            "  --target-acc X      mqar: stop once the test accuracy reaches X\n"
            "  --time-limit S      stop after S seconds\n"
            "  -o, --out PATH      checkpoint (safetensors, official names); optimizer state in PATH.optim\n"
            "  --save-every N      also checkpoint every N steps\n"
            "  --resume            continue bit-exactly from --out and --out.optim\n"
            "  --stop-at N         stop after step N (the schedule still runs to --steps)\n"
            "  --threads N         CPU threads (0 = OpenMP default)\n"
            "  --quiet             no progress lines\n"
            "Prints a progress line (step, loss, lr, tokens/s, ETA) and a final JSON summary line.\n"
            "Exit status: 0 ok, 2 bad usage or input, 1 runtime failure.\n",
            gdn2_model_config_names());
}

int cmd_train(int argc, char **argv) {
    gdn2_train_opts o;
    gdn2_train_defaults(&o);
    o.log = stdout;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
#define ARG_S(flag, field) else if (!strcmp(a, flag) && more) o.field = argv[++i];
#define ARG_I(flag, field) else if (!strcmp(a, flag) && more) o.field = atoll(argv[++i]);
#define ARG_F(flag, field) else if (!strcmp(a, flag) && more) o.field = (float)atof(argv[++i]);
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            train_usage(stdout);
            return 0;
        }
        ARG_S("--model", model) ARG_S("--layout", layout) ARG_S("--task", task) ARG_S("--data", data)
        ARG_I("--batch", batch) ARG_I("--seq-len", seq_len) ARG_I("--steps", steps) ARG_I("--accum", accum)
        ARG_I("--warmup", warmup) ARG_F("--lr", lr) ARG_F("--min-lr", min_lr) ARG_F("--wd", weight_decay)
        ARG_F("--clip", clip) ARG_I("--seed", seed) ARG_I("--log-every", log_every)
        ARG_I("--eval-every", eval_every) ARG_I("--eval-batches", eval_batches) ARG_I("--eval-samples", eval_samples)
        ARG_I("--mqar-vocab", mqar_vocab) ARG_I("--mqar-pairs", mqar_pairs) ARG_F("--target-acc", target_acc)
        ARG_I("--save-every", save_every) ARG_I("--stop-at", stop_at) ARG_I("--threads", n_threads)
        ARG_S("-o", out) ARG_S("--out", out)
        else if (!strcmp(a, "--time-limit") && more) o.time_limit_s = atof(argv[++i]);
        ARG_I("--gdn-heads", gdn_heads) ARG_I("--gdn-head-dim", gdn_head_dim)
        else if (!strcmp(a, "--exempt-no-decay")) o.exempt_no_decay = 1;
        else if (!strcmp(a, "--mqar-no-fill")) o.mqar_no_fill = 1;
        else if (!strcmp(a, "--resume")) o.resume = 1;
        else if (!strcmp(a, "--quiet")) o.quiet = 1;
        else {
            fprintf(stderr, "gdn2 train: unknown or incomplete option '%s'\n", a);
            train_usage(stderr);
            return 2;
        }
#undef ARG_S
#undef ARG_I
#undef ARG_F
    }
    gdn2_train_result r;
    cli_blas_one_thread();
    int st = gdn2_train(&o, &r, NULL);
    if (st) {
        fprintf(stderr, "gdn2 train: %s\n", gdn2_last_error());
        return st == GDN2_ERR_ARG || st == GDN2_ERR_IO || st == GDN2_ERR_FORMAT ? 2 : 1;
    }
    return 0;
}
