/* Sparse decode attention (see sparse-attn.h). */
#include "core/sparse-attn.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/attn-truth.h"
#include "core/hash.h"
#include "core/internal.h"
#include "cpu/f16-row.h"
#include "cpu/hamming.h"
#include "cpu/topk.h"

struct sl_sparse {
    struct sl_attn_params p; /* hash_path not kept */
    sl_hash *hash;           /* NULL for topk-exact */
    int32_t n_layer, hq, hkv, d, G, bits, W;
    int64_t n_ctx;
    uint64_t *codes;         /* (n_layer, hkv, n_ctx, W) */
    float *work, *rows;      /* hash scratch; (max(n_batch, hq), d) gathered rows */
    uint64_t *qcodes;        /* (hq, W) */
    uint16_t *scores;        /* (n_ctx) */
    float *exact, *exact_tmp, *qr; /* topk-exact: (n_ctx) scores, (n_ctx) scratch, (G, d) */
    uint8_t *mask;           /* (n_ctx) */
    void *topk_work;
    size_t topk_bytes;
    int64_t *idx;            /* (max_count) */
    uint16_t *gk, *gv;       /* (max_count, d) gathered rows of one KV head */
    struct sl_attn_stats st;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

struct sl_attn_params sl_attn_default_params(enum sl_attn_mode mode) {
    return (struct sl_attn_params){.mode = mode, .budget = 0.02f, .min_tokens = 64, .n_sink = 4,
                                   .n_window = 64, .dense_layers = 2, .bits = 64, .hash_path = NULL};
}

void sl_sparse_free(struct sl_sparse *s) {
    if (!s) return;
    sl_hash_free(s->hash);
    free(s->codes);
    free(s->work);
    free(s->rows);
    free(s->qcodes);
    free(s->scores);
    free(s->exact);
    free(s->exact_tmp);
    free(s->qr);
    free(s->mask);
    free(s->topk_work);
    free(s->idx);
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
    if (p->dense_layers > cfg->n_layer)
        return sl_fail(SL_EINVAL, "attention: %d dense layers of %d", p->dense_layers, cfg->n_layer);
    if (p->mode == SL_ATTN_SIMHASH && (p->bits < 32 || p->bits % 32 || p->bits > 1024))
        return sl_fail(SL_EINVAL, "attention: simhash bits %d is not a multiple of 32 in 32..1024", p->bits);
    if (p->mode == SL_ATTN_SPOTLIGHT && (!p->hash_path || !*p->hash_path))
        return sl_fail(SL_EINVAL, "attention: spotlight needs a hash file (spotlight train-hash)");
    if (cfg->n_head / cfg->n_head_kv > 64) return sl_fail(SL_EUNSUPPORTED, "GQA groups over 64 heads");
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
    const int64_t d = s->d, rows = n_batch > s->hq ? n_batch : s->hq;
    struct sl_topk_params tk = {.k = n_ctx, .n_sink = p->n_sink, .n_window = p->n_window, .block = 1};
    const int64_t max_count = sl_topk_max_count(n_ctx, &tk);
    s->idx = malloc(sizeof(int64_t) * (size_t)max_count);
    s->gk = malloc(sizeof(uint16_t) * (size_t)(max_count * d));
    s->gv = malloc(sizeof(uint16_t) * (size_t)(max_count * d));
    s->mask = malloc((size_t)n_ctx);
    bool ok = s->idx && s->gk && s->gv && s->mask;
    if (s->hash) {
        s->bits = sl_hash_get_params(s->hash)->bits;
        s->W = sl_hash_code_words(s->bits);
        if ((rc = sl_hamming_check(s->G, s->W))) {
            sl_sparse_free(s);
            return rc;
        }
        uint64_t words;
        if (sl_mul_overflow_u64((uint64_t)s->n_layer * (uint64_t)s->hkv * (uint64_t)n_ctx, (uint64_t)s->W, &words) ||
            words > SIZE_MAX / sizeof(uint64_t))
            ok = false;
        else
            s->codes = malloc((size_t)words * sizeof(uint64_t));
        s->work = malloc(sizeof(float) * sl_hash_work_floats(s->d, s->bits, rows));
        s->rows = malloc(sizeof(float) * (size_t)(rows * d));
        s->qcodes = malloc(sizeof(uint64_t) * (size_t)(s->hq * s->W));
        s->scores = malloc(sizeof(uint16_t) * (size_t)n_ctx);
        s->topk_bytes = sl_topk_workspace_bytes(n_ctx, sl_hamming_max_score(s->G, s->W), 1);
        s->topk_work = malloc(s->topk_bytes ? s->topk_bytes : 1);
        ok = ok && s->codes && s->work && s->rows && s->qcodes && s->scores && s->topk_work;
        s->st.code_bytes = ok ? (int64_t)(words * sizeof(uint64_t)) : 0;
    } else {
        s->exact = malloc(sizeof(float) * (size_t)n_ctx);
        s->exact_tmp = malloc(sizeof(float) * (size_t)n_ctx);
        s->qr = malloc(sizeof(float) * (size_t)(s->G * d));
        ok = ok && s->exact && s->exact_tmp && s->qr;
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

int sl_sparse_add_keys(struct sl_sparse *s, int32_t layer, int64_t pos0, int64_t n, const float *k) {
    if (!s->hash || layer < s->p.dense_layers) return 0;
    SL_ASSERT(pos0 >= 0 && pos0 + n <= s->n_ctx);
    for (int32_t g = 0; g < s->hkv; g++) {
        sl_truth_gather_rows(k, s->hkv, g, s->d, NULL, n, s->rows);
        int rc = sl_hash_encode(sl_hash_key_fn(s->hash, layer, g), s->d, s->bits, s->rows, n,
                                codes_at(s, layer, g, pos0), s->work);
        if (rc) return rc;
    }
    return 0;
}

bool sl_sparse_applies(const struct sl_sparse *s, int32_t layer, int64_t n) {
    return s && n == 1 && layer >= s->p.dense_layers;
}

/* topk-exact: scores = the group's summed softmax over keys [0, n); forced positions first. */
static int64_t select_exact(struct sl_sparse *s, const struct sl_kv_cache *kv, int32_t layer, int32_t g,
                            const float *q, int64_t n, int64_t k) {
    const int32_t d = s->d, G = s->G;
    if (n <= 0) return 0;
    const uint16_t *keys = sl_kv_cache_k(kv, layer, g, 0);
    memcpy(s->qr, q + (int64_t)g * G * d, sizeof(float) * (size_t)(G * d));
    sl_round_to_f16(s->qr, (int64_t)G * d); /* as the dense kernel does */
    const float scale = 1.0f / sqrtf((float)d);
    memset(s->exact, 0, sizeof(float) * (size_t)n);
    float dots[64];
    for (int32_t hh = 0; hh < G; hh++) {
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            sl_f16_dot_multi(keys + j * d, s->qr + (int64_t)hh * d, 1, d, dots);
            s->exact_tmp[j] = dots[0] * scale;
            mx = fmaxf(mx, s->exact_tmp[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < n; j++) sum += (s->exact_tmp[j] = expf(s->exact_tmp[j] - mx));
        for (int64_t j = 0; j < n; j++) s->exact[j] += (float)(s->exact_tmp[j] / sum);
    }
    /* forced positions outrank everything; then the exact top of the rest */
    int64_t forced = 0;
    for (int64_t j = 0; j < n; j++)
        if (j < s->p.n_sink || j >= n - s->p.n_window) s->exact[j] = INFINITY, forced++;
    int64_t want = forced + k < n ? forced + k : n;
    memset(s->mask, 0, (size_t)n);
    sl_truth_topk_mark(s->exact, n, want, s->mask, 1, s->exact_tmp);
    int64_t c = 0;
    for (int64_t j = 0; j < n; j++)
        if (s->mask[j]) s->idx[c++] = j;
    return c;
}

int sl_sparse_attend(struct sl_sparse *s, struct sl_backend *be, const struct sl_kv_cache *kv, int32_t layer,
                     const float *q, int64_t pos, float *out) {
    const int32_t d = s->d, G = s->G;
    const int64_t n = pos + 1;
    int64_t k = sl_truth_budget_k(s->p.budget, n);
    if (k < s->p.min_tokens) k = s->p.min_tokens < n ? s->p.min_tokens : n;
    double t0 = now_s();
    if (s->hash)
        for (int32_t h = 0; h < s->hq; h++) {
            int rc = sl_hash_encode(sl_hash_query_fn(s->hash, layer, h), d, s->bits, q + (int64_t)h * d, 1,
                                    s->qcodes + (int64_t)h * s->W, s->work);
            if (rc) return rc;
        }
    for (int32_t g = 0; g < s->hkv; g++) {
        double t1 = now_s();
        int64_t cnt;
        if (s->hash) {
            sl_hamming_scan(s->qcodes + (int64_t)g * G * s->W, G, codes_at(s, layer, g, 0), n, s->W, s->scores);
            struct sl_topk_params tk = {.k = k, .n_sink = s->p.n_sink, .n_window = s->p.n_window, .block = 1};
            cnt = sl_topk_select(s->scores, n, sl_hamming_max_score(G, s->W), &tk, s->topk_work, s->topk_bytes, s->idx);
            if (cnt < 0) return (int)cnt;
        } else {
            cnt = select_exact(s, kv, layer, g, q, n, k);
        }
        double t2 = now_s();
        const uint16_t *kr = sl_kv_cache_k(kv, layer, g, 0), *vr = sl_kv_cache_v(kv, layer, g, 0);
        for (int64_t i = 0; i < cnt; i++) {
            memcpy(s->gk + i * d, kr + s->idx[i] * d, sizeof(uint16_t) * (size_t)d);
            memcpy(s->gv + i * d, vr + s->idx[i] * d, sizeof(uint16_t) * (size_t)d);
        }
        double t3 = now_s();
        /* the gathered rows as a one-head, one-layer cache: the dense decode kernel over them */
        struct sl_kv_cache view = {.n_layer = 1, .n_head_kv = 1, .head_dim = d, .n_ctx = cnt, .k = s->gk, .v = s->gv};
        int rc = be->attention(be, &view, 0, q + (int64_t)g * G * d, 1, cnt - 1, G, out + (int64_t)g * G * d);
        if (rc) return rc;
        s->st.select_s += t2 - t1 + (g == 0 ? t1 - t0 : 0);
        s->st.gather_s += t3 - t2;
        s->st.selected += cnt;
        s->st.candidates += n;
    }
    s->st.sparse_calls++;
    return 0;
}

void sl_sparse_stats(const struct sl_sparse *s, struct sl_attn_stats *out) {
    if (s) *out = s->st;
    else memset(out, 0, sizeof *out);
}
