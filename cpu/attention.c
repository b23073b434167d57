/* Dense causal attention (see attention.h). */
#include "cpu/attention.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "core/internal.h"
#include "cpu/f16-row.h"

#define DECODE_MAX_ROWS 8

/* ---- decode: flash-decoding over position chunks ----------------------------------------- */

/* The positions are cut into chunks whose count depends on the length alone, never on the
 * thread count, and the chunks' partial softmaxes are merged in chunk order: the output is
 * bitwise the same for any number of threads (so is a greedy generation). */
#define DECODE_CHUNK_MIN 256
#define DECODE_MAX_CHUNKS 64

static int64_t decode_chunks(int64_t len) {
    int64_t c = (len + DECODE_CHUNK_MIN - 1) / DECODE_CHUNK_MIN;
    return c < 1 ? 1 : c < DECODE_MAX_CHUNKS ? c : DECODE_MAX_CHUNKS;
}

struct decode_task {
    const struct sl_kv_cache *kv;
    int32_t layer, n_head, n_rep, hd;
    const float *q;  /* (n_head, hd), f16-rounded */
    int64_t len;     /* positions [0, len) */
    int64_t chunks;  /* decode_chunks(len) */
    float scale;
    float *part;     /* (chunks, n_head, 2): max, sum of the chunk's softmax numerators */
    float *acc;      /* (chunks, n_head, hd): the chunk's weighted sum of V rows */
    float *scores;   /* (nth, n_rep, slice) */
    int64_t slice;   /* the longest chunk */
};

static void decode_chunk(const struct decode_task *t, int64_t c, float *sc) {
    int64_t j0, j1;
    sl_split_range(t->len, (int)c, (int)t->chunks, &j0, &j1);
    const int hd = t->hd, nr = t->n_rep;
    const int64_t m = j1 - j0;
    for (int32_t g = 0; g < t->kv->n_head_kv; g++) {
        const uint16_t *k = sl_kv_cache_k(t->kv, t->layer, g, 0), *v = sl_kv_cache_v(t->kv, t->layer, g, 0);
        const float *q = t->q + (size_t)g * nr * hd; /* the group's queries, contiguous */
        float s[64], mx[64], sum[64];
        /* Scores: each K row is read once for the whole group. */
        for (int64_t j = j0; j < j1; j++) {
            sl_f16_dot_multi(k + j * hd, q, nr, hd, s);
            for (int r = 0; r < nr; r++) sc[r * t->slice + (j - j0)] = s[r] * t->scale;
        }
        for (int r = 0; r < nr; r++) {
            mx[r] = -INFINITY;
            for (int64_t j = 0; j < m; j++) mx[r] = sc[r * t->slice + j] > mx[r] ? sc[r * t->slice + j] : mx[r];
            sum[r] = m ? sl_exp_sub_sum(sc + r * t->slice, m, mx[r]) : 0;
        }
        /* Values: each V row is read once and added into every query's accumulator. */
        float *acc = t->acc + (size_t)c * (size_t)t->n_head * (size_t)hd + (size_t)g * nr * hd;
        memset(acc, 0, (size_t)nr * (size_t)hd * sizeof *acc);
        for (int64_t j = j0; j < j1; j++) {
            for (int r = 0; r < nr; r++) s[r] = sc[r * t->slice + (j - j0)];
            sl_f16_axpy_multi(s, v + j * hd, nr, hd, acc);
        }
        for (int r = 0; r < nr; r++) {
            float *p = t->part + ((size_t)c * t->n_head + (size_t)(g * nr + r)) * 2;
            p[0] = mx[r];
            p[1] = sum[r];
        }
    }
}

static void decode_slice(void *arg, int ith, int nth) {
    const struct decode_task *t = arg;
    float *sc = t->scores + (size_t)ith * (size_t)t->slice * (size_t)t->n_rep; /* (nr, slice) */
    for (int64_t c = ith; c < t->chunks; c += nth) decode_chunk(t, c, sc);
}

