/* GPU benchmark of the CUDA kernels (src/cuda), bf16 inputs, fp32 g and state:
 *   - device-to-device copy bandwidth (2 GiB, bytes read + written), the memory ceiling;
 *   - chunk forward and forward+backward at the shapes: ms (median of CUDA-event timed
 *     reps after a warm-up), tokens/s, nominal TFLOP/s (PERF_ANCHORS.md's count). fwd+bwd is a
 *     training step: fwd(keep_for_backward) + bwd(reuse_forward); at the first shape a row
 *     "fwd+bwd (recompute)" times the plain fwd + bwd, whose backward recomputes the forward;
 *   - decode step (T = 1) over N slots, H = HV = 16, K = V = 128: µs per step called from C
 *     (host clock over 200 back-to-back steps, launch included, no graphs) and the achieved GB/s.
 * usage: cuda_ops [out.json] [--quick]. Without a GPU it prints why and exits 0. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gdn2.h"
#include "gdn2_cuda.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint16_t f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static unsigned long long g_rng = 12345;
static double urand(void) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}

/* device buffer of n random bf16 (uniform in [lo,hi]) or fp32 values */
static void *dev_rand(int64_t n, int bf16, double lo, double hi) {
    size_t es = bf16 ? 2 : 4;
    void *h = malloc((size_t)n * es);
    if (!h) return NULL;
    for (int64_t i = 0; i < n; i++) {
        float x = (float)(lo + (hi - lo) * urand());
        if (bf16) ((uint16_t *)h)[i] = f2bf(x);
        else ((float *)h)[i] = x;
    }
    void *d = gdn2_cuda_malloc((size_t)n * es);
    if (d) gdn2_cuda_memcpy(d, h, (size_t)n * es, GDN2_CUDA_H2D);
    free(h);
    return d;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    int64_t B, T, H, K, V;
} shape;

