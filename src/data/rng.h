/* Streams and content hashing for the task generators (internal to src/data), on the library's
 * splitmix64 (src/util/rng.h): a sample is a pure function of (config, seed, split). Not Python's
 * Mersenne Twister: samples are distributionally equivalent to Zoology/RULER, not bit-identical
 * (docs/TASKS.md). */
#ifndef GDN2_DATA_RNG_H
#define GDN2_DATA_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "../util/rng.h"

/* stream for (task tag, seed, split): different tags/splits never share a stream start */
static inline gdn2_rng gdn2_rng_for(uint64_t tag, uint64_t seed, int split) {
    gdn2_rng r = {gdn2_mix64(gdn2_mix64(tag ^ 0x67646e32ULL) ^ gdn2_mix64(seed + 0x51ULL) ^ ((uint64_t)split << 61))};
    return r;
}
/* FNV-1a over bytes, finished with mix64: the content hash behind the train/test partition */
static inline uint64_t gdn2_hash_bytes(const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return gdn2_mix64(h);
}
/* the split a piece of content belongs to (0 train, 1 test) */
static inline int gdn2_content_split(const void *p, size_t n) { return (int)(gdn2_hash_bytes(p, n) >> 63); }

#endif
