/* Hash training for one layer (see hash-train.h): forward with the activations kept,
 * Bradley-Terry loss over sampled (query, positive, negative) triples, backpropagation,
 * AdamW. Matrices go through cblas_sgemm; everything else is plain loops. */
#include "core/hash-train.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/attn-truth.h"
#include "core/internal.h"

struct sl_hash_train_params sl_hash_train_default_params(void) {
    return (struct sl_hash_train_params){
        .steps = 300, .queries = 128, .pos_samples = 32, .neg_samples = 128, .min_pos = 64,
        .pos_frac = 0.02f, .gamma = 64.0f, .lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.98f,
        .eps = 1e-8f, .weight_decay = 0.1f, .clip = 1.0f, .warmup_frac = 0.05f, .seed = 1};
}

/* Activations of one function over n rows, kept for the backward pass. */
struct fn_cache {
    float *x; /* (n, d) input */
    float *a; /* (n, d) W1 x + b1 */
    float *r; /* (n, d) SiLU(a) + x */
    float *u; /* (n, d) W2 r + b2 + r */
    float *y; /* (n, bits) output before sign */
    float *c; /* (n, bits) soft code; later its gradient */
};

struct sl_hash_trainer {
    sl_hash *h;
    int32_t layer, d, bits, hq, hkv, group, max_n;
    struct sl_hash_train_params p;
    float *w, *grad, *m, *v; /* (nw) */
    int64_t nw, t;
    uint64_t rng;
    struct fn_cache kc;       /* keys: max_n rows */
    struct fn_cache *qc;      /* per query head of a group: queries rows */
    float *csum, *dcsum;      /* (queries, bits) */
    float *S, *A, *dS, *L;    /* (queries, max_n) */
    float *du, *dr;           /* (max(max_n, queries), d) backward scratch */
    float *sel;               /* (max_n) */
    int32_t *qi, *pos, *neg;  /* (queries), (max_n), (max_n) */
};

static float *falloc(int64_t n, int *fail) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!p) *fail = 1;
    return p;
}

static void cache_alloc(struct fn_cache *c, int64_t n, int32_t d, int32_t bits, int *fail) {
    c->x = falloc(n * d, fail);
    c->a = falloc(n * d, fail);
    c->r = falloc(n * d, fail);
    c->u = falloc(n * d, fail);
    c->y = falloc(n * bits, fail);
    c->c = falloc(n * bits, fail);
}

static void cache_free(struct fn_cache *c) {
    free(c->x);
    free(c->a);
    free(c->r);
    free(c->u);
    free(c->y);
    free(c->c);
}

void sl_hash_trainer_free(sl_hash_trainer *t) {
    if (!t) return;
    cache_free(&t->kc);
    for (int32_t i = 0; t->qc && i < t->group; i++) cache_free(&t->qc[i]);
    free(t->qc);
    free(t->grad);
    free(t->m);
    free(t->v);
    free(t->csum);
    free(t->dcsum);
    free(t->S);
    free(t->A);
    free(t->dS);
    free(t->L);
    free(t->du);
    free(t->dr);
    free(t->sel);
    free(t->qi);
    free(t->pos);
    free(t->neg);
    free(t);
}

