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
/* out[r] = sum_i h[i] * q[r*n + i] for r < nq: one f16 row against nq f32 rows (a GQA
 * group's queries), converting the row once. */
void sl_f16_dot_multi(const uint16_t *h, const float *q, int nq, int64_t n, float *out);
/* y[r*n + i] += a[r] * h[i] for r < nq: one f16 row into nq accumulators. */
void sl_f16_axpy_multi(const float *a, const uint16_t *h, int nq, int64_t n, float *y);
/* x[i] = exp(x[i] - m); returns the sum (vectorised exp, about 1 ulp). */
float sl_exp_sub_sum(float *x, int64_t n, float m);

/* Rounds x to f16 precision in place (what f16 K/V see of a query). */
void sl_round_to_f16(float *x, int64_t n);
/* y = x rounded to f16 (round to nearest even, as the KV cache stores it). */
void sl_f32_to_f16_row(const float *x, uint16_t *y, int64_t n);

#endif
