/* Hamming scan kernels (see hamming.h): portable scalar, AVX2 and AVX-512 VPOPCNTQ, chosen
 * at run time. Every kernel sums weighted popcounts per key in integer arithmetic, so all
 * paths (and both forms of the group, below) give identical scores; they differ only in
 * speed. */
#include "cpu/hamming.h"

#include <string.h>

#include "core/internal.h"
#include "cpu/dispatch.h"
#include "spotlight/cpu.h"
#include "spotlight/error.h"

int sl_hamming_check(int32_t G, int32_t W) {
    if (G < 1 || W < 1)
        return sl_fail(SL_EINVAL, "hamming scan: group size %d and code words %d must be >= 1", G, W);
    if ((int64_t)G * W * 64 > SL_HAMMING_MAX_SCORE)
        return sl_fail(SL_EINVAL, "hamming scan: G*b = %d*%d = %lld exceeds the uint16 score range %d", G,
                       W * 64, (long long)G * W * 64, SL_HAMMING_MAX_SCORE);
    return 0;
}

/* ---- the group as a weighted sum of popcounts ----------------------------------------------
 * Every kernel computes score = c - sum_j 2^sh_j * popcount(r_j ^ k) over J terms.
 * Directly: r_j = q_j, sh_j = 0, c = G*b.
 * With bit planes: count, per bit i, the queries with bit i set: c_i. A key mismatches c_i of
 * them at bit i when k_i = 0 and G - c_i when k_i = 1. Pad the group to G' = 2^T - 1 virtual
 * queries: for even G one all-zero query (its mismatches are popcount(k)), then pairs z, ~z
 * (each pair mismatches exactly b bits, whatever k). With c'_i counted over all G' queries,
 * G' - c'_i = c'_i XOR (T ones), so the mismatches summed over the G' queries are
 * sum_t 2^t popcount(P_t ^ k), P_t = bit t of c' as a code. With p pairs and
 * popcount(k) = b - popcount(~0 ^ k):
 *     score = (G + p + e) * b - sum_t 2^t popcount(P_t ^ k) - e * popcount(~0 ^ k),
 * e = 1 for even G, else 0: T + e popcounts per key instead of G (2 for G = 3, 5 for G = 8).
 * Exact integer identities, so every path gives the same scores either way. */

#define PLANES_MAX_G 15 /* T <= 4: weighted byte counts stay <= 8 * 15 + 8 */
#define PLANES_MAX_W 16 /* the planes live on the stack: (4 + 1) * 16 words */

struct terms {
    const uint64_t *r; /* (J, W) codes */
    const uint8_t *sh; /* J weights as shifts, non-increasing (Horner order); NULL: all 0 */
    int32_t J, W;
    uint32_t c;
};

static int32_t plane_count(int32_t Gv) {
    int32_t T = 1;
    while ((1 << T) - 1 < Gv) T++;
    return T;
}

/* Worth it when it saves popcounts: G = 3 and G >= 5. */
static bool use_planes(int32_t G) { return plane_count(G | 1) + !(G & 1) < G; }

/* Builds the plane terms of q into r (room for (T + 1) * W words) and sh. */
static struct terms make_planes(const uint64_t *q, int32_t G, int32_t W, uint64_t *r, uint8_t *sh) {
    const int32_t e = !(G & 1), T = plane_count(G + e), p = ((1 << T) - 1 - (G + e)) / 2;
    uint64_t cnt[4 * PLANES_MAX_W] = {0}; /* cnt[t * W + i]: bit t of the counts */
    /* bit-sliced counter: add each query, then p all-ones words (z + ~z), ripple carry */
    for (int32_t g = 0; g < G + p; g++)
        for (int32_t i = 0; i < W; i++) {
            uint64_t carry = g < G ? q[(int64_t)g * W + i] : ~0ull;
            for (int32_t t = 0; t < T && carry; t++) {
                uint64_t v = cnt[t * W + i];
                cnt[t * W + i] = v ^ carry;
                carry &= v;
            }
        }
    for (int32_t t = 0; t < T; t++) { /* highest weight first, for Horner's rule */
        memcpy(r + (int64_t)t * W, cnt + (T - 1 - t) * W, sizeof(uint64_t) * (size_t)W);
        sh[t] = (uint8_t)(T - 1 - t);
    }
    if (e) {
        for (int32_t i = 0; i < W; i++) r[T * W + i] = ~0ull;
        sh[T] = 0;
    }
    return (struct terms){r, sh, T + e, W, (uint32_t)(G + p + e) * (uint32_t)W * 64u};
}

