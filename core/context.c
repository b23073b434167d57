/* A context and its forward pass: one transformer step over a chunk of tokens, written once
 * against the backend seam (core/backend.h). Buffers are allocated at creation for a full
 * chunk, so evaluating allocates nothing except a larger logits buffer on first use. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/code-file.h"
#include "core/internal.h"
#include "core/kv-cache.h"
#include "core/sparse-attn.h"
#include "cpu/f16-row.h"
#include "spotlight/context.h"
#include "spotlight/kv-store.h"

struct sl_context {
    const sl_model *model;
    const struct sl_model_config *cfg;
    struct sl_backend *be;
    struct sl_kv_cache kv;
    int64_t n_past;
    int32_t n_batch;

    /* activations for one chunk of up to n_batch tokens */
    float *x;     /* (n_batch, n_embd) residual stream */
    float *xb;    /* (n_batch, n_embd) normed input */
    float *q;     /* (n_batch, n_head*head_dim) */
    float *k, *v; /* (n_batch, n_head_kv*head_dim) */
    float *att;   /* (n_batch, n_head*head_dim) */
    float *proj;  /* (n_batch, n_embd) */
    float *gate, *up; /* (n_batch, n_ff) */
    float *logits;    /* (logits_cap, n_vocab) host memory */
    float *logits_be; /* (n_batch, n_vocab) the backend's, when it is not host memory; else NULL */
    int64_t logits_cap, logits_rows;
    int64_t host_bytes, device_bytes;
    sl_qk_tap_fn qk_tap; /* optional observer of post-RoPE q/k */
    void *qk_tap_user;
    struct sl_sparse *sparse; /* NULL: dense attention everywhere */
    /* K/V in a store (params.kv_path): created by sl_context_set_attention */
    char *kv_path;
    int64_t kv_ram_budget;
    bool kv_resume, kv_in_ram, kv_overwrite, kv_recover;
    struct sl_kv_io_fault *kv_fault; /* tests only */
    double kv_synced_at;       /* sl_now_s() of the store's last sync (decode syncs once a second) */
    int32_t gpu_device, n_threads;
    int64_t kv_device_cache;
    int64_t kv_resume_keep;
    sl_kv_store_t store;
    uint8_t fp[32];            /* the model's fingerprint (set_attention) */
    /* a resumed store: positions it brought, whether their key codes came from the code
     * file, seconds reopening took */
    int64_t resume_positions;
    bool resume_codes_read;
    double resume_s;
    struct sl_kv_content_id codes_saved; /* the content the code file on disk is for, if known */
    bool codes_known;
    int32_t ram_layers;        /* layers whose K/V the RAM cache holds: all, or the dense ones */
    uint16_t *k16, *v16;       /* (n_batch, n_head_kv * head_dim) the chunk's K/V in f16 */
    /* a decode token on a device with a store: its K/V of every layer, kept in the backend's
     * memory until the last layer, then to the store and the hash in one transfer each */
    float *kstage, *vstage;    /* (n_layer, n_head_kv * head_dim), backend memory */
    uint16_t *k16all, *v16all; /* the same in f16, host */
    uint32_t *tags;            /* (n_batch) token ids committed with the positions */
};

struct sl_context_params sl_context_default_params(void) {
    return (struct sl_context_params){.n_ctx = 0, .n_threads = 0, .n_batch = 256};
}

/* Activations in the backend's memory; counted as host or device bytes. NULL on failure. */
static float *alloc_f32(sl_context *ctx, int64_t n) {
    void *p = NULL;
    if (ctx->be->buf_alloc(ctx->be, (size_t)n * sizeof(float), &p)) return NULL;
    *(ctx->be->host_memory ? &ctx->host_bytes : &ctx->device_bytes) += n * (int64_t)sizeof(float);
    return p;
}

static int be_alloc(void *user, size_t bytes, void **out) {
    struct sl_backend *be = user;
    return be->buf_alloc(be, bytes, out);
}

static void be_release(void *user, void *p) {
    struct sl_backend *be = user;
    be->buf_free(be, p);
}

/* The RAM (or VRAM) KV cache of layers [0, n_layers), in the backend's memory, replacing the
 * one before (none for 0; its n_ctx stays). */
