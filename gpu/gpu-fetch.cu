/* The asynchronous KV fetch on the GPU (gpu/gpu-fetch.h): kernels for the three cache phases
 * (their decisions live in gpu/fetch-logic.h, shared with the CPU tests), the staged paths'
 * host side, streams and events.
 *
 * Per call: lookup kernel -> [staged paths: indices and sources down, the host reads or
 * copies what missed, staging and map up] -> copy kernel -> insert kernel, all on the fetch's
 * own stream, between an event wait on the caller's stream and an event the caller's stream
 * waits for. Kernels:
 *   lookup: a thread per (head, i); leaders act (sl_fetch_lookup).
 *   copy:   16 threads per (head, i), one 16-byte chunk each of the K and V row (head_dim 64:
 *           8 + 8 chunks), so a warp reads two rows' worth of contiguous 128-byte lines; from
 *           a VRAM slot, mapped host memory or staging.
 *   insert: a warp per (head, i); lane 0 of a leader's warp decides (sl_fetch_insert_decide),
 *           the warp copies the rows (or the whole staged block) into the slot, lane 0
 *           publishes mask and tag after a fence.
 * Rows are moved as 16-byte vectors when every address is 16-byte aligned, else as 2-byte
 * elements: the bytes are copied, never converted, so the output equals the store's bits. */
#include <string.h>

#include <atomic>

#include "gpu/fetch-logic.h"
#include "gpu/gpu-check.h"
#include "gpu/gpu-fetch.h"

/* ---- kernels ----------------------------------------------------------------------------- */

static constexpr int k_threads = 256;
static constexpr int k_group = 16; /* threads per row pair in the copy kernel */

static __global__ void lookup_kernel(sl_fetch_sel s, sl_fetch_cache c, sl_fetch_counters *ctr) {
    __shared__ unsigned long long acc[3];
    if (threadIdx.x < 3) acc[threadIdx.x] = 0;
    __syncthreads();
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < (int64_t)s.n_heads * s.max_count) {
        sl_fetch_counters add = {};
        sl_fetch_lookup(&s, &c, (int32_t)(t / s.max_count), t % s.max_count, &add);
        if (add.blocks) atomicAdd(&acc[0], add.blocks);
        if (add.block_hits) atomicAdd(&acc[1], add.block_hits);
        if (add.bad) atomicAdd(&acc[2], add.bad);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (acc[0]) atomicAdd(&ctr->blocks, acc[0]);
        if (acc[1]) atomicAdd(&ctr->block_hits, acc[1]);
        if (acc[2]) atomicAdd(&ctr->bad, acc[2]);
    }
}

