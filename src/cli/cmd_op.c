/* gdn2 op — run the GDN-2 kernels on tensors from a safetensors file and write the results.
 *
 * The input is the format of tests/fixtures/official/op_*.safetensors (and what a PyTorch user
 * writes with safetensors.torch.save_file): q,k,g,b [B,T,H,K], v,w,do [B,T,HV,V], h0,dht [N,HV,K,V],
 * A_log [H], dt_bias [H*K], cu_seqlens [N+1] (I32/I64), options in the __metadata__ key "meta"
 * (a JSON object). See docs/FORMATS.md. Exit: 0 ok, 2 bad usage / bad input file, 1 runtime failure. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_cuda.h"
#include "util/internal.h"

static void op_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 op IN.safetensors -o OUT.safetensors [--impl chunk|recurrent|reference]\n"
            "               [--threads N] [--device cpu|cuda]\n"
            "\n"
            "Runs the GDN-2 operator on the tensors of IN and writes o and ht (and, when IN holds `do`,\n"
            "the gradients) to OUT, all fp32.\n"
            "\n"
            "IN tensors (any of F32 F64 BF16 F16; layout of the official code / fla):\n"
            "  q, k, g, b   [B,T,H,K]   key heads (g is the log-decay, or the raw gate with the gate in kernel)\n"
            "  v, w         [B,T,HV,V]  value heads, HV a multiple of H (value head hv reads key head hv/(HV/H))\n"
            "  h0           [N,HV,K,V]  optional initial state (N = B, or the number of packed sequences)\n"
            "  A_log [H], dt_bias [H*K] read when use_gate_in_kernel (each optional: absent = zero)\n"
            "  cu_seqlens   [N+1]       optional, I32/I64: packed sequences (B must be 1)\n"
            "  do [B,T,HV,V], dht [N,HV,K,V]  optional upstream gradients: `do` turns on the backward\n"
            "Options: __metadata__ key \"meta\", a JSON object with optional keys scale (default K^-1/2),\n"
            "  use_qk_l2norm_in_kernel, use_gate_in_kernel, lower_bound; other keys are ignored.\n"
            "\n"
            "OUT tensors: o [B,T,HV,V], ht [N,HV,K,V]; with `do`: dq dk dg db [B,T,H,K], dv dw [B,T,HV,V],\n"
            "  dh0 [N,HV,K,V], and dA_log [H], ddt_bias [H*K] with the gate in kernel.\n"
            "\n"
            "  -o, --out PATH   output file (written atomically)\n"
            "  --impl NAME      chunk (default: fp32 chunkwise fwd+bwd), recurrent (fp32 token-serial,\n"
            "                   forward only), reference (float64 recurrence and BPTT backward)\n"
            "  --threads N      CPU threads (0 = OpenMP default)\n"
            "  --device NAME    cpu (default) or cuda (chunk only)\n"
            "Exit status: 0 ok, 2 bad usage or bad input file, 1 runtime failure.\n");
}

/* input tensors, indexed by the enum; each is loaded as fp32 (kernels) or fp64 (reference) */
enum { IN_Q, IN_K, IN_V, IN_G, IN_B, IN_W, IN_H0, IN_ALOG, IN_DTB, IN_DO, IN_DHT, N_IN };
static const char *const in_names[N_IN] = {"q", "k", "v", "g", "b", "w", "h0", "A_log", "dt_bias", "do", "dht"};

typedef struct {
    int ndim;
    int64_t shape[4];
    float *f;
    double *d;
} op_input;

/* outputs, in the order they are written */
enum { OUT_O, OUT_HT, OUT_DQ, OUT_DK, OUT_DV, OUT_DG, OUT_DB, OUT_DW, OUT_DH0, OUT_DALOG, OUT_DDTB, N_OUT };
static const char *const out_names[N_OUT] = {"o", "ht", "dq", "dk", "dv", "dg", "db", "dw", "dh0", "dA_log", "ddt_bias"};

typedef struct {
    int used;
    int ndim;
    int64_t shape[4];
    size_t n;
    float *f;
    double *d; /* reference: computed in float64, written as fp32 */
} op_output;

/* *n = the number of elements of shape s; 0 when the product overflows size_t */
static int prod(int ndim, const int64_t *s, size_t *n) {
    *n = 1;
    for (int i = 0; i < ndim; i++)
        if (s[i] < 0 || !gdn2_mul_sz(*n, (size_t)s[i], n)) return 0;
    return 1;
}

