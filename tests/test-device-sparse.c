/* Sparse decode in a device backend's memory (core/sparse-attn.c device mode, the sparse_*
 * ops of core/backend.h) on the emulated device (tests/emu-device-backend.h), which computes
 * on the CPU exactly what the CPU path computes: so a context on it must give the CPU
 * context's logits bit for bit. Checked directly (the emulated ops against sl_sparse_attend
 * over the same KV store) and through whole contexts on a tiny model: prefill, then greedy
 * decode, against a CPU context with its K/V in a store file. No GPU needed. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/attn-truth.h"
#include "core/backend.h"
#include "core/hash.h"
#include "core/sparse-attn.h"
#include "cpu/f16-row.h"
#include "spotlight/context.h"
#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "tests/emu-device-backend.h"
#include "tests/gguf-builder.h"

#define OK(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        cr_assert_eq(rc_, 0, "%s: %s (%s)", #call, sl_strerror(rc_), sl_error_detail());           \
    } while (0)

#include "tests/test-rng.h"

static void install(void) { sl_backend_set_device_factory(sl_emu_device_backend_create); }
static void uninstall(void) { sl_backend_set_device_factory(NULL); }

TestSuite(device_sparse, .init = install, .fini = uninstall, .timeout = 300);

/* ---- the emulated ops against the CPU path, over one KV store ----------------------------- */

enum { L = 3, HQ = 8, HKV = 2, G = 4, D = 32, NCTX = 608, NB = 16 };