/* ---- scalar ------------------------------------------------------------------------------
 * One always-inline body, instantiated twice: portable (where __builtin_popcountll may be a
 * library call) and with target("popcnt") for the tails of the vector paths. Four keys per
 * step with the term loop inside, so the popcounts of different keys run in parallel. */

#define POPC(x) ((uint32_t)__builtin_popcountll(x))
#define SH(t, j) ((t)->sh ? (t)->sh[j] : 0)

static inline __attribute__((always_inline)) void scan_body(const struct terms *t, const uint64_t *k, int64_t n,
                                                             uint16_t *scores) {
    const int32_t J = t->J, W = t->W;
    const uint64_t *r = t->r;
    int64_t j = 0;
    if (W == 1) {
        for (; j + 4 <= n; j += 4) {
            uint64_t k0 = k[j], k1 = k[j + 1], k2 = k[j + 2], k3 = k[j + 3];
            uint32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (int32_t i = 0; i < J; i++) {
                uint64_t ri = r[i];
                int sh = SH(t, i);
                s0 += POPC(ri ^ k0) << sh;
                s1 += POPC(ri ^ k1) << sh;
                s2 += POPC(ri ^ k2) << sh;
                s3 += POPC(ri ^ k3) << sh;
            }
            scores[j] = (uint16_t)(t->c - s0);
            scores[j + 1] = (uint16_t)(t->c - s1);
            scores[j + 2] = (uint16_t)(t->c - s2);
            scores[j + 3] = (uint16_t)(t->c - s3);
        }
    } else if (W == 2) {
        for (; j + 2 <= n; j += 2) {
            const uint64_t *kj = k + j * 2;
            uint32_t s0 = 0, s1 = 0;
            for (int32_t i = 0; i < J; i++) {
                uint64_t a = r[2 * i], b = r[2 * i + 1];
                int sh = SH(t, i);
                s0 += (POPC(a ^ kj[0]) + POPC(b ^ kj[1])) << sh;
                s1 += (POPC(a ^ kj[2]) + POPC(b ^ kj[3])) << sh;
            }
            scores[j] = (uint16_t)(t->c - s0);
            scores[j + 1] = (uint16_t)(t->c - s1);
        }
    }
    for (; j < n; j++) {
        const uint64_t *kj = k + j * W;
        uint32_t s = 0;
        for (int32_t i = 0; i < J; i++) {
            const uint64_t *ri = r + (int64_t)i * W;
            uint32_t p = 0;
            for (int32_t x = 0; x < W; x++) p += POPC(ri[x] ^ kj[x]);
            s += p << SH(t, i);
        }
        scores[j] = (uint16_t)(t->c - s);
    }
}

static void scan_scalar(const struct terms *t, const uint64_t *k, int64_t n, uint16_t *scores) {
    scan_body(t, k, n, scores);
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("popcnt"))) static void scan_popcnt(const struct terms *t, const uint64_t *k, int64_t n,
                                                          uint16_t *scores) {
    scan_body(t, k, n, scores);
}

