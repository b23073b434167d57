/* The model side of `spotlight summarize`: one model and one context that summarize a text,
 * directly when the chat prompt around it and the summary fit the context, else by
 * map-reduce: chunks of at most `chunk` tokens (cut preferably after a newline or a
 * sentence) summarized one by one, then their joined summaries, level after level while they
 * still do not fit. The context is truncated between prompts; nothing is kept across texts. */
#ifndef SL_TOOLS_SUMMARIZER_H
#define SL_TOOLS_SUMMARIZER_H

#include <stddef.h>
#include <stdint.h>

#include "spotlight/context.h"
#include "spotlight/sampler.h"
#include "spotlight/tokenizer.h"
#include "tools/attn-opts.h"

#define SUMMARIZER_MIN_CHUNK 32 /* the least room for text a prompt may leave */

struct summarizer_params {
    const char *model;       /* GGUF path, or NULL for the cache's default model */
    const char *instruction; /* what the model is asked */
    int64_t n_ctx;           /* 0: the model's trained context */
    int64_t n_predict;       /* most tokens per summary */
    int64_t chunk_tokens;    /* 0: what fits beside the prompt and the summary */
    int32_t n_threads;       /* <= 0: the CPU backend's default */
    float temp;              /* 0: greedy */
    uint64_t seed;
    struct attn_opts *attn;  /* the attention options (borrowed) */
};

/* Owns everything it points to (summarizer_free). */
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

/* One text's outcome. */
struct doc_result {
    const char *method;      /* "direct" or "map-reduce" (static) */
    int64_t tokens_in, tokens_out, calls;
    char error[256];         /* "", or why the text has no summary */
};

/* Told before each map call of a map-reduce: call of calls. */
typedef void (*progress_fn)(void *user, int64_t call, int64_t calls);

/* Loads the model and sets up the context: 0, or -1 after one error line. */
int summarizer_open(struct summarizer *s, const struct summarizer_params *p);

/* Summarizes a cleaned text; the summary is in s->text. 0 (r->error set for a document that
 * cannot be summarized) or a library error (fatal for the job). */
int summarize_doc(struct summarizer *s, const char *text, size_t len, struct doc_result *r, progress_fn progress,
                  void *user);

/* Frees everything and zeroes s; safe on a zeroed struct. */
void summarizer_free(struct summarizer *s);

#endif
