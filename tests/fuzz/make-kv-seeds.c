/* Seed inputs for fuzz-kv-format: small, valid KV store files written through the public API
 * (so they follow storage/kv-format.h exactly): empty, partial last block, exactly full, two
 * syncs (both header slots valid), f16 and bf16, several heads and layers. Each is under
 * 64 KiB, the fuzzer's -max_len in tools/fuzz.sh. Fingerprint all zeros, as the target opens.
 * Usage: make-kv-seeds OUTDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"

static uint64_t g_rng = 0x5eed;

static uint16_t next16(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint16_t)(g_rng >> 48);
}

/* Appends n positions to every layer and commits them with tags. */
static int add(sl_kv_store_t s, const struct sl_kv_shape *sh, int64_t n) {
    size_t elems = (size_t)n * (size_t)sh->n_head_kv * (size_t)sh->head_dim;
    uint16_t *k = malloc(elems * 2 + 2), *v = malloc(elems * 2 + 2);
    uint32_t *tags = malloc((size_t)n * 4 + 4);
    int rc = 0;
    for (int32_t l = 0; l < sh->n_layer && rc == 0; l++) {
        for (size_t i = 0; i < elems; i++) k[i] = next16(), v[i] = next16();
        rc = sl_kv_store_append(s, l, n, k, v);
    }
    for (int64_t i = 0; i < n; i++) tags[i] = next16();
    if (rc == 0) rc = sl_kv_store_commit(s, n, tags);
    free(k);
    free(v);
    free(tags);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    struct seed {
        const char *name;
        struct sl_kv_shape shape;
        int64_t capacity, first, second; /* positions before the first sync, then added */
    } seeds[] = {
        {"kv-tiny-partial", {1, 1, 1, SL_KV_DTYPE_F16, 4}, 8, 6, 0},
        {"kv-bf16-full", {1, 1, 4, SL_KV_DTYPE_BF16, 4}, 4, 4, 0},
        {"kv-two-syncs", {2, 1, 2, SL_KV_DTYPE_F16, 8}, 16, 5, 6},
        {"kv-empty", {1, 2, 8, SL_KV_DTYPE_F16, 4}, 12, 0, 0},
        {"kv-heads", {1, 2, 8, SL_KV_DTYPE_F16, 4}, 12, 9, 1},
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        const struct seed *sd = &seeds[i];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], sd->name);
        struct sl_kv_store_params p = sl_kv_store_default_params();
        p.tier = SL_KV_TIER_FILE;
        p.capacity = sd->capacity;
        p.path = path;
        p.overwrite = true;
        memset(p.fingerprint, 0, sizeof p.fingerprint);
        sl_kv_store_t s = NULL;
        int rc = sl_kv_store_create(&sd->shape, &p, &s);
        if (rc == 0 && sd->first) rc = add(s, &sd->shape, sd->first);
        if (rc == 0) rc = sl_kv_store_sync(s);
        if (rc == 0 && sd->second) rc = add(s, &sd->shape, sd->second);
        if (rc == 0) rc = sl_kv_store_close(s);
        sl_kv_store_free(s);
        if (rc != 0) {
            fprintf(stderr, "make-kv-seeds: %s: %s (%s)\n", path, sl_strerror(rc), sl_error_detail());
            return 1;
        }
    }
    return 0;
}
