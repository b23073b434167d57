/* The decision logic of the GPU retrieval kernels (gpu/gpu-topk.cu, gpu/gpu-scan.cu), as
 * static inline functions that compile as C on the host and as __host__ __device__ code under
 * nvcc: the kernels call these, and tests/test-gpu-logic.c runs the very same functions in a
 * host emulation of the kernels' grid against the CPU's sl_topk_select. Plain C (no CUDA
 * headers), not installed.
 *
 * Units. The top-k works on units: positions at token level (block == 1), blocks of `block`
 * positions at block level. Unit u covers positions [u*B, min(u*B + B, n)); its score is the
 * position's score or the block's maximum. Candidates are the non-forced positions (token
 * level) or every block (block level). The forced positions F = [0, s0) ∪ [w0, n)
 * (s0 = min(n_sink, n), w0 = n - min(n_window, n)) are always emitted.
 *
 * Selection of ku units among the candidates, ties toward later units, in three modes that
 * hold for every head of a call (decided on the host from the sizes alone):
 *   ALL     ku >= candidates: every candidate is selected (the output is [0, n)).
 *   NONE    ku == 0: none is (the output is F).
 *   THRESH  a histogram of the candidates' scores gives the threshold t and the number
 *           `skip` of ties at t NOT taken: candidates scoring > t are selected, and of those
 *           scoring == t the ones of global tie rank >= skip (rank = how many tied
 *           candidates precede it), i.e. the LATEST ties.
 * A head whose candidate scores exceed max_score goes to mode BAD (the CPU's SL_EINVAL).
 *
 * A unit emits all its positions when selected, else its forced ones; units emit in order and
 * each unit's positions ascend, so compacting the emissions gives the union F ∪ selection,
 * unique and ascending, with no sort.
 *
 * Grid. Units are cut into tiles of SL_RT_TILE = 256 threads x 8 units; thread i of a tile
 * owns its units [8i, 8i + 8). Per head and call, the phases are:
 *   1 hist     per tile: histogram of the candidates' scores (shared memory, flushed to the
 *              head's global histogram; or straight into the global one when the bins do not
 *              fit in SL_RT_SHARED_HIST_BINS); block level first takes the block maxima.
 *   2 state    per head: 256 chunks of bins from the top, each chunk's sum, an exclusive
 *              scan of the sums, and the chunk where the count reaches ku walks its bins
 *              (sl_rt_threshold_walk) for t and skip.
 *   3 count    per tile: c_gt, c_eq (candidates > t, == t) and x_gt, x_eq (the positions they
 *              would add beyond the forced ones; 1 each at token level).
 *   4 scan     per head: exclusive scan of c_eq over tiles gives each tile r0, the in-tile
 *              rank from which its ties are taken; at most one tile (the crossing tile) takes
 *              some but not all of its ties, and that tile is recounted (x_cross). Then the
 *              tiles' emission counts are scanned into output offsets; the total is the count.
 *   5 compact  per tile: per thread, the tie ranks and emission offsets come from block-wide
 *              exclusive scans; each thread writes its units' positions. */
#ifndef SL_GPU_RETRIEVAL_LOGIC_H
#define SL_GPU_RETRIEVAL_LOGIC_H

#include <stddef.h>
#include <stdint.h>

#include "core/host-device.h"

#define SL_RT_THREADS 256                                /* threads per CTA of every phase */
#define SL_RT_PER_THREAD 8                               /* units per thread */
#define SL_RT_TILE (SL_RT_THREADS * SL_RT_PER_THREAD)    /* units per tile */
#define SL_RT_SHARED_HIST_BINS 8192                      /* 32 KiB of shared counts at most */
#define SL_RT_ALIGN 256                                  /* workspace regions */
#define SL_RT_MAX_N 2147483647                           /* positions are written as int32 */

enum sl_rt_mode { SL_RT_NONE = 0, SL_RT_ALL = 1, SL_RT_THRESH = 2, SL_RT_BAD = 3 };
enum sl_rt_class { SL_RT_OUT = 0, SL_RT_GT = 1, SL_RT_EQ = 2 };

