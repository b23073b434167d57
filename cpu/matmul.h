/* y (n, m) = x (n, k) . W^T for a GGUF weight W of shape (k, m) in any supported type.
 * Few rows (decode): activations are quantized once and every thread takes a slice of W's
 * rows through the integer dot kernels (cpu/vec-dot.h) — W is read once, at memory speed.
 * Many rows (prefill): W is cut into tiles of rows (64-256, set by W's shape), each
 * dequantized into f32 by the thread that takes it and multiplied with a single-threaded
 * OpenBLAS sgemm, where arithmetic, not bytes, is the limit. Both paths see activations
 * rounded to the same 8-bit blocks, so they agree to float rounding, and neither result
 * depends on the thread count. */
#ifndef SL_CPU_MATMUL_H
#define SL_CPU_MATMUL_H

#include <stdint.h>

#include "cpu/scratch.h"
#include "cpu/threadpool.h"
#include "spotlight/gguf.h"

/* Up to this many rows of x use the quantized dot path. */
#define SL_MATMUL_DOT_MAX_ROWS 8

struct sl_matmul_scratch {
    struct sl_scratch act;   /* quantized activations */
    struct sl_scratch wf32;  /* dequantized weight tiles, one per thread */
    struct sl_scratch xf32;  /* activations rounded through the 8-bit format */
};

/* Several weights of the same input width over the same x: y[i] = x . w[i]^T, with x
 * quantized once and one parallel section (up to 4 weights). */
int sl_cpu_matmul_n(sl_threadpool *pool, struct sl_matmul_scratch *s, int nw,
                    const struct sl_gguf_tensor *const *w, const float *x, int64_t n, float *const *y);

int sl_cpu_matmul(sl_threadpool *pool, struct sl_matmul_scratch *s, const struct sl_gguf_tensor *w,
                  const float *x, int64_t n, float *y);

#endif
