/* GPU device discovery and weight dequantization (gpu/gpu-device.cu, gpu/gpu-dequant.cu).
 *
 * The GPU kernels must produce exactly the bits of the CPU reference (sl_dequant_bf16 /
 * sl_dequant_f32), so weights uploaded as bf16 can be checked against the CPU backend without
 * tolerances. Each type is fed deterministic random blocks (every bit pattern of the
 * quantized payload, scales anywhere in the finite f16 range including subnormals) plus
 * rounding edge cases for the plain types.
 *
 * Built only with CUDA. Tests that need a device skip when there is none; argument checks and
 * out-of-range device queries run everywhere. CUDA is initialised inside each test, never in a
 * constructor: Criterion forks a process per test. */
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "spotlight/quant.h"
#include "tests/gpu-test-util.h"




static void put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* Byte offsets of a block's f16 scale fields, written here independently of the code under
 * test. Returns how many there are. */
static int f16_fields(int type, int at[2]) {
    switch (type) {
    case SL_TYPE_Q4_0: case SL_TYPE_Q5_0: case SL_TYPE_Q8_0:
        at[0] = 0;
        return 1;
    case SL_TYPE_Q4_1: case SL_TYPE_Q5_1: case SL_TYPE_Q4_K: case SL_TYPE_Q5_K:
        at[0] = 0;
        at[1] = 2;
        return 2;
    case SL_TYPE_Q6_K:
        at[0] = 208;
        return 1;
    default:
        return 0;
    }
}

/* f32 bit patterns where bf16 rounding is easiest to get wrong. */
static const uint32_t k_f32_edges[] = {
    0x00000000u, 0x80000000u, /* signed zeros */
    0x3f808000u,              /* exact tie, even below: rounds down */
    0x3f818000u,              /* exact tie, odd below: rounds up */
    0x3f808001u, 0x3f807fffu, /* just above / below a tie */
    0x00000001u, 0x00008000u, 0x00018000u, 0x807fffffu, /* subnormals */
    0x7f7fffffu, 0xff7fffffu, /* largest finite: rounds to infinity */
    0x7f800000u, 0xff800000u, /* infinities */
};

/* Random bytes for n elements of type, with every float field made finite (NaN payloads are
 * the one thing CPU and GPU may legitimately disagree on). */
static void fill_random(int type, uint8_t *buf, size_t bytes, int64_t n, uint64_t seed) {
    for (size_t i = 0; i < bytes; i++) buf[i] = (uint8_t)rng_next(&seed);
    if (type == SL_TYPE_F32) {
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, buf + 4 * i, 4);
            if ((u & 0x7f800000u) == 0x7f800000u) u &= ~0x40000000u;
            if ((size_t)i < sizeof k_f32_edges / sizeof k_f32_edges[0]) u = k_f32_edges[i];
            memcpy(buf + 4 * i, &u, 4);
        }
    } else if (type == SL_TYPE_F16 || type == SL_TYPE_BF16) {
        uint16_t exp_mask = type == SL_TYPE_F16 ? 0x7c00 : 0x7f80;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = get_u16(buf + 2 * i);
            if ((h & exp_mask) == exp_mask) put_u16(buf + 2 * i, h & ~0x4000);
        }
    } else {
        int at[2];
        int nf = f16_fields(type, at);
        size_t bb = sl_type_block_bytes(type);
        for (size_t b = 0; b + bb <= bytes; b += bb)
            for (int k = 0; k < nf; k++) {
                uint16_t h = get_u16(buf + b + at[k]);
                if ((h & 0x7c00) == 0x7c00) put_u16(buf + b + at[k], h & ~0x4000);
            }
    }
}

/* First index where the element_size-byte elements of a and b differ, or -1. */
static int64_t first_mismatch(const void *a, const void *b, int64_t n, size_t elem) {
    if (memcmp(a, b, (size_t)n * elem) == 0) return -1;
    for (int64_t i = 0; i < n; i++)
        if (memcmp((const char *)a + i * elem, (const char *)b + i * elem, elem) != 0) return i;
    return -1;
}

/* Dequantizes n_blocks random blocks of type on the CPU and the GPU, to bf16 and to f32, and
 * requires identical bits. The bf16 run reads the source at an odd device address (the kernel
 * promises no alignment needs) on the default stream; the f32 run uses its own stream. */
