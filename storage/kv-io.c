/* The KV store's file I/O layer: opening the file (O_DIRECT when the filesystem allows it),
 * the synchronous calls (whole reads and writes, datasync, resize, size), the fault injector,
 * and the checks and dispatch in front of the asynchronous-read engines (kv-io-uring.c,
 * kv-io-posix.c). */
#include "storage/kv-io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "storage/regular-file.h"
#include "storage/kv-io-internal.h"

#define SL_KV_IO_MAX_DEPTH 4096

static inline size_t align_down(size_t x, size_t a) { return x & ~(a - 1); }

int sl_kv_io_fault_check(struct sl_kv_io_fault *f, enum sl_kv_io_op op) {
    if (!f || (unsigned)op >= SL_KV_IO_N_OPS) return 1;
    int64_t n = f->calls[op]++;
    if (op != f->op || f->nth < 0 || n < f->nth || (n > f->nth && !f->persistent)) return 1;
    /* Tolerate a positive errno written by a hurried test. */
    if (f->err != 0) return f->err < 0 ? f->err : -f->err;
    /* Only transfers can be short; for the others "short" has no meaning but failure. */
    return (op == SL_KV_IO_READ || op == SL_KV_IO_WRITE) ? 0 : -EIO;
}

/* Length of an injected short transfer: half, kept aligned so O_DIRECT accepts it, and
 * never 0 so that a persistent fault still makes progress (a 0-byte read would read as
 * end of file). */
static size_t short_len(const struct sl_kv_io *io, size_t n) {
    size_t h = align_down(n / 2, io->align);
    if (h == 0) h = n < io->align ? n : io->align;
    return h;
}

static void log_direct_refused(const char *path) {
    static atomic_bool warned;
    if (atomic_exchange(&warned, true)) return;
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (slash == path ? 1 : (int)(slash - path)) : 1;
    sl_log(SL_LOG_WARN, "O_DIRECT refused on %.*s: buffered I/O", dir_len, slash ? path : ".");
}

/* O_DIRECT is set after open rather than passed to it: a filesystem that refuses it fails
 * open only after O_CREAT has made the file, so a retry with O_EXCL would then find its own
 * file and fail. fcntl makes the same filesystem check without that trap. */
static bool set_direct(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return false;
    return fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
}

static size_t dio_alignment(int fd) {
#ifdef STATX_DIOALIGN
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align != 0) {
        size_t a = stx.stx_dio_offset_align;
        if (stx.stx_dio_mem_align > a) a = stx.stx_dio_mem_align;
        if ((a & (a - 1)) == 0) return a;
    }
#endif
    /* The common page/sector size; kernels before 6.1 cannot tell us better. */
    return 4096;
}

int sl_kv_io_open(const char *path, int flags, const struct sl_kv_io_params *p,
                  struct sl_kv_io **out) {
    static atomic_bool warned_uring;
    if (!out) return sl_fail(SL_EINVAL, "kv-io open: out is NULL");
    *out = NULL;
    if (!path || !p) return sl_fail(SL_EINVAL, "kv-io open: path or params is NULL");
    if (p->queue_depth < 1 || p->queue_depth > SL_KV_IO_MAX_DEPTH)
        return sl_fail(SL_EINVAL, "kv-io queue depth %d outside 1..%d", p->queue_depth,
                       SL_KV_IO_MAX_DEPTH);
    if (p->io_cpu < -1 || p->io_cpu >= CPU_SETSIZE)
        return sl_fail(SL_EINVAL, "kv-io io_cpu %d outside -1..%d", p->io_cpu, CPU_SETSIZE - 1);

    int fc = sl_kv_io_fault_check(p->fault, SL_KV_IO_OPEN);
    if (fc <= 0)
        return sl_fail(fc < 0 ? fc : -EIO, "injected fault opening '%s'", path);

    struct sl_kv_io *io = calloc(1, sizeof *io);
    char *path_copy = strdup(path);
    if (!io || !path_copy) {
        free(io);
        free(path_copy);
        return sl_fail(SL_ENOMEM, "kv-io open '%s': out of memory", path);
    }
    io->path = path_copy;
    io->depth = p->queue_depth;
    io->fault = p->fault;

    /* a FIFO or device at the path is refused rather than waited on or written to */
    int fd = sl_open_regular(path, flags & ~O_DIRECT, 0644, NULL);
    if (fd < 0) {
        free(io->path);
        free(io);
        return fd; /* the detail names the path */
    }
    io->fd = fd;

    if (p->direct) {
        io->direct = set_direct(fd);
        if (!io->direct) log_direct_refused(path);
    }
    io->align = io->direct ? dio_alignment(fd) : 1;

    int rc = -1;
    if (!p->no_uring) {
        rc = sl_kv_io_uring_init(io, p);
        if (rc < 0 && !atomic_exchange(&warned_uring, true))
            sl_log(SL_LOG_WARN, "io_uring unavailable (%s): using pread", strerror(-rc));
    }
    if (rc < 0) rc = sl_kv_io_posix_init(io);
    if (rc < 0) {
        close(fd);
        free(io->path);
        free(io);
        return rc;
    }
    *out = io;
    return 0;
}

