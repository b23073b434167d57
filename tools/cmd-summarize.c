/* `spotlight summarize`: an offline job that summarizes many long documents into JSONL, one
 * record per document, resumable after a crash or kill at any point.
 *
 *   inputs (doc-input.c) -> per document: read + clean -> tokens -> direct or map-reduce
 *   summary with one model and one context (truncated between prompts) -> a record appended
 *   to OUT.log and fsynced (job-log.c) -> once every document has one, OUT written atomically.
 *
 * A document fits "direct" when the chat prompt around it and the summary fit the context;
 * otherwise it is cut into chunks of --chunk-tokens (preferably after a newline or a sentence),
 * each chunk is summarized, and the joined partial summaries are summarized again (level after
 * level while they still do not fit). Greedy decoding by default, so a rerun gives the same
 * summaries. */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spotlight/context.h"
#include "spotlight/error.h"
#include "spotlight/sampler.h"
#include "spotlight/tokenizer.h"
#include "tools/attn-opts.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/doc-input.h"
#include "tools/job-log.h"
#include "tools/json-writer.h"

#define CMD "spotlight summarize"
#define DEFAULT_INSTRUCTION "Summarize the following text in a few sentences."
#define MAX_LEVELS 8   /* map-reduce levels before giving up on a document */
#define MIN_CHUNK 32   /* the least room for text a prompt may leave */

struct sum_opts {
    const char *model, *manifest, *out, *instruction;
    char **inputs;
    int n_inputs;
    int64_t n_predict, n_ctx, chunk_tokens, max_bytes;
    int32_t n_threads;
    float temp;
    uint64_t seed;
    bool quiet;
    struct attn_opts attn;
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: spotlight summarize [-m MODEL] (FILE|DIR)... | --manifest JOBS.jsonl  -o OUT.jsonl [options]\n"
            "  Summarizes every document into OUT.jsonl, one JSON record per line and document:\n"
            "  {\"id\", \"path\", \"summary\", \"method\", \"calls\", \"tokens_in\", \"tokens_out\", \"seconds\", \"error\"}.\n"
            "  method: direct, or map-reduce for documents longer than the context; calls: model calls;\n"
            "  tokens_in/out: the document's and the summary's tokens; error: null, or why it has no summary.\n"
            "  Records go to OUT.jsonl.log first (fsynced one by one); rerunning the same command after\n"
            "  a crash or kill skips the documents that have one. OUT.jsonl appears when all do.\n"
            "  FILE|DIR                text, markdown or HTML files; directories are recursed (sorted)\n"
            "      --manifest FILE     JSONL, one {\"id\": ..., \"path\": ...} or {\"id\": ..., \"text\": ...} per line\n"
            "                          (relative paths are taken from the manifest's directory)\n"
            "  -o, --output FILE       the JSONL output\n"
            "  -m, --model FILE        GGUF model (default: the default model in the cache)\n"
            "  -n, --n-predict N       most tokens per summary (default 128)\n"
            "  -c, --ctx-size N        context length (default: the model's trained context)\n"
            "      --chunk-tokens N    map-reduce chunk (default: what fits beside the prompt and summary)\n"
            "      --max-bytes N       larger documents get an error record (default 16 MiB)\n"
            "      --instruction TEXT  what the model is asked (default \"" DEFAULT_INSTRUCTION "\")\n"
            "  -t, --threads N         threads (default: physical cores)\n"
            "      --temp T            temperature (default 0: greedy, the same summary every run)\n"
            "  -s, --seed S            RNG seed with --temp > 0 (default 0)\n"
            "  -q, --quiet             no progress or summary lines\n");
    attn_opts_usage(f);
}

