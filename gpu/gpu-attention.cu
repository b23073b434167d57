/* Dense causal attention over one layer's f16 KV cache on the GPU (gpu/gpu-ops.h); which CTA
 * owns which rows and keys, and how splits merge, is in gpu/attention-logic.h.
 *
 * Semantics are the CPU's (cpu/attention.c): queries rounded to f16, scores = q.k in f32
 * times 1/sqrt(head_dim), softmax, weighted sum of V in f32. Both kernels run the online
 * softmax (flash attention) over 64-key tiles of K and V staged in shared memory as f16
 * (rows padded by 16 bytes so the 16-byte row reads of 8 consecutive keys hit distinct banks):
 * per row a running max m, sum l and accumulator acc; each tile rescales acc and l by
 * e^(m_old - m_new). Keys past a row's causal end score -inf; K/V rows past the CTA's end are
 * zero-filled so unwritten cache memory cannot put a NaN into P.V.
 *
 * decode (<= 4 tokens, GQA group <= 8 heads): 128 threads per (token, KV head, split).
 *   Scores: thread (key j = tid % 64, rows tid/64 + 2a); the group's queries (f32, rounded)
 *   are broadcast from shared memory. Softmax: one warp per row. P.V: thread per (row, 8
 *   consecutive dims), one 16-byte V read per key. Memory-bound at long contexts: each K/V
 *   row is read once per group, about 3.5k warp instructions per 64-key tile (HD 128, group
 *   4) against 32 KiB loaded, so an H100/H200 should stay near its HBM bandwidth.
 * tiled (prefill chunks; also decode with larger groups): 256 threads per (64 query rows
 *   of one KV group, split); thread (rb = tid / 16, kb = tid % 16) owns rows 4rb..4rb+3 and,
 *   for scores, keys kb + 16b (b < 4), for P.V columns in chunks at kb; the 16 threads of a
 *   row group reduce max and sum with shuffles. f32 FMA on the CUDA cores, no tensor cores:
 *   expect roughly 25-40 TFLOP/s on an H100/H200 (4 n len n_head head_dim flops), i.e. a
 *   512-token chunk at 100k positions with 32 heads of 128 in ~25-35 ms per layer. Tensor
 *   cores (f16 Q.K^T exact; P.V needs P split into two f16 halves to keep f32 accuracy) are
 *   the next step.
 * merge: one CTA per (token, head) when the positions were split. */
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "gpu/attention-logic.h"
#include "gpu/gpu-check.h"
#include "gpu/gpu-ops.h"

static constexpr int KT = SL_ATTN_KEY_TILE;
static_assert(KT == 64, "the thread mappings below assume 64-key tiles");
static_assert(SL_ATTN_ROW_TILE == 64, "the tiled kernel maps 16 x 16 threads onto 64 x 64 scores");

/* What f16 keys see of a query (the CPU's sl_round_to_f16; NaN payloads aside). */
static __device__ __forceinline__ float round_f16(float x) { return __half2float(__float2half_rn(x)); }

static __device__ __forceinline__ void h2_to_f32(uint32_t bits, float *f) {
    float2 v = __half22float2(*reinterpret_cast<const __half2 *>(&bits));
    f[0] = v.x;
    f[1] = v.y;
}

static __device__ __forceinline__ void h8_to_f32(uint4 raw, float *f) {
    h2_to_f32(raw.x, f);
    h2_to_f32(raw.y, f + 2);
    h2_to_f32(raw.z, f + 4);
    h2_to_f32(raw.w, f + 6);
}

/* VEC (4 or 8) consecutive halves from shared memory, as floats. */
template <int VEC>
static __device__ __forceinline__ void load_h(const __half *p, float *f) {
    if constexpr (VEC == 8) {
        h8_to_f32(*reinterpret_cast<const uint4 *>(p), f);
    } else {
        static_assert(VEC == 4, "4 or 8 halves");
        uint2 raw = *reinterpret_cast<const uint2 *>(p);
        h2_to_f32(raw.x, f);
        h2_to_f32(raw.y, f + 2);
    }
}

