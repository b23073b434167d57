/* The tokenizer against llama.cpp: every string of tests/fixtures/tokens-<model>.tsv (made by
 * tools/ref/make-token-fixtures.py with llama.cpp) must give the same ids and the same
 * detokenized bytes, and every sampled token the same piece and attributes, for SmolLM2
 * (BPE, smollm pre-tokenizer) and Qwen2.5-Coder (BPE, qwen2). Also: special tokens on/off,
 * invalid UTF-8, streaming detokenization of split characters, the chat templates, the
 * pre-tokenizer regexes on hand-checked splits, SentencePiece on a small synthetic
 * vocabulary, and the speed on 1 MB of English (printed, not asserted). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tokenizer-internal.h"
#include "spotlight/error.h"
#include "spotlight/gguf.h"
#include "spotlight/tokenizer.h"
#include "tests/gguf-builder.h"
#include "tests/model-cache.h"

#define SMOLLM2 TEST_SMOLLM2
#define QWEN25 TEST_QWEN25

struct fx {
    sl_gguf *g;
    sl_tokenizer *t;
};

/* The model cache, as tools/fetch-model.sh and the CLI find it. */
static struct fx open_model(const char *file) {
    char path[4096];
    test_model_path(file, path, sizeof path);
    struct fx f = {0};
    int rc = sl_gguf_open(path, &f.g);
    cr_assert_eq(rc, 0, "cannot open %s (%s: %s); run tools/fetch-model.sh", path, sl_strerror(rc), sl_error_detail());
    rc = sl_tokenizer_from_gguf(f.g, &f.t);
    cr_assert_eq(rc, 0, "tokenizer for %s: %s: %s", file, sl_strerror(rc), sl_error_detail());
    return f;
}

static void close_model(struct fx *f) {
    sl_tokenizer_free(f->t);
    sl_gguf_free(f->g);
}

/* Tokenizes into a malloc'd array (the size-query protocol of sl_tokenize). */
static int64_t tok(const sl_tokenizer *t, const char *s, size_t n, bool add, bool special, int32_t **ids) {
    int64_t k = sl_tokenize(t, s, n, add, special, NULL, 0);
    if (k < 0) return k;
    *ids = malloc((size_t)(k ? k : 1) * sizeof **ids);
    cr_assert_eq(sl_tokenize(t, s, n, add, special, *ids, k), k);
    return k;
}

static size_t unhex(const char *h, unsigned char *out) {
    if (!strcmp(h, "-")) return 0;
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) sscanf(h + 2 * i, "%2hhx", &out[i]);
    return n;
}

/* ---- llama.cpp fixtures ------------------------------------------------------------------ */

