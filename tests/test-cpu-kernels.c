/* CPU kernels against plain references: dot products (AVX2 and scalar paths against each
 * other and against dequantized f32 math), the thread pool, both matmul paths, and both
 * attention paths against a naive softmax attention. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/kv-cache.h"
#include "cpu/attention.h"
#include "cpu/dispatch.h"
#include "cpu/matmul.h"
#include "cpu/threadpool.h"
#include "cpu/vec-dot.h"
#include "spotlight/error.h"
#include "spotlight/quant.h"

static uint64_t rng_state = 1;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

/* Random blocks of a 32-element type with finite, moderate f16 scales. */
static void random_blocks(int type, uint8_t *dst, int64_t n) {
    size_t bytes = (size_t)sl_type_row_bytes(type, n), bb = sl_type_block_bytes(type);
    for (size_t i = 0; i < bytes; i++) dst[i] = (uint8_t)rnd();
    for (size_t b = 0; b < bytes / bb; b++) {
        uint16_t d = sl_f32_to_f16(0.01f + 0.02f * (float)(rnd() % 100) / 100.0f);
        memcpy(dst + b * bb, &d, 2);
        if (type == SL_TYPE_Q4_1 || type == SL_TYPE_Q5_1) {
            uint16_t m = sl_f32_to_f16(-0.1f * (float)(rnd() % 100) / 100.0f);
            memcpy(dst + b * bb + 2, &m, 2);
        }
    }
}

static const int k_types[] = {SL_TYPE_Q4_0, SL_TYPE_Q4_1, SL_TYPE_Q5_0, SL_TYPE_Q5_1, SL_TYPE_Q8_0,
                              SL_TYPE_F32, SL_TYPE_F16, SL_TYPE_BF16};

Test(vec_dot, paths_agree_with_dequantized_reference) {
    const int64_t n = 576;
    uint8_t w[576 * 4], xq[576 * 4];
    float x[576], wf[576], xf[576];
    for (size_t ti = 0; ti < sizeof k_types / sizeof k_types[0]; ti++) {
        int type = k_types[ti];
        for (int rep = 0; rep < 20; rep++) {
            if (type == SL_TYPE_F32 || type == SL_TYPE_F16 || type == SL_TYPE_BF16) {
                for (int64_t i = 0; i < n; i++) {
                    float v = frand();
                    if (type == SL_TYPE_F32) memcpy(w + 4 * i, &v, 4);
                    else {
                        uint16_t h = type == SL_TYPE_F16 ? sl_f32_to_f16(v) : sl_f32_to_bf16(v);
                        memcpy(w + 2 * i, &h, 2);
                    }
                }
            } else {
                random_blocks(type, w, n);
            }
            for (int64_t i = 0; i < n; i++) x[i] = frand() * 3;
            struct sl_vec_dot vd = sl_vec_dot_for(type);
            cr_assert_not_null(vd.dot, "%s", sl_type_name(type));
            sl_act_quantize(vd.act, x, xq, n);
            /* Reference: both operands dequantized to f32, summed in double. */
            cr_assert_eq(sl_dequant_f32(type, w, wf, n), 0);
            if (vd.act == SL_ACT_F32)
                memcpy(xf, x, sizeof x);
            else
                for (int64_t b = 0; b < n / 32; b++) {
                    const uint8_t *blk = xq + b * (vd.act == SL_ACT_Q8_1 ? 36 : 34);
                    uint16_t dh;
                    memcpy(&dh, blk, 2);
                    const int8_t *q = (const int8_t *)(blk + (vd.act == SL_ACT_Q8_1 ? 4 : 2));
                    for (int j = 0; j < 32; j++) xf[b * 32 + j] = sl_f16_to_f32(dh) * q[j];
                }
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                ref += (double)wf[i] * xf[i];
                mag += fabs((double)wf[i] * xf[i]);
            }
            float fast = vd.dot(w, xq, n);
            int prev = sl_cpu_force_scalar(1);
            float slow = sl_vec_dot_for(type).dot(w, xq, n);
            sl_cpu_force_scalar(prev);
            /* Same integer sums; only float rounding of per-block products differs. Q8_1's
             * stored block sum s = d*sum(q) is rounded to f16, hence the looser bound there. */
            double tol = 1e-5 * mag + (vd.act == SL_ACT_Q8_1 ? 2e-3 * mag : 0) + 1e-6;
            cr_assert(fabs(fast - ref) <= tol, "%s fast %g ref %g", sl_type_name(type), fast, ref);
            cr_assert(fabs(slow - ref) <= tol, "%s scalar %g ref %g", sl_type_name(type), slow, ref);
            /* and the quantized activations are close to the input */
            if (vd.act != SL_ACT_F32)
                for (int64_t i = 0; i < n; i++) cr_assert(fabsf(xf[i] - x[i]) <= 3.0f / 127 + 1e-6f);
        }
    }
}

