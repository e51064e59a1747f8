/* gdn2 layer — the official GatedDeltaNet2 layer, forward (and backward when `r` is given), on
 * tensors from a safetensors file in the format of tests/fixtures/official/layer.safetensors:
 * param.<official name>, x [B,T,d], optional r [B,T,d] (loss = Σ y⊙r), and the layer config in the
 * __metadata__ "meta" JSON's "config" object. Writes y, and with r: grad.x and grad.<name>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_layer.h"
#include "ops/check.h"
#include "util/internal.h"

static void layer_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 layer IN.safetensors -o OUT.safetensors [--device cpu|cuda] [--kernel chunk|reference]\n"
            "                  [--threads N]\n"
            "\n"
            "Runs the official GatedDeltaNet2 token mixer (lit_gpt/gdn2.py) in fp32 on the CPU, or bf16-mixed on\n"
            "the GPU (--device cuda; docs/BACKEND.md).\n"
            "IN: param.<name> for every parameter (official names, e.g. param.q_proj.weight, param.A_log),\n"
            "    x [B,T,d], optional r [B,T,d]; __metadata__ \"meta\" = JSON with a \"config\" object:\n"
            "    hidden_size, head_dim, num_heads, num_v_heads (null = num_heads), expand_v (1),\n"
            "    conv_size (4), allow_neg_eigval (false), norm_eps (1e-5), mixer (\"gdn2\"|\"kda\"|\"gdn\").\n"
            "OUT: y [B,T,d]; with r also grad.x and grad.<name> of loss = sum(y * r).\n"
            "  --device D      cpu (default) or cuda\n"
            "  --kernel NAME   chunk (default: fp32 chunk kernels) or reference (float64 recurrence, CPU only)\n"
            "  --threads N     CPU threads (0 = OpenMP default)\n"
            "Exit status: 0 ok, 2 bad usage or bad input file, 1 runtime failure.\n");
}

int cmd_layer(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    int threads = 0, kernel = 0, npos = 0, device = 0;
    const cli_opt opts[] = {
        CLI_OPT_STR("--out", "-o", &out),
        CLI_OPT_CHOICE("--device", &device, "cpu|cuda"),
        CLI_OPT_CHOICE("--kernel", &kernel, "chunk|reference"),
        CLI_OPT_INT("--threads", &threads, 0, cli_max_threads()),
    };
    int rc = cli_parse("layer", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), &in, 1, &npos, layer_usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!in || !out) {
        fprintf(stderr, "gdn2 layer: %s\n", !in ? "missing input file IN.safetensors" : "missing -o OUT.safetensors");
        layer_usage(stderr);
        return 2;
    }
    if ((rc = cli_check_in("layer", "input", in)) || (rc = cli_check_out("layer", "--out", out))) return rc;

    gdn2_st st;
    int rd = gdn2_st_read(in, &st);
    if (rd) { fprintf(stderr, "gdn2 layer: %s\n", gdn2_last_error()); return cli_exit_code(rd); }
    int ret = 2;
    gdn2_layer_cfg c;
    gdn2_param_info *pi = NULL;
    float *params = NULL, *x = NULL, *r = NULL, *y = NULL, *acts = NULL, *dx = NULL, *dparams = NULL;
    gdn2_tensor *outs = NULL;
    char **names = NULL;
    if (gdn2_layer_config_from_file(&st, &c)) { fprintf(stderr, "gdn2 layer: %s\n", gdn2_last_error()); goto done; }

    /* parameters: every param.<name> with exactly the expected shape */
    const int np = gdn2_layer_params(&c, NULL, 0);
    const size_t npar = gdn2_layer_param_count(&c);
    pi = calloc((size_t)np, sizeof *pi);
    params = calloc(npar + 1, sizeof(float));
    if (!pi || !params) { fprintf(stderr, "gdn2 layer: out of memory\n"); ret = 1; goto done; }
    gdn2_layer_params(&c, pi, np);
    if (gdn2_layer_load_params(&c, &st, "param.", params)) {
        fprintf(stderr, "gdn2 layer: %s\n", gdn2_last_error());
        goto done;
    }
    int64_t xs[3] = {-1, -1, c.hidden}, rs[3];
    if (gdn2_st_get_f32(&st, "x", 1, 3, xs, &x)) { fprintf(stderr, "gdn2 layer: %s\n", gdn2_last_error()); goto done; }
    memcpy(rs, xs, sizeof rs);
    if (gdn2_st_get_f32(&st, "r", 0, 3, rs, &r)) { fprintf(stderr, "gdn2 layer: %s\n", gdn2_last_error()); goto done; }
    const int64_t B = xs[0], T = xs[1], D = c.hidden;
    if (gdn2_check_tensor_values(in, "x", x, 3, xs, 0, (size_t)(B * T * D), 0, 0) ||
        (r && gdn2_check_tensor_values(in, "r", r, 3, rs, 0, (size_t)(B * T * D), 0, 0))) {
        fprintf(stderr, "gdn2 layer: %s\n", gdn2_last_error());
        goto done;
    }
    /* x came from the file, so B*T*D is bounded by its size; the saved activations and gradients
     * are a multiple of it: estimated before they are allocated */
    {
        double need = 4.0 * ((double)npar * (r ? 2 : 1) + (double)B * T * D * (r ? 2 : 1) +
                             (r ? (double)gdn2_layer_act_size(&c, B, T) : 0.0));
        if ((ret = cli_check_mem("layer", "the input's x", need))) goto done;
    }

    ret = 1;
    c.kernel = kernel ? GDN2_KERNEL_REFERENCE : GDN2_KERNEL_CHUNK;
    y = malloc((size_t)(B * T * D + 1) * sizeof(float));
    if (r) {
        acts = malloc((gdn2_layer_act_size(&c, B, T) + 1) * sizeof(float));
        dx = malloc((size_t)(B * T * D + 1) * sizeof(float));
        dparams = calloc(npar + 1, sizeof(float));
    }
    if (!y || (r && (!acts || !dx || !dparams))) { fprintf(stderr, "gdn2 layer: out of memory\n"); goto done; }
    if (device) {
        /* on the GPU: one call does the forward and, with r, the backward */
        int rr = gdn2_layer_run("cuda", &c, params, x, B, T, y, r, dx, dparams, threads);
        if (rr) {
            fprintf(stderr, "gdn2 layer: --device cuda: %s\n", gdn2_last_error());
            ret = cli_exit_code(rr);
            goto done;
        }
    } else if (gdn2_layer_forward(&c, params, x, B, T, y, acts, NULL, threads)) {
        fprintf(stderr, "gdn2 layer: forward: %s\n", gdn2_last_error());
        goto done;
    }
    if (r && !device && gdn2_layer_backward(&c, params, x, B, T, acts, r, dx, dparams, threads)) {
        fprintf(stderr, "gdn2 layer: backward: %s\n", gdn2_last_error());
        goto done;
    }

    /* outputs: y, then grad.x and grad.<name> */
    const int nout = 1 + (r ? 1 + np : 0);
    outs = calloc((size_t)nout, sizeof *outs);
    names = calloc((size_t)nout, sizeof *names);
    if (!outs || !names) { fprintf(stderr, "gdn2 layer: out of memory\n"); goto done; }
    for (int i = 0; i < nout; i++) {
        gdn2_tensor *t = &outs[i];
        names[i] = malloc(128);
        if (!names[i]) { fprintf(stderr, "gdn2 layer: out of memory\n"); goto done; }
        t->name = names[i];
        t->dtype = GDN2_F32;
        if (i < 2) {
            snprintf(names[i], 128, "%s", i == 0 ? "y" : "grad.x");
            t->ndim = 3;
            t->shape[0] = B; t->shape[1] = T; t->shape[2] = D;
            t->nbytes = (size_t)(B * T * D) * sizeof(float);
            t->data = i == 0 ? y : dx;
        } else {
            const gdn2_param_info *p = &pi[i - 2];
            snprintf(names[i], 128, "grad.%s", p->name);
            t->ndim = p->ndim;
            for (int j = 0; j < p->ndim; j++) t->shape[j] = p->shape[j];
            t->nbytes = p->numel * sizeof(float);
            t->data = dparams + p->offset;
        }
    }
    const char *mk[1] = {"meta"};
    const char *mv[1] = {r ? "{\"produced_by\":\"gdn2 layer (fp32 CPU)\",\"loss\":\"sum(y*r)\"}"
                           : "{\"produced_by\":\"gdn2 layer (fp32 CPU)\"}"};
    if (gdn2_st_write(out, outs, nout, mk, mv, 1)) {
        fprintf(stderr, "gdn2 layer: %s\n", gdn2_last_error());
        goto done;
    }
    if (r) {
        double loss = 0;
        for (int64_t i = 0; i < B * T * D; i++) loss += (double)y[i] * r[i];
        printf("loss sum(y*r) = %.9g\n", loss);
    }
    printf("wrote %s (%d tensors, B=%lld T=%lld d=%lld)\n", out, nout, (long long)B, (long long)T, (long long)D);
    ret = 0;
done:
    if (names)
        for (int i = 0; i < 1 + (r ? 1 + gdn2_layer_params(&c, NULL, 0) : 0); i++) free(names[i]);
    free(names); free(outs); free(pi); free(params); free(x); free(r); free(y); free(acts); free(dx); free(dparams);
    gdn2_st_free(&st);
    return ret;
}
