/* Hash functions that turn post-RoPE query and key vectors into binary codes, and the file
 * that stores them (core/hash.c: definitions, initialisation, encoding; core/hash-file.c: the
 * file). Not installed: the engine, the trainer and the evaluation tools use it from inside.
 *
 * One hash function per head maps a vector x of d = head_dim floats to b = bits bits:
 *   MLP (flag SL_HASH_MLP)         r = SiLU(W1 x + b1) + x;  h = W2 r + b2 + r   (d -> d -> d)
 *                                  without the flag, h = x
 *   projection (flag SL_HASH_PROJ) y = P h   (P is b x d);   without the flag, y = h (b == d)
 *   code                           bit i = 1 when y[i] > 0 (0, -0 and NaN give 0)
 * b is a multiple of 32. Codes are packed into W = ceil(b / 64) uint64 words per vector: bit i
 * is bit (i % 64) of word i / 64, and the bits from b up to 64 W are zero in every code, so
 * they match between any query and key and shift every score by the same amount (rank-neutral;
 * a 32-bit code costs a full word). Matrices are row-major (out x in): W1[o * d + i].
 *
 * Kinds (how a hash is initialised; the file records it, the encoder does not care):
 *   SL_HASH_SPOTLIGHT  MLP, plus a projection when b != d. W1, b1, W2, b2 ~ N(0, 1) * 1e-3,
 *                      so an untrained function is ~ sign(x) (or ~ SimHash of x with P);
 *                      P ~ N(0, 1) / sqrt(d), which keeps |P h| ~ |h| for training.
 *   SL_HASH_SIMHASH    projection only: P ~ N(0, 1), code = sign(P x) (Charikar's SimHash).
 * GQA: every layer has one KEY function per KV head (n_head_kv) and one QUERY function per
 * query head (n_head_q). Keys and queries get separate functions because they come from
 * different projections; a query head's scores are compared against its KV head's key codes.
 *
 * Random numbers (deterministic for a seed): every function has its own stream, so one layer
 * can be re-initialised (sl_hash_reset_layer) to exactly what sl_hash_create made.
 *   mix(z)   = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
 *              z ^ (z >> 31)                                         (splitmix64's finaliser)
 *   state    = mix(seed ^ mix(layer << 32 | role << 16 | head))      (role: key 0, query 1)
 *              for W1, b1, W2, b2; P comes from its own stream, role 2 and head = the KV
 *              head (a query head's KV head is head / (n_head_q / n_head_kv)), so a KV head's
 *              key function and its group's query functions start with the SAME projection:
 *              SimHash needs it, and untrained Spotlight codes of q and k are then comparable
 *   next()   = state += 0x9E3779B97F4A7C15; mix(state)               (splitmix64)
 *   gaussian = Box-Muller in double: u1 = ((next() >> 11) + 1) * 2^-53, u2 = (next() >> 11) *
 *              2^-53, r = sqrt(-2 ln u1): r cos(2 pi u2), then r sin(2 pi u2), then a new pair
 * drawn in storage order (W1, b1, W2, b2; then P; each row-major) and rounded to float. Identical
 * wherever libm's log, cos and sin agree (glibc's do across x86-64 machines).
 *
 * Hash file, version 1. All integers and floats little-endian; f32 is IEEE-754 binary32.
 *   off size field
 *     0   8  magic "SLHASH01"
 *     8   4  version = 1
 *    12   4  header_bytes = 128
 *    16  32  model fingerprint (sl_model_fingerprint; all zero: not tied to a model)
 *    48   4  n_layer        1..4096
 *    52   4  n_head_q       1..1024, a multiple of n_head_kv
 *    56   4  n_head_kv      1..1024
 *    60   4  head_dim (d)   1..1024
 *    64   4  bits (b)       32..4096, a multiple of 32
 *    68   4  kind           1 = Spotlight, 2 = SimHash
 *    72   4  flags          bit 0 = MLP, bit 1 = projection, others 0; no projection: b == d
 *    76   4  note_bytes     0..65536
 *    80   8  seed
 *    88   8  file_bytes     the whole file's size, = the size the fields above imply
 *    96  28  zero
 *   124   4  header_crc     CRC32C of bytes [0, 124)
 *   128      layer records, n_layer x 32 bytes:
 *              +0  4  status   0 = initial weights, 1 = training in progress, 2 = trained
 *              +4  4  zero
 *              +8  8  steps    optimiser steps taken, < 2^63
 *             +16  4  loss     f32, last training loss (NaN: none)
 *             +20  4  recall   f32, held-out top-k recall (NaN: not measured)
 *             +24  4  budget   f32, the selection budget (fraction) recall was measured at
 *             +28  4  zero
 *   N = 128 + 32 n_layer
 *     N      note: note_bytes bytes of free text without NUL (trainer settings, corpus, ...)
 *     N+nb 4 meta_crc       CRC32C of the layer records and the note
 *   weights_off = N + note_bytes + 4; then for each layer l in order:
 *            layer_floats f32 weights, then a u32 CRC32C of those 4 * layer_floats bytes
 *   file_bytes = weights_off + n_layer * (4 * layer_floats + 4)
 * A layer's weights: the n_head_kv KEY functions (head order), then the n_head_q QUERY
 * functions; each function is W1 (d*d), b1 (d), W2 (d*d), b2 (d) when MLP, then P (b*d) when
 * projection, so fn_floats = [MLP] (2 d^2 + 2 d) + [proj] b d and layer_floats =
 * (n_head_kv + n_head_q) * fn_floats. The format is canonical (no slack, reserved bytes zero,
 * derived fields checked), so loading and saving a valid file reproduces it byte for byte.
 * Weights must be finite; a layer's CRC guards it alone, so a trainer can tell a damaged layer
 * from the rest. */
