/* A loaded model: GGUF handle + configuration + shape-checked weight views. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "spotlight/model.h"
#include "spotlight/quant.h"

struct sl_model {
    sl_gguf *gguf;
    struct sl_model_config cfg;
    const struct sl_gguf_tensor *token_embd, *output_norm, *output;
    struct sl_layer_weights *layers; /* (n_layer) */
    uint64_t weight_bytes;
};

/* Finds a tensor and checks its shape is exactly (ne0[, ne1]). */
static int bind(const sl_gguf *g, const char *name, int64_t ne0, int64_t ne1, bool required,
                const struct sl_gguf_tensor **out) {
    const struct sl_gguf_tensor *t = sl_gguf_find_tensor(g, name);
    *out = t;
    if (!t) return required ? sl_fail(SL_ENOTFOUND, "missing tensor '%s'", name) : 0;
    int want_dims = ne1 > 1 ? 2 : 1;
    bool ok = t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == 1 && t->ne[3] == 1;
    if (!ok || t->n_dims > want_dims)
        return sl_fail(SL_ESHAPE, "tensor '%s' has shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %"
                       PRId64 "], expected [%" PRId64 ", %" PRId64 "]", name, t->ne[0], t->ne[1],
                       t->ne[2], t->ne[3], ne0, ne1);
    /* Vectors (norms, biases) are used as f32 directly; matrices may be any type we can
     * dequantize. */
    if (want_dims == 1 && t->type != SL_TYPE_F32)
        return sl_fail(SL_EUNSUPPORTED, "tensor '%s' is %s; norms and biases must be F32", name,
                       sl_type_name(t->type));
    if (!sl_type_can_dequant(t->type))
        return sl_fail(SL_EUNSUPPORTED, "tensor '%s' has type %s, which this build cannot use",
                       name, sl_type_name(t->type));
    return 0;
}

static int bind_layer(const sl_gguf *g, const struct sl_model_config *c, int32_t il,
                      struct sl_layer_weights *w) {
    int64_t q = (int64_t)c->n_head * c->head_dim, kv = (int64_t)c->n_head_kv * c->head_dim;
    char n[96];
    int rc = 0;
#define BIND(field, suffix, ne0, ne1, req)                                                     \
    do {                                                                                       \
        snprintf(n, sizeof n, "blk.%d.%s", (int)il, suffix);                                   \
        if ((rc = bind(g, n, ne0, ne1, req, &w->field))) return rc;                             \
    } while (0)
    BIND(attn_norm, "attn_norm.weight", c->n_embd, 1, true);
    BIND(wq, "attn_q.weight", c->n_embd, q, true);
    BIND(wk, "attn_k.weight", c->n_embd, kv, true);
    BIND(wv, "attn_v.weight", c->n_embd, kv, true);
    BIND(bq, "attn_q.bias", q, 1, c->qkv_bias);
    BIND(bk, "attn_k.bias", kv, 1, c->qkv_bias);
    BIND(bv, "attn_v.bias", kv, 1, c->qkv_bias);
    BIND(wo, "attn_output.weight", q, c->n_embd, true);
    BIND(ffn_norm, "ffn_norm.weight", c->n_embd, 1, true);
    BIND(w_gate, "ffn_gate.weight", c->n_embd, c->n_ff, true);
    BIND(w_up, "ffn_up.weight", c->n_embd, c->n_ff, true);
    BIND(w_down, "ffn_down.weight", c->n_ff, c->n_embd, true);
#undef BIND
    return 0;
}

static int bind_all(sl_model *m) {
    const sl_gguf *g = m->gguf;
    const struct sl_model_config *c = &m->cfg;
    int rc;
    if ((rc = bind(g, "token_embd.weight", c->n_embd, c->n_vocab, true, &m->token_embd)) ||
        (rc = bind(g, "output_norm.weight", c->n_embd, 1, true, &m->output_norm)) ||
        (rc = bind(g, "output.weight", c->n_embd, c->n_vocab, false, &m->output)))
        return rc;
    if (!m->output) m->output = m->token_embd;
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return sl_fail(SL_ENOMEM, "out of memory for %d layers", c->n_layer);
    for (int32_t il = 0; il < c->n_layer; il++)
        if ((rc = bind_layer(g, c, il, &m->layers[il]))) return rc;
    for (int64_t i = 0; i < sl_gguf_tensor_count(g); i++) m->weight_bytes += sl_gguf_tensor_at(g, i)->nbytes;
    return 0;
}

int sl_model_load(const char *path, sl_model **out) {
    if (!path || !out) return sl_fail(SL_EINVAL, "sl_model_load: NULL argument");
    sl_model *m = calloc(1, sizeof *m);
    if (!m) return sl_fail(SL_ENOMEM, "out of memory");
    int rc = sl_gguf_open(path, &m->gguf);
    if (!rc) rc = sl_model_config_from_gguf(m->gguf, &m->cfg);
    if (!rc) rc = bind_all(m);
    if (rc) {
        sl_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void sl_model_free(sl_model *m) {
    if (!m) return;
    free(m->layers);
    sl_gguf_free(m->gguf);
    free(m);
}

const struct sl_model_config *sl_model_config(const sl_model *m) { return &m->cfg; }
const sl_gguf *sl_model_gguf(const sl_model *m) { return m->gguf; }
const struct sl_gguf_tensor *sl_model_token_embd(const sl_model *m) { return m->token_embd; }
const struct sl_gguf_tensor *sl_model_output_norm(const sl_model *m) { return m->output_norm; }
const struct sl_gguf_tensor *sl_model_output(const sl_model *m) { return m->output; }
uint64_t sl_model_weight_bytes(const sl_model *m) { return m->weight_bytes; }

const struct sl_layer_weights *sl_model_layer(const sl_model *m, int32_t il) {
    SL_ASSERT(il >= 0 && il < m->cfg.n_layer);
    return &m->layers[il];
}
