/* bench-kv-gather's shared parts (bench/kv-gather.h): timing and repetition, synthetic rows,
 * the CSV, the raw io_uring reader, selections and gathers. */
#include "bench/kv-gather.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "spotlight/error.h"

int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

struct timing summarize(double *t, int n) {
    struct timing r = {0, 0, 0, n};
    if (n == 0) return r;
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    r.med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    r.min = t[0];
    r.max = t[n - 1];
    return r;
}

bool more_reps(int done, double spent, double min_sec) {
    if (done >= MAX_REPS) return false;
    if (done < 3) return true;
    if (spent > opt.max_sec) return false;
    return done < opt.reps || spent < min_sec;
}

uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void *xalloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes ? bytes : 4096)) {
        fprintf(stderr, "bench-kv-gather: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

void *xalloc_huge(size_t bytes) {
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

void die(const char *what, int rc) {
    fprintf(stderr, "bench-kv-gather: %s: %s (%s)\n", what, sl_strerror(rc), sl_error_detail());
    exit(1);
}

int64_t row_bytes(void) { return (int64_t)g_shape.head_dim * 2; }

void fill_row(void *dst, int32_t layer, int64_t pos, int32_t head, int kv) {
    uint64_t s = ((uint64_t)layer << 48) ^ ((uint64_t)pos << 8) ^ ((uint64_t)head << 1) ^ (uint64_t)kv;
    uint64_t *d = dst;
    for (int64_t i = 0; i < row_bytes() / 8; i++) d[i] = splitmix(&s);
}

int64_t peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)ru.ru_maxrss * 1024;
}

/* ---- CSV ------------------------------------------------------------------------------------ */

void emit(const struct row *r) {
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

/* ---- limits: raw io_uring reader ---------------------------------------------------------- */

int raw_open(struct raw_reader *r, const char *path, int qd, size_t len, bool sqpoll) {
    memset(r, 0, sizeof *r);
    r->fd = open(path, O_RDONLY | O_DIRECT);
    if (r->fd < 0) return -errno;
    struct io_uring_params p = {0};
    if (sqpoll) p.flags |= IORING_SETUP_SQPOLL;
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

void raw_close(struct raw_reader *r) {
    io_uring_queue_exit(&r->ring);
    close(r->fd);
    munmap(r->buf, r->buf_bytes);
    free(r->free_slot);
}

double raw_read(struct raw_reader *r, const uint64_t *off, int64_t n) {
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

/* ---- selections --------------------------------------------------------------------------- */

int64_t draw_sel(enum pattern pat, int64_t n, int64_t bt, int64_t m, uint64_t *rng,
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

void draw_layer(struct sel *s, enum pattern pat, int64_t n, int64_t bt, int64_t m,
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

int64_t sel_rows(const struct sel *s) {
    int64_t r = 0;
    for (int h = 0; h < g_shape.n_head_kv; h++) r += s->n[h];
    return r;
}

int64_t sel_blocks(const struct sel *s, const struct sl_kv_layout *lay, int64_t bt,
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

char *g_kout, *g_vout;

int store_gather(sl_kv_store_t st, const struct sel *s) {
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

int64_t verify(const struct sel *s, const char *flat_k, const char *flat_v, int64_t n) {
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

void flat_gather(const struct sel *s, const char *fk, const char *fv, int64_t n) {
    int64_t rb = row_bytes(), H = g_shape.n_head_kv, o = 0;
    for (int h = 0; h < H; h++)
        for (int64_t i = 0; i < s->n[h]; i++, o++) {
            int64_t src = ((s->layer * n + s->idx[h][i]) * H + h) * rb;
            memcpy(g_kout + o * rb, fk + src, (size_t)rb);
            memcpy(g_vout + o * rb, fv + src, (size_t)rb);
        }
}

int32_t rep_layer(int r, int shift) { return (int32_t)((7 * r + 3 + shift) % g_shape.n_layer); }

uint64_t cfg_seed(int64_t n, int64_t bt, int pat, double frac, int64_t qd, int r, int salt) {
    uint64_t s = (uint64_t)n * 1000003u ^ (uint64_t)bt << 40 ^ (uint64_t)pat << 50 ^
                 (uint64_t)(frac * 1e6) << 20 ^ (uint64_t)qd << 56 ^ (uint64_t)r * 7919u ^
                 (uint64_t)salt << 60;
    return splitmix(&s);
}
