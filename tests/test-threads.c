/* A context's logits do not depend on its thread count: prefill (sgemm matmuls and attention),
 * decode (dot matmuls and flash-decoding) and sparse prefill and decode, on a generated model,
 * give the same bits with 1, 2 and 3 threads, so a greedy generation or a summary is the same
 * whatever -t a run or an MPI rank uses. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/context.h"
#include "spotlight/error.h"
#include "spotlight/model.h"
#include "tests/gguf-builder.h"

#define OK(expr)                                                                               \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        cr_assert_eq(rc_, 0, "%s -> %s (%s)", #expr, sl_strerror(rc_), sl_error_detail());     \
    } while (0)

enum { N_PROMPT = 700, STEPS = 12, N_VOCAB = 300 };

/* Logits of every prompt position (prefill in chunks of 256), then of STEPS decode tokens;
 * returns malloc'd (N_PROMPT + STEPS, N_VOCAB). */
static float *run(const sl_model *m, int threads, const struct sl_attn_params *a) {
    struct sl_context_params p = sl_context_default_params();
    p.n_ctx = 1024;
    p.n_threads = threads;
    p.n_batch = 256;
    sl_context *c = NULL;
    OK(sl_context_create(m, &p, &c));
    if (a) OK(sl_context_set_attention(c, a));
    int32_t tok[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++) tok[i] = (int32_t)((i * 37 + i / 7) % N_VOCAB);
    float *out = malloc(sizeof(float) * (N_PROMPT + STEPS) * N_VOCAB);
    OK(sl_context_eval(c, tok, N_PROMPT, true));
    cr_assert_eq(sl_context_logits_rows(c), N_PROMPT);
    memcpy(out, sl_context_logits(c), sizeof(float) * N_PROMPT * N_VOCAB);
    for (int s = 0; s < STEPS; s++) {
        int32_t t = (int32_t)((s * 101 + 7) % N_VOCAB);
        OK(sl_context_eval(c, &t, 1, false));
        memcpy(out + (size_t)(N_PROMPT + s) * N_VOCAB, sl_context_logits(c), sizeof(float) * N_VOCAB);
    }
    sl_context_free(c);
    return out;
}

static void same_for_any_thread_count(const struct sl_attn_params *a) {
    const struct gb_model_spec spec = {.arch = "llama", .n_layer = 3, .n_embd = 256, .n_ff = 384, .n_head = 8,
                                       .n_head_kv = 2, .n_vocab = N_VOCAB, .n_ctx = 1024, .tied = 1};
    sl_model *m = NULL;
    OK(gb_load_model(&spec, &m));
    float *ref = run(m, 1, a);
    for (int threads = 2; threads <= 3; threads++) {
        float *got = run(m, threads, a);
        for (int64_t i = 0; i < (int64_t)(N_PROMPT + STEPS) * N_VOCAB; i++)
            cr_assert(memcmp(&got[i], &ref[i], sizeof(float)) == 0,
                      "%d threads: logit %lld of %s %lld is %.9g, %.9g on 1 thread", threads,
                      (long long)(i % N_VOCAB), i / N_VOCAB < N_PROMPT ? "prompt position" : "decode step",
                      (long long)(i / N_VOCAB < N_PROMPT ? i / N_VOCAB : i / N_VOCAB - N_PROMPT),
                      got[i], ref[i]);
        free(got);
    }
    free(ref);
    sl_model_free(m);
}

Test(threads, dense_logits_bitwise_independent, .timeout = 300) { same_for_any_thread_count(NULL); }

Test(threads, sparse_logits_bitwise_independent, .timeout = 300) {
    struct sl_attn_params a = sl_attn_default_params(SL_ATTN_SIMHASH);
    a.budget = 0.05f;
    a.dense_layers = 1;
    a.sparse_prefill = true;
    same_for_any_thread_count(&a);
}
