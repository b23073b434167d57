/* KV store lifecycle and the calls both tiers share: parameter checks, commit, tags, stats.
 * The tiers live in kv-store-host.c and kv-store-file.c, gathers in kv-gather.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "storage/crc32c.h"
#include "storage/kv-store-internal.h"

struct sl_kv_store_params sl_kv_store_default_params(void) {
    struct sl_kv_store_params p;
    memset(&p, 0, sizeof p);
    p.tier = SL_KV_TIER_HOST;
    p.numa_node = -1;
    p.io_cpu = -1;
    p.queue_depth = 64;
    p.max_pending = 1024;
    return p;
}

int64_t sl_kv_shape_bytes_per_token(const struct sl_kv_shape *shape) {
    return 2 * (int64_t)shape->n_layer * shape->n_head_kv * shape->head_dim * 2;
}

void sl_kv_note_mem(struct sl_kv_store *s, const struct sl_host_mem *m) {
    if (!m->ptr) return;
    s->pinned = s->pinned || m->registered;
    s->mlocked = s->mlocked || m->locked;
    if (m->numa_node >= 0) s->numa_node = m->numa_node;
}

static int check_params(const struct sl_kv_store_params *p) {
    if (!p) return sl_fail(SL_EINVAL, "no KV store params given");
    if (p->tier != SL_KV_TIER_HOST && p->tier != SL_KV_TIER_FILE)
        return sl_fail(SL_EINVAL, "unknown KV store tier %d", (int)p->tier);
    if (p->tier == SL_KV_TIER_FILE && (!p->path || !p->path[0]))
        return sl_fail(SL_EINVAL, "the file tier needs a path");
    if (p->queue_depth < 1 || p->queue_depth > 4096)
        return sl_fail(SL_EINVAL, "queue depth %d outside 1..4096", p->queue_depth);
    if (p->ram_budget < 0) return sl_fail(SL_EINVAL, "negative RAM budget");
    if (p->tier == SL_KV_TIER_FILE && p->max_pending < 1)
        return sl_fail(SL_EINVAL, "max_pending %lld must be at least 1", (long long)p->max_pending);
    if (p->host_register && !p->host_unregister)
        return sl_fail(SL_EINVAL, "host_register given without host_unregister");
    return 0;
}

static int store_new(const struct sl_kv_store_params *p, struct sl_kv_store **out) {
    struct sl_kv_store *s = calloc(1, sizeof *s);
    if (!s) return sl_fail(SL_ENOMEM, "cannot allocate the KV store");
    s->params = *p;
    s->params.path = NULL;
    s->tier = p->tier;
    s->numa_node = -1;
    s->lock_fd = -1;
    if (p->path && !(s->path = strdup(p->path))) {
        free(s);
        return sl_fail(SL_ENOMEM, "cannot allocate the KV store path");
    }
    memcpy(s->fingerprint, p->fingerprint, 32);
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s->path);
        free(s);
        return sl_fail(SL_ENOMEM, "cannot create the KV store lock");
    }
    *out = s;
    return 0;
}

/* Memory both tiers size from the layout: per-layer pending counts and tags. */
int sl_kv_alloc_common(struct sl_kv_store *s) {
    int32_t L = s->layout.shape.n_layer;
    s->pending = calloc((size_t)L, sizeof *s->pending);
    if (!s->pending) return sl_fail(SL_ENOMEM, "cannot allocate KV store state");
    struct sl_host_mem_params mp = sl_kv_mem_params(s);
    mp.reg = NULL; /* tags never travel to a device */
    mp.mlock = false;
    int err = sl_host_mem_alloc(&s->tags_mem, (size_t)s->layout.tag_bytes, &mp);
    if (err) return err;
    s->tags = s->tags_mem.ptr;
    return sl_kv_gather_init(s);
}

