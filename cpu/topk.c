/* Histogram top-k (see topk.h). No sort: count the candidates' scores, walk the histogram
 * down from max_score to the threshold t (with the number of ties at t to skip, the earliest
 * ones, so that later positions win), then compact the positions scoring above t, or at t
 * once the skipped ties are behind.
 *
 * A scalar histogram of every score costs about as much as the Hamming scan itself, so for
 * a small k (k <= candidates / 16, the usual budget of a few percent) a cheaper route comes
 * first: a histogram of up to 4096 sampled scores (runs of 64 spread evenly) gives a floor f
 * that at least k scores very likely reach; one branch-free vector pass keeps the positions
 * scoring >= f (a few percent of them) with their scores, and the exact histogram and
 * selection run on those alone. Every position that can be selected scores >= f once >= k
 * do, so the result is the same; when the sample misleads (fewer than k reach f, or more
 * than the buffer holds) the full histogram runs instead.
 *
 * Measured and dropped: feeding this route straight from the scan, chunk by chunk, so that
 * the scores never leave L1 (a fused scan + select). Up to 1M positions the N scores stay in
 * L3 anyway, and the fused call was no faster (2.55 against 2.59 ms at 1M, cold) and slower
 * below 64K (its sample touches cold code lines). */
#include "cpu/topk.h"

#include <string.h>

#include "core/internal.h"
#include "cpu/dispatch.h"
#include "spotlight/error.h"

/* Interleaved histograms: runs of equal scores (duplicate codes, a flat score range) would
 * otherwise chain each increment on the store of the previous one. */
#define NHIST 4
#define ALIGN 64
/* The filter packs each survivor as offset << 16 | score: offsets are within a chunk. */
#define CHUNK 2048

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static size_t round_up(size_t b) { return (b + ALIGN - 1) / ALIGN * ALIGN; }

static size_t hist_bytes(int32_t max_score) {
    return round_up((size_t)NHIST * ((size_t)max_score + 1) * sizeof(uint32_t));
}

/* Room for the filtered route's survivors: (candidates / 16 is the largest k it takes) x 2
 * for the floor's margin and the threshold's bin, plus slack for small n. */
static int64_t filter_cap(int64_t n) { return n / 8 + 256; }

/* The workspace from an ALIGN-aligned base: histograms, then for block mode the block maxima,
 * for token mode the filtered route's buffers. Returns the bytes used. */
struct ws {
    uint32_t *h;      /* NHIST x (ms + 1) counts */
    uint16_t *bm;     /* ceil(n / block) block maxima */
    uint32_t *packed; /* min(n, CHUNK) + 16 survivors of one chunk: offset << 16 | score */
    uint32_t *cand;   /* filter_cap(n) survivors' offsets */
    uint16_t *cand_s; /* and scores */
};

static size_t ws_layout(int64_t n, int32_t ms, int32_t block, uintptr_t base, struct ws *w) {
    size_t o = hist_bytes(ms);
    w->h = (uint32_t *)base;
    w->bm = NULL;
    w->packed = w->cand = NULL;
    w->cand_s = NULL;
    if (block > 1) {
        w->bm = (uint16_t *)(base + o);
        return o + round_up((size_t)((n + block - 1) / block) * sizeof(uint16_t));
    }
    w->packed = (uint32_t *)(base + o);
    o += round_up((size_t)(min64(n, CHUNK) + 16) * sizeof(uint32_t));
    w->cand = (uint32_t *)(base + o);
    o += round_up((size_t)filter_cap(n) * sizeof(uint32_t));
    w->cand_s = (uint16_t *)(base + o);
    return o + round_up((size_t)filter_cap(n) * sizeof(uint16_t));
}

size_t sl_topk_workspace_bytes(int64_t n, int32_t max_score, int32_t block) {
    if (n < 0 || max_score < 0 || max_score > 65535 || block < 1 || (block & (block - 1))) return 0;
    struct ws w;
    return ALIGN + ws_layout(n, max_score, block, 0, &w);
}

