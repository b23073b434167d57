/* Top-k selection of positions from small-integer scores (the output of the Hamming scan,
 * cpu/hamming.h) in O(n + max_score) with no sort: a histogram of the scores gives the
 * threshold score and how many ties at it to take, then one compaction pass writes the
 * positions in ascending order.
 *
 * Semantics, for n scored positions and params {k, n_sink, n_window, block}:
 *   forced      F = [0, min(n_sink, n)) ∪ [max(n - n_window, 0), n): always selected.
 *   block == 1  (token level) the candidates are the positions not in F; the k of them with
 *               the highest scores are selected, ties broken toward LATER positions (order
 *               by score descending, then position descending, take the first k). When there
 *               are no more than k candidates, all are selected.
 *   block > 1   (a power of two; block level) blocks are [i*block, min((i+1)*block, n)) for
 *               i < ceil(n / block), the last one possibly partial; a block's score is the
 *               max of its positions' scores. The kb = ceil(k / block) highest-scoring blocks
 *               among ALL blocks (forced positions included; ties toward later blocks; all
 *               blocks when there are no more than kb) are selected, each expanded to its
 *               positions, clipped to n.
 *   output      the union of F and the selection: unique positions in ascending order.
 *               k = 0 selects exactly F. The result is deterministic: equal inputs give
 *               equal outputs on every path (AVX2 or scalar).
 * Scores must be <= max_score (the scan's G*b); 0 <= max_score <= 65535. */
#ifndef SL_CPU_TOPK_H
#define SL_CPU_TOPK_H

#include <stddef.h>
#include <stdint.h>

struct sl_topk_params {
    int64_t k;        /* positions (token level) or ceil(k / block) blocks beyond the forced ones */
    int64_t n_sink;   /* first positions always selected (attention sinks) */
    int64_t n_window; /* last positions always selected (the recent window) */
    int32_t block;    /* 1 = token level; else a power of two: selection granularity */
};

/* Workspace bytes sl_topk_select needs for these sizes (histograms, block scores, alignment
 * slack); 0 if the sizes are invalid. The caller owns it and may reuse it for every call
 * with sizes no larger. */
size_t sl_topk_workspace_bytes(int64_t n, int32_t max_score, int32_t block);

/* An upper bound on the count sl_topk_select returns (the capacity `out` needs):
 * min(n, n_sink + n_window + k rounded up to a whole number of blocks). */
int64_t sl_topk_max_count(int64_t n, const struct sl_topk_params *p);

/* Selects positions from scores[0, n) as described above into out (capacity
 * sl_topk_max_count). Returns the count, or SL_EINVAL (with a detail) for negative sizes, a
 * block that is not a power of two, n >= 2^32, a workspace smaller than
 * sl_topk_workspace_bytes, or a score above max_score (out is then unspecified). Allocates
 * nothing; thread-safe given distinct workspaces. */
int64_t sl_topk_select(const uint16_t *scores, int64_t n, int32_t max_score, const struct sl_topk_params *p,
                       void *work, size_t work_bytes, int64_t *out);

#endif
