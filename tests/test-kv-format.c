/* The KV store file format on its own (storage/kv-format.h): the layout arithmetic against
 * the documented byte layout, header slots encoded and decoded, every field checked, and the
 * choice between two slots. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "storage/crc32c.h"
#include "storage/kv-format.h"
#include "tests/kv-test-util.h"

static const struct sl_kv_shape SH = {2, 2, 32, SL_KV_DTYPE_F16, 16}; /* 2 KiB blocks */
static const struct sl_kv_shape SH4K = {2, 2, 64, SL_KV_DTYPE_F16, 16};

Test(kv_format, layout_matches_documentation) {
    struct sl_kv_shape shapes[] = {SH, SH4K, {3, 2, 40, SL_KV_DTYPE_F16, 4},
                                   {1, 1, 1, SL_KV_DTYPE_BF16, 256}, {4096, 1024, 1024, SL_KV_DTYPE_F16, 256}};
    int64_t caps[] = {1, 96, 100, 1 << 20, INT64_C(1) << 40};
    for (int i = 0; i < 5; i++)
        for (int c = 0; c < 5; c++) {
            if (i == 4 && c == 4) continue; /* > INT64_MAX bytes */
            struct sl_kv_layout got;
            struct kvt_layout want;
            int rc = sl_kv_layout_compute(&shapes[i], caps[c], &got);
            cr_assert_eq(rc, 0, "shape %d capacity %lld: %s", i, (long long)caps[c], sl_strerror(rc));
            kvt_layout_of(&shapes[i], caps[c], &want);
            cr_assert(got.n_blocks == want.n_blocks && got.block_bytes == want.block_bytes &&
                      got.block_stride == want.block_stride && got.tail_bytes == want.tail_bytes &&
                      got.tail_off[0] == want.tail_off[0] && got.tail_off[1] == want.tail_off[1] &&
                      got.crc_off == want.crc_off && got.tag_off == want.tag_off &&
                      got.data_off == want.data_off && got.file_size == want.file_size,
                      "shape %d capacity %lld: layout differs from kv-format.h", i, (long long)caps[c]);
            cr_assert_eq(sl_kv_layout_block_offset(&got, shapes[i].n_layer - 1, got.n_blocks - 1,
                                                   shapes[i].n_head_kv - 1),
                         want.file_size - want.block_stride);
            cr_assert_eq(sl_kv_layout_block_index(&got, shapes[i].n_layer - 1, got.n_blocks - 1,
                                                  shapes[i].n_head_kv - 1),
                         (int64_t)shapes[i].n_layer * got.n_blocks * shapes[i].n_head_kv - 1);
        }
    struct sl_kv_layout l;
    struct sl_kv_shape huge = {4096, 1024, 1024, SL_KV_DTYPE_F16, 256};
    cr_assert_lt(sl_kv_layout_compute(&huge, INT64_C(1) << 40, &l), 0, "overflowing layout accepted");
    cr_assert_eq(sl_kv_layout_compute(&SH, 0, &l), SL_EINVAL);
    cr_assert_eq(sl_kv_layout_compute(&SH, (INT64_C(1) << 40) + 1, &l), SL_EINVAL);
    uint8_t s[10] = "123456789";
    cr_assert_eq(kvt_crc32c(0, s, 9), 0xE3069283u);
    cr_assert_eq(sl_crc32c(0, s, 9), 0xE3069283u);
}

static void sample_header(struct sl_kv_header *h, uint64_t gen, int64_t n) {
    memset(h, 0, sizeof *h);
    cr_assert_eq(sl_kv_layout_compute(&SH4K, 200, &h->layout), 0);
    h->generation = gen;
    h->n_tokens = n;
    h->tail_crc = 0x11223344u;
    h->tags_crc = 0x55667788u;
    memcpy(h->fingerprint, kvt_fingerprint, 32);
}

/* Both checks of a slot after an edit: head_check over [0, 144), header_crc over [0, 4092). */
static void fix_crc(uint8_t *b) {
    kvt_put32(b + 144, kvt_fnv1a(b, 144));
    kvt_put32(b + 4092, kvt_crc32c(0, b, 4092));
}