int main(int argc, char **argv) {
    const char *json = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else json = argv[i];
    }
    if (!gdn2_cuda_available()) {
        printf("cuda_ops: no GPU benchmark: %s\n", gdn2_last_error());
        return 0;
    }
    char name[128];
    int drv = 0, rt = 0;
    gdn2_cuda_device_info(name, sizeof name, &drv, &rt);
    printf("device: %s, driver API %d, runtime %d\n", name, drv, rt);
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (jf) fprintf(jf, "{\"device\": \"%s\", \"driver_api\": %d, \"runtime\": %d,\n", name, drv, rt);

    /* copy bandwidth: 2 GiB, read + write counted */
    double copy_gbps = 0;
    {
        size_t bytes = (size_t)2 << 30;
        void *a = gdn2_cuda_malloc(bytes), *b = gdn2_cuda_malloc(bytes);
        if (a && b) {
            gdn2_cuda_memset(a, 1, bytes);
            gdn2_cuda_memcpy(b, a, bytes, GDN2_CUDA_D2D);
            double t[10];
            for (int r = 0; r < 10; r++) {
                gdn2_cuda_timer_start();
                gdn2_cuda_memcpy(b, a, bytes, GDN2_CUDA_D2D);
                t[r] = gdn2_cuda_timer_stop();
            }
            qsort(t, 10, sizeof(double), cmp_d);
            copy_gbps = 2.0 * bytes / (t[5] * 1e-3) / 1e9;
        }
        gdn2_cuda_free(a);
        gdn2_cuda_free(b);
        printf("device-to-device copy: %.0f GB/s (2 GiB, read+write)\n", copy_gbps);
    }
    if (jf) fprintf(jf, "\"copy_gbps\": %.1f,\n\"workloads\": [\n", copy_gbps);

    const shape shapes[] = {{8, 4096, 16, 128, 128}, {2, 16384, 16, 128, 128}, {1, 65536, 16, 128, 128}, {32, 2048, 32, 128, 128}};
    const int nshapes = quick ? 1 : 4;
    int first = 1;
    for (int si = 0; si < nshapes; si++) {
        const shape s = shapes[si];
        gdn2_dims d = {s.B, s.T, s.H, s.H, s.K, s.V};
        gdn2_opts o;
        memset(&o, 0, sizeof o);
        o.qk_l2norm = 1;
        const int64_t nk = s.B * s.T * s.H * s.K, nv = s.B * s.T * s.H * s.V;
        size_t ws_bytes = gdn2_cuda_chunk_workspace_size(&d, &o, 1);
        void *ws = gdn2_cuda_malloc(ws_bytes);
        gdn2_cuda_fwd_args a;
        memset(&a, 0, sizeof a);
        a.dtype = GDN2_CUDA_BF16;
        a.q = dev_rand(nk, 1, -1, 1); a.k = dev_rand(nk, 1, -1, 1); a.v = dev_rand(nv, 1, -1, 1);
        a.b = dev_rand(nk, 1, 0, 1); a.w = dev_rand(nv, 1, 0, 1); a.g = dev_rand(nk, 0, -0.5, -0.01);
        a.o = gdn2_cuda_malloc(nv * 2);
        gdn2_cuda_bwd_args g;
        memset(&g, 0, sizeof g);
        g.d_o = dev_rand(nv, 1, -1, 1);
        g.dq = gdn2_cuda_malloc(nk * 2); g.dk = gdn2_cuda_malloc(nk * 2); g.dv = gdn2_cuda_malloc(nv * 2);
        g.db = gdn2_cuda_malloc(nk * 2); g.dw = gdn2_cuda_malloc(nv * 2); g.dg = gdn2_cuda_malloc(nk * 4);
        if (!ws || !a.q || !a.k || !a.v || !a.b || !a.w || !a.g || !a.o || !g.d_o || !g.dq || !g.dk || !g.dv ||
            !g.db || !g.dw || !g.dg) {
            printf("shape %d: allocation failed: %s\n", si, gdn2_last_error());
            return 1;
        }
        o.workspace = ws;
        o.workspace_size = ws_bytes;
        /* mode 0: fwd; 1: fwd(keep) + bwd(reuse); 2: fwd + bwd recomputing (first shape only) */
        static const char *mode_name[3] = {"fwd", "fwd+bwd", "fwd+bwd (recompute)"};
        for (int mode = 0; mode < (si == 0 ? 3 : 2); mode++) {
            const int reps = mode ? 5 : 10;
            double t[10];
            int rc = 0;
            a.keep_for_backward = mode == 1;
            g.reuse_forward = mode == 1;
            for (int r = -1; r < reps && !rc; r++) {
                gdn2_cuda_timer_start();
                rc = gdn2_cuda_chunk_fwd(&d, &o, &a, NULL);
                if (!rc && mode) rc = gdn2_cuda_chunk_bwd(&d, &o, &a, &g, NULL);
                double ms = gdn2_cuda_timer_stop();
                if (!rc) rc = gdn2_cuda_sync();
                if (r >= 0) t[r] = ms;
            }
            if (rc) {
                printf("shape %d mode %d failed: %s\n", si, mode, gdn2_last_error());
                return 1;
            }
            qsort(t, reps, sizeof(double), cmp_d);
            const double ms = t[reps / 2], tok = (double)s.B * s.T;
            const double flop = tok * s.H * (2.0 * 64 * (3 * s.K + 2 * s.V) + 6.0 * s.K * s.V) * (mode ? 3 : 1);
            printf("%-19s B=%-3lld T=%-6lld H=%-3lld K=%lld V=%lld: %8.3f ms  %7.2f Mtok/s  %6.1f TFLOP/s (min %.3f max %.3f)\n",
                   mode_name[mode], (long long)s.B, (long long)s.T, (long long)s.H, (long long)s.K,
                   (long long)s.V, ms, tok / ms / 1e3, flop / ms / 1e9, t[0], t[reps - 1]);
            if (jf)
                fprintf(jf, "%s  {\"name\": \"%s\", \"shape\": [%lld, %lld, %lld, %lld, %lld], \"dtype\": \"bf16\", \"ms_gdn2\": %.4f, \"mtok_s\": %.3f, \"tflops\": %.2f}",
                        first ? "" : ",\n", mode_name[mode], (long long)s.B, (long long)s.T, (long long)s.H,
                        (long long)s.K, (long long)s.V, ms, tok / ms / 1e3, flop / ms / 1e9);
            first = 0;
        }
        gdn2_cuda_free(ws);
        void *bufs[] = {(void *)a.q, (void *)a.k, (void *)a.v, (void *)a.b, (void *)a.w, (void *)a.g, a.o, (void *)g.d_o,
                        g.dq, g.dk, g.dv, g.db, g.dw, g.dg};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gdn2_cuda_free(bufs[i]);
    }
    if (jf) fprintf(jf, "\n],\n\"decode\": [\n");

    /* decode step: fp32 state pool ("decode"), then a bf16 pool ("decode_bf16_state": half the state bytes) */
    const int Ns[] = {1, 16, 64, 256, 1024};
    for (int sb = 0; sb < 2; sb++)
    for (int ni = 0; ni < 5; ni++) {
        const int64_t N = Ns[ni], H = 16, K = 128, V = 128;
        if (sb && ni == 0 && jf) fprintf(jf, "\n],\n\"decode_bf16_state\": [\n");
        gdn2_dims d = {N, 1, H, H, K, V};
        gdn2_opts o;
        memset(&o, 0, sizeof o);
        o.qk_l2norm = 1;
        gdn2_cuda_recurrent_args a;
        memset(&a, 0, sizeof a);
        a.dtype = GDN2_CUDA_BF16;
        a.q = dev_rand(N * H * K, 1, -1, 1); a.k = dev_rand(N * H * K, 1, -1, 1); a.v = dev_rand(N * H * V, 1, -1, 1);
        a.b = dev_rand(N * H * K, 1, 0, 1); a.w = dev_rand(N * H * V, 1, 0, 1); a.g = dev_rand(N * H * K, 0, -0.5, -0.01);
        a.o = gdn2_cuda_malloc(N * H * V * 2);
        a.state_pool = dev_rand(N * H * K * V, sb, -0.1, 0.1);
        a.state_dtype = sb ? GDN2_CUDA_BF16 : GDN2_CUDA_F32;
        a.n_slots = N;
        int32_t *hs = malloc(N * 4);
        for (int64_t i = 0; i < N; i++) hs[i] = (int32_t)((i * 7) % N); /* a permutation when N is not a multiple of 7 */
        void *ds = gdn2_cuda_malloc(N * 4);
        gdn2_cuda_memcpy(ds, hs, N * 4, GDN2_CUDA_H2D);
        a.slots = ds;
        int rc = 0;
        for (int i = 0; i < 20 && !rc; i++) rc = gdn2_cuda_recurrent_fwd(&d, &o, &a, NULL);
        rc |= gdn2_cuda_sync();
        const int steps = 200;
        double t0 = now_s();
        for (int i = 0; i < steps && !rc; i++) rc = gdn2_cuda_recurrent_fwd(&d, &o, &a, NULL);
        rc |= gdn2_cuda_sync();
        const double us = (now_s() - t0) / steps * 1e6;
        gdn2_cuda_timer_start();
        for (int i = 0; i < steps && !rc; i++) rc = gdn2_cuda_recurrent_fwd(&d, &o, &a, NULL);
        const double us_ev = gdn2_cuda_timer_stop() / steps * 1e3;
        if (rc) {
            printf("decode N=%lld failed: %s\n", (long long)N, gdn2_last_error());
            return 1;
        }
        const double bytes = (double)N * H * K * V * (sb ? 2 : 4) * 2 + (double)N * H * (4 * K * 2 + K * 4 + 3 * V * 2) + N * 4;
        printf("decode N=%-5lld%s: %8.2f us/step (host clock, launch included; events %.2f)  %7.0f GB/s  %.0f%% of copy\n",
               (long long)N, sb ? " bf16 state" : "", us, us_ev, bytes / (us * 1e-6) / 1e9, 100.0 * bytes / (us * 1e-6) / 1e9 / copy_gbps);
        if (jf)
            fprintf(jf, "%s  {\"N\": %lld, \"us\": %.3f, \"us_events\": %.3f, \"gbps\": %.1f, \"copy_gbps\": %.1f}",
                    ni ? ",\n" : "", (long long)N, us, us_ev, bytes / (us * 1e-6) / 1e9, copy_gbps);
        void *bufs[] = {(void *)a.q, (void *)a.k, (void *)a.v, (void *)a.b, (void *)a.w, (void *)a.g, a.o, a.state_pool, ds};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gdn2_cuda_free(bufs[i]);
        free(hs);
    }
    if (jf) {
        fprintf(jf, "\n]}\n");
        fclose(jf);
    }
    return 0;
}
