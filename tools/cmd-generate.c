/* `spotlight generate`: a prompt in, a continuation streamed out, speed reported at the end.
 * llama.cpp's habits: -m -p -f -n -c --temp --top-k --top-p --min-p --repeat-penalty --seed -t.
 * The pipeline a user can follow: model + tokenizer -> context -> prefill -> sample/decode loop. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "spotlight/context.h"
#include "spotlight/error.h"
#include "spotlight/sampler.h"
#include "spotlight/tokenizer.h"
#include "tools/attn-opts.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/gen-output.h"
#include "tools/json-writer.h"

#define MAX_STOPS 8

struct gen_opts {
    const char *model, *prompt, *file;
    const char *stops[MAX_STOPS];
    int n_stops;
    bool chat, json;
    int64_t n_predict, n_ctx;
    int32_t n_threads, n_batch;
    struct sl_sampler_params sp;
    struct attn_opts attn;
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: spotlight generate [-m MODEL] (-p PROMPT | -f FILE) [options]\n"
            "  -m, --model FILE        GGUF model (default: the default model in the cache)\n"
            "  -p, --prompt TEXT       prompt text\n"
            "  -f, --file FILE         read the prompt from a file (UTF-8)\n"
            "      --chat              wrap the prompt as a user turn in the model's chat template\n"
            "  -n, --n-predict N       tokens to generate (default 128; 0: only ingest the prompt, e.g.\n"
            "                          into a KV store for a later --resume)\n"
            "  -c, --ctx-size N        context length (default: the model's trained context)\n"
            "  -b, --batch-size N      prefill chunk (default 256)\n"
            "  -t, --threads N         threads (default: physical cores)\n"
            "      --temp T            temperature; 0 = greedy (default 0.8)\n"
            "      --top-k K           (default 40; 0 = off)\n"
            "      --top-p P           (default 0.95; 1 = off)\n"
            "      --min-p P           (default 0.05; 0 = off)\n"
            "      --repeat-penalty R  (default 1.0 = off)\n"
            "      --repeat-last-n N   tokens the penalty looks back (default 64)\n"
            "  -s, --seed S            RNG seed (default 0)\n"
            "      --stop STR          stop when STR is generated (repeatable, up to %d)\n"
            "      --json              print one JSON object (text, tokens, timings) instead of streaming\n",
            MAX_STOPS);
    attn_opts_usage(f);
}

static int parse_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    return cli_parse_i64("generate", opt, s, lo, hi, out);
}

static int parse_f32(const char *opt, const char *s, float lo, float hi, float *out) {
    return cli_parse_f32("generate", opt, s, lo, hi, out);
}

static int parse_args(int argc, char **argv, struct gen_opts *o) {
    enum { O_CHAT = 256, O_TEMP, O_TOPK, O_TOPP, O_MINP, O_REP, O_REPN, O_STOP, O_JSON };
    static const struct option base[] = {
        {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
        {"file", required_argument, 0, 'f'},  {"chat", no_argument, 0, O_CHAT},
        {"n-predict", required_argument, 0, 'n'}, {"ctx-size", required_argument, 0, 'c'},
        {"batch-size", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
        {"temp", required_argument, 0, O_TEMP}, {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP}, {"min-p", required_argument, 0, O_MINP},
        {"repeat-penalty", required_argument, 0, O_REP}, {"repeat-last-n", required_argument, 0, O_REPN},
        {"seed", required_argument, 0, 's'}, {"stop", required_argument, 0, O_STOP},
        {"json", no_argument, 0, O_JSON}, {"help", no_argument, 0, 'h'}};
    struct option opts[sizeof base / sizeof *base + ATTN_OPT_COUNT + 1];
    attn_opts_table(base, (int)(sizeof base / sizeof *base), opts);
    memset(o, 0, sizeof *o);
    attn_opts_init(&o->attn);
    o->n_predict = 128;
    o->n_batch = 256;
    o->sp = sl_sampler_default_params();
    optind = 1;
    opterr = 0;
    int c;
    int64_t v;
    while ((c = getopt_long(argc, argv, "m:p:f:n:c:b:t:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'f': o->file = optarg; break;
        case O_CHAT: o->chat = true; break;
        case O_JSON: o->json = true; break;
        case 'n': if (parse_i64("-n", optarg, 0, INT32_MAX, &o->n_predict)) return 2; break;
        case 'c': if (parse_i64("-c", optarg, 1, INT32_MAX, &o->n_ctx)) return 2; break;
        case 'b': if (parse_i64("-b", optarg, 1, 65536, &v)) return 2; o->n_batch = (int32_t)v; break;
        case 't': if (parse_i64("-t", optarg, 1, 1024, &v)) return 2; o->n_threads = (int32_t)v; break;
        case 's': if (parse_i64("--seed", optarg, 0, INT64_MAX, &v)) return 2; o->sp.seed = (uint64_t)v; break;
        case O_TEMP: if (parse_f32("--temp", optarg, 0, 100, &o->sp.temp)) return 2; break;
        case O_TOPK: if (parse_i64("--top-k", optarg, 0, INT32_MAX, &v)) return 2; o->sp.top_k = (int32_t)v; break;
        case O_TOPP: if (parse_f32("--top-p", optarg, 1e-6f, 1, &o->sp.top_p)) return 2; break;
        case O_MINP: if (parse_f32("--min-p", optarg, 0, 1, &o->sp.min_p)) return 2; break;
        case O_REP: if (parse_f32("--repeat-penalty", optarg, 1e-3f, 100, &o->sp.repeat_penalty)) return 2; break;
        case O_REPN: if (parse_i64("--repeat-last-n", optarg, 0, 1 << 20, &v)) return 2; o->sp.repeat_last_n = (int32_t)v; break;
        case O_STOP:
            if (o->n_stops == MAX_STOPS || !*optarg) {
                fprintf(stderr, "spotlight generate: --stop takes a non-empty string, at most %d times\n", MAX_STOPS);
                return 2;
            }
            o->stops[o->n_stops++] = optarg;
            break;
        case 'h': usage(stdout); return 1;
        default: {
            int r = attn_opts_parse("generate", c, optarg, &o->attn);
            if (r >= 0) {
                if (r) return r;
                break;
            }
            fprintf(stderr, "spotlight generate: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "spotlight generate: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (!!o->prompt + !!o->file != 1) {
        fprintf(stderr, "spotlight generate: give exactly one of -p PROMPT or -f FILE\n");
        return 2;
    }
    return 0;
}

struct gen_stats {
    int64_t n_stored, n_prompt, n_gen, n_past; /* n_stored: resumed from the store; n_past: at the end */
    double t_load, t_prefill, t_decode;
    const char *stop_reason;
    struct sl_attn_stats attn;
    int64_t peak_rss;
    const char *backend;  /* "cpu" or "cuda" */
    int64_t device_bytes; /* the context's device memory (not the weights) */
};

