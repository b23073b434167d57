/* Every run-time dispatched CPU kernel on every path this CPU can run, forced one by one, against
 * a plain double-precision (or bit-exact) reference: the f16 row kernels of the attention
 * (F16C + FMA or scalar) and CRC32C of the KV store (SSE4.2 or slicing-by-8). The other
 * dispatched kernels are forced in their own suites: Hamming scan scalar/AVX2/AVX-512 and top-k
 * compaction (test-hash-topk), quantized dots, activation quantization and the attention on
 * each f16 path (test-cpu-kernels), hash encode and code packing (test-hash).
 * Each test logs the paths it ran, so a log says what this machine covered. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/quant.h"
#include "cpu/dispatch.h"
#include "cpu/f16-row.h"
#include "cpu/hamming.h"
#include "storage/crc32c.h"

static uint64_t rng_state = 5;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

/* The paths to run: scalar always, the AVX2/F16C one where the CPU has it. */
static int n_paths(void) {
    int prev = sl_cpu_force_scalar(0);
    int n = sl_cpu_use_avx2() ? 2 : 1;
    sl_cpu_force_scalar(prev);
    return n;
}
static const char *path_name(int p) { return p ? "avx2+f16c+fma" : "scalar"; }

static void close_to(double got, double want, double tol, const char *what, int path, int64_t n, int64_t i) {
    cr_assert(fabs(got - want) <= tol, "%s (%s, n %lld, [%lld]): %.9g, reference %.9g", what, path_name(path),
              (long long)n, (long long)i, got, want);
}

Test(dispatch, f16_rows_every_path) {
    const int64_t sizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 1000};
    enum { MAXN = 1000, MAXQ = 5 };
    uint16_t *h = malloc(sizeof(uint16_t) * MAXN);
    float *f = malloc(sizeof(float) * MAXN * MAXQ), *y = malloc(sizeof(float) * MAXN * MAXQ);
    float *y0 = malloc(sizeof(float) * MAXN * MAXQ), *x = malloc(sizeof(float) * MAXN), out[MAXQ], a[MAXQ];
    const int np = n_paths();
    for (int path = 0; path < np; path++) {
        int prev = sl_cpu_force_scalar(path == 0);
        cr_assert_eq(sl_cpu_use_avx2(), path == 1);
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            const int64_t n = sizes[si];
            double mag = 0;
            for (int64_t i = 0; i < n; i++) h[i] = sl_f32_to_f16(frand() * 4);
            for (int64_t i = 0; i < n * MAXQ; i++) f[i] = frand();
            for (int64_t i = 0; i < n; i++) mag += fabs(sl_f16_to_f32(h[i]));
            const double tol = 1e-6 * (mag + 1) * 4;
            /* conversion is exact on both paths */
            sl_f16_row_to_f32(h, y, n);
            for (int64_t i = 0; i < n; i++)
                cr_assert_eq(y[i], sl_f16_to_f32(h[i]), "to_f32 (%s) [%lld]", path_name(path), (long long)i);
            double want = 0;
            for (int64_t i = 0; i < n; i++) want += (double)sl_f16_to_f32(h[i]) * f[i];
            close_to(sl_f16_dot_f32(h, f, n), want, tol, "dot", path, n, 0);
            for (int nq = 1; nq <= MAXQ; nq++) {
                sl_f16_dot_multi(h, f, nq, n, out);
                for (int r = 0; r < nq; r++) {
                    double w = 0;
                    for (int64_t i = 0; i < n; i++) w += (double)sl_f16_to_f32(h[i]) * f[r * n + i];
                    close_to(out[r], w, tol, "dot_multi", path, n, r);
                    a[r] = frand();
                }
                memcpy(y, f, sizeof(float) * (size_t)(n * nq));
                sl_f16_axpy_multi(a, h, nq, n, y);
                for (int r = 0; r < nq; r++)
                    for (int64_t i = 0; i < n; i++)
                        close_to(y[r * n + i], f[r * n + i] + (double)a[r] * sl_f16_to_f32(h[i]), 1e-6, "axpy_multi",
                                 path, n, r * n + i);
            }
            memcpy(y, f, sizeof(float) * (size_t)n);
            sl_f16_axpy(0.75f, h, y, n);
            for (int64_t i = 0; i < n; i++)
                close_to(y[i], f[i] + 0.75 * sl_f16_to_f32(h[i]), 1e-6, "axpy", path, n, i);
            /* exp(x - m) and its sum: the vector exp is within a few ulp */
            for (int64_t i = 0; i < n; i++) x[i] = y0[i] = frand() * 20 - 10;
            const float m = 3.0f;
            double sum = 0;
            float got = sl_exp_sub_sum(x, n, m);
            for (int64_t i = 0; i < n; i++) {
                double e = exp((double)(float)(y0[i] - m)); /* of the f32 difference the kernels take */
                sum += e;
                close_to(x[i], e, 4e-7 * e + 1e-30, "exp_sub_sum element", path, n, i);
            }
            close_to(got, sum, 1e-6 * sum + 1e-30, "exp_sub_sum", path, n, 0);
        }
        sl_cpu_force_scalar(prev);
        cr_log_info("f16 rows: %s path checked", path_name(path));
    }
    free(h);
    free(f);
    free(y);
    free(y0);
    free(x);
}

/* CRC32C: the automatic path (SSE4.2 where present) equals the portable one on every length
 * around the kernels' block sizes, every alignment, and split updates. */
Test(dispatch, crc32c_every_path) {
    enum { MAXN = 10000 };
    uint8_t *buf = malloc(MAXN + 16);
    for (int i = 0; i < MAXN + 16; i++) buf[i] = (uint8_t)rnd();
    const uint8_t check[] = "123456789";
    cr_assert_eq(sl_crc32c_sw(0, check, 9), 0xE3069283u);
    cr_assert_eq(sl_crc32c(0, check, 9), 0xE3069283u);
    for (int n = 0; n <= MAXN; n += n < 300 ? 1 : 97)
        for (int off = 0; off < 8; off += n < 300 ? 7 : 1) {
            const uint32_t want = sl_crc32c_sw(0, buf + off, (size_t)n);
            cr_assert_eq(sl_crc32c(0, buf + off, (size_t)n), want, "n %d offset %d", n, off);
            const int cut = n / 3;
            cr_assert_eq(sl_crc32c(sl_crc32c(0, buf + off, (size_t)cut), buf + off + cut, (size_t)(n - cut)), want,
                         "split n %d at %d", n, cut);
        }
    cr_log_info("crc32c: %s path checked against the portable one", sl_crc32c_hw() ? "sse4.2" : "portable");
    free(buf);
}

/* What this machine covers, for the log: the Hamming paths are forced in test-hash-topk. */
Test(dispatch, report_paths) {
    const enum sl_hamming_path hp[] = {SL_HAMMING_SCALAR, SL_HAMMING_AVX2, SL_HAMMING_AVX512};
    char ham[128] = "";
    for (size_t i = 0; i < sizeof hp / sizeof *hp; i++)
        if (sl_hamming_path_available(hp[i])) {
            strcat(ham, " ");
            strcat(ham, sl_hamming_path_name(hp[i]));
        }
    cr_assert(sl_hamming_path_available(SL_HAMMING_SCALAR));
    cr_log_info("paths this CPU runs: f16/dots/top-k/hash %s; crc32c %s; hamming%s", n_paths() == 2 ? "scalar avx2" : "scalar",
                sl_crc32c_hw() ? "sse4.2 portable" : "portable", ham);
}
