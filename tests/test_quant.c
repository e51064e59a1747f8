/* Weight quantization tests (include/gdn2_quant.h): hand-computed int8 / int4 values and packed
 * bytes, round-trip error <= scale/2 per element (exact zeros for a zero row), int4 packing with odd
 * column counts and a partial last group, bad arguments, the weight-set classification of every
 * model tensor, and the model-level fake quantization (logits move by a bounded, non-zero amount,
 * int8 less than int4; excluded tensors stay bit-identical). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gdn2.h"
#include "gdn2_model.h"
#include "gdn2_quant_model.h"

static unsigned long long g_seed = 20261128;

/* ---- hand-computed values ---------------------------------------------------------------- */
static void test_known(void) {
    /* int8: row 0 max 127 -> scale 1; ties round away from zero; row 1 all zero */
    const float w8[2][5] = {{127.0f, -3.4f, 2.5f, -2.5f, 0.49f}, {0, 0, 0, 0, 0}};
    const int8_t want8[10] = {127, -3, 3, -3, 0, 0, 0, 0, 0, 0};
    int8_t q8[10];
    float s8[2] = {-1, -1}, back8[10];
    int st = gdn2_quantize(8, 0, &w8[0][0], 2, 5, q8, s8);
    CHECK(st == 0 && !memcmp(q8, want8, sizeof want8) && s8[0] == 1.0f && s8[1] == 0.0f,
          "int8 known row: q = 127 -3 3 -3 0 (got %d %d %d %d %d), scales %g %g", q8[0], q8[1], q8[2], q8[3], q8[4],
          s8[0], s8[1]);
    gdn2_dequantize(8, 0, q8, s8, 2, 5, back8);
    CHECK(back8[0] == 127.0f && back8[1] == -3.0f && back8[2] == 3.0f && back8[4] == 0.0f && back8[9] == 0.0f,
          "int8 known row dequantizes to 127 -3 3 -3 0 / zeros");

    /* int4, group 4: group 0 max 7 -> s 1: 7 4 -1 0; group 1 max 14 -> s 2: 7 -4 1 0 (0.5 -> 1, 0.45 -> 0) */
    const float w4[8] = {7.0f, 3.5f, -1.2f, 0.0f, 14.0f, -7.0f, 1.0f, 0.9f};
    const uint8_t want4[4] = {0xCF, 0x87, 0x4F, 0x89}; /* nibbles q+8: 15 12 7 8 | 15 4 9 8, low first */
    uint8_t q4[4];
    float s4[2], back4[8];
    st = gdn2_quantize(4, 4, w4, 1, 8, q4, s4);
    CHECK(st == 0 && !memcmp(q4, want4, 4) && s4[0] == 1.0f && s4[1] == 2.0f,
          "int4 known row: packed bytes %02X %02X %02X %02X (want CF 87 4F 89), scales %g %g", q4[0], q4[1], q4[2],
          q4[3], s4[0], s4[1]);
    gdn2_dequantize(4, 4, q4, s4, 1, 8, back4);
    const float wantb[8] = {7, 4, -1, 0, 14, -8, 2, 0};
    CHECK(!memcmp(back4, wantb, sizeof wantb), "int4 known row dequantizes to 7 4 -1 0 14 -8 2 0 (got %g %g .. %g %g)",
          back4[0], back4[1], back4[5], back4[6]);

    size_t qb = 0, ns = 0;
    st = gdn2_quant_sizes(4, 3, 7, 3, &qb, &ns);
    CHECK(st == 0 && qb == 12 && ns == 9, "int4 sizes [3,7] group 3: %zu bytes (12), %zu scales (9)", qb, ns);
    st = gdn2_quant_sizes(8, 3, 7, 0, &qb, &ns);
    CHECK(st == 0 && qb == 21 && ns == 3 && gdn2_quant_nbytes(8, 3, 7, 0) == 33, "int8 sizes [3,7]: %zu bytes, %zu scales", qb, ns);
}

/* ---- round trips on random matrices ------------------------------------------------------ */
/* rows with widely different magnitudes; row zero_row all zero */
static float *rand_matrix(int64_t rows, int64_t cols, int64_t zero_row) {
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t r = 0; r < rows; r++) {
        double mag = pow(10.0, 4.0 * test_uniform(&g_seed) - 3.0);
        for (int64_t c = 0; c < cols; c++) w[r * cols + c] = r == zero_row ? 0.0f : (float)(mag * test_normal(&g_seed));
    }
    return w;
}

