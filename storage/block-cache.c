/* CLOCK block cache with an open-addressing map (see block-cache.h). */
#include "storage/block-cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

static uint64_t hash64(int64_t key) {
    uint64_t x = (uint64_t)key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

int sl_block_cache_init(struct sl_block_cache *c, uint8_t *arena, int32_t n_slots, int64_t stride) {
    memset(c, 0, sizeof *c);
    SL_ASSERT(n_slots >= 1);
    uint64_t map_n = 16;
    while (map_n < 2 * (uint64_t)n_slots) map_n *= 2;
    c->arena = arena;
    c->stride = stride;
    c->n_slots = n_slots;
    c->key = malloc(sizeof *c->key * (size_t)n_slots);
    c->state = calloc((size_t)n_slots, 1);
    c->ref = calloc((size_t)n_slots, 1);
    c->pins = calloc((size_t)n_slots, sizeof *c->pins);
    c->err = calloc((size_t)n_slots, sizeof *c->err);
    c->map_key = malloc(sizeof *c->map_key * map_n);
    c->map_slot = malloc(sizeof *c->map_slot * map_n);
    if (!c->key || !c->state || !c->ref || !c->pins || !c->err || !c->map_key || !c->map_slot) {
        sl_block_cache_free(c);
        return sl_fail(SL_ENOMEM, "cannot allocate the block cache index (%d slots)", n_slots);
    }
    c->map_mask = map_n - 1;
    for (int32_t i = 0; i < n_slots; i++) c->key[i] = -1;
    for (uint64_t i = 0; i < map_n; i++) c->map_key[i] = -1;
    return 0;
}

void sl_block_cache_free(struct sl_block_cache *c) {
    free(c->key);
    free(c->state);
    free(c->ref);
    free(c->pins);
    free(c->err);
    free(c->map_key);
    free(c->map_slot);
    memset(c, 0, sizeof *c);
}

int32_t sl_block_cache_find(struct sl_block_cache *c, int64_t key) {
    for (uint64_t i = hash64(key) & c->map_mask;; i = (i + 1) & c->map_mask) {
        if (c->map_key[i] == key) {
            int32_t slot = c->map_slot[i];
            c->ref[slot] = 1;
            return slot;
        }
        if (c->map_key[i] == -1) return -1;
    }
}

static void map_insert(struct sl_block_cache *c, int64_t key, int32_t slot) {
    uint64_t i = hash64(key) & c->map_mask;
    while (c->map_key[i] != -1) i = (i + 1) & c->map_mask;
    c->map_key[i] = key;
    c->map_slot[i] = slot;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void map_remove(struct sl_block_cache *c, int64_t key) {
    uint64_t i = hash64(key) & c->map_mask;
    while (c->map_key[i] != key) {
        SL_ASSERT(c->map_key[i] != -1);
        i = (i + 1) & c->map_mask;
    }
    for (uint64_t j = (i + 1) & c->map_mask;; j = (j + 1) & c->map_mask) {
        if (c->map_key[j] == -1) break;
        uint64_t home = hash64(c->map_key[j]) & c->map_mask;
        /* j's entry may move into the hole at i if its home is not in (i, j]. */
        if (((j - home) & c->map_mask) >= ((j - i) & c->map_mask)) {
            c->map_key[i] = c->map_key[j];
            c->map_slot[i] = c->map_slot[j];
            i = j;
        }
    }
    c->map_key[i] = -1;
}

void sl_block_cache_drop(struct sl_block_cache *c, int32_t slot) {
    SL_ASSERT(c->pins[slot] == 0);
    if (c->key[slot] != -1) map_remove(c, c->key[slot]);
    c->key[slot] = -1;
    c->state[slot] = SL_BLOCK_EMPTY;
    c->ref[slot] = 0;
    c->err[slot] = 0;
}

void sl_block_cache_unmap(struct sl_block_cache *c, int32_t slot) {
    if (c->key[slot] == -1) return;
    map_remove(c, c->key[slot]);
    c->key[slot] = -1;
}

void sl_block_cache_release(struct sl_block_cache *c, int32_t slot) {
    SL_ASSERT(c->pins[slot] == 0 && c->key[slot] == -1);
    c->state[slot] = SL_BLOCK_EMPTY;
    c->ref[slot] = 0;
    c->err[slot] = 0;
}

int32_t sl_block_cache_claim(struct sl_block_cache *c, int64_t key) {
    /* Two sweeps clear every reference bit once; a third finds nothing only if all pinned. */
    for (int64_t step = 0; step < 3 * (int64_t)c->n_slots; step++) {
        int32_t s = c->hand;
        c->hand = (c->hand + 1) % c->n_slots;
        if (c->pins[s] > 0 || c->state[s] == SL_BLOCK_LOADING || c->state[s] == SL_BLOCK_FAILED)
            continue;
        if (c->ref[s] && c->key[s] != -1) {
            c->ref[s] = 0;
            continue;
        }
        if (c->key[s] != -1) sl_block_cache_drop(c, s);
        c->key[s] = key;
        c->state[s] = SL_BLOCK_EMPTY;
        c->ref[s] = 1;
        map_insert(c, key, s);
        return s;
    }
    return -1;
}

void sl_block_cache_clear(struct sl_block_cache *c) {
    for (int32_t s = 0; s < c->n_slots; s++)
        if (c->pins[s] == 0 && c->state[s] != SL_BLOCK_LOADING && c->key[s] != -1)
            sl_block_cache_drop(c, s);
}
