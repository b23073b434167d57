/* The key-code file beside a KV store (core/code-file.h): a round trip restores the codes
 * exactly, only into a table that wants them; a file for another store content, model, hash
 * or shape is refused as a mismatch, a damaged one as such, and none of that touches the
 * codes of positions or layers the file does not cover. Then, on a generated model, what a
 * resumed context does with it: reads the codes instead of hashing the stored keys, continues
 * exactly as a context that hashed them (or never stopped), and passes over a stale or
 * damaged file. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/code-file.h"
#include "spotlight/context.h"
#include "spotlight/error.h"
#include "spotlight/model.h"
#include "tests/gguf-builder.h"
#include "tests/kv-test-util.h"

#define OK(expr)                                                                               \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        cr_assert_eq(rc_, 0, "%s -> %s (%s)", #expr, sl_strerror(rc_), sl_error_detail());     \
    } while (0)
#define EXPECT_RC(expr, code)                                                                  \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        cr_assert_eq(rc_, code, "%s -> %s (%s), expected %s", #expr, sl_strerror(rc_), sl_error_detail(), \
                     sl_strerror(code));                                                       \
    } while (0)

TestSuite(code_file, .fini = kvt_cleanup, .timeout = 60);

enum { NL = 3, HKV = 2, WORDS = 2, CTX = 100, N = 77 };

static struct sl_code_table table(uint64_t *codes, int32_t first) {
    return (struct sl_code_table){.codes = codes, .n_layer = NL, .n_head_kv = HKV, .words = WORDS,
                                  .first_layer = first, .n_ctx = CTX};
}

static uint64_t *random_codes(uint64_t seed) {
    uint64_t *c = malloc(sizeof(uint64_t) * NL * HKV * CTX * WORDS);
    for (int64_t i = 0; i < NL * HKV * CTX * WORDS; i++) c[i] = kvt_rand(&seed);
    return c;
}

static struct sl_code_source source(void) {
    struct sl_code_source s = {.store = {.n_tokens = N, .tags_crc = 11, .blocks_crc = 22, .open_crc = 33}};
    memset(s.model, 0xA5, 32);
    memset(s.hash, 0x5A, 32);
    return s;
}

static const uint64_t *at(const uint64_t *c, int32_t l, int32_t g, int64_t p) {
    return c + (((int64_t)l * HKV + g) * CTX + p) * WORDS;
}

/* Positions [0, n) of layers [l0, NL) of got equal want's; everything else equals fill's. */
static void expect_codes(const uint64_t *got, const uint64_t *want, const uint64_t *fill, int32_t l0, int64_t n) {
    for (int32_t l = 0; l < NL; l++)
        for (int32_t g = 0; g < HKV; g++)
            for (int64_t p = 0; p < CTX; p++) {
                const uint64_t *e = l >= l0 && p < n ? at(want, l, g, p) : at(fill, l, g, p);
                cr_assert_arr_eq(at(got, l, g, p), e, sizeof(uint64_t) * WORDS, "layer %d head %d position %lld", l,
                                 g, (long long)p);
            }
}

/* A code file saved from a random table (layers 1.., N positions), and a table to load into. */
struct saved {
    uint64_t *codes, *got;
    struct sl_code_source src;
    char *path;
};

static void save_one(struct saved *f) {
    char *dir = kvt_tmpdir();
    cr_assert(dir);
    f->path = kvt_join(dir, "kv.slkv" SL_CODE_FILE_SUFFIX);
    free(dir);
    f->codes = random_codes(1);
    f->got = random_codes(2);
    f->src = source();
    struct sl_code_table t = table(f->codes, 1);
    OK(sl_code_file_save(f->path, &t, &f->src));
}

static void saved_free(struct saved *f) {
    free(f->codes);
    free(f->got);
    free(f->path);
}

Test(code_file, round_trip_restores_the_covered_codes) {
    struct saved f;
    save_one(&f);
    struct stat st;
    cr_assert_eq(stat(f.path, &st), 0);
    cr_assert_eq(st.st_size, 128 + (NL - 1) * HKV * N * WORDS * 8, "size %lld", (long long)st.st_size);
    uint64_t *fill = random_codes(2);
    struct sl_code_table t = table(f.got, 1);
    OK(sl_code_file_load(f.path, &t, &f.src));
    expect_codes(f.got, f.codes, fill, 1, N);
    /* a table wanting fewer layers takes those; one wanting more (layer 0) is refused */
    memcpy(f.got, fill, sizeof(uint64_t) * NL * HKV * CTX * WORDS);
    t.first_layer = 2;
    OK(sl_code_file_load(f.path, &t, &f.src));
    expect_codes(f.got, f.codes, fill, 2, N);
    t.first_layer = 0;
    EXPECT_RC(sl_code_file_load(f.path, &t, &f.src), SL_EMISMATCH);
    char *dir = strdup(f.path);
    *strrchr(dir, '/') = 0;
    cr_assert_eq(kvt_dir_entries(dir), 1, "a temporary was left beside the file");
    free(dir);
    free(fill);
    saved_free(&f);
}

