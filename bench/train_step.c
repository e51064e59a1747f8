/* GPU training-step benchmark of the language model (the CUDA backend of the same model the CPU
 * trains): tokens/s, step time, peak device memory, MFU and where a step's time goes, for a named
 * config at (micro-batch B, T), random token ids as the official harness uses.
 *
 *   build/bench/train_step --config gdn2_1.3B --batch 4 --seq-len 4096 [--warmup 2] [--steps 6]
 *                          [--layout L] [--recompute] [--keep-chunk] [--no-profile] [--json OUT.json]
 *
 * One step = forward (bf16-mixed, lm_head + cross-entropy in row chunks), backward, global-norm clip
 * at 1.0, AdamW (one multi-tensor kernel) — what the official harness times (autocast forward,
 * fused CE, backward, clip_grad_norm_, fused AdamW). Timed: median wall time of --steps steps after
 * --warmup, each ended by a device synchronisation (the loss is read on the host every step, as
 * the training loop does).
 * Validation before timing (exit 1, nothing timed): the first step's loss is finite and within 1
 * nat of ln(vocab) (random init on random tokens), and the loss after the warm-up steps is finite.
 * Memory: peak = device memory in use after a step (cudaMemGetInfo) minus the memory in use before
 * the model was created (the CUDA context), plus the high-water mark of the stream-ordered pool
 * (the chunk kernels' scratch); the official figure is torch.cuda.max_memory_allocated.
 * MFU: the official harness's FLOP count (gdn2_model_flops_per_token: 6 N_nonemb + attention) of
 * the 989 TFLOP/s dense bf16 peak.
 * Split (--no-profile to skip): one more step with every backend op bracketed by CUDA events
 * (synchronising each op: slower than the timed steps, a breakdown only), summed by family: GEMM
 * (linear_fwd/bwd), GDN-2 (the chunk op), attention (rope + attention), the rest. Then one more step
 * with the ops marked on a timeline the host does not wait for (bench/op_profile.h's timeline mode): the
 * ops back to back as in a timed step, each op's device time, and the device's idle time between ops;
 * the figures to set beside a kernel-time profile of the peer (torch.profiler's). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "gdn2.h"
#include "gdn2_cuda.h"
#include "gdn2_model.h"
#include "util/internal.h"

enum { FAM_GEMM, FAM_GDN2, FAM_ATTN, FAM_REST, N_FAM };

#include "op_profile.h"

/* the families of g_op_ms, the rest being total minus the other three */
static void families(double total, double fam[N_FAM]) {
    fam[FAM_GEMM] = g_op_ms[OP_linear_fwd] + g_op_ms[OP_linear_bwd] + g_op_ms[OP_linear_fwd_batch];
    fam[FAM_GDN2] = g_op_ms[OP_gdn2_fwd] + g_op_ms[OP_gdn2_bwd];
    fam[FAM_ATTN] = g_op_ms[OP_rope_split] + g_op_ms[OP_rope_split_bwd] + g_op_ms[OP_attn_fwd] + g_op_ms[OP_attn_bwd];
    fam[FAM_REST] = total - fam[FAM_GEMM] - fam[FAM_GDN2] - fam[FAM_ATTN];
}
/* ", \"key\": {\"op\": ms, ...}" of the ops that ran */
static void json_ops(FILE *f, const char *key, const double *op_ms) {
    fprintf(f, ", \"%s\": {", key);
    int first = 1;
    for (int i = 0; i < N_OP; i++)
        if (g_op_n[i]) fprintf(f, "%s\"%s\": %.3f", first ? "" : ", ", k_op[i], op_ms[i]), first = 0;
    fprintf(f, "}");
}

