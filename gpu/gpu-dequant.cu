/* Dequantization of weight tensors on the GPU, to bf16 (what the GPU backend keeps in VRAM)
 * or f32, bit-identical to the CPU reference in core/quant*.c.
 *
 * Block layouts are those of include/spotlight/quant.h (the GGML ones). Each type is a small
 * struct saying its block size and how to compute element j of one block as a float; one
 * templated kernel runs any type into any output format, and one table maps a type id to its
 * launchers, so adding a type is one struct and one table row.
 *
 * Bit-exactness with the CPU needs two things:
 *  - The same f32 values. Each format's value is at most a product of an f16 scale (11
 *    significant bits), an integer sub-scale (<= 7 bits) and a quant (<= 5 bits magnitude, 7
 *    for Q8_0): at most 23 bits, so every product is exact in f32 and only the final add or
 *    subtract (Q4_1, Q5_1, Q4_K, Q5_K) rounds. Hence neither the operation order nor an FMA
 *    can change a value today. The arithmetic is still written as __fmul_rn / __fadd_rn /
 *    __fsub_rn in the CPU reference's order ((float)q * d + m; (d * sc) * q - dmin * m),
 *    because nvcc contracts a * b + c into an FMA by default (one rounding instead of two)
 *    and these intrinsics are never contracted: the kernel stays equal to the CPU's unfused C
 *    by construction, whatever -fmad says or whatever format is added next.
 *  - The same f32 -> bf16 rounding as sl_f32_to_bf16: round to nearest, ties to even, on the
 *    bits, with NaNs kept NaN (quieted). __float2bfloat16_rn would also round to nearest even,
 *    but writes a canonical NaN; the bit recipe is spelled out below so both sides agree.
 *
 * Work split: one thread per output element, grid-stride over 64-bit indices. The block header
 * (scales) is re-read by each thread of the block but hits L1; this runs once per weight upload,
 * where PCIe, not this kernel, is the bottleneck. Source bytes are read one at a time, so src
 * needs no alignment.
 *
 * The embedding lookup (sl_gpu_get_rows, declared in gpu/gpu-ops.h) is the same element
 * readers over gathered rows, so it lives here rather than repeat them. */
#include <cuda_fp16.h>
#include <stdint.h>

#include "gpu/gpu-check.h"
#include "gpu/gpu-ops.h"
#include "gpu/gpu.h"
#include "spotlight/quant.h"

/* ---- element readers ---------------------------------------------------------------------- */

static __device__ __forceinline__ float load_f16(const uint8_t *p) {
    unsigned short h = (unsigned short)(p[0] | (p[1] << 8));
    return __half2float(__ushort_as_half(h));
}

/* The packed 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block: sub-blocks
 * 0..3 keep them in the low 6 bits of bytes j and j+4; 4..7 split them between a nibble of
 * byte j+4 and the top 2 bits of bytes j-4 and j. */
