/* KV store under I/O failure: injected faults at every call site (params.fault), a real
 * file-size limit, a full disk and failing reads, and closed handles. The invariants: every call
 * returns 0 or a negative error, wrong data is never returned, and what the last successful sync
 * covered survives. Damage to the file on disk and bad arguments are in test-kv-corrupt.c. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "tests/kv-fault-fixture.h"
#include "tests/kv-test-util.h"

TestSuite(kv_faults, .fini = kvt_cleanup);

/* 0 or a negative error: never a positive value, never a data mismatch (kvt_* return 1/2). */
#define CLEAN(expr)                                                                            \
    ({                                                                                         \
        int rc_ = (expr);                                                                      \
        cr_assert(rc_ <= 0, "%s: %s -> %d (%s)", ctx, #expr, rc_, kvt_msg());                  \
        if (rc_ < 0) g_failures++;                                                             \
        rc_;                                                                                   \
    })

static int64_t g_failures; /* calls that returned an error, counted by CLEAN */

static const char *op_name[] = {"OPEN", "READ", "WRITE", "SYNC", "RESIZE"};

/* ---- fault enumeration --------------------------------------------------------------------- */
/* Scenario: phase 1 = create, append+commit 40, sync, append+commit 30, gather, sync, close;
 * phase 2 = open, gather, append+commit 10, sync, gather, close. A fault is injected in one
 * phase; afterwards the file is reopened without faults and checked against the reference. */
struct scen {
    bool created;
    int64_t synced; /* positions the last successful sync (or close) covered */
    bool frozen;    /* a discard failed: the pending state is unknown, stop appending */
    struct kvt_ref r;
};

static void chunk(sl_kv_store_t s, struct scen *o, int64_t n, uint64_t *rng) {
    if (o->frozen) return;
    for (int32_t l = 0; l < o->r.shape.n_layer; l++) {
        int rc = CLEAN(kvt_append(s, &o->r, l, l ? n : n / 2, rng));
        if (!l && rc == 0) rc = CLEAN(kvt_append(s, &o->r, l, n - n / 2, rng));
        if (rc < 0) {
            if (CLEAN(kvt_discard(s, &o->r)) < 0) o->frozen = true;
            return;
        }
    }
    if (CLEAN(kvt_commit(s, &o->r, n, true, rng)) < 0 && CLEAN(kvt_discard(s, &o->r)) < 0)
        o->frozen = true;
    cr_assert_eq(sl_kv_store_n_tokens(s), o->r.n, "%s: n_tokens after a chunk", ctx);
}

static void gather_check(sl_kv_store_t s, struct scen *o, uint64_t *rng) {
    int rc = CLEAN(kvt_check_gather_random(s, &o->r, 20, rng));
    (void)rc; /* an error is allowed under faults; wrong data is not (kvt returns 1) */
}

static void sync_step(sl_kv_store_t s, struct scen *o) {
    if (CLEAN(sl_kv_store_sync(s)) == 0) o->synced = o->r.n;
}

static void close_step(sl_kv_store_t s, struct scen *o) {
    if (CLEAN(sl_kv_store_close(s)) == 0) o->synced = o->r.n;
    sl_kv_store_free(s);
}

static void scenario(const char *dir, const struct kvt_tier *t, struct sl_kv_io_fault *f1,
                     struct sl_kv_io_fault *f2, struct scen *o) {
    char *path = kvt_join(dir, "s.kv");
    struct sl_kv_store_params p = kvt_params(t, 96, path);
    uint64_t rng = 42;
    memset(o, 0, sizeof *o);
    kvt_ref_init(&o->r, &SH, 96);
    sl_kv_store_t s = NULL;
    p.fault = f1;
    if (CLEAN(sl_kv_store_create(&SH, &p, &s)) < 0) {
        cr_assert(!kvt_exists(path), "%s: failed create left the store file", ctx);
        cr_assert_eq(kvt_dir_entries(dir), 0, "%s: failed create left a file in the directory", ctx);
        free(path);
        return;
    }
    o->created = true;
    chunk(s, o, 40, &rng);
    sync_step(s, o);
    chunk(s, o, 30, &rng);
    gather_check(s, o, &rng);
    sync_step(s, o);
    close_step(s, o);
    p.fault = f2;
    s = NULL;
    if (CLEAN(sl_kv_store_open(&SH, &p, &s)) == 0) {
        int64_t n = sl_kv_store_n_tokens(s);
        cr_assert(n >= o->synced && n <= o->r.n, "%s: reopened n_tokens %lld not in [%lld, %lld]",
                  ctx, (long long)n, (long long)o->synced, (long long)o->r.n);
        o->r.n = n; /* data is append-only here: the reference prefix stays valid */
        o->synced = n;
        o->frozen = false;
        gather_check(s, o, &rng);
        chunk(s, o, 10, &rng);
        sync_step(s, o);
        gather_check(s, o, &rng);
        close_step(s, o);
    } else {
        sl_kv_store_free(s);
    }
    free(path);
}

/* Reopens without faults: what the last sync covered is there, and exactly the reference. */
static void verify(const char *dir, struct scen *o) {
    char *path = kvt_join(dir, "s.kv");
    if (o->created) {
        struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_PREAD], 96, path);
        sl_kv_store_t s = must_open(&SH, &p);
        int64_t n = sl_kv_store_n_tokens(s);
        cr_assert(n >= o->synced && n <= o->r.n, "%s: n_tokens %lld after reopen, synced %lld, committed %lld",
                  ctx, (long long)n, (long long)o->synced, (long long)o->r.n);
        o->r.n = n;
        OK(kvt_check_all(s, &o->r));
        uint64_t rng = 7;
        OK(kvt_check_gather_random(s, &o->r, 30, &rng));
        sl_kv_store_free(s);
    }
    kvt_ref_free(&o->r);
    kvt_rmtree(dir);
    mkdir(dir, 0700);
    free(path);
}

