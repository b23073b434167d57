/* Question: how fast does the GPU KV fetch (gpu/gpu-fetch.h) bring a decode step's selected
 * K/V rows from the KV store into VRAM, per transfer path, against the copy-engine limit
 * measured in the same run, and what hit rate does the VRAM cache reach when consecutive
 * steps' selections overlap 80%?
 *
 * Shape: the default model's (30 layers, 3 KV heads, head_dim 64, f16, block 16: 256 bytes of
 * K+V per selected position and head). A store of N committed positions (128K and 1M), synthetic
 * rows. Per (layer, head) a selection of frac * N positions (2%), ascending:
 *   token   uniform random positions (~1.2 per touched block at 2%)
 *   block   frac * N / 16 random whole blocks (16 per touched block)
 * One step = sl_gpu_fetch_layer for all 30 layers on one caller stream, selections already in
 * device memory; timed on CLOCK_MONOTONIC from the first call to the caller stream's sync.
 * Columns:
 *   useful MB    selected rows' bytes per step (rows x 256 B)
 *   moved MB     bytes moved host -> device per step (stats.bytes_h2d: rows, or whole blocks)
 *   ms/step      median over --steps steps after one warm-up step (fresh selections each step,
 *                no cache: every row crosses PCIe)
 *   useful GB/s  useful MB / time;  % limit  useful GB/s over the copy-engine limit
 * Paths: zero copy (a kernel reads mapped host memory), block copy (cudaMemcpyBatchAsync of
 * whole blocks + device gather), staged (host tier through pinned staging), file (file tier:
 * io_uring reads of the store file, O_DIRECT, 256 MiB store cache, then staged; only up to
 * --file-max positions, the file is bytes/token x N).
 * Limit: one 256 MiB cudaMemcpyAsync from pinned host memory (median of 5).
 * Cache: zero copy with a cache of --cache-mult x one step's distinct blocks; step 0 cold,
 * then steps keeping 80% (--overlap) of each selection: row hit rate, block hit rate and
 * ms/step against the same steps without the cache.
 *
 *   bench-gpu-fetch [-o FILE.md] [--tokens 131072,1048576] [--frac 0.02] [--steps 5]
 *       [--paths zero,block,staged,file] [--file-max 131072] [--dir DIR] [--overlap 0.8]
 *       [--cache-mult 2] [--device 0]
 * Markdown to -o (default stdout); progress on stderr. Exits 1 with a one-line message when
 * there is no CUDA device. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "gpu/gpu-fetch.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "spotlight/kv-store.h"

static const sl_kv_shape k_shape = {30, 3, 64, SL_KV_DTYPE_F16, 16};

static struct {
    int64_t tokens[8];
    int n_tokens;
    double frac, overlap, cache_mult;
    int steps, device;
    bool zero, block, staged, file;
    int64_t file_max;
    const char *dir, *out;
} o;

static uint64_t g_rng = 0x1234567;
static uint64_t rnd(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void die(const char *what, int rc) {
    fprintf(stderr, "bench-gpu-fetch: %s: %s (%s)\n", what, sl_strerror(rc), sl_error_detail());
    exit(1);
}

static void cuda_die(const char *what, cudaError_t e) {
    if (e == cudaSuccess) return;
    fprintf(stderr, "bench-gpu-fetch: %s: %s\n", what, cudaGetErrorString(e));
    exit(1);
}

/* ---- stores ------------------------------------------------------------------------------- */

