/* Model tests: official parameter counts, config parsing, attention (full / SWA + RoPE / GQA) against
 * a float64 reference, finite-difference gradients of attention, SwiGLU, RMSNorm, embedding + CE and
 * the whole tiny model, generation (prefill + step == full forward), and conformance with the official
 * lit_gpt model on tests/fixtures/official/model.safetensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "util/rng.h"
#include "cli_run.h"
#include "gdn2.h"
#include "gdn2_model.h"
#include "backend/nn.h"
#include "model/model_internal.h"

static gdn2_backend g_cpu; /* the CPU backend the layer-level tests run on (main initialises it) */

static unsigned long long g_seed = 1234;
static void randn(float *x, size_t n, double s) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(s * test_normal(&g_seed));
}
static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static int layer_available(void) {
    gdn2_layer_cfg c = {64, 2, 2, 32, 32, 4, 0, 1e-5f, GDN2_MIXER_GDN2, GDN2_KERNEL_CHUNK, 0};
    return gdn2_layer_check(&c) == GDN2_OK && gdn2_layer_param_count(&c) > 0;
}

/* ---- parameter counts ---------------------------------------------------------------------- */
static void test_counts(void) {
    struct { const char *name; size_t want; } k[] = {
        {"gdn2_1.3B", 1450096416ULL}, {"swa_gdn2_1.3B", 1447772688ULL}, {"gdn2_12h_100M", 150750864ULL},
        {"gdn2_12h_305M", 304809920ULL}, {"swa_gdn2_100M", 127836312ULL}};
    if (!layer_available()) {
        CHECK(0, "official parameter counts: the GDN-2 layer is unavailable (gdn2_layer_param_count returns 0)");
        return;
    }
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        gdn2_model_cfg c;
        int st = gdn2_model_config(k[i].name, &c);
        size_t n = st ? 0 : gdn2_model_param_count(&c);
        CHECK(n == k[i].want, "param count %s = %zu (GDN2.md §5.2: %zu)", k[i].name, n, k[i].want);
    }
}

/* ---- the flat block's alignment ------------------------------------------------------------ */
/* Every tensor of every named config's table (and of each layout's kinds, and of the layer's own
 * slots for every mixer) starts at a multiple of GDN2_PARAM_ALIGN floats (the bf16 view at 128-byte
 * boundaries), no two overlap, the layer's block sits at layer_off with its slots at their own
 * offsets, the gaps are zeros after init, and the parameter counts are the sums of numel. */
static int table_aligned(const gdn2_model_cfg *c, const char *what) {
    int n = gdn2_model_params(c, NULL, 0), bad = 0, overlap = 0;
    gdn2_model_param *p = calloc((size_t)n, sizeof *p);
    if (!p) return 0;
    gdn2_model_params(c, p, n);
    size_t sum = 0, end = 0;
    for (int i = 0; i < n; i++) {
        if (p[i].offset % GDN2_PARAM_ALIGN) {
            if (bad++ < 3) printf("  %s: %s at offset %zu (bf16 byte %zu)\n", what, p[i].name, p[i].offset, p[i].offset * 2);
        }
        overlap += p[i].offset < end;
        end = p[i].offset + p[i].numel;
        sum += p[i].numel;
    }
    free(p);
    const size_t cnt = gdn2_model_param_count(c), flat = gdn2_model_flat_size(c);
    CHECK(!bad && !overlap && cnt == sum && flat == end && flat >= cnt && flat - cnt < (size_t)n * GDN2_PARAM_ALIGN,
          "%s: %d tensors at multiples of %d floats (%d not), in order without overlap (%d); %zu parameters, "
          "flat block %zu floats", what, n, GDN2_PARAM_ALIGN, bad, overlap, cnt, flat);
    return !bad && !overlap;
}

static void test_alignment(void) {
    if (!layer_available()) {
        CHECK(0, "flat-block alignment: the GDN-2 layer is unavailable");
        return;
    }
    const char *names[] = {"gdn2_1.3B", "swa_gdn2_1.3B", "gdn2_12h_100M", "gdn2_12h_305M", "swa_gdn2_100M",
                           "tiny", "small", "hybrid_tiny", "char_10M"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        gdn2_model_cfg c;
        CHECK(gdn2_model_config(names[i], &c) == GDN2_OK, "config %s", names[i]);
        table_aligned(&c, names[i]);
        CHECK(strstr(gdn2_model_config_names(), names[i]) != NULL, "%s is among the named configs", names[i]);
    }
    /* every layer kind, with sizes that leave every 1-D tensor short of a multiple of 64 */
    const char *layouts[] = {"gdn2,kda,gdn,swa,attn", "kda", "gdn"};
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
        gdn2_model_cfg c;
        gdn2_model_config("tiny", &c);
        c.n_layer = 5, c.gdn_heads = c.gdn_v_heads = 3, c.gdn_head_dim = 20;
        if (gdn2_model_set_layout(&c, layouts[i]) || gdn2_model_check(&c)) {
            CHECK(0, "layout %s: %s", layouts[i], gdn2_last_error());
            continue;
        }
        char what[96];
        snprintf(what, sizeof what, "tiny (3 heads of 20) layout %s", layouts[i]);
        table_aligned(&c, what);
        gdn2_model *m = NULL;
        if (gdn2_model_create(&c, &m)) {
            CHECK(0, "create %s: %s", what, gdn2_last_error());
            continue;
        }
        gdn2_model_init(m, 3);
        /* the model's layer_off and the layer's own offsets name the same floats */
        int agree = 1, nrec = 0;
        for (int64_t l = 0; l < c.n_layer; l++) {
            if (c.kind[l] >= GDN2_LAYER_SWA) continue;
            nrec++;
            gdn2_layer_cfg lc = gdn2_model_layer_cfg(&c, (int)l);
            int np = gdn2_layer_params(&lc, NULL, 0);
            gdn2_param_info *pi = calloc((size_t)np, sizeof *pi);
            gdn2_layer_params(&lc, pi, np);
            agree &= m->layer_off[l] % GDN2_PARAM_ALIGN == 0;
            for (int k = 0; k < np; k++) {
                char nm[160];
                snprintf(nm, sizeof nm, "transformer.h.%lld.attn.%s", (long long)l, pi[k].name);
                const gdn2_model_param *mp = gdn2_model_find(m, nm);
                agree &= mp && mp->offset == m->layer_off[l] + pi[k].offset && mp->numel == pi[k].numel &&
                         pi[k].offset % GDN2_PARAM_ALIGN == 0;
            }
            agree &= gdn2_layer_param_count(&lc) == pi[np - 1].offset + pi[np - 1].numel;
            free(pi);
        }
        /* the gaps hold zeros after init */
        size_t nonzero = 0, end = 0;
        for (int t = 0; t < m->n_tensors; t++) {
            for (size_t j = end; j < m->tensors[t].offset; j++) nonzero += m->params[j] != 0.0f;
            end = m->tensors[t].offset + m->tensors[t].numel;
        }
        CHECK(agree && nrec > 0 && nonzero == 0 && m->n_params == gdn2_model_param_count(&c) &&
                  m->n_flat == gdn2_model_flat_size(&c) && m->n_flat > m->n_params,
              "%s: layer_off and the layer's slot offsets agree over %d recurrent layers; %zu nonzero floats in "
              "the gaps; n_params %zu, n_flat %zu", what, nrec, nonzero, m->n_params, m->n_flat);
        gdn2_model_free(m);
    }
    /* the layer's own block, every mixer */
    for (int mix = 0; mix < 3; mix++) {
        gdn2_layer_cfg lc = {100, 3, 6, 20, 12, 4, 0, 1e-5f, (gdn2_mixer_kind)mix, GDN2_KERNEL_CHUNK, 0};
        int np = gdn2_layer_params(&lc, NULL, 0), bad = 0;
        gdn2_param_info *pi = calloc((size_t)np, sizeof *pi);
        gdn2_layer_params(&lc, pi, np);
        size_t sum = 0;
        for (int k = 0; k < np; k++) bad += pi[k].offset % GDN2_PARAM_ALIGN != 0, sum += pi[k].numel;
        const size_t flat = gdn2_layer_param_count(&lc);
        float *w = malloc(flat * sizeof(float));
        for (size_t j = 0; j < flat; j++) w[j] = 7.0f;
        gdn2_layer_init(&lc, w, 1);
        size_t nonzero = 0, end = 0;
        for (int k = 0; k < np; k++) {
            for (size_t j = end; j < pi[k].offset; j++) nonzero += w[j] != 0.0f;
            end = pi[k].offset + pi[k].numel;
        }
        CHECK(np > 0 && !bad && flat == end && flat > sum && nonzero == 0,
              "layer mixer %d: %d slots at multiples of %d floats (%d not); %zu parameters in a block of %zu floats; "
              "init zeroes the gaps (%zu nonzero)", mix, np, GDN2_PARAM_ALIGN, bad, sum, flat, nonzero);
        free(w), free(pi);
    }
}

