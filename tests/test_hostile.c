/* Hostile input: sizes from file headers and configs, dims that overflow, non-finite values.
 *   - safetensors headers whose shape products overflow 64 bits, hide behind a zero dimension or
 *     exceed the file; the writer refuses what the reader would;
 *   - model configs: fractional / huge integers, every dimension bounded (a zero one cannot let
 *     another grow), the message naming the key, the value and the limit;
 *   - gdn2_check: each dimension bounded on its own (T = 0 with huge H, K), token rows and tensor
 *     sizes checked;
 *   - every CPU entry point refuses a NaN / inf in each input and a positive g without the gate in
 *     kernel, naming the tensor and the index, and accepts a positive raw gate with it; the decode
 *     step ignores the rows it skips;
 *   - `gdn2 op` on a file with a NaN or a positive g: exit 2 and the tensor named (cpu, reference,
 *     and --device cuda, which checks on the host before any upload);
 *   - gdn2_fexp on NaN, ±inf (its NaN path was a float->int conversion of NaN: build this test
 *     with -fsanitize=undefined,float-cast-overflow to see it).
 * Also times the value scan against the chunk forward and backward it guards (printed, not
 * asserted: the machine may be shared). */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "cli_run.h"
#include "gdn2.h"
#include "ops/chunk_common.h" /* gdn2_fexp */

/* ---- safetensors ---------------------------------------------------------------------------- */

/* A safetensors file with the given JSON header and `data` bytes of zeros after it. */
static void write_raw(const char *path, const char *json, size_t data) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    uint64_t n = strlen(json);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(json, 1, n, f);
    for (size_t i = 0; i < data; i++) fputc(0, f);
    fclose(f);
}

/* read a crafted file: 1 when refused with GDN2_ERR_FORMAT and a message containing `want` */
static int st_refused(const char *json, size_t data, const char *want) {
    const char *p = path_in("crafted.safetensors");
    write_raw(p, json, data);
    gdn2_st st;
    int rc = gdn2_st_read(p, &st);
    if (rc == GDN2_OK) gdn2_st_free(&st);
    return rc == GDN2_ERR_FORMAT && contains(gdn2_last_error(), want);
}

static void test_safetensors(void) {
    /* the product of the dimensions overflows 64 bits: 2^32 * 2^32 * 2 */
    CHECK(st_refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,0]}}", 0,
                     "too large"),
          "safetensors: shape product overflowing 64 bits refused (%s)", gdn2_last_error());
    /* a zero dimension makes it empty, but the others still reach whoever reads the shape */
    CHECK(st_refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[0,9007199254740992,9007199254740992],"
                     "\"data_offsets\":[0,0]}}", 0, "too large"),
          "safetensors: zero dim next to 2^53 x 2^53 refused (%s)", gdn2_last_error());
    CHECK(st_refused("{\"x\":{\"dtype\":\"F64\",\"shape\":[1,0,1099511627776,1048576],\"data_offsets\":[0,0]}}", 0,
                     "'x'"),
          "safetensors: zero dim next to 2^40 x 2^20 F64 refused, naming the tensor (%s)", gdn2_last_error());
    /* shape larger than the file: 1000 x 1000 F32 in a file of 64 data bytes */
    CHECK(st_refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[1000,1000],\"data_offsets\":[0,4000000]}}", 64,
                     "beyond the data section"),
          "safetensors: shape exceeding the file refused (%s)", gdn2_last_error());
    CHECK(st_refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[1000,1000],\"data_offsets\":[0,64]}}", 64, "4000000 bytes"),
          "safetensors: shape exceeding its byte span refused (%s)", gdn2_last_error());
    /* an empty tensor of modest shape is still fine */
    {
        const char *p = path_in("empty.safetensors");
        write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[0,4096,4096],\"data_offsets\":[0,0]}}", 0);
        gdn2_st st;
        int rc = gdn2_st_read(p, &st);
        CHECK(rc == GDN2_OK && st.n_tensors == 1 && st.tensors[0].nbytes == 0,
              "safetensors: empty [0,4096,4096] tensor accepted (rc %d %s)", rc, gdn2_last_error());
        if (rc == GDN2_OK) gdn2_st_free(&st);
    }
    /* the writer refuses what the reader would */
    {
        gdn2_tensor t = {.name = "x", .dtype = GDN2_F32, .ndim = 3, .shape = {0, (int64_t)1 << 62, 4}, .nbytes = 0};
        int rc = gdn2_st_write(path_in("w.safetensors"), &t, 1, NULL, NULL, 0);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "too large"),
              "safetensors writer: [0,2^62,4] refused (rc %d: %s)", rc, gdn2_last_error());
        gdn2_tensor u = {.name = "y", .dtype = GDN2_F32, .ndim = 3, .shape = {(int64_t)1 << 31, (int64_t)1 << 31, 8},
                         .nbytes = 0};
        rc = gdn2_st_write(path_in("w.safetensors"), &u, 1, NULL, NULL, 0);
        CHECK(rc == GDN2_ERR_ARG, "safetensors writer: [2^31,2^31,8] F32 (2^65 bytes) refused (rc %d: %s)", rc,
              gdn2_last_error());
    }
}

