/* The GatedDeltaNet2 layer (src/model/layer_gdn2.c, nn.c):
 *  1. conformance with the official module on tests/fixtures/official/layer.safetensors
 *     (y vs the float64 re-implementation, y and every gradient vs the official chunk path,
 *     y vs the official recurrent path), through the library and through `gdn2 layer`;
 *  2. central finite-difference gradient checks of the primitives (conv+SiLU, RMSNorm, gated
 *     RMSNorm) and of the whole layer for each mixer (gdn2, kda, gdn), with GVA, allow_neg_eigval
 *     and non-zero initial states;
 *  3. the fp32 chunk kernels vs the float64 recurrence inside the layer (forward and backward);
 *  4. decode-state layout: prefill T + M steps == forward over T+M, and chunked prefill. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "check.h"
#include "cli_run.h"
#include "gdn2.h"
#include "gdn2_io.h"
#include "gdn2_layer.h"
#include "backend/nn.h"

static double gdn2_now_for_test(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *randn(size_t n, double scale, unsigned long long *s) {
    float *x = malloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * test_normal(s));
    return x;
}

/* max|x − ref| / max|ref|: the metric of the official fixtures' README */
static double max_rel(const float *x, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)x[i] - ref[i]);
        if (e > num) num = e;
        if (fabs(ref[i]) > den) den = fabs(ref[i]);
    }
    return den > 0 ? num / den : num;
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* 1. official fixture                                                                        */
/* ------------------------------------------------------------------------------------------ */
static void test_fixture(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/layer.safetensors", fixture_dir());
    gdn2_st st;
    if (gdn2_st_read(path, &st)) {
        CHECK(0, "read %s: %s", path, gdn2_last_error());
        return;
    }
    /* the fixture's meta.config: hidden 256, head_dim 64, 4 heads, expand_v 1, conv 4 (the layer-file
     * reader shared with `gdn2 layer`) */
    const char *meta = gdn2_st_meta(&st, "meta");
    gdn2_layer_cfg c;
    int ok = gdn2_layer_config_from_file(&st, &c) == GDN2_OK, nfix = 0;
    CHECK(ok && c.hidden == 256 && c.H == 4 && c.HV == 4 && c.K == 64 && c.V == 64 && c.conv_size == 4 &&
              !c.allow_neg_eigval && c.norm_eps == 1e-5f && c.mixer == GDN2_MIXER_GDN2 && c.kernel == GDN2_KERNEL_CHUNK,
          "fixture meta.config is the expected (hidden 256, 4 heads x 64, conv 4): %s", ok ? "ok" : gdn2_last_error());
    if (!ok) c = (gdn2_layer_cfg){256, 4, 4, 64, 64, 4, 0, 1e-5f, GDN2_MIXER_GDN2, GDN2_KERNEL_CHUNK, 0};
    const int np = gdn2_layer_params(&c, NULL, 0);
    gdn2_param_info *pi = calloc((size_t)np, sizeof *pi);
    gdn2_layer_params(&c, pi, np);
    const size_t npar = gdn2_layer_param_count(&c);
    float *params = calloc(npar, sizeof(float));
    if (gdn2_layer_load_params(&c, &st, "param.", params)) {
        CHECK(0, "fixture parameters: %s", gdn2_last_error());
        ok = 0;
    }
    for (int i = 0; i < st.n_tensors; i++) nfix += !strncmp(st.tensors[i].name, "param.", 6);
    CHECK(ok && nfix == np, "our %d parameter names and shapes are exactly the fixture's %d param.* tensors", np, nfix);
    int64_t xs[3] = {-1, -1, 256}, s3[3] = {-1, -1, 256};
    float *x = NULL, *r = NULL, *y64 = NULL, *ytr = NULL, *yrec = NULL;
    gdn2_st_get_f32(&st, "x", 1, 3, xs, &x);
    gdn2_st_get_f32(&st, "r", 1, 3, s3, &r);
    gdn2_st_get_f32(&st, "ref64_train_y", 1, 3, s3, &y64);
    gdn2_st_get_f32(&st, "train_y", 1, 3, s3, &ytr);
    gdn2_st_get_f32(&st, "eval_recurrent_y", 1, 3, s3, &yrec);
    if (!ok || !x || !r || !y64 || !ytr || !yrec) {
        CHECK(0, "fixture tensors x, r, ref64_train_y, train_y, eval_recurrent_y present");
        goto out;
    }
    const int64_t B = xs[0], T = xs[1];
    const size_t ny = (size_t)(B * T * 256);
    float *y = malloc(ny * sizeof(float)), *dx = malloc(ny * sizeof(float));
    float *acts = malloc(gdn2_layer_act_size(&c, B, T) * sizeof(float));
    float *dp = calloc(npar, sizeof(float)), *dp64 = calloc(npar, sizeof(float)), *dx64 = malloc(ny * sizeof(float));

    for (int kernel = 1; kernel >= 0; kernel--) {
        const char *kn = kernel ? "float64-recurrence kernel" : "fp32 chunk kernel";
        c.kernel = kernel ? GDN2_KERNEL_REFERENCE : GDN2_KERNEL_CHUNK;
        double t0 = gdn2_now_for_test();
        int rc = gdn2_layer_forward(&c, params, x, B, T, y, acts, NULL, 0);
        CHECK(rc == 0, "layer forward (%s) on the fixture [B=%lld T=%lld d=256]: %s", kn, (long long)B, (long long)T,
              rc ? gdn2_last_error() : "ok");
        if (rc) continue;
        memset(dp, 0, npar * sizeof(float));
        rc = gdn2_layer_backward(&c, params, x, B, T, acts, r, dx, dp, 0);
        double t1 = gdn2_now_for_test();
        CHECK(rc == 0, "layer backward (%s): %s (fwd+bwd %.2fs)", kn, rc ? gdn2_last_error() : "ok", t1 - t0);
        if (rc) continue;
        const double e64 = rel_rmse_f32(y, y64, ny);
        CHECK(e64 <= 1e-5, "y vs ref64_train_y (%s): relative RMSE %.2e <= 1e-5", kn, e64);
        const double etr = max_rel(y, ytr, ny);
        CHECK(etr <= 5e-3, "y vs official train_y (%s): max|diff|/max|ref| %.2e <= 5e-3", kn, etr);
        const double erc = max_rel(y, yrec, ny);
        CHECK(erc <= 5e-3 && rel_rmse_f32(y, yrec, ny) <= 1e-5,
              "y vs official eval_recurrent_y (%s): %.2e <= 5e-3, relative RMSE %.2e <= 1e-5", kn, erc,
              rel_rmse_f32(y, yrec, ny));
        const double loss = dot_d(y, r, ny);
        CHECK(fabs(loss - 0.1400703489780426) <= 5e-3 * 0.1400703489780426 + 1e-6,
              "loss sum(y*r) %.7f vs official 0.1400703 (%s)", loss, kn);
        float *g = NULL;
        int64_t gs[3] = {B, T, 256};
        gdn2_st_get_f32(&st, "grad.x", 1, 3, gs, &g);
        double worst = g ? max_rel(dx, g, ny) : 1;
        CHECK(g && worst <= 5e-3, "grad.x vs official (%s): %.2e <= 5e-3", kn, worst);
        free(g);
        double wall = 0;
        const char *wname = "";
        int all = 1;
        for (int i = 0; i < np; i++) {
            char name[128];
            snprintf(name, sizeof name, "grad.%s", pi[i].name);
            int64_t shape[4];
            memcpy(shape, pi[i].shape, sizeof shape);
            if (gdn2_st_get_f32(&st, name, 1, pi[i].ndim, shape, &g)) { all = 0; continue; }
            const double e = max_rel(dp + pi[i].offset, g, pi[i].numel);
            if (e > 5e-3) printf("  %s: %.2e\n", name, e);
            if (e > wall) { wall = e; wname = pi[i].name; }
            free(g);
        }
        CHECK(all && wall <= 5e-3, "every grad.<param> (%d) vs official (%s): worst %.2e (%s) <= 5e-3", np, kn, wall,
              wname);
        if (kernel) { memcpy(dp64, dp, npar * sizeof(float)); memcpy(dx64, dx, ny * sizeof(float)); }
        else {
            /* the chunk kernels against the float64 recurrence inside the whole layer */
            double ep = 0;
            for (int i = 0; i < np; i++) {
                double e = rel_rmse_f32(dp + pi[i].offset, dp64 + pi[i].offset, pi[i].numel);
                if (e > ep) ep = e;
            }
            CHECK(ep <= 1e-4 && rel_rmse_f32(dx, dx64, ny) <= 1e-4,
                  "layer grads, chunk vs float64 kernel: worst relative RMSE %.2e, grad.x %.2e (<= 1e-4)", ep,
                  rel_rmse_f32(dx, dx64, ny));
        }
    }

    /* the CLI on the same file (when built): exit 0 and the same y / grads */
    if (access(cli_path(), X_OK) == 0) {
        char cmd[1200];
        const char *out = "/tmp/gdn2_test_layer_out.safetensors";
        snprintf(cmd, sizeof cmd, "%s layer %s -o %s > /dev/null", cli_path(), path, out);
        int rc = system(cmd);
        CHECK(rc == 0, "gdn2 layer IN -o OUT exits 0");
        gdn2_st o;
        if (rc == 0 && gdn2_st_read(out, &o) == 0) {
            float *cy = NULL, *cg = NULL, *want = NULL;
            int64_t a[3] = {B, T, 256};
            gdn2_st_get_f32(&o, "y", 1, 3, a, &cy);
            gdn2_st_get_f32(&o, "grad.x", 1, 3, a, &cg);
            CHECK(cy && rel_rmse_f32(cy, y64, ny) <= 1e-5 && cg && max_rel(cg, dx, ny) <= 1e-4,
                  "CLI y vs ref64_train_y %.2e, CLI grad.x vs library %.2e", cy ? rel_rmse_f32(cy, y64, ny) : -1.0,
                  cg ? max_rel(cg, dx, ny) : -1.0);
            int n_grads = 0;
            for (int i = 0; i < o.n_tensors; i++) n_grads += !strncmp(o.tensors[i].name, "grad.", 5);
            int64_t s1[1] = {4};
            gdn2_st_get_f32(&o, "grad.A_log", 1, 1, s1, &want);
            CHECK(n_grads == np + 1 && want, "CLI wrote grad.x and grad.<name> for all %d parameters (%d grads)", np,
                  n_grads);
            free(cy); free(cg); free(want);
            gdn2_st_free(&o);
        }
        remove(out);
        /* a missing parameter and a mis-shaped one are rejected with exit 2 and a message naming them */
        const char *bad = "/tmp/gdn2_test_layer_bad.safetensors";
        for (int variant = 0; variant < 2; variant++) {
            gdn2_tensor ts[64];
            int nt = 0;
            for (int i = 0; i < st.n_tensors && nt < 64; i++) {
                const gdn2_tensor *t = &st.tensors[i];
                if (strncmp(t->name, "param.", 6) && strcmp(t->name, "x")) continue;
                if (variant == 0 && !strcmp(t->name, "param.w_proj.weight")) continue;
                ts[nt] = *t;
                if (variant == 1 && !strcmp(t->name, "param.A_log")) { ts[nt].shape[0] = 2; ts[nt].nbytes = 8; }
                nt++;
            }
            const char *mk[1] = {"meta"}, *mv[1] = {meta};
            gdn2_st_write(bad, ts, nt, mk, mv, 1);
            rc = run("%s layer %s -o %s.out", cli_path(), bad, bad);
            const char *need = variant == 0 ? "w_proj.weight" : "A_log";
            CHECK(rc == 2 && strstr(g_out, need), "CLI rejects a %s parameter with exit 2 naming it: %s",
                  variant == 0 ? "missing" : "mis-shaped", g_out[0] ? first_line() : "(no message)");
            remove(bad);
        }
    } else {
        CHECK(0, "gdn2 layer CLI: %s not built or not executable (make; or set GDN2_CLI)", cli_path());
    }
    free(y); free(dx); free(acts); free(dp); free(dp64); free(dx64);
out:
    free(x); free(r); free(y64); free(ytr); free(yrec); free(params); free(pi);
    gdn2_st_free(&st);
}

