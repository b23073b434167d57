/* KV store file format: layout arithmetic and header slots (layout in kv-format.h). */
#include "storage/kv-format.h"

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
    sl_wr32(out + 4092, sl_crc32c(0, out, 4092));
}

int sl_kv_header_decode(const uint8_t in[SL_KV_HEADER_BYTES], int slot, struct sl_kv_header *out) {
    memset(out, 0, sizeof *out);
    if (memcmp(in, SL_KV_FORMAT_MAGIC, 8) != 0)
        return sl_fail(SL_EBADMAGIC, "KV header slot %d: no SLKVSTOR magic", slot);
    if (sl_rd32(in + 4092) != sl_crc32c(0, in, 4092))
        return sl_fail(SL_ECORRUPT, "KV header slot %d: checksum mismatch", slot);
    uint32_t version = sl_rd32(in + 8);
    if (version != SL_KV_FORMAT_VERSION)
        return sl_fail(SL_EVERSION, "KV header slot %d: version %u (this build reads %u)", slot,
                       version, SL_KV_FORMAT_VERSION);
    if (sl_rd32(in + 12) != SL_KV_HEADER_BYTES)
        return sl_fail(SL_EFORMAT, "KV header slot %d: header size %u", slot, sl_rd32(in + 12));
    for (int i = 144; i < 4092; i++)
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

int sl_kv_header_pick(const uint8_t in[2 * SL_KV_HEADER_BYTES], struct sl_kv_header *out,
                      int *slot) {
    struct sl_kv_header h[2];
    int err[2];
    char detail[2][256];
    for (int i = 0; i < 2; i++) {
        err[i] = sl_kv_header_decode(in + i * SL_KV_HEADER_BYTES, i, &h[i]);
        snprintf(detail[i], sizeof detail[i], "%s", err[i] ? sl_error_detail() : "");
    }
    if (err[0] && err[1]) {
        int e = err[0] == SL_EBADMAGIC ? err[1] : err[0];
        if (err[0] == SL_EBADMAGIC && err[1] == SL_EBADMAGIC)
            return sl_fail(SL_EBADMAGIC, "not a Spotlight KV store (no SLKVSTOR magic)");
        return sl_fail(e, "%s", e == err[0] ? detail[0] : detail[1]);
    }
    int pick = err[0] ? 1 : err[1] ? 0 : (h[1].generation > h[0].generation ? 1 : 0);
    if (err[pick ^ 1])
        sl_log(SL_LOG_WARN, "KV store: using header slot %d (generation %llu); %s — an "
               "interrupted sync, the last completed one is used", pick,
               (unsigned long long)h[pick].generation, detail[pick ^ 1]);
    *out = h[pick];
    *slot = pick;
    return 0;
}