int64_t sl_topk_max_count(int64_t n, const struct sl_topk_params *p) {
    if (n <= 0) return 0;
    int64_t k = min64(p->k, n), B = p->block > 1 ? p->block : 1;
    k = (k + B - 1) / B * B; /* whole blocks; < 2n, no overflow */
    int64_t c = min64(p->n_sink, n) + min64(p->n_window, n) + k;
    return c < 0 ? 0 : min64(c, n);
}

/* ---- histogram + threshold ----------------------------------------------------------------- */

/* h: NHIST rows of (ms + 1) counts, overwritten; on return row 0 holds the histogram of
 * s[0, n). SL_EINVAL if a score exceeds ms. */
static int histogram(const uint16_t *s, int64_t n, int32_t ms, uint32_t *h) {
    const size_t stride = (size_t)ms + 1;
    memset(h, 0, NHIST * stride * sizeof *h);
    uint32_t *h0 = h, *h1 = h + stride, *h2 = h + 2 * stride, *h3 = h + 3 * stride;
    const uint32_t m = (uint32_t)ms;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t a = s[i], b = s[i + 1], c = s[i + 2], d = s[i + 3];
        if ((a > m) | (b > m) | (c > m) | (d > m)) goto bad;
        h0[a]++;
        h1[b]++;
        h2[c]++;
        h3[d]++;
    }
    for (; i < n; i++) {
        if (s[i] > m) goto bad;
        h0[s[i]]++;
    }
    for (size_t v = 0; v < stride; v++) h0[v] += h1[v] + h2[v] + h3[v];
    return 0;
bad:
    for (; s[i] <= m; i++) {} /* the offending one, for the message */
    return sl_fail(SL_EINVAL, "top-k: score %u at index %lld exceeds max_score %d", s[i], (long long)i, ms);
}

/* The threshold score t such that (count above t) < k <= (count at or above t), and how many
 * of the ties at t to skip so that exactly k are taken. Needs 1 <= k < sum(h). */
static void threshold(const uint32_t *h, int32_t ms, int64_t k, uint32_t *t, int64_t *skip) {
    int64_t above = 0;
    for (int32_t v = ms; v >= 0; v--) {
        if (above + h[v] >= k) {
            *t = (uint32_t)v;
            *skip = h[v] - (k - above);
            return;
        }
        above += h[v];
    }
    SL_ASSERT(0 && "threshold: k not below the histogram total");
}

/* ---- compaction --------------------------------------------------------------------------- */

/* Writes base + j for each j in [a, e) with s[j] > t, or s[j] == t after the first `skip`
 * such ties; returns the count. */
static int64_t compact_scalar(const uint16_t *s, int64_t a, int64_t e, uint32_t t, int64_t skip, int64_t *out) {
    int64_t c = 0, j = a;
    for (; j < e && skip > 0; j++) {
        if (s[j] > t)
            out[c++] = j;
        else if (s[j] == t)
            skip--;
    }
    for (; j < e; j++)
        if (s[j] >= t) out[c++] = j;
    return c;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,popcnt")))

/* Sixteen scores per compare; a selection of a few percent leaves most masks empty. A tie
 * (score == t) counts against `skip` by mask popcount, so ties cost a scalar step only in
 * the one register where skipping ends. */
AVX2 static int64_t compact_avx2(const uint16_t *s, int64_t a, int64_t e, uint32_t t, int64_t skip, int64_t *out) {
    const __m256i vt = _mm256_set1_epi16((short)t);
    int64_t c = 0, j = a;
    for (; j + 16 <= e; j += 16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(s + j));
        /* one bit per 16-bit element (the even bits of the byte mask) */
        uint32_t ge = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(v, vt), v)) & 0x55555555u;
        if (!ge) continue;
        if (skip > 0) {
            uint32_t eq = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(v, vt)) & 0x55555555u;
            int64_t neq = __builtin_popcount(eq);
            if (neq <= skip) {
                skip -= neq;
                ge &= ~eq;
            } else {
                for (; skip > 0; skip--) {
                    ge &= ~(eq & (0u - eq)); /* drop the earliest remaining tie */
                    eq &= eq - 1;
                }
            }
        }
        for (; ge; ge &= ge - 1) out[c++] = j + (__builtin_ctz(ge) >> 1);
    }
    return c + compact_scalar(s, j, e, t, skip, out + c);
}

