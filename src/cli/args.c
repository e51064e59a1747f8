/* The CLI's argument parser and pre-flight checks (src/cli/args.h). */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "gdn2.h"
#include "gdn2_text.h"

/* ---- values ------------------------------------------------------------------------------- */

/* Only plain decimal spellings: digits, sign, point, exponent. This keeps strtod's hex floats,
 * "inf", "nan" and "infinity" out, and leading whitespace, which strtoll would skip. */
static int decimal_chars(const char *s) {
    if (!*s) return 0;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p) && !strchr("+-.eE", *p)) return 0;
    return 1;
}

static void int_range(char *buf, size_t n, long long lo, long long hi) {
    snprintf(buf, n, "an integer in [%lld, %lld]", lo, hi);
}

int cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out) {
    char what[96];
    int_range(what, sizeof what, lo, hi);
    long long v = 0;
    int ok = 0;
    if (decimal_chars(s)) {
        char *end;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (!*end) ok = errno ? -1 : 1; /* ERANGE: a whole integer beyond 64 bits */
        else {
            /* exactly integral scientific form: 1e8, 2.5e3 (strtod is exact for these sizes) */
            errno = 0;
            double d = strtod(s, &end);
            if (!*end && isfinite(d) && d == floor(d)) {
                if (d >= -9223372036854775808.0 && d < 9223372036854775808.0) v = (long long)d, ok = 1;
                else ok = -1;
            }
        }
    }
    if (ok == 1 && v >= lo && v <= hi) {
        *out = v;
        return 1;
    }
    fprintf(stderr, "gdn2 %s: %s: expected %s, got \"%s\"%s\n", cmd, opt, what, s,
            ok == 0 ? "" : " (out of range)");
    return 0;
}

static void num_range(char *buf, size_t n, double lo, double hi, int flags) {
    const char *lo_op = flags & CLI_LO_OPEN ? ">" : ">=", *hi_op = flags & CLI_HI_OPEN ? "<" : "<=";
    if (isinf(hi) && isinf(lo)) snprintf(buf, n, "a finite number");
    else if (isinf(hi)) snprintf(buf, n, "a finite number %s %g", lo_op, lo);
    else if (isinf(lo)) snprintf(buf, n, "a finite number %s %g", hi_op, hi);
    else
        snprintf(buf, n, "a finite number in %c%g, %g%c", flags & CLI_LO_OPEN ? '(' : '[', lo, hi,
                 flags & CLI_HI_OPEN ? ')' : ']');
}

int cli_num(const char *cmd, const char *opt, const char *s, double lo, double hi, int flags, double *out) {
    char what[96];
    num_range(what, sizeof what, lo, hi, flags);
    double v = NAN;
    if (decimal_chars(s)) {
        char *end;
        v = strtod(s, &end);
        if (*end) v = NAN; /* also catches "1e" and "--" */
    }
    int in = isfinite(v) && (flags & CLI_LO_OPEN ? v > lo : v >= lo) && (flags & CLI_HI_OPEN ? v < hi : v <= hi);
    if (in) {
        *out = v;
        return 1;
    }
    fprintf(stderr, "gdn2 %s: %s: expected %s, got \"%s\"\n", cmd, opt, what, s);
    return 0;
}

static int choice_index(const char *choices, const char *s) {
    size_t n = strlen(s);
    int k = 0;
    for (const char *p = choices; *p; k++) {
        size_t m = strcspn(p, "|");
        if (m == n && n && !strncmp(p, s, n)) return k;
        p += m;
        if (*p) p++;
    }
    return -1;
}

