/* Multi-token verify decode (speculative decoding): gdn2_decode_verify, CPU.
 *  - o and the state after every token (written to snapshot pool slots) vs the float64 reference
 *    over each prefix, with GVA, l2norm and the in-kernel gate; source slots bit-identical after the
 *    call, unrelated slots untouched;
 *  - fp32 pool: every snapshot and o bit-identical to the same number of gdn2_decode_step calls;
 *    in place (snap_slots NULL) the same;
 *  - commit: accept a in {0,1,3,5} of T = 5 drafts per sequence by re-pointing the slot, a second
 *    verify round whose snapshots go to the freed slots, then a decode step: all = the float64
 *    reference over the accepted prefix + the continuation;
 *  - bf16 pool: o bit-identical to the fp32 pool run on the widened state, each stored state its
 *    rounding (snapshots and in place);
 *  - bad slot arrays (duplicate snapshot slot, snapshot = a source slot, out of range, negative)
 *    rejected with the index named and nothing written; a skipped row's snapshot slots are not read;
 *    T = 0; T = 40 (no cap on T). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gdn2.h"
#include "util/internal.h"

enum { NS = 4, T5 = 5, H = 2, HV = 4, K = 32, V = 16, NT = 16 /* tokens per sequence in the bank */ };
enum { SK = H * K, SV = HV * V, SS = HV * K * V, NSLOT = 40 };

/* a bank of NT tokens per sequence, and each sequence's initial state */
typedef struct {
    float q[NS][NT][SK], k[NS][NT][SK], g[NS][NT][SK], b[NS][NT][SK];
    float v[NS][NT][SV], w[NS][NT][SV];
    float h0[NS][SS];
    float A_log[H], dt_bias[H * K];
} bank;

static gdn2_opts opts(void) {
    gdn2_opts o;
    memset(&o, 0, sizeof o);
    o.qk_l2norm = 1;
    o.gate_in_kernel = 1;
    return o;
}

static void bank_fill(bank *B, unsigned long long seed) {
    unsigned long long s = seed;
    for (int i = 0; i < NS; i++)
        for (int t = 0; t < NT; t++) {
            for (int e = 0; e < SK; e++) {
                B->q[i][t][e] = (float)test_normal(&s);
                B->k[i][t][e] = (float)test_normal(&s);
                B->g[i][t][e] = (float)test_normal(&s); /* raw gate pre-activation (gate in kernel) */
                B->b[i][t][e] = (float)test_uniform(&s);
            }
            for (int e = 0; e < SV; e++) {
                B->v[i][t][e] = (float)test_normal(&s);
                B->w[i][t][e] = (float)test_uniform(&s);
            }
        }
    for (int i = 0; i < NS; i++)
        for (int e = 0; e < SS; e++) B->h0[i][e] = (float)(0.3 * test_normal(&s));
    for (int h = 0; h < H; h++) B->A_log[h] = (float)log(1.0 + 3.0 * test_uniform(&s));
    for (int e = 0; e < H * K; e++) B->dt_bias[e] = (float)(0.5 * test_normal(&s));
}

/* batch buffers [n,T,...] gathered from the bank: row r is sequence seq[r], tokens t0[r] .. t0[r]+T-1 */
typedef struct {
    float *q, *k, *g, *b, *v, *w, *o;
} batch;
static void batch_make(batch *x, const bank *B, int n, int T, const int *seq, const int *t0) {
    const size_t nk = (size_t)n * (T ? T : 1) * SK, nv = (size_t)n * (T ? T : 1) * SV;
    x->q = malloc(nk * 4); x->k = malloc(nk * 4); x->g = malloc(nk * 4); x->b = malloc(nk * 4);
    x->v = malloc(nv * 4); x->w = malloc(nv * 4); x->o = malloc(nv * 4);
    for (int r = 0; r < n; r++)
        for (int t = 0; t < T; t++) {
            const int i = seq[r], tt = t0[r] + t;
            const size_t ok = ((size_t)r * T + t) * SK, ov = ((size_t)r * T + t) * SV;
            memcpy(x->q + ok, B->q[i][tt], SK * 4); memcpy(x->k + ok, B->k[i][tt], SK * 4);
            memcpy(x->g + ok, B->g[i][tt], SK * 4); memcpy(x->b + ok, B->b[i][tt], SK * 4);
            memcpy(x->v + ov, B->v[i][tt], SV * 4); memcpy(x->w + ov, B->w[i][tt], SV * 4);
        }
    for (size_t e = 0; e < nv; e++) x->o[e] = 7.0f;
}
static void batch_free(batch *x) {
    free(x->q); free(x->k); free(x->g); free(x->b); free(x->v); free(x->w); free(x->o);
}
static gdn2_decode_tensors tensors(const bank *B, const batch *x, void *pool, const int32_t *slots, int dtype) {
    gdn2_decode_tensors t = {x->q, x->k, x->v, x->g, x->b, x->w, B->A_log, B->dt_bias, x->o, pool, NSLOT, slots, dtype};
    return t;
}

