/* The tokenizer's common part: the vocabulary read from GGUF metadata (tokenizer.ggml.*),
 * special and end-of-generation tokens, the token pieces, and sl_tokenize (special-token
 * splitting, then the model's algorithm on the text between them).
 *
 * Loading follows llama.cpp's llama_vocab::impl::load step by step (defaults per model type,
 * metadata overrides, special tokens recognised by their text, the EOG set), because the ids
 * we produce must equal llama.cpp's token for token. tokenizer-bpe.c / tokenizer-spm.c hold
 * the two algorithms, tokenizer-pre.c the regex pre-tokenizer, tokenizer-decode.c the way
 * back to text, chat-template.c the prompt formats. */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/tokenizer-internal.h"

/* ---- small shared helpers -------------------------------------------------------------- */

uint64_t sl_tok_hash(const void *p, size_t n, uint64_t h) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ULL; /* FNV-1a */
    return h;
}

int sl_ids_push(struct sl_ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return sl_fail(SL_ENOMEM, "token buffer (%zu ids)", cap);
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

int32_t sl_tok_find(const struct sl_tokenizer *t, const char *s, size_t n) {
    const struct sl_strmap *m = &t->vocab;
    uint64_t h = sl_tok_mix(sl_tok_hash(s, n, SL_TOK_HASH_SEED)), tag = h >> 32;
    for (uint32_t i = (uint32_t)h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t x = m->slots[i];
        if (!x) return -1;
        uint32_t id = (uint32_t)x - 1;
        if (x >> 32 == tag && t->len[id] == n && !memcmp(t->text[id], s, n)) return (int32_t)id;
    }
}

static int32_t find_str(const struct sl_tokenizer *t, const char *s) { return sl_tok_find(t, s, strlen(s)); }

int sl_utf8_char(const unsigned char *s, size_t n, size_t *len) {
    unsigned char c = s[0];
    if (c < 0x80) return *len = 1, 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return *len = 1, -1;
    for (size_t k = 1; k < need; k++) {
        if (k >= n) return 0;
        unsigned char b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return *len = k, -1;
    }
    return *len = need, 1;
}

/* ---- loading --------------------------------------------------------------------------- */

enum { TT_NORMAL = 1, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE };

/* Special-token ids that llama.cpp reads from metadata (a bad id keeps the default). */
enum { SP_BOS, SP_EOS, SP_EOT, SP_EOM, SP_UNK, SP_FIM_PRE, SP_FIM_SUF, SP_FIM_MID, SP_FIM_PAD,
       SP_FIM_REP, SP_FIM_SEP, SP_COUNT };
static const struct {
    int slot;
    const char *key;
} k_special_keys[] = {
    {SP_BOS, "tokenizer.ggml.bos_token_id"},        {SP_EOS, "tokenizer.ggml.eos_token_id"},
    {SP_EOT, "tokenizer.ggml.eot_token_id"},        {SP_EOM, "tokenizer.ggml.eom_token_id"},
    {SP_UNK, "tokenizer.ggml.unknown_token_id"},    {SP_FIM_PRE, "tokenizer.ggml.fim_pre_token_id"},
    {SP_FIM_SUF, "tokenizer.ggml.fim_suf_token_id"}, {SP_FIM_MID, "tokenizer.ggml.fim_mid_token_id"},
    {SP_FIM_PAD, "tokenizer.ggml.fim_pad_token_id"}, {SP_FIM_REP, "tokenizer.ggml.fim_rep_token_id"},
    {SP_FIM_SEP, "tokenizer.ggml.fim_sep_token_id"}, {SP_FIM_PRE, "tokenizer.ggml.prefix_token_id"},
    {SP_FIM_SUF, "tokenizer.ggml.suffix_token_id"},  {SP_FIM_MID, "tokenizer.ggml.middle_token_id"},
};

/* Tokens found by their text when metadata does not name them (llama.cpp's workaround for
 * converters that omit the ids); each found one is forced to be a control token. */
static const char *const k_find_eot[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
    "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "<end_of_utterance>", NULL};
static const char *const k_find_eom[] = {"<|eom_id|>", NULL};
static const char *const k_find_fim_pre[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
    "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>", "\xE2\x96\x81<PRE>",
    "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const k_find_fim_suf[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole\xEF\xBD\x9C>", "<SUF>", "\xE2\x96\x81<SUF>",
    "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const k_find_fim_mid[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
    "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>", "\xE2\x96\x81<MID>",
    "<|code_middle|>", "<|middle|>", NULL};
static const char *const k_find_fim_pad[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const k_find_fim_rep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char *const k_find_fim_sep[] = {"<|file_sep|>", NULL};
/* Every token with one of these texts ends generation. */
static const char *const k_eog_text[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>",
    "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>",
    "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
    "<turn|>", "<|tool_response>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "[e~[", NULL};

/* The first (lowest id) of the candidate texts present in the vocabulary. llama.cpp takes
 * the first in its hash map's order; the lowest id is the deterministic equivalent. */
static int32_t find_any(struct sl_tokenizer *t, const char *const *names) {
    int32_t best = -1;
    for (; *names; names++) {
        int32_t id = find_str(t, *names);
        if (id >= 0 && (best < 0 || id < best)) best = id;
    }
    return best;
}

static void autodetect(struct sl_tokenizer *t, int32_t *id, const char *const *names) {
    if (*id >= 0) return;
    *id = find_any(t, names);
    if (*id >= 0) t->attr[*id] |= SL_TATTR_CONTROL;
}

static int read_vocab(struct sl_tokenizer *t, const sl_gguf *g) {
    const struct sl_gguf_value *tokens, *scores = NULL, *types = NULL;
    int rc = sl_gguf_get_arr(g, "tokenizer.ggml.tokens", SL_GGUF_STRING, &tokens);
    if (rc) return rc;
    uint64_t n = tokens->v.arr.n;
    if (n == 0 || n > INT32_MAX / 4)
        return sl_fail(SL_EFORMAT, "tokenizer.ggml.tokens has %" PRIu64 " entries", n);
    if (sl_gguf_get(g, "tokenizer.ggml.scores")) {
        scores = sl_gguf_get(g, "tokenizer.ggml.scores");
        if (scores->type != SL_GGUF_ARRAY ||
            (scores->v.arr.type != SL_GGUF_FLOAT32 && scores->v.arr.type != SL_GGUF_INT32))
            return sl_fail(SL_EBADTYPE, "tokenizer.ggml.scores is not an array of float32/int32");
        if (scores->v.arr.n < n)
            return sl_fail(SL_EFORMAT, "tokenizer.ggml.scores has %" PRIu64 " entries for %" PRIu64 " tokens", scores->v.arr.n, n);
    }
    if (sl_gguf_get(g, "tokenizer.ggml.token_type")) {
        if ((rc = sl_gguf_get_arr(g, "tokenizer.ggml.token_type", SL_GGUF_INT32, &types))) return rc;
        if (types->v.arr.n < n)
            return sl_fail(SL_EFORMAT, "tokenizer.ggml.token_type has %" PRIu64 " entries for %" PRIu64 " tokens", types->v.arr.n, n);
    }
    t->n_vocab = (int32_t)n;
    uint32_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    t->text = calloc(n, sizeof *t->text);
    t->len = calloc(n, sizeof *t->len);
    t->score = calloc(n, sizeof *t->score);
    t->attr = calloc(n, sizeof *t->attr);
    t->eog = calloc(n, 1);
    t->owned = calloc(n, sizeof *t->owned);
    t->vocab.slots = calloc(cap, sizeof *t->vocab.slots);
    t->vocab.mask = cap - 1;
    if (!t->text || !t->len || !t->score || !t->attr || !t->eog || !t->owned || !t->vocab.slots)
        return sl_fail(SL_ENOMEM, "vocabulary of %" PRIu64 " tokens", n);
    for (uint32_t i = 0; i < n; i++) {
        const struct sl_gguf_value *s = &tokens->v.arr.items[i];
        if (s->v.str.len > UINT32_MAX / 2) return sl_fail(SL_EFORMAT, "token %u is too long", i);
        t->text[i] = s->v.str.s;
        /* llama.cpp reads token texts as C strings: an embedded NUL ends the token. */
        t->len[i] = (uint32_t)strnlen(s->v.str.s, s->v.str.len);
        if (t->len[i] == 0) { /* llama.cpp renames empty entries so they stay distinct */
            char name[32];
            int k = snprintf(name, sizeof name, "[EMPTY_%u]", i);
            if (!(t->owned[i] = strdup(name))) return sl_fail(SL_ENOMEM, "token text");
            t->text[i] = t->owned[i];
            t->len[i] = (uint32_t)k;
        }
        int32_t dup = sl_tok_find(t, t->text[i], t->len[i]);
        if (dup >= 0)
            return sl_fail(SL_EFORMAT, "duplicate token in vocabulary: '%.*s' has ids %d and %u",
                           (int)(t->len[i] > 64 ? 64 : t->len[i]), t->text[i], dup, i);
        uint64_t h = sl_tok_mix(sl_tok_hash(t->text[i], t->len[i], SL_TOK_HASH_SEED));
        uint32_t j = (uint32_t)h & t->vocab.mask;
        while (t->vocab.slots[j]) j = (j + 1) & t->vocab.mask;
        t->vocab.slots[j] = (h >> 32 << 32) | (i + 1);
        t->score[i] = scores ? (float)sl_gguf_arr_f64(scores, i) : 0.0f;
        int64_t ty = types ? sl_gguf_arr_i64(types, i) : TT_NORMAL;
        static const uint16_t k_attr[] = {0, SL_TATTR_NORMAL, SL_TATTR_UNKNOWN, SL_TATTR_CONTROL,
                                          SL_TATTR_USER_DEFINED, SL_TATTR_UNUSED, SL_TATTR_BYTE};
        t->attr[i] = ty >= 0 && ty <= TT_BYTE ? k_attr[ty] : 0;
    }
    return 0;
}

static int get_bool(const sl_gguf *g, const char *key, bool *v) {
    return sl_gguf_get(g, key) ? sl_gguf_get_bool(g, key, v) : 0;
}

/* Special ids, the add_bos/add_eos flags and the end-of-generation set. */
static int read_specials(struct sl_tokenizer *t, const sl_gguf *g) {
    int32_t sp[SP_COUNT];
    for (int i = 0; i < SP_COUNT; i++) sp[i] = -1;
    if (t->type == SL_TOK_SPM) sp[SP_BOS] = 1, sp[SP_EOS] = 2, sp[SP_UNK] = 0;
    else sp[SP_BOS] = 11, sp[SP_EOS] = 11; /* llama.cpp's GPT-2 defaults */
    for (int i = 0; i < SP_COUNT; i++)
        if (sp[i] >= t->n_vocab) sp[i] = -1;
    for (size_t k = 0; k < sizeof k_special_keys / sizeof k_special_keys[0]; k++) {
        uint32_t v;
        if (!sl_gguf_get(g, k_special_keys[k].key)) continue;
        int rc = sl_gguf_get_u32(g, k_special_keys[k].key, &v);
        if (rc) return rc;
        if (v >= (uint32_t)t->n_vocab)
            sl_log(SL_LOG_WARN, "bad special token %s = %u (vocabulary of %d), keeping the default",
                   k_special_keys[k].key, v, t->n_vocab);
        else
            sp[k_special_keys[k].slot] = (int32_t)v;
    }
    int rc;
    if ((rc = get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos)) ||
        (rc = get_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos)))
        return rc;
    if (t->add_bos && sp[SP_BOS] < 0) return sl_fail(SL_EFORMAT, "add_bos_token is true but there is no BOS token");
    if (t->add_eos && sp[SP_EOS] < 0) return sl_fail(SL_EFORMAT, "add_eos_token is true but there is no EOS token");

    autodetect(t, &sp[SP_EOT], k_find_eot);
    autodetect(t, &sp[SP_EOM], k_find_eom);
    autodetect(t, &sp[SP_FIM_PRE], k_find_fim_pre);
    autodetect(t, &sp[SP_FIM_SUF], k_find_fim_suf);
    autodetect(t, &sp[SP_FIM_MID], k_find_fim_mid);
    autodetect(t, &sp[SP_FIM_PAD], k_find_fim_pad);
    autodetect(t, &sp[SP_FIM_REP], k_find_fim_rep);
    autodetect(t, &sp[SP_FIM_SEP], k_find_fim_sep);
    for (int32_t i = 0; i < t->n_vocab; i++) /* control tokens named "...unused..." are unused */
        if ((t->attr[i] & SL_TATTR_CONTROL) && memmem(t->text[i], t->len[i], "unused", 6))
            t->attr[i] |= SL_TATTR_UNUSED;

    if (sp[SP_FIM_PAD] >= 0) t->eog[sp[SP_FIM_PAD]] = 1;
    if (sp[SP_FIM_REP] >= 0) t->eog[sp[SP_FIM_REP]] = 1;
    if (sp[SP_FIM_SEP] >= 0) t->eog[sp[SP_FIM_SEP]] = 1;
    for (const char *const *s = k_eog_text; *s; s++) {
        int32_t id = find_str(t, *s);
        if (id >= 0) t->eog[id] = 1, t->attr[id] |= SL_TATTR_CONTROL;
    }
    /* gpt-oss: these always print */
    static const char *const k_always[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};
    for (const char *const *s = k_always; *s; s++) {
        int32_t id = find_str(t, *s);
        if (id >= 0) t->attr[id] = SL_TATTR_USER_DEFINED;
    }
    if (sp[SP_EOS] >= 0) t->eog[sp[SP_EOS]] = 1;
    if (sp[SP_EOT] >= 0) t->eog[sp[SP_EOT]] = 1;
    if (sp[SP_EOM] >= 0) t->eog[sp[SP_EOM]] = 1;
    /* Harmony / solar-open: with <|return|>+<|call|> or <|calls|>+<|flush|>, <|end|> is not EOG. */
    int32_t ret = find_str(t, "<|return|>"), call = find_str(t, "<|call|>"), calls = find_str(t, "<|calls|>");
    int32_t flush = find_str(t, "<|flush|>"), end = find_str(t, "<|end|>");
    bool has_call = (call >= 0 && t->eog[call]) || (calls >= 0 && t->eog[calls]);
    if (end >= 0 && t->eog[end] && has_call && ((ret >= 0 && t->eog[ret]) || (flush >= 0 && t->eog[flush])))
        t->eog[end] = 0, t->attr[end] = SL_TATTR_USER_DEFINED;
    /* gemma4 / paddleocr: with <|tool_response>, </s> is an ordinary token. */
    int32_t tr = find_str(t, "<|tool_response>"), s_end = find_str(t, "</s>");
    if (tr >= 0 && t->eog[tr] && s_end >= 0 && t->eog[s_end]) t->eog[s_end] = 0, t->attr[s_end] = SL_TATTR_NORMAL;

    t->bos = sp[SP_BOS], t->eos = sp[SP_EOS], t->eot = sp[SP_EOT], t->eom = sp[SP_EOM], t->unk = sp[SP_UNK];
    return 0;
}

struct len_id {
    uint32_t len;
    int32_t id;
};
/* Longest first; equal lengths by id, for a deterministic order (llama.cpp's std::sort
 * leaves ties unspecified; they only matter for overlapping equal-length tokens). */
static int by_len_desc(const void *a, const void *b) {
    const struct len_id *x = a, *y = b;
    return x->len != y->len ? (x->len < y->len ? 1 : -1) : (x->id > y->id) - (x->id < y->id);
}

/* The piece of every token (what it prints with special=true), as llama.cpp caches it. */
static size_t piece_of(const struct sl_tokenizer *t, int32_t id, char *out, size_t cap) {
    uint16_t a = t->attr[id];
    const char *s = t->text[id];
    size_t n = t->len[id];
    if (a & (SL_TATTR_UNKNOWN | SL_TATTR_CONTROL | SL_TATTR_USER_DEFINED)) {
        if (n <= cap) memcpy(out, s, n);
        return n;
    }
    if (a & SL_TATTR_NORMAL) {
        if (t->type == SL_TOK_BPE) return sl_bpe_decode_text(s, n, out, cap);
        size_t o = 0; /* SPM: '▁' -> ' ' */
        for (size_t i = 0; i < n; o++) {
            bool sp = i + 3 <= n && !memcmp(s + i, "\xE2\x96\x81", 3);
            if (o < cap) out[o] = sp ? ' ' : s[i];
            i += sp ? 3 : 1;
        }
        return o;
    }
    if ((a & SL_TATTR_BYTE) && n >= 5) { /* "<0xXX>" */
        char hex[3] = {s[3], s[4], 0};
        if (cap) out[0] = (char)strtol(hex, NULL, 16);
        return 1;
    }
    return 0;
}

static int build_caches(struct sl_tokenizer *t) {
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (SL_TATTR_CONTROL | SL_TATTR_USER_DEFINED | SL_TATTR_UNKNOWN)) t->n_special++;
    t->special = malloc((size_t)(t->n_special ? t->n_special : 1) * sizeof *t->special);
    t->piece_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->piece_off);
    if (!t->special || !t->piece_off) return sl_fail(SL_ENOMEM, "token caches");
    struct len_id *order = malloc((size_t)(t->n_special ? t->n_special : 1) * sizeof *order);
    if (!order) return sl_fail(SL_ENOMEM, "special token list");
    int32_t k = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (SL_TATTR_CONTROL | SL_TATTR_USER_DEFINED | SL_TATTR_UNKNOWN))
            order[k++] = (struct len_id){t->len[i], i};
    qsort(order, (size_t)t->n_special, sizeof *order, by_len_desc);
    for (k = 0; k < t->n_special; k++) t->special[k] = order[k].id;
    free(order);

    uint64_t total = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) total += piece_of(t, i, NULL, 0);
    if (!(t->piece_blob = malloc(total ? total : 1))) return sl_fail(SL_ENOMEM, "token pieces");
    uint64_t at = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        t->piece_off[i] = at;
        at += piece_of(t, i, t->piece_blob + at, total - at);
    }
    t->piece_off[t->n_vocab] = at;
    return 0;
}

