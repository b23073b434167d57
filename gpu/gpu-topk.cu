/* Histogram top-k on the GPU for all KV heads of a layer: sl_topk_select's semantics
 * (cpu/topk.h), O(n + max_score) per head with no sort. The phases and the tie rule are
 * described in gpu/retrieval-logic.h, whose functions make every per-unit and per-tile
 * decision here; these kernels add only loads, block-wide scans and atomics.
 *
 * Launch shapes (SL_RT_THREADS = 256 threads, 8 units per thread, 2048 units per tile):
 *   hist       (tiles, heads)            token level: candidates' scores into shared bins,
 *              flushed with one atomic per non-empty bin; past SL_RT_SHARED_HIST_BINS bins
 *              (max_score >= 8192) every increment goes to the global bins instead
 *   block_max  (ceil(units / 256), heads) block level: one thread per block, its maximum
 *              into the workspace, histogram as above
 *   state      (heads)                   threshold and skip (256 chunks of bins, one scan)
 *   count      (tiles, heads)            per-tile c_gt, c_eq, x_gt, x_eq (warp reductions)
 *   scan       (heads)                   tie offsets (r0), the crossing tile, output offsets
 *   compact    (tiles, heads)            positions, ascending
 * The histogram and bad flags are zeroed by one cudaMemsetAsync; modes ALL and NONE skip the
 * histogram (the sizes alone decide, as on the CPU). */
#include <stdint.h>

#include "gpu/gpu-check.h"
#include "gpu/gpu-retrieval-internal.cuh"
#include "gpu/gpu-retrieval.h"

/* Scores of unit-tile loads: 128-bit when every head's row is 16-byte aligned. */
static bool rows_aligned(const void *p, int64_t ld) { return ((uintptr_t)p & 15) == 0 && ld % 8 == 0; }

static __global__ void hist_tokens_kernel(const uint16_t *scores, int64_t ld, struct sl_rt_geom g, uint32_t *hist,
                                          uint32_t *bad, bool vec) {
    extern __shared__ uint32_t sh_bins[];
    const int32_t h = blockIdx.y;
    uint32_t *gh = hist + (size_t)h * ((size_t)g.ms + 1);
    uint32_t *bins = sl_hist_begin(sh_bins, gh, g.ms);
    int64_t ub;
    int32_t nv = sl_rt_thread_units(&g, blockIdx.x, threadIdx.x, &ub);
    uint16_t s[SL_RT_PER_THREAD];
    sl_load_units(scores + (size_t)h * ld, ub, nv, vec, s);
    uint32_t b = 0;
    for (int32_t i = 0; i < nv; i++)
        if (sl_rt_hist_accept(&g, ub + i, s[i], &b)) atomicAdd(&bins[s[i]], 1u);
    if (b) bad[h] = 1;
    sl_hist_end(sh_bins, gh, g.ms);
}

static __global__ void block_max_kernel(const uint16_t *scores, int64_t ld, struct sl_rt_geom g, uint16_t *bm,
                                        int64_t bm_ld, uint32_t *hist, uint32_t *bad, bool vec) {
    extern __shared__ uint32_t sh_bins[];
    const int32_t h = blockIdx.y;
    uint32_t *gh = hist + (size_t)h * ((size_t)g.ms + 1);
    uint32_t *bins = sl_hist_begin(sh_bins, gh, g.ms);
    const int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (u < g.nu) {
        const uint16_t *row = scores + (size_t)h * ld;
        int64_t a = sl_rt_unit_begin(&g, u), e = sl_rt_unit_end(&g, u);
        uint32_t m = 0;
        if (vec && g.B >= 8 && e - a == g.B) {
            for (int64_t j = a; j < e; j += 8) {
                uint4 v = *reinterpret_cast<const uint4 *>(row + j);
                uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int i = 0; i < 4; i++) m = max(m, max(w[i] & 0xffffu, w[i] >> 16));
            }
        } else {
            for (int64_t j = a; j < e; j++) m = max(m, (uint32_t)row[j]);
        }
        bm[(size_t)h * bm_ld + u] = (uint16_t)m;
        uint32_t b = 0;
        if (sl_rt_hist_accept(&g, u, m, &b)) atomicAdd(&bins[m], 1u);
        if (b) bad[h] = 1;
    }
    sl_hist_end(sh_bins, gh, g.ms);
}

