/* Retrieval evaluation (core/hash-eval.c) against a brute-force reference written here in
 * double precision with sorts: the selection a hash makes (group XNOR-popcount, ties toward
 * later positions), the exact top-k of the summed causal softmax, attention-mass recall and
 * IoU. Plus the properties that pin the definitions down: the exact method has IoU 1 and the
 * largest recall; a full budget covers all the mass; with G = 1 and +-1 vectors, sign codes
 * rank exactly as q . k does, so IoU is 1 and recall equals the exact method's. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash-eval.h"
#include "core/hash.h"
#include "spotlight/error.h"

#include "tests/test-rng.h"

static sl_hash *make(int32_t hq, int32_t hkv, int32_t d, int32_t bits, enum sl_hash_kind kind, uint64_t seed) {
    struct sl_hash_params p = sl_hash_default_params();
    p.n_layer = 2, p.n_head_q = hq, p.n_head_kv = hkv, p.head_dim = d, p.bits = bits, p.kind = kind;
    p.seed = seed;
    sl_hash *h;
    cr_assert_eq(sl_hash_create(&p, &h), 0, "%s", sl_error_detail());
    return h;
}

/* ---- the reference ---- */

struct ranked {
    double v;
    int64_t j;
};
/* descending value, then descending position */
static int by_value_then_later(const void *a, const void *b) {
    const struct ranked *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->j < y->j ? 1 : -1;
}

static void code_of(const struct sl_hash_fn *f, int32_t d, int32_t bits, const float *x, int *bitsout) {
    float *work = malloc(sizeof(float) * sl_hash_work_floats(d, bits, 1));
    float *y = malloc(sizeof(float) * (size_t)bits);
    cr_assert_eq(sl_hash_forward(f, d, bits, x, 1, y, work), 0);
    for (int i = 0; i < bits; i++) bitsout[i] = y[i] > 0;
    free(work);
    free(y);
}

/* Reference recall/IoU of one hash (h) or of the exact top-k (h NULL) for KV head g. */
static void reference(const sl_hash *h, int32_t layer, const float *q, const float *k, int32_t n, int32_t hq,
                      int32_t hkv, int32_t d, const int32_t *qi, int32_t Q, float budget, int32_t g, double *recall,
                      double *iou) {
    const int32_t G = hq / hkv, bits = h ? sl_hash_get_params(h)->bits : 0;
    double *A = calloc((size_t)n, sizeof(double));
    struct ranked *rt = malloc(sizeof *rt * (size_t)n), *rh = malloc(sizeof *rh * (size_t)n);
    int *kb = malloc(sizeof(int) * (size_t)n * (bits ? bits : 1)), *qb = malloc(sizeof(int) * (size_t)(bits ? bits : 1));
    char *in_truth = malloc((size_t)n);
    if (h)
        for (int32_t j = 0; j < n; j++)
            code_of(sl_hash_key_fn(h, layer, g), d, bits, k + ((int64_t)j * hkv + g) * d, kb + (int64_t)j * bits);
    *recall = *iou = 0;
    for (int32_t r = 0; r < Q; r++) {
        const int32_t nv = qi[r] + 1;
        int64_t kk = (int64_t)ceilf(budget * (float)nv);
        if (kk < 1) kk = 1;
        memset(A, 0, sizeof(double) * (size_t)n);
        double *sc = calloc((size_t)nv, sizeof(double));
        for (int32_t hh = 0; hh < G; hh++) {
            const float *qv = q + ((int64_t)qi[r] * hq + g * G + hh) * d;
            double mx = -INFINITY, sum = 0, *l = malloc(sizeof(double) * (size_t)nv);
            for (int32_t j = 0; j < nv; j++) {
                double dot = 0;
                for (int32_t t = 0; t < d; t++) dot += (double)qv[t] * k[((int64_t)j * hkv + g) * d + t];
                l[j] = dot / sqrt((double)d);
                mx = fmax(mx, l[j]);
            }
            for (int32_t j = 0; j < nv; j++) sum += exp(l[j] - mx);
            for (int32_t j = 0; j < nv; j++) A[j] += exp(l[j] - mx) / sum;
            free(l);
            if (h) {
                code_of(sl_hash_query_fn(h, layer, g * G + hh), d, bits, qv, qb);
                for (int32_t j = 0; j < nv; j++)
                    for (int32_t i = 0; i < bits; i++) sc[j] += qb[i] == kb[(int64_t)j * bits + i];
            }
        }
        for (int32_t j = 0; j < nv; j++) {
            rt[j] = (struct ranked){A[j], j};
            rh[j] = (struct ranked){sc[j], j};
        }
        qsort(rt, (size_t)nv, sizeof *rt, by_value_then_later);
        qsort(rh, (size_t)nv, sizeof *rh, by_value_then_later);
        memset(in_truth, 0, (size_t)n);
        for (int64_t i = 0; i < kk; i++) in_truth[rt[i].j] = 1;
        const struct ranked *sel = h ? rh : rt;
        double mass = 0;
        int64_t inter = 0;
        for (int64_t i = 0; i < kk; i++) {
            mass += A[sel[i].j];
            inter += in_truth[sel[i].j];
        }
        *recall += mass / G / Q;
        *iou += (double)inter / (double)(2 * kk - inter) / Q;
        free(sc);
    }
    free(A);
    free(rt);
    free(rh);
    free(kb);
    free(qb);
    free(in_truth);
}

