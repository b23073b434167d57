/* KV store files damaged on disk (bit flips in data, checksums, tail regions and headers;
 * truncation; files that are not stores, lie in their headers or belong to another owner) and
 * bad arguments to every call. The invariants: a damaged block reads as SL_ECORRUPT, never as
 * wrong data; a damaged newer header falls back to the older synced state; a rejected call
 * changes nothing and leaves nothing behind. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "storage/crc32c.h"
#include "storage/kv-format.h"
#include "tests/kv-fault-fixture.h"
#include "tests/kv-test-util.h"

TestSuite(kv_corrupt, .fini = kvt_cleanup);
TestSuite(kv_badinput, .fini = kvt_cleanup);

/* ---- corruption on disk --------------------------------------------------------------------- */

KVT_TIER_TEST(kv_corrupt, data_block_bit_flip, kvt_file_tiers) {
    const struct kvt_tier *t = &kvt_tiers[*ti];
    snprintf(ctx, sizeof ctx, "[%s] flipped data", t->name);
    char *dir = kvt_tmpdir();
    struct kvt_ref r;
    char *path = make_store(dir, "s.kv", &SH4K, 200, 150, &r, 21); /* 9 full blocks */
    struct kvt_layout L;
    kvt_layout_of(&SH4K, 200, &L);
    /* K row 5 of (layer 1, block 3, head 0); V row 3 of (layer 0, block 7, head 1) */
    cr_assert_eq(kvt_flip_bit(path, kvt_block_off(&L, &SH4K, 1, 3, 0) + 5 * 128 + 17, 3), 0);
    cr_assert_eq(kvt_flip_bit(path, kvt_block_off(&L, &SH4K, 0, 7, 1) + 19 * 128 + 1, 6), 0);
    struct sl_kv_store_params p = kvt_params(t, 0, path);
    sl_kv_store_t s = must_open(&SH4K, &p);
    uint16_t k[200 * 64], v[200 * 64];
    for (int i = 0; i < 2; i++) { /* twice: a bad block is not cached as good */
        EXPECT_RC(sl_kv_store_read_range(s, 1, 0, 48, 16, k, v), SL_ECORRUPT);
        EXPECT_RC(sl_kv_store_read_range(s, 1, 0, 40, 9, k, v), SL_ECORRUPT); /* row 0 only */
        EXPECT_RC(sl_kv_store_read_range(s, 0, 1, 0, 150, k, v), SL_ECORRUPT);
        struct kvt_gset gs = {0};
        kvt_gset_add(&gs, &r, 0, 0, NULL, 0, 150);
        kvt_gset_add(&gs, &r, 1, 0, (int64_t[]){3, 63, 100}, 0, 3);
        EXPECT_RC(sl_kv_store_gather(s, gs.g, gs.n), SL_ECORRUPT);
        kvt_gset_free(&gs);
        kvt_gset_add(&gs, &r, 0, 1, (int64_t[]){127, 112}, 0, 2);
        EXPECT_RC(sl_kv_store_gather(s, gs.g, gs.n), SL_ECORRUPT);
        kvt_gset_free(&gs);
    }
    /* everything else reads back exactly */
    OK(kvt_check_range(s, &r, 1, 0, 0, 48));
    OK(kvt_check_range(s, &r, 1, 0, 64, 86));
    OK(kvt_check_range(s, &r, 0, 1, 0, 112));
    OK(kvt_check_range(s, &r, 0, 1, 128, 22));
    OK(kvt_check_range(s, &r, 0, 0, 0, 150));
    OK(kvt_check_range(s, &r, 1, 1, 0, 150));
    struct kvt_gset gs = {0};
    kvt_gset_add(&gs, &r, 1, 0, (int64_t[]){47, 64, 0, 149}, 0, 4);
    kvt_gset_add(&gs, &r, 0, 1, NULL, 128, 22);
    OK(sl_kv_store_gather(s, gs.g, gs.n));
    OK(kvt_gset_check(&gs, &r));
    kvt_gset_free(&gs);
    sl_kv_store_free(s);
    /* a damaged checksum entry is a mismatch too */
    int64_t e = ((int64_t)1 * L.n_blocks + 5) * SH4K.n_head_kv + 1; /* (layer 1, block 5, head 1) */
    cr_assert_eq(kvt_flip_bit(path, L.crc_off + 4 * e + 2, 0), 0);
    s = must_open(&SH4K, &p);
    EXPECT_RC(sl_kv_store_read_range(s, 1, 1, 80, 1, k, v), SL_ECORRUPT);
    OK(kvt_check_range(s, &r, 1, 1, 96, 54));
    sl_kv_store_free(s);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir);
    free(path);
}

