/* The GPU KV fetch's decisions (gpu/fetch-logic.h) on the CPU: the three cache phases
 * emulated over many random steps, each kernel thread's body called exactly as the kernels
 * call it, in a random thread order, with host arrays standing in for VRAM and the host
 * tier's own memory standing in for the mapped pages.
 *
 * Per step it checks that every output row equals sl_kv_store_gather's (bad positions give
 * zero rows, rows past a count stay untouched), that phase 3 never writes a slot phase 1 hit
 * for another block or phase 2 read, that each slot and each set's cursor has one writer,
 * and that hits, inserts, evictions and the whole cache state equal an independent reference
 * model of the policy (set-associative, row masks, lowest-ordinal winner per set,
 * round-robin victim skipping ways hit this step). All three transfer paths' shapes are
 * emulated: zero copy (rows from host memory), staged rows (file tier) and staged blocks.
 * No CUDA. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/fetch-logic.h"
#include "spotlight/error.h"
#include "storage/kv-host-map.h"
#include "tests/fetch-test-util.h"

enum mode { ZERO_COPY, STAGED_ROWS, STAGED_BLOCKS };

/* ---- reference model: the policy written out plainly ---------------------------------- */
struct ref_slot {
    bool valid;
    uint64_t key, rows;
    uint32_t used;
};
struct ref {
    int64_t n_sets;
    int32_t ways;
    struct ref_slot *slot; /* (n_sets, ways) */
    uint32_t *rr;
};
struct ref_counts {
    int64_t blocks, block_hits, rows, row_hits, inserts, evictions;
};

/* One call: runs are the distinct blocks of each head's valid positions, in order. */
static void ref_step(struct ref *m, int32_t layer, const struct ftu_sel *sel, int64_t n_tokens,
                     int32_t T, uint32_t step, bool whole, bool prefetch, struct ref_counts *out) {
    int64_t cap_runs = sel->H * sel->M + 1;
    struct run {
        int32_t h;
        int64_t block, ordinal;
        uint64_t want; /* selected rows */
        int64_t slot;  /* phase-1 hit, or -1 */
        uint64_t missing;
    } *runs = malloc(sizeof *runs * (size_t)cap_runs);
    int64_t nr = 0;
    for (int32_t h = 0; h < sel->H; h++) {
        int64_t c = sel->cnt[h] < 0 ? 0 : sel->cnt[h] > sel->M ? sel->M : sel->cnt[h];
        for (int64_t i = 0; i < c; i++) {
            int64_t p = sel->idx[h * sel->M + i];
            if (p < 0 || p >= n_tokens) continue;
            if (nr == 0 || runs[nr - 1].h != h || runs[nr - 1].block != p / T ||
                !(sel->idx[h * sel->M + i - 1] >= 0 && sel->idx[h * sel->M + i - 1] < n_tokens)) {
                runs[nr] = (struct run){h, p / T, h * sel->M + i, 0, -1, 0};
                nr++;
            }
            runs[nr - 1].want |= UINT64_C(1) << (p % T);
            if (!prefetch) out->rows++;
        }
    }
    /* Phase 1 against the state at the start. */
    for (int64_t r = 0; r < nr; r++) {
        uint64_t key = sl_fetch_key(layer, runs[r].h, runs[r].block);
        int64_t set = m->n_sets ? sl_fetch_set(key, m->n_sets) : -1;
        for (int32_t w = 0; set >= 0 && w < m->ways; w++) {
            struct ref_slot *sl = &m->slot[set * m->ways + w];
            if (sl->valid && sl->key == key) runs[r].slot = set * m->ways + w;
        }
        uint64_t have = runs[r].slot >= 0 ? m->slot[runs[r].slot].rows : 0;
        runs[r].missing = runs[r].want & ~have;
        if (!prefetch) {
            out->blocks++;
            out->block_hits += runs[r].slot >= 0;
            out->row_hits += __builtin_popcountll(runs[r].want & have);
        }
    }
    for (int64_t r = 0; r < nr; r++)
        if (runs[r].slot >= 0) m->slot[runs[r].slot].used = step;
    /* Phase 3. */
    for (int64_t r = 0; r < nr && m->n_sets; r++) {
        if (!runs[r].missing) continue;
        int64_t T_left = n_tokens - runs[r].block * T;
        uint64_t valid = T_left >= T ? (T == 64 ? ~UINT64_C(0) : (UINT64_C(1) << T) - 1)
                                     : (UINT64_C(1) << T_left) - 1;
        uint64_t add = whole ? valid : runs[r].missing;
        if (runs[r].slot >= 0) {
            m->slot[runs[r].slot].rows |= add;
            continue;
        }
        uint64_t key = sl_fetch_key(layer, runs[r].h, runs[r].block);
        int64_t set = sl_fetch_set(key, m->n_sets);
        bool lowest = true;
        for (int64_t q = 0; q < nr; q++)
            if (runs[q].slot < 0 && q != r &&
                sl_fetch_set(sl_fetch_key(layer, runs[q].h, runs[q].block), m->n_sets) == set &&
                runs[q].ordinal < runs[r].ordinal)
                lowest = false;
        if (!lowest) continue;
        int32_t victim = -1;
        for (int32_t w = 0; w < m->ways && victim < 0; w++) {
            int32_t way = (int32_t)((m->rr[set] + (uint32_t)w) % (uint32_t)m->ways);
            if (m->slot[set * m->ways + way].used != step) victim = way;
        }
        if (victim < 0) continue;
        struct ref_slot *sl = &m->slot[set * m->ways + victim];
        out->inserts++;
        out->evictions += sl->valid;
        sl->valid = true;
        sl->key = key;
        sl->rows = add;
        m->rr[set] = (uint32_t)(victim + 1) % (uint32_t)m->ways;
    }
    free(runs);
}

