/* Grow-only scratch buffers: sized by the first (largest) use, then reused, so steady-state
 * decode allocates nothing. 64-byte aligned. */
#ifndef SL_CPU_SCRATCH_H
#define SL_CPU_SCRATCH_H

#include <stddef.h>

struct sl_scratch {
    void *p;
    size_t cap;
};

/* Returns a buffer of at least `bytes`, or NULL (with an SL_ENOMEM detail recorded). */
void *sl_scratch_get(struct sl_scratch *s, size_t bytes);
void sl_scratch_free(struct sl_scratch *s);

#endif
