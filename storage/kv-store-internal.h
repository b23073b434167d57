/* The KV store's state, shared by its files:
 *   kv-store.c       lifecycle, params, the tier-independent calls, stats
 *   kv-store-host.c  host tier: blocks in RAM segments
 *   kv-store-file.c  file tier: create/open, appends, sync, truncate, tail blocks
 *   kv-gather.c      gather requests: planning, cache, reads in flight, copies
 * Not installed. */
#ifndef SL_STORAGE_KV_STORE_INTERNAL_H
#define SL_STORAGE_KV_STORE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "spotlight/kv-store.h"
#include "storage/block-cache.h"
#include "storage/host-mem.h"
#include "storage/kv-host-map.h"
#include "storage/kv-format.h"
#include "storage/kv-io.h"

#define SL_KV_MAX_REQUESTS 256

/* A run of consecutive planned positions of one request that read the same block. */
struct sl_kv_run {
    int32_t slot;  /* cache slot (pinned), or -1: the layer's tail buffer */
    int32_t count; /* positions */
};

struct sl_kv_cursor {
    int32_t d; /* descriptor */
    int64_t i; /* position within it */
};

struct sl_kv_request {
    uint64_t ticket; /* 0: free */
    int err;
    bool done;
    const struct sl_kv_gather *g;
    int32_t n_g;
    struct sl_kv_cursor copy, plan; /* copy <= plan; runs cover [copy, plan) */
    struct sl_kv_run *runs;         /* ring of run_cap */
    int32_t run_head, run_len;
    int64_t last_key;               /* block of the newest run, to extend it */
};

struct sl_kv_store {
    bool open;
    enum sl_kv_tier tier;
    struct sl_kv_layout layout;
    struct sl_kv_store_params params;
    char *path;
    uint8_t fingerprint[32];

    int64_t n_tokens;  /* committed */
    uint64_t epoch;    /* bumped by every truncate (storage/kv-host-map.h) */
    int64_t *pending;  /* (n_layer) appended, not committed */
    uint32_t *tags;    /* (capacity) in host memory `tags_mem` */
    uint32_t tags_crc; /* of tags[0, n_tokens) */

    /* host tier: segments of seg_blocks = 2^seg_shift blocks of every (layer, head),
     * allocated on demand. Block (l, b, h) at seg[b >> seg_shift] +
     * ((l * seg_blocks + b % seg_blocks) * H + h) * block_bytes (sl_kv_host_block_offset) */
    struct sl_host_mem *segs;
    int64_t n_segs, seg_blocks;
    int32_t seg_shift;

    /* file tier */
    struct sl_kv_io *io;
    struct sl_host_mem tags_mem, crc_mem, win_mem, cache_mem;
    uint32_t *crc;        /* (n_layer, n_blocks, H) block checksums, mirror of the file */
    /* Per layer, blocks [win_first, win_first + win_blocks) of every head, laid out as in the
     * file ((block, head) order): the committed partial block first, then pending rows.
     * win_first = n_tokens / block_tokens for every layer. */
    uint8_t *win;         /* (n_layer, win_blocks, H) blocks of block_stride */
    int64_t win_blocks;
    int64_t win_first;
    int64_t crc_dirty_lo, crc_dirty_hi; /* block range whose checksums sync must write */
    int64_t tags_synced;  /* tags before this position are on disk */
    uint64_t generation;
    int slot;             /* current header slot */
    bool stale;           /* committed state differs from the current header */
    int lock_fd;          /* PATH.lock, held (exclusive, or shared when read-only); -1: none */
    struct sl_block_cache cache;
    int32_t *slot_done;   /* (n_slots) bytes read so far into a LOADING slot */

    /* gathers */
    pthread_mutex_t lock;
    struct sl_kv_request req[SL_KV_MAX_REQUESTS];
    uint64_t next_ticket;
    int32_t run_cap;