/* ------------------------------------------------------------------------------------------ */
/* 2. finite differences                                                                      */
/* ------------------------------------------------------------------------------------------ */
/* Central FD of L(θ) = Σ out⊙r (double accumulation) at a few random entries of a tensor, vs the
 * analytic gradient. err = |fd − an| / (max|an over the tensor| + tiny): fp32 forward noise
 * divided by 2h sets the floor, so the tolerance is relative to the tensor's gradient scale. */
typedef double (*loss_fn)(void *ctx);

static double fd_check(loss_fn L, void *ctx, float *theta, const float *an, size_t n, int picks, float h,
                       unsigned long long *s) {
    double amax = 0, worst = 0;
    for (size_t i = 0; i < n; i++) amax = fmax(amax, fabs(an[i]));
    for (int p = 0; p < picks; p++) {
        size_t i = (size_t)(test_uniform(s) * n) % n;
        const float keep = theta[i];
        /* Richardson: (4 D(h/2) − D(h)) / 3 cancels the h² term of the central difference D, so h
         * can stay large enough for the fp32 noise of L to vanish against 2h. Where the loss curves
         * sharply (a q/k vector of small norm before its L2 norm), a 4x smaller h is tried too and
         * the better of the two is kept: a wrong analytic gradient fails both. */
        double e = INFINITY;
        for (int hs = 0; hs < 2 && e > 5e-4; hs++) {
            double D[2];
            for (int k = 0; k < 2; k++) {
                const float step = (k ? 0.5f : 1.0f) * (hs ? 0.25f : 1.0f) * h * fmaxf(1.0f, fabsf(keep));
                theta[i] = keep + step;
                const float up = theta[i];
                const double lp = L(ctx);
                theta[i] = keep - step;
                const float dn = theta[i];
                const double lm = L(ctx);
                D[k] = (lp - lm) / ((double)up - (double)dn);
            }
            theta[i] = keep;
            const double fd = (4.0 * D[1] - D[0]) / 3.0;
            e = fmin(e, fabs(fd - an[i]) / (amax + 1e-30));
        }
        if (e > worst) worst = e;
    }
    return worst;
}

