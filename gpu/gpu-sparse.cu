/* Sparse decode on the GPU (gpu/gpu-sparse.h): the state and one token's step at one layer. */
#include <cuda_fp16.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/hash.h"
#include "gpu/attention-logic.h"
#include "gpu/gpu-check.h"
#include "gpu/gpu-fetch.h"
#include "gpu/gpu-ops.h"
#include "gpu/gpu-retrieval.h"
#include "gpu/gpu-sparse.h"

struct sl_backend_sparse {
    int32_t n_layer, hq, hkv, d, G, W, block;
    int64_t n_ctx, ld; /* ld: rows per KV head in a selection slot and the gathered buffers */
    int64_t n_sink, n_window;
    bool prefetch;
    sl_gpu_hash *gh;
    sl_gpu_codes *codes;
    sl_gpu_fetch_t fetch;
    uint64_t *qcodes;          /* (hq, W) the token's query codes */
    void *work;                /* retrieval workspace for n_ctx positions */
    size_t work_bytes;
    int32_t *sel, *counts;     /* (n_layer, hkv, ld), (n_layer, hkv): each layer's last selection */
    bool *has_sel;             /* host (n_layer): the layer's slot holds a selection */
    int32_t *last;             /* (hkv) the own row's index per KV head: attention sees [0, last] */
    uint16_t *gk, *gv;         /* (hkv, ld, d) f16 gathered rows */
    void *attn_ws;
    size_t attn_bytes;
    unsigned long long *selected; /* device counter: positions attended (own rows excluded) */
    int64_t calls, resident, code_bytes;
};

static int dev_alloc(void **p, size_t bytes) {
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError();
    *p = NULL;
    return sl_fail(e == cudaErrorMemoryAllocation ? SL_ENOMEM : SL_EDEVICE, "cudaMalloc of %zu bytes: %s", bytes,
                   cudaGetErrorString(e));
}

extern "C" void sl_gpu_sparse_free(struct sl_backend_sparse *s) {
    if (!s) return;
    (void)cudaDeviceSynchronize();
    sl_gpu_fetch_free(s->fetch);
    sl_gpu_codes_free(s->codes);
    sl_gpu_hash_free(s->gh);
    void *bufs[] = {s->qcodes, s->work, s->sel, s->counts, s->last, s->gk, s->gv, s->attn_ws, s->selected};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) (void)cudaFree(bufs[i]);
    (void)cudaGetLastError();
    free(s->has_sel);
    free(s);
}

