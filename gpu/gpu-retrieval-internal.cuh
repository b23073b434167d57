/* Device helpers and internal launchers shared by the retrieval .cu files (gpu-scan.cu,
 * gpu-topk.cu, gpu-retrieve.cu). CUDA C++ only; not installed. The library is compiled
 * without separable compilation, so device helpers live here as static inline functions. */
#ifndef SL_GPU_RETRIEVAL_INTERNAL_CUH
#define SL_GPU_RETRIEVAL_INTERNAL_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "gpu/retrieval-logic.h"

#define SL_RT_FULL_MASK 0xffffffffu

/* Exclusive prefix sum of v over the CTA's SL_RT_THREADS threads (thread order); *total gets
 * the sum. Every thread must call it (it synchronises, also on return, so it can be called
 * again at once). */
template <typename T>
static __device__ __forceinline__ T sl_block_exclusive_sum(T v, T *total) {
    constexpr int NW = SL_RT_THREADS / 32;
    __shared__ T warp_sums[NW];
    __shared__ T tot;
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    T x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        T y = __shfl_up_sync(SL_RT_FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) warp_sums[wid] = x;
    __syncthreads();
    if (wid == 0) {
        T w = lane < NW ? warp_sums[lane] : T(0), s = w;
#pragma unroll
        for (int o = 1; o < NW; o <<= 1) {
            T y = __shfl_up_sync(SL_RT_FULL_MASK, s, o);
            if (lane >= o) s += y;
        }
        if (lane < NW) warp_sums[lane] = s - w;
        if (lane == NW - 1) tot = s;
    }
    __syncthreads();
    T r = warp_sums[wid] + x - v;
    *total = tot;
    __syncthreads();
    return r;
}

/* A CTA's histogram: shared bins when ms + 1 <= SL_RT_SHARED_HIST_BINS (needs that many
 * uint32 of dynamic shared memory), else the global bins directly (atomics in L2). */
static inline size_t sl_rt_hist_shared_bytes(int32_t ms) {
    return (size_t)ms + 1 <= SL_RT_SHARED_HIST_BINS ? ((size_t)ms + 1) * sizeof(uint32_t) : 0;
}

static __device__ __forceinline__ uint32_t *sl_hist_begin(uint32_t *sh, uint32_t *global, int32_t ms) {
    if ((size_t)ms + 1 > SL_RT_SHARED_HIST_BINS) return global;
    for (int32_t b = threadIdx.x; b <= ms; b += blockDim.x) sh[b] = 0;
    __syncthreads();
    return sh;
}

static __device__ __forceinline__ void sl_hist_end(const uint32_t *sh, uint32_t *global, int32_t ms) {
    if ((size_t)ms + 1 > SL_RT_SHARED_HIST_BINS) return;
    __syncthreads();
    for (int32_t b = threadIdx.x; b <= ms; b += blockDim.x)
        if (sh[b]) atomicAdd(&global[b], sh[b]);
}

/* The scores of units [ub, ub + nv) into s[0..7] (zero past nv): one 128-bit load when vec
 * (the row is 16-byte aligned; ub is a multiple of 8) and the thread's units are all there. */
static __device__ __forceinline__ void sl_load_units(const uint16_t *row, int64_t ub, int32_t nv, bool vec,
                                                     uint16_t s[SL_RT_PER_THREAD]) {
    if (vec && nv == SL_RT_PER_THREAD) {
        uint4 v = *reinterpret_cast<const uint4 *>(row + ub);
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            s[2 * i] = (uint16_t)(w[i] & 0xffffu);
            s[2 * i + 1] = (uint16_t)(w[i] >> 16);
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < SL_RT_PER_THREAD; i++) s[i] = i < nv ? row[ub + i] : 0;
}

/* ---- launchers shared between files (return 0 or SL_EDEVICE) ------------------------------ */

/* Scan of n_heads heads (sl_gpu_hamming_scan_heads). hist non-NULL: also accumulates, per
 * head, the histogram of the candidates' scores as g says (token level), bad flags in bad. */
int sl_gpu_scan_launch(const uint64_t *q, int32_t G, const uint64_t *k, int64_t k_stride, int32_t n_heads, int64_t n,
                       int32_t W, uint16_t *scores, int64_t ld, uint32_t *hist, uint32_t *bad,
                       const struct sl_rt_geom *g, cudaStream_t stream);

/* The top-k phases on a checked geometry and a workspace of l.bytes. hist_ready: the
 * histogram and bad flags in the workspace are already accumulated (zeroed, then filled by
 * the fused scan); only for token level. */
int sl_gpu_topk_launch(const uint16_t *scores, int64_t ld, int32_t n_heads, const struct sl_rt_geom *g,
                       const struct sl_rt_layout *l, void *work, int32_t *out, int64_t out_ld, int32_t *counts,
                       bool hist_ready, cudaStream_t stream);

/* The output and workspace checks of sl_gpu_topk_select, for a valid geometry: 0 or
 * SL_EINVAL with a detail. */
int sl_gpu_topk_check(int32_t n_heads, const struct sl_rt_geom *g, const struct sl_rt_layout *l, const void *work,
                      size_t work_bytes, const int32_t *out, int64_t out_ld, const int32_t *counts);

#endif
