/* The emulated device backend (see emu-device-backend.h): dense ops forwarded to a CPU
 * backend, poisoned "device" memory, and the sparse decode ops on the CPU. */
#include "tests/emu-device-backend.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/internal.h"
#include "cpu/f16-row.h"
#include "cpu/hamming.h"
#include "cpu/topk.h"
#include "spotlight/error.h"

struct emu {
    struct sl_backend be;
    struct sl_backend *cpu; /* the backend every dense op runs on */
};

static struct sl_backend *cpu(struct sl_backend *be) { return ((struct emu *)be->impl)->cpu; }

/* ---- memory: host memory posing as the device's --------------------------------------- */

static int emu_buf_alloc(struct sl_backend *be, size_t bytes, void **out) {
    (void)be;
    void *p = NULL;
    const size_t n = bytes ? bytes : 64;
    if (posix_memalign(&p, 64, n)) return sl_fail(SL_ENOMEM, "emu-device: cannot allocate %zu bytes", bytes);
    memset(p, 0xFF, n); /* NaN as f32 and f16: reading what nothing wrote poisons the result */
    *out = p;
    return 0;
}

static void emu_buf_free(struct sl_backend *be, void *p) {
    (void)be;
    free(p);
}

static int emu_copy(struct sl_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes && dst != src) memcpy(dst, src, bytes);
    return 0;
}

static int emu_load_model(struct sl_backend *be, const sl_model *m) { return cpu(be)->load_model(cpu(be), m); }

/* ---- dense ops: the CPU backend's ---------------------------------------------------------- */

static int emu_matmul(struct sl_backend *be, const struct sl_gguf_tensor *w, const float *x, int64_t n, float *y) {
    return cpu(be)->matmul(cpu(be), w, x, n, y);
}

static int emu_matmul_n(struct sl_backend *be, int nw, const struct sl_gguf_tensor *const *w, const float *x,
                        int64_t n, float *const *y) {
    return cpu(be)->matmul_n(cpu(be), nw, w, x, n, y);
}

static int emu_get_rows(struct sl_backend *be, const struct sl_gguf_tensor *w, const int32_t *ids, int64_t n,
                        float *x) {
    return cpu(be)->get_rows(cpu(be), w, ids, n, x);
}

static int emu_rmsnorm(struct sl_backend *be, const float *x, const struct sl_gguf_tensor *w, int64_t n, int64_t k,
                       float eps, float *y) {
    return cpu(be)->rmsnorm(cpu(be), x, w, n, k, eps, y);
}

static int emu_rope(struct sl_backend *be, float *x, int64_t n, int32_t n_head, const struct sl_model_config *cfg,
                    int64_t pos0) {
    return cpu(be)->rope(cpu(be), x, n, n_head, cfg, pos0);
}

static int emu_add(struct sl_backend *be, float *x, const float *y, int64_t n) { return cpu(be)->add(cpu(be), x, y, n); }

static int emu_add_rows(struct sl_backend *be, float *x, const struct sl_gguf_tensor *b, int64_t n, int64_t k) {
    return cpu(be)->add_rows(cpu(be), x, b, n, k);
}

static int emu_swiglu(struct sl_backend *be, const float *g, const float *u, int64_t n, float *y) {
    return cpu(be)->swiglu(cpu(be), g, u, n, y);
}

static int emu_kv_write(struct sl_backend *be, struct sl_kv_cache *kv, int32_t layer, int64_t pos, int64_t n,
                        const float *k, const float *v) {
    return cpu(be)->kv_write(cpu(be), kv, layer, pos, n, k, v);
}

static int emu_export_f16(struct sl_backend *be, const float *x, int64_t n, uint16_t *host_out) {
    return cpu(be)->export_f16(cpu(be), x, n, host_out);
}

static int emu_attention(struct sl_backend *be, const struct sl_kv_cache *kv, int32_t layer, const float *q,
                         int64_t n, int64_t pos0, int32_t n_head, float *out) {
    return cpu(be)->attention(cpu(be), kv, layer, q, n, pos0, n_head, out);
}

