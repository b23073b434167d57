/* Sparse (Spotlight) attention for decode, behind sl_context_set_attention (context.h): the
 * resident key-code table, selection per KV head, and the gather of the selected K/V rows.
 *
 * One decode token at layer l, position pos (keys [0, pos] are in the cache):
 *   1. hash the n_head query vectors (one query function per head)         sl_hash_encode
 *   2. per KV head g: XNOR-popcount of the group's G query codes against the
 *      codes of keys [0, pos], summed over the group                       sl_hamming_scan
 *   3. top max(budget * (pos + 1), min_tokens) + sinks + recent window     sl_topk_select
 *   4. copy those K/V rows (f16) of head g into a contiguous buffer
 *   5. dense decode attention of the group's queries over the buffer       backend attention
 * topk-exact replaces 1-3 by the group's summed softmax over all keys. Keys are hashed as they
 * are evaluated (prefill chunks and decode tokens alike), so the table always covers the
 * cache. */
#ifndef SL_CORE_SPARSE_ATTN_H
#define SL_CORE_SPARSE_ATTN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/backend.h"
#include "core/kv-cache.h"
#include "spotlight/context.h"
#include "spotlight/model.h"

struct sl_sparse;

/* fingerprint: the model's (a spotlight hash file must carry it). n_ctx: positions the code
 * table holds; n_batch: the largest chunk sl_sparse_add_keys gets. 0, SL_EINVAL (bad
 * parameters, with a detail), a hash-file error, SL_ENOMEM. */
int sl_sparse_create(const struct sl_attn_params *p, const struct sl_model_config *cfg,
                     const uint8_t fingerprint[32], int64_t n_ctx, int32_t n_batch, struct sl_sparse **out);
void sl_sparse_free(struct sl_sparse *s);

/* Hashes keys k (n, n_head_kv * head_dim), post-RoPE, of positions pos0.. of a layer into
 * the table (overwriting what a truncated context left there). */
int sl_sparse_add_keys(struct sl_sparse *s, int32_t layer, int64_t pos0, int64_t n, const float *k);

/* Whether an eval of n tokens attends sparsely at this layer. */
bool sl_sparse_applies(const struct sl_sparse *s, int32_t layer, int64_t n);

/* Attention of one decode query q (n_head * head_dim) at position pos over the selected keys
 * of [0, pos] in kv, into out (n_head * head_dim). */
int sl_sparse_attend(struct sl_sparse *s, struct sl_backend *be, const struct sl_kv_cache *kv, int32_t layer,
                     const float *q, int64_t pos, float *out);

void sl_sparse_stats(const struct sl_sparse *s, struct sl_attn_stats *out);

#endif
