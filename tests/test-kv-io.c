/* The KV store's file I/O layer (storage/kv-io.c, kv-io-uring.c, kv-io-posix.c): whole
 * transfers, asynchronous reads at several queue depths with and without a registered buffer,
 * back-pressure, end of file, the fault injector, SQPOLL. Most tests run four times: io_uring
 * and pread engines, each with O_DIRECT and buffered. Files live in a mkdtemp directory under
 * $TMPDIR (or /tmp), removed after each test. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <liburing.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "storage/kv-io.h"

#define BLK 4096
#define FILE_BLOCKS 256 /* the pattern file: 1 MiB */
#define MAX_DEPTH 64

struct cfg {
    bool no_uring;
    bool direct;
};

static struct cfg g_cfgs[] = {
    {.no_uring = false, .direct = false},
    {.no_uring = false, .direct = true},
    {.no_uring = true, .direct = false},
    {.no_uring = true, .direct = true},
};

#define CFG_PARAMS(name)                                                                   \
    ParameterizedTestParameters(kv_io, name) {                                             \
        return cr_make_param_array(struct cfg, g_cfgs, sizeof g_cfgs / sizeof g_cfgs[0]); \
    }

static char g_dir[256];
static char g_path[320];

static void setup(void) {
    const char *t = getenv("TMPDIR");
    if (!t || !*t) t = "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/sl-kv-io-XXXXXX", t);
    cr_assert_not_null(mkdtemp(g_dir), "mkdtemp in %s: %s", t, strerror(errno));
    snprintf(g_path, sizeof g_path, "%s/kv.bin", g_dir);
}

