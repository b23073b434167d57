/* Tests for the tensor type table and dequantization (core/quant.c, core/quant-k.c).
 *
 * Three kinds of evidence:
 *  - reference fixtures: tests/fixtures/quant-<TYPE>.bin, made by
 *    tools/ref/make-quant-fixtures.py with llama.cpp's gguf-py, an independent implementation.
 *    Layout (little-endian): "SLQF", u32 type id, u64 n_elems, u64 n_raw_bytes, the raw blocks,
 *    then n_elems float32 expected values. Our output must match them bit for bit (any NaN
 *    matches any NaN).
 *  - hand-built blocks with simple scales, where each value is written down from the format
 *    description and a few are spelled out as literals;
 *  - exhaustive edge cases of the half and bfloat16 conversions.
 * SL_FIXTURE_DIR (the path of tests/fixtures) comes from the build. */
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/error.h"
#include "spotlight/quant.h"

#ifndef SL_FIXTURE_DIR
#error "SL_FIXTURE_DIR must name the tests/fixtures directory"
#endif

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static bool same_float(float a, float b) {
    return (isnan(a) && isnan(b)) || fbits(a) == fbits(b);
}

static void put_le16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Compares n floats bit for bit, naming the first difference. */
static void assert_floats(const float *got, const float *want, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++)
        cr_assert(same_float(got[i], want[i]), "%s[%lld]: got %a (0x%08x), want %a (0x%08x)", what,
                  (long long)i, got[i], fbits(got[i]), want[i], fbits(want[i]));
}

/* --- (a), (d): gguf-py reference fixtures ------------------------------------------------- */

struct fixture {
    int type;
    int64_t n;
    size_t raw_bytes;
    uint8_t *raw;
    float *expected;
};

static void load_fixture(const char *tname, struct fixture *fx) {
    char path[512];
    snprintf(path, sizeof path, "%s/quant-%s.bin", SL_FIXTURE_DIR, tname);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s (run tools/ref/make-quant-fixtures.py)", path);
    uint8_t hdr[24];
    cr_assert_eq(fread(hdr, 1, sizeof hdr, f), sizeof hdr, "%s: short header", path);
    cr_assert(memcmp(hdr, "SLQF", 4) == 0, "%s: bad magic", path);
    fx->type = (int)get_le(hdr + 4, 4);
    uint64_t n = get_le(hdr + 8, 8), raw_bytes = get_le(hdr + 16, 8);
    cr_assert(n > 0 && n <= (1u << 20) && raw_bytes <= (1u << 24), "%s: bad sizes", path);
    fx->n = (int64_t)n;
    fx->raw_bytes = (size_t)raw_bytes;
    fx->raw = malloc(fx->raw_bytes);
    uint8_t *exp_bytes = malloc(n * 4);
    fx->expected = malloc(n * sizeof(float));
    cr_assert(fx->raw && exp_bytes && fx->expected);
    cr_assert_eq(fread(fx->raw, 1, fx->raw_bytes, f), fx->raw_bytes, "%s: truncated", path);
    cr_assert_eq(fread(exp_bytes, 1, n * 4, f), n * 4, "%s: truncated", path);
    cr_assert_eq(fgetc(f), EOF, "%s: trailing bytes", path);
    fclose(f);
    for (uint64_t i = 0; i < n; i++) fx->expected[i] = bitsf((uint32_t)get_le(exp_bytes + 4 * i, 4));
    free(exp_bytes);
}