/* float64 reference of sequence i over the bank's tokens tok[0..n): o [n,HV,V] and the final state */
static int ref_seq(const bank *B, int i, const int *tok, int n, double *o, double *ht) {
    gdn2_dims d = {1, n, H, HV, K, V};
    gdn2_opts op = opts();
    double *q = malloc((size_t)n * SK * 8), *k = malloc((size_t)n * SK * 8), *g = malloc((size_t)n * SK * 8);
    double *b = malloc((size_t)n * SK * 8), *v = malloc((size_t)n * SV * 8), *w = malloc((size_t)n * SV * 8);
    double h0[SS], A[H], dt[H * K];
    for (int t = 0; t < n; t++) {
        for (int e = 0; e < SK; e++) {
            q[t * SK + e] = B->q[i][tok[t]][e]; k[t * SK + e] = B->k[i][tok[t]][e];
            g[t * SK + e] = B->g[i][tok[t]][e]; b[t * SK + e] = B->b[i][tok[t]][e];
        }
        for (int e = 0; e < SV; e++) { v[t * SV + e] = B->v[i][tok[t]][e]; w[t * SV + e] = B->w[i][tok[t]][e]; }
    }
    for (int e = 0; e < SS; e++) h0[e] = B->h0[i][e];
    for (int e = 0; e < H; e++) A[e] = B->A_log[e];
    for (int e = 0; e < H * K; e++) dt[e] = B->dt_bias[e];
    gdn2_fwd_tensors_f64 t = {q, k, v, g, b, w, h0, A, dt, o, ht};
    int rc = gdn2_ref_fwd(&d, &op, &t);
    free(q); free(k); free(g); free(b); free(v); free(w);
    return rc;
}

static float *pool_new(void) {
    float *p = malloc((size_t)NSLOT * SS * 4);
    for (int64_t e = 0; e < (int64_t)NSLOT * SS; e++) p[e] = 1e3f + (float)(e % 7); /* garbage in free slots */
    return p;
}

/* ---- o and every snapshot vs float64; sources untouched; fp32 = T decode steps, bit for bit ---- */
static const int32_t SRC[NS] = {7, 2, 31, 0};
static const int32_t SNAP[NS * T5] = {12, 3, 30, 9, 25, /**/ 1, 14, 22, 5, 38, /**/ 16, 8, 27, 11, 35, /**/ 4, 19, 6, 33, 21};

/* a pool with the bank's start states in the SRC slots, and a copy of it in *before */
static float *pool_with_sources(const bank *B, float **before) {
    float *pool = pool_new();
    for (int i = 0; i < NS; i++) memcpy(pool + (size_t)SRC[i] * SS, B->h0[i], SS * 4);
    *before = malloc((size_t)NSLOT * SS * 4);
    memcpy(*before, pool, (size_t)NSLOT * SS * 4);
    return pool;
}

