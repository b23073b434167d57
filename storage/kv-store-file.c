/* File tier: the store file (format in kv-format.h), the RAM it needs sized from one budget,
 * creation that is atomic (temporary name, sync, rename), reopening with every check,
 * commits that write the blocks they fill, and the two-slot durable sync. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/internal.h"
#include "storage/atomic-file.h"
#include "storage/crc32c.h"
#include "storage/kv-store-internal.h"
#include "storage/fs-sync.h"

#define DEFAULT_RAM_BUDGET (256ll << 20)
#define CACHE_INDEX_BYTES_PER_SLOT 64 /* key, state, pins, map entries */

static int64_t win_row_bytes(const struct sl_kv_store *s) {
    return (int64_t)s->layout.shape.n_head_kv * s->layout.block_stride;
}

static uint8_t *win_layer(const struct sl_kv_store *s, int32_t layer) {
    return s->win + (int64_t)layer * s->win_blocks * win_row_bytes(s);
}

const uint8_t *sl_kv_file_window_block(const struct sl_kv_store *s, int32_t layer, int64_t block,
                                       int32_t head) {
    if (block < s->win_first || block >= s->win_first + s->win_blocks) return NULL;
    return win_layer(s, layer) + (block - s->win_first) * win_row_bytes(s) +
           (int64_t)head * s->layout.block_stride;
}

static struct sl_kv_io_params io_params(const struct sl_kv_store *s) {
    struct sl_kv_io_params p = {
        .queue_depth = s->params.queue_depth,
        .direct = !s->params.buffered_io,
        .no_uring = s->params.no_uring,
        .sqpoll = s->params.sqpoll,
        .io_cpu = s->params.io_cpu,
        .fault = s->params.fault,
    };
    return p;
}

/* Splits the budget: checksums, the pending window and tags are fixed by the shape; the cache
 * gets the rest and must hold at least queue_depth blocks so the queue can be kept full. */
static int plan_and_alloc(struct sl_kv_store *s) {
    const struct sl_kv_layout *l = &s->layout;
    int64_t budget = s->params.ram_budget ? s->params.ram_budget : DEFAULT_RAM_BUDGET;
    s->params.ram_budget = budget;
    s->win_blocks = s->params.max_pending / l->shape.block_tokens + 2;
    int64_t win_bytes = (int64_t)l->shape.n_layer * s->win_blocks * win_row_bytes(s);
    int64_t fixed = (int64_t)sl_host_mem_round((size_t)l->crc_bytes) +
                    (int64_t)sl_host_mem_round((size_t)win_bytes) + (int64_t)s->tags_mem.bytes;
    int64_t per_slot = l->block_stride + CACHE_INDEX_BYTES_PER_SLOT;
    int64_t slots = budget > fixed ? (budget - fixed) / per_slot : 0;
    /* The arena is rounded up to whole (huge) pages: shrink until that still fits. */
    while (slots > 0 && (int64_t)sl_host_mem_round((size_t)(slots * l->block_stride)) +
                                slots * CACHE_INDEX_BYTES_PER_SLOT > budget - fixed)
        slots -= slots > 64 ? slots / 64 : 1;
    int64_t all_blocks = (int64_t)l->shape.n_layer * l->shape.n_head_kv * l->n_blocks;
    if (slots < s->params.queue_depth)
        return sl_fail(SL_ENOMEM, "RAM budget of %lld bytes too small: checksums %lld + pending "
                       "window %lld + tags %lld leave room for %lld cache blocks, the queue "
                       "depth needs %d (a budget of at least %lld)", (long long)budget,
                       (long long)l->crc_bytes, (long long)win_bytes,
                       (long long)s->tags_mem.bytes, (long long)slots, s->params.queue_depth,
                       (long long)(fixed + per_slot * s->params.queue_depth));
    if (slots > all_blocks) slots = all_blocks > s->params.queue_depth ? all_blocks : s->params.queue_depth;
    if (slots > INT32_MAX / 2) slots = INT32_MAX / 2;

    struct sl_host_mem_params mp = sl_kv_mem_params(s);
    struct sl_host_mem_params plain = mp;
    plain.reg = NULL; /* checksums and the window never travel to a device */
    plain.mlock = false;
    int err = sl_host_mem_alloc(&s->crc_mem, (size_t)l->crc_bytes, &plain);
    if (!err) err = sl_host_mem_alloc(&s->win_mem, (size_t)win_bytes, &plain);
    if (!err) err = sl_host_mem_alloc(&s->cache_mem, (size_t)(slots * l->block_stride), &mp);
    if (err) return err;
    sl_kv_note_mem(s, &s->cache_mem);
    s->crc = s->crc_mem.ptr;
    s->win = s->win_mem.ptr;
    s->slot_done = calloc((size_t)slots, sizeof *s->slot_done);
    if (!s->slot_done) return sl_fail(SL_ENOMEM, "cannot allocate the cache slot table");
    return sl_block_cache_init(&s->cache, s->cache_mem.ptr, (int32_t)slots, l->block_stride);
}