#ifndef SL_CORE_HASH_H
#define SL_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "spotlight/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_HASH_MAGIC "SLHASH01"
#define SL_HASH_VERSION 1u
#define SL_HASH_HEADER_BYTES 128u
#define SL_HASH_LAYER_RECORD_BYTES 32u
#define SL_HASH_MAX_NOTE 65536u
#define SL_HASH_MAX_LAYERS 4096
#define SL_HASH_MAX_HEADS 1024
#define SL_HASH_MAX_DIM 1024
#define SL_HASH_MAX_BITS 4096

enum sl_hash_kind {
    SL_HASH_SPOTLIGHT = 1,
    SL_HASH_SIMHASH = 2,
};

enum sl_hash_flags {
    SL_HASH_MLP = 1u,  /* W1, b1, W2, b2 present */
    SL_HASH_PROJ = 2u, /* P present */
};

enum sl_hash_role {
    SL_HASH_KEY = 0,
    SL_HASH_QUERY = 1,
};

enum sl_hash_status {
    SL_HASH_INITIAL = 0,  /* weights as sl_hash_create made them */
    SL_HASH_PARTIAL = 1,  /* training started; resumable */
    SL_HASH_TRAINED = 2,
};

struct sl_hash_params {
    int32_t n_layer, n_head_q, n_head_kv, head_dim, bits;
    enum sl_hash_kind kind;
    uint64_t seed;
};

/* Spotlight, 64 bits, a fixed seed; the shape is zero and must be set (see _from_config). */
struct sl_hash_params sl_hash_default_params(void);

/* Copies a model's layer and head counts and head_dim into p; leaves kind, bits, seed. */
void sl_hash_params_from_config(const struct sl_model_config *cfg, struct sl_hash_params *p);

/* One head's function. Pointers are views into the owning sl_hash (valid until it is freed);
 * absent parts are NULL. */
struct sl_hash_fn {
    int32_t d, bits;
    uint32_t flags; /* enum sl_hash_flags */
    float *w1;      /* (d, d) out x in, or NULL */
    float *b1;      /* (d) */
    float *w2;      /* (d, d) */
    float *b2;      /* (d) */
    float *proj;    /* (bits, d), or NULL */
};

/* What training recorded for one layer (the file's layer record). */
struct sl_hash_layer_info {
    enum sl_hash_status status;
    int64_t steps;
    float loss, recall, budget; /* NaN when unknown */
};

typedef struct sl_hash sl_hash;

/* Allocates and initialises every function as the kind says (see above). SL_EINVAL with a
 * detail for a shape outside the file's limits, SL_ENOMEM. Free with sl_hash_free(). */
int sl_hash_create(const struct sl_hash_params *p, sl_hash **out);

/* Allocates with the given flags and all weights zero, layers SL_HASH_INITIAL (the loader
 * fills it; a trainer may start a variant from it). Same errors as sl_hash_create. */
int sl_hash_alloc(const struct sl_hash_params *p, uint32_t flags, sl_hash **out);

void sl_hash_free(sl_hash *h); /* NULL is a no-op */

/* Checks a shape and flags against the limits above (the file's): 0, or SL_EINVAL with a
 * detail. For a valid one, the floats of one function (fn_floats above). */
int sl_hash_check_shape(const struct sl_hash_params *p, uint32_t flags);
int64_t sl_hash_shape_fn_floats(const struct sl_hash_params *p, uint32_t flags);

const struct sl_hash_params *sl_hash_get_params(const sl_hash *h);
uint32_t sl_hash_flags(const sl_hash *h);

