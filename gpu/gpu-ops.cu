/* Elementwise, norm, rope, conversion and KV-write kernels of the dense step (gpu/gpu-ops.h).
 *
 * Matching the CPU: nvcc contracts a * b + c into one FMA by default, which the CPU's plain C
 * (compiled without -mfma) never does. Wherever the CPU rounds a product before an add, the
 * kernels spell the operations as __fmul_rn / __fadd_rn / __fsub_rn / __fdiv_rn (never
 * contracted, never approximated whatever -use_fast_math says), in the CPU's order.
 * Transcendentals the CPU takes from glibc (cosf, sinf, expf: correctly rounded in all but
 * rare cases) are evaluated here in double and rounded once, which is correctly rounded in
 * all but vanishingly rare cases: the two sides agree except where glibc misrounds.
 *
 * Work split: one thread per element, grid-stride over 64-bit indices, for the elementwise
 * ops; one CTA per row for rmsnorm (block reduction); one CTA per token for rope (the token's
 * cos/sin table in shared memory, used by every head). */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

#include "core/half.h"
#include "gpu/gpu-check.h"
#include "gpu/gpu-ops.h"

static constexpr int k_threads = 256;
static constexpr int64_t k_max_blocks = 65536; /* larger arrays loop (grid-stride) */

static unsigned grid_for(int64_t n) {
    int64_t b = (n + k_threads - 1) / k_threads;
    return (unsigned)(b < 1 ? 1 : b > k_max_blocks ? k_max_blocks : b);
}

#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- rmsnorm ------------------------------------------------------------------------------ */

static __device__ __forceinline__ double warp_sum_double(double v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

static __global__ void __launch_bounds__(k_threads) rmsnorm_kernel(const float *x, const float *w, int64_t k,
                                                                   float eps, float *y) {
    __shared__ double part[k_threads / 32];
    const float *xi = x + (int64_t)blockIdx.x * k;
    float *yi = y + (int64_t)blockIdx.x * k;
    /* x*x is exact in double, so a fused multiply-add here rounds exactly as the CPU's
     * separate multiply and add. */
    double ss = 0;
    for (int64_t j = threadIdx.x; j < k; j += k_threads) ss += (double)xi[j] * (double)xi[j];
    ss = warp_sum_double(ss);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    double total = 0;
    for (int i = 0; i < k_threads / 32; i++) total += part[i]; /* same order in every thread */
    /* CPU: 1.0f / sqrtf((float)(ss / (double)k) + eps); y = x * scale * w */
    float scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn((float)(total / (double)k), eps)));
    for (int64_t j = threadIdx.x; j < k; j += k_threads) yi[j] = __fmul_rn(__fmul_rn(xi[j], scale), w[j]);
}

