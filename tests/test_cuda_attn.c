/* CUDA attention (src/cuda/attn.cu: RoPE split and its VJP, flash-attention forward and backward,
 * bf16) against a float64 reference written here, on inputs rounded to bf16 (round to nearest even)
 * so that both sides see the same values. Bars (relative RMSE vs the float64 reference):
 *   o <= 1e-2 (bf16 output), lse <= 1e-4, dq, dk, dv <= 2e-2 (the GPU's D = rowsum(dO o) uses its
 *   bf16 o, the reference its float64 o); RoPE split and VJP <= 1e-2, the v part bit-exact;
 *   backward run twice bit-identical (determinism).
 * The reference itself is checked first against the CPU layer (gdn2_attn_forward / _backward of
 * src/model/attention.c with identity projections): that part runs on any machine. Every GPU
 * check is SKIP_NO_GPU without a device (and without CUDA built in). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "util/internal.h"
#include "cuda/attn.h"
#include "gdn2_cuda.h"
#include "gdn2_error.h"
#include "model/model_internal.h"

/* bf16 on the host: src/util/internal.h's conversions (round to nearest even, NaN kept) */
#define f2bf gdn2_f32_to_bf16
#define bf2f gdn2_bf16_to_f32

typedef struct {
    int64_t B, T, nh, ng, hs, W;
} ashape;

static const float ROPE_BASE = 10000.0f;

/* n values ~ N(0, sd) rounded to bf16: x (as double) and the bf16 bits h (either may be NULL) */
static void gen_bf(int64_t n, unsigned long long *s, double sd, double *x, uint16_t *h) {
    for (int64_t i = 0; i < n; i++) {
        uint16_t b = f2bf((float)(sd * test_normal(s)));
        if (x) x[i] = bf2f(b);
        if (h) h[i] = b;
    }
}
static double *dalloc(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(double)); }
static float *falloc(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(float)); }
static uint16_t *halloc(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(uint16_t)); }
static void bf_to_f(const uint16_t *h, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = bf2f(h[i]);
}

/* ---- float64 reference ------------------------------------------------------------------- */
/* the angles exactly as rope_cs of src/model/attention.c (fp32), then used in float64 */
static void ref_cs(int64_t t, int64_t hs, double *c, double *s) {
    for (int64_t i = 0; i < hs / 2; i++) {
        float th = 1.0f / powf(ROPE_BASE, (float)(2 * i) / (float)hs);
        float ang = (float)t * th;
        c[i] = cosf(ang);
        s[i] = sinf(ang);
    }
}
/* qkv [B*T, (nh+2ng)hs] (per group [q x nh/ng, k, v]) -> q [B,nh,T,hs], k, v [B,ng,T,hs] */
static void ref_rope_split(const ashape *a, const double *qkv, double *q, double *k, double *v) {
    const int64_t nh = a->nh, ng = a->ng, hs = a->hs, T = a->T, qpk = nh / ng, h2 = hs / 2, ns = nh + 2 * ng;
    double c[64], s[64];
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t t = 0; t < T; t++) {
            ref_cs(t, hs, c, s);
            const double *row = qkv + (b * T + t) * ns * hs;
            for (int64_t g = 0; g < ng; g++)
                for (int64_t j = 0; j < qpk + 2; j++) {
                    const double *x = row + (g * (qpk + 2) + j) * hs;
                    double *y = j < qpk ? q + ((b * nh + g * qpk + j) * T + t) * hs
                                : j == qpk ? k + ((b * ng + g) * T + t) * hs
                                           : v + ((b * ng + g) * T + t) * hs;
                    for (int64_t i = 0; i < h2; i++) {
                        if (j == qpk + 1) {
                            y[i] = x[i], y[i + h2] = x[i + h2];
                        } else {
                            y[i] = x[i] * c[i] - x[i + h2] * s[i];
                            y[i + h2] = x[i + h2] * c[i] + x[i] * s[i];
                        }
                    }
                }
        }
}
static void ref_rope_split_bwd(const ashape *a, const double *dq, const double *dk, const double *dv, double *dqkv) {
    const int64_t nh = a->nh, ng = a->ng, hs = a->hs, T = a->T, qpk = nh / ng, h2 = hs / 2, ns = nh + 2 * ng;
    double c[64], s[64];
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t t = 0; t < T; t++) {
            ref_cs(t, hs, c, s);
            double *row = dqkv + (b * T + t) * ns * hs;
            for (int64_t g = 0; g < ng; g++)
                for (int64_t j = 0; j < qpk + 2; j++) {
                    double *x = row + (g * (qpk + 2) + j) * hs;
                    const double *y = j < qpk ? dq + ((b * nh + g * qpk + j) * T + t) * hs
                                      : j == qpk ? dk + ((b * ng + g) * T + t) * hs
                                                 : dv + ((b * ng + g) * T + t) * hs;
                    for (int64_t i = 0; i < h2; i++) {
                        if (j == qpk + 1) {
                            x[i] = y[i], x[i + h2] = y[i + h2];
                        } else {
                            x[i] = y[i] * c[i] + y[i + h2] * s[i];
                            x[i + h2] = y[i + h2] * c[i] - y[i] * s[i];
                        }
                    }
                }
        }
}
static double ddot(const double *x, const double *y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}
static int64_t first_key(const ashape *a, int64_t t) { return a->W > 0 && t - a->W + 1 > 0 ? t - a->W + 1 : 0; }
static double ref_scale(int64_t hs) { return (double)(1.0f / sqrtf((float)hs)); } /* fp32, as both sides */

