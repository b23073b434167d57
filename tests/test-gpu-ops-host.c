/* The host-side decisions of the GPU attention (gpu/attention-logic.h), on the CPU: workspace
 * sizing and the split plan from first principles, and a host walk of the launch grid that
 * runs, per CTA, the kernels' row ownership, causal key ranges and per-tile online softmax
 * (with the same guards for rows that have no key yet), then the merge, against a naive
 * attention. What this cannot prove is the kernels' thread-level code (tests/test-gpu-ops.c
 * does that on a device); it proves the decomposition those kernels follow.
 * Always built, no CUDA needed. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/attention-logic.h"

Test(attn_plan, workspace_bytes_from_first_principles) {
    /* one token: 256 splits x 32 heads x (128 acc + max + sum) floats */
    cr_assert_eq(sl_attn_workspace_bytes(1, 32, 128), (size_t)256 * 32 * 130 * 4);
    cr_assert_eq(sl_attn_workspace_bytes(3, 9, 64), (size_t)3 * 256 * 9 * 66 * 4);
    /* from 8 tokens on, a budget of 2048 token-splits */
    cr_assert_eq(sl_attn_workspace_bytes(8, 32, 128), (size_t)2048 * 32 * 130 * 4);
    cr_assert_eq(sl_attn_workspace_bytes(512, 32, 128), (size_t)2048 * 32 * 130 * 4);
    cr_assert_eq(sl_attn_workspace_bytes(100000, 32, 128), (size_t)2048 * 32 * 130 * 4);
    cr_assert_eq(sl_attn_workspace_bytes(0, 32, 128), 0u);
    cr_assert_eq(sl_attn_workspace_bytes(4, 0, 128), 0u);
    /* enough for every smaller call: never decreasing in n */
    for (int64_t n = 2; n < 5000; n++)
        cr_assert_geq(sl_attn_workspace_bytes(n, 32, 128), sl_attn_workspace_bytes(n - 1, 32, 128));
    /* the ml pairs follow acc */
    cr_assert_eq(sl_attn_ml_offset(2, 4, 3, 64), (size_t)2 * 4 * 3 * 64 * 4);
}

Test(attn_plan, chosen_launches) {
    size_t ws = sl_attn_workspace_bytes(1, 32, 128);
    /* decode at 100000 positions, 32 heads over 8, 132 SMs: 4 x 132 = 528 CTAs wanted over 8
     * groups: 66 splits; 1563 key tiles in 66 splits of 24 tiles (65 x 24 = 1560 < 1563). */
    struct sl_attn_plan p = sl_attn_plan_make(1, 99999, 32, 8, 128, ws, 132);
    cr_assert_eq(p.decode, 1);
    cr_assert_eq(p.row_blocks, 8);
    cr_assert_eq(p.n_split, 66);
    cr_assert_eq(p.chunk, 24 * 64);
    /* 17 positions: one key tile, nothing to split */
    p = sl_attn_plan_make(1, 16, 32, 8, 128, ws, 132);
    cr_assert_eq(p.n_split, 1);
    cr_assert_eq(p.chunk, 64);
    /* no workspace: never split */
    p = sl_attn_plan_make(1, 99999, 32, 8, 128, 0, 132);
    cr_assert_eq(p.n_split, 1);
    cr_assert_geq(p.chunk, 100000);
    /* prefill 256 at 1000, group of 4: 1024 rows = 16 tiles x 8 groups = 128 CTAs; 528 / 128
     * -> 5 splits (workspace allows 2048 / 256 = 8, keys 20 tiles / 2 = 10); 20 tiles in
     * splits of 4 tiles: 5. */
    p = sl_attn_plan_make(256, 1000, 32, 8, 128, sl_attn_workspace_bytes(256, 32, 128), 132);
    cr_assert_eq(p.decode, 0);
    cr_assert_eq(p.tiles, 16);
    cr_assert_eq(p.row_blocks, 128);
    cr_assert_eq(p.n_split, 5);
    cr_assert_eq(p.chunk, 256);
    /* prefill 256 at 0, 9 heads over 3: 768 rows = 12 tiles x 3 = 36 CTAs; 528 / 36 -> 15,
     * workspace 8, keys 4 tiles / 2 = 2: two splits of 128 keys. */
    p = sl_attn_plan_make(256, 0, 9, 3, 64, sl_attn_workspace_bytes(256, 9, 64), 132);
    cr_assert_eq(p.tiles, 12);
    cr_assert_eq(p.row_blocks, 36);
    cr_assert_eq(p.n_split, 2);
    cr_assert_eq(p.chunk, 128);
    /* decode with a group of 16 heads: the tiled kernel, one tile of 16 rows per group */
    p = sl_attn_plan_make(1, 5000, 16, 1, 128, ws, 132);
    cr_assert_eq(p.decode, 0);
    cr_assert_eq(p.tiles, 1);
    cr_assert_eq(p.row_blocks, 1);
    /* 5 tokens: tiled */
    cr_assert_eq(sl_attn_plan_make(5, 10, 32, 8, 128, ws, 132).decode, 0);
    cr_assert_eq(sl_attn_plan_make(4, 10, 32, 8, 128, ws, 132).decode, 1);
}