/* Block maxima for block >= 8: vpmaxuw down to one register, then phminposuw on the
 * complement gives the horizontal max. */
AVX2 static void block_max_avx2(const uint16_t *s, int64_t n, int32_t B, uint16_t *bm) {
    const int64_t nfull = n / B;
    const __m128i ones = _mm_set1_epi16(-1);
    for (int64_t b = 0; b < nfull; b++) {
        const uint16_t *p = s + b * B;
        __m128i m;
        if (B == 8) {
            m = _mm_loadu_si128((const __m128i *)p);
        } else {
            __m256i v = _mm256_loadu_si256((const __m256i *)p);
            for (int32_t i = 16; i < B; i += 16) v = _mm256_max_epu16(v, _mm256_loadu_si256((const __m256i *)(p + i)));
            m = _mm_max_epu16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        }
        bm[b] = (uint16_t)~_mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(m, ones)), 0);
    }
    if (nfull * B < n) {
        uint16_t m = 0;
        for (int64_t j = nfull * B; j < n; j++) m = s[j] > m ? s[j] : m;
        bm[nfull] = m;
    }
}
#endif

static int64_t compact(const uint16_t *s, int64_t a, int64_t e, uint32_t t, int64_t skip, int64_t *out) {
#if defined(__x86_64__)
    if (sl_cpu_use_avx2()) return compact_avx2(s, a, e, t, skip, out);
#endif
    return compact_scalar(s, a, e, t, skip, out);
}

static void block_max(const uint16_t *s, int64_t n, int32_t B, uint16_t *bm) {
#if defined(__x86_64__)
    if (B >= 8 && sl_cpu_use_avx2()) {
        block_max_avx2(s, n, B, bm);
        return;
    }
#endif
    for (int64_t a = 0, b = 0; a < n; a += B, b++) {
        int64_t e = min64(a + B, n);
        uint16_t m = 0;
        for (int64_t j = a; j < e; j++) m = s[j] > m ? s[j] : m;
        bm[b] = m;
    }
}

/* ---- filtered route ------------------------------------------------------------------------ */

#define SAMPLE_STRIDE 16   /* the route runs for k <= candidates / 16; one sample per 16 */
#define SAMPLE_RUN 64      /* samples come in runs of consecutive positions (few cache lines) */
#define SAMPLE_RUNS_MAX 64 /* at most 4096 samples */

static int64_t sample_runs(int64_t m) {
    int64_t r = m / (SAMPLE_RUN * SAMPLE_STRIDE);
    return r < 1 ? 1 : r > SAMPLE_RUNS_MAX ? SAMPLE_RUNS_MAX : r;
}

/* Length of each run: SAMPLE_RUN, or all of a short range. */
static int64_t run_len(int64_t m) { return min64(SAMPLE_RUN, m); }

/* Start of run i of `runs`, spread evenly over [0, m). */
static int64_t run_start(int64_t m, int64_t i, int64_t runs) {
    return runs > 1 ? (m - run_len(m)) * i / (runs - 1) : 0;
}

/* The floor f from the histogram h of `taken` samples out of m: the highest score that about
 * 1.25 k taken / m + 8 samples reach, so that (as a binomial count) fewer than k of all m
 * reaching it is unlikely. -1 if even 0 would not do. */
static int32_t sample_floor(const uint32_t *h, int32_t ms, int64_t k, int64_t taken, int64_t m) {
    int64_t need = (int64_t)((double)k * (double)taken / (double)m * 1.25) + 8, cum = 0;
    for (int32_t v = ms; v >= 0; v--)
        if ((cum += h[v]) >= need) return v;
    return -1;
}

