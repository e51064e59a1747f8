/* GPU decode benchmark of the language model: the generation step (gdn2_model_step_slots) of a
 * named config with random weights on the CUDA backend, tokens/s and step time against the batch
 * (sequences decoded at once, one state slot each) and the context (tokens each sequence already
 * holds), next to a memory-bandwidth floor.
 *
 *   build/bench/decode_model [--configs gdn2_1.3B,swa_gdn2_1.3B] [--batches 1,16,64,256]
 *                            [--contexts 1024,8192,32768,131072] [--steps 20] [--warmup 3]
 *                            [--prefill 4096,32768,131072 | none] [--prefill-chunk 8192]
 *                            [--no-validate] [--no-profile] [--json OUT.json | --out-dir DIR]
 *
 * Output: a table on stdout and JSON {"device", ..., "decode": [{config, batch, context, tok_s,
 * step_us, floor_us, ...}, ...], "prefill": [{config, tokens, chunk, ms, tok_s}, ...]} written (to a
 * temporary name, then renamed) to --json OUT, or by default to DIR/<gpu>-decode.json (--out-dir
 * DIR, default bench/results) with <gpu> from the device's name: "NVIDIA H100 80GB HBM3" ->
 * h100-decode.json, "NVIDIA H200" -> h200-decode.json, so that a run is never filed under another
 * card.
 *
 * Context. A recurrent (GDN-2) layer's state is the same size at every position, so the context
 * changes nothing there; an SWA layer attends to the last min(context, window) positions of its
 * ring. So a context is reached by setting every slot's position (slot_pos) to it, not by a prefill
 * of that many tokens: the step then runs at that position (RoPE angle, ring row, the number of
 * keys attended) and reads exactly what a step after a real prefill reads; the values in the ring
 * (zeros, then what the warm-up steps wrote) do not change the work. Full-attention layers (not in
 * these configs) would need a cache of the whole context and are refused beyond block_size.
 *
 * One step = step_slots over `batch` slots: the tables (tokens, slots, positions) uploaded, the
 * model's layers, the fp32 logits [batch, padded_vocab] downloaded to the host (at batch 256 of the
 * 1.3B that is 33 MB over PCIe, part of step_us). A third timing, step_us_sampled / tok_s_sampled, is
 * the serving engine's step (gdn2_model_step_slots_sample, from the graph): temperature 0.8 and top-p
 * 0.95 drawn on the device and only the batch's tokens downloaded. Timed: the
 * median wall time of --steps steps after --warmup (each ends synchronised: the logits are on the
 * host). Each point is timed twice on the same state and position: op by op (m->cuda_graph = 0:
 * step_us_eager, tok_s_eager) and replayed from the step's CUDA graph (m->cuda_graph = 1, the
 * default: step_us, tok_s; at least 2 warm-up steps, the first runs eagerly and the second records
 * the graph, docs/SERVING.md). A row's "cuda_graph" says whether the graph was really replayed (a
 * failed recording falls back to eager launches: then step_us is eager too, and says so).
 *
 * Prefill (--prefill, default 4K, 32K, 128K tokens; "prefill" rows: tokens, chunk, ms, tok_s): P random
 * tokens into a fresh slot with gdn2_model_prefill_slot in pieces of --prefill-chunk (8192), each
 * continuing from the slot (recurrent states carried, SWA layers against their ring).
 *
 * Floor. floor_us = floor_bytes / copy bandwidth, where floor_bytes is what a step must move in
 * device memory at the least: every weight once (bf16 matmul views; fp32 norm, conv and gate
 * parameters; batch rows of the fp32 embedding), each recurrent layer's state and conv caches read
 * and written back (fp32), each SWA layer's visible ring rows read (keys and values, fp32) and one
 * row written; and the copy bandwidth is cudaMemcpy device-to-device measured here (bytes read +
 * bytes written per second, best of 10 copies of 1 GiB).
 *
 * Profile (--no-profile skips it): at the first context of each (config, batch), one more step op by
 * op with every backend op bracketed by CUDA events and synchronised (bench/op_profile.h): the row's
 * "profile_us" {step, ops_sum, between, ops: {name: [us, calls]}} says where a step goes — the
 * kernels (ops_sum) or what runs between them (launches, host work). A profiled step is slower than
 * a timed one (each op waits for the previous): a breakdown, not a timing.
 *
 * Validation before timing (exit 1, nothing timed; --no-validate skips it): tiny and hybrid_tiny
 * (a 32-token SWA window: the ring wraps) prefill 4 slots and take 8 steps over shuffled slot
 * subsets on the CPU and on the GPU from the same weights, and each config of the run takes a short
 * prefill + 2 steps on both: every logit row within relative RMSE 5e-2 of the CPU's (bf16-mixed
 * weights and activations against fp32). The GPU script runs twice, op by op and from CUDA graphs:
 * the two bit-identical (a recording that fails is reported on stderr and the rows say
 * "cuda_graph": false). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2.h"
#include "gdn2_cuda.h"
#include "gdn2_model.h"
#include "util/internal.h"
#include "op_profile.h"

#define MAX_LIST 16

static int parse_list(const char *s, int64_t *out, int cap) {
    int n = 0;
    while (s && *s && n < cap) {
        char *e;
        long long v = strtoll(s, &e, 10);
        if (e == s || v < 1) return -1;
        out[n++] = v;
        s = *e == ',' ? e + 1 : e;
        if (*e && *e != ',') return -1;
    }
    return n;
}

static double rel_rmse(const float *a, const float *ref, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) e += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), r += (double)ref[i] * ref[i];
    return sqrt(e / (r > 0 ? r : 1));
}

static uint64_t g_rng = 12345;
static int32_t rand_tok(int64_t V) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (int32_t)((g_rng >> 33) % (uint64_t)V);
}

/* the validation script on model m (its current device): prefill slots 0..n-1 with P tokens each,
 * then `steps` steps over the slots in a rotating shuffled order (half of them each step); every
 * logit row appended to lg. Deterministic in seed. */
