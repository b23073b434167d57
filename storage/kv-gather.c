/* Gather requests. Host tier: rows are copied at submit. File tier: each request walks its
 * positions with two cursors. The plan cursor runs ahead, turning positions into runs of
 * one block each: a block in the pending window, a cached block (hit), or a newly claimed
 * cache slot with a read in flight (miss); it stops when the ring of runs is full, the
 * queue depth is reached or no slot is free. The copy cursor follows, copying rows out of
 * runs whose block is valid and unpinning them. So a gather larger than the cache streams
 * through it, reads stay queue_depth deep, and requests that want the same block share one
 * read. Completions are checked against the block checksums before any row is copied. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "storage/kv-store-internal.h"

#define WINDOW_KEY(key) (-2 - (key)) /* runs from the pending window: distinct from -1 */

static uint64_t req_index(uint64_t ticket) { return ticket % SL_KV_MAX_REQUESTS; }

static struct sl_kv_request *find_request(struct sl_kv_store *s, sl_kv_ticket_t ticket) {
    if (ticket == 0) return NULL;
    struct sl_kv_request *r = &s->req[req_index(ticket)];
    return r->ticket == ticket ? r : NULL;
}

int sl_kv_gather_init(struct sl_kv_store *s) {
    if (s->tier != SL_KV_TIER_FILE) return 0;
    s->run_cap = 2 * s->params.queue_depth < 64 ? 64 : 2 * s->params.queue_depth;
    for (int i = 0; i < SL_KV_MAX_REQUESTS; i++) {
        s->req[i].runs = malloc(sizeof *s->req[i].runs * (size_t)s->run_cap);
        if (!s->req[i].runs) return sl_fail(SL_ENOMEM, "cannot allocate gather requests");
    }
    return 0;
}

void sl_kv_gather_free(struct sl_kv_store *s) {
    for (int i = 0; i < SL_KV_MAX_REQUESTS; i++) {
        free(s->req[i].runs);
        s->req[i].runs = NULL;
        s->req[i].ticket = 0;
    }
}

static inline int64_t position_at(const struct sl_kv_gather *g, int64_t i) {
    return g->idx ? g->idx[i] : g->first + i;
}

static void cursor_settle(const struct sl_kv_request *r, struct sl_kv_cursor *c) {
    while (c->d < r->n_g && c->i >= r->g[c->d].n) {
        c->d++;
        c->i = 0;
    }
}

static void cursor_next(const struct sl_kv_request *r, struct sl_kv_cursor *c) {
    c->i++;
    cursor_settle(r, c);
}

/* Copies row i of descriptor g from a block holding its position. Rows of 64 and 128
 * elements (the usual head_dim) get a fixed-size copy the compiler inlines. */
static inline void copy_row(const struct sl_kv_layout *l, const struct sl_kv_gather *g, int64_t i,
                            const uint8_t *block) {
    const int64_t row = l->row_bytes;
    const int64_t r = position_at(g, i) & ((1 << l->block_shift) - 1);
    const uint8_t *k = block + r * row, *v = block + (((int64_t)1 << l->block_shift) + r) * row;
    uint8_t *ko = (uint8_t *)g->k_out + i * row, *vo = (uint8_t *)g->v_out + i * row;
    if (row == 128) {
        memcpy(ko, k, 128);
        memcpy(vo, v, 128);
    } else if (row == 256) {
        memcpy(ko, k, 256);
        memcpy(vo, v, 256);
    } else {
        memcpy(ko, k, (size_t)row);
        memcpy(vo, v, (size_t)row);
    }
}