static void teardown(void) {
    DIR *d = opendir(g_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(g_dir);
}

static bool uring_works(void) {
    struct io_uring r;
    if (io_uring_queue_init(4, &r, 0) < 0) return false;
    io_uring_queue_exit(&r);
    return true;
}

/* Whether the test directory's filesystem takes O_DIRECT at all. */
static bool dir_takes_direct(void) {
    char p[400];
    snprintf(p, sizeof p, "%s/probe", g_dir);
    int fd = open(p, O_RDWR | O_CREAT | O_DIRECT, 0644);
    if (fd < 0) {
        unlink(p);
        return false;
    }
    close(fd);
    unlink(p);
    return true;
}

static uint64_t pat(uint64_t off) { return (off / 8 + 1) * 0x9E3779B97F4A7C15ull; }

static void fill_pattern(void *buf, size_t len, uint64_t off) {
    uint64_t *w = buf;
    for (size_t i = 0; i < len / 8; i++) w[i] = pat(off + 8 * i);
}

static bool pattern_ok(const void *buf, size_t len, uint64_t off) {
    const uint64_t *w = buf;
    for (size_t i = 0; i < len / 8; i++)
        if (w[i] != pat(off + 8 * i)) return false;
    return true;
}

static void *abuf(size_t bytes) {
    void *p = aligned_alloc(BLK, bytes);
    cr_assert_not_null(p);
    return p;
}

static struct sl_kv_io_params params(const struct cfg *c, int depth,
                                     struct sl_kv_io_fault *fault) {
    struct sl_kv_io_params p = {
        .queue_depth = depth,
        .direct = c->direct,
        .no_uring = c->no_uring,
        .io_cpu = -1,
        .fault = fault,
    };
    return p;
}

static struct sl_kv_io *open_io(const struct cfg *c, int flags, int depth,
                                struct sl_kv_io_fault *fault) {
    struct sl_kv_io_params p = params(c, depth, fault);
    struct sl_kv_io *io = NULL;
    int rc = sl_kv_io_open(g_path, flags, &p, &io);
    cr_assert_eq(rc, 0, "open: %s (%s)", sl_strerror(rc), sl_error_detail());
    cr_assert_not_null(io);
    return io;
}

/* Writes blocks 0..n-1 of the pattern with pwrite_all through its own handle. */
static void make_file(const struct cfg *c, int blocks) {
    struct sl_kv_io *io = open_io(c, O_RDWR | O_CREAT | O_TRUNC, 1, NULL);
    size_t chunk = 16 * BLK;
    uint8_t *buf = abuf(chunk);
    for (size_t off = 0; off < (size_t)blocks * BLK; off += chunk) {
        size_t n = (size_t)blocks * BLK - off < chunk ? (size_t)blocks * BLK - off : chunk;
        fill_pattern(buf, n, off);
        int rc = sl_kv_io_pwrite_all(io, buf, n, off);
        cr_assert_eq(rc, 0, "pwrite_all: %s (%s)", sl_strerror(rc), sl_error_detail());
    }
    cr_assert_eq(sl_kv_io_datasync(io), 0);
    cr_assert_eq(sl_kv_io_size(io), (int64_t)blocks * BLK);
    free(buf);
    sl_kv_io_close(io);
}

/* total random 4 KiB reads with up to depth in flight, into slots of mem; each tag carries
 * the slot and block so completions are checked against the pattern in any order. */
static void random_reads(struct sl_kv_io *io, int depth, int total, uint8_t *mem,
                         unsigned seed) {
    int free_slots[MAX_DEPTH], nfree = 0;
    uint64_t block_of[MAX_DEPTH];
    for (int s = depth - 1; s >= 0; s--) free_slots[nfree++] = s;
    memset(mem, 0xAA, (size_t)depth * BLK);
    struct sl_kv_io_done out[MAX_DEPTH];
    int issued = 0, done = 0;
    while (done < total) {
        while (issued < total && nfree > 0) {
            int s = free_slots[--nfree];
            uint64_t blk = (uint64_t)rand_r(&seed) % FILE_BLOCKS;
            block_of[s] = blk;
            int rc = sl_kv_io_read_async(io, mem + (size_t)s * BLK, BLK, blk * BLK,
                                         (blk << 16) | (uint64_t)s);
            cr_assert_eq(rc, 0, "read_async: %s (%s)", sl_strerror(rc), sl_error_detail());
            issued++;
        }
        if (issued < total) cr_assert_eq(sl_kv_io_read_async(io, mem, BLK, 0, 0), -EBUSY);
        cr_assert_eq(sl_kv_io_in_flight(io), issued - done);
        cr_assert_eq(sl_kv_io_flush(io), 0);
        int n = sl_kv_io_reap(io, out, MAX_DEPTH, true);
        cr_assert_gt(n, 0, "reap: %d (%s)", n, sl_error_detail());
        for (int i = 0; i < n; i++) {
            int s = (int)(out[i].tag & 0xffff);
            uint64_t blk = out[i].tag >> 16;
            cr_assert(s < depth && blk == block_of[s], "tag %llx", (unsigned long long)out[i].tag);
            cr_assert_eq(out[i].res, BLK, "res %d", out[i].res);
            cr_assert(pattern_ok(mem + (size_t)s * BLK, BLK, blk * BLK), "block %llu data",
                      (unsigned long long)blk);
            memset(mem + (size_t)s * BLK, 0xAA, BLK);
            free_slots[nfree++] = s;
            done++;
        }
    }
    cr_assert_eq(sl_kv_io_in_flight(io), 0);
    struct sl_kv_io_done d;
    cr_assert_eq(sl_kv_io_reap(io, &d, 1, true), 0, "nothing in flight: reap returns at once");
}

CFG_PARAMS(engine_and_mode)
ParameterizedTest(struct cfg *c, kv_io, engine_and_mode, .init = setup, .fini = teardown) {
    make_file(c, 4);
    struct sl_kv_io *io = open_io(c, O_RDWR, 8, NULL);
    if (c->no_uring)
        cr_assert(!sl_kv_io_uses_uring(io));
    else if (uring_works())
        cr_assert(sl_kv_io_uses_uring(io));
    cr_assert(!sl_kv_io_uses_sqpoll(io));
    cr_assert(!sl_kv_io_has_registered_buffer(io));
    if (!c->direct) {
        cr_assert(!sl_kv_io_is_direct(io));
        cr_assert_eq(sl_kv_io_alignment(io), 1);
    } else {
        cr_assert_eq(sl_kv_io_is_direct(io), dir_takes_direct());
        size_t a = sl_kv_io_alignment(io);
        if (sl_kv_io_is_direct(io))
            cr_assert(a >= 512 && a <= BLK && (a & (a - 1)) == 0, "alignment %zu", a);
        /* Misalignment is refused before the kernel sees it. */
        uint8_t *buf = abuf(2 * BLK);
        if (sl_kv_io_is_direct(io)) {
            cr_assert_eq(sl_kv_io_read_async(io, buf + 1, BLK, 0, 0), SL_EINVAL);
            cr_assert_eq(sl_kv_io_pread_all(io, buf, BLK, 1), SL_EINVAL);
            cr_assert_eq(sl_kv_io_in_flight(io), 0);
        }
        free(buf);
    }
    sl_kv_io_close(io);
}

CFG_PARAMS(random_reads)
ParameterizedTest(struct cfg *c, kv_io, random_reads, .init = setup, .fini = teardown) {
    make_file(c, FILE_BLOCKS);
    static const int depths[] = {1, 8, 64};
    for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++) {
        int depth = depths[d];
        struct sl_kv_io *io = open_io(c, O_RDWR, depth, NULL);
        uint8_t *reg = abuf((size_t)MAX_DEPTH * BLK), *plain = abuf((size_t)MAX_DEPTH * BLK);
        random_reads(io, depth, 400, plain, 1u + (unsigned)d);
        int rc = sl_kv_io_register_buffer(io, reg, (size_t)MAX_DEPTH * BLK);
        if (sl_kv_io_uses_uring(io)) {
            cr_assert_eq(rc, 0, "register: %s (%s)", sl_strerror(rc), sl_error_detail());
            cr_assert(sl_kv_io_has_registered_buffer(io));
        } else {
            cr_assert_lt(rc, 0);
            cr_assert(!sl_kv_io_has_registered_buffer(io));
        }
        /* Inside the registered buffer (READ_FIXED), then outside it (plain READ). */
        random_reads(io, depth, 400, reg, 100u + (unsigned)d);
        random_reads(io, depth, 400, plain, 200u + (unsigned)d);
        /* Straddling the registered buffer's end: a plain read. */
        if (sl_kv_io_has_registered_buffer(io)) {
            memset(reg, 0, (size_t)MAX_DEPTH * BLK);
            struct sl_kv_io_done out;
            cr_assert_eq(sl_kv_io_read_async(io, reg + (size_t)(MAX_DEPTH - 1) * BLK, BLK, 0, 7), 0);
            cr_assert_eq(sl_kv_io_reap(io, &out, 1, true), 1);
            cr_assert_eq(out.res, BLK);
            cr_assert(pattern_ok(reg + (size_t)(MAX_DEPTH - 1) * BLK, BLK, 0));
        }
        sl_kv_io_close(io);
        free(reg);
        free(plain);
    }
}

