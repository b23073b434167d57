/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the KV file format.
 * SSE4.2 crc32 instructions (three interleaved streams) when the CPU has them, chosen at run
 * time; a slicing-by-8 table otherwise. Both give identical results. */
#ifndef SL_STORAGE_CRC32C_H
#define SL_STORAGE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over n bytes; sl_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t sl_crc32c(uint32_t crc, const void *data, size_t n);

/* The portable version, for tests and CPUs without SSE4.2. */
uint32_t sl_crc32c_sw(uint32_t crc, const void *data, size_t n);

/* True when sl_crc32c uses the hardware instructions. */
bool sl_crc32c_hw(void);

#endif
