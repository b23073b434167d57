/* The GPU KV fetch (gpu/gpu-fetch.h) on a device: rows fetched for random step-to-step
 * selections are bit-identical to sl_kv_store_gather, for the host tier over each transfer
 * path (zero copy, block copy, staged) and for the file tier, with and without the VRAM
 * cache, including empty selections, positions in the partial last block, bad positions,
 * unaligned outputs, prefetches and a truncate under the cache. The cache is smaller than
 * the working set, so hits and evictions both happen; the counters must show it.
 *
 * Skips without a device; CUDA is initialised inside the tests (Criterion forks). The
 * decisions themselves are checked on the CPU in test-fetch-logic.c. */
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu-fetch.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "tests/fetch-test-util.h"
#include "tests/kv-test-util.h"
#include "tests/gpu-test-util.h"

TestSuite(gpu_fetch, .fini = kvt_cleanup);



static const struct sl_kv_shape SHAPE = {4, 3, 64, SL_KV_DTYPE_F16, 16}; /* 4 KiB blocks */

/* Device side of a run: selection in, rows out, on a caller stream. */
struct dev {
    int32_t *idx, *cnt;
    uint8_t *k, *v; /* (H, M, row) + `offset` bytes, so outputs may be unaligned */
    uint8_t *hk, *hv;
    cudaStream_t stream;
    size_t bytes;
};

static void dev_init(struct dev *d, int32_t H, int64_t M, int64_t row, size_t offset) {
    memset(d, 0, sizeof *d);
    d->bytes = (size_t)(H * M * row);
    CUDA_OK(cudaMalloc((void **)&d->idx, sizeof *d->idx * (size_t)(H * M)));
    CUDA_OK(cudaMalloc((void **)&d->cnt, sizeof *d->cnt * (size_t)H));
    CUDA_OK(cudaMalloc((void **)&d->k, d->bytes + offset));
    CUDA_OK(cudaMalloc((void **)&d->v, d->bytes + offset));
    d->k += offset;
    d->v += offset;
    d->hk = malloc(d->bytes);
    d->hv = malloc(d->bytes);
    CUDA_OK(cudaStreamCreate(&d->stream));
}

static void dev_upload(struct dev *d, const struct ftu_sel *s) {
    CUDA_OK(cudaMemcpyAsync(d->idx, s->idx, sizeof *s->idx * (size_t)(s->H * s->M),
                            cudaMemcpyHostToDevice, d->stream));
    CUDA_OK(cudaMemcpyAsync(d->cnt, s->cnt, sizeof *s->cnt * (size_t)s->H, cudaMemcpyHostToDevice,
                            d->stream));
    CUDA_OK(cudaMemsetAsync(d->k, 0xA5, d->bytes, d->stream));
    CUDA_OK(cudaMemsetAsync(d->v, 0xA5, d->bytes, d->stream));
}

/* Only the caller's stream is synchronised: the fetch's event wait must make that enough. */
static void dev_download(struct dev *d) {
    CUDA_OK(cudaMemcpyAsync(d->hk, d->k, d->bytes, cudaMemcpyDeviceToHost, d->stream));
    CUDA_OK(cudaMemcpyAsync(d->hv, d->v, d->bytes, cudaMemcpyDeviceToHost, d->stream));
    CUDA_OK(cudaStreamSynchronize(d->stream));
}

struct cfg {
    bool file;
    enum sl_gpu_fetch_path path;
    int64_t cache_blocks;
    int32_t ways;
    bool clustered;
    size_t out_offset;
    enum sl_gpu_fetch_path expect_path;
};

