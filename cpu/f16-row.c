/* f16 row kernels with run-time F16C dispatch. */
#include "cpu/f16-row.h"

#include "core/quant-internal.h"
#include "spotlight/cpu.h"
#include "spotlight/quant.h"

static int have_f16c(void) {
    static int cached = -1;
    if (cached < 0) {
        struct sl_cpu_info ci;
        sl_cpu_info_get(&ci);
        cached = ci.f16c && ci.fma && ci.avx2;
    }
    return cached;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define F16C __attribute__((target("avx2,fma,f16c")))

F16C static void to_f32_f16c(const uint16_t *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++) y[i] = _cvtsh_ss(x[i]);
}

F16C static float dot_f16c(const uint16_t *h, const float *f, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))), _mm256_loadu_ps(f + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i + 8))), _mm256_loadu_ps(f + i + 8), a1);
    }
    a0 = _mm256_add_ps(a0, a1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; i < n; i++) r += _cvtsh_ss(h[i]) * f[i];
    return r;
}

F16C static void axpy_f16c(float a, const uint16_t *h, float *y, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * _cvtsh_ss(h[i]);
}
#endif

void sl_f16_row_to_f32(const uint16_t *x, float *y, int64_t n) {
#if defined(__x86_64__)
    if (have_f16c()) {
        to_f32_f16c(x, y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = sl_half_to_float(x[i]);
}

float sl_f16_dot_f32(const uint16_t *h, const float *f, int64_t n) {
#if defined(__x86_64__)
    if (have_f16c()) return dot_f16c(h, f, n);
#endif
    float r = 0;
    for (int64_t i = 0; i < n; i++) r += sl_half_to_float(h[i]) * f[i];
    return r;
}

void sl_f16_axpy(float a, const uint16_t *h, float *y, int64_t n) {
#if defined(__x86_64__)
    if (have_f16c()) {
        axpy_f16c(a, h, y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] += a * sl_half_to_float(h[i]);
}

void sl_round_to_f16(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = sl_f16_to_f32(sl_f32_to_f16(x[i]));
}