/* V: uint4 (16-byte chunks) or uint16_t (one element). st.base NULL: zero copy. */
template <typename V>
static __global__ void copy_kernel(sl_fetch_sel s, sl_fetch_cache c, sl_fetch_stage st,
                                   sl_fetch_host host, uint8_t *k_out, uint8_t *v_out,
                                   bool skip_hits, sl_fetch_counters *ctr) {
    __shared__ unsigned long long acc[3];
    if (threadIdx.x < 3) acc[threadIdx.x] = 0;
    __syncthreads();
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t q = t / k_group;
    int lane = (int)(t % k_group);
    if (q < (int64_t)s.n_heads * s.max_count) {
        int32_t h = (int32_t)(q / s.max_count);
        int64_t i = q % s.max_count;
        const uint8_t *k = nullptr, *v = nullptr;
        sl_fetch_from from = sl_fetch_source(&s, &c, st.base ? &st : nullptr, &host, h, i,
                                             skip_hits, &k, &v);
        if (from != SL_FETCH_FROM_NONE) {
            int64_t o = sl_fetch_out_row(&s, h, i);
            int64_t n = s.row_bytes / (int64_t)sizeof(V);
            V *ko = (V *)(k_out + o * s.row_bytes), *vo = (V *)(v_out + o * s.row_bytes);
            if (from == SL_FETCH_FROM_ZERO) {
                for (int64_t e = lane; e < 2 * n; e += k_group) (e < n ? ko[e] : vo[e - n]) = V{};
            } else {
                const V *ks = (const V *)k, *vs = (const V *)v;
                for (int64_t e = lane; e < 2 * n; e += k_group)
                    if (e < n)
                        ko[e] = ks[e];
                    else
                        vo[e - n] = vs[e - n];
            }
            if (lane == 0) {
                atomicAdd(&acc[0], 1ull);
                if (from == SL_FETCH_FROM_SLOT) atomicAdd(&acc[1], 1ull);
                if (from == SL_FETCH_FROM_HOST) atomicAdd(&acc[2], 2ull * (unsigned long long)s.row_bytes);
            }
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (acc[0]) atomicAdd(&ctr->rows, acc[0]);
        if (acc[1]) atomicAdd(&ctr->row_hits, acc[1]);
        if (acc[2]) atomicAdd(&ctr->bytes_h2d, acc[2]);
    }
}

/* Source rows: the output (k_out, v_out), or with whole_blocks the block staging. */
template <typename V>
static __global__ void insert_kernel(sl_fetch_sel s, sl_fetch_cache c, sl_fetch_stage st,
                                     const uint8_t *k_out, const uint8_t *v_out,
                                     bool whole_blocks, sl_fetch_counters *ctr) {
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t q = t / 32;
    int lane = threadIdx.x % 32;
    if (q >= (int64_t)s.n_heads * s.max_count) return; /* whole warps: q is warp-uniform */
    int32_t h = (int32_t)(q / s.max_count);
    int64_t i = q % s.max_count;
    sl_fetch_insert in = {-1, 0, i, -1, false, false};
    if (lane == 0) in = sl_fetch_insert_decide(&s, &c, st.map ? &st : nullptr, h, i);
    int64_t slot = __shfl_sync(0xffffffffu, (long long)in.slot, 0);
    if (slot < 0) return;
    in.end = __shfl_sync(0xffffffffu, (long long)in.end, 0);
    in.stage_j = __shfl_sync(0xffffffffu, in.stage_j, 0);
    const int64_t n = s.row_bytes / (int64_t)sizeof(V);
    uint8_t *dst = c.data + sl_fetch_slot_k(&s, slot, 0);
    if (whole_blocks) {
        const V *b = (const V *)(st.base + sl_fetch_stage_unit(&st, in.stage_j));
        int64_t nb = sl_fetch_block_bytes(&s) / (int64_t)sizeof(V);
        for (int64_t e = lane; e < nb; e += 32) ((V *)dst)[e] = b[e];
    } else {
        for (int64_t j = i; j < in.end; j++) {
            int64_t o = sl_fetch_out_row(&s, h, j);
            if (s.src[o] != SL_FETCH_SRC_MISS) continue;
            int32_t r = sl_fetch_row(&s, sl_fetch_pos(&s, h, j));
            const V *ks = (const V *)(k_out + o * s.row_bytes);
            const V *vs = (const V *)(v_out + o * s.row_bytes);
            V *kd = (V *)(dst + (int64_t)r * s.row_bytes);
            V *vd = (V *)(dst + sl_fetch_v_offset(&s) + (int64_t)r * s.row_bytes);
            for (int64_t e = lane; e < 2 * n; e += 32)
                if (e < n)
                    kd[e] = ks[e];
                else
                    vd[e - n] = vs[e - n];
        }
    }
    __syncwarp();
    if (lane == 0) {
        __threadfence(); /* the rows are in the slot before mask and tag name them */
        sl_fetch_publish(&c, &in, sl_fetch_insert_rows(&s, &in, h, i, whole_blocks));
        if (in.claimed) atomicAdd(&ctr->inserts, 1ull);
        if (in.evicted) atomicAdd(&ctr->evictions, 1ull);
    }
}

/* ---- launchers --------------------------------------------------------------------------- */

static unsigned grid_of(int64_t threads) { return (unsigned)((threads + k_threads - 1) / k_threads); }

static int launch_lookup(const sl_fetch_sel &s, const sl_fetch_cache &c, sl_fetch_counters *ctr,
                         cudaStream_t stream) {
    lookup_kernel<<<grid_of((int64_t)s.n_heads * s.max_count), k_threads, 0, stream>>>(s, c, ctr);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

static int launch_copy(bool wide, const sl_fetch_sel &s, const sl_fetch_cache &c,
                       const sl_fetch_stage &st, const sl_fetch_host &host, uint8_t *k_out,
                       uint8_t *v_out, bool skip_hits, sl_fetch_counters *ctr, cudaStream_t stream) {
    unsigned grid = grid_of((int64_t)s.n_heads * s.max_count * k_group);
    if (wide)
        copy_kernel<uint4><<<grid, k_threads, 0, stream>>>(s, c, st, host, k_out, v_out, skip_hits, ctr);
    else
        copy_kernel<uint16_t><<<grid, k_threads, 0, stream>>>(s, c, st, host, k_out, v_out, skip_hits, ctr);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}

static int launch_insert(bool wide, const sl_fetch_sel &s, const sl_fetch_cache &c,
                         const sl_fetch_stage &st, const uint8_t *k_out, const uint8_t *v_out,
                         bool whole_blocks, sl_fetch_counters *ctr, cudaStream_t stream) {
    if (c.n_sets == 0) return 0;
    unsigned grid = grid_of((int64_t)s.n_heads * s.max_count * 32);
    if (wide)
        insert_kernel<uint4><<<grid, k_threads, 0, stream>>>(s, c, st, k_out, v_out, whole_blocks, ctr);
    else
        insert_kernel<uint16_t><<<grid, k_threads, 0, stream>>>(s, c, st, k_out, v_out, whole_blocks, ctr);
    SL_CUDA_CHECK(cudaGetLastError());
    return 0;
}
/* ---- the fetch object -------------------------------------------------------------------- */

struct sl_gpu_fetch {
    sl_kv_store_t store;
    struct sl_gpu_fetch_params p;
    enum sl_gpu_fetch_path path;
    int32_t H, n_layer, block_shift;
    int64_t M, row_bytes, block_bytes;
    cudaStream_t stream;
    cudaEvent_t ev_in, ev_done, ev_copied, ev_d2h;
    uint32_t step;
    uint64_t epoch;
    int64_t n_tokens_seen;

    /* device */
    int32_t *d_src, *d_lead, *d_map;     /* (H, M) each */
    int32_t *d_idx, *d_cnt;              /* prefetch's copy of its selection */
    uint8_t *d_scratch;                  /* (2, H, M, row): prefetch's output */
    uint8_t *d_stage;                    /* staged paths: rows (2, H, M, row) or blocks */
    size_t d_stage_bytes;
    sl_fetch_counters *d_ctr;            /* [0]: fetches, [1]: prefetches */
    sl_fetch_cache cache;
    void *d_cache_meta;                  /* one allocation: tags, mask, used, rr, claim */

    /* host tier: segment addresses */
    struct sl_kv_host_map map;
    const uint8_t **h_segs_dev;          /* pinned mirror of d_segs */
    const uint8_t **h_segs_host;
    const uint8_t **d_segs;
    int64_t n_segs_known;

    /* staged paths (pinned unless noted) */
    int32_t *h_idx, *h_cnt, *h_src, *h_map;
    uint8_t *h_stage;                    /* rows: (2, H, M, row) */
    int64_t *h_pos, *h_first, *h_blocks; /* pageable */
    int32_t *h_block_head;
    void **b_dst;
    const void **b_src;
    size_t *b_size;
    struct sl_kv_gather *g;

    int64_t calls, prefetches, h_bytes;
    bool batch_failed;
};

struct sl_gpu_fetch_params sl_gpu_fetch_default_params(void) {
    struct sl_gpu_fetch_params p;
    memset(&p, 0, sizeof p);
    p.cache_ways = 4;
    p.path = SL_GPU_FETCH_ZERO_COPY;
    return p;
}

static std::atomic<bool> warned_fallback, warned_batch;

static bool first_warning(std::atomic<bool> *flag) { return !flag->exchange(true); }

static void fall_back(sl_gpu_fetch_t f, const char *why) {
    if (first_warning(&warned_fallback))
        sl_log(SL_LOG_WARN, "KV fetch: %s; fetching through pinned staging instead", why);
    f->path = SL_GPU_FETCH_STAGED;
}

#define FREE_DEV(p) (p ? (void)cudaFree((void *)(p)) : (void)0)
#define FREE_HOST(p) (p ? (void)cudaFreeHost((void *)(p)) : (void)0)

extern "C" void sl_gpu_fetch_free(sl_gpu_fetch_t f) {
    if (!f) return;
    (void)cudaSetDevice(f->p.device);
    if (f->stream) (void)cudaStreamSynchronize(f->stream);
    FREE_DEV(f->d_src);
    FREE_DEV(f->d_lead);
    FREE_DEV(f->d_map);
    FREE_DEV(f->d_idx);
    FREE_DEV(f->d_cnt);
    FREE_DEV(f->d_scratch);
    FREE_DEV(f->d_stage);
    FREE_DEV(f->d_ctr);
    FREE_DEV(f->cache.data);
    FREE_DEV(f->d_cache_meta);
    FREE_DEV(f->d_segs);
    FREE_HOST(f->h_segs_dev);
    FREE_HOST(f->h_idx);
    FREE_HOST(f->h_cnt);
    FREE_HOST(f->h_src);
    FREE_HOST(f->h_map);
    FREE_HOST(f->h_stage);
    free(f->h_segs_host);
    free(f->h_pos);
    free(f->h_first);
    free(f->h_blocks);
    free(f->h_block_head);
    free(f->b_dst);
    free(f->b_src);
    free(f->b_size);
    free(f->g);
    if (f->ev_in) (void)cudaEventDestroy(f->ev_in);
    if (f->ev_done) (void)cudaEventDestroy(f->ev_done);
    if (f->ev_copied) (void)cudaEventDestroy(f->ev_copied);
    if (f->ev_d2h) (void)cudaEventDestroy(f->ev_d2h);
    if (f->stream) (void)cudaStreamDestroy(f->stream);
    (void)cudaGetLastError();
    free(f);
}

/* Empties the cache and restarts the step stamps (queued on the fetch stream). */
static int cache_reset(sl_gpu_fetch_t f) {
    f->step = 0;
    if (f->cache.n_sets == 0) return 0;
    size_t slots = (size_t)(f->cache.n_sets * f->cache.ways), sets = (size_t)f->cache.n_sets;
    SL_CUDA_CHECK(cudaMemsetAsync(f->cache.tags, 0xFF, slots * sizeof(uint64_t), f->stream));
    SL_CUDA_CHECK(cudaMemsetAsync(f->cache.mask, 0, slots * sizeof(uint64_t), f->stream));
    SL_CUDA_CHECK(cudaMemsetAsync(f->cache.used, 0, slots * sizeof(uint32_t), f->stream));
    SL_CUDA_CHECK(cudaMemsetAsync(f->cache.rr, 0, sets * sizeof(uint32_t), f->stream));
    SL_CUDA_CHECK(cudaMemsetAsync(f->cache.claim, 0xFF, sets * sizeof(uint64_t), f->stream));
    return 0;
}

static int fetch_alloc(sl_gpu_fetch_t f) {
    const size_t HM = (size_t)(f->H * f->M), rows = HM * (size_t)f->row_bytes;
    SL_CUDA_CHECK(cudaSetDevice(f->p.device));
    /* Everything a call uses exists before the first call: nothing is allocated per step
     * (the staged paths' buffers come with the path, below or at a fallback). */
    SL_CUDA_CHECK(cudaStreamCreateWithFlags(&f->stream, cudaStreamNonBlocking));
    SL_CUDA_CHECK(cudaEventCreateWithFlags(&f->ev_in, cudaEventDisableTiming));
    SL_CUDA_CHECK(cudaEventCreateWithFlags(&f->ev_done, cudaEventDisableTiming));
    SL_CUDA_CHECK(cudaEventCreateWithFlags(&f->ev_copied, cudaEventDisableTiming));
    SL_CUDA_CHECK(cudaEventCreateWithFlags(&f->ev_d2h, cudaEventDisableTiming));
    SL_CUDA_CHECK(cudaMalloc((void **)&f->d_src, HM * sizeof(int32_t)));
    SL_CUDA_CHECK(cudaMalloc((void **)&f->d_lead, HM * sizeof(int32_t)));
    SL_CUDA_CHECK(cudaMalloc((void **)&f->d_ctr, 2 * sizeof(sl_fetch_counters)));
    SL_CUDA_CHECK(cudaMemsetAsync(f->d_ctr, 0, 2 * sizeof(sl_fetch_counters), f->stream));
    if (f->cache.n_sets > 0) {
        size_t slots = (size_t)(f->cache.n_sets * f->cache.ways), sets = (size_t)f->cache.n_sets;
        SL_CUDA_CHECK(cudaMalloc((void **)&f->cache.data, slots * (size_t)f->block_bytes));
        size_t meta = slots * (2 * sizeof(uint64_t) + sizeof(uint32_t)) + sets * (sizeof(uint32_t) + sizeof(uint64_t)) + 64;
        SL_CUDA_CHECK(cudaMalloc(&f->d_cache_meta, meta));
        /* 8-byte arrays first, so every array is aligned for its type. */
        uint8_t *m = (uint8_t *)f->d_cache_meta;
        f->cache.tags = (uint64_t *)m;
        f->cache.mask = f->cache.tags + slots;
        f->cache.claim = f->cache.mask + slots;
        f->cache.used = (uint32_t *)(f->cache.claim + sets);
        f->cache.rr = f->cache.used + slots;
        SL_CUDA_CHECK(cudaMalloc((void **)&f->d_idx, HM * sizeof(int32_t)));
        SL_CUDA_CHECK(cudaMalloc((void **)&f->d_cnt, (size_t)f->H * sizeof(int32_t)));
        SL_CUDA_CHECK(cudaMalloc((void **)&f->d_scratch, 2 * rows));
        int err = cache_reset(f);
        if (err) return err;
    }
    if (f->path != SL_GPU_FETCH_STAGED && f->map.n_segs > 0) {
        size_t n = (size_t)f->map.n_segs;
        SL_CUDA_CHECK(cudaHostAlloc((void **)&f->h_segs_dev, n * sizeof(void *), cudaHostAllocDefault));
        memset(f->h_segs_dev, 0, n * sizeof(void *));
        SL_CUDA_CHECK(cudaMalloc((void **)&f->d_segs, n * sizeof(void *)));
        SL_CUDA_CHECK(cudaMemsetAsync(f->d_segs, 0, n * sizeof(void *), f->stream));
        f->h_segs_host = (const uint8_t **)calloc(n, sizeof(void *));
        if (!f->h_segs_host) return sl_fail(SL_ENOMEM, "KV fetch: segment table");
    }
    return 0;
}

/* Buffers of the path now chosen (block copy or staged rows), unless already there: a host
 * tier that falls back to staged rows at its first unpinned segment gets them then. */
static int staging_alloc(sl_gpu_fetch_t f) {
    const size_t HM = (size_t)(f->H * f->M), rows = HM * (size_t)f->row_bytes;
    if (!f->h_idx) {
        SL_CUDA_CHECK(cudaHostAlloc((void **)&f->h_idx, HM * sizeof(int32_t), cudaHostAllocDefault));
        SL_CUDA_CHECK(cudaHostAlloc((void **)&f->h_cnt, (size_t)f->H * sizeof(int32_t), cudaHostAllocDefault));
        SL_CUDA_CHECK(cudaHostAlloc((void **)&f->h_src, HM * sizeof(int32_t), cudaHostAllocDefault));
        SL_CUDA_CHECK(cudaHostAlloc((void **)&f->h_map, HM * sizeof(int32_t), cudaHostAllocDefault));
        SL_CUDA_CHECK(cudaMalloc((void **)&f->d_map, HM * sizeof(int32_t)));
        f->h_first = (int64_t *)malloc((size_t)(f->H + 1) * sizeof(int64_t));
        if (!f->h_first) return sl_fail(SL_ENOMEM, "KV fetch: staging plan");
    }
    /* A staging block per missed block (at most one per selected position), or two rows. */
    bool blocks = f->path == SL_GPU_FETCH_BLOCK_COPY;
    size_t stage = blocks ? HM * (size_t)f->block_bytes : 2 * rows;
    if (f->d_stage_bytes < stage) {
        FREE_DEV(f->d_stage);
        f->d_stage = nullptr;
        f->d_stage_bytes = 0;
        SL_CUDA_CHECK(cudaMalloc((void **)&f->d_stage, stage));
        f->d_stage_bytes = stage;
    }
    if (blocks && !f->h_blocks) {
        f->h_blocks = (int64_t *)malloc(HM * sizeof(int64_t));
        f->h_block_head = (int32_t *)malloc(HM * sizeof(int32_t));
        f->b_dst = (void **)malloc(HM * sizeof(void *));
        f->b_src = (const void **)malloc(HM * sizeof(void *));
        f->b_size = (size_t *)malloc(HM * sizeof(size_t));
        if (!f->h_blocks || !f->h_block_head || !f->b_dst || !f->b_src || !f->b_size)
            return sl_fail(SL_ENOMEM, "KV fetch: block copy lists");
    }
    if (!blocks && !f->h_stage) {
        SL_CUDA_CHECK(cudaHostAlloc((void **)&f->h_stage, 2 * rows, cudaHostAllocDefault));
        f->h_pos = (int64_t *)malloc(HM * sizeof(int64_t));
        f->g = (struct sl_kv_gather *)calloc((size_t)f->H, sizeof *f->g);
        if (!f->h_pos || !f->g) return sl_fail(SL_ENOMEM, "KV fetch: gather lists");
    }
    return 0;
}

extern "C" int sl_gpu_fetch_create(sl_kv_store_t store, const struct sl_gpu_fetch_params *params,
                                   sl_gpu_fetch_t *out) {
    if (!out) return sl_fail(SL_EINVAL, "sl_gpu_fetch_create: out is NULL");
    *out = nullptr;
    if (!store || !params) return sl_fail(SL_EINVAL, "sl_gpu_fetch_create: NULL store or params");
    const struct sl_gpu_fetch_params *p = params;
    struct sl_kv_shape shape;
    sl_kv_store_shape(store, &shape);
    if (p->max_count < 1 || p->max_count > INT32_MAX / shape.n_head_kv)
        return sl_fail(SL_EINVAL, "KV fetch: max_count %lld outside 1..%d", (long long)p->max_count,
                       INT32_MAX / shape.n_head_kv);
    if (p->cache_blocks < 0 || p->cache_blocks > INT32_MAX)
        return sl_fail(SL_EINVAL, "KV fetch: cache_blocks %lld outside 0..%d",
                       (long long)p->cache_blocks, INT32_MAX);
    if (p->cache_ways < 1 || p->cache_ways > SL_FETCH_MAX_WAYS)
        return sl_fail(SL_EINVAL, "KV fetch: cache_ways %d outside 1..%d", p->cache_ways,
                       SL_FETCH_MAX_WAYS);
    if (p->path != SL_GPU_FETCH_ZERO_COPY && p->path != SL_GPU_FETCH_BLOCK_COPY &&
        p->path != SL_GPU_FETCH_STAGED)
        return sl_fail(SL_EINVAL, "KV fetch: unknown path %d", (int)p->path);
    if (p->cache_blocks > 0 && shape.block_tokens > SL_FETCH_MAX_CACHED_TOKENS)
        return sl_fail(SL_EUNSUPPORTED, "KV fetch: the VRAM cache handles blocks of up to %d "
                       "positions, the store has %d", SL_FETCH_MAX_CACHED_TOKENS, shape.block_tokens);
    sl_gpu_fetch_t f = (sl_gpu_fetch_t)calloc(1, sizeof *f);
    if (!f) return sl_fail(SL_ENOMEM, "KV fetch: cannot allocate");
    f->store = store;
    f->p = *p;
    f->H = shape.n_head_kv;
    f->n_layer = shape.n_layer;
    f->block_shift = __builtin_ctz((unsigned)shape.block_tokens);
    f->M = p->max_count;
    f->row_bytes = (int64_t)shape.head_dim * 2;
    f->block_bytes = 2 * (int64_t)shape.block_tokens * f->row_bytes;
    f->path = p->path;
    f->epoch = sl_kv_store_epoch(store);
    f->n_tokens_seen = sl_kv_store_n_tokens(store);
    int32_t ways = p->cache_blocks < p->cache_ways ? (int32_t)p->cache_blocks : p->cache_ways;
    f->cache.ways = ways > 0 ? ways : 1;
    f->cache.n_sets = ways > 0 ? p->cache_blocks / ways : 0;
    if (f->path != SL_GPU_FETCH_STAGED && sl_kv_store_host_map(store, &f->map) != 0) {
        f->path = SL_GPU_FETCH_STAGED; /* the file tier: staged is its only path */
        memset(&f->map, 0, sizeof f->map);
    }
    int err = fetch_alloc(f);
    if (!err && f->path != SL_GPU_FETCH_ZERO_COPY) err = staging_alloc(f);
    if (err) {
        sl_gpu_fetch_free(f);
        return err;
    }
    *out = f;
    return 0;
}

extern "C" enum sl_gpu_fetch_path sl_gpu_fetch_path_used(sl_gpu_fetch_t f) {
    return f ? f->path : SL_GPU_FETCH_STAGED;
}

/* Makes the device know every segment holding a committed position; falls back to staging
 * when one is not pinned (or not mapped, for zero copy). */
static int refresh_segments(sl_gpu_fetch_t f, int64_t n_tokens) {
    if (f->path == SL_GPU_FETCH_STAGED || n_tokens == 0) return 0;
    int64_t need = sl_kv_host_map_segment(&f->map, (n_tokens - 1) >> f->block_shift) + 1;
    int64_t first = f->n_segs_known;
    for (int64_t g = first; g < need; g++) {
        struct sl_kv_host_segment seg;
        int err = sl_kv_store_host_segment(f->store, g, &seg);
        if (err) return err;
        if (!seg.ptr || !seg.registered) {
            fall_back(f, "the KV store's host memory is not pinned for the device");
            return staging_alloc(f);
        }
        f->h_segs_host[g] = (const uint8_t *)seg.ptr;
        if (f->path == SL_GPU_FETCH_ZERO_COPY) {
            void *dev = nullptr;
            if (cudaHostGetDevicePointer(&dev, seg.ptr, 0) != cudaSuccess) {
                (void)cudaGetLastError();
                fall_back(f, "the KV store's host memory is not mapped into the device");
                return staging_alloc(f);
            }
            f->h_segs_dev[g] = (const uint8_t *)dev;
        }
    }
    if (need > first && f->path == SL_GPU_FETCH_ZERO_COPY)
        SL_CUDA_CHECK(cudaMemcpyAsync(f->d_segs + first, f->h_segs_dev + first,
                                      (size_t)(need - first) * sizeof(void *),
                                      cudaMemcpyHostToDevice, f->stream));
    f->n_segs_known = need;
    return 0;
}

/* Block copy: every planned block from the store's pinned memory into staging block u. */
static int copy_blocks(sl_gpu_fetch_t f, int32_t layer, int64_t n) {
    for (int64_t u = 0; u < n; u++) {
        int64_t b = f->h_blocks[u];
        f->b_dst[u] = f->d_stage + u * f->block_bytes;
        f->b_src[u] = f->h_segs_host[sl_kv_host_map_segment(&f->map, b)] +
                      sl_kv_host_map_offset(&f->map, layer, b, f->h_block_head[u]);
        f->b_size[u] = (size_t)f->block_bytes;
    }
    f->h_bytes += n * f->block_bytes;
    if (n == 0) return 0;
#if CUDART_VERSION >= 12080
    if (!f->batch_failed) {
        cudaMemcpyAttributes attr;
        memset(&attr, 0, sizeof attr);
        attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
        size_t attr_idx = 0;
#if CUDART_VERSION >= 13000
        cudaError_t e = cudaMemcpyBatchAsync(f->b_dst, f->b_src, f->b_size, (size_t)n, &attr,
                                             &attr_idx, 1, f->stream);
#else
        size_t fail_idx = 0;
        cudaError_t e = cudaMemcpyBatchAsync(f->b_dst, (void **)f->b_src, f->b_size, (size_t)n,
                                             &attr, &attr_idx, 1, &fail_idx, f->stream);
#endif
        if (e == cudaSuccess) return 0;
        (void)cudaGetLastError();
        f->batch_failed = true;
        if (first_warning(&warned_batch))
            sl_log(SL_LOG_WARN, "KV fetch: cudaMemcpyBatchAsync failed (%s); copying block by block",
                   cudaGetErrorString(e));
    }
#endif
    for (int64_t u = 0; u < n; u++)
        SL_CUDA_CHECK(cudaMemcpyAsync(f->b_dst[u], f->b_src[u], f->b_size[u],
                                      cudaMemcpyHostToDevice, f->stream));
    return 0;
}

/* The host's part of the staged paths: sources down, plan, rows read or blocks copied,
 * staging and map up. Fills *st. Buffers reused across calls are safe: the previous call's
 * uploads precede this call's download in stream order, and the host waits for that. */
static int staged_host(sl_gpu_fetch_t f, const sl_fetch_sel &s, sl_fetch_stage *st) {
    const size_t HM = (size_t)(f->H * f->M);
    SL_CUDA_CHECK(cudaMemcpyAsync(f->h_idx, s.idx, HM * sizeof(int32_t), cudaMemcpyDeviceToHost, f->stream));
    SL_CUDA_CHECK(cudaMemcpyAsync(f->h_cnt, s.cnt, (size_t)f->H * sizeof(int32_t), cudaMemcpyDeviceToHost, f->stream));
    SL_CUDA_CHECK(cudaMemcpyAsync(f->h_src, s.src, HM * sizeof(int32_t), cudaMemcpyDeviceToHost, f->stream));
    SL_CUDA_CHECK(cudaEventRecord(f->ev_d2h, f->stream));
    SL_CUDA_CHECK(cudaEventSynchronize(f->ev_d2h));
    sl_fetch_sel hs = s;
    hs.idx = f->h_idx;
    hs.cnt = f->h_cnt;
    hs.src = f->h_src;
    hs.lead = nullptr;
    bool blocks = f->path == SL_GPU_FETCH_BLOCK_COPY;
    int64_t n = sl_fetch_plan(&hs, blocks, f->h_map, f->h_pos, f->h_first, f->h_blocks, f->h_block_head);
    memset(st, 0, sizeof *st);
    st->base = f->d_stage;
    st->map = f->d_map;
    if (blocks) {
        int err = copy_blocks(f, s.layer, n);
        if (err) return err;
        st->shift = f->block_shift;
        st->unit_bytes = f->block_bytes;
        st->v_offset = ((int64_t)1 << f->block_shift) * f->row_bytes;
    } else {
        const int64_t vo = (int64_t)HM * f->row_bytes;
        for (int32_t h = 0; h < f->H; h++) {
            struct sl_kv_gather *g = &f->g[h];
            g->layer = s.layer;
            g->head = h;
            g->idx = f->h_pos + f->h_first[h];
            g->first = 0;
            g->n = f->h_first[h + 1] - f->h_first[h];
            g->k_out = f->h_stage + f->h_first[h] * f->row_bytes;
            g->v_out = f->h_stage + vo + f->h_first[h] * f->row_bytes;
        }
        int err = sl_kv_store_gather(f->store, f->g, f->H);
        if (err) return err;
        if (n > 0) {
            SL_CUDA_CHECK(cudaMemcpyAsync(f->d_stage, f->h_stage, (size_t)(n * f->row_bytes),
                                          cudaMemcpyHostToDevice, f->stream));
            SL_CUDA_CHECK(cudaMemcpyAsync(f->d_stage + vo, f->h_stage + vo, (size_t)(n * f->row_bytes),
                                          cudaMemcpyHostToDevice, f->stream));
        }
        f->h_bytes += 2 * n * f->row_bytes;
        st->shift = 0;
        st->unit_bytes = f->row_bytes;
        st->v_offset = vo;
    }
    if (n > 0)
        SL_CUDA_CHECK(cudaMemcpyAsync(f->d_map, f->h_map, HM * sizeof(int32_t), cudaMemcpyHostToDevice, f->stream));
    return 0;
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* One call on the fetch stream, after it waits for the selection. */
static int fetch_run(sl_gpu_fetch_t f, int32_t layer, const int32_t *idx, const int32_t *cnt,
                     uint8_t *k_out, uint8_t *v_out, bool prefetch) {
    sl_fetch_counters *ctr = f->d_ctr + (prefetch ? 1 : 0);
    int64_t n_tokens = sl_kv_store_n_tokens(f->store);
    uint64_t epoch = sl_kv_store_epoch(f->store);
    int err;
    if (epoch != f->epoch || n_tokens < f->n_tokens_seen) {
        if ((err = cache_reset(f))) return err;
        f->epoch = epoch;
    }
    f->n_tokens_seen = n_tokens;
    if ((err = refresh_segments(f, n_tokens))) return err;
    if (f->step == UINT32_MAX && (err = cache_reset(f))) return err;
    f->step++;

    sl_fetch_sel s;
    memset(&s, 0, sizeof s);
    s.idx = idx;
    s.cnt = cnt;
    s.src = f->d_src;
    s.lead = f->d_lead;
    s.max_count = f->M;
    s.n_tokens = n_tokens;
    s.n_heads = f->H;
    s.layer = layer;
    s.block_shift = f->block_shift;
    s.row_bytes = f->row_bytes;
    s.step = f->step;
    sl_fetch_stage st;
    memset(&st, 0, sizeof st);
    sl_fetch_host host;
    memset(&host, 0, sizeof host);
    host.segs = f->d_segs;
    host.map = f->map;
    bool wide = f->row_bytes % 16 == 0 && aligned16(k_out) && aligned16(v_out);

    if ((err = launch_lookup(s, f->cache, ctr, f->stream))) return err;
    if (f->path != SL_GPU_FETCH_ZERO_COPY && (err = staged_host(f, s, &st))) return err;
    if ((err = launch_copy(wide, s, f->cache, st, host, k_out, v_out, prefetch, ctr, f->stream)))
        return err;
    return launch_insert(wide, s, f->cache, st, k_out, v_out, f->path == SL_GPU_FETCH_BLOCK_COPY,
                         ctr, f->stream);
}

static int check_call(sl_gpu_fetch_t f, int32_t layer, const void *idx, const void *cnt) {
    if (!f) return sl_fail(SL_EINVAL, "KV fetch: NULL fetch");
    if (layer < 0 || layer >= f->n_layer)
        return sl_fail(SL_EINVAL, "KV fetch: layer %d outside 0..%d", layer, f->n_layer - 1);
    if (!idx || !cnt) return sl_fail(SL_EINVAL, "KV fetch: NULL selection");
    SL_CUDA_CHECK(cudaSetDevice(f->p.device));
    return 0;
}

extern "C" int sl_gpu_fetch_layer(sl_gpu_fetch_t f, int32_t layer, const int32_t *idx_dev,
                                  const int32_t *counts_dev, void *k_out_dev, void *v_out_dev,
                                  void *stream) {
    int err = check_call(f, layer, idx_dev, counts_dev);
    if (err) return err;
    if (!k_out_dev || !v_out_dev) return sl_fail(SL_EINVAL, "KV fetch: NULL output");
    cudaStream_t caller = (cudaStream_t)stream;
    SL_CUDA_CHECK(cudaEventRecord(f->ev_in, caller));
    SL_CUDA_CHECK(cudaStreamWaitEvent(f->stream, f->ev_in, 0));
    f->calls++;
    err = fetch_run(f, layer, idx_dev, counts_dev, (uint8_t *)k_out_dev, (uint8_t *)v_out_dev, false);
    if (err) return err;
    SL_CUDA_CHECK(cudaEventRecord(f->ev_done, f->stream));
    SL_CUDA_CHECK(cudaStreamWaitEvent(caller, f->ev_done, 0));
    return 0;
}

extern "C" int sl_gpu_fetch_prefetch(sl_gpu_fetch_t f, int32_t layer, const int32_t *idx_dev,
                                     const int32_t *counts_dev, void *stream) {
    int err = check_call(f, layer, idx_dev, counts_dev);
    if (err) return err;
    if (f->cache.n_sets == 0) return 0;
    cudaStream_t caller = (cudaStream_t)stream;
    const size_t HM = (size_t)(f->H * f->M), rows = HM * (size_t)f->row_bytes;
    SL_CUDA_CHECK(cudaEventRecord(f->ev_in, caller));
    SL_CUDA_CHECK(cudaStreamWaitEvent(f->stream, f->ev_in, 0));
    SL_CUDA_CHECK(cudaMemcpyAsync(f->d_idx, idx_dev, HM * sizeof(int32_t), cudaMemcpyDeviceToDevice, f->stream));
    SL_CUDA_CHECK(cudaMemcpyAsync(f->d_cnt, counts_dev, (size_t)f->H * sizeof(int32_t),
                                  cudaMemcpyDeviceToDevice, f->stream));
    SL_CUDA_CHECK(cudaEventRecord(f->ev_copied, f->stream));
    SL_CUDA_CHECK(cudaStreamWaitEvent(caller, f->ev_copied, 0));
    f->prefetches++;
    return fetch_run(f, layer, f->d_idx, f->d_cnt, f->d_scratch, f->d_scratch + rows, true);
}

extern "C" int sl_gpu_fetch_invalidate(sl_gpu_fetch_t f) {
    if (!f) return sl_fail(SL_EINVAL, "KV fetch: NULL fetch");
    SL_CUDA_CHECK(cudaSetDevice(f->p.device));
    return cache_reset(f);
}

extern "C" int sl_gpu_fetch_get_stats(sl_gpu_fetch_t f, struct sl_gpu_fetch_stats *out) {
    if (!f || !out) return sl_fail(SL_EINVAL, "KV fetch stats: NULL argument");
    SL_CUDA_CHECK(cudaSetDevice(f->p.device));
    SL_CUDA_CHECK(cudaStreamSynchronize(f->stream));
    sl_fetch_counters cs[2];
    SL_CUDA_CHECK(cudaMemcpy(cs, f->d_ctr, sizeof cs, cudaMemcpyDeviceToHost));
    const sl_fetch_counters &c = cs[0], &pc = cs[1]; /* fetches, prefetches */
    memset(out, 0, sizeof *out);
    out->path = f->path;
    out->calls = f->calls;
    out->prefetches = f->prefetches;
    out->blocks = (int64_t)c.blocks;
    out->block_hits = (int64_t)c.block_hits;
    out->rows = (int64_t)c.rows;
    out->row_hits = (int64_t)c.row_hits;
    out->bytes_h2d = (int64_t)(c.bytes_h2d + pc.bytes_h2d) + f->h_bytes;
    out->inserts = (int64_t)(c.inserts + pc.inserts);
    out->evictions = (int64_t)(c.evictions + pc.evictions);
    out->bad = (int64_t)c.bad;
    out->cache_slots = f->cache.n_sets * f->cache.ways;
    out->cache_bytes = out->cache_slots * f->block_bytes;
    return 0;
}

extern "C" int sl_gpu_fetch_reset_stats(sl_gpu_fetch_t f) {
    if (!f) return sl_fail(SL_EINVAL, "KV fetch stats: NULL fetch");
    SL_CUDA_CHECK(cudaSetDevice(f->p.device));
    SL_CUDA_CHECK(cudaMemsetAsync(f->d_ctr, 0, 2 * sizeof(sl_fetch_counters), f->stream));
    f->calls = f->prefetches = f->h_bytes = 0;
    return 0;
}
