/* The backend seam: the coarse operations one transformer step needs, as a table of
 * function pointers. The engine (core/forward.c) calls only these and never asks which
 * backend it has; core/backend-registry.c creates one. Activations are (n_tokens, width)
 * row-major f32 in the backend's memory; every op returns 0 or a negative SL_E* code. */
#ifndef SL_CORE_BACKEND_H
#define SL_CORE_BACKEND_H

#include <stdint.h>

#include "core/kv-cache.h"
#include "spotlight/gguf.h"
#include "spotlight/model.h"

struct sl_backend {
    const char *name;
    void *impl;

    /* y (n, m) = x (n, k) . W^T for W of GGUF shape (k, m), any supported type. */
    int (*matmul)(struct sl_backend *be, const struct sl_gguf_tensor *w, const float *x,
                  int64_t n, float *y);
    /* Up to 4 weights of the same input width over the same x (q/k/v, gate/up): one pass. */
    int (*matmul_n)(struct sl_backend *be, int nw, const struct sl_gguf_tensor *const *w,
                    const float *x, int64_t n, float *const *y);
    /* Rows `ids` of an embedding matrix (k, vocab) -> x (n, k). */
    int (*get_rows)(struct sl_backend *be, const struct sl_gguf_tensor *w, const int32_t *ids,
                    int64_t n, float *x);
    /* y (n, k) = x / rms(x) * w, per row. */
    int (*rmsnorm)(struct sl_backend *be, const float *x, const float *w, int64_t n, int64_t k,
                   float eps, float *y);
    /* Rotary embedding in place on x (n, n_head*head_dim) for positions pos0.. */
    int (*rope)(struct sl_backend *be, float *x, int64_t n, int32_t n_head,
                const struct sl_model_config *cfg, int64_t pos0);
    /* x (n, k) += b (k) broadcast (biases); or x += y when b_rows == n (residual). */
    int (*add)(struct sl_backend *be, float *x, const float *b, int64_t n, int64_t k, int64_t b_rows);
    /* y = silu(g) * u, elementwise over n values. */
    int (*swiglu)(struct sl_backend *be, const float *g, const float *u, int64_t n, float *y);
    /* Causal attention of q (n, n_head*head_dim) at positions pos0..pos0+n-1 over the cache
     * positions [0, pos0+n) of `layer`, GQA mapping head h -> kv head h / (n_head/n_head_kv).
     * out: (n, n_head*head_dim). */
    int (*attention)(struct sl_backend *be, const struct sl_kv_cache *kv, int32_t layer,
                     const float *q, int64_t n, int64_t pos0, int32_t n_head, float *out);
    void (*free)(struct sl_backend *be);
};

/* Creates the backend this build and machine run on (core/backend-registry.c). */
int sl_backend_create(int n_threads, struct sl_backend **out);

/* Creates the CPU backend with n_threads (<= 0: one per physical core). */
int sl_backend_cpu_create(int n_threads, struct sl_backend **out);

#endif
