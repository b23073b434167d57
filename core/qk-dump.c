/* Post-RoPE q/k dumps per layer (format in qk-dump.h): an appending writer fed by the
 * context's q/k tap, and a checking reader over a mapped file. */
#include "core/qk-dump.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/le-bytes.h"
#include "spotlight/quant.h"
#include "storage/crc32c.h"

#define QK_MAGIC "SLQKDUMP"
#define QK_VERSION 1u
#define QK_HEADER 4096

struct qk_layer_out {
    FILE *f;
    uint32_t crc;
    int64_t rows; /* rows of the current sequence */
};

struct sl_qk_writer {
    struct sl_qk_shape shape;
    uint8_t fingerprint[32];
    char *dir;
    struct qk_layer_out *out; /* (n_layer) */
    uint16_t *row;            /* one row of f16 */
    int32_t n_seq;
    bool finished;
};


void sl_qk_dump_path(const char *dir, int32_t layer, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/layer-%02d.qk", dir, layer);
}

static int64_t row_elems(const struct sl_qk_shape *s) {
    return (int64_t)(s->n_head + s->n_head_kv) * s->head_dim;
}

int sl_qk_writer_open(const char *dir, const struct sl_qk_shape *shape,
                      const uint8_t fingerprint[32], struct sl_qk_writer **out) {
    *out = NULL;
    if (shape->n_layer < 1 || shape->n_head < 1 || shape->n_head_kv < 1 || shape->head_dim < 1 ||
        shape->seq_len < 1)
        return sl_fail(SL_EINVAL, "q/k dump: bad shape");
    struct sl_qk_writer *w = calloc(1, sizeof *w);
    if (!w) return sl_fail(SL_ENOMEM, "out of memory");
    w->shape = *shape;
    if (fingerprint) memcpy(w->fingerprint, fingerprint, 32);
    w->dir = strdup(dir);
    w->out = calloc((size_t)shape->n_layer, sizeof *w->out);
    w->row = malloc(sizeof *w->row * (size_t)row_elems(shape));
    if (!w->dir || !w->out || !w->row) {
        sl_qk_writer_free(w);
        return sl_fail(SL_ENOMEM, "out of memory");
    }
    static const uint8_t zero[QK_HEADER];
    for (int32_t l = 0; l < shape->n_layer; l++) {
        char path[4096];
        sl_qk_dump_path(dir, l, path, sizeof path - 16);
        strcat(path, ".partial");
        /* a stale .partial (a killed run) goes; O_EXCL | O_NOFOLLOW: nothing planted under the
         * name since is written through */
        unlink(path);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        w->out[l].f = fd >= 0 ? fdopen(fd, "wb") : NULL;
        if (fd >= 0 && !w->out[l].f) close(fd);
        /* the header is written last; reserve its place */
        if (!w->out[l].f || fwrite(zero, 1, QK_HEADER, w->out[l].f) != QK_HEADER) {
            int err = -errno;
            sl_qk_writer_free(w);
            return sl_fail(err ? err : SL_EIO, "cannot write %s", path);
        }
    }
    *out = w;
    return 0;
}

int sl_qk_writer_tap(int32_t layer, int64_t pos0, int64_t n, const float *q, const float *k,
                     void *user) {
    struct sl_qk_writer *w = user;
    const struct sl_qk_shape *s = &w->shape;
    if (layer < 0 || layer >= s->n_layer) return sl_fail(SL_EINVAL, "q/k dump: layer %d", layer);
    struct qk_layer_out *o = &w->out[layer];
    if (pos0 != o->rows || pos0 + n > s->seq_len)
        return sl_fail(SL_EINVAL, "q/k dump: layer %d got positions %" PRId64 "..%" PRId64
                       " after %" PRId64 " of %d", layer, pos0, pos0 + n, o->rows, s->seq_len);
    const int64_t nq = (int64_t)s->n_head * s->head_dim, nk = (int64_t)s->n_head_kv * s->head_dim;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < nq; j++) w->row[j] = sl_f32_to_f16(q[i * nq + j]);
        for (int64_t j = 0; j < nk; j++) w->row[nq + j] = sl_f32_to_f16(k[i * nk + j]);
        size_t bytes = sizeof *w->row * (size_t)(nq + nk);
        if (fwrite(w->row, 1, bytes, o->f) != bytes)
            return sl_fail(-errno ? -errno : SL_EIO, "q/k dump: writing layer %d failed", layer);
        o->crc = sl_crc32c(o->crc, w->row, bytes);
    }
    o->rows += n;
    return 0;
}

int sl_qk_writer_end_seq(struct sl_qk_writer *w) {
    for (int32_t l = 0; l < w->shape.n_layer; l++) {
        if (w->out[l].rows != w->shape.seq_len)
            return sl_fail(SL_EINVAL, "q/k dump: layer %d has %" PRId64 " of %d positions", l,
                           w->out[l].rows, w->shape.seq_len);
        w->out[l].rows = 0;
    }
    w->n_seq++;
    return 0;
}

