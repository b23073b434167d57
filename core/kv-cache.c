/* RAM KV cache (f16). */
#include "core/kv-cache.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "spotlight/quant.h"

static int malloc_alloc(void *user, size_t bytes, void **out) {
    (void)user;
    *out = malloc(bytes);
    return *out ? 0 : SL_ENOMEM;
}

static void malloc_release(void *user, void *p) {
    (void)user;
    free(p);
}

int sl_kv_cache_init(struct sl_kv_cache *kv, int32_t n_layer, int32_t n_head_kv,
                     int32_t head_dim, int64_t n_ctx) {
    return sl_kv_cache_init_in(kv, n_layer, n_head_kv, head_dim, n_ctx, NULL);
}

int sl_kv_cache_init_in(struct sl_kv_cache *kv, int32_t n_layer, int32_t n_head_kv, int32_t head_dim, int64_t n_ctx,
                        const struct sl_kv_alloc *a) {
    memset(kv, 0, sizeof *kv);
    kv->mem = a ? *a : (struct sl_kv_alloc){malloc_alloc, malloc_release, NULL};
    if (n_layer <= 0 || n_head_kv <= 0 || head_dim <= 0 || n_ctx <= 0)
        return sl_fail(SL_EINVAL, "bad KV cache shape");
    uint64_t elems;
    if (sl_mul_overflow_u64((uint64_t)n_layer * (uint64_t)n_head_kv * (uint64_t)head_dim,
                            (uint64_t)n_ctx, &elems) || elems > SIZE_MAX / 2)
        return sl_fail(SL_ENOMEM, "KV cache of %" PRId64 " positions is too large", n_ctx);
    void *k = NULL, *v = NULL;
    int rc = kv->mem.alloc(kv->mem.user, elems * 2, &k);
    if (!rc) rc = kv->mem.alloc(kv->mem.user, elems * 2, &v);
    kv->k = k;
    kv->v = v;
    if (rc) {
        sl_kv_cache_free(kv);
        return sl_fail(rc, "cannot allocate a KV cache of %" PRIu64 " MB for %" PRId64 " positions",
                       elems * 4 >> 20, n_ctx);
    }
    kv->n_layer = n_layer;
    kv->n_head_kv = n_head_kv;
    kv->head_dim = head_dim;
    kv->n_ctx = n_ctx;
    return 0;
}

void sl_kv_cache_free(struct sl_kv_cache *kv) {
    if (kv->mem.release) {
        if (kv->k) kv->mem.release(kv->mem.user, kv->k);
        if (kv->v) kv->mem.release(kv->mem.user, kv->v);
    } else {
        SL_ASSERT(!kv->k && !kv->v);
    }
    memset(kv, 0, sizeof *kv);
}

int64_t sl_kv_cache_bytes(const struct sl_kv_cache *kv, int64_t n) {
    return 2 * n * kv->n_layer * kv->n_head_kv * kv->head_dim * 2;
}

static size_t row_index(const struct sl_kv_cache *kv, int32_t layer, int32_t head, int64_t pos) {
    return (((size_t)layer * (size_t)kv->n_head_kv + (size_t)head) * (size_t)kv->n_ctx + (size_t)pos) *
           (size_t)kv->head_dim;
}

int sl_kv_cache_write(struct sl_kv_cache *kv, int32_t layer, int64_t pos, int64_t n,
                      const float *k, const float *v) {
    if (layer < 0 || layer >= kv->n_layer || pos < 0 || n < 0 || pos + n > kv->n_ctx)
        return sl_fail(SL_EBOUNDS, "KV write of positions [%" PRId64 ", %" PRId64 ") outside the "
                       "cache of %" PRId64, pos, pos + n, kv->n_ctx);
    int64_t width = (int64_t)kv->n_head_kv * kv->head_dim;
    for (int64_t t = 0; t < n; t++)
        for (int32_t h = 0; h < kv->n_head_kv; h++) {
            uint16_t *kd = kv->k + row_index(kv, layer, h, pos + t);
            uint16_t *vd = kv->v + row_index(kv, layer, h, pos + t);
            const float *ks = k + t * width + h * kv->head_dim, *vs = v + t * width + h * kv->head_dim;
            for (int32_t d = 0; d < kv->head_dim; d++) {
                kd[d] = sl_f32_to_f16(ks[d]);
                vd[d] = sl_f32_to_f16(vs[d]);
            }
        }
    return 0;
}

const uint16_t *sl_kv_cache_k(const struct sl_kv_cache *kv, int32_t layer, int32_t head, int64_t p0) {
    return kv->k + row_index(kv, layer, head, p0);
}

const uint16_t *sl_kv_cache_v(const struct sl_kv_cache *kv, int32_t layer, int32_t head, int64_t p0) {
    return kv->v + row_index(kv, layer, head, p0);
}
