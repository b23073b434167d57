/* The backend seam: the coarse operations one transformer step needs, as a table of
 * function pointers. The engine (core/context.c) calls only these and never asks which
 * backend it has, only whether its memory is the host's (the sparse path and the KV store
 * read host memory for now); core/backend-registry.c creates one. Activations and the KV
 * cache live in the backend's memory (buf_alloc), activations as (n_tokens, width) row-major
 * f32; every op returns 0 or a negative SL_E* code. */
#ifndef SL_CORE_BACKEND_H
#define SL_CORE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/kv-cache.h"
#include "spotlight/gguf.h"
#include "spotlight/kv-store.h"
#include "spotlight/model.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sl_hash; /* core/hash.h */
struct sl_backend_sparse;

/* What a backend's sparse decode state holds (sparse_create). */
struct sl_backend_sparse_params {
    const struct sl_hash *hash; /* query and key functions; read during create only */
    sl_kv_store_t store;        /* K/V of every layer, borrowed: outlives the state */
    int32_t n_layer, n_head, n_head_kv, head_dim;
    int64_t n_ctx;              /* code positions */
    int64_t max_sel;            /* positions one KV head selects at most (sinks, window, budget) */
    int64_t n_sink, n_window;   /* always selected */
    int32_t block;              /* selection granularity (1: tokens) */
    int64_t cache_bytes;        /* block cache for fetched K/V in the backend's memory; 0: none */
    bool prefetch;              /* after a layer's fetch, warm its cache with the next layer's
                                   previous selection (needs the cache) */
};

struct sl_backend_sparse_stats {
    int64_t calls;                     /* sparse_decode calls */
    int64_t selected;                  /* positions attended, summed over calls and KV heads */
    int64_t rows, row_hits;            /* rows fetched; served by the block cache */
    int64_t bytes_in;                  /* K/V bytes moved into the backend's memory */
    int64_t resident_bytes;            /* codes, buffers, cache, hash weights */
    int64_t code_bytes;                /* of them, the codes */
};

struct sl_backend {
    const char *name;
    void *impl;
    /* The buffers the ops take are plain host memory (the CPU backend): the engine may read
     * and write them directly. false: device memory, reached only through the ops. */
    bool host_memory;

    /* ---- memory ---------------------------------------------------------------------------
     * Backend memory for activations and the KV cache, aligned for any element type; 0,
     * SL_ENOMEM or SL_EDEVICE. buf_free(NULL) is a no-op. upload/download copy between host
     * and backend memory; download returns once dst holds the result of every op before it. */
    int (*buf_alloc)(struct sl_backend *be, size_t bytes, void **out);
    void (*buf_free)(struct sl_backend *be, void *p);
    int (*upload)(struct sl_backend *be, void *dst, const void *src, size_t bytes);
    int (*download)(struct sl_backend *be, void *dst, const void *src, size_t bytes);
    /* Within the backend's memory, queued in order with the ops. */
    int (*copy)(struct sl_backend *be, void *dst, const void *src, size_t bytes);
    /* Makes a model's tensors usable by the ops that take them (a device copy of the weights,
     * made once); NULL: the ops read the model's mapped tensors directly. */
    int (*load_model)(struct sl_backend *be, const sl_model *m);

