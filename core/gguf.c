/* GGUF reader: header, metadata, tensor table and data-section validation.
 * The byte layout is documented in include/spotlight/gguf.h. */
#include <inttypes.h>
#include <string.h>

#include "core/gguf-internal.h"
#include "core/internal.h"
#include "spotlight/quant.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define MAX_NAME_BYTES 255    /* tensor names; ggml itself caps them at 63 */

static int parse_header(sl_gguf *g, struct sl_cursor *c, uint64_t *n_tensors, uint64_t *n_kv) {
    uint32_t magic, version;
    int rc = sl_cursor_u32(c, &magic, "the magic");
    if (rc) return rc == SL_ETRUNCATED ? sl_fail(SL_EBADMAGIC, "file is too short to be GGUF") : rc;
    if (magic != GGUF_MAGIC) return sl_fail(SL_EBADMAGIC, "not a GGUF file (magic 0x%08" PRIx32 ")", magic);
    if ((rc = sl_cursor_u32(c, &version, "the version"))) return rc;
    if (version == 1)
        return sl_fail(SL_EVERSION, "GGUF version 1 is not supported (only 2 and 3); reconvert the model");
    if ((version & 0xffff) == 0 && version != 0)
        return sl_fail(SL_EVERSION, "big-endian GGUF (version word 0x%08" PRIx32 ") is not supported", version);
    if (version < 2 || version > 3)
        return sl_fail(SL_EVERSION, "GGUF version %" PRIu32 " is not supported (only 2 and 3)", version);
    g->version = version;
    if ((rc = sl_cursor_u64(c, n_tensors, "the tensor count"))) return rc;
    if ((rc = sl_cursor_u64(c, n_kv, "the metadata count"))) return rc;
    /* A key/value takes at least 13 bytes (length, type, one-byte value); a tensor info at
     * least 24 (length, n_dims, type, offset). Larger counts cannot be in the file. */
    if (*n_kv > sl_cursor_left(c) / 13)
        return sl_fail(SL_ETRUNCATED, "header declares %" PRIu64 " metadata entries; the file "
                       "has room for at most %" PRIu64, *n_kv, sl_cursor_left(c) / 13);
    if (*n_tensors > sl_cursor_left(c) / 24)
        return sl_fail(SL_ETRUNCATED, "header declares %" PRIu64 " tensors; the file has room "
                       "for at most %" PRIu64, *n_tensors, sl_cursor_left(c) / 24);
    return 0;
}

static int parse_metadata(sl_gguf *g, struct sl_cursor *c, uint64_t n_kv) {
    g->kv_keys = sl_arena_alloc(&g->arena, (n_kv + 1) * sizeof *g->kv_keys);
    g->kv_values = sl_arena_alloc(&g->arena, (n_kv + 1) * sizeof *g->kv_values);
    if (!g->kv_keys || !g->kv_values) return sl_fail(SL_ENOMEM, "out of memory for metadata");
    int rc = sl_name_index_init(&g->kv_index, &g->arena, n_kv, g->kv_keys);
    if (rc) return rc;
    for (uint64_t i = 0; i < n_kv; i++) {
        uint64_t len;
        uint32_t type;
        if ((rc = sl_cursor_string(c, &g->arena, &g->kv_keys[i], &len, "a metadata key"))) return rc;
        if (len == 0 || strlen(g->kv_keys[i]) != len)
            return sl_fail(SL_EFORMAT, "metadata key %" PRIu64 " is empty or contains a NUL byte", i);
        if ((rc = sl_cursor_u32(c, &type, "a metadata value type"))) return rc;
        rc = sl_gguf_value_parse(c, &g->arena, (enum sl_gguf_type)type, &g->kv_values[i],
                                 g->kv_keys[i], 0);
        if (rc) return rc;
        if (sl_name_index_insert(&g->kv_index, (int64_t)i))
            return sl_fail(SL_EDUPLICATE, "duplicate metadata key '%s'", g->kv_keys[i]);
        g->n_kv = (int64_t)i + 1;
    }
    return 0;
}

static int read_alignment(sl_gguf *g) {
    g->alignment = SL_GGUF_DEFAULT_ALIGNMENT;
    const struct sl_gguf_value *v = sl_gguf_get(g, "general.alignment");
    if (!v) return 0;
    if (v->type != SL_GGUF_UINT32)
        return sl_fail(SL_EBADTYPE, "general.alignment is %s, expected uint32", sl_gguf_type_name(v->type));
    if (v->v.u64 == 0 || (v->v.u64 & (v->v.u64 - 1)) || v->v.u64 > (1u << 30))
        return sl_fail(SL_EFORMAT, "general.alignment %" PRIu64 " is not a power of two up to 2^30", v->v.u64);
    g->alignment = (uint32_t)v->v.u64;
    return 0;
}

