/* Question: how fast are gathers from the KV store, against the limits measured in the same run?
 *
 * One gather = one decode step's reads for one layer: the 3 KV heads' selected positions, one
 * descriptor per head, one submit, K rows (and V rows) of all heads contiguous in the output.
 * Shape: the default model's (30 layers, 3 KV heads, head_dim 64, f16 = 23,040 bytes/token),
 * synthetic random K/V, a store of N committed positions per block size.
 *
 * Selections (per head, m = frac * N distinct positions, sorted, drawn fresh for every rep):
 *   mix     cluster_frac of m as whole blocks (attention locality), the rest uniform random
 *   random  m uniform random positions (the most blocks per row: the upper bound on bytes)
 *   block   m / block_tokens whole blocks (the fewest blocks per row: the lower bound)
 * Consecutive reps use different layers (layer = 7r + 3 mod n_layer) so a small cache sees
 * cold misses.
 *
 * Limits, measured in this run:
 *   memcpy       256 MiB memcpy, bytes copied per second (the host tier's limit)
 *   flat-gather  a plain loop copying the same rows out of one flat (layer, pos, head, dim)
 *                array: the cost of the row-scattered pattern without the store
 *   raw-rand     our own io_uring reader (O_DIRECT, registered buffer and file, the buffer in
 *                huge pages like the store's cache, QD reads kept in flight) reading the blocks an equally drawn selection needs, at the same
 *                block size and QD, from the same store file (block offsets from the store's
 *                layout). It reads another layer's selection than the store's rep, so neither
 *                warms a cache for the other.
 *   raw-seq      1 MiB sequential O_DIRECT reads of the store file (context)
 * File tier: cold = ram_budget too small for the data set (fresh selections, rotating layers);
 * warm = the same gather repeated with a budget that holds it (hit rate reported).
 * Heads: per-KV-head selections (3 descriptors) against the union of the 3 heads' selections
 * read for every head (what an all-heads-same-positions layout would read).
 *
 * Output: long-format CSV (one row per measurement; see CSV_HEADER) to --out (appended; the
 * header is written when the file is empty), progress on stderr. bench/run-kv.sh turns it into
 * bench/results/kv-gather.md. Store files live in --dir and are deleted at the end (--keep
 * keeps and reuses them).
 *   bench-kv-gather [--tokens 65536] [--blocks 16,32,64] [--fracs 0.01,0.02,0.1]
 *       [--qd 1,8,32,64,128] [--patterns mix,random,block] [--tier host|file|both]
 *       [--dir DIR] [--out FILE.csv] [--reps 5] [--max-sec 4] [--cluster 0.5]
 *       [--budget BYTES] [--sqpoll] [--keep] [--no-extras] */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "storage/kv-format.h"
#include "bench/bench-util.h"

#define CSV_HEADER                                                                               \
    "kind,tier,tokens,block_tokens,pattern,frac,qd,cache,rows,useful_bytes,need_bytes,"          \
    "disk_bytes,reps,us_med,us_min,us_max,useful_gbs,need_gbs,disk_gbs,limit_gbs,ratio,"         \
    "hit_rate,ram_bytes,ram_budget,peak_rss,note\n"
#define MAX_LIST 16
#define MAX_REPS 400

enum pattern { PAT_MIX, PAT_RANDOM, PAT_BLOCK, PAT_N };
static const char *const k_pat_name[PAT_N] = {"mix", "random", "block"};

static struct {
    int64_t tokens[MAX_LIST];
    int n_tokens;
    int64_t blocks[MAX_LIST];
    int n_blocks;
    double fracs[MAX_LIST];
    int n_fracs;
    int64_t qds[MAX_LIST];
    int n_qds;
    bool pat[PAT_N];
    bool host, file, sqpoll, keep, extras;
    const char *dir, *out;
    int reps;
    double max_sec, cluster;
    int64_t budget; /* cold ram_budget; 0: computed */
} opt;

static FILE *g_csv;
static struct sl_kv_shape g_shape = {30, 3, 64, SL_KV_DTYPE_F16, 16};

/* ---- small helpers ------------------------------------------------------------------------ */


static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

struct timing {
    double med, min, max;
    int n;
};

static struct timing summarize(double *t, int n) {
    struct timing r = {0, 0, 0, n};
    if (n == 0) return r;
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    r.med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    r.min = t[0];
    r.max = t[n - 1];
    return r;
}

/* Keeps repeating until --reps are done (and at least min_sec spent, for sub-millisecond
 * work); stops early past --max-sec once 3 are done. */