/* ---- model configs ---------------------------------------------------------------------------- */

static int cfg_refused(const char *json, const char *want1, const char *want2) {
    gdn2_model_cfg c;
    int rc = gdn2_model_config_from_json(json, &c);
    return rc != GDN2_OK && contains(gdn2_last_error(), want1) && (!want2 || contains(gdn2_last_error(), want2));
}

static void test_config(void) {
    /* parameter count padded_vocab * n_embd = 2^52 * 2^16 would overflow 64 bits */
    CHECK(cfg_refused("{\"n_layer\":2,\"n_embd\":65536,\"vocab_size\":4503599627370496}", "vocab_size",
                      "4503599627370496"),
          "config: vocab_size 2^52 refused, naming key and value (%s)", gdn2_last_error());
    CHECK(cfg_refused("{\"n_layer\":2,\"n_embd\":4194304,\"vocab_size\":256}", "n_embd", "65536"),
          "config: n_embd 2^22 refused, naming the limit (%s)", gdn2_last_error());
    /* a zero dimension (no recurrent heads: an attention-only layout) plus a huge other one */
    CHECK(cfg_refused("{\"n_layer\":2,\"n_embd\":64,\"vocab_size\":256,\"gdn2_layout\":\"swa\",\"gdn2_num_heads\":0,"
                      "\"gdn2_head_dim\":1000000000000000}",
                      "gdn2_head_dim", NULL),
          "config: gdn2_num_heads 0 + gdn2_head_dim 1e15 refused (%s)", gdn2_last_error());
    /* gdn2_expand_v 0 (the default, x1) next to a 2^40 head dim */
    CHECK(cfg_refused("{\"n_layer\":2,\"n_embd\":64,\"vocab_size\":256,\"gdn2_expand_v\":0,"
                      "\"gdn2_head_dim\":1099511627776}",
                      "gdn2_head_dim", "4096"),
          "config: gdn2_expand_v 0 + gdn2_head_dim 2^40 refused (%s)", gdn2_last_error());
    CHECK(cfg_refused("{\"n_layer\":2,\"n_embd\":64,\"vocab_size\":256,\"block_size\":1000000000000}", "block_size", NULL),
          "config: block_size 1e12 refused (%s)", gdn2_last_error());
    CHECK(cfg_refused("{\"n_layer\":2,\"n_embd\":64,\"vocab_size\":256,\"gdn2_layout\":\"attn\",\"n_head\":2,"
                      "\"head_size\":1073741824}",
                      "head_size", NULL),
          "config: head_size 2^30 refused (%s)", gdn2_last_error());
    /* integers must be exact: no truncation of 64.5, no undefined conversion of 1e300 */
    CHECK(cfg_refused("{\"n_layer\":2,\"n_embd\":64.5,\"vocab_size\":256}", "n_embd", "not an integer"),
          "config: n_embd 64.5 refused (%s)", gdn2_last_error());
    CHECK(cfg_refused("{\"n_layer\":2,\"n_embd\":1e300,\"vocab_size\":256}", "n_embd", "not an integer"),
          "config: n_embd 1e300 refused (%s)", gdn2_last_error());
    /* what is real still loads */
    {
        gdn2_model_cfg c;
        int ok = 1;
        const char *names[] = {"gdn2_1.3B", "swa_gdn2_1.3B", "gdn2_12h_100M", "gdn2_12h_305M", "swa_gdn2_100M", "tiny", "small"};
        for (int i = 0; i < 7; i++) ok &= gdn2_model_config(names[i], &c) == GDN2_OK;
        CHECK(ok, "config: every named config passes the bounds (%s)", gdn2_last_error());
        int rc = gdn2_model_config("gdn2_1.3B", &c);
        char *js = rc ? NULL : gdn2_model_config_to_json(&c);
        gdn2_model_cfg c2;
        rc = js ? gdn2_model_config_from_json(js, &c2) : -1;
        CHECK(rc == GDN2_OK && c2.n_embd == 2304 && gdn2_model_param_count(&c2) == gdn2_model_param_count(&c),
              "config: gdn2_1.3B round-trips through JSON (rc %d, %zu params)", rc,
              rc ? (size_t)0 : gdn2_model_param_count(&c2));
        free(js);
    }
}