/* ---- the emulated device ------------------------------------------------------------------ */
struct emu {
    struct ftu_store st;
    struct sl_kv_host_map map;
    const uint8_t **segs;
    enum mode mode;
    int32_t H, T;
    int64_t M, row;
    struct sl_fetch_cache c;
    int32_t *src, *lead, *smap;
    uint8_t *stage, *scratch;
    int64_t *pos, *first, *blocks;
    int32_t *bhead;
    uint32_t step;
    int64_t *perm;
    uint64_t rng;
    /* per-step bookkeeping of the race checks */
    int64_t *writer;  /* (slots) leader that wrote the slot this step, or -1 */
    int64_t *rr_writer;
};

static void emu_init(struct emu *e, const struct sl_kv_shape *shape, int64_t n_tokens,
                     int64_t M, int64_t slots, int32_t ways, enum mode mode, uint64_t seed) {
    memset(e, 0, sizeof *e);
    int rc = ftu_store_make(&e->st, shape, false, -1, n_tokens + 7, n_tokens, seed);
    cr_assert_eq(rc, 0, "store: %s (%s)", sl_strerror(rc), sl_error_detail());
    cr_assert_eq(sl_kv_store_host_map(e->st.s, &e->map), 0);
    e->segs = calloc((size_t)e->map.n_segs, sizeof *e->segs);
    for (int64_t g = 0; g < e->map.n_segs; g++) {
        struct sl_kv_host_segment seg;
        cr_assert_eq(sl_kv_store_host_segment(e->st.s, g, &seg), 0);
        e->segs[g] = seg.ptr;
    }
    e->mode = mode;
    e->H = shape->n_head_kv;
    e->T = shape->block_tokens;
    e->M = M;
    e->row = e->map.row_bytes;
    int64_t HM = e->H * M, ns = slots ? slots / ways : 0;
    e->c.ways = ways;
    e->c.n_sets = ns;
    size_t nslot = (size_t)(ns * ways) + 1;
    e->c.tags = malloc(nslot * sizeof(uint64_t));
    memset(e->c.tags, 0xFF, nslot * sizeof(uint64_t));
    e->c.mask = calloc(nslot, sizeof(uint64_t));
    e->c.used = calloc(nslot, sizeof(uint32_t));
    e->c.rr = calloc((size_t)ns + 1, sizeof(uint32_t));
    e->c.claim = malloc(((size_t)ns + 1) * sizeof(uint64_t));
    memset(e->c.claim, 0xFF, ((size_t)ns + 1) * sizeof(uint64_t));
    e->c.data = malloc(nslot * (size_t)e->map.block_bytes);
    memset(e->c.data, 0x5A, nslot * (size_t)e->map.block_bytes); /* garbage until filled */
    e->src = malloc(sizeof *e->src * (size_t)HM);
    e->lead = malloc(sizeof *e->lead * (size_t)HM);
    e->smap = malloc(sizeof *e->smap * (size_t)HM);
    e->stage = malloc((size_t)(HM * e->map.block_bytes + 2 * HM * e->row));
    e->scratch = malloc((size_t)(2 * HM * e->row));
    e->pos = malloc(sizeof *e->pos * (size_t)HM);
    e->first = malloc(sizeof *e->first * (size_t)(e->H + 1));
    e->blocks = malloc(sizeof *e->blocks * (size_t)HM);
    e->bhead = malloc(sizeof *e->bhead * (size_t)HM);
    e->perm = malloc(sizeof *e->perm * (size_t)HM);
    e->writer = malloc(sizeof *e->writer * nslot);
    e->rr_writer = malloc(sizeof *e->rr_writer * ((size_t)ns + 1));
    e->rng = seed ^ 0xABCDEF;
}

