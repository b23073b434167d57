/* BPE pre-tokenization: splitting text into words with the regexes llama.cpp picks by
 * tokenizer.ggml.pre, run with PCRE2 (UTF + UCP, JIT when available).
 *
 * llama.cpp applies a list of regexes in sequence: each pass splits every piece produced by
 * the previous one, keeping both the matches and the unmatched gaps between them as pieces,
 * and a pass never looks past the end of the piece it works on (so `\s+(?!\S)` at a piece
 * end takes the whole whitespace run). We do exactly that by handing PCRE2 each piece as its
 * own subject.
 *
 * llama.cpp's notion of the character classes, which we reproduce rather than PCRE2's own:
 *  - whitespace (`\s`) is Unicode White_Space: 9-13, 32, U+0085, U+00A0, U+1680,
 *    U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000 (PCRE2's `\s` adds U+180E);
 *  - \p{L} / \p{N} come from a Unicode 15.1 table; this PCRE2 may know an older Unicode, so
 *    the letters and digits added in 15.0/15.1 are listed explicitly (a no-op where PCRE2
 *    already has them).
 * Where llama.cpp uses hand-written splitters (GPT-2, Llama 3, Qwen2 regexes) they implement
 * the same regex semantics; its std::regex fallback (used for the other passes) sees
 * non-ASCII whitespace as \v, which is why the CJK class of deepseek-coder excludes it. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/tokenizer-internal.h"

/* Class bodies (used inside [...]). */
#define WS "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define LET                                                                                       \
    "\\p{L}\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}"   \
    "\\x{13441}-\\x{13446}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"         \
    "\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define NUM "\\p{N}\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"

/* Shared tails: whitespace runs that leave the last space to the next word, then the rest. */
#define WS_TAIL "|[" WS "]+(?![^" WS "])|[" WS "]+"
/* Llama 3 / Qwen2 share everything but how many digits make one piece. */
#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define LLAMA3_LIKE(DIGITS)                                                                       \
    CONTRACTIONS "|[^\\r\\n" LET NUM "]?[" LET "]+|[" NUM "]" DIGITS " ?[^" WS LET NUM            \
                 "]+[\\r\\n]*|[" WS "]*[\\r\\n]+" WS_TAIL

/* GPT-2's regex; llama.cpp's version has no final `|\s+` but its splitter behaves as if it
 * had one (a lone whitespace before a non-space becomes its own piece either way). */
static const char k_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?[" LET "]+| ?[" NUM "]+| ?[^" WS LET NUM "]+" WS_TAIL;
static const char k_llama3[] = LLAMA3_LIKE("{1,3}|");
static const char k_qwen2[] = LLAMA3_LIKE("|");
static const char k_digit[] = "[" NUM "]";
static const char k_digits[] = "[" NUM "]+";
static const char k_punct_default[] = "[\\p{P}\\$\\+<=>\\^~\\|]+";
static const char k_punct_falcon[] = "[\\p{P}\\$\\+<=>\\^~\\|`]+";
static const char k_three_digits[] = "[0-9][0-9][0-9]";
static const char k_newline[] = "[\\r\\n]";
static const char k_ws_letters[] = "[" WS "]?[" LET "]+";
static const char k_ws_punct[] = "[" WS "]?\\p{P}+";
static const char k_cjk[] = "(?:(?![" WS "])[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}])+";

enum { MAX_PASSES = 5 };

struct pre_kind {
    const char *passes[MAX_PASSES];
};

static const struct pre_kind k_kind_gpt2 = {{k_gpt2}};
static const struct pre_kind k_kind_llama3 = {{k_llama3}};
static const struct pre_kind k_kind_qwen2 = {{k_qwen2}};
static const struct pre_kind k_kind_starcoder = {{k_digit, k_gpt2}};
static const struct pre_kind k_kind_default = {{k_punct_default, k_gpt2, k_digits, k_three_digits}};
static const struct pre_kind k_kind_falcon = {{k_punct_falcon, k_gpt2, k_three_digits}};
static const struct pre_kind k_kind_deepseek_coder = {{k_newline, k_ws_letters, k_ws_punct, k_cjk, k_digit}};