/* ---- AVX2 --------------------------------------------------------------------------------
 * Popcount of each byte by two 16-entry table lookups (vpshufb on the low and high nibbles).
 * Byte counts are summed as bytes, weighted by Horner's rule (double the running sum between
 * terms of falling weight), and folded by vpsadbw into 64-bit lane sums when 31 more unit
 * terms could carry a byte past 255 (planes never need a fold: 8 * 15 + 8 < 256).
 * Measured on the 2-core EPYC (Zen, no AVX-512), G = 3, W = 1, direct form: 0.90 ns/key
 * against 1.36 for scalar popcnt four keys wide (best of 200); vpshufb also won for W = 2..16
 * except W = 4 with G = 1 (a tie), so only W not in {1, 2, 4m} takes the popcnt loop. Bit
 * planes then took G = 3, W = 1 from 0.85 to 0.70 ns/key (same run, best of 3000), and eight
 * keys per step (two registers, terms unrolled) matched sixteen. */

#define AVX2 __attribute__((target("avx2,popcnt")))

/* Codes are read once, in order, straight from DRAM at long contexts: a software prefetch
 * 2 KiB ahead (one per 64-byte line) took a cold 1M-key scan (8 MiB of codes, G = 3, b = 64)
 * from 2.0-2.6 to 1.4-2.1 ns/key (medians of 64, three runs; 4 KiB did as well). */
#define PREFETCH 2048

AVX2 static inline __m256i popcnt_bytes(__m256i x) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2,
                                         2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(x, m4), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* Four per-key sums in the 64-bit lanes of a, to four uint16 c - sum. */
AVX2 static inline void store4_avx2(__m256i a, uint32_t c, uint16_t *dst) {
    a = _mm256_sub_epi64(_mm256_set1_epi64x(c), a);
    a = _mm256_permutevar8x32_epi32(a, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
    __m128i s = _mm_packus_epi32(_mm256_castsi256_si128(a), _mm256_castsi256_si128(a));
    _mm_storel_epi64((__m128i *)dst, s);
}

/* Eight per-key sums, held in the 64-bit lanes of a (keys 0-3) and b (keys 4-7), to eight
 * uint16 c - sum in key order. */
AVX2 static inline void store8_avx2(__m256i a, __m256i b, uint32_t c, uint16_t *dst) {
    const __m256i vc = _mm256_set1_epi64x(c);
    a = _mm256_sub_epi64(vc, a); /* before narrowing: with planes the sums may exceed 65535 */
    b = _mm256_sub_epi64(vc, b);
    /* dwords: [k0 k4 k1 k5 | k2 k6 k3 k7] -> [k0 k1 k2 k3 | k4 k5 k6 k7] */
    __m256i ab = _mm256_or_si256(a, _mm256_slli_epi64(b, 32));
    ab = _mm256_permutevar8x32_epi32(ab, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    __m128i s = _mm_packus_epi32(_mm256_castsi256_si128(ab), _mm256_extracti128_si256(ab, 1));
    _mm_storeu_si128((__m128i *)dst, s);
}

/* Two registers of key words against all J terms (term i's register from rv(i)); leaves the
 * 64-bit lane sums of the weighted popcounts in s0, s1. J is a constant in the
 * specialisations below, so the term loop unrolls. */
#define TERMS_X2(J, rv)                                                                       \
    do {                                                                                      \
        __m256i c0 = zero, c1 = zero;                                                         \
        s0 = s1 = zero;                                                                       \
        for (int32_t i = 0; i < (J); i++) {                                                   \
            if (sh) {                                                                         \
                for (int d = i ? sh[i - 1] - sh[i] : 0; d > 0; d--) {                         \
                    c0 = _mm256_add_epi8(c0, c0);                                             \
                    c1 = _mm256_add_epi8(c1, c1);                                             \
                }                                                                             \
            } else if (i && i % 31 == 0) {                                                    \
                s0 = _mm256_add_epi64(s0, _mm256_sad_epu8(c0, zero));                         \
                s1 = _mm256_add_epi64(s1, _mm256_sad_epu8(c1, zero));                         \
                c0 = c1 = zero;                                                               \
            }                                                                                 \
            __m256i ri = rv(i);                                                               \
            c0 = _mm256_add_epi8(c0, popcnt_bytes(_mm256_xor_si256(v0, ri)));                 \
            c1 = _mm256_add_epi8(c1, popcnt_bytes(_mm256_xor_si256(v1, ri)));                 \
        }                                                                                     \
        s0 = _mm256_add_epi64(s0, _mm256_sad_epu8(c0, zero));                                 \
        s1 = _mm256_add_epi64(s1, _mm256_sad_epu8(c1, zero));                                 \
    } while (0)

/* Adds the two 64-bit halves of each 128-bit lane: a = [a0 a1 | a2 a3], b likewise ->
 * [a0+a1, b0+b1 | a2+a3, b2+b3]. */
AVX2 static inline __m256i pair_sums(__m256i a, __m256i b) {
    return _mm256_add_epi64(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
}

/* W = 1: four keys per register, eight per step. */
AVX2 static inline __attribute__((always_inline)) void w1_avx2(const struct terms *t, const uint64_t *k, int64_t n,
                                                               uint16_t *scores, int32_t J) {
    const __m256i zero = _mm256_setzero_si256();
    const uint64_t *r = t->r;
    const uint8_t *sh = t->sh;
#define RV1(i) _mm256_set1_epi64x((long long)r[i])
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        _mm_prefetch((const char *)(k + j) + PREFETCH, _MM_HINT_T0);
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(k + j)), v1 = _mm256_loadu_si256((const __m256i *)(k + j + 4));
        __m256i s0, s1;
        TERMS_X2(J, RV1);
        store8_avx2(s0, s1, t->c, scores + j);
    }
#undef RV1
    scan_popcnt(t, k + j, n - j, scores + j);
}

/* W = 2: two keys per register, four per step. */
AVX2 static inline __attribute__((always_inline)) void w2_avx2(const struct terms *t, const uint64_t *k, int64_t n,
                                                               uint16_t *scores, int32_t J) {
    const __m256i zero = _mm256_setzero_si256();
    const uint64_t *r = t->r;
    const uint8_t *sh = t->sh;
#define RV2(i) _mm256_setr_epi64x((long long)r[2 * (i)], (long long)r[2 * (i) + 1], (long long)r[2 * (i)], \
                                  (long long)r[2 * (i) + 1])
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const uint64_t *kj = k + j * 2;
        _mm_prefetch((const char *)kj + PREFETCH, _MM_HINT_T0);
        __m256i v0 = _mm256_loadu_si256((const __m256i *)kj), v1 = _mm256_loadu_si256((const __m256i *)(kj + 4));
        __m256i s0, s1;
        TERMS_X2(J, RV2);
        /* s0 = [k0w0 k0w1 | k1w0 k1w1], s1 likewise for keys 2, 3 -> [k0 k2 | k1 k3] -> in order */
        store4_avx2(_mm256_permute4x64_epi64(pair_sums(s0, s1), 0xD8), t->c, scores + j);
    }