static bool more_reps(int done, double spent, double min_sec) {
    if (done >= MAX_REPS) return false;
    if (done < 3) return true;
    if (spent > opt.max_sec) return false;
    return done < opt.reps || spent < min_sec;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void *xalloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes ? bytes : 4096)) {
        fprintf(stderr, "bench-kv-gather: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

#define HUGE_BYTES ((size_t)2 << 20)

/* bytes (a multiple of 2 MiB), 2 MiB-aligned, THP advised; freed with munmap. */
static void *xalloc_huge(size_t bytes) {
    char *p = mmap(NULL, bytes + HUGE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "bench-kv-gather: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    char *a = (char *)(((uintptr_t)p + HUGE_BYTES - 1) & ~(uintptr_t)(HUGE_BYTES - 1));
    if (a > p) munmap(p, (size_t)(a - p));
    munmap(a + bytes, (size_t)(p + HUGE_BYTES - a));
    (void)madvise(a, bytes, MADV_HUGEPAGE); /* advisory: THP may be off */
    return a;
}

static void die(const char *what, int rc) {
    fprintf(stderr, "bench-kv-gather: %s: %s (%s)\n", what, sl_strerror(rc), sl_error_detail());
    exit(1);
}

static int64_t row_bytes(void) { return (int64_t)g_shape.head_dim * 2; }

/* Synthetic K/V: the row of (layer, pos, head, k or v) is a pure function of those, so any
 * gathered row can be checked without keeping the data. */
static void fill_row(void *dst, int32_t layer, int64_t pos, int32_t head, int kv) {
    uint64_t s = ((uint64_t)layer << 48) ^ ((uint64_t)pos << 8) ^ ((uint64_t)head << 1) ^ (uint64_t)kv;
    uint64_t *d = dst;
    for (int64_t i = 0; i < row_bytes() / 8; i++) d[i] = splitmix(&s);
}

static int64_t peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)ru.ru_maxrss * 1024;
}

/* ---- CSV ------------------------------------------------------------------------------------ */

struct row {
    const char *kind, *tier, *pattern, *cache, *note;
    int64_t tokens, block_tokens, qd;
    double frac;
    double rows, useful_bytes, need_bytes, disk_bytes; /* per gather (means over reps) */
    struct timing t;
    double limit_gbs, ratio, hit_rate;
    int64_t ram_bytes, ram_budget;
};

static void emit(const struct row *r) {
    double s = r->t.med > 0 ? r->t.med : NAN;
    fprintf(g_csv, "%s,%s,%lld,%lld,%s,%g,%lld,%s,%.0f,%.0f,%.0f,%.0f,%d,%.1f,%.1f,%.1f,%.3f,%.3f,%.3f,%.3f,%.3f,%.4f,%lld,%lld,%lld,%s\n",
            r->kind, r->tier ? r->tier : "", (long long)r->tokens, (long long)r->block_tokens,
            r->pattern ? r->pattern : "", r->frac, (long long)r->qd, r->cache ? r->cache : "",
            r->rows, r->useful_bytes, r->need_bytes, r->disk_bytes, r->t.n, r->t.med * 1e6,
            r->t.min * 1e6, r->t.max * 1e6, r->useful_bytes / s / 1e9, r->need_bytes / s / 1e9,
            r->disk_bytes / s / 1e9, r->limit_gbs, r->ratio, r->hit_rate,
            (long long)r->ram_bytes, (long long)r->ram_budget, (long long)peak_rss_bytes(),
            r->note ? r->note : "");
    fflush(g_csv);
}

/* ---- limits: memcpy --------------------------------------------------------------------- */

static double memcpy_gbs(void) {
    size_t n = 256u << 20;
    char *a = xalloc(n), *b = xalloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double t[7];
    memcpy(b, a, n); /* warm-up */
    for (int r = 0; r < 7; r++) {
        double t0 = bench_now();
        memcpy(b, a, n);
        t[r] = bench_now() - t0;
    }
    struct timing tm = summarize(t, 7);
    free(a);
    free(b);
    struct row r = {.kind = "memcpy", .tier = "host", .useful_bytes = (double)n, .t = tm,
                    .note = "256 MiB; GB/s = bytes copied per second"};
    r.limit_gbs = (double)n / tm.med / 1e9;
    emit(&r);
    fprintf(stderr, "memcpy: %.2f GB/s (bytes copied per second)\n", r.limit_gbs);
    return r.limit_gbs;
}

/* ---- limits: raw io_uring reader ---------------------------------------------------------- */

struct raw_reader {
    struct io_uring ring;
    int fd, qd;
    size_t len;
    char *buf; /* qd slots of len bytes, registered */
    size_t buf_bytes;
    int *free_slot;
};

static int raw_open(struct raw_reader *r, const char *path, int qd, size_t len) {
    memset(r, 0, sizeof *r);
    r->fd = open(path, O_RDONLY | O_DIRECT);
    if (r->fd < 0) return -errno;
    struct io_uring_params p = {0};
    if (opt.sqpoll) p.flags |= IORING_SETUP_SQPOLL;
    int rc = io_uring_queue_init_params((unsigned)qd, &r->ring, &p);
    if (rc) {
        close(r->fd);
        return rc;
    }
    r->qd = qd;
    r->len = len;
    /* Huge pages when THP allows, like the store's cache: a read then lands in physically
     * contiguous memory, one DMA segment instead of one per 4 KiB page (on this virtio disk
     * that alone changes 16 KiB random-read throughput by ~1.5x). */
    r->buf_bytes = ((size_t)qd * len + HUGE_BYTES - 1) / HUGE_BYTES * HUGE_BYTES;
    r->buf = xalloc_huge(r->buf_bytes);
    memset(r->buf, 0, r->buf_bytes);
    r->free_slot = malloc(sizeof(int) * (size_t)qd);
    struct iovec iov = {r->buf, (size_t)qd * len};
    if ((rc = io_uring_register_buffers(&r->ring, &iov, 1)) ||
        (rc = io_uring_register_files(&r->ring, &r->fd, 1))) {
        io_uring_queue_exit(&r->ring);
        close(r->fd);
        munmap(r->buf, r->buf_bytes);
        free(r->free_slot);
        return rc;
    }
    return 0;
}

static void raw_close(struct raw_reader *r) {
    io_uring_queue_exit(&r->ring);
    close(r->fd);
    munmap(r->buf, r->buf_bytes);
    free(r->free_slot);
}

/* Reads len bytes at each offset, keeping qd reads in flight; seconds, or < 0 on an error. */
static double raw_read(struct raw_reader *r, const uint64_t *off, int64_t n) {
    int n_free = r->qd;
    for (int i = 0; i < r->qd; i++) r->free_slot[i] = i;
    int64_t next = 0, done = 0;
    double t0 = bench_now();
    while (done < n) {
        while (n_free > 0 && next < n) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
            if (!sqe) break;
            int slot = r->free_slot[--n_free];
            io_uring_prep_read_fixed(sqe, 0, r->buf + (size_t)slot * r->len, (unsigned)r->len,
                                     off[next++], 0);
            sqe->flags |= IOSQE_FIXED_FILE;
            io_uring_sqe_set_data64(sqe, (uint64_t)slot);
        }
        int rc = io_uring_submit_and_wait(&r->ring, 1);
        if (rc < 0 && rc != -EINTR) return rc;
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&r->ring, head, cqe) {
            if (cqe->res != (int)r->len) {
                fprintf(stderr, "bench-kv-gather: raw read: %s\n",
                        cqe->res < 0 ? strerror(-cqe->res) : "short read");
                return -1;
            }
            r->free_slot[n_free++] = (int)io_uring_cqe_get_data64(cqe);
            seen++;
        }
        io_uring_cq_advance(&r->ring, seen);
        done += seen;
    }
    return bench_now() - t0;
}

/* 1 MiB sequential reads of up to 2 GiB of the data region, QD 8. */
static void raw_seq(const char *path, const struct sl_kv_layout *lay, int64_t tokens, int64_t bt) {
    struct raw_reader r;
    size_t len = 1u << 20;
    if (raw_open(&r, path, 8, len)) return;
    int64_t span = lay->file_size - lay->data_off;
    if (span > (INT64_C(2) << 30)) span = INT64_C(2) << 30;
    int64_t n = span / (int64_t)len;
    uint64_t *off = malloc(sizeof *off * (size_t)n);
    for (int64_t i = 0; i < n; i++) off[i] = (uint64_t)(lay->data_off + i * (int64_t)len);
    double t[3];
    int k = 0;
    for (; k < 3; k++)
        if ((t[k] = raw_read(&r, off, n)) < 0) break;
    if (k == 3) {
        struct row row = {.kind = "raw-seq", .tier = "file", .tokens = tokens, .block_tokens = bt,
                          .qd = 8, .need_bytes = (double)n * (double)len,
                          .disk_bytes = (double)n * (double)len, .t = summarize(t, 3),
                          .note = "1 MiB O_DIRECT reads"};
        row.limit_gbs = row.need_bytes / row.t.med / 1e9;
        emit(&row);
        fprintf(stderr, "  raw-seq 1 MiB QD8: %.2f GB/s\n", row.limit_gbs);
    }
    free(off);
    raw_close(&r);
}

