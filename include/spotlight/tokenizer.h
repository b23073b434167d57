/* Text <-> token ids, built from a model's GGUF metadata (tokenizer.ggml.*).
 *
 * Kinds: byte-level BPE ("gpt2" model; pre-tokenizer chosen by tokenizer.ggml.pre: smollm,
 * gpt2, llama3/llama-bpe, qwen2, ...) and SentencePiece ("llama" model, with byte fallback).
 * Special/control tokens are recognised in text only when asked (parse_special). Output of
 * sl_tokenizer_decode_* is valid UTF-8: bytes of an incomplete character are held back until
 * the rest arrives (streaming) or replaced by U+FFFD at the end. */
#ifndef SPOTLIGHT_TOKENIZER_H
#define SPOTLIGHT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spotlight/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_tokenizer sl_tokenizer;

/* Builds the tokenizer; the GGUF handle must outlive it. 0 or SL_EUNSUPPORTED (unknown
 * model/pre-tokenizer), SL_ENOTFOUND / SL_EFORMAT (missing or inconsistent metadata). */
int sl_tokenizer_from_gguf(const sl_gguf *g, sl_tokenizer **out);
void sl_tokenizer_free(sl_tokenizer *t); /* NULL is a no-op */

int32_t sl_tokenizer_n_vocab(const sl_tokenizer *t);
int32_t sl_tokenizer_bos(const sl_tokenizer *t); /* -1 if none */
int32_t sl_tokenizer_eos(const sl_tokenizer *t); /* -1 if none */
/* Whether generation ends at this token (EOS, EOT, <|im_end|> ... : end-of-generation). */
bool sl_tokenizer_is_eog(const sl_tokenizer *t, int32_t id);
/* Whether the metadata asks for BOS at the start of a prompt (tokenizer.ggml.add_bos_token). */
bool sl_tokenizer_add_bos(const sl_tokenizer *t);

/* Tokenizes text[0..len). add_special: prepend BOS if the model wants it (and EOS if it
 * wants that); parse_special: text like "<|im_start|>" becomes its control token.
 * Writes at most cap ids and returns the total count; if that exceeds cap, nothing useful
 * is in out and the caller retries with a larger buffer. Returns SL_EINVAL for text that
 * is not valid UTF-8 (with the byte offset in the detail). */
int64_t sl_tokenize(const sl_tokenizer *t, const char *text, size_t len, bool add_special,
                    bool parse_special, int32_t *out, int64_t cap);

/* The raw bytes of one token (byte-level decoded; may be part of a UTF-8 character).
 * Returns the byte count (written up to cap) or SL_EINVAL for an id out of range.
 * Control tokens give their text only when `special` is true, else 0 bytes. */
int sl_token_to_bytes(const sl_tokenizer *t, int32_t id, bool special, char *buf, size_t cap);

/* Streaming detokenizer: feed ids, get valid UTF-8 out. */
struct sl_detok {
    const sl_tokenizer *tok;
    bool special;        /* print control tokens */
    unsigned char pending[8];
    int n_pending;
    bool first;          /* SPM: drop the leading space of the first piece */
};
void sl_detok_init(struct sl_detok *d, const sl_tokenizer *t, bool special);
/* Appends the text of id to buf (NUL-terminated); returns bytes written or negative. */
int sl_detok_push(struct sl_detok *d, int32_t id, char *buf, size_t cap);
/* Flushes held-back bytes (as U+FFFD if incomplete). */
int sl_detok_flush(struct sl_detok *d, char *buf, size_t cap);

/* Chat formatting with the model's template family (tokenizer.chat_template): ChatML
 * (<|im_start|>role\ncontent<|im_end|>\n), Llama 3 and Llama 2 styles are recognised.
 * Writes the prompt text (to be tokenized with parse_special) and returns its length, or
 * the length needed if it exceeds cap; SL_EUNSUPPORTED for an unrecognised template. */
struct sl_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
};
int64_t sl_chat_format(const sl_tokenizer *t, const struct sl_chat_msg *msgs, int n_msgs,
                       bool add_assistant_prompt, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
