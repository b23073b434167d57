/* The key-code file beside a KV store (its path + ".codes"): the sparse layers' resident code
 * table as it stood when the store was last closed, so that reopening the store (generate
 * --resume) reads the codes back instead of reading and hashing every stored key again.
 *
 * A code file is used only when it was made for exactly this store content (the store's
 * content id: positions, tags, block checksums, open rows), model, hash function (the
 * SHA-256 of its serialized form) and table shape, and its payload passes its checksum.
 * Anything else (stale, foreign, damaged) is ignored and the keys are hashed again, so a lost
 * or bad code file costs time, never a wrong code.
 *
 * Layout, little-endian:
 *    0   8  magic "SLCODES1"
 *    8   4  version = 1
 *   12   4  header_bytes = 128
 *   16   4  n_layer
 *   20   4  n_head_kv
 *   24   4  words per code (64-bit)
 *   28   4  first_layer: codes of layers [first_layer, n_layer) follow
 *   32   8  n_tokens: positions
 *   40  32  model fingerprint
 *   72  32  hash id
 *  104   4  store tags_crc
 *  108   4  store blocks_crc
 *  112   4  store open_crc
 *  116   4  payload_crc: CRC32C of the payload
 *  120   4  zero
 *  124   4  header_crc: CRC32C of bytes [0, 124)
 *  128      payload: (layer, head, position, word) uint64 */
#ifndef SL_CORE_CODE_FILE_H
#define SL_CORE_CODE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "spotlight/kv-store.h"

#define SL_CODE_FILE_SUFFIX ".codes"

/* A code table in memory: codes of (layer, head, position) at
 * codes + ((layer * n_head_kv + head) * n_ctx + position) * words. */
struct sl_code_table {
    uint64_t *codes;
    int32_t n_layer, n_head_kv, words;
    int32_t first_layer; /* layers below hold no codes */
    int64_t n_ctx;
};

/* What the codes were computed from. */
struct sl_code_source {
    uint8_t model[32];
    uint8_t hash[32];
    struct sl_kv_content_id store; /* store.n_tokens: the positions covered */
};

/* "<store path>.codes" into a new string (free it); NULL when out of memory. */
char *sl_code_file_path(const char *store_path);

/* Writes the codes of positions [0, src->store.n_tokens) of layers [first_layer, n_layer)
 * atomically to path. 0, or an error with a detail (nothing left behind). */
int sl_code_file_save(const char *path, const struct sl_code_table *t, const struct sl_code_source *src);

/* Reads into t the codes of positions [0, src->store.n_tokens) of every layer from
 * t->first_layer on, when the file at path was saved for exactly src with t's shape (its
 * first layer at most t's). 0: loaded. Otherwise nothing usable, with a detail: -ENOENT (no
 * file), SL_EMISMATCH (made for another store content, model, hash or shape), SL_ECORRUPT,
 * SL_ETRUNCATED, SL_EBADMAGIC, SL_EVERSION, or an I/O error; t's codes may then hold garbage
 * at those positions (hash them again). */
int sl_code_file_load(const char *path, const struct sl_code_table *t, const struct sl_code_source *src);

#endif
