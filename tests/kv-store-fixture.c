/* The KV store suites' shared fixture (tests/kv-store-fixture.h). */
#include "tests/kv-store-fixture.h"

#include <stdlib.h>
#include <string.h>

const struct sl_kv_shape SHAPE_A = {3, 2, 64, SL_KV_DTYPE_F16, 16};
const struct sl_kv_shape SHAPE_B = {3, 2, 40, SL_KV_DTYPE_F16, 4};
const struct sl_kv_shape SHAPE_C = {2, 3, 24, SL_KV_DTYPE_BF16, 32};

void fx_create_pending(struct fx *f, int tier, const struct sl_kv_shape *shape, int64_t cap,
                       int64_t max_pending) {
    memset(f, 0, sizeof *f);
    f->t = &kvt_tiers[tier];
    f->dir = kvt_tmpdir();
    cr_assert_not_null(f->dir);
    f->path = kvt_join(f->dir, "kv.store");
    f->rng = 0x1234 + (uint64_t)tier * 77 + (uint64_t)shape->head_dim;
    f->p = kvt_params(f->t, cap, f->path);
    if (max_pending) f->p.max_pending = max_pending;
    kvt_ref_init(&f->r, shape, cap);
    int rc = sl_kv_store_create(shape, &f->p, &f->s);
    cr_assert_eq(rc, 0, "[%s] create: %s (%s)", f->t->name, sl_strerror(rc), sl_error_detail());
}

void fx_create(struct fx *f, int tier, const struct sl_kv_shape *shape, int64_t cap) {
    fx_create_pending(f, tier, shape, cap, 0);
}

void fx_reopen(struct fx *f, const struct sl_kv_shape *shape) {
    OK(sl_kv_store_close(f->s));
    sl_kv_store_free(f->s);
    f->s = NULL;
    int rc = sl_kv_store_open(shape, &f->p, &f->s);
    cr_assert_eq(rc, 0, "[%s] reopen: %s (%s)", f->t->name, sl_strerror(rc), sl_error_detail());
}

void fx_done(struct fx *f) {
    sl_kv_store_free(f->s);
    kvt_ref_free(&f->r);
    kvt_rmtree(f->dir);
    free(f->dir);
    free(f->path);
}

void check_ranges(struct fx *f) {
    int64_t n = f->r.n, T = f->r.shape.block_tokens;
    for (int32_t l = 0; l < f->r.shape.n_layer; l++)
        for (int32_t h = 0; h < f->r.shape.n_head_kv; h++) {
            for (int64_t b = T; b < n; b += T) {
                OK(kvt_check_range(f->s, &f->r, l, h, b - 1, 2));
                int64_t p0 = b - T / 2 - 1, len = T + 3;
                if (p0 >= 0 && p0 + len <= n) OK(kvt_check_range(f->s, &f->r, l, h, p0, len));
            }
            int64_t tail = n % T ? n % T : T;
            OK(kvt_check_range(f->s, &f->r, l, h, n - tail, tail));
            OK(kvt_check_range(f->s, &f->r, l, h, n - 1, 1));
            for (int i = 0; i < 8; i++) {
                int64_t p0 = kvt_rand_below(&f->rng, n);
                OK(kvt_check_range(f->s, &f->r, l, h, p0, 1 + kvt_rand_below(&f->rng, n - p0)));
            }
        }
}

/* 0 when create accepts ram_budget b, its negative error when not. */
static int try_budget(struct sl_kv_store_params p, const struct sl_kv_shape *shape, int64_t b) {
    sl_kv_store_t s = NULL;
    p.overwrite = true;
    p.ram_budget = b;
    int rc = sl_kv_store_create(shape, &p, &s);
    cr_assert(rc <= 0);
    sl_kv_store_free(s);
    return rc;
}

int64_t min_budget(struct fx *f, const struct sl_kv_shape *shape, int64_t cap, const char *path) {
    struct sl_kv_store_params p = kvt_params(f->t, cap, path);
    int64_t hi = 4096;
    while (try_budget(p, shape, hi) < 0) {
        hi *= 2;
        cr_assert(hi <= (INT64_C(256) << 20), "no budget up to 256 MiB accepted");
    }
    if (hi == 4096) return hi;
    int64_t lo = hi / 2; /* rejected */
    while (hi - lo > 4096) {
        int64_t mid = (lo + hi) / 2 / 4096 * 4096;
        if (try_budget(p, shape, mid) == 0) hi = mid; else lo = mid;
    }
    return hi;
}