Test(attn_plan, invariants) {
    static const int64_t ns[] = {1, 2, 4, 5, 17, 64, 255, 256, 512, 3000};
    static const int64_t pos0s[] = {0, 1, 63, 64, 1000, 99999, 1000000};
    static const int32_t shapes[][2] = {{9, 3}, {32, 8}, {16, 1}, {4, 4}, {64, 8}, {40, 8}};
    static const int sms[] = {1, 108, 132};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof pos0s / sizeof pos0s[0]; b++)
            for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++)
                for (size_t d = 0; d < sizeof sms / sizeof sms[0]; d++)
                    for (int full = 0; full < 3; full++) {
                        int64_t n = ns[a], pos0 = pos0s[b], len = pos0 + n;
                        int32_t nh = shapes[c][0], nkv = shapes[c][1], hd = 128, rep = nh / nkv;
                        size_t ws = full == 0 ? 0 : full == 1 ? sl_attn_workspace_bytes(n, nh, hd)
                                                              : sl_attn_workspace_bytes(n, nh, hd) / 3;
                        struct sl_attn_plan p = sl_attn_plan_make(n, pos0, nh, nkv, hd, ws, sms[d]);
                        cr_assert_eq(p.decode, rep <= 8 && n <= 4);
                        cr_assert_eq(p.row_blocks, p.decode ? n * nkv : nkv * ((n * rep + 63) / 64));
                        cr_assert(p.n_split >= 1 && p.n_split <= SL_ATTN_MAX_SPLITS);
                        cr_assert_eq(p.chunk % SL_ATTN_KEY_TILE, 0);
                        /* the splits cover [0, len) and none is empty for the longest row */
                        cr_assert_geq(p.n_split * p.chunk, len);
                        cr_assert_lt((p.n_split - 1) * p.chunk, len);
                        /* the partials fit the workspace given */
                        if (p.n_split > 1)
                            cr_assert_leq((size_t)n * nh * p.n_split * (hd + 2) * 4, ws, "n %lld pos0 %lld",
                                          (long long)n, (long long)pos0);
                        /* split only as far as it brings CTAs up to the target */
                        if (p.n_split > 1) cr_assert_leq((p.n_split - 1) * p.row_blocks, 4 * sms[d]);
                    }
}

/* ---- a host walk of the grid -------------------------------------------------------------- */

struct shape {
    int64_t n, pos0;
    int32_t n_head, n_kv, hd;
};

static float frand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) * 0x1p-52 - 1.0);
}

/* out (n, n_head*hd) as the kernels compute it: per CTA of the plan's grid, per row, the
 * keys of its split in 64-key tiles with the online softmax, then (n_split > 1) the merge.
 * Counts in `seen` how often each (row, split) partial is written and in `keys` how many keys
 * each row attended to over all splits. */