/* store one value into an option's destination; 0 after printing the error */
static int set_value(const char *cmd, const cli_opt *o, const char *name, const char *v) {
    long long iv;
    double dv;
    switch (o->kind) {
    case CLI_STR:
        if (!*v) {
            fprintf(stderr, "gdn2 %s: %s: expected a non-empty value, got \"\"\n", cmd, name);
            return 0;
        }
        *(const char **)o->dst = v;
        return 1;
    case CLI_INT:
        if (!cli_int(cmd, name, v, o->ilo < INT_MIN ? INT_MIN : o->ilo, o->ihi > INT_MAX ? INT_MAX : o->ihi, &iv))
            return 0;
        *(int *)o->dst = (int)iv;
        return 1;
    case CLI_I64:
        if (!cli_int(cmd, name, v, o->ilo, o->ihi, &iv)) return 0;
        *(int64_t *)o->dst = (int64_t)iv;
        return 1;
    case CLI_U64:
        if (!cli_int(cmd, name, v, o->ilo < 0 ? 0 : o->ilo, o->ihi, &iv)) return 0;
        *(uint64_t *)o->dst = (uint64_t)iv;
        return 1;
    case CLI_F32:
        if (!cli_num(cmd, name, v, o->flo, o->fhi, o->flags, &dv)) return 0;
        if (fabs(dv) > FLT_MAX) { /* stored in single precision: must not become inf */
            fprintf(stderr, "gdn2 %s: %s: \"%s\" is beyond single precision (at most %g)\n", cmd, name, v, (double)FLT_MAX);
            return 0;
        }
        *(float *)o->dst = (float)dv;
        return 1;
    case CLI_F64:
        if (!cli_num(cmd, name, v, o->flo, o->fhi, o->flags, &dv)) return 0;
        *(double *)o->dst = dv;
        return 1;
    case CLI_CHOICE: {
        int k = choice_index(o->choices, v);
        if (k < 0) {
            char list[256];
            size_t j = 0;
            for (const char *p = o->choices; *p && j + 3 < sizeof list; p++) {
                if (*p == '|') list[j++] = ',', list[j++] = ' ';
                else list[j++] = *p;
            }
            list[j] = 0;
            fprintf(stderr, "gdn2 %s: %s: expected one of %s, got \"%s\"\n", cmd, name, list, v);
            return 0;
        }
        *(int *)o->dst = k;
        return 1;
    }
    case CLI_FLAG:
        *(int *)o->dst = 1;
        return 1;
    }
    return 0;
}

/* ---- the parser ---------------------------------------------------------------------------- */

static const cli_opt *find_opt(const cli_opt *opts, int n, const char *a, size_t len) {
    for (int k = 0; k < n; k++) {
        const char *nm[2] = {opts[k].name, opts[k].alias};
        for (int j = 0; j < 2; j++)
            if (nm[j] && strlen(nm[j]) == len && !strncmp(nm[j], a, len)) return &opts[k];
    }
    return NULL;
}

int cli_parse(const char *cmd, int argc, char **argv, int first, const cli_opt *opts, int n_opts, const char **pos,
              int max_pos, int *n_pos, void (*usage)(FILE *)) {
    if (n_pos) *n_pos = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            if (usage) usage(stdout);
            return -1;
        }
        if (a[0] != '-' || !a[1]) { /* positional */
            if (!n_pos || *n_pos >= max_pos) {
                fprintf(stderr, "gdn2 %s: unexpected argument '%s'\n", cmd, a);
                if (usage) usage(stderr);
                return 2;
            }
            pos[(*n_pos)++] = a;
            continue;
        }
        const char *eq = a[1] == '-' ? strchr(a, '=') : NULL; /* --name=value */
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const cli_opt *o = find_opt(opts, n_opts, a, len);
        if (!o) {
            fprintf(stderr, "gdn2 %s: unknown option '%.*s'\n", cmd, (int)len, a);
            if (usage) usage(stderr);
            return 2;
        }
        const char *v = NULL;
        if (o->kind == CLI_FLAG) {
            if (eq) {
                fprintf(stderr, "gdn2 %s: %.*s takes no value, got \"%s\"\n", cmd, (int)len, a, eq + 1);
                return 2;
            }
        } else if (eq) v = eq + 1;
        else if (i + 1 < argc) v = argv[++i];
        else {
            fprintf(stderr, "gdn2 %s: %s: missing value\n", cmd, a);
            return 2;
        }
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)len, a);
        if (!set_value(cmd, o, name, v)) return 2;
        if (o->seen) *o->seen = 1;
    }
    return 0;
}

int cli_max_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    return n > 256 ? 1024 : (int)(4 * n);
}

/* ---- files --------------------------------------------------------------------------------- */

int cli_check_in(const char *cmd, const char *opt, const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "gdn2 %s: %s: cannot open '%s': %s\n", cmd, opt, path, strerror(errno));
        return 2;
    }
    if (!S_ISREG(sb.st_mode)) {
        fprintf(stderr, "gdn2 %s: %s: '%s': not a regular file%s\n", cmd, opt, path,
                S_ISDIR(sb.st_mode) ? " (a directory)" : "");
        return 2;
    }
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "gdn2 %s: %s: cannot read '%s': %s\n", cmd, opt, path, strerror(errno));
        return 2;
    }
    return 0;
}

