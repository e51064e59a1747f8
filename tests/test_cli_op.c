/* `gdn2 op` end to end: runs the CLI (cli_path(): build/gdn2, or $GDN2_CLI) as a subprocess from
 * the project root
 *   - on the official op fixtures with --impl reference, recurrent and chunk, checking the outputs
 *     against the fixture's ref64_* tensors (relative RMSE <= 1e-5 for o/ht, <= 1e-4 for every
 *     gradient) and reporting (asserting <= 5e-3) the figure against the official chunk_* tensors;
 *   - on a synthetic varlen + GVA + gate-in-kernel + bf16 file: chunk and recurrent vs reference;
 *   - on bad inputs: exit status 2 (not a signal), stderr naming the file / tensor, no output file. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "cli_run.h"
#include "gdn2.h"
#include "gdn2_cuda.h"

#define GDN2_BIN cli_path()

/* Tensor `name` of st as fp32 with the shape of `like` (any shape when like is NULL). */
static float *get(const gdn2_st *st, const char *name, const gdn2_tensor *like, size_t *n) {
    int64_t s[GDN2_MAX_DIMS];
    const gdn2_tensor *t = gdn2_st_find(st, name);
    if (!t) return NULL;
    for (int i = 0; i < t->ndim; i++) s[i] = like ? like->shape[i] : -1;
    float *x = NULL;
    if (like && like->ndim != t->ndim) return NULL;
    if (gdn2_st_get_f32(st, name, 1, t->ndim, s, &x)) return NULL;
    *n = t->nbytes / gdn2_dtype_size(t->dtype);
    return x;
}

/* --------------------------------------------------------------------------------------------- */
/* official fixtures                                                                             */
/* --------------------------------------------------------------------------------------------- */

static const char *const grad_names[] = {"dq", "dk", "dv", "dg", "db", "dw", "dh0", "dA_log", "ddt_bias"};

