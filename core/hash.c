/* Hash functions: shapes, deterministic initialisation, and encoding (see hash.h for the
 * math, the random streams and the layout of the weights, which is also the file's). */
#include "core/hash.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "cpu/dispatch.h"
#include "cpu/f16-row.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))
#endif

struct sl_hash {
    struct sl_hash_params p;
    uint32_t flags;
    int32_t n_fn;                    /* functions per layer: n_head_kv keys, then n_head_q queries */
    int64_t fn_floats, layer_floats;
    float *weights;                  /* (n_layer, layer_floats), file order */
    struct sl_hash_fn *fns;          /* (n_layer, n_fn) views into weights */
    struct sl_hash_layer_info *info; /* (n_layer) */
    char *note;                      /* NULL: no note */
    uint8_t fingerprint[32];
};

struct sl_hash_params sl_hash_default_params(void) {
    return (struct sl_hash_params){.bits = 64, .kind = SL_HASH_SPOTLIGHT, .seed = 0x5EED5EEDu};
}

void sl_hash_params_from_config(const struct sl_model_config *cfg, struct sl_hash_params *p) {
    p->n_layer = cfg->n_layer;
    p->n_head_q = cfg->n_head;
    p->n_head_kv = cfg->n_head_kv;
    p->head_dim = cfg->head_dim;
}

static uint32_t default_flags(const struct sl_hash_params *p) {
    if (p->kind == SL_HASH_SIMHASH) return SL_HASH_PROJ;
    return SL_HASH_MLP | (p->bits != p->head_dim ? SL_HASH_PROJ : 0);
}

/* The limits are the file's (hash.h); the loader reports a violation as SL_EFORMAT. */
int sl_hash_check_shape(const struct sl_hash_params *p, uint32_t flags) {
    if (p->n_layer < 1 || p->n_layer > SL_HASH_MAX_LAYERS)
        return sl_fail(SL_EINVAL, "hash: n_layer %d outside 1..%d", p->n_layer, SL_HASH_MAX_LAYERS);
    if (p->n_head_kv < 1 || p->n_head_kv > SL_HASH_MAX_HEADS)
        return sl_fail(SL_EINVAL, "hash: n_head_kv %d outside 1..%d", p->n_head_kv, SL_HASH_MAX_HEADS);
    if (p->n_head_q < 1 || p->n_head_q > SL_HASH_MAX_HEADS || p->n_head_q % p->n_head_kv)
        return sl_fail(SL_EINVAL, "hash: n_head_q %d outside 1..%d or not a multiple of n_head_kv %d",
                       p->n_head_q, SL_HASH_MAX_HEADS, p->n_head_kv);
    if (p->head_dim < 1 || p->head_dim > SL_HASH_MAX_DIM)
        return sl_fail(SL_EINVAL, "hash: head_dim %d outside 1..%d", p->head_dim, SL_HASH_MAX_DIM);
    if (p->bits < 32 || p->bits > SL_HASH_MAX_BITS || p->bits % 32)
        return sl_fail(SL_EINVAL, "hash: %d bits is not a multiple of 32 in 32..%d", p->bits,
                       SL_HASH_MAX_BITS);
    if (p->kind != SL_HASH_SPOTLIGHT && p->kind != SL_HASH_SIMHASH)
        return sl_fail(SL_EINVAL, "hash: unknown kind %d", (int)p->kind);
    if (flags & ~(uint32_t)(SL_HASH_MLP | SL_HASH_PROJ))
        return sl_fail(SL_EINVAL, "hash: unknown flags 0x%x", flags);
    if (!(flags & SL_HASH_PROJ) && p->bits != p->head_dim)
        return sl_fail(SL_EINVAL, "hash: %d-bit codes of %d-dimensional vectors need a projection",
                       p->bits, p->head_dim);
    return 0;
}

