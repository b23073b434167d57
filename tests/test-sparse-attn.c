/* Sparse decode attention (core/sparse-attn.c) on a synthetic f16 KV cache against a brute
 * force written here in double: the selected set (forced sinks and window, then the top
 * max(budget * n, min_tokens) by the mode's score, ties toward later positions) and the
 * softmax attention of every query head over exactly that set. Both hash modes (scores from
 * sl_hash_encode codes, counted bit by bit here) and topk-exact (the group's summed softmax). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/hash.h"
#include "core/kv-cache.h"
#include "core/sparse-attn.h"
#include "cpu/f16-row.h"
#include "spotlight/error.h"

#include "tests/test-rng.h"

enum { L = 3, HQ = 6, HKV = 2, G = 3, D = 32, NCTX = 700 };

static struct sl_model_config config(void) {
    struct sl_model_config c;
    memset(&c, 0, sizeof c);
    c.n_layer = L, c.n_head = HQ, c.n_head_kv = HKV, c.head_dim = D;
    return c;
}

static float f16_value(uint16_t h) {
    float f;
    sl_f16_row_to_f32(&h, &f, 1);
    return f;
}

struct ranked {
    double v;
    int64_t j;
};
static int later_first(const void *a, const void *b) {
    const struct ranked *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->j < y->j ? 1 : -1;
}

static void round_f16(const float *x, float *y) {
    for (int i = 0; i < D; i++) {
        y[i] = x[i];
        sl_round_to_f16(&y[i], 1);
    }
}

/* Brute force for KV head g of `layer`: n query rows at pos0.. (q: (n, HQ, D)). Selection
 * from [0, P = pos0): forced sinks and window, then the top k by the summed score over the
 * rows and the group's heads, ties toward later positions; row t attends to the selection
 * and to pos0 .. pos0 + t. out: (n, G, D). */
