/* KV store (include/spotlight/kv-store.h): round trips, gathers, concurrent gathers, commit
 * semantics and persistence, checked against a plain reference model (tests/kv-test-util.c)
 * on every tier: host, file with io_uring + O_DIRECT, file with io_uring buffered, and file
 * through pread. The on-disk layout is checked against storage/kv-format.h byte by byte.
 * Faults, corruption and bad input are in test-kv-faults.c. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "storage/kv-host-map.h"
#include "tests/kv-test-util.h"

static const struct sl_kv_shape SHAPE_A = {3, 2, 64, SL_KV_DTYPE_F16, 16}; /* block = 4 KiB */
static const struct sl_kv_shape SHAPE_B = {3, 2, 40, SL_KV_DTYPE_F16, 4};  /* 640 B blocks */
static const struct sl_kv_shape SHAPE_C = {2, 3, 24, SL_KV_DTYPE_BF16, 32};

static int all_tiers[] = {KVT_HOST, KVT_FILE_URING_DIRECT, KVT_FILE_URING_BUFFERED, KVT_FILE_PREAD};
static int file_tiers[] = {KVT_FILE_URING_DIRECT, KVT_FILE_URING_BUFFERED, KVT_FILE_PREAD};

TestSuite(kv_store, .fini = kvt_cleanup);

#define TIER_TEST(name, arr)                                                                   \
    ParameterizedTestParameters(kv_store, name) {                                              \
        return cr_make_param_array(int, arr, sizeof arr / sizeof arr[0]);                      \
    }                                                                                          \
    ParameterizedTest(int *ti, kv_store, name, .timeout = 60)

/* One store under test plus its reference. */
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