static int create(struct sl_backend_sparse *s, const struct sl_backend_sparse_params *p, int device) {
    const struct sl_hash_params *hp = sl_hash_get_params((const sl_hash *)p->hash);
    s->n_layer = p->n_layer, s->hq = p->n_head, s->hkv = p->n_head_kv, s->d = p->head_dim;
    s->G = p->n_head / p->n_head_kv;
    s->W = sl_hash_code_words(hp->bits);
    s->block = p->block;
    s->n_ctx = p->n_ctx;
    s->ld = p->max_sel + 1;
    s->n_sink = p->n_sink, s->n_window = p->n_window;
    if (s->G > SL_ATTN_DECODE_MAX_REP)
        return sl_fail(SL_EUNSUPPORTED, "GPU sparse decode: GQA groups of %d heads (at most %d)", s->G,
                       SL_ATTN_DECODE_MAX_REP);
    if (s->d != 64 && s->d != 128 && s->d != 256)
        return sl_fail(SL_EUNSUPPORTED, "GPU sparse decode: head_dim %d (64, 128 or 256)", s->d);
    struct sl_kv_shape shape;
    sl_kv_store_shape(p->store, &shape);
    s->resident = sl_gpu_sparse_plan_bytes(s->n_layer, s->hq, s->hkv, s->d, hp->bits, s->block, s->n_ctx,
                                           p->max_sel, p->cache_bytes, shape.block_tokens, &s->code_bytes);
    if (s->resident < 0) return (int)s->resident;

    SL_CUDA_CHECK(cudaSetDevice(device));
    int rc = sl_gpu_hash_upload((const sl_hash *)p->hash, NULL, &s->gh);
    if (!rc) rc = sl_gpu_codes_create(s->n_layer, s->hkv, s->W, s->n_ctx, &s->codes);
    s->work_bytes = sl_gpu_retrieve_workspace_bytes(s->n_ctx, s->G, s->W, s->block, s->hkv);
    s->attn_bytes = sl_gpu_attention_workspace_bytes(1, s->hq, s->d);
    const size_t slots = (size_t)s->n_layer * (size_t)s->hkv, rows = (size_t)s->hkv * (size_t)s->ld;
    if (!rc) rc = dev_alloc((void **)&s->qcodes, sizeof(uint64_t) * (size_t)(s->hq * s->W));
    if (!rc) rc = dev_alloc(&s->work, s->work_bytes);
    if (!rc) rc = dev_alloc((void **)&s->sel, sizeof(int32_t) * slots * (size_t)s->ld);
    if (!rc) rc = dev_alloc((void **)&s->counts, sizeof(int32_t) * slots);
    if (!rc) rc = dev_alloc((void **)&s->last, sizeof(int32_t) * (size_t)s->hkv);
    if (!rc) rc = dev_alloc((void **)&s->gk, sizeof(uint16_t) * rows * (size_t)s->d);
    if (!rc) rc = dev_alloc((void **)&s->gv, sizeof(uint16_t) * rows * (size_t)s->d);
    if (!rc) rc = dev_alloc(&s->attn_ws, s->attn_bytes);
    if (!rc) rc = dev_alloc((void **)&s->selected, sizeof(unsigned long long));
    if (rc) return rc;
    SL_CUDA_CHECK(cudaMemset(s->selected, 0, sizeof(unsigned long long)));
    if (!(s->has_sel = (bool *)calloc((size_t)s->n_layer, sizeof(bool)))) return sl_fail(SL_ENOMEM, "out of memory");

    struct sl_gpu_fetch_params fp = sl_gpu_fetch_default_params();
    fp.device = device;
    fp.max_count = s->ld;
    fp.cache_blocks = p->cache_bytes / (4 * (int64_t)shape.block_tokens * s->d);
    s->prefetch = p->prefetch && fp.cache_blocks > 0;
    return sl_gpu_fetch_create(p->store, &fp, &s->fetch);
}