/* Sizes of one call, the same for every head. */
struct sl_rt_geom {
    int64_t n;          /* positions */
    int64_t B;          /* positions per unit: 1 at token level, else the block */
    int64_t nu;         /* units */
    int64_t s0, w0;     /* forced positions [0, s0) and [w0, n) */
    int64_t c0, c1;     /* candidate units [c0, c1) */
    int64_t ku;         /* units to select (when mode is THRESH: 1 <= ku < c1 - c0) */
    int64_t n_tiles;    /* ceil(nu / SL_RT_TILE) */
    int64_t max_count;  /* the most positions a head can emit: sl_topk_max_count's bound */
    int32_t ms;         /* max_score: bins are 0..ms */
    int32_t mode;       /* enum sl_rt_mode: NONE, ALL or THRESH */
};

/* Per head, written by phase 2. */
struct sl_rt_state {
    uint32_t t;     /* threshold score (THRESH) */
    int32_t mode;   /* the call's mode, or BAD */
    int64_t skip;   /* ties at t not taken (the earliest ones) */
};

/* Per (head, tile), written by phases 3 and 4. */
struct sl_rt_tile {
    uint32_t c_gt, c_eq; /* candidates scoring > t, == t */
    uint32_t x_gt, x_eq; /* positions they add beyond the forced ones */
    uint32_t r0;         /* ties of in-tile rank >= r0 are taken */
    uint32_t x_cross;    /* crossing tile only: what its taken ties add */
    uint32_t out_base;   /* offset of the tile's first emitted position */
    uint32_t emitted;    /* positions the tile emits */
};

/* Byte offsets of a workspace's regions (from a base aligned to SL_RT_ALIGN). */
struct sl_rt_layout {
    size_t bad;      /* n_heads uint32 flags: a candidate score > ms      } zeroed together */
    size_t hist;     /* n_heads x (ms + 1) uint32 counts                  } (zero_bytes)    */
    size_t zero_bytes;
    size_t state;    /* n_heads struct sl_rt_state */
    size_t tiles;    /* n_heads x n_tiles struct sl_rt_tile */
    size_t bm;       /* block level: n_heads x bm_ld uint16 block maxima */
    int64_t bm_ld;   /* units rounded up to 8 (16-byte rows) */
    size_t bytes;    /* total */
};

SL_HD int64_t sl_rt_min(int64_t a, int64_t b) { return a < b ? a : b; }
SL_HD int64_t sl_rt_max(int64_t a, int64_t b) { return a > b ? a : b; }
SL_HD size_t sl_rt_align(size_t b) { return (b + SL_RT_ALIGN - 1) / SL_RT_ALIGN * SL_RT_ALIGN; }

/* The bound of sl_topk_max_count (cpu/topk.h), written again here: gpu/ does not include cpu/. */
SL_HD int64_t sl_rt_max_count(int64_t n, int64_t k, int64_t n_sink, int64_t n_window, int32_t block) {
    if (n <= 0) return 0;
    int64_t kk = sl_rt_min(k, n), B = block > 1 ? block : 1;
    kk = (kk + B - 1) / B * B;
    int64_t c = sl_rt_min(n_sink, n) + sl_rt_min(n_window, n) + kk;
    return c < 0 ? 0 : sl_rt_min(c, n);
}

/* 0, or -1 for the arguments sl_topk_select rejects (negative sizes, a block that is not a
 * power of two, max_score outside [0, 65535]) and for n > SL_RT_MAX_N. */
SL_HD int sl_rt_geom_init(int64_t n, int32_t ms, int64_t k, int64_t n_sink, int64_t n_window, int32_t block,
                          struct sl_rt_geom *g) {
    if (n < 0 || k < 0 || n_sink < 0 || n_window < 0 || block < 1 || (block & (block - 1)) || ms < 0 ||
        ms > 65535 || n > SL_RT_MAX_N)
        return -1;
    g->n = n;
    g->B = block;
    g->ms = ms;
    g->s0 = sl_rt_min(n_sink, n);
    g->w0 = n - sl_rt_min(n_window, n);
    if (block == 1) {
        g->nu = n;
        g->c0 = g->s0;
        g->c1 = sl_rt_max(g->w0, g->s0);
        g->ku = k;
    } else {
        g->nu = (n + block - 1) / block;
        g->c0 = 0;
        g->c1 = g->nu;
        g->ku = k / block + (k % block != 0);
    }
    int64_t ncand = g->c1 - g->c0;
    g->mode = g->ku >= ncand ? SL_RT_ALL : g->ku == 0 ? SL_RT_NONE : SL_RT_THRESH;
    g->n_tiles = (g->nu + SL_RT_TILE - 1) / SL_RT_TILE;
    g->max_count = sl_rt_max_count(n, k, n_sink, n_window, block);
    return 0;
}