/* ---- selections --------------------------------------------------------------------------- */

/* Draws one head's selection of about m positions out of [0, n) into out (sorted); returns the
 * count. mark: n zero bytes, left zeroed. */
static int64_t draw_sel(enum pattern pat, int64_t n, int64_t bt, int64_t m, uint64_t *rng,
                        uint8_t *mark, int64_t *out) {
    int64_t n_blk = n / bt, want_blk = 0, got = 0;
    if (pat == PAT_BLOCK) want_blk = (m + bt / 2) / bt > 0 ? (m + bt / 2) / bt : 1;
    if (pat == PAT_MIX) want_blk = (int64_t)(opt.cluster * (double)m) / bt;
    if (want_blk > n_blk) want_blk = n_blk;
    for (int64_t b = 0; b < want_blk;) {
        int64_t blk = (int64_t)(splitmix(rng) % (uint64_t)n_blk);
        if (mark[blk * bt]) continue;
        memset(mark + blk * bt, 1, (size_t)bt);
        got += bt;
        b++;
    }
    if (pat != PAT_BLOCK)
        while (got < m) {
            int64_t p = (int64_t)(splitmix(rng) % (uint64_t)n);
            if (!mark[p]) mark[p] = 1, got++;
        }
    int64_t k = 0;
    for (int64_t p = 0; p < n; p++)
        if (mark[p]) out[k++] = p, mark[p] = 0;
    return k;
}

/* One layer's selection: per head, or (union) every head gets the union of the heads'. */
struct sel {
    int64_t *idx[8];
    int64_t n[8];
    int32_t layer;
};

static void draw_layer(struct sel *s, enum pattern pat, int64_t n, int64_t bt, int64_t m,
                       uint64_t seed, int32_t layer, bool uni, uint8_t *mark) {
    uint64_t rng = seed;
    s->layer = layer;
    for (int h = 0; h < g_shape.n_head_kv; h++)
        s->n[h] = draw_sel(pat, n, bt, m, &rng, mark, s->idx[h]);
    if (!uni) return;
    for (int h = 0; h < g_shape.n_head_kv; h++)
        for (int64_t i = 0; i < s->n[h]; i++) mark[s->idx[h][i]] = 1;
    int64_t k = 0;
    for (int64_t p = 0; p < n; p++)
        if (mark[p]) s->idx[0][k++] = p, mark[p] = 0;
    for (int h = 0; h < g_shape.n_head_kv; h++) {
        if (h) memcpy(s->idx[h], s->idx[0], sizeof(int64_t) * (size_t)k);
        s->n[h] = k;
    }
}

static int64_t sel_rows(const struct sel *s) {
    int64_t r = 0;
    for (int h = 0; h < g_shape.n_head_kv; h++) r += s->n[h];
    return r;
}

/* File offsets of the distinct blocks the selection touches, in descriptor order (head by
 * head, ascending: the request stream the store is handed) or sorted by offset across heads
 * (then the block layer may merge one block's heads, which lie side by side in the file, into
 * one larger request); returns the count. */
static int64_t sel_blocks(const struct sel *s, const struct sl_kv_layout *lay, int64_t bt,
                          uint64_t *off, bool sorted) {
    int64_t k = 0;
    for (int h = 0; h < g_shape.n_head_kv; h++) {
        int64_t last = -1;
        for (int64_t i = 0; i < s->n[h]; i++) {
            int64_t b = s->idx[h][i] / bt;
            if (b == last) continue;
            off[k++] = (uint64_t)sl_kv_layout_block_offset(lay, s->layer, b, h);
            last = b;
        }
    }
    if (sorted) qsort(off, (size_t)k, sizeof *off, cmp_u64);
    return k;
}

/* ---- gathers ------------------------------------------------------------------------------ */

static char *g_kout, *g_vout; /* output rows of all heads, contiguous */

static int store_gather(sl_kv_store_t st, const struct sel *s) {
    struct sl_kv_gather g[8];
    int64_t o = 0;
    for (int h = 0; h < g_shape.n_head_kv; h++) {
        g[h] = (struct sl_kv_gather){.layer = s->layer, .head = h, .idx = s->idx[h], .n = s->n[h],
                                     .k_out = g_kout + o * row_bytes(),
                                     .v_out = g_vout + o * row_bytes()};
        o += s->n[h];
    }
    return sl_kv_store_gather(st, g, g_shape.n_head_kv);
}

/* Checks every gathered row against the generator (flat == NULL) or the flat arrays. */
static int64_t verify(const struct sel *s, const char *flat_k, const char *flat_v, int64_t n) {
    char want[2048];
    int64_t bad = 0, o = 0, rb = row_bytes(), H = g_shape.n_head_kv;
    for (int h = 0; h < H; h++)
        for (int64_t i = 0; i < s->n[h]; i++, o++)
            for (int kv = 0; kv < 2; kv++) {
                const char *got = (kv ? g_vout : g_kout) + o * rb;
                if (flat_k) {
                    const char *f = kv ? flat_v : flat_k;
                    memcpy(want, f + ((s->layer * n + s->idx[h][i]) * H + h) * rb, (size_t)rb);
                } else {
                    fill_row(want, s->layer, s->idx[h][i], h, kv);
                }
                bad += memcmp(got, want, (size_t)rb) != 0;
            }
    return bad;
}

/* The plain-loop limit: the same rows out of flat (layer, pos, head, dim) K and V arrays. */
static void flat_gather(const struct sel *s, const char *fk, const char *fv, int64_t n) {
    int64_t rb = row_bytes(), H = g_shape.n_head_kv, o = 0;
    for (int h = 0; h < H; h++)
        for (int64_t i = 0; i < s->n[h]; i++, o++) {
            int64_t src = ((s->layer * n + s->idx[h][i]) * H + h) * rb;
            memcpy(g_kout + o * rb, fk + src, (size_t)rb);
            memcpy(g_vout + o * rb, fv + src, (size_t)rb);
        }
}

static int32_t rep_layer(int r, int shift) { return (int32_t)((7 * r + 3 + shift) % g_shape.n_layer); }