#undef RV2
    scan_popcnt(t, k + j * 2, n - j, scores + j);
}

/* Specialisations for the term counts the common groups give (G = 1..4 direct, 2 or 3
 * planes + 1), then any J. */
#define SPECIALISE(name, body)                                                                        \
    AVX2 static void name(const struct terms *t, const uint64_t *k, int64_t n, uint16_t *scores) {    \
        switch (t->J) {                                                                               \
        case 1: body(t, k, n, scores, 1); return;                                                     \
        case 2: body(t, k, n, scores, 2); return;                                                     \
        case 3: body(t, k, n, scores, 3); return;                                                     \
        case 4: body(t, k, n, scores, 4); return;                                                     \
        default: body(t, k, n, scores, t->J); return;                                                 \
        }                                                                                             \
    }
SPECIALISE(scan_w1_avx2, w1_avx2)
SPECIALISE(scan_w2_avx2, w2_avx2)

/* W a multiple of 4: a key spans W/4 registers; each term's byte counts over those (at most
 * 8 * W/4 per byte, so W <= 124) are folded by vpsadbw and shifted by the term's weight, and
 * four keys' lanes are reduced together. */
AVX2 static void scan_w4x_avx2(const struct terms *t, const uint64_t *k, int64_t n, uint16_t *scores) {
    const __m256i zero = _mm256_setzero_si256();
    const int32_t W = t->W, nc = W / 4;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256i s[8];
        for (int r = 0; r < 8; r++) {
            const uint64_t *kj = k + (j + r) * W;
            _mm_prefetch((const char *)kj + PREFETCH, _MM_HINT_T0);
            __m256i acc = zero;
            for (int32_t i = 0; i < t->J; i++) {
                const uint64_t *ri = t->r + (int64_t)i * W;
                __m256i c = zero;
                for (int32_t x = 0; x < nc; x++) {
                    __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(kj + 4 * x)),
                                                 _mm256_loadu_si256((const __m256i *)(ri + 4 * x)));
                    c = _mm256_add_epi8(c, popcnt_bytes(v));
                }
                acc = _mm256_add_epi64(acc, _mm256_sll_epi64(_mm256_sad_epu8(c, zero), _mm_cvtsi32_si128(SH(t, i))));
            }
            s[r] = acc;
        }
        /* [k0 k1 k2 k3] from four 4-lane partial sums: pair_sums then add across halves. */
        __m256i x0 = pair_sums(s[0], s[1]), y0 = pair_sums(s[2], s[3]);
        __m256i x1 = pair_sums(s[4], s[5]), y1 = pair_sums(s[6], s[7]);
        __m256i a = _mm256_add_epi64(_mm256_permute2x128_si256(x0, y0, 0x20), _mm256_permute2x128_si256(x0, y0, 0x31));
        __m256i b = _mm256_add_epi64(_mm256_permute2x128_si256(x1, y1, 0x20), _mm256_permute2x128_si256(x1, y1, 0x31));
        store8_avx2(a, b, t->c, scores + j);
    }
    scan_popcnt(t, k + j * W, n - j, scores + j);
}

