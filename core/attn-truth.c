/* The attention truth of core/attn-truth.h. */
#include "core/attn-truth.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void sl_truth_gather_rows(const float *src, int32_t stride_heads, int32_t head, int32_t d,
                          const int32_t *rows, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i++)
        memcpy(dst + i * d, src + ((int64_t)(rows ? rows[i] : i) * stride_heads + head) * d,
               sizeof(float) * (size_t)d);
}

void sl_truth_attention(int32_t group, const float *const *xq, const float *xk, const int32_t *qi,
                        int64_t Q, int64_t N, int32_t d, float *A, float *L) {
    memset(A, 0, sizeof(float) * (size_t)(Q * N));
    const float scale = 1.0f / sqrtf((float)d);
    for (int32_t hh = 0; hh < group; hh++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)Q, (int)N, d, scale, xq[hh], d,
                    xk, d, 0.0f, L, (int)N);
        for (int64_t r = 0; r < Q; r++) {
            const float *l = L + r * N;
            float mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= qi[r]; j++) mx = l[j] > mx ? l[j] : mx;
            for (int64_t j = 0; j <= qi[r]; j++) sum += expf(l[j] - mx);
            for (int64_t j = 0; j <= qi[r]; j++) A[r * N + j] += expf(l[j] - mx) / sum;
        }
    }
}

float sl_truth_kth_largest(const float *v, int64_t n, int64_t k, float *work) {
    memcpy(work, v, sizeof(float) * (size_t)n);
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = work[(lo + hi) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (work[i] > pivot) i++;
            while (work[j] < pivot) j--;
            if (i <= j) {
                float tmp = work[i];
                work[i++] = work[j];
                work[j--] = tmp;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return work[want];
    }
    return work[want];
}

double sl_truth_topk_mark(const float *a, int64_t n, int64_t k, uint8_t *mask, uint8_t bit, float *work) {
    const float thr = sl_truth_kth_largest(a, n, k, work);
    int64_t above = 0;
    for (int64_t j = 0; j < n; j++) above += a[j] > thr;
    int64_t ties = k - above;
    double mass = 0;
    for (int64_t j = n - 1; j >= 0; j--)
        if (a[j] > thr || (a[j] == thr && ties-- > 0)) {
            mask[j] |= bit;
            mass += a[j];
        }
    return mass;
}

int64_t sl_truth_budget_k(float budget, int64_t n) {
    /* in float, so that 0.1f * 50 is 5, not the 5.0000000745 of the double product */
    int64_t k = (int64_t)ceilf(budget * (float)n);
    return k < 1 ? 1 : k > n ? n : k;
}
