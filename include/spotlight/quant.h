/* Tensor element types (the GGML/GGUF type ids) and conversion of their blocks to floats.
 *
 * Quantized types store a row as consecutive blocks of `block_elems` values in
 * `block_bytes` bytes; a row of n elements (n a multiple of block_elems) takes
 * n / block_elems * block_bytes bytes. Byte layouts of the supported blocks:
 *   Q4_0  (32 el, 18 B): f16 d, 16 B nibbles; x[i] = d*(lo/hi nibble - 8), lo nibbles are 0..15, hi 16..31
 *   Q4_1  (32 el, 20 B): f16 d, f16 m, 16 B nibbles; x = d*q + m
 *   Q5_0  (32 el, 22 B): f16 d, 4 B high bits, 16 B nibbles; x = d*(q5 - 16); bit i of the
 *                        little-endian u32 of high bits is bit 4 of element i (also in Q5_1)
 *   Q5_1  (32 el, 24 B): f16 d, f16 m, 4 B high bits, 16 B nibbles; x = d*q5 + m
 *   Q8_0  (32 el, 34 B): f16 d, 32 x int8; x = d*q
 *   Q4_K (256 el, 144 B): f16 d, f16 dmin, 12 B packed 6-bit scales/mins, 128 B nibbles
 *   Q5_K (256 el, 176 B): f16 d, f16 dmin, 12 B scales/mins, 32 B high bits, 128 B nibbles
 *   Q6_K (256 el, 210 B): 128 B low nibbles, 64 B high 2-bits, 16 x int8 scales, f16 d
 * (the K-quant bit placement is spelled out in core/quant-k.c).
 * All multi-byte fields are little-endian. */
#ifndef SPOTLIGHT_QUANT_H
#define SPOTLIGHT_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Values are the GGUF on-disk type ids; do not renumber. */
enum sl_type {
    SL_TYPE_F32 = 0,
    SL_TYPE_F16 = 1,
    SL_TYPE_Q4_0 = 2,
    SL_TYPE_Q4_1 = 3,
    SL_TYPE_Q5_0 = 6,
    SL_TYPE_Q5_1 = 7,
    SL_TYPE_Q8_0 = 8,
    SL_TYPE_Q8_1 = 9,
    SL_TYPE_Q2_K = 10,
    SL_TYPE_Q3_K = 11,
    SL_TYPE_Q4_K = 12,
    SL_TYPE_Q5_K = 13,
    SL_TYPE_Q6_K = 14,
    SL_TYPE_Q8_K = 15,
    SL_TYPE_I8 = 24,
    SL_TYPE_I16 = 25,
    SL_TYPE_I32 = 26,
    SL_TYPE_I64 = 27,
    SL_TYPE_F64 = 28,
    SL_TYPE_BF16 = 30,
    SL_TYPE_COUNT_ = 40 /* upper bound of ids, not a type */
};

/* Whether the id names a type whose storage size is known (so a tensor of it can be
 * validated and mapped), whether or not it can be dequantized. */
bool sl_type_is_known(int type);

/* Whether sl_dequant_* supports the type. */
bool sl_type_can_dequant(int type);

/* "Q4_1", "F32", ...; "?" for unknown ids. */
const char *sl_type_name(int type);

/* Elements per block (1 for plain types); 0 for unknown ids. */
int64_t sl_type_block_elems(int type);

/* Bytes per block; 0 for unknown ids. */
size_t sl_type_block_bytes(int type);

/* Bytes of a row of n elements, or a negative SL_E* code when the type is unknown
 * (SL_EBADTYPE), n is not a multiple of the block size or negative (SL_EFORMAT), or the
 * size overflows (SL_EBOUNDS). */
int64_t sl_type_row_bytes(int type, int64_t n);

/* Dequantizes n consecutive elements starting at a block boundary of src into dst.
 * n must be a multiple of the block size; src needs no alignment. Returns 0, or SL_EBADTYPE
 * (unknown id), SL_EUNSUPPORTED (known type that cannot be dequantized), SL_EFORMAT (n
 * negative or not a whole number of blocks), SL_EBOUNDS (size overflow), SL_EINVAL (NULL
 * buffer with n > 0). Results match ggml's reference dequantization bit for bit. */
int sl_dequant_f32(int type, const void *src, float *dst, int64_t n);

/* As sl_dequant_f32, but rounds to bf16 (round to nearest even) or f16. */
int sl_dequant_bf16(int type, const void *src, uint16_t *dst, int64_t n);
int sl_dequant_f16(int type, const void *src, uint16_t *dst, int64_t n);

/* Scalar conversions (IEEE half, bfloat16). */
float sl_f16_to_f32(uint16_t h);
uint16_t sl_f32_to_f16(float f);
float sl_bf16_to_f32(uint16_t h);
uint16_t sl_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
