/* Sizes of the GPU retrieval path (gpu/gpu-retrieval.h): pure host arithmetic, compiled in
 * every build so that capacity planning and the CPU tests of the kernels' logic need no CUDA.
 * The workspace layout itself is gpu/retrieval-logic.h's, shared with the kernels. */
#include "gpu/gpu-retrieval.h"

#include "core/internal.h"
#include "gpu/retrieval-logic.h"
#include "spotlight/error.h"

int64_t sl_gpu_codes_plan_bytes(int32_t n_layer, int32_t n_head_kv, int32_t bits, int64_t n_tokens) {
    if (n_layer < 1 || n_head_kv < 1 || bits < 1 || n_tokens < 0)
        return sl_fail(SL_EINVAL, "code plan: %d layers, %d KV heads, %d bits, %lld tokens", n_layer, n_head_kv,
                       bits, (long long)n_tokens);
    uint64_t b = 0;
    if (sl_mul_overflow_u64((uint64_t)n_layer * (uint64_t)n_head_kv, (uint64_t)((bits + 63) / 64) * 8u, &b) ||
        sl_mul_overflow_u64(b, (uint64_t)n_tokens, &b) || b > (uint64_t)INT64_MAX)
        return sl_fail(SL_EINVAL, "code plan: %lld tokens overflow 64-bit bytes", (long long)n_tokens);
    return (int64_t)b;
}

size_t sl_gpu_topk_workspace_bytes(int64_t n, int32_t max_score, int32_t block, int32_t n_heads) {
    struct sl_rt_geom g;
    if (n_heads < 1 || sl_rt_geom_init(n, max_score, 0, 0, 0, block, &g) < 0) return 0;
    struct sl_rt_layout l;
    sl_rt_layout_init(&g, n_heads, &l);
    return l.bytes;
}

int64_t sl_gpu_topk_max_count(int64_t n, const struct sl_gpu_topk_params *p) {
    return sl_rt_max_count(n, p->k, p->n_sink, p->n_window, p->block);
}

int64_t sl_gpu_scores_ld(int64_t n) { return n < 0 ? 0 : (n + 7) / 8 * 8; }

size_t sl_gpu_retrieve_workspace_bytes(int64_t n, int32_t G, int32_t W, int32_t block, int32_t n_heads) {
    if (G < 1 || W < 1 || (int64_t)G * W * 64 > 65535 || n_heads < 1) return 0;
    size_t tk = sl_gpu_topk_workspace_bytes(n, G * W * 64, block, n_heads);
    if (!tk) return 0;
    return sl_rt_align((size_t)n_heads * (size_t)sl_gpu_scores_ld(n) * sizeof(uint16_t)) + tk;
}

/* ---- the sparse decode state (gpu/gpu-sparse.h) ------------------------------------------ */

#include "gpu/attention-logic.h"
#include "gpu/gpu-sparse.h"

int64_t sl_gpu_sparse_plan_bytes(int32_t n_layer, int32_t n_head, int32_t n_head_kv, int32_t head_dim, int32_t bits,
                                 int32_t block, int64_t n_ctx, int64_t max_sel, int64_t cache_bytes,
                                 int32_t block_tokens, int64_t *code_bytes) {
    const int64_t codes = sl_gpu_codes_plan_bytes(n_layer, n_head_kv, bits, n_ctx);
    const int32_t W = (bits + 63) / 64;
    const size_t work = n_head > 0 && n_head_kv > 0 && n_head % n_head_kv == 0
                            ? sl_gpu_retrieve_workspace_bytes(n_ctx, n_head / n_head_kv, W, block, n_head_kv)
                            : 0;
    if (codes < 0 || !work || head_dim < 1 || max_sel < 1 || max_sel > n_ctx || block_tokens < 1 || cache_bytes < 0)
        return sl_fail(SL_EINVAL, "sparse plan: %lld positions, %lld selected, %d bits", (long long)n_ctx,
                       (long long)max_sel, bits);
    const int64_t ld = max_sel + 1, block_bytes = 4 * (int64_t)block_tokens * head_dim;
    *code_bytes = codes;
    return codes + (int64_t)work + 4 * (int64_t)n_layer * n_head_kv * (ld + 1) /* slots, counts */
           + 2 * 2 * (int64_t)n_head_kv * ld * head_dim                        /* gathered K, V */
           + 8 * (int64_t)n_head * W + 4 * (int64_t)n_head_kv + 8              /* query codes, lengths */
           + (int64_t)sl_attn_workspace_bytes(1, n_head, head_dim) + cache_bytes / block_bytes * block_bytes;
}