/* The evaluator's query positions: splitmix64 from the seed, as hash-eval.c draws them. */
static void positions(uint64_t seed, int32_t Q, int32_t min_pos, int32_t n, int32_t *qi) {
    for (int32_t r = 0; r < Q; r++) {
        uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        qi[r] = min_pos + (int32_t)((z ^ (z >> 31)) % (uint64_t)(n - min_pos));
    }
}

Test(hash_eval, matches_brute_force_reference) {
    rs = 11;
    const int32_t n = 300, hq = 4, hkv = 2, d = 16, Q = 24, L = 1;
    float *q = malloc(sizeof(float) * n * hq * d), *k = malloc(sizeof(float) * n * hkv * d);
    /* keys with a few strong directions so that attention is peaked, as in real layers */
    for (int64_t i = 0; i < (int64_t)n * hq * d; i++) q[i] = (float)gauss() * (i % d == 0 ? 3.0f : 1.0f);
    for (int64_t i = 0; i < (int64_t)n * hkv * d; i++) k[i] = (float)gauss() * (i % d == 0 ? 2.0f : 0.7f);
    sl_hash *hs[3] = {make(hq, hkv, d, 64, SL_HASH_SIMHASH, 3), make(hq, hkv, d, 32, SL_HASH_SPOTLIGHT, 4),
                      make(hq, hkv, d, 96, SL_HASH_SIMHASH, 5)};
    const float budgets[3] = {0.02f, 0.1f, 0.35f};
    struct sl_hash_eval_params p = {budgets, 3, Q, 40, 99};
    struct sl_hash_eval_cell cells[4 * 2 * 3];
    struct sl_hash_train_seq seq = {q, k, n};
    cr_assert_eq(sl_hash_eval_layer((const sl_hash *const *)hs, 3, L, &seq, &p, cells), 0, "%s", sl_error_detail());
    int32_t qi[24];
    positions(99, Q, 40, n, qi);
    for (int32_t m = 0; m <= 3; m++)
        for (int32_t g = 0; g < hkv; g++)
            for (int32_t b = 0; b < 3; b++) {
                double rr, ri;
                reference(m < 3 ? hs[m] : NULL, L, q, k, n, hq, hkv, d, qi, Q, budgets[b], g, &rr, &ri);
                const struct sl_hash_eval_cell *c = &cells[(m * hkv + g) * 3 + b];
                cr_assert(fabs(c->recall - rr) < 1e-5, "method %d head %d budget %g: recall %.6f, reference %.6f",
                          m, g, budgets[b], c->recall, rr);
                /* the truth is f32 in the evaluator: a near-tie at the boundary may flip one key */
                cr_assert(fabs(c->iou - ri) < 1e-9 + 2.0 / Q / 2, "method %d head %d budget %g: iou %.6f, reference %.6f",
                          m, g, budgets[b], c->iou, ri);
                cr_assert(c->recall <= cells[(3 * hkv + g) * 3 + b].recall + 1e-6, "exact top-k is the most mass");
                if (m < 3) cr_assert(c->recall > 0 && c->iou < 1.0, "method %d: a random hash is not exact", m);
            }
    for (int32_t g = 0; g < hkv; g++) cr_assert_eq(cells[(3 * hkv + g) * 3 + 1].iou, 1.0);
    for (int m = 0; m < 3; m++) sl_hash_free(hs[m]);
    free(q);
    free(k);
}

Test(hash_eval, full_budget_covers_all_mass) {
    rs = 5;
    const int32_t n = 100, d = 8;
    float *q = malloc(sizeof(float) * n * 3 * d), *k = malloc(sizeof(float) * n * d);
    for (int i = 0; i < n * 3 * d; i++) q[i] = (float)gauss();
    for (int i = 0; i < n * d; i++) k[i] = (float)gauss();
    sl_hash *h = make(3, 1, d, 64, SL_HASH_SIMHASH, 1);
    const float one = 1.0f;
    struct sl_hash_eval_params p = {&one, 1, 10, 1, 3};
    struct sl_hash_eval_cell cells[2];
    struct sl_hash_train_seq seq = {q, k, n};
    cr_assert_eq(sl_hash_eval_layer((const sl_hash *const *)&h, 1, 0, &seq, &p, cells), 0);
    for (int m = 0; m < 2; m++) {
        cr_assert(fabs(cells[m].recall - 1.0) < 1e-5, "recall %.7f", cells[m].recall);
        cr_assert(fabs(cells[m].iou - 1.0) < 1e-12, "iou %.7f", cells[m].iou);
    }
    sl_hash_free(h);
    free(q);
    free(k);
}

