/* KV store memory handed to a GPU: a host-tier store made with
 * sl_kv_store_params_for_device is page-locked through cudaHostRegister, and what the device
 * copies out of a gathered buffer is what was appended. Skips without a device; CUDA is
 * initialised inside the tests (Criterion forks per test). */
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/device.h"
#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "tests/gpu-test-util.h"


Test(gpu_kv, host_tier_is_pinned_and_round_trips_through_the_device) {
    require_gpu();
    struct sl_kv_shape shape = {.n_layer = 2, .n_head_kv = 2, .head_dim = 64,
                                .dtype = SL_KV_DTYPE_F16, .block_tokens = 16};
    struct sl_kv_store_params p = sl_kv_store_default_params();
    p.capacity = 4096;
    cr_assert_eq(sl_kv_store_params_for_device(&p, 0), 0, "%s", sl_error_detail());
    sl_kv_store_t s;
    cr_assert_eq(sl_kv_store_create(&shape, &p, &s), 0, "%s", sl_error_detail());
    const int64_t n = 100, row = 64;
    uint16_t *k = malloc(sizeof *k * n * 2 * row), *v = malloc(sizeof *v * n * 2 * row);
    for (int64_t i = 0; i < n * 2 * row; i++) {
        k[i] = (uint16_t)(i * 7 + 1);
        v[i] = (uint16_t)(i * 13 + 5);
    }
    for (int32_t l = 0; l < 2; l++) cr_assert_eq(sl_kv_store_append(s, l, n, k, v), 0);
    cr_assert_eq(sl_kv_store_commit(s, n, NULL), 0);
    struct sl_kv_store_stats st;
    sl_kv_store_get_stats(s, &st);
    cr_assert(st.pinned, "host tier memory was not registered with CUDA");

    /* Gather head 1 of layer 1 into pinned memory and copy it through the device. */
    uint16_t *ko, *vo;
    cr_assert_eq(cudaHostAlloc((void **)&ko, sizeof *ko * n * row, 0), cudaSuccess);
    cr_assert_eq(cudaHostAlloc((void **)&vo, sizeof *vo * n * row, 0), cudaSuccess);
    cr_assert_eq(sl_kv_store_read_range(s, 1, 1, 0, n, ko, vo), 0, "%s", sl_error_detail());
    uint16_t *dev, *back = malloc(sizeof *back * n * row);
    cr_assert_eq(cudaMalloc((void **)&dev, sizeof *dev * n * row), cudaSuccess);
    cr_assert_eq(cudaMemcpy(dev, ko, sizeof *ko * n * row, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(cudaMemcpy(back, dev, sizeof *back * n * row, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < row; d++)
            cr_assert_eq(back[i * row + d], k[(i * 2 + 1) * row + d], "row %lld elem %lld",
                         (long long)i, (long long)d);
    cudaFree(dev);
    cudaFreeHost(ko);
    cudaFreeHost(vo);
    free(back);
    free(k);
    free(v);
    sl_kv_store_free(s);
}
