/* Shared by the KV fetch suites (test-fetch-logic.c on the CPU, test-gpu-fetch.c on a
 * device): a store filled with random rows, step-to-step selections shaped like Spotlight's
 * (ascending unique positions per KV head, a set fraction kept from the previous step, empty
 * heads, positions in the partial last block), and the check that fetched rows equal what
 * sl_kv_store_gather returns. */
#ifndef SL_TESTS_FETCH_TEST_UTIL_H
#define SL_TESTS_FETCH_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spotlight/kv-store.h"

/* A store of n_tokens committed random rows. file: the file tier (io_uring, buffered) in a
 * temporary directory, else the host tier; device >= 0: params for that CUDA device
 * (pinned and mapped host memory). 0 or the store's error. */
struct ftu_store {
    sl_kv_store_t s;
    struct sl_kv_shape shape;
    int64_t row_bytes;
    char *dir;
};
int ftu_store_make(struct ftu_store *f, const struct sl_kv_shape *shape, bool file, int device,
                   int64_t capacity, int64_t n_tokens, uint64_t seed);
void ftu_store_free(struct ftu_store *f);

/* A selection: idx (H, M) int32, cnt (H). */
struct ftu_sel {
    int32_t H;
    int64_t M;
    int32_t *idx, *cnt;
};
void ftu_sel_init(struct ftu_sel *s, int32_t H, int64_t M);
void ftu_sel_free(struct ftu_sel *s);
void ftu_sel_copy(struct ftu_sel *dst, const struct ftu_sel *src);

/* A new selection: each head keeps `overlap` of prev's positions (prev NULL: none) and adds
 * random ones up to a random count in [0, M] (sometimes 0, sometimes M); clustered: new
 * positions come in runs inside blocks (block-level selections) instead of one by one; the
 * last position (partial last block) joins often. Ascending and unique per head. */
void ftu_sel_next(struct ftu_sel *s, const struct ftu_sel *prev, int64_t n_tokens, int32_t T,
                  double overlap, bool clustered, uint64_t *rng);

/* Output rows (h, i) for i < cnt[h] of k, v ((H, M, head_dim)) equal sl_kv_store_gather of
 * the same positions: 0, or 1 with ftu_msg() saying where. */
int ftu_check_rows(sl_kv_store_t s, int32_t layer, const struct ftu_sel *sel, const void *k,
                   const void *v);
const char *ftu_msg(void);

uint64_t ftu_rand(uint64_t *state);
int64_t ftu_rand_below(uint64_t *state, int64_t n);

#endif