SL_HD void sl_rt_layout_init(const struct sl_rt_geom *g, int32_t n_heads, struct sl_rt_layout *l) {
    size_t H = (size_t)n_heads, o = 0;
    l->bad = o;
    o += H * sizeof(uint32_t);
    l->hist = o;
    o += H * ((size_t)g->ms + 1) * sizeof(uint32_t);
    l->zero_bytes = o;
    l->state = o = sl_rt_align(o);
    o += H * sizeof(struct sl_rt_state);
    l->tiles = o = sl_rt_align(o);
    o += H * (size_t)g->n_tiles * sizeof(struct sl_rt_tile);
    l->bm = o = sl_rt_align(o);
    l->bm_ld = (g->nu + 7) / 8 * 8;
    if (g->B > 1) o += H * (size_t)l->bm_ld * sizeof(uint16_t);
    l->bytes = sl_rt_align(o);
}

/* ---- units ------------------------------------------------------------------------------- */

SL_HD int64_t sl_rt_unit_begin(const struct sl_rt_geom *g, int64_t u) { return u * g->B; }
SL_HD int64_t sl_rt_unit_end(const struct sl_rt_geom *g, int64_t u) { return sl_rt_min(u * g->B + g->B, g->n); }

/* End of the sink part of [a, e): the sink positions are [a, that). */
SL_HD int64_t sl_rt_sink_end(const struct sl_rt_geom *g, int64_t a, int64_t e) {
    return sl_rt_max(a, sl_rt_min(e, g->s0));
}

/* |[a, e) ∩ F|: the sink part, then the window part from after it (so nothing twice). */
SL_HD int64_t sl_rt_forced_in(const struct sl_rt_geom *g, int64_t a, int64_t e) {
    int64_t e1 = sl_rt_sink_end(g, a, e);
    return (e1 - a) + sl_rt_max(0, e - sl_rt_max(e1, g->w0));
}

SL_HD int sl_rt_is_cand(const struct sl_rt_geom *g, int64_t u) { return u >= g->c0 && u < g->c1; }

/* Positions a selected candidate adds beyond its forced ones. */
SL_HD int64_t sl_rt_extra(const struct sl_rt_geom *g, int64_t u) {
    int64_t a = sl_rt_unit_begin(g, u), e = sl_rt_unit_end(g, u);
    return (e - a) - sl_rt_forced_in(g, a, e);
}

/* Phase 1: whether unit u's score s goes into the histogram; sets *bad for a candidate
 * scoring above ms (which is not counted). */
SL_HD int sl_rt_hist_accept(const struct sl_rt_geom *g, int64_t u, uint32_t s, uint32_t *bad) {
    if (!sl_rt_is_cand(g, u)) return 0;
    if (s > (uint32_t)g->ms) {
        *bad = 1;
        return 0;
    }
    return 1;
}

/* ---- phase 2: threshold -------------------------------------------------------------------- */

/* Bins [lo, hi] of chunk i of nchunks, chunk 0 holding the highest bins; empty when hi < lo. */
SL_HD void sl_rt_chunk_bins(int32_t ms, int32_t nchunks, int32_t i, int32_t *hi, int32_t *lo) {
    int32_t cs = (ms + 1 + nchunks - 1) / nchunks;
    *hi = ms - i * cs;
    *lo = *hi - cs + 1 < 0 ? 0 : *hi - cs + 1;
}

/* Walks bins hi down to lo with `above` counted above hi; at the first bin v where the count
 * reaches k, sets *t = v and *skip = the ties at v beyond the k needed, and returns 1. The
 * CPU's threshold() (cpu/topk.c) over one chunk. */