/* o [B,T,nh*hs], lse [B,nh,T] (natural log of sum_j exp(scale q.k_j)) */
static void ref_fwd(const ashape *a, const double *q, const double *k, const double *v, double *o, double *lse) {
    const int64_t nh = a->nh, ng = a->ng, hs = a->hs, T = a->T, qpk = nh / ng;
    const double sc = ref_scale(hs);
    double *srow = dalloc(T);
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t t = 0; t < T; t++) {
                const int64_t g = h / qpk, j0 = first_key(a, t);
                const double *qt = q + ((b * nh + h) * T + t) * hs, *kb = k + (b * ng + g) * T * hs,
                             *vb = v + (b * ng + g) * T * hs;
                double mx = -INFINITY, l = 0;
                for (int64_t j = j0; j <= t; j++) {
                    srow[j] = sc * ddot(qt, kb + j * hs, hs);
                    if (srow[j] > mx) mx = srow[j];
                }
                for (int64_t j = j0; j <= t; j++) l += (srow[j] = exp(srow[j] - mx));
                double *ot = o + ((b * T + t) * nh + h) * hs;
                for (int64_t i = 0; i < hs; i++) ot[i] = 0;
                for (int64_t j = j0; j <= t; j++)
                    for (int64_t i = 0; i < hs; i++) ot[i] += srow[j] / l * vb[j * hs + i];
                lse[(b * nh + h) * T + t] = mx + log(l);
            }
    free(srow);
}
/* dq [B,nh,T,hs], dk, dv [B,ng,T,hs] (accumulated into zeroed arrays); dO, o [B,T,nh*hs] */
static void ref_bwd(const ashape *a, const double *q, const double *k, const double *v, const double *o,
                    const double *lse, const double *dO, double *dq, double *dk, double *dv) {
    const int64_t nh = a->nh, ng = a->ng, hs = a->hs, T = a->T, qpk = nh / ng;
    const double sc = ref_scale(hs);
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t t = 0; t < T; t++) {
                const int64_t g = h / qpk, j0 = first_key(a, t), r = (b * nh + h) * T + t;
                const double *qt = q + r * hs, *kb = k + (b * ng + g) * T * hs, *vb = v + (b * ng + g) * T * hs;
                const double *dot = dO + ((b * T + t) * nh + h) * hs, *ot = o + ((b * T + t) * nh + h) * hs;
                double *dqt = dq + r * hs, *dkb = dk + (b * ng + g) * T * hs, *dvb = dv + (b * ng + g) * T * hs;
                const double D = ddot(dot, ot, hs);
                for (int64_t j = j0; j <= t; j++) {
                    const double p = exp(sc * ddot(qt, kb + j * hs, hs) - lse[r]);
                    const double ds = p * (ddot(dot, vb + j * hs, hs) - D);
                    for (int64_t i = 0; i < hs; i++) {
                        dqt[i] += sc * ds * kb[j * hs + i];
                        dkb[j * hs + i] += sc * ds * qt[i];
                        dvb[j * hs + i] += p * dot[i];
                    }
                }
            }
}

