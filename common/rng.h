// Counter-based random numbers: value = hash(seed, counter). Results depend
// only on (seed, counter), never on thread count or call order, which is what
// makes training bit-reproducible across --threads settings.
#pragma once
#include <stdint.h>

static inline uint64_t rng_hash(uint64_t seed, uint64_t counter) {
    // splitmix64 finaliser over a Weyl sequence keyed by the seed.
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Uniform float in [0, 1) with 24 random bits.
static inline float rng_uniform(uint64_t seed, uint64_t counter) {
    return (float)(rng_hash(seed, counter) >> 40) * (1.0f / 16777216.0f);
}