/* tokenizer.ggml.pre name -> passes and the vocabulary flags llama.cpp sets with it. */
static const struct {
    const char *name;
    const struct pre_kind *kind;
    bool clean_spaces, ignore_merges, add_bos;
} k_pre[] = {
    {"default", &k_kind_default, true, false, false},
    {"gpt-2", &k_kind_gpt2, true, false, false},
    {"phi-2", &k_kind_gpt2, true, false, false},
    {"jina-es", &k_kind_gpt2, true, false, false},
    {"jina-de", &k_kind_gpt2, true, false, false},
    {"jina-v2-es", &k_kind_gpt2, true, false, false},
    {"jina-v2-de", &k_kind_gpt2, true, false, false},
    {"gigachat", &k_kind_gpt2, true, false, false},
    {"a.x-4.0", &k_kind_gpt2, true, false, false},
    {"mellum", &k_kind_gpt2, true, false, false},
    {"modern-bert", &k_kind_gpt2, true, false, false},
    {"mpt", &k_kind_gpt2, true, false, false},
    {"olmo", &k_kind_gpt2, true, false, false},
    {"jais", &k_kind_gpt2, true, false, false},
    {"exaone4", &k_kind_gpt2, true, false, false},
    {"trillion", &k_kind_gpt2, false, false, false},
    {"granite-docling", &k_kind_gpt2, false, false, false},
    {"llama3", &k_kind_llama3, true, true, true},
    {"llama-v3", &k_kind_llama3, true, true, true},
    {"llama-bpe", &k_kind_llama3, true, true, true},
    {"falcon3", &k_kind_llama3, true, true, true},
    {"falcon-h1", &k_kind_llama3, true, true, true},
    {"pixtral", &k_kind_llama3, true, true, true},
    {"midm-2.0", &k_kind_llama3, true, true, true},
    {"lfm2", &k_kind_llama3, true, true, true},
    {"dbrx", &k_kind_llama3, true, false, false},
    {"smaug-bpe", &k_kind_llama3, true, false, false},
    {"qwen2", &k_kind_qwen2, false, false, false},
    {"deepseek-r1-qwen", &k_kind_qwen2, false, false, false},
    {"kormo", &k_kind_qwen2, false, false, false},
    {"hunyuan", &k_kind_qwen2, false, false, false},
    {"solar-open", &k_kind_qwen2, false, false, false},
    {"stablelm2", &k_kind_qwen2, true, false, false},
    {"megrez", &k_kind_qwen2, true, false, false},
    {"smollm", &k_kind_starcoder, false, false, false},
    {"starcoder", &k_kind_starcoder, true, false, false},
    {"refact", &k_kind_starcoder, true, false, false},
    {"codeshell", &k_kind_starcoder, true, false, false},
    {"command-r", &k_kind_starcoder, false, false, false},
    {"exaone", &k_kind_starcoder, true, false, false},
    {"minerva-7b", &k_kind_starcoder, true, false, false},
    {"mellum2", &k_kind_starcoder, true, false, false},
    {"falcon", &k_kind_falcon, true, false, false},
    {"deepseek-coder", &k_kind_deepseek_coder, false, false, false},
};

struct sl_pretok {
    int n;
    pcre2_code *re[MAX_PASSES];
    bool jit;
};

void sl_pretok_free(struct sl_pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) pcre2_code_free(p->re[i]);
    free(p);
}

