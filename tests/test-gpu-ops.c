/* The CUDA kernels of the dense step (gpu/gpu-ops.h) against the CPU backend on random data,
 * with the tolerances the header states: rmsnorm, rope, add, add_rows, swiglu, f16/bf16
 * conversion, the KV write, the embedding lookup, the bf16 GEMM and attention (decode and
 * prefill, two GQA shapes, up to 100000 positions).
 *
 * The references are the CPU code itself (the CPU backend's ops, sl_cpu_attention,
 * sl_kv_cache_write, sl_f32_to_f16_row), except for the GEMM, whose CPU path quantizes the
 * activations to 8 bits: it is checked against f64 products of the same bf16 operands
 * (tightly) and of the sl_dequant_f32 weights (loosely).
 *
 * Built only with CUDA. Tests that need a device skip without one; the argument checks run
 * everywhere (they fail before any CUDA call). CUDA is initialised inside each test, never in
 * a constructor: Criterion forks a process per test. */
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/kv-cache.h"
#include "cpu/attention.h"
#include "cpu/f16-row.h"
#include "cpu/threadpool.h"
#include "gpu/gpu-ops.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "spotlight/model.h"
#include "spotlight/quant.h"
#include "tests/gpu-test-util.h"





/* Uniform in [-1, 1). */
static float frand(uint64_t *s) { return (float)((double)(rng_next(s) >> 11) * 0x1p-52 - 1.0); }

static float *rand_floats(int64_t n, float scale, uint64_t seed) {
    float *x = malloc(sizeof *x * (size_t)(n > 0 ? n : 1));
    cr_assert(x);
    for (int64_t i = 0; i < n; i++) x[i] = frand(&seed) * scale;
    return x;
}

