/* One layer's retrieval on the GPU: the scan of every KV head's stored codes, then the top-k
 * (gpu-scan.cu, gpu-topk.cu). At token level the scan kernel accumulates the top-k's
 * histogram while the scores are still in registers, which saves the histogram kernel's pass
 * over the scores (n_heads x n x 2 bytes) and one launch; at block level the histogram is of
 * block maxima, which the top-k computes from the stored scores. */
#include <stdint.h>

#include "gpu/gpu-check.h"
#include "gpu/gpu-retrieval-internal.cuh"
#include "gpu/gpu-retrieval.h"

extern "C" int sl_gpu_retrieve_layer(const sl_gpu_codes *t, int32_t layer, const uint64_t *q_dev, int32_t G, int64_t n,
                                     const struct sl_gpu_topk_params *p, void *work_dev, size_t work_bytes,
                                     int32_t *out_dev, int64_t out_ld, int32_t *counts_dev, void *stream) {
    if (!t || !p || (n > 0 && !q_dev))
        return sl_fail(SL_EINVAL, "gpu retrieve: NULL argument");
    const int32_t W = sl_gpu_codes_words(t);
    const uint64_t *k = sl_gpu_codes_head(t, layer, 0);
    if (!k) return sl_fail(SL_EINVAL, "gpu retrieve: layer %d not in the code table", layer);
    if (n < 0 || n > sl_gpu_codes_capacity(t))
        return sl_fail(SL_EINVAL, "gpu retrieve: %lld positions, the table holds %lld", (long long)n,
                       (long long)sl_gpu_codes_capacity(t));
    if (G < 1 || (int64_t)G * W * 64 > 65535)
        return sl_fail(SL_EINVAL, "gpu retrieve: group of %d queries x %d words exceeds the score range", G, W);
    const int32_t H = sl_gpu_codes_heads(t);
    struct sl_rt_geom g;
    if (sl_rt_geom_init(n, G * W * 64, p->k, p->n_sink, p->n_window, p->block, &g) < 0)
        return sl_fail(SL_EINVAL, "gpu retrieve: invalid selection (k %lld, sinks %lld, window %lld, block %d)",
                       (long long)p->k, (long long)p->n_sink, (long long)p->n_window, p->block);
    const int64_t ld = sl_gpu_scores_ld(n);
    const size_t scores_bytes = sl_rt_align((size_t)H * (size_t)ld * sizeof(uint16_t));
    struct sl_rt_layout l;
    sl_rt_layout_init(&g, H, &l);
    if (work_bytes < scores_bytes + l.bytes)
        return sl_fail(SL_EINVAL, "gpu retrieve: workspace of %zu bytes, %zu needed", work_bytes,
                       scores_bytes + l.bytes);
    char *topk_work = (char *)work_dev + scores_bytes;
    int rc = sl_gpu_topk_check(H, &g, &l, topk_work, work_bytes - scores_bytes, out_dev, out_ld, counts_dev);
    if (rc) return rc;

    cudaStream_t st = (cudaStream_t)stream;
    uint16_t *scores = (uint16_t *)work_dev;
    const bool fuse = g.B == 1 && g.mode == SL_RT_THRESH;
    if (fuse) SL_CUDA_CHECK(cudaMemsetAsync(topk_work, 0, l.zero_bytes, st));
    rc = sl_gpu_scan_launch(q_dev, G, k, sl_gpu_codes_head_stride(t), H, n, W, scores, ld,
                            fuse ? (uint32_t *)(topk_work + l.hist) : NULL,
                            fuse ? (uint32_t *)(topk_work + l.bad) : NULL, &g, st);
    if (rc) return rc;
    return sl_gpu_topk_launch(scores, ld, H, &g, &l, topk_work, out_dev, out_ld, counts_dev, fuse, st);
}