int cli_check_out(const char *cmd, const char *opt, const char *path) {
    struct stat sb;
    if (!stat(path, &sb) && !S_ISREG(sb.st_mode)) {
        fprintf(stderr, "gdn2 %s: %s: cannot write '%s': it exists and is not a regular file%s\n", cmd, opt, path,
                S_ISDIR(sb.st_mode) ? " (a directory)" : "");
        return 1;
    }
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) {
        fprintf(stderr, "gdn2 %s: %s: cannot write '%s': path too long\n", cmd, opt, path);
        return 1;
    }
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    int r = stat(dir, &sb), e = errno;
    if (r != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "gdn2 %s: %s: cannot write '%s': directory '%s' %s\n", cmd, opt, path, dir,
                r != 0 && e == ENOENT ? "does not exist" : "is not a directory");
        return 1;
    }
    if (access(dir, W_OK) != 0) {
        fprintf(stderr, "gdn2 %s: %s: cannot write '%s': directory '%s' is not writable\n", cmd, opt, path, dir);
        return 1;
    }
    return 0;
}

/* ---- memory -------------------------------------------------------------------------------- */

double cli_phys_mem(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return 1e18; /* unknown: no refusal on this ground */
    return (double)pages * (double)page;
}

static void fmt_bytes(double b, char *buf, size_t n) {
    if (b >= 1e15) snprintf(buf, n, "%.3g PB", b / 1e15);
    else if (b >= 1e12) snprintf(buf, n, "%.3g TB", b / 1e12);
    else if (b >= 1e9) snprintf(buf, n, "%.3g GB", b / 1e9);
    else snprintf(buf, n, "%.3g MB", b / 1e6);
}

int cli_check_mem(const char *cmd, const char *what, double bytes) {
    double phys = cli_phys_mem();
    if (bytes <= phys) return 0;
    char need[32], have[32];
    fmt_bytes(bytes, need, sizeof need);
    fmt_bytes(phys, have, sizeof have);
    fprintf(stderr,
            "gdn2 %s: %s needs at least %s of memory (estimate), more than the %s of physical memory of this machine\n",
            cmd, what, need, have);
    return 2;
}

/* Per token, the model forward keeps (src/model/model.c acts_ensure): the residual stream L+1 times
 * and the final norm (d each), per layer the norm input/output and mixer output (3d), two norm
 * scales, the mixer's saved activations and the SwiGLU hidden pair (2I); then the mixer output
 * scratch (d), the logits (Vp) and 16 bytes of ids. Mixer activations: the GDN-type layer's own
 * count (measured at T = 64, a whole number of chunks), for attention the fused q,k,v. Training
 * adds the backward's scratch (3d + 2I), the evaluation's logits (Vp) and, independent of the
 * tokens, the parameters, gradients and AdamW moments (4 floats per parameter). */
double cli_state_bytes(const gdn2_model_cfg *c, double len) {
    const double s1 = (double)gdn2_model_state_floats(c, 1), s2 = (double)gdn2_model_state_floats(c, 2);
    return 4.0 * (s1 + (s2 - s1) * (len - 1));
}

double cli_forward_bytes(const gdn2_model_cfg *c, double tokens, int train) {
    const double L = (double)c->n_layer, d = (double)c->n_embd, I = (double)c->intermediate_size,
                 Vp = (double)c->padded_vocab;
    double per = (L + 2) * d + 1 + L * (3 * d + 2 + 2 * I) + d + Vp;
    for (int l = 0; l < c->n_layer; l++) {
        if (c->kind[l] >= GDN2_LAYER_SWA) per += (double)(c->n_head + 2 * c->n_query_groups) * (double)c->head_size;
        else {
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(c, l);
            per += (double)gdn2_layer_act_size(&lc, 1, 64) / 64.0;
        }
    }
    if (train) per += 3 * d + 2 * I + Vp;
    double bytes = tokens * (4.0 * per + 16.0);
    if (train) bytes += 16.0 * (double)gdn2_model_flat_size(c); /* weights, grads, AdamW m, v over the flat block */
    return bytes;
}

