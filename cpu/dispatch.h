/* Run-time choice between the AVX2 (+FMA, F16C) kernels and the portable scalar ones, made
 * once from cpuid, so every CPU kernel file dispatches the same way. */
#ifndef SL_CPU_DISPATCH_H
#define SL_CPU_DISPATCH_H

#include <stdbool.h>

/* Whether the AVX2 kernels may run: the CPU and OS support them and they are not forced off. */
bool sl_cpu_use_avx2(void);

/* Forces the scalar kernels on or off (tests compare both paths); returns the previous
 * setting. Not for use while other threads run kernels. */
int sl_cpu_force_scalar(int on);

#endif
