/* Spotlight retrieval on the GPU: the device twin of the CPU selection path (core/hash.h
 * encode -> cpu/hamming.h scan -> cpu/topk.h select), for all KV heads of a layer at once.
 *
 *   codes   gpu/gpu-codes.cu   the key-code table in VRAM (layer, KV head) -> [capacity, W]
 *   hash    gpu/gpu-hash.cu    hash weights in VRAM; encodes post-RoPE queries / keys
 *   scan    gpu/gpu-scan.cu    XNOR-popcount scores of every stored key, uint16
 *   top-k   gpu/gpu-topk.cu    histogram top-k with sinks, window, token or block level
 *   layer   gpu/gpu-retrieve.cu  scan + top-k of one layer, the histogram fused into the scan
 *   sizes   gpu/retrieval-plan.c  pure host arithmetic, built with or without CUDA
 *
 * Results equal the CPU's exactly: scores bit for bit, selections position for position (the
 * decision logic is gpu/retrieval-logic.h, which a CPU test runs too); codes equal except for
 * bits whose pre-sign value is within rounding of 0 (the GPU sums in another order).
 *
 * Plain C (no CUDA headers; a stream is a cudaStream_t passed as void *, NULL for the legacy
 * default stream). Every function returns 0 (or a count) or a negative SL_E* with
 * sl_error_detail() set: SL_EINVAL for bad arguments, SL_ENOMEM / SL_EDEVICE for device
 * allocation or runtime failures (SL_CUDA_CHECK); none exits. Functions taking a stream queue
 * work and return after the launch: 0 says the arguments were valid and the launches
 * succeeded, and a fault while a kernel runs is reported by the next synchronising call.
 * Device pointers (`_dev`) must stay valid until the queued work completes. Handles are not
 * thread-safe: one stream (or ordered streams) per handle. The sizes below (plan and
 * workspace bytes, max counts) are in gpu/retrieval-plan.c and work in every build; the rest
 * exists only when the library is built with CUDA. Not installed. */
#ifndef SL_GPU_RETRIEVAL_H
#define SL_GPU_RETRIEVAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sl_hash; /* core/hash.h */

/* ---- sizes (host only, every build) ---------------------------------------------------- */

/* Bytes of key codes for n_tokens positions of every (layer, KV head) at `bits` bits per code
 * (W = ceil(bits / 64) words): n_layer * n_head_kv * n_tokens * 8 W. For planning VRAM (the
 * table itself rounds its capacity up to a multiple of 8 positions). SL_EINVAL for
 * non-positive shapes, negative n_tokens or a product past INT64_MAX. */
int64_t sl_gpu_codes_plan_bytes(int32_t n_layer, int32_t n_head_kv, int32_t bits, int64_t n_tokens);

/* Selection parameters: the fields and meaning of struct sl_topk_params (cpu/topk.h); gpu/
 * does not include cpu/, so the struct is repeated. */
struct sl_gpu_topk_params {
    int64_t k;        /* positions (token level) or ceil(k / block) blocks beyond the forced ones */
    int64_t n_sink;   /* first positions always selected */
    int64_t n_window; /* last positions always selected */
    int32_t block;    /* 1 = token level; else a power of two */
};

/* Device workspace bytes sl_gpu_topk_select needs for n positions per head, scores up to
 * max_score and n_heads heads (histograms, per-tile counts, block maxima); 0 when the sizes
 * are invalid (as sl_gpu_topk_select would say). A workspace serves every call with sizes no
 * larger. */
size_t sl_gpu_topk_workspace_bytes(int64_t n, int32_t max_score, int32_t block, int32_t n_heads);

/* min(n, n_sink + n_window + k rounded up to whole blocks): sl_topk_max_count. The least row
 * stride (out_ld) of the positions sl_gpu_topk_select writes. */
int64_t sl_gpu_topk_max_count(int64_t n, const struct sl_gpu_topk_params *p);

/* Score row stride the layer call uses: n rounded up to 8 (16-byte rows). */
int64_t sl_gpu_scores_ld(int64_t n);

/* Device workspace of sl_gpu_retrieve_layer: the scores (n_heads, sl_gpu_scores_ld(n)) and a
 * top-k workspace for max_score G * W * 64. 0 when invalid. */
size_t sl_gpu_retrieve_workspace_bytes(int64_t n, int32_t G, int32_t W, int32_t block, int32_t n_heads);

/* ---- the key-code table ------------------------------------------------------------------ */

/* Codes of every (layer, KV head) in one device allocation, head-major:
 *   codes[((layer * n_head_kv + head) * capacity + j) * W + w]   j = position
 * so one (layer, head) is [capacity, W] contiguous: the CPU table's "keys k[j*W + w]"
 * (cpu/hamming.h), bit layout as core/hash.h. capacity is rounded up to a multiple of 8 (each
 * head's codes start 64-byte aligned). The table keeps no length: the caller knows how many
 * positions it wrote. */