/* Survivors of one chunk (len <= CHUNK): offset << 16 | score for each s[j] >= f, in order;
 * out has room for len + 8 (the vector path stores eight at a time). Returns the count. */
static int64_t filter_chunk_scalar(const uint16_t *s, int64_t len, uint32_t f, uint32_t *out) {
    int64_t c = 0;
    for (int64_t j = 0; j < len; j++)
        if (s[j] >= f) out[c++] = (uint32_t)j << 16 | s[j];
    return c;
}

#if defined(__x86_64__)
/* For each 8-bit mask, the positions of its set bits packed low, a nibble each: the vpermd
 * indices that left-pack eight lanes. */
static const uint32_t left_pack[256] = {
    0x00000000, 0x00000000, 0x00000001, 0x00000010, 0x00000002, 0x00000020, 0x00000021, 0x00000210,
    0x00000003, 0x00000030, 0x00000031, 0x00000310, 0x00000032, 0x00000320, 0x00000321, 0x00003210,
    0x00000004, 0x00000040, 0x00000041, 0x00000410, 0x00000042, 0x00000420, 0x00000421, 0x00004210,
    0x00000043, 0x00000430, 0x00000431, 0x00004310, 0x00000432, 0x00004320, 0x00004321, 0x00043210,
    0x00000005, 0x00000050, 0x00000051, 0x00000510, 0x00000052, 0x00000520, 0x00000521, 0x00005210,
    0x00000053, 0x00000530, 0x00000531, 0x00005310, 0x00000532, 0x00005320, 0x00005321, 0x00053210,
    0x00000054, 0x00000540, 0x00000541, 0x00005410, 0x00000542, 0x00005420, 0x00005421, 0x00054210,
    0x00000543, 0x00005430, 0x00005431, 0x00054310, 0x00005432, 0x00054320, 0x00054321, 0x00543210,
    0x00000006, 0x00000060, 0x00000061, 0x00000610, 0x00000062, 0x00000620, 0x00000621, 0x00006210,
    0x00000063, 0x00000630, 0x00000631, 0x00006310, 0x00000632, 0x00006320, 0x00006321, 0x00063210,
    0x00000064, 0x00000640, 0x00000641, 0x00006410, 0x00000642, 0x00006420, 0x00006421, 0x00064210,
    0x00000643, 0x00006430, 0x00006431, 0x00064310, 0x00006432, 0x00064320, 0x00064321, 0x00643210,
    0x00000065, 0x00000650, 0x00000651, 0x00006510, 0x00000652, 0x00006520, 0x00006521, 0x00065210,
    0x00000653, 0x00006530, 0x00006531, 0x00065310, 0x00006532, 0x00065320, 0x00065321, 0x00653210,
    0x00000654, 0x00006540, 0x00006541, 0x00065410, 0x00006542, 0x00065420, 0x00065421, 0x00654210,
    0x00006543, 0x00065430, 0x00065431, 0x00654310, 0x00065432, 0x00654320, 0x00654321, 0x06543210,
    0x00000007, 0x00000070, 0x00000071, 0x00000710, 0x00000072, 0x00000720, 0x00000721, 0x00007210,
    0x00000073, 0x00000730, 0x00000731, 0x00007310, 0x00000732, 0x00007320, 0x00007321, 0x00073210,
    0x00000074, 0x00000740, 0x00000741, 0x00007410, 0x00000742, 0x00007420, 0x00007421, 0x00074210,
    0x00000743, 0x00007430, 0x00007431, 0x00074310, 0x00007432, 0x00074320, 0x00074321, 0x00743210,
    0x00000075, 0x00000750, 0x00000751, 0x00007510, 0x00000752, 0x00007520, 0x00007521, 0x00075210,
    0x00000753, 0x00007530, 0x00007531, 0x00075310, 0x00007532, 0x00075320, 0x00075321, 0x00753210,
    0x00000754, 0x00007540, 0x00007541, 0x00075410, 0x00007542, 0x00075420, 0x00075421, 0x00754210,
    0x00007543, 0x00075430, 0x00075431, 0x00754310, 0x00075432, 0x00754320, 0x00754321, 0x07543210,
    0x00000076, 0x00000760, 0x00000761, 0x00007610, 0x00000762, 0x00007620, 0x00007621, 0x00076210,
    0x00000763, 0x00007630, 0x00007631, 0x00076310, 0x00007632, 0x00076320, 0x00076321, 0x00763210,
    0x00000764, 0x00007640, 0x00007641, 0x00076410, 0x00007642, 0x00076420, 0x00076421, 0x00764210,
    0x00007643, 0x00076430, 0x00076431, 0x00764310, 0x00076432, 0x00764320, 0x00764321, 0x07643210,
    0x00000765, 0x00007650, 0x00007651, 0x00076510, 0x00007652, 0x00076520, 0x00076521, 0x00765210,
    0x00007653, 0x00076530, 0x00076531, 0x00765310, 0x00076532, 0x00765320, 0x00765321, 0x07653210,
    0x00007654, 0x00076540, 0x00076541, 0x00765410, 0x00076542, 0x00765420, 0x00765421, 0x07654210,
    0x00076543, 0x00765430, 0x00765431, 0x07654310, 0x00765432, 0x07654320, 0x07654321, 0x76543210,
};

