/* Question: how long does Spotlight retrieval take on the GPU per layer - query encode, scan of
 * every KV head's key codes, top-k - as the context grows from 8K to 1M positions, and how
 * close is that to the memory-bandwidth limit? The issue's target: under 50 us per layer at
 * 512K tokens for the Llama-3-8B shape on an H200, top-k included (the paper reports under
 * 100 us on an A100 with PyTorch's top-k).
 *
 * Shapes: the default model (SmolLM2-135M: 9 query heads, 3 KV heads, head_dim 64, 64-bit
 * codes) and a Llama-3-8B shape (32 query heads, 8 KV heads, head_dim 128, 128-bit codes);
 * random key codes, random (untrained) Spotlight hash weights; budget 2% (k = N / 50), 4 sinks,
 * a 64-position window, token level, and block 16 in one column.
 *
 * Columns, each the median of --reps repetitions after warm-up, timed with CUDA events around
 * the calls (so launch gaps count, as they do in a decode step):
 *   encode     sl_gpu_hash_encode of one query vector for every query head (fused kernel)
 *   scan       sl_gpu_hamming_scan_heads, all KV heads in one launch
 *   top-k      sl_gpu_topk_select on those scores (its own histogram pass)
 *   layer      encode + sl_gpu_retrieve_layer (scan with the histogram fused, then top-k)
 *   layer b16  the same at block level, block 16
 * Limit: the bytes the token-level layer moves - key codes read, scores written, then read
 * by the count and compaction passes - over the device's copy bandwidth, measured in the same
 * run as a cudaMemcpy device-to-device of 1 GiB (read + write bytes over time).
 *
 *   bench-gpu-retrieval [-o FILE] [--reps R] [--max-n N]
 * Exits 1 with a one-line message when there is no CUDA device. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" { /* C headers without C++ guards */
#include "core/hash.h"
}
#include "bench/bench-util.h"
#include "gpu/gpu-retrieval.h"
#include "spotlight/device.h"
#include "spotlight/error.h"

struct shape {
    const char *name;
    int32_t n_layer; /* of the whole model: for the table's bytes per 1M tokens */
    int32_t hq, hkv, d, bits;
};

static const shape k_shapes[] = {
    {"SmolLM2-135M (9q/3kv, d 64, 64-bit)", 30, 9, 3, 64, 64},
    {"Llama-3-8B (32q/8kv, d 128, 128-bit)", 32, 32, 8, 128, 128},
};
static const int64_t k_ns[] = {8 << 10, 32 << 10, 128 << 10, 512 << 10, 1 << 20};

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd64(void) {
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void die(const char *what, int rc) {
    fprintf(stderr, "bench-gpu-retrieval: %s: %s (%s)\n", what, sl_strerror(rc), sl_error_detail());
    exit(1);
}

static void cuda_ok(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return;
    fprintf(stderr, "bench-gpu-retrieval: %s: %s\n", what, cudaGetErrorString(e));
    exit(1);
}

/* Median microseconds of fn over reps, after warm-up calls; events on the default stream. */
template <typename F>
static double time_us(int reps, F fn) {
    cudaEvent_t a, b;
    cuda_ok(cudaEventCreate(&a), "event");
    cuda_ok(cudaEventCreate(&b), "event");
    for (int i = 0; i < 5; i++) fn();
    cuda_ok(cudaDeviceSynchronize(), "warm-up");
    double *t = (double *)malloc(sizeof(double) * (size_t)reps);
    for (int i = 0; i < reps; i++) {
        cuda_ok(cudaEventRecord(a, 0), "record");
        fn();
        cuda_ok(cudaEventRecord(b, 0), "record");
        cuda_ok(cudaEventSynchronize(b), "sync");
        float ms = 0;
        cuda_ok(cudaEventElapsedTime(&ms, a, b), "elapsed");
        t[i] = 1e3 * ms;
    }
    double m = bench_median(t, reps);
    free(t);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return m;
}

/* Device copy bandwidth, bytes read + written per second: a 1 GiB device-to-device copy. */
static double copy_bandwidth(void) {
    const size_t bytes = (size_t)1 << 30;
    void *src, *dst;
    cuda_ok(cudaMalloc(&src, bytes), "cudaMalloc 1 GiB");
    cuda_ok(cudaMalloc(&dst, bytes), "cudaMalloc 1 GiB");
    cuda_ok(cudaMemset(src, 1, bytes), "memset");
    double us = time_us(10, [&] { cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0), "copy"); });
    cudaFree(src);
    cudaFree(dst);
    return 2.0 * (double)bytes / (us * 1e-6);
}

