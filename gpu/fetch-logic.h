/* The decisions of the GPU KV fetch (gpu/gpu-fetch.cu) as pure functions, compiled for both
 * the host and the device, so tests/test-fetch-logic.c runs on the CPU exactly what each
 * kernel thread runs, with host arrays standing in for VRAM. Not installed.
 *
 * A call fetches, for one layer, the selected positions of every KV head: idx (n_heads,
 * max_count) ascending unique positions, cnt (n_heads) how many of each row count. Output row
 * (h, i) gets position idx[h][i] (sl_fetch_out_row).
 *
 * The VRAM block cache: n_sets sets of `ways` slots, a slot holding one block (K rows then V
 * rows, as in the store) of one (layer, head, block) key plus a 64-bit mask of the rows it
 * holds (row r: bit r), because the zero-copy path fetches rows, not blocks: a slot fills
 * row by row as selections touch it. A call runs three kernels, each a phase no other phase
 * overlaps (stream order separates them):
 *   1 lookup  (thread per position; leaders act): the leader of each run of positions in one
 *             block looks the key up against the tags as they are at launch (no thread of
 *             this phase writes a tag). A hit stamps the slot used[slot] = step and writes
 *             every run position's source: the slot when its row is there, else MISS. A miss
 *             bids for its set: claim[set] = min(claim[set], bid(step, ordinal)).
 *   2 copy    (thread group per position): rows from their VRAM slot (src >= 0) or from the
 *             host (MISS: mapped host memory, or the staging the host filled), into the output.
 *   3 insert  (warp per leader): a tag hit adds its missing rows to its own slot; a tag miss
 *             whose bid is its set's claim (the lowest ordinal of the step: one winner per set
 *             per call, the same one on every run) takes the round-robin victim among the ways
 *             NOT stamped with this step, copies its rows from the output (or its whole block
 *             from block staging), then publishes mask and tag.
 * Why this cannot race: phase 1 writes only used (the same value by every writer), claim (an
 * atomic min) and the src/lead entries of its own run; phase 3 writes only slots that phase 1
 * either hit for this very leader (one leader per key) or left unstamped (so no phase-2 read
 * this step touched them), and the rr cursor of its set (one winner per set). The victim rule
 * never picks a slot stamped this step, so even a fused copy+insert would not read a slot
 * being replaced; tests/test-fetch-logic.c checks that property on every emulated step.
 *
 * Stamps: steps count calls from 1; bid = (~step << 32) | ordinal, so a later step's bids are
 * below every earlier one and claim needs no reset between calls. The owner resets the cache
 * before step wraps at 2^32. */
#ifndef SL_GPU_FETCH_LOGIC_H
#define SL_GPU_FETCH_LOGIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/host-device.h"
#ifndef SL_KV_HD
#define SL_KV_HD SL_HD_QUAL
#endif
#include "storage/kv-host-map.h"

/* Atomics where a phase has several writers; the host emulation runs threads one at a time. */
#ifdef __CUDA_ARCH__
#define SL_FETCH_ATOMIC_MIN_U64(p, v) atomicMin((unsigned long long *)(p), (unsigned long long)(v))
#define SL_FETCH_ATOMIC_OR_U64(p, v) atomicOr((unsigned long long *)(p), (unsigned long long)(v))
#else
#define SL_FETCH_ATOMIC_MIN_U64(p, v) (*(p) = (v) < *(p) ? (v) : *(p))
#define SL_FETCH_ATOMIC_OR_U64(p, v) (*(p) |= (v))
#endif

#define SL_FETCH_TAG_EMPTY UINT64_MAX
#define SL_FETCH_SRC_MISS (-1) /* the row comes from the host (mapped memory or staging) */
#define SL_FETCH_SRC_BAD (-2)  /* position outside [0, n_tokens): a zero row, counted */
#define SL_FETCH_MAX_WAYS 32
#define SL_FETCH_MAX_CACHED_TOKENS 64 /* rows a slot's mask can describe */

