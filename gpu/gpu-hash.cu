/* Hash weights in device memory and the encoder of post-RoPE queries and keys into codes
 * (core/hash.h's functions: r = SiLU(W1 x + b1) + x, h = W2 r + b2 + r, y = P h, bit i =
 * y[i] > 0), for every head of one role in one layer per call.
 *
 * Weights: one allocation in hash-file order (per layer the n_head_kv key functions, then the
 * n_head_q query functions; per function W1, b1, W2, b2, P), so a layer's heads of one role
 * are consecutive functions fn_floats apart: one strided-batched sgemm covers them.
 *
 * Two paths, chosen by the vector count n (sl_gpu_hash_params.gemm_min_n, default 16):
 *   fused   n small (decode: one query per head). Grid (n, heads), 256 threads: the vector in
 *           shared memory, each matrix-vector product a warp per output row (coalesced row
 *           reads, shuffle reduction), the weights read through L1/L2; ballots pack the bits.
 *   cuBLAS  n large (prefill keys). Slices of max_batch vectors: sgemm strided-batched over
 *           heads for W1 x, W2 r and P h (FP32, no TF32: CUBLAS_DEFAULT_MATH), elementwise
 *           kernels for the bias, SiLU and residual terms, then the pack kernel.
 * Both sum in another order than the CPU, so a bit whose pre-sign value is within rounding of
 * zero may differ; everything else is identical. SiLU is a / (1 + exp(-a)) with the exponent
 * clamped to +-88 as the CPU's vectorised exp does. */
#include <cublas_v2.h>
#include <stdint.h>
#include <string.h>

extern "C" { /* core/hash.h has no C++ guards of its own */
#include "core/hash.h"
}
#include "gpu/gpu-check.h"
#include "gpu/gpu-retrieval.h"

#define ENC_THREADS 256
#define ENC_WARPS (ENC_THREADS / 32)

struct sl_gpu_hash {
    int32_t n_layer, n_head_q, n_head_kv, d, bits, W;
    uint32_t flags;
    int64_t fn_floats;
    struct sl_gpu_hash_params p;
    float *w;       /* n_layer x (n_head_kv + n_head_q) x fn_floats */
    float *scratch; /* cuBLAS path: 2 x heads x max_batch x d, then heads x max_batch x bits */
    cublasHandle_t blas;
};

extern "C" struct sl_gpu_hash_params sl_gpu_hash_default_params(void) {
    struct sl_gpu_hash_params p;
    p.max_batch = 1024;
    p.gemm_min_n = 16;
    return p;
}

/* ---- weights ------------------------------------------------------------------------------ */

/* Offsets of one function's parts (floats). */
struct fn_parts {
    int64_t w1, b1, w2, b2, proj;
};

static __host__ __device__ fn_parts parts_of(int32_t d, uint32_t flags) {
    fn_parts f;
    int64_t dd = (int64_t)d * d;
    f.w1 = 0;
    f.b1 = dd;
    f.w2 = dd + d;
    f.b2 = 2 * dd + d;
    f.proj = (flags & SL_HASH_MLP) ? 2 * dd + 2 * d : 0;
    return f;
}

static void copy_fn(const struct sl_hash_fn *f, uint32_t flags, float *dst) {
    fn_parts o = parts_of(f->d, flags);
    size_t dd = (size_t)f->d * f->d, d = (size_t)f->d;
    if (flags & SL_HASH_MLP) {
        memcpy(dst + o.w1, f->w1, dd * sizeof(float));
        memcpy(dst + o.b1, f->b1, d * sizeof(float));
        memcpy(dst + o.w2, f->w2, dd * sizeof(float));
        memcpy(dst + o.b2, f->b2, d * sizeof(float));
    }
    if (flags & SL_HASH_PROJ) memcpy(dst + o.proj, f->proj, (size_t)f->bits * d * sizeof(float));
}

extern "C" void sl_gpu_hash_free(sl_gpu_hash *gh) {
    if (!gh) return;
    if (gh->blas) cublasDestroy(gh->blas);
    cudaFree(gh->w);
    cudaFree(gh->scratch);
    free(gh);
}