static __global__ void state_kernel(const uint32_t *hist, const uint32_t *bad, struct sl_rt_geom g,
                                    struct sl_rt_state *state) {
    const int32_t h = blockIdx.x;
    const bool walk = g.mode == SL_RT_THRESH && !bad[h];
    if (threadIdx.x == 0) /* what stays if no chunk finds the threshold (counts inconsistent) */
        state[h] = sl_rt_state_plain(walk ? SL_RT_NONE : g.mode == SL_RT_THRESH ? SL_RT_BAD : g.mode);
    if (!walk) return;
    const uint32_t *hh = hist + (size_t)h * ((size_t)g.ms + 1);
    int32_t hi, lo;
    sl_rt_chunk_bins(g.ms, SL_RT_THREADS, threadIdx.x, &hi, &lo);
    int64_t sum = 0, total;
    for (int32_t v = lo; v <= hi; v++) sum += hh[v];
    int64_t above = sl_block_exclusive_sum<int64_t>(sum, &total);
    uint32_t t;
    int64_t skip;
    /* exactly one chunk holds the k-th count: 1 <= ku < candidates = total */
    if (hi >= lo && above < g.ku && above + sum >= g.ku && sl_rt_threshold_walk(hh, hi, lo, above, g.ku, &t, &skip)) {
        struct sl_rt_state st = sl_rt_state_plain(SL_RT_THRESH);
        st.t = t;
        st.skip = skip;
        state[h] = st;
    }
}

/* Unit scores of head h: the scores at token level, the block maxima at block level; none
 * needed unless mode THRESH. */
struct unit_rows {
    const uint16_t *scores;
    int64_t ld;
    bool vec;
};

static __device__ __forceinline__ void load_thread(const unit_rows &r, const sl_rt_state &st, int32_t h, int64_t ub,
                                                   int32_t nv, uint16_t s[SL_RT_PER_THREAD]) {
    if (st.mode == SL_RT_THRESH) {
        sl_load_units(r.scores + (size_t)h * r.ld, ub, nv, r.vec, s);
    } else {
#pragma unroll
        for (int i = 0; i < SL_RT_PER_THREAD; i++) s[i] = 0;
    }
}

/* Sum over the CTA, valid in every thread: warp reductions, then shared atomics. */
static __device__ __forceinline__ void block_sum4(uint32_t v[4]) {
    __shared__ uint32_t acc[4];
    if (threadIdx.x < 4) acc[threadIdx.x] = 0;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t w = __reduce_add_sync(SL_RT_FULL_MASK, v[i]);
        if ((threadIdx.x & 31) == 0 && w) atomicAdd(&acc[i], w);
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++) v[i] = acc[i];
    __syncthreads();
}

static __global__ void count_kernel(unit_rows r, struct sl_rt_geom g, const struct sl_rt_state *state,
                                    struct sl_rt_tile *tiles) {
    const int32_t h = blockIdx.y;
    const sl_rt_state st = state[h];
    if (st.mode == SL_RT_BAD) return;
    int64_t ub;
    int32_t nv = sl_rt_thread_units(&g, blockIdx.x, threadIdx.x, &ub);
    uint16_t s[SL_RT_PER_THREAD];
    load_thread(r, st, h, ub, nv, s);
    struct sl_rt_counts c;
    sl_rt_thread_count(&g, &st, ub, nv, s, &c);
    uint32_t v[4] = {c.c_gt, c.c_eq, c.x_gt, c.x_eq};
    block_sum4(v);
    if (threadIdx.x == 0) {
        struct sl_rt_tile *t = &tiles[(size_t)h * g.n_tiles + blockIdx.x];
        t->c_gt = v[0];
        t->c_eq = v[1];
        t->x_gt = v[2];
        t->x_eq = v[3];
    }
}

