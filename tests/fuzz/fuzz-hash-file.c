/* libFuzzer target: the hash file reader (core/hash.h) on arbitrary bytes. Each input is
 * loaded as it is and again with every checksum it has room for recomputed, since a mutation
 * almost never keeps a CRC32C valid and the field checks behind the checksums would otherwise
 * go unexplored; each version without and with an expected (all-zero) fingerprint. Anything
 * may be rejected; nothing may crash, leak or read out of bounds, every error must be
 * negative and leave the output NULL, and what loads must be sane: shapes inside the limits,
 * every layer able to encode, and the format canonical, so re-serializing gives back exactly
 * the bytes loaded. Build with SL_FUZZ=ON and SL_SANITIZE=address,undefined (tools/fuzz.sh);
 * seeds from tests/fuzz/make-hash-seeds.c. */
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "spotlight/error.h"
#include "storage/crc32c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Encodes one vector through the first KEY and the last QUERY function of every layer. */
static void encode_some(const sl_hash *h) {
    const struct sl_hash_params *p = sl_hash_get_params(h);
    float x[SL_HASH_MAX_DIM];
    for (int i = 0; i < p->head_dim; i++) x[i] = (float)((i * 37) % 11) - 5.0f;
    float *work = malloc(sl_hash_work_floats(p->head_dim, p->bits, 1) * sizeof(float));
    uint64_t codes[SL_HASH_MAX_BITS / 64];
    if (!work) abort();
    for (int32_t l = 0; l < p->n_layer; l++) {
        if (sl_hash_encode(sl_hash_key_fn(h, l, 0), p->head_dim, p->bits, x, 1, codes, work) ||
            sl_hash_encode(sl_hash_query_fn(h, l, p->n_head_q - 1), p->head_dim, p->bits, x, 1,
                           codes, work))
            abort();
    }
    free(work);
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the header CRC, and the metadata and layer CRCs where the header's fields place
 * them inside the buffer (hash.h's layout). */
static void fix_crcs(uint8_t *b, size_t size) {
    if (size < SL_HASH_HEADER_BYTES) return;
    wr32(b + 124, sl_crc32c(0, b, 124));
    struct sl_hash_params p = {
        .n_layer = (int32_t)rd32(b + 48), .n_head_q = (int32_t)rd32(b + 52),
        .n_head_kv = (int32_t)rd32(b + 56), .head_dim = (int32_t)rd32(b + 60),
        .bits = (int32_t)rd32(b + 64), .kind = (enum sl_hash_kind)rd32(b + 68)};
    uint32_t flags = rd32(b + 72);
    uint64_t note = rd32(b + 76);
    if (p.n_layer < 1 || p.n_layer > SL_HASH_MAX_LAYERS || note > SL_HASH_MAX_NOTE) return;
    uint64_t meta_end = SL_HASH_HEADER_BYTES + 32 * (uint64_t)p.n_layer + note;
    if (meta_end + 4 > size) return;
    wr32(b + meta_end, sl_crc32c(0, b + SL_HASH_HEADER_BYTES, meta_end - SL_HASH_HEADER_BYTES));
    if (sl_hash_check_shape(&p, flags)) return;
    uint64_t layer = 4 * (uint64_t)sl_hash_shape_fn_floats(&p, flags) * (uint64_t)(p.n_head_q + p.n_head_kv);
    uint64_t off = meta_end + 4;
    for (int32_t l = 0; l < p.n_layer && off + layer + 4 <= size; l++, off += layer + 4)
        wr32(b + off + layer, sl_crc32c(0, b + off, layer));
}

static void check(const uint8_t *data, size_t size) {
    static const uint8_t zero_fp[32];
    sl_hash *h = NULL;
    int rc = sl_hash_load_bytes(data, size, NULL, &h);
    if (rc > 0 || (rc < 0) != (h == NULL)) abort();
    sl_hash *g = NULL;
    int rc2 = sl_hash_load_bytes(data, size, zero_fp, &g);
    /* the fingerprint check can only turn the outcome into SL_EMISMATCH (which, coming right
     * after the header, also pre-empts a later error) */
    if (rc2 > 0 || (rc2 < 0) != (g == NULL) || (rc2 != rc && rc2 != SL_EMISMATCH)) abort();
    sl_hash_free(g);
    if (rc) return;

    const struct sl_hash_params *p = sl_hash_get_params(h);
    if (p->n_layer < 1 || p->n_layer > SL_HASH_MAX_LAYERS || p->head_dim < 1 ||
        p->head_dim > SL_HASH_MAX_DIM || p->bits < 64 || p->bits > SL_HASH_MAX_BITS ||
        p->n_head_q < 1 || p->n_head_kv < 1 || p->n_head_q % p->n_head_kv)
        abort();
    encode_some(h);
    uint8_t *out = NULL;
    size_t n = 0;
    if (sl_hash_serialize(h, NULL, &out, &n) != 0 || n != size || memcmp(out, data, size) != 0)
        abort();
    free(out);
    sl_hash_free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check(data, size);
    uint8_t *fixed = malloc(size + 1);
    if (!fixed) abort();
    memcpy(fixed, data, size);
    fix_crcs(fixed, size);
    check(fixed, size);
    free(fixed);
    return 0;
}
