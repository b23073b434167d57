/* Helpers for the KV store suites; see kv-test-util.h. Plain code on purpose: the reference
 * model is arrays indexed the obvious way, the CRC is bitwise, the layout is the header
 * comment of storage/kv-format.h transcribed. */
#include "tests/kv-test-util.h"

#include "spotlight/error.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const struct kvt_tier kvt_tiers[KVT_N_TIERS] = {
    [KVT_HOST] = {"host", SL_KV_TIER_HOST, false, false},
    [KVT_FILE_URING_DIRECT] = {"file-uring-direct", SL_KV_TIER_FILE, false, false},
    [KVT_FILE_URING_BUFFERED] = {"file-uring-buffered", SL_KV_TIER_FILE, true, false},
    [KVT_FILE_PREAD] = {"file-pread", SL_KV_TIER_FILE, false, true},
};

int kvt_all_tiers[4] = {KVT_HOST, KVT_FILE_URING_DIRECT, KVT_FILE_URING_BUFFERED, KVT_FILE_PREAD};
int kvt_file_tiers[3] = {KVT_FILE_URING_DIRECT, KVT_FILE_URING_BUFFERED, KVT_FILE_PREAD};

const uint8_t kvt_fingerprint[32] = {0x53, 0x4c, 0x4b, 0x56, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                     13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 0xff};

static _Thread_local char g_msg[512];

const char *kvt_msg(void) { return g_msg; }

static void msg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
}

struct sl_kv_store_params kvt_params(const struct kvt_tier *t, int64_t capacity, const char *path) {
    struct sl_kv_store_params p = sl_kv_store_default_params();
    p.tier = t->tier;
    p.capacity = capacity;
    if (t->tier == SL_KV_TIER_FILE) {
        p.path = path;
        p.buffered_io = t->buffered_io;
        p.no_uring = t->no_uring;
    }
    memcpy(p.fingerprint, kvt_fingerprint, 32);
    return p;
}

/* ---- random ------------------------------------------------------------------------------- */
uint64_t kvt_rand(uint64_t *st) {
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int64_t kvt_rand_below(uint64_t *st, int64_t n) { return (int64_t)(kvt_rand(st) % (uint64_t)n); }

/* ---- files -------------------------------------------------------------------------------- */
/* Every directory made, so a test that stops at a failed assertion still leaves none behind. */
static char *g_made[64];
static int g_n_made;

char *kvt_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char *p = kvt_join(base, "sl-kvtest-XXXXXX");
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    if (g_n_made < 64) g_made[g_n_made++] = strdup(p);
    return p;
}

