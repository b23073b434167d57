/* Grow-only aligned scratch buffers. */
#include "cpu/scratch.h"

#include <stdlib.h>

#include "core/internal.h"

void *sl_scratch_get(struct sl_scratch *s, size_t bytes) {
    if (bytes <= s->cap) return s->p;
    size_t cap = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, cap);
    if (!p) {
        sl_fail(SL_ENOMEM, "cannot allocate %zu bytes of scratch", bytes);
        return NULL;
    }
    free(s->p);
    s->p = p;
    s->cap = cap;
    return p;
}

void sl_scratch_free(struct sl_scratch *s) {
    free(s->p);
    s->p = NULL;
    s->cap = 0;
}