/* Steps over every layer; returns the stats. */
static void run(const struct cfg *c, struct sl_gpu_fetch_stats *st) {
    const int64_t n_tokens = 3000 + 7, M = 160;
    struct ftu_store fs;
    SL_OK(ftu_store_make(&fs, &SHAPE, c->file, c->file ? -1 : 0, n_tokens + 100, n_tokens, 42));
    struct sl_gpu_fetch_params p = sl_gpu_fetch_default_params();
    p.max_count = M;
    p.cache_blocks = c->cache_blocks;
    p.cache_ways = c->ways;
    p.path = c->path;
    sl_gpu_fetch_t f;
    SL_OK(sl_gpu_fetch_create(fs.s, &p, &f));
    const int32_t H = SHAPE.n_head_kv, L = SHAPE.n_layer;
    struct dev d;
    dev_init(&d, H, M, fs.row_bytes, c->out_offset);
    struct ftu_sel sel[4], prev;
    for (int l = 0; l < L; l++) ftu_sel_init(&sel[l], H, M);
    ftu_sel_init(&prev, H, M);
    uint64_t rng = 7;
    int64_t rows = 0;
    for (int step = 0; step < 12; step++)
        for (int32_t l = 0; l < L; l++) {
            if (step > 0 && step % 3 == 0) { /* warm with the previous selection, as the engine does */
                dev_upload(&d, &sel[l]);
                SL_OK(sl_gpu_fetch_prefetch(f, l, d.idx, d.cnt, d.stream));
            }
            ftu_sel_copy(&prev, &sel[l]);
            ftu_sel_next(&sel[l], step ? &prev : NULL, n_tokens, SHAPE.block_tokens, 0.8,
                         c->clustered, &rng);
            if (step == 5) memset(sel[l].cnt, 0, sizeof *sel[l].cnt * (size_t)H); /* all empty */
            dev_upload(&d, &sel[l]);
            SL_OK(sl_gpu_fetch_layer(f, l, d.idx, d.cnt, d.k, d.v, d.stream));
            dev_download(&d);
            int rc = ftu_check_rows(fs.s, l, &sel[l], d.hk, d.hv);
            cr_assert_eq(rc, 0, "step %d layer %d: %s", step, l, ftu_msg());
            for (int32_t h = 0; h < H; h++) {
                rows += sel[l].cnt[h];
                for (int64_t i = sel[l].cnt[h]; i < M; i++)
                    cr_assert_eq(d.hk[(h * M + i) * fs.row_bytes], 0xA5, "row past the count written");
            }
        }
    SL_OK(sl_gpu_fetch_get_stats(f, st));
    cr_assert_eq(st->path, c->expect_path, "path %d, expected %d", (int)st->path, (int)c->expect_path);
    cr_assert_eq(sl_gpu_fetch_path_used(f), c->expect_path);
    cr_assert_eq(st->rows, rows, "rows %lld, selected %lld", (long long)st->rows, (long long)rows);
    cr_assert_eq(st->bad, 0);
    cr_assert_gt(st->bytes_h2d, 0);
    if (c->cache_blocks) {
        cr_assert_gt(st->row_hits, 0, "the cache never served a row");
        cr_assert_lt(st->row_hits, st->rows);
        cr_assert_gt(st->block_hits, 0);
        cr_assert_gt(st->evictions, 0, "no eviction: the cache holds the whole working set");
        cr_assert_gt(st->prefetches, 0);
    } else {
        cr_assert_eq(st->row_hits, 0);
        cr_assert_eq(st->inserts, 0);
    }
    for (int l = 0; l < L; l++) ftu_sel_free(&sel[l]);
    ftu_sel_free(&prev);
    sl_gpu_fetch_free(f);
    CUDA_OK(cudaFree(d.idx));
    CUDA_OK(cudaFree(d.cnt));
    CUDA_OK(cudaFree(d.k - c->out_offset));
    CUDA_OK(cudaFree(d.v - c->out_offset));
    CUDA_OK(cudaStreamDestroy(d.stream));
    free(d.hk);
    free(d.hv);
    ftu_store_free(&fs);
}

/* 4 layers x 3 heads x ~188 blocks; ~100 blocks per head per step: 192 slots cannot hold it. */
Test(gpu_fetch, host_zero_copy_with_cache) {
    require_gpu();
    struct sl_gpu_fetch_stats st;
    struct cfg c = {false, SL_GPU_FETCH_ZERO_COPY, 192, 4, false, 0, SL_GPU_FETCH_ZERO_COPY};
    run(&c, &st);
}

Test(gpu_fetch, host_zero_copy_clustered_unaligned_outputs) {
    require_gpu();
    struct sl_gpu_fetch_stats st;
    struct cfg c = {false, SL_GPU_FETCH_ZERO_COPY, 96, 2, true, 2, SL_GPU_FETCH_ZERO_COPY};
    run(&c, &st);
}

