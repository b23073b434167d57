/* Hash training (core/hash-train.c): the analytic gradient of the Bradley-Terry loss through
 * softsign, the projection and the MLP matches finite differences; training on a synthetic
 * "two narrow cones" q/k set (where SimHash, the untrained hash with a projection, ranks keys
 * poorly, as with real LLM queries and keys) lowers the loss and raises the held-out attention-mass recall of
 * the hard codes sl_hash_encode makes (so the trainer's forward pass is the encoder's). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash-eval.h"
#include "core/hash-train.h"
#include "core/hash.h"
#include "spotlight/error.h"

static uint64_t rng_state;
static double gauss(void) {
    rng_state += 0x9E3779B97F4A7C15ull;
    uint64_t z = rng_state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    double u1 = ((double)(z >> 11) + 1) * 0x1p-53;
    rng_state += 0x9E3779B97F4A7C15ull;
    uint64_t y = rng_state;
    y = (y ^ (y >> 30)) * 0xBF58476D1CE4E5B9ull;
    y = (y ^ (y >> 27)) * 0x94D049BB133111EBull;
    y ^= y >> 31;
    double u2 = (double)(y >> 11) * 0x1p-53;
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

/* q (n, hq, d), k (n, hkv, d): queries around mu e0, keys around mu e1 (orthogonal cones). */
static void two_cones(int32_t n, int32_t hq, int32_t hkv, int32_t d, float mu, float spread, float *q, float *k) {
    for (int32_t i = 0; i < n; i++) {
        for (int32_t h = 0; h < hq; h++)
            for (int32_t j = 0; j < d; j++)
                q[((int64_t)i * hq + h) * d + j] = (j == 0 ? mu : 0.0f) + spread * (float)gauss();
        for (int32_t h = 0; h < hkv; h++)
            for (int32_t j = 0; j < d; j++)
                k[((int64_t)i * hkv + h) * d + j] = (j == 1 ? mu : 0.0f) + spread * (float)gauss();
    }
}

static sl_hash *make_hash(int32_t hq, int32_t hkv, int32_t d, int32_t bits) {
    struct sl_hash_params p = sl_hash_default_params();
    p.n_layer = 1;
    p.n_head_q = hq;
    p.n_head_kv = hkv;
    p.head_dim = d;
    p.bits = bits;
    p.kind = SL_HASH_SPOTLIGHT;
    sl_hash *h;
    cr_assert_eq(sl_hash_create(&p, &h), 0, "%s", sl_error_detail());
    return h;
}

Test(hash_train, gradient_matches_finite_differences) {
    rng_state = 7;
    const int32_t n = 48, hq = 2, hkv = 1, d = 8;
    float *q = malloc(sizeof(float) * n * hq * d), *k = malloc(sizeof(float) * n * hkv * d);
    two_cones(n, hq, hkv, d, 16.0f, 1.0f, q, k);
    sl_hash *h = make_hash(hq, hkv, d, 64); /* b != d: MLP and projection */
    int64_t nw;
    float *w = sl_hash_layer_weights(h, 0, &nw);
    /* make the MLP matter: weights well away from zero */
    for (int64_t i = 0; i < nw; i++) w[i] += 0.2f * (float)gauss();
    struct sl_hash_train_params tp = sl_hash_train_default_params();
    tp.queries = 6;
    tp.pos_samples = 3;
    tp.neg_samples = 5;
    tp.min_pos = 8;
    tp.gamma = 0.5f; /* smooth enough for finite differences in f32 */
    sl_hash_trainer *t;
    cr_assert_eq(sl_hash_trainer_create(h, 0, &tp, n, &t), 0, "%s", sl_error_detail());
    struct sl_hash_train_seq seq = {q, k, n};
    float *grad = malloc(sizeof(float) * nw), *dummy = malloc(sizeof(float) * nw), loss, lp, lm;
    sl_hash_trainer_reseed(t, 99);
    cr_assert_eq(sl_hash_trainer_loss_grad(t, &seq, &loss, grad), 0);
    cr_assert(loss > 0);
    int checked = 0;
    for (int trial = 0; trial < 60; trial++) {
        int64_t i = (int64_t)((unsigned)(trial * 2654435761u) % (unsigned)nw);
        /* central differences at eps and eps/2, Richardson-extrapolated: the eps^2 error
         * term cancels, leaving float rounding (~1e-5 here) */
        const float keep = w[i];
        double cd[2];
        for (int e = 0; e < 2; e++) {
            float eps = e ? 1e-2f : 2e-2f;
            w[i] = keep + eps;
            sl_hash_trainer_reseed(t, 99);
            sl_hash_trainer_loss_grad(t, &seq, &lp, dummy);
            w[i] = keep - eps;
            sl_hash_trainer_reseed(t, 99);
            sl_hash_trainer_loss_grad(t, &seq, &lm, dummy);
            cd[e] = ((double)lp - lm) / (2.0 * ((double)(keep + eps) - keep));
        }
        w[i] = keep;
        double fd = (4 * cd[1] - cd[0]) / 3;
        if (fabs(fd) < 1e-4 && fabs(grad[i]) < 1e-4) continue;
        cr_assert(fabs(fd - grad[i]) <= 0.03 * fmax(fabs(fd), fabs(grad[i])) + 4e-5,
                  "weight %ld: analytic %g, finite differences %g", (long)i, grad[i], fd);
        checked++;
    }
    cr_assert(checked >= 30, "only %d weights had a measurable gradient", checked);
    sl_hash_trainer_free(t);
    sl_hash_free(h);
    free(grad);
    free(dummy);
    free(q);
    free(k);
}

