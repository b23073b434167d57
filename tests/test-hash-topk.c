/* Hamming scan and histogram top-k against plain references: the scan on every dispatch path
 * (scalar, AVX2, AVX-512 where cpuid has it) against a bit-by-bit XNOR count; top-k on the
 * AVX2 and scalar paths against a sort by (score desc, position desc), with heavy ties,
 * overlapping sinks and window, k = 0, k >= n and block modes; the code's bit layout. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/dispatch.h"
#include "cpu/hamming.h"
#include "cpu/topk.h"
#include "spotlight/error.h"

static uint64_t rng_state = 1;
static uint64_t rnd64(void) {
    /* splitmix64: every bit well mixed, so random codes have no structure */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int64_t rnd_below(int64_t m) { return m > 0 ? (int64_t)(rnd64() % (uint64_t)m) : 0; }

/* ---- scan ----------------------------------------------------------------------------------- */

/* The definition, bit by bit through the layout accessor: matches = bits where q == k. */
static void ref_scan(const uint64_t *q, int32_t G, const uint64_t *k, int64_t n, int32_t W, uint16_t *out) {
    for (int64_t j = 0; j < n; j++) {
        uint32_t s = 0;
        for (int32_t g = 0; g < G; g++)
            for (int32_t i = 0; i < W * 64; i++)
                s += sl_hamming_get_bit(q + (int64_t)g * W, i) == sl_hamming_get_bit(k + j * W, i);
        out[j] = (uint16_t)s;
    }
}

/* Codes mixing uniform words with all-zero / all-one words and copies of a query (the score
 * extremes, and the runs of equal scores a real cache has). */
static void fill_codes(uint64_t *k, int64_t n, int32_t W, const uint64_t *q, int32_t G) {
    for (int64_t j = 0; j < n; j++) {
        int kind = (int)rnd_below(10);
        for (int32_t w = 0; w < W; w++) {
            uint64_t v = rnd64();
            if (kind == 0) v = 0;
            if (kind == 1) v = ~0ull;
            if (kind == 2) v = q[rnd_below(G) * W + w];
            k[j * W + w] = v;
        }
    }
}

static const int64_t scan_ns[] = {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 100, 257, 1000};

/* Every (W, G, n) combination on the current path, at an odd word offset so that no load is
 * aligned, against the reference. */
static void check_scan_path(enum sl_hamming_path path) {
    cr_assert(sl_hamming_force_path(path) >= 0, "path %s", sl_hamming_path_name(path));
    cr_assert_eq(sl_hamming_active_path(), path);
    static const int32_t Ws[] = {1, 2, 3, 4, 5, 8, 12, 16};
    for (size_t wi = 0; wi < sizeof Ws / sizeof Ws[0]; wi++)
        for (int32_t G = 1; G <= 8; G++)
            for (size_t ni = 0; ni < sizeof scan_ns / sizeof scan_ns[0]; ni++) {
                int32_t W = Ws[wi];
                int64_t n = scan_ns[ni];
                uint64_t *q = malloc(sizeof(uint64_t) * (size_t)(G * W));
                uint64_t *kbuf = malloc(sizeof(uint64_t) * (size_t)(n * W + 1));
                uint16_t *got = malloc(sizeof(uint16_t) * (size_t)(n + 1)), *want = malloc(sizeof(uint16_t) * (size_t)(n + 1));
                for (int32_t i = 0; i < G * W; i++) q[i] = rnd64();
                uint64_t *k = kbuf + 1;
                fill_codes(k, n, W, q, G);
                got[n] = 0xBEEF; /* sentinel: nothing written past n */
                sl_hamming_scan(q, G, k, n, W, got + 0);
                ref_scan(q, G, k, n, W, want);
                for (int64_t j = 0; j < n; j++)
                    cr_assert_eq(got[j], want[j], "%s W %d G %d n %lld j %lld: %u != %u", sl_hamming_path_name(path), W, G,
                                 (long long)n, (long long)j, got[j], want[j]);
                cr_assert_eq(got[n], 0xBEEF, "%s wrote past n", sl_hamming_path_name(path));
                free(q);
                free(kbuf);
                free(got);
                free(want);
            }
    sl_hamming_force_path(SL_HAMMING_AUTO);
}

/* Each path in both forms: the group's codes directly, and as bit planes. */
static void check_scan_both_forms(enum sl_hamming_path path) {
    for (int planes = 0; planes <= 1; planes++) {
        int prev = sl_hamming_force_planes(planes);
        check_scan_path(path);
        sl_hamming_force_planes(prev);
    }
}

