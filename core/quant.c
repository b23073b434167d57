/* Tensor element types: the one table of names and block sizes, half/bfloat16 scalar
 * conversions, row sizes, and dequantization of the 32-element block types (Q4_0, Q4_1, Q5_0,
 * Q5_1, Q8_0) plus the plain float types. The K-quants live in quant-k.c. Block byte layouts
 * are documented in include/spotlight/quant.h.
 *
 * Results are bit-exact against ggml's reference dequantize_row_* and gguf-py, and not by
 * luck of evaluation order: a half scale has 11 significant bits and a quant at most 8, so
 * every product d * q (and, in the K-quants, d * sc * q) is exact in float's 24 bits, and
 * the only rounding is the final addition of the min. Reordering or fusing into an FMA cannot change a bit. */
#include <string.h>

#include "core/half.h"
#include "core/internal.h"
#include "core/quant-internal.h"
#include "spotlight/quant.h"

enum { QK = 32 }; /* elements per block of the Q4_0 .. Q8_0 family */

/* --- block decoders ------------------------------------------------------------------------ */

static void f32_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    memcpy(dst, src, (size_t)nblocks * sizeof(float));
}

/* The plain float types are decoded in groups of a fixed size so the inner loop has a
 * constant trip count, which is what gcc -O2's very-cheap cost model needs to vectorize. */
enum { PLAIN_GROUP = 16 };

static void f16_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    int64_t i = 0;
    for (; i + PLAIN_GROUP <= nblocks; i += PLAIN_GROUP) {
        const uint8_t *s = src + 2 * i;
        float *y = dst + i;
        for (int j = 0; j < PLAIN_GROUP; j++) y[j] = sl_half_to_float(sl_load_le16(s + 2 * j));
    }
    for (; i < nblocks; i++) dst[i] = sl_half_to_float(sl_load_le16(src + 2 * i));
}

static void bf16_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    int64_t i = 0;
    for (; i + PLAIN_GROUP <= nblocks; i += PLAIN_GROUP) {
        const uint8_t *s = src + 2 * i;
        float *y = dst + i;
        for (int j = 0; j < PLAIN_GROUP; j++)
            y[j] = sl_bits_f32((uint32_t)sl_load_le16(s + 2 * j) << 16);
    }
    for (; i < nblocks; i++) dst[i] = sl_bits_f32((uint32_t)sl_load_le16(src + 2 * i) << 16);
}

static void q4_0_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++, src += 18, dst += QK) {
        const float d = sl_half_to_float(sl_load_le16(src));
        const uint8_t *qs = src + 2;
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = (float)((qs[j] & 0x0f) - 8) * d;
            dst[j + QK / 2] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

static void q4_1_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++, src += 20, dst += QK) {
        const float d = sl_half_to_float(sl_load_le16(src));
        const float m = sl_half_to_float(sl_load_le16(src + 2));
        const uint8_t *qs = src + 4;
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = (float)(qs[j] & 0x0f) * d + m;
            dst[j + QK / 2] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* Q5: bit j of the 32-bit qh word is bit 4 of element j. Spreading the bits into a byte array
 * first keeps the main loop free of per-lane variable shifts, which SSE2 lacks. */
static void unpack_qh(const uint8_t *restrict p, uint8_t hi[QK]) {
    for (int j = 0; j < QK; j++) hi[j] = (uint8_t)(((p[j >> 3] >> (j & 7)) & 1) << 4);
}

static void q5_0_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++, src += 22, dst += QK) {
        const float d = sl_half_to_float(sl_load_le16(src));
        uint8_t hi[QK];
        unpack_qh(src + 2, hi);
        const uint8_t *qs = src + 6;
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = (float)(((qs[j] & 0x0f) | hi[j]) - 16) * d;
            dst[j + QK / 2] = (float)(((qs[j] >> 4) | hi[j + QK / 2]) - 16) * d;
        }
    }
}

static void q5_1_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++, src += 24, dst += QK) {
        const float d = sl_half_to_float(sl_load_le16(src));
        const float m = sl_half_to_float(sl_load_le16(src + 2));
        uint8_t hi[QK];
        unpack_qh(src + 4, hi);
        const uint8_t *qs = src + 8;
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = (float)((qs[j] & 0x0f) | hi[j]) * d + m;
            dst[j + QK / 2] = (float)((qs[j] >> 4) | hi[j + QK / 2]) * d + m;
        }
    }
}