/* ---- gdn2_check --------------------------------------------------------------------------------- */

static int dims_refused(gdn2_dims d, const char *want) {
    gdn2_opts o = {0};
    int rc = gdn2_check(&d, &o);
    return rc == GDN2_ERR_ARG && contains(gdn2_last_error(), want);
}

static void test_dims(void) {
    const int64_t big = (int64_t)1 << 40;
    CHECK(dims_refused((gdn2_dims){1, 0, big, big, 64, 64}, "H="), "gdn2_check: T=0 with H=HV=2^40 refused (%s)",
          gdn2_last_error());
    CHECK(dims_refused((gdn2_dims){big, 0, 1, 1, 64, 64}, "B="), "gdn2_check: T=0 with B=2^40 refused (%s)",
          gdn2_last_error());
    CHECK(dims_refused((gdn2_dims){1, 0, 1, 1, big, 1}, "K="), "gdn2_check: T=0 with K=2^40 refused (%s)",
          gdn2_last_error());
    CHECK(dims_refused((gdn2_dims){1, 0, 1, 1, 1, big}, "V="), "gdn2_check: T=0 with V=2^40 refused (%s)",
          gdn2_last_error());
    CHECK(dims_refused((gdn2_dims){1, big, 1, 1, 1, 1}, "T="), "gdn2_check: T=2^40 refused (%s)", gdn2_last_error());
    CHECK(dims_refused((gdn2_dims){1, 1, 65536, 65536, 65536, 1}, "H*K"),
          "gdn2_check: a token row H*K = 2^32 refused (%s)", gdn2_last_error());
    /* each dim within bounds, but [B,T,H,K] has 2^31*2^31*... elements */
    CHECK(dims_refused((gdn2_dims){2147483647, 2147483647, 1, 1, 4096, 1}, "too large"),
          "gdn2_check: B*T*H*K overflowing 64-bit bytes refused (%s)", gdn2_last_error());
    CHECK(dims_refused((gdn2_dims){2147483647, 0, 1, 1, 46340, 46340}, "too large"),
          "gdn2_check: state [B,HV,K,V] too large refused with T=0 (%s)", gdn2_last_error());
    gdn2_opts o = {0};
    gdn2_dims ok = {2, 0, 2, 4, 64, 64};
    CHECK(gdn2_check(&ok, &o) == GDN2_OK, "gdn2_check: ordinary T=0 batch accepted");
}

/* ---- non-finite inputs ------------------------------------------------------------------------- */

enum { T_Q, T_K, T_V, T_G, T_B, T_W, T_H0, T_ALOG, T_DTB, T_DO, T_DHT, N_T };
static const char *const tnames[N_T] = {"q", "k", "v", "g", "b", "w", "h0", "A_log", "dt_bias", "do", "dht"};

typedef struct {
    gdn2_dims d;
    size_t n[N_T];
    float *x[N_T];
    float *o, *ht, *dq, *dk, *dv, *dg, *db, *dw, *dh0, *dal, *ddt;
} prob;

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}

static void prob_init(prob *p, gdn2_dims d) {
    memset(p, 0, sizeof *p);
    p->d = d;
    const size_t nq = (size_t)(d.B * d.T * d.H * d.K), nv = (size_t)(d.B * d.T * d.HV * d.V),
                 ns = (size_t)(d.B * d.HV * d.K * d.V);
    const size_t n[N_T] = {nq, nq, nv, nq, nq, nv, ns, (size_t)d.H, (size_t)(d.H * d.K), nv, ns};
    for (int i = 0; i < N_T; i++) {
        p->n[i] = n[i];
        p->x[i] = malloc(n[i] * sizeof(float));
        for (size_t j = 0; j < n[i]; j++) p->x[i][j] = (float)(urand() - 0.5);
    }
    for (size_t j = 0; j < nq; j++) {
        p->x[T_G][j] = (float)(-0.02 - 0.2 * urand());
        p->x[T_B][j] = (float)urand();
    }
    for (size_t j = 0; j < nv; j++) p->x[T_W][j] = (float)urand();
    float **outs[] = {&p->dq, &p->dk, &p->dg, &p->db};
    for (int i = 0; i < 4; i++) *outs[i] = calloc(nq, sizeof(float));
    p->o = calloc(nv, sizeof(float)), p->dv = calloc(nv, sizeof(float)), p->dw = calloc(nv, sizeof(float));
    p->ht = calloc(ns, sizeof(float)), p->dh0 = calloc(ns, sizeof(float));
    p->dal = calloc((size_t)d.H, sizeof(float)), p->ddt = calloc((size_t)(d.H * d.K), sizeof(float));
}