static void check_fixture(const char *model, const char *fixture) {
    struct fx f = open_model(model);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", SL_FIXTURE_DIR, fixture);
    FILE *fp = fopen(path, "r");
    cr_assert_not_null(fp, "missing fixture %s (tools/ref/make-token-fixtures.py)", path);
    char *line = NULL;
    size_t lcap = 0;
    int n_tok = 0, n_piece = 0, bad = 0;
    while (getline(&line, &lcap, fp) > 0) {
        line[strcspn(line, "\n")] = 0;
        int bos, eos, add_bos;
        const char *h = strstr(line, " bos ");
        if (line[0] == '#' && h && sscanf(h, " bos %d eos %d add_bos %d", &bos, &eos, &add_bos) == 3) {
            cr_expect_eq(sl_tokenizer_bos(f.t), bos);
            cr_expect_eq(sl_tokenizer_eos(f.t), eos);
            cr_expect_eq(sl_tokenizer_add_bos(f.t), add_bos != 0);
            continue;
        }
        if (line[0] == '#' || !line[0]) continue;
        char *field[6] = {0};
        int nf = 0;
        for (char *s = line, *tab; nf < 6 && s; s = tab ? tab + 1 : NULL) {
            tab = strchr(s, '\t');
            if (tab) *tab = 0;
            field[nf++] = s;
        }
        if (!strcmp(field[0], "tok") && nf == 6) {
            n_tok++;
            bool special = field[2][0] == '1';
            unsigned char *in = malloc(strlen(field[3]) / 2 + 1), *want = malloc(strlen(field[5]) / 2 + 1);
            size_t n_in = unhex(field[3], in), n_want = unhex(field[5], want);
            int32_t *ids = NULL, expect[8192];
            int n_expect = 0;
            for (char *s = field[4]; strcmp(field[4], "-") && *s && n_expect < 8192;) expect[n_expect++] = (int32_t)strtol(s, &s, 10);
            int64_t n = tok(f.t, (const char *)in, n_in, true, special, &ids);
            bool same = n == n_expect && !memcmp(ids, expect, (size_t)n * sizeof *ids);
            if (!same) {
                bad++;
                int k = 0;
                while (k < n && k < n_expect && ids[k] == expect[k]) k++;
                fprintf(stderr, "%s: %s/%d ids differ: %lld vs llama.cpp %d ids, first at %d (%d vs %d)\n",
                        fixture, field[1], special, (long long)n, n_expect, k, k < n ? ids[k] : -1,
                        k < n_expect ? expect[k] : -1);
            }
            char *out = malloc(n_want + 64);
            int64_t m = sl_detokenize(f.t, expect, n_expect, true, out, n_want + 64);
            if (m != (int64_t)n_want || memcmp(out, want, n_want)) {
                bad++;
                fprintf(stderr, "%s: %s/%d detokenization differs (%lld vs %zu bytes)\n", fixture, field[1],
                        special, (long long)m, n_want);
            }
            free(out);
            free(ids);
            free(in);
            free(want);
        } else if (!strcmp(field[0], "piece") && nf == 5) {
            n_piece++;
            int32_t id = atoi(field[1]);
            unsigned char want[512], got[512];
            size_t n_want = unhex(field[3], want);
            int n = sl_token_to_bytes(f.t, id, field[2][0] == '1', (char *)got, sizeof got);
            int attr = f.t->attr[id];
            if (n != (int)n_want || memcmp(got, want, n_want) || attr != atoi(field[4])) {
                bad++;
                fprintf(stderr, "%s: piece %d/%s differs (%d vs %zu bytes, attr %d vs %s)\n", fixture, id,
                        field[2], n, n_want, attr, field[4]);
            }
        }
    }
    free(line);
    fclose(fp);
    printf("%s: %d tokenizations and %d pieces checked, %d mismatches\n", fixture, n_tok, n_piece, bad);
    cr_expect_gt(n_tok, 100);
    cr_expect_gt(n_piece, 100);
    cr_expect_eq(bad, 0, "%d mismatches with llama.cpp (listed above)", bad);
    close_model(&f);
}

Test(fixtures, smollm2) { check_fixture(SMOLLM2, "tokens-smollm2.tsv"); }
Test(fixtures, qwen25_coder) { check_fixture(QWEN25, "tokens-qwen2.5-coder.tsv"); }

/* ---- behaviour on the real vocabularies -------------------------------------------------- */

Test(smollm2, specials_and_eog) {
    struct fx f = open_model(SMOLLM2);
    const char *s = "<|im_start|>user\nhi<|im_end|>";
    int32_t *ids;
    int64_t n = tok(f.t, s, strlen(s), true, true, &ids);
    cr_assert_geq(n, 3);
    cr_expect_eq(ids[0], 1); /* <|im_start|> */
    cr_expect_eq(ids[n - 1], 2); /* <|im_end|> */
    free(ids);
    n = tok(f.t, s, strlen(s), true, false, &ids); /* as plain text: no control ids at all */
    cr_assert_gt(n, 6);
    for (int64_t i = 0; i < n; i++) cr_expect_gt(ids[i], 16, "control id %d from plain text", ids[i]);
    free(ids);
    cr_expect(sl_tokenizer_is_eog(f.t, 2));  /* <|im_end|> = eos */
    cr_expect(sl_tokenizer_is_eog(f.t, 0));  /* <|endoftext|> */
    cr_expect(!sl_tokenizer_is_eog(f.t, 1)); /* <|im_start|> */
    cr_expect(!sl_tokenizer_is_eog(f.t, 100));
    char buf[64];
    cr_expect_eq(sl_token_to_bytes(f.t, 2, false, buf, sizeof buf), 0);
    cr_expect_eq(sl_token_to_bytes(f.t, 2, true, buf, sizeof buf), 10);
    cr_expect_eq(sl_token_to_bytes(f.t, 49152, true, buf, sizeof buf), SL_EINVAL);
    close_model(&f);
}

