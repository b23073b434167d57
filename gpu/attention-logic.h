/* The decisions of the GPU attention (gpu/gpu-attention.cu) as pure functions, compiled for
 * the host and the device: the kernels call these for which query rows and key positions a
 * CTA owns and for how partial softmaxes merge, and tests/test-gpu-ops-host.c runs the same
 * functions on the CPU (a host walk of the launch grid against a naive attention). Plain C,
 * no CUDA headers; not installed.
 *
 * Rows. The query rows of one KV group g are (token t, head g*n_rep + r) for t < n and
 * r < n_rep, numbered rho = t*n_rep + r; row rho sees key positions [0, pos0 + t] (causal).
 *
 * Grid. blockIdx.y is the split c (0..n_split-1) of the key positions: split c covers
 * [c*chunk, (c+1)*chunk), chunk a multiple of SL_ATTN_KEY_TILE. blockIdx.x is the row block:
 *   decode  (one token's whole group per CTA: n_rep <= SL_ATTN_DECODE_MAX_REP and
 *           n <= SL_ATTN_DECODE_MAX_TOKENS): x = t*n_head_kv + g, rows rho = t*n_rep + [0, n_rep).
 *   tiled   (everything else): x = g*tiles + b for b < tiles = ceil(n*n_rep / 64), rows
 *           rho = 64*b + [0, 64) that exist.
 * A CTA walks the keys of its split up to the last position its rows can see, in tiles of
 * SL_ATTN_KEY_TILE keys, masking per row; each K/V tile is read once for all of its rows (the
 * GQA group's heads and, tiled, up to 64 / n_rep tokens).
 *
 * Splits (flash-decoding). With n_split > 1 every CTA writes, per row, the partial softmax
 * of its keys: max m, sum l of exp(s - m), and acc = sum exp(s - m) v (unnormalised) into the
 * workspace, and a merge kernel combines them as the CPU does (cpu/attention.c): M = max m
 * over the splits with l > 0, out = sum e^(m - M) acc / sum e^(m - M) l. A split with no
 * visible key for a row writes m = -inf, l = 0. With n_split == 1 the CTA writes acc / l into
 * the output and there is no merge and no workspace.
 *
 * Workspace: acc (n*n_head, n_split, head_dim) f32, then ml (n*n_head, n_split) pairs of
 * f32 (m, l). sl_attn_workspace_bytes gives room for n*n_split <= min(256 n, 2048) rows x
 * splits; the plan takes as many splits as the workspace given allows (none given: 1). */
#ifndef SL_GPU_ATTENTION_LOGIC_H
#define SL_GPU_ATTENTION_LOGIC_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "core/host-device.h"

#define SL_ATTN_KEY_TILE 64         /* keys per shared-memory tile (both kernels) */
#define SL_ATTN_ROW_TILE 64         /* query rows per CTA of the tiled kernel */
#define SL_ATTN_DECODE_MAX_REP 8    /* GQA group size the decode kernel holds */
#define SL_ATTN_DECODE_MAX_TOKENS 4 /* more tokens: the tiled kernel (K/V read once per 64 rows) */
#define SL_ATTN_MAX_SPLITS 256      /* splits of the key positions at most */
#define SL_ATTN_SPLIT_ROWS 2048     /* workspace budget: query tokens x splits */
#define SL_ATTN_MIN_SPLIT_TILES 2   /* key tiles per split at least (merge cost vs parallelism) */
#define SL_ATTN_CTAS_PER_SM 4       /* CTAs per SM the split aims for */

struct sl_attn_plan {
    int decode;         /* 1: decode kernel, 0: tiled kernel */
    int64_t row_blocks; /* gridDim.x */
    int64_t tiles;      /* tiled: row tiles per KV group (x = g*tiles + b); decode: 0 */
    int32_t n_split;    /* gridDim.y */
    int64_t chunk;      /* key positions per split, a multiple of SL_ATTN_KEY_TILE */
};

SL_HD int64_t sl_attn_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Workspace for up to n query tokens (enough for any smaller n too). */
SL_HD size_t sl_attn_workspace_bytes(int64_t n, int32_t n_head, int32_t head_dim) {
    if (n <= 0 || n_head <= 0 || head_dim <= 0) return 0;
    int64_t rows = n < SL_ATTN_SPLIT_ROWS / SL_ATTN_MAX_SPLITS ? n * SL_ATTN_MAX_SPLITS : SL_ATTN_SPLIT_ROWS;
    return (size_t)rows * (size_t)n_head * ((size_t)head_dim + 2) * sizeof(float);
}