void sl_kv_io_close(struct sl_kv_io *io) {
    if (!io) return;
    /* The engine waits out reads the kernel still holds: their buffers belong to the
     * caller, who may free them as soon as we return. */
    if (io->eng) io->eng->fini(io);
    close(io->fd);
    free(io->path);
    free(io);
}

int sl_kv_io_set_path(struct sl_kv_io *io, const char *path) {
    char *p = strdup(path);
    if (!p) return sl_fail(SL_ENOMEM, "out of memory");
    free(io->path);
    io->path = p;
    return 0;
}

bool sl_kv_io_is_direct(const struct sl_kv_io *io) { return io && io->direct; }
bool sl_kv_io_uses_uring(const struct sl_kv_io *io) { return io && io->uring; }
bool sl_kv_io_uses_sqpoll(const struct sl_kv_io *io) { return io && io->sqpoll; }
bool sl_kv_io_has_registered_buffer(const struct sl_kv_io *io) { return io && io->reg_base; }
size_t sl_kv_io_alignment(const struct sl_kv_io *io) { return io ? io->align : 1; }

int sl_kv_io_register_buffer(struct sl_kv_io *io, void *base, size_t bytes) {
    if (!io || !base || bytes == 0)
        return sl_fail(SL_EINVAL, "kv-io register buffer: NULL or empty");
    if (io->queued + io->submitted > 0)
        return sl_fail(-EBUSY, "kv-io register buffer: %d reads in flight",
                       io->queued + io->submitted);
    return io->eng->register_buffer(io, base, bytes);
}

/* Whether [buf, len, off] is usable on this file; O_DIRECT rejects misalignment, and the
 * kernel's EINVAL for it says far less than this. */
static int check_transfer(const struct sl_kv_io *io, const void *buf, size_t len, uint64_t off,
                          const char *what) {
    uint64_t end;
    if (!buf && len > 0) return sl_fail(SL_EINVAL, "kv-io %s: NULL buffer", what);
    if (sl_add_overflow_u64(off, len, &end) || end > (uint64_t)INT64_MAX)
        return sl_fail(SL_EINVAL, "kv-io %s: %zu bytes at offset %" PRIu64 " overflow", what,
                       len, off);
    if (io->direct && (((uintptr_t)buf | len | off) & (io->align - 1)))
        return sl_fail(SL_EINVAL,
                       "kv-io %s: buffer %p, length %zu or offset %" PRIu64
                       " not aligned to %zu for O_DIRECT on '%s'",
                       what, buf, len, off, io->align, io->path);
    return 0;
}

int sl_kv_io_read_async(struct sl_kv_io *io, void *buf, size_t len, uint64_t off, uint64_t tag) {
    if (!io) return sl_fail(SL_EINVAL, "kv-io read: NULL handle");
    /* No detail recorded: a full queue is flow control, hit in the hot loop. */
    if (io->queued + io->submitted >= io->depth) return -EBUSY;
    /* The result travels as an int32. */
    if (len > (size_t)INT32_MAX)
        return sl_fail(SL_EINVAL, "kv-io read of %zu bytes: at most %d per read", len, INT32_MAX);
    int rc = check_transfer(io, buf, len, off, "read");
    if (rc < 0) return rc;
    return io->eng->read_async(io, buf, len, off, tag);
}

int sl_kv_io_flush(struct sl_kv_io *io) {
    if (!io) return sl_fail(SL_EINVAL, "kv-io flush: NULL handle");
    return io->eng->flush(io);
}

int sl_kv_io_reap(struct sl_kv_io *io, struct sl_kv_io_done *out, int max, bool wait) {
    if (!io || max < 0 || (max > 0 && !out))
        return sl_fail(SL_EINVAL, "kv-io reap: NULL handle or output, or max %d", max);
    if (max == 0) return 0;
    int n = io->eng->reap(io, out, max, wait);
    /* Faults apply to completions, the point where a real read error would surface, so
     * both engines count and fail reads identically. */
    for (int i = 0; io->fault && i < n; i++) {
        int fc = sl_kv_io_fault_check(io->fault, SL_KV_IO_READ);
        if (fc < 0)
            out[i].res = fc;
        else if (fc == 0 && out[i].res > 0)
            out[i].res = (int32_t)align_down((size_t)out[i].res / 2, io->align);
    }
    return n;
}

int sl_kv_io_in_flight(const struct sl_kv_io *io) { return io ? io->queued + io->submitted : 0; }