/* The cache: device arrays in the kernels, host arrays in the emulation. */
struct sl_fetch_cache {
    uint64_t *tags;  /* (n_sets, ways) key of the block a slot holds, or TAG_EMPTY */
    uint64_t *mask;  /* (n_sets, ways) rows the slot holds */
    uint32_t *used;  /* (n_sets, ways) step of the slot's latest phase-1 hit */
    uint32_t *rr;    /* (n_sets) next victim way */
    uint64_t *claim; /* (n_sets) lowest bid seen (this step's, once any miss of it bid) */
    uint8_t *data;   /* (n_sets, ways, block_bytes) */
    int64_t n_sets;  /* 0: no cache */
    int32_t ways;
};

/* One call. */
struct sl_fetch_sel {
    const int32_t *idx; /* (n_heads, max_count) */
    const int32_t *cnt; /* (n_heads) */
    int32_t *src;       /* (n_heads, max_count) phase 1 out: slot, SRC_MISS or SRC_BAD */
    int32_t *lead;      /* (n_heads, max_count) phase 1 out, leaders: tag-hit slot or SRC_MISS */
    int64_t max_count;
    int64_t n_tokens;   /* committed positions: valid ones are below */
    int32_t n_heads, layer;
    int32_t block_shift; /* log2(block_tokens) */
    int64_t row_bytes;   /* head_dim * 2 */
    uint32_t step;
};

/* Where rows of missed positions wait in VRAM when the host moved them (staged paths):
 * staging row j (map[h][i]) has K at base + (j >> shift) * unit_bytes + (j & mask) * row_bytes
 * and V v_offset further. Rows (file tier): shift 0, unit_bytes row_bytes, V in a second array.
 * Blocks (block copy): shift block_shift, unit_bytes block_bytes, V block_tokens rows on. */
struct sl_fetch_stage {
    const uint8_t *base;
    const int32_t *map; /* (n_heads, max_count) */
    int32_t shift;
    int64_t unit_bytes;
    int64_t v_offset;
};

/* Counters the kernels add to (unsigned long long: what CUDA atomics take). */
struct sl_fetch_counters {
    unsigned long long blocks;     /* runs (distinct blocks) requested */
    unsigned long long block_hits; /* of them, found in a slot (all or some rows there) */
    unsigned long long rows;       /* positions requested */
    unsigned long long row_hits;   /* rows served from VRAM */
    unsigned long long bytes_h2d;  /* K+V bytes read over PCIe by the zero-copy kernel */
    unsigned long long inserts;    /* slots claimed for a new block */
    unsigned long long evictions;  /* of them, slots that held another block */
    unsigned long long bad;        /* positions outside [0, n_tokens), counts outside [0, max] */
};

/* ---- keys, sets, stamps ------------------------------------------------------------------ */

/* layer < 2^12, head < 2^10, block < 2^38 (the store's limits: 4096 layers, 1024 heads,
 * 2^40 positions in blocks of >= 4), so keys are unique and never TAG_EMPTY. */
SL_HD uint64_t sl_fetch_key(int32_t layer, int32_t head, int64_t block) {
    return ((uint64_t)layer << 48) | ((uint64_t)head << 38) | (uint64_t)block;
}

/* A splitmix64 finaliser spreads consecutive blocks and heads over the sets. */
SL_HD int64_t sl_fetch_set(uint64_t key, int64_t n_sets) {
    uint64_t z = key + 0x9E3779B97F4A7C15u;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    z ^= z >> 31;
    return (int64_t)(z % (uint64_t)n_sets);
}

SL_HD uint64_t sl_fetch_bid(uint32_t step, int64_t ordinal) {
    return ((uint64_t)(uint32_t)~step << 32) | (uint64_t)(uint32_t)ordinal;
}

