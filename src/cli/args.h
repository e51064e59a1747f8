/* The CLI's one argument parser (src/cli/args.c), used by every command, and the checks every
 * command runs before any heavy work: input files, output paths, memory estimates, exit codes.
 *
 * Each command describes its options in a table (one cli_opt per option) and calls cli_parse.
 * Integers go through strtoll with the whole string consumed; an exactly integral decimal
 * scientific form ("1e8") is accepted too, so that a size is refused for its size, not for its
 * spelling. Numbers go through strtod with the whole string consumed; NaN, inf, hex and values that
 * overflow are rejected. Every value is range-checked against the bounds given in the table, and
 * a bad value, an unknown option or a missing value prints
 *     gdn2 <cmd>: <option>: expected <what is accepted>, got "<value>"
 * and makes the command exit with status 2 (bad usage). Values are stored in the destination's
 * own type (int64_t, uint64_t, int, float, double): nothing is truncated on the way. */
#ifndef GDN2_CLI_ARGS_H
#define GDN2_CLI_ARGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gdn2_model.h"

typedef enum {
    CLI_FLAG,   /* no value: *(int *)dst = 1                                            */
    CLI_STR,    /* *(const char **)dst = the value (non-empty)                          */
    CLI_INT,    /* *(int *)dst, integer in [ilo, ihi] (the bounds must fit an int)      */
    CLI_I64,    /* *(int64_t *)dst, integer in [ilo, ihi]                               */
    CLI_U64,    /* *(uint64_t *)dst, integer in [ilo, ihi], ilo >= 0                    */
    CLI_F32,    /* *(float *)dst, finite number in the range flo..fhi (see flags)       */
    CLI_F64,    /* *(double *)dst, finite number in the range flo..fhi (see flags)      */
    CLI_CHOICE, /* *(int *)dst = index of the value in choices ("chunk|reference")      */
} cli_kind;

/* number ranges: open bounds (lo < x rather than lo <= x); fhi = INFINITY means no upper bound */
#define CLI_LO_OPEN 1
#define CLI_HI_OPEN 2

typedef struct {
    const char *name;    /* "--lr"                                                             */
    const char *alias;   /* a second spelling ("-o" for "--out"), or NULL                       */
    cli_kind kind;
    void *dst;
    long long ilo, ihi;  /* integer kinds                                                       */
    double flo, fhi;     /* number kinds                                                        */
    int flags;           /* CLI_LO_OPEN | CLI_HI_OPEN                                           */
    const char *choices; /* CLI_CHOICE                                                          */
    int *seen;           /* optional: set to 1 when the option is given                         */
} cli_opt;

/* table entries */
#define CLI_OPT_FLAG(n, d) {.name = (n), .kind = CLI_FLAG, .dst = (d)}
#define CLI_OPT_STR(n, a, d) {.name = (n), .alias = (a), .kind = CLI_STR, .dst = (d)}
#define CLI_OPT_INT(n, d, lo, hi) {.name = (n), .kind = CLI_INT, .dst = (d), .ilo = (lo), .ihi = (hi)}
#define CLI_OPT_I64(n, d, lo, hi) {.name = (n), .kind = CLI_I64, .dst = (d), .ilo = (lo), .ihi = (hi)}
#define CLI_OPT_U64(n, d, lo, hi) {.name = (n), .kind = CLI_U64, .dst = (d), .ilo = (lo), .ihi = (hi)}
#define CLI_OPT_F32(n, d, lo, hi, fl) {.name = (n), .kind = CLI_F32, .dst = (d), .flo = (lo), .fhi = (hi), .flags = (fl)}
#define CLI_OPT_F64(n, d, lo, hi, fl) {.name = (n), .kind = CLI_F64, .dst = (d), .flo = (lo), .fhi = (hi), .flags = (fl)}
#define CLI_OPT_CHOICE(n, d, ch) {.name = (n), .kind = CLI_CHOICE, .dst = (d), .choices = (ch)}

/* common bounds */
#define CLI_SEED_MAX INT64_MAX      /* --seed: [0, 2^63-1]                                     */
#define CLI_STEPS_MAX 1000000000000LL /* --steps, --stop-at, --warmup: at most 1e12          */