static __device__ __forceinline__ void k_scale_min(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

struct type_f32 {
    static constexpr int elems = 1, bytes = 4;
    static __device__ float get(const uint8_t *b, int) {
        uint32_t u = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
                     ((uint32_t)b[3] << 24);
        return __uint_as_float(u);
    }
};

struct type_f16 {
    static constexpr int elems = 1, bytes = 2;
    static __device__ float get(const uint8_t *b, int) { return load_f16(b); }
};

struct type_bf16 {
    static constexpr int elems = 1, bytes = 2;
    static __device__ float get(const uint8_t *b, int) {
        return __uint_as_float(((uint32_t)b[0] << 16) | ((uint32_t)b[1] << 24));
    }
};

/* Q4_0: f16 d | 16 B nibbles; elements 0..15 are the low nibbles, 16..31 the high ones. */
struct type_q4_0 {
    static constexpr int elems = 32, bytes = 18;
    static __device__ float get(const uint8_t *b, int j) {
        int q = j < 16 ? (b[2 + j] & 0xF) : (b[2 + j - 16] >> 4);
        return __fmul_rn((float)(q - 8), load_f16(b));
    }
};

/* Q4_1: f16 d | f16 m | 16 B nibbles. */
struct type_q4_1 {
    static constexpr int elems = 32, bytes = 20;
    static __device__ float get(const uint8_t *b, int j) {
        int q = j < 16 ? (b[4 + j] & 0xF) : (b[4 + j - 16] >> 4);
        return __fadd_rn(__fmul_rn((float)q, load_f16(b)), load_f16(b + 2));
    }
};

/* The fifth bit of Q5_0 / Q5_1 element j: bit j of the little-endian 32-bit qh. */
static __device__ __forceinline__ int q5_high(const uint8_t *qh, int j) {
    return ((qh[j >> 3] >> (j & 7)) & 1) << 4;
}

/* Q5_0: f16 d | 4 B high bits | 16 B nibbles. */
struct type_q5_0 {
    static constexpr int elems = 32, bytes = 22;
    static __device__ float get(const uint8_t *b, int j) {
        int lo = j < 16 ? (b[6 + j] & 0xF) : (b[6 + j - 16] >> 4);
        return __fmul_rn((float)((lo | q5_high(b + 2, j)) - 16), load_f16(b));
    }
};

/* Q5_1: f16 d | f16 m | 4 B high bits | 16 B nibbles. */
struct type_q5_1 {
    static constexpr int elems = 32, bytes = 24;
    static __device__ float get(const uint8_t *b, int j) {
        int lo = j < 16 ? (b[8 + j] & 0xF) : (b[8 + j - 16] >> 4);
        return __fadd_rn(__fmul_rn((float)(lo | q5_high(b + 4, j)), load_f16(b)),
                         load_f16(b + 2));
    }
};

/* Q8_0: f16 d | 32 x int8. */
struct type_q8_0 {
    static constexpr int elems = 32, bytes = 34;
    static __device__ float get(const uint8_t *b, int j) {
        return __fmul_rn((float)(int8_t)b[2 + j], load_f16(b));
    }
};

/* Q4_K: f16 d | f16 dmin | 12 B scales | 128 B nibbles. Each 64 elements share 32 bytes: the
 * first 32 elements are their low nibbles (sub-block 2g), the next 32 the high (2g+1).
 * x = (d * sc) * q - (dmin * m), each product rounded as in the reference. */
struct type_q4_k {
    static constexpr int elems = 256, bytes = 144;
    static __device__ float get(const uint8_t *b, int j) {
        int g = j >> 6, hi = (j >> 5) & 1, l = j & 31;
        int sc, m;
        k_scale_min(2 * g + hi, b + 4, &sc, &m);
        uint8_t byte = b[16 + 32 * g + l];
        int q = hi ? byte >> 4 : byte & 0xF;
        float d1 = __fmul_rn(load_f16(b), (float)sc);
        float m1 = __fmul_rn(load_f16(b + 2), (float)m);
        return __fsub_rn(__fmul_rn(d1, (float)q), m1);
    }
};

/* Q5_K: f16 d | f16 dmin | 12 B scales | 32 B high bits | 128 B nibbles. As Q4_K, plus a
 * fifth bit: sub-block s takes bit s of qh[l]. */
struct type_q5_k {
    static constexpr int elems = 256, bytes = 176;
    static __device__ float get(const uint8_t *b, int j) {
        int g = j >> 6, hi = (j >> 5) & 1, l = j & 31, s = 2 * g + hi;
        int sc, m;
        k_scale_min(s, b + 4, &sc, &m);
        uint8_t byte = b[48 + 32 * g + l];
        int q = (hi ? byte >> 4 : byte & 0xF) + (((b[16 + l] >> s) & 1) << 4);
        float d1 = __fmul_rn(load_f16(b), (float)sc);
        float m1 = __fmul_rn(load_f16(b + 2), (float)m);
        return __fsub_rn(__fmul_rn(d1, (float)q), m1);
    }
};

/* Q6_K: 128 B low nibbles | 64 B high 2-bits | 16 x int8 scales | f16 d. Each half of 128
 * elements uses 64 B of ql, 32 B of qh and 8 scales; its quarter k (32 elements) takes the low
 * (k = 0, 1) or high (k = 2, 3) nibble of ql[l + 32 * (k & 1)] and bits 2k..2k+1 of qh[l].
 * x = (d * sc) * (q - 32). */
struct type_q6_k {
    static constexpr int elems = 256, bytes = 210;
    static __device__ float get(const uint8_t *b, int j) {
        int h = j >> 7, k = (j >> 5) & 3, l = j & 31;
        const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
        const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
        uint8_t lb = ql[l + 32 * (k & 1)];
        int q = ((k < 2 ? lb & 0xF : lb >> 4) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
        float dsc = __fmul_rn(load_f16(b + 208), (float)sc[l / 16 + 2 * k]);
        return __fmul_rn(dsc, (float)q);
    }
};

/* ---- output formats ----------------------------------------------------------------------- */

struct out_f32 {
    typedef float T;
    static __device__ __forceinline__ float put(float x) { return x; }
};

/* Same recipe as the CPU's sl_f32_to_bf16 (and GGML's): a NaN keeps its top bits with the quiet
 * bit set, so it cannot round into an infinity; everything else adds 0x7fff plus the lowest
 * kept bit, which rounds to nearest with ties to even (overflow correctly carries into inf). */
struct out_bf16 {
    typedef uint16_t T;
    static __device__ __forceinline__ uint16_t put(float x) {
        uint32_t u = __float_as_uint(x);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
        return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
};

/* ---- kernel, launchers, table ------------------------------------------------------------- */

static constexpr int k_threads = 256;
/* Enough blocks to fill any current GPU many times over; larger tensors loop (grid-stride). */
static constexpr int64_t k_max_blocks = 65536;

template <typename Q, typename O>
static __global__ void dequant_kernel(const uint8_t *src, typename O::T *dst, int64_t n) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        int64_t blk = i / Q::elems;
        int j = (int)(i - blk * Q::elems);
        dst[i] = O::put(Q::get(src + blk * Q::bytes, j));
    }
}

template <typename Q, typename O>
static int dequant_launch(const void *src, void *dst, int64_t n, cudaStream_t stream) {
    int64_t blocks = (n + k_threads - 1) / k_threads;
    if (blocks > k_max_blocks) blocks = k_max_blocks;
    dequant_kernel<Q, O><<<(unsigned)blocks, k_threads, 0, stream>>>(
        (const uint8_t *)src, (typename O::T *)dst, n);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* Rows ids[0..n) of an (n_rows, k) matrix whose rows are row_bytes apart, as f32; an id out of
 * range gives a NaN row (device data cannot return an error). */
template <typename Q>
static __global__ void get_rows_kernel(const uint8_t *src, int64_t row_bytes, int64_t n_rows, const int32_t *ids,
                                       int64_t n, int64_t k, float *dst) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n * k; i += stride) {
        int64_t r = i / k, j = i - r * k;
        int32_t id = ids[r];
        if (id < 0 || id >= n_rows) {
            dst[i] = __int_as_float(0x7fc00000);
            continue;
        }
        int64_t blk = j / Q::elems;
        dst[i] = Q::get(src + id * row_bytes + blk * Q::bytes, (int)(j - blk * Q::elems));
    }
}