static void check_fixture(const char *fix) {
    char in[512];
    snprintf(in, sizeof in, "%s/%s.safetensors", fixture_dir(), fix);
    gdn2_st fx;
    if (gdn2_st_read(in, &fx)) {
        CHECK(0, "%s: read fixture %s: %s", fix, in, gdn2_last_error());
        return;
    }
    /* the 4th run is the CUDA chunk path (gdn2_cuda_chunk_*_host), skipped where it cannot run */
    static const char *const impls[] = {"reference", "recurrent", "chunk", "chunk"};
    static const char *const devices[] = {"cpu", "cpu", "cpu", "cuda"};
    for (int ii = 0; ii < 4; ii++) {
        const char *impl = impls[ii], *dev = devices[ii];
        int is_rec = !strcmp(impl, "recurrent");
        char outname[128];
        snprintf(outname, sizeof outname, "out_%s_%s_%s.safetensors", fix, impl, dev);
        const char *out = path_in(outname);
        const char *args[] = {"op", in, "-o", out, "--impl", impl, "--threads", "2", "--device", dev, NULL};
        if (!strcmp(dev, "cuda") && !gdn2_cuda_available()) {
            SKIP_NO_GPU("%s --device cuda: %s", fix, gdn2_last_error());
            continue;
        }
        int sig, rc = run_gdn2(args, &sig);
        if (!strcmp(dev, "cuda") && rc == 1 && !sig && contains(g_out, "not implemented")) {
            SKIP("%s --device cuda: %s", fix, first_line());
            continue;
        }
        CHECK(rc == 0 && !sig, "%s --impl %s --device %s: exit %d: %s", fix, impl, dev, rc, first_line());
        if (rc != 0) continue;
        CHECK(contains(g_out, "impl=") && contains(g_out, " ms"), "%s --impl %s: one-line summary on stderr", fix, impl);
        if (is_rec)
            CHECK(contains(g_out, "no backward"), "%s --impl recurrent with do: note that there is no backward", fix);
        gdn2_st os;
        if (gdn2_st_read(out, &os)) {
            CHECK(0, "%s --impl %s: read output: %s", fix, impl, gdn2_last_error());
            continue;
        }
        /* forward outputs: vs float64 (bar 1e-5), vs the official kernels (reported) */
        for (int j = 0; j < 2; j++) {
            const char *nm = j ? "ht" : "o";
            char rn[64], cn[64], qn[64];
            snprintf(rn, sizeof rn, "ref64_%s", nm);
            snprintf(cn, sizeof cn, "chunk_%s", nm);
            snprintf(qn, sizeof qn, "recurrent_%s", nm);
            size_t n = 0, nr = 0, nc = 0, nq = 0;
            const gdn2_tensor *rt = gdn2_st_find(&fx, rn);
            float *x = get(&os, nm, rt, &n), *r = get(&fx, rn, NULL, &nr), *c = get(&fx, cn, NULL, &nc),
                  *q = get(&fx, qn, NULL, &nq);
            int ok = x && r && n == nr && all_finite_f32(x, n);
            double e = ok ? rel_rmse_f32(x, r, n) : INFINITY;
            CHECK(ok && e <= 1e-5, "%s --impl %s: %s vs ref64 rel RMSE %.2e (<= 1e-5)", fix, impl, nm, e);
            if (ok && c && nc == n) {
                double ec = rel_rmse_f32(x, c, n);
                CHECK(ec <= 5e-3, "%s --impl %s: %s vs official chunk (TF32) rel RMSE %.2e (<= 5e-3)", fix, impl, nm, ec);
            }
            if (ok && is_rec && q && nq == n) {
                double eq = rel_rmse_f32(x, q, n);
                CHECK(eq <= 1e-5, "%s --impl recurrent: %s vs official recurrent rel RMSE %.2e (<= 1e-5)", fix, nm, eq);
            }
            free(x);
            free(r);
            free(c);
            free(q);
        }
        /* gradients: every ref64_d* of the fixture must be in the output (none for recurrent) */
        for (size_t j = 0; j < sizeof grad_names / sizeof grad_names[0]; j++) {
            const char *nm = grad_names[j];
            char rn[64], cn[64];
            snprintf(rn, sizeof rn, "ref64_%s", nm);
            snprintf(cn, sizeof cn, "chunk_%s", nm);
            const gdn2_tensor *rt = gdn2_st_find(&fx, rn);
            if (!rt) {
                CHECK(!gdn2_st_find(&os, nm), "%s --impl %s: no %s written (the fixture has none)", fix, impl, nm);
                continue;
            }
            if (is_rec) {
                CHECK(!gdn2_st_find(&os, nm), "%s --impl recurrent: no %s written", fix, nm);
                continue;
            }
            size_t n = 0, nr = 0, nc = 0;
            float *x = get(&os, nm, rt, &n), *r = get(&fx, rn, NULL, &nr), *c = get(&fx, cn, NULL, &nc);
            int ok = x && r && n == nr && all_finite_f32(x, n);
            double e = ok ? rel_rmse_f32(x, r, n) : INFINITY;
            CHECK(ok && e <= 1e-4, "%s --impl %s: %s %s vs ref64 rel RMSE %.2e (<= 1e-4)", fix, impl, nm,
                  x ? "" : "(missing or wrong shape)", e);
            if (ok && c && nc == n) {
                double ec = rel_rmse_f32(x, c, n);
                CHECK(ec <= 5e-3, "%s --impl %s: %s vs official chunk (TF32) rel RMSE %.2e (<= 5e-3)", fix, impl, nm, ec);
            }
            free(x);
            free(r);
            free(c);
        }
        gdn2_st_free(&os);
        unlink(out);
    }
    gdn2_st_free(&fx);
}

/* --------------------------------------------------------------------------------------------- */
/* synthetic inputs                                                                              */
/* --------------------------------------------------------------------------------------------- */

/* A small problem; tensors are owned here and written with gdn2_st_write. */
typedef struct {
    int64_t B, T, H, HV, K, V, N;
    float *q, *k, *v, *g, *b, *w, *h0, *A_log, *dt_bias, *d_o, *dht;
    int64_t cu[8];
    int n_cu; /* entries of cu (0: none) */
} problem;

static float *randn(size_t n, double scale, double shift, unsigned long long *s) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(shift + scale * test_normal(s));
    return x;
}

static float *sigm(size_t n, unsigned long long *s) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(1.0 / (1.0 + exp(-test_normal(s))));
    return x;
}