SL_HD int sl_rt_threshold_walk(const uint32_t *h, int32_t hi, int32_t lo, int64_t above, int64_t k, uint32_t *t,
                               int64_t *skip) {
    for (int32_t v = hi; v >= lo; v--) {
        if (above + h[v] >= k) {
            *t = (uint32_t)v;
            *skip = (int64_t)h[v] - (k - above);
            return 1;
        }
        above += h[v];
    }
    return 0;
}

/* The state of a head whose threshold phase did not walk (modes ALL and NONE, or BAD). */
SL_HD struct sl_rt_state sl_rt_state_plain(int32_t mode) {
    struct sl_rt_state st;
    st.t = 0;
    st.mode = mode;
    st.skip = 0;
    return st;
}

/* ---- phases 3-5: per thread ---------------------------------------------------------------- */

/* A candidate's class: ALL makes every candidate GT, NONE and BAD none. */
SL_HD int sl_rt_classify(const struct sl_rt_state *st, uint32_t s) {
    if (st->mode == SL_RT_ALL) return SL_RT_GT;
    if (st->mode != SL_RT_THRESH) return SL_RT_OUT;
    return s > st->t ? SL_RT_GT : s == st->t ? SL_RT_EQ : SL_RT_OUT;
}

/* Units a thread owns: [*ub, *ub + return) of tile `tile`, thread `i`. */
SL_HD int32_t sl_rt_thread_units(const struct sl_rt_geom *g, int64_t tile, int32_t i, int64_t *ub) {
    *ub = tile * SL_RT_TILE + (int64_t)i * SL_RT_PER_THREAD;
    return (int32_t)sl_rt_max(0, sl_rt_min(SL_RT_PER_THREAD, g->nu - *ub));
}

struct sl_rt_counts {
    uint32_t c_gt, c_eq, x_gt, x_eq;
};

/* Phase 3: the thread's contribution to its tile's counts; s[i] is unit ub + i's score. */
SL_HD void sl_rt_thread_count(const struct sl_rt_geom *g, const struct sl_rt_state *st, int64_t ub, int32_t nv,
                              const uint16_t *s, struct sl_rt_counts *c) {
    c->c_gt = c->c_eq = c->x_gt = c->x_eq = 0;
    for (int32_t i = 0; i < nv; i++) {
        if (!sl_rt_is_cand(g, ub + i)) continue;
        int cls = sl_rt_classify(st, s[i]);
        uint32_t x = (uint32_t)sl_rt_extra(g, ub + i);
        if (cls == SL_RT_GT) {
            c->c_gt++;
            c->x_gt += x;
        } else if (cls == SL_RT_EQ) {
            c->c_eq++;
            c->x_eq += x;
        }
    }
}

/* Phases 4 and 5: the thread's tied candidates (what its units' tie ranks start from). */
SL_HD uint32_t sl_rt_thread_ties(const struct sl_rt_geom *g, const struct sl_rt_state *st, int64_t ub, int32_t nv,
                                 const uint16_t *s) {
    uint32_t c = 0;
    for (int32_t i = 0; i < nv; i++) c += sl_rt_is_cand(g, ub + i) && sl_rt_classify(st, s[i]) == SL_RT_EQ;
    return c;
}

/* Phase 4: the in-tile rank r0 of the first tie a tile takes, from the ties before the tile
 * (eq_base) and the head's skip; r0 = 0 takes all of the tile's ties, r0 = c_eq none. */
SL_HD uint32_t sl_rt_tile_r0(int64_t skip, int64_t eq_base, uint32_t c_eq) {
    return (uint32_t)sl_rt_max(0, sl_rt_min((int64_t)c_eq, skip - eq_base));
}

SL_HD int sl_rt_tile_is_cross(const struct sl_rt_tile *t) { return t->r0 > 0 && t->r0 < t->c_eq; }

/* Phase 4, crossing tile: what the thread's ties of tile rank >= r0 add (rank: the tile's ties
 * before this thread's first unit). */