static void emu_free(struct emu *e) {
    ftu_store_free(&e->st);
    free(e->segs);
    free(e->c.tags);
    free(e->c.mask);
    free(e->c.used);
    free(e->c.rr);
    free(e->c.claim);
    free(e->c.data);
    free(e->src);
    free(e->lead);
    free(e->smap);
    free(e->stage);
    free(e->scratch);
    free(e->pos);
    free(e->first);
    free(e->blocks);
    free(e->bhead);
    free(e->perm);
    free(e->writer);
    free(e->rr_writer);
}

/* A random order of the (h, i) threads: the kernels promise nothing about order. */
static void shuffle(struct emu *e) {
    int64_t n = e->H * e->M;
    for (int64_t i = 0; i < n; i++) e->perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = ftu_rand_below(&e->rng, i + 1), t = e->perm[i];
        e->perm[i] = e->perm[j];
        e->perm[j] = t;
    }
}

/* One call (fetch, or prefetch into scratch), checked. Counters of the emulation out. */
static void emu_call(struct emu *e, int32_t layer, const struct ftu_sel *sel, uint8_t *k_out,
                     uint8_t *v_out, bool prefetch, struct ref_counts *got) {
    const int64_t HM = e->H * e->M, slots = e->c.n_sets * e->c.ways;
    struct sl_fetch_sel s = {
        .idx = sel->idx, .cnt = sel->cnt, .src = e->src, .lead = e->lead, .max_count = e->M,
        .n_tokens = sl_kv_store_n_tokens(e->st.s), .n_heads = e->H, .layer = layer,
        .block_shift = e->map.block_shift, .row_bytes = e->row, .step = ++e->step};
    memset(e->src, 0x77, sizeof *e->src * (size_t)HM); /* stale values must not matter */
    memset(e->lead, 0x77, sizeof *e->lead * (size_t)HM);

    /* Phase 1. */
    struct sl_fetch_counters add = {0};
    shuffle(e);
    for (int64_t t = 0; t < HM; t++)
        sl_fetch_lookup(&s, &e->c, (int32_t)(e->perm[t] / e->M), e->perm[t] % e->M, &add);
    if (!prefetch) {
        got->blocks += (int64_t)add.blocks;
        got->block_hits += (int64_t)add.block_hits;
    }

    /* The host's part of the staged paths, as gpu-fetch.cu does it. */
    struct sl_fetch_stage stage = {0}, *stp = NULL;
    if (e->mode != ZERO_COPY) {
        bool blocks = e->mode == STAGED_BLOCKS;
        int64_t n = sl_fetch_plan(&s, blocks, e->smap, e->pos, e->first, e->blocks, e->bhead);
        stage.base = e->stage;
        stage.map = e->smap;
        if (blocks) {
            for (int64_t u = 0; u < n; u++) {
                const uint8_t *b = e->segs[sl_kv_host_map_segment(&e->map, e->blocks[u])] +
                                   sl_kv_host_map_offset(&e->map, layer, e->blocks[u], e->bhead[u]);
                memcpy(e->stage + u * e->map.block_bytes, b, (size_t)e->map.block_bytes);
            }
            stage.shift = e->map.block_shift;
            stage.unit_bytes = e->map.block_bytes;
            stage.v_offset = (int64_t)e->T * e->row;
        } else {
            struct sl_kv_gather g[64];
            cr_assert_leq(e->H, 64);
            for (int32_t h = 0; h < e->H; h++)
                g[h] = (struct sl_kv_gather){.layer = layer, .head = h, .idx = e->pos + e->first[h],
                                             .n = e->first[h + 1] - e->first[h],
                                             .k_out = e->stage + e->first[h] * e->row,
                                             .v_out = e->stage + HM * e->row + e->first[h] * e->row};
            int rc = sl_kv_store_gather(e->st.s, g, e->H);
            cr_assert_eq(rc, 0, "staged gather: %s (%s)", sl_strerror(rc), sl_error_detail());
            stage.shift = 0;
            stage.unit_bytes = e->row;
            stage.v_offset = HM * e->row;
        }
        stp = &stage;
    }

    /* Slots phase 1 stamped: owned by this step's hits. */
    for (int64_t sl = 0; sl < slots; sl++) e->writer[sl] = -1;
    for (int64_t st = 0; st < e->c.n_sets; st++) e->rr_writer[st] = -1;

    /* Phase 2. */
    struct sl_fetch_host host = {.segs = e->segs, .map = e->map};
    shuffle(e);
    for (int64_t t = 0; t < HM; t++) {
        int32_t h = (int32_t)(e->perm[t] / e->M);
        int64_t i = e->perm[t] % e->M, o = sl_fetch_out_row(&s, h, i);
        const uint8_t *k = NULL, *v = NULL;
        enum sl_fetch_from from = sl_fetch_source(&s, &e->c, stp, &host, h, i, prefetch, &k, &v);
        if (from == SL_FETCH_FROM_NONE) continue;
        if (from == SL_FETCH_FROM_SLOT) {
            int64_t slot = e->src[o];
            cr_assert(slot >= 0 && slot < slots && e->c.used[slot] == s.step,
                      "phase 2 reads slot %lld that phase 1 did not hit this step", (long long)slot);
            if (!prefetch) got->row_hits++;
        }
        if (!prefetch) got->rows++;
        if (from == SL_FETCH_FROM_ZERO) {
            memset(k_out + o * e->row, 0, (size_t)e->row);
            memset(v_out + o * e->row, 0, (size_t)e->row);
        } else {
            memcpy(k_out + o * e->row, k, (size_t)e->row);
            memcpy(v_out + o * e->row, v, (size_t)e->row);
        }
    }

    /* Phase 3, in an interleaving the kernel allows: every lane 0 decides, then every warp
     * copies, then every lane 0 publishes. */
    if (e->c.n_sets == 0) return;
    struct sl_fetch_insert *ins = malloc(sizeof *ins * (size_t)HM);
    shuffle(e);
    for (int64_t t = 0; t < HM; t++) {
        int64_t q = e->perm[t];
        int32_t h = (int32_t)(q / e->M);
        int64_t i = q % e->M;
        int64_t set_before = -1;
        if (i < sl_fetch_count(&s, h) && sl_fetch_is_leader(&s, h, i) && e->lead[q] < 0)
            set_before = sl_fetch_set(sl_fetch_key(layer, h, sl_fetch_block(&s, sl_fetch_pos(&s, h, i))),
                                      e->c.n_sets);
        ins[q] = sl_fetch_insert_decide(&s, &e->c, stp, h, i);
        if (ins[q].slot < 0) continue;
        int64_t sl = ins[q].slot;
        cr_assert_eq(e->writer[sl], -1, "slot %lld written by leaders %lld and %lld in one step",
                     (long long)sl, (long long)e->writer[sl], (long long)q);
        e->writer[sl] = q;
        if (ins[q].claimed) {
            cr_assert_neq(e->c.used[sl], s.step,
                          "victim slot %lld was hit in phase 1 of this step", (long long)sl);
            cr_assert_eq(sl / e->c.ways, set_before);
            cr_assert_eq(e->rr_writer[set_before], -1, "set %lld claimed twice in one step",
                         (long long)set_before);
            e->rr_writer[set_before] = q;
            got->inserts++;
            got->evictions += ins[q].evicted;
        } else {
            cr_assert_eq(e->c.used[sl], s.step, "a tag hit fills a slot it does not own");
            cr_assert_eq(sl, e->lead[q]);
        }
    }
    bool whole = e->mode == STAGED_BLOCKS;
    for (int64_t t = 0; t < HM; t++) {
        int64_t q = e->perm[t];
        if (ins[q].slot < 0) continue;
        int32_t h = (int32_t)(q / e->M);
        int64_t i = q % e->M;
        uint8_t *dst = e->c.data + sl_fetch_slot_k(&s, ins[q].slot, 0);
        if (whole) {
            cr_assert_geq(ins[q].stage_j, 0);
            memcpy(dst, e->stage + sl_fetch_stage_unit(&stage, ins[q].stage_j), (size_t)e->map.block_bytes);
            continue;
        }
        for (int64_t j = i; j < ins[q].end; j++) {
            int64_t o = sl_fetch_out_row(&s, h, j);
            if (e->src[o] != SL_FETCH_SRC_MISS) continue;
            int32_t r = sl_fetch_row(&s, sl_fetch_pos(&s, h, j));
            memcpy(dst + r * e->row, k_out + o * e->row, (size_t)e->row);
            memcpy(dst + sl_fetch_v_offset(&s) + r * e->row, v_out + o * e->row, (size_t)e->row);
        }
    }
    shuffle(e);
    for (int64_t t = 0; t < HM; t++) {
        int64_t q = e->perm[t];
        if (ins[q].slot < 0) continue;
        sl_fetch_publish(&e->c, &ins[q],
                         sl_fetch_insert_rows(&s, &ins[q], (int32_t)(q / e->M), q % e->M, whole));
    }
    free(ins);
}