static int validate(const struct sl_kv_store *s, const struct sl_kv_gather *g, int32_t n_g) {
    if (n_g < 0 || (n_g > 0 && !g)) return sl_fail(SL_EINVAL, "gather: bad descriptor list");
    const struct sl_kv_shape *sh = &s->layout.shape;
    for (int32_t d = 0; d < n_g; d++) {
        if (g[d].layer < 0 || g[d].layer >= sh->n_layer || g[d].head < 0 ||
            g[d].head >= sh->n_head_kv)
            return sl_fail(SL_EINVAL, "gather %d: layer %d / head %d outside %d x %d", d,
                           g[d].layer, g[d].head, sh->n_layer, sh->n_head_kv);
        if (g[d].n < 0) return sl_fail(SL_EINVAL, "gather %d: negative count", d);
        if (g[d].n == 0) continue;
        if (!g[d].k_out || !g[d].v_out) return sl_fail(SL_EINVAL, "gather %d: no output", d);
        if (!g[d].idx) {
            if (g[d].first < 0 || g[d].first > s->n_tokens || g[d].n > s->n_tokens - g[d].first)
                return sl_fail(SL_EBOUNDS, "gather %d: positions [%lld, +%lld) outside the %lld "
                               "stored", d, (long long)g[d].first, (long long)g[d].n,
                               (long long)s->n_tokens);
            continue;
        }
        for (int64_t i = 0; i < g[d].n; i++)
            if (g[d].idx[i] < 0 || g[d].idx[i] >= s->n_tokens)
                return sl_fail(SL_EBOUNDS, "gather %d: position %lld (entry %lld) outside the "
                               "%lld stored", d, (long long)g[d].idx[i], (long long)i,
                               (long long)s->n_tokens);
    }
    return 0;
}

/* ---- host tier ---- */

/* Rows are independent cache misses: starting every line of a row well before it is
 * copied keeps many misses in flight. */
static inline void prefetch_row(const struct sl_kv_layout *l, int64_t pos, const uint8_t *block) {
    const uint8_t *k = block + (pos & ((1 << l->block_shift) - 1)) * l->row_bytes;
    const uint8_t *v = k + ((int64_t)1 << l->block_shift) * l->row_bytes;
    for (int64_t off = 0; off < l->row_bytes; off += 64) {
        __builtin_prefetch(k + off);
        __builtin_prefetch(v + off);
    }
}

#define PREFETCH_ROWS 24 /* host tier: rows ahead of the copy */

static void host_copy(const struct sl_kv_store *s, const struct sl_kv_gather *g, int32_t n_g) {
    const struct sl_kv_layout *l = &s->layout;
    const int32_t shift = l->block_shift;
    for (int32_t d = 0; d < n_g; d++) {
        const int64_t *idx = g[d].idx;
        for (int64_t i = 0; i < g[d].n; i++) {
            if (idx && i + PREFETCH_ROWS < g[d].n) {
                int64_t p = idx[i + PREFETCH_ROWS];
                prefetch_row(l, p, sl_kv_host_block(s, g[d].layer, p >> shift, g[d].head));
            }
            int64_t p = position_at(&g[d], i);
            copy_row(l, &g[d], i, sl_kv_host_block(s, g[d].layer, p >> shift, g[d].head));
        }
    }
}

/* ---- file tier ---- */

static void unpin(struct sl_kv_store *s, int32_t slot) {
    if (slot < 0) return;
    if (--s->cache.pins[slot] == 0 && s->cache.state[slot] == SL_BLOCK_FAILED)
        sl_block_cache_release(&s->cache, slot);
}

static void finish(struct sl_kv_store *s, struct sl_kv_request *r, int err) {
    while (r->run_len > 0) {
        unpin(s, r->runs[r->run_head].slot);
        r->run_head = (r->run_head + 1) % s->run_cap;
        r->run_len--;
    }
    r->err = err;
    r->done = true;
}

static void slot_failed(struct sl_kv_store *s, int32_t slot, int err) {
    s->cache.state[slot] = SL_BLOCK_FAILED;
    s->cache.err[slot] = err;
    sl_block_cache_unmap(&s->cache, slot); /* later requests read the block afresh */
    if (s->cache.pins[slot] == 0) sl_block_cache_release(&s->cache, slot);
}