static void store_release(struct sl_kv_store *s) {
    sl_kv_gather_free(s);
    if (s->tier == SL_KV_TIER_HOST)
        sl_kv_host_free(s);
    else
        sl_kv_file_free(s);
    sl_host_mem_free(&s->tags_mem);
    s->tags = NULL;
    free(s->pending);
    s->pending = NULL;
    s->open = false;
}

/* Frees a store without syncing: the failure path of create and open, and the end of free. */
static void store_destroy(struct sl_kv_store *s) {
    if (s->open) store_release(s);
    pthread_mutex_destroy(&s->lock);
    free(s->path);
    free(s);
}

int sl_kv_store_create(const struct sl_kv_shape *shape, const struct sl_kv_store_params *params,
                       sl_kv_store_t *out) {
    *out = NULL;
    int err = check_params(params);
    if (err) return err;
    if (params->read_only) return sl_fail(SL_EINVAL, "a KV store cannot be created read-only");
    struct sl_kv_layout layout;
    if ((err = sl_kv_layout_compute(shape, params->capacity, &layout))) return err;
    struct sl_kv_store *s;
    if ((err = store_new(params, &s))) return err;
    s->layout = layout;
    s->open = true;
    err = sl_kv_alloc_common(s);
    if (!err) err = s->tier == SL_KV_TIER_HOST ? sl_kv_host_init(s) : sl_kv_file_create(s);
    if (err) {
        store_destroy(s);
        return err;
    }
    *out = s;
    return 0;
}

int sl_kv_store_open(const struct sl_kv_shape *shape, const struct sl_kv_store_params *params,
                     sl_kv_store_t *out) {
    *out = NULL;
    int err = check_params(params);
    if (err) return err;
    if (params->tier != SL_KV_TIER_FILE)
        return sl_fail(SL_EINVAL, "only a file-tier KV store can be reopened");
    struct sl_kv_store *s;
    if ((err = store_new(params, &s))) return err;
    s->open = true;
    /* The layout comes from the file: open reads the header first, then sizes the rest. */
    err = sl_kv_file_open(s, shape);
    if (err) {
        store_destroy(s);
        return err;
    }
    *out = s;
    return 0;
}

int sl_kv_store_close(sl_kv_store_t s) {
    if (!s) return sl_fail(SL_EINVAL, "no KV store");
    if (!s->open) return sl_fail(SL_ECLOSED, "KV store already closed");
    sl_kv_gather_drain(s);
    int err = 0;
    if (s->tier == SL_KV_TIER_FILE && !s->params.read_only) {
        memset(s->pending, 0, sizeof *s->pending * (size_t)s->layout.shape.n_layer);
        err = sl_kv_file_sync(s);
    }
    store_release(s);
    return err;
}

void sl_kv_store_free(sl_kv_store_t s) {
    if (!s) return;
    if (s->open) (void)sl_kv_store_close(s);
    store_destroy(s);
}

#define CHECK_OPEN(s)                                                                       \
    do {                                                                                    \
        if (!(s)) return sl_fail(SL_EINVAL, "no KV store");                                 \
        if (!(s)->open) return sl_fail(SL_ECLOSED, "KV store is closed");                   \
    } while (0)
#define CHECK_WRITABLE(s, what)                                                             \
    do {                                                                                    \
        CHECK_OPEN(s);                                                                      \
        if ((s)->params.read_only)                                                          \
            return sl_fail(SL_EINVAL, "%s: KV store %s is open read-only", what, (s)->path); \
    } while (0)

void sl_kv_store_shape(sl_kv_store_t s, struct sl_kv_shape *out) { *out = s->layout.shape; }

uint64_t sl_kv_store_epoch(sl_kv_store_t s) { return s ? s->epoch : 0; }
int64_t sl_kv_store_n_tokens(sl_kv_store_t s) { return s->n_tokens; }
int64_t sl_kv_store_capacity(sl_kv_store_t s) { return s->layout.capacity; }