static int device_alloc(void **p, size_t bytes, const char *what) {
    cudaError_t e = cudaMalloc(p, bytes);
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError();
    return sl_fail(e == cudaErrorMemoryAllocation ? SL_ENOMEM : SL_EDEVICE, "gpu hash: cudaMalloc of %zu bytes (%s): %s",
                   bytes, what, cudaGetErrorString(e));
}

static int upload(const struct sl_hash *h, sl_gpu_hash *gh) {
    const int32_t per_layer = gh->n_head_kv + gh->n_head_q;
    const size_t layer_floats = (size_t)per_layer * (size_t)gh->fn_floats;
    int rc = device_alloc((void **)&gh->w, layer_floats * gh->n_layer * sizeof(float), "weights");
    if (rc) return rc;
    const int32_t hmax = gh->n_head_q > gh->n_head_kv ? gh->n_head_q : gh->n_head_kv;
    const int32_t wide = gh->bits > gh->d ? gh->bits : gh->d;
    size_t scratch = (size_t)hmax * (size_t)gh->p.max_batch * (2 * (size_t)gh->d + (size_t)wide);
    if ((rc = device_alloc((void **)&gh->scratch, scratch * sizeof(float), "scratch"))) return rc;
    float *stage = (float *)malloc(layer_floats * sizeof(float));
    if (!stage) return sl_fail(SL_ENOMEM, "gpu hash: %zu bytes of staging", layer_floats * sizeof(float));
    for (int32_t l = 0; l < gh->n_layer; l++) {
        for (int32_t i = 0; i < gh->n_head_kv; i++)
            copy_fn(sl_hash_key_fn(h, l, i), gh->flags, stage + (size_t)i * gh->fn_floats);
        for (int32_t i = 0; i < gh->n_head_q; i++)
            copy_fn(sl_hash_query_fn(h, l, i), gh->flags, stage + (size_t)(gh->n_head_kv + i) * gh->fn_floats);
        cudaError_t e = cudaMemcpy(gh->w + (size_t)l * layer_floats, stage, layer_floats * sizeof(float),
                                   cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            free(stage);
            return sl_fail(SL_EDEVICE, "gpu hash: weights of layer %d: %s", l, cudaGetErrorString(e));
        }
    }
    free(stage);
    SL_CUBLAS_CHECK(cublasCreate(&gh->blas));
    SL_CUBLAS_CHECK(cublasSetMathMode(gh->blas, CUBLAS_DEFAULT_MATH));
    return 0;
}

extern "C" int sl_gpu_hash_upload(const struct sl_hash *h, const struct sl_gpu_hash_params *p, sl_gpu_hash **out) {
    if (!h || !out) return sl_fail(SL_EINVAL, "gpu hash: NULL argument");
    *out = NULL;
    const struct sl_gpu_hash_params pp = p ? *p : sl_gpu_hash_default_params();
    if (pp.max_batch < 1 || pp.max_batch > (1 << 24) || pp.gemm_min_n < 0)
        return sl_fail(SL_EINVAL, "gpu hash: max_batch %lld (1..2^24), gemm_min_n %lld", (long long)pp.max_batch,
                       (long long)pp.gemm_min_n);
    sl_gpu_hash *gh = (sl_gpu_hash *)calloc(1, sizeof *gh);
    if (!gh) return sl_fail(SL_ENOMEM, "gpu hash: handle");
    const struct sl_hash_params *hp = sl_hash_get_params(h);
    gh->n_layer = hp->n_layer;
    gh->n_head_q = hp->n_head_q;
    gh->n_head_kv = hp->n_head_kv;
    gh->d = hp->head_dim;
    gh->bits = hp->bits;
    gh->W = sl_hash_code_words(hp->bits);
    gh->flags = sl_hash_flags(h);
    gh->fn_floats = sl_hash_fn_floats(h);
    gh->p = pp;
    int rc = upload(h, gh);
    if (rc) {
        sl_gpu_hash_free(gh);
        return rc;
    }
    *out = gh;
    return 0;
}

/* ---- kernels ------------------------------------------------------------------------------ */

