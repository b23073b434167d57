/* Sparse decode attention (see sparse-attn.h). */
#include "core/sparse-attn.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/attn-truth.h"
#include "spotlight/kv-store.h"
#include "core/hash.h"
#include "core/internal.h"
#include "core/sha256.h"
#include "core/sparse-select.h"
#include "cpu/f16-row.h"
#include "cpu/hamming.h"
#include "cpu/topk.h"

struct sl_sparse {
    struct sl_attn_params p; /* hash_path not kept */
    sl_hash *hash;           /* NULL for topk-exact */
    int32_t n_layer, hq, hkv, d, G, bits, W, n_batch;
    int64_t n_ctx, max_sel;
    uint64_t *codes;         /* (n_layer, hkv, n_ctx, W) */
    uint8_t hash_id[32];     /* sl_sparse_hash_id, once has_hash_id */
    bool has_hash_id;
    float *work, *rows;      /* hash scratch; (max(n_batch, hq), d) gathered rows */
    uint64_t *qcodes;        /* (n_batch, hq, W) query codes of a chunk */
    uint16_t *scores;        /* (n_ctx) decode scan */
    float *fscore, *ftmp;    /* (n_ctx) float scores (chunks, topk-exact) and scratch */
    float *lut;              /* (8 W, 256) chunk scoring table */
    float *qg, *og;          /* (n_batch, G, d) a group's queries / outputs */
    uint8_t *mask;           /* (n_ctx) */
    void *topk_work;
    size_t topk_bytes;
    int64_t *idx;            /* (hkv, max_sel) selected earlier positions per KV head, ascending */
    int64_t *cnt;            /* (hkv) */
    uint16_t *gk, *gv;       /* (hkv, max_sel + n_batch, d) the attended rows per KV head */
    /* prefetch (KV store, decode): each layer's last selection, and one gather in flight */
    int64_t *last_idx;       /* (n_layer, hkv, max_sel) */
    int64_t *last_cnt;       /* (n_layer, hkv); -1: none */
    uint16_t *pk, *pv;       /* (hkv, max_sel, d) where prefetched rows land (then unused) */
    sl_kv_store_t pstore;    /* the store with a prefetch in flight, or NULL */
    sl_kv_ticket_t pticket;
    struct sl_kv_gather pgather[64]; /* its descriptors: the store reads them until it completes */
    struct sl_attn_stats st;
    /* device mode (sl_sparse_attach_device): decode runs in the backend's memory, prefill
     * chunks here on the host over the store */
    struct sl_backend *dev;
    struct sl_backend_sparse *ds;
    struct sl_backend *host_be; /* the CPU backend prefill chunks attend with */
    float *hqry, *hout;         /* (n_batch, hq * d) a chunk's queries and outputs, host copies */
    uint64_t *cstage;           /* (hkv, n_batch, W) codes on their way to the backend */
    int64_t dev_bytes;
};

struct sl_attn_params sl_attn_default_params(enum sl_attn_mode mode) {
    return (struct sl_attn_params){.mode = mode, .budget = 0.02f, .min_tokens = 64, .n_sink = 4,
                                   .n_window = 64, .dense_layers = 2, .bits = 64, .sparse_prefill = false,
                                   .block = 1, .rerank = 1, .hash_path = NULL};
}

void sl_sparse_free(struct sl_sparse *s) {
    if (!s) return;
    sl_sparse_quiesce(s);
    if (s->dev) s->dev->sparse_free(s->dev, s->ds);
    if (s->host_be) s->host_be->free(s->host_be);
    free(s->hqry);
    free(s->hout);
    free(s->cstage);
    free(s->last_idx);
    free(s->last_cnt);
    free(s->pk);
    free(s->pv);
    sl_hash_free(s->hash);
    free(s->codes);
    free(s->work);
    free(s->rows);
    free(s->qcodes);
    free(s->scores);
    free(s->fscore);
    free(s->ftmp);
    free(s->lut);
    free(s->qg);
    free(s->og);
    free(s->mask);
    free(s->topk_work);
    free(s->idx);
    free(s->cnt);
    free(s->gk);
    free(s->gv);
    free(s);
}

static int check_params(const struct sl_attn_params *p, const struct sl_model_config *cfg) {
    if (p->mode < SL_ATTN_SPOTLIGHT || p->mode > SL_ATTN_TOPK_EXACT)
        return sl_fail(SL_EINVAL, "attention: unknown mode %d", (int)p->mode);
    if (!(p->budget > 0 && p->budget <= 1))
        return sl_fail(SL_EINVAL, "attention: budget %g is not a fraction in (0, 1]", p->budget);
    if (p->min_tokens < 0 || p->n_sink < 0 || p->n_window < 0 || p->dense_layers < 0)
        return sl_fail(SL_EINVAL, "attention: negative min_tokens, sinks, window or dense layers");
    if (p->block < 1 || p->block > 256 || (p->block & (p->block - 1)))
        return sl_fail(SL_EINVAL, "attention: block %d is not a power of two in 1..256", p->block);
    if (p->rerank < 1 || p->rerank > 64 || (p->rerank > 1 && (p->block != 1 || p->mode == SL_ATTN_TOPK_EXACT)))
        return sl_fail(SL_EINVAL, "attention: rerank %d must be 1..64, and above 1 only with a hash at token level",
                       p->rerank);
    if (p->dense_layers > cfg->n_layer)
        return sl_fail(SL_EINVAL, "attention: %d dense layers of %d", p->dense_layers, cfg->n_layer);
    if (p->mode == SL_ATTN_SIMHASH && (p->bits < 32 || p->bits % 32 || p->bits > 1024))
        return sl_fail(SL_EINVAL, "attention: simhash bits %d is not a multiple of 32 in 32..1024", p->bits);
    if (p->mode == SL_ATTN_SPOTLIGHT && (!p->hash_path || !*p->hash_path))
        return sl_fail(SL_EINVAL, "attention: spotlight needs a hash file (spotlight train-hash)");
    if (cfg->n_head / cfg->n_head_kv > 64 || cfg->n_head_kv > 64)
        return sl_fail(SL_EUNSUPPORTED, "sparse attention: more than 64 KV heads or GQA groups over 64 heads");
    return 0;
}