static sl_kv_store_t make_store(int64_t n, bool file, const char *path) {
    sl_kv_store_params p = sl_kv_store_default_params();
    p.capacity = n;
    if (file) {
        p.tier = SL_KV_TIER_FILE;
        p.path = path;
        p.overwrite = true;
    } else {
        int rc = sl_kv_store_params_for_device(&p, o.device);
        if (rc) die("store params for the device", rc);
    }
    sl_kv_store_t s;
    int rc = sl_kv_store_create(&k_shape, &p, &s);
    if (rc) die("store create", rc);
    /* One random chunk appended over and over: the values do not matter here. */
    const int64_t chunk = 1024, per = (int64_t)k_shape.n_head_kv * k_shape.head_dim;
    uint16_t *k = (uint16_t *)malloc(sizeof *k * (size_t)(chunk * per));
    for (int64_t e = 0; e < chunk * per; e++) k[e] = (uint16_t)rnd();
    double t0 = bench_now();
    for (int64_t done = 0; done < n; done += chunk) {
        int64_t m = n - done < chunk ? n - done : chunk;
        for (int32_t l = 0; l < k_shape.n_layer; l++)
            if ((rc = sl_kv_store_append(s, l, m, k, k))) die("store append", rc);
        if ((rc = sl_kv_store_commit(s, m, NULL))) die("store commit", rc);
    }
    if (file && (rc = sl_kv_store_sync(s))) die("store sync", rc);
    fprintf(stderr, "  %s store of %lld positions filled in %.1f s\n", file ? "file" : "host",
            (long long)n, bench_now() - t0);
    free(k);
    return s;
}

/* ---- selections --------------------------------------------------------------------------- */

/* All layers' selections of one step: idx (L, H, M), cnt (L, H). */
struct step_sel {
    int64_t M;
    int32_t *idx, *cnt;
};

/* A new selection per (layer, head): keep `keep` of prev's positions (prev may be NULL), fill
 * up to M with random positions (token) or random whole blocks (block); sorted via a bitmap. */
static void make_sel(step_sel *s, const step_sel *prev, int64_t n, bool blocks, double keep,
                     uint8_t *bitmap) {
    const int32_t L = k_shape.n_layer, H = k_shape.n_head_kv, T = k_shape.block_tokens;
    for (int64_t lh = 0; lh < (int64_t)L * H; lh++) {
        memset(bitmap, 0, (size_t)n);
        int64_t have = 0;
        if (prev)
            for (int64_t i = 0; i < prev->cnt[lh]; i++)
                if ((double)(rnd() % 1000000) < keep * 1e6) {
                    bitmap[prev->idx[lh * s->M + i]] = 1;
                    have++;
                }
        while (have < s->M) {
            if (blocks) {
                int64_t b = (int64_t)(rnd() % (uint64_t)(n / T));
                for (int64_t r = 0; r < T && have < s->M; r++)
                    if (!bitmap[b * T + r]) bitmap[b * T + r] = 1, have++;
            } else {
                int64_t p = (int64_t)(rnd() % (uint64_t)n);
                if (!bitmap[p]) bitmap[p] = 1, have++;
            }
        }
        int64_t c = 0;
        for (int64_t p = 0; p < n && c < s->M; p++)
            if (bitmap[p]) s->idx[lh * s->M + c++] = (int32_t)p;
        s->cnt[lh] = (int32_t)c;
    }
}

/* ---- measurements ------------------------------------------------------------------------- */

struct result {
    double ms, useful_mb, moved_mb, row_hit, block_hit;
};

/* Runs warm-up + o.steps steps through `f`; selections drawn per step (keep: overlap with
 * the previous step's, 0 for fresh ones). */
