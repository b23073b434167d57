/* The hash file: writer (atomic replace) and defensive reader. Byte layout in core/hash.h. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/hash.h"
#include "core/internal.h"
#include "core/le-bytes.h"
#include "storage/atomic-file.h"
#include "storage/crc32c.h"
#include "storage/mapped-file.h"

#define H_FINGERPRINT 16
#define H_N_LAYER 48
#define H_N_HEAD_Q 52
#define H_N_HEAD_KV 56
#define H_HEAD_DIM 60
#define H_BITS 64
#define H_KIND 68
#define H_FLAGS 72
#define H_NOTE_BYTES 76
#define H_SEED 80
#define H_FILE_BYTES 88
#define H_RESERVED 96
#define H_CRC 124
#define CONVERT_FLOATS 1024 /* floats converted per write: a 4 KiB staging buffer */

static float rdf32(const uint8_t *p) {
    uint32_t u = sl_rd32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static void wrf32(uint8_t *p, float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    sl_wr32(p, u);
}

/* Re-records this thread's error detail behind a prefix; sl_fail formats into the very buffer
 * sl_error_detail returns, so the detail is copied first. */
static int fail_prefixed(int err, const char *head, const char *sep) {
    char detail[512];
    snprintf(detail, sizeof detail, "%s", sl_error_detail());
    return sl_fail(err, "%s%s%s", head, sep, detail);
}

/* Where everything lies, from the shape alone. */
struct layout {
    int64_t layer_floats;
    uint64_t note_off, meta_crc_off, weights_off, layer_stride, file_bytes;
};

/* For a shape that passed sl_hash_check_shape: every product is far below 2^63 (hash.h's
 * limits give < 2^36 bytes per layer, < 2^48 in all); checked anyway, since it is cheap. */
static int compute_layout(const struct sl_hash_params *p, uint32_t flags, uint32_t note_bytes,
                          struct layout *l) {
    uint64_t lf, stride, weights, end;
    if (sl_mul_overflow_u64((uint64_t)sl_hash_shape_fn_floats(p, flags),
                            (uint64_t)p->n_head_kv + (uint64_t)p->n_head_q, &lf) ||
        sl_mul_overflow_u64(lf, 4, &stride) || sl_add_overflow_u64(stride, 4, &stride) ||
        sl_mul_overflow_u64(stride, (uint64_t)p->n_layer, &weights))
        return sl_fail(SL_EFORMAT, "hash file shape overflows");
    l->layer_floats = (int64_t)lf;
    l->layer_stride = stride;
    l->note_off = SL_HASH_HEADER_BYTES + (uint64_t)p->n_layer * SL_HASH_LAYER_RECORD_BYTES;
    l->meta_crc_off = l->note_off + note_bytes;
    l->weights_off = l->meta_crc_off + 4;
    if (sl_add_overflow_u64(l->weights_off, weights, &end) || end > INT64_MAX)
        return sl_fail(SL_EFORMAT, "hash file shape overflows");
    l->file_bytes = end;
    return 0;
}

/* ---- writing ----------------------------------------------------------------------------- */

/* Bytes go to a memory buffer or a file descriptor. */
struct sink {
    uint8_t *buf; /* memory: sized to the whole file up front */
    size_t len;
    struct sl_atomic_file *file; /* NULL when writing to memory */
};

static int put(struct sink *s, const void *p, size_t n) {
    if (!s->file) {
        memcpy(s->buf + s->len, p, n);
        s->len += n;
        return 0;
    }
    int rc = sl_atomic_file_write(s->file, p, n);
    if (!rc) s->len += n;
    return rc;
}

static int write_all(const sl_hash *h, const uint8_t fp[32], struct sink *s) {
    const struct sl_hash_params *p = sl_hash_get_params(h);
    const char *note = sl_hash_note(h);
    uint32_t note_bytes = (uint32_t)strlen(note);
    struct layout l;
    int rc = compute_layout(p, sl_hash_flags(h), note_bytes, &l);
    if (rc) return rc;

    uint8_t hd[SL_HASH_HEADER_BYTES] = {0};
    memcpy(hd, SL_HASH_MAGIC, 8);
    sl_wr32(hd + 8, SL_HASH_VERSION);
    sl_wr32(hd + 12, SL_HASH_HEADER_BYTES);
    memcpy(hd + H_FINGERPRINT, fp, 32);
    sl_wr32(hd + H_N_LAYER, (uint32_t)p->n_layer);
    sl_wr32(hd + H_N_HEAD_Q, (uint32_t)p->n_head_q);
    sl_wr32(hd + H_N_HEAD_KV, (uint32_t)p->n_head_kv);
    sl_wr32(hd + H_HEAD_DIM, (uint32_t)p->head_dim);
    sl_wr32(hd + H_BITS, (uint32_t)p->bits);
    sl_wr32(hd + H_KIND, (uint32_t)p->kind);
    sl_wr32(hd + H_FLAGS, sl_hash_flags(h));
    sl_wr32(hd + H_NOTE_BYTES, note_bytes);
    sl_wr64(hd + H_SEED, p->seed);
    sl_wr64(hd + H_FILE_BYTES, l.file_bytes);
    sl_wr32(hd + H_CRC, sl_crc32c(0, hd, H_CRC));
    if ((rc = put(s, hd, sizeof hd))) return rc;

    uint8_t rec[SL_HASH_LAYER_RECORD_BYTES], crc_bytes[4];
    uint32_t crc = 0;
    for (int32_t il = 0; il < p->n_layer; il++) {
        struct sl_hash_layer_info info;
        sl_hash_layer_info_get(h, il, &info);
        memset(rec, 0, sizeof rec);
        sl_wr32(rec, (uint32_t)info.status);
        sl_wr64(rec + 8, (uint64_t)info.steps);
        wrf32(rec + 16, info.loss);
        wrf32(rec + 20, info.recall);
        wrf32(rec + 24, info.budget);
        crc = sl_crc32c(crc, rec, sizeof rec);
        if ((rc = put(s, rec, sizeof rec))) return rc;
    }
    crc = sl_crc32c(crc, note, note_bytes);
    if ((rc = put(s, note, note_bytes))) return rc;
    sl_wr32(crc_bytes, crc);
    if ((rc = put(s, crc_bytes, 4))) return rc;

    uint8_t buf[4 * CONVERT_FLOATS];
    for (int32_t il = 0; il < p->n_layer; il++) {
        int64_t n;
        /* read only: the non-const accessor is the one that hands out the flat layer */
        const float *w = sl_hash_layer_weights((sl_hash *)h, il, &n);
        crc = 0;
        for (int64_t i = 0; i < n; i += CONVERT_FLOATS) {
            int64_t m = n - i < CONVERT_FLOATS ? n - i : CONVERT_FLOATS;
            for (int64_t k = 0; k < m; k++) {
                if (!isfinite(w[i + k]))
                    return sl_fail(SL_EINVAL, "hash layer %d weight %" PRId64 " is not finite; "
                                   "not saved", il, i + k);
                wrf32(buf + 4 * k, w[i + k]);
            }
            crc = sl_crc32c(crc, buf, (size_t)m * 4);
            if ((rc = put(s, buf, (size_t)m * 4))) return rc;
        }
        sl_wr32(crc_bytes, crc);
        if ((rc = put(s, crc_bytes, 4))) return rc;
    }
    SL_ASSERT(s->len == l.file_bytes);
    return 0;
}

int sl_hash_serialize(const sl_hash *h, const uint8_t fingerprint[32], uint8_t **out, size_t *n_out) {
    if (!h || !out || !n_out) return sl_fail(SL_EINVAL, "sl_hash_serialize: NULL argument");
    uint8_t own[32];
    sl_hash_fingerprint(h, own);
    struct layout l;
    int rc = compute_layout(sl_hash_get_params(h), sl_hash_flags(h),
                            (uint32_t)strlen(sl_hash_note(h)), &l);
    if (rc) return rc;
    if (l.file_bytes > SIZE_MAX) return sl_fail(SL_ENOMEM, "hash file too large for memory");
    struct sink s = {.buf = malloc((size_t)l.file_bytes)};
    if (!s.buf)
        return sl_fail(SL_ENOMEM, "out of memory for a %" PRIu64 "-byte hash file", l.file_bytes);
    rc = write_all(h, fingerprint ? fingerprint : own, &s);
    if (rc) {
        free(s.buf);
        return rc;
    }
    *out = s.buf;
    *n_out = s.len;
    return 0;
}

int sl_hash_save(const sl_hash *h, const uint8_t fingerprint[32], const char *path) {
    if (!h || !path) return sl_fail(SL_EINVAL, "sl_hash_save: NULL argument");
    uint8_t own[32];
    sl_hash_fingerprint(h, own);
    struct sl_atomic_file f;
    int rc = sl_atomic_file_open(&f, path);
    if (rc) return rc;
    struct sink s = {.file = &f};
    if ((rc = write_all(h, fingerprint ? fingerprint : own, &s))) {
        sl_atomic_file_abort(&f);
        return rc;
    }
    return sl_atomic_file_commit(&f);
}

/* ---- reading ----------------------------------------------------------------------------- */

static int parse_header(const uint8_t *b, size_t n, const uint8_t *expect, struct sl_hash_params *p,
                        uint32_t *flags, uint32_t *note_bytes, struct layout *l) {
    if (memcmp(b, SL_HASH_MAGIC, n < 8 ? n : 8) != 0)
        return sl_fail(SL_EBADMAGIC, "not a Spotlight hash file (no %s magic)", SL_HASH_MAGIC);
    if (n < SL_HASH_HEADER_BYTES)
        return sl_fail(SL_ETRUNCATED, "hash file of %zu bytes ends inside its %u-byte header", n,
                       SL_HASH_HEADER_BYTES);
    /* Version before checksum: a newer file should say "newer", not "corrupt". */
    uint32_t version = sl_rd32(b + 8);
    if (version != SL_HASH_VERSION)
        return sl_fail(SL_EVERSION, "hash file version %" PRIu32 " (this build reads %u)", version,
                       SL_HASH_VERSION);
    if (sl_rd32(b + 12) != SL_HASH_HEADER_BYTES)
        return sl_fail(SL_EFORMAT, "hash file header size %" PRIu32 " (expected %u)", sl_rd32(b + 12),
                       SL_HASH_HEADER_BYTES);
    if (sl_rd32(b + H_CRC) != sl_crc32c(0, b, H_CRC))
        return sl_fail(SL_ECORRUPT, "hash file header checksum mismatch");
    for (int i = H_RESERVED; i < H_CRC; i++)
        if (b[i]) return sl_fail(SL_EFORMAT, "hash file header: reserved byte %d is set", i);

    /* Fields are unsigned on disk; anything above INT32_MAX fails the range checks as a
     * negative value. */
    *p = (struct sl_hash_params){
        .n_layer = (int32_t)sl_rd32(b + H_N_LAYER),
        .n_head_q = (int32_t)sl_rd32(b + H_N_HEAD_Q),
        .n_head_kv = (int32_t)sl_rd32(b + H_N_HEAD_KV),
        .head_dim = (int32_t)sl_rd32(b + H_HEAD_DIM),
        .bits = (int32_t)sl_rd32(b + H_BITS),
        .kind = (enum sl_hash_kind)sl_rd32(b + H_KIND),
        .seed = sl_rd64(b + H_SEED),
    };
    *flags = sl_rd32(b + H_FLAGS);
    *note_bytes = sl_rd32(b + H_NOTE_BYTES);
    if (sl_hash_check_shape(p, *flags)) return fail_prefixed(SL_EFORMAT, "hash file ", "");
    if (*note_bytes > SL_HASH_MAX_NOTE)
        return sl_fail(SL_EFORMAT, "hash file note of %" PRIu32 " bytes (at most %u)", *note_bytes,
                       SL_HASH_MAX_NOTE);
    int rc = compute_layout(p, *flags, *note_bytes, l);
    if (rc) return rc;
    uint64_t declared = sl_rd64(b + H_FILE_BYTES);
    if (declared != l->file_bytes)
        return sl_fail(SL_EFORMAT, "hash file declares %" PRIu64 " bytes; its shape makes %" PRIu64,
                       declared, l->file_bytes);
    if ((uint64_t)n < l->file_bytes)
        return sl_fail(SL_ETRUNCATED, "hash file has %zu of its %" PRIu64 " bytes", n, l->file_bytes);
    if ((uint64_t)n > l->file_bytes)
        return sl_fail(SL_EFORMAT, "hash file has %" PRIu64 " bytes after its end",
                       (uint64_t)n - l->file_bytes);
    if (expect && memcmp(b + H_FINGERPRINT, expect, 32) != 0)
        return sl_fail(SL_EMISMATCH, "hash file was made for a different model (fingerprint "
                       "%02x%02x%02x%02x..., expected %02x%02x%02x%02x...)", b[16], b[17], b[18],
                       b[19], expect[0], expect[1], expect[2], expect[3]);
    return 0;
}

static int parse_meta(const uint8_t *b, const struct layout *l, int32_t n_layer, sl_hash *h) {
    uint64_t meta_bytes = l->meta_crc_off - SL_HASH_HEADER_BYTES;
    if (sl_rd32(b + l->meta_crc_off) != sl_crc32c(0, b + SL_HASH_HEADER_BYTES, (size_t)meta_bytes))
        return sl_fail(SL_ECORRUPT, "hash file: layer records or note fail their checksum");
    for (int32_t il = 0; il < n_layer; il++) {
        const uint8_t *r = b + SL_HASH_HEADER_BYTES + (uint64_t)il * SL_HASH_LAYER_RECORD_BYTES;
        uint32_t status = sl_rd32(r);
        uint64_t steps = sl_rd64(r + 8);
        if (status > SL_HASH_TRAINED || sl_rd32(r + 4) || sl_rd32(r + 28) || steps > INT64_MAX)
            return sl_fail(SL_EFORMAT, "hash file: layer %d record is invalid (status %" PRIu32 ")",
                           il, status);
        struct sl_hash_layer_info info = {(enum sl_hash_status)status, (int64_t)steps,
                                          rdf32(r + 16), rdf32(r + 20), rdf32(r + 24)};
        sl_hash_layer_info_set(h, il, &info);
    }
    size_t note_bytes = (size_t)(l->meta_crc_off - l->note_off);
    if (!note_bytes) return 0;
    if (memchr(b + l->note_off, 0, note_bytes))
        return sl_fail(SL_EFORMAT, "hash file: the note contains a NUL byte");
    char *note = malloc(note_bytes + 1);
    if (!note) return sl_fail(SL_ENOMEM, "out of memory");
    memcpy(note, b + l->note_off, note_bytes);
    note[note_bytes] = '\0';
    int rc = sl_hash_set_note(h, note);
    free(note);
    return rc;
}

static int parse_weights(const uint8_t *b, const struct layout *l, int32_t n_layer, sl_hash *h) {
    for (int32_t il = 0; il < n_layer; il++) {
        const uint8_t *src = b + l->weights_off + (uint64_t)il * l->layer_stride;
        size_t bytes = (size_t)l->layer_floats * 4;
        if (sl_rd32(src + bytes) != sl_crc32c(0, src, bytes))
            return sl_fail(SL_ECORRUPT, "hash file: layer %d weights fail their checksum", il);
        int64_t n;
        float *w = sl_hash_layer_weights(h, il, &n);
        for (int64_t i = 0; i < n; i++) {
            w[i] = rdf32(src + 4 * i);
            if (!isfinite(w[i]))
                return sl_fail(SL_EFORMAT, "hash file: layer %d weight %" PRId64 " is not finite",
                               il, i);
        }
    }
    return 0;
}

int sl_hash_load_bytes(const void *data, size_t n, const uint8_t expect_fingerprint[32],
                       sl_hash **out) {
    if (!out || (!data && n)) return sl_fail(SL_EINVAL, "sl_hash_load_bytes: NULL argument");
    const uint8_t *b = n ? data : (const uint8_t *)"";
    struct sl_hash_params p;
    uint32_t flags = 0, note_bytes = 0;
    struct layout l;
    int rc = parse_header(b, n, expect_fingerprint, &p, &flags, &note_bytes, &l);
    if (rc) return rc;
    /* Everything the allocation depends on now lies inside the n bytes we were given. */
    sl_hash *h;
    if ((rc = sl_hash_alloc(&p, flags, &h))) return rc;
    sl_hash_set_fingerprint(h, b + H_FINGERPRINT);
    if (!(rc = parse_meta(b, &l, p.n_layer, h))) rc = parse_weights(b, &l, p.n_layer, h);
    if (rc) {
        sl_hash_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

int sl_hash_load(const char *path, const uint8_t expect_fingerprint[32], sl_hash **out) {
    if (!path || !out) return sl_fail(SL_EINVAL, "sl_hash_load: NULL argument");
    struct sl_mapped_file f;
    int rc = sl_mapped_file_open(path, &f);
    if (rc) return rc;
    rc = sl_hash_load_bytes(f.data, f.size, expect_fingerprint, out);
    sl_mapped_file_close(&f);
    return rc ? fail_prefixed(rc, path, ": ") : 0;
}
