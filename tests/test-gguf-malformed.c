/* GGUF reader on malformed input: every truncation point, absurd counts and sizes, bad
 * types, offsets outside the file, overlaps, duplicates. Each must return the right error
 * with a detail line, and never crash (this suite also runs under ASan + UBSan). */
#include <criterion/criterion.h>
#include <string.h>

#include "spotlight/error.h"
#include "spotlight/gguf.h"
#include "spotlight/quant.h"
#include "tests/gguf-builder.h"

static int open_buf(const struct gb *b) {
    sl_gguf *g = NULL;
    sl_error_clear();
    int rc = sl_gguf_open_memory(b->buf, b->len, &g);
    if (rc == 0) sl_gguf_free(g);
    else cr_assert(sl_error_detail()[0] != '\0', "error %s has no detail", sl_strerror(rc));
    return rc;
}

#define EXPECT(b, code)                                                                        \
    do {                                                                                       \
        int rc_ = open_buf(b);                                                                 \
        cr_assert_eq(rc_, code, "expected %s, got %s (%s)", sl_strerror(code), sl_strerror(rc_), \
                     sl_error_detail());                                                       \
    } while (0)

/* A valid file with metadata of several kinds and two tensors. */
static size_t build_valid(struct gb *b, size_t *header_end) {
    gb_header(b, 3, 2, 4);
    gb_kv_str(b, "general.architecture", "llama");
    gb_kv_u32(b, "llama.block_count", 2);
    gb_str(b, "tokenizer.ggml.tokens"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_STRING);
    gb_u64(b, 3); gb_str(b, "a"); gb_str(b, "bb"); gb_str(b, "ccc");
    gb_str(b, "nested"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_ARRAY); gb_u64(b, 1);
    gb_u32(b, SL_GGUF_FLOAT32); gb_u64(b, 2); gb_f32(b, 1); gb_f32(b, 2);
    uint64_t ne[2] = {32, 2};
    gb_tensor(b, "t0", 2, ne, SL_TYPE_Q8_0, 0);
    gb_tensor(b, "t1", 1, ne, SL_TYPE_F32, 96);
    *header_end = b->len;
    gb_pad(b, 32);
    for (int i = 0; i < 96 + 128; i++) gb_u8(b, (uint8_t)i);
    return b->len;
}

Test(gguf_malformed, valid_base_opens) {
    struct gb b = {0};
    size_t he;
    build_valid(&b, &he);
    EXPECT(&b, 0);
    gb_free(&b);
}

Test(gguf_malformed, every_truncation_point_fails_cleanly) {
    struct gb b = {0};
    size_t header_end;
    size_t full = build_valid(&b, &header_end);
    for (size_t len = 0; len < full; len++) {
        sl_gguf *g = NULL;
        int rc = sl_gguf_open_memory(b.buf, len, &g);
        cr_assert(rc < 0, "truncated to %zu of %zu bytes but opened", len, full);
        cr_assert_null(g);
        if (len < 4)
            cr_assert_eq(rc, SL_EBADMAGIC, "at %zu: %s", len, sl_strerror(rc));
        else if (len <= header_end)
            cr_assert_eq(rc, SL_ETRUNCATED, "at %zu: %s (%s)", len, sl_strerror(rc), sl_error_detail());
        else
            cr_assert(rc == SL_ETRUNCATED || rc == SL_EBOUNDS, "at %zu: %s", len, sl_strerror(rc));
    }
    gb_free(&b);
}

Test(gguf_malformed, bad_magic_and_versions) {
    struct gb b = {0};
    gb_bytes(&b, "GGUG", 4); gb_u32(&b, 3); gb_u64(&b, 0); gb_u64(&b, 0);
    EXPECT(&b, SL_EBADMAGIC);
    gb_free(&b);
    uint32_t versions[] = {0, 1, 4, 0x03000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        gb_header(&b, versions[i], 0, 0);
        EXPECT(&b, SL_EVERSION);
        gb_free(&b);
    }
}

Test(gguf_malformed, absurd_counts) {
    uint64_t counts[] = {1ull << 62, UINT64_MAX, 1000};
    struct gb b = {0};
    for (size_t i = 0; i < 3; i++) {
        gb_header(&b, 3, 0, counts[i]);
        EXPECT(&b, SL_ETRUNCATED);
        gb_free(&b);
        gb_header(&b, 3, counts[i], 0);
        EXPECT(&b, SL_ETRUNCATED);
        gb_free(&b);
    }
    /* array and string lengths far beyond the file */
    gb_header(&b, 3, 0, 1);
    gb_str(&b, "k"); gb_u32(&b, SL_GGUF_ARRAY); gb_u32(&b, SL_GGUF_UINT64); gb_u64(&b, 1ull << 61);
    EXPECT(&b, SL_ETRUNCATED);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_str(&b, "k"); gb_u32(&b, SL_GGUF_ARRAY); gb_u32(&b, SL_GGUF_STRING); gb_u64(&b, UINT64_MAX);
    EXPECT(&b, SL_ETRUNCATED);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_str(&b, "k"); gb_u32(&b, SL_GGUF_STRING); gb_u64(&b, UINT64_MAX); gb_bytes(&b, "xx", 2);
    EXPECT(&b, SL_ETRUNCATED);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, 1ull << 40); gb_bytes(&b, "key", 3); /* key length */
    EXPECT(&b, SL_ETRUNCATED);
    gb_free(&b);
}