int sl_kv_store_append(sl_kv_store_t s, int32_t layer, int64_t n, const void *k, const void *v) {
    CHECK_WRITABLE(s, "append");
    if (layer < 0 || layer >= s->layout.shape.n_layer)
        return sl_fail(SL_EINVAL, "append: layer %d outside 0..%d", layer,
                       s->layout.shape.n_layer - 1);
    if (n < 0 || (n > 0 && (!k || !v))) return sl_fail(SL_EINVAL, "append: bad rows");
    if (n == 0) return 0;
    if (n > s->layout.capacity - s->n_tokens - s->pending[layer])
        return sl_fail(SL_EBOUNDS, "append: %lld more positions exceed the capacity %lld",
                       (long long)n, (long long)s->layout.capacity);
    if (s->tier == SL_KV_TIER_FILE && n > s->params.max_pending - s->pending[layer])
        return sl_fail(SL_EBOUNDS, "append: %lld pending positions would exceed max_pending "
                       "%lld; commit first", (long long)(s->pending[layer] + n),
                       (long long)s->params.max_pending);
    const struct sl_kv_layout *l = &s->layout;
    const int32_t H = l->shape.n_head_kv, T = l->shape.block_tokens;
    const int64_t row = l->row_bytes, half = (int64_t)T * row;
    int64_t pos = s->n_tokens + s->pending[layer];
    if (s->tier == SL_KV_TIER_HOST) {
        int err = sl_kv_host_reserve(s, pos, n);
        if (err) return err;
    }
    /* Rows go straight into their blocks: host memory, or the file tier's pending window. */
    const uint8_t *kb = k, *vb = v;
    for (int64_t i = 0; i < n; i++, pos++) {
        int64_t b = pos / T, r = pos % T;
        for (int32_t h = 0; h < H; h++) {
            uint8_t *blk = s->tier == SL_KV_TIER_HOST
                               ? sl_kv_host_block(s, layer, b, h)
                               : (uint8_t *)sl_kv_file_window_block(s, layer, b, h);
            memcpy(blk + r * row, kb + (i * H + h) * row, (size_t)row);
            memcpy(blk + half + r * row, vb + (i * H + h) * row, (size_t)row);
        }
    }
    s->pending[layer] += n;
    return 0;
}

int sl_kv_store_commit(sl_kv_store_t s, int64_t n, const uint32_t *tags) {
    CHECK_WRITABLE(s, "commit");
    if (n < 0) return sl_fail(SL_EINVAL, "commit: negative count");
    for (int32_t l = 0; l < s->layout.shape.n_layer; l++)
        if (s->pending[l] < n)
            return sl_fail(SL_EINVAL, "commit of %lld positions: layer %d has only %lld pending",
                           (long long)n, l, (long long)s->pending[l]);
    if (n == 0) return 0;
    if (s->tier == SL_KV_TIER_FILE) {
        sl_kv_gather_drain(s); /* requests in flight may point into the window it shifts */
        int err = sl_kv_file_commit(s, n);
        if (err) return err;
    }
    if (tags)
        memcpy(s->tags + s->n_tokens, tags, (size_t)n * sizeof *tags);
    else
        memset(s->tags + s->n_tokens, 0, (size_t)n * sizeof *tags);
    s->tags_crc = sl_crc32c(s->tags_crc, s->tags + s->n_tokens, (size_t)n * sizeof *tags);
    for (int32_t l = 0; l < s->layout.shape.n_layer; l++) s->pending[l] -= n;
    s->n_tokens += n;
    return 0;
}

int sl_kv_store_discard(sl_kv_store_t s) {
    CHECK_OPEN(s);
    memset(s->pending, 0, sizeof *s->pending * (size_t)s->layout.shape.n_layer);
    return 0;
}

int sl_kv_store_truncate(sl_kv_store_t s, int64_t n) {
    CHECK_WRITABLE(s, "truncate");
    if (n < 0 || n > s->n_tokens)
        return sl_fail(SL_EBOUNDS, "truncate to %lld: the store holds %lld positions",
                       (long long)n, (long long)s->n_tokens);
    sl_kv_gather_drain(s);
    s->epoch++; /* even if it fails: outside caches then just drop what they hold */
    if (s->tier == SL_KV_TIER_FILE) return sl_kv_file_truncate(s, n);
    memset(s->pending, 0, sizeof *s->pending * (size_t)s->layout.shape.n_layer);
    s->n_tokens = n;
    s->tags_crc = sl_crc32c(0, s->tags, (size_t)n * sizeof *s->tags);
    return 0;
}