CFG_PARAMS(busy_and_reap)
ParameterizedTest(struct cfg *c, kv_io, busy_and_reap, .init = setup, .fini = teardown) {
    make_file(c, 16);
    struct sl_kv_io *io = open_io(c, O_RDWR, 4, NULL);
    uint8_t *buf = abuf(8 * BLK);
    struct sl_kv_io_done out[8];
    cr_assert_eq(sl_kv_io_reap(io, out, 8, true), 0, "empty: no wait");
    for (int i = 0; i < 4; i++)
        cr_assert_eq(sl_kv_io_read_async(io, buf + (size_t)i * BLK, BLK, (uint64_t)i * BLK, (uint64_t)i), 0);
    cr_assert_eq(sl_kv_io_read_async(io, buf + 4 * BLK, BLK, 0, 4), -EBUSY);
    cr_assert_eq(sl_kv_io_in_flight(io), 4);
    /* No flush: the reap submits what is queued. */
    int got = 0;
    unsigned seen = 0;
    while (got < 4) {
        int n = sl_kv_io_reap(io, out, 8, true);
        cr_assert_gt(n, 0);
        for (int i = 0; i < n; i++) {
            cr_assert_eq(out[i].res, BLK);
            seen |= 1u << out[i].tag;
        }
        got += n;
    }
    cr_assert_eq(seen, 0xfu);
    cr_assert_eq(sl_kv_io_in_flight(io), 0);
    for (int i = 0; i < 4; i++)
        cr_assert(pattern_ok(buf + (size_t)i * BLK, BLK, (uint64_t)i * BLK));

    /* Non-blocking reaps eventually collect everything. */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(sl_kv_io_read_async(io, buf + (size_t)i * BLK, BLK, (uint64_t)(i + 4) * BLK, (uint64_t)i), 0);
    cr_assert_eq(sl_kv_io_flush(io), 0);
    got = 0;
    for (int spins = 0; got < 4 && spins < 100000; spins++) {
        int n = sl_kv_io_reap(io, out, 1, false);
        cr_assert_geq(n, 0);
        got += n;
        if (n == 0) usleep(100);
    }
    cr_assert_eq(got, 4);
    cr_assert_eq(sl_kv_io_reap(io, out, 0, true), 0);
    cr_assert_eq(sl_kv_io_reap(io, NULL, 1, true), SL_EINVAL);
    free(buf);
    sl_kv_io_close(io);
}

CFG_PARAMS(close_in_flight)
ParameterizedTest(struct cfg *c, kv_io, close_in_flight, .init = setup, .fini = teardown) {
    make_file(c, 64);
    uint8_t *buf = abuf(32 * BLK);
    struct sl_kv_io *io = open_io(c, O_RDWR, 32, NULL);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(sl_kv_io_read_async(io, buf + (size_t)i * BLK, BLK, (uint64_t)i * BLK, 0), 0);
    cr_assert_eq(sl_kv_io_flush(io), 0);
    for (int i = 16; i < 32; i++)
        cr_assert_eq(sl_kv_io_read_async(io, buf + (size_t)i * BLK, BLK, (uint64_t)i * BLK, 0), 0);
    sl_kv_io_close(io); /* 16 submitted, 16 queued: waits, then frees */
    free(buf);
    sl_kv_io_close(NULL);
}

