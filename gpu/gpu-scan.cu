/* Hamming scan on the GPU: the score of every stored key code of a layer's KV heads against
 * its GQA group's query codes, sum over g of (64 W - popcount(q_g XOR k_j)), exactly the
 * CPU's (cpu/hamming.h; the reference is sl_rt_score in gpu/retrieval-logic.h).
 *
 * Grid (key tiles of SL_RT_TILE = 2048 keys, heads), 256 threads, 8 keys per thread. The
 * group's G x W query words sit in shared memory (every thread reads the same word: a
 * broadcast). Loads are 128-bit and coalesced, consecutive threads taking consecutive 16-byte
 * slots: W = 1, a slot is 2 keys (their 2 scores stored as one 32-bit word); W = 2, a slot is
 * one key. Other W, or unaligned codes, take one 64-bit load per word. The scan is bound by
 * the code bytes: 8 W per key against 2 G W popcounts (__popcll is two 32-bit POPC).
 *
 * Optionally (token-level retrieval, gpu-retrieve.cu) each CTA also counts its candidates'
 * scores into a shared histogram flushed to the head's global one: the top-k's first pass over
 * the scores, saved. Not done: the CPU's bit-plane rewrite of the group (2 popcounts per key
 * for G = 3 instead of 3); worth measuring where the popcount rate, not memory, binds. */
#include <stdint.h>

#include "gpu/gpu-check.h"
#include "gpu/gpu-retrieval-internal.cuh"
#include "gpu/gpu-retrieval.h"

struct scan_hist {
    uint32_t *hist; /* NULL: no histogram */
    uint32_t *bad;
    struct sl_rt_geom g;
};

/* Score of the key k (WV words) against the shared query words. */
template <int WV>
static __device__ __forceinline__ uint32_t score_of(const uint64_t *q, int32_t G, const uint64_t *k, uint32_t full) {
    uint32_t mis = 0;
    for (int32_t g = 0; g < G; g++)
#pragma unroll
        for (int w = 0; w < WV; w++) mis += (uint32_t)__popcll(q[g * WV + w] ^ k[w]);
    return full - mis;
}

static __device__ __forceinline__ void hist_key(const scan_hist &sh, uint32_t *bins, int64_t j, uint32_t s,
                                                uint32_t *bad) {
    if (sh.hist && sl_rt_hist_accept(&sh.g, j, s, bad)) atomicAdd(&bins[s], 1u);
}

/* WV = 1 or 2: 128-bit slots as above; WV = 0: any W, 64-bit loads. */
template <int WV>
static __global__ void scan_kernel(const uint64_t *q, int32_t G, int32_t W, const uint64_t *k, int64_t k_stride,
                                   int64_t n, uint16_t *scores, int64_t ld, scan_hist sh) {
    extern __shared__ uint64_t sm[];
    const int32_t h = blockIdx.y;
    uint64_t *qs = sm;
    for (int32_t i = threadIdx.x; i < G * W; i += blockDim.x) qs[i] = q[(int64_t)h * G * W + i];
    uint32_t *bins = nullptr;
    uint32_t *gh = sh.hist ? sh.hist + (size_t)h * ((size_t)sh.g.ms + 1) : nullptr;
    if (sh.hist) bins = sl_hist_begin((uint32_t *)(sm + (G * W + 1) / 2 * 2), gh, sh.g.ms);
    __syncthreads();
    const uint64_t *kh = k + (size_t)h * k_stride;
    uint16_t *row = scores + (size_t)h * ld;
    const uint32_t full = (uint32_t)G * (uint32_t)W * 64u;
    const int64_t j0 = (int64_t)blockIdx.x * SL_RT_TILE;
    uint32_t bad = 0;
    if constexpr (WV == 1) {
        /* 1024 slots of two keys */
        for (int it = 0; it < SL_RT_TILE / 2 / SL_RT_THREADS; it++) {
            int64_t j = j0 + 2 * ((int64_t)it * SL_RT_THREADS + threadIdx.x);
            if (j + 1 < n) {
                ulonglong2 v = *reinterpret_cast<const ulonglong2 *>(kh + j);
                uint64_t a = v.x, b = v.y;
                uint32_t s0 = score_of<1>(qs, G, &a, full), s1 = score_of<1>(qs, G, &b, full);
                *reinterpret_cast<uint32_t *>(row + j) = s0 | s1 << 16;
                hist_key(sh, bins, j, s0, &bad);
                hist_key(sh, bins, j + 1, s1, &bad);
            } else if (j < n) {
                uint32_t s0 = score_of<1>(qs, G, kh + j, full);
                row[j] = (uint16_t)s0;
                hist_key(sh, bins, j, s0, &bad);
            }
        }
    } else if constexpr (WV == 2) {
        for (int it = 0; it < SL_RT_TILE / SL_RT_THREADS; it++) {
            int64_t j = j0 + (int64_t)it * SL_RT_THREADS + threadIdx.x;
            if (j < n) {
                ulonglong2 v = *reinterpret_cast<const ulonglong2 *>(kh + 2 * j);
                uint64_t kk[2] = {v.x, v.y};
                uint32_t s = score_of<2>(qs, G, kk, full);
                row[j] = (uint16_t)s;
                hist_key(sh, bins, j, s, &bad);
            }
        }
    } else {
        for (int it = 0; it < SL_RT_TILE / SL_RT_THREADS; it++) {
            int64_t j = j0 + (int64_t)it * SL_RT_THREADS + threadIdx.x;
            if (j < n) {
                const uint64_t *kj = kh + j * W;
                uint32_t mis = 0;
                for (int32_t g = 0; g < G; g++)
                    for (int32_t w = 0; w < W; w++) mis += (uint32_t)__popcll(qs[g * W + w] ^ kj[w]);
                uint32_t s = full - mis;
                row[j] = (uint16_t)s;
                hist_key(sh, bins, j, s, &bad);
            }
        }
    }
    if (sh.hist) {
        if (bad) sh.bad[h] = 1;
        sl_hist_end(bins, gh, sh.g.ms);
    }
}

