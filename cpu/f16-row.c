/* f16 row kernels with run-time F16C dispatch. */
#include "cpu/f16-row.h"

#include <math.h>

#include "core/quant-internal.h"
#include "cpu/dispatch.h"
#include "spotlight/cpu.h"
#include "spotlight/quant.h"

#define have_f16c sl_cpu_use_avx2

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

F16C static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Queries in groups of four, each with its own accumulator register across the row. */
F16C static void dot_multi_f16c(const uint16_t *h, const float *q, int nq, int64_t n, float *out) {
    for (int r0 = 0; r0 < nq; r0 += 4) {
        int nr = nq - r0 < 4 ? nq - r0 : 4;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256 k = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i)));
            for (int r = 0; r < nr; r++) acc[r] = _mm256_fmadd_ps(k, _mm256_loadu_ps(q + (r0 + r) * n + i), acc[r]);
        }
        for (int r = 0; r < nr; r++) {
            float sum = hsum256(acc[r]);
            for (int64_t t = i; t < n; t++) sum += _cvtsh_ss(h[t]) * q[(r0 + r) * n + t];
            out[r0 + r] = sum;
        }
    }
}

F16C static void axpy_multi_f16c(const float *a, const uint16_t *h, int nq, int64_t n, float *y) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i)));
        for (int r = 0; r < nq; r++) {
            float *yr = y + r * n + i;
            _mm256_storeu_ps(yr, _mm256_fmadd_ps(_mm256_set1_ps(a[r]), v, _mm256_loadu_ps(yr)));
        }
    }
    for (; i < n; i++)
        for (int r = 0; r < nq; r++) y[r * n + i] += a[r] * _cvtsh_ss(h[i]);
}

/* exp(x) = 2^k * e^r with |r| <= ln2/2, e^r by a degree-6 polynomial (Cephes coefficients). */
F16C static __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

F16C static float exp_sub_sum_avx2(float *x, int64_t n, float m) {
    __m256 vm = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float sum = _mm_cvtss_f32(s);
    for (; i < n; i++) sum += x[i] = expf(x[i] - m);
    return sum;
}
#endif

void sl_f16_dot_multi(const uint16_t *h, const float *q, int nq, int64_t n, float *out) {
#if defined(__x86_64__)
    if (have_f16c()) {
        dot_multi_f16c(h, q, nq, n, out);
        return;
    }
#endif
    for (int r = 0; r < nq; r++) out[r] = sl_f16_dot_f32(h, q + r * n, n);
}

void sl_f16_axpy_multi(const float *a, const uint16_t *h, int nq, int64_t n, float *y) {
#if defined(__x86_64__)
    if (have_f16c()) {
        axpy_multi_f16c(a, h, nq, n, y);
        return;
    }
#endif
    for (int r = 0; r < nq; r++) sl_f16_axpy(a[r], h, y + r * n, n);
}

float sl_exp_sub_sum(float *x, int64_t n, float m) {
#if defined(__x86_64__)
    if (have_f16c()) return exp_sub_sum_avx2(x, n, m);
#endif
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum += x[i] = expf(x[i] - m);
    return sum;
}

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

void sl_f32_to_f16_row(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = sl_f32_to_f16(x[i]);
}