static uint64_t cfg_seed(int64_t n, int64_t bt, int pat, double frac, int64_t qd, int r, int salt) {
    uint64_t s = (uint64_t)n * 1000003u ^ (uint64_t)bt << 40 ^ (uint64_t)pat << 50 ^
                 (uint64_t)(frac * 1e6) << 20 ^ (uint64_t)qd << 56 ^ (uint64_t)r * 7919u ^
                 (uint64_t)salt << 60;
    return splitmix(&s);
}

/* ---- host tier ---------------------------------------------------------------------------- */

static void run_host(int64_t n, double mcpy, struct sel *s, uint8_t *mark) {
    int64_t H = g_shape.n_head_kv, rb = row_bytes(), L = g_shape.n_layer;
    size_t flat_bytes = (size_t)(L * n * H * rb);
    fprintf(stderr, "host tier, %lld tokens: filling 2 x %.2f GB flat arrays\n", (long long)n,
            (double)flat_bytes / 1e9);
    char *fk = xalloc(flat_bytes), *fv = xalloc(flat_bytes);
    for (int32_t l = 0; l < L; l++)
        for (int64_t p = 0; p < n; p++)
            for (int32_t h = 0; h < H; h++) {
                fill_row(fk + ((l * n + p) * H + h) * rb, l, p, h, 0);
                fill_row(fv + ((l * n + p) * H + h) * rb, l, p, h, 1);
            }
    for (int bi = 0; bi < opt.n_blocks; bi++) {
        int64_t bt = opt.blocks[bi];
        if (bi) mcpy = memcpy_gbs(); /* the machine is shared: the limit next to its runs */
        struct sl_kv_shape shape = g_shape;
        shape.block_tokens = (int32_t)bt;
        struct sl_kv_store_params p = sl_kv_store_default_params();
        p.tier = SL_KV_TIER_HOST;
        p.capacity = n;
        sl_kv_store_t st;
        int rc = sl_kv_store_create(&shape, &p, &st);
        if (rc) die("host create", rc);
        double t0 = bench_now();
        const int64_t chunk = 4096;
        for (int64_t p0 = 0; p0 < n; p0 += chunk) {
            int64_t c = n - p0 < chunk ? n - p0 : chunk;
            for (int32_t l = 0; l < L; l++)
                if ((rc = sl_kv_store_append(st, l, c, fk + (l * n + p0) * H * rb,
                                             fv + (l * n + p0) * H * rb)))
                    die("host append", rc);
            if ((rc = sl_kv_store_commit(st, c, NULL))) die("host commit", rc);
        }
        double t_app = bench_now() - t0;
        struct sl_kv_store_stats stt;
        sl_kv_store_get_stats(st, &stt);
        fprintf(stderr, "  block %lld: appended %.2f GB in %.2f s (%.2f GB/s); store RAM %.2f GB\n",
                (long long)bt, (double)(n * L * H * rb * 2) / 1e9, t_app,
                (double)(n * L * H * rb * 2) / t_app / 1e9, (double)stt.ram_bytes / 1e9);
        struct row ar = {.kind = "append", .tier = "host", .tokens = n, .block_tokens = bt,
                         .useful_bytes = (double)(n * L * H * rb * 2),
                         .t = {t_app, t_app, t_app, 1}, .ram_bytes = stt.ram_bytes,
                         .note = "append + commit in chunks of 4096 positions"};
        emit(&ar);
        for (int pi = 0; pi < PAT_N; pi++) {
            if (!opt.pat[pi]) continue;
            for (int fi = 0; fi < opt.n_fracs; fi++) {
                int64_t m = (int64_t)(opt.fracs[fi] * (double)n);
                if (m < 1) m = 1;
                for (int uni = 0; uni < (pi == PAT_MIX && opt.extras ? 2 : 1); uni++) {
                    double ts[MAX_REPS], tf[MAX_REPS], spent = 0, rows = 0;
                    int k = 0;
                    int64_t bad = 0;
                    for (int r = -1; more_reps(k, spent, 0.3); r++) {
                        draw_layer(s, pi, n, bt, m, cfg_seed(n, bt, pi, opt.fracs[fi], 0, r, uni),
                                   rep_layer(r + 1, 0), uni, mark);
                        double a = bench_now();
                        if ((rc = store_gather(st, s))) die("host gather", rc);
                        double b = bench_now();
                        if (r < 0) bad += verify(s, fk, fv, n);
                        double c0 = bench_now();
                        flat_gather(s, fk, fv, n);
                        double c1 = bench_now();
                        if (r < 0) continue;
                        ts[k] = b - a;
                        tf[k] = c1 - c0;
                        rows += (double)sel_rows(s);
                        spent += (b - a) + (c1 - c0);
                        k++;
                    }
                    rows /= k;
                    struct row g = {.kind = uni ? "heads-union" : "gather", .tier = "host",
                                    .tokens = n, .block_tokens = bt, .pattern = k_pat_name[pi],
                                    .frac = opt.fracs[fi], .rows = rows,
                                    .useful_bytes = rows * 2 * (double)rb, .t = summarize(ts, k),
                                    .limit_gbs = mcpy, .ram_bytes = stt.ram_bytes,
                                    .note = bad ? "WRONG ROWS" : ""};
                    g.ratio = g.useful_bytes / g.t.med / 1e9 / mcpy;
                    struct row f = g;
                    f.kind = uni ? "flat-gather-union" : "flat-gather";
                    f.t = summarize(tf, k);
                    f.ratio = f.useful_bytes / f.t.med / 1e9 / mcpy;
                    f.note = "";
                    emit(&g);
                    emit(&f);
                    fprintf(stderr, "  host bt%lld %-6s %4.1f%%%s: %8.1f us (%.2f GB/s, %.0f%% of memcpy; flat loop %.2f GB/s)%s\n",
                            (long long)bt, k_pat_name[pi], opt.fracs[fi] * 100, uni ? " union" : "",
                            g.t.med * 1e6, g.useful_bytes / g.t.med / 1e9, 100 * g.ratio,
                            f.useful_bytes / f.t.med / 1e9, bad ? " WRONG ROWS" : "");
                    if (bad) fprintf(stderr, "  %lld rows differ from the data appended\n", (long long)bad);
                }
            }
        }
        sl_kv_store_free(st);
    }
    free(fk);
    free(fv);
}

/* ---- file tier ---------------------------------------------------------------------------- */

