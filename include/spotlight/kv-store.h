/* The KV store: the full K and V of every layer, kept off the GPU, from which each decode step
 * gathers only the positions attention selected.
 *
 * Two tiers behind one API:
 *   - host: all blocks in RAM (page-aligned, NUMA-placed, optionally mlocked; pinned for the GPU
 *     through the host_register hook, e.g. cudaHostRegister). Not persistent.
 *   - file: blocks in one file read through io_uring (O_DIRECT, registered buffers and file,
 *     batched submissions, optional SQPOLL) with a CLOCK cache of hot blocks in RAM in front;
 *     pread/pwrite when io_uring is unavailable. Persistent: a later process reopens it and
 *     resumes without re-prefill. Format: storage/kv-format.h.
 *
 * Layout: a block holds block_tokens consecutive positions of one (layer, KV head): K rows then
 * V rows, each (block_tokens, head_dim) of dtype. With head_dim 64, f16 and 16 tokens a block
 * is exactly one 4 KiB page. Gathers are per (layer, KV head) because Spotlight selects per KV
 * head (the group's summed score), so heads of one layer want different positions; a
 * multi-head gather is a batch of per-head descriptors submitted together.
 *
 * Positions are appended layer by layer (the forward pass produces them that way) and become
 * visible only when committed for all layers at once: a commit is all-or-nothing, and after
 * any failed call what was committed before is still readable. Reads cover committed positions
 * only; the engine keeps the K/V of the chunk it is computing itself.
 *
 * Threads: append/commit/sync/truncate/close from one thread, never concurrently with
 * gathers; gather submit/poll/wait may be called from several threads at once. */
#ifndef SPOTLIGHT_KV_STORE_H
#define SPOTLIGHT_KV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_kv_store *sl_kv_store_t;

enum sl_kv_dtype {
    SL_KV_DTYPE_F16 = 1,
    SL_KV_DTYPE_BF16 = 2,
};

enum sl_kv_tier {
    SL_KV_TIER_HOST = 0,
    SL_KV_TIER_FILE = 1,
};

struct sl_kv_shape {
    int32_t n_layer;
    int32_t n_head_kv;
    int32_t head_dim;       /* elements per row, 1..1024 */
    enum sl_kv_dtype dtype; /* every element is 2 bytes */
    int32_t block_tokens;   /* positions per block: a power of two in [4, 256] */
};

/* Fault injection for tests: the store's I/O layer fails the nth call (0-based, counted over
 * the store's life) of one operation. NULL in production. */
enum sl_kv_io_op {
    SL_KV_IO_OPEN = 0, /* open/create of the file */
    SL_KV_IO_READ,     /* every read: synchronous, or one completion of an asynchronous read */
    SL_KV_IO_WRITE,    /* every write */
    SL_KV_IO_SYNC,     /* fdatasync/fsync */
    SL_KV_IO_RESIZE,   /* ftruncate/fallocate */
    SL_KV_IO_N_OPS
};

struct sl_kv_io_fault {
    enum sl_kv_io_op op;
    int64_t nth;     /* which call fails; -1: none (just count) */
    int err;         /* -errno to fail with (-EIO, -ENOSPC, ...), or 0: a short transfer
                        (half the bytes; for SYNC/OPEN/RESIZE 0 means -EIO) */
    bool persistent; /* fail every call from the nth on, not just the nth */
    int64_t calls[SL_KV_IO_N_OPS]; /* out: calls seen per operation (written by the store) */
};

/* Registers host memory for device DMA (cudaHostRegister). Return 0 or negative; on failure
 * the store keeps the memory pageable and says so once. */
typedef int (*sl_kv_register_fn)(void *ptr, size_t bytes, void *user);
typedef void (*sl_kv_unregister_fn)(void *ptr, void *user);

struct sl_kv_store_params {
    enum sl_kv_tier tier;
    int64_t capacity;          /* positions the store can hold (fixed at create) */
    const char *path;          /* file tier: the store file */
    bool overwrite;            /* create: replace an existing store instead of failing (an empty
                                  file is replaced anyway); nothing else is ever replaced */
    bool recover;              /* open: when the newer header slot is damaged, restore it by a
                                  one-bit repair if its data checks out, else go back to the
                                  older slot (whose next sync overwrites the damaged one).
                                  Without it such a store is refused (SL_ECORRUPT) */
    bool read_only;            /* open: no writes (append, commit, truncate, sync: SL_EINVAL);
                                  shares the lock with other readers; a damaged newer header
                                  slot is reported and the older state read */
    uint8_t fingerprint[32];   /* opaque owner id (model fingerprint); must match on open */

    /* memory placement, both tiers */
    int32_t numa_node;         /* -1: the node of the calling thread's CPU binding, if one */
    bool mlock;                /* lock host memory (falls back with one log line) */
    sl_kv_register_fn host_register;     /* optional, see above */
    sl_kv_unregister_fn host_unregister; /* required when host_register is set */
    void *host_user;

