/* The CUDA kernels of one dense transformer step: device pointers in, device pointers out
 * (gpu/gpu-ops.cu: norm, rope, elementwise, conversions, KV write; gpu/gpu-matmul.cu: weights
 * and GEMM; gpu/gpu-attention.cu: attention; sl_gpu_get_rows lives in gpu/gpu-dequant.cu,
 * next to the per-type dequantizers it shares).
 *
 * Plain C (a stream or a cuBLAS handle travels as void *), so the backend and the tests
 * include this without the CUDA headers. Not installed.
 *
 * Common rules:
 *  - Every pointer named *_dev or documented as device memory is device memory; activations
 *    are row-major f32, (n tokens, width). In-place use is allowed only where stated.
 *  - Asynchronous: the work is queued on `stream` (a cudaStream_t; NULL = legacy default
 *    stream) and the call returns after the launch. 0 means the arguments were valid and the
 *    launch succeeded; a fault while a kernel runs shows at the next synchronising call.
 *  - Errors: SL_EINVAL (bad sizes, NULL or misaligned pointers; checked before any CUDA
 *    call), SL_EUNSUPPORTED (a shape or type these kernels do not handle), SL_EDEVICE (a CUDA
 *    or cuBLAS call failed; sl_error_detail() names it). n == 0 is a valid no-op where a count
 *    is given.
 *  - Tolerances are against the CPU backend (cpu/backend-cpu.c, cpu/attention.c) on the same
 *    inputs, and are what tests/test-gpu-ops.c asserts. */
#ifndef SL_GPU_OPS_H
#define SL_GPU_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- norm, rope, elementwise ------------------------------------------------------------- */

/* y (n, k) = x / sqrt(mean(x^2) + eps) * w per row; w (k). y may equal x. One CTA per row;
 * the sum of squares is accumulated in double (as the CPU), the scale and products in f32 with
 * the CPU's operation order: equal to the CPU up to the order of the double sum, i.e. bit-
 * identical unless that sum lands within ~k * 2^-53 of an f32 rounding boundary (asserted:
 * 1e-6 relative). */
int sl_gpu_rmsnorm(const float *x, const float *w, int64_t n, int64_t k, float eps, float *y, void *stream);

/* Rotary embedding in place on x (n, n_head*head_dim), token t at position pos0 + t: pairs
 * (2i, 2i+1) (neox false) or (i, i + n_rot/2) (neox true) for i < n_rot/2 are rotated by
 * theta_i, the remaining head_dim - n_rot values untouched. theta_0 = (float)(pos0 + t) *
 * freq_scale and theta_{i+1} = theta_i * powf(theta_base, -2/n_rot), in f32 by repeated
 * multiplication exactly as the CPU (and ggml) does, so the angles are bit-identical;
 * cos/sin are evaluated in double and rounded (correctly rounded except in vanishingly rare
 * cases; glibc's cosf/sinf are within 0.56 ulp), so each result is within one f32 ulp of
 * cos/sin times (|x0| + |x1|) of the CPU's, usually identical. n_rot even, 2 <= n_rot <=
 * head_dim, n_rot <= 1024 (the CPU's limit). */
int sl_gpu_rope(float *x, int64_t n, int32_t n_head, int32_t head_dim, int32_t n_rot, bool neox,
                float theta_base, float freq_scale, int64_t pos0, void *stream);

/* x += y over n values (the residual). Bit-identical. */
int sl_gpu_add(float *x, const float *y, int64_t n, void *stream);

/* x (n, k) += b (k) broadcast over rows (biases). Bit-identical. */
int sl_gpu_add_rows(float *x, const float *b, int64_t n, int64_t k, void *stream);

/* y = g / (1 + exp(-g)) * u over n values; y may equal g or u. exp in double rounded to f32
 * (glibc's expf is within 0.502 ulp), the rest in the CPU's order: bit-identical except
 * where glibc misrounds exp, then within 2 ulp (asserted: 2^-21 relative). */
int sl_gpu_swiglu(const float *g, const float *u, int64_t n, float *y, void *stream);

/* ---- conversions and the KV cache --------------------------------------------------------- */