static void build_file(const char *path, const struct sl_kv_shape *shape, int64_t n) {
    struct stat sb;
    if (opt.keep && stat(path, &sb) == 0) {
        struct sl_kv_store_params p = sl_kv_store_default_params();
        p.tier = SL_KV_TIER_FILE;
        p.path = path;
        sl_kv_store_t st;
        if (sl_kv_store_open(shape, &p, &st) == 0 && sl_kv_store_n_tokens(st) == n) {
            sl_kv_store_free(st);
            fprintf(stderr, "  reusing %s\n", path);
            return;
        }
        sl_kv_store_free(st);
    }
    struct sl_kv_store_params p = sl_kv_store_default_params();
    p.tier = SL_KV_TIER_FILE;
    p.capacity = n;
    p.path = path;
    p.overwrite = true;
    p.max_pending = 4096; /* the append chunk below */
    struct sl_kv_layout lay;
    int rc = sl_kv_layout_compute(shape, n, &lay);
    if (rc) die("layout", rc);
    /* the fixed parts (checksums, tags, a pending window of 4096 positions) + 32 MiB */
    p.ram_budget = lay.crc_bytes + lay.tag_bytes + (INT64_C(32) << 20) +
                   (int64_t)shape->n_layer * (4096 / shape->block_tokens + 2) * shape->n_head_kv *
                       lay.block_stride;
    sl_kv_store_t st;
    rc = sl_kv_store_create(shape, &p, &st);
    if (rc) die("file create", rc);
    int64_t H = shape->n_head_kv, rb = row_bytes(), L = shape->n_layer;
    const int64_t chunk = 4096;
    char *k = xalloc((size_t)(chunk * H * rb)), *v = xalloc((size_t)(chunk * H * rb));
    double t0 = bench_now(), t_last = t0, t_fill = 0;
    for (int64_t p0 = 0; p0 < n; p0 += chunk) {
        int64_t c = n - p0 < chunk ? n - p0 : chunk;
        for (int32_t l = 0; l < L; l++) {
            double a = bench_now();
            for (int64_t i = 0; i < c; i++)
                for (int32_t h = 0; h < H; h++) {
                    fill_row(k + (i * H + h) * rb, l, p0 + i, h, 0);
                    fill_row(v + (i * H + h) * rb, l, p0 + i, h, 1);
                }
            t_fill += bench_now() - a;
            if ((rc = sl_kv_store_append(st, l, c, k, v))) die("file append", rc);
        }
        if ((rc = sl_kv_store_commit(st, c, NULL))) die("file commit", rc);
        if (bench_now() - t_last > 2 || p0 + c == n) {
            t_last = bench_now();
            fprintf(stderr, "\r  writing %s: %lld / %lld positions, %.0f s", path,
                    (long long)(p0 + c), (long long)n, t_last - t0);
        }
    }
    double t1 = bench_now();
    if ((rc = sl_kv_store_sync(st))) die("file sync", rc);
    double t_all = bench_now() - t0;
    struct sl_kv_store_stats stt;
    sl_kv_store_get_stats(st, &stt);
    fprintf(stderr, "\n  wrote %.2f GB in %.1f s (%.1f s generating data, sync %.1f s): %.0f MB/s; store RAM %.1f MB of budget %.1f MB\n",
            (double)stt.bytes_written / 1e9, t_all, t_fill, bench_now() - t1,
            (double)stt.bytes_written / (t_all - t_fill) / 1e6, (double)stt.ram_bytes / 1e6,
            (double)stt.ram_budget / 1e6);
    struct row ar = {.kind = "append", .tier = "file", .tokens = n,
                     .block_tokens = shape->block_tokens,
                     .useful_bytes = (double)(n * L * H * rb * 2),
                     .disk_bytes = (double)stt.bytes_written,
                     .t = {t_all - t_fill, t_all - t_fill, t_all - t_fill, 1},
                     .ram_bytes = stt.ram_bytes, .ram_budget = stt.ram_budget,
                     .note = "append + commit in chunks of 4096 positions + sync (data generation excluded)"};
    emit(&ar);
    if ((rc = sl_kv_store_close(st))) die("file close", rc);
    sl_kv_store_free(st);
    free(k);
    free(v);
}

static sl_kv_store_t open_file(const char *path, const struct sl_kv_shape *shape, int64_t qd,
                               int64_t budget) {
    struct sl_kv_store_params p = sl_kv_store_default_params();
    p.tier = SL_KV_TIER_FILE;
    p.path = path;
    p.queue_depth = (int32_t)qd;
    p.ram_budget = budget;
    p.sqpoll = opt.sqpoll;
    sl_kv_store_t st;
    int rc = sl_kv_store_open(shape, &p, &st);
    if (rc) die("file open", rc);
    return st;
}

/* The smallest budget the store accepts at or above want (it needs its fixed parts). */
static int64_t cold_budget(const char *path, const struct sl_kv_shape *shape,
                           const struct sl_kv_layout *lay) {
    int64_t want = opt.budget;
    if (!want) { /* the fixed parts (checksums, tags, the default pending window) + 16 MiB */
        int64_t max_pending = sl_kv_store_default_params().max_pending;
        int64_t win = (int64_t)shape->n_layer * (max_pending / shape->block_tokens + 2) *
                      shape->n_head_kv * lay->block_stride;
        want = lay->crc_bytes + lay->tag_bytes + win + (INT64_C(16) << 20);
    }
    for (int i = 0; i < 8; i++, want *= 2) {
        struct sl_kv_store_params p = sl_kv_store_default_params();
        p.tier = SL_KV_TIER_FILE;
        p.path = path;
        p.ram_budget = want;
        sl_kv_store_t st;
        int rc = sl_kv_store_open(shape, &p, &st);
        sl_kv_store_free(st);
        if (rc == 0) return want;
        fprintf(stderr, "  budget %.1f MB refused (%s); doubling\n", (double)want / 1e6, sl_strerror(rc));
    }
    die("no ram_budget accepted", SL_EINVAL);
    return 0;
}

struct file_cfg {
    const char *path;
    const struct sl_kv_layout *lay;
    int64_t n, bt, qd, m;
    int pat;
    double frac;
    uint64_t *off;
    uint8_t *mark;
    struct sel *s;
    bool sorted_too; /* also time raw reads sorted by offset across heads */
};

/* Cold: store gathers (fresh selections, rotating layers) interleaved with raw reads of
 * equally drawn selections of other layers. mode 0: per head, 1: union (no raw then). */