CFG_PARAMS(end_of_file)
ParameterizedTest(struct cfg *c, kv_io, end_of_file, .init = setup, .fini = teardown) {
    make_file(c, 2);
    struct sl_kv_io *io = open_io(c, O_RDWR, 4, NULL);
    uint8_t *buf = abuf(4 * BLK);
    cr_assert_eq(sl_kv_io_pread_all(io, buf, 2 * BLK, 0), 0);
    cr_assert(pattern_ok(buf, 2 * BLK, 0));
    cr_assert_eq(sl_kv_io_pread_all(io, buf, BLK, 2 * BLK), SL_ETRUNCATED);
    cr_assert_eq(sl_kv_io_pread_all(io, buf, 2 * BLK, BLK), SL_ETRUNCATED, "%s", sl_error_detail());
    cr_assert_eq(sl_kv_io_pread_all(io, buf, 0, 0), 0);

    /* A size off the alignment: an O_DIRECT read stops at it, mid-block. */
    cr_assert_eq(sl_kv_io_resize(io, BLK + 100), 0);
    cr_assert_eq(sl_kv_io_size(io), BLK + 100);
    cr_assert_eq(sl_kv_io_pread_all(io, buf, 2 * BLK, 0), SL_ETRUNCATED, "%s", sl_error_detail());
    struct sl_kv_io_done out[2];
    cr_assert_eq(sl_kv_io_read_async(io, buf, BLK, BLK, 1), 0);
    cr_assert_eq(sl_kv_io_read_async(io, buf + BLK, BLK, 2 * BLK, 2), 0);
    int got = 0;
    while (got < 2) got += sl_kv_io_reap(io, out + got, 2 - got, true);
    for (int i = 0; i < 2; i++) cr_assert_eq(out[i].res, out[i].tag == 1 ? 100 : 0);
    free(buf);
    sl_kv_io_close(io);
}

/* ---- fault injection ------------------------------------------------------------------- */

static int reap_all(struct sl_kv_io *io, struct sl_kv_io_done *out, int n) {
    int got = 0;
    while (got < n) {
        int r = sl_kv_io_reap(io, out + got, n - got, true);
        cr_assert_gt(r, 0);
        got += r;
    }
    return got;
}

CFG_PARAMS(fault_read_error)
ParameterizedTest(struct cfg *c, kv_io, fault_read_error, .init = setup, .fini = teardown) {
    make_file(c, 16);
    struct sl_kv_io_fault f = {.op = SL_KV_IO_READ, .nth = 3, .err = -EIO};
    struct sl_kv_io *io = open_io(c, O_RDWR, 8, &f);
    uint8_t *buf = abuf(8 * BLK);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(sl_kv_io_read_async(io, buf + (size_t)i * BLK, BLK, (uint64_t)i * BLK, (uint64_t)i), 0);
    struct sl_kv_io_done out[8];
    reap_all(io, out, 8);
    for (int i = 0; i < 8; i++) {
        if (i == 3) {
            cr_assert_eq(out[i].res, -EIO, "the 4th completion fails");
        } else {
            cr_assert_eq(out[i].res, BLK);
            cr_assert(pattern_ok(buf + out[i].tag * BLK, BLK, out[i].tag * BLK));
        }
    }
    cr_assert_eq(f.calls[SL_KV_IO_READ], 8);
    cr_assert_eq(f.calls[SL_KV_IO_OPEN], 1);

    /* Persistent from the 10th read on: sync reads fail too. */
    f.nth = 9;
    f.persistent = true;
    cr_assert_eq(sl_kv_io_pread_all(io, buf, BLK, 0), 0); /* the 9th */
    cr_assert_eq(sl_kv_io_pread_all(io, buf, BLK, 0), -EIO);
    cr_assert_eq(sl_kv_io_read_async(io, buf, BLK, 0, 0), 0);
    reap_all(io, out, 1);
    cr_assert_eq(out[0].res, -EIO);
    cr_assert_eq(f.calls[SL_KV_IO_READ], 11);
    free(buf);
    sl_kv_io_close(io);
}