static __device__ __forceinline__ float silu_residual(float a, float x) {
    return a / (1.0f + expf(fminf(fmaxf(-a, -88.0f), 88.0f))) + x;
}

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Row o of the (rows, d) matrix m times v: the warp's lanes stride the row. */
static __device__ __forceinline__ float row_dot(const float *m, int32_t o, int32_t d, const float *v) {
    const float *r = m + (size_t)o * d;
    float s = 0;
    for (int32_t i = threadIdx.x & 31; i < d; i += 32) s += r[i] * v[i];
    return warp_sum(s);
}

/* Bits [64 w, 64 w + 64) of one vector's y (bits values) as a code word: two ballots. */
static __device__ __forceinline__ uint64_t pack_word(const float *y, int32_t bits, int32_t w) {
    int32_t i = w * 64 + (threadIdx.x & 31);
    uint32_t lo = __ballot_sync(0xffffffffu, i < bits && y[i] > 0.0f);
    uint32_t hi = __ballot_sync(0xffffffffu, i + 32 < bits && y[i + 32] > 0.0f);
    return (uint64_t)lo | (uint64_t)hi << 32;
}

/* Grid (n, heads). Shared: x, r, h (d each), y (bits). */
static __global__ void encode_fused_kernel(const float *fns, int64_t fn_floats, int32_t d, int32_t bits, uint32_t flags,
                                           const float *x, int32_t H, uint64_t *codes, int64_t stride) {
    extern __shared__ float es[];
    float *xs = es, *r = es + d, *hh = es + 2 * d, *y = es + 3 * d;
    const int64_t j = blockIdx.x;
    const int32_t h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float *fn = fns + (size_t)h * fn_floats;
    const fn_parts o = parts_of(d, flags);
    for (int32_t i = threadIdx.x; i < d; i += blockDim.x) xs[i] = x[(j * H + h) * d + i];
    __syncthreads();
    const float *v = xs;
    if (flags & SL_HASH_MLP) {
        for (int32_t row = warp; row < d; row += ENC_WARPS) {
            float a = row_dot(fn + o.w1, row, d, xs);
            if (lane == 0) r[row] = silu_residual(a + fn[o.b1 + row], xs[row]);
        }
        __syncthreads();
        for (int32_t row = warp; row < d; row += ENC_WARPS) {
            float a = row_dot(fn + o.w2, row, d, r);
            if (lane == 0) hh[row] = a + fn[o.b2 + row] + r[row];
        }
        __syncthreads();
        v = hh;
    }
    if (flags & SL_HASH_PROJ) {
        for (int32_t row = warp; row < bits; row += ENC_WARPS) {
            float a = row_dot(fn + o.proj, row, d, v);
            if (lane == 0) y[row] = a;
        }
        __syncthreads();
        v = y;
    }
    const int32_t W = (bits + 63) / 64;
    for (int32_t w = warp; w < W; w += ENC_WARPS) {
        uint64_t c = pack_word(v, bits, w);
        if (lane == 0) codes[h * stride + j * W + w] = c;
    }
}

/* a[(h, j, i)] = SiLU(a + b1_h[i]) + x(j, h, i), over heads x m x d. */
static __global__ void ew_silu_kernel(float *a, const float *fns, int64_t fn_floats, int64_t b1_off, const float *x,
                                      int32_t H, int32_t d, int64_t m) {
    const int64_t total = (int64_t)H * m * d;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t h = e / (m * d), jj = (e / d) % m, i = e % d;
        a[e] = silu_residual(a[e] + fns[h * fn_floats + b1_off + i], x[(jj * H + h) * d + i]);
    }
}

/* c = c + b2_h[i] + r, over heads x m x d. */
static __global__ void ew_residual_kernel(float *c, const float *r, const float *fns, int64_t fn_floats,
                                          int64_t b2_off, int32_t H, int32_t d, int64_t m) {
    const int64_t total = (int64_t)H * m * d;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t h = e / (m * d), i = e % d;
        c[e] = c[e] + fns[h * fn_floats + b2_off + i] + r[e];
    }
}