int sl_qk_writer_finish(struct sl_qk_writer *w) {
    if (w->n_seq < 1) return sl_fail(SL_EINVAL, "q/k dump: no complete sequence");
    const struct sl_qk_shape *s = &w->shape;
    for (int32_t l = 0; l < s->n_layer; l++) {
        uint8_t h[QK_HEADER] = {0};
        memcpy(h, QK_MAGIC, 8);
        sl_wr32(h + 8, QK_VERSION);
        sl_wr32(h + 12, QK_HEADER);
        sl_wr32(h + 16, (uint32_t)l);
        sl_wr32(h + 20, (uint32_t)s->n_head);
        sl_wr32(h + 24, (uint32_t)s->n_head_kv);
        sl_wr32(h + 28, (uint32_t)s->head_dim);
        sl_wr32(h + 32, (uint32_t)s->seq_len);
        sl_wr32(h + 36, (uint32_t)w->n_seq);
        memcpy(h + 40, w->fingerprint, 32);
        sl_wr32(h + 72, w->out[l].crc);
        sl_wr32(h + 4092, sl_crc32c(0, h, 4092));
        FILE *f = w->out[l].f;
        if (fseek(f, 0, SEEK_SET) != 0 || fwrite(h, 1, QK_HEADER, f) != QK_HEADER ||
            fflush(f) != 0 || fsync(fileno(f)) != 0)
            return sl_fail(-errno ? -errno : SL_EIO, "q/k dump: finishing layer %d failed", l);
    }
    for (int32_t l = 0; l < s->n_layer; l++) {
        char path[4096], partial[4112];
        sl_qk_dump_path(w->dir, l, path, sizeof path);
        snprintf(partial, sizeof partial, "%s.partial", path);
        fclose(w->out[l].f);
        w->out[l].f = NULL;
        if (rename(partial, path) != 0)
            return sl_fail(-errno, "q/k dump: cannot rename %s", partial);
    }
    w->finished = true;
    return 0;
}

void sl_qk_writer_free(struct sl_qk_writer *w) {
    if (!w) return;
    for (int32_t l = 0; w->out && l < w->shape.n_layer; l++) {
        if (w->out[l].f) fclose(w->out[l].f);
        if (!w->finished && w->dir) {
            char path[4096], partial[4112];
            sl_qk_dump_path(w->dir, l, path, sizeof path);
            snprintf(partial, sizeof partial, "%s.partial", path);
            unlink(partial);
        }
    }
    free(w->out);
    free(w->row);
    free(w->dir);
    free(w);
}

int sl_qk_dump_open(const char *path, struct sl_qk_dump *d) {
    memset(d, 0, sizeof *d);
    int err = sl_mapped_file_open(path, &d->file);
    if (err) return sl_fail(err, "cannot open q/k dump %s", path);
    const uint8_t *h = d->file.data;
    size_t size = d->file.size;
    if (size < QK_HEADER || memcmp(h, QK_MAGIC, 8) != 0)
        err = sl_fail(SL_EBADMAGIC, "%s is not a q/k dump", path);
    else if (sl_rd32(h + 4092) != sl_crc32c(0, h, 4092))
        err = sl_fail(SL_ECORRUPT, "%s: header checksum mismatch", path);
    else if (sl_rd32(h + 8) != QK_VERSION)
        err = sl_fail(SL_EVERSION, "%s: q/k dump version %u", path, sl_rd32(h + 8));
    if (err) {
        sl_qk_dump_close(d);
        return err;
    }
    d->layer = (int32_t)sl_rd32(h + 16);
    d->n_head = (int32_t)sl_rd32(h + 20);
    d->n_head_kv = (int32_t)sl_rd32(h + 24);
    d->head_dim = (int32_t)sl_rd32(h + 28);
    d->seq_len = (int32_t)sl_rd32(h + 32);
    d->n_seq = (int32_t)sl_rd32(h + 36);
    memcpy(d->fingerprint, h + 40, 32);
    uint64_t rows, bytes;
    if (d->n_head < 1 || d->n_head > 4096 || d->n_head_kv < 1 || d->n_head_kv > 4096 ||
        d->head_dim < 1 || d->head_dim > 4096 || d->seq_len < 1 || d->n_seq < 1 ||
        sl_rd32(h + 12) != QK_HEADER ||
        sl_mul_overflow_u64((uint64_t)d->n_seq, (uint64_t)d->seq_len, &rows) ||
        sl_mul_overflow_u64(rows, (uint64_t)(d->n_head + d->n_head_kv) * (uint64_t)d->head_dim * 2,
                            &bytes) ||
        bytes != size - QK_HEADER) {
        sl_qk_dump_close(d);
        return sl_fail(SL_EFORMAT, "%s: shape does not match the file size", path);
    }
    if (sl_crc32c(0, h + QK_HEADER, (size_t)bytes) != sl_rd32(h + 72)) {
        sl_qk_dump_close(d);
        return sl_fail(SL_ECORRUPT, "%s: data checksum mismatch", path);
    }
    d->rows = (const uint16_t *)(h + QK_HEADER);
    return 0;
}

void sl_qk_dump_close(struct sl_qk_dump *d) {
    sl_mapped_file_close(&d->file);
    memset(d, 0, sizeof *d);
}

void sl_qk_dump_head_f32(const struct sl_qk_dump *d, int32_t s, bool q, int32_t h, float *out) {
    const int64_t row = (int64_t)(d->n_head + d->n_head_kv) * d->head_dim;
    const int64_t off = (q ? h : d->n_head + h) * (int64_t)d->head_dim;
    const uint16_t *base = d->rows + (int64_t)s * d->seq_len * row + off;
    for (int64_t p = 0; p < d->seq_len; p++)
        for (int32_t j = 0; j < d->head_dim; j++)
            out[p * d->head_dim + j] = sl_f16_to_f32(base[p * row + j]);
}
