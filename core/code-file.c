/* The key-code file (see code-file.h). */
#include "core/code-file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/le-bytes.h"
#include "storage/atomic-file.h"
#include "storage/crc32c.h"

#define MAGIC "SLCODES1"
#define VERSION 1u
#define HEADER 128
#define SKIP_BYTES (4 << 20) /* bounce buffer for layers the table does not want */

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

static int read_at(int fd, void *buf, size_t n, off_t off, const char *path) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return sl_fail(-errno, "code file %s: %s", path, strerror(errno));
        if (r == 0) return sl_fail(SL_ETRUNCATED, "code file %s ends early", path);
        p += r, off += r, n -= (size_t)r;
    }
    return 0;
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

static int load_fd(int fd, const char *path, const struct sl_code_table *t, const struct sl_code_source *src) {
    uint8_t h[HEADER];
    int32_t first = 0;
    uint32_t want_crc = 0;
    int rc = read_at(fd, h, HEADER, 0, path);
    if (rc == SL_ETRUNCATED) return sl_fail(SL_ETRUNCATED, "code file %s is shorter than its header", path);
    if (rc || (rc = check_header(h, t, src, path, &first, &want_crc))) return rc;
    const int64_t n = src->store.n_tokens;
    struct stat st;
    if (fstat(fd, &st) != 0) return sl_fail(-errno, "code file %s: %s", path, strerror(errno));
    const int64_t want = HEADER + (int64_t)(t->n_layer - first) * t->n_head_kv * (int64_t)seg_bytes(t, n);
    if ((int64_t)st.st_size != want)
        return sl_fail(st.st_size < want ? SL_ETRUNCATED : SL_EFORMAT,
                       "code file %s is %" PRId64 " bytes, its header declares %" PRId64, path, (int64_t)st.st_size, want);
    uint8_t *skip = NULL;
    uint32_t crc = 0;
    off_t off = HEADER;
    for (int32_t l = first; !rc && l < t->n_layer; l++)
        for (int32_t g = 0; !rc && g < t->n_head_kv; g++) {
            size_t left = seg_bytes(t, n);
            if (l >= t->first_layer) { /* straight into the table */
                uint64_t *dst = (uint64_t *)row_of(t, l, g);
                if (!(rc = read_at(fd, dst, left, off, path))) crc = sl_crc32c(crc, dst, left);
                off += (off_t)left;
                continue;
            }
            if (!skip && !(skip = malloc(SKIP_BYTES))) rc = sl_fail(SL_ENOMEM, "out of memory");
            while (!rc && left > 0) { /* a layer the table does not want: checked, dropped */
                size_t m = left < SKIP_BYTES ? left : SKIP_BYTES;
                if (!(rc = read_at(fd, skip, m, off, path))) crc = sl_crc32c(crc, skip, m);
                off += (off_t)m, left -= m;
            }
        }
    free(skip);
    if (!rc && crc != want_crc) rc = sl_fail(SL_ECORRUPT, "code file %s: codes fail their checksum", path);
    return rc;
}

int sl_code_file_load(const char *path, const struct sl_code_table *t, const struct sl_code_source *src) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sl_fail(-errno, "code file %s: %s", path, strerror(errno));
    int rc = load_fd(fd, path, t, src);
    close(fd);
    return rc;
}