static int open_io(struct sl_kv_store *s, const char *path, int flags) {
    struct sl_kv_io_params p = io_params(s);
    int err = sl_kv_io_open(path, flags, &p, &s->io);
    if (err) return err;
    /* The cache is where reads land: register it once so reads skip the page pinning. */
    if (sl_kv_io_uses_uring(s->io))
        (void)sl_kv_io_register_buffer(s->io, s->cache_mem.ptr, s->cache_mem.bytes);
    return 0;
}

void sl_kv_file_free(struct sl_kv_store *s) {
    sl_kv_io_close(s->io);
    s->io = NULL;
    sl_kv_path_unlock(s->path, s->lock_fd);
    s->lock_fd = -1;
    sl_block_cache_free(&s->cache);
    free(s->slot_done);
    s->slot_done = NULL;
    sl_host_mem_free(&s->cache_mem);
    sl_host_mem_free(&s->win_mem);
    sl_host_mem_free(&s->crc_mem);
    s->crc = NULL;
    s->win = NULL;
}

int64_t sl_kv_file_ram(const struct sl_kv_store *s) {
    return (int64_t)(s->crc_mem.bytes + s->win_mem.bytes + s->cache_mem.bytes) +
           (int64_t)s->cache.n_slots * CACHE_INDEX_BYTES_PER_SLOT;
}

int sl_kv_file_verify(const struct sl_kv_store *s, int64_t key, const uint8_t *data) {
    uint32_t want = s->crc[key], got = sl_crc32c(0, data, (size_t)s->layout.block_bytes);
    if (want == got) return 0;
    int64_t H = s->layout.shape.n_head_kv, per_layer = s->layout.n_blocks * H;
    return sl_fail(SL_ECORRUPT, "KV block (layer %lld, positions %lld.., head %lld) of %s: "
                   "checksum %08x, expected %08x", (long long)(key / per_layer),
                   (long long)(key % per_layer / H * s->layout.shape.block_tokens),
                   (long long)(key % H), s->path, got, want);
}

/* ---- header and tail region ---- */

static uint32_t crc_of_zeros(int64_t bytes) {
    static const uint8_t zero[4096];
    uint32_t crc = 0;
    for (int64_t done = 0; done < bytes; done += (int64_t)sizeof zero)
        crc = sl_crc32c(crc, zero, sizeof zero);
    return crc;
}

static int write_header(struct sl_kv_store *s, int slot, uint64_t generation, uint32_t tail_crc) {
    struct sl_kv_header h = {
        .layout = s->layout,
        .generation = generation,
        .n_tokens = s->n_tokens,
        .tail_crc = tail_crc,
        .tags_crc = s->tags_crc,
    };
    memcpy(h.fingerprint, s->fingerprint, 32);
    uint8_t *buf = aligned_alloc(SL_KV_ALIGN, SL_KV_HEADER_BYTES);
    if (!buf) return sl_fail(SL_ENOMEM, "cannot allocate a header buffer");
    sl_kv_header_encode(&h, slot, buf);
    int err = sl_kv_io_pwrite_all(s->io, buf, SL_KV_HEADER_BYTES, (uint64_t)slot * SL_KV_HEADER_BYTES);
    free(buf);
    if (!err) {
        s->writes++;
        s->bytes_written += SL_KV_HEADER_BYTES;
    }
    return err;
}

static int write_counted(struct sl_kv_store *s, const void *buf, int64_t len, int64_t off) {
    int err = sl_kv_io_pwrite_all(s->io, buf, (size_t)len, (uint64_t)off);
    if (err) return err;
    s->writes++;
    s->bytes_written += len;
    return 0;
}