/* Branch-free left-packing: sixteen scores compared at once; each half's survivors go out
 * through one vpermd with indices from left_pack, so the cost does not depend on how many
 * survive or where. Measured at 1M scores: 0.19 ns per score whatever the survivor rate;
 * skipping registers without survivors cost up to 0.48 at 5% survivors (the skip branch is
 * unpredictable at the few-percent rates the floor aims for), and a per-survivor bit loop
 * more. */
AVX2 static int64_t filter_chunk_avx2(const uint16_t *s, int64_t len, uint32_t f, uint32_t *out) {
    const __m256i vf = _mm256_set1_epi16((short)f), seven = _mm256_set1_epi32(7);
    const __m256i iota = _mm256_setr_epi32(0, 1 << 16, 2 << 16, 3 << 16, 4 << 16, 5 << 16, 6 << 16, 7 << 16);
    const __m256i nib = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    int64_t c = 0, j = 0;
    for (; j + 16 <= len; j += 16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(s + j));
        __m256i ge = _mm256_cmpeq_epi16(_mm256_max_epu16(v, vf), v);
        /* bytes 0-7: elements 0-7, bytes 16-23: elements 8-15 (packs works per 128-bit lane) */
        uint32_t mm = (uint32_t)_mm256_movemask_epi8(_mm256_packs_epi16(ge, ge));
        uint32_t m0 = mm & 0xff, m1 = (mm >> 16) & 0xff;
        __m256i pos = _mm256_add_epi32(_mm256_set1_epi32((int)(j << 16)), iota);
        __m256i lo = _mm256_or_si256(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), pos);
        __m256i hi = _mm256_or_si256(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)),
                                     _mm256_add_epi32(pos, _mm256_set1_epi32(8 << 16)));
        __m256i i0 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)left_pack[m0]), nib), seven);
        __m256i i1 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)left_pack[m1]), nib), seven);
        _mm256_storeu_si256((__m256i *)(out + c), _mm256_permutevar8x32_epi32(lo, i0));
        c += __builtin_popcount(m0);
        _mm256_storeu_si256((__m256i *)(out + c), _mm256_permutevar8x32_epi32(hi, i1));
        c += __builtin_popcount(m1);
    }
    for (; j < len; j++)
        if (s[j] >= f) out[c++] = (uint32_t)j << 16 | s[j];
    return c;
}
#endif

static int64_t filter_chunk(const uint16_t *s, int64_t len, uint32_t f, uint32_t *out) {
#if defined(__x86_64__)
    if (sl_cpu_use_avx2()) return filter_chunk_avx2(s, len, f, out);
#endif
    return filter_chunk_scalar(s, len, f, out);
}

/* Appends a chunk's r survivors (chunk at offset off) to cand / cand_s holding nc; the new
 * count, or -1 past cap. */
