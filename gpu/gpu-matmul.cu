/* Weights resident on the device as bf16, and the GEMM over them (gpu/gpu-ops.h).
 *
 * A weight is dequantized once at upload (gpu/gpu-dequant.cu, bit-identical to the CPU's
 * sl_dequant_bf16) and kept as a bf16 (m, k) row-major matrix, so every matmul is one cuBLAS
 * call on tensor cores: bf16 products are exact in f32 and cuBLAS sums them in f32
 * (CUBLAS_COMPUTE_32F). Activations are rounded to bf16 on the way in (one small kernel).
 *
 * Row-major y (n, m) = x (n, k) . W^T is, read column-major, y^T (m, n) = W (m, k) . x^T,
 * where cuBLAS sees the row-major W as a column-major (k, m) matrix with leading dimension k
 * (hence op T) and x as a column-major (k, n) matrix with leading dimension k (op N). */
#include <cublas_v2.h>
#include <stdint.h>

#include "gpu/gpu-check.h"
#include "gpu/gpu-ops.h"
#include "gpu/gpu.h"
#include "spotlight/quant.h"

extern "C" int sl_gpu_weight_upload(int type, const void *host_data, int64_t k, int64_t m, struct sl_gpu_weight *out,
                                    void *stream) {
    if (!host_data || !out || k <= 0 || m <= 0 || k > INT32_MAX || m > INT32_MAX)
        return sl_fail(SL_EINVAL, "sl_gpu_weight_upload: (%lld, %lld) weight", (long long)k, (long long)m);
    int64_t row = sl_type_row_bytes(type, k);
    if (row < 0) {
        if (row == SL_EBADTYPE) return sl_fail(SL_EUNSUPPORTED, "sl_gpu_weight_upload: type %d", type);
        return sl_fail(SL_EINVAL, "sl_gpu_weight_upload: %lld is not a whole number of %s blocks", (long long)k,
                       sl_type_name(type));
    }
    if ((uint64_t)row > SIZE_MAX / (uint64_t)m)
        return sl_fail(SL_EINVAL, "sl_gpu_weight_upload: (%lld, %lld) weight too large", (long long)k, (long long)m);
    if (!sl_type_can_dequant(type))
        return sl_fail(SL_EUNSUPPORTED, "sl_gpu_weight_upload: %s weights", sl_type_name(type));
    cudaStream_t s = (cudaStream_t)stream;
    size_t raw_bytes = (size_t)row * (size_t)m, w_bytes = (size_t)k * (size_t)m * 2;
    void *raw = NULL;
    uint16_t *w = NULL;
    cudaError_t ce = cudaMalloc((void **)&w, w_bytes);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError(); /* allocation failures are not sticky; clear the record */
        return sl_fail(ce == cudaErrorMemoryAllocation ? SL_ENOMEM : SL_EDEVICE,
                       "sl_gpu_weight_upload: %zu bytes of bf16 weights: %s", w_bytes, cudaGetErrorString(ce));
    }
    ce = cudaMallocAsync(&raw, raw_bytes, s);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        cudaFree(w);
        return sl_fail(ce == cudaErrorMemoryAllocation ? SL_ENOMEM : SL_EDEVICE,
                       "sl_gpu_weight_upload: %zu bytes of staging: %s", raw_bytes, cudaGetErrorString(ce));
    }
    int rc = 0;
    ce = cudaMemcpyAsync(raw, host_data, raw_bytes, cudaMemcpyHostToDevice, s);
    if (ce != cudaSuccess)
        rc = sl_fail(SL_EDEVICE, "sl_gpu_weight_upload: copy of %zu bytes: %s", raw_bytes, cudaGetErrorString(ce));
    if (!rc) rc = sl_gpu_dequant_bf16(type, raw, w, k * m, stream);
    ce = cudaFreeAsync(raw, s);
    if (!rc && ce != cudaSuccess)
        rc = sl_fail(SL_EDEVICE, "sl_gpu_weight_upload: cudaFreeAsync: %s", cudaGetErrorString(ce));
    if (rc) {
        cudaFree(w); /* synchronises: nothing queued still writes w */
        return rc;
    }
    *out = (struct sl_gpu_weight){.type = type, .k = k, .m = m, .w = w};
    return 0;
}

extern "C" void sl_gpu_weight_free(struct sl_gpu_weight *w) {
    if (!w) return;
    if (w->w) cudaFree(w->w);
    *w = sl_gpu_weight{};
}

extern "C" int sl_gpu_blas_create(void **handle) {
    if (!handle) return sl_fail(SL_EINVAL, "sl_gpu_blas_create: NULL handle");
    cublasHandle_t h = NULL;
    SL_CUBLAS_CHECK(cublasCreate(&h));
    *handle = h;
    return 0;
}

extern "C" void sl_gpu_blas_free(void *handle) {
    if (handle) cublasDestroy((cublasHandle_t)handle);
}

extern "C" size_t sl_gpu_matmul_scratch_bytes(int64_t n, int64_t k) {
    if (n <= 0 || k <= 0 || (uint64_t)n > SIZE_MAX / 2 / (uint64_t)k) return 0;
    return ((size_t)n * (size_t)k * 2 + 255) & ~(size_t)255;
}

extern "C" int sl_gpu_matmul(void *handle, const struct sl_gpu_weight *w, const float *x, int64_t n, float *y,
                             void *scratch, void *stream) {
    if (!handle || !w || !w->w || !x || !y || !scratch || n <= 0 || n > INT32_MAX || ((uintptr_t)scratch & 15))
        return sl_fail(SL_EINVAL, "sl_gpu_matmul: bad arguments (n %lld)", (long long)n);
    cublasHandle_t h = (cublasHandle_t)handle;
    int rc = sl_gpu_f32_to_bf16(x, n * w->k, (uint16_t *)scratch, stream);
    if (rc) return rc;
    const float one = 1.0f, zero = 0.0f;
    SL_CUBLAS_CHECK(cublasSetStream(h, (cudaStream_t)stream));
    SL_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->m, (int)n, (int)w->k, &one, w->w, CUDA_R_16BF,
                                 (int)w->k, scratch, CUDA_R_16BF, (int)w->k, &zero, y, CUDA_R_32F, (int)w->m,
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}
