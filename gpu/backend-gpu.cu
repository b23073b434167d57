/* The CUDA backend: the backend seam's operations (core/backend.h) on device memory, one
 * stream, the kernels of gpu/gpu-ops.h. load_model uploads the weights once: matrices
 * dequantized to bf16 for cuBLAS, norms and biases as f32, the embedding as its raw GGUF bytes
 * (rows are dequantized on lookup). Ops look a tensor's device copy up by its address.
 *
 * Dense attention reads a KV cache in device memory; sparse decode (the sparse_* ops) keeps
 * only the key codes here and fetches the selected K/V from a KV store (gpu/gpu-sparse.h). */
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/mem-plan.h"
#include "gpu/gpu-check.h"
#include "gpu/gpu-ops.h"
#include "gpu/gpu-sparse.h"
#include "gpu/gpu.h"
#include "spotlight/quant.h"

/* A tensor's device copy: a bf16 matrix (for matmul), an f32 vector (norms, biases) or the
 * raw bytes (the embedding, for get_rows). A tied LM head has two entries. */
enum entry_kind { E_MATRIX = 1, E_VECTOR = 2, E_RAW = 3 };

struct entry {
    const struct sl_gguf_tensor *t; /* NULL: free slot */
    enum entry_kind kind;
    struct sl_gpu_weight w; /* E_MATRIX */
    void *dev;              /* E_VECTOR, E_RAW */
};

#define MAP_SLOTS 4096 /* power of two, > 2x the tensors of any model we load (12 per layer) */

struct gpu_backend {
    struct sl_backend be;
    int device;
    cudaStream_t stream;
    void *blas;
    struct entry *map; /* MAP_SLOTS open-addressed by (tensor, kind) */
    /* scratch, grown on first use of a larger shape (never inside a step of the same shape) */
    void *mm_scratch;
    size_t mm_bytes;
    int32_t *ids;
    int64_t ids_cap;
    uint16_t *f16;
    int64_t f16_cap;
    void *attn_ws;
    size_t attn_bytes;
};

static struct gpu_backend *gb(struct sl_backend *be) { return (struct gpu_backend *)be->impl; }

static size_t slot_of(const struct sl_gguf_tensor *t, enum entry_kind k) {
    uint64_t h = ((uint64_t)(uintptr_t)t ^ (uint64_t)k) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 52) & (MAP_SLOTS - 1);
}

static struct entry *find(struct gpu_backend *g, const struct sl_gguf_tensor *t, enum entry_kind k) {
    for (size_t i = slot_of(t, k), n = 0; n < MAP_SLOTS; i = (i + 1) & (MAP_SLOTS - 1), n++) {
        if (!g->map[i].t) return NULL;
        if (g->map[i].t == t && g->map[i].kind == k) return &g->map[i];
    }
    return NULL;
}

static struct entry *insert(struct gpu_backend *g, const struct sl_gguf_tensor *t, enum entry_kind k) {
    for (size_t i = slot_of(t, k), n = 0; n < MAP_SLOTS; i = (i + 1) & (MAP_SLOTS - 1), n++)
        if (!g->map[i].t) {
            g->map[i].t = t;
            g->map[i].kind = k;
            return &g->map[i];
        }
    return NULL;
}

/* Grows a device scratch buffer to at least `bytes` (contents not kept). */
static int grow(void **p, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return 0;
    if (*p) SL_CUDA_CHECK(cudaFree(*p));
    *p = NULL;
    *cap = 0;
    SL_CUDA_CHECK(cudaMalloc(p, bytes));
    *cap = bytes;
    return 0;
}

/* ---- memory ------------------------------------------------------------------------------- */

static int op_buf_alloc(struct sl_backend *be, size_t bytes, void **out) {
    (void)be;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return sl_fail(e == cudaErrorMemoryAllocation ? SL_ENOMEM : SL_EDEVICE, "cudaMalloc of %zu bytes: %s", bytes,
                       cudaGetErrorString(e));
    }
    *out = p;
    return 0;
}

static void op_buf_free(struct sl_backend *be, void *p) {
    (void)be;
    if (p && cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
}

static int op_upload(struct sl_backend *be, void *dst, const void *src, size_t bytes) {
    SL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, gb(be)->stream));
    SL_CUDA_CHECK(cudaStreamSynchronize(gb(be)->stream)); /* src may be reused at once */
    return 0;
}

