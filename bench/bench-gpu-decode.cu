/* Question: decode tokens per second on the GPU, dense (every layer's K/V in VRAM) against
 * Spotlight (the K/V in pinned host memory, the key codes and a block cache in VRAM), at 32K,
 * 128K, 512K and 1M tokens of context, and the VRAM each needs. Targets (issue 8, from the
 * paper): Spotlight >= 3x dense where dense fits, and 1M tokens within 8 GB of VRAM for the
 * default model.
 *
 * Prefill to 1M tokens does not fit a bench's time, so each row is composed from two
 * measurements of the same run:
 *   base  the engine's own decode step (sl_context_eval of one token, the whole model on the
 *         GPU) at a 4K context, dense and sparse (simhash 64 bits, the K/V in pinned host
 *         memory: every fixed cost of the sparse step - the K/V staged per layer, then sent to
 *         the store, the keys hashed on the host and their codes uploaded once per token - is
 *         in it);
 *   layer one layer's attention at N positions with synthetic K/V: dense sl_gpu_attention over
 *         the layer's K/V in VRAM, Spotlight sl_gpu_sparse_decode (query hash, scan, top-k,
 *         fetch from a pinned host store through the VRAM cache, attention) over N positions;
 *         the query drifts a little each step, so consecutive selections overlap as real ones
 *         do and the cache hit rate is reported beside it.
 *   ms/token(N) = base(4K) + layers x (layer(N) - layer(4K)), for every sparse layer.
 * The model is the default model's shape (SmolLM2-135M: 30 layers, 576 wide, 9/3 heads of 64,
 * vocab 49152) with generated weights: speed does not depend on their values, and the lent
 * device has no model cache. VRAM: core/mem-plan for the whole model, the plan --vram-mb uses.
 *
 *   bench-gpu-decode [-o FILE] [--steps S] [--max-n N]
 * Exits 1 with a one-line message when there is no CUDA device. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "core/backend.h"
#include "core/hash.h"
#include "core/mem-plan.h"
#include "gpu/gpu-ops.h"
#include "gpu/gpu-sparse.h"
#include "spotlight/context.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "spotlight/kv-store.h"
extern "C" {
#include "tests/gguf-builder.h"
}

static const int64_t k_ns[] = {32 << 10, 128 << 10, 512 << 10, 1 << 20};
static const int64_t k_base = 4096;

static void die(const char *what, int rc) {
    fprintf(stderr, "bench-gpu-decode: %s: %s (%s)\n", what, sl_strerror(rc), sl_error_detail());
    exit(1);
}
#define CK(call)                                                                                                       \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        if (rc_) die(#call, rc_);                                                                                      \
    } while (0)
#define CU(call)                                                                                                       \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "bench-gpu-decode: %s: %s\n", #call, cudaGetErrorString(e_));                              \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint64_t rnd64(void) {
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float rndf(void) { return (float)((rnd64() >> 40) * 0x1p-24 * 2.0 - 1.0); }
static uint16_t rnd_f16(void) { return (uint16_t)(0x3000 + (rnd64() & 0x0FFF)) ^ (uint16_t)((rnd64() & 1) << 15); }

/* The default model's shape, generated weights, as a GGUF in a temporary file. */
static sl_model *make_model(void) {
    struct gb_model_spec spec = {};
    spec.arch = "llama", spec.n_layer = 30, spec.n_embd = 576, spec.n_ff = 1536, spec.n_head = 9;
    spec.n_head_kv = 3, spec.n_vocab = 49152, spec.n_ctx = 8192, spec.tied = 1;
    sl_model *m = NULL;
    CK(gb_load_model(&spec, &m));
    return m;
}

