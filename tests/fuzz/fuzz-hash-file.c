/* libFuzzer target: the hash file reader (core/hash.h) on arbitrary bytes. Each input is
 * loaded without and with an expected (all-zero) fingerprint. Anything may be rejected;
 * nothing may crash, leak or read out of bounds, every error must be negative and leave the
 * output NULL, and what loads must be sane: shapes inside the limits, every function able to
 * encode, and the format canonical, so re-serializing gives back exactly the input bytes.
 * Build with SL_FUZZ=ON and SL_SANITIZE=address,undefined (tools/fuzz.sh); seeds from
 * tests/fuzz/make-hash-seeds.c. */
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "spotlight/error.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
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
    if (rc) return 0;

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
    return 0;
}