/* s += q[0..8) . k[0..8) */
static __device__ __forceinline__ float dot8(const float *qrow, const float *k, float s) {
    float4 q0 = *reinterpret_cast<const float4 *>(qrow), q1 = *reinterpret_cast<const float4 *>(qrow + 4);
    s = fmaf(q0.x, k[0], s);
    s = fmaf(q0.y, k[1], s);
    s = fmaf(q0.z, k[2], s);
    s = fmaf(q0.w, k[3], s);
    s = fmaf(q1.x, k[4], s);
    s = fmaf(q1.y, k[5], s);
    s = fmaf(q1.z, k[6], s);
    return fmaf(q1.w, k[7], s);
}

/* Keys [k0, k0 + KT) of one KV head (kg, vg: its position 0) into shared memory, rows KS
 * halves apart; zeros from `end` on. 16-byte reads, consecutive threads along a row. */
template <int HD, int KS, int THREADS>
static __device__ __forceinline__ void load_kv_tile(__half *ks, __half *vs, const __half *kg, const __half *vg,
                                                    int64_t k0, int64_t end) {
    constexpr int CH = HD / 8;
    for (int e = threadIdx.x; e < KT * CH; e += THREADS) {
        int r = e / CH, c = e - r * CH;
        uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
        if (k0 + r < end) {
            kv = *reinterpret_cast<const uint4 *>(kg + (k0 + r) * HD + c * 8);
            vv = *reinterpret_cast<const uint4 *>(vg + (k0 + r) * HD + c * 8);
        }
        *reinterpret_cast<uint4 *>(ks + r * KS + c * 8) = kv;
        *reinterpret_cast<uint4 *>(vs + r * KS + c * 8) = vv;
    }
}

static __device__ __forceinline__ float warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* The arguments every kernel takes. */
struct attn_args {
    struct sl_attn_plan plan;
    const float *q;
    const __half *kc, *vc;
    int64_t n_ctx, n, pos0;
    int32_t n_head, n_head_kv;
    float scale;
    const int32_t *last; /* decode over gathered rows: KV head g sees [0, last[g]]; else NULL */
    float *out;    /* n_split == 1 */
    float *ws_acc; /* n_split > 1 */
    float2 *ws_ml;
};

/* The row's result: normalised into out, or the partial into the workspace. */
template <int HD>
static __device__ __forceinline__ void write_row(const attn_args &a, int64_t row, int32_t c, int d0, const float *acc,
                                                 int cnt, float m, float l, bool write_ml) {
    if (a.plan.n_split == 1) {
        float *o = a.out + row * HD + d0;
        for (int x = 0; x < cnt; x++) o[x] = acc[x] / l;
    } else {
        float *o = a.ws_acc + (row * a.plan.n_split + c) * HD + d0;
        for (int x = 0; x < cnt; x++) o[x] = acc[x];
        if (write_ml) a.ws_ml[row * a.plan.n_split + c] = make_float2(m, l);
    }
}

/* ---- decode ------------------------------------------------------------------------------- */

template <int HD>
struct decode_cfg {
    static constexpr int THREADS = 128, R = SL_ATTN_DECODE_MAX_REP;
    static constexpr int QS = HD + 4, KS = HD + 8, SS = KT + 4; /* row strides (elements) */
    static constexpr int CH = HD / 8;                           /* 8-dim chunks per row */
    static constexpr int U = (R * CH + THREADS - 1) / THREADS;  /* P.V chunks per thread */
    static constexpr size_t smem = (size_t)R * QS * 4 + (size_t)R * SS * 4 + 3 * R * 4 + 2 * (size_t)KT * KS * 2;
    static_assert(THREADS == 2 * KT && R == 8, "scores: 2 row halves x 64 keys, 4 rows each");
};