/* primitives ---------------------------------------------------------------------------------- */
typedef struct {
    int kind; /* 0 conv+silu, 1 rmsnorm, 2 gated rmsnorm */
    int64_t B, T, D, W;
    float *x, *hist, *w, *gate, *r, *y;
} prim_ctx;

static double prim_loss(void *p) {
    prim_ctx *c = p;
    const size_t n = (size_t)(c->B * c->T * c->D);
    if (c->kind == 0)
        gdn2_conv_silu_fwd(c->B, c->T, c->D, c->W, c->x, c->hist, (size_t)((c->W - 1) * c->D), c->w, c->y, 1);
    else if (c->kind == 1)
        gdn2_rmsnorm_fwd(c->B * c->T, c->D, c->x, c->w, 1e-5f, c->y, NULL, 1);
    else
        gdn2_rmsnorm_swish_fwd(c->B * c->T, c->D, c->x, c->gate, c->w, 1e-5f, c->y, 1);
    return dot_d(c->y, c->r, n);
}

static void test_primitives(void) {
    unsigned long long s = 7;
    for (int kind = 0; kind < 3; kind++) {
        for (int with_hist = 0; with_hist < (kind == 0 ? 2 : 1); with_hist++) {
            prim_ctx c = {kind, 2, 9, 12, 4, NULL, NULL, NULL, NULL, NULL, NULL};
            const size_t n = (size_t)(c.B * c.T * c.D);
            c.x = randn(n, 1.0, &s);
            c.r = randn(n, 1.0, &s);
            c.y = malloc(n * sizeof(float));
            c.w = randn(kind == 0 ? (size_t)(c.D * c.W) : (size_t)c.D, kind == 0 ? 0.5 : 1.0, &s);
            c.gate = kind == 2 ? randn(n, 1.5, &s) : NULL;
            c.hist = with_hist ? randn((size_t)(c.B * (c.W - 1) * c.D), 1.0, &s) : NULL;
            float *dx = malloc(n * sizeof(float)), *dg = malloc(n * sizeof(float));
            float *dw = calloc((size_t)(c.D * c.W), sizeof(float));
            if (kind == 0)
                gdn2_conv_silu_bwd(c.B, c.T, c.D, c.W, c.x, c.hist, (size_t)((c.W - 1) * c.D), c.w, c.r, dx, dw, 1);
            else if (kind == 1) {
                float *rs = malloc((size_t)(c.B * c.T) * sizeof(float));
                gdn2_rmsnorm_fwd(c.B * c.T, c.D, c.x, c.w, 1e-5f, c.y, rs, 1);
                gdn2_rmsnorm_bwd(c.B * c.T, c.D, c.x, c.w, rs, c.r, dx, 0, dw, 1);
                free(rs);
            }
            else
                gdn2_rmsnorm_swish_bwd(c.B * c.T, c.D, c.x, c.gate, c.w, 1e-5f, c.r, dx, dg, dw, 1);
            const char *nm = kind == 0 ? (with_hist ? "conv+SiLU (with history)" : "conv+SiLU")
                                       : kind == 1 ? "RMSNorm" : "gated RMSNorm (swish)";
            double ex = fd_check(prim_loss, &c, c.x, dx, n, 20, 1e-2f, &s);
            double ew = fd_check(prim_loss, &c, c.w, dw, kind == 0 ? (size_t)(c.D * c.W) : (size_t)c.D, 12, 1e-2f, &s);
            double eg = kind == 2 ? fd_check(prim_loss, &c, c.gate, dg, n, 20, 1e-2f, &s) : 0;
            CHECK(ex < 2e-3 && ew < 2e-3 && eg < 2e-3, "FD %s: dx %.1e, dw %.1e, dgate %.1e (< 2e-3 of max|grad|)", nm, ex,
                  ew, eg);
            free(c.x); free(c.r); free(c.y); free(c.w); free(c.gate); free(c.hist); free(dx); free(dg); free(dw);
        }
    }
    /* the conv history update: hist ++ x keeps the last W-1 rows */
    {
        const int64_t D = 3, W = 4, T = 2;
        float hist[9], x[6];
        for (int i = 0; i < 9; i++) hist[i] = (float)(i / 3);     /* rows 0,1,2 */
        for (int i = 0; i < 6; i++) x[i] = (float)(10 + i / 3);   /* rows 10,11 */
        gdn2_conv_hist_update(1, T, D, W, x, hist, 9);
        CHECK(hist[0] == 2 && hist[3] == 10 && hist[6] == 11 && hist[8] == 11, "conv cache update keeps the last W-1 inputs");
    }
}

