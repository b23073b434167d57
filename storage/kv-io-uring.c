/* The io_uring engine of the KV store's I/O layer: reads are prepared into the SQ ring,
 * submitted as one batch by flush, and reaped from the CQ ring. The file is registered
 * (fixed file 0) and, when the store registers its cache, so is that memory, so reads into
 * it skip the per-request page pinning (READ_FIXED). Optional SQPOLL thread and io-wq
 * workers pinned to io_cpu. */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "core/internal.h"
#include "storage/kv-io-internal.h"

/* The kernel takes at most 1 GiB per registered iovec, so a larger region is registered as
 * consecutive 1 GiB pieces and a read uses the piece it lies in. */
#define REG_CHUNK_SHIFT 30
#define REG_CHUNK ((size_t)1 << REG_CHUNK_SHIFT)

static int uring_flush(struct sl_kv_io *io) {
    while (io->queued > 0) {
        int r = io_uring_submit(&io->ring);
        if (r == -EINTR) continue;
        /* EAGAIN: the kernel could not allocate requests right now; it passes. */
        if (r == -EAGAIN) {
            sched_yield();
            continue;
        }
        if (r < 0)
            return sl_fail(r, "io_uring submit of %d reads on '%s': %s", io->queued, io->path,
                           strerror(-r));
        if (r == 0)
            return sl_fail(SL_EIO, "io_uring submit of %d reads on '%s' made no progress",
                           io->queued, io->path);
        /* Under SQPOLL liburing counts entries the kernel thread has not consumed yet,
         * including ones flushed earlier; everything queued is in the ring after one call. */
        if (r > io->queued) r = io->queued;
        io->queued -= r;
        io->submitted += r;
    }
    return 0;
}

static int uring_read_async(struct sl_kv_io *io, void *buf, size_t len, uint64_t off,
                            uint64_t tag) {
    /* The SQ ring holds at least queue_depth entries and at most queue_depth reads are
     * outstanding, so this only fails if that accounting is broken. */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
    if (!sqe) return sl_fail(-EBUSY, "io_uring SQ ring full on '%s'", io->path);
    int fd = io->fixed_file ? 0 : io->fd;
    uintptr_t b = (uintptr_t)buf, base = (uintptr_t)io->reg_base;
    if (io->reg_base && len > 0 && b >= base && b - base < io->reg_bytes &&
        len <= io->reg_bytes - (b - base) &&
        ((b - base) >> REG_CHUNK_SHIFT) == ((b - base + len - 1) >> REG_CHUNK_SHIFT))
        io_uring_prep_read_fixed(sqe, fd, buf, (unsigned)len, off,
                                 (int)((b - base) >> REG_CHUNK_SHIFT));
    else
        io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
    if (io->fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, tag);
    io->queued++;
    return 0;
}

static int uring_reap(struct sl_kv_io *io, struct sl_kv_io_done *out, int max, bool wait) {
    if (io->queued > 0) {
        int rc = uring_flush(io);
        if (rc < 0) return rc;
    }
    int n = 0;
    while (n < max && io->submitted > 0) {
        struct io_uring_cqe *cqe = NULL;
        bool block = wait && n == 0;
        int r = block ? io_uring_wait_cqe(&io->ring, &cqe) : io_uring_peek_cqe(&io->ring, &cqe);
        if (r == -EINTR) continue;
        if (r == -EAGAIN) {
            if (!block) break; /* nothing ready */
            continue;
        }
        if (r < 0) {
            if (n > 0) break; /* hand over what we have; the error will come back */
            return sl_fail(r, "io_uring wait on '%s': %s", io->path, strerror(-r));
        }
        out[n].tag = io_uring_cqe_get_data64(cqe);
        out[n].res = cqe->res;
        io_uring_cqe_seen(&io->ring, cqe);
        io->submitted--;
        n++;
    }
    return n;
}