static void check_fixture(const char *tname, int type) {
    struct fixture fx;
    load_fixture(tname, &fx);
    cr_assert_eq(fx.type, type, "%s fixture has type id %d", tname, fx.type);
    cr_assert_str_eq(sl_type_name(type), tname);
    cr_assert_eq(sl_type_row_bytes(type, fx.n), (int64_t)fx.raw_bytes);
    const int64_t n = fx.n, be = sl_type_block_elems(type);

    /* +1 for a sentinel that must survive, and an odd source address: blocks in a file are
     * packed, so nothing may assume alignment (UBSan would flag it). */
    float *got = malloc((size_t)(n + 1) * sizeof(float));
    uint8_t *odd = malloc(fx.raw_bytes + 1);
    cr_assert(got && odd);
    memcpy(odd + 1, fx.raw, fx.raw_bytes);
    got[n] = 12345.0f;
    cr_assert_eq(sl_dequant_f32(type, odd + 1, got, n), 0, "%s", sl_error_detail());
    assert_floats(got, fx.expected, n, tname);
    cr_assert_eq(got[n], 12345.0f);

    /* One block short: exercises the tail loops and a partial last chunk in the narrow paths. */
    const int64_t n2 = n - be;
    got[n2] = 12345.0f;
    cr_assert_eq(sl_dequant_f32(type, fx.raw, got, n2), 0);
    assert_floats(got, fx.expected, n2, tname);
    cr_assert_eq(got[n2], 12345.0f);

    /* (d) the narrow outputs are the f32 results rounded once. */
    uint16_t *h = malloc((size_t)(n + 1) * sizeof(uint16_t));
    cr_assert(h);
    for (int pass = 0; pass < 2; pass++) {
        const int64_t m = pass ? n2 : n;
        h[m] = 0xabcd;
        cr_assert_eq(sl_dequant_bf16(type, odd + 1, h, m), 0);
        for (int64_t i = 0; i < m; i++)
            cr_assert_eq(h[i], sl_f32_to_bf16(fx.expected[i]), "%s bf16[%lld]", tname, (long long)i);
        cr_assert_eq(h[m], 0xabcd);
        cr_assert_eq(sl_dequant_f16(type, odd + 1, h, m), 0);
        for (int64_t i = 0; i < m; i++)
            cr_assert_eq(h[i], sl_f32_to_f16(fx.expected[i]), "%s f16[%lld]", tname, (long long)i);
        cr_assert_eq(h[m], 0xabcd);
    }
    free(h);
    free(odd);
    free(got);
    free(fx.raw);
    free(fx.expected);
}

#define FIXTURE_TEST(T) \
    Test(fixture, T) { check_fixture(#T, SL_TYPE_##T); }
FIXTURE_TEST(F16)
FIXTURE_TEST(BF16)
FIXTURE_TEST(Q4_0)
FIXTURE_TEST(Q4_1)
FIXTURE_TEST(Q5_0)
FIXTURE_TEST(Q5_1)
FIXTURE_TEST(Q8_0)
FIXTURE_TEST(Q4_K)
FIXTURE_TEST(Q5_K)
FIXTURE_TEST(Q6_K)

/* --- (b): hand-built blocks ----------------------------------------------------------------
 * Scales are powers of two and quants small integers, so every expected value below is exact
 * in float whatever the evaluation order. */

static float dq1(int type, const void *blk, int64_t n, int64_t i) {
    float out[256];
    cr_assert(n <= 256);
    cr_assert_eq(sl_dequant_f32(type, blk, out, n), 0, "%s", sl_error_detail());
    return out[i];
}

static void dq(int type, const void *blk, float *out, int64_t n) {
    cr_assert_eq(sl_dequant_f32(type, blk, out, n), 0, "%s", sl_error_detail());
}

Test(hand, f32) {
    const float v[4] = {1.5f, -0.0f, INFINITY, 0x1p-149f};
    float out[4];
    dq(SL_TYPE_F32, v, out, 4);
    assert_floats(out, v, 4, "F32");
}

Test(hand, f16) {
    const uint16_t h[] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x3555, 0x7c00, 0x8000, 0x0400};
    const float want[] = {1.0f, -2.0f, 0x1p-24f, 65504.0f, 0.333251953125f, INFINITY, -0.0f,
                          0x1p-14f};
    uint8_t raw[16];
    for (int i = 0; i < 8; i++) put_le16(raw + 2 * i, h[i]);
    float out[8];
    dq(SL_TYPE_F16, raw, out, 8);
    assert_floats(out, want, 8, "F16");
}

Test(hand, bf16) {
    const uint16_t h[] = {0x3f80, 0xc0a0, 0x4049, 0x0001, 0xff80};
    const float want[] = {1.0f, -5.0f, 3.140625f, 0x1p-133f, -INFINITY};
    uint8_t raw[10];
    for (int i = 0; i < 5; i++) put_le16(raw + 2 * i, h[i]);
    float out[5];
    dq(SL_TYPE_BF16, raw, out, 5);
    assert_floats(out, want, 5, "BF16");
}

/* Q4_0 / Q4_1: byte j holds element j (low nibble) and element j + 16 (high nibble); the
 * pattern puts j in the low nibble and 15 - j in the high one. */
Test(hand, q4_0) {
    uint8_t b[18];
    put_le16(b, 0x3400); /* d = 0.25 */
    for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)(j | (15 - j) << 4);
    float out[32];
    dq(SL_TYPE_Q4_0, b, out, 32);
    for (int j = 0; j < 16; j++) {
        cr_assert_eq(out[j], 0.25f * (float)(j - 8));
        cr_assert_eq(out[j + 16], 0.25f * (float)(7 - j));
    }
    cr_assert_eq(out[0], -2.0f);
    cr_assert_eq(out[15], 1.75f);
    cr_assert_eq(out[16], 1.75f);
    cr_assert_eq(out[31], -2.0f);
}