static double rel_f(const float *x, const double *ref, int64_t n) { return rel_rmse_f32_f64(x, ref, (size_t)n); }

/* ---- the reference against the CPU layer (identity projections), any machine ---------------- */
static void cpu_crosscheck(const ashape *a, unsigned long long seed) {
    const int64_t nh = a->nh, ng = a->ng, hs = a->hs, BT = a->B * a->T, C = nh * hs, d = (nh + 2 * ng) * hs;
    gdn2_attn_cfg cfg = {d, nh, ng, hs, a->W, ROPE_BASE, 0};
    unsigned long long s = seed;
    float *wqkv = falloc(d * d), *wproj = falloc(d * C), *x = falloc(BT * d), *y = falloc(BT * d);
    gdn2_backend cpu;
    gdn2_backend_cpu_init(&cpu, 2);
    float *acts = falloc((int64_t)(gdn2_attn_act_bytes(&cpu, &cfg, a->B, a->T) / sizeof(float)) + 1);
    float *ascr = falloc((int64_t)(gdn2_attn_scratch_bytes(&cpu, &cfg, a->B, a->T, 1) / sizeof(float)) + 1);
    float *dy = falloc(BT * d), *dx = falloc(BT * d), *dwq = falloc(d * d), *dwp = falloc(d * C);
    double *xd = dalloc(BT * d), *dOd = dalloc(BT * C);
    const int64_t nq = BT * C, nk = BT * ng * hs;
    double *q = dalloc(nq), *k = dalloc(nk), *v = dalloc(nk), *o = dalloc(nq), *lse = dalloc(a->B * nh * a->T);
    double *dq = dalloc(nq), *dk = dalloc(nk), *dv = dalloc(nk), *dqkv = dalloc(BT * d);
    for (int64_t i = 0; i < d; i++) wqkv[i * d + i] = 1.0f;
    for (int64_t i = 0; i < C; i++) wproj[i * C + i] = 1.0f;
    gen_bf(BT * d, &s, 1.0, xd, NULL);
    for (int64_t i = 0; i < BT * d; i++) x[i] = (float)xd[i];
    gen_bf(BT * C, &s, 1.0, dOd, NULL);
    for (int64_t r = 0; r < BT; r++)
        for (int64_t i = 0; i < C; i++) dy[r * d + i] = (float)dOd[r * C + i];
    char nm[96];
    snprintf(nm, sizeof nm, "B%lld T%lld nh%lld ng%lld hs%lld W%lld", (long long)a->B, (long long)a->T, (long long)nh,
             (long long)ng, (long long)hs, (long long)a->W);
    int rc = gdn2_attn_forward(&cpu, &cfg, wqkv, wproj, x, a->B, a->T, y, acts, ascr);
    int rc2 = rc ? rc : gdn2_attn_backward(&cpu, &cfg, wqkv, wproj, x, a->B, a->T, acts, dy, dx, dwq, dwp, 1, ascr);
    CHECK(rc == 0 && rc2 == 0, "reference vs CPU layer %s: CPU forward/backward ran (%s)", nm, gdn2_last_error());
    if (!rc && !rc2) {
        ref_rope_split(a, xd, q, k, v);
        ref_fwd(a, q, k, v, o, lse);
        ref_bwd(a, q, k, v, o, lse, dOd, dq, dk, dv);
        ref_rope_split_bwd(a, dq, dk, dv, dqkv);
        const float *aq = acts, *ak = aq + nq, *av = ak + nk, *ao = av + nk, *al = ao + nq;
        double eq = rel_f(aq, q, nq), ek = rel_f(ak, k, nk), ev = rel_f(av, v, nk), eo = rel_f(ao, o, nq);
        double el = rel_f(al, lse, a->B * nh * a->T), ex = rel_f(dx, dqkv, BT * d);
        CHECK(eq <= 1e-6 && ek <= 1e-6 && ev == 0 && eo <= 1e-5 && el <= 1e-5 && ex <= 1e-4,
              "reference vs CPU layer %s: q %.1e k %.1e v %.1e (<= 1e-6, v 0) o %.1e lse %.1e (<= 1e-5) dqkv %.1e "
              "(<= 1e-4)",
              nm, eq, ek, ev, eo, el, ex);
    }
    free(wqkv), free(wproj), free(x), free(y), free(acts), free(ascr), free(dy), free(dx), free(dwq), free(dwp);
    free(xd), free(dOd), free(q), free(k), free(v), free(o), free(lse), free(dq), free(dk), free(dv), free(dqkv);
}