/* whole layer ---------------------------------------------------------------------------------- */
typedef struct {
    gdn2_layer_cfg c;
    int64_t B, T;
    float *params, *x, *r, *y, *st0, *st;
} layer_ctx;

static double layer_loss(void *p) {
    layer_ctx *L = p;
    const size_t ss = gdn2_layer_state_size(&L->c) * (size_t)L->B;
    if (L->st0) memcpy(L->st, L->st0, ss * sizeof(float));
    gdn2_layer_forward(&L->c, L->params, L->x, L->B, L->T, L->y, NULL, L->st0 ? L->st : NULL, 1);
    return dot_d(L->y, L->r, (size_t)(L->B * L->T * L->c.hidden));
}

/* random parameters at a scale that makes every path matter (the official init is tiny) */
static void random_params(const gdn2_layer_cfg *c, float *params, unsigned long long *s) {
    gdn2_param_info pi[32];
    const int np = gdn2_layer_params(c, pi, 32);
    gdn2_layer_init(c, params, 3);
    for (int i = 0; i < np; i++) {
        float *p = params + pi[i].offset;
        if (!strcmp(pi[i].name, "A_log") || !strcmp(pi[i].name, "dt_bias")) {
            for (size_t j = 0; j < pi[i].numel; j++) p[j] += (float)(0.3 * test_normal(s));
            continue;
        }
        const double fan = pi[i].ndim >= 2 ? (double)pi[i].shape[pi[i].ndim == 3 ? 2 : 1] : 1.0;
        const double sc = pi[i].ndim == 1 ? 0.5 : 1.0 / sqrt(fan);
        for (size_t j = 0; j < pi[i].numel; j++) p[j] = (pi[i].ndim == 1 && strstr(pi[i].name, "norm") ? 1.0f : 0.0f) +
                                                        (float)(sc * test_normal(s));
    }
}

