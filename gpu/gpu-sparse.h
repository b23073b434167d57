/* Sparse decode on the GPU: the backend seam's sparse ops (core/backend.h) for the CUDA
 * backend. One decode token at one layer, all on the caller's stream, no host round trip on
 * the host tier:
 *
 *   1. hash the n_head query vectors                       sl_gpu_hash_encode      gpu-hash.cu
 *   2. scan the layer's resident codes of [0, P), top-k    sl_gpu_retrieve_layer   gpu-retrieve.cu
 *      (sinks, window, budget; token or block level) into the layer's selection slot
 *   3. fetch the selected K/V rows from the KV store       sl_gpu_fetch_layer      gpu-fetch.cu
 *      (mapped pinned host memory, or a file through staging) through the VRAM block cache;
 *      then warm the cache with the next layer's previous selection on the fetch stream
 *   4. the token's own K/V row after each KV head's rows   (here)
 *   5. attention of each GQA group over its rows           sl_gpu_attention_gathered
 *                                                                                 gpu-attention.cu
 * The codes are a mirror of the host table (core/sparse-attn.c hashes every key on the host
 * and copies the codes here), so selections equal the CPU's. The engine (core/context.c) runs
 * a decode token's layers without the host: its own K/V rows are staged in VRAM per layer and
 * go to the store, to the hash and (as codes, one strided copy: sl_gpu_sparse_codes_at) back
 * here after the last layer, since nothing in the step reads them.
 *
 * Plain C types; the stream travels as void *. Built only with CUDA, except the size function,
 * which is in gpu/retrieval-plan.c for every build (core/mem-plan.c plans VRAM with it). Not
 * installed. */
#ifndef SL_GPU_GPU_SPARSE_H
#define SL_GPU_GPU_SPARSE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sl_backend_sparse;
struct sl_backend_sparse_params;
struct sl_backend_sparse_stats;

/* Device bytes of the sparse decode state besides the hash weights: the codes of n_ctx
 * positions of every layer (also into *code_bytes), the selection slots and gathered rows for
 * max_sel positions per KV head, the retrieval and attention workspaces, and cache_bytes of
 * block cache (rounded down to whole blocks of block_tokens positions). SL_EINVAL for bad
 * sizes. */
int64_t sl_gpu_sparse_plan_bytes(int32_t n_layer, int32_t n_head, int32_t n_head_kv, int32_t head_dim, int32_t bits,
                                 int32_t block, int64_t n_ctx, int64_t max_sel, int64_t cache_bytes,
                                 int32_t block_tokens, int64_t *code_bytes);

/* The state on the current device: the hash uploaded, the code table, buffers, and a fetch
 * from p->store (zero-copy where its memory is mapped, else staged). 0, SL_EINVAL,
 * SL_EUNSUPPORTED (a GQA group over 8 heads, a head_dim the kernels lack), SL_ENOMEM,
 * SL_EDEVICE. */
int sl_gpu_sparse_create(const struct sl_backend_sparse_params *p, int device, struct sl_backend_sparse **out);
void sl_gpu_sparse_free(struct sl_backend_sparse *s); /* waits for its work; NULL: no-op */

/* sparse_codes, sparse_decode, sparse_stats of core/backend.h, queued on `stream`. */
int sl_gpu_sparse_codes(struct sl_backend_sparse *s, int32_t layer, int64_t pos0, int64_t n, const uint64_t *codes,
                        void *stream);
/* One position's codes of every layer, host (n_layer, n_head_kv, W): one strided copy. */
int sl_gpu_sparse_codes_at(struct sl_backend_sparse *s, int64_t pos, const uint64_t *codes, void *stream);
int sl_gpu_sparse_decode(struct sl_backend_sparse *s, int32_t layer, const float *q, const float *k, const float *v,
                         int64_t P, int64_t k_sel, float *out, void *stream);
int sl_gpu_sparse_stats(struct sl_backend_sparse *s, struct sl_backend_sparse_stats *out);

#ifdef __cplusplus
}
#endif
#endif