/* ---- GPU --------------------------------------------------------------------------------- */
static void *up(const void *h, size_t bytes) {
    void *p = gdn2_cuda_malloc(bytes ? bytes : 16);
    if (p && bytes && gdn2_cuda_memcpy(p, h, bytes, GDN2_CUDA_H2D)) {
        gdn2_cuda_free(p);
        return NULL;
    }
    return p;
}
static int down(void *h, const void *p, size_t bytes) { return gdn2_cuda_memcpy(h, p, bytes, GDN2_CUDA_D2H); }
static gdn2_cuda_attn_shape shape_of(const ashape *a) {
    gdn2_cuda_attn_shape s = {a->B, a->T, a->nh, a->ng, a->hs, a->W, ROPE_BASE, 0};
    return s;
}

static void rope_case(const ashape *a, unsigned long long seed) {
    const int64_t nh = a->nh, ng = a->ng, hs = a->hs, BT = a->B * a->T, ns = nh + 2 * ng, qpk = nh / ng;
    const int64_t nx = BT * ns * hs, nq = BT * nh * hs, nk = BT * ng * hs;
    unsigned long long s = seed;
    gdn2_cuda_attn_shape sh = shape_of(a);
    double *x = dalloc(nx), *q = dalloc(nq), *k = dalloc(nk), *v = dalloc(nk);
    double *gq = dalloc(nq), *gk = dalloc(nk), *gv = dalloc(nk), *gx = dalloc(nx);
    uint16_t *hx = halloc(nx), *hq = halloc(nq), *hk = halloc(nk), *hv = halloc(nk);
    float *fq = falloc(nq), *fk = falloc(nk), *fx = falloc(nx);
    gen_bf(nx, &s, 1.0, x, hx);
    char nm[96];
    snprintf(nm, sizeof nm, "rope B%lld T%lld nh%lld ng%lld hs%lld", (long long)a->B, (long long)a->T, (long long)nh,
             (long long)ng, (long long)hs);
    /* forward */
    void *dx = up(hx, nx * 2), *dq = up(hq, nq * 2), *dk = up(hk, nk * 2), *dv = up(hv, nk * 2);
    int rc = dx && dq && dk && dv ? gdn2_cuda_rope_split(&sh, dx, dq, dk, dv, NULL) : GDN2_ERR_DEVICE;
    if (!rc) rc = gdn2_cuda_sync();
    if (!rc) rc = down(hq, dq, nq * 2) || down(hk, dk, nk * 2) || down(hv, dv, nk * 2);
    CHECK(rc == 0, "%s: split ran (%s)", nm, gdn2_last_error());
    if (!rc) {
        ref_rope_split(a, x, q, k, v);
        bf_to_f(hq, fq, nq);
        bf_to_f(hk, fk, nk);
        int vex = 1;
        for (int64_t i = 0; i < nk; i++) vex &= (double)bf2f(hv[i]) == v[i];
        double eq = rel_f(fq, q, nq), ek = rel_f(fk, k, nk);
        CHECK(eq <= 1e-2 && ek <= 1e-2 && vex, "%s: split q %.1e k %.1e (<= 1e-2), v exact %s", nm, eq, ek,
              vex ? "yes" : "NO");
    }
    /* VJP */
    gen_bf(nq, &s, 1.0, gq, hq);
    gen_bf(nk, &s, 1.0, gk, hk);
    gen_bf(nk, &s, 1.0, gv, hv);
    rc = gdn2_cuda_memcpy(dq, hq, nq * 2, GDN2_CUDA_H2D) || gdn2_cuda_memcpy(dk, hk, nk * 2, GDN2_CUDA_H2D) ||
         gdn2_cuda_memcpy(dv, hv, nk * 2, GDN2_CUDA_H2D);
    if (!rc) rc = gdn2_cuda_rope_split_bwd(&sh, dq, dk, dv, dx, NULL);
    if (!rc) rc = gdn2_cuda_sync();
    if (!rc) rc = down(hx, dx, nx * 2);
    CHECK(rc == 0, "%s: split VJP ran (%s)", nm, gdn2_last_error());
    if (!rc) {
        ref_rope_split_bwd(a, gq, gk, gv, gx);
        bf_to_f(hx, fx, nx);
        int vex = 1;
        for (int64_t r = 0; r < BT; r++)
            for (int64_t g = 0; g < ng; g++)
                for (int64_t i = 0; i < hs; i++) {
                    int64_t o = (r * ns + g * (qpk + 2) + qpk + 1) * hs + i;
                    vex &= (double)fx[o] == gx[o];
                }
        double e = rel_f(fx, gx, nx);
        CHECK(e <= 1e-2 && vex, "%s: VJP dqkv %.1e (<= 1e-2), dv part exact %s", nm, e, vex ? "yes" : "NO");
    }
    gdn2_cuda_free(dx), gdn2_cuda_free(dq), gdn2_cuda_free(dk), gdn2_cuda_free(dv);
    free(x), free(q), free(k), free(v), free(gq), free(gk), free(gv), free(gx);
    free(hx), free(hq), free(hk), free(hv), free(fq), free(fk), free(fx);
}

