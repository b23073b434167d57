/* Test helper: builds GGUF files in memory, byte by byte, so tests can write valid files of
 * every value type and then break them in precise ways. Independent of the reader under test
 * (it shares no code with core/gguf*.c). */
#ifndef SL_TESTS_GGUF_BUILDER_H
#define SL_TESTS_GGUF_BUILDER_H

#include <stddef.h>
#include <stdint.h>

struct gb {
    uint8_t *buf;
    size_t len, cap;
};

void gb_free(struct gb *b);
void gb_bytes(struct gb *b, const void *p, size_t n);
void gb_u8(struct gb *b, uint8_t v);
void gb_u16(struct gb *b, uint16_t v);
void gb_u32(struct gb *b, uint32_t v);
void gb_u64(struct gb *b, uint64_t v);
void gb_f32(struct gb *b, float v);
void gb_f64(struct gb *b, double v);
void gb_str(struct gb *b, const char *s);
void gb_pad(struct gb *b, size_t align);

/* Header: magic, version, tensor count, kv count. */
void gb_header(struct gb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv);
/* Key + type for the common scalar kinds. */
void gb_kv_u32(struct gb *b, const char *key, uint32_t v);
void gb_kv_f32(struct gb *b, const char *key, float v);
void gb_kv_str(struct gb *b, const char *key, const char *v);
void gb_kv_bool(struct gb *b, const char *key, uint8_t v);
/* Tensor info: name, dims, type, offset. */
void gb_tensor(struct gb *b, const char *name, int n_dims, const uint64_t *ne, uint32_t type,
               uint64_t offset);

/* A small but complete llama-architecture model description: every key and tensor
 * sl_model_load needs, with F32 weights of the given sizes filled with a pattern.
 * `arch` is "llama" or "qwen2" (adds q/k/v biases); tied: omit output.weight. */
struct gb_model_spec {
    const char *arch;
    uint32_t n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
    int tied;
    const char *skip_key;    /* leave this metadata key out (NULL: none) */
    const char *skip_tensor; /* leave this tensor out */
    const char *bad_shape_tensor; /* give this tensor a wrong ne1 */
};
void gb_model(struct gb *b, const struct gb_model_spec *spec);

/* gb_model written to a temporary file and loaded (mapped; the name is removed at once):
 * sl_model_load's result, or SL_EIO when the file cannot be written. */
struct sl_model;
int gb_load_model(const struct gb_model_spec *spec, struct sl_model **out);

#endif