/* An optimizer file whose moments are not the flat block's size (one written before the block was
 * aligned held the parameter count) is refused with a message naming both sizes. */
static void test_optim_size(void) {
    gdn2_model_cfg c;
    gdn2_model *m = NULL;
    gdn2_model_config("tiny", &c);
    if (!layer_available() || gdn2_model_create(&c, &m)) {
        CHECK(0, "optimizer file size: tiny model");
        return;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/gdn2_test_optim_%d.safetensors", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    gdn2_adamw_cfg ac = gdn2_adamw_default();
    gdn2_adamw old, cur;
    memset(&old, 0, sizeof old), memset(&cur, 0, sizeof cur);
    int st = gdn2_adamw_init(&old, &ac, m->n_params); /* the pre-alignment size */
    if (!st) st = gdn2_adamw_save(&old, path, NULL);
    if (!st) st = gdn2_adamw_init(&cur, &ac, m->n_flat);
    int ls = st ? st : gdn2_adamw_load(&cur, path, NULL);
    char want[64];
    snprintf(want, sizeof want, "%zu", m->n_flat);
    CHECK(!st && ls == GDN2_ERR_FORMAT && strstr(gdn2_last_error(), "flat parameter block") &&
              strstr(gdn2_last_error(), want),
          "an optimizer file of %zu moments for a flat block of %zu floats is refused: %s", m->n_params, m->n_flat,
          gdn2_last_error());
    if (!st) {
        gdn2_adamw_free(&cur);
        st = gdn2_adamw_init(&cur, &ac, m->n_flat);
        gdn2_adamw_free(&old);
        if (!st) st = gdn2_adamw_init(&old, &ac, m->n_flat);
        if (!st) st = gdn2_adamw_save(&old, path, NULL);
        CHECK(!st && gdn2_adamw_load(&cur, path, NULL) == GDN2_OK, "an optimizer file of the flat block's size loads%s%s",
              st ? ": " : "", st ? gdn2_last_error() : "");
    }
    gdn2_adamw_free(&old), gdn2_adamw_free(&cur);
    remove(path);
    gdn2_model_free(m);
}

static void test_config(void) {
    gdn2_model_cfg c;
    CHECK(gdn2_model_config("nope", &c) == GDN2_ERR_ARG && strstr(gdn2_last_error(), "tiny"),
          "unknown config name is an error listing the names: %s", gdn2_last_error());
    gdn2_model_config("tiny", &c);
    CHECK(gdn2_model_set_layout(&c, "gdn2,foo") == GDN2_ERR_ARG, "bad layout item rejected: %s", gdn2_last_error());
    CHECK(gdn2_model_set_layout(&c, "gdn2,swa,attn") == GDN2_OK && c.kind[0] == GDN2_LAYER_GDN2 &&
              c.kind[1] == GDN2_LAYER_SWA && c.kind[2] == GDN2_LAYER_ATTN && c.kind[3] == GDN2_LAYER_GDN2,
          "layout gdn2,swa,attn cycles over layers");
    const char *js = "{\"config\":{\"n_layer\":2,\"n_embd\":256,\"n_head\":4,\"vocab_size\":500,\"padding_multiple\":64,"
                     "\"gdn2_per_layer\":2,\"intermediate_size\":256,\"local_window\":64,\"norm_eps\":1e-5,"
                     "\"gdn2_num_heads\":4,\"gdn2_head_dim\":64}}";
    int st = gdn2_model_config_from_json(js, &c);
    CHECK(st == 0 && c.padded_vocab == 512 && c.kind[0] == GDN2_LAYER_GDN2 && c.kind[1] == GDN2_LAYER_SWA &&
              c.head_size == 64 && c.gdn_heads == 4 && c.gdn_head_dim == 64 && c.local_window == 64,
          "lit_gpt config JSON: padded vocab %lld, layout %s, head_size %lld", (long long)c.padded_vocab, c.layout,
          (long long)c.head_size);
    char *back = gdn2_model_config_to_json(&c);
    gdn2_model_cfg c2;
    st = gdn2_model_config_from_json(back, &c2);
    CHECK(st == 0 && !strcmp(c2.layout, c.layout) && c2.padded_vocab == c.padded_vocab && c2.n_embd == c.n_embd,
          "config JSON round trip (%s)", c2.layout);
    free(back);
    CHECK(gdn2_model_config_from_json("{\"n_layer\":2}", &c) == GDN2_ERR_FORMAT, "config without n_embd rejected: %s",
          gdn2_last_error());
    /* lit_gpt keys selecting arithmetic gdn2 does not have: refused by name; the official values load */
    const char *bad[5] = {"\"bias\":true", "\"parallel_residual\":true", "\"rotary_percentage\":0.5",
                          "\"_mlp_class\":\"GptNeoxMLP\"", "\"_norm_class\":\"LayerNorm\""};
    const char *key[5] = {"bias", "parallel_residual", "rotary_percentage", "_mlp_class", "_norm_class"};
    int all = 1;
    for (int i = 0; i < 5; i++) {
        char j[256];
        snprintf(j, sizeof j, "{\"n_layer\":2,\"n_embd\":64,\"vocab_size\":256,%s}", bad[i]);
        const int r = gdn2_model_config_from_json(j, &c);
        all &= r == GDN2_ERR_FORMAT && strstr(gdn2_last_error(), key[i]) != NULL;
        if (r != GDN2_ERR_FORMAT) printf("  %s: accepted\n", bad[i]);
    }
    st = gdn2_model_config_from_json("{\"n_layer\":2,\"n_embd\":64,\"vocab_size\":256,\"bias\":false,"
                                     "\"parallel_residual\":false,\"rotary_percentage\":1.0,\"_mlp_class\":\"LLaMAMLP\","
                                     "\"_norm_class\":\"FusedRMSNorm\"}",
                                     &c);
    CHECK(all && st == 0, "config: bias, parallel_residual, rotary_percentage, _mlp_class, _norm_class other than gdn2's "
                          "are refused naming the key; the official values load (%d)", st);
}

/* a checkpoint holding a NaN weight is refused at load, naming the tensor */
static void test_nonfinite_checkpoint(void) {
    gdn2_model_cfg c;
    gdn2_model_config("tiny", &c);
    gdn2_model *m = NULL, *m2 = NULL;
    if (gdn2_model_create(&c, &m)) {
        CHECK(0, "non-finite checkpoint: create: %s", gdn2_last_error());
        return;
    }
    gdn2_model_init(m, 1);
    const gdn2_model_param *p = gdn2_model_find(m, "lm_head.weight");
    char path[512];
    snprintf(path, sizeof path, "%s/gdn2_test_nan_%d.safetensors", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    if (p) m->params[p->offset + 70] = NAN;
    int st = p ? gdn2_model_save(m, path) : -1;
    int ld = st ? -1 : gdn2_model_load(path, &m2);
    CHECK(!st && ld == GDN2_ERR_ARG && strstr(gdn2_last_error(), "lm_head.weight") && strstr(gdn2_last_error(), "nan") &&
              strstr(gdn2_last_error(), path),
          "a checkpoint with a NaN in lm_head.weight is refused at load: %s", gdn2_last_error());
    gdn2_model_free(m2);
    gdn2_model_free(m);
    unlink(path);
}

/* ---- attention against float64 -------------------------------------------------------------- */
static void attn_ref(const gdn2_attn_cfg *a, const float *wqkv, const float *wp, const float *x, int64_t B, int64_t T,
                     double *y) {
    int64_t nh = a->n_head, ng = a->n_groups, hs = a->hs, q = nh / ng, d = a->d, nq = (nh + 2 * ng) * hs;
    double *qkv = calloc((size_t)B * T * nq, sizeof(double)), *o = calloc((size_t)B * T * nh * hs, sizeof(double));
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t j = 0; j < nq; j++) {
            double s = 0;
            for (int64_t i = 0; i < d; i++) s += (double)wqkv[j * d + i] * x[r * d + i];
            qkv[r * nq + j] = s;
        }
    /* RoPE rotate-half in float64 */
    for (int64_t r = 0; r < B * T; r++) {
        int64_t t = r % T;
        for (int64_t g = 0; g < ng; g++)
            for (int64_t j = 0; j <= q; j++) { /* q heads and the k head */
                double *v = qkv + r * nq + g * (q + 2) * hs + j * hs;
                for (int64_t i = 0; i < hs / 2; i++) {
                    double th = pow(a->rope_base, -(double)(2 * i) / hs), c = cos(t * th), s = sin(t * th);
                    double x1 = v[i], x2 = v[i + hs / 2];
                    v[i] = x1 * c - x2 * s;
                    v[i + hs / 2] = x2 * c + x1 * s;
                }
            }
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t t = 0; t < T; t++) {
                int64_t g = h / q;
                const double *qt = qkv + (b * T + t) * nq + g * (q + 2) * hs + (h % q) * hs;
                double sc[512], mx = -1e300, l = 0;
                for (int64_t j = 0; j <= t; j++) {
                    if (a->window > 0 && j < t - a->window + 1) { sc[j] = -1e300; continue; }
                    const double *kj = qkv + (b * T + j) * nq + g * (q + 2) * hs + q * hs;
                    double s = 0;
                    for (int64_t i = 0; i < hs; i++) s += qt[i] * kj[i];
                    sc[j] = s / sqrt((double)hs);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int64_t j = 0; j <= t; j++) l += sc[j] > -1e299 ? exp(sc[j] - mx) : 0;
                double *ot = o + (b * T + t) * nh * hs + h * hs;
                for (int64_t j = 0; j <= t; j++) {
                    if (sc[j] < -1e299) continue;
                    double p = exp(sc[j] - mx) / l;
                    const double *vj = qkv + (b * T + j) * nq + g * (q + 2) * hs + (q + 1) * hs;
                    for (int64_t i = 0; i < hs; i++) ot[i] += p * vj[i];
                }
            }
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t j = 0; j < d; j++) {
            double s = 0;
            for (int64_t i = 0; i < nh * hs; i++) s += (double)wp[j * nh * hs + i] * o[r * nh * hs + i];
            y[r * d + j] = s;
        }
    free(qkv), free(o);
}