int sl_hash_trainer_create(sl_hash *h, int32_t layer, const struct sl_hash_train_params *p,
                           int32_t max_seq_len, sl_hash_trainer **out) {
    *out = NULL;
    const struct sl_hash_params *hp = sl_hash_get_params(h);
    if (layer < 0 || layer >= hp->n_layer || max_seq_len < 2 || p->queries < 1 ||
        p->pos_samples < 1 || p->neg_samples < 1 || p->steps < 1 || !(p->pos_frac > 0) ||
        !(p->pos_frac < 1) || !(p->gamma > 0) || p->min_pos < 1 || p->min_pos >= max_seq_len ||
        hp->n_head_q / hp->n_head_kv > 64)
        return sl_fail(SL_EINVAL, "hash training: bad parameters for layer %d", layer);
    sl_hash_trainer *t = calloc(1, sizeof *t);
    if (!t) return sl_fail(SL_ENOMEM, "out of memory");
    t->h = h;
    t->layer = layer;
    t->p = *p;
    t->d = hp->head_dim;
    t->bits = hp->bits;
    t->hq = hp->n_head_q;
    t->hkv = hp->n_head_kv;
    t->group = hp->n_head_q / hp->n_head_kv;
    t->max_n = max_seq_len;
    t->rng = p->seed;
    t->w = sl_hash_layer_weights(h, layer, &t->nw);
    int fail = 0;
    const int64_t Q = p->queries, N = max_seq_len;
    t->grad = falloc(t->nw, &fail);
    t->m = falloc(t->nw, &fail);
    t->v = falloc(t->nw, &fail);
    cache_alloc(&t->kc, N, t->d, t->bits, &fail);
    t->qc = calloc((size_t)t->group, sizeof *t->qc);
    if (!t->qc) fail = 1;
    for (int32_t i = 0; t->qc && i < t->group; i++) cache_alloc(&t->qc[i], Q, t->d, t->bits, &fail);
    t->csum = falloc(Q * t->bits, &fail);
    t->dcsum = falloc(Q * t->bits, &fail);
    t->S = falloc(Q * N, &fail);
    t->A = falloc(Q * N, &fail);
    t->dS = falloc(Q * N, &fail);
    t->L = falloc(Q * N, &fail);
    const int64_t rows = N > Q ? N : Q; /* backward runs over the keys, then over the queries */
    t->du = falloc(rows * t->d, &fail);
    t->dr = falloc(rows * t->d, &fail);
    t->sel = falloc(N, &fail);
    t->qi = calloc((size_t)Q, sizeof *t->qi);
    t->pos = calloc((size_t)N, sizeof *t->pos);
    t->neg = calloc((size_t)N, sizeof *t->neg);
    if (fail || !t->qi || !t->pos || !t->neg) {
        sl_hash_trainer_free(t);
        return sl_fail(SL_ENOMEM, "hash training: cannot allocate work buffers");
    }
    *out = t;
    return 0;
}

void sl_hash_trainer_reseed(sl_hash_trainer *t, uint64_t seed) { t->rng = seed; }

/* ---- one function: forward with activations, backward into gradients ---- */

static void forward(const struct sl_hash_fn *f, struct fn_cache *c, int64_t n, float gamma) {
    const int32_t d = f->d, b = f->bits;
    if (f->flags & SL_HASH_MLP) {
        for (int64_t i = 0; i < n; i++) memcpy(c->a + i * d, f->b1, sizeof(float) * (size_t)d);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, d, d, 1.0f, c->x, d, f->w1, d,
                    1.0f, c->a, d);
        for (int64_t i = 0; i < n * d; i++) {
            float a = c->a[i];
            c->r[i] = a / (1.0f + expf(-a)) + c->x[i];
        }
        for (int64_t i = 0; i < n; i++)
            for (int32_t j = 0; j < d; j++) c->u[i * d + j] = f->b2[j] + c->r[i * d + j];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, d, d, 1.0f, c->r, d, f->w2, d,
                    1.0f, c->u, d);
    } else {
        memcpy(c->u, c->x, sizeof(float) * (size_t)(n * d));
    }
    if (f->flags & SL_HASH_PROJ)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, b, d, 1.0f, c->u, d, f->proj,
                    d, 0.0f, c->y, b);
    else
        memcpy(c->y, c->u, sizeof(float) * (size_t)(n * b));
    for (int64_t i = 0; i < n * b; i++) {
        float z = gamma * c->y[i];
        c->c[i] = z / (1.0f + fabsf(z));
    }
}

