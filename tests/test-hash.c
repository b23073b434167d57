/* Hash functions and their file: SHA-256 against FIPS 180-2's vectors; encoding (sign(x) when
 * the MLP is zero, bit order, the sgemm batch path against the one-vector loops and a double
 * precision reference); SimHash determinism and balance; the file's round trip and its
 * rejection of every truncation, every flipped byte and each malformed field; the model
 * fingerprint on the cached models (skipped when they are absent). */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/sha256.h"
#include "cpu/dispatch.h"
#include "spotlight/error.h"
#include "storage/crc32c.h"
#include "tests/model-cache.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static uint64_t g_rng = 0x1234567887654321u;

static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static float gauss(void) {
    double u1 = ((rnd() >> 11) + 1) * 0x1p-53, u2 = (rnd() >> 11) * 0x1p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

static void hex32(const uint8_t d[32], char out[65]) {
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

static sl_hash *make(int32_t layers, int32_t hq, int32_t hkv, int32_t d, int32_t bits,
                     enum sl_hash_kind kind, uint64_t seed) {
    struct sl_hash_params p = sl_hash_default_params();
    p.n_layer = layers;
    p.n_head_q = hq;
    p.n_head_kv = hkv;
    p.head_dim = d;
    p.bits = bits;
    p.kind = kind;
    p.seed = seed;
    sl_hash *h = NULL;
    int rc = sl_hash_create(&p, &h);
    cr_assert_eq(rc, 0, "%s", sl_error_detail());
    return h;
}

/* Weights large enough that the MLP changes the codes (the initial 1e-3 barely does). */
static void randomize(sl_hash *h, float scale) {
    for (int32_t l = 0; l < sl_hash_get_params(h)->n_layer; l++) {
        int64_t n;
        float *w = sl_hash_layer_weights(h, l, &n);
        for (int64_t i = 0; i < n; i++) w[i] = gauss() * scale;
    }
}

/* Double-precision reference of the function in hash.h. */
static void ref_forward(const struct sl_hash_fn *f, const float *x, double *y) {
    int d = f->d;
    double h[1024], r[1024];
    for (int i = 0; i < d; i++) h[i] = x[i];
    if (f->flags & SL_HASH_MLP) {
        for (int o = 0; o < d; o++) {
            double a = f->b1[o];
            for (int i = 0; i < d; i++) a += (double)f->w1[o * d + i] * x[i];
            r[o] = a / (1 + exp(-a)) + x[o];
        }
        for (int o = 0; o < d; o++) {
            double a = f->b2[o] + r[o];
            for (int i = 0; i < d; i++) a += (double)f->w2[o * d + i] * r[i];
            h[o] = a;
        }
    }
    for (int o = 0; o < f->bits; o++) {
        if (!(f->flags & SL_HASH_PROJ)) {
            y[o] = h[o];
            continue;
        }
        double a = 0;
        for (int i = 0; i < d; i++) a += (double)f->proj[o * d + i] * h[i];
        y[o] = a;
    }
}

static int bit(const uint64_t *code, int i) { return (int)(code[i / 64] >> (i % 64) & 1); }

static uint8_t *serialize(const sl_hash *h, const uint8_t *fp, size_t *n) {
    uint8_t *b = NULL;
    int rc = sl_hash_serialize(h, fp, &b, n);
    cr_assert_eq(rc, 0, "%s", sl_error_detail());
    return b;
}

/* ---- SHA-256 ------------------------------------------------------------------------------ */

static void check_sha(const void *data, size_t n, const char *want) {
    uint8_t d[32];
    char hex[65];
    sl_sha256(data, n, d);
    hex32(d, hex);
    cr_assert_str_eq(hex, want);
    /* streamed in uneven pieces: the same digest */
    struct sl_sha256 s;
    sl_sha256_init(&s);
    const uint8_t *p = data;
    for (size_t off = 0, step = 1; off < n; off += step, step = step * 3 % 131 + 1)
        sl_sha256_update(&s, p + off, step < n - off ? step : n - off);
    sl_sha256_final(&s, d);
    hex32(d, hex);
    cr_assert_str_eq(hex, want);
}

Test(sha256, fips_180_2_vectors) {
    check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_sha(m448, strlen(m448), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    check_sha(a, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

Test(sha256, padding_boundaries) {
    /* Lengths around the 56-byte padding boundary, against the one-shot digest of the same
     * bytes fed one at a time. */
    uint8_t buf[130];
    for (int i = 0; i < 130; i++) buf[i] = (uint8_t)(i * 7 + 1);
    for (size_t n = 50; n <= 130; n++) {
        uint8_t a[32], b[32];
        sl_sha256(buf, n, a);
        struct sl_sha256 s;
        sl_sha256_init(&s);
        for (size_t i = 0; i < n; i++) sl_sha256_update(&s, buf + i, 1);
        sl_sha256_final(&s, b);
        cr_assert_arr_eq(a, b, 32, "length %zu", n);
    }
}

/* ---- encoding ----------------------------------------------------------------------------- */

Test(hash_encode, zero_mlp_is_sign_of_x) {
    sl_hash *h = make(1, 2, 1, 64, 64, SL_HASH_SPOTLIGHT, 1);
    cr_assert_eq(sl_hash_flags(h), SL_HASH_MLP, "bits == d: no projection");
    struct sl_hash_fn *f = sl_hash_fn_mut(h, SL_HASH_QUERY, 0, 1);
    memset(f->w1, 0, 64 * 64 * sizeof(float));
    memset(f->b1, 0, 64 * sizeof(float));
    memset(f->w2, 0, 64 * 64 * sizeof(float));
    memset(f->b2, 0, 64 * sizeof(float));
    enum { N = 40 };
    float x[N * 64];
    for (int i = 0; i < N * 64; i++) x[i] = gauss();
    uint64_t codes[N], one;
    float *work = malloc(sl_hash_work_floats(64, 64, N) * sizeof(float));
    cr_assert_eq(sl_hash_encode(f, 64, 64, x, N, codes, work), 0);
    for (int r = 0; r < N; r++) {
        uint64_t want = 0;
        for (int i = 0; i < 64; i++) want |= (uint64_t)(x[r * 64 + i] > 0) << i;
        cr_assert_eq(codes[r], want, "row %d", r);
        cr_assert_eq(sl_hash_encode(f, 64, 64, x + r * 64, 1, &one, work), 0);
        cr_assert_eq(one, want, "row %d alone", r);
    }
    /* untrained (1e-3 weights): still sign(x) for inputs away from zero */
    const struct sl_hash_fn *g = sl_hash_key_fn(h, 0, 0);
    for (int i = 0; i < N * 64; i++) x[i] = (x[i] < 0 ? -0.5f : 0.5f) + x[i];
    cr_assert_eq(sl_hash_encode(g, 64, 64, x, N, codes, work), 0);
    for (int r = 0; r < N; r++)
        for (int i = 0; i < 64; i++) cr_assert_eq(bit(&codes[r], i), x[r * 64 + i] > 0);
    free(work);
    sl_hash_free(h);
}

Test(hash_encode, bit_order) {
    sl_hash *h = make(1, 1, 1, 128, 128, SL_HASH_SPOTLIGHT, 2);
    struct sl_hash_fn *f = sl_hash_fn_mut(h, SL_HASH_KEY, 0, 0);
    memset(f->w1, 0, sizeof(float) * (2 * 128 * 128 + 2 * 128)); /* w1, b1, w2, b2 are adjacent */
    float x[128], work[4 * 128];
    for (int i = 0; i < 128; i++) {
        for (int j = 0; j < 128; j++) x[j] = j == i ? 1.0f : -1.0f;
        uint64_t c[2];
        cr_assert_eq(sl_hash_encode(f, 128, 128, x, 1, c, work), 0);
        cr_assert_eq(c[i / 64], UINT64_C(1) << (i % 64), "component %d", i);
        cr_assert_eq(c[1 - i / 64], 0);
    }
    sl_hash_free(h);
}

/* Batch (sgemm), one at a time (loops) and the double reference agree: pre-sign values to a
 * tolerance, codes exactly wherever the reference is not within rounding of zero. */
static void check_paths(int32_t d, int32_t bits, enum sl_hash_kind kind, int64_t n) {
    sl_hash *h = make(2, 4, 2, d, bits, kind, 7);
    randomize(h, 1.0f / sqrtf((float)d));
    const struct sl_hash_fn *f = sl_hash_query_fn(h, 1, 3);
    int32_t W = sl_hash_code_words(bits);
    float *x = malloc(sizeof(float) * n * d), *y = malloc(sizeof(float) * n * bits), y1[4096];
    float *work = malloc(sizeof(float) * sl_hash_work_floats(d, bits, n));
    uint64_t *codes = malloc(sizeof(uint64_t) * n * W), c1[64];
    double ref[4096];
    for (int64_t i = 0; i < n * d; i++) x[i] = gauss();
    cr_assert_eq(sl_hash_forward(f, d, bits, x, n, y, work), 0);
    cr_assert_eq(sl_hash_encode(f, d, bits, x, n, codes, work), 0);
    int64_t checked = 0;
    for (int64_t r = 0; r < n; r++) {
        ref_forward(f, x + r * d, ref);
        cr_assert_eq(sl_hash_forward(f, d, bits, x + r * d, 1, y1, work), 0);
        cr_assert_eq(sl_hash_encode(f, d, bits, x + r * d, 1, c1, work), 0);
        double scale = 1;
        for (int i = 0; i < bits; i++) scale = fmax(scale, fabs(ref[i]));
        for (int i = 0; i < bits; i++) {
            double tol = 1e-5 * scale;
            cr_assert(fabs(y[r * bits + i] - ref[i]) <= tol, "d %d bits %d row %ld [%d]: batch %g ref %g",
                      d, bits, (long)r, i, y[r * bits + i], ref[i]);
            cr_assert(fabs(y1[i] - ref[i]) <= tol, "row %ld [%d]: single %g ref %g", (long)r, i, y1[i], ref[i]);
            if (fabs(ref[i]) > 1e-4 * scale) {
                cr_assert_eq(bit(codes + r * W, i), ref[i] > 0, "d %d bits %d row %ld bit %d", d, bits, (long)r, i);
                cr_assert_eq(bit(c1, i), ref[i] > 0, "row %ld bit %d alone", (long)r, i);
                checked++;
            }
        }
    }
    cr_assert(checked > n * bits * 9 / 10, "too few bits away from zero: %ld", (long)checked);
    /* bits past b (when b is not a multiple of 64) are zero in every code */
    for (int64_t r = 0; bits % 64 && r < n; r++)
        cr_assert_eq(codes[r * W + W - 1] >> (bits % 64), 0, "row %ld has padding bits set", (long)r);
    free(x);
    free(y);
    free(work);
    free(codes);
    sl_hash_free(h);
}

Test(hash_encode, batch_equals_single_and_reference) {
    /* both the AVX2 kernels (where the CPU has them) and the portable loops */
    for (int scalar = 0; scalar < 2; scalar++) {
        sl_cpu_force_scalar(scalar);
        check_paths(64, 64, SL_HASH_SPOTLIGHT, 300); /* MLP only; crosses a 256-row slice */
        check_paths(64, 128, SL_HASH_SPOTLIGHT, 513); /* MLP + projection */
        check_paths(48, 64, SL_HASH_SPOTLIGHT, 3);
        check_paths(20, 64, SL_HASH_SPOTLIGHT, 5);    /* rows and columns off the 8-wide blocks */
        check_paths(64, 256, SL_HASH_SIMHASH, 257);
        check_paths(7, 64, SL_HASH_SIMHASH, 2);
        check_paths(64, 32, SL_HASH_SPOTLIGHT, 300);  /* half a word */
        check_paths(64, 96, SL_HASH_SIMHASH, 9);      /* a word and a half */
    }
    sl_cpu_force_scalar(0);
}

Test(hash_encode, bad_arguments) {
    sl_hash *h = make(1, 1, 1, 64, 128, SL_HASH_SPOTLIGHT, 3);
    const struct sl_hash_fn *f = sl_hash_key_fn(h, 0, 0);
    float x[64] = {0}, work[4 * 128];
    uint64_t c[2];
    cr_assert_eq(sl_hash_encode(f, 32, 128, x, 1, c, work), SL_EINVAL);
    cr_assert_eq(sl_hash_encode(f, 64, 64, x, 1, c, work), SL_EINVAL);
    cr_assert_eq(sl_hash_encode(f, 64, 128, NULL, 1, c, work), SL_EINVAL);
    cr_assert_eq(sl_hash_encode(f, 64, 128, x, -1, c, work), SL_EINVAL);
    cr_assert_eq(sl_hash_encode(f, 64, 128, NULL, 0, NULL, NULL), 0);
    sl_hash_free(h);

    struct sl_hash_params p = sl_hash_default_params();
    p.n_layer = 2, p.n_head_q = 6, p.n_head_kv = 4, p.head_dim = 64;
    cr_assert_eq(sl_hash_create(&p, &h), SL_EINVAL, "n_head_q not a multiple of n_head_kv");
    p.n_head_q = 8, p.bits = 80;
    cr_assert_eq(sl_hash_create(&p, &h), SL_EINVAL, "bits not a multiple of 32");
    p.bits = 0;
    cr_assert_eq(sl_hash_create(&p, &h), SL_EINVAL, "no bits");
    p.bits = 64, p.kind = 9;
    cr_assert_eq(sl_hash_create(&p, &h), SL_EINVAL, "unknown kind");
    p.kind = SL_HASH_SPOTLIGHT, p.head_dim = 0;
    cr_assert_eq(sl_hash_create(&p, &h), SL_EINVAL, "head_dim 0");
    p.head_dim = 32;
    cr_assert_eq(sl_hash_alloc(&p, SL_HASH_MLP, &h), SL_EINVAL, "64 bits of 32 dims without projection");
}

/* ---- initialisation ----------------------------------------------------------------------- */

Test(hash_init, simhash_deterministic_and_balanced) {
    sl_hash *a = make(3, 4, 2, 64, 256, SL_HASH_SIMHASH, 42), *b = make(3, 4, 2, 64, 256, SL_HASH_SIMHASH, 42);
    sl_hash *c = make(3, 4, 2, 64, 256, SL_HASH_SIMHASH, 43);
    cr_assert_eq(sl_hash_flags(a), SL_HASH_PROJ);
    int64_t n;
    for (int32_t l = 0; l < 3; l++) {
        float *wa = sl_hash_layer_weights(a, l, &n), *wb = sl_hash_layer_weights(b, l, NULL);
        cr_assert_eq(n, 6 * 256 * 64);
        cr_assert_arr_eq(wa, wb, n * sizeof(float), "same seed, layer %d", l);
        cr_assert_neq(memcmp(wa, sl_hash_layer_weights(c, l, NULL), n * sizeof(float)), 0);
    }
    /* a KV head's key function and its group's query functions share one projection (else
     * SimHash codes of q and k would not be comparable); other KV heads and layers differ;
     * entries look like N(0, 1) */
    const struct sl_hash_fn *k0 = sl_hash_key_fn(a, 0, 0), *q0 = sl_hash_query_fn(a, 0, 0);
    const size_t pb = 256 * 64 * sizeof(float);
    cr_assert_eq(memcmp(k0->proj, q0->proj, pb), 0);
    cr_assert_eq(memcmp(k0->proj, sl_hash_query_fn(a, 0, 1)->proj, pb), 0);
    cr_assert_eq(memcmp(sl_hash_key_fn(a, 0, 1)->proj, sl_hash_query_fn(a, 0, 3)->proj, pb), 0);
    cr_assert_neq(memcmp(k0->proj, sl_hash_key_fn(a, 0, 1)->proj, pb), 0);
    cr_assert_neq(memcmp(k0->proj, sl_hash_query_fn(a, 0, 2)->proj, pb), 0);
    cr_assert_neq(memcmp(k0->proj, sl_hash_key_fn(a, 1, 0)->proj, pb), 0);
    double s = 0, s2 = 0;
    for (int i = 0; i < 256 * 64; i++) s += q0->proj[i], s2 += (double)q0->proj[i] * q0->proj[i];
    s /= 256 * 64;
    s2 /= 256 * 64;
    cr_assert(fabs(s) < 0.03 && fabs(s2 - 1) < 0.05, "mean %g, mean square %g", s, s2);

    /* re-initialising a layer restores exactly what create made */
    float *w = sl_hash_layer_weights(a, 1, &n);
    float *saved = malloc(n * sizeof(float));
    memcpy(saved, w, n * sizeof(float));
    randomize(a, 1);
    struct sl_hash_layer_info info = {SL_HASH_TRAINED, 10, 0.5f, 0.9f, 0.1f};
    cr_assert_eq(sl_hash_layer_info_set(a, 1, &info), 0);
    sl_hash_reset_layer(a, 1);
    cr_assert_arr_eq(w, saved, n * sizeof(float));
    sl_hash_layer_info_get(a, 1, &info);
    cr_assert_eq(info.status, SL_HASH_INITIAL);
    cr_assert_eq(info.steps, 0);
    free(saved);

    /* about half the bits set, each bit about half the time */
    enum { N = 2000 };
    float *x = malloc(sizeof(float) * N * 64), *work = malloc(sizeof(float) * sl_hash_work_floats(64, 256, N));
    uint64_t *codes = malloc(sizeof(uint64_t) * N * 4);
    for (int i = 0; i < N * 64; i++) x[i] = gauss();
    cr_assert_eq(sl_hash_encode(q0, 64, 256, x, N, codes, work), 0);
    int64_t ones = 0;
    for (int i = 0; i < N * 4; i++) ones += __builtin_popcountll(codes[i]);
    double frac = (double)ones / (N * 256.0);
    cr_assert(fabs(frac - 0.5) < 0.01, "fraction of bits set %g", frac);
    for (int i = 0; i < 256; i++) {
        int c1 = 0;
        for (int r = 0; r < N; r++) c1 += bit(codes + r * 4, i);
        cr_assert(c1 > N * 0.4 && c1 < N * 0.6, "bit %d set %d of %d times", i, c1, N);
    }
    free(x);
    free(work);
    free(codes);
    sl_hash_free(a);
    sl_hash_free(b);
    sl_hash_free(c);
}

Test(hash_init, spotlight_shapes_and_scale) {
    sl_hash *h = make(2, 9, 3, 64, 128, SL_HASH_SPOTLIGHT, 5);
    cr_assert_eq(sl_hash_flags(h), SL_HASH_MLP | SL_HASH_PROJ);
    cr_assert_eq(sl_hash_fn_floats(h), 2 * 64 * 64 + 2 * 64 + 128 * 64);
    const struct sl_hash_fn *f = sl_hash_query_fn(h, 1, 8);
    cr_assert(f->w1 && f->b1 && f->w2 && f->b2 && f->proj);
    cr_assert_eq(f->b1, f->w1 + 64 * 64);
    cr_assert_eq(f->proj, f->b2 + 64);
    float m = 0;
    for (int i = 0; i < 64 * 64; i++) m = fmaxf(m, fabsf(f->w2[i]));
    cr_assert(m > 1e-4f && m < 1e-2f, "MLP weights start near zero (max %g)", m);
    int64_t n;
    float *w = sl_hash_layer_weights(h, 1, &n);
    cr_assert_eq(n, 12 * sl_hash_fn_floats(h));
    cr_assert_eq(sl_hash_key_fn(h, 1, 0)->w1, w);
    cr_assert_eq(f->w1, w + 11 * sl_hash_fn_floats(h), "queries follow the keys");
    sl_hash_free(h);
}

/* ---- the file ----------------------------------------------------------------------------- */

static const uint8_t FP_A[32] = {0xa1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t FP_B[32] = {0xb2};

/* A small hash with everything set: trained and partial layers, a note, random weights. */
static sl_hash *small_hash(void) {
    sl_hash *h = make(3, 4, 2, 16, 128, SL_HASH_SPOTLIGHT, 99);
    randomize(h, 0.25f);
    struct sl_hash_layer_info t = {SL_HASH_TRAINED, 1500, 0.125f, 0.875f, 0.05f};
    struct sl_hash_layer_info p = {SL_HASH_PARTIAL, 300, 0.5f, NAN, NAN};
    cr_assert_eq(sl_hash_layer_info_set(h, 0, &t), 0);
    cr_assert_eq(sl_hash_layer_info_set(h, 2, &p), 0);
    cr_assert_eq(sl_hash_set_note(h, "lr=1e-3 corpus=austen steps=1500"), 0);
    return h;
}

static void assert_same(const sl_hash *a, const sl_hash *b) {
    cr_assert_arr_eq(sl_hash_get_params(a), sl_hash_get_params(b), sizeof(struct sl_hash_params));
    cr_assert_eq(sl_hash_flags(a), sl_hash_flags(b));
    cr_assert_str_eq(sl_hash_note(a), sl_hash_note(b));
    for (int32_t l = 0; l < sl_hash_get_params(a)->n_layer; l++) {
        int64_t n, m;
        float *wa = sl_hash_layer_weights((sl_hash *)a, l, &n), *wb = sl_hash_layer_weights((sl_hash *)b, l, &m);
        cr_assert_eq(n, m);
        cr_assert_arr_eq(wa, wb, n * sizeof(float), "layer %d weights", l);
        struct sl_hash_layer_info ia, ib;
        sl_hash_layer_info_get(a, l, &ia);
        sl_hash_layer_info_get(b, l, &ib);
        cr_assert(ia.status == ib.status && ia.steps == ib.steps, "layer %d info", l);
        /* bitwise, so that NaN ("unknown") round-trips too */
        cr_assert(!memcmp(&ia.loss, &ib.loss, 4) && !memcmp(&ia.recall, &ib.recall, 4) &&
                  !memcmp(&ia.budget, &ib.budget, 4), "layer %d metrics", l);
    }
}

Test(hash_file, save_load_round_trip) {
    sl_hash *h = small_hash();
    char dir[] = "/tmp/sl-test-hash-XXXXXX", path[256];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/h.slhash", dir);
    cr_assert_eq(sl_hash_save(h, FP_A, path), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_hash_save(h, FP_A, path), 0, "replacing an existing file");
    sl_hash *g = NULL;
    cr_assert_eq(sl_hash_load(path, FP_A, &g), 0, "%s", sl_error_detail());
    assert_same(h, g);
    uint8_t fp[32];
    sl_hash_fingerprint(g, fp);
    cr_assert_arr_eq(fp, FP_A, 32);

    /* canonical: the loaded hash serializes to the file's bytes, and keeps its fingerprint */
    FILE *fh = fopen(path, "rb");
    cr_assert(fh);
    static uint8_t file[1 << 20];
    size_t n = fread(file, 1, sizeof file, fh);
    fclose(fh);
    size_t m;
    uint8_t *b = serialize(g, NULL, &m);
    cr_assert_eq(m, n);
    cr_assert_arr_eq(b, file, n);
    free(b);

    /* codes from the loaded hash are the original's */
    float x[5 * 16], work[5 * (32 + 128)];
    uint64_t c1[10], c2[10];
    for (int i = 0; i < 5 * 16; i++) x[i] = gauss();
    cr_assert_eq(sl_hash_encode(sl_hash_query_fn(h, 2, 3), 16, 128, x, 5, c1, work), 0);
    cr_assert_eq(sl_hash_encode(sl_hash_query_fn(g, 2, 3), 16, 128, x, 5, c2, work), 0);
    cr_assert_arr_eq(c1, c2, sizeof c1);

    /* no stray temporary files */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", dir);
    cr_assert_eq(system(cmd), 0, "temporary file left behind");
    unlink(path);
    rmdir(dir);
    sl_hash_free(g);
    sl_hash_free(h);
}

Test(hash_file, fingerprint_checked) {
    sl_hash *h = small_hash(), *g = NULL;
    size_t n;
    uint8_t *b = serialize(h, FP_A, &n);
    cr_assert_eq(sl_hash_load_bytes(b, n, FP_B, &g), SL_EMISMATCH);
    cr_assert_null(g);
    cr_assert_eq(sl_hash_load_bytes(b, n, FP_A, &g), 0);
    sl_hash_free(g);
    cr_assert_eq(sl_hash_load_bytes(b, n, NULL, &g), 0, "NULL: not checked");
    sl_hash_free(g);
    cr_assert_eq(sl_hash_load("/nonexistent/h.slhash", NULL, &g), -ENOENT);
    cr_assert_eq(sl_hash_save(h, NULL, "/nonexistent/h.slhash"), -ENOENT);

    /* a diverged trainer's weights are refused rather than written as an unloadable file */
    char dir[] = "/tmp/sl-test-hash-XXXXXX", path[256], cmd[300];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/h.slhash", dir);
    sl_hash_fn_mut(h, SL_HASH_QUERY, 2, 1)->b2[3] = NAN;
    cr_assert_eq(sl_hash_save(h, NULL, path), SL_EINVAL);
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", dir);
    cr_assert_eq(system(cmd), 0, "a file or temporary file was left behind");
    rmdir(dir);
    free(b);
    sl_hash_free(h);
}

Test(hash_file, every_truncation_rejected) {
    sl_hash *h = small_hash(), *g = NULL;
    size_t n;
    uint8_t *b = serialize(h, FP_A, &n);
    for (size_t k = 0; k < n; k++) {
        uint8_t *c = malloc(k + 1); /* exact size, so ASan sees any over-read */
        memcpy(c, b, k);
        int rc = sl_hash_load_bytes(c, k, NULL, &g);
        cr_assert_eq(rc, SL_ETRUNCATED, "%zu of %zu bytes: %s (%s)", k, n, sl_strerror(rc), sl_error_detail());
        free(c);
    }
    free(b);
    sl_hash_free(h);
}

Test(hash_file, every_flipped_byte_rejected) {
    /* small enough to load once per flipped bit (about 11 KB) */
    sl_hash *h = make(2, 1, 1, 8, 64, SL_HASH_SPOTLIGHT, 4), *g = NULL;
    cr_assert_eq(sl_hash_flags(h), SL_HASH_MLP | SL_HASH_PROJ);
    cr_assert_eq(sl_hash_set_note(h, "note"), 0);
    size_t n;
    uint8_t *b = serialize(h, FP_A, &n);
    for (size_t k = 0; k < n; k++)
        for (int m = 0; m < 2; m++) {
            b[k] ^= m ? 0x80 : 0x01;
            int rc = sl_hash_load_bytes(b, n, NULL, &g);
            cr_assert(rc < 0, "byte %zu flipped: accepted", k);
            if (k >= 128) cr_assert_eq(rc, SL_ECORRUPT, "byte %zu: %s", k, sl_strerror(rc));
            b[k] ^= m ? 0x80 : 0x01;
        }
    cr_assert_eq(sl_hash_load_bytes(b, n, NULL, &g), 0);
    sl_hash_free(g);
    free(b);
    sl_hash_free(h);
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void reseal_header(uint8_t *b) { put32(b + 124, sl_crc32c(0, b, 124)); }

/* Each malformed field, with checksums repaired so that the field check itself must fire. */
Test(hash_file, malformed_fields) {
    sl_hash *h = small_hash(), *g = NULL;
    size_t n;
    uint8_t *b = serialize(h, FP_A, &n), *c = malloc(n + 8);
#define CASE(want, edit)                                                                       \
    do {                                                                                       \
        memcpy(c, b, n);                                                                       \
        size_t len = n;                                                                        \
        edit;                                                                                  \
        int rc = sl_hash_load_bytes(c, len, NULL, &g);                                         \
        cr_assert_eq(rc, want, "%s: got %s (%s)", #edit, sl_strerror(rc), sl_error_detail()); \
    } while (0)
    CASE(SL_EBADMAGIC, c[0] = 'X');
    CASE(SL_ETRUNCATED, (c[7] = '2', len = 5)); /* only the first 5 bytes are seen: they match */
    CASE(SL_EBADMAGIC, (c[3] = 'x', len = 5));
    CASE(SL_EVERSION, (put32(c + 8, 2), reseal_header(c)));
    CASE(SL_EFORMAT, (put32(c + 12, 256), reseal_header(c)));
    CASE(SL_EFORMAT, (c[100] = 1, reseal_header(c)));
    CASE(SL_EFORMAT, (put32(c + 48, 0), reseal_header(c)));
    CASE(SL_EFORMAT, (put32(c + 48, 4097), reseal_header(c)));
    CASE(SL_EFORMAT, (put32(c + 52, 3), reseal_header(c))); /* 3 q heads over 2 kv heads */
    CASE(SL_EFORMAT, (put32(c + 60, 0x80000000u), reseal_header(c)));
    CASE(SL_EFORMAT, (put32(c + 64, 100), reseal_header(c)));
    CASE(SL_EFORMAT, (put32(c + 68, 3), reseal_header(c)));
    CASE(SL_EFORMAT, (put32(c + 72, 1), reseal_header(c))); /* 128 bits of 16 dims, no projection */
    CASE(SL_EFORMAT, (put32(c + 72, 7), reseal_header(c)));
    CASE(SL_EFORMAT, (put32(c + 76, 65537), reseal_header(c)));
    CASE(SL_EFORMAT, (c[88] ^= 1, reseal_header(c))); /* declared size */
    CASE(SL_EFORMAT, (c[n] = 0, len = n + 1));         /* trailing byte */
    /* absurd shape whose declared size is consistent with it: the bytes cannot hold it, and
     * nothing of that size is allocated first */
    uint64_t lf = (1024 + 1024) * (uint64_t)(2 * 1024 * 1024 + 2 * 1024 + 4096 * 1024);
    uint64_t size = 128 + 4096 * 32 + strlen(sl_hash_note(h)) + 4 + 4096 * (4 * lf + 4);
    CASE(SL_ETRUNCATED, (put32(c + 48, 4096), put32(c + 52, 1024), put32(c + 56, 1024),
                         put32(c + 60, 1024), put32(c + 64, 4096), put32(c + 72, 3),
                         put32(c + 88, (uint32_t)size), put32(c + 92, (uint32_t)(size >> 32)),
                         reseal_header(c)));
    free(c);
    free(b);
    sl_hash_free(h);
#undef CASE
}

/* Fields behind the header: records, note, weights (checksums repaired). */
Test(hash_file, malformed_body) {
    sl_hash *h = small_hash(), *g = NULL;
    size_t n;
    uint8_t *b = serialize(h, FP_A, &n);
    size_t note_len = strlen(sl_hash_note(h)), meta_end = 128 + 3 * 32 + note_len;
    size_t w0 = meta_end + 4; /* first weight of layer 0 */
    size_t layer_bytes = (size_t)sl_hash_fn_floats(h) * 6 * 4;
    struct {
        size_t off;
        uint32_t val;
        int want;
    } cases[] = {
        {128, 3, SL_EFORMAT},                     /* status */
        {128 + 4, 1, SL_EFORMAT},                 /* reserved */
        {128 + 32 + 28, 1, SL_EFORMAT},           /* reserved */
        {128 + 12, 0x80000000u, SL_EFORMAT},      /* steps >= 2^63 */
        {128 + 3 * 32, 0x00414141u, SL_EFORMAT},  /* NUL inside the note */
        {w0 + 8, 0x7fc00000u, SL_EFORMAT},        /* NaN weight */
        {w0 + layer_bytes + 4 + 20, 0x7f800000u, SL_EFORMAT}, /* +inf in layer 1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *c = malloc(n);
        memcpy(c, b, n);
        put32(c + cases[i].off, cases[i].val);
        put32(c + meta_end, sl_crc32c(0, c + 128, meta_end - 128));
        for (size_t l = 0, p = w0; l < 3; l++, p += layer_bytes + 4)
            put32(c + p + layer_bytes, sl_crc32c(0, c + p, layer_bytes));
        int rc = sl_hash_load_bytes(c, n, NULL, &g);
        cr_assert_eq(rc, cases[i].want, "case %zu: %s (%s)", i, sl_strerror(rc), sl_error_detail());
        free(c);
    }
    free(b);
    sl_hash_free(h);
}

Test(hash_file, empty_and_simhash_files) {
    sl_hash *g = NULL;
    cr_assert_eq(sl_hash_load_bytes(NULL, 0, NULL, &g), SL_ETRUNCATED);
    sl_hash *h = make(1, 1, 1, 8, 64, SL_HASH_SIMHASH, 1);
    size_t n;
    uint8_t *b = serialize(h, NULL, &n);
    cr_assert_eq(n, 128 + 32 + 4 + 2 * 64 * 8 * 4 + 4); /* one layer: two functions, one CRC */
    cr_assert_eq(sl_hash_load_bytes(b, n, (uint8_t[32]){0}, &g), 0, "%s", sl_error_detail());
    assert_same(h, g);
    free(b);
    sl_hash_free(g);
    sl_hash_free(h);
}

/* ---- model fingerprint -------------------------------------------------------------------- */

static sl_model *load_if_cached(const char *file) {
    char path[4096];
    test_model_path(file, path, sizeof path);
    if (access(path, R_OK) != 0) return NULL;
    return test_load_model(file);
}

Test(model_fingerprint, stable_and_distinct) {
    sl_model *a = load_if_cached(TEST_SMOLLM2);
    if (!a) cr_skip_test("%s is not cached (tools/fetch-model.sh)", TEST_SMOLLM2);
    sl_model *b = test_load_model(TEST_SMOLLM2);
    uint8_t fa[32], fb[32], fz[32] = {0};
    cr_assert_eq(sl_model_fingerprint(a, fa), 0);
    cr_assert_eq(sl_model_fingerprint(b, fb), 0);
    cr_assert_arr_eq(fa, fb, 32, "two loads of one file");
    cr_assert_neq(memcmp(fa, fz, 32), 0);

    /* it is the SHA-256 of the bytes before the tensor data, as read by plain stdio */
    const sl_gguf *gg = sl_model_gguf(a);
    uint64_t off = sl_gguf_data_offset(gg);
    cr_assert(off > 1000 && off < sl_gguf_file_size(gg));
    char path[4096];
    test_model_path(TEST_SMOLLM2, path, sizeof path);
    FILE *f = fopen(path, "rb");
    uint8_t *head = malloc(off), want[32];
    cr_assert_eq(fread(head, 1, off, f), off);
    fclose(f);
    sl_sha256(head, off, want);
    cr_assert_arr_eq(fa, want, 32);
    free(head);

    sl_model *q = load_if_cached(TEST_QWEN25);
    if (q) {
        uint8_t fq[32];
        cr_assert_eq(sl_model_fingerprint(q, fq), 0);
        cr_assert_neq(memcmp(fa, fq, 32), 0, "SmolLM2 and Qwen share a fingerprint");
        sl_model_free(q);
    } else {
        cr_log_warn("%s is not cached: distinctness not checked", TEST_QWEN25);
    }
    sl_model_free(a);
    sl_model_free(b);
}
