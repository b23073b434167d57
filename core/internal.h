/* Helpers shared by the library's own files: error recording, logging, overflow-checked
 * arithmetic. Not installed. */
#ifndef SL_CORE_INTERNAL_H
#define SL_CORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "spotlight/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records a printf-style detail for err on this thread and returns err, so a failure site
 * reads `return sl_fail(SL_EBOUNDS, "tensor '%s' ...", name);`. */
int sl_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void sl_log(enum sl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Seconds on the monotonic clock, for timing spans. */
static inline double sl_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Programmer errors only (never input, I/O, allocation or device failures). */
#define SL_ASSERT(x)                                                                        \
    do {                                                                                    \
        if (!(x)) {                                                                         \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #x);       \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

/* Overflow-checked size arithmetic: return 0 on success, nonzero on overflow. */
static inline int sl_mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline int sl_add_overflow_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_add_overflow(a, b, out);
}

/* splitmix64: the finaliser, and one step of the generator (state advanced in place). The
 * project's one source of reproducible random numbers (hash initialisation, training
 * samples, evaluation queries). */
static inline uint64_t sl_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}
static inline uint64_t sl_splitmix64(uint64_t *state) { return sl_mix64(*state += 0x9E3779B97F4A7C15u); }
/* Uniform in [0, n) for n >= 1 (modulo bias below 2^-32 for the sizes used here). */
static inline int64_t sl_rand_below(uint64_t *state, int64_t n) {
    return (int64_t)(sl_splitmix64(state) % (uint64_t)n);
}

#ifdef __cplusplus
}
#endif
#endif
