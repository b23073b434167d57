/* Shared between the tokenizer's files (tokenizer.c, tokenizer-bpe.c, tokenizer-spm.c,
 * tokenizer-pre.c, tokenizer-decode.c, chat-template.c): the vocabulary, its hash maps, the pre-tokenizer and
 * the chat-template family. Not installed.
 *
 * The behaviour mirrors llama.cpp's llama-vocab.cpp / unicode.cpp (the reference our
 * fixtures come from) token for token; where that code has a quirk we keep it and say so. */
#ifndef SL_CORE_TOKENIZER_INTERNAL_H
#define SL_CORE_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spotlight/tokenizer.h"

/* Token attributes, the same bits as llama.cpp's llama_token_attr, so the rules that read
 * them (which tokens are matched in text, which print) translate one to one. */
enum {
    SL_TATTR_UNKNOWN = 1 << 0,
    SL_TATTR_UNUSED = 1 << 1,
    SL_TATTR_NORMAL = 1 << 2,
    SL_TATTR_CONTROL = 1 << 3,
    SL_TATTR_USER_DEFINED = 1 << 4,
    SL_TATTR_BYTE = 1 << 5,
    SL_TATTR_LSTRIP = 1 << 7,
    SL_TATTR_RSTRIP = 1 << 8,
};

enum sl_tok_type { SL_TOK_BPE, SL_TOK_SPM };

enum sl_chat_kind { SL_CHAT_NONE, SL_CHAT_CHATML, SL_CHAT_LLAMA3, SL_CHAT_LLAMA2 };

/* Open-addressing hash tables over strings owned elsewhere (the GGUF handle). A slot holds
 * index+1 in its low 32 bits (0 = empty) and the key's hash in the high 32, so a probe only
 * compares bytes when the hashes agree. */
struct sl_strmap {
    uint64_t *slots;
    uint32_t mask;
};

/* A byte range of the text being tokenized. */
struct sl_span {
    size_t off, len;
};

/* Growable scratch arrays reused across the words of one sl_tokenize call. */
struct sl_ids {
    int32_t *v;
    size_t n, cap;
};
int sl_ids_push(struct sl_ids *a, int32_t id);

/* BPE merges: (left, right) pair -> rank, keyed on slices of the merge strings. */
struct sl_merge {
    const char *a, *b;
    uint32_t alen, blen;
};
struct sl_merges {
    struct sl_merge *m; /* m[rank] */
    uint32_t n;
    uint64_t *slots; /* rank+1 | hash << 32, as in sl_strmap */
    uint32_t mask;
    /* The same ranks keyed by the pair's token ids, for merges whose halves are both
     * tokens: one cache line per lookup instead of three. Key = left << 32 | right, with
     * bit 63 set to mark the slot used. */
    struct sl_merge_id {
        uint64_t key;
        int32_t rank;
    } *ids;
    uint32_t ids_mask;
    int32_t byte_id[256]; /* token of each byte's GPT-2 character, or -1 */
};

struct sl_pretok; /* compiled regex passes (tokenizer-pre.c) */

struct sl_tokenizer {
    enum sl_tok_type type;
    int32_t n_vocab;
    const char **text;  /* token text (GGUF-owned, or `owned` for renamed empty tokens) */
    uint32_t *len;
    float *score;
    uint16_t *attr;     /* SL_TATTR_* */
    uint8_t *eog;       /* 1 when the token ends generation */
    char **owned;       /* per-token replacement text for empty entries, else NULL */
    struct sl_strmap vocab;

    /* The text each token prints (llama.cpp's token-to-piece cache, with special=true). */
    char *piece_blob;
    uint64_t *piece_off; /* n_vocab + 1 offsets into piece_blob */

    /* Tokens matched in raw text before the model's own algorithm: control, user-defined
     * and unknown, longest text first. */
    int32_t *special;
    int32_t n_special;

    int32_t bos, eos, eot, eom, unk;
    bool add_bos, add_eos, add_space_prefix, clean_spaces, ignore_merges;

    /* BPE only */
    struct sl_merges merges;
    struct sl_pretok *pre;

    /* chat */
    enum sl_chat_kind chat;
    char *chat_system; /* default system prompt extracted from the template, or NULL */
};

/* ---- tokenizer.c: shared helpers ------------------------------------------------------- */
uint64_t sl_tok_hash(const void *p, size_t n, uint64_t h);
#define SL_TOK_HASH_SEED 0xcbf29ce484222325ULL
/* Final mix so that both the low bits (slot index) and the high bits (tag) are good. */
static inline uint64_t sl_tok_mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}
/* Vocabulary lookup: token id of exactly these bytes, or -1. */
int32_t sl_tok_find(const struct sl_tokenizer *t, const char *s, size_t n);
/* UTF-8 as RFC 3629 defines it (no overlongs, surrogates or code points past U+10FFFF).
 * Returns 1 and the length of a complete character at s, 0 when s[0..n) is a valid but
 * unfinished start, -1 and the length of the invalid part (the maximal valid prefix, >= 1). */
int sl_utf8_char(const unsigned char *s, size_t n, size_t *len);
/* Length of the UTF-8 sequence starting with lead byte c, as llama.cpp counts it. */
static inline size_t sl_utf8_len(unsigned char c) {
    static const uint8_t k[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return k[c >> 4];
}

/* ---- tokenizer-bpe.c ------------------------------------------------------------------- */
int sl_bpe_init(struct sl_tokenizer *t, const struct sl_gguf_value *merges);
/* Second step, once the vocabulary is loaded: the merge ranks keyed by token ids. */
int sl_bpe_index(struct sl_tokenizer *t);
void sl_bpe_free(struct sl_tokenizer *t);
/* Tokenizes one raw-text fragment (no special tokens in it), appending ids. */
int sl_bpe_tokenize(const struct sl_tokenizer *t, const char *text, size_t len, struct sl_ids *out);
/* The text a normal BPE token prints: its byte-level characters mapped back to bytes.
 * Writes up to cap bytes, returns the full length. */
size_t sl_bpe_decode_text(const char *s, size_t n, char *out, size_t cap);

/* ---- tokenizer-spm.c ------------------------------------------------------------------- */
/* add_prefix: prepend the space SentencePiece expects at the start of a text. */
int sl_spm_tokenize(const struct sl_tokenizer *t, const char *text, size_t len, bool add_prefix,
                    struct sl_ids *out);

/* ---- tokenizer-pre.c ------------------------------------------------------------------- */
/* Looks up pre-tokenizer `name` (llama.cpp's tokenizer.ggml.pre names) and compiles its
 * regex passes; sets the flags that llama.cpp ties to it. SL_EUNSUPPORTED when unknown. */
int sl_pretok_create(const char *name, struct sl_pretok **out, bool *clean_spaces,
                     bool *ignore_merges, bool *add_bos);
void sl_pretok_free(struct sl_pretok *p);
/* Splits text[0..len) (valid UTF-8) into words; *out is malloc'd, caller frees. */
int sl_pretok_split(const struct sl_pretok *p, const char *text, size_t len, struct sl_span **out,
                    size_t *n_out);

/* ---- chat-template.c ------------------------------------------------------------------- */
/* Recognises the template family and extracts a ChatML default system prompt. */
int sl_chat_detect(struct sl_tokenizer *t, const char *tmpl);

#endif