static int submit_read(struct sl_kv_store *s, int32_t slot) {
    int64_t key = s->cache.key[slot], done = s->slot_done[slot];
    uint64_t off = (uint64_t)(s->layout.data_off + key * s->layout.block_stride + done);
    return sl_kv_io_read_async(s->io, sl_block_cache_data(&s->cache, slot) + done,
                               (size_t)(s->layout.block_stride - done), off, (uint64_t)slot);
}

static void complete(struct sl_kv_store *s, const struct sl_kv_io_done *c) {
    int32_t slot = (int32_t)c->tag;
    s->reads++;
    if (c->res < 0) {
        slot_failed(s, slot, sl_fail(c->res, "KV store %s: block read failed", s->path));
        return;
    }
    s->bytes_read += c->res;
    s->slot_done[slot] += c->res;
    if (s->slot_done[slot] < s->layout.block_stride) {
        /* A short read: resume it, unless the file ends here. */
        int err = c->res == 0 ? sl_fail(SL_ETRUNCATED, "KV store %s ends inside a block", s->path)
                              : submit_read(s, slot);
        if (err) slot_failed(s, slot, err);
        return;
    }
    int err = sl_kv_file_verify(s, s->cache.key[slot], sl_block_cache_data(&s->cache, slot));
    if (err)
        slot_failed(s, slot, err);
    else
        s->cache.state[slot] = SL_BLOCK_VALID;
}

static int reap(struct sl_kv_store *s, bool wait) {
    struct sl_kv_io_done done[64];
    int n = sl_kv_io_reap(s->io, done, 64, wait);
    for (int i = 0; i < n; i++) complete(s, &done[i]);
    return n;
}

/* Copies every run at the front of the ring whose block is ready. */
static bool copy_ready(struct sl_kv_store *s, struct sl_kv_request *r) {
    const struct sl_kv_layout *l = &s->layout;
    bool progressed = false;
    while (r->run_len > 0 && !r->done) {
        struct sl_kv_run *run = &r->runs[r->run_head];
        const struct sl_kv_gather *g = &r->g[r->copy.d];
        const uint8_t *block;
        if (run->slot < 0) {
            block = sl_kv_file_window_block(s, g->layer, position_at(g, r->copy.i) >> l->block_shift,
                                            g->head);
        } else if (s->cache.state[run->slot] == SL_BLOCK_VALID) {
            block = sl_block_cache_data(&s->cache, run->slot);
        } else if (s->cache.state[run->slot] == SL_BLOCK_FAILED) {
            finish(s, r, s->cache.err[run->slot]);
            return true;
        } else {
            break;
        }
        for (int32_t k = 0; k < run->count; k++) {
            copy_row(l, &r->g[r->copy.d], r->copy.i, block);
            cursor_next(r, &r->copy);
        }
        unpin(s, run->slot);
        r->run_head = (r->run_head + 1) % s->run_cap;
        r->run_len--;
        progressed = true;
    }
    return progressed;
}

static void push_run(struct sl_kv_store *s, struct sl_kv_request *r, int32_t slot, int64_t key) {
    struct sl_kv_run *run = &r->runs[(r->run_head + r->run_len) % s->run_cap];
    run->slot = slot;
    run->count = 1;
    r->run_len++;
    r->last_key = key;
}