static void prob_free(prob *p) {
    for (int i = 0; i < N_T; i++) free(p->x[i]);
    float *f[] = {p->o, p->ht, p->dq, p->dk, p->dv, p->dg, p->db, p->dw, p->dh0, p->dal, p->ddt};
    for (int i = 0; i < 11; i++) free(f[i]);
}

static gdn2_fwd_tensors fwd_of(const prob *p) {
    return (gdn2_fwd_tensors){p->x[T_Q], p->x[T_K], p->x[T_V], p->x[T_G], p->x[T_B], p->x[T_W],
                              p->x[T_H0], p->x[T_ALOG], p->x[T_DTB], p->o, p->ht};
}
static gdn2_bwd_tensors bwd_of(const prob *p) {
    return (gdn2_bwd_tensors){p->x[T_DO], p->x[T_DHT], p->dq, p->dk, p->dv, p->dg, p->db, p->dw,
                              p->dh0, p->dal, p->ddt};
}

/* float64 copies for the reference */
typedef struct {
    double *x[N_T];
    double *out[11];
} prob64;
static void p64_init(prob64 *r, const prob *p) {
    for (int i = 0; i < N_T; i++) {
        r->x[i] = malloc(p->n[i] * sizeof(double));
        for (size_t j = 0; j < p->n[i]; j++) r->x[i][j] = p->x[i][j];
    }
    const size_t no[11] = {p->n[T_V], p->n[T_H0], p->n[T_Q], p->n[T_Q], p->n[T_V], p->n[T_Q], p->n[T_Q],
                           p->n[T_V], p->n[T_H0], p->n[T_ALOG], p->n[T_DTB]};
    for (int i = 0; i < 11; i++) r->out[i] = calloc(no[i], sizeof(double));
}
static void p64_free(prob64 *r) {
    for (int i = 0; i < N_T; i++) free(r->x[i]);
    for (int i = 0; i < 11; i++) free(r->out[i]);
}

/* index string of flat element j in a 4-d tensor of shape s, as the messages print it */
static void idx4(size_t j, const int64_t s[4], char *buf, size_t len) {
    int64_t i[4];
    for (int a = 3; a >= 0; a--) i[a] = (int64_t)(j % (size_t)s[a]), j /= (size_t)s[a];
    snprintf(buf, len, "[%lld,%lld,%lld,%lld]", (long long)i[0], (long long)i[1], (long long)i[2], (long long)i[3]);
}

enum { E_CHUNK_FWD, E_CHUNK_BWD, E_REC_FWD, E_REF_FWD, E_REF_BWD, N_E };
static const char *const enames[N_E] = {"gdn2_chunk_fwd", "gdn2_chunk_bwd", "gdn2_recurrent_fwd", "gdn2_ref_fwd",
                                        "gdn2_ref_bwd"};

static int call(int e, prob *p, const gdn2_opts *o) {
    gdn2_fwd_tensors ft = fwd_of(p);
    gdn2_bwd_tensors bt = bwd_of(p);
    if (e == E_CHUNK_FWD) return gdn2_chunk_fwd(&p->d, o, &ft);
    if (e == E_CHUNK_BWD) return gdn2_chunk_bwd(&p->d, o, &ft, &bt);
    if (e == E_REC_FWD) return gdn2_recurrent_fwd(&p->d, o, &ft);
    prob64 r;
    p64_init(&r, p);
    gdn2_fwd_tensors_f64 f64 = {r.x[T_Q], r.x[T_K], r.x[T_V], r.x[T_G], r.x[T_B], r.x[T_W], r.x[T_H0],
                                r.x[T_ALOG], r.x[T_DTB], r.out[0], r.out[1]};
    gdn2_bwd_tensors_f64 b64 = {r.x[T_DO], r.x[T_DHT], r.out[2], r.out[3], r.out[4], r.out[5], r.out[6],
                                r.out[7], r.out[8], r.out[9], r.out[10]};
    int rc = e == E_REF_FWD ? gdn2_ref_fwd(&p->d, o, &f64) : gdn2_ref_bwd(&p->d, o, &f64, &b64);
    p64_free(&r);
    return rc;
}

