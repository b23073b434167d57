/* Host tier: every block in RAM. Memory comes in segments of seg_blocks block indices (all
 * layers and heads of those positions), mapped, NUMA-placed, locked and registered as the
 * context grows, so a store sized for 1M positions costs nothing until it is filled and a
 * pinned (device-registered) store never registers more than it holds. */
#include <string.h>

#include "core/internal.h"
#include "storage/kv-store-internal.h"

#define SEG_TARGET_BYTES (32ll << 20)

int sl_kv_host_init(struct sl_kv_store *s) {
    const struct sl_kv_layout *l = &s->layout;
    int64_t per_block_row = (int64_t)l->shape.n_layer * l->shape.n_head_kv * l->block_bytes;
    /* A power of two, so finding a block's segment is a shift. */
    s->seg_shift = 0;
    while ((per_block_row << (s->seg_shift + 1)) <= SEG_TARGET_BYTES &&
           (INT64_C(1) << s->seg_shift) < l->n_blocks)
        s->seg_shift++;
    s->seg_blocks = INT64_C(1) << s->seg_shift;
    s->n_segs = (l->n_blocks + s->seg_blocks - 1) / s->seg_blocks;
    s->segs = calloc((size_t)s->n_segs, sizeof *s->segs);
    if (!s->segs) return sl_fail(SL_ENOMEM, "cannot allocate %lld KV segment slots",
                                 (long long)s->n_segs);
    return 0;
}

void sl_kv_host_free(struct sl_kv_store *s) {
    for (int64_t i = 0; s->segs && i < s->n_segs; i++) sl_host_mem_free(&s->segs[i]);
    free(s->segs);
    s->segs = NULL;
}

int64_t sl_kv_host_ram(const struct sl_kv_store *s) {
    int64_t bytes = 0;
    for (int64_t i = 0; s->segs && i < s->n_segs; i++) bytes += (int64_t)s->segs[i].bytes;
    return bytes;
}

static int ensure_segment(struct sl_kv_store *s, int64_t seg) {
    if (s->segs[seg].ptr) return 0;
    const struct sl_kv_layout *l = &s->layout;
    size_t bytes = (size_t)((int64_t)l->shape.n_layer * s->seg_blocks * l->shape.n_head_kv *
                            l->block_bytes);
    struct sl_host_mem_params mp = sl_kv_mem_params(s);
    int err = sl_host_mem_alloc(&s->segs[seg], bytes, &mp);
    if (err) return err;
    sl_kv_note_mem(s, &s->segs[seg]);
    return 0;
}

int sl_kv_host_reserve(struct sl_kv_store *s, int64_t pos, int64_t n) {
    const int32_t T = s->layout.shape.block_tokens;
    for (int64_t seg = (pos / T) >> s->seg_shift; seg <= ((pos + n - 1) / T) >> s->seg_shift; seg++) {
        int err = ensure_segment(s, seg);
        if (err) return err;
    }
    return 0;
}

/* ---- direct addressing (storage/kv-host-map.h) ------------------------------------------- */

int sl_kv_store_host_map(sl_kv_store_t s, struct sl_kv_host_map *out) {
    if (!s || !out) return sl_fail(SL_EINVAL, "host map: NULL argument");
    if (!s->open) return sl_fail(SL_ECLOSED, "KV store is closed");
    if (s->tier != SL_KV_TIER_HOST)
        return sl_fail(SL_EUNSUPPORTED, "host map: only the host tier keeps every block in RAM");
    const struct sl_kv_layout *l = &s->layout;
    memset(out, 0, sizeof *out);
    out->n_layer = l->shape.n_layer;
    out->n_head_kv = l->shape.n_head_kv;
    out->head_dim = l->shape.head_dim;
    out->block_tokens = l->shape.block_tokens;
    out->block_shift = l->block_shift;
    out->row_bytes = l->row_bytes;
    out->block_bytes = l->block_bytes;
    out->seg_shift = s->seg_shift;
    out->n_segs = s->n_segs;
    out->seg_bytes = (int64_t)l->shape.n_layer * s->seg_blocks * l->shape.n_head_kv * l->block_bytes;
    return 0;
}

int sl_kv_store_host_segment(sl_kv_store_t s, int64_t seg, struct sl_kv_host_segment *out) {
    if (!s || !out) return sl_fail(SL_EINVAL, "host segment: NULL argument");
    if (!s->open) return sl_fail(SL_ECLOSED, "KV store is closed");
    if (s->tier != SL_KV_TIER_HOST)
        return sl_fail(SL_EUNSUPPORTED, "host segment: only the host tier keeps every block in RAM");
    if (seg < 0 || seg >= s->n_segs)
        return sl_fail(SL_EBOUNDS, "host segment %lld outside 0..%lld", (long long)seg,
                       (long long)s->n_segs - 1);
    out->ptr = s->segs[seg].ptr;
    out->bytes = s->segs[seg].ptr ? s->segs[seg].bytes : 0;
    out->registered = s->segs[seg].registered;
    return 0;
}