void kvt_cleanup(void) {
    for (int i = 0; i < g_n_made; i++) {
        kvt_rmtree(g_made[i]);
        free(g_made[i]);
    }
    g_n_made = 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

void kvt_rmtree(const char *dir) {
    if (dir) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *kvt_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

bool kvt_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

int kvt_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

int64_t kvt_file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

int kvt_read_at(const char *path, int64_t off, void *buf, size_t len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t r = pread(fd, buf, len, off);
    close(fd);
    return r == (ssize_t)len ? 0 : -1;
}

int kvt_write_at(const char *path, int64_t off, const void *buf, size_t len) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    ssize_t r = pwrite(fd, buf, len, off);
    int rc = (r == (ssize_t)len && fsync(fd) == 0) ? 0 : -1;
    close(fd);
    return rc;
}

int kvt_flip_bit(const char *path, int64_t off, int bit) {
    uint8_t b;
    if (kvt_read_at(path, off, &b, 1)) return -1;
    b ^= (uint8_t)(1u << bit);
    return kvt_write_at(path, off, &b, 1);
}

int kvt_copy_file(const char *src, const char *dst) {
    int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = (in >= 0 && out >= 0) ? 0 : -1;
    static char buf[1 << 16];
    for (ssize_t n; rc == 0 && (n = read(in, buf, sizeof buf)) != 0;)
        if (n < 0 || write(out, buf, (size_t)n) != n) rc = -1;
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    return rc;
}

/* ---- format --------------------------------------------------------------------------------- */
uint32_t kvt_crc32c(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

void kvt_layout_of(const struct sl_kv_shape *s, int64_t cap, struct kvt_layout *l) {
    memset(l, 0, sizeof *l);
    int64_t lh = (int64_t)s->n_layer * s->n_head_kv;
    l->n_blocks = (cap + s->block_tokens - 1) / s->block_tokens;
    l->row_bytes = (int64_t)s->head_dim * 2;
    l->block_bytes = 2 * s->block_tokens * l->row_bytes;
    l->block_stride = round_up(l->block_bytes, 4096);
    l->tail_bytes = lh * l->block_stride;
    l->tail_off[0] = 8192;
    l->tail_off[1] = 8192 + l->tail_bytes;
    l->crc_off = l->tail_off[1] + l->tail_bytes;
    l->crc_bytes = round_up(4 * lh * l->n_blocks, 4096);
    l->tag_off = l->crc_off + l->crc_bytes;
    l->tag_bytes = round_up(4 * cap, 4096);
    l->data_off = l->tag_off + l->tag_bytes;
    l->file_size = l->data_off + lh * l->n_blocks * l->block_stride;
}

int64_t kvt_block_off(const struct kvt_layout *l, const struct sl_kv_shape *s, int32_t layer,
                      int64_t block, int32_t head) {
    return l->data_off + (((int64_t)layer * l->n_blocks + block) * s->n_head_kv + head) * l->block_stride;
}

uint32_t kvt_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t kvt_le64(const uint8_t *p) { return kvt_le32(p) | (uint64_t)kvt_le32(p + 4) << 32; }

void kvt_put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

int kvt_read_slots(const char *path, uint8_t out[8192]) { return kvt_read_at(path, 0, out, 8192); }

uint32_t kvt_fnv1a(const void *data, size_t n) {
    const uint8_t *p = data;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

bool kvt_slot_valid(const uint8_t *h) {
    return memcmp(h, "SLKVSTOR", 8) == 0 && kvt_crc32c(0, h, 4092) == kvt_le32(h + 4092);
}

int kvt_current_slot(const uint8_t s[8192]) {
    bool v0 = kvt_slot_valid(s), v1 = kvt_slot_valid(s + 4096);
    if (v0 && v1) return kvt_le64(s + 4096 + 48) > kvt_le64(s + 48) ? 1 : 0;
    return v0 ? 0 : v1 ? 1 : -1;
}

/* ---- reference ------------------------------------------------------------------------------ */
static size_t ref_elems(const struct kvt_ref *r) {
    return (size_t)r->shape.n_layer * (size_t)r->capacity * (size_t)r->shape.n_head_kv *
           (size_t)r->shape.head_dim;
}

void kvt_ref_init(struct kvt_ref *r, const struct sl_kv_shape *s, int64_t capacity) {
    memset(r, 0, sizeof *r);
    r->shape = *s;
    r->capacity = capacity;
    r->k = calloc(ref_elems(r), 2);
    r->v = calloc(ref_elems(r), 2);
    r->tags = calloc((size_t)capacity, 4);
    r->pending = calloc((size_t)s->n_layer, sizeof(int64_t));
}

void kvt_ref_free(struct kvt_ref *r) {
    free(r->k); free(r->v); free(r->tags); free(r->pending);
    memset(r, 0, sizeof *r);
}

void kvt_ref_copy(struct kvt_ref *d, const struct kvt_ref *s) {
    kvt_ref_init(d, &s->shape, s->capacity);
    memcpy(d->k, s->k, ref_elems(s) * 2);
    memcpy(d->v, s->v, ref_elems(s) * 2);
    memcpy(d->tags, s->tags, (size_t)s->capacity * 4);
    memcpy(d->pending, s->pending, (size_t)s->shape.n_layer * sizeof(int64_t));
    d->n = s->n;
}

static size_t ref_at(const struct kvt_ref *r, int32_t layer, int64_t pos, int32_t head) {
    return (((size_t)layer * (size_t)r->capacity + (size_t)pos) * (size_t)r->shape.n_head_kv +
            (size_t)head) * (size_t)r->shape.head_dim;
}

const uint16_t *kvt_ref_k(const struct kvt_ref *r, int32_t l, int64_t p, int32_t h) {
    return r->k + ref_at(r, l, p, h);
}

const uint16_t *kvt_ref_v(const struct kvt_ref *r, int32_t l, int64_t p, int32_t h) {
    return r->v + ref_at(r, l, p, h);
}

int kvt_append(sl_kv_store_t s, struct kvt_ref *r, int32_t layer, int64_t n, uint64_t *rng) {
    size_t row = (size_t)r->shape.n_head_kv * (size_t)r->shape.head_dim;
    size_t elems = (size_t)(n > 0 ? n : 1) * row;
    uint16_t *k = malloc(elems * 2), *v = malloc(elems * 2);
    for (size_t i = 0; i < elems; i++) {
        uint64_t x = kvt_rand(rng);
        k[i] = (uint16_t)x;
        v[i] = (uint16_t)(x >> 16);
    }
    int rc = sl_kv_store_append(s, layer, n, k, v);
    if (rc >= 0) {
        int64_t at = r->n + r->pending[layer];
        if (at + n > r->capacity) {
            msg("append of %lld rows at %lld accepted past capacity %lld", (long long)n,
                (long long)at, (long long)r->capacity);
            rc = 2;
        } else {
            for (int64_t i = 0; i < n; i++) {
                memcpy(r->k + ref_at(r, layer, at + i, 0), k + (size_t)i * row, row * 2);
                memcpy(r->v + ref_at(r, layer, at + i, 0), v + (size_t)i * row, row * 2);
            }
            r->pending[layer] += n;
        }
    }
    free(k);
    free(v);
    return rc;
}

int kvt_commit(sl_kv_store_t s, struct kvt_ref *r, int64_t n, bool with_tags, uint64_t *rng) {
    uint32_t *tags = malloc((size_t)(n > 0 ? n : 1) * 4);
    for (int64_t i = 0; i < n; i++) tags[i] = (uint32_t)kvt_rand(rng);
    int rc = sl_kv_store_commit(s, n, with_tags ? tags : NULL);
    if (rc >= 0) {
        for (int32_t l = 0; l < r->shape.n_layer; l++)
            if (r->pending[l] < n) {
                msg("commit of %lld accepted with layer %d holding %lld pending", (long long)n,
                    l, (long long)r->pending[l]);
                free(tags);
                return 2;
            }
        for (int64_t i = 0; i < n; i++) r->tags[r->n + i] = with_tags ? tags[i] : 0;
        for (int32_t l = 0; l < r->shape.n_layer; l++) r->pending[l] -= n;
        r->n += n;
    }
    free(tags);
    return rc;
}

int kvt_discard(sl_kv_store_t s, struct kvt_ref *r) {
    int rc = sl_kv_store_discard(s);
    if (rc >= 0) memset(r->pending, 0, (size_t)r->shape.n_layer * sizeof(int64_t));
    return rc;
}

int kvt_truncate(sl_kv_store_t s, struct kvt_ref *r, int64_t n) {
    int rc = sl_kv_store_truncate(s, n);
    if (rc >= 0) {
        r->n = n;
        memset(r->pending, 0, (size_t)r->shape.n_layer * sizeof(int64_t));
    }
    return rc;
}

int kvt_fill(sl_kv_store_t s, struct kvt_ref *r, int64_t n_more, uint64_t *rng) {
    static const int64_t chunks[] = {1, 7, 16, 33, 3, 64, 2, 17, 5, 31};
    int64_t target = r->n + n_more;
    while (r->n < target) {
        int64_t min_pending = INT64_MAX, floor = INT64_MAX;
        for (int32_t l = 0; l < r->shape.n_layer; l++)
            if (r->pending[l] < floor) floor = r->pending[l];
        for (int32_t l = 0; l < r->shape.n_layer; l++) {
            int64_t room = target - (r->n + r->pending[l]);
            /* layers run at most ~100 rows apart, as a forward pass would produce them */
            if (room > floor + 100 - r->pending[l]) room = floor + 100 - r->pending[l];
            if (room > 0) {
                int64_t c = chunks[kvt_rand_below(rng, 10)];
                int rc = kvt_append(s, r, l, c < room ? c : room, rng);
                if (rc) return rc;
            }
            if (r->pending[l] < min_pending) min_pending = r->pending[l];
        }
        if (min_pending > 0) {
            /* commit all of it, or a random part, so pending rows carry across commits */
            int64_t c = kvt_rand_below(rng, 2) ? min_pending : 1 + kvt_rand_below(rng, min_pending);
            int rc = kvt_commit(s, r, c, kvt_rand_below(rng, 4) != 0, rng);
            if (rc) return rc;
        }
    }
    return 0;
}

/* ---- checks --------------------------------------------------------------------------------- */
static int cmp_rows(const struct kvt_ref *r, int32_t layer, int32_t head, int64_t pos, int64_t row,
                    const uint16_t *k, const uint16_t *v) {
    size_t d = (size_t)r->shape.head_dim;
    if (memcmp(k + (size_t)row * d, kvt_ref_k(r, layer, pos, head), d * 2)) {
        msg("K of (layer %d, head %d, pos %lld) at output row %lld differs", layer, head,
            (long long)pos, (long long)row);
        return 1;
    }
    if (memcmp(v + (size_t)row * d, kvt_ref_v(r, layer, pos, head), d * 2)) {
        msg("V of (layer %d, head %d, pos %lld) at output row %lld differs", layer, head,
            (long long)pos, (long long)row);
        return 1;
    }
    return 0;
}

int kvt_check_rows(const struct kvt_ref *r, const struct sl_kv_gather *g) {
    for (int64_t i = 0; i < g->n; i++) {
        int64_t pos = g->idx ? g->idx[i] : g->first + i;
        if (cmp_rows(r, g->layer, g->head, pos, i, g->k_out, g->v_out)) return 1;
    }
    return 0;
}

int kvt_check_range(sl_kv_store_t s, const struct kvt_ref *r, int32_t layer, int32_t head,
                    int64_t p0, int64_t n) {
    size_t bytes = (size_t)(n > 0 ? n : 1) * (size_t)r->shape.head_dim * 2;
    uint16_t *k = malloc(bytes), *v = malloc(bytes);
    memset(k, KVT_SENTINEL, bytes);
    memset(v, KVT_SENTINEL, bytes);
    int rc = sl_kv_store_read_range(s, layer, head, p0, n, k, v);
    if (rc < 0) {
        msg("read_range(layer %d, head %d, %lld, %lld) failed: %s", layer, head, (long long)p0,
            (long long)n, sl_strerror(rc));
    } else {
        rc = 0;
        for (int64_t i = 0; i < n && !rc; i++) rc = cmp_rows(r, layer, head, p0 + i, i, k, v);
    }
    free(k);
    free(v);
    return rc;
}

int kvt_check_all(sl_kv_store_t s, const struct kvt_ref *r) {
    int64_t n = sl_kv_store_n_tokens(s);
    if (n != r->n) {
        msg("n_tokens %lld, expected %lld", (long long)n, (long long)r->n);
        return 1;
    }
    if (n == 0) return 0;
    for (int32_t l = 0; l < r->shape.n_layer; l++)
        for (int32_t h = 0; h < r->shape.n_head_kv; h++) {
            int rc = kvt_check_range(s, r, l, h, 0, n);
            if (rc) return rc;
        }
    uint32_t *tags = malloc((size_t)n * 4);
    int rc = sl_kv_store_read_tags(s, 0, n, tags);
    if (rc < 0) msg("read_tags(0, %lld) failed: %s", (long long)n, sl_strerror(rc));
    else {
        rc = 0;
        for (int64_t i = 0; i < n && !rc; i++)
            if (tags[i] != r->tags[i]) {
                msg("tag %lld is %u, expected %u", (long long)i, tags[i], r->tags[i]);
                rc = 1;
            }
    }
    free(tags);
    return rc;
}

void kvt_gset_add(struct kvt_gset *gs, const struct kvt_ref *r, int32_t layer, int32_t head,
                  const int64_t *idx, int64_t first, int64_t n) {
    gs->g = realloc(gs->g, (size_t)(gs->n + 1) * sizeof *gs->g);
    struct sl_kv_gather *g = &gs->g[gs->n++];
    size_t bytes = (size_t)(n > 0 ? n : 1) * (size_t)r->shape.head_dim * 2;
    int64_t *ix = NULL;
    if (idx) {
        ix = malloc((size_t)(n > 0 ? n : 1) * sizeof *ix);
        memcpy(ix, idx, (size_t)n * sizeof *ix);
    }
    *g = (struct sl_kv_gather){layer, head, ix, first, n, malloc(bytes), malloc(bytes)};
    memset(g->k_out, KVT_SENTINEL, bytes);
    memset(g->v_out, KVT_SENTINEL, bytes);
}

void kvt_gset_free(struct kvt_gset *gs) {
    for (int32_t i = 0; i < gs->n; i++) {
        free((void *)gs->g[i].idx);
        free(gs->g[i].k_out);
        free(gs->g[i].v_out);
    }
    free(gs->g);
    gs->g = NULL;
    gs->n = 0;
}

int kvt_gset_check(const struct kvt_gset *gs, const struct kvt_ref *r) {
    for (int32_t i = 0; i < gs->n; i++)
        if (kvt_check_rows(r, &gs->g[i])) return 1;
    return 0;
}

int kvt_check_gather_random(sl_kv_store_t s, const struct kvt_ref *r, int64_t nidx, uint64_t *rng) {
    if (r->n == 0) return 0;
    struct kvt_gset gs = {0};
    int64_t *idx = malloc((size_t)nidx * sizeof *idx);
    for (int32_t l = 0; l < r->shape.n_layer; l++)
        for (int32_t h = 0; h < r->shape.n_head_kv; h++) {
            for (int64_t i = 0; i < nidx; i++) idx[i] = kvt_rand_below(rng, r->n);
            kvt_gset_add(&gs, r, l, h, idx, 0, nidx);
        }
    free(idx);
    int rc = sl_kv_store_gather(s, gs.g, gs.n);
    if (rc < 0) msg("gather of %d descriptors failed: %s", gs.n, sl_strerror(rc));
    else rc = kvt_gset_check(&gs, r);
    kvt_gset_free(&gs);
    return rc;
}
