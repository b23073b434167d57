/* Entry points of the CUDA backend (the .cu files in gpu/) that the rest of the library calls.
 *
 * Plain C types only (a stream travels as void *), so core/ and the tests include this
 * without the CUDA headers. Only core/backend-registry.c and the GPU tests call these; the
 * library is compiled with them only when SL_HAVE_CUDA is set. Every function returns 0 (or a
 * count) or a negative SL_E* code with sl_error_detail() set; none exits or aborts. Not
 * installed. */
#ifndef SL_GPU_GPU_H
#define SL_GPU_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "spotlight/device.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Semantics of sl_cuda_device_count / sl_cuda_device_info (include/spotlight/device.h). */
int sl_gpu_device_count(void);
int sl_gpu_device_info(int index, struct sl_device_info *out);

/* Dequantizes n elements of `type` (an enum sl_type id) from src_dev to dst_dev, both in
 * device memory, as bfloat16 bits or as f32. src_dev starts at a block boundary and holds
 * sl_type_row_bytes(type, n) bytes; n > 0 and a multiple of the type's block size. src_dev
 * needs no alignment (it may point into a packed file image); dst_dev must be aligned for its
 * element type.
 *
 * The results are bit-identical to sl_dequant_bf16 / sl_dequant_f32 on the CPU for every
 * finite input (NaN payloads may differ), so weights uploaded here can be checked against the
 * CPU path exactly.
 *
 * Asynchronous: the work is queued on `stream` (a cudaStream_t; NULL for the legacy default
 * stream) and the call returns after the launch. A return of 0 means the arguments were valid
 * and the launch succeeded; a fault while the kernel runs is reported by the next
 * synchronising call on that stream. Returns SL_EINVAL (bad n or NULL pointer),
 * SL_EUNSUPPORTED (type not supported here) or SL_EDEVICE (launch failed). */
int sl_gpu_dequant_bf16(int type, const void *src_dev, uint16_t *dst_dev, int64_t n, void *stream);
int sl_gpu_dequant_f32(int type, const void *src_dev, float *dst_dev, int64_t n, void *stream);

/* Page-locks (cudaHostRegister, portable and mapped, so kernels can read it in place; plain
 * portable where mapping is refused) host memory for DMA: the KV store's host_register hook.
 * 0 or SL_EDEVICE. */
int sl_gpu_host_register(void *ptr, size_t bytes, void *user);
void sl_gpu_host_unregister(void *ptr, void *user);

/* NUMA node of a device's PCI slot (sysfs), or -1 when unknown or not NUMA. */
int sl_gpu_numa_node(int device);

/* The CUDA backend on `device` (core/backend.h; gpu/backend-gpu.cu): 0, SL_ENOMEM or
 * SL_EDEVICE. */
struct sl_backend;
int sl_gpu_backend_create(int device, struct sl_backend **out);

#ifdef __cplusplus
}
#endif
#endif