static int parse_tensor_info(sl_gguf *g, struct sl_cursor *c, struct sl_gguf_tensor *t) {
    uint64_t len;
    uint32_t n_dims, type;
    int rc = sl_cursor_string(c, &g->arena, &t->name, &len, "a tensor name");
    if (rc) return rc;
    if (len == 0 || len > MAX_NAME_BYTES || strlen(t->name) != len)
        return sl_fail(SL_EFORMAT, "tensor name of %" PRIu64 " bytes is empty, too long or has a NUL byte", len);
    if ((rc = sl_cursor_u32(c, &n_dims, "a tensor's dimension count"))) return rc;
    if (n_dims > SL_GGUF_MAX_DIMS)
        return sl_fail(SL_EFORMAT, "tensor '%s' has %" PRIu32 " dimensions (at most %d)", t->name,
                       n_dims, SL_GGUF_MAX_DIMS);
    t->n_dims = (int32_t)n_dims;
    uint64_t n_elems = 1;
    for (int d = 0; d < SL_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if ((uint32_t)d < n_dims && (rc = sl_cursor_u64(c, &ne, "a tensor dimension"))) return rc;
        if (ne > INT64_MAX || sl_mul_overflow_u64(n_elems, ne, &n_elems) || n_elems > INT64_MAX)
            return sl_fail(SL_EFORMAT, "tensor '%s' has an absurd shape (dimension %d = %" PRIu64 ")",
                           t->name, d, ne);
        t->ne[d] = (int64_t)ne;
    }
    t->n_elems = (int64_t)n_elems;
    if ((rc = sl_cursor_u32(c, &type, "a tensor type"))) return rc;
    if (!sl_type_is_known((int)type))
        return sl_fail(SL_EBADTYPE, "tensor '%s' has unknown type id %" PRIu32, t->name, type);
    t->type = (int32_t)type;
    if (t->ne[0] % sl_type_block_elems(t->type) != 0)
        return sl_fail(SL_EFORMAT, "tensor '%s': row length %" PRId64 " is not a multiple of the "
                       "%s block size %" PRId64, t->name, t->ne[0], sl_type_name(t->type),
                       sl_type_block_elems(t->type));
    int64_t bytes = sl_type_row_bytes(t->type, t->n_elems);
    if (bytes < 0) return sl_fail(SL_EFORMAT, "tensor '%s' is too large", t->name);
    t->nbytes = (uint64_t)bytes;
    return sl_cursor_u64(c, &t->offset, "a tensor offset");
}

struct extent {
    uint64_t offset, nbytes;
    int64_t index;
};

static int cmp_extent(const void *a, const void *b) {
    const struct extent *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Checks every tensor's bytes lie inside the data section, aligned, and that no two overlap. */
static int check_tensor_data(sl_gguf *g) {
    uint64_t data_size = g->size > g->data_offset ? g->size - g->data_offset : 0;
    struct extent *ext = sl_arena_alloc(&g->arena, (uint64_t)g->n_tensors * sizeof *ext + 1);
    if (!ext) return sl_fail(SL_ENOMEM, "out of memory checking tensors");
    if (g->data_offset > g->size)
        for (int64_t i = 0; i < g->n_tensors; i++)
            if (g->tensors[i].nbytes)
                return sl_fail(SL_ETRUNCATED, "the data section starts at byte %" PRIu64 ", past the "
                               "end of the file (%" PRIu64 " bytes)", g->data_offset, g->size);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct sl_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return sl_fail(SL_EFORMAT, "tensor '%s' offset %" PRIu64 " is not a multiple of the "
                           "alignment %" PRIu32, t->name, t->offset, g->alignment);
        uint64_t end;
        if (sl_add_overflow_u64(t->offset, t->nbytes, &end))
            return sl_fail(SL_EBOUNDS, "tensor '%s' offset %" PRIu64 " + size overflows", t->name, t->offset);
        if (t->nbytes && t->offset >= data_size)
            return sl_fail(SL_EBOUNDS, "tensor '%s' starts at data offset %" PRIu64 ", past the end "
                           "of the data section (%" PRIu64 " bytes)", t->name, t->offset, data_size);
        if (end > data_size)
            return sl_fail(SL_ETRUNCATED, "tensor '%s' needs bytes up to %" PRIu64 " of the data "
                           "section, which has %" PRIu64 " (file truncated?)", t->name, end, data_size);
        t->data = g->bytes + g->data_offset + t->offset;
        ext[i] = (struct extent){t->offset, t->nbytes, i};
    }
    qsort(ext, (size_t)g->n_tensors, sizeof *ext, cmp_extent);
    uint64_t reach = 0; /* furthest end so far, to catch a tensor nested inside an earlier one */
    int64_t reach_index = -1;
    for (int64_t k = 0; k < g->n_tensors; k++) {
        if (!ext[k].nbytes) continue;
        if (reach_index >= 0 && ext[k].offset < reach)
            return sl_fail(SL_EBOUNDS, "tensors '%s' and '%s' overlap",
                           g->tensors[reach_index].name, g->tensors[ext[k].index].name);
        reach = ext[k].offset + ext[k].nbytes;
        reach_index = ext[k].index;
    }
    return 0;
}

