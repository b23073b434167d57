/* Dense causal attention over the f16 KV cache on the CPU.
 * Few query rows (decode): per token, the positions are cut into chunks (their count set by the
 * length alone: 256 positions each, at most 64 chunks) that the threads share; a chunk is
 * scanned for all KV heads, each K/V row read once for the whole GQA group, keeping a running
 * max/sum (flash-decoding); the chunks' partial softmaxes are merged in order at the end, so
 * the result does not depend on the thread count.
 * Many rows (prefill chunks): per head and tile of 128 query rows, S = Q.K^T over the
 * positions the tile sees and O = softmax(S).V, each a single-threaded OpenBLAS sgemm; the
 * threads take tiles as they come free. Neither path's result depends on the thread count.
 * Queries are rounded to f16 first, as multiplying against f16 keys does in llama.cpp. */
#ifndef SL_CPU_ATTENTION_H
#define SL_CPU_ATTENTION_H

#include <stdint.h>

#include "core/kv-cache.h"
#include "cpu/scratch.h"
#include "cpu/threadpool.h"

struct sl_attn_scratch {
    struct sl_scratch q, part, scores, kf, vf;
};

int sl_cpu_attention(sl_threadpool *pool, struct sl_attn_scratch *s, const struct sl_kv_cache *kv,
                     int32_t layer, const float *q, int64_t n, int64_t pos0, int32_t n_head, float *out);

void sl_attn_scratch_free(struct sl_attn_scratch *s);

#endif