CFG_PARAMS(fault_read_short)
ParameterizedTest(struct cfg *c, kv_io, fault_read_short, .init = setup, .fini = teardown) {
    make_file(c, 16);
    struct sl_kv_io_fault f = {.op = SL_KV_IO_READ, .nth = 0, .err = 0};
    struct sl_kv_io *io = open_io(c, O_RDWR, 8, &f);
    size_t a = sl_kv_io_alignment(io);
    uint8_t *buf = abuf(16 * BLK);
    struct sl_kv_io_done out[2];
    cr_assert_eq(sl_kv_io_read_async(io, buf, 2 * BLK, 0, 0), 0);
    reap_all(io, out, 1);
    cr_assert_eq(out[0].res, (int32_t)((BLK) & ~(a - 1)), "half of 8 KiB");
    f.nth = 1;
    cr_assert_eq(sl_kv_io_read_async(io, buf, BLK, 0, 0), 0);
    cr_assert_eq(sl_kv_io_read_async(io, buf + BLK, BLK, BLK, 1), 0);
    reap_all(io, out, 2);
    cr_assert_eq(out[0].res, (int32_t)((BLK / 2) & ~(a - 1)), "half of 4 KiB, aligned down");
    cr_assert_eq(out[1].res, BLK);

    /* A short synchronous read continues with the rest. */
    f.nth = 3;
    memset(buf, 0, 16 * BLK);
    cr_assert_eq(sl_kv_io_pread_all(io, buf, 16 * BLK, 0), 0);
    cr_assert(pattern_ok(buf, 16 * BLK, 0));
    cr_assert_eq(f.calls[SL_KV_IO_READ], 5, "8 KiB then the other 8 KiB");
    free(buf);
    sl_kv_io_close(io);
}

CFG_PARAMS(fault_write)
ParameterizedTest(struct cfg *c, kv_io, fault_write, .init = setup, .fini = teardown) {
    struct sl_kv_io_fault f = {.op = SL_KV_IO_WRITE, .nth = 0, .err = 0};
    struct sl_kv_io *io = open_io(c, O_RDWR | O_CREAT | O_EXCL, 1, &f);
    size_t len = 16 * BLK;
    uint8_t *buf = abuf(len), *back = abuf(len);
    fill_pattern(buf, len, 0);
    cr_assert_eq(sl_kv_io_pwrite_all(io, buf, len, 0), 0, "%s", sl_error_detail());
    cr_assert_eq(f.calls[SL_KV_IO_WRITE], 2, "half, then the rest");
    cr_assert_eq(sl_kv_io_pread_all(io, back, len, 0), 0);
    cr_assert(pattern_ok(back, len, 0));

    /* Every write short: still completes, in many calls. */
    f.nth = 2;
    f.persistent = true;
    fill_pattern(buf, len, len);
    cr_assert_eq(sl_kv_io_pwrite_all(io, buf, len, len), 0, "%s", sl_error_detail());
    cr_assert_geq(f.calls[SL_KV_IO_WRITE], 2 + 5);
    cr_assert_eq(sl_kv_io_pread_all(io, back, len, len), 0);
    cr_assert(pattern_ok(back, len, len));

    /* ENOSPC on the second of the next writes; the detail names offset and length. */
    f.nth = f.calls[SL_KV_IO_WRITE] + 1;
    f.persistent = false;
    f.err = -ENOSPC;
    cr_assert_eq(sl_kv_io_pwrite_all(io, buf, BLK, 0), 0);
    cr_assert_eq(sl_kv_io_pwrite_all(io, buf, BLK, 8 * BLK), -ENOSPC);
    cr_assert(strstr(sl_error_detail(), "offset 32768") && strstr(sl_error_detail(), "4096 bytes"),
              "detail: %s", sl_error_detail());
    cr_assert_eq(sl_kv_io_pwrite_all(io, buf, BLK, 8 * BLK), 0);
    free(buf);
    free(back);
    sl_kv_io_close(io);
}