static int load_hash(struct sl_sparse *s, const struct sl_attn_params *p, const struct sl_model_config *cfg,
                     const uint8_t fp[32]) {
    int rc;
    if (p->mode == SL_ATTN_SPOTLIGHT) {
        if ((rc = sl_hash_load(p->hash_path, fp, &s->hash))) return rc;
        const struct sl_hash_params *hp = sl_hash_get_params(s->hash);
        if (hp->n_layer != cfg->n_layer || hp->n_head_q != cfg->n_head || hp->n_head_kv != cfg->n_head_kv ||
            hp->head_dim != cfg->head_dim)
            return sl_fail(SL_ESHAPE, "%s: hash of another head shape", p->hash_path);
        for (int32_t l = p->dense_layers; l < cfg->n_layer; l++) {
            struct sl_hash_layer_info info;
            sl_hash_layer_info_get(s->hash, l, &info);
            if (info.status != SL_HASH_TRAINED)
                return sl_fail(SL_EINVAL, "%s: layer %d is not trained (finish it with spotlight train-hash)",
                               p->hash_path, l);
        }
    } else if (p->mode == SL_ATTN_SIMHASH) {
        struct sl_hash_params hp = sl_hash_default_params();
        sl_hash_params_from_config(cfg, &hp);
        hp.kind = SL_HASH_SIMHASH;
        hp.bits = p->bits;
        hp.seed = 0;
        if ((rc = sl_hash_create(&hp, &s->hash))) return rc;
    }
    return 0;
}

int64_t sl_sparse_max_selected(const struct sl_attn_params *p, int64_t n_ctx) {
    /* k at the full context plus the forced ones (when those cover all of [0, P) there are only
     * P <= that many); kb blocks hold at most k + block positions */
    int64_t kmax = sl_truth_budget_k(p->budget, n_ctx);
    if (kmax < p->min_tokens) kmax = p->min_tokens;
    const int64_t most = kmax * p->rerank + p->block + p->n_sink + p->n_window;
    return most < n_ctx ? most : n_ctx;
}

/* Bytes of every buffer sl_sparse_create allocates, so that sl_sparse_plan_bytes (the memory
 * plan) and the allocations cannot drift apart. bits 0: no hash (topk-exact). */
struct sparse_sizes {
    int64_t max_sel; /* the most positions one selection holds */
    size_t idx, cnt, gather, last_idx, last_cnt, prefetch, mask, fscore, group_rows; /* every mode */
    size_t codes, work, rows, qcodes, scores, lut, topk;                              /* with a hash */
};

static int sparse_sizes(const struct sl_attn_params *p, const struct sl_model_config *cfg, int32_t bits, int64_t n_ctx,
                        int32_t n_batch, struct sparse_sizes *z) {
    memset(z, 0, sizeof *z);
    const int64_t L = cfg->n_layer, hq = cfg->n_head, hkv = cfg->n_head_kv, d = cfg->head_dim, G = hq / hkv;
    const int64_t rows = n_batch > hq ? n_batch : hq;
    z->max_sel = sl_sparse_max_selected(p, n_ctx);
    const int64_t rows_per_head = z->max_sel + n_batch;
    z->idx = sizeof(int64_t) * (size_t)(hkv * z->max_sel);
    z->cnt = sizeof(int64_t) * (size_t)hkv;
    z->gather = sizeof(uint16_t) * (size_t)(hkv * rows_per_head * d);
    z->last_idx = sizeof(int64_t) * (size_t)(L * hkv * z->max_sel);
    z->last_cnt = sizeof(int64_t) * (size_t)(L * hkv);
    z->prefetch = sizeof(uint16_t) * (size_t)(hkv * z->max_sel * d);
    z->mask = (size_t)n_ctx;
    z->fscore = sizeof(float) * (size_t)n_ctx;
    z->group_rows = sizeof(float) * (size_t)(n_batch * G * d);
    if (!bits) return 0;
    const int64_t W = sl_hash_code_words(bits);
    uint64_t words;
    if (sl_mul_overflow_u64((uint64_t)L * (uint64_t)hkv * (uint64_t)n_ctx, (uint64_t)W, &words) ||
        words > SIZE_MAX / sizeof(uint64_t))
        return SL_ENOMEM;
    z->codes = (size_t)words * sizeof(uint64_t);
    z->work = sizeof(float) * sl_hash_work_floats((int32_t)d, bits, rows);
    z->rows = sizeof(float) * (size_t)(rows * d);
    z->qcodes = sizeof(uint64_t) * (size_t)(n_batch * hq * W);
    z->scores = sizeof(uint16_t) * (size_t)n_ctx;
    z->lut = sizeof(float) * (size_t)(8 * W * 256);
    z->topk = sl_topk_workspace_bytes(n_ctx, sl_hamming_max_score((int32_t)G, (int32_t)W), p->block);
    return 0;
}

