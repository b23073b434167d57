/* Retrieval evaluation of hashes (see hash-eval.h). Per KV head: the truth once, then for
 * every hash its key codes, its query codes and, per sampled query, one scan and one top-k
 * per budget. */
#include "core/hash-eval.h"

#include <stdlib.h>
#include <string.h>

#include "core/attn-truth.h"
#include "core/internal.h"
#include "cpu/hamming.h"
#include "cpu/topk.h"

struct eval_ws {
    int32_t *qi;
    float *xk, *xq, *A, *L, *sel, *hwork;
    uint8_t *mask;          /* (Q, N): bit b set when key j is in query r's exact top-k at budget b */
    double *oracle;         /* (Q, n_budgets) */
    uint64_t *kcode, *qcode, *qrow;
    uint16_t *scores;
    int64_t *picked;
    void *topk_work;
    size_t topk_bytes;
};

static void ws_free(struct eval_ws *w) {
    free(w->qi);
    free(w->xk);
    free(w->xq);
    free(w->A);
    free(w->L);
    free(w->sel);
    free(w->hwork);
    free(w->mask);
    free(w->oracle);
    free(w->kcode);
    free(w->qcode);
    free(w->qrow);
    free(w->scores);
    free(w->picked);
    free(w->topk_work);
}

static int check(const sl_hash *const *hashes, int32_t n_hash, int32_t layer,
                 const struct sl_hash_train_seq *seq, const struct sl_hash_eval_params *p) {
    if (n_hash < 1 || !hashes || !seq || !p || !p->budgets || p->n_budgets < 1 ||
        p->n_budgets > SL_HASH_EVAL_MAX_BUDGETS || p->queries < 1 || p->min_pos < 1 ||
        p->min_pos >= seq->seq_len)
        return sl_fail(SL_EINVAL, "retrieval evaluation: bad parameters (queries %d, min_pos %d, "
                       "%d positions, %d budgets)", p ? p->queries : 0, p ? p->min_pos : 0,
                       seq ? seq->seq_len : 0, p ? p->n_budgets : 0);
    for (int32_t b = 0; b < p->n_budgets; b++)
        if (!(p->budgets[b] > 0 && p->budgets[b] <= 1))
            return sl_fail(SL_EINVAL, "retrieval evaluation: budget %g outside (0, 1]", p->budgets[b]);
    const struct sl_hash_params *h0 = sl_hash_get_params(hashes[0]);
    if (h0->n_head_q / h0->n_head_kv > 64)
        return sl_fail(SL_EINVAL, "retrieval evaluation: groups of more than 64 query heads");
    if (layer < 0 || layer >= h0->n_layer)
        return sl_fail(SL_EINVAL, "retrieval evaluation: layer %d of %d", layer, h0->n_layer);
    for (int32_t m = 0; m < n_hash; m++) {
        const struct sl_hash_params *hp = sl_hash_get_params(hashes[m]);
        if (hp->n_layer != h0->n_layer || hp->n_head_q != h0->n_head_q ||
            hp->n_head_kv != h0->n_head_kv || hp->head_dim != h0->head_dim)
            return sl_fail(SL_ESHAPE, "retrieval evaluation: hash %d has another shape", m);
        int rc = sl_hamming_check(hp->n_head_q / hp->n_head_kv, sl_hash_code_words(hp->bits));
        if (rc) return rc;
    }
    return 0;
}

