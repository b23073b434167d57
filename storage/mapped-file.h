/* A whole file mapped read-only into memory (model weights, later stored KV headers).
 * Falls back to reading the file into an allocated buffer when mmap is unavailable, and
 * says so once. Knows nothing about what the bytes mean. */
#ifndef SL_STORAGE_MAPPED_FILE_H
#define SL_STORAGE_MAPPED_FILE_H

#include <stdbool.h>
#include <stddef.h>

struct sl_mapped_file {
    const void *data; /* NULL when size == 0 */
    size_t size;
    bool mapped;      /* true: munmap on close; false: free */
};

/* Opens path read-only; 0 or -errno / SL_E*. On failure *out is zeroed. */
int sl_mapped_file_open(const char *path, struct sl_mapped_file *out);

/* Releases the mapping; safe on a zeroed struct. */
void sl_mapped_file_close(struct sl_mapped_file *f);

#endif