static result run_steps(sl_gpu_fetch_t f, int64_t n, int64_t M, bool blocks, double keep,
                        int32_t *d_idx, int32_t *d_cnt, uint8_t *d_k, uint8_t *d_v,
                        cudaStream_t st, uint8_t *bitmap) {
    const int32_t L = k_shape.n_layer, H = k_shape.n_head_kv;
    const size_t n_idx = (size_t)(L * H * M);
    step_sel a = {M, (int32_t *)malloc(n_idx * 4), (int32_t *)malloc((size_t)(L * H) * 4)};
    step_sel b = {M, (int32_t *)malloc(n_idx * 4), (int32_t *)malloc((size_t)(L * H) * 4)};
    step_sel *cur = &a, *prev = &b;
    double ms[64];
    int n_ms = 0;
    int64_t rows = 0, moved0 = 0, rows_hit0 = 0, rows0 = 0, blocks0 = 0, bhit0 = 0;
    for (int step = 0; step <= o.steps; step++) {
        make_sel(cur, step ? prev : NULL, n, blocks, keep, bitmap);
        cuda_die("upload idx", cudaMemcpy(d_idx, cur->idx, n_idx * 4, cudaMemcpyHostToDevice));
        cuda_die("upload cnt", cudaMemcpy(d_cnt, cur->cnt, (size_t)(L * H) * 4, cudaMemcpyHostToDevice));
        sl_gpu_fetch_stats s0;
        int rc = sl_gpu_fetch_get_stats(f, &s0);
        if (rc) die("stats", rc);
        double t0 = bench_now();
        for (int32_t l = 0; l < L; l++)
            if ((rc = sl_gpu_fetch_layer(f, l, d_idx + (size_t)l * H * M, d_cnt + l * H, d_k, d_v, st)))
                die("fetch", rc);
        cuda_die("sync", cudaStreamSynchronize(st));
        double t = bench_now() - t0;
        sl_gpu_fetch_stats s1;
        if ((rc = sl_gpu_fetch_get_stats(f, &s1))) die("stats", rc);
        if (step > 0) { /* step 0: warm-up (and the cache's cold start) */
            ms[n_ms++] = 1e3 * t;
            rows += s1.rows - s0.rows;
            moved0 += s1.bytes_h2d - s0.bytes_h2d;
            rows0 += s1.rows - s0.rows;
            rows_hit0 += s1.row_hits - s0.row_hits;
            blocks0 += s1.blocks - s0.blocks;
            bhit0 += s1.block_hits - s0.block_hits;
        }
        step_sel *t2 = cur;
        cur = prev;
        prev = t2;
    }
    result r;
    r.ms = bench_median(ms, n_ms);
    r.useful_mb = (double)rows * 2 * 128 / n_ms / 1e6;
    r.moved_mb = (double)moved0 / n_ms / 1e6;
    r.row_hit = rows0 ? (double)rows_hit0 / (double)rows0 : 0;
    r.block_hit = blocks0 ? (double)bhit0 / (double)blocks0 : 0;
    free(a.idx);
    free(a.cnt);
    free(b.idx);
    free(b.cnt);
    return r;
}

static double copy_engine_gbs(void) {
    const size_t bytes = (size_t)256 << 20;
    void *h, *d;
    cudaStream_t st;
    cuda_die("pinned alloc", cudaHostAlloc(&h, bytes, cudaHostAllocDefault));
    cuda_die("device alloc", cudaMalloc(&d, bytes));
    cuda_die("stream", cudaStreamCreate(&st));
    memset(h, 1, bytes);
    double v[5];
    for (int r = -1; r < 5; r++) {
        double t0 = bench_now();
        cuda_die("H2D", cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, st));
        cuda_die("sync", cudaStreamSynchronize(st));
        if (r >= 0) v[r] = (double)bytes / (bench_now() - t0) / 1e9;
    }
    cudaFreeHost(h);
    cudaFree(d);
    cudaStreamDestroy(st);
    return bench_median(v, 5);
}

/* ---- main ----------------------------------------------------------------------------------- */

static void parse_list(const char *s, int64_t *out, int *n) {
    *n = 0;
    for (const char *p = s; *p && *n < 8;) {
        out[(*n)++] = strtoll(p, (char **)&p, 10);
        if (*p == ',') p++;
        else if (*p) break;
    }
}

