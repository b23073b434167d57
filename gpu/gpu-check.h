/* Error checking for CUDA runtime and cuBLAS calls inside the gpu/ sources.
 *
 * Library code never exits or aborts on a device failure (CONVENTIONS 2): a failing call
 * records "file:line: call: reason" as this thread's error detail and makes the enclosing
 * function return SL_EDEVICE, so the macros may only be used in functions returning int.
 * Not installed. */
#ifndef SL_GPU_CHECK_H
#define SL_GPU_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "spotlight/error.h"

#include "core/internal.h"

#define SL_CUDA_CHECK(call)                                                                 \
    do {                                                                                    \
        cudaError_t sl_cuda_err_ = (call);                                                  \
        if (sl_cuda_err_ != cudaSuccess)                                                    \
            return sl_fail(SL_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,          \
                           cudaGetErrorString(sl_cuda_err_));                               \
    } while (0)

/* The caller includes <cublas_v2.h>; this header does not, so files without cuBLAS do not
 * need its headers. */
#define SL_CUBLAS_CHECK(call)                                                               \
    do {                                                                                    \
        cublasStatus_t sl_cublas_st_ = (call);                                              \
        if (sl_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                         \
            return sl_fail(SL_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,          \
                           cublasGetStatusString(sl_cublas_st_));                           \
    } while (0)

#endif