int64_t sl_hash_shape_fn_floats(const struct sl_hash_params *p, uint32_t flags) {
    int64_t d = p->head_dim;
    int64_t mlp = (flags & SL_HASH_MLP) ? 2 * d * d + 2 * d : 0;
    return mlp + ((flags & SL_HASH_PROJ) ? (int64_t)p->bits * d : 0);
}

/* ---- random numbers (the streams hash.h documents) -------------------------------------- */

struct rng {
    uint64_t state;
    double spare;
    int has_spare;
};

static uint64_t rng_next(struct rng *r) { return sl_splitmix64(&r->state); }

static double rng_gaussian(struct rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = (double)((rng_next(r) >> 11) + 1) * 0x1p-53; /* (0, 1]: log stays finite */
    double u2 = (double)(rng_next(r) >> 11) * 0x1p-53;
    double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

static void fill(struct rng *r, float *dst, int64_t n, double scale) {
    for (int64_t i = 0; i < n; i++) dst[i] = (float)(rng_gaussian(r) * scale);
}

static struct rng stream(const sl_hash *h, int role, int32_t layer, int32_t head) {
    uint64_t tag = (uint64_t)(uint32_t)layer << 32 | (uint64_t)role << 16 | (uint64_t)(uint32_t)head;
    return (struct rng){.state = sl_mix64(h->p.seed ^ sl_mix64(tag))};
}

static void init_fn(const sl_hash *h, struct sl_hash_fn *f, int role, int32_t layer, int32_t head) {
    struct rng r = stream(h, role, layer, head);
    int64_t d = f->d;
    if (f->w1) {
        fill(&r, f->w1, d * d, 1e-3);
        fill(&r, f->b1, d, 1e-3);
        fill(&r, f->w2, d * d, 1e-3);
        fill(&r, f->b2, d, 1e-3);
    }
    if (f->proj) {
        /* one projection per KV head, shared by its key function and its group's query
         * functions: codes compare only when both sides project the same way */
        int32_t kv_head = role == SL_HASH_QUERY ? head / (h->p.n_head_q / h->p.n_head_kv) : head;
        struct rng pr = stream(h, 2, layer, kv_head);
        fill(&pr, f->proj, (int64_t)f->bits * d, h->p.kind == SL_HASH_SIMHASH ? 1.0 : 1.0 / sqrt((double)d));
    }
}

/* ---- handle ------------------------------------------------------------------------------ */

int sl_hash_alloc(const struct sl_hash_params *p, uint32_t flags, sl_hash **out) {
    if (!p || !out) return sl_fail(SL_EINVAL, "sl_hash_alloc: NULL argument");
    int rc = sl_hash_check_shape(p, flags);
    if (rc) return rc;
    int64_t d = p->head_dim, n_fn = (int64_t)p->n_head_kv + p->n_head_q;
    /* Within the limits: fn_floats < 2^23, layer_floats < 2^34, total < 2^46 floats; only
     * the byte count can exceed a 32-bit size_t. */
    int64_t fn_floats = sl_hash_shape_fn_floats(p, flags);
    int64_t layer_floats = n_fn * fn_floats, total = layer_floats * p->n_layer;
    if ((uint64_t)total > SIZE_MAX / sizeof(float))
        return sl_fail(SL_ENOMEM, "hash: %lld weights do not fit in memory", (long long)total);

    sl_hash *h = calloc(1, sizeof *h);
    if (!h) return sl_fail(SL_ENOMEM, "out of memory");
    h->p = *p;
    h->flags = flags;
    h->n_fn = (int32_t)n_fn;
    h->fn_floats = fn_floats;
    h->layer_floats = layer_floats;
    h->weights = calloc((size_t)total, sizeof(float));
    h->fns = calloc((size_t)(n_fn * p->n_layer), sizeof *h->fns);
    h->info = calloc((size_t)p->n_layer, sizeof *h->info);
    if (!h->weights || !h->fns || !h->info) {
        sl_hash_free(h);
        return sl_fail(SL_ENOMEM, "out of memory for a hash of %lld weights", (long long)total);
    }
    for (int64_t i = 0; i < n_fn * p->n_layer; i++) {
        float *w = h->weights + i * fn_floats;
        struct sl_hash_fn *f = &h->fns[i];
        *f = (struct sl_hash_fn){.d = p->head_dim, .bits = p->bits, .flags = flags};
        if (flags & SL_HASH_MLP) {
            f->w1 = w;
            f->b1 = w + d * d;
            f->w2 = w + d * d + d;
            f->b2 = w + 2 * d * d + d;
            w += 2 * d * d + 2 * d;
        }
        if (flags & SL_HASH_PROJ) f->proj = w;
    }
    for (int32_t l = 0; l < p->n_layer; l++)
        h->info[l] = (struct sl_hash_layer_info){SL_HASH_INITIAL, 0, NAN, NAN, NAN};
    *out = h;
    return 0;
}

int sl_hash_create(const struct sl_hash_params *p, sl_hash **out) {
    if (!p || !out) return sl_fail(SL_EINVAL, "sl_hash_create: NULL argument");
    sl_hash *h;
    int rc = sl_hash_alloc(p, default_flags(p), &h);
    if (rc) return rc;
    for (int32_t l = 0; l < p->n_layer; l++) sl_hash_reset_layer(h, l);
    *out = h;
    return 0;
}

void sl_hash_free(sl_hash *h) {
    if (!h) return;
    free(h->weights);
    free(h->fns);
    free(h->info);
    free(h->note);
    free(h);
}

const struct sl_hash_params *sl_hash_get_params(const sl_hash *h) { return &h->p; }
uint32_t sl_hash_flags(const sl_hash *h) { return h->flags; }
int64_t sl_hash_fn_floats(const sl_hash *h) { return h->fn_floats; }

struct sl_hash_fn *sl_hash_fn_mut(sl_hash *h, enum sl_hash_role role, int32_t layer, int32_t head) {
    SL_ASSERT(layer >= 0 && layer < h->p.n_layer);
    SL_ASSERT(role == SL_HASH_KEY || role == SL_HASH_QUERY);
    SL_ASSERT(head >= 0 && head < (role == SL_HASH_KEY ? h->p.n_head_kv : h->p.n_head_q));
    int32_t i = role == SL_HASH_KEY ? head : h->p.n_head_kv + head;
    return &h->fns[(int64_t)layer * h->n_fn + i];
}

const struct sl_hash_fn *sl_hash_query_fn(const sl_hash *h, int32_t layer, int32_t q_head) {
    return sl_hash_fn_mut((sl_hash *)h, SL_HASH_QUERY, layer, q_head);
}

const struct sl_hash_fn *sl_hash_key_fn(const sl_hash *h, int32_t layer, int32_t kv_head) {
    return sl_hash_fn_mut((sl_hash *)h, SL_HASH_KEY, layer, kv_head);
}

float *sl_hash_layer_weights(sl_hash *h, int32_t layer, int64_t *n_floats) {
    SL_ASSERT(layer >= 0 && layer < h->p.n_layer);
    if (n_floats) *n_floats = h->layer_floats;
    return h->weights + layer * h->layer_floats;
}

void sl_hash_layer_info_get(const sl_hash *h, int32_t layer, struct sl_hash_layer_info *out) {
    SL_ASSERT(layer >= 0 && layer < h->p.n_layer);
    *out = h->info[layer];
}

int sl_hash_layer_info_set(sl_hash *h, int32_t layer, const struct sl_hash_layer_info *info) {
    SL_ASSERT(layer >= 0 && layer < h->p.n_layer);
    if (info->status < SL_HASH_INITIAL || info->status > SL_HASH_TRAINED || info->steps < 0)
        return sl_fail(SL_EINVAL, "hash layer %d: status %d or steps %lld invalid", layer,
                       (int)info->status, (long long)info->steps);
    h->info[layer] = *info;
    return 0;
}

void sl_hash_reset_layer(sl_hash *h, int32_t layer) {
    SL_ASSERT(layer >= 0 && layer < h->p.n_layer);
    for (int32_t i = 0; i < h->n_fn; i++) {
        int role = i < h->p.n_head_kv ? SL_HASH_KEY : SL_HASH_QUERY;
        int32_t head = role == SL_HASH_KEY ? i : i - h->p.n_head_kv;
        init_fn(h, &h->fns[(int64_t)layer * h->n_fn + i], role, layer, head);
    }
    h->info[layer] = (struct sl_hash_layer_info){SL_HASH_INITIAL, 0, NAN, NAN, NAN};
}

const char *sl_hash_note(const sl_hash *h) { return h->note ? h->note : ""; }

int sl_hash_set_note(sl_hash *h, const char *note) {
    size_t n = note ? strlen(note) : 0;
    if (n > SL_HASH_MAX_NOTE)
        return sl_fail(SL_EINVAL, "hash note of %zu bytes (at most %u)", n, SL_HASH_MAX_NOTE);
    char *copy = NULL;
    if (n) {
        if (!(copy = malloc(n + 1))) return sl_fail(SL_ENOMEM, "out of memory");
        memcpy(copy, note, n + 1);
    }
    free(h->note);
    h->note = copy;
    return 0;
}

void sl_hash_fingerprint(const sl_hash *h, uint8_t out[32]) { memcpy(out, h->fingerprint, 32); }
void sl_hash_set_fingerprint(sl_hash *h, const uint8_t fp[32]) { memcpy(h->fingerprint, fp, 32); }

/* ---- encoding ---------------------------------------------------------------------------- */

/* Rows per sgemm slice: big enough to amortise the call, small enough that the slice's
 * intermediates (2 x rows x d floats) stay in L2. */
#define SLICE_ROWS 256
/* Up to this many vectors the loops beat sgemm, whose per-call cost dominates small products:
 * d = 64, 64 bits, one vector (decode) 0.6-0.8 us with the AVX2 loops vs 5.4 us through
 * sgemm; the two meet between 4 and 16 vectors (measured on the Zen 3 build machine). */
#define LOOP_MAX_ROWS 4

size_t sl_hash_work_floats(int32_t d, int32_t bits, int64_t n) {
    int64_t rows = n < SLICE_ROWS ? (n > 0 ? n : 1) : SLICE_ROWS;
    return (size_t)rows * (2 * (size_t)(d > 0 ? d : 0) + (size_t)(bits > 0 ? bits : 0));
}

/* a[i] = SiLU(a[i]) + x[i], SiLU(a) = a / (1 + e^-a). t (n floats) is scratch for e^-a,
 * computed by the vectorised exp: libm's expf one value at a time cost more than both matrix
 * products together at d = 64. exp clamps its argument to +-88, so a very negative a gives
 * a / 2e38 (about 0, as it should) rather than a / inf. */
static void silu_residual(float *restrict a, const float *restrict x, int64_t n, float *restrict t) {
    for (int64_t i = 0; i < n; i++) t[i] = -a[i];
    sl_exp_sub_sum(t, n, 0.0f);
    for (int64_t i = 0; i < n; i++) a[i] = a[i] / (1.0f + t[i]) + x[i];
}

/* Eight independent partial sums: gcc -O2 turns them into vector adds without -ffast-math. */
static float dot(const float *restrict a, const float *restrict b, int32_t n) {
    float s[8] = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += a[i + k] * b[i + k];
    float t = 0;
    for (; i < n; i++) t += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + t;
}

#if defined(__x86_64__)
/* Eight rows at a time: eight independent FMA chains hide the FMA latency and every load of
 * x serves eight rows. Three rounds of hadd and one cross-lane add leave the eight sums in
 * row order. */
AVX2 static void matvec_avx2(const float *restrict w, const float *restrict x, int32_t rows,
                             int32_t cols, float *restrict y) {
    int32_t c8 = cols & ~7, o = 0;
    size_t n = (size_t)cols;
    for (; o + 8 <= rows; o += 8) {
        /* Named accumulators: an array of them stays in memory at -O2 (no unrolling), which
         * turns every FMA into a load-FMA-store chain and costs 4x. */
        const float *r = w + (size_t)o * n;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int32_t i = 0; i < c8; i += 8) {
            __m256 xv = _mm256_loadu_ps(x + i);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i), xv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r + n + i), xv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 2 * n + i), xv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 3 * n + i), xv, a3);
            a4 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 4 * n + i), xv, a4);
            a5 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 5 * n + i), xv, a5);
            a6 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 6 * n + i), xv, a6);
            a7 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 7 * n + i), xv, a7);
        }
        __m256 s03 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
        __m256 s47 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
        __m256 sum = _mm256_add_ps(_mm256_permute2f128_ps(s03, s47, 0x20),
                                   _mm256_permute2f128_ps(s03, s47, 0x31));
        _mm256_storeu_ps(y + o, sum);
        for (int32_t i = c8; i < cols; i++)
            for (int k = 0; k < 8; k++) y[o + k] += r[(size_t)k * n + i] * x[i];
    }
    for (; o < rows; o++) y[o] = dot(w + (size_t)o * n, x, cols);
}
#endif

