/* Matrix products of weights with activations (see matmul.h for the two paths). */
#include "cpu/matmul.h"

#include <cblas.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "core/internal.h"
#include "cpu/vec-dot.h"
#include "spotlight/quant.h"

#define SGEMM_TILE_MIN 64  /* W rows per sgemm call: enough to amortize packing x */
#define SGEMM_TILE_MAX 256

/* Several weights over the same activations in one parallel section: rows of all weights
 * are numbered consecutively and split across threads. */
#define MAX_MULTI 4

struct dot_task {
    int nw;
    sl_vec_dot_fn dot[MAX_MULTI];
    const uint8_t *w[MAX_MULTI], *xq[MAX_MULTI];
    size_t w_row[MAX_MULTI], xq_row[MAX_MULTI];
    int64_t m[MAX_MULTI], row0[MAX_MULTI + 1];
    float *y[MAX_MULTI];
    int64_t n, k;
};

static void dot_rows(void *arg, int ith, int nth) {
    const struct dot_task *t = arg;
    int64_t r0, r1;
    sl_split_range(t->row0[t->nw], ith, nth, &r0, &r1);
    for (int wi = 0; wi < t->nw; wi++) {
        int64_t a = r0 > t->row0[wi] ? r0 : t->row0[wi], b = r1 < t->row0[wi + 1] ? r1 : t->row0[wi + 1];
        for (int64_t g = a; g < b; g++) {
            int64_t r = g - t->row0[wi];
            const uint8_t *row = t->w[wi] + (size_t)r * t->w_row[wi];
            for (int64_t i = 0; i < t->n; i++)
                t->y[wi][i * t->m[wi] + r] = t->dot[wi](row, t->xq[wi] + (size_t)i * t->xq_row[wi], t->k);
        }
    }
}

static int matmul_dot(sl_threadpool *pool, struct sl_matmul_scratch *s, int nw,
                      const struct sl_gguf_tensor *const *w, const float *x, int64_t n, float *const *y) {
    int64_t k = w[0]->ne[0];
    struct dot_task t = {.nw = nw, .n = n, .k = k};
    size_t off[3] = {0}, total = 0; /* one quantized copy of x per activation format */
    bool need[3] = {false};
    enum sl_act_format act[MAX_MULTI];
    for (int i = 0; i < nw; i++) {
        struct sl_vec_dot vd = sl_vec_dot_for(w[i]->type);
        if (!vd.dot) return sl_fail(SL_EUNSUPPORTED, "no dot kernel for %s weights", sl_type_name(w[i]->type));
        act[i] = vd.act;
        need[vd.act] = true;
        t.dot[i] = vd.dot;
        t.xq_row[i] = sl_act_row_bytes(vd.act, k);
    }
    for (int f = 0; f < 3; f++)
        if (need[f]) {
            off[f] = total;
            total += (sl_act_row_bytes((enum sl_act_format)f, k) * (size_t)n + 63) & ~(size_t)63;
        }
    uint8_t *xq = sl_scratch_get(&s->act, total);
    if (!xq) return SL_ENOMEM;
    for (int f = 0; f < 3; f++)
        if (need[f])
            for (int64_t i = 0; i < n; i++)
                sl_act_quantize((enum sl_act_format)f, x + i * k,
                                xq + off[f] + (size_t)i * sl_act_row_bytes((enum sl_act_format)f, k), k);
    for (int i = 0; i < nw; i++) {
        t.w[i] = w[i]->data;
        t.xq[i] = xq + off[act[i]];
        t.w_row[i] = (size_t)sl_type_row_bytes(w[i]->type, k);
        t.m[i] = w[i]->ne[1];
        t.y[i] = y[i];
        t.row0[i + 1] = t.row0[i] + w[i]->ne[1];
    }
    sl_threadpool_run(pool, dot_rows, &t);
    return 0;
}

/* x rounded through the 8-bit activation format the dot path uses, so both paths compute the
 * same products (and match llama.cpp, which quantizes activations for every batch size). */
static const float *fake_quantize(struct sl_matmul_scratch *s, enum sl_act_format f, const float *x,
                                  int64_t n, int64_t k) {
    if (f == SL_ACT_F32) return x;
    size_t row = sl_act_row_bytes(f, k);
    uint8_t *q = sl_scratch_get(&s->act, row);
    float *xf = sl_scratch_get(&s->xf32, (size_t)n * (size_t)k * sizeof(float));
    if (!q || !xf) return NULL;
    for (int64_t i = 0; i < n; i++) {
        sl_act_quantize(f, x + i * k, q, k);
        sl_act_dequantize(f, q, xf + i * k, k);
    }
    return xf;
}