static void q8_0_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++, src += 34, dst += QK) {
        const float d = sl_half_to_float(sl_load_le16(src));
        const uint8_t *qs = src + 2;
        for (int j = 0; j < QK; j++) dst[j] = (float)(int8_t)qs[j] * d;
    }
}

/* --- the type table ------------------------------------------------------------------------ */

struct type_info {
    const char *name;           /* NULL: id not a type */
    int64_t block_elems;
    size_t block_bytes;
    sl_block_to_f32_fn to_f32;  /* NULL: storage known, dequantization not supported */
};

static const struct type_info k_types[SL_TYPE_COUNT_] = {
    [SL_TYPE_F32] = {"F32", 1, 4, f32_to_f32},
    [SL_TYPE_F16] = {"F16", 1, 2, f16_to_f32},
    [SL_TYPE_Q4_0] = {"Q4_0", 32, 18, q4_0_to_f32},
    [SL_TYPE_Q4_1] = {"Q4_1", 32, 20, q4_1_to_f32},
    [SL_TYPE_Q5_0] = {"Q5_0", 32, 22, q5_0_to_f32},
    [SL_TYPE_Q5_1] = {"Q5_1", 32, 24, q5_1_to_f32},
    [SL_TYPE_Q8_0] = {"Q8_0", 32, 34, q8_0_to_f32},
    [SL_TYPE_Q8_1] = {"Q8_1", 32, 36, NULL},
    [SL_TYPE_Q2_K] = {"Q2_K", 256, 84, NULL},
    [SL_TYPE_Q3_K] = {"Q3_K", 256, 110, NULL},
    [SL_TYPE_Q4_K] = {"Q4_K", 256, 144, sl_q4_k_to_f32},
    [SL_TYPE_Q5_K] = {"Q5_K", 256, 176, sl_q5_k_to_f32},
    [SL_TYPE_Q6_K] = {"Q6_K", 256, 210, sl_q6_k_to_f32},
    [SL_TYPE_Q8_K] = {"Q8_K", 256, 292, NULL},
    [SL_TYPE_I8] = {"I8", 1, 1, NULL},
    [SL_TYPE_I16] = {"I16", 1, 2, NULL},
    [SL_TYPE_I32] = {"I32", 1, 4, NULL},
    [SL_TYPE_I64] = {"I64", 1, 8, NULL},
    [SL_TYPE_F64] = {"F64", 1, 8, NULL},
    [SL_TYPE_BF16] = {"BF16", 1, 2, bf16_to_f32},
};

/* NULL for ids outside the table or in its gaps (retired ggml types 4, 5, ...). */
static const struct type_info *type_info(int type) {
    if (type < 0 || type >= SL_TYPE_COUNT_ || !k_types[type].name) return NULL;
    return &k_types[type];
}

bool sl_type_is_known(int type) { return type_info(type) != NULL; }

bool sl_type_can_dequant(int type) {
    const struct type_info *t = type_info(type);
    return t && t->to_f32;
}

const char *sl_type_name(int type) {
    const struct type_info *t = type_info(type);
    return t ? t->name : "?";
}

int64_t sl_type_block_elems(int type) {
    const struct type_info *t = type_info(type);
    return t ? t->block_elems : 0;
}

size_t sl_type_block_bytes(int type) {
    const struct type_info *t = type_info(type);
    return t ? t->block_bytes : 0;
}

int64_t sl_type_row_bytes(int type, int64_t n) {
    const struct type_info *t = type_info(type);
    if (!t) return sl_fail(SL_EBADTYPE, "unknown tensor type id %d", type);
    if (n < 0) return sl_fail(SL_EFORMAT, "negative element count %lld", (long long)n);
    if (n % t->block_elems != 0)
        return sl_fail(SL_EFORMAT, "%lld elements is not a multiple of the %s block size %lld",
                       (long long)n, t->name, (long long)t->block_elems);
    uint64_t bytes;
    if (sl_mul_overflow_u64((uint64_t)(n / t->block_elems), t->block_bytes, &bytes) ||
        bytes > (uint64_t)INT64_MAX)
        return sl_fail(SL_EBOUNDS, "a row of %lld %s elements overflows 64-bit sizes",
                       (long long)n, t->name);
    return (int64_t)bytes;
}