static int read_counted(struct sl_kv_store *s, void *buf, int64_t len, int64_t off) {
    int err = sl_kv_io_pread_all(s->io, buf, (size_t)len, (uint64_t)off);
    if (err) return err;
    s->reads++;
    s->bytes_read += len;
    return 0;
}

/* Page-aligned byte range [lo, hi) of a region, clipped to its padded size. */
static void page_range(int64_t lo, int64_t hi, int64_t region_bytes, int64_t *a, int64_t *b) {
    *a = lo / SL_KV_ALIGN * SL_KV_ALIGN;
    *b = (hi + SL_KV_ALIGN - 1) / SL_KV_ALIGN * SL_KV_ALIGN;
    if (*b > region_bytes) *b = region_bytes;
}

int sl_kv_file_sync(struct sl_kv_store *s) {
    if (!s->stale) return 0;
    const struct sl_kv_layout *l = &s->layout;
    const int32_t H = l->shape.n_head_kv;
    int err = 0;
    /* 1. checksums of blocks filled since the last sync, and the new tags */
    if (s->crc_dirty_hi > s->crc_dirty_lo) {
        for (int32_t layer = 0; layer < l->shape.n_layer && !err; layer++) {
            int64_t lo = sl_kv_layout_block_index(l, layer, s->crc_dirty_lo, 0) * 4;
            int64_t hi = sl_kv_layout_block_index(l, layer, s->crc_dirty_hi, 0) * 4;
            int64_t a, b;
            page_range(lo, hi, l->crc_bytes, &a, &b);
            err = write_counted(s, (uint8_t *)s->crc + a, b - a, l->crc_off + a);
        }
    }
    if (!err && s->n_tokens > s->tags_synced) {
        int64_t a, b;
        page_range(s->tags_synced * 4, s->n_tokens * 4, l->tag_bytes, &a, &b);
        err = write_counted(s, (uint8_t *)s->tags + a, b - a, l->tag_off + a);
    }
    if (!err) err = sl_kv_io_datasync(s->io);
    /* 2. the open blocks into the other slot's tail region, then that slot's header */
    int slot = s->slot ^ 1;
    uint32_t tail_crc = 0;
    for (int32_t layer = 0; layer < l->shape.n_layer && !err; layer++) {
        const uint8_t *row = win_layer(s, layer);
        tail_crc = sl_crc32c(tail_crc, row, (size_t)win_row_bytes(s));
        err = write_counted(s, row, win_row_bytes(s),
                            l->tail_off[slot] + (int64_t)layer * H * l->block_stride);
    }
    if (!err) err = write_header(s, slot, s->generation + 1, tail_crc);
    if (!err) err = sl_kv_io_datasync(s->io);
    if (err) return sl_fail(err, "KV store sync of %s failed: %s", s->path, sl_error_detail());
    s->slot = slot;
    s->generation++;
    s->crc_dirty_lo = s->crc_dirty_hi = 0;
    s->tags_synced = s->n_tokens;
    s->stale = false;
    return 0;
}

void sl_kv_file_content_id(const struct sl_kv_store *s, struct sl_kv_content_id *out) {
    const struct sl_kv_layout *l = &s->layout;
    const int32_t H = l->shape.n_head_kv, T = l->shape.block_tokens;
    const int64_t full = s->n_tokens / T, rows = s->n_tokens % T;
    out->n_tokens = s->n_tokens;
    out->tags_crc = s->tags_crc;
    out->blocks_crc = out->open_crc = 0;
    for (int32_t layer = 0; layer < l->shape.n_layer; layer++) {
        /* a layer's full blocks are (block, head) entries [0, full * H) of its checksum run */
        out->blocks_crc = sl_crc32c(out->blocks_crc, s->crc + sl_kv_layout_block_index(l, layer, 0, 0),
                                    sizeof *s->crc * (size_t)(full * H));
        for (int32_t h = 0; rows && h < H; h++) {
            const uint8_t *b = sl_kv_file_window_block(s, layer, full, h);
            out->open_crc = sl_crc32c(out->open_crc, b, (size_t)(rows * l->row_bytes));                  /* K */
            out->open_crc = sl_crc32c(out->open_crc, b + T * l->row_bytes, (size_t)(rows * l->row_bytes)); /* V */
        }
    }
}

/* ---- create and open ---- */