/* max_pending: the file tier's pending window in positions; 0 keeps the default. */
static void fx_create_pending(struct fx *f, int tier, const struct sl_kv_shape *shape, int64_t cap,
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

static void fx_create(struct fx *f, int tier, const struct sl_kv_shape *shape, int64_t cap) {
    fx_create_pending(f, tier, shape, cap, 0);
}

/* Closes and reopens the file-tier store (shape given or NULL). */
static void fx_reopen(struct fx *f, const struct sl_kv_shape *shape) {
    OK(sl_kv_store_close(f->s));
    sl_kv_store_free(f->s);
    f->s = NULL;
    int rc = sl_kv_store_open(shape, &f->p, &f->s);
    cr_assert_eq(rc, 0, "[%s] reopen: %s (%s)", f->t->name, sl_strerror(rc), sl_error_detail());
}

static void fx_done(struct fx *f) {
    sl_kv_store_free(f->s);
    kvt_ref_free(&f->r);
    kvt_rmtree(f->dir);
    free(f->dir);
    free(f->path);
}

/* Ranges of every (layer, head): across each block boundary, the last (partial) block, the last
 * position, and random ones. */
static void check_ranges(struct fx *f) {
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

TIER_TEST(create_and_query, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 100);
    struct sl_kv_shape got;
    sl_kv_store_shape(f->s, &got);
    cr_assert(got.n_layer == 3 && got.n_head_kv == 2 && got.head_dim == 64 &&
              got.dtype == SL_KV_DTYPE_F16 && got.block_tokens == 16);
    cr_assert_eq(sl_kv_store_capacity(f->s), 100);
    cr_assert_eq(sl_kv_store_n_tokens(f->s), 0);
    cr_assert_eq(sl_kv_shape_bytes_per_token(&SHAPE_A), 3 * 2 * 64 * 2 * 2);
    struct sl_kv_store_stats st;
    sl_kv_store_get_stats(f->s, &st);
    cr_assert_eq(st.block_bytes, 2 * 16 * 64 * 2);
    cr_assert(st.capacity == 100 && st.n_tokens == 0);
    uint16_t k[64], v[64];
    EXPECT_RC(sl_kv_store_read_range(f->s, 0, 0, 0, 1, k, v), SL_EBOUNDS);
    struct sl_kv_gather g = {0, 0, NULL, 0, 0, k, v};
    OK(sl_kv_store_gather(f->s, &g, 1)); /* n = 0 on an empty store */
    fx_done(f);
}

TIER_TEST(round_trip_shapes, all_tiers) {
    const struct sl_kv_shape *shapes[] = {&SHAPE_A, &SHAPE_B, &SHAPE_C};
    for (int i = 0; i < 3; i++) {
        struct fx fx, *f = &fx;
        fx_create(f, *ti, shapes[i], 203);
        OK(kvt_fill(f->s, &f->r, 150, &f->rng));
        OK(kvt_check_all(f->s, &f->r));
        check_ranges(f);
        OK(kvt_fill(f->s, &f->r, 41, &f->rng));
        check_ranges(f);
        OK(kvt_fill(f->s, &f->r, 12, &f->rng)); /* exactly full */
        cr_assert_eq(sl_kv_store_n_tokens(f->s), 203);
        OK(kvt_check_all(f->s, &f->r));
        check_ranges(f);
        fx_done(f);
    }
}

/* Index sets for one (layer, head): sorted, unsorted, duplicates, reversed, empty, ranges. */
static void add_index_sets(struct kvt_gset *gs, struct fx *f, int32_t l, int32_t h) {
    int64_t n = f->r.n, T = f->r.shape.block_tokens, idx[256];
    for (int i = 0; i < 40; i++) idx[i] = kvt_rand_below(&f->rng, n);
    kvt_gset_add(gs, &f->r, l, h, idx, 0, 40); /* unsorted */
    for (int i = 1; i < 40; i++)
        for (int j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
            int64_t x = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = x;
        }
    kvt_gset_add(gs, &f->r, l, h, idx, 0, 40); /* sorted */
    for (int i = 0; i < 30; i++) idx[i] = (int64_t[]){0, n - 1, T, T - 1, n / 2}[kvt_rand_below(&f->rng, 5)];
    kvt_gset_add(gs, &f->r, l, h, idx, 0, 30); /* duplicates */
    for (int i = 0; i < 10; i++) idx[i] = n - 1;
    kvt_gset_add(gs, &f->r, l, h, idx, 0, 10);
    int64_t m = n < 256 ? n : 256;
    for (int64_t i = 0; i < m; i++) idx[i] = n - 1 - i;
    kvt_gset_add(gs, &f->r, l, h, idx, 0, m); /* reversed */
    kvt_gset_add(gs, &f->r, l, h, idx, 0, 0); /* empty, idx given */
    kvt_gset_add(gs, &f->r, l, h, NULL, 3, 0); /* empty range */
    kvt_gset_add(gs, &f->r, l, h, NULL, 0, n);
    kvt_gset_add(gs, &f->r, l, h, NULL, T - 1, 2);
    kvt_gset_add(gs, &f->r, l, h, NULL, n - 5, 5);
    kvt_gset_add(gs, &f->r, l, h, NULL, n - 1, 1);
}

TIER_TEST(gather_index_sets, all_tiers) {
    const struct sl_kv_shape *shapes[] = {&SHAPE_A, &SHAPE_B};
    for (int i = 0; i < 2; i++) {
        struct fx fx, *f = &fx;
        fx_create(f, *ti, shapes[i], 300);
        OK(kvt_fill(f->s, &f->r, 150, &f->rng));
        /* one descriptor per call */
        for (int32_t l = 0; l < f->r.shape.n_layer; l++)
            for (int32_t h = 0; h < f->r.shape.n_head_kv; h++) {
                struct kvt_gset gs = {0};
                add_index_sets(&gs, f, l, h);
                for (int32_t j = 0; j < gs.n; j++) {
                    OK(sl_kv_store_gather(f->s, &gs.g[j], 1));
                    OK(kvt_check_rows(&f->r, &gs.g[j]));
                }
                kvt_gset_free(&gs);
            }
        /* everything as one batch over all layers and heads */
        struct kvt_gset gs = {0};
        for (int32_t l = 0; l < f->r.shape.n_layer; l++)
            for (int32_t h = 0; h < f->r.shape.n_head_kv; h++) add_index_sets(&gs, f, l, h);
        sl_kv_ticket_t t;
        OK(sl_kv_store_gather_submit(f->s, gs.g, gs.n, &t));
        OK(sl_kv_store_gather_wait(f->s, t));
        OK(kvt_gset_check(&gs, &f->r));
        kvt_gset_free(&gs);
        fx_done(f);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void random_gset(struct kvt_gset *gs, struct fx *f, int n_desc) {
    int64_t idx[64];
    for (int d = 0; d < n_desc; d++) {
        int32_t l = (int32_t)kvt_rand_below(&f->rng, f->r.shape.n_layer);
        int32_t h = (int32_t)kvt_rand_below(&f->rng, f->r.shape.n_head_kv);
        int64_t n = 1 + kvt_rand_below(&f->rng, 64);
        for (int64_t i = 0; i < n; i++) idx[i] = kvt_rand_below(&f->rng, f->r.n);
        if (d % 3 == 2) {
            int64_t first = kvt_rand_below(&f->rng, f->r.n);
            kvt_gset_add(gs, &f->r, l, h, NULL, first, kvt_rand_below(&f->rng, f->r.n - first + 1));
        } else {
            kvt_gset_add(gs, &f->r, l, h, idx, 0, n);
        }
    }
}

TIER_TEST(many_tickets_in_flight, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 400);
    OK(kvt_fill(f->s, &f->r, 333, &f->rng));
    if (f->t->tier == SL_KV_TIER_FILE) fx_reopen(f, &SHAPE_A); /* cold cache: reads in flight */
    struct kvt_gset gs[20] = {{0}};
    sl_kv_ticket_t t[20];
    for (int i = 0; i < 20; i++) {
        random_gset(&gs[i], f, 1 + i % 5);
        OK(sl_kv_store_gather_submit(f->s, gs[i].g, gs[i].n, &t[i]));
        for (int j = 0; j < i; j++) cr_assert_neq(t[i], t[j], "two requests in flight share a ticket");
    }
    for (int i = 19; i >= 0; i--) {
        OK(sl_kv_store_gather_wait(f->s, t[i]));
        OK(kvt_gset_check(&gs[i], &f->r));
        kvt_gset_free(&gs[i]);
    }
    /* poll loops */
    int done[8] = {0}, left = 8;
    for (int i = 0; i < 8; i++) {
        random_gset(&gs[i], f, 3);
        OK(sl_kv_store_gather_submit(f->s, gs[i].g, gs[i].n, &t[i]));
    }
    double t0 = now_s();
    while (left > 0) {
        cr_assert(now_s() - t0 < 20, "[%s] poll: %d requests never completed", f->t->name, left);
        for (int i = 0; i < 8; i++) {
            if (done[i]) continue;
            int rc = sl_kv_store_gather_poll(f->s, t[i]);
            cr_assert(rc == 0 || rc == 1, "[%s] poll -> %s", f->t->name, sl_strerror(rc));
            if (rc == 1) {
                done[i] = 1;
                left--;
                OK(kvt_gset_check(&gs[i], &f->r));
            }
        }
    }
    EXPECT_RC(sl_kv_store_gather_poll(f->s, t[0]), SL_EINVAL); /* retired */
    FAILS(sl_kv_store_gather_wait(f->s, t[3]));
    EXPECT_RC(sl_kv_store_gather_poll(f->s, (sl_kv_ticket_t)0xdeadbeef1234ull), SL_EINVAL);
    for (int i = 0; i < 8; i++) kvt_gset_free(&gs[i]);
    fx_done(f);
}

TIER_TEST(in_flight_limit_256, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_B, 200);
    OK(kvt_fill(f->s, &f->r, 200, &f->rng));
    if (f->t->tier == SL_KV_TIER_FILE) fx_reopen(f, &SHAPE_B);
    static struct kvt_gset gs[257];
    sl_kv_ticket_t t[257];
    for (int i = 0; i < 256; i++) {
        random_gset(&gs[i], f, 1);
        OK(sl_kv_store_gather_submit(f->s, gs[i].g, gs[i].n, &t[i]));
    }
    random_gset(&gs[256], f, 1);
    int rc = sl_kv_store_gather_submit(f->s, gs[256].g, gs[256].n, &t[256]);
    cr_assert(rc == 0 || rc == -EBUSY, "[%s] 257th request: %s", f->t->name, sl_strerror(rc));
    int n = rc == 0 ? 257 : 256;
    for (int i = 0; i < n; i++) {
        OK(sl_kv_store_gather_wait(f->s, t[(i * 97) % n]));
        OK(kvt_gset_check(&gs[(i * 97) % n], &f->r));
    }
    for (int i = 0; i < 257; i++) kvt_gset_free(&gs[i]);
    fx_done(f);
}

/* The smallest ram_budget (a multiple of 4 KiB) create accepts for this shape and capacity. */
static int try_budget(struct sl_kv_store_params p, const struct sl_kv_shape *shape, int64_t b) {
    sl_kv_store_t s = NULL;
    p.overwrite = true;
    p.ram_budget = b;
    int rc = sl_kv_store_create(shape, &p, &s);
    cr_assert(rc <= 0);
    sl_kv_store_free(s);
    return rc;
}

static int64_t min_budget(struct fx *f, const struct sl_kv_shape *shape, int64_t cap, const char *path) {
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

TIER_TEST(tiny_cache_budget, file_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 8192);
    sl_kv_store_free(f->s);
    f->s = NULL;
    int64_t budget = min_budget(f, &SHAPE_A, 8192, f->path);
    cr_log_info("[%s] smallest ram_budget accepted: %lld", f->t->name, (long long)budget);
    if (budget > 4096) {
        struct sl_kv_store_params p = f->p;
        p.overwrite = true;
        p.ram_budget = budget - 4096;
        sl_kv_store_t s = NULL;
        unlink(f->path);
        int rc = sl_kv_store_create(&SHAPE_A, &p, &s);
        cr_assert(rc < 0, "budget below the minimum: rc %d", rc);
        cr_assert(!kvt_exists(f->path), "a rejected create left the file behind");
    }
    f->p.ram_budget = budget;
    OK(sl_kv_store_create(&SHAPE_A, &f->p, &f->s));
    OK(kvt_fill(f->s, &f->r, 8000, &f->rng));
    for (int round = 0; round < 3; round++) {
        if (round == 1) fx_reopen(f, &SHAPE_A);
        if (round == 2) {
            f->p.queue_depth = 1;
            fx_reopen(f, &SHAPE_A);
        }
        struct sl_kv_store_stats st;
        sl_kv_store_get_stats(f->s, &st);
        cr_assert(st.ram_bytes <= budget, "[%s] ram_bytes %lld over budget %lld", f->t->name,
                  (long long)st.ram_bytes, (long long)budget);
        /* 1500 positions of each (layer, head) touch ~475 of its 500 blocks: one gather needs
         * ~2850 blocks, far more than the cache holds */
        OK(kvt_check_gather_random(f->s, &f->r, 1500, &f->rng));
        OK(kvt_check_range(f->s, &f->r, 2, 1, 0, 8000));
        sl_kv_store_get_stats(f->s, &st);
        cr_assert(st.ram_bytes <= budget);
        cr_assert(st.cache_slots < 2850 / 2, "cache holds %lld blocks", (long long)st.cache_slots);
        if (round == 0) cr_log_info("[%s] cache slots at the minimum budget: %lld", f->t->name,
                                    (long long)st.cache_slots);
    }
    fx_done(f);
}

Test(kv_store, cache_hits_and_counters, .timeout = 60) {
    struct fx fx, *f = &fx;
    fx_create(f, KVT_FILE_URING_DIRECT, &SHAPE_A, 256);
    OK(kvt_fill(f->s, &f->r, 200, &f->rng));
    fx_reopen(f, &SHAPE_A);
    sl_kv_store_reset_counters(f->s);
    struct kvt_gset gs = {0};
    int64_t idx[40], rows = 0;
    for (int i = 0; i < 40; i++) idx[i] = kvt_rand_below(&f->rng, 192); /* full blocks only */
    for (int32_t l = 0; l < 3; l++)
        for (int32_t h = 0; h < 2; h++, rows += 40) kvt_gset_add(&gs, &f->r, l, h, idx, 0, 40);
    struct sl_kv_store_stats s1, s2;
    OK(sl_kv_store_gather(f->s, gs.g, gs.n));
    OK(kvt_gset_check(&gs, &f->r));
    sl_kv_store_get_stats(f->s, &s1);
    cr_assert(s1.cache_misses > 0 && s1.bytes_read > 0 && s1.reads > 0,
              "cold gather after reopen: misses %lld, bytes_read %lld, reads %lld",
              (long long)s1.cache_misses, (long long)s1.bytes_read, (long long)s1.reads);
    OK(sl_kv_store_gather(f->s, gs.g, gs.n));
    OK(kvt_gset_check(&gs, &f->r));
    sl_kv_store_get_stats(f->s, &s2);
    cr_assert_gt(s2.cache_hits, s1.cache_hits, "second gather of the same set found nothing cached");
    cr_assert_eq(s2.cache_misses, s1.cache_misses, "second gather missed");
    cr_assert_eq(s2.bytes_read, s1.bytes_read, "second gather read from disk");
    cr_assert_eq(s2.rows_gathered, 2 * rows);
    cr_assert_gt(s2.gathers, s1.gathers);
    sl_kv_store_reset_counters(f->s);
    sl_kv_store_get_stats(f->s, &s2);
    cr_assert(s2.cache_hits == 0 && s2.cache_misses == 0 && s2.bytes_read == 0 &&
              s2.bytes_written == 0 && s2.reads == 0 && s2.writes == 0 && s2.gathers == 0 &&
              s2.rows_gathered == 0, "reset_counters left a counter");
    cr_assert(s2.n_tokens == 200 && s2.capacity == 256, "reset_counters changed the state");
    kvt_gset_free(&gs);
    fx_done(f);
}

struct worker {
    struct fx *f;
    uint64_t rng;
    int errors, mismatches;
    char first[256];
};

static void *gather_worker(void *arg) {
    struct worker *w = arg;
    const struct kvt_ref *r = &w->f->r;
    for (int it = 0; it < 60; it++) {
        struct kvt_gset gs = {0};
        int64_t idx[48];
        for (int d = 0; d < 1 + it % 4; d++) {
            int32_t l = (int32_t)kvt_rand_below(&w->rng, r->shape.n_layer);
            int32_t h = (int32_t)kvt_rand_below(&w->rng, r->shape.n_head_kv);
            for (int i = 0; i < 48; i++) idx[i] = kvt_rand_below(&w->rng, r->n);
            kvt_gset_add(&gs, r, l, h, idx, 0, 1 + kvt_rand_below(&w->rng, 48));
        }
        int rc;
        sl_kv_ticket_t t;
        if (it % 3 == 0) {
            rc = sl_kv_store_gather(w->f->s, gs.g, gs.n);
        } else if ((rc = sl_kv_store_gather_submit(w->f->s, gs.g, gs.n, &t)) == 0) {
            if (it % 3 == 1) rc = sl_kv_store_gather_wait(w->f->s, t);
            else
                while ((rc = sl_kv_store_gather_poll(w->f->s, t)) == 0) {}
            if (rc == 1) rc = 0;
        }
        if (rc < 0) {
            if (!w->errors++) snprintf(w->first, sizeof w->first, "gather: %s", sl_strerror(rc));
        } else if (kvt_gset_check(&gs, r)) {
            if (!w->mismatches++) snprintf(w->first, sizeof w->first, "%s", kvt_msg());
        }
        kvt_gset_free(&gs);
    }
    return NULL;
}

TIER_TEST(concurrent_gathers, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 1024);
    OK(kvt_fill(f->s, &f->r, 1000, &f->rng));
    int64_t small = 0;
    if (f->t->tier == SL_KV_TIER_FILE) {
        char *probe = kvt_join(f->dir, "probe");
        small = min_budget(f, &SHAPE_A, 1024, probe);
        free(probe);
    }
    for (int round = 0; round < 2; round++) {
        if (f->t->tier == SL_KV_TIER_FILE) {
            f->p.ram_budget = round ? small : 0; /* round 1: the cache evicts */
            fx_reopen(f, &SHAPE_A);
            struct sl_kv_store_stats st;
            sl_kv_store_get_stats(f->s, &st);
            if (round) cr_assert_lt(st.cache_slots, 6 * 63, "the whole store fits the small cache");
        }
        pthread_t th[4];
        struct worker w[4];
        for (int i = 0; i < 4; i++) {
            w[i] = (struct worker){.f = f, .rng = 99 + (uint64_t)i * 1000 + (uint64_t)round};
            cr_assert_eq(pthread_create(&th[i], NULL, gather_worker, &w[i]), 0);
        }
        for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < 4; i++)
            cr_assert(w[i].errors == 0 && w[i].mismatches == 0,
                      "[%s] round %d thread %d: %d errors, %d mismatches; first: %s", f->t->name,
                      round, i, w[i].errors, w[i].mismatches, w[i].first);
    }
    fx_done(f);
}