static void roundtrip(int bits, int64_t rows, int64_t cols, int64_t group) {
    size_t qb, ns;
    gdn2_quant_sizes(bits, rows, cols, group, &qb, &ns);
    float *w = rand_matrix(rows, cols, rows / 2), *back = malloc(sizeof(float) * (size_t)(rows * cols));
    float *sc = malloc(sizeof(float) * ns);
    uint8_t *q = malloc(qb), *q2 = malloc(qb);
    memset(q, 0xAB, qb);
    int st = gdn2_quantize(bits, group, w, rows, cols, q, sc);
    if (!st) st = gdn2_dequantize(bits, group, q, sc, rows, cols, back);
    const int64_t ng = bits == 8 ? 1 : (cols + group - 1) / group;
    const int qmax = bits == 8 ? 127 : 7;
    double worst = 0; /* max |err| / scale */
    int zero_exact = 1, range_ok = 1, scale_ok = 1, hits_max = 1, pad_ok = 1;
    for (int64_t r = 0; r < rows && !st; r++) {
        for (int64_t g = 0; g < ng; g++) {
            int64_t c0 = bits == 8 ? 0 : g * group, c1 = bits == 8 ? cols : (c0 + group < cols ? c0 + group : cols);
            float s = sc[r * ng + g], amax = 0;
            for (int64_t c = c0; c < c1; c++) amax = fmaxf(amax, fabsf(w[r * cols + c]));
            if (fabsf(s - amax / qmax) > 1e-6f * amax) scale_ok = 0;
            int seen_max = 0;
            for (int64_t c = c0; c < c1; c++) {
                double e = fabs((double)back[r * cols + c] - (double)w[r * cols + c]);
                if (s > 0) worst = fmax(worst, e / s);
                else if (back[r * cols + c] != 0.0f) zero_exact = 0;
                int v = bits == 8 ? ((int8_t *)q)[r * cols + c]
                                  : (int)((c & 1) ? q[r * ((cols + 1) / 2) + c / 2] >> 4 : q[r * ((cols + 1) / 2) + c / 2] & 15) - 8;
                if (v < -qmax || v > qmax) range_ok = 0;
                if (v == qmax || v == -qmax) seen_max = 1;
            }
            if (amax > 0 && !seen_max) hits_max = 0;
        }
        if (r == rows / 2)
            for (int64_t c = 0; c < cols; c++) zero_exact &= back[r * cols + c] == 0.0f;
        if (bits == 4 && (cols & 1) && (q[r * ((cols + 1) / 2) + cols / 2] >> 4) != 0) pad_ok = 0;
    }
    CHECK(st == 0 && worst <= 0.5 * (1 + 1e-5), "int%d [%lld,%lld] group %lld: max |w - w'| = %.6f scale (<= 0.5)", bits,
          (long long)rows, (long long)cols, (long long)group, worst);
    CHECK(zero_exact, "int%d [%lld,%lld]: zero row -> scale 0 and exact zeros", bits, (long long)rows, (long long)cols);
    CHECK(range_ok && hits_max && scale_ok, "int%d: values in [-%d,%d], each group's max reaches +-%d, scale = max/%d",
          bits, qmax, qmax, qmax, qmax);
    if (bits == 4) {
        CHECK(pad_ok, "int4 [%lld,%lld]: unused high nibble of an odd row is 0", (long long)rows, (long long)cols);
        /* packing round trip: quantizing the dequantized matrix gives the same bytes and scales */
        float *sc2 = malloc(sizeof(float) * ns);
        st = gdn2_quantize(4, group, back, rows, cols, q2, sc2);
        double srel = 0;
        for (size_t i = 0; i < ns; i++) srel = fmax(srel, fabs(sc2[i] - sc[i]) / (sc[i] > 0 ? sc[i] : 1));
        CHECK(st == 0 && !memcmp(q, q2, qb) && srel < 1e-6,
              "int4 [%lld,%lld] group %lld: requantizing w' gives the same packed bytes (scales within %.1e)",
              (long long)rows, (long long)cols, (long long)group, srel);
        free(sc2);
    }
    free(w), free(back), free(sc), free(q), free(q2);
}