/* The engine's decode step at a k_base context: median ms per token over `steps`. */
static double engine_ms(const sl_model *m, bool sparse, int steps) {
    struct sl_context_params p = sl_context_default_params();
    p.n_ctx = k_base + steps + 64;
    p.n_batch = 512;
    p.gpu = true;
    sl_context *c = NULL;
    CK(sl_context_create(m, &p, &c));
    struct sl_attn_params a = sl_attn_default_params(sparse ? SL_ATTN_SIMHASH : SL_ATTN_DENSE);
    CK(sl_context_set_attention(c, &a));
    const int32_t V = sl_model_config(m)->n_vocab;
    int32_t *toks = (int32_t *)malloc(sizeof(int32_t) * k_base);
    for (int64_t i = 0; i < k_base; i++) toks[i] = (int32_t)(rnd64() % (uint64_t)V);
    CK(sl_context_eval(c, toks, k_base, false));
    double *t = (double *)malloc(sizeof(double) * (size_t)steps);
    for (int s = 0; s < steps; s++) {
        int32_t tok = (int32_t)(rnd64() % (uint64_t)V);
        double t0 = bench_now();
        CK(sl_context_eval(c, &tok, 1, false)); /* returns with the logits on the host */
        t[s] = 1e3 * (bench_now() - t0);
    }
    double ms = bench_median(t, steps);
    free(t);
    free(toks);
    sl_context_free(c);
    return ms;
}

struct layer_cfg {
    int32_t hq, hkv, d;
};

/* Dense attention of one token over one layer's N positions in VRAM: median ms. */
static double dense_layer_ms(const layer_cfg &L, int64_t N, int steps) {
    const size_t kv = (size_t)L.hkv * (size_t)N * (size_t)L.d;
    uint16_t *k = NULL, *v = NULL;
    float *q = NULL, *out = NULL;
    void *ws = NULL;
    const size_t ws_bytes = sl_gpu_attention_workspace_bytes(1, L.hq, L.d);
    CU(cudaMalloc(&k, kv * 2));
    CU(cudaMalloc(&v, kv * 2));
    CU(cudaMemset(k, 0x31, kv * 2)); /* f16 0x3131: small positive values */
    CU(cudaMemset(v, 0x2f, kv * 2));
    CU(cudaMalloc(&q, sizeof(float) * (size_t)(L.hq * L.d)));
    CU(cudaMemset(q, 0, sizeof(float) * (size_t)(L.hq * L.d)));
    CU(cudaMalloc(&out, sizeof(float) * (size_t)(L.hq * L.d)));
    CU(cudaMalloc(&ws, ws_bytes));
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    double *t = (double *)malloc(sizeof(double) * (size_t)steps);
    for (int s = -2; s < steps; s++) {
        CU(cudaEventRecord(e0, 0));
        CK(sl_gpu_attention(q, k, v, N, 1, N - 1, L.hq, L.hkv, L.d, out, ws, ws_bytes, NULL));
        CU(cudaEventRecord(e1, 0));
        CU(cudaEventSynchronize(e1));
        float ms = 0;
        CU(cudaEventElapsedTime(&ms, e0, e1));
        if (s >= 0) t[s] = ms;
    }
    double ms = bench_median(t, steps);
    free(t);
    cudaFree(k), cudaFree(v), cudaFree(q), cudaFree(out), cudaFree(ws);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return ms;
}

struct sparse_result {
    double ms, hit_rate, mb_in;
};