struct count_ctx {
    atomic_llong sum;
    int64_t n;
};

static void count_task(void *arg, int ith, int nth) {
    struct count_ctx *c = arg;
    int64_t a, b;
    sl_split_range(c->n, ith, nth, &a, &b);
    long long s = 0;
    for (int64_t i = a; i < b; i++) s += i;
    atomic_fetch_add(&c->sum, s);
}

Test(threadpool, every_index_once_over_many_runs) {
    for (int threads = 1; threads <= 3; threads++) {
        sl_threadpool *p;
        cr_assert_eq(sl_threadpool_create(threads, 0, &p), 0);
        cr_assert_eq(sl_threadpool_size(p), threads);
        for (int run = 0; run < 2000; run++) {
            struct count_ctx c = {0, 1 + run % 97};
            sl_threadpool_run(p, count_task, &c);
            cr_assert_eq(c.sum, (long long)c.n * (c.n - 1) / 2, "threads %d run %d", threads, run);
        }
        sl_threadpool_free(p);
    }
    sl_threadpool_free(NULL);
}

static void naive_matmul(const float *wf, const float *x, int64_t n, int64_t k, int64_t m, float *y) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < m; r++) {
            double s = 0;
            for (int64_t j = 0; j < k; j++) s += (double)wf[r * k + j] * x[i * k + j];
            y[i * m + r] = (float)s;
        }
}

Test(matmul, dot_and_sgemm_paths_match_reference) {
    sl_threadpool *p;
    cr_assert_eq(sl_threadpool_create(2, 0, &p), 0);
    struct sl_matmul_scratch s = {0};
    const int64_t k = 256, m = 96;
    uint8_t *w = malloc((size_t)sl_type_row_bytes(SL_TYPE_Q4_1, k * m));
    float *wf = malloc(sizeof(float) * k * m), *x = malloc(sizeof(float) * k * 40);
    float *y = malloc(sizeof(float) * m * 40), *ref = malloc(sizeof(float) * m * 40);
    random_blocks(SL_TYPE_Q4_1, w, k * m);
    sl_dequant_f32(SL_TYPE_Q4_1, w, wf, k * m);
    struct sl_gguf_tensor t = {.name = "w", .type = SL_TYPE_Q4_1, .n_dims = 2, .ne = {k, m, 1, 1},
                               .n_elems = k * m, .data = w};
    int64_t ns[] = {1, 3, SL_MATMUL_DOT_MAX_ROWS, SL_MATMUL_DOT_MAX_ROWS + 1, 40};
    for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++) {
        int64_t n = ns[c];
        for (int64_t i = 0; i < n * k; i++) x[i] = frand();
        naive_matmul(wf, x, n, k, m, ref);
        cr_assert_eq(sl_cpu_matmul(p, &s, &t, x, n, y), 0);
        for (int64_t i = 0; i < n * m; i++) {
            /* both paths: activations rounded to 8 bits (|error| <= amax/254 per element) */
            float tol = 0.02f;
            cr_assert(fabsf(y[i] - ref[i]) <= tol * (1 + fabsf(ref[i])), "n=%ld i=%ld %g vs %g",
                      (long)n, (long)i, y[i], ref[i]);
        }
    }
    sl_scratch_free(&s.act);
    sl_scratch_free(&s.wf32);
    sl_scratch_free(&s.xf32);
    sl_threadpool_free(p);
    free(w); free(wf); free(x); free(y); free(ref);
}