static void matvec(const float *restrict w, const float *restrict x, int32_t rows, int32_t cols,
                   float *restrict y) {
#if defined(__x86_64__)
    if (sl_cpu_use_avx2()) {
        matvec_avx2(w, x, rows, cols, y);
        return;
    }
#endif
    for (int32_t o = 0; o < rows; o++) y[o] = dot(w + (size_t)o * cols, x, cols);
}

/* One vector: work holds 2 d floats. */
static void forward_one(const struct sl_hash_fn *f, const float *x, float *y, float *work) {
    int32_t d = f->d;
    const float *h = x;
    if (f->flags & SL_HASH_MLP) {
        float *r = work, *hh = (f->flags & SL_HASH_PROJ) ? work + d : y;
        matvec(f->w1, x, d, d, r);
        for (int32_t i = 0; i < d; i++) r[i] += f->b1[i];
        silu_residual(r, x, d, hh);
        matvec(f->w2, r, d, d, hh);
        for (int32_t i = 0; i < d; i++) hh[i] += f->b2[i] + r[i];
        h = hh;
    }
    if (f->flags & SL_HASH_PROJ)
        matvec(f->proj, h, f->bits, d, y);
    else if (h != y)
        memcpy(y, h, (size_t)d * sizeof *y);
}

/* m <= SLICE_ROWS vectors: work holds 2 m d floats. Biases are copied into the outputs first
 * so that sgemm accumulates onto them (beta = 1) instead of another pass adding them. */
