/* gdn2 train — train a model on a text file (byte tokenizer) or on MQAR, on the CPU or the GPU. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_model.h"
#ifdef GDN2_HAVE_MPI
#include <mpi.h>
#endif

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 train [options]\n"
            "\n"
            "Trains a GDN-2 / hybrid language model in fp32 on the CPU (OpenMP), or bf16-mixed on the GPU\n"
            "(--device cuda), with AdamW (betas 0.9/0.95, eps 1e-8), linear warmup then cosine to min-lr,\n"
            "gradient clipping and accumulation. Checkpoints are the same files on both devices.\n"
            "  --device D          cpu (default) or cuda\n"
            "  --model NAME        config: %s (default tiny)\n"
            "  --layout L          per-layer mixers, cycled: e.g. gdn2 | gdn2,swa | kda | gdn | attn\n"
            "  --task T            text (default), mqar, or tokens (llm.c token shards, docs/FORMATS.md)\n"
            "  --data FILE         text file (default " GDN2_DEFAULT_TEXT ", fetched by sh scripts/get_data.sh);\n"
            "                      last 10%% = validation. Task tokens: a glob pattern or comma list of .bin\n"
            "                      shards (\"data/fineweb_train_*.bin\"), memory-mapped, read in name order\n"
            "  --val-data PATTERN  tokens: validation shards (default: the last shard of --data, or the last\n"
            "                      10%% of its only shard)\n"
            "  --vocab N           tokens: the model's vocabulary (default: the --model config's); an id >= N in\n"
            "                      a batch is an error naming the file and position\n"
            "  --shuffle-shards    tokens: shuffle the train shards' order each epoch (by --seed)\n"
            "  --scan-data         tokens: check every token id before the first step (default: each batch's)\n"
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
            "  --target-loss X     text: stop once the validation loss is at most X (nats/token)\n"
            "  --time-limit S      stop after S seconds\n"
            "  -o, --out PATH      checkpoint (safetensors, official names); optimizer state in PATH.optim\n"
            "  --save-every N      also checkpoint every N steps\n"
            "  --resume            continue bit-exactly from --out and --out.optim: run the same command\n"
            "                      again with --resume. Refused (exit 2) when the two files are not one\n"
            "                      save (same run id and step: a save killed between its two renames), or\n"
            "                      when a run setting differs from the saved run (task, model, layout,\n"
            "                      steps, seed, lr, min-lr, warmup, batch, seq-len, accum, wd, clip,\n"
            "                      exempt-no-decay, mqar-*, gdn-head*, vocab, shuffle-shards, and the --data /\n"
            "                      --val-data files' size + hash); task tokens continues at the saved data position\n"
            "  --allow-change LIST with --resume: settings that may differ from the saved run, e.g.\n"
            "                      steps,lr (not model, layout, gdn-heads, gdn-head-dim: the checkpoint's)\n"
            "  --stop-at N         stop after step N (the schedule still runs to --steps)\n"
            "  --ranks N           data parallel on N CPU processes of this machine (shared memory; --batch is\n"
            "                      the global batch, split over the ranks; docs/DIST.md)\n"
            "  --gpus N            data parallel on N GPUs of this machine, one process each (NCCL; implies\n"
            "                      --device cuda)\n"
            "  --dist D            auto (default): one rank of an MPI job when started by mpirun (with\n"
            "                      OMPI_COMM_WORLD_SIZE or PMI_SIZE > 1 in the environment), else --ranks/--gpus;\n"
            "                      mpi: an MPI job whatever the environment; local: never MPI. Under MPI every\n"
            "                      process is one rank: `mpirun -np N gdn2 train ...` (CPU; --device cuda: the\n"
            "                      GPU of the process's index on its node, NCCL), --batch is the global batch\n"
            "  --zero1             with --ranks/--gpus/mpirun: shard the AdamW moments over the ranks (ZeRO-1)\n"
            "  --dist-timeout S    a collective waits S seconds for the slowest rank (600)\n"
            "  --dist-grace S      after a rank fails, the others get SIGTERM, then SIGKILL S seconds later (10)\n"
            "  --dropout P         drop a share P of each mixer's and MLP's output in training (0)\n"
            "  --emb-dropout P     drop a share P of the embedding's output in training (0; nanoGPT's)\n"
            "  --recompute         keep only each block's input and recompute the block in the backward\n"
            "                      (one more forward; activations of one block: for the 1.3B configs)\n"
            "  --keep-chunk        GDN-2/KDA/GDN layers keep the chunk kernels' intermediates from the forward\n"
            "                      for the backward instead of recomputing them (faster backward, more memory:\n"
            "                      a reserve per layer, one in all with --recompute; docs/BACKEND.md)\n"
            "  --threads N         CPU threads (0 = OpenMP default)\n"
            "  --quiet             no progress lines\n"
            "Prints a progress line (step, loss, lr, tokens/s, ETA) and a final JSON summary line.\n"
            "Temporary files PATH.tmp.<pid> / PATH.optim.tmp.<pid> left by a killed run are removed at the\n"
            "next start, with a note.\n"
            "Exit status: 0 ok, 2 bad usage or input, 1 runtime failure.\n",
            gdn2_model_config_names());
}

/* started by mpirun (OpenMPI) or a PMI launcher (MPICH's hydra, Slurm) with more than one process:
 * the variable that says so in why */
