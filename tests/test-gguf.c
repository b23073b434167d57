/* GGUF reader on well-formed files: every value type, nested arrays, alignment, tensor
 * table and data pointers, lookups, and opening from a path. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/gguf.h"
#include "spotlight/quant.h"
#include "tests/gguf-builder.h"

/* Every value type once as a scalar, plus arrays of each and a nested array. */
static void build_all_types(struct gb *b) {
    gb_header(b, 3, 0, 24);
    gb_str(b, "u8"); gb_u32(b, SL_GGUF_UINT8); gb_u8(b, 200);
    gb_str(b, "i8"); gb_u32(b, SL_GGUF_INT8); gb_u8(b, (uint8_t)-100);
    gb_str(b, "u16"); gb_u32(b, SL_GGUF_UINT16); gb_u16(b, 60000);
    gb_str(b, "i16"); gb_u32(b, SL_GGUF_INT16); gb_u16(b, (uint16_t)-30000);
    gb_str(b, "u32"); gb_u32(b, SL_GGUF_UINT32); gb_u32(b, 4000000000u);
    gb_str(b, "i32"); gb_u32(b, SL_GGUF_INT32); gb_u32(b, (uint32_t)-2000000000);
    gb_str(b, "f32"); gb_u32(b, SL_GGUF_FLOAT32); gb_f32(b, 1.5f);
    gb_str(b, "bool"); gb_u32(b, SL_GGUF_BOOL); gb_u8(b, 1);
    gb_str(b, "str"); gb_u32(b, SL_GGUF_STRING); gb_str(b, "héllo");
    gb_str(b, "u64"); gb_u32(b, SL_GGUF_UINT64); gb_u64(b, 18000000000000000000ull);
    gb_str(b, "i64"); gb_u32(b, SL_GGUF_INT64); gb_u64(b, (uint64_t)-9000000000000000000ll);
    gb_str(b, "f64"); gb_u32(b, SL_GGUF_FLOAT64); gb_f64(b, -2.25);
    /* arrays */
    gb_str(b, "arr.u8"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_UINT8); gb_u64(b, 3);
    gb_u8(b, 1); gb_u8(b, 2); gb_u8(b, 255);
    gb_str(b, "arr.i16"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_INT16); gb_u64(b, 2);
    gb_u16(b, (uint16_t)-5); gb_u16(b, 7);
    gb_str(b, "arr.i32"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_INT32); gb_u64(b, 2);
    gb_u32(b, (uint32_t)-1); gb_u32(b, 123456);
    gb_str(b, "arr.f32"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_FLOAT32); gb_u64(b, 2);
    gb_f32(b, 0.5f); gb_f32(b, -3.0f);
    gb_str(b, "arr.f64"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_FLOAT64); gb_u64(b, 1);
    gb_f64(b, 1e300);
    gb_str(b, "arr.u64"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_UINT64); gb_u64(b, 1);
    gb_u64(b, 1ull << 63);
    gb_str(b, "arr.bool"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_BOOL); gb_u64(b, 3);
    gb_u8(b, 1); gb_u8(b, 0); gb_u8(b, 1);
    gb_str(b, "arr.str"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_STRING); gb_u64(b, 3);
    gb_str(b, "a"); gb_str(b, ""); gb_str(b, "ccc");
    gb_str(b, "arr.empty"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_UINT32); gb_u64(b, 0);
    /* [[1, 2], [3]] as array of arrays of u32 */
    gb_str(b, "arr.nested"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_ARRAY); gb_u64(b, 2);
    gb_u32(b, SL_GGUF_UINT32); gb_u64(b, 2); gb_u32(b, 1); gb_u32(b, 2);
    gb_u32(b, SL_GGUF_UINT32); gb_u64(b, 1); gb_u32(b, 3);
    /* array of arrays of strings */
    gb_str(b, "arr.nested_str"); gb_u32(b, SL_GGUF_ARRAY); gb_u32(b, SL_GGUF_ARRAY); gb_u64(b, 1);
    gb_u32(b, SL_GGUF_STRING); gb_u64(b, 2); gb_str(b, "x"); gb_str(b, "yz");
    gb_str(b, "general.alignment"); gb_u32(b, SL_GGUF_UINT32); gb_u32(b, 64);
}