static int kv_layers(sl_context *ctx, int32_t n_layers) {
    int64_t *acct = ctx->be->host_memory ? &ctx->host_bytes : &ctx->device_bytes;
    const int64_t n_ctx = ctx->kv.n_ctx;
    *acct -= sl_kv_cache_bytes(&ctx->kv, n_ctx);
    sl_kv_cache_free(&ctx->kv);
    ctx->kv.n_ctx = n_ctx;
    ctx->ram_layers = n_layers;
    if (n_layers == 0) return 0;
    const struct sl_kv_alloc a = {be_alloc, be_release, ctx->be};
    int rc = sl_kv_cache_init_in(&ctx->kv, n_layers, ctx->cfg->n_head_kv, ctx->cfg->head_dim, n_ctx, &a);
    ctx->kv.n_ctx = n_ctx;
    if (!rc) *acct += sl_kv_cache_bytes(&ctx->kv, n_ctx);
    return rc;
}

int sl_context_create(const sl_model *m, const struct sl_context_params *p, sl_context **out) {
    if (!m || !out) return sl_fail(SL_EINVAL, "sl_context_create: NULL argument");
    struct sl_context_params pp = p ? *p : sl_context_default_params();
    const struct sl_model_config *c = sl_model_config(m);
    if (pp.n_ctx <= 0) pp.n_ctx = c->n_ctx_train;
    if (pp.n_batch <= 0) pp.n_batch = 256;
    if (pp.n_batch > pp.n_ctx) pp.n_batch = (int32_t)pp.n_ctx;
    if (c->rope_scaling != SL_ROPE_SCALING_NONE && c->rope_scaling != SL_ROPE_SCALING_LINEAR)
        return sl_fail(SL_EUNSUPPORTED, "rope scaling '%s' is not supported (only none and linear are)", sl_rope_scaling_name(c->rope_scaling));
    sl_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return sl_fail(SL_ENOMEM, "out of memory");
    ctx->model = m;
    ctx->cfg = c;
    ctx->n_batch = pp.n_batch;
    ctx->ram_layers = c->n_layer;
    ctx->kv_ram_budget = pp.kv_ram_budget;
    ctx->kv_resume = pp.kv_resume;
    ctx->kv_resume_keep = pp.kv_resume_keep;
    ctx->kv_overwrite = pp.kv_overwrite;
    ctx->kv_recover = pp.kv_recover;
    ctx->kv_fault = pp.kv_fault;
    ctx->kv_in_ram = pp.kv_path && pp.kv_in_ram;
    ctx->gpu_device = pp.gpu_device;
    ctx->n_threads = pp.n_threads;
    ctx->kv_device_cache = pp.kv_device_cache == 0 ? (int64_t)64 << 20 : pp.kv_device_cache > 0 ? pp.kv_device_cache : 0;
    int rc = sl_backend_create(pp.gpu, pp.gpu_device, pp.n_threads, &ctx->be);
    if (!rc && ctx->be->load_model) rc = ctx->be->load_model(ctx->be, m);
    if (!rc && pp.kv_path && !(ctx->kv_path = strdup(pp.kv_path))) rc = sl_fail(SL_ENOMEM, "out of memory");
    ctx->kv.n_ctx = pp.n_ctx;
    /* With a store file the cache holds the dense layers only, and in device memory sparse
     * attention keeps only those there: sized when the mode is set, or dense at the first eval. */
    if (!rc && !(pp.kv_path && !pp.kv_in_ram) && ctx->be->host_memory) rc = kv_layers(ctx, c->n_layer);
    if (rc) {
        sl_context_free(ctx);
        return rc;
    }
    int64_t nb = pp.n_batch, q = (int64_t)c->n_head * c->head_dim, kv = (int64_t)c->n_head_kv * c->head_dim;
    ctx->x = alloc_f32(ctx, nb * c->n_embd);
    ctx->xb = alloc_f32(ctx, nb * c->n_embd);
    ctx->q = alloc_f32(ctx, nb * q);
    ctx->k = alloc_f32(ctx, nb * kv);
    ctx->v = alloc_f32(ctx, nb * kv);
    ctx->att = alloc_f32(ctx, nb * q);
    ctx->proj = alloc_f32(ctx, nb * c->n_embd);
    ctx->gate = alloc_f32(ctx, nb * c->n_ff);
    ctx->up = alloc_f32(ctx, nb * c->n_ff);
    if (!ctx->be->host_memory) ctx->logits_be = alloc_f32(ctx, nb * c->n_vocab);
    ctx->logits = malloc(sizeof(float) * (size_t)c->n_vocab);
    ctx->host_bytes += c->n_vocab * (int64_t)sizeof(float);
    ctx->logits_cap = 1;
    ctx->k16 = malloc(sizeof(uint16_t) * (size_t)(nb * kv));
    ctx->v16 = malloc(sizeof(uint16_t) * (size_t)(nb * kv));
    ctx->tags = malloc(sizeof(uint32_t) * (size_t)nb);
    if (!ctx->be->host_memory) {
        ctx->kstage = alloc_f32(ctx, (int64_t)c->n_layer * kv);
        ctx->vstage = alloc_f32(ctx, (int64_t)c->n_layer * kv);
        ctx->k16all = malloc(sizeof(uint16_t) * (size_t)(c->n_layer * kv));
        ctx->v16all = malloc(sizeof(uint16_t) * (size_t)(c->n_layer * kv));
    }
    ctx->host_bytes += (int64_t)(2 * sizeof(uint16_t) * (size_t)(nb * kv) + sizeof(uint32_t) * (size_t)nb);
    if (!ctx->x || !ctx->xb || !ctx->q || !ctx->k || !ctx->v || !ctx->att || !ctx->proj ||
        !ctx->gate || !ctx->up || !ctx->logits || (!ctx->be->host_memory && !ctx->logits_be) || !ctx->k16 ||
        !ctx->v16 || !ctx->tags ||
        (!ctx->be->host_memory && (!ctx->kstage || !ctx->vstage || !ctx->k16all || !ctx->v16all))) {
        sl_context_free(ctx);
        return sl_fail(SL_ENOMEM, "cannot allocate activations for a %" PRId64 "-token chunk", nb);
    }
    *out = ctx;
    return 0;
}