int sl_gpu_scan_launch(const uint64_t *q, int32_t G, const uint64_t *k, int64_t k_stride, int32_t n_heads, int64_t n,
                       int32_t W, uint16_t *scores, int64_t ld, uint32_t *hist, uint32_t *bad,
                       const struct sl_rt_geom *g, cudaStream_t stream) {
    if (n == 0) return 0;
    scan_hist sh;
    sh.hist = hist;
    sh.bad = bad;
    if (g) sh.g = *g;
    else sh.g.ms = 0;
    size_t smem = (size_t)(G * W + 1) / 2 * 2 * sizeof(uint64_t) + (hist ? sl_rt_hist_shared_bytes(sh.g.ms) : 0);
    dim3 grid((unsigned)((n + SL_RT_TILE - 1) / SL_RT_TILE), (unsigned)n_heads);
    /* one head: its strides do not matter */
    const bool one = n_heads == 1;
    const bool kvec = ((uintptr_t)k & 15) == 0 && (one || k_stride % 2 == 0);
    if (W == 1 && kvec && ((uintptr_t)scores & 3) == 0 && (one || ld % 2 == 0))
        scan_kernel<1><<<grid, SL_RT_THREADS, smem, stream>>>(q, G, W, k, k_stride, n, scores, ld, sh);
    else if (W == 2 && kvec)
        scan_kernel<2><<<grid, SL_RT_THREADS, smem, stream>>>(q, G, W, k, k_stride, n, scores, ld, sh);
    else
        scan_kernel<0><<<grid, SL_RT_THREADS, smem, stream>>>(q, G, W, k, k_stride, n, scores, ld, sh);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

static int check_scan(const uint64_t *q, int32_t G, const uint64_t *k, int64_t k_stride, int32_t n_heads, int64_t n,
                      int32_t W, const uint16_t *scores, int64_t ld) {
    if (G < 1 || W < 1 || (int64_t)G * W * 64 > 65535)
        return sl_fail(SL_EINVAL, "gpu scan: G %d x %d words: scores must fit 0..65535", G, W);
    if (n < 0 || n > SL_RT_MAX_N || n_heads < 1 || n_heads > 65535)
        return sl_fail(SL_EINVAL, "gpu scan: %lld keys, %d heads", (long long)n, n_heads);
    if (n > 0 && (!q || !k || !scores))
        return sl_fail(SL_EINVAL, "gpu scan: NULL buffer");
    if (ld < n || (n_heads > 1 && k_stride < n * W))
        return sl_fail(SL_EINVAL, "gpu scan: strides (keys %lld words, scores %lld) below %lld keys",
                       (long long)k_stride, (long long)ld, (long long)n);
    return 0;
}

extern "C" int sl_gpu_hamming_scan_heads(const uint64_t *q_dev, int32_t G, const uint64_t *k_dev,
                                         int64_t k_head_stride, int32_t n_heads, int64_t n, int32_t W,
                                         uint16_t *scores_dev, int64_t scores_ld, void *stream) {
    int rc = check_scan(q_dev, G, k_dev, k_head_stride, n_heads, n, W, scores_dev, scores_ld);
    if (rc) return rc;
    return sl_gpu_scan_launch(q_dev, G, k_dev, k_head_stride, n_heads, n, W, scores_dev, scores_ld, NULL, NULL, NULL,
                              (cudaStream_t)stream);
}

extern "C" int sl_gpu_hamming_scan(const uint64_t *q_dev, int32_t G, const uint64_t *k_dev, int64_t n, int32_t W,
                                   uint16_t *scores_dev, void *stream) {
    return sl_gpu_hamming_scan_heads(q_dev, G, k_dev, n * W, 1, n, W, scores_dev, n, stream);
}