static void enumerate(enum sl_kv_io_op op, int tier, const int *errs, int n_errs) {
    const struct kvt_tier *t = &kvt_tiers[tier];
    char *dir = kvt_tmpdir();
    struct sl_kv_io_fault f1 = {op, -1, 0, false, {0}}, f2 = f1;
    struct scen o;
    snprintf(ctx, sizeof ctx, "[%s] no fault", t->name);
    scenario(dir, t, &f1, &f2, &o);
    cr_assert(o.created && o.r.n == 80 && o.synced == 80, "fault-free scenario did not complete");
    verify(dir, &o);
    cr_assert_eq(g_failures, 0, "the fault-free scenario had failing calls");
    int64_t calls[2] = {f1.calls[op], f2.calls[op]};
    cr_log_info("[%s] %s calls: phase 1 %lld, phase 2 %lld", t->name, op_name[op],
                (long long)calls[0], (long long)calls[1]);
    if (op == SL_KV_IO_WRITE || op == SL_KV_IO_SYNC || op == SL_KV_IO_OPEN)
        cr_assert(calls[0] > 0 && calls[1] > 0, "%s never counted", op_name[op]);
    if (op == SL_KV_IO_READ) cr_assert_gt(calls[1], 0, "reads after reopen never counted");
    for (int phase = 0; phase < 2; phase++)
        for (int64_t k = 0; k < calls[phase]; k++)
            for (int e = 0; e < n_errs; e++)
                for (int pers = 0; pers < 2; pers++) {
                    struct sl_kv_io_fault none = {op, -1, 0, false, {0}};
                    struct sl_kv_io_fault inj = {op, k, errs[e], pers, {0}};
                    snprintf(ctx, sizeof ctx, "[%s] %s fault at call %lld of phase %d, err %d%s",
                             t->name, op_name[op], (long long)k, phase + 1, errs[e],
                             pers ? " persistent" : "");
                    int64_t before = g_failures;
                    scenario(dir, t, phase ? &none : &inj, phase ? &inj : &none, &o);
                    if (errs[e] != 0) /* short transfers may be completed by retrying */
                        cr_assert_gt(g_failures, before, "%s: the injected fault surfaced nowhere", ctx);
                    verify(dir, &o);
                }
    kvt_rmtree(dir);
    free(dir);
}

static const int k_errs[] = {-EIO, -ENOSPC, 0};

