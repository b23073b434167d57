/* Question: what does checksumming KV blocks cost, against just copying them? Measures
 * sl_crc32c (SSE4.2, three streams), a single-stream SSE4.2 loop (the simple alternative the
 * three streams must beat), the slicing-by-8 table path and memcpy, on a 64 MiB buffer.
 * Prints a markdown table in GB/s (1e9 bytes/s); with an argument, also writes it to that
 * file. Never a pass/fail test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/crc32c.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#include "bench/bench-util.h"
#endif

#define BYTES ((size_t)64 << 20)
#define REPS 9


#if defined(__x86_64__)
/* One dependent chain: bound by the instruction's 3-cycle latency. */
__attribute__((target("sse4.2"))) static uint32_t crc_one_stream(uint32_t crc, const void *data,
                                                                 size_t n) {
    const uint8_t *p = data;
    uint64_t r = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        r = _mm_crc32_u64(r, v);
    }
    uint32_t r32 = (uint32_t)r;
    while (n--) r32 = _mm_crc32_u8(r32, *p++);
    return ~r32;
}
#endif

enum method { M_HW, M_ONE, M_SW, M_MEMCPY };

static volatile uint32_t sink;

/* Median seconds of REPS runs after one warm-up. */
static double median_time(enum method m, const uint8_t *src, uint8_t *dst) {
    double t[REPS];
    for (int r = -1; r < REPS; r++) {
        double t0 = bench_now();
        switch (m) {
        case M_HW: sink = sl_crc32c(0, src, BYTES); break;
#if defined(__x86_64__)
        case M_ONE: sink = crc_one_stream(0, src, BYTES); break;
#else
        case M_ONE: break;
#endif
        case M_SW: sink = sl_crc32c_sw(0, src, BYTES); break;
        case M_MEMCPY: memcpy(dst, src, BYTES); break;
        }
        if (r >= 0) t[r] = bench_now() - t0;
    }
    qsort(t, REPS, sizeof t[0], bench_cmp_double);
    return t[REPS / 2];
}

int main(int argc, char **argv) {
    uint8_t *src = malloc(BYTES), *dst = malloc(BYTES);
    if (!src || !dst) {
        fprintf(stderr, "cannot allocate 2 x %zu bytes\n", BYTES);
        return 1;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < BYTES; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        src[i] = (uint8_t)x;
    }
    memset(dst, 0, BYTES);

    bool hw = sl_crc32c_hw();
    bool have_one = false;
#if defined(__x86_64__)
    have_one = __builtin_cpu_supports("sse4.2");
    if (have_one && crc_one_stream(0, src, BYTES) != sl_crc32c_sw(0, src, BYTES)) {
        fprintf(stderr, "single-stream CRC disagrees with the table path\n");
        return 1;
    }
#endif
    if (sl_crc32c(0, src, BYTES) != sl_crc32c_sw(0, src, BYTES)) {
        fprintf(stderr, "sl_crc32c disagrees with the table path\n");
        return 1;
    }

    struct {
        const char *name;
        enum method m;
        bool run;
    } rows[] = {
        {hw ? "sl_crc32c (SSE4.2, 3 streams)" : "sl_crc32c (table: no SSE4.2)", M_HW, true},
        {"SSE4.2, 1 stream", M_ONE, have_one},
        {"sl_crc32c_sw (slicing-by-8)", M_SW, true},
        {"memcpy (same bytes)", M_MEMCPY, true},
    };
    char out[2048];
    int len = snprintf(out, sizeof out,
                       "| method (%zu MiB, median of %d) | GB/s |\n|---|---|\n", BYTES >> 20,
                       REPS);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (!rows[i].run) continue;
        double s = median_time(rows[i].m, src, dst);
        len += snprintf(out + len, sizeof out - (size_t)len, "| %s | %.2f |\n", rows[i].name,
                        (double)BYTES / s / 1e9);
    }
    fputs(out, stdout);
    if (argc > 1) {
        FILE *f = fopen(argv[1], "w");
        if (!f || fputs(out, f) < 0) {
            fprintf(stderr, "cannot write %s\n", argv[1]);
            return 1;
        }
        fclose(f);
    }
    free(src);
    free(dst);
    return 0;
}
