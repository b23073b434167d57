/* The asynchronous KV fetch on the GPU: per decode step and layer, the K/V rows of the
 * positions each KV head selected, moved from the KV store (host RAM or a file) into dense
 * device buffers ready for attention, through a small VRAM block cache. Plain C types (a
 * stream travels as void *); every function returns 0 or a negative SL_E* code with
 * sl_error_detail() set. Not installed; built only with SL_HAVE_CUDA.
 *
 * Input of a call: idx_dev (n_heads, max_count) int32 positions, ascending and unique within
 * each head's row, and counts_dev (n_heads) int32: what the top-k kernel writes, on the
 * device. n_heads is the store's n_head_kv. Output: k_out_dev and v_out_dev, each
 * (n_heads, max_count, head_dim) of the store's 2-byte dtype: row (h, i) holds position
 * idx[h][i], bit-identical to sl_kv_store_gather; rows at i >= counts[h] are not written. A
 * position outside [0, n_tokens) gives a zero row and a count in stats.bad (the staged
 * paths see it on the host and do the same); a count outside [0, max_count] is clamped and
 * counted.
 *
 * Transfer paths:
 *   host tier, pinned and mapped (sl_kv_store_params_for_device):
 *     SL_GPU_FETCH_ZERO_COPY (default): one kernel reads the selected rows straight from mapped
 *       host memory over PCIe into the output (and phase 3 into the VRAM cache). No host round
 *       trip: the whole fetch is decided on the device, so it queues behind the top-k kernel
 *       without the CPU waiting. It moves only the selected rows: Spotlight picks ~2% of the
 *       positions scattered at token level, about 1.2 per touched 16-token block, so a whole-
 *       block copy moves ~14x the bytes. Rows are 128-byte reads, which PCIe serves well with
 *       many in flight; bench/bench-gpu-fetch.cu measures both against the copy-engine limit.
 *     SL_GPU_FETCH_BLOCK_COPY: the lookup's misses come back to the host (a round trip per
 *       call), the copy engine moves every missed block whole into VRAM staging
 *       (cudaMemcpyBatchAsync), a device gather picks the rows, and whole blocks enter the
 *       cache. Wins when selections are block-dense.
 *   file tier (or a host tier whose memory is not pinned): staged rows: the indices come to
 *     the host (cudaMemcpyAsync into pinned memory, event sync), sl_kv_store_gather_submit
 *     reads the missed rows into pinned staging (io_uring), then one cudaMemcpyAsync per K/V
 *     moves them up and the device gather places them. The calling thread blocks on the
 *     index copy and the reads; the GPU keeps running what was queued before.
 *
 * Streams and events: a fetch owns a non-blocking stream. sl_gpu_fetch_layer records an event
 * on the caller's stream (the selection is ready there), makes the fetch stream wait for it,
 * queues the fetch there, and makes the caller's stream wait for the fetch's end: work the
 * caller queued earlier keeps running, work queued later sees the rows. Overlap: while layer
 * l computes on the compute stream, sl_gpu_fetch_prefetch(l + 1, previous step's selection of
 * l + 1) warms the cache on the fetch stream; step-to-step selections overlap ~80%, so the
 * fetch of l + 1 then mostly hits VRAM. Issue the prefetch after queueing layer l's compute.
 *
 * The VRAM cache (gpu/fetch-logic.h): set-associative, slots of one block keyed by (layer,
 * head, block), with a mask of the rows a slot holds; decided on the device in three phases
 * (lookup, copy, insert), no host round trip on the zero-copy path. It follows the store's
 * epoch (sl_kv_store_epoch): after a truncate it starts empty.
 *
 * Threads: one thread uses a fetch at a time. The store must stay open while the fetch lives;
 * appends and commits of new positions may run between calls (never during one), a truncate
 * only between calls. */
#ifndef SL_GPU_GPU_FETCH_H
#define SL_GPU_GPU_FETCH_H

#include <stdbool.h>
#include <stdint.h>

#include "spotlight/kv-store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_gpu_fetch *sl_gpu_fetch_t;