static int script(gdn2_model *m, int64_t n, int64_t P, int steps, uint64_t seed, float *lg, int64_t *rows) {
    const int64_t Vp = m->cfg.padded_vocab, V = m->cfg.vocab_size;
    gdn2_model_state *s = NULL;
    int st = gdn2_model_state_create(m, n, 256, &s);
    int32_t *tok = malloc((size_t)(P > n ? P : n) * sizeof(int32_t)), *sl = malloc((size_t)n * sizeof(int32_t));
    uint64_t r = seed;
    *rows = 0;
    for (int64_t k = 0; k < n && !st; k++) {
        for (int64_t t = 0; t < P; t++) r = r * 6364136223846793005ULL + 1, tok[t] = (int32_t)((r >> 33) % (uint64_t)V);
        st = gdn2_model_prefill_slot(m, s, k, tok, P, lg + (*rows)++ * Vp);
    }
    for (int it = 0; it < steps && !st; it++) {
        const int64_t cnt = (n + 1) / 2; /* the first half of a shuffled order of the slots */
        for (int64_t i = 0; i < n; i++) sl[i] = (int32_t)i;
        for (int64_t i = n - 1; i > 0; i--) {
            r = r * 6364136223846793005ULL + 1;
            const int64_t j = (int64_t)((r >> 33) % (uint64_t)(i + 1));
            const int32_t t = sl[i];
            sl[i] = sl[j], sl[j] = t;
        }
        for (int64_t i = 0; i < cnt; i++) r = r * 6364136223846793005ULL + 1, tok[i] = (int32_t)((r >> 33) % (uint64_t)V);
        st = gdn2_model_step_slots(m, s, cnt, sl, NULL, tok, lg + *rows * Vp);
        *rows += cnt;
    }
    gdn2_model_state_free(s);
    free(tok), free(sl);
    return st;
}

/* CPU first, then the same model moved to the GPU: every row within relative RMSE 5e-2. The model
 * is left on the GPU. */
