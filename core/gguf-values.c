/* GGUF metadata values: the bounds-checked cursor, the arena that owns parsed values, the
 * name index, value parsing and the typed getters. */
#include <inttypes.h>
#include <string.h>

#include "core/gguf-internal.h"
#include "core/internal.h"

/* ---- arena ------------------------------------------------------------------------------ */

struct sl_arena_chunk {
    struct sl_arena_chunk *next;
    uint64_t used, cap;
    _Alignas(16) uint8_t data[];
};

#define ARENA_CHUNK_MIN (64u * 1024u)

void *sl_arena_alloc(struct sl_arena *a, uint64_t size) {
    size = (size + 15u) & ~(uint64_t)15u;
    struct sl_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        uint64_t cap = size > ARENA_CHUNK_MIN ? size : ARENA_CHUNK_MIN;
        if (cap > SIZE_MAX - sizeof *c) return NULL;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    return p;
}

void sl_arena_free(struct sl_arena *a) {
    struct sl_arena_chunk *c = a->head;
    while (c) {
        struct sl_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

/* ---- cursor ----------------------------------------------------------------------------- */

uint64_t sl_cursor_left(const struct sl_cursor *c) { return c->size - c->pos; }

int sl_cursor_read(struct sl_cursor *c, void *dst, uint64_t n, const char *what) {
    if (n > sl_cursor_left(c))
        return sl_fail(SL_ETRUNCATED, "file ends at byte %" PRIu64 " inside %s (needs %" PRIu64
                       " more bytes)", c->size, what, n - sl_cursor_left(c));
    if (n) memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return 0;
}

int sl_cursor_u32(struct sl_cursor *c, uint32_t *out, const char *what) {
    uint8_t b[4];
    int rc = sl_cursor_read(c, b, 4, what);
    if (rc) return rc;
    *out = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

int sl_cursor_u64(struct sl_cursor *c, uint64_t *out, const char *what) {
    uint32_t lo, hi;
    int rc = sl_cursor_u32(c, &lo, what);
    if (!rc) rc = sl_cursor_u32(c, &hi, what);
    if (!rc) *out = (uint64_t)hi << 32 | lo;
    return rc;
}

int sl_cursor_string(struct sl_cursor *c, struct sl_arena *a, const char **out, uint64_t *len,
                     const char *what) {
    uint64_t n;
    int rc = sl_cursor_u64(c, &n, what);
    if (rc) return rc;
    if (n > sl_cursor_left(c))
        return sl_fail(SL_ETRUNCATED, "%s declares %" PRIu64 " bytes but only %" PRIu64
                       " remain in the file", what, n, sl_cursor_left(c));
    char *s = sl_arena_alloc(a, n + 1);
    if (!s) return sl_fail(SL_ENOMEM, "out of memory reading %s", what);
    memcpy(s, c->base + c->pos, n);
    s[n] = '\0';
    c->pos += n;
    *out = s;
    *len = n;
    return 0;
}

/* ---- name index ------------------------------------------------------------------------- */

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

int sl_name_index_init(struct sl_name_index *ix, struct sl_arena *a, uint64_t n,
                       const char *const *names) {
    uint64_t cap = 16;
    while (cap < 2 * n) cap <<= 1; /* n is bounded by the file size, so this terminates */
    ix->slots = sl_arena_alloc(a, cap * sizeof *ix->slots);
    if (!ix->slots) return sl_fail(SL_ENOMEM, "out of memory for a table of %" PRIu64, n);
    memset(ix->slots, 0xff, cap * sizeof *ix->slots);
    ix->cap = cap;
    ix->names = names;
    return 0;
}

int sl_name_index_insert(struct sl_name_index *ix, int64_t i) {
    uint64_t m = ix->cap - 1;
    for (uint64_t s = hash_name(ix->names[i]) & m;; s = (s + 1) & m) {
        if (ix->slots[s] < 0) {
            ix->slots[s] = i;
            return 0;
        }
        if (strcmp(ix->names[ix->slots[s]], ix->names[i]) == 0) return SL_EDUPLICATE;
    }
}

int64_t sl_name_index_find(const struct sl_name_index *ix, const char *name) {
    if (!ix->cap) return -1;
    uint64_t m = ix->cap - 1;
    for (uint64_t s = hash_name(name) & m;; s = (s + 1) & m) {
        if (ix->slots[s] < 0) return -1;
        if (strcmp(ix->names[ix->slots[s]], name) == 0) return ix->slots[s];
    }
}

/* ---- values ----------------------------------------------------------------------------- */

#define MAX_ARRAY_DEPTH 8

/* Bytes of a scalar of this type on disk; 0 for string/array/unknown. */
static unsigned scalar_size(enum sl_gguf_type t) {
    switch (t) {
    case SL_GGUF_UINT8: case SL_GGUF_INT8: case SL_GGUF_BOOL: return 1;
    case SL_GGUF_UINT16: case SL_GGUF_INT16: return 2;
    case SL_GGUF_UINT32: case SL_GGUF_INT32: case SL_GGUF_FLOAT32: return 4;
    case SL_GGUF_UINT64: case SL_GGUF_INT64: case SL_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static bool type_is_signed(enum sl_gguf_type t) {
    return t == SL_GGUF_INT8 || t == SL_GGUF_INT16 || t == SL_GGUF_INT32 || t == SL_GGUF_INT64;
}

/* Decodes one little-endian scalar of type t from p into out. */
static void decode_scalar(enum sl_gguf_type t, const uint8_t *p, struct sl_gguf_value *out) {
    uint64_t u = 0;
    unsigned n = scalar_size(t);
    for (unsigned i = 0; i < n; i++) u |= (uint64_t)p[i] << (8 * i);
    out->type = t;
    switch (t) {
    case SL_GGUF_INT8: out->v.i64 = (int8_t)u; break;
    case SL_GGUF_INT16: out->v.i64 = (int16_t)u; break;
    case SL_GGUF_INT32: out->v.i64 = (int32_t)u; break;
    case SL_GGUF_INT64: out->v.i64 = (int64_t)u; break;
    case SL_GGUF_FLOAT32: {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, 4);
        out->v.f64 = f;
        break;
    }
    case SL_GGUF_FLOAT64: memcpy(&out->v.f64, &u, 8); break;
    case SL_GGUF_BOOL: out->v.b = u != 0; break;
    default: out->v.u64 = u; break;
    }
}

static int parse_array(struct sl_cursor *c, struct sl_arena *a, struct sl_gguf_value *out,
                       const char *key, int depth) {
    uint32_t et;
    uint64_t n;
    int rc = sl_cursor_u32(c, &et, "an array element type");
    if (!rc) rc = sl_cursor_u64(c, &n, "an array length");
    if (rc) return rc;
    if (et >= SL_GGUF_TYPE_COUNT_)
        return sl_fail(SL_EBADTYPE, "key '%s': array has unknown element type %" PRIu32, key, et);
    if (depth >= MAX_ARRAY_DEPTH)
        return sl_fail(SL_EFORMAT, "key '%s': arrays nested deeper than %d", key, MAX_ARRAY_DEPTH);
    /* Each element occupies at least this many bytes, so a count the file cannot hold is
     * rejected before anything is allocated for it. */
    unsigned min_bytes = et == SL_GGUF_STRING ? 8 : et == SL_GGUF_ARRAY ? 12 : scalar_size(et);
    if (n > sl_cursor_left(c) / min_bytes)
        return sl_fail(SL_ETRUNCATED, "key '%s': array of %" PRIu64 " %s elements does not fit "
                       "in the %" PRIu64 " bytes left", key, n, sl_gguf_type_name((int)et),
                       sl_cursor_left(c));
    out->type = SL_GGUF_ARRAY;
    out->v.arr.type = (enum sl_gguf_type)et;
    out->v.arr.n = n;
    out->v.arr.raw = NULL;
    out->v.arr.items = NULL;
    if (min_bytes == scalar_size(et)) {
        out->v.arr.raw = c->base + c->pos;
        if (et == SL_GGUF_BOOL)
            for (uint64_t j = 0; j < n; j++)
                if (c->base[c->pos + j] > 1)
                    return sl_fail(SL_EFORMAT, "key '%s': bool element %" PRIu64 " is %u", key, j,
                                   c->base[c->pos + j]);
        c->pos += n * min_bytes;
        return 0;
    }
    struct sl_gguf_value *items = sl_arena_alloc(a, n * sizeof *items);
    if (!items && n) return sl_fail(SL_ENOMEM, "key '%s': out of memory for %" PRIu64 " items", key, n);
    for (uint64_t j = 0; j < n; j++) {
        rc = sl_gguf_value_parse(c, a, (enum sl_gguf_type)et, &items[j], key, depth + 1);
        if (rc) return rc;
    }
    out->v.arr.items = items;
    return 0;
}

int sl_gguf_value_parse(struct sl_cursor *c, struct sl_arena *a, enum sl_gguf_type type,
                        struct sl_gguf_value *out, const char *key, int depth) {
    if ((unsigned)type >= SL_GGUF_TYPE_COUNT_)
        return sl_fail(SL_EBADTYPE, "key '%s' has unknown value type %u", key, (unsigned)type);
    if (type == SL_GGUF_ARRAY) return parse_array(c, a, out, key, depth);
    if (type == SL_GGUF_STRING) {
        out->type = type;
        return sl_cursor_string(c, a, &out->v.str.s, &out->v.str.len, "a string value");
    }
    uint8_t b[8];
    int rc = sl_cursor_read(c, b, scalar_size(type), "a metadata value");
    if (rc) return rc;
    if (type == SL_GGUF_BOOL && b[0] > 1)
        return sl_fail(SL_EFORMAT, "key '%s': bool value is %u, not 0 or 1", key, b[0]);
    decode_scalar(type, b, out);
    return 0;
}

/* ---- typed getters ---------------------------------------------------------------------- */

static const struct sl_gguf_value *get_checked(const sl_gguf *g, const char *key, int *rc) {
    const struct sl_gguf_value *v = sl_gguf_get(g, key);
    *rc = v ? 0 : sl_fail(SL_ENOTFOUND, "missing key '%s'", key);
    return v;
}

static int bad_type(const char *key, const struct sl_gguf_value *v, const char *want) {
    return sl_fail(SL_EBADTYPE, "key '%s' is %s, expected %s", key, sl_gguf_type_name(v->type), want);
}

int sl_gguf_get_i64(const sl_gguf *g, const char *key, int64_t *out) {
    int rc;
    const struct sl_gguf_value *v = get_checked(g, key, &rc);
    if (!v) return rc;
    if (!scalar_size(v->type) || v->type == SL_GGUF_BOOL || v->type == SL_GGUF_FLOAT32 ||
        v->type == SL_GGUF_FLOAT64)
        return bad_type(key, v, "an integer");
    if (!type_is_signed(v->type) && v->v.u64 > INT64_MAX)
        return sl_fail(SL_EFORMAT, "key '%s' = %" PRIu64 " is out of range", key, v->v.u64);
    *out = type_is_signed(v->type) ? v->v.i64 : (int64_t)v->v.u64;
    return 0;
}

int sl_gguf_get_u32(const sl_gguf *g, const char *key, uint32_t *out) {
    int64_t x;
    int rc = sl_gguf_get_i64(g, key, &x);
    if (rc) return rc;
    if (x < 0 || x > UINT32_MAX)
        return sl_fail(SL_EFORMAT, "key '%s' = %" PRId64 " is out of range", key, x);
    *out = (uint32_t)x;
    return 0;
}

int sl_gguf_get_f32(const sl_gguf *g, const char *key, float *out) {
    int rc;
    const struct sl_gguf_value *v = get_checked(g, key, &rc);
    if (!v) return rc;
    if (v->type == SL_GGUF_FLOAT32 || v->type == SL_GGUF_FLOAT64)
        *out = (float)v->v.f64;
    else if (scalar_size(v->type) && v->type != SL_GGUF_BOOL)
        *out = type_is_signed(v->type) ? (float)v->v.i64 : (float)v->v.u64;
    else
        return bad_type(key, v, "a number");
    return 0;
}

int sl_gguf_get_bool(const sl_gguf *g, const char *key, bool *out) {
    int rc;
    const struct sl_gguf_value *v = get_checked(g, key, &rc);
    if (!v) return rc;
    if (v->type != SL_GGUF_BOOL) return bad_type(key, v, "a bool");
    *out = v->v.b;
    return 0;
}

int sl_gguf_get_str(const sl_gguf *g, const char *key, const char **out) {
    int rc;
    const struct sl_gguf_value *v = get_checked(g, key, &rc);
    if (!v) return rc;
    if (v->type != SL_GGUF_STRING) return bad_type(key, v, "a string");
    *out = v->v.str.s;
    return 0;
}

int sl_gguf_get_arr(const sl_gguf *g, const char *key, enum sl_gguf_type elem,
                    const struct sl_gguf_value **out) {
    int rc;
    const struct sl_gguf_value *v = get_checked(g, key, &rc);
    if (!v) return rc;
    if (v->type != SL_GGUF_ARRAY || v->v.arr.type != elem)
        return sl_fail(SL_EBADTYPE, "key '%s' is not an array of %s", key, sl_gguf_type_name(elem));
    *out = v;
    return 0;
}

static struct sl_gguf_value arr_elem(const struct sl_gguf_value *arr, uint64_t j) {
    SL_ASSERT(arr->type == SL_GGUF_ARRAY && arr->v.arr.raw && j < arr->v.arr.n);
    struct sl_gguf_value e;
    decode_scalar(arr->v.arr.type, arr->v.arr.raw + j * scalar_size(arr->v.arr.type), &e);
    return e;
}

/* Float to integer without undefined behaviour: NaN -> 0, out of range saturates. */
static int64_t f64_to_i64(double x) {
    if (!(x == x)) return 0;
    if (x >= 9223372036854775807.0) return INT64_MAX;
    if (x <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)x;
}

int64_t sl_gguf_arr_i64(const struct sl_gguf_value *arr, uint64_t j) {
    struct sl_gguf_value e = arr_elem(arr, j);
    if (e.type == SL_GGUF_FLOAT32 || e.type == SL_GGUF_FLOAT64) return f64_to_i64(e.v.f64);
    if (e.type == SL_GGUF_BOOL) return e.v.b;
    return type_is_signed(e.type) ? e.v.i64 : (int64_t)e.v.u64;
}

uint64_t sl_gguf_arr_u64(const struct sl_gguf_value *arr, uint64_t j) {
    struct sl_gguf_value e = arr_elem(arr, j);
    if (e.type == SL_GGUF_FLOAT32 || e.type == SL_GGUF_FLOAT64)
        return e.v.f64 > 0 ? (e.v.f64 >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)e.v.f64) : 0;
    if (e.type == SL_GGUF_BOOL) return e.v.b;
    return type_is_signed(e.type) ? (uint64_t)e.v.i64 : e.v.u64;
}

double sl_gguf_arr_f64(const struct sl_gguf_value *arr, uint64_t j) {
    struct sl_gguf_value e = arr_elem(arr, j);
    if (e.type == SL_GGUF_FLOAT32 || e.type == SL_GGUF_FLOAT64) return e.v.f64;
    if (e.type == SL_GGUF_BOOL) return e.v.b;
    return type_is_signed(e.type) ? (double)e.v.i64 : (double)e.v.u64;
}

const char *sl_gguf_type_name(int type) {
    static const char *const names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32",
                                        "float32", "bool", "string", "array", "uint64", "int64",
                                        "float64"};
    return type >= 0 && type < SL_GGUF_TYPE_COUNT_ ? names[type] : "?";
}