/* loss = sum y * R;  finite differences on sampled coordinates of (x, w_qkv, w_proj) */
static void test_attention(const char *what, int64_t nh, int64_t ng, int64_t hs, int64_t window) {
    gdn2_attn_cfg a = {32, nh, ng, hs, window, 10000.0f, 0};
    const int64_t B = 2, T = 13, d = a.d, nq = (nh + 2 * ng) * hs, BT = B * T;
    float *x = malloc(BT * d * 4), *wq = malloc(nq * d * 4), *wp = malloc(d * nh * hs * 4), *R = malloc(BT * d * 4);
    float *y = malloc(BT * d * 4), *acts = malloc(gdn2_attn_act_bytes(&g_cpu, &a, B, T)), *scr = malloc(gdn2_attn_scratch_bytes(&g_cpu, &a, B, T, 1)), *dx = malloc(BT * d * 4);
    float *dwq = calloc(nq * d, 4), *dwp = calloc(d * nh * hs, 4);
    double *yr = malloc(BT * d * 8);
    randn(x, BT * d, 1.0), randn(wq, nq * d, 0.3), randn(wp, d * nh * hs, 0.2), randn(R, BT * d, 1.0);
    int st = gdn2_attn_forward(&g_cpu, &a, wq, wp, x, B, T, y, acts, scr);
    attn_ref(&a, wq, wp, x, B, T, yr);
    double err = rel_rmse_f32_f64(y, yr, BT * d);
    CHECK(st == 0 && err < 1e-5, "attention %s forward vs float64 (RoPE, mask): rel RMSE %.2e", what, err);
    st = gdn2_attn_backward(&g_cpu, &a, wq, wp, x, B, T, acts, R, dx, dwq, dwp, 1, scr);
    /* finite differences, h = 1e-2, aggregated relative error over 3 x 24 coordinates. The bar, 1e-3, is
     * ~20x the worst error measured (5.4e-5): a gradient off by 1 % fails it */
    float *vars[3] = {x, wq, wp}, *grads[3] = {dx, dwq, dwp};
    size_t ns[3] = {BT * d, nq * d, d * nh * hs};
    const char *names[3] = {"x", "w_qkv", "w_proj"};
    for (int v = 0; v < 3; v++) {
        double num2 = 0, den2 = 0;
        for (int s = 0; s < 24; s++) {
            size_t i = (size_t)(test_uniform(&g_seed) * ns[v]);
            float keep = vars[v][i], h = 1e-2f;
            vars[v][i] = keep + h;
            gdn2_attn_forward(&g_cpu, &a, wq, wp, x, B, T, y, acts, scr);
            double lp = dotd(y, R, BT * d);
            vars[v][i] = keep - h;
            gdn2_attn_forward(&g_cpu, &a, wq, wp, x, B, T, y, acts, scr);
            double lm = dotd(y, R, BT * d);
            vars[v][i] = keep;
            double num = (lp - lm) / (2 * h), an = grads[v][i];
            num2 += (num - an) * (num - an), den2 += an * an;
        }
        double rel = sqrt(num2 / (den2 > 0 ? den2 : 1));
        CHECK(st == 0 && rel < 1e-3, "attention %s grad %s vs finite differences: rel err %.2e < 1e-3", what, names[v],
              rel);
    }
    free(x), free(wq), free(wp), free(R), free(y), free(acts), free(scr), free(dx), free(dwq), free(dwp), free(yr);
}