static void problem_init(problem *p, int64_t B, int64_t T, int64_t H, int64_t HV, int64_t K, int64_t V,
                         const int64_t *cu, int n_cu, unsigned long long seed) {
    memset(p, 0, sizeof *p);
    p->B = B, p->T = T, p->H = H, p->HV = HV, p->K = K, p->V = V;
    p->n_cu = n_cu;
    for (int i = 0; i < n_cu; i++) p->cu[i] = cu[i];
    p->N = n_cu ? n_cu - 1 : B;
    size_t nk = (size_t)(B * T * H * K), nv = (size_t)(B * T * HV * V), ns = (size_t)(p->N * HV * K * V);
    unsigned long long s = seed;
    p->q = randn(nk, 1, 0, &s);
    p->k = randn(nk, 1, 0, &s);
    p->v = randn(nv, 1, 0, &s);
    p->g = randn(nk, 0.5, 0, &s); /* raw gate (gate in kernel) */
    p->b = sigm(nk, &s);
    p->w = sigm(nv, &s);
    p->h0 = randn(ns, 0.1, 0, &s);
    p->A_log = randn((size_t)H, 0.5, 0.5, &s);
    p->dt_bias = randn((size_t)(H * K), 0.5, -2.0, &s);
    p->d_o = randn(nv, 1, 0, &s);
    p->dht = randn(ns, 1, 0, &s);
}

static void problem_free(problem *p) {
    float *all[] = {p->q, p->k, p->v, p->g, p->b, p->w, p->h0, p->A_log, p->dt_bias, p->d_o, p->dht};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static gdn2_tensor tensor4(const char *name, float *x, int64_t a, int64_t b, int64_t c, int64_t d) {
    gdn2_tensor t = {(char *)name, GDN2_F32, 4, {a, b, c, d}, (size_t)(a * b * c * d) * sizeof(float), x};
    return t;
}

/* Write p to path; `skip` omits a tensor, `override` replaces one by name, meta is the "meta" JSON. */
static int problem_write(const problem *p, const char *path, const char *skip, const gdn2_tensor *override,
                         const char *meta) {
    gdn2_tensor ts[16];
    int n = 0;
    ts[n++] = tensor4("q", p->q, p->B, p->T, p->H, p->K);
    ts[n++] = tensor4("k", p->k, p->B, p->T, p->H, p->K);
    ts[n++] = tensor4("v", p->v, p->B, p->T, p->HV, p->V);
    ts[n++] = tensor4("g", p->g, p->B, p->T, p->H, p->K);
    ts[n++] = tensor4("b", p->b, p->B, p->T, p->H, p->K);
    ts[n++] = tensor4("w", p->w, p->B, p->T, p->HV, p->V);
    ts[n++] = tensor4("h0", p->h0, p->N, p->HV, p->K, p->V);
    ts[n++] = (gdn2_tensor){"A_log", GDN2_F32, 1, {p->H}, (size_t)p->H * sizeof(float), p->A_log};
    ts[n++] = (gdn2_tensor){"dt_bias", GDN2_F32, 1, {p->H * p->K}, (size_t)(p->H * p->K) * sizeof(float), p->dt_bias};
    ts[n++] = tensor4("do", p->d_o, p->B, p->T, p->HV, p->V);
    ts[n++] = tensor4("dht", p->dht, p->N, p->HV, p->K, p->V);
    if (p->n_cu)
        ts[n++] = (gdn2_tensor){"cu_seqlens", GDN2_I64, 1, {p->n_cu}, (size_t)p->n_cu * 8, (void *)p->cu};
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (skip && !strcmp(ts[i].name, skip)) continue;
        if (override && !strcmp(ts[i].name, override->name)) ts[m++] = *override;
        else ts[m++] = ts[i];
    }
    if (override && !gdn2_st_find(&(gdn2_st){.n_tensors = m, .tensors = ts}, override->name)) ts[m++] = *override;
    const char *mk[] = {"meta"}, *mv[] = {meta};
    return gdn2_st_write(path, ts, m, mk, mv, meta ? 1 : 0);
}

/* The CLI must accept a varlen, GVA, gate-in-kernel, l2norm file with bf16 q: chunk and recurrent
 * must agree with the reference (all three see the same bf16-rounded q). */