/* Naive causal GQA attention over the f16 cache with f16-rounded queries. */
static void naive_attention(const struct sl_kv_cache *kv, int layer, const float *q, int64_t n, int64_t pos0,
                            int n_head, float *out) {
    int hd = kv->head_dim, nr = n_head / kv->n_head_kv;
    for (int64_t t = 0; t < n; t++)
        for (int h = 0; h < n_head; h++) {
            const uint16_t *k = sl_kv_cache_k(kv, layer, h / nr, 0), *v = sl_kv_cache_v(kv, layer, h / nr, 0);
            int64_t len = pos0 + t + 1;
            double *sc = malloc(sizeof(double) * (size_t)len), mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < len; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++)
                    s += sl_f16_to_f32(sl_f32_to_f16(q[(t * n_head + h) * hd + d])) * sl_f16_to_f32(k[j * hd + d]);
                sc[j] = s / sqrt(hd);
                if (sc[j] > mx) mx = sc[j];
            }
            for (int64_t j = 0; j < len; j++) sum += sc[j] = exp(sc[j] - mx);
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int64_t j = 0; j < len; j++) o += sc[j] / sum * sl_f16_to_f32(v[j * hd + d]);
                out[(t * n_head + h) * hd + d] = (float)o;
            }
            free(sc);
        }
}

Test(attention, decode_and_prefill_paths_match_naive) {
    sl_threadpool *p;
    cr_assert_eq(sl_threadpool_create(2, 0, &p), 0);
    struct sl_attn_scratch s = {0};
    struct sl_kv_cache kv;
    const int n_head = 6, n_kv = 2, hd = 64, ctx = 300;
    cr_assert_eq(sl_kv_cache_init(&kv, 2, n_kv, hd, ctx), 0);
    float *k = malloc(sizeof(float) * ctx * n_kv * hd), *v = malloc(sizeof(float) * ctx * n_kv * hd);
    for (int64_t i = 0; i < (int64_t)ctx * n_kv * hd; i++) {
        k[i] = frand() * 2;
        v[i] = frand();
    }
    cr_assert_eq(sl_kv_cache_write(&kv, 1, 0, ctx, k, v), 0);
    cr_assert_eq(sl_kv_cache_write(&kv, 1, ctx - 1, 2, k, v), SL_EBOUNDS);
    float *q = malloc(sizeof(float) * 64 * n_head * hd), *o = malloc(sizeof(float) * 64 * n_head * hd),
          *r = malloc(sizeof(float) * 64 * n_head * hd);
    for (int64_t i = 0; i < 64 * n_head * hd; i++) q[i] = frand() * 2;
    struct { int64_t n, pos0; } cases[] = {{1, 0}, {1, 1}, {1, 299}, {3, 100}, {8, 5}, {9, 0}, {64, 236}, {40, 17}};
    /* every f16 path this CPU runs: scalar, then F16C + FMA where present */
    const int n_paths = sl_cpu_use_avx2() ? 2 : 1;
    for (int path = 0; path < n_paths; path++) {
        int prev = sl_cpu_force_scalar(path == 0);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            cr_assert_eq(sl_cpu_attention(p, &s, &kv, 1, q, cases[c].n, cases[c].pos0, n_head, o), 0);
            naive_attention(&kv, 1, q, cases[c].n, cases[c].pos0, n_head, r);
            for (int64_t i = 0; i < cases[c].n * n_head * hd; i++)
                cr_assert(fabsf(o[i] - r[i]) <= 2e-5f + 1e-4f * fabsf(r[i]), "%s path, case %zu i %ld: %g vs %g",
                          path ? "avx2" : "scalar", c, (long)i, o[i], r[i]);
        }
        sl_cpu_force_scalar(prev);
    }
    cr_assert_eq(sl_cpu_attention(p, &s, &kv, 1, q, 2, ctx - 1, n_head, o), SL_EBOUNDS);
    sl_attn_scratch_free(&s);
    sl_kv_cache_free(&kv);
    sl_threadpool_free(p);
    free(k); free(v); free(q); free(o); free(r);
}

/* A one-layer f16 KV cache of ctx positions filled with random K (in [-1, 1)) and V. */
static void random_kv(struct sl_kv_cache *kv, int n_layer, int layer, int n_kv, int hd, int ctx) {
    cr_assert_eq(sl_kv_cache_init(kv, n_layer, n_kv, hd, ctx), 0);
    float *k = malloc(sizeof(float) * ctx * n_kv * hd), *v = malloc(sizeof(float) * ctx * n_kv * hd);
    for (int64_t i = 0; i < (int64_t)ctx * n_kv * hd; i++) {
        k[i] = frand() * 2;
        v[i] = frand();
    }
    cr_assert_eq(sl_kv_cache_write(kv, layer, 0, ctx, k, v), 0);
    free(k);
    free(v);
}