int64_t sl_sparse_plan_bytes(const struct sl_attn_params *p, const struct sl_model_config *cfg, int32_t bits,
                             int64_t n_ctx, int32_t n_batch, int64_t *code_bytes) {
    struct sparse_sizes z;
    if (sparse_sizes(p, cfg, bits, n_ctx, n_batch, &z)) return SL_ENOMEM;
    *code_bytes = (int64_t)z.codes;
    return (int64_t)(z.idx + z.cnt + 2 * z.gather + z.last_idx + z.last_cnt + 2 * z.prefetch + z.mask + 2 * z.fscore +
                     2 * z.group_rows + z.work + z.rows + z.qcodes + z.scores + z.lut + z.topk);
}

int sl_sparse_create(const struct sl_attn_params *p, const struct sl_model_config *cfg, const uint8_t fingerprint[32],
                     int64_t n_ctx, int32_t n_batch, struct sl_sparse **out) {
    int rc = check_params(p, cfg);
    if (rc) return rc;
    struct sl_sparse *s = calloc(1, sizeof *s);
    if (!s) return sl_fail(SL_ENOMEM, "out of memory");
    s->p = *p;
    s->p.hash_path = NULL;
    s->n_layer = cfg->n_layer, s->hq = cfg->n_head, s->hkv = cfg->n_head_kv, s->d = cfg->head_dim;
    s->G = s->hq / s->hkv;
    s->n_ctx = n_ctx;
    if ((rc = load_hash(s, p, cfg, fingerprint))) {
        sl_sparse_free(s);
        return rc;
    }
    s->n_batch = n_batch;
    const int32_t bits = s->hash ? sl_hash_get_params(s->hash)->bits : 0;
    if (s->hash && (rc = sl_hamming_check(s->G, sl_hash_code_words(bits)))) {
        sl_sparse_free(s);
        return rc;
    }
    struct sparse_sizes z;
    bool ok = sparse_sizes(p, cfg, bits, n_ctx, n_batch, &z) == 0;
    s->max_sel = z.max_sel;
    s->idx = malloc(z.idx);
    s->cnt = malloc(z.cnt);
    s->gk = malloc(z.gather);
    s->gv = malloc(z.gather);
    s->last_idx = malloc(z.last_idx);
    s->last_cnt = malloc(z.last_cnt);
    s->pk = malloc(z.prefetch);
    s->pv = malloc(z.prefetch);
    if (s->last_cnt)
        for (int64_t i = 0; i < (int64_t)s->n_layer * s->hkv; i++) s->last_cnt[i] = -1;
    s->mask = malloc(z.mask);
    s->fscore = malloc(z.fscore);
    s->ftmp = malloc(z.fscore);
    s->qg = malloc(z.group_rows);
    s->og = malloc(z.group_rows);
    ok = ok && s->idx && s->cnt && s->gk && s->gv && s->last_idx && s->last_cnt && s->pk && s->pv && s->mask && s->fscore && s->ftmp && s->qg && s->og;
    if (s->hash) {
        s->bits = bits;
        s->W = sl_hash_code_words(s->bits);
        if (ok) s->codes = malloc(z.codes);
        s->work = malloc(z.work);
        s->rows = malloc(z.rows);
        s->qcodes = malloc(z.qcodes);
        s->scores = malloc(z.scores);
        s->lut = malloc(z.lut);
        s->topk_bytes = z.topk;
        s->topk_work = malloc(z.topk ? z.topk : 1);
        ok = ok && s->codes && s->work && s->rows && s->qcodes && s->scores && s->lut && s->topk_work;
        s->st.code_bytes = ok ? (int64_t)z.codes : 0;
    }
    if (!ok) {
        sl_sparse_free(s);
        return sl_fail(SL_ENOMEM, "cannot allocate sparse attention for %" PRId64 " positions", n_ctx);
    }
    *out = s;
    return 0;
}

static uint64_t *codes_at(const struct sl_sparse *s, int32_t layer, int32_t g, int64_t pos) {
    return s->codes + (((int64_t)layer * s->hkv + g) * s->n_ctx + pos) * s->W;
}

