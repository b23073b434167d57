/* libFuzzer target: the KV store file format (storage/kv-format.h) on arbitrary bytes. The
 * first 8192 bytes go to sl_kv_header_pick and each 4096-byte half to sl_kv_header_decode;
 * a longer input is written to a temporary file (one per process, rewritten per input) and
 * opened as a store with the shape taken from the file, and a few positions are read back.
 * Anything may be rejected; nothing may crash, leak, hang or read out of bounds, and every
 * error must be negative (build with SL_FUZZ=ON and SL_SANITIZE=address,undefined, see
 * tools/fuzz.sh). Seeds: tests/fuzz/make-kv-seeds.c (same all-zero fingerprint). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "storage/kv-format.h"
#include "tests/fuzz/fuzz-temp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A failing call must return a negative code; anything else is a bug worth a crash report. */
static void check_rc(int rc) {
    if (rc > 0) abort();
}

static void read_some(sl_kv_store_t s) {
    struct sl_kv_shape sh;
    sl_kv_store_shape(s, &sh);
    int64_t n = sl_kv_store_n_tokens(s);
    if (sh.n_layer < 1 || sh.n_head_kv < 1 || sh.head_dim < 1 || sh.head_dim > 1024 || n < 0 ||
        n > sl_kv_store_capacity(s))
        abort(); /* an open store must describe itself sanely */
    size_t row = (size_t)sh.head_dim * 2;
    uint8_t *k = malloc(4 * row), *v = malloc(4 * row);
    uint32_t tags[4];
    if (n > 0) {
        int64_t m = n < 4 ? n : 4;
        check_rc(sl_kv_store_read_range(s, 0, 0, 0, m, k, v));
        check_rc(sl_kv_store_read_range(s, sh.n_layer - 1, sh.n_head_kv - 1, n - 1, 1, k, v));
        check_rc(sl_kv_store_read_tags(s, n - m, m, tags));
        int64_t idx[4] = {n - 1, 0, n / 2, n - 1};
        struct sl_kv_gather g[2] = {
            {sh.n_layer / 2, sh.n_head_kv / 2, idx, 0, 4, k, v},
            {sh.n_layer - 1, 0, NULL, n - m, m, k, v},
        };
        check_rc(sl_kv_store_gather(s, g, 1));
        check_rc(sl_kv_store_gather(s, g + 1, 1));
    }
    /* past the end: must be refused */
    if (sl_kv_store_read_range(s, 0, 0, n, 1, k, v) >= 0) abort();
    free(k);
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t slots[2 * SL_KV_HEADER_BYTES];
    memset(slots, 0, sizeof slots);
    memcpy(slots, data, size < sizeof slots ? size : sizeof slots);
    struct sl_kv_header h;
    struct sl_kv_pick pk;
    int rc = sl_kv_header_pick(slots, SL_KV_PICK_RECOVER, &pk);
    if (rc > 0 || (rc == 0 && pk.slot != 0 && pk.slot != 1)) abort();
    rc = sl_kv_header_pick(slots, 0, &pk);
    if (rc > 0 || (rc == 0 && pk.slot != 0 && pk.slot != 1)) abort();
    for (int i = 0; i < 2; i++) check_rc(sl_kv_header_decode(slots + i * SL_KV_HEADER_BYTES, i, &h));
    if (size <= sizeof slots) return 0;

    const char *path = fuzz_temp_write("kv", data, size);
    struct sl_kv_store_params p = sl_kv_store_default_params();
    p.tier = SL_KV_TIER_FILE;
    p.path = path;
    memset(p.fingerprint, 0, sizeof p.fingerprint);
    p.buffered_io = true;
    p.no_uring = true;
    p.ram_budget = INT64_C(8) << 20;
    sl_kv_store_t s = NULL;
    rc = sl_kv_store_open(NULL, &p, &s);
    check_rc(rc);
    if (rc == 0) {
        read_some(s);
        check_rc(sl_kv_store_close(s));
    }
    sl_kv_store_free(s);
    return 0;
}
