/* The forward pass against llama.cpp (tests/fixtures/logits-<model>.bin, written by
 * tools/ref/make-logit-fixtures.py; format documented there): top-20 logits at every position
 * of real-text prompts of 64 to 2048 tokens, and 64-token greedy generations from chat
 * prompts.
 *
 * Why not "identical top-1 everywhere": both engines round every matmul's activations to 8-bit
 * blocks, so a last-bit difference anywhere (summation order) can move a value by a whole
 * quantization step; llama.cpp does not reproduce itself across its own batch sizes or
 * attention kernels to better than ~0.7 logits (median of the per-position maximum) and
 * ~97% top-1 agreement. So the checks are: where llama.cpp's top-1 leads by more than
 * MARGIN, ours is the same token; overall top-1 agreement; logit and NLL errors bounded by
 * what was measured; greedy generations identical up to the first near-tie. The bounds below
 * sit above the values this test prints (measured on the commit that set them). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/context.h"
#include "spotlight/error.h"
#include "tests/model-cache.h"

#define K 20

struct row {
    float lse, next;
    int32_t id[K];
    float logit[K];
};

struct record {
    uint32_t kind;
    char name[64];
    int32_t *prompt, *gen;
    uint32_t n_prompt, n_gen, n_rows;
    struct row *rows;
};

struct fixture {
    uint32_t n_vocab, n_records;
    struct record *rec;
};

static uint32_t rd_u32(FILE *f) {
    uint8_t b[4];
    cr_assert_eq(fread(b, 1, 4, f), 4, "fixture truncated");
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void rd(FILE *f, void *p, size_t n) { cr_assert_eq(fread(p, 1, n, f), n, "fixture truncated"); }

static void load_fixture(const char *name, struct fixture *fx) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", SL_FIXTURE_DIR, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "missing %s", path);
    char magic[4];
    rd(f, magic, 4);
    cr_assert_eq(memcmp(magic, "SLLG", 4), 0);
    cr_assert_eq(rd_u32(f), 1);
    uint32_t h = rd_u32(f);
    fseek(f, h, SEEK_CUR);
    fx->n_vocab = rd_u32(f);
    cr_assert_eq(rd_u32(f), K);
    fx->n_records = rd_u32(f);
    fx->rec = calloc(fx->n_records, sizeof *fx->rec);
    for (uint32_t r = 0; r < fx->n_records; r++) {
        struct record *rc = &fx->rec[r];
        rc->kind = rd_u32(f);
        uint32_t l = rd_u32(f);
        cr_assert(l < sizeof rc->name);
        rd(f, rc->name, l);
        rc->n_prompt = rd_u32(f);
        rc->prompt = malloc(sizeof(int32_t) * rc->n_prompt);
        rd(f, rc->prompt, sizeof(int32_t) * rc->n_prompt);
        rc->n_gen = rd_u32(f);
        rc->gen = malloc(sizeof(int32_t) * (rc->n_gen + 1));
        rd(f, rc->gen, sizeof(int32_t) * rc->n_gen);
        rc->n_rows = rd_u32(f);
        rc->rows = malloc(sizeof(struct row) * rc->n_rows);
        for (uint32_t i = 0; i < rc->n_rows; i++) {
            struct row *w = &rc->rows[i];
            rd(f, &w->lse, 4);
            rd(f, &w->next, 4);
            for (int k = 0; k < K; k++) {
                rd(f, &w->id[k], 4);
                rd(f, &w->logit[k], 4);
            }
        }
    }
    fclose(f);
}

static int32_t argmax(const float *l, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

static float logsumexp(const float *l, int32_t n) {
    float m = l[argmax(l, n)];
    double s = 0;
    for (int32_t i = 0; i < n; i++) s += exp((double)(l[i] - m));
    return m + (float)log(s);
}

struct bounds {
    float margin;          /* llama.cpp's top-1 lead above which ours must agree */
    float min_agree;       /* overall top-1 agreement */
    float max_logit_err;   /* over the reference top-20 of every row */
    float mean_logit_err;
    float mean_nll_err;    /* |our NLL - llama.cpp's NLL| of the next prompt token, averaged */
};

