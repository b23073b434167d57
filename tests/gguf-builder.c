/* Test helper: in-memory GGUF writer (see gguf-builder.h). */
#include "tests/gguf-builder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/model.h"

void gb_free(struct gb *b) {
    free(b->buf);
    memset(b, 0, sizeof *b);
}

void gb_bytes(struct gb *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *nb = realloc(b->buf, cap);
        if (!nb) abort(); /* test helper: out of memory ends the test */
        b->buf = nb;
        b->cap = cap;
    }
    if (n) memcpy(b->buf + b->len, p, n);
    b->len += n;
}

static void le(struct gb *b, uint64_t v, int n) {
    uint8_t t[8];
    for (int i = 0; i < n; i++) t[i] = (uint8_t)(v >> (8 * i));
    gb_bytes(b, t, (size_t)n);
}

void gb_u8(struct gb *b, uint8_t v) { le(b, v, 1); }
void gb_u16(struct gb *b, uint16_t v) { le(b, v, 2); }
void gb_u32(struct gb *b, uint32_t v) { le(b, v, 4); }
void gb_u64(struct gb *b, uint64_t v) { le(b, v, 8); }
void gb_f32(struct gb *b, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    le(b, u, 4);
}
void gb_f64(struct gb *b, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    le(b, u, 8);
}
void gb_str(struct gb *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_bytes(b, s, strlen(s));
}
void gb_pad(struct gb *b, size_t align) {
    while (b->len % align) gb_u8(b, 0);
}

