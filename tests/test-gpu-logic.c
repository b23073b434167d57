/* The GPU retrieval kernels' logic on the CPU, no CUDA needed: a host emulation of the
 * top-k's grid (gpu/gpu-topk.cu) - heads, tiles and threads, phase by phase in the kernels'
 * order, calling the same gpu/retrieval-logic.h functions, with the block-wide scans done
 * serially - compared with sl_topk_select on the shared case list (tests/retrieval-cases.h);
 * the scan's fused histogram (gpu/gpu-scan.cu) with sl_rt_score against sl_hamming_scan; and
 * the sizes of gpu/retrieval-plan.c from first principles. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/hamming.h"
#include "cpu/topk.h"
#include "gpu/gpu-retrieval.h"
#include "gpu/retrieval-logic.h"
#include "spotlight/error.h"
#include "retrieval-cases.h"

/* ---- the emulated grid ---------------------------------------------------------------------- */

struct emu_ws {
    struct sl_rt_layout l;
    void *base;
    uint32_t *bad, *hist;
    struct sl_rt_state *state;
    struct sl_rt_tile *tiles;
    uint16_t *bm;
};

static void emu_ws_init(const struct sl_rt_geom *g, int32_t H, struct emu_ws *w) {
    sl_rt_layout_init(g, H, &w->l);
    cr_assert_eq(w->l.bytes, sl_gpu_topk_workspace_bytes(g->n, g->ms, (int32_t)g->B, H));
    w->base = aligned_alloc(SL_RT_ALIGN, w->l.bytes);
    cr_assert(w->base);
    memset(w->base, 0xA5, w->l.bytes); /* like cudaMalloc: nothing is zero unless zeroed */
    char *b = w->base;
    w->bad = (uint32_t *)(b + w->l.bad);
    w->hist = (uint32_t *)(b + w->l.hist);
    w->state = (struct sl_rt_state *)(b + w->l.state);
    w->tiles = (struct sl_rt_tile *)(b + w->l.tiles);
    w->bm = (uint16_t *)(b + w->l.bm);
}

/* In-place exclusive scan of n values (a block-wide scan of the kernels); the total. */
static int64_t excl_scan(int64_t *v, int32_t n) {
    int64_t s = 0;
    for (int32_t i = 0; i < n; i++) {
        int64_t x = v[i];
        v[i] = s;
        s += x;
    }
    return s;
}

/* load_thread of gpu-topk.cu: unit scores only in mode THRESH. */
static void emu_load(const uint16_t *rows, int64_t ld, const struct sl_rt_state *st, int32_t h, int64_t ub, int32_t nv,
                     uint16_t s[SL_RT_PER_THREAD]) {
    for (int32_t i = 0; i < SL_RT_PER_THREAD; i++)
        s[i] = st->mode == SL_RT_THRESH && i < nv ? rows[(size_t)h * ld + ub + i] : 0;
}

/* The histogram phase (hist_tokens_kernel / block_max_kernel), after the zeroing memset. */
static void emu_hist(const uint16_t *scores, int64_t ld, int32_t H, const struct sl_rt_geom *g, struct emu_ws *w) {
    memset(w->base, 0, w->l.zero_bytes);
    for (int32_t h = 0; h < H; h++) {
        uint32_t *gh = w->hist + (size_t)h * ((size_t)g->ms + 1);
        const uint16_t *row = scores + (size_t)h * ld;
        if (g->B > 1) {
            for (int64_t u = 0; u < g->nu; u++) {
                uint32_t m = 0, b = 0;
                for (int64_t j = sl_rt_unit_begin(g, u); j < sl_rt_unit_end(g, u); j++) m = row[j] > m ? row[j] : m;
                w->bm[(size_t)h * w->l.bm_ld + u] = (uint16_t)m;
                if (sl_rt_hist_accept(g, u, m, &b)) gh[m]++;
                if (b) w->bad[h] = 1;
            }
            continue;
        }
        for (int64_t tile = 0; tile < g->n_tiles; tile++)
            for (int32_t i = 0; i < SL_RT_THREADS; i++) {
                int64_t ub;
                int32_t nv = sl_rt_thread_units(g, tile, i, &ub);
                uint32_t b = 0;
                for (int32_t x = 0; x < nv; x++)
                    if (sl_rt_hist_accept(g, ub + x, row[ub + x], &b)) gh[row[ub + x]]++;
                if (b) w->bad[h] = 1;
            }
    }
}