/* Two syncs (70, then 100 positions, both with a partial last block), then a crash copy with
 * the newer slot's tail region or header damaged: the older state, exactly, or SL_ECORRUPT.
 * Returns the copy's current header slot (holding 100 positions); *n_old: what the other holds. */
static int two_sync_copy(const char *dir, const char *name, struct kvt_ref *r, char **copy, int64_t *n_old) {
    char *path = kvt_join(dir, "s.kv");
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_URING_DIRECT], 200, path);
    uint64_t rng = 31;
    kvt_ref_init(r, &SH4K, 200);
    sl_kv_store_t s = NULL;
    OK(sl_kv_store_create(&SH4K, &p, &s));
    OK(kvt_fill(s, r, 70, &rng));
    OK(sl_kv_store_sync(s));
    OK(kvt_fill(s, r, 30, &rng));
    OK(sl_kv_store_sync(s));
    *copy = kvt_join(dir, name);
    cr_assert_eq(kvt_copy_file(path, *copy), 0);
    sl_kv_store_free(s);
    free(path);
    uint8_t hs[8192];
    cr_assert_eq(kvt_read_slots(*copy, hs), 0);
    int slot = kvt_current_slot(hs);
    cr_assert(slot >= 0 && kvt_slot_valid(hs + 4096 * (1 - slot)), "two valid slots after two syncs");
    *n_old = (int64_t)kvt_le64(hs + 4096 * (1 - slot) + 56);
    cr_assert(kvt_le64(hs + 4096 * slot + 56) == 100 && *n_old < 100);
    return slot;
}

static void expect_older_state(const char *copy, struct kvt_ref *r, int64_t n_old, bool may_fail) {
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_URING_DIRECT], 0, copy);
    sl_kv_store_t s = NULL;
    int rc = sl_kv_store_open(&SH4K, &p, &s);
    if (may_fail && rc == SL_ECORRUPT) {
        cr_log_info("%s: open refused with SL_ECORRUPT", ctx);
        return;
    }
    cr_assert_eq(rc, 0, "%s: open: %s (%s)", ctx, sl_strerror(rc), sl_error_detail());
    cr_assert_eq(sl_kv_store_n_tokens(s), n_old, "%s: n_tokens %lld, the older slot holds %lld", ctx,
                 (long long)sl_kv_store_n_tokens(s), (long long)n_old);
    r->n = n_old;
    OK(kvt_check_all(s, r));
    sl_kv_store_free(s);
}

Test(kv_corrupt, damaged_tail_region, .timeout = 60) {
    snprintf(ctx, sizeof ctx, "[tail flip]");
    char *dir = kvt_tmpdir(), *copy;
    struct kvt_ref r;
    int64_t n_old;
    int slot = two_sync_copy(dir, "copy", &r, &copy, &n_old);
    struct kvt_layout L;
    kvt_layout_of(&SH4K, 200, &L);
    /* byte 0 of the region: the first K element of a partial block's first position */
    cr_assert_eq(kvt_flip_bit(copy, L.tail_off[slot], 4), 0);
    expect_older_state(copy, &r, n_old, true);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir);
    free(copy);
}

static sl_kv_store_t open_flags(const char *path, bool recover, bool read_only, int *rc) {
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_URING_DIRECT], 0, path);
    p.recover = recover;
    p.read_only = read_only;
    sl_kv_store_t s = NULL;
    sl_error_clear();
    *rc = sl_kv_store_open(&SH4K, &p, &s);
    return s;
}

/* One bit of every header field of the current slot flipped (and two bits, beyond one-bit
 * repair): never a silent fallback. A writer is refused with a detail naming both generations
 * and their positions, and the file is left as it was; read-only reads the older state;
 * recover restores the newer one from the one-bit repair (after which the store opens plainly
 * again), or, past repair, goes back to the older state and overwrites the damaged slot. */