static int parse_args(int argc, char **argv, struct sum_opts *o) {
    enum { O_MANIFEST = 256, O_CHUNK, O_MAXB, O_INSTR, O_TEMP };
    static const struct option base[] = {
        {"model", required_argument, 0, 'm'},      {"output", required_argument, 0, 'o'},
        {"manifest", required_argument, 0, O_MANIFEST}, {"n-predict", required_argument, 0, 'n'},
        {"ctx-size", required_argument, 0, 'c'},   {"chunk-tokens", required_argument, 0, O_CHUNK},
        {"max-bytes", required_argument, 0, O_MAXB}, {"instruction", required_argument, 0, O_INSTR},
        {"threads", required_argument, 0, 't'},    {"temp", required_argument, 0, O_TEMP},
        {"seed", required_argument, 0, 's'},       {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}};
    struct option opts[sizeof base / sizeof *base + ATTN_OPT_COUNT + 1];
    int n_opts = (int)(sizeof base / sizeof *base);
    memcpy(opts, base, sizeof base);
    attn_opts_table(opts, &n_opts);
    opts[n_opts] = (struct option){0, 0, 0, 0};
    memset(o, 0, sizeof *o);
    attn_opts_init(&o->attn);
    o->n_predict = 128;
    o->max_bytes = 16 << 20;
    o->instruction = DEFAULT_INSTRUCTION;
    optind = 1;
    opterr = 0;
    int c;
    int64_t v;
    while ((c = getopt_long(argc, argv, "m:o:n:c:t:s:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'o': o->out = optarg; break;
        case O_MANIFEST: o->manifest = optarg; break;
        case O_INSTR: o->instruction = optarg; break;
        case 'q': o->quiet = true; break;
        case 'n': if (cli_parse_i64("summarize", "-n", optarg, 1, 1 << 20, &o->n_predict)) return 2; break;
        case 'c': if (cli_parse_i64("summarize", "-c", optarg, 64, INT32_MAX, &o->n_ctx)) return 2; break;
        case O_CHUNK: if (cli_parse_i64("summarize", "--chunk-tokens", optarg, MIN_CHUNK, INT32_MAX, &o->chunk_tokens)) return 2; break;
        case O_MAXB: if (cli_parse_i64("summarize", "--max-bytes", optarg, 1, INT64_C(1) << 40, &o->max_bytes)) return 2; break;
        case 't': if (cli_parse_i64("summarize", "-t", optarg, 1, 1024, &v)) return 2; o->n_threads = (int32_t)v; break;
        case 's': if (cli_parse_i64("summarize", "--seed", optarg, 0, INT64_MAX, &v)) return 2; o->seed = (uint64_t)v; break;
        case O_TEMP: if (cli_parse_f32("summarize", "--temp", optarg, 0, 100, &o->temp)) return 2; break;
        case 'h': usage(stdout); return 1;
        default: {
            int r = attn_opts_parse("summarize", c, optarg, &o->attn);
            if (r >= 0) {
                if (r) return r;
                break;
            }
            fprintf(stderr, CMD ": unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
        }
    }
    o->inputs = argv + optind;
    o->n_inputs = argc - optind;
    if (!o->n_inputs && !o->manifest) {
        fprintf(stderr, CMD ": give documents (FILE|DIR ...) or --manifest JOBS.jsonl (see --help)\n");
        return 2;
    }
    if (o->n_inputs && o->manifest) {
        fprintf(stderr, CMD ": give documents or --manifest, not both\n");
        return 2;
    }
    if (!o->out) {
        fprintf(stderr, CMD ": give the output file with -o OUT.jsonl\n");
        return 2;
    }
    if (o->attn.kv_resume) {
        fprintf(stderr, CMD ": --resume does not apply (every document starts from an empty context)\n");
        return 2;
    }
    return 0;
}

/* ---- the model side ------------------------------------------------------------------- */

struct summarizer {
    sl_model *m;
    sl_tokenizer *tok;
    sl_context *ctx;
    struct sl_sampler_params sp;
    int32_t *pre, *suf;      /* the prompt's ids before and after the text */
    int64_t n_pre, n_suf;
    int64_t n_ctx, n_predict;
    int64_t chunk;           /* most text tokens one map call takes */
    int32_t *prompt;         /* (n_ctx) a prompt being assembled */
    char *text;              /* the last call's summary */
    size_t len, cap;
    int64_t n_tok;           /* tokens evaluated or generated, for tok/s */
    double t_start;
};

/* Tokenizes text (parse_special as given, no BOS): a malloc'd array, count in *n; -1 on error. */
static int tokenize(const sl_tokenizer *tok, const char *s, size_t len, bool special, int32_t **out, int64_t *n) {
    int64_t cap = (int64_t)len + 16;
    for (int tries = 0; tries < 2; tries++) {
        int32_t *ids = malloc((size_t)cap * sizeof *ids);
        if (!ids) return SL_ENOMEM;
        int64_t k = sl_tokenize(tok, s, len, false, special, ids, cap);
        if (k >= 0 && k <= cap) {
            *out = ids;
            *n = k;
            return 0;
        }
        free(ids);
        if (k < 0) return (int)k;
        cap = k;
    }
    return SL_EINVAL;
}

/* The prompt around the text: the chat template's user turn "INSTRUCTION\n\n<text>", split at
 * the text so that the document is tokenized on its own (its "<|im_start|>" stays text). */
static int build_template(struct summarizer *s, const char *instruction) {
    static const char mark[] = "\x01SPOTLIGHT-DOCUMENT\x01";
    size_t il = strlen(instruction);
    char *content = malloc(il + sizeof mark + 2), *fmt = NULL;
    if (!content) return SL_ENOMEM;
    snprintf(content, il + sizeof mark + 2, "%s\n\n%s", instruction, mark);
    struct sl_chat_msg msg = {"user", content};
    int64_t need = sl_chat_format(s->tok, &msg, 1, true, NULL, 0);
    if (need == SL_EUNSUPPORTED) { /* no chat template: a plain prompt */
        sl_error_clear();
        fprintf(stderr, CMD ": the model has no chat template; using a plain prompt\n");
        need = (int64_t)strlen(content) + 12;
        if ((fmt = malloc((size_t)need))) snprintf(fmt, (size_t)need, "%s\n\nSummary:", content);
    } else if (need >= 0 && (fmt = malloc((size_t)need + 1))) {
        need = sl_chat_format(s->tok, &msg, 1, true, fmt, (size_t)need + 1);
    }
    free(content);
    if (need < 0 || !fmt) {
        free(fmt);
        return need < 0 ? (int)need : SL_ENOMEM;
    }
    char *at = strstr(fmt, mark);
    int rc = 0;
    if (!at || strstr(at + 1, mark)) {
        fprintf(stderr, CMD ": the chat template does not place the user's text as expected\n");
        free(fmt);
        return SL_EUNSUPPORTED;
    }
    int32_t *pre = NULL;
    int64_t n_pre = 0;
    if ((rc = tokenize(s->tok, fmt, (size_t)(at - fmt), true, &pre, &n_pre)) ||
        (rc = tokenize(s->tok, at + strlen(mark), strlen(at + strlen(mark)), true, &s->suf, &s->n_suf))) {
        free(pre);
        free(fmt);
        return rc;
    }
    free(fmt);
    int32_t bos = sl_tokenizer_bos(s->tok);
    bool add_bos = sl_tokenizer_add_bos(s->tok) && bos >= 0;
    if (!(s->pre = malloc((size_t)(n_pre + 1) * sizeof *s->pre))) {
        free(pre);
        return SL_ENOMEM;
    }
    if (add_bos) s->pre[0] = bos;
    memcpy(s->pre + add_bos, pre, (size_t)n_pre * sizeof *pre);
    s->n_pre = n_pre + add_bos;
    free(pre);
    return 0;
}

static void summarizer_free(struct summarizer *s) {
    free(s->pre);
    free(s->suf);
    free(s->prompt);
    free(s->text);
    sl_context_free(s->ctx);
    sl_tokenizer_free(s->tok);
    sl_model_free(s->m);
    memset(s, 0, sizeof *s);
}

/* Loads the model and sets up the context: 0, or -1 after one error line. */
static int summarizer_open(struct summarizer *s, struct sum_opts *o) {
    char path[4096];
    if (cli_model_path(o->model, path, sizeof path) != 0) return -1;
    int rc;
    if ((rc = sl_model_load(path, &s->m)) || (rc = sl_tokenizer_from_gguf(sl_model_gguf(s->m), &s->tok))) {
        cli_report(path, rc);
        return -1;
    }
    const struct sl_model_config *cfg = sl_model_config(s->m);
    s->n_ctx = o->n_ctx ? o->n_ctx : cfg->n_ctx_train;
    s->n_predict = o->n_predict;
    s->sp = sl_sampler_default_params();
    s->sp.temp = o->temp;
    s->sp.seed = o->seed;
    if ((rc = build_template(s, o->instruction))) {
        cli_report("chat template", rc);
        return -1;
    }
    int64_t room = s->n_ctx - s->n_pre - s->n_suf - s->n_predict;
    if (room < MIN_CHUNK) {
        fprintf(stderr, CMD ": a context of %" PRId64 " tokens leaves %" PRId64 " for text beside the %" PRId64
                        "-token prompt and -n %" PRId64 " (raise -c or lower -n)\n",
                s->n_ctx, room, s->n_pre + s->n_suf, s->n_predict);
        return -1;
    }
    s->chunk = o->chunk_tokens && o->chunk_tokens < room ? o->chunk_tokens : room;
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = s->n_ctx;
    cp.n_threads = o->n_threads;
    attn_opts_context(&o->attn, &cp);
    if ((rc = sl_context_create(s->m, &cp, &s->ctx))) {
        cli_report("context", rc);
        return -1;
    }
    if (attn_opts_apply("summarize", &o->attn, s->ctx, path)) return -1;
    if (!(s->prompt = malloc((size_t)s->n_ctx * sizeof *s->prompt))) {
        fprintf(stderr, CMD ": out of memory\n");
        return -1;
    }
    s->t_start = cli_now();
    return 0;
}

static int append_text(struct summarizer *s, const char *b, size_t n) {
    if (s->len + n + 1 > s->cap) {
        size_t cap = (s->len + n + 1) * 2;
        char *t = realloc(s->text, cap);
        if (!t) return SL_ENOMEM;
        s->text = t;
        s->cap = cap;
    }
    memcpy(s->text + s->len, b, n);
    s->len += n;
    return 0;
}

/* One prompt: the text ids between the template's, prefill, decode up to n_predict tokens.
 * The summary lands in s->text (whitespace-trimmed); its token count in *n_out. 0, or a
 * library error (the context is unusable). */
static int summarize_ids(struct summarizer *s, const int32_t *ids, int64_t n, int64_t *n_out) {
    int64_t np = s->n_pre + n + s->n_suf;
    if (np + s->n_predict > s->n_ctx) return SL_EBOUNDS; /* callers size the text to fit */
    memcpy(s->prompt, s->pre, (size_t)s->n_pre * sizeof *ids);
    memcpy(s->prompt + s->n_pre, ids, (size_t)n * sizeof *ids);
    memcpy(s->prompt + s->n_pre + n, s->suf, (size_t)s->n_suf * sizeof *ids);
    sl_sampler *smp = NULL;
    int rc;
    if ((rc = sl_context_truncate(s->ctx, 0)) || (rc = sl_sampler_create(&s->sp, sl_tokenizer_n_vocab(s->tok), &smp)) ||
        (rc = sl_context_eval(s->ctx, s->prompt, np, false))) {
        sl_sampler_free(smp);
        return rc;
    }
    for (int64_t i = 0; i < np; i++) sl_sampler_accept(smp, s->prompt[i]);
    s->n_tok += np;
    s->len = 0;
    struct sl_detok dt;
    sl_detok_init(&dt, s->tok, false);
    char piece[512];
    int64_t k = 0;
    for (;;) {
        int32_t id = sl_sampler_sample(smp, sl_context_logits(s->ctx));
        if (sl_tokenizer_is_eog(s->tok, id)) break;
        sl_sampler_accept(smp, id);
        k++;
        int nb = sl_detok_push(&dt, id, piece, sizeof piece);
        if (nb > 0 && (rc = append_text(s, piece, (size_t)nb))) break;
        if (k == s->n_predict) break;
        if ((rc = sl_context_eval(s->ctx, &id, 1, false))) break;
        s->n_tok++;
    }
    sl_sampler_free(smp);
    int nb = rc ? 0 : sl_detok_flush(&dt, piece, sizeof piece);
    if (nb > 0) rc = append_text(s, piece, (size_t)nb);
    if (rc) return rc;
    if (!s->text && !(s->text = malloc(s->cap = 64))) return SL_ENOMEM;
    size_t b = 0;
    while (b < s->len && (s->text[b] == ' ' || s->text[b] == '\n' || s->text[b] == '\t' || s->text[b] == '\r')) b++;
    while (s->len > b && (s->text[s->len - 1] == ' ' || s->text[s->len - 1] == '\n' || s->text[s->len - 1] == '\t' ||
                          s->text[s->len - 1] == '\r'))
        s->len--;
    memmove(s->text, s->text + b, s->len - b);
    s->len -= b;
    s->text[s->len] = '\0';
    *n_out = k;
    return 0;
}

/* Where to end a chunk that would end at ids[end]: after a newline, else after a sentence,
 * within the last eighth of the chunk; else exactly there. */
static int64_t chunk_end(const struct summarizer *s, const int32_t *ids, int64_t start, int64_t end) {
    int64_t floor_ = end - (end - start) / 8;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = end; i > floor_; i--) {
            char b[128];
            int l = sl_token_to_bytes(s->tok, ids[i - 1], false, b, sizeof b);
            if (l <= 0 || l > (int)sizeof b) continue;
            if (pass == 0 ? memchr(b, '\n', (size_t)l) != NULL
                          : b[l - 1] == '.' || b[l - 1] == '!' || b[l - 1] == '?')
                return i;
        }
    return end;
}

struct doc_result {
    const char *method;
    int64_t tokens_in, tokens_out, calls;
    char error[256];
};

typedef void (*progress_fn)(void *user, int64_t call, int64_t calls);

/* Summarizes a cleaned text; the summary is in s->text. 0 (r->error set for a document that
 * cannot be summarized) or a library error (fatal for the job). */
static int summarize_doc(struct summarizer *s, const char *text, size_t len, struct doc_result *r,
                         progress_fn progress, void *user) {
    int32_t *ids = NULL;
    int64_t n = 0;
    char *joined = NULL;
    int rc = tokenize(s->tok, text, len, false, &ids, &n);
    if (rc == SL_EINVAL) { /* text the tokenizer refuses is the document's fault */
        snprintf(r->error, sizeof r->error, "cannot tokenize: %s", sl_error_detail());
        return 0;
    }
    if (rc) return rc;
    r->tokens_in = n;
    r->method = "direct";
    for (int level = 0;; level++) {
        if (s->n_pre + n + s->n_suf + s->n_predict <= s->n_ctx) {
            rc = summarize_ids(s, ids, n, &r->tokens_out);
            r->calls++;
            break;
        }
        if (level == MAX_LEVELS) {
            snprintf(r->error, sizeof r->error, "map-reduce still does not fit after %d levels (raise -c or lower -n)", level);
            break;
        }
        r->method = "map-reduce";
        int64_t k = (n + s->chunk - 1) / s->chunk, target = (n + k - 1) / k; /* even chunks */
        size_t jl = 0, jcap = 0;
        for (int64_t start = 0, i = 0; start < n && !rc; i++) {
            int64_t end = start + target < n ? chunk_end(s, ids, start, start + target) : n, n_out;
            if (progress) progress(user, i, k);
            if ((rc = summarize_ids(s, ids + start, end - start, &n_out))) break;
            r->calls++;
            if (jl + s->len + 3 > jcap) {
                jcap = (jl + s->len + 3) * 2;
                char *nj = realloc(joined, jcap);
                if (!nj) {
                    rc = SL_ENOMEM;
                    break;
                }
                joined = nj;
            }
            if (s->len) {
                if (jl) joined[jl++] = '\n', joined[jl++] = '\n';
                memcpy(joined + jl, s->text, s->len);
                jl += s->len;
            }
            start = end;
        }
        if (rc) break;
        free(ids);
        ids = NULL;
        int64_t before = n;
        if ((rc = tokenize(s->tok, joined ? joined : "", jl, false, &ids, &n))) break;
        if (n >= before) {
            snprintf(r->error, sizeof r->error,
                     "map-reduce does not shrink the text (%" PRId64 " tokens of partial summaries): raise -c or lower -n", n);
            break;
        }
    }
    free(ids);
    free(joined);
    return rc;
}

/* ---- the job -------------------------------------------------------------------------- */

struct job {
    struct sum_opts *o;
    struct doc_list docs;
    struct job_log log;
    struct summarizer s;
    bool loaded;
    int64_t *rec_of;
    size_t done, total, ok, failed, earlier;
    int64_t bytes_left, bytes_done, tok_in, tok_out;
    double t0;
    bool line_open; /* a progress line waits for its newline */
    size_t cur;     /* the document in progress */
};

static void end_line(struct job *jb) {
    if (jb->line_open) fputc('\n', stderr);
    jb->line_open = false;
}

static void show_progress(void *user, int64_t call, int64_t calls) {
    struct job *jb = user;
    if (jb->o->quiet) return;
    double el = cli_now() - jb->t0, tps = jb->loaded && el > 0 ? (double)jb->s.n_tok / el : 0;
    char eta[32] = "?";
    if (jb->bytes_done > 0 && el > 0) {
        double left = el * (double)jb->bytes_left / (double)jb->bytes_done;
        snprintf(eta, sizeof eta, "%.0f s", left);
    }
    fprintf(stderr, "\rsummarize: %zu / %zu documents  %.0f tok/s  ETA %s", jb->done, jb->total, tps, eta);
    if (calls > 1) fprintf(stderr, "  (document %zu: chunk %" PRId64 " / %" PRId64 ")", jb->cur + 1, call + 1, calls);
    fputs("    ", stderr);
    jb->line_open = true;
}

/* One JSON record line (ending in a newline) into a malloc'd buffer. */
static char *format_record(const struct doc *d, const struct doc_result *r, const char *summary, double seconds,
                           size_t *len) {
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f) return NULL;
    struct json_writer w;
    json_init(&w, f);
    json_obj_begin(&w, NULL);
    json_str(&w, "id", d->id);
    if (d->path) json_str(&w, "path", d->path);
    if (r->error[0]) json_null(&w, "summary");
    else json_str(&w, "summary", summary);
    if (r->error[0]) json_null(&w, "method");
    else json_str(&w, "method", r->method);
    json_int(&w, "calls", r->calls);
    json_int(&w, "tokens_in", r->tokens_in);
    json_int(&w, "tokens_out", r->tokens_out);
    json_num(&w, "seconds", round(seconds * 1000) / 1000);
    if (r->error[0]) json_str(&w, "error", r->error);
    else json_null(&w, "error");
    json_obj_end(&w);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Summarizes document i and appends its record: 0, or -1 when the job must stop. */
static int run_doc(struct job *jb, size_t i) {
    const struct doc *d = &jb->docs.v[i];
    struct doc_result r = {0};
    double t0 = cli_now();
    size_t len = 0;
    char *text = doc_load(d, jb->o->max_bytes, &len, r.error, sizeof r.error);
    int rc = 0;
    if (text) {
        rc = summarize_doc(&jb->s, text, len, &r, show_progress, jb);
        free(text);
        if (rc) {
            end_line(jb);
            cli_report(d->id, rc);
            return -1;
        }
    }
    size_t n = 0;
    char *line = format_record(d, &r, r.error[0] ? NULL : jb->s.text, cli_now() - t0, &n);
    if (!line) {
        fprintf(stderr, CMD ": out of memory\n");
        return -1;
    }
    int64_t at = job_log_append(&jb->log, d->id, line, n, r.error[0] != 0);
    free(line);
    if (at < 0) return -1;
    jb->rec_of[i] = at;
    if (r.error[0]) {
        jb->failed++;
        if (!jb->o->quiet) {
            end_line(jb);
            fprintf(stderr, CMD ": %s: %s\n", d->id, r.error);
        }
    } else {
        jb->ok++;
    }
    jb->tok_in += r.tokens_in;
    jb->tok_out += r.tokens_out;
    return 0;
}

int cmd_summarize(int argc, char **argv) {
    struct sum_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    struct job jb = {.o = &o};
    int status = 1;
    /* the job's own files are never its documents: OUT, OUT.log, their temporaries */
    char real[PATH_MAX], *skip = NULL;
    {
        char *dir = strdup(o.out);
        if (!dir) goto done;
        char *slash = strrchr(dir, '/');
        const char *base = slash ? slash + 1 : o.out;
        if (slash) *slash = '\0';
        if (realpath(slash ? (dir[0] ? dir : "/") : ".", real)) {
            size_t sl = strlen(real) + strlen(base) + 2;
            if ((skip = malloc(sl))) snprintf(skip, sl, "%s/%s", strcmp(real, "/") ? real : "", base);
        }
        free(dir);
    }
    jb.docs.skip_prefix = skip;
    if (o.manifest) {
        if (doc_list_add_manifest(&jb.docs, o.manifest, stderr)) goto done;
    } else {
        for (int i = 0; i < o.n_inputs; i++)
            if (doc_list_add_path(&jb.docs, o.inputs[i])) goto done;
    }
    if (job_log_open(&jb.log, o.out)) goto done;
    jb.total = jb.docs.n;
    char **ids = malloc((jb.total + 1) * sizeof *ids);
    jb.rec_of = malloc((jb.total + 1) * sizeof *jb.rec_of);
    if (!ids || !jb.rec_of) {
        free(ids);
        fprintf(stderr, CMD ": out of memory\n");
        goto done;
    }
    for (size_t i = 0; i < jb.total; i++) ids[i] = jb.docs.v[i].id;
    rc = job_log_match(&jb.log, ids, jb.total, jb.rec_of);
    free(ids);
    if (rc) goto done;
    for (size_t i = 0; i < jb.total; i++) {
        if (jb.rec_of[i] >= 0) {
            jb.done++;
            jb.earlier++;
            if (jb.log.v[jb.rec_of[i]].failed) jb.failed++;
            else jb.ok++;
        } else {
            jb.bytes_left += jb.docs.v[i].size;
        }
    }
    if (jb.log.n > jb.earlier && !o.quiet)
        fprintf(stderr, CMD ": ignoring %zu earlier records that match no document of this job (or repeat one)\n",
                jb.log.n - jb.earlier);
    if (jb.earlier && jb.earlier < jb.total && !o.quiet)
        fprintf(stderr, CMD ": resuming: %zu of %zu documents already have a record\n", jb.earlier, jb.total);
    /* the model is loaded up front, even if the documents left turn out unreadable: a bad
     * model or too small a context is one error line before any work */
    if (jb.total > jb.earlier) {
        if (summarizer_open(&jb.s, &o)) goto done;
        jb.loaded = true;
    }
    jb.t0 = cli_now();
    for (size_t i = 0; i < jb.total; i++) {
        if (jb.rec_of[i] >= 0) continue;
        jb.cur = i;
        show_progress(&jb, 0, 1);
        if (run_doc(&jb, i)) goto done;
        jb.done++;
        jb.bytes_done += jb.docs.v[i].size;
        jb.bytes_left -= jb.docs.v[i].size;
    }
    if (jb.total > jb.earlier) show_progress(&jb, 0, 1);
    end_line(&jb);
    if (job_log_commit(&jb.log, jb.rec_of, jb.total)) goto done;
    if (!o.quiet)
        fprintf(stderr, CMD ": %zu documents: %zu ok, %zu failed (%zu from an earlier run); this run %" PRId64
                        " tokens in, %" PRId64 " out, %.1f s -> %s\n",
                jb.total, jb.ok, jb.failed, jb.earlier, jb.tok_in, jb.tok_out, cli_now() - jb.t0, o.out);
    status = 0;
done:
    end_line(&jb);
    free(skip);
    free(jb.rec_of);
    summarizer_free(&jb.s);
    job_log_close(&jb.log);
    doc_list_free(&jb.docs);
    return status;
}