static void scan_avx2(const struct terms *t, const uint64_t *k, int64_t n, uint16_t *scores) {
    if (t->W == 1)
        scan_w1_avx2(t, k, n, scores);
    else if (t->W == 2)
        scan_w2_avx2(t, k, n, scores);
    else if (t->W % 4 == 0 && t->W <= 124)
        scan_w4x_avx2(t, k, n, scores);
    else
        scan_popcnt(t, k, n, scores);
}

/* ---- AVX-512 (VPOPCNTQ) ------------------------------------------------------------------
 * A popcount per 64-bit lane in one instruction; sums stay in 64-bit lanes (weights by
 * shifts) and vpmovqw narrows eight of them to uint16. Tails use masked loads and stores.
 * test-hash-topk runs it against the scalar kernel wherever cpuid reports the features. */

#define AVX512 __attribute__((target("avx512f,avx512vpopcntdq,popcnt")))

AVX512 static inline __m512i popcnt_w(__m512i x, int sh) {
    __m512i p = _mm512_popcnt_epi64(x);
    return sh ? _mm512_sll_epi64(p, _mm_cvtsi32_si128(sh)) : p;
}

AVX512 static inline void store8_avx512(__m512i sum, uint32_t c, uint16_t *dst, __mmask8 m) {
    __m512i r = _mm512_sub_epi64(_mm512_set1_epi64(c), sum);
    _mm512_mask_cvtepi64_storeu_epi16(dst, m, r);
}