extern "C" int sl_gpu_sparse_create(const struct sl_backend_sparse_params *p, int device,
                                    struct sl_backend_sparse **out) {
    if (!p || !out || !p->hash || !p->store || p->n_layer < 1 || p->n_head_kv < 1 || p->n_head % p->n_head_kv ||
        p->max_sel < 1 || p->max_sel > p->n_ctx || p->block < 1)
        return sl_fail(SL_EINVAL, "sl_gpu_sparse_create: bad parameters");
    struct sl_backend_sparse *s = (struct sl_backend_sparse *)calloc(1, sizeof *s);
    if (!s) return sl_fail(SL_ENOMEM, "out of memory");
    int rc = create(s, p, device);
    if (rc) {
        sl_gpu_sparse_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

extern "C" int sl_gpu_sparse_codes(struct sl_backend_sparse *s, int32_t layer, int64_t pos0, int64_t n,
                                   const uint64_t *codes, void *stream) {
    /* codes is pageable host memory: the copy has taken it when this returns */
    return sl_gpu_codes_upload(s->codes, layer, pos0, n, codes, stream);
}

extern "C" int sl_gpu_sparse_codes_at(struct sl_backend_sparse *s, int64_t pos, const uint64_t *codes,
                                      void *stream) {
    if (pos < 0 || pos >= sl_gpu_codes_capacity(s->codes))
        return sl_fail(SL_EINVAL, "GPU sparse codes: position %lld of %lld", (long long)pos,
                       (long long)sl_gpu_codes_capacity(s->codes));
    /* (layer, head) rows are head_stride words apart for every layer: one 2D copy */
    const size_t row = sizeof(uint64_t) * (size_t)s->W;
    SL_CUDA_CHECK(cudaMemcpy2DAsync(sl_gpu_codes_head(s->codes, 0, 0) + pos * s->W,
                                    sizeof(uint64_t) * (size_t)sl_gpu_codes_head_stride(s->codes), codes, row, row,
                                    (size_t)s->n_layer * (size_t)s->hkv, cudaMemcpyHostToDevice, (cudaStream_t)stream));
    return 0; /* pageable source: copied out of it by the time this returns */
}

/* Block g: KV head g's own row (f32 -> f16, as the store keeps it) at index count[g] of its
 * gathered rows; last[g] = that index; the count into the selected total. */
static __global__ void own_row_kernel(const float *k, const float *v, const int32_t *count, uint16_t *gk,
                                      uint16_t *gv, int64_t ld, int d, int32_t *last, unsigned long long *selected) {
    const int g = blockIdx.x;
    int64_t c = count[g];
    c = c < 0 ? 0 : c > ld - 1 ? ld - 1 : c; /* a failed top-k (count < 0) cannot address past the rows */
    __half *kr = reinterpret_cast<__half *>(gk) + ((int64_t)g * ld + c) * d;
    __half *vr = reinterpret_cast<__half *>(gv) + ((int64_t)g * ld + c) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        kr[i] = __float2half_rn(k[(int64_t)g * d + i]);
        vr[i] = __float2half_rn(v[(int64_t)g * d + i]);
    }
    if (threadIdx.x == 0) {
        last[g] = (int32_t)c;
        atomicAdd(selected, (unsigned long long)c);
    }
}

extern "C" int sl_gpu_sparse_decode(struct sl_backend_sparse *s, int32_t layer, const float *q, const float *k,
                                    const float *v, int64_t P, int64_t k_sel, float *out, void *stream) {
    if (layer < 0 || layer >= s->n_layer || P < 1 || P > s->n_ctx || k_sel < 0)
        return sl_fail(SL_EINVAL, "GPU sparse decode: layer %d, position %lld of %lld", layer, (long long)P,
                       (long long)s->n_ctx);
    const int64_t slot = (int64_t)layer * s->hkv;
    int32_t *sel = s->sel + slot * s->ld, *cnt = s->counts + slot;
    /* 1. the query codes, (hq, W) */
    int rc = sl_gpu_hash_encode(s->gh, SL_HASH_QUERY, layer, q, 1, s->qcodes, s->W, stream);
    /* 2. scan and top-k of [0, P) into this layer's slot (its previous selection, prefetched
     *    by the layer before, was copied off by the fetch before the caller's stream went on) */
    const struct sl_gpu_topk_params tk = {k_sel, s->n_sink, s->n_window, s->block};
    if (!rc) rc = sl_gpu_retrieve_layer(s->codes, layer, s->qcodes, s->G, P, &tk, s->work, s->work_bytes, sel, s->ld,
                                        cnt, stream);
    /* 3. the selected rows, then the next layer's previous selection into the cache */
    if (!rc) rc = sl_gpu_fetch_layer(s->fetch, layer, sel, cnt, s->gk, s->gv, stream);
    if (rc) return rc;
    s->has_sel[layer] = true;
    if (s->prefetch && layer + 1 < s->n_layer && s->has_sel[layer + 1]) {
        const int64_t next = slot + s->hkv;
        if ((rc = sl_gpu_fetch_prefetch(s->fetch, layer + 1, s->sel + next * s->ld, s->counts + next, stream)))
            return rc;
    }
    /* 4. the token's own rows; 5. attention over [0, last[g]] of each KV head */
    own_row_kernel<<<s->hkv, 64, 0, (cudaStream_t)stream>>>(k, v, cnt, s->gk, s->gv, s->ld, s->d, s->last,
                                                            s->selected);
    SL_CUDA_CHECK(cudaGetLastError());
    s->calls++;
    return sl_gpu_attention_gathered(q, s->gk, s->gv, s->ld, s->last, s->hq, s->hkv, s->d, out, s->attn_ws,
                                     s->attn_bytes, stream);
}

extern "C" int sl_gpu_sparse_stats(struct sl_backend_sparse *s, struct sl_backend_sparse_stats *out) {
    memset(out, 0, sizeof *out);
    struct sl_gpu_fetch_stats fs;
    int rc = sl_gpu_fetch_get_stats(s->fetch, &fs);
    if (rc) return rc;
    unsigned long long selected = 0;
    SL_CUDA_CHECK(cudaMemcpy(&selected, s->selected, sizeof selected, cudaMemcpyDeviceToHost));
    out->calls = s->calls;
    out->selected = (int64_t)selected;
    out->rows = fs.rows;
    out->row_hits = fs.row_hits;
    out->bytes_in = fs.bytes_h2d;
    out->resident_bytes = s->resident;
    out->code_bytes = s->code_bytes;
    return 0;
}
