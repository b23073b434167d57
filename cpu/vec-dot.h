/* Dot products of one weight row (any supported tensor type) with an activation row, the
 * inner loop of every matrix-vector product in decode.
 *
 * As llama.cpp does, 32-element quantized weights are multiplied against activations that are
 * themselves quantized to 8 bits per 32-element block, so the inner loop is integer
 * multiply-adds (AVX2 vpmaddubsw): Q4_0/Q5_0/Q8_0 pair with Q8_0 activations, Q4_1/Q5_1
 * with Q8_1 (which carries the block sum for the min term). Other types (F32, F16, BF16,
 * K-quants) take f32 activations. Activation block layouts:
 *   Q8_0 (34 B): f16 d, int8 q[32];          x ~ d*q
 *   Q8_1 (36 B): f16 d, f16 s = d*sum(q), int8 q[32]
 * Kernels are picked once at run time from the CPU's features (AVX2 or scalar). */
#ifndef SL_CPU_VEC_DOT_H
#define SL_CPU_VEC_DOT_H

#include <stddef.h>
#include <stdint.h>

enum sl_act_format {
    SL_ACT_F32 = 0,
    SL_ACT_Q8_0 = 1,
    SL_ACT_Q8_1 = 2,
};

typedef float (*sl_vec_dot_fn)(const void *w, const void *x, int64_t n);

struct sl_vec_dot {
    enum sl_act_format act;
    sl_vec_dot_fn dot;
};

/* The activation format and kernel for a weight type; dot == NULL if unsupported. */
struct sl_vec_dot sl_vec_dot_for(int weight_type);

/* Bytes of an activation row of n elements (n a multiple of 32 for quantized formats). */
size_t sl_act_row_bytes(enum sl_act_format f, int64_t n);

/* Converts n floats to the activation format (a copy for SL_ACT_F32). */
void sl_act_quantize(enum sl_act_format f, const float *x, void *out, int64_t n);

/* Expands a quantized activation row back to floats (d * q per element). */
void sl_act_dequantize(enum sl_act_format f, const void *in, float *x, int64_t n);

#endif
