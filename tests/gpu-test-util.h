/* What every GPU test file needs: skip without a device, assert on CUDA and library calls,
 * and a seeded generator so a failure reproduces. Header-only; the test links CUDA's
 * runtime. Initialise CUDA inside tests, never in constructors (Criterion forks). */
#ifndef SL_TESTS_GPU_TEST_UTIL_H
#define SL_TESTS_GPU_TEST_UTIL_H

#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>

#include "spotlight/device.h"
#include "spotlight/error.h"

static inline void require_gpu(void) {
    if (sl_cuda_device_count() == 0) cr_skip_test("no CUDA device");
}

#define CUDA_OK(call)                                                                         \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        cr_assert_eq(e_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));               \
    } while (0)

#define SL_OK(call)                                                                           \
    do {                                                                                      \
        int rc_ = (call);                                                                     \
        cr_assert_eq(rc_, 0, "%s: %s (%s)", #call, sl_strerror(rc_), sl_error_detail());      \
    } while (0)

/* max |a - b| over n logits, relative to the spread of a's. */
static inline double rel_diff(const float *a, const float *b, int64_t n) {
    double d = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        lo = fmin(lo, a[i]);
        hi = fmax(hi, a[i]);
    }
    return d / (hi - lo);
}

/* splitmix64 */
static inline uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#endif