template <int HD>
static __global__ void __launch_bounds__(128) attn_decode_kernel(attn_args a) {
    using C = decode_cfg<HD>;
    extern __shared__ __align__(16) unsigned char smem[];
    float *qs = reinterpret_cast<float *>(smem);  /* (R, QS) rounded queries */
    float *ss = qs + C::R * C::QS;                 /* (R, SS) scores, then probabilities */
    float *m_s = ss + C::R * C::SS, *l_s = m_s + C::R, *a_s = l_s + C::R;
    __half *ks = reinterpret_cast<__half *>(a_s + C::R), *vs = ks + KT * C::KS;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int32_t rep = a.n_head / a.n_head_kv, c = blockIdx.y;
    int64_t g, rho0, rho1;
    sl_attn_cta_rows(&a.plan, blockIdx.x, a.n, a.n_head_kv, rep, &g, &rho0, &rho1);
    const int64_t t = rho0 / rep, k_begin = (int64_t)c * a.plan.chunk;
    const int64_t k_end = sl_attn_row_end(&a.plan, c, a.last ? a.last[g] : a.pos0, rho0, rep); /* one token: all rows */
    const int64_t row0 = t * a.n_head + g * rep; /* output row of the group's first head */

    const float *qt = a.q + row0 * HD; /* the group's heads are contiguous */
    for (int e = tid; e < C::R * HD; e += C::THREADS) {
        int r = e / HD, d = e % HD;
        qs[r * C::QS + d] = r < rep ? round_f16(qt[r * HD + d]) : 0.0f;
    }
    if (tid < C::R) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
        a_s[tid] = 0.0f;
    }
    const __half *kg = a.kc + g * a.n_ctx * HD, *vg = a.vc + g * a.n_ctx * HD;
    const int j = tid % KT, rh = tid / KT; /* scores: key j, rows rh + 2i; uniform per warp */
    float acc[C::U][8];
    for (int u = 0; u < C::U; u++)
        for (int x = 0; x < 8; x++) acc[u][x] = 0.0f;

    for (int64_t k0 = k_begin; k0 < k_end; k0 += KT) {
        __syncthreads(); /* queries stored; the previous tile's readers done */
        load_kv_tile<HD, C::KS, C::THREADS>(ks, vs, kg, vg, k0, k_end);
        __syncthreads();
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int d = 0; d < HD; d += 8) {
            float kf[8];
            h8_to_f32(*reinterpret_cast<const uint4 *>(ks + j * C::KS + d), kf);
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (rh + 2 * i < rep) s[i] = dot8(qs + (rh + 2 * i) * C::QS + d, kf, s[i]);
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (rh + 2 * i < rep) ss[(rh + 2 * i) * C::SS + j] = k0 + j < k_end ? s[i] * a.scale : -INFINITY;
        __syncthreads();
        for (int r = warp; r < rep; r += C::THREADS / 32) {
            float s0 = ss[r * C::SS + lane], s1 = ss[r * C::SS + lane + 32];
            float m_old = m_s[r], m_new = fmaxf(m_old, warp_max(fmaxf(s0, s1)));
            float mu = m_new == -INFINITY ? 0.0f : m_new; /* no key yet: exp(-inf - 0) = 0 */
            float p0 = expf(s0 - mu), p1 = expf(s1 - mu);
            ss[r * C::SS + lane] = p0;
            ss[r * C::SS + lane + 32] = p1;
            float sum = warp_sum(p0 + p1); /* every lane has read m_s[r] by now */
            if (lane == 0) {
                float alpha = expf(m_old - mu);
                a_s[r] = alpha;
                l_s[r] = l_s[r] * alpha + sum;
                m_s[r] = m_new;
            }
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            int e = tid + C::THREADS * u, r = e / C::CH, d0 = (e % C::CH) * 8;
            if (r >= rep) continue;
            float alpha = a_s[r];
            for (int x = 0; x < 8; x++) acc[u][x] *= alpha;
            for (int jj = 0; jj < KT; jj += 4) {
                float4 p4 = *reinterpret_cast<const float4 *>(ss + r * C::SS + jj);
                float p[4] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    float vf[8];
                    h8_to_f32(*reinterpret_cast<const uint4 *>(vs + (jj + b) * C::KS + d0), vf);
#pragma unroll
                    for (int x = 0; x < 8; x++) acc[u][x] = fmaf(p[b], vf[x], acc[u][x]);
                }
            }
        }
    }
    __syncthreads(); /* the row statistics are final (and visible when no tile ran) */
#pragma unroll
    for (int u = 0; u < C::U; u++) {
        int e = tid + C::THREADS * u, r = e / C::CH, d0 = (e % C::CH) * 8;
        if (r < rep) write_row<HD>(a, row0 + r, c, d0, acc[u], 8, m_s[r], l_s[r], d0 == 0);
    }
}

/* ---- tiled (prefill) ---------------------------------------------------------------------- */