Test(gguf_malformed, unknown_value_types) {
    uint32_t bad[] = {13, 99, 0xffffffffu};
    struct gb b = {0};
    for (size_t i = 0; i < 3; i++) {
        gb_header(&b, 3, 0, 1);
        gb_str(&b, "k"); gb_u32(&b, bad[i]); gb_u64(&b, 0);
        EXPECT(&b, SL_EBADTYPE);
        gb_free(&b);
        gb_header(&b, 3, 0, 1);
        gb_str(&b, "k"); gb_u32(&b, SL_GGUF_ARRAY); gb_u32(&b, bad[i]); gb_u64(&b, 1); gb_u64(&b, 0);
        EXPECT(&b, SL_EBADTYPE);
        gb_free(&b);
    }
}

Test(gguf_malformed, bad_bools_keys_and_nesting) {
    struct gb b = {0};
    gb_header(&b, 3, 0, 1);
    gb_kv_bool(&b, "flag", 2);
    EXPECT(&b, SL_EFORMAT);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_str(&b, "flags"); gb_u32(&b, SL_GGUF_ARRAY); gb_u32(&b, SL_GGUF_BOOL); gb_u64(&b, 2);
    gb_u8(&b, 1); gb_u8(&b, 7);
    EXPECT(&b, SL_EFORMAT);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "", 1);
    EXPECT(&b, SL_EFORMAT);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, 3); gb_bytes(&b, "a\0b", 3); gb_u32(&b, SL_GGUF_UINT8); gb_u8(&b, 0);
    EXPECT(&b, SL_EFORMAT);
    gb_free(&b);
    /* 9 nested arrays: deeper than the reader allows */
    gb_header(&b, 3, 0, 1);
    gb_str(&b, "deep"); gb_u32(&b, SL_GGUF_ARRAY);
    for (int i = 0; i < 9; i++) { gb_u32(&b, SL_GGUF_ARRAY); gb_u64(&b, 1); }
    gb_u32(&b, SL_GGUF_UINT8); gb_u64(&b, 0);
    EXPECT(&b, SL_EFORMAT);
    gb_free(&b);
}

Test(gguf_malformed, duplicates) {
    struct gb b = {0};
    gb_header(&b, 3, 0, 3);
    gb_kv_u32(&b, "a", 1);
    gb_kv_u32(&b, "b", 1);
    gb_kv_str(&b, "a", "again");
    EXPECT(&b, SL_EDUPLICATE);
    cr_assert(strstr(sl_error_detail(), "'a'") != NULL);
    gb_free(&b);
    uint64_t ne[1] = {8};
    gb_header(&b, 3, 2, 0);
    gb_tensor(&b, "w", 1, ne, SL_TYPE_F32, 0);
    gb_tensor(&b, "w", 1, ne, SL_TYPE_F32, 32);
    gb_pad(&b, 32);
    for (int i = 0; i < 64; i++) gb_u8(&b, 0);
    EXPECT(&b, SL_EDUPLICATE);
    gb_free(&b);
}

Test(gguf_malformed, alignment_values) {
    struct gb b = {0};
    uint32_t bad[] = {0, 3, 48, 1u << 31};
    for (size_t i = 0; i < 4; i++) {
        gb_header(&b, 3, 0, 1);
        gb_kv_u32(&b, "general.alignment", bad[i]);
        EXPECT(&b, SL_EFORMAT);
        gb_free(&b);
    }
    gb_header(&b, 3, 0, 1);
    gb_kv_str(&b, "general.alignment", "32");
    EXPECT(&b, SL_EBADTYPE);
    gb_free(&b);
}

/* One tensor `w` described by the arguments, followed by `data_bytes` of data. */
static void one_tensor(struct gb *b, int n_dims, const uint64_t *ne, uint32_t type, uint64_t off,
                       size_t data_bytes) {
    gb_header(b, 3, 1, 0);
    gb_tensor(b, "w", n_dims, ne, type, off);
    gb_pad(b, 32);
    for (size_t i = 0; i < data_bytes; i++) gb_u8(b, 0);
}

