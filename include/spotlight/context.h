/* A context: one model running on one backend with its KV cache, evaluating tokens at the
 * next positions and exposing the logits. Dense attention over the whole cache; the sparse
 * (Spotlight) path plugs in behind the same calls.
 *
 *   struct sl_context_params p = sl_context_default_params();
 *   p.n_ctx = 4096;
 *   sl_context *c; sl_context_create(model, &p, &c);
 *   sl_context_eval(c, prompt, n_prompt, false);   // prefill; logits of the last token
 *   ... sample from sl_context_logits(c) ..., sl_context_eval(c, &tok, 1, false) ... */
#ifndef SPOTLIGHT_CONTEXT_H
#define SPOTLIGHT_CONTEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "spotlight/kv-store.h"
#include "spotlight/model.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sl_context_params {
    int64_t n_ctx;     /* KV capacity in tokens (0: the model's trained context) */
    int32_t n_threads; /* <= 0: one per physical core */
    int32_t n_batch;   /* prefill chunk size in tokens */
    /* K/V off RAM: a KV store file (include/spotlight/kv-store.h, file tier, created; see
     * kv_overwrite, kv_resume) holds every position; only the dense layers keep theirs in RAM too, and the
     * store's cache lives within kv_ram_budget bytes (0: 256 MiB). Needs a sparse attention
     * mode other than topk-exact, set before the first eval; prefill then attends sparsely
     * (sparse_prefill is implied). NULL: K/V in RAM. */
    const char *kv_path;
    int64_t kv_ram_budget;
    /* With kv_path: every layer's K/V stays in RAM as well and attention reads it there; the
     * store file is a write-through copy that a later context resumes (into RAM again, or
     * with K/V read from the file). Any attention mode; nothing implied. */
    bool kv_in_ram;
    /* With kv_path: reopen the store a previous context left (at its last commit point)
     * instead of replacing it, and continue after its positions: sl_context_set_attention
     * reads the dense layers' K/V (every layer's with kv_in_ram) back into RAM and re-hashes
     * every stored key of the sparse layers (the same
     * codes: keys are hashed as stored, in f16). The model and the attention parameters
     * should be the ones the store was written with; the model is checked. */
    bool kv_resume;
    /* With kv_resume: > 0 keeps only the first kv_resume_keep stored positions and drops the
     * rest from the store (to go on from an earlier point); 0 keeps them all. A resume that
     * would start from no stored positions is an error (SL_EINVAL). */
    int64_t kv_resume_keep;
    /* Without kv_resume: replace a store already at kv_path; without it an existing store is
     * refused (-EEXIST). Nothing but a store or an empty file is ever replaced. */
    bool kv_overwrite;
    /* With kv_resume: a store whose newer header slot (or its data) is damaged is refused
     * unless this is set; then the damaged state is restored when a one-bit repair checks out,
     * else the older state is used and the damaged one overwritten (kv-store.h: recover). */
    bool kv_recover;
    /* Tests only: fault injection for the store's I/O (kv-store.h); NULL in production. */
    struct sl_kv_io_fault *kv_fault;
    /* The CUDA backend on device gpu_device instead of the CPU (SL_ENODEV when the build or
     * the machine has none): weights, activations and the dense layers' K/V in device memory.
     * Dense attention keeps every layer's K/V there. Spotlight and simhash keep only the key
     * codes there: the full K/V goes to a KV store, the file kv_path or, without one, pinned
     * host memory; decode tokens select and fetch on the device, prefill chunks attend
     * sparsely on the host (sparse_prefill implied). topk-exact, rerank and kv_in_ram are
     * CPU-only. */
    bool gpu;
    int32_t gpu_device;
    /* GPU sparse attention: device memory for a block cache of fetched K/V (0: 64 MiB;
     * negative: no cache). */
    int64_t kv_device_cache;
};

struct sl_context_params sl_context_default_params(void);

typedef struct sl_context sl_context;

