/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the SSE4.2 crc32 instruction over three
 * interleaved streams, or slicing-by-8 tables on CPUs without it.
 *
 * The crc32 instruction has a latency of three cycles but a throughput of one per cycle, so a
 * single dependent chain runs at a third of the unit's speed. Long buffers are therefore cut
 * into three adjacent blocks whose CRCs are computed side by side (the second and third from a
 * zero register) and then joined: the CRC register is linear over GF(2), so
 *     reg(R, A||B) = shift(reg(R, A), |B|) ^ reg(0, B)
 * where shift(x, n) is the effect of n zero bytes on register x, a fixed 32x32 bit matrix
 * applied here through four 256-entry tables per block length. Everything works on the raw
 * register; the public functions invert on entry and exit as CRC32C specifies. */
#include "storage/crc32c.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define SL_CRC32C_X86 1
#endif

#define POLY 0x82F63B78u

/* Block lengths of the three-stream loops: LONG amortises the join over 24 KiB, SHORT keeps
 * buffers of a few hundred bytes off the single chain. Multiples of 8. */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

static uint32_t sw_table[8][256];
static bool use_hw;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

/* Raw register update, slicing by 8: eight table look-ups per 8 input bytes instead of eight
 * dependent byte steps. Byte loads keep it endian- and alignment-neutral. */
static uint32_t sw_update(uint32_t reg, const uint8_t *p, size_t n) {
    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        reg = sw_table[0][(reg ^ *p++) & 0xff] ^ (reg >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t lo = reg ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        reg = sw_table[7][lo & 0xff] ^ sw_table[6][(lo >> 8) & 0xff] ^
              sw_table[5][(lo >> 16) & 0xff] ^ sw_table[4][lo >> 24] ^ sw_table[3][p[4]] ^
              sw_table[2][p[5]] ^ sw_table[1][p[6]] ^ sw_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n-- > 0) reg = sw_table[0][(reg ^ *p++) & 0xff] ^ (reg >> 8);
    return reg;
}

#ifdef SL_CRC32C_X86
static uint32_t long_shift[4][256], short_shift[4][256];

/* Tables for shift(x, len): column b is the register that 1<<b becomes after len zero bytes,
 * and shift is linear, so table k holds the sums of columns 8k..8k+7 for every byte value. */
static void build_shift(uint32_t shift[4][256], size_t len) {
    static const uint8_t zeros[LONG_BLOCK];
    uint32_t col[32];
    for (int b = 0; b < 32; b++) col[b] = sw_update(1u << b, zeros, len);
    for (int k = 0; k < 4; k++)
        for (int v = 0; v < 256; v++) {
            uint32_t s = 0;
            for (int i = 0; i < 8; i++)
                if (v & (1 << i)) s ^= col[8 * k + i];
            shift[k][v] = s;
        }
}

static inline uint32_t apply_shift(const uint32_t shift[4][256], uint32_t reg) {
    return shift[0][reg & 0xff] ^ shift[1][(reg >> 8) & 0xff] ^ shift[2][(reg >> 16) & 0xff] ^
           shift[3][reg >> 24];
}
#endif

static void init_tables(void) {
    for (uint32_t v = 0; v < 256; v++) {
        uint32_t r = v;
        for (int i = 0; i < 8; i++) r = (r >> 1) ^ (POLY & (0u - (r & 1)));
        sw_table[0][v] = r;
    }
    for (int k = 1; k < 8; k++)
        for (int v = 0; v < 256; v++)
            sw_table[k][v] = (sw_table[k - 1][v] >> 8) ^ sw_table[0][sw_table[k - 1][v] & 0xff];
#ifdef SL_CRC32C_X86
    __builtin_cpu_init();
    use_hw = __builtin_cpu_supports("sse4.2");
    if (use_hw) {
        build_shift(long_shift, LONG_BLOCK);
        build_shift(short_shift, SHORT_BLOCK);
    }
#endif
}

#ifdef SL_CRC32C_X86
static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

__attribute__((target("sse4.2"))) static uint32_t hw_update(uint32_t reg, const uint8_t *p,
                                                            size_t n) {
    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        reg = _mm_crc32_u8(reg, *p++);
        n--;
    }
    uint64_t r0 = reg;
    while (n >= 3 * LONG_BLOCK) {
        uint64_t r1 = 0, r2 = 0;
        const uint8_t *end = p + LONG_BLOCK;
        do {
            r0 = _mm_crc32_u64(r0, load64(p));
            r1 = _mm_crc32_u64(r1, load64(p + LONG_BLOCK));
            r2 = _mm_crc32_u64(r2, load64(p + 2 * LONG_BLOCK));
            p += 8;
        } while (p < end);
        r0 = apply_shift(long_shift, (uint32_t)r0) ^ (uint32_t)r1;
        r0 = apply_shift(long_shift, (uint32_t)r0) ^ (uint32_t)r2;
        p += 2 * LONG_BLOCK;
        n -= 3 * LONG_BLOCK;
    }
    while (n >= 3 * SHORT_BLOCK) {
        uint64_t r1 = 0, r2 = 0;
        const uint8_t *end = p + SHORT_BLOCK;
        do {
            r0 = _mm_crc32_u64(r0, load64(p));
            r1 = _mm_crc32_u64(r1, load64(p + SHORT_BLOCK));
            r2 = _mm_crc32_u64(r2, load64(p + 2 * SHORT_BLOCK));
            p += 8;
        } while (p < end);
        r0 = apply_shift(short_shift, (uint32_t)r0) ^ (uint32_t)r1;
        r0 = apply_shift(short_shift, (uint32_t)r0) ^ (uint32_t)r2;
        p += 2 * SHORT_BLOCK;
        n -= 3 * SHORT_BLOCK;
    }
    while (n >= 8) {
        r0 = _mm_crc32_u64(r0, load64(p));
        p += 8;
        n -= 8;
    }
    reg = (uint32_t)r0;
    while (n-- > 0) reg = _mm_crc32_u8(reg, *p++);
    return reg;
}
#endif

uint32_t sl_crc32c_sw(uint32_t crc, const void *data, size_t n) {
    pthread_once(&tables_once, init_tables);
    return ~sw_update(~crc, data, n);
}

uint32_t sl_crc32c(uint32_t crc, const void *data, size_t n) {
    pthread_once(&tables_once, init_tables);
#ifdef SL_CRC32C_X86
    if (use_hw) return ~hw_update(~crc, data, n);
#endif
    return ~sw_update(~crc, data, n);
}

bool sl_crc32c_hw(void) {
    pthread_once(&tables_once, init_tables);
    return use_hw;
}
