/* Token sampling on top of the constant-memory prefill/step API (include/gdn2_model.h):
 * temperature, top-k, top-p (nucleus), one splitmix64 stream per request. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "ops/sample.h"
#include "util/internal.h"

/* The stream's start is the seed hashed (splitmix64's first output from it: a bijection), so that two
 * seeds start at unrelated points of the splitmix64 sequence. (seed·φ + 1 made seed s + 1's stream
 * seed s's shifted by one draw: requests with neighbouring seeds drew the same numbers.) */
uint64_t gdn2_sampler_seed(uint64_t seed) {
    uint64_t s = seed;
    return gdn2_splitmix64(&s);
}

/* The semantics are src/ops/sample.c's (integer weights, expected O(V)); this draws u from the
 * request's stream (one draw unless greedy) and holds the scratch. */
int32_t gdn2_sample(const float *z, int64_t V, const gdn2_sampling *sp, uint64_t *rng) {
    gdn2_sample_row_params p = {sp->temperature, sp->top_k, sp->top_p, 0.0f, 0.0};
    if (!(sp->temperature > 0)) return gdn2_sample_row(z, V, &p, NULL);
    void *scratch = malloc(gdn2_sample_scratch_bytes(V));
    if (!scratch) { /* no memory for the candidates: the most likely token */
        p.temperature = 0.0f;
        return gdn2_sample_row(z, V, &p, NULL);
    }
    gdn2_rng r = {*rng};
    p.u = gdn2_rng_uniform(&r);
    *rng = r.s;
    const int32_t t = gdn2_sample_row(z, V, &p, scratch);
    free(scratch);
    return t;
}

int gdn2_generate(gdn2_model *m, const int32_t *prompt, int64_t P, int64_t n_new, float temperature, int top_k,
                  uint64_t seed, int32_t *out) {
    if (P < 1) return gdn2_error(GDN2_ERR_ARG, "generate: the prompt needs at least one token");
    const int64_t Vp = m->cfg.padded_vocab, V = m->cfg.vocab_size;
    gdn2_model_state *s = NULL;
    int st = gdn2_model_state_create(m, 1, P + n_new, &s);
    if (st) return st;
    float *lg = gdn2_malloc((size_t)Vp * sizeof(float), "generation logits");
    if (!lg) {
        gdn2_model_state_free(s);
        return GDN2_ERR_NOMEM;
    }
    const gdn2_sampling sp = {temperature, top_k, 1.0f, seed};
    uint64_t r = gdn2_sampler_seed(seed);
    st = gdn2_model_prefill(m, s, prompt, P, lg);
    for (int64_t i = 0; i < n_new && !st; i++) {
        out[i] = gdn2_sample(lg, V, &sp, &r);
        if (i + 1 < n_new) st = gdn2_model_step(m, s, &out[i], lg);
    }
    free(lg);
    gdn2_model_state_free(s);
    return st;
}
