/* Dumps of post-RoPE queries and keys, one file per layer: what `spotlight dump-qk` writes
 * from real text and what hash training and retrieval evaluation read.
 *
 * File layout (little-endian; f16 values are IEEE binary16 bits):
 *   off size field
 *     0   8  magic "SLQKDUMP"
 *     8   4  version = 1
 *    12   4  header_bytes = 4096 (data starts here)
 *    16   4  layer
 *    20   4  n_head             query heads
 *    24   4  n_head_kv
 *    28   4  head_dim
 *    32   4  seq_len            positions per sequence
 *    36   4  n_seq              sequences in the file
 *    40  32  model fingerprint  (opaque; zero when the writer had none)
 *    72   4  data_crc           CRC32C of all data bytes
 *    76 4016 zero
 *  4092   4  header_crc         CRC32C of bytes [0, 4092)
 *   4096 ..  for each sequence s, for each position p in 0..seq_len-1, one row:
 *              q (n_head, head_dim) f16, then k (n_head_kv, head_dim) f16
 *            row_bytes = (n_head + n_head_kv) * head_dim * 2; file size exactly
 *            4096 + n_seq * seq_len * row_bytes
 * Rows are in position order because evaluation produces them that way, so the writer
 * appends and checksums in one pass. Files are written under a temporary name and renamed
 * only when every layer is complete: a dump directory never holds a half-written layer. */
#ifndef SL_CORE_QK_DUMP_H
#define SL_CORE_QK_DUMP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "storage/mapped-file.h"

struct sl_qk_shape {
    int32_t n_layer, n_head, n_head_kv, head_dim;
    int32_t seq_len;
};

/* ---- writer ---- */

struct sl_qk_writer;

/* Opens dir/layer-XX.qk.partial for every layer (dir must exist). */
int sl_qk_writer_open(const char *dir, const struct sl_qk_shape *shape,
                      const uint8_t fingerprint[32], struct sl_qk_writer **out);

/* An sl_qk_tap_fn (user = the writer): appends the rows of positions pos0.. of one layer of
 * the current sequence; positions must arrive in order from 0. */
int sl_qk_writer_tap(int32_t layer, int64_t pos0, int64_t n, const float *q, const float *k,
                     void *user);

/* Ends the current sequence: every layer must hold exactly seq_len rows of it. */
int sl_qk_writer_end_seq(struct sl_qk_writer *w);

/* Writes the headers, syncs and renames every layer into place. */
int sl_qk_writer_finish(struct sl_qk_writer *w);

/* Frees; removes the partial files unless finished. NULL is a no-op. */
void sl_qk_writer_free(struct sl_qk_writer *w);

/* ---- reader ---- */

struct sl_qk_dump {
    struct sl_mapped_file file;
    int32_t layer, n_head, n_head_kv, head_dim, seq_len, n_seq;
    uint8_t fingerprint[32];
    const uint16_t *rows; /* (n_seq, seq_len, n_head + n_head_kv, head_dim) f16 */
};

/* Maps and checks a layer file (magic, version, sizes, both checksums). 0 or SL_E*. */
int sl_qk_dump_open(const char *path, struct sl_qk_dump *out);
void sl_qk_dump_close(struct sl_qk_dump *d);

/* Converts the queries (q = true) or keys of sequence s, head h, to f32: (seq_len, head_dim). */
void sl_qk_dump_head_f32(const struct sl_qk_dump *d, int32_t s, bool q, int32_t h, float *out);

/* Path of a layer's file in dir. */
void sl_qk_dump_path(const char *dir, int32_t layer, char *buf, size_t cap);

#endif