static void check_synthetic(void) {
    problem p;
    int64_t cu[] = {0, 1, 65, 90};
    problem_init(&p, 1, 90, 2, 4, 16, 8, cu, 4, 42);
    /* q as bf16 (round to nearest even of the fp32 bits) to exercise the conversion path */
    size_t nk = (size_t)(p.T * p.H * p.K);
    uint16_t *qb = malloc(nk * 2);
    for (size_t i = 0; i < nk; i++) {
        uint32_t u;
        memcpy(&u, &p.q[i], 4);
        qb[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
    }
    gdn2_tensor qt = {"q", GDN2_BF16, 4, {1, p.T, p.H, p.K}, nk * 2, qb};
    const char *in = path_in("synthetic.safetensors");
    const char *meta = "{\"scale\": 0.3, \"use_qk_l2norm_in_kernel\": true, \"use_gate_in_kernel\": true, "
                       "\"lower_bound\": null, \"unrelated\": [1, 2]}";
    int rc = problem_write(&p, in, NULL, &qt, meta);
    CHECK(rc == 0, "write synthetic varlen/GVA/gate input (%s)", rc ? gdn2_last_error() : "ok");
    static const char *const impls[] = {"reference", "chunk", "recurrent"};
    gdn2_st outs[3];
    int have[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        char on[64];
        snprintf(on, sizeof on, "synthetic_%s.safetensors", impls[i]);
        const char *out = path_in(on);
        const char *args[] = {"op", in, "-o", out, "--impl", impls[i], NULL};
        int sig;
        rc = run_gdn2(args, &sig);
        CHECK(rc == 0 && !sig, "synthetic (T=90 in 3 sequences, H=2 HV=4 K=16 V=8, bf16 q) --impl %s: exit %d: %s",
              impls[i], rc, first_line());
        have[i] = rc == 0 && gdn2_st_read(out, &outs[i]) == 0;
        if (rc == 0 && i == 0)
            CHECK(contains(g_out, "N=3") && contains(g_out, "varlen"), "summary reports 3 packed sequences: %s", first_line());
    }
    if (have[0]) {
        const gdn2_tensor *dq = gdn2_st_find(&outs[0], "dq"), *dv = gdn2_st_find(&outs[0], "dv"),
                          *dal = gdn2_st_find(&outs[0], "dA_log"), *ddt = gdn2_st_find(&outs[0], "ddt_bias"),
                          *ht = gdn2_st_find(&outs[0], "ht");
        CHECK(dq && dq->shape[2] == 2 && dv && dv->shape[2] == 4 && dal && dal->shape[0] == 2 && ddt &&
                  ddt->shape[0] == 32 && ht && ht->shape[0] == 3,
              "reference output shapes: dq at H=2, dv at HV=4, dA_log [2], ddt_bias [32], ht [3,4,16,8]");
        const char *m = gdn2_st_meta(&outs[0], "meta");
        CHECK(m && contains(m, "\"scale\": 0.3") && contains(m, "\"use_gate_in_kernel\": true"),
              "output meta records the options: %s", m ? m : "(none)");
    }
    static const char *const names[] = {"o", "ht", "dq", "dk", "dv", "dg", "db", "dw", "dh0", "dA_log", "ddt_bias"};
    for (int i = 1; i < 3; i++) {
        if (!have[0] || !have[i]) continue;
        int n_names = i == 2 ? 2 : 11;
        for (int j = 0; j < n_names; j++) {
            size_t n = 0, nr = 0;
            const gdn2_tensor *rt = gdn2_st_find(&outs[0], names[j]);
            float *x = get(&outs[i], names[j], rt, &n), *r = get(&outs[0], names[j], NULL, &nr);
            int ok = x && r && n == nr && all_finite_f32(x, n);
            double e = ok ? rel_rmse_f32(x, r, n) : INFINITY, bar = j < 2 ? 1e-5 : 1e-4;
            CHECK(ok && e <= bar, "synthetic --impl %s: %s vs reference rel RMSE %.2e (<= %.0e)", impls[i], names[j], e, bar);
            free(x);
            free(r);
        }
    }
    for (int i = 0; i < 3; i++)
        if (have[i]) gdn2_st_free(&outs[i]);
    free(qb);
    problem_free(&p);
}

/* A bad input must exit 2 (not crash), name what is wrong, and leave no output file. */
static void expect_bad(const char *what, const char *in, const char *const *extra, const char *must1,
                       const char *must2, int want_rc) {
    const char *out = path_in("bad_out.safetensors");
    unlink(out);
    const char *args[16] = {"op", in, "-o", out};
    int n = 4;
    while (extra && *extra && n < 15) args[n++] = *extra++;
    args[n] = NULL;
    int sig, rc = run_gdn2(args, &sig);
    int ok = rc == want_rc && !sig && (!must1 || contains(g_out, must1)) && (!must2 || contains(g_out, must2)) &&
             access(out, F_OK) != 0;
    CHECK(ok, "bad input: %s -> exit %d%s: %s", what, rc, sig ? " (signal!)" : "", first_line());
}

static void check_bad_inputs(void) {
    problem p;
    problem_init(&p, 2, 5, 2, 2, 4, 4, NULL, 0, 7);
    const char *meta_gate = "{\"use_gate_in_kernel\": true}";
    char good[512], out[512]; /* path_in's buffers rotate: keep these two */
    snprintf(good, sizeof good, "%s", path_in("good.safetensors"));
    snprintf(out, sizeof out, "%s", path_in("good_out.safetensors"));
    int rc = problem_write(&p, good, NULL, NULL, meta_gate);
    const char *args[] = {"op", good, "-o", out, "--impl", "reference", NULL};
    int sig;
    rc = rc ? rc : run_gdn2(args, &sig);
    CHECK(rc == 0, "baseline synthetic input runs (exit %d: %s)", rc, first_line());
    unlink(out);

    /* forward only: without `do` only o and ht are written (dht alone is ignored with a note) */
    {
        char fwd[512];
        snprintf(fwd, sizeof fwd, "%s", path_in("fwd_only.safetensors"));
        problem_write(&p, fwd, "do", NULL, meta_gate);
        const char *a2[] = {"op", fwd, "-o", out, "--impl", "reference", NULL};
        rc = run_gdn2(a2, &sig);
        gdn2_st os;
        int ok = rc == 0 && contains(g_out, "dht ignored") && gdn2_st_read(out, &os) == 0;
        if (ok) {
            ok = os.n_tensors == 2 && gdn2_st_find(&os, "o") && gdn2_st_find(&os, "ht");
            gdn2_st_free(&os);
        }
        CHECK(ok, "no do in the input: only o and ht written, note about dht (exit %d: %s)", rc, first_line());
        unlink(out);
    }

    /* truncated: the last tensor's bytes run past the end */
    const char *tr = path_in("truncated.safetensors");
    problem_write(&p, tr, NULL, NULL, meta_gate);
    struct stat sb;
    stat(tr, &sb);
    if (truncate(tr, sb.st_size - 10) != 0) CHECK(0, "truncate");
    expect_bad("truncated file", tr, NULL, tr, "truncated", 2);

    /* garbled header */
    const char *gb = path_in("garbled.safetensors");
    static const char garbled[] = "\x20\0\0\0\0\0\0\0{\"q\": {\"dtype\": \"F32\", \"sh@@@@\x01\x02 !!!!!!!!!!!!!!";
    FILE *f = fopen(gb, "wb");
    fwrite(garbled, 1, sizeof garbled - 1, f);
    fclose(f);
    expect_bad("garbled header", gb, NULL, gb, "JSON", 2);

    /* q stored as I32 */
    size_t nk = (size_t)(p.B * p.T * p.H * p.K);
    int32_t *qi = calloc(nk, 4);
    gdn2_tensor qt = {"q", GDN2_I32, 4, {p.B, p.T, p.H, p.K}, nk * 4, qi};
    const char *pi = path_in("q_i32.safetensors");
    problem_write(&p, pi, NULL, &qt, meta_gate);
    expect_bad("q stored as I32", pi, NULL, pi, "tensor 'q' has dtype I32, expected a float dtype", 2);
    free(qi);

    /* v with the wrong T */
    float *big = calloc(4096, sizeof(float));
    gdn2_tensor vt = tensor4("v", big, p.B, p.T + 1, p.HV, p.V);
    const char *pv = path_in("v_shape.safetensors");
    problem_write(&p, pv, NULL, &vt, meta_gate);
    expect_bad("wrong shape of v", pv, NULL, pv, "tensor 'v' has shape [2,6,2,4], expected [2,5,*,*]", 2);

    /* w with fewer heads than v */
    gdn2_tensor wt = tensor4("w", big, p.B, p.T, 1, p.V);
    const char *pw = path_in("w_shape.safetensors");
    problem_write(&p, pw, NULL, &wt, meta_gate);
    expect_bad("wrong shape of w", pw, NULL, pw, "tensor 'w' has shape [2,5,1,4], expected [2,5,2,4]", 2);

    /* h0 of the wrong size */
    gdn2_tensor ht = tensor4("h0", big, 1, p.HV, p.K, p.V);
    const char *ph = path_in("h0_shape.safetensors");
    problem_write(&p, ph, NULL, &ht, meta_gate);
    expect_bad("wrong shape of h0", ph, NULL, ph, "tensor 'h0' has shape [1,2,4,4], expected [2,2,4,4]", 2);

    /* dt_bias as [H,K] rather than flat [H*K] */
    gdn2_tensor dtb = {"dt_bias", GDN2_F32, 2, {p.H, p.K}, (size_t)(p.H * p.K) * 4, big};
    const char *pd = path_in("dtb_shape.safetensors");
    problem_write(&p, pd, NULL, &dtb, meta_gate);
    expect_bad("dt_bias not flat", pd, NULL, pd, "tensor 'dt_bias' has shape [2,4], expected [8]", 2);

    /* HV not a multiple of H */
    problem p3;
    problem_init(&p3, 1, 5, 2, 3, 4, 4, NULL, 0, 8);
    const char *p3p = path_in("hv3.safetensors");
    problem_write(&p3, p3p, NULL, NULL, NULL);
    expect_bad("HV=3 not a multiple of H=2", p3p, NULL, p3p, "not a multiple", 2);
    problem_free(&p3);

    /* cu_seqlens not increasing, and with B != 1 */
    problem pc;
    int64_t cu_bad[] = {0, 3, 2, 5};
    problem_init(&pc, 1, 5, 2, 2, 4, 4, cu_bad, 4, 9);
    const char *pcp = path_in("cu_bad.safetensors");
    problem_write(&pc, pcp, NULL, NULL, NULL);
    expect_bad("cu_seqlens not increasing", pcp, NULL, pcp, "cu_seqlens", 2);
    problem_free(&pc);
    int64_t cu_ok[] = {0, 2, 5};
    gdn2_tensor cut = {"cu_seqlens", GDN2_I32, 1, {3}, 12, (int32_t[]){0, 2, 5}};
    (void)cu_ok;
    const char *pcb = path_in("cu_batch.safetensors");
    problem_write(&p, pcb, NULL, &cut, meta_gate);
    expect_bad("cu_seqlens with B=2", pcb, NULL, pcb, "B=1", 2);
    gdn2_tensor cuf = {"cu_seqlens", GDN2_F32, 1, {3}, 12, (float[]){0, 2, 5}};
    const char *pcf = path_in("cu_float.safetensors");
    problem_write(&p, pcf, NULL, &cuf, meta_gate);
    expect_bad("cu_seqlens stored as F32", pcf, NULL, "'cu_seqlens'", "integer", 2);

    /* missing tensors */
    const char *pm = path_in("no_w.safetensors");
    problem_write(&p, pm, "w", NULL, meta_gate);
    expect_bad("missing required tensor w", pm, NULL, pm, "'w'", 2);
    /* A_log / dt_bias are optional with the gate in kernel: absent = zero, for every implementation
     * (with do in the file: chunk and reference also write dA_log / ddt_bias) */
    {
        float zeros[64] = {0};
        const gdn2_tensor zt[2] = {{"A_log", GDN2_F32, 1, {p.H}, (size_t)p.H * sizeof(float), zeros},
                                   {"dt_bias", GDN2_F32, 1, {p.H * p.K}, (size_t)(p.H * p.K) * sizeof(float), zeros}};
        static const char *const impls[] = {"chunk", "reference", "recurrent"};
        for (int which = 0; which < 2; which++)
            for (int i = 0; i < 3; i++) {
                const char *pn = path_in("gate_absent.safetensors"), *pz = path_in("gate_zero.safetensors");
                const char *o1 = path_in("gate_absent_out.safetensors"), *o2 = path_in("gate_zero_out.safetensors");
                problem_write(&p, pn, zt[which].name, NULL, meta_gate);
                problem_write(&p, pz, NULL, &zt[which], meta_gate);
                const char *a1[] = {"op", pn, "-o", o1, "--impl", impls[i], NULL};
                const char *a2[] = {"op", pz, "-o", o2, "--impl", impls[i], NULL};
                int r1 = run_gdn2(a1, NULL);
                char msg1[1024];
                snprintf(msg1, sizeof msg1, "%s", first_line());
                int r2 = run_gdn2(a2, NULL), same = 0;
                gdn2_st sa, sb;
                if (r1 == 0 && r2 == 0 && gdn2_st_read(o1, &sa) == 0) {
                    if (gdn2_st_read(o2, &sb) == 0) {
                        same = sa.n_tensors == sb.n_tensors;
                        for (int j = 0; j < sb.n_tensors; j++) {
                            const gdn2_tensor *x = gdn2_st_find(&sa, sb.tensors[j].name);
                            same = same && x && x->nbytes == sb.tensors[j].nbytes &&
                                   !memcmp(x->data, sb.tensors[j].data, x->nbytes);
                        }
                        if (i < 2) same = same && gdn2_st_find(&sa, "dA_log") && gdn2_st_find(&sa, "ddt_bias");
                        gdn2_st_free(&sb);
                    }
                    gdn2_st_free(&sa);
                }
                CHECK(same, "gate in kernel without %s = with %s zero (--impl %s): exit %d / %d, same outputs: %s",
                      zt[which].name, zt[which].name, impls[i], r1, r2, msg1);
            }
    }

    /* options */
    const char *pmo = path_in("meta_bad.safetensors");
    problem_write(&p, pmo, NULL, NULL, "[1, 2]");
    expect_bad("meta not a JSON object", pmo, NULL, pmo, "meta", 2);
    const char *pms = path_in("meta_scale.safetensors");
    problem_write(&p, pms, NULL, NULL, "{\"scale\": \"big\"}");
    expect_bad("meta scale not a number", pms, NULL, pms, "scale", 2);
    const char *plb = path_in("meta_lb.safetensors");
    problem_write(&p, plb, NULL, NULL, "{\"lower_bound\": -1.0}");
    expect_bad("lower_bound without the gate in kernel", plb, NULL, plb, "lower_bound", 2);

    /* files and usage */
    const char *nf = path_in("does_not_exist.safetensors");
    expect_bad("missing input file", nf, NULL, nf, "cannot open", 2);
    expect_bad("input is a directory", g_dir, NULL, g_dir, NULL, 2);
    const char *bad_impl[] = {"--impl", "fast", NULL};
    expect_bad("--impl fast", good, bad_impl, "--impl", NULL, 2);
    const char *bad_thr[] = {"--threads", "two", NULL};
    expect_bad("--threads two", good, bad_thr, "--threads", NULL, 2);
    const char *bad_opt[] = {"--frobnicate", NULL};
    expect_bad("unknown option", good, bad_opt, "--frobnicate", NULL, 2);
    const char *noo[] = {"op", good, NULL};
    rc = run_gdn2(noo, &sig);
    CHECK(rc == 2 && !sig && contains(g_out, "-o"), "bad usage: no -o -> exit %d: %s", rc, first_line());
    const char *help[] = {"op", "--help", NULL};
    rc = run_gdn2(help, &sig);
    CHECK(rc == 0 && contains(g_out, "usage: gdn2 op") && contains(g_out, "cu_seqlens"), "gdn2 op --help -> exit %d", rc);
    const char *outdir[] = {"op", good, "-o", path_in("no/such/dir/out.safetensors"), "--impl", "reference", NULL};
    rc = run_gdn2(outdir, &sig);
    CHECK(rc == 1 && !sig && contains(g_out, "no/such/dir"), "unwritable output -> exit %d (runtime failure): %s", rc, first_line());

    /* --device cuda: runs, or fails cleanly with exit 1 where CUDA is missing or unimplemented */
    const char *cuda[] = {"op", good, "-o", out, "--device", "cuda", NULL};
    rc = run_gdn2(cuda, &sig);
    CHECK(!sig && (rc == 0 || (rc == 1 && g_out[0])), "--device cuda -> exit %d: %s", rc, first_line());
    unlink(out);
    const char *cuda_ref[] = {"--device", "cuda", "--impl", "reference", NULL};
    expect_bad("--device cuda --impl reference", good, cuda_ref, "chunk", NULL, 2);
    free(big);
    problem_free(&p);
}

int main(void) {
    if (access(GDN2_BIN, X_OK) != 0) {
        CHECK(0, "%s not found: run `make` first and run the tests from the project root", GDN2_BIN);
        return test_summary();
    }
    if (make_tmp_dir("test_cli_op.")) return test_summary();
    check_bad_inputs();
    check_synthetic();
    check_fixture("op_small");
    check_fixture("op_gate_in_kernel");
    check_fixture("op_gva");
    remove_tmp_dir();
    return test_summary();
}