/* One layer of Spotlight decode over N positions of synthetic K/V in pinned host memory. */
static sparse_result sparse_layer_ms(const layer_cfg &L, int64_t N, float budget, int steps) {
    struct sl_kv_shape shape = {1, L.hkv, L.d, SL_KV_DTYPE_F16, 16};
    struct sl_kv_store_params sp = sl_kv_store_default_params();
    sp.capacity = N;
    sp.max_pending = 4096;
    CK(sl_kv_store_params_for_device(&sp, 0));
    sl_kv_store_t store = NULL;
    CK(sl_kv_store_create(&shape, &sp, &store));
    const int64_t chunk = 4096, row = (int64_t)L.hkv * L.d;
    uint16_t *kh = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(chunk * row));
    uint16_t *vh = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(chunk * row));
    for (int64_t i = 0; i < chunk * row; i++) kh[i] = rnd_f16(), vh[i] = rnd_f16();
    for (int64_t p = 0; p < N; p += chunk) {
        const int64_t n = N - p < chunk ? N - p : chunk;
        CK(sl_kv_store_append(store, 0, n, kh, vh));
        CK(sl_kv_store_commit(store, n, NULL));
    }
    struct sl_hash_params hp = sl_hash_default_params();
    hp.n_layer = 1, hp.n_head_q = L.hq, hp.n_head_kv = L.hkv, hp.head_dim = L.d, hp.bits = 64;
    sl_hash *h = NULL;
    CK(sl_hash_create(&hp, &h)); /* Spotlight's MLP + projection, untrained: the same kernels */
    struct sl_attn_params ap = sl_attn_default_params(SL_ATTN_SPOTLIGHT);
    ap.budget = budget;
    int64_t kmax = (int64_t)ceil((double)budget * (double)N);
    if (kmax < ap.min_tokens) kmax = ap.min_tokens;
    struct sl_backend_sparse_params bp = {};
    bp.hash = h, bp.store = store, bp.n_layer = 1, bp.n_head = L.hq, bp.n_head_kv = L.hkv, bp.head_dim = L.d;
    bp.n_ctx = N + 1, bp.max_sel = kmax + ap.n_sink + ap.n_window + 1, bp.n_sink = ap.n_sink;
    bp.n_window = ap.n_window, bp.block = 1, bp.cache_bytes = (int64_t)64 << 20, bp.prefetch = false;
    struct sl_backend_sparse *s = NULL;
    CK(sl_gpu_sparse_create(&bp, 0, &s));
    /* random codes (what hashing random keys gives), uploaded in chunks */
    uint64_t *codes = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)(L.hkv * chunk));
    for (int64_t p = 0; p < N; p += chunk) {
        const int64_t n = N - p < chunk ? N - p : chunk;
        for (int64_t i = 0; i < L.hkv * n; i++) codes[i] = rnd64();
        CK(sl_gpu_sparse_codes(s, 0, p, n, codes, NULL));
    }
    const int64_t qn = (int64_t)L.hq * L.d;
    float *qh = (float *)malloc(sizeof(float) * (size_t)qn), *q = NULL, *k = NULL, *v = NULL, *out = NULL;
    for (int64_t i = 0; i < qn; i++) qh[i] = rndf();
    CU(cudaMalloc(&q, sizeof(float) * (size_t)qn));
    CU(cudaMalloc(&out, sizeof(float) * (size_t)qn));
    CU(cudaMalloc(&k, sizeof(float) * (size_t)row));
    CU(cudaMalloc(&v, sizeof(float) * (size_t)row));
    CU(cudaMemset(k, 0, sizeof(float) * (size_t)row));
    CU(cudaMemset(v, 0, sizeof(float) * (size_t)row));
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    double *t = (double *)malloc(sizeof(double) * (size_t)steps);
    struct sl_backend_sparse_stats st0, st1;
    for (int s_ = -3; s_ < steps; s_++) {
        for (int64_t i = 0; i < qn; i++) qh[i] += 0.15f * rndf(); /* the query drifts */
        CU(cudaMemcpy(q, qh, sizeof(float) * (size_t)qn, cudaMemcpyHostToDevice));
        if (s_ == 0) CK(sl_gpu_sparse_stats(s, &st0));
        CU(cudaEventRecord(e0, 0));
        CK(sl_gpu_sparse_decode(s, 0, q, k, v, N, kmax, out, NULL));
        CU(cudaEventRecord(e1, 0));
        CU(cudaEventSynchronize(e1));
        float ms = 0;
        CU(cudaEventElapsedTime(&ms, e0, e1));
        if (s_ >= 0) t[s_] = ms;
    }
    CK(sl_gpu_sparse_stats(s, &st1));
    sparse_result r;
    r.ms = bench_median(t, steps);
    const double rows = (double)(st1.rows - st0.rows);
    r.hit_rate = rows > 0 ? (double)(st1.row_hits - st0.row_hits) / rows : 0;
    r.mb_in = (double)(st1.bytes_in - st0.bytes_in) / steps / 1e6;
    free(t), free(qh), free(codes), free(kh), free(vh);
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(out);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    sl_gpu_sparse_free(s);
    sl_hash_free(h);
    sl_kv_store_free(store);
    return r;
}

static double plan_gib(const sl_model *m, const struct sl_attn_params *a, int64_t n) {
    struct sl_mem_plan_params p = {};
    p.gpu = true, p.n_ctx = n, p.n_batch = 512, p.attn = a;
    struct sl_mem_plan pl;
    CK(sl_mem_plan_compute(m, &p, &pl));
    return (double)pl.fast_total / (double)(1 << 30);
}