    /* file tier */
    int64_t ram_budget;        /* all RAM the store may hold (cache, pending window, checksums,
                                  tags); the cache gets what the fixed parts leave. 0: 256 MiB.
                                  Too small for queue_depth cache blocks: SL_ENOMEM */
    int64_t max_pending;       /* positions appended ahead of a commit (default 1024) */
    int32_t queue_depth;       /* reads in flight, 1..4096 (default 64) */
    bool buffered_io;          /* false (default): O_DIRECT; falls back when refused */
    bool no_uring;             /* force pread/pwrite (the fallback path) */
    bool sqpoll;               /* io_uring SQPOLL kernel thread */
    int32_t io_cpu;            /* CPU for the SQPOLL thread and io-wq workers; -1: any */

    struct sl_kv_io_fault *fault; /* tests only */
};

/* Defaults: host tier, capacity 0 (must be set), all options off, numa_node -1, io_cpu -1,
 * queue_depth 64, ram_budget 0 (256 MiB), max_pending 1024. */
struct sl_kv_store_params sl_kv_store_default_params(void);

/* Prepares params for a store that feeds CUDA device `device`: host memory is page-locked
 * for DMA (cudaHostRegister) and placed on the device's NUMA node when sysfs tells it.
 * SL_ENODEV (params unchanged: pageable memory near the calling thread) when the build has
 * no CUDA or the device is absent. */
int sl_kv_store_params_for_device(struct sl_kv_store_params *p, int device);

/* Creates an empty store. File tier: nothing but an empty file may be at the path, or a store
 * with overwrite (never a folder, device, FIFO or other file); missing parent folders are
 * made; the name must leave room for the temporary's suffix under NAME_MAX (-ENAMETOOLONG).
 * The file appears complete (written to PATH.partial-PID, opened O_EXCL|O_NOFOLLOW, synced,
 * renamed) or not at all; temporaries of processes that died are removed first.
 * Locking (file tier): a writer (create, open) holds PATH.lock exclusively until close, a
 * read-only open shares it; a second writer gets -EBUSY naming the holder's PID. */
int sl_kv_store_create(const struct sl_kv_shape *shape, const struct sl_kv_store_params *params,
                       sl_kv_store_t *out);

/* Reopens a file-tier store. shape: the expected shape, or NULL to take the file's (read it
 * with sl_kv_store_shape). Wrong magic/version/shape (SL_ESHAPE) or fingerprint (SL_EMISMATCH),
 * truncation (SL_ETRUNCATED) and checksum failures (SL_ECORRUPT) are reported, never used;
 * a damaged header slot that may be the newer is SL_ECORRUPT unless recover or read_only
 * (storage/kv-format.h says what is told apart). Not a regular file: SL_EINVAL.
 * params->capacity is ignored (the file's is used). */
int sl_kv_store_open(const struct sl_kv_shape *shape, const struct sl_kv_store_params *params,
                     sl_kv_store_t *out);

/* Syncs (file tier), then releases files, memory and the I/O ring; pending (uncommitted)
 * positions are dropped. The handle stays valid: every later call fails with SL_ECLOSED until
 * sl_kv_store_free. Returns the sync's error, if any. */
int sl_kv_store_close(sl_kv_store_t s);

/* Closes if open, then frees the handle. NULL is a no-op. */
void sl_kv_store_free(sl_kv_store_t s);

void sl_kv_store_shape(sl_kv_store_t s, struct sl_kv_shape *out);
int64_t sl_kv_store_n_tokens(sl_kv_store_t s); /* committed positions */
int64_t sl_kv_store_capacity(sl_kv_store_t s);

/* Appends the K/V rows of this layer's next n positions (after the committed ones and after
 * this layer's earlier pending rows). k, v: (n, n_head_kv, head_dim) of the store's dtype,
 * copied before return into RAM (file tier: a window of max_pending positions per layer;
 * SL_EBOUNDS beyond it or beyond the capacity). No I/O; nothing becomes visible until
 * sl_kv_store_commit. Host tier: memory is mapped (placed, locked, registered) in segments as
 * positions arrive, so SL_ENOMEM and the one-time fallback warnings come from here. */
int sl_kv_store_append(sl_kv_store_t s, int32_t layer, int64_t n, const void *k, const void *v);

/* Makes the first n pending positions visible; every layer must have appended at least n.
 * tags: n caller values stored with the positions (e.g. token ids), or NULL for zeros.
 * File tier: blocks that become full are written here (one contiguous write per layer).
 * All-or-nothing: on failure (e.g. -ENOSPC) nothing changes, the pending rows are kept, and
 * the commit can be retried or the rows discarded. */
int sl_kv_store_commit(sl_kv_store_t s, int64_t n, const uint32_t *tags);

