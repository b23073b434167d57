/* The fixture the KV store suites (test-kv-store.c, test-kv-persist.c) share: one store under
 * test on a given tier beside its plain reference model (tests/kv-test-util.h), the assertion
 * macros that name the tier on failure, and the checks both suites run. */
#ifndef SL_TESTS_KV_STORE_FIXTURE_H
#define SL_TESTS_KV_STORE_FIXTURE_H

#include <criterion/criterion.h>
#include <stdint.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "tests/kv-test-util.h"

extern const struct sl_kv_shape SHAPE_A; /* 3 layers, 2 heads, dim 64, f16, block 16: 4 KiB blocks */
extern const struct sl_kv_shape SHAPE_B; /* 3 layers, 2 heads, dim 40, f16, block 4: 640 B blocks */
extern const struct sl_kv_shape SHAPE_C; /* 2 layers, 3 heads, dim 24, bf16, block 32 */

/* One store under test plus its reference. The macros below expect it as `f`. */
struct fx {
    const struct kvt_tier *t;
    char *dir, *path;
    sl_kv_store_t s;
    struct kvt_ref r;
    uint64_t rng;
    struct sl_kv_store_params p;
};

#define OK(expr)                                                                               \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        cr_assert_eq(rc_, 0, "[%s] %s -> %d %s %s", f->t->name, #expr, rc_,                   \
                     rc_ < 0 ? sl_strerror(rc_) : "", rc_ < 0 ? sl_error_detail() : kvt_msg());                              \
    } while (0)
#define FAILS(expr)                                                                            \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        cr_assert(rc_ < 0, "[%s] %s should fail, got %d %s", f->t->name, #expr, rc_, kvt_msg()); \
    } while (0)
#define EXPECT_RC(expr, code)                                                                  \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        cr_assert_eq(rc_, code, "[%s] %s -> %s, expected %s", f->t->name, #expr,               \
                     sl_strerror(rc_), sl_strerror(code));                                     \
    } while (0)

/* Creates a store of the tier (an index into kvt_tiers) with its reference; max_pending is the
 * file tier's pending window in positions, 0 for the default. */
void fx_create_pending(struct fx *f, int tier, const struct sl_kv_shape *shape, int64_t cap,
                       int64_t max_pending);
void fx_create(struct fx *f, int tier, const struct sl_kv_shape *shape, int64_t cap);
/* Closes and reopens the file-tier store (shape given or NULL: read from the file). */
void fx_reopen(struct fx *f, const struct sl_kv_shape *shape);
void fx_done(struct fx *f);
/* Ranges of every (layer, head) against the reference: across each block boundary, the last
 * (partial) block, the last position, and random ones. */
void check_ranges(struct fx *f);
/* The smallest ram_budget (a multiple of 4 KiB) create accepts for this shape and capacity. */
int64_t min_budget(struct fx *f, const struct sl_kv_shape *shape, int64_t cap, const char *path);

#endif
