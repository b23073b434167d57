/* `spotlight perplexity -f TEXT -c CTX`: perplexity the way llama.cpp's perplexity tool
 * computes it, so the two numbers are comparable: the whole text is tokenized once (BOS as
 * the model's metadata says), cut into consecutive chunks of CTX tokens (the remainder is
 * dropped), each chunk is evaluated from an empty cache (its first token replaced by BOS
 * when the model adds BOS), and only the second half of each chunk is scored: the token at
 * position j+1 under the logits at j, for j in [CTX/2, CTX-1). PPL = exp(mean NLL), with
 * llama.cpp's error estimate.
 *
 * With --decode-last N, each chunk's first CTX-N tokens are a prefill and its last N are fed
 * one at a time through the decode path, and only those N are scored: the perplexity of
 * generation at that context depth, where sparse attention (--attn, attn-opts.h) applies.
 * --also "ATTN OPTIONS" (repeatable, with --decode-last): after each chunk's decode under the
 * main options, the same last N tokens are decoded again under each --also set, from the same
 * prefill (truncated back to it, the attention switched: sl_context_set_attention rehashes the
 * prefix's keys), each scored apart: one prefill per chunk for a whole comparison, with the
 * numbers separate runs would give. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/context.h"
#include "spotlight/error.h"
#include "spotlight/tokenizer.h"
#include "tools/attn-opts.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/json-writer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: spotlight perplexity [-m MODEL] -f TEXT [-c CTX] [--chunks N] [-b BATCH] [-t THREADS] [--json]\n"
               "                           [--decode-last N [--also \"ATTN OPTIONS\"]...] [sparse attention options]\n"
               "  Perplexity over consecutive CTX-token chunks of TEXT (default CTX 512), scoring the\n"
               "  second half of each chunk, as llama.cpp's perplexity tool does. --decode-last N: the\n"
               "  last N tokens of each chunk go through the decode path one by one and only they are\n"
               "  scored (generation quality at depth CTX, where sparse decode applies). --also: score\n"
               "  those tokens again under other attention options (e.g. --also \"--attn spotlight\n"
               "  --budget 5%%\"), on the same prefill: one run compares several settings (RAM K/V only).\n");
    attn_opts_usage(f);
}

/* log-softmax NLL of `target` under logits (n_vocab), in double like llama.cpp */
static double nll_of(const float *logits, int32_t n_vocab, int32_t target) {
    float mx = logits[0];
    for (int32_t i = 1; i < n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int32_t i = 0; i < n_vocab; i++) sum += exp((double)(logits[i] - mx));
    return -((double)(logits[target] - mx) - log(sum));
}

#define MAX_ALSO 32

/* Running NLL sums of one attention setting. */
struct score {
    double nll, nll2;
    int64_t count;
};

static void score_add(struct score *s, double v) {
    s->nll += v;
    s->nll2 += v * v;
    s->count++;
}

/* PPL = exp(mean NLL), with llama.cpp's error estimate into *err. */
static double score_ppl(const struct score *s, double *err) {
    const double mean = s->nll / (double)s->count, ppl = exp(mean), var = s->nll2 / (double)s->count - mean * mean;
    *err = s->count > 1 && var > 0 ? ppl * sqrt(var / (double)(s->count - 1)) : 0;
    return ppl;
}

/* An --also value: attention options (split at spaces) over a copy of the main ones. */
static int parse_also(const char *spec, const struct attn_opts *base, const struct option *opts, struct attn_opts *out) {
    static char buf[MAX_ALSO][1024];
    static int used;
    char *copy = buf[used++ % MAX_ALSO];
    snprintf(copy, sizeof buf[0], "%s", spec);
    char *argv[64] = {"perplexity --also"};
    int argc = 1;
    for (char *t = strtok(copy, " \t"); t && argc < 63; t = strtok(NULL, " \t")) argv[argc++] = t;
    *out = *base;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = attn_opts_parse("perplexity", c, optarg, out);
        if (r == 2) return 2;
        if (r != 0 || out->kv_path || out->gpu || out->p.sparse_prefill) {
            fprintf(stderr, "spotlight perplexity: --also \"%s\": only attention options (no --kv, --gpu or "
                            "--sparse-prefill)\n", spec);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "spotlight perplexity: --also \"%s\": unexpected '%s'\n", spec, argv[optind]);
        return 2;
    }
    return 0;
}

/* The attention of an options set, on a context that may have evaluated a prefill. > 0: the
 * CLI already said why. */
static int switch_attn(struct attn_opts *a, sl_context *ctx, const char *model_path) {
    if (a->p.mode == SL_ATTN_DENSE) return sl_context_set_attention(ctx, &a->p);
    return attn_opts_apply("perplexity", a, ctx, model_path) ? 1 : 0;
}

