/* The one place that knows whether this build has the CUDA backend (CONVENTIONS: `#ifdef` on
 * CUDA appears in this file only). Everything else asks through these functions, so the rest
 * of the library compiles and behaves the same with or without CUDA; a build without it simply
 * sees no devices. Backend selection (CPU vs GPU) will live here too. */
#include <stddef.h>

#include "core/internal.h"
#include "spotlight/device.h"
#include "spotlight/kv-store.h"

#ifdef SL_HAVE_CUDA
#include "gpu/gpu.h"

bool sl_cuda_compiled(void) { return true; }

int sl_cuda_device_count(void) { return sl_gpu_device_count(); }

int sl_cuda_device_info(int index, struct sl_device_info *out) {
    return sl_gpu_device_info(index, out);
}

int sl_kv_store_params_for_device(struct sl_kv_store_params *p, int device) {
    if (!p) return sl_fail(SL_EINVAL, "no KV store params");
    int n = sl_gpu_device_count();
    if (device < 0 || device >= n)
        return sl_fail(SL_ENODEV, "CUDA device %d does not exist (%d visible)", device, n);
    p->host_register = sl_gpu_host_register;
    p->host_unregister = sl_gpu_host_unregister;
    p->host_user = NULL;
    int node = sl_gpu_numa_node(device);
    if (node >= 0) p->numa_node = node;
    return 0;
}

#else

bool sl_cuda_compiled(void) { return false; }

int sl_cuda_device_count(void) { return 0; }

int sl_cuda_device_info(int index, struct sl_device_info *out) {
    if (!out) return sl_fail(SL_EINVAL, "sl_cuda_device_info: out is NULL");
    return sl_fail(SL_ENODEV, "CUDA device %d: built without CUDA", index);
}

int sl_kv_store_params_for_device(struct sl_kv_store_params *p, int device) {
    if (!p) return sl_fail(SL_EINVAL, "no KV store params");
    return sl_fail(SL_ENODEV, "CUDA device %d: built without CUDA", device);
}

#endif

/* The backend a context runs on: the CPU's, or the CUDA one when asked for and built. */
#include "core/backend.h"

/* Tests only (sl_backend_set_device_factory): what stands in for the CUDA backend. */
static int (*device_factory)(int32_t device, int n_threads, struct sl_backend **out);

void sl_backend_set_device_factory(int (*fn)(int32_t device, int n_threads, struct sl_backend **out)) {
    device_factory = fn;
}

int sl_backend_create(bool gpu, int32_t device, int n_threads, struct sl_backend **out) {
    if (!gpu) return sl_backend_cpu_create(n_threads, out);
    if (device_factory) return device_factory(device, n_threads, out);
#ifdef SL_HAVE_CUDA
    int n = sl_gpu_device_count();
    if (device < 0 || device >= n) return sl_fail(SL_ENODEV, "CUDA device %d does not exist (%d visible)", device, n);
    return sl_gpu_backend_create(device, out);
#else
    (void)device;
    return sl_fail(SL_ENODEV, "this build has no CUDA backend (configure with -DSL_CUDA=ON)");
#endif
}