/* The emulated cache equals the reference slot by slot. */
static void compare_state(const struct emu *e, const struct ref *m) {
    for (int64_t sl = 0; sl < e->c.n_sets * e->c.ways; sl++) {
        const struct ref_slot *r = &m->slot[sl];
        cr_assert_eq(e->c.tags[sl] != SL_FETCH_TAG_EMPTY, r->valid, "slot %lld valid", (long long)sl);
        if (!r->valid) continue;
        cr_assert_eq(e->c.tags[sl], r->key, "slot %lld key", (long long)sl);
        cr_assert_eq(e->c.mask[sl], r->rows, "slot %lld rows %llx vs %llx", (long long)sl,
                     (unsigned long long)e->c.mask[sl], (unsigned long long)r->rows);
    }
    for (int64_t st = 0; st < e->c.n_sets; st++)
        cr_assert_eq(e->c.rr[st], m->rr[st], "set %lld cursor", (long long)st);
}

/* Rows each slot holds equal the store's rows of its block. */
static void check_slots(const struct emu *e) {
    uint8_t *k = malloc((size_t)(e->T * e->row)), *v = malloc((size_t)(e->T * e->row));
    for (int64_t sl = 0; sl < e->c.n_sets * e->c.ways; sl++) {
        uint64_t key = e->c.tags[sl];
        if (key == SL_FETCH_TAG_EMPTY) continue;
        int32_t layer = (int32_t)(key >> 48), h = (int32_t)((key >> 38) & 1023);
        int64_t b = (int64_t)(key & ((UINT64_C(1) << 38) - 1));
        int64_t n = sl_kv_store_n_tokens(e->st.s) - b * e->T;
        if (n > e->T) n = e->T;
        cr_assert_eq(sl_kv_store_read_range(e->st.s, layer, h, b * e->T, n, k, v), 0);
        const uint8_t *d = e->c.data + sl * e->map.block_bytes;
        for (int32_t r = 0; r < e->T; r++) {
            if (!((e->c.mask[sl] >> r) & 1)) continue;
            cr_assert_lt(r, n, "slot %lld marks row %d past n_tokens", (long long)sl, r);
            cr_assert(!memcmp(d + r * e->row, k + r * e->row, (size_t)e->row), "slot %lld K row %d", (long long)sl, r);
            cr_assert(!memcmp(d + (e->T + r) * e->row, v + r * e->row, (size_t)e->row), "slot %lld V row %d", (long long)sl, r);
        }
    }
    free(k);
    free(v);
}