int sl_pretok_create(const char *name, struct sl_pretok **out, bool *clean_spaces,
                     bool *ignore_merges, bool *add_bos) {
    const struct pre_kind *kind = NULL;
    for (size_t i = 0; i < sizeof k_pre / sizeof k_pre[0]; i++) {
        if (strcmp(k_pre[i].name, name) == 0) {
            kind = k_pre[i].kind;
            *clean_spaces = k_pre[i].clean_spaces;
            *ignore_merges = k_pre[i].ignore_merges;
            *add_bos = k_pre[i].add_bos;
            break;
        }
    }
    if (!kind) return sl_fail(SL_EUNSUPPORTED, "pre-tokenizer '%s' (tokenizer.ggml.pre) is not supported", name);

    struct sl_pretok *p = calloc(1, sizeof *p);
    if (!p) return sl_fail(SL_ENOMEM, "pre-tokenizer");
    uint32_t has_jit = 0;
    pcre2_config(PCRE2_CONFIG_JIT, &has_jit);
    p->jit = has_jit != 0;
    for (int i = 0; i < MAX_PASSES && kind->passes[i]; i++) {
        int err;
        PCRE2_SIZE at;
        p->re[i] = pcre2_compile((PCRE2_SPTR)kind->passes[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP, &err, &at, NULL);
        if (!p->re[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(err, msg, sizeof msg);
            sl_pretok_free(p);
            /* Our own patterns: failing here means a PCRE2 without Unicode support. */
            return sl_fail(SL_EUNSUPPORTED, "pre-tokenizer '%s': PCRE2 rejects pass %d at %zu: %s",
                           name, i, (size_t)at, (const char *)msg);
        }
        p->n = i + 1;
        /* JIT is a speed-up only; the interpreter gives the same splits. */
        if (p->jit && pcre2_jit_compile(p->re[i], PCRE2_JIT_COMPLETE) != 0) p->jit = false;
    }
    if (!p->jit) {
        static atomic_flag said = ATOMIC_FLAG_INIT;
        if (!atomic_flag_test_and_set(&said))
            sl_log(SL_LOG_INFO, "PCRE2 JIT unavailable; pre-tokenizer uses the interpreter");
    }
    *out = p;
    return 0;
}

struct span_vec {
    struct sl_span *v;
    size_t n, cap;
};

static int span_push(struct span_vec *s, size_t off, size_t len) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        struct sl_span *v = realloc(s->v, cap * sizeof *v);
        if (!v) return sl_fail(SL_ENOMEM, "pre-tokenizer spans");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (struct sl_span){off, len};
    return 0;
}

/* One pass: every piece of `in` split by `re` into gaps and matches. */
static int split_pass(const pcre2_code *re, const char *text, const struct span_vec *in,
                      struct span_vec *out, pcre2_match_data *md, pcre2_match_context *mc) {
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) {
        const PCRE2_SPTR subj = (PCRE2_SPTR)text + in->v[i].off;
        const size_t n = in->v[i].len, base = in->v[i].off;
        size_t pos = 0, prev = 0;
        while (pos < n) {
            int m = pcre2_match(re, subj, n, pos, PCRE2_NO_UTF_CHECK, md, mc);
            if (m == PCRE2_ERROR_NOMATCH) break;
            if (m < 0) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(m, msg, sizeof msg);
                return sl_fail(SL_EUNSUPPORTED, "pre-tokenizer regex failed at byte %zu: %s",
                               base + pos, (const char *)msg);
            }
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* cannot happen with our patterns; step one character */
                pos = ms + sl_utf8_len(subj[ms]);
                continue;
            }
            if (ms > prev && (rc = span_push(out, base + prev, ms - prev))) break;
            if ((rc = span_push(out, base + ms, me - ms))) break;
            prev = pos = me;
        }
        if (!rc && prev < n) rc = span_push(out, base + prev, n - prev);
    }
    return rc;
}

int sl_pretok_split(const struct sl_pretok *p, const char *text, size_t len, struct sl_span **out,
                    size_t *n_out) {
    struct span_vec a = {0}, b = {0};
    int rc = 0;
    *out = NULL;
    *n_out = 0;
    if (len == 0) return 0;
    if ((rc = span_push(&a, 0, len))) return rc;

    pcre2_match_context *mc = NULL;
    pcre2_jit_stack *js = NULL;
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (!md) rc = sl_fail(SL_ENOMEM, "pre-tokenizer match data");
    if (!rc && p->jit) {
        /* The default 32 KiB JIT stack is plenty for these patterns; a larger ceiling costs
         * nothing until used and keeps pathological inputs from failing. */
        mc = pcre2_match_context_create(NULL);
        js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
        if (!mc || !js) rc = sl_fail(SL_ENOMEM, "pre-tokenizer JIT stack");
        else pcre2_jit_stack_assign(mc, NULL, js);
    }
    for (int i = 0; i < p->n && !rc; i++) {
        b.n = 0;
        rc = split_pass(p->re[i], text, &a, &b, md, mc);
        struct span_vec t = a;
        a = b;
        b = t;
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    pcre2_jit_stack_free(js);
    free(b.v);
    if (rc) {
        free(a.v);
        return rc;
    }
    *out = a.v;
    *n_out = a.n;
    return 0;
}