Test(kv_faults, every_open, .timeout = 120) { enumerate(SL_KV_IO_OPEN, KVT_FILE_URING_DIRECT, k_errs, 3); }
Test(kv_faults, every_read, .timeout = 120) { enumerate(SL_KV_IO_READ, KVT_FILE_URING_DIRECT, k_errs, 3); }
Test(kv_faults, every_write, .timeout = 120) { enumerate(SL_KV_IO_WRITE, KVT_FILE_URING_DIRECT, k_errs, 3); }
Test(kv_faults, every_sync, .timeout = 120) { enumerate(SL_KV_IO_SYNC, KVT_FILE_URING_DIRECT, k_errs, 3); }
Test(kv_faults, every_resize, .timeout = 120) { enumerate(SL_KV_IO_RESIZE, KVT_FILE_URING_DIRECT, k_errs, 3); }
Test(kv_faults, every_read_pread, .timeout = 120) { enumerate(SL_KV_IO_READ, KVT_FILE_PREAD, k_errs, 1); }
Test(kv_faults, every_write_pread, .timeout = 120) { enumerate(SL_KV_IO_WRITE, KVT_FILE_PREAD, k_errs, 1); }

/* Disk full while appending: the failing call reports -ENOSPC, nothing committed changes, and
 * once space is back (the fault hits one call only) discard + re-append + commit works. */
KVT_TIER_TEST(kv_faults, enospc_then_recover, kvt_file_tiers) {
    const struct kvt_tier *t = &kvt_tiers[*ti];
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.kv");
    struct sl_kv_io_fault f = {SL_KV_IO_WRITE, -1, -ENOSPC, false, {0}};
    int64_t w_base = 0, fail_step = -1;
    for (int run = 0; run < 2; run++) {
        snprintf(ctx, sizeof ctx, "[%s] %s run", t->name, run ? "fault" : "counting");
        struct sl_kv_store_params p = kvt_params(t, 200, path);
        p.overwrite = true;
        p.fault = &f;
        memset(f.calls, 0, sizeof f.calls);
        f.nth = run ? w_base : -1;
        struct kvt_ref r;
        kvt_ref_init(&r, &SH, 200);
        uint64_t rng = 3;
        sl_kv_store_t s = NULL;
        OK(sl_kv_store_create(&SH, &p, &s));
        OK(kvt_fill(s, &r, 40, &rng));
        OK(sl_kv_store_sync(s));
        if (!run) w_base = f.calls[SL_KV_IO_WRITE];
        /* steps 0, 1: appends of 40 (fills blocks); 2: commit; 3: sync */
        int rc = 0, step;
        for (step = 0; step < 4 && rc == 0; step++) {
            rc = step < 2 ? kvt_append(s, &r, step, 40, &rng)
               : step == 2 ? kvt_commit(s, &r, 40, true, &rng) : sl_kv_store_sync(s);
            if (!run && fail_step < 0 && f.calls[SL_KV_IO_WRITE] > w_base) fail_step = step;
        }
        if (!run) {
            cr_assert_eq(rc, 0);
            cr_assert_geq(fail_step, 0, "no write after the first sync");
            sl_kv_store_free(s);
            kvt_ref_free(&r);
            continue;
        }
        cr_assert_eq(step - 1, fail_step, "%s: failure in step %d, the first write is in step %lld",
                     ctx, step - 1, (long long)fail_step);
        EXPECT_RC(rc, -ENOSPC);
        cr_log_info("%s: -ENOSPC from %s", ctx, (const char *[]){"append", "append", "commit", "sync"}[fail_step]);
        if (fail_step < 3) { /* append or commit failed: nothing changed */
            cr_assert_eq(sl_kv_store_n_tokens(s), 40);
            OK(kvt_check_all(s, &r));
            OK(kvt_discard(s, &r));
            for (int32_t l = 0; l < 2; l++) OK(kvt_append(s, &r, l, 40, &rng));
            OK(kvt_commit(s, &r, 40, true, &rng));
        } else { /* writes deferred to sync: committed rows stay readable, a retry succeeds */
            cr_assert_eq(sl_kv_store_n_tokens(s), 80);
            OK(kvt_check_all(s, &r));
        }
        OK(sl_kv_store_sync(s));
        OK(kvt_check_all(s, &r));
        OK(sl_kv_store_close(s));
        sl_kv_store_free(s);
        p.fault = NULL;
        s = must_open(&SH, &p);
        OK(kvt_check_all(s, &r));
        sl_kv_store_free(s);
        kvt_ref_free(&r);
    }
    kvt_rmtree(dir);
    free(dir);
    free(path);
}