Test(kv_format, header_encode_decode) {
    struct sl_kv_header h, d;
    struct kvt_layout L;
    kvt_layout_of(&SH4K, 200, &L);
    static uint8_t b[2][4096];
    for (int slot = 0; slot < 2; slot++) {
        sample_header(&h, 7 + slot, 123);
        sl_kv_header_encode(&h, slot, b[slot]);
        cr_assert(kvt_slot_valid(b[slot]), "encoded slot %d: magic or CRC32C wrong", slot);
        cr_assert_eq(kvt_le64(b[slot] + 64), (uint64_t)L.tail_off[slot]);
        cr_assert_eq(kvt_le64(b[slot] + 56), 123);
        cr_assert_eq(kvt_le32(b[slot] + 104), 0x11223344u);
        cr_assert_eq(kvt_le32(b[slot] + 108), 0x55667788u);
        cr_assert_eq(sl_kv_header_decode(b[slot], slot, &d), 0);
        cr_assert(d.generation == h.generation && d.n_tokens == 123 && d.tail_crc == h.tail_crc &&
                  d.tags_crc == h.tags_crc && !memcmp(d.fingerprint, h.fingerprint, 32) &&
                  d.layout.capacity == 200 && d.layout.shape.head_dim == 64);
    }
    cr_assert_eq(sl_kv_header_decode(b[0], 1, &d), SL_EFORMAT, "slot 0 bytes accepted as slot 1");
    uint8_t x[4096];
    struct { int off; uint32_t v; int want; } cases[] = {
        {0, 0x4b4c5358, SL_EBADMAGIC}, {8, 3, SL_EVERSION}, {8, 0, SL_EVERSION},
        {12, 4095, SL_EFORMAT}, {32, 12, SL_EFORMAT}, {36, 8192, SL_EFORMAT},
        {28, 3, SL_EFORMAT}, {16, 0, SL_EFORMAT}, {148, 1, SL_EFORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(x, b[0], 4096);
        kvt_put32(x + cases[i].off, cases[i].v);
        fix_crc(x);
        sl_error_clear();
        int rc = sl_kv_header_decode(x, 0, &d);
        if (cases[i].off == 148) { /* the zero area: rejected or ignored, never a crash */
            cr_assert(rc == 0 || rc == SL_EFORMAT);
            continue;
        }
        cr_assert_eq(rc, cases[i].want, "u32 %u at %d: %s", cases[i].v, cases[i].off, sl_strerror(rc));
        cr_assert(sl_error_detail()[0] != '\0');
    }
    memcpy(x, b[0], 4096);
    x[60] ^= 1;
    cr_assert_eq(sl_kv_header_decode(x, 0, &d), SL_ECORRUPT);
}

static int pick(const uint8_t *two, unsigned flags, struct sl_kv_header *d, int *slot) {
    struct sl_kv_pick pk;
    int rc = sl_kv_header_pick(two, flags, &pk);
    *d = pk.h;
    *slot = pk.slot;
    return rc;
}

Test(kv_format, header_pick) {
    static uint8_t two[8192], bad[4096];
    struct sl_kv_header h, d;
    int slot = -1;
    sample_header(&h, 5, 10);
    sl_kv_header_encode(&h, 0, two);
    sample_header(&h, 6, 20);
    sl_kv_header_encode(&h, 1, two + 4096);
    cr_assert_eq(pick(two, 0, &d, &slot), 0);
    cr_assert(slot == 1 && d.n_tokens == 20 && d.generation == 6);
    two[4096 + 70] ^= 4; /* damage the newer: refused, read-only reads the older, recover repairs */
    cr_assert_eq(pick(two, 0, &d, &slot), SL_ECORRUPT);
    cr_assert(strstr(sl_error_detail(), "generation 6, 20 positions") && strstr(sl_error_detail(), "generation 5, 10"),
              "%s", sl_error_detail());
    cr_assert_eq(pick(two, SL_KV_PICK_READ_ONLY, &d, &slot), 0);
    cr_assert(slot == 0 && d.n_tokens == 10);
    struct sl_kv_pick pk;
    cr_assert_eq(sl_kv_header_pick(two, SL_KV_PICK_RECOVER, &pk), 0);
    cr_assert(pk.slot == 1 && pk.repaired && pk.h.n_tokens == 20 && pk.has_fallback && pk.fb.n_tokens == 10);
    two[70] ^= 4; /* both damaged */
    cr_assert_eq(pick(two, 0, &d, &slot), SL_ECORRUPT);
    memset(two, 0, sizeof two);
    cr_assert_eq(pick(two, 0, &d, &slot), SL_EBADMAGIC);
    sample_header(&h, 9, 0);
    sl_kv_header_encode(&h, 1, two + 4096); /* slot 0 zero: never written by create, so damage */
    cr_assert_eq(pick(two, 0, &d, &slot), SL_ECORRUPT);
    cr_assert_eq(pick(two, SL_KV_PICK_RECOVER, &d, &slot), 0);
    cr_assert_eq(slot, 1);
    sl_kv_header_encode(&h, 0, bad);
    kvt_put32(bad + 8, 3);
    fix_crc(bad);
    memcpy(two, bad, 4096);
    memset(two + 4096, 0, 4096);
    cr_assert_eq(pick(two, 0, &d, &slot), SL_EVERSION);
}

/* An interrupted header write (whole 512-byte sectors of the old and the new header) is told
 * apart from damage and resolved to the slot that completed, without recover. */
Test(kv_format, torn_header_write) {
    static uint8_t two[8192], old1[4096], new1[4096];
    struct sl_kv_header h, d;
    int slot = -1;
    sample_header(&h, 6, 20);
    sl_kv_header_encode(&h, 0, two); /* current: generation 6 */
    sample_header(&h, 5, 10);
    sl_kv_header_encode(&h, 1, old1); /* slot 1 held 5, a sync writes 7 over it */
    sample_header(&h, 7, 30);
    sl_kv_header_encode(&h, 1, new1);
    for (int first_new = 0; first_new < 2; first_new++) {
        memcpy(two + 4096, first_new ? new1 : old1, 4096);
        memcpy(two + 4096 + 3584, first_new ? old1 + 3584 : new1 + 3584, 512); /* the CRC sector */
        cr_assert_eq(pick(two, 0, &d, &slot), 0, "torn (%s first sector): %s", first_new ? "new" : "old",
                     sl_error_detail());
        cr_assert(slot == 0 && d.generation == 6 && d.n_tokens == 20, "torn (%s first sector): slot %d gen %llu n %lld",
                  first_new ? "new" : "old", slot, (unsigned long long)d.generation, (long long)d.n_tokens);
    }
    /* the same bytes with a reserved byte set, or two bits of sector 0 flipped: damage */
    memcpy(two + 4096, new1, 4096);
    memcpy(two + 4096 + 3584, old1 + 3584, 512);
    two[4096 + 1000] = 1;
    cr_assert_eq(pick(two, 0, &d, &slot), SL_ECORRUPT);
    two[4096 + 1000] = 0;
    two[4096 + 57] ^= 0x11;
    cr_assert_eq(pick(two, 0, &d, &slot), SL_ECORRUPT);
}