Test(hamming, scan_scalar) { check_scan_both_forms(SL_HAMMING_SCALAR); }

Test(hamming, scan_avx2) {
    if (!sl_hamming_path_available(SL_HAMMING_AVX2)) cr_skip_test("no AVX2 on this CPU");
    check_scan_both_forms(SL_HAMMING_AVX2);
}

Test(hamming, scan_avx512) {
    if (!sl_hamming_path_available(SL_HAMMING_AVX512)) {
        cr_assert_eq(sl_hamming_force_path(SL_HAMMING_AVX512), SL_EUNSUPPORTED);
        cr_skip_test("no AVX-512 VPOPCNTQ on this CPU");
    }
    check_scan_both_forms(SL_HAMMING_AVX512);
}

/* Large groups: byte counters of the AVX2 path are flushed every 31 query heads, and G*b
 * may reach the uint16 limit exactly. */
Test(hamming, scan_large_groups) {
    static const struct { int32_t G, W; } cases[] = {{31, 1}, {32, 1}, {63, 1}, {100, 1}, {1023, 1}, {40, 2},
                                                     {511, 2}, {63, 16}, {64, 4}, {255, 4}, {21, 48},
                                                     {30, 1}, {31, 2}, {17, 4}, {24, 16}, {29, 3}};
    const enum sl_hamming_path paths[] = {SL_HAMMING_SCALAR, SL_HAMMING_AVX2, SL_HAMMING_AVX512};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t G = cases[c].G, W = cases[c].W;
        cr_assert_eq(sl_hamming_check(G, W), 0, "G %d W %d", G, W);
        int64_t n = 37;
        uint64_t *q = malloc(sizeof(uint64_t) * (size_t)(G * W)), *k = malloc(sizeof(uint64_t) * (size_t)(n * W));
        uint16_t got[37], want[37];
        for (int32_t i = 0; i < G * W; i++) q[i] = rnd64();
        fill_codes(k, n, W, q, G);
        memcpy(k, q, sizeof(uint64_t) * (size_t)W); /* key 0 equals query 0 */
        ref_scan(q, G, k, n, W, want);
        for (size_t p = 0; p < 3; p++)
            for (int planes = -1; planes <= 1; planes++) {
                if (!sl_hamming_path_available(paths[p])) continue;
                sl_hamming_force_path(paths[p]);
                int prev = sl_hamming_force_planes(planes);
                sl_hamming_scan(q, G, k, n, W, got);
                sl_hamming_force_planes(prev);
                for (int64_t j = 0; j < n; j++)
                    cr_assert_eq(got[j], want[j], "%s planes %d G %d W %d j %lld", sl_hamming_path_name(paths[p]),
                                 planes, G, W, (long long)j);
            }
        sl_hamming_force_path(SL_HAMMING_AUTO);
        free(q);
        free(k);
    }
    /* the all-equal extreme: G*b exactly 65535 is impossible (b is a multiple of 64), the
     * largest is 65472; it must come back unclipped */
    uint64_t q[1023], k[4];
    for (int i = 0; i < 1023; i++) q[i] = 0x0123456789abcdefull;
    for (int i = 0; i < 4; i++) k[i] = 0x0123456789abcdefull;
    uint16_t s[4];
    sl_hamming_scan(q, 1023, k, 4, 1, s);
    for (int i = 0; i < 4; i++) cr_assert_eq(s[i], 1023 * 64);
}

Test(hamming, check_limits) {
    cr_assert_eq(sl_hamming_check(1, 1), 0);
    cr_assert_eq(sl_hamming_check(1023, 1), 0); /* 65472 */
    cr_assert_eq(sl_hamming_check(1024, 1), SL_EINVAL);
    cr_assert_eq(sl_hamming_check(64, 16), SL_EINVAL);
    cr_assert_eq(sl_hamming_check(0, 1), SL_EINVAL);
    cr_assert_eq(sl_hamming_check(1, 0), SL_EINVAL);
    cr_assert_eq(sl_hamming_max_score(3, 1), 192);
}

/* Bit i of the code is bit i % 64 of word i / 64: a key differing from the query in bit i
 * alone scores b - 1, whichever path runs, and the accessors agree with the words. */