/* Builds the prompt ids (chat template when asked). Returns count or -1 (error printed). */
static int64_t prompt_tokens(const sl_tokenizer *tok, const struct gen_opts *o, const char *text, size_t len,
                             int32_t **out) {
    char *formatted = NULL;
    if (o->chat) {
        struct sl_chat_msg msg = {"user", text};
        int64_t need = sl_chat_format(tok, &msg, 1, true, NULL, 0);
        if (need >= 0 && (formatted = malloc((size_t)need + 1)) != NULL)
            need = sl_chat_format(tok, &msg, 1, true, formatted, (size_t)need + 1);
        if (need < 0 || !formatted) {
            cli_report("chat template", need < 0 ? (int)need : SL_ENOMEM);
            free(formatted);
            return -1;
        }
        text = formatted;
        len = (size_t)need;
    }
    const bool bos = !o->attn.kv_resume; /* a resumed context continues its stored text */
    int64_t n = sl_tokenize(tok, text, len, bos, true, NULL, 0);
    int32_t *ids = n > 0 ? malloc((size_t)n * sizeof *ids) : NULL;
    if (n > 0 && ids) n = sl_tokenize(tok, text, len, bos, true, ids, n);
    free(formatted);
    if (n < 0) {
        cli_report(o->file ? o->file : "prompt", (int)n);
        free(ids);
        return -1;
    }
    if (n == 0 || !ids) {
        fprintf(stderr, "spotlight generate: the prompt is empty\n");
        free(ids);
        return -1;
    }
    *out = ids;
    return n;
}

