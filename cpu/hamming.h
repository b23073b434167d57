/* Hamming scan: scores every stored key code of one (layer, KV head) against the decode
 * query codes of that head's GQA group, the first half of Spotlight selection (cpu/topk.h
 * is the second).
 *
 * Code layout (shared with core/hash.c and the GPU backend): a code of b bits is W = ceil(b/64)
 * uint64_t words; bit i of the code is bit (i % 64) of word i / 64, and bits past b are zero
 * (so they always match and add the same G*(64W - b) to every score).
 *   keys    k[j*W + w]   j = position 0..n-1 of one (layer, KV head), contiguous
 *   queries q[g*W + w]   g = 0..G-1, the group's query heads
 * Score of key j = sum over g of matches(q_g, k_j), matches = b - popcount(q_g XOR k_j)
 * (XNOR-popcount). Scores lie in [0, G*b] and are stored as uint16_t, hence G*b <= 65535.
 *
 * Three kernels, picked at run time: AVX-512 (VPOPCNTQ; needs AVX512F + AVX512_VPOPCNTDQ),
 * AVX2 (vpshufb nibble-table popcount) and portable scalar. sl_cpu_force_scalar(1) makes the
 * automatic choice scalar; tests force each path with sl_hamming_force_path. For G = 3 and
 * G >= 5 (up to 15, b <= 1024) the group is first rewritten as bit planes of the per-bit
 * count of set query bits, which needs about log2(G+1) popcounts per key instead of G (see
 * hamming.c); the scores are identical. test-hash-topk runs every kernel the CPU has against
 * the scalar one (AVX-512 skips where cpuid lacks AVX512F + VPOPCNTDQ). */
#ifndef SL_CPU_HAMMING_H
#define SL_CPU_HAMMING_H

#include <stdbool.h>
#include <stdint.h>

#define SL_HAMMING_MAX_SCORE 65535

/* Bit i of a code in the layout above (reference accessors for tests and encoders). */
static inline int sl_hamming_get_bit(const uint64_t *code, int32_t i) {
    return (int)((code[i / 64] >> (i % 64)) & 1u);
}
static inline void sl_hamming_set_bit(uint64_t *code, int32_t i, int v) {
    uint64_t m = (uint64_t)1 << (i % 64);
    code[i / 64] = v ? code[i / 64] | m : code[i / 64] & ~m;
}

/* 0 when G query codes of W words can be scanned (G >= 1, W >= 1, G*W*64 <= 65535), else
 * SL_EINVAL with a detail. For set-up time: the scan itself only asserts. */
int sl_hamming_check(int32_t G, int32_t W);

/* The largest score for (G, W): G*W*64, the histogram size top-k needs minus one. */
static inline int32_t sl_hamming_max_score(int32_t G, int32_t W) { return G * W * 64; }

/* scores[j] = sum_g (W*64 - popcount(q_g ^ k_j)) for j < n. n may be 0; no alignment is
 * required of any pointer. (G, W) must pass sl_hamming_check (asserted). Thread-safe; the
 * engine may split [0, n) across threads by offsetting k and scores. */
void sl_hamming_scan(const uint64_t *q, int32_t G, const uint64_t *k, int64_t n, int32_t W,
                     uint16_t *scores);

enum sl_hamming_path {
    SL_HAMMING_AUTO = 0, /* the widest path the CPU supports (scalar under sl_cpu_force_scalar) */
    SL_HAMMING_SCALAR = 1,
    SL_HAMMING_AVX2 = 2,
    SL_HAMMING_AVX512 = 3,
};

/* Whether the CPU (and this build) can run a path. SL_HAMMING_AUTO and SCALAR always can. */
bool sl_hamming_path_available(enum sl_hamming_path p);

/* The path sl_hamming_scan takes now. */
enum sl_hamming_path sl_hamming_active_path(void);

/* Forces a path (SL_HAMMING_AUTO restores the automatic choice) for tests and benchmarks;
 * returns the previous setting, or SL_EUNSUPPORTED if the path cannot run here. Not for use
 * while other threads scan. */
int sl_hamming_force_path(enum sl_hamming_path p);

const char *sl_hamming_path_name(enum sl_hamming_path p);

/* Bit planes: -1 (default) where they save popcounts, 0 never, 1 whenever G <= 15 and
 * W <= 16 (tests check both forms on every path). Returns the previous mode. Not for use
 * while other threads scan. */
int sl_hamming_force_planes(int mode);

#endif
