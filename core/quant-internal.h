/* Pieces shared by the dequantization files (core/quant.c, core/quant-k.c): little-endian
 * field loads, the f16 -> f32 conversion used for block scales, and the per-type block
 * decoders that quant.c's type table points at. Not installed. */
#ifndef SL_CORE_QUANT_INTERNAL_H
#define SL_CORE_QUANT_INTERNAL_H

#include <stdint.h>
#include <string.h>

/* Decodes nblocks whole blocks of one type from src into nblocks * block_elems floats.
 * restrict matters: without it gcc -O2 (very-cheap vector cost model) refuses to vectorize,
 * because uint8_t may alias float and a runtime overlap check would be needed. */
typedef void (*sl_block_to_f32_fn)(const uint8_t *restrict src, float *restrict dst,
                                   int64_t nblocks);

void sl_q4_k_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks);
void sl_q5_k_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks);
void sl_q6_k_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks);

static inline uint32_t sl_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float sl_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Byte loads rather than casts: blocks are packed (18, 22, 210 bytes...) so their fields
 * are unaligned, and the file format is little-endian whatever the host is. */
static inline uint16_t sl_load_le16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t sl_load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Exact IEEE half -> single. All three candidates are computed and one is selected, so a loop
 * over halves has no branches and vectorizes. NaN payloads are kept bit for bit (shifted up),
 * so half -> float -> half round-trips every one of the 65536 patterns. */
static inline float sl_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t normal = (em << 13) + ((uint32_t)(127 - 15) << 23);
    uint32_t special = (em << 13) | 0x7f800000u;               /* inf, NaN */
    uint32_t subnormal = sl_f32_bits((float)(int32_t)em * 0x1p-24f); /* exact: em < 2^10 */
    /* Masks instead of ?: because gcc -O2 keeps the ternaries as branches here. */
    uint32_t is_normal = -(uint32_t)(em >= 0x0400u), is_special = -(uint32_t)(em >= 0x7c00u);
    uint32_t r = (subnormal & ~is_normal) | (normal & is_normal & ~is_special) |
                 (special & is_special);
    return sl_bits_f32(sign | r);
}

#endif