/* dc: (n, bits) gradient of the soft code (overwritten). g: the function's gradient views. */
static void backward(const struct sl_hash_fn *f, const struct sl_hash_fn *g, struct fn_cache *c,
                     float *dc, int64_t n, float gamma, float *du, float *dr) {
    const int32_t d = f->d, b = f->bits;
    for (int64_t i = 0; i < n * b; i++) {
        float s = 1.0f + fabsf(gamma * c->y[i]);
        dc[i] *= gamma / (s * s); /* now dL/dy */
    }
    if (f->flags & SL_HASH_PROJ) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, d, b, 1.0f, dc, b, f->proj,
                    d, 0.0f, du, d);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, b, d, (int)n, 1.0f, dc, b, c->u, d,
                    1.0f, g->proj, d);
    } else {
        memcpy(du, dc, sizeof(float) * (size_t)(n * d));
    }
    if (!(f->flags & SL_HASH_MLP)) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, (int)n, 1.0f, du, d, c->r, d, 1.0f,
                g->w2, d);
    for (int64_t i = 0; i < n; i++)
        for (int32_t j = 0; j < d; j++) g->b2[j] += du[i * d + j];
    memcpy(dr, du, sizeof(float) * (size_t)(n * d));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, d, d, 1.0f, du, d, f->w2, d,
                1.0f, dr, d);
    for (int64_t i = 0; i < n * d; i++) {
        float a = c->a[i], s = 1.0f / (1.0f + expf(-a));
        dr[i] *= s * (1.0f + a * (1.0f - s)); /* now dL/da */
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, (int)n, 1.0f, dr, d, c->x, d, 1.0f,
                g->w1, d);
    for (int64_t i = 0; i < n; i++)
        for (int32_t j = 0; j < d; j++) g->b1[j] += dr[i * d + j];
}

/* The gradient views of a function: the same offsets in the gradient array. */
static struct sl_hash_fn grad_view(const sl_hash_trainer *t, const struct sl_hash_fn *f) {
    struct sl_hash_fn g = *f;
#define VIEW(p) g.p = f->p ? t->grad + (f->p - t->w) : NULL
    VIEW(w1);
    VIEW(b1);
    VIEW(w2);
    VIEW(b2);
    VIEW(proj);
#undef VIEW
    return g;
}