static void test_mlp_norm(void) {
    const int64_t N = 7, d = 16, I = 24;
    float *x = malloc(N * d * 4), *w1 = malloc(I * d * 4), *w2 = malloc(I * d * 4), *w3 = malloc(d * I * 4);
    float *R = malloc(N * d * 4), *y = malloc(N * d * 4), *acts = malloc(gdn2_mlp_act_bytes(&g_cpu, N, I));
    float *dx = malloc(N * d * 4), *dw1 = calloc(I * d, 4), *dw2 = calloc(I * d, 4), *dw3 = calloc(d * I, 4);
    float *scr = malloc(2 * N * I * 4);
    randn(x, N * d, 1), randn(w1, I * d, 0.4), randn(w2, I * d, 0.4), randn(w3, d * I, 0.3), randn(R, N * d, 1);
    /* SwiGLU forward vs float64 */
    gdn2_mlp_forward(&g_cpu, N, d, I, w1, w2, w3, x, y, acts, 0);
    double e2 = 0, r2 = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < d; j++) {
            double s = 0;
            for (int64_t k = 0; k < I; k++) {
                double h1 = 0, h2 = 0;
                for (int64_t i = 0; i < d; i++) h1 += (double)w1[k * d + i] * x[n * d + i], h2 += (double)w2[k * d + i] * x[n * d + i];
                s += (double)w3[j * I + k] * h1 / (1 + exp(-h1)) * h2;
            }
            e2 += (s - y[n * d + j]) * (s - y[n * d + j]), r2 += s * s;
        }
    CHECK(sqrt(e2 / r2) < 1e-6, "SwiGLU forward vs float64: rel RMSE %.2e", sqrt(e2 / r2));
    {   /* the decode step's form: w1, w2 one block, both input projections as one batched call */
        float *w12 = malloc(2 * I * d * 4), *yb = malloc(N * d * 4), *ab = malloc(gdn2_mlp_act_bytes(&g_cpu, N, I));
        memcpy(w12, w1, I * d * 4), memcpy(w12 + I * d, w2, I * d * 4);
        int rb = gdn2_mlp_forward(&g_cpu, N, d, I, w12, w12 + I * d, w3, x, yb, ab, 1);
        CHECK(!rb && !memcmp(yb, y, N * d * 4), "SwiGLU forward with the batched input projections: the same bits");
        free(w12), free(yb), free(ab);
    }
    gdn2_mlp_backward(&g_cpu, N, d, I, w1, w2, w3, x, acts, R, dx, dw1, dw2, dw3, 1, scr);
    float *vars[4] = {x, w1, w2, w3}, *grads[4] = {dx, dw1, dw2, dw3};
    size_t ns[4] = {N * d, I * d, I * d, d * I};
    const char *names[4] = {"x", "w1", "w2", "w3"};
    for (int v = 0; v < 4; v++) {
        double num2 = 0, den2 = 0;
        for (int s = 0; s < 20; s++) {
            size_t i = (size_t)(test_uniform(&g_seed) * ns[v]);
            float keep = vars[v][i], h = 1e-2f;
            vars[v][i] = keep + h;
            gdn2_mlp_forward(&g_cpu, N, d, I, w1, w2, w3, x, y, acts, 0);
            double lp = dotd(y, R, N * d);
            vars[v][i] = keep - h;
            gdn2_mlp_forward(&g_cpu, N, d, I, w1, w2, w3, x, y, acts, 0);
            double lm = dotd(y, R, N * d);
            vars[v][i] = keep;
            double num = (lp - lm) / (2 * h), an = grads[v][i];
            num2 += (num - an) * (num - an), den2 += an * an;
        }
        /* bar ~30x the worst error measured (3.0e-5) */
        CHECK(sqrt(num2 / den2) < 1e-3, "SwiGLU grad %s vs finite differences: rel err %.2e < 1e-3", names[v],
              sqrt(num2 / den2));
    }
    /* RMSNorm */
    float *w = malloc(d * 4), *rs = malloc(N * 4), *dw = calloc(d, 4);
    randn(w, d, 1);
    gdn2_rmsnorm_fwd(N, d, x, w, 1e-5f, y, rs, 0);
    gdn2_rmsnorm_bwd(N, d, x, w, rs, R, dx, 0, dw, 0);
    float *nv[2] = {x, w}, *ng[2] = {dx, dw};
    size_t nn[2] = {N * d, d};
    for (int v = 0; v < 2; v++) {
        double num2 = 0, den2 = 0;
        for (int s = 0; s < 20; s++) {
            size_t i = (size_t)(test_uniform(&g_seed) * nn[v]);
            float keep = nv[v][i], h = 1e-2f;
            nv[v][i] = keep + h;
            gdn2_rmsnorm_fwd(N, d, x, w, 1e-5f, y, NULL, 0);
            double lp = dotd(y, R, N * d);
            nv[v][i] = keep - h;
            gdn2_rmsnorm_fwd(N, d, x, w, 1e-5f, y, NULL, 0);
            double lm = dotd(y, R, N * d);
            nv[v][i] = keep;
            double num = (lp - lm) / (2 * h), an = ng[v][i];
            num2 += (num - an) * (num - an), den2 += an * an;
        }
        CHECK(sqrt(num2 / den2) < 1e-3, "RMSNorm grad %s vs finite differences: rel err %.2e < 1e-3", v ? "w" : "x",
              sqrt(num2 / den2));
    }
    free(x), free(w1), free(w2), free(w3), free(R), free(y), free(acts), free(dx), free(dw1), free(dw2), free(dw3);
    free(scr), free(w), free(rs), free(dw);
}