static void forward_rows(const struct sl_hash_fn *f, const float *x, int32_t m, float *y,
                         float *work) {
    int32_t d = f->d, b = f->bits;
    const float *h = x;
    if (f->flags & SL_HASH_MLP) {
        float *r = work, *hh = (f->flags & SL_HASH_PROJ) ? work + (size_t)m * d : y;
        for (int32_t i = 0; i < m; i++) memcpy(r + (size_t)i * d, f->b1, (size_t)d * sizeof *r);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, d, d, 1.0f, x, d, f->w1, d, 1.0f,
                    r, d);
        silu_residual(r, x, (int64_t)m * d, hh);
        for (int32_t i = 0; i < m; i++)
            for (int32_t j = 0; j < d; j++) hh[(size_t)i * d + j] = r[(size_t)i * d + j] + f->b2[j];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, d, d, 1.0f, r, d, f->w2, d, 1.0f,
                    hh, d);
        h = hh;
    }
    if (f->flags & SL_HASH_PROJ)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, b, d, 1.0f, h, d, f->proj, d, 0.0f,
                    y, b);
    else if (h != y)
        memcpy(y, h, (size_t)m * d * sizeof *y);
}

static int check_args(const struct sl_hash_fn *f, int32_t d, int32_t bits, const float *x, int64_t n,
                      const void *out, const float *work) {
    if (!f || n < 0 || (n > 0 && (!x || !out || !work)))
        return sl_fail(SL_EINVAL, "hash encode: NULL buffer or negative count");
    if (f->d != d || f->bits != bits)
        return sl_fail(SL_EINVAL, "hash encode: called with d %d, %d bits for a function of d %d, "
                       "%d bits", d, bits, f->d, f->bits);
    return 0;
}