AVX512 static void scan_w1_avx512(const struct terms *t, const uint64_t *k, int64_t n, uint16_t *scores) {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m512i v0 = _mm512_loadu_si512(k + j), v1 = _mm512_loadu_si512(k + j + 8),
                v2 = _mm512_loadu_si512(k + j + 16), v3 = _mm512_loadu_si512(k + j + 24);
        __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
        for (int32_t i = 0; i < t->J; i++) {
            __m512i ri = _mm512_set1_epi64((long long)t->r[i]);
            int w = SH(t, i);
            s0 = _mm512_add_epi64(s0, popcnt_w(_mm512_xor_si512(v0, ri), w));
            s1 = _mm512_add_epi64(s1, popcnt_w(_mm512_xor_si512(v1, ri), w));
            s2 = _mm512_add_epi64(s2, popcnt_w(_mm512_xor_si512(v2, ri), w));
            s3 = _mm512_add_epi64(s3, popcnt_w(_mm512_xor_si512(v3, ri), w));
        }
        store8_avx512(s0, t->c, scores + j, 0xff);
        store8_avx512(s1, t->c, scores + j + 8, 0xff);
        store8_avx512(s2, t->c, scores + j + 16, 0xff);
        store8_avx512(s3, t->c, scores + j + 24, 0xff);
    }
    for (; j < n; j += 8) {
        __mmask8 m = n - j >= 8 ? 0xff : (__mmask8)((1u << (n - j)) - 1);
        __m512i v = _mm512_maskz_loadu_epi64(m, k + j), s = _mm512_setzero_si512();
        for (int32_t i = 0; i < t->J; i++)
            s = _mm512_add_epi64(s, popcnt_w(_mm512_xor_si512(v, _mm512_set1_epi64((long long)t->r[i])), SH(t, i)));
        store8_avx512(s, t->c, scores + j, m);
    }
}

/* W = 2: four keys per register; the even and odd lanes of two registers are the keys'
 * first and second words. */
AVX512 static void scan_w2_avx512(const struct terms *t, const uint64_t *k, int64_t n, uint16_t *scores) {
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    for (int64_t j = 0; j < n; j += 8) {
        int64_t nk = n - j >= 8 ? 8 : n - j; /* keys in this step: 2 nk words */
        __mmask8 m0 = nk >= 4 ? 0xff : (__mmask8)((1u << (2 * nk)) - 1);
        __mmask8 m1 = nk <= 4 ? 0 : (__mmask8)((1u << (2 * (nk - 4))) - 1);
        __m512i v0 = _mm512_maskz_loadu_epi64(m0, k + 2 * j), v1 = _mm512_maskz_loadu_epi64(m1, k + 2 * j + 8);
        __m512i s0 = _mm512_setzero_si512(), s1 = s0;
        for (int32_t i = 0; i < t->J; i++) {
            long long a = (long long)t->r[2 * i], b = (long long)t->r[2 * i + 1];
            __m512i ri = _mm512_setr_epi64(a, b, a, b, a, b, a, b);
            int w = SH(t, i);
            s0 = _mm512_add_epi64(s0, popcnt_w(_mm512_xor_si512(v0, ri), w));
            s1 = _mm512_add_epi64(s1, popcnt_w(_mm512_xor_si512(v1, ri), w));
        }
        __m512i sum = _mm512_add_epi64(_mm512_permutex2var_epi64(s0, even, s1), _mm512_permutex2var_epi64(s0, odd, s1));
        store8_avx512(sum, t->c, scores + j, (__mmask8)((1u << nk) - 1));
    }
}

/* Any other W: a key spans ceil(W/8) registers, the last one masked; one lane reduction per
 * key. */
AVX512 static void scan_wx_avx512(const struct terms *t, const uint64_t *k, int64_t n, uint16_t *scores) {
    const int32_t W = t->W, nc = (W + 7) / 8;
    const __mmask8 last = (W % 8) ? (__mmask8)((1u << (W % 8)) - 1) : 0xff;
    for (int64_t j = 0; j < n; j++) {
        const uint64_t *kj = k + j * W;
        __m512i acc = _mm512_setzero_si512();
        for (int32_t x = 0; x < nc; x++) {
            __mmask8 m = x == nc - 1 ? last : 0xff;
            __m512i v = _mm512_maskz_loadu_epi64(m, kj + 8 * x);
            for (int32_t i = 0; i < t->J; i++) {
                __m512i y = _mm512_xor_si512(v, _mm512_maskz_loadu_epi64(m, t->r + (int64_t)i * W + 8 * x));
                acc = _mm512_add_epi64(acc, popcnt_w(y, SH(t, i)));
            }
        }
        scores[j] = (uint16_t)(t->c - (uint32_t)_mm512_reduce_add_epi64(acc));
    }
}

