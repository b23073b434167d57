/* The KV store file format, version 1. All integers little-endian. ALIGN = 4096.
 *
 * File layout (every region starts at a multiple of ALIGN):
 *
 *   [0, 4096)            header slot 0
 *   [4096, 8192)         header slot 1
 *   tail_off[0]          tail region 0: n_layer * n_head_kv blocks of block_stride bytes,
 *                        (layer, head) order: block n_tokens / block_tokens of each, whose
 *                        first n_tokens % block_tokens rows are committed
 *   tail_off[1]          tail region 1: the same
 *   crc_off              block checksums: one uint32 CRC32C per data block, of its first
 *                        block_bytes (K and V, not the padding), entry
 *                        (layer * n_blocks + block) * n_head_kv + head, padded to ALIGN
 *   tag_off              tags: one uint32 per position (capacity of them), padded to ALIGN
 *   data_off             data blocks: block (layer, block, head) at
 *                        data_off + ((layer * n_blocks + block) * n_head_kv + head) * block_stride
 *   file_size            = data_off + n_layer * n_blocks * n_head_kv * block_stride
 *
 * where n_blocks = ceil(capacity / block_tokens) and a block holds positions
 * [block * block_tokens, (block + 1) * block_tokens) of one (layer, KV head):
 *   [0, T*D*2)           K rows (T = block_tokens, D = head_dim, 2-byte elements)
 *   [T*D*2, 2*T*D*2)     V rows
 *   [2*T*D*2, stride)    zero padding up to block_stride = round_up(2*T*D*2, ALIGN)
 * Layer-major data keeps one layer's blocks together, so a prefill chunk's blocks of one layer
 * are one contiguous write. The file is sparse: only written blocks occupy disk.
 *
 * Header slot (4096 bytes):
 *   off size field
 *     0   8  magic "SLKVSTOR"
 *     8   4  version = 1
 *    12   4  header_bytes = 4096
 *    16   4  n_layer            1..4096
 *    20   4  n_head_kv          1..1024
 *    24   4  head_dim           1..1024
 *    28   4  dtype              1 = f16, 2 = bf16
 *    32   4  block_tokens       power of two in [4, 256]
 *    36   4  block_stride       round_up(4 * block_tokens * head_dim, 4096)
 *    40   8  capacity           positions, 1..2^40
 *    48   8  generation         >= 1; of two valid slots the higher generation is current
 *    56   8  n_tokens           committed positions, <= capacity
 *    64   8  tail_off           this slot's tail region (tail_off[slot])
 *    72   8  crc_off
 *    80   8  tag_off
 *    88   8  data_off
 *    96   8  file_size
 *   104   4  tail_crc           CRC32C of this slot's whole tail region
 *   108   4  tags_crc           CRC32C of tags[0, n_tokens) as stored (4 * n_tokens bytes)
 *   112  32  fingerprint        opaque owner id (model fingerprint)
 *   144   4  head_check         FNV-1a (32-bit: basis 2166136261, prime 16777619) of bytes
 *                                [0, 144) (version 2; 0 in version 1 files). Not a CRC32C: one
 *                                stored right after the bytes it covers would make header_crc
 *                                over both a constant (the CRC residue), checking nothing.
 *   148 3944 zero
 *  4092   4  header_crc         CRC32C of bytes [0, 4092)
 * Every offset must equal the one computed from the shape and capacity; anything else is
 * rejected, so a header cannot point a reader outside the layout. Version 1 files (no
 * head_crc) are read; every header written is version 2.
 *
 * Durability protocol (sync): write new full data blocks and their checksums' pages, then the
 * tags, fdatasync; write the partial last block of every (layer, head) into the tail region of
 * the slot NOT current, then that slot's header with generation + 1, fdatasync. A crash at
 * any point leaves the previous slot and its tail region intact. Full data blocks are written
 * once when they fill and never rewritten while committed (truncate syncs a header first).
 * Readers trust positions < n_tokens only: full blocks are checked against their checksum on
 * every read from disk, the tail region and tags once at open.
 *
 * What a reader can tell apart. The two slots always hold consecutive generations (create
 * writes 1 and 2, every sync the next). Every field a sync changes (generation, n_tokens,
 * tail_crc, tags_crc, head_check) lies in the first 512-byte sector of its slot, header_crc in
 * the last; the sectors between are zero in every header. Writes are assumed atomic per
 * 512-byte sector, not per 4096-byte slot, so an interrupted header write leaves a slot whose
 * sectors each come whole from the old or the new header: sector 0 passes head_check, the
 * reserved bytes are zero, the layout equals the other slot's, and header_crc fails. If its
 * generation is the other slot's + 1, it is the sync that never returned (nothing it covered
 * was ever reported durable): the other slot is current. If it is the other's - 1, it is the
 * old header half overwritten: the other slot is current too. Both are used without asking.
 * Anything else that fails its checks is damage, and damage to the slot that may be the newer
 * is never resolved silently by falling back (that fallback's next sync would overwrite the
 * newer state): the store refuses to open for writing and says what each slot holds. A single
 * flipped bit is located (CRC32C corrects one-bit errors in a 4096-byte slot uniquely), so the
 * damaged slot's generation and n_tokens are known exactly; a repaired header is used only
 * with recover, and only if its tail region and tags pass their checksums (else recover goes
 * back to the older slot). Damage to a slot known to be the older one is reported and the
 * newer is used (the next sync rewrites it). Indistinguishable and treated as damage:
 * multi-bit damage that leaves sector 0 self-consistent (it would need head_check to match by
 * chance), and any damage to a version 1 header (no head_check) beyond one bit. */