static void test_prefix(const bank *B) {
    const int seq[NS] = {0, 1, 2, 3}, t0[NS] = {0, 0, 0, 0};
    gdn2_dims d = {NS, T5, H, HV, K, V};
    gdn2_opts o = opts();
    float *before, *pool = pool_with_sources(B, &before);
    batch x;
    batch_make(&x, B, NS, T5, seq, t0);
    gdn2_decode_tensors t = tensors(B, &x, pool, SRC, GDN2_STATE_F32);
    int rc = gdn2_decode_verify(&d, &o, &t, SNAP);
    CHECK(rc == 0, "verify T=5, 4 sequences, snapshots to pool slots runs (%s)", rc ? gdn2_last_error() : "ok");
    if (rc) goto out;
    double eo = 0, es = 0;
    int tok[T5] = {0, 1, 2, 3, 4};
    for (int i = 0; i < NS; i++) {
        double o64[T5 * SV], ht[SS];
        if (ref_seq(B, i, tok, T5, o64, ht)) { CHECK(0, "reference runs: %s", gdn2_last_error()); goto out; }
        for (int j = 0; j < T5; j++) {
            double e = rel_rmse_f32_f64(x.o + ((size_t)i * T5 + j) * SV, o64 + j * SV, SV);
            if (e > eo) eo = e;
        }
        for (int a = 1; a <= T5; a++) {
            double o2[T5 * SV];
            ref_seq(B, i, tok, a, o2, ht);
            double e = rel_rmse_f32_f64(pool + (size_t)SNAP[i * T5 + a - 1] * SS, ht, SS);
            if (e > es) es = e;
        }
    }
    CHECK(eo <= 1e-5 && es <= 1e-5, "verify vs float64 (GVA, l2norm, gate): o max rel RMSE %.2e, snapshot after each prefix %.2e (bar 1e-5)",
          eo, es);
    int src_same = 1, other_same = 1;
    for (int i = 0; i < NS; i++) src_same &= !memcmp(pool + (size_t)SRC[i] * SS, before + (size_t)SRC[i] * SS, SS * 4);
    for (int sl = 0; sl < NSLOT; sl++) {
        int used = 0;
        for (int e = 0; e < NS * T5; e++) used |= SNAP[e] == sl;
        if (!used) other_same &= !memcmp(pool + (size_t)sl * SS, before + (size_t)sl * SS, SS * 4);
    }
    CHECK(src_same, "verify with snap_slots: the source slots are bit-identical after the call");
    CHECK(other_same, "verify with snap_slots: slots that are neither source nor snapshot are untouched");

    /* the same T tokens as T decode steps on a copy of the pool: every snapshot and o bit-identical */
    {
        float *p2 = malloc((size_t)NSLOT * SS * 4), *o2 = malloc((size_t)NS * T5 * SV * 4);
        memcpy(p2, before, (size_t)NSLOT * SS * 4);
        int same_o = 1, same_s = 1;
        for (int j = 0; j < T5 && !rc; j++) {
            const int tj[NS] = {j, j, j, j};
            batch y;
            batch_make(&y, B, NS, 1, seq, tj);
            gdn2_dims d1 = {NS, 1, H, HV, K, V};
            gdn2_decode_tensors t1 = tensors(B, &y, p2, SRC, GDN2_STATE_F32);
            rc = gdn2_decode_step(&d1, &o, &t1);
            for (int i = 0; i < NS; i++) {
                same_o &= !memcmp(y.o + (size_t)i * SV, x.o + ((size_t)i * T5 + j) * SV, SV * 4);
                same_s &= !memcmp(p2 + (size_t)SRC[i] * SS, pool + (size_t)SNAP[i * T5 + j] * SS, SS * 4);
                memcpy(o2 + ((size_t)i * T5 + j) * SV, y.o + (size_t)i * SV, SV * 4);
            }
            batch_free(&y);
        }
        CHECK(rc == 0 && same_o && same_s, "verify fp32: o and each snapshot bit-identical to 1..5 gdn2_decode_step calls (o %s, states %s)",
              same_o ? "same" : "DIFFER", same_s ? "same" : "DIFFER");
        /* in place (snap_slots NULL): final state in the source slot, o as above */
        float *p3 = malloc((size_t)NSLOT * SS * 4);
        memcpy(p3, before, (size_t)NSLOT * SS * 4);
        batch z;
        batch_make(&z, B, NS, T5, seq, t0);
        gdn2_decode_tensors t3 = tensors(B, &z, p3, SRC, GDN2_STATE_F32);
        rc = gdn2_decode_verify(&d, &o, &t3, NULL);
        int fin = 1, rest = 1;
        double ei = rel_rmse_f32(z.o, o2, (size_t)NS * T5 * SV), ef = 0;
        for (int i = 0; i < NS; i++) {
            fin &= !memcmp(p3 + (size_t)SRC[i] * SS, p2 + (size_t)SRC[i] * SS, SS * 4);
            double e = rel_rmse_f32(p3 + (size_t)SRC[i] * SS, p2 + (size_t)SRC[i] * SS, SS);
            if (e > ef) ef = e;
        }
        for (int sl = 0; sl < NSLOT; sl++) {
            int src = 0;
            for (int i = 0; i < NS; i++) src |= SRC[i] == sl;
            if (!src) rest &= !memcmp(p3 + (size_t)sl * SS, before + (size_t)sl * SS, SS * 4);
        }
        CHECK(rc == 0 && !memcmp(z.o, o2, (size_t)NS * T5 * SV * 4) && fin && rest,
              "verify in place (snap_slots NULL): o and final state bit-identical to 5 decode steps (rel RMSE o %.1e, state %.1e), "
              "other slots untouched", ei, ef);
        batch_free(&z);
        free(p2); free(p3); free(o2);
    }
out:
    batch_free(&x);
    free(pool); free(before);
}

