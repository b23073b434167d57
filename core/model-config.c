/* Model hyperparameters from GGUF metadata (`<arch>.*` keys and tokenizer.ggml.*). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "spotlight/model.h"

#define MAX_DIM (1 << 20) /* sanity bound on widths, heads, layers */

static const struct {
    const char *name;
    enum sl_arch arch;
    enum sl_rope_type rope;
    bool qkv_bias;
} k_archs[] = {
    {"llama", SL_ARCH_LLAMA, SL_ROPE_NORM, false},
    {"qwen2", SL_ARCH_QWEN2, SL_ROPE_NEOX, true},
};

/* Reads `<arch>.<suffix>` as a positive int32 bounded by max; absent -> def (or error if def<0). */
static int get_dim(const sl_gguf *g, const char *arch, const char *suffix, int64_t def,
                   int64_t max, int32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const struct sl_gguf_value *v = sl_gguf_get(g, key);
    if (v && v->type == SL_GGUF_ARRAY)
        return sl_fail(SL_EUNSUPPORTED, "per-layer '%s' (an array) is not supported", key);
    int64_t x = def;
    if (v) {
        int rc = sl_gguf_get_i64(g, key, &x);
        if (rc) return rc;
    } else if (def < 0) {
        return sl_fail(SL_ENOTFOUND, "missing required key '%s'", key);
    }
    if (x <= 0 || x > max)
        return sl_fail(SL_EFORMAT, "'%s' = %" PRId64 " is out of range (1..%" PRId64 ")", key, x, max);
    *out = (int32_t)x;
    return 0;
}

static int get_float(const sl_gguf *g, const char *arch, const char *suffix, float def,
                     bool required, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    *out = def;
    if (!sl_gguf_get(g, key))
        return required ? sl_fail(SL_ENOTFOUND, "missing required key '%s'", key) : 0;
    int rc = sl_gguf_get_f32(g, key, out);
    if (rc) return rc;
    if (!isfinite(*out) || *out <= 0)
        return sl_fail(SL_EFORMAT, "'%s' = %g must be a positive number", key, (double)*out);
    return 0;
}

static void copy_str(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

static int read_rope(const sl_gguf *g, const char *a, struct sl_model_config *c) {
    int rc = get_float(g, a, "rope.freq_base", 10000.0f, false, &c->rope_theta);
    if (rc) return rc;
    c->rope_scaling = SL_ROPE_SCALING_NONE;
    c->rope_scale = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    const char *type = NULL;
    if (sl_gguf_get(g, key) && (rc = sl_gguf_get_str(g, key, &type))) return rc;
    float factor = 1.0f, linear = 0.0f;
    if ((rc = get_float(g, a, "rope.scaling.factor", 1.0f, false, &factor))) return rc;
    if ((rc = get_float(g, a, "rope.scale_linear", 0.0f, false, &linear))) return rc;
    if (type && strcmp(type, "none") != 0) {
        if (strcmp(type, "linear") == 0)
            c->rope_scaling = SL_ROPE_SCALING_LINEAR;
        else if (strcmp(type, "yarn") == 0)
            c->rope_scaling = SL_ROPE_SCALING_YARN;
        else if (strcmp(type, "llama3") == 0)
            c->rope_scaling = SL_ROPE_SCALING_LLAMA3;
        else
            return sl_fail(SL_EUNSUPPORTED, "rope scaling type '%s' is not supported", type);
        c->rope_scale = factor;
    } else if (linear > 0 && linear != 1.0f) {
        c->rope_scaling = SL_ROPE_SCALING_LINEAR;
        c->rope_scale = linear;
    }
    /* Llama 3.1+ files carry the frequency factors as a tensor rather than a scaling type. */
    if (sl_gguf_find_tensor(g, "rope_freqs.weight")) c->rope_scaling = SL_ROPE_SCALING_LLAMA3;
    int32_t orig = 0;
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", a);
    if (sl_gguf_get(g, key) && (rc = get_dim(g, a, "rope.scaling.original_context_length", 0, INT32_MAX, &orig)))
        return rc;
    c->rope_orig_ctx = orig;
    return 0;
}

static int read_tokenizer(const sl_gguf *g, struct sl_model_config *c) {
    const char *model = NULL, *pre = NULL;
    int rc = sl_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc) return rc;
    if (strcmp(model, "gpt2") == 0)
        c->tokenizer = SL_TOKENIZER_BPE;
    else if (strcmp(model, "llama") == 0)
        c->tokenizer = SL_TOKENIZER_SPM;
    else
        return sl_fail(SL_EUNSUPPORTED, "tokenizer '%s' is not supported (gpt2 BPE and llama SPM are)", model);
    copy_str(c->tokenizer_model, sizeof c->tokenizer_model, model);
    if (sl_gguf_get(g, "tokenizer.ggml.pre") && (rc = sl_gguf_get_str(g, "tokenizer.ggml.pre", &pre)))
        return rc;
    copy_str(c->tokenizer_pre, sizeof c->tokenizer_pre, pre);
    const struct sl_gguf_value *tokens;
    if ((rc = sl_gguf_get_arr(g, "tokenizer.ggml.tokens", SL_GGUF_STRING, &tokens))) return rc;
    if (tokens->v.arr.n == 0 || tokens->v.arr.n > INT32_MAX)
        return sl_fail(SL_EFORMAT, "tokenizer.ggml.tokens has %" PRIu64 " entries", tokens->v.arr.n);
    c->n_vocab = (int32_t)tokens->v.arr.n;
    return 0;
}

