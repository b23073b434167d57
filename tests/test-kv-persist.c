/* KV store persistence on the file tiers: reopen and resume, what a close or sync makes durable
 * and what it does not (pending rows, a crash copy taken between calls), create's refusal to
 * clobber, sparse allocation of a million-position file, and the file checked byte by byte
 * against the layout storage/kv-format.h documents. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "tests/kv-store-fixture.h"
#include "tests/kv-test-util.h"

TestSuite(kv_persist, .fini = kvt_cleanup);

KVT_TIER_TEST(kv_persist, reopen_and_resume, kvt_file_tiers) {
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

KVT_TIER_TEST(kv_persist, pending_rows_not_persisted, kvt_file_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_A, 100);
    OK(kvt_fill(f->s, &f->r, 40, &f->rng));
    for (int32_t l = 0; l < 3; l++) OK(kvt_append(f->s, &f->r, l, 30, &f->rng));
    fx_reopen(f, &SHAPE_A);
    OK(kvt_check_all(f->s, &f->r)); /* n_tokens 40 */
    FAILS(kvt_commit(f->s, &f->r, 1, true, &f->rng));
    fx_done(f);
}

Test(kv_persist, sync_refused_while_pending, .timeout = 60) {
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

Test(kv_persist, create_refuses_existing_path, .timeout = 60) {
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
    p.overwrite = true; /* replaces a store (or an empty file), never anything else */
    FAILS(sl_kv_store_create(&SHAPE_B, &p, &s));
    cr_assert(kvt_read_at(other, 0, buf, 11) == 0 && memcmp(buf, "not a store", 11) == 0,
              "overwrite replaced a file that is not a store");
    cr_assert_eq(truncate(other, 0), 0);
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

KVT_TIER_TEST(kv_persist, crash_copies_hold_synced_state, kvt_file_tiers) {
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
    uint32_t want32[] = {2, 4096, (uint32_t)sh->n_layer, (uint32_t)sh->n_head_kv, (uint32_t)D,
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
    cr_assert_eq(kvt_le32(h + 144), kvt_fnv1a(h, 144), "head_check");
    for (int i = 148; i < 4092; i++) cr_assert_eq(h[i], 0, "header byte %d not zero", i);
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

Test(kv_persist, file_matches_documented_format, .timeout = 60) {
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

Test(kv_persist, million_positions_sparse, .timeout = 60) {
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

/* The content id follows the committed K/V and tags, not the history: a reopen keeps it, new
 * rows in the open block change its open part, a block that fills changes the full-block part,
 * and truncating back to an earlier content gives that content's id again. The host tier has
 * none. */
KVT_TIER_TEST(kv_persist, content_id_follows_content, kvt_file_tiers) {
    struct fx fx, *f = &fx;
    fx_create(f, *ti, &SHAPE_B, 300); /* blocks of 4 */
    OK(kvt_fill(f->s, &f->r, 30, &f->rng));
    struct sl_kv_content_id a, b, c, d;
    OK(sl_kv_store_content_id(f->s, &a));
    cr_assert_eq(a.n_tokens, 30);
    fx_reopen(f, &SHAPE_B);
    OK(sl_kv_store_content_id(f->s, &b));
    cr_assert(sl_kv_content_id_equal(&a, &b), "[%s] a reopen changed the content id", f->t->name);
    OK(kvt_fill(f->s, &f->r, 1, &f->rng)); /* 31: the same 7 full blocks, 3 open rows */
    OK(sl_kv_store_content_id(f->s, &c));
    cr_assert(c.n_tokens == 31 && c.blocks_crc == a.blocks_crc && c.open_crc != a.open_crc && c.tags_crc != a.tags_crc);
    OK(kvt_truncate(f->s, &f->r, 30));
    OK(sl_kv_store_content_id(f->s, &b));
    cr_assert(sl_kv_content_id_equal(&a, &b), "[%s] truncating back did not restore the id", f->t->name);
    OK(kvt_fill(f->s, &f->r, 1, &f->rng)); /* other rows at position 30 */
    OK(sl_kv_store_content_id(f->s, &d));
    cr_assert(d.n_tokens == 31 && d.blocks_crc == c.blocks_crc && d.open_crc != c.open_crc);
    OK(kvt_fill(f->s, &f->r, 1, &f->rng)); /* 32: block 7 fills, no open rows */
    OK(sl_kv_store_content_id(f->s, &d));
    cr_assert(d.blocks_crc != a.blocks_crc && d.open_crc == 0);
    fx_done(f);
    fx_create(f, KVT_HOST, &SHAPE_B, 300);
    OK(kvt_fill(f->s, &f->r, 5, &f->rng));
    EXPECT_RC(sl_kv_store_content_id(f->s, &d), SL_EINVAL);
    fx_done(f);
}
