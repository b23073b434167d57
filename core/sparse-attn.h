/* Sparse (Spotlight) attention for decode, behind sl_context_set_attention (context.h): the
 * resident key-code table, selection per KV head, and the gather of the selected K/V rows.
 *
 * One decode token at layer l, position pos (keys [0, pos] are in the cache), P = pos:
 *   1. hash the n_head query vectors (one query function per head)         sl_hash_encode
 *   2. per KV head g: XNOR-popcount of the group's G query codes against the
 *      codes of keys [0, P), summed over the group                         sl_hamming_scan
 *   3. top max(budget * P, min_tokens) + sinks + recent window of [0, P)   sl_topk_select
 *   4. copy those K/V rows (f16) of head g, then the token's own row, into a buffer
 *   5. dense attention of the group's queries over the buffer              backend attention
 * A prefill chunk of n rows at pos0 (sparse_prefill) does the same with P = pos0 and one
 * selection for the whole chunk: a key's score is summed over every row and group head,
 * which is a weighted bit sum read from a per-byte table; the chunk's own n rows follow the
 * selection and attend causally. topk-exact replaces the hash score by the summed softmax
 * over [0, P). When the budget covers all of [0, P) the layer runs plain dense attention.
 * Keys are hashed as they are evaluated, so the table always covers the cache. */
#ifndef SL_CORE_SPARSE_ATTN_H
#define SL_CORE_SPARSE_ATTN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/backend.h"
#include "core/code-file.h"
#include "core/kv-cache.h"
#include "spotlight/context.h"
#include "spotlight/kv-store.h"
#include "spotlight/model.h"

struct sl_sparse;

/* fingerprint: the model's (a spotlight hash file must carry it). n_ctx: positions the code
 * table holds; n_batch: the largest chunk sl_sparse_add_keys gets. 0, SL_EINVAL (bad
 * parameters, with a detail), a hash-file error, SL_ENOMEM. */
int sl_sparse_create(const struct sl_attn_params *p, const struct sl_model_config *cfg,
                     const uint8_t fingerprint[32], int64_t n_ctx, int32_t n_batch, struct sl_sparse **out);
void sl_sparse_free(struct sl_sparse *s);

/* The most earlier positions one KV head's selection holds at a context of n_ctx (sinks,
 * window, the budget's k times rerank, a block's rounding). */
int64_t sl_sparse_max_selected(const struct sl_attn_params *p, int64_t n_ctx);

/* What sl_sparse_create allocates for these settings (bits: the hash's code bits, 0 for
 * topk-exact): the key codes into *code_bytes, and everything else as the return value
 * (selection and gather buffers, top-k workspace); SL_ENOMEM when the sizes overflow. */
int64_t sl_sparse_plan_bytes(const struct sl_attn_params *p, const struct sl_model_config *cfg, int32_t bits,
                             int64_t n_ctx, int32_t n_batch, int64_t *code_bytes);

/* Hashes keys k (n, n_head_kv * head_dim), post-RoPE, of positions pos0.. of a layer into
 * the table (overwriting what a truncated context left there). */
int sl_sparse_add_keys(struct sl_sparse *s, int32_t layer, int64_t pos0, int64_t n, const float *k);

/* The same from the keys as f16 bits (n, n_head_kv * head_dim), what the KV store appends:
 * the same codes (sl_sparse_add_keys hashes f16-rounded values). */
int sl_sparse_add_keys_f16(struct sl_sparse *s, int32_t layer, int64_t pos0, int64_t n, const uint16_t *k);

/* One position's keys of every layer as f16 bits (n_layer, n_head_kv * head_dim), what a
 * decode token adds: sl_sparse_add_keys_f16 per sparse layer, and in device mode one transfer
 * of all their codes. */
int sl_sparse_add_token_keys_f16(struct sl_sparse *s, int64_t pos, const uint16_t *k);

/* Hashes n stored keys (n, head_dim) f16 of one KV head into the table at pos0.. (what
 * sl_sparse_add_keys computes from the same keys in f32). */
int sl_sparse_add_head_keys_f16(struct sl_sparse *s, int32_t layer, int32_t g, int64_t pos0, int64_t n,
                                const uint16_t *k);

/* The key-code table, for the code file beside a KV store (core/code-file.h): false for
 * topk-exact, which has none. */
bool sl_sparse_code_table(const struct sl_sparse *s, struct sl_code_table *out);

/* What identifies the hash function: the SHA-256 of its serialized form (computed on first
 * use). 0, or SL_ENOMEM; SL_EINVAL for topk-exact. */
int sl_sparse_hash_id(struct sl_sparse *s, uint8_t out[32]);

/* Whether an eval of n tokens attends sparsely at this layer. */
bool sl_sparse_applies(const struct sl_sparse *s, int32_t layer, int64_t n);

/* Where the attended rows come from: the RAM cache (the chunk's rows already written into
 * it), or a KV store holding [0, pos0) committed, with the chunk's own rows in ck, cv
 * (n, n_head_kv, head_dim) f16. */
struct sl_sparse_kv {
    const struct sl_kv_cache *cache; /* RAM mode; NULL with a store */
    sl_kv_store_t store;
    const uint16_t *ck, *cv;
    const float *k, *v; /* device mode: the chunk's own rows (n, n_head_kv * head_dim) f32 in the
                           backend's memory, for decode */
};

/* Attention of n query rows q (n, n_head * head_dim) at positions pos0.. over the earlier
 * positions selected per KV head plus the rows themselves (causal), into out
 * (n, n_head * head_dim). n <= the n_batch given at creation. */
int sl_sparse_attend(struct sl_sparse *s, struct sl_backend *be, const struct sl_sparse_kv *kv, int32_t layer,
                     const float *q, int64_t n, int64_t pos0, float *out);

void sl_sparse_stats(const struct sl_sparse *s, struct sl_attn_stats *out);

/* Device mode, for a backend whose memory is not the host's (the CUDA one): the key codes get
 * a resident copy in the backend's memory (kept equal to the host table: every key hashed
 * from here on is mirrored, and what the store already holds is copied now), and decode
 * tokens attend there through the backend's sparse ops, the selected K/V fetched from `store`
 * (cache_bytes of block cache in the backend's memory). Prefill chunks still select and attend
 * here on the host (a CPU backend of n_threads), their queries downloaded and outputs
 * uploaded. Call after the store holds what it resumes. SL_EUNSUPPORTED for topk-exact, rerank
 * above 1 or a backend without sparse ops; then free s. */
int sl_sparse_attach_device(struct sl_sparse *s, struct sl_backend *be, sl_kv_store_t store, int64_t cache_bytes,
                            int n_threads);

/* Bytes the device mode holds in the backend's memory (0 otherwise). */
int64_t sl_sparse_device_bytes(const struct sl_sparse *s);

/* Prefetch (KV store, decode): advance the gather in flight without blocking (call between
 * pieces of compute), or wait for it (before the store changes or goes away). NULL is fine. */
void sl_sparse_poll(struct sl_sparse *s);
void sl_sparse_quiesce(struct sl_sparse *s);

#endif