static void attn_case(const ashape *a, unsigned long long seed) {
    const int64_t nh = a->nh, ng = a->ng, hs = a->hs, T = a->T;
    const int64_t nq = a->B * nh * T * hs, nk = a->B * ng * T * hs, nl = a->B * nh * T;
    unsigned long long s = seed;
    gdn2_cuda_attn_shape sh = shape_of(a);
    double *q = dalloc(nq), *k = dalloc(nk), *v = dalloc(nk), *dO = dalloc(nq), *o = dalloc(nq), *lse = dalloc(nl);
    double *dq = dalloc(nq), *dk = dalloc(nk), *dv = dalloc(nk);
    uint16_t *hq = halloc(nq), *hk = halloc(nk), *hv = halloc(nk), *hdO = halloc(nq), *ho = halloc(nq);
    uint16_t *g1[3] = {halloc(nq), halloc(nk), halloc(nk)}, *g2[3] = {halloc(nq), halloc(nk), halloc(nk)};
    float *fo = falloc(nq), *flse = falloc(nl), *fg = falloc(nq);
    gen_bf(nq, &s, 1.0, q, hq);
    gen_bf(nk, &s, 1.0, k, hk);
    gen_bf(nk, &s, 1.0, v, hv);
    gen_bf(nq, &s, 1.0, dO, hdO);
    char nm[96];
    snprintf(nm, sizeof nm, "attn B%lld T%lld nh%lld ng%lld hs%lld W%lld", (long long)a->B, (long long)T,
             (long long)nh, (long long)ng, (long long)hs, (long long)a->W);
    void *dq_ = up(hq, nq * 2), *dk_ = up(hk, nk * 2), *dv_ = up(hv, nk * 2), *ddO = up(hdO, nq * 2);
    void *dout = gdn2_cuda_malloc(nq * 2), *dlse = gdn2_cuda_malloc(nl * 4);
    void *d1[3] = {gdn2_cuda_malloc(nq * 2), gdn2_cuda_malloc(nk * 2), gdn2_cuda_malloc(nk * 2)};
    void *d2[3] = {gdn2_cuda_malloc(nq * 2), gdn2_cuda_malloc(nk * 2), gdn2_cuda_malloc(nk * 2)};
    int rc = dq_ && dk_ && dv_ && ddO && dout && dlse && d1[0] && d1[1] && d1[2] && d2[0] && d2[1] && d2[2]
                 ? GDN2_OK
                 : GDN2_ERR_DEVICE;
    if (!rc) rc = gdn2_cuda_attn_fwd(&sh, dq_, dk_, dv_, dout, (float *)dlse, NULL);
    if (!rc) rc = gdn2_cuda_sync();
    if (!rc) rc = down(ho, dout, nq * 2) || down(flse, dlse, nl * 4);
    CHECK(rc == 0, "%s: forward ran (%s)", nm, gdn2_last_error());
    if (rc) goto out;
    ref_fwd(a, q, k, v, o, lse);
    bf_to_f(ho, fo, nq);
    {
        double eo = rel_f(fo, o, nq), el = rel_f(flse, lse, nl);
        CHECK(eo <= 1e-2 && el <= 1e-4, "%s: o %.1e (<= 1e-2) lse %.1e (<= 1e-4)", nm, eo, el);
    }
    rc = gdn2_cuda_attn_bwd(&sh, dq_, dk_, dv_, dout, (const float *)dlse, ddO, d1[0], d1[1], d1[2], NULL);
    if (!rc) rc = gdn2_cuda_attn_bwd(&sh, dq_, dk_, dv_, dout, (const float *)dlse, ddO, d2[0], d2[1], d2[2], NULL);
    if (!rc) rc = gdn2_cuda_sync();
    for (int i = 0; i < 3 && !rc; i++) {
        size_t n = (size_t)(i ? nk : nq) * 2;
        rc = down(g1[i], d1[i], n) || down(g2[i], d2[i], n);
    }
    CHECK(rc == 0, "%s: backward ran (%s)", nm, gdn2_last_error());
    if (rc) goto out;
    ref_bwd(a, q, k, v, o, lse, dO, dq, dk, dv);
    {
        double e[3];
        const double *ref[3] = {dq, dk, dv};
        for (int i = 0; i < 3; i++) {
            int64_t n = i ? nk : nq;
            bf_to_f(g1[i], fg, n);
            e[i] = rel_f(fg, ref[i], n);
        }
        CHECK(e[0] <= 2e-2 && e[1] <= 2e-2 && e[2] <= 2e-2, "%s: dq %.1e dk %.1e dv %.1e (<= 2e-2)", nm, e[0], e[1],
              e[2]);
        int same = !memcmp(g1[0], g2[0], nq * 2) && !memcmp(g1[1], g2[1], nk * 2) && !memcmp(g1[2], g2[2], nk * 2);
        CHECK(same, "%s: backward twice bit-identical", nm);
    }
out:
    gdn2_cuda_free(dq_), gdn2_cuda_free(dk_), gdn2_cuda_free(dv_), gdn2_cuda_free(ddO), gdn2_cuda_free(dout);
    gdn2_cuda_free(dlse);
    for (int i = 0; i < 3; i++) gdn2_cuda_free(d1[i]), gdn2_cuda_free(d2[i]), free(g1[i]), free(g2[i]);
    free(q), free(k), free(v), free(dO), free(o), free(lse), free(dq), free(dk), free(dv);
    free(hq), free(hk), free(hv), free(hdO), free(ho), free(fo), free(flse), free(fg);
}