/* ---- sparse decode ------------------------------------------------------------------------ */

struct emu_sparse {
    sl_hash *hash;          /* a copy: the params' hash is read during create only */
    sl_kv_store_t store;    /* borrowed */
    int32_t n_layer, hq, hkv, d, G, bits, W, block;
    int64_t n_ctx, max_sel, n_sink, n_window;
    /* "device" memory (buf_alloc) */
    uint64_t *codes;        /* (n_layer, hkv, n_ctx, W) the resident key codes */
    uint16_t *gk, *gv;      /* (hkv, max_sel + 1, d) selected rows, then the token's own */
    uint16_t *own_k, *own_v; /* (hkv, d) the token's rows in f16 */
    float *qg, *og;         /* (G, d) a group's queries and outputs */
    /* scratch of the emulated kernels */
    uint64_t *qcodes;       /* (hq, W) */
    float *work;            /* hash scratch */
    uint16_t *scores;       /* (n_ctx) */
    void *topk_work;
    size_t topk_bytes;
    int64_t *idx;           /* (hkv, max_sel) */
    int64_t *cnt;           /* (hkv) */
    struct sl_kv_gather *gs; /* (hkv) */
    struct sl_backend_sparse_stats st;
};

static struct emu_sparse *es(struct sl_backend_sparse *s) { return (struct emu_sparse *)s; }

static void emu_sparse_free(struct sl_backend *be, struct sl_backend_sparse *bs) {
    struct emu_sparse *s = es(bs);
    if (!s) return;
    sl_hash_free(s->hash);
    emu_buf_free(be, s->codes);
    emu_buf_free(be, s->gk);
    emu_buf_free(be, s->gv);
    emu_buf_free(be, s->own_k);
    emu_buf_free(be, s->own_v);
    emu_buf_free(be, s->qg);
    emu_buf_free(be, s->og);
    free(s->qcodes);
    free(s->work);
    free(s->scores);
    free(s->topk_work);
    free(s->idx);
    free(s->cnt);
    free(s->gs);
    free(s);
}

/* The hash's bytes through its file format: an exact, independent copy. */
static int copy_hash(const sl_hash *h, sl_hash **out) {
    uint8_t *bytes = NULL;
    size_t n = 0;
    int rc = sl_hash_serialize(h, NULL, &bytes, &n);
    if (!rc) rc = sl_hash_load_bytes(bytes, n, NULL, out);
    free(bytes);
    return rc;
}

/* A device buffer of a * b * c elements of `size` bytes, counted into resident_bytes. */
static int dev_array(struct sl_backend *be, struct emu_sparse *s, uint64_t a, uint64_t b, uint64_t c, size_t size,
                     void **out) {
    uint64_t n;
    if (sl_mul_overflow_u64(a, b, &n) || sl_mul_overflow_u64(n, c, &n) || sl_mul_overflow_u64(n, size, &n) ||
        n > SIZE_MAX)
        return sl_fail(SL_ENOMEM, "emu-device: sparse buffer size overflows");
    int rc = emu_buf_alloc(be, (size_t)n, out);
    if (!rc) s->st.resident_bytes += (int64_t)n;
    return rc;
}

static int check_sparse_params(const struct sl_backend_sparse_params *p) {
    if (!p || !p->hash || !p->store) return sl_fail(SL_EINVAL, "emu-device: sparse_create without a hash or store");
    if (p->n_layer < 1 || p->n_head < 1 || p->n_head_kv < 1 || p->n_head_kv > 64 || p->n_head % p->n_head_kv ||
        p->head_dim < 1 || p->n_ctx < 1 || p->max_sel < 0 || p->n_sink < 0 ||
        p->n_window < 0 || p->block < 1 || p->block > 256 || (p->block & (p->block - 1)))
        return sl_fail(SL_EINVAL, "emu-device: bad sparse parameters");
    const struct sl_hash_params *hp = sl_hash_get_params(p->hash);
    if (hp->n_layer != p->n_layer || hp->n_head_q != p->n_head || hp->n_head_kv != p->n_head_kv ||
        hp->head_dim != p->head_dim)
        return sl_fail(SL_ESHAPE, "emu-device: the hash is of another head shape");
    struct sl_kv_shape ks;
    sl_kv_store_shape(p->store, &ks);
    if (ks.n_layer != p->n_layer || ks.n_head_kv != p->n_head_kv || ks.head_dim != p->head_dim ||
        ks.dtype != SL_KV_DTYPE_F16)
        return sl_fail(SL_ESHAPE, "emu-device: the KV store is of another shape or not f16");
    return sl_hamming_check(p->n_head / p->n_head_kv, sl_hash_code_words(hp->bits));
}