/* Plans positions ahead of the copy cursor: returns whether any were planned. */
static bool plan_ahead(struct sl_kv_store *s, struct sl_kv_request *r) {
    const struct sl_kv_layout *l = &s->layout;
    bool progressed = false;
    while (!r->done && r->plan.d < r->n_g) {
        const struct sl_kv_gather *g = &r->g[r->plan.d];
        int64_t block = position_at(g, r->plan.i) >> l->block_shift;
        int64_t key = sl_kv_layout_block_index(l, g->layer, block, g->head);
        bool in_window = block >= s->win_first;
        int64_t run_key = in_window ? WINDOW_KEY(key) : key;
        struct sl_kv_run *last = &r->runs[(r->run_head + r->run_len - 1 + s->run_cap) % s->run_cap];
        if (r->run_len > 0 && r->last_key == run_key && last->count < INT32_MAX) {
            last->count++;
            if (last->slot >= 0 && s->cache.state[last->slot] == SL_BLOCK_VALID)
                prefetch_row(l, position_at(g, r->plan.i), sl_block_cache_data(&s->cache, last->slot));
        } else {
            if (r->run_len == s->run_cap) break;
            int32_t slot = -1;
            if (!in_window) {
                slot = sl_block_cache_find(&s->cache, key);
                if (slot >= 0) {
                    s->hits++;
                    prefetch_row(l, position_at(g, r->plan.i), sl_block_cache_data(&s->cache, slot));
                } else {
                    if (sl_kv_io_in_flight(s->io) >= s->params.queue_depth) break;
                    slot = sl_block_cache_claim(&s->cache, key);
                    if (slot < 0) break;
                    s->misses++;
                    s->cache.state[slot] = SL_BLOCK_LOADING;
                    s->slot_done[slot] = 0;
                    int err = submit_read(s, slot);
                    if (err) {
                        slot_failed(s, slot, err);
                        finish(s, r, err);
                        return true;
                    }
                }
                s->cache.pins[slot]++;
            } else {
                s->hits++;
            }
            push_run(s, r, slot, run_key);
        }
        cursor_next(r, &r->plan);
        progressed = true;
    }
    return progressed;
}

static bool advance(struct sl_kv_store *s, struct sl_kv_request *r) {
    bool any = false;
    for (;;) {
        bool p = copy_ready(s, r);
        p |= plan_ahead(s, r);
        if (!r->done && r->plan.d >= r->n_g && r->run_len == 0) finish(s, r, 0);
        if (!p) break;
        any = true;
    }
    return any;
}

/* One pass over every active request, oldest first; then submit the batch of reads. */
static bool pump(struct sl_kv_store *s) {
    while (reap(s, false) > 0) {
    }
    bool any = false;
    uint64_t oldest = s->next_ticket >= SL_KV_MAX_REQUESTS ? s->next_ticket - SL_KV_MAX_REQUESTS + 1 : 1;
    for (uint64_t t = oldest; t <= s->next_ticket; t++) {
        struct sl_kv_request *r = find_request(s, t);
        if (r && !r->done) any |= advance(s, r);
    }
    (void)sl_kv_io_flush(s->io);
    return any;
}

/* Runs I/O until request r (or, when r is NULL, every request and read) is finished. */
static int run_until_done(struct sl_kv_store *s, struct sl_kv_request *r) {
    for (;;) {
        bool progressed = pump(s);
        bool all_done = true;
        for (int i = 0; !r && i < SL_KV_MAX_REQUESTS; i++)
            if (s->req[i].ticket && !s->req[i].done) all_done = false;
        if (r ? r->done : all_done && sl_kv_io_in_flight(s->io) == 0) return 0;
        if (sl_kv_io_in_flight(s->io) > 0) {
            if (reap(s, true) < 0) return SL_EIO;
        } else if (!progressed) {
            /* Cannot happen while every pinned slot is either in flight or behind a valid
             * run; fail loudly rather than spin if it ever does. */
            return sl_fail(SL_EIO, "KV store %s: gather made no progress", s->path);
        }
    }
}

void sl_kv_gather_drain(struct sl_kv_store *s) {
    if (s->tier != SL_KV_TIER_FILE || !s->io) return;
    pthread_mutex_lock(&s->lock);
    (void)run_until_done(s, NULL);
    pthread_mutex_unlock(&s->lock);
}

