/* Internals of the GGUF reader shared by gguf.c (file structure, tensors, lookups) and
 * gguf-values.c (bounded cursor, arena, metadata values). */
#ifndef SL_CORE_GGUF_INTERNAL_H
#define SL_CORE_GGUF_INTERNAL_H

#include <stdint.h>

#include "spotlight/gguf.h"
#include "storage/mapped-file.h"

/* Bump allocator: every string, value node and table of a handle lives here, so freeing a
 * handle is one walk over the chunk list. */
struct sl_arena_chunk;
struct sl_arena {
    struct sl_arena_chunk *head;
};
void *sl_arena_alloc(struct sl_arena *a, uint64_t size);
void sl_arena_free(struct sl_arena *a);

/* A read position inside [0, size) of the file bytes; every read is bounds-checked. */
struct sl_cursor {
    const uint8_t *base;
    uint64_t pos;
    uint64_t size;
};
uint64_t sl_cursor_left(const struct sl_cursor *c);
int sl_cursor_read(struct sl_cursor *c, void *dst, uint64_t n, const char *what);
int sl_cursor_u32(struct sl_cursor *c, uint32_t *out, const char *what);
int sl_cursor_u64(struct sl_cursor *c, uint64_t *out, const char *what);
/* Reads a GGUF string into the arena, NUL-terminated; *len is its byte length. */
int sl_cursor_string(struct sl_cursor *c, struct sl_arena *a, const char **out, uint64_t *len,
                     const char *what);

/* Parses one value of `type` (already read) at the cursor; `key` is for error messages. */
int sl_gguf_value_parse(struct sl_cursor *c, struct sl_arena *a, enum sl_gguf_type type,
                        struct sl_gguf_value *out, const char *key, int depth);

/* Name -> index hash table (keys, tensor names), open addressing. */
struct sl_name_index {
    uint64_t cap; /* power of two */
    int64_t *slots; /* -1 = empty */
    const char *const *names;
};
int sl_name_index_init(struct sl_name_index *ix, struct sl_arena *a, uint64_t n,
                       const char *const *names);
/* Inserts names[i]; returns SL_EDUPLICATE when the name is present already. */
int sl_name_index_insert(struct sl_name_index *ix, int64_t i);
int64_t sl_name_index_find(const struct sl_name_index *ix, const char *name);

struct sl_gguf {
    struct sl_mapped_file file; /* zeroed when opened over memory */
    const uint8_t *bytes;
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;

    int64_t n_kv;
    const char **kv_keys;
    struct sl_gguf_value *kv_values;
    struct sl_name_index kv_index;

    int64_t n_tensors;
    struct sl_gguf_tensor *tensors;
    const char **tensor_names;
    struct sl_name_index tensor_index;

    struct sl_arena arena;
};

#endif