/* The victim way of a set: the first way from the round-robin cursor not stamped with this
 * step (a slot a phase-1 hit of this call owns), or -1 when every way was hit this step. */
SL_HD int32_t sl_fetch_victim(const uint32_t *used_of_set, int32_t ways,
                                                  uint32_t rr, uint32_t step) {
    for (int32_t w = 0; w < ways; w++) {
        int32_t way = (int32_t)((rr + (uint32_t)w) % (uint32_t)ways);
        if (used_of_set[way] != step) return way;
    }
    return -1;
}

/* ---- positions ------------------------------------------------------------------------- */

/* Rows of head h this call fetches: cnt[h] clamped to [0, max_count]. */
SL_HD int64_t sl_fetch_count(const struct sl_fetch_sel *s, int32_t h) {
    int64_t c = s->cnt[h];
    return c < 0 ? 0 : c > s->max_count ? s->max_count : c;
}

SL_HD bool sl_fetch_count_bad(const struct sl_fetch_sel *s, int32_t h) {
    return s->cnt[h] < 0 || s->cnt[h] > s->max_count;
}

SL_HD int32_t sl_fetch_pos(const struct sl_fetch_sel *s, int32_t h, int64_t i) {
    return s->idx[(int64_t)h * s->max_count + i];
}

SL_HD bool sl_fetch_valid(const struct sl_fetch_sel *s, int32_t pos) {
    return pos >= 0 && (int64_t)pos < s->n_tokens;
}

SL_HD int64_t sl_fetch_block(const struct sl_fetch_sel *s, int32_t pos) {
    return (int64_t)pos >> s->block_shift;
}

SL_HD int32_t sl_fetch_row(const struct sl_fetch_sel *s, int32_t pos) {
    return pos & ((1 << s->block_shift) - 1);
}

/* Output row of (head, i): the outputs are (n_heads, max_count, head_dim). */
SL_HD int64_t sl_fetch_out_row(const struct sl_fetch_sel *s, int32_t h,
                                                   int64_t i) {
    return (int64_t)h * s->max_count + i;
}

/* Position i of head h starts a run: the first valid position of its block in the list. */
SL_HD bool sl_fetch_is_leader(const struct sl_fetch_sel *s, int32_t h,
                                                  int64_t i) {
    int32_t p = sl_fetch_pos(s, h, i);
    if (!sl_fetch_valid(s, p)) return false;
    if (i == 0) return true;
    int32_t q = sl_fetch_pos(s, h, i - 1);
    return !sl_fetch_valid(s, q) || sl_fetch_block(s, q) != sl_fetch_block(s, p);
}

/* One past the last position of the run led by i (ascending unique input: at most
 * block_tokens positions; any input: bounded by the count). */
SL_HD int64_t sl_fetch_run_end(const struct sl_fetch_sel *s, int32_t h,
                                                   int64_t i, int64_t count) {
    int64_t b = sl_fetch_block(s, sl_fetch_pos(s, h, i)), j = i + 1;
    while (j < count) {
        int32_t q = sl_fetch_pos(s, h, j);
        if (!sl_fetch_valid(s, q) || sl_fetch_block(s, q) != b) break;
        j++;
    }
    return j;
}

/* ---- slots ----------------------------------------------------------------------------- */

SL_HD int64_t sl_fetch_block_bytes(const struct sl_fetch_sel *s) {
    return 2 * ((int64_t)1 << s->block_shift) * s->row_bytes;
}

/* Byte offset of K row r of slot (V: + sl_fetch_v_offset). */
SL_HD int64_t sl_fetch_slot_k(const struct sl_fetch_sel *s, int64_t slot,
                                                  int32_t r) {
    return slot * sl_fetch_block_bytes(s) + (int64_t)r * s->row_bytes;
}

/* V row r of a block lies block_tokens rows after K row r. */
SL_HD int64_t sl_fetch_v_offset(const struct sl_fetch_sel *s) {
    return ((int64_t)1 << s->block_shift) * s->row_bytes;
}

