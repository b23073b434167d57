/* Shard assignment (see shard.h). */
#include "tools/shard.h"

#include <stdlib.h>

#include "spotlight/error.h"

struct item {
    int64_t w;
    size_t i;
};

static int by_weight_desc(const void *a, const void *b) {
    const struct item *x = a, *y = b;
    if (x->w != y->w) return x->w > y->w ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i; /* a total order: qsort's instability cannot show */
}

/* Min-heap of shard ids keyed by (load, id): the least-loaded shard, lowest id on ties. */
static int heap_less(const int64_t *load, int32_t a, int32_t b) {
    return load[a] != load[b] ? load[a] < load[b] : a < b;
}

static void heap_down(int32_t *h, int32_t n, const int64_t *load, int32_t at) {
    for (;;) {
        int32_t l = 2 * at + 1, r = l + 1, m = at;
        if (l < n && heap_less(load, h[l], h[m])) m = l;
        if (r < n && heap_less(load, h[r], h[m])) m = r;
        if (m == at) return;
        int32_t t = h[at];
        h[at] = h[m];
        h[m] = t;
        at = m;
    }
}

int shard_assign(const int64_t *weight, size_t n, int32_t n_shards, int32_t *shard_of) {
    if (n_shards < 1 || (n && (!weight || !shard_of))) return SL_EINVAL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += weight[i] >= 0;
    struct item *it = k ? malloc(k * sizeof *it) : NULL; /* k <= n items of a caller's array */
    int64_t *load = calloc((size_t)n_shards, sizeof *load);
    int32_t *heap = malloc((size_t)n_shards * sizeof *heap);
    int rc = 0;
    if ((k && !it) || !load || !heap) {
        rc = SL_ENOMEM;
        goto done;
    }
    k = 0;
    for (size_t i = 0; i < n; i++) {
        shard_of[i] = -1;
        if (weight[i] >= 0) it[k++] = (struct item){weight[i], i};
    }
    if (k > 1) qsort(it, k, sizeof *it, by_weight_desc);
    for (int32_t s = 0; s < n_shards; s++) heap[s] = s; /* all loads 0: already a heap */
    for (size_t j = 0; j < k; j++) {
        int32_t s = heap[0];
        if (load[s] > INT64_MAX - it[j].w) {
            rc = SL_EBOUNDS;
            goto done;
        }
        load[s] += it[j].w;
        shard_of[it[j].i] = s;
        heap_down(heap, n_shards, load, 0); /* only the root's key grew */
    }
done:
    if (rc)
        for (size_t i = 0; i < n; i++) shard_of[i] = -1;
    free(it);
    free(load);
    free(heap);
    return rc;
}

int shard_of_array_task(int64_t task_id, int64_t task_min, int64_t task_step, int64_t task_count, int32_t *shard) {
    if (task_count < 1 || task_count > INT32_MAX || task_step < 1 || task_min < 0 || task_id < task_min)
        return SL_EINVAL;
    int64_t d = task_id - task_min; /* 0 <= task_min <= task_id: no overflow */
    if (d % task_step || d / task_step >= task_count) return SL_EINVAL;
    *shard = (int32_t)(d / task_step);
    return 0;
}