/* y = x rounded to f16, round to nearest even, bit-identical to sl_f32_to_f16_row
 * (cpu/f16-row.h) for every input, subnormals, infinities and NaN payloads included. */
int sl_gpu_f32_to_f16(const float *x, int64_t n, uint16_t *y, void *stream);

/* y = x rounded to bf16 (nearest even; a NaN becomes the canonical NaN): the GEMM's input. */
int sl_gpu_f32_to_bf16(const float *x, int64_t n, uint16_t *y, void *stream);

/* Stores the K/V rows of positions pos..pos+n-1 into ONE layer's f16 cache kc, vc (n_head_kv,
 * n_ctx, head_dim) (the layout of core/kv-cache.h without the layer index): k, v are (n,
 * n_head_kv*head_dim) f32, rounded as sl_gpu_f32_to_f16 (bit-identical to
 * sl_kv_cache_write). SL_EBOUNDS when [pos, pos + n) leaves [0, n_ctx). */
int sl_gpu_kv_write(uint16_t *kc, uint16_t *vc, int64_t n_ctx, int32_t n_head_kv, int32_t head_dim, int64_t pos,
                    int64_t n, const float *k, const float *v, void *stream);

/* ---- embedding ----------------------------------------------------------------------------- */

/* Embedding lookup: x (n, k) f32 = rows ids_dev[0..n) (int32, device) of w_dev, the raw GGUF
 * bytes of an (n_rows, k) matrix of `type` (rows of sl_type_row_bytes(type, k) bytes, k a
 * multiple of the block size; no alignment needed), dequantized on the fly, bit-identical to
 * sl_dequant_f32 of those rows (every type sl_gpu_dequant_f32 handles). The ids are device
 * data, so a bad one cannot be reported: an id outside [0, n_rows) yields a row of NaN.
 * Implemented in gpu/gpu-dequant.cu. */
int sl_gpu_get_rows(int type, const void *w_dev, int64_t n_rows, const int32_t *ids_dev, int64_t n, int64_t k,
                    float *x, void *stream);

/* ---- weights and GEMM (gpu/gpu-matmul.cu) ------------------------------------------------ */

/* A weight matrix resident on the device as bf16: W (m, k) row-major, i.e. the GGUF tensor of
 * shape (ne0 = k, ne1 = m) dequantized. Owned by the struct; free with sl_gpu_weight_free. */
struct sl_gpu_weight {
    int type;      /* the GGUF type it was uploaded from */
    int64_t k, m;  /* input width (contiguous), output width */
    uint16_t *w;   /* device, (m, k) bf16 bits */
};

/* Copies the raw GGUF bytes of a (k, m) tensor from host memory to a stream-ordered device
 * buffer and dequantizes them once into out->w (sl_gpu_dequant_bf16: bit-identical to the
 * CPU's sl_dequant_bf16); the raw copy is released in stream order. host_data must stay valid
 * until the stream has passed the copy (pageable memory: when this returns; page-locked
 * memory: synchronise the stream first). k a multiple of the type's block size, k and m in
 * [1, INT32_MAX] (cuBLAS dimensions). *out is set only on success. SL_EINVAL,
 * SL_EUNSUPPORTED (type), SL_ENOMEM / SL_EDEVICE. */
int sl_gpu_weight_upload(int type, const void *host_data, int64_t k, int64_t m, struct sl_gpu_weight *out,
                         void *stream);
/* Frees the device matrix (synchronous, as cudaFree) and zeroes *w; NULL or zeroed: no-op. */
void sl_gpu_weight_free(struct sl_gpu_weight *w);

/* A cuBLAS handle for sl_gpu_matmul (a cublasHandle_t) on the current device. One per host
 * thread or stream user; free with sl_gpu_blas_free (NULL: no-op). 0 or SL_EDEVICE. */
int sl_gpu_blas_create(void **handle);
void sl_gpu_blas_free(void *handle);

/* Bytes of the scratch sl_gpu_matmul needs for n rows of width k (x as bf16). */
size_t sl_gpu_matmul_scratch_bytes(int64_t n, int64_t k);

