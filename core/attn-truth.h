/* The truth that hash training and retrieval evaluation measure against: causal softmax
 * attention of a GQA group over one sequence's keys, and its exact top-k.
 *
 * Rows are gathered from the interleaved layout the q/k dumps load into (core/qk-dump.h):
 * q (seq_len, n_head_q, d), k (seq_len, n_head_kv, d), f32. */
#ifndef SL_CORE_ATTN_TRUTH_H
#define SL_CORE_ATTN_TRUTH_H

#include <stdint.h>

/* dst (n, d) = rows of head `head` from src (positions, stride_heads, d): rows[i] when rows is
 * given, else positions 0..n-1. */
void sl_truth_gather_rows(const float *src, int32_t stride_heads, int32_t head, int32_t d,
                          const int32_t *rows, int64_t n, float *dst);

/* A (Q, N) = sum over the group's heads h of softmax_{j <= qi[r]}(q_h[r] . k_j / sqrt(d)),
 * zero for j > qi[r]; a row sums to `group`. xq[h]: (Q, d) query rows of head h; xk: (N, d).
 * L: (Q, N) scratch. Uses cblas_sgemm. */
void sl_truth_attention(int32_t group, const float *const *xq, const float *xk, const int32_t *qi,
                        int64_t Q, int64_t N, int32_t d, float *A, float *L);

/* The k-th largest of v[0, n) (1 <= k <= n), by quickselect on a copy in work (n floats). */
float sl_truth_kth_largest(const float *v, int64_t n, int64_t k, float *work);

/* Marks the exact top-k of a[0, n) (1 <= k <= n): sets `bit` in mask[j] for the k positions
 * with the largest a[j], ties toward later positions (as sl_topk_select breaks them). work:
 * n floats. Returns the mass sum of a over the marked positions. */
double sl_truth_topk_mark(const float *a, int64_t n, int64_t k, uint8_t *mask, uint8_t bit, float *work);

/* Keys a budget selects from a causal prefix of n positions: ceil(budget * n), at least 1,
 * at most n. */
int64_t sl_truth_budget_k(float budget, int64_t n);

#endif
