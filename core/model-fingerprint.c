/* A model's fingerprint: SHA-256 of its GGUF file from byte 0 up to the start of the tensor
 * data (header, every metadata key/value, every tensor name/shape/type/offset, padding).
 * Those bytes pin the architecture, hyper-parameters, tokenizer, quantization types and tensor
 * layout, so files derived from a model (hash files, KV stores) can refuse a different one.
 * The weights themselves are not hashed: that would read gigabytes per load, and the cases it
 * would add (same metadata and tensor types, different weights: a fine-tune saved without
 * renaming) are rare enough to leave to the user. The tokenizer vocabulary dominates the
 * hashed bytes (a few MB). */
#include <string.h>

#include "core/gguf-internal.h"
#include "core/internal.h"
#include "core/sha256.h"
#include "spotlight/model.h"

int sl_model_fingerprint(const sl_model *m, uint8_t out[32]) {
    if (!m || !out) return sl_fail(SL_EINVAL, "sl_model_fingerprint: NULL argument");
    const sl_gguf *g = sl_model_gguf(m);
    /* An opened handle keeps the whole file (mapped or in memory); data_offset <= size holds
     * for any model with weights, the clamp only guards the arithmetic. */
    uint64_t n = g->data_offset < g->size ? g->data_offset : g->size;
    if (!g->bytes && n) return sl_fail(SL_EINVAL, "model has no file bytes to fingerprint");
    sl_sha256(g->bytes, (size_t)n, out);
    return 0;
}