Test(gguf, every_value_type) {
    struct gb b = {0};
    build_all_types(&b);
    sl_gguf *g = NULL;
    int rc = sl_gguf_open_memory(b.buf, b.len, &g);
    cr_assert_eq(rc, 0, "open failed: %s: %s", sl_strerror(rc), sl_error_detail());
    cr_assert_eq(sl_gguf_version(g), 3);
    cr_assert_eq(sl_gguf_kv_count(g), 24);
    cr_assert_eq(sl_gguf_alignment(g), 64);
    cr_assert_str_eq(sl_gguf_kv_key(g, 0), "u8");

    const struct sl_gguf_value *v;
    cr_assert_eq(sl_gguf_get(g, "u8")->v.u64, 200);
    cr_assert_eq(sl_gguf_get(g, "i8")->v.i64, -100);
    cr_assert_eq(sl_gguf_get(g, "u16")->v.u64, 60000);
    cr_assert_eq(sl_gguf_get(g, "i16")->v.i64, -30000);
    cr_assert_eq(sl_gguf_get(g, "u32")->v.u64, 4000000000u);
    cr_assert_eq(sl_gguf_get(g, "i32")->v.i64, -2000000000);
    cr_assert_eq(sl_gguf_get(g, "f32")->v.f64, 1.5);
    cr_assert(sl_gguf_get(g, "bool")->v.b);
    v = sl_gguf_get(g, "str");
    cr_assert_eq(v->type, SL_GGUF_STRING);
    cr_assert_str_eq(v->v.str.s, "héllo");
    cr_assert_eq(v->v.str.len, strlen("héllo"));
    cr_assert_eq(sl_gguf_get(g, "u64")->v.u64, 18000000000000000000ull);
    cr_assert_eq(sl_gguf_get(g, "i64")->v.i64, -9000000000000000000ll);
    cr_assert_eq(sl_gguf_get(g, "f64")->v.f64, -2.25);

    v = sl_gguf_get(g, "arr.u8");
    cr_assert_eq(v->v.arr.type, SL_GGUF_UINT8);
    cr_assert_eq(v->v.arr.n, 3);
    cr_assert_eq(sl_gguf_arr_u64(v, 2), 255);
    v = sl_gguf_get(g, "arr.i16");
    cr_assert_eq(sl_gguf_arr_i64(v, 0), -5);
    cr_assert_eq(sl_gguf_arr_i64(v, 1), 7);
    v = sl_gguf_get(g, "arr.i32");
    cr_assert_eq(sl_gguf_arr_i64(v, 0), -1);
    cr_assert_eq(sl_gguf_arr_i64(v, 1), 123456);
    v = sl_gguf_get(g, "arr.f32");
    cr_assert_eq(sl_gguf_arr_f64(v, 0), 0.5);
    cr_assert_eq(sl_gguf_arr_f64(v, 1), -3.0);
    cr_assert_eq(sl_gguf_arr_f64(sl_gguf_get(g, "arr.f64"), 0), 1e300);
    cr_assert_eq(sl_gguf_arr_u64(sl_gguf_get(g, "arr.u64"), 0), 1ull << 63);
    v = sl_gguf_get(g, "arr.bool");
    cr_assert_eq(sl_gguf_arr_i64(v, 0) + sl_gguf_arr_i64(v, 1) * 10 + sl_gguf_arr_i64(v, 2) * 100, 101);
    v = sl_gguf_get(g, "arr.str");
    cr_assert_eq(v->v.arr.n, 3);
    cr_assert_str_eq(v->v.arr.items[0].v.str.s, "a");
    cr_assert_eq(v->v.arr.items[1].v.str.len, 0);
    cr_assert_str_eq(v->v.arr.items[2].v.str.s, "ccc");
    cr_assert_eq(sl_gguf_get(g, "arr.empty")->v.arr.n, 0);
    v = sl_gguf_get(g, "arr.nested");
    cr_assert_eq(v->v.arr.type, SL_GGUF_ARRAY);
    cr_assert_eq(v->v.arr.n, 2);
    cr_assert_eq(v->v.arr.items[0].v.arr.n, 2);
    cr_assert_eq(sl_gguf_arr_u64(&v->v.arr.items[0], 1), 2);
    cr_assert_eq(sl_gguf_arr_u64(&v->v.arr.items[1], 0), 3);
    v = sl_gguf_get(g, "arr.nested_str");
    cr_assert_str_eq(v->v.arr.items[0].v.arr.items[1].v.str.s, "yz");
    cr_assert_null(sl_gguf_get(g, "absent"));
    sl_gguf_free(g);
    gb_free(&b);
}