    /* counters */
    int64_t hits, misses, bytes_read, bytes_written, reads, writes, gathers, rows;
    bool registered_io, pinned, mlocked;
    int32_t numa_node;
};

static inline struct sl_host_mem_params sl_kv_mem_params(const struct sl_kv_store *s) {
    struct sl_host_mem_params p = {
        .numa_node = s->params.numa_node,
        .mlock = s->params.mlock,
        .reg = s->params.host_register,
        .unreg = s->params.host_unregister,
        .user = s->params.host_user,
    };
    return p;
}

/* Notes what a host allocation achieved in the store's stats. */
void sl_kv_note_mem(struct sl_kv_store *s, const struct sl_host_mem *m);

/* Per-layer pending counts, tags and the gather tables; once the layout is known. */
int sl_kv_alloc_common(struct sl_kv_store *s);

/* host tier */
int sl_kv_host_init(struct sl_kv_store *s);
void sl_kv_host_free(struct sl_kv_store *s);
/* Maps the segments positions [pos, pos + n) need, so an append cannot fail half-way. */
int sl_kv_host_reserve(struct sl_kv_store *s, int64_t pos, int64_t n);
static inline uint8_t *sl_kv_host_block(const struct sl_kv_store *s, int32_t layer,
                                        int64_t block, int32_t head) {
    return (uint8_t *)s->segs[block >> s->seg_shift].ptr +
           sl_kv_host_block_offset(s->seg_shift, s->layout.shape.n_head_kv,
                                   s->layout.block_bytes, layer, block, head);
}
int64_t sl_kv_host_ram(const struct sl_kv_store *s);

/* file tier */
int sl_kv_file_create(struct sl_kv_store *s);
int sl_kv_file_open(struct sl_kv_store *s, const struct sl_kv_shape *expect);
void sl_kv_file_free(struct sl_kv_store *s);
int sl_kv_file_sync(struct sl_kv_store *s);
int sl_kv_file_commit(struct sl_kv_store *s, int64_t n);
int sl_kv_file_truncate(struct sl_kv_store *s, int64_t n);
int64_t sl_kv_file_ram(const struct sl_kv_store *s);
void sl_kv_file_content_id(const struct sl_kv_store *s, struct sl_kv_content_id *out);
/* Checks a block read from disk against its checksum. */
int sl_kv_file_verify(const struct sl_kv_store *s, int64_t key, const uint8_t *data);
/* The window copy of block (layer, block, head) when block lies in the window, else NULL. */
const uint8_t *sl_kv_file_window_block(const struct sl_kv_store *s, int32_t layer, int64_t block,
                                       int32_t head);

/* names around the store file (kv-store-path.c) */
/* The store's name leaves room for its suffixes under NAME_MAX; not a folder name. */
int sl_kv_path_check_name(const char *path);
/* Locks PATH.lock (created if missing): exclusive for a writer (records this PID), shared for
 * a reader. -EBUSY with a detail naming the holder when another has it. */
int sl_kv_path_lock(const char *path, bool exclusive, int *fd);
/* Releases it; the last holder removes PATH.lock. fd -1: no-op. */
void sl_kv_path_unlock(const char *path, int fd);
/* "PATH.partial-PID", malloc'd. */
char *sl_kv_path_partial(const char *path, long pid);
/* Removes PATH.partial-PID files of processes that no longer run (call with the lock held). */
void sl_kv_path_remove_stale(const char *path);
/* Whether create may put a store at path: 0 when nothing is there, 1 when what is there may be
 * replaced (an empty file, or a store with overwrite); a non-regular file or one that is not a store: refused always;
 * -EEXIST otherwise. Never blocks on a FIFO or device. */
int sl_kv_path_existing(const char *path, bool overwrite);

/* gathers */
int sl_kv_gather_init(struct sl_kv_store *s);
void sl_kv_gather_free(struct sl_kv_store *s);
/* Waits out every request in flight (close, truncate). */
void sl_kv_gather_drain(struct sl_kv_store *s);

#endif