int main(int argc, char **argv) {
    const char *out_path = NULL;
    int reps = 50;
    int64_t max_n = 1 << 20;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--out")) && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-n") && i + 1 < argc) max_n = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-gpu-retrieval [-o FILE] [--reps R] [--max-n N]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (sl_cuda_device_count() == 0) {
        fprintf(stderr, "bench-gpu-retrieval: no CUDA device (this benchmark needs a GPU)\n");
        return 1;
    }
    struct sl_device_info dev;
    int rc = sl_cuda_device_info(0, &dev);
    if (rc) die("device info", rc);
    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) {
        fprintf(stderr, "bench-gpu-retrieval: cannot write %s\n", out_path);
        return 1;
    }
    const double bw = copy_bandwidth();
    fprintf(out, "# GPU retrieval per layer: %s\n\n", dev.name);
    fprintf(out, "Device copy bandwidth (1 GiB D2D, read + write): %.0f GB/s. Budget 2%%, 4 sinks, 64 window; "
                 "median of %d reps; times in us.\n\n", bw * 1e-9, reps);
    for (const shape &s : k_shapes)
        fprintf(out, "Code table, %s, %d layers: %.1f MiB per 1M (2^20) tokens.\n", s.name, s.n_layer,
                (double)sl_gpu_codes_plan_bytes(s.n_layer, s.hkv, s.bits, 1 << 20) / (1 << 20));
    fprintf(out, "\nTarget: under 50 us per layer at 512K tokens, Llama-3-8B shape, H200, top-k included.\n\n");
    fprintf(out, "| shape | N | encode | scan | top-k | layer | layer b16 | MB moved | bandwidth limit | layer / limit |\n");
    fprintf(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");

    for (const shape &s : k_shapes) {
        const int32_t W = sl_hash_code_words(s.bits), G = s.hq / s.hkv;
        struct sl_hash_params hp = sl_hash_default_params();
        hp.n_layer = 1, hp.n_head_q = s.hq, hp.n_head_kv = s.hkv, hp.head_dim = s.d, hp.bits = s.bits;
        hp.kind = SL_HASH_SPOTLIGHT;
        sl_hash *h;
        if ((rc = sl_hash_create(&hp, &h))) die("sl_hash_create", rc);
        sl_gpu_hash *gh;
        if ((rc = sl_gpu_hash_upload(h, NULL, &gh))) die("sl_gpu_hash_upload", rc);
        sl_gpu_codes *t;
        if ((rc = sl_gpu_codes_create(1, s.hkv, W, max_n, &t))) die("sl_gpu_codes_create", rc);
        /* random key codes, a slice of positions at a time */
        const int64_t slice = 1 << 16;
        uint64_t *codes = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)(s.hkv * slice * W));
        for (int64_t p0 = 0; p0 < max_n; p0 += slice) {
            int64_t m = max_n - p0 < slice ? max_n - p0 : slice;
            for (int64_t i = 0; i < s.hkv * m * W; i++) codes[i] = rnd64();
            if ((rc = sl_gpu_codes_upload(t, 0, p0, m, codes, NULL))) die("upload", rc);
            cuda_ok(cudaDeviceSynchronize(), "upload");
        }
        free(codes);
        float *xh = (float *)malloc(sizeof(float) * (size_t)(s.hq * s.d)), *x;
        for (int32_t i = 0; i < s.hq * s.d; i++) xh[i] = (float)((double)(rnd64() >> 11) * 0x1p-53 * 2.0 - 1.0);
        cuda_ok(cudaMalloc((void **)&x, sizeof(float) * (size_t)(s.hq * s.d)), "x");
        cuda_ok(cudaMemcpy(x, xh, sizeof(float) * (size_t)(s.hq * s.d), cudaMemcpyHostToDevice), "x");
        free(xh);
        uint64_t *q;
        cuda_ok(cudaMalloc((void **)&q, sizeof(uint64_t) * (size_t)(s.hq * W)), "q");
        size_t wb = sl_gpu_retrieve_workspace_bytes(max_n, G, W, 1, s.hkv);
        size_t wb16 = sl_gpu_retrieve_workspace_bytes(max_n, G, W, 16, s.hkv);
        wb = wb > wb16 ? wb : wb16;
        void *work;
        cuda_ok(cudaMalloc(&work, wb), "workspace");
        const int64_t out_ld = max_n;
        int32_t *pos, *counts;
        cuda_ok(cudaMalloc((void **)&pos, sizeof(int32_t) * (size_t)(s.hkv * out_ld)), "positions");
        cuda_ok(cudaMalloc((void **)&counts, sizeof(int32_t) * (size_t)s.hkv), "counts");
        const uint64_t *k0 = sl_gpu_codes_head(t, 0, 0);
        const int64_t kstride = sl_gpu_codes_head_stride(t);

        for (int64_t n : k_ns) {
            if (n > max_n) break;
            struct sl_gpu_topk_params p = {n / 50, 4, 64, 1}, p16 = {n / 50, 4, 64, 16};
            const int64_t ld = sl_gpu_scores_ld(n);
            uint16_t *scores = (uint16_t *)work;
            /* the top-k alone: its workspace after the scores, as the layer call lays them out */
            const size_t sb = ((size_t)s.hkv * (size_t)ld * 2 + 255) / 256 * 256;
            void *tk = (char *)work + sb;
            const size_t tkb = wb - sb;
            auto check = [](int r, const char *what) {
                if (r) die(what, r);
            };
            double enc = time_us(reps, [&] {
                check(sl_gpu_hash_encode(gh, SL_HASH_QUERY, 0, x, 1, q, W, NULL), "encode");
            });
            double scan = time_us(reps, [&] {
                check(sl_gpu_hamming_scan_heads(q, G, k0, kstride, s.hkv, n, W, scores, ld, NULL), "scan");
            });
            double topk = time_us(reps, [&] {
                check(sl_gpu_topk_select(scores, ld, s.hkv, n, G * W * 64, &p, tk, tkb, pos, out_ld, counts, NULL),
                      "top-k");
            });
            double layer = time_us(reps, [&] {
                check(sl_gpu_hash_encode(gh, SL_HASH_QUERY, 0, x, 1, q, W, NULL), "encode");
                check(sl_gpu_retrieve_layer(t, 0, q, G, n, &p, work, wb, pos, out_ld, counts, NULL), "retrieve");
            });
            double layer16 = time_us(reps, [&] {
                check(sl_gpu_hash_encode(gh, SL_HASH_QUERY, 0, x, 1, q, W, NULL), "encode");
                check(sl_gpu_retrieve_layer(t, 0, q, G, n, &p16, work, wb, pos, out_ld, counts, NULL), "retrieve");
            });
            /* codes read, scores written, scores read by the count and compaction passes */
            const double bytes = (double)s.hkv * (double)n * (8.0 * W + 3 * 2.0);
            const double limit = bytes / bw * 1e6;
            fprintf(out, "| %s | %lldK | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1fx |\n", s.name,
                    (long long)(n >> 10), enc, scan, topk, layer, layer16, bytes / 1e6, limit, layer / limit);
            fflush(out);
        }
        cudaFree(work);
        cudaFree(pos);
        cudaFree(counts);
        cudaFree(q);
        cudaFree(x);
        sl_gpu_codes_free(t);
        sl_gpu_hash_free(gh);
        sl_hash_free(h);
    }
    if (out != stdout) fclose(out);
    return 0;
}