static int op_copy(struct sl_backend *be, void *dst, const void *src, size_t bytes) {
    SL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, gb(be)->stream));
    return 0;
}

static int op_download(struct sl_backend *be, void *dst, const void *src, size_t bytes) {
    SL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, gb(be)->stream));
    SL_CUDA_CHECK(cudaStreamSynchronize(gb(be)->stream));
    return 0;
}

/* ---- weights ------------------------------------------------------------------------------ */

static int put_matrix(struct gpu_backend *g, const struct sl_gguf_tensor *t) {
    if (!t || find(g, t, E_MATRIX)) return 0;
    struct entry *e = insert(g, t, E_MATRIX);
    if (!e) return sl_fail(SL_ENOMEM, "CUDA backend: too many tensors");
    int rc = sl_gpu_weight_upload(t->type, t->data, t->ne[0], t->ne[1], &e->w, g->stream);
    if (rc) e->t = NULL;
    return rc;
}

/* f32 vectors and the raw embedding: a plain copy of the tensor's bytes. */
static int put_bytes(struct gpu_backend *g, const struct sl_gguf_tensor *t, enum entry_kind k) {
    if (!t || find(g, t, k)) return 0;
    struct entry *e = insert(g, t, k);
    if (!e) return sl_fail(SL_ENOMEM, "CUDA backend: too many tensors");
    const size_t bytes = (size_t)sl_type_row_bytes(t->type, t->ne[0]) * (size_t)t->ne[1];
    int rc = op_buf_alloc(&g->be, bytes, &e->dev);
    if (!rc) rc = op_upload(&g->be, e->dev, t->data, bytes);
    if (rc) {
        op_buf_free(&g->be, e->dev);
        e->dev = NULL;
        e->t = NULL;
    }
    return rc;
}

static int load_one(void *user, const struct sl_gguf_tensor *t, enum sl_weight_use use) {
    struct gpu_backend *g = (struct gpu_backend *)user;
    return use == SL_WEIGHT_MATRIX ? put_matrix(g, t) : put_bytes(g, t, use == SL_WEIGHT_VECTOR ? E_VECTOR : E_RAW);
}

/* The tensors the forward pass reads, as core/mem-plan.c counts them for --vram-mb. */
static int op_load_model(struct sl_backend *be, const sl_model *m) {
    struct gpu_backend *g = gb(be);
    int rc = sl_model_for_each_weight(m, load_one, g);
    if (!rc) SL_CUDA_CHECK(cudaStreamSynchronize(g->stream));
    return rc;
}

static const struct entry *need(struct gpu_backend *g, const struct sl_gguf_tensor *t, enum entry_kind k) {
    const struct entry *e = find(g, t, k);
    if (!e) sl_fail(SL_EINVAL, "CUDA backend: tensor %p was not uploaded (load_model)", (const void *)t);
    return e;
}

/* ---- ops ---------------------------------------------------------------------------------- */

static int op_matmul(struct sl_backend *be, const struct sl_gguf_tensor *w, const float *x, int64_t n, float *y) {
    struct gpu_backend *g = gb(be);
    const struct entry *e = need(g, w, E_MATRIX);
    if (!e) return SL_EINVAL;
    int rc = grow(&g->mm_scratch, &g->mm_bytes, sl_gpu_matmul_scratch_bytes(n, e->w.k));
    return rc ? rc : sl_gpu_matmul(g->blas, &e->w, x, n, y, g->mm_scratch, g->stream);
}

static int op_matmul_n(struct sl_backend *be, int nw, const struct sl_gguf_tensor *const *w, const float *x, int64_t n,
                       float *const *y) {
    for (int i = 0; i < nw; i++) {
        int rc = op_matmul(be, w[i], x, n, y[i]);
        if (rc) return rc;
    }
    return 0;
}