/* ---- commit: accept a of T drafts, re-point, continue; = float64 over prefix + continuation ---- */
static void test_commit(const bank *B) {
    const int acc[NS] = {0, 1, 3, 5}, seq[NS] = {0, 1, 2, 3}, t0[NS] = {0, 0, 0, 0};
    gdn2_dims d = {NS, T5, H, HV, K, V};
    gdn2_opts o = opts();
    float *pool = pool_new();
    for (int i = 0; i < NS; i++) memcpy(pool + (size_t)SRC[i] * SS, B->h0[i], SS * 4);
    /* round 1: drafts are bank tokens 0..4 */
    batch x;
    batch_make(&x, B, NS, T5, seq, t0);
    gdn2_decode_tensors t = tensors(B, &x, pool, SRC, GDN2_STATE_F32);
    int rc = gdn2_decode_verify(&d, &o, &t, SNAP);
    batch_free(&x);
    /* commit: the sequence's slot becomes its accepted snapshot; the other T of its T+1 slots are free */
    int32_t cur[NS], snap2[NS * T5];
    for (int i = 0; i < NS; i++) {
        cur[i] = acc[i] ? SNAP[i * T5 + acc[i] - 1] : SRC[i];
        int m = 0;
        if (SRC[i] != cur[i]) snap2[i * T5 + m++] = SRC[i];
        for (int j = 0; j < T5; j++)
            if (SNAP[i * T5 + j] != cur[i]) snap2[i * T5 + m++] = SNAP[i * T5 + j];
    }
    /* round 2: drafts are bank tokens 8..12 (the continuation), snapshots into the freed slots */
    const int t8[NS] = {8, 8, 8, 8};
    batch y;
    batch_make(&y, B, NS, T5, seq, t8);
    gdn2_decode_tensors t2 = tensors(B, &y, pool, cur, GDN2_STATE_F32);
    if (!rc) rc = gdn2_decode_verify(&d, &o, &t2, snap2);
    CHECK(rc == 0, "commit: verify, re-point to the accepted snapshot, verify again into the freed slots (%s)",
          rc ? gdn2_last_error() : "ok");
    /* round 2 accepts 2 of 5; then one decode step (bank token 14) in place on the committed slot */
    int32_t cur2[NS];
    for (int i = 0; i < NS; i++) cur2[i] = snap2[i * T5 + 1];
    const int t14[NS] = {14, 14, 14, 14};
    batch z;
    batch_make(&z, B, NS, 1, seq, t14);
    gdn2_dims d1 = {NS, 1, H, HV, K, V};
    gdn2_decode_tensors t3 = tensors(B, &z, pool, cur2, GDN2_STATE_F32);
    if (!rc) rc = gdn2_decode_step(&d1, &o, &t3);
    if (!rc) {
        for (int i = 0; i < NS; i++) {
            /* the accepted prefix, round 2's five, and the step */
            int tok[T5 + T5 + 1], n = 0;
            for (int j = 0; j < acc[i]; j++) tok[n++] = j;
            for (int j = 0; j < T5; j++) tok[n++] = 8 + j;
            double o64[(T5 + T5 + 1) * SV], ht[SS], ht2[SS], o2[(T5 + T5 + 1) * SV];
            ref_seq(B, i, tok, n, o64, ht);                      /* through all of round 2 */
            double e2 = rel_rmse_f32_f64(y.o + (size_t)i * T5 * SV, o64 + (size_t)acc[i] * SV, T5 * SV);
            double es2 = rel_rmse_f32_f64(pool + (size_t)snap2[i * T5 + T5 - 1] * SS, ht, SS);
            int tk2[T5 + 3], n2 = 0;
            for (int j = 0; j < acc[i]; j++) tk2[n2++] = j;
            tk2[n2++] = 8; tk2[n2++] = 9; tk2[n2++] = 14;        /* prefix + 2 accepted of round 2 + the step */
            ref_seq(B, i, tk2, n2, o2, ht2);
            double e3 = rel_rmse_f32_f64(z.o + (size_t)i * SV, o2 + (size_t)(n2 - 1) * SV, SV);
            double es3 = rel_rmse_f32_f64(pool + (size_t)cur2[i] * SS, ht2, SS);
            CHECK(e2 <= 1e-5 && es2 <= 1e-5 && e3 <= 1e-5 && es3 <= 1e-5,
                  "commit a=%d of 5: round-2 o %.2e and last snapshot %.2e, then 2 accepted + a decode step: o %.2e state %.2e "
                  "vs float64 over prefix + continuation (bar 1e-5)", acc[i], e2, es2, e3, es3);
        }
    }
    batch_free(&y);
    batch_free(&z);
    free(pool);
}

