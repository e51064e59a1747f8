/* Token sampling, the parts shared by the CPU sampler (src/ops/sample.c) and the GPU one
 * (src/cuda/sample.cu), so that both draw the same token from the same logits.
 *
 * A candidate's weight is an integer, w = floor(exp((z - z_max) / temperature) * 2^40), computed
 * with IEEE double additions, multiplications and one division only (no FMA contraction: the
 * device calls the _rn intrinsics, the host uses separate inline functions, which no C compiler
 * fuses), so host and device get the same integers. Every mass below is a sum of these integers:
 * exact and independent of the order of summation, so a selection by partitions (CPU) or by radix
 * histograms with atomics (GPU) finds the same nucleus. Mass below 2^-40 of the argmax's is dropped
 * (a candidate with w = 0 is never drawn).
 *
 * The order of candidates: larger logit first, then smaller id (a total order); gdn2_sample_key
 * maps (z, id) to a 64-bit key that sorts the same way (larger key = earlier). -0 counts as +0. */
#ifndef GDN2_UTIL_SAMPLE_H
#define GDN2_UTIL_SAMPLE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "hd.h"

/* One row's settings as the samplers take them: temperature <= 0 is greedy (u unused); top_k in
 * (0, V) keeps the k first candidates (without a nucleus: every logit >= the k-th, a threshold);
 * top_p in (0, 1) keeps the shortest prefix of the order whose mass reaches top_p of the kept mass;
 * u in [0, 1) is the draw. */
typedef struct {
    float temperature;
    int32_t top_k;
    float top_p;
    float pad_;
    double u;
} gdn2_sample_row_params;

static inline GDN2_HD double gdn2_sample_mul_(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}
static inline GDN2_HD double gdn2_sample_add_(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}

/* floor(exp(x) * 2^40) for x = (z - z_max) / temperature <= 0: x = k ln2 + r (Cody-Waite, ln2 split
 * in a head with 32 zero bits and a tail), e^r by its Taylor series to r^10 (|r| <= 0.35: relative
 * error 2e-13, below the 2^-40 grid's), times 2^(k+40) exactly; the conversion truncates (= floor).
 * 0 below -28 (e^-28 * 2^40 < 1) and for NaN. No library calls, so the loop over a row vectorises. */
static inline GDN2_HD uint64_t gdn2_sample_weight(float z, float zmax, float temperature) {
#ifdef __CUDA_ARCH__
    double x = __ddiv_rn(gdn2_sample_add_((double)z, -(double)zmax), (double)temperature);
#else
    double x = gdn2_sample_add_((double)z, -(double)zmax) / (double)temperature;
#endif
    if (!(x > -28.0)) return 0;
    if (x > 0.0) x = 0.0;
    const double t = gdn2_sample_add_(gdn2_sample_mul_(x, 1.4426950408889634074), 0.5); /* in (-40, 0.5] */
    int k = (int)t;
    if ((double)k > t) k--; /* floor */
    const double kd = (double)k;
    const double r = gdn2_sample_add_(gdn2_sample_add_(x, gdn2_sample_mul_(-kd, 6.93147180369123816490e-01)),
                                      gdn2_sample_mul_(-kd, 1.90821492927058770002e-10));
    /* Horner over 1/10!, 1/9!, ..., 1/2!, 1, 1 */
#define GDN2_SAMPLE_H_(p, c) p = gdn2_sample_add_(gdn2_sample_mul_(p, r), c)
    double p = 2.7557319223985888e-07;
    GDN2_SAMPLE_H_(p, 2.7557319223985893e-06);
    GDN2_SAMPLE_H_(p, 2.4801587301587302e-05);
    GDN2_SAMPLE_H_(p, 1.9841269841269841e-04);
    GDN2_SAMPLE_H_(p, 1.3888888888888889e-03);
    GDN2_SAMPLE_H_(p, 8.3333333333333332e-03);
    GDN2_SAMPLE_H_(p, 4.1666666666666664e-02);
    GDN2_SAMPLE_H_(p, 1.6666666666666666e-01);
    GDN2_SAMPLE_H_(p, 0.5);
    GDN2_SAMPLE_H_(p, 1.0);
    GDN2_SAMPLE_H_(p, 1.0);
#undef GDN2_SAMPLE_H_
    return (uint64_t)gdn2_sample_mul_(p, (double)((uint64_t)1 << (k + 40))); /* k + 40 in [0, 40] */
}

/* the order key: larger logit first, then smaller id */
static inline GDN2_HD uint64_t gdn2_sample_key(float z, int32_t id) {
    if (z == 0.0f) z = 0.0f; /* -0 -> +0 */
#ifdef __CUDA_ARCH__
    uint32_t b = __float_as_uint(z);
#else
    uint32_t b;
    memcpy(&b, &z, sizeof b);
#endif
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((uint64_t)b << 32) | (uint64_t)(0xFFFFFFFFu - (uint32_t)id);
}

/* the nucleus target: the least integer mass >= top_p * total, in [1, total] */
static inline GDN2_HD uint64_t gdn2_sample_target(float top_p, uint64_t total) {
    double t = ceil(gdn2_sample_mul_((double)top_p, (double)total));
    uint64_t ti = t < 1.0 ? 1 : (uint64_t)t;
    return ti > total ? total : ti;
}

/* the draw: r in [0, M - 1]; the token is the first kept id (ascending) whose running mass exceeds r */
static inline GDN2_HD uint64_t gdn2_sample_point(double u, uint64_t M) {
    double t = floor(gdn2_sample_mul_(u, (double)M));
    uint64_t r = t < 0.0 ? 0 : (uint64_t)t;
    return r >= M ? M - 1 : r;
}

#endif
