/* CUDA device discovery: how many devices the runtime sees and what each one is.
 *
 * A machine without a GPU is a normal configuration (the CPU backend takes over), so the
 * runtime's ways of saying "nothing here" become a count of 0 rather than an error. */
#include <atomic>
#include <string.h>

#include "gpu/gpu-check.h"
#include "gpu/gpu.h"

/* The runtime's answers that mean "no usable GPU on this machine", as opposed to a GPU that
 * is present but failing. */
static bool is_absent_error(cudaError_t e) {
    return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver;
}

extern "C" int sl_gpu_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaSuccess) return n > 0 ? n : 0;
    /* Initialisation errors are not sticky; clear it so a later, unrelated check does not
     * report it. */
    (void)cudaGetLastError();
    if (!is_absent_error(e)) {
        /* A broken or mismatched driver still leaves the CPU backend usable, so this is a
         * fallback, not a failure; say so once per process rather than at every query. */
        static std::atomic<bool> warned{false};
        if (!warned.exchange(true))
            sl_log(SL_LOG_WARN, "CUDA unavailable, using no GPU: cudaGetDeviceCount: %s (%s)",
                   cudaGetErrorString(e), cudaGetErrorName(e));
    }
    return 0;
}

extern "C" int sl_gpu_device_info(int index, struct sl_device_info *out) {
    if (!out) return sl_fail(SL_EINVAL, "sl_cuda_device_info: out is NULL");
    int count = sl_gpu_device_count();
    if (index < 0 || index >= count)
        return sl_fail(SL_ENODEV, "CUDA device %d does not exist (%d visible)", index, count);

    cudaDeviceProp prop;
    SL_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));

    /* Free memory is only reported for the current device, so switch to it and back: callers
     * on this thread keep the device they had selected. */
    int prev = 0;
    SL_CUDA_CHECK(cudaGetDevice(&prev));
    SL_CUDA_CHECK(cudaSetDevice(index));
    size_t mem_free = 0, mem_total = 0;
    cudaError_t e = cudaMemGetInfo(&mem_free, &mem_total);
    cudaError_t e_restore = cudaSetDevice(prev);
    SL_CUDA_CHECK(e);
    SL_CUDA_CHECK(e_restore);

    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", prop.name);
    out->index = index;
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
    out->n_sm = prop.multiProcessorCount;
    out->mem_total = mem_total;
    out->mem_free = mem_free;
    return 0;
}