static __global__ void scan_kernel(unit_rows r, struct sl_rt_geom g, const struct sl_rt_state *state,
                                   struct sl_rt_tile *tiles, int32_t *counts) {
    const int32_t h = blockIdx.x;
    const sl_rt_state st = state[h];
    if (st.mode == SL_RT_BAD) {
        if (threadIdx.x == 0) counts[h] = SL_EINVAL;
        return;
    }
    struct sl_rt_tile *T = tiles + (size_t)h * g.n_tiles;
    __shared__ int64_t cross;
    if (threadIdx.x == 0) cross = -1;
    /* the ties before each tile, hence where its taken ties start */
    int64_t carry = 0, total;
    for (int64_t base = 0; base < g.n_tiles; base += SL_RT_THREADS) {
        int64_t i = base + threadIdx.x;
        uint32_t c_eq = i < g.n_tiles ? T[i].c_eq : 0;
        int64_t eq_base = carry + sl_block_exclusive_sum<int64_t>(c_eq, &total);
        if (i < g.n_tiles) {
            T[i].r0 = sl_rt_tile_r0(st.skip, eq_base, c_eq);
            if (sl_rt_tile_is_cross(&T[i])) cross = i;
        }
        carry += total;
    }
    __syncthreads();
    /* the one tile taking some of its ties: what those add */
    if (cross >= 0) {
        int64_t ub;
        int32_t nv = sl_rt_thread_units(&g, cross, threadIdx.x, &ub);
        uint16_t s[SL_RT_PER_THREAD];
        load_thread(r, st, h, ub, nv, s);
        uint32_t all;
        uint32_t rank = sl_block_exclusive_sum<uint32_t>(sl_rt_thread_ties(&g, &st, ub, nv, s), &all);
        uint32_t x = sl_rt_thread_cross(&g, &st, ub, nv, s, rank, T[cross].r0), x_all;
        sl_block_exclusive_sum<uint32_t>(x, &x_all);
        if (threadIdx.x == 0) T[cross].x_cross = x_all;
        __syncthreads();
    }
    /* output offsets */
    carry = 0;
    for (int64_t base = 0; base < g.n_tiles; base += SL_RT_THREADS) {
        int64_t i = base + threadIdx.x;
        int64_t e = i < g.n_tiles ? sl_rt_tile_emitted(&g, i, &T[i]) : 0;
        int64_t off = carry + sl_block_exclusive_sum<int64_t>(e, &total);
        if (i < g.n_tiles) {
            T[i].out_base = (uint32_t)off;
            T[i].emitted = (uint32_t)e;
        }
        carry += total;
    }
    if (threadIdx.x == 0) counts[h] = (int32_t)carry;
}

static __global__ void compact_kernel(unit_rows r, struct sl_rt_geom g, const struct sl_rt_state *state,
                                      const struct sl_rt_tile *tiles, int32_t *out, int64_t out_ld) {
    const int32_t h = blockIdx.y;
    const sl_rt_state st = state[h];
    if (st.mode == SL_RT_BAD) return;
    const sl_rt_tile t = tiles[(size_t)h * g.n_tiles + blockIdx.x];
    if (t.emitted == 0) return;
    int64_t ub;
    int32_t nv = sl_rt_thread_units(&g, blockIdx.x, threadIdx.x, &ub);
    uint16_t s[SL_RT_PER_THREAD];
    load_thread(r, st, h, ub, nv, s);
    uint32_t all, mask;
    uint32_t rank = sl_block_exclusive_sum<uint32_t>(sl_rt_thread_ties(&g, &st, ub, nv, s), &all);
    uint32_t e = sl_rt_thread_select(&g, &st, ub, nv, s, rank, t.r0, &mask);
    uint32_t off = sl_block_exclusive_sum<uint32_t>(e, &all);
    if (e) sl_rt_thread_write(&g, ub, nv, mask, out + (size_t)h * out_ld + t.out_base + off);
}