/* The sgemm path cuts W into tiles of rows whose size follows W's shape alone; each tile is
 * dequantized into the thread's own buffer (it stays in L2) and multiplied by one
 * single-threaded sgemm call. Tiles go to whichever thread is free, and a tile's result does
 * not depend on who computes it, so y is bitwise the same for any thread count (OpenBLAS's
 * own threading splits the work by the thread count, and with it the rounding). */
static int64_t sgemm_tile_rows(int64_t m) {
    int64_t t = (m / 8 + 15) / 16 * 16; /* about 8 tiles, whole multiples of 16 rows */
    return t < SGEMM_TILE_MIN ? SGEMM_TILE_MIN : t > SGEMM_TILE_MAX ? SGEMM_TILE_MAX : t;
}

struct sgemm_task {
    const struct sl_gguf_tensor *w;
    size_t w_row;
    const float *x;
    float *y, *wf; /* wf: per thread, tile * k floats */
    int64_t n, k, m, tile, n_tiles;
    atomic_int_fast64_t next;
};

static void sgemm_tiles(void *arg, int ith, int nth) {
    (void)nth;
    struct sgemm_task *t = arg;
    float *wf = t->wf + (size_t)ith * (size_t)(t->tile * t->k);
    for (int64_t i; (i = atomic_fetch_add(&t->next, 1)) < t->n_tiles;) {
        int64_t r0 = i * t->tile, rows = t->m - r0 < t->tile ? t->m - r0 : t->tile;
        const float *wp = wf;
        if (t->w->type == SL_TYPE_F32) wp = (const float *)t->w->data + r0 * t->k;
        else sl_dequant_f32(t->w->type, (const uint8_t *)t->w->data + (size_t)r0 * t->w_row, wf, rows * t->k);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t->n, (int)rows, (int)t->k, 1.0f, t->x,
                    (int)t->k, wp, (int)t->k, 0.0f, t->y + r0, (int)t->m);
    }
}

static int matmul_sgemm(sl_threadpool *pool, struct sl_matmul_scratch *s, const struct sl_gguf_tensor *w,
                        const float *x_in, int64_t n, float *y) {
    int64_t k = w->ne[0], m = w->ne[1], tile = sgemm_tile_rows(m);
    const float *x = fake_quantize(s, sl_vec_dot_for(w->type).act, x_in, n, k);
    if (!x) return SL_ENOMEM;
    int nth = sl_threadpool_size(pool);
    float *wf = sl_scratch_get(&s->wf32, (size_t)nth * (size_t)(tile * k) * sizeof(float));
    if (!wf) return SL_ENOMEM;
    struct sgemm_task t = {.w = w, .w_row = (size_t)sl_type_row_bytes(w->type, k), .x = x, .y = y,
                           .wf = wf, .n = n, .k = k, .m = m, .tile = tile,
                           .n_tiles = (m + tile - 1) / tile};
    atomic_init(&t.next, 0);
    sl_threadpool_run(pool, sgemm_tiles, &t);
    return 0;
}

int sl_cpu_matmul_n(sl_threadpool *pool, struct sl_matmul_scratch *s, int nw,
                    const struct sl_gguf_tensor *const *w, const float *x, int64_t n, float *const *y) {
    if (nw < 1 || nw > MAX_MULTI) return sl_fail(SL_EINVAL, "%d weights in one matmul", nw);
    for (int i = 1; i < nw; i++)
        if (w[i]->ne[0] != w[0]->ne[0]) return sl_fail(SL_ESHAPE, "weights of one matmul differ in width");
    if (n <= 0) return 0;
    if (n <= SL_MATMUL_DOT_MAX_ROWS) return matmul_dot(pool, s, nw, w, x, n, y);
    for (int i = 0; i < nw; i++) {
        int rc = matmul_sgemm(pool, s, w[i], x, n, y[i]);
        if (rc) return rc;
    }
    return 0;
}

int sl_cpu_matmul(sl_threadpool *pool, struct sl_matmul_scratch *s, const struct sl_gguf_tensor *w,
                  const float *x, int64_t n, float *y) {
    return sl_cpu_matmul_n(pool, s, 1, &w, x, n, &y);
}