int sl_hash_forward(const struct sl_hash_fn *f, int32_t d, int32_t bits, const float *x, int64_t n,
                    float *y, float *work) {
    int rc = check_args(f, d, bits, x, n, y, work);
    if (rc) return rc;
    if (n <= LOOP_MAX_ROWS) {
        for (int64_t i = 0; i < n; i++) forward_one(f, x + i * d, y + i * bits, work);
        return 0;
    }
    for (int64_t i = 0; i < n; i += SLICE_ROWS) {
        int32_t m = (int32_t)(n - i < SLICE_ROWS ? n - i : SLICE_ROWS);
        forward_rows(f, x + i * d, m, y + i * bits, work);
    }
    return 0;
}

#if defined(__x86_64__)
/* One compare and movemask per 8 values instead of 8 compares and shifts. GT_OQ is false for
 * NaN, as the scalar > is. */
AVX2 static void pack_avx2(const float *y, int64_t n, int32_t bits, uint64_t *codes) {
    int32_t words = sl_hash_code_words(bits);
    __m256 zero = _mm256_setzero_ps();
    for (int64_t r = 0; r < n; r++)
        for (int32_t w = 0; w < words; w++) {
            const float *p = y + r * bits + w * 64;
            const int lanes = (bits - w * 64 < 64 ? bits - w * 64 : 64) / 8; /* 4 or 8 */
            uint64_t c = 0;
            for (int j = 0; j < lanes; j++)
                c |= (uint64_t)(uint32_t)_mm256_movemask_ps(
                         _mm256_cmp_ps(_mm256_loadu_ps(p + 8 * j), zero, _CMP_GT_OQ)) << (8 * j);
            codes[r * words + w] = c;
        }
}
#endif