static void reference(const struct sl_kv_cache *kv, const sl_hash *h, const struct sl_attn_params *p, int32_t layer,
                      int32_t g, const float *q, int64_t n, int64_t pos0, double *out, int64_t *count) {
    const int64_t P = pos0;
    int64_t k = (int64_t)ceilf(p->budget * (float)P);
    if (k < 1) k = 1;
    if (k < p->min_tokens) k = p->min_tokens;
    double *score = calloc((size_t)P + 1, sizeof(double)), *logit = malloc(sizeof(double) * (size_t)(P + n));
    const uint16_t *K = sl_kv_cache_k(kv, layer, g, 0), *V = sl_kv_cache_v(kv, layer, g, 0);
    float qr[D], work[4096], kf[D];
    const int32_t b = h ? sl_hash_get_params(h)->bits : 0;
    uint64_t qc[16], kc[16];
    for (int64_t t = 0; t < n; t++)
        for (int hh = 0; hh < G; hh++) {
            const float *qh = q + (t * HQ + g * G + hh) * D;
            if (h) {
                cr_assert_eq(sl_hash_encode(sl_hash_query_fn(h, layer, g * G + hh), D, b, qh, 1, qc, work), 0);
                for (int64_t j = 0; j < P; j++) {
                    /* the test wrote f16-exact keys, so hashing the cached row = hashing what was added */
                    for (int i = 0; i < D; i++) kf[i] = f16_value(K[j * D + i]);
                    cr_assert_eq(sl_hash_encode(sl_hash_key_fn(h, layer, g), D, b, kf, 1, kc, work), 0);
                    for (int i = 0; i < b; i++) score[j] += ((qc[i / 64] >> (i % 64)) & 1) == ((kc[i / 64] >> (i % 64)) & 1);
                }
            } else {
                round_f16(qh, qr);
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < P; j++) {
                    double dot = 0;
                    for (int i = 0; i < D; i++) dot += (double)qr[i] * f16_value(K[j * D + i]);
                    logit[j] = dot / sqrt((double)D);
                    mx = fmax(mx, logit[j]);
                }
                for (int64_t j = 0; j < P; j++) sum += exp(logit[j] - mx);
                for (int64_t j = 0; j < P; j++) score[j] += exp(logit[j] - mx) / sum;
            }
        }
    struct ranked *r = malloc(sizeof *r * (size_t)(P + 1));
    char *sel = calloc((size_t)(P + n), 1);
    int64_t m = 0;
    if (p->block == 1) {
        for (int64_t j = 0; j < P; j++) {
            if (j < p->n_sink || j >= P - p->n_window) sel[j] = 1;
            else r[m++] = (struct ranked){score[j], j};
        }
        qsort(r, (size_t)m, sizeof *r, later_first);
        const int64_t kc = k * p->rerank;
        for (int64_t i = 0; i < kc && i < m; i++) sel[r[i].j] = 1;
        if (p->rerank > 1 && kc < m) {
            /* candidates rescored by the softmax over the candidates, summed over rows and heads */
            double *cs = calloc((size_t)P, sizeof(double));
            for (int64_t t = 0; t < n; t++)
                for (int hh = 0; hh < G; hh++) {
                    round_f16(q + (t * HQ + g * G + hh) * D, qr);
                    double mx = -INFINITY, sum = 0;
                    for (int64_t j = 0; j < P; j++) {
                        if (!sel[j]) continue;
                        double dot = 0;
                        for (int i = 0; i < D; i++) dot += (double)qr[i] * f16_value(K[j * D + i]);
                        logit[j] = dot / sqrt((double)D);
                        mx = fmax(mx, logit[j]);
                    }
                    for (int64_t j = 0; j < P; j++)
                        if (sel[j]) sum += exp(logit[j] - mx);
                    for (int64_t j = 0; j < P; j++)
                        if (sel[j]) cs[j] += exp(logit[j] - mx) / sum;
                }
            int64_t mc = 0;
            for (int64_t j = 0; j < P; j++)
                if (sel[j] && !(j < p->n_sink || j >= P - p->n_window)) r[mc++] = (struct ranked){cs[j], j}, sel[j] = 0;
            qsort(r, (size_t)mc, sizeof *r, later_first);
            for (int64_t i = 0; i < k && i < mc; i++) sel[r[i].j] = 1;
            free(cs);
        }
    } else { /* blocks by their best position (forced ones included), then the forced positions */
        const int64_t B = p->block, nb = (P + B - 1) / B, kb = (k + B - 1) / B;
        for (int64_t b = 0; b < nb; b++) {
            double best = -INFINITY;
            for (int64_t j = b * B; j < (b + 1) * B && j < P; j++) best = fmax(best, score[j]);
            r[m++] = (struct ranked){best, b};
        }
        qsort(r, (size_t)m, sizeof *r, later_first);
        for (int64_t i = 0; i < kb && i < m; i++)
            for (int64_t j = r[i].j * B; j < (r[i].j + 1) * B && j < P; j++) sel[j] = 1;
        for (int64_t j = 0; j < P; j++)
            if (j < p->n_sink || j >= P - p->n_window) sel[j] = 1;
    }
    *count = 0;
    for (int64_t j = 0; j < P; j++) *count += sel[j];
    for (int64_t t = 0; t < n; t++) {
        sel[P + t] = 1; /* the chunk, causally */
        for (int hh = 0; hh < G; hh++) {
            round_f16(q + (t * HQ + g * G + hh) * D, qr);
            double mx = -INFINITY, sum = 0, acc[D] = {0};
            for (int64_t j = 0; j <= P + t; j++) {
                if (!sel[j]) continue;
                double dot = 0;
                for (int i = 0; i < D; i++) dot += (double)qr[i] * f16_value(K[j * D + i]);
                logit[j] = dot / sqrt((double)D);
                mx = fmax(mx, logit[j]);
            }
            for (int64_t j = 0; j <= P + t; j++) {
                if (!sel[j]) continue;
                double w = exp(logit[j] - mx);
                sum += w;
                for (int i = 0; i < D; i++) acc[i] += w * f16_value(V[j * D + i]);
            }
            for (int i = 0; i < D; i++) out[(t * G + hh) * D + i] = acc[i] / sum;
        }
    }
    free(score);
    free(logit);
    free(r);
    free(sel);
}

/* Fills the cache (and the code table) with keys in a few clusters, so that scores spread. */
static void fill(struct sl_kv_cache *kv, struct sl_sparse *sp) {
    float *k = malloc(sizeof(float) * HKV * D), *v = malloc(sizeof(float) * HKV * D);
    for (int32_t l = 0; l < L; l++)
        for (int64_t j = 0; j < NCTX; j++) {
            for (int i = 0; i < HKV * D; i++) {
                k[i] = (float)(gauss() * 0.8 + ((i + j) % 7 == 0 ? 2.0 : 0.0));
                v[i] = (float)gauss();
            }
            sl_round_to_f16(k, HKV * D); /* f16-exact, so hashing the f32 row = hashing the cached row */
            cr_assert_eq(sl_kv_cache_write(kv, l, j, 1, k, v), 0);
            if (sp) cr_assert_eq(sl_sparse_add_keys(sp, l, j, 1, k), 0);
        }
    free(k);
    free(v);
}

