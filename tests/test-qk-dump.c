/* q/k dumps (core/qk-dump.h): what the writer appends comes back from the reader (to f16
 * precision) in the documented layout; incomplete sequences are refused; an unfinished dump
 * leaves no layer file behind; damaged files are rejected. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test-fs.h"
#include "core/qk-dump.h"
#include "spotlight/error.h"
#include "spotlight/quant.h"

static const struct sl_qk_shape SHAPE = {.n_layer = 2, .n_head = 3, .n_head_kv = 1, .head_dim = 8, .seq_len = 10};

/* value of (seq, pos, layer, q?, head, j): varies with every index and is exactly
 * representable in f16 (magnitude < 64, steps of 1/8) */
static float val(int s, int p, int l, int isq, int h, int j) {
    return (float)((s * 7 + p * 3 + l * 5 + isq * 11 + h * 13) % 101) / 2.0f + (float)j / 8.0f - 30.0f;
}

static void feed(struct sl_qk_writer *w, int s, int chunk) {
    const int nq = SHAPE.n_head * SHAPE.head_dim, nk = SHAPE.n_head_kv * SHAPE.head_dim;
    for (int l = 0; l < SHAPE.n_layer; l++)
        for (int p0 = 0; p0 < SHAPE.seq_len; p0 += chunk) {
            int n = SHAPE.seq_len - p0 < chunk ? SHAPE.seq_len - p0 : chunk;
            float q[10 * 24], k[10 * 8];
            for (int i = 0; i < n; i++) {
                for (int x = 0; x < nq; x++) q[i * nq + x] = val(s, p0 + i, l, 1, x / 8, x % 8);
                for (int x = 0; x < nk; x++) k[i * nk + x] = val(s, p0 + i, l, 0, x / 8, x % 8);
            }
            cr_assert_eq(sl_qk_writer_tap(l, p0, n, q, k, w), 0, "%s", sl_error_detail());
        }
}

Test(qk_dump, round_trip) {
    char *dir = test_tmpdir("qkdump");
    uint8_t fp[32];
    for (int i = 0; i < 32; i++) fp[i] = (uint8_t)(i * 7);
    struct sl_qk_writer *w;
    cr_assert_eq(sl_qk_writer_open(dir, &SHAPE, fp, &w), 0);
    feed(w, 0, 3);
    cr_assert_eq(sl_qk_writer_end_seq(w), 0);
    feed(w, 1, 10);
    cr_assert_eq(sl_qk_writer_end_seq(w), 0);
    cr_assert_eq(sl_qk_writer_finish(w), 0);
    sl_qk_writer_free(w);
    for (int l = 0; l < SHAPE.n_layer; l++) {
        char path[512];
        sl_qk_dump_path(dir, l, path, sizeof path);
        struct sl_qk_dump d;
        cr_assert_eq(sl_qk_dump_open(path, &d), 0, "%s", sl_error_detail());
        cr_assert(d.layer == l && d.n_head == 3 && d.n_head_kv == 1 && d.head_dim == 8 && d.seq_len == 10 && d.n_seq == 2);
        cr_assert(memcmp(d.fingerprint, fp, 32) == 0);
        float out[10 * 8];
        for (int s = 0; s < 2; s++)
            for (int isq = 0; isq < 2; isq++)
                for (int h = 0; h < (isq ? 3 : 1); h++) {
                    sl_qk_dump_head_f32(&d, s, isq, h, out);
                    for (int p = 0; p < 10; p++)
                        for (int j = 0; j < 8; j++)
                            cr_assert_eq(out[p * 8 + j], val(s, p, l, isq, h, j), "s%d p%d l%d q%d h%d j%d", s, p, l, isq, h, j);
                }
        sl_qk_dump_close(&d);
    }
    test_rmtree(dir);
}

Test(qk_dump, incomplete_and_unfinished) {
    char *dir = test_tmpdir("qkdump");
    struct sl_qk_writer *w;
    cr_assert_eq(sl_qk_writer_open(dir, &SHAPE, NULL, &w), 0);
    float q[24] = {0}, k[8] = {0};
    cr_assert_eq(sl_qk_writer_tap(0, 1, 1, q, k, w), SL_EINVAL); /* must start at 0 */
    cr_assert_eq(sl_qk_writer_tap(0, 0, 1, q, k, w), 0);
    cr_assert_eq(sl_qk_writer_end_seq(w), SL_EINVAL);             /* 1 of 10 positions */
    cr_assert_eq(sl_qk_writer_finish(w), SL_EINVAL);              /* no complete sequence */
    sl_qk_writer_free(w);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", dir);
    cr_assert_eq(system(cmd), 0, "an unfinished dump left files behind");
    test_rmtree(dir);
}

Test(qk_dump, damaged_files_rejected) {
    char *dir = test_tmpdir("qkdump");
    struct sl_qk_writer *w;
    cr_assert_eq(sl_qk_writer_open(dir, &SHAPE, NULL, &w), 0);
    feed(w, 0, 4);
    cr_assert_eq(sl_qk_writer_end_seq(w), 0);
    cr_assert_eq(sl_qk_writer_finish(w), 0);
    sl_qk_writer_free(w);
    char path[512];
    sl_qk_dump_path(dir, 1, path, sizeof path);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    struct { long off; int want; } cases[] = {{0, SL_EBADMAGIC}, {20, SL_ECORRUPT}, {4096 + 17, SL_ECORRUPT}, {size - 1, SL_ECORRUPT}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char b;
        fseek(f, cases[i].off, SEEK_SET);
        cr_assert_eq(fread(&b, 1, 1, f), 1);
        b ^= 0x10;
        fseek(f, cases[i].off, SEEK_SET);
        fwrite(&b, 1, 1, f);
        fflush(f);
        struct sl_qk_dump d;
        cr_assert_eq(sl_qk_dump_open(path, &d), cases[i].want, "flip at %ld", cases[i].off);
        b ^= 0x10;
        fseek(f, cases[i].off, SEEK_SET);
        fwrite(&b, 1, 1, f);
        fflush(f);
    }
    cr_assert_eq(ftruncate(fileno(f), size - 2), 0);
    fclose(f);
    struct sl_qk_dump d;
    cr_assert_eq(sl_qk_dump_open(path, &d), SL_EFORMAT);
    test_rmtree(dir);
}