/* ---- whole model ------------------------------------------------------------------------- */
static gdn2_model *tiny_model(const char *layout, int64_t vocab) {
    gdn2_model_cfg c;
    gdn2_model_config("tiny", &c);
    c.n_layer = 2, c.n_embd = 32, c.n_head = 2, c.n_query_groups = 2, c.head_size = 16, c.intermediate_size = 48;
    c.gdn_heads = 2, c.gdn_v_heads = 2, c.gdn_head_dim = 16, c.vocab_size = vocab, c.local_window = 5;
    c.padding_multiple = 8;
    gdn2_model_set_layout(&c, layout);
    if (gdn2_model_check(&c)) return NULL;
    gdn2_model *m = NULL;
    if (gdn2_model_create(&c, &m)) return NULL;
    gdn2_model_init(m, 7);
    return m;
}

/* mean CE recomputed in float64 from the fp32 logits (the float loss is too coarse for FD) */
/* the mean CE in float64 from the model's logits (an evaluation forward, or with train = 1 a training one:
 * dropout applied) */
static double ce64_mode(gdn2_model *m, const int32_t *tok, const int32_t *tgt, int64_t B, int64_t T, float *lg,
                        int train) {
    const int64_t Vp = m->cfg.padded_vocab;
    if (gdn2_model_forward(m, tok, tgt, B, T, lg, NULL, train)) return NAN;
    double tot = 0;
    int n = 0;
    for (int64_t r = 0; r < B * T; r++) {
        if (tgt[r] == GDN2_IGNORE) continue;
        const float *z = lg + r * Vp;
        double mx = z[0], s = 0;
        for (int64_t v = 1; v < Vp; v++) mx = z[v] > mx ? z[v] : mx;
        for (int64_t v = 0; v < Vp; v++) s += exp(z[v] - mx);
        tot += mx + log(s) - z[tgt[r]], n++;
    }
    return tot / n;
}
static double ce64(gdn2_model *m, const int32_t *tok, const int32_t *tgt, int64_t B, int64_t T, float *lg) {
    return ce64_mode(m, tok, tgt, B, T, lg, 0);
}

/* FD on the mean CE of a whole model: the embedding, norms, mixers, MLPs, ln_f and lm_head */
static void test_model_grad(const char *layout, gdn2_layer_kernel kernel) {
    gdn2_model *m = tiny_model(layout, 40);
    if (!m) {
        CHECK(0, "model %s: create failed: %s", layout, gdn2_last_error());
        return;
    }
    m->cfg.kernel = kernel;
    const int64_t B = 2, T = 11;
    int32_t tok[22], tgt[22];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)(test_uniform(&g_seed) * 40), tgt[i] = (int32_t)(test_uniform(&g_seed) * 40);
    tgt[3] = GDN2_IGNORE, tgt[15] = GDN2_IGNORE;
    float loss, *lg = malloc(B * T * m->cfg.padded_vocab * sizeof(float));
    gdn2_model_zero_grad(m);
    int st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &loss, 1);
    if (!st) st = gdn2_model_backward(m, 1.0f);
    double worst = 0, worstd = 0;
    int nbad = 0, ncheck = 0;
    for (int t = 0; t < m->n_tensors && !st; t++) {
        const gdn2_model_param *p = &m->tensors[t];
        double num2 = 0, den2 = 0, ms = 0;
        for (size_t j = 0; j < p->numel; j++) ms += (double)m->params[p->offset + j] * m->params[p->offset + j];
        /* step: 5% of the tensor's RMS (embeddings are ~0.02, norm weights 1) */
        float hs = (float)(0.05 * sqrt(ms / p->numel));
        /* floor 1e-2 except for the embedding (its rows of scale 0.02 feed an RMSNorm): keeps the
         * loss change well above the fp32 noise for the small gate gradients */
        if (hs < 1e-2f && strcmp(p->name, "transformer.wte.weight")) hs = 1e-2f;
        for (int s = 0; s < 6; s++) {
            size_t i = p->offset + (size_t)(test_uniform(&g_seed) * p->numel);
            float keep = m->params[i], h = hs;
            m->params[i] = keep + h;
            double lp = ce64(m, tok, tgt, B, T, lg);
            m->params[i] = keep - h;
            double lm = ce64(m, tok, tgt, B, T, lg);
            m->params[i] = keep;
            double num = ((double)lp - lm) / (2 * h), an = m->grads[i];
            num2 += (num - an) * (num - an), den2 += an * an;
        }
        /* tensors whose sampled grads are all tiny (e.g. unused embedding rows) get an absolute test */
        double rel = den2 > 1e-8 ? sqrt(num2 / den2) : sqrt(num2) * 1e2;
        /* directional derivative along the whole tensor's gradient u = g/|g|, step 0.2% of |p|:
         * dL/dh = |g| (a large loss change, so this catches scale/sign errors in small gradients) */
        double gn = 0, pn = 0;
        for (size_t j = 0; j < p->numel; j++) {
            gn += (double)m->grads[p->offset + j] * m->grads[p->offset + j];
            pn += (double)m->params[p->offset + j] * m->params[p->offset + j];
        }
        gn = sqrt(gn), pn = sqrt(pn);
        double drel = 0;
        if (gn > 0) {
            float *keep = malloc(p->numel * sizeof(float));
            memcpy(keep, m->params + p->offset, p->numel * sizeof(float));
            double h = 2e-3 * pn;
            for (size_t j = 0; j < p->numel; j++) m->params[p->offset + j] = keep[j] + (float)(h * m->grads[p->offset + j] / gn);
            double lp = ce64(m, tok, tgt, B, T, lg);
            for (size_t j = 0; j < p->numel; j++) m->params[p->offset + j] = keep[j] - (float)(h * m->grads[p->offset + j] / gn);
            double lm = ce64(m, tok, tgt, B, T, lg);
            memcpy(m->params + p->offset, keep, p->numel * sizeof(float));
            free(keep);
            drel = fabs((lp - lm) / (2 * h) - gn) / gn;
        }
        ncheck++;
        if (getenv("VERBOSE")) printf("  %s coords %.2e direction %.2e\n", p->name, rel, drel);
        if (rel > 6e-2 || drel > 2e-2) {
            nbad++;
            printf("  %s: sampled coordinates rel err %.2e, along the gradient %.2e\n", p->name, rel, drel);
        }
        if (rel > worst) worst = rel;
        if (drel > worstd) worstd = drel;
    }
    CHECK(st == 0 && nbad == 0,
          "whole model (%s) gradient vs finite differences of the mean CE: %d tensors, worst rel err %.2e on sampled "
          "coordinates (< 6e-2), %.2e along each tensor's gradient (< 2e-2)%s%s",
          layout, ncheck, worst, worstd, st ? ": " : "", st ? gdn2_last_error() : "");
    free(lg);
    gdn2_model_free(m);
}