/* Decode tokens and (with sparse_prefill) 5-row chunks at a few positions of every sparse
 * layer, against the reference. */
static void check_mode(struct sl_attn_params p, sl_hash *h_for_reference) {
    rs = 77;
    struct sl_model_config cfg = config();
    uint8_t fp[32] = {0};
    struct sl_sparse *sp;
    p.sparse_prefill = true;
    cr_assert_eq(sl_sparse_create(&p, &cfg, fp, NCTX, 16, &sp), 0, "%s", sl_error_detail());
    struct sl_kv_cache kv;
    cr_assert_eq(sl_kv_cache_init(&kv, L, HKV, D, NCTX), 0);
    fill(&kv, sp);
    struct sl_backend *be;
    cr_assert_eq(sl_backend_cpu_create(2, &be), 0);
    enum { NMAX = 5 };
    float q[NMAX * HQ * D], out[NMAX * HQ * D];
    double ref[NMAX * G * D];
    const int64_t positions[3] = {300, 333, NCTX - NMAX};
    int64_t calls = 0;
    for (int32_t layer = p.dense_layers; layer < L; layer++)
        for (int pi = 0; pi < 3; pi++)
            for (int64_t n = 1; n <= NMAX; n += NMAX - 1) {
                for (int i = 0; i < n * HQ * D; i++) q[i] = (float)(gauss() + (i % 7 == 0 ? 1.5 : 0.0));
                cr_assert(sl_sparse_applies(sp, layer, n));
                cr_assert_eq(sl_sparse_attend(sp, be, &(struct sl_sparse_kv){.cache = &kv}, layer, q, n, positions[pi], out), 0, "%s", sl_error_detail());
                calls++;
                for (int32_t g = 0; g < HKV; g++) {
                    int64_t count;
                    reference(&kv, h_for_reference, &p, layer, g, q, n, positions[pi], ref, &count);
                    for (int64_t t = 0; t < n; t++)
                        for (int i = 0; i < G * D; i++) {
                            double got = out[(t * HQ + g * G) * D + i], want = ref[t * G * D + i];
                            cr_assert(fabs(got - want) < 2e-3, "mode %d layer %d pos %ld n %ld head %d row %ld [%d]: %g vs %g",
                                      p.mode, layer, (long)positions[pi], (long)n, g, (long)t, i, got, want);
                        }
                }
            }
    cr_assert(!sl_sparse_applies(sp, 0, 1), "dense layers stay dense");
    struct sl_attn_stats st;
    sl_sparse_stats(sp, &st);
    cr_assert_eq(st.sparse_calls + st.prefill_calls, calls);
    cr_assert_eq(st.sparse_calls, calls / 2, "half the calls were single tokens");
    cr_assert(st.selected + st.prefill_selected < (st.candidates + st.prefill_candidates) / 5,
              "a 5%% budget selects few: %ld of %ld", (long)(st.selected + st.prefill_selected),
              (long)(st.candidates + st.prefill_candidates));
    /* early on, the budget covers everything: dense, the same numbers as the dense kernel */
    float dense[HQ * D];
    cr_assert_eq(sl_sparse_attend(sp, be, &(struct sl_sparse_kv){.cache = &kv}, 1, q, 1, 10, out), 0);
    cr_assert_eq(be->attention(be, &kv, 1, q, 1, 10, HQ, dense), 0);
    cr_assert_arr_eq(out, dense, sizeof dense);
    be->free(be);
    sl_kv_cache_free(&kv);
    sl_sparse_free(sp);
}

Test(sparse_attn, topk_exact_matches_brute_force) {
    struct sl_attn_params p = sl_attn_default_params(SL_ATTN_TOPK_EXACT);
    p.budget = 0.05f, p.min_tokens = 8, p.n_sink = 2, p.n_window = 5, p.dense_layers = 1;
    check_mode(p, NULL);
    p.block = 8; /* block-level selection */
    check_mode(p, NULL);
}