/* ---- bad arguments ----------------------------------------------------------------------- */
static void test_bad_args(void) {
    float w[6] = {1, 2, 3, 4, 5, 6}, s[6], out[6];
    uint8_t q[6];
    int st = gdn2_quantize(3, 32, w, 2, 3, q, s);
    CHECK(st == GDN2_ERR_ARG && strstr(gdn2_last_error(), "bits"), "bits 3 rejected: %s", gdn2_last_error());
    st = gdn2_quantize(4, 0, w, 2, 3, q, s);
    CHECK(st == GDN2_ERR_ARG && strstr(gdn2_last_error(), "group"), "int4 group 0 rejected: %s", gdn2_last_error());
    st = gdn2_quantize(8, 0, NULL, 2, 3, q, s);
    CHECK(st == GDN2_ERR_ARG && strstr(gdn2_last_error(), "NULL"), "NULL weights rejected: %s", gdn2_last_error());
    st = gdn2_dequantize(4, 2, q, NULL, 2, 3, out);
    CHECK(st == GDN2_ERR_ARG && strstr(gdn2_last_error(), "NULL"), "NULL scales rejected: %s", gdn2_last_error());
    st = gdn2_quantize(8, 0, w, 0, 3, q, s);
    CHECK(st == GDN2_ERR_ARG && strstr(gdn2_last_error(), "rows"), "0 rows rejected: %s", gdn2_last_error());
    CHECK(gdn2_quant_sizes(5, 2, 3, 32, NULL, NULL) == GDN2_ERR_ARG && gdn2_quant_nbytes(4, 2, 3, 0) == 0,
          "sizes: bits 5 and group 0 rejected");
    w[4] = NAN;
    st = gdn2_quantize(8, 0, w, 2, 3, q, s);
    CHECK(st == GDN2_ERR_ARG && strstr(gdn2_last_error(), "non-finite"), "NaN weight rejected: %s", gdn2_last_error());
    int sets = 0;
    CHECK(gdn2_quant_parse_sets("proj,foo", &sets) == GDN2_ERR_ARG && strstr(gdn2_last_error(), "foo"),
          "unknown weight set rejected: %s", gdn2_last_error());
    CHECK(gdn2_quant_parse_sets("", &sets) == GDN2_ERR_ARG, "empty weight set list rejected");
    CHECK(gdn2_quant_parse_sets("gates,head", &sets) == 0 && sets == (GDN2_QSET_GATES | GDN2_QSET_HEAD) &&
              gdn2_quant_parse_sets("all", &sets) == 0 && sets == 7,
          "weight sets parse (gates,head; all)");
    char buf[32];
    CHECK(!strcmp(gdn2_quant_sets_str(GDN2_QSET_PROJ | GDN2_QSET_HEAD, buf, sizeof buf), "proj,head"),
          "set mask prints as proj,head");
}

/* ---- model level ------------------------------------------------------------------------- */
static gdn2_model *tiny_model(const char *layout) {
    gdn2_model_cfg c;
    gdn2_model *m = NULL;
    if (gdn2_model_config("tiny", &c) || gdn2_model_set_layout(&c, layout) || gdn2_model_check(&c) ||
        gdn2_model_create(&c, &m))
        return NULL;
    gdn2_model_init(m, 7);
    m->n_threads = 1;
    return m;
}

static void test_classification(void) {
    const char *layouts[] = {"gdn2,swa", "kda,attn", "gdn"};
    for (int li = 0; li < 3; li++) {
        gdn2_model *m = tiny_model(layouts[li]);
        if (!m) {
            CHECK(0, "tiny model %s: %s", layouts[li], gdn2_last_error());
            continue;
        }
        int ok = 1, n[8] = {0};
        for (int i = 0; i < m->n_tensors; i++) {
            const gdn2_model_param *p = &m->tensors[i];
            int s = gdn2_quant_set_of(p->name);
            n[s]++;
            if ((p->ndim == 2) != (s != 0)) {
                ok = 0;
                printf("  misclassified: %s (ndim %d, set %d)\n", p->name, p->ndim, s);
            }
        }
        CHECK(ok && n[GDN2_QSET_PROJ] > 0 && n[GDN2_QSET_HEAD] == 2 && n[GDN2_QSET_GATES] > 0,
              "layout %s: every 2-D weight in a set, nothing else (proj %d, gates %d, head %d, fp32 %d)", layouts[li],
              n[1], n[2], n[4], n[0]);
        gdn2_model_free(m);
    }
    CHECK(gdn2_quant_set_of("transformer.h.3.attn.b_proj.weight") == GDN2_QSET_GATES &&
              gdn2_quant_set_of("transformer.h.0.attn.f_proj.1.weight") == GDN2_QSET_GATES &&
              gdn2_quant_set_of("transformer.h.12.attn.o_proj.weight") == GDN2_QSET_PROJ &&
              gdn2_quant_set_of("transformer.h.0.attn.A_log") == 0 &&
              gdn2_quant_set_of("transformer.h.0.attn.g_proj.1.bias") == 0 &&
              gdn2_quant_set_of("transformer.h.0.attn.q_conv1d.weight") == 0 &&
              gdn2_quant_set_of("transformer.h.x.attn.q_proj.weight") == 0 && gdn2_quant_set_of(NULL) == 0,
          "names: b_proj/f_proj.1 gates, o_proj proj; A_log, g_proj.1.bias, conv, malformed names none");
}