Test(hamming, bit_layout) {
    for (int32_t W = 1; W <= 4; W++) {
        const int32_t b = W * 64;
        uint64_t q[4] = {0}, k[4 * 256];
        for (int32_t i = 0; i < b; i++) {
            memset(k + i * W, 0, sizeof(uint64_t) * (size_t)W);
            sl_hamming_set_bit(k + i * W, i, 1);
            cr_assert_eq(k[i * W + i / 64], (uint64_t)1 << (i % 64), "bit %d", i);
            for (int32_t t = 0; t < b; t++) cr_assert_eq(sl_hamming_get_bit(k + i * W, t), t == i);
            sl_hamming_set_bit(k + i * W, i, 0);
            cr_assert_eq(k[i * W + i / 64], 0);
            sl_hamming_set_bit(k + i * W, i, 1);
        }
        uint16_t s[256];
        sl_hamming_scan(q, 1, k, b, W, s);
        for (int32_t i = 0; i < b; i++) cr_assert_eq(s[i], b - 1, "W %d bit %d", W, i);
        /* a query with bits 0..i set against the key with only bit i set: i mismatches */
        for (int32_t i = 0; i < b; i++) {
            memset(q, 0, sizeof q);
            for (int32_t t = 0; t <= i; t++) sl_hamming_set_bit(q, t, 1);
            sl_hamming_scan(q, 1, k + i * W, 1, W, s);
            cr_assert_eq(s[0], b - i, "W %d bit %d", W, i);
        }
    }
}

/* ---- top-k ---------------------------------------------------------------------------------- */

struct item {
    uint16_t score;
    int64_t pos;
};

static int cmp_item(const void *a, const void *b) {
    const struct item *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->pos > y->pos ? -1 : x->pos < y->pos; /* later first */
}

/* The specification in topk.h, done by sorting; returns the count. */
static int64_t ref_topk(const uint16_t *s, int64_t n, const struct sl_topk_params *p, int64_t *out) {
    char *in = calloc((size_t)n + 1, 1);
    int64_t s0 = p->n_sink < n ? p->n_sink : n, w0 = n - (p->n_window < n ? p->n_window : n);
    for (int64_t j = 0; j < n; j++) in[j] = j < s0 || j >= w0;
    const int64_t B = p->block;
    const int64_t nb = (n + B - 1) / B;
    struct item *it = malloc(sizeof *it * (size_t)(nb + 1));
    int64_t m = 0;
    if (B == 1) {
        for (int64_t j = 0; j < n; j++)
            if (!in[j]) it[m++] = (struct item){s[j], j};
        qsort(it, (size_t)m, sizeof *it, cmp_item);
        for (int64_t i = 0; i < m && i < p->k; i++) in[it[i].pos] = 1;
    } else {
        for (int64_t b = 0; b < nb; b++) {
            uint16_t mx = 0;
            for (int64_t j = b * B; j < n && j < b * B + B; j++) mx = s[j] > mx ? s[j] : mx;
            it[m++] = (struct item){mx, b};
        }
        qsort(it, (size_t)m, sizeof *it, cmp_item);
        int64_t kb = (p->k + B - 1) / B;
        for (int64_t i = 0; i < m && i < kb; i++)
            for (int64_t j = it[i].pos * B; j < n && j < it[i].pos * B + B; j++) in[j] = 1;
    }
    int64_t c = 0;
    for (int64_t j = 0; j < n; j++)
        if (in[j]) out[c++] = j;
    free(in);
    free(it);
    return c;
}

/* Runs sl_topk_select with exactly-sized workspace and output (so a sanitizer build catches
 * any overrun) and compares with the reference on the current dispatch path. */
static void check_topk(const uint16_t *s, int64_t n, int32_t ms, struct sl_topk_params p, const char *path) {
    size_t wb = sl_topk_workspace_bytes(n, ms, p.block);
    cr_assert(wb > 0);
    char *wbuf = malloc(wb + 1), *work = wbuf + 1; /* misaligned, ending at the block's end */
    int64_t cap = sl_topk_max_count(n, &p);
    int64_t *got = malloc(sizeof(int64_t) * (size_t)(cap > 0 ? cap : 1));
    int64_t *want = malloc(sizeof(int64_t) * (size_t)(n + 1));
    int64_t c = sl_topk_select(s, n, ms, &p, work, wb, got);
    int64_t cw = ref_topk(s, n, &p, want);
    cr_assert_eq(c, cw, "%s n %lld ms %d k %lld sink %lld window %lld block %d: count %lld want %lld", path,
                 (long long)n, ms, (long long)p.k, (long long)p.n_sink, (long long)p.n_window, p.block, (long long)c,
                 (long long)cw);
    cr_assert(c <= cap);
    for (int64_t i = 0; i < c; i++)
        cr_assert_eq(got[i], want[i], "%s n %lld ms %d k %lld sink %lld window %lld block %d: [%lld] %lld want %lld",
                     path, (long long)n, ms, (long long)p.k, (long long)p.n_sink, (long long)p.n_window, p.block,
                     (long long)i, (long long)got[i], (long long)want[i]);
    free(wbuf);
    free(got);
    free(want);
}