static int validate(gdn2_model *m, const char *what, int64_t n, int64_t P, int steps) {
    const int64_t Vp = m->cfg.padded_vocab, cap = n + (int64_t)steps * n;
    float *a = malloc((size_t)(cap * Vp) * sizeof(float)), *b = malloc((size_t)(cap * Vp) * sizeof(float));
    int64_t ra = 0, rb = 0;
    double t0 = gdn2_now();
    int st = a && b ? script(m, n, P, steps, 99, b, &rb) : GDN2_ERR_NOMEM;
    if (!st) st = gdn2_model_set_device(m, "cuda");
    /* on the GPU op by op, then from CUDA graphs: the same bits */
    float *g = st ? NULL : malloc((size_t)(cap * Vp) * sizeof(float));
    int64_t rg = 0;
    m->cuda_graph = 0;
    if (!st) st = script(m, n, P, steps, 99, a, &ra);
    m->cuda_graph = 1;
    if (!st) st = g ? script(m, n, P, steps, 99, g, &rg) : GDN2_ERR_NOMEM;
    const int graph_same = !st && rg == ra && !memcmp(a, g, (size_t)(ra * Vp) * sizeof(float)), graph_on = m->cuda_graph;
    free(g);
    double worst = 0;
    for (int64_t i = 0; !st && i < ra; i++) {
        double e = rel_rmse(a + i * Vp, b + i * Vp, (size_t)m->cfg.vocab_size);
        if (e > worst) worst = e;
    }
    free(a), free(b);
    if (st) {
        fprintf(stderr, "decode_model: validation %s: %s\n", what, gdn2_last_error());
        return 1;
    }
    const int ok = ra == rb && worst <= 5e-2 && graph_same; /* a failed recording is said, and timed as such */
    fprintf(stderr, "validation %s: %lld slots, prefill %lld + %d steps: GPU vs CPU logits, worst row relative RMSE "
                    "%.2e (<= 5e-2); CUDA graph replay == op by op bit for bit: %s%s: %s (%.1f s)\n",
            what, (long long)n, (long long)P, steps, worst, graph_same ? "yes" : "NO",
            graph_on ? "" : " (the recording failed: graphs off)", ok ? "ok" : "FAILED", gdn2_now() - t0);
    return ok ? 0 : 1;
}

static int validate_named(const char *name) {
    gdn2_model_cfg c;
    gdn2_model *m = NULL;
    int st = gdn2_model_config(name, &c);
    if (!st) st = gdn2_model_create(&c, &m);
    if (st) {
        fprintf(stderr, "decode_model: %s\n", gdn2_last_error());
        return 1;
    }
    gdn2_model_init(m, 3);
    m->n_threads = 0;
    int rc = validate(m, name, 4, 40, 8);
    gdn2_model_free(m);
    return rc;
}

/* device copy bandwidth: bytes read + written per second, best of 10 copies of 1 GiB */
static double copy_bandwidth(void) {
    const size_t n = (size_t)1 << 30;
    void *a = gdn2_cuda_malloc(n), *b = gdn2_cuda_malloc(n);
    double best = 0;
    if (a && b) {
        gdn2_cuda_memset(a, 1, n);
        gdn2_cuda_memcpy(b, a, n, GDN2_CUDA_D2D);
        gdn2_cuda_sync();
        for (int i = 0; i < 10; i++) {
            double t0 = gdn2_now();
            gdn2_cuda_memcpy(b, a, n, GDN2_CUDA_D2D);
            gdn2_cuda_sync();
            double bw = 2.0 * (double)n / (gdn2_now() - t0);
            if (bw > best) best = bw;
        }
    }
    gdn2_cuda_free(a), gdn2_cuda_free(b);
    return best;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* bytes a step of `batch` sequences at position ctx must move at the least (see the header) */
static double floor_bytes(const gdn2_model *m, const gdn2_model_state *s, int64_t batch, int64_t ctx) {
    const gdn2_model_cfg *c = &m->cfg;
    double w = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        if (!strcmp(p->name, "transformer.wte.weight")) w += 4.0 * (double)batch * (double)c->n_embd;
        else if (p->ndim == 2 && ends_with(p->name, ".weight")) w += 2.0 * (double)p->numel; /* matmul (bf16) */
        else w += 4.0 * (double)p->numel;                                                 /* fp32 parameters */
    }
    double st = 0;
    for (int l = 0; l < c->n_layer; l++) {
        if (c->kind[l] == GDN2_LAYER_SWA || c->kind[l] == GDN2_LAYER_ATTN) {
            const int64_t keys = c->kind[l] == GDN2_LAYER_SWA && ctx + 1 > c->local_window ? c->local_window : ctx + 1;
            st += 4.0 * 2.0 * (double)c->n_query_groups * (double)c->head_size * (double)(keys + 1);
        } else {
            st += 2.0 * 4.0 * (double)s->layer_size[l];
        }
    }
    return w + st * (double)batch;
}

