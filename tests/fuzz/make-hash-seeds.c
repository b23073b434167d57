/* Seed inputs for fuzz-hash-file: small valid hash files written through the API, so they
 * follow core/hash.h exactly: Spotlight with MLP and projection, Spotlight with the MLP alone
 * (bits == head_dim), SimHash; trained and partial layer records, a note, zero and non-zero
 * fingerprints. The largest (MLP alone: head_dim = bits = 64) is about 67 KB, which is why
 * tools/fuzz.sh gives this target a larger -max_len than the others.
 * Usage: make-hash-seeds OUTDIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/hash.h"
#include "spotlight/error.h"

static int write_seed(const char *dir, const char *name, int32_t layers, int32_t hq, int32_t hkv,
                      int32_t d, int32_t bits, enum sl_hash_kind kind, int annotate) {
    struct sl_hash_params p = sl_hash_default_params();
    p.n_layer = layers, p.n_head_q = hq, p.n_head_kv = hkv, p.head_dim = d, p.bits = bits;
    p.kind = kind;
    sl_hash *h;
    int rc = sl_hash_create(&p, &h);
    uint8_t fp[32] = {0};
    if (!rc && annotate) {
        struct sl_hash_layer_info t = {SL_HASH_TRAINED, 2000, 0.25f, 0.9f, 0.05f};
        struct sl_hash_layer_info q = {SL_HASH_PARTIAL, 100, 0.75f, NAN, NAN};
        sl_hash_layer_info_set(h, 0, &t);
        if (layers > 1) sl_hash_layer_info_set(h, layers - 1, &q);
        rc = sl_hash_set_note(h, "seed: lr=1e-3 steps=2000");
        for (int i = 0; i < 32; i++) fp[i] = (uint8_t)(i * 13 + 1);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!rc) rc = sl_hash_save(h, fp, path);
    sl_hash_free(h);
    if (rc) fprintf(stderr, "make-hash-seeds: %s: %s (%s)\n", name, sl_strerror(rc), sl_error_detail());
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make-hash-seeds OUTDIR\n");
        return 2;
    }
    int bad = 0;
    bad |= write_seed(argv[1], "spotlight-proj.slhash", 1, 1, 1, 8, 64, SL_HASH_SPOTLIGHT, 0) != 0;
    bad |= write_seed(argv[1], "spotlight-gqa.slhash", 2, 2, 1, 16, 128, SL_HASH_SPOTLIGHT, 1) != 0;
    bad |= write_seed(argv[1], "spotlight-mlp.slhash", 1, 1, 1, 64, 64, SL_HASH_SPOTLIGHT, 1) != 0;
    bad |= write_seed(argv[1], "simhash.slhash", 3, 2, 1, 8, 192, SL_HASH_SIMHASH, 1) != 0;
    return bad;
}
