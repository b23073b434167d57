/* The selection passes over the stored codes (see sparse-select.h). */
#include "core/sparse-select.h"

#include <math.h>

#include "cpu/hamming.h"
#include "cpu/threadpool.h"

/* fn on the backend's host threads, or on this one alone. */
static void run_split(struct sl_backend *be, int64_t positions, void (*fn)(void *ctx, int ith, int nth), void *ctx) {
    if (be && be->parallel && positions >= SL_SELECT_SPLIT_MIN) be->parallel(be, fn, ctx);
    else fn(ctx, 0, 1);
}

struct scan_part {
    const uint64_t *q, *k;
    int32_t G, W;
    int64_t n;
    uint16_t *scores;
};

static void scan_part(void *ctx, int ith, int nth) {
    const struct scan_part *t = ctx;
    int64_t j0, j1;
    sl_split_range(t->n, ith, nth, &j0, &j1);
    sl_hamming_scan(t->q, t->G, t->k + j0 * t->W, j1 - j0, t->W, t->scores + j0);
}

void sl_select_scan(struct sl_backend *be, const uint64_t *q, int32_t G, const uint64_t *k, int64_t n, int32_t W,
                    uint16_t *scores) {
    struct scan_part t = {.q = q, .k = k, .G = G, .W = W, .n = n, .scores = scores};
    run_split(be, n, scan_part, &t);
}

void sl_select_chunk_table(const uint64_t *q, int64_t n, int64_t row_words, int32_t G, int32_t W, int32_t bits,
                           float *lut) {
    float w[64 * 64]; /* up to 4096 bits */
    for (int32_t i = 0; i < 64 * W; i++) w[i] = 0;
    for (int64_t t = 0; t < n; t++)
        for (int32_t h = 0; h < G; h++) {
            const uint64_t *qc = q + t * row_words + (int64_t)h * W;
            for (int32_t i = 0; i < bits; i++) w[i] += ((qc[i / 64] >> (i % 64)) & 1) ? 1.0f : -1.0f;
        }
    for (int32_t p = 0; p < 8 * W; p++) {
        float *e = lut + p * 256;
        e[0] = 0;
        for (int v = 1; v < 256; v++) e[v] = e[v & (v - 1)] + w[p * 8 + __builtin_ctz((unsigned)v)];
    }
}

struct chunk_part {
    const float *lut;
    const uint8_t *kc;
    int32_t nbytes;
    int64_t P, B;
    float *fscore, *bmax;
};

/* Blocks [b0, b1) of the thread's share (B = 1: positions). */
static void chunk_part(void *ctx, int ith, int nth) {
    const struct chunk_part *t = ctx;
    const int64_t B = t->B, P = t->P;
    int64_t b0, b1;
    sl_split_range((P + B - 1) / B, ith, nth, &b0, &b1);
    for (int64_t b = b0; b < b1; b++) {
        float m = -INFINITY;
        const int64_t end = (b + 1) * B < P ? (b + 1) * B : P;
        for (int64_t j = b * B; j < end; j++) {
            const uint8_t *c = t->kc + j * t->nbytes;
            float acc = 0;
            for (int32_t p = 0; p < t->nbytes; p++) acc += t->lut[p * 256 + c[p]];
            if (B == 1) t->fscore[j] = acc;
            else m = acc > m ? acc : m;
        }
        if (B > 1) t->bmax[b] = m;
    }
}

void sl_select_chunk_scores(struct sl_backend *be, const float *lut, const uint64_t *codes, int32_t W, int64_t P,
                            int64_t B, float *fscore, float *bmax) {
    struct chunk_part t = {.lut = lut, .kc = (const uint8_t *)codes, .nbytes = 8 * W, .P = P, .B = B,
                           .fscore = fscore, .bmax = bmax};
    run_split(be, P, chunk_part, &t);
}