static int mpi_launched(char *why, size_t n) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1) {
            snprintf(why, n, "%s=%s", vars[i], v);
            return 1;
        }
    }
    return 0;
}

/* this process as one rank of an MPI job: MPI_Init and MPI_Finalize here, in the program (the
 * library takes the job as it finds it); a rank that fails aborts the job (the others may be
 * waiting for it in a collective) */
static int train_mpi(gdn2_train_opts *o, const char *why) {
    gdn2_train_result r;
    memset(&r, 0, sizeof r);
#ifdef GDN2_HAVE_MPI
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        fprintf(stderr, "gdn2 train: MPI_Init failed (%s)\n", why);
        return 1;
    }
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (o->batch % world) {
        if (rank == 0)
            fprintf(stderr, "gdn2 train: --batch %lld must be a multiple of the %d MPI ranks (the global batch is split)\n",
                    (long long)o->batch, world);
        MPI_Finalize();
        return 2;
    }
    int st = gdn2_train_mpi(o, &r);
    if (st) {
        fprintf(stderr, "gdn2 train: rank %d of %d: %s\n", rank, world, gdn2_last_error());
        fflush(NULL);
        if (world > 1) MPI_Abort(MPI_COMM_WORLD, cli_train_exit_code(st, &r));
        MPI_Finalize();
        return cli_train_exit_code(st, &r);
    }
    MPI_Finalize();
    return 0;
#else
    int st = gdn2_train_mpi(o, &r); /* the stub: built without MPI */
    fprintf(stderr, "gdn2 train: started as an MPI job (%s), but %s\n", why, gdn2_last_error());
    return cli_train_exit_code(st, &r);
#endif
}

/* --seq-len is bounded by the memory check (cli_train_preflight), not by its range */
#define TRAIN_LEN_MAX (1LL << 53)