static int emu_sparse_create(struct sl_backend *be, const struct sl_backend_sparse_params *p,
                             struct sl_backend_sparse **out) {
    int rc = check_sparse_params(p);
    if (rc) return rc;
    struct emu_sparse *s = calloc(1, sizeof *s);
    if (!s) return sl_fail(SL_ENOMEM, "out of memory");
    s->store = p->store;
    s->n_layer = p->n_layer, s->hq = p->n_head, s->hkv = p->n_head_kv, s->d = p->head_dim;
    s->G = s->hq / s->hkv, s->block = p->block;
    s->n_ctx = p->n_ctx, s->max_sel = p->max_sel, s->n_sink = p->n_sink, s->n_window = p->n_window;
    s->bits = sl_hash_get_params(p->hash)->bits;
    s->W = sl_hash_code_words(s->bits);
    const uint64_t hkv = (uint64_t)s->hkv, d = (uint64_t)s->d, rows = (uint64_t)s->max_sel + 1;
    if (!(rc = copy_hash(p->hash, &s->hash)) &&
        !(rc = dev_array(be, s, (uint64_t)s->n_layer * hkv, (uint64_t)s->n_ctx, (uint64_t)s->W, sizeof(uint64_t),
                         (void **)&s->codes))) {
        s->st.code_bytes = s->st.resident_bytes;
        if (!(rc = dev_array(be, s, hkv, rows, d, sizeof(uint16_t), (void **)&s->gk)) &&
            !(rc = dev_array(be, s, hkv, rows, d, sizeof(uint16_t), (void **)&s->gv)) &&
            !(rc = dev_array(be, s, hkv, 1, d, sizeof(uint16_t), (void **)&s->own_k)) &&
            !(rc = dev_array(be, s, hkv, 1, d, sizeof(uint16_t), (void **)&s->own_v)) &&
            !(rc = dev_array(be, s, (uint64_t)s->G, 1, d, sizeof(float), (void **)&s->qg)))
            rc = dev_array(be, s, (uint64_t)s->G, 1, d, sizeof(float), (void **)&s->og);
    }
    if (!rc) {
        s->topk_bytes = sl_topk_workspace_bytes(s->n_ctx, sl_hamming_max_score(s->G, s->W), s->block);
        s->qcodes = malloc(sizeof(uint64_t) * (size_t)s->hq * (size_t)s->W);
        s->work = malloc(sizeof(float) * sl_hash_work_floats(s->d, s->bits, 1));
        s->scores = malloc(sizeof(uint16_t) * (size_t)s->n_ctx);
        s->topk_work = malloc(s->topk_bytes ? s->topk_bytes : 1);
        s->idx = malloc(sizeof(int64_t) * (size_t)s->hkv * (size_t)(s->max_sel ? s->max_sel : 1));
        s->cnt = calloc((size_t)s->hkv, sizeof(int64_t));
        s->gs = calloc((size_t)s->hkv, sizeof *s->gs);
        if (!s->qcodes || !s->work || !s->scores || !s->topk_work || !s->idx || !s->cnt || !s->gs)
            rc = sl_fail(SL_ENOMEM, "emu-device: out of memory");
    }
    if (rc) {
        emu_sparse_free(be, (struct sl_backend_sparse *)s);
        return rc;
    }
    *out = (struct sl_backend_sparse *)s;
    return 0;
}

