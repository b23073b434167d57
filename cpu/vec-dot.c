/* Weight-row x activation-row dot products: scalar reference kernels for every pairing and
 * AVX2 kernels for the 32-element formats, chosen at run time. */
#include "cpu/vec-dot.h"

#include "cpu/dispatch.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "core/quant-internal.h"
#include "spotlight/cpu.h"
#include "spotlight/quant.h"

#define QK 32

/* ---- activation quantization ----------------------------------------------------------- */

size_t sl_act_row_bytes(enum sl_act_format f, int64_t n) {
    switch (f) {
    case SL_ACT_Q8_0: return (size_t)(n / QK) * 34;
    case SL_ACT_Q8_1: return (size_t)(n / QK) * 36;
    default: return (size_t)n * sizeof(float);
    }
}

static void store_le16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* As ggml's x86 quantize_row_q8_0/q8_1: d = amax/127 stored as f16, q = x * (127/amax)
 * rounded to nearest even (the AVX2 path's rounding; the scalar path here rounds the same). */
static void quantize_block_scalar(const float *x, uint8_t *o, bool with_sum) {
    float amax = 0;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = amax != 0 ? 127.0f / amax : 0.0f;
    int8_t *q = (int8_t *)(o + (with_sum ? 4 : 2));
    int sum = 0;
    for (int j = 0; j < QK; j++) {
        q[j] = (int8_t)nearbyintf(x[j] * id);
        sum += q[j];
    }
    store_le16(o, sl_f32_to_f16(d));
    if (with_sum) store_le16(o + 2, sl_f32_to_f16((float)sum * d));
}

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx2,fma,f16c"))) static void quantize_block_avx2(const float *x, uint8_t *o, bool with_sum) {
    __m256 v[4], amax = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
    }
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4), d = mx / 127.0f, id = mx != 0 ? 127.0f / mx : 0.0f;
    __m256 vid = _mm256_set1_ps(id);
    __m256i i[4];
    for (int k = 0; k < 4; k++)
        i[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], vid), _MM_ROUND_NEAREST));
    store_le16(o, sl_f32_to_f16(d));
    if (with_sum) {
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_hadd_epi32(s4, s4);
        s4 = _mm_hadd_epi32(s4, s4);
        store_le16(o + 2, sl_f32_to_f16((float)_mm_cvtsi128_si32(s4) * d));
    }
    /* int32 -> int16 -> int8 packs interleave 128-bit lanes; the permute restores order. */
    __m256i p16a = _mm256_packs_epi32(i[0], i[1]), p16b = _mm256_packs_epi32(i[2], i[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)(o + (with_sum ? 4 : 2)), p8);
}
#endif

#define have_avx2 sl_cpu_use_avx2

void sl_act_quantize(enum sl_act_format f, const float *x, void *out, int64_t n) {
    if (f == SL_ACT_F32) {
        memcpy(out, x, (size_t)n * sizeof(float));
        return;
    }
    uint8_t *o = out;
    const bool with_sum = f == SL_ACT_Q8_1;
    const size_t bb = with_sum ? 36 : 34;
#if defined(__x86_64__)
    if (have_avx2()) {
        for (int64_t b = 0; b < n / QK; b++) quantize_block_avx2(x + b * QK, o + (size_t)b * bb, with_sum);
        return;
    }
#endif
    for (int64_t b = 0; b < n / QK; b++) quantize_block_scalar(x + b * QK, o + (size_t)b * bb, with_sum);
}

void sl_act_dequantize(enum sl_act_format f, const void *in, float *x, int64_t n) {
    if (f == SL_ACT_F32) {
        memcpy(x, in, (size_t)n * sizeof(float));
        return;
    }
    const uint8_t *b = in;
    size_t bb = f == SL_ACT_Q8_1 ? 36 : 34, off = f == SL_ACT_Q8_1 ? 4 : 2;
    for (int64_t i = 0; i < n / QK; i++, b += bb, x += QK) {
        float d = sl_half_to_float(sl_load_le16(b));
        const int8_t *q = (const int8_t *)(b + off);
        for (int j = 0; j < QK; j++) x[j] = d * (float)q[j];
    }
}