/* Byte offset of the ml pairs in the workspace (after acc). */
SL_HD size_t sl_attn_ml_offset(int64_t n, int32_t n_head, int32_t n_split, int32_t head_dim) {
    return (size_t)n * (size_t)n_head * (size_t)n_split * (size_t)head_dim * sizeof(float);
}

/* The launch for a call; the arguments are already validated (n >= 1, pos0 >= 0,
 * n_head % n_head_kv == 0). n_sm: the device's multiprocessors. */
SL_HD struct sl_attn_plan sl_attn_plan_make(int64_t n, int64_t pos0, int32_t n_head, int32_t n_head_kv,
                                             int32_t head_dim, size_t workspace_bytes, int n_sm) {
    struct sl_attn_plan p;
    int32_t rep = n_head / n_head_kv;
    p.decode = rep <= SL_ATTN_DECODE_MAX_REP && n <= SL_ATTN_DECODE_MAX_TOKENS;
    p.tiles = p.decode ? 0 : sl_attn_ceil_div(n * rep, SL_ATTN_ROW_TILE);
    p.row_blocks = p.decode ? n * n_head_kv : p.tiles * n_head_kv;
    int64_t key_tiles = sl_attn_ceil_div(pos0 + n, SL_ATTN_KEY_TILE);
    size_t per_split = (size_t)n * (size_t)n_head * ((size_t)head_dim + 2) * sizeof(float);
    int64_t s = sl_attn_ceil_div((int64_t)SL_ATTN_CTAS_PER_SM * (n_sm > 0 ? n_sm : 1), p.row_blocks);
    int64_t s_ws = (int64_t)(workspace_bytes / per_split);
    int64_t s_keys = sl_attn_ceil_div(key_tiles, SL_ATTN_MIN_SPLIT_TILES);
    if (s > SL_ATTN_MAX_SPLITS) s = SL_ATTN_MAX_SPLITS;
    if (s > s_ws) s = s_ws;
    if (s > s_keys) s = s_keys;
    if (s < 1) s = 1;
    int64_t chunk_tiles = sl_attn_ceil_div(key_tiles, s);
    p.chunk = chunk_tiles * SL_ATTN_KEY_TILE;
    p.n_split = (int32_t)sl_attn_ceil_div(key_tiles, chunk_tiles); /* <= s, none empty */
    return p;
}

/* Rows [*rho0, *rho1) of KV group *g that CTA x owns (rho = t*n_rep + r). */
SL_HD void sl_attn_cta_rows(const struct sl_attn_plan *p, int64_t x, int64_t n, int32_t n_head_kv,
                             int32_t n_rep, int64_t *g, int64_t *rho0, int64_t *rho1) {
    if (p->decode) {
        int64_t t = x / n_head_kv;
        *g = x - t * n_head_kv;
        *rho0 = t * n_rep;
        *rho1 = *rho0 + n_rep;
    } else {
        int64_t b = x % p->tiles;
        *g = x / p->tiles;
        *rho0 = b * SL_ATTN_ROW_TILE;
        *rho1 = *rho0 + SL_ATTN_ROW_TILE < n * n_rep ? *rho0 + SL_ATTN_ROW_TILE : n * n_rep;
    }
}

/* End (exclusive) of the keys row rho may see within split c: min(split end, pos0 + t + 1),
 * where t = rho / n_rep. The split starts at c * chunk; an end at or before it: none. */
SL_HD int64_t sl_attn_row_end(const struct sl_attn_plan *p, int32_t c, int64_t pos0, int64_t rho, int32_t n_rep) {
    int64_t causal = pos0 + rho / n_rep + 1, split = ((int64_t)c + 1) * p->chunk;
    return causal < split ? causal : split;
}

/* The largest max among the partials with l > 0 (the CPU's merge rule); -inf when none. */
SL_HD float sl_attn_merge_max(const float *ml, int32_t n_split) {
    float m = -INFINITY;
    for (int32_t s = 0; s < n_split; s++)
        if (ml[2 * s + 1] > 0 && ml[2 * s] > m) m = ml[2 * s];
    return m;
}

/* The weight of partial (m, l) in the merge with global max mg: e^(m - mg), 0 when empty. */
SL_HD float sl_attn_merge_weight(const float *ml, float mg) { return ml[1] > 0 ? expf(ml[0] - mg) : 0.0f; }

#endif