/* prefill(prompt) + step(token)... gives the logits of the full forward */
static void test_generation(const char *layout) {
    gdn2_model *m = tiny_model(layout, 40);
    if (!m) {
        CHECK(0, "model %s: create failed: %s", layout, gdn2_last_error());
        return;
    }
    const int64_t B = 2, T = 14, P0 = 5, Vp = m->cfg.padded_vocab;
    int32_t tok[28];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)(test_uniform(&g_seed) * 40);
    float *full = malloc(B * T * Vp * 4), *lg = malloc(B * Vp * 4);
    int st = gdn2_model_forward(m, tok, NULL, B, T, full, NULL, 0);
    gdn2_model_state *s = NULL;
    if (!st) st = gdn2_model_state_create(m, B, 64, &s);
    int32_t *pr = malloc(B * P0 * 4);
    for (int b = 0; b < B; b++) memcpy(pr + b * P0, tok + b * T, P0 * 4);
    if (!st) st = gdn2_model_prefill(m, s, pr, P0, lg);
    double worst = 0;
    for (int64_t t = P0 - 1; t < T && !st; t++) {
        if (t >= P0) {
            int32_t one[2] = {tok[t], tok[T + t]};
            st = gdn2_model_step(m, s, one, lg);
        }
        for (int b = 0; b < B; b++) {
            double e = rel_rmse_f32(lg + b * Vp, full + (b * T + t) * Vp, Vp);
            if (e > worst) worst = e;
        }
    }
    CHECK(st == 0 && worst < 1e-4, "generation %s: prefill %lld + %lld steps match the full forward (worst rel RMSE %.2e, state %zu floats/seq)%s",
          layout, (long long)P0, (long long)(T - P0), worst, s ? s->per_seq : 0, st ? gdn2_last_error() : "");
    gdn2_model_state_free(s);
    free(full), free(lg), free(pr);
    gdn2_model_free(m);
}

static void test_fixture(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", fixture_dir());
    if (!layer_available()) {
        CHECK(0, "model conformance: the GDN-2 layer is unavailable");
        return;
    }
    gdn2_model *m = NULL;
    int st = gdn2_model_load(path, &m);
    CHECK(st == 0, "load the official model from %s%s%s", path, st ? ": " : "", st ? gdn2_last_error() : "");
    if (st) return;
    CHECK(m->n_params == 1381188, "fixture model has %zu parameters (official 1,381,188)", m->n_params);
    gdn2_st file;
    gdn2_st_read(path, &file);
    int64_t sh[2] = {-1, -1}, lsh[3] = {-1, -1, -1}, one[1] = {1};
    int64_t *tok64 = NULL;
    float *ref = NULL, *refloss = NULL;
    gdn2_st_get_i64(&file, "tokens", 1, 2, sh, &tok64);
    gdn2_st_get_f32(&file, "logits", 1, 3, lsh, &ref);
    gdn2_st_get_f32(&file, "loss", 1, 1, one, &refloss);
    int64_t B = sh[0], T = sh[1], Vp = m->cfg.padded_vocab;
    int32_t *tok = malloc(B * T * 4), *tgt = malloc(B * T * 4);
    for (int64_t i = 0; i < B * T; i++) {
        tok[i] = (int32_t)tok64[i];
        tgt[i] = (i % T == T - 1) ? GDN2_IGNORE : (int32_t)tok64[i + 1];
    }
    float *lg = malloc(B * T * Vp * 4), loss = 0;
    st = gdn2_model_forward(m, tok, tgt, B, T, lg, &loss, 0);
    double e = rel_rmse_f32(lg, ref, B * T * Vp);
    CHECK(st == 0 && e < 5e-3, "official model.safetensors logits: rel RMSE %.2e (< 5e-3)", e);
    CHECK(st == 0 && fabs(loss - refloss[0]) < 1e-3, "official model.safetensors loss %.6f vs %.6f (|diff| %.1e < 1e-3)",
          loss, refloss[0], fabs(loss - refloss[0]));
    /* the CLI on the same file: same logits, and a clear error on a file that is not a model */
    if (access(cli_path(), X_OK) == 0) {
        char cmd[2048], outp[] = "/tmp/gdn2_test_forward_XXXXXX";
        int fd = mkstemp(outp);
        if (fd >= 0) close(fd);
        snprintf(cmd, sizeof cmd, "%s forward %s -o %s > /dev/null", cli_path(), path, outp);
        int rc = system(cmd);
        gdn2_st o;
        float *cl = NULL, *cls = NULL;
        int64_t csh[3] = {B, T, Vp}, one1[1] = {1};
        int ok = rc == 0 && gdn2_st_read(outp, &o) == 0;
        if (ok) {
            ok = !gdn2_st_get_f32(&o, "logits", 1, 3, csh, &cl) && !gdn2_st_get_f32(&o, "loss", 1, 1, one1, &cls);
            gdn2_st_free(&o);
        }
        CHECK(ok && rel_rmse_f32(cl, ref, B * T * Vp) < 5e-3 && fabs(cls[0] - refloss[0]) < 1e-3,
              "gdn2 forward CLI on model.safetensors: logits rel RMSE %.2e, loss %.6f",
              ok ? rel_rmse_f32(cl, ref, B * T * Vp) : -1.0, ok ? cls[0] : -1.0f);
        free(cl), free(cls);
        int prc = run("%s forward %s/layer.safetensors -o %s", cli_path(), fixture_dir(), outp);
        CHECK(prc != 0 && strstr(g_out, "n_layer"), "gdn2 forward on a layer file fails naming the missing field: %s", g_out);
        unlink(outp);
    } else {
        CHECK(0, "gdn2 forward CLI: %s not built or not executable (make; or set GDN2_CLI)", cli_path());
    }
    free(tok64), free(ref), free(refloss), free(tok), free(tgt), free(lg);
    gdn2_st_free(&file);
    gdn2_model_free(m);
}