/* ---- bf16 pool: o from the widened state in fp32, each stored state its rounding ---- */
static void test_bf16(const bank *B) {
    const int seq[NS] = {0, 1, 2, 3}, t0[NS] = {2, 2, 2, 2};
    gdn2_dims d = {NS, T5, H, HV, K, V};
    gdn2_opts o = opts();
    const int64_t np = (int64_t)NSLOT * SS;
    uint16_t *p16 = malloc((size_t)np * 2), *b16 = malloc((size_t)np * 2);
    float *pw = malloc((size_t)np * 4);
    for (int64_t e = 0; e < np; e++) p16[e] = gdn2_f32_to_bf16(1e3f + (float)(e % 5));
    for (int i = 0; i < NS; i++)
        for (int e = 0; e < SS; e++) p16[(size_t)SRC[i] * SS + e] = gdn2_f32_to_bf16(B->h0[i][e]);
    for (int64_t e = 0; e < np; e++) pw[e] = gdn2_bf16_to_f32(p16[e]);
    memcpy(b16, p16, (size_t)np * 2);
    for (int inplace = 0; inplace < 2; inplace++) {
        batch x, xw;
        batch_make(&x, B, NS, T5, seq, t0);
        batch_make(&xw, B, NS, T5, seq, t0);
        uint16_t *q16 = malloc((size_t)np * 2);
        float *qw = malloc((size_t)np * 4);
        memcpy(q16, p16, (size_t)np * 2);
        memcpy(qw, pw, (size_t)np * 4);
        gdn2_decode_tensors tb = tensors(B, &x, q16, SRC, GDN2_STATE_BF16), tw = tensors(B, &xw, qw, SRC, GDN2_STATE_F32);
        const int32_t *sn = inplace ? NULL : SNAP;
        int rb = gdn2_decode_verify(&d, &o, &tb, sn), rw = gdn2_decode_verify(&d, &o, &tw, sn);
        int same_o = !memcmp(x.o, xw.o, (size_t)NS * T5 * SV * 4), rounded = 1, src = 1;
        for (int i = 0; i < NS; i++) {
            if (inplace) {
                for (int e = 0; e < SS; e++)
                    rounded &= q16[(size_t)SRC[i] * SS + e] == gdn2_f32_to_bf16(qw[(size_t)SRC[i] * SS + e]);
            } else {
                for (int j = 0; j < T5; j++)
                    for (int e = 0; e < SS; e++) {
                        const size_t at = (size_t)SNAP[i * T5 + j] * SS + e;
                        rounded &= q16[at] == gdn2_f32_to_bf16(qw[at]);
                    }
                src &= !memcmp(q16 + (size_t)SRC[i] * SS, b16 + (size_t)SRC[i] * SS, SS * 2);
            }
        }
        CHECK(rb == 0 && rw == 0 && same_o && rounded && src,
              "verify, bf16 pool, %s: o bit-identical to the fp32 pool on the widened state, every stored state its rounding%s (%s)",
              inplace ? "in place" : "snapshots", inplace ? "" : ", source slots untouched", rb ? gdn2_last_error() : "ok");
        batch_free(&x);
        batch_free(&xw);
        free(q16); free(qw);
    }
    free(p16); free(b16); free(pw);
}