int sl_hash_trainer_loss_grad(sl_hash_trainer *t, const struct sl_hash_train_seq *seq, float *loss,
                              float *grad) {
    const int64_t N = seq->seq_len, Q = t->p.queries;
    const int32_t d = t->d, b = t->bits, G = t->group;
    if (N < 2 || N > t->max_n || t->p.min_pos >= N)
        return sl_fail(SL_EINVAL, "hash training: sequence of %lld positions", (long long)N);
    float *saved = t->grad;
    t->grad = grad;
    memset(grad, 0, sizeof(float) * (size_t)t->nw);
    double total = 0;
    for (int64_t r = 0; r < Q; r++) t->qi[r] = (int32_t)(t->p.min_pos + sl_rand_below(&t->rng, N - t->p.min_pos));
    const float *xq[64];
    for (int32_t g = 0; g < t->hkv; g++) {
        const struct sl_hash_fn *kf = sl_hash_key_fn(t->h, t->layer, g);
        sl_truth_gather_rows(seq->k, t->hkv, g, d, NULL, N, t->kc.x);
        forward(kf, &t->kc, N, t->p.gamma);
        memset(t->csum, 0, sizeof(float) * (size_t)(Q * b));
        for (int32_t hh = 0; hh < G; hh++) {
            const struct sl_hash_fn *qf = sl_hash_query_fn(t->h, t->layer, g * G + hh);
            sl_truth_gather_rows(seq->q, t->hq, g * G + hh, d, t->qi, Q, t->qc[hh].x);
            forward(qf, &t->qc[hh], Q, t->p.gamma);
            for (int64_t i = 0; i < Q * b; i++) t->csum[i] += t->qc[hh].c[i];
            xq[hh] = t->qc[hh].x;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)Q, (int)N, b, 1.0f, t->csum, b,
                    t->kc.c, b, 0.0f, t->S, (int)N);
        sl_truth_attention(G, xq, t->kc.x, t->qi, Q, N, d, t->A, t->L);

        /* triples: for each query, sampled positives x sampled negatives */
        memset(t->dS, 0, sizeof(float) * (size_t)(Q * N));
        const double per_pair = 1.0 / ((double)Q * t->p.pos_samples * t->p.neg_samples * t->hkv);
        for (int64_t r = 0; r < Q; r++) {
            const int64_t nv = (int64_t)t->qi[r] + 1;
            int64_t npos = (int64_t)ceilf(t->p.pos_frac * (float)nv);
            if (npos < 1) npos = 1;
            const float *a = t->A + r * N;
            float thr = sl_truth_kth_largest(a, nv, npos, t->sel);
            int64_t np = 0, nn = 0;
            for (int64_t j = 0; j < nv; j++) {
                if (a[j] >= thr) t->pos[np++] = (int32_t)j;
                else t->neg[nn++] = (int32_t)j;
            }
            if (nn == 0) continue;
            const float *s = t->S + r * N;
            float *ds = t->dS + r * N;
            for (int32_t pi = 0; pi < t->p.pos_samples; pi++) {
                int32_t jp = t->pos[sl_rand_below(&t->rng, np)];
                for (int32_t ni = 0; ni < t->p.neg_samples; ni++) {
                    int32_t jn = t->neg[sl_rand_below(&t->rng, nn)];
                    float delta = s[jp] - s[jn];
                    /* -log sigmoid(delta) = softplus(-delta), stably */
                    total += (delta > 0 ? log1pf(expf(-delta)) : -delta + log1pf(expf(delta))) * per_pair;
                    float sg = 1.0f / (1.0f + expf(delta)); /* sigmoid(-delta) */
                    ds[jp] -= (float)(sg * per_pair);
                    ds[jn] += (float)(sg * per_pair);
                }
            }
        }
        /* dL/dc: queries get dS . c_k (the same for every head of the group), keys dS^T . csum */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Q, b, (int)N, 1.0f, t->dS, (int)N,
                    t->kc.c, b, 0.0f, t->dcsum, b);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)N, b, (int)Q, 1.0f, t->dS, (int)N,
                    t->csum, b, 0.0f, t->kc.c, b);
        struct sl_hash_fn kg = grad_view(t, kf);
        backward(kf, &kg, &t->kc, t->kc.c, N, t->p.gamma, t->du, t->dr);
        for (int32_t hh = 0; hh < G; hh++) {
            const struct sl_hash_fn *qf = sl_hash_query_fn(t->h, t->layer, g * G + hh);
            struct sl_hash_fn qg = grad_view(t, qf);
            memcpy(t->qc[hh].c, t->dcsum, sizeof(float) * (size_t)(Q * b));
            backward(qf, &qg, &t->qc[hh], t->qc[hh].c, Q, t->p.gamma, t->du, t->dr);
        }
    }
    t->grad = saved;
    *loss = (float)total;
    return 0;
}

int sl_hash_trainer_step(sl_hash_trainer *t, const struct sl_hash_train_seq *seq, float *loss) {
    int err = sl_hash_trainer_loss_grad(t, seq, loss, t->grad);
    if (err) return err;
    const struct sl_hash_train_params *p = &t->p;
    double norm2 = 0;
    for (int64_t i = 0; i < t->nw; i++) norm2 += (double)t->grad[i] * t->grad[i];
    const float clip = norm2 > (double)p->clip * p->clip ? p->clip / (float)sqrt(norm2) : 1.0f;
    const int64_t warm = (int64_t)(p->warmup_frac * (float)p->steps);
    const double pi = 3.14159265358979323846;
    double lr = t->t < warm ? p->lr * (double)(t->t + 1) / (double)warm
                            : p->lr * 0.5 * (1.0 + cos(pi * (double)(t->t - warm) /
                                                       (double)(p->steps > warm ? p->steps - warm : 1)));
    t->t++;
    const double bc1 = 1.0 - pow(p->beta1, (double)t->t), bc2 = 1.0 - pow(p->beta2, (double)t->t);
    for (int64_t i = 0; i < t->nw; i++) {
        float g = t->grad[i] * clip;
        t->m[i] = p->beta1 * t->m[i] + (1 - p->beta1) * g;
        t->v[i] = p->beta2 * t->v[i] + (1 - p->beta2) * g * g;
        double step = (t->m[i] / bc1) / (sqrt(t->v[i] / bc2) + p->eps) + p->weight_decay * t->w[i];
        t->w[i] -= (float)(lr * step);
    }
    return 0;
}