Test(qwen25, eog_set) {
    struct fx f = open_model(QWEN25);
    /* eos <|im_end|>, <|endoftext|>, and the FIM pad/repo/file-sep tokens, as llama.cpp */
    int32_t eog[] = {151643, 151645, 151662, 151663, 151664};
    for (int i = 0; i < 5; i++) cr_expect(sl_tokenizer_is_eog(f.t, eog[i]), "%d", eog[i]);
    cr_expect(!sl_tokenizer_is_eog(f.t, 151644));
    /* user-defined tokens are matched even without parse_special */
    int32_t *ids;
    int64_t n = tok(f.t, "a<tool_call>b", 13, false, false, &ids);
    cr_assert_eq(n, 3);
    cr_expect_eq(ids[1], 151657);
    free(ids);
    close_model(&f);
}

Test(smollm2, invalid_utf8) {
    struct fx f = open_model(SMOLLM2);
    static const struct {
        const char *s;
        size_t at;
    } bad[] = {{"abc\xff", 3}, {"ab\xe2\x82", 2}, {"\xc0\xaf", 0}, {"x\xed\xa0\x80", 1}, {"ok \xf4\x90\x80\x80", 3}, {"\x80", 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t ids[16];
        sl_error_clear();
        cr_expect_eq(sl_tokenize(f.t, bad[i].s, strlen(bad[i].s), false, false, ids, 16), SL_EINVAL);
        char want[32];
        snprintf(want, sizeof want, "byte %zu", bad[i].at);
        cr_expect(strstr(sl_error_detail(), want), "case %zu: '%s' lacks '%s'", i, sl_error_detail(), want);
    }
    int32_t ids[4];
    cr_expect_eq(sl_tokenize(f.t, "", 0, false, false, ids, 4), 0);
    close_model(&f);
}

Test(smollm2, streaming_detok_emoji) {
    struct fx f = open_model(SMOLLM2);
    const char *s = "ok 🍕🎉 done";
    int32_t *ids;
    int64_t n = tok(f.t, s, strlen(s), false, false, &ids);
    struct sl_detok d;
    sl_detok_init(&d, f.t, false);
    char out[256] = "", buf[64];
    int held = 0;
    for (int64_t i = 0; i < n; i++) {
        int k = sl_detok_push(&d, ids[i], buf, sizeof buf);
        cr_assert_geq(k, 0, "%s", sl_error_detail());
        cr_assert_eq((size_t)k, strlen(buf));
        held += k == 0;
        strcat(out, buf);
    }
    cr_assert_eq(sl_detok_flush(&d, buf, sizeof buf), 0);
    cr_expect_str_eq(out, s);
    cr_expect_gt(held, 0, "the emoji should span several byte tokens");
    /* A character cut off at the end becomes U+FFFD on flush. */
    sl_detok_init(&d, f.t, false);
    int32_t *pizza;
    int64_t np = tok(f.t, "🍕", 4, false, false, &pizza);
    cr_assert_gt(np, 1);
    for (int64_t i = 0; i + 1 < np; i++) cr_expect_eq(sl_detok_push(&d, pizza[i], buf, sizeof buf), 0);
    cr_expect_eq(sl_detok_flush(&d, buf, sizeof buf), 3);
    cr_expect_str_eq(buf, "\xEF\xBF\xBD");
    /* Too small a buffer fails and leaves the state as it was. */
    sl_detok_init(&d, f.t, false);
    cr_expect_eq(sl_detok_push(&d, ids[0], buf, 2), SL_EINVAL); /* "ok" + NUL needs 3 */
    cr_expect_eq(sl_detok_push(&d, ids[0], buf, sizeof buf), 2);
    cr_expect_str_eq(buf, "ok");
    free(pizza);
    free(ids);
    close_model(&f);
}

/* Expected strings written from reading each GGUF's tokenizer.chat_template. */
Test(chat, smollm2_chatml_default_system) {
    struct fx f = open_model(SMOLLM2);
    struct sl_chat_msg m[] = {{"user", "Hello"}, {"assistant", "Hi there!"}};
    const char *want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there!<|im_end|>\n";
    char buf[512];
    cr_assert_eq(sl_chat_format(f.t, m, 2, false, buf, sizeof buf), (int64_t)strlen(want));
    cr_expect_str_eq(buf, want);
    char small[8];
    cr_expect_eq(sl_chat_format(f.t, m, 2, false, small, sizeof small), (int64_t)strlen(want));
    cr_expect_eq(strlen(small), 7);
    close_model(&f);
}

Test(chat, qwen25_chatml) {
    struct fx f = open_model(QWEN25);
    struct sl_chat_msg m[] = {{"user", "Hello"}, {"assistant", "Hi there!"}};
    const char *want = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                       "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there!<|im_end|>\n";
    char buf[512];
    cr_assert_eq(sl_chat_format(f.t, m, 2, false, buf, sizeof buf), (int64_t)strlen(want));
    cr_expect_str_eq(buf, want);
    struct sl_chat_msg s[] = {{"system", "Be brief."}, {"user", "What is 2+2?"}};
    const char *want2 = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                        "<|im_start|>assistant\n";
    cr_assert_eq(sl_chat_format(f.t, s, 2, true, buf, sizeof buf), (int64_t)strlen(want2));
    cr_expect_str_eq(buf, want2);
    close_model(&f);
}

/* ---- pre-tokenizer splits, checked by hand against the regexes --------------------------- */

static void expect_split(const char *pre, const char *text, const char *const *want) {
    struct sl_pretok *p;
    bool a, b, c;
    cr_assert_eq(sl_pretok_create(pre, &p, &a, &b, &c), 0, "%s", sl_error_detail());
    struct sl_span *w;
    size_t n;
    cr_assert_eq(sl_pretok_split(p, text, strlen(text), &w, &n), 0);
    size_t k = 0;
    for (; want[k]; k++) {
        cr_assert_lt(k, n, "%s: '%s' gave only %zu pieces", pre, text, n);
        cr_expect(w[k].len == strlen(want[k]) && !memcmp(text + w[k].off, want[k], w[k].len),
                  "%s: '%s' piece %zu is '%.*s', want '%s'", pre, text, k, (int)w[k].len, text + w[k].off, want[k]);
    }
    cr_expect_eq(n, k, "%s: '%s' gave %zu pieces, want %zu", pre, text, n, k);
    free(w);
    sl_pretok_free(p);
}

Test(pretok, llama3_and_gpt2) {
    expect_split("llama3", "Hello world", (const char *[]){"Hello", " world", NULL});
    expect_split("llama3", "1234567", (const char *[]){"123", "456", "7", NULL});
    expect_split("llama3", "x\n\n  y", (const char *[]){"x", "\n\n", " ", " y", NULL});
    expect_split("llama3", "DON'T stop", (const char *[]){"DON", "'T", " stop", NULL});
    expect_split("llama3", "end  \t\n", (const char *[]){"end", "  \t\n", NULL});
    expect_split("llama3", "a\u3000b !!\n", (const char *[]){"a", "\u3000b", " !!\n", NULL});
    expect_split("gpt-2", "Hello  world\n", (const char *[]){"Hello", " ", " world", "\n", NULL});
    expect_split("gpt-2", "it's 42x", (const char *[]){"it", "'s", " 42", "x", NULL});
    expect_split("gpt-2", "IT'S", (const char *[]){"IT", "'", "S", NULL});
    expect_split("smollm", "x 123", (const char *[]){"x", " ", "1", "2", "3", NULL});
    expect_split("qwen2", "x 123  ", (const char *[]){"x", " ", "1", "2", "3", "  ", NULL});
    struct sl_pretok *p;
    bool a, b, c;
    cr_expect_eq(sl_pretok_create("no-such-pre", &p, &a, &b, &c), SL_EUNSUPPORTED);
}

/* ---- SentencePiece on a synthetic vocabulary --------------------------------------------- */

static void kv_arr_hdr(struct gb *b, const char *key, uint32_t type, uint64_t n) {
    gb_str(b, key);
    gb_u32(b, 9);
    gb_u32(b, type);
    gb_u64(b, n);
}

/* <unk> <s> </s>, 256 byte tokens, then pieces with scores; "bc" outscores "ab". */
static const char *k_spm_pieces[] = {"\xE2\x96\x81", "a", "b", "c", "ab", "bc", "\xE2\x96\x81" "ab", "aa"};
static const float k_spm_scores[] = {-1, -2, -2, -2, -3, -2.5f, -5, -3};
enum { SPM_BYTE0 = 3, SPM_SP = 259, SPM_A, SPM_B, SPM_C, SPM_AB, SPM_BC, SPM_SP_AB, SPM_AA, SPM_N };

static struct gb spm_gguf(void) {
    struct gb b = {0};
    gb_header(&b, 3, 0, 6);
    gb_kv_str(&b, "general.architecture", "llama");
    gb_kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_arr_hdr(&b, "tokenizer.ggml.tokens", 8, SPM_N);
    gb_str(&b, "<unk>");
    gb_str(&b, "<s>");
    gb_str(&b, "</s>");
    for (int i = 0; i < 256; i++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", i);
        gb_str(&b, s);
    }
    for (int i = 0; i < SPM_N - SPM_SP; i++) gb_str(&b, k_spm_pieces[i]);
    kv_arr_hdr(&b, "tokenizer.ggml.scores", 6, SPM_N);
    for (int i = 0; i < SPM_N; i++) gb_f32(&b, i < SPM_SP ? 0.0f : k_spm_scores[i - SPM_SP]);
    kv_arr_hdr(&b, "tokenizer.ggml.token_type", 5, SPM_N);
    for (int i = 0; i < SPM_N; i++) gb_u32(&b, i == 0 ? 2 : i < 3 ? 3 : i < SPM_SP ? 6 : 1);
    gb_kv_str(&b, "tokenizer.chat_template", "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}");
    gb_pad(&b, 32);
    return b;
}

static void expect_ids(const sl_tokenizer *t, const char *s, bool special, const int32_t *want, int n_want) {
    int32_t *ids;
    int64_t n = tok(t, s, strlen(s), true, special, &ids);
    cr_assert_eq(n, n_want, "'%s': %lld ids, want %d", s, (long long)n, n_want);
    for (int i = 0; i < n_want; i++) cr_expect_eq(ids[i], want[i], "'%s' id %d: %d, want %d", s, i, ids[i], want[i]);
    free(ids);
}

Test(spm, synthetic_vocab) {
    struct gb b = spm_gguf();
    sl_gguf *g;
    sl_tokenizer *t;
    cr_assert_eq(sl_gguf_open_memory(b.buf, b.len, &g), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_tokenizer_from_gguf(g, &t), 0, "%s", sl_error_detail());
    cr_expect(sl_tokenizer_add_bos(t));
    cr_expect_eq(sl_tokenizer_bos(t), 1);
    cr_expect(sl_tokenizer_is_eog(t, 2));
    expect_ids(t, "ab", false, (int32_t[]){1, SPM_SP_AB}, 2);                 /* ▁ a b -> ▁ ab -> ▁ab */
    expect_ids(t, "abc", false, (int32_t[]){1, SPM_SP, SPM_A, SPM_BC}, 4);   /* bc scores higher */
    expect_ids(t, "aaa", false, (int32_t[]){1, SPM_SP, SPM_AA, SPM_A}, 4);   /* ties: leftmost */
    expect_ids(t, "é", false, (int32_t[]){1, SPM_SP, SPM_BYTE0 + 0xC3, SPM_BYTE0 + 0xA9}, 4);
    expect_ids(t, "<s>ab", true, (int32_t[]){1, 1, SPM_SP_AB}, 3);           /* space after a special */
    char buf[64];
    cr_expect_eq(sl_detokenize(t, (int32_t[]){SPM_SP_AB, SPM_C}, 2, false, buf, sizeof buf), 3);
    cr_expect_str_eq(buf, "abc");
    cr_expect_eq(sl_detokenize(t, (int32_t[]){1, SPM_SP_AB, SPM_C}, 3, false, buf, sizeof buf), 4);
    cr_expect_str_eq(buf, " abc"); /* llama.cpp strips only the first token, here the silent BOS */
    struct sl_detok d;
    sl_detok_init(&d, t, false);
    cr_expect_eq(sl_detok_push(&d, SPM_SP, buf, sizeof buf), 0);
    cr_expect_eq(sl_detok_push(&d, SPM_BYTE0 + 0xC3, buf, sizeof buf), 0);
    cr_expect_eq(sl_detok_push(&d, SPM_BYTE0 + 0xA9, buf, sizeof buf), 2);
    cr_expect_str_eq(buf, "é");
    /* Llama 2 chat: system folded into the first turn, BOS left to the tokenizer. */
    struct sl_chat_msg m[] = {{"system", "Sys."}, {"user", " Hi "}, {"assistant", "Yo"}, {"user", "More"}};
    const char *want = "[INST] <<SYS>>\nSys.\n<</SYS>>\n\n Hi [/INST] Yo </s><s>[INST] More [/INST]";
    char chat[256];
    cr_expect_eq(sl_chat_format(t, m, 4, true, chat, sizeof chat), (int64_t)strlen(want));
    cr_expect_str_eq(chat, want);
    sl_tokenizer_free(t);
    sl_gguf_free(g);
    gb_free(&b);
}

/* A tokenizer section with just a model kind, optional pre-tokenizer and token list. */
static int load_small(const char *model, const char *pre, const char *const *tokens, int n, int *err_out) {
    struct gb b = {0};
    gb_header(&b, 3, 0, 1 + (pre != NULL) + (tokens != NULL));
    gb_kv_str(&b, "tokenizer.ggml.model", model);
    if (pre) gb_kv_str(&b, "tokenizer.ggml.pre", pre);
    if (tokens) {
        kv_arr_hdr(&b, "tokenizer.ggml.tokens", 8, (uint64_t)n);
        for (int i = 0; i < n; i++) gb_str(&b, tokens[i]);
    }
    gb_pad(&b, 32);
    sl_gguf *g;
    sl_tokenizer *t = NULL;
    cr_assert_eq(sl_gguf_open_memory(b.buf, b.len, &g), 0, "%s", sl_error_detail());
    sl_error_clear();
    *err_out = sl_tokenizer_from_gguf(g, &t);
    sl_tokenizer_free(t);
    sl_gguf_free(g);
    gb_free(&b);
    return *err_out;
}

Test(load, errors_name_the_problem) {
    int rc;
    const char *toks[] = {"<unk>", "a", "b", "a"};
    cr_expect_eq(load_small("t5", NULL, toks, 3, &rc), SL_EUNSUPPORTED);
    cr_expect(strstr(sl_error_detail(), "t5"), "%s", sl_error_detail());
    cr_expect_eq(load_small("gpt2", "no-such-pre", toks, 3, &rc), SL_EUNSUPPORTED);
    cr_expect(strstr(sl_error_detail(), "no-such-pre"), "%s", sl_error_detail());
    cr_expect_eq(load_small("llama", NULL, NULL, 0, &rc), SL_ENOTFOUND);
    cr_expect(strstr(sl_error_detail(), "tokenizer.ggml.tokens"), "%s", sl_error_detail());
    cr_expect_eq(load_small("llama", NULL, toks, 4, &rc), SL_EFORMAT);
    cr_expect(strstr(sl_error_detail(), "duplicate"), "%s", sl_error_detail());
    cr_expect_eq(load_small("gpt2", "gpt-2", toks, 3, &rc), SL_ENOTFOUND); /* no merges */
    cr_expect_eq(load_small("llama", NULL, toks, 3, &rc), 0);
}

/* ---- speed ------------------------------------------------------------------------------- */

static void speed(const char *model) {
    static const char para[] =
        "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
        "conceived in Liberty, and dedicated to the proposition that all men are created equal. "
        "Now we are engaged in a great civil war, testing whether that nation, or any nation so "
        "conceived and so dedicated, can long endure. We are met on a great battle-field of that "
        "war; we have come to dedicate a portion of it (1863), as a final resting place.\n\n";
    size_t cap = 1 << 20, n = 0;
    char *text = malloc(cap);
    while (n + sizeof para - 1 <= cap) memcpy(text + n, para, sizeof para - 1), n += sizeof para - 1;
    struct fx f = open_model(model);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t k = sl_tokenize(f.t, text, n, false, false, NULL, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cr_expect_gt(k, (int64_t)(n / 8), "%s", sl_error_detail());
    printf("%s: %zu bytes -> %lld tokens in %.3f s (%.0f tokens/s, %.1f MB/s)\n", model, n, (long long)k, s,
           (double)k / s, (double)n / s / 1e6);
    close_model(&f);
    free(text);
}

Test(speed, one_megabyte, .timeout = 120) {
    speed(SMOLLM2);
    speed(QWEN25);
}
