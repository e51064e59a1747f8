/* The cross-entropy of the lm_head logits (mean over targets != -100, as torch / flash-attn's fused
 * CE). The model's RMSNorm (norm_1, norm_2, ln_f) is nn.c's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util/internal.h"

/* loss_n = logsumexp(z_n) - z_n[y_n];  d loss_n / dz = softmax(z_n) - onehot(y_n) */
double gdn2_mdl_xent(int64_t N, int64_t Vp, float *logits, const int32_t *targets, float grad_scale, int want_grad,
                     int64_t *n_valid, int n_threads) {
    const int nt = gdn2_threads(n_threads);
    double *ln = gdn2_malloc((size_t)(N ? N : 1) * sizeof(double), "cross-entropy rows");
    if (!ln) return NAN;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *z = logits + n * Vp;
        int32_t y = targets[n];
        if (y == GDN2_IGNORE) {
            ln[n] = 0.0;
            if (want_grad) memset(z, 0, Vp * sizeof(float));
            continue;
        }
        float mx = -INFINITY;
        for (int64_t i = 0; i < Vp; i++) mx = z[i] > mx ? z[i] : mx;
        double s = 0.0;
        for (int64_t i = 0; i < Vp; i++) s += exp((double)(z[i] - mx));
        double lse = mx + log(s);
        ln[n] = lse - z[y];
        if (want_grad) {
            for (int64_t i = 0; i < Vp; i++) z[i] = grad_scale * (float)exp((double)z[i] - lse);
            z[y] -= grad_scale;
        }
    }
    double tot = 0.0;
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++)
        if (targets[n] != GDN2_IGNORE) tot += ln[n], cnt++;
    free(ln);
    if (n_valid) *n_valid = cnt;
    return tot;
}