Test(kv_corrupt, damaged_header_field, .timeout = 60) {
    static const struct { int off, bit; const char *field; } flips[] = {
        {0, 0, "magic"}, {7, 6, "magic"}, {8, 1, "version"}, {12, 3, "header_bytes"}, {16, 0, "n_layer"},
        {20, 2, "n_head_kv"}, {24, 5, "head_dim"}, {28, 0, "dtype"}, {32, 4, "block_tokens"},
        {36, 7, "block_stride"}, {40, 1, "capacity"}, {48, 0, "generation"}, {48, 1, "generation"},
        {55, 7, "generation"}, {56, 0, "n_tokens"}, {57, 2, "n_tokens"}, {64, 3, "tail_off"},
        {72, 0, "crc_off"}, {80, 6, "tag_off"}, {88, 2, "data_off"}, {96, 1, "file_size"},
        {104, 0, "tail_crc"}, {108, 5, "tags_crc"}, {112, 0, "fingerprint"}, {143, 7, "fingerprint"},
        {144, 0, "head_check"}, {148, 0, "reserved"}, {2000, 3, "reserved"}, {4091, 7, "reserved"},
        {4092, 0, "header_crc"}, {4095, 7, "header_crc"},
    };
    char *dir = kvt_tmpdir(), *copy;
    struct kvt_ref r;
    int64_t n_old;
    int slot = two_sync_copy(dir, "orig", &r, &copy, &n_old);
    uint8_t hs[8192];
    cr_assert_eq(kvt_read_slots(copy, hs), 0);
    const uint64_t gen = kvt_le64(hs + 4096 * slot + 48);
    char *path = kvt_join(dir, "s.kv");
    char want_new[64], want_old[64];
    snprintf(want_new, sizeof want_new, "generation %llu, 100 positions", (unsigned long long)gen);
    snprintf(want_old, sizeof want_old, "generation %llu, %lld positions", (unsigned long long)gen - 1, (long long)n_old);
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        for (int two = 0; two < 2; two++) {
            snprintf(ctx, sizeof ctx, "[%s: bit %d of byte %d%s]", flips[i].field, flips[i].bit, flips[i].off,
                     two ? " and byte 1000" : "");
            cr_assert_eq(kvt_copy_file(copy, path), 0);
            cr_assert_eq(kvt_flip_bit(path, 4096 * slot + flips[i].off, flips[i].bit), 0);
            if (two) cr_assert_eq(kvt_flip_bit(path, 4096 * slot + 1000, 0), 0);
            uint8_t before[8192], after[8192];
            cr_assert_eq(kvt_read_slots(path, before), 0);
            int rc;
            sl_kv_store_t s = open_flags(path, false, false, &rc);
            cr_assert_eq(rc, SL_ECORRUPT, "%s: a writer opened it: %s", ctx, sl_strerror(rc));
            cr_assert(strstr(sl_error_detail(), want_old), "%s: detail lacks '%s': %s", ctx, want_old, sl_error_detail());
            if (!two)
                cr_assert(strstr(sl_error_detail(), want_new), "%s: detail lacks '%s': %s", ctx, want_new,
                          sl_error_detail());
            sl_kv_store_free(s);
            cr_assert_eq(kvt_read_slots(path, after), 0);
            cr_assert_arr_eq(before, after, sizeof before, "%s: a refused open changed the headers", ctx);
            s = open_flags(path, false, true, &rc);
            cr_assert_eq(rc, 0, "%s: read-only: %s (%s)", ctx, sl_strerror(rc), sl_error_detail());
            r.n = n_old;
            OK(kvt_check_all(s, &r));
            cr_assert_lt(sl_kv_store_sync(s), 0, "%s: read-only store synced", ctx);
            sl_kv_store_free(s);
            cr_assert_eq(kvt_read_slots(path, after), 0);
            cr_assert_arr_eq(before, after, sizeof before, "%s: a read-only open changed the headers", ctx);
            s = open_flags(path, true, false, &rc);
            cr_assert_eq(rc, 0, "%s: recover: %s (%s)", ctx, sl_strerror(rc), sl_error_detail());
            r.n = two ? n_old : 100;
            OK(kvt_check_all(s, &r));
            OK(sl_kv_store_close(s));
            sl_kv_store_free(s);
            s = open_flags(path, false, false, &rc); /* repaired for good: opens without asking */
            cr_assert_eq(rc, 0, "%s: after recover: %s (%s)", ctx, sl_strerror(rc), sl_error_detail());
            OK(kvt_check_all(s, &r));
            sl_kv_store_free(s);
        }
    }
    /* both slots damaged beyond repair: nothing to trust, even with recover */
    cr_assert_eq(kvt_copy_file(copy, path), 0);
    for (int sl = 0; sl < 2; sl++) {
        cr_assert_eq(kvt_flip_bit(path, 4096 * sl + 56, 0), 0);
        cr_assert_eq(kvt_flip_bit(path, 4096 * sl + 200, 1), 0);
    }
    int rc;
    sl_kv_store_free(open_flags(path, false, false, &rc));
    EXPECT_RC(rc, SL_ECORRUPT);
    sl_kv_store_free(open_flags(path, true, false, &rc));
    EXPECT_RC(rc, SL_ECORRUPT);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir);
    free(copy);
    free(path);
}