/* Trains one fresh hash on two-cone data and returns the held-out recall before (*r0) and after.
 * perturb: every 7th training query component moved by one ulp, as another BLAS kernel's
 * rounding would move the trainer's intermediate values. */
static float train_two_cones(const float *q, const float *k, int32_t n, const struct sl_hash_train_seq *held,
                             uint64_t seed, bool perturb, float *r0) {
    const int32_t hq = 2, hkv = 1, d = 16;
    float *qp = malloc(sizeof(float) * n * hq * d);
    memcpy(qp, q, sizeof(float) * n * hq * d);
    if (perturb)
        for (int64_t i = 0; i < (int64_t)n * hq * d; i += 7) qp[i] = nextafterf(qp[i], INFINITY);
    sl_hash *h = make_hash(hq, hkv, d, 64);
    struct sl_hash_train_seq train = {qp, k, n};
    cr_assert_eq(sl_hash_attention_recall(h, 0, held, 0.05f, 128, 64, 5, r0), 0, "%s", sl_error_detail());
    struct sl_hash_train_params tp = sl_hash_train_default_params();
    tp.steps = 200;
    tp.queries = 32;
    tp.min_pos = 32;
    tp.lr = 1e-2f;
    tp.seed = seed;
    sl_hash_trainer *t;
    cr_assert_eq(sl_hash_trainer_create(h, 0, &tp, n, &t), 0);
    float first = 0, last = 0, loss, r1;
    for (int s = 0; s < tp.steps; s++) {
        cr_assert_eq(sl_hash_trainer_step(t, &train, &loss), 0);
        if (s < 20) first += loss / 20;
        if (s >= tp.steps - 20) last += loss / 20;
    }
    cr_assert(last < first * 0.9f, "loss %g -> %g", first, last);
    cr_assert_eq(sl_hash_attention_recall(h, 0, held, 0.05f, 128, 64, 5, &r1), 0);
    sl_hash_trainer_free(t);
    sl_hash_free(h);
    free(qp);
    return r1;
}

/* Training must generalise, and not by luck: on 2048 training positions every sampling seed,
 * with the inputs as they are and moved by one ulp, lands within a narrow band well above
 * SimHash. With 256 positions the hash memorises the training keys (training recall 0.98)
 * and its held-out recall is whatever the trajectory happens to give: 0.39 to 0.65 over six
 * seeds on one data draw, and OpenBLAS's AVX-512 and AVX2 kernels, whose rounding differs,
 * gave 0.516 and 0.663 there. That was the old test's failure, not a BLAS error. */
Test(hash_train, two_cones_training_raises_recall_robustly, .timeout = 120) {
    rng_state = 4;
    const int32_t n = 2048, nh = 1024, hq = 2, hkv = 1, d = 16;
    float *q2 = malloc(sizeof(float) * nh * hq * d), *k2 = malloc(sizeof(float) * nh * hkv * d);
    float *q = malloc(sizeof(float) * n * hq * d), *k = malloc(sizeof(float) * n * hkv * d);
    two_cones(nh, hq, hkv, d, 16.0f, 1.0f, q2, k2); /* held out */
    two_cones(n, hq, hkv, d, 16.0f, 1.0f, q, k);
    struct sl_hash_train_seq held = {q2, k2, nh};
    float lo = 1, hi = 0, r0 = 0;
    for (uint64_t seed = 1; seed <= 3; seed++)
        for (int perturb = 0; perturb < 2; perturb++) {
            float r1 = train_two_cones(q, k, n, &held, seed, perturb, &r0);
            cr_log_info("two cones, seed %d%s: held-out recall at 5%%: %.3f -> %.3f", (int)seed,
                        perturb ? ", inputs moved by one ulp" : "", r0, r1);
            cr_assert(r1 > r0 + 0.2f, "seed %d%s: recall %g -> %g", (int)seed, perturb ? " (perturbed)" : "", r0, r1);
            lo = fminf(lo, r1);
            hi = fmaxf(hi, r1);
        }
    cr_assert(hi - lo < 0.1f, "held-out recall spread %.3f .. %.3f over seeds and one-ulp perturbations", lo, hi);
    free(q);
    free(k);
    free(q2);
    free(k2);
}