static void print_stats_json(const struct gen_output *out, const int32_t *gen, const struct gen_stats *s,
                             const struct gen_opts *o) {
    struct json_writer w;
    json_init(&w, stdout);
    json_obj_begin(&w, NULL);
    json_str(&w, "text", out->text ? out->text : "");
    json_arr_begin(&w, "tokens");
    for (int64_t i = 0; i < s->n_gen; i++) json_int(&w, NULL, gen[i]);
    json_arr_end(&w);
    json_str(&w, "stop_reason", s->stop_reason);
    json_int(&w, "n_prompt", s->n_prompt);
    json_int(&w, "n_generated", s->n_gen);
    json_int(&w, "n_stored", s->n_stored);
    json_int(&w, "n_past", s->n_past);
    json_num(&w, "load_s", s->t_load);
    json_num(&w, "prefill_s", s->t_prefill);
    json_num(&w, "decode_s", s->t_decode);
    json_num(&w, "prefill_tok_s", s->n_prompt / s->t_prefill);
    json_num(&w, "decode_tok_s", s->n_gen > 1 ? (s->n_gen - 1) / s->t_decode : 0);
    if (o->attn.kv_resume) { /* reopening the store: read back, and the key codes read or hashed again */
        json_num(&w, "resume_s", s->attn.resume_s);
        json_bool(&w, "resume_codes_read", s->attn.resume_codes_read);
    }
    json_obj_begin(&w, "attention");
    json_str(&w, "mode", attn_mode_name(o->attn.p.mode));
    if (o->attn.p.mode != SL_ATTN_DENSE) {
        json_num(&w, "budget", o->attn.p.budget);
        json_int(&w, "dense_layers", o->attn.p.dense_layers);
        json_int(&w, "sparse_calls", s->attn.sparse_calls);
        json_num(&w, "selected_fraction", s->attn.candidates ? (double)s->attn.selected / (double)s->attn.candidates : 0);
        json_num(&w, "select_us_per_layer", s->attn.sparse_calls ? 1e6 * s->attn.select_s / (double)s->attn.sparse_calls : 0);
        json_num(&w, "gather_us_per_layer", s->attn.sparse_calls ? 1e6 * s->attn.gather_s / (double)s->attn.sparse_calls : 0);
        json_int(&w, "code_bytes", s->attn.code_bytes);
        json_int(&w, "block", o->attn.p.block);
        json_int(&w, "prefill_sparse_calls", s->attn.prefill_calls);
        json_num(&w, "prefill_select_us_per_call",
                 s->attn.prefill_calls ? 1e6 * s->attn.prefill_select_s / (double)s->attn.prefill_calls : 0);
        json_num(&w, "prefill_gather_us_per_call",
                 s->attn.prefill_calls ? 1e6 * s->attn.prefill_gather_s / (double)s->attn.prefill_calls : 0);
        if (o->attn.gpu) {
            json_int(&w, "device_rows_fetched", s->attn.dev_rows);
            json_int(&w, "device_bytes_in", s->attn.dev_bytes_in);
            json_num(&w, "vram_cache_hit_rate", s->attn.dev_rows ? (double)s->attn.dev_row_hits / (double)s->attn.dev_rows : 0);
        }
        if (o->attn.kv_path || o->attn.gpu) {
            json_int(&w, "kv_bytes_read", s->attn.kv_bytes_read);
            json_int(&w, "prefetches", s->attn.prefetches);
            json_num(&w, "kv_cache_hit_rate", s->attn.kv_cache_hits + s->attn.kv_cache_misses
                     ? (double)s->attn.kv_cache_hits / (double)(s->attn.kv_cache_hits + s->attn.kv_cache_misses) : 0);
            json_int(&w, "kv_ram_bytes", s->attn.kv_ram_bytes);
            json_int(&w, "kv_disk_bytes", s->attn.kv_disk_bytes);
        }
    }
    json_obj_end(&w);
    json_int(&w, "peak_rss_bytes", s->peak_rss);
    json_str(&w, "backend", s->backend);
    json_int(&w, "device_bytes", s->device_bytes);
    json_obj_end(&w);
}

/* a share in percent; 0 when there is nothing to share (never 0/0 = nan) */
static double pct(int64_t part, int64_t whole) { return whole > 0 ? 100.0 * (double)part / (double)whole : 0.0; }