struct run_cfg {
    struct sl_kv_shape shape;
    int64_t n_tokens, M, slots;
    int32_t ways;
    enum mode mode;
    int steps;
    bool clustered;
};

static void run_steps(const struct run_cfg *cfg, uint64_t seed) {
    struct emu e;
    emu_init(&e, &cfg->shape, cfg->n_tokens, cfg->M, cfg->slots, cfg->ways, cfg->mode, seed);
    struct ref m = {.n_sets = e.c.n_sets, .ways = e.c.ways};
    m.slot = calloc((size_t)(m.n_sets * m.ways) + 1, sizeof *m.slot);
    m.rr = calloc((size_t)m.n_sets + 1, sizeof *m.rr);
    const int32_t L = cfg->shape.n_layer, H = e.H;
    struct ftu_sel *sel = calloc((size_t)L, sizeof *sel), nxt;
    for (int32_t l = 0; l < L; l++) ftu_sel_init(&sel[l], H, cfg->M);
    ftu_sel_init(&nxt, H, cfg->M);
    const int64_t HM = H * cfg->M;
    uint8_t *k = malloc((size_t)(HM * e.row)), *v = malloc((size_t)(HM * e.row));
    uint64_t rng = seed;
    struct ref_counts total_got = {0}, total_ref = {0};
    for (int step = 0; step < cfg->steps; step++)
        for (int32_t l = 0; l < L; l++) {
            /* Sometimes warm the cache with the previous selection first, as the engine does. */
            bool pre = step > 0 && ftu_rand_below(&rng, 3) == 0;
            if (pre) {
                struct ref_counts g = {0}, r = {0};
                emu_call(&e, l, &sel[l], e.scratch, e.scratch + HM * e.row, true, &g);
                ref_step(&m, l, &sel[l], cfg->n_tokens, e.T, e.step, cfg->mode == STAGED_BLOCKS, true, &r);
                cr_assert_eq(g.inserts, r.inserts, "prefetch inserts %lld vs reference %lld",
                             (long long)g.inserts, (long long)r.inserts);
                compare_state(&e, &m);
            }
            ftu_sel_next(&nxt, step ? &sel[l] : NULL, cfg->n_tokens, e.T, 0.8, cfg->clustered, &rng);
            ftu_sel_copy(&sel[l], &nxt);
            memset(k, 0xA5, (size_t)(HM * e.row));
            memset(v, 0xA5, (size_t)(HM * e.row));
            struct ref_counts g = {0}, r = {0};
            emu_call(&e, l, &sel[l], k, v, false, &g);
            ref_step(&m, l, &sel[l], cfg->n_tokens, e.T, e.step, cfg->mode == STAGED_BLOCKS, false, &r);
            int rc = ftu_check_rows(e.st.s, l, &sel[l], k, v);
            cr_assert_eq(rc, 0, "step %d layer %d: %s", step, l, ftu_msg());
            for (int32_t h = 0; h < H; h++) /* rows past the count stay untouched */
                for (int64_t i = sel[l].cnt[h]; i < cfg->M; i++)
                    cr_assert_eq(k[(h * cfg->M + i) * e.row], 0xA5, "row past the count written");
            cr_assert_eq(g.rows, r.rows, "step %d layer %d rows", step, l);
            cr_assert_eq(g.blocks, r.blocks, "step %d layer %d blocks", step, l);
            cr_assert_eq(g.block_hits, r.block_hits, "step %d layer %d block hits %lld vs reference %lld",
                         step, l, (long long)g.block_hits, (long long)r.block_hits);
            cr_assert_eq(g.row_hits, r.row_hits, "step %d layer %d row hits %lld vs reference %lld",
                         step, l, (long long)g.row_hits, (long long)r.row_hits);
            cr_assert_eq(g.inserts, r.inserts, "step %d layer %d inserts", step, l);
            cr_assert_eq(g.evictions, r.evictions, "step %d layer %d evictions", step, l);
            compare_state(&e, &m);
            total_got.row_hits += g.row_hits;
            total_got.rows += g.rows;
            total_got.evictions += g.evictions;
            total_ref.row_hits += r.row_hits;
        }
    check_slots(&e);
    if (cfg->slots > 0) {
        /* The test means something only if the cache both served rows and had to evict. */
        cr_assert_gt(total_got.row_hits, 0, "no row ever hit the cache");
        cr_assert_gt(total_got.evictions, 0, "no eviction: the cache is larger than the working set");
        cr_assert_lt(total_got.row_hits, total_got.rows);
    }
    free(k);
    free(v);
    for (int32_t l = 0; l < L; l++) ftu_sel_free(&sel[l]);
    ftu_sel_free(&nxt);
    free(sel);
    free(m.slot);
    free(m.rr);
    emu_free(&e);
}