TIER_TEST(capacity_limit, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 50);
    OK(kvt_fill(f->s, &f->r, 40, &f->rng));
    FAILS(kvt_append(f->s, &f->r, 0, 11, &f->rng));
    cr_assert_eq(sl_kv_store_n_tokens(f->s), 40);
    OK(kvt_append(f->s, &f->r, 0, 10, &f->rng)); /* the failed call left layer 0 unchanged */
    FAILS(kvt_append(f->s, &f->r, 0, 1, &f->rng));
    OK(kvt_append(f->s, &f->r, 1, 10, &f->rng));
    OK(kvt_append(f->s, &f->r, 2, 10, &f->rng));
    OK(kvt_commit(f->s, &f->r, 10, true, &f->rng));
    cr_assert_eq(sl_kv_store_n_tokens(f->s), 50);
    FAILS(kvt_append(f->s, &f->r, 1, 1, &f->rng));
    FAILS(kvt_commit(f->s, &f->r, 1, true, &f->rng));
    OK(kvt_check_all(f->s, &f->r));
    if (f->t->tier == SL_KV_TIER_FILE) {
        fx_reopen(f, &SHAPE_A);
        OK(kvt_check_all(f->s, &f->r));
    }
    fx_done(f);
}

TIER_TEST(commit_needs_every_layer, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 100);
    OK(kvt_fill(f->s, &f->r, 30, &f->rng));
    OK(kvt_append(f->s, &f->r, 0, 10, &f->rng));
    OK(kvt_append(f->s, &f->r, 1, 10, &f->rng));
    OK(kvt_append(f->s, &f->r, 2, 4, &f->rng));
    FAILS(kvt_commit(f->s, &f->r, 10, true, &f->rng));
    cr_assert_eq(sl_kv_store_n_tokens(f->s), 30);
    uint16_t k[64], v[64];
    EXPECT_RC(sl_kv_store_read_range(f->s, 0, 0, 30, 1, k, v), SL_EBOUNDS);
    FAILS(kvt_commit(f->s, &f->r, -1, true, &f->rng));
    OK(kvt_check_all(f->s, &f->r));
    /* the failed commit changed nothing: completing layer 2 makes the same rows committable */
    OK(kvt_append(f->s, &f->r, 2, 6, &f->rng));
    OK(kvt_commit(f->s, &f->r, 10, true, &f->rng));
    OK(kvt_check_all(f->s, &f->r));
    fx_done(f);
}

