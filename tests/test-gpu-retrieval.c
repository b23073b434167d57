/* The GPU retrieval path against the CPU's: codes from sl_gpu_hash_encode (both paths) vs
 * sl_hash_encode, equal except for bits whose pre-sign value is within 1e-4 of the vector's
 * largest; scores from the GPU scan vs sl_hamming_scan, identical; selections from
 * sl_gpu_topk_select and sl_gpu_retrieve_layer vs sl_topk_select, identical, on the case list
 * of tests/retrieval-cases.h (shared with test-gpu-logic) plus 1M positions; the code table's
 * upload, download and on-device key encoding. Skips without a device; CUDA is initialised
 * inside the tests (Criterion forks per test). Argument checks run everywhere. */
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "cpu/hamming.h"
#include "cpu/topk.h"
#include "gpu/gpu-retrieval.h"
#include "spotlight/device.h"
#include "spotlight/error.h"
#include "retrieval-cases.h"
#include "tests/gpu-test-util.h"


static void *dev_alloc(size_t bytes) {
    void *p = NULL;
    cr_assert_eq(cudaMalloc(&p, bytes ? bytes : 1), cudaSuccess, "cudaMalloc of %zu bytes", bytes);
    return p;
}

static void *to_dev(const void *h, size_t bytes) {
    void *d = dev_alloc(bytes);
    if (bytes) cr_assert_eq(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

static void from_dev(void *h, const void *d, size_t bytes) {
    cr_assert_eq(cudaDeviceSynchronize(), cudaSuccess, "%s", cudaGetErrorString(cudaGetLastError()));
    if (bytes) cr_assert_eq(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

/* H heads of random scores for case c through sl_gpu_topk_select, each head checked.
 * aligned: rows of a 16-byte multiple (128-bit loads), else odd strides (scalar loads). */
static void run_case(const struct rt_case *c, int32_t H, int aligned) {
    const int64_t ld = aligned ? (c->n + 7) / 8 * 8 : c->n + 3;
    const size_t sb = sizeof(uint16_t) * (size_t)(H * ld);
    uint16_t *scores = calloc(1, sb + 2);
    for (int32_t h = 0; h < H; h++) rt_fill_scores(c, scores + h * ld);
    struct sl_gpu_topk_params p = {c->k, c->n_sink, c->n_window, c->block};
    const int64_t out_ld = sl_gpu_topk_max_count(c->n, &p) + 1;
    size_t wb = sl_gpu_topk_workspace_bytes(c->n, c->ms, c->block, H);
    cr_assert_gt(wb, 0);
    uint16_t *sd = to_dev(scores, sb);
    void *work = dev_alloc(wb);
    int32_t *od = dev_alloc(sizeof(int32_t) * (size_t)(H * out_ld)), *cd = dev_alloc(sizeof(int32_t) * (size_t)H);
    int rc = sl_gpu_topk_select(sd, ld, H, c->n, c->ms, &p, work, wb, od, out_ld, cd, NULL);
    cr_assert_eq(rc, 0, "%s", sl_error_detail());
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(H * out_ld)), counts[16];
    from_dev(out, od, sizeof(int32_t) * (size_t)(H * out_ld));
    from_dev(counts, cd, sizeof(int32_t) * (size_t)H);
    for (int32_t h = 0; h < H; h++) expect_cpu(c, scores + h * ld, h, out + h * out_ld, counts[h]);
    cudaFree(sd);
    cudaFree(work);
    cudaFree(od);
    cudaFree(cd);
    free(out);
    free(scores);
}

Test(gpu_retrieval, topk_cases_match_the_cpu) {
    require_gpu();
    static struct rt_case cases[2048];
    size_t n = rt_cases(cases, 2048);
    for (size_t i = 0; i < n; i++) run_case(&cases[i], 3, (int)(i & 1));
}

Test(gpu_retrieval, topk_one_million) {
    require_gpu();
    const struct rt_case cs[] = {
        {1 << 20, 192, (1 << 20) / 50, 4, 64, 1, 0},
        {1 << 20, 512, (1 << 20) / 50, 4, 64, 1, 0},
        {1 << 20, 512, (1 << 20) / 50, 4, 64, 16, 0},
        {1 << 20, 192, (1 << 20) / 50, 4, 64, 1, 3},
        {(1 << 20) + 5, 20000, (1 << 20) / 50, 4, 64, 1, 0},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_case(&cs[i], 8, 1);
}

/* A candidate scoring above max_score: SL_EINVAL in that head's count, the others intact. */
Test(gpu_retrieval, topk_score_above_max) {
    require_gpu();
    struct rt_case c = {5000, 100, 50, 4, 64, 1, 0};
    uint16_t *scores = malloc(sizeof *scores * 2 * (size_t)c.n);
    rt_fill_scores(&c, scores);
    rt_fill_scores(&c, scores + c.n);
    scores[c.n + 3000] = 101;
    struct sl_gpu_topk_params p = {c.k, c.n_sink, c.n_window, 1};
    int64_t out_ld = sl_gpu_topk_max_count(c.n, &p);
    size_t wb = sl_gpu_topk_workspace_bytes(c.n, c.ms, 1, 2);
    uint16_t *sd = to_dev(scores, sizeof *scores * 2 * (size_t)c.n);
    void *work = dev_alloc(wb);
    int32_t *od = dev_alloc(sizeof(int32_t) * 2 * (size_t)out_ld), *cd = dev_alloc(2 * sizeof(int32_t));
    cr_assert_eq(sl_gpu_topk_select(sd, c.n, 2, c.n, c.ms, &p, work, wb, od, out_ld, cd, NULL), 0);
    int32_t counts[2], *out = malloc(sizeof(int32_t) * (size_t)out_ld);
    from_dev(counts, cd, sizeof counts);
    from_dev(out, od, sizeof(int32_t) * (size_t)out_ld);
    cr_assert_eq(counts[1], SL_EINVAL);
    expect_cpu(&c, scores, 0, out, counts[0]);
    cudaFree(sd);
    cudaFree(work);
    cudaFree(od);
    cudaFree(cd);
    free(out);
    free(scores);
}

/* ---- scan ----------------------------------------------------------------------------------- */

static void check_scan(int32_t G, int32_t W, int32_t H, int64_t n) {
    const int64_t stride = n * W + 2 * (n & 1) + 2; /* even: the vector path for W = 1, 2 */
    uint64_t *q = malloc(sizeof *q * (size_t)(H * G * W)), *k = malloc(sizeof *k * (size_t)(H * stride + 1));
    for (int64_t i = 0; i < (int64_t)H * G * W; i++) q[i] = rt_rnd64();
    for (int64_t i = 0; i < H * stride + 1; i++) {
        int64_t kind = rt_below(8);
        k[i] = kind == 0 ? 0 : kind == 1 ? ~0ull : kind == 2 ? q[rt_below((int64_t)H * G * W)] : rt_rnd64();
    }
    const int64_t ld = n + 1;
    uint64_t *qd = to_dev(q, sizeof *q * (size_t)(H * G * W)), *kd = to_dev(k, sizeof *k * (size_t)(H * stride + 1));
    uint16_t *sd = dev_alloc(sizeof(uint16_t) * (size_t)(H * ld + 1));
    uint16_t *got = malloc(sizeof *got * (size_t)(H * ld + 1)), *ref = malloc(sizeof *ref * (size_t)(n + 1));
    /* all heads in one launch */
    cr_assert_eq(sl_gpu_hamming_scan_heads(qd, G, kd, stride, H, n, W, sd, ld, NULL), 0, "%s", sl_error_detail());
    from_dev(got, sd, sizeof(uint16_t) * (size_t)(H * ld));
    for (int32_t h = 0; h < H; h++) {
        sl_hamming_scan(q + (int64_t)h * G * W, G, k + h * stride, n, W, ref);
        for (int64_t j = 0; j < n; j++)
            cr_assert_eq(got[h * ld + j], ref[j], "G %d W %d n %lld head %d key %lld", G, W, (long long)n, h,
                         (long long)j);
    }
    /* one head, codes one word off 16-byte alignment and scores one element off (scalar path) */
    cr_assert_eq(sl_gpu_hamming_scan(qd, G, kd + 1, n, W, sd + 1, NULL), 0, "%s", sl_error_detail());
    from_dev(got, sd + 1, sizeof(uint16_t) * (size_t)n);
    sl_hamming_scan(q, G, k + 1, n, W, ref);
    for (int64_t j = 0; j < n; j++) cr_assert_eq(got[j], ref[j], "unaligned G %d W %d key %lld", G, W, (long long)j);
    cudaFree(qd);
    cudaFree(kd);
    cudaFree(sd);
    free(got);
    free(ref);
    free(q);
    free(k);
}

Test(gpu_retrieval, scan_matches_cpu) {
    require_gpu();
    static const int64_t ns[] = {0, 1, 2, 7, 2047, 2048, 2049, 10001};
    static const int32_t gw[][2] = {{3, 1}, {4, 2}, {1, 1}, {2, 3}, {5, 4}, {8, 16}};
    for (size_t i = 0; i < sizeof gw / sizeof gw[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) check_scan(gw[i][0], gw[i][1], 3, ns[j]);
    check_scan(3, 1, 3, 1 << 20);
    check_scan(4, 2, 8, (1 << 20) + 3);
}

/* ---- encode --------------------------------------------------------------------------------- */

/* n random post-RoPE-like vectors (n, H*d) through the GPU encoder and, per head, the CPU's;
 * codes may differ only at bits whose CPU pre-sign value is within 1e-4 of the largest. */
static void check_encode(const struct sl_hash_params *hp, int role, int32_t layer, int64_t n,
                         const struct sl_gpu_hash_params *gp) {
    sl_hash *h;
    cr_assert_eq(sl_hash_create(hp, &h), 0, "%s", sl_error_detail());
    sl_gpu_hash *gh;
    cr_assert_eq(sl_gpu_hash_upload(h, gp, &gh), 0, "%s", sl_error_detail());
    const int32_t H = role == SL_HASH_KEY ? hp->n_head_kv : hp->n_head_q, d = hp->head_dim, b = hp->bits;
    const int32_t W = sl_hash_code_words(b);
    float *x = malloc(sizeof *x * (size_t)(n * H * d));
    for (int64_t i = 0; i < n * H * d; i++) x[i] = (float)((double)(rt_rnd64() >> 11) * 0x1p-53 * 4.0 - 2.0);
    float *xd = to_dev(x, sizeof *x * (size_t)(n * H * d));
    uint64_t *cd = dev_alloc(sizeof(uint64_t) * (size_t)(H * n * W)), *got = malloc(sizeof *got * (size_t)(H * n * W));
    cr_assert_eq(sl_gpu_hash_encode(gh, role, layer, xd, n, cd, n * W, NULL), 0, "%s", sl_error_detail());
    from_dev(got, cd, sizeof(uint64_t) * (size_t)(H * n * W));
    float *xh = malloc(sizeof *xh * (size_t)(n * d)), *y = malloc(sizeof *y * (size_t)(n * b));
    float *work = malloc(sizeof *work * sl_hash_work_floats(d, b, n) + sizeof *work * (size_t)(n * b));
    uint64_t *ref = malloc(sizeof *ref * (size_t)(n * W));
    int64_t near = 0;
    for (int32_t hd = 0; hd < H; hd++) {
        const struct sl_hash_fn *f = role == SL_HASH_KEY ? sl_hash_key_fn(h, layer, hd) : sl_hash_query_fn(h, layer, hd);
        for (int64_t j = 0; j < n; j++) memcpy(xh + j * d, x + (j * H + hd) * d, sizeof *xh * (size_t)d);
        cr_assert_eq(sl_hash_encode(f, d, b, xh, n, ref, work), 0);
        cr_assert_eq(sl_hash_forward(f, d, b, xh, n, y, work), 0);
        for (int64_t j = 0; j < n; j++) {
            float m = 0;
            for (int32_t i = 0; i < b; i++) m = fmaxf(m, fabsf(y[j * b + i]));
            for (int32_t i = 0; i < W * 64; i++) {
                int g1 = (int)(got[((int64_t)hd * n + j) * W + i / 64] >> (i % 64) & 1);
                int g0 = (int)(ref[j * W + i / 64] >> (i % 64) & 1);
                if (g1 == g0) continue;
                cr_assert(i < b && fabsf(y[j * b + i]) < 1e-4f * m,
                          "head %d vector %lld bit %d: gpu %d cpu %d, y %g of max %g", hd, (long long)j, i, g1, g0,
                          i < b ? y[j * b + i] : 0.0f, m);
                near++;
            }
        }
    }
    cr_assert_leq(near, 2 + n * H * b / 10000, "%lld bits differ near zero", (long long)near);
    sl_gpu_hash_free(gh);
    sl_hash_free(h);
    cudaFree(xd);
    cudaFree(cd);
    free(x);
    free(got);
    free(xh);
    free(y);
    free(work);
    free(ref);
}

Test(gpu_retrieval, encode_matches_cpu) {
    require_gpu();
    struct sl_hash_params smol = sl_hash_default_params();
    smol.n_layer = 2, smol.n_head_q = 9, smol.n_head_kv = 3, smol.head_dim = 64, smol.bits = 64;
    struct sl_hash_params llama = smol;
    llama.n_head_q = 32, llama.n_head_kv = 8, llama.head_dim = 128, llama.bits = 128;
    struct sl_hash_params proj = smol; /* Spotlight with a projection (b != d) and a partial word */
    proj.bits = 96;
    struct sl_hash_params sim = smol;
    sim.kind = SL_HASH_SIMHASH, sim.bits = 128;
    const struct sl_hash_params *shapes[] = {&smol, &llama, &proj, &sim};
    struct sl_gpu_hash_params fused = sl_gpu_hash_default_params(), gemm = fused;
    fused.gemm_min_n = INT64_MAX;
    gemm.gemm_min_n = 0;
    gemm.max_batch = 128; /* several slices */
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int role = SL_HASH_KEY; role <= SL_HASH_QUERY; role++) {
            check_encode(shapes[i], role, 1, 1, &fused);
            check_encode(shapes[i], role, 1, 37, &fused);
            check_encode(shapes[i], role, 0, 1, &gemm);
            check_encode(shapes[i], role, 1, 300, &gemm);
        }
}

/* ---- table and layer ------------------------------------------------------------------------ */

Test(gpu_retrieval, table_and_layer_retrieval) {
    require_gpu();
    const int32_t L = 2, H = 3, G = 3, W = 1;
    const int64_t n1 = 3001, n2 = 2000, n = n1 + n2;
    sl_gpu_codes *t;
    cr_assert_eq(sl_gpu_codes_create(L, H, W, n + 5, &t), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_gpu_codes_capacity(t), (n + 5 + 7) / 8 * 8);
    cr_assert_eq(sl_gpu_codes_bytes(t), (size_t)(L * H * sl_gpu_codes_capacity(t) * W * 8));
    cr_assert_null(sl_gpu_codes_head(t, L, 0));
    /* codes (H, n, W) uploaded in two pieces, read back */
    uint64_t *codes = malloc(sizeof *codes * (size_t)(H * n * W)), *piece = malloc(sizeof *piece * (size_t)(H * n * W));
    for (int64_t i = 0; i < H * n * W; i++) codes[i] = rt_rnd64() & (rt_below(4) ? ~0ull : 0xffull);
    for (int64_t off = 0, len = n1; off < n; off += len, len = n2) {
        for (int32_t h = 0; h < H; h++) memcpy(piece + h * len * W, codes + (h * n + off) * W, sizeof *piece * (size_t)(len * W));
        cr_assert_eq(sl_gpu_codes_upload(t, 1, off, len, piece, NULL), 0, "%s", sl_error_detail());
        cr_assert_eq(cudaDeviceSynchronize(), cudaSuccess);
    }
    cr_assert_eq(sl_gpu_codes_download(t, 1, 0, n, piece, NULL), 0);
    cr_assert_arr_eq(piece, codes, sizeof *codes * (size_t)(H * n * W));
    cr_assert_eq(sl_gpu_codes_upload(t, 1, 6, sl_gpu_codes_capacity(t) - 5, codes, NULL), SL_EINVAL);

    /* one layer: scan of every head, then top-k, against the CPU per head */
    uint64_t *q = malloc(sizeof *q * (size_t)(H * G * W));
    for (int64_t i = 0; i < H * G * W; i++) q[i] = rt_rnd64();
    uint64_t *qd = to_dev(q, sizeof *q * (size_t)(H * G * W));
    uint16_t *scores = malloc(sizeof *scores * (size_t)n);
    for (int32_t block = 1; block <= 16; block *= 16) {
        struct sl_gpu_topk_params p = {n / 50, 4, 64, block};
        struct rt_case c = {n, G * W * 64, p.k, 4, 64, block, 0};
        const int64_t out_ld = sl_gpu_topk_max_count(n, &p);
        size_t wb = sl_gpu_retrieve_workspace_bytes(n, G, W, block, H);
        void *work = dev_alloc(wb);
        int32_t *od = dev_alloc(sizeof(int32_t) * (size_t)(H * out_ld)), *cd = dev_alloc(sizeof(int32_t) * H);
        cr_assert_eq(sl_gpu_retrieve_layer(t, 1, qd, G, n, &p, work, wb, od, out_ld, cd, NULL), 0, "%s",
                     sl_error_detail());
        int32_t *out = malloc(sizeof(int32_t) * (size_t)(H * out_ld)), counts[3];
        from_dev(out, od, sizeof(int32_t) * (size_t)(H * out_ld));
        from_dev(counts, cd, sizeof counts);
        for (int32_t h = 0; h < H; h++) {
            sl_hamming_scan(q + h * G * W, G, codes + h * n * W, n, W, scores);
            expect_cpu(&c, scores, h, out + h * out_ld, counts[h]);
        }
        cudaFree(work);
        cudaFree(od);
        cudaFree(cd);
        free(out);
    }

    /* keys encoded on the device straight into layer 0, against the CPU's codes */
    struct sl_hash_params hp = sl_hash_default_params();
    hp.n_layer = L, hp.n_head_q = H * G, hp.n_head_kv = H, hp.head_dim = 64, hp.bits = 64;
    sl_hash *hs;
    cr_assert_eq(sl_hash_create(&hp, &hs), 0);
    sl_gpu_hash *gh;
    cr_assert_eq(sl_gpu_hash_upload(hs, NULL, &gh), 0, "%s", sl_error_detail());
    const int64_t m = 100;
    float *x = malloc(sizeof *x * (size_t)(m * H * 64));
    for (int64_t i = 0; i < m * H * 64; i++) x[i] = (float)((double)(rt_rnd64() >> 11) * 0x1p-53 - 0.5);
    float *xd = to_dev(x, sizeof *x * (size_t)(m * H * 64));
    cr_assert_eq(sl_gpu_codes_encode_keys(t, gh, 0, 10, xd, m, NULL), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_gpu_codes_download(t, 0, 10, m, piece, NULL), 0);
    float *xh = malloc(sizeof *xh * (size_t)(m * 64)), *work = malloc(sizeof *work * sl_hash_work_floats(64, 64, m) * 2);
    uint64_t *ref = malloc(sizeof *ref * (size_t)m);
    int64_t diff = 0;
    for (int32_t h = 0; h < H; h++) {
        for (int64_t j = 0; j < m; j++) memcpy(xh + j * 64, x + (j * H + h) * 64, sizeof *xh * 64);
        cr_assert_eq(sl_hash_encode(sl_hash_key_fn(hs, 0, h), 64, 64, xh, m, ref, work), 0);
        for (int64_t j = 0; j < m; j++) diff += __builtin_popcountll(ref[j] ^ piece[h * m + j]);
    }
    cr_assert_leq(diff, 3, "%lld bits differ (check_encode bounds which ones may)", (long long)diff);
    sl_gpu_hash_free(gh);
    sl_hash_free(hs);
    sl_gpu_codes_free(t);
    cudaFree(qd);
    cudaFree(xd);
    free(x);
    free(xh);
    free(work);
    free(ref);
    free(q);
    free(scores);
    free(codes);
    free(piece);
}

/* ---- arguments (no device needed: checked before any CUDA call) -------------------------------- */

Test(gpu_retrieval, rejects_bad_arguments) {
    uint16_t s[8] = {0};
    int32_t out[8], counts[1];
    char work[4096] __attribute__((aligned(256)));
    struct sl_gpu_topk_params p = {1, 0, 0, 3};
    cr_assert_eq(sl_gpu_topk_select(s, 8, 1, 8, 10, &p, work, sizeof work, out, 8, counts, NULL), SL_EINVAL);
    p.block = 1;
    cr_assert_eq(sl_gpu_topk_select(s, 8, 1, 8, 65536, &p, work, sizeof work, out, 8, counts, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_topk_select(s, 4, 1, 8, 10, &p, work, sizeof work, out, 8, counts, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_topk_select(s, 8, 1, 8, 10, &p, work, 16, out, 8, counts, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_topk_select(s, 8, 1, 8, 10, &p, work + 8, sizeof work - 8, out, 8, counts, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_topk_select(s, 8, 1, 8, 10, &p, work, sizeof work, out, 0, counts, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_topk_select(s, 8, 0, 8, 10, &p, work, sizeof work, out, 8, counts, NULL), SL_EINVAL);
    p.k = -1;
    cr_assert_eq(sl_gpu_topk_select(s, 8, 1, 8, 10, &p, work, sizeof work, out, 8, counts, NULL), SL_EINVAL);
    uint64_t q[2] = {0}, k[2] = {0};
    cr_assert_eq(sl_gpu_hamming_scan(q, 0, k, 1, 1, s, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_hamming_scan(q, 1024, k, 1, 1, s, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_hamming_scan_heads(q, 1, k, 0, 2, 1, 1, s, 1, NULL), SL_EINVAL);
    cr_assert_eq(sl_gpu_hamming_scan_heads(q, 1, k, 1, 1, 2, 1, s, 1, NULL), SL_EINVAL);
    sl_gpu_codes *t = (sl_gpu_codes *)1;
    cr_assert_eq(sl_gpu_codes_create(0, 1, 1, 1, &t), SL_EINVAL);
    cr_assert_null(t);
    cr_assert_eq(sl_gpu_codes_create(1, 1, 1, 0, &t), SL_EINVAL);
    sl_gpu_hash *gh = NULL;
    cr_assert_eq(sl_gpu_hash_upload(NULL, NULL, &gh), SL_EINVAL);
    cr_assert_null(gh);
    sl_gpu_codes_free(NULL);
    sl_gpu_hash_free(NULL);
}