static int parse(sl_gguf *g) {
    struct sl_cursor c = {.base = g->bytes, .pos = 0, .size = g->size};
    uint64_t n_tensors, n_kv;
    int rc = parse_header(g, &c, &n_tensors, &n_kv);
    if (!rc) rc = parse_metadata(g, &c, n_kv);
    if (!rc) rc = read_alignment(g);
    if (rc) return rc;

    g->tensors = sl_arena_alloc(&g->arena, (n_tensors + 1) * sizeof *g->tensors);
    g->tensor_names = sl_arena_alloc(&g->arena, (n_tensors + 1) * sizeof *g->tensor_names);
    if (!g->tensors || !g->tensor_names) return sl_fail(SL_ENOMEM, "out of memory for tensors");
    if ((rc = sl_name_index_init(&g->tensor_index, &g->arena, n_tensors, g->tensor_names))) return rc;
    for (uint64_t i = 0; i < n_tensors; i++) {
        struct sl_gguf_tensor *t = &g->tensors[i];
        memset(t, 0, sizeof *t);
        if ((rc = parse_tensor_info(g, &c, t))) return rc;
        g->tensor_names[i] = t->name;
        if (sl_name_index_insert(&g->tensor_index, (int64_t)i))
            return sl_fail(SL_EDUPLICATE, "duplicate tensor '%s'", t->name);
    }
    g->n_tensors = (int64_t)n_tensors;
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_offset = c.pos + pad;
    return check_tensor_data(g);
}

static int open_bytes(sl_gguf *g, sl_gguf **out) {
    sl_error_clear();
    int rc = parse(g);
    if (rc) {
        sl_gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

int sl_gguf_open_memory(const void *data, size_t size, sl_gguf **out) {
    if (!out || (!data && size)) return sl_fail(SL_EINVAL, "sl_gguf_open_memory: NULL argument");
    sl_gguf *g = calloc(1, sizeof *g);
    if (!g) return sl_fail(SL_ENOMEM, "out of memory");
    g->bytes = data;
    g->size = size;
    return open_bytes(g, out);
}

int sl_gguf_open(const char *path, sl_gguf **out) {
    if (!path || !out) return sl_fail(SL_EINVAL, "sl_gguf_open: NULL argument");
    sl_gguf *g = calloc(1, sizeof *g);
    if (!g) return sl_fail(SL_ENOMEM, "out of memory");
    int rc = sl_mapped_file_open(path, &g->file);
    if (rc) {
        free(g);
        return rc;
    }
    g->bytes = g->file.data;
    g->size = g->file.size;
    return open_bytes(g, out);
}

void sl_gguf_free(sl_gguf *g) {
    if (!g) return;
    sl_arena_free(&g->arena);
    sl_mapped_file_close(&g->file);
    free(g);
}

uint32_t sl_gguf_version(const sl_gguf *g) { return g->version; }
uint32_t sl_gguf_alignment(const sl_gguf *g) { return g->alignment; }
uint64_t sl_gguf_file_size(const sl_gguf *g) { return g->size; }
uint64_t sl_gguf_data_offset(const sl_gguf *g) { return g->data_offset; }
int64_t sl_gguf_kv_count(const sl_gguf *g) { return g->n_kv; }
int64_t sl_gguf_tensor_count(const sl_gguf *g) { return g->n_tensors; }

const char *sl_gguf_kv_key(const sl_gguf *g, int64_t i) {
    SL_ASSERT(i >= 0 && i < g->n_kv);
    return g->kv_keys[i];
}

const struct sl_gguf_value *sl_gguf_kv_value(const sl_gguf *g, int64_t i) {
    SL_ASSERT(i >= 0 && i < g->n_kv);
    return &g->kv_values[i];
}

const struct sl_gguf_value *sl_gguf_get(const sl_gguf *g, const char *key) {
    int64_t i = sl_name_index_find(&g->kv_index, key);
    return i < 0 ? NULL : &g->kv_values[i];
}

const struct sl_gguf_tensor *sl_gguf_tensor_at(const sl_gguf *g, int64_t i) {
    SL_ASSERT(i >= 0 && i < g->n_tensors);
    return &g->tensors[i];
}

const struct sl_gguf_tensor *sl_gguf_find_tensor(const sl_gguf *g, const char *name) {
    int64_t i = sl_name_index_find(&g->tensor_index, name);
    return i < 0 ? NULL : &g->tensors[i];
}
