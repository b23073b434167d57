/* The passes of sparse selection that read every stored key code (core/sparse-attn.c drives
 * them): a decode token's Hamming scan, and a prefill chunk's table scoring. Both split their
 * positions over the backend's host threads (the backend's `parallel` op, from
 * SL_SELECT_SPLIT_MIN positions on) and give the same bits for any thread count: every
 * position's score is computed alone, in a fixed order. */
#ifndef SL_CORE_SPARSE_SELECT_H
#define SL_CORE_SPARSE_SELECT_H

#include <stdint.h>

#include "core/backend.h"

#define SL_SELECT_SPLIT_MIN 16384 /* positions: below, one thread (waking the others costs more) */

/* scores[j] = sl_hamming_scan's score of codes k[j] (n of W words) against the G query codes
 * q, j < n. be NULL, or without `parallel`: this thread alone. */
void sl_select_scan(struct sl_backend *be, const uint64_t *q, int32_t G, const uint64_t *k, int64_t n, int32_t W,
                    uint16_t *scores);

/* Why a table: the matches of a key's code with every query code of the chunk (its n rows,
 * the group's G heads) sum to sum_i w_i (2 k_i - 1), with w_i = sum_{t,h} (2 q_{t,h,i} - 1); up
 * to a constant and a factor of 2 that is sum_i w_i k_i, eight bits of k at a time from a
 * table of 256 entries per code byte.
 * A chunk's scoring table, (8 W, 256) floats: lut[p * 256 + v] = sum over the set bits i of
 * byte value v of w[8 p + i], where w_i = sum over the chunk's n rows and the G heads of
 * (2 q_i - 1) (bits past `bits` weigh 0). Query codes of row t, head h at
 * q + t * row_words + h * W. */
void sl_select_chunk_table(const uint64_t *q, int64_t n, int64_t row_words, int32_t G, int32_t W, int32_t bits,
                           float *lut);

/* Scores of positions [0, P) from their codes (W words each, little-endian bytes): the table
 * entries of a code's 8 W bytes summed in byte order. B = 1: into fscore[j]; B > 1: the
 * largest over each block of B positions (the last may be short) into bmax[b]. */
void sl_select_chunk_scores(struct sl_backend *be, const float *lut, const uint64_t *codes, int32_t W, int64_t P,
                            int64_t B, float *fscore, float *bmax);

#endif
