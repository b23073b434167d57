/* The selection passes over every stored code (core/sparse-select.h) past the size where they
 * split over the backend's threads: with no backend, one thread and three, the decode scan
 * equals sl_hamming_scan over the whole range, and a chunk's scores (per position and per
 * block, a last block cut short) equal the weighted bit sums computed here bit by bit. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/sparse-select.h"
#include "cpu/hamming.h"
#include "spotlight/error.h"

enum { P = SL_SELECT_SPLIT_MIN * 2 + 13, G = 3, ROWS = 37 };

static uint64_t *random_words(int64_t n, uint64_t *rng) { /* splitmix64 */
    uint64_t *w = malloc(sizeof(uint64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = (*rng += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        w[i] = z ^ (z >> 31);
    }
    return w;
}

/* No backend, then CPU backends of 1 and 3 threads. */
static struct sl_backend *backend(int i) {
    struct sl_backend *be = NULL;
    if (i > 0) cr_assert_eq(sl_backend_cpu_create(i == 1 ? 1 : 3, &be), 0, "%s", sl_error_detail());
    return be;
}

Test(sparse_select, scan_is_the_whole_range_scan_for_any_thread_count, .timeout = 60) {
    uint64_t rng = 7;
    for (int32_t W = 1; W <= 2; W++) {
        uint64_t *k = random_words((int64_t)P * W, &rng), *q = random_words(G * W, &rng);
        uint16_t *want = malloc(sizeof(uint16_t) * P), *got = malloc(sizeof(uint16_t) * P);
        sl_hamming_scan(q, G, k, P, W, want);
        for (int i = 0; i < 3; i++) {
            struct sl_backend *be = backend(i);
            memset(got, 0xAB, sizeof(uint16_t) * P);
            sl_select_scan(be, q, G, k, P, W, got);
            cr_assert_arr_eq(got, want, sizeof(uint16_t) * P, "W %d, backend %d", W, i);
            if (be) be->free(be);
        }
        free(k), free(q), free(want), free(got);
    }
}

Test(sparse_select, chunk_scores_are_weighted_bit_sums_for_any_thread_count, .timeout = 60) {
    uint64_t rng = 11;
    const int32_t W = 2, bits = 96; /* the last 32 bits of each code weigh nothing */
    const int64_t row_words = 9 * W; /* 9 query heads per row; the group is heads 3..5 */
    uint64_t *codes = random_words((int64_t)P * W, &rng), *q = random_words(ROWS * row_words, &rng);
    float *lut = malloc(sizeof(float) * 8 * W * 256);
    sl_select_chunk_table(q + 3 * W, ROWS, row_words, G, W, bits, lut);
    /* the weights bit by bit, and every position's score as an exact integer */
    int64_t w[128] = {0};
    for (int64_t t = 0; t < ROWS; t++)
        for (int h = 3; h < 3 + G; h++)
            for (int i = 0; i < bits; i++) w[i] += (q[t * row_words + h * W + i / 64] >> (i % 64)) & 1 ? 1 : -1;
    float *want = malloc(sizeof(float) * P);
    for (int64_t j = 0; j < P; j++) {
        int64_t sum = 0;
        for (int i = 0; i < 64 * W; i++) sum += (codes[j * W + i / 64] >> (i % 64)) & 1 ? w[i] : 0;
        want[j] = (float)sum;
    }
    float *got = malloc(sizeof(float) * P);
    for (int64_t B = 1; B <= 16; B += 15) {
        const int64_t nb = (P + B - 1) / B;
        for (int i = 0; i < 3; i++) {
            struct sl_backend *be = backend(i);
            memset(got, 0, sizeof(float) * P);
            sl_select_chunk_scores(be, lut, codes, W, P, B, got, got);
            for (int64_t b = 0; b < nb; b++) {
                float best = want[b * B];
                for (int64_t j = b * B; j < (b + 1) * B && j < P; j++) best = want[j] > best ? want[j] : best;
                cr_assert_eq(got[b], best, "block %lld of %lld positions, backend %d: %g, expected %g", (long long)b,
                             (long long)B, i, got[b], best);
            }
            if (be) be->free(be);
        }
    }
    free(codes), free(q), free(lut), free(want), free(got);
}