/* Per-model strip attributes llama.cpp sets by model name (the GGUF has no field for them). */
static void model_attrs(struct sl_tokenizer *t, const sl_gguf *g, const char *pre) {
    const char *name = "";
    if (sl_gguf_get(g, "general.name")) sl_gguf_get_str(g, "general.name", &name);
    char low[256];
    size_t n = strlen(name) < sizeof low - 1 ? strlen(name) : sizeof low - 1;
    for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)name[i]);
    low[n] = 0;
    int32_t id;
    if (strstr(pre, "jina-v2-de") || strstr(pre, "jina-v2-es") || strstr(pre, "jina-v2-code")) {
        if ((id = find_str(t, "<mask>")) >= 0) t->attr[id] |= SL_TATTR_LSTRIP;
    } else if (strstr(low, "phi-3") || strstr(low, "phi3")) {
        for (int32_t i = 0; i < t->n_special; i++) t->attr[t->special[i]] |= SL_TATTR_RSTRIP;
        if ((id = find_str(t, "</s>")) >= 0) t->attr[id] |= SL_TATTR_RSTRIP;
        static const char *const k_no[] = {"<unk>", "<s>", "<|endoftext|>"};
        for (int i = 0; i < 3; i++)
            if ((id = find_str(t, k_no[i])) >= 0) t->attr[id] &= (uint16_t)~SL_TATTR_RSTRIP;
    } else if (strstr(low, "modern-bert")) {
        if ((id = find_str(t, "[MASK]")) >= 0) t->attr[id] |= SL_TATTR_LSTRIP;
    }
}