static void test_values(void) {
    const gdn2_dims d = {2, 70, 2, 4, 8, 8}; /* 2 chunks, GVA */
    prob p;
    prob_init(&p, d);
    const int64_t sq[4] = {d.B, d.T, d.H, d.K}, sv[4] = {d.B, d.T, d.HV, d.V}, ss[4] = {d.B, d.HV, d.K, d.V};
    for (int e = 0; e < N_E; e++) {
        gdn2_opts o = {0};
        o.n_threads = 2;
        CHECK(call(e, &p, &o) == GDN2_OK, "values: %s accepts clean inputs (%s)", enames[e], gdn2_last_error());
        const int bwd = e == E_CHUNK_BWD || e == E_REF_BWD;
        for (int ti = 0; ti <= T_DHT; ti++) {
            if (ti == T_ALOG || ti == T_DTB) continue; /* below, with the gate in kernel */
            if ((ti == T_DO || ti == T_DHT) && !bwd) continue;
            const int64_t *s = (ti == T_V || ti == T_W || ti == T_DO) ? sv : (ti == T_H0 || ti == T_DHT) ? ss : sq;
            const size_t j = (size_t)(urand() * (double)p.n[ti]);
            const float bad[3] = {NAN, INFINITY, -INFINITY};
            for (int k = 0; k < 3; k++) {
                const float keep = p.x[ti][j];
                p.x[ti][j] = bad[k];
                int rc = call(e, &p, &o);
                p.x[ti][j] = keep;
                char ix[96], want[128];
                idx4(j, s, ix, sizeof ix);
                snprintf(want, sizeof want, "%s: %s%s = ", enames[e], tnames[ti], ix);
                CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), want) &&
                          contains(gdn2_last_error(), k == 0 ? "nan" : "inf"),
                      "values: %s refuses %s at %s = %g (rc %d: %s)", enames[e], tnames[ti], ix, (double)bad[k], rc,
                      gdn2_last_error());
            }
        }
        /* a positive log-decay, refused without the gate in kernel ... */
        {
            const size_t j = 5 * (size_t)d.K + 3;
            const float keep = p.x[T_G][j];
            p.x[T_G][j] = 0.25f;
            int rc = call(e, &p, &o);
            char ix[96], want[128];
            idx4(j, sq, ix, sizeof ix);
            snprintf(want, sizeof want, "g%s = 0.25", ix);
            CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), want) && contains(gdn2_last_error(), "log-decay"),
                  "values: %s refuses g%s = 0.25 without the gate in kernel (%s)", enames[e], ix, gdn2_last_error());
            /* ... and accepted as the raw gate of the gate in kernel (every g positive here) */
            gdn2_opts og = o;
            og.gate_in_kernel = 1;
            for (size_t i = 0; i < p.n[T_G]; i++) p.x[T_G][i] = -p.x[T_G][i];
            rc = call(e, &p, &og);
            CHECK(rc == GDN2_OK && ((e != E_CHUNK_FWD && e != E_REC_FWD) || all_finite_f32(p.o, p.n[T_V])),
                  "values: %s accepts positive g as the raw gate with gate_in_kernel (rc %d %s)", enames[e], rc,
                  gdn2_last_error());
            /* the gate parameters must be finite then */
            for (int ti = T_ALOG; ti <= T_DTB; ti++) {
                const float keep2 = p.x[ti][1];
                p.x[ti][1] = NAN;
                rc = call(e, &p, &og);
                p.x[ti][1] = keep2;
                snprintf(want, sizeof want, "%s[1] = nan", tnames[ti]);
                CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), want), "values: %s refuses %s (%s)", enames[e],
                      want, gdn2_last_error());
            }
            for (size_t i = 0; i < p.n[T_G]; i++) p.x[T_G][i] = -p.x[T_G][i];
            p.x[T_G][j] = keep;
        }
    }

    /* the collapse entry points: beta and the scalar GDN decay */
    {
        const size_t nb = (size_t)(d.B * d.T * d.H);
        float *beta = malloc(nb * sizeof(float)), *gs = malloc(nb * sizeof(float)), *dbeta = calloc(nb, sizeof(float));
        for (size_t i = 0; i < nb; i++) beta[i] = (float)urand(), gs[i] = (float)(-0.1 * urand());
        gdn2_opts o = {0};
        gdn2_fwd_tensors ft = fwd_of(&p);
        gdn2_bwd_tensors bt = bwd_of(&p);
        ft.b = ft.w = NULL;
        CHECK(gdn2_kda_chunk_fwd(&d, &o, &ft, beta) == GDN2_OK, "values: gdn2_kda_chunk_fwd accepts clean inputs (%s)",
              gdn2_last_error());
        beta[7] = NAN;
        int rc = gdn2_kda_chunk_fwd(&d, &o, &ft, beta);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "gdn2_kda_chunk_fwd: beta[0,3,1] = nan"),
              "values: gdn2_kda_chunk_fwd refuses beta[0,3,1] = nan (%s)", gdn2_last_error());
        rc = gdn2_kda_recurrent_fwd(&d, &o, &ft, beta);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "gdn2_kda_recurrent_fwd: beta[0,3,1] = nan"),
              "values: gdn2_kda_recurrent_fwd refuses beta (%s)", gdn2_last_error());
        rc = gdn2_kda_chunk_bwd(&d, &o, &ft, beta, &bt, dbeta);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "gdn2_kda_chunk_bwd: beta[0,3,1] = nan"),
              "values: gdn2_kda_chunk_bwd refuses beta (%s)", gdn2_last_error());
        ((float *)ft.q)[3] = NAN;
        rc = gdn2_kda_chunk_fwd(&d, &o, &ft, beta);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "gdn2_kda_chunk_fwd: q[0,0,0,3] = nan"),
              "values: gdn2_kda_chunk_fwd refuses q (%s)", gdn2_last_error());
        ((float *)ft.q)[3] = 0.25f;
        beta[7] = 0.5f;
        ft.g = gs;
        CHECK(gdn2_gdn_chunk_fwd(&d, &o, &ft, beta) == GDN2_OK, "values: gdn2_gdn_chunk_fwd accepts clean inputs (%s)",
              gdn2_last_error());
        gs[9] = 0.5f;
        rc = gdn2_gdn_chunk_fwd(&d, &o, &ft, beta);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "g[0,4,1] = 0.5"),
              "values: gdn2_gdn_chunk_fwd refuses the scalar g[0,4,1] = 0.5 (%s)", gdn2_last_error());
        gs[9] = -INFINITY;
        rc = gdn2_gdn_chunk_bwd(&d, &o, &ft, beta, &bt, dbeta);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "g[0,4,1] = -inf"),
              "values: gdn2_gdn_chunk_bwd refuses g[0,4,1] = -inf (%s)", gdn2_last_error());
        free(beta), free(gs), free(dbeta);
    }

    /* decode: the rows that run are checked, the skipped ones are never read */
    {
        gdn2_dims dd = {2, 1, d.H, d.HV, d.K, d.V}; /* rows 0, 1 use tokens of sequence 0 */
        gdn2_opts o = {0};
        float *pool = calloc((size_t)(3 * d.HV * d.K * d.V), sizeof(float));
        int32_t slots[2] = {2, -1};
        float *q = p.x[T_Q], *row1 = q + d.H * d.K;
        const float keep = row1[3];
        row1[3] = NAN;
        gdn2_decode_tensors dt = {q, p.x[T_K], p.x[T_V], p.x[T_G], p.x[T_B], p.x[T_W], NULL, NULL, p.o, pool, 3, slots,
                                  GDN2_STATE_F32};
        int rc = gdn2_decode_step(&dd, &o, &dt);
        CHECK(rc == GDN2_OK, "values: gdn2_decode_step ignores a NaN in a skipped row (rc %d %s)", rc, gdn2_last_error());
        slots[1] = 0;
        rc = gdn2_decode_step(&dd, &o, &dt);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "gdn2_decode_step: q[1,0,3] = nan"),
              "values: gdn2_decode_step refuses q[1,0,3] = nan in a row that runs (%s)", gdn2_last_error());
        row1[3] = keep;
        p.x[T_G][2] = 1.0f;
        rc = gdn2_decode_step(&dd, &o, &dt);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "g[0,0,2] = 1"),
              "values: gdn2_decode_step refuses g[0,0,2] = 1 (%s)", gdn2_last_error());
        p.x[T_G][2] = -0.1f;
        free(pool);
    }

    /* the public check, for callers of the CUDA entry points */
    {
        gdn2_opts o = {0};
        gdn2_fwd_tensors ft = fwd_of(&p);
        gdn2_bwd_tensors bt = bwd_of(&p);
        CHECK(gdn2_check_inputs(&d, &o, &ft, &bt) == GDN2_OK, "values: gdn2_check_inputs accepts clean inputs");
        p.x[T_DO][11] = INFINITY;
        int rc = gdn2_check_inputs(&d, &o, &ft, &bt);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "do[0,0,1,3] = inf"), "values: gdn2_check_inputs: %s",
              gdn2_last_error());
        CHECK(gdn2_check_inputs(&d, &o, &ft, NULL) == GDN2_OK, "values: gdn2_check_inputs without g ignores do");
        p.x[T_DO][11] = 0.0f;
    }
    prob_free(&p);

    /* large tensors: the scan runs on several threads and still reports the first bad element */
    {
        const gdn2_dims db = {1, 4096, 1, 1, 256, 256}; /* 1M elements per tensor */
        prob big;
        prob_init(&big, db);
        gdn2_opts o = {0};
        o.n_threads = 4;
        gdn2_fwd_tensors ft = fwd_of(&big);
        CHECK(gdn2_check_inputs(&db, &o, &ft, NULL) == GDN2_OK, "values: 1M-element tensors, 4 threads: clean");
        big.x[T_W][1000001] = NAN;
        big.x[T_W][900007] = -INFINITY;
        big.x[T_W][5] = 0.0f;
        int rc = gdn2_check_inputs(&db, &o, &ft, NULL);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "w[0,3515,0,167] = -inf"),
              "values: 1M-element tensors, 4 threads: the first of two bad elements reported (%s)", gdn2_last_error());
        big.x[T_W][1000001] = big.x[T_W][900007] = 0.5f;
        big.x[T_G][1048575] = 1e-30f;
        rc = gdn2_check_inputs(&db, &o, &ft, NULL);
        CHECK(rc == GDN2_ERR_ARG && contains(gdn2_last_error(), "g[0,4095,0,255] = 1e-30"),
              "values: 1M-element tensors, 4 threads: the last element's positive g found (%s)", gdn2_last_error());
        prob_free(&big);
    }
}