/* The store's key codes into the code file beside it (what a later resume reads instead of
 * hashing every stored key), after the store's final sync: best effort, a failure only costs
 * that resume time. */
static void save_codes(sl_context *c) {
    struct sl_code_table t;
    struct sl_code_source src;
    if (!c->sparse || !c->kv_path || !sl_sparse_code_table(c->sparse, &t)) return;
    char *path = sl_code_file_path(c->kv_path);
    memcpy(src.model, c->fp, 32);
    int rc = path ? 0 : sl_fail(SL_ENOMEM, "out of memory");
    if (!rc) rc = sl_kv_store_content_id(c->store, &src.store);
    if (!rc && c->codes_known && sl_kv_content_id_equal(&src.store, &c->codes_saved)) {
        free(path); /* the file read at resume, and nothing changed since */
        return;
    }
    if (!rc) rc = sl_sparse_hash_id(c->sparse, src.hash);
    if (!rc) rc = sl_code_file_save(path, &t, &src);
    if (rc)
        sl_log(SL_LOG_WARN, "the key codes were not saved beside %s (%s); resuming it will hash its keys again",
               c->kv_path, sl_error_detail());
    free(path);
}

int sl_context_sync(sl_context *c) {
    if (!c || !c->store || !c->kv_path) return 0;
    int rc = sl_kv_store_sync(c->store);
    if (rc) return sl_fail(rc, "the K/V of %s did not reach the disk: %s", c->kv_path, sl_error_detail());
    c->kv_synced_at = sl_now_s();
    return 0;
}

int sl_context_close(sl_context *c) {
    if (!c || !c->store) return 0;
    int rc = 0;
    char detail[512] = "";
    if (c->kv_path) {
        sl_sparse_quiesce(c->sparse);
        rc = sl_context_sync(c);
        if (rc) snprintf(detail, sizeof detail, "%s", sl_error_detail());
        else save_codes(c); /* the codes describe the synced content */
    }
    /* the sparse state may borrow the store (a device); it goes first */
    sl_sparse_free(c->sparse);
    c->sparse = NULL;
    if (c->kv_path) {
        int rc2 = sl_kv_store_close(c->store);
        if (rc) sl_fail(rc, "%s", detail);
        else if (rc2) rc = sl_fail(rc2, "the K/V of %s did not reach the disk: %s", c->kv_path, sl_error_detail());
    }
    sl_kv_store_free(c->store);
    c->store = NULL;
    return rc;
}

void sl_context_free(sl_context *c) {
    if (!c) return;
    if (c->store && sl_context_close(c))
        sl_log(SL_LOG_ERROR, "%s", sl_error_detail());
    sl_sparse_free(c->sparse);
    free(c->kv_path);
    free(c->k16);
    free(c->v16);
    free(c->tags);
    free(c->k16all);
    free(c->v16all);
    sl_kv_cache_free(&c->kv);
    struct sl_backend *be = c->be;
    if (be) {
        float *bufs[] = {c->x, c->xb, c->q, c->k, c->v, c->att, c->proj, c->gate, c->up, c->logits_be, c->kstage, c->vstage};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) be->buf_free(be, bufs[i]);
        be->free(be);
    }
    free(c->logits);
    free(c);
}

#define TRY(expr)                                                                              \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        if (rc_) return rc_;                                                                   \
    } while (0)

void sl_context_set_qk_tap(sl_context *c, sl_qk_tap_fn fn, void *user) {
    c->qk_tap = fn;
    c->qk_tap_user = fn ? user : NULL;
}