/* ---- the cache phases over many steps ---------------------------------------------------- */

static const struct sl_kv_shape SH16 = {3, 3, 8, SL_KV_DTYPE_F16, 16};
static const struct sl_kv_shape SH4 = {2, 2, 64, SL_KV_DTYPE_BF16, 4};
static const struct sl_kv_shape SH64 = {2, 3, 4, SL_KV_DTYPE_F16, 64};

Test(fetch_logic, zero_copy_steps_match_store_and_reference, .timeout = 120) {
    struct run_cfg c = {SH16, 1000 + 5, 64, 96, 4, ZERO_COPY, 40, false};
    run_steps(&c, 1);
    struct run_cfg c4 = {SH4, 600 + 3, 48, 40, 2, ZERO_COPY, 30, true};
    run_steps(&c4, 2);
    struct run_cfg c64 = {SH64, 64 * 12 + 17, 100, 8, 2, ZERO_COPY, 30, false};
    run_steps(&c64, 3);
}

Test(fetch_logic, staged_rows_steps_match_store_and_reference, .timeout = 120) {
    struct run_cfg c = {SH16, 1000 + 5, 64, 96, 4, STAGED_ROWS, 30, false};
    run_steps(&c, 4);
    struct run_cfg d = {SH4, 600 + 3, 48, 32, 1, STAGED_ROWS, 30, true}; /* direct-mapped */
    run_steps(&d, 5);
}

Test(fetch_logic, staged_blocks_steps_match_store_and_reference, .timeout = 120) {
    struct run_cfg c = {SH16, 1000 + 5, 64, 96, 4, STAGED_BLOCKS, 30, true};
    run_steps(&c, 6);
    struct run_cfg c64 = {SH64, 64 * 12 + 17, 100, 8, 4, STAGED_BLOCKS, 30, false};
    run_steps(&c64, 7);
}

Test(fetch_logic, no_cache_still_copies_every_row, .timeout = 60) {
    struct run_cfg c = {SH16, 700, 64, 0, 4, ZERO_COPY, 10, false};
    run_steps(&c, 8);
    c.mode = STAGED_ROWS;
    run_steps(&c, 9);
}

