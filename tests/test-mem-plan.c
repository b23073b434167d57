/* The memory plan (core/mem-plan.h) on a tiny model built here: byte counts derived by hand
 * from the model's shape, agreement with what a real context allocates, and the longest
 * context a budget holds. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/mem-plan.h"
#include "spotlight/context.h"
#include "spotlight/error.h"
#include "tests/gguf-builder.h"

/* 2 layers, n_embd 64, n_ff 96, 4 heads of 16, 2 KV heads, 40 tokens, tied head, F32. */
static const struct gb_model_spec k_spec = {.arch = "llama", .n_layer = 2, .n_embd = 64, .n_ff = 96, .n_head = 4,
                                            .n_head_kv = 2, .n_vocab = 40, .n_ctx = 4096, .tied = 1};

static sl_model *g_model;

static void load(void) { cr_assert_eq(gb_load_model(&k_spec, &g_model), 0, "%s", sl_error_detail()); }
static void unload(void) { sl_model_free(g_model); }

TestSuite(mem_plan, .init = load, .fini = unload);

/* Per layer: wq 64x64, wk 64x32, wv 64x32, wo 64x64, gate 64x96, up 64x96, down 96x64. */
#define LAYER_MAT (4096 + 2048 + 2048 + 4096 + 6144 + 6144 + 6144)
#define EMBD (64 * 40)
#define VECS (2 * 2 * 64 + 64) /* two norms per layer, the output norm */

Test(mem_plan, weights_on_the_cpu_are_the_file_s_tensors) {
    struct sl_mem_plan pl;
    struct sl_mem_plan_params p = {.n_ctx = 1024, .n_batch = 64};
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    cr_assert_eq(pl.weights, 4 * (2 * LAYER_MAT + EMBD + VECS)); /* the tied head once */
    cr_assert_eq((uint64_t)pl.weights, sl_model_weight_bytes(g_model));
}

Test(mem_plan, gpu_keeps_matrices_in_bf16) {
    struct sl_mem_plan pl;
    struct sl_mem_plan_params p = {.gpu = true, .n_ctx = 1024, .n_batch = 64};
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    /* bf16 matrices (the tied head as a matrix too), the f32 embedding for lookups, f32 vectors */
    cr_assert_eq(pl.weights, 2 * (2 * LAYER_MAT + EMBD) + 4 * EMBD + 4 * VECS);
    cr_assert_eq(pl.kv_fast, 2 * 2 * 16 * 2 * 2 * 1024); /* layers x kv heads x dim x (K, V) x f16 x n_ctx */
    cr_assert_eq(pl.codes, 0);
    cr_assert_eq(pl.host_kv, 0);
    cr_assert_eq(pl.fast_total, pl.weights + pl.kv_fast + pl.codes + pl.work);
}

Test(mem_plan, sparse_moves_kv_off_the_fast_tier) {
    struct sl_attn_params a = sl_attn_default_params(SL_ATTN_SIMHASH);
    a.dense_layers = 1;
    a.bits = 64;
    struct sl_mem_plan pl;
    struct sl_mem_plan_params p = {.gpu = true, .n_ctx = 4096, .n_batch = 64, .attn = &a, .kv_file = true,
                                   .cache_bytes = 1 << 20};
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    cr_assert_eq(pl.kv_fast, 1 * 2 * 16 * 2 * 2 * 4096);
    cr_assert_eq(pl.codes, 2 * 2 * 8 * 4096); /* every layer's codes, as the engine's table holds them */
    cr_assert_eq(pl.disk, 2 * 2 * 16 * 2 * 2 * 4096);
    cr_assert_eq(pl.host_kv, 1 << 20);
    p.kv_file = false;
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    cr_assert_eq(pl.host_kv, 2 * 2 * 16 * 2 * 2 * 4096);
    cr_assert_eq(pl.disk, 0);
    /* the CPU without a file: every layer's K/V in RAM, counted once */
    p.gpu = false;
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    cr_assert_eq(pl.kv_fast, 2 * 2 * 16 * 2 * 2 * 4096);
    cr_assert_eq(pl.host_kv, 0);
    p.kv_file = true;
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    cr_assert_eq(pl.kv_fast, 1 * 2 * 16 * 2 * 2 * 4096);
    cr_assert_eq(pl.host_kv, 1 << 20);
}

/* On the CPU the plan's fast tier is host RAM: a context's own count of its K/V, codes and
 * activations lies between the plan's K/V + codes and its total less the weights. */
Test(mem_plan, agrees_with_a_real_context) {
    struct sl_attn_params a = sl_attn_default_params(SL_ATTN_SIMHASH);
    a.bits = 64;
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = 2048;
    cp.n_batch = 128;
    sl_context *c = NULL;
    cr_assert_eq(sl_context_create(g_model, &cp, &c), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_context_set_attention(c, &a), 0, "%s", sl_error_detail());
    struct sl_attn_stats st;
    sl_context_attn_stats(c, &st);
    struct sl_mem_plan pl;
    struct sl_mem_plan_params p = {.n_ctx = 2048, .n_batch = 128, .attn = &a};
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    cr_assert_eq(pl.codes, st.code_bytes);
    const int64_t host = sl_context_host_bytes(c);
    cr_assert_geq(host, pl.kv_fast + pl.codes, "%lld < %lld", (long long)host, (long long)(pl.kv_fast + pl.codes));
    cr_assert_leq(host, pl.fast_total - pl.weights, "%lld > %lld", (long long)host, (long long)(pl.fast_total - pl.weights));
    sl_context_free(c);
}

Test(mem_plan, longest_context_within_a_budget) {
    struct sl_mem_plan_params p = {.gpu = true, .n_ctx = 256, .n_batch = 64};
    struct sl_mem_plan pl;
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    const int64_t budget = pl.fast_total + 100 * 4096 + 1000; /* 100 positions' K/V (4 KiB) past 256, and change */
    const int64_t n = sl_mem_plan_max_ctx(g_model, &p, budget, 1 << 20);
    cr_assert_eq(n % 256, 0);
    p.n_ctx = n;
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    cr_assert_leq(pl.fast_total, budget);
    p.n_ctx = n + 256;
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), 0);
    cr_assert_gt(pl.fast_total, budget);
    cr_assert_eq(sl_mem_plan_max_ctx(g_model, &p, pl.weights, 1 << 20), 0); /* the weights alone fill it */
    cr_assert_eq(sl_mem_plan_max_ctx(g_model, &p, INT64_MAX, 5000), 4864); /* capped, whole 256s */
    p.n_ctx = 0;
    cr_assert_eq(sl_mem_plan_compute(g_model, &p, &pl), SL_EINVAL);
}