#ifndef SL_STORAGE_KV_FORMAT_H
#define SL_STORAGE_KV_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spotlight/kv-store.h"

#define SL_KV_FORMAT_MAGIC "SLKVSTOR"
#define SL_KV_FORMAT_VERSION 2u /* written; 1 and 2 are read */
#define SL_KV_ALIGN 4096u
#define SL_KV_HEADER_BYTES 4096u
#define SL_KV_MAX_CAPACITY (INT64_C(1) << 40)

/* Everything derived from a shape and capacity. */
struct sl_kv_layout {
    struct sl_kv_shape shape;
    int64_t capacity;
    int64_t n_blocks;     /* ceil(capacity / block_tokens) per (layer, head) */
    int32_t block_shift;  /* log2(block_tokens) */
    int64_t row_bytes;    /* head_dim * 2 */
    int64_t block_bytes;  /* 2 * block_tokens * row_bytes: K then V */
    int64_t block_stride; /* block_bytes rounded up to ALIGN */
    int64_t tail_bytes;   /* n_layer * n_head_kv * block_stride */
    int64_t tail_off[2];
    int64_t crc_off, crc_bytes; /* crc_bytes padded to ALIGN */
    int64_t tag_off, tag_bytes; /* tag_bytes padded to ALIGN */
    int64_t data_off;
    int64_t file_size;
};

struct sl_kv_header {
    struct sl_kv_layout layout;
    uint64_t generation;
    int64_t n_tokens;
    uint32_t tail_crc;
    uint32_t tags_crc;
    uint8_t fingerprint[32];
};

/* Validates the shape (SL_EINVAL with detail) and fills the layout; overflow-safe. */
int sl_kv_layout_compute(const struct sl_kv_shape *shape, int64_t capacity,
                         struct sl_kv_layout *out);

/* Byte offset in the file of data block (layer, block, head). */
int64_t sl_kv_layout_block_offset(const struct sl_kv_layout *l, int32_t layer, int64_t block,
                                  int32_t head);

/* Index of that block's checksum entry. */
int64_t sl_kv_layout_block_index(const struct sl_kv_layout *l, int32_t layer, int64_t block,
                                 int32_t head);

/* FNV-1a 32-bit of n bytes: a header's head_check over [0, 144). */
uint32_t sl_kv_head_check(const uint8_t *p, size_t n);

/* Writes a header slot (slot 0 or 1 selects tail_off). */
void sl_kv_header_encode(const struct sl_kv_header *h, int slot, uint8_t out[SL_KV_HEADER_BYTES]);

/* Parses one slot of untrusted bytes: SL_EBADMAGIC, SL_EVERSION, SL_ECORRUPT (header crc),
 * SL_EFORMAT (fields out of range or offsets not the computed ones), each with a detail. */
int sl_kv_header_decode(const uint8_t in[SL_KV_HEADER_BYTES], int slot, struct sl_kv_header *out);

/* Picks the header to use from both slots (2 * 4096 bytes), by the rules above. */
enum {
    SL_KV_PICK_RECOVER = 1,   /* damage to the newer slot: use its one-bit repair (fallback: the
                                 older slot), or the older slot; the caller may then overwrite */
    SL_KV_PICK_READ_ONLY = 2, /* damage to the newer slot: use the older one, said in a warning */
};
struct sl_kv_pick {
    struct sl_kv_header h; /* the header to use */
    int slot;              /* its slot: the next sync writes the other one */
    bool repaired;         /* h is a one-bit repair of a damaged slot (RECOVER only) */
    bool has_fallback;     /* RECOVER: the older state to use when h's tail or tags fail
                              (the next sync then overwrites h's slot) */
    struct sl_kv_header fb;
    int fb_slot;
};
/* 0; or SL_ECORRUPT with a detail naming both slots' generations and positions (where
 * readable) when the newer state is damaged and no flag allows going on; SL_EBADMAGIC when
 * neither slot carries the magic; else the error of the slot that cannot be read. */
int sl_kv_header_pick(const uint8_t in[2 * SL_KV_HEADER_BYTES], unsigned flags,
                      struct sl_kv_pick *out);

#endif