/* activation recomputation per block: the same loss and gradients bit for bit, less memory */
static void test_recompute(void) {
    gdn2_model_cfg c;
    gdn2_model_config("tiny", &c);
    gdn2_model_set_layout(&c, "gdn2,swa,kda");
    c.n_layer = 3;
    gdn2_model *m = NULL;
    if (gdn2_model_create(&c, &m)) {
        CHECK(0, "recompute: create: %s", gdn2_last_error());
        return;
    }
    gdn2_model_init(m, 7);
    m->n_threads = 1;
    const int64_t B = 2, T = 24;
    int32_t tok[48], tgt[48];
    for (int i = 0; i < 48; i++) tok[i] = (i * 29 + 3) % 256, tgt[i] = i % 5 == 0 ? GDN2_IGNORE : (i * 13 + 1) % 256;
    float l0 = 0, l1 = 0;
    float *g0 = malloc(m->n_flat * sizeof(float));
    int st = gdn2_model_zero_grad(m);
    if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &l0, 1);
    if (!st) st = gdn2_model_backward(m, 1.0f);
    if (!st) memcpy(g0, m->grads, m->n_flat * sizeof(float));
    m->recompute = 1;
    if (!st) st = gdn2_model_zero_grad(m);
    if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &l1, 1);
    if (!st) st = gdn2_model_backward(m, 1.0f);
    CHECK(!st && l0 == l1 && !memcmp(g0, m->grads, m->n_flat * sizeof(float)),
          "recompute per block (gdn2,swa,kda): loss %.6f vs %.6f and every gradient bit for bit equal%s%s", l0, l1,
          st ? ": " : "", st ? gdn2_last_error() : "");
    /* keep mode (the recurrent layers' chunk reserve), alone and with recompute: the same loss, the
     * gradients to the saved pair's rounding (relative to the largest, bar 1e-6) */
    for (int rc = 0; rc < 2 && !st; rc++) {
        m->recompute = rc, m->keep_chunk = 1;
        float lk = 0;
        st = gdn2_model_zero_grad(m);
        if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &lk, 1);
        if (!st) st = gdn2_model_backward(m, 1.0f);
        double gmax = 0, dmax = 0;
        for (size_t i = 0; i < m->n_flat && !st; i++) {
            if (fabs(g0[i]) > gmax) gmax = fabs(g0[i]);
            if (fabs(g0[i] - m->grads[i]) > dmax) dmax = fabs(g0[i] - m->grads[i]);
        }
        CHECK(!st && lk == l0 && dmax <= 1e-6 * gmax,
              "keep_chunk%s (gdn2,swa,kda): loss %.6f vs %.6f, max|grad diff| %.2e of max|grad| %.2e (bar 1e-6)%s%s",
              rc ? " + recompute" : "", lk, l0, dmax, gmax, st ? ": " : "", st ? gdn2_last_error() : "");
    }
    m->keep_chunk = 0;
    /* gdn2_model_forward_backward: lm_head's loss and backward in one pass, the same loss and gradients
     * as forward then backward, bit for bit: at scale 1, and accumulated over two calls at scale 0.5
     * (against the two-call pair at 0.5); every row a target (the head's full path) and some ignored
     * (its gathered rows) */
    m->recompute = 0;
    for (int full = 0; full < 2 && !st; full++) {
        int32_t tg[48];
        for (int i = 0; i < 48; i++) tg[i] = full ? (i * 13 + 1) % 256 : tgt[i];
        for (int acc = 1; acc <= 2 && !st; acc++) {
            float la = 0, lb = 0, x;
            st = gdn2_model_zero_grad(m);
            for (int k = 0; k < acc && !st; k++) {
                st = gdn2_model_forward(m, tok, tg, B, T, NULL, &x, 1);
                if (!st) st = gdn2_model_backward(m, 1.0f / (float)acc), la += x;
            }
            if (!st) memcpy(g0, m->grads, m->n_flat * sizeof(float));
            if (!st) st = gdn2_model_zero_grad(m);
            for (int k = 0; k < acc && !st; k++)
                if (!(st = gdn2_model_forward_backward(m, tok, tg, B, T, &x, 1.0f / (float)acc))) lb += x;
            CHECK(!st && la == lb && !memcmp(g0, m->grads, m->n_flat * sizeof(float)),
                  "forward_backward (%s targets, accum %d): loss %.7f vs forward + backward %.7f, every gradient bit "
                  "for bit equal%s%s", full ? "all" : "some ignored", acc, lb, la, st ? ": " : "",
                  st ? gdn2_last_error() : "");
        }
    }
    /* zero_grad leaves the matrix weights' gradients to the next backward (which writes them): from
     * gradients full of garbage, zero_grad + a step gives the same bits as from zeros; a norm read
     * before any backward, and a backward with no target, see zeros everywhere */
    if (!st) {
        float x = 0;
        st = gdn2_model_zero_grad(m);
        if (!st) st = gdn2_model_forward_backward(m, tok, tgt, B, T, &x, 1.0f);
        if (!st) memcpy(g0, m->grads, m->n_flat * sizeof(float));
        for (size_t i = 0; i < m->n_flat; i++) m->grads[i] = 7.0f;
        if (!st) st = gdn2_model_zero_grad(m);
        if (!st) st = gdn2_model_forward_backward(m, tok, tgt, B, T, &x, 1.0f);
        CHECK(!st && !memcmp(g0, m->grads, m->n_flat * sizeof(float)),
              "zero_grad over garbage gradients, then a step: every gradient bit for bit as from zeros%s%s",
              st ? ": " : "", st ? gdn2_last_error() : "");
        size_t nz = 0;
        for (size_t i = 0; i < m->n_flat; i++) m->grads[i] = 7.0f;
        if (!st) st = gdn2_model_zero_grad(m);
        const float gn = st ? -1.0f : gdn2_model_grad_norm(m);
        for (size_t i = 0; i < m->n_flat; i++) nz += m->grads[i] != 0.0f;
        CHECK(gn == 0.0f && nz == 0, "zero_grad then the norm with no backward: norm %g (expected 0), %zu nonzero "
              "gradients", gn, nz);
        int32_t none[48];
        for (int i = 0; i < 48; i++) none[i] = GDN2_IGNORE;
        for (size_t i = 0; i < m->n_flat; i++) m->grads[i] = 7.0f;
        nz = 0;
        if (!st) st = gdn2_model_zero_grad(m);
        if (!st) st = gdn2_model_forward_backward(m, tok, none, B, T, &x, 1.0f);
        for (size_t i = 0; i < m->n_flat; i++) nz += m->grads[i] != 0.0f;
        CHECK(!st && nz == 0, "zero_grad then a step with no target: %zu nonzero gradients (expected 0)%s%s", nz,
              st ? ": " : "", st ? gdn2_last_error() : "");
    }
    {
        float x = 0;
        const int bad = gdn2_model_forward_backward(m, tok, tgt, B, T, &x, -1.0f);
        CHECK(bad == GDN2_ERR_ARG && strstr(gdn2_last_error(), "scale"),
              "forward_backward refuses scale -1 with an error naming it (rc %d: %s)", bad, gdn2_last_error());
    }
    free(g0);
    gdn2_model_free(m);
}