int sl_model_config_from_gguf(const sl_gguf *g, struct sl_model_config *c) {
    memset(c, 0, sizeof *c);
    const char *a = NULL;
    int rc = sl_gguf_get_str(g, "general.architecture", &a);
    if (rc) return rc;
    size_t ai = 0;
    while (ai < sizeof k_archs / sizeof k_archs[0] && strcmp(k_archs[ai].name, a) != 0) ai++;
    if (ai == sizeof k_archs / sizeof k_archs[0])
        return sl_fail(SL_EUNSUPPORTED, "architecture '%s' is not supported (supported: llama, qwen2)", a);
    c->arch = k_archs[ai].arch;
    c->rope_type = k_archs[ai].rope;
    c->qkv_bias = k_archs[ai].qkv_bias;
    copy_str(c->arch_name, sizeof c->arch_name, a);
    const char *name = NULL;
    if (sl_gguf_get(g, "general.name") && (rc = sl_gguf_get_str(g, "general.name", &name))) return rc;
    copy_str(c->name, sizeof c->name, name);

    if ((rc = get_dim(g, a, "block_count", -1, 4096, &c->n_layer)) ||
        (rc = get_dim(g, a, "embedding_length", -1, MAX_DIM, &c->n_embd)) ||
        (rc = get_dim(g, a, "feed_forward_length", -1, MAX_DIM, &c->n_ff)) ||
        (rc = get_dim(g, a, "attention.head_count", -1, 4096, &c->n_head)) ||
        (rc = get_dim(g, a, "attention.head_count_kv", c->n_head, 4096, &c->n_head_kv)) ||
        (rc = get_dim(g, a, "context_length", -1, INT32_MAX, &c->n_ctx_train)))
        return rc;
    if (c->n_head % c->n_head_kv)
        return sl_fail(SL_EFORMAT, "%d query heads are not a multiple of %d KV heads", c->n_head, c->n_head_kv);
    int64_t def_hd = c->n_embd % c->n_head == 0 ? c->n_embd / c->n_head : -1;
    int32_t v_len = 0;
    if ((rc = get_dim(g, a, "attention.key_length", def_hd, 4096, &c->head_dim)) ||
        (rc = get_dim(g, a, "attention.value_length", c->head_dim, 4096, &v_len)))
        return rc;
    if (v_len != c->head_dim)
        return sl_fail(SL_EUNSUPPORTED, "value length %d differs from key length %d", v_len, c->head_dim);
    if ((rc = get_dim(g, a, "rope.dimension_count", c->head_dim, c->head_dim, &c->n_rot))) return rc;
    if (c->n_rot % 2) return sl_fail(SL_EFORMAT, "rope dimension count %d is odd", c->n_rot);
    if ((rc = get_float(g, a, "attention.layer_norm_rms_epsilon", 0, true, &c->norm_eps))) return rc;
    if ((rc = read_rope(g, a, c))) return rc;
    if ((rc = read_tokenizer(g, c))) return rc;

    int64_t ft = -1;
    if (sl_gguf_get(g, "general.file_type") && (rc = sl_gguf_get_i64(g, "general.file_type", &ft))) return rc;
    c->file_type = ft >= 0 && ft <= INT32_MAX ? (int32_t)ft : -1;
    c->tied_embeddings = sl_gguf_find_tensor(g, "output.weight") == NULL;
    return 0;
}

int64_t sl_model_config_kv_bytes_per_token(const struct sl_model_config *c, int bytes_per_elem) {
    return 2 * (int64_t)c->n_layer * c->n_head_kv * c->head_dim * bytes_per_elem;
}

const char *sl_rope_type_name(enum sl_rope_type t) { return t == SL_ROPE_NEOX ? "neox" : "norm"; }

const char *sl_rope_scaling_name(enum sl_rope_scaling s) {
    static const char *const names[] = {"none", "linear", "yarn", "llama3"};
    return (unsigned)s < 4 ? names[s] : "?";
}
