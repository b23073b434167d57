/* Chat prompts in the model's template family, recognised from tokenizer.chat_template
 * (a Jinja template we do not interpret): ChatML, Llama 3 and Llama 2.
 *
 * The renderings reproduce what the families' reference Jinja templates print, except that
 * the leading BOS of Llama 2/3 is left out: sl_tokenize(add_special=true) adds it, and
 * writing it as text too would give two. ChatML templates (SmolLM2, Qwen2.5) insert a default
 * system message when the conversation does not start with one; its text is read out of the
 * template's string literals, so a new ChatML model needs no code change here. */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/tokenizer-internal.h"

/* The content of the ChatML default system message in tmpl, or NULL: the first string
 * literal of the form '<|im_start|>system\n...<|im_end|>...' (quotes ' or ", "\n" either a
 * newline or the escape). Literals that stop before <|im_end|> (they continue with
 * `+ messages[0]['content']`) are not defaults. */
static char *chatml_default_system(const char *tmpl) {
    static const char head[] = "<|im_start|>system";
    for (const char *p = strstr(tmpl, head); p; p = strstr(p + 1, head)) {
        if (p == tmpl || (p[-1] != '\'' && p[-1] != '"')) continue;
        char q = p[-1];
        const char *s = p + sizeof head - 1;
        if (s[0] == '\n') s += 1;
        else if (s[0] == '\\' && s[1] == 'n') s += 2;
        else continue;
        /* Unescape up to the closing quote. */
        size_t cap = strlen(s) + 1, n = 0;
        char *lit = malloc(cap);
        if (!lit) return NULL;
        for (; *s && *s != q; s++) {
            char c = *s;
            if (c == '\\' && s[1]) {
                c = *++s;
                c = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
            }
            lit[n++] = c;
        }
        lit[n] = '\0';
        char *end = strstr(lit, "<|im_end|>");
        if (end && *s == q) {
            *end = '\0';
            return lit;
        }
        free(lit);
    }
    return NULL;
}

int sl_chat_detect(struct sl_tokenizer *t, const char *tmpl) {
    t->chat = SL_CHAT_NONE;
    if (!tmpl) return 0;
    if (strstr(tmpl, "<|im_start|>")) {
        t->chat = SL_CHAT_CHATML;
        t->chat_system = chatml_default_system(tmpl);
    } else if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "<|end_header_id|>")) {
        t->chat = SL_CHAT_LLAMA3;
    } else if (strstr(tmpl, "[INST]")) {
        t->chat = SL_CHAT_LLAMA2;
    }
    return 0;
}

struct sbuf {
    char *p;
    size_t n, cap;
    int err;
};

static void put_n(struct sbuf *b, const char *s, size_t n) {
    if (b->err) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->err = sl_fail(SL_ENOMEM, "chat prompt buffer");
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void put(struct sbuf *b, const char *s) { put_n(b, s, strlen(s)); }

/* Jinja's trim / Python's str.strip() for the whitespace prompts contain in practice. */
static void put_trimmed(struct sbuf *b, const char *s) {
    size_t n = strlen(s);
    while (n && strchr(" \t\n\r\v\f", s[n - 1])) n--;
    while (n && strchr(" \t\n\r\v\f", *s)) s++, n--;
    put_n(b, s, n);
}

static void chatml(const struct sl_tokenizer *t, const struct sl_chat_msg *m, int n, bool gen,
                   struct sbuf *b) {
    if (n > 0 && t->chat_system && strcmp(m[0].role, "system") != 0) {
        put(b, "<|im_start|>system\n");
        put(b, t->chat_system);
        put(b, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        put(b, "<|im_start|>");
        put(b, m[i].role);
        put(b, "\n");
        put(b, m[i].content);
        put(b, "<|im_end|>\n");
    }
    if (gen) put(b, "<|im_start|>assistant\n");
}

static void llama3(const struct sl_chat_msg *m, int n, bool gen, struct sbuf *b) {
    for (int i = 0; i < n; i++) {
        put(b, "<|start_header_id|>");
        put(b, m[i].role);
        put(b, "<|end_header_id|>\n\n");
        put_trimmed(b, m[i].content);
        put(b, "<|eot_id|>");
    }
    if (gen) put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Meta's Llama 2 template: the system prompt folds into the first user turn; every user turn
 * opens with BOS and every assistant turn ends with EOS. Nothing to add for `gen`: the prompt
 * already ends with [/INST]. */
static void llama2(const struct sl_chat_msg *m, int n, struct sbuf *b) {
    const char *sys = NULL;
    int i = 0;
    if (n > 0 && strcmp(m[0].role, "system") == 0) sys = m[i++].content;
    for (bool first = true; i < n; i++, first = false) {
        if (strcmp(m[i].role, "user") == 0) {
            put(b, first ? "[INST] " : "<s>[INST] ");
            if (first && sys) {
                /* strip() applies to the whole "<<SYS>>..." + content string */
                struct sbuf c = {0};
                put(&c, "<<SYS>>\n");
                put(&c, sys);
                put(&c, "\n<</SYS>>\n\n");
                put(&c, m[i].content);
                put(&c, "");
                if (c.err) b->err = c.err;
                else c.p[c.n] = '\0', put_trimmed(b, c.p);
                free(c.p);
            } else {
                put_trimmed(b, m[i].content);
            }
            put(b, " [/INST]");
        } else if (strcmp(m[i].role, "assistant") == 0) {
            put(b, " ");
            put_trimmed(b, m[i].content);
            put(b, " </s>");
        }
    }
}

int64_t sl_chat_format(const sl_tokenizer *t, const struct sl_chat_msg *msgs, int n_msgs,
                       bool add_assistant_prompt, char *buf, size_t cap) {
    if (!t || n_msgs < 0 || (n_msgs && !msgs) || (!buf && cap))
        return sl_fail(SL_EINVAL, "sl_chat_format: bad arguments");
    for (int i = 0; i < n_msgs; i++)
        if (!msgs[i].role || !msgs[i].content)
            return sl_fail(SL_EINVAL, "chat message %d has no role or content", i);
    struct sbuf b = {0};
    switch (t->chat) {
    case SL_CHAT_CHATML: chatml(t, msgs, n_msgs, add_assistant_prompt, &b); break;
    case SL_CHAT_LLAMA3: llama3(msgs, n_msgs, add_assistant_prompt, &b); break;
    case SL_CHAT_LLAMA2: llama2(msgs, n_msgs, &b); break;
    default:
        return sl_fail(SL_EUNSUPPORTED, "the model's chat template (tokenizer.chat_template) is %s",
                       "missing or not ChatML, Llama 3 or Llama 2");
    }
    put(&b, ""); /* make sure there is a buffer even for an empty prompt */
    if (b.err) {
        free(b.p);
        return b.err;
    }
    if (cap) {
        size_t k = b.n < cap ? b.n : cap - 1;
        memcpy(buf, b.p, k);
        buf[k] = '\0';
    }
    free(b.p);
    return (int64_t)b.n;
}