    /* ---- one transformer step ------------------------------------------------------------ */
    /* y (n, m) = x (n, k) . W^T for W of GGUF shape (k, m), any supported type. */
    int (*matmul)(struct sl_backend *be, const struct sl_gguf_tensor *w, const float *x,
                  int64_t n, float *y);
    /* Up to 4 weights of the same input width over the same x (q/k/v, gate/up): one pass. */
    int (*matmul_n)(struct sl_backend *be, int nw, const struct sl_gguf_tensor *const *w,
                    const float *x, int64_t n, float *const *y);
    /* Rows `ids` (host memory) of an embedding matrix (k, vocab) -> x (n, k). */
    int (*get_rows)(struct sl_backend *be, const struct sl_gguf_tensor *w, const int32_t *ids,
                    int64_t n, float *x);
    /* y (n, k) = x / rms(x) * w, per row; w an f32 tensor of k values. */
    int (*rmsnorm)(struct sl_backend *be, const float *x, const struct sl_gguf_tensor *w, int64_t n,
                   int64_t k, float eps, float *y);
    /* Rotary embedding in place on x (n, n_head*head_dim) for positions pos0.. */
    int (*rope)(struct sl_backend *be, float *x, int64_t n, int32_t n_head,
                const struct sl_model_config *cfg, int64_t pos0);
    /* x += y over n values (the residual). */
    int (*add)(struct sl_backend *be, float *x, const float *y, int64_t n);
    /* x (n, k) += b (k) broadcast; b an f32 tensor (biases). */
    int (*add_rows)(struct sl_backend *be, float *x, const struct sl_gguf_tensor *b, int64_t n, int64_t k);
    /* y = silu(g) * u, elementwise over n values. */
    int (*swiglu)(struct sl_backend *be, const float *g, const float *u, int64_t n, float *y);
    /* K/V rows k, v (n, n_head_kv*head_dim) f32 of positions pos.. into the cache's layer,
     * rounded to f16. The cache's memory is this backend's (buf_alloc). */
    int (*kv_write)(struct sl_backend *be, struct sl_kv_cache *kv, int32_t layer, int64_t pos, int64_t n,
                    const float *k, const float *v);
    /* n values of x rounded to f16 into host memory (what the KV store appends). */
    int (*export_f16)(struct sl_backend *be, const float *x, int64_t n, uint16_t *host_out);
    /* Causal attention of q (n, n_head*head_dim) at positions pos0..pos0+n-1 over the cache
     * positions [0, pos0+n) of `layer`, GQA mapping head h -> kv head h / (n_head/n_head_kv).
     * out: (n, n_head*head_dim). */
    int (*attention)(struct sl_backend *be, const struct sl_kv_cache *kv, int32_t layer,
                     const float *q, int64_t n, int64_t pos0, int32_t n_head, float *out);
    /* Optional (NULL: none): runs fn(ctx, ith, nth) on each of the backend's nth host threads
     * and returns when all are done, for host work the engine splits itself (sparse
     * selection over the stored codes). fn must give the same result for any nth. */
    void (*parallel)(struct sl_backend *be, void (*fn)(void *ctx, int ith, int nth), void *ctx);

    /* ---- sparse decode in the backend's memory (optional: NULL where memory is the host's) --
     * core/sparse-attn.c drives these when the backend's memory is not the host's: the key
     * codes stay resident in the backend's memory (a mirror of the host table, written by
     * sparse_codes), the full K/V of the sparse layers in a KV store, and one decode token's
     * attention runs without the host: hash the query, scan, top-k, fetch the selected rows
     * from the store, attend over them and the token's own row. */
    int (*sparse_create)(struct sl_backend *be, const struct sl_backend_sparse_params *p,
                         struct sl_backend_sparse **out);
    /* Codes of positions [pos0, pos0 + n) of `layer`, host memory laid out (n_head_kv, n, W),
     * into the resident table. */
    int (*sparse_codes)(struct sl_backend *be, struct sl_backend_sparse *s, int32_t layer, int64_t pos0,
                        int64_t n, const uint64_t *codes);
    /* One position's codes of every layer, host memory laid out (n_layer, n_head_kv, W) (the
     * dense layers' rows are ignored): what a decode token adds, in one transfer. */
    int (*sparse_codes_at)(struct sl_backend *be, struct sl_backend_sparse *s, int64_t pos, const uint64_t *codes);
    /* One token at position P of `layer` (codes of [0, P) resident, K/V of [0, P) in the store):
     * q (n_head * head_dim), k and v (n_head_kv * head_dim) its own rows, f32 in the backend's
     * memory; k_sel positions beyond the sinks and window (the budget); out (n_head * head_dim). */
    int (*sparse_decode)(struct sl_backend *be, struct sl_backend_sparse *s, int32_t layer, const float *q,
                         const float *k, const float *v, int64_t P, int64_t k_sel, float *out);
    int (*sparse_stats)(struct sl_backend *be, struct sl_backend_sparse *s, struct sl_backend_sparse_stats *out);
    void (*sparse_free)(struct sl_backend *be, struct sl_backend_sparse *s); /* NULL s: no-op */

    void (*free)(struct sl_backend *be);
};

/* Creates the backend a context asked for (core/backend-registry.c): the CPU one, or the CUDA
 * one on device `device` when gpu is set (SL_ENODEV when this build or machine has none). */
int sl_backend_create(bool gpu, int32_t device, int n_threads, struct sl_backend **out);

/* Tests only: makes sl_backend_create(gpu = true, ...) call fn instead (builds with and
 * without CUDA, before any device check), e.g. an emulated device on the CPU. NULL restores
 * the default. Not thread-safe; set it before creating contexts. */
void sl_backend_set_device_factory(int (*fn)(int32_t device, int n_threads, struct sl_backend **out));

/* Creates the CPU backend with n_threads (<= 0: one per physical core). */
int sl_backend_cpu_create(int n_threads, struct sl_backend **out);

#ifdef __cplusplus
}
#endif
#endif