extern "C" int sl_gpu_rmsnorm(const float *x, const float *w, int64_t n, int64_t k, float eps, float *y,
                              void *stream) {
    if (n < 0 || k <= 0 || (n > 0 && (!x || !w || !y)) || n > INT32_MAX)
        return sl_fail(SL_EINVAL, "sl_gpu_rmsnorm: %lld rows of %lld", (long long)n, (long long)k);
    if (n == 0) return 0;
    rmsnorm_kernel<<<(unsigned)n, k_threads, 0, (cudaStream_t)stream>>>(x, w, k, eps, y);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- rope --------------------------------------------------------------------------------- */

#define ROPE_MAX_ROT 1024

static __global__ void __launch_bounds__(k_threads) rope_kernel(float *x, int32_t n_head, int32_t head_dim,
                                                                int32_t n_rot, bool neox, float theta_scale,
                                                                float freq_scale, int64_t pos0) {
    __shared__ float cs[ROPE_MAX_ROT]; /* cos, sin of pair i at 2i, 2i + 1 */
    const int half = n_rot / 2;
    const int64_t t = blockIdx.x;
    /* Thread i repeats the CPU's multiplications up to pair i: the same f32 sequence. */
    for (int i = threadIdx.x; i < half; i += k_threads) {
        float theta = __fmul_rn((float)(pos0 + t), freq_scale);
        for (int j = 0; j < i; j++) theta = __fmul_rn(theta, theta_scale);
        cs[2 * i] = (float)cos((double)theta);
        cs[2 * i + 1] = (float)sin((double)theta);
    }
    __syncthreads();
    float *xt = x + t * n_head * (int64_t)head_dim;
    for (int64_t e = threadIdx.x; e < (int64_t)n_head * half; e += k_threads) {
        int64_t h = e / half;
        int i = (int)(e - h * half);
        float *v = xt + h * head_dim;
        int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        float x0 = v[a], x1 = v[b], c = cs[2 * i], s = cs[2 * i + 1];
        v[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        v[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
}

extern "C" int sl_gpu_rope(float *x, int64_t n, int32_t n_head, int32_t head_dim, int32_t n_rot, bool neox,
                           float theta_base, float freq_scale, int64_t pos0, void *stream) {
    if (n < 0 || n > INT32_MAX || n_head <= 0 || head_dim <= 0 || n_rot < 2 || n_rot % 2 || n_rot > head_dim ||
        pos0 < 0 || (n > 0 && !x))
        return sl_fail(SL_EINVAL, "sl_gpu_rope: %lld tokens, %d heads of %d, %d rotated", (long long)n, n_head,
                       head_dim, n_rot);
    if (n_rot > ROPE_MAX_ROT) return sl_fail(SL_EUNSUPPORTED, "sl_gpu_rope: rope dimension %d too large", n_rot);
    if (n == 0) return 0;
    /* On the host, with the same libm call as the CPU, so the scale is the same f32. */
    const float theta_scale = powf(theta_base, -2.0f / (float)n_rot);
    rope_kernel<<<(unsigned)n, k_threads, 0, (cudaStream_t)stream>>>(x, n_head, head_dim, n_rot, neox, theta_scale,
                                                                     freq_scale, pos0);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- add, add_rows, swiglu ---------------------------------------------------------------- */

static __global__ void add_kernel(float *x, const float *y, int64_t n) {
    GRID_STRIDE(i, n) x[i] = __fadd_rn(x[i], y[i]);
}

static __global__ void add_rows_kernel(float *x, const float *b, int64_t n, int64_t k) {
    GRID_STRIDE(i, n * k) x[i] = __fadd_rn(x[i], b[i % k]);
}

static __global__ void swiglu_kernel(const float *g, const float *u, int64_t n, float *y) {
    GRID_STRIDE(i, n) {
        float gi = g[i], e = (float)exp(-(double)gi); /* CPU: expf(-g) */
        y[i] = __fmul_rn(__fdiv_rn(gi, __fadd_rn(1.0f, e)), u[i]);
    }
}

extern "C" int sl_gpu_add(float *x, const float *y, int64_t n, void *stream) {
    if (n < 0 || (n > 0 && (!x || !y))) return sl_fail(SL_EINVAL, "sl_gpu_add: %lld values", (long long)n);
    if (n == 0) return 0;
    add_kernel<<<grid_for(n), k_threads, 0, (cudaStream_t)stream>>>(x, y, n);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

extern "C" int sl_gpu_add_rows(float *x, const float *b, int64_t n, int64_t k, void *stream) {
    if (n < 0 || k <= 0 || (n > 0 && (!x || !b)) || n > INT64_MAX / k)
        return sl_fail(SL_EINVAL, "sl_gpu_add_rows: %lld rows of %lld", (long long)n, (long long)k);
    if (n == 0) return 0;
    add_rows_kernel<<<grid_for(n * k), k_threads, 0, (cudaStream_t)stream>>>(x, b, n, k);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

extern "C" int sl_gpu_swiglu(const float *g, const float *u, int64_t n, float *y, void *stream) {
    if (n < 0 || (n > 0 && (!g || !u || !y))) return sl_fail(SL_EINVAL, "sl_gpu_swiglu: %lld values", (long long)n);
    if (n == 0) return 0;
    swiglu_kernel<<<grid_for(n), k_threads, 0, (cudaStream_t)stream>>>(g, u, n, y);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- conversions and the KV write --------------------------------------------------------- */

/* sl_f32_to_f16's rounding (core/half.h): NaN payloads kept, unlike __float2half_rn, which
 * writes a canonical NaN. */
static __device__ __forceinline__ uint16_t f32_to_f16_bits(float f) { return sl_half_from_f32_bits(__float_as_uint(f)); }

static __global__ void f32_to_f16_kernel(const float *x, int64_t n, uint16_t *y) {
    GRID_STRIDE(i, n) y[i] = f32_to_f16_bits(x[i]);
}

static __global__ void f32_to_bf16_kernel(const float *x, int64_t n, uint16_t *y) {
    GRID_STRIDE(i, n) y[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}

/* Element (t, h, d) of k/v goes to row pos + t of head h. */
static __global__ void kv_write_kernel(uint16_t *kc, uint16_t *vc, int64_t n_ctx, int32_t n_head_kv,
                                       int32_t head_dim, int64_t pos, int64_t n, const float *k, const float *v) {
    const int64_t width = (int64_t)n_head_kv * head_dim;
    GRID_STRIDE(i, n * width) {
        int64_t t = i / width, r = i - t * width, h = r / head_dim, d = r - h * head_dim;
        int64_t dst = (h * n_ctx + pos + t) * head_dim + d;
        kc[dst] = f32_to_f16_bits(k[i]);
        vc[dst] = f32_to_f16_bits(v[i]);
    }
}

extern "C" int sl_gpu_f32_to_f16(const float *x, int64_t n, uint16_t *y, void *stream) {
    if (n < 0 || (n > 0 && (!x || !y))) return sl_fail(SL_EINVAL, "sl_gpu_f32_to_f16: %lld values", (long long)n);
    if (n == 0) return 0;
    f32_to_f16_kernel<<<grid_for(n), k_threads, 0, (cudaStream_t)stream>>>(x, n, y);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

extern "C" int sl_gpu_f32_to_bf16(const float *x, int64_t n, uint16_t *y, void *stream) {
    if (n < 0 || (n > 0 && (!x || !y))) return sl_fail(SL_EINVAL, "sl_gpu_f32_to_bf16: %lld values", (long long)n);
    if (n == 0) return 0;
    f32_to_bf16_kernel<<<grid_for(n), k_threads, 0, (cudaStream_t)stream>>>(x, n, y);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

extern "C" int sl_gpu_kv_write(uint16_t *kc, uint16_t *vc, int64_t n_ctx, int32_t n_head_kv, int32_t head_dim,
                               int64_t pos, int64_t n, const float *k, const float *v, void *stream) {
    if (n_ctx <= 0 || n_head_kv <= 0 || head_dim <= 0 || n < 0 || (n > 0 && (!kc || !vc || !k || !v)))
        return sl_fail(SL_EINVAL, "sl_gpu_kv_write: %lld rows of %d x %d into %lld", (long long)n, n_head_kv,
                       head_dim, (long long)n_ctx);
    if (pos < 0 || pos > n_ctx || n > n_ctx - pos)
        return sl_fail(SL_EBOUNDS, "sl_gpu_kv_write: positions [%lld, %lld) outside the cache of %lld",
                       (long long)pos, (long long)(pos + n), (long long)n_ctx);
    if (n == 0) return 0;
    kv_write_kernel<<<grid_for(n * n_head_kv * (int64_t)head_dim), k_threads, 0, (cudaStream_t)stream>>>(
        kc, vc, n_ctx, n_head_kv, head_dim, pos, n, k, v);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}
