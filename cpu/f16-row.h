/* f16 rows on the CPU: conversion to f32 and dot/axpy against f32, with F16C + FMA when the
 * CPU has them (chosen at run time) and exact scalar code otherwise. */
#ifndef SL_CPU_F16_ROW_H
#define SL_CPU_F16_ROW_H

#include <stdint.h>

void sl_f16_row_to_f32(const uint16_t *x, float *y, int64_t n);
/* sum_i h[i] * f[i] */
float sl_f16_dot_f32(const uint16_t *h, const float *f, int64_t n);
/* y[i] += a * h[i] */
void sl_f16_axpy(float a, const uint16_t *h, float *y, int64_t n);
/* Rounds x to f16 precision in place (what f16 K/V see of a query). */
void sl_round_to_f16(float *x, int64_t n);

#endif
