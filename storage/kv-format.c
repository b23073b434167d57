/* KV store file format: layout arithmetic and header slots (layout in kv-format.h). */
#include "storage/kv-format.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/le-bytes.h"
#include "storage/crc32c.h"


static int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

int sl_kv_layout_compute(const struct sl_kv_shape *s, int64_t capacity, struct sl_kv_layout *out) {
    memset(out, 0, sizeof *out);
    if (!s) return sl_fail(SL_EINVAL, "no KV shape given");
    if (s->n_layer < 1 || s->n_layer > 4096)
        return sl_fail(SL_EINVAL, "KV shape: n_layer %d outside 1..4096", s->n_layer);
    if (s->n_head_kv < 1 || s->n_head_kv > 1024)
        return sl_fail(SL_EINVAL, "KV shape: n_head_kv %d outside 1..1024", s->n_head_kv);
    if (s->head_dim < 1 || s->head_dim > 1024)
        return sl_fail(SL_EINVAL, "KV shape: head_dim %d outside 1..1024", s->head_dim);
    if (s->dtype != SL_KV_DTYPE_F16 && s->dtype != SL_KV_DTYPE_BF16)
        return sl_fail(SL_EINVAL, "KV shape: unknown dtype %d", (int)s->dtype);
    int32_t bt = s->block_tokens;
    if (bt < 4 || bt > 256 || (bt & (bt - 1)))
        return sl_fail(SL_EINVAL, "KV shape: block_tokens %d is not a power of two in 4..256", bt);
    if (capacity < 1 || capacity > SL_KV_MAX_CAPACITY)
        return sl_fail(SL_EINVAL, "KV capacity %lld outside 1..2^40", (long long)capacity);

    /* All bounds above keep every product below 2^63: blocks <= 2^40/4, heads*layers <= 2^22,
     * stride <= 2^20 -> data <= 2^38 * 2^22 * 2^20 would not; check that one explicitly. */
    struct sl_kv_layout l = {.shape = *s, .capacity = capacity};
    l.n_blocks = (capacity + bt - 1) / bt;
    l.block_shift = __builtin_ctz((unsigned)bt);
    l.row_bytes = (int64_t)s->head_dim * 2;
    l.block_bytes = 2 * (int64_t)bt * l.row_bytes;
    l.block_stride = round_up(l.block_bytes, SL_KV_ALIGN);
    int64_t heads = (int64_t)s->n_layer * s->n_head_kv;
    l.tail_bytes = heads * l.block_stride;
    l.tail_off[0] = 2 * (int64_t)SL_KV_HEADER_BYTES;
    l.tail_off[1] = l.tail_off[0] + l.tail_bytes;
    l.crc_off = l.tail_off[1] + l.tail_bytes;
    uint64_t n_all_blocks, data_bytes, end;
    if (sl_mul_overflow_u64((uint64_t)heads, (uint64_t)l.n_blocks, &n_all_blocks) ||
        sl_mul_overflow_u64(n_all_blocks, (uint64_t)l.block_stride, &data_bytes) ||
        data_bytes > (uint64_t)INT64_MAX / 2)
        return sl_fail(SL_EINVAL, "KV store of %lld positions would exceed 2^62 bytes",
                       (long long)capacity);
    l.crc_bytes = round_up((int64_t)n_all_blocks * 4, SL_KV_ALIGN);
    l.tag_off = l.crc_off + l.crc_bytes;
    l.tag_bytes = round_up(capacity * 4, SL_KV_ALIGN);
    l.data_off = l.tag_off + l.tag_bytes;
    if (sl_add_overflow_u64((uint64_t)l.data_off, data_bytes, &end) || end > (uint64_t)INT64_MAX)
        return sl_fail(SL_EINVAL, "KV store file would exceed 2^63 bytes");
    l.file_size = (int64_t)end;
    *out = l;
    return 0;
}

int64_t sl_kv_layout_block_index(const struct sl_kv_layout *l, int32_t layer, int64_t block,
                                 int32_t head) {
    return ((int64_t)layer * l->n_blocks + block) * l->shape.n_head_kv + head;
}

int64_t sl_kv_layout_block_offset(const struct sl_kv_layout *l, int32_t layer, int64_t block,
                                  int32_t head) {
    return l->data_off + sl_kv_layout_block_index(l, layer, block, head) * l->block_stride;
}