/* A prefill chunk: every layer appends 2000 positions before the one commit. The file tier
 * holds at most max_pending uncommitted positions per layer (default 1024): past that an
 * append fails and changes nothing; with a window that fits, the chunk goes through. */
TIER_TEST(large_prefill_chunk, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_B, 4096);
    OK(kvt_fill(f->s, &f->r, 5, &f->rng));
    if (f->t->tier == SL_KV_TIER_FILE) {
        cr_assert_eq(f->p.max_pending, 1024);
        OK(kvt_append(f->s, &f->r, 0, 1000, &f->rng));
        uint16_t *rows = calloc(100 * 2 * 40, sizeof *rows);
        EXPECT_RC(sl_kv_store_append(f->s, 0, 100, rows, rows), SL_EBOUNDS);
        free(rows);
        OK(kvt_discard(f->s, &f->r));
        OK(kvt_check_all(f->s, &f->r));
        fx_done(f);
        fx_create_pending(f, *ti, &SHAPE_B, 4096, 2048);
        OK(kvt_fill(f->s, &f->r, 5, &f->rng));
    }
    for (int32_t l = 0; l < 3; l++) OK(kvt_append(f->s, &f->r, l, 2000, &f->rng));
    OK(kvt_commit(f->s, &f->r, 2000, true, &f->rng));
    OK(kvt_check_all(f->s, &f->r));
    if (f->t->tier == SL_KV_TIER_FILE) {
        fx_reopen(f, &SHAPE_B);
        OK(kvt_check_all(f->s, &f->r));
    }
    fx_done(f);
}

