/* `spotlight tune`: measuring one configuration (see tune.h).
 *
 * The text is ingested once, densely, into a KV store with every layer's K/V in RAM written
 * through to the file. Every point then reopens that store the way `generate --resume=N` does
 * (K/V read back into RAM, or left in the file behind a cache of --cache-mb, keys re-hashed
 * for the point's codes), keeping all but the last n_prefill stored positions, evaluates those
 * n_prefill tokens as one prefill chunk (timed: prefill at depth, dense or sparse as the point's
 * `generate` would run it), then n_decode single-token decode steps (each timed, CLOCK_MONOTONIC,
 * the median kept). The dense point runs first and decodes greedily; every other point is fed
 * the dense point's tokens (teacher forcing), so both see the same inputs at the same positions
 * and their logits compare directly. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/context.h"
#include "spotlight/error.h"
#include "tools/attn-opts.h"
#include "tools/cli.h"
#include "tools/tune.h"

int tune_hash_path(const char *model_path, int32_t bits, char *buf, size_t cap) {
    char dir[4096];
    const char *base = strrchr(model_path, '/') ? strrchr(model_path, '/') + 1 : model_path;
    if (cli_model_dir(dir, sizeof dir) != 0) return -1;
    int n = snprintf(buf, cap, "%s/hash/%s.b%d.slhash", dir, base, bits);
    return n > 0 && (size_t)n < cap && access(buf, R_OK) == 0 ? 0 : -1;
}

static struct sl_context_params store_params(const struct tune_run *run) {
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = run->n_ctx;
    cp.n_threads = run->n_threads;
    cp.n_batch = run->n_batch;
    cp.kv_path = run->store;
    cp.kv_in_ram = true;
    return cp;
}

/* Whether the store already holds the text's tokens at this context (from an earlier run). */
static bool store_reusable(const struct tune_run *run) {
    if (access(run->store, R_OK) != 0) return false;
    struct sl_context_params cp = store_params(run);
    cp.kv_resume = true;
    sl_context *ctx = NULL;
    struct sl_attn_params dense = sl_attn_default_params(SL_ATTN_DENSE);
    bool ok = sl_context_create(run->model, &cp, &ctx) == 0 && sl_context_set_attention(ctx, &dense) == 0 &&
              sl_context_n_past(ctx) >= run->n_stored;
    int32_t *ids = ok ? malloc((size_t)run->n_stored * sizeof *ids) : NULL;
    ok = ids && sl_context_stored_tokens(ctx, 0, run->n_stored, ids) == 0 &&
         memcmp(ids, run->tokens, (size_t)run->n_stored * sizeof *ids) == 0;
    free(ids);
    sl_context_free(ctx);
    return ok;
}