/* The older slot damaged: the newer (current) one is used as it is, and the next sync
 * rewrites the damaged one. */
Test(kv_corrupt, damaged_older_slot, .timeout = 60) {
    snprintf(ctx, sizeof ctx, "[older slot flip]");
    char *dir = kvt_tmpdir(), *copy;
    struct kvt_ref r;
    int64_t n_old;
    int slot = two_sync_copy(dir, "copy", &r, &copy, &n_old);
    cr_assert_eq(kvt_flip_bit(copy, 4096 * (1 - slot) + 56, 0), 0);
    int rc;
    sl_kv_store_t s = open_flags(copy, false, false, &rc);
    cr_assert_eq(rc, 0, "%s: %s", ctx, sl_error_detail());
    r.n = 100;
    OK(kvt_check_all(s, &r));
    sl_kv_store_free(s);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir);
    free(copy);
}

/* Rewrites every header slot that carries the magic through fn, fixing its CRC. */
static void patch_headers(const char *path, void (*fn)(uint8_t *h, void *u), void *u) {
    uint8_t hs[8192];
    cr_assert_eq(kvt_read_slots(path, hs), 0);
    for (int i = 0; i < 2; i++) {
        uint8_t *h = hs + 4096 * i;
        if (memcmp(h, "SLKVSTOR", 8)) continue;
        fn(h, u);
        kvt_put32(h + 144, kvt_fnv1a(h, 144));
        kvt_put32(h + 4092, kvt_crc32c(0, h, 4092));
    }
    cr_assert_eq(kvt_write_at(path, 0, hs, sizeof hs), 0);
}

static void set_u32(uint8_t *h, void *u) { kvt_put32(h + ((uint32_t *)u)[0], ((uint32_t *)u)[1]); }
static void set_u64(uint8_t *h, void *u) {
    uint64_t *a = u;
    kvt_put32(h + a[0], (uint32_t)a[1]);
    kvt_put32(h + a[0] + 4, (uint32_t)(a[1] >> 32));
}

static int open_rc(const char *path, const struct sl_kv_shape *sh, const uint8_t *fp) {
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_URING_DIRECT], 0, path);
    if (fp) memcpy(p.fingerprint, fp, 32);
    sl_kv_store_t s = NULL;
    sl_error_clear();
    int rc = sl_kv_store_open(sh, &p, &s);
    if (rc < 0) cr_assert(sl_error_detail()[0] != '\0', "open error %s without detail", sl_strerror(rc));
    sl_kv_store_free(s);
    return rc;
}

Test(kv_corrupt, truncated_file, .timeout = 60) {
    snprintf(ctx, sizeof ctx, "[truncated]");
    char *dir = kvt_tmpdir();
    struct kvt_ref r;
    char *path = make_store(dir, "s.kv", &SH4K, 200, 150, &r, 41);
    struct kvt_layout L;
    kvt_layout_of(&SH4K, 200, &L);
    cr_assert_eq(truncate(path, kvt_block_off(&L, &SH4K, 0, 2, 0)), 0);
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_URING_DIRECT], 0, path);
    sl_kv_store_t s = NULL;
    int rc = sl_kv_store_open(&SH4K, &p, &s);
    cr_log_info("open of the truncated file: %s", sl_strerror(rc));
    if (rc == 0) { /* then every read is right or an error */
        uint16_t k[150 * 64], v[150 * 64];
        for (int32_t l = 0; l < 2; l++)
            for (int32_t h = 0; h < 2; h++)
                for (int64_t p0 = 0; p0 < 150; p0 += 16) {
                    int64_t n = p0 + 16 <= 150 ? 16 : 150 - p0;
                    int rr = sl_kv_store_read_range(s, l, h, p0, n, k, v);
                    cr_assert(rr <= 0);
                    if (rr == 0) OK(kvt_check_range(s, &r, l, h, p0, n));
                }
    } else {
        EXPECT_RC(rc, SL_ETRUNCATED);
    }
    sl_kv_store_free(s);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir);
    free(path);
}