static int emu_sparse_codes(struct sl_backend *be, struct sl_backend_sparse *bs, int32_t layer, int64_t pos0,
                            int64_t n, const uint64_t *codes) {
    (void)be;
    struct emu_sparse *s = es(bs);
    if (layer < 0 || layer >= s->n_layer || pos0 < 0 || n < 0 || pos0 > s->n_ctx - n)
        return sl_fail(SL_EBOUNDS, "emu-device: codes of layer %d positions [%" PRId64 ", +%" PRId64 ") outside the table",
                       layer, pos0, n);
    const int64_t W = s->W;
    for (int32_t g = 0; g < s->hkv; g++)
        memcpy(s->codes + (((int64_t)layer * s->hkv + g) * s->n_ctx + pos0) * W, codes + (int64_t)g * n * W,
               sizeof(uint64_t) * (size_t)(n * W));
    return 0;
}

static int emu_sparse_codes_at(struct sl_backend *be, struct sl_backend_sparse *bs, int64_t pos,
                               const uint64_t *codes) {
    const struct emu_sparse *s = es(bs);
    for (int32_t l = 0; l < s->n_layer; l++) {
        int rc = emu_sparse_codes(be, bs, l, pos, 1, codes + (int64_t)l * s->hkv * s->W);
        if (rc) return rc;
    }
    return 0;
}

/* KV head g's earlier positions into idx as core/sparse-attn.c selects them from a store:
 * all of [0, P) when the budget and the forced positions cover it, else scan and top-k. */
static int64_t select_head(struct emu_sparse *s, int32_t layer, int32_t g, int64_t P, int64_t k_sel, int64_t *idx) {
    const int64_t forced = (s->n_sink < P ? s->n_sink : P) + (s->n_window < P ? s->n_window : P);
    if (k_sel + forced >= P) {
        if (P > s->max_sel) return sl_fail(SL_EBOUNDS, "emu-device: %" PRId64 " positions over max_sel", P);
        for (int64_t j = 0; j < P; j++) idx[j] = j;
        return P;
    }
    struct sl_topk_params tk = {.k = k_sel, .n_sink = s->n_sink, .n_window = s->n_window, .block = s->block};
    if (sl_topk_max_count(P, &tk) > s->max_sel)
        return sl_fail(SL_EBOUNDS, "emu-device: a selection of up to %" PRId64 " positions over max_sel %" PRId64,
                       sl_topk_max_count(P, &tk), s->max_sel);
    const uint64_t *kc = s->codes + ((int64_t)layer * s->hkv + g) * s->n_ctx * s->W;
    sl_hamming_scan(s->qcodes + (int64_t)g * s->G * s->W, s->G, kc, P, s->W, s->scores);
    return sl_topk_select(s->scores, P, sl_hamming_max_score(s->G, s->W), &tk, s->topk_work, s->topk_bytes, idx);
}