/* ---- scalar kernels --------------------------------------------------------------------- */

static float h(const uint8_t *p) { return sl_half_to_float(sl_load_le16(p)); }

static float dot_q4_0_q8_0(const void *w, const void *x, int64_t n) {
    const uint8_t *a = w, *b = x;
    float acc = 0;
    for (int64_t i = 0; i < n / QK; i++, a += 18, b += 34) {
        const int8_t *q8 = (const int8_t *)(b + 2);
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += ((a[2 + j] & 0xf) - 8) * q8[j] + ((a[2 + j] >> 4) - 8) * q8[j + 16];
        acc += h(a) * h(b) * (float)s;
    }
    return acc;
}

static float dot_q4_1_q8_1(const void *w, const void *x, int64_t n) {
    const uint8_t *a = w, *b = x;
    float acc = 0;
    for (int64_t i = 0; i < n / QK; i++, a += 20, b += 36) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        int s = 0;
        for (int j = 0; j < 16; j++) s += (a[4 + j] & 0xf) * q8[j] + (a[4 + j] >> 4) * q8[j + 16];
        acc += h(a) * h(b) * (float)s + h(a + 2) * h(b + 2);
    }
    return acc;
}

static float dot_q5_0_q8_0(const void *w, const void *x, int64_t n) {
    const uint8_t *a = w, *b = x;
    float acc = 0;
    for (int64_t i = 0; i < n / QK; i++, a += 22, b += 34) {
        const int8_t *q8 = (const int8_t *)(b + 2);
        uint32_t qh = sl_load_le32(a + 2);
        int s = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (a[6 + j] & 0xf) | (int)((qh >> j) & 1) << 4;
            int hi = (a[6 + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            s += (lo - 16) * q8[j] + (hi - 16) * q8[j + 16];
        }
        acc += h(a) * h(b) * (float)s;
    }
    return acc;
}

static float dot_q5_1_q8_1(const void *w, const void *x, int64_t n) {
    const uint8_t *a = w, *b = x;
    float acc = 0;
    for (int64_t i = 0; i < n / QK; i++, a += 24, b += 36) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        uint32_t qh = sl_load_le32(a + 4);
        int s = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (a[8 + j] & 0xf) | (int)((qh >> j) & 1) << 4;
            int hi = (a[8 + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            s += lo * q8[j] + hi * q8[j + 16];
        }
        acc += h(a) * h(b) * (float)s + h(a + 2) * h(b + 2);
    }
    return acc;
}

static float dot_q8_0_q8_0(const void *w, const void *x, int64_t n) {
    const uint8_t *a = w, *b = x;
    float acc = 0;
    for (int64_t i = 0; i < n / QK; i++, a += 34, b += 34) {
        const int8_t *qa = (const int8_t *)(a + 2), *qb = (const int8_t *)(b + 2);
        int s = 0;
        for (int j = 0; j < QK; j++) s += qa[j] * qb[j];
        acc += h(a) * h(b) * (float)s;
    }
    return acc;
}

static float dot_f32(const void *w, const void *x, int64_t n) {
    const float *a = w, *b = x;
    float acc = 0;
    for (int64_t i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

/* Any dequantizable type against f32 activations, a block at a time (K-quants, F16, BF16). */
#define GENERIC_DOT(name, type)                                                                 \
    static float name(const void *w, const void *x, int64_t n) {                               \
        const int64_t be = sl_type_block_elems(type);                                          \
        const size_t bb = sl_type_block_bytes(type);                                           \
        const uint8_t *a = w;                                                                  \
        const float *b = x;                                                                    \
        float buf[256], acc = 0;                                                               \
        int64_t step = be >= 256 ? be : 256 / be * be;                                         \
        for (int64_t i = 0; i < n; i += step) {                                                \
            int64_t m = n - i < step ? n - i : step;                                           \
            sl_dequant_f32(type, a + (size_t)(i / be) * bb, buf, m);                           \
            for (int64_t j = 0; j < m; j++) acc += buf[j] * b[i + j];                          \
        }                                                                                      \
        return acc;                                                                            \
    }
GENERIC_DOT(dot_f16_f32, SL_TYPE_F16)
GENERIC_DOT(dot_bf16_f32, SL_TYPE_BF16)
GENERIC_DOT(dot_q4_k_f32, SL_TYPE_Q4_K)
GENERIC_DOT(dot_q5_k_f32, SL_TYPE_Q5_K)
GENERIC_DOT(dot_q6_k_f32, SL_TYPE_Q6_K)

/* ---- AVX2 kernels ----------------------------------------------------------------------- */

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 packed bytes -> 32 nibbles: low nibbles in lanes 0..15, high nibbles in 16..31, the
 * element order of the 32-element formats. */
AVX2 static inline __m256i unpack_nibbles(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

/* sum of u8 x s8 products, as 8 int32 lanes converted to float */
AVX2 static inline __m256 mul_u8_s8(__m256i u, __m256i s) {
    __m256i p16 = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

/* s8 x s8 via |a| * sign(b, a) */
AVX2 static inline __m256 mul_s8_s8(__m256i a, __m256i b) {
    return mul_u8_s8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

AVX2 static inline float half(const uint8_t *p) {
    return _cvtsh_ss(sl_load_le16(p));
}

AVX2 static float dot_q4_0_q8_0_avx2(const void *w, const void *x, int64_t n) {
    const uint8_t *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK; i++, a += 18, b += 34) {
        __m256i qa = _mm256_sub_epi8(unpack_nibbles(a + 2), _mm256_set1_epi8(8));
        __m256i qb = _mm256_loadu_si256((const __m256i *)(b + 2));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(a) * half(b)), mul_s8_s8(qa, qb), acc);
    }
    return hsum8(acc);
}

/* Two blocks per iteration into two accumulators: the fmadd chain, not the loads, bounds a
 * single-accumulator loop at these row lengths. */
AVX2 static float dot_q4_1_q8_1_avx2(const void *w, const void *x, int64_t n) {
    const uint8_t *a = w, *b = x;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float mins = 0;
    int64_t nb = n / QK, i = 0;
    for (; i + 2 <= nb; i += 2, a += 40, b += 72) {
        __m256i qb0 = _mm256_loadu_si256((const __m256i *)(b + 4));
        __m256i qb1 = _mm256_loadu_si256((const __m256i *)(b + 36 + 4));
        __m256 p0 = mul_u8_s8(unpack_nibbles(a + 4), qb0), p1 = mul_u8_s8(unpack_nibbles(a + 24), qb1);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half(a) * half(b)), p0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(half(a + 20) * half(b + 36)), p1, acc1);
        mins += half(a + 2) * half(b + 2) + half(a + 22) * half(b + 38);
    }
    for (; i < nb; i++, a += 20, b += 36) {
        __m256i qb = _mm256_loadu_si256((const __m256i *)(b + 4));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half(a) * half(b)), mul_u8_s8(unpack_nibbles(a + 4), qb), acc0);
        mins += half(a + 2) * half(b + 2);
    }
    return hsum8(_mm256_add_ps(acc0, acc1)) + mins;
}