/* bad shapes are GDN2_ERR_ARG naming the argument (checked before any device work, so this also runs
 * in a CUDA build without a device; a build without CUDA answers UNSUPPORTED: skipped) */
static void arg_checks(void) {
    struct {
        gdn2_cuda_attn_shape s;
        const char *word;
    } bad[] = {
        {{1, 16, 4, 2, 96, 0, 10000.0f, 0}, "hs"},
        {{1, 16, 4, 3, 64, 0, 10000.0f, 0}, "n_groups"},
        {{1, 0, 4, 2, 64, 0, 10000.0f, 0}, "T = 0"},
        {{0, 16, 4, 2, 64, 0, 10000.0f, 0}, "B = 0"},
        {{1, 16, 4, 2, 64, -1, 10000.0f, 0}, "window"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const gdn2_cuda_attn_shape *s = &bad[i].s;
        int r[4];
        r[0] = gdn2_cuda_attn_fwd(s, NULL, NULL, NULL, NULL, NULL, NULL);
        char m0[256];
        snprintf(m0, sizeof m0, "%s", gdn2_last_error());
        r[1] = gdn2_cuda_attn_bwd(s, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
        r[2] = gdn2_cuda_rope_split(s, NULL, NULL, NULL, NULL, NULL);
        r[3] = gdn2_cuda_rope_split_bwd(s, NULL, NULL, NULL, NULL, NULL);
        if (r[0] == GDN2_ERR_UNSUPPORTED) {
            SKIP_NO_GPU("bad shape '%s': %s", bad[i].word, m0);
            continue;
        }
        CHECK(r[0] == GDN2_ERR_ARG && r[1] == GDN2_ERR_ARG && r[2] == GDN2_ERR_ARG && r[3] == GDN2_ERR_ARG &&
                  contains(m0, bad[i].word) && contains(gdn2_last_error(), bad[i].word),
              "bad shape rejected naming '%s': %s", bad[i].word, m0);
    }
}

/* timing at the training shape (printed, not checked) */
static void bench(int64_t B, int64_t nh, int64_t ng, int64_t T, int64_t hs, int64_t W) {
    const int64_t nq = B * nh * T * hs, nk = B * ng * T * hs;
    unsigned long long s = 7;
    uint16_t *h = halloc(nq);
    gen_bf(nq, &s, 1.0, NULL, h);
    ashape a = {B, T, nh, ng, hs, W};
    gdn2_cuda_attn_shape sh = shape_of(&a);
    void *q = up(h, nq * 2), *k = up(h, nk * 2), *v = up(h + (nq - nk), nk * 2), *o = gdn2_cuda_malloc(nq * 2);
    void *dO = up(h, nq * 2), *dq = gdn2_cuda_malloc(nq * 2), *dk = gdn2_cuda_malloc(nk * 2);
    void *dv = gdn2_cuda_malloc(nk * 2), *lse = gdn2_cuda_malloc(B * nh * T * 4);
    int rc = q && k && v && o && dO && dq && dk && dv && lse ? 0 : GDN2_ERR_DEVICE;
    double tf = -1, tb = -1;
    const int it = 10;
    if (!rc) rc = gdn2_cuda_attn_fwd(&sh, q, k, v, o, lse, NULL) || gdn2_cuda_sync();
    if (!rc && !gdn2_cuda_timer_start()) {
        for (int i = 0; i < it && !rc; i++) rc = gdn2_cuda_attn_fwd(&sh, q, k, v, o, lse, NULL);
        tf = gdn2_cuda_timer_stop() / it;
    }
    if (!rc) rc = gdn2_cuda_attn_bwd(&sh, q, k, v, o, lse, dO, dq, dk, dv, NULL) || gdn2_cuda_sync();
    if (!rc && !gdn2_cuda_timer_start()) {
        for (int i = 0; i < it && !rc; i++) rc = gdn2_cuda_attn_bwd(&sh, q, k, v, o, lse, dO, dq, dk, dv, NULL);
        tb = gdn2_cuda_timer_stop() / it;
    }
    /* matmul flops over the visible (causal / window) pairs: fwd 4 hs per pair, bwd 10 hs (FA convention) */
    double pairs = 0;
    for (int64_t t = 0; t < T; t++) pairs += (double)(t - first_key(&a, t) + 1);
    pairs *= (double)B * nh;
    CHECK(rc == 0, "bench B%lld nh%lld ng%lld T%lld hs%lld W%lld ran: fwd %.3f ms (%.0f TFLOP/s), bwd %.3f ms "
                   "(%.0f TFLOP/s) (%s)",
          (long long)B, (long long)nh, (long long)ng, (long long)T, (long long)hs, (long long)W, tf,
          4.0 * hs * pairs / (tf * 1e9), tb, 10.0 * hs * pairs / (tb * 1e9), rc ? gdn2_last_error() : "ok");
    void *bufs[] = {q, k, v, o, dO, dq, dk, dv, lse};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gdn2_cuda_free(bufs[i]);
    free(h);
}

int main(void) {
    /* the float64 reference against the CPU layer (runs everywhere) */
    const ashape xc[] = {{2, 37, 4, 2, 64, 16}, {2, 200, 4, 1, 128, 0}, {1, 200, 4, 4, 64, 64}};
    for (size_t i = 0; i < sizeof xc / sizeof xc[0]; i++) cpu_crosscheck(&xc[i], 100 + i);

    arg_checks();
    if (!gdn2_cuda_available()) {
        SKIP_NO_GPU("CUDA attention tests: %s", gdn2_last_error());
        return test_summary();
    }
    char name[128] = "?";
    int drv = 0, rt = 0;
    gdn2_cuda_device_info(name, sizeof name, &drv, &rt);
    printf("device: %s, driver API %d, runtime %d\n", name, drv, rt);

    const int64_t ngs[] = {4, 2, 1}, hss[] = {64, 128}, Ts[] = {1, 37, 200}, Ws[] = {0, 16, 64};
    unsigned long long seed = 1000;
    for (int ih = 0; ih < 2; ih++)
        for (int ig = 0; ig < 3; ig++) {
            ashape r = {2, 37, 4, ngs[ig], hss[ih], 0};
            rope_case(&r, seed++);
        }
    {
        ashape r = {1, 3000, 2, 1, 128, 0}; /* large angles */
        rope_case(&r, seed++);
    }
    for (int ih = 0; ih < 2; ih++)
        for (int ig = 0; ig < 3; ig++)
            for (int it = 0; it < 3; it++)
                for (int iw = 0; iw < 3; iw++) {
                    ashape a = {2, Ts[it], 4, ngs[ig], hss[ih], Ws[iw]};
                    attn_case(&a, seed++);
                }
    /* a window that is not a multiple of the tile and spans tiles; a window >= T; a window wide enough
     * that whole key / query tile pairs are visible (the kernels' unmasked path) */
    const ashape extra[] = {{1, 333, 4, 1, 64, 100}, {1, 333, 4, 2, 128, 100}, {1, 130, 2, 1, 128, 500},
                            {1, 600, 4, 2, 64, 300},  {1, 600, 4, 2, 128, 300}};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) attn_case(&extra[i], seed++);

    bench(2, 16, 4, 4096, 128, 0);
    bench(2, 16, 4, 4096, 128, 512);
    bench(2, 16, 4, 4096, 64, 0);
    bench(4, 12, 4, 4096, 64, 2048);   /* swa_gdn2_100M's attention (B 16 in training) */
    bench(1, 18, 18, 4096, 128, 2048); /* swa_gdn2_1.3B's (B 4) */
    return test_summary();
}