/* --- scalar conversions -------------------------------------------------------------------- */

float sl_f16_to_f32(uint16_t h) { return sl_half_to_float(h); }

uint16_t sl_f32_to_f16(float f) { return sl_half_from_f32_bits(sl_f32_bits(f)); }

float sl_bf16_to_f32(uint16_t h) { return sl_bits_f32((uint32_t)h << 16); }

/* Truncating a NaN could clear every payload bit left and make infinity; keep the top bits
 * and force the quiet bit instead (ggml does the same). Masks rather than a branch so the
 * rounding loop below vectorizes. */
static inline uint16_t bf16_round(float f) {
    uint32_t x = sl_f32_bits(f);
    uint32_t is_nan = -(uint32_t)((x & 0x7fffffffu) > 0x7f800000u);
    uint32_t nearest_even = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    return (uint16_t)((((x >> 16) | 0x40u) & is_nan) | (nearest_even & ~is_nan));
}

uint16_t sl_f32_to_bf16(float f) { return bf16_round(f); }

/* --- dequantization ------------------------------------------------------------------------ */

/* Validates a dequant request: the type's entry, or NULL with *err set. */
static const struct type_info *check_dequant(int type, const void *src, const void *dst,
                                             int64_t n, int *err) {
    int64_t bytes = sl_type_row_bytes(type, n);
    const struct type_info *t = type_info(type);
    if (bytes < 0) {
        *err = (int)bytes;
    } else if (!t->to_f32) {
        *err = sl_fail(SL_EUNSUPPORTED, "dequantizing %s is not supported", t->name);
    } else if (n > 0 && (!src || !dst)) {
        *err = sl_fail(SL_EINVAL, "NULL buffer for %s dequant", t->name);
    } else {
        return t;
    }
    return NULL;
}

int sl_dequant_f32(int type, const void *src, float *dst, int64_t n) {
    int err;
    const struct type_info *t = check_dequant(type, src, dst, n, &err);
    if (!t) return err;
    if (n > 0) t->to_f32(src, dst, n / t->block_elems);
    return 0;
}

/* The narrow outputs go through a stack buffer one chunk at a time; every block size (1, 32,
 * 256) divides CHUNK, so chunks always hold whole blocks. */
enum { CHUNK = 256 };

static void round_bf16(const float *restrict x, uint16_t *restrict y, int64_t n) {
    int64_t i = 0;
    for (; i + PLAIN_GROUP <= n; i += PLAIN_GROUP)
        for (int j = 0; j < PLAIN_GROUP; j++) y[i + j] = bf16_round(x[i + j]);
    for (; i < n; i++) y[i] = bf16_round(x[i]);
}

static void round_f16(const float *restrict x, uint16_t *restrict y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = sl_f32_to_f16(x[i]);
}

static int dequant_narrow(int type, const void *src, uint16_t *dst, int64_t n,
                          void (*narrow)(const float *restrict, uint16_t *restrict, int64_t)) {
    int err;
    const struct type_info *t = check_dequant(type, src, dst, n, &err);
    if (!t) return err;
    const uint8_t *s = src;
    const int64_t blocks_per_chunk = CHUNK / t->block_elems;
    float buf[CHUNK];
    for (int64_t done = 0; done < n;) {
        int64_t m = n - done < CHUNK ? n - done : CHUNK;
        int64_t nb = m / t->block_elems;
        t->to_f32(s, buf, nb);
        narrow(buf, dst + done, m);
        s += (size_t)blocks_per_chunk * t->block_bytes;
        done += m;
    }
    return 0;
}

int sl_dequant_bf16(int type, const void *src, uint16_t *dst, int64_t n) {
    return dequant_narrow(type, src, dst, n, round_bf16);
}

int sl_dequant_f16(int type, const void *src, uint16_t *dst, int64_t n) {
    return dequant_narrow(type, src, dst, n, round_f16);
}
