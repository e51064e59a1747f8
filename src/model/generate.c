/* Token sampling on top of the constant-memory prefill/step API (include/gdn2_model.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util/internal.h"

/* argmax (temperature <= 0) or a draw from softmax(z / temperature) restricted to the top_k logits */
static int32_t sample(const float *z, int64_t V, float temperature, int top_k, gdn2_rng *r, float *scratch) {
    int64_t am = 0;
    for (int64_t v = 1; v < V; v++)
        if (z[v] > z[am]) am = v;
    if (temperature <= 0) return (int32_t)am;
    float thr = -INFINITY;
    if (top_k > 0 && top_k < V) { /* k-th largest logit by partial selection on a copy */
        memcpy(scratch, z, V * sizeof(float));
        for (int k = 0; k < top_k; k++) {
            int64_t b = k;
            for (int64_t v = k + 1; v < V; v++)
                if (scratch[v] > scratch[b]) b = v;
            float t = scratch[k];
            scratch[k] = scratch[b], scratch[b] = t;
        }
        thr = scratch[top_k - 1];
    }
    double tot = 0;
    for (int64_t v = 0; v < V; v++) tot += z[v] >= thr ? exp((z[v] - z[am]) / temperature) : 0.0;
    double u = gdn2_rng_uniform(r) * tot, acc = 0;
    for (int64_t v = 0; v < V; v++) {
        if (z[v] < thr) continue;
        acc += exp((z[v] - z[am]) / temperature);
        if (acc >= u) return (int32_t)v;
    }
    return (int32_t)am;
}

int gdn2_generate(gdn2_model *m, const int32_t *prompt, int64_t P, int64_t n_new, float temperature, int top_k,
                  uint64_t seed, int32_t *out) {
    if (P < 1) return gdn2_error(GDN2_ERR_ARG, "generate: the prompt needs at least one token");
    const int64_t Vp = m->cfg.padded_vocab, V = m->cfg.vocab_size;
    gdn2_model_state *s = NULL;
    int st = gdn2_model_state_create(m, 1, P + n_new, &s);
    if (st) return st;
    float *lg = gdn2_malloc((size_t)Vp * 2 * sizeof(float), "generation logits");
    if (!lg) {
        gdn2_model_state_free(s);
        return GDN2_ERR_NOMEM;
    }
    gdn2_rng r = {seed * 0x9E3779B97F4A7C15ULL + 1};
    st = gdn2_model_prefill(m, s, prompt, P, lg);
    for (int64_t i = 0; i < n_new && !st; i++) {
        out[i] = sample(lg, V, temperature, top_k, &r, lg + Vp);
        if (i + 1 < n_new) st = gdn2_model_step(m, s, &out[i], lg);
    }
    free(lg);
    gdn2_model_state_free(s);
    return st;
}