/* Offset of staging unit (row, or block) holding staging row j. */
SL_HD int64_t sl_fetch_stage_unit(const struct sl_fetch_stage *st, int32_t j) {
    return ((int64_t)j >> st->shift) * st->unit_bytes;
}

/* Offset of K row j of the staging. */
SL_HD int64_t sl_fetch_stage_k(const struct sl_fetch_stage *st,
                                                   int64_t row_bytes, int32_t j) {
    return sl_fetch_stage_unit(st, j) + (int64_t)(j & ((1 << st->shift) - 1)) * row_bytes;
}

/* Rows of block b that are committed: bit r for b * T + r < n_tokens (T <= 64). */
SL_HD uint64_t sl_fetch_valid_rows(const struct sl_fetch_sel *s, int64_t b) {
    int64_t T = (int64_t)1 << s->block_shift, left = s->n_tokens - b * T;
    int64_t n = left < 0 ? 0 : left < T ? left : T;
    return n >= 64 ? ~UINT64_C(0) : (UINT64_C(1) << n) - 1;
}

/* ---- phase 2: copy --------------------------------------------------------------------- */

enum sl_fetch_from {
    SL_FETCH_FROM_NONE = 0, /* nothing to write (past the count, or a hit while prefetching) */
    SL_FETCH_FROM_ZERO,     /* a bad position: zeros */
    SL_FETCH_FROM_SLOT,     /* VRAM cache */
    SL_FETCH_FROM_HOST,     /* mapped host memory (zero copy) */
    SL_FETCH_FROM_STAGE,    /* staging the host filled */
};

/* The store's host memory as the zero-copy kernel addresses it: segment pointers (device
 * pointers of the mapped segments in the kernel, host pointers in the emulation). */
struct sl_fetch_host {
    const uint8_t *const *segs;
    struct sl_kv_host_map map;
};

/* Thread group (h, i) of the copy kernel: where output row (h, i) comes from. st: the
 * staging of a staged path, NULL for zero copy (then host is used). skip_hits: prefetch,
 * which only needs the rows phase 3 will insert. */
SL_HD enum sl_fetch_from sl_fetch_source(
    const struct sl_fetch_sel *s, const struct sl_fetch_cache *c, const struct sl_fetch_stage *st,
    const struct sl_fetch_host *host, int32_t h, int64_t i, bool skip_hits, const uint8_t **k,
    const uint8_t **v) {
    if (i >= sl_fetch_count(s, h)) return SL_FETCH_FROM_NONE;
    int64_t o = sl_fetch_out_row(s, h, i);
    int32_t src = s->src[o];
    if (src == SL_FETCH_SRC_BAD) return skip_hits ? SL_FETCH_FROM_NONE : SL_FETCH_FROM_ZERO;
    int32_t p = sl_fetch_pos(s, h, i), r = sl_fetch_row(s, p);
    if (src >= 0) {
        if (skip_hits) return SL_FETCH_FROM_NONE;
        *k = c->data + sl_fetch_slot_k(s, src, r);
        *v = *k + sl_fetch_v_offset(s);
        return SL_FETCH_FROM_SLOT;
    }
    if (st) {
        *k = st->base + sl_fetch_stage_k(st, s->row_bytes, st->map[o]);
        *v = *k + st->v_offset;
        return SL_FETCH_FROM_STAGE;
    }
    int64_t b = sl_fetch_block(s, p);
    *k = host->segs[sl_kv_host_map_segment(&host->map, b)] +
         sl_kv_host_map_offset(&host->map, s->layer, b, h) + (int64_t)r * s->row_bytes;
    *v = *k + sl_fetch_v_offset(s);
    return SL_FETCH_FROM_HOST;
}

/* ---- phase 1: lookup ------------------------------------------------------------------- */

