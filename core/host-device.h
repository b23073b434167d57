/* SL_HD marks a small function that both the C library and CUDA kernels run: static inline for
 * the host compiler, and __host__ __device__ under nvcc. Decisions written once this way (a
 * top-k tie rule, a cache's victim choice, a rounding) are what the kernels execute and what
 * the CPU tests check, with no second copy to drift. SL_HD_QUAL is the qualifier alone, for
 * hooks such as storage/kv-host-map.h's SL_KV_HD. Not installed. */
#ifndef SL_CORE_HOST_DEVICE_H
#define SL_CORE_HOST_DEVICE_H

#ifdef __CUDACC__
#define SL_HD_QUAL __host__ __device__
#else
#define SL_HD_QUAL
#endif
#define SL_HD static inline SL_HD_QUAL

#endif