Test(gguf_malformed, tensor_infos) {
    struct gb b = {0};
    uint64_t ne5[5] = {1, 1, 1, 1, 1};
    one_tensor(&b, 5, ne5, SL_TYPE_F32, 0, 64);
    EXPECT(&b, SL_EFORMAT); /* too many dims */
    gb_free(&b);
    uint64_t huge[2] = {1ull << 40, 1ull << 40};
    one_tensor(&b, 2, huge, SL_TYPE_F32, 0, 64);
    EXPECT(&b, SL_EFORMAT); /* element count overflows */
    gb_free(&b);
    uint64_t neg[1] = {1ull << 63};
    one_tensor(&b, 1, neg, SL_TYPE_F32, 0, 64);
    EXPECT(&b, SL_EFORMAT);
    gb_free(&b);
    uint64_t ne[1] = {32};
    uint32_t bad_types[] = {4, 5, 23, 31, 99, 0xffffffffu};
    for (size_t i = 0; i < 6; i++) {
        one_tensor(&b, 1, ne, bad_types[i], 0, 256);
        EXPECT(&b, SL_EBADTYPE);
        gb_free(&b);
    }
    uint64_t odd[1] = {33};
    one_tensor(&b, 1, odd, SL_TYPE_Q4_0, 0, 256);
    EXPECT(&b, SL_EFORMAT); /* row not a multiple of the block */
    gb_free(&b);
    /* a row size that overflows bytes even though the element count fits */
    uint64_t big[2] = {1ull << 31, 1ull << 31};
    one_tensor(&b, 2, big, SL_TYPE_I64, 0, 64);
    cr_assert(open_buf(&b) < 0);
    gb_free(&b);
    one_tensor(&b, 1, ne, SL_TYPE_F32, 0, 128);
    b.buf[24 + 8] = 0; /* name length 0 */
    cr_assert(open_buf(&b) < 0);
    gb_free(&b);
}

Test(gguf_malformed, offsets_outside_or_misaligned) {
    struct gb b = {0};
    uint64_t ne[1] = {32}; /* 128 bytes F32 */
    one_tensor(&b, 1, ne, SL_TYPE_F32, 1ull << 60, 128);
    EXPECT(&b, SL_EBOUNDS);
    gb_free(&b);
    one_tensor(&b, 1, ne, SL_TYPE_F32, UINT64_MAX - 31, 128);
    EXPECT(&b, SL_EBOUNDS);
    gb_free(&b);
    one_tensor(&b, 1, ne, SL_TYPE_F32, 32, 128); /* ends 32 bytes past EOF */
    EXPECT(&b, SL_ETRUNCATED);
    gb_free(&b);
    one_tensor(&b, 1, ne, SL_TYPE_F32, 8, 256);
    EXPECT(&b, SL_EFORMAT); /* misaligned */
    gb_free(&b);
}

Test(gguf_malformed, overlapping_tensors) {
    struct gb b = {0};
    uint64_t ne[1] = {32}, ne_big[1] = {128};
    gb_header(&b, 3, 2, 0);
    gb_tensor(&b, "a", 1, ne, SL_TYPE_F32, 0);
    gb_tensor(&b, "b", 1, ne, SL_TYPE_F32, 96); /* a covers [0,128) */
    gb_pad(&b, 32);
    for (int i = 0; i < 512; i++) gb_u8(&b, 0);
    EXPECT(&b, SL_EBOUNDS);
    cr_assert(strstr(sl_error_detail(), "overlap") != NULL);
    gb_free(&b);
    /* listed out of order, and one nested inside another */
    gb_header(&b, 3, 3, 0);
    gb_tensor(&b, "late", 1, ne, SL_TYPE_F32, 1024);
    gb_tensor(&b, "outer", 1, ne_big, SL_TYPE_F32, 0); /* [0,512) */
    gb_tensor(&b, "inner", 1, ne, SL_TYPE_F32, 256);
    gb_pad(&b, 32);
    for (int i = 0; i < 1200; i++) gb_u8(&b, 0);
    EXPECT(&b, SL_EBOUNDS);
    gb_free(&b);
    /* the same layout without the nested one is fine */
    gb_header(&b, 3, 2, 0);
    gb_tensor(&b, "late", 1, ne, SL_TYPE_F32, 1024);
    gb_tensor(&b, "outer", 1, ne_big, SL_TYPE_F32, 0);
    gb_pad(&b, 32);
    for (int i = 0; i < 1200; i++) gb_u8(&b, 0);
    EXPECT(&b, 0);
    gb_free(&b);
}

Test(gguf_malformed, null_arguments) {
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open_memory(NULL, 10, &g), SL_EINVAL);
    cr_assert_eq(sl_gguf_open(NULL, &g), SL_EINVAL);
    cr_assert_eq(sl_gguf_open_memory(NULL, 0, &g), SL_EBADMAGIC);
}