void sl_hash_pack(const float *y, int64_t n, int32_t bits, uint64_t *codes) {
#if defined(__x86_64__)
    if (sl_cpu_use_avx2()) {
        pack_avx2(y, n, bits, codes);
        return;
    }
#endif
    int32_t words = sl_hash_code_words(bits);
    for (int64_t r = 0; r < n; r++)
        for (int32_t w = 0; w < words; w++) {
            const float *p = y + r * bits + w * 64;
            const int m = bits - w * 64 < 64 ? bits - w * 64 : 64;
            uint64_t c = 0;
            for (int j = 0; j < m; j++) c |= (uint64_t)(p[j] > 0.0f) << j;
            codes[r * words + w] = c;
        }
}

int sl_hash_encode(const struct sl_hash_fn *f, int32_t d, int32_t bits, const float *x, int64_t n,
                   uint64_t *codes, float *work) {
    int rc = check_args(f, d, bits, x, n, codes, work);
    if (rc) return rc;
    /* Slice by slice through sl_hash_forward (one code path for training and inference):
     * its scratch is the first 2 rows d floats, the slice's pre-sign values follow. */
    int64_t rows = n < SLICE_ROWS ? n : SLICE_ROWS;
    float *y = work + 2 * rows * d;
    int32_t words = sl_hash_code_words(bits);
    for (int64_t i = 0; i < n; i += rows) {
        int64_t m = n - i < rows ? n - i : rows;
        sl_hash_forward(f, d, bits, x + i * d, m, y, work);
        sl_hash_pack(y, m, bits, codes + i * words);
    }
    return 0;
}