/* ---- gdn2 op on a file with bad values ------------------------------------------------------- */

/* the CLI with args (cli_run.h's run_gdn2), its output folded to one line for the check message */
static int run_cli(const char *const *args) {
    int rc = run_gdn2(args, NULL);
    for (char *c = g_out; *c; c++)
        if (*c == '\n') *c = '|';
    return rc;
}

/* An op input file (B=1, T=8, H=1, K=V=4, with do) through the library's writer; `bad` is set
 * at element `at` of tensor `which` (or nothing when which < 0). */
static int write_op_file(const char *path, int which, size_t at, float bad) {
    const int64_t B = 1, T = 8, H = 1, K = 4;
    const size_t n = (size_t)(B * T * H * K);
    const char *names[7] = {"q", "k", "v", "g", "b", "w", "do"};
    float *x[7];
    gdn2_tensor ts[7];
    for (int i = 0; i < 7; i++) {
        x[i] = malloc(n * sizeof(float));
        for (size_t j = 0; j < n; j++) x[i][j] = i == 3 ? (float)(-0.1 - 0.1 * urand()) : (float)urand();
        if (i == which) x[i][at] = bad;
        /* H = HV and K = V here: every tensor is [1, 8, 1, 4] */
        ts[i] = (gdn2_tensor){.name = (char *)names[i], .dtype = GDN2_F32, .ndim = 4, .shape = {B, T, H, K},
                              .nbytes = n * sizeof(float), .data = x[i]};
    }
    int rc = gdn2_st_write(path, ts, 7, NULL, NULL, 0);
    for (int i = 0; i < 7; i++) free(x[i]);
    return rc;
}