static int cmp_d(const void *a, const void *b);

/* the card's short name from the device's: the first word (split at ' ', '-', '_') with a digit,
 * lower case, letters and digits only ("NVIDIA H100 80GB HBM3" -> "h100", "NVIDIA H200" -> "h200",
 * "NVIDIA A100-SXM4-80GB" -> "a100");
 * "gpu" when there is none */
static void device_tag(const char *name, char *out, size_t cap) {
    snprintf(out, cap, "gpu");
    const char *p = name;
    while (*p) {
        while (*p == ' ' || *p == '-' || *p == '_') p++;
        const char *e = p;
        int digit = 0;
        while (*e && *e != ' ' && *e != '-' && *e != '_') digit |= *e >= '0' && *e <= '9', e++;
        if (digit && e > p) {
            size_t k = 0;
            for (const char *q = p; q < e && k + 1 < cap; q++) {
                const char ch = *q;
                if (ch >= 'A' && ch <= 'Z') out[k++] = (char)(ch - 'A' + 'a');
                else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) out[k++] = ch;
            }
            if (k) {
                out[k] = 0;
                return;
            }
        }
        p = e;
    }
}

/* median and minimum of n step times (sorts us) */
static double median_us(double *us, int n) {
    qsort(us, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? us[n / 2] : 0.5 * (us[n / 2 - 1] + us[n / 2]);
}

/* warmup + steps steps of B sequences from position C on every slot; the times of the last `steps`
 * in us */
static int time_steps(gdn2_model *m, gdn2_model_state *s, int64_t B, int64_t C, int warmup, int steps, int32_t *tok,
                      float *lg, double *us, int sampled) {
    int st = GDN2_OK;
    const int64_t V = m->cfg.vocab_size;
    /* sampled: the serving engine's step (gdn2_model_step_slots_sample): temperature 0.8, top-p 0.95
     * drawn on the device, only the tokens back; each step feeds the tokens it drew */
    gdn2_sampling *sp = sampled ? malloc((size_t)B * sizeof *sp) : NULL;
    uint64_t *rng = sampled ? malloc((size_t)B * sizeof *rng) : NULL;
    if (sampled && (!sp || !rng)) st = GDN2_ERR_NOMEM;
    for (int64_t i = 0; sampled && !st && i < B; i++)
        sp[i] = (gdn2_sampling){0.8f, 0, 0.95f, (uint64_t)i}, rng[i] = gdn2_sampler_seed((uint64_t)i);
    for (int64_t i = 0; i < B; i++) s->slot_pos[i] = C; /* the context: see the header */
    for (int64_t i = 0; i < B; i++) tok[i] = rand_tok(V);
    int in_range = 1;
    for (int it = 0; it < warmup + steps && !st; it++) {
        if (!sampled)
            for (int64_t i = 0; i < B; i++) tok[i] = rand_tok(V);
        double a = gdn2_now();
        st = sampled ? gdn2_model_step_slots_sample(m, s, B, NULL, NULL, tok, sp, rng, tok, NULL)
                     : gdn2_model_step_slots(m, s, B, NULL, NULL, tok, lg);
        double b = gdn2_now();
        if (it >= warmup) us[it - warmup] = (b - a) * 1e6;
        for (int64_t i = 0; sampled && i < B; i++) in_range &= tok[i] >= 0 && tok[i] < V;
    }
    free(sp), free(rng);
    int finite = !st;
    for (int64_t i = 0; !sampled && finite && i < B * m->cfg.padded_vocab; i += 97) finite = isfinite(lg[i]);
    if (!st && !finite) st = gdn2_error(GDN2_ERR_DEVICE, "non-finite logits");
    if (!st && !in_range) st = gdn2_error(GDN2_ERR_DEVICE, "a drawn token outside [0, %lld)", (long long)V);
    return st;
}

/* Prefill of P random tokens into a fresh slot: one gdn2_model_prefill_slot with m->prefill_chunk =
 * chunk (the prompt in pieces of `chunk`, each continuing from the slot: recurrent states carried,
 * SWA layers attending to the ring's last window - 1 positions). One untimed piece first (the
 * activations are allocated), then the timed run from a reset slot, ending with the last logits on
 * the host. NULL and *ms, or the reason the point failed (*rc set unless out of memory). */
static const char *prefill_time(gdn2_model *m, int64_t P, int chunk, double *ms, int *rc) {
    static char why[256];
    gdn2_model_state *s = NULL;
    int32_t *tok = malloc((size_t)P * sizeof(int32_t));
    float *lg = malloc((size_t)m->cfg.padded_vocab * sizeof(float));
    int st = tok && lg ? gdn2_model_state_create(m, 1, P + 1, &s) : GDN2_ERR_NOMEM;
    for (int64_t i = 0; tok && i < P; i++) tok[i] = rand_tok(m->cfg.vocab_size);
    const int64_t first = P < chunk ? P : chunk;
    const int64_t chunk0 = m->prefill_chunk;
    m->prefill_chunk = chunk;
    if (!st) st = gdn2_model_prefill_slot(m, s, 0, tok, first, lg);
    if (!st) st = gdn2_model_state_reset_slot(s, 0);
    double t0 = gdn2_now();
    if (!st) st = gdn2_model_prefill_slot(m, s, 0, tok, P, lg);
    *ms = (gdn2_now() - t0) * 1e3;
    m->prefill_chunk = chunk0;
    int finite = !st;
    for (int64_t i = 0; finite && i < m->cfg.padded_vocab; i += 97) finite = isfinite(lg[i]);
    if (!st && !finite) st = gdn2_error(GDN2_ERR_DEVICE, "non-finite logits after the prefill");
    gdn2_model_state_free(s);
    free(tok), free(lg);
    if (st) {
        snprintf(why, sizeof why, "failed: %.200s", gdn2_last_error());
        for (char *c = why; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 32) *c = '\''; /* a JSON string */
        fprintf(stderr, "decode_model: prefill of %lld tokens %s\n", (long long)P, why);
        if (st != GDN2_ERR_NOMEM) *rc = 1;
        gdn2_clear_error();
        return why;
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *configs = "gdn2_1.3B,swa_gdn2_1.3B", *json = NULL, *out_dir = "bench/results";
    const char *batches_s = "1,16,64,256", *contexts_s = "1024,8192,32768,131072";
    const char *prefill_s = "4096,32768,131072";
    int steps = 20, warmup = 3, do_validate = 1, prefill_chunk = 8192, profile = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--configs") && v) configs = v, i++;
        else if (!strcmp(a, "--batches") && v) batches_s = v, i++;
        else if (!strcmp(a, "--contexts") && v) contexts_s = v, i++;
        else if (!strcmp(a, "--steps") && v) steps = atoi(v), i++;
        else if (!strcmp(a, "--warmup") && v) warmup = atoi(v), i++;
        else if (!strcmp(a, "--json") && v) json = v, i++;
        else if (!strcmp(a, "--out-dir") && v) out_dir = v, i++;
        else if (!strcmp(a, "--prefill") && v) prefill_s = v, i++;
        else if (!strcmp(a, "--prefill-chunk") && v) prefill_chunk = atoi(v), i++;
        else if (!strcmp(a, "--no-validate")) do_validate = 0;
        else if (!strcmp(a, "--no-profile")) profile = 0;
        else {
            fprintf(stderr,
                    "usage: decode_model [--configs A,B] [--batches 1,16,64,256] [--contexts 1024,8192,32768,131072] "
                    "[--steps N] [--warmup N] [--prefill 4096,32768,131072 | --prefill none] [--prefill-chunk 8192] "
                    "[--no-validate] [--no-profile] [--json OUT | --out-dir DIR]\n(unknown or incomplete option "
                    "'%s')\n",
                    a);
            return 2;
        }
    }
    int64_t batches[MAX_LIST], contexts[MAX_LIST], prefills[MAX_LIST];
    const int nb = parse_list(batches_s, batches, MAX_LIST), nc = parse_list(contexts_s, contexts, MAX_LIST);
    const int np = strcmp(prefill_s, "none") ? parse_list(prefill_s, prefills, MAX_LIST) : 0;
    if (nb < 1 || nc < 1 || np < 0 || (np == 0 && strcmp(prefill_s, "none")) || prefill_chunk < 64 || steps < 1 ||
        warmup < 0) {
        fprintf(stderr, "decode_model: --batches, --contexts and --prefill are comma lists of positive integers (at most "
                        "%d; --prefill none), --prefill-chunk >= 64, --steps >= 1, --warmup >= 0\n", MAX_LIST);
        return 2;
    }
    char names[MAX_LIST][64];
    int ncfg = 0;
    for (const char *p = configs; *p && ncfg < MAX_LIST;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        snprintf(names[ncfg++], sizeof names[0], "%.*s", (int)(len < 63 ? len : 63), p);
        p = e ? e + 1 : p + len;
    }
    if (!gdn2_cuda_available()) {
        fprintf(stderr, "decode_model: no CUDA device: %s\n", gdn2_last_error());
        return 1;
    }
    char dev[128] = "";
    int drv = 0, rt = 0;
    gdn2_cuda_device_info(dev, sizeof dev, &drv, &rt);
    char tag[64], json_default[1100];
    device_tag(dev, tag, sizeof tag);
    snprintf(json_default, sizeof json_default, "%.1000s/%s-decode.json", out_dir, tag);
    if (!json) json = json_default;
    fprintf(stderr, "%s: results to %s\n", dev, json);
    if (do_validate && (validate_named("tiny") || validate_named("hybrid_tiny"))) return 1;
    const double bw = copy_bandwidth();
    fprintf(stderr, "%s: device copy bandwidth %.0f GB/s (read + write)\n", dev, bw / 1e9);
    /* written to json.tmp, renamed when complete */
    char json_tmp[1200];
    snprintf(json_tmp, sizeof json_tmp, "%.1100s.tmp", json);
    FILE *f = fopen(json_tmp, "w");
    if (!f) {
        fprintf(stderr, "decode_model: cannot write %s\n", json_tmp);
        return 1;
    }
    /* the prefill rows, written after the decode array */
    size_t pcap = 4096, plen = 0;
    char *prow = malloc(pcap);
    if (!prow) return 1;
    prow[0] = 0;
    if (f)
        fprintf(f, "{\"device\": \"%s\", \"driver\": %d, \"runtime\": %d, \"cublaslt\": %zu, \"copy_bw_gbs\": %.1f, "
                   "\"steps\": %d, \"warmup\": %d, \"cuda_graph\": true, \"validated\": %s, \"decode\": [",
                dev, drv, rt, gdn2_cuda_cublaslt_version(), bw / 1e9, steps, warmup, do_validate ? "true" : "false");
    int first = 1, rc = 0;
    for (int ci = 0; ci < ncfg && !rc; ci++) {
        gdn2_model_cfg c;
        gdn2_model *m = NULL;
        int st = gdn2_model_config(names[ci], &c);
        if (!st) st = gdn2_model_create(&c, &m);
        if (st) {
            fprintf(stderr, "decode_model: %s\n", gdn2_last_error());
            rc = 2;
            break;
        }
        double t0 = gdn2_now();
        gdn2_model_init(m, 1);
        m->n_threads = 0;
        fprintf(stderr, "%s (%s, %zu parameters): random init %.1f s\n", names[ci], c.layout, m->n_params,
                gdn2_now() - t0);
        /* the model itself: a short CPU run, then the GPU's (the model moves there) */
        if (do_validate) rc = validate(m, names[ci], 1, 8, 2);
        else if ((st = gdn2_model_set_device(m, "cuda"))) rc = 1, fprintf(stderr, "decode_model: %s\n", gdn2_last_error());
        int has_full = 0;
        for (int l = 0; l < c.n_layer; l++) has_full |= c.kind[l] == GDN2_LAYER_ATTN;
        const int64_t Vp = c.padded_vocab;
        for (int bi = 0; bi < nb && !rc; bi++) {
            const int64_t B = batches[bi];
            /* the state: refused up front when it cannot fit the free device memory */
            size_t fr = 0, tot = 0;
            gdn2_cuda_mem_info(&fr, &tot);
            const double need = 4.0 * (double)gdn2_model_state_floats(&c, c.block_size) * (double)B;
            gdn2_model_state *s = NULL;
            if (need > 0.9 * (double)fr || (st = gdn2_model_state_create(m, B, c.block_size, &s))) {
                if (st) gdn2_clear_error();
                fprintf(stderr, "%s batch %lld: skipped, the state needs %.1f GB, %.1f GB free\n", names[ci],
                        (long long)B, need / 1e9, (double)fr / 1e9);
                for (int xi = 0; xi < nc && f; xi++) {
                    fprintf(f, "%s\n  {\"config\": \"%s\", \"batch\": %lld, \"context\": %lld, \"skipped\": "
                               "\"the state needs %.1f GB, %.1f GB free\"}",
                            first ? "" : ",", names[ci], (long long)B, (long long)contexts[xi], need / 1e9,
                            (double)fr / 1e9);
                    first = 0;
                }
                st = 0;
                continue;
            }
            int32_t *tok = malloc((size_t)B * sizeof(int32_t));
            float *lg = malloc((size_t)(B * Vp) * sizeof(float));
            double *us = malloc((size_t)steps * sizeof(double));
            for (int xi = 0; xi < nc && !rc; xi++) {
                const int64_t C = contexts[xi];
                if (has_full && C + (warmup > 2 ? warmup : 2) + steps > c.block_size) {
                    fprintf(stderr, "%s: context %lld beyond block_size %lld (full attention): skipped\n", names[ci],
                            (long long)C, (long long)c.block_size);
                    continue;
                }
                /* op by op, then from the step's CUDA graph (>= 2 warm-up steps: eager, then recorded) */
                m->cuda_graph = 0;
                st = time_steps(m, s, B, C, warmup, steps, tok, lg, us, 0);
                const double med_e = st ? 0 : median_us(us, steps);
                m->cuda_graph = 1;
                /* the engine's step: the graph, the draws on the device, n tokens back (no logits) */
                if (!st) st = time_steps(m, s, B, C, warmup > 2 ? warmup : 2, steps, tok, lg, us, 1);
                const double med_s = st ? 0 : median_us(us, steps);
                if (!st) st = time_steps(m, s, B, C, warmup > 2 ? warmup : 2, steps, tok, lg, us, 0);
                if (st) {
                    fprintf(stderr, "decode_model: %s batch %lld context %lld: %s\n", names[ci], (long long)B,
                            (long long)C, gdn2_last_error());
                    rc = 1;
                    break;
                }
                const int graphed = m->cuda_graph && gdn2_model_state_cuda_graphs(s) > 0;
                const double med = median_us(us, steps);
                /* the profiled step (op by op, each op synchronised), at the first context */
                double prof_us = 0;
                if (profile && xi == 0) {
                    m->cuda_graph = 0;
                    profile_reset();
                    profile_on(m->be);
                    for (int64_t i = 0; i < B; i++) tok[i] = rand_tok(m->cfg.vocab_size);
                    const double a = gdn2_now();
                    st = gdn2_model_step_slots(m, s, B, NULL, NULL, tok, lg);
                    prof_us = (gdn2_now() - a) * 1e6;
                    profile_off(m->be);
                    m->cuda_graph = 1;
                    if (st) {
                        fprintf(stderr, "decode_model: %s batch %lld: the profiled step: %s\n", names[ci], (long long)B,
                                gdn2_last_error());
                        rc = 1;
                        break;
                    }
                }
                const double fb = floor_bytes(m, s, B, C), fl = fb / bw * 1e6;
                printf("%-14s batch %4lld context %7lld: step %9.1f us (%s), %10.1f tok/s, %.0f%% of the floor %.1f us "
                       "(%.2f GB); eager %9.1f us, %.0f%%; with device sampling, no logits %9.1f us\n",
                       names[ci], (long long)B, (long long)C, med, graphed ? "graph" : "graph FAILED, eager",
                       (double)B / (med * 1e-6), 100.0 * fl / med, fl, fb / 1e9, med_e, 100.0 * fl / med_e, med_s);
                if (prof_us > 0) {
                    printf("  profiled step (op by op, each op synchronised): %.1f us, ops %.1f us, between ops %.1f us; "
                           "per op (us, calls):", prof_us, profile_sum() * 1e3, prof_us - profile_sum() * 1e3);
                    profile_print(stdout, 1e3);
                    printf("\n");
                }
                fflush(stdout);
                if (f) {
                    fprintf(f, "%s\n  {\"config\": \"%s\", \"batch\": %lld, \"context\": %lld, \"tok_s\": %.1f, "
                               "\"step_us\": %.1f, \"floor_us\": %.1f, \"cuda_graph\": %s, \"floor_pct\": %.1f, "
                               "\"tok_s_eager\": %.1f, \"step_us_eager\": %.1f, \"floor_pct_eager\": %.1f, "
                               "\"floor_bytes\": %.0f, \"step_us_min\": %.1f, \"state_gb\": %.3f, "
                               "\"step_us_sampled\": %.1f, \"tok_s_sampled\": %.1f",
                            first ? "" : ",", names[ci], (long long)B, (long long)C, (double)B / (med * 1e-6), med, fl,
                            graphed ? "true" : "false", 100.0 * fl / med, (double)B / (med_e * 1e-6), med_e,
                            100.0 * fl / med_e, fb, us[0], need / 1e9, med_s, (double)B / (med_s * 1e-6));
                    if (prof_us > 0) {
                        fprintf(f, ", \"profile_us\": {\"step\": %.1f, \"ops_sum\": %.1f, \"between\": %.1f, \"ops\": {",
                                prof_us, profile_sum() * 1e3, prof_us - profile_sum() * 1e3);
                        for (int i = 0, fo = 1; i < N_OP; i++)
                            if (g_op_n[i])
                                fprintf(f, "%s\"%s\": [%.1f, %d]", fo ? "" : ", ", k_op[i], g_op_ms[i] * 1e3, g_op_n[i]), fo = 0;
                        fprintf(f, "}}");
                    }
                    fprintf(f, "}");
                    first = 0;
                }
            }
            free(tok), free(lg), free(us);
            gdn2_model_state_free(s);
        }
        for (int pi = 0; pi < np && !rc; pi++) {
            char row[512];
            double ms = 0;
            const char *why = prefill_time(m, prefills[pi], prefill_chunk, &ms, &rc);
            if (why)
                snprintf(row, sizeof row, "%s\n  {\"config\": \"%s\", \"tokens\": %lld, \"chunk\": %d, \"skipped\": \"%s\"}",
                         plen ? "," : "", names[ci], (long long)prefills[pi], prefill_chunk, why);
            else
                snprintf(row, sizeof row, "%s\n  {\"config\": \"%s\", \"tokens\": %lld, \"chunk\": %d, \"ms\": %.1f, "
                         "\"tok_s\": %.1f}", plen ? "," : "", names[ci], (long long)prefills[pi], prefill_chunk, ms,
                         (double)prefills[pi] / (ms * 1e-3));
            printf("%-14s prefill %7lld tokens (chunks of %d): %s", names[ci], (long long)prefills[pi], prefill_chunk,
                   why ? why : "");
            if (!why) printf("%.1f ms, %.0f tok/s", ms, (double)prefills[pi] / (ms * 1e-3));
            printf("\n");
            fflush(stdout);
            const size_t rl = strlen(row);
            if (plen + rl + 1 > pcap) {
                char *np2 = realloc(prow, (pcap = 2 * (plen + rl + 1)));
                if (!np2) {
                    rc = 1;
                    break;
                }
                prow = np2;
            }
            memcpy(prow + plen, row, rl + 1);
            plen += rl;
        }
        gdn2_model_free(m);
    }
    fprintf(f, "\n], \"prefill\": [%s\n]}\n", prow);
    free(prow);
    if (fclose(f) || (rc == 0 && rename(json_tmp, json))) {
        fprintf(stderr, "decode_model: cannot write %s\n", json);
        return 1;
    }
    if (rc) fprintf(stderr, "decode_model: failed; the partial results are in %s\n", json_tmp);
    return rc;
}