Test(sparse_attn, simhash_matches_brute_force) {
    struct sl_attn_params p = sl_attn_default_params(SL_ATTN_SIMHASH);
    p.budget = 0.05f, p.min_tokens = 8, p.n_sink = 2, p.n_window = 5, p.dense_layers = 1, p.bits = 96;
    struct sl_hash_params hp = sl_hash_default_params();
    hp.n_layer = L, hp.n_head_q = HQ, hp.n_head_kv = HKV, hp.head_dim = D, hp.bits = 96, hp.kind = SL_HASH_SIMHASH;
    hp.seed = 0;
    sl_hash *h;
    cr_assert_eq(sl_hash_create(&hp, &h), 0);
    check_mode(p, h);
    p.block = 16;
    check_mode(p, h);
    p.block = 1, p.rerank = 4; /* hash candidates, then exact attention over them */
    check_mode(p, h);
    sl_hash_free(h);
}

/* A spotlight hash file (weights randomised so the MLP matters), loaded by path. */
Test(sparse_attn, spotlight_file_matches_brute_force) {
    struct sl_hash_params hp = sl_hash_default_params();
    hp.n_layer = L, hp.n_head_q = HQ, hp.n_head_kv = HKV, hp.head_dim = D, hp.bits = 64, hp.kind = SL_HASH_SPOTLIGHT;
    sl_hash *h;
    cr_assert_eq(sl_hash_create(&hp, &h), 0);
    rs = 5;
    for (int32_t l = 0; l < L; l++) {
        int64_t nw;
        float *w = sl_hash_layer_weights(h, l, &nw);
        for (int64_t i = 0; i < nw; i++) w[i] += (float)(0.1 * gauss());
        struct sl_hash_layer_info info = {SL_HASH_TRAINED, 1, 0, 0, 0.02f};
        sl_hash_layer_info_set(h, l, &info);
    }
    char path[] = "/tmp/sl-sparse-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    uint8_t fp[32] = {0};
    cr_assert_eq(sl_hash_save(h, fp, path), 0, "%s", sl_error_detail());
    struct sl_attn_params p = sl_attn_default_params(SL_ATTN_SPOTLIGHT);
    p.budget = 0.05f, p.min_tokens = 8, p.n_sink = 2, p.n_window = 5, p.dense_layers = 1;
    p.hash_path = path;
    check_mode(p, h);
    /* another model's file is refused */
    uint8_t other[32] = {1};
    cr_assert_eq(sl_hash_save(h, other, path), 0);
    struct sl_model_config cfg = config();
    struct sl_sparse *sp;
    cr_assert_eq(sl_sparse_create(&p, &cfg, fp, NCTX, 16, &sp), SL_EMISMATCH);
    unlink(path);
    sl_hash_free(h);
}

Test(sparse_attn, bad_parameters) {
    struct sl_model_config cfg = config();
    uint8_t fp[32] = {0};
    struct sl_sparse *sp;
    struct sl_attn_params p = sl_attn_default_params(SL_ATTN_SIMHASH);
    p.budget = 0;
    cr_assert_eq(sl_sparse_create(&p, &cfg, fp, 100, 8, &sp), SL_EINVAL);
    p.budget = 0.1f, p.bits = 48;
    cr_assert_eq(sl_sparse_create(&p, &cfg, fp, 100, 8, &sp), SL_EINVAL);
    p.bits = 64, p.block = 12;
    cr_assert_eq(sl_sparse_create(&p, &cfg, fp, 100, 8, &sp), SL_EINVAL, "block not a power of two");
    p.block = 16, p.rerank = 2;
    cr_assert_eq(sl_sparse_create(&p, &cfg, fp, 100, 8, &sp), SL_EINVAL, "rerank needs token level");
    p.block = 1, p.rerank = 1;
    p.bits = 64, p.dense_layers = L + 1;
    cr_assert_eq(sl_sparse_create(&p, &cfg, fp, 100, 8, &sp), SL_EINVAL);
    p = sl_attn_default_params(SL_ATTN_SPOTLIGHT);
    cr_assert_eq(sl_sparse_create(&p, &cfg, fp, 100, 8, &sp), SL_EINVAL, "spotlight without a hash file");
    p.hash_path = "/nonexistent/hash.slhash";
    cr_assert_neq(sl_sparse_create(&p, &cfg, fp, 100, 8, &sp), 0);
}