TIER_TEST(discard_and_reappend, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_B, 100);
    OK(kvt_fill(f->s, &f->r, 30, &f->rng));
    OK(kvt_discard(f->s, &f->r)); /* nothing pending */
    for (int32_t l = 0; l < 3; l++) OK(kvt_append(f->s, &f->r, l, 21, &f->rng));
    OK(kvt_discard(f->s, &f->r));
    cr_assert_eq(sl_kv_store_n_tokens(f->s), 30);
    FAILS(kvt_commit(f->s, &f->r, 1, true, &f->rng));
    OK(kvt_check_all(f->s, &f->r));
    OK(kvt_fill(f->s, &f->r, 21, &f->rng)); /* different data at the same positions */
    OK(kvt_check_all(f->s, &f->r));
    if (f->t->tier == SL_KV_TIER_FILE) {
        fx_reopen(f, &SHAPE_B);
        OK(kvt_check_all(f->s, &f->r));
    }
    fx_done(f);
}

TIER_TEST(tags_round_trip, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 300);
    for (int i = 0; i < 6; i++) { /* alternate tags and NULL (zeros) */
        for (int32_t l = 0; l < 3; l++) OK(kvt_append(f->s, &f->r, l, 37, &f->rng));
        OK(kvt_commit(f->s, &f->r, 37, i % 2 == 0, &f->rng));
    }
    cr_assert_eq(f->r.tags[40], 0);
    OK(kvt_check_all(f->s, &f->r));
    uint32_t tags[222];
    for (int i = 0; i < 20; i++) {
        int64_t p0 = kvt_rand_below(&f->rng, 222), n = 1 + kvt_rand_below(&f->rng, 222 - p0);
        memset(tags, 0xee, sizeof tags);
        OK(sl_kv_store_read_tags(f->s, p0, n, tags));
        cr_assert_arr_eq(tags, f->r.tags + p0, (size_t)n * 4, "tags [%lld, +%lld)", (long long)p0,
                         (long long)n);
    }
    EXPECT_RC(sl_kv_store_read_tags(f->s, 222, 1, tags), SL_EBOUNDS);
    EXPECT_RC(sl_kv_store_read_tags(f->s, 200, 23, tags), SL_EBOUNDS);
    EXPECT_RC(sl_kv_store_read_tags(f->s, -1, 2, tags), SL_EBOUNDS);
    if (f->t->tier == SL_KV_TIER_FILE) {
        fx_reopen(f, &SHAPE_A);
        OK(kvt_check_all(f->s, &f->r));
    }
    fx_done(f);
}

TIER_TEST(truncate_then_append, all_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 200);
    OK(kvt_fill(f->s, &f->r, 100, &f->rng));
    OK(kvt_truncate(f->s, &f->r, 37)); /* inside a block that was full */
    cr_assert_eq(sl_kv_store_n_tokens(f->s), 37);
    uint16_t k[64], v[64];
    EXPECT_RC(sl_kv_store_read_range(f->s, 0, 0, 37, 1, k, v), SL_EBOUNDS);
    OK(kvt_check_all(f->s, &f->r));
    OK(kvt_fill(f->s, &f->r, 50, &f->rng));
    OK(kvt_check_all(f->s, &f->r));
    check_ranges(f);
    OK(kvt_truncate(f->s, &f->r, 87)); /* no-op */
    FAILS(kvt_truncate(f->s, &f->r, 88));
    FAILS(kvt_truncate(f->s, &f->r, -1));
    cr_assert_eq(sl_kv_store_n_tokens(f->s), 87);
    for (int32_t l = 0; l < 3; l++) OK(kvt_append(f->s, &f->r, l, 5, &f->rng));
    OK(kvt_truncate(f->s, &f->r, 80)); /* drops the pending rows too */
    FAILS(kvt_commit(f->s, &f->r, 1, true, &f->rng));
    OK(kvt_check_all(f->s, &f->r));
    if (f->t->tier == SL_KV_TIER_FILE) {
        fx_reopen(f, &SHAPE_A);
        OK(kvt_check_all(f->s, &f->r));
    }
    OK(kvt_truncate(f->s, &f->r, 0));
    OK(kvt_fill(f->s, &f->r, 20, &f->rng));
    OK(kvt_check_all(f->s, &f->r));
    if (f->t->tier == SL_KV_TIER_FILE) {
        fx_reopen(f, &SHAPE_A);
        OK(kvt_check_all(f->s, &f->r));
    }
    fx_done(f);
}

/* ---- persistence (file tiers) ---------------------------------------------------------------- */

TIER_TEST(reopen_and_resume, file_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_B, 300);
    OK(kvt_fill(f->s, &f->r, 30, &f->rng));
    OK(sl_kv_store_sync(f->s));
    OK(kvt_fill(f->s, &f->r, 25, &f->rng));
    OK(sl_kv_store_sync(f->s));
    OK(kvt_fill(f->s, &f->r, 17, &f->rng)); /* close syncs these */
    f->p.capacity = 5;                      /* ignored by open */
    fx_reopen(f, &SHAPE_B);
    OK(kvt_check_all(f->s, &f->r));
    cr_assert_eq(sl_kv_store_capacity(f->s), 300);
    fx_reopen(f, NULL);
    struct sl_kv_shape got;
    sl_kv_store_shape(f->s, &got);
    cr_assert(got.n_layer == SHAPE_B.n_layer && got.n_head_kv == SHAPE_B.n_head_kv &&
              got.head_dim == SHAPE_B.head_dim && got.dtype == SHAPE_B.dtype &&
              got.block_tokens == SHAPE_B.block_tokens, "shape read back from the file differs");
    OK(kvt_check_all(f->s, &f->r));
    OK(kvt_fill(f->s, &f->r, 40, &f->rng));
    OK(kvt_check_all(f->s, &f->r));
    fx_reopen(f, &SHAPE_B);
    OK(kvt_check_all(f->s, &f->r));
    check_ranges(f);
    fx_done(f);
}

TIER_TEST(pending_rows_not_persisted, file_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 100);
    OK(kvt_fill(f->s, &f->r, 40, &f->rng));
    for (int32_t l = 0; l < 3; l++) OK(kvt_append(f->s, &f->r, l, 30, &f->rng));
    fx_reopen(f, &SHAPE_A);
    OK(kvt_check_all(f->s, &f->r)); /* n_tokens 40 */
    FAILS(kvt_commit(f->s, &f->r, 1, true, &f->rng));
    fx_done(f);
}

