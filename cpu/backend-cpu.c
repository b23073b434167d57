/* The CPU backend: the backend seam's operations over host memory, run on one thread pool. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/internal.h"
#include "cpu/attention.h"
#include "cpu/f16-row.h"
#include "cpu/matmul.h"
#include "cpu/threadpool.h"
#include "spotlight/quant.h"

struct cpu_backend {
    struct sl_backend be;
    sl_threadpool *pool;
    struct sl_matmul_scratch mm;
    struct sl_attn_scratch attn;
};

static struct cpu_backend *cpu(struct sl_backend *be) { return be->impl; }

static int op_matmul(struct sl_backend *be, const struct sl_gguf_tensor *w, const float *x, int64_t n, float *y) {
    return sl_cpu_matmul(cpu(be)->pool, &cpu(be)->mm, w, x, n, y);
}

static int op_matmul_n(struct sl_backend *be, int nw, const struct sl_gguf_tensor *const *w, const float *x,
                       int64_t n, float *const *y) {
    return sl_cpu_matmul_n(cpu(be)->pool, &cpu(be)->mm, nw, w, x, n, y);
}

static int op_get_rows(struct sl_backend *be, const struct sl_gguf_tensor *w, const int32_t *ids, int64_t n, float *x) {
    int64_t k = w->ne[0];
    size_t row = (size_t)sl_type_row_bytes(w->type, k);
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= w->ne[1]) return sl_fail(SL_EINVAL, "token id %d out of range", ids[i]);
        int rc = sl_dequant_f32(w->type, (const uint8_t *)w->data + (size_t)ids[i] * row, x + i * k, k);
        if (rc) return rc;
    }
    return 0;
}

static int op_rmsnorm(struct sl_backend *be, const float *x, const struct sl_gguf_tensor *wt, int64_t n, int64_t k,
                      float eps, float *y) {
    SL_ASSERT(wt->type == SL_TYPE_F32 && wt->ne[0] == k); /* the model loader checks norms */
    const float *w = wt->data;
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * k;
        double ss = 0; /* as ggml: the sum of squares in double */
        for (int64_t j = 0; j < k; j++) ss += (double)xi[j] * xi[j];
        float scale = 1.0f / sqrtf((float)(ss / (double)k) + eps);
        for (int64_t j = 0; j < k; j++) y[i * k + j] = xi[j] * scale * w[j];
    }
    return 0;
}

/* theta for dimension pair i = pos * freq_scale * base^(-2i/n_rot), built by repeated
 * multiplication as ggml does, so the angles (and hence logits) agree to the last bits. */
static int op_rope(struct sl_backend *be, float *x, int64_t n, int32_t n_head, const struct sl_model_config *c, int64_t pos0) {
    const int hd = c->head_dim, nr = c->n_rot;
    /* sl_context_create refuses the other scaling types, so only these two reach here. */
    SL_ASSERT(c->rope_scaling == SL_ROPE_SCALING_NONE || c->rope_scaling == SL_ROPE_SCALING_LINEAR);
    const float freq_scale = c->rope_scaling == SL_ROPE_SCALING_LINEAR ? 1.0f / c->rope_scale : 1.0f;
    const float theta_scale = powf(c->rope_theta, -2.0f / (float)nr);
    float cs[2 * 512];
    if (nr > 1024) return sl_fail(SL_EUNSUPPORTED, "rope dimension %d too large", nr);
    for (int64_t t = 0; t < n; t++) {
        float theta = (float)(pos0 + t) * freq_scale;
        for (int i = 0; i < nr / 2; i++) {
            cs[2 * i] = cosf(theta);
            cs[2 * i + 1] = sinf(theta);
            theta *= theta_scale;
        }
        for (int32_t h = 0; h < n_head; h++) {
            float *v = x + (t * n_head + h) * hd;
            for (int i = 0; i < nr / 2; i++) {
                int a = c->rope_type == SL_ROPE_NEOX ? i : 2 * i;
                int b = c->rope_type == SL_ROPE_NEOX ? i + nr / 2 : 2 * i + 1;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
                v[b] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
            }
        }
    }
    return 0;
}