/* Positions outside [0, n_tokens) and counts outside [0, M]: zero rows, counted, no cache. */
Test(fetch_logic, bad_positions_give_zero_rows, .timeout = 60) {
    struct emu e;
    emu_init(&e, &SH16, 100, 8, 16, 4, ZERO_COPY, 11);
    struct ftu_sel sel;
    ftu_sel_init(&sel, e.H, 8);
    int32_t rows0[] = {-5, 3, 4, 99, 100, 250};
    memcpy(sel.idx, rows0, sizeof rows0);
    sel.cnt[0] = 6;
    sel.cnt[1] = -3; /* nothing */
    sel.cnt[2] = 9;  /* clamped to 8 */
    for (int i = 0; i < 8; i++) sel.idx[2 * 8 + i] = 10 * i;
    struct sl_fetch_sel s = {.idx = sel.idx, .cnt = sel.cnt, .src = e.src, .lead = e.lead,
                             .max_count = 8, .n_tokens = 100, .n_heads = e.H, .layer = 1,
                             .block_shift = 4, .row_bytes = e.row, .step = 1};
    struct sl_fetch_counters add = {0};
    for (int32_t h = 0; h < e.H; h++)
        for (int64_t i = 0; i < 8; i++) sl_fetch_lookup(&s, &e.c, h, i, &add);
    cr_assert_eq(add.bad, 3 + 1 + 1, "bad: %llu", add.bad); /* -5, 100, 250; cnt -3; cnt 9 */
    cr_assert_eq(e.src[0], SL_FETCH_SRC_BAD);
    cr_assert_eq(e.src[4], SL_FETCH_SRC_BAD);
    cr_assert_eq(e.src[1], SL_FETCH_SRC_MISS);
    cr_assert(sl_fetch_is_leader(&s, 0, 1), "the first valid position after a bad one leads");
    cr_assert(!sl_fetch_is_leader(&s, 0, 2));
    /* {3, 4} {99}; head 2: {0, 10} {20, 30} {40} {50, 60} {70} */
    cr_assert_eq(add.blocks, 2 + 5, "blocks %llu", add.blocks);
    const uint8_t *k = NULL, *v = NULL;
    struct sl_fetch_host host = {.segs = e.segs, .map = e.map};
    cr_assert_eq(sl_fetch_source(&s, &e.c, NULL, &host, 0, 0, false, &k, &v), SL_FETCH_FROM_ZERO);
    cr_assert_eq(sl_fetch_source(&s, &e.c, NULL, &host, 0, 0, true, &k, &v), SL_FETCH_FROM_NONE);
    cr_assert_eq(sl_fetch_source(&s, &e.c, NULL, &host, 1, 0, false, &k, &v), SL_FETCH_FROM_NONE);
    cr_assert_eq(sl_fetch_source(&s, &e.c, NULL, &host, 0, 3, false, &k, &v), SL_FETCH_FROM_HOST);
    ftu_sel_free(&sel);
    emu_free(&e);
}

/* ---- the pure functions -------------------------------------------------------------------- */

Test(fetch_logic, position_maps_to_block_row_and_output_row) {
    for (int32_t shift = 2; shift <= 8; shift++) {
        struct sl_fetch_sel s = {.block_shift = shift, .max_count = 37, .row_bytes = 128, .n_tokens = 1 << 20};
        uint64_t rng = (uint64_t)shift;
        for (int t = 0; t < 2000; t++) {
            int32_t p = (int32_t)ftu_rand_below(&rng, 1 << 20);
            int64_t b = sl_fetch_block(&s, p);
            int32_t r = sl_fetch_row(&s, p);
            cr_assert_eq(b * (1 << shift) + r, p);
            cr_assert(r >= 0 && r < (1 << shift));
        }
        cr_assert_eq(sl_fetch_out_row(&s, 2, 5), 2 * 37 + 5);
        cr_assert_eq(sl_fetch_block_bytes(&s), 2 * (1 << shift) * 128);
        cr_assert_eq(sl_fetch_slot_k(&s, 3, 2), 3 * sl_fetch_block_bytes(&s) + 2 * 128);
        cr_assert_eq(sl_fetch_v_offset(&s), (1 << shift) * 128);
    }
    /* Committed rows of the last block. */
    struct sl_fetch_sel s = {.block_shift = 4, .n_tokens = 35};
    cr_assert_eq(sl_fetch_valid_rows(&s, 0), 0xFFFF);
    cr_assert_eq(sl_fetch_valid_rows(&s, 2), 0x7);
    cr_assert_eq(sl_fetch_valid_rows(&s, 3), 0);
    s.block_shift = 6;
    s.n_tokens = 200;
    cr_assert_eq(sl_fetch_valid_rows(&s, 0), ~UINT64_C(0));
    cr_assert_eq(sl_fetch_valid_rows(&s, 3), 0xFF);
    /* Staging rows: rows mode is a plain array; block mode follows the block layout. */
    struct sl_fetch_stage rows = {.shift = 0, .unit_bytes = 128, .v_offset = 1000};
    cr_assert_eq(sl_fetch_stage_k(&rows, 128, 7), 7 * 128);
    struct sl_fetch_stage blk = {.shift = 4, .unit_bytes = 4096, .v_offset = 2048};
    cr_assert_eq(sl_fetch_stage_k(&blk, 128, 3 * 16 + 5), 3 * 4096 + 5 * 128);
    cr_assert_eq(sl_fetch_stage_unit(&blk, 3 * 16 + 5), 3 * 4096);
}

