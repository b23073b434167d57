/* Seed inputs for fuzz-code-file: small key-code files written by sl_code_file_save, so they
 * follow core/code-file.h exactly: every layer and from a first layer on, one and several
 * heads and words per code, no positions, and a table longer than the positions it saved;
 * and an empty file.
 * Each is under 64 KiB, the fuzzer's -max_len in tools/fuzz.sh.
 * Usage: make-code-seeds OUTDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/code-file.h"
#include "spotlight/error.h"

static uint64_t g_rng = 0xc0de5;

static uint64_t next64(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return g_rng ^ g_rng >> 29;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make-code-seeds OUTDIR\n");
        return 2;
    }
    struct seed {
        const char *name;
        int32_t n_layer, n_head_kv, words, first_layer;
        int64_t n_ctx, n_tokens;
    } seeds[] = {
        {"codes-one", 1, 1, 1, 0, 4, 3},
        {"codes-first-layer", 3, 2, 2, 1, 40, 37},
        {"codes-wide", 2, 1, 4, 0, 16, 16},
        {"codes-heads", 2, 4, 1, 0, 64, 50},
        {"codes-empty", 2, 2, 1, 0, 8, 0},
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        const struct seed *sd = &seeds[i];
        struct sl_code_table t = {NULL, sd->n_layer, sd->n_head_kv, sd->words, sd->first_layer, sd->n_ctx};
        size_t words = (size_t)t.n_layer * (size_t)t.n_head_kv * (size_t)t.n_ctx * (size_t)t.words;
        if (!(t.codes = malloc(words * sizeof(uint64_t)))) return 1;
        for (size_t k = 0; k < words; k++) t.codes[k] = next64();
        struct sl_code_source src = {.store = {sd->n_tokens, (uint32_t)next64(), (uint32_t)next64(), (uint32_t)next64()}};
        for (int k = 0; k < 32; k++) src.model[k] = (uint8_t)next64(), src.hash[k] = (uint8_t)next64();
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], sd->name);
        int rc = sl_code_file_save(path, &t, &src);
        free(t.codes);
        if (rc) {
            fprintf(stderr, "make-code-seeds: %s: %s (%s)\n", path, sl_strerror(rc), sl_error_detail());
            return 1;
        }
    }
    /* empty: once a NULL mapping walked past (core/code-file.c) */
    char path[4096];
    snprintf(path, sizeof path, "%s/codes-empty-file", argv[1]);
    FILE *f = fopen(path, "wb");
    return !f || fclose(f) != 0;
}
