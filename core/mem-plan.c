/* The memory plan (see mem-plan.h). */
#include "core/mem-plan.h"

#include <inttypes.h>

#include "core/internal.h"
#include "core/sparse-attn.h"
#include "gpu/gpu-retrieval.h"
#include "gpu/gpu-sparse.h"
#include "spotlight/context.h"
#include "spotlight/error.h"
#include "spotlight/quant.h"

int sl_model_for_each_weight(const sl_model *m,
                             int (*fn)(void *user, const struct sl_gguf_tensor *t, enum sl_weight_use use),
                             void *user) {
    const struct sl_model_config *c = sl_model_config(m);
    int rc = 0;
    for (int32_t l = 0; !rc && l < c->n_layer; l++) {
        const struct sl_layer_weights *w = sl_model_layer(m, l);
        const struct sl_gguf_tensor *mats[] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
        const struct sl_gguf_tensor *vecs[] = {w->attn_norm, w->ffn_norm, w->bq, w->bk, w->bv};
        for (size_t i = 0; !rc && i < sizeof mats / sizeof *mats; i++) rc = fn(user, mats[i], SL_WEIGHT_MATRIX);
        for (size_t i = 0; !rc && i < sizeof vecs / sizeof *vecs; i++)
            if (vecs[i]) rc = fn(user, vecs[i], SL_WEIGHT_VECTOR);
    }
    if (!rc) rc = fn(user, sl_model_token_embd(m), SL_WEIGHT_EMBEDDING);
    if (!rc) rc = fn(user, sl_model_output_norm(m), SL_WEIGHT_VECTOR);
    if (!rc) rc = fn(user, sl_model_output(m), SL_WEIGHT_MATRIX);
    return rc;
}

struct weight_sum {
    bool gpu;
    int64_t bytes;
};

/* The GPU keeps matrices as bf16 and everything else as stored; the CPU reads the file's bytes
 * (a tied head counted once). */
static int add_weight(void *user, const struct sl_gguf_tensor *t, enum sl_weight_use use) {
    struct weight_sum *s = user;
    const int64_t stored = sl_type_row_bytes(t->type, t->ne[0]) * t->ne[1];
    s->bytes += s->gpu && use == SL_WEIGHT_MATRIX ? 2 * t->ne[0] * t->ne[1] : stored;
    return 0;
}

int sl_mem_plan_compute(const sl_model *m, const struct sl_mem_plan_params *p, struct sl_mem_plan *out) {
    const struct sl_model_config *c = sl_model_config(m);
    if (p->n_ctx < 1 || p->n_batch < 1)
        return sl_fail(SL_EINVAL, "memory plan: n_ctx %" PRId64 " and n_batch %d must be >= 1", p->n_ctx, p->n_batch);
    const bool sparse = p->attn && p->attn->mode != SL_ATTN_DENSE;
    *out = (struct sl_mem_plan){0};
    struct weight_sum ws = {p->gpu, 0};
    sl_model_for_each_weight(m, add_weight, &ws);
    if (!p->gpu && sl_model_output(m) == sl_model_token_embd(m)) /* tied: the same bytes, counted twice above */
        ws.bytes -= sl_type_row_bytes(sl_model_output(m)->type, sl_model_output(m)->ne[0]) * sl_model_output(m)->ne[1];
    out->weights = ws.bytes;

    const int64_t row = (int64_t)c->n_head_kv * c->head_dim * 2 * 2; /* K and V, f16, one position, one layer */
    /* Sparse with the K/V off the fast tier: only the dense layers' stay there. On the CPU
     * without a store file every layer's K/V is in RAM (the fast tier) already. */
    const bool kv_off = sparse && (p->gpu || p->kv_file);
    const int32_t fast_layers = kv_off ? (p->attn->dense_layers < c->n_layer ? p->attn->dense_layers : c->n_layer)
                                       : c->n_layer;
    out->kv_fast = row * fast_layers * p->n_ctx;

    /* the chunk's activations (core/context.c), logits, the chunk's f16 K/V and tags */
    const int64_t nb = p->n_batch, q = (int64_t)c->n_head * c->head_dim, kv = (int64_t)c->n_head_kv * c->head_dim;
    out->work = 4 * nb * (3 * c->n_embd + 2 * q + 2 * kv + 2 * c->n_ff) + 4 * (int64_t)c->n_vocab;
    if (p->gpu) out->work += 4 * nb * c->n_vocab + 2 * nb * (c->n_ff > c->n_embd ? c->n_ff : c->n_embd); /* logits, GEMM input */
    if (sparse) {
        const int32_t bits = p->attn->mode == SL_ATTN_TOPK_EXACT ? 0 : p->attn->bits;
        int64_t codes = 0, sel = sl_sparse_plan_bytes(p->attn, c, bits, p->n_ctx, p->n_batch, &codes);
        if (sel < 0) return sl_fail(SL_EINVAL, "memory plan: %" PRId64 " positions overflow", p->n_ctx);
        if (p->gpu && bits > 0) { /* codes mirrored in VRAM with the decode buffers; the host's for prefill */
            const int64_t dc = p->device_cache_bytes == 0 ? (int64_t)64 << 20 : p->device_cache_bytes > 0 ? p->device_cache_bytes : 0;
            int64_t dcodes = 0, dev = sl_gpu_sparse_plan_bytes(c->n_layer, c->n_head, c->n_head_kv, c->head_dim, bits,
                                                               p->attn->block, p->n_ctx,
                                                               sl_sparse_max_selected(p->attn, p->n_ctx), dc, 16, &dcodes);
            if (dev < 0) return dev;
            out->codes = dcodes;
            out->work += dev - dcodes;
            out->host_work = codes + sel;
        } else {
            out->codes = codes;
            out->work += sel;
        }
        const int64_t full = row * c->n_layer * p->n_ctx;
        if (p->kv_file) {
            out->host_kv = p->cache_bytes > 0 ? p->cache_bytes : (int64_t)256 << 20;
            out->disk = full;
        } else if (p->gpu) {
            out->host_kv = full; /* the host tier: every layer, pinned */
        }
    }
    out->fast_total = out->weights + out->kv_fast + out->codes + out->work;
    return 0;
}

int64_t sl_mem_plan_max_ctx(const sl_model *m, const struct sl_mem_plan_params *p, int64_t fast_budget,
                            int64_t max_ctx) {
    /* fast_total grows with n_ctx, so bisect over multiples of 256 */
    int64_t lo = 0, hi = max_ctx / 256;
    struct sl_mem_plan_params q = *p;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        struct sl_mem_plan pl;
        q.n_ctx = mid * 256;
        if (q.n_batch > q.n_ctx) q.n_batch = (int32_t)q.n_ctx;
        if (sl_mem_plan_compute(m, &q, &pl) == 0 && pl.fast_total <= fast_budget) lo = mid;
        else hi = mid - 1;
    }
    return lo * 256;
}