typedef struct sl_gpu_codes sl_gpu_codes;

/* Allocates the table (cudaMalloc, contents undefined). 1 <= W <= 1023 (a score must fit
 * uint16 even for G = 1), capacity >= 1. SL_EINVAL,
 * SL_ENOMEM (the device is out of memory), SL_EDEVICE. Free with sl_gpu_codes_free. */
int sl_gpu_codes_create(int32_t n_layer, int32_t n_head_kv, int32_t W, int64_t capacity, sl_gpu_codes **out);
void sl_gpu_codes_free(sl_gpu_codes *t); /* NULL is a no-op; call with no work in flight */

size_t sl_gpu_codes_bytes(const sl_gpu_codes *t);
int64_t sl_gpu_codes_capacity(const sl_gpu_codes *t); /* rounded, as allocated */
int32_t sl_gpu_codes_words(const sl_gpu_codes *t);
int32_t sl_gpu_codes_layers(const sl_gpu_codes *t);
int32_t sl_gpu_codes_heads(const sl_gpu_codes *t); /* KV heads per layer */

/* Device pointer of (layer, head)'s position 0; NULL for indices out of range. Heads of a
 * layer are sl_gpu_codes_head_stride(t) = capacity * W words apart. */
uint64_t *sl_gpu_codes_head(const sl_gpu_codes *t, int32_t layer, int32_t head);
int64_t sl_gpu_codes_head_stride(const sl_gpu_codes *t);

/* Copies n codes per KV head from host memory, laid out (n_head_kv, n, W) (head h's codes
 * contiguous, as sl_hash_encode writes one head's), into positions [pos0, pos0 + n) of every
 * head of `layer`. host_codes should be pinned for the copy to be asynchronous; it must stay
 * unchanged until the copy completes. SL_EINVAL (indices, pos0 + n > capacity, NULL).
 * n = 0 does nothing. */
int sl_gpu_codes_upload(sl_gpu_codes *t, int32_t layer, int64_t pos0, int64_t n, const uint64_t *host_codes,
                        void *stream);

/* Copies positions [pos0, pos0 + n) of every head of `layer` back into host memory laid out
 * as sl_gpu_codes_upload reads it. Synchronous on the stream (returns with the data there). */
int sl_gpu_codes_download(const sl_gpu_codes *t, int32_t layer, int64_t pos0, int64_t n, uint64_t *host_codes,
                          void *stream);

/* ---- hash weights and encoding ------------------------------------------------------------ */

typedef struct sl_gpu_hash sl_gpu_hash;

struct sl_gpu_hash_params {
    /* Vectors per cuBLAS slice (1..2^24); the handle keeps scratch for this many vectors of
     * every head: max_batch x max(n_head_q, n_head_kv) x (2 d + max(d, bits)) floats.
     * Default 1024. */
    int64_t max_batch;
    /* Encodes of n >= gemm_min_n vectors run through cuBLAS sgemm (strided-batched over the
     * heads, plus elementwise kernels); fewer run the fused kernel (one CTA per (vector, head),
     * weights read through L1/L2). Default 16; 0 forces cuBLAS, INT64_MAX the fused kernel. */
    int64_t gemm_min_n;
};

struct sl_gpu_hash_params sl_gpu_hash_default_params(void);

/* Copies every layer's key and query functions of h to the device (file order: per layer the
 * n_head_kv key functions, then the n_head_q query functions; each W1, b1, W2, b2, P), makes
 * a cuBLAS handle and the scratch. h may be freed afterwards. p NULL: defaults. SL_EINVAL,
 * SL_ENOMEM, SL_EDEVICE. Free with sl_gpu_hash_free. */
int sl_gpu_hash_upload(const struct sl_hash *h, const struct sl_gpu_hash_params *p, sl_gpu_hash **out);
void sl_gpu_hash_free(sl_gpu_hash *gh); /* NULL is a no-op; call with no work in flight */

/* Codes of n vectors for every head of `role` (SL_HASH_KEY: n_head_kv heads, SL_HASH_QUERY:
 * n_head_q) in `layer`:
 *   x_dev      (n, n_heads * d) f32 row-major, post-RoPE: vector j's head h at x[j*n_heads*d + h*d]
 *   codes_dev  head h, vector j at codes_dev[h * code_head_stride + j * W + w]; W words per
 *              code, bits >= b zero. code_head_stride >= n * W (words), e.g. n * W for a
 *              dense (n_heads, n, W) buffer, or sl_gpu_codes_head_stride for a table.
 * Per head: r = SiLU(W1 x + b1) + x, h = W2 r + b2 + r (MLP), y = P h (PROJ), bit i = y[i] > 0.
 * Which path runs: see gemm_min_n. n = 0 does nothing. Not thread-safe (scratch, handle). */