/* Grid (ceil(m W / 4), heads), 4 warps: one code word per warp. y of head h, vector jj at
 * y + h * y_hs + jj * y_ld. */
static __global__ void pack_kernel(const float *y, int64_t y_ld, int64_t y_hs, int32_t bits, int64_t m,
                                   uint64_t *codes, int64_t stride) {
    const int32_t W = (bits + 63) / 64, h = blockIdx.y;
    const int64_t item = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
    if (item >= m * W) return; /* whole warps: the ballots stay full */
    const int64_t jj = item / W;
    const int32_t w = (int32_t)(item % W);
    uint64_t c = pack_word(y + h * y_hs + jj * y_ld, bits, w);
    if ((threadIdx.x & 31) == 0) codes[h * stride + jj * W + w] = c;
}

/* ---- launchers ---------------------------------------------------------------------------- */

static unsigned ew_blocks(int64_t total) {
    int64_t b = (total + 255) / 256;
    return (unsigned)(b > 65535 ? 65535 : b < 1 ? 1 : b);
}

static int encode_fused(const sl_gpu_hash *gh, const float *fns, int32_t H, const float *x, int64_t n, uint64_t *codes,
                        int64_t stride, cudaStream_t st) {
    const size_t smem = (3 * (size_t)gh->d + (size_t)gh->bits) * sizeof(float);
    const int64_t chunk = (int64_t)1 << 30; /* grid.x limit */
    for (int64_t j0 = 0; j0 < n; j0 += chunk) {
        int64_t m = n - j0 < chunk ? n - j0 : chunk;
        encode_fused_kernel<<<dim3((unsigned)m, (unsigned)H), ENC_THREADS, smem, st>>>(
            fns, gh->fn_floats, gh->d, gh->bits, gh->flags, x + j0 * H * gh->d, H, codes + j0 * gh->W, stride);
        SL_CUDA_CHECK(cudaGetLastError());
    }
    return 0;
}

/* C_h = M_h V_h for every head h: M_h the (rows, d) row-major matrix at fns + h * fn_floats +
 * off, V_h m column vectors of d floats (ldv apart; heads hs apart), C_h (m, rows) row-major. */
static int gemm_heads(const sl_gpu_hash *gh, const float *fns, int64_t off, int32_t rows, int32_t H, const float *v,
                      int64_t ldv, int64_t hs, int64_t m, float *c) {
    const float one = 1.0f, zero = 0.0f;
    SL_CUBLAS_CHECK(cublasSgemmStridedBatched(gh->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, (int)m, gh->d, &one,
                                              fns + off, gh->d, gh->fn_floats, v, (int)ldv, hs, &zero, c, rows,
                                              (long long)m * rows, H));
    return 0;
}

static int encode_gemm(sl_gpu_hash *gh, const float *fns, int32_t H, const float *x, int64_t n, uint64_t *codes,
                       int64_t stride, cudaStream_t st) {
    const int32_t d = gh->d, bits = gh->bits;
    const int64_t mb = gh->p.max_batch;
    const fn_parts o = parts_of(d, gh->flags);
    float *a = gh->scratch, *b = a + (size_t)H * mb * d, *y = b + (size_t)H * mb * d;
    SL_CUBLAS_CHECK(cublasSetStream(gh->blas, st));
    for (int64_t j0 = 0; j0 < n; j0 += mb) {
        const int64_t m = n - j0 < mb ? n - j0 : mb;
        const float *xs = x + j0 * H * d, *hsrc = xs;
        int64_t h_ld = (int64_t)H * d, h_hs = d;
        int rc;
        if (gh->flags & SL_HASH_MLP) {
            if ((rc = gemm_heads(gh, fns, o.w1, d, H, xs, h_ld, h_hs, m, a))) return rc;
            ew_silu_kernel<<<ew_blocks(H * m * d), 256, 0, st>>>(a, fns, gh->fn_floats, o.b1, xs, H, d, m);
            SL_CUDA_CHECK(cudaGetLastError());
            if ((rc = gemm_heads(gh, fns, o.w2, d, H, a, d, m * d, m, b))) return rc;
            ew_residual_kernel<<<ew_blocks(H * m * d), 256, 0, st>>>(b, a, fns, gh->fn_floats, o.b2, H, d, m);
            SL_CUDA_CHECK(cudaGetLastError());
            hsrc = b;
            h_ld = d;
            h_hs = m * d;
        }
        const float *ysrc = hsrc;
        int64_t y_ld = h_ld, y_hs = h_hs;
        if (gh->flags & SL_HASH_PROJ) {
            if ((rc = gemm_heads(gh, fns, o.proj, bits, H, hsrc, h_ld, h_hs, m, y))) return rc;
            ysrc = y;
            y_ld = bits;
            y_hs = m * bits;
        }
        dim3 grid((unsigned)((m * gh->W + 3) / 4), (unsigned)H);
        pack_kernel<<<grid, 128, 0, st>>>(ysrc, y_ld, y_hs, bits, m, codes + j0 * gh->W, stride);
        SL_CUDA_CHECK(cudaGetLastError());
    }
    return 0;
}