/* Decode attention gives the same bits on 1 to 5 threads: the chunking and merge order do not
 * follow the thread count (a greedy generation must not change with -t). */
Test(attention, decode_bitwise_independent_of_threads) {
    struct sl_kv_cache kv;
    const int n_head = 6, n_kv = 2, hd = 64, ctx = 20000;
    random_kv(&kv, 1, 0, n_kv, hd, ctx);
    float q[4 * 6 * 64], ref[4 * 6 * 64], o[4 * 6 * 64];
    for (int i = 0; i < 4 * n_head * hd; i++) q[i] = frand() * 2;
    const int64_t lens[] = {1, 255, 257, 1000, 16385, 20000};
    for (size_t c = 0; c < sizeof lens / sizeof lens[0]; c++) {
        int64_t n = lens[c] >= 4 ? 4 : 1, pos0 = lens[c] - n;
        for (int threads = 1; threads <= 5; threads++) {
            sl_threadpool *p;
            cr_assert_eq(sl_threadpool_create(threads, 0, &p), 0);
            struct sl_attn_scratch s = {0};
            cr_assert_eq(sl_cpu_attention(p, &s, &kv, 0, q, n, pos0, n_head, threads == 1 ? ref : o), 0);
            if (threads > 1)
                cr_assert_arr_eq(o, ref, sizeof(float) * (size_t)(n * n_head * hd),
                                 "length %lld: %d threads differ from 1", (long long)lens[c], threads);
            sl_attn_scratch_free(&s);
            sl_threadpool_free(p);
        }
    }
    sl_kv_cache_free(&kv);
}

/* Prefill attention and the sgemm matmul path give the same bits on 1 to 5 threads: their work
 * is cut into units set by the shapes alone, never by the thread count. */
Test(attention, prefill_bitwise_independent_of_threads) {
    struct sl_kv_cache kv;
    const int n_head = 6, n_kv = 2, hd = 64, ctx = 1200;
    random_kv(&kv, 1, 0, n_kv, hd, ctx);
    const int64_t nmax = 300;
    float *q = malloc(sizeof(float) * nmax * n_head * hd), *ref = malloc(sizeof(float) * nmax * n_head * hd),
          *o = malloc(sizeof(float) * nmax * n_head * hd);
    for (int64_t i = 0; i < nmax * n_head * hd; i++) q[i] = frand() * 2;
    struct { int64_t n, pos0; } cases[] = {{9, 0}, {300, 0}, {129, 700}, {300, 900}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int threads = 1; threads <= 5; threads++) {
            sl_threadpool *p;
            cr_assert_eq(sl_threadpool_create(threads, 0, &p), 0);
            struct sl_attn_scratch s = {0};
            cr_assert_eq(sl_cpu_attention(p, &s, &kv, 0, q, cases[c].n, cases[c].pos0, n_head,
                                          threads == 1 ? ref : o), 0);
            if (threads > 1)
                cr_assert_arr_eq(o, ref, sizeof(float) * (size_t)(cases[c].n * n_head * hd),
                                 "case %zu: %d threads differ from 1", c, threads);
            sl_attn_scratch_free(&s);
            sl_threadpool_free(p);
        }
    sl_kv_cache_free(&kv);
    free(q); free(ref); free(o);
}

Test(matmul, sgemm_path_bitwise_independent_of_threads) {
    const int64_t k = 256, m = 700, n = 40; /* m: tiles of 96 rows, the last one short */
    uint8_t *w = malloc((size_t)sl_type_row_bytes(SL_TYPE_Q4_1, k * m));
    random_blocks(SL_TYPE_Q4_1, w, k * m);
    struct sl_gguf_tensor t = {.name = "w", .type = SL_TYPE_Q4_1, .n_dims = 2, .ne = {k, m, 1, 1},
                               .n_elems = k * m, .data = w};
    float *x = malloc(sizeof(float) * n * k);
    for (int64_t i = 0; i < n * k; i++) x[i] = frand();
    float *ref = malloc(sizeof(float) * n * m), *y = malloc(sizeof(float) * n * m);
    for (int threads = 1; threads <= 5; threads++) {
        sl_threadpool *p;
        cr_assert_eq(sl_threadpool_create(threads, 0, &p), 0);
        struct sl_matmul_scratch s = {0};
        cr_assert_eq(sl_cpu_matmul(p, &s, &t, x, n, threads == 1 ? ref : y), 0);
        if (threads > 1)
            cr_assert_arr_eq(y, ref, sizeof(float) * (size_t)(n * m), "%d threads differ from 1", threads);
        sl_scratch_free(&s.act);
        sl_scratch_free(&s.wf32);
        sl_scratch_free(&s.xf32);
        sl_threadpool_free(p);
    }
    free(w); free(x); free(ref); free(y);
}