template <int HD>
struct tile_cfg {
    static constexpr int THREADS = 256, M = SL_ATTN_ROW_TILE;
    static constexpr int QS = HD + 4, KS = HD + 8, PS = KT + 4; /* row strides (elements) */
    static constexpr int VEC = HD >= 128 ? 8 : 4;               /* P.V: dims per V read */
    static constexpr int NCH = HD / (16 * VEC);                 /* V reads per key per thread */
    static constexpr size_t smem = (size_t)M * QS * 4 + (size_t)M * PS * 4 + 2 * (size_t)KT * KS * 2;
    static_assert(NCH >= 1 && NCH * 16 * VEC == HD, "head_dim 64, 128 or 256");
};

template <int HD>
static __global__ void __launch_bounds__(256) attn_tile_kernel(attn_args a) {
    using C = tile_cfg<HD>;
    extern __shared__ __align__(16) unsigned char smem[];
    float *qs = reinterpret_cast<float *>(smem); /* (M, QS) rounded queries */
    float *ps = qs + C::M * C::QS;               /* (M, PS) probabilities */
    __half *ks = reinterpret_cast<__half *>(ps + C::M * C::PS), *vs = ks + KT * C::KS;

    const int tid = threadIdx.x, rb = tid / 16, kb = tid % 16;
    const int32_t rep = a.n_head / a.n_head_kv, c = blockIdx.y;
    int64_t g, rho0, rho1;
    sl_attn_cta_rows(&a.plan, blockIdx.x, a.n, a.n_head_kv, rep, &g, &rho0, &rho1);
    const int64_t k_begin = (int64_t)c * a.plan.chunk;
    const int64_t k_end = sl_attn_row_end(&a.plan, c, a.pos0, rho1 - 1, rep); /* the last row sees most */

    for (int e = tid; e < C::M * HD; e += C::THREADS) {
        int r = e / HD, d = e % HD;
        int64_t rho = rho0 + r;
        float v = 0.0f;
        if (rho < rho1) {
            int64_t t = rho / rep;
            v = round_f16(a.q[(t * a.n_head + g * rep + (rho - t * rep)) * HD + d]);
        }
        qs[r * C::QS + d] = v;
    }
    int64_t lim[4]; /* key end of each of this thread's rows; a missing row sees nothing */
    float m[4], l[4], acc[4][C::NCH * C::VEC];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int64_t rho = rho0 + 4 * rb + i;
        lim[i] = rho < rho1 ? sl_attn_row_end(&a.plan, c, a.pos0, rho, rep) : k_begin;
        m[i] = -INFINITY;
        l[i] = 0.0f;
        for (int x = 0; x < C::NCH * C::VEC; x++) acc[i][x] = 0.0f;
    }
    const __half *kg = a.kc + g * a.n_ctx * HD, *vg = a.vc + g * a.n_ctx * HD;

    for (int64_t k0 = k_begin; k0 < k_end; k0 += KT) {
        __syncthreads(); /* queries stored; the previous tile's readers done */
        load_kv_tile<HD, C::KS, C::THREADS>(ks, vs, kg, vg, k0, k_end);
        __syncthreads();
        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
            for (int b = 0; b < 4; b++) s[i][b] = 0.0f;
        for (int d = 0; d < HD; d += 8) {
            float kf[4][8];
#pragma unroll
            for (int b = 0; b < 4; b++) h8_to_f32(*reinterpret_cast<const uint4 *>(ks + (kb + 16 * b) * C::KS + d), kf[b]);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int b = 0; b < 4; b++) s[i][b] = dot8(qs + (4 * rb + i) * C::QS + d, kf[b], s[i][b]);
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                s[i][b] = k0 + kb + 16 * b < lim[i] ? s[i][b] * a.scale : -INFINITY;
                mx = fmaxf(mx, s[i][b]);
            }
            for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            float m_new = fmaxf(m[i], mx), mu = m_new == -INFINITY ? 0.0f : m_new;
            float alpha = expf(m[i] - mu), sum = 0.0f;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                float p = expf(s[i][b] - mu);
                ps[(4 * rb + i) * C::PS + kb + 16 * b] = p;
                sum += p;
            }
            for (int off = 8; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
            l[i] = l[i] * alpha + sum;
            m[i] = m_new;
            for (int x = 0; x < C::NCH * C::VEC; x++) acc[i][x] *= alpha;
        }
        __syncthreads();
        for (int jj = 0; jj < KT; jj += 4) {
            float p[4][4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float4 p4 = *reinterpret_cast<const float4 *>(ps + (4 * rb + i) * C::PS + jj);
                p[i][0] = p4.x;
                p[i][1] = p4.y;
                p[i][2] = p4.z;
                p[i][3] = p4.w;
            }
#pragma unroll
            for (int b = 0; b < 4; b++)
#pragma unroll
                for (int ch = 0; ch < C::NCH; ch++) {
                    float vf[C::VEC];
                    load_h<C::VEC>(vs + (jj + b) * C::KS + ch * 16 * C::VEC + kb * C::VEC, vf);
#pragma unroll
                    for (int i = 0; i < 4; i++)
#pragma unroll
                        for (int x = 0; x < C::VEC; x++)
                            acc[i][ch * C::VEC + x] = fmaf(p[i][b], vf[x], acc[i][ch * C::VEC + x]);
                }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int64_t rho = rho0 + 4 * rb + i;
        if (rho >= rho1) continue;
        int64_t t = rho / rep, row = t * a.n_head + g * rep + (rho - t * rep);
        for (int ch = 0; ch < C::NCH; ch++)
            write_row<HD>(a, row, c, ch * 16 * C::VEC + kb * C::VEC, acc[i] + ch * C::VEC, C::VEC, m[i], l[i],
                          kb == 0 && ch == 0);
    }
}

