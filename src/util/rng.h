/* splitmix64, the one deterministic RNG of the library (and of its tests and tools): tiny, well
 * mixed, and its stream is fully determined by the seed, so inits, batches and task samples are
 * pure functions of their seeds. Internal (not part of the public API).
 *   gdn2_mix64      the splitmix64 finalizer (also the hash finish for seeds and content)
 *   gdn2_splitmix64 one step on a raw state: s += φ·2^64, return mix64(s)
 *   gdn2_rng        the same on a state struct, with uniform [0,1) and [0,n) draws */
#ifndef GDN2_UTIL_RNG_H
#define GDN2_UTIL_RNG_H

#include <stdint.h>

#include "hd.h" /* the mixer also runs in CUDA kernels (dropout masks: the same bits on both backends) */

static inline GDN2_HD uint64_t gdn2_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline uint64_t gdn2_splitmix64(uint64_t *s) { return gdn2_mix64(*s += 0x9E3779B97F4A7C15ULL); }

typedef struct { uint64_t s; } gdn2_rng;

static inline uint64_t gdn2_rng_u64(gdn2_rng *r) { return gdn2_splitmix64(&r->s); }
/* uniform in [0, n) (n >= 1); 128-bit multiply keeps the bias below 2^-40 for our n */
static inline uint64_t gdn2_rng_below(gdn2_rng *r, uint64_t n) {
    return (uint64_t)(((unsigned __int128)gdn2_rng_u64(r) * n) >> 64);
}
/* Dropout mask element i of stream `seed`: kept when the top 32 bits of mix64(seed + (i+1)·φ) are at
 * least thr = p·2^32 (p the drop probability). */
static inline GDN2_HD int gdn2_dropout_keep(uint64_t seed, uint64_t i, uint32_t thr) {
    return (uint32_t)(gdn2_mix64(seed + (i + 1) * 0x9E3779B97F4A7C15ULL) >> 32) >= thr;
}
static inline uint32_t gdn2_dropout_thr(float p) { return (uint32_t)((double)p * 4294967296.0); }

/* uniform in [0, 1) from the top 53 bits */
static inline double gdn2_rng_uniform(gdn2_rng *r) { return (gdn2_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

#endif