void gb_header(struct gb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gb_bytes(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

void gb_kv_u32(struct gb *b, const char *key, uint32_t v) { gb_str(b, key); gb_u32(b, 4); gb_u32(b, v); }
void gb_kv_f32(struct gb *b, const char *key, float v) { gb_str(b, key); gb_u32(b, 6); gb_f32(b, v); }
void gb_kv_str(struct gb *b, const char *key, const char *v) { gb_str(b, key); gb_u32(b, 8); gb_str(b, v); }
void gb_kv_bool(struct gb *b, const char *key, uint8_t v) { gb_str(b, key); gb_u32(b, 7); gb_u8(b, v); }

void gb_tensor(struct gb *b, const char *name, int n_dims, const uint64_t *ne, uint32_t type,
               uint64_t offset) {
    gb_str(b, name);
    gb_u32(b, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++) gb_u64(b, ne[d]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

/* ---- a complete tiny model -------------------------------------------------------------- */

struct tdesc {
    char name[64];
    uint64_t ne0, ne1;
};

static int add_t(struct tdesc *t, int n, const struct gb_model_spec *s, const char *name,
                 uint64_t ne0, uint64_t ne1) {
    if (s->skip_tensor && strcmp(s->skip_tensor, name) == 0) return n;
    snprintf(t[n].name, sizeof t[n].name, "%s", name);
    t[n].ne0 = ne0;
    t[n].ne1 = (s->bad_shape_tensor && strcmp(s->bad_shape_tensor, name) == 0) ? ne1 + 1 : ne1;
    return n + 1;
}

void gb_model(struct gb *b, const struct gb_model_spec *s) {
    struct tdesc t[512];
    int n = 0;
    uint64_t hd = s->n_embd / s->n_head, q = s->n_head * hd, kv = s->n_head_kv * hd;
    int qwen = strcmp(s->arch, "qwen2") == 0;
    n = add_t(t, n, s, "token_embd.weight", s->n_embd, s->n_vocab);
    n = add_t(t, n, s, "output_norm.weight", s->n_embd, 1);
    if (!s->tied) n = add_t(t, n, s, "output.weight", s->n_embd, s->n_vocab);
    for (uint32_t l = 0; l < s->n_layer && n < 480; l++) {
        char nm[64];
#define T(suffix, a, c) (snprintf(nm, sizeof nm, "blk.%u." suffix, l), n = add_t(t, n, s, nm, a, c))
        T("attn_norm.weight", s->n_embd, 1);
        T("attn_q.weight", s->n_embd, q);
        T("attn_k.weight", s->n_embd, kv);
        T("attn_v.weight", s->n_embd, kv);
        if (qwen) {
            T("attn_q.bias", q, 1);
            T("attn_k.bias", kv, 1);
            T("attn_v.bias", kv, 1);
        }
        T("attn_output.weight", q, s->n_embd);
        T("ffn_norm.weight", s->n_embd, 1);
        T("ffn_gate.weight", s->n_embd, s->n_ff);
        T("ffn_up.weight", s->n_embd, s->n_ff);
        T("ffn_down.weight", s->n_ff, s->n_embd);
#undef T
    }
    char keys[16][96];
    int nk = 0;
    const char *suffixes[] = {"block_count", "embedding_length", "feed_forward_length",
                              "attention.head_count", "attention.head_count_kv", "context_length"};
    uint32_t vals[] = {s->n_layer, s->n_embd, s->n_ff, s->n_head, s->n_head_kv, s->n_ctx};
    for (int i = 0; i < 6; i++) snprintf(keys[nk++], sizeof keys[0], "%s.%s", s->arch, suffixes[i]);
    char eps_key[96], theta_key[96];
    snprintf(eps_key, sizeof eps_key, "%s.attention.layer_norm_rms_epsilon", s->arch);
    snprintf(theta_key, sizeof theta_key, "%s.rope.freq_base", s->arch);
    const char *extra[] = {"general.architecture", "general.name", eps_key, theta_key,
                           "tokenizer.ggml.model", "tokenizer.ggml.tokens"};
    uint64_t n_kv = 0;
    for (int i = 0; i < 6; i++) n_kv += !(s->skip_key && strcmp(s->skip_key, keys[i]) == 0);
    for (int i = 0; i < 6; i++) n_kv += !(s->skip_key && strcmp(s->skip_key, extra[i]) == 0);

    gb_header(b, 3, (uint64_t)n, n_kv);
    for (int i = 0; i < 6; i++)
        if (!(s->skip_key && strcmp(s->skip_key, keys[i]) == 0)) gb_kv_u32(b, keys[i], vals[i]);
#define SKIP(k) (s->skip_key && strcmp(s->skip_key, k) == 0)
    if (!SKIP("general.architecture")) gb_kv_str(b, "general.architecture", s->arch);
    if (!SKIP("general.name")) gb_kv_str(b, "general.name", "tiny test model");
    if (!SKIP(eps_key)) gb_kv_f32(b, eps_key, 1e-5f);
    if (!SKIP(theta_key)) gb_kv_f32(b, theta_key, 10000.0f);
    if (!SKIP("tokenizer.ggml.model")) gb_kv_str(b, "tokenizer.ggml.model", "gpt2");
    if (!SKIP("tokenizer.ggml.tokens")) {
        gb_str(b, "tokenizer.ggml.tokens");
        gb_u32(b, 9);
        gb_u32(b, 8);
        gb_u64(b, s->n_vocab);
        for (uint32_t i = 0; i < s->n_vocab; i++) {
            char tok[16];
            snprintf(tok, sizeof tok, "t%u", i);
            gb_str(b, tok);
        }
    }
#undef SKIP
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t ne[2] = {t[i].ne0, t[i].ne1};
        gb_tensor(b, t[i].name, t[i].ne1 > 1 ? 2 : 1, ne, 0 /* F32 */, off);
        off += (t[i].ne0 * t[i].ne1 * 4 + 31) / 32 * 32;
    }
    gb_pad(b, 32);
    for (int i = 0; i < n; i++) {
        for (uint64_t j = 0; j < t[i].ne0 * t[i].ne1; j++) gb_f32(b, (float)((i * 7 + j) % 13) * 0.125f - 0.75f);
        gb_pad(b, 32);
    }
}

int gb_load_model(const struct gb_model_spec *spec, struct sl_model **out) {
    struct gb b = {0};
    gb_model(&b, spec);
    char path[] = "/tmp/sl-gb-model-XXXXXX";
    int fd = mkstemp(path);
    const int written = fd >= 0 && write(fd, b.buf, b.len) == (ssize_t)b.len;
    if (fd >= 0) close(fd);
    gb_free(&b);
    int rc = written ? sl_model_load(path, out) : SL_EIO;
    if (fd >= 0) unlink(path); /* mapped: the mapping outlives the name */
    return rc;
}
