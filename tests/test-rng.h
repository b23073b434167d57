/* A seeded generator for tests (splitmix64): set `rs` to seed it; unif in [0, 1), gauss from
 * Box-Muller. Header-only; each test file has its own state. */
#ifndef SL_TESTS_TEST_RNG_H
#define SL_TESTS_TEST_RNG_H

#include <math.h>
#include <stdint.h>

static uint64_t rs;

static inline double unif(void) {
    uint64_t z = (rs += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}

static inline double gauss(void) { return sqrt(-2 * log(unif() + 1e-300)) * cos(6.283185307179586 * unif()); }

#endif