Test(hand, q4_1) {
    uint8_t b[20];
    put_le16(b, 0x3800);     /* d = 0.5 */
    put_le16(b + 2, 0xbc00); /* m = -1 */
    for (int j = 0; j < 16; j++) b[4 + j] = (uint8_t)(j | (15 - j) << 4);
    float out[32];
    dq(SL_TYPE_Q4_1, b, out, 32);
    for (int j = 0; j < 16; j++) {
        cr_assert_eq(out[j], 0.5f * (float)j - 1.0f);
        cr_assert_eq(out[j + 16], 0.5f * (float)(15 - j) - 1.0f);
    }
    cr_assert_eq(out[0], -1.0f);
    cr_assert_eq(out[15], 6.5f);
    cr_assert_eq(out[31], -1.0f);
}

/* Q5: 5-bit q[i] = 7i mod 32; low 4 bits as in Q4, bit 4 is bit i of the little-endian qh. */
static int q5_pattern(int i) { return (7 * i) % 32; }

static void pack_q5(uint8_t *qh, uint8_t *qs) {
    memset(qh, 0, 4);
    memset(qs, 0, 16);
    for (int i = 0; i < 32; i++) {
        int q = q5_pattern(i);
        qs[i % 16] |= (uint8_t)((q & 15) << (i < 16 ? 0 : 4));
        if (q & 16) qh[i / 8] |= (uint8_t)(1u << (i % 8));
    }
}

Test(hand, q5_0) {
    uint8_t b[22];
    put_le16(b, 0x3800); /* d = 0.5 */
    pack_q5(b + 2, b + 6);
    float out[32];
    dq(SL_TYPE_Q5_0, b, out, 32);
    for (int i = 0; i < 32; i++) cr_assert_eq(out[i], 0.5f * (float)(q5_pattern(i) - 16), "%d", i);
    cr_assert_eq(out[0], -8.0f);
    cr_assert_eq(out[5], -6.5f);  /* q = 3 */
    cr_assert_eq(out[31], 4.5f);  /* q = 25 */
}

Test(hand, q5_1) {
    uint8_t b[24];
    put_le16(b, 0x3400);     /* d = 0.25 */
    put_le16(b + 2, 0x4000); /* m = 2 */
    pack_q5(b + 4, b + 8);
    float out[32];
    dq(SL_TYPE_Q5_1, b, out, 32);
    for (int i = 0; i < 32; i++) cr_assert_eq(out[i], 0.25f * (float)q5_pattern(i) + 2.0f, "%d", i);
    cr_assert_eq(out[31], 8.25f);
}