/* A function by layer and head; out-of-range indices are programmer errors (assert). */
const struct sl_hash_fn *sl_hash_query_fn(const sl_hash *h, int32_t layer, int32_t q_head);
const struct sl_hash_fn *sl_hash_key_fn(const sl_hash *h, int32_t layer, int32_t kv_head);
/* The same, writable, for trainers. */
struct sl_hash_fn *sl_hash_fn_mut(sl_hash *h, enum sl_hash_role role, int32_t layer, int32_t head);

/* All of one layer's weights as one array in file order (*n_floats of them): what an
 * optimiser updates and what the layer CRC covers. */
float *sl_hash_layer_weights(sl_hash *h, int32_t layer, int64_t *n_floats);
int64_t sl_hash_fn_floats(const sl_hash *h);

void sl_hash_layer_info_get(const sl_hash *h, int32_t layer, struct sl_hash_layer_info *out);
/* SL_EINVAL for an unknown status or negative steps. */
int sl_hash_layer_info_set(sl_hash *h, int32_t layer, const struct sl_hash_layer_info *info);

/* Re-initialises one layer's functions to exactly what sl_hash_create gave them and marks the
 * layer SL_HASH_INITIAL. */
void sl_hash_reset_layer(sl_hash *h, int32_t layer);

/* Free-text note stored in the file; "" when none. Setting copies it (SL_EINVAL when longer
 * than SL_HASH_MAX_NOTE bytes, SL_ENOMEM). */
const char *sl_hash_note(const sl_hash *h);
int sl_hash_set_note(sl_hash *h, const char *note);

/* ---- encoding -------------------------------------------------------------------------- */

/* uint64 words per code. */
static inline int32_t sl_hash_code_words(int32_t bits) { return (bits + 63) / 64; }

/* Floats of scratch sl_hash_forward / sl_hash_encode need for n vectors (bounded: batches are
 * processed in slices, so this stops growing past a few hundred vectors). */
size_t sl_hash_work_floats(int32_t d, int32_t bits, int64_t n);

/* Pre-sign values y (n, bits) of n vectors x (n, d): what training differentiates and what
 * encode thresholds. A few vectors (decode: one) take plain loops, AVX2 where the CPU has it;
 * more take sgemm. The two round differently (they agree to 1e-5 of the largest value). x, y and work must not
 * overlap. 0, or SL_EINVAL (d or bits not the function's, NULL buffers, n < 0). */
int sl_hash_forward(const struct sl_hash_fn *f, int32_t d, int32_t bits, const float *x, int64_t n,
                    float *y, float *work);

/* Codes (n, W) of n vectors x (n, d): forward, then sign and pack. Same errors. */
int sl_hash_encode(const struct sl_hash_fn *f, int32_t d, int32_t bits, const float *x, int64_t n,
                   uint64_t *codes, float *work);

/* Packs n rows of bits pre-sign values into codes (n, W). */
void sl_hash_pack(const float *y, int64_t n, int32_t bits, uint64_t *codes);

/* ---- the file (core/hash-file.c) ------------------------------------------------------- */

/* Writes h atomically: a temporary file in the same directory, fsync, rename over path, fsync
 * of the directory. fingerprint NULL stores h's own (sl_hash_fingerprint). 0, or -errno /
 * SL_ENOMEM / SL_EINVAL (a weight is not finite: a diverged trainer's state would not load
 * again); a failure before the rename leaves path as it was and no temporary file. */
int sl_hash_save(const sl_hash *h, const uint8_t fingerprint[32], const char *path);

/* The file's bytes in a malloc'd buffer (*out, *n_out; the caller frees). Same errors. */
int sl_hash_serialize(const sl_hash *h, const uint8_t fingerprint[32], uint8_t **out, size_t *n_out);

/* Reads a hash file. expect_fingerprint NULL skips the model check. SL_EBADMAGIC,
 * SL_EVERSION, SL_ETRUNCATED, SL_ECORRUPT (a CRC), SL_EFORMAT (fields out of range, trailing
 * bytes, non-finite weights), SL_EMISMATCH (another model), SL_ENOMEM, -errno; each with a
 * detail. *out is set only on success; free with sl_hash_free(). */
int sl_hash_load(const char *path, const uint8_t expect_fingerprint[32], sl_hash **out);
int sl_hash_load_bytes(const void *data, size_t n, const uint8_t expect_fingerprint[32],
                       sl_hash **out);
/* The model fingerprint h carries: the file's when loaded, zeros when created, or what was
 * set. */
void sl_hash_fingerprint(const sl_hash *h, uint8_t out[32]);
void sl_hash_set_fingerprint(sl_hash *h, const uint8_t fingerprint[32]);

#ifdef __cplusplus
}
#endif
#endif
