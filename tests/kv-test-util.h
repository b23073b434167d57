/* Shared helpers for the KV store suites (test-kv-store.c, test-kv-faults.c): temporary
 * directories, a deterministic RNG, the tier configurations every round-trip case runs over,
 * a plain reference model of the store (arrays, no cleverness), a bitwise CRC32C and the
 * file layout recomputed from the byte-by-byte description in storage/kv-format.h, so the
 * tests check the store against the documents rather than against its own code.
 *
 * Check helpers return 0 when the store agrees with the reference, the store's negative error
 * when a call failed, and 1 on a data mismatch; kvt_msg() then describes the first difference. */
#ifndef SL_TESTS_KV_TEST_UTIL_H
#define SL_TESTS_KV_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spotlight/kv-store.h"

/* ---- tiers ---------------------------------------------------------------------------------- */
struct kvt_tier {
    const char *name;
    enum sl_kv_tier tier;
    bool buffered_io;
    bool no_uring;
};
enum { KVT_HOST = 0, KVT_FILE_URING_DIRECT, KVT_FILE_URING_BUFFERED, KVT_FILE_PREAD, KVT_N_TIERS };
extern const struct kvt_tier kvt_tiers[KVT_N_TIERS];
/* Parameter arrays of tier indices: every tier, and the file tiers. */
extern int kvt_all_tiers[4], kvt_file_tiers[3];
/* A Criterion test run once per tier index of arr (an int array above); the body reads *ti. */
#define KVT_TIER_TEST(suite, name, arr)                                                        \
    ParameterizedTestParameters(suite, name) {                                                 \
        return cr_make_param_array(int, arr, sizeof arr / sizeof arr[0]);                      \
    }                                                                                          \
    ParameterizedTest(int *ti, suite, name, .timeout = 60)

/* Params for a tier: capacity, path (file tiers), the fixed test fingerprint. */
struct sl_kv_store_params kvt_params(const struct kvt_tier *t, int64_t capacity, const char *path);
extern const uint8_t kvt_fingerprint[32];

/* ---- random --------------------------------------------------------------------------------- */
uint64_t kvt_rand(uint64_t *state);                /* splitmix64 */
int64_t kvt_rand_below(uint64_t *state, int64_t n); /* [0, n), n > 0 */

/* ---- files ---------------------------------------------------------------------------------- */
char *kvt_tmpdir(void);                           /* mkdtemp under $TMPDIR or /tmp; NULL on error */
void kvt_rmtree(const char *dir);
void kvt_cleanup(void);                          /* removes every kvt_tmpdir: a suite .fini */
char *kvt_join(const char *dir, const char *name); /* malloc'd "dir/name" */
bool kvt_exists(const char *path);
int kvt_dir_entries(const char *dir);             /* entries besides . and .., or -1 */
int64_t kvt_file_size(const char *path);          /* -1 on error */
int kvt_read_at(const char *path, int64_t off, void *buf, size_t len);        /* 0 or -1 */
int kvt_write_at(const char *path, int64_t off, const void *buf, size_t len); /* 0 or -1 */
int kvt_flip_bit(const char *path, int64_t off, int bit);                    /* 0 or -1 */
int kvt_copy_file(const char *src, const char *dst);                          /* 0 or -1 */

/* ---- the format as documented --------------------------------------------------------------- */
uint32_t kvt_crc32c(uint32_t crc, const void *data, size_t n); /* bitwise, 0 to start */
uint32_t kvt_fnv1a(const void *data, size_t n);                /* FNV-1a 32-bit: head_check */

struct kvt_layout {
    int64_t n_blocks, row_bytes, block_bytes, block_stride, tail_bytes;
    int64_t tail_off[2], crc_off, crc_bytes, tag_off, tag_bytes, data_off, file_size;
};
void kvt_layout_of(const struct sl_kv_shape *s, int64_t capacity, struct kvt_layout *out);
int64_t kvt_block_off(const struct kvt_layout *l, const struct sl_kv_shape *s, int32_t layer,
                      int64_t block, int32_t head);
uint32_t kvt_le32(const uint8_t *p);
uint64_t kvt_le64(const uint8_t *p);
void kvt_put32(uint8_t *p, uint32_t v);
/* Both header slots of a store file; current slot by the documented rule (valid crc, magic,
 * higher generation), or -1 when neither is valid. */
int kvt_read_slots(const char *path, uint8_t out[8192]);
int kvt_current_slot(const uint8_t slots[8192]);
bool kvt_slot_valid(const uint8_t *slot);

/* ---- reference model ------------------------------------------------------------------------ */
struct kvt_ref {
    struct sl_kv_shape shape;
    int64_t capacity;
    uint16_t *k, *v;   /* (n_layer, capacity, n_head_kv, head_dim): committed and pending rows */
    uint32_t *tags;    /* capacity */
    int64_t n;         /* committed positions */
    int64_t *pending;  /* per layer: rows appended after the committed ones */
};
void kvt_ref_init(struct kvt_ref *r, const struct sl_kv_shape *s, int64_t capacity);
void kvt_ref_free(struct kvt_ref *r);
void kvt_ref_copy(struct kvt_ref *dst, const struct kvt_ref *src); /* dst uninitialised */
const uint16_t *kvt_ref_k(const struct kvt_ref *r, int32_t layer, int64_t pos, int32_t head);
const uint16_t *kvt_ref_v(const struct kvt_ref *r, int32_t layer, int64_t pos, int32_t head);

/* Store operations mirrored into the reference when (and only when) the store reports
 * success. Return the store's rc, or 2 when the store accepted something the contract says
 * it must reject (kvt_msg says what). */
int kvt_append(sl_kv_store_t s, struct kvt_ref *r, int32_t layer, int64_t n, uint64_t *rng);
int kvt_commit(sl_kv_store_t s, struct kvt_ref *r, int64_t n, bool tags, uint64_t *rng);
int kvt_discard(sl_kv_store_t s, struct kvt_ref *r);
int kvt_truncate(sl_kv_store_t s, struct kvt_ref *r, int64_t n);
/* Appends n_more positions to every layer in random chunk sizes (1, 7, 16, 33, ...), committing
 * in between whenever all layers have pending rows; ends with everything committed. */
int kvt_fill(sl_kv_store_t s, struct kvt_ref *r, int64_t n_more, uint64_t *rng);

/* Compares rows of one gather descriptor's outputs with the reference. */
int kvt_check_rows(const struct kvt_ref *r, const struct sl_kv_gather *g);
int kvt_check_range(sl_kv_store_t s, const struct kvt_ref *r, int32_t layer, int32_t head,
                    int64_t p0, int64_t n);
/* n_tokens, every (layer, head) over [0, n) and the tags. */
int kvt_check_all(sl_kv_store_t s, const struct kvt_ref *r);
/* A random gather over every (layer, head) of nidx positions; 0, rc or 1. */
int kvt_check_gather_random(sl_kv_store_t s, const struct kvt_ref *r, int64_t nidx, uint64_t *rng);

/* Gather descriptors with owned buffers (outputs pre-filled with KVT_SENTINEL bytes). */
#define KVT_SENTINEL 0xA5
struct kvt_gset {
    struct sl_kv_gather *g;
    int32_t n;
};
void kvt_gset_add(struct kvt_gset *gs, const struct kvt_ref *r, int32_t layer, int32_t head,
                  const int64_t *idx, int64_t first, int64_t n);
void kvt_gset_free(struct kvt_gset *gs);
int kvt_gset_check(const struct kvt_gset *gs, const struct kvt_ref *r);

const char *kvt_msg(void);

#endif