Test(hand, q8_0) {
    uint8_t b[34];
    put_le16(b, 0x3000); /* d = 0.125 */
    for (int i = 0; i < 32; i++) b[2 + i] = (uint8_t)(int8_t)(8 * i - 128);
    float out[32];
    dq(SL_TYPE_Q8_0, b, out, 32);
    for (int i = 0; i < 32; i++) cr_assert_eq(out[i], 0.125f * (float)(8 * i - 128));
    cr_assert_eq(out[0], -16.0f);
    cr_assert_eq(out[31], 15.0f);
    cr_assert_eq(dq1(SL_TYPE_Q8_0, b, 32, 16), 0.0f);
}

/* K-quants: eight 6-bit scales and mins (values above 15 exercise the split high bits). */
static const int k_sc[8] = {1, 2, 17, 63, 33, 5, 48, 10};
static const int k_mn[8] = {0, 3, 60, 7, 16, 31, 1, 62};

/* The 12 scale bytes: sub-blocks 0-3 keep scale and min whole in the low 6 bits of bytes
 * 0-3 and 4-7; sub-blocks 4-7 keep their low 4 bits in bytes 8-11 (scale low nibble, min high
 * nibble) and their top 2 bits in bits 6-7 of bytes 0-3 (scale) and 4-7 (min). */
static void pack_k_scales(uint8_t s[12]) {
    for (int i = 0; i < 4; i++) {
        s[i] = (uint8_t)(k_sc[i] | (k_sc[i + 4] >> 4) << 6);
        s[i + 4] = (uint8_t)(k_mn[i] | (k_mn[i + 4] >> 4) << 6);
        s[i + 8] = (uint8_t)((k_sc[i + 4] & 15) | (k_mn[i + 4] & 15) << 4);
    }
}

/* Element e sits in sub-block e / 32; within its 64-element pair it is nibble (e / 32) & 1 of
 * byte 32 * (e / 64) + e % 32. */
Test(hand, q4_k) {
    uint8_t b[144] = {0};
    put_le16(b, 0x3800);     /* d = 0.5 */
    put_le16(b + 2, 0x3400); /* dmin = 0.25 */
    pack_k_scales(b + 4);
    for (int e = 0; e < 256; e++) {
        int q = (5 * e + e / 32) % 16;
        b[16 + 32 * (e / 64) + e % 32] |= (uint8_t)(q << (4 * ((e / 32) & 1)));
    }
    float out[256];
    dq(SL_TYPE_Q4_K, b, out, 256);
    for (int e = 0; e < 256; e++) {
        int q = (5 * e + e / 32) % 16;
        cr_assert_eq(out[e], 0.5f * k_sc[e / 32] * q - 0.25f * k_mn[e / 32], "%d", e);
    }
    cr_assert_eq(out[0], 0.0f);
    cr_assert_eq(out[40], 8.25f);    /* sub-block 1, q = 9: 0.5*2*9 - 0.25*3 */
    cr_assert_eq(out[100], 218.75f); /* sub-block 3, q = 7: 0.5*63*7 - 0.25*7 */
    cr_assert_eq(out[255], -5.5f);   /* sub-block 7, q = 2: 0.5*10*2 - 0.25*62 */
}

/* As Q4_K, plus bit 4 of element e stored as bit e / 32 of qh[e % 32]. */
Test(hand, q5_k) {
    uint8_t b[176] = {0};
    put_le16(b, 0x3800);
    put_le16(b + 2, 0x3400);
    pack_k_scales(b + 4);
    for (int e = 0; e < 256; e++) {
        int q = (7 * e + e / 32) % 32;
        b[48 + 32 * (e / 64) + e % 32] |= (uint8_t)((q & 15) << (4 * ((e / 32) & 1)));
        if (q & 16) b[16 + e % 32] |= (uint8_t)(1u << (e / 32));
    }
    float out[256];
    dq(SL_TYPE_Q5_K, b, out, 256);
    for (int e = 0; e < 256; e++) {
        int q = (7 * e + e / 32) % 32;
        cr_assert_eq(out[e], 0.5f * k_sc[e / 32] * q - 0.25f * k_mn[e / 32], "%d", e);
    }
    cr_assert_eq(out[0], 0.0f);
    cr_assert_eq(out[40], 24.25f);   /* q = 25 */
    cr_assert_eq(out[100], 974.75f); /* q = 31 */
    cr_assert_eq(out[255], -15.5f);  /* q = 0 */
}