int cmd_generate(int argc, char **argv) {
    struct gen_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    cli_check_threads("generate", o.n_threads);
    char path[4096];
    if (cli_model_path(o.model, path, sizeof path) != 0) return 1;
    size_t text_len = 0;
    char *file_text = NULL;
    const char *text = o.prompt;
    if (o.file) {
        if (!(file_text = cli_read_file("generate", o.file, &text_len))) return 1;
        text = file_text;
    } else {
        text_len = strlen(text);
    }

    struct gen_stats st = {0};
    double t0 = cli_now();
    sl_model *m = NULL;
    sl_tokenizer *tok = NULL;
    sl_context *ctx = NULL;
    sl_sampler *smp = NULL;
    int32_t *ids = NULL, *gen = NULL;
    struct gen_output out;
    gen_output_init(&out, o.stops, o.n_stops, o.json ? NULL : stdout);
    int status = 1;

    if ((rc = sl_model_load(path, &m)) || (rc = sl_tokenizer_from_gguf(sl_model_gguf(m), &tok))) {
        cli_report(path, rc);
        goto done;
    }
    const struct sl_model_config *cfg = sl_model_config(m);
    int64_t n_prompt = prompt_tokens(tok, &o, text, text_len, &ids);
    if (n_prompt < 0) goto done;
    int64_t n_ctx = o.n_ctx ? o.n_ctx : cfg->n_ctx_train;
    if (n_prompt >= n_ctx) {
        fprintf(stderr, "spotlight generate: the prompt has %" PRId64 " tokens; the context holds %" PRId64
                        " (raise -c, up to the model's %d)\n", n_prompt, n_ctx, cfg->n_ctx_train);
        goto done;
    }
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = o.n_threads;
    cp.n_batch = o.n_batch;
    attn_opts_context(&o.attn, &cp);
    if (attn_opts_check_memory("generate", &o.attn, m, &cp)) goto done;
    if ((rc = sl_context_create(m, &cp, &ctx)) || (rc = sl_sampler_create(&o.sp, cfg->n_vocab, &smp))) {
        cli_report("setup", rc);
        goto done;
    }
    if (attn_opts_apply("generate", &o.attn, ctx, path)) goto done;
    const int64_t n_stored = sl_context_n_past(ctx); /* --resume: positions already in the store */
    if (n_stored + n_prompt >= n_ctx) {
        fprintf(stderr, "spotlight generate: %" PRId64 " stored + %" PRId64 " prompt tokens do not fit the context of %" PRId64
                        " (raise -c)\n", n_stored, n_prompt, n_ctx);
        goto done;
    }
    if (o.attn.kv_resume) fprintf(stderr, "spotlight: resuming after %" PRId64 " stored tokens\n", n_stored);
    gen = malloc((size_t)(o.n_predict > 0 ? o.n_predict : 1) * sizeof *gen);
    if (!gen) {
        fprintf(stderr, "spotlight generate: out of memory\n");
        goto done;
    }
    st.t_load = cli_now() - t0;
    st.n_prompt = n_prompt;
    for (int64_t i = 0; i < n_prompt; i++) sl_sampler_accept(smp, ids[i]);

    double t1 = cli_now();
    /* long prompts in slices, with a progress line: tokens, tok/s, ETA */
    const int64_t slice = n_prompt > 8192 ? 4096 : n_prompt;
    for (int64_t done_tok = 0; done_tok < n_prompt;) {
        int64_t m = n_prompt - done_tok < slice ? n_prompt - done_tok : slice;
        if ((rc = sl_context_eval(ctx, ids + done_tok, m, false))) {
            if (slice < n_prompt) fputc('\n', stderr);
            cli_report("prefill", rc);
            goto done;
        }
        done_tok += m;
        if (slice < n_prompt) {
            double el = cli_now() - t1, rate = (double)done_tok / el;
            fprintf(stderr, "\rprefill: %" PRId64 " / %" PRId64 " tokens  %.1f tok/s  ETA %.0f s   ", done_tok, n_prompt,
                    rate, (double)(n_prompt - done_tok) / rate);
            if (done_tok == n_prompt) fputc('\n', stderr);
        }
    }
    st.t_prefill = cli_now() - t1;
    struct sl_detok dt;
    sl_detok_init(&dt, tok, false);
    st.stop_reason = "length";
    double t2 = cli_now();
    char piece[256];
    for (; o.n_predict > 0;) {
        int32_t id = sl_sampler_sample(smp, sl_context_logits(ctx));
        if (sl_tokenizer_is_eog(tok, id)) {
            st.stop_reason = "eos";
            break;
        }
        gen[st.n_gen++] = id;
        sl_sampler_accept(smp, id);
        int nb = sl_detok_push(&dt, id, piece, sizeof piece);
        int hit = nb > 0 ? gen_output_append(&out, piece, (size_t)nb) : 0;
        if (hit) {
            st.stop_reason = hit > 0 ? "stop string" : "out of memory";
            break;
        }
        if (st.n_gen == o.n_predict) break;
        if (sl_context_n_past(ctx) == n_ctx) {
            st.stop_reason = "context full";
            break;
        }
        if ((rc = sl_context_eval(ctx, &id, 1, false))) {
            cli_report("decode", rc);
            goto done;
        }
    }
    st.t_decode = cli_now() - t2;
    /* A store keeps the text for a later --resume: the last generated token too (the loop
     * stops before evaluating it), unless the context is full. */
    if (o.attn.kv_path && st.n_gen > 0 && sl_context_n_past(ctx) < n_ctx &&
        sl_context_n_past(ctx) == n_stored + n_prompt + st.n_gen - 1 &&
        (rc = sl_context_eval(ctx, &gen[st.n_gen - 1], 1, false))) {
        cli_report("decode", rc);
        goto done;
    }
    sl_context_attn_stats(ctx, &st.attn);
    st.n_stored = n_stored;
    st.n_past = sl_context_n_past(ctx);
    st.backend = sl_context_backend_name(ctx);
    st.device_bytes = sl_context_device_bytes(ctx);
    struct rusage ru;
    st.peak_rss = getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_maxrss * 1024 : -1;
    /* the store's last commit point: a failed final sync means tokens were not stored */
    if ((rc = sl_context_close(ctx))) {
        cli_report("KV store", rc);
        goto done;
    }
    int nb = sl_detok_flush(&dt, piece, sizeof piece);
    if (nb > 0 && strcmp(st.stop_reason, "stop string") != 0) gen_output_append(&out, piece, (size_t)nb);
    gen_output_finish(&out);
    if (o.json) {
        print_stats_json(&out, gen, &st, &o);
    } else {
        /* The first sampled token comes from the prefill's logits, so decode speed counts the
         * n_gen - 1 evaluations that followed it. */
        fprintf(stderr, "\n\nspotlight: prompt %" PRId64 " tokens, %.1f tok/s prefill; generated %" PRId64
                        " tokens, %.1f tok/s decode; stop: %s\n", st.n_prompt, st.t_prefill > 0 ? st.n_prompt / st.t_prefill : 0.0,
                st.n_gen, st.n_gen > 1 ? (st.n_gen - 1) / st.t_decode : 0.0, st.stop_reason);
        if (o.attn.p.mode != SL_ATTN_DENSE && st.attn.sparse_calls && !o.attn.gpu)
            fprintf(stderr, "spotlight: attention %s, budget %g: %.1f%% of positions attended, select %.0f us and "
                            "gather %.0f us per sparse layer; codes %.1f MB; peak RSS %.0f MB\n",
                    attn_mode_name(o.attn.p.mode), o.attn.p.budget, pct(st.attn.selected, st.attn.candidates),
                    1e6 * st.attn.select_s / (double)st.attn.sparse_calls,
                    1e6 * st.attn.gather_s / (double)st.attn.sparse_calls, st.attn.code_bytes / 1e6, st.peak_rss / 1e6);
        else if (o.attn.p.mode != SL_ATTN_DENSE && st.attn.sparse_calls) /* asynchronous: no per-layer times */
            fprintf(stderr, "spotlight: attention %s on %s, budget %g: %.1f%% of positions attended, %.1f MB fetched to "
                            "the device, VRAM cache hit rate %.1f%%; %.1f MB of VRAM; peak RSS %.0f MB\n",
                    attn_mode_name(o.attn.p.mode), st.backend, o.attn.p.budget,
                    pct(st.attn.selected, st.attn.candidates), st.attn.dev_bytes_in / 1e6,
                    st.attn.dev_rows ? 100.0 * (double)st.attn.dev_row_hits / (double)st.attn.dev_rows : 0.0,
                    st.device_bytes / 1e6, st.peak_rss / 1e6);
        if (o.attn.kv_resume && st.attn.resume_positions)
            fprintf(stderr, "spotlight: resumed %" PRId64 " stored positions in %.1f s (key codes %s)\n",
                    st.attn.resume_positions, st.attn.resume_s,
                    o.attn.p.mode == SL_ATTN_DENSE ? "none: dense"
                    : st.attn.resume_codes_read   ? "read from the code file"
                                                  : "hashed again from the stored keys");
        if ((o.attn.kv_path || o.attn.gpu) && st.attn.kv_cache_hits + st.attn.kv_cache_misses)
            fprintf(stderr, "spotlight: KV store: %.1f MB read, cache hit rate %.1f%%, %.1f MB in RAM, %.1f MB on disk\n",
                    st.attn.kv_bytes_read / 1e6,
                    100.0 * (double)st.attn.kv_cache_hits / (double)(st.attn.kv_cache_hits + st.attn.kv_cache_misses),
                    st.attn.kv_ram_bytes / 1e6, st.attn.kv_disk_bytes / 1e6);
    }
    status = 0;
done:
    gen_output_free(&out);
    free(gen);
    free(ids);
    free(file_text);
    sl_sampler_free(smp);
    sl_context_free(ctx);
    sl_tokenizer_free(tok);
    sl_model_free(m);
    return status;
}