CFG_PARAMS(fault_sync_resize_open)
ParameterizedTest(struct cfg *c, kv_io, fault_sync_resize_open, .init = setup, .fini = teardown) {
    struct sl_kv_io_fault f = {.op = SL_KV_IO_SYNC, .nth = 0, .err = -EIO};
    struct sl_kv_io *io = open_io(c, O_RDWR | O_CREAT | O_EXCL, 1, &f);
    cr_assert_eq(sl_kv_io_datasync(io), -EIO);
    cr_assert_eq(sl_kv_io_datasync(io), 0);
    f.nth = 2;
    f.err = 0; /* "short" sync: a failure */
    cr_assert_eq(sl_kv_io_datasync(io), -EIO);

    f.op = SL_KV_IO_RESIZE;
    f.nth = 1;
    f.err = -ENOSPC;
    cr_assert_eq(sl_kv_io_resize(io, 2 * BLK), 0);
    cr_assert_eq(sl_kv_io_resize(io, 4 * BLK), -ENOSPC);
    cr_assert_eq(sl_kv_io_size(io), 2 * BLK, "a failed resize changes nothing");
    cr_assert_eq(sl_kv_io_resize(io, 4 * BLK), 0);
    cr_assert_eq(sl_kv_io_size(io), 4 * BLK);
    f.nth = 3;
    f.err = 0;
    cr_assert_eq(sl_kv_io_resize(io, BLK), -EIO);
    cr_assert_eq(f.calls[SL_KV_IO_SYNC], 3);
    cr_assert_eq(f.calls[SL_KV_IO_RESIZE], 4);
    sl_kv_io_close(io);

    char other[400];
    snprintf(other, sizeof other, "%s/other.bin", g_dir);
    struct sl_kv_io_fault fo = {.op = SL_KV_IO_OPEN, .nth = 0, .err = -EACCES};
    struct sl_kv_io_params p = params(c, 4, &fo);
    struct sl_kv_io *bad = (struct sl_kv_io *)&fo;
    cr_assert_eq(sl_kv_io_open(other, O_RDWR | O_CREAT | O_EXCL, &p, &bad), -EACCES);
    cr_assert_null(bad);
    cr_assert_eq(access(other, F_OK), -1, "an injected open touches nothing");
    fo.nth = 1;
    fo.err = 0;
    cr_assert_eq(sl_kv_io_open(other, O_RDWR | O_CREAT | O_EXCL, &p, &bad), -EIO);
    cr_assert_eq(fo.calls[SL_KV_IO_OPEN], 2);
}

CFG_PARAMS(fault_counts)
ParameterizedTest(struct cfg *c, kv_io, fault_counts, .init = setup, .fini = teardown) {
    struct sl_kv_io_fault f = {.op = SL_KV_IO_READ, .nth = -1};
    struct sl_kv_io *io = open_io(c, O_RDWR | O_CREAT | O_EXCL, 8, &f);
    uint8_t *buf = abuf(8 * BLK);
    fill_pattern(buf, 8 * BLK, 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sl_kv_io_pwrite_all(io, buf + (size_t)i * BLK, BLK, (uint64_t)i * BLK), 0);
    cr_assert_eq(sl_kv_io_pread_all(io, buf, BLK, 0), 0);
    cr_assert_eq(sl_kv_io_pread_all(io, buf, 2 * BLK, BLK), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(sl_kv_io_read_async(io, buf + (size_t)i * BLK, BLK, 0, (uint64_t)i), 0);
    struct sl_kv_io_done out[5];
    cr_assert_eq(f.calls[SL_KV_IO_READ], 2, "async reads count when they complete");
    reap_all(io, out, 5);
    for (int i = 0; i < 5; i++) cr_assert_eq(out[i].res, BLK);
    cr_assert_eq(sl_kv_io_datasync(io), 0);
    cr_assert_eq(sl_kv_io_resize(io, 3 * BLK), 0);
    cr_assert_eq(sl_kv_io_size(io), 3 * BLK);
    int64_t want[SL_KV_IO_N_OPS] = {[SL_KV_IO_OPEN] = 1, [SL_KV_IO_READ] = 7,
                                    [SL_KV_IO_WRITE] = 3, [SL_KV_IO_SYNC] = 1,
                                    [SL_KV_IO_RESIZE] = 1};
    for (int op = 0; op < SL_KV_IO_N_OPS; op++)
        cr_assert_eq(f.calls[op], want[op], "op %d: %lld calls", op, (long long)f.calls[op]);
    free(buf);
    sl_kv_io_close(io);
}

/* ---- io_uring specifics ---------------------------------------------------------------- */

static void sqpoll_run(int io_cpu) {
    struct cfg c = {.no_uring = false, .direct = true};
    make_file(&c, FILE_BLOCKS);
    struct sl_kv_io_params p = params(&c, 16, NULL);
    p.sqpoll = true;
    p.io_cpu = io_cpu;
    struct sl_kv_io *io = NULL;
    cr_assert_eq(sl_kv_io_open(g_path, O_RDWR, &p, &io), 0);
    if (!sl_kv_io_uses_sqpoll(io)) {
        sl_kv_io_close(io);
        cr_skip_test("io_uring SQPOLL refused here");
    }
    cr_assert(sl_kv_io_uses_uring(io));
    uint8_t *reg = abuf(16 * BLK), *plain = abuf(16 * BLK);
    random_reads(io, 16, 500, plain, 5);
    cr_assert_eq(sl_kv_io_register_buffer(io, reg, 16 * BLK), 0);
    random_reads(io, 16, 500, reg, 6);
    sl_kv_io_close(io);
    free(reg);
    free(plain);
}

Test(kv_io, sqpoll_pinned, .init = setup, .fini = teardown) {
    if (!uring_works()) cr_skip_test("io_uring unavailable");
    sqpoll_run(0);
}

Test(kv_io, sqpoll_unpinned, .init = setup, .fini = teardown) {
    if (!uring_works()) cr_skip_test("io_uring unavailable");
    sqpoll_run(-1);
}

Test(kv_io, io_cpu_affinity, .init = setup, .fini = teardown) {
    struct cfg c = {.no_uring = false, .direct = false};
    make_file(&c, FILE_BLOCKS);
    struct sl_kv_io_params p = params(&c, 8, NULL);
    p.io_cpu = 0;
    struct sl_kv_io *io = NULL;
    cr_assert_eq(sl_kv_io_open(g_path, O_RDWR, &p, &io), 0);
    uint8_t *buf = abuf(8 * BLK);
    random_reads(io, 8, 200, buf, 9);
    sl_kv_io_close(io);
    free(buf);
}

/* A region over 1 GiB is registered as 1 GiB pieces; a read in the second piece uses it. */
Test(kv_io, registered_buffer_over_1gib, .init = setup, .fini = teardown) {
    if (!uring_works()) cr_skip_test("io_uring unavailable");
    struct cfg c = {.no_uring = false, .direct = false}; /* the straddling read is unaligned */
    make_file(&c, FILE_BLOCKS);
    struct sl_kv_io *io = open_io(&c, O_RDWR, 4, NULL);
    size_t bytes = ((size_t)1 << 30) + 16 * BLK;
    uint8_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(mem, MAP_FAILED);
    int rc = sl_kv_io_register_buffer(io, mem, bytes);
    if (rc < 0) {
        munmap(mem, bytes);
        sl_kv_io_close(io);
        cr_skip_test("cannot register 1 GiB here: %s", sl_strerror(rc));
    }
    uint8_t *ends[] = {mem, mem + ((size_t)1 << 30) - BLK, mem + ((size_t)1 << 30) - BLK / 2,
                       mem + ((size_t)1 << 30), mem + bytes - BLK};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        struct sl_kv_io_done out;
        uint64_t off = (uint64_t)(i + 3) * BLK;
        cr_assert_eq(sl_kv_io_read_async(io, ends[i], BLK, off, i), 0);
        cr_assert_eq(sl_kv_io_reap(io, &out, 1, true), 1);
        cr_assert_eq(out.res, BLK, "read %zu: %d", i, out.res);
        cr_assert(pattern_ok(ends[i], BLK, off), "read %zu", i);
    }
    sl_kv_io_close(io);
    munmap(mem, bytes);
}