/* Device mode: codes of [pos0, pos0 + n) of `layer` from the host table to the backend's. */
static int mirror_codes(struct sl_sparse *s, int32_t layer, int64_t pos0, int64_t n) {
    const int64_t W = s->W;
    for (int64_t i = 0; i < n; i += s->n_batch) {
        const int64_t m = n - i < s->n_batch ? n - i : s->n_batch;
        for (int32_t g = 0; g < s->hkv; g++)
            memcpy(s->cstage + (int64_t)g * m * W, codes_at(s, layer, g, pos0 + i), sizeof(uint64_t) * (size_t)(m * W));
        int rc = s->dev->sparse_codes(s->dev, s->ds, layer, pos0 + i, m, s->cstage);
        if (rc) return rc;
    }
    return 0;
}

/* Keys (n, hkv * d) as f32 values (f16-rounded already when `rounded`) or as f16 bits. */
static int add_keys(struct sl_sparse *s, int32_t layer, int64_t pos0, int64_t n, const float *k,
                    const uint16_t *k16) {
    if (!s->hash || layer < s->p.dense_layers) return 0;
    SL_ASSERT(pos0 >= 0 && pos0 + n <= s->n_ctx && n <= s->n_batch);
    for (int32_t g = 0; g < s->hkv; g++) {
        if (k) {
            sl_truth_gather_rows(k, s->hkv, g, s->d, NULL, n, s->rows);
            /* the f16 value the KV cache and store keep: codes recomputed from stored keys (a
             * reopened store) are then the same codes */
            sl_round_to_f16(s->rows, n * s->d);
        } else {
            for (int64_t t = 0; t < n; t++)
                sl_f16_row_to_f32(k16 + (t * s->hkv + g) * s->d, s->rows + t * s->d, s->d);
        }
        int rc = sl_hash_encode(sl_hash_key_fn(s->hash, layer, g), s->d, s->bits, s->rows, n,
                                codes_at(s, layer, g, pos0), s->work);
        if (rc) return rc;
    }
    return s->dev ? mirror_codes(s, layer, pos0, n) : 0;
}

int sl_sparse_add_keys(struct sl_sparse *s, int32_t layer, int64_t pos0, int64_t n, const float *k) {
    return add_keys(s, layer, pos0, n, k, NULL);
}

int sl_sparse_add_keys_f16(struct sl_sparse *s, int32_t layer, int64_t pos0, int64_t n, const uint16_t *k) {
    return add_keys(s, layer, pos0, n, NULL, k);
}

int sl_sparse_add_token_keys_f16(struct sl_sparse *s, int64_t pos, const uint16_t *k) {
    if (!s->hash) return 0;
    struct sl_backend *dev = s->dev;
    s->dev = NULL; /* the host table first, then one transfer for every layer */
    int rc = 0;
    for (int32_t l = s->p.dense_layers; l < s->n_layer && !rc; l++)
        rc = add_keys(s, l, pos, 1, NULL, k + (int64_t)l * s->hkv * s->d);
    s->dev = dev;
    if (rc || !dev) return rc;
    const int64_t W = s->W, per_layer = (int64_t)s->hkv * W;
    memset(s->cstage, 0, sizeof(uint64_t) * (size_t)(s->p.dense_layers * per_layer)); /* rows never read */
    for (int32_t l = s->p.dense_layers; l < s->n_layer; l++)
        for (int32_t g = 0; g < s->hkv; g++)
            memcpy(s->cstage + l * per_layer + g * W, codes_at(s, l, g, pos), sizeof(uint64_t) * (size_t)W);
    return dev->sparse_codes_at(dev, s->ds, pos, s->cstage);
}

int sl_sparse_add_head_keys_f16(struct sl_sparse *s, int32_t layer, int32_t g, int64_t pos0, int64_t n,
                                const uint16_t *k) {
    if (!s->hash || layer < s->p.dense_layers) return 0;
    SL_ASSERT(pos0 >= 0 && pos0 + n <= s->n_ctx);
    for (int64_t i = 0; i < n; i += s->n_batch) {
        int64_t m = n - i < s->n_batch ? n - i : s->n_batch;
        sl_f16_row_to_f32(k + i * s->d, s->rows, m * s->d);
        int rc = sl_hash_encode(sl_hash_key_fn(s->hash, layer, g), s->d, s->bits, s->rows, m,
                                codes_at(s, layer, g, pos0 + i), s->work);
        if (rc) return rc;
    }
    return 0;
}

bool sl_sparse_code_table(const struct sl_sparse *s, struct sl_code_table *out) {
    if (!s->hash) return false;
    *out = (struct sl_code_table){.codes = s->codes, .n_layer = s->n_layer, .n_head_kv = s->hkv, .words = s->W,
                                  .first_layer = s->p.dense_layers, .n_ctx = s->n_ctx};
    return true;
}

int sl_sparse_hash_id(struct sl_sparse *s, uint8_t out[32]) {
    if (!s->hash) return sl_fail(SL_EINVAL, "topk-exact has no hash");
    if (!s->has_hash_id) {
        uint8_t *bytes;
        size_t n;
        const uint8_t zero[32] = {0}; /* the function, whichever model the file names */
        int rc = sl_hash_serialize(s->hash, zero, &bytes, &n);
        if (rc) return rc;
        sl_sha256(bytes, n, s->hash_id);
        free(bytes);
        s->has_hash_id = true;
    }
    memcpy(out, s->hash_id, 32);
    return 0;
}