Test(gpu_fetch, host_block_copy_with_cache) {
    require_gpu();
    struct sl_gpu_fetch_stats st;
    struct cfg c = {false, SL_GPU_FETCH_BLOCK_COPY, 192, 4, true, 0, SL_GPU_FETCH_BLOCK_COPY};
    run(&c, &st);
    /* Whole blocks moved: at least a block per block requested that missed. */
    cr_assert_geq(st.bytes_h2d, (st.blocks - st.block_hits) * 4096);
}

Test(gpu_fetch, host_staged_with_cache) {
    require_gpu();
    struct sl_gpu_fetch_stats st;
    struct cfg c = {false, SL_GPU_FETCH_STAGED, 192, 4, false, 0, SL_GPU_FETCH_STAGED};
    run(&c, &st);
}

Test(gpu_fetch, file_tier_with_cache) {
    require_gpu();
    struct sl_gpu_fetch_stats st;
    struct cfg c = {true, SL_GPU_FETCH_ZERO_COPY, 192, 4, false, 0, SL_GPU_FETCH_STAGED};
    run(&c, &st);
}

Test(gpu_fetch, file_tier_without_cache) {
    require_gpu();
    struct sl_gpu_fetch_stats st;
    struct cfg c = {true, SL_GPU_FETCH_ZERO_COPY, 0, 4, true, 0, SL_GPU_FETCH_STAGED};
    run(&c, &st);
}

Test(gpu_fetch, host_zero_copy_without_cache) {
    require_gpu();
    struct sl_gpu_fetch_stats st;
    struct cfg c = {false, SL_GPU_FETCH_ZERO_COPY, 0, 4, false, 0, SL_GPU_FETCH_ZERO_COPY};
    run(&c, &st);
    cr_assert_eq(st.bytes_h2d, st.rows * 2 * 128, "zero copy moves exactly the selected rows");
}

/* Positions outside [0, n_tokens) give zero rows and are counted; a truncate empties the
 * cache, so rows appended again after it are fetched fresh. */
