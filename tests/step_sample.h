/* A check shared by tests/test_serve.c (CPU) and tests/test_model_cuda.c (device models):
 * gdn2_model_step_slots_sample draws the token gdn2_sample draws from the same logits, moves each
 * stream as gdn2_sample does, and gives the same tokens without downloading the logits.
 * s needs 6 slots with slots 0..2 prefilled; slots 3..5 are overwritten. */
#ifndef GDN2_TESTS_STEP_SAMPLE_H
#define GDN2_TESTS_STEP_SAMPLE_H

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gdn2_model.h"

static void check_step_sample(gdn2_model *m, gdn2_model_state *s, const char *tag) {
    const int64_t Vp = m->cfg.padded_vocab, V = m->cfg.vocab_size;
    const gdn2_sampling sp[3] = {{0.0f, 0, 1.0f, 0}, {0.8f, 5, 1.0f, 0}, {1.2f, 0, 0.9f, 0}};
    const int32_t a[3] = {0, 1, 2}, b[3] = {3, 4, 5}, tok[3] = {7 % (int32_t)V, 11 % (int32_t)V, 13 % (int32_t)V};
    uint64_t r0[3], ra[3], rb[3];
    int32_t na[3] = {-1, -1, -1}, nb[3] = {-2, -2, -2};
    float *lg = malloc((size_t)(3 * Vp) * sizeof(float));
    for (int i = 0; i < 3; i++) r0[i] = ra[i] = rb[i] = gdn2_sampler_seed((uint64_t)(40 + i));
    int st = lg ? GDN2_OK : GDN2_ERR_NOMEM;
    for (int i = 0; i < 3 && !st; i++) st = gdn2_model_state_copy_slot(m, s, b[i], s, a[i]);
    if (!st) st = gdn2_model_step_slots_sample(m, s, 3, a, NULL, tok, sp, ra, na, lg);
    int same = !st;
    for (int i = 0; i < 3 && same; i++) {
        uint64_t r = r0[i];
        same = gdn2_sample(lg + i * Vp, V, &sp[i], &r) == na[i] && r == ra[i];
    }
    CHECK(same, "%s: step_slots_sample draws gdn2_sample's token from the step's logits (greedy, top_k 5, top_p 0.9) "
          "and moves the streams alike (%d %d %d)%s%s", tag, na[0], na[1], na[2], st ? ": " : "", st ? gdn2_last_error() : "");
    if (!st) st = gdn2_model_step_slots_sample(m, s, 3, b, NULL, tok, sp, rb, nb, NULL);
    CHECK(!st && !memcmp(na, nb, sizeof na) && !memcmp(ra, rb, sizeof ra),
          "%s: the same step on copied slots without the logits: the same tokens and streams%s%s", tag, st ? ": " : "",
          st ? gdn2_last_error() : "");
    int e = gdn2_model_step_slots_sample(m, s, 3, a, NULL, tok, sp, ra, NULL, NULL);
    CHECK(e == GDN2_ERR_ARG, "%s: step_slots_sample without `next` is refused: %s", tag, gdn2_last_error());
    free(lg);
}

#endif
