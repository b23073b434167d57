/* Model configuration and weight binding on small synthetic GGUF models: llama (tied) and
 * qwen2 (biases, separate LM head) load with the right values; unsupported architectures,
 * missing keys or tensors and wrong shapes are rejected with a message naming the culprit. */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/model.h"
#include "spotlight/quant.h"
#include "tests/gguf-builder.h"

static const struct gb_model_spec k_llama = {
    .arch = "llama", .n_layer = 2, .n_embd = 64, .n_ff = 96, .n_head = 4, .n_head_kv = 2,
    .n_vocab = 40, .n_ctx = 512, .tied = 1};

static int load_spec(const struct gb_model_spec *s, sl_model **out) {
    sl_error_clear();
    return gb_load_model(s, out);
}

static void expect_fail(const struct gb_model_spec *s, int code, const char *in_detail) {
    sl_model *m = NULL;
    int rc = load_spec(s, &m);
    cr_assert_eq(rc, code, "expected %s, got %s (%s)", sl_strerror(code), sl_strerror(rc), sl_error_detail());
    cr_assert_null(m);
    cr_assert(strstr(sl_error_detail(), in_detail) != NULL, "detail '%s' lacks '%s'",
              sl_error_detail(), in_detail);
}

Test(model_config, llama_tied) {
    sl_model *m = NULL;
    int rc = load_spec(&k_llama, &m);
    cr_assert_eq(rc, 0, "%s: %s", sl_strerror(rc), sl_error_detail());
    const struct sl_model_config *c = sl_model_config(m);
    cr_assert_eq(c->arch, SL_ARCH_LLAMA);
    cr_assert_eq(c->n_layer, 2);
    cr_assert_eq(c->n_embd, 64);
    cr_assert_eq(c->n_ff, 96);
    cr_assert_eq(c->n_head, 4);
    cr_assert_eq(c->n_head_kv, 2);
    cr_assert_eq(c->head_dim, 16);
    cr_assert_eq(c->n_rot, 16);
    cr_assert_eq(c->n_vocab, 40);
    cr_assert_eq(c->n_ctx_train, 512);
    cr_assert_eq(c->rope_theta, 10000.0f);
    cr_assert_eq(c->rope_type, SL_ROPE_NORM);
    cr_assert_eq(c->tokenizer, SL_TOKENIZER_BPE);
    cr_assert_str_eq(c->tokenizer_pre, "");
    cr_assert_str_eq(c->name, "tiny test model");
    cr_assert_eq(c->file_type, -1);
    cr_assert(c->tied_embeddings);
    cr_assert_eq(sl_model_output(m), sl_model_token_embd(m));
    cr_assert_eq(sl_model_config_kv_bytes_per_token(c, 2), 2 * 2 * 2 * 16 * 2);
    const struct sl_layer_weights *l1 = sl_model_layer(m, 1);
    cr_assert_eq(l1->wk->ne[1], 32);
    cr_assert_eq(l1->w_down->ne[0], 96);
    cr_assert_null(l1->bq);
    /* token_embd (64x40) + output_norm (64) + 2 layers, all F32 */
    uint64_t per_layer = 64 + 64 * 64 + 2 * 64 * 32 + 64 * 64 + 64 + 3 * 64 * 96;
    cr_assert_eq(sl_model_weight_bytes(m), 4 * (64 * 40 + 64 + 2 * per_layer));
    sl_model_free(m);
}

Test(model_config, qwen2_biases_and_lm_head) {
    struct gb_model_spec s = k_llama;
    s.arch = "qwen2";
    s.tied = 0;
    sl_model *m = NULL;
    int rc = load_spec(&s, &m);
    cr_assert_eq(rc, 0, "%s: %s", sl_strerror(rc), sl_error_detail());
    const struct sl_model_config *c = sl_model_config(m);
    cr_assert_eq(c->arch, SL_ARCH_QWEN2);
    cr_assert_eq(c->rope_type, SL_ROPE_NEOX);
    cr_assert(c->qkv_bias);
    cr_assert(!c->tied_embeddings);
    cr_assert_neq(sl_model_output(m), sl_model_token_embd(m));
    cr_assert_eq(sl_model_layer(m, 0)->bk->ne[0], 32);
    sl_model_free(m);
    s.skip_tensor = "blk.1.attn_v.bias";
    expect_fail(&s, SL_ENOTFOUND, "blk.1.attn_v.bias");
}

Test(model_config, unsupported_architecture) {
    struct gb_model_spec s = k_llama;
    s.arch = "gpt2";
    expect_fail(&s, SL_EUNSUPPORTED, "'gpt2'");
}

Test(model_config, missing_keys) {
    struct gb_model_spec s = k_llama;
    const char *keys[] = {"general.architecture", "llama.block_count", "llama.embedding_length",
                          "llama.attention.head_count", "llama.context_length",
                          "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model",
                          "tokenizer.ggml.tokens"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        s.skip_key = keys[i];
        expect_fail(&s, SL_ENOTFOUND, keys[i]);
    }
    /* Optional keys fall back to their defaults. */
    s.skip_key = "llama.attention.head_count_kv";
    s.n_head_kv = s.n_head; /* tensors sized for MHA */
    sl_model *m = NULL;
    cr_assert_eq(load_spec(&s, &m), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_model_config(m)->n_head_kv, 4);
    sl_model_free(m);
    s = k_llama;
    s.skip_key = "llama.rope.freq_base";
    cr_assert_eq(load_spec(&s, &m), 0);
    cr_assert_eq(sl_model_config(m)->rope_theta, 10000.0f);
    sl_model_free(m);
}

Test(model_config, missing_tensor_and_bad_shape) {
    struct gb_model_spec s = k_llama;
    s.skip_tensor = "blk.1.ffn_up.weight";
    expect_fail(&s, SL_ENOTFOUND, "blk.1.ffn_up.weight");
    s.skip_tensor = "output_norm.weight";
    expect_fail(&s, SL_ENOTFOUND, "output_norm.weight");
    s.skip_tensor = NULL;
    s.bad_shape_tensor = "blk.0.attn_k.weight";
    expect_fail(&s, SL_ESHAPE, "blk.0.attn_k.weight");
    s.bad_shape_tensor = "token_embd.weight";
    expect_fail(&s, SL_ESHAPE, "token_embd.weight");
}

Test(model_config, inconsistent_heads) {
    struct gb_model_spec s = k_llama;
    s.n_head_kv = 3; /* 4 query heads cannot be grouped over 3 KV heads */
    expect_fail(&s, SL_EFORMAT, "KV heads");
}