static int emu_sparse_decode(struct sl_backend *be, struct sl_backend_sparse *bs, int32_t layer, const float *q,
                             const float *k, const float *v, int64_t P, int64_t k_sel, float *out) {
    struct emu_sparse *s = es(bs);
    const int32_t d = s->d, G = s->G, hkv = s->hkv;
    const int64_t rows = s->max_sel + 1;
    if (layer < 0 || layer >= s->n_layer || P < 0 || P >= s->n_ctx || k_sel < 0)
        return sl_fail(SL_EINVAL, "emu-device: sparse decode of layer %d at %" PRId64 " (budget %" PRId64 ")", layer,
                       P, k_sel);
    /* 1. the query codes, 2. selection per KV head */
    for (int32_t h = 0; h < s->hq; h++) {
        int rc = sl_hash_encode(sl_hash_query_fn(s->hash, layer, h), d, s->bits, q + (int64_t)h * d, 1,
                                s->qcodes + (int64_t)h * s->W, s->work);
        if (rc) return rc;
    }
    for (int32_t g = 0; g < hkv; g++) {
        int64_t *idx = s->idx + (int64_t)g * s->max_sel;
        if ((s->cnt[g] = select_head(s, layer, g, P, k_sel, idx)) < 0) return (int)s->cnt[g];
        s->gs[g] = (struct sl_kv_gather){.layer = layer, .head = g, .idx = idx, .n = s->cnt[g],
                                         .k_out = s->gk + g * rows * d, .v_out = s->gv + g * rows * d};
    }
    /* 3. the selected rows from the store, then the token's own row (f16 as the store keeps it) */
    int rc = sl_kv_store_gather(s->store, s->gs, hkv);
    if (rc) return rc;
    sl_f32_to_f16_row(k, s->own_k, (int64_t)hkv * d);
    sl_f32_to_f16_row(v, s->own_v, (int64_t)hkv * d);
    /* 4. the group's queries over those rows: a one-head, one-layer cache, the token at cnt */
    for (int32_t g = 0; g < hkv; g++) {
        const int64_t cnt = s->cnt[g];
        uint16_t *gk = s->gk + g * rows * d, *gv = s->gv + g * rows * d;
        memcpy(gk + cnt * d, s->own_k + (int64_t)g * d, sizeof(uint16_t) * (size_t)d);
        memcpy(gv + cnt * d, s->own_v + (int64_t)g * d, sizeof(uint16_t) * (size_t)d);
        memcpy(s->qg, q + (int64_t)g * G * d, sizeof(float) * (size_t)(G * d));
        struct sl_kv_cache view = {.n_layer = 1, .n_head_kv = 1, .head_dim = d, .n_ctx = cnt + 1, .k = gk, .v = gv};
        if ((rc = cpu(be)->attention(cpu(be), &view, 0, s->qg, 1, cnt, G, s->og))) return rc;
        memcpy(out + (int64_t)g * G * d, s->og, sizeof(float) * (size_t)(G * d));
        s->st.selected += cnt;
        s->st.rows += cnt;
        s->st.bytes_in += cnt * d * 2 * (int64_t)sizeof(uint16_t);
    }
    s->st.calls++;
    return 0;
}

static int emu_sparse_stats(struct sl_backend *be, struct sl_backend_sparse *bs, struct sl_backend_sparse_stats *out) {
    (void)be;
    if (!bs || !out) return sl_fail(SL_EINVAL, "emu-device: sparse_stats without a state");
    *out = es(bs)->st;
    return 0;
}

/* ---- the backend ---------------------------------------------------------------------------- */

static void emu_free(struct sl_backend *be) {
    if (!be) return;
    struct emu *e = be->impl;
    if (e->cpu) e->cpu->free(e->cpu);
    free(e);
}

int sl_emu_device_backend_create(int32_t device, int n_threads, struct sl_backend **out) {
    if (device != 0) return sl_fail(SL_ENODEV, "emu-device: device %d does not exist (1 visible)", device);
    struct emu *e = calloc(1, sizeof *e);
    if (!e) return sl_fail(SL_ENOMEM, "out of memory");
    int rc = sl_backend_cpu_create(n_threads, &e->cpu);
    if (rc) {
        free(e);
        return rc;
    }
    e->be = (struct sl_backend){
        .name = "emu-device", .impl = e, .host_memory = false,
        .buf_alloc = emu_buf_alloc, .buf_free = emu_buf_free, .upload = emu_copy, .download = emu_copy, .copy = emu_copy,
        .load_model = e->cpu->load_model ? emu_load_model : NULL,
        .matmul = emu_matmul, .matmul_n = emu_matmul_n, .get_rows = emu_get_rows, .rmsnorm = emu_rmsnorm,
        .rope = emu_rope, .add = emu_add, .add_rows = emu_add_rows, .swiglu = emu_swiglu, .kv_write = emu_kv_write,
        .export_f16 = emu_export_f16, .attention = emu_attention,
        .sparse_create = emu_sparse_create, .sparse_codes = emu_sparse_codes,
        .sparse_codes_at = emu_sparse_codes_at, .sparse_decode = emu_sparse_decode,
        .sparse_stats = emu_sparse_stats, .sparse_free = emu_sparse_free, .free = emu_free};
    *out = &e->be;
    return 0;
}
