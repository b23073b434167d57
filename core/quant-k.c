/* Dequantization of the K-quant super-blocks (256 elements): Q4_K, Q5_K, Q6_K, as laid out
 * by ggml. Called through the type table in quant.c.
 *
 * Q4_K (144 B): f16 d | f16 dmin | 12 B scales | 128 B qs
 * Q5_K (176 B): f16 d | f16 dmin | 12 B scales | 32 B qh | 128 B qs
 *   Eight sub-blocks of 32 elements, each with a 6-bit scale sc and 6-bit min mn packed into
 *   the 12 scale bytes s[0..11]:
 *     sub-block i < 4:  sc = s[i] & 63,                    mn = s[i+4] & 63
 *     sub-block i >= 4: sc = (s[i+4] & 15) | (s[i-4] >> 6) << 4,
 *                       mn = (s[i+4] >> 4) | (s[i] >> 6) << 4
 *   Byte qs[32p + l] holds element 64p + l (low nibble, sub-block 2p) and 64p + 32 + l (high
 *   nibble, sub-block 2p + 1). Q5_K adds bit 4 of element 32i + l as bit i of qh[l].
 *   x = (d * sc) * q - (dmin * mn); the products are exact in float (11 + 6 + 5 bits), so
 *   the subtraction is the only rounding, as in ggml.
 *
 * Q6_K (210 B): 128 B ql | 64 B qh | 16 x int8 scales | f16 d
 *   Two halves of 128 elements; half h uses ql[64h ..], qh[32h ..]. Within a half, element
 *   32k + l (k = 0..3, l = 0..31) takes its low 4 bits from ql[64h + l + 32 * (k & 1)],
 *   low nibble for k < 2 and high nibble for k >= 2, and its top 2 bits from
 *   (qh[32h + l] >> 2k) & 3. q is that 6-bit value minus 32; element e of the block uses
 *   scale e / 16; x = (d * scale) * q, exact (at most 11 + 7 + 5 significant bits). */
#include "core/quant-internal.h"

enum { QK_K = 256 };

/* The scale and min of each of the eight sub-blocks, as 6-bit integers. */
static void unpack_scales(const uint8_t *restrict s, uint8_t sc[8], uint8_t mn[8]) {
    for (int i = 0; i < 4; i++) {
        sc[i] = s[i] & 63;
        mn[i] = s[i + 4] & 63;
        sc[i + 4] = (uint8_t)((s[i + 8] & 15) | ((s[i] >> 6) << 4));
        mn[i + 4] = (uint8_t)((s[i + 8] >> 4) | ((s[i + 4] >> 6) << 4));
    }
}

/* Per-sub-block factors; computed once per block so the inner loops are a multiply-subtract
 * over 32 lanes with constants. */
static void k_factors(const uint8_t *restrict blk, float dl[8], float ml[8]) {
    const float d = sl_half_to_float(sl_load_le16(blk));
    const float dmin = sl_half_to_float(sl_load_le16(blk + 2));
    uint8_t sc[8], mn[8];
    unpack_scales(blk + 4, sc, mn);
    for (int i = 0; i < 8; i++) {
        dl[i] = d * (float)sc[i];
        ml[i] = dmin * (float)mn[i];
    }
}

void sl_q4_k_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++, src += 144, dst += QK_K) {
        float dl[8], ml[8];
        k_factors(src, dl, ml);
        const uint8_t *qs = src + 16;
        for (int p = 0; p < 4; p++) {
            const uint8_t *q = qs + 32 * p;
            float *y = dst + 64 * p;
            const float d0 = dl[2 * p], m0 = ml[2 * p];
            const float d1 = dl[2 * p + 1], m1 = ml[2 * p + 1];
            for (int l = 0; l < 32; l++) {
                y[l] = d0 * (float)(q[l] & 15) - m0;
                y[l + 32] = d1 * (float)(q[l] >> 4) - m1;
            }
        }
    }
}

void sl_q5_k_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++, src += 176, dst += QK_K) {
        float dl[8], ml[8];
        k_factors(src, dl, ml);
        const uint8_t *qh = src + 16;
        const uint8_t *qs = src + 48;
        for (int p = 0; p < 4; p++) {
            const uint8_t *q = qs + 32 * p;
            float *y = dst + 64 * p;
            const float d0 = dl[2 * p], m0 = ml[2 * p];
            const float d1 = dl[2 * p + 1], m1 = ml[2 * p + 1];
            /* Shifting so the wanted qh bit lands on bit 4 keeps the shift count the same in
             * every lane. */
            const int s0 = 2 * p, s1 = 2 * p + 1;
            for (int l = 0; l < 32; l++) {
                int h0 = ((qh[l] >> s0) & 1) << 4;
                int h1 = ((qh[l] >> s1) & 1) << 4;
                y[l] = d0 * (float)((q[l] & 15) | h0) - m0;
                y[l + 32] = d1 * (float)((q[l] >> 4) | h1) - m1;
            }
        }
    }
}

void sl_q6_k_to_f32(const uint8_t *restrict src, float *restrict dst, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++, src += 210, dst += QK_K) {
        const float d = sl_half_to_float(sl_load_le16(src + 208));
        float ds[16];
        for (int i = 0; i < 16; i++) ds[i] = d * (float)(int8_t)src[192 + i];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = src + 64 * h;
            const uint8_t *qh = src + 128 + 32 * h;
            float *y = dst + 128 * h;
            const float *sc = ds + 8 * h;
            /* Each group of 16 elements shares one scale, so the loop runs per group. */
            for (int g = 0; g < 2; g++) {
                for (int l = 16 * g; l < 16 * g + 16; l++) {
                    int q0 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
                    int q1 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = sc[g] * (float)q0;
                    y[l + 32] = sc[g + 2] * (float)q1;
                    y[l + 64] = sc[g + 4] * (float)q2;
                    y[l + 96] = sc[g + 6] * (float)q3;
                }
            }
        }
    }
}
