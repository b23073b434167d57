/* SentencePiece ("llama" tokenizer.ggml.model): llama.cpp's SPM bigram merge.
 *
 * Spaces become U+2581 '▁' (and one is prepended when add_space_prefix asks for it), the text
 * starts as one symbol per UTF-8 character, and the adjacent pair whose concatenation is the
 * highest-scoring vocabulary token (ties: leftmost) is merged until no pair forms a token.
 * Symbols that are still not tokens fall back to byte tokens <0xXX>. llama.cpp also keeps a
 * "reverse merge" map to re-split such symbols, but a symbol only grows by forming a token,
 * so with valid UTF-8 input a non-token symbol is always a single character and the map is
 * never consulted; we go straight to the bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/tokenizer-internal.h"

struct sym {
    uint32_t off, n;
    int32_t prev, next;
};

struct bigram {
    int32_t left, right;
    float score;
    uint32_t size;
};

struct spm_work {
    char *text;
    struct sym *sym;
    struct bigram *heap;
    size_t heap_n, heap_cap;
};

/* Highest score first; equal scores: the leftmost pair. */
static bool before(const struct bigram *x, const struct bigram *y) {
    return x->score > y->score || (x->score == y->score && x->left < y->left);
}

static int heap_push(struct spm_work *w, struct bigram b) {
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        struct bigram *h = realloc(w->heap, cap * sizeof *h);
        if (!h) return sl_fail(SL_ENOMEM, "SPM queue");
        w->heap = h;
        w->heap_cap = cap;
    }
    size_t i = w->heap_n++;
    while (i > 0 && before(&b, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = b;
    return 0;
}

static struct bigram heap_pop(struct spm_work *w) {
    struct bigram top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static int try_bigram(const struct sl_tokenizer *t, struct spm_work *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    const struct sym *a = &w->sym[l], *b = &w->sym[r];
    int32_t id = sl_tok_find(t, w->text + a->off, (size_t)a->n + b->n);
    if (id < 0) return 0;
    return heap_push(w, (struct bigram){l, r, t->score[id], a->n + b->n});
}

/* <0xXX>, else the byte as a one-character token (llama.cpp's byte_to_token); llama.cpp
 * throws when neither exists, we emit the unknown token (or nothing). */
static int push_byte(const struct sl_tokenizer *t, unsigned char c, struct sl_ids *out) {
    char buf[8];
    snprintf(buf, sizeof buf, "<0x%02X>", c);
    int32_t id = sl_tok_find(t, buf, 6);
    if (id < 0) id = sl_tok_find(t, (const char *)&c, 1);
    if (id < 0) id = t->unk;
    return id >= 0 ? sl_ids_push(out, id) : 0;
}

static int spm_run(const struct sl_tokenizer *t, struct spm_work *w, size_t n, struct sl_ids *out) {
    int rc = 0;
    size_t n_sym = 0;
    for (size_t off = 0; off < n;) {
        size_t l = sl_utf8_len((unsigned char)w->text[off]);
        if (l > n - off) l = n - off;
        w->sym[n_sym] = (struct sym){(uint32_t)off, (uint32_t)l, (int32_t)n_sym - 1, -1};
        if (n_sym) w->sym[n_sym - 1].next = (int32_t)n_sym;
        n_sym++;
        off += l;
    }
    for (size_t i = 1; i < n_sym; i++)
        if ((rc = try_bigram(t, w, (int32_t)i - 1, (int32_t)i))) return rc;
    while (w->heap_n) {
        struct bigram b = heap_pop(w);
        struct sym *l = &w->sym[b.left], *r = &w->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = b.left;
        if ((rc = try_bigram(t, w, l->prev, b.left)) || (rc = try_bigram(t, w, b.left, l->next)))
            return rc;
    }
    for (int32_t i = n_sym ? 0 : -1; i >= 0; i = w->sym[i].next) {
        const struct sym *s = &w->sym[i];
        int32_t id = sl_tok_find(t, w->text + s->off, s->n);
        if (id >= 0) {
            if ((rc = sl_ids_push(out, id))) return rc;
            continue;
        }
        for (uint32_t k = 0; k < s->n && !rc; k++)
            rc = push_byte(t, (unsigned char)w->text[s->off + k], out);
        if (rc) return rc;
    }
    return 0;
}

int sl_spm_tokenize(const struct sl_tokenizer *t, const char *text, size_t len, bool add_prefix,
                    struct sl_ids *out) {
    /* Escaped copy: every space (and the optional leading one) is 3 bytes of '▁'. */
    size_t n = len + (add_prefix ? 3 : 0);
    for (size_t i = 0; i < len; i++) n += text[i] == ' ' ? 2 : 0;
    struct spm_work w = {0};
    w.text = malloc(n ? n : 1);
    w.sym = malloc((n ? n : 1) * sizeof *w.sym);
    if (!w.text || !w.sym) {
        free(w.text);
        free(w.sym);
        return sl_fail(SL_ENOMEM, "SPM scratch for %zu bytes", len);
    }
    size_t o = 0;
    if (add_prefix) memcpy(w.text + o, "\xE2\x96\x81", 3), o += 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') memcpy(w.text + o, "\xE2\x96\x81", 3), o += 3;
        else w.text[o++] = text[i];
    }
    int rc = spm_run(t, &w, n, out);
    free(w.text);
    free(w.sym);
    free(w.heap);
    return rc;
}