static void file_cold(const struct file_cfg *c, const struct sl_kv_shape *shape,
                      struct raw_reader *raw, int uni, int64_t budget, double *raw_gbs_out,
                      struct sl_kv_store_stats *peak) {
    /* A fresh open per configuration: nothing cached from the one before. */
    sl_kv_store_t st = open_file(c->path, shape, c->qd, budget);
    double ts[MAX_REPS], tr[MAX_REPS], tq[MAX_REPS], spent = 0, rows = 0, need = 0,
           raw_bytes = 0, rawq_bytes = 0;
    int k = 0;
    int64_t bad = 0, rc;
    sl_kv_store_reset_counters(st);
    struct sl_kv_store_stats a0, a1;
    for (int r = -1; more_reps(k, spent, 0.5); r++) {
        if (raw && !uni) {
            draw_layer(c->s, c->pat, c->n, c->bt, c->m, cfg_seed(c->n, c->bt, c->pat, c->frac, c->qd, r, 7),
                       rep_layer(r + 1, g_shape.n_layer / 2), false, c->mark);
            int64_t nb = sel_blocks(c->s, c->lay, c->bt, c->off, false);
            double t = raw_read(raw, c->off, nb);
            if (t < 0) die("raw read", SL_EIO);
            if (r >= 0) tr[k] = t, raw_bytes += (double)nb * (double)c->lay->block_stride;
            if (c->sorted_too) { /* a third layer: nothing read twice */
                draw_layer(c->s, c->pat, c->n, c->bt, c->m, cfg_seed(c->n, c->bt, c->pat, c->frac, c->qd, r, 9),
                           rep_layer(r + 1, g_shape.n_layer / 3), false, c->mark);
                nb = sel_blocks(c->s, c->lay, c->bt, c->off, true);
                if ((t = raw_read(raw, c->off, nb)) < 0) die("raw read", SL_EIO);
                if (r >= 0) tq[k] = t, rawq_bytes += (double)nb * (double)c->lay->block_stride;
            }
        }
        draw_layer(c->s, c->pat, c->n, c->bt, c->m, cfg_seed(c->n, c->bt, c->pat, c->frac, c->qd, r, uni),
                   rep_layer(r + 1, 0), uni, c->mark);
        int64_t nb = sel_blocks(c->s, c->lay, c->bt, c->off, false);
        if (r == 0) sl_kv_store_get_stats(st, &a0);
        double t0 = bench_now();
        if ((rc = store_gather(st, c->s))) die("file gather", (int)rc);
        double t1 = bench_now();
        if (r < 0) {
            bad += verify(c->s, NULL, NULL, 0);
            continue;
        }
        ts[k] = t1 - t0;
        rows += (double)sel_rows(c->s);
        need += (double)nb * (double)c->lay->block_stride;
        spent += (t1 - t0) + (raw && !uni ? tr[k] : 0) + (raw && !uni && c->sorted_too ? tq[k] : 0);
        k++;
    }
    sl_kv_store_get_stats(st, &a1);
    if (a1.ram_bytes >= peak->ram_bytes) *peak = a1;
    sl_kv_store_free(st);
    struct row g = {.kind = uni ? "heads-union" : "gather", .tier = "file", .tokens = c->n,
                    .block_tokens = c->bt, .pattern = k_pat_name[c->pat], .frac = c->frac,
                    .qd = c->qd, .cache = "cold", .rows = rows / k,
                    .useful_bytes = rows / k * 2 * (double)row_bytes(), .need_bytes = need / k,
                    .disk_bytes = (double)(a1.bytes_read - a0.bytes_read) / k,
                    .t = summarize(ts, k), .ram_bytes = a1.ram_bytes, .ram_budget = budget,
                    .note = bad ? "WRONG ROWS" : ""};
    int64_t hits = a1.cache_hits - a0.cache_hits, miss = a1.cache_misses - a0.cache_misses;
    g.hit_rate = hits + miss ? (double)hits / (double)(hits + miss) : 0;
    if (raw && !uni) {
        struct row rr = {.kind = "raw-rand", .tier = "file", .tokens = c->n, .block_tokens = c->bt,
                         .pattern = k_pat_name[c->pat], .frac = c->frac, .qd = c->qd,
                         .need_bytes = raw_bytes / k, .disk_bytes = raw_bytes / k,
                         .t = summarize(tr, k), .note = "own io_uring reader"};
        rr.limit_gbs = rr.need_bytes / rr.t.med / 1e9;
        *raw_gbs_out = rr.limit_gbs;
        emit(&rr);
        if (c->sorted_too) {
            rr.kind = "raw-rand-sorted";
            rr.need_bytes = rr.disk_bytes = rawq_bytes / k;
            rr.t = summarize(tq, k);
            rr.limit_gbs = rr.need_bytes / rr.t.med / 1e9;
            rr.note = "own io_uring reader; reads sorted by offset across heads";
            emit(&rr);
        }
    }
    g.limit_gbs = *raw_gbs_out;
    g.ratio = g.need_bytes / g.t.med / 1e9 / g.limit_gbs;
    emit(&g);
    fprintf(stderr, "  file bt%lld %-6s %4.1f%% QD%-3lld%s: %9.1f us, need %.2f MB -> %.3f GB/s (raw %.3f GB/s, %3.0f%%), disk %.2f MB, hits %.1f%%%s\n",
            (long long)c->bt, k_pat_name[c->pat], c->frac * 100, (long long)c->qd,
            uni ? " union" : "", g.t.med * 1e6, g.need_bytes / 1e6, g.need_bytes / g.t.med / 1e9,
            g.limit_gbs, 100 * g.ratio, g.disk_bytes / 1e6, 100 * g.hit_rate, bad ? " WRONG ROWS" : "");
}