int cmd_perplexity(int argc, char **argv) {
    static const struct option base[] = {
        {"model", required_argument, 0, 'm'}, {"file", required_argument, 0, 'f'},
        {"ctx-size", required_argument, 0, 'c'}, {"chunks", required_argument, 0, 'k'},
        {"batch-size", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
        {"decode-last", required_argument, 0, 'D'}, {"json", no_argument, 0, 'j'},
        {"also", required_argument, 0, 'A'}, {"help", no_argument, 0, 'h'}};
    struct option opts[sizeof base / sizeof *base + ATTN_OPT_COUNT + 1];
    attn_opts_table(base, (int)(sizeof base / sizeof *base), opts);
    struct attn_opts attn;
    attn_opts_init(&attn);
    const char *model = NULL, *file = NULL;
    int64_t n_ctx = 512, max_chunks = -1, n_batch = 512, n_threads = 0, decode_last = 0;
    bool json = false;
    const char *also_spec[MAX_ALSO];
    int n_also = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:f:c:b:t:h", opts, NULL)) != -1) {
        int64_t *dst = c == 'c' ? &n_ctx : c == 'k' ? &max_chunks : c == 'b' ? &n_batch : c == 't' ? &n_threads
                       : c == 'D' ? &decode_last : NULL;
        if (dst) {
            const char *name = c == 'c' ? "-c" : c == 'k' ? "--chunks" : c == 'b' ? "-b" : c == 't' ? "-t" : "--decode-last";
            if (cli_parse_i64("perplexity", name, optarg, c == 'c' ? 4 : 1, 1 << 30, dst)) return 2;
            continue;
        }
        int r = attn_opts_parse("perplexity", c, optarg, &attn);
        if (r == 2) return 2;
        if (r == 0) continue;
        switch (c) {
        case 'm': model = optarg; break;
        case 'f': file = optarg; break;
        case 'j': json = true; break;
        case 'A':
            if (n_also == MAX_ALSO) {
                fprintf(stderr, "spotlight perplexity: at most %d --also\n", MAX_ALSO);
                return 2;
            }
            also_spec[n_also++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "spotlight perplexity: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (!file || optind < argc) {
        fprintf(stderr, "spotlight perplexity: give the text with -f FILE (see --help)\n");
        return 2;
    }
    if (decode_last >= n_ctx) {
        fprintf(stderr, "spotlight perplexity: --decode-last must be below -c (%" PRId64 ")\n", n_ctx);
        return 2;
    }
    if (n_also && (!decode_last || attn.kv_path || attn.gpu)) {
        fprintf(stderr, "spotlight perplexity: --also needs --decode-last and the K/V in RAM on the CPU\n");
        return 2;
    }
    struct attn_opts also[MAX_ALSO];
    for (int i = 0; i < n_also; i++)
        if (parse_also(also_spec[i], &attn, opts, &also[i])) return 2;
    char path[4096];
    if (cli_model_path(model, path, sizeof path) != 0) return 1;
    cli_check_threads("perplexity", n_threads);
    size_t got = 0;
    char *text = cli_read_file("perplexity", file, &got);
    if (!text) return 1;

    int status = 1, rc;
    sl_model *m = NULL;
    sl_tokenizer *tok = NULL;
    sl_context *ctx = NULL;
    int32_t *ids = NULL, *chunk = NULL;
    if ((rc = sl_model_load(path, &m)) || (rc = sl_tokenizer_from_gguf(sl_model_gguf(m), &tok))) {
        cli_report(path, rc);
        goto done;
    }
    const int32_t n_vocab = sl_model_config(m)->n_vocab;
    int64_t n_tok = sl_tokenize(tok, text, got, true, false, NULL, 0);
    if (n_tok > 0 && (ids = malloc((size_t)n_tok * sizeof *ids))) n_tok = sl_tokenize(tok, text, got, true, false, ids, n_tok);
    if (n_tok < 0) {
        cli_report(file, (int)n_tok);
        goto done;
    }
    int64_t n_chunks = n_tok / n_ctx;
    if (max_chunks > 0 && max_chunks < n_chunks) n_chunks = max_chunks;
    if (n_chunks < 1) {
        fprintf(stderr, "spotlight perplexity: %s has %" PRId64 " tokens; at least one chunk of %" PRId64 " is needed (lower -c)\n",
                file, n_tok, n_ctx);
        goto done;
    }
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = (int32_t)(n_batch < n_ctx ? n_batch : n_ctx);
    cp.n_threads = (int32_t)n_threads;
    attn_opts_context(&attn, &cp);
    if (attn_opts_check_memory("perplexity", &attn, m, &cp)) goto done;
    if ((rc = sl_context_create(m, &cp, &ctx))) {
        cli_report("context", rc);
        goto done;
    }
    if (attn_opts_apply("perplexity", &attn, ctx, path)) goto done;
    chunk = malloc((size_t)n_ctx * sizeof *chunk);
    if (!chunk) goto done;
    const int64_t first = n_ctx / 2;
    double t0 = cli_now();
    struct score main_sc = {0}, also_sc[MAX_ALSO];
    memset(also_sc, 0, sizeof also_sc);
    if (!json) fprintf(stderr, "perplexity: %" PRId64 " tokens, %" PRId64 " chunks of %" PRId64 "\n", n_tok, n_chunks, n_ctx);
    for (int64_t ci = 0; ci < n_chunks; ci++) {
        memcpy(chunk, ids + ci * n_ctx, (size_t)n_ctx * sizeof *chunk);
        if (sl_tokenizer_add_bos(tok) && sl_tokenizer_bos(tok) >= 0) chunk[0] = sl_tokenizer_bos(tok);
        sl_context_truncate(ctx, 0);
        if (decode_last > 0) {
            /* prefill, then every later token through the decode path; the logits after token
             * j-1 score token j. Then the same tokens under each --also from the same prefill. */
            const int64_t s0 = n_ctx - decode_last;
            if ((rc = sl_context_eval(ctx, chunk, s0, false))) {
                cli_report("eval", rc);
                goto done;
            }
            const double nll_s0 = nll_of(sl_context_logits(ctx), n_vocab, ids[ci * n_ctx + s0]); /* the prefill's */
            for (int a = 0; a <= n_also; a++) {
                if (a > 0 && ((rc = sl_context_truncate(ctx, s0)) || (rc = switch_attn(&also[a - 1], ctx, path)))) {
                    if (rc > 0) goto done; /* reported */
                    cli_report("attention", rc);
                    goto done;
                }
                struct score *sc = a == 0 ? &main_sc : &also_sc[a - 1];
                score_add(sc, nll_s0);
                for (int64_t j = s0 + 1; j < n_ctx; j++) {
                    if ((rc = sl_context_eval(ctx, &chunk[j - 1], 1, false))) {
                        cli_report("eval", rc);
                        goto done;
                    }
                    score_add(sc, nll_of(sl_context_logits(ctx), n_vocab, ids[ci * n_ctx + j]));
                }
            }
            if (n_also && (rc = sl_context_truncate(ctx, 0)) == 0 && (rc = switch_attn(&attn, ctx, path)) != 0) {
                if (rc < 0) cli_report("attention", rc);
                goto done;
            }
        } else {
            if ((rc = sl_context_eval(ctx, chunk, n_ctx, true))) {
                cli_report("eval", rc);
                goto done;
            }
            const float *lg = sl_context_logits(ctx);
            for (int64_t j = first; j < n_ctx - 1; j++) score_add(&main_sc, nll_of(lg + j * n_vocab, n_vocab, ids[ci * n_ctx + j + 1]));
        }
        if (!json) {
            fprintf(stdout, "[%" PRId64 "]%.4f,", ci + 1, exp(main_sc.nll / (double)main_sc.count));
            fflush(stdout);
        }
    }
    double err, ppl = score_ppl(&main_sc, &err);
    const int64_t count = main_sc.count;
    double secs = cli_now() - t0;
    if (json) {
        struct json_writer w;
        json_init(&w, stdout);
        json_obj_begin(&w, NULL);
        json_str(&w, "file", file);
        json_int(&w, "n_tokens", n_tok);
        json_int(&w, "n_ctx", n_ctx);
        json_int(&w, "n_chunks", n_chunks);
        json_int(&w, "n_scored", count);
        json_num(&w, "ppl", ppl);
        json_num(&w, "ppl_err", err);
        json_num(&w, "seconds", secs);
        json_num(&w, "tok_s", (double)(n_chunks * n_ctx) / secs);
        json_str(&w, "attn", attn_mode_name(attn.p.mode));
        if (attn.p.mode != SL_ATTN_DENSE) json_num(&w, "budget", attn.p.budget);
        json_int(&w, "decode_last", decode_last);
        if (n_also) {
            json_arr_begin(&w, "also");
            for (int a = 0; a < n_also; a++) {
                double e, p = score_ppl(&also_sc[a], &e);
                json_obj_begin(&w, NULL);
                json_str(&w, "options", also_spec[a]);
                json_str(&w, "attn", attn_mode_name(also[a].p.mode));
                if (also[a].p.mode != SL_ATTN_DENSE) json_num(&w, "budget", also[a].p.budget);
                json_num(&w, "ppl", p);
                json_num(&w, "ppl_err", e);
                json_obj_end(&w);
            }
            json_arr_end(&w);
        }
        json_obj_end(&w);
    } else {
        printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl, err);
        for (int a = 0; a < n_also; a++) {
            double e, p = score_ppl(&also_sc[a], &e);
            printf("--also \"%s\": PPL = %.4f +/- %.5f\n", also_spec[a], p, e);
        }
        fprintf(stderr, "perplexity: %" PRId64 " tokens scored in %.1f s (%.1f tok/s evaluated)\n", count, secs,
                (double)(n_chunks * n_ctx) / secs);
    }
    /* with --kv, the store's last commit point: a failed final sync means positions were lost */
    if ((rc = sl_context_close(ctx))) {
        cli_report("KV store", rc);
        goto done;
    }
    status = 0;
done:
    free(chunk);
    free(ids);
    free(text);
    sl_context_free(ctx);
    sl_tokenizer_free(tok);
    sl_model_free(m);
    return status;
}