/* Q6_K element e: half h = e / 128, r = e % 128, quarter k = r / 32, l = r % 32. Low 4 bits
 * in ql[64h + l + 32 (k & 1)] (low nibble for k < 2, high for k >= 2), top 2 bits in
 * qh[32h + l] at bit 2k; q - 32 times d times int8 scale e / 16. */
Test(hand, q6_k) {
    uint8_t b[210] = {0};
    int8_t sc[16];
    for (int i = 0; i < 16; i++) sc[i] = (int8_t)((i % 2 ? -1 : 1) * (8 * i + 1));
    sc[15] = -128;
    for (int e = 0; e < 256; e++) {
        int q = (11 * e + e / 16) % 64;
        int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
        b[64 * h + l + 32 * (k & 1)] |= (uint8_t)((q & 15) << (k < 2 ? 0 : 4));
        b[128 + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
    }
    memcpy(b + 192, sc, 16);
    put_le16(b + 208, 0x3800); /* d = 0.5 */
    float out[256];
    dq(SL_TYPE_Q6_K, b, out, 256);
    for (int e = 0; e < 256; e++) {
        int q = (11 * e + e / 16) % 64;
        cr_assert_eq(out[e], 0.5f * sc[e / 16] * (q - 32), "%d", e);
    }
    cr_assert_eq(out[0], -16.0f);  /* scale 1, q = 0 */
    cr_assert_eq(out[50], -112.5f); /* scale -25, q = 41 */
    cr_assert_eq(out[130], -65.0f); /* scale 65, q = 30 */
    cr_assert_eq(out[255], 1792.0f); /* scale -128, q = 4 */
}

/* --- (c): scalar conversions -------------------------------------------------------------- */

Test(convert, f16_literals) {
    cr_assert_eq(fbits(sl_f16_to_f32(0x0000)), 0x00000000u);
    cr_assert_eq(fbits(sl_f16_to_f32(0x8000)), 0x80000000u);
    cr_assert_eq(sl_f16_to_f32(0x0001), 0x1p-24f);
    cr_assert_eq(sl_f16_to_f32(0x8001), -0x1p-24f);
    cr_assert_eq(sl_f16_to_f32(0x03ff), 1023 * 0x1p-24f);
    cr_assert_eq(sl_f16_to_f32(0x0400), 0x1p-14f);
    cr_assert_eq(sl_f16_to_f32(0x7bff), 65504.0f);
    cr_assert_eq(sl_f16_to_f32(0x7c00), INFINITY);
    cr_assert_eq(sl_f16_to_f32(0xfc00), -INFINITY);
    cr_assert(isnan(sl_f16_to_f32(0x7e00)));
    cr_assert(isnan(sl_f16_to_f32(0x7c01))); /* signalling NaN stays NaN, not inf */

    cr_assert_eq(sl_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(sl_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(sl_f32_to_f16(65519.99f), 0x7bff);
    cr_assert_eq(sl_f32_to_f16(65520.0f), 0x7c00); /* tie, 0x7bff is odd: up to inf */
    cr_assert_eq(sl_f32_to_f16(1e10f), 0x7c00);
    cr_assert_eq(sl_f32_to_f16(-INFINITY), 0xfc00);
    cr_assert_eq(sl_f32_to_f16(0x1p-25f), 0x0000);          /* tie with 0: even */
    cr_assert_eq(sl_f32_to_f16(0x1.000002p-25f), 0x0001);
    cr_assert_eq(sl_f32_to_f16(0x1.8p-24f), 0x0002);         /* 1.5 units: tie, up to even */
    cr_assert_eq(sl_f32_to_f16(0x1p-149f), 0x0000);
    cr_assert_eq(sl_f32_to_f16(-0x1p-149f), 0x8000);
    cr_assert_eq(sl_f32_to_f16(0x1.ff8p-15f), 0x03ff);       /* largest subnormal */
    cr_assert_eq(sl_f32_to_f16(0x1.ffcp-15f), 0x0400);       /* tie, rounds up into normal */
    uint16_t nan = sl_f32_to_f16(bitsf(0x7f800001u));        /* payload only in low bits */
    cr_assert((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
    cr_assert_eq(sl_f32_to_f16(bitsf(0xffc00000u)), 0xfe00);
}

/* Every half survives half -> float -> half exactly, NaN payloads included. */
Test(convert, f16_round_trip_all) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sl_f16_to_f32((uint16_t)h);
        cr_assert_eq(sl_f32_to_f16(f), h, "0x%04x -> %a", h, f);
        cr_assert_eq(isnan(f) != 0, (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0, "0x%04x", h);
    }
}

/* Rounding is exhaustively checked at every boundary: for each pair of adjacent finite halves
 * the float midpoint (exact in float: one bit more than a half) goes to the even one, and the
 * floats just either side of it go to the nearer one. */
Test(convert, f16_ties_all) {
    for (uint32_t h = 0; h <= 0x7bff; h++) {
        float lo = sl_f16_to_f32((uint16_t)h);
        float hi = h == 0x7bff ? 65536.0f : sl_f16_to_f32((uint16_t)(h + 1));
        float mid = (float)(((double)lo + (double)hi) / 2);
        uint32_t even = (h & 1) ? h + 1 : h;
        cr_assert_eq(sl_f32_to_f16(mid), even, "mid of 0x%04x", h);
        cr_assert_eq(sl_f32_to_f16(nextafterf(mid, 0.0f)), h, "below mid of 0x%04x", h);
        cr_assert_eq(sl_f32_to_f16(nextafterf(mid, INFINITY)), h + 1, "above mid of 0x%04x", h);
        cr_assert_eq(sl_f32_to_f16(-mid), even | 0x8000, "-mid of 0x%04x", h);
    }
}

#ifdef __FLT16_MANT_DIG__
/* The compiler's own _Float16 conversions (libgcc soft-fp on x86-64) are a second, independent
 * reference: all halves one way, a stride through all float bit patterns the other. */
Test(convert, f16_vs_compiler) {
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t hb = (uint16_t)h;
        _Float16 x;
        memcpy(&x, &hb, 2);
        cr_assert(same_float(sl_f16_to_f32(hb), (float)x), "0x%04x", h);
    }
    for (uint64_t u = 0; u < (1ull << 32); u += 4093) {
        float f = bitsf((uint32_t)u);
        if (isnan(f)) continue;
        _Float16 x = (_Float16)f;
        uint16_t want;
        memcpy(&want, &x, 2);
        cr_assert_eq(sl_f32_to_f16(f), want, "%a (0x%08x)", f, (uint32_t)u);
    }
}
#endif

Test(convert, bf16_literals) {
    cr_assert_eq(sl_bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(fbits(sl_bf16_to_f32(0x8000)), 0x80000000u);
    cr_assert_eq(sl_bf16_to_f32(0x0001), 0x1p-133f); /* subnormal */
    cr_assert_eq(sl_bf16_to_f32(0x7f80), INFINITY);

    cr_assert_eq(sl_f32_to_bf16(bitsf(0x3f808000u)), 0x3f80); /* tie, even below */
    cr_assert_eq(sl_f32_to_bf16(bitsf(0x3f818000u)), 0x3f82); /* tie, even above */
    cr_assert_eq(sl_f32_to_bf16(bitsf(0x3f808001u)), 0x3f81);
    cr_assert_eq(sl_f32_to_bf16(bitsf(0x3f807fffu)), 0x3f80);
    cr_assert_eq(sl_f32_to_bf16(bitsf(0x00008000u)), 0x0000); /* subnormal tie */
    cr_assert_eq(sl_f32_to_bf16(bitsf(0x00018000u)), 0x0002);
    cr_assert_eq(sl_f32_to_bf16(-0.0f), 0x8000);
    cr_assert_eq(sl_f32_to_bf16(bitsf(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to inf */
    cr_assert_eq(sl_f32_to_bf16(bitsf(0x7f7f7fffu)), 0x7f7f);
    cr_assert_eq(sl_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(sl_f32_to_bf16(-INFINITY), 0xff80);
    /* NaNs stay NaN even when the payload is only in the bits that are dropped. */
    cr_assert_eq(sl_f32_to_bf16(bitsf(0x7f800001u)), 0x7fc0);
    cr_assert_eq(sl_f32_to_bf16(bitsf(0xffc00000u)), 0xffc0);
    cr_assert_eq(sl_f32_to_bf16(bitsf(0x7fffffffu)), 0x7fff); /* no carry into the sign */
}

Test(convert, bf16_all) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sl_bf16_to_f32((uint16_t)h);
        cr_assert_eq(fbits(f), h << 16);
        bool nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0;
        /* A NaN comes back quieted; everything else exactly. */
        cr_assert_eq(sl_f32_to_bf16(f), nan ? (h | 0x40) : h, "0x%04x", h);
        if (nan || (h & 0x7fff) >= 0x7f7f) continue;
        /* Midpoint to the next bfloat16 up (away from zero) and its neighbours. */
        uint32_t mid = (h << 16) + 0x8000;
        uint32_t even = (h & 1) ? h + 1 : h;
        cr_assert_eq(sl_f32_to_bf16(bitsf(mid)), even, "mid above 0x%04x", h);
        cr_assert_eq(sl_f32_to_bf16(bitsf(mid - 1)), h);
        cr_assert_eq(sl_f32_to_bf16(bitsf(mid + 1)), h + 1);
    }
}

/* --- (e): the type table and row sizes ---------------------------------------------------- */

Test(types, table) {
    static const struct { int type; const char *name; int64_t elems; size_t bytes; bool dq; } t[] = {
        {SL_TYPE_F32, "F32", 1, 4, true},       {SL_TYPE_F16, "F16", 1, 2, true},
        {SL_TYPE_BF16, "BF16", 1, 2, true},     {SL_TYPE_Q4_0, "Q4_0", 32, 18, true},
        {SL_TYPE_Q4_1, "Q4_1", 32, 20, true},   {SL_TYPE_Q5_0, "Q5_0", 32, 22, true},
        {SL_TYPE_Q5_1, "Q5_1", 32, 24, true},   {SL_TYPE_Q8_0, "Q8_0", 32, 34, true},
        {SL_TYPE_Q8_1, "Q8_1", 32, 36, false},  {SL_TYPE_Q2_K, "Q2_K", 256, 84, false},
        {SL_TYPE_Q3_K, "Q3_K", 256, 110, false}, {SL_TYPE_Q4_K, "Q4_K", 256, 144, true},
        {SL_TYPE_Q5_K, "Q5_K", 256, 176, true}, {SL_TYPE_Q6_K, "Q6_K", 256, 210, true},
        {SL_TYPE_Q8_K, "Q8_K", 256, 292, false}, {SL_TYPE_I8, "I8", 1, 1, false},
        {SL_TYPE_I16, "I16", 1, 2, false},      {SL_TYPE_I32, "I32", 1, 4, false},
        {SL_TYPE_I64, "I64", 1, 8, false},      {SL_TYPE_F64, "F64", 1, 8, false},
    };
    int known = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        cr_assert(sl_type_is_known(t[i].type));
        cr_assert_str_eq(sl_type_name(t[i].type), t[i].name);
        cr_assert_eq(sl_type_block_elems(t[i].type), t[i].elems, "%s", t[i].name);
        cr_assert_eq(sl_type_block_bytes(t[i].type), t[i].bytes, "%s", t[i].name);
        cr_assert_eq(sl_type_can_dequant(t[i].type), t[i].dq, "%s", t[i].name);
    }
    for (int id = -5; id < SL_TYPE_COUNT_ + 5; id++) known += sl_type_is_known(id);
    cr_assert_eq(known, (int)(sizeof t / sizeof t[0]), "ids outside the list are unknown");
}

Test(types, unknown_ids) {
    const int ids[] = {-1, 4, 5, 16, 29, 39, SL_TYPE_COUNT_, 1000, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int id = ids[i];
        cr_assert(!sl_type_is_known(id) && !sl_type_can_dequant(id), "%d", id);
        cr_assert_str_eq(sl_type_name(id), "?");
        cr_assert_eq(sl_type_block_elems(id), 0);
        cr_assert_eq(sl_type_block_bytes(id), 0);
        cr_assert_eq(sl_type_row_bytes(id, 32), SL_EBADTYPE, "%d", id);
        float out[1];
        cr_assert_eq(sl_dequant_f32(id, out, out, 0), SL_EBADTYPE);
    }
}

Test(types, row_bytes) {
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_Q4_0, 0), 0);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_Q4_0, 64), 36);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_Q6_K, 4096), 16 * 210);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_F32, 7), 28);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_Q4_0, 33), SL_EFORMAT);
    cr_assert(strstr(sl_error_detail(), "Q4_0"), "detail names the type: %s", sl_error_detail());
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_Q4_K, 128), SL_EFORMAT);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_Q4_0, -32), SL_EFORMAT);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_F32, -1), SL_EFORMAT);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_F32, INT64_MIN), SL_EFORMAT);
    /* Overflow of the byte count, not of the element count. */
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_F32, INT64_MAX), SL_EBOUNDS);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_F32, INT64_MAX / 4 + 1), SL_EBOUNDS);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_F32, INT64_MAX / 4), INT64_MAX / 4 * 4);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_I8, INT64_MAX), INT64_MAX);
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_Q8_K, INT64_MAX / 256 * 256), SL_EBOUNDS);
    /* Fits in uint64 but not in the int64 result. */
    cr_assert_eq(sl_type_row_bytes(SL_TYPE_F64, (INT64_MAX / 8 + 1)), SL_EBOUNDS);
}