static int op_add(struct sl_backend *be, float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
    return 0;
}

static int op_add_rows(struct sl_backend *be, float *x, const struct sl_gguf_tensor *bt, int64_t n, int64_t k) {
    SL_ASSERT(bt->type == SL_TYPE_F32 && bt->ne[0] == k); /* and biases */
    const float *b = bt->data;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < k; j++) x[i * k + j] += b[j];
    return 0;
}

static int op_kv_write(struct sl_backend *be, struct sl_kv_cache *kv, int32_t layer, int64_t pos, int64_t n,
                       const float *k, const float *v) {
    return sl_kv_cache_write(kv, layer, pos, n, k, v);
}

static int op_export_f16(struct sl_backend *be, const float *x, int64_t n, uint16_t *out) {
    sl_f32_to_f16_row(x, out, n);
    return 0;
}

/* Host memory, 64-byte aligned (whole cache lines for the vector kernels). */
static int op_buf_alloc(struct sl_backend *be, size_t bytes, void **out) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return sl_fail(SL_ENOMEM, "cannot allocate %zu bytes", bytes);
    *out = p;
    return 0;
}

static void op_buf_free(struct sl_backend *be, void *p) { free(p); }

static int op_copy(struct sl_backend *be, void *dst, const void *src, size_t bytes) {
    if (dst != src) memcpy(dst, src, bytes);
    return 0;
}

static int op_swiglu(struct sl_backend *be, const float *g, const float *u, int64_t n, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    return 0;
}

static int op_attention(struct sl_backend *be, const struct sl_kv_cache *kv, int32_t layer, const float *q,
                        int64_t n, int64_t pos0, int32_t n_head, float *out) {
    return sl_cpu_attention(cpu(be)->pool, &cpu(be)->attn, kv, layer, q, n, pos0, n_head, out);
}

static void op_parallel(struct sl_backend *be, void (*fn)(void *ctx, int ith, int nth), void *ctx) {
    sl_threadpool_run(cpu(be)->pool, fn, ctx);
}

static void op_free(struct sl_backend *be) {
    if (!be) return;
    struct cpu_backend *c = cpu(be);
    sl_threadpool_free(c->pool);
    sl_scratch_free(&c->mm.act);
    sl_scratch_free(&c->mm.wf32);
    sl_scratch_free(&c->mm.xf32);
    sl_attn_scratch_free(&c->attn);
    free(c);
}

int sl_backend_cpu_create(int n_threads, struct sl_backend **out) {
    struct cpu_backend *c = calloc(1, sizeof *c);
    if (!c) return sl_fail(SL_ENOMEM, "out of memory");
    int rc = sl_threadpool_create(n_threads, 1, &c->pool);
    if (rc) {
        free(c);
        return rc;
    }
    /* Our pool's threads each call a single-threaded OpenBLAS sgemm on their own tiles
     * (cpu/matmul.h, cpu/attention.h): OpenBLAS's own threading would split the products by
     * the thread count, and the rounding with them. The setting is process-wide. */
    openblas_set_num_threads(1);
    c->be = (struct sl_backend){
        .name = "cpu", .impl = c, .host_memory = true, .buf_alloc = op_buf_alloc, .buf_free = op_buf_free,
        .upload = op_copy, .download = op_copy, .copy = op_copy, .load_model = NULL, .matmul = op_matmul, .matmul_n = op_matmul_n,
        .get_rows = op_get_rows, .rmsnorm = op_rmsnorm, .rope = op_rope, .add = op_add, .add_rows = op_add_rows,
        .swiglu = op_swiglu, .kv_write = op_kv_write, .export_f16 = op_export_f16, .attention = op_attention,
        .parallel = op_parallel, .free = op_free,
    };
    *out = &c->be;
    return 0;
}