int sl_kv_store_gather_submit(sl_kv_store_t s, const struct sl_kv_gather *g, int32_t n_g,
                              sl_kv_ticket_t *ticket) {
    if (!s) return sl_fail(SL_EINVAL, "no KV store");
    pthread_mutex_lock(&s->lock);
    int err = !s->open ? sl_fail(SL_ECLOSED, "gather on a closed KV store") : validate(s, g, n_g);
    struct sl_kv_request *r = NULL;
    if (!err) {
        /* Tickets are issued in order; the entry a new ticket maps to must be retired. */
        uint64_t t = s->next_ticket + 1;
        if (s->req[req_index(t)].ticket != 0)
            err = sl_fail(-EBUSY, "gather: %d requests already in flight", SL_KV_MAX_REQUESTS);
        else {
            s->next_ticket = t;
            r = &s->req[req_index(t)];
            struct sl_kv_run *runs = r->runs;
            memset(r, 0, sizeof *r);
            r->runs = runs;
            r->ticket = t;
            r->g = g;
            r->n_g = n_g;
            r->last_key = -1;
            cursor_settle(r, &r->copy);
            cursor_settle(r, &r->plan);
            s->gathers++;
            for (int32_t d = 0; d < n_g; d++) s->rows += g[d].n;
            *ticket = t;
        }
    }
    if (!err && s->tier == SL_KV_TIER_FILE) {
        advance(s, r);
        (void)sl_kv_io_flush(s->io);
    }
    pthread_mutex_unlock(&s->lock);
    if (err || s->tier == SL_KV_TIER_FILE) return err;
    /* Host tier: committed rows never change under a gather, so copy without the lock. */
    host_copy(s, g, n_g);
    pthread_mutex_lock(&s->lock);
    r->done = true;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int retire(struct sl_kv_request *r) {
    int err = r->err;
    r->ticket = 0;
    r->done = false;
    return err;
}

int sl_kv_store_gather_poll(sl_kv_store_t s, sl_kv_ticket_t ticket) {
    if (!s) return sl_fail(SL_EINVAL, "no KV store");
    pthread_mutex_lock(&s->lock);
    int ret;
    struct sl_kv_request *r = find_request(s, ticket);
    if (!s->open)
        ret = sl_fail(SL_ECLOSED, "gather poll on a closed KV store");
    else if (!r)
        ret = sl_fail(SL_EINVAL, "gather poll: unknown or retired ticket %llu",
                      (unsigned long long)ticket);
    else {
        if (!r->done && s->tier == SL_KV_TIER_FILE) pump(s);
        ret = r->done ? retire(r) : 0;
        if (ret == 0 && r->ticket == 0) ret = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int sl_kv_store_gather_wait(sl_kv_store_t s, sl_kv_ticket_t ticket) {
    if (!s) return sl_fail(SL_EINVAL, "no KV store");
    pthread_mutex_lock(&s->lock);
    int ret;
    struct sl_kv_request *r = find_request(s, ticket);
    if (!s->open)
        ret = sl_fail(SL_ECLOSED, "gather wait on a closed KV store");
    else if (!r)
        ret = sl_fail(SL_EINVAL, "gather wait: unknown or retired ticket %llu",
                      (unsigned long long)ticket);
    else {
        if (s->tier == SL_KV_TIER_FILE) {
            ret = run_until_done(s, r);
            if (ret) finish(s, r, ret);
        } else {
            /* Host tier: another thread may still be copying this request's rows. */
            while (!r->done) {
                pthread_mutex_unlock(&s->lock);
                sched_yield();
                pthread_mutex_lock(&s->lock);
            }
        }
        ret = retire(r);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int sl_kv_store_gather(sl_kv_store_t s, const struct sl_kv_gather *g, int32_t n_g) {
    sl_kv_ticket_t t;
    int err = sl_kv_store_gather_submit(s, g, n_g, &t);
    return err ? err : sl_kv_store_gather_wait(s, t);
}

int sl_kv_store_read_range(sl_kv_store_t s, int32_t layer, int32_t head, int64_t p0, int64_t n,
                           void *k_out, void *v_out) {
    struct sl_kv_gather g = {.layer = layer, .head = head, .first = p0, .n = n, .k_out = k_out,
                             .v_out = v_out};
    return sl_kv_store_gather(s, &g, 1);
}