Test(gguf, typed_getters_convert_and_check) {
    struct gb b = {0};
    build_all_types(&b);
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open_memory(b.buf, b.len, &g), 0);
    uint32_t u32;
    int64_t i64;
    float f;
    bool bo;
    const char *s;
    const struct sl_gguf_value *arr;
    cr_assert_eq(sl_gguf_get_u32(g, "u16", &u32), 0);
    cr_assert_eq(u32, 60000);
    cr_assert_eq(sl_gguf_get_u32(g, "i8", &u32), SL_EFORMAT, "negative into u32 must fail");
    cr_assert_eq(sl_gguf_get_u32(g, "u64", &u32), SL_EFORMAT);
    cr_assert_eq(sl_gguf_get_i64(g, "u64", &i64), SL_EFORMAT, "2^63+ does not fit i64");
    cr_assert_eq(sl_gguf_get_i64(g, "i64", &i64), 0);
    cr_assert_eq(i64, -9000000000000000000ll);
    cr_assert_eq(sl_gguf_get_u32(g, "str", &u32), SL_EBADTYPE);
    cr_assert_eq(sl_gguf_get_u32(g, "f32", &u32), SL_EBADTYPE);
    cr_assert_eq(sl_gguf_get_u32(g, "nope", &u32), SL_ENOTFOUND);
    cr_assert(strstr(sl_error_detail(), "nope") != NULL);
    cr_assert_eq(sl_gguf_get_f32(g, "f64", &f), 0);
    cr_assert_eq(f, -2.25f);
    cr_assert_eq(sl_gguf_get_f32(g, "i16", &f), 0);
    cr_assert_eq(f, -30000.0f);
    cr_assert_eq(sl_gguf_get_f32(g, "bool", &f), SL_EBADTYPE);
    cr_assert_eq(sl_gguf_get_bool(g, "bool", &bo), 0);
    cr_assert(bo);
    cr_assert_eq(sl_gguf_get_bool(g, "u8", &bo), SL_EBADTYPE);
    cr_assert_eq(sl_gguf_get_str(g, "str", &s), 0);
    cr_assert_str_eq(s, "héllo");
    cr_assert_eq(sl_gguf_get_str(g, "u8", &s), SL_EBADTYPE);
    cr_assert_eq(sl_gguf_get_arr(g, "arr.str", SL_GGUF_STRING, &arr), 0);
    cr_assert_eq(sl_gguf_get_arr(g, "arr.str", SL_GGUF_INT32, &arr), SL_EBADTYPE);
    cr_assert_eq(sl_gguf_get_arr(g, "u8", SL_GGUF_UINT8, &arr), SL_EBADTYPE);
    sl_gguf_free(g);
    gb_free(&b);
}

/* Two tensors after tensor infos that end unaligned; checks padding, offsets, nbytes and
 * that data pointers address the right bytes, for the default and a custom alignment. */