AVX2 static float dot_q8_0_q8_0_avx2(const void *w, const void *x, int64_t n) {
    const uint8_t *a = w, *b = x;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t nb = n / QK, i = 0;
    for (; i + 2 <= nb; i += 2, a += 68, b += 68) {
        __m256 p0 = mul_s8_s8(_mm256_loadu_si256((const __m256i *)(a + 2)), _mm256_loadu_si256((const __m256i *)(b + 2)));
        __m256 p1 = mul_s8_s8(_mm256_loadu_si256((const __m256i *)(a + 36)), _mm256_loadu_si256((const __m256i *)(b + 36)));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half(a) * half(b)), p0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(half(a + 34) * half(b + 34)), p1, acc1);
    }
    for (; i < nb; i++, a += 34, b += 34) {
        __m256i qa = _mm256_loadu_si256((const __m256i *)(a + 2));
        __m256i qb = _mm256_loadu_si256((const __m256i *)(b + 2));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half(a) * half(b)), mul_s8_s8(qa, qb), acc0);
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
}

/* The 32 fifth bits of a Q5 block as bytes 0x10 or 0x00, in element order. */
AVX2 static inline __m256i q5_high_bits(const uint8_t *qh_p) {
    uint32_t qh = sl_load_le32(qh_p);
    __m256i v = _mm256_set1_epi32((int)qh);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    v = _mm256_shuffle_epi8(v, shuf); /* byte j holds qh byte j/8 */
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

AVX2 static float dot_q5_0_q8_0_avx2(const void *w, const void *x, int64_t n) {
    const uint8_t *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK; i++, a += 22, b += 34) {
        __m256i q = _mm256_or_si256(unpack_nibbles(a + 6), q5_high_bits(a + 2));
        q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        __m256i qb = _mm256_loadu_si256((const __m256i *)(b + 2));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(a) * half(b)), mul_s8_s8(q, qb), acc);
    }
    return hsum8(acc);
}