/* Reads that fail after reopen (cold cache): errors, never wrong data, never a poisoned cache. */
KVT_TIER_TEST(kv_faults, failing_reads, kvt_file_tiers) {
    const struct kvt_tier *t = &kvt_tiers[*ti];
    char *dir = kvt_tmpdir();
    struct kvt_ref r;
    char *path = make_store(dir, "s.kv", &SH, 200, 150, &r, 11);
    struct sl_kv_io_fault f = {SL_KV_IO_READ, -1, 0, false, {0}};
    struct sl_kv_store_params p = kvt_params(t, 0, path);
    p.fault = &f;
    snprintf(ctx, sizeof ctx, "[%s] counting", t->name);
    sl_kv_store_t s = must_open(&SH, &p);
    int64_t r0 = f.calls[SL_KV_IO_READ];
    sl_kv_store_free(s);
    struct { int err; bool persistent; } cases[] = {{0, true}, {-EIO, true}, {-EIO, false}, {0, false}};
    uint64_t rng = 1;
    for (int c = 0; c < 4; c++) {
        snprintf(ctx, sizeof ctx, "[%s] read fault err %d%s", t->name, cases[c].err,
                 cases[c].persistent ? " persistent" : "");
        f = (struct sl_kv_io_fault){SL_KV_IO_READ, r0, cases[c].err, cases[c].persistent, {0}};
        s = must_open(&SH, &p);
        /* full blocks only (positions < 144), so the data must come from the file */
        struct kvt_gset gs = {0};
        int64_t idx[32];
        for (int i = 0; i < 32; i++) idx[i] = kvt_rand_below(&rng, 144);
        for (int32_t l = 0; l < 2; l++)
            for (int32_t h = 0; h < 2; h++) kvt_gset_add(&gs, &r, l, h, idx, 0, 32);
        int rc = sl_kv_store_gather(s, gs.g, gs.n);
        if (cases[c].persistent) {
            cr_assert(rc < 0, "%s: gather succeeded although every read fails", ctx);
            uint16_t k[16 * 32], v[16 * 32];
            cr_assert_lt(sl_kv_store_read_range(s, 1, 1, 16, 16, k, v), 0, "%s: read_range", ctx);
        } else {
            cr_assert(rc <= 0);
            if (rc == 0) OK(kvt_gset_check(&gs, &r));
            for (int i = 0; i < 2; i++) { /* the failed block was not cached as valid */
                for (int32_t j = 0; j < gs.n; j++) {
                    memset(gs.g[j].k_out, KVT_SENTINEL, 32 * 64);
                    memset(gs.g[j].v_out, KVT_SENTINEL, 32 * 64);
                }
                OK(sl_kv_store_gather(s, gs.g, gs.n));
                OK(kvt_gset_check(&gs, &r));
            }
            OK(kvt_check_all(s, &r));
        }
        kvt_gset_free(&gs);
        sl_kv_store_free(s);
    }
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir);
    free(path);
}