int sl_kv_io_pread_all(struct sl_kv_io *io, void *buf, size_t len, uint64_t off) {
    if (!io) return sl_fail(SL_EINVAL, "kv-io read: NULL handle");
    int rc = check_transfer(io, buf, len, off, "read");
    if (rc < 0) return rc;
    size_t done = 0;
    while (done < len) {
        size_t n = len - done;
        uint64_t pos = off + done;
        int fc = sl_kv_io_fault_check(io->fault, SL_KV_IO_READ);
        if (fc < 0)
            return sl_fail(fc, "injected fault reading %zu bytes at offset %" PRIu64 " of '%s'",
                           n, pos, io->path);
        if (fc == 0) n = short_len(io, n);
        ssize_t r = pread(io->fd, (uint8_t *)buf + done, n, (off_t)pos);
        if (r < 0) {
            if (errno == EINTR) continue;
            int err = -errno;
            return sl_fail(err, "reading %zu bytes at offset %" PRIu64 " of '%s': %s", n, pos,
                           io->path, strerror(-err));
        }
        done += (size_t)r;
        /* r == 0 is the end of the file; so is an O_DIRECT read that stopped off alignment
         * (only the end of the file does that, and the next read would fail EINVAL). */
        if (r == 0 || (done < len && io->direct && (done & (io->align - 1))))
            return sl_fail(SL_ETRUNCATED,
                           "'%s' ends at byte %" PRIu64 ", inside the read of %zu bytes at %" PRIu64,
                           io->path, off + done, len, off);
    }
    return 0;
}

int sl_kv_io_pwrite_all(struct sl_kv_io *io, const void *buf, size_t len, uint64_t off) {
    if (!io) return sl_fail(SL_EINVAL, "kv-io write: NULL handle");
    int rc = check_transfer(io, buf, len, off, "write");
    if (rc < 0) return rc;
    size_t done = 0;
    while (done < len) {
        size_t n = len - done;
        uint64_t pos = off + done;
        int fc = sl_kv_io_fault_check(io->fault, SL_KV_IO_WRITE);
        if (fc < 0)
            return sl_fail(fc, "injected fault writing %zu bytes at offset %" PRIu64 " of '%s'",
                           n, pos, io->path);
        if (fc == 0) n = short_len(io, n);
        ssize_t r = pwrite(io->fd, (const uint8_t *)buf + done, n, (off_t)pos);
        if (r < 0) {
            if (errno == EINTR) continue;
            int err = -errno;
            return sl_fail(err, "writing %zu bytes at offset %" PRIu64 " of '%s': %s", n, pos,
                           io->path, strerror(-err));
        }
        /* A write that moves nothing would be retried forever. */
        if (r == 0)
            return sl_fail(SL_EIO, "writing %zu bytes at offset %" PRIu64 " of '%s': no progress",
                           n, pos, io->path);
        done += (size_t)r;
    }
    return 0;
}

int sl_kv_io_datasync(struct sl_kv_io *io) {
    if (!io) return sl_fail(SL_EINVAL, "kv-io sync: NULL handle");
    int fc = sl_kv_io_fault_check(io->fault, SL_KV_IO_SYNC);
    if (fc <= 0) return sl_fail(fc < 0 ? fc : -EIO, "injected fault syncing '%s'", io->path);
    int r;
    do {
        r = fdatasync(io->fd);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        int err = -errno;
        return sl_fail(err, "fdatasync of '%s': %s", io->path, strerror(-err));
    }
    return 0;
}

int sl_kv_io_resize(struct sl_kv_io *io, uint64_t bytes) {
    if (!io) return sl_fail(SL_EINVAL, "kv-io resize: NULL handle");
    if (bytes > (uint64_t)INT64_MAX)
        return sl_fail(SL_EINVAL, "kv-io resize of '%s' to %" PRIu64 " bytes", io->path, bytes);
    int fc = sl_kv_io_fault_check(io->fault, SL_KV_IO_RESIZE);
    if (fc <= 0)
        return sl_fail(fc < 0 ? fc : -EIO, "injected fault resizing '%s' to %" PRIu64 " bytes",
                       io->path, bytes);
    int r;
    do {
        r = ftruncate(io->fd, (off_t)bytes);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        int err = -errno;
        return sl_fail(err, "resizing '%s' to %" PRIu64 " bytes: %s", io->path, bytes,
                       strerror(-err));
    }
    return 0;
}

int64_t sl_kv_io_size(struct sl_kv_io *io) {
    if (!io) return sl_fail(SL_EINVAL, "kv-io size: NULL handle");
    struct stat st;
    if (fstat(io->fd, &st) != 0) {
        int err = -errno;
        return sl_fail(err, "cannot stat '%s': %s", io->path, strerror(-err));
    }
    return (int64_t)st.st_size;
}
