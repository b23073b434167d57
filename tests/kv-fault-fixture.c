/* The KV failure suites' shared fixture (tests/kv-fault-fixture.h). */
#include "tests/kv-fault-fixture.h"

const struct sl_kv_shape SH = {2, 2, 32, SL_KV_DTYPE_F16, 16};
const struct sl_kv_shape SH4K = {2, 2, 64, SL_KV_DTYPE_F16, 16};
char ctx[160] = "";

sl_kv_store_t must_open(const struct sl_kv_shape *sh, struct sl_kv_store_params *p) {
    sl_kv_store_t s = NULL;
    int rc = sl_kv_store_open(sh, p, &s);
    cr_assert_eq(rc, 0, "%s: open: %s (%s)", ctx, sl_strerror(rc), sl_error_detail());
    return s;
}

char *make_store(const char *dir, const char *name, const struct sl_kv_shape *sh, int64_t cap,
                 int64_t n, struct kvt_ref *r, uint64_t seed) {
    char *path = kvt_join(dir, name);
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_URING_DIRECT], cap, path);
    sl_kv_store_t s = NULL;
    kvt_ref_init(r, sh, cap);
    OK(sl_kv_store_create(sh, &p, &s));
    OK(kvt_fill(s, r, n, &seed));
    OK(sl_kv_store_close(s));
    sl_kv_store_free(s);
    return path;
}