Test(code_file, another_source_or_shape_is_a_mismatch) {
    struct saved f;
    save_one(&f);
    for (int k = 0; k < 9; k++) {
        struct sl_code_source s = f.src;
        struct sl_code_table t = table(f.got, 1);
        switch (k) {
        case 0: s.model[31] ^= 1; break;
        case 1: s.hash[0] ^= 1; break;
        case 2: s.store.n_tokens--; break;
        case 3: s.store.tags_crc++; break;
        case 4: s.store.blocks_crc++; break;
        case 5: s.store.open_crc++; break;
        case 6: t.words = 1; break;
        case 7: t.n_head_kv = 1; break;
        case 8: t.n_ctx = N - 1; break; /* the file covers more positions than the table holds */
        }
        EXPECT_RC(sl_code_file_load(f.path, &t, &s), SL_EMISMATCH);
    }
    saved_free(&f);
}

Test(code_file, damage_is_reported_and_absence_is_enoent) {
    struct saved f;
    save_one(&f);
    const char *path = f.path;
    struct sl_code_table t = table(f.got, 1);
    const struct sl_code_source src = f.src;
    const int64_t size = 128 + (NL - 1) * HKV * N * WORDS * 8;
    const int64_t offs[] = {20, 100, 128, size / 2, size - 1}; /* header fields, payload */
    for (size_t i = 0; i < sizeof offs / sizeof *offs; i++) {
        cr_assert_eq(kvt_flip_bit(path, offs[i], 3), 0);
        EXPECT_RC(sl_code_file_load(path, &t, &src), SL_ECORRUPT);
        cr_assert_eq(kvt_flip_bit(path, offs[i], 3), 0);
    }
    OK(sl_code_file_load(path, &t, &src));
    cr_assert_eq(kvt_flip_bit(path, 0, 0), 0);
    EXPECT_RC(sl_code_file_load(path, &t, &src), SL_EBADMAGIC);
    cr_assert_eq(kvt_flip_bit(path, 0, 0), 0);
    cr_assert_eq(truncate(path, size - 8), 0);
    EXPECT_RC(sl_code_file_load(path, &t, &src), SL_ETRUNCATED);
    cr_assert_eq(truncate(path, size + 8), 0);
    EXPECT_RC(sl_code_file_load(path, &t, &src), SL_EFORMAT);
    cr_assert_eq(truncate(path, 100), 0);
    EXPECT_RC(sl_code_file_load(path, &t, &src), SL_ETRUNCATED);
    /* empty: nothing to map (no pointer arithmetic on the NULL; found by fuzz-code-file) */
    cr_assert_eq(truncate(path, 0), 0);
    EXPECT_RC(sl_code_file_load(path, &t, &src), SL_ETRUNCATED);
    cr_assert_eq(unlink(path), 0);
    EXPECT_RC(sl_code_file_load(path, &t, &src), -ENOENT);
    saved_free(&f);
}

Test(code_file, unwritable_place_fails_cleanly) {
    uint64_t *codes = random_codes(1);
    struct sl_code_source src = source();
    struct sl_code_table t = table(codes, 1);
    char *dir = kvt_tmpdir();
    char *path = kvt_join(dir, "missing/kv.codes");
    cr_assert_lt(sl_code_file_save(path, &t, &src), 0);
    cr_assert_eq(kvt_dir_entries(dir), 0);
    src.store.n_tokens = CTX + 1; /* more positions than the table */
    free(path);
    path = kvt_join(dir, "kv.codes");
    EXPECT_RC(sl_code_file_save(path, &t, &src), SL_EINVAL);
    cr_assert_eq(kvt_dir_entries(dir), 0);
    free(path);
    free(dir);
    free(codes);
}

/* ---- a resumed context ---------------------------------------------------------------------- */

enum { PROMPT = 300, CUT = 3, STEPS = 8, VOCAB = 300 };

static sl_model *g_model;
static void load_model(void) {
    const struct gb_model_spec spec = {.arch = "llama", .n_layer = 3, .n_embd = 256, .n_ff = 384, .n_head = 8,
                                       .n_head_kv = 2, .n_vocab = VOCAB, .n_ctx = 1024, .tied = 1};
    OK(gb_load_model(&spec, &g_model));
}
static void unload_model(void) {
    sl_model_free(g_model);
    kvt_cleanup();
}
TestSuite(code_resume, .init = load_model, .fini = unload_model, .timeout = 120);

static int32_t token(int i) { return (int32_t)((i * 37 + i / 7) % VOCAB); }

