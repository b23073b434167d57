/* The top-k cases both test-gpu-logic (host emulation of the kernels) and test-gpu-retrieval
 * (the kernels) compare against sl_topk_select: token and block level, heavy ties, sinks and
 * window (apart, overlapping, covering everything), k = 0, k >= candidates, n = 0 and 1, n
 * around the 2048-unit tile, score ranges of the default model (G = 3, W = 1: 192) and of a
 * Llama-3-8B shape (G = 4, W = 2: 512), and one past the shared-histogram limit. Header-only,
 * tests only. */
#ifndef SL_TESTS_RETRIEVAL_CASES_H
#define SL_TESTS_RETRIEVAL_CASES_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "cpu/topk.h"

struct rt_case {
    int64_t n;
    int32_t ms;
    int64_t k, n_sink, n_window;
    int32_t block;
    int32_t distinct; /* 0: scores uniform in [0, ms]; else only the top `distinct` values */
};

static uint64_t rt_rng = 0x243F6A8885A308D3ull;
static uint64_t rt_rnd64(void) {
    uint64_t z = (rt_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int64_t rt_below(int64_t m) { return m > 0 ? (int64_t)(rt_rnd64() % (uint64_t)m) : 0; }

/* Scores of one head for case c: uniform, or among the `distinct` highest values (ties). */
static void rt_fill_scores(const struct rt_case *c, uint16_t *s) {
    for (int64_t j = 0; j < c->n; j++)
        s[j] = (uint16_t)(c->distinct ? c->ms - rt_below(c->distinct) : rt_below((int64_t)c->ms + 1));
}

/* The case list (deterministic); returns how many, at most cap. */
static size_t rt_cases(struct rt_case *out, size_t cap) {
    static const int64_t ns[] = {0, 1, 2, 7, 64, 100, 2047, 2048, 2049, 4097, 10000, 65537};
    static const int32_t mss[] = {192, 512};
    static const int32_t blocks[] = {1, 16};
    static const int32_t distinct[] = {0, 3, 1};
    size_t c = 0;
#define RT_ADD(...)                                                                          \
    do {                                                                                     \
        if (c < cap) out[c++] = (struct rt_case){__VA_ARGS__};                               \
    } while (0)
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof mss / sizeof mss[0]; b++)
            for (size_t d = 0; d < sizeof blocks / sizeof blocks[0]; d++)
                for (size_t e = 0; e < sizeof distinct / sizeof distinct[0]; e++) {
                    int64_t n = ns[a];
                    const int64_t ks[] = {0, 1, n / 50 + 1, n / 3, n > 0 ? n - 1 : 0, n, n + 7};
                    for (size_t f = 0; f < sizeof ks / sizeof ks[0]; f++) {
                        /* sinks and window: none, the usual, overlapping, or covering all */
                        int64_t sink = 0, win = 0;
                        switch (rt_below(5)) {
                        case 1: sink = 4, win = 64; break;
                        case 2: sink = n / 2, win = n / 2 + 3; break;
                        case 3: sink = 4; break;
                        case 4: win = 64; break;
                        default: break;
                        }
                        RT_ADD(n, mss[b], ks[f], sink, win, blocks[d], distinct[e]);
                    }
                }
    /* other blocks, a histogram too large for shared memory, a tile-sized window */
    RT_ADD(10000, 192, 200, 4, 64, 2, 0);
    RT_ADD(10000, 192, 200, 4, 64, 4, 3);
    RT_ADD(10000, 512, 300, 4, 64, 64, 0);
    RT_ADD(10000, 512, 5000, 0, 0, 4096, 0);
    RT_ADD(70001, 512, 1000, 4, 64, 4096, 2);
    RT_ADD(70001, 20000, 1400, 4, 64, 1, 0);
    RT_ADD(70001, 20000, 1400, 4, 64, 1, 5);
    RT_ADD(70001, 20000, 1400, 4, 64, 16, 0);
    RT_ADD(70001, 65535, 1400, 4, 64, 1, 0);
    RT_ADD(9000, 192, 100, 2048, 2049, 1, 2);
    RT_ADD(9000, 192, 100, 2047, 2048, 16, 2);
#undef RT_ADD
    return c;
}

/* sl_topk_select on head h's scores, compared with the positions and count a GPU kernel (or its
 * host emulation) gave. */
static void expect_cpu(const struct rt_case *c, const uint16_t *scores, int32_t h, const int32_t *out, int32_t count) {
    struct sl_topk_params p = {c->k, c->n_sink, c->n_window, c->block};
    size_t wb = sl_topk_workspace_bytes(c->n, c->ms, c->block);
    void *work = malloc(wb);
    int64_t cap = sl_topk_max_count(c->n, &p);
    int64_t *ref = malloc(sizeof *ref * (size_t)(cap > 0 ? cap : 1));
    int64_t rc = sl_topk_select(scores, c->n, c->ms, &p, work, wb, ref);
    cr_assert_eq((int64_t)count, rc,
                 "n %lld ms %d k %lld sink %lld win %lld block %d distinct %d head %d: count %d, cpu %lld", (long long)c->n,
                 c->ms, (long long)c->k, (long long)c->n_sink, (long long)c->n_window, c->block, c->distinct, h, count,
                 (long long)rc);
    for (int64_t i = 0; i < rc; i++)
        cr_assert_eq((int64_t)out[i], ref[i], "n %lld k %lld block %d distinct %d head %d: position %lld is %d, cpu %lld",
                     (long long)c->n, (long long)c->k, c->block, c->distinct, h, (long long)i, out[i],
                     (long long)ref[i]);
    free(ref);
    free(work);
}

#endif
