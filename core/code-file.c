/* The key-code file (see code-file.h). */
#include "core/code-file.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/le-bytes.h"
#include "storage/atomic-file.h"
#include "storage/crc32c.h"
#include "storage/mapped-file.h"

#define MAGIC "SLCODES1"
#define VERSION 1u
#define HEADER 128

char *sl_code_file_path(const char *store_path) {
    size_t n = strlen(store_path) + sizeof SL_CODE_FILE_SUFFIX;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", store_path, SL_CODE_FILE_SUFFIX);
    return p;
}

static const uint64_t *row_of(const struct sl_code_table *t, int32_t layer, int32_t g) {
    return t->codes + ((int64_t)layer * t->n_head_kv + g) * t->n_ctx * t->words;
}

static size_t seg_bytes(const struct sl_code_table *t, int64_t n) { return sizeof(uint64_t) * (size_t)(n * t->words); }

static void encode_header(uint8_t *h, const struct sl_code_table *t, const struct sl_code_source *src,
                          uint32_t payload_crc) {
    memset(h, 0, HEADER);
    memcpy(h, MAGIC, 8);
    sl_wr32(h + 8, VERSION);
    sl_wr32(h + 12, HEADER);
    sl_wr32(h + 16, (uint32_t)t->n_layer);
    sl_wr32(h + 20, (uint32_t)t->n_head_kv);
    sl_wr32(h + 24, (uint32_t)t->words);
    sl_wr32(h + 28, (uint32_t)t->first_layer);
    sl_wr64(h + 32, (uint64_t)src->store.n_tokens);
    memcpy(h + 40, src->model, 32);
    memcpy(h + 72, src->hash, 32);
    sl_wr32(h + 104, src->store.tags_crc);
    sl_wr32(h + 108, src->store.blocks_crc);
    sl_wr32(h + 112, src->store.open_crc);
    sl_wr32(h + 116, payload_crc);
    sl_wr32(h + 124, sl_crc32c(0, h, 124));
}

int sl_code_file_save(const char *path, const struct sl_code_table *t, const struct sl_code_source *src) {
    const int64_t n = src->store.n_tokens;
    if (n < 0 || n > t->n_ctx || t->first_layer < 0 || t->first_layer > t->n_layer)
        return sl_fail(SL_EINVAL, "code file %s: %" PRId64 " positions, first layer %d of a %" PRId64
                       "-position, %d-layer table", path, n, t->first_layer, t->n_ctx, t->n_layer);
    /* the checksum first (the header leads the file), then one write per (layer, head) */
    uint32_t crc = 0;
    for (int32_t l = t->first_layer; l < t->n_layer; l++)
        for (int32_t g = 0; g < t->n_head_kv; g++) crc = sl_crc32c(crc, row_of(t, l, g), seg_bytes(t, n));
    uint8_t h[HEADER];
    encode_header(h, t, src, crc);
    struct sl_atomic_file f;
    int rc = sl_atomic_file_open(&f, path);
    if (!rc) rc = sl_atomic_file_write(&f, h, HEADER);
    for (int32_t l = t->first_layer; !rc && l < t->n_layer; l++)
        for (int32_t g = 0; !rc && g < t->n_head_kv; g++) rc = sl_atomic_file_write(&f, row_of(t, l, g), seg_bytes(t, n));
    if (rc) {
        sl_atomic_file_abort(&f);
        return rc;
    }
    return sl_atomic_file_commit(&f);
}

/* The header against the table and the source: 0, or why not. *first: the file's first layer. */
static int check_header(const uint8_t *h, const struct sl_code_table *t, const struct sl_code_source *src,
                        const char *path, int32_t *first, uint32_t *payload_crc) {
    if (memcmp(h, MAGIC, 8) != 0) return sl_fail(SL_EBADMAGIC, "%s is not a code file", path);
    if (sl_rd32(h + 8) != VERSION || sl_rd32(h + 12) != HEADER)
        return sl_fail(SL_EVERSION, "code file %s: version %u not supported", path, sl_rd32(h + 8));
    if (sl_rd32(h + 124) != sl_crc32c(0, h, 124)) return sl_fail(SL_ECORRUPT, "code file %s: header checksum", path);
    *first = (int32_t)sl_rd32(h + 28);
    *payload_crc = sl_rd32(h + 116);
    if ((int32_t)sl_rd32(h + 16) != t->n_layer || (int32_t)sl_rd32(h + 20) != t->n_head_kv ||
        (int32_t)sl_rd32(h + 24) != t->words || *first < 0 || *first > t->first_layer)
        return sl_fail(SL_EMISMATCH, "code file %s: codes of another shape or fewer layers", path);
    if (memcmp(h + 40, src->model, 32) != 0 || memcmp(h + 72, src->hash, 32) != 0)
        return sl_fail(SL_EMISMATCH, "code file %s: made with another model or hash", path);
    if ((int64_t)sl_rd64(h + 32) != src->store.n_tokens || sl_rd32(h + 104) != src->store.tags_crc ||
        sl_rd32(h + 108) != src->store.blocks_crc || sl_rd32(h + 112) != src->store.open_crc)
        return sl_fail(SL_EMISMATCH, "code file %s: made for other store content (%" PRIu64 " positions; the "
                       "store holds %" PRId64 ")", path, sl_rd64(h + 32), src->store.n_tokens);
    if (src->store.n_tokens > t->n_ctx)
        return sl_fail(SL_EMISMATCH, "code file %s: %" PRId64 " positions, the table holds %" PRId64, path,
                       src->store.n_tokens, t->n_ctx);
    return 0;
}

int sl_code_file_load(const char *path, const struct sl_code_table *t, const struct sl_code_source *src) {
    struct sl_mapped_file f;
    int rc = sl_mapped_file_open(path, &f);
    if (rc) return rc; /* -ENOENT: none saved */
    const uint8_t *b = f.data;
    int32_t first = 0;
    uint32_t want_crc = 0;
    if (f.size < HEADER) {
        rc = sl_fail(SL_ETRUNCATED, "code file %s is shorter than its header", path);
    } else if (!(rc = check_header(b, t, src, path, &first, &want_crc))) {
        const int64_t n = src->store.n_tokens;
        const int64_t want = HEADER + (int64_t)(t->n_layer - first) * t->n_head_kv * (int64_t)seg_bytes(t, n);
        if ((int64_t)f.size != want)
            rc = sl_fail((int64_t)f.size < want ? SL_ETRUNCATED : SL_EFORMAT,
                         "code file %s is %zu bytes, its header declares %" PRId64, path, f.size, want);
    }
    /* every (layer, head) through the checksum; the layers the table wants into it */
    uint32_t crc = 0;
    const uint8_t *p = rc ? NULL : b + HEADER; /* b is NULL for an empty file */
    for (int32_t l = first; !rc && l < t->n_layer; l++)
        for (int32_t g = 0; g < t->n_head_kv; g++) {
            const size_t len = seg_bytes(t, src->store.n_tokens);
            crc = sl_crc32c(crc, p, len);
            if (l >= t->first_layer) memcpy((uint64_t *)row_of(t, l, g), p, len);
            p += len;
        }
    if (!rc && crc != want_crc) rc = sl_fail(SL_ECORRUPT, "code file %s: codes fail their checksum", path);
    sl_mapped_file_close(&f);
    return rc;
}