static int op_get_rows(struct sl_backend *be, const struct sl_gguf_tensor *w, const int32_t *ids, int64_t n, float *x) {
    struct gpu_backend *g = gb(be);
    const struct entry *e = need(g, w, E_RAW);
    if (!e) return SL_EINVAL;
    for (int64_t i = 0; i < n; i++) /* checked here: a bad id on the device would only give NaN */
        if (ids[i] < 0 || ids[i] >= w->ne[1]) return sl_fail(SL_EINVAL, "token id %d out of range", ids[i]);
    size_t cap = (size_t)g->ids_cap * sizeof(int32_t);
    int rc = grow((void **)&g->ids, &cap, (size_t)n * sizeof(int32_t));
    if (rc) return rc;
    g->ids_cap = (int64_t)(cap / sizeof(int32_t));
    if ((rc = op_upload(be, g->ids, ids, (size_t)n * sizeof(int32_t)))) return rc;
    return sl_gpu_get_rows(w->type, e->dev, w->ne[1], g->ids, n, w->ne[0], x, g->stream);
}

static int op_rmsnorm(struct sl_backend *be, const float *x, const struct sl_gguf_tensor *w, int64_t n, int64_t k,
                      float eps, float *y) {
    const struct entry *e = need(gb(be), w, E_VECTOR);
    return e ? sl_gpu_rmsnorm(x, (const float *)e->dev, n, k, eps, y, gb(be)->stream) : SL_EINVAL;
}

static int op_rope(struct sl_backend *be, float *x, int64_t n, int32_t n_head, const struct sl_model_config *c,
                   int64_t pos0) {
    const float freq_scale = c->rope_scaling == SL_ROPE_SCALING_LINEAR ? 1.0f / c->rope_scale : 1.0f;
    return sl_gpu_rope(x, n, n_head, c->head_dim, c->n_rot, c->rope_type == SL_ROPE_NEOX, c->rope_theta, freq_scale,
                       pos0, gb(be)->stream);
}

static int op_add(struct sl_backend *be, float *x, const float *y, int64_t n) {
    return sl_gpu_add(x, y, n, gb(be)->stream);
}

static int op_add_rows(struct sl_backend *be, float *x, const struct sl_gguf_tensor *b, int64_t n, int64_t k) {
    const struct entry *e = need(gb(be), b, E_VECTOR);
    return e ? sl_gpu_add_rows(x, (const float *)e->dev, n, k, gb(be)->stream) : SL_EINVAL;
}

static int op_swiglu(struct sl_backend *be, const float *gt, const float *u, int64_t n, float *y) {
    return sl_gpu_swiglu(gt, u, n, y, gb(be)->stream);
}

static size_t layer_elems(const struct sl_kv_cache *kv) {
    return (size_t)kv->n_head_kv * (size_t)kv->n_ctx * (size_t)kv->head_dim;
}

static int op_kv_write(struct sl_backend *be, struct sl_kv_cache *kv, int32_t layer, int64_t pos, int64_t n,
                       const float *k, const float *v) {
    if (layer < 0 || layer >= kv->n_layer) return sl_fail(SL_EBOUNDS, "KV write to layer %d of %d", layer, kv->n_layer);
    const size_t off = (size_t)layer * layer_elems(kv);
    return sl_gpu_kv_write(kv->k + off, kv->v + off, kv->n_ctx, kv->n_head_kv, kv->head_dim, pos, n, k, v,
                           gb(be)->stream);
}

static int op_export_f16(struct sl_backend *be, const float *x, int64_t n, uint16_t *host_out) {
    struct gpu_backend *g = gb(be);
    size_t cap = (size_t)g->f16_cap * sizeof(uint16_t);
    int rc = grow((void **)&g->f16, &cap, (size_t)n * sizeof(uint16_t));
    if (rc) return rc;
    g->f16_cap = (int64_t)(cap / sizeof(uint16_t));
    if ((rc = sl_gpu_f32_to_f16(x, n, g->f16, g->stream))) return rc;
    return op_download(be, host_out, g->f16, (size_t)n * sizeof(uint16_t));
}

static int op_attention(struct sl_backend *be, const struct sl_kv_cache *kv, int32_t layer, const float *q, int64_t n,
                        int64_t pos0, int32_t n_head, float *out) {
    struct gpu_backend *g = gb(be);
    if (layer < 0 || layer >= kv->n_layer) return sl_fail(SL_EBOUNDS, "attention on layer %d of %d", layer, kv->n_layer);
    int rc = grow(&g->attn_ws, &g->attn_bytes, sl_gpu_attention_workspace_bytes(n, n_head, kv->head_dim));
    if (rc) return rc;
    const size_t off = (size_t)layer * layer_elems(kv);
    return sl_gpu_attention(q, kv->k + off, kv->v + off, kv->n_ctx, n, pos0, n_head, kv->n_head_kv, kv->head_dim, out,
                            g->attn_ws, g->attn_bytes, g->stream);
}