int sl_gpu_topk_launch(const uint16_t *scores, int64_t ld, int32_t n_heads, const struct sl_rt_geom *g,
                       const struct sl_rt_layout *l, void *work, int32_t *out, int64_t out_ld, int32_t *counts,
                       bool hist_ready, cudaStream_t stream) {
    if (g->n == 0) {
        SL_CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(int32_t) * (size_t)n_heads, stream));
        return 0;
    }
    char *w = (char *)work;
    uint32_t *bad = (uint32_t *)(w + l->bad), *hist = (uint32_t *)(w + l->hist);
    sl_rt_state *state = (sl_rt_state *)(w + l->state);
    sl_rt_tile *tiles = (sl_rt_tile *)(w + l->tiles);
    uint16_t *bm = (uint16_t *)(w + l->bm);
    const bool blocks = g->B > 1;
    const size_t sh = sl_rt_hist_shared_bytes(g->ms);
    const dim3 tiled((unsigned)g->n_tiles, (unsigned)n_heads);

    if (g->mode == SL_RT_THRESH && !hist_ready) {
        SL_CUDA_CHECK(cudaMemsetAsync(w, 0, l->zero_bytes, stream));
        if (blocks) {
            dim3 grid((unsigned)((g->nu + SL_RT_THREADS - 1) / SL_RT_THREADS), (unsigned)n_heads);
            block_max_kernel<<<grid, SL_RT_THREADS, sh, stream>>>(scores, ld, *g, bm, l->bm_ld, hist, bad,
                                                                  rows_aligned(scores, ld));
        } else {
            hist_tokens_kernel<<<tiled, SL_RT_THREADS, sh, stream>>>(scores, ld, *g, hist, bad,
                                                                     rows_aligned(scores, ld));
        }
        SL_CUDA_CHECK(cudaGetLastError());
    }
    unit_rows r;
    if (blocks) {
        r.scores = bm;
        r.ld = l->bm_ld;
        r.vec = true; /* the workspace base is 256-aligned and bm_ld a multiple of 8 */
    } else {
        r.scores = scores;
        r.ld = ld;
        r.vec = rows_aligned(scores, ld);
    }
    state_kernel<<<n_heads, SL_RT_THREADS, 0, stream>>>(hist, bad, *g, state);
    SL_CUDA_CHECK(cudaGetLastError());
    count_kernel<<<tiled, SL_RT_THREADS, 0, stream>>>(r, *g, state, tiles);
    SL_CUDA_CHECK(cudaGetLastError());
    scan_kernel<<<n_heads, SL_RT_THREADS, 0, stream>>>(r, *g, state, tiles, counts);
    SL_CUDA_CHECK(cudaGetLastError());
    compact_kernel<<<tiled, SL_RT_THREADS, 0, stream>>>(r, *g, state, tiles, out, out_ld);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

int sl_gpu_topk_check(int32_t n_heads, const struct sl_rt_geom *g, const struct sl_rt_layout *l, const void *work,
                         size_t work_bytes, const int32_t *out, int64_t out_ld, const int32_t *counts) {
    if (n_heads < 1 || n_heads > 65535)
        return sl_fail(SL_EINVAL, "gpu top-k: %d heads (1..65535)", n_heads);
    if (!counts || (g->n > 0 && (!work || !out)))
        return sl_fail(SL_EINVAL, "gpu top-k: NULL buffer");
    if (work_bytes < l->bytes || ((uintptr_t)work & (SL_RT_ALIGN - 1)))
        return sl_fail(SL_EINVAL, "gpu top-k: workspace of %zu bytes at %p, %zu bytes 256-aligned needed",
                       work_bytes, work, l->bytes);
    if (out_ld < g->max_count)
        return sl_fail(SL_EINVAL, "gpu top-k: output stride %lld below the %lld positions a head may get",
                       (long long)out_ld, (long long)g->max_count);
    return 0;
}

extern "C" int sl_gpu_topk_select(const uint16_t *scores_dev, int64_t scores_ld, int32_t n_heads, int64_t n,
                                  int32_t max_score, const struct sl_gpu_topk_params *p, void *work_dev,
                                  size_t work_bytes, int32_t *out_dev, int64_t out_ld, int32_t *counts_dev,
                                  void *stream) {
    struct sl_rt_geom g;
    if (!p || sl_rt_geom_init(n, max_score, p->k, p->n_sink, p->n_window, p->block, &g) < 0)
        return sl_fail(SL_EINVAL, "gpu top-k: invalid sizes (n %lld, max_score %d, k %lld, sinks %lld, window "
                       "%lld, block %d)", (long long)n, max_score, p ? (long long)p->k : 0LL,
                       p ? (long long)p->n_sink : 0LL, p ? (long long)p->n_window : 0LL, p ? p->block : 0);
    if (scores_ld < n || (n > 0 && !scores_dev))
        return sl_fail(SL_EINVAL, "gpu top-k: score rows of %lld for %lld positions", (long long)scores_ld,
                       (long long)n);
    struct sl_rt_layout l;
    sl_rt_layout_init(&g, n_heads > 0 ? n_heads : 1, &l);
    int rc = sl_gpu_topk_check(n_heads, &g, &l, work_dev, work_bytes, out_dev, out_ld, counts_dev);
    if (rc) return rc;
    return sl_gpu_topk_launch(scores_dev, scores_ld, n_heads, &g, &l, work_dev, out_dev, out_ld, counts_dev, false,
                              (cudaStream_t)stream);
}