static void check_topk_both_paths(const uint16_t *s, int64_t n, int32_t ms, struct sl_topk_params p) {
    check_topk(s, n, ms, p, "auto");
    int prev = sl_cpu_force_scalar(1);
    check_topk(s, n, ms, p, "scalar");
    sl_cpu_force_scalar(prev);
}

/* Random sizes, score ranges from a single value to the scan's full range, and parameters
 * chosen to hit the edges: k of 0, 1, about n, beyond n; sinks and windows empty, beyond n
 * and overlapping. */
static void random_topk_cases(int32_t block, int rounds) {
    static const int32_t ranges[] = {0, 1, 2, 3, 7, 16, 192, 1000, 65535};
    uint16_t *s = malloc(sizeof(uint16_t) * 5000);
    for (int r = 0; r < rounds; r++) {
        int64_t n = r % 10 == 0 ? rnd_below(5000) : rnd_below(300);
        int32_t ms = ranges[rnd_below(sizeof ranges / sizeof ranges[0])];
        int32_t span = rnd_below(3) == 0 ? ms + 1 : (int32_t)rnd_below(ms + 1) + 1; /* often narrower than ms */
        for (int64_t j = 0; j < n; j++) s[j] = (uint16_t)(ms + 1 - span + rnd_below(span));
        struct sl_topk_params p = {.block = block};
        switch (rnd_below(6)) {
        case 0: p.k = 0; break;
        case 1: p.k = 1; break;
        case 2: p.k = n + rnd_below(10); break;
        case 3: p.k = n > 0 ? n - 1 : 0; break;
        default: p.k = rnd_below(n + 1); break;
        }
        switch (rnd_below(4)) {
        case 0: p.n_sink = 0; break;
        case 1: p.n_sink = rnd_below(n + 5); break;
        default: p.n_sink = rnd_below(8); break;
        }
        switch (rnd_below(4)) {
        case 0: p.n_window = 0; break;
        case 1: p.n_window = rnd_below(n + 5); break;
        default: p.n_window = rnd_below(70); break;
        }
        check_topk_both_paths(s, n, ms, p);
    }
    free(s);
}

Test(topk, token_random) { random_topk_cases(1, 3000); }

Test(topk, block_random) {
    for (int32_t b = 2; b <= 64; b *= 2) random_topk_cases(b, 400);
}

/* Small k against many positions (the sampled-floor route) with score layouts that mislead
 * a strided sample: high scores only off the sampled positions, one value everywhere, a
 * spike of ties at the threshold, a narrow binomial-like range. */
Test(topk, small_k_layouts) {
    const int64_t n = 20000;
    uint16_t *s = malloc(sizeof(uint16_t) * n);
    for (int layout = 0; layout < 6; layout++)
        for (int rep = 0; rep < 4; rep++) {
            int32_t ms = 192;
            for (int64_t j = 0; j < n; j++) {
                uint16_t v;
                switch (layout) {
                case 0: v = (uint16_t)rnd_below(193); break;
                case 1: v = j % 16 == 8 ? 0 : (uint16_t)rnd_below(193); break; /* sample sees only 0 */
                case 2: v = j % 16 == 8 ? 192 : (uint16_t)rnd_below(100); break; /* sample sees only 192 */
                case 3: v = 77; break;
                case 4: v = (uint16_t)(80 + rnd_below(8) + rnd_below(8) + rnd_below(8)); break;
                default: v = rnd_below(50) == 0 ? 150 : (uint16_t)rnd_below(150); break; /* ties at the top */
                }
                s[j] = v;
            }
            static const int64_t ks[] = {1, 7, 100, 400, 1249, 1250};
            for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
                struct sl_topk_params p = {.k = ks[i], .n_sink = rep, .n_window = 64 * rep, .block = 1};
                check_topk_both_paths(s, n - rep * 37, ms, p);
            }
        }
    free(s);
}

