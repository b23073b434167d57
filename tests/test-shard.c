/* Shard assignment (tools/shard.c), which every process of a scaled-out job computes alone:
 * each document lands in exactly one shard, the same one on every call, left-out documents in
 * none, and the heaviest shard stays within the list-scheduling bound sum/N + the heaviest
 * document; Slurm array task ids map onto shards or are refused. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/error.h"
#include "tools/shard.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void) { /* xorshift64*: the same lists on every run */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* Checks one assignment; returns the heaviest shard's load. */
static int64_t check(const int64_t *w, size_t n, int32_t n_shards, const int32_t *shard_of) {
    int64_t *load = calloc((size_t)n_shards, sizeof *load), sum = 0, max_item = 0, max_load = 0;
    cr_assert_not_null(load);
    for (size_t i = 0; i < n; i++) {
        if (w[i] < 0) {
            cr_assert_eq(shard_of[i], -1, "left-out item %zu assigned", i);
            continue;
        }
        cr_assert(shard_of[i] >= 0 && shard_of[i] < n_shards, "item %zu in shard %d of %d", i, shard_of[i], n_shards);
        load[shard_of[i]] += w[i];
        sum += w[i];
        if (w[i] > max_item) max_item = w[i];
    }
    for (int32_t s = 0; s < n_shards; s++)
        if (load[s] > max_load) max_load = load[s];
    /* list scheduling: when the heaviest shard took its last item it was the lightest, so
     * below the average */
    cr_assert_leq(max_load, sum / n_shards + max_item, "max load %lld > %lld / %d + %lld", (long long)max_load,
                  (long long)sum, n_shards, (long long)max_item);
    free(load);
    return max_load;
}

Test(shard, random_lists_cover_once_deterministic_balanced) {
    for (int trial = 0; trial < 400; trial++) {
        size_t n = (size_t)(rnd() % 300);
        int32_t n_shards = 1 + (int32_t)(rnd() % (trial % 4 == 0 ? 300 : 17));
        int64_t *w = malloc((n + 1) * sizeof *w);
        int32_t *a = malloc((n + 1) * sizeof *a), *b = malloc((n + 1) * sizeof *b);
        cr_assert(w && a && b);
        int kind = trial % 5;
        for (size_t i = 0; i < n; i++) {
            switch (kind) {
            case 0: w[i] = (int64_t)(rnd() % 100000); break;                      /* spread out */
            case 1: w[i] = 4096; break;                                           /* all equal */
            case 2: w[i] = rnd() % 10 ? (int64_t)(rnd() % 1000) : (int64_t)(rnd() % (1ull << 40)); break; /* a few huge */
            case 3: w[i] = rnd() % 4 ? (int64_t)(rnd() % 50000) : -1; break;      /* some left out */
            default: w[i] = (int64_t)(rnd() % 3); break;                          /* zeros and ties */
            }
        }
        cr_assert_eq(shard_assign(w, n, n_shards, a), 0);
        check(w, n, n_shards, a);
        memset(b, 0x55, (n + 1) * sizeof *b);
        cr_assert_eq(shard_assign(w, n, n_shards, b), 0);
        cr_assert_arr_eq(a, b, n * sizeof *a, "two calls disagree (trial %d)", trial);
        free(w);
        free(a);
        free(b);
    }
}

Test(shard, known_cases) {
    /* LPT on {7,7,6,6,5,5,4,4,4} over 3: 7+5+4, 7+5+4, 6+6+4... heaviest 16 (the sum is 48) */
    int64_t w[] = {4, 7, 5, 6, 4, 7, 6, 5, 4};
    int32_t s[9];
    cr_assert_eq(shard_assign(w, 9, 3, s), 0);
    cr_assert_eq(check(w, 9, 3, s), 16);
    cr_assert_eq(s[1], 0); /* the first of the two heaviest goes to shard 0, the second to 1 */
    cr_assert_eq(s[5], 1);
    /* more shards than items: one item each, the rest empty */
    int64_t w2[] = {10, 30, 20};
    int32_t s2[3];
    cr_assert_eq(shard_assign(w2, 3, 8, s2), 0);
    cr_assert(s2[0] != s2[1] && s2[1] != s2[2] && s2[0] != s2[2]);
    cr_assert_eq(s2[1], 0);
    /* one shard takes everything */
    cr_assert_eq(shard_assign(w2, 3, 1, s2), 0);
    cr_assert(s2[0] == 0 && s2[1] == 0 && s2[2] == 0);
    /* nothing to assign */
    cr_assert_eq(shard_assign(NULL, 0, 4, NULL), 0);
}

Test(shard, bad_arguments_and_overflow) {
    int64_t w[] = {1, 2};
    int32_t s[2] = {7, 7};
    cr_assert_eq(shard_assign(w, 2, 0, s), SL_EINVAL);
    cr_assert_eq(shard_assign(NULL, 2, 2, s), SL_EINVAL);
    int64_t big[] = {INT64_MAX / 2 + 1, INT64_MAX / 2 + 1, 5};
    int32_t sb[3];
    cr_assert_eq(shard_assign(big, 3, 1, sb), SL_EBOUNDS);
    cr_assert(sb[0] == -1 && sb[1] == -1 && sb[2] == -1);
    cr_assert_eq(shard_assign(big, 3, 2, sb), 0); /* apart they fit */
}

Test(shard, slurm_array_tasks) {
    int32_t s = -1;
    cr_assert_eq(shard_of_array_task(0, 0, 1, 4, &s), 0);
    cr_assert_eq(s, 0);
    cr_assert_eq(shard_of_array_task(3, 0, 1, 4, &s), 0);
    cr_assert_eq(s, 3);
    cr_assert_eq(shard_of_array_task(4, 0, 1, 4, &s), SL_EINVAL); /* past the count */
    cr_assert_eq(shard_of_array_task(5, 1, 1, 8, &s), 0);           /* --array=1-8 */
    cr_assert_eq(s, 4);
    cr_assert_eq(shard_of_array_task(0, 1, 1, 8, &s), SL_EINVAL);
    cr_assert_eq(shard_of_array_task(14, 0, 2, 8, &s), 0);          /* --array=0-14:2 */
    cr_assert_eq(s, 7);
    cr_assert_eq(shard_of_array_task(3, 0, 2, 8, &s), SL_EINVAL);   /* not on a step */
    cr_assert_eq(shard_of_array_task(9, 0, 1, 3, &s), SL_EINVAL);   /* --array=0,4,9 */
    cr_assert_eq(shard_of_array_task(0, 0, 0, 3, &s), SL_EINVAL);
    cr_assert_eq(shard_of_array_task(0, 0, 1, 0, &s), SL_EINVAL);
}