void sl_tokenizer_free(sl_tokenizer *t) {
    if (!t) return;
    if (t->type == SL_TOK_BPE) sl_bpe_free(t);
    if (t->owned)
        for (int32_t i = 0; i < t->n_vocab; i++) free(t->owned[i]);
    free(t->owned);
    free(t->text);
    free(t->len);
    free(t->score);
    free(t->attr);
    free(t->eog);
    free(t->vocab.slots);
    free(t->piece_blob);
    free(t->piece_off);
    free(t->special);
    free(t->chat_system);
    free(t);
}

int sl_tokenizer_from_gguf(const sl_gguf *g, sl_tokenizer **out) {
    if (!g || !out) return sl_fail(SL_EINVAL, "sl_tokenizer_from_gguf: NULL argument");
    const char *model, *pre = "";
    int rc = sl_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc) return rc;
    if (sl_gguf_get(g, "tokenizer.ggml.pre") && (rc = sl_gguf_get_str(g, "tokenizer.ggml.pre", &pre)))
        return rc;
    struct sl_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return sl_fail(SL_ENOMEM, "tokenizer");
    if (strcmp(model, "gpt2") == 0) {
        t->type = SL_TOK_BPE;
        if (!*pre) {
            sl_log(SL_LOG_WARN, "GGUF has no tokenizer.ggml.pre; using the 'default' pre-tokenizer (quality may suffer)");
            pre = "default";
        }
        rc = sl_pretok_create(pre, &t->pre, &t->clean_spaces, &t->ignore_merges, &t->add_bos);
    } else if (strcmp(model, "llama") == 0) {
        t->type = SL_TOK_SPM;
        t->add_space_prefix = true;
        t->add_bos = true;
    } else {
        rc = sl_fail(SL_EUNSUPPORTED, "tokenizer model '%s' is not supported (gpt2 BPE and llama SPM are)", model);
    }
    const struct sl_gguf_value *merges;
    if (!rc) rc = get_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    if (!rc) rc = read_vocab(t, g);
    if (!rc && t->type == SL_TOK_BPE && !(rc = sl_gguf_get_arr(g, "tokenizer.ggml.merges", SL_GGUF_STRING, &merges)))
        rc = sl_bpe_init(t, merges);
    if (!rc && t->type == SL_TOK_BPE) rc = sl_bpe_index(t);
    if (!rc) rc = read_specials(t, g);
    if (!rc) rc = build_caches(t);
    if (!rc) model_attrs(t, g, pre);
    const char *tmpl = NULL;
    if (!rc && sl_gguf_get(g, "tokenizer.chat_template")) rc = sl_gguf_get_str(g, "tokenizer.chat_template", &tmpl);
    if (!rc) rc = sl_chat_detect(t, tmpl);
    if (rc) {
        sl_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int32_t sl_tokenizer_n_vocab(const sl_tokenizer *t) { return t->n_vocab; }
int32_t sl_tokenizer_bos(const sl_tokenizer *t) { return t->bos; }
int32_t sl_tokenizer_eos(const sl_tokenizer *t) { return t->eos; }
bool sl_tokenizer_add_bos(const sl_tokenizer *t) { return t->add_bos; }
bool sl_tokenizer_is_eog(const sl_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

/* ---- tokenize -------------------------------------------------------------------------- */

struct frag {
    size_t off, len;
    int32_t id; /* >= 0: a special token; -1: raw text */
};

/* Splits raw-text fragments at every occurrence of each special token, longest token first
 * (llama.cpp's tokenizer_st_partition). Control/unknown tokens only when parse_special;
 * user-defined tokens always. */
static int partition(const struct sl_tokenizer *t, const char *text, size_t len, bool parse_special,
                     struct frag **fr, size_t *nf) {
    size_t n = 1, cap = 16;
    struct frag *a = malloc(cap * sizeof *a);
    if (!a) return sl_fail(SL_ENOMEM, "fragments");
    a[0] = (struct frag){0, len, -1};
    for (int32_t s = 0; s < t->n_special; s++) {
        int32_t id = t->special[s];
        uint16_t at = t->attr[id];
        if (!parse_special && (at & (SL_TATTR_CONTROL | SL_TATTR_UNKNOWN))) continue;
        const char *st = t->text[id];
        size_t sl = t->len[id];
        for (size_t i = 0; i < n; i++) {
            if (a[i].id >= 0) continue;
            const char *base = text + a[i].off;
            const char *m = memmem(base, a[i].len, st, sl);
            if (!m) continue;
            /* Rewrite fragment i as: left, token, right (recursively for the right part). */
            size_t l_len = (size_t)(m - base), r_off = a[i].off + l_len + sl;
            size_t r_len = a[i].len - l_len - sl;
            if (at & SL_TATTR_LSTRIP)
                while (l_len && isspace((unsigned char)base[l_len - 1])) l_len--;
            if (at & SL_TATTR_RSTRIP)
                while (r_len && isspace((unsigned char)text[r_off])) r_off++, r_len--;
            if (n + 3 > cap) {
                struct frag *b = realloc(a, (cap *= 2) * sizeof *a);
                if (!b) return free(a), sl_fail(SL_ENOMEM, "fragments");
                a = b;
            }
            size_t add = (l_len > 0) + 1 + (r_len > 0);
            memmove(a + i + add, a + i + 1, (n - i - 1) * sizeof *a);
            size_t k = i, l_off = a[i].off;
            if (l_len) a[k++] = (struct frag){l_off, l_len, -1};
            a[k++] = (struct frag){0, 0, id};
            if (r_len) a[k] = (struct frag){r_off, r_len, -1};
            n += add - 1;
            i = k - 1; /* continue with the right remainder (the loop's i++ lands on it) */
        }
    }
    *fr = a;
    *nf = n;
    return 0;
}

int64_t sl_tokenize(const sl_tokenizer *t, const char *text, size_t len, bool add_special,
                    bool parse_special, int32_t *out, int64_t cap) {
    if (!t || (!text && len) || (!out && cap > 0) || cap < 0)
        return sl_fail(SL_EINVAL, "sl_tokenize: bad arguments");
    if (len > INT32_MAX) return sl_fail(SL_EINVAL, "text of %zu bytes is too long to tokenize", len);
    for (size_t i = 0, l; i < len; i += l)
        if (sl_utf8_char((const unsigned char *)text + i, len - i, &l) != 1)
            return sl_fail(SL_EINVAL, "text is not valid UTF-8 at byte %zu", i);

    struct sl_ids ids = {0};
    struct frag *fr = NULL;
    size_t nf = 0;
    int rc = 0;
    if (len && (rc = partition(t, text, len, parse_special, &fr, &nf))) return rc;
    if (add_special && t->add_bos) rc = sl_ids_push(&ids, t->bos);
    bool prev_special = true; /* SPM: a text at the start or after a special gets a space */
    for (size_t i = 0; i < nf && !rc; i++) {
        if (fr[i].id >= 0) {
            rc = sl_ids_push(&ids, fr[i].id);
            prev_special = true;
        } else if (t->type == SL_TOK_BPE) {
            rc = sl_bpe_tokenize(t, text + fr[i].off, fr[i].len, &ids);
        } else {
            rc = sl_spm_tokenize(t, text + fr[i].off, fr[i].len, t->add_space_prefix && prev_special, &ids);
            prev_special = false;
        }
    }
    if (!rc && add_special && t->add_eos) rc = sl_ids_push(&ids, t->eos);
    free(fr);
    if (rc) {
        free(ids.v);
        return rc;
    }
    if (ids.n && (int64_t)ids.n <= cap) memcpy(out, ids.v, ids.n * sizeof *out);
    free(ids.v);
    return (int64_t)ids.n;
}