Test(gpu_fetch, bad_positions_and_truncate) {
    require_gpu();
    for (int file = 0; file < 2; file++) {
        struct ftu_store fs;
        SL_OK(ftu_store_make(&fs, &SHAPE, file, file ? -1 : 0, 2000, 1000, 5));
        struct sl_gpu_fetch_params p = sl_gpu_fetch_default_params();
        p.max_count = 8;
        p.cache_blocks = 64;
        sl_gpu_fetch_t f;
        SL_OK(sl_gpu_fetch_create(fs.s, &p, &f));
        struct dev d;
        dev_init(&d, 3, 8, fs.row_bytes, 0);
        struct ftu_sel s;
        ftu_sel_init(&s, 3, 8);
        int32_t row0[] = {-1, 5, 6, 999, 1000, 5000};
        memcpy(s.idx, row0, sizeof row0);
        s.cnt[0] = 6;
        s.cnt[1] = 0;
        s.cnt[2] = 2;
        s.idx[16] = 17;
        s.idx[17] = 990;
        dev_upload(&d, &s);
        SL_OK(sl_gpu_fetch_layer(f, 2, d.idx, d.cnt, d.k, d.v, d.stream));
        dev_download(&d);
        for (int i = 0; i < 6; i++) {
            bool bad = row0[i] < 0 || row0[i] >= 1000;
            for (int64_t b = 0; bad && b < fs.row_bytes; b++)
                cr_assert_eq(d.hk[i * fs.row_bytes + b], 0, "bad position %d: K not zero", row0[i]);
        }
        struct ftu_sel good;
        ftu_sel_init(&good, 3, 8);
        int32_t ok0[] = {5, 6, 999};
        memcpy(good.idx, ok0, sizeof ok0);
        good.cnt[0] = 3;
        good.idx[16] = 17;
        good.idx[17] = 990;
        good.cnt[2] = 2;
        uint8_t *k2 = malloc(d.bytes), *v2 = malloc(d.bytes);
        memcpy(k2, d.hk, d.bytes);
        memcpy(v2, d.hv, d.bytes);
        /* Move rows 1, 2, 3 of head 0 to where `good` expects them. */
        memmove(k2, k2 + fs.row_bytes, (size_t)(3 * fs.row_bytes));
        memmove(v2, v2 + fs.row_bytes, (size_t)(3 * fs.row_bytes));
        cr_assert_eq(ftu_check_rows(fs.s, 2, &good, k2, v2), 0, "%s", ftu_msg());
        struct sl_gpu_fetch_stats st;
        SL_OK(sl_gpu_fetch_get_stats(f, &st));
        cr_assert_eq(st.bad, 3, "bad %lld", (long long)st.bad);

        /* Same selection again: served from VRAM. Then truncate and append other rows. */
        dev_upload(&d, &good);
        SL_OK(sl_gpu_fetch_layer(f, 2, d.idx, d.cnt, d.k, d.v, d.stream));
        dev_download(&d);
        SL_OK(sl_gpu_fetch_get_stats(f, &st));
        cr_assert_gt(st.row_hits, 0);
        SL_OK(sl_kv_store_truncate(fs.s, 10));
        const int64_t per = 3 * 64, n = 990;
        uint16_t *k = malloc(sizeof *k * (size_t)(n * per)), *v = malloc(sizeof *v * (size_t)(n * per));
        for (int64_t e = 0; e < n * per; e++) {
            k[e] = (uint16_t)(e * 31 + 7);
            v[e] = (uint16_t)(e * 17 + 3);
        }
        for (int32_t l = 0; l < SHAPE.n_layer; l++) SL_OK(sl_kv_store_append(fs.s, l, n, k, v));
        SL_OK(sl_kv_store_commit(fs.s, n, NULL));
        dev_upload(&d, &good);
        SL_OK(sl_gpu_fetch_layer(f, 2, d.idx, d.cnt, d.k, d.v, d.stream));
        dev_download(&d);
        cr_assert_eq(ftu_check_rows(fs.s, 2, &good, d.hk, d.hv), 0, "after truncate: %s", ftu_msg());
        free(k);
        free(v);
        free(k2);
        free(v2);
        ftu_sel_free(&s);
        ftu_sel_free(&good);
        sl_gpu_fetch_free(f);
        CUDA_OK(cudaStreamDestroy(d.stream));
        ftu_store_free(&fs);
    }
}

/* Argument checks run everywhere; creating a fetch needs a device. */
Test(gpu_fetch, arguments) {
    sl_gpu_fetch_free(NULL);
    cr_assert_eq(sl_gpu_fetch_layer(NULL, 0, NULL, NULL, NULL, NULL, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_fetch_invalidate(NULL), SL_EINVAL);
    struct sl_gpu_fetch_stats st;
    cr_assert_eq(sl_gpu_fetch_get_stats(NULL, &st), SL_EINVAL);
    require_gpu();
    struct ftu_store fs;
    SL_OK(ftu_store_make(&fs, &SHAPE, false, 0, 100, 50, 1));
    struct sl_gpu_fetch_params p = sl_gpu_fetch_default_params();
    cr_assert_eq(p.path, SL_GPU_FETCH_ZERO_COPY);
    sl_gpu_fetch_t f = NULL;
    cr_assert_eq(sl_gpu_fetch_create(fs.s, &p, &f), SL_EINVAL, "max_count 0 accepted");
    p.max_count = 4;
    p.cache_ways = 33;
    cr_assert_eq(sl_gpu_fetch_create(fs.s, &p, &f), SL_EINVAL);
    p.cache_ways = 4;
    SL_OK(sl_gpu_fetch_create(fs.s, &p, &f));
    int32_t *idx;
    CUDA_OK(cudaMalloc((void **)&idx, 64));
    cr_assert_eq(sl_gpu_fetch_layer(f, 4, idx, idx, idx, idx, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_fetch_layer(f, -1, idx, idx, idx, idx, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_fetch_layer(f, 0, NULL, idx, idx, idx, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_fetch_prefetch(f, 0, idx, idx, NULL), 0, "prefetch without a cache is a no-op");
    SL_OK(sl_gpu_fetch_invalidate(f));
    CUDA_OK(cudaFree(idx));
    sl_gpu_fetch_free(f);
    ftu_store_free(&fs);
}
