/* Read-only access to GGUF model files (versions 2 and 3, little-endian).
 *
 * File layout (all integers little-endian):
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv   x { string key | u32 value_type | value }
 *   n_tensors x { string name | u32 n_dims (<= 4) | u64 ne[n_dims] | u32 type | u64 offset }
 *   padding to `general.alignment` (u32, power of two, default 32)
 *   tensor data; each tensor at data_start + offset, offset a multiple of the alignment
 * string = u64 length + bytes (no terminator); value = scalar of its type, a string, or an
 * array = u32 element type + u64 count + elements (arrays may nest).
 *
 * sl_gguf_open() maps the file and validates every count, offset and size against the file
 * size before allocating anything that depends on them; a handle that opened successfully
 * only contains tensors that lie inside the file, do not overlap and have known types.
 * All strings returned are NUL-terminated copies owned by the handle (their `len` is exact,
 * for strings with embedded NULs). Pointers stay valid until sl_gguf_free(). */
#ifndef SPOTLIGHT_GGUF_H
#define SPOTLIGHT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_GGUF_MAX_DIMS 4
#define SL_GGUF_DEFAULT_ALIGNMENT 32

/* Values are the GGUF on-disk ids; do not renumber. */
enum sl_gguf_type {
    SL_GGUF_UINT8 = 0,
    SL_GGUF_INT8 = 1,
    SL_GGUF_UINT16 = 2,
    SL_GGUF_INT16 = 3,
    SL_GGUF_UINT32 = 4,
    SL_GGUF_INT32 = 5,
    SL_GGUF_FLOAT32 = 6,
    SL_GGUF_BOOL = 7,
    SL_GGUF_STRING = 8,
    SL_GGUF_ARRAY = 9,
    SL_GGUF_UINT64 = 10,
    SL_GGUF_INT64 = 11,
    SL_GGUF_FLOAT64 = 12,
    SL_GGUF_TYPE_COUNT_
};

typedef struct sl_gguf sl_gguf;

/* A metadata value. Integers are widened into u64/i64 (by signedness of the stored type),
 * floats into f64. Arrays of numbers/bools keep their raw little-endian bytes (`raw`, not
 * aligned: read them with sl_gguf_arr_i64/_u64/_f64); arrays of strings or arrays have
 * `items`. */
struct sl_gguf_value {
    enum sl_gguf_type type;
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
        bool b;
        struct {
            const char *s;
            uint64_t len;
        } str;
        struct {
            enum sl_gguf_type type; /* element type */
            uint64_t n;
            const uint8_t *raw;                /* numeric/bool elements, else NULL */
            const struct sl_gguf_value *items; /* string/array elements, else NULL */
        } arr;
    } v;
};

struct sl_gguf_tensor {
    const char *name;
    int32_t type;    /* enum sl_type */
    int32_t n_dims;
    int64_t ne[SL_GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension; unused dims = 1 */
    int64_t n_elems;
    uint64_t offset; /* relative to the data section */
    uint64_t nbytes;
    const void *data; /* inside the mapping */
};

/* Opens and validates a GGUF file (mapped read-only). *out is set only on success. */
int sl_gguf_open(const char *path, sl_gguf **out);

/* Same, over a caller-owned buffer that must outlive the handle (used by tests and fuzzing). */
int sl_gguf_open_memory(const void *data, size_t size, sl_gguf **out);

void sl_gguf_free(sl_gguf *g); /* NULL is a no-op */

uint32_t sl_gguf_version(const sl_gguf *g);
uint32_t sl_gguf_alignment(const sl_gguf *g);
uint64_t sl_gguf_file_size(const sl_gguf *g);
uint64_t sl_gguf_data_offset(const sl_gguf *g); /* file offset of the data section */

/* Metadata, in file order. */
int64_t sl_gguf_kv_count(const sl_gguf *g);
const char *sl_gguf_kv_key(const sl_gguf *g, int64_t i);
const struct sl_gguf_value *sl_gguf_kv_value(const sl_gguf *g, int64_t i);
/* Value of key, or NULL when absent (no error detail is recorded). */
const struct sl_gguf_value *sl_gguf_get(const sl_gguf *g, const char *key);

/* Typed getters: 0 on success; SL_ENOTFOUND when the key is absent, SL_EBADTYPE when it
 * has an incompatible type, SL_EFORMAT when an integer does not fit. Any integer type is
 * accepted for integer getters, any number for float getters. */
int sl_gguf_get_u32(const sl_gguf *g, const char *key, uint32_t *out);
int sl_gguf_get_i64(const sl_gguf *g, const char *key, int64_t *out);
int sl_gguf_get_f32(const sl_gguf *g, const char *key, float *out);
int sl_gguf_get_bool(const sl_gguf *g, const char *key, bool *out);
int sl_gguf_get_str(const sl_gguf *g, const char *key, const char **out);
/* Array of the given element type (SL_GGUF_ARRAY type-checked), its value in *out. */
int sl_gguf_get_arr(const sl_gguf *g, const char *key, enum sl_gguf_type elem,
                    const struct sl_gguf_value **out);

/* Element j of a numeric/bool array (j < n, checked by SL_ASSERT), converted. */
int64_t sl_gguf_arr_i64(const struct sl_gguf_value *arr, uint64_t j);
uint64_t sl_gguf_arr_u64(const struct sl_gguf_value *arr, uint64_t j);
double sl_gguf_arr_f64(const struct sl_gguf_value *arr, uint64_t j);

/* Tensors, in file order. */
int64_t sl_gguf_tensor_count(const sl_gguf *g);
const struct sl_gguf_tensor *sl_gguf_tensor_at(const sl_gguf *g, int64_t i);
const struct sl_gguf_tensor *sl_gguf_find_tensor(const sl_gguf *g, const char *name);

/* "uint32", "string", ...; "?" for unknown ids. */
const char *sl_gguf_type_name(int type);

#ifdef __cplusplus
}
#endif
#endif