Test(kv_io, bad_params, .init = setup, .fini = teardown) {
    struct cfg c = {0};
    struct sl_kv_io *io = NULL;
    struct sl_kv_io_params p = params(&c, 0, NULL);
    cr_assert_eq(sl_kv_io_open(g_path, O_RDWR | O_CREAT, &p, &io), SL_EINVAL);
    p.queue_depth = 4097;
    cr_assert_eq(sl_kv_io_open(g_path, O_RDWR | O_CREAT, &p, &io), SL_EINVAL);
    p.queue_depth = 4096;
    p.io_cpu = -2;
    cr_assert_eq(sl_kv_io_open(g_path, O_RDWR | O_CREAT, &p, &io), SL_EINVAL);
    p.io_cpu = -1;
    cr_assert_eq(sl_kv_io_open(g_path, O_RDWR, &p, &io), -ENOENT);
    cr_assert_null(io);
    cr_assert_eq(sl_kv_io_open(g_path, O_RDWR | O_CREAT, &p, &io), 0, "depth 4096 is allowed");
    cr_assert_eq(sl_kv_io_read_async(io, (void *)16, (size_t)INT32_MAX + 1, 0, 0), SL_EINVAL);
    cr_assert_eq(sl_kv_io_pwrite_all(io, NULL, BLK, 0), SL_EINVAL);
    cr_assert_eq(sl_kv_io_resize(io, UINT64_MAX), SL_EINVAL);
    sl_kv_io_close(io);
}

/* ---- fallbacks, forced with seccomp in the test's own (forked) process ------------------- */

#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

static char g_log[4096];
static int g_log_lines;

static void capture_log(enum sl_log_level level, const char *msg, void *user) {
    (void)level, (void)user;
    g_log_lines++;
    strncat(g_log, msg, sizeof g_log - strlen(g_log) - 2);
    strcat(g_log, "\n");
}