/* A decode token on a device with a store: nothing in the step reads the token's own code or
 * stored row, so they wait for the last layer (store_token) and the layers run without the
 * host. */
static bool defers_store(const sl_context *ctx, int64_t n) { return ctx->store && !ctx->be->host_memory && n == 1; }

/* One layer over n tokens at positions pos0.. (x updated in place). */
static int layer_forward(sl_context *ctx, int32_t il, int64_t n, int64_t pos0) {
    const struct sl_model_config *c = ctx->cfg;
    const struct sl_layer_weights *w = sl_model_layer(ctx->model, il);
    struct sl_backend *be = ctx->be;
    const int64_t qw = (int64_t)c->n_head * c->head_dim, kw = (int64_t)c->n_head_kv * c->head_dim;

    TRY(be->rmsnorm(be, ctx->x, w->attn_norm, n, c->n_embd, c->norm_eps, ctx->xb));
    const struct sl_gguf_tensor *qkv[3] = {w->wq, w->wk, w->wv};
    float *qkv_out[3] = {ctx->q, ctx->k, ctx->v};
    TRY(be->matmul_n(be, 3, qkv, ctx->xb, n, qkv_out));
    sl_sparse_poll(ctx->sparse); /* a prefetch in flight advances between pieces of compute */
    if (w->bq) {
        TRY(be->add_rows(be, ctx->q, w->bq, n, qw));
        TRY(be->add_rows(be, ctx->k, w->bk, n, kw));
        TRY(be->add_rows(be, ctx->v, w->bv, n, kw));
    }
    TRY(be->rope(be, ctx->q, n, c->n_head, c, pos0));
    TRY(be->rope(be, ctx->k, n, c->n_head_kv, c, pos0));
    if (ctx->qk_tap) {
        if (!be->host_memory) return sl_fail(SL_EUNSUPPORTED, "the q/k tap reads host memory: use the CPU backend");
        TRY(ctx->qk_tap(il, pos0, n, ctx->q, ctx->k, ctx->qk_tap_user));
    }
    if (il < ctx->ram_layers) TRY(be->kv_write(be, &ctx->kv, il, pos0, n, ctx->k, ctx->v));
    const bool defer = defers_store(ctx, n);
    if (defer) {
        TRY(be->copy(be, ctx->kstage + il * kw, ctx->k, sizeof(float) * (size_t)kw));
        TRY(be->copy(be, ctx->vstage + il * kw, ctx->v, sizeof(float) * (size_t)kw));
    } else if (ctx->store) { /* every layer goes to the store; committed after the chunk's last layer */
        TRY(be->export_f16(be, ctx->k, n * kw, ctx->k16));
        TRY(be->export_f16(be, ctx->v, n * kw, ctx->v16));
        TRY(sl_kv_store_append(ctx->store, il, n, ctx->k16, ctx->v16));
    }
    if (ctx->sparse && !defer) /* the backend's memory may not be the host's: then from the store's f16 copy */
        TRY(be->host_memory ? sl_sparse_add_keys(ctx->sparse, il, pos0, n, ctx->k)
                            : sl_sparse_add_keys_f16(ctx->sparse, il, pos0, n, ctx->k16));
    if (sl_sparse_applies(ctx->sparse, il, n)) {
        struct sl_sparse_kv src = il >= ctx->ram_layers ? (struct sl_sparse_kv){.store = ctx->store, .ck = ctx->k16,
                                                                                .cv = ctx->v16, .k = ctx->k, .v = ctx->v}
                                             : (struct sl_sparse_kv){.cache = &ctx->kv};
        TRY(sl_sparse_attend(ctx->sparse, be, &src, il, ctx->q, n, pos0, ctx->att));
    } else {
        TRY(be->attention(be, &ctx->kv, il, ctx->q, n, pos0, c->n_head, ctx->att));
    }
    TRY(be->matmul(be, w->wo, ctx->att, n, ctx->proj));
    TRY(be->add(be, ctx->x, ctx->proj, n * c->n_embd));

    TRY(be->rmsnorm(be, ctx->x, w->ffn_norm, n, c->n_embd, c->norm_eps, ctx->xb));
    const struct sl_gguf_tensor *gu[2] = {w->w_gate, w->w_up};
    float *gu_out[2] = {ctx->gate, ctx->up};
    TRY(be->matmul_n(be, 2, gu, ctx->xb, n, gu_out));
    sl_sparse_poll(ctx->sparse);
    TRY(be->swiglu(be, ctx->gate, ctx->up, n * c->n_ff, ctx->gate));
    TRY(be->matmul(be, w->w_down, ctx->gate, n, ctx->proj));
    sl_sparse_poll(ctx->sparse);
    TRY(be->add(be, ctx->x, ctx->proj, n * c->n_embd));
    return 0;
}