static void walk_grid(const struct sl_attn_plan *p, const struct shape *s, const float *q, const float *k,
                      const float *v, float *out, int *seen, int64_t *keys) {
    const int32_t rep = s->n_head / s->n_kv, hd = s->hd, S = p->n_split;
    const int64_t len = s->pos0 + s->n, rows = s->n * s->n_head;
    float *acc = calloc((size_t)(rows * S * hd), sizeof *acc), *ml = calloc((size_t)(rows * S * 2), sizeof *ml);
    float *a = malloc(sizeof *a * (size_t)hd);
    for (int64_t x = 0; x < p->row_blocks; x++)
        for (int32_t c = 0; c < S; c++) {
            int64_t g, rho0, rho1;
            sl_attn_cta_rows(p, x, s->n, s->n_kv, rep, &g, &rho0, &rho1);
            cr_assert(g >= 0 && g < s->n_kv && rho0 >= 0 && rho0 < rho1 && rho1 <= s->n * rep);
            cr_assert_leq(rho1 - rho0, p->decode ? rep : SL_ATTN_ROW_TILE);
            if (p->decode) cr_assert_eq(rho0 % rep, 0, "a decode CTA holds one token's group");
            const int64_t begin = (int64_t)c * p->chunk, cta_end = sl_attn_row_end(p, c, s->pos0, rho1 - 1, rep);
            cr_assert_leq(cta_end, len);
            for (int64_t rho = rho0; rho < rho1; rho++) {
                int64_t t = rho / rep, h = g * rep + rho % rep, row = t * s->n_head + h;
                int64_t end = sl_attn_row_end(p, c, s->pos0, rho, rep);
                cr_assert_leq(end, cta_end);
                const float *qr = q + row * hd;
                float m = -INFINITY, l = 0;
                memset(a, 0, sizeof *a * (size_t)hd);
                for (int64_t k0 = begin; k0 < cta_end; k0 += SL_ATTN_KEY_TILE) {
                    float sc[SL_ATTN_KEY_TILE], mx = -INFINITY;
                    for (int j = 0; j < SL_ATTN_KEY_TILE; j++) {
                        sc[j] = -INFINITY;
                        if (k0 + j < end) {
                            float d = 0;
                            for (int e = 0; e < hd; e++) d += qr[e] * k[((g * len) + k0 + j) * hd + e];
                            sc[j] = d / sqrtf((float)hd);
                            keys[row]++;
                        }
                        mx = fmaxf(mx, sc[j]);
                    }
                    float m_new = fmaxf(m, mx), mu = m_new == -INFINITY ? 0.0f : m_new, alpha = expf(m - mu), sum = 0;
                    for (int e = 0; e < hd; e++) a[e] *= alpha;
                    for (int j = 0; j < SL_ATTN_KEY_TILE; j++) {
                        float pj = expf(sc[j] - mu);
                        sum += pj;
                        if (k0 + j < len)
                            for (int e = 0; e < hd; e++) a[e] += pj * v[((g * len) + k0 + j) * hd + e];
                    }
                    l = l * alpha + sum;
                    m = m_new;
                }
                cr_assert(!isnan(l) && !isnan(m), "row %lld split %d", (long long)row, c);
                seen[row * S + c]++;
                memcpy(acc + (row * S + c) * hd, a, sizeof *a * (size_t)hd);
                ml[(row * S + c) * 2] = m;
                ml[(row * S + c) * 2 + 1] = l;
            }
        }
    for (int64_t row = 0; row < rows; row++) {
        const float *pm = ml + row * S * 2;
        if (S == 1) {
            for (int e = 0; e < hd; e++) out[row * hd + e] = acc[row * hd + e] / pm[1];
            continue;
        }
        float mg = sl_attn_merge_max(pm, S), l = 0;
        for (int32_t c = 0; c < S; c++) l += sl_attn_merge_weight(pm + 2 * c, mg) * pm[2 * c + 1];
        for (int e = 0; e < hd; e++) {
            float o = 0;
            for (int32_t c = 0; c < S; c++) o += sl_attn_merge_weight(pm + 2 * c, mg) * acc[(row * S + c) * hd + e];
            out[row * hd + e] = o / l;
        }
    }
    free(acc);
    free(ml);
    free(a);
}

