/* The KV store's file I/O layer: one file, asynchronous reads through io_uring (registered
 * file and buffer, batched submissions, optional SQPOLL, CPU-pinned kernel workers), or
 * pread/pwrite when io_uring is unavailable or refused (logged once per process), plus
 * synchronous writes, sync and resize. Every call goes through the fault injector when the
 * params carry one, so tests reach every I/O call site.
 *
 * Conventions: 0 (or a byte count) on success, -errno or SL_E* on failure, with
 * sl_fail details. Not thread-safe: the caller serialises calls on one sl_kv_io. */
#ifndef SL_STORAGE_KV_IO_H
#define SL_STORAGE_KV_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spotlight/kv-store.h"

struct sl_kv_io;

struct sl_kv_io_params {
    int32_t queue_depth;          /* asynchronous reads in flight, 1..4096 */
    bool direct;                  /* try O_DIRECT; fall back to buffered, logged once */
    bool no_uring;                /* force the pread fallback */
    bool sqpoll;                  /* IORING_SETUP_SQPOLL (falls back without, logged) */
    int32_t io_cpu;               /* SQPOLL thread / io-wq affinity; -1 none */
    struct sl_kv_io_fault *fault; /* NULL in production */
};

/* flags: O_RDWR (or O_RDONLY) plus O_CREAT|O_EXCL|O_NOFOLLOW as wanted (O_DIRECT is added by
 * the layer). Anything but a regular file is refused (SL_EINVAL) without blocking on it.
 * Counts as one SL_KV_IO_OPEN. */
int sl_kv_io_open(const char *path, int flags, const struct sl_kv_io_params *p,
                  struct sl_kv_io **out);
void sl_kv_io_close(struct sl_kv_io *io); /* NULL is a no-op; waits for reads in flight */
/* The name error details use, after the file was renamed. 0 or SL_ENOMEM. */
int sl_kv_io_set_path(struct sl_kv_io *io, const char *path);

bool sl_kv_io_is_direct(const struct sl_kv_io *io);
bool sl_kv_io_uses_uring(const struct sl_kv_io *io);
bool sl_kv_io_uses_sqpoll(const struct sl_kv_io *io);
bool sl_kv_io_has_registered_buffer(const struct sl_kv_io *io);
/* Alignment O_DIRECT needs for buffers, offsets and lengths (1 when buffered). */
size_t sl_kv_io_alignment(const struct sl_kv_io *io);

/* Registers [base, base + bytes) as the fixed buffer that asynchronous reads land in
 * (READ_FIXED). Failure is not fatal: reads use plain buffers and the layer logs once.
 * Returns 0 if registered, else the negative reason. */
int sl_kv_io_register_buffer(struct sl_kv_io *io, void *base, size_t bytes);

/* Queues an asynchronous read of len bytes at off into buf (inside the registered buffer
 * when one is registered; any buffer otherwise). tag comes back with the completion.
 * -EBUSY when queue_depth reads are already queued or in flight. Queued reads go to the
 * kernel at sl_kv_io_flush (one io_uring_submit for the batch) or when a reap needs them. */
int sl_kv_io_read_async(struct sl_kv_io *io, void *buf, size_t len, uint64_t off, uint64_t tag);

int sl_kv_io_flush(struct sl_kv_io *io);

struct sl_kv_io_done {
    uint64_t tag;
    int32_t res; /* bytes read (may be short) or -errno */
};

/* Collects up to max completions; wait: block until at least one arrives if any read is in
 * flight. Returns the number collected (0 when none are ready or none in flight). */
int sl_kv_io_reap(struct sl_kv_io *io, struct sl_kv_io_done *out, int max, bool wait);

int sl_kv_io_in_flight(const struct sl_kv_io *io); /* queued + submitted, not yet reaped */

/* Synchronous whole transfers: retried on short counts and EINTR. Reading past the end of
 * the file gives SL_ETRUNCATED; an error is -errno (ENOSPC, EIO, ...). */
int sl_kv_io_pread_all(struct sl_kv_io *io, void *buf, size_t len, uint64_t off);
int sl_kv_io_pwrite_all(struct sl_kv_io *io, const void *buf, size_t len, uint64_t off);
int sl_kv_io_datasync(struct sl_kv_io *io);
/* Sets the file's size (ftruncate). */
int sl_kv_io_resize(struct sl_kv_io *io, uint64_t bytes);
/* Current file size, or -errno. */
int64_t sl_kv_io_size(struct sl_kv_io *io);

/* Fault check used by each call site: counts the call and returns the injected result, or
 * 1 when the call should proceed. For short transfers it returns 0 and the caller halves the
 * length. Exposed for the layer's own files only. */
int sl_kv_io_fault_check(struct sl_kv_io_fault *f, enum sl_kv_io_op op);

#endif