static void test_layer_fd(void) {
    static const struct {
        const char *name;
        gdn2_mixer_kind mixer;
        int64_t H, HV, K, V;
        int neg, with_state;
    } cases[] = {
        {"gdn2", GDN2_MIXER_GDN2, 2, 2, 8, 8, 0, 0},
        {"gdn2 GVA (H=2, HV=4, V=2K) + allow_neg_eigval", GDN2_MIXER_GDN2, 2, 4, 8, 16, 1, 0},
        {"gdn2 from non-zero initial states", GDN2_MIXER_GDN2, 2, 2, 8, 8, 0, 1},
        {"kda", GDN2_MIXER_KDA, 2, 2, 8, 8, 0, 0},
        {"kda GVA + allow_neg_eigval", GDN2_MIXER_KDA, 2, 4, 8, 8, 1, 1},
        {"gdn", GDN2_MIXER_GDN, 2, 2, 8, 8, 0, 0},
        {"gdn GVA + allow_neg_eigval", GDN2_MIXER_GDN, 1, 2, 8, 8, 1, 1},
    };
    unsigned long long s = 11;
    const float H_FD = 2e-2f; /* with Richardson: worst FD error ~7e-4 over 8 seeds, vs ~1e-2 at 3e-2 plain */
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        layer_ctx L;
        memset(&L, 0, sizeof L);
        L.c = (gdn2_layer_cfg){16, cases[ci].H, cases[ci].HV, cases[ci].K, cases[ci].V, 4, cases[ci].neg, 1e-5f,
                               cases[ci].mixer, GDN2_KERNEL_REFERENCE, 0};
        /* FD through the float64 recurrence: the fp32 noise floor is the layer's alone */
        L.B = 2;
        L.T = 7;
        const size_t npar = gdn2_layer_param_count(&L.c), n = (size_t)(L.B * L.T * L.c.hidden);
        const size_t ss = gdn2_layer_state_size(&L.c) * (size_t)L.B;
        L.params = malloc(npar * sizeof(float));
        random_params(&L.c, L.params, &s);
        L.x = randn(n, 1.0, &s);
        L.r = randn(n, 1.0, &s);
        L.y = malloc(n * sizeof(float));
        if (cases[ci].with_state) {
            L.st0 = randn(ss, 0.5, &s);
            L.st = malloc(ss * sizeof(float));
            memcpy(L.st, L.st0, ss * sizeof(float));
        }
        float *acts = malloc(gdn2_layer_act_size(&L.c, L.B, L.T) * sizeof(float));
        float *dx = malloc(n * sizeof(float)), *dp = calloc(npar, sizeof(float));
        int rc = gdn2_layer_forward(&L.c, L.params, L.x, L.B, L.T, L.y, acts, L.st, 1);
        rc = rc ? rc : gdn2_layer_backward(&L.c, L.params, L.x, L.B, L.T, acts, L.r, dx, dp, 1);
        CHECK(rc == 0, "layer %s: forward+backward run: %s", cases[ci].name, rc ? gdn2_last_error() : "ok");
        if (rc == 0) {
            gdn2_param_info pi[32];
            const int np = gdn2_layer_params(&L.c, pi, 32);
            double worst = fd_check(layer_loss, &L, L.x, dx, n, 6, H_FD, &s);
            const char *wn = "x";
            for (int i = 0; i < np; i++) {
                double e = fd_check(layer_loss, &L, L.params + pi[i].offset, dp + pi[i].offset, pi[i].numel, 4,
                                    H_FD, &s);
                if (e > worst) { worst = e; wn = pi[i].name; }
            }
            CHECK(worst < 5e-3, "FD layer %s: x and all %d parameters, worst %.1e (%s) < 5e-3 of max|grad|",
                  cases[ci].name, np, worst, wn);
        }
        /* the same layer through the fp32 chunk kernels vs the float64 recurrence, T = 150 (3 chunks) */
        {
            const int64_t T2 = 150;
            const size_t n2 = (size_t)(L.B * T2 * L.c.hidden);
            float *x2 = randn(n2, 1.0, &s), *r2 = randn(n2, 1.0, &s), *y2 = malloc(n2 * sizeof(float));
            float *a2 = malloc(gdn2_layer_act_size(&L.c, L.B, T2) * sizeof(float));
            /* kern 2: the chunk kernels in keep mode (the saved pair; its reserve in the activations) */
            gdn2_layer_cfg ck = L.c;
            ck.kernel = GDN2_KERNEL_CHUNK, ck.keep_chunk = 1;
            float *ak = malloc(gdn2_layer_act_size(&ck, L.B, T2) * sizeof(float));
            float *dxk[3] = {malloc(n2 * sizeof(float)), malloc(n2 * sizeof(float)), malloc(n2 * sizeof(float))};
            float *dpk[3] = {calloc(npar, sizeof(float)), calloc(npar, sizeof(float)), calloc(npar, sizeof(float))};
            float *yk[3] = {malloc(n2 * sizeof(float)), malloc(n2 * sizeof(float)), malloc(n2 * sizeof(float))};
            int rc2 = 0;
            for (int kern = 0; kern < 3 && !rc2; kern++) {
                L.c.kernel = kern == 1 ? GDN2_KERNEL_REFERENCE : GDN2_KERNEL_CHUNK;
                L.c.keep_chunk = kern == 2;
                float *ab = kern == 2 ? ak : a2;
                if (L.st0) memcpy(L.st, L.st0, ss * sizeof(float));
                rc2 = gdn2_layer_forward(&L.c, L.params, x2, L.B, T2, yk[kern], ab, L.st0 ? L.st : NULL, 1);
                rc2 = rc2 ? rc2 : gdn2_layer_backward(&L.c, L.params, x2, L.B, T2, ab, r2, dxk[kern], dpk[kern], 1);
            }
            L.c.kernel = GDN2_KERNEL_REFERENCE, L.c.keep_chunk = 0;
            gdn2_param_info pi[32];
            const int np = gdn2_layer_params(&L.c, pi, 32);
            double ep = rc2 ? 1 : rel_rmse_f32(dxk[0], dxk[1], n2);
            const double ey = rc2 ? 1 : rel_rmse_f32(yk[0], yk[1], n2);
            /* A_log's gradient is one sum over all tokens and channels of terms of both signs, so it
             * carries the fp32 kernel's dg error with cancellation (measured up to 5e-5): it is
             * scored at 1/3 weight against the common 1e-4 bound */
            const char *wn = "x";
            for (int i = 0; i < np && !rc2; i++) {
                double e = rel_rmse_f32(dpk[0] + pi[i].offset, dpk[1] + pi[i].offset, pi[i].numel);
                if (!strcmp(pi[i].name, "A_log")) e /= 3.0;
                if (e > ep) { ep = e; wn = pi[i].name; }
            }
            CHECK(!rc2 && ey <= 1e-5 && ep <= 1e-4,
                  "layer %s, T=%lld: chunk kernels vs float64 recurrence: y %.1e (<= 1e-5), worst grad %.1e (%s, <= 1e-4; A_log /3) %s",
                  cases[ci].name, (long long)T2, ey, ep, wn, rc2 ? gdn2_last_error() : "");
            /* keep mode against recompute: the same forward bits (gdn2_chunk_fwd_save), gradients to
             * the saved pair's rounding (~1e-7; bar 1e-6); the reserve is there. The decay path's
             * parameters (f_proj, a_proj, A_log, dt_bias) get their gradients from dg, sums over tokens
             * of terms of both signs (as above): that rounding comes out amplified by the cancellation,
             * by how much depends on the machine's BLAS kernels (measured up to 4.3e-6, A_log, on an
             * AMD EPYC VM with OpenBLAS's Zen kernels; below 1e-6 on the Intel VMs): scored at 1/10 */
            double ek = rc2 ? 1 : rel_rmse_f32(dxk[2], dxk[0], n2);
            const char *wk = "x";
            for (int i = 0; i < np && !rc2; i++) {
                double e = rel_rmse_f32(dpk[2] + pi[i].offset, dpk[0] + pi[i].offset, pi[i].numel);
                if (!strncmp(pi[i].name, "f_proj", 6) || !strncmp(pi[i].name, "a_proj", 6) ||
                    !strcmp(pi[i].name, "A_log") || !strcmp(pi[i].name, "dt_bias"))
                    e /= 10.0;
                if (e > ek) { ek = e; wk = pi[i].name; }
            }
            /* ... and the backward reads it: a reserve changed between the calls changes the gradients */
            int used = 0;
            if (!rc2) {
                const size_t na = gdn2_layer_act_size(&ck, L.B, T2), nr = na - gdn2_layer_act_size(&L.c, L.B, T2);
                float *dxc = malloc(n2 * sizeof(float)), *dpc = calloc(npar, sizeof(float));
                if (L.st0) memcpy(L.st, L.st0, ss * sizeof(float));
                int r3 = gdn2_layer_forward(&ck, L.params, x2, L.B, T2, yk[1], ak, L.st0 ? L.st : NULL, 1);
                for (size_t i = na - nr; i < na; i++) ak[i] = ak[i] * 0.5f + 0.25f;
                r3 = r3 ? r3 : gdn2_layer_backward(&ck, L.params, x2, L.B, T2, ak, r2, dxc, dpc, 1);
                used = !r3 && memcmp(dxc, dxk[2], n2 * sizeof(float)) != 0;
                free(dxc), free(dpc);
            }
            CHECK(used, "layer %s: keep_chunk: the backward reads the reserve (changing it changes dx)", cases[ci].name);
            CHECK(!rc2 && !memcmp(yk[2], yk[0], n2 * sizeof(float)) && ek <= 1e-6 &&
                      gdn2_layer_act_size(&ck, L.B, T2) > gdn2_layer_act_size(&L.c, L.B, T2),
                  "layer %s, T=%lld: keep_chunk vs recompute: y %s, worst grad %.1e (%s, <= 1e-6; the decay path's /10), activations %zu > %zu floats",
                  cases[ci].name, (long long)T2, rc2 ? "-" : !memcmp(yk[2], yk[0], n2 * sizeof(float)) ? "same bits" : "DIFFER",
                  ek, wk, gdn2_layer_act_size(&ck, L.B, T2), gdn2_layer_act_size(&L.c, L.B, T2));
            free(x2); free(r2); free(y2); free(a2); free(ak);
            for (int i = 0; i < 3; i++) free(dxk[i]), free(dpk[i]), free(yk[i]);
        }
        free(L.params); free(L.x); free(L.r); free(L.y); free(L.st0); free(L.st); free(acts); free(dx); free(dp);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* 3./4. chunk vs float64 kernel; decode state                                                */
/* ------------------------------------------------------------------------------------------ */
static void test_decode(void) {
    unsigned long long s = 23;
    static const struct { const char *name; gdn2_mixer_kind m; int64_t H, HV, K, V; int neg; } cases[] = {
        {"gdn2", GDN2_MIXER_GDN2, 2, 2, 16, 16, 0},
        {"gdn2 GVA + neg eigval", GDN2_MIXER_GDN2, 2, 4, 16, 32, 1},
        {"kda", GDN2_MIXER_KDA, 2, 2, 16, 16, 0},
        {"gdn", GDN2_MIXER_GDN, 2, 2, 16, 16, 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        gdn2_layer_cfg c = {32, cases[ci].H, cases[ci].HV, cases[ci].K, cases[ci].V, 4, cases[ci].neg, 1e-5f, cases[ci].m, GDN2_KERNEL_CHUNK, 0};
        const int64_t B = 2, T0 = 70, M = 9, T = T0 + M, d = c.hidden; /* T0 > one chunk of 64 */
        const size_t npar = gdn2_layer_param_count(&c), ss = gdn2_layer_state_size(&c);
        float *params = malloc(npar * sizeof(float));
        random_params(&c, params, &s);
        float *x = randn((size_t)(B * T * d), 1.0, &s), *yf = malloc((size_t)(B * T * d) * sizeof(float));
        float *ys = malloc((size_t)(B * T * d) * sizeof(float)), *yc = malloc((size_t)(B * T * d) * sizeof(float));
        float *st = calloc((size_t)B * ss, sizeof(float)), *st2 = calloc((size_t)B * ss, sizeof(float));
        float *xb = malloc((size_t)(B * T * d) * sizeof(float)), *yb = malloc((size_t)(B * T * d) * sizeof(float));
        int rc = gdn2_layer_forward(&c, params, x, B, T, yf, NULL, NULL, 0);
        /* prefill T0 tokens (x[:, :T0] gathered into a contiguous [B,T0,d]) then M steps */
        for (int64_t b = 0; b < B; b++) memcpy(xb + b * T0 * d, x + b * T * d, (size_t)(T0 * d) * sizeof(float));
        rc = rc ? rc : gdn2_layer_forward(&c, params, xb, B, T0, yb, NULL, st, 0);
        for (int64_t b = 0; b < B; b++) memcpy(ys + b * T * d, yb + b * T0 * d, (size_t)(T0 * d) * sizeof(float));
        for (int64_t t = T0; t < T && !rc; t++) {
            float xt[2 * 32], yt[2 * 32];
            for (int64_t b = 0; b < B; b++) memcpy(xt + b * d, x + (b * T + t) * d, (size_t)d * sizeof(float));
            rc = gdn2_layer_step(&c, params, xt, B, st, yt, 0);
            for (int64_t b = 0; b < B; b++) memcpy(ys + (b * T + t) * d, yt + b * d, (size_t)d * sizeof(float));
        }
        /* chunked prefill: three forwards of 30, 25 and 24 tokens carrying the states */
        const int64_t parts[3] = {30, 25, 24};
        int64_t t0 = 0;
        for (int p = 0; p < 3 && !rc; p++) {
            const int64_t n = parts[p];
            for (int64_t b = 0; b < B; b++) memcpy(xb + b * n * d, x + (b * T + t0) * d, (size_t)(n * d) * sizeof(float));
            rc = gdn2_layer_forward(&c, params, xb, B, n, yb, NULL, st2, 0);
            for (int64_t b = 0; b < B; b++) memcpy(yc + (b * T + t0) * d, yb + b * n * d, (size_t)(n * d) * sizeof(float));
            t0 += n;
        }
        const size_t ny = (size_t)(B * T * d);
        const double e1 = rc ? 1 : max_rel(ys, yf, ny), e2 = rc ? 1 : max_rel(yc, yf, ny);
        double e3 = 0;
        for (size_t i = 0; i < (size_t)B * ss; i++) e3 = fmax(e3, fabs((double)st[i] - st2[i]));
        CHECK(rc == 0 && e1 <= 1e-5 && e2 <= 1e-5 && e3 <= 1e-5,
              "%s: prefill %lld + %lld steps == forward over %lld (%.1e), chunked prefill (%.1e), same states (%.1e) <= 1e-5 %s",
              cases[ci].name, (long long)T0, (long long)M, (long long)T, e1, e2, e3, rc ? gdn2_last_error() : "");
        free(params); free(x); free(yf); free(ys); free(yc); free(st); free(st2); free(xb); free(yb);
    }
}

static void test_config_errors(void) {
    gdn2_layer_cfg c = {16, 3, 4, 8, 8, 4, 0, 1e-5f, GDN2_MIXER_GDN2, GDN2_KERNEL_CHUNK, 0};
    CHECK(gdn2_layer_check(&c) == GDN2_ERR_ARG && strstr(gdn2_last_error(), "multiple"),
          "HV not a multiple of H is rejected: %s", gdn2_last_error());
    c.HV = 3;
    c.mixer = (gdn2_mixer_kind)7;
    CHECK(gdn2_layer_check(&c) == GDN2_ERR_ARG, "unknown mixer is rejected: %s", gdn2_last_error());
    c.mixer = GDN2_MIXER_GDN2;
    c.kernel = (gdn2_layer_kernel)7;
    CHECK(gdn2_layer_check(&c) == GDN2_ERR_ARG && strstr(gdn2_last_error(), "kernel"),
          "unknown recurrence kernel is rejected: %s", gdn2_last_error());
    float x = 0, y = 0;
    CHECK(gdn2_layer_forward(&c, &x, &x, 1, 1, &y, NULL, NULL, 1) == GDN2_ERR_ARG, "forward with a bad config fails cleanly");
    /* parameter counts: official 1.3B layer (d=2048, 16 heads x 128) */
    gdn2_layer_cfg big = {2048, 16, 16, 128, 128, 4, 0, 1e-5f, GDN2_MIXER_GDN2, GDN2_KERNEL_CHUNK, 0};
    gdn2_param_info bpi[32];
    const int bnp = gdn2_layer_params(&big, bpi, 32);
    size_t n = 0;
    for (int i = 0; i < bnp && i < 32; i++) n += bpi[i].numel;
    const size_t flat = gdn2_layer_param_count(&big); /* the flat block: the tensors at multiples of 64 floats */
    /* 6 d·D projections (q,k,v,b,w,o) + f/g low rank (d·V + V·D)·2 + convs 3·D·4 + A_log 16 + dt_bias D
       + g bias D + o_norm V, with d = D = 2048, V = 128 */
    const size_t want = 6 * 2048 * 2048 + 2 * (2048 * 128 + 128 * 2048) + 3 * 2048 * 4 + 16 + 2048 + 2048 + 128;
    CHECK(n == want, "official-size layer has %zu parameters (expected %zu)", n, want);
    CHECK(bnp <= 32 && flat == bpi[bnp - 1].offset + bpi[bnp - 1].numel && flat - n < (size_t)bnp * GDN2_PARAM_ALIGN,
          "official-size layer's flat block: %zu floats for %zu parameters in %d tensors", flat, n, bnp);
    /* init: ranges as GDN2.md §4 */
    gdn2_layer_cfg t = {64, 2, 2, 16, 16, 4, 0, 1e-5f, GDN2_MIXER_GDN2, GDN2_KERNEL_CHUNK, 0};
    gdn2_param_info pi[32];
    const int np = gdn2_layer_params(&t, pi, 32);
    float *p = malloc(gdn2_layer_param_count(&t) * sizeof(float));
    gdn2_layer_init(&t, p, 1);
    int ok = 1;
    for (int i = 0; i < np; i++) {
        const float *v = p + pi[i].offset;
        for (size_t j = 0; j < pi[i].numel; j++) {
            const char *nm = pi[i].name;
            if (!strcmp(nm, "A_log")) ok &= v[j] >= 0.0f && v[j] <= logf(16.0f);
            else if (!strcmp(nm, "dt_bias")) ok &= v[j] >= -7.0f && v[j] <= -2.2f; /* softplus^-1 of [1e-3,1e-1] */
            else if (!strcmp(nm, "o_norm.weight")) ok &= v[j] == 1.0f;
            else if (!strcmp(nm, "g_proj.1.bias")) ok &= v[j] == 0.0f;
            else if (strstr(nm, "conv1d")) ok &= fabsf(v[j]) <= 0.5f;
            else ok &= fabsf(v[j]) <= powf(2.0f, -2.5f) * sqrtf(6.0f / (float)(pi[i].shape[0] + pi[i].shape[1]));
        }
    }
    CHECK(ok, "official init ranges (xavier 2^-2.5, conv U(±0.5), A_log ln U(1,16), dt_bias, ones, zeros)");
    free(p);
}

int main(void) {
    {
        /* say whether the fp32 kernels are built (else the layer falls back to the float64 reference) */
        float z[64] = {0}, o[64];
        gdn2_dims d = {1, 1, 1, 1, 8, 8};
        gdn2_opts op;
        memset(&op, 0, sizeof op);
        gdn2_fwd_tensors t = {z, z, z, z, z, z, NULL, NULL, NULL, o, NULL};
        gdn2_bwd_tensors g = {z, NULL, o, o, o, o, o, o, NULL, NULL, NULL};
        const int f = gdn2_chunk_fwd(&d, &op, &t), b = gdn2_chunk_bwd(&d, &op, &t, &g);
        printf("note: fp32 chunk forward %s, backward %s\n", f == GDN2_ERR_UNSUPPORTED ? "MISSING (float64 fallback)" : "built",
               b == GDN2_ERR_UNSUPPORTED ? "MISSING (float64 fallback)" : "built");
    }
    test_config_errors();
    test_primitives();
    test_layer_fd();
    test_decode();
    test_fixture();
    return test_summary();
}
