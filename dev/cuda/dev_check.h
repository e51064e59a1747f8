// The dev/cuda programs' error exits: a failed CUDA or cuBLAS(Lt) call prints itself and exits 1.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } \
    } while (0)
#define LK(x)                                                                                      \
    do {                                                                                           \
        cublasStatus_t s_ = (x);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "%s: status %d\n", #x, (int)s_); exit(1); } \
    } while (0)

// Inputs of the dev programs' checks: fp32 -> bf16 bits rounded to nearest even, and a xorshift64 stream uniform
// in [-1, 1) (the same numbers every run)
static inline uint16_t dev_f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static uint64_t dev_rng_state = 88172645463325252ull;
static inline float dev_frand(void) {
    dev_rng_state ^= dev_rng_state << 13, dev_rng_state ^= dev_rng_state >> 7, dev_rng_state ^= dev_rng_state << 17;
    return (float)((dev_rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
