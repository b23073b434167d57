/* The KV cache as the engine sees it: append K/V rows of new positions per layer, and view a
 * contiguous range of one KV head's rows. This RAM implementation is the dense baseline; the
 * KV store (storage/) implements the same calls with host and file tiers.
 * Layout: f16, [layer][kv_head][position][head_dim], so one head's keys are contiguous for
 * the attention scan. */
#ifndef SL_CORE_KV_CACHE_H
#define SL_CORE_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

/* Where a cache's memory comes from: a backend's buffers (device memory for a GPU backend;
 * then only that backend's ops touch k and v), or malloc when NULL. */
struct sl_kv_alloc {
    int (*alloc)(void *user, size_t bytes, void **out); /* 0 or a negative SL_E* code */
    void (*release)(void *user, void *p);
    void *user;
};

struct sl_kv_cache {
    int32_t n_layer, n_head_kv, head_dim;
    int64_t n_ctx;       /* capacity in positions */
    uint16_t *k, *v;     /* (n_layer, n_head_kv, n_ctx, head_dim) f16 */
    struct sl_kv_alloc mem; /* how k and v were allocated (alloc NULL: malloc) */
};

/* Allocates capacity for n_ctx positions, from `a` (NULL: malloc). 0 or SL_ENOMEM / SL_EINVAL
 * / the allocator's error. */
int sl_kv_cache_init(struct sl_kv_cache *kv, int32_t n_layer, int32_t n_head_kv,
                     int32_t head_dim, int64_t n_ctx);
int sl_kv_cache_init_in(struct sl_kv_cache *kv, int32_t n_layer, int32_t n_head_kv, int32_t head_dim, int64_t n_ctx,
                        const struct sl_kv_alloc *a);
void sl_kv_cache_free(struct sl_kv_cache *kv); /* a zeroed cache is fine */

/* Bytes of K+V for n positions. */
int64_t sl_kv_cache_bytes(const struct sl_kv_cache *kv, int64_t n);

/* Stores n positions starting at pos for one layer; k, v are (n, n_head_kv*head_dim) f32
 * and are rounded to f16. Positions must lie in [0, n_ctx). Host memory only (a device
 * cache is written by its backend's kv_write). */
int sl_kv_cache_write(struct sl_kv_cache *kv, int32_t layer, int64_t pos, int64_t n,
                      const float *k, const float *v);

/* Pointers to rows [p0, ...) of one head's K and V (valid until the cache is freed). */
const uint16_t *sl_kv_cache_k(const struct sl_kv_cache *kv, int32_t layer, int32_t head, int64_t p0);
const uint16_t *sl_kv_cache_v(const struct sl_kv_cache *kv, int32_t layer, int32_t head, int64_t p0);

#endif