static void ops_match(int32_t block) {
    rs = 11;
    struct sl_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layer = L, cfg.n_head = HQ, cfg.n_head_kv = HKV, cfg.head_dim = D;
    struct sl_attn_params p = sl_attn_default_params(SL_ATTN_SIMHASH);
    p.budget = 0.05f, p.min_tokens = 8, p.n_sink = 4, p.n_window = 16, p.dense_layers = 1, p.block = block;
    const uint8_t fp[32] = {0};
    struct sl_sparse *sp;
    OK(sl_sparse_create(&p, &cfg, fp, NCTX, NB, &sp));
    /* the same SimHash the CPU path makes, for the emulated device's copy of the codes */
    struct sl_hash_params hp = sl_hash_default_params();
    sl_hash_params_from_config(&cfg, &hp);
    hp.kind = SL_HASH_SIMHASH, hp.bits = p.bits, hp.seed = 0;
    sl_hash *h;
    OK(sl_hash_create(&hp, &h));
    const int32_t W = sl_hash_code_words(hp.bits);
    struct sl_kv_shape shape = {.n_layer = L, .n_head_kv = HKV, .head_dim = D, .dtype = SL_KV_DTYPE_F16,
                                .block_tokens = 16};
    struct sl_kv_store_params kp = sl_kv_store_default_params();
    kp.capacity = NCTX;
    sl_kv_store_t store;
    OK(sl_kv_store_create(&shape, &kp, &store));
    struct sl_backend *cpu, *dev;
    OK(sl_backend_cpu_create(2, &cpu));
    OK(sl_emu_device_backend_create(0, 2, &dev));
    cr_assert(!dev->host_memory);
    struct sl_backend_sparse *ds;
    const struct sl_backend_sparse_params bp = {
        .hash = h, .store = store, .n_layer = L, .n_head = HQ, .n_head_kv = HKV, .head_dim = D, .n_ctx = NCTX,
        .max_sel = NCTX, .n_sink = p.n_sink, .n_window = p.n_window, .block = block};
    OK(dev->sparse_create(dev, &bp, &ds));
    sl_hash_free(h); /* read during create only */
    OK(sl_hash_create(&hp, &h));
    /* keys in clusters (so scores spread), f16-exact; chunks of NB as the engine adds them */
    float k[NB * HKV * D], v[NB * HKV * D], rows[NB * D], work[8192];
    uint16_t k16[NB * HKV * D], v16[NB * HKV * D];
    uint64_t codes[HKV * NB * 16];
    cr_assert_leq(sl_hash_work_floats(D, hp.bits, NB), sizeof work / sizeof work[0]);
    for (int64_t pos0 = 0; pos0 < NCTX; pos0 += NB) {
        for (int32_t l = 0; l < L; l++) {
            for (int i = 0; i < NB * HKV * D; i++) {
                k[i] = (float)(gauss() * 0.8 + ((i + pos0) % 7 == 0 ? 2.0 : 0.0));
                v[i] = (float)gauss();
            }
            sl_f32_to_f16_row(k, k16, NB * HKV * D);
            sl_f32_to_f16_row(v, v16, NB * HKV * D);
            sl_f16_row_to_f32(k16, k, NB * HKV * D);
            OK(sl_kv_store_append(store, l, NB, k16, v16));
            OK(sl_sparse_add_keys(sp, l, pos0, NB, k));
            if (l < p.dense_layers) continue;
            for (int32_t g = 0; g < HKV; g++) {
                for (int t = 0; t < NB; t++) memcpy(rows + t * D, k + (t * HKV + g) * D, sizeof(float) * D);
                OK(sl_hash_encode(sl_hash_key_fn(h, l, g), D, hp.bits, rows, NB, codes + g * NB * W, work));
            }
            OK(dev->sparse_codes(dev, ds, l, pos0, NB, codes));
        }
        OK(sl_kv_store_commit(store, NB, NULL));
    }
    /* decode tokens at a few positions of each sparse layer: the same bits */
    float q[HQ * D], tk[HKV * D], tv[HKV * D], want[HQ * D], got[HQ * D];
    uint16_t tk16[HKV * D], tv16[HKV * D];
    const int64_t positions[] = {3, 40, 300, 333, NCTX - 1};
    int64_t calls = 0;
    for (int32_t l = p.dense_layers; l < L; l++)
        for (int pi = 0; pi < 5; pi++) {
            const int64_t P = positions[pi];
            for (int i = 0; i < HQ * D; i++) q[i] = (float)(gauss() + (i % 7 == 0 ? 1.5 : 0.0));
            for (int i = 0; i < HKV * D; i++) tk[i] = (float)gauss(), tv[i] = (float)gauss();
            sl_f32_to_f16_row(tk, tk16, HKV * D);
            sl_f32_to_f16_row(tv, tv16, HKV * D);
            const struct sl_sparse_kv src = {.store = store, .ck = tk16, .cv = tv16};
            OK(sl_sparse_attend(sp, cpu, &src, l, q, 1, P, want));
            int64_t kb = sl_truth_budget_k(p.budget, P);
            if (kb < p.min_tokens) kb = p.min_tokens;
            memset(got, 0xFF, sizeof got);
            OK(dev->sparse_decode(dev, ds, l, q, tk, tv, P, kb, got));
            cr_assert_arr_eq(got, want, sizeof got, "block %d layer %d position %lld", block, l, (long long)P);
            calls++;
        }
    struct sl_attn_stats cs;
    struct sl_backend_sparse_stats st;
    sl_sparse_stats(sp, &cs);
    OK(dev->sparse_stats(dev, ds, &st));
    cr_assert_eq(st.calls, calls);
    cr_assert_eq(st.selected, cs.selected, "%lld vs the CPU's %lld", (long long)st.selected, (long long)cs.selected);
    cr_assert_lt(st.selected, cs.candidates / 4, "the budget drops most positions");
    cr_assert_eq(st.rows, st.selected);
    cr_assert_eq(st.bytes_in, st.rows * D * 4);
    cr_assert_eq(st.code_bytes, (int64_t)L * HKV * NCTX * W * 8);
    /* misuse is refused */
    cr_assert_eq(dev->sparse_codes(dev, ds, L, 0, 1, codes), SL_EBOUNDS);
    cr_assert_eq(dev->sparse_codes(dev, ds, 1, NCTX - 1, 2, codes), SL_EBOUNDS);
    cr_assert_eq(dev->sparse_decode(dev, ds, 1, q, tk, tv, NCTX, 8, got), SL_EINVAL);
    dev->sparse_free(dev, ds);
    dev->sparse_free(dev, NULL);
    dev->free(dev);
    cpu->free(cpu);
    sl_kv_store_free(store);
    sl_hash_free(h);
    sl_sparse_free(sp);
}

