/* SHA-256 (FIPS 180-4; test vectors from FIPS 180-2 appendix B). Used to fingerprint a model
 * (core/model-fingerprint.c) so that files derived from it (hash files, KV stores) can refuse
 * to load against a different one. Not for secrets: plain C, no constant-time concerns. */
#ifndef SL_CORE_SHA256_H
#define SL_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SL_SHA256_BYTES 32

/* Streaming state; init, update any number of times, final once. */
struct sl_sha256 {
    uint32_t h[8];
    uint64_t n_bytes; /* total bytes hashed so far */
    uint8_t buf[64];  /* the incomplete block */
    uint32_t buf_len;
};

void sl_sha256_init(struct sl_sha256 *s);
void sl_sha256_update(struct sl_sha256 *s, const void *data, size_t n);
/* Writes the digest; the state must be initialised again before reuse. */
void sl_sha256_final(struct sl_sha256 *s, uint8_t out[SL_SHA256_BYTES]);

/* One-shot digest of n bytes. */
void sl_sha256(const void *data, size_t n, uint8_t out[SL_SHA256_BYTES]);

#endif
