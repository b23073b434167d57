/* The fixture the KV failure suites (test-kv-faults.c, test-kv-corrupt.c) share: two small
 * shapes, a context string every assertion prints (set it before each case), the assertion
 * macros, and helpers that open a store or leave a closed one on disk. */
#ifndef SL_TESTS_KV_FAULT_FIXTURE_H
#define SL_TESTS_KV_FAULT_FIXTURE_H

#include <criterion/criterion.h>
#include <stdint.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "tests/kv-test-util.h"

extern const struct sl_kv_shape SH;   /* 2 layers, 2 heads, dim 32, f16, block 16: 2 KiB blocks */
extern const struct sl_kv_shape SH4K; /* 2 layers, 2 heads, dim 64, f16, block 16: 4 KiB blocks */
extern char ctx[160];                 /* the case under test, printed by every assertion */

#define OK(expr)                                                                               \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        cr_assert_eq(rc_, 0, "%s: %s -> %d %s %s", ctx, #expr, rc_,                            \
                     rc_ < 0 ? sl_strerror(rc_) : "", rc_ < 0 ? sl_error_detail() : kvt_msg());                              \
    } while (0)
#define EXPECT_RC(expr, code)                                                                  \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        cr_assert_eq(rc_, code, "%s: %s -> %s, expected %s (%s)", ctx, #expr,                  \
                     sl_strerror(rc_), sl_strerror(code), sl_error_detail());                  \
    } while (0)

/* Opens the store at p->path; fails the test when it cannot. */
sl_kv_store_t must_open(const struct sl_kv_shape *sh, struct sl_kv_store_params *p);
/* A closed store file at dir/name holding n positions of sh (data in *r), last synced by close;
 * returns the malloc'd path. */
char *make_store(const char *dir, const char *name, const struct sl_kv_shape *sh, int64_t cap,
                 int64_t n, struct kvt_ref *r, uint64_t seed);

#endif