int cmd_train(int argc, char **argv) {
    gdn2_train_opts o;
    gdn2_train_defaults(&o);
    o.log = stdout;
    int task = 0; /* text, mqar, tokens */
    int device = 0; /* cpu, cuda */
    int ranks = 1, gpus = 0;
    int dist = 0; /* auto, local, mpi */
    const cli_opt opts[] = {
        CLI_OPT_STR("--model", NULL, &o.model),
        CLI_OPT_STR("--layout", NULL, &o.layout),
        CLI_OPT_CHOICE("--task", &task, "text|mqar|tokens"),
        CLI_OPT_STR("--data", NULL, &o.data),
        CLI_OPT_STR("--val-data", NULL, &o.val_data),
        CLI_OPT_I64("--vocab", &o.vocab, 1, 1 << 24),
        CLI_OPT_FLAG("--shuffle-shards", &o.shuffle_shards),
        CLI_OPT_FLAG("--scan-data", &o.scan_data),
        CLI_OPT_I64("--batch", &o.batch, 1, 1 << 20),
        CLI_OPT_I64("--seq-len", &o.seq_len, 2, TRAIN_LEN_MAX),
        CLI_OPT_I64("--steps", &o.steps, 1, CLI_STEPS_MAX),
        CLI_OPT_I64("--accum", &o.accum, 1, 1 << 16),
        CLI_OPT_I64("--warmup", &o.warmup, 0, CLI_STEPS_MAX),
        CLI_OPT_F32("--lr", &o.lr, 0, INFINITY, CLI_LO_OPEN),
        CLI_OPT_F32("--min-lr", &o.min_lr, 0, INFINITY, 0),
        CLI_OPT_F32("--wd", &o.weight_decay, 0, INFINITY, 0),
        CLI_OPT_F32("--clip", &o.clip, 0, INFINITY, 0),
        CLI_OPT_U64("--seed", &o.seed, 0, CLI_SEED_MAX),
        CLI_OPT_INT("--log-every", &o.log_every, 0, INT_MAX),
        CLI_OPT_INT("--eval-every", &o.eval_every, 0, INT_MAX),
        CLI_OPT_INT("--eval-batches", &o.eval_batches, 1, 1000000),
        CLI_OPT_INT("--eval-samples", &o.eval_samples, 1, 10000000),
        CLI_OPT_INT("--mqar-vocab", &o.mqar_vocab, 4, 1 << 24),
        CLI_OPT_INT("--mqar-pairs", &o.mqar_pairs, 1, 1 << 23),
        CLI_OPT_F32("--target-acc", &o.target_acc, 0, 1, 0),
        CLI_OPT_F32("--target-loss", &o.target_loss, 0, INFINITY, 0),
        CLI_OPT_CHOICE("--device", &device, "cpu|cuda"),
        CLI_OPT_F64("--time-limit", &o.time_limit_s, 0, INFINITY, 0),
        CLI_OPT_STR("--out", "-o", &o.out),
        CLI_OPT_STR("--allow-change", NULL, &o.allow_change),
        CLI_OPT_INT("--save-every", &o.save_every, 0, INT_MAX),
        CLI_OPT_I64("--stop-at", &o.stop_at, 0, CLI_STEPS_MAX),
        CLI_OPT_INT("--threads", &o.n_threads, 0, cli_max_threads()),
        CLI_OPT_I64("--gdn-heads", &o.gdn_heads, 1, 1 << 16),
        CLI_OPT_I64("--gdn-head-dim", &o.gdn_head_dim, 1, 1 << 16),
        CLI_OPT_FLAG("--exempt-no-decay", &o.exempt_no_decay),
        CLI_OPT_FLAG("--mqar-no-fill", &o.mqar_no_fill),
        CLI_OPT_FLAG("--resume", &o.resume),
        CLI_OPT_FLAG("--recompute", &o.recompute),
        CLI_OPT_FLAG("--keep-chunk", &o.keep_chunk),
        CLI_OPT_F32("--dropout", &o.dropout, 0, 1, CLI_HI_OPEN),
        CLI_OPT_F32("--emb-dropout", &o.emb_dropout, 0, 1, CLI_HI_OPEN),
        CLI_OPT_INT("--ranks", &ranks, 1, 64),
        CLI_OPT_INT("--gpus", &gpus, 1, 64),
        CLI_OPT_CHOICE("--dist", &dist, "auto|local|mpi"),
        CLI_OPT_FLAG("--zero1", &o.zero1),
        CLI_OPT_F64("--dist-timeout", &o.dist_timeout_s, 0, 1e6, CLI_LO_OPEN),
        CLI_OPT_F64("--dist-grace", &o.dist_grace_s, 0, 1e6, CLI_LO_OPEN),
        CLI_OPT_FLAG("--quiet", &o.quiet),
    };
    int rc = cli_parse("train", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL, train_usage);
    if (rc) return rc < 0 ? 0 : rc;
    o.task = task == 2 ? "tokens" : task ? "mqar" : "text";
    o.device = device || gpus ? "cuda" : NULL;
    if (gpus && ranks > 1) {
        fprintf(stderr, "gdn2 train: --gpus N and --ranks N both given: --ranks is for CPU ranks, --gpus for GPUs\n");
        return 2;
    }
    char why[96] = "--dist mpi";
    if (dist == 2 || (dist == 0 && mpi_launched(why, sizeof why))) {
        if (gpus || ranks > 1) {
            fprintf(stderr, "gdn2 train: started as an MPI job (%s): every process is one rank; --ranks and --gpus do not "
                            "apply (--device cuda for one GPU per process)\n", why);
            return 2;
        }
        if ((rc = cli_train_preflight("train", &o))) return rc;
        cli_blas_one_thread();
        return train_mpi(&o, why);
    }
    const int world = gpus ? gpus : ranks;
    if (o.batch % world) {
        fprintf(stderr, "gdn2 train: --batch %lld must be a multiple of the %d ranks (the global batch is split)\n",
                (long long)o.batch, world);
        return 2;
    }
    if ((rc = cli_train_preflight("train", &o))) return rc;
    gdn2_train_result r;
    memset(&r, 0, sizeof r);
    cli_blas_one_thread();
    int st = world > 1 ? gdn2_train_parallel(&o, world, &r) : gdn2_train(&o, &r, NULL);
    if (st) {
        fprintf(stderr, "gdn2 train: %s\n", gdn2_last_error());
        return cli_train_exit_code(st, &r);
    }
    return 0;
}