/* Warm: one selection gathered repeatedly through a cache big enough to hold it. */
static void file_warm(const struct file_cfg *c, const struct sl_kv_shape *shape, int64_t cold_b,
                      double raw_gbs) {
    draw_layer(c->s, c->pat, c->n, c->bt, c->m, cfg_seed(c->n, c->bt, c->pat, c->frac, c->qd, 0, 3),
               rep_layer(0, 0), false, c->mark);
    int64_t nb = sel_blocks(c->s, c->lay, c->bt, c->off, false);
    int64_t budget = cold_b + 2 * nb * c->lay->block_stride + (INT64_C(64) << 20);
    sl_kv_store_t st = open_file(c->path, shape, c->qd, budget);
    double ts[MAX_REPS], spent = 0;
    int k = 0, rc;
    if ((rc = store_gather(st, c->s))) die("warm gather", rc); /* fills the cache */
    int64_t bad = verify(c->s, NULL, NULL, 0);
    sl_kv_store_reset_counters(st);
    for (; more_reps(k, spent, 0.3); k++) {
        double t0 = bench_now();
        if ((rc = store_gather(st, c->s))) die("warm gather", rc);
        ts[k] = bench_now() - t0;
        spent += ts[k];
    }
    struct sl_kv_store_stats a;
    sl_kv_store_get_stats(st, &a);
    double rows = (double)sel_rows(c->s);
    struct row g = {.kind = "gather", .tier = "file", .tokens = c->n, .block_tokens = c->bt,
                    .pattern = k_pat_name[c->pat], .frac = c->frac, .qd = c->qd, .cache = "warm",
                    .rows = rows, .useful_bytes = rows * 2 * (double)row_bytes(),
                    .need_bytes = (double)(nb * c->lay->block_stride),
                    .disk_bytes = (double)a.bytes_read / k, .t = summarize(ts, k),
                    .limit_gbs = raw_gbs, .ram_bytes = a.ram_bytes, .ram_budget = budget,
                    .note = bad ? "WRONG ROWS" : ""};
    g.ratio = g.need_bytes / g.t.med / 1e9 / raw_gbs;
    g.hit_rate = a.cache_hits + a.cache_misses
                     ? (double)a.cache_hits / (double)(a.cache_hits + a.cache_misses) : 0;
    emit(&g);
    fprintf(stderr, "  file bt%lld %-6s %4.1f%% QD%-3lld warm: %9.1f us (%.2f GB/s useful), hits %.1f%%, disk %.2f MB/gather%s\n",
            (long long)c->bt, k_pat_name[c->pat], c->frac * 100, (long long)c->qd, g.t.med * 1e6,
            g.useful_bytes / g.t.med / 1e9, 100 * g.hit_rate, g.disk_bytes / 1e6, bad ? " WRONG ROWS" : "");
    sl_kv_store_free(st);
}

static void run_file(int64_t n, const char *dir, struct sel *s, uint8_t *mark) {
    for (int bi = 0; bi < opt.n_blocks; bi++) {
        int64_t bt = opt.blocks[bi];
        struct sl_kv_shape shape = g_shape;
        shape.block_tokens = (int32_t)bt;
        struct sl_kv_layout lay;
        int rc = sl_kv_layout_compute(&shape, n, &lay);
        if (rc) die("layout", rc);
        char path[4096];
        snprintf(path, sizeof path, "%s/kv-%lld-b%lld.slkv", dir, (long long)n, (long long)bt);
        fprintf(stderr, "file tier, %lld tokens, block %lld (%lld KiB), %.2f GB\n", (long long)n,
                (long long)bt, (long long)(lay.block_stride >> 10), (double)lay.file_size / 1e9);
        build_file(path, &shape, n);
        raw_seq(path, &lay, n, bt);
        int64_t budget = cold_budget(path, &shape, &lay);
        int64_t max_m = (int64_t)(opt.fracs[opt.n_fracs - 1] * (double)n) + 1;
        for (int i = 0; i < opt.n_fracs; i++)
            if ((int64_t)(opt.fracs[i] * (double)n) + 1 > max_m) max_m = (int64_t)(opt.fracs[i] * (double)n) + 1;
        /* Block offsets of one gather: per head at most its rows (3 x max_m in the union
         * case) and at most every block. */
        int64_t per_head = g_shape.n_head_kv * max_m < n / bt ? g_shape.n_head_kv * max_m : n / bt;
        uint64_t *off = malloc(sizeof *off * (size_t)(g_shape.n_head_kv * (per_head + 1)));
        double raw_mix64[MAX_LIST] = {0}; /* raw GB/s of the mix pattern per frac at the extras' QD */
        int64_t qd_x = opt.qds[opt.n_qds - 1];
        for (int i = 0; i < opt.n_qds; i++)
            if (opt.qds[i] == 64) qd_x = 64;
        for (int qi = 0; qi < opt.n_qds; qi++) {
            int64_t qd = opt.qds[qi];
            struct sl_kv_store_stats stt = {0};
            struct raw_reader raw;
            if ((rc = raw_open(&raw, path, (int)qd, (size_t)lay.block_stride)))
                die("raw io_uring setup", rc);
            for (int pi = 0; pi < PAT_N; pi++) {
                if (!opt.pat[pi]) continue;
                for (int fi = 0; fi < opt.n_fracs; fi++) {
                    struct file_cfg c = {path, &lay, n, bt, qd, (int64_t)(opt.fracs[fi] * (double)n),
                                         pi, opt.fracs[fi], off, mark, s, qd == qd_x && opt.extras};
                    if (c.m < 1) c.m = 1;
                    double raw_gbs = 0;
                    file_cold(&c, &shape, &raw, 0, budget, &raw_gbs, &stt);
                    if (pi == PAT_MIX && qd == qd_x) raw_mix64[fi] = raw_gbs;
                    if (pi == PAT_MIX && qd == qd_x && opt.extras)
                        file_cold(&c, &shape, NULL, 1, budget, &raw_gbs, &stt);
                }
            }
            char note[160];
            snprintf(note, sizeof note, "store after the cold gathers (largest RAM seen): uring %d direct %d regbuf %d sqpoll %d cache_slots %lld",
                     stt.uring, stt.direct_io, stt.registered_buffers, stt.sqpoll, (long long)stt.cache_slots);
            struct row mem = {.kind = "mem", .tier = "file", .tokens = n, .block_tokens = bt, .qd = qd,
                              .cache = "cold", .ram_bytes = stt.ram_bytes, .ram_budget = stt.ram_budget,
                              .note = note};
            emit(&mem);
            fprintf(stderr, "  store RAM %.1f MB of budget %.1f MB (cache %lld blocks); peak RSS %.1f MB; uring %d direct %d regbuf %d sqpoll %d\n",
                    (double)stt.ram_bytes / 1e6, (double)stt.ram_budget / 1e6,
                    (long long)stt.cache_slots, (double)peak_rss_bytes() / 1e6, stt.uring,
                    stt.direct_io, stt.registered_buffers, stt.sqpoll);
            raw_close(&raw);
        }
        if (opt.extras && opt.pat[PAT_MIX])
            for (int fi = 0; fi < opt.n_fracs; fi++) {
                struct file_cfg c = {path, &lay, n, bt, qd_x, (int64_t)(opt.fracs[fi] * (double)n),
                                     PAT_MIX, opt.fracs[fi], off, mark, s, false};
                file_warm(&c, &shape, budget, raw_mix64[fi]);
            }
        free(off);
        if (!opt.keep) unlink(path);
    }
}

/* ---- main --------------------------------------------------------------------------------- */

static int parse_list(const char *s, int64_t *out) {
    int n = 0;
    while (*s && n < MAX_LIST) {
        char *e;
        double v = strtod(s, &e);
        if (e == s) break;
        if (*e == 'K' || *e == 'k') v *= 1024, e++;
        else if (*e == 'M' || *e == 'm') v *= 1048576, e++;
        out[n++] = (int64_t)v;
        s = *e == ',' ? e + 1 : e;
    }
    return n;
}