static int op_sparse_create(struct sl_backend *be, const struct sl_backend_sparse_params *p,
                            struct sl_backend_sparse **out) {
    return sl_gpu_sparse_create(p, gb(be)->device, out);
}

static int op_sparse_codes(struct sl_backend *be, struct sl_backend_sparse *s, int32_t layer, int64_t pos0, int64_t n,
                           const uint64_t *codes) {
    return sl_gpu_sparse_codes(s, layer, pos0, n, codes, gb(be)->stream);
}

static int op_sparse_codes_at(struct sl_backend *be, struct sl_backend_sparse *s, int64_t pos, const uint64_t *codes) {
    return sl_gpu_sparse_codes_at(s, pos, codes, gb(be)->stream);
}

static int op_sparse_decode(struct sl_backend *be, struct sl_backend_sparse *s, int32_t layer, const float *q,
                            const float *k, const float *v, int64_t P, int64_t k_sel, float *out) {
    return sl_gpu_sparse_decode(s, layer, q, k, v, P, k_sel, out, gb(be)->stream);
}

static int op_sparse_stats(struct sl_backend *be, struct sl_backend_sparse *s, struct sl_backend_sparse_stats *out) {
    (void)be;
    return sl_gpu_sparse_stats(s, out);
}

static void op_sparse_free(struct sl_backend *be, struct sl_backend_sparse *s) {
    (void)be;
    sl_gpu_sparse_free(s);
}

static void op_free(struct sl_backend *be) {
    if (!be) return;
    struct gpu_backend *g = gb(be);
    if (g->stream) (void)cudaStreamSynchronize(g->stream);
    for (size_t i = 0; g->map && i < MAP_SLOTS; i++) {
        if (!g->map[i].t) continue;
        if (g->map[i].kind == E_MATRIX) sl_gpu_weight_free(&g->map[i].w);
        else op_buf_free(be, g->map[i].dev);
    }
    free(g->map);
    op_buf_free(be, g->mm_scratch);
    op_buf_free(be, g->ids);
    op_buf_free(be, g->f16);
    op_buf_free(be, g->attn_ws);
    sl_gpu_blas_free(g->blas);
    if (g->stream) (void)cudaStreamDestroy(g->stream);
    (void)cudaGetLastError();
    free(g);
}

static int create(struct gpu_backend *g, int device) {
    SL_CUDA_CHECK(cudaSetDevice(device));
    SL_CUDA_CHECK(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
    return sl_gpu_blas_create(&g->blas);
}

extern "C" int sl_gpu_backend_create(int device, struct sl_backend **out) {
    struct gpu_backend *g = (struct gpu_backend *)calloc(1, sizeof *g);
    if (!g) return sl_fail(SL_ENOMEM, "out of memory");
    g->map = (struct entry *)calloc(MAP_SLOTS, sizeof *g->map);
    g->device = device;
    g->be.name = "cuda";
    g->be.impl = g;
    g->be.host_memory = false;
    g->be.buf_alloc = op_buf_alloc;
    g->be.buf_free = op_buf_free;
    g->be.upload = op_upload;
    g->be.download = op_download;
    g->be.copy = op_copy;
    g->be.load_model = op_load_model;
    g->be.matmul = op_matmul;
    g->be.matmul_n = op_matmul_n;
    g->be.get_rows = op_get_rows;
    g->be.rmsnorm = op_rmsnorm;
    g->be.rope = op_rope;
    g->be.add = op_add;
    g->be.add_rows = op_add_rows;
    g->be.swiglu = op_swiglu;
    g->be.kv_write = op_kv_write;
    g->be.export_f16 = op_export_f16;
    g->be.attention = op_attention;
    g->be.sparse_create = op_sparse_create;
    g->be.sparse_codes = op_sparse_codes;
    g->be.sparse_codes_at = op_sparse_codes_at;
    g->be.sparse_decode = op_sparse_decode;
    g->be.sparse_stats = op_sparse_stats;
    g->be.sparse_free = op_sparse_free;
    g->be.free = op_free;
    int rc = g->map ? create(g, device) : sl_fail(SL_ENOMEM, "out of memory");
    if (rc) {
        op_free(&g->be);
        return rc;
    }
    *out = &g->be;
    return 0;
}
