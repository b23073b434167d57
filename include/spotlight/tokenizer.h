/* Text <-> token ids, built from a model's GGUF metadata (tokenizer.ggml.*).
 *
 * Kinds: byte-level BPE ("gpt2" model; pre-tokenizer chosen by tokenizer.ggml.pre with
 * llama.cpp's names: smollm, gpt-2, llama3/llama-bpe, qwen2, starcoder, refact, falcon,
 * deepseek-coder, default ...) and SentencePiece ("llama" model, with byte fallback).
 * Special/control tokens are recognised in text only when asked (parse_special); user-defined
 * tokens always are, as in llama.cpp. The ids equal llama.cpp's for the same GGUF.
 * Decoding: sl_token_to_bytes gives one token's raw bytes; sl_detokenize a whole sequence
 * exactly as llama.cpp's llama_detokenize; the streaming sl_detok only ever emits valid
 * UTF-8: bytes of an incomplete character are held back until the rest arrives, and invalid
 * or (at flush) unfinished sequences become U+FFFD.
 *
 * Ownership: sl_tokenizer_from_gguf allocates, sl_tokenizer_free frees; every buffer is the
 * caller's. A tokenizer is immutable after creation: concurrent calls on it are safe. */
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

/* The text of ids[0..n) as llama.cpp's llama_detokenize(remove_special=false,
 * unparse_special=special) gives it: pieces joined, for SentencePiece the first token's
 * leading space dropped, and for the vocabularies that ask for it (clean_spaces: gpt-2,
 * llama3, starcoder ... not smollm or qwen2) " ," " ." " 's" ... cleaned up. Raw bytes: may
 * end inside a UTF-8 character. Writes up to cap bytes (NUL-terminated, truncated if needed)
 * and returns the full length; SL_EINVAL for an id out of range. */
int64_t sl_detokenize(const sl_tokenizer *t, const int32_t *ids, int64_t n, bool special,
                      char *buf, size_t cap);

/* Streaming detokenizer: feed ids, get valid UTF-8 out. Initialise with sl_detok_init; the
 * struct holds no allocations. */
struct sl_detok {
    const sl_tokenizer *tok;
    bool special;        /* print control tokens */
    unsigned char pending[8];
    int n_pending;
    bool first;          /* SPM: drop the leading space of the first piece */
};
void sl_detok_init(struct sl_detok *d, const sl_tokenizer *t, bool special);
/* Writes the text that id completes to buf (NUL-terminated; often "" while a character is
 * unfinished) and returns its length. SL_EINVAL for a bad id, or when the text and its NUL
 * do not fit in cap (the state is then unchanged: retry with a larger buffer; 3 * piece
 * length + 16 always suffices). */
int sl_detok_push(struct sl_detok *d, int32_t id, char *buf, size_t cap);
/* Writes held-back bytes of an unfinished character as U+FFFD (cap >= 4 suffices) and
 * resets the pending state. */
int sl_detok_flush(struct sl_detok *d, char *buf, size_t cap);

/* Chat formatting with the model's template family (tokenizer.chat_template): ChatML
 * (<|im_start|>role\ncontent<|im_end|>\n), Llama 3 and Llama 2 styles are recognised.
 * ChatML: when the first message is not a system message, the template's default system
 * message (e.g. SmolLM2's "You are a helpful AI assistant named SmolLM ...") is inserted, as
 * the Jinja template does. Llama 2/3: the leading BOS is not written (tokenize with
 * add_special=true adds it). Writes the prompt text (to be tokenized with parse_special),
 * NUL-terminated and truncated to cap, and returns its full length (retry when it is >= cap);
 * SL_EUNSUPPORTED for a missing or unrecognised template. */
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