Test(vec_dot, activation_quantization_paths_identical) {
    enum { N = 4096 };
    static float x[N];
    static uint8_t a[N * 2], b[N * 2];
    for (int rep = 0; rep < 50; rep++) {
        for (int i = 0; i < N; i++) x[i] = frand() * (float)(1 + rep);
        /* exact ties: amax 127 makes x * 127/amax == x, so halves round to even */
        for (int i = 0; i < 64; i++) x[i] = (i % 2 ? 0.5f : -2.5f) + (float)(i % 7);
        x[0] = 127.0f;
        x[32] = 0; /* an all-zero block */
        for (int i = 33; i < 64; i++) x[i] = 0;
        for (int f = SL_ACT_Q8_0; f <= SL_ACT_Q8_1; f++) {
            sl_act_quantize(f, x, a, N);
            int prev = sl_cpu_force_scalar(1);
            sl_act_quantize(f, x, b, N);
            sl_cpu_force_scalar(prev);
            cr_assert_eq(memcmp(a, b, sl_act_row_bytes(f, N)), 0, "format %d rep %d", f, rep);
        }
    }
    /* round-half-even on exact ties (amax 127 makes the scale 1): as ggml's AVX2 quantizer */
    float t[32] = {127.0f, 0.5f, 1.5f, -2.5f, 2.5f, -0.5f};
    sl_act_quantize(SL_ACT_Q8_0, t, a, 32);
    const int8_t *q = (const int8_t *)(a + 2);
    cr_assert(q[0] == 127 && q[1] == 0 && q[2] == 2 && q[3] == -2 && q[4] == 2 && q[5] == 0);
}

Test(matmul, several_weights_in_one_pass_equal_separate_calls) {
    sl_threadpool *p;
    cr_assert_eq(sl_threadpool_create(2, 0, &p), 0);
    struct sl_matmul_scratch s = {0};
    const int64_t k = 128;
    const int types[3] = {SL_TYPE_Q4_1, SL_TYPE_Q8_0, SL_TYPE_Q4_0};
    const int64_t ms[3] = {64, 32, 48};
    uint8_t *wb[3];
    struct sl_gguf_tensor t[3];
    const struct sl_gguf_tensor *tp[3];
    float x[4 * 128], *y1[3], *y2[3];
    for (int i = 0; i < 3; i++) {
        wb[i] = malloc((size_t)sl_type_row_bytes(types[i], k * ms[i]));
        random_blocks(types[i], wb[i], k * ms[i]);
        t[i] = (struct sl_gguf_tensor){.name = "w", .type = types[i], .n_dims = 2, .ne = {k, ms[i], 1, 1},
                                       .n_elems = k * ms[i], .data = wb[i]};
        tp[i] = &t[i];
        y1[i] = malloc(sizeof(float) * 4 * ms[i]);
        y2[i] = malloc(sizeof(float) * 4 * ms[i]);
    }
    for (int i = 0; i < 4 * 128; i++) x[i] = frand();
    for (int64_t n = 1; n <= 4; n += 3) {
        cr_assert_eq(sl_cpu_matmul_n(p, &s, 3, tp, x, n, y1), 0);
        for (int i = 0; i < 3; i++) {
            cr_assert_eq(sl_cpu_matmul(p, &s, tp[i], x, n, y2[i]), 0);
            cr_assert_eq(memcmp(y1[i], y2[i], sizeof(float) * (size_t)(n * ms[i])), 0, "weight %d n %ld", i, (long)n);
        }
    }
    for (int i = 0; i < 3; i++) {
        free(wb[i]);
        free(y1[i]);
        free(y2[i]);
    }
    sl_scratch_free(&s.act);
    sl_scratch_free(&s.wf32);
    sl_scratch_free(&s.xf32);
    sl_threadpool_free(p);
}