Test(kv_corrupt, foreign_and_lying_files, .timeout = 60) {
    snprintf(ctx, sizeof ctx, "[foreign]");
    char *dir = kvt_tmpdir();
    struct kvt_ref r;
    char *path = make_store(dir, "s.kv", &SH4K, 200, 100, &r, 51);
    cr_assert_eq(open_rc(path, &SH4K, NULL), 0);
    uint8_t fp[32];
    memcpy(fp, kvt_fingerprint, 32);
    fp[31] ^= 1;
    EXPECT_RC(open_rc(path, &SH4K, fp), SL_EMISMATCH);
    EXPECT_RC(open_rc(path, NULL, fp), SL_EMISMATCH);
    struct sl_kv_shape bad[5];
    for (int i = 0; i < 5; i++) bad[i] = SH4K;
    bad[0].n_layer = 3; bad[1].n_head_kv = 1; bad[2].head_dim = 32;
    bad[3].dtype = SL_KV_DTYPE_BF16; bad[4].block_tokens = 32;
    for (int i = 0; i < 5; i++) EXPECT_RC(open_rc(path, &bad[i], NULL), SL_ESHAPE);
    /* other files */
    char *junk = kvt_join(dir, "junk");
    uint8_t buf[65536];
    uint64_t rng = 77;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)kvt_rand(&rng);
    FILE *fj = fopen(junk, "w");
    fwrite(buf, 1, sizeof buf, fj);
    fclose(fj);
    EXPECT_RC(open_rc(junk, NULL, NULL), SL_EBADMAGIC);
    cr_assert_eq(truncate(junk, 0), 0);
    int rc = open_rc(junk, NULL, NULL);
    cr_assert(rc == SL_ETRUNCATED || rc == SL_EBADMAGIC, "empty file: %s", sl_strerror(rc));
    cr_assert_eq(truncate(junk, 8192), 0);
    EXPECT_RC(open_rc(junk, &SH4K, NULL), SL_EBADMAGIC);
    char *missing = kvt_join(dir, "missing");
    EXPECT_RC(open_rc(missing, &SH4K, NULL), -ENOENT);
    /* a lying header with a valid CRC */
    char *copy = kvt_join(dir, "copy");
    uint32_t ver[2] = {8, 3};
    cr_assert_eq(kvt_copy_file(path, copy), 0);
    patch_headers(copy, set_u32, ver);
    EXPECT_RC(open_rc(copy, &SH4K, NULL), SL_EVERSION);
    uint64_t lies[][2] = {{56, 201},          /* n_tokens > capacity */
                          {88, 8192},         /* data_off elsewhere */
                          {96, 1ull << 50},   /* file_size */
                          {48, 0}};           /* generation 0 */
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(kvt_copy_file(path, copy), 0);
        patch_headers(copy, set_u64, lies[i]);
        EXPECT_RC(open_rc(copy, &SH4K, NULL), SL_EFORMAT);
    }
    uint64_t more[2] = {56, 120}; /* more positions than were written: tags_crc no longer fits */
    cr_assert_eq(kvt_copy_file(path, copy), 0);
    patch_headers(copy, set_u64, more);
    rc = open_rc(copy, &SH4K, NULL);
    cr_assert(rc < 0, "a header claiming 120 positions (100 written) opened");
    /* host-tier params cannot open a file */
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_HOST], 0, NULL);
    p.path = path;
    sl_kv_store_t s = NULL;
    cr_assert_lt(sl_kv_store_open(&SH4K, &p, &s), 0);
    sl_kv_store_free(s);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir); free(path); free(junk); free(missing); free(copy);
}

