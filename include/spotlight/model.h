/* Model configuration from GGUF metadata, and a loaded model: the GGUF file plus views of
 * every weight tensor, checked against the configuration's shapes.
 *
 * Supported architectures: `llama` (Llama 2/3, TinyLlama, SmolLM2) and `qwen2` (Qwen2 and
 * Qwen2.5: q/k/v biases, NEOX-style rotary embedding). Anything else is rejected with
 * SL_EUNSUPPORTED. Weights are not copied: views point into the mapped file. */
#ifndef SPOTLIGHT_MODEL_H
#define SPOTLIGHT_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "spotlight/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

enum sl_arch {
    SL_ARCH_LLAMA = 0,
    SL_ARCH_QWEN2 = 1,
};

/* How rotary embedding pairs dimensions. NORM rotates adjacent pairs (x[2i], x[2i+1]), as
 * llama.cpp's converter permutes Llama's q/k weights for; NEOX rotates (x[i], x[i+d/2]). */
enum sl_rope_type {
    SL_ROPE_NORM = 0,
    SL_ROPE_NEOX = 1,
};

enum sl_rope_scaling {
    SL_ROPE_SCALING_NONE = 0,
    SL_ROPE_SCALING_LINEAR = 1,
    SL_ROPE_SCALING_YARN = 2,
    SL_ROPE_SCALING_LLAMA3 = 3, /* frequency-dependent (rope_freqs.weight factors) */
};

enum sl_tokenizer_kind {
    SL_TOKENIZER_BPE = 0, /* "gpt2": byte-level BPE */
    SL_TOKENIZER_SPM = 1, /* "llama": SentencePiece with byte fallback */
};

struct sl_model_config {
    enum sl_arch arch;
    char arch_name[32];
    char name[128];          /* general.name, may be empty */
    int32_t n_layer;
    int32_t n_embd;          /* model width */
    int32_t n_ff;            /* feed-forward width */
    int32_t n_head;          /* query heads */
    int32_t n_head_kv;       /* key/value heads (GQA groups) */
    int32_t head_dim;        /* n_embd / n_head unless key_length says otherwise */
    int32_t n_rot;           /* rotary dimensions (<= head_dim) */
    int32_t n_vocab;
    int32_t n_ctx_train;     /* context length the model was trained for */
    float norm_eps;          /* RMSNorm epsilon */
    float rope_theta;        /* rotary base frequency */
    enum sl_rope_type rope_type;
    enum sl_rope_scaling rope_scaling;
    float rope_scale;        /* context extension factor (1 = none) */
    int32_t rope_orig_ctx;   /* original context of a scaled rope, 0 if none */
    bool qkv_bias;           /* qwen2 */
    bool tied_embeddings;    /* no output.weight: the LM head reuses token_embd */
    enum sl_tokenizer_kind tokenizer;
    char tokenizer_model[32]; /* tokenizer.ggml.model */
    char tokenizer_pre[32];   /* tokenizer.ggml.pre, "" if absent */
    int32_t file_type;        /* general.file_type, -1 if absent */
};

/* Reads and validates the configuration. 0, or SL_EUNSUPPORTED / SL_ENOTFOUND /
 * SL_EFORMAT / SL_EBADTYPE with a detail naming the key. */
int sl_model_config_from_gguf(const sl_gguf *g, struct sl_model_config *cfg);

/* Bytes of K and V for one token across all layers, at `bytes_per_elem` bytes per value. */
int64_t sl_model_config_kv_bytes_per_token(const struct sl_model_config *cfg, int bytes_per_elem);

const char *sl_rope_type_name(enum sl_rope_type t);
const char *sl_rope_scaling_name(enum sl_rope_scaling s);

/* One layer's weights. Shapes as GGUF ne: (ne0 = input/contiguous, ne1 = output). */
struct sl_layer_weights {
    const struct sl_gguf_tensor *attn_norm; /* (n_embd) */
    const struct sl_gguf_tensor *wq;        /* (n_embd, n_head*head_dim) */
    const struct sl_gguf_tensor *wk;        /* (n_embd, n_head_kv*head_dim) */
    const struct sl_gguf_tensor *wv;        /* (n_embd, n_head_kv*head_dim) */
    const struct sl_gguf_tensor *bq, *bk, *bv; /* qwen2 biases, else NULL */
    const struct sl_gguf_tensor *wo;        /* (n_head*head_dim, n_embd) */
    const struct sl_gguf_tensor *ffn_norm;  /* (n_embd) */
    const struct sl_gguf_tensor *w_gate;    /* (n_embd, n_ff) */
    const struct sl_gguf_tensor *w_up;      /* (n_embd, n_ff) */
    const struct sl_gguf_tensor *w_down;    /* (n_ff, n_embd) */
};

typedef struct sl_model sl_model;

/* Opens a GGUF model, reads its config and binds every weight. The model owns the GGUF
 * handle; free with sl_model_free(). */
int sl_model_load(const char *path, sl_model **out);

void sl_model_free(sl_model *m); /* NULL is a no-op */

const struct sl_model_config *sl_model_config(const sl_model *m);
const sl_gguf *sl_model_gguf(const sl_model *m);
const struct sl_gguf_tensor *sl_model_token_embd(const sl_model *m); /* (n_embd, n_vocab) */
const struct sl_gguf_tensor *sl_model_output_norm(const sl_model *m); /* (n_embd) */
const struct sl_gguf_tensor *sl_model_output(const sl_model *m); /* LM head; token_embd if tied */
const struct sl_layer_weights *sl_model_layer(const sl_model *m, int32_t il);
/* Bytes of all weight tensors. */
uint64_t sl_model_weight_bytes(const sl_model *m);

/* SHA-256 of the GGUF bytes before the tensor data (header, metadata, tensor table): it
 * identifies architecture, hyper-parameters, tokenizer and quantization without reading the
 * weights. Files derived from a model (hash files, KV stores) carry it and refuse another
 * model. 0, or SL_EINVAL. */
int sl_model_fingerprint(const sl_model *m, uint8_t out[32]);

#ifdef __cplusplus
}
#endif
#endif
