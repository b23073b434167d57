/* What kv-io.c shares with its two engines (kv-io-uring.c, kv-io-posix.c): the handle and
 * the small table of engine functions. kv-io.c owns the handle's common parts (file,
 * alignment, fault injector, argument checks, in-flight accounting that -EBUSY relies on);
 * an engine only moves reads and their completions. Not installed. */
#ifndef SL_STORAGE_KV_IO_INTERNAL_H
#define SL_STORAGE_KV_IO_INTERNAL_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/kv-io.h"

struct sl_kv_io_engine {
    /* Queues one read; the arguments are already checked and a slot is free. */
    int (*read_async)(struct sl_kv_io *io, void *buf, size_t len, uint64_t off, uint64_t tag);
    int (*flush)(struct sl_kv_io *io);
    /* Fills up to max raw completions (before fault injection); max >= 1. */
    int (*reap)(struct sl_kv_io *io, struct sl_kv_io_done *out, int max, bool wait);
    int (*register_buffer)(struct sl_kv_io *io, void *base, size_t bytes);
    /* Waits for every read the kernel holds, then releases the engine (not the file). */
    void (*fini)(struct sl_kv_io *io);
};

struct sl_kv_io {
    int fd;
    char *path;                  /* for error details */
    bool direct;                 /* the file is open with O_DIRECT */
    bool sqpoll;
    size_t align;                /* see sl_kv_io_alignment */
    int32_t depth;               /* params queue_depth */
    int32_t queued;              /* reads prepared, not yet given to the kernel */
    int32_t submitted;           /* reads given to the kernel, completion not yet reaped */
    struct sl_kv_io_fault *fault;
    const struct sl_kv_io_engine *eng;

    uint8_t *reg_base;           /* registered buffer, NULL when none */
    size_t reg_bytes;

    /* io_uring engine */
    bool uring;
    struct io_uring ring;
    bool fixed_file;             /* fd registered at index 0 */

    /* posix engine: finished reads waiting for reap, a circular queue of depth entries */
    struct sl_kv_io_done *done;
    int32_t done_head;
};

/* 0 with io->eng set, or -errno when io_uring cannot be used (the caller falls back). */
int sl_kv_io_uring_init(struct sl_kv_io *io, const struct sl_kv_io_params *p);
/* 0 or SL_ENOMEM. */
int sl_kv_io_posix_init(struct sl_kv_io *io);

#endif
