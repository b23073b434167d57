/* Sampling: greedy, repetition penalty, and the distributions temperature / top-k / top-p /
 * min-p leave, checked by frequency over many seeded draws. */
#include <criterion/criterion.h>
#include <math.h>

#include "spotlight/error.h"
#include "spotlight/sampler.h"

/* logits of probabilities 0.1, 0.2, 0.3, 0.4 (ids 0..3) */
static const float k_logits[4] = {-2.302585f, -1.609438f, -1.203973f, -0.916291f};

static void frequencies(struct sl_sampler_params p, int n, double freq[4]) {
    sl_sampler *s;
    cr_assert_eq(sl_sampler_create(&p, 4, &s), 0);
    int count[4] = {0};
    for (int i = 0; i < n; i++) count[sl_sampler_sample(s, k_logits)]++;
    for (int i = 0; i < 4; i++) freq[i] = (double)count[i] / n;
    sl_sampler_free(s);
}

static struct sl_sampler_params plain(void) {
    return (struct sl_sampler_params){.temp = 1, .top_k = 0, .top_p = 1, .min_p = 0,
                                      .repeat_penalty = 1, .repeat_last_n = 64, .seed = 42};
}

Test(sampler, greedy_and_penalty) {
    struct sl_sampler_params p = plain();
    p.temp = 0;
    p.repeat_penalty = 2.0f;
    sl_sampler *s;
    cr_assert_eq(sl_sampler_create(&p, 4, &s), 0);
    cr_assert_eq(sl_sampler_sample(s, k_logits), 3);
    sl_sampler_accept(s, 3); /* -0.916 * 2 = -1.83 < -1.20: id 2 wins now */
    cr_assert_eq(sl_sampler_sample(s, k_logits), 2);
    float pos[4] = {1.0f, 3.0f, 2.5f, 0.0f};
    sl_sampler_accept(s, 1); /* 3.0 / 2 = 1.5 < 2.5 */
    cr_assert_eq(sl_sampler_sample(s, pos), 2);
    sl_sampler_free(s);
}

Test(sampler, temperature_one_follows_softmax) {
    double f[4];
    frequencies(plain(), 200000, f);
    for (int i = 0; i < 4; i++) cr_assert(fabs(f[i] - 0.1 * (i + 1)) < 0.006, "id %d freq %g", i, f[i]);
}

Test(sampler, low_temperature_sharpens) {
    struct sl_sampler_params p = plain();
    p.temp = 0.5f; /* p ~ q^2: 0.01, 0.04, 0.09, 0.16 over 0.30 */
    double f[4];
    frequencies(p, 200000, f);
    double want[4] = {0.01 / 0.30, 0.04 / 0.30, 0.09 / 0.30, 0.16 / 0.30};
    for (int i = 0; i < 4; i++) cr_assert(fabs(f[i] - want[i]) < 0.006, "id %d freq %g want %g", i, f[i], want[i]);
}

Test(sampler, top_k_top_p_min_p) {
    double f[4];
    struct sl_sampler_params p = plain();
    p.top_k = 2; /* {0.4, 0.3} renormalised */
    frequencies(p, 100000, f);
    cr_assert(f[0] == 0 && f[1] == 0);
    cr_assert(fabs(f[3] - 4.0 / 7) < 0.01);
    p = plain();
    p.top_p = 0.5f; /* 0.4 < 0.5, 0.4 + 0.3 >= 0.5: keep two */
    frequencies(p, 100000, f);
    cr_assert(f[0] == 0 && f[1] == 0 && fabs(f[3] - 4.0 / 7) < 0.01);
    p = plain();
    p.top_p = 0.35f; /* the first alone covers it */
    frequencies(p, 1000, f);
    cr_assert_eq(f[3], 1.0);
    p = plain();
    p.min_p = 0.6f; /* keep p >= 0.24: 0.4, 0.3 */
    frequencies(p, 100000, f);
    cr_assert(f[0] == 0 && f[1] == 0 && fabs(f[2] - 3.0 / 7) < 0.01);
    p = plain();
    p.top_k = 1;
    frequencies(p, 1000, f);
    cr_assert_eq(f[3], 1.0);
}

Test(sampler, seeds_reproduce) {
    struct sl_sampler_params p = plain();
    sl_sampler *a, *b, *c;
    cr_assert_eq(sl_sampler_create(&p, 4, &a), 0);
    cr_assert_eq(sl_sampler_create(&p, 4, &b), 0);
    p.seed = 43;
    cr_assert_eq(sl_sampler_create(&p, 4, &c), 0);
    int same = 1, diff = 0;
    for (int i = 0; i < 200; i++) {
        int x = sl_sampler_sample(a, k_logits), y = sl_sampler_sample(b, k_logits), z = sl_sampler_sample(c, k_logits);
        same &= x == y;
        diff += x != z;
    }
    cr_assert(same);
    cr_assert(diff > 20);
    sl_sampler_free(a);
    sl_sampler_free(b);
    sl_sampler_free(c);
}

Test(sampler, large_vocab_top_k_is_the_k_best) {
    enum { V = 50000 };
    static float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)((i * 7919) % V) / V; /* a permutation */
    struct sl_sampler_params p = plain();
    p.top_k = 5;
    p.temp = 100; /* nearly uniform over the kept 5 */
    sl_sampler *s;
    cr_assert_eq(sl_sampler_create(&p, V, &s), 0);
    for (int i = 0; i < 2000; i++) {
        int id = sl_sampler_sample(s, logits);
        cr_assert(logits[id] >= (float)(V - 5) / V, "id %d logit %g is not in the top 5", id, logits[id]);
    }
    sl_sampler_free(s);
}

Test(sampler, bad_parameters) {
    sl_sampler *s;
    struct sl_sampler_params p = plain();
    p.top_p = 0;
    cr_assert_eq(sl_sampler_create(&p, 4, &s), SL_EINVAL);
    p = plain();
    p.min_p = 1.5f;
    cr_assert_eq(sl_sampler_create(&p, 4, &s), SL_EINVAL);
    p = plain();
    p.repeat_penalty = 0;
    cr_assert_eq(sl_sampler_create(&p, 4, &s), SL_EINVAL);
    p = plain();
    p.temp = NAN;
    cr_assert_eq(sl_sampler_create(&p, 4, &s), SL_EINVAL);
    cr_assert_eq(sl_sampler_create(NULL, 0, &s), SL_EINVAL);
}
