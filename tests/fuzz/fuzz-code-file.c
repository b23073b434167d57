/* libFuzzer target: the key-code file reader (core/code-file.h, sl_code_file_load) on
 * arbitrary bytes, written to a temporary file. A fuzzer cannot guess a model fingerprint, a
 * hash id or a store's checksums, so the source each input is loaded for is taken from its own
 * header (as when the file was made for this very store), and a table of the header's shape
 * when that is small; each input is loaded as it is and again with its header and payload
 * checksums recomputed, into a table wanting every layer the file has and into one wanting
 * none, then once for a source that differs in the model only. Anything may be rejected;
 * nothing may crash, leak or read out of bounds, every error must be negative, and a load
 * that succeeds must be exact: the file is the size its header declares, the table holds the
 * file's codes where it asked for them and is untouched everywhere else. Build with SL_FUZZ=ON
 * and SL_SANITIZE=address,undefined (tools/fuzz.sh); seeds from tests/fuzz/make-code-seeds.c. */
#include <stdlib.h>
#include <string.h>

#include "core/code-file.h"
#include "core/le-bytes.h"
#include "storage/crc32c.h"
#include "tests/fuzz/fuzz-temp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEADER 128
#define FILL 0xC3C3C3C3C3C3C3C3ull
#define MAX_TABLE_WORDS (1 << 17) /* 1 MiB of codes: keeps an input fast */

/* The source a header names (all zero when there is no header); a negative position count,
 * which no store has, becomes 0. */
static struct sl_code_source source_of(const uint8_t *h, size_t size) {
    struct sl_code_source s;
    memset(&s, 0, sizeof s);
    if (size < HEADER) return s;
    int64_t n = (int64_t)sl_rd64(h + 32);
    s.store.n_tokens = n < 0 ? 0 : n;
    memcpy(s.model, h + 40, 32);
    memcpy(s.hash, h + 72, 32);
    s.store.tags_crc = sl_rd32(h + 104);
    s.store.blocks_crc = sl_rd32(h + 108);
    s.store.open_crc = sl_rd32(h + 112);
    return s;
}

/* The table shape a header names, when it is small enough to allocate; else a fixed one. */
static struct sl_code_table table_of(const uint8_t *h, size_t size) {
    struct sl_code_table t = {NULL, 2, 2, 1, 0, 8};
    if (size < HEADER) return t;
    uint32_t nl = sl_rd32(h + 16), hk = sl_rd32(h + 20), w = sl_rd32(h + 24), first = sl_rd32(h + 28);
    uint64_t n = sl_rd64(h + 32);
    if (nl < 1 || nl > 64 || hk < 1 || hk > 64 || w < 1 || w > 64 || n > MAX_TABLE_WORDS ||
        (uint64_t)nl * hk * w * (n + 2) > MAX_TABLE_WORDS)
        return t;
    return (struct sl_code_table){NULL, (int32_t)nl, (int32_t)hk, (int32_t)w, first <= nl ? (int32_t)first : 0,
                                  (int64_t)n + 2};
}

static size_t table_words(const struct sl_code_table *t) {
    return (size_t)t->n_layer * (size_t)t->n_head_kv * (size_t)t->n_ctx * (size_t)t->words;
}

/* One load into a fresh table filled with FILL; checks what a success must mean. */
static void load(const char *path, const uint8_t *data, size_t size, struct sl_code_table t,
                 const struct sl_code_source *src) {
    size_t words = table_words(&t);
    t.codes = malloc(words * sizeof(uint64_t));
    if (!t.codes) abort();
    for (size_t i = 0; i < words; i++) t.codes[i] = FILL;
    int rc = sl_code_file_load(path, &t, src);
    if (rc > 0) abort();
    if (rc == 0 && size < HEADER) abort();
    if (rc == 0) {
        /* the file as its header declares it; the table's rows of the file's codes */
        const int64_t n = src->store.n_tokens;
        const int32_t first = (int32_t)sl_rd32(data + 28);
        const size_t seg = (size_t)n * (size_t)t.words * sizeof(uint64_t);
        if (n > t.n_ctx || first < 0 || first > t.first_layer ||
            size != HEADER + (size_t)(t.n_layer - first) * (size_t)t.n_head_kv * seg ||
            sl_crc32c(0, data + HEADER, size - HEADER) != sl_rd32(data + 116))
            abort();
        const uint8_t *p = data + HEADER;
        for (int32_t l = first; l < t.n_layer; l++)
            for (int32_t g = 0; g < t.n_head_kv; g++, p += seg) {
                const uint64_t *row = t.codes + ((size_t)l * (size_t)t.n_head_kv + (size_t)g) * (size_t)t.n_ctx * (size_t)t.words;
                if (l >= t.first_layer && memcmp(row, p, seg) != 0) abort();
                for (size_t i = (l >= t.first_layer ? (size_t)n * (size_t)t.words : 0); i < (size_t)t.n_ctx * (size_t)t.words; i++)
                    if (row[i] != FILL) abort();
            }
        for (size_t i = 0; i < (size_t)first * (size_t)t.n_head_kv * (size_t)t.n_ctx * (size_t)t.words; i++)
            if (t.codes[i] != FILL) abort();
    }
    free(t.codes);
}

static void check(const uint8_t *data, size_t size) {
    const char *path = fuzz_temp_write("codes", data, size);
    struct sl_code_source src = source_of(data, size);
    struct sl_code_table t = table_of(data, size);
    load(path, data, size, t, &src);
    t.first_layer = t.n_layer; /* wants no codes: the payload is only checked */
    load(path, data, size, t, &src);
    /* another model: whatever else the bytes say, never a success */
    src.model[0] ^= 1;
    t = table_of(data, size);
    struct sl_code_table u = t;
    size_t words = table_words(&u);
    if (!(u.codes = malloc(words * sizeof(uint64_t)))) abort();
    if (sl_code_file_load(path, &u, &src) >= 0) abort();
    free(u.codes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check(data, size);
    if (size < HEADER) return 0;
    /* a mutation almost never keeps a CRC32C valid: the checks behind them want exploring */
    uint8_t *fixed = malloc(size);
    if (!fixed) abort();
    memcpy(fixed, data, size);
    sl_wr32(fixed + 116, sl_crc32c(0, fixed + HEADER, size - HEADER));
    sl_wr32(fixed + 124, sl_crc32c(0, fixed, 124));
    check(fixed, size);
    free(fixed);
    return 0;
}