static int attend_decode(sl_threadpool *pool, struct sl_attn_scratch *s, const struct sl_kv_cache *kv,
                         int32_t layer, const float *q, int64_t n, int64_t pos0, int32_t n_head, float *out) {
    const int hd = kv->head_dim, nth = sl_threadpool_size(pool), nr = n_head / kv->n_head_kv;
    if (nr > 64) return sl_fail(SL_EUNSUPPORTED, "GQA groups over 64 heads");
    const int64_t max_len = pos0 + n, max_chunks = decode_chunks(max_len);
    /* the longest chunk of any length up to max_len: a chunk is at most DECODE_CHUNK_MIN long
     * until the count reaches its cap, then ceil(len / cap) */
    int64_t slice = (max_len + max_chunks - 1) / max_chunks;
    if (slice < DECODE_CHUNK_MIN) slice = DECODE_CHUNK_MIN;
    float *qr = sl_scratch_get(&s->q, (size_t)n_head * (size_t)hd * sizeof(float));
    float *part = sl_scratch_get(&s->part, (size_t)max_chunks * (size_t)n_head * (size_t)(hd + 2) * sizeof(float));
    float *acc = part + (size_t)max_chunks * n_head * 2;
    float *scores = sl_scratch_get(&s->scores, (size_t)nth * (size_t)slice * (size_t)nr * sizeof(float));
    if (!qr || !part || !scores) return SL_ENOMEM;
    for (int64_t t = 0; t < n; t++) {
        int64_t len = pos0 + t + 1, chunks = decode_chunks(len);
        memcpy(qr, q + t * n_head * hd, (size_t)n_head * (size_t)hd * sizeof(float));
        sl_round_to_f16(qr, (int64_t)n_head * hd);
        struct decode_task dt = {kv, layer, n_head, nr, hd, qr, len, chunks, 1.0f / sqrtf((float)hd),
                                 part, acc, scores, slice};
        sl_threadpool_run(pool, decode_slice, &dt);
        /* Merge the chunks' partial softmaxes in order: rescale each to the global max. */
        for (int32_t h = 0; h < n_head; h++) {
            float *o = out + (t * n_head + h) * hd, m = -INFINITY, l = 0;
            for (int64_t i = 0; i < chunks; i++) {
                const float *p = part + ((size_t)i * n_head + (size_t)h) * 2;
                if (p[1] > 0 && p[0] > m) m = p[0];
            }
            memset(o, 0, (size_t)hd * sizeof *o);
            for (int64_t i = 0; i < chunks; i++) {
                const float *p = part + ((size_t)i * n_head + (size_t)h) * 2;
                const float *a = acc + ((size_t)i * n_head + (size_t)h) * (size_t)hd;
                if (p[1] <= 0) continue; /* empty chunk */
                float f = expf(p[0] - m);
                l += f * p[1];
                for (int d = 0; d < hd; d++) o[d] += f * a[d];
            }
            for (int d = 0; d < hd; d++) o[d] /= l;
        }
    }
    return 0;
}

/* ---- prefill: sgemm per (head, tile of query rows) ----------------------------------------- */

/* Units of work: one head's PREFILL_TILE query rows; S = Q.K^T over the positions the tile's
 * last row sees (the causal triangle past them is skipped), softmax, O = S.V, each product
 * one single-threaded sgemm. Units go to whichever thread is free; a unit's result does not
 * depend on who computes it, so the output is bitwise the same for any thread count. */
#define PREFILL_TILE 128

struct prefill_task {
    const float *qr, *kf, *vf; /* qr (n, n_head * hd) f16-rounded; kf, vf (len, hd) of KV head g */
    float *out, *scores;       /* scores: per thread, PREFILL_TILE * len */
    int64_t n, pos0, len, n_tiles;
    int32_t n_head, n_rep, hd, g;
    float scale;
    atomic_int_fast64_t next;
};