static int uring_register_buffer(struct sl_kv_io *io, void *base, size_t bytes) {
    static atomic_bool warned;
    if (io->reg_base) {
        io_uring_unregister_buffers(&io->ring);
        io->reg_base = NULL;
        io->reg_bytes = 0;
    }
    size_t n = (bytes >> REG_CHUNK_SHIFT) + ((bytes & (REG_CHUNK - 1)) != 0);
    struct iovec one, *iov = n == 1 ? &one : calloc(n, sizeof *iov);
    if (!iov) return sl_fail(SL_ENOMEM, "io_uring buffer registration: out of memory");
    for (size_t i = 0; i < n; i++) {
        iov[i].iov_base = (uint8_t *)base + (i << REG_CHUNK_SHIFT);
        iov[i].iov_len = i + 1 < n ? REG_CHUNK : bytes - (i << REG_CHUNK_SHIFT);
    }
    int r = n > UINT32_MAX ? -EINVAL : io_uring_register_buffers(&io->ring, iov, (unsigned)n);
    if (iov != &one) free(iov);
    if (r < 0) {
        if (!atomic_exchange(&warned, true))
            sl_log(SL_LOG_WARN, "io_uring refused to register %zu bytes of buffers (%s): plain reads",
                   bytes, strerror(-r));
        return sl_fail(r, "io_uring buffer registration of %zu bytes: %s", bytes, strerror(-r));
    }
    io->reg_base = base;
    io->reg_bytes = bytes;
    return 0;
}

static void uring_fini(struct sl_kv_io *io) {
    /* Reads prepared but never submitted are dropped: liburing publishes the SQ tail only at
     * submit (SQPOLL included), so the kernel never saw them. Submitted ones are waited for,
     * not cancelled: a file read in progress cannot be stopped anyway, and it writes into
     * the caller's buffer until it completes. */
    io->queued = 0;
    while (io->submitted > 0) {
        struct io_uring_cqe *cqe = NULL;
        int r = io_uring_wait_cqe(&io->ring, &cqe);
        if (r == -EINTR || r == -EAGAIN) continue;
        if (r < 0) {
            sl_log(SL_LOG_WARN, "io_uring close of '%s': %d reads left in flight (%s)", io->path,
                   io->submitted, strerror(-r));
            break;
        }
        io_uring_cqe_seen(&io->ring, cqe);
        io->submitted--;
    }
    /* Exiting the ring also drops the registered file and buffers. */
    io_uring_queue_exit(&io->ring);
    io->reg_base = NULL;
    io->reg_bytes = 0;
}

static const struct sl_kv_io_engine uring_engine = {
    .read_async = uring_read_async,
    .flush = uring_flush,
    .reap = uring_reap,
    .register_buffer = uring_register_buffer,
    .fini = uring_fini,
};

static unsigned round_up_pow2(unsigned n) {
    unsigned p = 1;
    while (p < n) p <<= 1;
    return p;
}

int sl_kv_io_uring_init(struct sl_kv_io *io, const struct sl_kv_io_params *p) {
    static atomic_bool warned_sqpoll, warned_files, warned_aff;
    /* The CQ ring gets twice the SQ entries, so queue_depth completions never overflow it. */
    unsigned entries = round_up_pow2((unsigned)p->queue_depth);
    struct io_uring_params prm;
    int r;
    io->sqpoll = false;
    if (p->sqpoll) {
        memset(&prm, 0, sizeof prm);
        memset(&io->ring, 0, sizeof io->ring);
        /* sq_thread_idle 0: the kernel's default of one second before the thread sleeps. */
        prm.flags = IORING_SETUP_SQPOLL;
        if (p->io_cpu >= 0) {
            prm.flags |= IORING_SETUP_SQ_AFF;
            prm.sq_thread_cpu = (uint32_t)p->io_cpu;
        }
        r = io_uring_queue_init_params(entries, &io->ring, &prm);
        if (r == 0)
            io->sqpoll = true;
        else if (!atomic_exchange(&warned_sqpoll, true))
            sl_log(SL_LOG_WARN, "io_uring SQPOLL refused (%s): submitting from the caller",
                   strerror(-r));
    }
    if (!io->sqpoll) {
        memset(&prm, 0, sizeof prm);
        memset(&io->ring, 0, sizeof io->ring);
        r = io_uring_queue_init_params(entries, &io->ring, &prm);
        if (r < 0) return r;
    }

    r = io_uring_register_files(&io->ring, &io->fd, 1);
    io->fixed_file = r == 0;
    if (r < 0 && !atomic_exchange(&warned_files, true))
        sl_log(SL_LOG_WARN, "io_uring refused to register the file (%s): unregistered reads",
               strerror(-r));

    if (p->io_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(p->io_cpu, &set);
        r = io_uring_register_iowq_aff(&io->ring, sizeof set, &set);
        if (r < 0 && !atomic_exchange(&warned_aff, true))
            sl_log(SL_LOG_WARN, "io_uring refused io-wq affinity to CPU %d (%s)", p->io_cpu,
                   strerror(-r));
    }
    io->uring = true;
    io->eng = &uring_engine;
    return 0;
}
