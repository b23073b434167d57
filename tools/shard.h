/* Splitting a job's documents into shards of about equal work, the same way in every process
 * of a scaled-out job (MPI ranks, Slurm array tasks) without any communication: pure
 * arithmetic on the document sizes, no I/O, no MPI. */
#ifndef SL_TOOLS_SHARD_H
#define SL_TOOLS_SHARD_H

#include <stddef.h>
#include <stdint.h>

/* Greedy longest-processing-time assignment: items in decreasing weight (ties: lower index
 * first), each to the least-loaded shard (ties: lower shard). A pure function of its inputs,
 * so every process computes the same answer. Any list schedule bounds the heaviest shard by
 * sum/n_shards + the heaviest item; LPT also stays within 4/3 of the best possible split.
 * weight[i] < 0 leaves item i out (shard_of[i] = -1). shard_of has n entries (caller-owned).
 * 0, SL_EINVAL (n_shards < 1, or n > 0 with a NULL array), SL_ENOMEM, or SL_EBOUNDS when a
 * shard's load would overflow int64. */
int shard_assign(const int64_t *weight, size_t n, int32_t n_shards, int32_t *shard_of);

/* The shard of a Slurm array task: (task_id - task_min) / task_step, which must be a whole
 * number in [0, task_count) (array indices need not start at 0: --array=1-8 or 0-14:2).
 * 0 with *shard set, or SL_EINVAL (a list such as --array=1,4,9 does not map onto shards). */
int shard_of_array_task(int64_t task_id, int64_t task_min, int64_t task_step, int64_t task_count, int32_t *shard);

#endif