/* --- (f): argument and type errors of sl_dequant_* ---------------------------------------- */

Test(dequant_errors, unsupported_types) {
    const int ids[] = {SL_TYPE_Q8_1, SL_TYPE_Q2_K, SL_TYPE_Q3_K, SL_TYPE_Q8_K, SL_TYPE_I8,
                       SL_TYPE_I16, SL_TYPE_I32, SL_TYPE_I64, SL_TYPE_F64};
    uint8_t raw[292 * 2] = {0};
    float out[512];
    uint16_t h[512];
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int id = ids[i];
        int64_t n = sl_type_block_elems(id);
        cr_assert_eq(sl_dequant_f32(id, raw, out, n), SL_EUNSUPPORTED, "%s", sl_type_name(id));
        cr_assert(strstr(sl_error_detail(), sl_type_name(id)), "%s", sl_error_detail());
        cr_assert_eq(sl_dequant_bf16(id, raw, h, n), SL_EUNSUPPORTED);
        cr_assert_eq(sl_dequant_f16(id, raw, h, n), SL_EUNSUPPORTED);
    }
}

Test(dequant_errors, bad_counts_and_buffers) {
    uint8_t raw[144] = {0};
    float out[256];
    uint16_t h[256];
    cr_assert_eq(sl_dequant_f32(SL_TYPE_Q4_K, raw, out, 255), SL_EFORMAT);
    cr_assert_eq(sl_dequant_f32(SL_TYPE_Q8_0, raw, out, -32), SL_EFORMAT);
    cr_assert_eq(sl_dequant_bf16(SL_TYPE_Q4_0, raw, h, 31), SL_EFORMAT);
    cr_assert_eq(sl_dequant_f16(SL_TYPE_Q4_0, raw, h, 16), SL_EFORMAT);
    cr_assert_eq(sl_dequant_f32(SL_TYPE_Q4_K, NULL, out, 256), SL_EINVAL);
    cr_assert_eq(sl_dequant_f32(SL_TYPE_Q4_K, raw, NULL, 256), SL_EINVAL);
    cr_assert_eq(sl_dequant_f16(SL_TYPE_F16, NULL, h, 1), SL_EINVAL);
    /* Nothing to do is not an error, even without buffers. */
    cr_assert_eq(sl_dequant_f32(SL_TYPE_Q4_K, NULL, NULL, 0), 0);
    cr_assert_eq(sl_dequant_bf16(SL_TYPE_F32, NULL, NULL, 0), 0);
}