/* sl_gpu_topk_launch, phase by phase. hist_ready: emu_hist (or the fused scan) already ran. */
static void emu_topk(const uint16_t *scores, int64_t ld, int32_t H, const struct sl_rt_geom *g, struct emu_ws *w,
                     int hist_ready, int32_t *out, int64_t out_ld, int32_t *counts) {
    if (g->n == 0) {
        for (int32_t h = 0; h < H; h++) counts[h] = 0;
        return;
    }
    if (g->mode == SL_RT_THRESH && !hist_ready) emu_hist(scores, ld, H, g, w);
    const uint16_t *rows = g->B > 1 ? w->bm : scores;
    const int64_t rld = g->B > 1 ? w->l.bm_ld : ld;
    int64_t v[SL_RT_THREADS];

    /* state_kernel: chunk sums, one exclusive scan, the chunk holding the k-th count walks */
    for (int32_t h = 0; h < H; h++) {
        const int walk = g->mode == SL_RT_THRESH && !w->bad[h];
        w->state[h] = sl_rt_state_plain(walk ? SL_RT_NONE : g->mode == SL_RT_THRESH ? SL_RT_BAD : g->mode);
        if (!walk) continue;
        const uint32_t *hh = w->hist + (size_t)h * ((size_t)g->ms + 1);
        int32_t hi[SL_RT_THREADS], lo[SL_RT_THREADS];
        for (int32_t i = 0; i < SL_RT_THREADS; i++) {
            sl_rt_chunk_bins(g->ms, SL_RT_THREADS, i, &hi[i], &lo[i]);
            v[i] = 0;
            for (int32_t b = lo[i]; b <= hi[i]; b++) v[i] += hh[b];
        }
        int64_t sums[SL_RT_THREADS];
        memcpy(sums, v, sizeof v);
        excl_scan(v, SL_RT_THREADS);
        int found = 0;
        for (int32_t i = 0; i < SL_RT_THREADS; i++) {
            uint32_t t;
            int64_t skip;
            if (hi[i] >= lo[i] && v[i] < g->ku && v[i] + sums[i] >= g->ku &&
                sl_rt_threshold_walk(hh, hi[i], lo[i], v[i], g->ku, &t, &skip)) {
                w->state[h] = sl_rt_state_plain(SL_RT_THRESH);
                w->state[h].t = t;
                w->state[h].skip = skip;
                found++;
            }
        }
        cr_assert_eq(found, 1, "head %d: %d chunks claim the threshold", h, found);
    }

    /* count_kernel */
    for (int32_t h = 0; h < H; h++) {
        const struct sl_rt_state *st = &w->state[h];
        if (st->mode == SL_RT_BAD) continue;
        for (int64_t tile = 0; tile < g->n_tiles; tile++) {
            struct sl_rt_tile *t = &w->tiles[(size_t)h * g->n_tiles + tile];
            t->c_gt = t->c_eq = t->x_gt = t->x_eq = 0;
            for (int32_t i = 0; i < SL_RT_THREADS; i++) {
                int64_t ub;
                int32_t nv = sl_rt_thread_units(g, tile, i, &ub);
                uint16_t s[SL_RT_PER_THREAD];
                emu_load(rows, rld, st, h, ub, nv, s);
                struct sl_rt_counts c;
                sl_rt_thread_count(g, st, ub, nv, s, &c);
                t->c_gt += c.c_gt;
                t->c_eq += c.c_eq;
                t->x_gt += c.x_gt;
                t->x_eq += c.x_eq;
            }
        }
    }

    /* scan_kernel */
    for (int32_t h = 0; h < H; h++) {
        const struct sl_rt_state *st = &w->state[h];
        if (st->mode == SL_RT_BAD) {
            counts[h] = SL_EINVAL;
            continue;
        }
        struct sl_rt_tile *T = w->tiles + (size_t)h * g->n_tiles;
        int64_t eq_base = 0, cross = -1, n_cross = 0;
        for (int64_t i = 0; i < g->n_tiles; i++) {
            T[i].r0 = sl_rt_tile_r0(st->skip, eq_base, T[i].c_eq);
            if (sl_rt_tile_is_cross(&T[i])) cross = i, n_cross++;
            eq_base += T[i].c_eq;
        }
        cr_assert_leq(n_cross, 1);
        if (cross >= 0) {
            int64_t ties[SL_RT_THREADS], x = 0;
            uint16_t s[SL_RT_THREADS][SL_RT_PER_THREAD];
            int64_t ub[SL_RT_THREADS];
            int32_t nv[SL_RT_THREADS];
            for (int32_t i = 0; i < SL_RT_THREADS; i++) {
                nv[i] = sl_rt_thread_units(g, cross, i, &ub[i]);
                emu_load(rows, rld, st, h, ub[i], nv[i], s[i]);
                ties[i] = sl_rt_thread_ties(g, st, ub[i], nv[i], s[i]);
            }
            excl_scan(ties, SL_RT_THREADS);
            for (int32_t i = 0; i < SL_RT_THREADS; i++)
                x += sl_rt_thread_cross(g, st, ub[i], nv[i], s[i], (uint32_t)ties[i], T[cross].r0);
            T[cross].x_cross = (uint32_t)x;
        }
        int64_t off = 0;
        for (int64_t i = 0; i < g->n_tiles; i++) {
            uint32_t e = sl_rt_tile_emitted(g, i, &T[i]);
            T[i].out_base = (uint32_t)off;
            T[i].emitted = e;
            off += e;
        }
        counts[h] = (int32_t)off;
        cr_assert_leq(off, out_ld, "head %d emits %lld > max_count %lld", h, (long long)off, (long long)out_ld);
    }

    /* compact_kernel */
    for (int32_t h = 0; h < H; h++) {
        const struct sl_rt_state *st = &w->state[h];
        if (st->mode == SL_RT_BAD) continue;
        for (int64_t tile = 0; tile < g->n_tiles; tile++) {
            const struct sl_rt_tile t = w->tiles[(size_t)h * g->n_tiles + tile];
            if (t.emitted == 0) continue;
            int64_t ties[SL_RT_THREADS], e[SL_RT_THREADS], ub[SL_RT_THREADS];
            int32_t nv[SL_RT_THREADS];
            uint16_t s[SL_RT_THREADS][SL_RT_PER_THREAD];
            uint32_t mask[SL_RT_THREADS];
            for (int32_t i = 0; i < SL_RT_THREADS; i++) {
                nv[i] = sl_rt_thread_units(g, tile, i, &ub[i]);
                emu_load(rows, rld, st, h, ub[i], nv[i], s[i]);
                ties[i] = sl_rt_thread_ties(g, st, ub[i], nv[i], s[i]);
            }
            excl_scan(ties, SL_RT_THREADS);
            for (int32_t i = 0; i < SL_RT_THREADS; i++)
                e[i] = sl_rt_thread_select(g, st, ub[i], nv[i], s[i], (uint32_t)ties[i], t.r0, &mask[i]);
            int64_t total = excl_scan(e, SL_RT_THREADS);
            cr_assert_eq(total, t.emitted, "head %d tile %lld: compaction emits %lld, the scan planned %u", h,
                         (long long)tile, (long long)total, t.emitted);
            for (int32_t i = 0; i < SL_RT_THREADS; i++)
                if (nv[i] > 0) sl_rt_thread_write(g, ub[i], nv[i], mask[i], out + (size_t)h * out_ld + t.out_base + e[i]);
        }
    }
}