template <typename Q>
static int get_rows_launch(const void *src, int64_t n_rows, const int32_t *ids, int64_t n, int64_t k, float *dst,
                           cudaStream_t stream) {
    int64_t blocks = (n * k + k_threads - 1) / k_threads;
    if (blocks > k_max_blocks) blocks = k_max_blocks;
    get_rows_kernel<Q><<<(unsigned)blocks, k_threads, 0, stream>>>(
        (const uint8_t *)src, k / Q::elems * Q::bytes, n_rows, ids, n, k, dst);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

typedef int (*launch_fn)(const void *src, void *dst, int64_t n, cudaStream_t stream);
typedef int (*rows_fn)(const void *src, int64_t n_rows, const int32_t *ids, int64_t n, int64_t k, float *dst,
                       cudaStream_t stream);

struct dequant_entry {
    int type;
    int elems, bytes;
    launch_fn to_bf16, to_f32;
    rows_fn rows_f32;
};

#define SL_DEQUANT_ENTRY(id, Q) \
    { id, Q::elems, Q::bytes, dequant_launch<Q, out_bf16>, dequant_launch<Q, out_f32>, get_rows_launch<Q> }

static const dequant_entry k_types[] = {
    SL_DEQUANT_ENTRY(SL_TYPE_F32, type_f32),   SL_DEQUANT_ENTRY(SL_TYPE_F16, type_f16),
    SL_DEQUANT_ENTRY(SL_TYPE_BF16, type_bf16), SL_DEQUANT_ENTRY(SL_TYPE_Q4_0, type_q4_0),
    SL_DEQUANT_ENTRY(SL_TYPE_Q4_1, type_q4_1), SL_DEQUANT_ENTRY(SL_TYPE_Q5_0, type_q5_0),
    SL_DEQUANT_ENTRY(SL_TYPE_Q5_1, type_q5_1), SL_DEQUANT_ENTRY(SL_TYPE_Q8_0, type_q8_0),
    SL_DEQUANT_ENTRY(SL_TYPE_Q4_K, type_q4_k), SL_DEQUANT_ENTRY(SL_TYPE_Q5_K, type_q5_k),
    SL_DEQUANT_ENTRY(SL_TYPE_Q6_K, type_q6_k),
};

/* Validates the arguments common to both outputs; returns the table row through *out. */
static int dequant_check(const char *fn, int type, const void *src, const void *dst, int64_t n,
                         const dequant_entry **out) {
    const dequant_entry *e = nullptr;
    for (const dequant_entry &t : k_types)
        if (t.type == type) e = &t;
    if (!e)
        return sl_fail(SL_EUNSUPPORTED, "%s: type %d (%s) cannot be dequantized on the GPU", fn,
                       type, sl_type_name(type));
    if (!src || !dst) return sl_fail(SL_EINVAL, "%s: NULL %s pointer", fn, src ? "dst" : "src");
    /* The kernel forms byte offsets up to n / elems * bytes (at most 4n, for F32). */
    if (n <= 0 || n % e->elems != 0 || n > INT64_MAX / 4)
        return sl_fail(SL_EINVAL, "%s: %lld elements of %s: need a positive multiple of %d", fn,
                       (long long)n, sl_type_name(type), e->elems);
    *out = e;
    return 0;
}

extern "C" int sl_gpu_dequant_bf16(int type, const void *src_dev, uint16_t *dst_dev, int64_t n,
                                   void *stream) {
    const dequant_entry *e;
    int err = dequant_check("sl_gpu_dequant_bf16", type, src_dev, dst_dev, n, &e);
    if (err) return err;
    return e->to_bf16(src_dev, dst_dev, n, (cudaStream_t)stream);
}

extern "C" int sl_gpu_dequant_f32(int type, const void *src_dev, float *dst_dev, int64_t n,
                                  void *stream) {
    const dequant_entry *e;
    int err = dequant_check("sl_gpu_dequant_f32", type, src_dev, dst_dev, n, &e);
    if (err) return err;
    return e->to_f32(src_dev, dst_dev, n, (cudaStream_t)stream);
}

extern "C" int sl_gpu_get_rows(int type, const void *w_dev, int64_t n_rows, const int32_t *ids_dev, int64_t n,
                               int64_t k, float *x, void *stream) {
    const dequant_entry *e;
    int err = dequant_check("sl_gpu_get_rows", type, w_dev, x, k, &e);
    if (err) return err;
    if (n < 0 || n_rows <= 0 || (n > 0 && !ids_dev) || n > INT64_MAX / k ||
        n_rows > INT64_MAX / (k / e->elems * e->bytes))
        return sl_fail(SL_EINVAL, "sl_gpu_get_rows: %lld ids into %lld rows of %lld", (long long)n,
                       (long long)n_rows, (long long)k);
    if (n == 0) return 0;
    return e->rows_f32(w_dev, n_rows, ids_dev, n, k, x, (cudaStream_t)stream);
}