Test(device_sparse, emulated_ops_match_the_cpu_path_token_level) { ops_match(1); }
Test(device_sparse, emulated_ops_match_the_cpu_path_blocks) { ops_match(16); }

/* ---- whole contexts on a tiny model --------------------------------------------------------- */

enum { N_PROMPT = 400, STEPS = 16 };

/* A 3-layer llama whose weights are multiples of 1/8 (tests/gguf-builder.c). */
static sl_model *tiny_model(void) {
    const struct gb_model_spec spec = {.arch = "llama", .n_layer = 3, .n_embd = 256, .n_ff = 384, .n_head = 8,
                                       .n_head_kv = 2, .n_vocab = 300, .n_ctx = 1024, .tied = 1};
    sl_model *m = NULL;
    OK(gb_load_model(&spec, &m));
    return m;
}

/* A spotlight hash file for m, weights perturbed so the MLP matters, marked trained. */
static void spotlight_hash(const sl_model *m, char *path) {
    struct sl_hash_params hp = sl_hash_default_params();
    sl_hash_params_from_config(sl_model_config(m), &hp);
    hp.bits = 64, hp.kind = SL_HASH_SPOTLIGHT;
    sl_hash *h;
    OK(sl_hash_create(&hp, &h));
    rs = 5;
    for (int32_t l = 0; l < hp.n_layer; l++) {
        int64_t nw;
        float *w = sl_hash_layer_weights(h, l, &nw);
        for (int64_t i = 0; i < nw; i++) w[i] += (float)(0.1 * gauss());
        struct sl_hash_layer_info info = {SL_HASH_TRAINED, 1, 0, 0, 0.05f};
        OK(sl_hash_layer_info_set(h, l, &info));
    }
    uint8_t fp[32];
    OK(sl_model_fingerprint(m, fp));
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    OK(sl_hash_save(h, fp, path));
    sl_hash_free(h);
}

