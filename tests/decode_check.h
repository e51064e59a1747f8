/* Helpers of the GPU decode tests (tests/test_model_cuda.c, tests/test_decode_graph.c). */
#ifndef GDN2_TESTS_DECODE_CHECK_H
#define GDN2_TESTS_DECODE_CHECK_H

#include <stdint.h>
#include <string.h>

static float bf16_round(float x) { /* round to nearest even, as the GPU's weights */
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* the largest of x[0..n) (first of equals) and its margin over the runner-up */
static int argmax_v(const float *x, int64_t n, double *margin) {
    int64_t b = 0, s = -1;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) s = b, b = i;
        else if (s < 0 || x[i] > x[s]) s = i;
    *margin = s >= 0 ? (double)x[b] - x[s] : 1e30;
    return (int)b;
}

#endif