Test(kv_store, sync_refused_while_pending, .timeout = 60) {
    struct fx fx, *f = &fx;
    fx_create(f, KVT_FILE_URING_DIRECT, &SHAPE_A, 100);
    OK(kvt_fill(f->s, &f->r, 20, &f->rng));
    OK(kvt_append(f->s, &f->r, 0, 3, &f->rng));
    EXPECT_RC(sl_kv_store_sync(f->s), SL_EINVAL);
    OK(kvt_discard(f->s, &f->r));
    OK(sl_kv_store_sync(f->s));
    OK(kvt_check_all(f->s, &f->r));
    fx_done(f);
}

Test(kv_store, create_refuses_existing_path, .timeout = 60) {
    struct fx fx, *f = &fx;
    fx_create(f, KVT_FILE_URING_DIRECT, &SHAPE_A, 100);
    OK(kvt_fill(f->s, &f->r, 20, &f->rng));
    fx_reopen(f, &SHAPE_A); /* f->s stays open on the file */
    char *other = kvt_join(f->dir, "other");
    FILE *fp = fopen(other, "w");
    fputs("not a store", fp);
    fclose(fp);
    struct sl_kv_store_params p = f->p;
    sl_kv_store_t s = NULL;
    p.path = other;
    FAILS(sl_kv_store_create(&SHAPE_A, &p, &s));
    char buf[16] = {0};
    cr_assert(kvt_read_at(other, 0, buf, 11) == 0 && memcmp(buf, "not a store", 11) == 0,
              "a refused create changed the existing file");
    p.path = f->path; /* an existing store */
    FAILS(sl_kv_store_create(&SHAPE_A, &p, &s));
    OK(kvt_check_all(f->s, &f->r));
    fx_reopen(f, &SHAPE_A);
    OK(kvt_check_all(f->s, &f->r));
    p.path = other;
    p.overwrite = true;
    OK(sl_kv_store_create(&SHAPE_B, &p, &s));
    cr_assert_eq(sl_kv_store_n_tokens(s), 0);
    sl_kv_store_free(s);
    s = NULL;
    OK(sl_kv_store_open(&SHAPE_B, &p, &s));
    cr_assert_eq(sl_kv_store_n_tokens(s), 0);
    sl_kv_store_free(s);
    free(other);
    fx_done(f);
}

/* A crash right after a call, simulated by copying the file while the store is open. */
static void open_copy(struct fx *f, const char *name, sl_kv_store_t *out) {
    char *copy = kvt_join(f->dir, name);
    cr_assert_eq(kvt_copy_file(f->path, copy), 0);
    struct sl_kv_store_params p = f->p;
    p.path = copy;
    int rc = sl_kv_store_open(&f->r.shape, &p, out);
    cr_assert_eq(rc, 0, "[%s] open of the crash copy: %s (%s)", f->t->name, sl_strerror(rc),
                 sl_error_detail());
    free(copy);
}

TIER_TEST(crash_copies_hold_synced_state, file_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 300);
    OK(kvt_fill(f->s, &f->r, 100, &f->rng));
    OK(sl_kv_store_sync(f->s));
    OK(kvt_fill(f->s, &f->r, 60, &f->rng)); /* committed, not synced */
    sl_kv_store_t c = NULL;
    open_copy(f, "crash1", &c);
    int64_t n = sl_kv_store_n_tokens(c);
    cr_assert(n >= 100 && n <= 160, "[%s] crash after commit: n_tokens %lld not in [100, 160]",
              f->t->name, (long long)n);
    struct kvt_ref old;
    kvt_ref_copy(&old, &f->r);
    old.n = n;
    OK(kvt_check_all(c, &old));
    sl_kv_store_free(c);
    kvt_ref_free(&old);
    /* truncate is durable on return */
    OK(sl_kv_store_sync(f->s));
    OK(kvt_truncate(f->s, &f->r, 37));
    c = NULL;
    open_copy(f, "crash2", &c);
    OK(kvt_check_all(c, &f->r));
    sl_kv_store_free(c);
    fx_done(f);
}