/* ---- bad arguments ---------------------------------------------------------------------------- */

static int accept_reg(void *ptr, size_t bytes, void *user) { return 0; }

Test(kv_badinput, create_params, .timeout = 60) {
    snprintf(ctx, sizeof ctx, "[create]");
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.kv");
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_URING_DIRECT], 100, path);
    sl_kv_store_t s = NULL;
    EXPECT_RC(sl_kv_store_create(NULL, &p, &s), SL_EINVAL);
    EXPECT_RC(sl_kv_store_create(&SH, NULL, &s), SL_EINVAL);
    struct sl_kv_shape bad[] = {
        {0, 2, 32, SL_KV_DTYPE_F16, 16}, {4097, 2, 32, SL_KV_DTYPE_F16, 16},
        {2, 0, 32, SL_KV_DTYPE_F16, 16}, {2, 1025, 32, SL_KV_DTYPE_F16, 16},
        {2, 2, 0, SL_KV_DTYPE_F16, 16},  {2, 2, 1025, SL_KV_DTYPE_F16, 16},
        {2, 2, 32, 0, 16},               {2, 2, 32, 3, 16},
        {2, 2, 32, SL_KV_DTYPE_F16, 2},  {2, 2, 32, SL_KV_DTYPE_F16, 12},
        {2, 2, 32, SL_KV_DTYPE_F16, 512}, {2, 2, -32, SL_KV_DTYPE_F16, 16},
    };
    for (int tier = 0; tier < 2; tier++) {
        p = kvt_params(&kvt_tiers[tier], 100, path);
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            EXPECT_RC(sl_kv_store_create(&bad[i], &p, &s), SL_EINVAL);
        int64_t caps[] = {0, -1, (INT64_C(1) << 40) + 1, INT64_MAX};
        for (int i = 0; i < 4; i++) {
            p.capacity = caps[i];
            EXPECT_RC(sl_kv_store_create(&SH, &p, &s), SL_EINVAL);
        }
    }
    p = kvt_params(&kvt_tiers[KVT_HOST], 100, NULL);
    p.host_register = accept_reg; /* without host_unregister */
    EXPECT_RC(sl_kv_store_create(&SH, &p, &s), SL_EINVAL);
    p = kvt_params(&kvt_tiers[KVT_FILE_URING_DIRECT], 100, NULL);
    EXPECT_RC(sl_kv_store_create(&SH, &p, &s), SL_EINVAL); /* file tier without a path */
    char *plain = kvt_join(dir, "plain"), *nodir = kvt_join(dir, "plain/dir/s.kv");
    FILE *fpl = fopen(plain, "w");
    cr_assert(fpl && fputs("x", fpl) >= 0 && fclose(fpl) == 0);
    p.path = nodir; /* a parent that cannot be made: a file in the way */
    cr_assert_eq(sl_kv_store_create(&SH, &p, &s), -ENOTDIR);
    cr_assert(strstr(sl_error_detail(), nodir), "detail does not name the path: %s", sl_error_detail());
    cr_assert_eq(kvt_dir_entries(dir), 1, "rejected creates left files behind");
    free(plain);
    kvt_rmtree(dir);
    free(dir); free(path); free(nodir);
}