static void set_shape(int *ndim, int64_t *dst, int n, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t s[4] = {a, b, c, d};
    *ndim = n;
    memcpy(dst, s, sizeof s);
}

/* Option values from the "meta" JSON: a bool (or 0/1 number) and a number; null = absent. */
static int meta_bool(const char *path, const cJSON *m, const char *key, int *out) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(m, key);
    if (!x || cJSON_IsNull(x)) return GDN2_OK;
    if (cJSON_IsBool(x)) *out = cJSON_IsTrue(x);
    else if (cJSON_IsNumber(x) && (x->valuedouble == 0 || x->valuedouble == 1)) *out = x->valuedouble != 0;
    else return gdn2_error(GDN2_ERR_FORMAT, "%s: meta key '%s' must be true or false", path, key);
    return GDN2_OK;
}

static int meta_number(const char *path, const cJSON *m, const char *key, float *out) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(m, key);
    if (!x || cJSON_IsNull(x)) return GDN2_OK;
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
        return gdn2_error(GDN2_ERR_FORMAT, "%s: meta key '%s' must be a finite number", path, key);
    *out = (float)x->valuedouble;
    return GDN2_OK;
}

static int parse_meta(const gdn2_st *st, const char *path, gdn2_opts *o) {
    const char *s = gdn2_st_meta(st, "meta");
    if (!s) return GDN2_OK; /* all defaults */
    cJSON *m = cJSON_Parse(s);
    if (!m || !cJSON_IsObject(m)) {
        cJSON_Delete(m);
        return gdn2_error(GDN2_ERR_FORMAT, "%s: __metadata__ 'meta' is not a JSON object", path);
    }
    int rc = meta_number(path, m, "scale", &o->scale);
    if (!rc) rc = meta_bool(path, m, "use_qk_l2norm_in_kernel", &o->qk_l2norm);
    if (!rc) rc = meta_bool(path, m, "use_gate_in_kernel", &o->gate_in_kernel);
    if (!rc) rc = meta_number(path, m, "lower_bound", &o->lower_bound);
    cJSON_Delete(m);
    return rc;
}