AVX2 static float dot_f32_avx2(const void *w, const void *x, int64_t n) {
    const float *a = w, *b = x;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    float s = hsum8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}
#endif

/* ---- dispatch --------------------------------------------------------------------------- */

struct sl_vec_dot sl_vec_dot_for(int type) {
    bool v = have_avx2();
    switch (type) {
#if defined(__x86_64__)
    case SL_TYPE_Q4_0: return (struct sl_vec_dot){SL_ACT_Q8_0, v ? dot_q4_0_q8_0_avx2 : dot_q4_0_q8_0};
    case SL_TYPE_Q4_1: return (struct sl_vec_dot){SL_ACT_Q8_1, v ? dot_q4_1_q8_1_avx2 : dot_q4_1_q8_1};
    case SL_TYPE_Q5_0: return (struct sl_vec_dot){SL_ACT_Q8_0, v ? dot_q5_0_q8_0_avx2 : dot_q5_0_q8_0};
    case SL_TYPE_Q8_0: return (struct sl_vec_dot){SL_ACT_Q8_0, v ? dot_q8_0_q8_0_avx2 : dot_q8_0_q8_0};
    case SL_TYPE_F32: return (struct sl_vec_dot){SL_ACT_F32, v ? dot_f32_avx2 : dot_f32};
#else
    case SL_TYPE_Q4_0: return (struct sl_vec_dot){SL_ACT_Q8_0, dot_q4_0_q8_0};
    case SL_TYPE_Q4_1: return (struct sl_vec_dot){SL_ACT_Q8_1, dot_q4_1_q8_1};
    case SL_TYPE_Q5_0: return (struct sl_vec_dot){SL_ACT_Q8_0, dot_q5_0_q8_0};
    case SL_TYPE_Q8_0: return (struct sl_vec_dot){SL_ACT_Q8_0, dot_q8_0_q8_0};
    case SL_TYPE_F32: return (struct sl_vec_dot){SL_ACT_F32, dot_f32};
#endif
    case SL_TYPE_Q5_1: return (struct sl_vec_dot){SL_ACT_Q8_1, dot_q5_1_q8_1};
    case SL_TYPE_F16: return (struct sl_vec_dot){SL_ACT_F32, dot_f16_f32};
    case SL_TYPE_BF16: return (struct sl_vec_dot){SL_ACT_F32, dot_bf16_f32};
    case SL_TYPE_Q4_K: return (struct sl_vec_dot){SL_ACT_F32, dot_q4_k_f32};
    case SL_TYPE_Q5_K: return (struct sl_vec_dot){SL_ACT_F32, dot_q5_k_f32};
    case SL_TYPE_Q6_K: return (struct sl_vec_dot){SL_ACT_F32, dot_q6_k_f32};
    default: return (struct sl_vec_dot){SL_ACT_F32, NULL};
    }
}