/* G = 1, vectors of +-1: q . k = d - 2 * hamming(sign q, sign k), so the untrained hash
 * (~ sign(x)) ranks exactly as attention does, ties included (both toward later keys). */
Test(hash_eval, exact_when_codes_are_the_vectors) {
    rs = 8;
    const int32_t n = 400, d = 64;
    float *q = malloc(sizeof(float) * n * d), *k = malloc(sizeof(float) * n * d);
    for (int i = 0; i < n * d; i++) q[i] = unif() < 0.5 ? -1.0f : 1.0f;
    for (int i = 0; i < n * d; i++) k[i] = unif() < 0.5 ? -1.0f : 1.0f;
    sl_hash *h = make(1, 1, d, 64, SL_HASH_SPOTLIGHT, 2);
    const float budgets[2] = {0.02f, 0.1f};
    struct sl_hash_eval_params p = {budgets, 2, 50, 20, 4};
    struct sl_hash_eval_cell cells[4];
    struct sl_hash_train_seq seq = {q, k, n};
    cr_assert_eq(sl_hash_eval_layer((const sl_hash *const *)&h, 1, 1, &seq, &p, cells), 0);
    for (int b = 0; b < 2; b++) {
        cr_assert(fabs(cells[b].iou - 1.0) < 1e-12, "budget %d: iou %.6f", b, cells[b].iou);
        cr_assert(fabs(cells[b].recall - cells[2 + b].recall) < 1e-9, "budget %d: recall %.6f vs exact %.6f", b,
                  cells[b].recall, cells[2 + b].recall);
    }
    sl_hash_free(h);
    free(q);
    free(k);
}

Test(hash_eval, bad_arguments) {
    float q[4 * 8 * 2] = {0}, k[4 * 8] = {0};
    struct sl_hash_train_seq seq = {q, k, 4};
    sl_hash *a = make(2, 1, 8, 64, SL_HASH_SIMHASH, 1), *b = make(2, 2, 8, 64, SL_HASH_SIMHASH, 1);
    const float budgets[2] = {0.5f, 1.5f};
    struct sl_hash_eval_cell cells[8];
    struct sl_hash_eval_params p = {budgets, 1, 2, 1, 1};
    const sl_hash *both[2] = {a, b};
    cr_assert_eq(sl_hash_eval_layer(both, 2, 0, &seq, &p, cells), SL_ESHAPE);
    cr_assert_eq(sl_hash_eval_layer(both, 0, 0, &seq, &p, cells), SL_EINVAL);
    cr_assert_eq(sl_hash_eval_layer(both, 1, 2, &seq, &p, cells), SL_EINVAL, "layer out of range");
    p.n_budgets = 2;
    cr_assert_eq(sl_hash_eval_layer(both, 1, 0, &seq, &p, cells), SL_EINVAL, "budget above 1");
    p.n_budgets = 1, p.min_pos = 4;
    cr_assert_eq(sl_hash_eval_layer(both, 1, 0, &seq, &p, cells), SL_EINVAL, "no position to query");
    p.min_pos = 1;
    cr_assert_eq(sl_hash_eval_layer(both, 1, 0, &seq, &p, cells), 0, "%s", sl_error_detail());
    sl_hash_free(a);
    sl_hash_free(b);
}

/* With keys of one norm, attention ranks keys by angle, and SimHash estimates the angle: at
 * 1024 bits it must find most of the exact top-k (a hash whose query and key sides projected
 * differently would score like chance, IoU ~ budget). */
Test(hash_eval, simhash_tracks_angles) {
    rs = 21;
    const int32_t n = 2000, d = 16;
    float *q = malloc(sizeof(float) * n * d), *k = malloc(sizeof(float) * n * d);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) {
            k[i * d + j] = (float)gauss();
            s += (double)k[i * d + j] * k[i * d + j];
        }
        for (int j = 0; j < d; j++) k[i * d + j] *= (float)(4.0 / sqrt(s));
        for (int j = 0; j < d; j++) q[i * d + j] = (float)gauss();
    }
    sl_hash *hs[2] = {make(1, 1, d, 1024, SL_HASH_SIMHASH, 6), make(1, 1, d, 64, SL_HASH_SIMHASH, 6)};
    const float budget = 0.05f;
    struct sl_hash_eval_params p = {&budget, 1, 64, 1000, 2};
    struct sl_hash_eval_cell cells[3];
    struct sl_hash_train_seq seq = {q, k, n};
    cr_assert_eq(sl_hash_eval_layer((const sl_hash *const *)hs, 2, 0, &seq, &p, cells), 0);
    cr_assert(cells[0].iou > 0.6, "SimHash-1024 IoU %.3f", cells[0].iou);
    cr_assert(cells[0].iou > cells[1].iou + 0.1, "more bits, better angles: %.3f vs %.3f", cells[0].iou, cells[1].iou);
    cr_assert(cells[0].recall > 0.8 * cells[2].recall, "recall %.3f of exact %.3f", cells[0].recall, cells[2].recall);
    sl_hash_free(hs[0]);
    sl_hash_free(hs[1]);
    free(q);
    free(k);
}