static int64_t take_chunk(const uint32_t *packed, int64_t r, int64_t off, const struct ws *w, int64_t nc,
                          int64_t cap) {
    if (nc + r > cap) return -1;
    for (int64_t i = 0; i < r; i++) {
        w->cand[nc + i] = (uint32_t)(off + (packed[i] >> 16));
        w->cand_s[nc + i] = (uint16_t)packed[i];
    }
    return nc + r;
}

/* The exact top k (k <= nc) of the nc survivors (positions base + cand[i], ascending) into
 * out; the count, or -1 if a score exceeds ms (the full route then reports it). Both loops
 * are branch-free: the survivors crowd into the few top bins in no order, so a branch on a
 * survivor's score mispredicted about every other time and cost more than the filter. */
static int64_t finish(const struct ws *w, int64_t nc, int32_t ms, int64_t k, int64_t base, int64_t *out) {
    const size_t stride = (size_t)ms + 1;
    uint32_t *h = w->h;
    memset(h, 0, NHIST * stride * sizeof *h);
    uint32_t bad = 0;
    for (int64_t i = 0; i < nc; i++) {
        uint32_t v = w->cand_s[i];
        bad |= v > (uint32_t)ms;
        h[(i & (NHIST - 1)) * stride + (v > (uint32_t)ms ? 0 : v)]++;
    }
    if (bad) return -1;
    for (size_t v = 0; v < stride; v++) h[v] += h[stride + v] + h[2 * stride + v] + h[3 * stride + v];
    uint32_t t;
    int64_t skip, c = 0, ties = 0;
    threshold(h, ms, k, &t, &skip);
    for (int64_t i = 0; i < nc && c < k; i++) {
        uint32_t v = w->cand_s[i];
        int64_t tie = v == t;
        out[c] = base + w->cand[i];
        c += (v > t) | (tie & (ties >= skip));
        ties += tie;
    }
    return c;
}

/* Top k of s[0, m) (positions base + j) by the filtered route; the count (k), or -1 to fall
 * back to the full histogram. */
static int64_t select_filtered(const uint16_t *s, int64_t m, int32_t ms, int64_t k, int64_t base, const struct ws *w,
                               int64_t *out) {
    const int64_t runs = sample_runs(m), cap = filter_cap(m);
    memset(w->h, 0, ((size_t)ms + 1) * sizeof *w->h);
    for (int64_t i = 0; i < runs; i++) {
        const uint16_t *r = s + run_start(m, i, runs);
        for (int64_t j = 0; j < run_len(m); j++) {
            if (r[j] > ms) return -1;
            w->h[r[j]]++;
        }
    }
    int32_t f = sample_floor(w->h, ms, k, runs * run_len(m), m);
    if (f < 0) return -1;
    int64_t nc = 0;
    for (int64_t a = 0; a < m && nc >= 0; a += CHUNK) {
        int64_t len = min64(CHUNK, m - a);
        nc = take_chunk(w->packed, filter_chunk(s + a, len, (uint32_t)f, w->packed), a, w, nc, cap);
    }
    return nc < k ? -1 : finish(w, nc, ms, k, base, out);
}

/* ---- selection ---------------------------------------------------------------------------- */

static int64_t fill_range(int64_t *out, int64_t a, int64_t e) {
    for (int64_t j = a; j < e; j++) out[j - a] = j;
    return e > a ? e - a : 0;
}

/* Appends [a, e) minus what was already written (everything below *end): the pieces arrive
 * in ascending order of a, so this keeps the output ascending and unique. */
static void emit(int64_t *out, int64_t *c, int64_t *end, int64_t a, int64_t e) {
    if (a < *end) a = *end;
    if (a >= e) return;
    *c += fill_range(out + *c, a, e);
    *end = e;
}