int sl_hash_eval_layer(const sl_hash *const *hashes, int32_t n_hash, int32_t layer,
                       const struct sl_hash_train_seq *seq, const struct sl_hash_eval_params *p,
                       struct sl_hash_eval_cell *out) {
    int rc = check(hashes, n_hash, layer, seq, p);
    if (rc) return rc;
    const struct sl_hash_params *h0 = sl_hash_get_params(hashes[0]);
    const int32_t d = h0->head_dim, hq = h0->n_head_q, hkv = h0->n_head_kv, G = hq / hkv;
    const int64_t N = seq->seq_len, Q = p->queries, NB = p->n_budgets;
    int32_t maxW = 0, maxbits = 0;
    for (int32_t m = 0; m < n_hash; m++) {
        int32_t b = sl_hash_get_params(hashes[m])->bits;
        maxbits = b > maxbits ? b : maxbits;
    }
    maxW = sl_hash_code_words(maxbits);
    const int32_t max_score = sl_hamming_max_score(G, maxW);
    struct sl_topk_params tk0 = {.k = N, .n_sink = 0, .n_window = 0, .block = 1};

    struct eval_ws w = {0};
    w.qi = malloc(sizeof(int32_t) * (size_t)Q);
    w.xk = malloc(sizeof(float) * (size_t)(N * d));
    w.xq = malloc(sizeof(float) * (size_t)(G * Q * d));
    w.A = malloc(sizeof(float) * (size_t)(Q * N));
    w.L = malloc(sizeof(float) * (size_t)(Q * N));
    w.sel = malloc(sizeof(float) * (size_t)N);
    w.hwork = malloc(sizeof(float) * sl_hash_work_floats(d, maxbits, N > Q ? N : Q));
    w.mask = malloc((size_t)(Q * N));
    w.oracle = malloc(sizeof(double) * (size_t)(Q * NB));
    w.kcode = malloc(sizeof(uint64_t) * (size_t)(N * maxW));
    w.qcode = malloc(sizeof(uint64_t) * (size_t)(G * Q * maxW));
    w.qrow = malloc(sizeof(uint64_t) * (size_t)(G * maxW));
    w.scores = malloc(sizeof(uint16_t) * (size_t)N);
    w.picked = malloc(sizeof(int64_t) * (size_t)sl_topk_max_count(N, &tk0));
    w.topk_bytes = sl_topk_workspace_bytes(N, max_score, 1);
    w.topk_work = malloc(w.topk_bytes);
    if (!w.qi || !w.xk || !w.xq || !w.A || !w.L || !w.sel || !w.hwork || !w.mask || !w.oracle ||
        !w.kcode || !w.qcode || !w.qrow || !w.scores || !w.picked || !w.topk_work) {
        ws_free(&w);
        return sl_fail(SL_ENOMEM, "retrieval evaluation: out of memory for %lld positions", (long long)N);
    }
    uint64_t rng = p->seed;
    for (int64_t r = 0; r < Q; r++)
        w.qi[r] = (int32_t)(p->min_pos + sl_rand_below(&rng, N - p->min_pos));
    memset(out, 0, sizeof *out * (size_t)((n_hash + 1) * hkv * NB));

    for (int32_t g = 0; g < hkv && !rc; g++) {
        /* the truth for this group: A, the exact top-k of every (query, budget) and its mass */
        sl_truth_gather_rows(seq->k, hkv, g, d, NULL, N, w.xk);
        const float *xqs[64];
        for (int32_t hh = 0; hh < G; hh++) {
            float *rows = w.xq + (int64_t)hh * Q * d;
            sl_truth_gather_rows(seq->q, hq, g * G + hh, d, w.qi, Q, rows);
            xqs[hh] = rows;
        }
        sl_truth_attention(G, xqs, w.xk, w.qi, Q, N, d, w.A, w.L);
        memset(w.mask, 0, (size_t)(Q * N));
        for (int64_t r = 0; r < Q; r++) {
            const int64_t nv = (int64_t)w.qi[r] + 1;
            for (int64_t b = 0; b < NB; b++)
                w.oracle[r * NB + b] = sl_truth_topk_mark(w.A + r * N, nv, sl_truth_budget_k(p->budgets[b], nv),
                                                          w.mask + r * N, (uint8_t)(1u << b), w.sel) / G;
        }
        for (int64_t b = 0; b < NB; b++) {
            struct sl_hash_eval_cell *c = &out[((int64_t)n_hash * hkv + g) * NB + b];
            for (int64_t r = 0; r < Q; r++) c->recall += w.oracle[r * NB + b] / (double)Q;
            c->iou = 1.0;
        }
        /* every hash against it */
        for (int32_t m = 0; m < n_hash && !rc; m++) {
            const int32_t bits = sl_hash_get_params(hashes[m])->bits, W = sl_hash_code_words(bits);
            rc = sl_hash_encode(sl_hash_key_fn(hashes[m], layer, g), d, bits, w.xk, N, w.kcode, w.hwork);
            for (int32_t hh = 0; hh < G && !rc; hh++)
                rc = sl_hash_encode(sl_hash_query_fn(hashes[m], layer, g * G + hh), d, bits,
                                    w.xq + (int64_t)hh * Q * d, Q, w.qcode + (int64_t)hh * Q * W, w.hwork);
            for (int64_t r = 0; r < Q && !rc; r++) {
                const int64_t nv = (int64_t)w.qi[r] + 1;
                for (int32_t hh = 0; hh < G; hh++)
                    memcpy(w.qrow + (int64_t)hh * W, w.qcode + ((int64_t)hh * Q + r) * W, sizeof(uint64_t) * (size_t)W);
                sl_hamming_scan(w.qrow, G, w.kcode, nv, W, w.scores);
                for (int64_t b = 0; b < NB; b++) {
                    const int64_t k = sl_truth_budget_k(p->budgets[b], nv);
                    struct sl_topk_params tk = {.k = k, .n_sink = 0, .n_window = 0, .block = 1};
                    int64_t cnt = sl_topk_select(w.scores, nv, sl_hamming_max_score(G, W), &tk, w.topk_work,
                                                 w.topk_bytes, w.picked);
                    if (cnt < 0) {
                        rc = (int)cnt;
                        break;
                    }
                    double mass = 0;
                    int64_t inter = 0;
                    const uint8_t bit = (uint8_t)(1u << b);
                    for (int64_t i = 0; i < cnt; i++) {
                        mass += w.A[r * N + w.picked[i]];
                        inter += (w.mask[r * N + w.picked[i]] & bit) != 0;
                    }
                    struct sl_hash_eval_cell *c = &out[((int64_t)m * hkv + g) * NB + b];
                    c->recall += mass / G / (double)Q;
                    c->iou += (double)inter / (double)(cnt + k - inter) / (double)Q;
                }
            }
        }
    }
    ws_free(&w);
    return rc;
}

int sl_hash_attention_recall(const sl_hash *h, int32_t layer, const struct sl_hash_train_seq *seq,
                             float budget, int32_t queries, int32_t min_pos, uint64_t seed,
                             float *recall) {
    const struct sl_hash_params *hp = sl_hash_get_params(h);
    struct sl_hash_eval_params p = {&budget, 1, queries, min_pos, seed};
    struct sl_hash_eval_cell *cells = malloc(sizeof *cells * (size_t)(2 * hp->n_head_kv));
    if (!cells) return sl_fail(SL_ENOMEM, "recall: out of memory");
    int rc = sl_hash_eval_layer(&h, 1, layer, seq, &p, cells);
    if (!rc) {
        double sum = 0;
        for (int32_t g = 0; g < hp->n_head_kv; g++) sum += cells[g].recall;
        *recall = (float)(sum / hp->n_head_kv);
    }
    free(cells);
    return rc;
}