static void *to_dev(const void *host, size_t bytes) {
    void *d = NULL;
    CUDA_OK(cudaMalloc(&d, bytes ? bytes : 16));
    if (host && bytes) CUDA_OK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

static void from_dev(void *host, const void *dev, size_t bytes) {
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

static struct sl_backend *cpu_backend(void) {
    struct sl_backend *be = NULL;
    cr_assert_eq(sl_backend_cpu_create(2, &be), 0, "%s", sl_error_detail());
    return be;
}

/* An f32 GGUF tensor of k values over host data (what the CPU ops take for norms/biases). */
static struct sl_gguf_tensor f32_tensor(const float *data, int64_t k) {
    struct sl_gguf_tensor t = {.name = "t", .type = SL_TYPE_F32, .n_dims = 1, .ne = {k, 1, 1, 1}, .n_elems = k,
                               .nbytes = (uint64_t)k * 4, .data = data};
    return t;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- rmsnorm ------------------------------------------------------------------------------ */

Test(gpu_ops, rmsnorm_matches_cpu) {
    require_gpu();
    struct sl_backend *be = cpu_backend();
    static const struct { int64_t n, k; float scale; } cases[] = {{1, 4096, 1}, {7, 4096, 30}, {3, 100, 1e-3f}, {2, 5120, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t n = cases[c].n, k = cases[c].k;
        float *x = rand_floats(n * k, cases[c].scale, 11 + c), *w = rand_floats(k, 2, 12 + c);
        float *y = malloc(sizeof *y * (size_t)(n * k)), *g = malloc(sizeof *g * (size_t)(n * k));
        struct sl_gguf_tensor wt = f32_tensor(w, k);
        cr_assert_eq(be->rmsnorm(be, x, &wt, n, k, 1e-5f, y), 0);
        float *dx = to_dev(x, sizeof *x * n * k), *dw = to_dev(w, sizeof *w * k);
        float *dy = to_dev(NULL, sizeof *dy * n * k);
        SL_OK(sl_gpu_rmsnorm(dx, dw, n, k, 1e-5f, dy, NULL));
        from_dev(g, dy, sizeof *g * n * k);
        for (int64_t i = 0; i < n * k; i++)
            cr_assert(fabsf(g[i] - y[i]) <= 1e-6f * fabsf(y[i]), "case %zu, %lld: gpu %a cpu %a", c, (long long)i,
                      g[i], y[i]);
        /* in place */
        SL_OK(sl_gpu_rmsnorm(dx, dw, n, k, 1e-5f, dx, NULL));
        float *g2 = malloc(sizeof *g2 * (size_t)(n * k));
        from_dev(g2, dx, sizeof *g2 * n * k);
        cr_assert_eq(memcmp(g, g2, sizeof *g * (size_t)(n * k)), 0, "case %zu: in-place result differs", c);
        cudaFree(dx);
        cudaFree(dw);
        cudaFree(dy);
        free(x); free(w); free(y); free(g); free(g2);
    }
    be->free(be);
}

/* ---- rope --------------------------------------------------------------------------------- */

Test(gpu_ops, rope_matches_cpu) {
    require_gpu();
    struct sl_backend *be = cpu_backend();
    static const struct {
        int64_t n, pos0;
        int32_t n_head, head_dim, n_rot;
        enum sl_rope_type type;
        float theta, scale; /* rope_scale: linear scaling when != 1 */
    } cases[] = {
        {5, 0, 9, 64, 64, SL_ROPE_NORM, 10000.0f, 1.0f},
        {3, 100000, 32, 128, 128, SL_ROPE_NEOX, 500000.0f, 1.0f},
        {4, 4093, 4, 128, 64, SL_ROPE_NORM, 10000.0f, 4.0f},
        {2, 77, 3, 64, 32, SL_ROPE_NEOX, 1000000.0f, 2.0f},
        {64, 999936, 8, 128, 128, SL_ROPE_NORM, 10000.0f, 1.0f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct sl_model_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.head_dim = cases[c].head_dim;
        cfg.n_rot = cases[c].n_rot;
        cfg.rope_type = cases[c].type;
        cfg.rope_theta = cases[c].theta;
        cfg.rope_scaling = cases[c].scale != 1.0f ? SL_ROPE_SCALING_LINEAR : SL_ROPE_SCALING_NONE;
        cfg.rope_scale = cases[c].scale;
        int64_t n = cases[c].n, len = n * cases[c].n_head * cases[c].head_dim;
        float *x = rand_floats(len, 1, 21 + c), *g = malloc(sizeof *g * (size_t)len);
        float *dx = to_dev(x, sizeof *x * len);
        SL_OK(sl_gpu_rope(dx, n, cases[c].n_head, cases[c].head_dim, cases[c].n_rot, cases[c].type == SL_ROPE_NEOX,
                           cases[c].theta, 1.0f / cases[c].scale, cases[c].pos0, NULL));
        from_dev(g, dx, sizeof *g * len);
        cr_assert_eq(be->rope(be, x, n, cases[c].n_head, &cfg, cases[c].pos0), 0);
        /* |x| <= 1: one ulp of cos/sin (<= 2^-24) on two products, plus the roundings */
        for (int64_t i = 0; i < len; i++)
            cr_assert(fabsf(g[i] - x[i]) <= 0x1p-21f, "case %zu, %lld: gpu %a cpu %a", c, (long long)i, g[i], x[i]);
        cudaFree(dx);
        free(x); free(g);
    }
    be->free(be);
}

/* ---- add, add_rows, swiglu ---------------------------------------------------------------- */

Test(gpu_ops, add_and_add_rows_are_bit_identical) {
    require_gpu();
    struct sl_backend *be = cpu_backend();
    const int64_t n = 37, k = 1000;
    float *x = rand_floats(n * k, 3, 31), *y = rand_floats(n * k, 3, 32), *b = rand_floats(k, 3, 33);
    float *g = malloc(sizeof *g * (size_t)(n * k));
    float *dx = to_dev(x, sizeof *x * n * k), *dy = to_dev(y, sizeof *y * n * k), *db = to_dev(b, sizeof *b * k);
    SL_OK(sl_gpu_add(dx, dy, n * k, NULL));
    SL_OK(sl_gpu_add_rows(dx, db, n, k, NULL));
    from_dev(g, dx, sizeof *g * n * k);
    struct sl_gguf_tensor bt = f32_tensor(b, k);
    cr_assert_eq(be->add(be, x, y, n * k), 0);
    cr_assert_eq(be->add_rows(be, x, &bt, n, k), 0);
    cr_assert_eq(memcmp(g, x, sizeof *g * (size_t)(n * k)), 0);
    cudaFree(dx); cudaFree(dy); cudaFree(db);
    free(x); free(y); free(b); free(g);
    be->free(be);
}

Test(gpu_ops, swiglu_matches_cpu) {
    require_gpu();
    struct sl_backend *be = cpu_backend();
    const int64_t n = 100003;
    float *gt = rand_floats(n, 12, 41), *u = rand_floats(n, 4, 42);
    /* the edges: zero, signed zero, exp overflow both ways, tiny */
    const float edge[] = {0.0f, -0.0f, 100.0f, -100.0f, 88.8f, -88.8f, 1e-30f, -1e-30f, 0x1p-149f};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) gt[i] = edge[i];
    float *y = malloc(sizeof *y * n), *g = malloc(sizeof *g * n);
    float *dg = to_dev(gt, sizeof *gt * n), *du = to_dev(u, sizeof *u * n), *dy = to_dev(NULL, sizeof *dy * n);
    SL_OK(sl_gpu_swiglu(dg, du, n, dy, NULL));
    from_dev(g, dy, sizeof *g * n);
    cr_assert_eq(be->swiglu(be, gt, u, n, y), 0);
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabsf(g[i] - y[i]) <= 0x1p-21f * fabsf(y[i]) || f32_bits(g[i]) == f32_bits(y[i]),
                  "%lld: g %a u %a: gpu %a cpu %a", (long long)i, gt[i], u[i], g[i], y[i]);
    cudaFree(dg); cudaFree(du); cudaFree(dy);
    free(gt); free(u); free(y); free(g);
    be->free(be);
}

/* ---- conversions and the KV write --------------------------------------------------------- */

Test(gpu_ops, f32_to_f16_is_bit_identical) {
    require_gpu();
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u,  /* zeros, infinities */
        0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fa00000u,  /* NaNs: quiet, low payload, high payload */
        0x7f802000u, 0xff801fffu, 0x7fffffffu,
        0x477fe000u, 0x477fefffu, 0x477ff000u, 0x477ff001u,  /* 65504, below/at/above the overflow tie */
        0x38800000u, 0x387fffffu, 0x387ff000u, 0x33800000u,  /* smallest normal half, just below, 2^-24 */
        0x33000000u, 0x33000001u, 0x32ffffffu, 0x33400000u,  /* 2^-25 (tie to 0), above, below, 1.5*2^-25 */
        0x3f801000u, 0x3f803000u, 0x3f801001u, 0x3f800fffu,  /* ties to even, just off */
        0x00000001u, 0x807fffffu, 0x3f800000u, 0xc0490fdbu,
    };
    const int64_t n_special = sizeof special / sizeof special[0];
    const int64_t n = n_special + ((int64_t)1 << 22); /* plus every 1024th bit pattern */
    float *x = malloc(sizeof *x * n);
    uint16_t *c = malloc(sizeof *c * n), *g = malloc(sizeof *g * n);
    for (int64_t i = 0; i < n_special; i++) x[i] = bits_f32(special[i]);
    for (int64_t i = 0; i < ((int64_t)1 << 22); i++) x[n_special + i] = bits_f32((uint32_t)(i * 1024 + (i % 1021)));
    sl_f32_to_f16_row(x, c, n);
    float *dx = to_dev(x, sizeof *x * n);
    uint16_t *dy = to_dev(NULL, sizeof *dy * n);
    SL_OK(sl_gpu_f32_to_f16(dx, n, dy, NULL));
    from_dev(g, dy, sizeof *g * n);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(g[i], c[i], "%lld: f32 0x%08x: gpu 0x%04x cpu 0x%04x", (long long)i, f32_bits(x[i]), g[i], c[i]);
    /* bf16 (the GEMM input): nearest even as sl_f32_to_bf16, NaN any NaN */
    SL_OK(sl_gpu_f32_to_bf16(dx, n, dy, NULL));
    from_dev(g, dy, sizeof *g * n);
    for (int64_t i = 0; i < n; i++) {
        uint16_t want = sl_f32_to_bf16(x[i]);
        if (isnan(x[i]))
            cr_assert((g[i] & 0x7fff) > 0x7f80, "%lld: NaN became 0x%04x", (long long)i, g[i]);
        else
            cr_assert_eq(g[i], want, "%lld: f32 0x%08x: gpu 0x%04x cpu 0x%04x", (long long)i, f32_bits(x[i]), g[i], want);
    }
    cudaFree(dx); cudaFree(dy);
    free(x); free(c); free(g);
}

Test(gpu_ops, kv_write_matches_the_cpu_cache) {
    require_gpu();
    const int32_t n_kv = 3, hd = 64, layer = 1;
    const int64_t n_ctx = 300, pos = 123, n = 45, width = (int64_t)n_kv * hd;
    struct sl_kv_cache kv;
    cr_assert_eq(sl_kv_cache_init(&kv, 2, n_kv, hd, n_ctx), 0);
    float *k = rand_floats(n * width, 70000, 51), *v = rand_floats(n * width, 1e-5f, 52);
    k[0] = INFINITY;
    k[1] = bits_f32(0x7f802000u);
    cr_assert_eq(sl_kv_cache_write(&kv, layer, pos, n, k, v), 0);
    size_t layer_elems = (size_t)n_kv * (size_t)n_ctx * (size_t)hd;
    uint16_t *dk = to_dev(NULL, layer_elems * 2), *dv = to_dev(NULL, layer_elems * 2);
    float *dsk = to_dev(k, sizeof *k * n * width), *dsv = to_dev(v, sizeof *v * n * width);
    SL_OK(sl_gpu_kv_write(dk, dv, n_ctx, n_kv, hd, pos, n, dsk, dsv, NULL));
    uint16_t *gk = malloc(layer_elems * 2), *gv = malloc(layer_elems * 2);
    from_dev(gk, dk, layer_elems * 2);
    from_dev(gv, dv, layer_elems * 2);
    for (int32_t h = 0; h < n_kv; h++) {
        const uint16_t *ck = sl_kv_cache_k(&kv, layer, h, pos), *cv = sl_kv_cache_v(&kv, layer, h, pos);
        size_t at = ((size_t)h * n_ctx + pos) * hd;
        cr_assert_eq(memcmp(gk + at, ck, (size_t)(n * hd) * 2), 0, "K of head %d", h);
        cr_assert_eq(memcmp(gv + at, cv, (size_t)(n * hd) * 2), 0, "V of head %d", h);
    }
    cr_assert_eq(sl_gpu_kv_write(dk, dv, n_ctx, n_kv, hd, n_ctx - 10, 11, dsk, dsv, NULL), SL_EBOUNDS);
    cudaFree(dk); cudaFree(dv); cudaFree(dsk); cudaFree(dsv);
    free(k); free(v); free(gk); free(gv);
    sl_kv_cache_free(&kv);
}

/* ---- embedding ---------------------------------------------------------------------------- */

/* Random bytes for a (rows, k) tensor of type with every f16 scale finite: the field offsets
 * per type are written here independently of the code under test. */
static void fill_quant(int type, uint8_t *buf, size_t bytes, uint64_t seed) {
    for (size_t i = 0; i < bytes; i++) buf[i] = (uint8_t)rng_next(&seed);
    size_t bb = sl_type_block_bytes(type);
    int at[2], nf = 0;
    switch (type) {
    case SL_TYPE_Q8_0: at[0] = 0; nf = 1; break;
    case SL_TYPE_Q4_1: case SL_TYPE_Q4_K: at[0] = 0; at[1] = 2; nf = 2; break;
    case SL_TYPE_Q6_K: at[0] = 208; nf = 1; break;
    case SL_TYPE_F16: at[0] = 0; nf = 1; break;
    case SL_TYPE_F32:
        for (size_t i = 0; i + 4 <= bytes; i += 4) buf[i + 3] &= 0x3f; /* |x| < 2 */
        return;
    }
    /* exponent field 0x7c00 is inf/NaN: clear its top bit */
    for (size_t b = 0; b + bb <= bytes; b += bb)
        for (int f = 0; f < nf; f++)
            if ((buf[b + at[f] + 1] & 0x7c) == 0x7c) buf[b + at[f] + 1] &= (uint8_t)~0x40;
}

static void check_get_rows(int type) {
    require_gpu();
    struct sl_backend *be = cpu_backend();
    const int64_t k = 512, vocab = 37, n = 11;
    int64_t row = sl_type_row_bytes(type, k);
    size_t bytes = (size_t)row * vocab;
    uint8_t *w = malloc(bytes);
    fill_quant(type, w, bytes, 61 + (uint64_t)type);
    int32_t ids[11] = {0, 36, 5, 5, 17, 1, 35, 20, 0, 9, 30};
    struct sl_gguf_tensor t = {.name = "token_embd.weight", .type = type, .n_dims = 2, .ne = {k, vocab, 1, 1},
                               .n_elems = k * vocab, .nbytes = bytes, .data = w};
    float *c = malloc(sizeof *c * n * k), *g = malloc(sizeof *g * n * k);
    cr_assert_eq(be->get_rows(be, &t, ids, n, c), 0, "%s", sl_error_detail());
    uint8_t *dw = to_dev(NULL, bytes + 1);
    CUDA_OK(cudaMemcpy(dw + 1, w, bytes, cudaMemcpyHostToDevice)); /* no alignment promised */
    int32_t *did = to_dev(ids, sizeof ids);
    float *dx = to_dev(NULL, sizeof *dx * n * k);
    SL_OK(sl_gpu_get_rows(type, dw + 1, vocab, did, n, k, dx, NULL));
    from_dev(g, dx, sizeof *g * n * k);
    for (int64_t i = 0; i < n * k; i++)
        cr_assert_eq(f32_bits(g[i]), f32_bits(c[i]), "%s row %lld elem %lld: gpu %a cpu %a", sl_type_name(type),
                     (long long)(i / k), (long long)(i % k), g[i], c[i]);
    /* an id out of range cannot fail the call: its row is NaN, the others unaffected */
    int32_t bad[2] = {3, 37};
    CUDA_OK(cudaMemcpy(did, bad, sizeof bad, cudaMemcpyHostToDevice));
    SL_OK(sl_gpu_get_rows(type, dw + 1, vocab, did, 2, k, dx, NULL));
    from_dev(g, dx, sizeof *g * 2 * k);
    for (int64_t j = 0; j < k; j++) cr_assert(isnan(g[k + j]));
    cudaFree(dw); cudaFree(did); cudaFree(dx);
    free(w); free(c); free(g);
    be->free(be);
}

Test(gpu_ops, get_rows_q4_1) { check_get_rows(SL_TYPE_Q4_1); }
Test(gpu_ops, get_rows_q8_0) { check_get_rows(SL_TYPE_Q8_0); }
Test(gpu_ops, get_rows_f16) { check_get_rows(SL_TYPE_F16); }
Test(gpu_ops, get_rows_f32) { check_get_rows(SL_TYPE_F32); }
Test(gpu_ops, get_rows_q6_k) { check_get_rows(SL_TYPE_Q6_K); }

/* ---- weights and GEMM --------------------------------------------------------------------- */

static void check_matmul(int type, int64_t k, int64_t m) {
    require_gpu();
    int64_t row = sl_type_row_bytes(type, k);
    size_t bytes = (size_t)row * m;
    uint8_t *w = malloc(bytes);
    fill_quant(type, w, bytes, 71 + (uint64_t)type);
    uint16_t *wb = malloc(sizeof *wb * (size_t)(k * m));
    float *wf = malloc(sizeof *wf * (size_t)(k * m));
    cr_assert_eq(sl_dequant_bf16(type, w, wb, k * m), 0);
    cr_assert_eq(sl_dequant_f32(type, w, wf, k * m), 0);

    struct sl_gpu_weight gw;
    SL_OK(sl_gpu_weight_upload(type, w, k, m, &gw, NULL));
    cr_assert_eq(gw.k, k);
    cr_assert_eq(gw.m, m);
    uint16_t *back = malloc(sizeof *back * (size_t)(k * m));
    from_dev(back, gw.w, sizeof *back * (size_t)(k * m));
    cr_assert_eq(memcmp(back, wb, sizeof *back * (size_t)(k * m)), 0, "uploaded bf16 weights differ from the CPU's");

    void *blas = NULL;
    SL_OK(sl_gpu_blas_create(&blas));
    cudaStream_t st;
    CUDA_OK(cudaStreamCreate(&st));
    static const int64_t ns[] = {1, 7, 64};
    for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++) {
        int64_t n = ns[c];
        float *x = rand_floats(n * k, 2, 81 + c), *y = malloc(sizeof *y * (size_t)(n * m));
        float *dx = to_dev(x, sizeof *x * n * k), *dy = to_dev(NULL, sizeof *dy * n * m);
        size_t sb = sl_gpu_matmul_scratch_bytes(n, k);
        cr_assert_geq(sb, (size_t)(n * k * 2));
        void *scratch = to_dev(NULL, sb);
        SL_OK(sl_gpu_matmul(blas, &gw, dx, n, dy, scratch, st));
        CUDA_OK(cudaStreamSynchronize(st));
        from_dev(y, dy, sizeof *y * n * m);
        for (int64_t i = 0; i < n; i++)
            for (int64_t o = 0; o < m; o++) {
                double exact = 0, cpu = 0, mag = 0;
                for (int64_t j = 0; j < k; j++) {
                    double xb = sl_bf16_to_f32(sl_f32_to_bf16(x[i * k + j]));
                    exact += xb * sl_bf16_to_f32(wb[o * k + j]);
                    cpu += (double)x[i * k + j] * wf[o * k + j];
                    mag += fabs((double)x[i * k + j] * wf[o * k + j]);
                }
                double got = y[i * m + o];
                cr_assert(fabs(got - exact) <= 1e-4 * mag + 1e-30, "%s n=%lld (%lld, %lld): gpu %g, bf16 product %g (mag %g)",
                          sl_type_name(type), (long long)n, (long long)i, (long long)o, got, exact, mag);
                cr_assert(fabs(got - cpu) <= 8e-3 * mag + 1e-30, "%s n=%lld (%lld, %lld): gpu %g, f32 product %g (mag %g)",
                          sl_type_name(type), (long long)n, (long long)i, (long long)o, got, cpu, mag);
            }
        cudaFree(dx); cudaFree(dy); cudaFree(scratch);
        free(x); free(y);
    }
    CUDA_OK(cudaStreamDestroy(st));
    sl_gpu_blas_free(blas);
    sl_gpu_weight_free(&gw);
    cr_assert_null(gw.w);
    sl_gpu_weight_free(&gw); /* zeroed: no-op */
    free(w); free(wb); free(wf); free(back);
}

Test(gpu_ops, matmul_q8_0) { check_matmul(SL_TYPE_Q8_0, 4096, 256); }
Test(gpu_ops, matmul_q4_k) { check_matmul(SL_TYPE_Q4_K, 2048, 200); }
Test(gpu_ops, matmul_f16) { check_matmul(SL_TYPE_F16, 1000, 129); }

/* ---- attention ---------------------------------------------------------------------------- */

struct attn_case {
    int32_t n_head, n_kv, hd;
    int64_t n, pos0;
};

/* Fills positions [0, len) of a one-layer cache with random K/V in [-1, 1), plus needles:
 * at a few positions (the first, the middle, the last) every KV head's key is half the sign
 * pattern of its group's first query of token 0, so those positions score 12-24 for that
 * head (the random keys: about N(0, 2)) and weigh as much as all the others together, however
 * far away they are. Larger scores would not test more: the f32 rounding of a score grows
 * with it, on the CPU as here. Rows from len to n_ctx hold f16 NaNs: no kernel may read them. */
static void fill_cache(struct sl_kv_cache *kv, const struct attn_case *c, const float *q, uint64_t seed) {
    const int64_t len = c->pos0 + c->n, width = (int64_t)c->n_kv * c->hd, step = 1024;
    const int32_t rep = c->n_head / c->n_kv;
    float *k = malloc(sizeof *k * (size_t)(step * width)), *v = malloc(sizeof *v * (size_t)(step * width));
    const int64_t needles[3] = {0, len / 2, len - 1};
    for (int64_t p0 = 0; p0 < len; p0 += step) {
        int64_t m = len - p0 < step ? len - p0 : step;
        for (int64_t i = 0; i < m * width; i++) {
            k[i] = frand(&seed);
            v[i] = frand(&seed);
        }
        for (int j = 0; j < 3; j++) {
            if (needles[j] < p0 || needles[j] >= p0 + m) continue;
            for (int32_t g = 0; g < c->n_kv; g++)
                for (int32_t d = 0; d < c->hd; d++)
                    k[(needles[j] - p0) * width + g * c->hd + d] = q[(int64_t)g * rep * c->hd + d] < 0 ? -0.5f : 0.5f;
        }
        cr_assert_eq(sl_kv_cache_write(kv, 0, p0, m, k, v), 0);
    }
    for (int32_t g = 0; g < c->n_kv; g++) {
        uint16_t *kr = (uint16_t *)sl_kv_cache_k(kv, 0, g, len), *vr = (uint16_t *)sl_kv_cache_v(kv, 0, g, len);
        for (int64_t i = 0; i < (kv->n_ctx - len) * c->hd; i++) kr[i] = vr[i] = 0x7e00;
    }
    free(k);
    free(v);
}

/* Runs one case on the CPU (sl_cpu_attention) and the GPU, with the full workspace and
 * without any (no split), and compares. */
static void check_attention(const struct attn_case *c) {
    const int64_t len = c->pos0 + c->n, n_ctx = len + 3, width = (int64_t)c->n_head * c->hd;
    struct sl_kv_cache kv;
    cr_assert_eq(sl_kv_cache_init(&kv, 1, c->n_kv, c->hd, n_ctx), 0);
    float *q = rand_floats(c->n * width, 6, 91 + (uint64_t)len);
    fill_cache(&kv, c, q, 92 + (uint64_t)c->hd);

    sl_threadpool *pool;
    cr_assert_eq(sl_threadpool_create(2, 0, &pool), 0);
    struct sl_attn_scratch scratch = {0};
    float *want = malloc(sizeof *want * (size_t)(c->n * width)), *got = malloc(sizeof *got * (size_t)(c->n * width));
    cr_assert_eq(sl_cpu_attention(pool, &scratch, &kv, 0, q, c->n, c->pos0, c->n_head, want), 0, "%s", sl_error_detail());

    size_t cache_bytes = (size_t)c->n_kv * (size_t)n_ctx * (size_t)c->hd * 2;
    uint16_t *dk = to_dev(kv.k, cache_bytes), *dv = to_dev(kv.v, cache_bytes);
    float *dq = to_dev(q, sizeof *q * c->n * width), *dout = to_dev(NULL, sizeof *dout * c->n * width);
    size_t ws_bytes = sl_gpu_attention_workspace_bytes(c->n, c->n_head, c->hd);
    void *ws = to_dev(NULL, ws_bytes);
    for (int pass = 0; pass < 2; pass++) {
        CUDA_OK(cudaMemset(dout, 0xff, sizeof *dout * c->n * width)); /* NaN: every value must be written */
        SL_OK(sl_gpu_attention(dq, dk, dv, n_ctx, c->n, c->pos0, c->n_head, c->n_kv, c->hd, dout, pass ? NULL : ws,
                                pass ? 0 : ws_bytes, NULL));
        from_dev(got, dout, sizeof *got * c->n * width);
        for (int64_t i = 0; i < c->n * width; i++)
            cr_assert(fabsf(got[i] - want[i]) <= 5e-5f + 1e-4f * fabsf(want[i]),
                      "heads %d/%d hd %d, n %lld at %lld, %s: token %lld head %lld dim %lld: gpu %.9g cpu %.9g",
                      c->n_head, c->n_kv, c->hd, (long long)c->n, (long long)c->pos0, pass ? "no workspace" : "split",
                      (long long)(i / width), (long long)(i % width / c->hd), (long long)(i % c->hd), got[i], want[i]);
    }
    cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(dout); cudaFree(ws);
    sl_attn_scratch_free(&scratch);
    sl_threadpool_free(pool);
    sl_kv_cache_free(&kv);
    free(q); free(want); free(got);
}

static void check_attention_cases(int32_t n_head, int32_t n_kv, int32_t hd, const int64_t (*np)[2], size_t count) {
    require_gpu();
    for (size_t i = 0; i < count; i++) {
        struct attn_case c = {n_head, n_kv, hd, np[i][0], np[i][1]};
        check_attention(&c);
    }
}

/* decode n = 1 at lengths 1, 17, 4096, 100000; a few tokens (still the decode kernel) */
static const int64_t k_decode[][2] = {{1, 0}, {1, 16}, {1, 4095}, {1, 99999}, {3, 200}, {4, 4093}};
/* prefill chunks at the start and further in; a partial row tile; odd lengths */
static const int64_t k_prefill[][2] = {{256, 0}, {256, 1000}, {5, 70}, {77, 3}, {512, 4000}};

Test(gpu_attention, decode_9_heads_3_kv_64) { check_attention_cases(9, 3, 64, k_decode, 6); }
Test(gpu_attention, decode_32_heads_8_kv_128) { check_attention_cases(32, 8, 128, k_decode, 6); }
Test(gpu_attention, prefill_9_heads_3_kv_64) { check_attention_cases(9, 3, 64, k_prefill, 5); }
Test(gpu_attention, prefill_32_heads_8_kv_128) { check_attention_cases(32, 8, 128, k_prefill, 5); }

/* A group of 16 heads (decode goes to the tiled kernel), multi-head attention (group of 1)
 * and head_dim 256. */
Test(gpu_attention, other_shapes) {
    static const int64_t cases[][2] = {{1, 3000}, {2, 70}, {100, 900}};
    check_attention_cases(16, 1, 128, cases, 3);
    check_attention_cases(4, 4, 64, cases, 3);
    check_attention_cases(8, 2, 256, cases, 3);
}

/* ---- argument checks (no device needed) ---------------------------------------------------- */

Test(gpu_ops, rejects_bad_arguments) {
    static float f[64];
    static uint16_t h[64] __attribute__((aligned(16)));
    static int32_t ids[4];
    cr_assert_eq(sl_gpu_rmsnorm(f, f, 1, 0, 1e-5f, f, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_rmsnorm(NULL, f, 1, 8, 1e-5f, f, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_rmsnorm(NULL, NULL, 0, 8, 1e-5f, NULL, NULL), 0); /* nothing to do */
    cr_assert_eq(sl_gpu_rope(f, 1, 1, 64, 63, false, 1e4f, 1, 0, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_rope(f, 1, 1, 64, 66, false, 1e4f, 1, 0, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_rope(f, 1, 1, 2048, 2048, false, 1e4f, 1, 0, NULL), SL_EUNSUPPORTED);
    cr_assert_eq(sl_gpu_add(NULL, f, 4, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_add_rows(f, f, 2, 0, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_swiglu(f, NULL, 4, f, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_f32_to_f16(f, -1, h, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_kv_write(h, h, 8, 1, 8, 5, 4, f, f, NULL), SL_EBOUNDS);
    cr_assert_eq(sl_gpu_kv_write(h, h, 8, 1, 8, -1, 1, f, f, NULL), SL_EBOUNDS);
    cr_assert_eq(sl_gpu_get_rows(SL_TYPE_Q2_K, h, 4, ids, 1, 256, f, NULL), SL_EUNSUPPORTED);
    cr_assert_eq(sl_gpu_get_rows(SL_TYPE_Q8_0, h, 4, ids, 1, 33, f, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_get_rows(SL_TYPE_Q8_0, h, 4, NULL, 1, 32, f, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_get_rows(SL_TYPE_Q8_0, h, 0, ids, 1, 32, f, NULL), SL_EINVAL);
    struct sl_gpu_weight w = {0};
    cr_assert_eq(sl_gpu_weight_upload(SL_TYPE_Q8_0, h, 33, 2, &w, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_weight_upload(SL_TYPE_Q2_K, h, 256, 2, &w, NULL), SL_EUNSUPPORTED);
    cr_assert_eq(sl_gpu_weight_upload(SL_TYPE_F32, h, (int64_t)1 << 32, 2, &w, NULL), SL_EINVAL);
    cr_assert_null(w.w);
    sl_gpu_weight_free(NULL);
    sl_gpu_blas_free(NULL);
    cr_assert_eq(sl_gpu_matmul(NULL, &w, f, 1, f, h, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_matmul_scratch_bytes(3, 100), 768u); /* 600 bytes, rounded to 256 */
    cr_assert_eq(sl_gpu_matmul_scratch_bytes(0, 100), 0u);
    /* attention: head_dim, GQA shape, bounds, alignment */
    cr_assert_eq(sl_gpu_attention(f, h, h, 8, 1, 0, 4, 2, 96, f, NULL, 0, NULL), SL_EUNSUPPORTED);
    cr_assert_eq(sl_gpu_attention(f, h, h, 8, 1, 0, 6, 4, 64, f, NULL, 0, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_attention(f, h, h, 8, 2, 7, 4, 2, 64, f, NULL, 0, NULL), SL_EBOUNDS);
    cr_assert_eq(sl_gpu_attention(f, h + 1, h, 8, 1, 0, 4, 2, 64, f, NULL, 0, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_attention(NULL, h, h, 8, 1, 0, 4, 2, 64, f, NULL, 0, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_attention(f, h, h, 8, 0, 8, 4, 2, 64, f, NULL, 0, NULL), 0); /* no tokens */
    cr_assert_neq(sl_error_detail()[0], '\0');
}