/* ---- errors and edge cases ---- */
static void test_errors(const bank *B) {
    const int seq[NS] = {0, 1, 2, 3}, t0[NS] = {0, 0, 0, 0};
    gdn2_dims d = {NS, T5, H, HV, K, V};
    gdn2_opts o = opts();
    float *before, *pool = pool_with_sources(B, &before);
    batch x;
    batch_make(&x, B, NS, T5, seq, t0);
    gdn2_decode_tensors t = tensors(B, &x, pool, SRC, GDN2_STATE_F32);
    int32_t bad[NS * T5];
    struct {
        int at;
        int32_t val;
        const char *what, *msg;
    } cases[] = {
        {7, 12, "duplicate snapshot slot across rows", "snap_slots[1,2]=12 is also snap_slots[0,0]"},
        {3, 30, "duplicate snapshot slot within a row", "snap_slots[0,3]=30 is also snap_slots[0,2]"},
        {13, 0, "snapshot slot = a source slot", "snap_slots[2,3]=0 is also slots[3]"},
        {19, 40, "snapshot slot >= n_slots", "snap_slots[3,4]=40 is out of range (n_slots=40"},
        {10, -1, "negative snapshot slot of a row that runs", "snap_slots[2,0]=-1 is out of range"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memcpy(bad, SNAP, sizeof bad);
        bad[cases[c].at] = cases[c].val;
        for (int e = 0; e < NS * T5 * SV; e++) x.o[e] = 7.0f;
        int rc = gdn2_decode_verify(&d, &o, &t, bad);
        int o_same = 1;
        for (int e = 0; e < NS * T5 * SV; e++) o_same &= x.o[e] == 7.0f;
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), cases[c].msg) && contains(gdn2_last_error(), "gdn2_decode_verify") &&
                  !memcmp(pool, before, (size_t)NSLOT * SS * 4) && o_same,
              "verify: %s rejected, nothing written: %s", cases[c].what, gdn2_last_error());
    }
    /* a skipped row: its snapshot slots (here garbage) are not read, its o is zero, nothing moves */
    {
        int32_t sl[NS] = {7, -1, 31, 0};
        memcpy(bad, SNAP, sizeof bad);
        bad[5] = -9; bad[6] = 7; bad[7] = 12; bad[8] = 99999;
        gdn2_decode_tensors ts = t;
        ts.slots = sl;
        for (int e = 0; e < NS * T5 * SV; e++) x.o[e] = 7.0f;
        int rc = gdn2_decode_verify(&d, &o, &ts, bad);
        int zero = 1, untouched = 1;
        for (int e = 0; e < T5 * SV; e++) zero &= x.o[(size_t)1 * T5 * SV + e] == 0.0f;
        for (int j = 0; j < T5; j++) untouched &= !memcmp(pool + (size_t)SNAP[5 + j] * SS, before + (size_t)SNAP[5 + j] * SS, SS * 4);
        CHECK(rc == 0 && zero && untouched, "verify: a skipped row (slot -1) ignores its snap_slots, o = 0 for its 5 tokens (%s)",
              rc ? gdn2_last_error() : "ok");
        memcpy(pool, before, (size_t)NSLOT * SS * 4);
    }
    /* a NaN in the input of token 3 of row 1: the message names the 4-d index */
    {
        const float keep = x.q[((size_t)1 * T5 + 3) * SK + 5];
        x.q[((size_t)1 * T5 + 3) * SK + 5] = NAN;
        int rc = gdn2_decode_verify(&d, &o, &t, SNAP);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "gdn2_decode_verify: q[1,3,0,5] = nan") &&
                  !memcmp(pool, before, (size_t)NSLOT * SS * 4),
              "verify: NaN input rejected with its [n,T,H,K] index: %s", gdn2_last_error());
        x.q[((size_t)1 * T5 + 3) * SK + 5] = keep;
    }
    {
        gdn2_decode_tensors tn = t;
        tn.w = NULL;
        int rc = gdn2_decode_verify(&d, &o, &tn, SNAP);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "'w'"), "verify: NULL w rejected: %s", gdn2_last_error());
        int64_t cu[2] = {0, 5};
        gdn2_opts oc = o;
        oc.cu_seqlens = cu;
        oc.n_seqs = 1;
        rc = gdn2_decode_verify(&d, &oc, &t, SNAP);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "cu_seqlens"), "verify: cu_seqlens rejected: %s", gdn2_last_error());
        gdn2_dims d0 = d;
        d0.T = 0;
        rc = gdn2_decode_verify(&d0, &o, &t, SNAP);
        CHECK(rc == 0 && !memcmp(pool, before, (size_t)NSLOT * SS * 4), "verify: T = 0 is a no-op (%s)", rc ? gdn2_last_error() : "ok");
    }
    batch_free(&x);
    /* T = 12 (past the usual 2..8: no cap) with snapshots, = 12 decode steps */
    {
        enum { TL = 12 };
        const int s2[2] = {0, 3}, z2[2] = {0, 0};
        const int32_t src2[2] = {5, 9};
        int32_t sn2[2 * TL];
        for (int e = 0; e < 2 * TL; e++) sn2[e] = 10 + e;
        gdn2_dims dl = {2, TL, H, HV, K, V};
        float *pl = pool_new(), *ps = malloc((size_t)NSLOT * SS * 4);
        memcpy(pl + (size_t)5 * SS, B->h0[0], SS * 4);
        memcpy(pl + (size_t)9 * SS, B->h0[3], SS * 4);
        memcpy(ps, pl, (size_t)NSLOT * SS * 4);
        batch xl;
        batch_make(&xl, B, 2, TL, s2, z2);
        gdn2_decode_tensors tl = tensors(B, &xl, pl, src2, GDN2_STATE_F32);
        int rc = gdn2_decode_verify(&dl, &o, &tl, sn2), same = 1;
        for (int j = 0; j < TL && !rc; j++) {
            const int tj[2] = {j, j};
            batch y;
            batch_make(&y, B, 2, 1, s2, tj);
            gdn2_dims d1 = {2, 1, H, HV, K, V};
            gdn2_decode_tensors t1 = tensors(B, &y, ps, src2, GDN2_STATE_F32);
            rc = gdn2_decode_step(&d1, &o, &t1);
            for (int i = 0; i < 2; i++)
                same &= !memcmp(ps + (size_t)src2[i] * SS, pl + (size_t)sn2[i * TL + j] * SS, SS * 4) &&
                        !memcmp(y.o + (size_t)i * SV, xl.o + ((size_t)i * TL + j) * SV, SV * 4);
            batch_free(&y);
        }
        CHECK(rc == 0 && same, "verify T=12 (no cap on T): every snapshot and o = 12 decode steps, bit for bit (%s)",
              rc ? gdn2_last_error() : "ok");
        batch_free(&xl);
        free(pl); free(ps);
    }
    free(pool); free(before);
}

int main(void) {
    bank *B = malloc(sizeof *B);
    bank_fill(B, 2026);
    test_prefix(B);
    test_commit(B);
    test_bf16(B);
    test_errors(B);
    free(B);
    return test_summary();
}