/* ---- against the CPU ----------------------------------------------------------------------- */

static void run_case(const struct rt_case *c, int32_t H) {
    struct sl_rt_geom g;
    cr_assert_eq(sl_rt_geom_init(c->n, c->ms, c->k, c->n_sink, c->n_window, c->block, &g), 0);
    struct sl_gpu_topk_params gp = {c->k, c->n_sink, c->n_window, c->block};
    cr_assert_eq(g.max_count, sl_gpu_topk_max_count(c->n, &gp));
    struct sl_topk_params cp = {c->k, c->n_sink, c->n_window, c->block};
    cr_assert_eq(g.max_count, sl_topk_max_count(c->n, &cp));
    const int64_t ld = c->n + 3; /* rows not 16-byte multiples: the strides are honoured */
    uint16_t *scores = malloc(sizeof *scores * (size_t)(H * ld + 1));
    for (int32_t h = 0; h < H; h++) rt_fill_scores(c, scores + h * ld);
    const int64_t out_ld = g.max_count > 0 ? g.max_count : 1;
    int32_t *out = malloc(sizeof *out * (size_t)(H * out_ld));
    int32_t counts[8];
    struct emu_ws w;
    emu_ws_init(&g, H, &w);
    emu_topk(scores, ld, H, &g, &w, 0, out, out_ld, counts);
    for (int32_t h = 0; h < H; h++) expect_cpu(c, scores + h * ld, h, out + h * out_ld, counts[h]);
    free(w.base);
    free(out);
    free(scores);
}

Test(gpu_logic, topk_cases_match_the_cpu) {
    static struct rt_case cases[2048];
    size_t n = rt_cases(cases, 2048);
    cr_assert_gt(n, 1000);
    for (size_t i = 0; i < n; i++) run_case(&cases[i], 3);
}