int main(int argc, char **argv) {
    const char *out_path = NULL;
    int steps = 20;
    int64_t max_n = 1 << 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-n") && i + 1 < argc) max_n = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-gpu-decode [-o FILE] [--steps S] [--max-n N]\n");
            return 2;
        }
    }
    if (steps < 3) steps = 3;
    if (sl_cuda_device_count() < 1) {
        fprintf(stderr, "bench-gpu-decode: no CUDA device\n");
        return 1;
    }
    struct sl_device_info dev;
    CK(sl_cuda_device_info(0, &dev));
    sl_model *m = make_model();
    const struct sl_model_config *cfg = sl_model_config(m);
    const layer_cfg L = {cfg->n_head, cfg->n_head_kv, cfg->head_dim};
    const struct sl_attn_params dense_p = sl_attn_default_params(SL_ATTN_DENSE);
    struct sl_attn_params spot_p = sl_attn_default_params(SL_ATTN_SPOTLIGHT);
    const int sparse_layers = cfg->n_layer - spot_p.dense_layers;

    const double base_dense = engine_ms(m, false, steps), base_sparse = engine_ms(m, true, steps);
    const double dense_4k = dense_layer_ms(L, k_base, steps);
    FILE *o = out_path ? fopen(out_path, "w") : stdout;
    if (!o) die("opening the output", SL_EIO);
    fprintf(o, "Device: %s. Model: SmolLM2-135M's shape (generated weights), %d layers (%d sparse). Engine decode "
               "step at %lld positions: dense %.2f ms, sparse %.2f ms (simhash 64, K/V in pinned host memory). "
               "Rows composed as the bench's header says; %d steps per median; Spotlight budget 2%% and 0.2%% "
               "(at least 64), 64-bit codes, 64 MiB VRAM block cache.\n\n",
            dev.name, cfg->n_layer, sparse_layers, (long long)k_base, base_dense, base_sparse, steps);
    fprintf(o, "| context | dense tok/s | dense VRAM GiB | spotlight 2%% tok/s | x dense | cache hits | fetched "
               "MB/layer | spotlight 0.2%% tok/s | x dense | spotlight VRAM GiB |\n");
    fprintf(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    const sparse_result s4k = sparse_layer_ms(L, k_base, 0.02f, steps);
    for (size_t i = 0; i < sizeof k_ns / sizeof *k_ns && k_ns[i] <= max_n; i++) {
        const int64_t N = k_ns[i];
        const double dv = plan_gib(m, &dense_p, N), sv = plan_gib(m, &spot_p, N);
        size_t free_b = 0, total_b = 0;
        CU(cudaMemGetInfo(&free_b, &total_b));
        const bool dense_fits = dv * (double)(1 << 30) < 0.9 * (double)total_b;
        const double d_ms = dense_fits ? base_dense + cfg->n_layer * (dense_layer_ms(L, N, steps) - dense_4k) : NAN;
        const sparse_result a = sparse_layer_ms(L, N, 0.02f, steps), b = sparse_layer_ms(L, N, 0.002f, steps);
        const double sa = base_sparse + sparse_layers * (a.ms - s4k.ms);
        const double sb = base_sparse + sparse_layers * (b.ms - s4k.ms);
        char dcol[32] = "does not fit", xa[32] = "—", xb[32] = "—";
        if (dense_fits) {
            snprintf(dcol, sizeof dcol, "%.1f", 1e3 / d_ms);
            snprintf(xa, sizeof xa, "**%.2fx**", d_ms / sa);
            snprintf(xb, sizeof xb, "%.2fx", d_ms / sb);
        }
        fprintf(o, "| %lld | %s | %.2f | %.1f | %s | %.0f%% | %.2f | %.1f | %s | %.2f |\n", (long long)N, dcol, dv,
                1e3 / sa, xa, 100 * a.hit_rate, a.mb_in, 1e3 / sb, xb, sv);
        fprintf(stderr, "bench-gpu-decode: %lld: dense %.3f ms/token, spotlight 2%% %.3f, 0.2%% %.3f\n", (long long)N,
                d_ms, sa, sb);
    }
    if (o != stdout) fclose(o);
    sl_model_free(m);
    return 0;
}
