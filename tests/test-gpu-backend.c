/* The CUDA backend runs a whole context: logits on the GPU against the CPU backend's, for a
 * prefill over several chunks and for decode steps after it, dense attention; on a tiny model
 * built here (weights exact in bf16, so only the GPU's bf16 activations differ) and on the
 * default model when it is in the cache (the GPU multiplies bf16 weights, the CPU the
 * quantized ones in f32). Logits agree within a tolerance, and greedy tokens agree wherever the
 * CPU's top choice is clear. Skips without a device; CUDA is initialised inside the tests
 * (Criterion forks). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/context.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "tests/gguf-builder.h"
#include "tests/model-cache.h"
#include "tests/gpu-test-util.h"


/* A 2-layer llama (or qwen2, with biases) whose weights are multiples of 1/8 in [-0.75, 0.75]. */
static sl_model *tiny_model(const char *arch) {
    const struct gb_model_spec spec = {.arch = arch, .n_layer = 2, .n_embd = 256, .n_ff = 384, .n_head = 8,
                                       .n_head_kv = 2, .n_vocab = 300, .n_ctx = 1024, .tied = 1};
    sl_model *m = NULL;
    cr_assert_eq(gb_load_model(&spec, &m), 0, "%s", sl_error_detail());
    return m;
}

TestSuite(gpu_backend, .timeout = 300);

static sl_context *make(const sl_model *g_model, bool gpu, int64_t n_ctx) {
    struct sl_context_params p = sl_context_default_params();
    p.n_ctx = n_ctx;
    p.n_batch = 64;
    p.gpu = gpu;
    sl_context *c = NULL;
    cr_assert_eq(sl_context_create(g_model, &p, &c), 0, "%s", sl_error_detail());
    return c;
}

static int argmax(const float *l, int64_t n, float *margin) {
    int best = 0, second = -1;
    for (int64_t i = 1; i < n; i++)
        if (l[i] > l[best]) second = best, best = (int)i;
        else if (second < 0 || l[i] > l[second]) second = (int)i;
    *margin = l[best] - l[second];
    return best;
}

/* Prefill of 150 tokens (chunks of 64), then `steps` greedy decode steps on both backends; at
 * least min_clear of the steps must have a clear CPU choice (the tiny model's tied embedding
 * repeats rows, so its logits tie exactly and it has none). */
static void compare(const sl_model *g_model, double tol, int steps, int min_clear) {
    const int64_t V = sl_model_config(g_model)->n_vocab, n_prompt = 150;
    sl_context *cpu = make(g_model, false, 512), *gpu = make(g_model, true, 512);
    cr_assert_str_eq(sl_context_backend_name(gpu), "cuda");
    cr_assert_gt(sl_context_device_bytes(gpu), 0);
    int32_t toks[512];
    for (int64_t i = 0; i < n_prompt; i++) toks[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    /* the prefill spans three chunks of 64: the chunked attention path and its causal mask */
    cr_assert_eq(sl_context_eval(cpu, toks, n_prompt, true), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_context_eval(gpu, toks, n_prompt, true), 0, "%s", sl_error_detail());
    for (int64_t r = 0; r < n_prompt; r += 37)
        cr_assert_lt(rel_diff(sl_context_logits(cpu) + r * V, sl_context_logits(gpu) + r * V, V), tol,
                     "prefill row %lld", (long long)r);
    /* greedy decode from the CPU's choices, so both see the same tokens */
    int clear = 0;
    for (int64_t s = 0; s < steps; s++) {
        const float *lc = sl_context_logits(cpu), *lg = sl_context_logits(gpu);
        cr_assert_lt(rel_diff(lc, lg, V), tol, "decode step %lld", (long long)s);
        float mc, mg;
        int tc = argmax(lc, V, &mc), tg = argmax(lg, V, &mg);
        if (mc > 0.5f) {
            cr_assert_eq(tc, tg, "step %lld: CPU picks %d (margin %.3f), GPU %d", (long long)s, tc, mc, tg);
            clear++;
        }
        int32_t t = tc;
        cr_assert_eq(sl_context_eval(cpu, &t, 1, false), 0, "%s", sl_error_detail());
        cr_assert_eq(sl_context_eval(gpu, &t, 1, false), 0, "%s", sl_error_detail());
    }
    cr_assert_geq(clear, min_clear, "too few clear greedy choices to compare (%d)", clear);
    sl_context_free(cpu);
    sl_context_free(gpu);
}

Test(gpu_backend, tiny_llama_logits_match_the_cpu) {
    require_gpu();
    sl_model *m = tiny_model("llama");
    compare(m, 0.02, 24, 0);
    sl_model_free(m);
}

Test(gpu_backend, tiny_qwen2_with_biases_matches_the_cpu) {
    require_gpu();
    sl_model *m = tiny_model("qwen2");
    compare(m, 0.02, 8, 0);
    sl_model_free(m);
}

Test(gpu_backend, default_model_logits_match_the_cpu) {
    require_gpu();
    char path[4096];
    test_model_path(TEST_SMOLLM2, path, sizeof path);
    if (access(path, R_OK) != 0) cr_skip_test("%s is not in the cache (tools/fetch-model.sh)", TEST_SMOLLM2);
    sl_model *m = test_load_model(TEST_SMOLLM2);
    compare(m, 0.03, 24, 6);
    sl_model_free(m);
}