static void check_walk(const struct shape *s, size_t ws, int n_sm) {
    const int32_t rep = s->n_head / s->n_kv, hd = s->hd;
    const int64_t len = s->pos0 + s->n, rows = s->n * s->n_head;
    uint64_t seed = 7 + (uint64_t)len;
    float *q = malloc(sizeof *q * (size_t)(rows * hd)), *k = malloc(sizeof *k * (size_t)(s->n_kv * len * hd));
    float *v = malloc(sizeof *v * (size_t)(s->n_kv * len * hd)), *out = malloc(sizeof *out * (size_t)(rows * hd));
    for (int64_t i = 0; i < rows * hd; i++) q[i] = frand(&seed) * 3;
    for (int64_t i = 0; i < s->n_kv * len * hd; i++) {
        k[i] = frand(&seed);
        v[i] = frand(&seed);
    }
    struct sl_attn_plan p = sl_attn_plan_make(s->n, s->pos0, s->n_head, s->n_kv, hd, ws, n_sm);
    int *seen = calloc((size_t)(rows * p.n_split), sizeof *seen);
    int64_t *keys = calloc((size_t)rows, sizeof *keys);
    walk_grid(&p, s, q, k, v, out, seen, keys);
    for (int64_t i = 0; i < rows * p.n_split; i++) cr_assert_eq(seen[i], 1, "partial %lld written %d times", (long long)i, seen[i]);
    for (int64_t row = 0; row < rows; row++) {
        int64_t t = row / s->n_head, h = row % s->n_head, g = h / rep;
        cr_assert_eq(keys[row], s->pos0 + t + 1, "row %lld attended to %lld keys", (long long)row, (long long)keys[row]);
        /* naive, in double */
        double *sc = malloc(sizeof *sc * (size_t)(s->pos0 + t + 1)), mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= s->pos0 + t; j++) {
            double d = 0;
            for (int e = 0; e < hd; e++) d += (double)q[row * hd + e] * k[(g * len + j) * hd + e];
            sc[j] = d / sqrt(hd);
            mx = fmax(mx, sc[j]);
        }
        for (int64_t j = 0; j <= s->pos0 + t; j++) sum += sc[j] = exp(sc[j] - mx);
        for (int e = 0; e < hd; e++) {
            double o = 0;
            for (int64_t j = 0; j <= s->pos0 + t; j++) o += sc[j] * v[(g * len + j) * hd + e];
            o /= sum;
            cr_assert(fabs(out[row * hd + e] - o) <= 2e-5 + 1e-4 * fabs(o), "n %lld pos0 %lld splits %d: row %lld dim %d: %g vs %g",
                      (long long)s->n, (long long)s->pos0, p.n_split, (long long)row, e, out[row * hd + e], o);
        }
        free(sc);
    }
    free(q); free(k); free(v); free(out); free(seen); free(keys);
}

Test(attn_plan, grid_walk_matches_naive_attention) {
    static const struct shape shapes[] = {
        {1, 0, 9, 3, 8},     {1, 16, 9, 3, 8},   {1, 4095, 9, 3, 8}, {3, 200, 9, 3, 8}, {4, 129, 32, 8, 8},
        {5, 70, 9, 3, 8},    {77, 3, 9, 3, 8},   {256, 1000, 8, 2, 8}, {1, 3000, 16, 1, 8}, {100, 900, 4, 4, 8},
        {64, 0, 6, 2, 8},    {65, 64, 6, 2, 8},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const struct shape *s = &shapes[i];
        check_walk(s, sl_attn_workspace_bytes(s->n, s->n_head, s->hd), 132);
        check_walk(s, sl_attn_workspace_bytes(s->n, s->n_head, s->hd), 1); /* few SMs: few splits */
        check_walk(s, 0, 132);                                            /* no workspace */
    }
}