int main(int argc, char **argv) {
    o.tokens[0] = 131072;
    o.tokens[1] = 1048576;
    o.n_tokens = 2;
    o.frac = 0.02;
    o.overlap = 0.8;
    o.cache_mult = 2;
    o.steps = 5;
    o.zero = o.block = o.staged = o.file = true;
    o.file_max = 131072;
    o.dir = "/tmp";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-o") && v) o.out = argv[++i];
        else if (!strcmp(a, "--tokens") && v) parse_list(argv[++i], o.tokens, &o.n_tokens);
        else if (!strcmp(a, "--frac") && v) o.frac = atof(argv[++i]);
        else if (!strcmp(a, "--overlap") && v) o.overlap = atof(argv[++i]);
        else if (!strcmp(a, "--cache-mult") && v) o.cache_mult = atof(argv[++i]);
        else if (!strcmp(a, "--steps") && v) o.steps = atoi(argv[++i]);
        else if (!strcmp(a, "--device") && v) o.device = atoi(argv[++i]);
        else if (!strcmp(a, "--file-max") && v) o.file_max = strtoll(argv[++i], NULL, 10);
        else if (!strcmp(a, "--dir") && v) o.dir = argv[++i];
        else if (!strcmp(a, "--paths") && v) {
            const char *p = argv[++i];
            o.zero = strstr(p, "zero") != NULL;
            o.block = strstr(p, "block") != NULL;
            o.staged = strstr(p, "staged") != NULL;
            o.file = strstr(p, "file") != NULL;
        } else {
            fprintf(stderr, "bench-gpu-fetch: unknown or incomplete option '%s' (see the header "
                            "of bench/bench-gpu-fetch.cu)\n", a);
            return 2;
        }
    }
    if (o.steps < 1 || o.steps > 63 || o.frac <= 0 || o.frac > 1 || o.n_tokens < 1) {
        fprintf(stderr, "bench-gpu-fetch: --steps must be 1..63, --frac in (0, 1]\n");
        return 2;
    }
    if (sl_cuda_device_count() <= 0) {
        fprintf(stderr, "bench-gpu-fetch: no CUDA device (this benchmark needs a GPU)\n");
        return 1;
    }
    FILE *out = o.out ? fopen(o.out, "w") : stdout;
    if (!out) {
        fprintf(stderr, "bench-gpu-fetch: cannot write %s\n", o.out);
        return 1;
    }
    cuda_die("set device", cudaSetDevice(o.device));
    sl_device_info info;
    memset(&info, 0, sizeof info);
    (void)sl_cuda_device_info(o.device, &info);
    double limit = copy_engine_gbs();
    fprintf(out, "# KV fetch host -> device (bench-gpu-fetch)\n\n");
    fprintf(out, "Device %d (%s). Shape: 30 layers, 3 KV heads, head_dim 64, f16, block 16. "
                 "Selection %.1f%% per (layer, head). Copy-engine limit (256 MiB pinned "
                 "cudaMemcpyAsync H2D): **%.1f GB/s**. Median of %d steps of 30 layers.\n\n",
            o.device, info.name, 100 * o.frac, limit, o.steps);
    fprintf(out, "| tokens | selection | path | rows/step | useful MB | moved MB | ms/step | "
                 "useful GB/s | %% limit |\n|---|---|---|---|---|---|---|---|---|\n");
    const int32_t L = k_shape.n_layer, H = k_shape.n_head_kv;
    struct cache_row {
        int64_t n;
        const char *sel;
        result no, yes;
        int64_t slots;
    } cache_rows[16];
    int n_cache = 0;
    for (int ti = 0; ti < o.n_tokens; ti++) {
        const int64_t n = o.tokens[ti], M = (int64_t)(o.frac * (double)n);
        if (M < 1 || n % k_shape.block_tokens) {
            fprintf(stderr, "bench-gpu-fetch: %lld tokens: need a multiple of 16 with a selection\n",
                    (long long)n);
            return 2;
        }
        fprintf(stderr, "%lld tokens, %lld positions per head\n", (long long)n, (long long)M);
        uint8_t *bitmap = (uint8_t *)malloc((size_t)n);
        int32_t *d_idx, *d_cnt;
        uint8_t *d_k, *d_v;
        size_t out_bytes = (size_t)(H * M) * 128;
        cuda_die("alloc", cudaMalloc((void **)&d_idx, (size_t)(L * H * M) * 4));
        cuda_die("alloc", cudaMalloc((void **)&d_cnt, (size_t)(L * H) * 4));
        cuda_die("alloc", cudaMalloc((void **)&d_k, out_bytes));
        cuda_die("alloc", cudaMalloc((void **)&d_v, out_bytes));
        cudaStream_t st;
        cuda_die("stream", cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
        sl_kv_store_t host = (o.zero || o.block || o.staged) ? make_store(n, false, NULL) : NULL;
        char path[4096];
        snprintf(path, sizeof path, "%s/bench-gpu-fetch-%d.kv", o.dir, (int)getpid());
        bool do_file = o.file && n <= o.file_max;
        sl_kv_store_t file = do_file ? make_store(n, true, path) : NULL;
        const char *sels[2] = {"token", "block"};
        for (int sb = 0; sb < 2; sb++) {
            struct {
                const char *name;
                sl_kv_store_t s;
                sl_gpu_fetch_path path;
                bool on;
            } paths[4] = {{"zero copy", host, SL_GPU_FETCH_ZERO_COPY, o.zero},
                          {"block copy", host, SL_GPU_FETCH_BLOCK_COPY, o.block},
                          {"staged (host)", host, SL_GPU_FETCH_STAGED, o.staged},
                          {"file (staged)", file, SL_GPU_FETCH_STAGED, do_file}};
            for (int pi = 0; pi < 4; pi++) {
                if (!paths[pi].on) continue;
                sl_gpu_fetch_params p = sl_gpu_fetch_default_params();
                p.device = o.device;
                p.max_count = M;
                p.path = paths[pi].path;
                sl_gpu_fetch_t f;
                int rc = sl_gpu_fetch_create(paths[pi].s, &p, &f);
                if (rc) die("fetch create", rc);
                fprintf(stderr, "  %s selection, %s\n", sels[sb], paths[pi].name);
                result r = run_steps(f, n, M, sb == 1, 0.0, d_idx, d_cnt, d_k, d_v, st, bitmap);
                sl_gpu_fetch_stats fs;
                (void)sl_gpu_fetch_get_stats(f, &fs);
                double gbs = r.useful_mb / r.ms; /* MB/ms = GB/s */
                fprintf(out, "| %lld | %s | %s%s | %lld | %.1f | %.1f | %.2f | %.1f | %.0f%% |\n",
                        (long long)n, sels[sb], paths[pi].name,
                        fs.path != paths[pi].path ? " (fell back)" : "", (long long)(L * H * M),
                        r.useful_mb, r.moved_mb, r.ms, gbs, 100 * gbs / limit);
                fflush(out);
                sl_gpu_fetch_free(f);
            }
            if (!o.zero) continue;
            /* The cache at step-to-step overlap: slots for cache_mult x a step's blocks. */
            int64_t blocks_per_head = sb ? (M + 15) / 16 : M; /* token: at most one block per row */
            if (blocks_per_head > n / 16) blocks_per_head = n / 16;
            int64_t slots = (int64_t)(o.cache_mult * (double)(L * H * blocks_per_head));
            cache_row *cr = &cache_rows[n_cache++];
            cr->n = n;
            cr->sel = sels[sb];
            cr->slots = slots;
            for (int with = 0; with < 2; with++) {
                sl_gpu_fetch_params p = sl_gpu_fetch_default_params();
                p.device = o.device;
                p.max_count = M;
                p.cache_blocks = with ? slots : 0;
                sl_gpu_fetch_t f;
                int rc = sl_gpu_fetch_create(host, &p, &f);
                if (rc) die("fetch create (cache)", rc);
                fprintf(stderr, "  %s selection, %.0f%% overlap, %s cache\n", sels[sb],
                        100 * o.overlap, with ? "with" : "without");
                (with ? cr->yes : cr->no) =
                    run_steps(f, n, M, sb == 1, o.overlap, d_idx, d_cnt, d_k, d_v, st, bitmap);
                sl_gpu_fetch_free(f);
            }
        }
        if (host) sl_kv_store_free(host);
        if (file) {
            sl_kv_store_free(file);
            unlink(path);
        }
        cudaFree(d_idx);
        cudaFree(d_cnt);
        cudaFree(d_k);
        cudaFree(d_v);
        cudaStreamDestroy(st);
        free(bitmap);
    }
    if (n_cache) {
        fprintf(out, "\nVRAM cache, zero copy, %.0f%% of each selection kept from the previous "
                     "step (slots = %.1f x one step's blocks, 4-way):\n\n", 100 * o.overlap, o.cache_mult);
        fprintf(out, "| tokens | selection | slots | cache GiB | row hit | block hit | moved MB | "
                     "ms/step | ms/step no cache |\n|---|---|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < n_cache; i++) {
            cache_row *c = &cache_rows[i];
            fprintf(out, "| %lld | %s | %lld | %.2f | %.1f%% | %.1f%% | %.1f | %.2f | %.2f |\n",
                    (long long)c->n, c->sel, (long long)c->slots,
                    (double)c->slots * 4096 / (1 << 30), 100 * c->yes.row_hit,
                    100 * c->yes.block_hit, c->yes.moved_mb, c->yes.ms, c->no.ms);
        }
    }
    if (out != stdout) fclose(out);
    return 0;
}
