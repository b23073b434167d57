/* The packaged models (fetched by tools/fetch-model.sh): the default SmolLM2-135M-Instruct
 * Q4_1 and the long-context Qwen2.5-Coder-0.5B-Instruct Q4_K_M load with the right
 * hyperparameters, and every tensor dequantizes to what llama.cpp's gguf-py computes
 * (tests/fixtures/<model>-dequant.tsv, made by tools/ref/make-model-fixtures.py). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/error.h"
#include "spotlight/model.h"
#include "spotlight/quant.h"
#include "tests/model-cache.h"

#define SMOLLM2 TEST_SMOLLM2
#define QWEN25 TEST_QWEN25
#define load test_load_model

Test(smollm2, hyperparameters) {
    sl_model *m = load(SMOLLM2);
    const struct sl_model_config *c = sl_model_config(m);
    cr_assert_eq(c->arch, SL_ARCH_LLAMA);
    cr_assert_str_eq(c->arch_name, "llama");
    cr_assert_eq(c->n_layer, 30);
    cr_assert_eq(c->n_embd, 576);
    cr_assert_eq(c->n_ff, 1536);
    cr_assert_eq(c->n_head, 9);
    cr_assert_eq(c->n_head_kv, 3);
    cr_assert_eq(c->head_dim, 64);
    cr_assert_eq(c->n_rot, 64);
    cr_assert_eq(c->n_vocab, 49152);
    cr_assert_eq(c->n_ctx_train, 8192);
    cr_assert_eq(c->rope_theta, 100000.0f);
    cr_assert_eq(c->rope_type, SL_ROPE_NORM);
    cr_assert_eq(c->rope_scaling, SL_ROPE_SCALING_NONE);
    cr_assert_float_eq(c->norm_eps, 1e-5f, 1e-12f);
    cr_assert(c->tied_embeddings);
    cr_assert(!c->qkv_bias);
    cr_assert_eq(c->tokenizer, SL_TOKENIZER_BPE);
    cr_assert_str_eq(c->tokenizer_pre, "smollm");
    cr_assert_eq(c->file_type, 3); /* mostly Q4_1 */
    cr_assert_eq(sl_model_config_kv_bytes_per_token(c, 2), 23040);
    cr_assert_eq(sl_model_output(m), sl_model_token_embd(m));
    cr_assert_eq(sl_model_token_embd(m)->type, SL_TYPE_Q8_0);
    cr_assert_eq(sl_model_layer(m, 29)->wq->type, SL_TYPE_Q4_1);
    cr_assert_eq(sl_model_layer(m, 0)->wk->ne[1], 192);
    cr_assert_null(sl_model_layer(m, 0)->bq);
    cr_assert_eq(sl_gguf_tensor_count(sl_model_gguf(m)), 272);
    sl_model_free(m);
}

/* Dequantizes every tensor and compares sums and sampled values with gguf-py's. */
static void check_dequant(const char *file, const char *fixture, int n_tensors) {
    sl_model *m = load(file);
    const sl_gguf *g = sl_model_gguf(m);
    char fpath[4096];
    snprintf(fpath, sizeof fpath, "%s/%s", SL_FIXTURE_DIR, fixture);
    FILE *f = fopen(fpath, "r");
    cr_assert_not_null(f, "missing fixture %s", fpath);
    char *line = NULL;
    size_t cap = 0;
    int n_checked = 0;
    float *buf = NULL;
    while (getline(&line, &cap, f) > 0) {
        if (line[0] == '#') continue;
        char name[128], type[16];
        long long n;
        double sum, sumsq;
        int off = 0;
        cr_assert_eq(sscanf(line, "%127s %15s %lld %lf %lf %n", name, type, &n, &sum, &sumsq, &off), 5);
        const struct sl_gguf_tensor *t = sl_gguf_find_tensor(g, name);
        cr_assert_not_null(t, "tensor %s missing", name);
        cr_assert_str_eq(sl_type_name(t->type), type);
        cr_assert_eq(t->n_elems, n);
        buf = realloc(buf, (size_t)n * sizeof *buf);
        cr_assert_not_null(buf);
        int rc = sl_dequant_f32(t->type, t->data, buf, n);
        cr_assert_eq(rc, 0, "%s: %s", name, sl_strerror(rc));
        double s = 0, s2 = 0;
        for (long long i = 0; i < n; i++) {
            s += buf[i];
            s2 += (double)buf[i] * buf[i];
        }
        /* Only the summation order differs (numpy sums pairwise): a relative 1e-9 of the
         * sum of magnitudes covers that and nothing else. */
        double tol = 1e-9 * sumsq + 1e-9 * fabs(sum) + 1e-6;
        cr_assert(fabs(s - sum) <= 1e-9 * (fabs(sum) + sqrt(sumsq) * sqrt((double)n)) + 1e-9,
                  "%s: sum %.17g vs gguf-py %.17g", name, s, sum);
        cr_assert(fabs(s2 - sumsq) <= tol, "%s: sum of squares %.17g vs %.17g", name, s2, sumsq);
        /* Samples must be bit-identical. */
        for (char *p = line + off; *p && *p != '\n';) {
            char *end;
            long long idx = strtoll(p, &end, 10);
            cr_assert_eq(*end, ':');
            float want = strtof(end + 1, &end);
            cr_assert(idx >= 0 && idx < n);
            cr_assert_eq(buf[idx], want, "%s[%lld] = %.9g, gguf-py %.9g", name, idx, buf[idx], want);
            while (*end == ' ') end++;
            p = end;
        }
        n_checked++;
    }
    cr_assert_eq(n_checked, n_tensors);
    free(buf);
    free(line);
    fclose(f);
    sl_model_free(m);
}

Test(smollm2, dequant_matches_gguf_py, .timeout = 300) {
    check_dequant(SMOLLM2, "smollm2-dequant.tsv", 272);
}

Test(qwen25, hyperparameters) {
    sl_model *m = load(QWEN25);
    const struct sl_model_config *c = sl_model_config(m);
    cr_assert_eq(c->arch, SL_ARCH_QWEN2);
    cr_assert_eq(c->n_layer, 24);
    cr_assert_eq(c->n_embd, 896);
    cr_assert_eq(c->n_ff, 4864);
    cr_assert_eq(c->n_head, 14);
    cr_assert_eq(c->n_head_kv, 2);
    cr_assert_eq(c->head_dim, 64);
    cr_assert_eq(c->n_vocab, 151936);
    cr_assert_eq(c->n_ctx_train, 32768);
    cr_assert_eq(c->rope_theta, 1000000.0f);
    cr_assert_eq(c->rope_type, SL_ROPE_NEOX);
    cr_assert_float_eq(c->norm_eps, 1e-6f, 1e-13f);
    cr_assert(c->qkv_bias);
    cr_assert(!c->tied_embeddings);
    cr_assert_str_eq(c->tokenizer_pre, "qwen2");
    cr_assert_eq(sl_model_output(m)->type, SL_TYPE_Q8_0);
    cr_assert_eq(sl_model_token_embd(m)->type, SL_TYPE_Q5_0);
    cr_assert_eq(sl_model_layer(m, 3)->bk->ne[0], 128);
    cr_assert_eq(sl_model_config_kv_bytes_per_token(c, 2), 12288);
    sl_model_free(m);
}

Test(qwen25, dequant_matches_gguf_py, .timeout = 600) {
    check_dequant(QWEN25, "qwen2.5-coder-dequant.tsv", 291);
}