/* Thread (h, i) of the lookup kernel. Returns the counters it adds to *add (zeroed by the
 * caller): the leader of a run looks its key up, writes src of every run position and its own
 * lead entry, stamps the slot it hit or bids for its set; a position outside [0, n_tokens)
 * marks itself SRC_BAD. Other positions do nothing (their leader writes their src). */
SL_HD void sl_fetch_lookup(const struct sl_fetch_sel *s,
                                               const struct sl_fetch_cache *c, int32_t h,
                                               int64_t i, struct sl_fetch_counters *add) {
    int64_t count = sl_fetch_count(s, h);
    if (i == 0 && sl_fetch_count_bad(s, h)) add->bad++;
    if (i >= count) return;
    int64_t o = sl_fetch_out_row(s, h, i);
    int32_t p = sl_fetch_pos(s, h, i);
    if (!sl_fetch_valid(s, p)) {
        s->src[o] = SL_FETCH_SRC_BAD;
        add->bad++;
        return;
    }
    if (!sl_fetch_is_leader(s, h, i)) return;
    int64_t b = sl_fetch_block(s, p), end = sl_fetch_run_end(s, h, i, count);
    int64_t slot = -1;
    if (c->n_sets > 0) {
        uint64_t key = sl_fetch_key(s->layer, h, b);
        int64_t set = sl_fetch_set(key, c->n_sets);
        for (int32_t w = 0; w < c->ways; w++)
            if (c->tags[set * c->ways + w] == key) slot = set * c->ways + w;
        if (slot >= 0)
            c->used[slot] = s->step;
        else
            SL_FETCH_ATOMIC_MIN_U64(&c->claim[set], sl_fetch_bid(s->step, o));
    }
    add->blocks++;
    add->block_hits += slot >= 0;
    s->lead[o] = slot >= 0 ? (int32_t)slot : SL_FETCH_SRC_MISS;
    uint64_t have = slot >= 0 ? c->mask[slot] : 0;
    for (int64_t j = i; j < end; j++) {
        int32_t r = sl_fetch_row(s, sl_fetch_pos(s, h, j));
        s->src[sl_fetch_out_row(s, h, j)] =
            (have >> r) & 1 ? (int32_t)slot : SL_FETCH_SRC_MISS;
    }
}

/* ---- phase 3: insert ------------------------------------------------------------------- */

/* What the leader of a run does in phase 3. */
struct sl_fetch_insert {
    int64_t slot;    /* slot to write, or -1: nothing */
    uint64_t key;
    int64_t end;     /* one past the run's last position */
    int32_t stage_j; /* block staging: a staging row of the block (any missed row's), else -1 */
    bool claimed;    /* the slot was taken for this block (a tag miss that won its set) */
    bool evicted;    /* ... and it held another block */
};

/* Thread (h, i) of the insert kernel (lane 0 of its warp): decides the slot, claiming a
 * victim (tag and mask cleared, cursor advanced) when this leader's bid won its set. Slots
 * are written only here and only by one leader each (see the file comment). */