int sl_kv_store_sync(sl_kv_store_t s) {
    CHECK_WRITABLE(s, "sync");
    for (int32_t l = 0; l < s->layout.shape.n_layer; l++)
        if (s->pending[l])
            return sl_fail(SL_EINVAL, "sync: layer %d has %lld uncommitted positions", l,
                           (long long)s->pending[l]);
    return s->tier == SL_KV_TIER_FILE ? sl_kv_file_sync(s) : 0;
}

int sl_kv_store_content_id(sl_kv_store_t s, struct sl_kv_content_id *out) {
    CHECK_OPEN(s);
    if (s->tier != SL_KV_TIER_FILE) return sl_fail(SL_EINVAL, "only a file-tier KV store has a content id");
    sl_kv_file_content_id(s, out);
    return 0;
}

bool sl_kv_content_id_equal(const struct sl_kv_content_id *a, const struct sl_kv_content_id *b) {
    return a->n_tokens == b->n_tokens && a->tags_crc == b->tags_crc && a->blocks_crc == b->blocks_crc &&
           a->open_crc == b->open_crc;
}

int sl_kv_store_read_tags(sl_kv_store_t s, int64_t p0, int64_t n, uint32_t *out) {
    CHECK_OPEN(s);
    if (p0 < 0 || n < 0 || p0 > s->n_tokens || n > s->n_tokens - p0)
        return sl_fail(SL_EBOUNDS, "tags [%lld, +%lld) outside the %lld stored positions",
                       (long long)p0, (long long)n, (long long)s->n_tokens);
    memcpy(out, s->tags + p0, (size_t)n * sizeof *out);
    return 0;
}

void sl_kv_store_get_stats(sl_kv_store_t s, struct sl_kv_store_stats *o) {
    memset(o, 0, sizeof *o);
    o->numa_node = -1;
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    o->n_tokens = s->n_tokens;
    o->capacity = s->layout.capacity;
    o->block_bytes = s->layout.block_bytes;
    o->cache_hits = s->hits;
    o->cache_misses = s->misses;
    o->bytes_read = s->bytes_read;
    o->bytes_written = s->bytes_written;
    o->reads = s->reads;
    o->writes = s->writes;
    o->gathers = s->gathers;
    o->rows_gathered = s->rows;
    o->pinned = s->pinned;
    o->mlocked = s->mlocked;
    o->numa_node = s->numa_node;
    if (s->open) {
        o->ram_bytes = (int64_t)s->tags_mem.bytes +
                       (s->tier == SL_KV_TIER_HOST ? sl_kv_host_ram(s) : sl_kv_file_ram(s));
        if (s->tier == SL_KV_TIER_FILE) {
            o->ram_budget = s->params.ram_budget;
            o->cache_slots = s->cache.n_slots;
            int64_t full = s->n_tokens / s->layout.shape.block_tokens;
            o->disk_bytes = s->layout.data_off + (int64_t)s->layout.shape.n_layer *
                                                     s->layout.shape.n_head_kv * full *
                                                     s->layout.block_stride;
            o->uring = sl_kv_io_uses_uring(s->io);
            o->direct_io = sl_kv_io_is_direct(s->io);
            o->registered_buffers = sl_kv_io_has_registered_buffer(s->io);
            o->sqpoll = sl_kv_io_uses_sqpoll(s->io);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

void sl_kv_store_reset_counters(sl_kv_store_t s) {
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    s->hits = s->misses = s->bytes_read = s->bytes_written = 0;
    s->reads = s->writes = s->gathers = s->rows = 0;
    pthread_mutex_unlock(&s->lock);
}
