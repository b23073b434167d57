/* Direct addressing of host-tier KV blocks, for code that reads the store's RAM itself instead
 * of through gathers: a GPU reading mapped (zero-copy) host memory, or the copy engine moving
 * whole blocks. Not installed; plain C, no CUDA, no model knowledge.
 *
 * Host-tier memory comes in segments (storage/kv-store-host.c). Segment g holds the block
 * indices [g << seg_shift, (g + 1) << seg_shift) of every (layer, KV head); block
 * (layer, block, head) lies at
 *     segment(block >> seg_shift).ptr + sl_kv_host_block_offset(map, layer, block, head)
 * and holds, like every block (include/spotlight/kv-store.h), K rows then V rows, each
 * (block_tokens, head_dim) of 2-byte elements: row r of K at + r * row_bytes, of V at
 * + (block_tokens + r) * row_bytes.
 *
 * Lifetime: a segment is mapped (placed, locked, registered through host_register) when an
 * append first reaches it, so every segment holding a committed position is mapped. A mapped
 * segment keeps its address until sl_kv_store_close/free (truncate does not unmap). Rows of
 * committed positions do not change until a truncate forgets them; sl_kv_store_epoch changes
 * on every truncate, so a cache of rows outside the store (the GPU's VRAM cache) can tell
 * when what it holds may be stale. Rows past n_tokens in a mapped segment are pending or
 * unwritten: never use them.
 *
 * SL_KV_HD: a qualifier hook for the one address formula below. C leaves it empty; a CUDA
 * file defines it as __host__ __device__ before including this header, so device code
 * computes block addresses with exactly the store's formula. */
#ifndef SL_STORAGE_KV_HOST_MAP_H
#define SL_STORAGE_KV_HOST_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spotlight/kv-store.h"

#ifndef SL_KV_HD
#define SL_KV_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

struct sl_kv_host_map {
    int32_t n_layer, n_head_kv, head_dim, block_tokens;
    int32_t block_shift; /* log2(block_tokens) */
    int64_t row_bytes;   /* head_dim * 2 */
    int64_t block_bytes; /* K + V of one block: 2 * block_tokens * row_bytes */
    int32_t seg_shift;   /* a segment holds 2^seg_shift block indices of every (layer, head) */
    int64_t n_segs;      /* segment slots: ceil(n_blocks / 2^seg_shift) */
    int64_t seg_bytes;   /* bytes a mapped segment spans (before page rounding) */
};

struct sl_kv_host_segment {
    void *ptr;       /* NULL: not mapped yet (no position of it appended) */
    size_t bytes;    /* mapped bytes (page-rounded), 0 when not mapped */
    bool registered; /* host_register succeeded for it (pinned for DMA) */
};

/* Byte offset of block (layer, block, head) inside its segment. */
static inline SL_KV_HD int64_t sl_kv_host_block_offset(int32_t seg_shift, int32_t n_head_kv,
                                                       int64_t block_bytes, int32_t layer,
                                                       int64_t block, int32_t head) {
    int64_t in_seg = block & ((INT64_C(1) << seg_shift) - 1);
    return ((((int64_t)layer << seg_shift) + in_seg) * n_head_kv + head) * block_bytes;
}

static inline SL_KV_HD int64_t sl_kv_host_map_offset(const struct sl_kv_host_map *m,
                                                     int32_t layer, int64_t block, int32_t head) {
    return sl_kv_host_block_offset(m->seg_shift, m->n_head_kv, m->block_bytes, layer, block, head);
}

/* Segment index of a block. */
static inline SL_KV_HD int64_t sl_kv_host_map_segment(const struct sl_kv_host_map *m,
                                                      int64_t block) {
    return block >> m->seg_shift;
}

/* The layout of a host-tier store. SL_EUNSUPPORTED for the file tier (its blocks live in a
 * file and a RAM cache whose slots move: read it through gathers), SL_ECLOSED when closed. */
int sl_kv_store_host_map(sl_kv_store_t s, struct sl_kv_host_map *out);

/* Segment seg (0 <= seg < n_segs; SL_EBOUNDS otherwise) as it is now. */
int sl_kv_store_host_segment(sl_kv_store_t s, int64_t seg, struct sl_kv_host_segment *out);

/* Changes whenever committed rows may have changed under an outside cache: every successful
 * truncate (either tier). 0 for a new or reopened store. */
uint64_t sl_kv_store_epoch(sl_kv_store_t s);

#ifdef __cplusplus
}
#endif
#endif