Test(gpu_logic, topk_one_million) {
    const struct rt_case cs[] = {
        {1 << 20, 192, (1 << 20) / 50, 4, 64, 1, 0},
        {1 << 20, 512, (1 << 20) / 50, 4, 64, 16, 0},
        {1 << 20, 192, (1 << 20) / 50, 4, 64, 1, 4},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_case(&cs[i], 1);
}

/* A candidate scoring above max_score: SL_EINVAL for that head, as sl_topk_select says; above
 * it in a forced position (token level) the CPU does not look, nor does the emulation. */
Test(gpu_logic, scores_above_max_score) {
    struct rt_case c = {5000, 100, 50, 4, 64, 1, 0};
    struct sl_rt_geom g;
    cr_assert_eq(sl_rt_geom_init(c.n, c.ms, c.k, c.n_sink, c.n_window, 1, &g), 0);
    uint16_t *scores = malloc(sizeof *scores * 2 * (size_t)c.n);
    rt_fill_scores(&c, scores);
    rt_fill_scores(&c, scores + c.n);
    scores[3000] = 101;      /* head 0: a candidate */
    scores[c.n + 2] = 4000; /* head 1: a sink */
    int32_t *out = malloc(sizeof *out * 2 * (size_t)g.max_count), counts[2];
    struct emu_ws w;
    emu_ws_init(&g, 2, &w);
    emu_topk(scores, c.n, 2, &g, &w, 0, out, g.max_count, counts);
    cr_assert_eq(counts[0], SL_EINVAL);
    expect_cpu(&c, scores, 0, out, counts[0]);
    expect_cpu(&c, scores + c.n, 1, out + g.max_count, counts[1]);
    free(w.base);
    free(out);
    free(scores);
}

/* ---- the fused scan: scores and histogram ----------------------------------------------------- */

/* scan_kernel of gpu-scan.cu with a histogram: every key of every tile scored by sl_rt_score,
 * accepted into the head's histogram as the kernel does; then the top-k from the histogram. */
static void check_fused(int32_t G, int32_t W, int32_t H, int64_t n, int64_t k) {
    const int32_t ms = G * W * 64;
    uint64_t *q = malloc(sizeof *q * (size_t)(H * G * W)), *keys = malloc(sizeof *keys * (size_t)(H * n * W + 1));
    for (int64_t i = 0; i < (int64_t)H * G * W; i++) q[i] = rt_rnd64();
    for (int64_t i = 0; i < H * n * W; i++) {
        int64_t kind = rt_below(8); /* copies of a query word and extremes: the score range's ends */
        keys[i] = kind == 0 ? 0 : kind == 1 ? ~0ull : kind == 2 ? q[rt_below((int64_t)H * G * W)] : rt_rnd64();
    }
    struct sl_rt_geom g;
    cr_assert_eq(sl_rt_geom_init(n, ms, k, 4, 64, 1, &g), 0);
    const int64_t ld = sl_gpu_scores_ld(n);
    uint16_t *scores = malloc(sizeof *scores * (size_t)(H * ld + 1)), *ref = malloc(sizeof *ref * (size_t)(n + 1));
    struct emu_ws w;
    emu_ws_init(&g, H, &w);
    memset(w.base, 0, w.l.zero_bytes);
    for (int32_t h = 0; h < H; h++) {
        uint32_t *gh = w.hist + (size_t)h * ((size_t)ms + 1);
        for (int64_t j = 0; j < n; j++) {
            uint32_t s = sl_rt_score(q + (int64_t)h * G * W, G, W, keys + (h * n + j) * W), b = 0;
            scores[h * ld + j] = (uint16_t)s;
            if (g.mode == SL_RT_THRESH && sl_rt_hist_accept(&g, j, s, &b)) gh[s]++;
            cr_assert_eq(b, 0);
        }
        sl_hamming_scan(q + (int64_t)h * G * W, G, keys + h * n * W, n, W, ref);
        for (int64_t j = 0; j < n; j++) cr_assert_eq(scores[h * ld + j], ref[j], "G %d W %d key %lld", G, W, (long long)j);
    }
    int32_t *out = malloc(sizeof *out * (size_t)(H * (g.max_count + 1))), counts[8];
    emu_topk(scores, ld, H, &g, &w, 1, out, g.max_count + 1, counts);
    struct rt_case c = {n, ms, k, 4, 64, 1, 0};
    for (int32_t h = 0; h < H; h++) expect_cpu(&c, scores + h * ld, h, out + h * (g.max_count + 1), counts[h]);
    free(w.base);
    free(out);
    free(ref);
    free(scores);
    free(keys);
    free(q);
}

Test(gpu_logic, fused_scan_histogram) {
    check_fused(3, 1, 3, 10007, 200); /* the default model's group and code */
    check_fused(4, 2, 8, 4099, 82);   /* a Llama-3-8B shape */
    check_fused(2, 3, 2, 2048, 41);   /* the generic-W path */
    check_fused(3, 1, 1, 1, 1);
}

/* ---- sizes ---------------------------------------------------------------------------------- */

Test(gpu_logic, code_table_plan) {
    /* SmolLM2-135M: 30 layers x 3 KV heads x 64 bits = 8 bytes per code, 720 bytes a token */
    cr_assert_eq(sl_gpu_codes_plan_bytes(30, 3, 64, 1), 720);
    cr_assert_eq(sl_gpu_codes_plan_bytes(30, 3, 64, 1000000), 720000000LL);          /* 720 MB */
    cr_assert_eq(sl_gpu_codes_plan_bytes(30, 3, 64, 1 << 20), 720LL << 20);          /* 720 MiB */
    /* Llama-3-8B: 32 layers x 8 KV heads x 128 bits = 16 bytes per code, 4 KiB a token */
    cr_assert_eq(sl_gpu_codes_plan_bytes(32, 8, 128, 1 << 20), 4LL << 30);
    /* a 32-bit code still takes a word; a 96-bit one two */
    cr_assert_eq(sl_gpu_codes_plan_bytes(1, 1, 32, 10), 80);
    cr_assert_eq(sl_gpu_codes_plan_bytes(1, 1, 96, 10), 160);
    cr_assert_eq(sl_gpu_codes_plan_bytes(30, 3, 64, 0), 0);
    cr_assert_eq(sl_gpu_codes_plan_bytes(0, 3, 64, 1), SL_EINVAL);
    cr_assert_eq(sl_gpu_codes_plan_bytes(30, 3, 64, -1), SL_EINVAL);
    cr_assert_eq(sl_gpu_codes_plan_bytes(1024, 1024, 4096, INT64_MAX / 1024), SL_EINVAL);
}

Test(gpu_logic, workspace_sizes) {
    /* token level: flags + histogram, states, tiles; each region 256-aligned */
    const int64_t n = 1 << 20;
    const int32_t H = 8, ms = 512;
    const size_t tiles = (size_t)(n / SL_RT_TILE);
    size_t want = sl_rt_align(H * 4 + (size_t)H * (ms + 1) * 4);
    want = sl_rt_align(want + H * sizeof(struct sl_rt_state));
    want = sl_rt_align(want + H * tiles * sizeof(struct sl_rt_tile));
    cr_assert_eq(sizeof(struct sl_rt_tile), 32);
    cr_assert_eq(sizeof(struct sl_rt_state), 16);
    cr_assert_eq(sl_gpu_topk_workspace_bytes(n, ms, 1, H), want);
    /* block level: tiles of blocks, plus the block maxima in rows of 16-byte multiples */
    size_t wb = sl_rt_align(H * 4 + (size_t)H * (ms + 1) * 4);
    wb = sl_rt_align(wb + H * sizeof(struct sl_rt_state));
    wb = sl_rt_align(wb + H * (tiles / 16) * sizeof(struct sl_rt_tile));
    cr_assert_eq(sl_gpu_topk_workspace_bytes(n, ms, 16, H), sl_rt_align(wb + (size_t)H * (n / 16) * 2));
    cr_assert_eq(sl_gpu_topk_workspace_bytes(n, ms, 3, H), 0);
    cr_assert_eq(sl_gpu_topk_workspace_bytes(n, 65536, 1, H), 0);
    cr_assert_eq(sl_gpu_topk_workspace_bytes(-1, ms, 1, H), 0);
    cr_assert_eq(sl_gpu_topk_workspace_bytes((int64_t)1 << 31, ms, 1, H), 0); /* int32 positions */
    cr_assert_eq(sl_gpu_scores_ld(5), 8);
    cr_assert_eq(sl_gpu_retrieve_workspace_bytes(n, 4, 2, 1, H),
                 sl_rt_align((size_t)H * n * 2) + sl_gpu_topk_workspace_bytes(n, 512, 1, H));
    cr_assert_eq(sl_gpu_retrieve_workspace_bytes(n, 1024, 1, 1, H), 0); /* scores past 65535 */
}