bool sl_sparse_applies(const struct sl_sparse *s, int32_t layer, int64_t n) {
    return s && layer >= s->p.dense_layers && (n == 1 || s->p.sparse_prefill);
}

/* Positions of [0, P) attended beyond the forced ones. */
static int64_t budget_k(const struct sl_sparse *s, int64_t P) {
    int64_t k = P > 0 ? sl_truth_budget_k(s->p.budget, P) : 0;
    return k < s->p.min_tokens ? s->p.min_tokens : k;
}

/* Float scores of [0, P) in s->fscore -> idx, ascending: the forced sinks and window, and
 * the top k of the other positions (ties toward later ones); or, with blocks, the
 * ceil(k / block) blocks with the highest best score over all their positions (ties toward
 * later blocks), as cpu/topk.h selects from integer scores. block_max: with blocks, each
 * block's best score is in s->ftmp already (s->fscore unused). */
static int64_t select_float(struct sl_sparse *s, int64_t P, int64_t k, int64_t *idx, bool block_max) {
    if (P <= 0) return 0;
    const int64_t B = s->p.block;
    if (B == 1) {
        memset(s->mask, 0, (size_t)P);
        int64_t forced = 0;
        for (int64_t j = 0; j < P; j++)
            if (j < s->p.n_sink || j >= P - s->p.n_window) s->fscore[j] = INFINITY, forced++;
        int64_t want = forced + k < P ? forced + k : P;
        if (want > 0) sl_truth_topk_mark(s->fscore, P, want, s->mask, 1, s->ftmp);
    } else {
        const int64_t nb = (P + B - 1) / B, kb = (k + B - 1) / B;
        for (int64_t b = 0; !block_max && b < nb; b++) {
            float m = -INFINITY;
            for (int64_t j = b * B; j < (b + 1) * B && j < P; j++) m = s->fscore[j] > m ? s->fscore[j] : m;
            s->ftmp[b] = m;
        }
        memset(s->mask, 0, (size_t)nb);
        if (kb > 0) sl_truth_topk_mark(s->ftmp, nb, kb < nb ? kb : nb, s->mask, 1, s->fscore);
        /* the chosen blocks' positions, and the sinks and window in the others: O(blocks) */
        const int64_t sinks = s->p.n_sink, win = P - s->p.n_window;
        int64_t c = 0;
        for (int64_t b = 0; b < nb; b++) {
            const int64_t j0 = b * B, j1 = j0 + B < P ? j0 + B : P;
            if (s->mask[b])
                for (int64_t j = j0; j < j1; j++) idx[c++] = j;
            else if (j0 < sinks || j1 > win)
                for (int64_t j = j0; j < j1; j++)
                    if (j < sinks || j >= win) idx[c++] = j;
        }
        return c;
    }
    int64_t c = 0;
    for (int64_t j = 0; j < P; j++)
        if (s->mask[j] & 1) idx[c++] = j;
    return c;
}

/* acc[j] += softmax_j(q . keys[j] / sqrt(d)) over n f16 key rows (q already f16-rounded, as
 * the dense kernel rounds it); tmp: n floats. */