/* The model must outlive the context. 0 or SL_ENOMEM / SL_EUNSUPPORTED / SL_EINVAL. */
int sl_context_create(const sl_model *m, const struct sl_context_params *p, sl_context **out);
/* With a store (kv_path): its commit points. Every prefill chunk (n_batch tokens) is durable
 * when sl_context_eval returns it committed (its store sync: data, then header, each
 * fdatasync'ed); decode tokens are synced at least once a second, and by sl_context_sync and
 * sl_context_close. A failed sync fails the eval that needed it. */
int sl_context_sync(sl_context *c);
/* Syncs and closes the store (then saves the key codes beside it, best effort) and returns
 * the sync's error: the one way to learn that the last positions did not reach the disk.
 * The context stays valid only for sl_context_free. No store: 0. */
int sl_context_close(sl_context *c);
void sl_context_free(sl_context *c); /* NULL is a no-op; closes first when not closed (errors
                                        are then only logged) */

/* Evaluates n tokens at positions n_past .. n_past+n-1 (in chunks of n_batch). With
 * all_logits the logits of every token are kept ((n, n_vocab), row-major), else only the
 * last token's. SL_EBOUNDS if the context would overflow (nothing is evaluated then);
 * SL_EINVAL for token ids outside the vocabulary. */
int sl_context_eval(sl_context *c, const int32_t *tokens, int64_t n, bool all_logits);

/* Observes what the Spotlight hash sees: called for every layer of every evaluated chunk with
 * the post-RoPE queries q (n, n_head, head_dim) and keys k (n, n_head_kv, head_dim) of
 * positions pos0 .. pos0+n-1, before attention. The arrays are valid during the call only.
 * A non-zero return aborts the eval with that value. fn NULL removes the tap. */
typedef int (*sl_qk_tap_fn)(int32_t layer, int64_t pos0, int64_t n, const float *q,
                            const float *k, void *user);
void sl_context_set_qk_tap(sl_context *c, sl_qk_tap_fn fn, void *user);

/* ---- sparse attention (Spotlight) ---------------------------------------------------------
 * With a mode other than dense, every evaluated key is also hashed into a code resident in RAM
 * (one per position, layer and KV head), and every single-token eval (decode) attends, in
 * layers >= dense_layers, to itself and to the earlier positions its KV head selects: the top
 * max(budget * n_past, min_tokens) by score, plus n_sink first positions and the n_window
 * most recent, gathered from the KV cache. Multi-token chunks (prefill) stay dense unless
 * sparse_prefill: then a chunk attends causally to itself and to the earlier positions
 * selected for the chunk as a whole (each key scored by the sum of its scores against every
 * query row of the chunk and of the group), which lets contexts far beyond what dense
 * prefill affords be ingested. Where the selection would cover every earlier position, the
 * layer simply runs dense.
 *   spotlight   score = XNOR-popcount of trained hash codes summed over the GQA group
 *               (hash_path: a file from `spotlight train-hash` for this model)
 *   simhash     the same with SimHash codes of `bits` bits (seed 0)
 *   topk-exact  score = the group's summed softmax attention over all keys (the upper bound
 *               of any selection; costs a dense pass)
 * Must be set before the first eval (SL_EINVAL after; the codes must cover every key). */
enum sl_attn_mode {
    SL_ATTN_DENSE = 0,
    SL_ATTN_SPOTLIGHT = 1,
    SL_ATTN_SIMHASH = 2,
    SL_ATTN_TOPK_EXACT = 3,
};

struct sl_attn_params {
    enum sl_attn_mode mode;
    float budget;           /* fraction of the context selected (0, 1] */
    int64_t min_tokens;     /* floor of the selection */
    int32_t n_sink;         /* first positions always attended */
    int32_t n_window;       /* most recent positions always attended */
    int32_t dense_layers;   /* layers 0 .. dense_layers-1 stay dense */
    int32_t bits;           /* simhash code bits (a multiple of 32) */
    bool sparse_prefill;    /* prefill chunks attend sparsely too */
    int32_t rerank;         /* 1: select by the hash alone (the paper). R > 1: the hash picks R
                               times the budget as candidates, their K rows are fetched, and the
                               budget is kept by the exact attention over the candidates (token
                               level only; costs R times the fetches) */
    bool prefetch;          /* with a KV store: while a layer computes, read what the next layer
                               selected at the previous decode step into the store's cache. Off by
                               default: with the K/V in the page cache or on a fast disk it costs
                               more (a second gather) than it saves; for slow storage */
    int32_t block;          /* selection granularity: 1 = tokens; a power of two = blocks of that
                               many positions, scored by their best position (the KV store reads
                               16-position blocks: block 16 fetches no unused rows) */
    const char *hash_path;  /* spotlight: the hash file (its model fingerprint must match) */
};