/* one training step as the official harness times it: forward, backward, clip at 1.0, AdamW, sync */
static int train_step(gdn2_model *m, gdn2_adamw *opt, const int32_t *tok, const int32_t *tgt, int64_t B, int64_t T,
                      float *loss) {
    int st = gdn2_model_zero_grad(m);
    if (!st) st = gdn2_model_forward_backward(m, tok, tgt, B, T, loss, 1.0f); /* as train: lm_head's logits once */
    if (!st) st = gdn2_adamw_step_scaled(opt, m, 4e-4f, gdn2_clip_factor(gdn2_model_grad_norm(m), 1.0f)); /* as train */
    if (!st) st = gdn2_cuda_sync();
    return st;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static size_t used_bytes(void) {
    size_t fr = 0, tot = 0;
    gdn2_cuda_mem_info(&fr, &tot);
    return tot - fr;
}

int main(int argc, char **argv) {
    const char *cfg_name = "gdn2_1.3B", *layout = NULL, *json = NULL;
    int64_t B = 4, T = 4096;
    int warmup = 2, steps = 6, profile = 1, recompute = 0, keep = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--config") && v) cfg_name = v, i++;
        else if (!strcmp(a, "--layout") && v) layout = v, i++;
        else if (!strcmp(a, "--batch") && v) B = atoll(v), i++;
        else if (!strcmp(a, "--seq-len") && v) T = atoll(v), i++;
        else if (!strcmp(a, "--warmup") && v) warmup = atoi(v), i++;
        else if (!strcmp(a, "--steps") && v) steps = atoi(v), i++;
        else if (!strcmp(a, "--json") && v) json = v, i++;
        else if (!strcmp(a, "--no-profile")) profile = 0;
        else if (!strcmp(a, "--recompute")) recompute = 1;
        else if (!strcmp(a, "--keep-chunk")) keep = 1;
        else {
            fprintf(stderr, "usage: train_step [--config NAME] [--layout L] [--batch B] [--seq-len T] [--warmup N] "
                            "[--steps N] [--recompute] [--keep-chunk] [--no-profile] [--json OUT]\n(unknown or incomplete option '%s')\n", a);
            return 2;
        }
    }
    if (B < 1 || T < 2 || steps < 1 || warmup < 1) {
        fprintf(stderr, "train_step: --batch >= 1, --seq-len >= 2, --steps >= 1, --warmup >= 1\n");
        return 2;
    }
    if (!gdn2_cuda_available()) {
        fprintf(stderr, "train_step: no CUDA device: %s\n", gdn2_last_error());
        return 1;
    }
    gdn2_model_cfg c;
    if (gdn2_model_config(cfg_name, &c) || (layout && gdn2_model_set_layout(&c, layout))) {
        fprintf(stderr, "train_step: %s\n", gdn2_last_error());
        return 2;
    }
    char dev[128] = "";
    int drv = 0, rt = 0;
    gdn2_cuda_device_info(dev, sizeof dev, &drv, &rt);
    const size_t base = used_bytes();
    gdn2_model *m = NULL;
    gdn2_adamw opt;
    memset(&opt, 0, sizeof opt);
    gdn2_adamw_cfg ac = gdn2_adamw_default();
    int st = gdn2_model_create(&c, &m);
    if (!st) gdn2_model_init(m, 1);
    if (!st) st = gdn2_adamw_init(&opt, &ac, m->n_flat);
    if (!st) st = gdn2_model_set_device(m, "cuda");
    if (!st) m->recompute = recompute, m->keep_chunk = keep;
    if (st) {
        fprintf(stderr, "train_step: %s\n", gdn2_last_error());
        return 1;
    }
    const int64_t BT = B * T;
    int32_t *tok = malloc((size_t)(BT + 1) * sizeof(int32_t)), *tgt = malloc((size_t)BT * sizeof(int32_t));
    uint64_t s = 12345;
    double *ms = calloc((size_t)steps, sizeof(double));
    float loss0 = NAN, loss = NAN;
    for (int it = 0; it < warmup + steps && !st; it++) {
        for (int64_t i = 0; i <= BT; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            tok[i] = (int32_t)((s >> 33) % (uint64_t)c.vocab_size);
        }
        for (int64_t i = 0; i < BT; i++) tgt[i] = tok[i + 1];
        double t0 = gdn2_now();
        st = train_step(m, &opt, tok, tgt, B, T, &loss);
        double t1 = gdn2_now();
        if (st) break;
        if (it == 0) {
            loss0 = loss;
            const double lnv = log((double)c.vocab_size);
            if (!isfinite(loss) || fabs(loss - lnv) > 1.0) {
                fprintf(stderr, "train_step: validation failed: first loss %g, expected ln(%lld) = %.3f +- 1\n", loss,
                        (long long)c.vocab_size, lnv);
                return 1;
            }
        }
        if (it == warmup - 1 && !isfinite(loss)) {
            fprintf(stderr, "train_step: validation failed: loss %g after the warm-up\n", loss);
            return 1;
        }
        if (it >= warmup) ms[it - warmup] = (t1 - t0) * 1e3;
        fprintf(stderr, "step %d: %.1f ms, loss %.7f\n", it, (t1 - t0) * 1e3, loss); /* every bit of a float near 10 */
    }
    if (st) {
        fprintf(stderr, "train_step: %s\n", gdn2_last_error());
        return 1;
    }
    size_t pool_high = 0;
    gdn2_cuda_pool_high(&pool_high);
    const double peak_gb = (double)(used_bytes() - base + pool_high) / 1e9;
    qsort(ms, (size_t)steps, sizeof(double), cmp_d);
    const double med = steps % 2 ? ms[steps / 2] : 0.5 * (ms[steps / 2 - 1] + ms[steps / 2]);
    const double tok_s = (double)BT / (med / 1e3);
    double rec = 0;
    const double fl = gdn2_model_flops_per_token(&m->cfg, T, &rec);
    const double mfu = fl * tok_s / 989e12;
    double split_total = 0, sync_between = 0, sync_fam[N_FAM] = {0}, sync_ops[N_OP] = {0};
    double tl_total = -1.0, tl_between = 0.0, tl_fam[N_FAM] = {0};
    if (profile) {
        profile_reset();
        profile_on(m->be);
        double t0 = gdn2_now();
        st = train_step(m, &opt, tok, tgt, B, T, &loss);
        split_total = (gdn2_now() - t0) * 1e3;
        profile_off(m->be);
        families(split_total, sync_fam);
        memcpy(sync_ops, g_op_ms, sizeof sync_ops);
        sync_between = split_total - profile_sum();
        /* the timeline step: the same ops back to back, times read at the end */
        profile_reset();
        profile_on(m->be);
        if (!st) {
            if (profile_timeline_begin()) {
                fprintf(stderr, "train_step: the timeline profile could not start (%s); its split is left out\n",
                        gdn2_last_error());
            } else {
                st = train_step(m, &opt, tok, tgt, B, T, &loss);
                tl_total = profile_timeline_end(&tl_between);
                if (tl_total < 0)
                    fprintf(stderr, "train_step: the timeline profile failed (%s); its split is left out\n",
                            g_tl_lost ? "ops without both marks: raise TL_MAX_CALLS" : gdn2_last_error());
            }
        }
        profile_off(m->be);
        if (tl_total >= 0) families(tl_total, tl_fam);
    }
    printf("%s %s B=%lld T=%lld: step %.1f ms (median of %d), %.0f tokens/s, peak %.2f GB, MFU %.1f%% "
           "(%.3g GFLOP/token; +%.3g nominal recurrence), loss %.4f -> %.4f; cuBLASLt %zu\n",
           cfg_name, m->cfg.layout, (long long)B, (long long)T, med, steps, tok_s, peak_gb, 100 * mfu, fl / 1e9,
           rec / 1e9, loss0, loss, gdn2_cuda_cublaslt_version());
    if (profile) {
        printf("  split of a profiled step (%.1f ms, each op synchronised): GEMM %.1f, GDN-2 %.1f, attention %.1f, "
               "rest %.1f ms\n",
               split_total, sync_fam[FAM_GEMM], sync_fam[FAM_GDN2], sync_fam[FAM_ATTN], sync_fam[FAM_REST]);
        printf("  per op (ms, calls):");
        for (int i = 0; i < N_OP; i++)
            if (g_op_n[i]) printf(" %s %.1f/%d", k_op[i], sync_ops[i], g_op_n[i]);
        printf("; between ops %.1f\n", sync_between);
    }
    if (tl_total >= 0) {
        printf("  timeline of a step (%.1f ms of device time, ops back to back): GEMM %.1f, GDN-2 %.1f, attention "
               "%.1f, rest %.1f ms (of which idle between ops %.1f)\n",
               tl_total, tl_fam[FAM_GEMM], tl_fam[FAM_GDN2], tl_fam[FAM_ATTN], tl_fam[FAM_REST], tl_between);
        printf("  per op on the timeline (ms, calls):");
        profile_print(stdout, 1);
        printf("\n");
    }
    if (json) { /* written to json.tmp, renamed when complete */
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%.4000s.tmp", json);
        FILE *f = fopen(tmp, "w");
        if (!f) {
            fprintf(stderr, "train_step: cannot write %s: %s\n", tmp, strerror(errno));
            return 1;
        }
        fprintf(f,
                "{\"config\": \"%s\", \"layout\": \"%s\", \"T\": %lld, \"micro_batch\": %lld, \"step_ms\": %.3f, "
                "\"tok_s\": %.1f, \"peak_gb\": %.3f, \"mfu\": %.4f, \"flops_per_token\": %.6g, "
                "\"flops_recurrence_nominal\": %.6g, \"params\": %zu, \"steps\": %d, \"warmup\": %d, "
                "\"loss_first\": %.5f, \"loss_last\": %.5f, \"device\": \"%s\", \"driver\": %d, \"runtime\": %d, \"cublaslt\": %zu, "
                "\"recompute\": %d, \"keep_chunk\": %d",
                cfg_name, m->cfg.layout, (long long)T, (long long)B, med, tok_s, peak_gb, mfu, fl, rec, m->n_params,
                steps, warmup, loss0, loss, dev, drv, rt, gdn2_cuda_cublaslt_version(), recompute, keep);
        if (profile) {
            fprintf(f, ", \"split_ms\": {\"profiled_step\": %.3f, \"gemm\": %.3f, \"gdn2\": %.3f, \"attention\": %.3f, "
                       "\"rest\": %.3f}",
                    split_total, sync_fam[FAM_GEMM], sync_fam[FAM_GDN2], sync_fam[FAM_ATTN], sync_fam[FAM_REST]);
            json_ops(f, "op_ms", sync_ops);
        }
        if (tl_total >= 0) {
            fprintf(f, ", \"timeline_ms\": {\"device_step\": %.3f, \"gemm\": %.3f, \"gdn2\": %.3f, \"attention\": %.3f, "
                       "\"rest\": %.3f, \"idle_between_ops\": %.3f}",
                    tl_total, tl_fam[FAM_GEMM], tl_fam[FAM_GDN2], tl_fam[FAM_ATTN], tl_fam[FAM_REST], tl_between);
            json_ops(f, "op_timeline_ms", g_op_ms);
        }
        fprintf(f, "}\n");
        if (fclose(f) || rename(tmp, json)) {
            fprintf(stderr, "train_step: cannot write %s: %s\n", json, strerror(errno));
            remove(tmp);
            return 1;
        }
    }
    gdn2_adamw_free(&opt);
    gdn2_model_free(m);
    free(tok), free(tgt), free(ms);
    return 0;
}