/* Drops all pending positions of every layer. */
int sl_kv_store_discard(sl_kv_store_t s);

/* Forgets committed positions from n on (n <= n_tokens), e.g. to resume a document whose
 * stored prefix only partly matches. Drops pending positions. File tier: durable on return. */
int sl_kv_store_truncate(sl_kv_store_t s, int64_t n);

/* Makes every committed position durable (file tier: data, checksums, then header, each
 * fdatasync'ed). Host tier: no-op. Fails with SL_EINVAL while positions are pending. */
int sl_kv_store_sync(sl_kv_store_t s);

/* What identifies a file-tier store's committed content without reading its blocks: the
 * positions, and CRC32Cs of their tags, of the checksums of every full block, and of the
 * committed rows of the open blocks. Equal ids mean equal tags and K/V (up to CRC collisions),
 * whatever the path, the generation or the history (e.g. truncated and appended again), so
 * data derived from the K/V (key codes) can be tied to it. 0, or SL_EINVAL for the host tier. */
struct sl_kv_content_id {
    int64_t n_tokens;
    uint32_t tags_crc, blocks_crc, open_crc;
};
int sl_kv_store_content_id(sl_kv_store_t s, struct sl_kv_content_id *out);
bool sl_kv_content_id_equal(const struct sl_kv_content_id *a, const struct sl_kv_content_id *b);

/* Tags of committed positions [p0, p0 + n). */
int sl_kv_store_read_tags(sl_kv_store_t s, int64_t p0, int64_t n, uint32_t *out);

/* One gather: rows of (layer, head) for n positions into k_out, v_out, each (n, head_dim) of
 * the store's dtype: row i holds position idx[i] (any order, duplicates allowed), or
 * position first + i when idx is NULL (a contiguous range). n may be 0. */
struct sl_kv_gather {
    int32_t layer;
    int32_t head;        /* KV head */
    const int64_t *idx;  /* n positions, or NULL for the range [first, first + n) */
    int64_t first;
    int64_t n;
    void *k_out;
    void *v_out;
};

typedef uint64_t sl_kv_ticket_t;

/* Starts a batch of gathers as one request. Every index is checked first (SL_EBOUNDS for a
 * position >= n_tokens or < 0, SL_EINVAL for a bad layer/head; nothing is written then).
 * The descriptors, index arrays and output buffers must stay valid until the request
 * completes. Host tier: completes before return. File tier: reads are in flight on return;
 * at most 256 requests in flight (-EBUSY beyond). */
int sl_kv_store_gather_submit(sl_kv_store_t s, const struct sl_kv_gather *g, int32_t n_gather,
                              sl_kv_ticket_t *ticket);

/* Advances I/O without blocking. 1: the request is complete (its result is consumed and the
 * ticket retired); 0: still running; < 0: it failed (ticket retired; outputs unspecified).
 * An unknown or retired ticket gives SL_EINVAL. */
int sl_kv_store_gather_poll(sl_kv_store_t s, sl_kv_ticket_t ticket);

/* Blocks until the request completes; 0 or its error (ticket retired either way). */
int sl_kv_store_gather_wait(sl_kv_store_t s, sl_kv_ticket_t ticket);

/* Submit + wait. */
int sl_kv_store_gather(sl_kv_store_t s, const struct sl_kv_gather *g, int32_t n_gather);

/* Contiguous rows of (layer, head): positions [p0, p0 + n), synchronously. */
int sl_kv_store_read_range(sl_kv_store_t s, int32_t layer, int32_t head, int64_t p0, int64_t n,
                           void *k_out, void *v_out);

struct sl_kv_store_stats {
    int64_t n_tokens, capacity;
    int64_t block_bytes;      /* K+V bytes of one block */
    int64_t ram_bytes;        /* RAM the store holds now (host tier: the K/V itself) */
    int64_t ram_budget;       /* file tier: the configured budget */
    int64_t disk_bytes;       /* file tier: bytes of the file in use (blocks written) */
    int64_t cache_slots;      /* file tier: blocks the cache holds */
    int64_t cache_hits, cache_misses; /* blocks found / not found in the cache (or tail) */
    int64_t bytes_read, bytes_written; /* file I/O */
    int64_t reads, writes;             /* file I/O calls / completions */
    int64_t gathers, rows_gathered;
    bool uring, direct_io, registered_buffers, sqpoll;
    bool pinned;              /* host_register succeeded */
    bool mlocked;
    int32_t numa_node;        /* node memory is bound to, or -1 */
};

void sl_kv_store_get_stats(sl_kv_store_t s, struct sl_kv_store_stats *out);
void sl_kv_store_reset_counters(sl_kv_store_t s); /* hits, misses, bytes, calls, gathers */

/* Bytes of K+V one position takes over all layers. */
int64_t sl_kv_shape_bytes_per_token(const struct sl_kv_shape *shape);

#ifdef __cplusplus
}
#endif
#endif