/* Makes syscall nr fail with err; for fcntl only F_SETFL calls that set O_DIRECT. */
static void deny_syscall(long nr, int err) {
#ifndef TEST_AUDIT_ARCH
    cr_skip_test("no seccomp arch constant for this machine");
#else
    /* Little-endian: the low 32 bits of an argument come first. */
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TEST_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_SETFL, 0, 2),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, O_DIRECT, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((uint32_t)err & SECCOMP_RET_DATA)),
    };
    /* Any other syscall skips the argument checks. */
    if (nr != SYS_fcntl) f[6] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 4, 0, 0);
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        cr_skip_test("seccomp unavailable: %s", strerror(errno));
#endif
}

Test(kv_io, uring_refused_falls_back_to_pread, .init = setup, .fini = teardown) {
    struct cfg c = {.no_uring = false, .direct = true};
    make_file(&c, FILE_BLOCKS);
    deny_syscall(SYS_io_uring_setup, EPERM);
    sl_log_set(capture_log, NULL);
    for (int round = 0; round < 2; round++) {
        struct sl_kv_io *io = open_io(&c, O_RDWR, 8, NULL);
        cr_assert(!sl_kv_io_uses_uring(io));
        cr_assert_eq(sl_kv_io_is_direct(io), dir_takes_direct());
        uint8_t *buf = abuf(8 * BLK);
        cr_assert_lt(sl_kv_io_register_buffer(io, buf, 8 * BLK), 0);
        random_reads(io, 8, 100, buf, 3);
        free(buf);
        sl_kv_io_close(io);
    }
    sl_log_set(NULL, NULL);
    cr_assert_eq(g_log_lines, 1, "logged once per process: %s", g_log);
    cr_assert(strstr(g_log, "io_uring unavailable (Operation not permitted): using pread"), "%s",
              g_log);
}

Test(kv_io, direct_refused_falls_back_to_buffered, .init = setup, .fini = teardown) {
    struct cfg c = {.no_uring = false, .direct = true};
    deny_syscall(SYS_fcntl, EINVAL);
    int fd = open(g_dir, O_RDONLY | O_DIRECTORY);
    int fl = fcntl(fd, F_GETFL);
    cr_assert_geq(fl, 0, "the filter leaves other fcntl calls alone");
    cr_assert_eq(fcntl(fd, F_SETFL, fl | O_DIRECT), -1);
    cr_assert_eq(errno, EINVAL);
    close(fd);
    sl_log_set(capture_log, NULL);
    make_file(&c, FILE_BLOCKS);
    struct sl_kv_io *io = open_io(&c, O_RDWR, 8, NULL);
    cr_assert(!sl_kv_io_is_direct(io));
    cr_assert_eq(sl_kv_io_alignment(io), 1);
    uint8_t *buf = abuf(8 * BLK);
    random_reads(io, 8, 100, buf, 4);
    free(buf);
    sl_kv_io_close(io);
    /* Creating with O_EXCL works: O_DIRECT is refused only after the file exists. */
    char other[400];
    snprintf(other, sizeof other, "%s/excl.bin", g_dir);
    struct sl_kv_io_params p = params(&c, 1, NULL);
    cr_assert_eq(sl_kv_io_open(other, O_RDWR | O_CREAT | O_EXCL, &p, &io), 0);
    sl_kv_io_close(io);
    sl_log_set(NULL, NULL);
    char want[400];
    snprintf(want, sizeof want, "O_DIRECT refused on %s: buffered I/O", g_dir);
    cr_assert_eq(g_log_lines, 1, "%s", g_log);
    cr_assert(strstr(g_log, want), "%s", g_log);
}

/* SQ_AFF to a CPU that does not exist: SQPOLL is refused and the ring comes up without it. */
Test(kv_io, sqpoll_refused_falls_back, .init = setup, .fini = teardown) {
    if (!uring_works()) cr_skip_test("io_uring unavailable");
    long ncpu = sysconf(_SC_NPROCESSORS_CONF);
    if (ncpu >= CPU_SETSIZE - 1) cr_skip_test("no absent CPU number to use");
    struct cfg c = {.no_uring = false, .direct = true};
    make_file(&c, FILE_BLOCKS);
    sl_log_set(capture_log, NULL);
    struct sl_kv_io_params p = params(&c, 8, NULL);
    p.sqpoll = true;
    p.io_cpu = CPU_SETSIZE - 1;
    struct sl_kv_io *io = NULL;
    cr_assert_eq(sl_kv_io_open(g_path, O_RDWR, &p, &io), 0, "%s", sl_error_detail());
    sl_log_set(NULL, NULL);
    cr_assert(sl_kv_io_uses_uring(io));
    cr_assert(!sl_kv_io_uses_sqpoll(io));
    cr_assert(strstr(g_log, "SQPOLL refused"), "%s", g_log);
    uint8_t *buf = abuf(8 * BLK);
    random_reads(io, 8, 100, buf, 8);
    free(buf);
    sl_kv_io_close(io);
}