Test(fetch_logic, keys_sets_bids_and_victims) {
    /* Keys of the store's extremes are distinct and never the empty tag. */
    int32_t layers[] = {0, 1, 4095}, heads[] = {0, 1, 1023};
    int64_t blocks[] = {0, 1, (INT64_C(1) << 38) - 1};
    uint64_t seen[27];
    int n = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++) {
                uint64_t k = sl_fetch_key(layers[a], heads[b], blocks[c]);
                cr_assert_neq(k, SL_FETCH_TAG_EMPTY);
                for (int i = 0; i < n; i++) cr_assert_neq(seen[i], k);
                seen[n++] = k;
                for (int64_t ns = 1; ns < 100; ns += 7) cr_assert_lt(sl_fetch_set(k, ns), ns);
            }
    /* Consecutive blocks spread over the sets. */
    int64_t hist[16] = {0};
    for (int64_t b = 0; b < 1600; b++) hist[sl_fetch_set(sl_fetch_key(3, 1, b), 16)]++;
    for (int i = 0; i < 16; i++) cr_assert(hist[i] > 50 && hist[i] < 150, "set %d got %lld", i, (long long)hist[i]);
    /* Bids: a later step's bids are lower than any earlier one; within a step, by ordinal. */
    cr_assert_lt(sl_fetch_bid(2, 2000000000), sl_fetch_bid(1, 0));
    cr_assert_lt(sl_fetch_bid(5, 3), sl_fetch_bid(5, 4));
    cr_assert_lt(sl_fetch_bid(5, 0), UINT64_MAX);
    /* Victims: round robin from the cursor, skipping ways stamped with this step. */
    uint32_t used[4] = {7, 3, 7, 2};
    cr_assert_eq(sl_fetch_victim(used, 4, 0, 7), 1);
    cr_assert_eq(sl_fetch_victim(used, 4, 2, 7), 3);
    cr_assert_eq(sl_fetch_victim(used, 4, 3, 3), 3);
    uint32_t all[2] = {9, 9};
    cr_assert_eq(sl_fetch_victim(all, 2, 1, 9), -1);
    cr_assert_eq(sl_fetch_victim(all, 2, 1, 10), 1);
}

/* Plans of the staged paths on a hand-made selection. */
Test(fetch_logic, staged_plans) {
    int32_t idx[2 * 6] = {1, 2, 17, 40, 41, 47, /* head 1 */ 5, 6, 0, 0, 0, 0};
    int32_t cnt[2] = {6, 2};
    int32_t src[12] = {SL_FETCH_SRC_MISS, 0, SL_FETCH_SRC_MISS, SL_FETCH_SRC_MISS, SL_FETCH_SRC_BAD,
                       SL_FETCH_SRC_MISS, 3, SL_FETCH_SRC_MISS};
    struct sl_fetch_sel s = {.idx = idx, .cnt = cnt, .src = src, .max_count = 6, .n_tokens = 48,
                             .n_heads = 2, .block_shift = 4, .row_bytes = 16};
    int32_t map[12];
    int64_t pos[12], first[3], blocks[12];
    int32_t bh[12];
    int64_t n = sl_fetch_plan(&s, false, map, pos, first, NULL, NULL);
    cr_assert_eq(n, 5);
    int64_t want_pos[] = {1, 17, 40, 47, 6};
    for (int i = 0; i < 5; i++) cr_assert_eq(pos[i], want_pos[i]);
    cr_assert_eq(first[0], 0);
    cr_assert_eq(first[1], 4);
    cr_assert_eq(first[2], 5);
    cr_assert_eq(map[0], 0);
    cr_assert_eq(map[2], 1);
    cr_assert_eq(map[5], 3);
    cr_assert_eq(map[7], 4);
    n = sl_fetch_plan(&s, true, map, NULL, NULL, blocks, bh);
    cr_assert_eq(n, 4); /* head 0: blocks 0, 1, 2 (40 and 47 share one); head 1: block 0 */
    cr_assert_eq(blocks[0], 0);
    cr_assert_eq(blocks[1], 1);
    cr_assert_eq(blocks[2], 2);
    cr_assert_eq(blocks[3], 0);
    cr_assert_eq(bh[3], 1);
    cr_assert_eq(map[3], 2 * 16 + 8);  /* 40: staging block 2, row 8 */
    cr_assert_eq(map[5], 2 * 16 + 15); /* 47: same block */
    cr_assert_eq(map[7], 3 * 16 + 6);
}