double cli_prefill_tokens(const gdn2_model *m, double P) {
    return m->prefill_chunk > 0 && (double)m->prefill_chunk < P ? (double)m->prefill_chunk : P;
}

int cli_exit_code(int st) { return st == GDN2_ERR_ARG || st == GDN2_ERR_IO || st == GDN2_ERR_FORMAT ? 2 : 1; }

int cli_model_device(const char *cmd, gdn2_model *m, int cuda, int cuda_graph) {
    m->cuda_graph = cuda_graph != 0;
    if (!cuda) return 0;
    int st = gdn2_model_set_device(m, "cuda");
    if (!st) return 0;
    fprintf(stderr, "gdn2 %s: --device cuda: %s\n", cmd, gdn2_last_error());
    return cli_exit_code(st);
}

/* ---- training runs (gdn2 train, gdn2 demo) ------------------------------------------------- */

int cli_train_preflight(const char *cmd, const gdn2_train_opts *o) {
    int rc;
    const int mqar = !strcmp(o->task, "mqar"), tok_task = !strcmp(o->task, "tokens");
    /* task tokens: --data is a pattern, which its loader expands and checks */
    if (!mqar && !tok_task && o->data && (rc = cli_check_in(cmd, "--data", o->data))) return rc;
    if (o->out && (rc = cli_check_out(cmd, "--out", o->out))) return rc;
    const int64_t B = o->batch, T = o->seq_len;
    const int64_t vocab = mqar ? o->mqar_vocab : tok_task && o->vocab > 0 ? o->vocab : GDN2_BYTE_VOCAB;
    const double tokens = (double)B * (double)T;
    double bytes;
    if (o->resume) {
        /* the model comes from the checkpoint: count the logits of training and evaluation and the
         * ids, which the vocabulary alone bounds */
        bytes = tokens * (16.0 + 8.0 * (double)vocab);
    } else {
        gdn2_model_cfg c;
        if (gdn2_model_config(o->model, &c) || (o->layout && gdn2_model_set_layout(&c, o->layout))) {
            fprintf(stderr, "gdn2 %s: %s\n", cmd, gdn2_last_error());
            return 2;
        }
        if (!tok_task || o->vocab > 0) c.vocab_size = vocab; /* tokens without --vocab: the config's */
        if (o->gdn_heads > 0) c.gdn_heads = c.gdn_v_heads = o->gdn_heads;
        if (o->gdn_head_dim > 0) c.gdn_head_dim = o->gdn_head_dim;
        if (gdn2_model_check(&c)) {
            fprintf(stderr, "gdn2 %s: %s\n", cmd, gdn2_last_error());
            return 2;
        }
        bytes = cli_forward_bytes(&c, tokens, 1);
    }
    char what[160];
    snprintf(what, sizeof what, "training with --batch %lld x --seq-len %lld", (long long)B, (long long)T);
    /* on the GPU the activations live in device memory: the device refuses what does not fit, with
     * the sizes (host memory holds the weights' and moments' copies only) */
    if (!(o->device && !strcmp(o->device, "cuda")) && (rc = cli_check_mem(cmd, what, bytes))) return rc;
    /* sizes the library keeps in an int: the GEMM row count (tokens per micro-batch) and the MQAR
     * generator's T; and the run's token counter (int64) */
    int64_t per_step, total;
    if (tokens > INT_MAX || (mqar && T > INT_MAX)) {
        fprintf(stderr, "gdn2 %s: --batch %lld x --seq-len %lld = %.0f tokens per micro-batch, more than 2^31-1\n", cmd,
                (long long)B, (long long)T, tokens);
        return 2;
    }
    if (__builtin_mul_overflow(B * T, o->accum, &per_step) || __builtin_mul_overflow(per_step, o->steps, &total)) {
        fprintf(stderr, "gdn2 %s: --batch x --seq-len x --accum x --steps overflows a 64-bit token count\n", cmd);
        return 2;
    }
    return 0;
}

int cli_train_exit_code(int st, const gdn2_train_result *r) {
    /* gdn2_train reads everything (data, checkpoint) before its first step and writes only after
     * steps: an I/O error once steps were done is a failed write (1), before it a bad input (2) */
    if (st == GDN2_ERR_IO && r->steps > 0) return 1;
    return cli_exit_code(st);
}
