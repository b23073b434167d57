/* Question: how close do the dense step's CUDA kernels (gpu/gpu-ops.h) come to the device's
 * limits, measured in the same run: HBM bandwidth for the memory-bound ones (decode attention,
 * decode GEMM, elementwise ops) and cuBLAS's own bf16 GEMM rate for the compute-bound ones
 * (prefill attention, prefill GEMM)?
 *
 * Shape: Llama-3-8B (32 query heads, 8 KV heads, head_dim 128, width 4096, FFN 14336), one
 * layer, random data (timing does not depend on values).
 * Rows, each the median of --reps timed batches after warm-up, a batch being --batch calls
 * back to back on one stream between two CUDA events (launch gaps count, as in a step):
 *   attention decode   n = 1 at L positions: K+V bytes (L x 8 x 128 x 2 x 2) / time vs HBM
 *   attention prefill  n = 512 at pos0: 4 n (pos0 + n/2) 32 x 128 flops / time vs the GEMM rate
 *   matmul             Q8_0 4096 -> 4096 and 4096 -> 14336 weights (bf16 in VRAM): n = 1
 *                      (weight bytes / time vs HBM) and n = 512 (2 n k m / time vs the GEMM rate)
 *   rmsnorm, rope, swiglu, kv_write at n = 512: bytes read + written / time vs HBM
 * Limits: HBM = a 1 GiB cudaMemcpy device to device (read + write bytes / time); GEMM rate =
 * cublasGemmEx bf16 -> f32, 8192^3, CUBLAS_COMPUTE_32F.
 *
 *   bench-gpu-ops [-o FILE.md] [--reps R] [--batch B] [--max-len L]
 * Markdown to -o (default stdout). Exits 1 with a one-line message when there is no device. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench-util.h"
#include "gpu/gpu-ops.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "spotlight/quant.h"

static struct {
    const char *out;
    int reps, batch;
    int64_t max_len;
} o = {NULL, 7, 10, 1 << 20};

static void die(const char *what, int rc) {
    fprintf(stderr, "bench-gpu-ops: %s: %s (%s)\n", what, sl_strerror(rc), sl_error_detail());
    exit(1);
}

static void cuda_ok(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return;
    fprintf(stderr, "bench-gpu-ops: %s: %s\n", what, cudaGetErrorString(e));
    exit(1);
}

static void *dev_alloc(size_t bytes, int fill) {
    void *p = NULL;
    cuda_ok(cudaMalloc(&p, bytes), "cudaMalloc");
    cuda_ok(cudaMemset(p, fill, bytes), "cudaMemset");
    return p;
}

/* Median seconds per call of fn: reps batches of `batch` calls each, timed with events. */
template <typename F>
static double time_call(cudaStream_t st, int batch, F fn) {
    cudaEvent_t a, b;
    cuda_ok(cudaEventCreate(&a), "event");
    cuda_ok(cudaEventCreate(&b), "event");
    for (int i = 0; i < 2; i++) fn();
    cuda_ok(cudaStreamSynchronize(st), "warm-up");
    double t[64];
    int reps = o.reps < 64 ? o.reps : 64;
    for (int r = 0; r < reps; r++) {
        cuda_ok(cudaEventRecord(a, st), "record");
        for (int i = 0; i < batch; i++) fn();
        cuda_ok(cudaEventRecord(b, st), "record");
        cuda_ok(cudaEventSynchronize(b), "sync");
        float ms = 0;
        cuda_ok(cudaEventElapsedTime(&ms, a, b), "elapsed");
        t[r] = 1e-3 * ms / batch;
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return bench_median(t, reps);
}

/* f16 1.0 .. 2.0 in every K/V element: finite, and scores stay small. */
#define F16_ONE 0x3c

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) o.out = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) o.reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) o.batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-len") && i + 1 < argc) o.max_len = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-gpu-ops [-o FILE.md] [--reps R] [--batch B] [--max-len L]\n");
            return 2;
        }
    }
    if (sl_cuda_device_count() <= 0) {
        fprintf(stderr, "bench-gpu-ops: no CUDA device\n");
        return 1;
    }
    FILE *f = o.out ? fopen(o.out, "w") : stdout;
    if (!f) {
        perror(o.out);
        return 1;
    }
    struct sl_device_info info;
    if (sl_cuda_device_info(0, &info)) die("device info", SL_EDEVICE);
    cudaStream_t st;
    cuda_ok(cudaStreamCreate(&st), "stream");
    void *blas = NULL;
    int rc = sl_gpu_blas_create(&blas);
    if (rc) die("cuBLAS", rc);

    /* ---- limits ---- */
    const size_t gib = (size_t)1 << 30;
    void *ma = dev_alloc(gib, 0), *mb = dev_alloc(gib, 0);
    double t_copy = time_call(st, 2, [&] { cuda_ok(cudaMemcpyAsync(mb, ma, gib, cudaMemcpyDeviceToDevice, st), "copy"); });
    const double hbm = 2.0 * (double)gib / t_copy;
    cuda_ok(cudaFree(ma), "free");
    cuda_ok(cudaFree(mb), "free");
    const int g = 8192;
    uint16_t *ga = (uint16_t *)dev_alloc((size_t)g * g * 2, 0), *gb = (uint16_t *)dev_alloc((size_t)g * g * 2, 0);
    float *gc = (float *)dev_alloc((size_t)g * g * 4, 0);
    cuda_ok(cudaDeviceSynchronize(), "sync");
    if (cublasSetStream((cublasHandle_t)blas, st) != CUBLAS_STATUS_SUCCESS) die("cublasSetStream", SL_EDEVICE);
    const float one = 1, zero = 0;
    double t_gemm = time_call(st, 2, [&] {
        if (cublasGemmEx((cublasHandle_t)blas, CUBLAS_OP_T, CUBLAS_OP_N, g, g, g, &one, ga, CUDA_R_16BF, g, gb,
                         CUDA_R_16BF, g, &zero, gc, CUDA_R_32F, g, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
            die("cublasGemmEx", SL_EDEVICE);
    });
    const double gemm_rate = 2.0 * g * (double)g * g / t_gemm;
    cudaFree(ga);
    cudaFree(gb);
    cudaFree(gc);

    fprintf(f, "# Dense-step GPU kernels (gpu/gpu-ops.h)\n\n%s (%d SMs); HBM limit %.0f GB/s (1 GiB copy), "
               "cuBLAS bf16 GEMM %.0f TFLOP/s (8192^3). Llama-3-8B shape: 32/8 heads of 128, width 4096.\n\n",
            info.name, info.n_sm, hbm / 1e9, gemm_rate / 1e12);
    fprintf(f, "| op | size | time | rate | of limit |\n|---|---|---:|---:|---:|\n");

    /* ---- attention ---- */
    const int32_t nh = 32, nkv = 8, hd = 128;
    const int64_t n_ctx = o.max_len + 512;
    size_t cache_bytes = (size_t)nkv * (size_t)n_ctx * hd * 2;
    uint16_t *kc = (uint16_t *)dev_alloc(cache_bytes, F16_ONE), *vc = (uint16_t *)dev_alloc(cache_bytes, F16_ONE);
    float *q = (float *)dev_alloc((size_t)512 * nh * hd * 4, 0), *out = (float *)dev_alloc((size_t)512 * nh * hd * 4, 0);
    size_t ws_bytes = sl_gpu_attention_workspace_bytes(512, nh, hd);
    void *ws = dev_alloc(ws_bytes, 0);
    static const int64_t lens[] = {4096, 32768, 131072, 524288, 1048576};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0] && lens[i] <= o.max_len; i++) {
        int64_t len = lens[i];
        double t = time_call(st, o.batch, [&] {
            int r = sl_gpu_attention(q, kc, vc, n_ctx, 1, len - 1, nh, nkv, hd, out, ws, ws_bytes, st);
            if (r) die("attention", r);
        });
        double bytes = (double)len * nkv * hd * 2 * 2;
        fprintf(f, "| attention decode | n 1, %lld positions | %.1f us | %.0f GB/s | %.0f%% |\n", (long long)len,
                t * 1e6, bytes / t / 1e9, 100 * bytes / t / hbm);
    }
    static const int64_t pos0s[] = {0, 8192, 32768};
    for (size_t i = 0; i < sizeof pos0s / sizeof pos0s[0] && pos0s[i] + 512 <= n_ctx; i++) {
        int64_t p0 = pos0s[i];
        double t = time_call(st, 2, [&] {
            int r = sl_gpu_attention(q, kc, vc, n_ctx, 512, p0, nh, nkv, hd, out, ws, ws_bytes, st);
            if (r) die("attention", r);
        });
        double flops = 4.0 * 512 * ((double)p0 + 256) * nh * hd;
        fprintf(f, "| attention prefill | n 512 at %lld | %.2f ms | %.1f TFLOP/s | %.0f%% |\n", (long long)p0,
                t * 1e3, flops / t / 1e12, 100 * flops / t / gemm_rate);
    }
    cudaFree(kc);
    cudaFree(vc);
    cudaFree(ws);

    /* ---- matmul ---- */
    static const int64_t ms[] = {4096, 14336};
    const int64_t k = 4096;
    for (size_t i = 0; i < 2; i++) {
        int64_t m = ms[i];
        size_t raw_bytes = (size_t)sl_type_row_bytes(SL_TYPE_Q8_0, k) * (size_t)m;
        uint8_t *raw = (uint8_t *)calloc(raw_bytes, 1);
        struct sl_gpu_weight w;
        rc = sl_gpu_weight_upload(SL_TYPE_Q8_0, raw, k, m, &w, st);
        if (rc) die("weight upload", rc);
        free(raw);
        float *x = (float *)dev_alloc((size_t)512 * k * 4, 0), *y = (float *)dev_alloc((size_t)512 * m * 4, 0);
        void *scratch = dev_alloc(sl_gpu_matmul_scratch_bytes(512, k), 0);
        for (int64_t n = 1; n <= 512; n *= 512) {
            double t = time_call(st, o.batch, [&] {
                int r = sl_gpu_matmul(blas, &w, x, n, y, scratch, st);
                if (r) die("matmul", r);
            });
            if (n == 1)
                fprintf(f, "| matmul | n 1, %lld x %lld bf16 | %.1f us | %.0f GB/s | %.0f%% |\n", (long long)k,
                        (long long)m, t * 1e6, k * m * 2.0 / t / 1e9, 100 * k * m * 2.0 / t / hbm);
            else
                fprintf(f, "| matmul | n 512, %lld x %lld bf16 | %.1f us | %.0f TFLOP/s | %.0f%% |\n", (long long)k,
                        (long long)m, t * 1e6, 2.0 * n * k * m / t / 1e12, 100 * 2.0 * n * k * m / t / gemm_rate);
        }
        sl_gpu_weight_free(&w);
        cudaFree(x);
        cudaFree(y);
        cudaFree(scratch);
    }

    /* ---- elementwise ---- */
    const int64_t n = 512, ff = 14336;
    float *a = (float *)dev_alloc((size_t)n * ff * 4, 0), *b = (float *)dev_alloc((size_t)n * ff * 4, 0);
    float *c = (float *)dev_alloc((size_t)n * ff * 4, 0), *wn = (float *)dev_alloc((size_t)k * 4, 0);
    uint16_t *kc1 = (uint16_t *)dev_alloc((size_t)nkv * 4096 * hd * 2, 0), *vc1 = (uint16_t *)dev_alloc((size_t)nkv * 4096 * hd * 2, 0);
    struct {
        const char *name;
        double bytes;
        double t;
    } rows[4];
    rows[0] = {"rmsnorm n 512 x 4096", 2.0 * n * k * 4, time_call(st, o.batch, [&] {
                   if ((rc = sl_gpu_rmsnorm(a, wn, n, k, 1e-5f, b, st))) die("rmsnorm", rc);
               })};
    rows[1] = {"rope n 512, 32 x 128", 2.0 * n * nh * hd * 4, time_call(st, o.batch, [&] {
                   if ((rc = sl_gpu_rope(a, n, nh, hd, hd, false, 500000.0f, 1.0f, 1000, st))) die("rope", rc);
               })};
    rows[2] = {"swiglu n 512 x 14336", 3.0 * n * ff * 4, time_call(st, o.batch, [&] {
                   if ((rc = sl_gpu_swiglu(a, b, n * ff, c, st))) die("swiglu", rc);
               })};
    rows[3] = {"kv_write n 512, 8 x 128", (double)n * nkv * hd * 2 * (4 + 2), time_call(st, o.batch, [&] {
                   if ((rc = sl_gpu_kv_write(kc1, vc1, 4096, nkv, hd, 100, n, a, b, st))) die("kv_write", rc);
               })};
    for (int i = 0; i < 4; i++)
        fprintf(f, "| %s | | %.1f us | %.0f GB/s | %.0f%% |\n", rows[i].name, rows[i].t * 1e6,
                rows[i].bytes / rows[i].t / 1e9, 100 * rows[i].bytes / rows[i].t / hbm);
    cuda_ok(cudaStreamSynchronize(st), "sync");
    if (o.out) fclose(f);
    sl_gpu_blas_free(blas);
    return 0;
}