/* The file matches storage/kv-format.h: header fields, offsets, checksums, data and tail blocks. */
static void check_file_layout(struct fx *f) {
    const struct sl_kv_shape *sh = &f->r.shape;
    int64_t n = f->r.n, T = sh->block_tokens, D = sh->head_dim;
    struct kvt_layout L;
    kvt_layout_of(sh, f->r.capacity, &L);
    cr_assert_eq(kvt_file_size(f->path), L.file_size, "file size %lld, documented %lld",
                 (long long)kvt_file_size(f->path), (long long)L.file_size);
    uint8_t hs[8192];
    cr_assert_eq(kvt_read_slots(f->path, hs), 0);
    int slot = kvt_current_slot(hs);
    cr_assert(slot >= 0, "no header slot with the magic and a valid CRC32C");
    const uint8_t *h = hs + 4096 * slot, *o = hs + 4096 * (1 - slot);
    if (kvt_slot_valid(o)) cr_assert_lt(kvt_le64(o + 48), kvt_le64(h + 48));
    uint32_t want32[] = {1, 4096, (uint32_t)sh->n_layer, (uint32_t)sh->n_head_kv, (uint32_t)D,
                         (uint32_t)sh->dtype, (uint32_t)T, (uint32_t)L.block_stride};
    for (int i = 0; i < 8; i++)
        cr_assert_eq(kvt_le32(h + 8 + 4 * i), want32[i], "u32 at %d is %u, documented %u",
                     8 + 4 * i, kvt_le32(h + 8 + 4 * i), want32[i]);
    int64_t want64[] = {f->r.capacity, -1, n, L.tail_off[slot], L.crc_off, L.tag_off, L.data_off,
                        L.file_size};
    for (int i = 0; i < 8; i++)
        if (i != 1)
            cr_assert_eq((int64_t)kvt_le64(h + 40 + 8 * i), want64[i], "u64 at %d is %lld, documented %lld",
                         40 + 8 * i, (long long)kvt_le64(h + 40 + 8 * i), (long long)want64[i]);
    cr_assert_geq(kvt_le64(h + 48), 1);
    cr_assert_arr_eq(h + 112, kvt_fingerprint, 32);
    for (int i = 144; i < 4092; i++) cr_assert_eq(h[i], 0, "header byte %d not zero", i);
    /* tags */
    uint32_t *tags = malloc((size_t)n * 4 + 4);
    cr_assert_eq(kvt_read_at(f->path, L.tag_off, tags, (size_t)n * 4), 0);
    for (int64_t i = 0; i < n; i++) cr_assert_eq(kvt_le32((uint8_t *)&tags[i]), f->r.tags[i]);
    cr_assert_eq(kvt_le32(h + 108), kvt_crc32c(0, tags, (size_t)n * 4), "tags_crc");
    free(tags);
    /* tail region of the current slot */
    uint8_t *tail = malloc((size_t)L.tail_bytes);
    cr_assert_eq(kvt_read_at(f->path, L.tail_off[slot], tail, (size_t)L.tail_bytes), 0);
    cr_assert_eq(kvt_le32(h + 104), kvt_crc32c(0, tail, (size_t)L.tail_bytes), "tail_crc");
    int64_t nb_full = n / T, row = D * 2;
    uint8_t *blk = malloc((size_t)L.block_stride), *crcs = malloc((size_t)L.crc_bytes);
    cr_assert_eq(kvt_read_at(f->path, L.crc_off, crcs, (size_t)L.crc_bytes), 0);
    for (int32_t l = 0; l < sh->n_layer; l++)
        for (int32_t hd = 0; hd < sh->n_head_kv; hd++) {
            for (int64_t b = 0; b < nb_full; b++) {
                cr_assert_eq(kvt_read_at(f->path, kvt_block_off(&L, sh, l, b, hd), blk,
                                         (size_t)L.block_stride), 0);
                for (int64_t t = 0; t < T; t++) {
                    cr_assert_arr_eq(blk + t * row, kvt_ref_k(&f->r, l, b * T + t, hd), (size_t)row,
                                     "K of data block (%d, %lld, %d) row %lld", l, (long long)b, hd, (long long)t);
                    cr_assert_arr_eq(blk + (T + t) * row, kvt_ref_v(&f->r, l, b * T + t, hd), (size_t)row,
                                     "V of data block (%d, %lld, %d) row %lld", l, (long long)b, hd, (long long)t);
                }
                for (int64_t i = L.block_bytes; i < L.block_stride; i++) cr_assert_eq(blk[i], 0);
                uint32_t c = kvt_le32(crcs + 4 * (((int64_t)l * L.n_blocks + b) * sh->n_head_kv + hd));
                cr_assert(c == kvt_crc32c(0, blk, (size_t)L.block_bytes) ||
                          c == kvt_crc32c(0, blk, (size_t)L.block_stride),
                          "checksum entry of block (%d, %lld, %d)", l, (long long)b, hd);
            }
            /* the partial block, in tail slot (layer * n_head_kv + head) */
            const uint8_t *tb = tail + ((int64_t)l * sh->n_head_kv + hd) * L.block_stride;
            for (int64_t p = nb_full * T; p < n; p++) {
                cr_assert_arr_eq(tb + (p % T) * row, kvt_ref_k(&f->r, l, p, hd), (size_t)row,
                                 "K of tail block (%d, %d) pos %lld", l, hd, (long long)p);
                cr_assert_arr_eq(tb + (T + p % T) * row, kvt_ref_v(&f->r, l, p, hd), (size_t)row,
                                 "V of tail block (%d, %d) pos %lld", l, hd, (long long)p);
            }
        }
    free(blk);
    free(crcs);
    free(tail);
}

Test(kv_store, file_matches_documented_format, .timeout = 60) {
    const struct sl_kv_shape *shapes[] = {&SHAPE_A, &SHAPE_B, &SHAPE_C};
    for (int i = 0; i < 3; i++) {
        struct fx fx, *f = &fx;
        fx_create(f, KVT_FILE_URING_DIRECT, shapes[i], 100);
        check_file_layout(f); /* empty */
        OK(kvt_fill(f->s, &f->r, 70, &f->rng));
        OK(sl_kv_store_sync(f->s));
        check_file_layout(f);
        OK(kvt_fill(f->s, &f->r, 5, &f->rng));
        OK(sl_kv_store_close(f->s));
        check_file_layout(f);
        fx_done(f);
    }
}

Test(kv_store, million_positions_sparse, .timeout = 60) {
    const struct sl_kv_shape sh = {2, 1, 8, SL_KV_DTYPE_F16, 256};
    struct fx fx, *f = &fx;
    fx_create(f, KVT_FILE_URING_DIRECT, &sh, INT64_C(1) << 20);
    struct stat st;
    cr_assert_eq(stat(f->path, &st), 0);
    cr_assert_geq(st.st_size, (INT64_C(1) << 20) * sl_kv_shape_bytes_per_token(&sh));
    cr_assert_lt((int64_t)st.st_blocks * 512, INT64_C(8) << 20, "file not sparse: %lld bytes allocated",
                 (long long)st.st_blocks * 512);
    OK(kvt_fill(f->s, &f->r, 1000, &f->rng));
    OK(sl_kv_store_sync(f->s));
    cr_assert_eq(stat(f->path, &st), 0);
    cr_assert_lt((int64_t)st.st_blocks * 512, INT64_C(8) << 20);
    struct sl_kv_store_stats ss;
    sl_kv_store_get_stats(f->s, &ss);
    cr_assert_eq(ss.ram_budget, INT64_C(256) << 20);
    cr_assert_leq(ss.ram_bytes, ss.ram_budget);
    cr_assert_eq(ss.capacity, INT64_C(1) << 20);
    f->p.ram_budget = INT64_C(16) << 20;
    fx_reopen(f, &sh);
    sl_kv_store_get_stats(f->s, &ss);
    cr_assert_leq(ss.ram_bytes, INT64_C(16) << 20, "ram_bytes %lld", (long long)ss.ram_bytes);
    OK(kvt_check_all(f->s, &f->r));
    fx_done(f);
}

/* ---- host memory options ---------------------------------------------------------------------- */
struct reg_log {
    int fail, n_reg, n_unreg;
    void *reg[64];
    size_t bytes;
    bool bad_user, unknown_unreg;
};