static int argmax(const float *l, int64_t n) {
    int best = 0;
    for (int64_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = (int)i;
    return best;
}

struct run {
    float *logits; /* (STEPS + 1, n_vocab): after the prefill, then after each decode token */
    int32_t toks[STEPS];
    struct sl_attn_stats st;
};

/* Prefill N_PROMPT tokens, then STEPS greedy tokens. a NULL: dense. */
static void run(const sl_model *m, bool gpu, const char *kv_path, const struct sl_attn_params *a, struct run *r) {
    const int64_t V = sl_model_config(m)->n_vocab;
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = 512, cp.n_batch = 64, cp.n_threads = 2, cp.gpu = gpu, cp.kv_path = kv_path;
    sl_context *c;
    OK(sl_context_create(m, &cp, &c));
    if (gpu) cr_assert_str_eq(sl_context_backend_name(c), "emu-device");
    if (a) OK(sl_context_set_attention(c, a));
    int32_t prompt[N_PROMPT];
    for (int64_t i = 0; i < N_PROMPT; i++) prompt[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    OK(sl_context_eval(c, prompt, N_PROMPT, false));
    r->logits = malloc(sizeof(float) * (size_t)((STEPS + 1) * V));
    cr_assert(r->logits);
    for (int s = 0; s <= STEPS; s++) {
        memcpy(r->logits + s * V, sl_context_logits(c), sizeof(float) * (size_t)V);
        if (s == STEPS) break;
        r->toks[s] = argmax(sl_context_logits(c), V);
        OK(sl_context_eval(c, &r->toks[s], 1, false));
    }
    sl_context_attn_stats(c, &r->st);
    if (gpu) cr_assert_gt(sl_context_device_bytes(c), 0);
    sl_context_free(c);
}

/* The device context (its K/V in pinned host memory, or in a store file of its own when
 * dev_file) against the CPU context with its K/V in a store file: logits of every step within
 * 1e-4 of their largest magnitude (bit-identical expected), the same tokens. */
static void compare(const struct sl_attn_params *a, bool dev_file) {
    sl_model *m = tiny_model();
    const int64_t V = sl_model_config(m)->n_vocab;
    char cpath[] = "/tmp/sl-dev-cpu-XXXXXX", dpath[] = "/tmp/sl-dev-emu-XXXXXX";
    int fc = mkstemp(cpath), fd = mkstemp(dpath);
    cr_assert(fc >= 0 && fd >= 0);
    close(fc);
    close(fd);
    struct run cpu, dev;
    run(m, false, a ? cpath : NULL, a, &cpu);
    run(m, true, a && dev_file ? dpath : NULL, a, &dev);
    int identical = 0;
    for (int s = 0; s <= STEPS; s++) {
        const float *x = cpu.logits + s * V, *y = dev.logits + s * V;
        double diff = 0, mag = 1e-30;
        for (int64_t i = 0; i < V; i++) diff = fmax(diff, fabs((double)x[i] - y[i])), mag = fmax(mag, fabs(x[i]));
        cr_assert(diff <= 1e-4 * mag, "step %d: logits differ by %g (largest %g)", s, diff, mag);
        identical += memcmp(x, y, sizeof(float) * (size_t)V) == 0;
        if (s < STEPS) cr_assert_eq(dev.toks[s], cpu.toks[s], "step %d: token %d, the CPU's %d", s, dev.toks[s], cpu.toks[s]);
    }
    cr_log_info("%d of %d steps bit-identical", identical, STEPS + 1);
    if (a) {
        cr_assert_eq(dev.st.sparse_calls, cpu.st.sparse_calls);
        cr_assert_gt(dev.st.sparse_calls, 0);
        cr_assert_lt(dev.st.selected, dev.st.candidates, "selection dropped positions");
        cr_assert_eq(dev.st.selected, cpu.st.selected);
        cr_assert_eq(dev.st.candidates, cpu.st.candidates);
        cr_assert_gt(dev.st.dev_rows, 0, "the device fetched no rows");
        cr_assert_eq(cpu.st.dev_rows, 0);
    }
    free(cpu.logits);
    free(dev.logits);
    unlink(cpath);
    unlink(dpath);
    for (int i = 0; i < 2; i++) { /* the key codes the contexts saved beside the stores */
        char codes[64];
        snprintf(codes, sizeof codes, "%s.codes", i ? dpath : cpath);
        unlink(codes);
    }
    sl_model_free(m);
}

static struct sl_attn_params sparse_params(enum sl_attn_mode mode, int32_t block) {
    struct sl_attn_params a = sl_attn_default_params(mode);
    a.budget = 0.05f, a.min_tokens = 8, a.n_sink = 4, a.n_window = 16, a.dense_layers = 1, a.block = block;
    return a;
}

Test(device_sparse, dense_on_the_emulated_device_matches_the_cpu) { compare(NULL, false); }

Test(device_sparse, simhash_tokens_match_the_cpu) {
    struct sl_attn_params a = sparse_params(SL_ATTN_SIMHASH, 1);
    compare(&a, false);
}

Test(device_sparse, simhash_blocks_from_a_store_file_match_the_cpu) {
    struct sl_attn_params a = sparse_params(SL_ATTN_SIMHASH, 16);
    compare(&a, true);
}

Test(device_sparse, spotlight_hash_file_matches_the_cpu) {
    sl_model *m = tiny_model();
    char hpath[] = "/tmp/sl-dev-hash-XXXXXX";
    spotlight_hash(m, hpath);
    sl_model_free(m);
    struct sl_attn_params a = sparse_params(SL_ATTN_SPOTLIGHT, 1);
    a.hash_path = hpath;
    compare(&a, true);
    a.block = 16;
    compare(&a, false);
    unlink(hpath);
}

Test(device_sparse, device_refuses_what_it_cannot_run) {
    sl_model *m = tiny_model();
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = 256, cp.n_threads = 2, cp.gpu = true;
    sl_context *c;
    cp.gpu_device = 1;
    cr_assert_eq(sl_context_create(m, &cp, &c), SL_ENODEV, "one emulated device");
    cp.gpu_device = 0;
    OK(sl_context_create(m, &cp, &c));
    struct sl_attn_params a = sparse_params(SL_ATTN_TOPK_EXACT, 1);
    cr_assert_eq(sl_context_set_attention(c, &a), SL_EUNSUPPORTED, "topk-exact: %s", sl_error_detail());
    a = sparse_params(SL_ATTN_SIMHASH, 1);
    a.rerank = 2;
    cr_assert_eq(sl_context_set_attention(c, &a), SL_EUNSUPPORTED, "rerank: %s", sl_error_detail());
    sl_context_free(c);
    sl_model_free(m);
}

/* Sparse, then dense again before the first eval: the store goes, every layer's K/V comes back
 * to device memory, and the run is the dense CPU run. */
Test(device_sparse, back_to_dense_keeps_every_layer_on_the_device) {
    sl_model *m = tiny_model();
    const int64_t V = sl_model_config(m)->n_vocab;
    struct run cpu;
    run(m, false, NULL, NULL, &cpu);
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = 512, cp.n_batch = 64, cp.n_threads = 2, cp.gpu = true;
    sl_context *c;
    OK(sl_context_create(m, &cp, &c));
    struct sl_attn_params a = sparse_params(SL_ATTN_SIMHASH, 1);
    OK(sl_context_set_attention(c, &a));
    a = sl_attn_default_params(SL_ATTN_DENSE);
    OK(sl_context_set_attention(c, &a));
    int32_t prompt[N_PROMPT];
    for (int64_t i = 0; i < N_PROMPT; i++) prompt[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    OK(sl_context_eval(c, prompt, N_PROMPT, false));
    for (int s = 0; s <= STEPS; s++) {
        cr_assert_arr_eq(sl_context_logits(c), cpu.logits + s * V, sizeof(float) * (size_t)V, "step %d", s);
        if (s < STEPS) OK(sl_context_eval(c, &cpu.toks[s], 1, false));
    }
    free(cpu.logits);
    sl_context_free(c);
    sl_model_free(m);
}

/* A device context resumed from a store continues as the one that never stopped: the store's
 * key codes reach the device table whether they come from the code file beside the store or
 * from hashing the stored keys again. */
Test(device_sparse, resumed_store_continues_on_the_device) {
    enum { CUT = 5 };
    sl_model *m = tiny_model();
    const int64_t V = sl_model_config(m)->n_vocab;
    const struct sl_attn_params a = sparse_params(SL_ATTN_SIMHASH, 16);
    char path[] = "/tmp/sl-dev-resume-XXXXXX", codes[64];
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    snprintf(codes, sizeof codes, "%s.codes", path);
    struct run ref;
    run(m, true, path, &a, &ref); /* the prompt and STEPS tokens: what the resumes continue */
    for (int hashed = 0; hashed < 2; hashed++) {
        if (hashed) cr_assert_eq(unlink(codes), 0);
        struct sl_context_params cp = sl_context_default_params();
        cp.n_ctx = 512, cp.n_batch = 64, cp.n_threads = 2, cp.gpu = true, cp.kv_path = path;
        cp.kv_resume = true, cp.kv_resume_keep = N_PROMPT + CUT;
        sl_context *c;
        OK(sl_context_create(m, &cp, &c));
        OK(sl_context_set_attention(c, &a));
        struct sl_attn_stats st;
        sl_context_attn_stats(c, &st);
        cr_assert_eq(st.resume_codes_read, !hashed);
        for (int s = CUT; s < STEPS; s++) {
            OK(sl_context_eval(c, &ref.toks[s], 1, false));
            cr_assert_arr_eq(sl_context_logits(c), ref.logits + (s + 1) * V, sizeof(float) * (size_t)V,
                             "step %d after a resume (codes %s)", s, hashed ? "hashed" : "read");
        }
        sl_context_free(c);
    }
    free(ref.logits);
    unlink(path);
    unlink(codes);
    sl_model_free(m);
}