static void prefill_units(void *arg, int ith, int nth) {
    (void)nth;
    struct prefill_task *t = arg;
    const int hd = t->hd;
    const int64_t width = (int64_t)t->n_head * hd;
    float *sc = t->scores + (size_t)ith * PREFILL_TILE * (size_t)t->len;
    for (int64_t u; (u = atomic_fetch_add(&t->next, 1)) < t->n_tiles * t->n_rep;) {
        int32_t h = t->g * t->n_rep + (int32_t)(u / t->n_tiles);
        int64_t r0 = u % t->n_tiles * PREFILL_TILE, rows = t->n - r0 < PREFILL_TILE ? t->n - r0 : PREFILL_TILE;
        int64_t cols = t->pos0 + r0 + rows; /* what the tile's last row sees */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, hd, t->scale,
                    t->qr + r0 * width + h * hd, (int)width, t->kf, hd, 0.0f, sc, (int)cols);
        for (int64_t r = 0; r < rows; r++) {
            float *row = sc + r * cols;
            int64_t visible = t->pos0 + r0 + r + 1; /* causal: positions [0, pos0 + r0 + r] */
            float m = -INFINITY;
            for (int64_t j = 0; j < visible; j++) m = row[j] > m ? row[j] : m; /* not fmaxf: a libm call */
            /* vectorised exp: at long contexts this loop runs len x n_batch times per head */
            float inv = 1.0f / sl_exp_sub_sum(row, visible, m);
            for (int64_t j = 0; j < visible; j++) row[j] *= inv;
            for (int64_t j = visible; j < cols; j++) row[j] = 0;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, hd, (int)cols, 1.0f, sc, (int)cols,
                    t->vf, hd, 0.0f, t->out + r0 * width + h * hd, (int)width);
    }
}

struct convert_task {
    const uint16_t *src;
    float *dst;
    int64_t n;
};

static void convert_rows(void *arg, int ith, int nth) {
    const struct convert_task *t = arg;
    int64_t a, b;
    sl_split_range(t->n, ith, nth, &a, &b);
    sl_f16_row_to_f32(t->src + a, t->dst + a, b - a);
}

static int attend_prefill(sl_threadpool *pool, struct sl_attn_scratch *s, const struct sl_kv_cache *kv,
                          int32_t layer, const float *q, int64_t n, int64_t pos0, int32_t n_head, float *out) {
    const int hd = kv->head_dim, nth = sl_threadpool_size(pool);
    const int64_t len = pos0 + n, width = (int64_t)n_head * hd;
    float *qr = sl_scratch_get(&s->q, (size_t)n * (size_t)width * sizeof(float));
    float *kf = sl_scratch_get(&s->kf, (size_t)len * (size_t)hd * sizeof(float));
    float *vf = sl_scratch_get(&s->vf, (size_t)len * (size_t)hd * sizeof(float));
    float *sc = sl_scratch_get(&s->scores, (size_t)nth * PREFILL_TILE * (size_t)len * sizeof(float));
    if (!qr || !kf || !vf || !sc) return SL_ENOMEM;
    memcpy(qr, q, (size_t)n * (size_t)width * sizeof(float));
    sl_round_to_f16(qr, n * width);
    for (int32_t g = 0; g < kv->n_head_kv; g++) {
        struct convert_task ck = {sl_kv_cache_k(kv, layer, g, 0), kf, len * hd};
        struct convert_task cv = {sl_kv_cache_v(kv, layer, g, 0), vf, len * hd};
        sl_threadpool_run(pool, convert_rows, &ck);
        sl_threadpool_run(pool, convert_rows, &cv);
        struct prefill_task pt = {.qr = qr, .kf = kf, .vf = vf, .out = out, .scores = sc, .n = n,
                                  .pos0 = pos0, .len = len, .n_tiles = (n + PREFILL_TILE - 1) / PREFILL_TILE,
                                  .n_head = n_head, .n_rep = n_head / kv->n_head_kv, .hd = hd, .g = g,
                                  .scale = 1.0f / sqrtf((float)hd)};
        atomic_init(&pt.next, 0);
        sl_threadpool_run(pool, prefill_units, &pt);
    }
    return 0;
}

int sl_cpu_attention(sl_threadpool *pool, struct sl_attn_scratch *s, const struct sl_kv_cache *kv,
                     int32_t layer, const float *q, int64_t n, int64_t pos0, int32_t n_head, float *out) {
    if (n_head % kv->n_head_kv) return sl_fail(SL_EINVAL, "heads not a multiple of KV heads");
    if (pos0 + n > kv->n_ctx) return sl_fail(SL_EBOUNDS, "attention past the cache capacity");
    if (n <= DECODE_MAX_ROWS) return attend_decode(pool, s, kv, layer, q, n, pos0, n_head, out);
    return attend_prefill(pool, s, kv, layer, q, n, pos0, n_head, out);
}

void sl_attn_scratch_free(struct sl_attn_scratch *s) {
    sl_scratch_free(&s->q);
    sl_scratch_free(&s->part);
    sl_scratch_free(&s->scores);
    sl_scratch_free(&s->kf);
    sl_scratch_free(&s->vf);
}