int tune_ingest(struct tune_run *run, bool progress, double *tok_s) {
    *tok_s = NAN;
    if (store_reusable(run)) {
        if (progress) fprintf(stderr, "tune: reusing the ingested text in %s\n", run->store);
        return 0;
    }
    struct sl_context_params cp = store_params(run);
    sl_context *ctx = NULL;
    struct sl_attn_params dense = sl_attn_default_params(SL_ATTN_DENSE);
    int rc = sl_context_create(run->model, &cp, &ctx);
    if (!rc) rc = sl_context_set_attention(ctx, &dense);
    const int64_t n = run->n_stored, slice = 512;
    const double t0 = cli_now();
    for (int64_t done = 0; !rc && done < n;) {
        const int64_t m = n - done < slice ? n - done : slice;
        if ((rc = sl_context_eval(ctx, run->tokens + done, m, false))) break;
        done += m;
        if (progress) {
            const double el = cli_now() - t0, rate = (double)done / el;
            fprintf(stderr, "\rtune: ingesting the text (dense): %" PRId64 " / %" PRId64 " tokens  %.1f tok/s  ETA %.0f s   %s",
                    done, n, rate, (double)(n - done) / rate, done == n ? "\n" : "");
        }
    }
    if (!rc) *tok_s = (double)n / (cli_now() - t0);
    int crc = sl_context_close(ctx); /* the store's final sync: the points resume it */
    if (!rc) rc = crc;
    sl_context_free(ctx);
    if (rc) {
        if (progress) fputc('\n', stderr);
        cli_report("tune: ingest", rc);
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The value as the CSV prints it, so the front computed here and one recomputed from the CSV
 * agree exactly. */
static double as_printed(const char *fmt, double v) {
    char buf[64];
    snprintf(buf, sizeof buf, fmt, v);
    return strtod(buf, NULL);
}

static int32_t argmax(const float *v, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static double log_sum_exp(const float *v, int32_t n) {
    double mx = v[argmax(v, n)], s = 0;
    for (int32_t i = 0; i < n; i++) s += exp((double)v[i] - mx);
    return mx + log(s);
}

int tune_measure(struct tune_run *run, struct tune_point *pt) {
    const bool ref = pt->mode == SL_ATTN_DENSE;
    const int32_t n_vocab = sl_model_config(run->model)->n_vocab, D = run->n_decode;
    struct sl_context_params cp = store_params(run);
    cp.kv_in_ram = !pt->kv_file;
    cp.kv_ram_budget = pt->kv_file ? pt->cache_mb << 20 : 0;
    cp.kv_resume = true;
    cp.kv_resume_keep = run->n_stored - run->n_prefill;
    struct sl_attn_params ap = run->attn;
    ap.mode = pt->mode;
    ap.budget = ref ? 1.0f : pt->budget;
    ap.bits = ref ? 64 : pt->bits;
    ap.block = pt->block;
    char hash[4400];
    if (pt->mode == SL_ATTN_SPOTLIGHT) {
        if (tune_hash_path(run->model_path, pt->bits, hash, sizeof hash)) {
            fprintf(stderr, "spotlight tune: no %d-bit hash file for the model\n", pt->bits);
            pt->status = TUNE_FAILED;
            return -1;
        }
        ap.hash_path = hash;
    }
    if (!ref && !run->ref_tokens) {
        fprintf(stderr, "spotlight tune: the dense reference must be measured first\n");
        pt->status = TUNE_FAILED;
        return -1;
    }
    sl_context *ctx = NULL;
    double *times = malloc((size_t)D * sizeof *times);
    int rc = times ? sl_context_create(run->model, &cp, &ctx) : SL_ENOMEM;
    if (!rc) rc = sl_context_set_attention(ctx, &ap);
    const int32_t *chunk = run->tokens + cp.kv_resume_keep;
    double t0 = cli_now();
    if (!rc) rc = sl_context_eval(ctx, chunk, run->n_prefill, false);
    const double t_prefill = cli_now() - t0;
    int64_t agree = 0;
    double kl = 0;
    for (int32_t i = 0; !rc && i < D; i++) {
        int32_t tok = ref ? argmax(sl_context_logits(ctx), n_vocab) : run->ref_tokens[i];
        if (ref) run->ref_tokens[i] = tok;
        t0 = cli_now();
        if ((rc = sl_context_eval(ctx, &tok, 1, false))) break;
        times[i] = cli_now() - t0;
        const float *lg = sl_context_logits(ctx);
        float *rp = run->ref_logp + (size_t)i * (size_t)n_vocab;
        const double lse = log_sum_exp(lg, n_vocab);
        if (ref) {
            for (int32_t v = 0; v < n_vocab; v++) rp[v] = (float)(lg[v] - lse);
            continue;
        }
        agree += argmax(lg, n_vocab) == argmax(rp, n_vocab);
        double d = 0;
        for (int32_t v = 0; v < n_vocab; v++) d += exp((double)rp[v]) * ((double)rp[v] - ((double)lg[v] - lse));
        kl += d > 0 ? d : 0; /* rounding can leave a tiny negative */
    }
    if (rc) {
        cli_report("tune: measure", rc);
        pt->status = TUNE_FAILED;
        sl_context_free(ctx);
        free(times);
        return -1;
    }
    struct sl_attn_stats st;
    sl_context_attn_stats(ctx, &st);
    sl_context_free(ctx);
    qsort(times, (size_t)D, sizeof *times, cmp_double);
    const double med = D % 2 ? times[D / 2] : 0.5 * (times[D / 2 - 1] + times[D / 2]);
    free(times);
    pt->decode_ms = as_printed("%.3f", 1e3 * med);
    pt->prefill_tok_s = run->n_prefill / t_prefill;
    pt->agree = ref ? 1.0 : as_printed("%.6f", (double)agree / D);
    pt->kl = ref ? 0.0 : kl / D;
    pt->attended = st.candidates ? (double)st.selected / (double)st.candidates : 1.0;
    pt->select_us = st.sparse_calls ? 1e6 * st.select_s / (double)st.sparse_calls : 0;
    pt->gather_us = st.sparse_calls ? 1e6 * st.gather_s / (double)st.sparse_calls : 0;
    pt->status = TUNE_OK;
    return 0;
}
