/* Helpers of the KV fetch suites: see fetch-test-util.h. */
#include "tests/fetch-test-util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/device.h"
#include "spotlight/error.h"
#include "tests/kv-test-util.h"

static char g_msg[512];

const char *ftu_msg(void) { return g_msg; }

uint64_t ftu_rand(uint64_t *state) { return kvt_rand(state); }

int64_t ftu_rand_below(uint64_t *state, int64_t n) { return kvt_rand_below(state, n); }

int ftu_store_make(struct ftu_store *f, const struct sl_kv_shape *shape, bool file, int device,
                   int64_t capacity, int64_t n_tokens, uint64_t seed) {
    memset(f, 0, sizeof *f);
    f->shape = *shape;
    f->row_bytes = (int64_t)shape->head_dim * 2;
    char *path = NULL;
    const struct kvt_tier *t = &kvt_tiers[file ? KVT_FILE_URING_BUFFERED : KVT_HOST];
    if (file) {
        f->dir = kvt_tmpdir();
        if (!f->dir) return SL_EIO;
        path = kvt_join(f->dir, "kv.store");
    }
    struct sl_kv_store_params p = kvt_params(t, capacity, path);
    int err = device >= 0 ? sl_kv_store_params_for_device(&p, device) : 0;
    if (!err) err = sl_kv_store_create(shape, &p, &f->s);
    free(path);
    if (err) return err;
    /* Random rows in chunks, committed as they go, every layer the same count. */
    const int64_t per_pos = (int64_t)shape->n_head_kv * shape->head_dim, chunk = 257;
    uint16_t *k = malloc(sizeof *k * (size_t)(chunk * per_pos));
    uint16_t *v = malloc(sizeof *v * (size_t)(chunk * per_pos));
    if (!k || !v) err = SL_ENOMEM;
    uint64_t rng = seed;
    for (int64_t done = 0; !err && done < n_tokens; done += chunk) {
        int64_t n = n_tokens - done < chunk ? n_tokens - done : chunk;
        for (int32_t l = 0; !err && l < shape->n_layer; l++) {
            for (int64_t e = 0; e < n * per_pos; e++) {
                uint64_t r = ftu_rand(&rng);
                k[e] = (uint16_t)r;
                v[e] = (uint16_t)(r >> 32);
            }
            err = sl_kv_store_append(f->s, l, n, k, v);
        }
        if (!err) err = sl_kv_store_commit(f->s, n, NULL);
    }
    free(k);
    free(v);
    return err;
}

void ftu_store_free(struct ftu_store *f) {
    sl_kv_store_free(f->s);
    f->s = NULL;
    if (f->dir) kvt_rmtree(f->dir);
    free(f->dir);
    f->dir = NULL;
}

void ftu_sel_init(struct ftu_sel *s, int32_t H, int64_t M) {
    s->H = H;
    s->M = M;
    s->idx = calloc((size_t)(H * M), sizeof *s->idx);
    s->cnt = calloc((size_t)H, sizeof *s->cnt);
}

void ftu_sel_free(struct ftu_sel *s) {
    free(s->idx);
    free(s->cnt);
    memset(s, 0, sizeof *s);
}

void ftu_sel_copy(struct ftu_sel *dst, const struct ftu_sel *src) {
    memcpy(dst->idx, src->idx, sizeof *src->idx * (size_t)(src->H * src->M));
    memcpy(dst->cnt, src->cnt, sizeof *src->cnt * (size_t)src->H);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Sorts and removes duplicates; returns the new count. */
static int64_t sort_unique(int32_t *p, int64_t n) {
    qsort(p, (size_t)n, sizeof *p, cmp_i32);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (m == 0 || p[m - 1] != p[i]) p[m++] = p[i];
    return m;
}

void ftu_sel_next(struct ftu_sel *s, const struct ftu_sel *prev, int64_t n_tokens, int32_t T,
                  double overlap, bool clustered, uint64_t *rng) {
    int64_t M = s->M, cap = M < n_tokens ? M : n_tokens;
    int32_t *tmp = malloc(sizeof *tmp * (size_t)(2 * M + T + 2));
    for (int32_t h = 0; h < s->H; h++) {
        int64_t want, roll = ftu_rand_below(rng, 20);
        want = roll == 0 ? 0 : roll == 1 ? cap : ftu_rand_below(rng, cap + 1);
        int64_t n = 0;
        if (prev && want > 0)
            for (int64_t i = 0; i < prev->cnt[h] && n < want; i++)
                if ((double)ftu_rand_below(rng, 1000) < overlap * 1000.0) tmp[n++] = prev->idx[h * M + i];
        if (want > 0 && ftu_rand_below(rng, 3) == 0) tmp[n++] = (int32_t)(n_tokens - 1);
        while (n < want) {
            if (clustered) {
                int64_t b = ftu_rand_below(rng, (n_tokens + T - 1) / T);
                int64_t run = 1 + ftu_rand_below(rng, T);
                for (int64_t r = 0; r < run && n < want; r++) {
                    int64_t p = b * T + ftu_rand_below(rng, T);
                    if (p < n_tokens) tmp[n++] = (int32_t)p;
                }
            } else {
                tmp[n++] = (int32_t)ftu_rand_below(rng, n_tokens);
            }
            if (n >= want) n = sort_unique(tmp, n);
        }
        n = sort_unique(tmp, n);
        if (n > want) n = want;
        memcpy(s->idx + h * M, tmp, sizeof *tmp * (size_t)n);
        s->cnt[h] = (int32_t)n;
    }
    free(tmp);
}

int ftu_check_rows(sl_kv_store_t s, int32_t layer, const struct ftu_sel *sel, const void *k,
                   const void *v) {
    struct sl_kv_shape sh;
    sl_kv_store_shape(s, &sh);
    const int64_t row = (int64_t)sh.head_dim * 2, M = sel->M;
    int64_t *pos = malloc(sizeof *pos * (size_t)(M ? M : 1));
    uint8_t *rk = malloc((size_t)((M ? M : 1) * row)), *rv = malloc((size_t)((M ? M : 1) * row));
    int rc = 0;
    for (int32_t h = 0; h < sel->H && !rc; h++) {
        int64_t n = sel->cnt[h];
        for (int64_t i = 0; i < n; i++) pos[i] = sel->idx[h * M + i];
        struct sl_kv_gather g = {.layer = layer, .head = h, .idx = pos, .n = n, .k_out = rk, .v_out = rv};
        int err = sl_kv_store_gather(s, &g, 1);
        if (err) {
            snprintf(g_msg, sizeof g_msg, "reference gather failed: %s (%s)", sl_strerror(err),
                     sl_error_detail());
            rc = err;
            break;
        }
        const uint8_t *ko = (const uint8_t *)k + h * M * row, *vo = (const uint8_t *)v + h * M * row;
        for (int64_t i = 0; i < n && !rc; i++)
            if (memcmp(ko + i * row, rk + i * row, (size_t)row) ||
                memcmp(vo + i * row, rv + i * row, (size_t)row)) {
                snprintf(g_msg, sizeof g_msg, "layer %d head %d row %lld (position %lld): %s differs",
                         layer, h, (long long)i, (long long)pos[i],
                         memcmp(ko + i * row, rk + i * row, (size_t)row) ? "K" : "V");
                rc = 1;
            }
    }
    free(pos);
    free(rk);
    free(rv);
    return rc;
}
