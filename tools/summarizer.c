/* The model side of `spotlight summarize` (see summarizer.h). */
#include "tools/summarizer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spotlight/error.h"
#include "tools/cli.h"

#define CMD "spotlight summarize"
#define MAX_LEVELS 8 /* map-reduce levels before giving up on a document */

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

void summarizer_free(struct summarizer *s) {
    free(s->pre);
    free(s->suf);
    free(s->prompt);
    free(s->text);
    sl_context_free(s->ctx);
    sl_tokenizer_free(s->tok);
    sl_model_free(s->m);
    memset(s, 0, sizeof *s);
}

int summarizer_open(struct summarizer *s, const struct summarizer_params *o) {
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
    if (room < SUMMARIZER_MIN_CHUNK) {
        fprintf(stderr, CMD ": a context of %" PRId64 " tokens leaves %" PRId64 " for text beside the %" PRId64
                        "-token prompt and -n %" PRId64 " (raise -c or lower -n)\n",
                s->n_ctx, room, s->n_pre + s->n_suf, s->n_predict);
        return -1;
    }
    s->chunk = o->chunk_tokens && o->chunk_tokens < room ? o->chunk_tokens : room;
    struct sl_context_params cp = sl_context_default_params();
    cp.n_ctx = s->n_ctx;
    cp.n_threads = o->n_threads;
    attn_opts_context(o->attn, &cp);
    if ((rc = sl_context_create(s->m, &cp, &s->ctx))) {
        cli_report("context", rc);
        return -1;
    }
    if (attn_opts_apply("summarize", o->attn, s->ctx, path)) return -1;
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

int summarize_doc(struct summarizer *s, const char *text, size_t len, struct doc_result *r, progress_fn progress,
                  void *user) {
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