/* A deferred decode token (layer_forward) at pos: its K/V of every layer to the store, its
 * keys hashed, in one download each. */
static int store_token(sl_context *ctx, int64_t pos) {
    struct sl_backend *be = ctx->be;
    const int64_t kw = (int64_t)ctx->cfg->n_head_kv * ctx->cfg->head_dim, L = ctx->cfg->n_layer;
    TRY(be->export_f16(be, ctx->kstage, L * kw, ctx->k16all));
    TRY(be->export_f16(be, ctx->vstage, L * kw, ctx->v16all));
    for (int32_t il = 0; il < L; il++)
        TRY(sl_kv_store_append(ctx->store, il, 1, ctx->k16all + il * kw, ctx->v16all + il * kw));
    return ctx->sparse ? sl_sparse_add_token_keys_f16(ctx->sparse, pos, ctx->k16all) : 0;
}

/* Final norm and LM head for rows [r0, r0+rows) of the chunk into logits row `out_row`. */
static int head_forward(sl_context *ctx, int64_t r0, int64_t rows, int64_t out_row) {
    const struct sl_model_config *c = ctx->cfg;
    struct sl_backend *be = ctx->be;
    TRY(be->rmsnorm(be, ctx->x + r0 * c->n_embd, sl_model_output_norm(ctx->model), rows, c->n_embd, c->norm_eps,
                    ctx->xb));
    if (be->host_memory) return be->matmul(be, sl_model_output(ctx->model), ctx->xb, rows, ctx->logits + out_row * c->n_vocab);
    TRY(be->matmul(be, sl_model_output(ctx->model), ctx->xb, rows, ctx->logits_be));
    return be->download(be, ctx->logits + out_row * c->n_vocab, ctx->logits_be,
                        sizeof(float) * (size_t)(rows * c->n_vocab));
}

int sl_context_eval(sl_context *ctx, const int32_t *tokens, int64_t n, bool all_logits) {
    const struct sl_model_config *c = ctx->cfg;
    if (n <= 0) return sl_fail(SL_EINVAL, "nothing to evaluate");
    if (ctx->n_past + n > ctx->kv.n_ctx)
        return sl_fail(SL_EBOUNDS, "%" PRId64 " tokens after %" PRId64 " exceed the context of %" PRId64,
                       n, ctx->n_past, ctx->kv.n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->n_vocab)
            return sl_fail(SL_EINVAL, "token id %d at %" PRId64 " is outside the vocabulary (%d)", tokens[i], i, c->n_vocab);
    int64_t rows = all_logits ? n : 1;
    if (rows > ctx->logits_cap) {
        float *l = realloc(ctx->logits, (size_t)rows * (size_t)c->n_vocab * sizeof(float));
        if (!l) return sl_fail(SL_ENOMEM, "cannot hold logits for %" PRId64 " tokens", rows);
        ctx->host_bytes += (rows - ctx->logits_cap) * c->n_vocab * (int64_t)sizeof(float);
        ctx->logits = l;
        ctx->logits_cap = rows;
    }
    for (int64_t done = 0; done < n;) {
        int64_t m = n - done < ctx->n_batch ? n - done : ctx->n_batch, pos0 = ctx->n_past;
        TRY(ctx->be->get_rows(ctx->be, sl_model_token_embd(ctx->model), tokens + done, m, ctx->x));
        if (ctx->kv_path && !ctx->store)
            return sl_fail(SL_EINVAL, "K/V in a store file: set the attention mode (sparse, unless the K/V stay "
                                      "in RAM too) before the first eval");
        if (!ctx->store && !ctx->kv.k) TRY(kv_layers(ctx, c->n_layer)); /* dense in device memory */
        int rc = 0;
        for (int32_t il = 0; il < c->n_layer && !rc; il++) rc = layer_forward(ctx, il, m, pos0);
        if (!rc && defers_store(ctx, m)) rc = store_token(ctx, pos0);
        if (rc) {
            ctx->n_past = pos0; /* this chunk's cache rows are not valid */
            sl_sparse_quiesce(ctx->sparse);
            if (ctx->store) sl_kv_store_discard(ctx->store);
            return rc;
        }
        if (ctx->store) {
            sl_sparse_quiesce(ctx->sparse);
            for (int64_t i = 0; i < m; i++) ctx->tags[i] = (uint32_t)tokens[done + i];
            int rc = sl_kv_store_commit(ctx->store, m, ctx->tags);
            if (rc) {
                sl_kv_store_discard(ctx->store);
                return rc;
            }
        }
        ctx->n_past += m;
        done += m;
        /* the commit point: a prefill chunk is durable before eval reports it, decode tokens
         * at least once a second (sl_context.h) */
        if (ctx->store && ctx->kv_path && (m > 1 || sl_now_s() - ctx->kv_synced_at >= 1.0))
            TRY(sl_context_sync(ctx));
        if (all_logits)
            TRY(head_forward(ctx, 0, m, done - m));
        else if (done == n)
            TRY(head_forward(ctx, m - 1, 1, 0));
    }
    ctx->logits_rows = rows;
    return 0;
}