/* Parse argv[first..argc-1] against opts. Values follow their option ("--lr 3e-3") or are joined
 * with '=' ("--lr=3e-3"); a value may begin with '-' ("--threads -7" is a range error, not a
 * missing value). Arguments that do not start with '-' (or are exactly "-") are positional: up
 * to max_pos of them land in pos[] (*n_pos counts them). -h / --help prints usage(stdout).
 * Returns 0 to go on, -1 after --help (the command exits 0), or 2 after printing the error (and,
 * for an unknown option, usage(stderr)). */
int cli_parse(const char *cmd, int argc, char **argv, int first, const cli_opt *opts, int n_opts, const char **pos,
              int max_pos, int *n_pos, void (*usage)(FILE *));

/* One value, for list items and values checked outside a table (e.g. --lengths 64,128). Print
 * the error naming cmd, opt and s and return 0 when s is not acceptable; else store and return 1. */
int cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out);
int cli_num(const char *cmd, const char *opt, const char *s, double lo, double hi, int flags, double *out);

/* --threads: 0 (the OpenMP default) or 1 .. cli_max_threads() = 4 x the online CPUs, at most 1024
 * (oversubscription beyond that only slows a CPU run down; 4x leaves room for experiments). */
int cli_max_threads(void);

/* ---- before any heavy work ----------------------------------------------------------------- */
/* An input file given by an option (opt, e.g. "--data") or positionally (opt = "input"): it must
 * exist and be a regular file. Prints "gdn2 <cmd>: <opt>: 'path': not a regular file" (or the
 * open error) and returns 2; 0 when readable. */
int cli_check_in(const char *cmd, const char *opt, const char *path);
/* An output file: its directory must exist and be writable, and the path, if it exists, must be a
 * regular file (a device such as /dev/full is never replaced). Returns 0, or 1 (a write that cannot
 * succeed is a runtime failure, README) after printing the reason. */
int cli_check_out(const char *cmd, const char *opt, const char *path);

/* Physical memory in bytes: sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE). */
double cli_phys_mem(void);
/* Refuse a request whose estimated memory exceeds the physical memory: prints
 * "gdn2 <cmd>: <what> needs at least X of memory (estimate), more than the Y of physical memory"
 * and returns 2; 0 when it fits. The estimates are lower bounds (what the largest buffers need),
 * so a request that is refused could never run; one that passes may still fail later with exit 1. */
int cli_check_mem(const char *cmd, const char *what, double bytes);
/* Lower bound, in bytes, of a model forward over `tokens` tokens (activation buffer, mixer
 * output, logits of every row, token ids); train = 1 adds the backward's scratch and the
 * evaluation's logits. Computed in double: never overflows. */
double cli_forward_bytes(const gdn2_model_cfg *c, double tokens, int train);
/* Bytes of one sequence's decode state at a context of `len` tokens: linear in the length (attention
 * caches), so taken from lengths 1 and 2 in double: never overflows. */
double cli_state_bytes(const gdn2_model_cfg *c, double len);
/* the tokens one forward of a P-token prefill holds: at most m->prefill_chunk
 * (gdn2_model_prefill_slot consumes a prompt in pieces) */
double cli_prefill_tokens(const gdn2_model *m, double P);

/* The checks `gdn2 train` and `gdn2 demo` run before gdn2_train: the data file (task text), the
 * output path, the model config, the memory the run needs (cli_forward_bytes; with --resume, the
 * logits and ids alone), the int-sized counts the library keeps and the 64-bit token counter.
 * Returns 0 or the exit status after printing the reason. */
int cli_train_preflight(const char *cmd, const gdn2_train_opts *o);
/* Exit code of a failed gdn2_train: an I/O error after steps were done is a failed write (1). */
int cli_train_exit_code(int st, const gdn2_train_result *r);

/* Exit code of a library status: bad argument / input file / format -> 2, else 1 (README). */
int cli_exit_code(int st);

/* --device cuda of a command that runs a model (forward, generate, eval, serve): moves m to the GPU
 * (gdn2_model_set_device). On failure (no CUDA built in, no device, the weights do not fit) prints
 * "gdn2 <cmd>: --device cuda: <why>" and returns the exit code; 0 when done or when cuda is 0.
 * cuda_graph: --cuda-graph on (1) / off (0) of the commands that decode, m->cuda_graph (the decode
 * step replayed from CUDA graphs; no effect on the CPU). */
int cli_model_device(const char *cmd, gdn2_model *m, int cuda, int cuda_graph);

#endif