static int rename_into_place(const char *tmp, const char *path, bool overwrite) {
    if (overwrite) return rename(tmp, path) == 0 ? 0 : -errno;
#ifdef SYS_renameat2
    if (syscall(SYS_renameat2, AT_FDCWD, tmp, AT_FDCWD, path, 1 /* RENAME_NOREPLACE */) == 0)
        return 0;
    if (errno != ENOSYS && errno != EINVAL) return -errno;
#endif
    /* link() fails with EEXIST rather than replacing, which is the no-replace rename we need */
    if (link(tmp, path) != 0) return -errno;
    unlink(tmp);
    return 0;
}

/* Checks and the lock every writer takes before any work: the name fits, the folder exists
 * (made if missing), no other writer, no stale temporaries. */
static int writer_prologue(struct sl_kv_store *s, bool make_parent) {
    int err = sl_kv_path_check_name(s->path);
    if (!err && make_parent && (err = sl_mkdir_parents(s->path)))
        err = sl_fail(err, "cannot create KV store %s: %s", s->path, sl_error_detail());
    if (!err) err = sl_kv_path_lock(s->path, true, &s->lock_fd);
    if (!err) sl_kv_path_remove_stale(s->path);
    return err;
}

int sl_kv_file_create(struct sl_kv_store *s) {
    const struct sl_kv_layout *l = &s->layout;
    int err = writer_prologue(s, true);
    int there = err ? 0 : sl_kv_path_existing(s->path, s->params.overwrite);
    if (err || (err = there < 0 ? there : 0)) return err;
    if ((err = plan_and_alloc(s))) return err;
    char *tmp = sl_kv_path_partial(s->path, (long)getpid());
    if (!tmp) return sl_fail(SL_ENOMEM, "out of memory");

    /* O_EXCL|O_NOFOLLOW: a name planted here (a symlink to a file of the user's) fails the
     * create instead of being followed; the prologue already removed our PID's stale one */
    err = open_io(s, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW);
    bool made = !err;
    if (!err) err = sl_kv_io_resize(s->io, (uint64_t)l->file_size);
    /* Two valid slots from the start, so a torn first sync still leaves one to fall back on. */
    uint32_t zero_tail = crc_of_zeros(l->tail_bytes);
    if (!err) err = write_header(s, 0, 1, zero_tail);
    if (!err) err = write_header(s, 1, 2, zero_tail);
    if (!err) err = sl_kv_io_datasync(s->io);
    if (!err) {
        err = rename_into_place(tmp, s->path, there == 1);
        if (err) sl_fail(err, "cannot move %s into place at %s: %s", tmp, s->path, strerror(-err));
    }
    if (!err) made = false; /* renamed: nothing at tmp any more */
    if (!err) err = sl_kv_io_set_path(s->io, s->path);
    if (!err && (err = sl_fsync_parent_dir(s->path)))
        sl_fail(err, "the new store may not survive a crash: %s", sl_error_detail());
    if (err) {
        char detail[512];
        snprintf(detail, sizeof detail, "%s", sl_error_detail());
        sl_kv_io_close(s->io);
        s->io = NULL;
        if (made) unlink(tmp);
        free(tmp);
        return sl_fail(err, "cannot create KV store %s: %s", s->path, detail);
    }
    free(tmp);
    s->generation = 2;
    s->slot = 1;
    return 0;
}

static int check_shape(const struct sl_kv_shape *want, const struct sl_kv_shape *got,
                       const char *path) {
    if (want->n_layer == got->n_layer && want->n_head_kv == got->n_head_kv &&
        want->head_dim == got->head_dim && want->dtype == got->dtype &&
        want->block_tokens == got->block_tokens)
        return 0;
    return sl_fail(SL_ESHAPE, "KV store %s holds layers %d, KV heads %d, head_dim %d, dtype %d, "
                   "block %d; expected %d, %d, %d, %d, %d", path, got->n_layer, got->n_head_kv,
                   got->head_dim, (int)got->dtype, got->block_tokens, want->n_layer,
                   want->n_head_kv, want->head_dim, (int)want->dtype, want->block_tokens);
}

