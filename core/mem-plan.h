/* What a context needs in each memory tier, worked out from the model's tensors and the
 * attention settings before anything is allocated: `--vram-mb` checks a GPU run against it
 * and reports the longest context that fits, and the tuner sweeps it. Pure arithmetic over
 * the same lists the engine allocates from (the weights the GPU backend uploads, the buffers
 * core/context.c makes, the codes and selection buffers of core/sparse-attn.c). Not
 * installed. */
#ifndef SL_CORE_MEM_PLAN_H
#define SL_CORE_MEM_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "spotlight/context.h"
#include "spotlight/gguf.h"
#include "spotlight/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the forward pass reads a tensor. */
enum sl_weight_use {
    SL_WEIGHT_MATRIX = 1,    /* multiplied: q/k/v/o, gate/up/down, the LM head */
    SL_WEIGHT_VECTOR = 2,    /* f32 norms and biases */
    SL_WEIGHT_EMBEDDING = 3, /* rows looked up by token id */
};

/* Calls fn once per (tensor, use) the forward pass reads, layer by layer, then the embedding,
 * the output norm and the LM head (a tied head is the embedding tensor again, as a matrix).
 * Stops at and returns fn's first non-zero return; 0 otherwise. */
int sl_model_for_each_weight(const sl_model *m,
                             int (*fn)(void *user, const struct sl_gguf_tensor *t, enum sl_weight_use use),
                             void *user);

struct sl_mem_plan_params {
    bool gpu;       /* the CUDA backend: weights, activations and the fast K/V in VRAM */
    int64_t n_ctx;  /* positions */
    int32_t n_batch; /* prefill chunk */
    /* attention (NULL or dense: every layer's K/V in the fast tier); sparse modes keep only
     * the dense layers' K/V there, the codes resident, the full K/V in host RAM or a file */
    const struct sl_attn_params *attn;
    bool kv_file;        /* sparse: the full K/V in a store file (else host RAM) */
    int64_t cache_bytes; /* file tier: its RAM cache (0: the store's default, 256 MiB) */
    int64_t device_cache_bytes; /* gpu, sparse: the VRAM block cache (0: 64 MiB; < 0: none) */
};

/* Bytes per tier. "fast" is VRAM with gpu, else host RAM. */
struct sl_mem_plan {
    int64_t weights;     /* fast tier: gpu: bf16 matrices, f32 vectors, the embedding as stored;
                            cpu: the mapped file's tensor bytes (page cache) */
    int64_t kv_fast;     /* f16 K/V in the fast tier: every layer (dense, or sparse on the CPU
                            without a file), else the dense layers */
    int64_t codes;       /* sparse: resident key codes of the sparse layers */
    int64_t work;        /* activations of one chunk, logits, selection buffers */
    int64_t fast_total;  /* the four above */
    int64_t host_kv;     /* gpu, sparse: the full K/V in host RAM; kv_file: the store's cache */
    int64_t host_work;   /* gpu, sparse: the host's code table and selection buffers (prefill
                            chunks select there) */
    int64_t disk;        /* sparse with kv_file: the store file */
};

/* 0, or SL_EINVAL for a bad n_ctx or n_batch, or sizes that overflow (with a detail). */
int sl_mem_plan_compute(const sl_model *m, const struct sl_mem_plan_params *p, struct sl_mem_plan *out);

/* The longest context (a multiple of 256, at most max_ctx) whose plan keeps fast_total within
 * fast_budget bytes; 0 when not even 256 positions fit (the weights alone may not). */
int64_t sl_mem_plan_max_ctx(const sl_model *m, const struct sl_mem_plan_params *p, int64_t fast_budget,
                            int64_t max_ctx);

#ifdef __cplusplus
}
#endif
#endif