/* residual and embedding dropout: a fixed-seed mask makes the training forward a deterministic
 * function whose gradient the backward computes (checked by finite differences), the same with
 * recomputation, and evaluation forwards are unaffected */
static void test_dropout(float p_res, float p_emb) {
    char tag[64];
    snprintf(tag, sizeof tag, "dropout %.1f, emb_dropout %.1f", (double)p_res, (double)p_emb);
    gdn2_model_cfg c;
    gdn2_model_config("tiny", &c);
    gdn2_model_set_layout(&c, "gdn2,swa");
    gdn2_model *m = NULL;
    if (gdn2_model_create(&c, &m)) {
        CHECK(0, "%s: create: %s", tag, gdn2_last_error());
        return;
    }
    gdn2_model_init(m, 3);
    m->n_threads = 1;
    const int64_t B = 2, T = 16;
    int32_t tok[32], tgt[32];
    for (int i = 0; i < 32; i++) tok[i] = (i * 17 + 5) % 256, tgt[i] = (i * 7 + 2) % 256;
    float l0 = 0, le = 0, le2 = 0, l1 = 0;
    int st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &le, 0);
    m->dropout = p_res, m->emb_dropout = p_emb, m->dropout_seed = 99;
    if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &le2, 0);
    if (!st) st = gdn2_model_zero_grad(m);
    if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &l0, 1);
    if (!st) st = gdn2_model_backward(m, 1.0f);
    float *g0 = malloc(m->n_flat * sizeof(float));
    if (!st) memcpy(g0, m->grads, m->n_flat * sizeof(float));
    CHECK(!st && le == le2 && l0 != le, "%s: evaluation loss unchanged (%.6f), training loss %.6f differs", tag, le, l0);
    /* finite differences on 12 coordinates of the flat block and 6 of the embedding rows the batch
     * uses (the embedding's dropout acts on their gradient), of the mean CE taken in float64 from the
     * training forward's logits (the float32 loss would put ~1e-5 of rounding into each difference) */
    double num2 = 0, den2 = 0;
    uint64_t sd = 5;
    const gdn2_model_param *wte = gdn2_model_find(m, "transformer.wte.weight");
    float *lg = malloc((size_t)(B * T * m->cfg.padded_vocab) * sizeof(float));
    for (int k = 0; k < 18 && !st && wte && lg; k++) {
        size_t i = k < 12 ? (size_t)(gdn2_splitmix64(&sd) % m->n_flat)
                          : wte->offset + (size_t)tok[k * 5 % 32] * (size_t)c.n_embd + (size_t)(k * 13 % c.n_embd);
        /* the embedding's rows have scale 0.02 and feed an RMSNorm: a step of 1e-2 there is far from
         * linear (10 % off), 1e-3 is not */
        float keep = m->params[i], h = k < 12 ? 1e-2f : 1e-3f;
        m->params[i] = keep + h;
        const double lp = ce64_mode(m, tok, tgt, B, T, lg, 1);
        m->params[i] = keep - h;
        const double lm = ce64_mode(m, tok, tgt, B, T, lg, 1);
        m->params[i] = keep;
        if (!isfinite(lp) || !isfinite(lm)) st = GDN2_ERR_ARG;
        double num = (lp - lm) / (2 * (double)h), an = g0[i];
        if (getenv("VERBOSE")) printf("  coord %zu (%s): fd %.6e analytic %.6e\n", i, k < 12 ? "flat" : "wte", num, an);
        num2 += (num - an) * (num - an), den2 += an * an + num * num;
    }
    free(lg);
    double rel = sqrt(num2 / (den2 > 0 ? den2 : 1));
    CHECK(!st && rel < 5e-3, "%s: gradients vs finite differences under the same mask: rel err %.2e < 5e-3", tag, rel);
    m->recompute = 1;
    if (!st) st = gdn2_model_zero_grad(m);
    if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, NULL, &l1, 1);
    if (!st) st = gdn2_model_backward(m, 1.0f);
    CHECK(!st && l1 == l0 && !memcmp(g0, m->grads, m->n_flat * sizeof(float)),
          "%s with recomputation: the same loss and gradients bit for bit%s%s", tag, st ? ": " : "",
          st ? gdn2_last_error() : "");
    free(g0);
    gdn2_model_free(m);
}

int main(void) {
    gdn2_backend_cpu_init(&g_cpu, 0);
    test_counts();
    test_alignment();
    test_optim_size();
    test_recompute();
    test_dropout(0.3f, 0.0f);
    test_dropout(0.0f, 0.3f);
    test_dropout(0.2f, 0.2f);
    test_config();
    test_nonfinite_checkpoint();
    test_attention("full MHA", 2, 2, 8, 0);
    test_attention("SWA window 4", 2, 2, 8, 4);
    test_attention("SWA GQA 4q/2kv", 4, 2, 8, 6);
    test_mlp_norm();
    test_model_grad("attn,swa", GDN2_KERNEL_CHUNK);
    test_generation("swa,attn");
    if (layer_available()) {
        test_model_grad("gdn2,swa", GDN2_KERNEL_REFERENCE); /* float64 recurrence: less noise under the FD */
        test_generation("gdn2,swa");
        test_generation("gdn2");
    } else {
        CHECK(0, "whole-model gdn2,swa gradient and generation: the GDN-2 layer is unavailable");
    }
    test_fixture();
    return test_summary();
}