static void test_model(void) {
    gdn2_model *m = tiny_model("gdn2,swa");
    if (!m) {
        CHECK(0, "tiny model: %s", gdn2_last_error());
        return;
    }
    const int64_t B = 2, T = 48, Vp = m->cfg.padded_vocab;
    int32_t tok[2 * 48];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)(test_rng_next(&g_seed) % (unsigned long long)m->cfg.vocab_size);
    float *l0 = malloc(sizeof(float) * (size_t)(B * T * Vp)), *l8 = malloc(sizeof(float) * (size_t)(B * T * Vp));
    float *l4 = malloc(sizeof(float) * (size_t)(B * T * Vp));
    float *p0 = malloc(sizeof(float) * m->n_flat);
    memcpy(p0, m->params, sizeof(float) * m->n_flat);
    int st = gdn2_model_forward(m, tok, NULL, B, T, l0, NULL, 0);

    const int all = GDN2_QSET_PROJ | GDN2_QSET_GATES | GDN2_QSET_HEAD;
    gdn2_quant_stats s8, s4;
    if (!st) st = gdn2_model_fake_quant(m, 8, 0, all, &s8);
    if (!st) st = gdn2_model_forward(m, tok, NULL, B, T, l8, NULL, 0);
    /* excluded tensors bit-identical, selected ones changed */
    int excl_same = 1, sel_changed = 1, n_excl = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        int same = !memcmp(m->params + p->offset, p0 + p->offset, p->numel * sizeof(float));
        if (gdn2_quant_set_of(p->name)) sel_changed &= !same;
        else excl_same &= same, n_excl++;
    }
    CHECK(st == 0 && excl_same && n_excl > 0, "int8 all sets: %d excluded tensors (norms, A_log, dt_bias, conv, bias) bit-identical",
          n_excl);
    CHECK(sel_changed, "int8 all sets: every selected tensor changed");
    /* the same quantization applied again changes nothing (w' is on the grid) */
    float *p8 = malloc(sizeof(float) * m->n_flat);
    memcpy(p8, m->params, sizeof(float) * m->n_flat);
    gdn2_quant_stats again;
    st = gdn2_model_fake_quant(m, 8, 0, all, &again);
    size_t ndiff = 0;
    for (size_t i = 0; i < m->n_flat; i++) ndiff += fabsf(m->params[i] - p8[i]) > 1e-6f * fabsf(p8[i]);
    CHECK(st == 0 && ndiff == 0, "int8 fake quant is idempotent (%zu of %zu values moved by > 1e-6 rel)", ndiff,
          m->n_flat);
    free(p8);

    memcpy(m->params, p0, sizeof(float) * m->n_flat);
    if (!st) st = gdn2_model_fake_quant(m, 4, 32, all, &s4);
    if (!st) st = gdn2_model_forward(m, tok, NULL, B, T, l4, NULL, 0);
    double e8 = rel_rmse_f32(l8, l0, (size_t)(B * T * Vp)), e4 = rel_rmse_f32(l4, l0, (size_t)(B * T * Vp));
    CHECK(st == 0 && e8 > 1e-6 && e8 < 0.05, "int8 logits rel RMSE %.2e (in (1e-6, 0.05))", e8);
    CHECK(st == 0 && e4 > 2 * e8 && e4 < 0.5, "int4 g32 logits rel RMSE %.2e (> 2x int8, < 0.5)", e4);
    CHECK(s8.weight_rel_rmse > 0 && s8.weight_rel_rmse < s4.weight_rel_rmse && s4.weight_rel_rmse < 0.2,
          "weight rel RMSE int8 %.2e < int4 %.2e", s8.weight_rel_rmse, s4.weight_rel_rmse);

    /* fake quant of one tensor == whole-matrix quantize + dequantize; byte accounting */
    const gdn2_model_param *qp = gdn2_model_find(m, "transformer.h.0.attn.q_proj.weight");
    int64_t R = qp->shape[0], C = qp->shape[1];
    size_t qb, ns;
    gdn2_quant_sizes(4, R, C, 32, &qb, &ns);
    uint8_t *q = malloc(qb);
    float *sc = malloc(sizeof(float) * ns), *w = malloc(sizeof(float) * qp->numel);
    gdn2_quantize(4, 32, p0 + qp->offset, R, C, q, sc);
    gdn2_dequantize(4, 32, q, sc, R, C, w);
    CHECK(!memcmp(w, m->params + qp->offset, qp->numel * sizeof(float)),
          "fake quant of q_proj [%lld,%lld] == gdn2_quantize + gdn2_dequantize of the matrix", (long long)R, (long long)C);
    size_t fp = 0, qq = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (gdn2_quant_set_of(m->tensors[i].name)) {
            fp += m->tensors[i].numel * 4;
            qq += gdn2_quant_nbytes(4, m->tensors[i].shape[0], m->tensors[i].shape[1], 32);
        }
    CHECK(s4.bytes_fp32 == fp && s4.bytes_quant == qq && s4.model_bytes_fp32 == m->n_params * 4 &&
              s4.model_bytes_quant == m->n_params * 4 - fp + qq,
          "int4 byte accounting: selected %zu -> %zu, model %zu -> %zu", s4.bytes_fp32, s4.bytes_quant,
          s4.model_bytes_fp32, s4.model_bytes_quant);
    free(q), free(sc), free(w);

    /* proj only: gates and head untouched */
    memcpy(m->params, p0, sizeof(float) * m->n_flat);
    gdn2_quant_stats sp;
    st = gdn2_model_fake_quant(m, 4, 32, GDN2_QSET_PROJ, &sp);
    int other_same = 1;
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        if (gdn2_quant_set_of(p->name) != GDN2_QSET_PROJ)
            other_same &= !memcmp(m->params + p->offset, p0 + p->offset, p->numel * sizeof(float));
    }
    CHECK(st == 0 && other_same && sp.n_tensors > 0 && sp.n_tensors < s4.n_tensors,
          "proj only: %d tensors quantized, gates/head/fp32 tensors bit-identical", sp.n_tensors);
    CHECK(gdn2_model_fake_quant(m, 3, 32, GDN2_QSET_PROJ, NULL) == GDN2_ERR_ARG &&
              gdn2_model_fake_quant(m, 4, 0, GDN2_QSET_PROJ, NULL) == GDN2_ERR_ARG &&
              gdn2_model_fake_quant(m, 8, 0, 0, NULL) == GDN2_ERR_ARG && gdn2_model_fake_quant(NULL, 8, 0, 1, NULL) == GDN2_ERR_ARG,
          "fake quant: bits 3, group 0, empty set, NULL model rejected");
    free(l0), free(l8), free(l4), free(p0);
    gdn2_model_free(m);
}