static void check_tensors(uint32_t align) {
    struct gb b = {0};
    gb_header(&b, 2, 3, align == 32 ? 1 : 2);
    gb_kv_str(&b, "general.architecture", "x");
    if (align != 32) gb_kv_u32(&b, "general.alignment", align);
    uint64_t ne_a[2] = {64, 3};   /* Q8_0: 2 blocks per row x 3 rows = 6 * 34 = 204 bytes */
    uint64_t ne_b[1] = {5};       /* F32: 20 bytes */
    uint64_t ne_c[4] = {32, 1, 2, 1}; /* Q4_1: 2 blocks = 40 bytes */
    uint64_t off_b = (204 + align - 1) / align * align;
    uint64_t off_c = off_b + align;
    gb_tensor(&b, "a", 2, ne_a, SL_TYPE_Q8_0, 0);
    gb_tensor(&b, "b", 1, ne_b, SL_TYPE_F32, off_b);
    gb_tensor(&b, "c", 4, ne_c, SL_TYPE_Q4_1, off_c);
    gb_pad(&b, align);
    size_t data_start = b.len;
    for (uint64_t i = 0; i < off_c + 40; i++) gb_u8(&b, (uint8_t)(i * 31 + 7));

    sl_gguf *g = NULL;
    int rc = sl_gguf_open_memory(b.buf, b.len, &g);
    cr_assert_eq(rc, 0, "%s: %s", sl_strerror(rc), sl_error_detail());
    cr_assert_eq(sl_gguf_version(g), 2);
    cr_assert_eq(sl_gguf_alignment(g), align);
    cr_assert_eq(sl_gguf_data_offset(g), data_start);
    cr_assert_eq(sl_gguf_tensor_count(g), 3);
    const struct sl_gguf_tensor *a = sl_gguf_find_tensor(g, "a"), *bt = sl_gguf_find_tensor(g, "b"),
                                *c = sl_gguf_find_tensor(g, "c");
    cr_assert(a && bt && c);
    cr_assert_eq(a->nbytes, 204);
    cr_assert_eq(a->n_elems, 192);
    cr_assert_eq(a->n_dims, 2);
    cr_assert_eq(a->ne[2], 1);
    cr_assert_eq(bt->nbytes, 20);
    cr_assert_eq(c->nbytes, 40);
    cr_assert_eq(c->ne[2], 2);
    cr_assert_eq(c->n_dims, 4);
    cr_assert_eq((const uint8_t *)a->data, b.buf + data_start);
    cr_assert_eq((const uint8_t *)bt->data, b.buf + data_start + off_b);
    cr_assert_eq(((const uint8_t *)c->data)[0], (uint8_t)(off_c * 31 + 7));
    cr_assert_eq(sl_gguf_tensor_at(g, 1), bt);
    cr_assert_null(sl_gguf_find_tensor(g, "d"));
    sl_gguf_free(g);
    gb_free(&b);
}

Test(gguf, tensors_default_alignment) { check_tensors(32); }
Test(gguf, tensors_custom_alignment) { check_tensors(256); }

Test(gguf, zero_tensors_and_no_padding) {
    struct gb b = {0};
    gb_header(&b, 3, 0, 0);
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open_memory(b.buf, b.len, &g), 0);
    cr_assert_eq(sl_gguf_tensor_count(g), 0);
    cr_assert_eq(sl_gguf_kv_count(g), 0);
    sl_gguf_free(g);
    gb_free(&b);
}

Test(gguf, open_path_and_missing_file) {
    struct gb b = {0};
    check_tensors(32); /* sanity of the builder before writing */
    gb_header(&b, 3, 1, 1);
    gb_kv_str(&b, "general.architecture", "x");
    uint64_t ne[1] = {8};
    gb_tensor(&b, "w", 1, ne, SL_TYPE_F32, 0);
    gb_pad(&b, 32);
    for (int i = 0; i < 8; i++) gb_f32(&b, (float)i);
    char path[] = "/tmp/sl-test-gguf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, b.buf, b.len), (ssize_t)b.len);
    close(fd);
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open(path, &g), 0);
    const struct sl_gguf_tensor *t = sl_gguf_find_tensor(g, "w");
    cr_assert_eq(((const float *)t->data)[7], 7.0f);
    cr_assert_eq(sl_gguf_file_size(g), b.len);
    sl_gguf_free(g);
    unlink(path);
    g = (sl_gguf *)0x1;
    cr_assert_eq(sl_gguf_open(path, &g), -ENOENT);
    cr_assert_eq(g, (sl_gguf *)0x1, "out must be untouched on failure");
    cr_assert(strstr(sl_error_detail(), path) != NULL);
    cr_assert_eq(sl_gguf_open("/tmp", &g), SL_EINVAL, "a directory is not a model");
    sl_gguf_free(NULL);
    gb_free(&b);
}