static void test_cli(void) {
    char in[512], out[512];
    snprintf(in, sizeof in, "%s", path_in("op_in.safetensors"));
    snprintf(out, sizeof out, "%s", path_in("op_out.safetensors"));
    CHECK(write_op_file(in, -1, 0, 0) == GDN2_OK, "cli: clean op file written (%s)", gdn2_last_error());
    int rc = run_cli((const char *[]){"op", in, "-o", out, NULL});
    CHECK(rc == 0, "cli: gdn2 op on a clean file exits 0 (%d: %.200s)", rc, g_out);
    struct {
        int which;
        size_t at;
        float bad;
        const char *impl, *device, *want;
    } cases[] = {
        {0, 13, NAN, "chunk", "cpu", "q[0,3,0,1] = nan"},
        {0, 13, NAN, "reference", "cpu", "q[0,3,0,1] = nan"},
        {0, 13, NAN, "recurrent", "cpu", "q[0,3,0,1] = nan"},
        {0, 13, NAN, "chunk", "cuda", "q[0,3,0,1] = nan"},
        {2, 30, INFINITY, "chunk", "cpu", "v[0,7,0,2] = inf"},
        {3, 6, 0.5f, "chunk", "cpu", "g[0,1,0,2] = 0.5"},
        {3, 6, 0.5f, "chunk", "cuda", "g[0,1,0,2] = 0.5"},
        {6, 0, -INFINITY, "chunk", "cpu", "do[0,0,0,0] = -inf"},
        {6, 0, -INFINITY, "reference", "cpu", "do[0,0,0,0] = -inf"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        write_op_file(in, cases[c].which, cases[c].at, cases[c].bad);
        unlink(out);
        rc = run_cli((const char *[]){"op", in, "-o", out, "--impl", cases[c].impl, "--device", cases[c].device, NULL});
        struct stat sb;
        CHECK(rc == 2 && contains(g_out, cases[c].want) && contains(g_out, in) && stat(out, &sb) != 0,
              "cli: gdn2 op --impl %s --device %s with %s: exit 2, named, no output (exit %d: %.300s)", cases[c].impl,
              cases[c].device, cases[c].want, rc, g_out);
    }
    /* dims from the file: T = 0 with H, K, V = 65536 (the outputs' ht would be 2^48 floats) */
    write_raw(in,
              "{\"q\":{\"dtype\":\"F32\",\"shape\":[1,0,65536,65536],\"data_offsets\":[0,0]},"
              "\"k\":{\"dtype\":\"F32\",\"shape\":[1,0,65536,65536],\"data_offsets\":[0,0]},"
              "\"g\":{\"dtype\":\"F32\",\"shape\":[1,0,65536,65536],\"data_offsets\":[0,0]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1,0,65536,65536],\"data_offsets\":[0,0]},"
              "\"v\":{\"dtype\":\"F32\",\"shape\":[1,0,65536,65536],\"data_offsets\":[0,0]},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[1,0,65536,65536],\"data_offsets\":[0,0]}}",
              0);
    rc = run_cli((const char *[]){"op", in, "-o", out, NULL});
    CHECK(rc == 2 && contains(g_out, "H*K"), "cli: gdn2 op with T=0 and H=K=65536: exit 2 (exit %d: %.300s)", rc, g_out);
    /* a zero dimension hiding 2^40 x 2^40 in the header */
    write_raw(in, "{\"q\":{\"dtype\":\"F32\",\"shape\":[1,0,1099511627776,1099511627776],\"data_offsets\":[0,0]}}", 0);
    rc = run_cli((const char *[]){"op", in, "-o", out, NULL});
    CHECK(rc == 2 && contains(g_out, "too large"), "cli: gdn2 op with q [1,0,2^40,2^40]: exit 2 (exit %d: %.300s)", rc,
          g_out);
}

/* ---- gdn2_fexp ------------------------------------------------------------------------------ */

static void test_fexp(void) {
    volatile float nan_ = NAN, inf_ = INFINITY;
    CHECK(isnan(gdn2_fexp(nan_)) && isnan(gdn2_fexp(-nan_)), "gdn2_fexp(NaN) is NaN");
    CHECK(gdn2_fexp(-inf_) == 0.0f && gdn2_fexp(-1000.0f) == 0.0f, "gdn2_fexp(-inf) = 0");
    CHECK(isfinite(gdn2_fexp(inf_)) && gdn2_fexp(inf_) == gdn2_fexp(88.0f), "gdn2_fexp(+inf) = e^88 (clamped), %g",
          (double)gdn2_fexp(inf_));
    double worst = 0;
    for (float x = -87.0f; x <= 88.0f; x += 0.37f) {
        double e = fabs(gdn2_fexp(x) / exp((double)x) - 1);
        if (e > worst) worst = e;
    }
    CHECK(gdn2_fexp(0.0f) == 1.0f && worst < 2e-7, "gdn2_fexp accuracy on [-87, 88]: max rel err %.2e", worst);
}

/* ---- cost of the value scan ---------------------------------------------------------------- */

static void time_scan(void) {
    const gdn2_dims d = {1, 4096, 4, 4, 64, 64};
    prob p;
    prob_init(&p, d);
    gdn2_opts o = {0};
    o.n_threads = 1;
    gdn2_fwd_tensors ft = fwd_of(&p);
    gdn2_bwd_tensors bt = bwd_of(&p);
    ft.h0 = NULL, bt.dht = NULL;
    double tf = 1e9, tb = 1e9, tc = 1e9, tcb = 1e9;
    int ok = 1;
    for (int r = 0; r < 3; r++) {
        double t0 = gdn2_now();
        ok &= gdn2_chunk_fwd(&d, &o, &ft) == GDN2_OK;
        double t1 = gdn2_now();
        ok &= gdn2_chunk_bwd(&d, &o, &ft, &bt) == GDN2_OK;
        double t2 = gdn2_now();
        ok &= gdn2_check_inputs(&d, &o, &ft, NULL) == GDN2_OK;
        double t3 = gdn2_now();
        ok &= gdn2_check_inputs(&d, &o, &ft, &bt) == GDN2_OK;
        double t4 = gdn2_now();
        tf = fmin(tf, t1 - t0), tb = fmin(tb, t2 - t1), tc = fmin(tc, t3 - t2), tcb = fmin(tcb, t4 - t3);
    }
    printf("INFO value scan, 1 thread, (B,T,H,K,V) = (1,4096,4,64,64): fwd %.2f ms, its scan %.3f ms (%.1f%%); "
           "bwd %.2f ms, its scan %.3f ms (%.1f%%)\n",
           1e3 * tf, 1e3 * tc, 100 * tc / tf, 1e3 * tb, 1e3 * tcb, 100 * tcb / tb);
    CHECK(ok, "timing run: chunk fwd/bwd and the scans succeed (%s)", gdn2_last_error());
    prob_free(&p);
}

int main(void) {
    if (make_tmp_dir("hostile_")) return test_summary();
    test_safetensors();
    test_config();
    test_dims();
    test_values();
    test_cli();
    test_fexp();
    time_scan();
    remove_tmp_dir();
    return test_summary();
}