enum sl_gpu_fetch_path {
    SL_GPU_FETCH_ZERO_COPY = 0,  /* host tier: rows read from mapped host memory by a kernel */
    SL_GPU_FETCH_BLOCK_COPY = 1, /* host tier: whole blocks by the copy engine, then a gather */
    SL_GPU_FETCH_STAGED = 2,     /* what the file tier (or unpinned host memory) uses; may be
                                    asked for on the host tier too, to compare */
};

struct sl_gpu_fetch_params {
    int32_t device;             /* CUDA device; the calls make it current */
    int64_t max_count;          /* positions per head per call: row stride of idx and outputs */
    int64_t cache_blocks;       /* VRAM cache slots of one block each; 0: no cache */
    int32_t cache_ways;         /* associativity 1..32 (default 4) */
    enum sl_gpu_fetch_path path;
};

/* device 0, max_count 0 (must be set), cache_blocks 0, cache_ways 4, path ZERO_COPY. */
struct sl_gpu_fetch_params sl_gpu_fetch_default_params(void);

/* Allocates everything a call needs (device buffers, pinned staging, the cache), so no call
 * allocates. A host-tier store whose memory is not mapped for the device falls back to
 * STAGED and says so once. SL_EINVAL (params), SL_EUNSUPPORTED (cache with block_tokens > 64),
 * SL_ENOMEM / SL_EDEVICE. The store is borrowed: it must outlive the fetch. */
int sl_gpu_fetch_create(sl_kv_store_t store, const struct sl_gpu_fetch_params *params,
                        sl_gpu_fetch_t *out);

/* Waits for the fetch stream, then frees. NULL is a no-op. */
void sl_gpu_fetch_free(sl_gpu_fetch_t f);

/* The path calls take (after any fallback). */
enum sl_gpu_fetch_path sl_gpu_fetch_path_used(sl_gpu_fetch_t f);

/* Fetches layer `layer` (see the top). idx_dev, counts_dev, k_out_dev, v_out_dev: device
 * memory, the outputs 16-byte aligned for the wide copy (others work, slower); `stream`: the
 * caller's cudaStream_t (NULL: legacy default stream), which waits for the result. The
 * selection must stay unchanged until the caller's stream passes this call. */
int sl_gpu_fetch_layer(sl_gpu_fetch_t f, int32_t layer, const int32_t *idx_dev,
                       const int32_t *counts_dev, void *k_out_dev, void *v_out_dev, void *stream);

/* Brings the rows of a selection of `layer` into the VRAM cache without producing output
 * (no-op without a cache). The selection is copied on the fetch stream first and `stream`
 * (where it was written) waits only for that copy, so the caller may overwrite it at once. */
int sl_gpu_fetch_prefetch(sl_gpu_fetch_t f, int32_t layer, const int32_t *idx_dev,
                          const int32_t *counts_dev, void *stream);

/* Empties the VRAM cache (queued on the fetch stream). */
int sl_gpu_fetch_invalidate(sl_gpu_fetch_t f);

/* blocks .. bad count sl_gpu_fetch_layer calls; bytes_h2d, inserts and evictions count
 * prefetches too. */
struct sl_gpu_fetch_stats {
    enum sl_gpu_fetch_path path;
    int64_t calls, prefetches;
    int64_t blocks, block_hits; /* distinct blocks requested; found in VRAM (some rows there) */
    int64_t rows, row_hits;     /* positions requested; served from VRAM */
    int64_t bad;                /* positions / counts out of range */
    int64_t bytes_h2d;          /* K/V bytes moved host -> device (rows, or whole blocks) */
    int64_t inserts, evictions; /* blocks entering the cache; of them, replacing another */
    int64_t cache_slots, cache_bytes;
};

/* Waits for the fetch stream, then reads the counters (device and host). */
int sl_gpu_fetch_get_stats(sl_gpu_fetch_t f, struct sl_gpu_fetch_stats *out);
int sl_gpu_fetch_reset_stats(sl_gpu_fetch_t f);

#ifdef __cplusplus
}
#endif
#endif