Test(topk, ties_break_toward_recent) {
    /* all equal: the k latest candidates win */
    uint16_t s[100];
    for (int i = 0; i < 100; i++) s[i] = 5;
    struct sl_topk_params p = {.k = 10, .n_sink = 2, .n_window = 3, .block = 1};
    int64_t out[100];
    char work[4096];
    int64_t c = sl_topk_select(s, 100, 7, &p, work, sizeof work, out);
    cr_assert_eq(c, 15);
    cr_assert_eq(out[0], 0);
    cr_assert_eq(out[1], 1);
    for (int i = 0; i < 10; i++) cr_assert_eq(out[2 + i], 87 + i);
    for (int i = 0; i < 3; i++) cr_assert_eq(out[12 + i], 97 + i);
    /* one higher score early, ties at the threshold spread over several 16-score registers */
    s[20] = 6;
    c = sl_topk_select(s, 100, 7, &p, work, sizeof work, out);
    cr_assert_eq(c, 15);
    cr_assert_eq(out[2], 20);
    cr_assert_eq(out[3], 88);
    check_topk_both_paths(s, 100, 7, p);
}

Test(topk, forced_cover_everything) {
    uint16_t s[50];
    for (int i = 0; i < 50; i++) s[i] = (uint16_t)(i % 4);
    int64_t out[50];
    char work[4096];
    /* sinks and window overlap and cover all positions, k = 0 */
    struct sl_topk_params p = {.k = 0, .n_sink = 30, .n_window = 30, .block = 1};
    cr_assert_eq(sl_topk_select(s, 50, 3, &p, work, sizeof work, out), 50);
    for (int i = 0; i < 50; i++) cr_assert_eq(out[i], i);
    /* k = 0, nothing forced: empty; n = 0: empty */
    p = (struct sl_topk_params){.k = 0, .block = 1};
    cr_assert_eq(sl_topk_select(s, 50, 3, &p, work, sizeof work, out), 0);
    p.k = 5;
    cr_assert_eq(sl_topk_select(s, 0, 3, &p, work, sizeof work, out), 0);
    p.block = 8;
    cr_assert_eq(sl_topk_select(s, 0, 3, &p, work, sizeof work, out), 0);
}

Test(topk, bad_input) {
    uint16_t s[64] = {0};
    int64_t out[64];
    char work[8192];
    struct sl_topk_params p = {.k = 4, .block = 3};
    cr_assert_eq(sl_topk_select(s, 64, 10, &p, work, sizeof work, out), SL_EINVAL);
    cr_assert_eq(sl_topk_workspace_bytes(64, 10, 3), 0);
    p.block = 1;
    p.k = -1;
    cr_assert_eq(sl_topk_select(s, 64, 10, &p, work, sizeof work, out), SL_EINVAL);
    p.k = 4;
    cr_assert_eq(sl_topk_select(s, 64, 10, &p, work, sl_topk_workspace_bytes(64, 10, 1) - 1, out), SL_EINVAL);
    cr_assert_eq(sl_topk_select(s, 64, 70000, &p, work, sizeof work, out), SL_EINVAL);
    s[40] = 11; /* above max_score */
    cr_assert_eq(sl_topk_select(s, 64, 10, &p, work, sizeof work, out), SL_EINVAL);
    cr_assert(strstr(sl_error_detail(), "index 40") != NULL, "%s", sl_error_detail());
    p.block = 4;
    cr_assert_eq(sl_topk_select(s, 64, 10, &p, work, sizeof work, out), SL_EINVAL);
}

/* The engine's sequence: scan the codes, select from the scores; against the references. */
Test(topk, scan_then_select) {
    const int32_t G = 3, W = 1;
    const int64_t n = 4099;
    uint64_t q[3], *k = malloc(sizeof(uint64_t) * n);
    uint16_t *sc = malloc(sizeof(uint16_t) * n), *ref = malloc(sizeof(uint16_t) * n);
    for (int i = 0; i < 3; i++) q[i] = rnd64();
    fill_codes(k, n, W, q, G);
    sl_hamming_scan(q, G, k, n, W, sc);
    ref_scan(q, G, k, n, W, ref);
    cr_assert_eq(memcmp(sc, ref, sizeof(uint16_t) * n), 0);
    for (int32_t block = 1; block <= 16; block *= 4) {
        struct sl_topk_params p = {.k = n / 50, .n_sink = 4, .n_window = 64, .block = block};
        check_topk_both_paths(sc, n, sl_hamming_max_score(G, W), p);
    }
    free(k);
    free(sc);
    free(ref);
}