static int reg_fn(void *ptr, size_t bytes, void *user) {
    struct reg_log *g = user;
    if (!g || g->n_reg >= 64) return -1;
    if (g->fail) return -1;
    g->reg[g->n_reg++] = ptr;
    g->bytes += bytes;
    return 0;
}

static void unreg_fn(void *ptr, void *user) {
    struct reg_log *g = user;
    bool found = false;
    for (int i = 0; i < g->n_reg; i++) found |= g->reg[i] == ptr;
    if (!found) g->unknown_unreg = true;
    g->n_unreg++;
}

Test(kv_store, host_register_hooks, .timeout = 60) {
    for (int fail = 0; fail < 2; fail++) {
        struct fx fx, *f = &fx;
        memset(f, 0, sizeof *f);
        f->t = &kvt_tiers[KVT_HOST];
        f->rng = 5;
        struct reg_log log = {.fail = fail};
        f->p = kvt_params(f->t, 500, NULL);
        f->p.host_register = reg_fn;
        f->p.host_unregister = unreg_fn;
        f->p.host_user = &log;
        f->p.mlock = true;  /* may fall back: RLIMIT_MEMLOCK is small here */
        f->p.numa_node = 0; /* node 0 exists everywhere */
        kvt_ref_init(&f->r, &SHAPE_A, 500);
        OK(sl_kv_store_create(&SHAPE_A, &f->p, &f->s));
        OK(kvt_fill(f->s, &f->r, 400, &f->rng)); /* memory may be mapped on first use */
        struct sl_kv_store_stats st;
        sl_kv_store_get_stats(f->s, &st);
        if (!fail) {
            cr_assert(log.n_reg >= 1 && st.pinned, "host tier memory was not registered: %d calls, pinned %d",
                      log.n_reg, st.pinned);
            cr_assert_geq((int64_t)log.bytes, 500 * sl_kv_shape_bytes_per_token(&SHAPE_A));
        } else {
            cr_assert(!st.pinned, "pinned reported although registration failed");
        }
        OK(kvt_check_all(f->s, &f->r));
        OK(kvt_check_gather_random(f->s, &f->r, 100, &f->rng));
        OK(sl_kv_store_close(f->s));
        cr_assert_eq(log.n_unreg, log.n_reg, "%d registrations, %d unregistrations", log.n_reg,
                     log.n_unreg);
        cr_assert(!log.unknown_unreg, "unregister called on memory never registered");
        fx_done(f);
    }
}

/* ---- direct addressing of host-tier blocks (storage/kv-host-map.h) ---------------------------- */

/* Every committed row read through the block address formula equals the row
 * sl_kv_store_read_range returns, across two segments and into the partial last block; the
 * file tier refuses; truncate changes the epoch. */
Test(kv_store, host_map_addresses_every_row, .timeout = 60) {
    struct fx fx, *f = &fx;
    /* Segments hold ~32 MiB: 17000 positions of SHAPE_A span two (1024 blocks = 16384 each)
     * of the three a capacity of 40000 needs. */
    fx_create(f, KVT_HOST, &SHAPE_A, 40000);
    OK(kvt_fill(f->s, &f->r, 17000 + 5, &f->rng));
    struct sl_kv_host_map m;
    OK(sl_kv_store_host_map(f->s, &m));
    const int64_t n = f->r.n, T = m.block_tokens, row = m.row_bytes;
    cr_assert_eq(m.block_bytes, 2 * T * row);
    cr_assert_eq(INT64_C(1) << m.block_shift, T);
    cr_assert_eq(m.head_dim * 2, row);
    int64_t last_seg = sl_kv_host_map_segment(&m, (n - 1) / T);
    cr_assert_geq(last_seg, 1, "the fixture should span two segments (seg_shift %d)", m.seg_shift);
    cr_assert_lt(last_seg, m.n_segs);
    uint8_t *k = malloc((size_t)(n * row)), *v = malloc((size_t)(n * row));
    cr_assert(k && v);
    for (int32_t l = 0; l < m.n_layer; l++)
        for (int32_t h = 0; h < m.n_head_kv; h++) {
            OK(sl_kv_store_read_range(f->s, l, h, 0, n, k, v));
            for (int64_t p = 0; p < n; p++) {
                int64_t b = p / T, r = p % T;
                struct sl_kv_host_segment seg;
                OK(sl_kv_store_host_segment(f->s, sl_kv_host_map_segment(&m, b), &seg));
                cr_assert_not_null(seg.ptr, "segment of committed position %lld not mapped",
                                   (long long)p);
                int64_t off = sl_kv_host_map_offset(&m, l, b, h);
                cr_assert_leq(off + m.block_bytes, m.seg_bytes);
                cr_assert_leq((size_t)(off + m.block_bytes), seg.bytes);
                const uint8_t *blk = (const uint8_t *)seg.ptr + off;
                cr_assert(!memcmp(blk + r * row, k + p * row, (size_t)row),
                          "K of layer %d head %d position %lld", l, h, (long long)p);
                cr_assert(!memcmp(blk + (T + r) * row, v + p * row, (size_t)row),
                          "V of layer %d head %d position %lld", l, h, (long long)p);
            }
        }
    free(k);
    free(v);
    struct sl_kv_host_segment seg;
    EXPECT_RC(sl_kv_store_host_segment(f->s, m.n_segs, &seg), SL_EBOUNDS);
    EXPECT_RC(sl_kv_store_host_segment(f->s, -1, &seg), SL_EBOUNDS);
    OK(sl_kv_store_host_segment(f->s, m.n_segs - 1, &seg));
    cr_assert_null(seg.ptr, "a segment no position reached is mapped");
    uint64_t e0 = sl_kv_store_epoch(f->s);
    OK(kvt_truncate(f->s, &f->r, n - 3));
    cr_assert_neq(sl_kv_store_epoch(f->s), e0, "truncate left the epoch unchanged");
    OK(sl_kv_store_close(f->s));
    EXPECT_RC(sl_kv_store_host_map(f->s, &m), SL_ECLOSED);
    fx_done(f);

    fx_create(f, KVT_FILE_URING_BUFFERED, &SHAPE_B, 100);
    EXPECT_RC(sl_kv_store_host_map(f->s, &m), SL_EUNSUPPORTED);
    EXPECT_RC(sl_kv_store_host_segment(f->s, 0, &seg), SL_EUNSUPPORTED);
    fx_done(f);
}