const float *sl_context_logits(const sl_context *c) { return c->logits; }
int64_t sl_context_logits_rows(const sl_context *c) { return c->logits_rows; }
int64_t sl_context_n_past(const sl_context *c) { return c->n_past; }
int64_t sl_context_n_ctx(const sl_context *c) { return c->kv.n_ctx; }
int64_t sl_context_device_bytes(const sl_context *c) { return c->device_bytes; }
const char *sl_context_backend_name(const sl_context *c) { return c->be->name; }

int64_t sl_context_host_bytes(const sl_context *c) {
    int64_t b = c->host_bytes;
    if (c->store) {
        struct sl_kv_store_stats st;
        sl_kv_store_get_stats(c->store, &st);
        b += st.ram_bytes;
    }
    return b;
}

/* The sparse layers' codes of the reopened store from its code file: true when read. A file
 * for other content (stale after a crash, say) or a damaged one is reported and passed over. */
static bool load_codes(sl_context *c, struct sl_sparse *sparse) {
    struct sl_code_table t;
    struct sl_code_source src;
    if (!sl_sparse_code_table(sparse, &t)) return false;
    memcpy(src.model, c->fp, 32);
    char *path = sl_code_file_path(c->kv_path);
    int rc = path ? 0 : sl_fail(SL_ENOMEM, "out of memory");
    if (!rc) rc = sl_kv_store_content_id(c->store, &src.store);
    if (!rc) rc = sl_sparse_hash_id(sparse, src.hash);
    if (!rc) rc = sl_code_file_load(path, &t, &src);
    /* a file for other content or another hash is expected (a crash, another --hash): a note */
    if (rc && rc != -ENOENT)
        sl_log(rc == SL_EMISMATCH ? SL_LOG_INFO : SL_LOG_WARN, "%s; hashing the stored keys again", sl_error_detail());
    free(path);
    c->codes_known = rc == 0;
    if (!rc) c->codes_saved = src.store;
    return rc == 0;
}

/* The store file and the RAM cache of the layers [0, ram_layers) (replacing what an earlier call
 * made); sparse: the new mode's state, NULL for dense, whose codes a resumed store fills. */