int sl_gpu_hash_encode(sl_gpu_hash *gh, int role, int32_t layer, const float *x_dev, int64_t n, uint64_t *codes_dev,
                       int64_t code_head_stride, void *stream);

/* Encodes n keys (x_dev as above, n_head_kv heads) straight into positions [pos0, pos0 + n) of
 * `layer` in the table. SL_EINVAL when the shapes disagree or pos0 + n > capacity. */
int sl_gpu_codes_encode_keys(sl_gpu_codes *t, sl_gpu_hash *gh, int32_t layer, int64_t pos0, const float *x_dev,
                             int64_t n, void *stream);

/* ---- scan -------------------------------------------------------------------------------- */

/* scores_dev[j] = sum over g < G of (64 W - popcount(q_g XOR k_j)) for j < n: exactly
 * sl_hamming_scan. q_dev (G, W), k_dev (n, W), scores_dev (n) uint16; G >= 1, W >= 1,
 * G*W*64 <= 65535. No alignment needed (aligned pointers take 128-bit loads). */
int sl_gpu_hamming_scan(const uint64_t *q_dev, int32_t G, const uint64_t *k_dev, int64_t n, int32_t W,
                        uint16_t *scores_dev, void *stream);

/* The same for n_heads KV heads in one launch (grid: key tiles x heads): head h scans
 * k_dev + h * k_head_stride (words) with the query codes q_dev rows h*G .. h*G + G - 1 (q_dev
 * is (n_heads * G, W): the query heads in model order) into scores_dev + h * scores_ld.
 * k_head_stride >= n * W, scores_ld >= n. */
int sl_gpu_hamming_scan_heads(const uint64_t *q_dev, int32_t G, const uint64_t *k_dev, int64_t k_head_stride,
                              int32_t n_heads, int64_t n, int32_t W, uint16_t *scores_dev, int64_t scores_ld,
                              void *stream);

/* ---- top-k ------------------------------------------------------------------------------- */

/* For each of n_heads heads, exactly what sl_topk_select (cpu/topk.h) returns for
 * scores_dev + h * scores_ld (n scores <= max_score): the forced sinks and window, plus the k
 * best non-forced positions (token level, ties toward later positions) or the ceil(k/block)
 * best blocks by maximum (block level, all blocks eligible, ties toward later blocks), as
 * unique ascending int32 positions into out_dev + h * out_ld, and the count into
 * counts_dev[h]. A head with a candidate score above max_score gets counts_dev[h] = SL_EINVAL
 * and unspecified positions (as on the CPU, scores are not checked when the sizes alone
 * decide: k = 0, or k covering every candidate).
 *   work_dev   device workspace of sl_gpu_topk_workspace_bytes(n, max_score, block,
 *              n_heads) bytes, 256-byte aligned (cudaMalloc's are); overwritten
 *   out_ld     >= sl_gpu_topk_max_count(n, p)
 * O(n + max_score) per head, no sort: five launches (histogram, threshold, tile counts,
 * per-head scans, compaction; see gpu/retrieval-logic.h), the counts in device memory so the
 * caller can go on without a host round trip. SL_EINVAL for what sl_topk_select rejects,
 * n > INT32_MAX, n_heads < 1, a small or misaligned workspace, a short out_ld, NULL. */
int sl_gpu_topk_select(const uint16_t *scores_dev, int64_t scores_ld, int32_t n_heads, int64_t n, int32_t max_score,
                       const struct sl_gpu_topk_params *p, void *work_dev, size_t work_bytes, int32_t *out_dev,
                       int64_t out_ld, int32_t *counts_dev, void *stream);

/* ---- one layer ----------------------------------------------------------------------------- */

/* Scan of positions [0, n) of every KV head of `layer` in the table against the query codes
 * q_dev (n_head_kv * G, W), then sl_gpu_topk_select with max_score G * W * 64. At token level
 * the histogram is accumulated by the scan kernel itself (one pass less over the scores); at
 * block level the top-k builds it from the block maxima. work_dev: sl_gpu_retrieve_workspace_
 * bytes(n, G, W, block, n_head_kv), 256-byte aligned: the scores (n_head_kv,
 * sl_gpu_scores_ld(n)), then the top-k's workspace. Same outputs and errors as
 * sl_gpu_topk_select, plus SL_EINVAL for a layer outside the table or n above its capacity. */
int sl_gpu_retrieve_layer(const sl_gpu_codes *t, int32_t layer, const uint64_t *q_dev, int32_t G, int64_t n,
                          const struct sl_gpu_topk_params *p, void *work_dev, size_t work_bytes, int32_t *out_dev,
                          int64_t out_ld, int32_t *counts_dev, void *stream);

#ifdef __cplusplus
}
#endif
#endif
