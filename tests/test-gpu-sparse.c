/* Sparse decode on the CUDA backend against the CPU's: a context on the GPU with spotlight or
 * simhash attention (codes in VRAM, the K/V in pinned host memory or a store file, fetched per
 * token) gives the logits of the CPU context with the same attention and its K/V in a store
 * file, within the GPU's bf16 tolerance, and selects as many positions (exactly at token
 * level; at block level the count depends on which blocks were chosen, and bf16 activations
 * may tip a near tie). That the GPU's selection equals the CPU's on equal codes is
 * test-gpu-retrieval's; the engine's device path against the CPU, bit for bit, is
 * test-device-sparse's (an emulated device). Prefill chunks run the host path on both, so the
 * stores hold the same K/V up to the GPU's activations. Skips without a device. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/context.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "tests/gguf-builder.h"
#include "tests/gpu-test-util.h"
#include "tests/model-cache.h"

TestSuite(gpu_sparse, .timeout = 600);

static sl_model *tiny_model(void) {
    const struct gb_model_spec spec = {.arch = "llama", .n_layer = 3, .n_embd = 256, .n_ff = 384, .n_head = 8,
                                       .n_head_kv = 2, .n_vocab = 300, .n_ctx = 2048, .tied = 0};
    sl_model *m = NULL;
    cr_assert_eq(gb_load_model(&spec, &m), 0, "%s", sl_error_detail());
    return m;
}

/* A context with attention a; kv_file: its K/V in a new store file (its name into path). */
static sl_context *make(const sl_model *m, bool gpu, const struct sl_attn_params *a, bool kv_file, char *path) {
    struct sl_context_params p = sl_context_default_params();
    p.n_ctx = 2048;
    p.n_batch = 128;
    p.gpu = gpu;
    if (kv_file) {
        strcpy(path, "/tmp/sl-gpu-sparse-kv-XXXXXX");
        int fd = mkstemp(path);
        cr_assert(fd >= 0);
        close(fd);
        p.kv_path = path;
    }
    sl_context *c = NULL;
    cr_assert_eq(sl_context_create(m, &p, &c), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_context_set_attention(c, a), 0, "%s", sl_error_detail());
    return c;
}

static int argmax(const float *l, int64_t n) {
    int best = 0;
    for (int64_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = (int)i;
    return best;
}

/* Prefill n_prompt tokens, then `steps` decode steps fed the CPU's greedy choices. */
static void compare(const sl_model *m, const struct sl_attn_params *a, bool gpu_file, int64_t n_prompt, int steps,
                    double tol) {
    const int64_t V = sl_model_config(m)->n_vocab;
    char cpu_path[64], gpu_path[64];
    sl_context *cpu = make(m, false, a, true, cpu_path), *gpu = make(m, true, a, gpu_file, gpu_path);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)n_prompt);
    for (int64_t i = 0; i < n_prompt; i++) toks[i] = (int32_t)(1 + (i * 7919 + i / 13) % (V - 1));
    cr_assert_eq(sl_context_eval(cpu, toks, n_prompt, false), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_context_eval(gpu, toks, n_prompt, false), 0, "%s", sl_error_detail());
    cr_assert_lt(rel_diff(sl_context_logits(cpu), sl_context_logits(gpu), V), tol, "after the prefill");
    for (int s = 0; s < steps; s++) {
        int32_t t = argmax(sl_context_logits(cpu), V);
        cr_assert_eq(sl_context_eval(cpu, &t, 1, false), 0, "%s", sl_error_detail());
        cr_assert_eq(sl_context_eval(gpu, &t, 1, false), 0, "%s", sl_error_detail());
        cr_assert_lt(rel_diff(sl_context_logits(cpu), sl_context_logits(gpu), V), tol, "decode step %d", s);
    }
    struct sl_attn_stats sc, sg;
    sl_context_attn_stats(cpu, &sc);
    sl_context_attn_stats(gpu, &sg);
    cr_assert_gt(sg.sparse_calls, 0);
    cr_assert_eq(sg.sparse_calls, sc.sparse_calls);
    cr_assert_eq(sg.candidates, sc.candidates);
    cr_assert_lt(sg.selected, sg.candidates, "the budget must drop positions for the test to mean anything");
    /* token level: the count is forced + k whatever was chosen; block level it depends on the
     * blocks, which bf16 activations may tip where two blocks score alike */
    if (a->block == 1)
        cr_assert_eq(sg.selected, sc.selected, "positions selected: GPU %lld, CPU %lld", (long long)sg.selected,
                     (long long)sc.selected);
    else
        cr_assert_lt(fabs((double)sg.selected / (double)sc.selected - 1), 0.05, "positions selected: GPU %lld, CPU %lld",
                     (long long)sg.selected, (long long)sc.selected);
    cr_assert_gt(sg.dev_bytes_in, 0, "the GPU fetched no K/V");
    cr_assert_gt(sg.dev_rows, 0);
    cr_assert_gt(sl_context_device_bytes(gpu), 0);
    free(toks);
    sl_context_free(cpu);
    sl_context_free(gpu);
    for (int i = 0; i < 1 + gpu_file; i++) { /* the stores and the key codes saved beside them */
        char codes[80];
        snprintf(codes, sizeof codes, "%s.codes", i ? gpu_path : cpu_path);
        unlink(i ? gpu_path : cpu_path);
        unlink(codes);
    }
}