static int64_t select_tokens(const uint16_t *s, int64_t n, int32_t ms, int64_t k, int64_t c0, int64_t c1,
                             const struct ws *w, int64_t *out) {
    uint32_t *h = w->h;
    if (k >= c1 - c0) return fill_range(out, 0, n);
    int64_t c = fill_range(out, 0, c0), r = -1;
    if (k > 0 && k <= (c1 - c0) / SAMPLE_STRIDE) r = select_filtered(s + c0, c1 - c0, ms, k, c0, w, out + c);
    if (r >= 0) {
        c += r;
    } else if (k > 0) {
        int rc = histogram(s + c0, c1 - c0, ms, h);
        if (rc < 0) return rc;
        uint32_t t;
        int64_t skip;
        threshold(h, ms, k, &t, &skip);
        c += compact(s, c0, c1, t, skip, out + c);
    }
    return c + fill_range(out + c, c1, n);
}

static int64_t select_blocks(const uint16_t *s, int64_t n, int32_t ms, int64_t k, int32_t B, int64_t s0,
                             int64_t w0, uint32_t *h, uint16_t *bm, int64_t *out) {
    const int64_t nb = (n + B - 1) / B, kb = (k + B - 1) / B;
    if (kb >= nb) return fill_range(out, 0, n);
    int64_t c = 0, end = 0;
    emit(out, &c, &end, 0, s0);
    if (kb > 0) {
        block_max(s, n, B, bm);
        int rc = histogram(bm, nb, ms, h);
        if (rc < 0) return rc;
        uint32_t t;
        int64_t skip;
        threshold(h, ms, kb, &t, &skip);
        /* nb is n / block: a scalar walk over blocks costs little next to the block maxima */
        for (int64_t b = 0; b < nb; b++) {
            if (bm[b] < t) continue;
            if (bm[b] == t && skip > 0) {
                skip--;
                continue;
            }
            /* the part from w0 on comes with the window, emitted last to stay ascending */
            emit(out, &c, &end, b * B, min64(b * B + B, w0));
        }
    }
    emit(out, &c, &end, w0, n);
    return c;
}

static int check_params(int64_t n, int32_t max_score, const struct sl_topk_params *p) {
    if (n < 0 || p->k < 0 || p->n_sink < 0 || p->n_window < 0)
        return sl_fail(SL_EINVAL, "top-k: negative size (n %lld, k %lld, sinks %lld, window %lld)", (long long)n,
                       (long long)p->k, (long long)p->n_sink, (long long)p->n_window);
    if (p->block < 1 || (p->block & (p->block - 1)))
        return sl_fail(SL_EINVAL, "top-k: block %d is not a power of two", p->block);
    if (max_score < 0 || max_score > 65535)
        return sl_fail(SL_EINVAL, "top-k: max_score %d outside [0, 65535]", max_score);
    if (n > (int64_t)UINT32_MAX)
        return sl_fail(SL_EINVAL, "top-k: %lld positions exceed the 32-bit histogram counts", (long long)n);
    return 0;
}

static uintptr_t align_up(uintptr_t p) { return (p + ALIGN - 1) / ALIGN * ALIGN; }

int64_t sl_topk_select(const uint16_t *scores, int64_t n, int32_t max_score, const struct sl_topk_params *p,
                       void *work, size_t work_bytes, int64_t *out) {
    int rc = check_params(n, max_score, p);
    if (rc < 0) return rc;
    size_t need = sl_topk_workspace_bytes(n, max_score, p->block);
    if (work_bytes < need)
        return sl_fail(SL_EINVAL, "top-k: workspace of %zu bytes, %zu needed", work_bytes, need);

    struct ws w;
    ws_layout(n, max_score, p->block, align_up((uintptr_t)work), &w);
    const int64_t s0 = min64(p->n_sink, n), w0 = n - min64(p->n_window, n);
    if (p->block == 1) {
        /* the candidates [s0, w0) form one range; empty when sinks and window meet */
        const int64_t c1 = w0 > s0 ? w0 : s0;
        return select_tokens(scores, n, max_score, p->k, s0, c1, &w, out);
    }
    return select_blocks(scores, n, max_score, p->k, p->block, s0, w0, w.h, w.bm, out);
}
