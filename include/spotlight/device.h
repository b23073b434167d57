/* Discovery of CUDA devices, so a caller can choose between the GPU and CPU backends.
 *
 * These calls work in every build: a library built without CUDA reports that it was, and
 * sees no devices. "No GPU" is never an error here: a machine without a driver, without a
 * device, or with a driver too old for the runtime simply has 0 devices, and the caller
 * falls back to the CPU backend. Only asking for the details of a device that is not there
 * (or a device whose runtime call fails) returns an error. */
#ifndef SPOTLIGHT_DEVICE_H
#define SPOTLIGHT_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a caller needs to decide whether and how to use a device. Filled by the caller's
 * struct; the library keeps no pointer to it. */
struct sl_device_info {
    char name[256];          /* "NVIDIA H200", NUL-terminated */
    int32_t index;           /* CUDA runtime ordinal (after CUDA_VISIBLE_DEVICES) */
    int32_t cc_major;        /* compute capability, e.g. 9.0 for Hopper */
    int32_t cc_minor;
    int32_t n_sm;            /* streaming multiprocessors */
    size_t mem_total;        /* bytes of device memory */
    size_t mem_free;         /* bytes free when asked; other processes may change it */
};

/* Whether this build of the library contains the CUDA backend. */
bool sl_cuda_compiled(void);

/* Number of usable CUDA devices: >= 0, never an error. 0 when the library was built without
 * CUDA, or there is no driver, no device, or a driver too old for the runtime; an unexpected
 * runtime failure also counts as 0 devices and is logged once as a warning. The first call
 * initialises the CUDA runtime (tens to hundreds of milliseconds). */
int sl_cuda_device_count(void);

/* Fills *out for device `index` (0 <= index < sl_cuda_device_count()). Returns 0, SL_EINVAL
 * for a NULL out, SL_ENODEV when the index is out of range or the library was built without
 * CUDA, or SL_EDEVICE when a runtime call fails; sl_error_detail() says which. Reading the
 * free memory creates the device's primary context (a few hundred MiB of VRAM, held until the
 * process exits or the context is reset); the calling thread's current device is restored. */
int sl_cuda_device_info(int index, struct sl_device_info *out);

#ifdef __cplusplus
}
#endif
#endif