SL_HD uint32_t sl_rt_thread_cross(const struct sl_rt_geom *g, const struct sl_rt_state *st, int64_t ub, int32_t nv,
                                  const uint16_t *s, uint32_t rank, uint32_t r0) {
    uint32_t x = 0;
    for (int32_t i = 0; i < nv; i++) {
        if (!sl_rt_is_cand(g, ub + i) || sl_rt_classify(st, s[i]) != SL_RT_EQ) continue;
        if (rank++ >= r0) x += (uint32_t)sl_rt_extra(g, ub + i);
    }
    return x;
}

/* Phase 4: units [u0, u1) of a tile. */
SL_HD void sl_rt_tile_units(const struct sl_rt_geom *g, int64_t tile, int64_t *u0, int64_t *u1) {
    *u0 = tile * SL_RT_TILE;
    *u1 = sl_rt_min(*u0 + SL_RT_TILE, g->nu);
}

/* Phase 4: the positions a tile emits: its forced ones plus what its selected units add. */
SL_HD uint32_t sl_rt_tile_emitted(const struct sl_rt_geom *g, int64_t tile, const struct sl_rt_tile *t) {
    int64_t u0, u1;
    sl_rt_tile_units(g, tile, &u0, &u1);
    int64_t f = sl_rt_forced_in(g, sl_rt_unit_begin(g, u0), sl_rt_min(sl_rt_unit_begin(g, u1), g->n));
    uint32_t ties = t->r0 == 0 ? t->x_eq : t->r0 >= t->c_eq ? 0 : t->x_cross;
    return (uint32_t)f + t->x_gt + ties;
}

/* Phase 5: the thread's selected units as a bit mask (bit i: unit ub + i) and the positions
 * its units emit; rank as for sl_rt_thread_cross, r0 the tile's. */
SL_HD uint32_t sl_rt_thread_select(const struct sl_rt_geom *g, const struct sl_rt_state *st, int64_t ub, int32_t nv,
                                   const uint16_t *s, uint32_t rank, uint32_t r0, uint32_t *mask) {
    uint32_t m = 0, c = 0;
    for (int32_t i = 0; i < nv; i++) {
        int64_t u = ub + i, a = sl_rt_unit_begin(g, u), e = sl_rt_unit_end(g, u);
        int sel = 0;
        if (sl_rt_is_cand(g, u)) {
            int cls = sl_rt_classify(st, s[i]);
            sel = cls == SL_RT_GT || (cls == SL_RT_EQ && rank++ >= r0);
        }
        m |= (uint32_t)sel << i;
        c += (uint32_t)(sel ? e - a : sl_rt_forced_in(g, a, e));
    }
    *mask = m;
    return c;
}

/* Phase 5: writes the positions the thread's units emit, ascending, from out[0]. */
SL_HD void sl_rt_thread_write(const struct sl_rt_geom *g, int64_t ub, int32_t nv, uint32_t mask, int32_t *out) {
    int64_t c = 0;
    for (int32_t i = 0; i < nv; i++) {
        int64_t u = ub + i, a = sl_rt_unit_begin(g, u), e = sl_rt_unit_end(g, u);
        if (mask >> i & 1) {
            for (int64_t j = a; j < e; j++) out[c++] = (int32_t)j;
            continue;
        }
        int64_t e1 = sl_rt_sink_end(g, a, e);
        for (int64_t j = a; j < e1; j++) out[c++] = (int32_t)j;
        for (int64_t j = sl_rt_max(e1, g->w0); j < e; j++) out[c++] = (int32_t)j;
    }
}

/* ---- scan ----------------------------------------------------------------------------------- */

SL_HD uint32_t sl_rt_popc64(uint64_t x) {
#ifdef __CUDA_ARCH__
    return (uint32_t)__popcll(x);
#else
    return (uint32_t)__builtin_popcountll(x);
#endif
}

/* Score of one key code k (W words) against G query codes q (G, W): the CPU's
 * sum_g (64 W - popcount(q_g ^ k)). The reference the scan kernels' vector paths unroll. */
SL_HD uint32_t sl_rt_score(const uint64_t *q, int32_t G, int32_t W, const uint64_t *k) {
    uint32_t mis = 0;
    for (int32_t g = 0; g < G; g++)
        for (int32_t w = 0; w < W; w++) mis += sl_rt_popc64(q[(int64_t)g * W + w] ^ k[w]);
    return (uint32_t)G * (uint32_t)W * 64u - mis;
}

#endif