SL_HD struct sl_fetch_insert sl_fetch_insert_decide(
    const struct sl_fetch_sel *s, const struct sl_fetch_cache *c, const struct sl_fetch_stage *st,
    int32_t h, int64_t i) {
    struct sl_fetch_insert in = {-1, 0, i, -1, false, false};
    int64_t count = sl_fetch_count(s, h);
    if (c->n_sets == 0 || i >= count || !sl_fetch_is_leader(s, h, i)) return in;
    int64_t o = sl_fetch_out_row(s, h, i);
    int32_t p = sl_fetch_pos(s, h, i);
    in.end = sl_fetch_run_end(s, h, i, count);
    bool missed = false;
    for (int64_t j = i; j < in.end; j++) {
        int64_t oj = sl_fetch_out_row(s, h, j);
        if (s->src[oj] == SL_FETCH_SRC_MISS) {
            missed = true;
            if (st && st->map && in.stage_j < 0) in.stage_j = st->map[oj];
        }
    }
    if (!missed) return in;
    in.key = sl_fetch_key(s->layer, h, sl_fetch_block(s, p));
    if (s->lead[o] >= 0) { /* tag hit with rows missing: fill in the slot it owns */
        in.slot = s->lead[o];
        return in;
    }
    int64_t set = sl_fetch_set(in.key, c->n_sets);
    if (c->claim[set] != sl_fetch_bid(s->step, o)) return in; /* another miss won the set */
    int32_t way = sl_fetch_victim(c->used + set * c->ways, c->ways, c->rr[set], s->step);
    if (way < 0) return in;
    in.slot = set * c->ways + way;
    in.claimed = true;
    in.evicted = c->tags[in.slot] != SL_FETCH_TAG_EMPTY;
    c->rr[set] = (uint32_t)(way + 1) % (uint32_t)c->ways;
    c->tags[in.slot] = SL_FETCH_TAG_EMPTY;
    c->mask[in.slot] = 0;
    return in;
}

/* Rows a leader's copy adds to its slot: the run's missed rows; with block staging every
 * committed row of the block (the whole block came over). */
SL_HD uint64_t sl_fetch_insert_rows(const struct sl_fetch_sel *s,
                                                        const struct sl_fetch_insert *in,
                                                        int32_t h, int64_t i, bool whole) {
    if (whole) return sl_fetch_valid_rows(s, sl_fetch_block(s, sl_fetch_pos(s, h, i)));
    uint64_t rows = 0;
    for (int64_t j = i; j < in->end; j++)
        if (s->src[sl_fetch_out_row(s, h, j)] == SL_FETCH_SRC_MISS)
            rows |= UINT64_C(1) << sl_fetch_row(s, sl_fetch_pos(s, h, j));
    return rows;
}

/* After the rows are in the slot: the mask grows, then the tag names the block. */
SL_HD void sl_fetch_publish(const struct sl_fetch_cache *c,
                                                const struct sl_fetch_insert *in, uint64_t rows) {
    SL_FETCH_ATOMIC_OR_U64(&c->mask[in->slot], rows);
    c->tags[in->slot] = in->key;
}

/* ---- staged paths: the host's plan --------------------------------------------------- */

/* Fills map (n_heads, max_count) for every MISS position from the src the lookup wrote, in
 * row order: file-tier rows (block_shift_stage 0) get consecutive staging rows and their
 * positions appended to pos[] (the gather's index list, per head contiguous; head h's start
 * in first[h], first[n_heads] = total); block staging (block_shift_stage = block_shift) gets a
 * staging block per distinct missed block, recorded in blocks[] as its block index (head in
 * block_head[]). Returns the rows (row staging) or blocks (block staging) planned. */
static inline int64_t sl_fetch_plan(const struct sl_fetch_sel *s, bool blocks_mode, int32_t *map,
                                    int64_t *pos, int64_t *first, int64_t *blocks,
                                    int32_t *block_head) {
    int64_t n = 0;
    for (int32_t h = 0; h < s->n_heads; h++) {
        if (first) first[h] = n;
        int64_t count = sl_fetch_count(s, h), last_b = -1;
        for (int64_t i = 0; i < count; i++) {
            int64_t o = sl_fetch_out_row(s, h, i);
            if (s->src[o] != SL_FETCH_SRC_MISS) continue;
            int32_t p = sl_fetch_pos(s, h, i);
            if (!blocks_mode) {
                pos[n] = p;
                map[o] = (int32_t)n++;
                continue;
            }
            int64_t b = sl_fetch_block(s, p);
            if (b != last_b) {
                blocks[n] = b;
                block_head[n] = h;
                n++;
                last_b = b;
            }
            map[o] = (int32_t)(((n - 1) << s->block_shift) + sl_fetch_row(s, p));
        }
    }
    if (first) first[s->n_heads] = n;
    return n;
}

#endif