/* Spotlight defaults: budget 2%, at least 64 tokens, 4 sinks, 64 recent, 2 dense layers, 64 bits,
 * token-level selection. */
struct sl_attn_params sl_attn_default_params(enum sl_attn_mode mode);
/* Before the first eval; or later, to compare modes on one prefill, when every position's K/V
 * is in host RAM (no kv_path, the CPU backend) and the new mode has no sparse prefill: the keys
 * evaluated so far are hashed again from the cache (the codes hashing at eval gives). What
 * follows is then exactly what a context running the new mode from the start computes, as
 * long as the positions kept were evaluated as it would have: a prefill (dense in every mode
 * without sparse prefill), not decode tokens of another sparse mode (sl_context_truncate them
 * first). Statistics start over. On failure the context is left attending densely. */
int sl_context_set_attention(sl_context *c, const struct sl_attn_params *p);

/* Retrieval statistics since the context was created (zeros in dense mode), for decode
 * (single tokens) and prefill chunks apart. */
struct sl_attn_stats {
    int64_t sparse_calls;     /* decode (token, layer) attention calls that were sparse */
    int64_t selected;         /* positions attended, summed over those calls and KV heads */
    int64_t candidates;       /* positions available, summed likewise */
    double select_s;          /* seconds in query hashing, scan and top-k */
    double gather_s;          /* seconds gathering the selected K/V */
    int64_t prefetches;       /* KV store: next-layer prefetches started during decode */
    int64_t prefill_calls;    /* the same for sparse prefill (chunk, layer) calls */
    int64_t prefill_selected, prefill_candidates;
    double prefill_select_s, prefill_gather_s;
    int64_t code_bytes;       /* bytes of resident key codes */
    /* with kv_path: the store's reads since creation */
    int64_t kv_bytes_read, kv_cache_hits, kv_cache_misses, kv_ram_bytes, kv_disk_bytes;
    /* on a GPU: rows its decode fetched, those its VRAM block cache served, K/V bytes moved in */
    int64_t dev_rows, dev_row_hits, dev_bytes_in;
    /* a resumed store (kv_resume): the positions it brought, whether their key codes were read
     * from the code file beside it (else its keys were read back and hashed again), and the
     * seconds reopening took */
    int64_t resume_positions;
    bool resume_codes_read;
    double resume_s;
};
void sl_context_attn_stats(const sl_context *c, struct sl_attn_stats *out);

/* Logits of the last eval: (n_rows, n_vocab). Valid until the next eval. */
const float *sl_context_logits(const sl_context *c);
int64_t sl_context_logits_rows(const sl_context *c);

int64_t sl_context_n_past(const sl_context *c);
int64_t sl_context_n_ctx(const sl_context *c);
/* Token ids of positions [p0, p0 + n) as committed to the KV store (kv_path only; a resumed
 * context's earlier tokens): 0, SL_EINVAL (no store, or out of range), an I/O error. */
int sl_context_stored_tokens(const sl_context *c, int64_t p0, int64_t n, int32_t *out);

/* Forgets positions >= n_past (to rewind or restart). */
int sl_context_truncate(sl_context *c, int64_t n_past);

/* Bytes the context holds in host memory (KV cache + activations). */
int64_t sl_context_host_bytes(const sl_context *c);
/* Bytes it holds in device memory (a GPU backend's KV cache and activations; 0 on the CPU),
 * not counting the model's weights. */
int64_t sl_context_device_bytes(const sl_context *c);
/* "cpu" or "cuda". */
const char *sl_context_backend_name(const sl_context *c);

#ifdef __cplusplus
}
#endif
#endif