static int open_store(sl_context *c, int32_t ram_layers, const uint8_t fp[32], struct sl_sparse *sparse) {
    const struct sl_model_config *cfg = c->cfg;
    sl_kv_store_free(c->store);
    c->store = NULL;
    const int64_t n_ctx = c->kv.n_ctx;
    int rc = kv_layers(c, ram_layers);
    if (rc) return rc;
    struct sl_kv_shape shape = {.n_layer = cfg->n_layer, .n_head_kv = cfg->n_head_kv, .head_dim = cfg->head_dim,
                                .dtype = SL_KV_DTYPE_F16, .block_tokens = 16};
    struct sl_kv_store_params sp = sl_kv_store_default_params();
    sp.capacity = n_ctx;
    memcpy(sp.fingerprint, fp, 32);
    if (sp.max_pending < c->n_batch) sp.max_pending = c->n_batch;
    if (!c->kv_path) { /* the backend's memory is not the host's: pinned host memory it reads */
        int rc = sl_kv_store_params_for_device(&sp, c->gpu_device);
        if (rc && rc != SL_ENODEV) return rc; /* ENODEV: pageable memory, fetched through staging */
        return sl_kv_store_create(&shape, &sp, &c->store);
    }
    sp.tier = SL_KV_TIER_FILE;
    sp.path = c->kv_path;
    sp.overwrite = c->kv_overwrite;
    sp.recover = c->kv_recover;
    sp.fault = c->kv_fault;
    sp.ram_budget = c->kv_ram_budget;
    c->kv_synced_at = sl_now_s();
    if (!c->kv_resume) {
        if ((rc = sl_kv_store_create(&shape, &sp, &c->store))) return rc;
        char *codes = sl_code_file_path(c->kv_path); /* the replaced store's */
        if (codes && unlink(codes) != 0 && errno != ENOENT)
            sl_log(SL_LOG_WARN, "cannot remove %s: %s", codes, strerror(errno));
        free(codes);
        return 0;
    }
    const double t0 = sl_now_s();
    rc = sl_kv_store_open(&shape, &sp, &c->store);
    if (rc) return rc;
    int64_t n = sl_kv_store_n_tokens(c->store);
    if (n == 0)
        return sl_fail(SL_EINVAL, "KV store %s holds no tokens: nothing to resume (an ingest that ended before "
                       "its first commit point; start it again without --resume, with --kv-overwrite)", c->kv_path);
    if (c->kv_resume_keep < 0 || c->kv_resume_keep > n)
        return sl_fail(SL_EINVAL, "%s holds %" PRId64 " positions; cannot keep %" PRId64, c->kv_path, n,
                       c->kv_resume_keep);
    if (sl_kv_store_capacity(c->store) < n_ctx)
        return sl_fail(SL_EINVAL, "%s holds at most %" PRId64 " positions; the context asks for %" PRId64, c->kv_path,
                       sl_kv_store_capacity(c->store), n_ctx);
    /* the sparse layers' codes from the code file when it was saved for this very content:
     * read before a truncation changes the content (the kept prefix's codes stay valid) */
    const bool have_codes = n > 0 && sparse && load_codes(c, sparse);
    if (c->kv_resume_keep > 0 && c->kv_resume_keep < n) {
        if ((rc = sl_kv_store_truncate(c->store, c->kv_resume_keep))) return rc;
        n = c->kv_resume_keep;
    }
    if (n > n_ctx)
        return sl_fail(SL_EINVAL, "%s holds %" PRId64 " positions, more than the context's %" PRId64
                       " (resume fewer, or a larger context)", c->kv_path, n, n_ctx);
    /* the RAM layers' rows back into RAM; the sparse layers' keys hashed again unless their
     * codes were read */
    uint16_t *kb = NULL, *vb = NULL;
    if (n > 0 && sparse && !have_codes && ram_layers < cfg->n_layer) {
        kb = malloc(sizeof(uint16_t) * (size_t)(n * cfg->head_dim));
        vb = malloc(sizeof(uint16_t) * (size_t)(n * cfg->head_dim));
        if (!kb || !vb) rc = sl_fail(SL_ENOMEM, "cannot read back %" PRId64 " positions", n);
    }
    for (int32_t l = 0; !rc && n > 0 && l < cfg->n_layer; l++)
        for (int32_t h = 0; !rc && h < cfg->n_head_kv; h++) {
            if (l < ram_layers) {
                uint16_t *k = (uint16_t *)sl_kv_cache_k(&c->kv, l, h, 0);
                rc = sl_kv_store_read_range(c->store, l, h, 0, n, k, (void *)sl_kv_cache_v(&c->kv, l, h, 0));
                if (!rc && sparse && !have_codes) rc = sl_sparse_add_head_keys_f16(sparse, l, h, 0, n, k); /* no-op if dense */
            } else if (sparse && !have_codes && !(rc = sl_kv_store_read_range(c->store, l, h, 0, n, kb, vb)))
                rc = sl_sparse_add_head_keys_f16(sparse, l, h, 0, n, kb);
        }
    free(kb);
    free(vb);
    if (rc) return rc;
    c->n_past = n;
    c->resume_positions = n;
    c->resume_codes_read = have_codes;
    c->resume_s = sl_now_s() - t0;
    return 0;
}