extern "C" int sl_gpu_hash_encode(sl_gpu_hash *gh, int role, int32_t layer, const float *x_dev, int64_t n,
                                  uint64_t *codes_dev, int64_t code_head_stride, void *stream) {
    if (!gh || (role != SL_HASH_KEY && role != SL_HASH_QUERY) || n < 0)
        return sl_fail(SL_EINVAL, "gpu hash encode: bad handle, role %d or count %lld", role, (long long)n);
    if (layer < 0 || layer >= gh->n_layer)
        return sl_fail(SL_EINVAL, "gpu hash encode: layer %d of %d", layer, gh->n_layer);
    if (n == 0) return 0;
    if (!x_dev || !codes_dev || code_head_stride < n * gh->W)
        return sl_fail(SL_EINVAL, "gpu hash encode: NULL buffer or code stride %lld below %lld",
                       (long long)code_head_stride, (long long)(n * gh->W));
    const int32_t H = role == SL_HASH_KEY ? gh->n_head_kv : gh->n_head_q;
    const float *fns = gh->w + ((size_t)layer * (gh->n_head_kv + gh->n_head_q) +
                                (role == SL_HASH_KEY ? 0 : (size_t)gh->n_head_kv)) * (size_t)gh->fn_floats;
    cudaStream_t st = (cudaStream_t)stream;
    if (n < gh->p.gemm_min_n) return encode_fused(gh, fns, H, x_dev, n, codes_dev, code_head_stride, st);
    return encode_gemm(gh, fns, H, x_dev, n, codes_dev, code_head_stride, st);
}

extern "C" int sl_gpu_codes_encode_keys(sl_gpu_codes *t, sl_gpu_hash *gh, int32_t layer, int64_t pos0,
                                        const float *x_dev, int64_t n, void *stream) {
    if (!t || !gh) return sl_fail(SL_EINVAL, "gpu encode keys: NULL argument");
    if (sl_gpu_codes_heads(t) != gh->n_head_kv || sl_gpu_codes_words(t) != gh->W ||
        sl_gpu_codes_layers(t) != gh->n_layer)
        return sl_fail(SL_EINVAL, "gpu encode keys: table of %d layers x %d heads x %d words, hash of %d x %d x %d",
                       sl_gpu_codes_layers(t), sl_gpu_codes_heads(t), sl_gpu_codes_words(t), gh->n_layer,
                       gh->n_head_kv, gh->W);
    if (layer < 0 || layer >= gh->n_layer || pos0 < 0 || n < 0 || pos0 > sl_gpu_codes_capacity(t) - n)
        return sl_fail(SL_EINVAL, "gpu encode keys: layer %d, positions [%lld, +%lld) outside capacity %lld", layer,
                       (long long)pos0, (long long)n, (long long)sl_gpu_codes_capacity(t));
    return sl_gpu_hash_encode(gh, SL_HASH_KEY, layer, x_dev, n, sl_gpu_codes_head(t, layer, 0) + pos0 * gh->W,
                              sl_gpu_codes_head_stride(t), stream);
}