static int load_state(struct sl_kv_store *s, const struct sl_kv_header *h) {
    const struct sl_kv_layout *l = &s->layout;
    int64_t size = sl_kv_io_size(s->io);
    if (size < 0) return (int)size;
    if (size < l->file_size)
        return sl_fail(SL_ETRUNCATED, "KV store %s is %lld bytes, its header declares %lld",
                       s->path, (long long)size, (long long)l->file_size);
    int err = read_counted(s, s->crc, l->crc_bytes, l->crc_off);
    if (err) return err;
    if (h->n_tokens > 0) {
        int64_t bytes = (h->n_tokens * 4 + SL_KV_ALIGN - 1) / SL_KV_ALIGN * SL_KV_ALIGN;
        if ((err = read_counted(s, s->tags, bytes, l->tag_off))) return err;
        if (sl_crc32c(0, s->tags, (size_t)h->n_tokens * 4) != h->tags_crc)
            return sl_fail(SL_ECORRUPT, "KV store %s: position tags fail their checksum",
                           s->path);
    }
    uint32_t tail_crc = 0;
    for (int32_t layer = 0; layer < l->shape.n_layer; layer++) {
        uint8_t *row = win_layer(s, layer);
        err = read_counted(s, row, win_row_bytes(s),
                           l->tail_off[s->slot] + (int64_t)layer * l->shape.n_head_kv * l->block_stride);
        if (err) return err;
        tail_crc = sl_crc32c(tail_crc, row, (size_t)win_row_bytes(s));
    }
    if (tail_crc != h->tail_crc)
        return sl_fail(SL_ECORRUPT, "KV store %s: the open blocks (tail region %d) fail their "
                       "checksum", s->path, s->slot);
    return 0;
}

int sl_kv_file_open(struct sl_kv_store *s, const struct sl_kv_shape *expect) {
    const bool ro = s->params.read_only;
    int err = ro ? sl_kv_path_lock(s->path, false, &s->lock_fd) : writer_prologue(s, false);
    if (err) return err;
    const int flags = ro ? O_RDONLY : O_RDWR;
    struct sl_kv_io_params p = io_params(s);
    err = sl_kv_io_open(s->path, flags, &p, &s->io);
    if (err) return sl_fail(err, "cannot open KV store %s: %s", s->path, sl_error_detail());
    uint8_t *hdr = aligned_alloc(SL_KV_ALIGN, 2 * SL_KV_HEADER_BYTES);
    if (!hdr) return sl_fail(SL_ENOMEM, "out of memory");
    err = sl_kv_io_pread_all(s->io, hdr, 2 * SL_KV_HEADER_BYTES, 0);
    if (err == SL_ETRUNCATED)
        err = sl_fail(SL_EBADMAGIC, "%s is too short to be a KV store", s->path);
    struct sl_kv_pick pk;
    unsigned pick_flags = (s->params.recover ? SL_KV_PICK_RECOVER : 0) | (ro ? SL_KV_PICK_READ_ONLY : 0);
    if (!err) err = sl_kv_header_pick(hdr, pick_flags, &pk);
    free(hdr);
    if (err) return sl_fail(err, "KV store %s: %s", s->path, sl_error_detail());
    const struct sl_kv_header *h = &pk.h;
    if (expect && (err = check_shape(expect, &h->layout.shape, s->path))) return err;
    if (memcmp(h->fingerprint, s->fingerprint, 32) != 0)
        return sl_fail(SL_EMISMATCH, "KV store %s was made for a different model (fingerprint "
                       "differs)", s->path);
    /* The ring was sized before the layout was known; reopen it now that the cache exists. */
    sl_kv_io_close(s->io);
    s->io = NULL;
    s->layout = h->layout;
    s->params.capacity = h->layout.capacity;
    if ((err = sl_kv_alloc_common(s)) || (err = plan_and_alloc(s))) return err;
    if ((err = open_io(s, s->path, flags))) return err;
    s->slot = pk.slot;
    err = load_state(s, h);
    if (err == SL_ECORRUPT && pk.has_fallback) { /* recover: the newer state's data is damaged */
        sl_log(SL_LOG_WARN, "KV store %s: generation %llu fails its checks (%s); recovering header "
               "slot %d (generation %llu, %lld positions)", s->path, (unsigned long long)h->generation,
               sl_error_detail(),
               pk.fb_slot, (unsigned long long)pk.fb.generation, (long long)pk.fb.n_tokens);
        h = &pk.fb;
        s->slot = pk.fb_slot;
        err = load_state(s, h);
    }
    if (err) return err;
    s->n_tokens = h->n_tokens;
    s->tags_crc = h->tags_crc;
    s->tags_synced = h->n_tokens;
    s->win_first = h->n_tokens / h->layout.shape.block_tokens;
    s->generation = h->generation;
    /* recover: the first sync (at the latest, close) rewrites the other slot, so both slots
     * are valid again whichever was damaged */
    s->stale = s->params.recover && !ro;
    return 0;
}