static void add_softmax(const uint16_t *keys, int64_t n, const float *q, int32_t d, float *acc, float *tmp) {
    const float scale = 1.0f / sqrtf((float)d);
    float dot, mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        sl_f16_dot_multi(keys + j * d, q, 1, d, &dot);
        tmp[j] = dot * scale;
        mx = fmaxf(mx, tmp[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j < n; j++) sum += (tmp[j] = expf(tmp[j] - mx));
    for (int64_t j = 0; j < n; j++) acc[j] += (float)(tmp[j] / sum);
}

/* topk-exact relevance of [0, P) to the chunk: the sum over its rows and the group's heads
 * of the softmax over [0, P) (queries rounded to f16 as the dense kernel rounds them). */
static void exact_scores(struct sl_sparse *s, const struct sl_kv_cache *kv, int32_t layer, int32_t g, int64_t n,
                         int64_t P) {
    const int32_t d = s->d, G = s->G;
    const uint16_t *keys = sl_kv_cache_k(kv, layer, g, 0);
    memset(s->fscore, 0, sizeof(float) * (size_t)P);
    for (int64_t r = 0; r < n * G; r++) {
        float *qv = s->qg + r * d;
        sl_round_to_f16(qv, d);
        add_softmax(keys, P, qv, d, s->fscore, s->ftmp);
    }
}

/* Hash relevance of [0, P) to a chunk (core/sparse-select.h): s->fscore per position, or
 * with blocks s->ftmp per block. */
static void hash_chunk_scores(struct sl_sparse *s, struct sl_backend *be, int32_t layer, int32_t g, int64_t n,
                              int64_t P) {
    sl_select_chunk_table(s->qcodes + (int64_t)g * s->G * s->W, n, s->hq * s->W, s->G, s->W, s->bits, s->lut);
    sl_select_chunk_scores(be, s->lut, codes_at(s, layer, g, 0), s->W, P, s->p.block, s->fscore, s->ftmp);
}

/* Selected earlier positions of KV head g into idx (count returned). */
static int64_t select_head(struct sl_sparse *s, struct sl_backend *be, const struct sl_kv_cache *kv, int32_t layer,
                           int32_t g, int64_t n, int64_t P, int64_t k, int64_t *idx) {
    if (s->hash && n == 1) {
        sl_select_scan(be, s->qcodes + (int64_t)g * s->G * s->W, s->G, codes_at(s, layer, g, 0), P, s->W, s->scores);
        struct sl_topk_params tk = {.k = k, .n_sink = s->p.n_sink, .n_window = s->p.n_window, .block = s->p.block};
        return sl_topk_select(s->scores, P, sl_hamming_max_score(s->G, s->W), &tk, s->topk_work, s->topk_bytes,
                              idx);
    }
    if (s->hash) hash_chunk_scores(s, be, layer, g, n, P);
    else exact_scores(s, kv, layer, g, n, P);
    return select_float(s, P, k, idx, s->hash && s->p.block > 1);
}

void sl_sparse_quiesce(struct sl_sparse *s) {
    if (s && s->pstore) {
        (void)sl_kv_store_gather_wait(s->pstore, s->pticket); /* a prefetch only warms the cache */
        s->pstore = NULL;
    }
}

void sl_sparse_poll(struct sl_sparse *s) {
    if (s && s->pstore && sl_kv_store_gather_poll(s->pstore, s->pticket) != 0) s->pstore = NULL;
}

/* After a decode gather at `layer`: remember its selection, and start reading what the next
 * sparse layer selected at the previous step (consecutive steps select mostly the same
 * positions), so those blocks are in the store's cache when that layer asks. */
static void prefetch_next(struct sl_sparse *s, sl_kv_store_t store, int32_t layer) {
    memcpy(s->last_idx + (int64_t)layer * s->hkv * s->max_sel, s->idx, sizeof(int64_t) * (size_t)(s->hkv * s->max_sel));
    memcpy(s->last_cnt + (int64_t)layer * s->hkv, s->cnt, sizeof(int64_t) * (size_t)s->hkv);
    const int32_t next = layer + 1;
    if (!s->p.prefetch || next >= s->n_layer || s->last_cnt[(int64_t)next * s->hkv] < 0) return;
    struct sl_kv_gather *gs = s->pgather;
    for (int32_t g = 0; g < s->hkv; g++)
        gs[g] = (struct sl_kv_gather){.layer = next, .head = g,
                                      .idx = s->last_idx + ((int64_t)next * s->hkv + g) * s->max_sel,
                                      .n = s->last_cnt[(int64_t)next * s->hkv + g],
                                      .k_out = s->pk + (int64_t)g * s->max_sel * s->d,
                                      .v_out = s->pv + (int64_t)g * s->max_sel * s->d};
    if (sl_kv_store_gather_submit(store, gs, s->hkv, &s->pticket) == 0) {
        s->pstore = store;
        s->st.prefetches++;
    }
}

/* Keeps, of KV head g's fetched candidates, the forced positions and the k others with the
 * most attention from the chunk's rows and the group's heads (softmax over the candidates,
 * summed; ties toward later positions), compacting idx and the fetched rows in place. */
static void rerank_head(struct sl_sparse *s, int32_t g, const float *q, int64_t n, int64_t P, int64_t k,
                        int64_t rows_per_head) {
    const int32_t d = s->d, G = s->G;
    int64_t *idx = s->idx + (int64_t)g * s->max_sel;
    const int64_t cnt = s->cnt[g];
    if (cnt <= 0) return;
    uint16_t *gk = s->gk + g * rows_per_head * d, *gv = s->gv + g * rows_per_head * d;
    float qr[1024];
    memset(s->fscore, 0, sizeof(float) * (size_t)cnt);
    for (int64_t t = 0; t < n; t++)
        for (int32_t hh = 0; hh < G; hh++) {
            memcpy(qr, q + (t * s->hq + (int64_t)g * G + hh) * d, sizeof(float) * (size_t)d);
            sl_round_to_f16(qr, d);
            add_softmax(gk, cnt, qr, d, s->fscore, s->ftmp);
        }
    int64_t forced = 0;
    for (int64_t i = 0; i < cnt; i++)
        if (idx[i] < s->p.n_sink || idx[i] >= P - s->p.n_window) s->fscore[i] = INFINITY, forced++;
    const int64_t want = forced + k < cnt ? forced + k : cnt;
    memset(s->mask, 0, (size_t)cnt);
    sl_truth_topk_mark(s->fscore, cnt, want, s->mask, 1, s->ftmp);
    int64_t c = 0;
    for (int64_t i = 0; i < cnt; i++) {
        if (!s->mask[i]) continue;
        if (c != i) {
            idx[c] = idx[i];
            memcpy(gk + c * d, gk + i * d, sizeof(uint16_t) * (size_t)d);
            memcpy(gv + c * d, gv + i * d, sizeof(uint16_t) * (size_t)d);
        }
        c++;
    }
    /* the chunk's own rows follow the kept ones */
    memmove(gk + c * d, gk + cnt * d, sizeof(uint16_t) * (size_t)(n * d));
    memmove(gv + c * d, gv + cnt * d, sizeof(uint16_t) * (size_t)(n * d));
    s->cnt[g] = c;
}

/* Device mode, one decode token: everything in the backend's memory (see backend.h). */
static int attend_device_decode(struct sl_sparse *s, const struct sl_sparse_kv *kv, int32_t layer, const float *q,
                                int64_t P, float *out) {
    int rc = s->dev->sparse_decode(s->dev, s->ds, layer, q, kv->k, kv->v, P, budget_k(s, P), out);
    if (rc) return rc;
    s->st.sparse_calls++;
    s->st.candidates += P * s->hkv;
    return 0;
}

static int attend_host(struct sl_sparse *s, struct sl_backend *be, const struct sl_sparse_kv *kv, int32_t layer,
                       const float *q, int64_t n, int64_t pos0, float *out);

int sl_sparse_attend(struct sl_sparse *s, struct sl_backend *be, const struct sl_sparse_kv *kv, int32_t layer,
                     const float *q, int64_t n, int64_t pos0, float *out) {
    if (!s->dev) return attend_host(s, be, kv, layer, q, n, pos0, out);
    if (n == 1) return attend_device_decode(s, kv, layer, q, pos0, out);
    /* a prefill chunk: its queries to the host, the host path over the store, the result back */
    const size_t bytes = sizeof(float) * (size_t)(n * s->hq * s->d);
    int rc = be->download(be, s->hqry, q, bytes);
    if (!rc) rc = attend_host(s, s->host_be, kv, layer, s->hqry, n, pos0, s->hout);
    return rc ? rc : be->upload(be, out, s->hout, bytes);
}

static int attend_host(struct sl_sparse *s, struct sl_backend *be, const struct sl_sparse_kv *kv, int32_t layer,
                       const float *q, int64_t n, int64_t pos0, float *out) {
    const int32_t d = s->d, G = s->G, hq = s->hq, hkv = s->hkv;
    const int64_t P = pos0, k = budget_k(s, P), rows_per_head = s->max_sel + s->n_batch;
    int64_t forced = (s->p.n_sink < P ? s->p.n_sink : P) + (s->p.n_window < P ? s->p.n_window : P);
    if (k + forced >= P && !kv->store) /* every earlier position would be selected: plain dense */
        return be->attention(be, kv->cache, layer, q, n, pos0, hq, out);
    if (!s->hash && !kv->cache) return sl_fail(SL_EUNSUPPORTED, "topk-exact needs the KV cache in RAM");
    double t0 = sl_now_s();
    if (s->hash)
        for (int64_t t = 0; t < n; t++)
            for (int32_t h = 0; h < hq; h++) {
                int rc = sl_hash_encode(sl_hash_query_fn(s->hash, layer, h), d, s->bits, q + (t * hq + h) * d, 1,
                                        s->qcodes + (t * hq + h) * s->W, s->work);
                if (rc) return rc;
            }
    /* 1. selection per KV head */
    for (int32_t g = 0; g < hkv; g++) {
        int64_t *idx = s->idx + (int64_t)g * s->max_sel;
        if (!s->hash) /* exact scoring reads (and rounds) the group's query rows */
            for (int64_t t = 0; t < n; t++)
                memcpy(s->qg + t * G * d, q + (t * hq + (int64_t)g * G) * d, sizeof(float) * (size_t)(G * d));
        if (k + forced >= P) { /* store: all of [0, P) */
            for (int64_t j = 0; j < P; j++) idx[j] = j;
            s->cnt[g] = P;
        } else if ((s->cnt[g] = select_head(s, be, kv->cache, layer, g, n, P, k * s->p.rerank, idx)) < 0) {
            return (int)s->cnt[g];
        }
        SL_ASSERT(s->cnt[g] <= s->max_sel);
    }
    double t1 = sl_now_s();
    /* 2. the selected rows, then the chunk's own rows, per KV head */
    if (kv->store) {
        sl_sparse_quiesce(s); /* one gather in flight at a time; its blocks are cached now */
        struct sl_kv_gather gs[64];
        for (int32_t g = 0; g < hkv; g++)
            gs[g] = (struct sl_kv_gather){.layer = layer, .head = g, .idx = s->idx + (int64_t)g * s->max_sel,
                                          .n = s->cnt[g], .k_out = s->gk + g * rows_per_head * d,
                                          .v_out = s->gv + g * rows_per_head * d};
        int rc = sl_kv_store_gather(kv->store, gs, hkv);
        if (rc) return rc;
        if (n == 1) prefetch_next(s, kv->store, layer);
    }
    for (int32_t g = 0; g < hkv; g++) {
        uint16_t *gk = s->gk + g * rows_per_head * d, *gv = s->gv + g * rows_per_head * d;
        const int64_t cnt = s->cnt[g];
        if (!kv->store) {
            const uint16_t *kr = sl_kv_cache_k(kv->cache, layer, g, 0), *vr = sl_kv_cache_v(kv->cache, layer, g, 0);
            const int64_t *idx = s->idx + (int64_t)g * s->max_sel;
            for (int64_t i = 0; i < cnt; i++) {
                memcpy(gk + i * d, kr + idx[i] * d, sizeof(uint16_t) * (size_t)d);
                memcpy(gv + i * d, vr + idx[i] * d, sizeof(uint16_t) * (size_t)d);
            }
            memcpy(gk + cnt * d, kr + pos0 * d, sizeof(uint16_t) * (size_t)(n * d));
            memcpy(gv + cnt * d, vr + pos0 * d, sizeof(uint16_t) * (size_t)(n * d));
        } else {
            for (int64_t t = 0; t < n; t++) {
                memcpy(gk + (cnt + t) * d, kv->ck + (t * hkv + g) * d, sizeof(uint16_t) * (size_t)d);
                memcpy(gv + (cnt + t) * d, kv->cv + (t * hkv + g) * d, sizeof(uint16_t) * (size_t)d);
            }
        }
    }
    if (s->p.rerank > 1 && k + forced < P)
        for (int32_t g = 0; g < hkv; g++) rerank_head(s, g, q, n, P, k, rows_per_head);
    double t2 = sl_now_s();
    /* 3. attention per KV head: the attended rows as a one-head, one-layer cache, the dense
     * kernel over them, the chunk at positions cnt.. of it (causal within the chunk) */
    for (int32_t g = 0; g < hkv; g++) {
        const int64_t cnt = s->cnt[g];
        for (int64_t t = 0; t < n; t++)
            memcpy(s->qg + t * G * d, q + (t * hq + (int64_t)g * G) * d, sizeof(float) * (size_t)(G * d));
        struct sl_kv_cache view = {.n_layer = 1, .n_head_kv = 1, .head_dim = d, .n_ctx = cnt + n,
                                   .k = s->gk + g * rows_per_head * d, .v = s->gv + g * rows_per_head * d};
        int rc = be->attention(be, &view, 0, s->qg, n, cnt, G, s->og);
        if (rc) return rc;
        for (int64_t t = 0; t < n; t++)
            memcpy(out + (t * hq + (int64_t)g * G) * d, s->og + t * G * d, sizeof(float) * (size_t)(G * d));
        if (n == 1) s->st.selected += cnt, s->st.candidates += P;
        else s->st.prefill_selected += cnt, s->st.prefill_candidates += P;
    }
    if (n == 1) {
        s->st.select_s += t1 - t0;
        s->st.gather_s += t2 - t1;
        s->st.sparse_calls++;
    } else {
        s->st.prefill_select_s += t1 - t0;
        s->st.prefill_gather_s += t2 - t1;
        s->st.prefill_calls++;
    }
    return 0;
}

void sl_sparse_stats(const struct sl_sparse *s, struct sl_attn_stats *out) {
    if (!s) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = s->st;
    struct sl_backend_sparse_stats ds;
    if (s->dev && s->dev->sparse_stats(s->dev, s->ds, &ds) == 0) {
        out->selected += ds.selected;
        out->dev_rows = ds.rows;
        out->dev_row_hits = ds.row_hits;
        out->dev_bytes_in = ds.bytes_in;
    }
}

int64_t sl_sparse_device_bytes(const struct sl_sparse *s) { return s ? s->dev_bytes : 0; }

int sl_sparse_attach_device(struct sl_sparse *s, struct sl_backend *be, sl_kv_store_t store, int64_t cache_bytes,
                            int n_threads) {
    SL_ASSERT(!s->dev);
    if (!be->sparse_create)
        return sl_fail(SL_EUNSUPPORTED, "the %s backend has no sparse attention", be->name);
    if (!s->hash) return sl_fail(SL_EUNSUPPORTED, "topk-exact reads every key: not on the %s backend", be->name);
    if (s->p.rerank > 1) return sl_fail(SL_EUNSUPPORTED, "--rerank is not implemented on the %s backend", be->name);
    int rc = sl_backend_cpu_create(n_threads, &s->host_be);
    if (rc) return rc;
    const size_t chunk = sizeof(float) * (size_t)(s->n_batch * s->hq * s->d);
    s->hqry = malloc(chunk);
    s->hout = malloc(chunk);
    const int64_t stage = s->n_batch > s->n_layer ? s->n_batch : s->n_layer; /* a chunk of one layer, or one position of all */
    s->cstage = malloc(sizeof(uint64_t) * (size_t)(s->hkv * stage * s->W));
    if (!s->hqry || !s->hout || !s->cstage) return sl_fail(SL_ENOMEM, "out of memory");
    const struct sl_backend_sparse_params bp = {
        .hash = s->hash, .store = store, .n_layer = s->n_layer, .n_head = s->hq, .n_head_kv = s->hkv, .head_dim = s->d,
        .n_ctx = s->n_ctx, .max_sel = s->max_sel, .n_sink = s->p.n_sink, .n_window = s->p.n_window,
        .block = s->p.block, .cache_bytes = cache_bytes, .prefetch = s->p.prefetch || cache_bytes > 0};
    if ((rc = be->sparse_create(be, &bp, &s->ds))) return rc;
    s->dev = be;
    /* what a resumed store brought: its keys were hashed into the host table */
    const int64_t n = sl_kv_store_n_tokens(store);
    for (int32_t l = s->p.dense_layers; l < s->n_layer && !rc; l++) rc = mirror_codes(s, l, 0, n);
    struct sl_backend_sparse_stats ds;
    if (!rc && !(rc = be->sparse_stats(be, s->ds, &ds))) s->dev_bytes = ds.resident_bytes;
    return rc;
}
