/* The pread engine of the KV store's I/O layer, used when io_uring is unavailable or turned
 * off: a read runs to completion inside read_async and its result waits in a queue of
 * queue_depth entries until reaped, so callers see the same submit/reap contract (and the
 * same -EBUSY back-pressure) as with io_uring. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/internal.h"
#include "storage/kv-io-internal.h"

static int posix_read_async(struct sl_kv_io *io, void *buf, size_t len, uint64_t off,
                            uint64_t tag) {
    ssize_t r;
    do {
        r = pread(io->fd, buf, len, (off_t)off);
    } while (r < 0 && errno == EINTR);
    int32_t slot = (io->done_head + io->submitted) % io->depth;
    io->done[slot].tag = tag;
    io->done[slot].res = r < 0 ? -errno : (int32_t)r;
    io->submitted++;
    return 0;
}

static int posix_flush(struct sl_kv_io *io) { return 0; }

static int posix_reap(struct sl_kv_io *io, struct sl_kv_io_done *out, int max, bool wait) {
    int n = 0;
    while (n < max && io->submitted > 0) {
        out[n++] = io->done[io->done_head];
        io->done_head = (io->done_head + 1) % io->depth;
        io->submitted--;
    }
    return n;
}

static int posix_register_buffer(struct sl_kv_io *io, void *base, size_t bytes) {
    /* Not logged: the fall back from io_uring was, and nothing is lost beyond that. */
    return sl_fail(-EOPNOTSUPP, "pread I/O has no registered buffers");
}

static void posix_fini(struct sl_kv_io *io) {
    free(io->done);
    io->done = NULL;
    io->submitted = 0;
}

static const struct sl_kv_io_engine posix_engine = {
    .read_async = posix_read_async,
    .flush = posix_flush,
    .reap = posix_reap,
    .register_buffer = posix_register_buffer,
    .fini = posix_fini,
};

int sl_kv_io_posix_init(struct sl_kv_io *io) {
    io->done = calloc((size_t)io->depth, sizeof *io->done);
    if (!io->done)
        return sl_fail(SL_ENOMEM, "kv-io: cannot allocate %d completion slots", io->depth);
    io->done_head = 0;
    io->uring = false;
    io->sqpoll = false;
    io->eng = &posix_engine;
    return 0;
}