static void check_type(int type, int64_t n_blocks) {
    require_gpu();
    const char *name = sl_type_name(type);
    if (!sl_type_can_dequant(type)) cr_skip_test("CPU reference cannot dequantize %s", name);

    int64_t n = sl_type_block_elems(type) * n_blocks;
    int64_t row = sl_type_row_bytes(type, n);
    cr_assert_gt(row, 0, "%s: row bytes %lld", name, (long long)row);

    uint8_t *src = malloc((size_t)row);
    uint16_t *cpu_bf = malloc((size_t)n * 2), *gpu_bf = malloc((size_t)n * 2);
    float *cpu_f = malloc((size_t)n * 4), *gpu_f = malloc((size_t)n * 4);
    cr_assert(src && cpu_bf && gpu_bf && cpu_f && gpu_f);
    fill_random(type, src, (size_t)row, n, 0x5107u + (uint64_t)type);

    cr_assert_eq(sl_dequant_bf16(type, src, cpu_bf, n), 0, "CPU %s: %s", name, sl_error_detail());
    cr_assert_eq(sl_dequant_f32(type, src, cpu_f, n), 0, "CPU %s: %s", name, sl_error_detail());

    uint8_t *d_src = NULL;
    void *d_dst = NULL;
    cudaStream_t stream = NULL;
    CUDA_OK(cudaMalloc((void **)&d_src, (size_t)row + 1));
    CUDA_OK(cudaMalloc(&d_dst, (size_t)n * 4));
    CUDA_OK(cudaStreamCreate(&stream));

    CUDA_OK(cudaMemcpy(d_src + 1, src, (size_t)row, cudaMemcpyHostToDevice));
    cr_assert_eq(sl_gpu_dequant_bf16(type, d_src + 1, d_dst, n, NULL), 0, "GPU %s bf16: %s",
                 name, sl_error_detail());
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(gpu_bf, d_dst, (size_t)n * 2, cudaMemcpyDeviceToHost));
    int64_t i = first_mismatch(cpu_bf, gpu_bf, n, 2);
    cr_assert_eq(i, -1, "%s -> bf16: element %lld of %lld: CPU 0x%04x, GPU 0x%04x", name,
                 (long long)i, (long long)n, i >= 0 ? cpu_bf[i] : 0, i >= 0 ? gpu_bf[i] : 0);

    CUDA_OK(cudaMemcpy(d_src, src, (size_t)row, cudaMemcpyHostToDevice));
    cr_assert_eq(sl_gpu_dequant_f32(type, d_src, d_dst, n, stream), 0, "GPU %s f32: %s", name,
                 sl_error_detail());
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(gpu_f, d_dst, (size_t)n * 4, cudaMemcpyDeviceToHost));
    i = first_mismatch(cpu_f, gpu_f, n, 4);
    cr_assert_eq(i, -1, "%s -> f32: element %lld of %lld: CPU %a, GPU %a", name, (long long)i,
                 (long long)n, i >= 0 ? cpu_f[i] : 0.0, i >= 0 ? gpu_f[i] : 0.0);

    CUDA_OK(cudaStreamDestroy(stream));
    CUDA_OK(cudaFree(d_dst));
    CUDA_OK(cudaFree(d_src));
    free(src);
    free(cpu_bf);
    free(gpu_bf);
    free(cpu_f);
    free(gpu_f);
}

/* ~100k elements: many launch blocks, and a block count that leaves a partial last one. */
#define DEQUANT_TEST(T)                                                                      \
    Test(gpu_dequant, T) { check_type(SL_TYPE_##T, 100003 / sl_type_block_elems(SL_TYPE_##T)); }

DEQUANT_TEST(F32)
DEQUANT_TEST(F16)
DEQUANT_TEST(BF16)
DEQUANT_TEST(Q4_0)
DEQUANT_TEST(Q4_1)
DEQUANT_TEST(Q5_0)
DEQUANT_TEST(Q5_1)
DEQUANT_TEST(Q8_0)
DEQUANT_TEST(Q4_K)
DEQUANT_TEST(Q5_K)
DEQUANT_TEST(Q6_K)

/* More elements than one grid covers (65536 blocks x 256 threads), so the grid-stride loop
 * runs a second lap. */
Test(gpu_dequant, larger_than_one_grid) { check_type(SL_TYPE_Q4_1, 600001); }

/* Argument checks happen before any CUDA call, so these run without a device; the pointers
 * are never dereferenced. */
Test(gpu_dequant, rejects_bad_arguments) {
    static uint8_t src[64];
    static uint16_t dst[64];
    cr_assert_eq(sl_gpu_dequant_bf16(SL_TYPE_Q4_0, src, dst, 0, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_dequant_bf16(SL_TYPE_Q4_0, src, dst, -32, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_dequant_bf16(SL_TYPE_Q4_0, src, dst, 31, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_dequant_f32(SL_TYPE_Q6_K, src, (float *)dst, 128, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_dequant_bf16(SL_TYPE_Q8_0, NULL, dst, 32, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_dequant_f32(SL_TYPE_Q8_0, src, NULL, 32, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_dequant_bf16(SL_TYPE_Q2_K, src, dst, 256, NULL), SL_EUNSUPPORTED);
    cr_assert_eq(sl_gpu_dequant_f32(SL_TYPE_COUNT_, src, (float *)dst, 32, NULL),
                 SL_EUNSUPPORTED);
    cr_assert_neq(sl_error_detail()[0], '\0');
}

Test(gpu_device, compiled_with_cuda) { cr_assert(sl_cuda_compiled()); }

Test(gpu_device, info_out_of_range) {
    struct sl_device_info info;
    int count = sl_cuda_device_count();
    cr_assert_geq(count, 0);
    cr_assert_eq(sl_cuda_device_info(-1, &info), SL_ENODEV);
    cr_assert_eq(sl_cuda_device_info(count, &info), SL_ENODEV);
    cr_assert_neq(sl_error_detail()[0], '\0');
    cr_assert_eq(sl_cuda_device_info(0, NULL), SL_EINVAL);
}

Test(gpu_device, info_first_device) {
    require_gpu();
    struct sl_device_info info;
    cr_assert_eq(sl_cuda_device_info(0, &info), 0, "%s", sl_error_detail());
    cr_assert_eq(info.index, 0);
    cr_assert_neq(info.name[0], '\0');
    cr_assert_geq(info.cc_major, 7, "compute capability %d.%d", info.cc_major, info.cc_minor);
    cr_assert_gt(info.n_sm, 0);
    cr_assert_gt(info.mem_total, 0);
    cr_assert_leq(info.mem_free, info.mem_total);
    int dev = -1;
    CUDA_OK(cudaGetDevice(&dev));
    cr_assert_eq(dev, 0, "sl_cuda_device_info changed the current device");
}
