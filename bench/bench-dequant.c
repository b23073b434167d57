/* Question: how fast do weights dequantize on this CPU, against memcpy of the same output?
 * (Weight upload and the dequantize-then-GEMM prefill path pay this per use.) Prints a
 * markdown table; with an argument, also writes it to that file. Never a pass/fail test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spotlight/quant.h"
#include "bench/bench-util.h"

#define N_ELEMS (4 << 20) /* 16 MiB of f32 output per run */
#define REPS 9


/* Median seconds of REPS runs after one warm-up. */
static double median_time(int type, const void *src, float *dst, const void *memcpy_src) {
    double t[REPS];
    for (int r = -1; r < REPS; r++) {
        double t0 = bench_now();
        if (type < 0)
            memcpy(dst, memcpy_src, (size_t)N_ELEMS * sizeof(float));
        else if (sl_dequant_f32(type, src, dst, N_ELEMS) != 0)
            return -1;
        if (r >= 0) t[r] = bench_now() - t0;
    }
    qsort(t, REPS, sizeof t[0], bench_cmp_double);
    return t[REPS / 2];
}

int main(int argc, char **argv) {
    const int types[] = {SL_TYPE_F16, SL_TYPE_BF16, SL_TYPE_Q8_0, SL_TYPE_Q4_0, SL_TYPE_Q4_1,
                         SL_TYPE_Q5_0, SL_TYPE_Q4_K, SL_TYPE_Q5_K, SL_TYPE_Q6_K};
    float *dst = malloc((size_t)N_ELEMS * sizeof(float));
    float *ref = malloc((size_t)N_ELEMS * sizeof(float));
    uint8_t *src = malloc((size_t)N_ELEMS * 4);
    if (!dst || !ref || !src) return 1;
    srand(1);
    for (size_t i = 0; i < (size_t)N_ELEMS * 4; i++) src[i] = (uint8_t)rand();
    for (size_t i = 0; i < N_ELEMS; i++) ref[i] = (float)i;
    /* Scale fields hold random bits; make every f16 in the buffer finite so timings are of
     * ordinary values, not NaN paths. */
    for (size_t i = 1; i < (size_t)N_ELEMS * 4; i += 2) src[i] &= 0x3b;

    double t_copy = median_time(-1, NULL, dst, ref);
    char out[4096];
    int n = snprintf(out, sizeof out,
                     "| type | input MB | output GB/s (f32) | vs memcpy |\n|---|---:|---:|---:|\n"
                     "| memcpy | %.1f | %.2f | 1.00 |\n",
                     N_ELEMS * 4 / 1e6, N_ELEMS * 4 / t_copy / 1e9);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        double t = median_time(types[i], src, dst, NULL);
        if (t < 0) continue;
        double in_mb = (double)sl_type_row_bytes(types[i], N_ELEMS) / 1e6;
        n += snprintf(out + n, sizeof out - (size_t)n, "| %s | %.1f | %.2f | %.2f |\n",
                      sl_type_name(types[i]), in_mb, N_ELEMS * 4 / t / 1e9, t_copy / t);
    }
    fputs(out, stdout);
    if (argc > 1) {
        FILE *f = fopen(argv[1], "w");
        if (!f || fputs(out, f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "bench-dequant: cannot write %s\n", argv[1]);
            return 1;
        }
    }
    free(dst);
    free(ref);
    free(src);
    return 0;
}