/* ---- merge -------------------------------------------------------------------------------- */

/* One CTA per output row (token, head): the CPU's merge of the splits' partial softmaxes. */
static __global__ void attn_merge_kernel(const float *ws_acc, const float2 *ws_ml, int32_t n_split, int32_t head_dim,
                                         float *out) {
    extern __shared__ float w[]; /* (n_split) weights */
    const int64_t row = blockIdx.x;
    const float *ml = reinterpret_cast<const float *>(ws_ml + row * n_split);
    const float mg = sl_attn_merge_max(ml, n_split);
    for (int s = threadIdx.x; s < n_split; s += blockDim.x) w[s] = sl_attn_merge_weight(ml + 2 * s, mg);
    __syncthreads();
    float l = 0.0f;
    for (int s = 0; s < n_split; s++) l += w[s] * ml[2 * s + 1];
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        const float *acc = ws_acc + row * n_split * head_dim + d;
        float o = 0.0f;
        for (int s = 0; s < n_split; s++) o += w[s] * acc[(int64_t)s * head_dim];
        out[row * head_dim + d] = o / l;
    }
}

/* ---- launch ------------------------------------------------------------------------------- */

template <int HD>
static int attention_launch(const attn_args &a, cudaStream_t stream) {
    dim3 grid((unsigned)a.plan.row_blocks, (unsigned)a.plan.n_split);
    if (a.plan.decode) {
        const size_t smem = decode_cfg<HD>::smem;
        SL_CUDA_CHECK(cudaFuncSetAttribute(attn_decode_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attn_decode_kernel<HD><<<grid, decode_cfg<HD>::THREADS, smem, stream>>>(a);
    } else {
        const size_t smem = tile_cfg<HD>::smem;
        SL_CUDA_CHECK(cudaFuncSetAttribute(attn_tile_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attn_tile_kernel<HD><<<grid, tile_cfg<HD>::THREADS, smem, stream>>>(a);
    }
    SL_CUDA_CHECK(cudaGetLastError());
    if (a.plan.n_split > 1) {
        attn_merge_kernel<<<(unsigned)(a.n * a.n_head), HD, (size_t)a.plan.n_split * sizeof(float), stream>>>(
            a.ws_acc, a.ws_ml, a.plan.n_split, HD, a.out);
        SL_CUDA_CHECK(cudaGetLastError());
    }
    return 0;
}

extern "C" size_t sl_gpu_attention_workspace_bytes(int64_t n, int32_t n_head, int32_t head_dim) {
    return sl_attn_workspace_bytes(n, n_head, head_dim);
}

static int attention(const float *q, const uint16_t *kc, const uint16_t *vc, int64_t n_ctx, int64_t n, int64_t pos0,
                     const int32_t *last, int32_t n_head, int32_t n_head_kv, int32_t head_dim, float *out,
                     void *workspace, size_t workspace_bytes, void *stream);

extern "C" int sl_gpu_attention(const float *q, const uint16_t *kc, const uint16_t *vc, int64_t n_ctx, int64_t n,
                                int64_t pos0, int32_t n_head, int32_t n_head_kv, int32_t head_dim, float *out,
                                void *workspace, size_t workspace_bytes, void *stream) {
    return attention(q, kc, vc, n_ctx, n, pos0, NULL, n_head, n_head_kv, head_dim, out, workspace, workspace_bytes,
                     stream);
}

extern "C" int sl_gpu_attention_gathered(const float *q, const uint16_t *kc, const uint16_t *vc, int64_t ld,
                                         const int32_t *last_dev, int32_t n_head, int32_t n_head_kv, int32_t head_dim,
                                         float *out, void *workspace, size_t workspace_bytes, void *stream) {
    if (!last_dev || n_head_kv <= 0 || n_head % n_head_kv || n_head / n_head_kv > SL_ATTN_DECODE_MAX_REP)
        return sl_fail(SL_EUNSUPPORTED, "sl_gpu_attention_gathered: %d heads over %d KV heads (groups of at most %d)",
                       n_head, n_head_kv, SL_ATTN_DECODE_MAX_REP);
    return attention(q, kc, vc, ld, 1, ld - 1, last_dev, n_head, n_head_kv, head_dim, out, workspace, workspace_bytes,
                     stream);
}

static int attention(const float *q, const uint16_t *kc, const uint16_t *vc, int64_t n_ctx, int64_t n, int64_t pos0,
                     const int32_t *last, int32_t n_head, int32_t n_head_kv, int32_t head_dim, float *out,
                     void *workspace, size_t workspace_bytes, void *stream) {
    if (!q || !kc || !vc || !out || n < 0 || pos0 < 0 || n_ctx <= 0 || n_head <= 0 || n_head_kv <= 0 ||
        n_head % n_head_kv || n > INT32_MAX / n_head || ((uintptr_t)kc | (uintptr_t)vc) & 15 ||
        (workspace && ((uintptr_t)workspace & 15)))
        return sl_fail(SL_EINVAL, "sl_gpu_attention: %lld tokens, %d heads over %d KV heads, cache of %lld",
                       (long long)n, n_head, n_head_kv, (long long)n_ctx);
    if (head_dim != 64 && head_dim != 128 && head_dim != 256)
        return sl_fail(SL_EUNSUPPORTED, "sl_gpu_attention: head_dim %d (64, 128 or 256)", head_dim);
    if (pos0 > n_ctx || n > n_ctx - pos0)
        return sl_fail(SL_EBOUNDS, "sl_gpu_attention: positions [%lld, %lld) past the cache of %lld",
                       (long long)pos0, (long long)(pos0 + n), (long long)n_ctx);
    if (n == 0) return 0;
    int dev = 0, n_sm = 0;
    SL_CUDA_CHECK(cudaGetDevice(&dev));
    SL_CUDA_CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev));
    attn_args a;
    a.plan = sl_attn_plan_make(n, pos0, n_head, n_head_kv, head_dim, workspace ? workspace_bytes : 0, n_sm);
    a.q = q;
    a.kc = reinterpret_cast<const __half *>(kc);
    a.vc = reinterpret_cast<const __half *>(vc);
    a.n_ctx = n_ctx;
    a.n = n;
    a.pos0 = pos0;
    a.last = last;
    a.n_head = n_head;
    a.n_head_kv = n_head_kv;
    a.scale = 1.0f / sqrtf((float)head_dim); /* as the CPU */
    a.out = out;
    a.ws_acc = static_cast<float *>(workspace);
    a.ws_ml = workspace ? reinterpret_cast<float2 *>(static_cast<char *>(workspace) +
                                                     sl_attn_ml_offset(n, n_head, a.plan.n_split, head_dim))
                        : nullptr;
    cudaStream_t s = (cudaStream_t)stream;
    switch (head_dim) {
    case 64: return attention_launch<64>(a, s);
    case 128: return attention_launch<128>(a, s);
    default: return attention_launch<256>(a, s);
    }
}
