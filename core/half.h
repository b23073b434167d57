/* f32 -> f16 rounding shared by the CPU (sl_f32_to_f16, core/quant.c) and the GPU kernels
 * (gpu/gpu-ops.cu), so K/V rounded on either side are the same bits. Not installed. */
#ifndef SL_CORE_HALF_H
#define SL_CORE_HALF_H

#include <stdint.h>

#include "core/host-device.h"

/* The f16 nearest to the f32 with bits x, ties to even; NaN payloads keep their top bits (the
 * quiet bit forced when only low bits were set, so a NaN stays a NaN). */
SL_HD uint16_t sl_half_from_f32_bits(uint32_t x) {
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) {
        uint32_t m = (a >> 13) & 0x3ffu;
        return (uint16_t)(sign | 0x7c00u | (m ? m : 0x200u));
    }
    /* 65520 (0x477ff000) is halfway between 65504, whose mantissa is odd, and 65536: it and
     * everything above round to infinity. */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* result is a normal half (>= 2^-14 before or after rounding) */
        uint32_t r = a + 0xfffu + ((a >> 13) & 1u); /* round to nearest even at bit 13 */
        return (uint16_t)(sign | ((r >> 13) - ((uint32_t)(127 - 15) << 10)));
    }
    /* Subnormal half: the value in units of 2^-24 is mant * 2^(e - 126); below 2^-25 it
     * rounds to zero (2^-25 itself is a tie, and zero is even). */
    int e = (int)(a >> 23);
    if (e < 102) return sign;
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    int s = 126 - e; /* 14 .. 24 */
    uint32_t q = mant >> s, rem = mant & ((1u << s) - 1), half = 1u << (s - 1);
    q += (rem > half) | ((rem == half) & q & 1u); /* carry into the exponent is correct */
    return (uint16_t)(sign | q);
}

#endif