/* A context on the store at path (resumed, keeping `keep` positions, when keep >= 0). */
static sl_context *open_ctx(const char *path, int64_t keep, struct sl_attn_stats *st) {
    struct sl_context_params p = sl_context_default_params();
    p.n_ctx = 512, p.n_batch = 64, p.n_threads = 2, p.kv_path = path;
    p.kv_resume = keep >= 0, p.kv_resume_keep = keep > 0 ? keep : 0;
    p.kv_overwrite = keep < 0; /* a fresh store replaces the one before */
    struct sl_attn_params a = sl_attn_default_params(SL_ATTN_SIMHASH);
    a.budget = 0.05f, a.min_tokens = 8, a.dense_layers = 1;
    sl_context *c = NULL;
    OK(sl_context_create(g_model, &p, &c));
    OK(sl_context_set_attention(c, &a));
    sl_context_attn_stats(c, st);
    return c;
}

/* Decode tokens [from, STEPS) after the prompt; their logits into out (STEPS, VOCAB) rows. */
static void decode(sl_context *c, int from, float *out) {
    for (int s = from; s < STEPS; s++) {
        int32_t t = token(PROMPT + s);
        OK(sl_context_eval(c, &t, 1, false));
        memcpy(out + (size_t)s * VOCAB, sl_context_logits(c), sizeof(float) * VOCAB);
    }
}

static void expect_resume(const char *path, bool codes_read, const float *want) {
    struct sl_attn_stats st;
    sl_context *c = open_ctx(path, PROMPT + CUT, &st);
    cr_assert_eq(st.resume_positions, PROMPT + CUT);
    cr_assert_eq(st.resume_codes_read, codes_read, "codes %s the code file", codes_read ? "not read from" : "read from");
    float *got = calloc((size_t)STEPS * VOCAB, sizeof(float));
    decode(c, CUT, got);
    for (int s = CUT; s < STEPS; s++)
        cr_assert_arr_eq(got + (size_t)s * VOCAB, want + (size_t)s * VOCAB, sizeof(float) * VOCAB,
                         "decode step %d after a resume (codes %s)", s, codes_read ? "read" : "hashed");
    sl_context_free(c);
    free(got);
}

static ino_t inode(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

Test(code_resume, codes_read_give_what_hashing_gives) {
    char *dir = kvt_tmpdir();
    char *path = kvt_join(dir, "kv.slkv"), *codes = kvt_join(dir, "kv.slkv" SL_CODE_FILE_SUFFIX);
    char *old = kvt_join(dir, "old.codes");
    /* the reference: never interrupted */
    struct sl_attn_stats st;
    sl_context *c = open_ctx(path, -1, &st);
    int32_t prompt[PROMPT];
    for (int i = 0; i < PROMPT; i++) prompt[i] = token(i);
    OK(sl_context_eval(c, prompt, PROMPT, false));
    float *want = calloc((size_t)STEPS * VOCAB, sizeof(float));
    decode(c, 0, want);
    sl_context_free(c);
    cr_assert(inode(codes), "no code file after a clean close");
    /* resumed at PROMPT + CUT: codes from the file (saved for more positions: the prefix's are
     * the same), then with the file gone (hashed), then from the file that run saved */
    expect_resume(path, true, want);
    cr_assert_eq(unlink(codes), 0);
    expect_resume(path, false, want);
    expect_resume(path, true, want);
    /* a resume that changes nothing leaves the file as it is */
    ino_t before = inode(codes);
    c = open_ctx(path, 0, &st);
    cr_assert(st.resume_codes_read);
    sl_context_free(c);
    cr_assert_eq(inode(codes), before, "an unchanged store's code file was written again");
    /* stale: the store moved on (another token at PROMPT + CUT) after the file was copied */
    cr_assert_eq(kvt_copy_file(codes, old), 0);
    c = open_ctx(path, PROMPT + CUT, &st);
    int32_t other = token(PROMPT + CUT) ^ 1;
    OK(sl_context_eval(c, &other, 1, false));
    sl_context_free(c);
    cr_assert_eq(rename(old, codes), 0);
    c = open_ctx(path, 0, &st);
    cr_assert(!st.resume_codes_read, "a code file for other content was used");
    sl_context_free(c); /* saves the right one */
    /* damaged */
    struct stat fs;
    cr_assert_eq(stat(codes, &fs), 0);
    cr_assert_eq(kvt_flip_bit(codes, fs.st_size - 5, 1), 0);
    expect_resume(path, false, want);
    /* a new store in its place takes the old one's code file away */
    cr_assert(inode(codes));
    c = open_ctx(path, -1, &st);
    cr_assert(!inode(codes), "a new store kept the replaced store's code file");
    sl_context_free(c); /* empty: a code file of no positions */
    free(want);
    free(old);
    free(codes);
    free(path);
    free(dir);
}