static struct sl_attn_params simhash(int32_t block) {
    struct sl_attn_params a = sl_attn_default_params(SL_ATTN_SIMHASH);
    a.dense_layers = 1;
    a.min_tokens = 32;
    a.n_window = 32;
    a.block = block;
    return a;
}

Test(gpu_sparse, simhash_tokens_host_tier_matches_the_cpu) {
    require_gpu();
    sl_model *m = tiny_model();
    struct sl_attn_params a = simhash(1);
    compare(m, &a, false, 700, 24, 0.02);
    sl_model_free(m);
}

Test(gpu_sparse, simhash_blocks_file_tier_matches_the_cpu) {
    require_gpu();
    sl_model *m = tiny_model();
    struct sl_attn_params a = simhash(16);
    compare(m, &a, true, 700, 24, 0.02);
    sl_model_free(m);
}

Test(gpu_sparse, default_model_spotlight_matches_the_cpu) {
    require_gpu();
    char path[4096], hash[4200];
    test_model_path(TEST_SMOLLM2, path, sizeof path);
    if (access(path, R_OK) != 0) cr_skip_test("%s is not in the cache (tools/fetch-model.sh)", TEST_SMOLLM2);
    snprintf(hash, sizeof hash, "%.*s/hash/%s.b64.slhash", (int)(strrchr(path, '/') - path), path, TEST_SMOLLM2);
    if (access(hash, R_OK) != 0) cr_skip_test("no trained hash in the cache (tools/make-hash.sh)");
    sl_model *m = test_load_model(TEST_SMOLLM2);
    struct sl_attn_params a = sl_attn_default_params(SL_ATTN_SPOTLIGHT);
    a.hash_path = hash;
    compare(m, &a, false, 1500, 16, 0.03);
    sl_model_free(m);
}

Test(gpu_sparse, what_the_gpu_lacks_is_refused_with_a_reason) {
    require_gpu();
    sl_model *m = tiny_model();
    struct sl_context_params p = sl_context_default_params();
    p.n_ctx = 512;
    p.gpu = true;
    sl_context *c = NULL;
    cr_assert_eq(sl_context_create(m, &p, &c), 0, "%s", sl_error_detail());
    struct sl_attn_params a = sl_attn_default_params(SL_ATTN_TOPK_EXACT);
    cr_assert_eq(sl_context_set_attention(c, &a), SL_EUNSUPPORTED);
    cr_assert(strstr(sl_error_detail(), "cuda"), "%s", sl_error_detail());
    a = simhash(1);
    a.rerank = 4;
    cr_assert_eq(sl_context_set_attention(c, &a), SL_EUNSUPPORTED);
    sl_context_free(c);
    sl_model_free(m);
}