/* y (n, m) f32 = x (n, k) . W^T: x is rounded to bf16 into scratch (sl_gpu_f32_to_bf16;
 * at least sl_gpu_matmul_scratch_bytes(n, k) bytes, 16-byte aligned), then cublasGemmEx with
 * bf16 inputs, f32 output and CUBLAS_COMPUTE_32F (tensor cores; products exact, sums f32).
 * Sets the handle's stream to `stream`. y must not overlap x or scratch. n in [1, INT32_MAX].
 * Tolerances: against the exact (f64) product of the same bf16-rounded operands, |err| <=
 * 1e-4 * sum_i |x_i w_i| (f32 accumulation over k <= 16384); against the CPU's f32 product
 * with the weights from sl_dequant_f32, |err| <= 8e-3 * sum_i |x_i w_i| (the two bf16
 * roundings bound each product's relative error by 2^-8 + 2^-18). */
int sl_gpu_matmul(void *handle, const struct sl_gpu_weight *w, const float *x, int64_t n, float *y, void *scratch,
                  void *stream);

/* ---- attention (gpu/gpu-attention.cu; the decisions in gpu/attention-logic.h) ------------ */

/* Bytes of workspace that lets sl_gpu_attention split the key positions of calls with up to
 * n query tokens as far as it wants (enough for any smaller n); 0 for bad sizes. */
size_t sl_gpu_attention_workspace_bytes(int64_t n, int32_t n_head, int32_t head_dim);

/* Causal attention of q (n, n_head*head_dim) f32, token t at position pos0 + t, over ONE
 * layer's f16 cache kc, vc (n_head_kv, n_ctx, head_dim) whose positions [0, pos0 + n) hold
 * data; GQA: head h reads KV head h / (n_head / n_head_kv); scale 1/sqrt(head_dim); out (n,
 * n_head*head_dim) f32, not overlapping q. As the CPU: queries rounded to f16 first, scores
 * and sums in f32, online softmax (flash attention).
 *
 * head_dim 64, 128 or 256 (else SL_EUNSUPPORTED); kc, vc 16-byte aligned (cudaMalloc'd);
 * pos0 + n <= n_ctx (else SL_EBOUNDS). workspace (16-byte aligned) of workspace_bytes may be
 * NULL / 0: more room lets long contexts split across more CTAs (sl_gpu_attention_workspace_
 * bytes gives the most any call uses); the results do not depend on it beyond rounding.
 *
 * Kernels (see gpu/attention-logic.h): decode (<= 4 tokens, GQA groups <= 8): one CTA of 128
 * threads per (token, KV head, split of the positions), the group's queries in shared memory
 * against 64-key K/V tiles, then a merge kernel (flash-decoding). Otherwise (prefill chunks):
 * one CTA of 256 threads per (64 query rows of one KV group, split), 64x64 score tiles, 4x4
 * register micro-tiles, f32 FMA (no tensor cores). Tolerance: |gpu - cpu| <= 5e-5 * max|v| +
 * 1e-4 * |cpu| (different summation orders and exp implementations; asserted up to 100000
 * positions). */
int sl_gpu_attention(const float *q, const uint16_t *kc, const uint16_t *vc, int64_t n_ctx, int64_t n, int64_t pos0,
                     int32_t n_head, int32_t n_head_kv, int32_t head_dim, float *out, void *workspace,
                     size_t workspace_bytes, void *stream);

/* One decode token's attention over gathered rows: KV head g's rows [0, last_dev[g]] of kc, vc
 * (n_head_kv, ld, head_dim) f16, last_dev (n_head_kv) int32 in device memory (so a selection
 * the device made needs no host round trip), each 0 <= last_dev[g] < ld; q, out as
 * sl_gpu_attention with n = 1. The decode kernel only: GQA groups of at most
 * SL_ATTN_DECODE_MAX_REP heads (else SL_EUNSUPPORTED). Rows past last_dev[g] are never read
 * into a result (they may hold anything). Same tolerance as sl_gpu_attention. */
int sl_gpu_attention_gathered(const float *q, const uint16_t *kc, const uint16_t *vc, int64_t ld,
                              const int32_t *last_dev, int32_t n_head, int32_t n_head_kv, int32_t head_dim,
                              float *out, void *workspace, size_t workspace_bytes, void *stream);

#ifdef __cplusplus
}
#endif
#endif