int sl_context_set_attention(sl_context *c, const struct sl_attn_params *p) {
    if (!c || !p) return sl_fail(SL_EINVAL, "sl_context_set_attention: NULL argument");
    /* after evals: only where every position's K/V is in host RAM to hash the keys again from */
    if (c->n_past > 0 && (c->kv_path || !c->be->host_memory || p->sparse_prefill))
        return sl_fail(SL_EINVAL, "with a KV store, on a GPU or with sparse prefill the attention mode is set before "
                                  "the first eval (%" PRId64 " positions evaluated)", c->n_past);
    struct sl_attn_params pp = *p;
    /* the backend's memory is not the host's: dense keeps all K/V there, sparse none of the
     * sparse layers' (a store holds it) */
    const bool device = !c->be->host_memory;
    if (device && p->mode == SL_ATTN_DENSE && c->kv_path)
        return sl_fail(SL_EUNSUPPORTED, "the %s backend keeps dense attention's K/V in its own memory: a KV store "
                                        "file needs spotlight or simhash there", c->be->name);
    if (device && p->mode != SL_ATTN_DENSE) {
        if (p->mode == SL_ATTN_TOPK_EXACT || p->rerank > 1 || c->kv_in_ram)
            return sl_fail(SL_EUNSUPPORTED, "on the %s backend sparse attention is spotlight or simhash with the "
                                            "K/V in a store (no topk-exact, --rerank or ram: tier)", c->be->name);
        pp.sparse_prefill = true; /* the K/V of the sparse layers is not in device memory */
    }
    if (c->kv_path && !c->kv_in_ram) {
        if (p->mode != SL_ATTN_SPOTLIGHT && p->mode != SL_ATTN_SIMHASH)
            return sl_fail(SL_EINVAL, "K/V in a store file needs spotlight or simhash attention "
                                      "(or the K/V kept in RAM too)");
        pp.sparse_prefill = true; /* dense prefill would read the whole store every chunk */
    }
    struct sl_sparse *sp = NULL;
    uint8_t fp[32];
    int rc = 0;
    if (p->mode != SL_ATTN_DENSE || c->kv_path) rc = sl_model_fingerprint(c->model, fp);
    if (!rc && (p->mode != SL_ATTN_DENSE || c->kv_path)) memcpy(c->fp, fp, 32);
    if (!rc && p->mode != SL_ATTN_DENSE) rc = sl_sparse_create(&pp, c->cfg, fp, c->kv.n_ctx, c->n_batch, &sp);
    /* positions already evaluated: their keys hashed from the cache, as a resumed store's are
     * (the same codes as when hashed at eval: keys are hashed as stored, in f16) */
    for (int32_t l = 0; !rc && sp && c->n_past > 0 && l < c->cfg->n_layer; l++)
        for (int32_t h = 0; !rc && h < c->cfg->n_head_kv; h++)
            rc = sl_sparse_add_head_keys_f16(sp, l, h, 0, c->n_past, sl_kv_cache_k(&c->kv, l, h, 0));
    if (rc) {
        sl_sparse_free(sp);
        return rc;
    }
    /* the old mode's state goes first: on the GPU it borrows the store replaced below */
    struct sl_attn_stats st;
    sl_sparse_stats(c->sparse, &st);
    c->host_bytes -= st.code_bytes;
    c->device_bytes -= sl_sparse_device_bytes(c->sparse);
    sl_sparse_free(c->sparse);
    c->sparse = NULL;
    if (c->kv_path || (device && sp)) {
        rc = open_store(c, c->kv_in_ram ? c->cfg->n_layer : pp.dense_layers, fp, sp);
        if (!rc && device && sp) rc = sl_sparse_attach_device(sp, c->be, c->store, c->kv_device_cache, c->n_threads);
    } else if (device && c->store) { /* dense again in device memory: every layer's K/V there (first eval) */
        sl_kv_store_free(c->store);
        c->store = NULL;
        rc = kv_layers(c, 0);
    }
    if (rc) {
        sl_sparse_free(sp);
        return rc;
    }
    c->sparse = sp;
    sl_sparse_stats(sp, &st);
    c->host_bytes += st.code_bytes;
    c->device_bytes += sl_sparse_device_bytes(sp);
    return 0;
}

void sl_context_attn_stats(const sl_context *c, struct sl_attn_stats *out) {
    sl_sparse_stats(c->sparse, out);
    out->resume_positions = c->resume_positions;
    out->resume_codes_read = c->resume_codes_read;
    out->resume_s = c->resume_s;
    if (c->store) {
        struct sl_kv_store_stats st;
        sl_kv_store_get_stats(c->store, &st);
        out->kv_bytes_read = st.bytes_read;
        out->kv_cache_hits = st.cache_hits;
        out->kv_cache_misses = st.cache_misses;
        out->kv_ram_bytes = st.ram_bytes;
        out->kv_disk_bytes = st.disk_bytes;
    }
}

int sl_context_stored_tokens(const sl_context *c, int64_t p0, int64_t n, int32_t *out) {
    if (!c->store) return sl_fail(SL_EINVAL, "no KV store");
    if (p0 < 0 || n < 0 || p0 + n > sl_kv_store_n_tokens(c->store))
        return sl_fail(SL_EINVAL, "positions [%" PRId64 ", %" PRId64 ") are not stored", p0, p0 + n);
    return sl_kv_store_read_tags(c->store, p0, n, (uint32_t *)out);
}

int sl_context_truncate(sl_context *c, int64_t n_past) {
    if (n_past < 0 || n_past > c->n_past)
        return sl_fail(SL_EINVAL, "cannot truncate to %" PRId64 " (have %" PRId64 ")", n_past, c->n_past);
    if (c->store) {
        sl_sparse_quiesce(c->sparse);
        int rc = sl_kv_store_truncate(c->store, n_past);
        if (rc) return rc;
    }
    c->n_past = n_past;
    return 0;
}
