/* Retrieval quality of hashes on one layer of real post-RoPE q/k (the paper's evaluation, with
 * this project's GQA rule): for sampled query positions i, every KV head selects from the
 * causal prefix [0, i] the ceil(budget * (i + 1)) keys with the highest XNOR-popcount score
 * summed over its group's query heads (cpu/hamming.h, then cpu/topk.h: the runtime's own
 * kernels, ties toward later positions), and the selection is compared with the truth
 * A = the group's summed causal softmax attention (core/attn-truth.h):
 *   recall   attention-mass recall: the share of the group's true attention weight that lies
 *            on the selected keys (sum of A over the selection / group size)
 *   iou      |selected ∩ exact| / |selected ∪ exact|, exact = the same number of keys with the
 *            largest A (the paper's metric)
 * both averaged over the sampled queries, per (KV head, budget). No sinks and no recent
 * window: this measures retrieval alone. */
#ifndef SL_CORE_HASH_EVAL_H
#define SL_CORE_HASH_EVAL_H

#include <stdint.h>

#include "core/hash-train.h"
#include "core/hash.h"

#define SL_HASH_EVAL_MAX_BUDGETS 8

struct sl_hash_eval_params {
    const float *budgets; /* fractions in (0, 1] */
    int32_t n_budgets;    /* 1..SL_HASH_EVAL_MAX_BUDGETS */
    int32_t queries;      /* query positions sampled from [min_pos, seq_len) */
    int32_t min_pos;      /* >= 1 */
    uint64_t seed;        /* the same seed samples the same positions for every call */
};

struct sl_hash_eval_cell {
    double recall, iou;
};

/* Evaluates hashes[0, n_hash) (n_hash >= 1, all of one head shape) on `layer` of seq, and the
 * exact top-k as method n_hash (iou 1; its recall is the most any selection of that size can
 * cover). out: (n_hash + 1) x n_head_kv x n_budgets cells, method-major. 0, SL_EINVAL,
 * SL_ESHAPE (hashes of different shapes), SL_ENOMEM. Single-threaded apart from BLAS. */
int sl_hash_eval_layer(const sl_hash *const *hashes, int32_t n_hash, int32_t layer,
                       const struct sl_hash_train_seq *seq, const struct sl_hash_eval_params *p,
                       struct sl_hash_eval_cell *out);

/* The attention-mass recall of one hash at one budget, averaged over KV heads: what
 * train-hash reports before and after training. */
int sl_hash_attention_recall(const sl_hash *h, int32_t layer, const struct sl_hash_train_seq *seq,
                             float budget, int32_t queries, int32_t min_pos, uint64_t seed,
                             float *recall);

#endif