/* ---- commits, truncation ---- */

int sl_kv_file_commit(struct sl_kv_store *s, int64_t n) {
    const struct sl_kv_layout *l = &s->layout;
    const int32_t H = l->shape.n_head_kv;
    int64_t full = (s->n_tokens + n) / l->shape.block_tokens - s->win_first;
    s->stale = true;
    if (full == 0) return 0;
    /* Every layer's newly full blocks are one contiguous run in the file. Nothing in memory
     * changes until all are written, so a failure leaves the commit retryable. */
    for (int32_t layer = 0; layer < l->shape.n_layer; layer++) {
        uint8_t *win = win_layer(s, layer);
        for (int64_t b = 0; b < full; b++)
            for (int32_t h = 0; h < H; h++)
                s->crc[sl_kv_layout_block_index(l, layer, s->win_first + b, h)] =
                    sl_crc32c(0, win + (b * H + h) * l->block_stride, (size_t)l->block_bytes);
        int err = write_counted(s, win, full * win_row_bytes(s),
                                sl_kv_layout_block_offset(l, layer, s->win_first, 0));
        if (err)
            return sl_fail(err, "KV store %s: writing %lld blocks of layer %d failed: %s",
                           s->path, (long long)(full * H), layer, sl_error_detail());
    }
    if (s->crc_dirty_hi <= s->crc_dirty_lo) s->crc_dirty_lo = s->win_first;
    s->crc_dirty_hi = s->win_first + full;
    for (int32_t layer = 0; layer < l->shape.n_layer; layer++) {
        uint8_t *win = win_layer(s, layer);
        int64_t keep = (s->win_blocks - full) * win_row_bytes(s);
        memmove(win, win + full * win_row_bytes(s), (size_t)keep);
        memset(win + keep, 0, (size_t)(full * win_row_bytes(s)));
    }
    s->win_first += full;
    return 0;
}

int sl_kv_file_truncate(struct sl_kv_store *s, int64_t n) {
    const struct sl_kv_layout *l = &s->layout;
    const int32_t T = l->shape.block_tokens, H = l->shape.n_head_kv;
    int64_t first = n / T;
    /* The block that becomes open may already be full on disk: read and check it for every
     * layer before anything changes, so a failed read leaves the store as it was. */
    uint8_t *rows = NULL;
    if (first < s->win_first && n % T) {
        rows = aligned_alloc(SL_KV_ALIGN, (size_t)(l->shape.n_layer * win_row_bytes(s)));
        if (!rows) return sl_fail(SL_ENOMEM, "out of memory");
        for (int32_t layer = 0; layer < l->shape.n_layer; layer++) {
            uint8_t *dst = rows + layer * win_row_bytes(s);
            int err = read_counted(s, dst, win_row_bytes(s),
                                   sl_kv_layout_block_offset(l, layer, first, 0));
            for (int32_t h = 0; !err && h < H; h++)
                err = sl_kv_file_verify(s, sl_kv_layout_block_index(l, layer, first, h),
                                        dst + h * l->block_stride);
            if (err) {
                free(rows);
                return err;
            }
        }
    }
    memset(s->pending, 0, sizeof *s->pending * (size_t)l->shape.n_layer);
    if (first < s->win_first) {
        memset(s->win, 0, s->win_mem.bytes);
        for (int32_t layer = 0; rows && layer < l->shape.n_layer; layer++)
            memcpy(win_layer(s, layer), rows + layer * win_row_bytes(s), (size_t)win_row_bytes(s));
        s->win_first = first;
    }
    free(rows);
    s->n_tokens = n;
    s->tags_crc = sl_crc32c(0, s->tags, (size_t)n * 4);
    if (s->tags_synced > n) s->tags_synced = n;
    if (s->crc_dirty_hi > first) s->crc_dirty_hi = first > s->crc_dirty_lo ? first : s->crc_dirty_lo;
    pthread_mutex_lock(&s->lock);
    sl_block_cache_clear(&s->cache);
    pthread_mutex_unlock(&s->lock);
    /* Both header slots must forget the dropped positions before their blocks are rewritten:
     * otherwise a torn later sync could fall back to a slot that still claims them. */
    s->stale = true;
    int err = sl_kv_file_sync(s);
    s->stale = true;
    if (!err) err = sl_kv_file_sync(s);
    return err;
}
