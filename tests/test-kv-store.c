/* KV store (include/spotlight/kv-store.h): round trips, gathers, tickets, concurrent gathers,
 * the cache budget, commit semantics and the host tier's memory options, checked against a
 * plain reference model (tests/kv-test-util.c) on every tier: host, file with io_uring +
 * O_DIRECT, file with io_uring buffered, and file through pread. Persistence and the on-disk
 * layout are in test-kv-persist.c; faults and corruption in test-kv-faults.c and
 * test-kv-corrupt.c. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "storage/kv-host-map.h"
#include "tests/kv-store-fixture.h"
#include "tests/kv-test-util.h"

TestSuite(kv_store, .fini = kvt_cleanup);

KVT_TIER_TEST(kv_store, create_and_query, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, round_trip_shapes, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, gather_index_sets, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, many_tickets_in_flight, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, in_flight_limit_256, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, tiny_cache_budget, kvt_file_tiers) {
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

KVT_TIER_TEST(kv_store, concurrent_gathers, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, capacity_limit, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, commit_needs_every_layer, kvt_all_tiers) {
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
KVT_TIER_TEST(kv_store, large_prefill_chunk, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, discard_and_reappend, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, tags_round_trip, kvt_all_tiers) {
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

KVT_TIER_TEST(kv_store, truncate_then_append, kvt_all_tiers) {
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