int main(int argc, char **argv) {
    opt.tokens[0] = 65536, opt.n_tokens = 1;
    opt.n_blocks = parse_list("16,32,64", opt.blocks);
    opt.fracs[0] = 0.01, opt.fracs[1] = 0.02, opt.fracs[2] = 0.1, opt.n_fracs = 3;
    opt.n_qds = parse_list("1,8,32,64,128", opt.qds);
    opt.pat[0] = opt.pat[1] = opt.pat[2] = true;
    opt.host = opt.file = opt.extras = true;
    opt.reps = 5;
    opt.max_sec = 4;
    opt.cluster = 0.5;
    opt.dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--sqpoll")) opt.sqpoll = true;
        else if (!strcmp(a, "--keep")) opt.keep = true;
        else if (!strcmp(a, "--no-extras")) opt.extras = false;
        else if (!v) goto usage;
        else if (++i, !strcmp(a, "--tokens")) opt.n_tokens = parse_list(v, opt.tokens);
        else if (!strcmp(a, "--blocks")) opt.n_blocks = parse_list(v, opt.blocks);
        else if (!strcmp(a, "--qd")) opt.n_qds = parse_list(v, opt.qds);
        else if (!strcmp(a, "--fracs")) {
            opt.n_fracs = 0;
            for (char *e; *v && opt.n_fracs < MAX_LIST; v = *e == ',' ? e + 1 : e) {
                opt.fracs[opt.n_fracs] = strtod(v, &e);
                if (e == v) break;
                if (*e == '%') opt.fracs[opt.n_fracs] /= 100, e++;
                opt.n_fracs++;
            }
        } else if (!strcmp(a, "--patterns")) {
            for (int p = 0; p < PAT_N; p++) opt.pat[p] = strstr(v, k_pat_name[p]) != NULL;
        } else if (!strcmp(a, "--tier")) {
            opt.host = !strcmp(v, "host") || !strcmp(v, "both");
            opt.file = !strcmp(v, "file") || !strcmp(v, "both");
        } else if (!strcmp(a, "--dir")) opt.dir = v;
        else if (!strcmp(a, "--out")) opt.out = v;
        else if (!strcmp(a, "--reps")) opt.reps = atoi(v);
        else if (!strcmp(a, "--max-sec")) opt.max_sec = atof(v);
        else if (!strcmp(a, "--cluster")) opt.cluster = atof(v);
        else if (!strcmp(a, "--budget")) opt.budget = strtoll(v, NULL, 10);
        else goto usage;
    }
    if (!opt.n_tokens || !opt.n_blocks || !opt.n_fracs || !opt.n_qds || (!opt.host && !opt.file)) goto usage;
    for (int i = 0; i < opt.n_tokens; i++) {
        int64_t big = 64; /* whole blocks of every size: no partial tail block */
        opt.tokens[i] = opt.tokens[i] / big * big;
        if (opt.tokens[i] < 4096) goto usage;
    }
    for (int i = 0; i < opt.n_blocks; i++)
        if (opt.blocks[i] < 4 || opt.blocks[i] > 64 || (opt.blocks[i] & (opt.blocks[i] - 1))) goto usage;

    g_csv = stdout;
    if (opt.out) {
        g_csv = fopen(opt.out, "a");
        if (!g_csv) {
            perror(opt.out);
            return 1;
        }
        if (ftell(g_csv) == 0) fputs(CSV_HEADER, g_csv);
    } else {
        fputs(CSV_HEADER, g_csv);
    }
    char dir[2048];
    if (opt.file) {
        snprintf(dir, sizeof dir, "%s/spotlight-kv-bench%s", opt.dir, opt.keep ? "" : ".XXXXXX");
        if (opt.keep ? (mkdir(dir, 0700) && errno != EEXIST) : !mkdtemp(dir)) {
            perror(dir);
            return 1;
        }
    }

    /* memcpy's 2 x 256 MiB would dominate a file-tier run's peak RSS: there it runs last. */
    double mcpy = opt.host ? memcpy_gbs() : 0;

    int64_t max_n = 0, max_m = 0;
    for (int i = 0; i < opt.n_tokens; i++) max_n = opt.tokens[i] > max_n ? opt.tokens[i] : max_n;
    double max_f = 0;
    for (int i = 0; i < opt.n_fracs; i++) max_f = opt.fracs[i] > max_f ? opt.fracs[i] : max_f;
    max_m = (int64_t)(max_f * (double)max_n) + 64;
    /* Outputs: the union of 3 heads' selections, read for each of the 3 heads. */
    int64_t H = g_shape.n_head_kv, max_rows = H * H * max_m;
    g_kout = xalloc((size_t)(max_rows * row_bytes()));
    g_vout = xalloc((size_t)(max_rows * row_bytes()));
    uint8_t *mark = calloc((size_t)max_n, 1);
    struct sel s;
    for (int h = 0; h < H; h++) s.idx[h] = malloc(sizeof(int64_t) * (size_t)(H * max_m));

    for (int i = 0; i < opt.n_tokens; i++) {
        if (opt.file) run_file(opt.tokens[i], dir, &s, mark);
        if (opt.host) run_host(opt.tokens[i], mcpy, &s, mark);
    }
    char note[160];
    snprintf(note, sizeof note, "ru_maxrss of this process; bench output buffers %.1f MB",
             2.0 * (double)(max_rows * row_bytes()) / 1e6);
    struct row mem = {.kind = "peak-rss", .tier = opt.host && opt.file ? "both" : opt.host ? "host" : "file",
                      .tokens = max_n, .ram_bytes = peak_rss_bytes(), .note = note};
    emit(&mem);
    if (!opt.host) memcpy_gbs();
    for (int h = 0; h < H; h++) free(s.idx[h]);
    free(mark);
    free(g_kout);
    free(g_vout);
    if (opt.file && !opt.keep) rmdir(dir);
    if (g_csv != stdout) fclose(g_csv);
    return 0;
usage:
    fprintf(stderr, "usage: bench-kv-gather [--tokens 65536,1M] [--blocks 16,32,64] [--fracs 0.01,0.02,0.1]\n"
                    "  [--qd 1,8,32,64,128] [--patterns mix,random,block] [--tier host|file|both]\n"
                    "  [--dir DIR] [--out FILE.csv] [--reps 5] [--max-sec 4] [--cluster 0.5]\n"
                    "  [--budget BYTES] [--sqpoll] [--keep] [--no-extras]\n");
    return 2;
}