static void scan_avx512(const struct terms *t, const uint64_t *k, int64_t n, uint16_t *scores) {
    if (t->W == 1)
        scan_w1_avx512(t, k, n, scores);
    else if (t->W == 2)
        scan_w2_avx512(t, k, n, scores);
    else
        scan_wx_avx512(t, k, n, scores);
}
#endif /* __x86_64__ */

/* ---- dispatch ---------------------------------------------------------------------------- */

static int g_forced;      /* enum sl_hamming_path; AUTO = not forced */
static int g_planes = -1; /* -1: bit planes where they save popcounts; 0: never; 1: always */

int sl_hamming_force_planes(int mode) {
    int prev = g_planes;
    g_planes = mode < 0 ? -1 : mode > 0;
    return prev;
}

/* Bit 0: AVX2, bit 1: AVX-512 with VPOPCNTQ; read once (sl_cpu_info_get loads the hwloc
 * topology, too slow for every call). A racing first call computes the same value. */
static int hw_paths(void) {
    static int cached = -1;
#if defined(__x86_64__)
    if (cached < 0) {
        struct sl_cpu_info ci;
        sl_cpu_info_get(&ci);
        cached = (ci.avx2 ? 1 : 0) | (ci.avx512f && ci.avx512_vpopcntdq ? 2 : 0);
    }
#else
    cached = 0;
#endif
    return cached;
}

bool sl_hamming_path_available(enum sl_hamming_path p) {
    switch (p) {
    case SL_HAMMING_AUTO:
    case SL_HAMMING_SCALAR: return true;
    case SL_HAMMING_AVX2: return hw_paths() & 1;
    case SL_HAMMING_AVX512: return hw_paths() & 2;
    }
    return false;
}

enum sl_hamming_path sl_hamming_active_path(void) {
    if (g_forced != SL_HAMMING_AUTO) return (enum sl_hamming_path)g_forced;
    if (!sl_cpu_use_avx2()) return SL_HAMMING_SCALAR; /* also honours sl_cpu_force_scalar */
    return (hw_paths() & 2) ? SL_HAMMING_AVX512 : SL_HAMMING_AVX2;
}

int sl_hamming_force_path(enum sl_hamming_path p) {
    if (!sl_hamming_path_available(p))
        return sl_fail(SL_EUNSUPPORTED, "hamming scan: the %s path cannot run on this CPU", sl_hamming_path_name(p));
    int prev = g_forced;
    g_forced = p;
    return prev;
}

const char *sl_hamming_path_name(enum sl_hamming_path p) {
    switch (p) {
    case SL_HAMMING_AUTO: return "auto";
    case SL_HAMMING_SCALAR: return "scalar";
    case SL_HAMMING_AVX2: return "avx2";
    case SL_HAMMING_AVX512: return "avx512";
    }
    return "unknown";
}

void sl_hamming_scan(const uint64_t *q, int32_t G, const uint64_t *k, int64_t n, int32_t W,
                     uint16_t *scores) {
    SL_ASSERT(G >= 1 && W >= 1 && (int64_t)G * W * 64 <= SL_HAMMING_MAX_SCORE && n >= 0);
    uint64_t planes[(4 + 1) * PLANES_MAX_W];
    uint8_t shifts[4 + 1];
    struct terms t = {q, NULL, G, W, (uint32_t)G * (uint32_t)W * 64u};
    if (G <= PLANES_MAX_G && W <= PLANES_MAX_W && (g_planes > 0 || (g_planes < 0 && use_planes(G))))
        t = make_planes(q, G, W, planes, shifts);
    switch (sl_hamming_active_path()) {
#if defined(__x86_64__)
    case SL_HAMMING_AVX512: scan_avx512(&t, k, n, scores); return;
    case SL_HAMMING_AVX2: scan_avx2(&t, k, n, scores); return;
#endif
    default: scan_scalar(&t, k, n, scores); return;
    }
}
