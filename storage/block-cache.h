/* The RAM cache of hot KV blocks in front of the file tier: a fixed arena of equal slots, a
 * hash map from block index to slot (open addressing, linear probing, backward-shift
 * deletion), and CLOCK replacement (second chance via a reference bit) that skips pinned
 * slots. Pins keep a slot from being evicted while a read lands in it or a gather still has
 * rows to copy out of it. Not thread-safe: the store serialises access. */
#ifndef SL_STORAGE_BLOCK_CACHE_H
#define SL_STORAGE_BLOCK_CACHE_H

#include <stdint.h>

enum sl_block_state {
    SL_BLOCK_EMPTY = 0,
    SL_BLOCK_LOADING, /* a read is in flight into the slot */
    SL_BLOCK_VALID,   /* contents verified */
    SL_BLOCK_FAILED,  /* the read failed; removed once the last pin goes */
};

struct sl_block_cache {
    uint8_t *arena;   /* n_slots * stride bytes, owned by the caller */
    int64_t stride;
    int32_t n_slots;
    int64_t *key;     /* (n_slots) block index, -1 when empty */
    uint8_t *state;   /* (n_slots) enum sl_block_state */
    uint8_t *ref;     /* (n_slots) CLOCK reference bit */
    int32_t *pins;    /* (n_slots) */
    int32_t *err;     /* (n_slots) error of a FAILED slot */
    int64_t *map_key; /* (map_mask + 1) block index, -1 when free */
    int32_t *map_slot;
    uint64_t map_mask;
    int32_t hand;     /* CLOCK hand */
};

/* arena: n_slots * stride bytes (n_slots >= 1). 0 or SL_ENOMEM. */
int sl_block_cache_init(struct sl_block_cache *c, uint8_t *arena, int32_t n_slots, int64_t stride);
void sl_block_cache_free(struct sl_block_cache *c);

/* Slot holding key, or -1. Marks it referenced. */
int32_t sl_block_cache_find(struct sl_block_cache *c, int64_t key);

/* Claims a slot for key (which must not be present), evicting an unpinned slot by CLOCK.
 * The slot comes back EMPTY-state with 0 pins, mapped to key; the caller sets state and
 * pins. -1 when every slot is pinned. */
int32_t sl_block_cache_claim(struct sl_block_cache *c, int64_t key);

/* Unmaps a slot (failed read, invalidation). Its pins must be 0. */
void sl_block_cache_drop(struct sl_block_cache *c, int32_t slot);

/* Removes a slot's key from the map but keeps the slot (still pinned) out of use: a failed
 * read whose waiters have not yet let go. sl_block_cache_release frees it at 0 pins. */
void sl_block_cache_unmap(struct sl_block_cache *c, int32_t slot);
void sl_block_cache_release(struct sl_block_cache *c, int32_t slot);

/* Unmaps every unpinned slot. */
void sl_block_cache_clear(struct sl_block_cache *c);

static inline uint8_t *sl_block_cache_data(const struct sl_block_cache *c, int32_t slot) {
    return c->arena + (int64_t)slot * c->stride;
}

#endif
