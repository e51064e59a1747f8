/* fp32 recurrent forward and decode step vs the float64 reference.
 *  - gdn2_recurrent_fwd over a covering subset of T in {1,15,63,64,65,200,1000}, K,V in {16,64,128}
 *    (K != V too), GVA, varlen {1,64,129}, h0, l2norm, gate in kernel, lower_bound: rel RMSE <= 1e-5;
 *  - gdn2_decode_step with a shuffled slot pool, a slot reused after a reset and skipped rows equals
 *    the recurrent forward; bad slot arrays are rejected and leave the pool untouched;
 *  - stability: g down to -50, b and w exactly 0 and 1, b = 2, softplus above its threshold. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixture.h"
#include "gdn2.h"
#include "gdn2_io.h"


typedef struct {
    gdn2_dims d;
    gdn2_opts o;
    int64_t cu[8];
    int use_h0;
    int kind; /* 0 normal, 1 stability mix */
} cfg;

typedef struct {
    int64_t nk, nv, ns;
    float *q, *k, *v, *g, *b, *w, *h0, *A_log, *dt_bias;
} inputs;

/* bf16 round-to-nearest-even via double arithmetic (independent of the library's bit trick) */
static uint16_t bf16_bits(float x) {
    if (x == 0.0f) return signbit(x) ? 0x8000u : 0u;
    int e;
    double m = frexp(fabs((double)x), &e); /* |x| = m 2^e, m in [0.5, 1): 8 significant bits */
    double r = nearbyint(ldexp(m, 8));     /* default rounding mode: to nearest even */
    float y = (float)ldexp(r, e - 8);
    uint32_t u;
    memcpy(&u, &y, 4);
    return (uint16_t)((u >> 16) | (x < 0 ? 0x8000u : 0u));
}
static float bf16_value(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float *falloc(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static double *to64(const float *x, int64_t n) {
    if (!x) return NULL;
    double *y = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

static void gen(const cfg *c, inputs *in, unsigned long long seed) {
    unsigned long long s = seed;
    const gdn2_dims *d = &c->d;
    const int64_t K = d->K, N = gdn2_num_states(d, &c->o);
    in->nk = d->B * d->T * d->H * K;
    in->nv = d->B * d->T * d->HV * d->V;
    in->ns = N * d->HV * K * d->V;
    in->q = falloc(in->nk); in->k = falloc(in->nk); in->g = falloc(in->nk); in->b = falloc(in->nk);
    in->v = falloc(in->nv); in->w = falloc(in->nv);
    in->h0 = c->use_h0 ? falloc(in->ns) : NULL;
    in->A_log = falloc(d->H); in->dt_bias = falloc(d->H * K);
    for (int64_t i = 0; i < in->nk; i++) {
        in->q[i] = (float)test_normal(&s);
        in->k[i] = (float)test_normal(&s);
        if (c->kind == 1) {
            /* exact extremes: decay -50 / 0, erase 0 / 1 / 2 */
            const double r = test_uniform(&s);
            in->g[i] = c->o.gate_in_kernel ? (float)(15.0 * test_normal(&s))
                     : r < 0.2 ? -50.0f : r < 0.4 ? 0.0f : (float)(-3.0 * test_uniform(&s));
            const double r2 = test_uniform(&s);
            in->b[i] = r2 < 0.3 ? 0.0f : r2 < 0.6 ? 1.0f : r2 < 0.8 ? 2.0f : (float)(2.0 * test_uniform(&s));
        } else {
            in->g[i] = c->o.gate_in_kernel ? (float)test_normal(&s) : (float)(-0.5 * test_uniform(&s) - 0.001);
            in->b[i] = (float)test_uniform(&s);
        }
    }
    if (!c->o.qk_l2norm) /* pre-normalised q, k like the official fixtures (keeps |k| = 1) */
        for (int64_t i = 0; i < in->nk / K; i++) {
            double sq = 0, sk = 0;
            for (int64_t j = 0; j < K; j++) { sq += in->q[i * K + j] * in->q[i * K + j]; sk += in->k[i * K + j] * in->k[i * K + j]; }
            for (int64_t j = 0; j < K; j++) { in->q[i * K + j] /= (float)sqrt(sq); in->k[i * K + j] /= (float)sqrt(sk); }
        }
    for (int64_t i = 0; i < in->nv; i++) {
        in->v[i] = (float)test_normal(&s);
        if (c->kind == 1) {
            const double r = test_uniform(&s);
            in->w[i] = r < 0.4 ? 0.0f : r < 0.8 ? 1.0f : (float)test_uniform(&s);
        } else {
            in->w[i] = (float)test_uniform(&s);
        }
    }
    if (in->h0)
        for (int64_t i = 0; i < in->ns; i++) in->h0[i] = (float)(0.1 * test_normal(&s));
    for (int64_t h = 0; h < d->H; h++) in->A_log[h] = (float)log(1.0 + 15.0 * test_uniform(&s));
    for (int64_t i = 0; i < d->H * K; i++) {
        double dt = exp(log(1e-3) + (log(0.1) - log(1e-3)) * test_uniform(&s));
        in->dt_bias[i] = (float)(dt + log(-expm1(-dt)));
    }
}
static void inputs_free(inputs *in) {
    free(in->q); free(in->k); free(in->v); free(in->g); free(in->b); free(in->w); free(in->h0);
    free(in->A_log); free(in->dt_bias);
}

/* float64 reference of the same inputs */
static int ref_run(const cfg *c, const inputs *in, double *o, double *ht) {
    double *q = to64(in->q, in->nk), *k = to64(in->k, in->nk), *g = to64(in->g, in->nk), *b = to64(in->b, in->nk);
    double *v = to64(in->v, in->nv), *w = to64(in->w, in->nv), *h0 = to64(in->h0, in->ns);
    double *A = to64(in->A_log, c->d.H), *dt = to64(in->dt_bias, c->d.H * c->d.K);
    gdn2_fwd_tensors_f64 t = {q, k, v, g, b, w, h0, A, dt, o, ht};
    int rc = gdn2_ref_fwd(&c->d, &c->o, &t);
    free(q); free(k); free(g); free(b); free(v); free(w); free(h0); free(A); free(dt);
    return rc;
}

static void describe(const cfg *c, char *buf, size_t n) {
    int p = snprintf(buf, n, "B=%lld T=%lld H=%lld HV=%lld K=%lld V=%lld", (long long)c->d.B, (long long)c->d.T,
                     (long long)c->d.H, (long long)c->d.HV, (long long)c->d.K, (long long)c->d.V);
    if (c->o.cu_seqlens) {
        p += snprintf(buf + p, n - p, " varlen{");
        for (int64_t i = 0; i < c->o.n_seqs; i++)
            p += snprintf(buf + p, n - p, "%s%lld", i ? "," : "", (long long)(c->cu[i + 1] - c->cu[i]));
        p += snprintf(buf + p, n - p, "}");
    }
    snprintf(buf + p, n - p, "%s%s%s%s%s", c->use_h0 ? " h0" : "", c->o.qk_l2norm ? " l2norm" : "",
             c->o.gate_in_kernel ? " gate" : "", c->o.lower_bound < 0 ? " lower_bound" : "",
             c->kind == 1 ? " extremes(g=-50,b in{0,1,2},w in{0,1})" : "");
}

static void test_vs_ref(cfg *c, unsigned long long seed) {
    if (c->o.n_seqs) c->o.cu_seqlens = c->cu;
    char name[256];
    describe(c, name, sizeof name);
    inputs in;
    gen(c, &in, seed);
    float *o = falloc(in.nv), *ht = falloc(in.ns);
    double *o64 = malloc(in.nv * 8 + 8), *ht64 = malloc(in.ns * 8 + 8);
    gdn2_fwd_tensors t = {in.q, in.k, in.v, in.g, in.b, in.w, in.h0, in.A_log, in.dt_bias, o, ht};
    int rc = gdn2_recurrent_fwd(&c->d, &c->o, &t);
    int rc2 = ref_run(c, &in, o64, ht64);
    if (rc || rc2) {
        CHECK(0, "recurrent [%s] runs: %s", name, gdn2_last_error());
    } else {
        double eo = rel_rmse_f32_f64(o, o64, in.nv), eh = rel_rmse_f32_f64(ht, ht64, in.ns);
        int fin = all_finite_f32(o, in.nv) && all_finite_f32(ht, in.ns);
        CHECK(fin && eo <= 1e-5 && eh <= 1e-5, "recurrent vs float64 [%s]: rel RMSE o %.2e ht %.2e (bar 1e-5)%s", name,
              eo, eh, fin ? "" : " NON-FINITE");
        /* ht = NULL must give the same o */
        float *o2 = falloc(in.nv);
        t.o = o2;
        t.ht = NULL;
        rc = gdn2_recurrent_fwd(&c->d, &c->o, &t);
        CHECK(rc == GDN2_OK && !memcmp(o, o2, in.nv * sizeof(float)), "recurrent [%s]: ht=NULL gives identical o", name);
        free(o2);
    }
    free(o); free(ht); free(o64); free(ht64);
    inputs_free(&in);
}

/* ---- decode ------------------------------------------------------------------------------ */
static void test_decode(void) {
    /* four packed sequences; seq 3 reuses seq 2's slot after seq 2 ends (reset to h0[3]) */
    enum { NSEQ = 4, NSLOT = 5, NROW = 4 };
    const int64_t len[NSEQ] = {37, 50, 20, 25}, start[NSEQ] = {0, 0, 0, 20};
    const int32_t slot_of[NSEQ] = {3, 0, 4, 4};
    cfg c = {.d = {1, 132, 2, 4, 32, 16}, .o = {.qk_l2norm = 1, .gate_in_kernel = 1, .n_seqs = NSEQ},
             .cu = {0, 37, 87, 107, 132}, .use_h0 = 1};
    c.o.cu_seqlens = c.cu;
    const gdn2_dims *d = &c.d;
    const int64_t H = d->H, HV = d->HV, K = d->K, V = d->V, SK = H * K, SV = HV * V, SS = HV * K * V;
    inputs in;
    gen(&c, &in, 777);
    float *o_rec = falloc(in.nv), *ht_rec = falloc(in.ns);
    gdn2_fwd_tensors t = {in.q, in.k, in.v, in.g, in.b, in.w, in.h0, in.A_log, in.dt_bias, o_rec, ht_rec};
    int rc = gdn2_recurrent_fwd(d, &c.o, &t);
    CHECK(rc == GDN2_OK, "decode: recurrent forward of the packed sequences runs");

    float *pool = falloc(NSLOT * SS), *o_dec = falloc(in.nv), *ht_dec = falloc(in.ns);
    float *bq = falloc(NROW * SK), *bk = falloc(NROW * SK), *bg = falloc(NROW * SK), *bb = falloc(NROW * SK);
    float *bv = falloc(NROW * SV), *bw = falloc(NROW * SV), *bo = falloc(NROW * SV);
    int32_t slots[NROW];
    unsigned long long s = 99;
    for (int64_t i = 0; i < NSLOT * SS; i++) pool[i] = 1e3f; /* garbage in unused / stale slots */
    for (int n = 0; n < NSEQ; n++)
        if (start[n] == 0) memcpy(pool + slot_of[n] * SS, in.h0 + n * SS, SS * sizeof(float));
    int skipped_zero = 1, ok = 1;
    gdn2_dims dd = {NROW, 1, H, HV, K, V};
    gdn2_opts od = {.qk_l2norm = 1, .gate_in_kernel = 1};
    for (int64_t step = 0; step < 50 && ok; step++) {
        if (step == 20) { /* seq 2 done: save its state, reset the slot for seq 3 */
            memcpy(ht_dec + 2 * SS, pool + slot_of[2] * SS, SS * sizeof(float));
            memcpy(pool + slot_of[3] * SS, in.h0 + 3 * SS, SS * sizeof(float));
        }
        int perm[NROW] = {0, 1, 2, 3};
        for (int i = NROW - 1; i > 0; i--) {
            int j = (int)(test_rng_next(&s) % (unsigned)(i + 1)), x = perm[i];
            perm[i] = perm[j];
            perm[j] = x;
        }
        for (int r = 0; r < NROW; r++) {
            const int n = perm[r];
            const int64_t tt = step - start[n];
            const int active = tt >= 0 && tt < len[n];
            slots[r] = active ? slot_of[n] : -1;
            if (active) {
                const int64_t tok = c.cu[n] + tt;
                memcpy(bq + r * SK, in.q + tok * SK, SK * 4); memcpy(bk + r * SK, in.k + tok * SK, SK * 4);
                memcpy(bg + r * SK, in.g + tok * SK, SK * 4); memcpy(bb + r * SK, in.b + tok * SK, SK * 4);
                memcpy(bv + r * SV, in.v + tok * SV, SV * 4); memcpy(bw + r * SV, in.w + tok * SV, SV * 4);
            } else {
                for (int64_t i = 0; i < SK; i++) bq[r * SK + i] = bk[r * SK + i] = bg[r * SK + i] = bb[r * SK + i] = NAN;
                for (int64_t i = 0; i < SV; i++) { bv[r * SV + i] = bw[r * SV + i] = NAN; }
            }
            for (int64_t i = 0; i < SV; i++) bo[r * SV + i] = 7.0f;
        }
        gdn2_decode_tensors dt = {bq, bk, bv, bg, bb, bw, in.A_log, in.dt_bias, bo, pool, NSLOT, slots, GDN2_STATE_F32};
        rc = gdn2_decode_step(&dd, &od, &dt);
        if (rc) { ok = 0; break; }
        for (int r = 0; r < NROW; r++) {
            const int n = perm[r];
            const int64_t tt = step - start[n];
            if (slots[r] >= 0) memcpy(o_dec + (c.cu[n] + tt) * SV, bo + r * SV, SV * 4);
            else for (int64_t i = 0; i < SV; i++) skipped_zero &= bo[r * SV + i] == 0.0f;
        }
    }
    CHECK(ok, "decode: 50 steps of 4 rows run%s%s", ok ? "" : ": ", ok ? "" : gdn2_last_error());
    for (int n = 0; n < NSEQ; n++)
        if (n != 2) memcpy(ht_dec + n * SS, pool + slot_of[n] * SS, SS * sizeof(float));
    double eo = rel_rmse_f32(o_dec, o_rec, in.nv), eh = rel_rmse_f32(ht_dec, ht_rec, in.ns);
    CHECK(ok && eo <= 1e-6 && eh <= 1e-6,
          "decode (slot pool, shuffled rows, slot reused after reset, GVA, gate, l2norm) vs recurrent: rel RMSE o %.2e ht %.2e (bar 1e-6)",
          eo, eh);
    CHECK(skipped_zero, "decode: skipped rows (slot -1, NaN inputs) give o = 0");
    int untouched = 1;
    for (int64_t i = 0; i < SS; i++) untouched &= pool[1 * SS + i] == 1e3f && pool[2 * SS + i] == 1e3f;
    CHECK(untouched, "decode: unused slots 1 and 2 are untouched");
    {
        double *o64 = malloc(in.nv * 8), *ht64 = malloc(in.ns * 8);
        rc = ref_run(&c, &in, o64, ht64);
        double e1 = rel_rmse_f32_f64(o_dec, o64, in.nv), e2 = rel_rmse_f32_f64(ht_dec, ht64, in.ns);
        CHECK(rc == 0 && e1 <= 1e-5 && e2 <= 1e-5, "decode vs float64: rel RMSE o %.2e ht %.2e (bar 1e-5)", e1, e2);
        free(o64); free(ht64);
    }

    /* bad slot arrays: clear error, pool untouched */
    float *copy = falloc(NSLOT * SS);
    memcpy(copy, pool, NSLOT * SS * sizeof(float));
    for (int r = 0; r < NROW; r++) {
        const int64_t tok = r;
        memcpy(bq + r * SK, in.q + tok * SK, SK * 4); memcpy(bk + r * SK, in.k + tok * SK, SK * 4);
        memcpy(bg + r * SK, in.g + tok * SK, SK * 4); memcpy(bb + r * SK, in.b + tok * SK, SK * 4);
        memcpy(bv + r * SV, in.v + tok * SV, SV * 4); memcpy(bw + r * SV, in.w + tok * SV, SV * 4);
    }
    gdn2_decode_tensors dt = {bq, bk, bv, bg, bb, bw, in.A_log, in.dt_bias, bo, pool, NSLOT, slots, GDN2_STATE_F32};
    int32_t dup[NROW] = {0, 2, 0, 1}, big[NROW] = {0, 1, 5, 2};
    dt.slots = dup;
    rc = gdn2_decode_step(&dd, &od, &dt);
    CHECK(rc == GDN2_ERR_ARG && !memcmp(copy, pool, NSLOT * SS * sizeof(float)),
          "decode: duplicate slot rejected, pool untouched: %s", gdn2_last_error());
    dt.slots = big;
    rc = gdn2_decode_step(&dd, &od, &dt);
    CHECK(rc == GDN2_ERR_ARG && !memcmp(copy, pool, NSLOT * SS * sizeof(float)),
          "decode: slot >= n_slots rejected, pool untouched: %s", gdn2_last_error());
    dt.slots = slots;
    dt.A_log = NULL;
    slots[0] = 0; slots[1] = 1; slots[2] = 2; slots[3] = 3;
    {   /* absent A_log = zero: the same step as with an all-zero A_log */
        float *after = falloc(NSLOT * SS), zal[64] = {0};
        memcpy(copy, pool, NSLOT * SS * sizeof(float));
        rc = gdn2_decode_step(&dd, &od, &dt);
        memcpy(after, pool, NSLOT * SS * sizeof(float));
        memcpy(pool, copy, NSLOT * SS * sizeof(float));
        dt.A_log = zal;
        int rc2 = gdn2_decode_step(&dd, &od, &dt);
        CHECK(rc == 0 && rc2 == 0 && !memcmp(after, pool, NSLOT * SS * sizeof(float)),
              "decode: gate_in_kernel without A_log = with A_log zero: %d %d %s", rc, rc2, rc ? gdn2_last_error() : "");
        memcpy(pool, copy, NSLOT * SS * sizeof(float));
        dt.A_log = NULL;
        free(after);
    }

    /* bf16 state pool: one step must be exactly "widen, the fp32 step, round to nearest even" */
    {
        uint16_t *p16 = malloc(NSLOT * SS * sizeof(uint16_t));
        float *pw = falloc(NSLOT * SS), *o16 = falloc(NROW * SV), *ow = falloc(NROW * SV);
        for (int64_t i = 0; i < NSLOT * SS; i++) {
            p16[i] = bf16_bits(copy[i] * (i % 3 == 0 ? 1e-3f : 0.37f)); /* varied magnitudes */
            pw[i] = bf16_value(p16[i]);
        }
        dt.A_log = in.A_log;
        gdn2_decode_tensors tw = dt, tb = dt;
        tw.state_pool = pw;
        tw.o = ow;
        tb.state_pool = p16;
        tb.o = o16;
        tb.state_dtype = GDN2_STATE_BF16;
        int rw = gdn2_decode_step(&dd, &od, &tw), rb = gdn2_decode_step(&dd, &od, &tb);
        int same_state = 1;
        for (int64_t i = 0; i < NSLOT * SS; i++) same_state &= p16[i] == bf16_bits(pw[i]);
        CHECK(rw == 0 && rb == 0 && !memcmp(o16, ow, NROW * SV * sizeof(float)) && same_state,
              "decode, bf16 state: o equals the fp32 step on the widened state, state = its rounding (%s)",
              rb ? gdn2_last_error() : "ok");
        tb.state_dtype = 7;
        CHECK(gdn2_decode_step(&dd, &od, &tb) == GDN2_ERR_ARG, "decode: state_dtype=7 rejected: %s", gdn2_last_error());
        free(p16); free(pw); free(o16); free(ow);
    }

    free(copy); free(pool); free(o_dec); free(ht_dec); free(o_rec); free(ht_rec);
    free(bq); free(bk); free(bg); free(bb); free(bv); free(bw); free(bo);
    inputs_free(&in);
}

/* ---- official fixtures: recurrent fwd vs ref64_* and the official fused_recurrent_gdn2 ------- */
static float *get32(const gdn2_st *st, const char *name) {
    const gdn2_tensor *tn = gdn2_st_find(st, name);
    if (!tn) return NULL;
    int64_t shape[GDN2_MAX_DIMS];
    for (int i = 0; i < GDN2_MAX_DIMS; i++) shape[i] = -1;
    float *x = NULL;
    if (gdn2_st_get_f32(st, name, 1, tn->ndim, shape, &x) != GDN2_OK) return NULL;
    return x;
}

static void test_fixture(const char *file) {
    gdn2_st st;
    if (!fixture_read(file, &st)) return;
    const gdn2_tensor *tq = gdn2_st_find(&st, "q"), *tv = gdn2_st_find(&st, "v");
    if (!tq || !tv || tq->ndim != 4 || tv->ndim != 4) {
        CHECK(0, "fixture %s: q and v present", file);
        gdn2_st_free(&st);
        return;
    }
    gdn2_dims d = {tq->shape[0], tq->shape[1], tq->shape[2], tv->shape[2], tq->shape[3], tv->shape[3]};
    gdn2_opts op;
    fixture_opts(&st, &op);
    int rc;
    const int64_t nv = d.B * d.T * d.HV * d.V, ns = d.B * d.HV * d.K * d.V;
    float *q = get32(&st, "q"), *k = get32(&st, "k"), *v = get32(&st, "v"), *g = get32(&st, "g"), *b = get32(&st, "b");
    float *w = get32(&st, "w"), *h0 = get32(&st, "h0"), *A = get32(&st, "A_log"), *dtb = get32(&st, "dt_bias");
    float *r64o = get32(&st, "ref64_o"), *r64h = get32(&st, "ref64_ht"), *ro = get32(&st, "recurrent_o");
    float *rh = get32(&st, "recurrent_ht");
    float *o = falloc(nv), *ht = falloc(ns);
    gdn2_fwd_tensors t = {q, k, v, g, b, w, h0, A, dtb, o, ht};
    rc = (q && k && v && g && b && w && r64o && r64h && ro && rh) ? gdn2_recurrent_fwd(&d, &op, &t) : GDN2_ERR_FORMAT;
    CHECK(rc == GDN2_OK, "fixture %s: recurrent forward runs%s%s", file, rc ? ": " : "", rc ? gdn2_last_error() : "");
    if (!rc) {
        double e1 = rel_rmse_f32(o, r64o, nv), e2 = rel_rmse_f32(ht, r64h, ns);
        CHECK(e1 <= 1e-5 && e2 <= 1e-5, "fixture %s: recurrent vs ref64: rel RMSE o %.2e ht %.2e (bar 1e-5)", file, e1, e2);
        e1 = rel_rmse_f32(o, ro, nv);
        e2 = rel_rmse_f32(ht, rh, ns);
        CHECK(e1 <= 1e-4 && e2 <= 1e-4,
              "fixture %s: recurrent vs official fused_recurrent_gdn2: rel RMSE o %.2e ht %.2e (bar 1e-4)", file, e1, e2);
    }
    free(q); free(k); free(v); free(g); free(b); free(w); free(h0); free(A); free(dtb);
    free(r64o); free(r64h); free(ro); free(rh); free(o); free(ht);
    gdn2_st_free(&st);
}

static void test_errors(void) {
    gdn2_dims d = {1, 3, 2, 2, 4, 4};
    gdn2_opts o = {0};
    float x[64] = {0};
    gdn2_fwd_tensors t = {x, x, x, x, x, NULL, NULL, NULL, NULL, x, NULL};
    int rc = gdn2_recurrent_fwd(&d, &o, &t);
    CHECK(rc == GDN2_ERR_ARG, "recurrent: NULL w rejected: %s", gdn2_last_error());
    t.w = x;
    int64_t cu[3] = {0, 2, 1};
    o.cu_seqlens = cu;
    o.n_seqs = 2;
    rc = gdn2_recurrent_fwd(&d, &o, &t);
    CHECK(rc == GDN2_ERR_ARG, "recurrent: decreasing cu_seqlens rejected: %s", gdn2_last_error());
    /* T = 0: ht = h0 */
    gdn2_dims d0 = {1, 0, 1, 1, 4, 4};
    gdn2_opts o0 = {0};
    float h0[16], ht[16];
    for (int i = 0; i < 16; i++) h0[i] = (float)i;
    gdn2_fwd_tensors t0 = {x, x, x, x, x, x, h0, NULL, NULL, x, ht};
    rc = gdn2_recurrent_fwd(&d0, &o0, &t0);
    CHECK(rc == GDN2_OK && !memcmp(h0, ht, sizeof h0), "recurrent: T=0 gives ht = h0");
}

int main(void) {
    cfg C[] = {
        {.d = {1, 1, 2, 2, 16, 16}, .use_h0 = 1},
        {.d = {2, 15, 2, 4, 16, 64}, .o = {.qk_l2norm = 1}},
        {.d = {1, 63, 1, 1, 64, 16}, .o = {.gate_in_kernel = 1}, .use_h0 = 1},
        {.d = {2, 64, 2, 2, 64, 64}, .o = {.qk_l2norm = 1, .gate_in_kernel = 1}, .use_h0 = 1},
        {.d = {1, 65, 2, 4, 128, 64}, .o = {.qk_l2norm = 1, .gate_in_kernel = 1, .lower_bound = -5.0f}, .use_h0 = 1},
        {.d = {1, 200, 2, 2, 64, 128}, .o = {.qk_l2norm = 1, .gate_in_kernel = 1}, .use_h0 = 1},
        {.d = {3, 200, 1, 2, 128, 16}, .o = {.scale = 0.3f}},
        {.d = {1, 1000, 2, 4, 64, 64}, .o = {.qk_l2norm = 1, .gate_in_kernel = 1}, .use_h0 = 1},
        {.d = {1, 1000, 1, 1, 128, 128}, .o = {.qk_l2norm = 1}, .use_h0 = 1},
        {.d = {1, 194, 2, 4, 64, 32}, .o = {.qk_l2norm = 1, .gate_in_kernel = 1, .n_seqs = 3}, .cu = {0, 1, 65, 194},
         .use_h0 = 1},
        {.d = {1, 194, 1, 1, 16, 128}, .o = {.gate_in_kernel = 1, .lower_bound = -1.0f, .n_seqs = 3},
         .cu = {0, 1, 65, 194}},
        {.d = {1, 194, 2, 2, 128, 128}, .o = {.qk_l2norm = 1, .n_seqs = 3}, .cu = {0, 129, 193, 194}, .use_h0 = 1},
        /* stability */
        {.d = {1, 300, 2, 4, 32, 32}, .use_h0 = 1, .kind = 1},
        {.d = {1, 300, 2, 2, 64, 16}, .o = {.qk_l2norm = 1}, .kind = 1},
        {.d = {1, 300, 1, 2, 32, 32}, .o = {.qk_l2norm = 1, .gate_in_kernel = 1}, .use_h0 = 1, .kind = 1},
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) test_vs_ref(&C[i], 100 + i);
    test_decode();
    test_errors();
    test_fixture("op_small.safetensors");
    test_fixture("op_gate_in_kernel.safetensors");
    test_fixture("op_gva.safetensors");
    return test_summary();
}