static void check_model(const char *model_file, const char *fixture, struct bounds b) {
    struct fixture fx;
    load_fixture(fixture, &fx);
    sl_model *m = test_load_model(model_file);
    const int32_t nv = (int32_t)fx.n_vocab;
    cr_assert_eq(nv, sl_model_config(m)->n_vocab);
    for (uint32_t r = 0; r < fx.n_records; r++) {
        struct record *rc = &fx.rec[r];
        struct sl_context_params p = sl_context_default_params();
        p.n_ctx = rc->n_prompt + rc->n_gen + 8;
        p.n_threads = 2;
        p.n_batch = 512;
        sl_context *c;
        cr_assert_eq(sl_context_create(m, &p, &c), 0);
        if (rc->kind == 0) {
            cr_assert_eq(sl_context_eval(c, rc->prompt, rc->n_prompt, true), 0, "%s", sl_error_detail());
            const float *lg = sl_context_logits(c);
            int agree = 0, confident = 0;
            double err_sum = 0, nll_sum = 0;
            float err_max = 0;
            for (uint32_t i = 0; i < rc->n_rows; i++) {
                const struct row *w = &rc->rows[i];
                const float *l = lg + (size_t)i * nv;
                int32_t top = argmax(l, nv);
                agree += top == w->id[0];
                if (w->logit[0] - w->logit[1] > b.margin) {
                    confident++;
                    cr_assert_eq(top, w->id[0], "%s %s pos %u: ours %d, llama.cpp %d leading by %.3f",
                                 model_file, rc->name, i, top, w->id[0], w->logit[0] - w->logit[1]);
                }
                for (int k = 0; k < K; k++) {
                    float e = fabsf(l[w->id[k]] - w->logit[k]);
                    err_sum += e;
                    err_max = fmaxf(err_max, e);
                }
                if (i + 1 < rc->n_rows) {
                    float ours = logsumexp(l, nv) - l[rc->prompt[i + 1]], ref = w->lse - w->next;
                    nll_sum += fabsf(ours - ref);
                }
            }
            float agree_frac = (float)agree / (float)rc->n_rows, err_mean = (float)(err_sum / (rc->n_rows * K));
            float nll_mean = (float)(nll_sum / (rc->n_rows - 1));
            fprintf(stderr, "reference %s %s: top-1 %d/%u (%.1f%%; %d rows with margin > %.2f all agree), "
                            "logit err max %.3f mean %.4f, |NLL diff| mean %.4f\n",
                    model_file, rc->name, agree, rc->n_rows, 100 * agree_frac, confident, (double)b.margin,
                    (double)err_max, (double)err_mean, (double)nll_mean);
            cr_assert(agree_frac >= b.min_agree, "%s %s: top-1 agreement %.3f", model_file, rc->name, (double)agree_frac);
            cr_assert(err_max <= b.max_logit_err, "%s %s: max logit error %.3f", model_file, rc->name, (double)err_max);
            cr_assert(err_mean <= b.mean_logit_err, "%s %s: mean logit error %.4f", model_file, rc->name, (double)err_mean);
            cr_assert(nll_mean <= b.mean_nll_err, "%s %s: mean NLL difference %.4f", model_file, rc->name, (double)nll_mean);
        } else {
            /* Greedy: identical until llama.cpp itself faced a near-tie. */
            cr_assert_eq(sl_context_eval(c, rc->prompt, rc->n_prompt, false), 0);
            uint32_t same = 0;
            for (uint32_t j = 0; j < rc->n_gen; j++) {
                const struct row *w = &rc->rows[j];
                int32_t top = argmax(sl_context_logits(c), nv);
                if (top != rc->gen[j]) {
                    cr_assert(w->logit[0] - w->logit[1] <= b.margin,
                              "%s %s: greedy token %u is %d, llama.cpp chose %d with a lead of %.3f",
                              model_file, rc->name, j, top, rc->gen[j], w->logit[0] - w->logit[1]);
                    break;
                }
                same++;
                cr_assert_eq(sl_context_eval(c, &rc->gen[j], 1, false), 0);
            }
            fprintf(stderr, "reference %s %s: greedy identical for %u of %u tokens\n", model_file, rc->name,
                    same, rc->n_gen);
        }
        sl_context_free(c);
    }
    sl_model_free(m);
}

/* Measured (2 threads, this CPU): top-1 92.2-98.4% per prompt, every row with a lead > 1.0
 * agreeing; top-20 logit error max 1.42, mean 0.136-0.144; mean |NLL diff| 0.058-0.065;
 * greedy identical for 19-23 and 38-42 of 64 tokens (by kernel version), each divergence at a
 * llama.cpp lead <= 1.0.
 * llama.cpp against its own fixture: flash attention on keeps 19 and 42 of 64 greedy tokens,
 * token-by-token prompt processing 4 and 55. */
Test(reference, smollm2_vs_llama_cpp, .timeout = 900) {
    check_model(TEST_SMOLLM2, "logits-smollm2.bin",
                (struct bounds){.margin = 1.0f, .min_agree = 0.90f, .max_logit_err = 2.0f,
                                .mean_logit_err = 0.2f, .mean_nll_err = 0.1f});
}

/* Measured: top-1 95.3-98.4%; logit error max 0.68, mean 0.057-0.058; mean |NLL diff|
 * 0.034-0.045; greedy identical for 64 and 33 of 64 tokens. (The K-quant layers multiply
 * against f32 activations here where llama.cpp uses 8-bit ones.) */
Test(reference, qwen25_vs_llama_cpp, .timeout = 900) {
    check_model(TEST_QWEN25, "logits-qwen2.5-coder.bin",
                (struct bounds){.margin = 1.0f, .min_agree = 0.92f, .max_logit_err = 1.0f,
                                .mean_logit_err = 0.1f, .mean_nll_err = 0.07f});
}