uint32_t sl_kv_head_check(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

void sl_kv_header_encode(const struct sl_kv_header *h, int slot, uint8_t out[SL_KV_HEADER_BYTES]) {
    const struct sl_kv_layout *l = &h->layout;
    memset(out, 0, SL_KV_HEADER_BYTES);
    memcpy(out, SL_KV_FORMAT_MAGIC, 8);
    sl_wr32(out + 8, SL_KV_FORMAT_VERSION);
    sl_wr32(out + 12, SL_KV_HEADER_BYTES);
    sl_wr32(out + 16, (uint32_t)l->shape.n_layer);
    sl_wr32(out + 20, (uint32_t)l->shape.n_head_kv);
    sl_wr32(out + 24, (uint32_t)l->shape.head_dim);
    sl_wr32(out + 28, (uint32_t)l->shape.dtype);
    sl_wr32(out + 32, (uint32_t)l->shape.block_tokens);
    sl_wr32(out + 36, (uint32_t)l->block_stride);
    sl_wr64(out + 40, (uint64_t)l->capacity);
    sl_wr64(out + 48, h->generation);
    sl_wr64(out + 56, (uint64_t)h->n_tokens);
    sl_wr64(out + 64, (uint64_t)l->tail_off[slot & 1]);
    sl_wr64(out + 72, (uint64_t)l->crc_off);
    sl_wr64(out + 80, (uint64_t)l->tag_off);
    sl_wr64(out + 88, (uint64_t)l->data_off);
    sl_wr64(out + 96, (uint64_t)l->file_size);
    sl_wr32(out + 104, h->tail_crc);
    sl_wr32(out + 108, h->tags_crc);
    memcpy(out + 112, h->fingerprint, 32);
    sl_wr32(out + 144, sl_kv_head_check(out, 144));
    sl_wr32(out + 4092, sl_crc32c(0, out, 4092));
}

int sl_kv_header_decode(const uint8_t in[SL_KV_HEADER_BYTES], int slot, struct sl_kv_header *out) {
    memset(out, 0, sizeof *out);
    if (memcmp(in, SL_KV_FORMAT_MAGIC, 8) != 0)
        return sl_fail(SL_EBADMAGIC, "KV header slot %d: no SLKVSTOR magic", slot);
    if (sl_rd32(in + 4092) != sl_crc32c(0, in, 4092))
        return sl_fail(SL_ECORRUPT, "KV header slot %d: checksum mismatch", slot);
    uint32_t version = sl_rd32(in + 8);
    if (version != 1 && version != SL_KV_FORMAT_VERSION)
        return sl_fail(SL_EVERSION, "KV header slot %d: version %u (this build reads 1 and %u)",
                       slot, version, SL_KV_FORMAT_VERSION);
    if (sl_rd32(in + 12) != SL_KV_HEADER_BYTES)
        return sl_fail(SL_EFORMAT, "KV header slot %d: header size %u", slot, sl_rd32(in + 12));
    if (version >= 2 && sl_rd32(in + 144) != sl_kv_head_check(in, 144))
        return sl_fail(SL_ECORRUPT, "KV header slot %d: first-sector check mismatch", slot);
    for (int i = version >= 2 ? 148 : 144; i < 4092; i++)
        if (in[i]) return sl_fail(SL_EFORMAT, "KV header slot %d: reserved byte %d set", slot, i);

    struct sl_kv_shape s = {
        .n_layer = (int32_t)sl_rd32(in + 16),
        .n_head_kv = (int32_t)sl_rd32(in + 20),
        .head_dim = (int32_t)sl_rd32(in + 24),
        .dtype = (enum sl_kv_dtype)sl_rd32(in + 28),
        .block_tokens = (int32_t)sl_rd32(in + 32),
    };
    uint64_t capacity = sl_rd64(in + 40);
    if (capacity > (uint64_t)SL_KV_MAX_CAPACITY)
        return sl_fail(SL_EFORMAT, "KV header slot %d: capacity %llu too large", slot,
                       (unsigned long long)capacity);
    struct sl_kv_layout l;
    int err = sl_kv_layout_compute(&s, (int64_t)capacity, &l);
    if (err) return sl_fail(SL_EFORMAT, "KV header slot %d: %s", slot, sl_error_detail());

    uint64_t n_tokens = sl_rd64(in + 56);
    if (n_tokens > capacity)
        return sl_fail(SL_EFORMAT, "KV header slot %d: %llu positions exceed capacity %llu", slot,
                       (unsigned long long)n_tokens, (unsigned long long)capacity);
    if (sl_rd32(in + 36) != (uint64_t)l.block_stride || sl_rd64(in + 64) != (uint64_t)l.tail_off[slot & 1] ||
        sl_rd64(in + 72) != (uint64_t)l.crc_off || sl_rd64(in + 80) != (uint64_t)l.tag_off ||
        sl_rd64(in + 88) != (uint64_t)l.data_off || sl_rd64(in + 96) != (uint64_t)l.file_size)
        return sl_fail(SL_EFORMAT, "KV header slot %d: region offsets do not match the shape",
                       slot);
    uint64_t generation = sl_rd64(in + 48);
    if (generation == 0) return sl_fail(SL_EFORMAT, "KV header slot %d: generation 0", slot);

    out->layout = l;
    out->generation = generation;
    out->n_tokens = (int64_t)n_tokens;
    out->tail_crc = sl_rd32(in + 104);
    out->tags_crc = sl_rd32(in + 108);
    memcpy(out->fingerprint, in + 112, 32);
    return 0;
}

/* ---- choosing a slot (the rules are in kv-format.h) ---- */

enum slot_kind { SLOT_OK, SLOT_REPAIRED, SLOT_TORN, SLOT_DAMAGED };

struct slot_info {
    enum slot_kind kind;
    int err;                /* why the slot does not decode (not SLOT_OK) */
    char why[200];
    struct sl_kv_header h;  /* SLOT_OK, SLOT_REPAIRED */
    int bit;                /* SLOT_REPAIRED: byte * 8 + bit that was flipped */
    uint64_t gen;           /* SLOT_TORN: generation and positions in its first sector */
    uint64_t n_tokens;
    bool magic, zero;       /* the magic is there; the whole slot is zero */
};

/* One step of the raw (reflected) CRC32C register over a byte, no pre/post inversion. */
static uint32_t crc_step(uint32_t r, uint8_t b) {
    r ^= b;
    for (int i = 0; i < 8; i++) r = (r >> 1) ^ (0x82F63B78u & (0u - (r & 1u)));
    return r;
}

static bool try_flip(const uint8_t *in, int slot, int bit, struct slot_info *si) {
    uint8_t buf[SL_KV_HEADER_BYTES];
    memcpy(buf, in, sizeof buf);
    buf[bit >> 3] ^= (uint8_t)(1u << (bit & 7));
    if (memcmp(buf, SL_KV_FORMAT_MAGIC, 8) != 0 || sl_rd32(buf + 4092) != sl_crc32c(0, buf, 4092) ||
        sl_kv_header_decode(buf, slot, &si->h) != 0)
        return false;
    si->bit = bit;
    return true;
}

/* A damaged slot that one bit flip turns into a valid header: CRC32C's Hamming distance over
 * 4096 bytes makes that repair unique. CRC is linear: flipping bit k of byte p changes the CRC
 * of the 4092 covered bytes by the raw CRC of that bit followed by 4091 - p zero bytes, so the
 * flip is found by matching the syndrome (computed CRC ^ stored CRC) against those deltas,
 * kept sorted (made once) so a lookup is a binary search, not 32K register steps. */
#define COVERED_BITS (4092 * 8)
static struct flip_delta {
    uint32_t delta;
    int32_t bit;
} g_deltas[COVERED_BITS];
static pthread_once_t g_deltas_once = PTHREAD_ONCE_INIT;

static int delta_cmp(const void *a, const void *b) {
    uint32_t x = ((const struct flip_delta *)a)->delta, y = ((const struct flip_delta *)b)->delta;
    return x < y ? -1 : x > y;
}

static void make_deltas(void) {
    for (int k = 0; k < 8; k++) {
        uint32_t r = crc_step(0, (uint8_t)(1u << k));
        for (int p = 4091; p >= 0; p--, r = crc_step(r, 0))
            g_deltas[p * 8 + k] = (struct flip_delta){r, p * 8 + k};
    }
    qsort(g_deltas, COVERED_BITS, sizeof *g_deltas, delta_cmp);
}

static bool repair_one_bit(const uint8_t *in, int slot, struct slot_info *si) {
    const uint32_t syn = sl_crc32c(0, in, 4092) ^ sl_rd32(in + 4092);
    if (!syn) return false;
    if (!(syn & (syn - 1))) /* the flip is in the stored CRC itself */
        return try_flip(in, slot, 4092 * 8 + __builtin_ctz(syn), si);
    pthread_once(&g_deltas_once, make_deltas);
    const struct flip_delta key = {syn, 0};
    const struct flip_delta *hit = bsearch(&key, g_deltas, COVERED_BITS, sizeof *g_deltas, delta_cmp);
    return hit && try_flip(in, slot, hit->bit, si);
}

/* Half old, half new, sector by sector (kv-format.h): sector 0 whole and self-consistent,
 * the rest zero, the layout the valid partner's; only header_crc wrong. */
static bool torn_write(const uint8_t *in, int slot, const struct sl_kv_header *partner,
                       struct slot_info *si) {
    if (!partner || memcmp(in, SL_KV_FORMAT_MAGIC, 8) != 0 || sl_rd32(in + 8) < 2 ||
        sl_rd32(in + 144) != sl_kv_head_check(in, 144))
        return false;
    for (int i = 148; i < 4092; i++)
        if (in[i]) return false;
    uint8_t want[SL_KV_HEADER_BYTES];
    struct sl_kv_header h = *partner;
    sl_kv_header_encode(&h, slot, want);
    /* the fields a sync does not change: version .. capacity, tail_off .. file_size, owner */
    if (memcmp(in + 8, want + 8, 40) != 0 || memcmp(in + 64, want + 64, 40) != 0 ||
        memcmp(in + 112, want + 112, 32) != 0)
        return false;
    si->gen = sl_rd64(in + 48);
    si->n_tokens = sl_rd64(in + 56);
    return true;
}

static void classify(const uint8_t *in, int slot, struct slot_info *si) {
    memset(si, 0, sizeof *si);
    si->err = sl_kv_header_decode(in, slot, &si->h);
    if (!si->err) return;
    snprintf(si->why, sizeof si->why, "%s", sl_error_detail());
    si->magic = memcmp(in, SL_KV_FORMAT_MAGIC, 8) == 0;
    si->zero = true;
    for (int i = 0; i < (int)SL_KV_HEADER_BYTES && si->zero; i++) si->zero = in[i] == 0;
    si->kind = si->zero ? SLOT_DAMAGED : repair_one_bit(in, slot, si) ? SLOT_REPAIRED : SLOT_DAMAGED;
    if (si->err == SL_EVERSION && si->kind != SLOT_REPAIRED) si->kind = SLOT_DAMAGED;
}

/* "generation 7, 1660 positions" of a slot, as far as it can be read. */
static void describe(const struct slot_info *si, int slot, char *out, size_t n) {
    switch (si->kind) {
    case SLOT_OK:
        snprintf(out, n, "slot %d (generation %llu, %lld positions)", slot,
                 (unsigned long long)si->h.generation, (long long)si->h.n_tokens);
        break;
    case SLOT_REPAIRED:
        snprintf(out, n, "slot %d (generation %llu, %lld positions; bit %d of byte %d flipped)",
                 slot, (unsigned long long)si->h.generation, (long long)si->h.n_tokens,
                 si->bit & 7, si->bit >> 3);
        break;
    case SLOT_TORN:
        snprintf(out, n, "slot %d (generation %llu, %llu positions; torn write)", slot,
                 (unsigned long long)si->gen, (unsigned long long)si->n_tokens);
        break;
    default:
        snprintf(out, n, "slot %d (unreadable: %s)", slot, si->zero ? "all zero" : si->why);
    }
}

int sl_kv_header_pick(const uint8_t in[2 * SL_KV_HEADER_BYTES], unsigned flags,
                      struct sl_kv_pick *out) {
    struct slot_info si[2];
    memset(out, 0, sizeof *out);
    for (int i = 0; i < 2; i++) classify(in + i * SL_KV_HEADER_BYTES, i, &si[i]);
    char d[2][300];

    if (si[0].kind == SLOT_OK && si[1].kind == SLOT_OK) {
        if (si[0].h.generation == si[1].h.generation)
            return sl_fail(SL_ECORRUPT, "both header slots claim generation %llu",
                           (unsigned long long)si[0].h.generation);
        out->slot = si[1].h.generation > si[0].h.generation ? 1 : 0;
        out->h = si[out->slot].h;
        if (flags & SL_KV_PICK_RECOVER) { /* the newer's tail or tags may still fail */
            out->has_fallback = true;
            out->fb_slot = out->slot ^ 1;
            out->fb = si[out->fb_slot].h;
        }
        return 0;
    }
    if (si[0].kind != SLOT_OK && si[1].kind != SLOT_OK) {
        if (!si[0].magic && !si[1].magic && si[0].kind != SLOT_REPAIRED && si[1].kind != SLOT_REPAIRED)
            return sl_fail(SL_EBADMAGIC, "not a Spotlight KV store (no SLKVSTOR magic)");
        describe(&si[0], 0, d[0], sizeof d[0]);
        describe(&si[1], 1, d[1], sizeof d[1]);
        /* recover: the newest one-bit repair, if any (the caller checks its data) */
        int best = -1;
        for (int i = 0; i < 2; i++)
            if (si[i].kind == SLOT_REPAIRED && (best < 0 || si[i].h.generation > si[best].h.generation))
                best = i;
        if (best >= 0 && (flags & SL_KV_PICK_RECOVER)) {
            sl_log(SL_LOG_WARN, "KV store: both header slots damaged (%s; %s); recovering slot %d "
                   "by its one-bit repair", d[0], d[1], best);
            out->slot = best;
            out->h = si[best].h;
            out->repaired = true;
            return 0;
        }
        int e = si[0].err == SL_EBADMAGIC ? si[1].err : si[0].err;
        if (e == SL_EBADMAGIC) e = SL_ECORRUPT;
        return sl_fail(e, "both header slots are damaged: %s; %s%s", d[0], d[1],
                       best >= 0 ? " (--recover / params.recover tries the one-bit repair)" : "");
    }

    const int v = si[0].kind == SLOT_OK ? 0 : 1, x = v ^ 1;
    const uint64_t gv = si[v].h.generation;
    if (si[x].kind == SLOT_DAMAGED && torn_write(in + x * SL_KV_HEADER_BYTES, x, &si[v].h, &si[x]))
        si[x].kind = SLOT_TORN;
    describe(&si[v], v, d[v], sizeof d[v]);
    describe(&si[x], x, d[x], sizeof d[x]);
    out->slot = v;
    out->h = si[v].h;
    /* Known to be older, or a header write that never finished: the valid slot is current. */
    if ((si[x].kind == SLOT_REPAIRED && si[x].h.generation < gv) ||
        (si[x].kind == SLOT_TORN && si[x].gen + 1 == gv)) {
        sl_log(SL_LOG_WARN, "KV store: %s is damaged and older; using %s (the next sync rewrites "
               "the damaged slot)", d[x], d[v]);
        return 0;
    }
    if (si[x].kind == SLOT_TORN && si[x].gen == gv + 1) {
        sl_log(SL_LOG_WARN, "KV store: an interrupted sync left %s, never completed; continuing "
               "from %s, the last one that completed", d[x], d[v]);
        return 0;
    }
    /* Possibly newer, damaged. */
    if (flags & SL_KV_PICK_RECOVER) {
        if (si[x].kind == SLOT_REPAIRED && si[x].h.generation > gv) {
            sl_log(SL_LOG_WARN, "KV store: %s is damaged; recovering it by its one-bit repair "
                   "(%s is the fallback)", d[x], d[v]);
            out->fb = out->h;
            out->fb_slot = v;
            out->has_fallback = true;
            out->h = si[x].h;
            out->slot = x;
            out->repaired = true;
            return 0;
        }
        sl_log(SL_LOG_WARN, "KV store: %s is damaged; recovering %s, the older state", d[x], d[v]);
        return 0;
    }
    if (flags & SL_KV_PICK_READ_ONLY) {
        sl_log(SL_LOG_WARN, "KV store: %s is damaged and may be the newer state; reading %s "
               "(read-only)", d[x], d[v]);
        return 0;
    }
    return sl_fail(SL_ECORRUPT, "header %s is damaged and may hold a newer state than %s; refusing "
                   "to write, which would overwrite it (--recover / params.recover restores the "
                   "damaged generation when a one-bit repair and its data check out, else goes "
                   "back to the older one)", d[x], d[v]);
}
