/* Token sampling (see include/spotlight/sampler.h). All buffers are allocated at creation. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "spotlight/sampler.h"

struct cand {
    int32_t id;
    float logit;
};

struct sl_sampler {
    struct sl_sampler_params p;
    int32_t n_vocab;
    struct cand *cands; /* (n_vocab) */
    float *probs;       /* (n_vocab) */
    int32_t *history;   /* ring of the last repeat_last_n tokens */
    int32_t n_hist, hist_pos;
    uint64_t rng[4];
};

struct sl_sampler_params sl_sampler_default_params(void) {
    return (struct sl_sampler_params){.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                                      .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
}

/* xoshiro256** seeded by splitmix64: fast, and the same sequence on every platform. */
static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static double next_unit(uint64_t s[4]) { return (double)(next_u64(s) >> 11) * 0x1p-53; }

int sl_sampler_create(const struct sl_sampler_params *p, int32_t n_vocab, sl_sampler **out) {
    struct sl_sampler_params pp = p ? *p : sl_sampler_default_params();
    if (n_vocab <= 0) return sl_fail(SL_EINVAL, "vocabulary size %d", n_vocab);
    if (!isfinite(pp.temp) || !isfinite(pp.top_p) || !isfinite(pp.min_p) || pp.top_p <= 0 ||
        pp.min_p < 0 || pp.min_p > 1 || !(pp.repeat_penalty > 0) || pp.repeat_last_n < 0)
        return sl_fail(SL_EINVAL, "sampler parameters out of range (temp %g, top_p %g, min_p %g, "
                       "repeat penalty %g, last_n %d)", (double)pp.temp, (double)pp.top_p,
                       (double)pp.min_p, (double)pp.repeat_penalty, pp.repeat_last_n);
    sl_sampler *s = calloc(1, sizeof *s);
    if (!s) return sl_fail(SL_ENOMEM, "out of memory");
    s->p = pp;
    s->n_vocab = n_vocab;
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    s->probs = malloc((size_t)n_vocab * sizeof *s->probs);
    s->history = malloc(((size_t)pp.repeat_last_n + 1) * sizeof *s->history);
    if (!s->cands || !s->probs || !s->history) {
        sl_sampler_free(s);
        return sl_fail(SL_ENOMEM, "out of memory");
    }
    uint64_t x = pp.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix(&x);
    *out = s;
    return 0;
}

void sl_sampler_free(sl_sampler *s) {
    if (!s) return;
    free(s->cands);
    free(s->probs);
    free(s->history);
    free(s);
}

void sl_sampler_accept(sl_sampler *s, int32_t token) {
    if (s->p.repeat_last_n <= 0) return;
    s->history[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->n_hist < s->p.repeat_last_n) s->n_hist++;
}

static int cmp_desc(const void *a, const void *b) {
    float x = ((const struct cand *)a)->logit, y = ((const struct cand *)b)->logit;
    if (x != y) return x > y ? -1 : 1;
    return ((const struct cand *)a)->id - ((const struct cand *)b)->id; /* stable ties */
}

/* Moves the k largest candidates to the front, sorted (quickselect, then sort k). */
static void top_k_sorted(struct cand *c, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n - 1;
    while (lo < hi && k < n) {
        struct cand pivot = c[(lo + hi) / 2];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (cmp_desc(&c[i], &pivot) < 0) i++;
            while (cmp_desc(&c[j], &pivot) > 0) j--;
            if (i <= j) {
                struct cand t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
    qsort(c, (size_t)k, sizeof *c, cmp_desc);
}

int32_t sl_sampler_sample(sl_sampler *s, const float *logits) {
    const int32_t nv = s->n_vocab;
    struct cand *c = s->cands;
    for (int32_t i = 0; i < nv; i++) c[i] = (struct cand){i, logits[i]};
    /* Repetition penalty as llama.cpp: divide positive logits, multiply negative ones. */
    if (s->p.repeat_penalty != 1.0f)
        for (int32_t h = 0; h < s->n_hist; h++) {
            int32_t id = s->history[h];
            if (id < 0 || id >= nv) continue;
            bool seen = false; /* penalise each token once however often it appears */
            for (int32_t e = 0; e < h; e++) seen |= s->history[e] == id;
            if (seen) continue;
            c[id].logit = c[id].logit > 0 ? c[id].logit / s->p.repeat_penalty : c[id].logit * s->p.repeat_penalty;
        }
    if (s->p.temp <= 0) {
        int32_t best = 0;
        for (int32_t i = 1; i < nv; i++)
            if (c[i].logit > c[best].logit) best = i;
        return c[best].id;
    }
    int32_t n = nv;
    int32_t k = s->p.top_k > 0 && s->p.top_k < nv ? s->p.top_k : nv;
    top_k_sorted(c, n, k);
    n = k;
    /* softmax of the (unscaled) kept logits for top-p and min-p, as llama.cpp's chain does */
    float *p = s->probs;
    double sum = 0;
    for (int32_t i = 0; i < n; i++) sum += p[i] = expf(c[i].logit - c[0].logit);
    if (s->p.top_p < 1.0f) {
        double cum = 0;
        int32_t keep = n;
        for (int32_t i = 0; i < n; i++) {
            cum += p[i] / sum;
            if (cum >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (s->p.min_p > 0) {
        int32_t keep = 1;
        while (keep < n && p[keep] >= s->p.min_p * p[0]) keep++; /* p[0] is the max (sorted) */
        n = keep;
    }
    sum = 0;
    for (int32_t i = 0; i < n; i++) sum += p[i] = expf((c[i].logit - c[0].logit) / s->p.temp);
    double r = next_unit(s->rng) * sum, acc = 0;
    for (int32_t i = 0; i < n; i++) {
        acc += p[i];
        if (r < acc) return c[i].id;
    }
    return c[n - 1].id;
}