/* A real file-size limit (RLIMIT_FSIZE) set just below the next data block: -EFBIG, cleanly. */
Test(kv_faults, file_size_limit, .timeout = 60) {
    snprintf(ctx, sizeof ctx, "[rlimit]");
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.kv");
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_URING_DIRECT], 96, path);
    struct kvt_ref r;
    kvt_ref_init(&r, &SH, 96);
    uint64_t rng = 5;
    sl_kv_store_t s = NULL;
    OK(sl_kv_store_create(&SH, &p, &s));
    OK(kvt_fill(s, &r, 40, &rng)); /* blocks 0, 1 full; 8 positions in the tail */
    OK(sl_kv_store_sync(s));
    struct kvt_layout L;
    kvt_layout_of(&SH, 96, &L);
    struct rlimit old, lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_IGN);
    lim.rlim_cur = (rlim_t)kvt_block_off(&L, &SH, 0, 2, 0);
    lim.rlim_max = old.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = 0;
    for (int32_t l = 0; l < 2 && rc == 0; l++) rc = CLEAN(kvt_append(s, &r, l, 30, &rng));
    if (rc == 0) {
        rc = CLEAN(kvt_commit(s, &r, 30, true, &rng));
        if (rc == 0) rc = CLEAN(sl_kv_store_sync(s));
        else cr_assert_eq(sl_kv_store_n_tokens(s), 40);
    }
    EXPECT_RC(rc, -EFBIG);
    cr_log_info("n_tokens %lld after -EFBIG", (long long)sl_kv_store_n_tokens(s));
    OK(kvt_check_all(s, &r));
    lim.rlim_cur = old.rlim_cur;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    CLEAN(kvt_discard(s, &r));
    CLEAN(sl_kv_store_close(s));
    sl_kv_store_free(s);
    s = must_open(&SH, &p);
    int64_t n = sl_kv_store_n_tokens(s);
    cr_assert(n == 40 || n == r.n, "n_tokens %lld after reopen", (long long)n);
    r.n = n;
    OK(kvt_check_all(s, &r));
    OK(kvt_fill(s, &r, 30, &rng)); /* space is back */
    OK(sl_kv_store_close(s));
    sl_kv_store_free(s);
    s = must_open(&SH, &p);
    OK(kvt_check_all(s, &r));
    sl_kv_store_free(s);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir);
    free(path);
}

KVT_TIER_TEST(kv_faults, closed_handle, kvt_all_tiers) {
    const struct kvt_tier *t = &kvt_tiers[*ti];
    snprintf(ctx, sizeof ctx, "[%s] closed", t->name);
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.kv");
    struct sl_kv_store_params p = kvt_params(t, 96, path);
    struct kvt_ref r;
    kvt_ref_init(&r, &SH, 96);
    uint64_t rng = 9;
    sl_kv_store_t s = NULL;
    OK(sl_kv_store_create(&SH, &p, &s));
    OK(kvt_fill(s, &r, 50, &rng));
    struct kvt_gset gs = {0};
    kvt_gset_add(&gs, &r, 1, 1, NULL, 0, 50);
    sl_kv_ticket_t t1;
    OK(sl_kv_store_gather_submit(s, gs.g, gs.n, &t1)); /* left in flight across close */
    OK(sl_kv_store_close(s));
    uint16_t k[32], v[32];
    uint32_t tag;
    EXPECT_RC(sl_kv_store_close(s), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_append(s, 0, 1, k, v), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_commit(s, 1, NULL), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_discard(s), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_truncate(s, 0), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_sync(s), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_read_tags(s, 0, 1, &tag), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_read_range(s, 0, 0, 0, 1, k, v), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_gather(s, gs.g, gs.n), SL_ECLOSED);
    sl_kv_ticket_t t2;
    EXPECT_RC(sl_kv_store_gather_submit(s, gs.g, gs.n, &t2), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_gather_poll(s, t1), SL_ECLOSED);
    EXPECT_RC(sl_kv_store_gather_wait(s, t1), SL_ECLOSED);
    struct sl_kv_store_stats st;
    struct sl_kv_shape sh;
    sl_kv_store_get_stats(s, &st); /* must not crash */
    sl_kv_store_shape(s, &sh);
    sl_kv_store_reset_counters(s);
    (void)sl_kv_store_n_tokens(s);
    (void)sl_kv_store_capacity(s);
    sl_kv_store_free(s);
    sl_kv_store_free(NULL);
    if (t->tier == SL_KV_TIER_FILE) { /* close synced */
        s = must_open(&SH, &p);
        OK(kvt_check_all(s, &r));
        sl_kv_store_free(s); /* free without close closes */
        s = must_open(&SH, &p);
        OK(kvt_check_all(s, &r));
        sl_kv_store_free(s);
    }
    kvt_gset_free(&gs);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir);
    free(path);
}