int cmd_op(int argc, char **argv) {
    static const char *const impls[] = {"chunk", "recurrent", "reference"}, *const devices[] = {"cpu", "cuda"};
    const char *in_path = NULL, *out_path = NULL;
    int impl_i = 0, device_i = 0, n_threads = 0, npos = 0;
    const cli_opt opts[] = {
        CLI_OPT_STR("--out", "-o", &out_path),
        CLI_OPT_CHOICE("--impl", &impl_i, "chunk|recurrent|reference"),
        CLI_OPT_CHOICE("--device", &device_i, "cpu|cuda"),
        CLI_OPT_INT("--threads", &n_threads, 0, cli_max_threads()),
    };
    int prc = cli_parse("op", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), &in_path, 1, &npos, op_usage);
    if (prc) return prc < 0 ? 0 : prc;
    if (!in_path || !out_path) {
        fprintf(stderr, "gdn2 op: %s\n\n", !in_path ? "missing input file" : "missing -o OUT.safetensors");
        op_usage(stderr);
        return 2;
    }
    const char *impl = impls[impl_i], *device = devices[device_i];
    int use_ref = impl_i == 2, use_rec = impl_i == 1, use_chunk = impl_i == 0, use_cuda = device_i == 1;
    if (use_cuda && !use_chunk) {
        fprintf(stderr, "gdn2 op: --device cuda runs the chunk implementation only (got --impl %s)\n", impl);
        return 2;
    }
    if ((prc = cli_check_in("op", "input", in_path)) || (prc = cli_check_out("op", "--out", out_path))) return prc;

    int ret = 2, rc;
    gdn2_st st;
    op_input in[N_IN];
    op_output out[N_OUT];
    int64_t *cu = NULL;
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    if ((rc = gdn2_st_read(in_path, &st))) {
        fprintf(stderr, "gdn2 op: %s\n", gdn2_last_error());
        return rc == GDN2_ERR_NOMEM ? 1 : 2;
    }

    /* ---- shapes: q defines B,T,H,K; v defines HV,V; everything else is checked against them ---- */
    gdn2_dims d = {0};
    gdn2_opts o = {0};
    o.n_threads = n_threads;
    int64_t qs[4] = {-1, -1, -1, -1}, vs[4], cs[1] = {-1};
    if ((rc = gdn2_st_get_f32(&st, "q", 1, 4, qs, &in[IN_Q].f))) goto input_error;
    d.B = qs[0], d.T = qs[1], d.H = qs[2], d.K = qs[3];
    set_shape(&in[IN_V].ndim, vs, 4, d.B, d.T, -1, -1);
    if ((rc = gdn2_st_get_f32(&st, "v", 1, 4, vs, &in[IN_V].f))) goto input_error;
    d.HV = vs[2], d.V = vs[3];
    if ((rc = gdn2_st_get_i64(&st, "cu_seqlens", 0, 1, cs, &cu))) goto input_error;
    if (cu) {
        if (cs[0] < 2) {
            rc = gdn2_error(GDN2_ERR_FORMAT, "%s: tensor 'cu_seqlens' has shape [%lld], expected at least 2 entries",
                            in_path, (long long)cs[0]);
            goto input_error;
        }
        o.cu_seqlens = cu;
        o.n_seqs = cs[0] - 1;
    }
    if ((rc = parse_meta(&st, in_path, &o))) goto input_error;
    if ((rc = gdn2_check(&d, &o))) {
        char sq[96], sv[96];
        fprintf(stderr, "gdn2 op: %s: %s (q has shape %s, v has shape %s)\n", in_path, gdn2_last_error(),
                gdn2_shape_str(4, qs, sq, sizeof sq), gdn2_shape_str(4, vs, sv, sizeof sv));
        goto done;
    }
    int64_t N = gdn2_num_states(&d, &o);
    size_t HK; /* dt_bias [H*K] (gdn2_check bounds it; checked all the same) */
    if (!gdn2_mul_sz((size_t)d.H, (size_t)d.K, &HK)) {
        rc = gdn2_error(GDN2_ERR_FORMAT, "%s: H*K = %lld*%lld overflows", in_path, (long long)d.H, (long long)d.K);
        goto input_error;
    }
    set_shape(&in[IN_Q].ndim, in[IN_Q].shape, 4, d.B, d.T, d.H, d.K);
    set_shape(&in[IN_K].ndim, in[IN_K].shape, 4, d.B, d.T, d.H, d.K);
    set_shape(&in[IN_V].ndim, in[IN_V].shape, 4, d.B, d.T, d.HV, d.V);
    set_shape(&in[IN_G].ndim, in[IN_G].shape, 4, d.B, d.T, d.H, d.K);
    set_shape(&in[IN_B].ndim, in[IN_B].shape, 4, d.B, d.T, d.H, d.K);
    set_shape(&in[IN_W].ndim, in[IN_W].shape, 4, d.B, d.T, d.HV, d.V);
    set_shape(&in[IN_H0].ndim, in[IN_H0].shape, 4, N, d.HV, d.K, d.V);
    set_shape(&in[IN_ALOG].ndim, in[IN_ALOG].shape, 1, d.H, 0, 0, 0);
    set_shape(&in[IN_DTB].ndim, in[IN_DTB].shape, 1, (int64_t)HK, 0, 0, 0);
    set_shape(&in[IN_DO].ndim, in[IN_DO].shape, 4, d.B, d.T, d.HV, d.V);
    set_shape(&in[IN_DHT].ndim, in[IN_DHT].shape, 4, N, d.HV, d.K, d.V);

    /* ---- load every input at the working precision (q and v again for the reference) ---- */
    for (int i = 0; i < N_IN; i++) {
        /* A_log and dt_bias are optional with the gate in kernel: absent = zero (NULL to the ops) */
        int required = i <= IN_W;
        if ((i == IN_ALOG || i == IN_DTB) && !o.gate_in_kernel) {
            if (gdn2_st_find(&st, in_names[i]))
                fprintf(stderr, "gdn2 op: note: %s ignored (use_gate_in_kernel is off)\n", in_names[i]);
            continue;
        }
        if (use_ref) {
            free(in[i].f);
            in[i].f = NULL;
            rc = gdn2_st_get_f64(&st, in_names[i], required, in[i].ndim, in[i].shape, &in[i].d);
        } else if (!in[i].f) {
            rc = gdn2_st_get_f32(&st, in_names[i], required, in[i].ndim, in[i].shape, &in[i].f);
        }
        if (rc) goto input_error;
    }
    int have_do = use_ref ? in[IN_DO].d != NULL : in[IN_DO].f != NULL;
    int have_dht = use_ref ? in[IN_DHT].d != NULL : in[IN_DHT].f != NULL;
    if (have_dht && !have_do) fprintf(stderr, "gdn2 op: note: dht ignored without do (no backward)\n");
    int backward = have_do;
    if (backward && use_rec) {
        fprintf(stderr, "gdn2 op: note: the recurrent path has no backward; writing o and ht only\n");
        backward = 0;
    }
    /* values: finite, and g <= 0 without the gate in kernel. The CPU entry points check this
     * themselves, the CUDA ones do not (they take what is on the device): checked here, on the host,
     * for every implementation, so that a bad file is exit 2 with the tensor and index named. */
    if (use_ref) {
        gdn2_fwd_tensors_f64 vt = {in[IN_Q].d, in[IN_K].d, in[IN_V].d, in[IN_G].d, in[IN_B].d, in[IN_W].d,
                                   in[IN_H0].d, in[IN_ALOG].d, in[IN_DTB].d, NULL, NULL};
        gdn2_bwd_tensors_f64 vg = {.d_o = in[IN_DO].d, .dht = in[IN_DHT].d};
        rc = gdn2_check_inputs_f64(&d, &o, &vt, backward ? &vg : NULL);
    } else {
        gdn2_fwd_tensors vt = {in[IN_Q].f, in[IN_K].f, in[IN_V].f, in[IN_G].f, in[IN_B].f, in[IN_W].f,
                               in[IN_H0].f, in[IN_ALOG].f, in[IN_DTB].f, NULL, NULL};
        gdn2_bwd_tensors vg = {.d_o = in[IN_DO].f, .dht = in[IN_DHT].f};
        rc = gdn2_check_inputs(&d, &o, &vt, backward ? &vg : NULL);
    }
    if (rc) {
        fprintf(stderr, "gdn2 op: %s: %s\n", in_path, gdn2_last_error());
        goto done; /* ret is 2 */
    }

    /* ---- outputs ---- */
    ret = 1;
    set_shape(&out[OUT_O].ndim, out[OUT_O].shape, 4, d.B, d.T, d.HV, d.V);
    set_shape(&out[OUT_HT].ndim, out[OUT_HT].shape, 4, N, d.HV, d.K, d.V);
    out[OUT_O].used = out[OUT_HT].used = 1;
    if (backward) {
        static const int grad_of[] = {[OUT_DQ] = IN_Q, [OUT_DK] = IN_K, [OUT_DV] = IN_V, [OUT_DG] = IN_G,
                                      [OUT_DB] = IN_B, [OUT_DW] = IN_W, [OUT_DH0] = IN_H0,
                                      [OUT_DALOG] = IN_ALOG, [OUT_DDTB] = IN_DTB};
        for (int j = OUT_DQ; j < N_OUT; j++) {
            if ((j == OUT_DALOG || j == OUT_DDTB) && !o.gate_in_kernel) continue;
            out[j].used = 1;
            out[j].ndim = in[grad_of[j]].ndim;
            memcpy(out[j].shape, in[grad_of[j]].shape, sizeof out[j].shape);
        }
    }
    for (int j = 0; j < N_OUT; j++) {
        if (!out[j].used) continue;
        if (!prod(out[j].ndim, out[j].shape, &out[j].n)) {
            fprintf(stderr, "gdn2 op: %s: output '%s': element count overflows\n", in_path, out_names[j]);
            ret = 2; /* the shapes come from the input file */
            goto done;
        }
        out[j].f = gdn2_calloc(out[j].n, sizeof(float), out_names[j]);
        if (!out[j].f) goto runtime_error;
        if (use_ref && !(out[j].d = gdn2_calloc(out[j].n, sizeof(double), out_names[j]))) goto runtime_error;
    }

    /* ---- run ---- */
    double t0 = gdn2_now(), t1, t2;
    if (use_ref) {
        gdn2_fwd_tensors_f64 ft = {in[IN_Q].d, in[IN_K].d, in[IN_V].d, in[IN_G].d, in[IN_B].d, in[IN_W].d,
                                   in[IN_H0].d, in[IN_ALOG].d, in[IN_DTB].d, out[OUT_O].d, out[OUT_HT].d};
        if ((rc = gdn2_ref_fwd(&d, &o, &ft))) goto runtime_error;
        t1 = gdn2_now();
        if (backward) {
            gdn2_bwd_tensors_f64 bt = {in[IN_DO].d, in[IN_DHT].d, out[OUT_DQ].d, out[OUT_DK].d, out[OUT_DV].d,
                                       out[OUT_DG].d, out[OUT_DB].d, out[OUT_DW].d, out[OUT_DH0].d,
                                       out[OUT_DALOG].d, out[OUT_DDTB].d};
            if ((rc = gdn2_ref_bwd(&d, &o, &ft, &bt))) goto runtime_error;
        }
        t2 = gdn2_now();
        for (int j = 0; j < N_OUT; j++)
            for (size_t i = 0; out[j].used && i < out[j].n; i++) out[j].f[i] = (float)out[j].d[i];
    } else {
        gdn2_fwd_tensors ft = {in[IN_Q].f, in[IN_K].f, in[IN_V].f, in[IN_G].f, in[IN_B].f, in[IN_W].f,
                               in[IN_H0].f, in[IN_ALOG].f, in[IN_DTB].f, out[OUT_O].f, out[OUT_HT].f};
        rc = use_rec ? gdn2_recurrent_fwd(&d, &o, &ft)
             : use_cuda ? gdn2_cuda_chunk_fwd_host(&d, &o, &ft)
                        : gdn2_chunk_fwd(&d, &o, &ft);
        if (rc) goto runtime_error;
        t1 = gdn2_now();
        if (backward) {
            gdn2_bwd_tensors bt = {in[IN_DO].f, in[IN_DHT].f, out[OUT_DQ].f, out[OUT_DK].f, out[OUT_DV].f,
                                   out[OUT_DG].f, out[OUT_DB].f, out[OUT_DW].f, out[OUT_DH0].f,
                                   out[OUT_DALOG].f, out[OUT_DDTB].f};
            rc = use_cuda ? gdn2_cuda_chunk_bwd_host(&d, &o, &ft, &bt) : gdn2_chunk_bwd(&d, &o, &ft, &bt);
            if (rc) goto runtime_error;
        }
        t2 = gdn2_now();
    }

    /* ---- write: tensors plus a "meta" recording how they were made ---- */
    {
        gdn2_tensor ts[N_OUT];
        int n = 0;
        for (int j = 0; j < N_OUT; j++) {
            if (!out[j].used) continue;
            ts[n] = (gdn2_tensor){.name = (char *)out_names[j], .dtype = GDN2_F32, .ndim = out[j].ndim,
                                  .nbytes = out[j].n * sizeof(float), .data = out[j].f};
            memcpy(ts[n].shape, out[j].shape, sizeof out[j].shape);
            n++;
        }
        char meta[768];
        snprintf(meta, sizeof meta,
                 "{\"produced_by\": \"gdn2 op\", \"impl\": \"%s\", \"device\": \"%s\", \"scale\": %.9g, "
                 "\"use_qk_l2norm_in_kernel\": %s, \"use_gate_in_kernel\": %s, \"lower_bound\": %.9g, "
                 "\"backward\": %s, \"fwd_ms\": %.3f, \"bwd_ms\": %.3f}",
                 impl, device, (double)gdn2_scale(&d, &o), o.qk_l2norm ? "true" : "false",
                 o.gate_in_kernel ? "true" : "false", (double)o.lower_bound, backward ? "true" : "false",
                 1e3 * (t1 - t0), 1e3 * (t2 - t1));
        const char *mk[] = {"meta"}, *mv[] = {meta};
        if ((rc = gdn2_st_write(out_path, ts, n, mk, mv, 1))) {
            fprintf(stderr, "gdn2 op: cannot write the output: %s\n", gdn2_last_error());
            ret = 1;
            goto done;
        }
    }
    fprintf(stderr,
            "gdn2 op: impl=%s device=%s B=%lld T=%lld H=%lld HV=%lld K=%lld V=%lld N=%lld%s%s%s: fwd %.3f ms",
            impl, device, (long long)d.B, (long long)d.T, (long long)d.H, (long long)d.HV, (long long)d.K,
            (long long)d.V, (long long)N, cu ? " (varlen)" : "", o.qk_l2norm ? " l2norm" : "",
            o.gate_in_kernel ? " gate_in_kernel" : "", 1e3 * (t1 - t0));
    if (backward) fprintf(stderr, ", bwd %.3f ms", 1e3 * (t2 - t1));
    fprintf(stderr, " -> %s\n", out_path);
    ret = 0;
    goto done;

input_error:
    fprintf(stderr, "gdn2 op: %s\n", gdn2_last_error());
    ret = rc == GDN2_ERR_NOMEM ? 1 : 2;
    goto done;
runtime_error:
    fprintf(stderr, "gdn2 op: %s (%s) failed: %s\n", impl, device, gdn2_last_error());
    ret = 1;
done:
    for (int i = 0; i < N_IN; i++) {
        free(in[i].f);
        free(in[i].d);
    }
    for (int j = 0; j < N_OUT; j++) {
        free(out[j].f);
        free(out[j].d);
    }
    free(cu);
    gdn2_st_free(&st);
    return ret;
}
