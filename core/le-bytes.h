/* Little-endian integers at unaligned addresses: the byte order of every Spotlight file format
 * (hash files, KV stores, q/k dumps, key-code files), whatever the host's. */
#ifndef SL_CORE_LE_BYTES_H
#define SL_CORE_LE_BYTES_H

#include <stdint.h>

static inline uint32_t sl_rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t sl_rd64(const uint8_t *p) { return sl_rd32(p) | (uint64_t)sl_rd32(p + 4) << 32; }
static inline void sl_wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void sl_wr64(uint8_t *p, uint64_t v) {
    sl_wr32(p, (uint32_t)v);
    sl_wr32(p + 4, (uint32_t)(v >> 32));
}

#endif
