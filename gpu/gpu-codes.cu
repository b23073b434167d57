/* The key-code table in device memory (gpu/gpu-retrieval.h): one allocation, head-major,
 *   codes[((layer * n_head_kv + head) * capacity + j) * W + w]
 * so that one (layer, KV head) is the CPU table's [positions, W] array and a layer's heads
 * are a fixed stride apart for the scan's one launch per layer. capacity is rounded up to a
 * multiple of 8 positions: every head's codes start 64-byte aligned (the scan's 128-bit loads
 * need 16). Codes arrive from the host (upload, a strided 2D copy per layer) or are encoded on
 * the device straight into place (sl_gpu_codes_encode_keys, gpu-hash.cu). */
#include <stdint.h>

#include "gpu/gpu-check.h"
#include "gpu/gpu-retrieval.h"

struct sl_gpu_codes {
    int32_t n_layer, n_head_kv, W;
    int64_t capacity; /* rounded up to a multiple of 8 */
    size_t bytes;
    uint64_t *dev;
};

extern "C" int sl_gpu_codes_create(int32_t n_layer, int32_t n_head_kv, int32_t W, int64_t capacity,
                                   sl_gpu_codes **out) {
    if (!out) return sl_fail(SL_EINVAL, "gpu codes: out is NULL");
    *out = NULL;
    if (n_layer < 1 || n_head_kv < 1 || W < 1 || W > 1023 || capacity < 1)
        return sl_fail(SL_EINVAL, "gpu codes: %d layers, %d KV heads, %d words, capacity %lld", n_layer, n_head_kv,
                       W, (long long)capacity);
    const int64_t cap = (capacity + 7) / 8 * 8;
    uint64_t b = 0;
    if (capacity > INT64_MAX - 8 ||
        sl_mul_overflow_u64((uint64_t)n_layer * (uint64_t)n_head_kv * (uint64_t)W * 8u, (uint64_t)cap, &b) ||
        b > SIZE_MAX)
        return sl_fail(SL_EINVAL, "gpu codes: capacity %lld overflows", (long long)capacity);
    sl_gpu_codes *t = (sl_gpu_codes *)calloc(1, sizeof *t);
    if (!t) return sl_fail(SL_ENOMEM, "gpu codes: table struct");
    cudaError_t e = cudaMalloc((void **)&t->dev, (size_t)b);
    if (e != cudaSuccess) {
        free(t);
        (void)cudaGetLastError();
        return sl_fail(e == cudaErrorMemoryAllocation ? SL_ENOMEM : SL_EDEVICE,
                       "gpu codes: cudaMalloc of %llu bytes: %s", (unsigned long long)b, cudaGetErrorString(e));
    }
    t->n_layer = n_layer;
    t->n_head_kv = n_head_kv;
    t->W = W;
    t->capacity = cap;
    t->bytes = (size_t)b;
    *out = t;
    return 0;
}

extern "C" void sl_gpu_codes_free(sl_gpu_codes *t) {
    if (!t) return;
    cudaFree(t->dev);
    free(t);
}

extern "C" size_t sl_gpu_codes_bytes(const sl_gpu_codes *t) { return t ? t->bytes : 0; }
extern "C" int64_t sl_gpu_codes_capacity(const sl_gpu_codes *t) { return t ? t->capacity : 0; }
extern "C" int32_t sl_gpu_codes_words(const sl_gpu_codes *t) { return t ? t->W : 0; }
extern "C" int32_t sl_gpu_codes_layers(const sl_gpu_codes *t) { return t ? t->n_layer : 0; }
extern "C" int32_t sl_gpu_codes_heads(const sl_gpu_codes *t) { return t ? t->n_head_kv : 0; }
extern "C" int64_t sl_gpu_codes_head_stride(const sl_gpu_codes *t) { return t ? t->capacity * t->W : 0; }

extern "C" uint64_t *sl_gpu_codes_head(const sl_gpu_codes *t, int32_t layer, int32_t head) {
    if (!t || layer < 0 || layer >= t->n_layer || head < 0 || head >= t->n_head_kv) return NULL;
    return t->dev + ((size_t)layer * t->n_head_kv + (size_t)head) * (size_t)t->capacity * (size_t)t->W;
}

static int check_range(const sl_gpu_codes *t, int32_t layer, int64_t pos0, int64_t n, const void *host) {
    if (!t || (n > 0 && !host)) return sl_fail(SL_EINVAL, "gpu codes: NULL argument");
    if (layer < 0 || layer >= t->n_layer)
        return sl_fail(SL_EINVAL, "gpu codes: layer %d of %d", layer, t->n_layer);
    if (pos0 < 0 || n < 0 || pos0 > t->capacity - n)
        return sl_fail(SL_EINVAL, "gpu codes: positions [%lld, +%lld) outside capacity %lld", (long long)pos0,
                       (long long)n, (long long)t->capacity);
    return 0;
}

extern "C" int sl_gpu_codes_upload(sl_gpu_codes *t, int32_t layer, int64_t pos0, int64_t n, const uint64_t *host_codes,
                                   void *stream) {
    int rc = check_range(t, layer, pos0, n, host_codes);
    if (rc || n == 0) return rc;
    const size_t row = (size_t)n * t->W * sizeof(uint64_t), pitch = (size_t)t->capacity * t->W * sizeof(uint64_t);
    SL_CUDA_CHECK(cudaMemcpy2DAsync(sl_gpu_codes_head(t, layer, 0) + pos0 * t->W, pitch, host_codes, row, row,
                                    (size_t)t->n_head_kv, cudaMemcpyHostToDevice, (cudaStream_t)stream));
    return 0;
}

extern "C" int sl_gpu_codes_download(const sl_gpu_codes *t, int32_t layer, int64_t pos0, int64_t n,
                                     uint64_t *host_codes, void *stream) {
    int rc = check_range(t, layer, pos0, n, host_codes);
    if (rc || n == 0) return rc;
    const size_t row = (size_t)n * t->W * sizeof(uint64_t), pitch = (size_t)t->capacity * t->W * sizeof(uint64_t);
    SL_CUDA_CHECK(cudaMemcpy2DAsync(host_codes, row, sl_gpu_codes_head(t, layer, 0) + pos0 * t->W, pitch, row,
                                    (size_t)t->n_head_kv, cudaMemcpyDeviceToHost, (cudaStream_t)stream));
    SL_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)stream));
    return 0;
}