/* ---- packed checkpoints ------------------------------------------------------------------ */
static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

/* rewrite `src` into `dst` with tensor `name` given another dtype / shape / first scale, or without
 * the "quant" metadata (name NULL) */
static int rewrite(const char *src, const char *dst, const char *name, int ndim, int64_t d1, float scale0) {
    gdn2_st st;
    if (gdn2_st_read(src, &st)) return -1;
    const char *keys[3], *vals[3];
    int nm = 0;
    for (int i = 0; i < st.n_meta; i++)
        if (name || strcmp(st.meta_keys[i], "quant")) keys[nm] = st.meta_keys[i], vals[nm++] = st.meta_values[i];
    float *copy = NULL;
    for (int i = 0; name && i < st.n_tensors; i++) {
        gdn2_tensor *t = &st.tensors[i];
        if (strcmp(t->name, name)) continue;
        if (ndim) {
            t->ndim = ndim;
            t->shape[1] = d1;
            t->nbytes = (size_t)t->shape[0] * (size_t)(ndim == 2 ? d1 : 1) * gdn2_dtype_size(t->dtype);
        } else {
            copy = malloc(t->nbytes);
            memcpy(copy, t->data, t->nbytes);
            copy[0] = scale0;
            t->data = copy;
        }
    }
    int rc = gdn2_st_write(dst, st.tensors, st.n_tensors, keys, vals, nm);
    free(copy);
    gdn2_st_free(&st);
    return rc;
}