/* Out-of-range positions and bad layer/head are rejected before anything is written. */
KVT_TIER_TEST(kv_badinput, bounds_and_sentinels, kvt_all_tiers) {
    const struct kvt_tier *t = &kvt_tiers[*ti];
    snprintf(ctx, sizeof ctx, "[%s] bounds", t->name);
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.kv");
    struct sl_kv_store_params p = kvt_params(t, 100, path);
    struct kvt_ref r;
    kvt_ref_init(&r, &SH, 100);
    uint64_t rng = 61;
    sl_kv_store_t s = NULL;
    OK(sl_kv_store_create(&SH, &p, &s));
    OK(kvt_fill(s, &r, 50, &rng));
    for (int32_t l = 0; l < 2; l++) OK(kvt_append(s, &r, l, 10, &rng)); /* pending: still out of range */
    struct { int32_t layer, head; int64_t idx, first, n; int want; } bad[] = {
        {0, 0, 50, 0, 1, SL_EBOUNDS},   {0, 0, -1, 0, 1, SL_EBOUNDS},
        {0, 0, INT64_MAX, 0, 1, SL_EBOUNDS}, {0, 0, INT64_MIN, 0, 1, SL_EBOUNDS},
        {1, 1, -2, 45, 6, SL_EBOUNDS},  {1, 1, -2, -1, 2, SL_EBOUNDS},
        {1, 1, -2, INT64_MAX - 1, 4, SL_EBOUNDS},
        {-1, 0, 0, 0, 1, SL_EINVAL},    {2, 0, 0, 0, 1, SL_EINVAL},
        {0, -1, 0, 0, 1, SL_EINVAL},    {0, 2, 0, 0, 1, SL_EINVAL},
    };
    static uint16_t out[6][64 * 32];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool range = bad[i].idx == -2;
        int64_t idx0[3] = {3, 49, 0}, idxb[2] = {bad[i].idx, 1};
        struct sl_kv_gather g[3] = {
            {0, 0, idx0, 0, 3, out[0], out[1]},
            {1, 1, NULL, 10, 20, out[2], out[3]},
            {bad[i].layer, bad[i].head, range ? NULL : idxb, bad[i].first, range ? bad[i].n : 2,
             out[4], out[5]},
        };
        for (int rep = 0; rep < 2; rep++) {
            memset(out, KVT_SENTINEL, sizeof out);
            sl_kv_ticket_t tk;
            if (rep == 0) EXPECT_RC(sl_kv_store_gather_submit(s, g, 3, &tk), bad[i].want);
            else EXPECT_RC(sl_kv_store_gather(s, g, 3), bad[i].want);
            const uint16_t *flat = &out[0][0];
            for (size_t b = 0; b < sizeof out / 2; b++)
                cr_assert_eq(flat[b], 0xA5A5, "%s: case %zu (%s) wrote output %zu row %zu of a rejected request",
                             ctx, i, rep ? "gather" : "submit", b / (64 * 32), b % (64 * 32) / 32);
        }
    }
    uint16_t k[64 * 32], v[64 * 32];
    memset(k, KVT_SENTINEL, sizeof k);
    EXPECT_RC(sl_kv_store_read_range(s, 0, 0, 45, 6, k, v), SL_EBOUNDS);
    EXPECT_RC(sl_kv_store_read_range(s, 0, 0, -1, 2, k, v), SL_EBOUNDS);
    EXPECT_RC(sl_kv_store_read_range(s, 0, 0, INT64_MAX, 2, k, v), SL_EBOUNDS);
    EXPECT_RC(sl_kv_store_read_range(s, 2, 0, 0, 1, k, v), SL_EINVAL);
    EXPECT_RC(sl_kv_store_read_range(s, 0, -1, 0, 1, k, v), SL_EINVAL);
    for (size_t i = 0; i < sizeof k / 2; i++) cr_assert_eq(k[i], 0xA5A5, "read_range wrote on failure");
    uint32_t tags[4];
    EXPECT_RC(sl_kv_store_read_tags(s, INT64_MAX - 1, 4, tags), SL_EBOUNDS);
    EXPECT_RC(sl_kv_store_append(s, 2, 1, k, v), SL_EINVAL);
    EXPECT_RC(sl_kv_store_append(s, -1, 1, k, v), SL_EINVAL);
    EXPECT_RC(sl_kv_store_append(s, 0, -1, k, v), SL_EINVAL);
    cr_assert_lt(sl_kv_store_append(s, 0, INT64_MAX, k, v), 0); /* capacity checked before copying */
    cr_assert_lt(sl_kv_store_commit(s, INT64_MAX, NULL), 0);
    sl_kv_ticket_t tk;
    struct sl_kv_gather g = {0, 0, NULL, 0, 1, k, v};
    EXPECT_RC(sl_kv_store_gather_submit(s, &g, -1, &tk), SL_EINVAL);
    EXPECT_RC(sl_kv_store_gather_submit(s, NULL, 1, &tk), SL_EINVAL);
    g.n = -1;
    cr_assert_lt(sl_kv_store_gather(s, &g, 1), 0);
    /* none of that disturbed the store: the 10 pending rows commit */
    OK(kvt_commit(s, &r, 10, true, &rng));
    OK(kvt_check_all(s, &r));
    sl_kv_store_free(s);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir);
    free(path);
}