static void test_packed(void) {
    char dir[] = "/tmp/gdn2_quant_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp for the packed-checkpoint test");
        return;
    }
    char fp32[256], pk[256], bad[256];
    snprintf(fp32, sizeof fp32, "%s/fp32.safetensors", dir);
    snprintf(pk, sizeof pk, "%s/packed.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    const char *layouts[2] = {"gdn2", "gdn2,swa"};
    for (int li = 0; li < 2; li++)
        for (int bits = 8; bits >= 4; bits -= 4) {
            gdn2_model *m = tiny_model(layouts[li]), *r = NULL;
            if (!m) {
                CHECK(0, "tiny model %s: %s", layouts[li], gdn2_last_error());
                continue;
            }
            const int sets = GDN2_QSET_PROJ | GDN2_QSET_GATES | GDN2_QSET_HEAD;
            int st = gdn2_model_save(m, fp32);
            if (!st) st = gdn2_model_save_quant(m, pk, bits, 32, sets);
            if (!st) st = gdn2_model_load(pk, &r);
            if (!st) st = gdn2_model_fake_quant(m, bits, 32, sets, NULL);
            size_t ndiff = 0;
            for (size_t i = 0; !st && i < m->n_flat; i++) ndiff += memcmp(&m->params[i], &r->params[i], 4) != 0;
            long s32 = file_size(fp32), sq = file_size(pk);
            CHECK(st == 0 && ndiff == 0, "packed int%d %s: loads to exactly the fake-quantized weights (%zu of %zu differ)%s%s",
                  bits, layouts[li], ndiff, m->n_flat, st ? ": " : "", st ? gdn2_last_error() : "");
            CHECK(st == 0 && sq > 0 && sq * (bits == 8 ? 3 : 5) < s32, "packed int%d %s: file %ld bytes vs fp32 %ld (%.2fx smaller)",
                  bits, layouts[li], sq, s32, sq > 0 ? (double)s32 / sq : 0.0);
            gdn2_model_free(r);
            gdn2_model_free(m);
        }
    /* bad packed files: the error names the file and the tensor */
    gdn2_model *m = tiny_model("gdn2"), *r = NULL;
    if (!m || gdn2_model_save_quant(m, pk, 4, 32, GDN2_QSET_PROJ)) {
        CHECK(0, "packed int4 file for the error cases: %s", gdn2_last_error());
        gdn2_model_free(m);
        return;
    }
    const char *w = "transformer.h.0.attn.q_proj.weight.q", *sc = "transformer.h.0.attn.q_proj.weight.scale";
    struct {
        const char *what, *name, *expect;
        int ndim;
        int64_t d1;
        float s0;
    } cases[] = {
        {"values with a wrong shape", w, w, 2, 3, 0},
        {"scales with a wrong shape", sc, sc, 1, 0, 0},
        {"a negative scale", sc, "negative", 0, 0, -1.0f},
        {"a NaN scale", sc, "non-finite", 0, 0, NAN},
        {"no 'quant' metadata", NULL, "quant", 0, 0, 0},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        int st = rewrite(pk, bad, cases[i].name, cases[i].ndim, cases[i].d1, cases[i].s0);
        if (!st) st = gdn2_model_load(bad, &r);
        CHECK(st == GDN2_ERR_FORMAT && r == NULL && strstr(gdn2_last_error(), cases[i].expect) && strstr(gdn2_last_error(), bad),
              "packed file with %s rejected: %s", cases[i].what, gdn2_last_error());
        gdn2_model_free(r);
        r = NULL;
    }
    CHECK(gdn2_model_save_quant(m, bad, 3, 32, GDN2_QSET_PROJ) == GDN2_ERR_ARG &&
              gdn2_model_save_quant(m, bad, 4, 32, 0) == GDN2_ERR_ARG && gdn2_model_save_quant(NULL, bad, 8, 0, 1) == GDN2_ERR_ARG,
          "save_quant: bits 3, empty set, NULL model rejected");
    gdn2_model_free(m);
    remove(fp32), remove(pk), remove(bad), rmdir(dir);
}

int main(void) {
    test_known();
    roundtrip(8, 17, 257, 0);
    roundtrip(8, 5, 1, 0);
    roundtrip(4, 17, 100, 32); /* last group of 4 */
    roundtrip(4, 9, 7, 3);     /* odd cols, partial last group */
    roundtrip(4, 4, 33, 128);  /* group larger than the row */
    roundtrip(4, 3, 1, 1);
    test_bad_args();
    test_classification();
    test_model();
    test_packed();
    return test_summary();
}
